//! The body of `POST <prefix>/add-checkpoint` (c2sp.org/tlog-witness v1.0.0):
//!
//! ```text
//! old <size>
//! <consistency proof hash, base64>     (zero to 63 lines)
//!
//! <the checkpoint, a signed note>
//! ```

use custodia_ledger::Hash;

/// The most consistency-proof lines a request may hold.
pub const MAX_PROOF_LINES: usize = 63;

/// Why a request body could not be read. Every one is a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error("the request must start with `old <size>`")]
    NoOldSize,
    #[error("the old size is not a decimal number")]
    BadOldSize,
    #[error("a consistency proof line is not 32 bytes of base64")]
    BadProofLine,
    #[error("the consistency proof has more than {MAX_PROOF_LINES} lines")]
    ProofTooLong,
    #[error("no empty line before the checkpoint")]
    NoCheckpoint,
}

/// One add-checkpoint request, read but not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    pub old_size: u64,
    pub proof: Vec<Hash>,
    /// The signed checkpoint, verbatim.
    pub checkpoint: Vec<u8>,
}

/// A decimal number without a sign or leading zeros, as the C2SP formats write them.
pub(crate) fn parse_decimal(text: &str) -> Option<u64> {
    let canonical =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    if canonical { text.parse().ok() } else { None }
}

impl AddCheckpoint {
    pub fn parse(body: &[u8]) -> Result<Self, RequestError> {
        let mut rest = body;
        let mut next_line = || -> Option<&[u8]> {
            let end = rest.iter().position(|&b| b == b'\n')?;
            let line = &rest[..end];
            rest = &rest[end + 1..];
            Some(line)
        };
        let first = next_line().ok_or(RequestError::NoOldSize)?;
        let size_text = std::str::from_utf8(first)
            .ok()
            .and_then(|line| line.strip_prefix("old "))
            .ok_or(RequestError::NoOldSize)?;
        let old_size = parse_decimal(size_text).ok_or(RequestError::BadOldSize)?;
        let mut proof = Vec::new();
        loop {
            let line = next_line().ok_or(RequestError::NoCheckpoint)?;
            if line.is_empty() {
                break;
            }
            if proof.len() == MAX_PROOF_LINES {
                return Err(RequestError::ProofTooLong);
            }
            let hash = std::str::from_utf8(line).ok().and_then(Hash::from_base64).ok_or(RequestError::BadProofLine)?;
            proof.push(hash);
        }
        Ok(Self { old_size, proof, checkpoint: rest.to_vec() })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("old {}\n", self.old_size);
        for hash in &self.proof {
            out.push_str(&hash.to_base64());
            out.push('\n');
        }
        out.push('\n');
        let mut out = out.into_bytes();
        out.extend_from_slice(&self.checkpoint);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips() {
        let request = AddCheckpoint {
            old_size: 7,
            proof: vec![Hash([1; 32]), Hash([2; 32])],
            checkpoint: b"o\n9\nx\n\n- sig\n".to_vec(),
        };
        assert_eq!(AddCheckpoint::parse(&request.to_bytes()).unwrap(), request);
    }

    #[test]
    fn malformed_requests_are_refused() {
        let line = format!("{}\n", Hash([3; 32]).to_base64());
        let long = format!("old 1\n{}\nnote", line.repeat(MAX_PROOF_LINES + 1));
        let longest = format!("old 1\n{}\nnote", line.repeat(MAX_PROOF_LINES));
        assert_eq!(AddCheckpoint::parse(long.as_bytes()), Err(RequestError::ProofTooLong));
        assert_eq!(AddCheckpoint::parse(longest.as_bytes()).unwrap().proof.len(), MAX_PROOF_LINES);
        for (body, want) in [
            ("", RequestError::NoOldSize),
            ("new 1\n\n", RequestError::NoOldSize),
            ("old 01\n\n", RequestError::BadOldSize),
            ("old -1\n\n", RequestError::BadOldSize),
            ("old 1\nAAAA\n\n", RequestError::BadProofLine),
            ("old 1\n", RequestError::NoCheckpoint),
        ] {
            assert_eq!(AddCheckpoint::parse(body.as_bytes()), Err(want), "{body:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = AddCheckpoint::parse(&bytes);
        }
    }
}
