//! Court bundles and their offline verifier.
//!
//! A bundle is one file: a BagIt bag (RFC 8493) packed as a tar. It holds the artefact's bytes, its signed
//! manifest, every custody record about it with an offline inclusion proof, the log checkpoint those proofs are
//! against, the gateway's public key (C2SP vkey and PEM), and a human-readable certificate. The export itself is
//! the last custody record, so a bundle proves its own export.
//!
//! [`write`] lays a bundle out; [`verify`] checks one, streaming, with memory flat in the payload's size. A bag from a
//! gateway with a Time-Stamp Authority carries the log's RFC 3161 timestamp covering its records, checked under the
//! reader's [`TimeTrust`] (anchors, and ETSI TS 119 612 [`TrustedList`]s). This crate does no IO of its own (the
//! caller passes a reader or bytes in) and depends only on `custodia-core`, `custodia-witness`, `custodia-timestamp` and the
//! IO-free parts of `custodia-ledger`, so other programs can embed the verifier.

mod consistency;
mod layout;
mod printable;
mod report;
mod time;
mod trusted_list;
mod verification;
mod verify;
mod witnesses;
mod write;

pub use consistency::proof_file as consistency_proof_file;
pub use layout::{
    BundleRecord, BundleSource, BundleTimestamp, CaseListing, ExportScope, ListedBundle, ProviderChain, Witnessing,
    public_key_pem,
};
/// Where a bag keeps what, for readers that look inside one (a receiving gateway finding the payload).
pub mod layout_paths {
    pub use crate::layout::{CHECKPOINT, MANIFEST, MAX_PROVIDER_CHAIN_BYTES, PAYLOAD_DIR, PROVENANCE_DIR, VKEY};
}
pub use printable::printable;
pub use time::{MAX_CLOCK_SKEW_SECONDS, TimeTrust, TimeTrustError};
pub use trusted_list::{MAX_TRUSTED_LIST_BYTES, TrustedList, TrustedListError, TrustedService};
pub use verification::{Check, Part, Verdict, Verification, VerifyError, Witnessed};
pub use verify::{
    Limits, MAX_FILES, MAX_KEPT_BYTES, NESTED_FAILURES_KEPT, PROVIDER_CHAIN, PROVIDER_MANIFEST_FIELD, Pins, verify,
    verify_pinned, verify_with_payload_digest, verify_within,
};
pub use write::{BundleWriter, CaseBundleWriter, CaseRecord, ListedFile, padding};
