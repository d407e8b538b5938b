//! Checkpoints (c2sp.org/tlog-checkpoint) signed as notes (c2sp.org/signed-note) with Ed25519 keys.
//!
//! Note parsing and signature checks are Cloudflare's `signed_note`, a port of Go's `sumdb/note`; this module
//! adds the checkpoint body, key files and the rule that the signing key's name is the log's origin.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::SigningKey;
use signed_note::{Note, NoteError, Signer as _, StandardSigner, StandardVerifier, Verifier as _, VerifierList};

use crate::merkle::Hash;

/// Why a checkpoint or key was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    #[error("checkpoint body is malformed: {0}")]
    MalformedBody(&'static str),
    #[error("signed note is malformed or has a malformed signature line")]
    MalformedNote,
    #[error("checkpoint signature by {name} does not verify")]
    BadSignature { name: String },
    #[error("checkpoint carries no signature from a trusted key (trusted: {trusted})")]
    NoTrustedSignature { trusted: String },
    #[error("checkpoint origin {origin:?} is not the name of the key that signed it ({key_name:?})")]
    OriginMismatch { origin: String, key_name: String },
    #[error("verifier key is malformed: {0}")]
    BadVerifierKey(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("signer key is malformed")]
    BadSignerKey,
    #[error("could not sign: {0}")]
    Signing(#[source] NoteError),
}

/// The body of a checkpoint: which log, how big, and its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub extensions: Vec<String>,
}

impl Checkpoint {
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Self {
        Self { origin: origin.into(), size, root, extensions: Vec::new() }
    }

    /// `<origin>\n<size>\n<base64 root>\n`, then any extension lines.
    pub fn body(&self) -> String {
        let mut body = format!("{}\n{}\n{}\n", self.origin, self.size, self.root.to_base64());
        for line in &self.extensions {
            body.push_str(line);
            body.push('\n');
        }
        body
    }

    pub fn parse_body(body: &str) -> Result<Self, CheckpointError> {
        let lines = body.strip_suffix('\n').ok_or(CheckpointError::MalformedBody("does not end in a newline"))?;
        let mut lines = lines.split('\n');
        let origin = lines.next().filter(|o| !o.is_empty()).ok_or(CheckpointError::MalformedBody("no origin"))?;
        let size_text = lines.next().ok_or(CheckpointError::MalformedBody("no tree size"))?;
        let canonical_decimal = !size_text.is_empty()
            && size_text.bytes().all(|b| b.is_ascii_digit())
            && (size_text == "0" || !size_text.starts_with('0'));
        let size = size_text
            .parse()
            .ok()
            .filter(|_| canonical_decimal)
            .ok_or(CheckpointError::MalformedBody("tree size is not a decimal number"))?;
        let root = lines
            .next()
            .and_then(Hash::from_base64)
            .ok_or(CheckpointError::MalformedBody("root hash is not 32 bytes of base64"))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(CheckpointError::MalformedBody("empty extension line"));
        }
        Ok(Self { origin: origin.to_owned(), size, root, extensions })
    }
}

/// A checkpoint with the exact signed-note bytes it came in, so that it can be passed on verbatim.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    note: Vec<u8>,
}

impl fmt::Debug for SignedCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedCheckpoint").field("checkpoint", &self.checkpoint).finish_non_exhaustive()
    }
}

impl SignedCheckpoint {
    pub fn note(&self) -> &[u8] {
        &self.note
    }

