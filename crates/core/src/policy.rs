//! Restrictions on use set by the providing authority, and the decision on every use of an artefact.
//!
//! A State that provides evidence may restrict its use, and the receiving State must comply (Smuggling of Migrants
//! Protocol art. 10(2), UN paper para 16; UNTOC art. 18(19): no use for other proceedings, and no onward
//! transmission, without the provider's prior consent). A [`UsePolicy`] states those restrictions in a form the
//! gateway enforces on every read: [`decide`] takes the policy and a [`UseRequest`] and answers permit or deny,
//! with the reason the refusal page shows and the custody ledger records.
//!
//! The terms borrow from two standards partners already use:
//!
//! - **TLP 2.0** (FIRST Traffic Light Protocol) gives the sensitivity label, [`Tlp`]. Its sharing limits become
//!   rules on what a reader may do, set out in the table below.
//! - **IEP 2.0** (FIRST Information Exchange Policy) gives the rest: its POLICY END DATE is
//!   [`UsePolicy::expires_at`], and its TLP statement is the label. IEP's PERMITTED ACTIONS speak of network
//!   defence; the legal counterpart is the list of purposes the evidence was provided for
//!   ([`UsePolicy::permitted_purposes`], the speciality rule). IEP has no onward-transfer statement; the MLA
//!   rule "no onward transmission without consent" is [`UsePolicy::onward_transfer`].
//!
//! What each label allows, for a reader who passes every other term:
//!
//! | label              | view | download | export | transfer to another authority                          |
//! |--------------------|------|----------|--------|--------------------------------------------------------|
//! | `TLP:RED`          | yes  | no       | no     | only to an authority the provider has consented to     |
//! | `TLP:AMBER+STRICT` | yes  | yes      | yes    | only to an authority the provider has consented to     |
//! | `TLP:AMBER`        | yes  | yes      | yes    | only to an authority the provider has consented to     |
//! | `TLP:GREEN`        | yes  | yes      | yes    | as [`OnwardTransfer`] says                             |
//! | `TLP:CLEAR`        | yes  | yes      | yes    | as [`OnwardTransfer`] says                             |
//!
//! TLP:RED is "for the eyes and ears of individual recipients only": its description, signed manifest and custody
//! history may be looked at in the gateway, and its content never leaves it. Every response that carries an
//! artefact's bytes is a download for this table, whatever the client says it will do with them (a browser's
//! player can save what it plays), so TLP:RED content is not played in the browser either. AMBER+STRICT keeps the evidence inside the receiving organisation and AMBER inside it and
//! the partners it works with; a court bundle for the proceedings stays inside, a transfer to another authority
//! does not. TLP 2.0 lets a recipient share more widely than the label with the source's explicit permission, and
//! a recorded consent for a named transfer is that permission, so it opens the transfer whatever the label. It
//! does not open downloads or exports of TLP:RED evidence: to allow those the provider relabels the evidence. The
//! stricter of the label and the onward-transfer term always wins, so `TLP:GREEN` with
//! [`OnwardTransfer::WithConsent`] still needs consent, and [`OnwardTransfer::Prohibited`] refuses every transfer.

use std::fmt;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::{ActorId, CanonicalError, Label, Sha256};

/// A TLP 2.0 label, ordered from the least to the most restrictive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Tlp {
    #[serde(rename = "TLP:CLEAR")]
    Clear,
    #[serde(rename = "TLP:GREEN")]
    Green,
    #[serde(rename = "TLP:AMBER")]
    Amber,
    #[serde(rename = "TLP:AMBER+STRICT")]
    AmberStrict,
    #[serde(rename = "TLP:RED")]
    Red,
}

impl Tlp {
    pub const ALL: [Self; 5] = [Self::Clear, Self::Green, Self::Amber, Self::AmberStrict, Self::Red];

    /// The label exactly as TLP 2.0 writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Clear => "TLP:CLEAR",
            Self::Green => "TLP:GREEN",
            Self::Amber => "TLP:AMBER",
            Self::AmberStrict => "TLP:AMBER+STRICT",
            Self::Red => "TLP:RED",
        }
    }
}

crate::role::named!(Tlp, "TLP 2.0 label");

/// What a reader wants to do with an artefact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UseAction {
    /// Look at the artefact's description, signed manifest and custody history inside the gateway; no byte of its
    /// content.
    View,
    /// Receive the artefact's bytes, whole or in part: saving, and playing in a browser, alike.
    Download,
    /// Put the artefact into a court bundle for these proceedings.
    Export,
    /// Hand the artefact to another authority, outside the case.
    Transfer,
}

impl UseAction {
    pub const ALL: [Self; 4] = [Self::View, Self::Download, Self::Export, Self::Transfer];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::View => "view",
            Self::Download => "download",
            Self::Export => "export",
            Self::Transfer => "transfer",
        }
    }
}

crate::role::named!(UseAction, "use action");

/// Whether the evidence may be handed on to another authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnwardTransfer {
    /// Never, not even with consent recorded in this policy. Only a new policy from the provider changes this.
    Prohibited,
    /// Only to an authority the provider has consented to ([`UsePolicy::consented_transfers`]).
    WithConsent,
    /// Freely, to any authority in a permitted jurisdiction, as far as the TLP label allows.
    Permitted,
}

