//! Trusted time in a bag (RFC 3161): the `checkpoint_timestamp` entry a gateway with a Time-Stamp Authority puts
//! in an artefact bag ([`layout::TIMESTAMP_ENTRY`]), checked against the bag's own checkpoint and, when the reader
//! gives trust anchors, the token itself.
//!
//! What is checked, in order: the entry is a canonical timestamp entry; its inclusion proof places it in the log
//! of the bag's checkpoint; the consistency proof shows the stamped checkpoint (by size and root) is a prefix of
//! the bag's; the token's imprint is the SHA-256 of the stamped checkpoint's body (`<origin>\n<size>\n<root>\n`,
//! the origin the bag's checkpoint's). Then, with anchors (`--tsa-anchor`, or a trusted list's certificates), the
//! token in full ([`custodia_timestamp::verify_token`]); and with a trusted list, whether the token chains to a
//! granted QTST service's certificate: a *qualified* time stamp. Without anchors the token is reported as present
//! and unchecked, and does not fail the bag. Records below the stamped size existed no later than its genTime.

use custodia_ledger::{LogVerifier, SignedCheckpoint};
use custodia_timestamp::{CheckpointTimestamp, Expectation, TrustAnchors, read_token_claims, verify_token};

use crate::layout;
use crate::printable::echoed;
use crate::trusted_list::TrustedList;
use crate::verification::{Part, Verification};

/// What a bag without trusted time says.
pub(crate) const NONE: &str = "none (the gateway had no Time-Stamp Authority token covering these records)";

/// How far a record's own time may be after the time of a token that stamps it: the gateway's clock and the
/// authority's may disagree by this much (both are meant to follow UTC to within a second).
pub const MAX_CLOCK_SKEW_SECONDS: i64 = 300;

/// What the reader trusts for time: Time-Stamp Authority anchors, and ETSI TS 119 612 trusted lists.
#[derive(Debug, Clone, Default)]
pub struct TimeTrust {
    /// The anchors tokens must chain to: the `--tsa-anchor` files, or else the trusted lists' QTST certificates.
    anchors: Option<TrustAnchors>,
    lists: Vec<TrustedList>,
}

/// Why the reader's trust for time could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TimeTrustError {
    #[error("a Time-Stamp Authority anchor is not a PEM file of certificates: {0}")]
    Anchor(#[source] custodia_timestamp::TimestampError),
    #[error("{list}: service {service}'s certificate cannot be read: {source}")]
    ListCertificate {
        list: String,
        service: String,
        #[source]
        source: custodia_timestamp::TimestampError,
    },
}

impl TimeTrust {
    /// The reader's trust: the PEM files given as anchors (each one or more certificates), and the trusted lists.
    /// With no anchor file, the certificates of the lists' QTST services (whatever their status) are the anchors.
    pub fn new(anchor_pems: &[Vec<u8>], lists: Vec<TrustedList>) -> Result<Self, TimeTrustError> {
        let anchors = if anchor_pems.is_empty() {
            let mut der: Vec<&[u8]> = Vec::new();
            for list in &lists {
                for service in list.services.iter().filter(|service| service.is_qtst()) {
                    // Each read alone first, so that a bad one is named.
                    for certificate in &service.certificates {
                        TrustAnchors::from_der([certificate.as_slice()]).map_err(|source| {
                            TimeTrustError::ListCertificate {
                                list: list.describe(),
                                service: echoed(&service.name),
                                source,
                            }
                        })?;
                        der.push(certificate);
                    }
                }
            }
            (!der.is_empty()).then(|| TrustAnchors::from_der(der)).transpose().map_err(TimeTrustError::Anchor)?
        } else {
            Some(TrustAnchors::from_pem(&anchor_pems.concat()).map_err(TimeTrustError::Anchor)?)
        };
        Ok(Self { anchors, lists })
    }

