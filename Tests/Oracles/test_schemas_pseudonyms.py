"""Dataset schemas are valid JSON Schema 2020-12 (checked by the jsonschema
package), accept the Smart Data Models examples they are modelled on, and agree
with Civitas' record validation; pseudonyms are recomputed independently with
hashlib's BLAKE2b (libsodium's crypto_kdf) and HMAC-SHA-256."""

import base64
import csv
import hashlib
import hmac
import json
import pathlib

import jsonschema
import pytest
import rfc8785
from jsonschema import Draft202012Validator

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMAS = sorted((ROOT / "Schemas" / "datasets").glob("*.schema.json"))
SHARED = ROOT.parent / "shared" / "data"
SDM = {"call-user": "CallComplaints.CallUser", "complaint": "CallComplaints.Complaint",
       "traffic-flow-observed": "Transportation.TrafficFlowObserved",
       "air-quality-observed": "Environment.AirQualityObserved", "waste-container": "WasteManagement.WasteContainer",
       "alert": "Alert.Alert", "camera": "Device.Camera", "device": "Device.Device",
       "smart-metering-observation": "Device.SmartMeteringObservation", "crowd-flow-observed": "Transportation.CrowdFlowObserved"}


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_schema_is_valid_json_schema_with_privacy_annotations(path):
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    for name, prop in schema["properties"].items():
        assert prop["x-privacy"]["class"] in {"identifier", "quasi-identifier", "sensitive", "measure", "subject", "public", "drop"}, name


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")
@pytest.mark.parametrize("name,folder", sorted(SDM.items()))
def test_smart_data_model_examples_validate(name, folder):
    schema = json.loads((ROOT / "Schemas" / "datasets" / f"{name}.schema.json").read_text())
    example = json.loads((SHARED / "smart-data-models" / folder / "example.json").read_text())
    for record in example if isinstance(example, list) else [example]:
        Draft202012Validator(schema).validate(record)


def typed(row, schema):
    """A CSV row as the JSON object JSON Schema sees: numbers as numbers, empty as null."""
    out = {}
    for key, value in row.items():
        types = schema["properties"][key].get("type", [])
        types = [types] if isinstance(types, str) else types
        if value == "" and "null" in types:
            out[key] = None
        elif "integer" in types and value.lstrip("-").isdigit():
            out[key] = int(value)
        elif "number" in types:
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
        else:
            out[key] = value
    return out


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")
def test_civitas_and_jsonschema_agree_on_911_rows(cli, tmp_path):
    schema_path = ROOT / "Schemas" / "datasets" / "emergency-call.schema.json"
    schema = json.loads(schema_path.read_text())
    rows = list(csv.DictReader(open(SHARED / "montgomery-911" / "911_sample.csv")))
    validator = Draft202012Validator(schema)
    assert all(validator.is_valid(typed(row, schema)) for row in rows[:2000])
    mutations = [("lat", "91.5"), ("zip", "1942"), ("title", ""), ("timeStamp", "2019-07-31T05:13:54"), ("e", "2")]
    for field, value in mutations:
        bad = dict(rows[0], **{field: value})
        assert not validator.is_valid(typed(bad, schema)), field
        path = tmp_path / "bad.csv"
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerow(rows[1])
            writer.writerow(bad)
        line = cli.fails("anonymize", path, tmp_path / "out.csv", "--schema", schema_path, "--k", 1)
        assert f"row 2, field '{field}'" in line, line


def derived_key(master: bytes, domain: str, context: bytes) -> bytes:
    """libsodium crypto_kdf_derive_from_key: BLAKE2b keyed by the master key, the subkey id
    (first 8 bytes of SHA-256(domain), big-endian) little-endian in the salt, the context as personalization."""
    subkey_id = int.from_bytes(hashlib.sha256(domain.encode()).digest()[:8], "big")
    return hashlib.blake2b(b"", digest_size=32, key=master, salt=subkey_id.to_bytes(8, "little") + bytes(8),
                           person=context + bytes(8)).digest()


def test_pseudonyms_match_an_independent_computation(cli, tmp_path):
    cli.run("keys", "pseudonym-key", "--out", "pk.key")
    master = base64.b64decode((tmp_path / "pk.key").read_text().split()[1])
    users = tmp_path / "users.csv"
    with open(users, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "type", "aliasName", "name", "surname", "contactPhone"])
        for i in range(40):
            writer.writerow([f"urn:ngsi-ld:User:{i:02d}", "CallUser", f"alias-{i}", "John", "Doe", f"+3069{i:08d}"])
    schema = ROOT / "Schemas" / "datasets" / "call-user.schema.json"
    outputs = {}
    for partner in ["health", "transport"]:
        out = tmp_path / f"{partner}.csv"
        domain = f"agreement=ag-1,partner={partner},purpose=service-quality,epoch=2026"
        cli.run("anonymize", users, out, "--schema", schema, "--qi", "type", "--k", 1, "--pseudonym-key", "pk.key", "--domain", domain)
        outputs[partner] = list(csv.DictReader(open(out)))
        text = rfc8785.dumps({"agreement": "ag-1", "epoch": "2026", "partner": partner, "purpose": "service-quality"}).decode()
        key = derived_key(master, text, b"civpseu1")
        for i, row in enumerate(outputs[partner]):
            assert "name" not in row and "surname" not in row
            assert row["id"] == hmac.new(key, f"urn:ngsi-ld:User:{i:02d}".encode(), hashlib.sha256).hexdigest()[:32]
            assert row["aliasName"] == hmac.new(key, f"alias-{i}".encode(), hashlib.sha256).hexdigest()[:32]
            phone = row["contactPhone"]
            assert phone.startswith("+") and len(phone) == 13 and phone != f"+3069{i:08d}"
    # Two partners' pseudonyms for the same people cannot be joined.
    assert not {r["id"] for r in outputs["health"]} & {r["id"] for r in outputs["transport"]}
    assert not {r["contactPhone"] for r in outputs["health"]} & {r["contactPhone"] for r in outputs["transport"]}
