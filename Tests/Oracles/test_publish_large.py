"""A CSV file larger than one batch may be (64 MiB) is sent by `civitas publish` as consecutive
batches cut at record boundaries, a quoted line break never being one: every record arrives once,
as written (pandas reads the file and the broker's stored count must match), the parts are stored
in order although each is uploaded while the broker stores the one before, blank lines and a
last record without a line break are read as pandas reads them, and sending the file again
stores nothing new."""

import json
import pathlib

import pandas as pd

from conftest import start_broker

SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "Schemas" / "datasets"


def write_calls(path, target_bytes):
    """911-shaped calls whose description holds quoted commas, quotes and line breaks; an empty
    line (LF or CRLF) after every 5,000th record, and no line break after the last one."""
    towns = ["NORRISTOWN", "ABINGTON", "LOWER MERION", "CHELTENHAM"]
    header = "lat,lng,desc,zip,title,timeStamp,twp,addr,e\n"
    written = 0
    with open(path, "w", newline="") as out:
        out.write(header)
        i = 0
        while written < target_bytes:
            desc = f'"call {i}, ""as reported""\nsecond line of {i}; {"x" * (i % 90)}"'
            line = (f"40.{100000 + (i * 7919) % 300000},-75.{200000 + (i * 104729) % 300000},{desc},{19400 + i % 40},"
                    f"EMS: FALL VICTIM,2016-01-1{i % 10} 0{i % 10}:1{i % 6}:00,{towns[i % 4]},MAIN ST,1")
            i += 1
            if written + len(line) < target_bytes:
                line += "\n" + ("\r\n" if i % 10_000 == 0 else "\n" if i % 5_000 == 0 else "")
            out.write(line)
            written += len(line)
    return i


def broker_with_calls(civitas_bin, tmp_path, cli):
    """A broker with an agency and its dataset `calls` (the 911 schema); returns the process and URL."""
    cli.cwd = tmp_path
    for name in ["operator", "agency"]:
        cli.run("keys", "generate", "--name", name, "--dir", "K")
    process, url = start_broker(civitas_bin, tmp_path, "K/operator.pub")
    try:
        cli.run("participants", "add", "--key", "K/operator.secret", "--role", "agency", "K/agency.pub", "--broker", url)
        cli.run("datasets", "register", "--key", "K/agency.secret", "--id", "calls", "--schema", SCHEMAS / "emergency-call.schema.json",
                "--broker", url)
    except BaseException:
        process.terminate()
        process.wait(timeout=10)
        raise
    return process, url


def test_a_file_larger_than_a_batch_arrives_whole_in_parts(civitas_bin, tmp_path, cli):
    process, url = broker_with_calls(civitas_bin, tmp_path, cli)
    try:
        source = tmp_path / "calls.csv"
        rows = write_calls(source, 66 << 20)
        assert source.stat().st_size > 64 << 20
        assert len(pd.read_csv(source, dtype=str, keep_default_na=False)) == rows

        assert not source.read_bytes().endswith(b"\n")
        first = json.loads(cli.run("publish", "--json", "--no-progress", "--key", "K/agency.secret", "calls", source, "--broker", url).stdout)
        parts = first["batches"]
        assert len(parts) == 2, first
        assert sum(part["records"] for part in parts) == first["records"] == rows
        # Part n is batch n: the second part, uploaded while the broker stored the first, was stored after it.
        assert [(part["part"], part["sequence"], part["replayed"]) for part in parts] == [(1, 1, False), (2, 2, False)], parts

        again = cli.run("publish", "--no-progress", "--key", "K/agency.secret", "calls", source, "--broker", url).stdout.decode()
        assert [line.startswith("already stored") for line in again.splitlines()] == [True, True], again
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_json_lines_file_larger_than_a_batch_arrives_whole_in_parts(civitas_bin, tmp_path, cli):
    """The same for JSON Lines: no header, a line break inside a value is escaped, blank lines
    (spaces, tabs, CRLF) are skipped as the broker's reader skips them, and the last record has
    no line break."""
    process, url = broker_with_calls(civitas_bin, tmp_path, cli)
    try:
        csv_source = tmp_path / "calls.csv"
        write_calls(csv_source, 50 << 20)
        source = tmp_path / "calls.jsonl"
        records = 0
        with open(source, "w", newline="") as out:
            rows = pd.read_csv(csv_source, dtype=str, keep_default_na=False).to_dict("records")
            for _ in range(2):
                for row in rows:
                    if records:
                        out.write("\n" + (" \t\r\n" if records % 7_000 == 0 else ""))
                    out.write(json.dumps(row))
                    records += 1
        assert source.stat().st_size > 64 << 20
        assert not source.read_bytes().endswith(b"\n")
        assert sum(1 for line in source.read_text().splitlines() if line.strip()) == records

        first = json.loads(cli.run("publish", "--json", "--no-progress", "--key", "K/agency.secret", "calls", source, "--broker", url).stdout)
        parts = first["batches"]
        assert len(parts) >= 2, first
        assert first["records"] == sum(part["records"] for part in parts) == records
        assert [(part["part"], part["sequence"]) for part in parts] == [(n, n) for n in range(1, len(parts) + 1)], parts

        again = json.loads(cli.run("publish", "--json", "--no-progress", "--key", "K/agency.secret", "calls", source, "--broker", url).stdout)
        assert [part["replayed"] for part in again["batches"]] == [True] * len(parts), again
    finally:
        process.terminate()
        process.wait(timeout=10)
