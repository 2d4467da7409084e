import http.server
import os
import pathlib
import secrets
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def civitas_bin():
    path = pathlib.Path(os.environ.get("CIVITAS_BIN", ROOT / ".build" / "debug" / "civitas")).resolve()
    if not path.exists():
        pytest.fail(f"{path} does not exist: build the package first (scripts/test does)")
    return str(path)


class CLI:
    def __init__(self, binary, cwd):
        self.binary = binary
        self.cwd = cwd

    def run(self, *args, input=None, env=None, check=True):
        result = subprocess.run([self.binary, *map(str, args)], cwd=self.cwd, input=input,
                                capture_output=True, env={**os.environ, **(env or {})}, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"civitas {' '.join(map(str, args))} failed: {result.stderr.decode()}")
        return result

    def fails(self, *args, **kwargs):
        """Runs a command that must fail with exactly one line on standard error."""
        result = self.run(*args, check=False, **kwargs)
        assert result.returncode != 0, f"civitas {' '.join(map(str, args))} succeeded but should have failed"
        lines = [line for line in result.stderr.decode().splitlines() if line.strip()]
        assert len(lines) == 1, f"expected a one-line reason, got: {lines}"
        return lines[0]


@pytest.fixture
def cli(civitas_bin, tmp_path):
    return CLI(civitas_bin, tmp_path)


def fresh_database():
    """A new, empty database on the PostgreSQL server the tests run (CIVITAS_TEST_POSTGRES_URL); its URL."""
    server = os.environ.get("CIVITAS_TEST_POSTGRES_URL")
    if not server:
        pytest.fail("CIVITAS_TEST_POSTGRES_URL names no PostgreSQL server: run the tests with scripts/test, which starts one")
    name = "civitas_test_" + secrets.token_hex(6)
    subprocess.run(["psql", server, "-q", "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return server.rsplit("/", 1)[0] + "/" + name


def start_broker(civitas_bin, folder, operator_pub, *extra):
    """Starts `civitas serve` in `folder` on a free loopback port with `operator_pub` as operator;
    returns the process and the broker's URL once it listens."""
    process = subprocess.Popen([civitas_bin, "serve", "--db", "broker.sqlite", "--port", "0", "--operator", operator_pub, *extra],
                               cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        line = process.stdout.readline()
        if "listening on" in line:
            return process, line.split("listening on ")[1].split(" ")[0]
    process.terminate()
    raise AssertionError("the broker did not start")



class ParticipantsStandIn(http.server.BaseHTTPRequestHandler):
    """A stand-in broker that answers every GET with an empty participant list, after `delay` seconds."""
    delay = 0.0

    def do_GET(self):
        time.sleep(self.delay)
        body = b'{"participants": []}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass
