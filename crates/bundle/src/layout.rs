//! What goes into a bundle, and where.

use custodia_core::{ArtefactId, CaseId, HearingId, ManifestSignature, Sha256};
use serde::{Deserialize, Serialize};

use crate::printable::echoed;
use crate::verification::VerifyError;

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
/// In a case bundle, one artefact bundle per directory, unpacked: `data/bundles/<artefact>/` holds its bag's
/// files.
pub const BUNDLES_DIR: &str = "data/bundles/";
/// In the bag of an artefact received from a partner gateway, the provider's bag as it was sent, all but its
/// payload (which is this bag's payload, byte for byte): see [`ProviderChain`].
pub const PROVENANCE_DIR: &str = "data/provenance/";
/// The most bytes of a provider's chain (its bag without the payload): far more than any artefact's records need.
pub const MAX_PROVIDER_CHAIN_BYTES: u64 = 8 << 20;

/// In a case bundle, the listing of every artefact bundle in the export, which the case export record commits to.
pub const CASE_LISTING: &str = "data/case-listing.json";

/// Bundle format 2 adds witnessing (c2sp.org/tlog-cosignature): a bag from a gateway with a witness policy holds
/// the policy, and `data/checkpoint` carries the witnesses' cosignature lines. If no cosigned checkpoint covered the
/// records when the bag was made, `data/checkpoint` is the log's own, and the newest cosigned checkpoint is
/// [`WITNESSED_CHECKPOINT`] with [`WITNESS_CONSISTENCY`], the consistency proof from it to `data/checkpoint`:
/// records below its size are witnessed, later ones are not yet. A bag without these files is format 1, and reads
/// as it always did.
pub const WITNESS_POLICY: &str = "data/witness/policy.txt";
/// An older cosigned checkpoint than `data/checkpoint`, when none covered every record.
pub const WITNESSED_CHECKPOINT: &str = "data/witness/checkpoint";
/// The consistency proof from [`WITNESSED_CHECKPOINT`] to `data/checkpoint`: one base64 hash a line.
pub const WITNESS_CONSISTENCY: &str = "data/witness/consistency.proof";
/// The witnessing files a bag of either kind may hold.
pub const WITNESS_FILES: [&str; 3] = [WITNESS_POLICY, WITNESSED_CHECKPOINT, WITNESS_CONSISTENCY];

/// Trusted time (RFC 3161): a bag from a gateway with a Time-Stamp Authority carries the newest `checkpoint_timestamp`
/// entry of the log whose stamped checkpoint covers the artefact's registration and is a prefix of `data/checkpoint`:
/// the entry byte for byte as in the log, its inclusion proof against `data/checkpoint`
/// (c2sp.org/tlog-proof@v1, which names the entry's index), and the consistency proof from the stamped checkpoint to
/// `data/checkpoint`. Records below the stamped size existed no later than the token's genTime. A bag without these
/// files had no token covering its records.
pub const TIMESTAMP_ENTRY: &str = "data/timestamp/entry.json";
/// The timestamp entry's inclusion proof against `data/checkpoint` (c2sp.org/tlog-proof@v1).
pub const TIMESTAMP_PROOF: &str = "data/timestamp/entry.proof";
/// The consistency proof from the stamped checkpoint to `data/checkpoint`: one base64 hash a line.
pub const TIMESTAMP_CONSISTENCY: &str = "data/timestamp/consistency.proof";
/// The trusted-time files an artefact bag may hold, all or none.
pub const TIMESTAMP_FILES: [&str; 3] = [TIMESTAMP_ENTRY, TIMESTAMP_PROOF, TIMESTAMP_CONSISTENCY];

/// A timestamp entry of the log as a bag carries it, in `data/timestamp/`.
#[derive(Clone, PartialEq, Eq)]
pub struct BundleTimestamp {
    /// The `checkpoint_timestamp` entry, byte for byte as in the log.
    pub entry: Vec<u8>,
    /// Its c2sp.org/tlog-proof@v1 against the bag's checkpoint.
    pub proof: Vec<u8>,
    /// The consistency proof from the stamped checkpoint to the bag's checkpoint
    /// ([`crate::consistency_proof_file`]).
    pub consistency: Vec<u8>,
}

