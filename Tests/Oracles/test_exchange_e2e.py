"""The whole data space end to end: `civitas demo --keep DIR` publishes, records consent,
agrees, releases, aggregates, runs a feed window and audits; checkers we did not write then
confirm what it left behind: pycanon on every delivered table, PyNaCl opening every
envelope addressed to the partner, the log recomputed (RFC 9162 hashing, C2SP checkpoint
signatures) with every agreement's ε summed against its budget, and no caller number in
clear anywhere in the broker's database files."""
import json
import pathlib
import sqlite3
import subprocess

import pandas as pd
import pytest
from pycanon import anonymity

import civitas_format as fmt
import civitas_log as log

ROOT = pathlib.Path(__file__).resolve().parents[2]
QUASI_IDENTIFIERS = ["lat", "lng", "zip", "timeStamp", "twp"]


@pytest.fixture(scope="module")
def demo(civitas_bin, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "keep"
    result = subprocess.run([civitas_bin, "demo", "--keep", str(out)], cwd=ROOT, capture_output=True, timeout=900)
    assert result.returncode == 0, result.stdout.decode()[-3000:] + result.stderr.decode()
    return out, result.stdout.decode()


def test_every_kept_file_but_public_keys_is_owner_only(demo):
    out, _ = demo
    files = [path for path in out.rglob("*") if path.is_file()]
    assert any(path.name.endswith("-wal") or path.name == "broker.sqlite" for path in files)
    loose = [f"{path.relative_to(out)} {oct(path.stat().st_mode & 0o777)}" for path in files
             if not path.name.endswith(".pub") and path.stat().st_mode & 0o077]
    assert not loose, loose


def delivered_tables(out):
    tables = sorted(out.glob("rel-*.received.csv")) + sorted(out.glob("win-*.received.csv"))
    assert len(tables) >= 2, f"expected a release and a feed window in {out}"
    return tables


def test_every_delivered_table_is_k_anonymous_by_pycanon(demo):
    out, _ = demo
    for path in delivered_tables(out):
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        assert len(df) > 0, f"{path.name} is empty"
        assert set(df.columns) == {"caller", "lat", "lng", "zip", "title", "timeStamp", "twp", "e"}, f"{path.name}: {list(df.columns)}"
        assert anonymity.k_anonymity(df, QUASI_IDENTIFIERS) >= 5, f"pycanon finds k < 5 in {path.name}"
        assert df["caller"].str.fullmatch(r"[0-9a-f]{32}").all(), f"{path.name} carries a caller that is not a pseudonym"


def test_every_envelope_opens_with_pynacl_and_matches_what_health_received(demo):
    out, _ = demo
    health = fmt.read_secret(out / "Keys" / "health.secret")
    broker = fmt.read_public(out / "Keys" / "broker.pub")
    for path in delivered_tables(out):
        envelope = (out / path.name.replace(".received.csv", ".envelope")).read_bytes()
        manifest, payload = fmt.open_envelope(envelope, health, broker)
        assert manifest["issuer"] == broker["key_id"] and manifest["recipient"] == health["key_id"]
        assert manifest["metadata"]["agreement"] == "ag-911-health"
        assert pd.read_csv(path, dtype=str, keep_default_na=False).equals(
            pd.read_csv(__import__("io").BytesIO(payload), dtype=str, keep_default_na=False))
    transport = fmt.read_secret(out / "Keys" / "transport.secret")
    with pytest.raises(fmt.Rejected):
        fmt.open_envelope(next(out.glob("rel-*.envelope")).read_bytes(), transport, broker)


def test_the_log_recomputes_and_no_budget_is_exceeded(demo):
    out, _ = demo
    broker = fmt.read_public(out / "Keys" / "broker.pub")
    header, entries, checkpoints = log.read_export(out / "log-export.jsonl")
    assert checkpoints, "the export has no checkpoint"
    covered, note = checkpoints[-1]
    origin, size, root_hash = log.verify_checkpoint(note, header["origin"], broker["ed25519"])
    assert size == covered == len(entries)
    assert log.root([log.leaf_hash(e) for e in entries]) == root_hash
    budgets, spent, kinds, rho_agreements = {}, {}, set(), set()
    for raw in entries:
        entry = json.loads(raw)
        kinds.add(entry["type"])
        # An agreement counts ε, or ρ (zCDP) when its offer states a ρ budget; then every delivery
        # states its ρ, and a pure ε step costs at least ε²/2 (in millionths, rounded up).
        if entry["type"] == "agreement.offered":
            budgets[entry["agreement"]] = entry.get("rho_budget_micro", entry["epsilon_budget_micro"])
            if "rho_budget_micro" in entry:
                rho_agreements.add(entry["agreement"])
        if entry["type"] == "release.delivered":
            if entry["agreement"] in rho_agreements:
                assert entry["rho_micro"] >= -(-entry["epsilon_micro"] ** 2 // 2_000_000), entry
                charge = entry["rho_micro"]
            else:
                charge = entry["epsilon_micro"]
            spent[entry["agreement"]] = spent.get(entry["agreement"], 0) + charge
    assert {"participant.registered", "dataset.registered", "consent.recorded", "agreement.offered",
            "agreement.accepted", "agreement.revoked", "release.delivered"} <= kinds
    consent = [json.loads(e) for e in entries if json.loads(e)["type"] == "consent.recorded"]
    assert any(c["granted"] and not c["withdrawn"] for c in consent) and any(c["withdrawn"] for c in consent)
    assert spent["ag-traffic-health"] == budgets["ag-traffic-health"] == 1_000_000
    # The demo's synthetic calls charged ρ 0.5 of ag-911-health's zCDP budget of 1.
    assert "ag-911-health" in rho_agreements and spent["ag-911-health"] == 500_000 and budgets["ag-911-health"] == 1_000_000
    for agreement, total in spent.items():
        assert total <= budgets[agreement], f"{agreement} spent {total} of {budgets[agreement]}"


def test_civitas_audit_passes_and_fails_after_tampering(demo, civitas_bin, tmp_path):
    out, _ = demo
    export = out / "log-export.jsonl"
    ok = subprocess.run([civitas_bin, "audit", "--broker", out / "Keys" / "broker.pub", export], capture_output=True)
    assert ok.returncode == 0, ok.stderr.decode()
    lines = export.read_bytes().split(b"\n")
    for position in [5, len(lines) // 2, len(lines) - 3]:
        changed = list(lines)
        changed[position] = changed[position].replace(b'"time":"', b'"time":"1', 1) if b'"time"' in changed[position] else changed[position] + b" "
        tampered = tmp_path / f"tampered-{position}.jsonl"
        tampered.write_bytes(b"\n".join(changed))
        bad = subprocess.run([civitas_bin, "audit", "--broker", out / "Keys" / "broker.pub", tampered], capture_output=True)
        assert bad.returncode != 0, f"a change on line {position + 1} passed the audit"


def test_no_caller_number_in_clear_in_the_database(demo):
    out, _ = demo
    for path in out.glob("broker.sqlite*"):
        if path.suffix == ".storage-key":
            continue
        assert b"215-555-" not in path.read_bytes(), f"{path.name} holds a caller number in clear"
    with sqlite3.connect(out / "broker.sqlite") as db:
        subjects = db.execute("SELECT subject FROM consent_event").fetchall()
        assert subjects and all(len(s) == 32 for (s,) in subjects)
        # Every event is kept; a subject's state is its last one.
        states = dict(db.execute("SELECT subject, granted FROM consent_event ORDER BY id").fetchall())
        assert sum(1 for granted in states.values() if not granted) == 40


def test_policies_match_the_published_schema_and_hash_as_logged(demo):
    """jsonschema checks each offered policy against Schemas/agreement-policy.schema.json; the
    rfc8785 package's canonical form hashes to the policy_sha256 the broker logged."""
    import hashlib

    import jsonschema
    import rfc8785

    out, _ = demo
    schema = json.loads((ROOT / "Schemas" / "agreement-policy.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    _, entries, _ = log.read_export(out / "log-export.jsonl")
    logged = {e["agreement"]: e["policy_sha256"] for e in map(json.loads, entries) if e["type"] == "agreement.offered"}
    policies = sorted(out.glob("ag-*.policy.json"))
    assert len(policies) == 2
    for path in policies:
        policy = json.loads(path.read_text())
        validator.validate(policy)
        assert hashlib.sha256(rfc8785.dumps(policy)).hexdigest() == logged[policy["agreement"]]
    example = json.loads((ROOT / "Tests" / "Vectors" / "agreement-policy-example.json").read_text())
    validator.validate(example)
    for bad in [{**example, "legal_basis": "because"}, {**example, "surprise": 1}, {**example, "treatment": {"k": 0}}]:
        assert not validator.is_valid(bad)
