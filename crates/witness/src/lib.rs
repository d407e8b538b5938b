//! The witness core: what a gateway needs to witness its partners' logs and to count their cosignatures on its own.
//!
//! Pure, like the ledger's formats: no IO, no clock, no storage. The caller reads the witness's last checkpoint of a
//! log, asks [`witness::decide`] what to do with a request, persists the new checkpoint atomically with the
//! old-size check (compare and swap), and only then answers with the cosignature.
//!
//! - [`cosignature`]: Ed25519 `cosignature/v1` keys (algorithm 0x04), signing and verifying (c2sp.org/tlog-cosignature).
//! - [`request`]: the `add-checkpoint` request body (c2sp.org/tlog-witness v1.0.0).
//! - [`witness`]: the decision on one request against the witness's state for that log.
//! - [`policy`]: which cosignatures count (c2sp.org/tlog-policy, and Sigsum's hex-key dialect).
//! - [`collector`]: the log's side: collecting witnesses' cosignatures on this gateway's own checkpoints, and
//!   deciding what to publish, as a state machine (events in, effects out).

pub mod collector;
pub mod cosignature;
pub mod policy;
pub mod request;
pub mod witness;

pub use cosignature::{Cosignature, CosignatureError, CosignerKey, CosignerVerifier};
pub use policy::{
    LineVerdict, LinesVerdict, MAX_CLOCK_AHEAD_SECONDS, Policy, PolicyError, PolicyVerdict, parse_log_list,
};
pub use request::{AddCheckpoint, MAX_PROOF_LINES, RequestError};
pub use witness::{Decision, Known, Refusal, decide};
