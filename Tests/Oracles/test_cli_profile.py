"""Profiles: a participant keeps the broker's URL and its key in a named profile and then runs
commands without --broker/--key; an environment variable wins over the profile and an option
over both; `profile show` names where each setting comes from (its --json shape is validated
against Schemas/cli-output.schema.json); a profile that does not exist is refused by name."""
import json
import os
import stat
import subprocess

import pytest

from clinic_broker import ClinicBroker
from test_cli_json import shape


@pytest.fixture(scope="module")
def clinic(civitas_bin, tmp_path_factory):
    broker = ClinicBroker(civitas_bin, tmp_path_factory.mktemp("cli-profile"))
    yield broker
    broker.stop()


def test_commands_take_their_settings_from_a_profile(clinic, tmp_path):
    home = tmp_path / "home"
    home.mkdir()

    def run(*args, env=None, check=True):
        result = subprocess.run([clinic.binary, *map(str, args)], cwd=clinic.folder, capture_output=True, text=True, timeout=60,
                                env={"PATH": "/usr/bin:/bin", "HOME": str(home), **(env or {})})
        if check:
            assert result.returncode == 0, f"civitas {' '.join(map(str, args))}: {result.stderr}"
        return result

    # Without a profile, the key is missing and the message says how to give it.
    missing = run("participants", "list", check=False)
    assert missing.returncode != 0 and "civitas profile set --key" in missing.stderr
    saved = shape("profile set", run("profile", "set", "--broker", clinic.url, "--key", "Keys/operator.secret", "--json").stdout)
    assert saved["profile"] == "default" and saved["settings"]["key"] == str(clinic.folder / "Keys" / "operator.secret")
    profiles = home / ".config" / "civitas" / "profiles.json"
    assert stat.S_IMODE(os.stat(profiles).st_mode) == 0o600
    listed = json.loads(run("participants", "list", "--json").stdout)
    assert {p["role"] for p in listed["participants"]} >= {"operator", "agency", "partner"}

    # A second profile for the partner; chosen by --profile or CIVITAS_PROFILE.
    run("profile", "set", "--profile", "health", "--broker", clinic.url, "--key", "Keys/health.secret")
    by_option = json.loads(run("agreements", "list", "--profile", "health", "--json").stdout)
    by_variable = json.loads(run("agreements", "list", "--json", env={"CIVITAS_PROFILE": "health"}).stdout)
    assert by_option == by_variable
    shown = shape("profile show", run("profile", "show", "--profile", "health", "--json").stdout)
    assert shown["settings"]["key"] == {"value": str(clinic.folder / "Keys" / "health.secret"), "source": "profile health"}
    # The environment wins over the profile, an option over both.
    over = shape("profile show", run("profile", "show", "--profile", "health", "--json",
                                     env={"CIVITAS_KEY": "Keys/auditor.secret"}).stdout)
    assert over["settings"]["key"] == {"value": "Keys/auditor.secret", "source": "environment variable CIVITAS_KEY"}
    top = shape("profile show", run("profile", "show", "--profile", "health", "--key", "Keys/x.secret", "--json",
                                    env={"CIVITAS_KEY": "Keys/auditor.secret"}).stdout)
    assert top["settings"]["key"]["source"] == "option" and top["settings"]["broker"]["source"] == "profile health"
    # Positive control: a profile that does not exist is refused, naming it.
    unknown = run("participants", "list", "--profile", "nobody", check=False)
    assert unknown.returncode != 0 and "no profile nobody" in unknown.stderr
    removed = shape("profile remove", run("profile", "remove", "health", "--json").stdout)
    assert removed["removed"] is True
    assert run("agreements", "list", "--profile", "health", check=False).returncode != 0
