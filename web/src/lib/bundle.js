// The court bundle verifier, for the browser: a second, independent implementation of custodia_bundle::verify
// (crates/bundle/src/verify.rs), written from the formats rather than from the Rust code's libraries.
//
// A bundle is a BagIt bag in a tar (RFC 8493): the evidence under data/payload/, its RFC 8785 canonical manifest
// and the gateway's Ed25519 signature over it, every custody record about it (each a canonical JSON ledger entry)
// with a c2sp.org/tlog-proof@v1 inclusion proof, the c2sp.org/signed-note checkpoint the proofs lead to, and the
// gateway's key in C2SP verifier-key form. A case bundle is a bag of such bundles, each unpacked in a directory of its
// own (data/bundles/<artefact>/ holds that bundle's bag), named in its listing by the SHA-256 of its tag manifest.
// The bundle of an artefact received from a partner gateway also holds, under data/provenance/, the provider's bag
// but its payload (the provider's chain), checked as the provider's bag with this bag's payload in it, and tied to
// the received_from record that commits to its manifest, artefact and checkpoint.
//
// The file is read once, as a stream of chunks: every file is hashed as it passes, only the small ones are kept,
// so a bundle of any size needs a few megabytes of memory. Nothing is sent anywhere.
//
// A custody record (version 2) holds what a person typed or chose, and its case, only as salted commitments:
// SHA-256("custodia-commitment-v1" 0x00 || salt || u32be(len field) || field || u32be(len text) || text). The
// openings (salt and text per field) travel beside each record as data/custody/<index>.opening.json, and each is
// checked against its commitment; the case they open must be the signed manifest's (in a case bundle, the case
// listing's).
//
// The manifest carries a random nonce, so the registration record's manifest_sha256 is a salted commitment to the
// evidence's SHA-256 and size (the public log holds neither in clear); the manifest is its opening. A bag must hold
// exactly the files of its kind of bundle, whatever its checksum manifests list, and data/REPORT.txt, which is not
// evidence, is made again from the checked files and must say the same. Extended tar headers over 64 KiB are
// refused before they are read.
//
// It runs the same checks as the Rust verifier, reports each one by part, and names the part that failed. Both
// verifiers are run on the same good and tampered bundles by crates/server/tests/web_verify.rs.

import { sha256 } from '@noble/hashes/sha2.js';
import { ed25519 } from '@noble/curves/ed25519.js';

// Files other than the payload are small (the tag manifests and the report grow by a line or two per custody
// record, and a case bag's manifest by a line per file of its artefact bundles), as custodia_bundle::verify.
const MAX_SMALL_FILE = 32 << 20;
// The most bytes of one extended header (PAX, GNU long name), refused before any of it is read, and what each
// file held costs besides its name and bytes: as custodia_bundle::verify.
const MAX_EXTENSION = 64 << 10;
const PER_FILE_OVERHEAD = 128;
// What one check may hold, as custodia_bundle::verify: files seen (nested bundles' included), and bytes held at
// once (small files of the case bag and of the one artefact bundle being read, names, what is kept of each
// artefact bundle already checked: its summary, and every check made of the bag itself), one budget for the whole
// read.
export const MAX_FILES = 250_000;
export const MAX_KEPT_BYTES = 64 << 20;
// The most failed checks kept of one artefact bundle inside a case bundle, besides the first of each failed part,
// and what a check costs to hold besides its words.
export const NESTED_FAILURES_KEPT = 16;
const PER_CHECK_OVERHEAD = 64;
const CHUNK = 4 << 20;
const MAX_RECORD_LEN = 65_535;
const MAX_NOTE_SIZE = 1_000_000;
const MAX_NOTE_SIGNATURES = 100;

const PAYLOAD_DIR = 'data/payload/';
const MANIFEST = 'data/manifest.json';
const MANIFEST_SIGNATURE = 'data/manifest.sig';
const CHECKPOINT = 'data/checkpoint';
const VKEY = 'data/keys/gateway.vkey';
const REPORT = 'data/REPORT.txt';
const CUSTODY_DIR = 'data/custody/';
const BUNDLES_DIR = 'data/bundles/';
const CASE_LISTING = 'data/case-listing.json';
const PUBLIC_KEY_PEM = 'data/keys/gateway.pub.pem';
// Bundle format 2: from a gateway with witnesses, its policy; and, when no cosigned checkpoint covered every record,
// the newest cosigned one with the consistency proof from it to data/checkpoint.
const WITNESS_POLICY = 'data/witness/policy.txt';
const WITNESSED_CHECKPOINT = 'data/witness/checkpoint';
const WITNESS_CONSISTENCY = 'data/witness/consistency.proof';
const WITNESS_FILES = new Set([WITNESS_POLICY, WITNESSED_CHECKPOINT, WITNESS_CONSISTENCY]);
// Trusted time (RFC 3161): from a gateway with a Time-Stamp Authority, the log's timestamp entry that covers the
// records, its inclusion proof and the consistency proof from the stamped checkpoint to data/checkpoint.
const TIMESTAMP_ENTRY = 'data/timestamp/entry.json';
const TIMESTAMP_PROOF = 'data/timestamp/entry.proof';
const TIMESTAMP_CONSISTENCY = 'data/timestamp/consistency.proof';
const TIMESTAMP_FILES = new Set([TIMESTAMP_ENTRY, TIMESTAMP_PROOF, TIMESTAMP_CONSISTENCY]);
const TIMESTAMP_NONE = 'none (the gateway had no Time-Stamp Authority token covering these records)';
// In the bag of an artefact received from a partner gateway, the provider's bag as it was sent, all but its payload
// (which is this bag's payload, byte for byte): its tag files, signed manifest, custody records with proofs and
// openings, checkpoint, keys and certificate, and its own provider's chain if it had received the artefact in turn.
const PROVENANCE_DIR = 'data/provenance/';
/** How each check of a provider's chain begins, in a bag that carries one, as custodia_bundle's PROVIDER_CHAIN. */
export const PROVIDER_CHAIN = "provider's chain: ";
/** The field of a received_from record's `provenance` opening (canonical JSON) that names the SHA-256 of the
 * provider's signed manifest, as custodia_bundle's PROVIDER_MANIFEST_FIELD. */
export const PROVIDER_MANIFEST_FIELD = 'provider_manifest_sha256';
/** How deep provider's chains may nest (a chain within the chain of an artefact forwarded from gateway to gateway),
 * as custodia_bundle's MAX_PROVIDER_DEPTH: a bound on what a hostile bag makes the verifier do. */
export const MAX_PROVIDER_DEPTH = 8;
const MANIFEST_TYPE = 'custodia.manifest/v2';

/** The parts a check is about, in the order the report lists failures, with their names in plain words. */
export const PARTS = Object.freeze({
  bag: 'bag structure and checksums',
  payload_hash: 'payload hash',
  manifest_signature: 'manifest signature',
  trusted_key: 'trusted key',
  checkpoint: 'checkpoint signature',
  witnesses: 'witness cosignatures',
  inclusion_proof: 'inclusion proof',
  custody_history: 'custody history',
  openings: 'record openings',
  case_contents: 'case contents',
  timestamp: 'trusted time (RFC 3161 timestamp)',
  report: 'certificate (REPORT.txt)',
  provider_chain: "provider's chain",
});
const PART_ORDER = Object.keys(PARTS);

/** A bundle that could not be read at all (not a tar, cut short, a link inside, a hostile path). */
export class BundleError extends Error {
  constructor(message) {
    super(message);
    this.name = 'BundleError';
  }
}
const malformed = (what) => new BundleError(`the bundle is malformed: ${what}`);
const tooLarge = (what) => new BundleError(`the bundle is too large to check: ${what}`);

/** A key the user pinned that is not a C2SP verifier key at all: nothing was checked. */
export class PinError extends Error {
  constructor(pin) {
    super(
      `the key you entered is malformed (${JSON.stringify(pin.length > 80 ? `${pin.slice(0, 80)}…` : pin)}): a gateway ` +
        'key reads name+keyid+base64, as the gateway\'s /key page shows it, and its key ID must match the rest. ' +
        'Copy it again from your trusted source.',
    );
    this.name = 'PinError';
  }
}

/** A witness policy the user pinned that is not a c2sp.org/tlog-policy file: nothing was checked. */
export class PolicyError extends Error {
  constructor(reason) {
    super(`the witness policy you entered is malformed: ${reason}`);
    this.name = 'PolicyError';
  }
}

/** Counts what a read holds, and the most it held at once, and refuses more than the limits. */
class Budget {
  constructor(limits = {}) {
    this.maxFiles = limits.files ?? MAX_FILES;
    this.maxKept = limits.keptBytes ?? MAX_KEPT_BYTES;
    this.files = 0;
    this.kept = 0;
    this.peak = 0;
  }

  takeFile() {
    if (this.files >= this.maxFiles) {
      throw tooLarge(`it holds more than ${this.maxFiles} files, which no court bundle does; it was not checked further`);
    }
    this.files += 1;
  }

  keep(bytes) {
    if (this.kept + bytes > this.maxKept) {
      const limit = this.maxKept % 1048576 === 0 ? `${this.maxKept / 1048576} MiB` : `${Math.floor(this.maxKept / 1024)} KiB`;
      throw tooLarge(`its files other than the evidence come to more than ${limit}, which no court bundle's do; it was not checked further`);
    }
    this.kept += bytes;
    this.peak = Math.max(this.peak, this.kept);
  }

  /** Lets go of what was held since `mark` (a nested bundle's files, once it is checked). */
  releaseTo(mark) {
    this.kept = Math.min(mark, this.kept);
  }
}

/**
 * The most characters of a name (a path from the bundle) echoed in a detail; a longer one is cut, with its SHA-256
 * so that two long names stay told apart, as custodia_bundle's `echoed`.
 */
const MAX_ECHOED_NAME = 200;

function echoed(name) {
  let shown = '';
  let width = 0;
  for (const c of name) {
    const escaped = printable(c);
    width += Array.from(escaped).length;
    if (width > MAX_ECHOED_NAME) return `${shown}… (SHA-256 ${hex(sha256(encoder.encode(name))).slice(0, 16)})`;
    shown += escaped;
  }
  return shown;
}

/**
 * `text` from a bundle as it may be shown, as custodia_bundle's `printable`: every control character, line or
 * paragraph separator and invisible format character (a right-to-left override reorders what follows it) written
 * as `\u{...}`; the zero-width (non-)joiners are kept, as Persian and Indic names need them.
 */
export function printable(text) {
  return text.replace(/[\p{Cc}\p{Zl}\p{Zp}\p{Cf}]/gu, (c) =>
    c === '\u200C' || c === '\u200D' ? c : `\\u{${c.codePointAt(0).toString(16)}}`,
  );
}

/** What holding `checks` costs. */
function checksCost(checks) {
  return checks.reduce((sum, check) => sum + encoder.encode(check.detail).length + PER_CHECK_OVERHEAD, 0);
}

/**
 * What a case bundle keeps of one of its artefact bundles once it is checked, as custodia_bundle's summarise: every
 * failed part with its first failure, at most NESTED_FAILURES_KEPT failures besides, a count of those let go, and
 * one check per part that passed, with how many passed. Its custody history is not kept.
 */
function summarise(verification) {
  const kept = [];
  const failedParts = new Set();
  let failures = 0;
  let letGo = null;
  for (const check of verification.checks) {
    if (check.passed) continue;
    const first = !failedParts.has(check.part);
    failedParts.add(check.part);
    if (first || failures < NESTED_FAILURES_KEPT) {
      failures += 1;
      kept.push(check);
    } else {
      letGo ??= { part: check.part, count: 0 };
      letGo.count += 1;
    }
  }
  if (letGo) kept.push({ part: letGo.part, passed: false, detail: `and ${letGo.count} more failed checks, not kept` });
  const passed = new Map();
  for (const check of verification.checks) {
    if (!check.passed || failedParts.has(check.part)) continue;
    const seen = passed.get(check.part);
    if (seen) seen.count += 1;
    else passed.set(check.part, { detail: check.detail, count: 1 });
  }
  for (const part of PART_ORDER) {
    const seen = passed.get(part);
    if (!seen) continue;
    const detail = seen.count > 1 ? `${seen.detail} (and ${seen.count - 1} more such checks passed)` : seen.detail;
    kept.push({ part, passed: true, detail });
  }
  verification.checks = kept;
  verification.history = null;
  return verification;
}

// Bytes, text and encodings.

const EMPTY = new Uint8Array(0);
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();

function decodeUtf8(bytes) {
  try {
    return utf8.decode(bytes);
  } catch {
    return null;
  }
}

const lossy = new TextDecoder('utf-8', { ignoreBOM: true });

/** Bytes as Rust's String::from_utf8_lossy reads them: a leading byte order mark kept, each bad sequence U+FFFD. */
function lossyUtf8(bytes) {
  return lossy.decode(bytes);
}

/** Rust's str::trim: White_Space (U+0085 included), not JavaScript's trim (which also takes U+FEFF). */
function rustTrim(text) {
  return text.replace(/^[\p{White_Space}]+|[\p{White_Space}]+$/gu, '');
}

function hex(bytes) {
  let out = '';
  for (const b of bytes) out += b.toString(16).padStart(2, '0');
  return out;
}

function bytesEqual(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64_VALUE = new Map([...B64].map((c, i) => [c, i]));

/** Standard base64 with padding, refusing anything non-canonical (as Rust's base64 STANDARD engine does). */
export function base64Decode(text) {
  if (text.length % 4 !== 0) return null;
  const pad = text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0;
  const out = new Uint8Array((text.length / 4) * 3 - pad);
  let bits = 0;
  let acc = 0;
  let at = 0;
  for (let i = 0; i < text.length - pad; i++) {
    const v = B64_VALUE.get(text[i]);
    if (v === undefined) return null;
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[at++] = (acc >> bits) & 0xff;
    }
  }
  // Leftover bits must be zero, or two encodings would decode to the same bytes.
  if (bits > 0 && (acc & ((1 << bits) - 1)) !== 0) return null;
  return at === out.length ? out : null;
}

export function base64Encode(bytes) {
  let out = '';
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    out += B64[(n >> 18) & 63] + B64[(n >> 12) & 63];
    out += i + 1 < bytes.length ? B64[(n >> 6) & 63] : '=';
    out += i + 2 < bytes.length ? B64[n & 63] : '=';
  }
  return out;
}

/** A u64 written in decimal as Rust's u64::from_str reads it (digits, an optional leading '+'), or null. */
function parseU64(text) {
  if (!/^\+?[0-9]+$/.test(text)) return null;
  const value = BigInt(text);
  return value <= 0xffff_ffff_ffff_ffffn ? value : null;
}

// Reading the tar, once, as a stream.

/** Chunks of a Blob (a File), in order, reporting progress. */
class BlobSource {
  constructor(blob, onProgress) {
    this.blob = blob;
    this.offset = 0;
    this.buffer = EMPTY;
    this.at = 0;
    this.consumed = 0;
    this.onProgress = onProgress;
  }

  async chunk(max) {
    if (this.at >= this.buffer.length) {
      if (this.offset >= this.blob.size) return EMPTY;
      const end = Math.min(this.blob.size, this.offset + CHUNK);
      this.buffer = new Uint8Array(await this.blob.slice(this.offset, end).arrayBuffer());
      this.offset = end;
      this.at = 0;
    }
    const n = Math.min(max, this.buffer.length - this.at);
    const out = this.buffer.subarray(this.at, this.at + n);
    this.at += n;
    this.consumed += n;
    if (this.onProgress) this.onProgress(this.consumed, this.blob.size);
    return out;
  }
}

/** The bytes of one tar entry, read through its archive and hashed as they pass. */
class EntrySource {
  constructor(parent, size, path) {
    this.parent = parent;
    this.remaining = size;
    this.path = path;
    this.hasher = sha256.create();
    this.count = 0;
  }

  async chunk(max) {
    if (this.remaining === 0) return EMPTY;
    const out = await this.parent.chunk(Math.min(max, this.remaining));
    if (out.length === 0) throw new BundleError(`the bundle ends in the middle of ${this.path}`);
    this.remaining -= out.length;
    this.count += out.length;
    this.hasher.update(out);
    return out;
  }
}

/** Exactly n bytes, or null if the stream ends first (at once: null; part way: an error). */
async function readExact(source, n, what) {
  const out = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const chunk = await source.chunk(n - got);
    if (chunk.length === 0) {
      if (got === 0) return null;
      throw new BundleError(`the bundle ends in the middle of ${what}`);
    }
    out.set(chunk, got);
    got += chunk.length;
  }
  return out;
}

/** A file's padding: n bytes, every one zero (tar tools differ on what they make of others, and no bundle has any). */
async function skipPadding(source, n, what) {
  const padding = (await readExact(source, n, what)) ?? EMPTY;
  if (padding.length < n) throw new BundleError(`the bundle ends in the middle of ${what}`);
  if (padding.some((b) => b !== 0)) {
    throw new BundleError("the bundle is not a readable tar file: non-zero bytes in a file's padding, which no bundle has");
  }
}

