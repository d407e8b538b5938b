//! The offline verifier. It reads a bundle once, as a stream, hashing every file as it goes; only the small
//! files are kept, so memory stays flat however large the payload. It then runs every check and reports each
//! one in a [`Verification`], naming exactly the part that failed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use custodia_core::{
    ArtefactId, CaseId, CustodyEvent, CustodyRecord, Manifest, ManifestSignature, Openings, Sha256, SignedManifest,
};
use custodia_ledger::{LogVerifier, SignedCheckpoint, TlogProof};
use custodia_witness::Policy;
use sha2::Digest as _;

use crate::layout::{self, CaseListing, ExportScope};
use crate::printable::echoed;
use crate::verification::{Check, Part, Verification, VerifyError};

/// Files other than the payload are small; a larger one means the bundle is not what it claims to be. The tag
/// manifests and the report grow by a line or two per custody record (about 300 bytes), and a case bag's manifest
/// by a line per file of its artefact bundles (about 160 bytes): 32 MiB holds the ~100,000 files of a three-hour
/// six-person hearing's bundle twice over, and the records that [`MAX_KEPT_BYTES`] allows (1 MiB once refused an
/// artefact downloaded in 9,000 ranges).
const MAX_SMALL_FILE: u64 = 32 << 20;
/// The most files a bundle may hold, nested artefact bundles' files included. A case bundle of a three-hour
/// hearing with six people (about 6,500 recording segments, some 16 files each) holds about 100,000.
pub const MAX_FILES: usize = 250_000;
/// The most bytes one read holds at once: every file but payloads (of the case bag and of the one artefact bundle
/// being read), every name, what is kept of each artefact bundle already checked (its summary: every failed
/// part, a few failures each, and one line per part that passed), and every check made of the bag itself, each
/// to the byte. An artefact bundle keeps about 2 KiB per custody record, so this allows some 30,000.
pub const MAX_KEPT_BYTES: u64 = 64 << 20;

/// What one read of a bundle may hold: [`MAX_FILES`] and [`MAX_KEPT_BYTES`] unless a caller (a test, an embedder
/// with less memory) asks for less.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Tar entries, nested artefact bundles' included.
    pub files: usize,
    /// Bytes held at once, as [`MAX_KEPT_BYTES`] counts them.
    pub kept_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { files: MAX_FILES, kept_bytes: MAX_KEPT_BYTES }
    }
}

/// The most failed checks kept of one artefact bundle inside a case bundle, besides the first of each failed part.
pub const NESTED_FAILURES_KEPT: usize = 16;

/// A file read from the bundle: its digest and size, and its bytes unless it is the payload.
#[derive(Clone)]
struct FileSeen {
    sha256: Sha256,
    size: u64,
    bytes: Option<Vec<u8>>,
}

/// A reader that counts what passes through it, so the end of an archive can be placed, and refuses a non-zero
/// byte in `padding` (the offsets of the current entry's padding, set as each entry is reached): tar tools differ
/// on what they make of bytes there, so no bundle has any.
struct Counting<R> {
    inner: R,
    count: u64,
    padding: std::rc::Rc<std::cell::Cell<(u64, u64)>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let (start, end) = (self.count, self.count + n as u64);
        let (from, to) = self.padding.get();
        if from < end && start < to {
            let padding = &buf[(from.max(start) - start) as usize..(to.min(end) - start) as usize];
            if padding.iter().any(|&b| b != 0) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "non-zero bytes in a file's padding, which no bundle has",
                ));
            }
        }
        self.count = end;
        Ok(n)
    }
}

/// What reading a bag found: its files, and the verification of each artefact bundle unpacked in a case bundle
/// (whose files stay in `files` by name, digest and size only, for the case bag's manifests).
struct BagRead {
    files: BTreeMap<String, FileSeen>,
    nested: Vec<NestedBundle>,
    /// In a case bag, the names of the directories under `data/bundles/` that directory entries made (an artefact
    /// bundle's, or an empty one's).
    bundle_dirs: BTreeSet<String>,
}

/// An artefact bundle unpacked in a case bag, at `data/bundles/<name>/`, once checked.
struct NestedBundle {
    name: String,
    verification: Verification,
    /// The SHA-256 of its `tagmanifest-sha256.txt`, if it has one, which the listing names it by.
    tag_manifest: Option<Sha256>,
    /// The bytes of all its files.
    size: u64,
}

/// The artefact bundle a case bag's file is in, if it is in one: its directory's name under `data/bundles/`, and
/// the file's path in that bundle's bag.
fn bundled_in(path: &str) -> Option<(&str, &str)> {
    let (name, inner) = path.strip_prefix(layout::BUNDLES_DIR)?.split_once('/')?;
    Some((name, inner))
}

/// The files of the artefact bundle being read in a case bag, and what the budget held before it.
struct OpenBundle {
    name: String,
    files: BTreeMap<String, FileSeen>,
    mark: u64,
}

impl OpenBundle {
    /// Checks the bundle as an artefact bag, keeps what a case bundle keeps of it (its summary, each check naming
    /// it; each of its files by name, digest and size), and lets go of the rest.
    fn close(self, bag: &mut BagRead, trusted: &Pins<'_>, budget: &mut Budget) -> Result<(), VerifyError> {
        let Self { name, files, mark } = self;
        let tag_manifest = files.get(TAG_MANIFEST).map(|seen| seen.sha256);
        let size = files.values().map(|seen| seen.size).sum();
        let dir = format!("{}{name}/", layout::BUNDLES_DIR);
        let slim: Vec<(String, FileSeen)> = files
            .iter()
            .map(|(path, seen)| {
                (format!("{dir}{path}"), FileSeen { sha256: seen.sha256, size: seen.size, bytes: None })
            })
            .collect();
        let verification = verify_artefact_bag(files, trusted, 0);
        budget.keep(checks_cost(&verification.checks))?;
        budget.release_to(mark);
        // Each kept check names the bundle it is of (the name cut to MAX_ECHOED_NAME), counted as kept.
        let mut verification = summarise(verification);
        let shown = echoed(&name);
        for check in &mut verification.checks {
            check.detail = format!("{shown}: {}", check.detail);
        }
        budget.keep(checks_cost(&verification.checks))?;
        // Its name is held twice to the end: among the bundles read, and in what is kept of it.
        budget.keep(2 * name.len() as u64 + PER_FILE_OVERHEAD)?;
        for (path, seen) in slim {
            budget.keep(path.len() as u64 + PER_FILE_OVERHEAD)?;
            if bag.files.insert(path, seen).is_some() {
                return Err(VerifyError::Malformed(format!("a file of {} appears twice in the bundle", echoed(&dir))));
            }
        }
        bag.nested.push(NestedBundle { name, verification, tag_manifest, size });
        Ok(())
    }
}

/// A bag's tag manifest, which fixes its other tag files and through them every file of the bag.
const TAG_MANIFEST: &str = "tagmanifest-sha256.txt";

/// What one read of a bundle holds: files seen (nested ones included), bytes held now (small files, names, and
/// the summaries of nested bundles already checked), and the most it held at once. One budget for the whole read.
struct Budget {
    limits: Limits,
    files: usize,
    kept: u64,
    peak: u64,
}

impl Budget {
    fn new(limits: Limits) -> Self {
        Self { limits, files: 0, kept: 0, peak: 0 }
    }

    fn take_file(&mut self) -> Result<(), VerifyError> {
        if self.files >= self.limits.files {
            return Err(VerifyError::TooLarge(format!(
                "it holds more than {} files, which no court bundle does; it was not checked further",
                self.limits.files
            )));
        }
        self.files += 1;
        Ok(())
    }

    fn keep(&mut self, bytes: u64) -> Result<(), VerifyError> {
        if self.kept + bytes > self.limits.kept_bytes {
            let limit = self.limits.kept_bytes;
            let limit = if limit.is_multiple_of(1 << 20) {
                format!("{} MiB", limit >> 20)
            } else {
                format!("{} KiB", limit >> 10)
            };
            return Err(VerifyError::TooLarge(format!(
                "its files other than the evidence come to more than {limit}, which no court bundle's do; it was not \
                 checked further"
            )));
        }
        self.kept += bytes;
        self.peak = self.peak.max(self.kept);
        Ok(())
    }

    /// Lets go of what was held since `mark` (a nested bundle's files, once it is checked).
    fn release_to(&mut self, mark: u64) {
        self.kept = mark.min(self.kept);
    }
}

/// What a check costs to hold besides its words, counted against [`MAX_KEPT_BYTES`].
const PER_CHECK_OVERHEAD: u64 = 64;

/// What holding `checks` costs.
fn checks_cost(checks: &[Check]) -> u64 {
    checks.iter().map(|check| check.detail.len() as u64 + PER_CHECK_OVERHEAD).sum()
}

/// What a case bundle keeps of one of its artefact bundles once it is checked: every failed part with its first
/// failure, at most [`NESTED_FAILURES_KEPT`] failures besides, a count of those let go, and one check per part
/// that passed, with how many passed. The verdict, the artefact, its SHA-256 and the counts stay as they were.
fn summarise(mut verification: Verification) -> Verification {
    let checks = std::mem::take(&mut verification.checks);
    let mut kept: Vec<Check> = Vec::new();
    let mut failed_parts = BTreeSet::new();
    let mut failures = 0usize;
    let mut let_go: Option<(Part, usize)> = None;
    for check in checks.iter().filter(|check| !check.passed) {
        if failed_parts.insert(check.part) || failures < NESTED_FAILURES_KEPT {
            failures += 1;
            kept.push(check.clone());
        } else {
            let_go.get_or_insert((check.part, 0)).1 += 1;
        }
    }
    if let Some((part, count)) = let_go {
        kept.push(Check { part, passed: false, detail: format!("and {count} more failed checks, not kept") });
    }
    let mut passed: BTreeMap<Part, (String, usize)> = BTreeMap::new();
    for check in checks.into_iter().filter(|check| check.passed && !failed_parts.contains(&check.part)) {
        passed.entry(check.part).or_insert_with(|| (check.detail, 0)).1 += 1;
    }
    for (part, (detail, count)) in passed {
        let detail = if count > 1 { format!("{detail} (and {} more such checks passed)", count - 1) } else { detail };
        kept.push(Check { part, passed: true, detail });
    }
    Verification { checks: kept, ..verification }
}

/// The most bytes of one extended header (a PAX header or a GNU long name); our bundles have none, and a tar tool
/// that repacks them writes a few hundred bytes at most.
const MAX_EXTENSION: u64 = 64 << 10;
/// What the verifier holds per file besides its name and kept bytes (map node, digest, sizes), counted against
/// [`MAX_KEPT_BYTES`] with the name.
const PER_FILE_OVERHEAD: u64 = 128;

/// A PAX record's key and value.
type PaxRecord<'a> = (&'a [u8], &'a [u8]);

/// The records of a PAX extended header's `data`, read as GNU tar reads them: each `<length> <key>=<value>\n`,
/// its length in decimal digits (no sign, no leading zero) counting the whole record, the records filling the
/// data exactly. Anything else is refused: GNU tar stops at a record it cannot read and keeps those before it,
/// where a laxer reader would go on, so the two would name and frame the next file differently.
fn pax_records(data: &[u8]) -> Result<Vec<PaxRecord<'_>>, VerifyError> {
    let malformed = || {
        VerifyError::Malformed(
            "a PAX header's records are not each `<length> <key>=<value>` of exactly that length, which tar tools \
             read differently"
                .into(),
        )
    };
    let mut records = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ').ok_or_else(malformed)?;
        let digits = &rest[..space];
        if digits.is_empty() || digits.len() > 6 || digits[0] == b'0' || !digits.iter().all(u8::is_ascii_digit) {
            return Err(malformed());
        }
        let length: usize = std::str::from_utf8(digits).map_err(|_| malformed())?.parse().map_err(|_| malformed())?;
        if length <= space + 1 || length > rest.len() || rest[length - 1] != b'\n' {
            return Err(malformed());
        }
        let record = &rest[space + 1..length - 1];
        let equals = record.iter().position(|&b| b == b'=').ok_or_else(malformed)?;
        records.push((&record[..equals], &record[equals + 1..]));
        rest = &rest[length..];
    }
    Ok(records)
}

