//! HTTP Message Signatures (RFC 9421) on requests between partner gateways, in one profile: Ed25519 (`alg="ed25519"`),
//! the label [`LABEL`], covering [`COVERED`] (the method, the path, the body's `content-digest` and the `date`),
//! with `created`, `keyid` (the sending partner's name) and a `nonce` as parameters.
//!
//! The signature base is built as RFC 9421 section 2.5 says: one line per covered component, `"name": value`, in
//! the order the `Signature-Input` lists them, then `"@signature-params": ` and the serialized inner list of the
//! components with their parameters. A verifier rebuilds that serialization from the parsed header (RFC 9651
//! structured fields, with the `sfv` crate), never from the raw text, so that a header re-spaced in transit still
//! verifies and one with anything else changed does not. Nothing here reads a clock: the caller says what time it
//! is.

use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sfv::{BareItem, Dictionary, InnerList, Item, Key, ListEntry, Parameters, Parser};

/// The signature's label in `Signature-Input` and `Signature`.
pub const LABEL: &str = "custodia";
/// The components every signature covers, in this order when we sign.
pub const COVERED: [&str; 4] = ["@method", "@path", "content-digest", "date"];
/// The only algorithm accepted.
pub const ALGORITHM: &str = "ed25519";
/// How old a signature may be (its `created`), and how far in the future, in seconds: clocks of partner gateways
/// differ a little, and a request is never held longer.
pub const MAX_AGE_SECONDS: i64 = 300;
/// The longest nonce accepted, in characters.
pub const MAX_NONCE_CHARS: usize = 64;

/// What a signature covers of one request.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// The method, as sent (`POST`).
    pub method: &'a str,
    /// The request target's path, without the query.
    pub path: &'a str,
    /// The `Content-Digest` header's value ([`crate::digest`]).
    pub content_digest: &'a str,
    /// The `Date` header's value.
    pub date: &'a str,
}

/// The two header values that carry a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeaders {
    /// The value of `Signature-Input`.
    pub input: String,
    /// The value of `Signature`.
    pub signature: String,
}

/// A signature's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureParams {
    /// Unix seconds when it was made.
    pub created: i64,
    /// Who made it: the sending partner's name in the registry.
    pub keyid: String,
    /// A value used once, against replay ([`crate::replay`]).
    pub nonce: String,
}

/// A signature as a request presented it, parsed, before it is checked.
#[derive(Debug, Clone)]
pub struct PresentedSignature {
    /// The components, in the order the signer listed them.
    pub covered: Vec<String>,
    pub params: SignatureParams,
    /// The `@signature-params` line's value, serialized from the parsed header.
    params_value: String,
    signature: ed25519_dalek::Signature,
}

