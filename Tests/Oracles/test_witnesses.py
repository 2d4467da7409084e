"""Two `civitas witness` processes cosign the broker's checkpoints (C2SP tlog-witness,
tlog-cosignature). The cosignatures are checked here by a verifier written from the two specs
with PyNaCl (key id SHA-256(name, 0x0A, 0x04, key)[:4]; message "cosignature/v1", "time T",
then the checkpoint's body); partners' pulls and auditors' audits require a quorum of them; and a
forked or rolled-back log, signed with the broker's own key, is refused by both witnesses with
the protocol's status codes, also after a witness restarts."""

import base64
import hashlib
import json
import os
import pathlib
import struct
import subprocess
import time
import urllib.error
import urllib.request

import nacl.signing
import pytest

import civitas_format
import civitas_log
from clinic_broker import ClinicBroker
from conftest import start_broker


def start_witness(civitas_bin, folder, name, log_key, port=0):
    folder.mkdir(exist_ok=True)
    process = subprocess.Popen([civitas_bin, "witness", "serve", "--name", name, "--key", "witness.secret", "--state", "state.json",
                                "--log", log_key, "--port", str(port)], cwd=folder,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    key = None
    deadline = time.time() + 30
    while time.time() < deadline:
        line = process.stdout.readline()
        if line.startswith("civitas witness ") and "listening" not in line:
            key = line.split()[-1]
        if "listening on" in line:
            return process, line.split("listening on ")[1].split(" ")[0], key
    process.terminate()
    raise AssertionError(f"the witness did not start: {process.stderr.read() if process.poll() is not None else ''}")


def stop(process):
    process.terminate()
    process.wait(timeout=10)


class Witnessed:
    """The clinic broker with two witnesses; the broker's key is made before either starts."""

    def __init__(self, civitas_bin, folder):
        self.witnesses = {}

        def serve(folder):
            subprocess.run([civitas_bin, "keys", "generate", "--name", "broker"], cwd=folder, check=True, capture_output=True)
            self.log_key = subprocess.run([civitas_bin, "witness", "log-key", "--broker", "Keys/broker.pub"], cwd=folder,
                                          check=True, capture_output=True, text=True).stdout.strip()
            for name in ("w1", "w2"):
                process, url, key = start_witness(civitas_bin, folder / name, f"witness.example/{name}", self.log_key)
                self.witnesses[name] = {"process": process, "url": url, "key": key}
            extra = [arg for w in self.witnesses.values() for arg in ("--witness", f"{w['url']} {w['key']}")]
            return start_broker(civitas_bin, folder, "Keys/operator.pub", "--schedule-interval", "1", *extra)

        self.clinic = ClinicBroker(civitas_bin, folder, serve=serve)

    def stop(self):
        self.clinic.stop()
        for witness in self.witnesses.values():
            if witness["process"].poll() is None:
                stop(witness["process"])


@pytest.fixture(scope="module")
def witnessed(civitas_bin, tmp_path_factory):
    setup = Witnessed(civitas_bin, tmp_path_factory.mktemp("witnesses"))
    yield setup
    setup.stop()


def cosigner(verifier_key):
    """A cosigner verifier key (name+id+base64(0x04||key)), checked against the spec's key id."""
    name, key_id, encoded = verifier_key.split("+", 2)
    raw = base64.b64decode(encoded)
    assert raw[0] == 0x04 and len(raw) == 33
    public = raw[1:]
    assert hashlib.sha256(name.encode() + b"\n" + b"\x04" + public).digest()[:4].hex() == key_id
    return name, bytes.fromhex(key_id), public


def cosignatures(note, verifier_keys):
    """The names of the witnesses whose Ed25519 cosignature/v1 on `note` verifies, with their times."""
    body, _, lines = note.partition("\n\n")
    body += "\n"
    found = {}
    for verifier_key in verifier_keys:
        name, key_id, public = cosigner(verifier_key)
        for line in lines.rstrip("\n").split("\n"):
            dash, signer, blob = line.split(" ")
            raw = base64.b64decode(blob)
            if signer != name or raw[:4] != key_id:
                continue
            assert len(raw) == 4 + 8 + 64
            (timestamp,) = struct.unpack(">Q", raw[4:12])
            message = f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()
            nacl.signing.VerifyKey(public).verify(message, raw[12:])
            found[name] = timestamp
    return found


def get(url):
    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.read().decode()


def add_checkpoint(witness_url, old, proof, note):
    body = f"old {old}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof) + "\n" + note
    request = urllib.request.Request(witness_url + "/add-checkpoint", data=body.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.headers.get("Content-Type"), answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type"), error.read().decode()


def test_checkpoints_carry_both_cosignatures_and_pulls_and_audits_require_the_quorum(witnessed):
    clinic = witnessed.clinic
    keys = [w["key"] for w in witnessed.witnesses.values()]
    witness_args = [arg for key in keys for arg in ("--witness", key)]
    clinic.publish(30)
    clinic.consent(range(30))
    clinic.agree("ag-health", "health", k=3)
    requested = clinic.civitas("request", "release", "--key", clinic.secret("health"), "--purpose", clinic.purpose, "ag-health").stdout
    delivery = requested.split("delivery ")[1].split(":")[0]

    # The public checkpoint carries both cosignatures, verified from the specs.
    note = get(clinic.url + "/log/checkpoint")
    origin, size, _ = civitas_log.verify_checkpoint(note, note.split("\n", 1)[0],
                                                    civitas_format.read_public(clinic.folder / "Keys" / "broker.pub")["ed25519"])
    found = cosignatures(note, keys)
    assert set(found) == {"witness.example/w1", "witness.example/w2"}
    assert all(abs(stamp - time.time()) < 120 for stamp in found.values())
    # Positive control: the same cosignature lines do not verify on another checkpoint body.
    forged = note.replace(f"\n{size}\n", f"\n{size + 1}\n", 1)
    with pytest.raises(nacl.exceptions.BadSignatureError):
        cosignatures(forged, keys)

    # A pull requiring both witnesses passes; so does an audit of the export.
    pulled = clinic.civitas("pull", "--key", clinic.secret("health"), "--issuer", "Keys/broker.pub", "--delivery", delivery,
                            "--out", "release.csv", *witness_args, "--quorum", "2")
    assert pulled.returncode == 0
    clinic.civitas("log", "fetch", "--key", clinic.secret("health"), "log.jsonl")
    audited = clinic.civitas("audit", "--broker", "Keys/broker.pub", "log.jsonl", *witness_args)
    assert "witnessed by" in audited.stdout and "witness.example/w2" in audited.stdout

    # A witness the broker does not use: the quorum check refuses (the control that it can fail).
    stranger_public = bytes(nacl.signing.SigningKey.generate().verify_key)
    stranger = ("witness.example/w3+" + hashlib.sha256(b"witness.example/w3\n\x04" + stranger_public).digest()[:4].hex() + "+"
                + base64.b64encode(b"\x04" + stranger_public).decode())
    refused = clinic.civitas("pull", "--key", clinic.secret("health"), "--issuer", "Keys/broker.pub", "--delivery", delivery,
                             "--out", "stranger.csv", "--witness", keys[0], "--witness", stranger, "--quorum", "2", check=False)
    assert refused.returncode != 0 and "witness.example/w3" in refused.stderr, refused.stderr
    assert not (clinic.folder / "stranger.csv").exists()

    # One witness stops: new checkpoints carry only the other's cosignature; a quorum of 2 fails, 1 passes.
    stop(witnessed.witnesses["w2"]["process"])
    clinic.publish(10, first=30, name="batch-2.csv")
    clinic.consent(range(30, 40))
    requested = clinic.civitas("request", "release", "--key", clinic.secret("health"), "--purpose", clinic.purpose, "ag-health").stdout
    second = requested.split("delivery ")[1].split(":")[0]
    refused = clinic.civitas("pull", "--key", clinic.secret("health"), "--issuer", "Keys/broker.pub", "--delivery", second,
                             "--out", "second.csv", *witness_args, "--quorum", "2", check=False)
    assert refused.returncode != 0 and "missing: witness.example/w2" in refused.stderr, refused.stderr
    clinic.civitas("pull", "--key", clinic.secret("health"), "--issuer", "Keys/broker.pub", "--delivery", second,
                   "--out", "second.csv", *witness_args, "--quorum", "1")

    # The witness comes back on its state: the broker's next checkpoint extends what it cosigned, and it cosigns again.
    w2 = witnessed.witnesses["w2"]
    port = int(w2["url"].rsplit(":", 1)[1])
    w2["process"], _, key = start_witness(clinic.binary, clinic.folder / "w2", "witness.example/w2", witnessed.log_key, port=port)
    assert key == w2["key"]
    clinic.consent(range(40, 45))
    deadline = time.time() + 30
    while time.time() < deadline and len(cosignatures(get(clinic.url + "/log/checkpoint"), keys)) < 2:
        time.sleep(0.5)
    assert len(cosignatures(get(clinic.url + "/log/checkpoint"), keys)) == 2


def test_both_witnesses_refuse_a_forked_or_rolled_back_log(witnessed):
    clinic = witnessed.clinic
    broker_secret = civitas_format.read_secret(clinic.folder / "Keys" / "broker.secret")
    note = get(clinic.url + "/log/checkpoint")
    origin, size, root = civitas_log.verify_checkpoint(note, note.split("\n", 1)[0], bytes(broker_secret["signing"].verify_key))
    for name in ("w1", "w2"):
        url = witnessed.witnesses[name]["url"]
        # What the witness holds now: an old size of 0 is answered with it (409, text/x.tlog.size).
        status, content_type, body = add_checkpoint(url, 0, [], note)
        assert status == 409 and content_type == "text/x.tlog.size", (status, body)
        held = int(body)
        assert 0 < held <= size
        held_note = note if held == size else None

        # A fork at the size the witness holds: another root, signed with the broker's own key.
        forked = civitas_log.sign_checkpoint(origin, held, civitas_log.leaf_hash(b"a rewritten history"), broker_secret["signing"])
        status, content_type, body = add_checkpoint(url, held, [], forked)
        assert status == 409 and body == f"{held}\n", (name, status, body)

        # A fork that grows: a longer tree whose proof from the held size cannot join the held root.
        leaves = [civitas_log.leaf_hash(f"forked {i}".encode()) for i in range(held + 5)]
        forked_root = civitas_log.root(leaves)
        longer = civitas_log.sign_checkpoint(origin, held + 5, forked_root, broker_secret["signing"])
        status, _, body = add_checkpoint(url, held, [civitas_log.leaf_hash(b"not a proof")], longer)
        assert status == 422, (name, status, body)

        # A rollback: a smaller tree after the held one.
        smaller = civitas_log.sign_checkpoint(origin, held - 1, civitas_log.leaf_hash(b"older"), broker_secret["signing"])
        status, _, _ = add_checkpoint(url, held, [], smaller)
        assert status == 400
        status, _, body = add_checkpoint(url, held - 1, [], smaller)
        assert status == 409 and body == f"{held}\n"

        # Not the broker's key, and not a log the witness follows.
        stranger = civitas_log.sign_checkpoint(origin, held + 1, forked_root, nacl.signing.SigningKey.generate())
        assert add_checkpoint(url, held, [], stranger)[0] == 403
        other = civitas_log.sign_checkpoint("other.example/log", 1, forked_root, broker_secret["signing"])
        assert add_checkpoint(url, 0, [], other)[0] == 404

        # The positive control: the true checkpoint at the held size is cosigned again.
        if held_note is not None:
            status, _, body = add_checkpoint(url, held, [], held_note)
            assert status == 200 and body.startswith(f"\u2014 witness.example/{name} "), (status, body)
            assert name in "".join(cosignatures(held_note + body, [witnessed.witnesses[name]["key"]]))

    # After the refused fork, the witnesses still cosign the broker's true log.
    clinic.consent(range(45, 50))
    keys = [w["key"] for w in witnessed.witnesses.values()]
    assert len(cosignatures(get(clinic.url + "/log/checkpoint"), keys)) == 2


def test_the_witness_state_is_private_and_held_by_one_process(witnessed, civitas_bin):
    folder = witnessed.clinic.folder / "w1"
    assert os.stat(folder / "state.json").st_mode & 0o077 == 0
    assert os.stat(folder / "witness.secret").st_mode & 0o077 == 0
    state = json.loads((folder / "state.json").read_text())
    assert list(state) == [witnessed.log_key.split("+")[0]]
    second = subprocess.run([civitas_bin, "witness", "serve", "--name", "witness.example/w1", "--key", "witness.secret",
                             "--state", "state.json", "--log", witnessed.log_key, "--port", "0"],
                            cwd=folder, capture_output=True, text=True, timeout=30)
    assert second.returncode != 0 and "another witness is running" in second.stderr, second.stderr


def test_a_broker_restored_from_an_old_copy_and_rewritten_gets_no_cosignature(witnessed, civitas_bin, tmp_path):
    """The operator's attack: copy the database, let the true log move on, then run the copy and
    write another history from it. Neither witness cosigns the copy's checkpoints, so a partner or
    auditor requiring the quorum refuses them; the true log stays cosigned."""
    import shutil
    import sqlite3
    clinic = witnessed.clinic
    keys = [w["key"] for w in witnessed.witnesses.values()]
    fork = tmp_path / "fork"
    (fork / "Keys").mkdir(parents=True)
    for key in (clinic.folder / "Keys").glob("*"):
        shutil.copy2(key, fork / "Keys" / key.name)
    shutil.copy2(clinic.folder / "broker.sqlite.storage-key", fork / "broker.sqlite.storage-key")
    with sqlite3.connect(clinic.folder / "broker.sqlite") as source, sqlite3.connect(fork / "broker.sqlite") as copy:
        source.backup(copy)
    (fork / "subjects.txt").write_text("\n".join(f"F{i}" for i in range(5)) + "\n")

    # The true log moves on and is cosigned.
    clinic.consent(range(50, 52))
    true_note = get(clinic.url + "/log/checkpoint")
    assert len(cosignatures(true_note, keys)) == 2

    extra = [arg for w in witnessed.witnesses.values() for arg in ("--witness", f"{w['url']} {w['key']}")]
    process, url = start_broker(civitas_bin, fork, "Keys/operator.pub", "--schedule-interval", "1", *extra)
    try:
        publisher = clinic.secret(clinic.scenario["publisher"])
        for n in range(3):
            subprocess.run([civitas_bin, "consent", "grant", "--key", publisher, "--dataset", clinic.dataset, "--subjects", "subjects.txt",
                            "--purpose", f"{clinic.purpose}", "--notice", f"notice-fork-{n}", "--jurisdiction", "EU"],
                           cwd=fork, env={"PATH": "/usr/bin:/bin", "CIVITAS_BROKER": url}, check=True, capture_output=True, timeout=120)
        time.sleep(2)
        forked_note = get(url + "/log/checkpoint")
        assert forked_note.split("\n")[:2] != true_note.split("\n")[:2]
        assert cosignatures(forked_note, keys) == {}
        subprocess.run([civitas_bin, "log", "fetch", "--key", publisher, "fork.jsonl"], cwd=fork,
                       env={"PATH": "/usr/bin:/bin", "CIVITAS_BROKER": url}, check=True, capture_output=True, timeout=120)
        audit = subprocess.run([civitas_bin, "audit", "--broker", "Keys/broker.pub", "fork.jsonl", *[a for k in keys for a in ("--witness", k)],
                                "--quorum", "1"], cwd=fork, capture_output=True, text=True, timeout=120)
        assert audit.returncode != 0 and "cosigned by 0 of the 1 witnesses required" in audit.stderr, audit.stderr
        # Positive control: without witnesses the copy's own export passes the audit, since every signature is the broker's.
        assert subprocess.run([civitas_bin, "audit", "--broker", "Keys/broker.pub", "fork.jsonl"], cwd=fork,
                              capture_output=True, timeout=120).returncode == 0
    finally:
        stop(process)

    # The witnesses still hold the true log and cosign its next checkpoint.
    clinic.consent(range(52, 54))
    assert len(cosignatures(get(clinic.url + "/log/checkpoint"), keys)) == 2