function cString(bytes) {
  const end = bytes.indexOf(0);
  return end < 0 ? bytes : bytes.subarray(0, end);
}

function octal(field, what) {
  if (field[0] & 0x80) {
    // GNU base-256 for numbers too large for octal.
    let value = BigInt(field[0] & 0x7f);
    for (const b of field.subarray(1)) value = (value << 8n) | BigInt(b);
    return value;
  }
  const text = new TextDecoder().decode(cString(field)).trim();
  if (!/^[0-7]*$/.test(text)) throw new BundleError(`the bundle is not a readable tar file: ${what} is not octal`);
  return text === '' ? 0n : BigInt(`0o${text}`);
}

/**
 * Refuses a header that tar tools would frame or name otherwise than this reader does, as custodia_bundle's
 * check_header_format: a magic and version neither POSIX ustar's nor GNU's (GNU tar and Python then read a name
 * prefix that this reader ignores), and a size that is neither plain octal (GNU tar reads a leading `+` or `-` as
 * base-64) nor base-256.
 */
function checkHeaderFormat(block) {
  const magic = new TextDecoder().decode(block.subarray(257, 265));
  if (magic !== 'ustar\u000000' && magic !== 'ustar  \u0000') {
    throw malformed('a tar header of neither the POSIX ustar nor the GNU format, which tar tools read differently');
  }
  const size = block.subarray(124, 136);
  let start = 0;
  while (start < size.length && size[start] === 0x20) start++;
  let end = start;
  while (end < size.length && size[end] >= 0x30 && size[end] <= 0x37) end++;
  const plainOctal = end > start && size.subarray(end).every((b) => b === 0x20 || b === 0);
  if (!plainOctal && size[0] !== 0x80) {
    throw malformed('a tar number field that is not plain octal (or base-256), which tar tools read differently');
  }
}

/**
 * The next entry's header (GNU long names and PAX paths applied), {end: true} at a zero block (the end-of-archive
 * marker), or null where the bytes end at a block boundary. Every header, extended ones included, counts toward the
 * budget's files, and must be of the POSIX ustar or the GNU format with a plain octal (or base-256) size; an
 * extended header larger than MAX_EXTENSION is refused before a byte of it is read, a PAX header's records are read
 * strictly (see paxRecords), and a PAX size that disagrees with its entry's header is refused.
 */
async function nextHeader(source, budget) {
  let longName = null;
  let pax = {};
  let extended = false;
  for (;;) {
    const block = await readExact(source, 512, 'a tar header');
    if (block === null) return null;
    if (block.every((b) => b === 0)) {
      if (extended) throw malformed('an extended header not followed by a regular file');
      return { end: true };
    }
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : block[i];
    if (BigInt(sum) !== octal(block.subarray(148, 156), 'a header checksum')) {
      throw new BundleError('the bundle is not a readable tar file: archive header checksum mismatch');
    }
    budget.takeFile();
    checkHeaderFormat(block);
    const type = block[156];
    let size = octal(block.subarray(124, 136), 'a size');
    if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw malformed('a file size is too large');
    size = Number(size);
    const magic = new TextDecoder().decode(block.subarray(257, 265));
    let name = cString(block.subarray(0, 100));
    if (magic === 'ustar  \u0000' && block.subarray(345, 500).some((b) => b !== 0)) {
      throw malformed('a GNU tar header with a ustar name prefix, which tar tools read differently');
    }
    if (magic === 'ustar\u000000') {
      const prefix = cString(block.subarray(345, 500));
      if (prefix.length > 0) name = concat(prefix, encoder.encode('/'), name);
    }
    const padding = (512 - (size % 512)) % 512;
    if (type === 0x4c /* L: GNU long name */ || type === 0x78 /* x: PAX */) {
      if (extended) throw malformed('two extended headers in a row, which no bundle has');
      extended = true;
      if (size > MAX_EXTENSION) {
        throw malformed(`an extended header of ${size} bytes; no bundle needs more than ${MAX_EXTENSION}`);
      }
      const data = await readExact(source, size, 'an extended header') ?? EMPTY;
      await skipPadding(source, padding, 'an extended header');
      if (type === 0x4c) longName = cString(data);
      else pax = parsePax(data);
      continue;
    }
    if (extended && type !== 0x30 && type !== 0) {
      throw malformed('an extended header not followed by a regular file');
    }
    if (pax.size !== undefined && pax.size !== BigInt(size)) {
      throw malformed(`a PAX header gives a size of ${pax.size} bytes, its entry's header ${size}`);
    }
    const path = pax.path ?? longName ?? name;
    const text = new TextDecoder().decode(path);
    return { type, size, path: text, padding: (512 - (size % 512)) % 512 };
  }
}

/**
 * The records of a PAX extended header's data, read as GNU tar reads them, as custodia_bundle's pax_records: each
 * `<length> <key>=<value>\n`, its length in decimal digits (no sign, no leading zero) counting the whole record, the
 * records filling the data exactly. Anything else is refused: GNU tar stops at a record it cannot read and keeps
 * those before it, where a laxer reader would go on, so the two would name and frame the next file differently.
 */
function paxRecords(data) {
  const bad = () =>
    malformed(
      "a PAX header's records are not each `<length> <key>=<value>` of exactly that length, which tar tools read " +
        'differently',
    );
  const records = [];
  let rest = data;
  while (rest.length > 0) {
    const space = rest.indexOf(0x20);
    if (space < 0) throw bad();
    const digits = rest.subarray(0, space);
    const decimal = digits.every((b) => b >= 0x30 && b <= 0x39);
    if (digits.length === 0 || digits.length > 6 || digits[0] === 0x30 || !decimal) throw bad();
    const length = Number(new TextDecoder().decode(digits));
    if (length <= space + 1 || length > rest.length || rest[length - 1] !== 0x0a) throw bad();
    const record = rest.subarray(space + 1, length - 1);
    const eq = record.indexOf(0x3d);
    if (eq < 0) throw bad();
    records.push([record.subarray(0, eq), record.subarray(eq + 1)]);
    rest = rest.subarray(length);
  }
  return records;
}

/** What a PAX header says of the next entry: its path (bytes) and size (a BigInt), each if given. Only the keys
 * `path` and `size` are accepted, each once. */
function parsePax(data) {
  const given = {};
  for (const [keyBytes, value] of paxRecords(data)) {
    const key = new TextDecoder().decode(keyBytes);
    if (key !== 'path' && key !== 'size') {
      throw malformed(`a PAX header gives ${JSON.stringify(echoed(key))}; only path and size are accepted`);
    }
    if (given[key] !== undefined) throw malformed(`a PAX header gives ${key} twice`);
    given[key] = value;
  }
  const out = {};
  if (given.path !== undefined) {
    if (given.path.includes(0)) throw malformed('a NUL in a path, where tar tools cut the name');
    out.path = given.path;
  }
  if (given.size !== undefined) {
    const text = new TextDecoder().decode(given.size);
    if (!/^(0|[1-9][0-9]*)$/.test(text) || BigInt(text) > 0xffff_ffff_ffff_ffffn) {
      throw malformed('a PAX size is not a number');
    }
    out.size = BigInt(text);
  }
  return out;
}

/**
 * The artefact bundle a case bag's file is in, if it is in one, as custodia_bundle's bundled_in: [its directory's
 * name under data/bundles/, the file's path in that bundle's bag]; null otherwise.
 */
function bundledIn(path) {
  if (!path.startsWith(BUNDLES_DIR)) return null;
  const rest = path.slice(BUNDLES_DIR.length);
  const slash = rest.indexOf('/');
  return slash < 0 ? null : [rest.slice(0, slash), rest.slice(slash + 1)];
}

/** A bag's tag manifest, which fixes its other tag files and through them every file of the bag. */
const TAG_MANIFEST = 'tagmanifest-sha256.txt';

/**
 * Closes the artefact bundle whose files were being read in a case bag (`open`: its name, its files by their paths
 * in its bag, and what the budget held before it), as custodia_bundle's OpenBundle::close: checks it as an artefact
 * bag, keeps what a case bundle keeps of it (its summary, each check naming it; each of its files by name, digest
 * and size, for the case bag's manifests), and lets go of the rest.
 */
function closeBundle(open, bag, trusted, budget) {
  const { name, files, mark } = open;
  const tagManifest = files.get(TAG_MANIFEST)?.sha256 ?? null;
  let size = 0;
  for (const seen of files.values()) size += seen.size;
  const dir = `${BUNDLES_DIR}${name}/`;
  const slim = sortedKeys(files).map((path) => {
    const seen = files.get(path);
    return [`${dir}${path}`, { sha256: seen.sha256, size: seen.size, bytes: null }];
  });
  let verification = verifyArtefactBag(files, trusted, 0);
  budget.keep(checksCost(verification.checks));
  budget.releaseTo(mark);
  // Each kept check names the bundle it is of (the name cut to MAX_ECHOED_NAME), counted as kept.
  verification = summarise(verification);
  const shown = echoed(name);
  for (const check of verification.checks) check.detail = `${shown}: ${check.detail}`;
  budget.keep(checksCost(verification.checks));
  // Its name is held twice: in the set of closed bundles and in its record in the bag's nested bundles.
  budget.keep(2 * encoder.encode(name).length + PER_FILE_OVERHEAD);
  for (const [path, seen] of slim) {
    budget.keep(encoder.encode(path).length + PER_FILE_OVERHEAD);
    const twice = bag.files.has(path);
    bag.files.set(path, seen);
    if (twice) throw malformed(`a file of ${echoed(dir)} appears twice in the bundle`);
  }
  bag.nested.push({ name, verification, tagManifest, size });
}

/**
 * Reads every regular file of the bag below its single top-level directory: its SHA-256 and size, and its bytes
 * unless it is the payload. In a case bag, the files of each artefact bundle (data/bundles/<artefact>/...) come
 * together; each bundle is verified as an artefact bag once its last file has passed, and its files let go but for
 * their names, digests and sizes.
 */
async function readBundle(source, trusted, nestedAllowed, budget) {
  // bundleDirs: in a case bag, the names of the directories under data/bundles/ that directory entries make (one
  // that holds no file is no artefact bundle: see checkCaseContents).
  const bag = { files: new Map(), nested: [], bundleDirs: new Set() };
  // Every directory entry's path in the bag, so that a file of the same path is refused.
  const dirs = new Set();
  // In a case bag: the artefact bundle whose files are being read, and those already read (each bundle's files come
  // together, so that one is checked and let go before the next is read).
  let open = null;
  const closed = new Set();
  let top = null;
  let ended = false;
  for (;;) {
    const header = await nextHeader(source, budget);
    if (header === null) break;
    if (header.end) {
      ended = true;
      break;
    }
    const { type, size } = header;
    const isDir = type === 0x35;
    const isFile = type === 0x30 || type === 0;
    if (!isFile && !isDir) {
      throw malformed(
        'the bundle contains an entry that is neither a regular file nor a directory (a link, a device, a ' +
          'global header), which a bag never does',
      );
    }
    if (isDir && size !== 0) {
      throw malformed(`a directory entry with ${size} bytes of data, which tar tools read as further entries`);
    }
    const path = isDir && header.path.endsWith('/') ? header.path.slice(0, -1) : header.path;
    const slash = path.indexOf('/');
    if (slash < 0 && !isDir) throw malformed(`${echoed(path)} is outside the bag directory`);
    const dir = slash < 0 ? path : path.slice(0, slash);
    const relative = slash < 0 ? '' : path.slice(slash + 1);
    const hostilePart = (part) => part === '' || part === '.' || part === '..';
    if (
      path.startsWith('/') ||
      hostilePart(dir) ||
      ((relative !== '' || !isDir) && relative.split('/').some(hostilePart))
    ) {
      throw malformed(`hostile path ${JSON.stringify(echoed(path))} in the bundle`);
    }
    if (top !== null && top !== dir) throw malformed(`${echoed(path)} is outside the bag directory ${echoed(top)}`);
    top = dir;
    const bundled = nestedAllowed ? bundledIn(relative) : null;
    if (isDir) {
      // A directory of a file's path: tar tools extract one or the other.
      const inOpen = open !== null && bundled !== null && bundled[0] === open.name && open.files.has(bundled[1]);
      if (bag.files.has(relative) || inOpen) throw bothDirectoryAndFile(path);
      // Counted once each, as the names of files are.
      if (relative !== '' && !dirs.has(relative)) {
        budget.keep(encoder.encode(relative).length + PER_FILE_OVERHEAD);
        dirs.add(relative);
      }
      // In a case bag, a directory under data/bundles/ names an artefact bundle's directory, counted once.
      const bundleDir =
        nestedAllowed && relative.startsWith(BUNDLES_DIR) ? relative.slice(BUNDLES_DIR.length).split('/')[0] : '';
      if (bundleDir !== '' && !bag.bundleDirs.has(bundleDir)) {
        budget.keep(encoder.encode(bundleDir).length + PER_FILE_OVERHEAD);
        bag.bundleDirs.add(bundleDir);
      }
      continue;
    }
    if (dirs.has(relative)) throw bothDirectoryAndFile(path);
    if (open !== null && (bundled === null || bundled[0] !== open.name)) {
      const done = open;
      open = null;
      closed.add(done.name);
      closeBundle(done, bag, trusted, budget);
    }
    if (bundled !== null) {
      if (closed.has(bundled[0])) {
        throw malformed(`the files of the artefact bundle ${echoed(bundled[0])} are not together in the case bundle`);
      }
      open ??= { name: bundled[0], files: new Map(), mark: budget.kept };
    }
    budget.keep(encoder.encode(relative).length + PER_FILE_OVERHEAD);
    // Where the file goes: the open bundle's files, by its path in that bag, or the bag's own.
    const [files, inBag] = open !== null && bundled !== null ? [open.files, bundled[1]] : [bag.files, relative];
    const entry = new EntrySource(source, size, relative);
    const isPayload = inBag.startsWith(PAYLOAD_DIR);
    if (!isPayload && size > MAX_SMALL_FILE) {
      throw malformed(`${relative} is ${size} bytes; only the payload may be large`);
    }
    if (!isPayload) budget.keep(size);
    const kept = isPayload ? null : new Uint8Array(size);
    for (;;) {
      const chunk = await entry.chunk(CHUNK);
      if (chunk.length === 0) break;
      if (kept) kept.set(chunk, entry.count - chunk.length);
    }
    await skipPadding(source, header.padding, relative);
    if (files.has(inBag)) throw malformed(`${relative} appears twice in the bundle`);
    files.set(inBag, { sha256: hex(entry.hasher.digest()), size: entry.count, bytes: kept });
  }
  if (open !== null) closeBundle(open, bag, trusted, budget);
  if (!ended) throw malformed('it ends without its end-of-archive marker: it was cut short');
  await endOfArchive(source);
  return bag;
}

const bothDirectoryAndFile = (path) =>
  malformed(`${echoed(path)} is both a directory and a file, which tar tools extract as one or the other`);

/**
 * After the entries and the first zero block: the second block of the end-of-archive marker, and nothing but zero
 * padding to the end, so that no file hides past the marker where a tool told to read on (`tar -i`) would find it.
 */
async function endOfArchive(source) {
  let zeros = 0;
  for (;;) {
    const chunk = await source.chunk(CHUNK);
    if (chunk.length === 0) break;
    const at = chunk.findIndex((b) => b !== 0);
    if (at >= 0) {
      throw malformed(
        `it holds data after its end-of-archive marker (a non-zero byte ${zeros + at} bytes past its first block), ` +
          'which no bundle does',
      );
    }
    zeros += chunk.length;
  }
  if (zeros < 512) throw malformed('it ends without its end-of-archive marker: it was cut short');
}

// The report.

/** Everything the verifier found: every check by part, and what the bundle is about. */
export class Verification {
  constructor() {
    this.checks = [];
    this.artefact = null;
    this.sha256 = null;
    this.records = 0;
    this.kind = 'artefact';
    // In a case bundle whose listing is the one its record commits to: what part of the case it holds, in words.
    this.scope = null;
    // Tar entries read (nested ones included), and the most bytes the read held at once.
    this.filesRead = 0;
    this.peakKeptBytes = 0;
    // How many of the failed checks are only "signed by a key nobody pinned".
    this.unconfirmed = 0;
    // What the witnesses' cosignatures say ({ pinned, witnessed, summary }), when the bundle carries a witness
    // policy or one was pinned.
    this.witnesses = null;
    // Of an artefact bundle: what its trusted time (RFC 3161) says, in words; and when its token passed what the
    // browser checks, what the token claims (its signature being left to a verifier with the authority's root).
    this.timestamp = null;
    this.timestampClaim = null;
  }

