"""Independent checks of the exchange log that `civitas demo` writes, and the
tampering `civitas audit` must detect and name."""

import base64
import json

import nacl.signing
import pytest

import civitas_format as envelope_oracle
import civitas_log as oracle


@pytest.fixture(scope="module")
def demo(civitas_bin, tmp_path_factory):
    import subprocess
    folder = tmp_path_factory.mktemp("demo")
    subprocess.run([civitas_bin, "demo", "--keep", str(folder / "out")], check=True, capture_output=True, timeout=300)
    out = folder / "out"
    broker_pub = envelope_oracle.read_public(out / "Keys" / "broker.pub")
    broker_secret = envelope_oracle.read_secret(out / "Keys" / "broker.secret")
    return {"dir": out, "export": out / "log-export.jsonl", "broker_pub": broker_pub, "broker_secret": broker_secret}


def audit(cli, demo, export, *extra):
    return cli.run("audit", "--broker", demo["dir"] / "Keys" / "broker.pub", *extra, export, check=False)


def test_oracle_recomputes_the_tree_and_verifies_the_checkpoint(demo):
    header, entries, checkpoints = oracle.read_export(demo["export"])
    assert header["format"] == "civitas-log-export/1"
    public = demo["broker_pub"]["ed25519"]
    name, key_hash, key_b64 = header["log_key"].split("+", 2)
    assert base64.b64decode(key_b64) == b"\x01" + public
    assert bytes.fromhex(key_hash) == oracle.note_key_hash(name, public)
    previous = bytes(32)
    for i, entry in enumerate(entries):
        value = json.loads(entry)
        assert oracle.rfc8785.dumps(value) == entry, f"entry {i} is not canonical"
        assert value["index"] == i and bytes.fromhex(value["prev"]) == previous
        previous = oracle.leaf_hash(entry)
    assert checkpoints, "the export carries no checkpoint"
    for at, note in checkpoints:
        origin, size, root = oracle.verify_checkpoint(note, header["origin"], public)
        assert size == at and origin == header["origin"]
        assert root == oracle.root([oracle.leaf_hash(e) for e in entries[:size]])


def test_logged_envelope_manifest_is_the_envelope_and_is_signed_by_the_broker(demo):
    _, entries, _ = oracle.read_export(demo["export"])
    releases = [json.loads(e) for e in entries if json.loads(e)["type"] == "release.delivered"]
    assert len(releases) == 5, "the demo delivers a release, two aggregates, synthetic rows and a feed window"
    saved = 0
    for release in releases:
        manifest_bytes = oracle.rfc8785.dumps(release["envelope_manifest"])
        signature = base64.b64decode(release["envelope_signature"])
        nacl.signing.VerifyKey(demo["broker_pub"]["ed25519"]).verify(envelope_oracle.SIGNATURE_CONTEXT + manifest_bytes, signature)
        assert release["envelope_manifest"]["metadata"]["delivery"] == release["release"]
        path = demo["dir"] / f"{release['release']}.envelope"
        if path.exists():
            stored, stored_signature, _ = envelope_oracle.split(path.read_bytes())
            assert stored == manifest_bytes and stored_signature == signature
            saved += 1
        # No personal data: the release entry carries ids, hashes and counts only.
        # (rho_micro: under an agreement that counts ρ.)
        assert set(release) - {"rho_micro"} == {"index", "prev", "time", "type", "release", "agreement", "dataset", "partner", "purpose",
                                                "policy_sha256", "envelope_manifest", "envelope_signature", "records_released",
                                                "records_suppressed", "k_achieved", "epsilon_micro", "transforms"}
    assert saved == 2, "the release and the feed window envelopes are kept"


def test_sound_export_passes_and_saves_the_checkpoint(cli, demo, tmp_path):
    saved = tmp_path / "saved.checkpoint"
    result = audit(cli, demo, demo["export"], "--checkpoint", saved, "--json", tmp_path / "report.json")
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] and report["envelopes_verified"] == 5
    _, entries, _ = oracle.read_export(demo["export"])
    assert report["entries"] == len(entries)
    oracle.verify_checkpoint(saved.read_text(), "civitas.example/demo-log", demo["broker_pub"]["ed25519"])


