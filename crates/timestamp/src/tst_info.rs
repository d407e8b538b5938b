//! `TSTInfo` (RFC 3161 section 2.4.2), as `x509_tsp::TstInfo` but with a genTime that may carry fractions of a
//! second: der 0.7's `GeneralizedTime` takes whole seconds only, and many authorities give milliseconds.

use std::time::Duration;

use der::asn1::{Int, ObjectIdentifier};
use der::{DateTime, DecodeValue, EncodeValue, ErrorKind, FixedTag, Header, Length, Reader, Sequence, Tag, Writer};
use x509_cert::ext::Extensions;
use x509_cert::ext::pkix::name::GeneralName;
use x509_tsp::{Accuracy, MessageImprint, TspVersion};

/// ```text
/// TSTInfo ::= SEQUENCE  {
///     version          INTEGER  { v1(1) },
///     policy           TSAPolicyId,
///     messageImprint   MessageImprint,
///     serialNumber     INTEGER,
///     genTime          GeneralizedTime,
///     accuracy         Accuracy                 OPTIONAL,
///     ordering         BOOLEAN             DEFAULT FALSE,
///     nonce            INTEGER                  OPTIONAL,
///     tsa              [0] GeneralName          OPTIONAL,
///     extensions       [1] IMPLICIT Extensions   OPTIONAL  }
/// ```
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub(crate) struct TstInfo {
    pub(crate) version: TspVersion,
    pub(crate) policy: ObjectIdentifier,
    pub(crate) message_imprint: MessageImprint,
    pub(crate) serial_number: Int,
    pub(crate) gen_time: GenTime,
    #[asn1(optional = "true")]
    pub(crate) accuracy: Option<Accuracy>,
    #[asn1(default = "Default::default")]
    pub(crate) ordering: bool,
    #[asn1(optional = "true")]
    pub(crate) nonce: Option<Int>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub(crate) tsa: Option<GeneralName>,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    pub(crate) extensions: Option<Extensions>,
}

/// The most fraction digits read: nanoseconds.
const MAX_FRACTION_DIGITS: usize = 9;

/// A DER GeneralizedTime as RFC 3161 allows it: `YYYYMMDDhhmmss[.s...]Z`, the fraction without trailing zeros.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) struct GenTime {
    encoded: Vec<u8>,
    seconds: DateTime,
    nanos: u32,
}

impl GenTime {
    /// The whole seconds.
    pub(crate) fn date_time(&self) -> DateTime {
        self.seconds
    }

    /// Since the Unix epoch, with the fraction.
    pub(crate) fn unix_duration(&self) -> Duration {
        self.seconds.unix_duration() + Duration::from_nanos(u64::from(self.nanos))
    }

    /// The nanoseconds after the whole second.
    pub(crate) fn subsec_nanos(&self) -> u32 {
        self.nanos
    }

    fn parse(bytes: &[u8]) -> Option<(DateTime, u32)> {
        let (zone, body) = bytes.split_last()?;
        if *zone != b'Z' || body.len() < 14 || !body[..14].iter().all(u8::is_ascii_digit) {
            return None;
        }
        let number = |range: std::ops::Range<usize>| {
            body[range].iter().fold(0u16, |value, digit| value * 10 + u16::from(digit - b'0'))
        };
        let narrow = |value: u16| u8::try_from(value).ok();
        let seconds = DateTime::new(
            number(0..4),
            narrow(number(4..6))?,
            narrow(number(6..8))?,
            narrow(number(8..10))?,
            narrow(number(10..12))?,
            narrow(number(12..14))?,
        )
        .ok()?;
        let nanos = match &body[14..] {
            [] => 0,
            [b'.', fraction @ ..] => {
                let well_formed = !fraction.is_empty()
                    && fraction.len() <= MAX_FRACTION_DIGITS
                    && fraction.iter().all(u8::is_ascii_digit)
                    && fraction.last() != Some(&b'0');
                if !well_formed {
                    return None;
                }
                let digits = fraction.iter().fold(0u32, |value, digit| value * 10 + u32::from(digit - b'0'));
                digits * 10u32.pow(u32::try_from(MAX_FRACTION_DIGITS - fraction.len()).ok()?)
            }
            _ => return None,
        };
        Some((seconds, nanos))
    }
}

impl FixedTag for GenTime {
    const TAG: Tag = Tag::GeneralizedTime;
}

impl<'a> DecodeValue<'a> for GenTime {
    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        let encoded = reader.read_vec(header.length)?;
        let (seconds, nanos) = Self::parse(&encoded).ok_or_else(|| der::Error::from(ErrorKind::DateTime))?;
        Ok(Self { encoded, seconds, nanos })
    }
}

impl EncodeValue for GenTime {
    fn value_len(&self) -> der::Result<Length> {
        Length::try_from(self.encoded.len())
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        writer.write(&self.encoded)
    }
}

#[cfg(test)]
mod tests {
    use super::GenTime;

    #[test]
    fn whole_seconds_and_der_fractions_are_read_and_everything_else_refused() {
        let (seconds, nanos) = GenTime::parse(b"20261203165300Z").unwrap();
        assert_eq!((seconds.to_string().as_str(), nanos), ("2026-12-03T16:53:00Z", 0));
        assert_eq!(GenTime::parse(b"20261203165300.5Z").unwrap().1, 500_000_000);
        assert_eq!(GenTime::parse(b"20261203165300.123Z").unwrap().1, 123_000_000);
        assert_eq!(GenTime::parse(b"20261203165300.123456789Z").unwrap().1, 123_456_789);
        for refused in [
            &b"20261203165300.120Z"[..], // a trailing zero is not DER
            b"20261203165300.Z",
            b"20261203165300.1234567891Z",
            b"20261203165300",
            b"20261203165300+0100",
            b"2026120316530Z",
            b"20261303165300Z",
            b"20261203165360Z",
            b"2026120316530aZ",
            b"20261203165300,5Z",
            b"",
        ] {
            assert!(GenTime::parse(refused).is_none(), "{}", String::from_utf8_lossy(refused));
        }
    }
}
