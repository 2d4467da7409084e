// The in-browser audit of a Civitas exchange log (docs/log-format.md, "What civitas audit checks").
// It trusts nothing the server says but the broker key the auditor gives: it reads the export line
// by line, checks every entry (canonical RFC 8785 JSON, valid for its type, at its index, linked to
// the one before), recomputes the RFC 9162 tree with WebCrypto SHA-256, verifies every checkpoint's
// Ed25519 signature with WebCrypto, checks the log against the checkpoint it verified last (kept in
// this browser), and replays agreements, releases and budgets. Like `civitas audit`, it stops at the
// first integrity failure and names the entry; compliance findings follow in log order.
"use strict";

(function () {
  const encoder = new TextEncoder();

  // MARK: bytes

  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((total, part) => total + part.length, 0));
    let offset = 0;
    for (const part of parts) { out.set(part, offset); offset += part.length; }
    return out;
  }
  const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const equal = (a, b) => a.length === b.length && a.every((value, i) => value === b[i]);
  function base64(text) {
    if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) return null;
    try { return Uint8Array.from(atob(text), (c) => c.charCodeAt(0)); } catch (e) { return null; }
  }
  async function sha256(bytes) { return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)); }
  const ZERO = new Uint8Array(32);

  // MARK: findings

  class Finding extends Error {
    constructor(code, entry, message) { super(message); this.code = code; this.entry = entry; }
  }
  const describe = (f) => (f.entry === null || f.entry === undefined ? "" : "entry " + f.entry + ": ") + f.message;

  // MARK: canonical JSON (RFC 8785: sorted members, ECMAScript numbers and strings)

  function canonical(value) {
    if (value === null || typeof value !== "object") return JSON.stringify(value);
    if (Array.isArray(value)) return "[" + value.map(canonical).join(",") + "]";
    return "{" + Object.keys(value).sort().map((k) => JSON.stringify(k) + ":" + canonical(value[k])).join(",") + "}";
  }

  // MARK: entries (the members of each type and the kinds of their values)

  const isName = (t) => typeof t === "string" && t.length >= 1 && t.length <= 128 && /^[A-Za-z0-9.:_/-]+$/.test(t);
  const KINDS = {
    keyID: (v) => typeof v === "string" && /^[0-9a-f]{32}$/.test(v),
    name: isName,
    names: (v) => Array.isArray(v) && v.length >= 1 && v.length <= 64 && v.every(isName),
    digest: (v) => typeof v === "string" && /^[0-9a-f]{64}$/.test(v),
    publicKey: (v) => { const b = base64(v); return b !== null && b.length === 32; },
    signature: (v) => { const b = base64(v); return b !== null && b.length === 64; },
    time: (v) => typeof v === "string" && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/.test(v),
    count: (v) => Number.isSafeInteger(v) && v >= 0,
    object: (v) => v !== null && typeof v === "object" && !Array.isArray(v),
  };
  const TYPES = {
    "participant.registered": [["participant", "keyID"], ["name", "name"], ["role", "name"], ["ed25519", "publicKey"], ["x25519", "publicKey"]],
    "key.rotated": [["participant", "keyID"], ["replacement", "keyID"], ["ed25519", "publicKey"], ["x25519", "publicKey"]],
    "dataset.registered": [["dataset", "name"], ["publisher", "keyID"], ["schema_sha256", "digest"]],
    "agreement.offered": [["agreement", "name"], ["dataset", "name"], ["publisher", "keyID"], ["partner", "keyID"], ["purposes", "names"],
      ["policy_sha256", "digest"], ["legal_basis", "name"], ["valid_from", "time"], ["valid_until", "time"], ["epsilon_budget_micro", "count"]],
    "agreement.accepted": [["agreement", "name"], ["partner", "keyID"]],
    "agreement.revoked": [["agreement", "name"], ["by", "keyID"]],
    "agreement.expired": [["agreement", "name"]],
    "consent.granted": [["dataset", "name"], ["subject", "digest"], ["purpose", "name"], ["recorded_by", "keyID"]],
    "consent.revoked": [["dataset", "name"], ["subject", "digest"], ["purpose", "name"], ["recorded_by", "keyID"]],
    "consent.recorded": [["datasets", "names"], ["recorded_by", "keyID"], ["receipts", "count"], ["receipts_root", "digest"],
      ["granted", "count"], ["withdrawn", "count"]],
    "release.delivered": [["release", "name"], ["agreement", "name"], ["dataset", "name"], ["partner", "keyID"], ["purpose", "name"],
      ["policy_sha256", "digest"], ["envelope_manifest", "object"], ["envelope_signature", "signature"], ["records_released", "count"],
      ["records_suppressed", "count"], ["k_achieved", "count"], ["epsilon_micro", "count"], ["transforms", "object"]],
    "release.refused": [["agreement", "name"], ["partner", "keyID"], ["reason", "name"]],
    "broker.key_rotated": [["previous", "keyID"], ["previous_ed25519", "publicKey"], ["previous_x25519", "publicKey"], ["replacement", "keyID"],
      ["name", "name"], ["ed25519", "publicKey"], ["x25519", "publicKey"], ["introduction", "signature"]],
  };
  const OPTIONAL = { "agreement.offered": [["aggregate_keys", "object"], ["rho_budget_micro", "count"]], "release.delivered": [["rho_micro", "count"]] };

  function parseEntry(line, position) {
    let value;
    try { value = JSON.parse(line); } catch (e) { throw new Finding("invalidEntry", position, "entry " + position + " is not JSON"); }
    if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Finding("invalidEntry", position, "entry " + position + " is not a JSON object");
    if (canonical(value) !== line) throw new Finding("invalidEntry", position, "entry " + position + " is not in canonical JSON form (RFC 8785)");
    const { index, prev, time, type, ...members } = value;
    if (!KINDS.count(index) || !KINDS.digest(prev) || typeof time !== "string" || typeof type !== "string") {
      throw new Finding("invalidEntry", position, "entry " + position + " lacks index, prev, time or type");
    }
    const expected = TYPES[type];
    if (!expected) throw new Finding("invalidEntry", position, "entry " + position + " has unknown type '" + type.slice(0, 40) + "'");
    if (!KINDS.time(time)) throw new Finding("invalidEntry", position, "entry " + index + ": time is not RFC 3339 UTC like 2026-11-26T12:00:00Z");
    const optional = OPTIONAL[type] || [];
    const allowed = new Set(expected.concat(optional).map(([name]) => name));
    const unknown = Object.keys(members).filter((name) => !allowed.has(name)).sort()[0];
    if (unknown !== undefined) throw new Finding("invalidEntry", position, "entry " + index + " (" + type + "): unknown member '" + unknown.slice(0, 60) + "'");
    for (const [name, kind] of expected) {
      if (!(name in members)) throw new Finding("invalidEntry", position, "entry " + index + " (" + type + "): missing member '" + name + "'");
      if (!KINDS[kind](members[name])) throw new Finding("invalidEntry", position, "entry " + index + " (" + type + "): member '" + name + "' is not a valid " + kind);
    }
    for (const [name, kind] of optional) {
      if (name in members && !KINDS[kind](members[name])) throw new Finding("invalidEntry", position, "entry " + index + " (" + type + "): member '" + name + "' is not a valid " + kind);
    }
    return { index, prev, time, type, members };
  }

  // MARK: the RFC 9162 tree

  class Tree {
    constructor() { this.leaves = []; this.frontier = []; }
    get size() { return this.leaves.length; }
    async append(leaf) {
      this.leaves.push(leaf);
      // The frontier holds the roots of the complete subtrees, largest first.
      let node = leaf, size = this.leaves.length;
      while (size % 2 === 0) {
        node = await sha256(concat(Uint8Array.of(1), this.frontier.pop(), node));
        size /= 2;
      }
      this.frontier.push(node);
    }
    async root(n) {
      if (n === 0) return sha256(new Uint8Array(0));
      if (n === this.leaves.length) {
        let root = this.frontier[this.frontier.length - 1];
        for (let i = this.frontier.length - 2; i >= 0; i--) root = await sha256(concat(Uint8Array.of(1), this.frontier[i], root));
        return root;
      }
      return this.subtree(0, n);
    }
    async subtree(start, end) {
      if (end - start === 1) return this.leaves[start];
      let k = 1;
      while (k * 2 < end - start) k *= 2;
      return sha256(concat(Uint8Array.of(1), await this.subtree(start, start + k), await this.subtree(start + k, end)));
    }
  }

  // MARK: keys and signed notes

  // The broker's public keys, from its civitas .pub file (`civitas-public-key/1 NAME KEYID ed25519:… x25519:…`):
  // the Ed25519 key signs checkpoints and envelopes; the key id (over both keys) names the issuer.
  function brokerPublicKeys(text) {
    const match = /^civitas-public-key\/1 \S+ [0-9a-f]{32} ed25519:([A-Za-z0-9+/=]+) x25519:([A-Za-z0-9+/=]+)$/.exec(text.trim());
    const signing = match && base64(match[1]), encryption = match && base64(match[2]);
    if (!signing || signing.length !== 32 || !encryption || encryption.length !== 32) {
      throw new Finding("wrongLogKey", null, "the broker key is not a civitas .pub file (civitas-public-key/1 NAME KEYID ed25519:… x25519:…)");
    }
    return { signing, encryption };
  }
  async function keyHash(name, publicKey) { return (await sha256(concat(encoder.encode(name + "\n"), Uint8Array.of(1), publicKey))).slice(0, 4); }
  async function verifierKey(name, publicKey) {
    let text = "";
    for (const b of concat(Uint8Array.of(1), publicKey)) text += String.fromCharCode(b);
    return name + "+" + hex(await keyHash(name, publicKey)) + "+" + btoa(text);
  }
  // A checkpoint note's statement, when the broker's key signed it (null otherwise).
  async function verifyNote(note, origin, publicKey) {
    const separator = note.indexOf("\n\n");
    if (separator < 0) throw new Error("checkpoint has no blank line before its signatures");
    const body = note.slice(0, separator + 1);
    const lines = body.slice(0, -1).split("\n");
    if (lines.length < 3 || !/^(0|[1-9][0-9]*)$/.test(lines[1])) throw new Error("checkpoint needs origin, size and root hash lines");
    const root = base64(lines[2]);
    if (!root || root.length !== 32) throw new Error("checkpoint root hash is not 32 bytes of base64");
    const statement = { origin: lines[0], size: Number(lines[1]), root };
    const wanted = await keyHash(origin, publicKey);
    const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
    for (const line of note.slice(separator + 2).split("\n")) {
      const parts = /^\u2014 (\S+) (\S+)$/.exec(line);
      if (!parts || parts[1] !== origin) continue;
      const blob = base64(parts[2]);
      if (!blob || blob.length !== 68 || !equal(blob.slice(0, 4), wanted)) continue;
      if (await crypto.subtle.verify({ name: "Ed25519" }, key, blob.slice(4), encoder.encode(body))) return statement;
    }
    return null;
  }
  async function verifyEd25519(publicKey, signature, message) {
    const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
    return crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
  }

  // MARK: compliance, replayed in log order

  // Millionths as a decimal, as civitas audit prints them: 1500000n → "1.5".
  function micro(value) {
    const whole = value / 1000000n, fraction = value % 1000000n;
    return fraction === 0n ? String(whole) : whole + "." + String(fraction).padStart(6, "0").replace(/0+$/, "");
  }

  const keyIDOf = async (keys) => hex((await sha256(concat(encoder.encode("civitas-key-id/1"), Uint8Array.of(0), keys.signing, keys.encryption))).slice(0, 16));
  function runs(text) {
    const result = [];
    for (const part of text.split(",")) {
      const bounds = part.split("-");
      if (bounds.length < 1 || bounds.length > 2 || !bounds.every((b) => /^[0-9]{1,18}$/.test(b))) return null;
      const low = Number(bounds[0]), high = Number(bounds[bounds.length - 1]);
      if (low > high || (result.length && result[result.length - 1][1] >= low)) return null;
      result.push([low, high + 1]);
    }
    return result;
  }

  class Replay {
    constructor(brokerKey, brokerKeyID) {
      this.brokerKey = brokerKey; this.brokerKeyID = brokerKeyID;
      this.participants = new Set(); this.rotatedTo = new Map(); this.agreements = new Map(); this.drawn = new Map(); this.audits = new Map();
      this.releasesVerified = 0;
    }
    async apply(e) {
      const m = e.members, i = e.index;
      switch (e.type) {
        case "participant.registered": this.participants.add(m.participant); return [];
        case "key.rotated": this.participants.add(m.replacement); this.rotatedTo.set(m.replacement, this.rotatedTo.get(m.participant) || m.participant); return [];
        case "agreement.offered": {
          const findings = [];
          for (const role of ["publisher", "partner"]) {
            if (!this.participants.has(m[role])) findings.push(new Finding("unknownParticipant", i, "agreement " + m.agreement + " names " + role + " " + m[role] + ", who was never registered"));
          }
          this.agreements.set(m.agreement, { offer: e, acceptedAt: null, endedAt: null });
          // An agreement counts ε, or ρ (zCDP) when it states a ρ budget.
          const countsRho = m.rho_budget_micro !== undefined;
          this.audits.set(m.agreement, { partner: m.partner, countsRho, budget: BigInt(countsRho ? m.rho_budget_micro : m.epsilon_budget_micro), spent: 0n, releases: 0 });
          return findings;
        }
        case "agreement.accepted": {
          const agreement = this.agreements.get(m.agreement);
          if (!agreement) return [new Finding("unknownAgreement", i, "acceptance of agreement " + m.agreement + ", which was never offered")];
          if (m.partner !== agreement.offer.members.partner) return [new Finding("unknownParticipant", i, "agreement " + m.agreement + " accepted by someone other than its partner")];
          agreement.acceptedAt = e.time;
          return [];
        }
        case "agreement.revoked": case "agreement.expired": {
          const agreement = this.agreements.get(m.agreement);
          if (!agreement) return [new Finding("unknownAgreement", i, e.type + " for agreement " + m.agreement + ", which was never offered")];
          agreement.endedAt = agreement.endedAt || e.time;
          return [];
        }
        case "release.delivered": return this.release(e);
        default: return [];
      }
    }
    async release(e) {
      const m = e.members, i = e.index, findings = [];
      const manifest = canonical(m.envelope_manifest);
      const signed = await verifyEd25519(this.brokerKey, base64(m.envelope_signature), encoder.encode("civitas-envelope/1 manifest\n" + manifest));
      if (!signed || m.envelope_manifest.issuer !== this.brokerKeyID) {
        findings.push(new Finding("badEnvelopeSignature", i, "the envelope manifest is not signed by the broker's key " + this.brokerKeyID));
      } else if ((this.rotatedTo.get(m.envelope_manifest.recipient) || m.envelope_manifest.recipient) !== m.partner) {
        findings.push(new Finding("releaseOutsideAgreement", i, "the envelope is addressed to " + m.envelope_manifest.recipient + ", not to the release's partner"));
      } else {
        this.releasesVerified += 1;
      }
      const agreement = this.agreements.get(m.agreement);
      if (!agreement) return findings.concat([new Finding("unknownAgreement", i, "release under agreement " + m.agreement + ", which was never offered")]);
      const offer = agreement.offer.members, time = e.time, id = m.agreement;
      if (agreement.acceptedAt === null || agreement.acceptedAt > time) findings.push(new Finding("agreementNotActive", i, "release under agreement " + id + " before the partner accepted it"));
      if (agreement.endedAt !== null && agreement.endedAt <= time) findings.push(new Finding("agreementNotActive", i, "release under agreement " + id + " after it was revoked or expired (" + agreement.endedAt + ")"));
      if (time < offer.valid_from || time > offer.valid_until) findings.push(new Finding("agreementNotActive", i, "release at " + time + " is outside agreement " + id + "'s validity (" + offer.valid_from + " to " + offer.valid_until + ")"));
      if (m.partner !== offer.partner || m.dataset !== offer.dataset || m.policy_sha256 !== offer.policy_sha256) findings.push(new Finding("releaseOutsideAgreement", i, "release's partner, dataset or policy differs from agreement " + id));
      if (!offer.purposes.includes(m.purpose)) findings.push(new Finding("releaseOutsideAgreement", i, "purpose " + m.purpose + " is not among agreement " + id + "'s purposes"));
      findings.push(...this.composition(e, offer));
      const audit = this.audits.get(id);
      if (audit) {
        let charge = BigInt(m.epsilon_micro);
        if (audit.countsRho) {
          // Under zCDP a pure ε step costs at least ε²/2 (millionths, rounded up); a release states its ρ.
          const least = (charge * charge + 1999999n) / 2000000n;
          charge = m.rho_micro === undefined ? 0n : BigInt(m.rho_micro);
          if (m.rho_micro === undefined || charge < least) {
            findings.push(new Finding("budgetExceeded", i, "release under agreement " + id + ", which counts ρ, was charged less than its ε costs"));
            if (charge < least) charge = least;
          }
        }
        audit.spent += charge;
        audit.releases += 1;
        if (audit.spent > audit.budget) findings.push(new Finding("budgetExceeded", i, "agreement " + id + " has now spent more " + (audit.countsRho ? "ρ" : "ε") + " than its budget"));
      }
      return findings;
    }
    composition(e, offer) {
      const t = e.members.transforms, i = e.index, findings = [];
      if (t.kind === "aggregate") {
        const declared = offer.aggregate_keys || {}, sources = t.group_keys || {};
        for (const column of (Array.isArray(t.group_by) ? t.group_by : [])) {
          if (typeof sources[column] !== "string" || sources[column] !== declared[column]) {
            findings.push(new Finding("undeclaredGroupKeys", i, "aggregate grouped by '" + column + "' with keys not from the domain agreement " + e.members.agreement + " declared"));
          }
        }
      } else if (typeof t.batches === "string") {
        const drawn = runs(t.batches);
        if (drawn === null) return [new Finding("invalidEntry", i, "transforms.batches is not ascending runs of batch numbers")];
        const key = e.members.partner + " " + e.members.dataset;
        for (const earlier of this.drawn.get(key) || []) {
          for (const run of drawn) {
            const overlap = earlier.runs.find((r) => r[0] < run[1] && run[0] < r[1]);
            if (overlap) findings.push(new Finding("deliveredTwice", i, "batch " + Math.max(overlap[0], run[0]) + " of " + e.members.dataset + " was already delivered to partner " + e.members.partner + " in entry " + earlier.entry));
          }
        }
        if (!this.drawn.has(key)) this.drawn.set(key, []);
        this.drawn.get(key).push({ runs: drawn, entry: i });
      }
      return findings;
    }
  }

  // MARK: the audit

  // Audits the export's lines (an async iterable of strings, the header first) against the broker
  // key and the checkpoint note verified last (or null). Returns the report.
  async function audit(lines, brokerKeyText, savedNote, progress) {
    const report = { passed: false, entries: 0, checkpointsVerified: 0, releasesVerified: 0, findings: [], latest: null, latestNote: null, agreements: [] };
    try {
      await run(lines, brokerKeyText, savedNote, report, progress);
    } catch (error) {
      report.findings.unshift(error instanceof Finding ? error : new Finding("malformedExport", null, String(error && error.message || error)));
    }
    report.passed = report.findings.length === 0;
    return report;
  }

  async function run(lines, brokerKeyText, savedNote, report, progress) {
    const keys = brokerPublicKeys(brokerKeyText);
    const publicKey = keys.signing;
    const brokerKeyID = await keyIDOf(keys);
    let header = null, number = 0, previous = ZERO, lastTime = "";
    const tree = new Tree(), replay = new Replay(publicKey, brokerKeyID), checkpoints = [];
    for await (const line of lines) {
      number += 1;
      if (header === null) {
        let value = null;
        try { value = JSON.parse(line); } catch (e) { value = null; }
        if (!value || value.format !== "civitas-log-export/1" || typeof value.origin !== "string" || typeof value.log_key !== "string") {
          throw new Finding("malformedExport", null, "line 1 is not a civitas-log-export/1 header");
        }
        header = value;
        continue;
      }
      if (line.startsWith("{\"checkpoint\":")) {
        let note;
        try { note = JSON.parse(line).checkpoint; } catch (e) { note = undefined; }
        if (typeof note !== "string") throw new Finding("malformedExport", null, "line " + number + " is not a checkpoint line");
        let statement;
        try { statement = await verifyNote(note, header.origin, publicKey); } catch (e) { throw new Finding("badCheckpoint", null, "line " + number + ": " + e.message); }
        if (statement === null) {
          if (header.log_key !== await verifierKey(header.origin, publicKey)) {
            throw new Finding("wrongLogKey", null, "the export's log key " + header.log_key + " is not the broker key given");
          }
          throw new Finding("badCheckpoint", null, "line " + number + ": the checkpoint carries no valid signature by the broker's key");
        }
        if (statement.origin !== header.origin || statement.size > tree.size) {
          throw new Finding("badCheckpoint", null, "line " + number + ": checkpoint for " + statement.size + " entries of " + statement.origin + " appears after only " + tree.size + " entries");
        }
        const root = await tree.root(statement.size);
        if (!equal(root, statement.root)) {
          throw new Finding("checkpointMismatch", statement.size === 0 ? null : statement.size - 1,
            "the entries up to " + statement.size + " do not hash to the signed checkpoint: the log was rewritten");
        }
        report.checkpointsVerified += 1;
        checkpoints.push({ statement, note });
        continue;
      }
      const position = tree.size;
      const entry = parseEntry(line, position);
      if (entry.index !== position) {
        throw new Finding("entryOutOfOrder", position, "the entry at position " + position + " says it is entry " + entry.index + ": an entry was dropped, duplicated or moved");
      }
      if (entry.prev !== hex(previous)) {
        throw new Finding("entryAltered", position - 1, "does not match the hash entry " + position + " recorded for it: one of the two was altered");
      }
      if (entry.type === "broker.key_rotated") {
        throw new Finding("badKeyRotation", position, "the broker's key was rotated here: this page does not follow key rotations; audit this log with civitas audit");
      }
      if (entry.time < lastTime) report.findings.push(new Finding("timeWentBack", position, "time " + entry.time + " is earlier than the entry before (" + lastTime + ")"));
      if (entry.time > lastTime) lastTime = entry.time;
      previous = await sha256(concat(Uint8Array.of(0), encoder.encode(line)));
      await tree.append(previous);
      report.entries = tree.size;
      report.findings.push(...await replay.apply(entry));
      if (progress && tree.size % 1000 === 0) progress(tree.size);
    }
    if (header === null) throw new Finding("malformedExport", null, "the export is empty");
    report.entries = tree.size;
    report.releasesVerified = replay.releasesVerified;
    report.agreements = Array.from(replay.audits, ([agreement, a]) => ({ agreement, partner: a.partner, releases: a.releases,
      unit: a.countsRho ? "rho" : "epsilon", spent: micro(a.spent), budget: micro(a.budget) })).sort((x, y) => (x.agreement < y.agreement ? -1 : 1));
    const latest = checkpoints[checkpoints.length - 1];
    if (!latest) throw new Finding("uncoveredEntries", null, "the export has no checkpoint: nothing in it is signed");
    if (latest.statement.size !== tree.size) {
      throw new Finding("uncoveredEntries", latest.statement.size, "entries " + latest.statement.size + " to " + (tree.size - 1) + " are not covered by any checkpoint");
    }
    report.latest = latest.statement;
    report.latestNote = latest.note;
    if (header.log_key !== await verifierKey(header.origin, publicKey)) {
      throw new Finding("wrongLogKey", null, "the export's log key " + header.log_key + " is not the key the log is signed with");
    }
    if (savedNote) {
      let saved;
      try { saved = await verifyNote(savedNote, header.origin, publicKey); } catch (e) { saved = null; }
      if (!saved) throw new Finding("badCheckpoint", null, "the saved checkpoint does not verify with the log's key");
      if (saved.size > latest.statement.size) {
        throw new Finding("rollback", null, "the log went back: the saved checkpoint has " + saved.size + " entries, this export " + latest.statement.size);
      }
      if (saved.size > 0 && !equal(await tree.root(saved.size), saved.root)) {
        throw new Finding("fork", null, "the log forked: the saved checkpoint at " + saved.size + " entries is not a prefix of this log");
      }
    }
  }

  // MARK: reading the export

  async function* linesOfStream(stream) {
    const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += value;
      let newline;
      while ((newline = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        if (line.length) yield line;
      }
    }
    if (pending.length) yield pending;
  }

  // MARK: the page

  const storageKey = (origin) => "civitas-audit-checkpoint:" + origin;

  function show(report, source) {
    const result = document.getElementById("result");
    result.replaceChildren();
    result.dataset.passed = String(report.passed);
    const first = report.findings[0];
    result.dataset.firstCode = first ? first.code : "";
    result.dataset.firstEntry = first && first.entry !== null && first.entry !== undefined ? String(first.entry) : "";
    result.dataset.entries = String(report.entries);
    const heading = document.createElement("p");
    heading.className = report.passed ? "ok" : "failed";
    heading.textContent = report.passed
      ? "The log verifies: " + report.entries + " entries, " + report.checkpointsVerified + " checkpoints signed by the broker, " + report.releasesVerified + " envelopes signed by it, every release within its agreement and budget."
      : "The log does not verify (" + source + "): " + describe(first);
    result.append(heading);
    if (report.agreements.length) {
      // The compliance summary civitas audit prints: each agreement's releases and what it spent of its budget (ε, or ρ under zCDP).
      const table = document.createElement("table");
      table.id = "agreements";
      table.createCaption().textContent = "Agreements replayed from the log";
      const head = table.createTHead().insertRow();
      for (const title of ["Agreement", "Partner", "Releases", "Counted in", "Spent", "Budget"]) {
        const cell = document.createElement("th");
        cell.scope = "col";
        cell.textContent = title;
        head.append(cell);
      }
      const body = table.createTBody();
      for (const a of report.agreements) {
        const row = body.insertRow();
        for (const value of [a.agreement, a.partner, a.releases, a.unit, a.spent, a.budget]) row.insertCell().textContent = String(value);
      }
      result.append(table);
    }
    if (report.findings.length > 1 || (!report.passed && report.findings.length)) {
      const list = document.createElement("ol");
      for (const f of report.findings) {
        const item = document.createElement("li");
        item.textContent = f.code + " — " + describe(f);
        list.append(item);
      }
      result.append(list);
    }
    result.focus();
  }

  async function start(event) {
    event.preventDefault();
    const form = event.target;
    const status = document.getElementById("status");
    const keyText = form.elements.key.value;
    const saved = form.elements.saved.value.trim() || null;
    const file = form.elements.export.files[0];
    status.textContent = "Reading the log…";
    let lines, source;
    if (file) {
      lines = linesOfStream(file.stream());
      source = file.name;
    } else {
      const response = await fetch("/web/log/export", { credentials: "same-origin" });
      if (!response.ok) { status.textContent = "The broker did not send its log (" + response.status + "): sign in, or choose an export file."; return; }
      lines = linesOfStream(response.body);
      source = "this broker's log";
    }
    const report = await audit(lines, keyText, saved, (n) => { status.textContent = "Checked " + n + " entries…"; });
    status.textContent = "";
    show(report, source);
    if (report.passed && report.latestNote && form.elements.remember.checked) {
      localStorage.setItem(storageKey(report.latest.origin), report.latestNote);
      form.elements.saved.value = report.latestNote;
    }
  }

  function setUp() {
    const form = document.getElementById("audit");
    if (!form) return;
    form.addEventListener("submit", (event) => { start(event).catch((error) => { document.getElementById("status").textContent = String(error); }); });
    const origin = form.dataset.origin;
    const saved = origin && localStorage.getItem(storageKey(origin));
    if (saved && !form.elements.saved.value) form.elements.saved.value = saved;
    form.elements.keyfile.addEventListener("change", async () => {
      const file = form.elements.keyfile.files[0];
      if (file) form.elements.key.value = (await file.text()).trim();
    });
    document.getElementById("javascript-needed").hidden = true;
    form.hidden = false;
  }

  globalThis.CivitasAudit = { audit, canonical };
  if (typeof document !== "undefined") document.addEventListener("DOMContentLoaded", setUp);
})();
