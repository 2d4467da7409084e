"""The CLI reaches a broker whose certificate a city's private authority issued: with `--ca-file`
(or `$CIVITAS_CA_FILE`) naming that authority it connects; without it, or with another authority,
the TLS handshake is refused. The authority and the certificate are made here with openssl; the
stand-in broker is Python's own TLS server on loopback."""

import http.server
import ssl
import subprocess
import threading

from conftest import ParticipantsStandIn


def make_authority(folder, name):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", folder / f"{name}.key", "-out", folder / f"{name}.pem", "-days", "1", "-subj", f"/CN={name}"],
                   check=True, capture_output=True)


def issue_server_certificate(folder, authority):
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", folder / "server.key", "-out", folder / "server.csr", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", folder / "server.csr", "-CA", folder / f"{authority}.pem", "-CAkey", folder / f"{authority}.key",
                    "-CAcreateserial", "-out", folder / "server.pem", "-days", "1", "-extfile", folder / "san.ext"], check=True, capture_output=True)


def test_a_private_authority_is_trusted_only_when_named(civitas_bin, tmp_path):
    make_authority(tmp_path, "city-ca")
    make_authority(tmp_path, "other-ca")
    issue_server_certificate(tmp_path, "city-ca")
    subprocess.run([civitas_bin, "keys", "generate", "--name", "partner", "--dir", "K"], cwd=tmp_path, check=True, capture_output=True)
    server = http.server.HTTPServer(("127.0.0.1", 0), ParticipantsStandIn)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}"

    def participants(*extra, env=None):
        return subprocess.run([civitas_bin, "participants", "list", "--key", "K/partner.secret", "--broker", url, *extra],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **(env or {})})
    try:
        named = participants("--ca-file", tmp_path / "city-ca.pem")
        from_environment = participants(env={"CIVITAS_CA_FILE": str(tmp_path / "city-ca.pem")})
        unnamed = participants()
        other = participants("--ca-file", tmp_path / "other-ca.pem")
        not_a_certificate = participants("--ca-file", tmp_path / "san.ext")
    finally:
        server.shutdown()
    assert named.returncode == 0, named.stderr
    assert from_environment.returncode == 0, from_environment.stderr
    assert unnamed.returncode != 0 and "cannot reach the broker" in unnamed.stderr, unnamed.stderr
    assert other.returncode != 0 and "cannot reach the broker" in other.stderr, other.stderr
    assert not_a_certificate.returncode != 0 and "no PEM certificate" in not_a_certificate.stderr, not_a_certificate.stderr
