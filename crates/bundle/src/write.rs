//! Laying out a bundle as tar bytes. Every file but the payload is small and built in memory; the payload is
//! streamed by the caller between [`BundleWriter::head`] and [`BundleWriter::tail`], so a multi-GB bundle never
//! sits in memory.

use std::io::{Read, Write};

use sha2::Digest as _;

use crate::layout::{self, BundleSource};
use crate::verify::VerifyError;

const BLOCK: u64 = 512;

/// A bundle ready to be written.
#[derive(Debug)]
pub struct BundleWriter {
    dir: String,
    mtime: u64,
    /// Tag files and every payload file except the artefact, in the order they are written.
    files: Vec<(String, Vec<u8>)>,
    payload_path: String,
    payload_size: u64,
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl BundleWriter {
    pub fn new(source: &BundleSource) -> Result<Self, VerifyError> {
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
        for record in &source.records {
            let (entry_path, proof_path) = layout::record_paths(record.index);
            data.push((entry_path, record.entry.clone()));
            data.push((proof_path, record.proof.clone()));
        }
        data.push((layout::REPORT.into(), crate::report::certificate(source, &verifier).into_bytes()));

        let payload_path = layout::payload_path(&source.artefact);
        let mut manifest_lines: Vec<String> =
            data.iter().map(|(path, bytes)| format!("{}  {path}\n", sha256_hex(bytes))).collect();
        manifest_lines.push(format!("{}  {payload_path}\n", source.payload_sha256));
        manifest_lines.sort_by(|a, b| a[66..].cmp(&b[66..]));
        let octets: u64 = data.iter().map(|(_, bytes)| bytes.len() as u64).sum::<u64>() + source.payload_size;
        let bag_date = source.bagged_at.get(..10).unwrap_or(&source.bagged_at);
        let tags: Vec<(String, Vec<u8>)> = vec![
            ("bagit.txt".into(), b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n".to_vec()),
            (
                "bag-info.txt".into(),
                format!(
                    "Source-Organization: Custodia gateway {origin}\nBagging-Date: {bag_date}\n\
                     Payload-Oxum: {octets}.{count}\nExternal-Identifier: {artefact}\n\
                     External-Description: Court bundle of artefact {artefact}, with its custody history and proofs\n\
                     Bag-Software-Agent: custodia {version}\n",
                    origin = verifier.name(),
                    count = data.len() + 1,
                    artefact = source.artefact,
                    version = env!("CARGO_PKG_VERSION"),
                )
                .into_bytes(),
            ),
            ("manifest-sha256.txt".into(), manifest_lines.concat().into_bytes()),
        ];
        let tag_manifest: String =
            tags.iter().map(|(path, bytes)| format!("{}  {path}\n", sha256_hex(bytes))).collect();
        let mut files = tags;
        files.push(("tagmanifest-sha256.txt".into(), tag_manifest.into_bytes()));
        files.extend(data);
        let mtime = source.bagged_at.parse::<jiff::Timestamp>().map(|t| t.as_second().max(0) as u64).unwrap_or(0);
        Ok(Self {
            dir: layout::bag_dir(&source.artefact),
            mtime,
            files,
            payload_path,
            payload_size: source.payload_size,
        })
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

    /// The tar bytes before the payload's bytes: every other file, then the payload's header.
    pub fn head(&self) -> Result<Vec<u8>, VerifyError> {
        let mut out = Vec::new();
        for (path, bytes) in &self.files {
            out.extend_from_slice(&self.header(path, bytes.len() as u64)?);
            out.extend_from_slice(bytes);
            out.resize(out.len().next_multiple_of(BLOCK as usize), 0);
        }
        out.extend_from_slice(&self.header(&self.payload_path, self.payload_size)?);
        Ok(out)
    }

    /// The tar bytes after the payload: its padding, then the end-of-archive marker.
    pub fn tail(&self) -> Vec<u8> {
        let padding = (self.payload_size.next_multiple_of(BLOCK) - self.payload_size) as usize;
        vec![0; padding + 2 * BLOCK as usize]
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