    /// Whether anything was given.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_none() && self.lists.is_empty()
    }

    /// Whether a token over `expected` is qualified, in words: `qualified: ...` or `not qualified: <why>`.
    fn qualification(&self, token: &[u8], expected: &Expectation) -> String {
        if self.lists.is_empty() {
            return "not qualified: no --trusted-list given".to_owned();
        }
        let mut refused: Option<String> = None;
        for list in &self.lists {
            for service in list.services.iter().filter(|service| service.is_qtst()) {
                let chains = service.certificates.iter().any(|certificate| {
                    TrustAnchors::from_der([certificate.as_slice()])
                        .and_then(|anchor| verify_token(token, expected, &anchor))
                        .is_ok()
                });
                if !chains {
                    continue;
                }
                if service.is_granted_qtst() {
                    return format!(
                        "qualified: its authority is the granted QTST service {} of {}",
                        echoed(&service.name),
                        list.describe()
                    );
                }
                refused.get_or_insert_with(|| {
                    format!(
                        "not qualified: its QTST service {} in {} is {}, not granted",
                        echoed(&service.name),
                        list.describe(),
                        echoed(service.status_word())
                    )
                });
            }
        }
        refused.unwrap_or_else(|| "not qualified: it chains to no QTST service of the trusted lists given".to_owned())
    }
}

/// The trusted-time files of a bag.
pub(crate) struct TimestampFiles<'a> {
    pub entry: Option<&'a [u8]>,
    pub proof: Option<&'a [u8]>,
    pub consistency: Option<&'a [u8]>,
}