impl std::fmt::Debug for BundleTimestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleTimestamp").field("entry_len", &self.entry.len()).finish_non_exhaustive()
    }
}

impl BundleTimestamp {
    /// The files this adds to a bag.
    pub fn files(&self) -> Vec<(String, Vec<u8>)> {
        vec![
            (TIMESTAMP_ENTRY.to_owned(), self.entry.clone()),
            (TIMESTAMP_PROOF.to_owned(), self.proof.clone()),
            (TIMESTAMP_CONSISTENCY.to_owned(), self.consistency.clone()),
        ]
    }
}

/// What a bag from a gateway with a witness policy carries besides its cosigned checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witnessing {
    /// The gateway's witness policy file (c2sp.org/tlog-policy), verbatim.
    pub policy: Vec<u8>,
    /// When no cosigned checkpoint covers every record: the newest cosigned one, and the consistency proof from
    /// it to the bag's checkpoint (one base64 hash a line). `None` when the bag's checkpoint carries the
    /// cosignatures itself, or when nothing was cosigned yet.
    pub older: Option<(Vec<u8>, Vec<u8>)>,
}

impl Witnessing {
    /// The files this adds to a bag.
    pub fn files(&self) -> Vec<(String, Vec<u8>)> {
        let mut files = vec![(WITNESS_POLICY.to_owned(), self.policy.clone())];
        if let Some((note, proof)) = &self.older {
            files.push((WITNESSED_CHECKPOINT.to_owned(), note.clone()));
            files.push((WITNESS_CONSISTENCY.to_owned(), proof.clone()));
        }
        files
    }
}

/// The top-level directory of a case bundle's bag.
pub fn case_bag_dir(case: &CaseId) -> String {
    format!("custodia-case-{case}")
}

/// Where an artefact's bundle lies in a case bag: the directory of its bag's files, with a trailing `/`.
pub fn inner_bundle_dir(artefact: &ArtefactId) -> String {
    format!("{BUNDLES_DIR}{artefact}/")
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
    /// The witness policy and what else witnessing adds, from a gateway that has a witness policy.
    pub witnessing: Option<Witnessing>,
    /// The newest timestamp of the log that covers the records, from a gateway with a Time-Stamp Authority.
    pub timestamp: Option<BundleTimestamp>,
    /// Of an artefact received from a partner gateway: the provider's chain, kept in [`PROVENANCE_DIR`].
    pub provider_chain: Option<ProviderChain>,
}

/// The custody chain a partner gateway sent with an artefact: its court bundle's files but the payload (tag files,
/// signed manifest, custody records with proofs and openings, checkpoint, keys, certificate), each path relative to
/// that bag's directory. In the receiving gateway's bag they lie under [`PROVENANCE_DIR`]; with this bag's payload
/// copied to the provider's payload path they are the provider's bag again, checkable with the provider's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderChain {
    pub files: Vec<(String, Vec<u8>)>,
    /// The size its payload's tar header gives (read from a head; not written).
    pub payload_size: u64,
}

