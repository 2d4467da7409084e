"""The operator rotates the broker's signing key by restarting it with the new key and the old
one (`--previous-broker-key`). Checked independently with PyNaCl and rfc8785: the
`broker.key_rotated` entry carries the old key's signature over the introduction of the new
one, and the checkpoint first covering it carries both keys' signatures; checkpoints after it
the new key's only. `civitas audit` given the old key follows the chain; a partner keeps pulling
with the new key and the checkpoint it kept under the old one; the old key cannot start the
broker again."""

import base64
import json
import subprocess

import nacl.signing
import rfc8785

import civitas_format
import civitas_log
from clinic_broker import ClinicBroker
from conftest import start_broker


def test_a_rotation_is_introduced_by_the_old_key_and_followed_by_partners_and_auditors(civitas_bin, tmp_path):
    clinic = ClinicBroker(civitas_bin, tmp_path)
    try:
        clinic.publish(30)
        clinic.consent(range(30))
        clinic.agree("ag-health", "health", k=3)
        clinic.release("ag-health", "health", "first.csv")
        old = civitas_format.read_public(tmp_path / "Keys" / "broker.pub")
        kept_before = (tmp_path / "Keys" / "broker.pub.checkpoint").read_text()
    finally:
        clinic.stop()

    # The operator makes a new key and restarts the broker with both.
    clinic.civitas("keys", "generate", "--name", "broker-2027")
    process, url = start_broker(civitas_bin, tmp_path, "Keys/operator.pub", "--broker-key", "Keys/broker-2027.secret",
                                "--previous-broker-key", "Keys/broker.secret")
    clinic.process, clinic.url = process, url
    try:
        new = civitas_format.read_public(tmp_path / "Keys" / "broker-2027.pub")
        clinic.civitas("log", "fetch", "--key", clinic.secret("auditor"), "log.jsonl")
        lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
        header, rest = lines[0], lines[1:]
        origin = header["origin"]
        entries = [line for line in rest if "checkpoint" not in line]
        rotations = [e for e in entries if e["type"] == "broker.key_rotated"]
        assert len(rotations) == 1
        rotation = rotations[0]
        # The introduction: the old key signed the origin and the new keys (RFC 8785 canonical JSON).
        message = b"civitas-broker-key-rotation/1\x00" + rfc8785.dumps({
            "origin": origin, "previous": old["key_id"], "replacement": new["key_id"],
            "ed25519": base64.b64encode(new["ed25519"]).decode(), "x25519": base64.b64encode(new["x25519"]).decode()})
        nacl.signing.VerifyKey(old["ed25519"]).verify(message, base64.b64decode(rotation["introduction"]))
        assert rotation["previous"] == old["key_id"] and rotation["replacement"] == new["key_id"]
        # Positive control: the introduction does not verify for another replacement.
        forged = message.replace(new["key_id"].encode(), old["key_id"].encode())
        try:
            nacl.signing.VerifyKey(old["ed25519"]).verify(forged, base64.b64decode(rotation["introduction"]))
            raise AssertionError("the introduction verified for another key")
        except nacl.exceptions.BadSignatureError:
            pass

        # Checkpoints: the old key's before the rotation, both on the first covering it, the new key's after.
        checkpoints = [line["checkpoint"] for line in rest if "checkpoint" in line]
        sizes = [int(note.split("\n")[1]) for note in checkpoints]
        first_covering = next(i for i, size in enumerate(sizes) if size > rotation["index"])
        for note, size in zip(checkpoints, sizes):
            signed_old = signed_by(note, origin, old["ed25519"])
            signed_new = signed_by(note, origin, new["ed25519"])
            if size <= rotation["index"]:
                assert signed_old and not signed_new
            elif note == checkpoints[first_covering]:
                assert signed_old and signed_new
        # The export's last checkpoint is the new key's.
        assert signed_by(checkpoints[-1], origin, new["ed25519"])

        # The auditor holding the old key follows the chain; holding only the new key it cannot verify the start.
        audited = clinic.civitas("audit", "--broker", "Keys/broker.pub", "--checkpoint", "auditor.checkpoint", "log.jsonl")
        assert old["key_id"] in audited.stdout and new["key_id"] in audited.stdout, audited.stdout
        assert clinic.civitas("audit", "--broker", "Keys/broker-2027.pub", "log.jsonl", check=False).returncode != 0

        # The partner pulls a new release with the new key, from the checkpoint it kept under the old one.
        clinic.publish(10, first=30, name="batch-2.csv")
        clinic.consent(range(30, 40))
        requested = clinic.civitas("request", "release", "--key", clinic.secret("health"), "--purpose", clinic.purpose, "ag-health").stdout
        delivery = requested.split("delivery ")[1].split(":")[0]
        refused = clinic.civitas("pull", "--key", clinic.secret("health"), "--issuer", "Keys/broker.pub", "--delivery", delivery,
                                 "--out", "old-key.csv", check=False)
        assert refused.returncode != 0 and not (tmp_path / "old-key.csv").exists()
        (tmp_path / "Keys" / "broker-2027.pub.checkpoint").write_text(kept_before)
        without = clinic.civitas("pull", "--key", clinic.secret("health"), "--issuer", "Keys/broker-2027.pub", "--delivery", delivery,
                                 "--out", "second.csv", check=False)
        assert without.returncode != 0 and "not signed by the broker" in without.stderr, without.stderr
        pulled = clinic.civitas("pull", "--key", clinic.secret("health"), "--issuer", "Keys/broker-2027.pub", "--previous-issuer",
                                "Keys/broker.pub", "--delivery", delivery, "--out", "second.csv")
        assert "extends the one of" in pulled.stderr
    finally:
        clinic.stop()

    # The old key alone can no longer start the broker on this log.
    started = subprocess.run([civitas_bin, "serve", "--db", "broker.sqlite", "--port", "0"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60)
    assert started.returncode != 0 and "not signed by the broker key" in started.stderr, started.stderr


def signed_by(note, origin, public_key):
    try:
        civitas_log.verify_checkpoint(note, origin, public_key)
        return True
    except (AssertionError, nacl.exceptions.BadSignatureError):
        return False
