//! The registry of partner gateways: for each, its name (the `keyid` of its requests' signatures), jurisdiction,
//! base URL, the verifier key of its log, the verifier key of its witness, and the Ed25519 key that signs its
//! requests. Read from a JSON file the operator keeps; every key in it is pinned: a request is checked against the
//! key named here and no other.
//!
//! ```json
//! {"partners": [{"name": "it-catania", "jurisdiction": "IT", "base_url": "https://custodia.giustizia.example",
//!   "log_vkey": "custodia.giustizia.example/log+…", "witness_vkey": "custodia.giustizia.example/witness+…",
//!   "request_key": "<base64 of the 32-byte Ed25519 public key>"}]}
//! ```

use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

/// The longest partner name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// Why a registry is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("the partner registry is not the JSON it should be")]
    Json(#[from] serde_json::Error),
    #[error("partner {0:?}: a name has 1 to 64 lowercase letters, digits, '.' or '-'")]
    Name(String),
    #[error("partner {0:?} is listed twice")]
    Duplicate(String),
    #[error("partner {name}: its base URL must be https:// (http:// only on a loopback address): {url}")]
    Url { name: String, url: String },
    #[error("partner {name}: its {field} is not {expected}")]
    Key { name: String, field: &'static str, expected: &'static str },
}

/// One partner gateway, as the registry pins it.
#[derive(Clone, PartialEq, Eq)]
pub struct Partner {
    pub name: String,
    pub jurisdiction: String,
    pub base_url: String,
    /// The verifier key of its log (a signed-note verifier key: `<name>+<hash>+<key>`).
    pub log_vkey: String,
    /// The verifier key of its witness.
    pub witness_vkey: String,
    /// The key that signs its requests to us.
    pub request_key: VerifyingKey,
}

impl std::fmt::Debug for Partner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partner").field("name", &self.name).field("jurisdiction", &self.jurisdiction).finish()
    }
}

/// A partner as a registry lists it: what a gateway publishes for its partners to pin, field for field the
/// registry file's entry (the request key in base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Card {
    /// Its name among its partners: the `keyid` of its requests' signatures.
    pub name: String,
    pub jurisdiction: String,
    pub base_url: String,
    pub log_vkey: String,
    pub witness_vkey: String,
    /// The base64 of the Ed25519 public key that signs its requests.
    pub request_key: String,
}

impl Card {
    /// `partner` as a registry lists it.
    pub fn of(partner: &Partner) -> Self {
        Self {
            name: partner.name.clone(),
            jurisdiction: partner.jurisdiction.clone(),
            base_url: partner.base_url.clone(),
            log_vkey: partner.log_vkey.clone(),
            witness_vkey: partner.witness_vkey.clone(),
            request_key: base64::engine::general_purpose::STANDARD.encode(partner.request_key.as_bytes()),
        }
    }
}

/// Every partner, by name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    partners: Vec<Partner>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    partners: Vec<PartnerEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartnerEntry {
    name: String,
    jurisdiction: String,
    base_url: String,
    log_vkey: String,
    witness_vkey: String,
    request_key: String,
}

impl Registry {
    /// Parses and checks a registry file's contents.
    pub fn parse(json: &str) -> Result<Self, RegistryError> {
        let file: RegistryFile = serde_json::from_str(json)?;
        let mut partners: Vec<Partner> = Vec::with_capacity(file.partners.len());
        for entry in file.partners {
            let name = entry.name;
            let valid_name = !name.is_empty()
                && name.len() <= MAX_NAME_BYTES
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
            if !valid_name {
                return Err(RegistryError::Name(name));
            }
            if partners.iter().any(|partner| partner.name == name) {
                return Err(RegistryError::Duplicate(name));
            }
            if !secure_url(&entry.base_url) {
                return Err(RegistryError::Url { name, url: entry.base_url });
            }
            // `<name>+<8 hex digits>+<base64>`: the base64 may hold '+' itself.
            let vkey_shaped = |vkey: &str| {
                let mut parts = vkey.splitn(3, '+');
                let (name, hash, key) = (parts.next(), parts.next(), parts.next());
                !vkey.contains(char::is_whitespace)
                    && name.is_some_and(|name| !name.is_empty())
                    && hash.is_some_and(|hash| hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
                    && key.is_some_and(|key| !key.is_empty())
            };
            for (field, vkey) in [("log_vkey", &entry.log_vkey), ("witness_vkey", &entry.witness_vkey)] {
                if !vkey_shaped(vkey) {
                    return Err(RegistryError::Key { name, field, expected: "a verifier key, <name>+<hash>+<key>" });
                }
            }
            let request_key = base64::engine::general_purpose::STANDARD
                .decode(entry.request_key.trim())
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok());
            let Some(request_key) = request_key else {
                return Err(RegistryError::Key {
                    name,
                    field: "request_key",
                    expected: "the base64 of a 32-byte Ed25519 public key",
                });
            };
            partners.push(Partner {
                name,
                jurisdiction: entry.jurisdiction,
                base_url: entry.base_url.trim_end_matches('/').to_owned(),
                log_vkey: entry.log_vkey,
                witness_vkey: entry.witness_vkey,
                request_key,
            });
        }
        Ok(Self { partners })
    }