def test_every_flipped_byte_dropped_or_reordered_entry_is_named(cli, demo, tmp_path):
    header, entries, checkpoints = oracle.read_export(demo["export"])
    cases = {}
    # Every kind of entry, at the start, the end and each type's first and last occurrence (a few
    # dozen positions; one audit run per mutation).
    types = [json.loads(e)["type"] for e in entries]
    positions = {0, 1, 2, len(entries) - 2, len(entries) - 1}
    for kind in set(types):
        positions |= {types.index(kind), len(types) - 1 - types[::-1].index(kind)}
    for i, entry in ((i, entries[i]) for i in sorted(positions)):
        # A change that keeps the JSON valid and canonical: one digit of the time.
        at = entry.index(b'"time":"') + len(b'"time":"2026-11-2')
        changed = bytearray(entry)
        changed[at] = ord("1") if entry[at] != ord("1") else ord("2")
        cases[f"flip time digit of entry {i}"] = ([*entries[:i], bytes(changed), *entries[i + 1:]], i)
        # A change that breaks the JSON.
        broken = bytearray(entry)
        broken[len(entry) // 2] ^= 0x22
        cases[f"break entry {i}"] = ([*entries[:i], bytes(broken), *entries[i + 1:]], i)
        if i < len(entries) - 1:
            cases[f"drop entry {i}"] = ([*entries[:i], *entries[i + 1:]], i)
            cases[f"swap entries {i} and {i + 1}"] = ([*entries[:i], entries[i + 1], entries[i], *entries[i + 2:]], i)
    for name, (mutated, expected) in cases.items():
        path = tmp_path / "mutated.jsonl"
        # Checkpoints stay where they were: after the same number of lines.
        oracle.write_export(path, header, mutated, [(min(at, len(mutated)), note) for at, note in checkpoints])
        result = audit(cli, demo, path)
        assert result.returncode != 0, f"{name}: audit passed"
        line = result.stderr.decode().strip().splitlines()[-1]
        assert f"entry {expected}" in line, f"{name}: {line}"


def test_a_fork_resigned_with_the_broker_key_is_refused_against_the_saved_checkpoint(cli, demo, tmp_path):
    saved = tmp_path / "saved.checkpoint"
    assert audit(cli, demo, demo["export"], "--checkpoint", saved).returncode == 0
    header, entries, _ = oracle.read_export(demo["export"])
    # The operator rewrites history with the real key: entry 1 changed, all links recomputed, re-signed.
    forked = [*entries]
    value = json.loads(forked[1])
    value["role"] = "auditor"
    forked[1] = oracle.rfc8785.dumps(value)
    forked = oracle.rechain(forked, 2)
    root = oracle.root([oracle.leaf_hash(e) for e in forked])
    note = oracle.sign_checkpoint(header["origin"], len(forked), root, demo["broker_secret"]["signing"])
    path = tmp_path / "forked.jsonl"
    oracle.write_export(path, header, forked, [(len(forked), note)])
    # Internally consistent, so on its own it passes...
    assert audit(cli, demo, path).returncode == 0
    # ...but the auditor who kept the earlier checkpoint sees the fork, with both checkpoints and the proof.
    result = audit(cli, demo, path, "--checkpoint", saved)
    assert result.returncode != 0
    assert "forked" in result.stderr.decode()
    out = result.stdout.decode()
    assert "saved:" in out and "latest:" in out and "proof:" in out


def test_a_rollback_is_refused(cli, demo, tmp_path):
    saved = tmp_path / "saved.checkpoint"
    assert audit(cli, demo, demo["export"], "--checkpoint", saved).returncode == 0
    header, entries, _ = oracle.read_export(demo["export"])
    shorter = entries[:-1]
    root = oracle.root([oracle.leaf_hash(e) for e in shorter])
    note = oracle.sign_checkpoint(header["origin"], len(shorter), root, demo["broker_secret"]["signing"])
    path = tmp_path / "short.jsonl"
    oracle.write_export(path, header, shorter, [(len(shorter), note)])
    result = audit(cli, demo, path, "--checkpoint", saved)
    assert result.returncode != 0 and "went back" in result.stderr.decode()


def test_checkpoints_signed_by_the_oracle_verify_in_civitas(cli, demo, tmp_path):
    header, entries, _ = oracle.read_export(demo["export"])
    root = oracle.root([oracle.leaf_hash(e) for e in entries])
    note = oracle.sign_checkpoint(header["origin"], len(entries), root, demo["broker_secret"]["signing"])
    path = tmp_path / "resigned.jsonl"
    oracle.write_export(path, header, entries, [(len(entries), note)])
    assert audit(cli, demo, path).returncode == 0
    stranger = nacl.signing.SigningKey.generate()
    forged = oracle.sign_checkpoint(header["origin"], len(entries), root, stranger)
    oracle.write_export(path, header, entries, [(len(entries), forged)])
    result = audit(cli, demo, path)
    assert result.returncode != 0 and "no signature by" in result.stderr.decode()


def test_demo_broker_keeps_records_encrypted_at_rest(demo):
    """The demo's broker database, read with Python's own sqlite3: every stored segment is
    ciphertext, and no record value appears anywhere in the database files."""
    import sqlite3
    released = (demo["dir"] / "911-calls.first.csv").read_text().splitlines()
    assert len(released) > 1000
    markers = {line.split(",")[4] for line in released[1:200] if line.count(",") >= 8}
    markers = {m for m in markers if len(m) > 8}
    assert markers, "expected call titles to search for"
    database = demo["dir"] / "broker.sqlite"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        segments = db.execute("SELECT sealed FROM segment WHERE dataset = 'montgomery-911'").fetchall()
        records = db.execute("SELECT SUM(records) FROM batch WHERE dataset = 'montgomery-911'").fetchone()[0]
    later = 1000  # the calls published after the feed subscription, in a second batch
    assert records == len(released) - 1 + later
    assert len(segments) == -(-(len(released) - 1) // 1000) + 1
    raw = b"".join(path.read_bytes() for path in demo["dir"].glob("broker.sqlite*") if not path.name.endswith("storage-key"))
    for sealed, in segments:
        # Markers of 9+ bytes: random ciphertext contains one by chance with probability ~2^-60.
        assert b"timeStamp" not in sealed and b"NORRISTOWN" not in sealed
    for marker in markers:
        assert marker.encode() not in raw, f"{marker!r} is stored in clear"
    assert oct((demo["dir"] / "broker.sqlite.storage-key").stat().st_mode & 0o777) == "0o600"
