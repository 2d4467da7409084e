"""`civitas serve --config FILE` and `civitas config check FILE`: the file's settings apply, the
environment (CIVITAS_*) overrides the file and options override both; relative paths are taken
from the file's folder; a misspelt setting, a wrong type and out-of-range values are refused, all
problems at once; a database password never appears in what `config check` prints."""

import json
import os
import subprocess
import time
import urllib.request


def serve(civitas_bin, cwd, *args, env=None):
    process = subprocess.Popen([civitas_bin, "serve", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={"PATH": "/usr/bin:/bin", **(env or {})})
    deadline = time.time() + 30
    lines = []
    while time.time() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if "listening on" in line:
            return process, line.split("listening on ")[1].split(" ")[0], lines
        if not line and process.poll() is not None:
            break
    process.terminate()
    raise AssertionError(f"the broker did not start: {''.join(lines)} {process.stderr.read()}")


def check(civitas_bin, cwd, path, env=None):
    return subprocess.run([civitas_bin, "config", "check", path], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_the_file_the_environment_and_options_apply_in_order(civitas_bin, tmp_path):
    etc, elsewhere = tmp_path / "etc", tmp_path / "run"
    etc.mkdir()
    elsewhere.mkdir()
    (etc / "broker.json").write_text(json.dumps({
        "_about": "a broker on loopback", "host": "127.0.0.1", "port": 0, "db": "data/broker.sqlite",
        "broker_key": "keys/broker.secret", "schedule_interval": 2, "webhook_allow": ["hooks.internal"],
        "log_origin": "city.example/exchange-log"}))
    (etc / "data").mkdir()
    (etc / "keys").mkdir()
    process, url, lines = serve(civitas_bin, elsewhere, "--config", str(etc / "broker.json"))
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=10) as answer:
            assert answer.status == 200
        assert "city.example/exchange-log" in "".join(lines)
    finally:
        process.terminate()
        process.wait(timeout=10)
    # Relative paths in the file are the file's folder's, not the working directory's.
    assert (etc / "data" / "broker.sqlite").exists() and (etc / "keys" / "broker.secret").exists()
    assert not (elsewhere / "data").exists()
    assert os.stat(etc / "keys" / "broker.secret").st_mode & 0o077 == 0

    # The environment overrides the file; an option overrides both.
    shown = check(civitas_bin, elsewhere, str(etc / "broker.json"), env={"CIVITAS_SCHEDULE_INTERVAL": "7"})
    assert shown.returncode == 0, shown.stderr
    rows = {line.split()[0]: line for line in shown.stdout.splitlines()}
    assert "environment CIVITAS_SCHEDULE_INTERVAL" in rows["schedule_interval"] and rows["schedule_interval"].endswith(" 7")
    assert " file " in rows["db"] and rows["db"].endswith(str(etc / "data" / "broker.sqlite"))
    assert " default " in rows["public_url"]


def test_an_option_beats_the_environment(civitas_bin, tmp_path):
    (tmp_path / "broker.json").write_text(json.dumps({"port": 1}))
    process, url, _ = serve(civitas_bin, tmp_path, "--config", "broker.json", "--port", "0", "--db", "b.sqlite",
                            env={"CIVITAS_PORT": "2"})
    try:
        assert not url.endswith(":1") and not url.endswith(":2")
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_wrong_settings_are_refused_together_and_secrets_stay_hidden(civitas_bin, tmp_path):
    (tmp_path / "typo.json").write_text(json.dumps({"prot": 8080}))
    refused = check(civitas_bin, tmp_path, "typo.json")
    assert refused.returncode != 0 and '"prot"' in refused.stderr
    (tmp_path / "type.json").write_text(json.dumps({"port": "8080"}))
    refused = check(civitas_bin, tmp_path, "type.json")
    assert refused.returncode != 0 and '"port" must be a whole number' in refused.stderr
    (tmp_path / "many.json").write_text(json.dumps({
        "port": 70000, "schedule_interval": 0, "body_memory_mib": 10, "envelope_readers": 0, "public_url": "ftp://x", "tls_cert": "missing.pem",
        "postgres": "postgres://civitas:hunter2-secret@db.internal/civitas"}))
    refused = check(civitas_bin, tmp_path, "many.json")
    assert refused.returncode != 0
    for problem in ("port must be 0 to 65535", "schedule_interval must be 1 to 3600", "public_url must be an http(s) URL",
                    "tls_cert and tls_key go together", "postgres needs storage_key", "body_memory_mib must be 64",
                    "envelope_readers must be 1 to 256"):
        assert problem in refused.stderr, refused.stderr
    assert "hunter2-secret" not in refused.stdout + refused.stderr
    assert "postgres://civitas:***@db.internal/civitas" in refused.stdout
    # serve refuses the same settings before it opens anything.
    started = subprocess.run([civitas_bin, "serve", "--config", "many.json"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert started.returncode != 0 and "port must be 0 to 65535" in started.stderr
    assert "hunter2-secret" not in started.stdout + started.stderr
    # The positive control: a valid file passes the same check.
    (tmp_path / "good.json").write_text(json.dumps({"port": 8443, "public_url": "https://broker.city.example"}))
    assert check(civitas_bin, tmp_path, "good.json").returncode == 0
