//! The authority's answer (`TimeStampResp`) and the full verification of its token (RFC 3161, RFC 5652, RFC 5035).

use std::time::Duration;

use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedAttributes, SignedData, SignerIdentifier};
use der::asn1::{ObjectIdentifier, OctetString, OctetStringRef};
use der::{Any, DateTime, Decode, Encode};
use sha1::Sha1;
use sha2::Digest;
use x509_cert::Certificate;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, SubjectKeyIdentifier};

use crate::TimestampError;
use crate::ess::{IssuerSerial, SigningCertificate, SigningCertificateV2};
use crate::response::token_from_response;
use crate::signature::{Hash, ID_SHA_256, Scheme};
use crate::tst_info::TstInfo;

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_AA_SIGNING_CERTIFICATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.12");
const ID_AA_SIGNING_CERTIFICATE_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.47");
const ID_CE_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const ID_CE_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const ID_CE_SUBJECT_KEY_IDENTIFIER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const ID_KP_TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");

/// The longest chain followed from the authority's certificate to an anchor (a loop of certificates ends here too).
const MAX_CHAIN_LENGTH: usize = 8;

/// What a token must hold to answer for the bytes it is checked against.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Expectation {
    /// The SHA-256 digest of the timestamped bytes.
    pub imprint: [u8; 32],
    /// The request's nonce (the DER integer's content bytes), when the token answers a request of ours.
    pub nonce: Option<Vec<u8>>,
    /// The policy the token must be issued under, when one was asked.
    pub policy: Option<ObjectIdentifier>,
}

impl Expectation {
    /// A token over `message` under any policy, with any nonce: how a stored token is checked again later.
    pub fn for_message(message: &[u8]) -> Self {
        Self { imprint: sha2::Sha256::digest(message).into(), nonce: None, policy: None }
    }
}

/// The certificates a chain must end in: the authorities' roots (or their own certificates) that the operator trusts.
#[derive(Clone, Debug)]
pub struct TrustAnchors {
    certificates: Vec<Certificate>,
}

impl TrustAnchors {
    /// The anchors in a PEM file of one or more certificates.
    pub fn from_pem(pem: &[u8]) -> Result<Self, TimestampError> {
        Self::new(Certificate::load_pem_chain(pem).map_err(TimestampError::malformed("trust anchor PEM"))?)
    }

    /// The anchors in DER certificates, as a trusted list gives them.
    pub fn from_der<'a>(certificates: impl IntoIterator<Item = &'a [u8]>) -> Result<Self, TimestampError> {
        let certificates = certificates
            .into_iter()
            .map(Certificate::from_der)
            .collect::<Result<Vec<_>, _>>()
            .map_err(TimestampError::malformed("trust anchor certificate"))?;
        Self::new(certificates)
    }

    /// The anchors given.
    pub fn new(certificates: Vec<Certificate>) -> Result<Self, TimestampError> {
        if certificates.is_empty() {
            return Err(TimestampError::NoTrustAnchors);
        }
        Ok(Self { certificates })
    }

    /// The subjects of the anchors, for the operator.
    pub fn subjects(&self) -> Vec<String> {
        self.certificates.iter().map(|anchor| anchor.tbs_certificate.subject.to_string()).collect()
    }

    /// Whether a chain leads from `certificate` through `pool` to an anchor, every link valid at `at`.
    fn check_chain(
        &self,
        certificate: &Certificate,
        pool: &[&Certificate],
        at: Duration,
    ) -> Result<(), TimestampError> {
        let mut current = certificate;
        for _ in 0..MAX_CHAIN_LENGTH {
            valid_at(current, at)?;
            if self.certificates.iter().any(|anchor| anchor == current) {
                return Ok(());
            }
            let issuer_name = &current.tbs_certificate.issuer;
            let mut refusal = None;
            for anchor in self.certificates.iter().filter(|anchor| &anchor.tbs_certificate.subject == issuer_name) {
                match check_issued(current, anchor) {
                    Ok(()) => return valid_at(anchor, at),
                    Err(error) => refusal = Some(error),
                }
            }
            let issuer = pool.iter().copied().find(|candidate| {
                &candidate.tbs_certificate.subject == issuer_name
                    && *candidate != current
                    && check_issued(current, candidate).is_ok()
            });
            match issuer {
                Some(issuer) => {
                    check_is_ca(issuer)?;
                    current = issuer;
                }
                None => {
                    return Err(refusal.unwrap_or_else(|| TimestampError::UntrustedChain {
                        subject: current.tbs_certificate.subject.to_string(),
                    }));
                }
            }
        }
        Err(TimestampError::UntrustedChain { subject: current.tbs_certificate.subject.to_string() })
    }
}