  /** 'valid'; 'unknown-signer' when every check passed but the signing key was not pinned; or 'invalid'. */
  get verdict() {
    const failed = this.checks.filter((check) => !check.passed).length;
    if (this.checks.length === 0 || failed > this.unconfirmed) return 'invalid';
    return failed > 0 ? 'unknown-signer' : 'valid';
  }

  get valid() {
    return this.verdict === 'valid';
  }

  /** The parts that failed, each once, in a stable order. */
  get failedParts() {
    const failed = new Set(this.checks.filter((c) => !c.passed).map((c) => c.part));
    return PART_ORDER.filter((part) => failed.has(part));
  }

  pass(part, detail) {
    this.checks.push({ part, passed: true, detail });
  }

  fail(part, detail) {
    this.checks.push({ part, passed: false, detail });
  }

  check(part, ok, pass, fail) {
    if (ok) this.pass(part, pass);
    else this.fail(part, fail);
    return ok;
  }

  /** The same text as the Rust verifier's report, one check per line, then the verdict. */
  toString() {
    // Details and the scope quote the bundle: each is made printable, as custodia_bundle's report does.
    const lines = this.checks.map((c) => `${c.passed ? 'ok  ' : 'FAIL'} ${PARTS[c.part]}: ${printable(c.detail)}`);
    if (this.scope !== null) lines.push(`SCOPE: this is the bundle of ${printable(this.scope)}`);
    if (this.witnesses !== null) lines.push(`WITNESSES: ${printable(this.witnesses.summary)}`);
    if (this.timestamp !== null) lines.push(`Timestamp: ${printable(this.timestamp)}`);
    const verdict = this.verdict;
    const unpinned = this.witnesses !== null && !this.witnesses.pinned;
    lines.push(
      verdict === 'valid' && unpinned
        ? 'VALID: the evidence and its custody history are exactly what the gateway recorded; its witnesses are ' +
            "judged by the bundle's own policy, not one you pinned (check again with the policy from a source you trust)"
        : verdict === 'valid'
          ? 'VALID: the evidence and its custody history are exactly what the gateway recorded'
          : verdict === 'unknown-signer'
            ? 'NOT VERIFIED: unknown signer. The bundle is consistent, but signed by a key you have not confirmed; ' +
              "check again with the gateway's key from a source you trust"
            : `NOT VALID: ${this.failedParts.map((p) => PARTS[p]).join(', ')} failed`,
    );
    return `${lines.join('\n')}\n`;
  }
}

/**
 * Checks a bundle, offline. `trusted` are C2SP verifier keys the user pins (strings); with none, the bundle is
 * checked against its own key and the verdict is at best 'unknown-signer'. Throws a PinError when a pin is not
 * a verifier key (before reading anything), and a BundleError when the file cannot be read as a bundle at all.
 *
 * `limits` ({files, keptBytes}) lowers MAX_FILES and MAX_KEPT_BYTES, as custodia_bundle::verify_within does.
 *
 * @param {Blob} blob  the bundle file
 * `policy` is a witness policy (c2sp.org/tlog-policy text) the user pins: the checkpoint's cosignatures must meet its
 * quorum over every record. Without one, a bundle's own policy is reported as the bundle's. A policy that is not one
 * throws a PolicyError before anything is read.
 *
 * @param {{trusted?: string[], policy?: string, onProgress?: (done: number, total: number) => void, limits?: {files?: number, keptBytes?: number}}} [options]
 * @returns {Promise<Verification>}
 */
export async function verifyBundle(blob, options = {}) {
  const trusted = (options.trusted || []).map((t) => t.trim()).filter(Boolean);
  for (const pin of trusted) if (!parseVerifierKey(pin)) throw new PinError(pin);
  // The pinned policy travels with the pinned keys, into nested bundles too.
  trusted.policy = null;
  if (options.policy && options.policy.trim()) {
    const parsed = parsePolicy(options.policy);
    if (parsed.error) throw new PolicyError(parsed.error);
    trusted.policy = parsed.policy;
  }
  const source = new BlobSource(blob, options.onProgress);
  const budget = new Budget(options.limits);
  const bag = await readBundle(source, trusted, true, budget);
  // What is kept of the artefact bundles of a case bag is counted already; the checks of the bag itself (one or more
  // per file in it, a name in each) are counted as they are made, with its files still held, as
  // custodia_bundle::verify does.
  const nested = bag.nested.reduce((sum, { verification: inner }) => sum + checksCost(inner.checks), 0);
  const verification = verifyBag(bag, trusted);
  budget.keep(Math.max(0, checksCost(verification.checks) - nested));
  verification.filesRead = budget.files;
  verification.peakKeptBytes = budget.peak;
  return verification;
}

function verifyBag(bag, trusted) {
  const isCase =
    bag.nested.length > 0 ||
    bag.bundleDirs.size > 0 ||
    [...bag.files.keys()].some((path) => path.startsWith(BUNDLES_DIR) || path === CASE_LISTING);
  return isCase ? verifyCaseBag(bag, trusted) : verifyArtefactBag(bag.files, trusted, 0);
}

/** The files a case bag holds besides its artefact bundles and custody record. */
const CASE_FILES = new Set([CASE_LISTING, CHECKPOINT, VKEY, PUBLIC_KEY_PEM, REPORT]);

function verifyCaseBag(bag, trusted) {
  const report = new Verification();
  report.kind = 'case';
  checkBag(bag.files, report);
  checkStrays(
    bag.files,
    'a case bundle',
    (path) => path.startsWith(BUNDLES_DIR) || CASE_FILES.has(path) || WITNESS_FILES.has(path),
    report,
  );
  const listingBytes = text(bag.files, CASE_LISTING);
  const listing = listingBytes === null ? null : parseCanonical(listingBytes);
  const listed = listing !== null && fits(listing, CASE_LISTING_SHAPE) ? listing : null;
  const expected = [];
  const own = ownKey(bag.files);
  if (own) expected.push(['Source-Organization', sourceOrganization(own.name)]);
  if (listed) {
    expected.push(['External-Identifier', listed.case]);
    expected.push(['External-Description', caseDescription(listed.case, listed.scope)]);
    expected.push(['Custodia-Scope', scopeTag(listed.scope)]);
  }
  checkBagInfo(bag.files, 'a case bundle', expected, report);
  let records = [];
  const key = bundleKey(bag.files, trusted, report);
  if (key) {
    const checkpointBytes = text(bag.files, CHECKPOINT) ?? EMPTY;
    const checkpointOk = checkCheckpoint(checkpointBytes, key, report);
    records = checkRecords(bag.files, checkpointBytes, key, checkpointOk, report);
  }
  report.records = records.length;
  if (key) checkWitnesses(bag.files, key, trusted.policy ?? null, records.map((r) => r.index), report);
  const listedCase = listed ? listed.case : null;
  checkOpenings(bag.files, records, listedCase && { id: listedCase, whose: "the case listing's" }, report);
  checkCaseContents(bag, records, report);
  if (key && listedCase !== null && records.length === 1) {
    checkReport(bag.files, caseCertificate(key.name, listing, records[0].index), report);
  }
  // Each nested check already names its bundle (see readBundle), counted in the budget.
  for (const { verification: nested } of bag.nested) {
    report.records += nested.records;
    report.unconfirmed += nested.unconfirmed;
    for (const check of nested.checks) report.checks.push(check);
  }
  report.bundles = bag.nested.map(({ name, verification: nested }) => ({
    path: `${BUNDLES_DIR}${name}/`,
    artefact: nested.artefact,
    verdict: nested.verdict,
  }));
  return report;
}

/** The tag files at the top of every bag. */
const TAG_FILES = new Set(['bagit.txt', 'bag-info.txt', 'manifest-sha256.txt', 'tagmanifest-sha256.txt']);

/**
 * Names every file that a bundle of its kind never holds, wherever it is and whatever the bag's checksum manifests
 * say (a forger lists a planted file there too): at the top, the tag files only; under data/, the files `belongs`
 * admits, and in data/custody/ each record (<index>.json) with its proof and openings. (A second record is a record
 * too: the custody history or the case contents refuse it.)
 */
function checkStrays(files, kind, belongs, report) {
  const isRecord = (path) => path.endsWith('.json') && !path.endsWith('.opening.json');
  const custody = new Set();
  for (const path of files.keys()) {
    if (!path.startsWith(CUSTODY_DIR) || !isRecord(path)) continue;
    const index = parseU64(path.slice(CUSTODY_DIR.length, -'.json'.length));
    if (index === null) continue;
    const stem = `${CUSTODY_DIR}${index.toString().padStart(12, '0')}`;
    custody.add(`${stem}.proof`);
    custody.add(`${stem}.opening.json`);
  }
  for (const path of sortedKeys(files)) {
    const known = path.startsWith(CUSTODY_DIR)
      ? isRecord(path) || custody.has(path)
      : path.startsWith('data/')
        ? belongs(path)
        : TAG_FILES.has(path);
    if (!known) report.fail('bag', `${echoed(path)} does not belong in ${kind}`);
  }
}

/**
 * The case export record lists exactly the artefact bundles in the bag, each as exported: by the SHA-256 of its tag
 * manifest and the bytes of all its files.
 */
function checkCaseContents(bag, records, report) {
  const before = report.checks.filter((c) => !c.passed).length;
  // A file directly under data/bundles/ is no artefact bundle (one in a directory of its own is).
  for (const path of sortedKeys(bag.files)) {
    if (!path.startsWith(BUNDLES_DIR) || bundledIn(path) !== null) continue;
    report.fail(
      'case_contents',
      `${echoed(path)} is not an artefact bundle's directory, which is all ${BUNDLES_DIR} holds`,
    );
  }
  // A directory under data/bundles/ with no file in it (tar extracts it, empty) is no artefact bundle either.
  const bundles = new Set(bag.nested.map(({ name }) => name));
  for (const name of [...bag.bundleDirs].sort(compareBytes)) {
    if (bundles.has(name)) continue;
    report.fail('case_contents', `${BUNDLES_DIR}${echoed(name)}/ holds no file of an artefact bundle`);
  }
  if (records.length !== 1) {
    report.fail(
      'case_contents',
      `a case bundle holds exactly one custody record, its case export record; this one holds ${records.length}`,
    );
    return;
  }
  const only = records[0];
  const event = only.record && only.record.event;
  if (!event || event.type !== 'case_exported') {
    report.fail('case_contents', `record ${only.index} is not a case export record`);
    return;
  }
  const listingBytes = text(bag.files, CASE_LISTING);
  if (listingBytes === null) {
    report.fail('case_contents', `${CASE_LISTING} is missing`);
    return;
  }
  if (hex(sha256(listingBytes)) !== event.listing_sha256) {
    report.fail('case_contents', `${CASE_LISTING} is not the listing that case export record ${only.index} commits to`);
    return;
  }
  const listing = parseCanonical(listingBytes);
  if (listing === null || !fits(listing, CASE_LISTING_SHAPE)) {
    // As custodia_bundle's CaseListing::from_bytes: a listing of another version is named as such.
    const anyVersion = { ...CASE_LISTING_SHAPE, v: isU32, salt: (v) => typeof v === 'string' };
    const other = listing !== null && fits(listing, anyVersion);
    report.fail(
      'case_contents',
      other && listing.v !== CASE_LISTING_VERSION
        ? `${CASE_LISTING}: listing version ${listing.v} is not ${CASE_LISTING_VERSION}`
        : `${CASE_LISTING}: not a valid case listing`,
    );
    return;
  }
  // The scope the listing names is the one the record commits to.
  const openings = parseOpenings(text(bag.files, `${CUSTODY_DIR}${only.index.toString().padStart(12, '0')}.opening.json`) ?? EMPTY);
  const opened = openings?.hearing?.text ?? null;
  const { scope } = listing;
  let scopeAgrees = false;
  if (scope.kind === 'case' && event.hearing === undefined) {
    scopeAgrees = true;
  } else if (scope.kind === 'hearing' && event.hearing !== undefined) {
    scopeAgrees = opened === scope.hearing;
    if (!scopeAgrees) {
      report.fail(
        'case_contents',
        `the listing names hearing ${scope.hearing}, but case export record ${only.index} is of hearing ${opened ?? '(not opened)'}`,
      );
    }
  } else if (scope.kind === 'case') {
    report.fail(
      'case_contents',
      `the listing says it is the whole case, but case export record ${only.index} is of one hearing's output`,
    );
  } else {
    report.fail(
      'case_contents',
      `the listing says it is hearing ${scope.hearing}'s output only, but case export record ${only.index} is of the whole case`,
    );
  }
  if (scopeAgrees) report.scope = describeScope(listing.case, scope);
  if (listing.bundles.length !== event.artefacts) {
    report.fail('case_contents', `the listing names ${listing.bundles.length} bundles, the case export record ${event.artefacts}`);
  }
  const listed = new Map();
  for (const bundle of listing.bundles) {
    if (listed.has(bundle.artefact)) {
      report.fail('case_contents', `the listing names artefact ${bundle.artefact} twice`);
    }
    listed.set(bundle.artefact, bundle);
  }
  const held = new Map(bag.nested.map((nested) => [nested.name, nested]));
  for (const name of [...listed.keys()].sort(compareBytes)) {
    const bundle = listed.get(name);
    const dir = `${BUNDLES_DIR}${bundle.artefact}/`;
    const nested = held.get(name);
    if (!nested) {
      report.fail(
        'case_contents',
        `artefact ${name} is missing: the case export record lists ${dir}, and the bundle does not hold it`,
      );
    } else if (nested.tagManifest !== bundle.sha256 || nested.size !== bundle.size) {
      report.fail(
        'case_contents',
        `artefact ${name}: ${dir} is not the bundle this export made (tag manifest SHA-256 ` +
          `${nested.tagManifest ?? 'none'}, ${nested.size} bytes; the case export record lists ${bundle.sha256}, ` +
          `${bundle.size} bytes): it was swapped or altered`,
      );
    }
  }
  for (const nested of bag.nested) {
    const dir = `${BUNDLES_DIR}${nested.name}/`;
    if (!listed.has(nested.name)) {
      report.fail('case_contents', `${echoed(dir)} is not in the case export record: it was added`);
      continue;
    }
    const { artefact } = nested.verification;
    if (artefact && artefact !== nested.name) {
      report.fail('case_contents', `${echoed(dir)} holds the bundle of artefact ${artefact}`);
    }
  }
  if (report.checks.filter((c) => !c.passed).length === before) {
    report.pass(
      'case_contents',
      `case export record ${only.index} lists ${listing.bundles.length} artefact bundles of ` +
        `${describeScope(listing.case, listing.scope)}; each is here, as exported, and nothing else`,
    );
  }
}

/** The bundle's own key, unchecked; null if it carries no usable key. */
function ownKey(files) {
  const vkeyText = text(files, VKEY);
  const vkeyString = vkeyText ? decodeUtf8(vkeyText) : null;
  return vkeyString === null ? null : parseVerifierKey(rustTrim(vkeyString));
}

// bag-info.txt, as custodia_bundle writes it: these labels, each once, in this order; Custodia-Scope in case bags.
const BAG_INFO_LABELS = [
  'Source-Organization',
  'Bagging-Date',
  'Payload-Oxum',
  'External-Identifier',
  'External-Description',
  'Custodia-Scope',
  'Bag-Software-Agent',
];

const sourceOrganization = (origin) => `Custodia gateway ${origin}`;

/** bag-info.txt's External-Description of a case bundle, which says its scope. */
function caseDescription(theCase, scope) {
  return scope.kind === 'case'
    ? `Court bundle of case ${theCase}: one bundle per artefact`
    : `Court bundle of hearing ${scope.hearing} of case ${theCase} only, not the whole case: one bundle per artefact of the hearing's output`;
}

/** bag-info.txt's Custodia-Scope: `case`, or `hearing <id>`. */
const scopeTag = (scope) => (scope.kind === 'case' ? 'case' : `hearing ${scope.hearing}`);

/** The scope in words, for the certificate and the report. */
function describeScope(theCase, scope) {
  return scope.kind === 'case' ? `the whole case ${theCase}` : `hearing ${scope.hearing} of case ${theCase} only, not the whole case`;
}

/**
 * bag-info.txt: each line `Label: value` (a line that starts with a space or a tab goes on with the one before), every
 * label the gateway writes for this kind of bag present once and no other, Payload-Oxum the payload's bytes and
 * files (everything under data/), Bagging-Date a date, and the values `expected` exactly. It is not evidence, any
 * more than the certificate: a bag-info.txt that says something else (a hearing's bundle relabelled as the whole
 * case) is reported.
 */
/** Whether `text` is YYYY-MM-DD and a day of the proleptic Gregorian calendar (years 0000 to 9999). */
function isCalendarDate(text) {
  const match = /^([0-9]{4})-([0-9]{2})-([0-9]{2})$/.exec(text);
  if (!match) return false;
  const [year, month, day] = match.slice(1).map(Number);
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  const days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
  return month >= 1 && month <= 12 && day >= 1 && day <= days[month - 1];
}

