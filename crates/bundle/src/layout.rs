//! What goes into a bundle, and where.

use custodia_core::{ArtefactId, CaseId, ManifestSignature, Sha256};

/// The top-level directory of the bag inside the tar.
pub fn bag_dir(artefact: &ArtefactId) -> String {
    format!("custodia-bundle-{artefact}")
}

pub const PAYLOAD_DIR: &str = "data/payload/";
pub const MANIFEST: &str = "data/manifest.json";
pub const MANIFEST_SIGNATURE: &str = "data/manifest.sig";
pub const CHECKPOINT: &str = "data/checkpoint";
pub const VKEY: &str = "data/keys/gateway.vkey";
pub const PUBLIC_KEY_PEM: &str = "data/keys/gateway.pub.pem";
pub const REPORT: &str = "data/REPORT.txt";
pub const CUSTODY_DIR: &str = "data/custody/";
/// In a case bundle, one artefact bundle per file.
pub const BUNDLES_DIR: &str = "data/bundles/";

/// The top-level directory of a case bundle's bag.
pub fn case_bag_dir(case: &CaseId) -> String {
    format!("custodia-case-{case}")
}

pub fn inner_bundle_path(artefact: &ArtefactId) -> String {
    format!("{BUNDLES_DIR}{artefact}.tar")
}

/// A custody record's entry and proof file names: zero-padded ledger index, so they sort in ledger order.
pub fn record_paths(index: u64) -> (String, String) {
    (format!("{CUSTODY_DIR}{index:012}.json"), format!("{CUSTODY_DIR}{index:012}.proof"))
}

/// The openings of a custody record's commitments (canonical JSON), beside its entry and proof.
pub fn opening_path(index: u64) -> String {
    format!("{CUSTODY_DIR}{index:012}.opening.json")
}

/// One custody record: its exact ledger entry bytes, its c2sp.org/tlog-proof@v1 file, and the canonical openings
/// of its commitments (what the court may read: the case, the purpose, and every other committed field).
#[derive(Clone)]
pub struct BundleRecord {
    pub index: u64,
    pub entry: Vec<u8>,
    pub proof: Vec<u8>,
    pub openings: Vec<u8>,
}

impl std::fmt::Debug for BundleRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleRecord").field("index", &self.index).finish_non_exhaustive()
    }
}

/// Everything a bundle holds except the payload's bytes, which are streamed in by the caller.
#[derive(Debug, Clone)]
pub struct BundleSource {
    pub artefact: ArtefactId,
    pub payload_sha256: Sha256,
    pub payload_size: u64,
    pub manifest: Vec<u8>,
    pub manifest_signature: ManifestSignature,
    /// Every custody record about the artefact, in ledger order, the export record last.
    pub records: Vec<BundleRecord>,
    /// The signed checkpoint every proof is against, with any cosignatures.
    pub checkpoint: Vec<u8>,
    /// The gateway's key in C2SP verifier-key form.
    pub vkey: String,
    /// When the bag was made (RFC 3339), for bag-info.txt.
    pub bagged_at: String,
}

/// The payload's path in the bag.
pub fn payload_path(artefact: &ArtefactId) -> String {
    format!("{PAYLOAD_DIR}{artefact}")
}

/// An Ed25519 public key as a PEM SubjectPublicKeyInfo, which `openssl pkeyutl -verify -pubin` reads.
pub fn public_key_pem(key: &ed25519_dalek::VerifyingKey) -> String {
    use base64::Engine as _;
    // The fixed DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), followed by the 32-byte key.
    const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
    let der: Vec<u8> = SPKI_PREFIX.iter().chain(key.as_bytes()).copied().collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}