/// A token that passed every check, and what it says.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct VerifiedToken {
    /// The token itself (a DER ContentInfo), as it is stored and as `openssl ts -verify -token_in` reads it.
    pub token: Vec<u8>,
    /// When the authority says the imprint existed, to the second (rounded down).
    pub gen_time: DateTime,
    /// The fraction of a second after `gen_time` that the token gives, in nanoseconds (0 when it gives none).
    pub gen_time_nanos: u32,
    /// The subject of the authority's certificate, which signed the token.
    pub tsa: String,
    /// The name the token gives its authority (the TSTInfo's `tsa` field), when it gives a directory name.
    pub tsa_name_in_token: Option<String>,
    /// The policy the token was issued under.
    pub policy: ObjectIdentifier,
    /// The authority's serial number for the token (big-endian two's complement, as in DER).
    pub serial_number: Vec<u8>,
    /// The SHA-256 digest that was timestamped.
    pub imprint: [u8; 32],
    /// The nonce in the token, if any.
    pub nonce: Option<Vec<u8>>,
    /// The authority's certificate (DER).
    pub tsa_certificate: Vec<u8>,
}

impl VerifiedToken {
    /// genTime in seconds since the Unix epoch.
    pub fn gen_time_unix(&self) -> u64 {
        self.gen_time.unix_duration().as_secs()
    }

    /// genTime as `2026-12-04 10:00:00 UTC` (with the fraction, when the token gives one).
    pub fn gen_time_text(&self) -> String {
        utc_text(self.gen_time, self.gen_time_nanos)
    }
}

impl crate::TimestampRequest {
    /// Verifies an authority's answer to this request against `anchors`.
    pub fn verify_response(&self, response: &[u8], anchors: &TrustAnchors) -> Result<VerifiedToken, TimestampError> {
        verify_token(&token_from_response(response)?, self.expectation(), anchors)
    }
}

/// Verifies a token (a DER `TimeStampToken`) fully: its CMS structure, the signed attributes, the signature, the
/// signing certificate, its extended key usage and its chain to `anchors` at genTime, then the imprint, the nonce and
/// the policy against `expected`.
pub fn verify_token(
    token: &[u8],
    expected: &Expectation,
    anchors: &TrustAnchors,
) -> Result<VerifiedToken, TimestampError> {
    let signed_data = signed_data_of(token)?;
    let (tst_info_der, tst_info) = tst_info_of(&signed_data)?;

    let signers = signed_data.signer_infos.0.as_slice();
    let [signer] = signers else {
        return Err(TimestampError::SignerCount(signers.len()));
    };
    let certificates: Vec<&Certificate> = signed_data
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|choice| match choice {
            CertificateChoices::Certificate(certificate) => Some(certificate),
            CertificateChoices::Other(_) => None,
        })
        .collect();

    let attributes = signer.signed_attrs.as_ref().ok_or(TimestampError::MissingSignedAttributes)?;
    let digest = Hash::from_identifier(&signer.digest_alg)?;
    let content_type: ObjectIdentifier = single_attribute(attributes, ID_CONTENT_TYPE, "content-type")?
        .decode_as()
        .map_err(TimestampError::malformed("content-type attribute"))?;
    if content_type != ID_CT_TST_INFO {
        return Err(TimestampError::ContentTypeAttribute);
    }
    let message_digest: OctetString = single_attribute(attributes, ID_MESSAGE_DIGEST, "message-digest")?
        .decode_as()
        .map_err(TimestampError::malformed("message-digest attribute"))?;
    if message_digest.as_bytes() != digest.digest(tst_info_der) {
        return Err(TimestampError::MessageDigest);
    }

    let signer_certificate = find_signer(&signer.sid, &certificates)?;
    let signer_certificate_der =
        signer_certificate.to_der().map_err(TimestampError::malformed("the authority's certificate"))?;
    check_signing_certificate_attribute(attributes, signer_certificate, &signer_certificate_der)?;

    let scheme = Scheme::from_identifier(&signer.signature_algorithm, Some(digest))?;
    let signed_attributes_der = attributes.to_der().map_err(TimestampError::malformed("signed attributes"))?;
    scheme.verify(
        &signer_certificate.tbs_certificate.subject_public_key_info,
        &signed_attributes_der,
        signer.signature.as_bytes(),
    )?;

    check_timestamping_eku(signer_certificate)?;
    anchors.check_chain(signer_certificate, &certificates, tst_info.gen_time.unix_duration())?;

    let imprint = &tst_info.message_imprint;
    if imprint.hash_algorithm.oid != ID_SHA_256
        || imprint.hash_algorithm.parameters.as_ref().is_some_and(|parameters| !parameters.is_null())
    {
        return Err(TimestampError::ImprintAlgorithm(imprint.hash_algorithm.oid.to_string()));
    }
    if imprint.hashed_message.as_bytes() != expected.imprint {
        return Err(TimestampError::ImprintMismatch);
    }
    let nonce = tst_info.nonce.as_ref().map(|nonce| nonce.as_bytes().to_vec());
    if expected.nonce.is_some() && nonce != expected.nonce {
        return Err(TimestampError::NonceMismatch);
    }
    if let Some(policy) = expected.policy
        && policy != tst_info.policy
    {
        return Err(TimestampError::PolicyMismatch {
            expected: policy.to_string(),
            found: tst_info.policy.to_string(),
        });
    }

    Ok(VerifiedToken {
        token: token.to_vec(),
        gen_time: tst_info.gen_time.date_time(),
        gen_time_nanos: tst_info.gen_time.subsec_nanos(),
        tsa: signer_certificate.tbs_certificate.subject.to_string(),
        tsa_name_in_token: directory_name(tst_info.tsa.as_ref()),
        policy: tst_info.policy,
        serial_number: tst_info.serial_number.as_bytes().to_vec(),
        imprint: expected.imprint,
        nonce,
        tsa_certificate: signer_certificate_der,
    })
}

