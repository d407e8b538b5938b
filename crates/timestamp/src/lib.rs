//! RFC 3161 trusted timestamps, no IO: the request a gateway sends to a Time-Stamp Authority, and a full verifier for
//! the token it answers with.
//!
//! Pure, like the ledger's formats: no network, no clock, no files. The caller passes in the bytes to timestamp, a
//! random source for the nonce, the authority's answer and the trust anchors it has configured.
//!
//! - [`request`]: a `TimeStampReq` (SHA-256 imprint, random nonce, `certReq` true, optional policy).
//! - [`token_from_response`]: the token in a granted `TimeStampResp`.
//! - [`verify`]: the token: imprint, nonce, policy, the CMS signature (RSA PKCS#1 v1.5, ECDSA
//!   P-256 and P-384), the signing certificate named by ESSCertIDv2 or ESSCertID, the critical timeStamping-only
//!   extended key usage, and the chain to a trust anchor, valid at the token's genTime.
//! - [`entry`]: a token in the custody log, bound to the checkpoint it stamps.
//! - [`schedule`]: when to ask for the next timestamp.
//! - [`TimestampError`]: exactly what failed.
//!
//! Built on RustCrypto's `x509-tsp` (the TSP types), `cms`, `x509-cert` and `der`, with its `rsa`, `p256` and `p384`.

pub mod entry;
mod error;
mod ess;
pub mod request;
mod response;
pub mod schedule;
mod signature;
mod tst_info;
pub mod verify;

pub use der::DateTime;
pub use der::asn1::ObjectIdentifier;
pub use entry::{CheckpointTimestamp, EntryError};
pub use error::TimestampError;
pub use request::TimestampRequest;
pub use response::token_from_response;
pub use verify::{Expectation, TokenClaims, TrustAnchors, VerifiedToken, read_token_claims, verify_token};
