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

    link = shape("web login", run("web", "login", "--key", clinic.secret("health"), "--json").stdout)
    assert link["participant"] == "health" and link["link"].startswith(clinic.url)

    # The positive control: a shape the schema does not describe fails the check.
    with pytest.raises(jsonschema.ValidationError):
        shape("request release", json.dumps({"id": "x"}))


def test_list_commands_print_headed_tables(clinic):
    participants = clinic.civitas("participants", "list", "--key", clinic.secret("operator")).stdout.splitlines()
    assert participants[0].split() == ["KEY", "ID", "ROLE", "NAME"]
    assert any(line.split()[1:] == ["operator", "operator"] for line in participants[1:])
    agreements = clinic.civitas("agreements", "list", "--key", clinic.secret("health")).stdout.splitlines()
    assert agreements[0].split()[:3] == ["ID", "STATE", "DATASET"]


def test_every_other_reporting_command_prints_its_documented_shape(clinic):
    """Keys, envelopes, the log, the privacy tools on files, the witness's log key, config check,
    an agreement draft and a DP aggregate request, each with --json against its schema definition."""
    run = clinic.civitas
    publisher = clinic.secret(clinic.scenario["publisher"])
    generated = shape("keys generate", run("keys", "generate", "--name", "json-keys", "--json").stdout)
    assert generated["public"] == "Keys/json-keys.pub" and generated["protected"] is False
    shown = shape("keys show", run("keys", "show", "Keys/json-keys.pub", "--json").stdout)
    assert shown["key_id"] == generated["key_id"] == run("keys", "show", "--id", "Keys/json-keys.pub").stdout.strip()
    tls = shape("keys tls-key", run("keys", "tls-key", "--key", "Keys/json-keys.secret", "--out", "json-keys.pem", "--json").stdout)
    assert tls["key_id"] == generated["key_id"]
    shape("keys pseudonym-key", run("keys", "pseudonym-key", "--out", "json-pseudonyms.key", "--json").stdout)
    witness_key = shape("witness log-key", run("witness", "log-key", "--broker", "Keys/broker.pub", "--json").stdout)
    assert witness_key["verifier_key"].startswith(witness_key["origin"] + "+")

    columns, rows = clinic.records(40)
    (clinic.folder / "table.csv").write_text("\n".join(",".join(row) for row in [columns] + rows) + "\n")
    sealed = shape("seal", run("seal", "--from", publisher, "--to", "Keys/json-keys.pub", "table.csv", "table.envelope", "--json").stdout)
    opened = shape("open", run("open", "--key", "Keys/json-keys.secret", "--issuer", f"Keys/{clinic.scenario['publisher']}.pub",
                               "table.envelope", "table.opened.csv", "--json").stdout)
    assert sealed["ciphertext_sha256"] == opened["ciphertext_sha256"] and opened["payload_bytes"] == sealed["payload_bytes"]

    fetched = shape("log fetch", run("log", "fetch", "--key", clinic.secret("operator"), "log.jsonl", "--json").stdout)
    assert fetched["bytes"] == (clinic.folder / "log.jsonl").stat().st_size
    (clinic.folder / "local-log").mkdir()
    (clinic.folder / "local-log" / "origin").write_text("example.city/local-log\n")
    for name in ["entries.jsonl", "checkpoints.jsonl"]:
        (clinic.folder / "local-log" / name).write_text("")
    exported = shape("log export", run("log", "export", "--log", "local-log", "--key", "Keys/json-keys.secret", "local.jsonl",
                                       "--json").stdout)
    assert exported["entries"] == 0

    anonymized = shape("anonymize", run("anonymize", "table.csv", "table.k2.csv", "--schema", "schema.json", "--k", "2",
                                        "--max-suppression", "0.5", "--pseudonym-key", "json-pseudonyms.key", "--json").stdout)
    assert anonymized["k_achieved"] >= 2
    counted = shape("aggregate", run("aggregate", "table.csv", "--epsilon", "0.5", "--count", "--group-by", "zip", "--public-groups",
                                     "--json").stdout)
    assert counted["epsilon_charged"] == "0.5" and counted["rows"] and all("zip" in row for row in counted["rows"])

    (clinic.folder / "broker.json").write_text(json.dumps({"port": 0, "db": "checked.sqlite", "operator": "Keys/operator.pub"}))
    checked = shape("config check", run("config", "check", "broker.json", "--json").stdout)
    assert {"name": "port", "source": "file", "value": "0"} in checked["settings"]

    drafted = shape("agreements draft", run("agreements", "draft", "--key", publisher, "--dataset", clinic.dataset, "--partner", "health",
                                            "--id", "ag-drafted", "--out", "drafted.json", "--json").stdout)
    assert drafted["agreement"] == "ag-drafted" and drafted["fields"]
    policy = clinic.policy("ag-aggregate", "health")
    (clinic.folder / "ag-aggregate.json").write_text(json.dumps(policy))
    run("agreements", "offer", "--key", publisher, "ag-aggregate.json")
    run("agreements", "accept", "--key", clinic.secret("health"), "ag-aggregate")
    asked = shape("request aggregate", run("request", "aggregate", "--key", clinic.secret("health"), "--purpose", clinic.purpose,
                                           "--statistic", "count", "--epsilon", "0.25", "ag-aggregate", "--json").stdout)
    assert asked["epsilon_charged"] == "0.25" and asked["idempotency_key"].startswith("req-")