/// The token's SignedData, if it is a CMS SignedData over an id-ct-TSTInfo.
fn signed_data_of(token: &[u8]) -> Result<SignedData, TimestampError> {
    let content_info = ContentInfo::from_der(token).map_err(TimestampError::malformed("TimeStampToken"))?;
    if content_info.content_type != ID_SIGNED_DATA {
        return Err(TimestampError::NotSignedData(content_info.content_type.to_string()));
    }
    let signed_data: SignedData = content_info.content.decode_as().map_err(TimestampError::malformed("SignedData"))?;
    if signed_data.encap_content_info.econtent_type != ID_CT_TST_INFO {
        return Err(TimestampError::NotTstInfo(signed_data.encap_content_info.econtent_type.to_string()));
    }
    Ok(signed_data)
}

/// The signed TSTInfo's DER, and the TSTInfo.
fn tst_info_of(signed_data: &SignedData) -> Result<(&[u8], TstInfo), TimestampError> {
    let tst_info_der = signed_data
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or(TimestampError::MissingContent)?
        .decode_as::<OctetStringRef<'_>>()
        .map_err(TimestampError::malformed("eContent"))?
        .as_bytes();
    let tst_info = TstInfo::from_der(tst_info_der).map_err(TimestampError::malformed("TSTInfo"))?;
    Ok((tst_info_der, tst_info))
}

/// What a token says, read without checking anything but its shape: no signature, no certificate, no trust. For a
/// reader with no trust anchor, who can still compare the imprint with the bytes it should stamp, and show when and
/// by whom the token says it was made, as claims.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct TokenClaims {
    /// genTime, to the second (rounded down).
    pub gen_time: DateTime,
    /// The fraction of a second after `gen_time`, in nanoseconds.
    pub gen_time_nanos: u32,
    /// The name the token gives its authority (the TSTInfo's `tsa` field), when it gives a directory name.
    pub tsa_name_in_token: Option<String>,
    /// The imprint, when it is a SHA-256 digest; `None` for any other algorithm.
    pub sha256_imprint: Option<[u8; 32]>,
}

impl TokenClaims {
    /// genTime as `2026-12-04 10:00:00 UTC` (with the fraction, when the token gives one).
    pub fn gen_time_text(&self) -> String {
        utc_text(self.gen_time, self.gen_time_nanos)
    }
}