/// Why a request's signature is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    #[error("the request carries no signature labelled {LABEL:?}")]
    Missing,
    #[error("the signature headers are not structured fields as RFC 9421 says: {0}")]
    Malformed(String),
    /// A header that does not parse as an RFC 9651 dictionary.
    #[error("the signature headers are not structured fields as RFC 9421 says: {0}")]
    NotStructured(#[source] sfv::Error),
    #[error(
        "the signature headers are not structured fields as RFC 9421 says: the Date header is not an HTTP date: {0}"
    )]
    BadDate(#[source] jiff::Error),
    #[error("the signature does not cover {0}, which every request between gateways must")]
    NotCovered(&'static str),
    #[error("the signature covers {0}, which this profile does not sign")]
    Uncovered(String),
    #[error("the signature's algorithm is {0:?}, not ed25519")]
    Algorithm(String),
    #[error("the signature was made at {created}, more than {MAX_AGE_SECONDS} s from now ({now})")]
    Stale { created: i64, now: i64 },
    #[error("the request's Date ({date}) is more than {MAX_AGE_SECONDS} s from now ({now})")]
    StaleDate { date: i64, now: i64 },
    #[error("the signature does not verify with the key pinned for {0}")]
    Forged(String),
}

/// Signs `request` as `keyid` with `key`, at `created` (Unix seconds), with `nonce`.
pub fn sign(request: &RequestParts<'_>, key: &SigningKey, params: &SignatureParams) -> SignatureHeaders {
    let inner = inner_list(&COVERED.map(str::to_owned), params);
    let params_value = serialize_inner_list(&inner);
    let base = signature_base(&COVERED.map(str::to_owned), |name| request.component(name), &params_value)
        .unwrap_or_else(|_| unreachable!("our own components are the profile's"));
    let signature = key.sign(base.as_bytes());
    let mut signature_dictionary = Dictionary::new();
    signature_dictionary.insert(label(), Item::new(BareItem::ByteSequence(signature.to_bytes().to_vec())).into());
    let mut input_dictionary = Dictionary::new();
    input_dictionary.insert(label(), inner.into());
    SignatureHeaders {
        input: crate::serialized(&input_dictionary),
        signature: crate::serialized(&signature_dictionary),
    }
}

/// Parses the signature labelled [`LABEL`] from the `Signature-Input` and `Signature` values, and checks that it
/// is of this profile: it covers [`COVERED`] and nothing else, is Ed25519, and names its `created`, `keyid` and
/// `nonce`. Its time and its signature are checked by [`PresentedSignature::verify`], once the key of the partner
/// it names is known.
pub fn parse(input: &str, signature: &str) -> Result<PresentedSignature, SignatureError> {
    let inputs: Dictionary = Parser::new(input).parse_dictionary().map_err(SignatureError::NotStructured)?;
    let signatures: Dictionary = Parser::new(signature).parse_dictionary().map_err(SignatureError::NotStructured)?;
    let label = label();
    let (Some(ListEntry::InnerList(inner)), Some(ListEntry::Item(value))) =
        (inputs.get(&label), signatures.get(&label))
    else {
        return Err(SignatureError::Missing);
    };
    let covered = inner
        .items
        .iter()
        .map(|item| match (&item.bare_item, item.params.is_empty()) {
            (BareItem::String(name), true) => Ok(name.as_str().to_owned()),
            _ => Err(SignatureError::Malformed("a covered component is not a plain string".into())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    for required in COVERED {
        if !covered.iter().any(|name| name == required) {
            return Err(SignatureError::NotCovered(required));
        }
    }
    if let Some(other) = covered.iter().find(|name| !COVERED.contains(&name.as_str())) {
        return Err(SignatureError::Uncovered(other.clone()));
    }
    if covered.len() != COVERED.len() {
        return Err(SignatureError::Malformed("a component is covered twice".into()));
    }
    let params = signature_params(&inner.params)?;
    let bytes = value
        .bare_item
        .as_byte_sequence()
        .ok_or_else(|| SignatureError::Malformed(format!("the {LABEL} signature is not a byte sequence")))?;
    let signature = ed25519_dalek::Signature::from_slice(bytes)
        .map_err(|_| SignatureError::Malformed("an Ed25519 signature is 64 bytes".into()))?;
    Ok(PresentedSignature { covered, params, params_value: serialize_inner_list(inner), signature })
}

impl PresentedSignature {
    /// Checks the signature's time against `now` (Unix seconds) and the signature itself over `request` with
    /// `key`, the key pinned for the partner the signature names.
    pub fn verify(&self, request: &RequestParts<'_>, key: &VerifyingKey, now: i64) -> Result<(), SignatureError> {
        let created = self.params.created;
        if (now - created).abs() > MAX_AGE_SECONDS {
            return Err(SignatureError::Stale { created, now });
        }
        let base = signature_base(&self.covered, |name| request.component(name), &self.params_value)?;
        key.verify(base.as_bytes(), &self.signature).map_err(|_| SignatureError::Forged(self.params.keyid.clone()))
    }
}

impl RequestParts<'_> {
    /// The value of one of the profile's components.
    fn component(&self, name: &str) -> Option<&str> {
        match name {
            "@method" => Some(self.method),
            "@path" if self.path.is_empty() => Some("/"),
            "@path" => Some(self.path),
            "content-digest" => Some(self.content_digest),
            "date" => Some(self.date),
            _ => None,
        }
    }
}

/// The signature base (RFC 9421 section 2.5) over `covered`, each component's value from `value_of` (header values
/// trimmed of surrounding whitespace), with `params_value` as the `@signature-params` line's value.
fn signature_base<'a>(
    covered: &[String],
    value_of: impl Fn(&str) -> Option<&'a str>,
    params_value: &str,
) -> Result<String, SignatureError> {
    let mut base = String::new();
    for name in covered {
        let value = value_of(name).ok_or_else(|| SignatureError::Uncovered(name.clone()))?;
        let value = if name.starts_with('@') { value } else { value.trim() };
        if value.contains(['\n', '\r']) {
            return Err(SignatureError::Malformed(format!("{name} holds a line break")));
        }
        base.push_str(&format!("\"{name}\": {value}\n"));
    }
    base.push_str(&format!("\"@signature-params\": {params_value}"));
    Ok(base)
}

fn label() -> Key {
    Key::from_string(LABEL.to_owned()).unwrap_or_else(|_| unreachable!("a valid key"))
}

fn key(name: &str) -> Key {
    Key::from_string(name.to_owned()).unwrap_or_else(|_| unreachable!("a valid key"))
}

fn string(value: &str) -> Result<BareItem, SignatureError> {
    sfv::String::from_string(value.to_owned())
        .map(BareItem::String)
        .map_err(|_| SignatureError::Malformed(format!("{value:?} is not a structured-field string")))
}

/// The inner list of `covered` with `params` (`created`, `keyid`, `alg`, `nonce`).
fn inner_list(covered: &[String], params: &SignatureParams) -> InnerList {
    let items = covered
        .iter()
        .map(|name| Item::new(string(name).unwrap_or_else(|_| unreachable!("component names are ASCII"))))
        .collect();
    let mut parameters = Parameters::new();
    // Unix seconds are far inside structured fields' integers (15 digits).
    let created = sfv::Integer::try_from(params.created).unwrap_or(sfv::Integer::ZERO);
    parameters.insert(key("created"), BareItem::Integer(created));
    for (name, value) in [("keyid", params.keyid.as_str()), ("alg", ALGORITHM), ("nonce", params.nonce.as_str())] {
        if let Ok(value) = string(value) {
            parameters.insert(key(name), value);
        }
    }
    InnerList::with_params(items, parameters)
}

/// An inner list serialized as a member value (RFC 9651 section 4.1.1.1), as `@signature-params` takes it.
fn serialize_inner_list(inner: &InnerList) -> String {
    let mut dictionary = Dictionary::new();
    dictionary.insert(label(), inner.clone().into());
    let serialized = crate::serialized(&dictionary);
    serialized[LABEL.len() + 1..].to_owned()
}

/// The parameters of this profile from a parsed inner list: `created`, `keyid` and `nonce` required, `alg` if
/// present Ed25519, `expires` refused (a request is never held long enough to need one), nothing else.
fn signature_params(params: &Parameters) -> Result<SignatureParams, SignatureError> {
    let (mut created, mut keyid, mut nonce) = (None, None, None);
    for (name, value) in params {
        match (name.as_str(), value) {
            ("created", BareItem::Integer(at)) => created = Some(i64::from(*at)),
            ("keyid", BareItem::String(id)) => keyid = Some(id.as_str().to_owned()),
            ("nonce", BareItem::String(once)) => nonce = Some(once.as_str().to_owned()),
            ("alg", BareItem::String(alg)) if alg.as_str() == ALGORITHM => {}
            ("alg", BareItem::String(alg)) => return Err(SignatureError::Algorithm(alg.as_str().to_owned())),
            (other, _) => return Err(SignatureError::Malformed(format!("unexpected or mistyped parameter {other}"))),
        }
    }
    let missing = |name: &str| SignatureError::Malformed(format!("the signature has no {name}"));
    let nonce = nonce.ok_or_else(|| missing("nonce"))?;
    if nonce.is_empty() || nonce.chars().count() > MAX_NONCE_CHARS {
        return Err(SignatureError::Malformed(format!("a nonce has 1 to {MAX_NONCE_CHARS} characters")));
    }
    Ok(SignatureParams {
        created: created.ok_or_else(|| missing("created"))?,
        keyid: keyid.ok_or_else(|| missing("keyid"))?,
        nonce,
    })
}

/// The `Date` header's value (RFC 9110 section 5.6.7, IMF-fixdate) at `now` (Unix seconds).
pub fn http_date(now: i64) -> String {
    let at = jiff::Timestamp::from_second(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    jiff::fmt::rfc2822::DateTimePrinter::new().timestamp_to_rfc9110_string(&at).unwrap_or_default()
}

/// Checks a request's `Date` header against `now` (Unix seconds): within [`MAX_AGE_SECONDS`] either way.
pub fn check_date(date: &str, now: i64) -> Result<(), SignatureError> {
    let at = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(date.trim())
        .map_err(SignatureError::BadDate)?
        .as_second();
    if (now - at).abs() > MAX_AGE_SECONDS {
        return Err(SignatureError::StaleDate { date: at, now });
    }
    Ok(())
}

/// A new nonce: 16 random bytes, base64url.
pub fn new_nonce(random: [u8; 16]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9421 appendix B.1.4's test key (`test-key-ed25519`), its private half as the JWK's `d`.
    const RFC_KEY_D: &str = "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU";
    const RFC_KEY_X: &str = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs";

    fn rfc_key() -> SigningKey {
        let d = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(RFC_KEY_D).expect("base64url");
        SigningKey::from_bytes(&d.try_into().expect("32 bytes"))
    }

    /// RFC 9421 appendix B.2.6 ("Signing a Request Using ed25519"), byte for byte: the `@signature-params` value
    /// serialized from the parsed `Signature-Input`, the signature base, and the signature (Ed25519 is
    /// deterministic, so the same key over the same base gives the RFC's printed value).
    #[test]
    fn rfc_9421_b_2_6_signature_base_and_signature_are_reproduced_exactly() {
        let input = r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#;
        let expected_signature =
            "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:";
        let expected_base = concat!(
            "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n",
            "\"@method\": POST\n",
            "\"@path\": /foo\n",
            "\"@authority\": example.com\n",
            "\"content-type\": application/json\n",
            "\"content-length\": 18\n",
            "\"@signature-params\": (\"date\" \"@method\" \"@path\" \"@authority\" \"content-type\" \"content-length\")",
            ";created=1618884473;keyid=\"test-key-ed25519\""
        );
        let inputs: Dictionary = Parser::new(input).parse_dictionary().expect("a dictionary");
        let Some(ListEntry::InnerList(inner)) = inputs.get(&key("sig-b26")) else { panic!("an inner list") };
        let covered: Vec<String> =
            inner.items.iter().map(|item| item.bare_item.as_string().expect("strings").as_str().to_owned()).collect();
        let component = |name: &str| match name {
            "date" => Some("Tue, 20 Apr 2021 02:07:55 GMT"),
            "@method" => Some("POST"),
            "@path" => Some("/foo"),
            "@authority" => Some("example.com"),
            "content-type" => Some("application/json"),
            "content-length" => Some("18"),
            _ => None,
        };
        let base = signature_base(&covered, component, &serialize_inner_list(inner)).expect("a base");
        assert_eq!(base, expected_base);
        let signature = rfc_key().sign(base.as_bytes());
        let mut signatures = Dictionary::new();
        signatures.insert(key("sig-b26"), Item::new(BareItem::ByteSequence(signature.to_bytes().to_vec())).into());
        assert_eq!(crate::serialized(&signatures), expected_signature);
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(RFC_KEY_X).expect("base64url");
        assert_eq!(rfc_key().verifying_key().to_bytes().as_slice(), x.as_slice(), "the JWK's public half");
    }

    fn request<'a>(digest: &'a str) -> RequestParts<'a> {
        RequestParts {
            method: "POST",
            path: "/partners/v1/transfers",
            content_digest: digest,
            date: "Fri, 04 Dec 2026 15:00:00 GMT",
        }
    }

    fn params() -> SignatureParams {
        SignatureParams { created: 1_796_396_400, keyid: "it-catania".into(), nonce: new_nonce([7; 16]) }
    }

    #[test]
    fn a_signed_request_verifies_and_any_change_to_what_it_covers_does_not() {
        let key = rfc_key();
        let digest = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:";
        let headers = sign(&request(digest), &key, &params());
        assert_eq!(
            headers.input,
            format!(
                r#"custodia=("@method" "@path" "content-digest" "date");created=1796396400;keyid="it-catania";alg="ed25519";nonce="{}""#,
                params().nonce
            )
        );
        let presented = parse(&headers.input, &headers.signature).expect("our own profile");
        assert_eq!(presented.params, params());
        let now = params().created + 10;
        presented.verify(&request(digest), &key.verifying_key(), now).expect("verifies");
        // Re-spaced in transit, it still verifies: the base is built from the parsed header.
        let respaced = headers.input.replace(";created", "; created").replace(r#" "date")"#, r#"  "date" )"#);
        let respaced = parse(&respaced, &headers.signature).expect("parses");
        respaced.verify(&request(digest), &key.verifying_key(), now).expect("verifies");

        let other = "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:";
        let changed = [
            RequestParts { method: "PUT", ..request(digest) },
            RequestParts { path: "/partners/v1/transfers/x", ..request(digest) },
            RequestParts { content_digest: other, ..request(digest) },
            RequestParts { date: "Fri, 04 Dec 2026 15:00:01 GMT", ..request(digest) },
        ];
        for changed in changed {
            let refused = presented.verify(&changed, &key.verifying_key(), now);
            assert!(matches!(&refused, Err(SignatureError::Forged(name)) if name == "it-catania"), "{changed:?}");
        }
        let stranger = SigningKey::from_bytes(&[9; 32]);
        assert!(matches!(
            presented.verify(&request(digest), &stranger.verifying_key(), now),
            Err(SignatureError::Forged(_))
        ));
        for late in [params().created + MAX_AGE_SECONDS + 1, params().created - MAX_AGE_SECONDS - 1] {
            assert!(matches!(
                presented.verify(&request(digest), &key.verifying_key(), late),
                Err(SignatureError::Stale { .. })
            ));
        }
        // Parameters changed after signing are in the base: the signature no longer verifies.
        let forged_nonce = headers.input.replace(&params().nonce, "another-nonce");
        let forged = parse(&forged_nonce, &headers.signature).expect("parses");
        assert!(matches!(forged.verify(&request(digest), &key.verifying_key(), now), Err(SignatureError::Forged(_))));
    }

    #[test]
    fn the_date_header_is_an_http_date_within_the_window() {
        let now = 1_618_884_475;
        assert_eq!(http_date(1_618_884_475), "Tue, 20 Apr 2021 02:07:55 GMT");
        assert!(check_date("Tue, 20 Apr 2021 02:07:55 GMT", now).is_ok());
        assert!(check_date(&http_date(now - MAX_AGE_SECONDS), now).is_ok());
        let stale = check_date(&http_date(now - MAX_AGE_SECONDS - 1), now);
        assert!(matches!(stale, Err(SignatureError::StaleDate { .. })), "{stale:?}");
        assert!(matches!(
            check_date(&http_date(now + MAX_AGE_SECONDS + 1), now),
            Err(SignatureError::StaleDate { .. })
        ));
        let undated = check_date("yesterday", now).unwrap_err();
        assert!(matches!(undated, SignatureError::BadDate(_)) && std::error::Error::source(&undated).is_some());
        assert!(undated.to_string().contains("the Date header is not an HTTP date: "), "{undated}");
    }

    #[test]
    fn signatures_outside_the_profile_are_refused_before_any_key_is_looked_up() {
        let headers = sign(&request("sha-256=:AA==:"), &rfc_key(), &params());
        let refused = |input: &str, signature: &str| parse(input, signature).expect_err("refused");
        let nonce = params().nonce;
        let with = |inner: &str| format!("custodia={inner}");
        assert!(matches!(refused("", &headers.signature), SignatureError::Missing));
        let relabelled = headers.input.replace("custodia=", "other=");
        assert!(matches!(refused(&relabelled, &headers.signature), SignatureError::Missing));
        assert!(matches!(refused("custodia=(", &headers.signature), SignatureError::NotStructured(_)));
        let without_date =
            with(&format!(r#"("@method" "@path" "content-digest");created=1;keyid="k";nonce="{nonce}""#));
        assert!(matches!(refused(&without_date, &headers.signature), SignatureError::NotCovered("date")));
        let extra = with(&format!(
            r#"("@method" "@path" "content-digest" "date" "@query");created=1;keyid="k";nonce="{nonce}""#
        ));
        assert!(matches!(refused(&extra, &headers.signature), SignatureError::Uncovered(name) if name == "@query"));
        let rsa = with(&format!(
            r#"("@method" "@path" "content-digest" "date");created=1;keyid="k";alg="rsa-pss-sha512";nonce="{nonce}""#
        ));
        let algorithm = refused(&rsa, &headers.signature);
        assert!(matches!(&algorithm, SignatureError::Algorithm(name) if name == "rsa-pss-sha512"), "{algorithm:?}");
        let no_nonce = with(r#"("@method" "@path" "content-digest" "date");created=1;keyid="k""#);
        assert!(matches!(refused(&no_nonce, &headers.signature), SignatureError::Malformed(_)));
        let expires = with(&format!(
            r#"("@method" "@path" "content-digest" "date");created=1;expires=2;keyid="k";nonce="{nonce}""#
        ));
        assert!(matches!(refused(&expires, &headers.signature), SignatureError::Malformed(_)));
        assert!(matches!(refused(&headers.input, "custodia=:AAAA:"), SignatureError::Malformed(_)));
    }
}