/// Refuses a header that tar tools would frame or name otherwise than this reader does: a size that is neither
/// plain octal (GNU tar reads a leading `+` or `-` as base-64, where this reader's parser reads octal) nor
/// base-256, and a magic and version neither POSIX ustar's nor GNU's (GNU tar and Python then read a name prefix
/// that this reader ignores).
fn check_header_format(raw: &[u8; 512]) -> Result<(), VerifyError> {
    let magic = &raw[257..265];
    if magic != b"ustar\x0000" && magic != b"ustar  \0" {
        return Err(VerifyError::Malformed(
            "a tar header of neither the POSIX ustar nor the GNU format, which tar tools read differently".into(),
        ));
    }
    let size = &raw[124..136];
    let field = size.iter().position(|&b| b != b' ').map_or(&[][..], |start| &size[start..]);
    let digits = field.iter().take_while(|b| (b'0'..=b'7').contains(*b)).count();
    let plain_octal = digits > 0 && field[digits..].iter().all(|&b| b == b' ' || b == 0);
    if !plain_octal && size[0] != 0x80 {
        return Err(VerifyError::Malformed(
            "a tar number field that is not plain octal (or base-256), which tar tools read differently".into(),
        ));
    }
    Ok(())
}

/// What extended headers said about the entry that follows them: its path, and its size if given.
#[derive(Default)]
struct Extended {
    /// Whether an extended header came before the entry (only one may, and only before a regular file).
    present: bool,
    pax_path: Option<Vec<u8>>,
    long_name: Option<Vec<u8>>,
    size: Option<u64>,
}

/// Reads one extended header's data, refusing one larger than [`MAX_EXTENSION`] before reading any of it (the
/// tar crate would read it whole into memory), and notes what it says about the next entry. Only the PAX keys
/// `path` and `size` are accepted: any other (`GNU.sparse.*`, `linkpath`, ...) changes what some tar tool extracts
/// from what the verifier read, and our writer emits none.
fn read_extension(entry: &mut impl Read, header: &tar::Header, extended: &mut Extended) -> Result<(), VerifyError> {
    if extended.present {
        return Err(VerifyError::Malformed("two extended headers in a row, which no bundle has".into()));
    }
    extended.present = true;
    let size = header.entry_size()?;
    if size > MAX_EXTENSION {
        return Err(VerifyError::Malformed(format!(
            "an extended header of {size} bytes; no bundle needs more than {MAX_EXTENSION}"
        )));
    }
    let mut data = Vec::with_capacity(size as usize);
    entry.take(size).read_to_end(&mut data)?;
    if header.entry_type().is_gnu_longname() {
        let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
        data.truncate(end);
        extended.long_name = Some(data);
        return Ok(());
    }
    let (mut path, mut size) = (None, None);
    for (key, value) in pax_records(&data)? {
        let slot = match key {
            b"path" => &mut path,
            b"size" => &mut size,
            key => {
                return Err(VerifyError::Malformed(format!(
                    "a PAX header gives {:?}; only path and size are accepted",
                    echoed(&String::from_utf8_lossy(key))
                )));
            }
        };
        if slot.replace(value).is_some() {
            return Err(VerifyError::Malformed(format!("a PAX header gives {} twice", String::from_utf8_lossy(key))));
        }
    }
    if let Some(path) = path {
        if path.contains(&0) {
            return Err(VerifyError::Malformed("a NUL in a path, where tar tools cut the name".into()));
        }
        extended.pax_path = Some(path.to_vec());
    }
    if let Some(size) = size {
        let plain = size == b"0"
            || size.first().is_some_and(|b| (b'1'..=b'9').contains(b)) && size.iter().all(u8::is_ascii_digit);
        let size = std::str::from_utf8(size).ok().filter(|_| plain).and_then(|v| v.parse().ok());
        extended.size = Some(size.ok_or_else(|| VerifyError::Malformed("a PAX size is not a number".into()))?);
    }
    Ok(())
}

/// Reads every regular file of the bag below its single top-level directory. Artefact bundles inside a case
/// bundle (only one level deep) are verified as they stream past, and their files let go.
///
/// The tar is read raw: extended headers (PAX, GNU long names) are read here, each refused above
/// [`MAX_EXTENSION`] before a byte of it is held, and every entry (directories and extended headers included)
/// counts toward [`MAX_FILES`], every kept name toward [`MAX_KEPT_BYTES`].
///
/// Whatever other tar tools would read otherwise is refused, so that what `tar x` extracts is what was checked:
/// any entry but a regular file or a directory; a directory with data (GNU tar reads it as further entries) or
/// with a path outside the bag; a PAX key but `path` and `size`; two extended headers in a row, or one not
/// followed by a regular file; a GNU header with a ustar prefix; a non-zero byte in padding.
fn read_bundle(
    reader: &mut dyn Read,
    trusted: &Pins<'_>,
    nested_allowed: bool,
    known_payload: Option<(Sha256, u64)>,
    budget: &mut Budget,
) -> Result<BagRead, VerifyError> {
    let padding = std::rc::Rc::new(std::cell::Cell::new((0, 0)));
    let mut counted = Counting { inner: reader, count: 0, padding: padding.clone() };
    let mut archive = tar::Archive::new(&mut counted);
    let mut bag = BagRead { files: BTreeMap::new(), nested: Vec::new(), bundle_dirs: BTreeSet::new() };
    // Directory entries' paths: none may be a file's too (tar tools extract one or the other).
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    // In a case bag: the artefact bundle whose files are being read, and those already read (each bundle's files
    // come together, so that one is checked and let go before the next is read).
    let mut open: Option<OpenBundle> = None;
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut top: Option<String> = None;
    let mut extended = Extended::default();
    // Where the last entry's data and padding end: the end-of-archive marker starts there.
    let mut entries_end = 0u64;
    for entry in archive.entries()?.raw(true) {
        let mut entry = entry?;
        budget.take_file()?;
        let header = entry.header().clone();
        let data_end = entry.raw_file_position() + header.entry_size()?;
        entries_end = data_end.next_multiple_of(512);
        padding.set((data_end, entries_end));
        let kind = header.entry_type();
        let raw = header.as_bytes();
        check_header_format(raw)?;
        if &raw[257..265] == b"ustar  \0" && raw[345..500].iter().any(|&b| b != 0) {
            return Err(VerifyError::Malformed(
                "a GNU tar header with a ustar name prefix, which tar tools read differently".into(),
            ));
        }
        if kind.is_pax_local_extensions() || kind.is_gnu_longname() {
            read_extension(&mut entry, &header, &mut extended)?;
            continue;
        }
        let Extended { present, pax_path, long_name, size: pax_size } = std::mem::take(&mut extended);
        if present && !kind.is_file() {
            return Err(VerifyError::Malformed("an extended header not followed by a regular file".into()));
        }
        if let Some(pax_size) = pax_size
            && pax_size != header.entry_size()?
        {
            return Err(VerifyError::Malformed(format!(
                "a PAX header gives a size of {pax_size} bytes, its entry's header {}",
                header.entry_size()?
            )));
        }
        if !kind.is_file() && !kind.is_dir() {
            return Err(VerifyError::Malformed(
                "the bundle contains an entry that is neither a regular file nor a directory (a link, a device, a \
                 global header), which a bag never does"
                    .into(),
            ));
        }
        if kind.is_dir() && header.entry_size()? != 0 {
            return Err(VerifyError::Malformed(format!(
                "a directory entry with {} bytes of data, which tar tools read as further entries",
                header.entry_size()?
            )));
        }
        let path_bytes = pax_path.or(long_name).unwrap_or_else(|| header.path_bytes().into_owned());
        let path = String::from_utf8_lossy(&path_bytes).into_owned();
        let path = if kind.is_dir() { path.strip_suffix('/').unwrap_or(&path).to_owned() } else { path };
        let (dir, relative) = match path.split_once('/') {
            Some(split) => split,
            // The bag directory itself.
            None if kind.is_dir() => (path.as_str(), ""),
            None => return Err(VerifyError::Malformed(format!("{} is outside the bag directory", echoed(&path)))),
        };
        let hostile_part = |part: &str| part.is_empty() || part == "." || part == "..";
        if path.starts_with('/')
            || hostile_part(dir)
            || (!relative.is_empty() || !kind.is_dir()) && relative.split('/').any(hostile_part)
        {
            return Err(VerifyError::Malformed(format!("hostile path {:?} in the bundle", echoed(&path))));
        }
        match &top {
            Some(top) if top != dir => {
                return Err(VerifyError::Malformed(format!(
                    "{} is outside the bag directory {}",
                    echoed(&path),
                    echoed(top)
                )));
            }
            None => top = Some(dir.to_owned()),
            Some(_) => {}
        }
        let both = || {
            VerifyError::Malformed(format!(
                "{} is both a directory and a file, which tar tools extract as one or the other",
                echoed(&path)
            ))
        };
        if kind.is_dir() {
            let in_open = |open: &OpenBundle| {
                bundled_in(relative).is_some_and(|(name, inner)| name == open.name && open.files.contains_key(inner))
            };
            if bag.files.contains_key(relative) || open.as_ref().is_some_and(in_open) {
                return Err(both());
            }
            if !relative.is_empty() && dirs.insert(relative.to_owned()) {
                budget.keep(relative.len() as u64 + PER_FILE_OVERHEAD)?;
            }
            if let Some(name) = relative.strip_prefix(layout::BUNDLES_DIR).and_then(|rest| rest.split('/').next())
                && nested_allowed
                && !name.is_empty()
                && bag.bundle_dirs.insert(name.to_owned())
            {
                budget.keep(name.len() as u64 + PER_FILE_OVERHEAD)?;
            }
            continue;
        }
        if dirs.contains(relative) {
            return Err(both());
        }
        let bundled = bundled_in(relative).filter(|_| nested_allowed);
        if let Some(done) = open.take_if(|open| bundled.is_none_or(|(name, _)| name != open.name)) {
            closed.insert(done.name.clone());
            done.close(&mut bag, trusted, budget)?;
        }
        if let Some((name, _)) = bundled {
            if closed.contains(name) {
                return Err(VerifyError::Malformed(format!(
                    "the files of the artefact bundle {} are not together in the case bundle",
                    echoed(name)
                )));
            }
            open.get_or_insert_with(|| OpenBundle { name: name.to_owned(), files: BTreeMap::new(), mark: budget.kept });
        }
        budget.keep(relative.len() as u64 + PER_FILE_OVERHEAD)?;
        // Where the file goes: the open bundle's files, by its path in that bag, or the bag's own.
        let (files, in_bag) = match (&mut open, bundled) {
            (Some(open), Some((_, inner))) => (&mut open.files, inner),
            _ => (&mut bag.files, relative),
        };
        let is_payload = in_bag.starts_with(layout::PAYLOAD_DIR);
        let size = header.entry_size()?;
        if !is_payload && size > MAX_SMALL_FILE {
            return Err(VerifyError::Malformed(format!("{relative} is {size} bytes; only the payload may be large")));
        }
        if !is_payload {
            budget.keep(size)?;
        }
        if let Some((known, known_size)) = known_payload.filter(|_| is_payload) {
            let read_total = std::io::copy(&mut entry, &mut std::io::sink())?;
            if read_total != known_size {
                return Err(VerifyError::Malformed(format!(
                    "its payload entry has {read_total} bytes, not the {known_size} hashed"
                )));
            }
            let seen = FileSeen { sha256: known, size: read_total, bytes: None };
            if files.insert(in_bag.to_owned(), seen).is_some() {
                return Err(VerifyError::Malformed(format!("{relative} appears twice in the bundle")));
            }
            continue;
        }
        let mut hasher = sha2::Sha256::new();
        let mut kept = (!is_payload).then(|| Vec::with_capacity(size as usize));
        let mut buffer = vec![0u8; 256 * 1024];
        let mut read_total = 0u64;
        loop {
            let n = entry.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            if let Some(kept) = kept.as_mut() {
                kept.extend_from_slice(&buffer[..n]);
            }
            read_total += n as u64;
        }
        let seen = FileSeen { sha256: Sha256::from_bytes(hasher.finalize().into()), size: read_total, bytes: kept };
        if files.insert(in_bag.to_owned(), seen).is_some() {
            return Err(VerifyError::Malformed(format!("{relative} appears twice in the bundle")));
        }
    }
    if extended.present {
        return Err(VerifyError::Malformed("an extended header not followed by a regular file".into()));
    }
    if let Some(done) = open {
        done.close(&mut bag, trusted, budget)?;
    }
    end_of_archive(&mut counted, entries_end)?;
    Ok(bag)
}

