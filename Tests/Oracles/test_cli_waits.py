"""The command line waits for a slow broker on the socket, not on the CPU: a request answered
after three seconds costs the client well under 5% of that time in CPU. (The client it
replaced, Foundation's URLSession on Linux, spent about 90% of the wait polling.)"""

import http.server
import resource
import subprocess
import threading
import time

from conftest import ParticipantsStandIn

ANSWER_AFTER = 3.0


class SlowBroker(ParticipantsStandIn):
    delay = ANSWER_AFTER


def test_a_slow_answer_costs_the_client_almost_no_cpu(civitas_bin, tmp_path):
    subprocess.run([civitas_bin, "keys", "generate", "--name", "partner", "--dir", "K"], cwd=tmp_path, check=True, capture_output=True)
    server = http.server.HTTPServer(("127.0.0.1", 0), SlowBroker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        result = subprocess.run([civitas_bin, "participants", "list", "--key", "K/partner.secret",
                                 "--broker", f"http://127.0.0.1:{server.server_address[1]}"], cwd=tmp_path, capture_output=True, timeout=60)
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert wall >= ANSWER_AFTER
    # The process's start-up (loading, key file, signing) is included; the wait itself is not CPU.
    assert cpu < 0.05 * wall, f"{cpu:.2f} s of CPU in {wall:.2f} s"
