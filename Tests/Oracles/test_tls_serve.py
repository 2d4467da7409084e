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


def test_signed_requests_through_a_tls_terminating_proxy(civitas_bin, tmp_path):
    """A proxy terminates TLS (with the city's certificate) and forwards the plain bytes to the
    broker on loopback; partners sign the proxy's https URL, which the operator gave the broker as
    its public URL. The same requests sent to the broker's own address are refused, naming the URL
    they were signed for."""
    import asyncio
    import threading

    make_authority(tmp_path, "city-ca")
    issue_server_certificate(tmp_path, "city-ca")
    for name in ("operator", "agency"):
        subprocess.run([civitas_bin, "keys", "generate", "--name", name, "--dir", "K"], cwd=tmp_path, check=True, capture_output=True)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    proxy_port = listener.getsockname()[1]
    public_url = f"https://127.0.0.1:{proxy_port}"
    process, direct_url = start_broker(civitas_bin, tmp_path, "K/operator.pub", "--public-url", public_url)
    broker_port = int(direct_url.rsplit(":", 1)[1])

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def forward(client_reader, client_writer):
        broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", broker_port)
        await asyncio.gather(pipe(client_reader, broker_writer), pipe(broker_reader, client_writer), return_exceptions=True)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(forward, sock=listener, ssl=context))
    threading.Thread(target=loop.run_forever, daemon=True).start()

    def civitas(url, *args):
        return subprocess.run([civitas_bin, *args, "--broker", url, "--ca-file", str(tmp_path / "city-ca.pem")],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
    try:
        added = civitas(public_url, "participants", "add", "--key", "K/operator.secret", "--role", "agency", "K/agency.pub")
        assert added.returncode == 0, added.stderr
        listed = civitas(public_url, "participants", "list", "--key", "K/agency.secret")
        assert listed.returncode == 0 and "agency" in listed.stdout, listed.stderr
        direct = civitas(direct_url, "participants", "list", "--key", "K/agency.secret")
        assert direct.returncode != 0 and f"signed for {direct_url}, not for this broker's URL {public_url}" in direct.stderr, direct.stderr
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        process.terminate()
        process.wait(timeout=10)