/// After the entries: the end-of-archive marker (two zero blocks, the first already read by the tar reader) and
/// nothing but zero padding to the end, so that no file hides past the marker where a tool told to read on (`tar
/// -i`) would find it.
fn end_of_archive<R: Read>(reader: &mut Counting<R>, entries_end: u64) -> Result<(), VerifyError> {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        if let Some(at) = buffer[..n].iter().position(|&b| b != 0) {
            let offset = reader.count - n as u64 + at as u64;
            return Err(VerifyError::Malformed(format!(
                "it holds data after its end-of-archive marker (a non-zero byte at offset {offset}), which no \
                 bundle does"
            )));
        }
    }
    if reader.count < entries_end + 1024 {
        return Err(VerifyError::Malformed("it ends without its end-of-archive marker: it was cut short".into()));
    }
    Ok(())
}

/// Parses a BagIt checksum manifest: `<hex>  <path>` per line.
fn checksum_lines(text: &str) -> Result<BTreeMap<String, Sha256>, String> {
    text.lines()
        .map(|line| {
            let (hex, path) =
                line.split_once(char::is_whitespace).ok_or_else(|| format!("malformed line {:?}", echoed(line)))?;
            let digest = hex.parse().map_err(|_| format!("malformed checksum in {:?}", echoed(line)))?;
            Ok((path.trim_start().to_owned(), digest))
        })
        .collect()
}

fn text<'a>(files: &'a BTreeMap<String, FileSeen>, path: &str) -> Option<&'a [u8]> {
    files.get(path).and_then(|f| f.bytes.as_deref())
}

/// Checks a bundle offline. `trusted` are the keys the user pins; with none, the bundle is checked against its
/// own key and the verdict is at best [`Verdict::UnknownSigner`](crate::Verdict::UnknownSigner).
///
/// A case bundle (a bag of artefact bundles) is checked as a bag, against its case export record, then each
/// artefact bundle in it as above; the report prefixes each check with the artefact bundle it is about.
///
/// Memory is bounded: at most [`MAX_FILES`] files and [`MAX_KEPT_BYTES`] of small files held at once, or
/// [`VerifyError::TooLarge`].
pub fn verify(reader: impl Read, trusted: &[LogVerifier]) -> Result<Verification, VerifyError> {
    verify_within(reader, trusted, Limits::default())
}

/// [`verify`] under other [`Limits`]. The verification says how many files it read and the most it held.
pub fn verify_within(reader: impl Read, trusted: &[LogVerifier], limits: Limits) -> Result<Verification, VerifyError> {
    verify_pinned(reader, &Pins { keys: trusted, policy: None, time: None }, limits)
}

/// What the reader pins: the gateway keys they trust, and the witness policy (c2sp.org/tlog-policy) they require.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pins<'a> {
    pub keys: &'a [LogVerifier],
    /// With a policy, the checkpoint's cosignatures must meet its quorum over every record, or the bundle is not
    /// valid; without one, a bundle's own policy is reported as the bundle's, not one the reader pinned.
    pub policy: Option<&'a Policy>,
    /// Time-Stamp Authority anchors and trusted lists: with them, every bag must carry a timestamp token, and with
    /// anchors it must verify under them, or the bundle is not valid; without, a token is reported as present and
    /// unchecked, and its absence is reported too.
    pub time: Option<&'a crate::time::TimeTrust>,
}

/// [`verify_within`] under a pinned witness policy too.
pub fn verify_pinned(mut reader: impl Read, trusted: &Pins<'_>, limits: Limits) -> Result<Verification, VerifyError> {
    let mut budget = Budget::new(limits);
    let bag = read_bundle(&mut reader, trusted, true, None, &mut budget)?;
    // What is kept of the artefact bundles of a case bag is counted already; the checks of the bag itself (one or
    // more per file in it, a name in each) are counted as they are made, with its files still held.
    let nested: u64 = bag.nested.iter().map(|nested| checks_cost(&nested.verification.checks)).sum();
    let mut verification = verify_bag(bag, trusted);
    budget.keep(checks_cost(&verification.checks).saturating_sub(nested))?;
    verification.files_read = budget.files;
    verification.peak_kept_bytes = budget.peak;
    Ok(verification)
}

/// Verifies a bundle of which the caller holds the head (the tar bytes before the payload's, as
/// [`crate::BundleWriter::head`] writes them) and has hashed the payload itself, as it arrived: `payload` is its
/// SHA-256 and size, which stand for its bytes. Everything else is checked as [`verify_pinned`] checks it. (A
/// gateway receiving a transfer hashes the payload chunk by chunk as it writes it, and checks the bundle without
/// reading it again.)
pub fn verify_with_payload_digest(
    head: &[u8],
    payload: (Sha256, u64),
    trusted: &Pins<'_>,
    limits: Limits,
) -> Result<Verification, VerifyError> {
    let (sha256, size) = payload;
    let mut tail = crate::write::padding(size);
    tail.resize(tail.len() + 1024, 0);
    let mut reader = head.chain(std::io::repeat(0).take(size)).chain(tail.as_slice());
    let mut budget = Budget::new(limits);
    let bag = read_bundle(&mut reader, trusted, false, Some((sha256, size)), &mut budget)?;
    let mut verification = verify_bag(bag, trusted);
    budget.keep(checks_cost(&verification.checks))?;
    verification.files_read = budget.files;
    verification.peak_kept_bytes = budget.peak;
    Ok(verification)
}

fn verify_bag(bag: BagRead, trusted: &Pins<'_>) -> Verification {
    let is_case = !bag.nested.is_empty()
        || !bag.bundle_dirs.is_empty()
        || bag.files.keys().any(|path| path.starts_with(layout::BUNDLES_DIR) || path == layout::CASE_LISTING);
    if is_case { verify_case_bag(bag, trusted) } else { verify_artefact_bag(bag.files, trusted, 0) }
}

/// The files a case bag holds besides its artefact bundles and custody record.
const CASE_FILES: [&str; 5] =
    [layout::CASE_LISTING, layout::CHECKPOINT, layout::VKEY, layout::PUBLIC_KEY_PEM, layout::REPORT];
/// The files an artefact bag holds besides its payload and custody records.
const ARTEFACT_FILES: [&str; 6] = [
    layout::MANIFEST,
    layout::MANIFEST_SIGNATURE,
    layout::CHECKPOINT,
    layout::VKEY,
    layout::PUBLIC_KEY_PEM,
    layout::REPORT,
];

fn verify_case_bag(bag: BagRead, trusted: &Pins<'_>) -> Verification {
    let mut report = Verification::default();
    check_bag(&bag.files, &mut report);
    check_strays(
        &bag.files,
        "a case bundle",
        |path| {
            path.starts_with(layout::BUNDLES_DIR) || CASE_FILES.contains(&path) || layout::WITNESS_FILES.contains(&path)
        },
        &mut report,
    );
    let listing = text(&bag.files, layout::CASE_LISTING).and_then(|bytes| CaseListing::from_bytes(bytes).ok());
    let mut expected = vec![];
    if let Some(key) = own_key(&bag.files) {
        expected.push(("Source-Organization", layout::source_organization(key.name())));
    }
    if let Some(listing) = &listing {
        expected.push(("External-Identifier", listing.case.to_string()));
        expected.push(("External-Description", layout::case_description(&listing.case, &listing.scope)));
        expected.push(("Custodia-Scope", listing.scope.tag()));
    }
    check_bag_info(&bag.files, "a case bundle", &expected, &mut report);
    let key = bundle_key(&bag.files, trusted.keys, &mut report);
    let records = match &key {
        Some(key) => {
            let checkpoint_bytes = text(&bag.files, layout::CHECKPOINT).unwrap_or_default();
            let checkpoint_ok = check_checkpoint(checkpoint_bytes, key, &mut report);
            check_records(&bag.files, checkpoint_bytes, key, checkpoint_ok, &mut report)
        }
        None => Vec::new(),
    };
    report.records = records.len();
    if let Some(key) = &key {
        let indexes: Vec<u64> = records.iter().map(|record| record.index).collect();
        crate::witnesses::check(&witness_files(&bag.files), key, trusted.policy, &indexes, &mut report);
    }
    let case = listing.as_ref().map(|listing| (&listing.case, "the case listing's"));
    check_openings(&bag.files, &records, case, &mut report);
    check_case_contents(&bag, &records, &mut report);
    if let (Some(key), Some(listing), [only]) = (key.as_ref(), listing.as_ref(), records.as_slice()) {
        let expected = crate::report::case_certificate(key.name(), listing, only.index);
        check_report(&bag.files, &expected, &mut report);
    }
    // Each nested check already names its bundle (see read_bundle), counted in the budget.
    for NestedBundle { verification: nested, .. } in bag.nested {
        report.records += nested.records;
        report.unconfirmed += nested.unconfirmed;
        report.checks.extend(nested.checks);
    }
    report
}

/// The tag files at the top of every bag.
const TAG_FILES: [&str; 4] = ["bagit.txt", "bag-info.txt", "manifest-sha256.txt", "tagmanifest-sha256.txt"];

/// Names every file that a bundle of its kind never holds, wherever it is and whatever the bag's checksum
/// manifests say (a forger lists a planted file there too): at the top, the tag files only; under `data/`, the
/// files `belongs` admits, and in `data/custody/` each record (`<index>.json`) with its proof and openings. (A
/// second record is a record too: the custody history or the case contents refuse it.)
fn check_strays(
    files: &BTreeMap<String, FileSeen>,
    kind: &str,
    belongs: impl Fn(&str) -> bool,
    report: &mut Verification,
) {
    let is_record = |path: &str| path.ends_with(".json") && !path.ends_with(".opening.json");
    let custody: BTreeSet<String> = files
        .keys()
        .filter_map(|path| path.strip_prefix(layout::CUSTODY_DIR).filter(|_| is_record(path)))
        .filter_map(|name| name.strip_suffix(".json")?.parse::<u64>().ok())
        .flat_map(|index| [layout::record_paths(index).1, layout::opening_path(index)])
        .collect();
    for path in files.keys() {
        let known = if path.starts_with(layout::CUSTODY_DIR) {
            is_record(path) || custody.contains(path)
        } else if path.starts_with("data/") {
            belongs(path)
        } else {
            TAG_FILES.contains(&path.as_str())
        };
        if !known {
            report.fail(Part::Bag, format!("{} does not belong in {kind}", echoed(path)));
        }
    }
}

