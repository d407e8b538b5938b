//! The `TimeStampReq` a gateway sends (RFC 3161 section 2.4.1).

use der::Encode;
use der::asn1::{Int, ObjectIdentifier, OctetString};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use x509_cert::spki::AlgorithmIdentifier;
use x509_tsp::{MessageImprint, TimeStampReq, TspVersion};

use crate::TimestampError;
use crate::signature::ID_SHA_256;
use crate::verify::Expectation;

/// Bytes of random nonce in each request: 128 bits, far beyond any chance of a repeat.
const NONCE_BYTES: usize = 16;

/// One timestamp request: its DER (the body of an `application/timestamp-query` POST) and what the answer must match.
#[derive(Clone, Debug)]
pub struct TimestampRequest {
    der: Vec<u8>,
    expectation: Expectation,
}

impl TimestampRequest {
    /// A request for the SHA-256 digest of `message`, with a fresh nonce from `rng`, asking for the authority's
    /// certificate, under `policy` if given.
    pub fn new(
        message: &[u8],
        policy: Option<ObjectIdentifier>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, TimestampError> {
        Self::for_digest(Sha256::digest(message).into(), policy, rng)
    }

    /// A request for an already computed SHA-256 digest.
    pub fn for_digest(
        imprint: [u8; 32],
        policy: Option<ObjectIdentifier>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, TimestampError> {
        let mut nonce = [0u8; NONCE_BYTES];
        rng.fill_bytes(&mut nonce);
        // Positive, and with a non-zero first byte so that the DER integer keeps all 16 bytes (minimal encoding).
        nonce[0] = (nonce[0] & 0x7f) | 0x40;
        let nonce = Int::new(&nonce).map_err(TimestampError::malformed("nonce"))?;
        let request = TimeStampReq {
            version: TspVersion::V1,
            message_imprint: MessageImprint {
                // RFC 5754: the parameters of SHA-2 identifiers are absent.
                hash_algorithm: AlgorithmIdentifier { oid: ID_SHA_256, parameters: None },
                hashed_message: OctetString::new(imprint.to_vec())
                    .map_err(TimestampError::malformed("message imprint"))?,
            },
            req_policy: policy,
            nonce: Some(nonce.clone()),
            cert_req: true,
            extensions: None,
        };
        let der = request.to_der().map_err(TimestampError::malformed("TimeStampReq"))?;
        Ok(Self { der, expectation: Expectation { imprint, nonce: Some(nonce.as_bytes().to_vec()), policy } })
    }

    /// The DER-encoded `TimeStampReq`.
    pub fn to_der(&self) -> &[u8] {
        &self.der
    }

    /// What a token answering this request must hold: its imprint, its nonce, and its policy if one was asked.
    pub fn expectation(&self) -> &Expectation {
        &self.expectation
    }
}