/// The provider's consent to hand the evidence to one named authority in one jurisdiction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferConsent {
    pub recipient: ActorId,
    pub jurisdiction: Label,
}

/// The restrictions a providing authority puts on the use of its evidence.
///
/// An empty list means "no restriction" on that term: any purpose, any member of the case, any jurisdiction.
///
/// # Approvals of wider use
///
/// A policy is the *current* terms, and approvals granted later are folded into them by [`UsePolicy::widened`]:
/// an approved purpose, recipient or jurisdiction joins its list, and an approved transfer joins
/// [`consented_transfers`](Self::consented_transfers). The history of how the terms got there lives in the
/// custody ledger, not in the policy: every change is a `PolicyChanged` record carrying the SHA-256 of the new
/// canonical policy ([`UsePolicy::sha256`]). Keeping approvals out of the document means `decide` reads one set
/// of terms, and avoids a cycle: a policy that named the ledger index of its own approval could not be hashed
/// into that same approval record, because the index is only known once the record is appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsePolicy {
    pub tlp: Tlp,
    /// The providing authority and its jurisdiction, in words: "IT: Procura di Roma".
    pub provider: Label,
    /// What the evidence may be used for; empty means any purpose.
    pub permitted_purposes: Vec<Label>,
    /// Which case members may use it; empty means any member of the case.
    pub permitted_recipients: Vec<ActorId>,
    /// Where it may be used, compared exactly (use one spelling, such as ISO 3166 codes); empty means anywhere.
    pub permitted_jurisdictions: Vec<Label>,
    pub onward_transfer: OnwardTransfer,
    /// Transfers the provider has consented to since the evidence was provided.
    #[serde(default)]
    pub consented_transfers: Vec<TransferConsent>,
    /// When permission to use the evidence lapses (IEP POLICY END DATE). From this instant on, nothing is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// How many days before `expires_at` permitted uses carry a warning; 0 for none.
    #[serde(default = "default_expiry_warning_days")]
    pub expiry_warning_days: u32,
}

const fn default_expiry_warning_days() -> u32 {
    UsePolicy::DEFAULT_EXPIRY_WARNING_DAYS
}

impl UsePolicy {
    pub const DEFAULT_EXPIRY_WARNING_DAYS: u32 = 14;

    /// A policy with no restriction beyond the label and the onward-transfer term, and no expiry.
    pub fn new(tlp: Tlp, provider: Label, onward_transfer: OnwardTransfer) -> Self {
        Self {
            tlp,
            provider,
            permitted_purposes: Vec::new(),
            permitted_recipients: Vec::new(),
            permitted_jurisdictions: Vec::new(),
            onward_transfer,
            consented_transfers: Vec::new(),
            expires_at: None,
            expiry_warning_days: Self::DEFAULT_EXPIRY_WARNING_DAYS,
        }
    }

    /// The SHA-256 of the policy's canonical JSON: what the custody ledger records.
    pub fn sha256(&self) -> Result<Sha256, CanonicalError> {
        Ok(Sha256::of(&crate::to_canonical_vec(self)?))
    }

    /// The policy as it stands once the provider has approved `request`.
    ///
    /// Approved purposes, recipients and jurisdictions join their lists (a list that is already empty, meaning
    /// "any", stays empty: adding to it would narrow it). Approved transfers join the consents; because the
    /// provider has now consented to a named transfer, [`OnwardTransfer::Prohibited`] becomes
    /// [`OnwardTransfer::WithConsent`]. Nothing already allowed is taken away, and entries are not repeated.
    pub fn widened(&self, request: &WidenRequest) -> UsePolicy {
        let mut policy = self.clone();
        widen(&mut policy.permitted_purposes, &request.purposes);
        widen(&mut policy.permitted_recipients, &request.recipients);
        widen(&mut policy.permitted_jurisdictions, &request.jurisdictions);
        if !request.transfers.is_empty() {
            if policy.onward_transfer == OnwardTransfer::Prohibited {
                policy.onward_transfer = OnwardTransfer::WithConsent;
            }
            for consent in &request.transfers {
                if !policy.consented_transfers.contains(consent) {
                    policy.consented_transfers.push(consent.clone());
                }
            }
        }
        policy
    }

    fn expiry_warning(&self, at: Timestamp) -> Option<UseWarning> {
        let expires_at = self.expires_at?;
        let left = expires_at.duration_since(at);
        let window = SignedDuration::from_hours(i64::from(self.expiry_warning_days) * 24);
        (left <= window).then(|| UseWarning::ExpiresSoon {
            at: expires_at,
            days_left: u32::try_from(left.as_secs() / 86_400).unwrap_or(u32::MAX),
        })
    }