/// The case export record lists exactly the artefact bundles in the bag, each byte for byte as exported.
fn check_case_contents(bag: &BagRead, records: &[BundledRecord], report: &mut Verification) {
    let before = report.checks.iter().filter(|c| !c.passed).count();
    // A file directly under data/bundles/ is no artefact bundle (one in a directory of its own is).
    for path in bag.files.keys().filter(|path| path.starts_with(layout::BUNDLES_DIR) && bundled_in(path).is_none()) {
        report.fail(
            Part::CaseContents,
            format!(
                "{} is not an artefact bundle's directory, which is all {} holds",
                echoed(path),
                layout::BUNDLES_DIR
            ),
        );
    }
    let read: BTreeSet<&str> = bag.nested.iter().map(|nested| nested.name.as_str()).collect();
    for name in bag.bundle_dirs.iter().filter(|name| !read.contains(name.as_str())) {
        report.fail(
            Part::CaseContents,
            format!("{} holds no file of an artefact bundle", echoed(&format!("{}{name}/", layout::BUNDLES_DIR))),
        );
    }
    let [only] = records else {
        report.fail(
            Part::CaseContents,
            format!(
                "a case bundle holds exactly one custody record, its case export record; this one holds {}",
                records.len()
            ),
        );
        return;
    };
    let Some(CustodyRecord { event: CustodyEvent::CaseExported { listing_sha256, artefacts, hearing }, .. }) =
        &only.record
    else {
        report.fail(Part::CaseContents, format!("record {} is not a case export record", only.index));
        return;
    };
    let Some(listing_bytes) = text(&bag.files, layout::CASE_LISTING) else {
        report.fail(Part::CaseContents, format!("{} is missing", layout::CASE_LISTING));
        return;
    };
    if Sha256::of(listing_bytes) != *listing_sha256 {
        report.fail(
            Part::CaseContents,
            format!("{} is not the listing that case export record {} commits to", layout::CASE_LISTING, only.index),
        );
        return;
    }
    let listing = match CaseListing::from_bytes(listing_bytes) {
        Ok(listing) => listing,
        Err(err) => {
            report.fail(Part::CaseContents, format!("{}: {err}", layout::CASE_LISTING));
            return;
        }
    };
    // The scope the listing names is the one the record commits to.
    let opened = text(&bag.files, &layout::opening_path(only.index))
        .and_then(|bytes| Openings::from_canonical(bytes).ok())
        .and_then(|openings| openings.text("hearing").map(str::to_owned));
    let scope_agrees = match (&listing.scope, hearing) {
        (ExportScope::Case, None) => true,
        (ExportScope::Hearing { hearing: listed }, Some(_)) if opened.as_deref() == Some(listed.as_str()) => true,
        (ExportScope::Hearing { hearing: listed }, Some(_)) => {
            report.fail(
                Part::CaseContents,
                format!(
                    "the listing names hearing {listed}, but case export record {} is of hearing {}",
                    only.index,
                    opened.as_deref().unwrap_or("(not opened)")
                ),
            );
            false
        }
        (ExportScope::Case, Some(_)) => {
            report.fail(
                Part::CaseContents,
                format!(
                    "the listing says it is the whole case, but case export record {} is of one hearing's output",
                    only.index
                ),
            );
            false
        }
        (ExportScope::Hearing { hearing: listed }, None) => {
            report.fail(
                Part::CaseContents,
                format!(
                    "the listing says it is hearing {listed}'s output only, but case export record {} is of the whole \
                     case",
                    only.index
                ),
            );
            false
        }
    };
    if scope_agrees {
        report.scope = Some(listing.scope.describe(&listing.case));
    }
    if listing.bundles.len() as u64 != *artefacts {
        report.fail(
            Part::CaseContents,
            format!("the listing names {} bundles, the case export record {artefacts}", listing.bundles.len()),
        );
    }
    let mut listed = BTreeMap::new();
    for bundle in &listing.bundles {
        if listed.insert(bundle.artefact.as_str(), bundle).is_some() {
            report.fail(Part::CaseContents, format!("the listing names artefact {} twice", bundle.artefact));
        }
    }
    let held: BTreeMap<&str, &NestedBundle> = bag.nested.iter().map(|nested| (nested.name.as_str(), nested)).collect();
    for (name, bundle) in &listed {
        let dir = layout::inner_bundle_dir(&bundle.artefact);
        match held.get(name) {
            None => report.fail(
                Part::CaseContents,
                format!(
                    "artefact {name} is missing: the case export record lists {dir}, and the bundle does not hold it"
                ),
            ),
            Some(nested) if nested.tag_manifest != Some(bundle.sha256) || nested.size != bundle.size => report.fail(
                Part::CaseContents,
                format!(
                    "artefact {name}: {dir} is not the bundle this export made (tag manifest SHA-256 {}, {} bytes; \
                     the case export record lists {}, {} bytes): it was swapped or altered",
                    nested.tag_manifest.map_or_else(|| "none".to_owned(), |sha256| sha256.to_hex()),
                    nested.size,
                    bundle.sha256,
                    bundle.size
                ),
            ),
            Some(_) => {}
        }
    }
    for nested in &bag.nested {
        let dir = format!("{}{}/", layout::BUNDLES_DIR, nested.name);
        if !listed.contains_key(nested.name.as_str()) {
            report.fail(Part::CaseContents, format!("{} is not in the case export record: it was added", echoed(&dir)));
            continue;
        }
        if let Some(artefact) = &nested.verification.artefact
            && nested.name != artefact.as_str()
        {
            report.fail(Part::CaseContents, format!("{} holds the bundle of artefact {artefact}", echoed(&dir)));
        }
    }
    if report.checks.iter().filter(|c| !c.passed).count() == before {
        report.pass(
            Part::CaseContents,
            format!(
                "case export record {} lists {} artefact bundles of {}; each is here, as exported, and nothing else",
                only.index,
                listing.bundles.len(),
                listing.scope.describe(&listing.case)
            ),
        );
    }
}

/// The bundle's own key, unchecked.
fn own_key(files: &BTreeMap<String, FileSeen>) -> Option<LogVerifier> {
    text(files, layout::VKEY).and_then(|b| std::str::from_utf8(b).ok()).and_then(|t| t.trim().parse().ok())
}