/// Reads what a token claims, unverified (see [`TokenClaims`]); refuses only what is not a TimeStampToken at all.
pub fn read_token_claims(token: &[u8]) -> Result<TokenClaims, TimestampError> {
    let signed_data = signed_data_of(token)?;
    let (_, tst_info) = tst_info_of(&signed_data)?;
    let imprint = &tst_info.message_imprint;
    let sha256_imprint = (imprint.hash_algorithm.oid == ID_SHA_256)
        .then(|| <[u8; 32]>::try_from(imprint.hashed_message.as_bytes()).ok())
        .flatten();
    Ok(TokenClaims {
        gen_time: tst_info.gen_time.date_time(),
        gen_time_nanos: tst_info.gen_time.subsec_nanos(),
        tsa_name_in_token: directory_name(tst_info.tsa.as_ref()),
        sha256_imprint,
    })
}

fn directory_name(name: Option<&GeneralName>) -> Option<String> {
    match name {
        Some(GeneralName::DirectoryName(name)) => Some(name.to_string()),
        _ => None,
    }
}

/// A time in UTC as `YYYY-MM-DD hh:mm:ss[.f...] UTC`, the fraction without trailing zeros.
fn utc_text(time: DateTime, nanos: u32) -> String {
    let fraction = if nanos == 0 { String::new() } else { format!(".{nanos:09}").trim_end_matches('0').to_owned() };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}{fraction} UTC",
        time.year(),
        time.month(),
        time.day(),
        time.hour(),
        time.minutes(),
        time.seconds()
    )
}

/// The one value of the one attribute `oid` among the signed attributes (RFC 5652 section 11 forbids repeats).
fn single_attribute<'a>(
    attributes: &'a SignedAttributes,
    oid: ObjectIdentifier,
    name: &'static str,
) -> Result<&'a Any, TimestampError> {
    let mut matching = attributes.iter().filter(|attribute| attribute.oid == oid);
    match (matching.next(), matching.next()) {
        (Some(attribute), None) if attribute.values.len() == 1 => {
            attribute.values.iter().next().ok_or(TimestampError::SignedAttribute(name))
        }
        _ => Err(TimestampError::SignedAttribute(name)),
    }
}

/// The certificate the signer identifier names, among those in the token.
fn find_signer<'a>(
    identifier: &SignerIdentifier,
    certificates: &[&'a Certificate],
) -> Result<&'a Certificate, TimestampError> {
    for certificate in certificates {
        let tbs = &certificate.tbs_certificate;
        let matches = match identifier {
            SignerIdentifier::IssuerAndSerialNumber(named) => {
                tbs.issuer == named.issuer && tbs.serial_number == named.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(named) => {
                match extension(certificate, ID_CE_SUBJECT_KEY_IDENTIFIER)? {
                    Some(extension) => {
                        SubjectKeyIdentifier::from_der(extension.extn_value.as_bytes())
                            .map_err(TimestampError::malformed("subject key identifier"))?
                            == *named
                    }
                    None => false,
                }
            }
        };
        if matches {
            return Ok(certificate);
        }
    }
    Err(TimestampError::SignerCertificateNotFound)
}

/// The signed ESSCertIDv2 (or ESSCertID) must name the signer's certificate: its first entry is the signer's
/// (RFC 5035 section 3). Each of the two attributes that is present must agree.
fn check_signing_certificate_attribute(
    attributes: &SignedAttributes,
    certificate: &Certificate,
    certificate_der: &[u8],
) -> Result<(), TimestampError> {
    let present = |oid| attributes.iter().any(|attribute| attribute.oid == oid);
    let (has_v2, has_v1) = (present(ID_AA_SIGNING_CERTIFICATE_V2), present(ID_AA_SIGNING_CERTIFICATE));
    if !has_v2 && !has_v1 {
        return Err(TimestampError::SigningCertificateAttributeMissing);
    }
    if has_v2 {
        let attribute: SigningCertificateV2 =
            single_attribute(attributes, ID_AA_SIGNING_CERTIFICATE_V2, "signing-certificate-v2")?
                .decode_as()
                .map_err(TimestampError::malformed("signing-certificate-v2 attribute"))?;
        let first = attribute.certs.first().ok_or(TimestampError::SigningCertificateMismatch)?;
        let hash = first.hash_algorithm.as_ref().map_or(Ok(Hash::Sha256), Hash::from_identifier)?;
        if first.cert_hash.as_bytes() != hash.digest(certificate_der) {
            return Err(TimestampError::SigningCertificateMismatch);
        }
        check_issuer_serial(first.issuer_serial.as_ref(), certificate)?;
    }
    if has_v1 {
        let attribute: SigningCertificate =
            single_attribute(attributes, ID_AA_SIGNING_CERTIFICATE, "signing-certificate")?
                .decode_as()
                .map_err(TimestampError::malformed("signing-certificate attribute"))?;
        let first = attribute.certs.first().ok_or(TimestampError::SigningCertificateMismatch)?;
        if first.cert_hash.as_bytes() != Sha1::digest(certificate_der).as_slice() {
            return Err(TimestampError::SigningCertificateMismatch);
        }
        check_issuer_serial(first.issuer_serial.as_ref(), certificate)?;
    }
    Ok(())
}

