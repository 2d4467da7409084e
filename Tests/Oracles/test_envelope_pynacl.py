"""PyNaCl (with its own libsodium) and the rfc8785 package check Civitas
envelopes and key files, and Civitas opens envelopes PyNaCl built."""

import json
import os
import stat
import struct

import pathlib

import jsonschema
import pytest

import civitas_format as oracle

MANIFEST_SCHEMA = json.loads(
    (pathlib.Path(__file__).parents[2] / "Schemas" / "envelope-manifest.schema.json").read_text())


@pytest.fixture
def parties(cli, tmp_path):
    cli.run("keys", "generate", "--name", "agency", "--dir", "Keys")
    cli.run("keys", "generate", "--name", "partner", "--dir", "Keys")
    cli.run("keys", "generate", "--name", "stranger", "--dir", "Keys")
    keys = tmp_path / "Keys"
    return {
        name: {"pub": keys / f"{name}.pub", "secret": keys / f"{name}.secret",
               "public": oracle.read_public(keys / f"{name}.pub"),
               "private": oracle.read_secret(keys / f"{name}.secret")}
        for name in ("agency", "partner", "stranger")
    }


def payload(size):
    return bytes((i * 31 + 7) % 256 for i in range(size))


def civitas_seal(cli, parties, tmp_path, data, *extra):
    (tmp_path / "in.bin").write_bytes(data)
    cli.run("seal", "--from", parties["agency"]["secret"], "--to", parties["partner"]["pub"],
            "--content-type", "text/csv", *extra, "in.bin", "out.env")
    return (tmp_path / "out.env").read_bytes()


# --- key files --------------------------------------------------------------

def test_key_files_agree_with_pynacl(parties):
    for party in parties.values():
        public, private = party["public"], party["private"]
        assert private["ed25519"] == public["ed25519"]
        assert private["x25519"] == public["x25519"]
        assert private["key_id"] == public["key_id"] == oracle.key_id(public["ed25519"], public["x25519"])
        message = b"civitas key check"
        signed = private["signing"].sign(message)
        from nacl.signing import VerifyKey
        VerifyKey(public["ed25519"]).verify(signed)


def test_secret_files_are_0600_and_never_overwritten(cli, parties):
    mode = stat.S_IMODE(os.stat(parties["agency"]["secret"]).st_mode)
    assert mode == 0o600
    line = cli.fails("keys", "generate", "--name", "agency", "--dir", "Keys")
    assert "already exists" in line
    cli.run("keys", "generate", "--name", "agency", "--dir", "Keys", "--force")


def test_passphrase_protected_file_opens_in_pynacl_and_cli(cli, tmp_path):
    env = {"CIVITAS_TEST_PASSPHRASE": "a long city passphrase"}
    cli.run("keys", "generate", "--name", "locked", "--dir", "Keys", "--passphrase-env", "CIVITAS_TEST_PASSPHRASE",
            "--passphrase-cost", "interactive", env=env)
    secret_path = tmp_path / "Keys" / "locked.secret"
    assert " argon2id " in secret_path.read_text()
    opened = oracle.read_secret(secret_path, passphrase=b"a long city passphrase")
    assert opened["key_id"] == oracle.read_public(tmp_path / "Keys" / "locked.pub")["key_id"]
    cli.run("keys", "generate", "--name", "peer", "--dir", "Keys")
    (tmp_path / "m.txt").write_bytes(b"hello")
    (tmp_path / "pass.txt").write_text("a long city passphrase\n")
    cli.run("seal", "--from", "Keys/locked.secret", "--to", "Keys/peer.pub", "--passphrase-file", "pass.txt", "m.txt", "m.env")
    (tmp_path / "wrong.txt").write_text("not it\n")
    line = cli.fails("seal", "--from", "Keys/locked.secret", "--to", "Keys/peer.pub", "--passphrase-file", "wrong.txt", "m.txt", "m2.env")
    assert "wrong passphrase" in line
    line = cli.fails("seal", "--from", "Keys/locked.secret", "--to", "Keys/peer.pub", "m.txt", "m2.env")
    assert "passphrase-protected" in line
    assert not (tmp_path / "m2.env").exists()


