//! Partner gateways, no IO. Each jurisdiction runs its own gateway; requests from one to another are signed with
//! HTTP Message Signatures (RFC 9421, Ed25519: [`signature`]) over the method, the path, the body's
//! `Content-Digest` (RFC 9530: [`digest`]) and the date, with a nonce accepted once ([`replay`]), and checked
//! against the keys that the [`registry`] pins for the partner the signature names. Nothing here reads a clock,
//! the network or a file: the server does, and asks. A transfer's receipts are the [`evidence`] ladder; what travels, and the checks
//! of it, are in [`transfer`].

pub mod digest;
pub mod evidence;
pub mod pinned;
pub mod registry;
pub mod replay;
pub mod request;
pub mod signature;
pub mod transfer;

pub use registry::{Card, Partner, Registry, RegistryError};

/// A structured-field dictionary serialized (RFC 9651 section 4.1); an empty one is never serialized here.
fn serialized(dictionary: &sfv::Dictionary) -> String {
    use sfv::FieldType as _;
    dictionary.serialize().unwrap_or_default()
}
