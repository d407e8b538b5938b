//! Laying out a bundle as tar bytes. Every file but the payload is small and built in memory; the payload is
//! streamed by the caller between [`BundleWriter::head`] and [`BundleWriter::tail`], so a multi-GB bundle never
//! sits in memory.

use std::io::{Read, Write};

use sha2::Digest as _;

use custodia_core::{ArtefactId, CaseId, Sha256};

use crate::layout::{self, BundleSource, CaseListing};
use crate::verification::VerifyError;

const BLOCK: u64 = 512;

/// Tar framing for one bag: every path below the bag's directory, with a fixed mtime so bundles are reproducible.
#[derive(Debug)]
struct Tar {
    dir: String,
    mtime: u64,
}

impl Tar {
    fn new(dir: String, bagged_at: &str) -> Self {
        let mtime = bagged_at.parse::<jiff::Timestamp>().map(|t| t.as_second().max(0) as u64).unwrap_or(0);
        Self { dir, mtime }
    }

    fn header(&self, path: &str, size: u64) -> Result<[u8; 512], VerifyError> {
        let mut header = tar::Header::new_ustar();
        header
            .set_path(format!("{}/{path}", self.dir))
            .map_err(|err| VerifyError::Malformed(format!("tar path {path}: {err}")))?;
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(self.mtime);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        Ok(*header.as_bytes())
    }

    /// Appends a whole small file: header, bytes, padding.
    fn file(&self, path: &str, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), VerifyError> {
        out.extend_from_slice(&self.header(path, bytes.len() as u64)?);
        out.extend_from_slice(bytes);
        out.resize(out.len().next_multiple_of(BLOCK as usize), 0);
        Ok(())
    }
}

/// The zero bytes that pad a file of `size` bytes to a whole tar block.
pub fn padding(size: u64) -> Vec<u8> {
    vec![0; (size.next_multiple_of(BLOCK) - size) as usize]
}

/// What bag-info.txt says about a bag.
struct BagInfo<'a> {
    origin: &'a str,
    identifier: &'a str,
    description: String,
    /// `Custodia-Scope`, in a case bag.
    scope: Option<String>,
    bagged_at: &'a str,
}