    fn check_transfer(&self, recipient: &ActorId, jurisdiction: &Label) -> Result<(), DenyReason> {
        let consented =
            self.consented_transfers.iter().any(|c| c.recipient == *recipient && c.jurisdiction == *jurisdiction);
        match (self.onward_transfer, self.tlp) {
            (OnwardTransfer::Prohibited, _) => Err(DenyReason::OnwardTransferProhibited),
            _ if consented => Ok(()),
            (_, Tlp::Red | Tlp::AmberStrict) => {
                Err(DenyReason::TlpForbids { tlp: self.tlp, action: UseAction::Transfer })
            }
            (_, Tlp::Amber) | (OnwardTransfer::WithConsent, _) => Err(DenyReason::OnwardTransferNeedsConsent {
                recipient: recipient.clone(),
                jurisdiction: jurisdiction.clone(),
            }),
            (OnwardTransfer::Permitted, Tlp::Green | Tlp::Clear) => {
                check_jurisdiction(&self.permitted_jurisdictions, jurisdiction)
            }
        }
    }
}

fn widen<T: Clone + PartialEq>(list: &mut Vec<T>, more: &[T]) {
    if list.is_empty() {
        return;
    }
    for item in more {
        if !list.contains(item) {
            list.push(item.clone());
        }
    }
}

/// Whether `list` lets `item` through: an empty list restricts nothing.
fn allows<T: PartialEq>(list: &[T], item: &T) -> bool {
    list.is_empty() || list.contains(item)
}

fn check_jurisdiction(permitted: &[Label], jurisdiction: &Label) -> Result<(), DenyReason> {
    if allows(permitted, jurisdiction) {
        Ok(())
    } else {
        Err(DenyReason::JurisdictionNotPermitted { jurisdiction: jurisdiction.clone(), permitted: permitted.to_vec() })
    }
}

/// A request to widen the use of evidence beyond its policy, for the provider to approve or refuse.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WidenRequest {
    #[serde(default)]
    pub purposes: Vec<Label>,
    #[serde(default)]
    pub recipients: Vec<ActorId>,
    #[serde(default)]
    pub jurisdictions: Vec<Label>,
    /// Onward transfers to named authorities.
    #[serde(default)]
    pub transfers: Vec<TransferConsent>,
}

impl WidenRequest {
    /// A request that asks for nothing.
    pub fn is_empty(&self) -> bool {
        self.purposes.is_empty()
            && self.recipients.is_empty()
            && self.jurisdictions.is_empty()
            && self.transfers.is_empty()
    }
}

/// One use someone wants to make of an artefact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UseRequest {
    pub action: UseAction,
    /// The purpose the reader states, which the custody record repeats.
    pub purpose: Label,
    /// Who gets the evidence: the reader for a view, download or export; the receiving authority for a transfer.
    pub recipient: ActorId,
    /// The recipient's jurisdiction.
    pub recipient_jurisdiction: Label,
    /// When, as the caller's clock says.
    pub at: Timestamp,
}

/// The answer to a [`UseRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum UseDecision {
    Permit { warnings: Vec<UseWarning> },
    Deny(DenyReason),
}

impl UseDecision {
    pub fn is_permit(&self) -> bool {
        matches!(self, Self::Permit { .. })
    }
}

/// Why a use was refused. The `Display` text is written for the person refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum DenyReason {
    #[error("the providing authority's permission to use this evidence lapsed at {at}")]
    Expired { at: Timestamp },
    #[error("{}", tlp_refusal(*.tlp, *.action))]
    TlpForbids { tlp: Tlp, action: UseAction },
    #[error(
        "the providing authority permits use of this evidence only for: {}; not for \"{purpose}\"",
        join(.permitted)
    )]
    PurposeNotPermitted { purpose: Label, permitted: Vec<Label> },
    #[error("the providing authority has not named {recipient} among those who may use this evidence")]
    RecipientNotPermitted { recipient: ActorId },
    #[error(
        "the providing authority permits use of this evidence only in: {}; not in \"{jurisdiction}\"",
        join(.permitted)
    )]
    JurisdictionNotPermitted { jurisdiction: Label, permitted: Vec<Label> },
    #[error("the providing authority prohibits any onward transfer of this evidence")]
    OnwardTransferProhibited,
    #[error(
        "onward transfer to {recipient} in \"{jurisdiction}\" needs the providing authority's consent; \
         request wider use first"
    )]
    OnwardTransferNeedsConsent { recipient: ActorId, jurisdiction: Label },
}

impl DenyReason {
    /// A short, stable name for the reason, the same as its JSON `reason` tag.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Expired { .. } => "expired",
            Self::TlpForbids { .. } => "tlp_forbids",
            Self::PurposeNotPermitted { .. } => "purpose_not_permitted",
            Self::RecipientNotPermitted { .. } => "recipient_not_permitted",
            Self::JurisdictionNotPermitted { .. } => "jurisdiction_not_permitted",
            Self::OnwardTransferProhibited => "onward_transfer_prohibited",
            Self::OnwardTransferNeedsConsent { .. } => "onward_transfer_needs_consent",
        }
    }
}

fn tlp_refusal(tlp: Tlp, action: UseAction) -> String {
    let rule = match tlp {
        Tlp::Red => {
            "is for the eyes and ears of its recipients only: its description may be viewed in the gateway, and its \
             content never leaves it, not even to be played"
        }
        Tlp::AmberStrict => "may not leave the receiving organisation without the providing authority's consent",
        Tlp::Amber => {
            "may not leave the receiving organisation and its partners without the providing authority's consent"
        }
        Tlp::Green | Tlp::Clear => "may be shared within the community",
    };
    format!("{tlp} evidence {rule}, so it may not be {}", action_past_participle(action))
}