function checkBagInfo(files, kind, expected, report) {
  const INFO = 'bag-info.txt';
  const bytes = text(files, INFO);
  const body = bytes ? decodeUtf8(bytes) : null;
  if (body === null) {
    report.fail('bag', `${INFO} is missing or not UTF-8`);
    return;
  }
  const before = report.checks.filter((c) => !c.passed).length;
  if (body.includes('\r')) {
    report.fail('bag', `${INFO} has a carriage return; the gateway writes its lines with LF only`);
  }
  const fields = [];
  const lines = body.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  lines.forEach((raw, at) => {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const continued = line.startsWith(' ') || line.startsWith('\t');
    const colon = line.indexOf(':');
    if (continued && fields.length > 0) {
      fields[fields.length - 1][1] += ` ${line.replace(/^[ \t]+/, '')}`;
    } else if (!continued && colon > 0 && !/[ \t]/.test(line.slice(0, colon))) {
      fields.push([line.slice(0, colon), line.slice(colon + 1).replace(/^[ \t]+/, '')]);
    } else {
      report.fail('bag', `${INFO}: line ${at + 1} is not \`Label: value\``);
    }
  });
  const allowed = BAG_INFO_LABELS.filter((label) => label !== 'Custodia-Scope' || kind === 'a case bundle');
  const seen = new Set();
  for (const [label] of fields) {
    if (!allowed.includes(label)) {
      report.fail('bag', `${INFO} gives ${label}, which the ${INFO} of ${kind} does not`);
    } else if (seen.has(label)) {
      report.fail('bag', `${INFO} gives ${label} more than once`);
    }
    seen.add(label);
  }
  const value = (label) => fields.find(([l]) => l === label)?.[1];
  for (const label of allowed) if (value(label) === undefined) report.fail('bag', `${INFO} lacks ${label}`);
  let octets = 0;
  let count = 0;
  for (const [path, file] of files) {
    if (!path.startsWith('data/')) continue;
    octets += file.size;
    count += 1;
  }
  const oxum = `${octets}.${count}`;
  const foundOxum = value('Payload-Oxum');
  if (foundOxum !== undefined && foundOxum !== oxum) {
    report.fail('bag', `${INFO} gives Payload-Oxum ${foundOxum}, but the payload is ${oxum} (bytes.files)`);
  }
  const date = value('Bagging-Date');
  if (date !== undefined && !isCalendarDate(date)) {
    report.fail('bag', `${INFO} gives Bagging-Date ${date}, which is not a calendar date (YYYY-MM-DD)`);
  }
  const agent = value('Bag-Software-Agent');
  if (agent !== undefined && !/^custodia [0-9]+\.[0-9]+\.[0-9]+$/.test(agent)) {
    report.fail('bag', `${INFO} gives Bag-Software-Agent ${agent}, which is not custodia <version> as the gateway writes it`);
  }
  for (const [label, want] of expected) {
    const found = value(label);
    if (found !== undefined && found !== want) {
      report.fail('bag', `${INFO} gives ${label} "${found}" where the checked files make "${want}"`);
    }
  }
  if (report.checks.filter((c) => !c.passed).length === before) {
    report.pass('bag', `${INFO} says what the checked files say (Payload-Oxum ${oxum})`);
  }
}

/** The bundle's own key, checked against the keys the user pins; null if the bundle carries no usable key. */
function bundleKey(files, trusted, report) {
  const key = ownKey(files);
  if (!key) {
    report.fail('trusted_key', `${VKEY} is missing or not a C2SP verifier key`);
    return null;
  }
  if (trusted.length === 0) {
    report.fail(
      'trusted_key',
      `not verified: unknown signer: signed by ${key.vkey}, a key you have not confirmed (none was pinned)`,
    );
    report.unconfirmed += 1;
  } else {
    report.check(
      'trusted_key',
      trusted.includes(key.vkey),
      `signed by trusted key ${key.vkey}`,
      `signed by ${key.vkey}, which is not among the trusted keys`,
    );
  }
  return key;
}

/** The checkpoint every proof is against: signed by the key. Whether it is. */
function checkCheckpoint(checkpointBytes, key, report) {
  const opened = openCheckpoint(checkpointBytes, key);
  if (opened.checkpoint) {
    const cp = opened.checkpoint;
    report.pass('checkpoint', `log ${cp.origin} at size ${cp.size} is signed by the gateway`);
    report.log = { origin: cp.origin, size: cp.size.toString() };
    return true;
  }
  report.fail('checkpoint', `${CHECKPOINT}: ${opened.error}`);
  return false;
}

function sortedKeys(map) {
  return [...map.keys()].sort(compareBytes);
}

