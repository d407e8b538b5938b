//! Our verifier against real tokens from `openssl ts -reply` (ECDSA P-256, P-384 and RSA authorities), cross-checked
//! with `openssl ts -verify` and with PyPI's `rfc3161-client`, and the refusals: wrong imprint, nonce, policy,
//! signature, EKU, anchor, garbage.

mod support;

use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use custodia_timestamp::{
    CheckpointTimestamp, Expectation, ObjectIdentifier, TimestampError, TimestampRequest, TrustAnchors, VerifiedToken,
    token_from_response, verify_token,
};
use der::Decode;
use der::asn1::OctetStringRef;
use rand_core::OsRng;
use support::{Authority, DEFAULT_POLICY, Eku, KeyKind, OTHER_POLICY};

const CHECKPOINT: &[u8] = b"custodia.example/log\n42\nq7J0ZmCXxWZ0iDqS3kR3Vx8o9dGq7R0sQ8a9w0Xb6vQ=\n";

fn request(message: &[u8]) -> TimestampRequest {
    TimestampRequest::new(message, None, &mut OsRng).expect("request")
}

/// The TSTInfo DER inside a token.
fn tst_info_of(token: &[u8]) -> Vec<u8> {
    let content_info = ContentInfo::from_der(token).expect("token");
    let signed: SignedData = content_info.content.decode_as().expect("SignedData");
    signed
        .encap_content_info
        .econtent
        .expect("eContent")
        .decode_as::<OctetStringRef<'_>>()
        .expect("octets")
        .as_bytes()
        .to_vec()
}

/// The token's CMS signature value.
fn signature_of(token: &[u8]) -> Vec<u8> {
    let content_info = ContentInfo::from_der(token).expect("token");
    let signed: SignedData = content_info.content.decode_as().expect("SignedData");
    signed.signer_infos.0.iter().next().expect("signer").signature.as_bytes().to_vec()
}

/// Accepted by us and by `openssl ts -verify`, and what the token says is what was asked.
fn accepts(authority: &Authority) -> (TimestampRequest, Vec<u8>, VerifiedToken) {
    let request = request(CHECKPOINT);
    let response = authority.reply(request.to_der());
    let verified = request.verify_response(&response, &authority.anchors()).expect("our verifier accepts the token");
    assert!(authority.openssl_verifies(request.to_der(), &response), "openssl ts -verify accepts the same token");
    assert_eq!(verified.imprint, sha2_digest(CHECKPOINT));
    assert_eq!(verified.policy.to_string(), DEFAULT_POLICY);
    assert_eq!(verified.tsa, "O=Custodia tests,CN=Custodia Test TSA");
    assert_eq!(verified.tsa_name_in_token.as_deref(), Some("O=Custodia tests,CN=Custodia Test TSA"));
    assert_eq!(verified.nonce.as_ref(), request.expectation().nonce.as_ref());
    assert!(!verified.serial_number.is_empty());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    // openssl's genTime is its clock at signing: within a day of ours, whatever the load.
    assert!(verified.gen_time_unix().abs_diff(now) < 86_400, "genTime {} is today", verified.gen_time);
    // A stored token verifies again later, against the checkpoint alone.
    let again = verify_token(&verified.token, &Expectation::for_message(CHECKPOINT), &authority.anchors())
        .expect("the stored token verifies again");
    assert_eq!(again.gen_time, verified.gen_time);
    (request, response, verified)
}

fn sha2_digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

#[test]
fn ecdsa_p256_authority_tokens_verify_here_and_in_openssl() {
    accepts(&Authority::new(KeyKind::EcdsaP256));
}

#[test]
fn ecdsa_p384_authority_tokens_verify_here_and_in_openssl() {
    accepts(&Authority::new(KeyKind::EcdsaP384));
}

#[test]
fn rsa_authority_tokens_verify_here_and_in_openssl() {
    accepts(&Authority::new(KeyKind::Rsa));
}

#[test]
fn ess_cert_id_v1_with_sha1_is_accepted() {
    let authority = Authority::with(KeyKind::EcdsaP256, "Custodia Test CA", Eku::CriticalTimestamping, "sha1");
    accepts(&authority);
}