const fn action_past_participle(action: UseAction) -> &'static str {
    match action {
        UseAction::View => "viewed",
        UseAction::Download => "downloaded",
        UseAction::Export => "exported",
        UseAction::Transfer => "transferred",
    }
}

fn join(items: &[Label]) -> String {
    items.iter().map(Label::as_str).collect::<Vec<_>>().join(", ")
}

/// Something the reader should know about a use that was permitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "warning", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum UseWarning {
    /// Permission lapses at `at`, `days_left` whole days from now (0: less than a day).
    ExpiresSoon { at: Timestamp, days_left: u32 },
}

impl fmt::Display for UseWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ExpiresSoon { at, days_left: 0 } => {
                write!(f, "permission to use this evidence lapses at {at}, in less than a day")
            }
            Self::ExpiresSoon { at, days_left: 1 } => {
                write!(f, "permission to use this evidence lapses at {at}, in 1 day")
            }
            Self::ExpiresSoon { at, days_left } => {
                write!(f, "permission to use this evidence lapses at {at}, in {days_left} days")
            }
        }
    }
}

/// Decides whether `policy` allows `request`.
///
/// The terms are checked in this order, and the first that fails is the reason given: expiry (nothing is allowed
/// once permission lapses, exactly at `expires_at` included); the TLP label's limits on downloads and exports;
/// the purpose; then, for a view, download or export, the reader and their jurisdiction, and for a transfer, the
/// onward-transfer term, consents and label as the module documentation sets out, and the receiving authority's
/// jurisdiction. A transfer's recipient is an authority outside the case, so it is not held to
/// `permitted_recipients`; a consented transfer names its jurisdiction and so is not held to
/// `permitted_jurisdictions`.
pub fn decide(policy: &UsePolicy, request: &UseRequest) -> UseDecision {
    match check(policy, request) {
        Ok(()) => UseDecision::Permit { warnings: policy.expiry_warning(request.at).into_iter().collect() },
        Err(reason) => UseDecision::Deny(reason),
    }
}