/// bag-info.txt: each line `Label: value` (a line that starts with a space or a tab goes on with the one before),
/// every label the gateway writes for this kind of bag present once and no other, `Payload-Oxum` the payload's
/// bytes and files (everything under `data/`), `Bagging-Date` a date, and the values `expected` (what the checked
/// files make of the source, the identifier, the description and the scope) exactly. It is not evidence, any more
/// than the certificate: a bag-info.txt that says something else (a hearing's bundle relabelled as the whole case)
/// is reported.
fn check_bag_info(
    files: &BTreeMap<String, FileSeen>,
    kind: &str,
    expected: &[(&str, String)],
    report: &mut Verification,
) {
    const INFO: &str = "bag-info.txt";
    let Some(body) = text(files, INFO).and_then(|bytes| std::str::from_utf8(bytes).ok()) else {
        report.fail(Part::Bag, format!("{INFO} is missing or not UTF-8"));
        return;
    };
    let before = report.checks.iter().filter(|c| !c.passed).count();
    if body.contains('\r') {
        report.fail(Part::Bag, format!("{INFO} has a carriage return; the gateway writes its lines with LF only"));
    }
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut lines: Vec<&str> = body.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    for (at, line) in lines.into_iter().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let continued = line.starts_with([' ', '\t']);
        match (continued, fields.last_mut(), line.split_once(':')) {
            (true, Some((_, value)), _) => {
                value.push(' ');
                value.push_str(line.trim_start_matches([' ', '\t']));
            }
            (false, _, Some((label, value))) if !label.is_empty() && !label.contains([' ', '\t']) => {
                fields.push((label.to_owned(), value.trim_start_matches([' ', '\t']).to_owned()));
            }
            _ => report.fail(Part::Bag, format!("{INFO}: line {} is not `Label: value`", at + 1)),
        }
    }
    let allowed: Vec<&str> = layout::BAG_INFO_LABELS
        .iter()
        .copied()
        .filter(|label| *label != "Custodia-Scope" || kind == "a case bundle")
        .collect();
    let mut seen = BTreeSet::new();
    for (label, _) in &fields {
        if !allowed.contains(&label.as_str()) {
            report.fail(Part::Bag, format!("{INFO} gives {label}, which the {INFO} of {kind} does not"));
        } else if !seen.insert(label.as_str()) {
            report.fail(Part::Bag, format!("{INFO} gives {label} more than once"));
        }
    }
    let value = |label: &str| fields.iter().find(|(l, _)| l == label).map(|(_, v)| v.as_str());
    for label in &allowed {
        if value(label).is_none() {
            report.fail(Part::Bag, format!("{INFO} lacks {label}"));
        }
    }
    let payload = files.iter().filter(|(path, _)| path.starts_with("data/"));
    let (octets, count) = payload.fold((0u64, 0usize), |(octets, count), (_, seen)| (octets + seen.size, count + 1));
    let oxum = format!("{octets}.{count}");
    if let Some(found) = value("Payload-Oxum")
        && found != oxum
    {
        report.fail(Part::Bag, format!("{INFO} gives Payload-Oxum {found}, but the payload is {oxum} (bytes.files)"));
    }
    if let Some(found) = value("Bagging-Date")
        && !(found.len() == 10
            && found.bytes().enumerate().all(|(at, b)| if at == 4 || at == 7 { b == b'-' } else { b.is_ascii_digit() })
            && found.parse::<jiff::civil::Date>().is_ok())
    {
        report.fail(Part::Bag, format!("{INFO} gives Bagging-Date {found}, which is not a calendar date (YYYY-MM-DD)"));
    }
    if let Some(found) = value("Bag-Software-Agent")
        && !found.strip_prefix("custodia ").is_some_and(|version| {
            version.split('.').count() == 3
                && version.split('.').all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
    {
        report.fail(
            Part::Bag,
            format!(
                "{INFO} gives Bag-Software-Agent {found}, which is not custodia <version> as the gateway writes it"
            ),
        );
    }
    for (label, want) in expected {
        if let Some(found) = value(label)
            && found != want
        {
            report.fail(Part::Bag, format!("{INFO} gives {label} \"{found}\" where the checked files make \"{want}\""));
        }
    }
    if report.checks.iter().filter(|c| !c.passed).count() == before {
        report.pass(Part::Bag, format!("{INFO} says what the checked files say (Payload-Oxum {oxum})"));
    }
}

/// The bundle's own key, checked against the keys the user pins. `None` if the bundle carries no usable key.
fn bundle_key(
    files: &BTreeMap<String, FileSeen>,
    trusted: &[LogVerifier],
    report: &mut Verification,
) -> Option<LogVerifier> {
    let Some(key) = own_key(files) else {
        report.fail(Part::TrustedKey, format!("{} is missing or not a C2SP verifier key", layout::VKEY));
        return None;
    };
    if trusted.is_empty() {
        report.fail(
            Part::TrustedKey,
            format!("not verified: unknown signer: signed by {key}, a key you have not confirmed (none was pinned)"),
        );
        report.unconfirmed += 1;
    } else {
        let known = trusted.iter().any(|t| t.to_string() == key.to_string());
        report.check(
            Part::TrustedKey,
            known,
            format!("signed by trusted key {key}"),
            format!("signed by {key}, which is not among the trusted keys"),
        );
    }
    Some(key)
}

/// The checkpoint every proof is against: signed by the key. Whether it is.
fn check_checkpoint(checkpoint_bytes: &[u8], key: &LogVerifier, report: &mut Verification) -> bool {
    match SignedCheckpoint::open(checkpoint_bytes, std::slice::from_ref(key)) {
        Ok(signed) => {
            let cp = &signed.checkpoint;
            report.pass(Part::Checkpoint, format!("log {} at size {} is signed by the gateway", cp.origin, cp.size));
            true
        }
        Err(err) => {
            report.fail(Part::Checkpoint, format!("{}: {err}", layout::CHECKPOINT));
            false
        }
    }
}

fn verify_artefact_bag(mut files: BTreeMap<String, FileSeen>, trusted: &Pins<'_>, depth: usize) -> Verification {
    let mut report = Verification::default();
    check_bag(&files, &mut report);
    check_strays(
        &files,
        "an artefact bundle",
        |path| {
            path.starts_with(layout::PAYLOAD_DIR)
                || path.starts_with(layout::PROVENANCE_DIR)
                || ARTEFACT_FILES.contains(&path)
                || layout::WITNESS_FILES.contains(&path)
                || layout::TIMESTAMP_FILES.contains(&path)
        },
        &mut report,
    );

    let payload_paths: Vec<&String> = files.keys().filter(|p| p.starts_with(layout::PAYLOAD_DIR)).collect();
    let mut expected = vec![];
    if let Some(key) = own_key(&files) {
        expected.push(("Source-Organization", layout::source_organization(key.name())));
    }
    // The artefact is the payload's name here; the payload's check ties that name to the signed manifest.
    if let [path] = payload_paths.as_slice()
        && let Some(artefact) = path.strip_prefix(layout::PAYLOAD_DIR).and_then(|name| ArtefactId::new(name).ok())
    {
        expected.push(("External-Identifier", artefact.to_string()));
        expected.push(("External-Description", layout::artefact_description(&artefact)));
    }
    check_bag_info(&files, "an artefact bundle", &expected, &mut report);
    // The bag's own checks of every file are made: the provider's chain is taken out to be checked as a bag.
    let chain = take_provider_chain(&mut files);
    let provider_keys = crate::report::provider_keys(
        chain.iter().filter_map(|(path, seen)| Some((path.as_str(), seen.bytes.as_deref()?))),
    );
    let files = &files;
    let payloads: Vec<(&String, &FileSeen)> =
        files.iter().filter(|(p, _)| p.starts_with(layout::PAYLOAD_DIR)).collect();
    let [(payload_path, payload)] = payloads.as_slice() else {
        let names: Vec<&str> = payloads.iter().map(|(path, _)| path.as_str()).collect();
        report.fail(
            Part::PayloadHash,
            format!("expected one file under {}, found {}: {}", layout::PAYLOAD_DIR, payloads.len(), names.join(", ")),
        );
        return report;
    };
    report.sha256 = Some(payload.sha256);

    // The key: the bundle's own, which must be one the user trusts.
    let Some(key) = bundle_key(files, trusted.keys, &mut report) else { return report };
    let Ok(public_key) = key.public_key() else {
        report.fail(Part::ManifestSignature, "the gateway key is not an Ed25519 key");
        return report;
    };

    // The manifest: signed by the key, and naming exactly the payload's bytes.
    let manifest_bytes = text(files, layout::MANIFEST).unwrap_or_default();
    let signature = text(files, layout::MANIFEST_SIGNATURE)
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(ManifestSignature::from_bytes);
    let verified = signature.map(|s| SignedManifest::verify(manifest_bytes, s, &public_key));
    let signed = matches!(verified, Some(Ok(_)));
    let manifest: Option<Manifest> = match verified {
        Some(Ok(signed)) => {
            report.pass(Part::ManifestSignature, format!("{} is signed by the gateway", layout::MANIFEST));
            Some(signed.manifest().clone())
        }
        Some(Err(err)) => {
            report.fail(Part::ManifestSignature, format!("{}: {err}", layout::MANIFEST));
            custodia_core::from_canonical_slice(manifest_bytes).ok()
        }
        None => {
            report.fail(Part::ManifestSignature, format!("{} is missing or not 64 bytes", layout::MANIFEST_SIGNATURE));
            None
        }
    };
    if let Some(manifest) = &manifest {
        report.artefact = Some(manifest.artefact.to_string());
        let expected_path = layout::payload_path(&manifest.artefact);
        report.check(
            Part::PayloadHash,
            manifest.sha256 == payload.sha256 && manifest.size == payload.size && **payload_path == expected_path,
            format!("{payload_path} has SHA-256 {} and {} bytes, as the signed manifest says", payload.sha256, payload.size),
            format!(
                "{payload_path} has SHA-256 {} ({} bytes), but the signed manifest says {} ({} bytes) for {expected_path}",
                payload.sha256, payload.size, manifest.sha256, manifest.size
            ),
        );
    } else {
        report.fail(Part::PayloadHash, "no readable manifest to check the payload against");
    }

    // The checkpoint every proof is against.
    let checkpoint_bytes = text(files, layout::CHECKPOINT).unwrap_or_default();
    let checkpoint_ok = check_checkpoint(checkpoint_bytes, &key, &mut report);

    let records = check_records(files, checkpoint_bytes, &key, checkpoint_ok, &mut report);
    report.records = records.len();
    let indexes: Vec<u64> = records.iter().map(|record| record.index).collect();
    crate::witnesses::check(&witness_files(files), &key, trusted.policy, &indexes, &mut report);
    let time_files = crate::time::TimestampFiles {
        entry: text(files, layout::TIMESTAMP_ENTRY),
        proof: text(files, layout::TIMESTAMP_PROOF),
        consistency: text(files, layout::TIMESTAMP_CONSISTENCY),
    };
    let opened = crate::time::open_checkpoint(checkpoint_bytes, &key).filter(|_| checkpoint_ok);
    let included = |entry: &[u8], proof: &[u8]| included(entry, Some(proof), None, checkpoint_bytes, &key);
    let times: Vec<(u64, Option<jiff::Timestamp>)> =
        records.iter().map(|bundled| (bundled.index, bundled.record.as_ref().map(|record| record.at))).collect();
    crate::time::check(&time_files, opened.as_ref(), &times, trusted.time, included, &mut report);
    check_history(&records, manifest.as_ref(), manifest_bytes, signature, &mut report);
    let case = manifest.as_ref().map(|manifest| (&manifest.case, "the signed manifest's"));
    check_openings(files, &records, case, &mut report);
    check_provider_chain(chain, files, &records, payload, &key, trusted, depth, &mut report);
    // The certificate, made again from the checked files; only when the manifest is the gateway's own.
    if let Some(manifest) = manifest.as_ref().filter(|_| signed) {
        let entries: Vec<(u64, &[u8], &[u8])> = records
            .iter()
            .map(|bundled| {
                let (entry, _) = layout::record_paths(bundled.index);
                let opening = layout::opening_path(bundled.index);
                (bundled.index, text(files, &entry).unwrap_or_default(), text(files, &opening).unwrap_or_default())
            })
            .collect();
        let vkey = vkey_text(files);
        let facts = crate::report::CertificateFacts {
            artefact: manifest.artefact.as_str(),
            payload_sha256: manifest.sha256,
            payload_size: manifest.size,
            manifest: manifest_bytes,
            records: &entries,
            checkpoint: checkpoint_bytes,
            vkey: &vkey,
            timestamp: text(files, layout::TIMESTAMP_ENTRY).zip(text(files, layout::TIMESTAMP_PROOF)),
            provider_keys: &provider_keys,
        };
        check_report(files, &crate::report::certificate_of(&facts, &key), &mut report);
    }
    report
}

/// How each check of a provider's chain begins, in a bag that carries one.
pub const PROVIDER_CHAIN: &str = "provider's chain: ";

/// The field of a `received_from` record's `provenance` opening (canonical JSON) that names the SHA-256 of the
/// provider's signed manifest.
pub const PROVIDER_MANIFEST_FIELD: &str = "provider_manifest_sha256";

/// How deep provider's chains may nest (a chain within the chain of an artefact forwarded from gateway to
/// gateway): far more than any real forwarding, and a bound on what a hostile bag makes the verifier do.
pub const MAX_PROVIDER_DEPTH: usize = 8;

/// The provider's chain of an artefact bag: its files under [`layout::PROVENANCE_DIR`], taken out of `files` (so
/// that the bag's files are held once, however deep chains nest), each path relative to the provider's bag.
fn take_provider_chain(files: &mut BTreeMap<String, FileSeen>) -> BTreeMap<String, FileSeen> {
    let mut chain = files.split_off(layout::PROVENANCE_DIR);
    // Every path with the prefix sorts below the prefix with its last character ('/') raised by one.
    let end = format!("{}0", layout::PROVENANCE_DIR.trim_end_matches('/'));
    let mut after = chain.split_off(&end);
    files.append(&mut after);
    chain.into_iter().map(|(path, seen)| (path[layout::PROVENANCE_DIR.len()..].to_owned(), seen)).collect()
}

/// What a `received_from` record's opened `provenance` names of the provider's chain.
#[derive(Default)]
struct Provenance {
    manifest_sha256: Option<String>,
    artefact: Option<String>,
    /// The first three lines of the provider's checkpoint (origin, size, root hash).
    checkpoint: Option<String>,
}

/// The first three lines of a checkpoint (origin, size, root hash), as a `received_from` record names it.
fn checkpoint_head(checkpoint: &[u8]) -> String {
    String::from_utf8_lossy(checkpoint).lines().take(3).collect::<Vec<_>>().join("\n")
}

/// Of a bag that holds an artefact received from a partner gateway: the provider's chain (`chain`, taken from under
/// [`layout::PROVENANCE_DIR`]) is the provider's bag but its payload, which is this bag's payload. There is a chain
/// exactly when there is one `received_from` record; the record commits to it (its opened `provenance` names the
/// chain's manifest by SHA-256, its artefact and its checkpoint); it is another gateway's (a gateway is not its own
/// provider); and it is checked as that gateway's bag with the same trusted keys (so the provider's key must be
/// trusted too), each of its checks kept and named [`PROVIDER_CHAIN`]. A witness policy or Time-Stamp Authority the
/// reader pinned is about the bag's own gateway, not about its providers.
#[allow(clippy::too_many_arguments)]
fn check_provider_chain(
    mut chain: BTreeMap<String, FileSeen>,
    files: &BTreeMap<String, FileSeen>,
    records: &[BundledRecord],
    payload: &FileSeen,
    own: &LogVerifier,
    trusted: &Pins<'_>,
    depth: usize,
    report: &mut Verification,
) {
    let received: Vec<(u64, Provenance)> = records
        .iter()
        .filter(|bundled| {
            matches!(bundled.record, Some(CustodyRecord { event: CustodyEvent::ReceivedFrom { .. }, .. }))
        })
        .map(|bundled| {
            let mut opened = text(files, &layout::opening_path(bundled.index))
                .and_then(|bytes| Openings::from_canonical(bytes).ok())
                .and_then(|openings| openings.text("provenance").map(str::to_owned))
                .and_then(|provenance| {
                    custodia_core::from_canonical_slice::<BTreeMap<String, String>>(provenance.as_bytes()).ok()
                })
                .unwrap_or_default();
            let provenance = Provenance {
                manifest_sha256: opened.remove(PROVIDER_MANIFEST_FIELD),
                artefact: opened.remove("provider_artefact"),
                checkpoint: opened.remove("provider_checkpoint"),
            };
            (bundled.index, provenance)
        })
        .collect();
    if chain.is_empty() && received.is_empty() {
        return;
    }
    let dir = layout::PROVENANCE_DIR;
    match (received.as_slice(), chain.is_empty()) {
        (_, _) if depth >= MAX_PROVIDER_DEPTH => {
            report.fail(Part::ProviderChain, format!("provider's chains nest deeper than {MAX_PROVIDER_DEPTH}"));
            return;
        }
        ([], false) => report.fail(
            Part::ProviderChain,
            format!("the bag holds a provider's chain in {dir}, but no received_from record says where it came from"),
        ),
        ([(index, _)], true) => report.fail(
            Part::ProviderChain,
            format!("record {index} says the artefact was received from a partner, but {dir} holds no chain"),
        ),
        ([_], false) => {}
        (many, _) => report.fail(
            Part::ProviderChain,
            format!("the bag holds {} received_from records; an artefact is received once", many.len()),
        ),
    }
    if chain.is_empty() {
        return;
    }
    let manifest_bytes = chain.get(layout::MANIFEST).and_then(|seen| seen.bytes.as_deref()).unwrap_or_default();
    let manifest = custodia_core::from_canonical_slice::<Manifest>(manifest_bytes).ok();
    let chain_key = own_key(&chain);
    if let [(index, provenance)] = received.as_slice() {
        let digest = Sha256::of(manifest_bytes).to_hex();
        let checkpoint = checkpoint_head(text(&chain, layout::CHECKPOINT).unwrap_or_default());
        let artefact = manifest.as_ref().map(|manifest| manifest.artefact.to_string());
        let commits = provenance.manifest_sha256.as_deref() == Some(digest.as_str())
            && provenance.artefact.is_some()
            && provenance.artefact == artefact
            && provenance.checkpoint.as_deref() == Some(checkpoint.as_str());
        report.check(
            Part::ProviderChain,
            commits,
            format!(
                "record {index} (received_from) commits to the provider's chain in {dir}: its manifest, artefact and \
                 checkpoint"
            ),
            format!(
                "record {index} (received_from) commits to another provider's chain than the one in {dir} (its \
                 manifest, artefact or checkpoint differ)"
            ),
        );
    }
    if chain_key.as_ref().is_some_and(|key| key.to_string() == own.to_string()) {
        report.fail(
            Part::ProviderChain,
            format!("the chain in {dir} is signed by this bag's own key: a gateway is not its own provider"),
        );
    }
    // The provider's payload is this bag's payload: its path is the one the provider's manifest names.
    if let Some(manifest) = &manifest {
        chain.insert(layout::payload_path(&manifest.artefact), payload.clone());
    }
    let pins = Pins { keys: trusted.keys, policy: None, time: None };
    let checked = verify_artefact_bag(chain, &pins, depth + 1);
    report.records += checked.records;
    report.unconfirmed += checked.unconfirmed;
    report.checks.extend(
        checked.checks.into_iter().map(|check| Check { detail: format!("{PROVIDER_CHAIN}{}", check.detail), ..check }),
    );
}

/// The files witnessing reads.
fn witness_files(files: &BTreeMap<String, FileSeen>) -> crate::witnesses::WitnessFiles<'_> {
    crate::witnesses::WitnessFiles {
        policy: text(files, layout::WITNESS_POLICY),
        checkpoint: text(files, layout::CHECKPOINT).unwrap_or_default(),
        older: text(files, layout::WITNESSED_CHECKPOINT),
        consistency: text(files, layout::WITNESS_CONSISTENCY),
    }
}

