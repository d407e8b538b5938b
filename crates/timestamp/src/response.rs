//! The authority's answer, `TimeStampResp` (RFC 3161 section 2.4.2).
//!
//! Decoded here rather than with `x509_tsp::TimeStampResp`, whose status comes from `cmpv2` 0.2: that crate declares
//! the PKIFailureInfo flags by bit number rather than by mask, so a failure such as unacceptedPolicy reads as badAlg.

use cms::content_info::ContentInfo;
use der::asn1::BitString;
use der::{Decode, Encode, Sequence};

use crate::TimestampError;

/// ```text
/// TimeStampResp ::= SEQUENCE  {
///     status                  PKIStatusInfo,
///     timeStampToken          TimeStampToken     OPTIONAL  }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct TimeStampResp {
    status: PkiStatusInfo,
    #[asn1(optional = "true")]
    time_stamp_token: Option<ContentInfo>,
}

/// ```text
/// PKIStatusInfo ::= SEQUENCE {
///     status        PKIStatus,
///     statusString  PKIFreeText     OPTIONAL,
///     failInfo      PKIFailureInfo  OPTIONAL  }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct PkiStatusInfo {
    status: u32,
    /// `PKIFreeText ::= SEQUENCE SIZE (1..MAX) OF UTF8String`: the authority's own words, never repeated to an
    /// operator log (a stranger's text), only decoded so that the failure bits after it can be read.
    #[asn1(optional = "true")]
    status_string: Option<Vec<String>>,
    #[asn1(optional = "true")]
    fail_info: Option<BitString>,
}

/// PKIStatus values (RFC 3161 section 2.4.2).
const STATUS_NAMES: [&str; 6] =
    ["granted", "grantedWithMods", "rejection", "waiting", "revocationWarning", "revocationNotification"];

/// The PKIFailureInfo bits RFC 3161 defines, by bit number.
const FAILURE_NAMES: [(usize, &str); 8] = [
    (0, "badAlg"),
    (2, "badRequest"),
    (5, "badDataFormat"),
    (14, "timeNotAvailable"),
    (15, "unacceptedPolicy"),
    (16, "unacceptedExtension"),
    (17, "addInfoNotAvailable"),
    (25, "systemFailure"),
];

/// The token in an authority's `TimeStampResp`, once its status says granted. The token is not verified yet.
pub fn token_from_response(response: &[u8]) -> Result<Vec<u8>, TimestampError> {
    let response = TimeStampResp::from_der(response).map_err(TimestampError::malformed("TimeStampResp"))?;
    let status = response.status.status;
    if status > 1 {
        let status = usize::try_from(status)
            .ok()
            .and_then(|index| STATUS_NAMES.get(index))
            .map_or_else(|| format!("unknown ({status})"), |name| (*name).to_owned());
        let fail_info = response.status.fail_info.map(|bits| {
            let set: Vec<usize> = bits.bits().enumerate().filter(|(_, set)| *set).map(|(index, _)| index).collect();
            set.iter()
                .map(|index| {
                    FAILURE_NAMES
                        .iter()
                        .find(|(bit, _)| bit == index)
                        .map_or_else(|| format!("bit {index}"), |(_, name)| (*name).to_owned())
                })
                .collect::<Vec<_>>()
                .join(", ")
        });
        return Err(TimestampError::NotGranted { status, fail_info });
    }
    let token = response.time_stamp_token.ok_or(TimestampError::NoToken)?;
    token.to_der().map_err(TimestampError::malformed("TimeStampToken"))
}
