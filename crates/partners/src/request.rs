//! A whole request between partner gateways, no IO: [`sign`] gives the headers a sender adds, and [`authenticate`]
//! is every check a receiver makes before it reads the body, in one order: the headers are there, the body matches
//! its `Content-Digest`, the signature is of this profile and names a partner the registry pins, it verifies with
//! that partner's key and was made within [`MAX_AGE_SECONDS`], the `Date` is within that too, and the nonce was
//! never seen in that time. The replay window is consulted last, so that a forged or stale request never takes
//! one of its places.

use custodia_core::Sha256;
use ed25519_dalek::SigningKey;

use crate::digest::{DigestError, content_digest};
use crate::registry::{Partner, Registry};
use crate::replay::{ReplayError, ReplayWindow};
use crate::signature::{self, MAX_AGE_SECONDS, RequestParts, SignatureError, SignatureParams};

/// The headers of a signed request, as received (absent ones `None`).
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub method: &'a str,
    /// The request target's path, without the query.
    pub path: &'a str,
    pub content_digest: Option<&'a str>,
    pub date: Option<&'a str>,
    pub signature_input: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Why a request from a partner is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    #[error("the request has no {0} header; requests between gateways are signed (RFC 9421)")]
    Missing(&'static str),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("the signature names {0:?}, which is not a partner of this gateway")]
    UnknownPartner(String),
    #[error(transparent)]
    Replay(#[from] ReplayError),
}

impl Refused {
    /// A short name of the kind of refusal, for operators' logs and counters (never the request's text).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Missing(_) => "unsigned",
            Self::Digest(_) => "digest",
            Self::Signature(SignatureError::Stale { .. } | SignatureError::StaleDate { .. }) => "stale",
            Self::Signature(SignatureError::Forged(_)) => "forged",
            Self::Signature(_) => "malformed",
            Self::UnknownPartner(_) => "unknown-partner",
            Self::Replay(ReplayError::Replayed(_)) => "replayed",
            Self::Replay(_) => "window-full",
        }
    }
}

/// Checks a request whose body has the SHA-256 `body_sha256`, at `now` (Unix seconds); the partner that sent it.
pub fn authenticate<'r>(
    registry: &'r Registry,
    replay: &mut ReplayWindow,
    request: &Presented<'_>,
    body_sha256: &Sha256,
    now: i64,
) -> Result<&'r Partner, Refused> {
    let content_digest = request.content_digest.ok_or(Refused::Missing("Content-Digest"))?;
    request.date.ok_or(Refused::Missing("Date"))?;
    request.signature_input.ok_or(Refused::Missing("Signature-Input"))?;
    request.signature.ok_or(Refused::Missing("Signature"))?;
    crate::digest::check(content_digest, body_sha256)?;
    let (partner, signature) = signed_by(registry, request, now)?;
    replay.accept(&partner.name, &signature.params.nonce, signature.params.created, now)?;
    Ok(partner)
}

/// The checks of [`authenticate`] that need no body: the headers are there, and the signature (which covers the
/// `Content-Digest` header, not the body) names a pinned partner, verifies with its key, and was made, like the
/// `Date`, within [`MAX_AGE_SECONDS`] of `now`. A receiver asks this before it reads a large body, so that only a
/// partner can make it hold one; [`authenticate`] still decides, with the body.
pub fn check_headers<'r>(registry: &'r Registry, request: &Presented<'_>, now: i64) -> Result<&'r Partner, Refused> {
    signed_by(registry, request, now).map(|(partner, _)| partner)
}

fn signed_by<'r>(
    registry: &'r Registry,
    request: &Presented<'_>,
    now: i64,
) -> Result<(&'r Partner, signature::PresentedSignature), Refused> {
    let content_digest = request.content_digest.ok_or(Refused::Missing("Content-Digest"))?;
    let date = request.date.ok_or(Refused::Missing("Date"))?;
    let input = request.signature_input.ok_or(Refused::Missing("Signature-Input"))?;
    let presented = request.signature.ok_or(Refused::Missing("Signature"))?;
    let signature = signature::parse(input, presented)?;
    let keyid = &signature.params.keyid;
    let partner = registry.partner(keyid).ok_or_else(|| Refused::UnknownPartner(keyid.clone()))?;
    let parts = RequestParts { method: request.method, path: request.path, content_digest, date };
    signature.verify(&parts, &partner.request_key, now)?;
    signature::check_date(date, now)?;
    Ok((partner, signature))
}