def test_truncated_and_wrong_kind_key_files_give_one_line(cli, parties, tmp_path):
    text = parties["agency"]["secret"].read_bytes()
    (tmp_path / "cut.secret").write_bytes(text[: len(text) // 2])
    os.chmod(tmp_path / "cut.secret", 0o600)
    (tmp_path / "x").write_bytes(b"x")
    assert "truncated" in cli.fails("seal", "--from", "cut.secret", "--to", parties["partner"]["pub"], "x", "y")
    assert "public key file" in cli.fails("seal", "--from", parties["agency"]["pub"], "--to", parties["partner"]["pub"], "x", "y")
    assert "secret key file" in cli.fails("seal", "--from", parties["agency"]["secret"], "--to", parties["partner"]["secret"], "x", "y")
    assert "wrong passphrase" not in cli.fails("open", "--key", "x", "--issuer", parties["agency"]["pub"], "x", "y")


# --- Civitas seals, PyNaCl checks and opens -----------------------------------

@pytest.mark.parametrize("size,chunk", [(0, 65536), (1, 65536), (65535, 65536), (65536, 65536),
                                        (65537, 65536), (300_000, 65536), (5000, 1024)])
def test_pynacl_verifies_and_opens_civitas_envelope(cli, parties, tmp_path, size, chunk):
    data = payload(size)
    envelope = civitas_seal(cli, parties, tmp_path, data, "--chunk-size", str(chunk))
    manifest = oracle.verify(envelope, parties["agency"]["public"])
    assert manifest["payload_length"] == size and manifest["chunk_size"] == chunk
    jsonschema.validate(manifest, MANIFEST_SCHEMA)
    _, opened = oracle.open_envelope(envelope, parties["partner"]["private"], parties["agency"]["public"])
    assert opened == data


def test_manifest_is_rfc8785_canonical_with_awkward_metadata(cli, parties, tmp_path):
    metadata = '{"z":1e21,"a":0.000001,"m":[333333333.33333329,-0.0,1E30],"s":"\\u20ac\\u000f\\n\\ud83d\\ude00","n":null}'
    envelope = civitas_seal(cli, parties, tmp_path, b"x", "--metadata", metadata)
    manifest_bytes, _, _ = oracle.split(envelope)
    assert oracle.rfc8785.dumps(json.loads(manifest_bytes)) == manifest_bytes
    assert b'"a":0.000001' in manifest_bytes and b'"z":1e+21' in manifest_bytes


# --- PyNaCl seals, Civitas checks and opens -----------------------------------

@pytest.mark.parametrize("size,chunk", [(0, 65536), (70_000, 65536), (4096, 1024)])
def test_civitas_opens_pynacl_envelope(cli, parties, tmp_path, size, chunk):
    data = payload(size)
    envelope = oracle.seal(data, parties["agency"]["private"], parties["partner"]["public"], chunk_size=chunk,
                           metadata={"agreement": "ag-1", "epsilon": 0.5})
    (tmp_path / "py.env").write_bytes(envelope)
    out = cli.run("verify", "--issuer", parties["agency"]["pub"], "py.env").stdout.decode()
    assert out.startswith("envelope OK")
    cli.run("open", "--key", parties["partner"]["secret"], "--issuer", parties["agency"]["pub"], "py.env", "py.out")
    assert (tmp_path / "py.out").read_bytes() == data
    assert stat.S_IMODE(os.stat(tmp_path / "py.out").st_mode) == 0o600


# --- mutations: each must be refused by both implementations -------------------

def layout(envelope):
    (length,) = struct.unpack(">I", envelope[8:12])
    manifest = json.loads(envelope[12:12 + length])
    sig = 12 + length
    key = sig + 64
    header = key + oracle.SEALED_KEY_LENGTH
    starts, offset, remaining = [], header + oracle.HEADER_LENGTH, manifest["payload_length"]
    for _ in range(oracle.chunk_count(remaining, manifest["chunk_size"])):
        starts.append(offset)
        piece = min(manifest["chunk_size"], remaining)
        offset += piece + oracle.ABYTES
        remaining -= piece
    return {"sig": sig, "key": key, "header": header, "chunks": starts, "end": offset}


def flip(data, position, bit=0):
    mutated = bytearray(data)
    mutated[position] ^= 1 << bit
    return bytes(mutated)


def mutations(envelope, other):
    """Named mutations of a four-chunk envelope; `other` is a second envelope of the same shape."""
    lay = layout(envelope)
    chunks = [envelope[s:e] for s, e in zip(lay["chunks"], lay["chunks"][1:] + [lay["end"]])]
    head = envelope[:lay["chunks"][0]]
    found = {
        "flip magic": flip(envelope, 0),
        "flip manifest length": flip(envelope, 11),
        "flip manifest first byte": flip(envelope, 12),
        "flip manifest middle": flip(envelope, (12 + lay["sig"]) // 2),
        "flip signature": flip(envelope, lay["sig"] + 10),
        "flip sealed key": flip(envelope, lay["key"] + 5),
        "flip stream header": flip(envelope, lay["header"] + 3),
        "truncate in manifest": envelope[:20],
        "truncate in sealed key": envelope[:lay["key"] + 10],
        "truncate at chunk boundary": envelope[:lay["chunks"][2]],
        "truncate last byte": envelope[:-1],
        "extend by a byte": envelope + b"\x00",
        "drop chunk 2": head + chunks[0] + chunks[2] + chunks[3],
        "drop final chunk": head + b"".join(chunks[:3]),
        "reorder chunks 1 and 2": head + chunks[1] + chunks[0] + chunks[2] + chunks[3],
        "duplicate chunk 1": head + chunks[0] + chunks[0] + chunks[2] + chunks[3],
        "swapped manifest": other[:layout(other)["key"]] + envelope[lay["key"]:],
    }
    for index, start in enumerate(lay["chunks"]):
        found[f"flip chunk {index + 1} encrypted tag byte"] = flip(envelope, start)
        found[f"flip chunk {index + 1} message"] = flip(envelope, start + 1, 7)
        found[f"flip chunk {index + 1} MAC"] = flip(envelope, start + 20)
    found["flip last byte"] = flip(envelope, len(envelope) - 1, 7)
    return found


def test_every_mutation_is_rejected_by_pynacl_and_civitas(cli, parties, tmp_path):
    data = payload(4 * 1024 - 100)
    envelope = civitas_seal(cli, parties, tmp_path, data, "--chunk-size", "1024")
    other = civitas_seal(cli, parties, tmp_path, bytes(reversed(data)), "--chunk-size", "1024")
    assert len(layout(envelope)["chunks"]) == 4
    agency, partner = parties["agency"], parties["partner"]
    for name, mutated in mutations(envelope, other).items():
        assert mutated != envelope, name
        with pytest.raises(Exception):
            oracle.open_envelope(mutated, partner["private"], agency["public"])
        (tmp_path / "m.env").write_bytes(mutated)
        cli.fails("open", "--key", partner["secret"], "--issuer", agency["pub"], "m.env", "m.out")
        assert not (tmp_path / "m.out").exists(), f"{name}: a refused envelope left a payload file"
        cli.fails("verify", "--issuer", agency["pub"], "m.env")
        # Streaming to standard output also ends non-zero.
        result = cli.run("open", "--key", partner["secret"], "--issuer", agency["pub"], "-", "-",
                         input=mutated, check=False)
        assert result.returncode != 0, name


def test_pynacl_sealed_mutations_rejected_by_civitas(cli, parties, tmp_path):
    data = payload(4 * 1024 - 100)
    agency, partner = parties["agency"], parties["partner"]
    envelope = oracle.seal(data, agency["private"], partner["public"], chunk_size=1024)
    other = oracle.seal(bytes(reversed(data)), agency["private"], partner["public"], chunk_size=1024)
    for name, mutated in mutations(envelope, other).items():
        (tmp_path / "m.env").write_bytes(mutated)
        cli.fails("open", "--key", partner["secret"], "--issuer", agency["pub"], "m.env", "m.out")
        cli.fails("verify", "--issuer", agency["pub"], "m.env")


def test_wrong_recipient_and_issuer_are_named(cli, parties, tmp_path):
    envelope = civitas_seal(cli, parties, tmp_path, b"payload")
    assert "addressed to" in cli.fails("open", "--key", parties["stranger"]["secret"], "--issuer", parties["agency"]["pub"], "out.env", "o")
    assert "issued by" in cli.fails("open", "--key", parties["partner"]["secret"], "--issuer", parties["stranger"]["pub"], "out.env", "o")
    assert "issued by" in cli.fails("verify", "--issuer", parties["stranger"]["pub"], "out.env")
    with pytest.raises(oracle.Rejected):
        oracle.open_envelope(envelope, parties["stranger"]["private"], parties["agency"]["public"])


def test_stolen_ciphertext_resigned_by_a_stranger_does_not_open(cli, parties, tmp_path):
    """A stranger copies an envelope's ciphertext under a manifest it signs itself."""
    envelope = civitas_seal(cli, parties, tmp_path, payload(3000), "--chunk-size", "1024")
    manifest_bytes, _, body = oracle.split(envelope)
    manifest = json.loads(manifest_bytes)
    manifest["issuer"] = parties["stranger"]["public"]["key_id"]
    forged_bytes = oracle.rfc8785.dumps(manifest)
    signature = parties["stranger"]["private"]["signing"].sign(oracle.SIGNATURE_CONTEXT + forged_bytes).signature
    forged = oracle.MAGIC + struct.pack(">I", len(forged_bytes)) + forged_bytes + signature + body
    (tmp_path / "forged.env").write_bytes(forged)
    # The stranger's signature and hash are internally consistent...
    cli.run("verify", "--issuer", parties["stranger"]["pub"], "forged.env")
    # ...but the chunks are bound to the real issuer, so neither implementation opens it.
    line = cli.fails("open", "--key", parties["partner"]["secret"], "--issuer", parties["stranger"]["pub"], "forged.env", "o")
    assert "chunk 1" in line
    with pytest.raises(oracle.Rejected):
        oracle.open_envelope(forged, parties["partner"]["private"], parties["stranger"]["public"])
