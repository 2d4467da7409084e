"""Bounded mutation fuzzing of the commands that read untrusted files: `civitas verify`,
`open`, `audit` and `anonymize` each run on seeded mutations of a real envelope, log
export and table (from `civitas demo --keep` and Tests/Fuzz/corpus). No run may crash
(a signal, or an exit code other than 0 or 1), and every refusal is one line on stderr."""

import pathlib
import random
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS = ROOT / "Tests" / "Fuzz" / "corpus"
RUNS = 60
INTERESTING = [b'"', b",", b"\n", b"{", b"}", b"[", b"]", b"\x00", b"\\u0000", b"1e999", b"-1", b"18446744073709551616",
               b"9007199254740993", b"\xef\xbb\xbf", b"\xff", b"null", b'"epsilon_micro":9007199254740992', b"[[[[[[[[[[[[[[[["]


def mutate(rng, seed):
    data = bytearray(seed)
    for _ in range(rng.randint(1, 5)):
        at = rng.randrange(len(data) + 1)
        kind = rng.randrange(6)
        if kind == 0 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data[at:at] = rng.choice(INTERESTING)
        elif kind == 2 and data:
            del data[at:at + rng.randint(1, 64)]
        elif kind == 3:
            del data[at:]
        elif kind == 4:
            lines = bytes(data).split(b"\n")
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\n".join(lines))
        else:
            data[at:at] = bytes([rng.randrange(256)])
    return bytes(data)


@pytest.fixture(scope="module")
def seeds(civitas_bin, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    subprocess.run([civitas_bin, "demo", "--keep", str(folder / "demo")], cwd=ROOT, check=True, capture_output=True, timeout=300)
    demo = folder / "demo"
    envelope = sorted(demo.glob("rel-*.envelope"))[0]
    return {"folder": folder, "demo": demo, "envelope": envelope.read_bytes(), "log": (demo / "log-export.jsonl").read_bytes(),
            "broker": demo / "Keys" / "broker.pub", "health": demo / "Keys" / "health.secret"}


def run(civitas_bin, folder, *args):
    result = subprocess.run([civitas_bin, *map(str, args)], cwd=folder, capture_output=True, timeout=60)
    assert result.returncode in (0, 1), f"civitas {args[0]} crashed (exit {result.returncode}): {result.stderr[-300:]!r}"
    lines = [line for line in result.stderr.decode(errors="replace").splitlines() if line.strip()]
    assert len(lines) <= 1, f"civitas {args[0]}: {lines[:3]}"
    return result.returncode


@pytest.mark.parametrize("target", ["verify", "open", "audit", "anonymize"])
def test_mutated_inputs_never_crash(civitas_bin, seeds, target):
    rng = random.Random(f"civitas-fuzz-{target}")
    folder = seeds["folder"]
    refused = 0
    for n in range(RUNS):
        path = folder / f"{target}-{n}"
        if target == "verify":
            path.write_bytes(mutate(rng, seeds["envelope"]))
            refused += run(civitas_bin, folder, "verify", "--issuer", seeds["broker"], path)
        elif target == "open":
            path.write_bytes(mutate(rng, seeds["envelope"]))
            refused += run(civitas_bin, folder, "open", "--key", seeds["health"], "--issuer", seeds["broker"], path, folder / "opened.csv")
        elif target == "audit":
            path.write_bytes(mutate(rng, seeds["log"]))
            refused += run(civitas_bin, folder, "audit", "--broker", seeds["broker"], path)
        else:
            path.write_bytes(mutate(rng, (CORPUS / "table.csv").read_bytes()))
            refused += run(civitas_bin, folder, "anonymize", path, folder / "out.csv", "--qi", "age,zip", "--k", 2,
                           "--hierarchy", "age=intervals:10", "--hierarchy", "zip=mask:1,2", "--max-suppression", "0.5")
    assert refused > 0, "the mutations reached the refusals"
