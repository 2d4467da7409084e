"""pycanon (an independent k-anonymity / l-diversity checker) confirms every
table `civitas anonymize` releases: the ARX Adult benchmark file, the
Montgomery County 911 sample, and a generated census-shaped table the suite
carries itself."""

import csv
import json
import pathlib
import random

import pandas as pd
import pytest
from pycanon import anonymity

SHARED = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"
ADULT = SHARED / "arx-adult" / "adult.csv"
HIERARCHIES = SHARED / "adult-hierarchies"
CALLS = SHARED / "montgomery-911" / "911_sample.csv"
ADULT_QI = ["sex", "age", "race", "marital-status", "education", "native-country", "workclass", "occupation"]

needs_shared = pytest.mark.skipif(not ADULT.exists(), reason="../shared/data is absent (a fresh clone without the reference data)")


def check(path, qi, sensitive, k, l=None, entropy_l=None, sep=","):
    df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    assert len(df) > 0, "nothing was released"
    achieved_k = anonymity.k_anonymity(df, qi)
    assert achieved_k >= k, f"pycanon finds k = {achieved_k} < {k}"
    if l is not None:
        achieved_l = anonymity.l_diversity(df, qi, [sensitive])
        assert achieved_l >= l, f"pycanon finds l = {achieved_l} < {l}"
    if entropy_l is not None:
        achieved = anonymity.entropy_l_diversity(df, qi, [sensitive])
        assert achieved >= entropy_l, f"pycanon finds entropy l = {achieved} < {entropy_l}"
    return df


def adult_hierarchies(**override):
    args = []
    for column in ADULT_QI:
        spec = override.get(column) or str(HIERARCHIES / f"adult_hierarchy_{column}.csv")
        args += ["--hierarchy", f"{column}={spec}"]
    return args


@needs_shared
@pytest.mark.parametrize("k", [2, 5, 10, 50])
def test_adult_optimal_k_and_l2(cli, tmp_path, k):
    out, report = tmp_path / "out.csv", tmp_path / "report.json"
    cli.run("anonymize", ADULT, out, "--qi", ",".join(ADULT_QI), "--sensitive", "salary-class", "--k", k, "--l", 2,
            "--max-suppression", "0.05", *adult_hierarchies(), "--report", report)
    df = check(out, ADULT_QI, "salary-class", k, l=2, sep=";")
    summary = json.loads(report.read_text())
    assert summary["released"] == len(df) and summary["released"] + summary["suppressed"] == 30162
    assert summary["suppressed"] <= 0.05 * 30162
    assert summary["max_prosecutor_risk"] <= 1 / k + 1e-9


@needs_shared
def test_adult_optimal_without_suppression(cli, tmp_path):
    out = tmp_path / "out.csv"
    cli.run("anonymize", ADULT, out, "--qi", ",".join(ADULT_QI), "--sensitive", "salary-class", "--k", 5, *adult_hierarchies())
    df = check(out, ADULT_QI, "salary-class", 5, sep=";")
    assert len(df) == 30162


@needs_shared
@pytest.mark.parametrize("k", [5, 10])
def test_adult_mondrian_whole_file(cli, tmp_path, k):
    out = tmp_path / "out.csv"
    # Age as numbers (released as ranges), the other columns through ARX's hierarchies.
    args = adult_hierarchies(age="intervals:5,10,20")
    cli.run("anonymize", ADULT, out, "--qi", ",".join(ADULT_QI), "--sensitive", "salary-class", "--k", k, "--l", 2,
            "--algorithm", "mondrian", *args)
    check(out, ADULT_QI, "salary-class", k, l=2, sep=";")