#[test]
fn gen_time_with_fractions_of_a_second_is_read() {
    let authority = Authority::new(KeyKind::EcdsaP256).with_clock_precision_digits(6);
    let mut fractions = 0;
    // openssl drops trailing zeros, and a whole second has no fraction at all: a few tokens show one.
    for _ in 0..5 {
        let (_, response, verified) = accepts(&authority);
        let token = token_from_response(&response).expect("token");
        let tst_info = tst_info_of(&token);
        let gen_time = gen_time_text(&tst_info);
        if gen_time.contains('.') {
            fractions += 1;
            assert_ne!(verified.gen_time_nanos, 0, "{gen_time}");
        }
    }
    assert!(fractions > 0, "openssl gave no fractions of a second in 5 tokens");
}

/// The genTime text in a TSTInfo: its fifth field.
fn gen_time_text(tst_info: &[u8]) -> String {
    let fields = Vec::<der::Any>::from_der(tst_info).expect("TSTInfo fields");
    assert_eq!(der::Tagged::tag(&fields[4]), der::Tag::GeneralizedTime);
    String::from_utf8(fields[4].value().to_vec()).expect("ASCII")
}

#[test]
fn a_policy_asked_for_is_checked() {
    let authority = Authority::new(KeyKind::EcdsaP256);
    let other: ObjectIdentifier = OTHER_POLICY.parse().expect("oid");
    let request = TimestampRequest::new(CHECKPOINT, Some(other), &mut OsRng).expect("request");
    let response = authority.reply(request.to_der());
    let verified = request.verify_response(&response, &authority.anchors()).expect("token under the asked policy");
    assert_eq!(verified.policy, other);
    assert!(authority.openssl_verifies(request.to_der(), &response));

    let mut expectation = request.expectation().clone();
    expectation.policy = Some(DEFAULT_POLICY.parse().expect("oid"));
    let token = token_from_response(&response).expect("token");
    assert!(matches!(
        verify_token(&token, &expectation, &authority.anchors()),
        Err(TimestampError::PolicyMismatch { .. })
    ));
}

