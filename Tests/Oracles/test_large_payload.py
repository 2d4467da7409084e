"""Sealing and opening 256 MiB through the CLI keeps memory flat: each
process's peak RSS grows by less than 64 MiB over the same command on a
1-byte payload."""

import hashlib
import subprocess
import sys

SIZE = 256 << 20
LIMIT = 64 << 20

MEASURE = (
    "import resource, subprocess, sys\n"
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
)


def peak_rss(args, cwd):
    """Peak RSS in bytes of one command, measured in a fresh parent so nothing else counts."""
    out = subprocess.run([sys.executable, "-c", MEASURE, *map(str, args)], cwd=cwd, check=True,
                         capture_output=True, timeout=600)
    return int(out.stdout.decode().split()[-1])


def test_256_mib_round_trip_keeps_rss_flat(cli, tmp_path):
    cli.run("keys", "generate", "--name", "agency", "--dir", "Keys")
    cli.run("keys", "generate", "--name", "partner", "--dir", "Keys")
    block = bytes(range(256)) * 4096  # 1 MiB
    digest = hashlib.sha256()
    with open(tmp_path / "big.bin", "wb") as f:
        for i in range(SIZE // len(block)):
            piece = block[i % 256:] + block[:i % 256]
            f.write(piece)
            digest.update(piece)
    (tmp_path / "small.bin").write_bytes(b"x")

    seal = [cli.binary, "seal", "--from", "Keys/agency.secret", "--to", "Keys/partner.pub"]
    opener = [cli.binary, "open", "--key", "Keys/partner.secret", "--issuer", "Keys/agency.pub"]
    small_seal = peak_rss(seal + ["small.bin", "small.env"], tmp_path)
    big_seal = peak_rss(seal + ["big.bin", "big.env"], tmp_path)
    small_open = peak_rss(opener + ["small.env", "small.out"], tmp_path)
    big_open = peak_rss(opener + ["big.env", "big.out"], tmp_path)

    assert big_seal - small_seal < LIMIT, f"seal grew RSS by {(big_seal - small_seal) >> 20} MiB"
    assert big_open - small_open < LIMIT, f"open grew RSS by {(big_open - small_open) >> 20} MiB"
    check = hashlib.sha256()
    with open(tmp_path / "big.out", "rb") as f:
        while chunk := f.read(1 << 20):
            check.update(chunk)
    assert check.digest() == digest.digest()
    print(f"RSS growth: seal {(big_seal - small_seal) / 2**20:.1f} MiB, open {(big_open - small_open) / 2**20:.1f} MiB")
