//! Identifiers the gateway makes: random, opaque, with a prefix that says what they name.

use custodia_core::ArtefactId;

/// A random opaque identifier with a readable prefix.
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    format!("{prefix}-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

pub fn new_artefact_id() -> ArtefactId {
    ArtefactId::new(new_id("art")).unwrap_or_else(|_| unreachable!("generated ids are well-formed"))
}
