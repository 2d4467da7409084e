"""`civitas agreements draft` writes a policy from the dataset's schema that the broker accepts
as it is: offered, accepted and released under without editing; the partner is found by name,
key id or .pub file; the draft lists every field the schema does not mark drop, with k = 5 when
a quasi-identifier is released."""

import json

import pytest

from clinic_broker import ClinicBroker


@pytest.fixture(scope="module")
def clinic(civitas_bin, tmp_path_factory):
    broker = ClinicBroker(civitas_bin, tmp_path_factory.mktemp("draft"))
    yield broker
    broker.stop()


def test_a_draft_is_offered_accepted_and_released_under_as_written(clinic):
    publisher = clinic.secret(clinic.scenario["publisher"])
    drafted = clinic.civitas("agreements", "draft", "--key", publisher, "--dataset", clinic.dataset, "--partner", "health",
                             "--out", "draft.json")
    assert "edit it, then civitas agreements offer draft.json" in drafted.stderr
    policy = json.loads((clinic.folder / "draft.json").read_text())
    schema = clinic.scenario["schema"]["properties"]
    expected = [name for name, spec in schema.items() if spec.get("x-privacy", {}).get("class") != "drop"]
    assert sorted(policy["fields"]) == sorted(expected)
    assert policy["partner"] == clinic.key_id("health") and policy["publisher"] == clinic.key_id(clinic.scenario["publisher"])
    assert policy["treatment"]["k"] == 5 and policy["purposes"] == clinic.scenario["policy"]["purposes"]
    assert policy["legal_basis"] == "consent"

    clinic.publish(40)
    clinic.consent(range(40))
    clinic.civitas("agreements", "offer", "--key", publisher, "draft.json")
    clinic.civitas("agreements", "accept", "--key", clinic.secret("health"), policy["agreement"])
    released = json.loads(clinic.civitas("request", "release", "--key", clinic.secret("health"), "--purpose", clinic.purpose,
                                         policy["agreement"], "--json").stdout)
    assert released["records"] > 0 and released["k_achieved"] >= 5

    # The partner by key id and by .pub file gives the same partner; an unknown one is refused.
    by_id = json.loads(clinic.civitas("agreements", "draft", "--key", publisher, "--dataset", clinic.dataset, "--partner",
                                      clinic.key_id("health")).stdout)
    by_file = json.loads(clinic.civitas("agreements", "draft", "--key", publisher, "--dataset", clinic.dataset, "--partner",
                                        "Keys/health.pub").stdout)
    assert by_id["partner"] == by_file["partner"] == policy["partner"]
    unknown = clinic.civitas("agreements", "draft", "--key", publisher, "--dataset", clinic.dataset, "--partner", "nobody", check=False)
    assert unknown.returncode != 0 and "no registered partner" in unknown.stderr
    # An existing file is not overwritten.
    again = clinic.civitas("agreements", "draft", "--key", publisher, "--dataset", clinic.dataset, "--partner", "health",
                           "--out", "draft.json", check=False)
    assert again.returncode != 0


def test_every_problem_of_a_policy_is_reported_at_once(clinic):
    publisher = clinic.secret(clinic.scenario["publisher"])
    policy = json.loads(clinic.civitas("agreements", "draft", "--key", publisher, "--dataset", clinic.dataset, "--partner",
                                       "health", "--id", "ag-broken").stdout)
    policy.update(legal_basis="whim", epsilon_budget="lots", valid_until="2020-01-01T00:00:00Z")
    (clinic.folder / "broken.json").write_text(json.dumps(policy))
    refused = clinic.civitas("agreements", "offer", "--key", publisher, "broken.json", check=False)
    assert refused.returncode != 0
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "3 problems" in lines[0], lines
    for member in ("legal_basis", "epsilon_budget", "valid_until"):
        assert member in lines[0], (member, lines[0])
