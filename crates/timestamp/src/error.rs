//! What can go wrong with a timestamp, one variant per check.

use thiserror::Error;

/// Why a timestamp request could not be built, or why an answer or token was refused.
///
/// Each variant names the one check that failed; none carries a byte of the timestamped data.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TimestampError {
    /// A structure could not be encoded or decoded as DER.
    #[error("malformed {what}")]
    Malformed {
        /// Which structure.
        what: &'static str,
        /// The DER error.
        #[source]
        source: der::Error,
    },
    /// The authority did not grant the request.
    #[error("the authority did not grant the timestamp (status {status}{})", fail_info.as_deref().map(|info| format!(", failure {info}")).unwrap_or_default())]
    NotGranted {
        /// The PKIStatus it answered, by name.
        status: String,
        /// The PKIFailureInfo bits it gave, by name, if any.
        fail_info: Option<String>,
    },
    /// The authority granted the request but sent no token.
    #[error("the answer grants the request but carries no token")]
    NoToken,
    /// The token is not a CMS SignedData.
    #[error("the token is not a CMS SignedData but {0}")]
    NotSignedData(String),
    /// The signed content is not a TSTInfo.
    #[error("the signed content is {0}, not id-ct-TSTInfo")]
    NotTstInfo(String),
    /// The SignedData has no encapsulated content.
    #[error("the token carries no TSTInfo")]
    MissingContent,
    /// RFC 3161 asks for exactly one signer, the authority.
    #[error("the token has {0} signers, not exactly one")]
    SignerCount(usize),
    /// The signer signed no attributes, so nothing binds the signature to the TSTInfo and the certificate.
    #[error("the signer signed no attributes")]
    MissingSignedAttributes,
    /// A signed attribute that must be there exactly once, with one value, is missing or repeated.
    #[error("the signed attribute {0} is missing, repeated or has other than one value")]
    SignedAttribute(&'static str),
    /// The content-type attribute does not say id-ct-TSTInfo.
    #[error("the signed content-type attribute is not id-ct-TSTInfo")]
    ContentTypeAttribute,
    /// The message-digest attribute is not the digest of the TSTInfo.
    #[error("the signed message digest does not match the TSTInfo")]
    MessageDigest,
    /// A digest algorithm we do not accept.
    #[error("unsupported digest algorithm {0}")]
    UnsupportedDigest(String),
    /// A signature algorithm (or key type, or curve) we do not accept.
    #[error("unsupported signature algorithm or key: {0}")]
    UnsupportedSignature(String),
    /// The certificate the signer names is not in the token.
    #[error("the signer's certificate is not in the token")]
    SignerCertificateNotFound,
    /// Neither signing-certificate-v2 (ESSCertIDv2) nor signing-certificate (ESSCertID) is among the signed attributes.
    #[error("the signed attributes do not name the signing certificate (no ESSCertIDv2 or ESSCertID)")]
    SigningCertificateAttributeMissing,
    /// The ESSCertID(v2) names another certificate than the one that signed.
    #[error("the signing certificate named in the signed attributes is not the signer's")]
    SigningCertificateMismatch,
    /// The CMS signature over the signed attributes does not verify.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// The signer's certificate has no extended key usage.
    #[error("the authority's certificate has no extended key usage")]
    EkuMissing,
    /// The extended key usage is not critical.
    #[error("the authority's extended key usage is not critical")]
    EkuNotCritical,
    /// The extended key usage allows more than timeStamping, or not timeStamping.
    #[error("the authority's extended key usage is not timeStamping alone")]
    EkuNotTimestampingOnly,
    /// A certificate carries the same extension twice.
    #[error("a certificate repeats the extension {0}")]
    DuplicateExtension(String),
    /// A certificate in the chain is outside its validity period at genTime.
    #[error("the certificate of {subject} is not valid at genTime")]
    NotValidAtGenTime {
        /// The certificate's subject.
        subject: String,
    },
    /// A certificate's signature does not verify under its issuer's key.
    #[error("the certificate of {subject} is not signed by the key of {issuer}")]
    CertificateSignature {
        /// The certificate's subject.
        subject: String,
        /// The issuer whose key was tried.
        issuer: String,
    },
    /// An issuing certificate is not a certification authority.
    #[error("{subject} issues certificates but is not a CA")]
    NotACa {
        /// The would-be issuer's subject.
        subject: String,
    },
    /// No chain leads from the signer to a configured trust anchor.
    #[error("no chain from {subject} to a configured trust anchor")]
    UntrustedChain {
        /// The last certificate reached.
        subject: String,
    },
    /// The token's imprint is not SHA-256.
    #[error("the token's imprint uses {0}, not SHA-256")]
    ImprintAlgorithm(String),
    /// The token timestamps other bytes than those asked.
    #[error("the token's imprint is not the digest of the timestamped bytes")]
    ImprintMismatch,
    /// The token's nonce is not the request's (or is missing).
    #[error("the token's nonce is not the request's")]
    NonceMismatch,
    /// The token was issued under another policy than the one asked.
    #[error("the token's policy is {found}, not {expected}")]
    PolicyMismatch {
        /// The policy asked for.
        expected: String,
        /// The policy in the token.
        found: String,
    },
    /// No trust anchor was configured, or the PEM held none.
    #[error("no trust anchor certificates")]
    NoTrustAnchors,
}

impl TimestampError {
    pub(crate) fn malformed(what: &'static str) -> impl FnOnce(der::Error) -> Self {
        move |source| Self::Malformed { what, source }
    }
}
