"""An independent implementation of the Civitas key-file and envelope formats,
written from docs/envelope-format.md and Keys/README.md on top of PyNaCl
(its own bundled libsodium) and the rfc8785 package. The test suite uses it
as an oracle: it must agree with the Swift implementation byte for byte."""

import base64
import hashlib
import json
import struct

import nacl.bindings as sodium
import nacl.pwhash
import nacl.signing
import nacl.public
import rfc8785

MAGIC = b"civenv1\n"
FORMAT = "civitas-envelope/1"
SIGNATURE_CONTEXT = b"civitas-envelope/1 manifest\n"
SEALED_KEY_LENGTH = 32 + 48
HEADER_LENGTH = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
TAG_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL


class Rejected(Exception):
    """The oracle refused an envelope or key file."""


def key_id(ed25519_public: bytes, x25519_public: bytes) -> str:
    return hashlib.sha256(b"civitas-key-id/1\x00" + ed25519_public + x25519_public).digest()[:16].hex()


def b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def read_public(path):
    fields = open(path, "rb").read().decode().rstrip("\n").split(" ")
    if len(fields) != 5 or fields[0] != "civitas-public-key/1":
        raise Rejected("not a public key file")
    ed = b64(fields[3].removeprefix("ed25519:"))
    x = b64(fields[4].removeprefix("x25519:"))
    if key_id(ed, x) != fields[2]:
        raise Rejected("key id mismatch")
    return {"name": fields[1], "key_id": fields[2], "ed25519": ed, "x25519": x}


def read_secret(path, passphrase: bytes | None = None):
    line = open(path, "rb").read().decode().rstrip("\n")
    fields = line.split(" ")
    if fields[0] != "civitas-secret-key/1":
        raise Rejected("not a secret key file")
    if fields[3] == "plain":
        material = b64(fields[4])
    elif fields[3] == "argon2id":
        ops, mem = int(fields[4]), int(fields[5])
        salt = b64(fields[6])
        sealed = b64(fields[7])
        key = nacl.pwhash.argon2id.kdf(32, passphrase, salt, opslimit=ops, memlimit=mem)
        associated = " ".join(fields[:7]).encode()
        nonce, ciphertext = sealed[:24], sealed[24:]
        material = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, associated, nonce, key)
    else:
        raise Rejected("unknown protection")
    assert len(material) == 64
    signing = nacl.signing.SigningKey(material[:32])
    box = nacl.public.PrivateKey(material[32:])
    ed_pub = bytes(signing.verify_key)
    x_pub = bytes(box.public_key)
    if key_id(ed_pub, x_pub) != fields[2]:
        raise Rejected("key id mismatch")
    return {"name": fields[1], "key_id": fields[2], "signing": signing, "box": box,
            "ed25519": ed_pub, "x25519": x_pub}


