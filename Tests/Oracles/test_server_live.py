"""A real `civitas serve` on a loopback port: the signed CLI registers
participants, a dataset and a batch; requests signed by an independent RFC 9421
implementation (`http-message-signatures` from PyPI) are accepted, and tampered,
replayed or unsigned ones are refused."""

import json
import pathlib
import secrets
import subprocess

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from http_message_signatures import HTTPMessageSigner, algorithms
from http_message_signatures.resolvers import MappingKeyResolver

import civitas_format as oracle
from conftest import start_broker

SHARED = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"
SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "Schemas" / "datasets"


def catalog_identifiers(catalog):
    """The identifiers of the datasets in a JSON-LD catalog written as one `@graph` of nodes."""
    return {value["@value"] for node in catalog["@graph"] if "dcat:Dataset" in node.get("@type", [])
            for value in node["dct:identifier"]}


@pytest.fixture(scope="module")
def broker(civitas_bin, tmp_path_factory):
    folder = tmp_path_factory.mktemp("broker")
    for name in ["operator", "agency", "partner"]:
        subprocess.run([civitas_bin, "keys", "generate", "--name", name, "--dir", "K"], cwd=folder, check=True, capture_output=True)
    process, url = start_broker(civitas_bin, folder, "K/operator.pub")
    yield {"url": url, "dir": folder, "process": process}
    process.terminate()
    process.wait(timeout=10)


def civitas(cli, broker, *args, check=True):
    return cli.run(*args, "--broker", broker["url"], check=check)


def signer_for(secret_path):
    private = oracle.read_secret(secret_path)
    key = Ed25519PrivateKey.from_private_bytes(bytes(private["signing"]))
    signer = HTTPMessageSigner(signature_algorithm=algorithms.ED25519,
                               key_resolver=MappingKeyResolver(public_keys={}, private_keys={private["key_id"]: key}))
    return signer, private["key_id"]


def signed_get(broker, path, secret_path, nonce=None, created=None):
    signer, key_id = signer_for(secret_path)
    request = requests.Request("GET", broker["url"] + path).prepare()
    signer.sign(request, key_id=key_id, label="sig1", nonce=nonce or secrets.token_hex(12), created=created,
                covered_component_ids=("@method", "@target-uri", "content-digest"), body=b"")
    return request


def test_signed_cli_flow_and_independent_signatures(cli, broker):
    folder = broker["dir"]
    cli.cwd = folder
    civitas(cli, broker, "participants", "add", "--key", "K/operator.secret", "--role", "agency", "K/agency.pub")
    civitas(cli, broker, "participants", "add", "--key", "K/operator.secret", "--role", "partner", "K/partner.pub")
    civitas(cli, broker, "datasets", "register", "--key", "K/agency.secret", "--id", "calls",
            "--schema", SCHEMAS / "emergency-call.schema.json")
    rows = folder / "calls.csv"
    rows.write_text("lat,lng,zip,title,timeStamp,twp\n40.1,-75.2,19401,EMS: FALL VICTIM,2019-01-01 00:00:00,AMBLER\n")
    out = civitas(cli, broker, "publish", "--key", "K/agency.secret", "calls", rows).stdout.decode()
    assert "stored 1 records as batch 1" in out
    assert "already stored" in civitas(cli, broker, "publish", "--key", "K/agency.secret", "calls", rows).stdout.decode()

    # An independent RFC 9421 implementation's signatures are accepted...
    session = requests.Session()
    accepted = session.send(signed_get(broker, "/participants", folder / "K/partner.secret"))
    assert accepted.status_code == 200, accepted.text
    assert {p["name"] for p in accepted.json()["participants"]} == {"operator", "agency", "partner"}

    # ...and replayed, tampered, stale, unsigned or unknown-key requests are refused with 401.
    replay = signed_get(broker, "/participants", folder / "K/partner.secret", nonce="fixed-nonce")
    assert session.send(replay).status_code == 200
    assert session.send(replay).status_code == 401
    tampered = signed_get(broker, "/participants", folder / "K/partner.secret")
    tampered.url = broker["url"] + "/datasets/calls"
    assert session.send(tampered).status_code == 401
    import datetime
    stale = signed_get(broker, "/participants", folder / "K/partner.secret",
                       created=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1))
    assert session.send(stale).status_code == 401
    assert requests.get(broker["url"] + "/participants").status_code == 401
    stranger = folder / "stranger.secret"
    subprocess.run([cli.binary, "keys", "generate", "--name", "stranger", "--dir", "."], cwd=folder, check=True, capture_output=True)
    assert session.send(signed_get(broker, "/participants", stranger)).status_code == 401

    # A valid participant without the role gets 403; a bad batch gets 422 naming row and field.
    line = cli.fails("publish", "--key", "K/partner.secret", "calls", rows, "--broker", broker["url"])
    assert "(403)" in line
    bad = folder / "bad.csv"
    bad.write_text("lat,lng,zip,title,timeStamp,twp\n95,-75.2,19401,X,2019-01-01 00:00:00,AMBLER\n")
    line = cli.fails("publish", "--key", "K/agency.secret", "calls", bad, "--broker", broker["url"])
    assert "(422)" in line and "row 1, field 'lat'" in line

    catalog = requests.get(broker["url"] + "/catalog").json()
    assert catalog_identifiers(catalog) == {"calls"}
    assert "civitas_http_requests_total" in requests.get(broker["url"] + "/metrics").text


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")
def test_911_sample_ingests(cli, broker):
    folder = broker["dir"]
    cli.cwd = folder
    civitas(cli, broker, "participants", "add", "--key", "K/operator.secret", "--role", "agency", "K/agency.pub", check=False)
    civitas(cli, broker, "datasets", "register", "--key", "K/agency.secret", "--id", "montgomery-911",
            "--schema", SCHEMAS / "emergency-call.schema.json")
    out = civitas(cli, broker, "publish", "--key", "K/agency.secret", "montgomery-911", SHARED / "montgomery-911" / "911_sample.csv").stdout.decode()
    assert "stored 10000 records" in out


