//! Custodia's domain core: identifiers, digests, custody records, signed manifests, case roles and use policies.
//!
//! This crate does no IO. Time, randomness and keys come in from the caller, so every rule here is a plain
//! function that tests drive deterministically. It must never depend on tokio, axum, object_store or any other
//! crate of ours.

mod canonical;
mod commitment;
mod digest;
mod error_chain;
mod id;
mod manifest;
mod policy;
mod record;
mod role;

pub use canonical::{CanonicalError, from_canonical_slice, to_canonical_vec};
pub use commitment::{COMMITMENT_DOMAIN, Commitment, Opening, OpeningError, Openings, Salt};
pub use digest::{DigestParseError, Sha256, Sha256Hasher};
pub use error_chain::ErrorChain;
pub use id::{ActorId, ArtefactId, CaseId, HearingId, IdError, Label, acts_on_display};
pub use manifest::{Manifest, ManifestError, ManifestSignature, SignedManifest};
pub use policy::{
    DenyReason, OnwardTransfer, Tlp, TransferConsent, UseAction, UseDecision, UsePolicy, UseRequest, UseWarning,
    WidenRequest, decide,
};
pub use record::{
    AccessKind, CustodyEvent, CustodyRecord, ExportFormat, MAX_RECORD_LEN, MembershipChange, RECORD_VERSION,
    RecordError, RefusalCode, Repeated,
};
pub use role::{Action, ParseNameError, Role, permits};
