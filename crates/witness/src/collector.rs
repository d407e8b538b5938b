//! Collecting cosignatures on this gateway's own checkpoints (the log's side of c2sp.org/tlog-witness), as a pure
//! state machine: events in (a new checkpoint, a witness's answer, a retry falling due), effects out (send a
//! request, wait, store a cosignature, raise an alarm, publish). No IO and no clock: the server sends the requests,
//! keeps the timers, stores what it is told to and serves what is published.
//!
//! ```text
//!            Event                                   Vec<Effect>
//! server ───────────────▶ Collector::handle ─────────────────────▶ server
//!   the log's checkpoints                     Send        → POST <url>/add-checkpoint (with a consistency proof)
//!   witnesses' answers                        RetryAfter  → a timer, then Event::RetryDue
//!   timers                                    Store       → the witness's latest cosignature, durably
//!                                             Alarm       → the operator log, the catalog, the status endpoint
//!                                             GaveUp      → the operator log
//!                                             Publish     → the log's checkpoint path
//! ```
//!
//! # Rounds
//!
//! The collector works on one checkpoint at a time, the *target*: it is sent to every witness at once, each from
//! the size that witness last cosigned, with at most one request in flight per witness. A new round (the log's
//! newest checkpoint as the target) starts once the target's cosignatures meet the policy's quorum or every
//! witness is done with it; a witness still busy with an older target is sent the current one when it is free. So
//! a burst of appends costs one request per witness per round, not one per checkpoint, and witnesses that answer
//! together cosign the same checkpoint.
//!
//! # Answers
//!
//! - 200: the body must hold a cosignature line that verifies with the policy's key for that witness; it is stored
//!   and added to the checkpoint's cosignatures. Anything else is a bad cosignature: not retried this round.
//! - 409 with the witness's size: the collector catches up from that size and retries once. A size beyond any
//!   checkpoint this log ever published is an alarm: the witness cosigned a tree of this log that we never made.
//! - 422: permanent, an alarm: the witness holds that this checkpoint does not extend what it cosigned of this log
//!   before (a split view, or the witness's state is not ours). That witness is asked again only after
//!   [`Settings::alarm_backoff`] (an alarm stands, but a witness must not drop out of the quorum for good over one
//!   answer).
//! - Other 4xx: a configuration mistake (the witness does not know this log, or has another key for it); not
//!   retried this round.
//! - No answer, a timeout, 5xx or 429: retried with doubling delays, a bounded number of times, then given up
//!   for this round.
//!
//! A witness given up on is asked again after the longest backoff, with the round's checkpoint or a newer one,
//! so a quiet log's last checkpoint still reaches its quorum once the witness is back.
//!
//! # Several gateways on one log
//!
//! Every gateway of a log publishes its cosigned checkpoint, but one asks the witnesses (the server's duty): the
//! others' collectors do not ask ([`Collector::set_asking`]) and take in the cosignatures the asking one stored
//! ([`Collector::adopt`]), so that each publishes what the witnesses gave, and a witness is asked once per round,
//! not once per gateway. A collector that starts asking (it took the duty over) starts a round from the log's
//! newest checkpoint, each witness from the size it is known to have cosigned.
//!
//! # Publication
//!
//! [`Publication::Quorum`] (fail-closed) publishes a checkpoint only once its cosignatures meet the quorum; until
//! then the last checkpoint that did stays published. [`Publication::Immediate`] publishes each new checkpoint at
//! once. Either way, cosignatures that arrive later for the published checkpoint are added to it. The published
//! note is the log's own signed note, its signature first, followed by the cosignature lines in the order of the
//! witnesses' names.

use std::collections::BTreeMap;
use std::time::Duration;

use custodia_ledger::{LogVerifier, SignedCheckpoint};

use crate::cosignature::CosignerVerifier;
use crate::policy::Policy;

/// Cosignature lines kept per unpublished checkpoint at most, beyond which the oldest candidate is dropped.
const MAX_CANDIDATES: usize = 64;

/// When a cosigned checkpoint is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Publication {
    /// Only a checkpoint whose cosignatures meet the policy's quorum is published (fail-closed); until one does,
    /// the last one that did stays published.
    #[default]
    Quorum,
    /// Every new checkpoint is published at once; cosignatures are added as they arrive.
    Immediate,
}

/// How the collector retries and publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub publication: Publication,
    /// Requests per witness per round, the first included, before the collector gives up on it until the next.
    pub attempts: u32,
    /// The delay before the first retry; each further retry waits twice as long, up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// The wait before a witness that raised an alarm is asked again.
    pub alarm_backoff: Duration,
    /// How far ahead of this gateway's clock a cosignature's timestamp may be; one further ahead is refused.
    pub clock_skew: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            publication: Publication::Quorum,
            attempts: 4,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            alarm_backoff: Duration::from_secs(600),
            clock_skew: Duration::from_secs(600),
        }
    }
}

impl Settings {
    /// The wait after failed attempt number `attempt` (from 1).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(16);
        self.first_backoff.saturating_mul(1 << doublings).min(self.max_backoff)
    }
}

/// Why the collector could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CollectorError {
    #[error("the witness policy does not name this log's key {vkey}")]
    LogNotInPolicy { vkey: String },
}

/// A witness's refusal of this log that no retry will change: the operator must look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alarm {
    /// 422: the witness refuses the checkpoint as inconsistent with what it cosigned of this log before.
    Refused,
    /// 409 with a size larger than any checkpoint this log has published.
    AheadOfLog,
    /// At start-up, the stored cosignature is on a checkpoint that is not in the log as it is now (the log was cut
    /// back or forked, e.g. restored from a backup): it is dropped, and the witness is shown the log's checkpoint.
    NotInLog,
}

impl Alarm {
    pub fn code(self) -> &'static str {
        match self {
            Self::Refused => "refused-as-inconsistent",
            Self::AheadOfLog => "witness-ahead-of-log",
            Self::NotInLog => "cosigned-checkpoint-not-in-log",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        [Self::Refused, Self::AheadOfLog, Self::NotInLog].into_iter().find(|alarm| alarm.code() == code)
    }
}

/// Why a witness did not cosign a round's checkpoint (it is asked again with the next one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// No usable answer after every attempt (timeouts, connection errors, 5xx, 429).
    Unreachable,
    /// A 4xx other than 409 and 422, with its status.
    Refused(u16),
    /// A 200 without a cosignature line that verifies with the policy's key, or with a timestamp ahead of this
    /// gateway's clock by more than [`Settings::clock_skew`].
    BadCosignature,
    /// A second 409 after catching up.
    StillConflicting,
}

impl GiveUp {
    pub fn code(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Refused(_) => "refused",
            Self::BadCosignature => "bad-cosignature",
            Self::StillConflicting => "still-conflicting",
        }
    }
}

/// What a witness answered, as the server read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200, with the body.
    Cosigned(String),
    /// 409 with a `text/x.tlog.size` body.
    Conflict(u64),
    /// Another 4xx, with its status.
    Refused(u16),
    /// No usable answer: a connection error, a timeout, 5xx, 429, or a malformed 409.
    Failed,
}

