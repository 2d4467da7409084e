"""DP synthetic data, checked from outside: pandas recomputes the marginals `civitas synthesize`
measures, the removal of any one subject moves each of them by at most the sensitivity the noise
is calibrated to, the noisy measurements differ from pandas's exact counts by noise of the stated
σ², and the number of rows is the noisy total the measurements give."""

import json
import math
import random

import jsonschema
import pandas as pd
import pytest

from test_cli_json import SCHEMA

FIELDS = ["zone", "age", "kind"]
SPEC = {"fields": FIELDS, "domains": {"zone": ["n", "s", "e", "w"], "kind": ["fire", "ems", "traffic"]},
        "bins": {"age": [0, 18, 40, 65, 120]}, "tree": [["zone", "age"], ["age", "kind"]]}
AGE_LABELS = ["[0,18)", "[18,40)", "[40,65)", "[65,120)"]


def calls(path, people=400, most=2, seed=5):
    """Each person has 1 to `most` records; every record has values in the declared domains."""
    rng = random.Random(seed)
    rows = []
    for person in range(people):
        for _ in range(rng.randint(1, most)):
            rows.append({"person": f"p{person}", "zone": rng.choice("nsew"), "age": rng.randint(0, 99),
                         "kind": rng.choices(["fire", "ems", "traffic"], [1, 3, 2])[0]})
    frame = pd.DataFrame(rows)
    frame.to_csv(path, index=False)
    return frame


def exact_marginals(frame):
    """The counts Civitas measures, recomputed with pandas in its cell order: each field's
    declared cells, then each tree pair's cells row-major."""
    frame = frame.assign(age=pd.cut(frame["age"], [0, 18, 40, 65, 120], right=False, labels=AGE_LABELS).astype(str))
    domains = {"zone": SPEC["domains"]["zone"], "age": AGE_LABELS, "kind": SPEC["domains"]["kind"]}
    out = [[int((frame[f] == v).sum()) for v in domains[f]] for f in FIELDS]
    for a, b in SPEC["tree"]:
        counts = frame.groupby([a, b]).size()
        out.append([int(counts.get((x, y), 0)) for x in domains[a] for y in domains[b]])
    return out


def synthesize(cli, tmp_path, source, rho, most, name="run"):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    rows, measured = tmp_path / f"{name}.csv", tmp_path / f"{name}.json"
    out = cli.run("synthesize", source, "--spec", spec, "--rho", rho, "--subject", "person", "--max-records", str(most),
                  "--measurements", measured, "--out", rows, "--json")
    report = json.loads(out.stdout)
    jsonschema.validate(report, {"$ref": "#/$defs/synthesize", "$defs": SCHEMA["$defs"]})
    return report, json.loads(measured.read_text()), pd.read_csv(rows, dtype=str, keep_default_na=False)


def test_removing_one_subject_moves_each_marginal_by_at_most_the_sensitivity(tmp_path):
    frame = calls(tmp_path / "calls.csv", people=200, most=2)
    full = exact_marginals(frame)
    for person in ["p0", "p17", "p199"]:
        without = exact_marginals(frame[frame.person != person])
        for a, b in zip(full, without):
            assert math.dist(a, b) <= 2, (person, a, b)
    # Positive control: one person's five records in one cell move a marginal by 5, past a bound of 2.
    heavy = pd.concat([frame, pd.DataFrame([{"person": "heavy", "zone": "n", "age": 30, "kind": "ems"}] * 5)])
    assert any(math.dist(a, b) > 2 for a, b in zip(exact_marginals(heavy), exact_marginals(frame)))


def test_measurements_are_the_exact_marginals_plus_noise_of_the_stated_variance(cli, tmp_path):
    source = tmp_path / "calls.csv"
    frame = calls(source, people=400, most=2)
    exact = exact_marginals(frame)
    residuals = []
    for run in range(12):
        report, measured, rows = synthesize(cli, tmp_path, source, "0.5", 2, name=f"run{run}")
        assert measured["marginals"] == [[f] for f in FIELDS] + SPEC["tree"]
        # σ² = Δ² · marginals / (2ρ) = 4 · 5 / 1.
        assert measured["sigma_squared"] == report["sigma_squared"] == "20"
        assert report["rho_charged"] == "0.5"
        for noisy, true in zip(measured["counts"], exact):
            residuals += [(n - t) / math.sqrt(20) for n, t in zip(noisy, true)]
        # The rows: as many as the inverse-variance weighted mean of the marginals' noisy sums.
        weighted = sum(sum(c) / len(c) for c in measured["counts"]) / sum(1 / len(c) for c in measured["counts"])
        assert len(rows) == report["rows"] == max(0, round(weighted))
        assert list(rows.columns) == FIELDS and set(rows["age"]) <= set(AGE_LABELS)
    mean = sum(residuals) / len(residuals)
    variance = sum(r * r for r in residuals) / len(residuals)
    # 12 × 53 standardized residuals: mean within 0.2 and variance within 25% of 1 with overwhelming probability.
    assert abs(mean) < 0.2 and abs(variance - 1) < 0.25, (mean, variance)
    # Positive control: against counts that double one cell's true value the residuals are far off.
    shifted = [list(m) for m in exact]
    shifted[0][0] *= 2
    off = [(n - t) / math.sqrt(20) for n, t in zip(measured["counts"][0], shifted[0])]
    assert abs(off[0]) > 5


def test_contribution_is_bounded_per_subject(cli, tmp_path):
    # One person with 50 records among 100 others with one: with at most one record per person
    # the measured total is about 101, not 150.
    rows = [{"person": "heavy", "zone": "n", "age": 30, "kind": "ems"}] * 50
    rows += [{"person": f"p{i}", "zone": "s", "age": 50, "kind": "fire"} for i in range(100)]
    source = tmp_path / "heavy.csv"
    pd.DataFrame(rows).to_csv(source, index=False)
    _, measured, _ = synthesize(cli, tmp_path, source, "50", 1)
    assert abs(sum(measured["counts"][0]) - 101) < 10
    assert abs(measured["counts"][0][0] - 1) < 10


@pytest.mark.parametrize("spec, message", [
    ({"fields": ["zone", "kind"], "domains": {"zone": ["n"]}}, "no declared domain"),
    ({"fields": ["zone", "kind"], "domains": {"zone": ["n"], "kind": ["ems"]}, "tree": [["zone", "kind"], ["kind", "zone"]]}, "tree"),
])
def test_undeclared_domains_and_cycles_are_refused(cli, tmp_path, spec, message):
    source = tmp_path / "calls.csv"
    calls(source, people=10)
    (tmp_path / "bad.json").write_text(json.dumps(spec))
    out = cli.run("synthesize", source, "--spec", tmp_path / "bad.json", "--rho", "1", check=False)
    assert out.returncode != 0 and message in out.stderr.decode()
