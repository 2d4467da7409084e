"""Utility of DP synthetic data: Civitas's marginal synthesizer beside the MST synthesizer of
smartnoise-synth (Private-PGM's mbi underneath) at the same ρ, on the same binned data.

The error is the mean total-variation distance between the synthetic and the true data over
every one-way and every two-way marginal of the fields (all pairs, not only the measured tree).
Usage: synthetic_quality.py CIVITAS_BIN DATASET RHO RUNS  (DATASET: adult or 911)
Prints one JSON line per run and system.
"""
import itertools
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")


def bins_of(values, edges):
    """The bin labels Civitas writes, for numbers (values outside fall in the end bins)."""
    labels = [f"[{a},{b})" for a, b in zip(edges, edges[1:])]
    positions = np.clip(np.searchsorted(np.array([float(e) for e in edges]), values.astype(float), side="right") - 1, 0, len(labels) - 1)
    return pd.Series([labels[p] for p in positions], index=values.index), labels


def dataset(name):
    """The file Civitas reads, the spec declaring public domains, and the binned true table."""
    if name == "adult":
        path = os.path.join(DATA, "arx-adult", "adult.csv")
        frame = pd.read_csv(path, sep=";", dtype=str, keep_default_na=False)
        fields = ["sex", "age", "race", "marital-status", "education", "native-country", "workclass", "occupation", "salary-class"]
        edges = {"age": ["0", "20", "30", "40", "50", "60", "70", "121"]}
        # A tree from the domain's public structure: the census's usual dependencies.
        tree = [["salary-class", "education"], ["salary-class", "marital-status"], ["salary-class", "occupation"],
                ["marital-status", "age"], ["marital-status", "sex"], ["occupation", "workclass"], ["race", "native-country"],
                ["sex", "race"]]
    else:
        path = os.path.join(DATA, "montgomery-911", "911_sample.csv")
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame["kind"] = frame["title"].str.split(":").str[0]
        fields = ["lat", "lng", "twp", "kind", "title"]
        edges = {"lat": [f"{39.95 + 0.05 * i:.2f}" for i in range(12)], "lng": [f"{-75.70 + 0.05 * i:.2f}" for i in range(17)]}
        tree = [["lat", "lng"], ["lat", "twp"], ["twp", "kind"], ["kind", "title"]]
    binned = pd.DataFrame(index=frame.index)
    domains = {}
    for field in fields:
        if field in edges:
            binned[field], domains[field] = bins_of(frame[field], edges[field])
        else:
            binned[field] = frame[field]
            domains[field] = sorted(frame[field].unique())
    spec = {"fields": fields, "bins": edges, "domains": {f: d for f, d in domains.items() if f not in edges}, "tree": tree}
    return frame[fields], spec, binned, domains


def marginal_error(true, synthetic, fields, only=None):
    """Mean total-variation distance over every one- and two-way marginal (or those in `only`)."""
    errors = []
    for size in (1, 2):
        for columns in itertools.combinations(fields, size):
            columns = list(columns)
            if only is not None and set(columns) not in only:
                continue
            p = true.groupby(columns).size() / len(true)
            q = synthetic.groupby(columns).size() / max(len(synthetic), 1)
            joined = pd.concat([p, q], axis=1).fillna(0)
            errors.append(0.5 * float(np.abs(joined.iloc[:, 0] - joined.iloc[:, 1]).sum()))
    return float(np.mean(errors))


def civitas(binary, source, spec, rho, work):
    data = os.path.join(work, "data.csv")
    source.to_csv(data, index=False)
    with open(os.path.join(work, "spec.json"), "w") as handle:
        json.dump(spec, handle)
    out = subprocess.run([binary, "synthesize", data, "--spec", os.path.join(work, "spec.json"), "--rho", str(rho)],
                         check=True, capture_output=True, timeout=600)
    return pd.read_csv(pd.io.common.BytesIO(out.stdout), dtype=str, keep_default_na=False)


def mst(binned, domains, rho):
    """smartnoise-synth's MST at exactly this ρ (its ε, δ conversion replaced by the ρ given)."""
    import snsynth.mst.mst as module
    module.cdp_rho = lambda epsilon, delta: rho
    from snsynth.mst import MSTSynthesizer
    synthesizer = MSTSynthesizer(epsilon=1.0, delta=1e-9)
    codes = pd.DataFrame({f: pd.Categorical(binned[f], categories=domains[f]).codes for f in binned.columns})
    synthesizer.fit(codes, categorical_columns=list(codes.columns))
    sample = pd.DataFrame(synthesizer.sample(len(binned)), columns=codes.columns)
    return pd.DataFrame({f: [domains[f][int(c)] for c in sample[f]] for f in codes.columns})


def main():
    binary, name, rho, runs = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    source, spec, binned, domains = dataset(name)
    fields = spec["fields"]
    with tempfile.TemporaryDirectory() as work:
        for run in range(runs):
            ours = civitas(binary, source, spec, rho, work)
            # Also the error over what Civitas measures (each field and the tree's pairs): the part the noise decides.
            measured = [{f} for f in fields] + [set(pair) for pair in spec["tree"]]
            print(json.dumps({"dataset": name, "rho": rho, "run": run, "system": "civitas", "rows": len(ours),
                              "error": marginal_error(binned, ours, fields),
                              "measured_error": marginal_error(binned, ours, fields, only=measured)}), flush=True)
            theirs = mst(binned, domains, rho)
            print(json.dumps({"dataset": name, "rho": rho, "run": run, "system": "mst", "rows": len(theirs),
                              "error": marginal_error(binned, theirs, fields)}), flush=True)


if __name__ == "__main__":
    main()