def chunk_count(payload_length: int, chunk_size: int) -> int:
    return 1 if payload_length == 0 else -(-payload_length // chunk_size)


def associated_data(manifest) -> bytes:
    return (f"{FORMAT} issuer={manifest['issuer']} recipient={manifest['recipient']} "
            f"payload_length={manifest['payload_length']} chunk_size={manifest['chunk_size']}").encode()


def split(envelope: bytes):
    """Splits an envelope into its parts, checking only framing."""
    if envelope[:8] != MAGIC:
        raise Rejected("bad magic")
    if len(envelope) < 12:
        raise Rejected("truncated header")
    (length,) = struct.unpack(">I", envelope[8:12])
    manifest_bytes = envelope[12:12 + length]
    signature = envelope[12 + length:12 + length + 64]
    if len(manifest_bytes) != length or len(signature) != 64:
        raise Rejected("truncated manifest or signature")
    return manifest_bytes, signature, envelope[12 + length + 64:]


def verify(envelope: bytes, issuer) -> dict:
    """The auditor's check: canonical signed manifest, body hash. No decryption."""
    manifest_bytes, signature, body = split(envelope)
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError as error:
        raise Rejected(f"manifest not JSON: {error}")
    if rfc8785.dumps(manifest) != manifest_bytes:
        raise Rejected("manifest not canonical")
    if manifest.get("format") != FORMAT or manifest.get("issuer") != issuer["key_id"]:
        raise Rejected("wrong format or issuer")
    try:
        nacl.signing.VerifyKey(issuer["ed25519"]).verify(SIGNATURE_CONTEXT + manifest_bytes, signature)
    except nacl.exceptions.BadSignatureError:
        raise Rejected("bad signature")
    n = chunk_count(manifest["payload_length"], manifest["chunk_size"])
    expected = SEALED_KEY_LENGTH + HEADER_LENGTH + manifest["payload_length"] + n * ABYTES
    if len(body) != expected:
        raise Rejected(f"body is {len(body)} bytes, expected {expected}")
    if hashlib.sha256(body).hexdigest() != manifest["ciphertext_sha256"]:
        raise Rejected("ciphertext hash mismatch")
    if hashlib.sha256(body[:SEALED_KEY_LENGTH + HEADER_LENGTH]).hexdigest() != manifest["key_commitment"]:
        raise Rejected("key commitment mismatch")
    return manifest


def open_envelope(envelope: bytes, recipient, issuer) -> tuple[dict, bytes]:
    """The recipient's check and decryption."""
    manifest = verify(envelope, issuer)
    if manifest["recipient"] != recipient["key_id"]:
        raise Rejected("wrong recipient")
    _, _, body = split(envelope)
    sealed_key = body[:SEALED_KEY_LENGTH]
    header = body[SEALED_KEY_LENGTH:SEALED_KEY_LENGTH + HEADER_LENGTH]
    try:
        key = nacl.public.SealedBox(recipient["box"]).decrypt(sealed_key)
    except nacl.exceptions.CryptoError:
        raise Rejected("sealed key does not open")
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, header, key)
    ad = associated_data(manifest)
    size, remaining = manifest["chunk_size"], manifest["payload_length"]
    n = chunk_count(remaining, size)
    offset = SEALED_KEY_LENGTH + HEADER_LENGTH
    plain = bytearray()
    for index in range(n):
        length = min(size, remaining)
        chunk = body[offset:offset + length + ABYTES]
        try:
            message, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, chunk, ad)
        except Exception:
            raise Rejected(f"chunk {index + 1} rejected")
        if (tag == TAG_FINAL) != (index == n - 1):
            raise Rejected("final tag misplaced")
        plain += message
        offset += length + ABYTES
        remaining -= length
    if offset != len(body):
        raise Rejected("trailing data")
    return manifest, bytes(plain)


def seal(payload: bytes, issuer, recipient, content_type="text/csv", chunk_size=65536,
         created="2026-11-26T12:00:00Z", metadata=None) -> bytes:
    """Builds an envelope the way docs/envelope-format.md describes, with PyNaCl."""
    key = sodium.crypto_secretstream_xchacha20poly1305_keygen()
    sealed_key = nacl.public.SealedBox(nacl.public.PublicKey(recipient["x25519"])).encrypt(key)
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, key)
    manifest = {
        "format": FORMAT, "issuer": issuer["key_id"], "recipient": recipient["key_id"],
        "content_type": content_type, "payload_length": len(payload), "chunk_size": chunk_size,
        "created": created, "metadata": metadata or {},
    }
    ad = associated_data(manifest)
    n = chunk_count(len(payload), chunk_size)
    body = bytearray(sealed_key + header)
    for index in range(n):
        piece = payload[index * chunk_size:(index + 1) * chunk_size]
        tag = TAG_FINAL if index == n - 1 else TAG_MESSAGE
        body += sodium.crypto_secretstream_xchacha20poly1305_push(state, piece, ad, tag)
    manifest["key_commitment"] = hashlib.sha256(sealed_key + header).hexdigest()
    manifest["ciphertext_sha256"] = hashlib.sha256(body).hexdigest()
    manifest_bytes = rfc8785.dumps(manifest)
    signature = issuer["signing"].sign(SIGNATURE_CONTEXT + manifest_bytes).signature
    return MAGIC + struct.pack(">I", len(manifest_bytes)) + manifest_bytes + signature + bytes(body)
