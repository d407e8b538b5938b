//! The digest and signature algorithms a token and its certificates may use, and the one place that verifies them.

use der::Encode;
use der::asn1::ObjectIdentifier;
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha2::{Digest, Sha256, Sha384, Sha512};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use crate::TimestampError;

pub(crate) const ID_SHA_256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA_384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ID_SHA_512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA_256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA_384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA_512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const ECDSA_WITH_SHA_256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA_384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ECDSA_WITH_SHA_512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP_256_R_1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP_384_R_1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// The DER DigestInfo before the digest in an RSA PKCS#1 v1.5 signature (RFC 8017 section 9.2, note 1).
const SHA_256_DIGEST_INFO_PREFIX: [u8; 19] =
    [0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20];
const SHA_384_DIGEST_INFO_PREFIX: [u8; 19] =
    [0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30];
const SHA_512_DIGEST_INFO_PREFIX: [u8; 19] =
    [0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40];

/// RSA keys shorter than this are refused: 2048 bits is the floor ETSI and the CA/Browser Forum set.
const MIN_RSA_BITS: usize = 2048;

/// A digest algorithm we accept for signatures and imprints (SHA-1 only ever for an ESSCertID, elsewhere).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    /// The algorithm an identifier names; its parameters must be absent or NULL (RFC 5754).
    pub(crate) fn from_identifier(identifier: &AlgorithmIdentifierOwned) -> Result<Self, TimestampError> {
        let unsupported = || TimestampError::UnsupportedDigest(identifier.oid.to_string());
        if identifier.parameters.as_ref().is_some_and(|parameters| !parameters.is_null()) {
            return Err(unsupported());
        }
        match identifier.oid {
            ID_SHA_256 => Ok(Self::Sha256),
            ID_SHA_384 => Ok(Self::Sha384),
            ID_SHA_512 => Ok(Self::Sha512),
            _ => Err(unsupported()),
        }
    }

    pub(crate) fn digest(self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => Sha256::digest(bytes).to_vec(),
            Self::Sha384 => Sha384::digest(bytes).to_vec(),
            Self::Sha512 => Sha512::digest(bytes).to_vec(),
        }
    }

    /// PKCS#1 v1.5 padding with this digest's DigestInfo prefix, as RFC 8017 section 9.2 note 1 spells them (rather
    /// than `Pkcs1v15Sign::new`, which needs sha2's `oid` feature and so a rebuild of everything that links sha2).
    fn pkcs1v15(self) -> Pkcs1v15Sign {
        let (hash_len, prefix): (usize, &[u8]) = match self {
            Self::Sha256 => (32, &SHA_256_DIGEST_INFO_PREFIX),
            Self::Sha384 => (48, &SHA_384_DIGEST_INFO_PREFIX),
            Self::Sha512 => (64, &SHA_512_DIGEST_INFO_PREFIX),
        };
        Pkcs1v15Sign { hash_len: Some(hash_len), prefix: prefix.into() }
    }
}

/// A signature scheme: the key type and the digest it signs.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Scheme {
    RsaPkcs1v15(Hash),
    Ecdsa(Hash),
}

impl Scheme {
    /// The scheme of a signature algorithm identifier. `digest` is the CMS signer's digest algorithm, which a bare
    /// `rsaEncryption` leaves to it; an identifier that names its own digest must agree with it.
    pub(crate) fn from_identifier(
        identifier: &AlgorithmIdentifierOwned,
        digest: Option<Hash>,
    ) -> Result<Self, TimestampError> {
        let unsupported = || TimestampError::UnsupportedSignature(identifier.oid.to_string());
        let named = match identifier.oid {
            RSA_ENCRYPTION => Self::RsaPkcs1v15(digest.ok_or_else(unsupported)?),
            SHA_256_WITH_RSA => Self::RsaPkcs1v15(Hash::Sha256),
            SHA_384_WITH_RSA => Self::RsaPkcs1v15(Hash::Sha384),
            SHA_512_WITH_RSA => Self::RsaPkcs1v15(Hash::Sha512),
            ECDSA_WITH_SHA_256 => Self::Ecdsa(Hash::Sha256),
            ECDSA_WITH_SHA_384 => Self::Ecdsa(Hash::Sha384),
            ECDSA_WITH_SHA_512 => Self::Ecdsa(Hash::Sha512),
            _ => return Err(unsupported()),
        };
        if digest.is_some_and(|digest| digest != named.hash()) {
            return Err(unsupported());
        }
        Ok(named)
    }

    pub(crate) fn hash(self) -> Hash {
        match self {
            Self::RsaPkcs1v15(hash) | Self::Ecdsa(hash) => hash,
        }
    }

    /// Whether `signature` is this scheme's signature over `message` by the key in `key`. The message is hashed here.
    pub(crate) fn verify(
        self,
        key: &SubjectPublicKeyInfoOwned,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), TimestampError> {
        let digest = self.hash().digest(message);
        match self {
            Self::RsaPkcs1v15(hash) => {
                let unsupported = || TimestampError::UnsupportedSignature("the RSA key".to_owned());
                if key.algorithm.oid != RSA_ENCRYPTION {
                    return Err(TimestampError::UnsupportedSignature(key.algorithm.oid.to_string()));
                }
                let der = key.to_der().map_err(TimestampError::malformed("public key"))?;
                let key = RsaPublicKey::from_public_key_der(&der).map_err(|_| unsupported())?;
                if key.size() * 8 < MIN_RSA_BITS {
                    return Err(TimestampError::UnsupportedSignature(format!("RSA key of {} bits", key.size() * 8)));
                }
                key.verify(hash.pkcs1v15(), &digest, signature).map_err(|_| TimestampError::BadSignature)
            }
            Self::Ecdsa(_) => {
                if key.algorithm.oid != ID_EC_PUBLIC_KEY {
                    return Err(TimestampError::UnsupportedSignature(key.algorithm.oid.to_string()));
                }
                let curve = key
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|parameters| parameters.decode_as::<ObjectIdentifier>().ok())
                    .ok_or_else(|| {
                        TimestampError::UnsupportedSignature("an EC key without a named curve".to_owned())
                    })?;
                let point = key.subject_public_key.raw_bytes();
                let bad_key = || TimestampError::UnsupportedSignature(format!("an invalid point on {curve}"));
                match curve {
                    SECP_256_R_1 => {
                        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|_| bad_key())?;
                        let signature =
                            p256::ecdsa::Signature::from_der(signature).map_err(|_| TimestampError::BadSignature)?;
                        key.verify_prehash(&digest, &signature).map_err(|_| TimestampError::BadSignature)
                    }
                    SECP_384_R_1 => {
                        let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|_| bad_key())?;
                        let signature =
                            p384::ecdsa::Signature::from_der(signature).map_err(|_| TimestampError::BadSignature)?;
                        key.verify_prehash(&digest, &signature).map_err(|_| TimestampError::BadSignature)
                    }
                    other => Err(TimestampError::UnsupportedSignature(format!("curve {other}"))),
                }
            }
        }
    }
}
