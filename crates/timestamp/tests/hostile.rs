//! Hostile DER: random bit flips and byte changes anywhere in a real token never panic, and whatever still verifies
//! says exactly what the original said.

mod support;

use custodia_timestamp::{TimestampRequest, VerifiedToken};
use proptest::prelude::*;
use rand_core::OsRng;
use support::{Authority, KeyKind};

struct Fixture {
    authority: Authority,
    request: TimestampRequest,
    response: Vec<u8>,
    verified: VerifiedToken,
}

fn fixture(kind: KeyKind) -> Fixture {
    let authority = Authority::new(kind);
    let request = TimestampRequest::new(b"checkpoint", None, &mut OsRng).expect("request");
    let response = authority.reply(request.to_der());
    let verified = request.verify_response(&response, &authority.anchors()).expect("the untouched token verifies");
    Fixture { authority, request, response, verified }
}

fn same_statement(a: &VerifiedToken, b: &VerifiedToken) -> bool {
    a.gen_time == b.gen_time
        && a.imprint == b.imprint
        && a.serial_number == b.serial_number
        && a.policy == b.policy
        && a.nonce == b.nonce
        && a.tsa == b.tsa
}

fn check_mutations(fixture: &Fixture, edits: &[(usize, u8)]) {
    let mut mutated = fixture.response.clone();
    for &(index, mask) in edits {
        let at = index % mutated.len();
        mutated[at] ^= mask;
    }
    if let Ok(verified) = fixture.request.verify_response(&mutated, &fixture.authority.anchors()) {
        assert!(same_statement(&verified, &fixture.verified), "a changed token verified with another statement");
    }
    // What a reader without anchors reads (a bundle verifier) never panics either.
    if let Ok(token) = custodia_timestamp::token_from_response(&mutated) {
        let _ = custodia_timestamp::read_token_claims(&token);
    }
    let _ = custodia_timestamp::read_token_claims(&mutated);
}

#[test]
fn the_claims_read_without_anchors_are_what_the_verified_token_says() {
    for kind in [KeyKind::EcdsaP256, KeyKind::Rsa] {
        let fixture = fixture(kind);
        let claims = custodia_timestamp::read_token_claims(&fixture.verified.token).expect("claims");
        assert_eq!(
            (claims.gen_time, claims.gen_time_nanos),
            (fixture.verified.gen_time, fixture.verified.gen_time_nanos)
        );
        assert_eq!(claims.tsa_name_in_token, fixture.verified.tsa_name_in_token);
        assert_eq!(claims.sha256_imprint, Some(fixture.verified.imprint));
        assert_eq!(claims.gen_time_text(), fixture.verified.gen_time_text());
        assert!(
            claims.gen_time_text().ends_with(" UTC") && claims.gen_time_text().len() >= 23,
            "{}",
            claims.gen_time_text()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn ecdsa_tokens_with_flipped_bits(edits in prop::collection::vec((any::<usize>(), 1u8..=255), 1..4)) {
        thread_local!(static FIXTURE: Fixture = fixture(KeyKind::EcdsaP256));
        FIXTURE.with(|fixture| check_mutations(fixture, &edits));
    }

    #[test]
    fn rsa_tokens_with_flipped_bits(edits in prop::collection::vec((any::<usize>(), 1u8..=255), 1..4)) {
        thread_local!(static FIXTURE: Fixture = fixture(KeyKind::Rsa));
        FIXTURE.with(|fixture| check_mutations(fixture, &edits));
    }
}

#[test]
fn every_single_bit_flip_of_the_first_bytes() {
    // The outer structure (status, lengths, content types, SignedData header): every bit of the first 200 bytes.
    let fixture = fixture(KeyKind::EcdsaP256);
    for index in 0..200.min(fixture.response.len()) {
        for bit in 0..8 {
            check_mutations(&fixture, &[(index, 1 << bit)]);
        }
    }
}
