"""A release through a live broker set up from Tests/Fixtures/clinic-exchange.json (the broker the
Swift broker tests use), checked by pandas and pycanon: every class of the released table holds at
least k people, nobody without consent is released, the dropped column is gone and subjects are
pseudonymized. The positive control: the published table itself fails the people count."""

import json

import pandas as pd
import pytest
from pycanon import anonymity

from clinic_broker import ClinicBroker

QI = ["age", "zip"]
PEOPLE = 90


def without_consent(i):
    return i % 9 == 0


@pytest.fixture(scope="module")
def clinic(civitas_bin, tmp_path_factory):
    broker = ClinicBroker(civitas_bin, tmp_path_factory.mktemp("clinic"))
    yield broker
    broker.stop()


def people_per_class(df):
    return df.groupby(QI)["person"].nunique()


def test_a_release_holds_k_people_per_class_and_only_consenting_people(clinic):
    assert "stored 180 records" in clinic.publish(PEOPLE)
    clinic.consent([i for i in range(PEOPLE) if not without_consent(i)])
    clinic.agree("ag-health", "health", k=3)
    report = clinic.release("ag-health", "health", "health.csv")
    assert "without consent 20" in report, report

    columns, rows = clinic.records(PEOPLE)
    published = pd.DataFrame(rows, columns=columns)
    assert people_per_class(published).min() < 3, "positive control: the published table must fail the check"

    released = pd.read_csv(clinic.folder / "health.csv", dtype=str, keep_default_na=False)
    assert len(released) > 0
    assert people_per_class(released).min() >= 3
    assert anonymity.k_anonymity(released, QI) >= 3
    refused = {f"r{i}-{n}" for i in range(PEOPLE) if without_consent(i) for n in range(2)}
    assert not refused & set(released["ref"])
    assert "notes" not in released.columns
    assert not released["person"].isin(published["person"]).any()

    # The same delivery pulled as JSON Lines holds the same records.
    delivery = report.split("delivery ")[1].split(":")[0]
    clinic.civitas("pull", "--key", clinic.secret("health"), "--issuer", "Keys/broker.pub", "--delivery", delivery,
                   "--format", "jsonl", "--out", "health.jsonl")
    as_lines = pd.read_json(clinic.folder / "health.jsonl", lines=True, dtype=False).astype(str)
    assert as_lines[list(released.columns)].sort_values("ref").reset_index(drop=True).equals(
        released.sort_values("ref").reset_index(drop=True))


def test_a_repeated_aggregate_with_its_key_answers_the_first_delivery(clinic):
    """The partner's client retries under the key it printed: the broker answers the first
    delivery, and the budget is charged once. A new key is a new aggregate (the control)."""
    def aggregate(*key):
        result = clinic.civitas("request", "aggregate", "--key", clinic.secret("health"), "--purpose", clinic.purpose,
                                "--statistic", "count", "--group-by", "zip", "--epsilon", "0.2", *key, "ag-health")
        return result.stdout.split("delivery ")[1].split(":")[0], result.stderr
    first, told = aggregate()
    key = told.split("request key ")[1].split(" ")[0]
    again, _ = aggregate("--idempotency-key", key)
    assert again == first
    other, _ = aggregate("--idempotency-key", key + "-2")
    assert other != first
    shown = json.loads(clinic.civitas("agreements", "show", "--key", clinic.secret("health"), "ag-health").stdout)
    assert shown["epsilon_spent"] == "0.4", shown