impl ProviderChain {
    /// Reads a provider's chain from the head of its bundle (the tar bytes up to and including the payload's
    /// header, as [`crate::BundleWriter::head`] writes them): its regular files in order, each within one bag
    /// directory, the payload's header last and nothing after it.
    pub fn from_head(head: &[u8]) -> Result<Self, VerifyError> {
        use std::io::Read as _;
        let malformed = |what: String| VerifyError::Malformed(format!("a provider's chain: {what}"));
        if head.len() as u64 > MAX_PROVIDER_CHAIN_BYTES {
            return Err(malformed(format!("{} bytes, over {MAX_PROVIDER_CHAIN_BYTES}", head.len())));
        }
        let mut archive = tar::Archive::new(head);
        let mut files = Vec::new();
        let mut top: Option<String> = None;
        for entry in archive.entries().map_err(VerifyError::Io)? {
            let mut entry = entry.map_err(VerifyError::Io)?;
            if !entry.header().entry_type().is_file() {
                return Err(malformed("an entry that is not a regular file".into()));
            }
            let path = String::from_utf8(entry.path_bytes().into_owned()).map_err(|_| malformed("a path".into()))?;
            let Some((dir, relative)) = path.split_once('/') else {
                return Err(malformed(format!("{} is outside its bag directory", echoed(&path))));
            };
            let hostile = |part: &str| part.is_empty() || part == "." || part == "..";
            if hostile(dir) || relative.split('/').any(hostile) || top.get_or_insert_with(|| dir.to_owned()) != dir {
                return Err(malformed(format!("the path {}", echoed(&path))));
            }
            if relative.starts_with(PAYLOAD_DIR) {
                // The payload's header ends the head: its bytes are the transfer's payload.
                if entry.raw_file_position() != head.len() as u64 {
                    return Err(malformed("bytes after the payload's header".into()));
                }
                return Ok(Self { files, payload_size: entry.size() });
            }
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(VerifyError::Io)?;
            files.push((relative.to_owned(), bytes));
        }
        Err(malformed("no payload header at its end".into()))
    }
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

/// bag-info.txt's labels, each written once, in this order; `Custodia-Scope` in case bags only.
pub const BAG_INFO_LABELS: [&str; 7] = [
    "Source-Organization",
    "Bagging-Date",
    "Payload-Oxum",
    "External-Identifier",
    "External-Description",
    "Custodia-Scope",
    "Bag-Software-Agent",
];

/// bag-info.txt's `Source-Organization` for a gateway whose log is `origin`.
pub fn source_organization(origin: &str) -> String {
    format!("Custodia gateway {origin}")
}

/// bag-info.txt's `External-Description` of an artefact bundle.
pub fn artefact_description(artefact: &ArtefactId) -> String {
    format!("Court bundle of artefact {artefact}, with its custody history and proofs")
}

/// bag-info.txt's `External-Description` of a case bundle, which says its scope.
pub fn case_description(case: &CaseId, scope: &ExportScope) -> String {
    match scope {
        ExportScope::Case => format!("Court bundle of case {case}: one bundle per artefact"),
        ExportScope::Hearing { hearing } => format!(
            "Court bundle of hearing {hearing} of case {case} only, not the whole case: one bundle per artefact of \
             the hearing's output"
        ),
    }
}

/// The version of [`CaseListing`] this build writes and reads: 2 names the export's [`ExportScope`]; 3 holds each
/// artefact bundle unpacked, committed to by its tag manifest's digest.
pub const CASE_LISTING_VERSION: u32 = 3;

/// What part of a case an export holds: the whole case, or one hearing's output only (its recording segments,
/// its signed minutes and the identity-check documents they name), by the hearing's id. It is in the listing, in
/// bag-info.txt (`Custodia-Scope`) and in the certificate, and the case export record commits to the hearing's id,
/// so a hearing's bundle cannot pass for the whole case, nor the reverse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExportScope {
    Case,
    Hearing { hearing: HearingId },
}

impl ExportScope {
    /// The hearing whose output the export holds, if it is one hearing's.
    pub fn hearing(&self) -> Option<&HearingId> {
        match self {
            Self::Case => None,
            Self::Hearing { hearing } => Some(hearing),
        }
    }

    /// `Custodia-Scope` in bag-info.txt: `case`, or `hearing <id>`.
    pub fn tag(&self) -> String {
        match self {
            Self::Case => "case".to_owned(),
            Self::Hearing { hearing } => format!("hearing {hearing}"),
        }
    }

    /// The scope in words, for the certificate and the verifiers' reports.
    pub fn describe(&self, case: &CaseId) -> String {
        match self {
            Self::Case => format!("the whole case {case}"),
            Self::Hearing { hearing } => format!("hearing {hearing} of case {case} only, not the whole case"),
        }
    }
}

