//! Ed25519 `cosignature/v1` (c2sp.org/tlog-cosignature): a witness's timestamped statement that it saw a
//! checkpoint and checked that it is consistent with every earlier one it saw of the same log.
//!
//! - The key's algorithm byte is 0x04 and its key ID is the first four bytes of
//!   SHA-256(name || `\n` || 0x04 || public key), so a cosigner key can never be mistaken for a note key (0x01).
//! - The signed message is `cosignature/v1\ntime <timestamp>\n` followed by the whole checkpoint body.
//! - The signature line carries key ID || timestamp (u64, big-endian seconds) || the 64-byte signature.
//!
//! Note parsing is `signed_note`'s; this module plugs the cosignature algorithm into its `Signer` and `Verifier`.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature as Ed25519Signature, Signer as _, SigningKey, VerifyingKey};
use signed_note::{Note, NoteError, VerifierList};

/// The algorithm byte of an Ed25519 cosignature/v1 key.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

/// Why a cosigner key or a cosignature was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CosignatureError {
    #[error("cosigner key is malformed: {0}")]
    MalformedKey(&'static str),
    #[error("a cosignature's timestamp must be greater than zero")]
    ZeroTimestamp,
    #[error("the signed note is malformed")]
    MalformedNote,
    #[error("the cosignature of {name} does not verify")]
    BadSignature { name: String },
    #[error("could not sign: {0}")]
    Signing(#[source] NoteError),
}

/// The message a cosigner signs for `checkpoint_body` at `timestamp`.
pub fn signed_message(checkpoint_body: &[u8], timestamp: u64) -> Vec<u8> {
    let mut message = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    message.extend_from_slice(checkpoint_body);
    message
}

fn key_id(name: &str, public_key: &VerifyingKey) -> u32 {
    let mut encoded = vec![ALG_COSIGNATURE_V1];
    encoded.extend_from_slice(public_key.as_bytes());
    signed_note::key_id(name, &encoded)
}

/// One verified cosignature: who, and when they say they saw the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosignature {
    pub name: String,
    pub key_id: u32,
    /// Seconds since the Unix epoch, as the witness's clock had it.
    pub timestamp: u64,
}

/// A witness's secret cosigner key. Stored as `PRIVATE+KEY+<name>+<key ID>+<base64(0x04 || seed)>`, the shape of a
/// Go `note` signer key with the cosignature algorithm byte.
pub struct CosignerKey {
    name: String,
    key_id: u32,
    signing_key: SigningKey,
}

impl fmt::Debug for CosignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CosignerKey({}, key ID {:08x})", self.name, self.key_id)
    }
}

impl CosignerKey {
    /// A new random key named `name` (a witness name: no spaces, no `+`).
    pub fn generate(name: &str) -> Result<Self, CosignatureError> {
        Self::from_signing_key(name, SigningKey::generate(&mut rand_core::OsRng))
    }

    pub fn from_signing_key(name: &str, signing_key: SigningKey) -> Result<Self, CosignatureError> {
        if !signed_note::is_key_name_valid(name) {
            return Err(CosignatureError::MalformedKey("the name is empty or holds a space or a '+'"));
        }
        let key_id = key_id(name, &signing_key.verifying_key());
        Ok(Self { name: name.to_owned(), key_id, signing_key })
    }

