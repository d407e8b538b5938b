//! Signed artefact manifests.
//!
//! A manifest describes an artefact at the moment it entered custody. The gateway signs its canonical JSON bytes
//! with Ed25519, directly, so that `openssl pkeyutl -verify` can check the signature by hand. The `type` field
//! keeps a manifest from ever being mistaken for another signed document.
//!
//! The manifest's SHA-256 and signature are published in the public log, so the manifest carries a random 32-byte
//! `nonce`: without it, anyone who could guess the case, the file's name, size and content digest (whoever holds
//! a copy of the file) could recompute the digest and confirm that the gateway holds the file. With it, the digest
//! is a salted commitment to everything the manifest says, the artefact's SHA-256 included; the manifest itself
//! (the opening) stays in the access-controlled catalog and travels in court bundles.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{ActorId, ArtefactId, CanonicalError, CaseId, Label, Salt, Sha256};

const MANIFEST_TYPE: &str = "custodia.manifest/v2";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("manifest type {found:?} is not {MANIFEST_TYPE:?}")]
    WrongType { found: String },
    #[error("manifest signature does not verify under the given key")]
    BadSignature,
    #[error("manifest is not a valid canonical document: {0}")]
    Encoding(#[from] CanonicalError),
    /// A manifest signature's text that is not base64.
    #[error(transparent)]
    SignatureText(base64::DecodeError),
    #[error("an Ed25519 signature is 64 bytes")]
    SignatureLength,
}

/// What the gateway attests about an artefact when it takes it in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(rename = "type")]
    pub kind: String,
    pub artefact: ArtefactId,
    pub case: CaseId,
    /// 32 random bytes from the OS's CSPRNG, written as hex, so that the manifest's digest in the public log
    /// confirms no guess about what it describes.
    pub nonce: Salt,
    pub sha256: Sha256,
    pub size: u64,
    pub media_type: Label,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_name: Option<Label>,
    pub registered_at: Timestamp,
    pub registered_by: ActorId,
    /// What FFmpeg found in the file (container, codecs, duration, resolution, creation time), or why it could
    /// not read it. Integers and strings only, so the canonical form is unambiguous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<serde_json::Value>,
}

impl Manifest {
    /// A manifest under `nonce`, which must be fresh from a CSPRNG (this crate does no IO).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        artefact: ArtefactId,
        case: CaseId,
        nonce: Salt,
        sha256: Sha256,
        size: u64,
        media_type: Label,
        registered_at: Timestamp,
        registered_by: ActorId,
    ) -> Self {
        Self {
            kind: MANIFEST_TYPE.to_owned(),
            artefact,
            case,
            nonce,
            sha256,
            size,
            media_type,
            original_name: None,
            registered_at,
            registered_by,
            media: None,
        }
    }

    /// Signs the canonical bytes of this manifest.
    pub fn sign(&self, key: &SigningKey) -> Result<SignedManifest, ManifestError> {
        self.check_type()?;
        let bytes = crate::to_canonical_vec(self)?;
        let signature = ManifestSignature(key.sign(&bytes).to_bytes());
        Ok(SignedManifest { manifest: self.clone(), bytes, signature })
    }

    fn check_type(&self) -> Result<(), ManifestError> {
        if self.kind == MANIFEST_TYPE { Ok(()) } else { Err(ManifestError::WrongType { found: self.kind.clone() }) }
    }
}

/// A raw 64-byte Ed25519 signature, written as standard base64.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ManifestSignature([u8; 64]);

impl ManifestSignature {
    pub const fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    pub fn to_bytes(self) -> [u8; 64] {
        self.0
    }
}

impl fmt::Debug for ManifestSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManifestSignature({self})")
    }
}

impl fmt::Display for ManifestSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&BASE64.encode(self.0))
    }
}