    /// Parses a signed checkpoint and checks it against `trusted` keys. At least one trusted key named like the
    /// origin must have signed it; signatures from unknown keys (cosigners, say) are ignored; a bad signature
    /// from a trusted key fails.
    pub fn open(note: &[u8], trusted: &[LogVerifier]) -> Result<Self, CheckpointError> {
        let parsed = Note::from_bytes(note).map_err(|_| CheckpointError::MalformedNote)?;
        let body = std::str::from_utf8(parsed.text()).map_err(|_| CheckpointError::MalformedNote)?;
        let checkpoint = Checkpoint::parse_body(body)?;
        let list = VerifierList::new(
            trusted.iter().map(|v| Box::new(v.verifier.clone()) as Box<dyn signed_note::Verifier>).collect(),
        );
        let (verified, _unknown) = parsed.verify(&list).map_err(|err| match err {
            NoteError::InvalidSignature { name, .. } => CheckpointError::BadSignature { name },
            NoteError::UnverifiedNote => CheckpointError::NoTrustedSignature {
                trusted: trusted.iter().map(|v| v.vkey.as_str()).collect::<Vec<_>>().join(", "),
            },
            _ => CheckpointError::MalformedNote,
        })?;
        if !verified.iter().any(|sig| sig.name() == checkpoint.origin) {
            return Err(CheckpointError::OriginMismatch {
                origin: checkpoint.origin,
                key_name: verified.first().map(|sig| sig.name().to_owned()).unwrap_or_default(),
            });
        }
        Ok(Self { checkpoint, note: note.to_vec() })
    }
}

/// A log's public key in C2SP verifier-key form: `<name>+<key ID>+<base64(0x01 || public key)>`.
#[derive(Clone)]
pub struct LogVerifier {
    vkey: String,
    verifier: StandardVerifier,
}

impl fmt::Debug for LogVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogVerifier({})", self.vkey)
    }
}

impl fmt::Display for LogVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.vkey)
    }
}

impl std::str::FromStr for LogVerifier {
    type Err = CheckpointError;

    fn from_str(vkey: &str) -> Result<Self, Self::Err> {
        let vkey = vkey.trim();
        let verifier = StandardVerifier::new(vkey).map_err(|err| CheckpointError::BadVerifierKey(err.into()))?;
        Ok(Self { vkey: vkey.to_owned(), verifier })
    }
}

impl LogVerifier {
    pub fn name(&self) -> &str {
        self.verifier.name()
    }

    pub fn key_id(&self) -> u32 {
        self.verifier.key_id()
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> Result<ed25519_dalek::VerifyingKey, CheckpointError> {
        // Key names never contain '+', but base64 may.
        let encoded = self.vkey.splitn(3, '+').nth(2).unwrap_or_default();
        let bytes = BASE64.decode(encoded).map_err(|err| CheckpointError::BadVerifierKey(err.into()))?;
        let raw: [u8; 32] = bytes
            .get(1..)
            .and_then(|raw| raw.try_into().ok())
            .ok_or_else(|| CheckpointError::BadVerifierKey("not an Ed25519 key".into()))?;
        ed25519_dalek::VerifyingKey::from_bytes(&raw).map_err(|err| CheckpointError::BadVerifierKey(err.into()))
    }
}

/// The gateway's Ed25519 signing key, named after the log's origin. Stored as a Go `note` signer key
/// (`PRIVATE+KEY+<name>+<key ID>+<base64(0x01 || seed)>`), which Go's tooling reads as it is.
pub struct LogSigner {
    skey: String,
    signer: StandardSigner,
    signing_key: SigningKey,
}

impl fmt::Debug for LogSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogSigner({}, key ID {:08x})", self.signer.name(), self.signer.key_id())
    }
}

impl LogSigner {
    pub fn generate(name: &str) -> Result<Self, CheckpointError> {
        if !signed_note::is_key_name_valid(name) {
            return Err(CheckpointError::BadSignerKey);
        }
        let (skey, _vkey) = signed_note::generate_key(&mut rand_core::OsRng, name);
        Self::from_skey(&skey)
    }

    pub fn from_skey(skey: &str) -> Result<Self, CheckpointError> {
        let skey = skey.trim();
        let signer = StandardSigner::new(skey).map_err(|_| CheckpointError::BadSignerKey)?;
        let encoded = skey.splitn(5, '+').nth(4).unwrap_or_default();
        let bytes = BASE64.decode(encoded).map_err(|_| CheckpointError::BadSignerKey)?;
        let seed: [u8; 32] = bytes.get(1..).and_then(|s| s.try_into().ok()).ok_or(CheckpointError::BadSignerKey)?;
        Ok(Self { skey: skey.to_owned(), signer, signing_key: SigningKey::from_bytes(&seed) })
    }