/// What the collector is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The log published a new checkpoint (older or equal ones are ignored).
    Checkpoint(SignedCheckpoint),
    /// The answer of `witness` to the request for the checkpoint of `size`, read at `now` (Unix seconds).
    Answered { witness: String, size: u64, answer: Answer, now: u64 },
    /// A [`Effect::RetryAfter`] delay has passed.
    RetryDue { witness: String },
}

/// A cosignature to persist as a witness's latest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosigned {
    /// The witness's key (`<name>+<key ID>+<key>`), which its state is stored under.
    pub witness_vkey: String,
    /// The checkpoint cosigned, as this log signed it.
    pub checkpoint: SignedCheckpoint,
    /// The cosignature line, with its newline.
    pub line: String,
    pub timestamp: u64,
}

/// What the collector asks of the server, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Effect {
    /// POST `<url>/add-checkpoint` with `old <old_size>`, the consistency proof from `old_size` to the checkpoint's
    /// size (empty when `old_size` is 0 or the size itself) and the checkpoint; then [`Event::Answered`].
    Send { witness: String, url: String, old_size: u64, checkpoint: SignedCheckpoint },
    /// Wait `delay`, then [`Event::RetryDue`].
    RetryAfter { witness: String, delay: Duration },
    /// Persist this witness's latest cosignature (and clear a stored alarm).
    Store(Cosigned),
    /// Persist and report an alarm about `witness`.
    Alarm { witness: String, witness_vkey: String, alarm: Alarm },
    /// `witness` did not cosign the checkpoint of `size`; it is asked again with the next one.
    GaveUp { witness: String, size: u64, reason: GiveUp },
    /// Serve `note` at the log's checkpoint path: the log's signed checkpoint of `size` with cosignatures appended.
    Publish { size: u64, note: Vec<u8> },
}

/// A witness's state as persisted, for [`Collector::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub witness_vkey: String,
    /// The latest checkpoint it cosigned (this log's signed note) and the cosignature line.
    pub cosigned: Option<(Vec<u8>, String)>,
    pub alarm: Option<Alarm>,
}

/// Counts since the collector started, per witness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub cosigned: u64,
    pub conflicts: u64,
    pub retries: u64,
    pub gave_up: u64,
    pub alarms: u64,
}

/// One witness, for the status endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessStatus {
    pub name: String,
    pub vkey: String,
    /// Whether the policy gives its URL (without one it is never asked).
    pub contacted: bool,
    /// The size it last cosigned, and the cosignature's timestamp.
    pub cosigned: Option<(u64, u64)>,
    /// The alarm standing against it, if any; `alarm_now` when raised by this process (it is then asked again only
    /// after [`Settings::alarm_backoff`]).
    pub alarm: Option<Alarm>,
    pub alarm_now: bool,
    pub counts: Counts,
}

/// The collector, for the status endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub publication: Publication,
    /// Whether this collector asks the witnesses ([`Collector::set_asking`]).
    pub asking: bool,
    /// The log's newest checkpoint size.
    pub log_size: Option<u64>,
    /// The published checkpoint's size and its cosigners (the policy's names).
    pub published: Option<(u64, Vec<String>)>,
    pub witnesses: Vec<WitnessStatus>,
    /// Alarms stored against witness keys the policy no longer names (a witness removed or re-keyed), by key.
    pub unlisted_alarms: Vec<(String, Alarm)>,
}

#[derive(Debug, Clone)]
enum Busy {
    Idle,
    Sending { checkpoint: SignedCheckpoint, attempt: u32, caught_up: bool },
    Waiting { attempt: u32 },
}

#[derive(Debug, Clone)]
struct WitnessState {
    verifier: CosignerVerifier,
    url: Option<String>,
    /// The size this witness last cosigned, as far as this collector knows (a 409 may say otherwise).
    size: u64,
    cosigned: Option<(u64, u64)>,
    /// The checkpoint of its cosignature restored from storage, until it is checked against the log.
    restored: Option<SignedCheckpoint>,
    busy: Busy,
    /// The target size this witness is done with (cosigned, or given up on).
    done: Option<u64>,
    alarm: Option<Alarm>,
    alarm_now: bool,
    counts: Counts,
}

impl WitnessState {
    fn asked(&self) -> bool {
        self.url.is_some()
    }
}

#[derive(Debug, Clone)]
struct Candidate {
    checkpoint: SignedCheckpoint,
    /// Cosignature lines by witness name.
    lines: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct Published {
    size: u64,
    note: Vec<u8>,
    cosigners: Vec<String>,
}

/// The collector of one log's cosignatures.
#[derive(Debug)]
pub struct Collector {
    policy: Policy,
    settings: Settings,
    witnesses: BTreeMap<String, WitnessState>,
    latest: Option<SignedCheckpoint>,
    target: Option<SignedCheckpoint>,
    candidates: BTreeMap<u64, Candidate>,
    published: Option<Published>,
    unlisted_alarms: Vec<(String, Alarm)>,
    /// The log's key, to open cosigned checkpoints taken in ([`Collector::adopt`]).
    log: LogVerifier,
    /// Whether this collector asks the witnesses ([`Collector::set_asking`]).
    asking: bool,
}

/// The line of `body` that is `verifier`'s cosignature on `checkpoint`, with its timestamp.
fn cosignature_line(verifier: &CosignerVerifier, checkpoint: &SignedCheckpoint, body: &str) -> Option<(String, u64)> {
    body.lines().filter(|line| line.starts_with("\u{2014} ")).take(16).find_map(|line| {
        let mut note = checkpoint.note().to_vec();
        note.extend_from_slice(line.as_bytes());
        note.push(b'\n');
        let cosignature = verifier.cosignature_on(&note).ok()??;
        Some((format!("{line}\n"), cosignature.timestamp))
    })
}

impl Collector {
    /// A collector for `log` under `policy`, which must name the log's key, restored from what was stored.
    /// Stored cosignatures that do not verify (another key, another log) are ignored.
    pub fn new(
        log: &LogVerifier,
        policy: Policy,
        settings: Settings,
        stored: impl IntoIterator<Item = Stored>,
    ) -> Result<Self, CollectorError> {
        if !policy.logs().iter().any(|known| known.to_string() == log.to_string()) {
            return Err(CollectorError::LogNotInPolicy { vkey: log.to_string() });
        }
        let stored: BTreeMap<String, Stored> =
            stored.into_iter().map(|stored| (stored.witness_vkey.clone(), stored)).collect();
        let mut witnesses = BTreeMap::new();
        let mut candidates: BTreeMap<u64, Candidate> = BTreeMap::new();
        for (name, verifier) in policy.witnesses() {
            let mut state = WitnessState {
                verifier: verifier.clone(),
                url: policy.witness_url(name).map(|url| url.trim_end_matches('/').to_owned()),
                size: 0,
                cosigned: None,
                restored: None,
                busy: Busy::Idle,
                done: None,
                alarm: None,
                alarm_now: false,
                counts: Counts::default(),
            };
            if let Some(row) = stored.get(&verifier.to_string()) {
                state.alarm = row.alarm;
                let restored = row.cosigned.as_ref().and_then(|(note, line)| {
                    let checkpoint = SignedCheckpoint::open(note, std::slice::from_ref(log)).ok()?;
                    let (line, timestamp) = cosignature_line(verifier, &checkpoint, line)?;
                    Some((checkpoint, line, timestamp))
                });
                if let Some((checkpoint, line, timestamp)) = restored {
                    let size = checkpoint.checkpoint.size;
                    state.size = size;
                    state.cosigned = Some((size, timestamp));
                    state.restored = Some(checkpoint.clone());
                    let candidate = candidates
                        .entry(size)
                        .or_insert_with(|| Candidate { checkpoint: checkpoint.clone(), lines: BTreeMap::new() });
                    // This log signs one note per tree (Ed25519 is deterministic): another note of the same size
                    // is not one to append this line to.
                    if candidate.checkpoint.note() == checkpoint.note() {
                        candidate.lines.insert(name.to_owned(), line);
                    }
                }
            }
            witnesses.insert(name.to_owned(), state);
        }
        let listed: Vec<String> = policy.witnesses().map(|(_, verifier)| verifier.to_string()).collect();
        let unlisted_alarms = stored
            .values()
            .filter(|row| !listed.contains(&row.witness_vkey))
            .filter_map(|row| Some((row.witness_vkey.clone(), row.alarm?)))
            .collect();
        Ok(Self {
            policy,
            settings,
            witnesses,
            latest: None,
            target: None,
            candidates,
            published: None,
            unlisted_alarms,
            log: log.clone(),
            asking: true,
        })
    }

