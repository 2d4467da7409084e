"""An independent reading of Civitas log exports, written from
docs/log-format.md, RFC 9162 and C2SP signed-note / tlog-checkpoint, on top of
hashlib, PyNaCl and the rfc8785 package."""

import base64
import hashlib
import json

import nacl.signing
import rfc8785


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root(leaves: list[bytes]) -> bytes:
    """MTH of RFC 9162 section 2.1.1, by its recursive definition."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def note_key_hash(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + b"\x01" + public_key).digest()[:4]


def sign_checkpoint(origin: str, size: int, root_hash: bytes, signing_key: nacl.signing.SigningKey) -> str:
    body = f"{origin}\n{size}\n{base64.b64encode(root_hash).decode()}\n"
    signature = signing_key.sign(body.encode()).signature
    blob = note_key_hash(origin, bytes(signing_key.verify_key)) + signature
    return body + "\n" + f"\u2014 {origin} {base64.b64encode(blob).decode()}\n"


def verify_checkpoint(note: str, name: str, public_key: bytes):
    body, _, signatures = note.partition("\n\n")
    body += "\n"
    origin, size, root_b64 = body.rstrip("\n").split("\n")[:3]
    key_hash = note_key_hash(name, public_key)
    ok = False
    for line in signatures.rstrip("\n").split("\n"):
        dash, signer, blob = line.split(" ")
        assert dash == "\u2014"
        raw = base64.b64decode(blob)
        if signer == name and raw[:4] == key_hash:
            nacl.signing.VerifyKey(public_key).verify(body.encode(), raw[4:])
            ok = True
    assert ok, "no signature by the expected key"
    return origin, int(size), base64.b64decode(root_b64)


def read_export(path):
    lines = open(path, "rb").read().split(b"\n")
    assert lines[-1] == b""
    header = json.loads(lines[0])
    entries, checkpoints = [], []
    for line in lines[1:-1]:
        if line.startswith(b'{"checkpoint":'):
            checkpoints.append((len(entries), json.loads(line)["checkpoint"]))
        else:
            entries.append(line)
    return header, entries, checkpoints


def write_export(path, header, entries, checkpoints):
    """checkpoints: list of (entries_before, note)."""
    out = [json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()]
    for i, entry in enumerate(entries):
        out.append(entry)
        out += [rfc8785.dumps({"checkpoint": note}) for (at, note) in checkpoints if at == i + 1]
    open(path, "wb").write(b"\n".join(out) + b"\n")


def rechain(entries: list[bytes], start: int) -> list[bytes]:
    """Recomputes every prev link from `start` on, as someone rewriting history would."""
    result = list(entries)
    for i in range(max(start, 1), len(result)):
        entry = json.loads(result[i])
        entry["prev"] = leaf_hash(result[i - 1]).hex()
        result[i] = rfc8785.dumps(entry)
    return result


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2: the root an inclusion proof leads to."""
    assert index < size
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        assert sn != 0, "proof too long"
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    assert sn == 0, "proof too short"
    return r


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 section 2.1.4.2: whether a consistency proof shows the tree of `second` leaves
    (root `second_root`) extends the tree of `first` leaves (root `first_root`)."""
    if first < 1 or first > second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if not proof:
        return False
    if first & (first - 1) == 0:
        proof = [first_root] + proof
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0