#[test]
fn a_policy_the_authority_does_not_serve_is_not_granted() {
    let authority = Authority::new(KeyKind::EcdsaP256);
    let unknown: ObjectIdentifier = "1.3.6.1.4.1.99999.77".parse().expect("oid");
    let request = TimestampRequest::new(CHECKPOINT, Some(unknown), &mut OsRng).expect("request");
    let response = authority.reply(request.to_der());
    match request.verify_response(&response, &authority.anchors()) {
        Err(TimestampError::NotGranted { status, fail_info }) => {
            assert_eq!(status, "rejection");
            assert!(fail_info.as_ref().is_some_and(|info| info == "unacceptedPolicy"), "{fail_info:?}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn a_wrong_imprint_is_refused() {
    let authority = Authority::new(KeyKind::EcdsaP256);
    let (_, _, verified) = accepts(&authority);
    let refused = verify_token(&verified.token, &Expectation::for_message(b"another checkpoint"), &authority.anchors());
    assert!(matches!(refused, Err(TimestampError::ImprintMismatch)), "{refused:?}");
}

#[test]
fn a_wrong_nonce_is_refused() {
    let authority = Authority::new(KeyKind::EcdsaP256);
    let (_, response, _) = accepts(&authority);
    // Another request for the same bytes: the answer to the first is not an answer to it.
    let second = request(CHECKPOINT);
    let refused = second.verify_response(&response, &authority.anchors());
    assert!(matches!(refused, Err(TimestampError::NonceMismatch)), "{refused:?}");
    assert!(!authority.openssl_verifies(second.to_der(), &response), "openssl refuses it too");
}

#[test]
fn a_flipped_signature_byte_is_refused() {
    for kind in [KeyKind::EcdsaP256, KeyKind::Rsa] {
        let authority = Authority::new(kind);
        let (request, response, _) = accepts(&authority);
        let signature = signature_of(&token_from_response(&response).expect("token"));
        let at = response.windows(signature.len()).position(|window| window == signature).expect("signature bytes");
        let mut tampered = response.clone();
        // The last byte: for ECDSA a byte of s (a flip in the DER header would be malformed, not a bad signature).
        tampered[at + signature.len() - 1] ^= 0x01;
        let refused = request.verify_response(&tampered, &authority.anchors());
        assert!(matches!(refused, Err(TimestampError::BadSignature)), "{kind:?}: {refused:?}");
        assert!(!authority.openssl_verifies(request.to_der(), &tampered), "openssl refuses it too");
    }
}

#[test]
fn a_chain_to_another_anchor_is_refused() {
    let authority = Authority::new(KeyKind::EcdsaP256);
    let (_, _, verified) = accepts(&authority);
    let expectation = Expectation::for_message(CHECKPOINT);
    // A CA of the same name with another key: the name matches, the signature does not.
    let impostor = Authority::new(KeyKind::EcdsaP256);
    let refused = verify_token(&verified.token, &expectation, &impostor.anchors());
    assert!(matches!(refused, Err(TimestampError::CertificateSignature { .. })), "{refused:?}");
    // A CA of another name.
    let stranger = Authority::with(KeyKind::Rsa, "Another CA", Eku::CriticalTimestamping, "sha256");
    let refused = verify_token(&verified.token, &expectation, &stranger.anchors());
    assert!(matches!(refused, Err(TimestampError::UntrustedChain { .. })), "{refused:?}");
    // Both anchors: the right one is found.
    let mut pem = std::fs::read(stranger.path("ca.crt")).expect("read");
    pem.extend(std::fs::read(authority.path("ca.crt")).expect("read"));
    let both = TrustAnchors::from_pem(&pem).expect("anchors");
    verify_token(&verified.token, &expectation, &both).expect("accepted with its CA among the anchors");
}

/// `openssl ts -reply` will not sign with a certificate lacking the critical timeStamping EKU, so these tokens are
/// made with `openssl cms -sign -cades` over the TSTInfo of a real token, signed by the same key.
#[test]
fn an_authority_certificate_without_the_critical_eku_is_refused() {
    let authority = Authority::new(KeyKind::EcdsaP256);
    let (_, response, _) = accepts(&authority);
    let tst_info = tst_info_of(&token_from_response(&response).expect("token"));
    let expectation = Expectation::for_message(CHECKPOINT);

    // The control: the same construction with the proper certificate passes, so each refusal below is the EKU's.
    let proper = authority.cms_sign(&tst_info, "tsa.crt");
    verify_token(&proper, &expectation, &authority.anchors()).expect("a cms-signed token with the proper certificate");

    authority.issue_tsa_certificate(Eku::NonCriticalTimestamping, "noncritical.crt");
    let token = authority.cms_sign(&tst_info, "noncritical.crt");
    let refused = verify_token(&token, &expectation, &authority.anchors());
    assert!(matches!(refused, Err(TimestampError::EkuNotCritical)), "{refused:?}");

    authority.issue_tsa_certificate(Eku::None, "none.crt");
    let token = authority.cms_sign(&tst_info, "none.crt");
    let refused = verify_token(&token, &expectation, &authority.anchors());
    assert!(matches!(refused, Err(TimestampError::EkuMissing)), "{refused:?}");
}

#[test]
fn garbage_and_truncations_are_refused_without_panic() {
    let authority = Authority::new(KeyKind::EcdsaP256);
    let (request, response, _) = accepts(&authority);
    let anchors = authority.anchors();
    for garbage in [&b""[..], b"\x30", b"\x30\x00", b"\x30\x84\xff\xff\xff\xff", b"not a timestamp", &[0u8; 64]] {
        assert!(request.verify_response(garbage, &anchors).is_err(), "{garbage:?}");
        assert!(verify_token(garbage, request.expectation(), &anchors).is_err(), "{garbage:?}");
    }
    let token = token_from_response(&response).expect("token");
    for length in 0..response.len() {
        assert!(request.verify_response(&response[..length], &anchors).is_err(), "response cut at {length}");
    }
    for length in 0..token.len() {
        assert!(verify_token(&token[..length], request.expectation(), &anchors).is_err(), "token cut at {length}");
    }
    let mut extended = response.clone();
    extended.push(0);
    assert!(request.verify_response(&extended, &anchors).is_err(), "a trailing byte");
}

#[test]
fn a_log_entry_binds_the_token_to_its_checkpoint() {
    let authority = Authority::new(KeyKind::Rsa);
    let root = [9u8; 32];
    let body = CheckpointTimestamp::checkpoint_body("custodia.example/log", 42, &root);
    let request = TimestampRequest::new(body.as_bytes(), None, &mut OsRng).expect("request");
    let response = authority.reply(request.to_der());
    let verified = request.verify_response(&response, &authority.anchors()).expect("token");
    let entry = CheckpointTimestamp { size: 42, root, token: verified.token.clone() }.to_entry().expect("entry");
    let read = CheckpointTimestamp::from_entry(&entry).expect("read back");
    let again = read.verify("custodia.example/log", &authority.anchors()).expect("the entry verifies");
    assert_eq!(again.gen_time, verified.gen_time);
    // The same token claimed for another checkpoint, or another log's, is refused.
    let moved = CheckpointTimestamp { size: 43, ..read.clone() };
    assert!(matches!(moved.verify("custodia.example/log", &authority.anchors()), Err(TimestampError::ImprintMismatch)));
    assert!(matches!(read.verify("other.example/log", &authority.anchors()), Err(TimestampError::ImprintMismatch)));
}

/// A third verifier none of us wrote, PyPI's `rfc3161-client`, judges the same tokens as ours: it accepts what we
/// accept from each kind of authority, and refuses a flipped signature byte, another message, and another CA.
///
/// Its DER parser is strict where openssl is not: `openssl ts -reply` writes the token's certificates (the
/// authority's, then the `certs` of its config) in that order, not in the sorted order DER asks of a SET OF, and
/// rfc3161-client refuses such a token (`InvalidSetOrdering`) whenever the two happen to sort the other way, while
/// openssl and we accept it. So these authorities put their own certificate alone in their tokens.
#[test]
fn rfc3161_client_accepts_and_refuses_the_same_tokens_as_we_do() {
    for kind in [KeyKind::EcdsaP256, KeyKind::EcdsaP384, KeyKind::Rsa] {
        let authority = Authority::new(kind).without_chain_certificates();
        let (request, response, _) = accepts(&authority);
        let Some(accepted) = authority.rfc3161_client_verifies(request.to_der(), &response, CHECKPOINT) else { return };
        assert!(accepted, "{kind:?}: rfc3161-client refuses a token we accept");

        let signature = signature_of(&token_from_response(&response).expect("token"));
        let at = response.windows(signature.len()).position(|window| window == signature).expect("signature bytes");
        let mut tampered = response.clone();
        tampered[at + signature.len() - 1] ^= 0x01;
        assert!(matches!(request.verify_response(&tampered, &authority.anchors()), Err(TimestampError::BadSignature)));
        let judged = authority.rfc3161_client_verifies(request.to_der(), &tampered, CHECKPOINT);
        assert_eq!(judged, Some(false), "{kind:?}: rfc3161-client accepts a flipped signature");

        let other = b"custodia.example/log\n43\nanother root\n";
        let judged = authority.rfc3161_client_verifies(request.to_der(), &response, other);
        assert_eq!(judged, Some(false), "{kind:?}: rfc3161-client accepts the token for another checkpoint");

        let impostor = Authority::new(kind).without_chain_certificates();
        let refused = verify_token(
            &token_from_response(&response).expect("token"),
            &Expectation::for_message(CHECKPOINT),
            &impostor.anchors(),
        );
        assert!(refused.is_err(), "{kind:?}: we accept another CA");
        let judged = impostor.rfc3161_client_verifies(request.to_der(), &response, CHECKPOINT);
        assert_eq!(judged, Some(false), "{kind:?}: rfc3161-client accepts another CA");
    }
}