    /// Whether this collector asks the witnesses.
    pub fn asking(&self) -> bool {
        self.asking
    }

    /// Starts or stops asking the witnesses (a collector asks from the start). One that stops forgets what it was
    /// waiting for (answers and retries still on their way change nothing); one that starts sends the log's newest
    /// checkpoint to every witness that has not cosigned it, each from the size it is known to have cosigned.
    pub fn set_asking(&mut self, asking: bool) -> Vec<Effect> {
        let mut effects = Vec::new();
        if asking == self.asking {
            return effects;
        }
        self.asking = asking;
        for state in self.witnesses.values_mut() {
            state.busy = Busy::Idle;
            state.done = None;
        }
        self.target = None;
        self.publish_best(&mut effects);
        self.dispatch(&mut effects);
        effects
    }

    /// Takes in a witness's cosignature stored by the collector that asks (on another gateway of this log), as
    /// [`Collector::new`] restores one: a line that verifies with that witness's key on a checkpoint this log signed,
    /// newer than what this collector holds of that witness, and its standing alarm (unless raised here). The caller
    /// has checked that the checkpoint is in the log. `None` if it cannot be taken now: it does not verify, or it is
    /// ahead of the log's newest checkpoint as this collector knows it (given again later, it may be).
    pub fn adopt(&mut self, stored: &Stored) -> Option<Vec<Effect>> {
        let name = self
            .witnesses
            .iter()
            .find(|(_, state)| state.verifier.to_string() == stored.witness_vkey)
            .map(|(name, _)| name.clone())?;
        let latest = self.latest.clone()?;
        let state = self.witnesses.get_mut(&name)?;
        if !state.alarm_now {
            state.alarm = stored.alarm;
        }
        let mut effects = Vec::new();
        let Some((note, line)) = &stored.cosigned else { return Some(effects) };
        let checkpoint = SignedCheckpoint::open(note, std::slice::from_ref(&self.log)).ok()?;
        let (line, timestamp) = cosignature_line(&state.verifier, &checkpoint, line)?;
        let size = checkpoint.checkpoint.size;
        if size > latest.checkpoint.size || (size == latest.checkpoint.size && checkpoint.note() != latest.note()) {
            return None;
        }
        if state.cosigned.is_some_and(|(known, _)| known > size) {
            return Some(effects);
        }
        state.size = state.size.max(size);
        state.cosigned = Some((size, timestamp));
        if self.published.as_ref().is_none_or(|published| size >= published.size) {
            let candidate = self
                .candidates
                .entry(size)
                .or_insert_with(|| Candidate { checkpoint: checkpoint.clone(), lines: BTreeMap::new() });
            if candidate.checkpoint.note() != checkpoint.note() {
                *candidate = Candidate { checkpoint, lines: BTreeMap::new() };
            }
            candidate.lines.insert(name, line);
            while self.candidates.len() > MAX_CANDIDATES {
                self.candidates.pop_first();
            }
        }
        self.publish_best(&mut effects);
        Some(effects)
    }

    /// Takes one event and says what to do.
    pub fn handle(&mut self, event: Event) -> Vec<Effect> {
        let mut effects = Vec::new();
        match event {
            Event::Checkpoint(checkpoint) => {
                if self.latest.as_ref().is_some_and(|latest| checkpoint.checkpoint.size <= latest.checkpoint.size) {
                    return effects;
                }
                // Cosignatures restored on another tree of this size, or on a larger one, are not on this log's
                // history: they are never published.
                let size = checkpoint.checkpoint.size;
                self.candidates.retain(|candidate_size, candidate| {
                    *candidate_size < size
                        || (*candidate_size == size && candidate.checkpoint.note() == checkpoint.note())
                });
                self.latest = Some(checkpoint);
            }
            Event::Answered { witness, size, answer, now } => {
                let latest_timestamp = now.saturating_add(self.settings.clock_skew.as_secs());
                self.answered(&witness, size, answer, latest_timestamp, &mut effects)
            }
            Event::RetryDue { witness } => {
                if let (Some(state), Some(target)) = (self.witnesses.get(&witness), self.target.clone())
                    && let Busy::Waiting { attempt } = state.busy
                {
                    self.send(&witness, target, attempt, false, &mut effects);
                }
            }
        }
        self.publish_best(&mut effects);
        self.dispatch(&mut effects);
        effects
    }

    fn answered(&mut self, name: &str, size: u64, answer: Answer, latest_timestamp: u64, effects: &mut Vec<Effect>) {
        let Some(state) = self.witnesses.get_mut(name) else { return };
        let Busy::Sending { checkpoint, attempt, caught_up } = state.busy.clone() else { return };
        if checkpoint.checkpoint.size != size {
            return;
        }
        let latest_size = self.latest.as_ref().map_or(0, |latest| latest.checkpoint.size);
        match answer {
            Answer::Cosigned(body) => match cosignature_line(&state.verifier, &checkpoint, &body) {
                // A timestamp beyond this gateway's clock (and its allowed skew) is no honest witness's.
                Some((line, timestamp)) if timestamp <= latest_timestamp => {
                    state.size = size;
                    state.cosigned = Some((size, timestamp));
                    state.counts.cosigned += 1;
                    state.alarm = None;
                    state.busy = Busy::Idle;
                    state.done = Some(size);
                    effects.push(Effect::Store(Cosigned {
                        witness_vkey: state.verifier.to_string(),
                        checkpoint: checkpoint.clone(),
                        line: line.clone(),
                        timestamp,
                    }));
                    if self.published.as_ref().is_none_or(|published| size >= published.size) {
                        let candidate = self
                            .candidates
                            .entry(size)
                            .or_insert_with(|| Candidate { checkpoint: checkpoint.clone(), lines: BTreeMap::new() });
                        // Another note of this size (a log forked since) holds lines that are not on this one.
                        if candidate.checkpoint.note() != checkpoint.note() {
                            *candidate = Candidate { checkpoint, lines: BTreeMap::new() };
                        }
                        candidate.lines.insert(name.to_owned(), line);
                    }
                }
                _ => self.give_up(name, size, GiveUp::BadCosignature, effects),
            },
            Answer::Conflict(known) => {
                state.counts.conflicts += 1;
                if known > latest_size {
                    self.alarm(name, size, Alarm::AheadOfLog, effects);
                } else if caught_up {
                    self.give_up(name, size, GiveUp::StillConflicting, effects);
                } else {
                    state.size = known;
                    self.send(name, checkpoint, attempt, true, effects);
                }
            }
            Answer::Refused(422) => self.alarm(name, size, Alarm::Refused, effects),
            Answer::Refused(status) => self.give_up(name, size, GiveUp::Refused(status), effects),
            Answer::Failed => {
                if attempt < self.settings.attempts {
                    state.counts.retries += 1;
                    state.busy = Busy::Waiting { attempt: attempt + 1 };
                    effects
                        .push(Effect::RetryAfter { witness: name.to_owned(), delay: self.settings.backoff(attempt) });
                } else {
                    self.give_up(name, size, GiveUp::Unreachable, effects);
                }
            }
        }
    }

