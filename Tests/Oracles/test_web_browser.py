"""The web view in a real browser: headless Chromium (Debian's chromium and chromium-driver, driven
by selenium) against `civitas demo --keep DIR --browse`, the demo's broker left serving its data.
Every page renders with the demo's figures and no console error; the demo's login links sign each
participant in once, and a used link is refused; signing out ends the session; and the audit that
runs in the browser (WebCrypto) agrees with `civitas audit` on the demo's export and on tampered
copies of it: the same verdict, the same first finding, naming the same entry. A screenshot of each
page is written to a folder the test prints ($CIVITAS_SCREENSHOTS, or a temporary one)."""
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(civitas_bin, tmp_path_factory):
    out = tmp_path_factory.mktemp("web") / "demo"
    process = subprocess.Popen([civitas_bin, "demo", "--keep", str(out), "--browse"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    lines, deadline = [], time.time() + 600
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if "until you press Ctrl-C" in line:
            break
    text = "".join(lines)
    address = re.search(r"The web view: (http://127\.0\.0\.1:\d+)/", text)
    links = dict(re.findall(r"^  ([a-z-]+) +(http://\S+/web/login\?token=\S+)$", text, flags=re.M))
    try:
        assert address and set(links) == {"emergency-services", "transport", "health", "auditor", "operator"}, text[-2000:]
        yield {"out": out, "url": address.group(1), "links": links}
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    folder = pathlib.Path(os.environ.get("CIVITAS_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of the web view: {folder}", file=sys.__stderr__)
    return folder


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1400"]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def errors(driver):
    """The console errors since the last call (severe messages only)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def visit(driver, url, screenshots, name):
    driver.get(url)
    driver.save_screenshot(str(screenshots / f"{name}.png"))
    return driver.find_element(By.TAG_NAME, "main").text


def test_every_public_page_shows_the_demo_figures(demo, browser, screenshots):
    url = demo["url"]
    home = visit(browser, url + "/", screenshots, "home")
    assert "2\ndatasets in the catalog" in home and "data-sharing agreements in the register" in home
    catalog = visit(browser, url + "/web/catalog", screenshots, "catalog")
    assert "montgomery-911" in catalog and "traffic-flow" in catalog and "quasi-identifier" in catalog and "never" in catalog
    register = visit(browser, url + "/web/agreements", screenshots, "agreements")
    assert "ag-911-health" in register and "ag-traffic-health" in register and "revoked" in register
    assert "emergency-services → health" in register
    export = (demo["out"] / "log-export.jsonl").read_text().splitlines()
    entries = sum(1 for line in export[1:] if not line.startswith('{"checkpoint":'))
    log = visit(browser, url + "/web/log", screenshots, "log")
    assert f"Entries\n{entries}" in log and "the broker's signature" in log
    assert errors(browser) == []
    # Keyboard first: the first tab stop is the link that skips to the content.
    skip = browser.find_element(By.CSS_SELECTOR, "a.skip")
    assert skip.get_attribute("href").endswith("#main")


def test_a_login_link_signs_in_once_and_signing_out_ends_the_session(demo, browser, screenshots):
    link = demo["links"]["health"]
    browser.get(link)
    assert "Sign in as health" in browser.find_element(By.TAG_NAME, "main").text
    browser.find_element(By.CSS_SELECTOR, "form[action='/web/login'] button").click()
    WebDriverWait(browser, 10).until(lambda d: d.current_url.endswith("/web/me"))
    me = browser.find_element(By.TAG_NAME, "main").text
    browser.save_screenshot(str(screenshots / "partner.png"))
    assert "What the broker holds for health" in me and "ag-911-health" in me and "rel-" in me and "download" in me
    # The same link again: refused, saying how to get another.
    refused = visit(browser, link, screenshots, "used-link")
    assert "This link does not sign anyone in" in refused and "civitas web login" in refused
    entries = visit(browser, demo["url"] + "/web/entries?type=release.delivered", screenshots, "entries")
    assert "release.delivered" in entries and "agreement.offered" not in entries.split("Log entries")[-1]
    browser.find_element(By.CSS_SELECTOR, "form[action='/web/logout'] button").click()
    WebDriverWait(browser, 10).until(lambda d: d.current_url.rstrip("/") == demo["url"])
    after = visit(browser, demo["url"] + "/web/me", screenshots, "signed-out")
    assert "Sign in to see this page" in after
    # An agency sees its datasets and consent counts, never a subject.
    browser.get(demo["links"]["emergency-services"])
    browser.find_element(By.CSS_SELECTOR, "form[action='/web/login'] button").click()
    WebDriverWait(browser, 10).until(lambda d: d.current_url.endswith("/web/me"))
    agency = browser.find_element(By.TAG_NAME, "main").text
    browser.save_screenshot(str(screenshots / "agency.png"))
    assert "Your datasets" in agency and "public-health-surveillance:" in agency and "215-555-" not in agency
    assert [e for e in errors(browser) if "401" not in e] == []


def tampered(export, how):
    """A copy of the demo's export changed one way (what a broker hiding something would do)."""
    lines = export.splitlines()
    entry_lines = [i for i, line in enumerate(lines) if i > 0 and not line.startswith('{"checkpoint":')]
    if how == "altered":  # a delivered record count changed in an early release entry
        i = next(i for i in entry_lines if '"type":"release.delivered"' in lines[i])
        lines[i] = re.sub(r'"records_released":(\d+)', lambda m: f'"records_released":{int(m.group(1)) + 1}', lines[i])
    elif how == "dropped":
        del lines[entry_lines[3]]
    elif how == "last-altered":  # the last entry has no successor to name it: the checkpoint does
        i = entry_lines[-1]
        lines[i] = re.sub(r'"time":"(\d{4})', lambda m: f'"time":"{int(m.group(1)) + 1}', lines[i])
    elif how == "not-canonical":
        lines[entry_lines[2]] = lines[entry_lines[2]].replace(":", ": ", 1)
    elif how == "bad-signature":
        i = max(i for i, line in enumerate(lines) if line.startswith('{"checkpoint":'))
        note = json.loads(lines[i])["checkpoint"]
        body, signature = note.rsplit(" ", 1)
        flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
        lines[i] = json.dumps({"checkpoint": body + " " + flipped}, separators=(",", ":"))
    elif how == "rolled-back":  # only the entries up to the first checkpoint, and that checkpoint
        first = min(i for i, line in enumerate(lines) if line.startswith('{"checkpoint":'))
        lines = lines[:first + 1]
    return "\n".join(lines) + "\n"


def run_in_browser(browser, url, broker_pub, export_path, saved):
    browser.get(url + "/web/audit")
    form = browser.find_element(By.ID, "audit")
    WebDriverWait(browser, 10).until(lambda d: form.is_displayed())
    key = browser.find_element(By.ID, "key")
    key.clear()
    browser.execute_script("arguments[0].value = arguments[1];", key, broker_pub)
    browser.execute_script("arguments[0].value = arguments[1];", browser.find_element(By.ID, "saved"), saved or "")
    browser.find_element(By.ID, "remember").click()  # keep nothing from the tampered copies
    if export_path:
        browser.find_element(By.ID, "export").send_keys(str(export_path))
    browser.execute_script("document.getElementById('result').removeAttribute('data-passed');")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "result").get_attribute("data-passed") is not None)
    result = browser.find_element(By.ID, "result")
    entry = result.get_attribute("data-first-entry")
    return {"passed": result.get_attribute("data-passed") == "true", "code": result.get_attribute("data-first-code") or None,
            "entry": int(entry) if entry else None, "text": result.text}


def run_civitas_audit(civitas_bin, folder, broker_pub, export_path, saved):
    args = [civitas_bin, "audit", "--broker", str(broker_pub), "--json", "-"]
    if saved:
        (folder / "saved.checkpoint").write_text(saved)
        args += ["--checkpoint", str(folder / "saved.checkpoint")]
    result = subprocess.run(args + [str(export_path)], capture_output=True, text=True, timeout=60)
    report = json.loads(result.stdout)
    first = report["findings"][0] if report["findings"] else {}
    return {"passed": report["passed"], "code": first.get("code"), "entry": first.get("entry")}


def test_the_audit_in_the_browser_agrees_with_civitas_audit(demo, browser, screenshots, civitas_bin, tmp_path):
    out = demo["out"]
    broker_pub = out / "Keys" / "broker.pub"
    export = (out / "log-export.jsonl").read_text()
    lines = export.splitlines()
    latest_note = json.loads(max((l for l in lines if l.startswith('{"checkpoint":')), key=lambda l: lines.index(l)))["checkpoint"]
    # Signed in as the auditor, the page reads this broker's own log.
    browser.get(demo["links"]["auditor"])
    browser.find_element(By.CSS_SELECTOR, "form[action='/web/login'] button").click()
    WebDriverWait(browser, 10).until(lambda d: d.current_url.endswith("/web/me"))
    live = run_in_browser(browser, demo["url"], broker_pub.read_text(), None, None)
    browser.save_screenshot(str(screenshots / "audit.png"))
    assert live["passed"], live["text"]
    # Its compliance summary is civitas audit's: each agreement's releases and what it spent of its budget (ε or ρ).
    summary = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
               for row in browser.find_elements(By.CSS_SELECTOR, "#agreements tbody tr")]
    fetched = tmp_path / "live.jsonl"
    subprocess.run([civitas_bin, "log", "fetch", "--key", str(out / "Keys" / "auditor.secret"), "--broker", demo["url"], str(fetched)],
                   check=True, capture_output=True, timeout=60)
    audited = json.loads(subprocess.run([civitas_bin, "audit", "--broker", str(broker_pub), "--json", "-", str(fetched)],
                                        check=True, capture_output=True, text=True, timeout=60).stdout)
    assert summary == [[a["agreement"], a["partner"], str(a["releases"]), a["budget_unit"], a["spent"], a["budget"]] for a in audited["agreements"]]
    assert len(summary) == 2
    cases = [("clean", None), ("altered", None), ("dropped", None), ("last-altered", None), ("not-canonical", None),
             ("bad-signature", None), ("rolled-back", latest_note), ("clean-wrong-key", None)]
    failures = 0
    for how, saved in cases:
        path = tmp_path / f"{how}.jsonl"
        path.write_text(export if how.startswith("clean") else tampered(export, how))
        key = out / "Keys" / ("health.pub" if how == "clean-wrong-key" else "broker.pub")
        expected = run_civitas_audit(civitas_bin, tmp_path, key, path, saved)
        seen = run_in_browser(browser, demo["url"], key.read_text(), path, saved)
        assert (seen["passed"], seen["code"], seen["entry"]) == (expected["passed"], expected["code"], expected["entry"]), (how, seen, expected)
        failures += not expected["passed"]
        if how == "altered":
            browser.save_screenshot(str(screenshots / "audit-tampered.png"))
    # Positive control: the tampered copies really are refused, by both.
    assert failures == len(cases) - 1
    assert errors(browser) == []