fn check(policy: &UsePolicy, request: &UseRequest) -> Result<(), DenyReason> {
    if let Some(at) = policy.expires_at
        && request.at >= at
    {
        return Err(DenyReason::Expired { at });
    }
    if policy.tlp == Tlp::Red && matches!(request.action, UseAction::Download | UseAction::Export) {
        return Err(DenyReason::TlpForbids { tlp: policy.tlp, action: request.action });
    }
    if !allows(&policy.permitted_purposes, &request.purpose) {
        return Err(DenyReason::PurposeNotPermitted {
            purpose: request.purpose.clone(),
            permitted: policy.permitted_purposes.clone(),
        });
    }
    match request.action {
        UseAction::View | UseAction::Download | UseAction::Export => {
            if !allows(&policy.permitted_recipients, &request.recipient) {
                return Err(DenyReason::RecipientNotPermitted { recipient: request.recipient.clone() });
            }
            check_jurisdiction(&policy.permitted_jurisdictions, &request.recipient_jurisdiction)
        }
        UseAction::Transfer => policy.check_transfer(&request.recipient, &request.recipient_jurisdiction),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn label(text: &str) -> Label {
        Label::new(text).unwrap()
    }

    fn actor(text: &str) -> ActorId {
        ActorId::new(text).unwrap()
    }

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    const PURPOSE: &str = "prosecution RG 1234/2026";
    const EXPIRY: &str = "2027-06-30T00:00:00Z";

    fn policy() -> UsePolicy {
        UsePolicy {
            tlp: Tlp::Amber,
            provider: label("IT: Procura di Roma"),
            permitted_purposes: vec![label(PURPOSE)],
            permitted_recipients: vec![actor("acct-pm"), actor("acct-def")],
            permitted_jurisdictions: vec![label("IT"), label("DE")],
            onward_transfer: OnwardTransfer::WithConsent,
            consented_transfers: Vec::new(),
            expires_at: Some(ts(EXPIRY)),
            expiry_warning_days: 14,
        }
    }

    /// A policy that restricts nothing but what the label and the onward-transfer term say.
    fn open(tlp: Tlp, onward_transfer: OnwardTransfer) -> UsePolicy {
        UsePolicy::new(tlp, label("IT: Procura di Roma"), onward_transfer)
    }

    fn request(action: UseAction) -> UseRequest {
        UseRequest {
            action,
            purpose: label(PURPOSE),
            recipient: actor("acct-pm"),
            recipient_jurisdiction: label("DE"),
            at: ts("2027-01-15T09:30:00Z"),
        }
    }

    fn transfer_to(recipient: &str, jurisdiction: &str) -> UseRequest {
        UseRequest {
            recipient: actor(recipient),
            recipient_jurisdiction: label(jurisdiction),
            ..request(UseAction::Transfer)
        }
    }

    fn denied(policy: &UsePolicy, request: &UseRequest) -> DenyReason {
        match decide(policy, request) {
            UseDecision::Deny(reason) => reason,
            permit => panic!("expected a refusal, got {permit:?} for {request:?}"),
        }
    }

    fn warnings(policy: &UsePolicy, request: &UseRequest) -> Vec<UseWarning> {
        match decide(policy, request) {
            UseDecision::Permit { warnings } => warnings,
            UseDecision::Deny(reason) => panic!("expected a permit, got \"{reason}\" for {request:?}"),
        }
    }

    #[test]
    fn permits_uses_within_every_term() {
        for action in [UseAction::View, UseAction::Download, UseAction::Export] {
            assert_eq!(warnings(&policy(), &request(action)), []);
        }
    }

    #[test]
    fn every_deny_reason_is_reachable_and_explained() {
        let mut red = policy();
        red.tlp = Tlp::Red;
        let mut strict = policy();
        strict.tlp = Tlp::AmberStrict;
        let mut prohibited = policy();
        prohibited.onward_transfer = OnwardTransfer::Prohibited;
        let cases = [
            (
                policy(),
                UseRequest { at: ts("2027-07-01T00:00:00Z"), ..request(UseAction::View) },
                "the providing authority's permission to use this evidence lapsed at 2027-06-30T00:00:00Z",
            ),
            (
                red,
                request(UseAction::Download),
                "TLP:RED evidence is for the eyes and ears of its recipients only: its description may be viewed in \
                 the gateway, and its content never leaves it, not even to be played, so it may not be downloaded",
            ),
            (
                strict,
                transfer_to("police-fr", "FR"),
                "TLP:AMBER+STRICT evidence may not leave the receiving organisation without the providing \
                 authority's consent, so it may not be transferred",
            ),
            (
                policy(),
                UseRequest { purpose: label("press briefing"), ..request(UseAction::View) },
                "the providing authority permits use of this evidence only for: prosecution RG 1234/2026; \
                 not for \"press briefing\"",
            ),
            (
                policy(),
                UseRequest { recipient: actor("acct-journalist"), ..request(UseAction::View) },
                "the providing authority has not named acct-journalist among those who may use this evidence",
            ),
            (
                policy(),
                UseRequest { recipient_jurisdiction: label("FR"), ..request(UseAction::View) },
                "the providing authority permits use of this evidence only in: IT, DE; not in \"FR\"",
            ),
            (
                prohibited,
                transfer_to("police-fr", "FR"),
                "the providing authority prohibits any onward transfer of this evidence",
            ),
            (
                policy(),
                transfer_to("police-fr", "FR"),
                "onward transfer to police-fr in \"FR\" needs the providing authority's consent; request wider use \
                 first",
            ),
        ];
        let mut codes = BTreeSet::new();
        for (policy, request, message) in cases {
            let reason = denied(&policy, &request);
            assert_eq!(reason.to_string(), message);
            let json = serde_json::to_value(&reason).unwrap();
            assert_eq!(json["reason"], reason.code());
            assert_eq!(serde_json::from_value::<DenyReason>(json).unwrap(), reason);
            codes.insert(reason.code());
        }
        let all = [
            "expired",
            "tlp_forbids",
            "purpose_not_permitted",
            "recipient_not_permitted",
            "jurisdiction_not_permitted",
            "onward_transfer_prohibited",
            "onward_transfer_needs_consent",
        ];
        assert_eq!(codes, BTreeSet::from(all));
    }

    #[test]
    fn exactly_at_expiry_is_too_late() {
        let expiry = ts(EXPIRY);
        let just_before = expiry.checked_sub(SignedDuration::from_nanos(1)).unwrap();
        assert!(decide(&policy(), &UseRequest { at: just_before, ..request(UseAction::View) }).is_permit());
        for at in [expiry, expiry.checked_add(SignedDuration::from_hours(1)).unwrap()] {
            assert_eq!(
                denied(&policy(), &UseRequest { at, ..request(UseAction::View) }),
                DenyReason::Expired { at: expiry }
            );
        }
        // Expiry comes first: a lapsed policy refuses even what it would otherwise allow.
        let mut never = policy();
        never.expires_at = None;
        assert!(decide(&never, &UseRequest { at: Timestamp::MAX, ..request(UseAction::View) }).is_permit());
    }

    #[test]
    fn warns_inside_the_window_only() {
        let expiry = ts(EXPIRY);
        let before = |duration: SignedDuration| UseRequest {
            at: expiry.checked_sub(duration).unwrap(),
            ..request(UseAction::Download)
        };
        let days = |n: i64| SignedDuration::from_hours(24 * n);
        let soon = |days_left| vec![UseWarning::ExpiresSoon { at: expiry, days_left }];

        assert_eq!(warnings(&policy(), &before(days(14) + SignedDuration::from_nanos(1))), []);
        assert_eq!(warnings(&policy(), &before(days(14))), soon(14));
        assert_eq!(warnings(&policy(), &before(days(13) + SignedDuration::from_hours(12))), soon(13));
        assert_eq!(warnings(&policy(), &before(SignedDuration::from_hours(1))), soon(0));

        let mut quiet = policy();
        quiet.expiry_warning_days = 0;
        assert_eq!(warnings(&quiet, &before(SignedDuration::from_nanos(1))), []);

        assert_eq!(
            soon(0)[0].to_string(),
            "permission to use this evidence lapses at 2027-06-30T00:00:00Z, in less than a day"
        );
        assert_eq!(soon(1)[0].to_string(), "permission to use this evidence lapses at 2027-06-30T00:00:00Z, in 1 day");
        assert_eq!(soon(9)[0].to_string(), "permission to use this evidence lapses at 2027-06-30T00:00:00Z, in 9 days");
    }

    #[test]
    fn empty_lists_mean_any() {
        let open = open(Tlp::Green, OnwardTransfer::Permitted);
        for (purpose, recipient, jurisdiction) in [("anything", "anyone", "XX"), (PURPOSE, "acct-pm", "IT")] {
            for action in UseAction::ALL {
                let request = UseRequest {
                    action,
                    purpose: label(purpose),
                    recipient: actor(recipient),
                    recipient_jurisdiction: label(jurisdiction),
                    ..request(action)
                };
                assert_eq!(warnings(&open, &request), []);
            }
        }
    }

    /// What each label allows when no other term restricts: the table in the module documentation.
    #[test]
    fn tlp_labels_limit_actions_as_documented() {
        let expected = [
            //                         view  download export transfer
            (Tlp::Red, /*          */ [true, false, false, false]),
            (Tlp::AmberStrict, /*  */ [true, true, true, false]),
            (Tlp::Amber, /*        */ [true, true, true, false]),
            (Tlp::Green, /*        */ [true, true, true, true]),
            (Tlp::Clear, /*        */ [true, true, true, true]),
        ];
        for (tlp, row) in expected {
            let policy = open(tlp, OnwardTransfer::Permitted);
            for (action, allowed) in UseAction::ALL.into_iter().zip(row) {
                assert_eq!(decide(&policy, &request(action)).is_permit(), allowed, "{tlp} / {action}");
            }
        }
        assert_eq!(
            denied(&open(Tlp::Amber, OnwardTransfer::Permitted), &request(UseAction::Transfer)).code(),
            "onward_transfer_needs_consent"
        );
        assert_eq!(
            denied(&open(Tlp::Red, OnwardTransfer::Permitted), &request(UseAction::Export)),
            DenyReason::TlpForbids { tlp: Tlp::Red, action: UseAction::Export }
        );

        // The provider's consent to a named transfer is TLP 2.0's "explicit permission from the source".
        for tlp in Tlp::ALL {
            let mut policy = open(tlp, OnwardTransfer::Permitted);
            policy.consented_transfers.push(TransferConsent { recipient: actor("acct-pm"), jurisdiction: label("DE") });
            assert!(decide(&policy, &request(UseAction::Transfer)).is_permit(), "{tlp}");
        }
    }

    #[test]
    fn onward_transfer_terms() {
        let consent = TransferConsent { recipient: actor("police-fr"), jurisdiction: label("FR") };

        // Prohibited holds even against a consent written into the policy by hand.
        let mut prohibited = open(Tlp::Clear, OnwardTransfer::Prohibited);
        prohibited.consented_transfers.push(consent.clone());
        assert_eq!(denied(&prohibited, &transfer_to("police-fr", "FR")), DenyReason::OnwardTransferProhibited);

        // With consent: only the named authority in the named jurisdiction, which need not be otherwise permitted.
        let mut with_consent = policy();
        with_consent.consented_transfers.push(consent);
        assert!(decide(&with_consent, &transfer_to("police-fr", "FR")).is_permit());
        assert_eq!(denied(&with_consent, &transfer_to("police-fr", "BE")).code(), "onward_transfer_needs_consent");
        assert_eq!(denied(&with_consent, &transfer_to("police-be", "FR")).code(), "onward_transfer_needs_consent");
        // The purpose still binds a consented transfer.
        let other_purpose = UseRequest { purpose: label("another case"), ..transfer_to("police-fr", "FR") };
        assert_eq!(denied(&with_consent, &other_purpose).code(), "purpose_not_permitted");

        // Permitted: any authority, not held to the case's recipients, but held to the jurisdictions.
        let mut permitted = open(Tlp::Green, OnwardTransfer::Permitted);
        permitted.permitted_recipients = vec![actor("acct-pm")];
        permitted.permitted_jurisdictions = vec![label("IT")];
        assert!(decide(&permitted, &transfer_to("police-it", "IT")).is_permit());
        assert_eq!(
            denied(&permitted, &transfer_to("police-fr", "FR")),
            DenyReason::JurisdictionNotPermitted { jurisdiction: label("FR"), permitted: vec![label("IT")] }
        );
        // GREEN with the consent term still needs consent: the stricter term wins.
        assert_eq!(
            denied(&open(Tlp::Green, OnwardTransfer::WithConsent), &transfer_to("police-fr", "FR")).code(),
            "onward_transfer_needs_consent"
        );
    }

    #[test]
    fn widening_then_permitted() {
        let before = policy();
        let asks = [
            UseRequest { purpose: label("appeal"), ..request(UseAction::View) },
            UseRequest { recipient: actor("acct-expert"), ..request(UseAction::Download) },
            UseRequest { recipient_jurisdiction: label("FR"), ..request(UseAction::Export) },
            transfer_to("police-fr", "FR"),
        ];
        for ask in &asks {
            assert!(!decide(&before, ask).is_permit());
        }
        let widen = WidenRequest {
            purposes: vec![label("appeal"), label(PURPOSE)],
            recipients: vec![actor("acct-expert")],
            jurisdictions: vec![label("FR")],
            transfers: vec![TransferConsent { recipient: actor("police-fr"), jurisdiction: label("FR") }],
        };
        let after = before.widened(&widen);
        for ask in &asks {
            assert!(decide(&after, ask).is_permit(), "{ask:?}");
        }
        assert_eq!(after.permitted_purposes, [label(PURPOSE), label("appeal")], "no repeats");
        assert_eq!(after.widened(&widen), after, "approving twice changes nothing");
        assert_ne!(after.sha256().unwrap(), before.sha256().unwrap());
        assert_eq!(before.widened(&WidenRequest::default()), before);
        assert!(WidenRequest::default().is_empty() && !widen.is_empty());

        // "Any" stays "any": adding to an empty list would narrow it.
        let open = open(Tlp::Clear, OnwardTransfer::Prohibited).widened(&widen);
        assert!(open.permitted_purposes.is_empty());
        assert!(open.permitted_recipients.is_empty());
        assert!(open.permitted_jurisdictions.is_empty());
        // Consenting to a named transfer lifts an outright prohibition to "with consent", no further.
        assert_eq!(open.onward_transfer, OnwardTransfer::WithConsent);
        assert!(decide(&open, &transfer_to("police-fr", "FR")).is_permit());
        assert_eq!(denied(&open, &transfer_to("police-be", "BE")).code(), "onward_transfer_needs_consent");
    }

    #[test]
    fn canonical_json_is_stable() {
        let mut policy = policy();
        policy.consented_transfers.push(TransferConsent { recipient: actor("police-fr"), jurisdiction: label("FR") });
        let bytes = crate::to_canonical_vec(&policy).unwrap();
        let expected = concat!(
            r#"{"consented_transfers":[{"jurisdiction":"FR","recipient":"police-fr"}],"#,
            r#""expires_at":"2027-06-30T00:00:00Z","expiry_warning_days":14,"onward_transfer":"with_consent","#,
            r#""permitted_jurisdictions":["IT","DE"],"permitted_purposes":["prosecution RG 1234/2026"],"#,
            r#""permitted_recipients":["acct-pm","acct-def"],"provider":"IT: Procura di Roma","tlp":"TLP:AMBER"}"#
        );
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), expected);
        assert_eq!(crate::from_canonical_slice::<UsePolicy>(&bytes).unwrap(), policy);
        assert_eq!(policy.sha256().unwrap(), Sha256::of(expected.as_bytes()));
        assert_eq!(policy.sha256().unwrap().to_hex(), GOLDEN_SHA256);

        let open = crate::to_canonical_vec(&open(Tlp::AmberStrict, OnwardTransfer::Prohibited)).unwrap();
        assert_eq!(
            String::from_utf8(open).unwrap(),
            concat!(
                r#"{"consented_transfers":[],"expiry_warning_days":14,"onward_transfer":"prohibited","#,
                r#""permitted_jurisdictions":[],"permitted_purposes":[],"permitted_recipients":[],"#,
                r#""provider":"IT: Procura di Roma","tlp":"TLP:AMBER+STRICT"}"#
            )
        );
    }

    /// `sha256sum` of the expected bytes above.
    const GOLDEN_SHA256: &str = "99da7c4a59b935f5397a69cfbc88b3f871bb5563eb1df75bc808846da7ab25fb";

    #[test]
    fn parsing_is_strict_where_it_matters() {
        for tlp in Tlp::ALL {
            assert_eq!(serde_json::to_string(&tlp).unwrap(), format!("\"{tlp}\""));
            assert_eq!(tlp.to_string().parse::<Tlp>(), Ok(tlp));
        }
        for action in UseAction::ALL {
            assert_eq!(serde_json::to_string(&action).unwrap(), format!("\"{action}\""));
            assert_eq!(action.to_string().parse::<UseAction>(), Ok(action));
        }
        assert!("TLP:WHITE".parse::<Tlp>().is_err());
        assert!("tlp:red".parse::<Tlp>().is_err());
        assert!(serde_json::from_str::<Tlp>(r#""TLP:AMBER+STRICT""#).is_ok());

        let minimal = r#"{"tlp":"TLP:RED","provider":"DE: GBA","permitted_purposes":[],"permitted_recipients":[],
            "permitted_jurisdictions":[],"onward_transfer":"prohibited"}"#;
        let parsed: UsePolicy = serde_json::from_str(minimal).unwrap();
        assert_eq!(parsed, UsePolicy::new(Tlp::Red, label("DE: GBA"), OnwardTransfer::Prohibited));
        assert!(serde_json::from_str::<UsePolicy>(&minimal.replace("\"tlp\"", "\"colour\"")).is_err());
        assert!(serde_json::from_str::<UsePolicy>(&minimal.replace("\"permitted_purposes\":[],", "")).is_err());
        assert!(serde_json::from_str::<UsePolicy>(&minimal.replace('}', ",\"extra\":1}")).is_err());
        assert!(serde_json::from_str::<UsePolicy>(&minimal.replace("DE: GBA", "")).is_err());
        assert!(serde_json::from_str::<WidenRequest>(r#"{"purposes":["appeal"]}"#).is_ok());
        assert!(serde_json::from_str::<WidenRequest>(r#"{"expires_at":"2030-01-01T00:00:00Z"}"#).is_err());

        let permit = decide(&policy(), &UseRequest { at: ts("2027-06-29T00:00:00Z"), ..request(UseAction::View) });
        assert_eq!(
            serde_json::to_string(&permit).unwrap(),
            r#"{"decision":"permit","warnings":[{"warning":"expires_soon","at":"2027-06-30T00:00:00Z","days_left":1}]}"#
        );
        let deny = decide(&open(Tlp::Red, OnwardTransfer::Prohibited), &request(UseAction::Download));
        let json = serde_json::to_string(&deny).unwrap();
        assert_eq!(json, r#"{"decision":"deny","reason":"tlp_forbids","tlp":"TLP:RED","action":"download"}"#);
        assert_eq!(serde_json::from_str::<UseDecision>(&json).unwrap(), deny);
    }

    fn any_label() -> impl Strategy<Value = Label> {
        prop::sample::select(vec!["IT", "DE", "FR", PURPOSE, "appeal"]).prop_map(label)
    }

    fn any_actor() -> impl Strategy<Value = ActorId> {
        prop::sample::select(vec!["acct-pm", "acct-def", "police-fr"]).prop_map(actor)
    }

    fn any_timestamp() -> impl Strategy<Value = Timestamp> {
        let near = (1_700_000_000i64..1_900_000_000, 0..1_000_000_000i32);
        let anywhere = (Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(), 0..1_000_000_000i32);
        prop_oneof![near, anywhere].prop_map(|(second, nanos)| Timestamp::new(second, nanos).unwrap_or(Timestamp::MAX))
    }

    fn any_tlp() -> impl Strategy<Value = Tlp> {
        prop::sample::select(Tlp::ALL.to_vec())
    }

    fn any_onward() -> impl Strategy<Value = OnwardTransfer> {
        prop::sample::select(vec![OnwardTransfer::Prohibited, OnwardTransfer::WithConsent, OnwardTransfer::Permitted])
    }

    fn any_consent() -> impl Strategy<Value = TransferConsent> {
        (any_actor(), any_label()).prop_map(|(recipient, jurisdiction)| TransferConsent { recipient, jurisdiction })
    }

    fn any_policy() -> impl Strategy<Value = UsePolicy> {
        (
            (any_tlp(), any_label(), any_onward()),
            prop::collection::vec(any_label(), 0..3),
            prop::collection::vec(any_actor(), 0..3),
            prop::collection::vec(any_label(), 0..3),
            prop::collection::vec(any_consent(), 0..3),
            prop::option::of(any_timestamp()),
            prop_oneof![0u32..30, any::<u32>()],
        )
            .prop_map(
                |(
                    (tlp, provider, onward_transfer),
                    purposes,
                    recipients,
                    jurisdictions,
                    consents,
                    expires_at,
                    days,
                )| {
                    UsePolicy {
                        tlp,
                        provider,
                        permitted_purposes: purposes,
                        permitted_recipients: recipients,
                        permitted_jurisdictions: jurisdictions,
                        onward_transfer,
                        consented_transfers: consents,
                        expires_at,
                        expiry_warning_days: days,
                    }
                },
            )
    }

    fn any_request() -> impl Strategy<Value = UseRequest> {
        (prop::sample::select(UseAction::ALL.to_vec()), any_label(), any_actor(), any_label(), any_timestamp())
            .prop_map(|(action, purpose, recipient, recipient_jurisdiction, at)| UseRequest {
                action,
                purpose,
                recipient,
                recipient_jurisdiction,
                at,
            })
    }

    fn any_widening() -> impl Strategy<Value = WidenRequest> {
        (
            prop::collection::vec(any_label(), 0..2),
            prop::collection::vec(any_actor(), 0..2),
            prop::collection::vec(any_label(), 0..2),
            prop::collection::vec(any_consent(), 0..2),
        )
            .prop_map(|(purposes, recipients, jurisdictions, transfers)| WidenRequest {
                purposes,
                recipients,
                jurisdictions,
                transfers,
            })
    }

    proptest! {
        #[test]
        fn decide_never_panics_and_explains_itself(policy in any_policy(), request in any_request()) {
            match decide(&policy, &request) {
                UseDecision::Permit { warnings } => {
                    prop_assert!(policy.expires_at.is_none_or(|expiry| request.at < expiry));
                    prop_assert!(warnings.len() <= 1);
                }
                UseDecision::Deny(reason) => prop_assert!(!reason.to_string().is_empty()),
            }
            let bytes = crate::to_canonical_vec(&policy).unwrap();
            prop_assert_eq!(crate::from_canonical_slice::<UsePolicy>(&bytes).unwrap(), policy);
        }

        #[test]
        fn widening_never_takes_anything_away(
            policy in any_policy(), request in any_request(), widening in any_widening()
        ) {
            if decide(&policy, &request).is_permit() {
                prop_assert_eq!(decide(&policy.widened(&widening), &request), decide(&policy, &request));
            }
        }

        #[test]
        fn garbage_policies_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = crate::from_canonical_slice::<UsePolicy>(&bytes);
            let _ = serde_json::from_slice::<WidenRequest>(&bytes);
            let _ = serde_json::from_slice::<UseDecision>(&bytes);
        }
    }
}