@needs_shared
@pytest.mark.parametrize("k,classes", [(5, 3900), (10, 2000)])
def test_adult_mondrian_utility(cli, tmp_path, k, classes):
    """Relaxed cuts and age as ranges keep at least as many classes as a plain Mondrian, every one holding k."""
    out = tmp_path / "out.csv"
    hierarchies = [arg for column in ADULT_QI if column != "age"
                   for arg in ("--hierarchy", f"{column}={HIERARCHIES / f'adult_hierarchy_{column}.csv'}")]
    cli.run("anonymize", ADULT, out, "--qi", ",".join(ADULT_QI), "--k", k, "--algorithm", "mondrian", *hierarchies)
    df = check(out, ADULT_QI, None, k, sep=";")
    assert df.groupby(ADULT_QI).ngroups >= classes
    assert not (df["age"] == "*").any(), "age without a hierarchy is released as ranges, never blanked"
    assert df["age"].str.fullmatch(r"\d+(\.\.\d+)?").all()


@needs_shared
@pytest.mark.parametrize("algorithm", ["optimal", "mondrian"])
def test_911_sample(cli, tmp_path, algorithm):
    out = tmp_path / "out.csv"
    qi = ["zip", "twp", "timeStamp", "lat", "lng"]
    cli.run("anonymize", CALLS, out, "--qi", ",".join(qi), "--sensitive", "title", "--k", 5, "--l", 2,
            "--max-suppression", "0.05", "--algorithm", algorithm,
            "--hierarchy", "zip=mask:1,1,1", "--hierarchy", "timeStamp=date:hour,day,month,year",
            "--hierarchy", "lat=geo:3,2,1,0", "--hierarchy", "lng=geo:3,2,1,0")
    df = check(out, qi, "title", 5, l=2)
    # Free text and addresses never leave: only the named columns are released.
    assert list(df.columns) == qi + ["title"]


def generated_census(path, rows=3000, seed=7):
    """A census-shaped table with missing values and values already '*'."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["age", "zip", "sex", "marital", "income"])
        for _ in range(rows):
            age = str(rng.randint(17, 90))
            zip_code = rng.choice(["19401", "19403", "19406", "19422", "19446", "19464", "*", ""])
            writer.writerow([age, zip_code, rng.choice(["F", "M", "*"]), rng.choice(["single", "married", "widowed", ""]),
                             rng.choice(["<=25K", "25K-50K", ">50K"])])


@pytest.mark.parametrize("algorithm", ["optimal", "mondrian"])
@pytest.mark.parametrize("k", [3, 10])
def test_own_fixture_with_stars_and_missing_values(cli, tmp_path, algorithm, k):
    """Input values that are already '*' or empty are released as such and never make a class
    look bigger than pycanon counts it (ARX issue #259)."""
    source, out = tmp_path / "census.csv", tmp_path / "out.csv"
    generated_census(source)
    cli.run("anonymize", source, out, "--qi", "age,zip,sex,marital", "--sensitive", "income", "--k", k,
            "--l", 2, "--l-kind", "entropy", "--max-suppression", "0.1", "--algorithm", algorithm,
            "--hierarchy", "age=intervals:5,10,20", "--hierarchy", "zip=mask:1,2,2")
    check(out, ["age", "zip", "sex", "marital"], "income", k, entropy_l=2)


def test_clear_errors(cli, tmp_path):
    source = tmp_path / "census.csv"
    generated_census(source, rows=50)
    out = tmp_path / "out.csv"
    assert "unknown column 'agee'" in cli.fails("anonymize", source, out, "--qi", "agee", "--k", 2)
    assert "not a decimal number" in cli.fails("anonymize", source, out, "--qi", "sex", "--k", 2, "--hierarchy", "sex=intervals:5")
    assert "k must be between" in cli.fails("anonymize", source, out, "--qi", "sex", "--k", 0)
    assert "cannot be reached" in cli.fails("anonymize", source, out, "--qi", "age", "--k", 1000)
    hierarchy = tmp_path / "sex.csv"
    hierarchy.write_text("F;*\nM;*\n")
    assert "not in the hierarchy" in cli.fails("anonymize", source, out, "--qi", "sex", "--k", 2, "--hierarchy", f"sex={hierarchy}")
    assert not out.exists()