/** Byte order of UTF-8 strings, as Rust's BTreeMap<String, _> sorts them. */
function compareBytes(a, b) {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

function text(files, path) {
  const seen = files.get(path);
  return seen && seen.bytes ? seen.bytes : null;
}

/** The files an artefact bag holds besides its payload and custody records. */
const ARTEFACT_FILES = new Set([MANIFEST, MANIFEST_SIGNATURE, CHECKPOINT, VKEY, PUBLIC_KEY_PEM, REPORT]);

/**
 * An artefact bag, as custodia_bundle's verify_artefact_bag; `depth` is how many provider's chains it is nested in.
 * Its provider's chain (data/provenance/) is taken out of `files` once the checks of the bag's own files are made.
 */
function verifyArtefactBag(files, trusted, depth) {
  const report = new Verification();
  checkBag(files, report);
  checkStrays(
    files,
    'an artefact bundle',
    (path) =>
      path.startsWith(PAYLOAD_DIR) ||
      path.startsWith(PROVENANCE_DIR) ||
      ARTEFACT_FILES.has(path) ||
      WITNESS_FILES.has(path) ||
      TIMESTAMP_FILES.has(path),
    report,
  );

  const payloads = sortedKeys(files).filter((p) => p.startsWith(PAYLOAD_DIR));
  const expected = [];
  const own = ownKey(files);
  if (own) expected.push(['Source-Organization', sourceOrganization(own.name)]);
  // The artefact is the payload's name here; the payload's check ties that name to the signed manifest.
  if (payloads.length === 1 && isIdentifier(payloads[0].slice(PAYLOAD_DIR.length))) {
    const artefact = payloads[0].slice(PAYLOAD_DIR.length);
    expected.push(['External-Identifier', artefact]);
    expected.push(['External-Description', `Court bundle of artefact ${artefact}, with its custody history and proofs`]);
  }
  checkBagInfo(files, 'an artefact bundle', expected, report);
  // The bag's own checks of every file are made: the provider's chain is taken out to be checked as a bag.
  const chain = takeProviderChain(files);
  const chainKeys = providerKeys(chain);
  if (payloads.length !== 1) {
    report.fail('payload_hash', `expected one file under ${PAYLOAD_DIR}, found ${payloads.length}: ${payloads.join(', ')}`);
    return report;
  }
  const payloadPath = payloads[0];
  const payload = files.get(payloadPath);
  report.sha256 = payload.sha256;

  // The key: the bundle's own, which must be one the user trusts.
  const key = bundleKey(files, trusted, report);
  if (!key) return report;

  // The manifest: signed by the key, and naming exactly the payload's bytes.
  const manifestBytes = text(files, MANIFEST) ?? EMPTY;
  const signatureBytes = text(files, MANIFEST_SIGNATURE);
  const signature = signatureBytes && signatureBytes.length === 64 ? signatureBytes : null;
  let manifest = null;
  let signed = false;
  if (signature === null) {
    report.fail('manifest_signature', `${MANIFEST_SIGNATURE} is missing or not 64 bytes`);
  } else if (!verifyStrict(signature, manifestBytes, key.publicKey)) {
    report.fail('manifest_signature', `${MANIFEST}: manifest signature does not verify under the given key`);
    manifest = parseManifest(manifestBytes).manifest;
  } else {
    const parsed = parseManifest(manifestBytes);
    if (parsed.error) {
      report.fail('manifest_signature', `${MANIFEST}: ${parsed.error}`);
    } else if (parsed.manifest.type !== MANIFEST_TYPE) {
      report.fail('manifest_signature', `${MANIFEST}: manifest type ${JSON.stringify(parsed.manifest.type)} is not "${MANIFEST_TYPE}"`);
    } else {
      report.pass('manifest_signature', `${MANIFEST} is signed by the gateway`);
      manifest = parsed.manifest;
      signed = true;
    }
  }
  if (manifest) {
    report.artefact = manifest.artefact;
    const expectedPath = `${PAYLOAD_DIR}${manifest.artefact}`;
    report.check(
      'payload_hash',
      manifest.sha256 === payload.sha256 && manifest.size === payload.size && payloadPath === expectedPath,
      `${payloadPath} has SHA-256 ${payload.sha256} and ${payload.size} bytes, as the signed manifest says`,
      `${payloadPath} has SHA-256 ${payload.sha256} (${payload.size} bytes), but the signed manifest says ${manifest.sha256} (${manifest.size} bytes) for ${expectedPath}`,
    );
  } else {
    report.fail('payload_hash', 'no readable manifest to check the payload against');
  }

  // The checkpoint every proof is against.
  const checkpointBytes = text(files, CHECKPOINT) ?? EMPTY;
  const checkpointOk = checkCheckpoint(checkpointBytes, key, report);

  const records = checkRecords(files, checkpointBytes, key, checkpointOk, report);
  report.records = records.length;
  checkWitnesses(files, key, trusted.policy ?? null, records.map((r) => r.index), report);
  checkTimestamp(files, checkpointOk ? checkpointBytes : null, key, records, report);
  checkHistory(records, manifest, manifestBytes, signature, report);
  checkOpenings(files, records, manifest && { id: manifest.case, whose: "the signed manifest's" }, report);
  checkProviderChain(chain, files, records, payload, key, trusted, depth, report);
  // The certificate, made again from the checked files; only when the manifest is the gateway's own.
  if (signed) {
    const facts = {
      manifest,
      records: records.map(({ index }) => {
        const stem = `${CUSTODY_DIR}${index.toString().padStart(12, '0')}`;
        return { index, entry: text(files, `${stem}.json`) ?? EMPTY, openings: text(files, `${stem}.opening.json`) ?? EMPTY };
      }),
      checkpoint: checkpointBytes,
      vkey: vkeyText(files),
      timestamp: text(files, TIMESTAMP_ENTRY) && text(files, TIMESTAMP_PROOF) && [text(files, TIMESTAMP_ENTRY), text(files, TIMESTAMP_PROOF)],
      providerKeys: chainKeys,
    };
    checkReport(files, certificate(facts, key), report);
  }
  return report;
}

/**
 * The provider's chain of an artefact bag, as custodia_bundle's take_provider_chain: its files under
 * data/provenance/, taken out of `files` (so that the bag's files are held once, however deep chains nest), each
 * path relative to the provider's bag.
 */
function takeProviderChain(files) {
  const chain = new Map();
  for (const [path, seen] of [...files]) {
    if (!path.startsWith(PROVENANCE_DIR)) continue;
    files.delete(path);
    chain.set(path.slice(PROVENANCE_DIR.length), seen);
  }
  return chain;
}

/**
 * The keys (C2SP verifier keys, trimmed) of a provider's chain and of each chain nested in it, outermost first, as
 * custodia_bundle's provider_keys: the text of every file of `chain` at data/keys/gateway.vkey below any number of
 * data/provenance/.
 */
function providerKeys(chain) {
  const found = [];
  for (const [path, seen] of chain) {
    if (!seen.bytes) continue;
    let rest = path;
    let depth = 0;
    while (rest.startsWith(PROVENANCE_DIR)) {
      rest = rest.slice(PROVENANCE_DIR.length);
      depth += 1;
    }
    if (rest === VKEY) found.push([depth, rustTrim(lossyUtf8(seen.bytes))]);
  }
  found.sort(([a, x], [b, y]) => a - b || compareBytes(x, y));
  return found.map(([, key]) => key);
}

/** The first three lines of a checkpoint (origin, size, root hash), as a received_from record names it, as
 * custodia_bundle's checkpoint_head (Rust's str::lines: a line ends at "\n" or "\r\n"). */
function checkpointHead(bytes) {
  const lines = [];
  let rest = lossyUtf8(bytes);
  while (rest !== '' && lines.length < 3) {
    const newline = rest.indexOf('\n');
    let line = newline < 0 ? rest : rest.slice(0, newline);
    if (newline >= 0 && line.endsWith('\r')) line = line.slice(0, -1);
    lines.push(line);
    rest = newline < 0 ? '' : rest.slice(newline + 1);
  }
  return lines.join('\n');
}

/**
 * Of a bag that holds an artefact received from a partner gateway, as custodia_bundle's check_provider_chain: the
 * provider's chain (`chain`, taken from under data/provenance/) is the provider's bag but its payload, which is this
 * bag's payload. There is a chain exactly when there is one received_from record; the record commits to it (its
 * opened `provenance` names the chain's manifest by SHA-256, its artefact and its checkpoint); it is another
 * gateway's (a gateway is not its own provider); and it is checked as that gateway's bag with the same pinned keys
 * (the provider's key must be among them, or its trusted key check fails), at `depth` + 1, each of its checks kept
 * (not summarised) and named "provider's chain: " (twice for a chain within a chain). A witness policy the reader
 * pinned is about the bag's own gateway, not about its providers: the chain is checked without it.
 *
 * The chain's files were counted as this bag's when they were read; as in custodia_bundle, the chain's checks are
 * counted with this bag's own.
 */
function checkProviderChain(chain, files, records, payload, own, trusted, depth, report) {
  const received = records
    .filter((bundled) => bundled.record && bundled.record.event.type === 'received_from')
    .map((bundled) => ({ index: bundled.index, provenance: providerProvenance(files, bundled.index) }));
  if (chain.size === 0 && received.length === 0) return;
  const dir = PROVENANCE_DIR;
  if (depth >= MAX_PROVIDER_DEPTH) {
    report.fail('provider_chain', `provider's chains nest deeper than ${MAX_PROVIDER_DEPTH}`);
    return;
  }
  if (received.length === 0) {
    report.fail(
      'provider_chain',
      `the bag holds a provider's chain in ${dir}, but no received_from record says where it came from`,
    );
  } else if (received.length === 1 && chain.size === 0) {
    report.fail(
      'provider_chain',
      `record ${received[0].index} says the artefact was received from a partner, but ${dir} holds no chain`,
    );
  } else if (received.length > 1) {
    report.fail(
      'provider_chain',
      `the bag holds ${received.length} received_from records; an artefact is received once`,
    );
  }
  if (chain.size === 0) return;
  const manifestBytes = text(chain, MANIFEST) ?? EMPTY;
  const manifest = parseManifest(manifestBytes).manifest;
  const chainKey = ownKey(chain);
  if (received.length === 1) {
    const [{ index, provenance }] = received;
    const digest = hex(sha256(manifestBytes));
    const checkpoint = checkpointHead(text(chain, CHECKPOINT) ?? EMPTY);
    const artefact = manifest ? manifest.artefact : null;
    const commits =
      provenance.manifestSha256 === digest &&
      provenance.artefact !== null &&
      provenance.artefact === artefact &&
      provenance.checkpoint === checkpoint;
    report.check(
      'provider_chain',
      commits,
      `record ${index} (received_from) commits to the provider's chain in ${dir}: its manifest, artefact and checkpoint`,
      `record ${index} (received_from) commits to another provider's chain than the one in ${dir} (its manifest, artefact or checkpoint differ)`,
    );
  }
  if (chainKey && chainKey.vkey === own.vkey) {
    report.fail(
      'provider_chain',
      `the chain in ${dir} is signed by this bag's own key: a gateway is not its own provider`,
    );
  }
  // The provider's payload is this bag's payload: its path is the one the provider's manifest names.
  if (manifest) chain.set(`${PAYLOAD_DIR}${manifest.artefact}`, payload);
  const pins = [...trusted];
  pins.policy = null;
  const checked = verifyArtefactBag(chain, pins, depth + 1);
  report.records += checked.records;
  report.unconfirmed += checked.unconfirmed;
  for (const check of checked.checks) report.checks.push({ ...check, detail: `${PROVIDER_CHAIN}${check.detail}` });
}

/**
 * What a received_from record's opened `provenance` names of the provider's chain: its manifest's SHA-256
 * (`provider_manifest_sha256`), its artefact (`provider_artefact`) and its checkpoint's first three lines
 * (`provider_checkpoint`), each null when not named, and all null unless the openings are canonical and the
 * `provenance` text is canonical JSON, an object of strings.
 */
function providerProvenance(files, index) {
  const none = { manifestSha256: null, artefact: null, checkpoint: null };
  const openings = parseOpenings(text(files, `${CUSTODY_DIR}${index.toString().padStart(12, '0')}.opening.json`) ?? EMPTY);
  if (openings === null || !Object.hasOwn(openings, 'provenance')) return none;
  const provenance = parseCanonical(encoder.encode(openings.provenance.text));
  if (provenance === null || typeof provenance !== 'object' || Array.isArray(provenance)) return none;
  if (!Object.values(provenance).every((value) => typeof value === 'string')) return none;
  const named = (field) => (Object.hasOwn(provenance, field) ? provenance[field] : null);
  return {
    manifestSha256: named(PROVIDER_MANIFEST_FIELD),
    artefact: named('provider_artefact'),
    checkpoint: named('provider_checkpoint'),
  };
}

/** The bundle's key file as the certificate quotes it. */
function vkeyText(files) {
  const bytes = text(files, VKEY);
  return bytes ? rustTrim(lossyUtf8(bytes)) : '';
}

/** The certificate says exactly what the checked files make of it, or the first line that differs is named. */
function checkReport(files, expected, report) {
  const found = text(files, REPORT);
  if (found === null) {
    report.fail('report', `${REPORT} is missing`);
    return;
  }
  if (bytesEqual(found, encoder.encode(expected))) {
    report.pass('report', `${REPORT} says what the checked files say`);
    return;
  }
  const foundLines = new TextDecoder().decode(found).split('\n');
  const expectedLines = expected.split('\n');
  let differs = 0;
  while (differs < Math.max(foundLines.length, expectedLines.length) && foundLines[differs] === expectedLines[differs]) {
    differs += 1;
  }
  report.fail(
    'report',
    `${REPORT} does not say what the checked files say: its line ${differs + 1} reads "${echoed(foundLines[differs] ?? '')}" ` +
      `where they make "${echoed(expectedLines[differs] ?? '')}"`,
  );
}

// The certificate (data/REPORT.txt), as custodia_bundle's report.rs writes it: the verifiers make it again from the
// checked files, so a certificate that says anything else is reported.

/** A record in words, with its committed fields opened. */
function describe(event, openings) {
  const open = (field) => openings?.[field]?.text ?? '(not opened)';
  switch (event.type) {
    case 'artefact_registered':
      return 'taken into custody, manifest signed';
    case 'artefact_accessed':
      return `${event.access} from ${open('site')}`;
    case 'artefact_exported':
      return `exported as ${event.format}`;
    case 'artefact_transferred':
      return `custody transferred to ${event.recipient} (${open('jurisdiction')})`;
    case 'derivative_made':
      return `derived from ${event.source} by ${open('operation')}`;
    case 'hearing_event':
      return `hearing event: ${event.kind}`;
    case 'policy_changed':
      return `use restrictions: ${open('change')}`;
    case 'wider_use_requested':
      return 'wider use requested';
    case 'outcome_reported':
      return `outcome reported: ${open('outcome')}`;
    case 'access_refused':
      return `REFUSED ${open('action')}: ${event.code}`;
    case 'membership_changed':
      return `membership of ${event.member} ${event.change}, role ${openings?.role?.text ?? 'none'}`;
    case 'case_exported':
      return event.hearing === undefined
        ? `case exported (${event.artefacts} artefact bundles)`
        : `hearing ${open('hearing')} exported (${event.artefacts} artefact bundles)`;
    case 'transfer_evidence':
      return `transfer evidence: ${event.rung}`;
    case 'received_from':
      return `received from partner gateway ${open('provider')}`;
    default:
      return 'other custody event';
  }
}

/** An artefact bundle's certificate, from its signed manifest, records, openings, checkpoint and key. */
function certificate(facts, key) {
  const { manifest } = facts;
  const payload = `${PAYLOAD_DIR}${manifest.artefact}`;
  const out = [
    'CERTIFICATE OF AUTHENTICITY OF ELECTRONIC EVIDENCE',
    'Generated by a Custodia gateway, in the manner of FRE 902(14) and ISO/IEC 27037.',
    'This text is not evidence: it says in words what the checked files of this bundle say, and',
    'the verifiers make it again from them and report it if it says anything else.',
    '',
    `Artefact:      ${manifest.artefact}`,
    `Case:          ${manifest.case}`,
    `Media type:    ${manifest.media_type}`,
  ];
  if (manifest.original_name !== undefined) out.push(`Original name: ${manifest.original_name}`);
  out.push(
    `Registered:    ${manifest.registered_at} by ${manifest.registered_by}`,
    `SHA-256:       ${manifest.sha256}`,
    `Size:          ${manifest.size} bytes`,
    `Payload:       ${payload}`,
    `Signing key:   ${facts.vkey}`,
  );
  const providers = facts.providerKeys ?? [];
  if (providers.length > 0) {
    out.push(`Received from: the partner gateway of key ${providers[0]}; its chain is in ${PROVENANCE_DIR}`);
  }
  const opened = openCheckpoint(facts.checkpoint, key);
  if (opened.checkpoint) {
    const cp = opened.checkpoint;
    out.push(`Log:           ${cp.origin} at size ${cp.size}, root ${base64Encode(cp.root)}`);
  }
  // The entry and its index only, not what its token says: the certificate must read alike in both verifiers,
  // whatever a token holds, and the token is reported by the checks of trusted time.
  const stampEntry = facts.timestamp ? parseTimestampEntry(facts.timestamp[0]) : null;
  const stampProof = facts.timestamp ? parseProof(facts.timestamp[1]).proof : undefined;
  const stamped = stampEntry && stampProof ? { size: stampEntry.size, index: stampProof.index } : null;
  if (stamped) {
    out.push(
      `Trusted time:  the log at size ${stamped.size} is stamped by a Time-Stamp Authority (RFC 3161): log entry #${stamped.index}, ${TIMESTAMP_ENTRY}`,
    );
  }
  out.push('', `CUSTODY HISTORY (${facts.records.length} records, in ledger order; each has an inclusion proof)`, '');
  for (const { index, entry, openings: openingBytes } of facts.records) {
    const record = parseRecord(entry);
    const number = String(index).padEnd(8);
    if (!record) {
      out.push(`  #${number} unreadable record`);
      continue;
    }
    const openings = parseOpenings(openingBytes) ?? {};
    out.push(
      `  #${number} ${record.at}  ${describe(record.event, openings)}  by ${record.actor}  purpose: ${openings.purpose?.text ?? '(not opened)'}`,
    );
    if (record.repeated) {
      out.push(`            (stands for ${record.repeated.count} identical attempts since ${record.repeated.since})`);
    }
  }
  out.push(
    '',
    'HOW TO CHECK THIS BUNDLE',
    '',
    `  With Custodia's verifier, offline:  custodia verify <bundle> --trusted-key '${facts.vkey}'${providers
      .map((key) => ` --trusted-key '${key}'`)
      .join('')}`,
  );
  if (providers.length > 0) out.push("  (this gateway's key, then its provider's: each from a source you trust)");
  out.push(
    '  By hand, with standard tools: see docs/verify-by-hand.md. In short:',
    `    1. sha256sum ${payload}  (must print the SHA-256 above)`,
    `    2. openssl pkeyutl -verify -pubin -inkey ${PUBLIC_KEY_PEM} -rawin -in ${MANIFEST} -sigfile ${MANIFEST_SIGNATURE}`,
    `    3. each ${CUSTODY_DIR}<index>.proof proves ${CUSTODY_DIR}<index>.json is entry <index> of the signed log`,
    '       (c2sp.org/tlog-proof@v1; leaf hash = SHA-256(0x00 || record), RFC 6962).',
    `    4. each ${CUSTODY_DIR}<index>.opening.json opens the record's commitments (case, purpose, ...): see the document.`,
  );
  if (providers.length > 0) {
    out.push(
      `    5. ${PROVENANCE_DIR} is the provider's bag but its payload, which is this one: check it as a bag too, with the`,
      '       provider\'s key (see the document, "Evidence received from a partner gateway").',
    );
  }
  if (stamped) {
    out.push(
      "  Trusted time: custodia verify <bundle> --tsa-anchor <the authority's root PEM> [--trusted-list <TL.xml>],",
      `    or openssl ts -verify on the token of ${TIMESTAMP_ENTRY}: see the document, step 3b.`,
    );
  }
  return `${out.join('\n')}\n`;
}

/** A case bundle's certificate, from its listing and its case export record's index. */
function caseCertificate(origin, listing, recordIndex) {
  const out = [
    'CERTIFICATE OF AUTHENTICITY OF ELECTRONIC EVIDENCE: CASE BUNDLE',
    `Generated by the Custodia gateway ${origin}, in the manner of FRE 902(14) and ISO/IEC 27037.`,
    'This text is not evidence: it says in words what the checked files of this bundle say, and',
    'the verifiers make it again from them and report it if it says anything else.',
    '',
    `Case: ${listing.case}`,
    `Scope: ${describeScope(listing.case, listing.scope)}`,
    `This bag holds ${listing.bundles.length} artefact bundles, each unpacked in its directory, complete and ` +
      'verifiable on its own:',
    '',
  ];
  for (const bundle of listing.bundles) {
    out.push(`  ${BUNDLES_DIR}${bundle.artefact}/  tag manifest SHA-256 ${bundle.sha256}  (${bundle.size} bytes)`);
  }
  const entry = `${CUSTODY_DIR}${recordIndex.toString().padStart(12, '0')}.json`;
  out.push(
    '',
    `The export is custody record #${recordIndex} (${entry}), in the gateway's public log. It commits to the`,
    `listing ${CASE_LISTING} by its SHA-256 and count, so an artefact bundle left out, added or swapped is caught.`,
    '',
    'HOW TO CHECK: custodia verify <this file> --trusted-key <key> checks every bundle in it;',
    `or unpack it and check the listing and each bundle's directory under ${BUNDLES_DIR} as ` +
      'docs/verify-by-hand.md describes.',
  );
  return `${out.join('\n')}\n`;
}

/** The bag: bagit.txt, every file listed with its right checksum, nothing unlisted, and tag files intact. */
function checkBag(files, report) {
  const declaration = text(files, 'bagit.txt') ?? EMPTY;
  report.check(
    'bag',
    bytesEqual(declaration.subarray(0, 19), encoder.encode('BagIt-Version: 1.0\n')),
    'bagit.txt declares BagIt 1.0',
    'bagit.txt is missing or not BagIt 1.0',
  );
  for (const [manifest, coversData] of [['manifest-sha256.txt', true], ['tagmanifest-sha256.txt', false]]) {
    const bytes = text(files, manifest);
    const body = bytes ? decodeUtf8(bytes) : null;
    if (body === null) {
      report.fail('bag', `${manifest} is missing`);
      continue;
    }
    const listed = checksumLines(body);
    if (typeof listed === 'string') {
      report.fail('bag', `${manifest}: ${listed}`);
      continue;
    }
    const bad = [];
    for (const path of [...listed.keys()].sort(compareBytes)) {
      const seen = files.get(path);
      if (!seen) bad.push(`${echoed(path)} is listed in ${manifest} but missing`);
      else if (seen.sha256 !== listed.get(path)) bad.push(`${echoed(path)} does not match its checksum in ${manifest}`);
    }
    if (coversData) {
      for (const path of sortedKeys(files)) {
        if (path.startsWith('data/') && !listed.has(path)) bad.push(`${echoed(path)} is not listed in ${manifest}`);
      }
    }
    if (bad.length === 0) report.pass('bag', `${manifest}: all ${listed.size} files match`);
    for (const problem of bad) report.fail('bag', problem);
  }
}

/** A BagIt checksum manifest, `<hex>  <path>` per line, as a Map; or what is wrong with it. */
function checksumLines(body) {
  const listed = new Map();
  const lines = body.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  for (let line of lines) {
    if (line.endsWith('\r')) line = line.slice(0, -1);
    const match = /^(\S*)\s(.*)$/su.exec(line);
    if (!match) return `malformed line ${JSON.stringify(echoed(line))}`;
    if (!/^[0-9a-f]{64}$/.test(match[1])) return `malformed checksum in ${JSON.stringify(echoed(line))}`;
    listed.set(match[2].replace(/^\s+/u, ''), match[1]);
  }
  return listed;
}

// Keys and signatures.

function isKeyNameValid(name) {
  return name.length > 0 && !/[\s+]/u.test(name);
}

/** The key ID of c2sp.org/signed-note: the first four bytes of SHA-256(name || "\n" || key), big-endian. */
function keyId(name, key) {
  const digest = sha256(concat(encoder.encode(`${name}\n`), key));
  return ((digest[0] << 24) | (digest[1] << 16) | (digest[2] << 8) | digest[3]) >>> 0;
}

/** A C2SP verifier key `<name>+<key ID>+<base64(0x01 || Ed25519 key)>`, or null. */
export function parseVerifierKey(vkey) {
  const first = vkey.indexOf('+');
  if (first < 0) return null;
  const second = vkey.indexOf('+', first + 1);
  if (second < 0) return null;
  const name = vkey.slice(0, first);
  const id16 = vkey.slice(first + 1, second);
  const key = base64Decode(vkey.slice(second + 1));
  if (id16.length !== 8 || !/^\+?[0-9a-fA-F]+$/.test(id16) || !isKeyNameValid(name) || !key || key.length === 0) {
    return null;
  }
  const id = Number.parseInt(id16, 16) >>> 0;
  if (id !== keyId(name, key) || key[0] !== 1 || key.length !== 33) return null;
  const publicKey = key.subarray(1);
  try {
    ed25519.Point.fromBytes(publicKey);
  } catch {
    return null;
  }
  return { vkey, name, id, publicKey };
}

/** Ed25519 as RFC 8032 has it (canonical encodings), and refusing small-order keys and R: ed25519-dalek's
 * verify_strict, which the gateway's manifest check uses. */
function verifyStrict(signature, message, publicKey) {
  try {
    const a = ed25519.Point.fromBytes(publicKey);
    const r = ed25519.Point.fromBytes(signature.subarray(0, 32));
    if (a.isSmallOrder() || r.isSmallOrder()) return false;
    return ed25519.verify(signature, message, publicKey, { zip215: false });
  } catch {
    return false;
  }
}

/** Ed25519 with canonical encodings (ed25519-dalek's verify, which signed notes are checked with). */
function verifyRfc8032(signature, message, publicKey) {
  try {
    return ed25519.verify(signature, message, publicKey, { zip215: false });
  } catch {
    return false;
  }
}

// Checkpoints: c2sp.org/tlog-checkpoint bodies in c2sp.org/signed-note notes.

function parseCheckpointBody(body) {
  if (!body.endsWith('\n')) return { error: 'checkpoint body is malformed: does not end in a newline' };
  const lines = body.slice(0, -1).split('\n');
  const [origin, sizeText, rootText, ...extensions] = lines;
  if (!origin) return { error: 'checkpoint body is malformed: no origin' };
  if (sizeText === undefined) return { error: 'checkpoint body is malformed: no tree size' };
  if (!/^(0|[1-9][0-9]*)$/.test(sizeText) || parseU64(sizeText) === null) {
    return { error: 'checkpoint body is malformed: tree size is not a decimal number' };
  }
  const root = rootText === undefined ? null : base64Decode(rootText);
  if (!root || root.length !== 32) return { error: 'checkpoint body is malformed: root hash is not 32 bytes of base64' };
  if (extensions.some((line) => line === '')) return { error: 'checkpoint body is malformed: empty extension line' };
  return { checkpoint: { origin, size: parseU64(sizeText), root } };
}

/** Parses a signed checkpoint and checks it against the key: the key must have signed it, under the log's name. */
function openCheckpoint(note, key) {
  const malformedNote = { error: 'signed note is malformed or has a malformed signature line' };
  if (note.length > MAX_NOTE_SIZE) return malformedNote;
  const message = decodeUtf8(note);
  if (message === null || /[\u0000-\u0009\u000b-\u001f]/u.test(message)) return malformedNote;
  const split = message.lastIndexOf('\n\n');
  if (split < 0) return malformedNote;
  const textPart = `${message.slice(0, split)}\n`;
  const sigPart = message.slice(split + 2);
  if (!sigPart.endsWith('\n')) return malformedNote;
  const signatures = [];
  for (const line of sigPart.slice(0, -1).split('\n')) {
    if (!line.startsWith('\u2014 ')) return malformedNote;
    const rest = line.slice(2);
    const space = rest.indexOf(' ');
    if (space < 0) return malformedNote;
    const name = rest.slice(0, space);
    const encoded = rest.slice(space + 1);
    const sig = base64Decode(encoded);
    if (!sig || encoded === '' || sig.length < 5 || !isKeyNameValid(name)) return malformedNote;
    const id = ((sig[0] << 24) | (sig[1] << 16) | (sig[2] << 8) | sig[3]) >>> 0;
    signatures.push({ name, id, sig: sig.subarray(4) });
    if (signatures.length > MAX_NOTE_SIGNATURES) return malformedNote;
  }
  const body = parseCheckpointBody(textPart);
  if (body.error) return body;
  const textBytes = encoder.encode(textPart);
  const verified = [];
  const seen = new Set();
  for (const sig of signatures) {
    if (sig.name !== key.name || sig.id !== key.id) continue; // another key's signature (a cosigner's, say)
    if (seen.has(sig.id)) continue;
    seen.add(sig.id);
    if (sig.sig.length !== 64 || !verifyRfc8032(sig.sig, textBytes, key.publicKey)) {
      return { error: `checkpoint signature by ${sig.name} does not verify` };
    }
    verified.push(sig);
  }
  if (verified.length === 0) return { error: `checkpoint carries no signature from a trusted key (trusted: ${key.vkey})` };
  if (!verified.some((sig) => sig.name === body.checkpoint.origin)) {
    return {
      error: `checkpoint origin ${JSON.stringify(body.checkpoint.origin)} is not the name of the key that signed it (${JSON.stringify(verified[0].name)})`,
    };
  }
  return { checkpoint: body.checkpoint };
}

// Witnesses: c2sp.org/tlog-policy files and c2sp.org/tlog-cosignature lines, as custodia_witness judges them.

function hexKey(text) {
  if (!/^[0-9a-fA-F]{64}$/.test(text)) return null;
  const raw = new Uint8Array(32);
  for (let i = 0; i < 32; i++) raw[i] = Number.parseInt(text.slice(2 * i, 2 * i + 2), 16);
  try {
    ed25519.Point.fromBytes(raw);
  } catch {
    return null;
  }
  return raw;
}

/** A cosigner key `<name>+<key ID>+<base64(0x04 || Ed25519 key)>`, or null. */
function parseCosignerKey(vkey) {
  // The base64 key may itself hold '+': only the first two separate the parts.
  const first = vkey.indexOf('+');
  const second = first < 0 ? -1 : vkey.indexOf('+', first + 1);
  if (second < 0) return null;
  const [name, id16, encoded] = [vkey.slice(0, first), vkey.slice(first + 1, second), vkey.slice(second + 1)];
  if (!isKeyNameValid(name) || !/^[0-9a-fA-F]{8}$/.test(id16)) return null;
  const key = base64Decode(encoded);
  if (!key || key.length !== 33 || key[0] !== 4) return null;
  const id = Number.parseInt(id16, 16) >>> 0;
  if (id !== keyId(name, key)) return null;
  try {
    ed25519.Point.fromBytes(key.subarray(1));
  } catch {
    return null;
  }
  return { name, id, publicKey: key.subarray(1) };
}

/** A log key of a policy: a C2SP verifier key, or Sigsum's raw hex (the log sigsum.org/v1/tree/<SHA-256 of key>). */
function policyLogKey(text) {
  const raw = hexKey(text);
  if (!raw) return parseVerifierKey(text);
  const name = `sigsum.org/v1/tree/${hex(sha256(raw))}`;
  return { name, id: keyId(name, concat(new Uint8Array([1]), raw)), publicKey: raw };
}

/** A c2sp.org/tlog-policy file, as custodia_witness::Policy::parse reads it: { policy } or { error }. */
export function parsePolicy(text) {
  const policy = { logs: [], witnesses: new Map(), groups: new Map(), quorum: null };
  const keys = new Set();
  let quorumSeen = false;
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  for (let at = 0; at < lines.length; at++) {
    const fail = (reason) => ({ error: `policy line ${at + 1}: ${reason}` });
    const words = lines[at].replace(/\r$/, '').split('#')[0].trim().split(/\s+/).filter(Boolean);
    if (words.length === 0) continue;
    const [kind, ...rest] = words;
    const defined = (name) => policy.witnesses.has(name) || policy.groups.has(name);
    if (kind === 'log' && (rest.length === 1 || rest.length === 2)) {
      const log = policyLogKey(rest[0]);
      if (!log) return fail('bad log key');
      const id = hex(log.publicKey);
      if (keys.has(id)) return fail('this key is already in the policy');
      keys.add(id);
      policy.logs.push(log);
    } else if (kind === 'witness' && (rest.length === 2 || rest.length === 3)) {
      const [name, key, url] = rest;
      if (defined(name)) return fail('this name is already defined');
      const raw = hexKey(key);
      const witness = raw
        ? isKeyNameValid(name) && { name, id: keyId(name, concat(new Uint8Array([4]), raw)), publicKey: raw }
        : parseCosignerKey(key);
      if (!witness) return fail('bad witness key');
      const id = hex(witness.publicKey);
      if (keys.has(id)) return fail('one key may serve only one witness, and never a log');
      keys.add(id);
      if (url !== undefined && !/^https?:\/\/[^/]/.test(url)) return fail('a witness URL must be http:// or https:// with a host');
      policy.witnesses.set(name, witness);
    } else if (kind === 'group' && rest.length >= 3) {
      const [name, threshold, ...members] = rest;
      if (defined(name)) return fail('this name is already defined');
      if (new Set(members).size !== members.length) return fail('a group lists a member twice');
      const undefinedMember = members.find((member) => !defined(member));
      if (undefinedMember !== undefined) return fail(`${undefinedMember} is not defined above`);
      let k;
      if (threshold === 'all') k = 'all';
      else if (threshold === 'any') k = 1;
      else if (/^(0|[1-9][0-9]*)$/.test(threshold) && Number(threshold) >= 1 && Number(threshold) <= members.length) k = Number(threshold);
      else return fail('the threshold must be any, all, or 1 to the number of members');
      policy.groups.set(name, { threshold: k, members });
    } else if (kind === 'quorum' && rest.length === 1) {
      if (quorumSeen) return fail('a second quorum line');
      quorumSeen = true;
      if (rest[0] !== 'none') {
        if (!defined(rest[0])) return fail(`${rest[0]} is not defined above`);
        policy.quorum = rest[0];
      }
    } else {
      return fail('not a log, witness, group or quorum line');
    }
  }
  if (!quorumSeen) return { error: 'the policy has no `quorum` line' };
  if (policy.logs.length === 0) return { error: 'the policy names no log' };
  return { policy };
}

/**
 * Whether the witnesses named in `signed` (a Set of the policy's names) meet the policy's quorum. Each group is
 * judged once, in the order the policy defines them (a Map keeps it; each names only what comes before it): no
 * recursion, so neither a chain of thousands of groups nor groups that share members cost more than their members.
 */
function quorumMet(policy, signed) {
  if (policy.quorum === null) return true;
  const met = new Map();
  for (const [name, group] of policy.groups) {
    const count = group.members.filter((member) => (met.has(member) ? met.get(member) : signed.has(member))).length;
    met.set(name, group.threshold === 'all' ? count === group.members.length : count >= group.threshold);
  }
  return met.has(policy.quorum) ? met.get(policy.quorum) : signed.has(policy.quorum);
}

/** How far a cosignature's time may be ahead of the verifier's clock and still count (MAX_CLOCK_AHEAD_SECONDS). */
const MAX_CLOCK_AHEAD_SECONDS = 600n;

/**
 * Each signature line of a checkpoint note after the log's, judged on its own (Policy::judge_lines): a witness's
 * valid cosignature counts once; a forged, duplicated or wrong-key line does not; a stranger's is not counted.
 * { lines: [{ kind, witness?, name?, timestamp? }], satisfied } or { error }.
 */
function judgeLines(policy, note, key, now = BigInt(Math.floor(Date.now() / 1000))) {
  const opened = openCheckpoint(note, key);
  if (opened.error) return { error: opened.error };
  const message = decodeUtf8(note);
  const split = message.indexOf('\n\n');
  const body = encoder.encode(message.slice(0, split + 1));
  const lines = [];
  const counted = new Set();
  for (const line of message.slice(split + 2).split('\n').filter((l) => l !== '')) {
    const rest = line.startsWith('\u2014 ') ? line.slice(2) : null;
    const space = rest === null ? -1 : rest.indexOf(' ');
    const raw = space < 0 ? null : base64Decode(rest.slice(space + 1));
    if (!raw || raw.length < 4) {
      lines.push({ kind: 'malformed' });
      continue;
    }
    const name = rest.slice(0, space);
    const id = ((raw[0] << 24) | (raw[1] << 16) | (raw[2] << 8) | raw[3]) >>> 0;
    if (policy.logs.some((log) => log.name === name && log.id === id)) continue;
    // By key name and key ID together: two witnesses may share a key name.
    const named = [...policy.witnesses].filter(([, w]) => w.name === name);
    const entry = named.find(([, w]) => w.id === id);
    if (!entry) {
      lines.push(named.length ? { kind: 'wrong-key', witness: named[0][0] } : { kind: 'unknown', name });
      continue;
    }
    const [witness, w] = entry;
    const time = raw.length === 76 ? new DataView(raw.buffer, raw.byteOffset + 4, 8).getBigUint64(0) : 0n;
    const signed = concat(encoder.encode(`cosignature/v1\ntime ${time}\n`), body);
    if (time === 0n || !verifyStrict(raw.subarray(12), signed, w.publicKey)) {
      lines.push({ kind: 'forged', witness });
    } else if (time > now + MAX_CLOCK_AHEAD_SECONDS) {
      lines.push({ kind: 'future', witness, timestamp: time });
    } else if (counted.has(witness)) {
      lines.push({ kind: 'duplicate', witness });
    } else {
      counted.add(witness);
      lines.push({ kind: 'counted', witness, name, timestamp: time });
    }
  }
  return { lines, satisfied: quorumMet(policy, counted) };
}

/** A cosignature's time, as the witness's clock had it, in RFC 3339. */
function cosignedAt(seconds) {
  const ms = Number(seconds) * 1000;
  return Number.isSafeInteger(ms) && ms < 8.64e15 ? new Date(ms).toISOString().replace('.000Z', 'Z') : `${seconds} s after the epoch`;
}

/**
 * The witnesses of a bag whose checkpoint is signed by `key` and whose records are `records` (ledger indexes),
 * under the pinned policy or else the bag's own (crates/bundle/src/witnesses.rs). A bag with neither a policy nor
 * witnessing files is not judged, unless a policy was pinned.
 */
function checkWitnesses(files, key, pinned, records, report) {
  const ownPolicy = text(files, WITNESS_POLICY);
  const older = text(files, WITNESSED_CHECKPOINT);
  const proofBytes = text(files, WITNESS_CONSISTENCY);
  if (pinned === null && ownPolicy === null && older === null && proofBytes === null) return;
  const failedBefore = report.checks.filter((c) => !c.passed).length;
  let policy = pinned;
  const whose = pinned ? 'the policy you pinned' : "the bundle's policy, not one you pinned";
  if (!policy) {
    if (ownPolicy === null) {
      report.fail('witnesses', `the bundle has witnessing files but no witness policy (${WITNESS_POLICY})`);
      return;
    }
    const policyText = decodeUtf8(ownPolicy);
    const parsed = policyText === null ? { error: 'not UTF-8' } : parsePolicy(policyText);
    if (parsed.error) {
      report.fail('witnesses', `${WITNESS_POLICY}: ${parsed.error}`);
      return;
    }
    policy = parsed.policy;
  }
  if (!policy.logs.some((log) => log.name === key.name && bytesEqual(log.publicKey, key.publicKey))) {
    report.fail('witnesses', `${whose} is not a policy for this log: it does not name ${key.vkey}`);
    report.witnesses = { pinned: Boolean(pinned), witnessed: false, summary: `not witnessed: ${whose} does not name this log's key` };
    return;
  }
  const latest = openCheckpoint(text(files, CHECKPOINT) ?? EMPTY, key);
  if (latest.error) return;
  let note = text(files, CHECKPOINT);
  let covered = latest.checkpoint.size;
  if (older !== null && proofBytes !== null) {
    const earlier = openCheckpoint(older, key);
    if (earlier.error) {
      report.fail('witnesses', `${WITNESSED_CHECKPOINT} is not a checkpoint signed by this log`);
      return;
    }
    const m = earlier.checkpoint.size;
    const n = latest.checkpoint.size;
    const consistent = consistencyProves(proofBytes, [m, earlier.checkpoint.root], [n, latest.checkpoint.root]);
    if (!consistent) {
      report.fail(
        'witnesses',
        `${WITNESS_CONSISTENCY} does not prove that the cosigned checkpoint (size ${m}) is a prefix of ${CHECKPOINT} (size ${n}): nothing is witnessed`,
      );
      return;
    }
    report.pass('witnesses', `the cosigned checkpoint of size ${m} is a prefix of the bundle's checkpoint of size ${n}`);
    note = older;
    covered = m;
  } else if (older !== null || proofBytes !== null) {
    report.fail('witnesses', `${WITNESSED_CHECKPOINT} and ${WITNESS_CONSISTENCY} come together, and the bundle has only one`);
    return;
  }
  const judged = judgeLines(policy, note, key);
  if (judged.error) {
    report.fail('witnesses', `the cosigned checkpoint: ${judged.error}`);
    return;
  }
  for (const line of judged.lines) {
    if (line.kind === 'counted') {
      report.pass(
        'witnesses',
        `witness ${echoed(line.witness)} (${echoed(line.name)}) cosigned the checkpoint of size ${covered} at ${cosignedAt(line.timestamp)}`,
      );
    } else if (line.kind === 'future') {
      report.fail(
        'witnesses',
        `witness ${echoed(line.witness)}'s cosignature is dated ${cosignedAt(line.timestamp)}, more than ` +
          `${MAX_CLOCK_AHEAD_SECONDS / 60n} minutes after this computer's clock: no honest witness's clock is that far ahead, so it is not counted`,
      );
    } else if (line.kind === 'forged') {
      report.fail(
        'witnesses',
        `a cosignature line under witness ${echoed(line.witness)}'s key does not verify over this checkpoint: forged or altered, not counted`,
      );
    } else if (line.kind === 'duplicate') {
      report.fail('witnesses', `witness ${echoed(line.witness)} cosigns twice: a duplicated line, counted once`);
    } else if (line.kind === 'wrong-key') {
      report.fail(
        'witnesses',
        `a cosignature line carries witness ${echoed(line.witness)}'s name but another key than ${whose} gives it: not counted`,
      );
    } else if (line.kind === 'unknown') {
      report.pass('witnesses', `a cosignature by ${echoed(line.name)}, whose key is not in ${whose}: not counted`);
    } else {
      report.fail('witnesses', 'a signature line of the checkpoint is malformed');
    }
  }
  const cosigners = judged.lines.filter((l) => l.kind === 'counted').map((l) => `${echoed(l.witness)} at ${cosignedAt(l.timestamp)}`);
  const cosigned = cosigners.length ? cosigners.join(', ') : 'no witness';
  const unwitnessed = records.filter((index) => index >= covered).map(String);
  const clean = report.checks.filter((c) => !c.passed).length === failedBefore;
  const asksForWitnesses = policy.quorum !== null;
  const witnessed = clean && judged.satisfied && unwitnessed.length === 0 && asksForWitnesses;
  let summary;
  if (!asksForWitnesses) {
    summary =
      `NOT witnessed: ${whose} asks for no witness (quorum none), so nothing was witnessed; the gateway's ` +
      'signature alone vouches for the log';
  } else if (witnessed) summary = `witnessed under ${whose}: its quorum is met by ${cosigned}, on a checkpoint that covers every record`;
  else if (!judged.satisfied) summary = `NOT witnessed under ${whose}: its quorum is not met (cosigned by ${cosigned})`;
  else if (unwitnessed.length) {
    summary =
      `partly witnessed under ${whose}: its quorum (${cosigned}) cosigned the log up to size ${covered}; records ` +
      `${unwitnessed.join(', ')} are newer and NOT yet witnessed (the gateway's signature alone vouches for them)`;
  } else summary = `NOT witnessed under ${whose}: a cosignature line is bad (see above)`;
  // A policy that asks for no witness is not failed when pinned: the reader asked for exactly that.
  if (witnessed || (clean && (!pinned || !asksForWitnesses))) report.pass('witnesses', summary);
  else if (clean) report.fail('witnesses', summary);
  report.witnesses = { pinned: Boolean(pinned), witnessed, summary };
}

/**
 * Whether a consistency-proof file (one base64 hash a line: data/witness/consistency.proof,
 * data/timestamp/consistency.proof) proves the log of size m and root rootM a prefix of the log of size n and
 * root rootN, as custodia_bundle's consistency::proves does. Sizes are BigInts.
 */
function consistencyProves(proofBytes, [m, rootM], [n, rootN]) {
  const proofText = decodeUtf8(proofBytes);
  const hashes = proofText === null ? null : proofText.split('\n').slice(0, -1).map(base64Decode);
  const wellFormed =
    hashes !== null && (proofText === '' || proofText.endsWith('\n')) && hashes.length <= 63 && hashes.every((h) => h && h.length === 32);
  return m <= n && wellFormed && verifyConsistency(m, n, hashes, rootM, rootN) === null;
}

// Trusted time (RFC 3161): crates/bundle/src/time.rs, without trust anchors. The browser holds no authority's
// certificate, so it checks what needs none (the entry is in the log, it stamps a prefix of the bag's checkpoint, the
// token's imprint is that checkpoint's) and shows what the token claims; the token's signature is checked by
// `custodia verify --tsa-anchor` or `openssl ts -verify`.

/** A checkpoint_timestamp entry, as custodia_timestamp::CheckpointTimestamp::from_entry reads it, or null. */
function parseTimestampEntry(bytes) {
  if (bytes.length > MAX_RECORD_LEN) return null;
  const value = parseCanonical(bytes);
  const isRoot = (v) => typeof v === 'string' && base64Decode(v)?.length === 32;
  const shape = {
    v: (v) => v === 1,
    type: (v) => v === 'checkpoint_timestamp',
    checkpoint: (v) => fits(v, { root: isRoot, size: isU64 }),
    token: (v) => typeof v === 'string' && base64Decode(v) !== null,
  };
  if (value === null || !fits(value, shape)) return null;
  return { size: BigInt(value.checkpoint.size), root: base64Decode(value.checkpoint.root), token: base64Decode(value.token) };
}

/** One DER element of `bytes` at `at`: its tag, where its contents start and end. Throws on anything else. */
function derAt(bytes, at, end = bytes.length) {
  if (at + 2 > end) throw 'DER cut short';
  const tag = bytes[at];
  if ((tag & 0x1f) === 0x1f) throw 'DER high tag number';
  let length = bytes[at + 1];
  let start = at + 2;
  if (length & 0x80) {
    const octets = length & 0x7f;
    if (octets === 0 || octets > 4 || start + octets > end) throw 'DER length';
    length = 0;
    for (let i = 0; i < octets; i++) length = length * 256 + bytes[start + i];
    start += octets;
  }
  if (start + length > end) throw 'DER cut short';
  return { tag, at, start, end: start + length };
}

/** The elements inside a constructed DER element. */
function derChildren(bytes, element) {
  const children = [];
  for (let at = element.start; at < element.end; ) {
    const child = derAt(bytes, at, element.end);
    children.push(child);
    at = child.end;
  }
  return children;
}

const OID_SIGNED_DATA = '2a864886f70d010702';
const OID_TST_INFO = '2a864886f70d0109100104';
const OID_SHA_256 = '608648016503040201';
/** The attribute types x509-cert names (RFC 4514 short names), by DER OID in hex. */
const NAME_KEYS = new Map([
  ['550403', 'CN'], ['550404', 'SN'], ['550405', 'SERIALNUMBER'], ['55040c', 'TITLE'], ['55042a', 'GIVENNAME'], ['550406', 'C'], ['550407', 'L'], ['550408', 'ST'], ['55040a', 'O'], ['55040b', 'OU'],
  ['550409', 'STREET'], ['0992268993f22c640119', 'DC'], ['0992268993f22c640101', 'UID'],
]);

function oidText(der) {
  const arcs = [];
  let value = 0n;
  for (const byte of der) {
    value = (value << 7n) | BigInt(byte & 0x7f);
    if ((byte & 0x80) === 0) {
      arcs.push(value);
      value = 0n;
    }
  }
  if (arcs.length === 0) return '';
  const first = arcs[0] < 80n ? arcs[0] / 40n : 2n;
  return [first, arcs[0] - first * 40n, ...arcs.slice(1)].join('.');
}

/** A directory name as x509-cert writes it (RFC 4514: the last RDN first, `+` inside one, `,` between). */
function nameText(bytes, name) {
  return derChildren(bytes, name)
    .reverse()
    .map((rdn) =>
      derChildren(bytes, rdn)
        .map((atv) => {
          const [type, value] = derChildren(bytes, atv);
          const oid = hex(bytes.subarray(type.start, type.end));
          const key = NAME_KEYS.get(oid);
          const isText = [0x0c, 0x13, 0x14, 0x16].includes(value.tag);
          if (!key || !isText) return `${oidText(bytes.subarray(type.start, type.end))}=#${hex(bytes.subarray(value.at, value.end))}`;
          const chars = [...new TextDecoder().decode(bytes.subarray(value.start, value.end))];
          const escaped = chars.map((c, i) =>
            c === '#' && i === 0
              ? '\\#'
              : c === ' ' && (i === 0 || i === chars.length - 1)
                ? '\\ '
                : '"+,;<>\\'.includes(c)
                  ? `\\${c}`
                  : c < ' ' || c === '\x7f'
                    ? `\\${c.charCodeAt(0).toString(16).padStart(2, '0')}`
                    : c,
          );
          return `${key}=${escaped.join('')}`;
        })
        .join('+'),
    )
    .join(',');
}

/**
 * What a token (a DER TimeStampToken) claims, unchecked, as custodia_timestamp::read_token_claims reads it:
 * { genTime: 'YYYY-MM-DD hh:mm:ss[.f] UTC', tsa: name or null, imprint: SHA-256 bytes or null }, or { error }.
 */
function readTokenClaims(token) {
  try {
    const info = derAt(token, 0);
    const [contentType, content] = derChildren(token, info);
    if (info.tag !== 0x30 || contentType?.tag !== 0x06 || hex(token.subarray(contentType.start, contentType.end)) !== OID_SIGNED_DATA) {
      throw 'not a CMS SignedData';
    }
    const signedData = derChildren(token, content)[0];
    const encapsulated = derChildren(token, signedData)[2];
    const [eType, eContent] = derChildren(token, encapsulated);
    if (hex(token.subarray(eType.start, eType.end)) !== OID_TST_INFO || !eContent) throw 'the signed content is not a TSTInfo';
    const octets = derChildren(token, eContent)[0];
    if (octets?.tag !== 0x04) throw 'the TSTInfo is not in an OCTET STRING';
    const fields = derChildren(token, derAt(token, octets.start, octets.end));
    const [, , imprint, , genTime, ...rest] = fields;
    if (genTime?.tag !== 0x18) throw 'no genTime';
    const [algorithm, digest] = derChildren(token, imprint);
    const algorithmOid = derChildren(token, algorithm)[0];
    const isSha256 = hex(token.subarray(algorithmOid.start, algorithmOid.end)) === OID_SHA_256 && digest.end - digest.start === 32;
    const time = new TextDecoder().decode(token.subarray(genTime.start, genTime.end));
    const parts = /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\.\d+)?Z$/.exec(time);
    if (!parts) throw 'genTime is not a GeneralizedTime';
    const [year, month, day, hour, minute, second] = parts.slice(1, 7).map(Number);
    const tsaField = rest.find((field) => field.tag === 0xa0);
    const directory = tsaField && derChildren(token, tsaField)[0];
    const tsa = directory?.tag === 0xa4 ? nameText(token, derChildren(token, directory)[0]) : null;
    return {
      genTime: `${parts[1]}-${parts[2]}-${parts[3]} ${parts[4]}:${parts[5]}:${parts[6]}${parts[7] ?? ''} UTC`,
      genTimeSeconds: Date.UTC(year, month - 1, day, hour, minute, second) / 1000,
      tsa,
      imprint: isSha256 ? token.subarray(digest.start, digest.end) : null,
    };
  } catch (what) {
    if (typeof what === 'string') return { error: `the token is malformed: ${what}` };
    if (what instanceof TypeError) return { error: 'the token is malformed' };
    throw what;
  }
}

