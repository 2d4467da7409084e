"""A partner rotates its key through the CLI: asked with its current key, approved by the
operator, then used for a release that is sealed to the new key only (opened here with PyNaCl
by the new key, refused by the old one); the old key is accepted during the grace period and
refused after it; the log records the rotation and the audit passes."""

import json
import time

import civitas_format
from clinic_broker import ClinicBroker
from conftest import start_broker
from test_cli_json import shape


def test_a_partner_rotates_its_key_and_keeps_its_agreement(civitas_bin, tmp_path):
    clinic = ClinicBroker(civitas_bin, tmp_path,
                          serve=lambda folder: start_broker(civitas_bin, folder, "Keys/operator.pub", "--key-grace-period", "3"))
    try:
        clinic.publish(30)
        clinic.consent(range(30))
        clinic.agree("ag-health", "health", k=3)
        clinic.civitas("keys", "generate", "--name", "health-2027")
        new_id = clinic.key_id("health-2027")
        asked = shape("participants rotate-key", clinic.civitas("participants", "rotate-key", "--key", clinic.secret("health"),
                                                                "Keys/health-2027.pub", "--json").stdout)
        assert asked["state"] == "pending" and asked["key_id"] == new_id and asked["participant"] == clinic.key_id("health")

        # Not yet approved: the new key signs for nobody, and says why.
        early = clinic.civitas("participants", "list", "--key", "Keys/health-2027.secret", check=False)
        assert early.returncode != 0 and "awaits the operator's approval" in early.stderr, early.stderr
        pending = shape("participants pending-keys", clinic.civitas("participants", "pending-keys", "--key", clinic.secret("operator"),
                                                                    "--json").stdout)
        assert [k["key_id"] for k in pending["keys"]] == [new_id]
        refused = clinic.civitas("participants", "approve-key", "--key", clinic.secret("health"), new_id, check=False)
        assert refused.returncode != 0
        approved = shape("participants approve-key", clinic.civitas("participants", "approve-key", "--key", clinic.secret("operator"),
                                                                    new_id, "--json").stdout)
        assert approved["state"] == "approved" and approved["replaced_key"] == clinic.key_id("health")

        # The partner, now signing with the new key, still holds its agreement.
        requested = clinic.civitas("request", "release", "--key", "Keys/health-2027.secret", "--purpose", clinic.purpose, "ag-health",
                                   "--json").stdout
        delivery = json.loads(requested)["id"]
        clinic.civitas("pull", "--key", "Keys/health-2027.secret", "--issuer", "Keys/broker.pub", "--delivery", delivery,
                       "--out", "received.csv", "--save-envelopes", "envelopes")
        envelope = (tmp_path / "envelopes" / f"{delivery}.envelope").read_bytes()
        broker = civitas_format.read_public(tmp_path / "Keys" / "broker.pub")
        manifest, payload = civitas_format.open_envelope(envelope, civitas_format.read_secret(tmp_path / "Keys" / "health-2027.secret"), broker)
        assert manifest["recipient"] == new_id and len(payload.decode().splitlines()) > 1
        try:
            civitas_format.open_envelope(envelope, civitas_format.read_secret(tmp_path / "Keys" / "health.secret"), broker)
            raise AssertionError("the old key opened an envelope sealed after the rotation")
        except civitas_format.Rejected:
            pass

        # The old key: accepted during the grace period, refused after it, naming the current key.
        assert clinic.civitas("participants", "list", "--key", clinic.secret("health")).returncode == 0
        time.sleep(3.5)
        late = clinic.civitas("participants", "list", "--key", clinic.secret("health"), check=False)
        assert late.returncode != 0 and "was retired" in late.stderr and new_id in late.stderr, late.stderr

        # The log records the rotation; the audit follows it.
        clinic.civitas("log", "fetch", "--key", clinic.secret("auditor"), "log.jsonl")
        entries = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()[1:]]
        rotations = [e for e in entries if e.get("type") == "key.rotated"]
        assert [(r["participant"], r["replacement"]) for r in rotations] == [(clinic.key_id("health"), new_id)]
        clinic.civitas("audit", "--broker", "Keys/broker.pub", "log.jsonl")
    finally:
        clinic.stop()