    /// Leaves `name` out of this round, and asks it again after the longest backoff even if the log stays quiet
    /// (a quiet log's last checkpoint must still reach its quorum once the witness is back).
    fn give_up(&mut self, name: &str, size: u64, reason: GiveUp, effects: &mut Vec<Effect>) {
        if let Some(state) = self.witnesses.get_mut(name) {
            state.counts.gave_up += 1;
            state.busy = Busy::Waiting { attempt: 1 };
            state.done = Some(size);
            effects.push(Effect::GaveUp { witness: name.to_owned(), size, reason });
            effects.push(Effect::RetryAfter { witness: name.to_owned(), delay: self.settings.max_backoff });
        }
    }

    fn alarm(&mut self, name: &str, size: u64, alarm: Alarm, effects: &mut Vec<Effect>) {
        if let Some(state) = self.witnesses.get_mut(name) {
            state.counts.alarms += 1;
            state.alarm = Some(alarm);
            state.alarm_now = true;
            state.busy = Busy::Waiting { attempt: 1 };
            state.done = Some(size);
            effects.push(Effect::Alarm { witness: name.to_owned(), witness_vkey: state.verifier.to_string(), alarm });
            effects.push(Effect::RetryAfter { witness: name.to_owned(), delay: self.settings.alarm_backoff });
        }
    }

    /// Sends `checkpoint` to `name` from the size it last cosigned, unless that witness is already past it.
    fn send(
        &mut self,
        name: &str,
        checkpoint: SignedCheckpoint,
        attempt: u32,
        caught_up: bool,
        effects: &mut Vec<Effect>,
    ) {
        if !self.asking {
            return;
        }
        let latest_size = self.latest.as_ref().map_or(0, |latest| latest.checkpoint.size);
        let Some(state) = self.witnesses.get_mut(name) else { return };
        let Some(url) = state.url.clone() else { return };
        let size = checkpoint.checkpoint.size;
        if self.candidates.get(&size).is_some_and(|candidate| {
            candidate.checkpoint.note() == checkpoint.note() && candidate.lines.contains_key(name)
        }) {
            // Its cosignature on this checkpoint is already here (stored before a restart).
            state.busy = Busy::Idle;
            state.done = Some(size);
            return;
        }
        if state.size > size {
            if state.size > latest_size {
                // Asked again later from scratch: its own answer says where it stands.
                state.size = 0;
                self.alarm(name, size, Alarm::AheadOfLog, effects);
            } else {
                // It cosigned a newer checkpoint already (a 409 said so): it gets the next round's.
                state.busy = Busy::Idle;
                state.done = Some(size);
            }
            return;
        }
        state.counts.requests += 1;
        let old_size = state.size;
        state.busy = Busy::Sending { checkpoint: checkpoint.clone(), attempt, caught_up };
        effects.push(Effect::Send { witness: name.to_owned(), url, old_size, checkpoint });
    }

    fn quorum_met(&self, size: u64) -> bool {
        let lines = self.candidates.get(&size).map(|candidate| &candidate.lines);
        self.policy.quorum_met(lines.into_iter().flat_map(|lines| lines.keys().map(String::as_str)))
    }

    /// Starts a new round when the current one is over and the log has moved on, and sends the target to every
    /// witness that is free and not done with it.
    fn dispatch(&mut self, effects: &mut Vec<Effect>) {
        if !self.asking {
            return;
        }
        let Some(latest) = self.latest.clone() else { return };
        let round_over = match &self.target {
            None => true,
            Some(target) => {
                let size = target.checkpoint.size;
                self.quorum_met(size)
                    || self
                        .witnesses
                        .values()
                        .all(|w| !w.asked() || (!matches!(w.busy, Busy::Sending { .. }) && w.done == Some(size)))
            }
        };
        if round_over && self.target.as_ref().is_none_or(|target| target.checkpoint.size < latest.checkpoint.size) {
            let candidate = self
                .candidates
                .entry(latest.checkpoint.size)
                .or_insert_with(|| Candidate { checkpoint: latest.clone(), lines: BTreeMap::new() });
            if candidate.checkpoint.note() != latest.note() {
                *candidate = Candidate { checkpoint: latest.clone(), lines: BTreeMap::new() };
            }
            while self.candidates.len() > MAX_CANDIDATES {
                self.candidates.pop_first();
            }
            self.target = Some(latest);
        }
        let Some(target) = self.target.clone() else { return };
        let size = target.checkpoint.size;
        let free: Vec<String> = self
            .witnesses
            .iter()
            .filter(|(_, w)| w.asked() && matches!(w.busy, Busy::Idle) && w.done != Some(size))
            .map(|(name, _)| name.clone())
            .collect();
        for name in free {
            self.send(&name, target.clone(), 1, false, effects);
        }
    }

    /// Publishes the best checkpoint the setting allows, if it differs from what is published.
    fn publish_best(&mut self, effects: &mut Vec<Effect>) {
        let best = match self.settings.publication {
            Publication::Immediate => self.latest.as_ref().map(|latest| {
                let lines = self
                    .candidates
                    .get(&latest.checkpoint.size)
                    .map(|candidate| self.verified_lines(latest, &candidate.lines))
                    .unwrap_or_default();
                (latest.clone(), lines)
            }),
            Publication::Quorum => self.candidates.values().rev().find_map(|candidate| {
                let lines = self.verified_lines(&candidate.checkpoint, &candidate.lines);
                self.policy.quorum_met(lines.keys().map(String::as_str)).then(|| (candidate.checkpoint.clone(), lines))
            }),
        };
        let Some((checkpoint, lines)) = best else { return };
        let size = checkpoint.checkpoint.size;
        if self.published.as_ref().is_some_and(|published| published.size > size) {
            return;
        }
        let mut note = checkpoint.note().to_vec();
        for line in lines.values() {
            note.extend_from_slice(line.as_bytes());
        }
        if self.published.as_ref().is_some_and(|published| published.note == note) {
            return;
        }
        self.published = Some(Published { size, note: note.clone(), cosigners: lines.keys().cloned().collect() });
        // Older candidates can never be published again; the target's stays until its round is over.
        let keep_from = self.target.as_ref().map_or(size, |target| target.checkpoint.size.min(size));
        self.candidates.retain(|candidate_size, _| *candidate_size >= keep_from);
        effects.push(Effect::Publish { size, note });
    }

