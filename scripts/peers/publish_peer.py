"""The publish stage of a Python pipeline, doing what the broker does with an uploaded CSV batch:
read it (pandas), check every cell against the dataset's JSON Schema (the columns are known
properties, required ones present, types, numeric bounds, string lengths, patterns, calendar
dates for timestamps), write the rows as canonical JSON in segments of 1,000, seal each segment
under the dataset key (PyNaCl SecretBox: XSalsa20-Poly1305) and store them in SQLite in one
transaction. Without HTTP, the request signature or the upload digest.

Usage: publish_peer.py BATCH_CSV SCHEMA_JSON WORK_DIR   prints rows, seconds, rows/s and peak RSS as JSON."""

import json
import os
import re
import resource
import sqlite3
import sys
import time
import warnings

import nacl.secret
import nacl.utils
import pandas as pd

SEGMENT = 1000
NUMBER = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"
INTEGER = r"-?(0|[1-9][0-9]*)"


# JSON Schema patterns are searched, and may have groups: pandas warns about the groups only.
warnings.filterwarnings("ignore", message="This pattern is interpreted as a regular expression")


class Invalid(Exception):
    pass


def check_column(name, values, spec, required):
    """Raises Invalid naming the first row whose value the property refuses."""
    types = spec.get("type", "string")
    types = types if isinstance(types, list) else [types]
    empty = values == ""
    if required and empty.any() and "null" not in types:
        raise Invalid(f"row {int(empty.idxmax()) + 1}: {name} is required")
    present = values[~empty]
    if "number" in types or "integer" in types:
        grammar = INTEGER if "integer" in types and "number" not in types else NUMBER
        bad = ~present.str.fullmatch(grammar)
        if bad.any():
            raise Invalid(f"row {int(bad.idxmax()) + 1}: {name} is not a number")
        numbers = pd.to_numeric(present)
        if "minimum" in spec and (numbers < spec["minimum"]).any():
            raise Invalid(f"{name} below its minimum")
        if "maximum" in spec and (numbers > spec["maximum"]).any():
            raise Invalid(f"{name} above its maximum")
        return
    lengths = present.str.len()
    if "maxLength" in spec and (lengths > spec["maxLength"]).any():
        raise Invalid(f"{name} longer than {spec['maxLength']}")
    if "minLength" in spec and (lengths < spec["minLength"]).any():
        raise Invalid(f"{name} shorter than {spec['minLength']}")
    if "pattern" in spec:
        bad = ~present.str.contains(re.compile(spec["pattern"]))
        if bad.any():
            raise Invalid(f"row {int(bad.idxmax()) + 1}: {name} does not match its pattern")
    if "hierarchy" in spec.get("x-privacy", {}) and "date" in spec["x-privacy"]["hierarchy"]:
        dates = pd.to_datetime(present, format="%Y-%m-%d %H:%M:%S", errors="coerce")
        if dates.isna().any():
            raise Invalid(f"row {int(dates.isna().idxmax()) + 1}: {name} is not a calendar date and time")


def main():
    batch, schema_path, work = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(work, exist_ok=True)
    schema = json.load(open(schema_path))
    properties, required = schema["properties"], set(schema.get("required", []))
    key = nacl.utils.random(nacl.secret.SecretBox.KEY_SIZE)
    box = nacl.secret.SecretBox(key)
    db = sqlite3.connect(os.path.join(work, "peer.sqlite"))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS segment (dataset TEXT, sequence INTEGER, position INTEGER, sealed BLOB,"
               " PRIMARY KEY (dataset, sequence, position))")
    started = time.perf_counter()
    frame = pd.read_csv(batch, dtype=str, keep_default_na=False)
    unknown = [c for c in frame.columns if c not in properties]
    if unknown:
        raise SystemExit(f"unknown columns {unknown}")
    for name in required:
        if name not in frame.columns:
            raise SystemExit(f"missing required column {name}")
    for name in frame.columns:
        check_column(name, frame[name], properties[name], name in required)
    columns = list(frame.columns)
    rows = frame.to_numpy().tolist()
    with db:
        for position, start in enumerate(range(0, len(rows), SEGMENT)):
            plain = json.dumps({"columns": columns, "rows": rows[start:start + SEGMENT]}, separators=(",", ":"),
                               ensure_ascii=False).encode()
            db.execute("INSERT INTO segment VALUES (?, 1, ?, ?)", ("calls", position, box.encrypt(plain)))
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": len(rows), "seconds": round(seconds, 3), "rows_per_second": round(len(rows) / seconds),
                      "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


if __name__ == "__main__":
    main()