/// The BagIt tag files for payload files listed as (path, SHA-256 hex, size): bagit.txt, bag-info.txt,
/// manifest-sha256.txt and tagmanifest-sha256.txt.
fn tag_files(info: &BagInfo<'_>, listed: &[(String, String, u64)]) -> Vec<(String, Vec<u8>)> {
    let mut manifest_lines: Vec<String> = listed.iter().map(|(path, hex, _)| format!("{hex}  {path}\n")).collect();
    manifest_lines.sort_by(|a, b| a[66..].cmp(&b[66..]));
    let octets: u64 = listed.iter().map(|(_, _, size)| size).sum();
    let bag_date = info.bagged_at.get(..10).unwrap_or(info.bagged_at);
    let values = [
        Some(layout::source_organization(info.origin)),
        Some(bag_date.to_owned()),
        Some(format!("{octets}.{}", listed.len())),
        Some(info.identifier.to_owned()),
        Some(info.description.clone()),
        info.scope.clone(),
        Some(format!("custodia {}", env!("CARGO_PKG_VERSION"))),
    ];
    let bag_info: String = layout::BAG_INFO_LABELS
        .iter()
        .zip(values)
        .filter_map(|(label, value)| value.map(|value| format!("{label}: {value}\n")))
        .collect();
    let mut tags: Vec<(String, Vec<u8>)> = vec![
        ("bagit.txt".into(), b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n".to_vec()),
        ("bag-info.txt".into(), bag_info.into_bytes()),
        ("manifest-sha256.txt".into(), manifest_lines.concat().into_bytes()),
    ];
    let tag_manifest: String = tags.iter().map(|(path, bytes)| format!("{}  {path}\n", sha256_hex(bytes))).collect();
    tags.push(("tagmanifest-sha256.txt".into(), tag_manifest.into_bytes()));
    tags
}

/// A bundle ready to be written: alone, or unpacked inside a case bundle ([`Self::in_case`]).
#[derive(Debug)]
pub struct BundleWriter {
    tar: Tar,
    /// Tag files and every payload file except the artefact, in the order they are written.
    files: Vec<(String, Vec<u8>)>,
    payload_path: String,
    payload_size: u64,
    payload_sha256: custodia_core::Sha256,
    artefact: ArtefactId,
}

/// A file of a bag as its manifest lists it: path, SHA-256 (hex) and size.
pub type ListedFile = (String, String, u64);

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl BundleWriter {
    pub fn new(source: &BundleSource) -> Result<Self, VerifyError> {
        Self::in_dir(source, layout::bag_dir(&source.artefact))
    }

    /// The bundle as it lies unpacked in the case bundle of `case`: its bag's files under
    /// `data/bundles/<artefact>/` of the case bag, written by [`Self::head`], the payload, then
    /// [`Self::payload_padding`] (no end-of-archive marker: the case bag goes on).
    pub fn in_case(source: &BundleSource, case: &CaseId) -> Result<Self, VerifyError> {
        let dir = format!("{}/{}", layout::case_bag_dir(case), layout::inner_bundle_dir(&source.artefact));
        Self::in_dir(source, dir.trim_end_matches('/').to_owned())
    }

    fn in_dir(source: &BundleSource, dir: String) -> Result<Self, VerifyError> {
        let verifier: custodia_ledger::LogVerifier =
            source.vkey.parse().map_err(|err| VerifyError::Malformed(format!("gateway key: {err}")))?;
        let key = verifier.public_key().map_err(|err| VerifyError::Malformed(format!("gateway key: {err}")))?;
        let mut data: Vec<(String, Vec<u8>)> = vec![
            (layout::MANIFEST.into(), source.manifest.clone()),
            (layout::MANIFEST_SIGNATURE.into(), source.manifest_signature.to_bytes().to_vec()),
            (layout::CHECKPOINT.into(), source.checkpoint.clone()),
            (layout::VKEY.into(), format!("{}\n", source.vkey).into_bytes()),
            (layout::PUBLIC_KEY_PEM.into(), layout::public_key_pem(&key).into_bytes()),
        ];
        data.extend(source.witnessing.iter().flat_map(layout::Witnessing::files));
        data.extend(source.timestamp.iter().flat_map(layout::BundleTimestamp::files));
        for record in &source.records {
            let (entry_path, proof_path) = layout::record_paths(record.index);
            data.push((entry_path, record.entry.clone()));
            data.push((proof_path, record.proof.clone()));
            data.push((layout::opening_path(record.index), record.openings.clone()));
        }
        if let Some(chain) = &source.provider_chain {
            data.extend(
                chain.files.iter().map(|(path, bytes)| (format!("{}{path}", layout::PROVENANCE_DIR), bytes.clone())),
            );
        }
        data.push((layout::REPORT.into(), crate::report::certificate(source, &verifier).into_bytes()));

        let payload_path = layout::payload_path(&source.artefact);
        let mut listed: Vec<(String, String, u64)> =
            data.iter().map(|(path, bytes)| (path.clone(), sha256_hex(bytes), bytes.len() as u64)).collect();
        listed.push((payload_path.clone(), source.payload_sha256.to_hex(), source.payload_size));
        let info = BagInfo {
            origin: verifier.name(),
            identifier: source.artefact.as_str(),
            description: layout::artefact_description(&source.artefact),
            scope: None,
            bagged_at: &source.bagged_at,
        };
        let mut files = tag_files(&info, &listed);
        files.extend(data);
        let tar = Tar::new(dir, &source.bagged_at);
        let (payload_size, payload_sha256) = (source.payload_size, source.payload_sha256);
        let artefact = source.artefact.clone();
        Ok(Self { tar, files, payload_path, payload_size, payload_sha256, artefact })
    }

    /// Every file of the bag, payload included, as a manifest lists it (paths within the bag).
    pub fn listed(&self) -> Vec<ListedFile> {
        let mut listed: Vec<ListedFile> =
            self.files.iter().map(|(path, bytes)| (path.clone(), sha256_hex(bytes), bytes.len() as u64)).collect();
        listed.push((self.payload_path.clone(), self.payload_sha256.to_hex(), self.payload_size));
        listed
    }

    /// The bundle as a case bundle's listing names it: by the SHA-256 of its tag manifest, which fixes every file
    /// of the bag through the manifests, and the bytes of all its files.
    pub fn listed_bundle(&self) -> layout::ListedBundle {
        let tag_manifest = self.files.iter().find(|(path, _)| path == "tagmanifest-sha256.txt");
        let sha256 = Sha256::of(tag_manifest.map_or(&[][..], |(_, bytes)| bytes));
        let size = self.files.iter().map(|(_, bytes)| bytes.len() as u64).sum::<u64>() + self.payload_size;
        layout::ListedBundle { artefact: self.artefact.clone(), sha256, size }
    }

    /// Every file of the bag as a case bag's manifest lists it, under the bundle's directory there.
    pub fn listed_in_case(&self) -> Vec<ListedFile> {
        let dir = layout::inner_bundle_dir(&self.artefact);
        self.listed().into_iter().map(|(path, hex, size)| (format!("{dir}{path}"), hex, size)).collect()
    }

    /// The zero bytes after the payload that end its tar block.
    pub fn payload_padding(&self) -> Vec<u8> {
        padding(self.payload_size)
    }

    /// The tar bytes before the payload's bytes: every other file, then the payload's header.
    pub fn head(&self) -> Result<Vec<u8>, VerifyError> {
        let mut out = Vec::new();
        for (path, bytes) in &self.files {
            self.tar.file(path, bytes, &mut out)?;
        }
        out.extend_from_slice(&self.tar.header(&self.payload_path, self.payload_size)?);
        Ok(out)
    }

    /// The tar bytes after the payload: its padding, then the end-of-archive marker.
    pub fn tail(&self) -> Vec<u8> {
        let mut tail = self.payload_padding();
        tail.resize(tail.len() + 2 * BLOCK as usize, 0);
        tail
    }

    /// The bundle's size in bytes, for Content-Length.
    pub fn len(&self) -> Result<u64, VerifyError> {
        Ok(self.head()?.len() as u64 + self.payload_size + self.tail().len() as u64)
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the whole bundle, copying exactly `payload_size` bytes from `payload`.
    pub fn write_to(&self, payload: &mut impl Read, out: &mut impl Write) -> Result<(), VerifyError> {
        out.write_all(&self.head()?)?;
        let copied = std::io::copy(&mut payload.take(self.payload_size), out)?;
        if copied != self.payload_size {
            return Err(VerifyError::Malformed(format!("payload ended after {copied} of {} bytes", self.payload_size)));
        }
        out.write_all(&self.tail())?;
        Ok(())
    }
}

/// A case bundle: a bag whose payload is one artefact bundle per artefact of the case, each unpacked in a
/// directory of its own and complete and verifiable alone, then the listing of them all ([`CaseListing`]) and the
/// case export custody record that commits to it, with its inclusion proof, the openings of its commitments, the
/// checkpoint and the gateway's key. The artefact bundles are streamed first ([`BundleWriter::in_case`]); each
/// one's payload is named by the digest it is stored under, so nothing is hashed on the way out but the small
/// files. The listing names each by its tag manifest's digest, and [`Self::finish`] writes the rest.
#[derive(Debug)]
pub struct CaseBundleWriter {
    tar: Tar,
    case: CaseId,
    verifier: custodia_ledger::LogVerifier,
    bagged_at: String,
}

/// The case export record as it goes into a case bundle, with what checks it.
#[derive(Debug, Clone)]
pub struct CaseRecord {
    pub record: layout::BundleRecord,
    /// The signed checkpoint the record's proof is against.
    pub checkpoint: Vec<u8>,
    /// The witness policy and what else witnessing adds, from a gateway that has a witness policy.
    pub witnessing: Option<layout::Witnessing>,
}

impl CaseBundleWriter {
    pub fn new(case: &CaseId, vkey: &str, bagged_at: &str) -> Result<Self, VerifyError> {
        let verifier: custodia_ledger::LogVerifier =
            vkey.parse().map_err(|err| VerifyError::Malformed(format!("gateway key: {err}")))?;
        Ok(Self {
            tar: Tar::new(layout::case_bag_dir(case), bagged_at),
            case: case.clone(),
            verifier,
            bagged_at: bagged_at.to_owned(),
        })
    }

    /// Everything after the artefact bundles: the listing, the case export record with its proof and openings, the
    /// checkpoint and keys, the certificate, the tag files, and the end-of-archive marker. `bundled` are the files
    /// of the artefact bundles written before, as the case bag's manifest lists them (each bundle's
    /// [`BundleWriter::listed`] under its directory).
    pub fn finish(
        &self,
        listing: &CaseListing,
        case_record: &CaseRecord,
        bundled: Vec<ListedFile>,
    ) -> Result<Vec<u8>, VerifyError> {
        let key = self.verifier.public_key().map_err(|err| VerifyError::Malformed(format!("gateway key: {err}")))?;
        let listing_bytes = listing.to_bytes().map_err(|err| VerifyError::Malformed(format!("case listing: {err}")))?;
        let record = &case_record.record;
        let (entry_path, proof_path) = layout::record_paths(record.index);
        if listing.case != self.case {
            return Err(VerifyError::Malformed(format!("the listing is of case {}, not {}", listing.case, self.case)));
        }
        let report = crate::report::case_certificate(self.verifier.name(), listing, record.index);
        let mut small: Vec<(String, Vec<u8>)> = vec![
            (layout::CASE_LISTING.into(), listing_bytes),
            (entry_path, record.entry.clone()),
            (proof_path, record.proof.clone()),
            (layout::opening_path(record.index), record.openings.clone()),
            (layout::CHECKPOINT.into(), case_record.checkpoint.clone()),
            (layout::VKEY.into(), format!("{}\n", self.verifier).into_bytes()),
            (layout::PUBLIC_KEY_PEM.into(), layout::public_key_pem(&key).into_bytes()),
            (layout::REPORT.into(), report.into_bytes()),
        ];
        small.extend(case_record.witnessing.iter().flat_map(layout::Witnessing::files));
        let mut listed = bundled;
        listed.extend(small.iter().map(|(path, bytes)| (path.clone(), sha256_hex(bytes), bytes.len() as u64)));
        let info = BagInfo {
            origin: self.verifier.name(),
            identifier: self.case.as_str(),
            description: layout::case_description(&self.case, &listing.scope),
            scope: Some(listing.scope.tag()),
            bagged_at: &self.bagged_at,
        };
        let mut out = Vec::new();
        for (path, bytes) in small.iter().chain(&tag_files(&info, &listed)) {
            self.tar.file(path, bytes, &mut out)?;
        }
        out.resize(out.len() + 2 * BLOCK as usize, 0);
        Ok(out)
    }
}
