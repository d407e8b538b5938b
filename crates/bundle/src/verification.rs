//! What checking a bundle finds: each [`Check`], the [`Part`] it is about, and the [`Verdict`] they add up to in a
//! [`Verification`]; or a [`VerifyError`] when the bundle could not be read at all. The verifier (`verify`) makes
//! these; the modules that check one part of a bag (`witnesses`, `time`) add their checks to the same report.

use std::fmt;

use custodia_core::Sha256;

use crate::printable::printable;

/// A bundle that could not be read at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("the bundle is not a readable tar file: {0}")]
    Io(#[from] std::io::Error),
    #[error("the bundle is malformed: {0}")]
    Malformed(String),
    /// The bundle asks the verifier to hold more than it will; no bundle a gateway writes does.
    #[error("the bundle is too large to check: {0}")]
    TooLarge(String),
}

/// The parts of a bundle that a check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// The BagIt structure and its checksum manifests.
    Bag,
    /// The artefact's bytes against the SHA-256 in its signed manifest.
    PayloadHash,
    /// The gateway's Ed25519 signature over the manifest.
    ManifestSignature,
    /// Whether the signing key is one the user trusts.
    TrustedKey,
    /// The log checkpoint's signature.
    Checkpoint,
    /// The witnesses' cosignatures on the checkpoint, under a witness policy: each line, and the quorum.
    Witnesses,
    /// A custody record's inclusion proof.
    InclusionProof,
    /// The custody history: complete, in order, and ending with this export.
    CustodyHistory,
    /// Each record's openings open its commitments, and its case is the manifest's (in a case bundle, the case
    /// listing's).
    Openings,
    /// A case bundle's contents against its case export record: every artefact bundle listed, none missing,
    /// none added, each byte for byte as exported.
    CaseContents,
    /// The trusted time (RFC 3161) the bag carries: its timestamp entry is in the log, stamps a prefix of the bag's
    /// checkpoint, and its token's imprint is that checkpoint's; under the reader's anchors, the token in full.
    Timestamp,
    /// The certificate (`data/REPORT.txt`) says what the checked files say. It is not evidence; a certificate
    /// that says anything else (an artefact's line dropped, a purpose reworded) is reported.
    Report,
    /// Of an artefact received from a partner gateway: the provider's chain ([`crate::ProviderChain`]) is the one
    /// the `received_from` record commits to, and is there exactly when such a record is. The provider's chain
    /// itself is checked as the provider's bag, each of its checks under its own part, named "provider's chain".
    ProviderChain,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bag => "bag structure and checksums",
            Self::PayloadHash => "payload hash",
            Self::ManifestSignature => "manifest signature",
            Self::TrustedKey => "trusted key",
            Self::Checkpoint => "checkpoint signature",
            Self::Witnesses => "witness cosignatures",
            Self::InclusionProof => "inclusion proof",
            Self::CustodyHistory => "custody history",
            Self::Openings => "record openings",
            Self::CaseContents => "case contents",
            Self::Timestamp => "trusted time (RFC 3161 timestamp)",
            Self::Report => "certificate (REPORT.txt)",
            Self::ProviderChain => "provider's chain",
        })
    }
}

/// One check and what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub part: Part,
    pub passed: bool,
    pub detail: String,
}

/// What the checks add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every check passed, and the signing key is one the user pinned.
    Valid,
    /// Every check passed but one: the bundle is signed by a key the user has not confirmed (none was pinned).
    /// Anyone can make such a bundle with a key of their own; it proves nothing until the key is confirmed.
    UnknownSigner,
    /// A check failed.
    Invalid,
}