    /// The partner named `name` (a signature's `keyid`).
    pub fn partner(&self, name: &str) -> Option<&Partner> {
        self.partners.iter().find(|partner| partner.name == name)
    }

    /// Every partner, in the file's order.
    pub fn partners(&self) -> &[Partner] {
        &self.partners
    }

    /// The registry as pinned, whatever the file's order and spacing: RFC 8785 canonical JSON of the partners'
    /// cards, by name. Two registries pin the same partners the same way exactly when these are equal.
    pub fn canonical(&self) -> String {
        let mut cards: Vec<Card> = self.partners.iter().map(Card::of).collect();
        cards.sort_by(|a, b| a.name.cmp(&b.name));
        let bytes = custodia_core::to_canonical_vec(&cards).unwrap_or_default();
        String::from_utf8(bytes).unwrap_or_default()
    }
}

/// `https://`, or `http://` to a loopback address (tests and a gateway's own machine).
fn secure_url(url: &str) -> bool {
    if url.starts_with("https://") {
        return url.len() > "https://".len();
    }
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host
        .rsplit_once(':')
        .map_or(host, |(host, port)| if port.bytes().all(|b| b.is_ascii_digit()) { host } else { "" });
    host == "localhost" || host == "[::1]" || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "JrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=";

    fn entry(name: &str, url: &str, key: &str) -> String {
        format!(
            r#"{{"name": "{name}", "jurisdiction": "IT", "base_url": "{url}",
                "log_vkey": "it.example/log+01234567+AQID", "witness_vkey": "it.example/witness+01234567+AQID",
                "request_key": "{key}"}}"#
        )
    }

    fn registry(entries: &[String]) -> Result<Registry, RegistryError> {
        Registry::parse(&format!(r#"{{"partners": [{}]}}"#, entries.join(",")))
    }

    #[test]
    fn a_registry_pins_each_partner_and_refuses_what_is_unsafe_or_ambiguous() {
        let parsed =
            registry(&[entry("it-catania", "https://it.example/", KEY), entry("tn", "http://127.0.0.1:8080", KEY)])
                .expect("valid");
        let partner = parsed.partner("it-catania").expect("listed");
        assert_eq!(partner.base_url, "https://it.example");
        assert_eq!(format!("{partner:?}"), r#"Partner { name: "it-catania", jurisdiction: "IT" }"#);
        assert!(parsed.partner("unknown").is_none());
        assert!(matches!(registry(&[entry("IT", "https://x", KEY)]), Err(RegistryError::Name(_))));
        let twice = [entry("it", "https://x", KEY), entry("it", "https://y", KEY)];
        assert!(matches!(registry(&twice), Err(RegistryError::Duplicate(_))));
        for url in ["http://it.example", "http://127.0.0.1.evil.example/", "ftp://x", "https://"] {
            assert!(matches!(registry(&[entry("it", url, KEY)]), Err(RegistryError::Url { .. })), "{url}");
        }
        assert!(matches!(registry(&[entry("it", "https://x", "AAAA")]), Err(RegistryError::Key { .. })));
        let bad_vkey = entry("it", "https://x", KEY).replace("it.example/log+01234567+AQID", "not a vkey");
        assert!(matches!(registry(&[bad_vkey]), Err(RegistryError::Key { field: "log_vkey", .. })));
        // A verifier key's base64 may itself hold '+'; its hash is eight hex digits.
        let plus =
            entry("it", "https://x", KEY).replace("it.example/witness+01234567+AQID", "w.example+0a1b2c3d+Ab+/c+==");
        assert!(registry(&[plus]).is_ok());
        let short_hash = entry("it", "https://x", KEY).replace("it.example/log+01234567+", "it.example/log+0123+");
        assert!(matches!(registry(&[short_hash]), Err(RegistryError::Key { field: "log_vkey", .. })));
        assert!(matches!(Registry::parse(r#"{"partners": [], "extra": 1}"#), Err(RegistryError::Json(_))));
    }
}
