"""A partner's pull checks the broker's log only ever grows: each delivery's signed checkpoint
must extend the one the partner kept from its last pull, by an RFC 9162 consistency proof the
broker serves at /log/consistency. The proofs are checked here by an independent verifier
written from RFC 9162 section 2.1.4.2 (civitas_log.verify_consistency, which agrees with every
published RFC 9162 consistency vector in the shared data), and the pull is shown a forked and a rolled-back
history, signed with the broker's own key, and refuses both."""

import base64
import json
import pathlib
import urllib.request

import pytest

import civitas_format
import civitas_log
from clinic_broker import ClinicBroker

ROOT = pathlib.Path(__file__).resolve().parents[2]
VECTORS = ROOT.parent / "shared" / "data" / "vectors"


@pytest.fixture(scope="module")
def clinic(civitas_bin, tmp_path_factory):
    broker = ClinicBroker(civitas_bin, tmp_path_factory.mktemp("consistency"))
    yield broker
    broker.stop()


def get(url):
    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.read().decode()


def broker_key(clinic):
    return civitas_format.read_public(clinic.folder / "Keys" / "broker.pub")


def checkpoint_of(note, clinic):
    origin = note.split("\n", 1)[0]
    return civitas_log.verify_checkpoint(note, origin, broker_key(clinic)["ed25519"])


def pull(clinic, delivery, out, check=True):
    return clinic.civitas("pull", "--key", clinic.secret("health"), "--issuer", "Keys/broker.pub", "--delivery", delivery,
                          "--out", out, check=check)


def test_the_independent_verifier_agrees_with_every_published_vector():
    """Each vector (transparency-dev's RFC 9162 consistency vectors: happy paths, and proofs
    truncated, extended, bit-flipped or for the wrong sizes) is accepted exactly when it should be."""
    files = sorted((VECTORS / "rfc9162-merkle" / "consistency").rglob("*.json"))
    if not files:
        pytest.skip("the shared RFC 9162 vectors are absent")
    decode = lambda text: base64.b64decode(text) if text else b""
    wrong = []
    for path in files:
        vector = json.loads(path.read_text())
        accepted = civitas_log.verify_consistency(vector["size1"], vector["size2"], decode(vector.get("root1")), decode(vector.get("root2")),
                                                  [decode(h) for h in vector.get("proof") or []])
        if accepted == vector["wantErr"]:
            wrong.append(f"{path.relative_to(VECTORS)}: {vector['desc']}")
    assert len(files) > 50 and not wrong, wrong


def test_pulls_keep_the_checkpoint_and_refuse_a_forked_or_rolled_back_log(clinic):
    clinic.publish(30)
    clinic.consent(range(30))
    clinic.agree("ag-health", "health", k=3)
    report = clinic.release("ag-health", "health", "first.csv")
    delivery = report.split("delivery ")[1].split(":")[0]
    kept_path = clinic.folder / "Keys" / "broker.pub.checkpoint"
    first_note = kept_path.read_text()
    origin, first_size, first_root = checkpoint_of(first_note, clinic)

    # The log grows; the broker's proof between the two checkpoints passes the independent verifier.
    clinic.consent(range(30, 40))
    latest_note = get(clinic.url + "/log/checkpoint")
    _, latest_size, latest_root = checkpoint_of(latest_note, clinic)
    assert latest_size > first_size
    answer = json.loads(get(f"{clinic.url}/log/consistency?from={first_size}&to={latest_size}"))
    proof = [bytes.fromhex(h) for h in answer["proof"]]
    assert (answer["from"], answer["to"]) == (first_size, latest_size)
    assert civitas_log.verify_consistency(first_size, latest_size, first_root, latest_root, proof)
    # Positive control: the same proof does not join the first root to any other second root.
    assert not civitas_log.verify_consistency(first_size, latest_size, first_root, civitas_log.leaf_hash(b"other"), proof)

    # The next pull checks the new checkpoint extends the kept one, and keeps it.
    second = pull(clinic, delivery, "second.csv")
    assert f"extends the one of {first_size} entries" in second.stderr
    _, kept_size, _ = checkpoint_of(kept_path.read_text(), clinic)
    assert kept_size >= latest_size

    # A fork: a checkpoint of the same size with another root, signed with the broker's own key.
    broker_secret = civitas_format.read_secret(clinic.folder / "Keys" / "broker.secret")
    forked = civitas_log.sign_checkpoint(origin, first_size, civitas_log.leaf_hash(b"a rewritten history"), broker_secret["signing"])
    kept_path.write_text(forked)
    refused = pull(clinic, delivery, "forked.csv", check=False)
    assert refused.returncode != 0 and "forked" in refused.stderr, refused.stderr
    assert not (clinic.folder / "forked.csv").exists()
    assert kept_path.read_text() == forked

    # Two different trees of the very size the broker shows now.
    _, now_size, _ = checkpoint_of(get(clinic.url + "/log/checkpoint"), clinic)
    kept_path.write_text(civitas_log.sign_checkpoint(origin, now_size, civitas_log.leaf_hash(b"another tree"), broker_secret["signing"]))
    refused = pull(clinic, delivery, "twin.csv", check=False)
    assert refused.returncode != 0 and "different roots" in refused.stderr, refused.stderr

    # A rollback: the partner kept a larger tree than the broker now shows.
    ahead = civitas_log.sign_checkpoint(origin, 10_000, latest_root, broker_secret["signing"])
    kept_path.write_text(ahead)
    refused = pull(clinic, delivery, "rolled.csv", check=False)
    assert refused.returncode != 0 and "rolled back" in refused.stderr, refused.stderr
    assert not (clinic.folder / "rolled.csv").exists()

    # A kept checkpoint signed by another key is not taken as the broker's.
    import nacl.signing
    kept_path.write_text(civitas_log.sign_checkpoint(origin, first_size, first_root, nacl.signing.SigningKey.generate()))
    refused = pull(clinic, delivery, "other.csv", check=False)
    assert refused.returncode != 0 and "not signed by the broker" in refused.stderr, refused.stderr

    # Given back the true checkpoint, the pull passes again.
    kept_path.write_text(first_note)
    assert pull(clinic, delivery, "again.csv").returncode == 0
