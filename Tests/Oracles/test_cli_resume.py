"""Long CLI runs a user can repeat safely: a subjects file sent as several consent requests under
one idempotency key, run again with that key, records nothing twice and hands back the very
receipts of the first run (their batch signatures checked with PyNaCl); the same key for other
subjects is refused; without the key (the positive control) a rerun records everything again."""
import base64
import json

import nacl.signing
import pytest
import rfc8785

import civitas_format as fmt
from clinic_broker import ClinicBroker


@pytest.fixture(scope="module")
def clinic(civitas_bin, tmp_path_factory):
    broker = ClinicBroker(civitas_bin, tmp_path_factory.mktemp("cli-resume"))
    yield broker
    broker.stop()


def batches(path):
    """The batch lines of a receipts file, with the number of receipts after each."""
    found = []
    for line in path.read_text().splitlines():
        item = json.loads(line)
        if "batch" in item:
            found.append([item["batch"], 0])
        else:
            found[-1][1] += 1
    return found


def test_consent_run_again_with_its_key_records_nothing_twice(clinic):
    publisher = clinic.secret(clinic.scenario["publisher"])
    (clinic.folder / "many.txt").write_text("\n".join(f"resume-{i}" for i in range(25_000)) + "\n")

    def grant(*extra, subjects="many.txt", check=True):
        result = clinic.civitas("consent", "grant", "--key", publisher, "--dataset", clinic.dataset, "--subjects", subjects,
                                "--purpose", clinic.purpose, "--notice", "n-1", "--jurisdiction", "EU", "--json", *extra, check=check)
        return json.loads(result.stdout) if check else result

    first = grant("--idempotency-key", "run-a", "--receipt", "first.jsonl")
    assert first["events"] == 25_000 and first["requests"] == 3 and first["requests_recorded_before"] == 0
    assert first["idempotency_key"] == "run-a"
    again = grant("--idempotency-key", "run-a", "--receipt", "again.jsonl")
    assert again["events"] == 25_000 and again["requests"] == 3 and again["requests_recorded_before"] == 3
    assert again["log_entries"] == first["log_entries"]
    # The very receipts of the first run, each batch still signed by the broker over its log entry.
    assert (clinic.folder / "again.jsonl").read_bytes() == (clinic.folder / "first.jsonl").read_bytes()
    broker = fmt.read_public(clinic.folder / "Keys" / "broker.pub")
    found = batches(clinic.folder / "again.jsonl")
    assert [count for _, count in found] == [10_000, 10_000, 5_000]
    for batch, count in found:
        assert batch["log_entry"]["receipts"] == count
        nacl.signing.VerifyKey(broker["ed25519"]).verify(b"civitas-consent-receipts/1\x00" + rfc8785.dumps(batch["log_entry"]),
                                                         base64.b64decode(batch["signature"]))

    # The key used for other subjects is refused, naming it.
    (clinic.folder / "other.txt").write_text("\n".join(f"other-{i}" for i in range(10)) + "\n")
    refused = grant("--idempotency-key", "run-a", subjects="other.txt", check=False)
    assert refused.returncode != 0 and "run-a-part-1 was used for other consent events" in refused.stderr, refused.stderr

    # Positive control: without the key, every request is recorded again, as new log entries.
    fresh = grant()
    assert fresh["requests_recorded_before"] == 0 and fresh["idempotency_key"].startswith("consent-")
    assert set(fresh["log_entries"]).isdisjoint(first["log_entries"])


def test_subject_lines_are_trimmed_of_white_space(clinic):
    """A subjects file's lines are trimmed of white space (beyond ASCII too) before their keyed
    hash: padded lines record the same subjects as bare ones; a changed subject (the positive
    control) records another."""
    publisher = clinic.secret(clinic.scenario["publisher"])

    def principals(name, lines):
        (clinic.folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        clinic.civitas("consent", "grant", "--key", publisher, "--dataset", clinic.dataset, "--subjects", name,
                       "--purpose", clinic.purpose, "--notice", "n-1", "--jurisdiction", "EU", "--receipt", name + ".jsonl")
        items = [json.loads(line) for line in (clinic.folder / (name + ".jsonl")).read_text().splitlines()]
        return sorted(item["receipt"]["pii_principal_id"] for item in items if "receipt" in item)

    bare = principals("bare.txt", ["trim-0", "trim-1", "trim-2", "trim-3", "Zürich-4"])
    padded = principals("padded.txt", ["  trim-0 ", "\ttrim-1\r", "\u00a0trim-2\u00a0", "trim-3\x0b\x0c", "", "   ", "Zürich-4\u2003"])
    assert len(bare) == 5 and padded == bare
    changed = principals("changed.txt", ["trim-0.", "trim-1", "trim-2", "trim-3", "Zürich-4"])
    assert changed != bare and len(set(changed) & set(bare)) == 4
