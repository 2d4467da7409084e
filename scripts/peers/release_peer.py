"""The release stage of a Python pipeline, doing what the broker does for one release of the
exchange benchmark's generated 911 calls: read the records (pandas), keep the callers with an
active consent (their keyed hashes looked up in SQLite), project the agreement's fields, replace
the caller by a keyed pseudonym (hmac), search the lattice of full-domain generalizations of lat,
lng, zip, timeStamp and twp for the least-discernibility node meeting k counted in callers with
the callers' linked records protected (the broker's search: same lattice, same order of checks,
same tie-breaks), suppress what that node leaves below k, write the CSV, seal it for the partner
(crypto_box_seal of a secretstream key, SHA-256 of the ciphertext, an Ed25519-signed manifest,
PyNaCl) and commit a log entry and the envelope to SQLite.

Usage: release_peer.py RECORDS_CSV CONSENTING_CALLERS WORK_DIR K SUPPRESSION_LIMIT
Prints one JSON object: records released, k reached, the chosen levels, the seconds of each
stage and of the whole, peak RSS, and a digest of the released rows with each pseudonym
replaced by the order of its first appearance (so two pipelines with different keys can be
compared row for row)."""

import hashlib
import hmac
import json
import os
import resource
import sqlite3
import sys
import time

import nacl.bindings as sodium
import nacl.signing
import numpy as np
import pandas as pd

QUASI_IDENTIFIERS = ["lat", "lng", "zip", "timeStamp", "twp"]
SENSITIVE = "title"
KEPT = ["caller", "e"]
FIELDS = ["caller", "lat", "lng", "zip", "title", "timeStamp", "twp", "e"]
CHUNK = 1 << 20


def distinct(values):
    """The distinct values, sorted (a sort and a comparison: faster here than np.unique's hashing)."""
    ordered = np.sort(values)
    return ordered[np.r_[True, ordered[1:] != ordered[:-1]]] if len(ordered) else ordered


def counted(values):
    """The distinct values, sorted, and how often each occurs."""
    ordered = np.sort(values)
    if not len(ordered):
        return ordered, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    return ordered[starts], np.diff(np.r_[starts, len(ordered)])


def truncate_decimals(values, digits):
    """Each decimal rounded toward negative infinity to `digits` fraction digits, on the text
    (negative values that lose digits step away from zero; exact ones keep their text)."""
    whole, _, fraction = values.str.partition(".").T.values
    whole, fraction = pd.Series(whole, dtype=object), pd.Series(fraction, dtype=object)
    kept = fraction.str[:digits].str.ljust(digits, "0")
    exact = fraction.str[digits:].str.strip("0") == ""
    result = whole if digits == 0 else whole + "." + kept
    result = result.where(values != "", values)
    step = (~exact) & whole.str.startswith("-") & (values != "")
    if step.any():
        magnitude = (whole[step].str[1:] + kept[step])
        widths = magnitude.str.len()
        stepped = (magnitude.astype(np.int64) + 1).astype(str)
        for width in distinct(widths.to_numpy()):
            same = widths == width
            stepped[same] = stepped[same].str.zfill(int(width))
        integer = stepped.str[: -digits] if digits else stepped
        result[step] = "-" + (integer if digits == 0 else integer + "." + stepped.str[-digits:])
    return result


def geo_labels(values):
    return [values] + [truncate_decimals(values, d) for d in (3, 2, 1, 0)] + [pd.Series("*", index=values.index)]


def mask_labels(values):
    core = values.where(~(values.str.endswith(".0") & (values.str[:-2].str.isdigit() | (values == ".0"))), values.str[:-2])
    lengths, labels, masked = core.str.len(), [values], 0
    for step in (1, 1, 1):
        masked = np.minimum(lengths, masked + step)
        labels.append(pd.Series([c[: len(c) - m] + "*" * m for c, m in zip(core, masked)], index=values.index, dtype=object))
    return labels + [pd.Series("*", index=values.index)]


def date_labels(values):
    text = values.str.replace("T", " ", regex=False)
    return [values] + [text.str[:n] for n in (13, 10, 7, 4)] + [pd.Series("*", index=values.index)]


def suppress_labels(values):
    return [values, pd.Series("*", index=values.index)]