    /// The lines of `lines` that verify, each with its witness's key, on exactly `checkpoint`'s note.
    fn verified_lines(
        &self,
        checkpoint: &SignedCheckpoint,
        lines: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        lines
            .iter()
            .filter(|(name, line)| {
                self.witnesses
                    .get(*name)
                    .is_some_and(|state| cosignature_line(&state.verifier, checkpoint, line).is_some())
            })
            .map(|(name, line)| (name.clone(), line.clone()))
            .collect()
    }

    /// Checks each cosignature restored from storage against the log as it is now (`in_log` says whether a
    /// checkpoint is the log's own at its size): one on a checkpoint the log no longer holds (the log was cut back,
    /// or forked at the same size, e.g. its directory restored from a backup) is dropped, never published, and
    /// raises [`Alarm::NotInLog`]; that witness is then asked from size 0 and shown the log's checkpoint. Call it
    /// once, before the first [`Event::Checkpoint`].
    pub fn check_restored(&mut self, in_log: impl Fn(&SignedCheckpoint) -> bool) -> Vec<Effect> {
        let mut effects = Vec::new();
        for (name, state) in &mut self.witnesses {
            let Some(checkpoint) = state.restored.take() else { continue };
            if in_log(&checkpoint) {
                continue;
            }
            let size = checkpoint.checkpoint.size;
            state.size = 0;
            state.cosigned = None;
            state.alarm = Some(Alarm::NotInLog);
            state.counts.alarms += 1;
            if let Some(candidate) = self.candidates.get_mut(&size)
                && candidate.checkpoint.note() == checkpoint.note()
            {
                candidate.lines.remove(name);
                if candidate.lines.is_empty() {
                    self.candidates.remove(&size);
                }
            }
            effects.push(Effect::Alarm {
                witness: name.clone(),
                witness_vkey: state.verifier.to_string(),
                alarm: Alarm::NotInLog,
            });
        }
        effects
    }

    /// The published note, if any.
    pub fn published(&self) -> Option<&[u8]> {
        self.published.as_ref().map(|published| published.note.as_slice())
    }

