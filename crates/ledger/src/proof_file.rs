//! Offline inclusion proofs in the c2sp.org/tlog-proof@v1 format: everything needed to show, with no network,
//! that an entry is in a log whose checkpoint a trusted key signed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::checkpoint::{CheckpointError, LogVerifier, SignedCheckpoint};
use crate::merkle::{Hash, ProofError, leaf_hash, verify_inclusion};

const HEADER: &str = "c2sp.org/tlog-proof@v1";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProofFileError {
    #[error("proof file is malformed: {0}")]
    Malformed(&'static str),
    #[error("proof file's checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("inclusion proof for entry {index} does not verify: {source}")]
    Inclusion { index: u64, source: ProofError },
}

/// A parsed tlog-proof file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogProof {
    pub extra: Option<Vec<u8>>,
    pub index: u64,
    pub path: Vec<Hash>,
    /// The checkpoint, verbatim with its signatures.
    pub checkpoint_note: Vec<u8>,
}

impl TlogProof {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{HEADER}\n");
        if let Some(extra) = &self.extra {
            out.push_str(&format!("extra {}\n", BASE64.encode(extra)));
        }
        out.push_str(&format!("index {}\n", self.index));
        for hash in &self.path {
            out.push_str(&hash.to_base64());
            out.push('\n');
        }
        out.push('\n');
        let mut out = out.into_bytes();
        out.extend_from_slice(&self.checkpoint_note);
        out
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, ProofFileError> {
        let mut rest = bytes;
        let mut next_line = || -> Result<&str, ProofFileError> {
            let end = rest.iter().position(|&b| b == b'\n').ok_or(ProofFileError::Malformed("line without newline"))?;
            let line = std::str::from_utf8(&rest[..end]).map_err(|_| ProofFileError::Malformed("not UTF-8"))?;
            rest = &rest[end + 1..];
            Ok(line)
        };
        if next_line()? != HEADER {
            return Err(ProofFileError::Malformed("first line is not c2sp.org/tlog-proof@v1"));
        }
        let mut line = next_line()?;
        let mut extra = None;
        if let Some(encoded) = line.strip_prefix("extra ") {
            extra = Some(BASE64.decode(encoded).map_err(|_| ProofFileError::Malformed("extra is not base64"))?);
            line = next_line()?;
        }
        let index_text = line.strip_prefix("index ").ok_or(ProofFileError::Malformed("no index line"))?;
        let index = index_text
            .parse()
            .ok()
            .filter(|_| index_text == "0" || !index_text.starts_with('0'))
            .ok_or(ProofFileError::Malformed("index is not a decimal number"))?;
        let mut path = Vec::new();
        loop {
            let line = next_line()?;
            if line.is_empty() {
                break;
            }
            if path.len() >= 64 {
                return Err(ProofFileError::Malformed("more than 64 proof hashes"));
            }
            path.push(Hash::from_base64(line).ok_or(ProofFileError::Malformed("proof line is not a base64 hash"))?);
        }
        Ok(Self { extra, index, path, checkpoint_note: rest.to_vec() })
    }

    /// Checks the checkpoint against `trusted` keys and the entry's inclusion under it.
    pub fn verify(&self, entry: &[u8], trusted: &[LogVerifier]) -> Result<SignedCheckpoint, ProofFileError> {
        let signed = SignedCheckpoint::open(&self.checkpoint_note, trusted)?;
        let checkpoint = &signed.checkpoint;
        verify_inclusion(self.index, checkpoint.size, &leaf_hash(entry), &self.path, &checkpoint.root)
            .map_err(|source| ProofFileError::Inclusion { index: self.index, source })?;
        Ok(signed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let proof = TlogProof {
            extra: Some(b"x".to_vec()),
            index: 12,
            path: vec![leaf_hash(b"a"), leaf_hash(b"b")],
            checkpoint_note: b"origin\n13\nroot\n\n\xe2\x80\x94 sig\n".to_vec(),
        };
        assert_eq!(TlogProof::parse(&proof.to_bytes()).unwrap(), proof);
        let plain = TlogProof { extra: None, path: vec![], ..proof };
        assert!(String::from_utf8(plain.to_bytes()).unwrap().starts_with("c2sp.org/tlog-proof@v1\nindex 12\n\n"));
        assert_eq!(TlogProof::parse(&plain.to_bytes()).unwrap(), plain);
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(text in "(?s)(c2sp.org/tlog-proof@v1\n)?(index [0-9]{1,3}\n)?.{0,200}") {
            if let Ok(proof) = TlogProof::parse(text.as_bytes()) {
                let _ = proof.verify(b"entry", &[]);
            }
        }
    }
}