/// Everything the verifier found.
#[derive(Debug, Clone, Default)]
pub struct Verification {
    pub checks: Vec<Check>,
    pub artefact: Option<String>,
    pub sha256: Option<Sha256>,
    pub records: usize,
    /// In a case bundle whose listing is the one its record commits to: what part of the case it holds, in words
    /// ("hearing h-... of case ... only, not the whole case", or "the whole case ...").
    pub scope: Option<String>,
    /// Tar entries read, nested ones included.
    pub files_read: usize,
    /// The most bytes the read held at once, as [`MAX_KEPT_BYTES`](crate::MAX_KEPT_BYTES) counts them.
    pub peak_kept_bytes: u64,
    /// How many of the failed checks are only "signed by a key nobody pinned".
    pub(crate) unconfirmed: usize,
    /// What the witnesses' cosignatures say, when the bundle carries a witness policy or one was pinned.
    pub witnesses: Option<Witnessed>,
    /// Of an artefact bundle: what its trusted time (RFC 3161) says, in words ("records ... existed no later than
    /// ... per ...", or "none (...)").
    pub timestamp: Option<String>,
}

/// What the witnesses' cosignatures on a bundle's checkpoint add up to, and under whose policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witnessed {
    /// Whether the policy is one the reader pinned; if not, it is the bundle's own, which proves nothing alone.
    pub pinned: bool,
    /// Whether the policy's quorum cosigned a checkpoint that covers every record.
    pub witnessed: bool,
    /// In words: whose policy, who cosigned and when, and what is not yet witnessed.
    pub summary: String,
}

impl Verification {
    pub fn verdict(&self) -> Verdict {
        let failed = self.checks.iter().filter(|check| !check.passed).count();
        if self.checks.is_empty() || failed > self.unconfirmed {
            Verdict::Invalid
        } else if failed > 0 {
            Verdict::UnknownSigner
        } else {
            Verdict::Valid
        }
    }

    pub fn is_valid(&self) -> bool {
        self.verdict() == Verdict::Valid
    }

    /// The parts that failed, each once, in a stable order.
    pub fn failed_parts(&self) -> Vec<Part> {
        let mut parts: Vec<Part> = self.checks.iter().filter(|c| !c.passed).map(|c| c.part).collect();
        parts.sort();
        parts.dedup();
        parts
    }

    pub(crate) fn pass(&mut self, part: Part, detail: impl Into<String>) {
        self.checks.push(Check { part, passed: true, detail: detail.into() });
    }

    pub(crate) fn fail(&mut self, part: Part, detail: impl Into<String>) {
        self.checks.push(Check { part, passed: false, detail: detail.into() });
    }

    pub(crate) fn check(&mut self, part: Part, ok: bool, pass: impl Into<String>, fail: impl Into<String>) -> bool {
        if ok {
            self.pass(part, pass)
        } else {
            self.fail(part, fail)
        }
        ok
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Details and the scope quote the bundle: each is made printable, so that it is one line and cannot
        // rewrite another (the verdict below included).
        for check in &self.checks {
            let mark = if check.passed { "ok  " } else { "FAIL" };
            writeln!(f, "{mark} {}: {}", check.part, printable(&check.detail))?;
        }
        if let Some(scope) = &self.scope {
            writeln!(f, "SCOPE: this is the bundle of {}", printable(scope))?;
        }
        if let Some(witnessed) = &self.witnesses {
            writeln!(f, "WITNESSES: {}", printable(&witnessed.summary))?;
        }
        if let Some(timestamp) = &self.timestamp {
            writeln!(f, "Timestamp: {}", printable(timestamp))?;
        }
        match self.verdict() {
            Verdict::Valid if self.witnesses.as_ref().is_some_and(|w| !w.pinned) => writeln!(
                f,
                "VALID: the evidence and its custody history are exactly what the gateway recorded; its witnesses \
                 are judged by the bundle's own policy, not one you pinned (check again with --policy and the policy \
                 from a source you trust)"
            ),
            Verdict::Valid => {
                writeln!(f, "VALID: the evidence and its custody history are exactly what the gateway recorded")
            }
            Verdict::UnknownSigner => writeln!(
                f,
                "NOT VERIFIED: unknown signer. The bundle is consistent, but signed by a key you have not confirmed; \
                 check again with --trusted-key and the gateway's key from a source you trust"
            ),
            Verdict::Invalid => {
                let parts: Vec<String> = self.failed_parts().iter().map(ToString::to_string).collect();
                writeln!(f, "NOT VALID: {} failed", parts.join(", "))
            }
        }
    }
}