/// What a case export holds: every artefact bundle, by the SHA-256 of its bag's `tagmanifest-sha256.txt` (which
/// fixes its other tag files, and through `manifest-sha256.txt` every file of its bag, payload included) and the
/// bytes of all its files, as written into the case bundle. It is RFC 8785 canonical JSON at `data/case-listing.json`; the case export custody record carries
/// its SHA-256 and the number of bundles, so it is fixed in the public log without being published. The salt (32
/// random bytes, hex) makes that digest reveal nothing, even to someone who could guess every other field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseListing {
    pub v: u32,
    pub case: CaseId,
    pub scope: ExportScope,
    pub salt: String,
    pub bundles: Vec<ListedBundle>,
}

/// One artefact bundle of a case export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListedBundle {
    pub artefact: ArtefactId,
    /// SHA-256 of the artefact bag's `tagmanifest-sha256.txt`, as it is in the case bundle.
    pub sha256: Sha256,
    /// The bytes of all the bag's files, payload included.
    pub size: u64,
}

impl CaseListing {
    pub fn new(case: CaseId, scope: ExportScope, salt: [u8; 32], bundles: Vec<ListedBundle>) -> Self {
        let salt = salt.iter().map(|b| format!("{b:02x}")).collect();
        Self { v: CASE_LISTING_VERSION, case, scope, salt, bundles }
    }

    /// The canonical bytes that go into the bundle and whose digest goes into the record.
    pub fn to_bytes(&self) -> Result<Vec<u8>, custodia_core::CanonicalError> {
        custodia_core::to_canonical_vec(self)
    }

    /// Reads a listing, refusing anything that is not exactly what [`Self::to_bytes`] writes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let listing: Self = custodia_core::from_canonical_slice(bytes).map_err(|err| err.to_string())?;
        if listing.v != CASE_LISTING_VERSION {
            return Err(format!("listing version {} is not {CASE_LISTING_VERSION}", listing.v));
        }
        if listing.salt.len() != 64 || !listing.salt.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err("the salt is not 32 bytes of lowercase hex".into());
        }
        Ok(listing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing() -> CaseListing {
        let bundle = ListedBundle { artefact: ArtefactId::new("art-1").unwrap(), sha256: Sha256::of(b"b"), size: 2048 };
        CaseListing::new(CaseId::new("case-7").unwrap(), ExportScope::Case, [7; 32], vec![bundle])
    }

    #[test]
    fn a_listing_reads_back_only_in_its_one_canonical_form() {
        let bytes = listing().to_bytes().unwrap();
        assert_eq!(CaseListing::from_bytes(&bytes).unwrap(), listing());
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with(r#"{"bundles":[{"artefact":"art-1","sha256":""#), "{text}");
        assert!(CaseListing::from_bytes(text.replacen(':', ": ", 1).as_bytes()).is_err());
        assert!(CaseListing::from_bytes(text.replace(r#""v":3"#, r#""v":2"#).as_bytes()).is_err());
        assert!(text.contains(r#""scope":{"kind":"case"},"v":3}"#), "{text}");
        let hearing = ExportScope::Hearing { hearing: HearingId::new("h-9").unwrap() };
        let of_hearing = CaseListing { scope: hearing.clone(), ..listing() };
        let bytes = of_hearing.to_bytes().unwrap();
        assert!(String::from_utf8_lossy(&bytes).contains(r#""scope":{"hearing":"h-9","kind":"hearing"}"#));
        assert_eq!(CaseListing::from_bytes(&bytes).unwrap().scope, hearing);
        assert!(CaseListing::from_bytes(text.replace(r#""kind":"case""#, r#""kind":"all""#).as_bytes()).is_err());
        assert!(CaseListing::from_bytes(text.replace("0707", "0G07").as_bytes()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = CaseListing::from_bytes(&bytes);
        }
    }
}