/// An IssuerSerial, when given, names the certificate's issuer (as a directory name) and its serial number.
fn check_issuer_serial(issuer_serial: Option<&IssuerSerial>, certificate: &Certificate) -> Result<(), TimestampError> {
    let Some(issuer_serial) = issuer_serial else {
        return Ok(());
    };
    let tbs = &certificate.tbs_certificate;
    let names_issuer =
        issuer_serial.issuer.iter().any(|name| matches!(name, GeneralName::DirectoryName(name) if *name == tbs.issuer));
    if issuer_serial.serial_number != tbs.serial_number || !names_issuer {
        return Err(TimestampError::SigningCertificateMismatch);
    }
    Ok(())
}

/// RFC 3161 section 2.3: the authority's certificate has exactly one extended key usage, critical, timeStamping alone.
fn check_timestamping_eku(certificate: &Certificate) -> Result<(), TimestampError> {
    let extension = extension(certificate, ID_CE_EXT_KEY_USAGE)?.ok_or(TimestampError::EkuMissing)?;
    if !extension.critical {
        return Err(TimestampError::EkuNotCritical);
    }
    let usage = ExtendedKeyUsage::from_der(extension.extn_value.as_bytes())
        .map_err(TimestampError::malformed("extended key usage"))?;
    if usage.0 != [ID_KP_TIME_STAMPING] {
        return Err(TimestampError::EkuNotTimestampingOnly);
    }
    Ok(())
}

/// An issuer in the chain (other than an anchor) must be a CA.
fn check_is_ca(certificate: &Certificate) -> Result<(), TimestampError> {
    let not_a_ca = || TimestampError::NotACa { subject: certificate.tbs_certificate.subject.to_string() };
    let extension = extension(certificate, ID_CE_BASIC_CONSTRAINTS)?.ok_or_else(not_a_ca)?;
    let constraints = BasicConstraints::from_der(extension.extn_value.as_bytes())
        .map_err(TimestampError::malformed("basic constraints"))?;
    if constraints.ca { Ok(()) } else { Err(not_a_ca()) }
}

/// Whether `certificate` was signed by `issuer`'s key.
fn check_issued(certificate: &Certificate, issuer: &Certificate) -> Result<(), TimestampError> {
    let refused = || TimestampError::CertificateSignature {
        subject: certificate.tbs_certificate.subject.to_string(),
        issuer: issuer.tbs_certificate.subject.to_string(),
    };
    if certificate.tbs_certificate.signature != certificate.signature_algorithm {
        return Err(refused());
    }
    let scheme = Scheme::from_identifier(&certificate.signature_algorithm, None)?;
    let tbs = certificate.tbs_certificate.to_der().map_err(TimestampError::malformed("TBSCertificate"))?;
    let signature = certificate.signature.as_bytes().ok_or_else(refused)?;
    scheme.verify(&issuer.tbs_certificate.subject_public_key_info, &tbs, signature).map_err(|error| match error {
        TimestampError::BadSignature => refused(),
        other => other,
    })
}

/// Whether `at` lies within the certificate's validity period.
fn valid_at(certificate: &Certificate, at: Duration) -> Result<(), TimestampError> {
    let validity = &certificate.tbs_certificate.validity;
    if validity.not_before.to_unix_duration() <= at && at <= validity.not_after.to_unix_duration() {
        Ok(())
    } else {
        Err(TimestampError::NotValidAtGenTime { subject: certificate.tbs_certificate.subject.to_string() })
    }
}

/// The certificate's extension `oid`, if it has it once; twice is refused (RFC 5280 section 4.2).
fn extension(certificate: &Certificate, oid: ObjectIdentifier) -> Result<Option<&Extension>, TimestampError> {
    let mut matching =
        certificate.tbs_certificate.extensions.iter().flatten().filter(|extension| extension.extn_id == oid);
    match (matching.next(), matching.next()) {
        (first, None) => Ok(first),
        (Some(_), Some(_)) | (None, Some(_)) => Err(TimestampError::DuplicateExtension(oid.to_string())),
    }
}