impl std::str::FromStr for ManifestSignature {
    type Err = ManifestError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = BASE64.decode(text.as_bytes()).map_err(ManifestError::SignatureText)?;
        let bytes: [u8; 64] = bytes.try_into().map_err(|_| ManifestError::SignatureLength)?;
        Ok(Self(bytes))
    }
}

impl Serialize for ManifestSignature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ManifestSignature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A manifest together with its canonical bytes and the gateway's signature over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest {
    manifest: Manifest,
    bytes: Vec<u8>,
    signature: ManifestSignature,
}

impl SignedManifest {
    /// Checks `bytes` against `signature` under `key` and parses them.
    pub fn verify(bytes: &[u8], signature: ManifestSignature, key: &VerifyingKey) -> Result<Self, ManifestError> {
        let signature_ok = key.verify_strict(bytes, &ed25519_dalek::Signature::from_bytes(&signature.0)).is_ok();
        if !signature_ok {
            return Err(ManifestError::BadSignature);
        }
        let manifest: Manifest = crate::from_canonical_slice(bytes)?;
        manifest.check_type()?;
        Ok(Self { manifest, bytes: bytes.to_vec(), signature })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The canonical bytes that were signed.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn signature(&self) -> ManifestSignature {
        self.signature
    }

    pub fn sha256(&self) -> Sha256 {
        Sha256::of(&self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest::new(
            ArtefactId::new("art-1").unwrap(),
            CaseId::new("case-7").unwrap(),
            Salt::from_bytes([9; 32]),
            Sha256::of(b"statement"),
            9,
            Label::new("video/webm").unwrap(),
            "2026-11-29T08:00:00Z".parse().unwrap(),
            ActorId::new("acct-3").unwrap(),
        )
    }

    #[test]
    fn debug_withholds_the_original_name() {
        let named = Manifest { original_name: Some(Label::new("maria-rossi-interview.webm").unwrap()), ..manifest() };
        let shown = format!("{named:?}");
        assert!(!shown.contains("maria-rossi"), "{shown}");
        assert!(shown.contains("art-1"), "{shown}");
    }

    #[test]
    fn signature_verifies_and_forgeries_fail() {
        let key = SigningKey::generate(&mut rand_core::OsRng);
        let signed = manifest().sign(&key).unwrap();
        let verified = SignedManifest::verify(signed.bytes(), signed.signature(), &key.verifying_key()).unwrap();
        assert_eq!(verified.manifest(), &manifest());

        let mut tampered = signed.bytes().to_vec();
        tampered[20] ^= 1;
        assert!(matches!(
            SignedManifest::verify(&tampered, signed.signature(), &key.verifying_key()),
            Err(ManifestError::BadSignature)
        ));
        let other = SigningKey::generate(&mut rand_core::OsRng);
        assert!(SignedManifest::verify(signed.bytes(), signed.signature(), &other.verifying_key()).is_err());
    }

    #[test]
    fn golden_manifest_carries_its_nonce_and_the_nonce_changes_the_digest() {
        let bytes = crate::to_canonical_vec(&manifest()).unwrap();
        let expected = concat!(
            r#"{"artefact":"art-1","case":"case-7","media_type":"video/webm","#,
            r#""nonce":"0909090909090909090909090909090909090909090909090909090909090909","#,
            r#""registered_at":"2026-11-29T08:00:00Z","registered_by":"acct-3","#,
            r#""sha256":"SHA","size":9,"type":"custodia.manifest/v2"}"#
        )
        .replace("SHA", &Sha256::of(b"statement").to_hex());
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), expected);
        let other = Manifest { nonce: Salt::from_bytes([10; 32]), ..manifest() };
        assert_ne!(Sha256::of(&crate::to_canonical_vec(&other).unwrap()), Sha256::of(&bytes));
        let without: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let mut without = without.as_object().unwrap().clone();
        without.remove("nonce");
        let without = crate::to_canonical_vec(&without).unwrap();
        assert!(crate::from_canonical_slice::<Manifest>(&without).is_err(), "a manifest without its nonce");
    }
}
