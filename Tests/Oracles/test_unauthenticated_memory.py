"""An unauthenticated request costs the broker no memory: eight concurrent unsigned
60 MiB uploads to a live `civitas serve` are refused before their bodies are read,
the process's peak resident memory grows by less than 32 MiB, and a signed upload
running beside them succeeds."""

import http.client
import pathlib
import subprocess
import threading
import urllib.parse

from conftest import start_broker

SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "Schemas" / "datasets"
CHUNK = b"lat,lng\n" + b"4" * (1 << 20)


def memory_kib(pid, field):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def unsigned_upload(url, statuses):
    parts = urllib.parse.urlparse(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.putrequest("POST", "/datasets/calls/batches")
        connection.putheader("Content-Type", "text/csv")
        connection.putheader("Content-Length", str(60 * len(CHUNK)))
        connection.endheaders()
        for _ in range(60):
            connection.send(CHUNK)
        statuses.append(connection.getresponse().status)
    except (BrokenPipeError, ConnectionResetError):
        statuses.append("closed early")  # the broker answered and stopped reading: nothing was held
    finally:
        connection.close()


def test_unsigned_uploads_cost_no_memory(civitas_bin, tmp_path):
    for name in ["operator", "agency"]:
        subprocess.run([civitas_bin, "keys", "generate", "--name", name, "--dir", "K"], cwd=tmp_path, check=True, capture_output=True)
    process, url = start_broker(civitas_bin, tmp_path, "K/operator.pub")
    try:
        def civitas(*args):
            return subprocess.run([civitas_bin, *map(str, args), "--broker", url], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert civitas("participants", "add", "--key", "K/operator.secret", "--role", "agency", "K/agency.pub").returncode == 0
        assert civitas("datasets", "register", "--key", "K/agency.secret", "--id", "calls",
                       "--schema", SCHEMAS / "emergency-call.schema.json").returncode == 0
        rows = tmp_path / "calls.csv"
        rows.write_text("lat,lng,zip,title,timeStamp,twp\n40.1,-75.2,19401,EMS: FALL VICTIM,2019-01-01 00:00:00,AMBLER\n")
        assert civitas("publish", "--key", "K/agency.secret", "calls", rows).returncode == 0  # warm up
        before = memory_kib(process.pid, "VmHWM")

        statuses = []
        threads = [threading.Thread(target=unsigned_upload, args=(url, statuses)) for _ in range(8)]
        for thread in threads:
            thread.start()
        rows.write_text("lat,lng,zip,title,timeStamp,twp\n40.2,-75.3,19402,EMS: FALL VICTIM,2019-01-02 00:00:00,AMBLER\n")
        signed = civitas("publish", "--key", "K/agency.secret", "calls", rows)
        for thread in threads:
            thread.join(timeout=120)
        growth = memory_kib(process.pid, "VmHWM") - before
        assert signed.returncode == 0 and "stored 1 records as batch 2" in signed.stdout, signed.stderr
        assert len(statuses) == 8 and all(status in (401, "closed early") for status in statuses), statuses
        assert growth < 32 * 1024, f"peak resident memory grew by {growth // 1024} MiB"
    finally:
        process.terminate()
        process.wait(timeout=10)
