"""`civitas serve --tls-cert --tls-key` terminates TLS itself with a certificate a city's private
authority issued (made here with openssl): the signed CLI, trusting that authority with
`--ca-file`, registers and lists participants over https (the signatures cover the https URL);
without it the handshake is refused; a renewed certificate written over the files is served from
the next connection on, without a restart."""

import os
import socket
import ssl
import subprocess
import time

from conftest import start_broker
from test_private_ca import issue_server_certificate, make_authority


def served_serial(port, authority):
    context = ssl.create_default_context(cafile=str(authority))
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert()["serialNumber"]


def test_the_broker_serves_https_and_picks_up_a_renewed_certificate(civitas_bin, tmp_path):
    make_authority(tmp_path, "city-ca")
    issue_server_certificate(tmp_path, "city-ca")
    os.chmod(tmp_path / "server.key", 0o600)
    for name in ("operator", "agency"):
        subprocess.run([civitas_bin, "keys", "generate", "--name", name, "--dir", "K"], cwd=tmp_path, check=True, capture_output=True)
    process, url = start_broker(civitas_bin, tmp_path, "K/operator.pub", "--tls-cert", "server.pem", "--tls-key", "server.key")
    try:
        assert url.startswith("https://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])

        def civitas(*args, ca=True):
            extra = ["--ca-file", str(tmp_path / "city-ca.pem")] if ca else []
            return subprocess.run([civitas_bin, *args, "--broker", url, *extra], cwd=tmp_path, capture_output=True, text=True, timeout=60)

        added = civitas("participants", "add", "--key", "K/operator.secret", "--role", "agency", "K/agency.pub")
        assert added.returncode == 0, added.stderr
        listed = civitas("participants", "list", "--key", "K/agency.secret")
        assert listed.returncode == 0 and "agency" in listed.stdout, listed.stderr
        untrusted = civitas("participants", "list", "--key", "K/agency.secret", ca=False)
        assert untrusted.returncode != 0 and "cannot reach the broker" in untrusted.stderr

        before = served_serial(port, tmp_path / "city-ca.pem")
        issue_server_certificate(tmp_path, "city-ca")   # a renewal: a new certificate over the same files
        time.sleep(1.2)
        after = served_serial(port, tmp_path / "city-ca.pem")
        assert after != before, "the renewed certificate was not served"
        again = civitas("participants", "list", "--key", "K/agency.secret")
        assert again.returncode == 0, again.stderr
    finally:
        process.terminate()
        process.wait(timeout=10)