    /// The secret key text, for writing to the owner-only key file.
    pub fn expose_secret(&self) -> &str {
        &self.skey
    }

    pub fn name(&self) -> &str {
        self.signer.name()
    }

    /// The raw Ed25519 key, for signing manifests.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }

    pub fn verifier(&self) -> LogVerifier {
        let vkey = signed_note::new_ed25519_verifier_key(self.name(), &self.signing_key.verifying_key());
        vkey.parse().unwrap_or_else(|_| unreachable!("a key we derived ourselves always parses"))
    }

    /// Signs `checkpoint` as a note. Its origin must be this key's name.
    pub fn sign(&self, checkpoint: &Checkpoint) -> Result<SignedCheckpoint, CheckpointError> {
        if checkpoint.origin != self.name() {
            return Err(CheckpointError::OriginMismatch {
                origin: checkpoint.origin.clone(),
                key_name: self.name().to_owned(),
            });
        }
        let mut note = Note::new(checkpoint.body().as_bytes(), &[]).map_err(CheckpointError::Signing)?;
        note.add_sigs(&[&self.signer]).map_err(CheckpointError::Signing)?;
        Ok(SignedCheckpoint { checkpoint: checkpoint.clone(), note: note.to_bytes() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::empty_root;

    #[test]
    fn example_key_from_the_spec_parses_with_its_key_id() {
        let vkey: LogVerifier =
            "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k".parse().unwrap();
        assert_eq!(vkey.name(), "example.com/foo");
        assert_eq!(vkey.key_id(), 0x530d903a);
        assert!(
            "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k".parse::<LogVerifier>().is_err()
        );
    }

    #[test]
    fn signed_checkpoint_round_trips_and_tampering_fails() {
        let signer = LogSigner::generate("custodia.test/log").unwrap();
        let checkpoint = Checkpoint::new("custodia.test/log", 0, empty_root());
        let signed = signer.sign(&checkpoint).unwrap();
        let text = String::from_utf8(signed.note().to_vec()).unwrap();
        assert!(text.starts_with(
            "custodia.test/log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n\u{2014} custodia.test/log "
        ));
        let opened = SignedCheckpoint::open(signed.note(), &[signer.verifier()]).unwrap();
        assert_eq!(opened.checkpoint, checkpoint);

        let forged = text.replacen("\n0\n", "\n1\n", 1);
        assert!(matches!(
            SignedCheckpoint::open(forged.as_bytes(), &[signer.verifier()]),
            Err(CheckpointError::BadSignature { .. })
        ));
        let stranger = LogSigner::generate("custodia.test/log").unwrap();
        assert!(matches!(
            SignedCheckpoint::open(signed.note(), &[stranger.verifier()]),
            Err(CheckpointError::NoTrustedSignature { .. })
        ));
    }

    #[test]
    fn signer_key_text_round_trips() {
        let signer = LogSigner::generate("custodia.test/log").unwrap();
        let again = LogSigner::from_skey(signer.expose_secret()).unwrap();
        assert_eq!(again.verifier().to_string(), signer.verifier().to_string());
        assert!(!format!("{signer:?}").contains(signer.expose_secret()));
    }

    #[test]
    fn body_parser_refuses_malformed_bodies() {
        for bad in [
            "",
            "o\n1\n",
            "o\n01\nAAAA\n",
            "o\n1\nnot-base64\n",
            "\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
            "o\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n",
        ] {
            assert!(Checkpoint::parse_body(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(text in "(?s).{0,300}") {
            let _ = Checkpoint::parse_body(&text);
            let _ = SignedCheckpoint::open(text.as_bytes(), &[]);
            let _ = text.parse::<LogVerifier>();
            let _ = LogSigner::from_skey(&text);
        }
    }
}
