"""A pull told the broker is busy (503 with Retry-After, as the broker answers when it is already
sending as many envelopes as it reads at once) waits the time named and asks again with a fresh
signature; any other refusal ends the pull with the broker's reason."""

import http.server
import json
import subprocess
import threading
import time


class BusyOnceBroker(http.server.BaseHTTPRequestHandler):
    requests = []

    def do_GET(self):
        BusyOnceBroker.requests.append((time.monotonic(), self.path, self.headers.get("Signature-Input", "")))
        if len(BusyOnceBroker.requests) == 1:
            self.answer(503, {"error": {"code": "busy", "message": "busy; retry shortly"}}, {"Retry-After": "1"})
        else:
            self.answer(404, {"error": {"code": "not_found", "message": "delivery rel-x is gone"}})

    def answer(self, status, document, extra=None):
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_busy_broker_is_asked_again_after_the_time_it_names(civitas_bin, tmp_path):
    for name in ("partner", "broker"):
        subprocess.run([civitas_bin, "keys", "generate", "--name", name, "--dir", "K"], cwd=tmp_path, check=True, capture_output=True)
    server = http.server.HTTPServer(("127.0.0.1", 0), BusyOnceBroker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = subprocess.run([civitas_bin, "pull", "--key", "K/partner.secret", "--issuer", "K/broker.pub", "--delivery", "rel-x",
                                 "--out", "out.csv", "--broker", f"http://127.0.0.1:{server.server_address[1]}"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    requests = BusyOnceBroker.requests
    assert [path for _, path, _ in requests] == ["/deliveries/rel-x", "/deliveries/rel-x"]
    assert requests[1][0] - requests[0][0] >= 1.0, "asked again before the Retry-After time"
    assert requests[0][2] != requests[1][2], "the second request reused the first one's signature (and nonce)"
    assert result.returncode != 0
    assert "rel-x is gone" in result.stderr
    assert not (tmp_path / "out.csv").exists()


class BusyOnceForChanges(BusyOnceBroker):
    requests = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        BusyOnceForChanges.requests.append((time.monotonic(), self.path, self.headers.get("Signature-Input", "")))
        if len(BusyOnceForChanges.requests) == 1:
            self.answer(503, {"error": {"code": "busy", "message": "other broker nodes kept changing the same records"}}, {"Retry-After": "1"})
        else:
            self.answer(409, {"error": {"code": "budget_exhausted", "message": "agreement ag-x has ε 0 left"}})


def test_a_change_answered_busy_is_sent_again_freshly_signed(civitas_bin, tmp_path):
    """A broker that answers a change 503 busy changed nothing: the CLI asks again after the
    time named, with a fresh signature; the next answer (here a refusal) is the one it reports."""
    for name in ("partner",):
        subprocess.run([civitas_bin, "keys", "generate", "--name", name, "--dir", "K"], cwd=tmp_path, check=True, capture_output=True)
    server = http.server.HTTPServer(("127.0.0.1", 0), BusyOnceForChanges)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = subprocess.run([civitas_bin, "request", "aggregate", "--key", "K/partner.secret", "--purpose", "research",
                                 "--epsilon", "0.1", "--broker", f"http://127.0.0.1:{server.server_address[1]}", "ag-x"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    requests = BusyOnceForChanges.requests
    assert [path for _, path, _ in requests] == ["/agreements/ag-x/aggregates"] * 2
    assert requests[1][0] - requests[0][0] >= 1.0, "asked again before the Retry-After time"
    assert requests[0][2] != requests[1][2], "the second request reused the first one's signature (and nonce)"
    assert result.returncode != 0 and "ε 0 left" in result.stderr