/** What the log at `size` holds of a bag's records (BigInt ledger indexes, in order), in words; null if none. */
function timestampScope(records, size) {
  const held = records.filter((record) => record < size);
  const newer = records.filter((record) => record >= size);
  const span = (some) => (some.length === 1 ? `record #${some[0]}` : `records #${some[0]} to #${some[some.length - 1]}`);
  if (held.length === 0) return null;
  if (newer.length === 0) return `the log at size ${size}, which holds every record of this bundle`;
  return `the log at size ${size}, which holds ${span(held)}; newer than the token: ${span(newer)}`;
}

/** How far a record's own time may be after the time of a token that stamps it (time.rs MAX_CLOCK_SKEW_SECONDS). */
const MAX_CLOCK_SKEW_SECONDS = 300;

/** A record's `at` (RFC 3339, UTC) in whole seconds since the Unix epoch, rounded down; NaN if it is not one. */
function recordSeconds(at) {
  const parts = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?Z$/.exec(at ?? '');
  if (!parts) return NaN;
  const [year, month, day, hour, minute, second] = parts.slice(1, 7).map(Number);
  return Date.UTC(year, month - 1, day, hour, minute, second) / 1000;
}

/**
 * The bag's trusted time (crates/bundle/src/time.rs): `checkpoint` is the bag's checkpoint if it was checked (else
 * null), `bundled` the bag's records ({ index: BigInt, record }). Reports under 'timestamp' and sums up in
 * report.timestamp.
 */
