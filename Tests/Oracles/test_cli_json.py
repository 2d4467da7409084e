"""What the CLI prints for scripts: every reporting command given --json prints one JSON object
on one line, valid against Schemas/cli-output.schema.json (checked with the jsonschema package),
and list commands print headed tables for people."""

import json
import pathlib

import jsonschema
import pytest

from clinic_broker import ClinicBroker

SCHEMA = json.loads((pathlib.Path(__file__).resolve().parents[2] / "Schemas" / "cli-output.schema.json").read_text())


def shape(name, output):
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, f"{name}: expected one line of JSON, got {lines}"
    value = json.loads(lines[0])
    jsonschema.validate(value, {"$ref": f"#/$defs/{name}", "$defs": SCHEMA["$defs"]})
    return value


@pytest.fixture(scope="module")
def clinic(civitas_bin, tmp_path_factory):
    broker = ClinicBroker(civitas_bin, tmp_path_factory.mktemp("cli-json"))
    yield broker
    broker.stop()


def test_reporting_commands_print_their_documented_shape(clinic):
    run = clinic.civitas
    publisher = clinic.secret(clinic.scenario["publisher"])
    listed = shape("participants list", run("participants", "list", "--key", clinic.secret("operator"), "--json").stdout)
    assert {p["role"] for p in listed["participants"]} >= {"operator", "agency", "partner"}
    run("keys", "generate", "--name", "late-partner")
    added = shape("participants add", run("participants", "add", "--key", clinic.secret("operator"), "--role", "partner",
                                          "Keys/late-partner.pub", "--json").stdout)
    assert added["role"] == "partner" and added["name"] == "late-partner"
    registered = shape("datasets register", run("datasets", "register", "--key", publisher, "--id", "second-dataset",
                                                "--schema", "schema.json", "--purpose", clinic.purpose, "--json").stdout)
    assert registered["dataset"] == "second-dataset"

    columns, rows = clinic.records(30)
    (clinic.folder / "batch.csv").write_text("\n".join(",".join(row) for row in [columns] + rows) + "\n")
    published = shape("publish", run("publish", "--key", publisher, clinic.dataset, "batch.csv", "--json").stdout)
    assert published["records"] == len(rows) and published["batches"][0]["replayed"] is False
    again = shape("publish", run("publish", "--key", publisher, clinic.dataset, "batch.csv", "--json").stdout)
    assert again["batches"][0]["replayed"] is True and again["batches"][0]["sequence"] == published["batches"][0]["sequence"]

    (clinic.folder / "subjects.txt").write_text("\n".join(clinic.person(i) for i in range(30)) + "\n")
    consent = shape("consent", run("consent", "grant", "--key", publisher, "--dataset", clinic.dataset, "--subjects", "subjects.txt",
                                   "--purpose", clinic.purpose, "--notice", "n-1", "--jurisdiction", "EU", "--json").stdout)
    assert consent["events"] == 30 and consent["requests"] == 1 and consent["method"] == "web-form"
    # Without --json, the sentence names the collection method recorded in every receipt, and how to change it.
    said = run("consent", "grant", "--key", publisher, "--dataset", clinic.dataset, "--subject", clinic.person(0),
               "--purpose", clinic.purpose, "--notice", "n-1", "--jurisdiction", "EU").stdout
    assert "collected by web-form (--method to record another way)" in said, said

    policy = clinic.policy("ag-json", "health", k=3, feed={"window_records": 100, "window_seconds": 600, "below_k": "wait"})
    (clinic.folder / "ag-json.json").write_text(json.dumps(policy))
    offered = shape("agreements offer", run("agreements", "offer", "--key", publisher, "ag-json.json", "--json").stdout)
    accepted = shape("agreements accept", run("agreements", "accept", "--key", clinic.secret("health"), "ag-json", "--json").stdout)
    assert offered["policy_sha256"] == accepted["policy_sha256"] and accepted["dataset"] == clinic.dataset
    agreements = shape("agreements list", run("agreements", "list", "--key", clinic.secret("health"), "--json").stdout)
    assert [a["state"] for a in agreements["agreements"] if a["id"] == "ag-json"] == ["accepted"]

    released = shape("request release", run("request", "release", "--key", clinic.secret("health"), "--purpose", clinic.purpose,
                                            "ag-json", "--json").stdout)
    assert released["records"] > 0 and released["idempotency_key"].startswith("req-")
    pulled = shape("pull", run("pull", "--key", clinic.secret("health"), "--issuer", "Keys/broker.pub", "--delivery", released["id"],
                               "--out", "received.csv", "--json").stdout)
    assert pulled["deliveries"][0]["id"] == released["id"] and pulled["deliveries"][0]["records"] == released["records"]
    assert pulled["deliveries"][0]["log_index"] == released["log_index"]
    feed = shape("request feed", run("request", "feed", "--key", clinic.secret("health"), "--purpose", clinic.purpose, "ag-json",
                                     "--json").stdout)
    assert feed["id"]
    revoked = shape("agreements revoke", run("agreements", "revoke", "--key", publisher, "ag-json", "--json").stdout)
    assert revoked["state"] == "revoked"

    # --json puts the report on standard output, so the records need a file.
    refused = run("pull", "--key", clinic.secret("health"), "--issuer", "Keys/broker.pub", "--delivery", released["id"], "--json",
                  check=False)
    assert refused.returncode != 0 and "--out FILE" in refused.stderr
    made = shape("demo-data", run("demo-data", "--calls", "500", "--later", "100", "--dir", "sample", "--json").stdout)
    assert made["calls"] == 400 and made["later_calls"] == 100 and made["consenting"] < made["callers"]
    assert (clinic.folder / "sample" / "consenting.txt").read_text().count("\n") == made["consenting"]

    # The positive control: a shape the schema does not describe fails the check.
    with pytest.raises(jsonschema.ValidationError):
        shape("request release", json.dumps({"id": "x"}))


def test_list_commands_print_headed_tables(clinic):
    participants = clinic.civitas("participants", "list", "--key", clinic.secret("operator")).stdout.splitlines()
    assert participants[0].split() == ["KEY", "ID", "ROLE", "NAME"]
    assert any(line.split()[1:] == ["operator", "operator"] for line in participants[1:])
    agreements = clinic.civitas("agreements", "list", "--key", clinic.secret("health")).stdout.splitlines()
    assert agreements[0].split()[:3] == ["ID", "STATE", "DATASET"]
