"""The README's walkthrough, command by command, against a real `civitas serve` on
loopback: keys, registration, a dataset and a batch, consent from a subjects file,
an agreement offered and accepted, a release pulled and decrypted, a DP aggregate,
a feed window pulled and acknowledged, the log fetched and audited. Independent
checks on the way: pycanon on the received table, PyNaCl verifying the consent
receipts, and the rfc8785 hash of the policy against the one the broker logged."""
import base64
import hashlib
import json
import pathlib
import subprocess
import time

import nacl.exceptions
import nacl.signing
import pandas as pd
import pytest
import rfc8785
from pycanon import anonymity

import civitas_format as fmt
import civitas_log as log
from conftest import start_broker

PURPOSE = "public-health-surveillance"


DECLARED_TOWNS = ["NORRISTOWN", "ABINGTON", "LOWER MERION", "CHELTENHAM", "WORCESTER"]


def calls_csv(rows):
    """911-shaped calls with a caller column; callers ending in 0 never consent."""
    lines = ["lat,lng,desc,zip,title,timeStamp,twp,addr,e,caller"]
    towns = ["NORRISTOWN", "ABINGTON", "LOWER MERION", "CHELTENHAM"]
    titles = ["EMS: FALL VICTIM", "EMS: RESPIRATORY EMERGENCY", "Fire: FIRE ALARM", "Traffic: DISABLED VEHICLE -"]
    for i in rows:
        town = towns[i % 4]
        lines.append(f"40.{100000 + (i * 7919) % 300000},-75.{200000 + (i * 104729) % 300000},x;,{19400 + i % 40},"
                     f"{titles[(i // 4) % 4]},2016-0{1 + i % 9}-1{i % 10} 0{i % 10}:1{i % 6}:00,{town},MAIN ST,1,215-555-{i % 500:04d}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def walk(civitas_bin, tmp_path_factory):
    folder = tmp_path_factory.mktemp("walkthrough")

    def civitas(*args, check=True):
        result = subprocess.run([civitas_bin, *map(str, args)], cwd=folder, capture_output=True, text=True, timeout=120,
                                env={"PATH": "/usr/bin:/bin", "CIVITAS_BROKER": url} if url else None)
        if check:
            assert result.returncode == 0, f"civitas {' '.join(map(str, args))}: {result.stderr}"
        return result

    url = None
    for name in ["operator", "emergency-services", "health", "auditor"]:
        civitas("keys", "generate", "--name", name)
    server, url = start_broker(civitas_bin, folder, "Keys/operator.pub", "--schedule-interval", "1", "--webhook-allow", "127.0.0.1")
    yield folder, civitas
    server.terminate()
    server.wait(timeout=10)


def test_walkthrough(walk):
    folder, civitas = walk
    schemas = pathlib.Path(__file__).resolve().parents[2] / "Schemas"
    # The operator registers the participants; the agency registers its dataset and publishes.
    civitas("participants", "add", "--key", "Keys/operator.secret", "--role", "agency", "Keys/emergency-services.pub")
    civitas("participants", "add", "--key", "Keys/operator.secret", "--role", "partner", "Keys/health.pub")
    civitas("participants", "add", "--key", "Keys/operator.secret", "--role", "auditor", "Keys/auditor.pub")
    civitas("datasets", "register", "--key", "Keys/emergency-services.secret", "--id", "montgomery-911",
            "--schema", schemas / "datasets" / "emergency-call.schema.json", "--purpose", PURPOSE)
    (folder / "calls.csv").write_text(calls_csv(range(3000)))
    civitas("publish", "--key", "Keys/emergency-services.secret", "montgomery-911", "calls.csv")

    # Consent from a subjects file; receipts verified with PyNaCl.
    consenting = sorted({f"215-555-{i % 500:04d}" for i in range(3000)} - {f"215-555-{i:04d}" for i in range(0, 500, 10)})
    (folder / "consenting.txt").write_text("\n".join(consenting) + "\n")
    civitas("consent", "grant", "--key", "Keys/emergency-services.secret", "--dataset", "montgomery-911", "--subjects", "consenting.txt",
            "--purpose", PURPOSE, "--notice", "https://city.example/notices/911-research", "--jurisdiction", "US-PA",
            "--receipt", "receipts.jsonl")
    broker = fmt.read_public(folder / "Keys" / "broker.pub")
    lines = [json.loads(line) for line in (folder / "receipts.jsonl").read_text().splitlines()]
    batch, receipts = lines[0]["batch"], lines[1:]
    assert len(receipts) == len(consenting) == 450
    # One signature per request, over the consent.recorded log entry; each receipt proves itself
    # by its RFC 9162 inclusion proof up to the entry's receipts_root.
    entry = batch["log_entry"]
    assert entry["type"] == "consent.recorded" and entry["receipts"] == 450 and entry["granted"] == 450
    nacl.signing.VerifyKey(broker["ed25519"]).verify(b"civitas-consent-receipts/1\x00" + rfc8785.dumps(entry),
                                                     base64.b64decode(batch["signature"]))
    root = bytes.fromhex(entry["receipts_root"])

    def proves(receipt):
        leaf = log.leaf_hash(rfc8785.dumps(receipt["receipt"]))
        proof = [base64.b64decode(h, validate=True) for h in receipt["inclusion_proof"]]
        try:
            return log.root_from_inclusion(leaf, receipt["receipt_index"], entry["receipts"], proof) == root
        except AssertionError:
            return False

    assert [r["receipt_index"] for r in receipts] == list(range(450))
    assert all(proves(r) for r in receipts)
    assert len({r["receipt"]["record_id"] for r in receipts}) == 450
    for r in receipts[:3]:
        assert r["receipt"]["schema_version"] == "ISO/IEC TS 27560:2023" and r["receipt"]["state"] == "active"
    # Positive controls: a changed record, a receipt under another's index, a shortened proof all fail.
    forged = json.loads(json.dumps(receipts[7]))
    forged["receipt"]["state"] = "withdrawn"
    moved = dict(receipts[7], receipt_index=8)
    short = dict(receipts[7], inclusion_proof=receipts[7]["inclusion_proof"][:-1])
    assert not proves(forged) and not proves(moved) and not proves(short)
    tampered = dict(entry, granted=449)
    try:
        nacl.signing.VerifyKey(broker["ed25519"]).verify(b"civitas-consent-receipts/1\x00" + rfc8785.dumps(tampered),
                                                         base64.b64decode(batch["signature"]))
        raise AssertionError("a changed log entry verified")
    except nacl.exceptions.BadSignatureError:
        pass

    # The agreement: offered by the agency, accepted by health.
    publisher = civitas("keys", "show", "--id", "Keys/emergency-services.pub").stdout.strip()
    partner = civitas("keys", "show", "--id", "Keys/health.pub").stdout.strip()
    policy = {"agreement": "ag-911-health", "dataset": "montgomery-911", "publisher": publisher, "partner": partner,
              "purposes": [PURPOSE], "legal_basis": "consent", "fields": ["caller", "lat", "lng", "zip", "title", "timeStamp", "twp"],
              "treatment": {"k": 5, "suppression_limit": 0.1},
              "aggregates": {"group_by": ["twp"], "group_keys": {"twp": DECLARED_TOWNS}, "max_epsilon_per_query": 0.5},
              "epsilon_budget": 1,
              "feed": {"window_records": 200, "window_seconds": 600, "below_k": "wait"},
              "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2036-12-31T23:59:59Z"}
    (folder / "policy.json").write_text(json.dumps(policy, indent=2))
    offered = civitas("agreements", "offer", "--key", "Keys/emergency-services.secret", "policy.json").stdout
    assert hashlib.sha256(rfc8785.dumps(policy)).hexdigest() in offered
    civitas("agreements", "accept", "--key", "Keys/health.secret", "ag-911-health")
    odrl = json.loads(civitas("agreements", "show", "--key", "Keys/health.secret", "--odrl", "ag-911-health").stdout)
    assert odrl["@type"] == "Agreement"

    # A release, pulled, verified and decrypted; pycanon checks k.
    requested = civitas("request", "release", "--key", "Keys/health.secret", "--purpose", PURPOSE, "ag-911-health").stdout
    delivery = requested.split("delivery ")[1].split(":")[0]
    assert "without consent 300" in requested, requested
    civitas("pull", "--key", "Keys/health.secret", "--issuer", "Keys/broker.pub", "--delivery", delivery, "--out", "received.csv",
            "--save-envelopes", "envelopes")
    received = pd.read_csv(folder / "received.csv", dtype=str, keep_default_na=False)
    quasi_identifiers = ["lat", "lng", "zip", "timeStamp", "twp"]
    assert len(received) > 2000 and anonymity.k_anonymity(received, quasi_identifiers) >= 5
    # k counts callers: pandas counts the distinct caller pseudonyms of every class.
    assert received.groupby(quasi_identifiers)["caller"].nunique().min() >= 5
    assert not received["caller"].str.startswith("215-555").any()
    manifest, _ = fmt.open_envelope((folder / "envelopes" / f"{delivery}.envelope").read_bytes(),
                                    fmt.read_secret(folder / "Keys" / "health.secret"), broker)
    assert manifest["metadata"]["agreement"] == "ag-911-health"
    # The broker's evidence that it logged this delivery, checked with our own RFC 9162 code.
    evidence = json.loads((folder / "envelopes" / f"{delivery}.evidence.json").read_text())
    assert evidence["entry"]["release"] == delivery and evidence["entry"]["envelope_manifest"] == manifest
    origin = evidence["checkpoint"].split("\n")[0]
    _, size, signed_root = log.verify_checkpoint(evidence["checkpoint"], origin, broker["ed25519"])
    proof = [bytes.fromhex(h) for h in evidence["proof"]]
    assert log.root_from_inclusion(log.leaf_hash(rfc8785.dumps(evidence["entry"])), evidence["index"], size, proof) == signed_root

    # A DP aggregate, then the budget runs out.
    counted = civitas("request", "aggregate", "--key", "Keys/health.secret", "--purpose", PURPOSE, "--statistic", "count",
                      "--group-by", "twp", "--epsilon", "0.5", "ag-911-health").stdout
    assert "ε charged 0.5" in counted
    aggregate = counted.split("delivery ")[1].split(":")[0]
    civitas("pull", "--key", "Keys/health.secret", "--issuer", "Keys/broker.pub", "--delivery", aggregate, "--out", "counts.csv")
    counts = pd.read_csv(folder / "counts.csv")
    # Every declared town is output, the one nobody called from too: the data never decides which keys appear.
    assert list(counts.columns) == ["twp", "count"] and list(counts["twp"]) == DECLARED_TOWNS
    civitas("request", "aggregate", "--key", "Keys/health.secret", "--purpose", PURPOSE, "--epsilon", "0.5", "ag-911-health")
    refused = civitas("request", "aggregate", "--key", "Keys/health.secret", "--purpose", PURPOSE, "--epsilon", "0.1", "ag-911-health",
                      check=False)
    assert refused.returncode != 0 and "(409)" in refused.stderr and "ε 0 left" in refused.stderr

    # A feed: new calls fill a window; health pulls it and acknowledges.
    feed = civitas("request", "feed", "--key", "Keys/health.secret", "--purpose", PURPOSE, "ag-911-health").stdout.split("feed ")[1].strip()
    (folder / "later.csv").write_text(calls_csv(range(3000, 3300)))
    civitas("publish", "--key", "Keys/emergency-services.secret", "montgomery-911", "later.csv")
    pulled = civitas("pull", "--key", "Keys/health.secret", "--issuer", "Keys/broker.pub", "--feed", feed, "--wait", "10", "--ack",
                     "--format", "jsonl", "--out", "window.jsonl")
    assert "window 1" in pulled.stderr and "acknowledged windows through 1" in pulled.stderr
    window = [json.loads(line) for line in (folder / "window.jsonl").read_text().splitlines()]
    assert window and set(window[0]) == {"caller", "lat", "lng", "zip", "title", "timeStamp", "twp"}
    assert anonymity.k_anonymity(pd.DataFrame(window).astype(str), ["lat", "lng", "zip", "timeStamp", "twp"]) >= 5
    again = civitas("pull", "--key", "Keys/health.secret", "--issuer", "Keys/broker.pub", "--feed", feed, "--out", "none.csv")
    assert "no new window" in again.stderr

    # The auditor fetches the log and audits it; the policy hash logged is the one rfc8785 computes.
    civitas("log", "fetch", "--key", "Keys/auditor.secret", "log.jsonl")
    audit = civitas("audit", "--broker", "Keys/broker.pub", "--checkpoint", "auditor.checkpoint", "log.jsonl")
    assert "audit OK" in audit.stdout and "ε spent 1 of 1" in audit.stdout
    entries = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()[1:] if not line.startswith('{"checkpoint"')]
    raw = [line.encode() for line in (folder / "log.jsonl").read_text().splitlines()[1:] if not line.startswith('{"checkpoint"')]
    assert log.root([log.leaf_hash(e) for e in raw[:size]]) == signed_root, "the evidence's checkpoint is not a prefix of the exported log"
    offers = [e for e in entries if e["type"] == "agreement.offered"]
    # The consent receipts' signed entry is the very entry the auditor's log holds.
    assert raw[entry["index"]] == rfc8785.dumps(entry)
    assert offers[0]["policy_sha256"] == hashlib.sha256(rfc8785.dumps(policy)).hexdigest()