function checkTimestamp(files, checkpoint, key, bundled, report) {
  const records = bundled.map((r) => r.index);
  const fail = (why) => {
    report.timestamp = `INVALID: ${why}`;
    report.fail('timestamp', why);
  };
  const entryBytes = text(files, TIMESTAMP_ENTRY);
  const proofBytes = text(files, TIMESTAMP_PROOF);
  const consistency = text(files, TIMESTAMP_CONSISTENCY);
  if (entryBytes === null && proofBytes === null && consistency === null) {
    report.timestamp = TIMESTAMP_NONE;
    return;
  }
  if (entryBytes === null || proofBytes === null || consistency === null) {
    return fail(`${TIMESTAMP_ENTRY}, ${TIMESTAMP_PROOF} and ${TIMESTAMP_CONSISTENCY} come together, and the bundle lacks one`);
  }
  const stamp = parseTimestampEntry(entryBytes);
  if (!stamp) return fail(`${TIMESTAMP_ENTRY}: not a canonical checkpoint_timestamp entry`);
  const opened = checkpoint === null ? { error: 'unchecked' } : openCheckpoint(checkpoint, key);
  if (opened.error) return fail(`no checked ${CHECKPOINT} to place the timestamp in`);
  const cp = opened.checkpoint;
  const placed = included(entryBytes, proofBytes, null, checkpoint, key);
  if (placed.error !== undefined) return fail(`${TIMESTAMP_PROOF}: ${placed.error}`);
  const index = placed.index;
  if (stamp.size > index || !consistencyProves(consistency, [stamp.size, stamp.root], [cp.size, cp.root])) {
    return fail(
      `${TIMESTAMP_CONSISTENCY} does not prove that the stamped checkpoint (size ${stamp.size}) is a prefix of ${CHECKPOINT} (size ${cp.size}): the token stamps another log`,
    );
  }
  const scope = timestampScope(records, stamp.size);
  if (scope === null) return fail(`the timestamp stamps the log at size ${stamp.size}, before any of its records`);
  const body = `${cp.origin}\n${stamp.size}\n${base64Encode(stamp.root)}\n`;
  const claims = readTokenClaims(stamp.token);
  if (claims.error) return fail(`the token in ${TIMESTAMP_ENTRY}: ${claims.error}`);
  if (claims.imprint === null || !bytesEqual(claims.imprint, sha256(encoder.encode(body)))) {
    return fail(
      `the token of timestamp entry ${index}: its imprint is not the SHA-256 of the stamped checkpoint (log ${echoed(cp.origin)}, size ${stamp.size}): it stamps other bytes`,
    );
  }
  // The stamped records existed no later than the token's time, so none may say it was made after it.
  const after = bundled.find(
    ({ index, record }) => index < stamp.size && record && recordSeconds(record.at) > claims.genTimeSeconds + MAX_CLOCK_SKEW_SECONDS,
  );
  if (after) {
    return fail(
      `record #${after.index} says it was made at ${after.record.at}, more than ${MAX_CLOCK_SKEW_SECONDS} s after the token's time (${claims.genTime}), yet the stamped log holds it: the gateway's clock ran ahead, or its records' times are false`,
    );
  }
  const tsa = claims.tsa === null ? 'an authority the token does not name' : echoed(claims.tsa);
  const claim = `existed no later than ${claims.genTime} per ${tsa}, as the token claims: ${scope}`;
  const summary =
    `existed no later than ${claims.genTime} per ${tsa}, as the token claims, unchecked here (a browser holds no ` +
    `authority's certificate: check it with custodia verify --tsa-anchor or openssl ts -verify): ${scope}`;
  // One check says it all, so that a case bundle's summary of each of its bags keeps it.
  report.pass('timestamp', `timestamp entry ${index} is in the log, and stamps a prefix of ${CHECKPOINT}: ${summary}`);
  report.timestamp = summary;
  // The page says the rest in the reader's language.
  report.timestampClaim = claim;
}

// Merkle inclusion proofs (RFC 6962 / RFC 9162 section 2.1.3.2), in u64 arithmetic.

export function leafHash(entry) {
  return sha256.create().update(new Uint8Array([0])).update(entry).digest();
}

function nodeHash(left, right) {
  return sha256.create().update(new Uint8Array([1])).update(left).update(right).digest();
}

function bitLength(value) {
  return value === 0n ? 0 : value.toString(2).length;
}

function popCount(value) {
  let count = 0;
  for (const digit of value.toString(2)) if (digit === '1') count++;
  return count;
}

/** Null if `leaf` is at `index` of the tree of `size` whose root is `root`; otherwise what is wrong. */
export function verifyInclusion(index, size, leaf, proof, root) {
  if (index >= size) return `leaf index ${index} is outside a tree of size ${size}`;
  const inner = bitLength(index ^ (size - 1n));
  const border = popCount(index >> BigInt(inner));
  if (proof.length !== inner + border) return `proof has ${proof.length} hashes where ${inner + border} are needed`;
  let hash = leaf;
  for (let i = 0; i < inner; i++) {
    hash = ((index >> BigInt(i)) & 1n) === 0n ? nodeHash(hash, proof[i]) : nodeHash(proof[i], hash);
  }
  for (let i = inner; i < proof.length; i++) hash = nodeHash(proof[i], hash);
  if (!bytesEqual(hash, root)) {
    return `recomputed root ${base64Encode(hash)} does not match the expected root ${base64Encode(root)}`;
  }
  return null;
}

function trailingZeros(value) {
  let zeros = 0;
  while (value > 0n && (value & 1n) === 0n) {
    value >>= 1n;
    zeros++;
  }
  return zeros;
}

/** Null if the tree of `size1` with `root1` is a prefix of the tree of `size2` with `root2` (RFC 9162 2.1.4.2). */
export function verifyConsistency(size1, size2, proof, root1, root2) {
  if (size2 < size1) return `sizes reversed: ${size1} then ${size2}`;
  if (size1 === size2) {
    if (size1 === 0n) return 'a proof from the empty tree proves nothing';
    if (proof.length) return `proof has ${proof.length} hashes where 0 are needed`;
    return bytesEqual(root1, root2) ? null : 'the roots of two trees of one size differ';
  }
  if (size1 === 0n) return 'a proof from the empty tree proves nothing';
  if (proof.length === 0) return 'the proof is empty';
  const index = size1 - 1n;
  const inner0 = bitLength(index ^ (size2 - 1n));
  const border = popCount(index >> BigInt(inner0));
  const shift = trailingZeros(size1);
  const inner = inner0 - shift;
  const perfect = size1 === 1n << BigInt(shift);
  const seed = perfect ? root1 : proof[0];
  const rest = perfect ? proof : proof.slice(1);
  if (rest.length !== inner + border) return `proof has ${proof.length} hashes where ${proof.length - rest.length + inner + border} are needed`;
  const mask = (size1 - 1n) >> BigInt(shift);
  let hash1 = seed;
  let hash2 = seed;
  for (let i = 0; i < inner; i++) {
    if (((mask >> BigInt(i)) & 1n) === 1n) {
      hash1 = nodeHash(rest[i], hash1);
      hash2 = nodeHash(rest[i], hash2);
    } else {
      hash2 = nodeHash(hash2, rest[i]);
    }
  }
  for (let i = inner; i < rest.length; i++) {
    hash1 = nodeHash(rest[i], hash1);
    hash2 = nodeHash(rest[i], hash2);
  }
  if (!bytesEqual(hash1, root1)) return 'the proof does not lead to the older root';
  if (!bytesEqual(hash2, root2)) return 'the proof does not lead to the newer root';
  return null;
}

/** A c2sp.org/tlog-proof@v1 file, or what is malformed in it. */
function parseProof(bytes) {
  let rest = 0;
  const nextLine = () => {
    const end = bytes.indexOf(0x0a, rest);
    if (end < 0) throw 'line without newline';
    const line = decodeUtf8(bytes.subarray(rest, end));
    if (line === null) throw 'not UTF-8';
    rest = end + 1;
    return line;
  };
  try {
    if (nextLine() !== 'c2sp.org/tlog-proof@v1') throw 'first line is not c2sp.org/tlog-proof@v1';
    let line = nextLine();
    if (line.startsWith('extra ')) {
      if (!base64Decode(line.slice(6))) throw 'extra is not base64';
      line = nextLine();
    }
    if (!line.startsWith('index ')) throw 'no index line';
    const indexText = line.slice(6);
    const index = parseU64(indexText);
    if (index === null || (indexText !== '0' && indexText.startsWith('0'))) throw 'index is not a decimal number';
    const path = [];
    for (;;) {
      const hashLine = nextLine();
      if (hashLine === '') break;
      if (path.length >= 64) throw 'more than 64 proof hashes';
      const hash = base64Decode(hashLine);
      if (!hash || hash.length !== 32) throw 'proof line is not a base64 hash';
      path.push(hash);
    }
    return { proof: { index, path, checkpointNote: bytes.subarray(rest) } };
  } catch (what) {
    if (typeof what !== 'string') throw what;
    return { error: `proof file is malformed: ${what}` };
  }
}