    /// Reads the key file text written by [`CosignerKey::expose_secret`].
    pub fn from_skey(text: &str) -> Result<Self, CosignatureError> {
        let mut parts = text.trim().splitn(5, '+');
        let (Some("PRIVATE"), Some("KEY"), Some(name), Some(id), Some(encoded)) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CosignatureError::MalformedKey("not PRIVATE+KEY+<name>+<key ID>+<key>"));
        };
        let bytes = BASE64.decode(encoded).map_err(|_| CosignatureError::MalformedKey("the key is not base64"))?;
        let (Some(&ALG_COSIGNATURE_V1), Ok(seed)) = (bytes.first(), <[u8; 32]>::try_from(&bytes[1.min(bytes.len())..]))
        else {
            return Err(CosignatureError::MalformedKey("not an Ed25519 cosignature/v1 key (0x04 and 32 bytes)"));
        };
        let key = Self::from_signing_key(name, SigningKey::from_bytes(&seed))?;
        if format!("{:08x}", key.key_id) != id {
            return Err(CosignatureError::MalformedKey("the key ID does not match the key"));
        }
        Ok(key)
    }

    /// The secret key text, for the owner-only key file.
    pub fn expose_secret(&self) -> String {
        let mut encoded = vec![ALG_COSIGNATURE_V1];
        encoded.extend_from_slice(self.signing_key.as_bytes());
        format!("PRIVATE+KEY+{}+{:08x}+{}", self.name, self.key_id, BASE64.encode(encoded))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    pub fn verifier(&self) -> CosignerVerifier {
        CosignerVerifier::new(&self.name, self.signing_key.verifying_key())
            .unwrap_or_else(|_| unreachable!("the name was checked when the key was made"))
    }

    /// The cosignature line (`— <name> <base64>\n`) for `checkpoint_body` at `timestamp`.
    pub fn cosign(&self, checkpoint_body: &[u8], timestamp: u64) -> Result<String, CosignatureError> {
        let mut note = Note::new(checkpoint_body, &[]).map_err(|_| CosignatureError::MalformedNote)?;
        let signer = TimedSigner { key: self, timestamp };
        note.add_sigs(&[&signer]).map_err(|err| match err {
            NoteError::SignatureError(_) if timestamp == 0 => CosignatureError::ZeroTimestamp,
            other => CosignatureError::Signing(other),
        })?;
        let bytes = note.to_bytes();
        let line = &bytes[checkpoint_body.len() + 1..];
        Ok(String::from_utf8(line.to_vec()).unwrap_or_else(|_| unreachable!("a signature line is ASCII")))
    }
}

/// A cosigner key fixed to one timestamp, so that `signed_note` can add its signature line.
struct TimedSigner<'a> {
    key: &'a CosignerKey,
    timestamp: u64,
}

impl signed_note::Signer for TimedSigner<'_> {
    fn name(&self) -> &str {
        &self.key.name
    }

    fn key_id(&self) -> u32 {
        self.key.key_id
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        if self.timestamp == 0 {
            return Err(ed25519_dalek::SignatureError::new());
        }
        let signature = self.key.signing_key.sign(&signed_message(msg, self.timestamp));
        let mut out = self.timestamp.to_be_bytes().to_vec();
        out.extend_from_slice(&signature.to_bytes());
        Ok(out)
    }
}

/// A witness's public cosigner key, written `<name>+<key ID>+<base64(0x04 || public key)>`.
#[derive(Clone, PartialEq, Eq)]
pub struct CosignerVerifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl fmt::Debug for CosignerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CosignerVerifier({self})")
    }
}

impl fmt::Display for CosignerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut encoded = vec![ALG_COSIGNATURE_V1];
        encoded.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.key_id, BASE64.encode(encoded))
    }
}

impl FromStr for CosignerVerifier {
    type Err = CosignatureError;

    fn from_str(vkey: &str) -> Result<Self, Self::Err> {
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(encoded)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CosignatureError::MalformedKey("not <name>+<key ID>+<key>"));
        };
        let bytes = BASE64.decode(encoded).map_err(|_| CosignatureError::MalformedKey("the key is not base64"))?;
        match bytes.first() {
            Some(&ALG_COSIGNATURE_V1) => {}
            Some(0x01) => return Err(CosignatureError::MalformedKey("a note key (0x01), not a cosigner key (0x04)")),
            _ => return Err(CosignatureError::MalformedKey("not an Ed25519 cosignature/v1 key (0x04)")),
        }
        let raw = <[u8; 32]>::try_from(&bytes[1..]).map_err(|_| CosignatureError::MalformedKey("not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| CosignatureError::MalformedKey("not an Ed25519 point"))?;
        let verifier = Self::new(name, key)?;
        if format!("{:08x}", verifier.key_id) != id {
            return Err(CosignatureError::MalformedKey("the key ID does not match the key"));
        }
        Ok(verifier)
    }
}

