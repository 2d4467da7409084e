"""The consent stage of a Python pipeline, doing what the broker does for each request of
10,000 events: a keyed hash of every subject (hmac), its ISO/IEC TS 27560 record as canonical
JSON, the RFC 9162 Merkle tree of the records with an inclusion proof for each, one log entry
holding the root (hash-linked to the previous one) signed with PyNaCl, every event appended
to SQLite (the same table and index as the broker's), and the receipts written as JSON Lines (the batch line, then one receipt per event).

Usage: consent_peer.py SUBJECTS_FILE WORK_DIR   prints events, seconds and events/s as JSON."""

import base64
import hashlib
import hmac
import json
import os
import sqlite3
import sys
import time

import nacl.signing

PER_REQUEST = 10_000


def canonical(value) -> bytes:
    # Every string here is ASCII and every number an integer: sorted compact JSON is RFC 8785.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def tree_levels(leaves):
    """Levels of complete subtree hashes; the root of n leaves and each proof follow RFC 9162."""
    levels = [leaves]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
    return levels


def subtree(levels, start, count):
    """MTH of leaves[start:start+count] (RFC 9162 2.1.1), from stored complete subtrees."""
    if count & (count - 1) == 0 and start % count == 0:
        return levels[count.bit_length() - 1][start // count]
    k = 1 << ((count - 1).bit_length() - 1)
    return node_hash(subtree(levels, start, k), subtree(levels, start + k, count - k))


def proof(levels, m, start, n):
    """PATH(m, D[start:start+n]) of RFC 9162 2.1.3.1."""
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return proof(levels, m, start, k) + [subtree(levels, start + k, n - k)]
    return proof(levels, m - k, start + k, n - k) + [subtree(levels, start, k)]


def main():
    subjects_path, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    subject_key, signing = os.urandom(32), nacl.signing.SigningKey.generate()
    controller = recorder = hashlib.sha256(bytes(signing.verify_key)).hexdigest()[:32]
    db = sqlite3.connect(os.path.join(work, "peer.sqlite"))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE consent_event (id INTEGER PRIMARY KEY, dataset TEXT, subject BLOB, purpose TEXT, granted INTEGER,"
               " record BLOB, recorded TEXT)")
    db.execute("CREATE INDEX consent_event_by_purpose ON consent_event (dataset, purpose, id)")
    db.execute("CREATE TABLE log_entry (position INTEGER PRIMARY KEY, bytes BLOB, leaf BLOB)")
    db.commit()
    out = open(os.path.join(work, "peer-receipts.jsonl"), "wb")
    previous, position, events = b"\x00" * 32, 0, 0
    started = time.perf_counter()
    with open(subjects_path) as source:
        subjects = [line.strip() for line in source if line.strip()]
    for start in range(0, len(subjects), PER_REQUEST):
        chunk = subjects[start:start + PER_REQUEST]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ids = os.urandom(12 * len(chunk)).hex()
        records, rows = [], []
        for i, subject in enumerate(chunk):
            principal = hmac.new(subject_key, b"calls\x00" + subject.encode(), hashlib.sha256).digest()
            record = canonical({
                "schema_version": "ISO/IEC TS 27560:2023", "record_id": "cr-" + ids[24 * i:24 * i + 24],
                "pii_principal_id": principal.hex(), "pii_controller": controller, "dataset": "calls",
                "purposes": [{"purpose": "research", "lawful_basis": "consent"}], "notice": "n-1", "consent_type": "explicit",
                "collection_method": "web-form", "jurisdiction": "US-PA",
                "event": {"type": "given", "time": now, "recorded_by": recorder}, "state": "active"})
            records.append(record)
            rows.append(("calls", principal, "research", 1, record, now))
        levels = tree_levels([leaf_hash(r) for r in records])
        root = subtree(levels, 0, len(records))
        entry = canonical({"index": position, "prev": previous.hex(), "time": now, "type": "consent.recorded", "datasets": ["calls"],
                           "recorded_by": recorder, "receipts": len(records), "receipts_root": root.hex(),
                           "granted": len(records), "withdrawn": 0})
        leaf = leaf_hash(entry)
        with db:
            db.executemany("INSERT INTO consent_event (dataset, subject, purpose, granted, record, recorded) VALUES (?, ?, ?, ?, ?, ?)", rows)
            db.execute("INSERT INTO log_entry VALUES (?, ?, ?)", (position, entry, leaf))
        signature = signing.sign(b"civitas-consent-receipts/1\x00" + entry).signature
        lines = [b'{"batch":' + canonical({"broker_key": recorder, "log_entry": json.loads(entry),
                                           "signature": base64.b64encode(signature).decode()}) + b"}\n"]
        for i, record in enumerate(records):
            path = ",".join('"' + base64.b64encode(h).decode() + '"' for h in proof(levels, i, 0, len(records)))
            lines.append(b'{"inclusion_proof":[' + path.encode() + b'],"receipt":' + record + b',"receipt_index":' + str(i).encode() + b"}\n")
        out.write(b"".join(lines))
        previous, position, events = leaf, position + 1, events + len(records)
    out.close()
    seconds = time.perf_counter() - started
    print(json.dumps({"events": events, "seconds": round(seconds, 3), "events_per_second": round(events / seconds)}))


if __name__ == "__main__":
    main()