/// Checks a bag's trusted time, reporting under [`Part::Timestamp`] and summing up in `report.timestamp`.
/// `checkpoint` is the bag's checkpoint, already checked (`None` if it failed, and then so does this); `records` the
/// bag's records: their ledger indexes, and the times they give where they could be read; `included` checks the entry's inclusion proof against the bag's checkpoint, giving the
/// entry's index or why not.
pub(crate) fn check(
    files: &TimestampFiles<'_>,
    checkpoint: Option<&SignedCheckpoint>,
    records: &[(u64, Option<jiff::Timestamp>)],
    trust: Option<&TimeTrust>,
    included: impl FnOnce(&[u8], &[u8]) -> Result<u64, String>,
    report: &mut Verification,
) {
    let (entry, proof, consistency) = match (files.entry, files.proof, files.consistency) {
        (None, None, None) if trust.is_some() => {
            // A reader who pins a Time-Stamp Authority asks for trusted time; a bag without any is not silently
            // accepted as if it had it.
            return fail(
                report,
                "this bundle carries no RFC 3161 timestamp token covering its records, and a --tsa-anchor or \
                 --trusted-list was given: trusted time was asked for and there is none (export it again once the \
                 gateway's Time-Stamp Authority has stamped the log past its records)"
                    .to_owned(),
            );
        }
        (None, None, None) => {
            report.timestamp = Some(NONE.to_owned());
            return;
        }
        (Some(entry), Some(proof), Some(consistency)) => (entry, proof, consistency),
        _ => {
            let [entry, proof, consistency] = layout::TIMESTAMP_FILES;
            fail(report, format!("{entry}, {proof} and {consistency} come together, and the bundle lacks one"));
            return;
        }
    };
    let stamp = match CheckpointTimestamp::from_entry(entry) {
        Ok(stamp) => stamp,
        Err(err) => return fail(report, format!("{}: {err}", layout::TIMESTAMP_ENTRY)),
    };
    let Some(checkpoint) = checkpoint.map(|signed| &signed.checkpoint) else {
        return fail(report, format!("no checked {} to place the timestamp in", layout::CHECKPOINT));
    };
    let index = match included(entry, proof) {
        Ok(index) => index,
        Err(why) => return fail(report, format!("{}: {why}", layout::TIMESTAMP_PROOF)),
    };
    let stamped = custodia_ledger::merkle::Hash(stamp.root);
    if stamp.size > index
        || !crate::consistency::proves(consistency, (stamp.size, &stamped), (checkpoint.size, &checkpoint.root))
    {
        return fail(
            report,
            format!(
                "{} does not prove that the stamped checkpoint (size {}) is a prefix of {} (size {}): the token \
                 stamps another log",
                layout::TIMESTAMP_CONSISTENCY,
                stamp.size,
                layout::CHECKPOINT,
                checkpoint.size
            ),
        );
    }
    let indexes: Vec<u64> = records.iter().map(|(index, _)| *index).collect();
    let Some(scope) = scope(&indexes, stamp.size) else {
        return fail(report, format!("the timestamp stamps the log at size {}, before any of its records", stamp.size));
    };
    let body = CheckpointTimestamp::checkpoint_body(&checkpoint.origin, stamp.size, &stamp.root);
    let expected = Expectation::for_message(body.as_bytes());
    let claims = match read_token_claims(&stamp.token) {
        Ok(claims) => claims,
        Err(err) => return fail(report, format!("the token in {}: {err}", layout::TIMESTAMP_ENTRY)),
    };
    if claims.sha256_imprint != Some(expected.imprint) {
        return fail(
            report,
            format!(
                "the token of timestamp entry {index}: its imprint is not the SHA-256 of the stamped checkpoint (log \
                 {}, size {}): it stamps other bytes",
                echoed(&checkpoint.origin),
                stamp.size
            ),
        );
    }
    // The stamped records existed no later than the token's time, so none may say it was made after it.
    let gen_time = i64::try_from(claims.gen_time.unix_duration().as_secs()).unwrap_or(i64::MAX);
    let after = records.iter().find_map(|&(index, at)| {
        at.filter(|at| index < stamp.size && at.as_second() > gen_time.saturating_add(MAX_CLOCK_SKEW_SECONDS))
            .map(|at| (index, at))
    });
    if let Some((index, at)) = after {
        return fail(
            report,
            format!(
                "record #{index} says it was made at {at}, more than {MAX_CLOCK_SKEW_SECONDS} s after the token's time \
                 ({}), yet the stamped log holds it: the gateway's clock ran ahead, or its records' times are false",
                claims.gen_time_text()
            ),
        );
    }
    // One check says it all, so that a case bundle's summary of each of its bags keeps it.
    let placed = format!("timestamp entry {index} is in the log, and stamps a prefix of {}: ", layout::CHECKPOINT);
    let anchors = trust.and_then(|trust| trust.anchors.as_ref());
    let (Some(trust), Some(anchors)) = (trust, anchors) else {
        let tsa = claims.tsa_name_in_token.as_deref().map_or("an authority the token does not name".into(), echoed);
        let why = if trust.is_some_and(|trust| !trust.lists.is_empty()) {
            "no --tsa-anchor given, and the trusted lists name no QTST certificate"
        } else {
            "no --tsa-anchor given"
        };
        let summary = format!(
            "existed no later than {} per {tsa}, as the token claims, unchecked ({why}: check it with custodia \
             verify --tsa-anchor or openssl ts -verify): {scope}",
            claims.gen_time_text()
        );
        report.pass(Part::Timestamp, format!("{placed}{summary}"));
        report.timestamp = Some(summary);
        return;
    };
    match verify_token(&stamp.token, &expected, anchors) {
        Ok(verified) => {
            let tsa = echoed(verified.tsa_name_in_token.as_deref().unwrap_or(&verified.tsa));
            let qualification = trust.qualification(&stamp.token, &expected);
            let summary =
                format!("existed no later than {} per {tsa} ({qualification}): {scope}", verified.gen_time_text());
            report.pass(Part::Timestamp, format!("{placed}{summary}"));
            report.timestamp = Some(summary);
        }
        Err(err) => fail(report, format!("the token of timestamp entry {index} does not verify: {err}")),
    }
}

/// What the log at `size` holds of a bag's records (ledger indexes, in order), in words; `None` if none.
fn scope(records: &[u64], size: u64) -> Option<String> {
    let (held, newer): (Vec<u64>, Vec<u64>) = records.iter().partition(|&&record| record < size);
    let span = |records: &[u64]| match records {
        [one] => format!("record #{one}"),
        [first, .., last] => format!("records #{first} to #{last}"),
        [] => String::new(),
    };
    match (held.is_empty(), newer.is_empty()) {
        (true, _) => None,
        (false, true) => Some(format!("the log at size {size}, which holds every record of this bundle")),
        (false, false) => {
            Some(format!("the log at size {size}, which holds {}; newer than the token: {}", span(&held), span(&newer)))
        }
    }
}

/// A failed check of trusted time, which is also its summary.
fn fail(report: &mut Verification, why: String) {
    report.timestamp = Some(format!("INVALID: {why}"));
    report.fail(Part::Timestamp, why);
}

/// For a verifier that holds the bag's key: the checkpoint, if it opens under it.
pub(crate) fn open_checkpoint(bytes: &[u8], key: &LogVerifier) -> Option<SignedCheckpoint> {
    SignedCheckpoint::open(bytes, std::slice::from_ref(key)).ok()
}
