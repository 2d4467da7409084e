"""The partner's side of a pull done with libsodium directly (PyNaCl): read a stored envelope,
check the signed manifest (canonical JSON, Ed25519 signature, SHA-256 of the ciphertext, key
commitment), open the sealed stream key, pull and authenticate every chunk, and write the
payload to a file, flushed to disk, as `civitas open` does. It reads the envelope with the
test suite's independent implementation of the format (Tests/Oracles/civitas_format.py).

Usage: pull_peer.py ENVELOPE RECIPIENT_SECRET_KEY ISSUER_PUBLIC_KEY OUTPUT
Prints bytes written, seconds and MB/s of envelope as JSON."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "Oracles"))
import civitas_format  # noqa: E402


def main():
    envelope_path, secret, public, output = sys.argv[1:5]
    recipient, issuer = civitas_format.read_secret(secret), civitas_format.read_public(public)
    started = time.perf_counter()
    with open(envelope_path, "rb") as source:
        envelope = source.read()
    _, payload = civitas_format.open_envelope(envelope, recipient, issuer)
    with open(output, "wb") as out:
        out.write(payload)
        out.flush()
        os.fsync(out.fileno())
    seconds = time.perf_counter() - started
    print(json.dumps({"bytes": len(payload), "seconds": round(seconds, 3), "envelope_mb_per_s": round(len(envelope) / seconds / 1e6, 1)}))


if __name__ == "__main__":
    main()