def test_webhook_push_retries_until_accepted(walk):
    """A feed with a webhook: the receiver refuses the first push (500) and accepts the next; the
    broker retries with backoff, the pushed envelope verifies and opens with PyNaCl, and the feed
    records it as pushed."""
    import http.server
    import threading

    folder, civitas = walk
    received, statuses = [], []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = 500 if not statuses else 200
            statuses.append(status)
            if status == 200:
                received.append((dict(self.headers), body))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hook = f"http://127.0.0.1:{server.server_address[1]}/civitas"
        # A partner of its own: health's pull feed would take the batch first, since a record reaches a partner once.
        civitas("keys", "generate", "--name", "research")
        civitas("participants", "add", "--key", "Keys/operator.secret", "--role", "partner", "Keys/research.pub")
        policy = {"agreement": "ag-911-research", "dataset": "montgomery-911",
                  "publisher": civitas("keys", "show", "--id", "Keys/emergency-services.pub").stdout.strip(),
                  "partner": civitas("keys", "show", "--id", "Keys/research.pub").stdout.strip(),
                  "purposes": [PURPOSE], "legal_basis": "consent", "fields": ["caller", "lat", "lng", "zip", "title", "timeStamp", "twp"],
                  "treatment": {"k": 5, "suppression_limit": 0.1}, "feed": {"window_records": 200, "window_seconds": 600, "below_k": "wait"},
                  "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2036-12-31T23:59:59Z"}
        (folder / "research.json").write_text(json.dumps(policy))
        civitas("agreements", "offer", "--key", "Keys/emergency-services.secret", "research.json")
        civitas("agreements", "accept", "--key", "Keys/research.secret", "ag-911-research")
        subscribed = civitas("request", "feed", "--key", "Keys/research.secret", "--purpose", PURPOSE, "--webhook", hook, "ag-911-research")
        feed = subscribed.stdout.split("feed ")[1].strip()
        (folder / "pushed.csv").write_text(calls_csv(range(5000, 5300)))
        civitas("publish", "--key", "Keys/emergency-services.secret", "montgomery-911", "pushed.csv")
        deadline = time.time() + 30
        while time.time() < deadline and not received:
            time.sleep(0.2)
        assert statuses[:2] == [500, 200], statuses
        headers, envelope = received[0]
        assert headers["Civitas-Feed"] == feed and headers["Civitas-Sequence"] == "1"
        manifest, payload = fmt.open_envelope(envelope, fmt.read_secret(folder / "Keys" / "research.secret"),
                                              fmt.read_public(folder / "Keys" / "broker.pub"))
        assert manifest["metadata"]["delivery"] == headers["Civitas-Delivery"] and payload.startswith(b"lat,lng,zip")
        time.sleep(2.5)  # more than two schedule rounds: an accepted window is not pushed again
        assert len(statuses) == 2, statuses
    finally:
        server.shutdown()
