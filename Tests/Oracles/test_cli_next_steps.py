"""Errors that say what to do next, and the key taken from CIVITAS_KEY: a missing key names
--key and CIVITAS_KEY, an unreachable broker names --broker and CIVITAS_BROKER, an unregistered
key names `civitas participants add`."""

import socket
import subprocess

import pytest

from clinic_broker import ClinicBroker


@pytest.fixture(scope="module")
def clinic(civitas_bin, tmp_path_factory):
    broker = ClinicBroker(civitas_bin, tmp_path_factory.mktemp("next-steps"))
    yield broker
    broker.stop()


def run(clinic, *args, env=None):
    return subprocess.run([clinic.binary, *args], cwd=clinic.folder, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "CIVITAS_BROKER": clinic.url, **(env or {})})


def test_the_key_comes_from_civitas_key_or_the_error_says_how(clinic):
    missing = run(clinic, "participants", "list")
    assert missing.returncode != 0 and "--key KEY.secret (or set CIVITAS_KEY, or keep it in a profile" in missing.stderr, missing.stderr
    listed = run(clinic, "participants", "list", env={"CIVITAS_KEY": clinic.secret("operator")})
    assert listed.returncode == 0 and "operator" in listed.stdout, listed.stderr
    # --key still wins over the environment.
    other = run(clinic, "participants", "list", "--key", clinic.secret("health"), "--json", env={"CIVITAS_KEY": "Keys/missing.secret"})
    assert other.returncode == 0, other.stderr


def test_an_unreachable_broker_and_an_unregistered_key_name_the_next_step(clinic):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    unreachable = run(clinic, "participants", "list", "--key", clinic.secret("operator"), "--broker", closed)
    assert unreachable.returncode != 0 and "--broker URL or CIVITAS_BROKER" in unreachable.stderr, unreachable.stderr
    clinic.civitas("keys", "generate", "--name", "newcomer")
    unknown = run(clinic, "participants", "list", "--key", "Keys/newcomer.secret")
    assert unknown.returncode != 0 and "civitas participants add" in unknown.stderr, unknown.stderr
    assert len([line for line in unknown.stderr.splitlines() if line.strip()]) == 1