/// The bundle's key file as the certificate quotes it.
fn vkey_text(files: &BTreeMap<String, FileSeen>) -> String {
    text(files, layout::VKEY).map(|bytes| String::from_utf8_lossy(bytes).trim().to_owned()).unwrap_or_default()
}

/// The certificate says exactly what the checked files make of it, or the first line that differs is named, both
/// versions [`echoed`]: a forged line is cut like a name, however long.
fn check_report(files: &BTreeMap<String, FileSeen>, expected: &str, report: &mut Verification) {
    let Some(found) = text(files, layout::REPORT) else {
        report.fail(Part::Report, format!("{} is missing", layout::REPORT));
        return;
    };
    if found == expected.as_bytes() {
        report.pass(Part::Report, format!("{} says what the checked files say", layout::REPORT));
        return;
    }
    let found = String::from_utf8_lossy(found);
    let found_lines: Vec<&str> = found.split('\n').collect();
    let expected_lines: Vec<&str> = expected.split('\n').collect();
    let differs = (0..found_lines.len().max(expected_lines.len()))
        .find(|&at| found_lines.get(at) != expected_lines.get(at))
        .unwrap_or(0);
    report.fail(
        Part::Report,
        format!(
            "{} does not say what the checked files say: its line {} reads \"{}\" where they make \"{}\"",
            layout::REPORT,
            differs + 1,
            echoed(found_lines.get(differs).unwrap_or(&"")),
            echoed(expected_lines.get(differs).unwrap_or(&""))
        ),
    );
}

/// Every record's openings (`data/custody/<index>.opening.json`) open exactly its commitments, and the case they
/// open is `case`: the signed manifest's in an artefact bundle, the case listing's in a case bundle, each with the
/// words that say whose it is.
fn check_openings(
    files: &BTreeMap<String, FileSeen>,
    records: &[BundledRecord],
    case: Option<(&CaseId, &str)>,
    report: &mut Verification,
) {
    let before = report.checks.iter().filter(|c| !c.passed).count();
    for bundled in records {
        let Some(record) = &bundled.record else { continue };
        let path = layout::opening_path(bundled.index);
        let Some(bytes) = text(files, &path) else {
            report.fail(Part::Openings, format!("record {}: {path} is missing", bundled.index));
            continue;
        };
        let openings = match Openings::from_canonical(bytes) {
            Ok(openings) => openings,
            Err(err) => {
                report.fail(Part::Openings, format!("record {}: {path}: {err}", bundled.index));
                continue;
            }
        };
        if let Err(err) = record.check_openings(&openings) {
            report.fail(Part::Openings, format!("record {}: {err}", bundled.index));
            continue;
        }
        if let Some((case, whose)) = case
            && openings.text("case") != Some(case.as_str())
        {
            report.fail(Part::Openings, format!("record {}: its case is not {case}, {whose}", bundled.index));
        }
    }
    if report.checks.iter().filter(|c| !c.passed).count() == before {
        report.pass(
            Part::Openings,
            format!(
                "every record's openings match its commitments, for case {}",
                case.map_or("?", |(case, _)| case.as_str())
            ),
        );
    }
}

/// The bag: bagit.txt, every file listed with its right checksum, nothing unlisted, and tag files intact.
fn check_bag(files: &BTreeMap<String, FileSeen>, report: &mut Verification) {
    let declaration = text(files, "bagit.txt").unwrap_or_default();
    report.check(
        Part::Bag,
        declaration.starts_with(b"BagIt-Version: 1.0\n"),
        "bagit.txt declares BagIt 1.0",
        "bagit.txt is missing or not BagIt 1.0",
    );
    for (manifest, covers_data) in [("manifest-sha256.txt", true), ("tagmanifest-sha256.txt", false)] {
        let Some(listed) = text(files, manifest).and_then(|b| std::str::from_utf8(b).ok()) else {
            report.fail(Part::Bag, format!("{manifest} is missing"));
            continue;
        };
        let listed = match checksum_lines(listed) {
            Ok(listed) => listed,
            Err(err) => {
                report.fail(Part::Bag, format!("{manifest}: {err}"));
                continue;
            }
        };
        let mut bad = Vec::new();
        for (path, digest) in &listed {
            match files.get(path) {
                Some(seen) if seen.sha256 == *digest => {}
                Some(_) => bad.push(format!("{} does not match its checksum in {manifest}", echoed(path))),
                None => bad.push(format!("{} is listed in {manifest} but missing", echoed(path))),
            }
        }
        if covers_data {
            for path in files.keys().filter(|p| p.starts_with("data/") && !listed.contains_key(*p)) {
                bad.push(format!("{} is not listed in {manifest}", echoed(path)));
            }
        }
        if bad.is_empty() {
            report.pass(Part::Bag, format!("{manifest}: all {} files match", listed.len()));
        }
        for problem in bad {
            report.fail(Part::Bag, problem);
        }
    }
}

/// A custody record read from the bundle and checked against the log.
struct BundledRecord {
    index: u64,
    record: Option<CustodyRecord>,
}

fn check_records(
    files: &BTreeMap<String, FileSeen>,
    checkpoint_bytes: &[u8],
    key: &LogVerifier,
    checkpoint_ok: bool,
    report: &mut Verification,
) -> Vec<BundledRecord> {
    let mut records = Vec::new();
    for (path, seen) in files.range(layout::CUSTODY_DIR.to_owned()..) {
        if path.ends_with(".opening.json") {
            continue;
        }
        let Some(stem) = path.strip_prefix(layout::CUSTODY_DIR).and_then(|p| p.strip_suffix(".json")) else { continue };
        let Ok(index) = stem.parse::<u64>() else {
            report.fail(Part::CustodyHistory, format!("{path} is not named by a ledger index"));
            continue;
        };
        let entry = seen.bytes.as_deref().unwrap_or_default();
        let record = CustodyRecord::from_entry(entry).ok();
        if record.is_none() {
            report.fail(Part::CustodyHistory, format!("{path} is not a canonical custody record"));
        }
        let (_, proof_path) = layout::record_paths(index);
        let checkpoint = if checkpoint_ok { checkpoint_bytes } else { &[] };
        match included(entry, text(files, &proof_path), Some(index), checkpoint, key) {
            Ok(_) => report.pass(Part::InclusionProof, format!("record {index} is entry {index} of the signed log")),
            Err(why) if why == "is missing" => {
                report.fail(Part::InclusionProof, format!("record {index}: {proof_path} {why}"));
            }
            Err(why) if why.starts_with("proves") || why.starts_with("is against") => {
                report.fail(Part::InclusionProof, format!("{proof_path} {why}"));
            }
            Err(why) => report.fail(Part::InclusionProof, format!("record {index}: {why}")),
        }
        records.push(BundledRecord { index, record });
    }
    records
}

/// Whether `proof` (a c2sp.org/tlog-proof@v1 file) proves `entry` is in the log signed by `key`: the entry
/// `index` when one is expected, against exactly `checkpoint` when it is not empty. The entry's index, or why not.
fn included(
    entry: &[u8],
    proof: Option<&[u8]>,
    index: Option<u64>,
    checkpoint: &[u8],
    key: &LogVerifier,
) -> Result<u64, String> {
    let proof = TlogProof::parse(proof.ok_or("is missing")?).map_err(|err| err.to_string())?;
    if let Some(index) = index
        && proof.index != index
    {
        return Err(format!("proves entry {}, not {index}", proof.index));
    }
    if !checkpoint.is_empty() && proof.checkpoint_note != checkpoint {
        return Err(format!("is against a different checkpoint than {}", layout::CHECKPOINT));
    }
    proof.verify(entry, std::slice::from_ref(key)).map_err(|err| err.to_string())?;
    Ok(proof.index)
}

/// The history is complete and in order: it starts with the registration that the signed manifest describes,
/// each record names the previous one (`prior`), all are about this artefact, and the last is this export.
fn check_history(
    records: &[BundledRecord],
    manifest: Option<&Manifest>,
    manifest_bytes: &[u8],
    signature: Option<ManifestSignature>,
    report: &mut Verification,
) {
    let before = report.checks.iter().filter(|c| !c.passed).count();
    let Some(manifest) = manifest else {
        report.fail(Part::CustodyHistory, "no manifest to tie the history to");
        return;
    };
    let Some((first, _)) = records.split_first() else {
        report.fail(Part::CustodyHistory, "the bundle holds no custody records");
        return;
    };
    match &first.record {
        Some(CustodyRecord {
            event: CustodyEvent::ArtefactRegistered { artefact, manifest_sha256, manifest_signature },
            prior: None,
            ..
        }) if *artefact == manifest.artefact
            && *manifest_sha256 == Sha256::of(manifest_bytes)
            && Some(*manifest_signature) == signature => {}
        _ => report
            .fail(Part::CustodyHistory, format!("record {} is not the registration of this manifest", first.index)),
    }
    for pair in records.windows(2) {
        let (previous, record) = (&pair[0], &pair[1]);
        let Some(r) = &record.record else { continue };
        if r.prior != Some(previous.index) {
            let said = r.prior.map_or("none".to_owned(), |p| p.to_string());
            report.fail(
                Part::CustodyHistory,
                format!("record {} says the previous record is {said}, but the bundle has {}: records are missing or out of order", record.index, previous.index),
            );
        }
    }
    for bundled in records {
        if let Some(r) = &bundled.record
            && r.event.artefact() != Some(&manifest.artefact)
        {
            report.fail(Part::CustodyHistory, format!("record {} is about another artefact", bundled.index));
        }
    }
    let last = records.last().and_then(|r| r.record.as_ref());
    // An export, or a transfer to a partner gateway (which sends the bundle it makes): the bundle's own leaving.
    let leaving = |event: &CustodyEvent| {
        matches!(event, CustodyEvent::ArtefactExported { .. } | CustodyEvent::ArtefactTransferred { .. })
    };
    if !last.is_some_and(|r| leaving(&r.event)) {
        report.fail(Part::CustodyHistory, "the last record is not this bundle's export: records after it are missing");
    }
    if report.checks.iter().filter(|c| !c.passed).count() == before {
        report.pass(
            Part::CustodyHistory,
            format!("{} records, complete and in order, from registration to this export", records.len()),
        );
    }
}

#[cfg(test)]
mod tests {
    use custodia_core::acts_on_display;

    use super::*;
    use crate::printable::MAX_ECHOED_NAME;
    use crate::verification::Verdict;

    fn header(path: &str, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_path(path).unwrap();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(0o644);
        header.set_cksum();
        header
    }

    /// A bag of `strays` empty files with long names, none of which a bundle holds: each gets a check, its name in
    /// it. (the tar, what its names cost the budget)
    fn bag_of_strays(strays: usize) -> (Vec<u8>, u64) {
        let mut tar = header("bag/", tar::EntryType::Directory, 0).as_bytes().to_vec();
        let mut names = 0;
        for n in 0..strays {
            let relative = format!("data/{n:03}-{}", "n".repeat(90));
            tar.extend_from_slice(header(&format!("bag/{relative}"), tar::EntryType::Regular, 0).as_bytes());
            names += relative.len() as u64 + PER_FILE_OVERHEAD;
        }
        tar.extend_from_slice(&[0; 1024]);
        (tar, names)
    }

    #[test]
    fn the_checks_of_the_bag_itself_count_toward_the_budget_to_the_byte() {
        let (tar, names) = bag_of_strays(300);
        let verification = verify(tar.as_slice(), &[]).unwrap();
        let strays = verification.checks.iter().filter(|check| check.detail.contains("does not belong")).count();
        assert_eq!(strays, 300, "{verification}");
        let checks = checks_cost(&verification.checks);
        assert_eq!(verification.peak_kept_bytes, names + checks, "every name and every check's detail, to the byte");

        let just = Limits { files: MAX_FILES, kept_bytes: names + checks };
        assert!(verify_within(tar.as_slice(), &[], just).is_ok());
        let short = Limits { kept_bytes: names + checks - 1, ..just };
        let err = verify_within(tar.as_slice(), &[], short).unwrap_err();
        assert!(matches!(err, VerifyError::TooLarge(_)), "{err}");
    }