/** A c2sp.org/tlog-proof@v1 file with the tree size and root of the checkpoint it carries, whose signature is not
 * checked (the prosecutor portal checks the API's proofs with this, without the gateway's key); or what is
 * malformed in it. */
export function readProof(bytes) {
  const parsed = parseProof(bytes);
  if (parsed.error) return parsed;
  const note = decodeUtf8(parsed.proof.checkpointNote);
  const split = note === null ? -1 : note.indexOf('\n\n');
  if (split < 0) return { error: 'the checkpoint in the proof file is malformed' };
  const body = parseCheckpointBody(`${note.slice(0, split)}\n`);
  if (body.error) return body;
  const { index, path } = parsed.proof;
  return { proof: { index, path, size: body.checkpoint.size, root: body.checkpoint.root } };
}

/**
 * Whether `proofBytes` (a c2sp.org/tlog-proof@v1 file) proves `entry` is in the log signed by `key`: entry `index`
 * when one is expected (else null), against exactly `checkpoint` when given (else null). { index } or { error, kind }.
 */
function included(entry, proofBytes, index, checkpoint, key) {
  if (proofBytes === null) return { error: 'is missing', kind: 'missing' };
  const parsed = parseProof(proofBytes);
  if (parsed.error) return { error: parsed.error, kind: 'malformed' };
  const { proof } = parsed;
  if (index !== null && proof.index !== index) return { error: `proves entry ${proof.index}, not ${index}`, kind: 'placed' };
  if (checkpoint !== null && !bytesEqual(proof.checkpointNote, checkpoint)) {
    return { error: `is against a different checkpoint than ${CHECKPOINT}`, kind: 'placed' };
  }
  const opened = openCheckpoint(proof.checkpointNote, key);
  if (opened.error) return { error: `proof file's checkpoint: ${opened.error}`, kind: 'malformed' };
  const problem = verifyInclusion(proof.index, opened.checkpoint.size, leafHash(entry), proof.path, opened.checkpoint.root);
  if (problem !== null) return { error: `inclusion proof for entry ${proof.index} does not verify: ${problem}`, kind: 'proof' };
  return { index: proof.index };
}

function checkRecords(files, checkpointBytes, key, checkpointOk, report) {
  const records = [];
  for (const path of sortedKeys(files)) {
    if (!path.startsWith(CUSTODY_DIR) || !path.endsWith('.json') || path.length < CUSTODY_DIR.length + 5) continue;
    if (path.endsWith('.opening.json')) continue;
    const stem = path.slice(CUSTODY_DIR.length, -5);
    const index = parseU64(stem);
    if (index === null) {
      report.fail('custody_history', `${path} is not named by a ledger index`);
      continue;
    }
    const entry = files.get(path).bytes ?? EMPTY;
    const record = parseRecord(entry);
    if (!record) report.fail('custody_history', `${path} is not a canonical custody record`);
    const proofPath = `${CUSTODY_DIR}${index.toString().padStart(12, '0')}.proof`;
    const result = included(entry, text(files, proofPath), index, checkpointOk ? checkpointBytes : null, key);
    if (result.error === undefined) report.pass('inclusion_proof', `record ${index} is entry ${index} of the signed log`);
    else if (result.kind === 'missing') report.fail('inclusion_proof', `record ${index}: ${proofPath} is missing`);
    else if (result.kind === 'placed') report.fail('inclusion_proof', `${proofPath} ${result.error}`);
    else report.fail('inclusion_proof', `record ${index}: ${result.error}`);
    records.push({ index, record });
  }
  return records;
}

/** The history is complete and in order: it starts with the registration that the signed manifest describes,
 * each record names the previous one (`prior`), all are about this artefact, and the last is this export. */
function checkHistory(records, manifest, manifestBytes, signature, report) {
  const before = report.checks.filter((c) => !c.passed).length;
  if (!manifest) {
    report.fail('custody_history', 'no manifest to tie the history to');
    return;
  }
  if (records.length === 0) {
    report.fail('custody_history', 'the bundle holds no custody records');
    return;
  }
  const first = records[0];
  const event = first.record && first.record.event;
  const registers =
    event &&
    event.type === 'artefact_registered' &&
    first.record.prior === undefined &&
    event.artefact === manifest.artefact &&
    event.manifest_sha256 === hex(sha256(manifestBytes)) &&
    signature !== null &&
    event.manifest_signature === base64Encode(signature);
  if (!registers) report.fail('custody_history', `record ${first.index} is not the registration of this manifest`);
  for (let i = 1; i < records.length; i++) {
    const previous = records[i - 1];
    const r = records[i].record;
    if (!r) continue;
    if (r.prior === undefined || BigInt(r.prior) !== previous.index) {
      const said = r.prior === undefined ? 'none' : String(r.prior);
      report.fail(
        'custody_history',
        `record ${records[i].index} says the previous record is ${said}, but the bundle has ${previous.index}: records are missing or out of order`,
      );
    }
  }
  for (const bundled of records) {
    if (bundled.record && eventArtefact(bundled.record.event) !== manifest.artefact) {
      report.fail('custody_history', `record ${bundled.index} is about another artefact`);
    }
  }
  const last = records[records.length - 1].record;
  // An export, or a transfer to a partner gateway (which sends the bundle it makes): the bundle's own leaving.
  if (!last || !['artefact_exported', 'artefact_transferred'].includes(last.event.type)) {
    report.fail('custody_history', 'the last record is not this bundle\'s export: records after it are missing');
  }
  if (report.checks.filter((c) => !c.passed).length === before) {
    report.pass(
      'custody_history',
      `${records.length} records, complete and in order, from registration to this export`,
    );
  }
  report.history = records.map(({ index, record }) => ({
    index: index.toString(),
    at: record ? record.at : null,
    type: record ? record.event.type : null,
    actor: record ? record.actor : null,
    purpose: record ? record.purpose : null,
  }));
}

function eventArtefact(event) {
  return event.type === 'hearing_event' || event.type === 'membership_changed' || event.type === 'case_exported' ? undefined : event.artefact;
}

// Commitments and their openings.

const COMMITMENT_DOMAIN = encoder.encode('custodia-commitment-v1\0');

function u32be(n) {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n);
  return out;
}

/** The commitment (hex) that `salt` (hex) and `text` make for `field`. */
export function commitment(saltHex, field, text) {
  const salt = new Uint8Array(saltHex.match(/../g).map((pair) => parseInt(pair, 16)));
  const fieldBytes = encoder.encode(field);
  const textBytes = encoder.encode(text);
  return hex(sha256(concat(COMMITMENT_DOMAIN, salt, u32be(fieldBytes.length), fieldBytes, u32be(textBytes.length), textBytes)));
}

/** Every commitment of a record, by field name: the case, the purpose, then the event's. */
const EVENT_COMMITMENTS = {
  artefact_accessed: ['site'],
  artefact_transferred: ['jurisdiction'],
  derivative_made: ['operation'],
  hearing_event: ['subject', 'detail'],
  policy_changed: ['policy', 'change'],
  wider_use_requested: ['request'],
  outcome_reported: ['outcome'],
  access_refused: ['action'],
  membership_changed: ['role'],
  case_exported: ['hearing'],
  transfer_evidence: ['evidence'],
  received_from: ['provider', 'provenance'],
};

function recordCommitments(record) {
  const all = [['case', record.case], ['purpose', record.purpose]];
  for (const field of EVENT_COMMITMENTS[record.event.type] ?? []) {
    if (record.event[field] !== undefined) all.push([field, record.event[field]]);
  }
  return all;
}

const isOpening = (v) => fits(v, { salt: isSha256, text: (t) => typeof t === 'string' });

/** Reads an openings file: canonical JSON, an object of field name to {salt, text}; null if it is not one. */
function parseOpenings(bytes) {
  const value = parseCanonical(bytes);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
  return Object.values(value).every(isOpening) ? value : null;
}

/**
 * Each record's openings open exactly its commitments, and the case they open is `theCase.id`: the signed manifest's
 * in an artefact bundle, the case listing's in a case bundle, as `theCase.whose` says.
 */
function checkOpenings(files, records, theCase, report) {
  const before = report.checks.filter((c) => !c.passed).length;
  for (const bundled of records) {
    const record = bundled.record;
    if (!record) continue;
    const path = `${CUSTODY_DIR}${bundled.index.toString().padStart(12, '0')}.opening.json`;
    const bytes = text(files, path);
    if (bytes === null) {
      report.fail('openings', `record ${bundled.index}: ${path} is missing`);
      continue;
    }
    const openings = parseOpenings(bytes);
    if (openings === null) {
      report.fail('openings', `record ${bundled.index}: ${path} is not a canonical openings document`);
      continue;
    }
    const committed = recordCommitments(record);
    let problem = null;
    for (const [field, value] of committed) {
      if (!Object.hasOwn(openings, field)) problem = `the opening of \`${field}\` is missing`;
      else if (commitment(openings[field].salt, field, openings[field].text) !== value) {
        problem = `the opening of \`${field}\` does not match the record's commitment`;
      }
      if (problem) break;
    }
    const extra = Object.keys(openings).find((field) => !committed.some(([name]) => name === field));
    if (!problem && extra !== undefined) problem = `there is an opening of \`${extra}\`, which the record does not commit to`;
    if (problem) {
      report.fail('openings', `record ${bundled.index}: ${problem}`);
    } else if (theCase && openings.case.text !== theCase.id) {
      report.fail('openings', `record ${bundled.index}: its case is not ${theCase.id}, ${theCase.whose}`);
    } else {
      // Only openings that open the record's commitments are shown as what it says (its purpose, in the history).
      bundled.openings = openings;
    }
  }
  if (report.checks.filter((c) => !c.passed).length === before) {
    report.pass('openings', `every record's openings match its commitments, for case ${theCase ? theCase.id : '?'}`);
  }
  if (report.history) {
    report.history = report.history.map((row, i) => ({
      ...row,
      purpose: records[i] && records[i].openings ? records[i].openings.purpose.text : null,
    }));
  }
}

// Canonical JSON (RFC 8785) and the shapes of manifests and custody records.

/** RFC 8785: keys sorted by UTF-16 code units, no whitespace, ECMAScript number and string forms. */
export function canonicalize(value) {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalize).join(',')}]`;
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalize(value[k])}`).join(',')}}`;
}

/** Parses canonical JSON, or null when the bytes are not JSON, not canonical, or hold an integer JavaScript
 * cannot carry exactly. */
function parseCanonical(bytes) {
  const text = decodeUtf8(bytes);
  if (text === null) return null;
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (canonicalize(value) !== text) return null;
  const unsafe = (v) =>
    typeof v === 'number'
      ? !Number.isSafeInteger(v) && Number.isInteger(v)
      : v !== null && typeof v === 'object' && Object.values(v).some(unsafe);
  return unsafe(value) ? null : value;
}

const isIdentifier = (v) => typeof v === 'string' && /^[A-Za-z0-9._:-]{1,64}$/.test(v) && !v.startsWith('.');
const isLabel = (v) =>
  typeof v === 'string' && v.length > 0 && encoder.encode(v).length <= 512 && !/[\u0000-\u001f\u007f-\u009f]/u.test(v);
const isSha256 = (v) => typeof v === 'string' && /^[0-9a-f]{64}$/.test(v);
const isU64 = (v) => Number.isSafeInteger(v) && v >= 0;
const isU32 = (v) => isU64(v) && v <= 0xffff_ffff;
const isSignature = (v) => typeof v === 'string' && base64Decode(v)?.length === 64;
const isAccess = (v) => v === 'view' || v === 'download' || v === 'play';
const isJson = () => true;

/** A timestamp as jiff writes one: RFC 3339 in UTC, seconds always, a fraction only when not zero. */
function isTimestamp(v) {
  const m = typeof v === 'string' && /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{0,8}[1-9])?Z$/.exec(v);
  if (!m) return false;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number);
  const days = new Date(Date.UTC(year, month, 0)).getUTCDate();
  return month >= 1 && month <= 12 && day >= 1 && day <= days && hour < 24 && minute < 60 && second < 60;
}

/** Checks an object against a shape: every field known, required ones present, optional ones ('?') not null. */
function fits(value, shape) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return false;
  const fields = new Map(Object.entries(shape).map(([k, check]) => [k.replace(/\?$/, ''), [check, k.endsWith('?')]]));
  for (const key of Object.keys(value)) if (!fields.has(key)) return false;
  for (const [key, [check, optional]] of fields) {
    if (!(key in value)) {
      if (!optional) return false;
    } else if (!check(value[key])) {
      return false;
    }
  }
  return true;
}

const MANIFEST_SHAPE = {
  type: (v) => typeof v === 'string',
  artefact: isIdentifier,
  case: isIdentifier,
  nonce: isSha256,
  sha256: isSha256,
  size: isU64,
  media_type: isLabel,
  'original_name?': isLabel,
  registered_at: isTimestamp,
  registered_by: isIdentifier,
  'media?': isJson,
};

const EVENT_SHAPES = {
  artefact_registered: { artefact: isIdentifier, manifest_sha256: isSha256, manifest_signature: isSignature },
  artefact_accessed: { artefact: isIdentifier, access: isAccess, site: isSha256 },
  artefact_exported: { artefact: isIdentifier, format: (v) => v === 'court_bundle', 'export_sha256?': isSha256 },
  artefact_transferred: { artefact: isIdentifier, recipient: isIdentifier, jurisdiction: isSha256 },
  derivative_made: { artefact: isIdentifier, source: isIdentifier, operation: isSha256 },
  hearing_event: { hearing: isIdentifier, kind: isLabel, 'subject?': isSha256, 'detail?': isSha256 },
  policy_changed: { 'artefact?': isIdentifier, policy: isSha256, change: isSha256 },
  wider_use_requested: { artefact: isIdentifier, request: isSha256 },
  outcome_reported: { artefact: isIdentifier, outcome: isSha256 },
  access_refused: { 'artefact?': isIdentifier, action: isSha256, code: (v) => REFUSAL_CODES.includes(v) },
  membership_changed: { member: isIdentifier, change: (v) => ['added', 'role_changed', 'removed'].includes(v), 'role?': isSha256 },
  case_exported: { listing_sha256: isSha256, artefacts: isU64, 'hearing?': isSha256 },
  transfer_evidence: { 'artefact?': isIdentifier, rung: isLabel, evidence: isSha256 },
  received_from: { artefact: isIdentifier, provider: isSha256, provenance: isSha256 },
};

const REFUSAL_CODES = [
  'missing_scope', 'role_forbids', 'provider_only', 'policy_expired', 'policy_tlp', 'policy_purpose',
  'policy_recipient', 'policy_jurisdiction', 'policy_onward_transfer',
];

function isEvent(v) {
  if (v === null || typeof v !== 'object' || !Object.hasOwn(EVENT_SHAPES, v.type)) return false;
  return fits(v, { type: () => true, ...EVENT_SHAPES[v.type] });
}

const RECORD_SHAPE = {
  v: isU32,
  case: isSha256,
  actor: isIdentifier,
  at: isTimestamp,
  purpose: isSha256,
  event: isEvent,
  'prior?': isU64,
  'repeated?': (v) => fits(v, { count: isU64, since: isTimestamp }),
};

const LISTED_BUNDLE_SHAPE = { artefact: isIdentifier, sha256: isSha256, size: isU64 };
const isScope = (v) => fits(v, { kind: (k) => k === 'case' }) || fits(v, { kind: (k) => k === 'hearing', hearing: isIdentifier });
/** The case listing's version this verifier reads: 3 holds each artefact bundle unpacked, named by its tag manifest. */
const CASE_LISTING_VERSION = 3;
const CASE_LISTING_SHAPE = {
  v: (v) => v === CASE_LISTING_VERSION,
  case: isIdentifier,
  scope: isScope,
  salt: (v) => typeof v === 'string' && /^[0-9a-f]{64}$/.test(v),
  bundles: (v) => Array.isArray(v) && v.every((b) => fits(b, LISTED_BUNDLE_SHAPE)),
};

function parseManifest(bytes) {
  const value = parseCanonical(bytes);
  if (value === null || !fits(value, MANIFEST_SHAPE)) {
    return { manifest: null, error: 'manifest is not a valid canonical document' };
  }
  return { manifest: value, error: null };
}

/** A ledger entry read as a custody record of version 2, or null. */
function parseRecord(bytes) {
  if (bytes.length > MAX_RECORD_LEN) return null;
  const value = parseCanonical(bytes);
  if (value === null || !fits(value, RECORD_SHAPE) || value.v !== 2) return null;
  return value;
}
