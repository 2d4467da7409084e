"""The release archive scripts/package builds, installed into a temporary prefix with its own
./install, runs the walkthrough from the installed files only: the installed binary (which must
not load anything from the Swift toolchain), its man pages, the installed schemas and the example
config, in a folder outside the source tree. The systemd units carry the installed paths and the
hardening settings."""

import configparser
import json
import os
import pathlib
import shutil
import subprocess
import tarfile
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PURPOSE = "public-health-surveillance"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The package (CIVITAS_PACKAGE, or built here), unpacked and installed."""
    work = tmp_path_factory.mktemp("package")
    archive = os.environ.get("CIVITAS_PACKAGE")
    if not archive:
        built = subprocess.run([str(ROOT / "scripts" / "package"), str(work / "dist")], cwd=ROOT, capture_output=True, text=True,
                               timeout=1800)
        assert built.returncode == 0, built.stderr[-2000:]
        archive = built.stdout.strip().splitlines()[-1]
        archive = str(ROOT / archive) if not archive.startswith("/") else archive
    digest = pathlib.Path(archive + ".sha256").read_text().split()[0]
    assert subprocess.run(["sha256sum", archive], capture_output=True, text=True).stdout.split()[0] == digest
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert all(not name.startswith("/") and ".." not in name.split("/") for name in names)
        tar.extractall(work / "unpacked", filter="data")
    (unpacked,) = (work / "unpacked").iterdir()
    prefix, etc, units = work / "prefix", work / "etc", work / "units"
    done = subprocess.run([str(unpacked / "install"), "--prefix", str(prefix), "--sysconfdir", str(etc), "--unitdir", str(units)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return {"prefix": prefix, "etc": etc, "units": units, "work": work}


def test_the_binary_needs_only_system_libraries_and_has_man_pages(installed):
    binary = installed["prefix"] / "bin" / "civitas"
    libraries = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
    assert "not found" not in libraries, libraries
    assert "/opt/swift" not in libraries and "libswiftCore" not in libraries and "libFoundation" not in libraries, libraries
    pages = {page.name for page in (installed["prefix"] / "share" / "man" / "man1").iterdir()}
    for page in ("civitas.1", "civitas.serve.1", "civitas.witness.serve.1", "civitas.config.check.1", "civitas.pull.1"):
        assert page in pages
    serve_page = (installed["prefix"] / "share" / "man" / "man1" / "civitas.serve.1").read_text()
    assert "Fl -config" in serve_page and "Fl -witness" in serve_page
    # Shell completions: bash completes the subcommands of the installed binary.
    completion = installed["prefix"] / "share" / "bash-completion" / "completions" / "civitas"
    assert (installed["prefix"] / "share" / "zsh" / "site-functions" / "_civitas").exists()
    assert (installed["prefix"] / "share" / "fish" / "vendor_completions.d" / "civitas.fish").exists()
    script = f'source "{completion}"; COMP_WORDS=(civitas wit); COMP_CWORD=1; COMP_LINE="civitas wit"; COMP_POINT=11; ' \
             f'_civitas 2>/dev/null || true; printf "%s\\n" "${{COMPREPLY[@]}}"'
    completed = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env={"PATH": f"{installed['prefix']}/bin:/usr/bin:/bin"})
    assert "witness" in completed.stdout.split(), (completed.stdout, completed.stderr)
    if shutil.which("man"):
        rendered = subprocess.run(["man", "-l", str(installed["prefix"] / "share" / "man" / "man1" / "civitas.serve.1")],
                                  capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "MANPAGER": "cat", "MANWIDTH": "100"})
        assert rendered.returncode == 0 and "civitas serve" in rendered.stdout


def test_the_units_name_the_installed_paths_and_are_hardened(installed):
    for name, command in (("civitas.service", "serve --config"), ("civitas-witness.service", "witness serve")):
        unit = configparser.ConfigParser(strict=False, interpolation=None)
        unit.optionxform = str
        unit.read(installed["units"] / name)
        service = unit["Service"]
        assert service["ExecStart"].startswith(f"{installed['prefix']}/bin/civitas {command}")
        assert "@" not in service["ExecStart"].replace("${", "")
        for setting, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                               ("UMask", "0077"), ("CapabilityBoundingSet", ""), ("RestrictSUIDSGID", "yes")):
            assert service[setting] == value, (name, setting)
    assert f"--config {installed['etc']}/civitas/broker.json" in (installed["units"] / "civitas.service").read_text()


def test_the_walkthrough_runs_from_the_installed_files(installed, tmp_path):
    prefix = installed["prefix"]
    env = {"PATH": f"{prefix}/bin:/usr/bin:/bin", "HOME": str(tmp_path)}
    folder = tmp_path / "city"
    folder.mkdir()
    state = tmp_path / "state"
    state.mkdir()

    def civitas(*args, check=True):
        result = subprocess.run(["civitas", *map(str, args)], cwd=folder, capture_output=True, text=True, timeout=120, env=env)
        if check:
            assert result.returncode == 0, f"civitas {' '.join(map(str, args))}: {result.stderr}"
        return result

    # The operator's config: the installed example, with this machine's paths and a free port.
    example = json.loads((installed["etc"] / "civitas" / "broker.json.example").read_text())
    config = dict(example, host="127.0.0.1", port=0, db=str(state / "broker.sqlite"), storage_key=str(state / "broker.storage-key"),
                  broker_key=str(state / "keys" / "broker.secret"), operator=str(folder / "Keys" / "operator.pub"))
    del config["public_url"]
    (installed["etc"] / "civitas" / "broker.json").write_text(json.dumps(config, indent=2))
    for name in ["operator", "emergency-services", "health", "auditor"]:
        civitas("keys", "generate", "--name", name)
    checked = civitas("config", "check", installed["etc"] / "civitas" / "broker.json")
    assert "the settings are valid" in checked.stdout

    server = subprocess.Popen(["civitas", "serve", "--config", str(installed["etc"] / "civitas" / "broker.json")], cwd=state,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        url = None
        deadline = time.time() + 30
        while time.time() < deadline and url is None:
            line = server.stdout.readline()
            if "listening on" in line:
                url = line.split("listening on ")[1].split(" ")[0]
        assert url, "the installed broker did not start"
        env["CIVITAS_BROKER"] = url
        with urllib.request.urlopen(url + "/healthz", timeout=10) as answer:
            assert answer.status == 200
        shutil.copy(state / "keys" / "broker.pub", folder / "Keys" / "broker.pub")

        schema = prefix / "share" / "civitas" / "Schemas" / "datasets" / "emergency-call.schema.json"
        civitas("participants", "add", "--key", "Keys/operator.secret", "--role", "agency", "Keys/emergency-services.pub")
        civitas("participants", "add", "--key", "Keys/operator.secret", "--role", "partner", "Keys/health.pub")
        civitas("participants", "add", "--key", "Keys/operator.secret", "--role", "auditor", "Keys/auditor.pub")
        civitas("datasets", "register", "--key", "Keys/emergency-services.secret", "--id", "montgomery-911", "--schema", schema,
                "--purpose", PURPOSE)
        rows = ["lat,lng,desc,zip,title,timeStamp,twp,addr,e,caller"]
        towns = ["NORRISTOWN", "ABINGTON", "LOWER MERION", "CHELTENHAM"]
        for i in range(600):
            rows.append(f"40.{100000 + i},-75.{200000 + i},x;,{19400 + i % 4},EMS: FALL VICTIM,2016-0{1 + i % 9}-10 08:10:00,"
                        f"{towns[i % 4]},MAIN ST,1,215-555-{i % 200:04d}")
        (folder / "calls.csv").write_text("\n".join(rows) + "\n")
        civitas("publish", "--key", "Keys/emergency-services.secret", "montgomery-911", "calls.csv")
        (folder / "consenting.txt").write_text("\n".join(f"215-555-{i:04d}" for i in range(200)) + "\n")
        civitas("consent", "grant", "--key", "Keys/emergency-services.secret", "--dataset", "montgomery-911", "--subjects", "consenting.txt",
                "--purpose", PURPOSE, "--notice", "https://city.example/notices/911", "--jurisdiction", "US-PA")
        publisher = civitas("keys", "show", "--id", "Keys/emergency-services.pub").stdout.strip()
        partner = civitas("keys", "show", "--id", "Keys/health.pub").stdout.strip()
        policy = {"agreement": "ag-911-health", "dataset": "montgomery-911", "publisher": publisher, "partner": partner,
                  "purposes": [PURPOSE], "legal_basis": "consent", "fields": ["caller", "zip", "title", "twp"],
                  "treatment": {"k": 5, "suppression_limit": 0.2}, "epsilon_budget": 1,
                  "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2036-12-31T23:59:59Z"}
        (folder / "policy.json").write_text(json.dumps(policy))
        civitas("agreements", "offer", "--key", "Keys/emergency-services.secret", "policy.json")
        civitas("agreements", "accept", "--key", "Keys/health.secret", "ag-911-health")
        requested = civitas("request", "release", "--key", "Keys/health.secret", "--purpose", PURPOSE, "ag-911-health").stdout
        delivery = requested.split("delivery ")[1].split(":")[0]
        civitas("pull", "--key", "Keys/health.secret", "--issuer", "Keys/broker.pub", "--delivery", delivery, "--out", "received.csv")
        received = (folder / "received.csv").read_text().splitlines()
        assert "caller" in received[0].split(",") and len(received) > 100, received[:3]
        civitas("log", "fetch", "--key", "Keys/auditor.secret", "log.jsonl")
        audited = civitas("audit", "--broker", "Keys/broker.pub", "--checkpoint", "auditor.checkpoint", "log.jsonl")
        assert "envelopes verified   1" in audited.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert server.returncode == 0
    # Nothing was read from or written to the source tree.
    assert not (ROOT / "city").exists()