    #[test]
    fn an_oversized_extended_header_is_refused_before_it_is_read() {
        // The header says 100 MiB follow, and none do: a reader that held it whole would first have to read them.
        let mut tar = header("bag/PaxHeaders/x", tar::EntryType::XHeader, 100 << 20).as_bytes().to_vec();
        tar.extend_from_slice(&[0; 1024]);
        let err = verify(tar.as_slice(), &[]).unwrap_err();
        assert!(err.to_string().contains("an extended header of 104857600 bytes"), "{err}");
    }

    #[test]
    fn a_pax_path_names_the_entry_and_a_pax_size_must_agree_with_its_header() {
        let record = b"41 path=bag/data/a-long-planted-name.txt\n";
        assert_eq!(record.len(), 41);
        let entry = |size_record: &[u8], size: u64| {
            let mut pax = record.to_vec();
            pax.extend_from_slice(size_record);
            let mut tar = header("bag/PaxHeaders/x", tar::EntryType::XHeader, pax.len() as u64).as_bytes().to_vec();
            tar.extend_from_slice(&pax);
            tar.resize(tar.len().next_multiple_of(512), 0);
            tar.extend_from_slice(header("bag/short", tar::EntryType::Regular, size).as_bytes());
            tar.extend_from_slice(&vec![b'x'; size as usize]);
            tar.resize(tar.len().next_multiple_of(512), 0);
            tar.extend_from_slice(&[0; 1024]);
            tar
        };
        let mut budget = Budget::new(Limits::default());
        let read = read_bundle(&mut entry(b"", 3).as_slice(), &Pins::default(), false, None, &mut budget).unwrap();
        assert_eq!(read.files.keys().collect::<Vec<_>>(), ["data/a-long-planted-name.txt"]);
        assert_eq!(budget.files, 2, "the extended header counts as an entry");
        assert!(budget.kept >= "data/a-long-planted-name.txt".len() as u64 + 3, "the name is counted");
        let mut budget = Budget::new(Limits::default());
        let Err(err) =
            read_bundle(&mut entry(b"12 size=500\n", 3).as_slice(), &Pins::default(), false, None, &mut budget)
        else {
            panic!("a PAX size that disagrees with its header was accepted");
        };
        assert!(err.to_string().contains("a PAX header gives a size of 500 bytes"), "{err}");
    }

    #[test]
    fn a_payload_hashed_by_the_caller_stands_for_its_bytes_and_nothing_else_does() {
        let mut tar = file_entry("bag/bagit.txt", b"BagIt-Version: 1.0\n");
        tar.extend_from_slice(&file_entry("bag/data/payload/art-1", b"the payload"));
        tar.extend_from_slice(&[0; 1024]);
        let known = Sha256::of(b"what the caller hashed");
        let mut budget = Budget::new(Limits::default());
        let read = read_bundle(&mut tar.as_slice(), &Pins::default(), false, Some((known, 11)), &mut budget).unwrap();
        let payload = &read.files["data/payload/art-1"];
        assert_eq!((payload.sha256, payload.size), (known, 11));
        let mut budget = Budget::new(Limits::default());
        let Err(err) = read_bundle(&mut tar.as_slice(), &Pins::default(), false, Some((known, 12)), &mut budget) else {
            panic!("a payload entry of another size than the bytes hashed was read");
        };
        assert!(err.to_string().contains("its payload entry has 11 bytes, not the 12 hashed"), "{err}");
        assert_eq!(read.files["bagit.txt"].sha256, Sha256::of(b"BagIt-Version: 1.0\n"), "other files are hashed");
        let mut budget = Budget::new(Limits::default());
        let read = read_bundle(&mut tar.as_slice(), &Pins::default(), false, None, &mut budget).unwrap();
        assert_eq!(read.files["data/payload/art-1"].sha256, Sha256::of(b"the payload"));
    }

