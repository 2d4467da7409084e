"""The README as a new user meets it: every `sh` block of its walkthrough, from the first step
on, runs as written, in order, in one shell, in a fresh folder, with only the built civitas on
the PATH (and DATABASE_URL naming a fresh PostgreSQL database for the several-nodes block).
Between blocks the test only waits for a server a block started in the background to accept
connections, as a person would before typing the next command; at the end it stops them.
The two commands at the top (scripts/demo, scripts/test) are not run here: scripts/test is what
runs this test, and test_exchange_e2e runs the demo. Afterwards the files the walkthrough made
are checked: a release and a feed window were received and the auditor's checkpoint was kept."""
import pathlib
import re
import subprocess

from conftest import fresh_database

ROOT = pathlib.Path(__file__).resolve().parents[2]


def readme_blocks():
    text = (ROOT / "README.md").read_text()
    walkthrough = text[text.index("## Walkthrough"):]
    return re.findall(r"^```sh\n(.*?)^```", walkthrough, flags=re.S | re.M)


def wait_for_ports(block):
    """Shell lines that wait (at most 30 s each) for the loopback ports of the servers a block started."""
    if not re.search(r"civitas serve.*?&", block, flags=re.S):
        return ""
    ports = re.findall(r"--port (\d+)", block) or ["8080"]
    return "".join(f"""
for attempt in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; sleep 0.1; done
(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null || {{ echo "no server on port {port} after 30 s" >&2; exit 1; }}
""" for port in ports)


def run_blocks(blocks, folder, civitas_bin, database=""):
    """Runs the blocks in order in one bash in `folder`; returns the result and the number of the last block started."""
    script = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT"]
    for number, block in enumerate(blocks, 1):
        script.append(f"echo '>>> README block {number}' >&2")
        script.append(block)
        script.append(wait_for_ports(block))
    env = {"PATH": f"{pathlib.Path(civitas_bin).parent}:/usr/bin:/bin", "HOME": str(folder.parent), "DATABASE_URL": database}
    result = subprocess.run(["bash", "-c", "\n".join(script)], cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    started = re.findall(r">>> README block (\d+)", result.stderr)
    return result, int(started[-1]) if started else 0


def test_every_walkthrough_block_runs_as_written(civitas_bin, tmp_path):
    blocks = readme_blocks()
    assert len(blocks) >= 9, f"found {len(blocks)} sh blocks in the walkthrough"
    folder = tmp_path / "fresh"
    folder.mkdir()
    result, last = run_blocks(blocks, folder, civitas_bin, database=fresh_database())
    assert result.returncode == 0, f"README block {last} failed:\n{blocks[last - 1] if last else ''}\n{result.stderr[-3000:]}"
    assert last == len(blocks)
    received = (folder / "received.csv").read_text().splitlines()
    assert "caller" in received[0].split(",") and len(received) > 1000
    window = (folder / "window.csv").read_text().splitlines()
    assert len(window) > 1, "the feed pull received no window"
    assert (folder / "auditor.checkpoint").exists() and (folder / "calls.k5.csv").exists()


def test_a_block_that_does_not_run_as_written_is_reported(civitas_bin, tmp_path):
    """Positive control: a placeholder where a value belongs (as the walkthrough once had) fails, naming its block."""
    blocks = ["civitas demo-data\n", "civitas pull --key Keys/health.secret --issuer Keys/broker.pub --delivery rel-… --out received.csv\n"]
    folder = tmp_path / "fresh"
    folder.mkdir()
    result, last = run_blocks(blocks, folder, civitas_bin)
    assert result.returncode != 0 and last == 2