    pub fn status(&self) -> Status {
        Status {
            publication: self.settings.publication,
            asking: self.asking,
            log_size: self.latest.as_ref().map(|latest| latest.checkpoint.size),
            published: self.published.as_ref().map(|published| (published.size, published.cosigners.clone())),
            witnesses: self
                .witnesses
                .iter()
                .map(|(name, w)| WitnessStatus {
                    name: name.clone(),
                    vkey: w.verifier.to_string(),
                    contacted: w.url.is_some(),
                    cosigned: w.cosigned,
                    alarm: w.alarm,
                    alarm_now: w.alarm_now,
                    counts: w.counts,
                })
                .collect(),
            unlisted_alarms: self.unlisted_alarms.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use custodia_ledger::merkle::{CompactRange, consistency_ranges, leaf_hash};
    use custodia_ledger::{Checkpoint, Hash, LogSigner};

    use super::*;
    use crate::cosignature::CosignerKey;
    use crate::request::AddCheckpoint;
    use crate::witness::{Decision, Known, decide};

    const ORIGIN: &str = "a.custodia.test/log";

    fn tree_hash(leaves: &[Hash]) -> Hash {
        let mut range = CompactRange::from_parts(0, Vec::new()).unwrap();
        for leaf in leaves {
            range.append(*leaf, |_, _| {});
        }
        range.root()
    }

    /// How a witness behaves in a test.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Behaviour {
        Honest,
        Down,
        /// Answers with another key's cosignature.
        WrongKey,
        /// Cosigns with a timestamp this far ahead of the clock.
        Ahead(u64),
    }

    /// A witness played by the real witness core ([`decide`]), with its own state of the log.
    struct TestWitness {
        key: CosignerKey,
        known: Known,
        behaviour: Behaviour,
    }

    /// A log, its witnesses, and the collector, driven in memory: every effect is carried out at once.
    struct World {
        signer: LogSigner,
        leaves: Vec<Hash>,
        witnesses: BTreeMap<String, TestWitness>,
        collector: Collector,
        published: Option<(u64, Vec<u8>)>,
        stored: BTreeMap<String, Cosigned>,
        alarms: Vec<(String, Alarm)>,
        gave_up: Vec<(String, GiveUp)>,
        retries: Vec<Duration>,
        /// Retries after a witness was given up on, held until [`World::fire_parked_retries`].
        parked: Vec<String>,
        clock: u64,
    }

    impl World {
        fn new(quorum: &str, publication: Publication) -> Self {
            let signer = LogSigner::generate(ORIGIN).unwrap();
            let keys: Vec<CosignerKey> =
                ["w1", "w2", "w3"].iter().map(|name| CosignerKey::generate(name).unwrap()).collect();
            let mut policy = format!("log {}\n", signer.verifier());
            for key in &keys {
                policy.push_str(&format!(
                    "witness {} {} http://{}.test/witness\n",
                    key.name(),
                    key.verifier(),
                    key.name()
                ));
            }
            policy.push_str(&format!("group two 2 w1 w2 w3\nquorum {quorum}\n"));
            let settings = Settings { publication, ..Settings::default() };
            let collector =
                Collector::new(&signer.verifier(), Policy::parse(&policy).unwrap(), settings, Vec::new()).unwrap();
            let witnesses = keys
                .into_iter()
                .map(|key| {
                    (key.name().to_owned(), TestWitness { key, known: Known::unseen(), behaviour: Behaviour::Honest })
                })
                .collect();
            Self {
                signer,
                leaves: Vec::new(),
                witnesses,
                collector,
                published: None,
                stored: BTreeMap::new(),
                alarms: Vec::new(),
                gave_up: Vec::new(),
                retries: Vec::new(),
                parked: Vec::new(),
                clock: 1_800_000_000,
            }
        }

        fn checkpoint(&self) -> SignedCheckpoint {
            let size = self.leaves.len() as u64;
            self.signer.sign(&Checkpoint::new(ORIGIN, size, tree_hash(&self.leaves))).unwrap()
        }

        fn proof(&self, old: u64, new: u64) -> Vec<Hash> {
            consistency_ranges(old, new)
                .unwrap()
                .into_iter()
                .map(|range| tree_hash(&self.leaves[range.start as usize..range.end as usize]))
                .collect()
        }

        /// Appends `entries` and tells the collector of the new checkpoint.
        fn grow(&mut self, entries: usize) {
            for _ in 0..entries {
                let n = self.leaves.len();
                self.leaves.push(leaf_hash(format!("entry {n}").as_bytes()));
            }
            let checkpoint = self.checkpoint();
            self.run(Event::Checkpoint(checkpoint));
        }

        /// What witness `name` answers to a request.
        fn answer(&mut self, name: &str, old_size: u64, checkpoint: &SignedCheckpoint) -> Answer {
            self.clock += 1;
            let size = checkpoint.checkpoint.size;
            let proof = if old_size == 0 || old_size >= size { Vec::new() } else { self.proof(old_size, size) };
            let request = AddCheckpoint { old_size, proof, checkpoint: checkpoint.note().to_vec() };
            let log = [self.signer.verifier()];
            let witness = self.witnesses.get_mut(name).unwrap();
            match witness.behaviour {
                Behaviour::Down => return Answer::Failed,
                Behaviour::WrongKey => {
                    let other = CosignerKey::generate(name).unwrap();
                    let body = checkpoint.checkpoint.body();
                    return Answer::Cosigned(other.cosign(body.as_bytes(), self.clock).unwrap());
                }
                Behaviour::Ahead(seconds) => {
                    let body = checkpoint.checkpoint.body();
                    let timestamp = self.clock.saturating_add(seconds);
                    return Answer::Cosigned(witness.key.cosign(body.as_bytes(), timestamp).unwrap());
                }
                Behaviour::Honest => {}
            }
            match decide(Some(&log), &witness.known, &request) {
                Decision::Cosign { checkpoint, .. } => {
                    witness.known = Known { size: checkpoint.checkpoint.size, root: checkpoint.checkpoint.root };
                    let body = checkpoint.checkpoint.body();
                    Answer::Cosigned(witness.key.cosign(body.as_bytes(), self.clock).unwrap())
                }
                Decision::Conflict { known_size } => Answer::Conflict(known_size),
                Decision::Refuse(refusal) => Answer::Refused(refusal.status()),
            }
        }

        /// Feeds `event` and carries out every effect, answers and due retries included, until nothing is left.
        fn run(&mut self, event: Event) {
            let effects = self.collector.handle(event);
            self.carry_out(effects);
        }

        /// Carries out `effects`, and every effect of the events they lead to, until nothing is left.
        fn carry_out(&mut self, effects: Vec<Effect>) {
            let mut queue = std::collections::VecDeque::new();
            let mut first = Some(effects);
            loop {
                let effects = match first.take() {
                    Some(effects) => effects,
                    None => match queue.pop_front() {
                        Some(event) => self.collector.handle(event),
                        None => return,
                    },
                };
                for effect in effects {
                    match effect {
                        Effect::Send { witness, url, old_size, checkpoint } => {
                            assert_eq!(url, format!("http://{witness}.test/witness"));
                            let answer = self.answer(&witness, old_size, &checkpoint);
                            let (size, now) = (checkpoint.checkpoint.size, self.clock);
                            queue.push_back(Event::Answered { witness, size, answer, now });
                        }
                        Effect::RetryAfter { witness, delay } if delay < Settings::default().max_backoff => {
                            self.retries.push(delay);
                            queue.push_back(Event::RetryDue { witness });
                        }
                        Effect::RetryAfter { witness, .. } => self.parked.push(witness),
                        Effect::Store(cosigned) => {
                            self.stored.insert(cosigned.witness_vkey.clone(), cosigned);
                        }
                        Effect::Alarm { witness, alarm, .. } => self.alarms.push((witness, alarm)),
                        Effect::GaveUp { witness, reason, .. } => self.gave_up.push((witness, reason)),
                        Effect::Publish { size, note } => self.published = Some((size, note)),
                    }
                }
            }
        }

        /// The retries after giving up fall due.
        fn fire_parked_retries(&mut self) {
            for witness in std::mem::take(&mut self.parked) {
                self.run(Event::RetryDue { witness });
            }
        }

        fn policy(&self) -> Policy {
            let mut policy = format!("log {}\n", self.signer.verifier());
            for witness in self.witnesses.values() {
                let (name, vkey) = (witness.key.name(), witness.key.verifier());
                policy.push_str(&format!("witness {name} {vkey} http://{name}.test/witness\n"));
            }
            policy.push_str("group two 2 w1 w2 w3\nquorum two\n");
            Policy::parse(&policy).unwrap()
        }

        /// The published checkpoint's size and the witnesses whose cosignatures on it verify.
        fn published_cosigners(&self) -> (u64, Vec<String>) {
            let (size, note) = self.published.clone().expect("a published checkpoint");
            let verdict = self.policy().evaluate(&note).unwrap();
            assert_eq!(verdict.size, size);
            (size, verdict.cosigned_by.into_iter().map(|(name, _)| name).collect())
        }
    }

    #[test]
    fn a_growing_log_is_cosigned_by_every_witness_and_published_with_the_logs_signature_first() {
        let mut world = World::new("two", Publication::Quorum);
        for grow in [0, 1, 2, 7, 64, 1] {
            world.grow(grow);
            let size = world.leaves.len() as u64;
            assert_eq!(world.published_cosigners(), (size, vec!["w1".into(), "w2".into(), "w3".into()]));
            let note = String::from_utf8(world.published.clone().unwrap().1).unwrap();
            let signatures: Vec<&str> = note.rsplit_once("\n\n").unwrap().1.lines().collect();
            assert!(signatures[0].starts_with(&format!("\u{2014} {ORIGIN} ")), "{note}");
            assert_eq!(signatures.len(), 4);
        }
        assert!(world.alarms.is_empty() && world.gave_up.is_empty() && world.retries.is_empty());
        let status = world.collector.status();
        assert!(
            status.witnesses.iter().all(|w| w.cosigned.map(|(size, _)| size) == Some(75) && w.counts.cosigned == 6)
        );
    }

    #[test]
    fn quorum_publication_waits_for_the_quorum_and_retries_with_doubling_delays() {
        let mut world = World::new("two", Publication::Quorum);
        for name in ["w2", "w3"] {
            world.witnesses.get_mut(name).unwrap().behaviour = Behaviour::Down;
        }
        world.grow(3);
        assert_eq!(world.published, None, "one cosignature of three is below the quorum");
        let second = Duration::from_secs(1);
        // Both down witnesses, each tried four times in all.
        assert_eq!(world.retries, [second, second, second * 2, second * 2, second * 4, second * 4]);
        let mut gave_up = world.gave_up.clone();
        gave_up.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(gave_up, [("w2".into(), GiveUp::Unreachable), ("w3".into(), GiveUp::Unreachable)]);

        assert_eq!(world.parked, ["w2", "w3"], "each is asked again later");

        // One comes back: the quiet log's checkpoint reaches the quorum when it is asked again, and so does the
        // next one.
        world.witnesses.get_mut("w2").unwrap().behaviour = Behaviour::Honest;
        world.fire_parked_retries();
        assert_eq!(world.published_cosigners(), (3, vec!["w1".into(), "w2".into()]));
        world.grow(2);
        assert_eq!(world.published_cosigners(), (5, vec!["w1".into(), "w2".into()]));
    }

    #[test]
    fn immediate_publication_publishes_at_once_and_adds_cosignatures_as_they_come() {
        let mut world = World::new("two", Publication::Immediate);
        for name in ["w1", "w2", "w3"] {
            world.witnesses.get_mut(name).unwrap().behaviour = Behaviour::Down;
        }
        world.grow(4);
        assert_eq!(world.published_cosigners(), (4, vec![]));
        world.witnesses.get_mut("w3").unwrap().behaviour = Behaviour::Honest;
        world.grow(1);
        assert_eq!(world.published_cosigners(), (5, vec![]));
        // Given up on, it is asked again after the longest backoff, with the newest checkpoint.
        world.fire_parked_retries();
        assert_eq!(world.published_cosigners(), (5, vec!["w3".into()]));
    }

    #[test]
    fn a_collector_that_does_not_ask_publishes_what_the_asking_one_stored_and_takes_over_where_it_left() {
        let mut world = World::new("two", Publication::Quorum);
        let mut other =
            Collector::new(&world.signer.verifier(), world.policy(), Settings::default(), Vec::new()).unwrap();
        assert!(other.set_asking(false).is_empty(), "nothing to ask yet");
        let stored = |world: &World| -> Vec<Stored> {
            world
                .stored
                .values()
                .map(|cosigned| Stored {
                    witness_vkey: cosigned.witness_vkey.clone(),
                    cosigned: Some((cosigned.checkpoint.note().to_vec(), cosigned.line.clone())),
                    alarm: None,
                })
                .collect()
        };
        world.grow(5);
        // The other gateway sees the log's checkpoint, asks nobody, and publishes nothing of its own.
        let effects = other.handle(Event::Checkpoint(world.checkpoint()));
        assert!(effects.is_empty(), "{effects:?}");
        // Cosignatures of a checkpoint it has not seen yet are not taken: given again later, they are.
        world.grow(2);
        let ahead = stored(&world);
        assert!(ahead.iter().all(|row| other.adopt(row).is_none()));
        other.handle(Event::Checkpoint(world.checkpoint()));
        let mut published = None;
        for row in &ahead {
            for effect in other.adopt(row).expect("taken in") {
                match effect {
                    Effect::Publish { size, note } => published = Some((size, note)),
                    effect => panic!("only a publication: {effect:?}"),
                }
            }
        }
        assert_eq!(published, world.published, "the same cosigned checkpoint as the asking gateway's");
        let status = other.status();
        assert!(!status.asking);
        assert!(status.witnesses.iter().all(|w| w.counts.requests == 0 && w.cosigned.map(|c| c.0) == Some(7)));
        // A cosignature of another key does not verify, and an older one changes nothing.
        let mut forged = ahead[0].clone();
        forged.witness_vkey = ahead[1].witness_vkey.clone();
        assert!(other.adopt(&forged).is_none());

        // The asking gateway is gone; the log grows on the other, which asks now: each witness from the size it
        // cosigned (no conflict), and the new checkpoint reaches the quorum.
        world.collector = other;
        world.grow(3);
        assert_eq!(world.published_cosigners().0, 7, "not asked yet");
        let effects = world.collector.set_asking(true);
        let sent: Vec<(String, u64)> = effects
            .iter()
            .filter_map(|effect| match effect {
                Effect::Send { witness, old_size, .. } => Some((witness.clone(), *old_size)),
                _ => None,
            })
            .collect();
        assert_eq!(sent, [("w1".into(), 7), ("w2".into(), 7), ("w3".into(), 7)]);
        world.carry_out(effects);
        assert_eq!(world.published_cosigners(), (10, vec!["w1".into(), "w2".into(), "w3".into()]));
        assert!(world.collector.status().witnesses.iter().all(|w| w.counts.conflicts == 0 && w.counts.requests == 1));
        // Stopped again: a retry or an answer still on its way changes nothing, and nothing more is sent.
        assert!(world.collector.set_asking(false).is_empty());
        world.grow(1);
        assert!(world.collector.handle(Event::RetryDue { witness: "w1".into() }).is_empty());
        assert_eq!(world.published_cosigners().0, 10);
    }

    #[test]
    fn a_witness_ahead_of_the_collector_is_caught_up_from_its_size() {
        let mut world = World::new("two", Publication::Quorum);
        world.grow(6);
        // A fresh collector (its state lost) knows nothing; the witnesses are at 6 and say so with a 409.
        world.collector =
            Collector::new(&world.signer.verifier(), world.policy(), Settings::default(), Vec::new()).unwrap();
        world.grow(5);
        assert_eq!(world.published_cosigners().0, 11);
        assert!(world.collector.status().witnesses.iter().all(|w| w.counts.conflicts == 1 && w.counts.cosigned == 1));
        assert!(world.alarms.is_empty() && world.gave_up.is_empty());
    }

    #[test]
    fn a_refusal_as_inconsistent_and_a_witness_ahead_of_the_log_are_alarms() {
        let mut world = World::new("two", Publication::Quorum);
        world.grow(4);
        // w1 has seen another tree of size 4 (a split view): it refuses ours with 422.
        world.witnesses.get_mut("w1").unwrap().known = Known { size: 4, root: Hash([9; 32]) };
        // w2 claims a size this log never reached.
        world.witnesses.get_mut("w2").unwrap().known = Known { size: 100, root: Hash([8; 32]) };
        world.grow(2);
        assert_eq!(world.alarms, [("w1".into(), Alarm::Refused), ("w2".into(), Alarm::AheadOfLog)]);
        assert_eq!(world.published_cosigners().0, 4, "one cosignature on size 6 is below the quorum");
        // Neither is asked again until the long alarm backoff is over; then both are, and the alarms stand.
        let requests = |world: &World| -> Vec<u64> {
            world.collector.status().witnesses.iter().map(|w| w.counts.requests).collect()
        };
        let before = requests(&world);
        world.grow(1);
        let after = requests(&world);
        assert_eq!((after[0] - before[0], after[1] - before[1], after[2] - before[2]), (0, 0, 1));
        let status = world.collector.status();
        assert!(status.witnesses[0].alarm_now && status.witnesses[0].alarm == Some(Alarm::Refused));
        assert_eq!(world.parked, ["w1", "w2"]);
        world.fire_parked_retries();
        let again = requests(&world);
        assert_eq!((again[0] - after[0], again[1] - after[1], again[2] - after[2]), (1, 1, 0));
        assert_eq!(world.alarms.len(), 4, "each raises its alarm again: {:?}", world.alarms);
        // A witness that comes right again cosigns, and its alarm is cleared.
        world.witnesses.get_mut("w2").unwrap().known = Known::unseen();
        world.fire_parked_retries();
        assert_eq!(world.published_cosigners(), (7, vec!["w2".into(), "w3".into()]));
        assert_eq!(world.collector.status().witnesses[1].alarm, None);
    }

    #[test]
    fn a_cosignature_by_another_key_is_not_taken() {
        let mut world = World::new("two", Publication::Quorum);
        world.witnesses.get_mut("w3").unwrap().behaviour = Behaviour::WrongKey;
        world.grow(2);
        assert_eq!(world.published_cosigners(), (2, vec!["w1".into(), "w2".into()]));
        assert_eq!(world.gave_up, [("w3".into(), GiveUp::BadCosignature)]);
        assert_eq!(world.stored.len(), 2);
    }

    #[test]
    fn a_cosignature_from_the_future_is_not_taken() {
        let mut world = World::new("two", Publication::Quorum);
        world.witnesses.get_mut("w1").unwrap().behaviour = Behaviour::Ahead(600);
        world.witnesses.get_mut("w2").unwrap().behaviour = Behaviour::Ahead(601);
        world.witnesses.get_mut("w3").unwrap().behaviour = Behaviour::Ahead(1 << 63);
        world.grow(2);
        assert_eq!(world.published, None);
        assert_eq!(
            world.gave_up,
            [("w2".into(), GiveUp::BadCosignature), ("w3".into(), GiveUp::BadCosignature)],
            "ten minutes of skew are allowed, not more"
        );
        assert_eq!(world.stored.len(), 1);
        assert!(world.collector.status().witnesses.iter().all(|w| w.cosigned.is_none_or(|(_, at)| at < 1 << 62)));
    }

    #[test]
    fn an_alarm_against_a_key_the_policy_no_longer_names_is_still_reported() {
        let mut world = World::new("two", Publication::Quorum);
        world.grow(2);
        let old_w1 = world.witnesses["w1"].key.verifier().to_string();
        let mut stored = world.stored_rows();
        for row in &mut stored {
            row.alarm = (row.witness_vkey == old_w1).then_some(Alarm::Refused);
        }
        // The operator gives w1 a new key.
        world.witnesses.get_mut("w1").unwrap().key = CosignerKey::generate("w1").unwrap();
        let restarted = Collector::new(&world.signer.verifier(), world.policy(), Settings::default(), stored).unwrap();
        let status = restarted.status();
        assert_eq!(status.witnesses[0].alarm, None, "the new key has no alarm of its own");
        assert_eq!(status.unlisted_alarms, [(old_w1, Alarm::Refused)]);
    }

    proptest::proptest! {
        #[test]
        fn garbage_answers_never_panic_nor_count_as_cosignatures(
            body in "(?s).{0,300}",
            line in "\u{2014} w1 [A-Za-z0-9+/=]{0,120}",
        ) {
            for answer in [Answer::Cosigned(body.clone()), Answer::Cosigned(format!("{line}\n"))] {
                let mut world = World::new("two", Publication::Quorum);
                world.leaves.push(leaf_hash(b"one"));
                let sent = world.collector.handle(Event::Checkpoint(world.checkpoint()));
                proptest::prop_assert_eq!(sent.iter().filter(|e| matches!(e, Effect::Send { .. })).count(), 3);
                let effects = world.collector.handle(Event::Answered { witness: "w1".into(), size: 1, answer, now: 1 });
                let gave_up = Effect::GaveUp { witness: "w1".into(), size: 1, reason: GiveUp::BadCosignature };
                proptest::prop_assert_eq!(effects.first(), Some(&gave_up));
                let took = effects.iter().any(|e| matches!(e, Effect::Store(_) | Effect::Publish { .. }));
                proptest::prop_assert!(!took, "a garbage answer was taken: {:?}", effects);
            }
        }
    }

    impl World {
        /// What the collector stored, as the catalog gives it back at start-up.
        fn stored_rows(&self) -> Vec<Stored> {
            self.stored
                .values()
                .map(|c| Stored {
                    witness_vkey: c.witness_vkey.clone(),
                    cosigned: Some((c.checkpoint.note().to_vec(), c.line.clone())),
                    alarm: None,
                })
                .collect()
        }

        /// Every signature line of the published note verifies on it: the log's, then each witness's.
        fn assert_published_note_verifies(&self) {
            let Some((_, note)) = self.published.clone() else { return };
            let text = String::from_utf8(note.clone()).unwrap();
            let lines = text.rsplit_once("\n\n").unwrap().1.lines().count();
            let (_, cosigners) = self.published_cosigners();
            assert_eq!(lines, 1 + cosigners.len(), "a signature line does not verify on the note: {text}");
        }
    }

    #[test]
    fn a_log_forked_at_the_same_size_never_publishes_the_old_cosignatures_and_shows_witnesses_its_checkpoint() {
        for (publication, check) in [
            (Publication::Immediate, false),
            (Publication::Immediate, true),
            (Publication::Quorum, false),
            (Publication::Quorum, true),
        ] {
            let mut world = World::new("two", publication);
            world.grow(3);
            assert_eq!(world.published_cosigners().1.len(), 3);
            let stored = world.stored_rows();
            // The log's directory comes back from a backup and takes other entries: another tree of size 3.
            world.leaves = (0..3).map(|n| leaf_hash(format!("forked {n}").as_bytes())).collect();
            world.published = None;
            world.collector =
                Collector::new(&world.signer.verifier(), world.policy(), world.collector.settings, stored).unwrap();
            if check {
                let effects = {
                    let leaves = world.leaves.clone();
                    world.collector.check_restored(|checkpoint| {
                        let size = checkpoint.checkpoint.size as usize;
                        size <= leaves.len() && tree_hash(&leaves[..size]) == checkpoint.checkpoint.root
                    })
                };
                let alarms: Vec<_> =
                    effects.iter().filter(|e| matches!(e, Effect::Alarm { alarm: Alarm::NotInLog, .. })).collect();
                assert_eq!(alarms.len(), 3, "{publication:?}");
                assert!(world.collector.status().witnesses.iter().all(|w| w.alarm == Some(Alarm::NotInLog)));
                assert_eq!(world.collector.published(), None);
            }
            world.grow(0);
            // Each witness is shown the log's checkpoint of size 3, and refuses it: it cosigned another of size 3.
            let refused: Vec<_> = world.alarms.iter().filter(|(_, alarm)| *alarm == Alarm::Refused).collect();
            assert_eq!(refused.len(), 3, "{publication:?} {check}: {:?}", world.alarms);
            match publication {
                Publication::Immediate => {
                    assert_eq!(world.published_cosigners(), (3, vec![]), "{check}");
                    assert_eq!(world.published.as_ref().unwrap().1, world.checkpoint().note());
                }
                Publication::Quorum => assert_eq!(world.published, None, "{check}"),
            }
            world.assert_published_note_verifies();
        }
    }

    #[test]
    fn a_restarted_collector_publishes_what_was_stored_and_ignores_stale_answers() {
        let mut world = World::new("two", Publication::Quorum);
        world.grow(3);
        let stored: Vec<Stored> = world
            .stored
            .values()
            .map(|c| Stored {
                witness_vkey: c.witness_vkey.clone(),
                cosigned: Some((c.checkpoint.note().to_vec(), c.line.clone())),
                alarm: None,
            })
            .collect();
        let published = world.published.clone().unwrap();
        let policy = world.collector.policy.clone();
        let mut restarted = Collector::new(&world.signer.verifier(), policy, Settings::default(), stored).unwrap();
        let effects = restarted.handle(Event::Checkpoint(world.checkpoint()));
        assert_eq!(effects.iter().filter(|e| matches!(e, Effect::Send { old_size: 3, .. })).count(), 0);
        assert_eq!(restarted.published(), Some(&published.1[..]));
        assert!(restarted.status().unlisted_alarms.is_empty());
        // An answer nobody asked for changes nothing.
        let stale =
            restarted.handle(Event::Answered { witness: "w1".into(), size: 99, answer: Answer::Failed, now: 1 });
        assert!(stale.is_empty());
        // A log key the policy does not name is refused.
        let other = LogSigner::generate(ORIGIN).unwrap().verifier();
        assert!(Collector::new(&other, world.policy(), Settings::default(), Vec::new()).is_err());
    }
}
