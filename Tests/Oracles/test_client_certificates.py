"""`civitas serve --client-ca CA.pem` takes signed requests only over TLS connections whose client
certificate the city's authority issued (made here with openssl) for the very key that signs the
request: `civitas keys tls-key` writes the participant's key as PKCS #8 (read back here by
openssl and PyNaCl), a certificate for it lets the participant in, and a connection without a
certificate, with one the authority did not issue, or with one for another participant's key,
is refused."""

import os
import subprocess

import nacl.signing

import civitas_format
from conftest import start_broker
from test_private_ca import issue_server_certificate, make_authority


def certify(folder, name, authority="city-ca"):
    """The participant's Civitas key as PEM, and a certificate for it from `authority`."""
    subprocess.run(["openssl", "req", "-new", "-key", folder / f"K/{name}.key.pem", "-subj", f"/CN={name}", "-out", folder / f"{name}.csr"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", folder / f"{name}.csr", "-CA", folder / f"{authority}.pem", "-CAkey",
                    folder / f"{authority}.key", "-CAcreateserial", "-out", folder / f"{name}.crt", "-days", "1"], check=True, capture_output=True)


def test_requests_need_a_client_certificate_for_their_signing_key(civitas_bin, tmp_path):
    make_authority(tmp_path, "city-ca")
    make_authority(tmp_path, "other-ca")
    issue_server_certificate(tmp_path, "city-ca")
    os.chmod(tmp_path / "server.key", 0o600)
    for name in ("operator", "agency", "partner"):
        subprocess.run([civitas_bin, "keys", "generate", "--name", name, "--dir", "K"], cwd=tmp_path, check=True, capture_output=True)
        subprocess.run([civitas_bin, "keys", "tls-key", "--key", f"K/{name}.secret", "--out", f"K/{name}.key.pem"], cwd=tmp_path,
                       check=True, capture_output=True)
        assert os.stat(tmp_path / f"K/{name}.key.pem").st_mode & 0o077 == 0

    # The PEM key is the participant's Ed25519 key: openssl derives the same public key PyNaCl does from the secret.
    raw = subprocess.run(["openssl", "pkey", "-in", tmp_path / "K/partner.key.pem", "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    secret = civitas_format.read_secret(tmp_path / "K/partner.secret")
    assert raw[-32:] == bytes(secret["signing"].verify_key) == secret["ed25519"]

    for name in ("operator", "agency"):
        certify(tmp_path, name)
    certify(tmp_path, "partner", authority="other-ca")
    process, url = start_broker(civitas_bin, tmp_path, "K/operator.pub", "--tls-cert", "server.pem", "--tls-key", "server.key",
                                "--client-ca", "city-ca.pem")
    try:
        def civitas(*args, cert=None, key=None):
            extra = ["--ca-file", "city-ca.pem"]
            if cert:
                extra += ["--client-cert", cert, "--client-key", key]
            return subprocess.run([civitas_bin, *args, "--broker", url, *extra], cwd=tmp_path, capture_output=True, text=True, timeout=60)

        added = civitas("participants", "add", "--key", "K/operator.secret", "--role", "agency", "K/agency.pub",
                        cert="operator.crt", key="K/operator.key.pem")
        assert added.returncode == 0, added.stderr
        civitas("participants", "add", "--key", "K/operator.secret", "--role", "partner", "K/partner.pub",
                cert="operator.crt", key="K/operator.key.pem")
        listed = civitas("participants", "list", "--key", "K/agency.secret", cert="agency.crt", key="K/agency.key.pem")
        assert listed.returncode == 0 and "agency" in listed.stdout, listed.stderr

        # No certificate: the handshake is refused.
        bare = civitas("participants", "list", "--key", "K/agency.secret")
        assert bare.returncode != 0 and "cannot reach the broker" in bare.stderr, bare.stderr
        # A certificate from another authority: refused.
        foreign = civitas("participants", "list", "--key", "K/partner.secret", cert="partner.crt", key="K/partner.key.pem")
        assert foreign.returncode != 0, foreign.stderr
        # The city's certificate of one participant, with a request signed by another: refused, and said so.
        borrowed = civitas("participants", "list", "--key", "K/agency.secret", cert="operator.crt", key="K/operator.key.pem")
        assert borrowed.returncode != 0 and "client certificate is for another key" in borrowed.stderr, borrowed.stderr
    finally:
        process.terminate()
        process.wait(timeout=10)