SDM = {"call-user": "CallComplaints.CallUser", "complaint": "CallComplaints.Complaint",
       "traffic-flow-observed": "Transportation.TrafficFlowObserved",
       "air-quality-observed": "Environment.AirQualityObserved", "waste-container": "WasteManagement.WasteContainer",
       "alert": "Alert.Alert", "camera": "Device.Camera", "device": "Device.Device",
       "smart-metering-observation": "Device.SmartMeteringObservation", "crowd-flow-observed": "Transportation.CrowdFlowObserved"}


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")
def test_smart_data_models_examples_publish_through_the_cli(cli, broker):
    """Every example of every Smart Data Model in ../shared (NGSI-LD and NGSI v2, normalized and
    key-values) is published with the signed CLI to the running broker and stored, except two
    upstream files that contradict their own model or GeoJSON, which are refused naming the field; a file
    broken by a wrong type is refused whole with its record and field."""
    folder = broker["dir"]
    cli.cwd = folder
    civitas(cli, broker, "participants", "add", "--key", "K/operator.secret", "--role", "agency", "K/agency.pub", check=False)
    published = 0
    for name, model in sorted(SDM.items()):
        civitas(cli, broker, "datasets", "register", "--key", "K/agency.secret", "--id", f"sdm-{name}",
                "--schema", SCHEMAS / f"{name}.schema.json")
        for example in ["example.json", "example-normalized.json", "example.jsonld", "example-normalized.jsonld"]:
            path = SHARED / "smart-data-models" / model / example
            result = civitas(cli, broker, "publish", "--key", "K/agency.secret", f"sdm-{name}", path, check=False)
            if (model, example) == ("Environment.AirQualityObserved", "example-normalized.json"):
                # Upstream sends precipitation as Boolean false; the model's own schema.json says number.
                upstream = json.loads((SHARED / "smart-data-models" / model / "schema.json").read_text())
                assert "number" in json.dumps(upstream["allOf"][-1]["properties"]["precipitation"]["type"])
                assert json.loads(path.read_text())["precipitation"]["value"] is False
                assert result.returncode != 0 and "field 'precipitation'" in result.stderr.decode()
                continue
            if (model, example) == ("Device.Camera", "example-normalized.json"):
                # Upstream writes the point as [latitude, longitude]; GeoJSON (RFC 7946) is [longitude, latitude].
                assert json.loads(path.read_text())["location"]["value"]["coordinates"] == [23.831796, 91.28076]
                assert result.returncode != 0 and "field 'location'" in result.stderr.decode() and "off the globe" in result.stderr.decode()
                continue
            out = result.stdout.decode()
            assert result.returncode == 0 and "stored 1 records" in out, (model, example, out, result.stderr.decode())
            published += 1
    assert published == 38
    broken = json.loads((SHARED / "smart-data-models" / "Environment.AirQualityObserved" / "example.json").read_text())
    broken["temperature"] = "warm"
    (folder / "broken.json").write_text(json.dumps(broken))
    refused = civitas(cli, broker, "publish", "--key", "K/agency.secret", "sdm-air-quality-observed", folder / "broken.json", check=False)
    assert refused.returncode != 0
    assert "row 1, field 'temperature'" in refused.stderr.decode()
    catalog = requests.get(broker["url"] + "/catalog").json()
    assert catalog_identifiers(catalog) >= {f"sdm-{name}" for name in SDM}
