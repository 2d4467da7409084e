"""The recorded worked example (Tests/Vectors/envelope-v1-example.json) opens
in the oracle and, from key files the oracle writes, in the Civitas CLI."""

import base64
import hashlib
import json
import os
import pathlib

import nacl.public
import nacl.signing

import civitas_format as oracle

VECTOR = json.loads((pathlib.Path(__file__).parents[1] / "Vectors" / "envelope-v1-example.json").read_text())


def example_party(name):
    seed = hashlib.sha256(f"civitas example {name} ed25519".encode()).digest()
    secret = hashlib.sha256(f"civitas example {name} x25519".encode()).digest()
    signing, box = nacl.signing.SigningKey(seed), nacl.public.PrivateKey(secret)
    ed, x = bytes(signing.verify_key), bytes(box.public_key)
    return {"name": name, "key_id": oracle.key_id(ed, x), "signing": signing, "box": box, "ed25519": ed, "x25519": x,
            "material": seed + secret}


def test_oracle_opens_the_example():
    issuer, recipient = example_party("issuer"), example_party("recipient")
    assert issuer["key_id"] == VECTOR["issuer"]["key_id"]
    _, payload = oracle.open_envelope(bytes.fromhex(VECTOR["envelope_hex"]), recipient, issuer)
    assert payload.decode() == VECTOR["payload_utf8"]


def test_cli_opens_the_example_with_key_files_written_by_the_oracle(cli, tmp_path):
    issuer, recipient = example_party("issuer"), example_party("recipient")
    b64 = lambda data: base64.b64encode(data).decode()
    (tmp_path / "issuer.pub").write_text(
        f"civitas-public-key/1 issuer {issuer['key_id']} ed25519:{b64(issuer['ed25519'])} x25519:{b64(issuer['x25519'])}\n")
    secret = tmp_path / "recipient.secret"
    secret.write_text(f"civitas-secret-key/1 recipient {recipient['key_id']} plain {b64(recipient['material'])}\n")
    os.chmod(secret, 0o600)
    (tmp_path / "example.env").write_bytes(bytes.fromhex(VECTOR["envelope_hex"]))
    cli.run("verify", "--issuer", "issuer.pub", "example.env")
    cli.run("open", "--key", "recipient.secret", "--issuer", "issuer.pub", "example.env", "example.csv")
    assert (tmp_path / "example.csv").read_text() == VECTOR["payload_utf8"]
