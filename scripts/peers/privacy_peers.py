"""Peer measurements for the privacy benchmark, printed as JSON: anonypy's
Mondrian on the ARX Adult file and OpenDP's discrete Laplace sampler."""

import json
import sys
import time

import pandas as pd

result = {}
shared = sys.argv[1] if len(sys.argv) > 1 else "../shared/data"
try:
    from anonypy import anonypy
    df = pd.read_csv(f"{shared}/arx-adult/adult.csv", sep=";")
    qi = ["sex", "age", "race", "marital-status", "education", "native-country", "workclass", "occupation"]
    for column in qi + ["salary-class"]:
        if column != "age":
            df[column] = df[column].astype("category")
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        rows = anonypy.Preserver(df, qi, "salary-class").anonymize_k_anonymity(k=10)
        best = min(best, time.perf_counter() - start)
    result["anonypy_mondrian_k10_ms"] = best * 1000
except FileNotFoundError:
    pass

import opendp.prelude as dp
dp.enable_features("contrib")
n = 200_000
laplace = dp.m.make_laplace(dp.atom_domain(T=int), dp.absolute_distance(T=int), scale=2.0)
start = time.perf_counter()
for _ in range(n):
    laplace(0)
result["opendp_discrete_laplace_calls_per_s"] = n / (time.perf_counter() - start)
vector = dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int), scale=2.0)
zeros = [0] * 1_000_000
start = time.perf_counter()
vector(zeros)
result["opendp_discrete_laplace_vector_per_s"] = len(zeros) / (time.perf_counter() - start)
print(json.dumps(result))
