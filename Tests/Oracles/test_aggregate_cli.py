"""`civitas aggregate` prints noisy aggregates as CSV, charges what it says,
and refuses what would leak or make no sense."""

import csv
import io
import math
import random


def census(path, rows=2000):
    rng = random.Random(3)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["person", "twp", "age"])
        for i in range(rows):
            writer.writerow([f"p{i % 500}", rng.choice(["ABINGTON", "AMBLER", "NORRISTOWN"]), rng.randint(18, 90)])


def test_count_sum_mean(cli, tmp_path):
    source = tmp_path / "c.csv"
    census(source)
    out = cli.run("aggregate", source, "--epsilon", "5", "--count", "--group-by", "twp", "--public-groups")
    rows = list(csv.DictReader(io.StringIO(out.stdout.decode())))
    assert [r["twp"] for r in rows] == ["ABINGTON", "AMBLER", "NORRISTOWN"]
    assert abs(sum(int(r["count"]) for r in rows) - 2000) < 60
    assert "charged ε = 5" in out.stderr.decode()
    out = cli.run("aggregate", source, "--epsilon", "2", "--mean", "age", "--bounds", "18:90", "--subject", "person",
                  "--max-rows", "4", "--max-groups", "3")
    mean = float(list(csv.DictReader(io.StringIO(out.stdout.decode())))[0]["mean"])
    assert 40 < mean < 68
    out = cli.run("aggregate", source, "--mechanism", "gaussian", "--epsilon", "1", "--delta", "1e-6", "--sum", "age",
                  "--bounds", "0:100")
    charged = out.stderr.decode()
    rho = float(charged.split("ρ = ")[1].split(" ")[0])
    assert rho + 2 * math.sqrt(rho * math.log(1e6)) <= 1.0 + 1e-9


def test_refusals(cli, tmp_path):
    source = tmp_path / "c.csv"
    census(source, rows=50)
    assert "group keys are not noised" in cli.fails("aggregate", source, "--epsilon", "1", "--count", "--group-by", "twp")
    assert "unknown column 'nope'" in cli.fails("aggregate", source, "--epsilon", "1", "--sum", "nope", "--bounds", "0:1")
    assert "need --bounds" in cli.fails("aggregate", source, "--epsilon", "1", "--mean", "age")
    assert "exactly one of" in cli.fails("aggregate", source, "--epsilon", "1", "--count", "--sum", "age", "--bounds", "0:1")
    assert "must be positive" in cli.fails("aggregate", source, "--epsilon", "0", "--count")
    assert "not a non-negative decimal" in cli.fails("aggregate", source, "--epsilon", "abc", "--count")
    groups = tmp_path / "groups.csv"
    groups.write_text("twp\nABINGTON\nUPPER DUBLIN\n")
    out = cli.run("aggregate", source, "--epsilon", "1", "--count", "--group-by", "twp", "--groups", groups)
    assert [r["twp"] for r in csv.DictReader(io.StringIO(out.stdout.decode()))] == ["ABINGTON", "UPPER DUBLIN"]
