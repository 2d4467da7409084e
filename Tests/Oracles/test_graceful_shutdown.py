"""SIGTERM while a release is being treated: the broker stops taking connections, answers the
release in flight (the partner receives its delivery), stops its schedule and exits 0; started
again on the same database, it checks the log, which records that delivery, and audits."""

import signal
import subprocess
import time

from clinic_broker import ClinicBroker
from conftest import start_broker


def test_sigterm_finishes_the_release_in_flight(civitas_bin, tmp_path):
    clinic = ClinicBroker(civitas_bin, tmp_path)
    try:
        # Enough records that the release is still being treated when the signal comes (a
        # release of 200,000 records can answer within the 0.4 s waited).
        clinic.publish(300_000)
        clinic.consent(range(300_000))
        clinic.agree("ag-health", "health")
        release = subprocess.Popen([civitas_bin, "request", "release", "--key", clinic.secret("health"), "--purpose", clinic.purpose,
                                    "--broker", clinic.url, "ag-health"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.4)
        assert release.poll() is None, "the release finished before SIGTERM: the test needs more records"
        clinic.process.send_signal(signal.SIGTERM)
        out, err = release.communicate(timeout=120)
        assert release.returncode == 0 and "delivery rel-" in out, err
        assert clinic.process.wait(timeout=60) == 0
        delivery = out.split("delivery ")[1].split(":")[0]
    finally:
        if clinic.process.poll() is None:
            clinic.stop()
    process, url = start_broker(civitas_bin, tmp_path, "Keys/operator.pub")
    try:
        clinic.url = url
        pulled = clinic.civitas("pull", "--key", clinic.secret("health"), "--issuer", "Keys/broker.pub", "--delivery", delivery, "--out", "health.csv")
        assert pulled.returncode == 0
        clinic.civitas("log", "fetch", "--key", clinic.secret("auditor"), "export.jsonl")
        audit = clinic.civitas("audit", "--broker", "Keys/broker.pub", "export.jsonl", check=False)
        assert audit.returncode == 0, audit.stdout + audit.stderr
    finally:
        process.terminate()
        process.wait(timeout=10)
