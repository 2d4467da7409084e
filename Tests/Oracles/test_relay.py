"""`civitas relay` between a context broker's subscription and the broker: NGSI-LD and NGSI v2
notifications posted to the relay (as Orion-LD posts them) arrive as signed batches, each
attribute's observation time and unit kept as columns; a notification sent again is stored
once (the broker answers it with the batch it stored first); one the schema refuses is answered
422 with the broker's reason, and nothing is stored."""

import json
import pathlib
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import start_broker

SCHEMA = {
    "title": "Traffic flow", "description": "Vehicles counted on a road segment, with when and in which unit.",
    "type": "object", "additionalProperties": False, "required": ["id", "type", "intensity"],
    "properties": {
        "id": {"type": "string", "x-privacy": {"class": "identifier"}},
        "type": {"type": "string", "x-privacy": {"class": "public"}},
        "intensity": {"type": "integer", "minimum": 0, "x-privacy": {"class": "measure", "bounds": ["0", "10000"]}},
        "intensity.observedAt": {"type": "string", "x-privacy": {"class": "public"}},
        "intensity.unitCode": {"type": "string", "x-privacy": {"class": "public"}},
    },
}


@pytest.fixture(scope="module")
def relay(civitas_bin, tmp_path_factory):
    folder = tmp_path_factory.mktemp("relay")

    def civitas(*args):
        result = subprocess.run([civitas_bin, *map(str, args)], cwd=folder, capture_output=True, text=True, timeout=60,
                                env={"PATH": "/usr/bin:/bin", "CIVITAS_BROKER": url or ""})
        assert result.returncode == 0, result.stderr
        return result.stdout

    url = None
    for name in ("operator", "agency"):
        civitas("keys", "generate", "--name", name, "--dir", "K")
    broker, url = start_broker(civitas_bin, folder, "K/operator.pub")
    relay_process = None
    try:
        civitas("participants", "add", "--key", "K/operator.secret", "--role", "agency", "K/agency.pub")
        (folder / "traffic.json").write_text(json.dumps(SCHEMA))
        civitas("datasets", "register", "--key", "K/agency.secret", "--id", "traffic", "--schema", "traffic.json")
        relay_process = subprocess.Popen([civitas_bin, "relay", "--key", "K/agency.secret", "--dataset", "traffic", "--port", "0", "--broker", url],
                                         cwd=folder, stdout=subprocess.PIPE, stderr=open(folder / "relay.log", "w"), text=True)
        deadline = time.time() + 30
        relay_url = None
        while time.time() < deadline and relay_url is None:
            line = relay_process.stdout.readline()
            if "listening on" in line:
                relay_url = line.split("listening on ")[1].split(" ")[0]
        assert relay_url, "the relay did not start"
        yield type("Relay", (), {"url": relay_url, "broker": url, "folder": folder, "civitas": staticmethod(civitas)})
    finally:
        if relay_process:
            relay_process.terminate()
            relay_process.wait(timeout=10)
        broker.terminate()
        broker.wait(timeout=10)


def notify(relay, document, path="/notify"):
    request = urllib.request.Request(relay.url + path, data=json.dumps(document).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def relayed(relay):
    """What the relay reported of each notification: the broker's batch number and record count."""
    lines = (relay.folder / "relay.log").read_text().splitlines()
    return [line.split(": ", 1)[1] for line in lines if line.startswith("relayed a notification")]


LD = {"id": "urn:ngsi-ld:Notification:1", "type": "Notification", "subscriptionId": "urn:ngsi-ld:Subscription:traffic",
      "notifiedAt": "2026-12-05T10:00:01Z",
      "data": [{"id": "urn:ngsi-ld:TrafficFlowObserved:1", "type": "TrafficFlowObserved",
                "intensity": {"type": "Property", "value": 197, "observedAt": "2026-12-05T10:00:00Z", "unitCode": "E50"}},
               {"id": "urn:ngsi-ld:TrafficFlowObserved:2", "type": "TrafficFlowObserved",
                "intensity": {"value": 12, "observedAt": "2026-12-05T10:00:00Z", "unitCode": "E50"}}]}
V2 = {"subscriptionId": "5f3a", "data": [{"id": "TFO-3", "type": "TrafficFlowObserved",
                                          "intensity": {"type": "Number", "value": 40, "metadata": {"unitCode": {"type": "Text", "value": "E50"}}}}]}


def test_notifications_arrive_as_signed_batches_once(relay):
    assert notify(relay, LD)[0] == 204
    assert notify(relay, V2, path="/")[0] == 204
    assert notify(relay, LD)[0] == 204  # the context broker sends it again
    # The broker's answers: two batches, and the repeated notification answered with the first batch.
    assert relayed(relay) == ["batch 1, 2 records", "batch 2, 1 records", "batch 1, 2 records"]


def test_a_refused_notification_is_answered_422_with_the_reason(relay):
    bad = json.loads(json.dumps(LD))
    bad["id"] = "urn:ngsi-ld:Notification:2"
    bad["data"][0]["intensity"]["speedUnit"] = {"type": "Property", "value": "kmh"}
    before = relayed(relay)
    status, reason = notify(relay, bad)
    assert status == 422 and "intensity.speedUnit" in reason, reason
    assert relayed(relay) == before
