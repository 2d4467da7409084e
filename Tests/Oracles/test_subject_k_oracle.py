"""k counts people. pandas (distinct subjects per class, and the classes each linked
pseudonym falls into) and pycanon (record-level k and l) check every table that
`civitas anonymize --subject` releases from a table where some callers call many
times. The positive control: the same table anonymized without a subject passes
pycanon's record-level check while pandas finds a class of fewer than k people."""

import math
import random

import pandas as pd
import pytest
from pycanon import anonymity

QI = ["age", "zip"]


def repeat_callers(path, callers=300, zips=12):
    """`callers` callers; every fifth calls five times, mostly from the same place, once from another."""
    rng = random.Random(7)
    titles = ["EMS: FALL VICTIM", "EMS: RESPIRATORY EMERGENCY", "Fire: FIRE ALARM", "Traffic: DISABLED VEHICLE -"]
    rows = []
    for caller in range(callers):
        age, zip_code = rng.randrange(18, 90), 19000 + rng.randrange(zips)
        calls = 5 if caller % 5 == 0 else 1
        for call in range(calls):
            moved = call == 3
            rows.append({"caller": f"C{caller:04d}", "age": age + (7 if moved else 0),
                         "zip": zip_code + (3 if moved else 0), "title": titles[(caller + call) % 4]})
    pd.DataFrame(rows).to_csv(path, index=False)
    return rows


def classes_by_people(df):
    """Distinct callers per class."""
    return df.groupby(QI)["caller"].nunique()


def smallest_linked_group(df):
    """The fewest callers sharing one caller's exact set of classes: what an attacker who knows
    all of that caller's records, and follows the pseudonym, narrows them down to."""
    classes = df.groupby("caller").apply(lambda rows: frozenset(zip(rows["age"], rows["zip"])), include_groups=False)
    return classes.value_counts().min()


def entropy_by_people(df):
    """Per class, the entropy of the sensitive values weighted by the distinct callers holding them."""
    holders = df.drop_duplicates(QI + ["title", "caller"]).groupby(QI)["title"].value_counts()
    entropies = []
    for _, counts in holders.groupby(level=[0, 1]):
        total = counts.sum()
        entropies.append(-sum(c / total * math.log(c / total) for c in counts))
    return min(entropies)


HIERARCHIES = ["--hierarchy", "age=intervals:5,10,20,40", "--hierarchy", "zip=mask:1,2,3"]


@pytest.mark.parametrize("algorithm", ["optimal", "mondrian"])
@pytest.mark.parametrize("k", [3, 5])
def test_every_class_holds_k_people_and_pseudonyms_narrow_nobody(cli, tmp_path, algorithm, k):
    source, out, report = tmp_path / "calls.csv", tmp_path / "out.csv", tmp_path / "report.json"
    repeat_callers(source)
    cli.run("anonymize", source, out, "--qi", "age,zip", "--sensitive", "title", "--subject", "caller", "--keep", "caller",
            "--k", k, "--max-suppression", "0.3", "--algorithm", algorithm, *HIERARCHIES, "--report", report)
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(df) > 0
    assert classes_by_people(df).min() >= k
    assert smallest_linked_group(df) >= k
    assert anonymity.k_anonymity(df, QI) >= k


def test_many_repeat_callers_are_counted_on_both_cores(cli, tmp_path):
    """6,000 callers with five calls each among 30,000, over 900 zip codes: enough that the search
    counts them in two halves (the halves' equivalence is a unit test; here the release itself is
    checked)."""
    source, out = tmp_path / "calls.csv", tmp_path / "out.csv"
    repeat_callers(source, callers=30_000, zips=900)
    cli.run("anonymize", source, out, "--qi", "age,zip", "--sensitive", "title", "--subject", "caller", "--keep", "caller",
            "--k", 5, "--max-suppression", "0.3", "--algorithm", "optimal", *HIERARCHIES)
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(df) > 0
    assert classes_by_people(df).min() >= 5
    assert smallest_linked_group(df) >= 5


def test_entropy_l_diversity_counts_people(cli, tmp_path):
    source, out = tmp_path / "calls.csv", tmp_path / "out.csv"
    repeat_callers(source)
    cli.run("anonymize", source, out, "--qi", "age,zip", "--sensitive", "title", "--subject", "caller", "--keep", "caller",
            "--k", 4, "--l", 2, "--l-kind", "entropy", "--max-suppression", "0.3", *HIERARCHIES)
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(df) > 0 and classes_by_people(df).min() >= 4
    assert entropy_by_people(df) >= math.log(2) - 1e-9
    assert anonymity.entropy_l_diversity(df, QI, ["title"]) >= 2 - 1e-9


def test_positive_control_record_level_k_passes_pycanon_but_not_people(cli, tmp_path):
    source, out = tmp_path / "calls.csv", tmp_path / "out.csv"
    repeat_callers(source)
    cli.run("anonymize", source, out, "--qi", "age,zip", "--sensitive", "title", "--keep", "caller",
            "--k", 5, "--max-suppression", "0.3", *HIERARCHIES)
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert anonymity.k_anonymity(df, QI) >= 5, "record-level k holds"
    assert classes_by_people(df).min() < 5 or smallest_linked_group(df) < 5, "the oracles must catch what counting records misses"