    /// A raw tar header as a forger writes it by hand (any type, any magic, any prefix), checksummed.
    fn raw_header(name: &[u8], size: u64, kind: u8, prefix: &[u8], magic: &[u8; 8]) -> Vec<u8> {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name);
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = kind;
        h[257..265].copy_from_slice(magic);
        h[345..345 + prefix.len()].copy_from_slice(prefix);
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h.to_vec()
    }

    const USTAR: &[u8; 8] = b"ustar\x0000";
    const GNU: &[u8; 8] = b"ustar  \0";

    /// A regular file entry: header, bytes, zero padding.
    fn file_entry(name: &str, bytes: &[u8]) -> Vec<u8> {
        let mut out = raw_header(name.as_bytes(), bytes.len() as u64, b'0', b"", USTAR);
        out.extend_from_slice(bytes);
        out.resize(out.len().next_multiple_of(512), 0);
        out
    }

    /// A PAX extended header ('x') of `records`.
    fn pax_entry(records: &[(&str, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (key, value) in records {
            let rest = 3 + key.len() + value.len();
            let mut len = rest + 1;
            while len.to_string().len() + rest != len {
                len = len.to_string().len() + rest;
            }
            body.extend_from_slice(format!("{len} {key}=").as_bytes());
            body.extend_from_slice(value);
            body.push(b'\n');
        }
        let mut out = raw_header(b"bag/PaxHeaders/x", body.len() as u64, b'x', b"", USTAR);
        out.extend_from_slice(&body);
        out.resize(out.len().next_multiple_of(512), 0);
        out
    }

    /// Headers that tar tools frame or name otherwise than a lax reader would (a reviewer's forgeries: both
    /// verifiers said VALID while `tar -xf` extracted other evidence): refused, each.
    #[test]
    fn headers_that_tar_tools_read_otherwise_are_refused() {
        let info = file_entry("bag/bagit.txt", b"BagIt-Version: 1.0\n");
        let end = [0u8; 1024];
        let refused = |parts: &[&[u8]], why: &str| {
            let err =
                verify(parts.concat().as_slice(), &[]).err().unwrap_or_else(|| panic!("accepted; expected {why}"));
            assert!(err.to_string().contains(why), "{err}; expected {why}");
        };
        let pax = |body: &[u8]| {
            let mut out = raw_header(b"bag/PaxHeaders/x", body.len() as u64, b'x', b"", USTAR);
            out.extend_from_slice(body);
            out.resize(out.len().next_multiple_of(512), 0);
            out
        };
        let records = "are not each `<length> <key>=<value>`";
        // A signed length (GNU tar stops there and keeps the records before), a leading zero, a length that is not
        // the record's, a blank line after the records.
        refused(&[&pax(b"+19 path=bag/data/x\n"), &info, &end], records);
        refused(&[&pax(b"019 path=bag/data/x\n"), &info, &end], records);
        refused(&[&pax(b"20 path=bag/data/x\n"), &info, &end], records);
        refused(&[&pax(b"19 path=bag/data/x\n\n"), &info, &end], records);
        refused(&[&pax(b"19 path=bag/data/x\n19 path=bag/data/y\n"), &info, &end], "gives path twice");
        refused(&[&pax(b"21 path=bag/data/x\0y\n"), &info, &end], "a NUL in a path");
        refused(&[&pax(b"12 size=+54\n"), &info, &end], "a PAX size is not a number");
        // A size GNU tar reads as base-64; a POSIX magic with another version (GNU tar reads its name prefix).
        let mut plus = info.clone();
        plus[124..136].copy_from_slice(b"+66\0\0\0\0\0\0\0\0\0");
        let sum: u32 =
            plus[..512].iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u32::from(b) }).sum();
        plus[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        refused(&[&plus, &end], "not plain octal");
        refused(
            &[&raw_header(b"bag/x", 0, b'0', b"moved", b"ustar\0\0\0"), &end],
            "neither the POSIX ustar nor the GNU",
        );
        // A directory with a file's path, after it or before it.
        let dir = raw_header(b"bag/bagit.txt/", 0, b'5', b"", USTAR);
        refused(&[&info, &dir, &end], "is both a directory and a file");
        refused(&[&dir, &info, &end], "is both a directory and a file");
        // Well-formed records still read.
        assert!(verify([pax(b"22 path=bag/bagit.txt\n"), info, end.to_vec()].concat().as_slice(), &[]).is_ok());
    }

    #[test]
    fn only_regular_files_and_empty_directories_inside_the_bag_are_read() {
        let info = file_entry("bag/bagit.txt", b"BagIt-Version: 1.0\n");
        let end = [0u8; 1024];
        let read = |parts: &[&[u8]]| verify(parts.concat().as_slice(), &[]);
        // Directories with no data, the bag's own among them, are fine.
        let dir = |name: &str| raw_header(name.as_bytes(), 0, b'5', b"", USTAR);
        assert!(read(&[&dir("bag/"), &dir("bag/data/"), &info, &end]).is_ok());
        assert!(read(&[&dir("bag/"), &info, &raw_header(b"bag/data/", 0, b'5', b"", GNU), &end]).is_ok());
        let refused = |parts: &[&[u8]], why: &str| {
            let err = read(parts).err().unwrap_or_else(|| panic!("accepted; expected {why}"));
            assert!(err.to_string().contains(why), "{err}; expected {why}");
        };
        // A directory whose data is a header for a forged file: GNU tar and Python extract it, tar-rs skips it.
        let forged = file_entry("bag/bagit.txt", b"FORGED");
        let mut hiding = raw_header(b"bag/data/", forged.len() as u64, b'5', b"", USTAR);
        hiding.extend_from_slice(&forged);
        refused(&[&info, &hiding, &end], "a directory entry with 1024 bytes of data");
        refused(&[&dir("../../escaped/"), &info, &end], "hostile path");
        refused(&[&dir("/abs/"), &info, &end], "hostile path");
        refused(&[&dir("bag/../../x/"), &info, &end], "hostile path");
        refused(&[&info, &dir("other/"), &end], "outside the bag directory");
        refused(&[&info, &raw_header(b"bag/data/link", 0, b'2', b"", USTAR), &end], "neither a regular file");
        refused(&[&info, &raw_header(b"bag/g", 0, b'g', b"", USTAR), &end], "neither a regular file");
        // PAX: only path and size, one header, and only before a regular file.
        let payload = file_entry("bag/data/payload/x", b"real");
        let sparse = pax_entry(&[("GNU.sparse.major", b"0"), ("GNU.sparse.realsize", b"1004")]);
        refused(&[&info, &sparse, &payload, &end], "a PAX header gives \"GNU.sparse.major\"");
        refused(&[&info, &pax_entry(&[("linkpath", b"/etc/passwd")]), &payload, &end], "only path and size");
        let path = pax_entry(&[("path", b"bag/data/payload/y")]);
        assert!(read(&[&info, &path, &payload, &end]).is_ok());
        refused(&[&info, &path, &path, &payload, &end], "two extended headers in a row");
        refused(&[&info, &path, &dir("bag/data/"), &end], "an extended header not followed by a regular file");
        refused(&[&info, &path, &end], "an extended header not followed by a regular file");
        // GNU magic with a prefix: tar-rs ignores the prefix, Python applies it.
        let mut gnu = raw_header(b"bag/data/payload/x", 4, b'0', b"zzz", GNU);
        gnu.extend_from_slice(b"real");
        gnu.resize(1024, 0);
        refused(&[&info, &gnu, &end], "a GNU tar header with a ustar name prefix");
        // Non-zero bytes in padding, of a file or of an extended header.
        let mut junk = file_entry("bag/data/payload/x", b"real");
        junk[512 + 10] = b'X';
        refused(&[&info, &junk, &end], "non-zero bytes in a file's padding");
        let mut junk = path.clone();
        *junk.last_mut().unwrap() = b'X';
        refused(&[&info, &junk, &payload, &end], "non-zero bytes in a file's padding");
        // A ustar prefix is part of the name, and fine.
        let mut split = raw_header(b"payload/x", 4, b'0', b"bag/data", USTAR);
        split.extend_from_slice(b"real");
        split.resize(1024, 0);
        assert!(read(&[&info, &split, &end]).is_ok());
    }

    /// A case bundle as the reviewer forged it: `nested` artefact bundles, each in a directory whose name has
    /// `name_len` bytes (given by PAX paths), each holding `planted` files that fail the checks.
    fn case_of_long_names(nested: usize, name_len: usize, planted: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for k in 0..nested {
            for i in 0..planted {
                let name = format!("case/data/bundles/{k:06}{}/data/x{i}", "n".repeat(name_len));
                out.extend_from_slice(&pax_entry(&[("path", name.as_bytes())]));
                out.extend_from_slice(&file_entry("placeholder", b"x"));
            }
        }
        out.extend_from_slice(&[0; 1024]);
        out
    }

    #[test]
    fn a_long_nested_bundle_name_is_echoed_cut_and_every_byte_kept_is_counted() {
        let limits = Limits { files: MAX_FILES, kept_bytes: 4 << 20 };
        // 60 nested bundles with 10,000-byte names, 20 failures each: before, each kept check carried the whole
        // name, uncounted (some 12 MB here); now a cut name, counted (the names of the files, which the case bag's
        // manifest is checked against, are counted too).
        let report = verify_within(case_of_long_names(60, 10_000, 2).as_slice(), &[], limits).unwrap();
        assert_eq!(report.verdict(), Verdict::Invalid);
        let kept: u64 = report.checks.iter().map(|c| c.detail.len() as u64).sum();
        assert!(kept <= report.peak_kept_bytes, "{kept} bytes of details, {} counted", report.peak_kept_bytes);
        assert!(report.peak_kept_bytes <= limits.kept_bytes, "{}", report.peak_kept_bytes);
        assert!(report.checks.iter().all(|c| c.detail.len() < 1_000), "a detail echoes a whole long name");
        let cut = report.checks.iter().find(|c| c.detail.contains("… (SHA-256 ")).expect("a cut name");
        assert!(cut.detail.starts_with("000000nnn"), "{}", cut.detail);
        // More of them than the budget holds: refused as too large, not held.
        let err = verify_within(case_of_long_names(300, 10_000, 2).as_slice(), &[], limits).unwrap_err();
        assert!(matches!(err, VerifyError::TooLarge(_)), "{err}");
    }

    /// A tar of `files` (path, bytes), each below `bag/`, ended by the end-of-archive marker.
    fn tar_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, bytes) in files {
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, path, bytes.as_slice()).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn nothing_but_zeros_may_follow_the_end_of_archive_marker() {
        let good = tar_of(&[("bag/bagit.txt".into(), b"BagIt-Version: 1.0\n".to_vec())]);
        assert!(verify(good.as_slice(), &[]).is_ok());
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 9216]);
        assert!(verify(padded.as_slice(), &[]).is_ok(), "zero padding to a tar record is fine");

        // A file hidden past the marker, where `tar -i` would find it.
        let hidden = tar_of(&[("bag/data/hidden.txt".into(), b"hidden".to_vec())]);
        let mut smuggled = good.clone();
        smuggled.extend_from_slice(&hidden);
        let err = verify(smuggled.as_slice(), &[]).unwrap_err();
        assert!(err.to_string().contains("data after its end-of-archive marker"), "{err}");
        let mut one_byte = padded.clone();
        *one_byte.last_mut().unwrap() = 1;
        assert!(verify(one_byte.as_slice(), &[]).unwrap_err().to_string().contains("after its end-of-archive"));

        // Without the marker, or half of it: cut short.
        for cut in [512, 1024] {
            let err = verify(&good[..good.len() - cut], &[]).unwrap_err();
            assert!(err.to_string().contains("without its end-of-archive marker"), "{cut}: {err}");
        }
    }

    #[test]
    fn a_case_bags_artefact_bundles_each_lie_whole_in_a_directory_of_their_own() {
        let file = |path: &str| (path.to_owned(), b"x".to_vec());
        // The files of one artefact bundle come together: one that comes back after another's is refused.
        let apart = tar_of(&[
            file("case/data/bundles/a-1/bagit.txt"),
            file("case/data/bundles/a-2/bagit.txt"),
            file("case/data/bundles/a-1/data/manifest.json"),
        ]);
        let err = verify(apart.as_slice(), &[]).unwrap_err();
        assert!(err.to_string().contains("the files of the artefact bundle a-1 are not together"), "{err}");
        // A bundle as a file (as case bundles were once written) is no artefact bundle's directory.
        let report = verify(tar_of(&[file("case/data/bundles/a-1.tar")]).as_slice(), &[]).unwrap();
        assert!(
            report.checks.iter().any(|c| !c.passed
                && c.part == Part::CaseContents
                && c.detail.contains("data/bundles/a-1.tar is not an artefact bundle's directory")),
            "{report}"
        );
        // An empty directory among the bundles holds no bundle.
        let empty = [
            raw_header(b"case/data/bundles/zzz/", 0, b'5', b"", USTAR),
            file_entry("case/bagit.txt", b"x"),
            vec![0; 1024],
        ]
        .concat();
        let report = verify(empty.as_slice(), &[]).unwrap();
        assert!(
            report.checks.iter().any(|c| !c.passed && c.detail.contains("data/bundles/zzz/ holds no file")),
            "{report}"
        );
        // Each bundle is checked as a bag of its own, and its checks name it.
        let report = verify(tar_of(&[file("case/data/bundles/a-1/data/x")]).as_slice(), &[]).unwrap();
        assert!(report.checks.iter().any(|c| !c.passed && c.detail.starts_with("a-1: ")), "{report}");
    }

    fn seen(bytes: &[u8]) -> FileSeen {
        FileSeen { sha256: Sha256::of(bytes), size: bytes.len() as u64, bytes: Some(bytes.to_vec()) }
    }

    /// The failed checks' details after checking `info` as a case bag's bag-info.txt beside 10 bytes of data.
    fn bag_info_failures(info: &str) -> Vec<String> {
        let files =
            BTreeMap::from([("bag-info.txt".to_owned(), seen(info.as_bytes())), ("data/a".to_owned(), seen(&[7; 10]))]);
        let expected = [("Custodia-Scope", "hearing h-1".to_owned())];
        let mut report = Verification::default();
        check_bag_info(&files, "a case bundle", &expected, &mut report);
        report.checks.into_iter().filter(|c| !c.passed).map(|c| c.detail).collect()
    }

    #[test]
    fn a_forged_certificate_line_is_quoted_cut_like_a_name() {
        let expected = "CERTIFICATE\nArtefact: art-1\n";
        let forged = format!("CERTIFICATE\nArtefact: {}\u{1b}[2K\n", "x".repeat(1 << 20));
        let files = BTreeMap::from([(layout::REPORT.to_owned(), seen(forged.as_bytes()))]);
        let mut report = Verification::default();
        check_report(&files, expected, &mut report);
        let [check] = report.checks.as_slice() else { panic!("{:?}", report.checks) };
        assert!(!check.passed);
        assert!(check.detail.len() < 2 * MAX_ECHOED_NAME + 200, "a detail of {} bytes", check.detail.len());
        assert!(check.detail.contains("its line 2 reads \"Artefact: xxx") && check.detail.contains("… (SHA-256 "));
        assert!(check.detail.ends_with("where they make \"Artefact: art-1\""), "{}", check.detail);
        assert!(!check.detail.chars().any(acts_on_display), "{}", check.detail);
    }

    #[test]
    fn bag_info_must_say_what_the_bag_holds_once_and_nothing_else() {
        let good = "Source-Organization: Custodia gateway x\nBagging-Date: 2026-12-03\nPayload-Oxum: 10.1\n\
                    External-Identifier: case-7\nExternal-Description: a case\n  going on\nCustodia-Scope: hearing h-1\n\
                    Bag-Software-Agent: custodia 0.1.0\n";
        assert_eq!(bag_info_failures(good), Vec::<String>::new());
        let failures = bag_info_failures(&good.replace("10.1", "12.1"));
        assert_eq!(failures, ["bag-info.txt gives Payload-Oxum 12.1, but the payload is 10.1 (bytes.files)"]);
        let failures = bag_info_failures(&good.replace("hearing h-1", "case"));
        assert_eq!(
            failures,
            [r#"bag-info.txt gives Custodia-Scope "case" where the checked files make "hearing h-1""#]
        );
        let failures = bag_info_failures(&format!("{good}Payload-Oxum: 10.1\nContact-Name: A. Y.\n"));
        assert_eq!(
            failures,
            [
                "bag-info.txt gives Payload-Oxum more than once",
                "bag-info.txt gives Contact-Name, which the bag-info.txt of a case bundle does not",
            ]
        );
        for (date, bad) in [("1999-99-99", true), ("2026-02-30", true), ("2024-02-29", false), ("2026-1-03", true)] {
            let failures = bag_info_failures(&good.replace("2026-12-03", date));
            assert_eq!(!failures.is_empty(), bad, "{date}: {failures:?}");
        }
        for agent in ["custodia evil", "custodia 0.1.0 forged", "custodia", "custodia 0.1"] {
            let failures = bag_info_failures(&good.replace("custodia 0.1.0", agent));
            assert!(failures.iter().any(|f| f.contains("Bag-Software-Agent")), "{agent}: {failures:?}");
        }
        let failures = bag_info_failures(&good.replace('\n', "\r\n"));
        assert_eq!(failures, ["bag-info.txt has a carriage return; the gateway writes its lines with LF only"]);
        let failures = bag_info_failures(&good.replace("Bagging-Date: 2026-12-03\n", "no colon here\n"));
        assert_eq!(failures, ["bag-info.txt: line 2 is not `Label: value`", "bag-info.txt lacks Bagging-Date"]);
    }

    /// A case bundle of `artefacts` artefact bundles that are not bundles at all: each holds `planted` files with
    /// names of `name_len` bytes, so each fails with many checks.
    fn case_of_junk(artefacts: usize, planted: usize, name_len: usize) -> Vec<u8> {
        let files: Vec<(String, Vec<u8>)> = (0..artefacts)
            .flat_map(|a| {
                (0..planted).map(move |f| {
                    (format!("case/data/bundles/a-{a}/data/{f:06}{}", "n".repeat(name_len - 6)), Vec::new())
                })
            })
            .collect();
        tar_of(&files)
    }

    #[test]
    fn one_budget_holds_a_case_bundle_and_what_is_kept_of_each_artefact_bundle() {
        let limits = Limits { files: MAX_FILES, kept_bytes: 1 << 20 };
        // 20 artefact bundles of 100 planted files with 200-byte names: each holds about 35 KiB of names and makes
        // as much again of failed checks while it is checked, then keeps its summary and its files' names.
        let report = verify_within(case_of_junk(20, 100, 200).as_slice(), &[], limits).unwrap();
        assert!(report.peak_kept_bytes <= limits.kept_bytes, "{}", report.peak_kept_bytes);
        // Every entry of every artefact bundle is counted: 100 files and their GNU long names.
        assert_eq!(report.files_read, 20 * (2 * 100));
        for a in 0..20 {
            let prefix = format!("a-{a}: ");
            let kept: Vec<&Check> = report.checks.iter().filter(|c| c.detail.starts_with(&prefix)).collect();
            assert!(kept.len() <= NESTED_FAILURES_KEPT + 10 + 1, "{a}: {} checks kept", kept.len());
            assert!(kept.iter().any(|c| c.detail.ends_with("more failed checks, not kept")), "{a}");
        }
        let parts: BTreeSet<Part> = report.failed_parts().into_iter().collect();
        assert!(parts.contains(&Part::Bag) && parts.contains(&Part::PayloadHash), "{parts:?}");

        // What is kept of each is counted too, to the end of the read: 400 of them are more than one read holds,
        // although each alone is checked within it.
        let err = verify_within(case_of_junk(400, 100, 200).as_slice(), &[], limits).unwrap_err();
        assert!(matches!(err, VerifyError::TooLarge(_)), "{err}");
        // The exact budget: what the first read held at most is enough, and a byte less is not.
        let bundle = case_of_junk(20, 100, 200);
        let exact = Limits { files: MAX_FILES, kept_bytes: report.peak_kept_bytes };
        assert_eq!(verify_within(bundle.as_slice(), &[], exact).unwrap().peak_kept_bytes, report.peak_kept_bytes);
        let short = Limits { kept_bytes: report.peak_kept_bytes - 1, ..exact };
        assert!(matches!(verify_within(bundle.as_slice(), &[], short), Err(VerifyError::TooLarge(_))));
    }
}