impl CosignerVerifier {
    /// A verifier from a name and a raw public key (Sigsum's policies write keys as hex).
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, CosignatureError> {
        if !signed_note::is_key_name_valid(name) {
            return Err(CosignatureError::MalformedKey("the name is empty or holds a space or a '+'"));
        }
        Ok(Self { name: name.to_owned(), key_id: key_id(name, &key), key })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// This witness's cosignature on a signed checkpoint `note`, if it has one. A line with this witness's name and
    /// key ID that does not verify, or has a zero timestamp, is an error, not an absence.
    pub fn cosignature_on(&self, note: &[u8]) -> Result<Option<Cosignature>, CosignatureError> {
        let note = Note::from_bytes(note).map_err(|_| CosignatureError::MalformedNote)?;
        let list = VerifierList::new(vec![Box::new(self.clone())]);
        match note.verify(&list) {
            Ok((verified, _)) => Ok(verified.first().map(|signature| Cosignature {
                name: self.name.clone(),
                key_id: self.key_id,
                timestamp: timestamp_of(signature.signature()).unwrap_or_default(),
            })),
            Err(NoteError::UnverifiedNote) => Ok(None),
            Err(NoteError::InvalidSignature { .. }) => Err(CosignatureError::BadSignature { name: self.name.clone() }),
            Err(_) => Err(CosignatureError::MalformedNote),
        }
    }
}

fn timestamp_of(signature: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(signature.get(..8)?.try_into().ok()?))
}

impl signed_note::Verifier for CosignerVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn key_id(&self) -> u32 {
        self.key_id
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let (Some(timestamp), Some(signature)) = (timestamp_of(sig), sig.get(8..)) else {
            return false;
        };
        let Ok(signature) = Ed25519Signature::from_slice(signature) else {
            return false;
        };
        timestamp > 0 && self.key.verify_strict(&signed_message(msg, timestamp), &signature).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"example.com/log\n3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";

    #[test]
    fn a_cosignature_verifies_and_carries_its_time() {
        let key = CosignerKey::generate("witness.example/w1").unwrap();
        let line = key.cosign(BODY, 1_700_000_000).unwrap();
        assert!(line.starts_with("— witness.example/w1 "), "{line}");
        let note = [BODY, b"\n", line.as_bytes()].concat();
        let found = key.verifier().cosignature_on(&note).unwrap().unwrap();
        assert_eq!(found.timestamp, 1_700_000_000);
        assert_eq!(found.key_id, key.key_id());
    }

    #[test]
    fn a_tampered_or_foreign_cosignature_is_refused() {
        let key = CosignerKey::generate("w1").unwrap();
        let line = key.cosign(BODY, 5).unwrap();
        let tampered =
            [&b"example.com/log\n4\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"[..], b"\n", line.as_bytes()]
                .concat();
        assert!(matches!(key.verifier().cosignature_on(&tampered), Err(CosignatureError::BadSignature { .. })));
        let other = CosignerKey::generate("w1").unwrap();
        let note = [BODY, b"\n", line.as_bytes()].concat();
        assert_eq!(other.verifier().cosignature_on(&note).unwrap(), None);
    }

    #[test]
    fn a_zero_timestamp_is_never_signed() {
        let key = CosignerKey::generate("w1").unwrap();
        assert!(matches!(key.cosign(BODY, 0), Err(CosignatureError::ZeroTimestamp)));
    }

    #[test]
    fn keys_round_trip_and_note_keys_are_not_cosigner_keys() {
        let key = CosignerKey::generate("w1").unwrap();
        let again = CosignerKey::from_skey(&key.expose_secret()).unwrap();
        assert_eq!(again.verifier(), key.verifier());
        let vkey = key.verifier().to_string();
        assert_eq!(vkey.parse::<CosignerVerifier>().unwrap(), key.verifier());
        assert!(!format!("{key:?}").contains(&key.expose_secret()));
        // The spec's example note key (algorithm 0x01) is refused as a cosigner key.
        assert!(
            "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
                .parse::<CosignerVerifier>()
                .is_err()
        );
        let wrong_id = format!("w1+{:08x}+{}", key.key_id() ^ 1, vkey.splitn(3, '+').nth(2).unwrap());
        assert!(wrong_id.parse::<CosignerVerifier>().is_err());
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(text in "(?s).{0,200}") {
            let _ = text.parse::<CosignerVerifier>();
            let _ = CosignerKey::from_skey(&text);
            let key = CosignerKey::from_signing_key("w", SigningKey::from_bytes(&[7; 32])).unwrap();
            let _ = key.verifier().cosignature_on(text.as_bytes());
        }
    }
}