def geo_keys(values):
    """Per level above the value, an integer per value that is equal exactly when the labels are:
    the decimal scaled to whole units of the level's last digit, rounded down."""
    empty = values == ""
    text = values.where(~empty, "0")
    point = text.str.find(".")
    fraction = np.where(point >= 0, text.str.len() - point - 1, 0)
    scale = int(fraction.max()) if len(fraction) else 0
    units = text.str.replace(".", "", regex=False).astype(np.int64).to_numpy() * 10 ** (scale - fraction)
    keys = [units // 10 ** (scale - d) if d < scale else units * 10 ** (d - scale) for d in (3, 2, 1, 0)]
    return [np.where(empty, np.iinfo(np.int64).min, key) for key in keys]


def mask_keys(values):
    return [pd.factorize(labels.to_numpy(dtype=object))[0] for labels in mask_labels(values)[1:-1]]


def date_keys(values):
    """Timestamps `YYYY-MM-DD HH:MM:SS` as the number YYYYMMDDHH… truncated per unit (the schema's pattern)."""
    digits = values.str.replace(r"[^0-9]", "", regex=True).str[:14].astype(np.int64).to_numpy()
    return [digits // 10 ** n for n in (4, 6, 8, 10)]


def suppress_keys(values):
    return []


HIERARCHIES = {"lat": (geo_labels, geo_keys), "lng": (geo_labels, geo_keys), "zip": (mask_labels, mask_keys),
               "timeStamp": (date_labels, date_keys), "twp": (suppress_labels, suppress_keys)}


class Encoded:
    """Per quasi-identifier and level, a code per record and the label of each code. Codes come
    from integers that partition the values as the labels do; labels are written only for the
    level released."""

    def __init__(self, frame):
        self.codes, self.sizes, self.representatives, self.values = [], [], [], []
        for name in QUASI_IDENTIFIERS:
            leaf, values = pd.factorize(frame[name].to_numpy(dtype=object), sort=False)
            values = pd.Series(values, dtype=object)
            levels, sizes, representatives = [leaf.astype(np.int64)], [len(values)], [np.arange(len(values))]
            for key in HIERARCHIES[name][1](values):
                code_of_value, uniques = pd.factorize(key)
                first = np.zeros(len(uniques), dtype=np.int64)
                first[code_of_value[::-1]] = np.arange(len(values))[::-1]
                levels.append(code_of_value.astype(np.int64)[leaf])
                sizes.append(len(uniques))
                representatives.append(first)
            levels.append(np.zeros(len(leaf), dtype=np.int64))
            sizes.append(1)
            representatives.append(np.zeros(1, dtype=np.int64))
            self.codes.append(levels)
            self.sizes.append(sizes)
            self.representatives.append(representatives)
            self.values.append(values)
        self.heights = [len(levels) for levels in self.codes]
        self.subject, subjects = pd.factorize(frame["caller"].to_numpy(dtype=object))
        self.subject = self.subject.astype(np.int64)
        self.subject_count = len(subjects)

    def labels(self, q, level):
        """The label of each code of quasi-identifier q at `level`."""
        representatives = self.values[q][self.representatives[q][level]].reset_index(drop=True)
        return HIERARCHIES[QUASI_IDENTIFIERS[q]][0](representatives)[level].to_numpy(dtype=object)

    def classes(self, levels):
        key = np.zeros(len(self.subject), dtype=np.int64)
        span = 1
        for q, level in enumerate(levels):
            size = self.sizes[q][level]
            if span * size >= 1 << 62:
                key, uniques = pd.factorize(key)
                key, span = key.astype(np.int64), len(uniques)
            key = key * size + self.codes[q][level]
            span *= size
        classes, uniques = pd.factorize(key)
        return classes.astype(np.int64), len(uniques)


def subject_classes(classes, count, subject, keep=None):
    """The distinct (subject, class) pairs, ordered by subject then class."""
    pairs = subject * count + classes if keep is None else subject[keep] * count + classes[keep]
    pairs = distinct(pairs)
    return pairs // count, pairs % count


def class_sets(subj, cls, count, multi_only):
    """Per group of subjects with the same set of classes: a representative row of the set, the
    set's length and the subjects holding it (one entry per subject)."""
    starts = np.flatnonzero(np.r_[True, subj[1:] != subj[:-1]]) if len(subj) else np.zeros(0, dtype=np.int64)
    lengths = np.diff(np.r_[starts, len(subj)])
    for length in distinct(lengths):
        if multi_only and length < 2:
            continue
        rows = starts[lengths == length]
        sets = cls[rows[:, None] + np.arange(length)]
        if float(count) ** length < 2.0 ** 62:
            key = np.zeros(len(rows), dtype=np.int64)
            for column in range(length):
                key = key * count + sets[:, column]
            unique_keys, counts = counted(key)
            group = np.searchsorted(unique_keys, key)
            first = np.zeros(len(unique_keys), dtype=np.int64)
            first[group[::-1]] = np.arange(len(rows))[::-1]
            yield sets[first], counts, counts[group], subj[rows]
        else:
            unique_sets, inverse, counts = np.unique(sets, axis=0, return_inverse=True, return_counts=True)
            yield unique_sets, counts, counts[inverse.reshape(-1)], subj[rows]


def evaluate(encoded, levels, k):
    """Subjects the node would suppress (classes below k, then callers whose linked records fall
    into a set of classes shared by fewer than k), and the kept classes' squared sizes."""
    classes, count = encoded.classes(levels)
    subj, cls = subject_classes(classes, count, encoded.subject)
    sizes = np.bincount(cls, minlength=count)
    kept = sizes >= k
    suppressed = int(sizes[~kept].sum())
    squares = float((sizes[kept].astype(np.float64) ** 2).sum())
    per_subject = np.bincount(subj, minlength=encoded.subject_count)
    multi = per_subject[subj] > 1
    linked_into = np.bincount(cls[multi], minlength=count)
    alone = sizes - linked_into
    suppressed += int(alone[kept & (linked_into > 0) & (alone > 0) & (alone < k)].sum())
    for sets, counts, _, _ in class_sets(subj, cls, count, multi_only=True):
        suppressed += int(counts[(counts < k) & kept[sets].all(axis=1)].sum())
    return suppressed, squares, classes, kept, count, int(sizes.sum())


class Lattice:
    def __init__(self, heights):
        self.heights, self.strides, size = heights, [], 1
        for h in heights:
            self.strides.append(size)
            size *= h
        self.size = size
        sums, self.precision = [], []
        for node in range(size):
            rest, total, fraction = node, 0, 0.0
            for h in heights:
                level = rest % h
                rest //= h
                total += level
                fraction += level / (h - 1) if h > 1 else 0
            sums.append(total)
            self.precision.append(fraction / len(heights))
        self.bottom_up = sorted(range(size), key=lambda n: (sums[n], n))

    def levels(self, node):
        out = []
        for h in self.heights:
            out.append(node % h)
            node //= h
        return out

    def successors(self, node):
        return [node + s for s, h in zip(self.strides, self.heights) if (node // s) % h < h - 1]

    def predecessors(self, node):
        return [node - s for s, h in zip(self.strides, self.heights) if (node // s) % h > 0]

    def tag(self, node, tag, tags, step):
        stack = [node]
        while stack:
            current = stack.pop()
            if tags[current] == tag:
                continue
            tags[current] = tag
            stack += [n for n in step(current) if tags[n] != tag]


def search(encoded, k, limit, excluding):
    lattice = Lattice(encoded.heights)
    max_suppressed = int(limit * encoded.subject_count)
    tags, suppressed, scores = [0] * lattice.size, [-1] * lattice.size, [None] * lattice.size
    n = float(encoded.subject_count)
    checked = 0
    checked_levels, checked_classes = [], []
    feasible_levels, feasible_incidences = [], []

    def canonical(node):
        """The node at each column's lowest level with as many labels (the same classes)."""
        result = node
        for q, level in enumerate(lattice.levels(node)):
            lowest = level
            while lowest > 0 and encoded.sizes[q][lowest - 1] == encoded.sizes[q][level]:
                lowest -= 1
            result -= (level - lowest) * lattice.strides[q]
        return result

    outcomes = {}

    def check(node):
        nonlocal checked
        levels = lattice.levels(node)
        canonical_node = canonical(node)
        if canonical_node not in outcomes:
            s, squares, _, _, count, incidences = evaluate(encoded, lattice.levels(canonical_node), k)
            outcomes[canonical_node] = (s, squares, count, incidences)
            checked += 1
        s, squares, count, incidences = outcomes[canonical_node]
        checked_levels.append(levels)
        checked_classes.append(count)
        if s <= max_suppressed:
            feasible_levels.append(levels)
            feasible_incidences.append(incidences)
        suppressed[node], scores[node] = s, squares + s * n
        feasible = s <= max_suppressed
        if feasible:
            lattice.tag(node, 1, tags, lattice.successors)
        else:
            lattice.tag(node, 2, tags, lattice.predecessors)
        return feasible

    for start in lattice.bottom_up:
        if tags[start] != 0:
            continue
        path = [start]
        while True:
            nxt = next((s for s in lattice.successors(path[-1]) if tags[s] == 0), None)
            if nxt is None:
                break
            path.append(nxt)
        low, high = 0, len(path) - 1
        while low <= high:
            middle = (low + high) // 2
            node = path[middle]
            feasible = check(node) if tags[node] == 0 else tags[node] == 1
            if feasible:
                high = middle - 1
            else:
                low = middle + 1
    def score_bound(node):
        """Discernibility's least value for a node of at most as many classes as its labels allow
        and as any checked node below it has, and at least as many callers counted once per class
        as any feasible checked node above it has (the broker's bound)."""
        levels = lattice.levels(node)
        classes = 1.0
        for q, level in enumerate(levels):
            classes *= float(max(encoded.sizes[q][level], 1))
        for finer, count in zip(checked_levels, checked_classes):
            if float(count) < classes and all(a <= b for a, b in zip(finer, levels)):
                classes = float(count)
        classes = max(classes, 1.0)
        t = n
        for coarser, incidences in zip(feasible_levels, feasible_incidences):
            if float(incidences) > t and all(a <= b for a, b in zip(levels, coarser)):
                t = float(incidences)
        s = min(max(t - classes * n / 2, 0.0), float(max_suppressed))
        kept = max(t - s, 0.0)
        return kept * kept / classes + s * n

    def beyond(bound, best):
        return best is not None and bound > best[1] * (1 + 1e-9)

    candidates = [n for n in range(lattice.size) if tags[n] == 1]
    bounds = {node: score_bound(node) for node in candidates}
    best = None
    for node in sorted(candidates, key=lambda n: (bounds[n], lattice.precision[n], n)):
        if beyond(bounds[node], best):
            break
        if tuple(lattice.levels(node)) in excluding:
            continue
        canonical_node = canonical(node)
        if canonical_node != node and tags[canonical_node] == 1 and tuple(lattice.levels(canonical_node)) not in excluding:
            continue
        if suppressed[node] < 0 or scores[node] is None:
            if beyond(score_bound(node), best):
                continue
            check(node)
        if suppressed[node] > max_suppressed:
            continue
        if best is None or (scores[node], lattice.precision[node], node) < (best[1], lattice.precision[best[0]], best[0]):
            best = (node, scores[node])
    if best is None:
        raise SystemExit("no generalization meets the requirements")
    return lattice.levels(best[0]), checked


def protect(encoded, levels, k, limit):
    """Drops records until every class holds k callers and every set of classes a caller's
    records fall into is shared by k callers; returns the records kept, or None over the limit."""
    _, _, classes, kept, count, _ = evaluate(encoded, levels, k)
    keep = kept[classes]
    subject, S = encoded.subject, encoded.subject_count
    changed = True
    while changed:
        subj, cls = subject_classes(classes, count, subject, keep)
        failing = np.bincount(cls, minlength=count) < k
        dropped = keep & failing[classes]
        changed = bool(dropped.any())
        keep &= ~dropped
        subj, cls = subject_classes(classes, count, subject, keep)
        small = np.zeros(S, dtype=bool)
        for _, _, shared, holders in class_sets(subj, cls, count, multi_only=False):
            small[holders[shared < k]] = True
        dropped = keep & small[subject]
        if dropped.any():
            changed = True
            keep &= ~dropped
    if distinct(subject[~keep]).size > int(limit * S):
        return None
    return keep


def main():
    records_path, callers_path, work, k, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    os.makedirs(work, exist_ok=True)
    subject_key, pseudonym_key = os.urandom(32), os.urandom(32)
    partner = nacl.signing.SigningKey.generate()
    partner_box_public, _ = sodium.crypto_box_keypair()
    broker = nacl.signing.SigningKey.generate()
    db = sqlite3.connect(os.path.join(work, "peer.sqlite"))
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE consent_event (id INTEGER PRIMARY KEY, dataset TEXT, subject BLOB, purpose TEXT, granted INTEGER)")
    db.execute("CREATE INDEX consent_event_by_purpose ON consent_event (dataset, purpose, id)")
    db.execute("CREATE TABLE log_entry (position INTEGER PRIMARY KEY, bytes BLOB, leaf BLOB)")
    db.execute("CREATE TABLE delivery (id TEXT PRIMARY KEY, log_index INTEGER, records INTEGER, envelope BLOB)")
    with open(callers_path) as source:
        db.executemany("INSERT INTO consent_event (dataset, subject, purpose, granted) VALUES ('calls', ?, 'p', 1)",
                       ((hmac.new(subject_key, line.strip().encode(), hashlib.sha256).digest(),) for line in source if line.strip()))
    db.commit()
    del partner

    stages = {}
    started = last = time.perf_counter()

    def stage(name):
        nonlocal last
        now = time.perf_counter()
        stages[name] = round(now - last, 3)
        last = now

    frame = pd.read_csv(records_path, dtype=str, keep_default_na=False)
    stage("read")
    state = {}
    for subject, granted in db.execute("SELECT subject, granted FROM consent_event WHERE dataset = 'calls' AND purpose = 'p' ORDER BY id"):
        state[subject] = granted == 1
    callers = pd.Series(frame["caller"].unique())
    allowed = callers[[state.get(hmac.new(subject_key, c.encode(), hashlib.sha256).digest(), False) for c in callers]]
    frame = frame[frame["caller"].isin(allowed)][FIELDS].reset_index(drop=True)
    stage("consent and projection")
    distinct, codes = np.unique(frame["caller"].to_numpy(), return_inverse=True)
    pseudonyms = np.array([hmac.new(pseudonym_key, c.encode(), hashlib.sha256).hexdigest()[:16] for c in distinct], dtype=object)
    frame["caller"] = pseudonyms[codes]
    stage("pseudonyms")
    encoded = Encoded(frame)
    stage("encoding")
    excluding, checked = set(), 0
    while True:
        levels, nodes = search(encoded, k, limit, excluding)
        checked += nodes
        keep = protect(encoded, levels, k, limit)
        if keep is not None:
            break
        excluding.add(tuple(levels))
    stage("k-anonymity search and suppression")
    out = pd.DataFrame({name: encoded.labels(q, levels[q])[encoded.codes[q][levels[q]][keep]]
                        for q, name in enumerate(QUASI_IDENTIFIERS)})
    for name in [SENSITIVE] + KEPT:
        out[name] = frame[name].to_numpy()[keep]
    payload = out.to_csv(index=False, lineterminator="\n").encode()
    stage("CSV")
    stream_key = sodium.crypto_secretstream_xchacha20poly1305_keygen()
    state_ = sodium.crypto_secretstream_xchacha20poly1305_state()
    header = sodium.crypto_secretstream_xchacha20poly1305_init_push(state_, stream_key)
    digest = hashlib.sha256()
    envelope_path = os.path.join(work, "peer.envelope")
    with open(envelope_path, "wb") as envelope:
        sealed_key = sodium.crypto_box_seal(stream_key, partner_box_public)
        envelope.write(sealed_key + header)
        digest.update(sealed_key + header)
        chunks = max(1, -(-len(payload) // CHUNK))
        for index in range(chunks):
            tag = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL if index == chunks - 1 else 0
            chunk = sodium.crypto_secretstream_xchacha20poly1305_push(state_, payload[index * CHUNK:(index + 1) * CHUNK],
                                                                      index.to_bytes(8, "big"), tag)
            envelope.write(chunk)
            digest.update(chunk)
    manifest = json.dumps({"ciphertext_sha256": digest.hexdigest(), "records": int(keep.sum()), "chunk_size": CHUNK,
                           "content_type": "text/csv"}, sort_keys=True, separators=(",", ":")).encode()
    signature = broker.sign(manifest).signature
    stage("seal and sign")
    with open(envelope_path, "rb") as source:
        envelope_bytes = manifest + signature + source.read()
    entry = json.dumps({"type": "release.delivered", "envelope_sha256": digest.hexdigest(), "records_released": int(keep.sum()),
                        "levels": dict(zip(QUASI_IDENTIFIERS, levels))}, sort_keys=True, separators=(",", ":")).encode()
    with db:
        db.execute("INSERT INTO log_entry (position, bytes, leaf) VALUES (0, ?, ?)", (entry, hashlib.sha256(b"\x00" + entry).digest()))
        db.execute("INSERT INTO delivery VALUES ('rel-peer', 0, ?, ?)", (int(keep.sum()), envelope_bytes))
    stage("log and store")
    total = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    released = out.copy()
    first_seen = pd.factorize(released["caller"])[0]
    released["caller"] = first_seen.astype(str)
    rows = released.to_csv(index=False, header=False, lineterminator="\n").encode()
    k_reached = int(released.groupby(QUASI_IDENTIFIERS)["caller"].nunique().min()) if len(released) else 0
    print(json.dumps({"records": len(frame), "released": int(keep.sum()), "k": k_reached, "levels": levels, "nodes_checked": checked,
                      "stages": stages, "seconds": round(total, 3), "peak_rss": peak,
                      "rows_sha256": hashlib.sha256(rows).hexdigest()}))


if __name__ == "__main__":
    main()