/// The headers a request from `keyid` (this gateway's name among its partners) adds, signed with `key` at `now`
/// with `nonce` ([`signature::new_nonce`]): `Date`, `Content-Digest`, `Signature-Input` and `Signature`.
pub fn sign(
    method: &str,
    path: &str,
    body_sha256: &Sha256,
    key: &SigningKey,
    keyid: &str,
    nonce: String,
    now: i64,
) -> [(&'static str, String); 4] {
    let date = signature::http_date(now);
    let content_digest = content_digest(body_sha256);
    let parts = RequestParts { method, path, content_digest: &content_digest, date: &date };
    let params = SignatureParams { created: now, keyid: keyid.to_owned(), nonce };
    let headers = signature::sign(&parts, key, &params);
    [
        ("date", date),
        ("content-digest", content_digest),
        ("signature-input", headers.input),
        ("signature", headers.signature),
    ]
}

/// How many nonces a receiver remembers at most: at [`MAX_AGE_SECONDS`], room for about 30 signed requests a
/// second from all partners together, far beyond what transfers and their receipts need.
pub const REPLAY_WINDOW_NONCES: usize = 30 * MAX_AGE_SECONDS as usize;

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    const NOW: i64 = 1_796_000_000;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn registry() -> Registry {
        let key = base64::engine::general_purpose::STANDARD.encode(key(1).verifying_key().as_bytes());
        Registry::parse(&format!(
            r#"{{"partners": [{{"name": "tn-tunis", "jurisdiction": "TN", "base_url": "http://127.0.0.1:9001",
              "log_vkey": "tn.example/log+01234567+AAAA", "witness_vkey": "tn.example/witness+01234567+AAAA",
              "request_key": "{key}"}}]}}"#
        ))
        .expect("a registry")
    }

    fn presented<'a>(headers: &'a [(&'static str, String); 4], path: &'a str) -> Presented<'a> {
        let get = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, value)| value.as_str());
        Presented {
            method: "POST",
            path,
            content_digest: get("content-digest"),
            date: get("date"),
            signature_input: get("signature-input"),
            signature: get("signature"),
        }
    }

    #[test]
    fn a_signed_request_passes_once_and_every_change_is_refused() {
        let registry = registry();
        let mut replay = ReplayWindow::new(REPLAY_WINDOW_NONCES);
        let body = Sha256::of(b"{\"hello\":\"partner\"}");
        let headers = sign("POST", "/partner/v1/handshake", &body, &key(1), "tn-tunis", "n-1".into(), NOW);
        let request = presented(&headers, "/partner/v1/handshake");
        let partner = authenticate(&registry, &mut replay, &request, &body, NOW + 2).expect("accepted");
        assert_eq!(partner.name, "tn-tunis");
        let again = authenticate(&registry, &mut replay, &request, &body, NOW + 3).unwrap_err();
        assert_eq!(again.kind(), "replayed");

        let fresh = |nonce: &str| sign("POST", "/partner/v1/handshake", &body, &key(1), "tn-tunis", nonce.into(), NOW);
        let other_body = Sha256::of(b"{\"hello\":\"someone else\"}");
        let headers = fresh("n-2");
        let refused =
            authenticate(&registry, &mut replay, &presented(&headers, "/partner/v1/handshake"), &other_body, NOW);
        assert_eq!(refused.unwrap_err().kind(), "digest");
        let refused = authenticate(&registry, &mut replay, &presented(&headers, "/partner/v1/other"), &body, NOW);
        assert_eq!(refused.unwrap_err().kind(), "forged", "another path");
        let refused =
            authenticate(&registry, &mut replay, &presented(&headers, "/partner/v1/handshake"), &body, NOW + 301);
        assert_eq!(refused.unwrap_err().kind(), "stale");
        let forged = sign("POST", "/partner/v1/handshake", &body, &key(2), "tn-tunis", "n-3".into(), NOW);
        let refused = authenticate(&registry, &mut replay, &presented(&forged, "/partner/v1/handshake"), &body, NOW);
        assert_eq!(refused.unwrap_err().kind(), "forged", "another key");
        let stranger = sign("POST", "/partner/v1/handshake", &body, &key(1), "xx-nowhere", "n-4".into(), NOW);
        let refused = authenticate(&registry, &mut replay, &presented(&stranger, "/partner/v1/handshake"), &body, NOW);
        assert!(matches!(refused.unwrap_err(), Refused::UnknownPartner(name) if name == "xx-nowhere"));
        let mut unsigned = presented(&headers, "/partner/v1/handshake");
        unsigned.signature = None;
        let refused = authenticate(&registry, &mut replay, &unsigned, &body, NOW);
        assert!(matches!(refused.unwrap_err(), Refused::Missing("Signature")));
        assert_eq!(replay.len(), 1, "only the accepted request took a place in the window");
        // The untouched request with a fresh nonce still passes.
        assert!(
            authenticate(&registry, &mut replay, &presented(&headers, "/partner/v1/handshake"), &body, NOW).is_ok()
        );
    }
}
