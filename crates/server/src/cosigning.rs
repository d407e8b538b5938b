//! Collecting cosignatures on this gateway's own checkpoints from the witnesses its policy names
//! (`CUSTODIA_WITNESS_POLICY`, c2sp.org/tlog-policy), and publishing the cosigned checkpoint at `/log/checkpoint`;
//! `GET /witness/cosignatures` shows each witness's state and any alarm.
//!
//! The logic is `custodia_witness::collector`, pure: this module is its IO. One task feeds it the log's new
//! checkpoints, one task owns it and carries out its effects in order (requests and timers in tasks of their own,
//! whose outcomes come back as events), and the catalog keeps each witness's latest cosignature and alarm
//! (`witness_cosignatures`), so a restart publishes what was already cosigned and forgets no alarm.
//!
//! Of the gateways on one database, one asks the witnesses: the holder of the duty of cosigning
//! ([`custodia_catalog::Duty::COSIGNING`], a lease renewed every 5 s), so that each witness is asked once per
//! round, not once per gateway. Every other gateway's collector asks nobody and takes in, every 5 s, the
//! cosignatures the holder stored in the catalog ([`Collector::adopt`]), each checked against its own key and
//! against the log, so that every gateway publishes the cosigned checkpoint at `/log/checkpoint` within seconds of
//! the holder. A gateway that takes the duty over (its holder dead, frozen or cut off for 15 s) asks from there.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use custodia_catalog::Catalog;
use custodia_ledger::{Log, LogVerifier, SignedCheckpoint};
use custodia_witness::AddCheckpoint;
use custodia_witness::collector::{Alarm, Answer, Collector, Effect, Event, Publication, Settings, Stored};
use custodia_witness::policy::Policy;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::{WitnessConfig, WitnessPublish};
use crate::problem::Problem;
use custodia_service::clock::Clock;

/// A witness's answer holds a few cosignature lines; anything longer is not an answer.
const ANSWER_LIMIT: usize = 64 * 1024;

/// How often a gateway asks whether the duty of cosigning is (still) its own, and one without it takes in the
/// cosignatures the holder stored.
const DUTY_CHECK: Duration = Duration::from_secs(5);

/// What the collector's owner is told: an event for the collector, whether to ask the witnesses (this gateway holds
/// the duty of cosigning or not), or a cosignature another gateway stored.
#[derive(Debug)]
enum Input {
    Event(Event),
    Asking(bool),
    Stored(Stored),
}

pub fn router(cosigning: Arc<Cosigning>) -> Router {
    Router::new().route("/witness/cosignatures", get(report)).with_state(cosigning)
}

/// The collector of this gateway's cosignatures, or nothing when no witness policy is configured.
#[derive(Debug, Default)]
pub struct Cosigning {
    collector: Option<Mutex<Collector>>,
    /// The policy, and its file verbatim (court bundles carry it).
    policy: Option<(Policy, String)>,
    /// Woken whenever the collector publishes, for exports waiting on a cosigned checkpoint.
    published_changed: tokio::sync::Notify,
    /// How long an export waits for a cosigned checkpoint covering its records.
    export_wait: Duration,
}

/// What `/log/checkpoint` serves.
#[derive(Debug)]
pub enum Published {
    /// No witness policy: the log's checkpoint as it signed it.
    NotCollecting,
    /// The cosigned checkpoint.
    Note(Vec<u8>),
    /// A policy, but no checkpoint has been published under it yet (quorum publication, quorum not yet met).
    Nothing,
}

impl custodia_service::gateway::WitnessedCheckpoints for Cosigning {
    fn policy_file(&self) -> Option<&str> {
        Cosigning::policy_file(self)
    }

    fn cosigned_covering(&self, size: u64) -> futures::future::BoxFuture<'_, Option<(Vec<u8>, u64)>> {
        Box::pin(Cosigning::cosigned_covering(self, size))
    }
}

impl Cosigning {
    fn lock(collector: &Mutex<Collector>) -> std::sync::MutexGuard<'_, Collector> {
        collector.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The witness policy file, verbatim, when one is configured.
    pub fn policy_file(&self) -> Option<&str> {
        self.policy.as_ref().map(|(_, text)| text.as_str())
    }

    /// The published checkpoint, with its size, if its cosignatures meet the policy's quorum (checked again here).
    pub fn cosigned(&self) -> Option<(Vec<u8>, u64)> {
        let (collector, (policy, _)) = (self.collector.as_ref()?, self.policy.as_ref()?);
        let note = Self::lock(collector).published()?.to_vec();
        let verdict = policy.evaluate(&note).ok()?;
        verdict.satisfied.then_some((note, verdict.size))
    }

    /// Waits, at most the export wait (`CUSTODIA_WITNESS_EXPORT_WAIT_SECONDS`), for a published checkpoint of at
    /// least `size` entries whose cosignatures meet the quorum; then gives the newest that meets it, which may be
    /// smaller, or none.
    pub async fn cosigned_covering(&self, size: u64) -> Option<(Vec<u8>, u64)> {
        let deadline = tokio::time::Instant::now() + self.export_wait;
        loop {
            let notified = self.published_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let found = self.cosigned();
            if found.as_ref().is_some_and(|(_, cosigned)| *cosigned >= size) {
                return found;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.cosigned();
            }
        }
    }

    pub fn published(&self) -> Published {
        match &self.collector {
            None => Published::NotCollecting,
            Some(collector) => {
                Self::lock(collector).published().map_or(Published::Nothing, |note| Published::Note(note.to_vec()))
            }
        }
    }

    /// The state shown at `GET /witness/cosignatures`.
    pub fn report(&self) -> CosigningReport {
        let Some(collector) = &self.collector else {
            return CosigningReport {
                collecting: false,
                asking: false,
                publication: None,
                log_size: None,
                published: None,
                witnesses: Vec::new(),
                unlisted_alarms: Vec::new(),
            };
        };
        let status = Self::lock(collector).status();
        CosigningReport {
            collecting: true,
            asking: status.asking,
            publication: Some(match status.publication {
                Publication::Quorum => "quorum",
                Publication::Immediate => "immediate",
            }),
            log_size: status.log_size,
            published: status.published.map(|(size, cosigned_by)| PublishedReport { size, cosigned_by }),
            witnesses: status
                .witnesses
                .into_iter()
                .map(|w| WitnessReport {
                    name: w.name,
                    vkey: w.vkey,
                    asked: w.contacted,
                    cosigned_size: w.cosigned.map(|(size, _)| size),
                    cosigned_at: w.cosigned.map(|(_, timestamp)| timestamp),
                    alarm: w.alarm.map(Alarm::code),
                    alarm_raised_now: w.alarm_now,
                    requests: w.counts.requests,
                    cosigned: w.counts.cosigned,
                    conflicts: w.counts.conflicts,
                    retries: w.counts.retries,
                    gave_up: w.counts.gave_up,
                    alarms: w.counts.alarms,
                })
                .collect(),
            unlisted_alarms: status
                .unlisted_alarms
                .into_iter()
                .map(|(vkey, alarm)| UnlistedAlarm { vkey, alarm: alarm.code() })
                .collect(),
        }
    }
}

/// `GET /witness/cosignatures`.
#[derive(Debug, Serialize)]
pub struct CosigningReport {
    /// Whether a witness policy is configured.
    pub collecting: bool,
    /// Whether this gateway asks the witnesses (it holds the duty of cosigning); otherwise another gateway on the
    /// database does, and this one publishes the cosignatures it stored. Counts of requests are this process's.
    pub asking: bool,
    /// `quorum` or `immediate`.
    pub publication: Option<&'static str>,
    /// The size of the log's newest checkpoint.
    pub log_size: Option<u64>,
    /// The checkpoint served at `/log/checkpoint`.
    pub published: Option<PublishedReport>,
    pub witnesses: Vec<WitnessReport>,
    /// Alarms stored against witness keys the policy no longer names (a witness removed or re-keyed).
    pub unlisted_alarms: Vec<UnlistedAlarm>,
}

#[derive(Debug, Serialize)]
pub struct UnlistedAlarm {
    pub vkey: String,
    pub alarm: &'static str,
}

#[derive(Debug, Serialize)]
pub struct PublishedReport {
    pub size: u64,
    /// The policy's names of the witnesses whose cosignatures it carries.
    pub cosigned_by: Vec<String>,
}

/// One witness of this log. Counts are since the process started.
#[derive(Debug, Serialize)]
pub struct WitnessReport {
    pub name: String,
    pub vkey: String,
    /// Whether it is asked (the policy gives its URL).
    pub asked: bool,
    /// The size it last cosigned, and the cosignature's time (Unix seconds, the witness's clock).
    pub cosigned_size: Option<u64>,
    pub cosigned_at: Option<u64>,
    /// The alarm standing against it: `refused-as-inconsistent` (a 422) or `witness-ahead-of-log`.
    pub alarm: Option<&'static str>,
    /// Whether this process raised that alarm (the witness is then asked again only every 10 minutes).
    pub alarm_raised_now: bool,
    pub requests: u64,
    pub cosigned: u64,
    pub conflicts: u64,
    pub retries: u64,
    pub gave_up: u64,
    pub alarms: u64,
}

async fn report(State(cosigning): State<Arc<Cosigning>>) -> Response {
    axum::Json(cosigning.report()).into_response()
}

/// What `/log/checkpoint` answers while nothing is published under a quorum policy.
pub fn nothing_published() -> Response {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "awaiting-witnesses",
        "No cosigned checkpoint yet",
        "no checkpoint of this log has reached its witnesses' quorum yet; see /witness/cosignatures",
    )
    .into_response()
}

/// Starts collecting for `log` (signed by `vkey`) if a witness policy is configured: asking the witnesses while this
/// gateway holds the duty of cosigning, else publishing what the holder stored.
pub async fn start(
    config: &WitnessConfig,
    log: &Log,
    vkey: &LogVerifier,
    catalog: Catalog,
    clock: Clock,
) -> anyhow::Result<Arc<Cosigning>> {
    let Some(path) = &config.policy_file else { return Ok(Arc::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let policy = Policy::parse(&text).with_context(|| format!("{} (CUSTODIA_WITNESS_POLICY)", path.display()))?;
    let kept = (policy.clone(), text.clone());
    let mut stored = Vec::new();
    let mut restored = Vec::new();
    for row in catalog.witness_cosignatures().await? {
        let alarm = row.alarm.as_deref().and_then(Alarm::from_code);
        if let Some(alarm) = alarm {
            let witness = row.witness_vkey.split('+').next().unwrap_or_default();
            tracing::error!(witness, alarm = alarm.code(), since = %row.updated_at, "an alarm stands against a witness of this log");
        }
        let cosigned = row.checkpoint.zip(row.cosignature).map(|(note, line)| (note.into_bytes(), line));
        restored.extend(cosigned.clone());
        stored.push(Stored { witness_vkey: row.witness_vkey, cosigned, alarm });
    }
    let settings = Settings {
        publication: match config.publish {
            WitnessPublish::Quorum => Publication::Quorum,
            WitnessPublish::Immediate => Publication::Immediate,
        },
        attempts: config.attempts.max(1),
        ..Settings::default()
    };
    let mut collector = Collector::new(vkey, policy, settings, stored)
        .with_context(|| format!("{} (CUSTODIA_WITNESS_POLICY)", path.display()))?;
    let witnesses = collector.status().witnesses.len();
    let first = log.checkpoint();
    let first_size = first.checkpoint.size;
    // Cosignatures stored on checkpoints that the log no longer holds (cut back, or forked at the same size by a
    // restore from a backup) are dropped with an alarm before anything is published.
    let mut not_in_log = std::collections::BTreeSet::new();
    for (note, _) in &restored {
        if let Ok(checkpoint) = SignedCheckpoint::open(note, std::slice::from_ref(vkey))
            && !in_log(log, &first, &checkpoint).await
        {
            not_in_log.insert(note.clone());
        }
    }
    let mut effects = collector.check_restored(|checkpoint| !not_in_log.contains(checkpoint.note()));
    // Asks from the first checkpoint only if this gateway holds the duty of cosigning.
    let node = custodia_service::gateway::new_id("node");
    let lease = match catalog.try_duty(custodia_catalog::Duty::COSIGNING, &node).await {
        Ok(lease) => lease,
        Err(err) => {
            tracing::warn!(error = %custodia_service::error::Chain(&err), "cannot ask whether this gateway asks the witnesses");
            None
        }
    };
    effects.extend(collector.set_asking(lease.is_some()));
    effects.extend(collector.handle(Event::Checkpoint(first)));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(config.timeout_seconds.max(1)))
        .connect_timeout(Duration::from_secs(config.timeout_seconds.max(1)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("custodia/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("making the HTTP client for witnesses")?;
    let cosigning = Arc::new(Cosigning {
        collector: Some(Mutex::new(collector)),
        policy: Some(kept),
        published_changed: tokio::sync::Notify::new(),
        export_wait: Duration::from_secs(config.export_wait_seconds),
    });
    let (events, incoming) = mpsc::channel(256);
    let driver = Driver {
        cosigning: cosigning.clone(),
        events: events.clone(),
        log: log.clone(),
        catalog: catalog.clone(),
        client,
        clock,
    };
    tokio::spawn(driver.run(incoming, effects));
    tokio::spawn(follow_checkpoints(log.clone(), first_size, events.clone()));
    let asking = lease.is_some();
    tokio::spawn(keep_the_duty(node, lease, log.clone(), vkey.clone(), catalog, events));
    tracing::info!(witnesses, asking, publication = ?config.publish, "collecting cosignatures on this log's checkpoints");
    Ok(cosigning)
}

/// Every [`DUTY_CHECK`]: takes or renews the duty of cosigning and tells the collector whether to ask the witnesses;
/// without it, hands the collector the cosignatures the holder stored (those of a checkpoint in the log as this
/// gateway knows it), and, on taking it over, those first.
async fn keep_the_duty(
    node: String,
    mut lease: Option<custodia_catalog::DutyLease>,
    log: Log,
    vkey: LogVerifier,
    catalog: Catalog,
    events: mpsc::Sender<Input>,
) {
    // The checkpoints already found in the log: a checkpoint in it stays in it.
    let mut in_the_log: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    loop {
        tokio::time::sleep(DUTY_CHECK).await;
        let held = match &lease {
            Some(held) => held.still_held().await,
            None => false,
        };
        if !held && lease.take().is_some() {
            tracing::warn!("another gateway asks the witnesses now");
            if events.send(Input::Asking(false)).await.is_err() {
                return;
            }
        }
        if held {
            continue;
        }
        // Not the holder: what it stored is published here too, taken in before this gateway may ask.
        match catalog.witness_cosignatures().await {
            Ok(rows) => {
                let latest = log.checkpoint();
                for row in rows {
                    let alarm = row.alarm.as_deref().and_then(Alarm::from_code);
                    let cosigned = row.checkpoint.zip(row.cosignature).map(|(note, line)| (note.into_bytes(), line));
                    if let Some((note, _)) = &cosigned
                        && !in_the_log.contains(note)
                    {
                        let Ok(checkpoint) = SignedCheckpoint::open(note, std::slice::from_ref(&vkey)) else {
                            continue;
                        };
                        // Ahead of the log as this gateway knows it, or not in it: not now.
                        if !in_log(&log, &latest, &checkpoint).await {
                            continue;
                        }
                        in_the_log.insert(note.clone());
                    }
                    let stored = Stored { witness_vkey: row.witness_vkey, cosigned, alarm };
                    if events.send(Input::Stored(stored)).await.is_err() {
                        return;
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %custodia_service::error::Chain(&err), "could not read the cosignatures another gateway stored")
            }
        }
        match catalog.try_duty(custodia_catalog::Duty::COSIGNING, &node).await {
            Ok(Some(taken)) => {
                tracing::info!("this gateway asks the witnesses now");
                lease = Some(taken);
                if events.send(Input::Asking(true)).await.is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(error = %custodia_service::error::Chain(&err), "cannot ask whether this gateway asks the witnesses")
            }
        }
    }
}

/// Whether `checkpoint` is the log's own tree at its size, the log's newest checkpoint being `latest`.
async fn in_log(log: &Log, latest: &SignedCheckpoint, checkpoint: &SignedCheckpoint) -> bool {
    let (size, root) = (checkpoint.checkpoint.size, checkpoint.checkpoint.root);
    let (latest_size, latest_root) = (latest.checkpoint.size, latest.checkpoint.root);
    if size >= latest_size {
        return size == latest_size && root == latest_root;
    }
    if size == 0 {
        return root == custodia_ledger::merkle::empty_root();
    }
    match log.storage().consistency_proof(size, latest_size).await {
        Ok(proof) => {
            custodia_ledger::merkle::verify_consistency(size, latest_size, &proof, &root, &latest_root).is_ok()
        }
        Err(err) => {
            tracing::error!(error = %custodia_service::error::Chain(&err), size, "could not check a stored cosignature against the log");
            false
        }
    }
}

/// Feeds the collector each checkpoint the log publishes after `size` (the newest one at each wake-up).
async fn follow_checkpoints(log: Log, mut size: u64, events: mpsc::Sender<Input>) {
    while let Ok(checkpoint) = log.wait_for_size(size + 1).await {
        size = checkpoint.checkpoint.size;
        if events.send(Input::Event(Event::Checkpoint(checkpoint))).await.is_err() {
            return;
        }
    }
}

/// The collector's IO.
#[derive(Debug)]
struct Driver {
    cosigning: Arc<Cosigning>,
    events: mpsc::Sender<Input>,
    log: Log,
    catalog: Catalog,
    client: reqwest::Client,
    clock: Clock,
}

impl Driver {
    async fn run(self, mut incoming: mpsc::Receiver<Input>, first: Vec<Effect>) {
        let Some(collector) = &self.cosigning.collector else { return };
        for effect in first {
            self.apply(effect).await;
        }
        while let Some(input) = incoming.recv().await {
            let effects = {
                let mut collector = Cosigning::lock(collector);
                match input {
                    Input::Event(event) => collector.handle(event),
                    Input::Asking(asking) => collector.set_asking(asking),
                    // Not taken now (a checkpoint this gateway has not seen yet): offered again at the next look.
                    Input::Stored(stored) => collector.adopt(&stored).unwrap_or_default(),
                }
            };
            for effect in effects {
                self.apply(effect).await;
            }
        }
    }

    async fn apply(&self, effect: Effect) {
        match effect {
            Effect::Send { witness, url, old_size, checkpoint } => {
                let (log, client, events) = (self.log.clone(), self.client.clone(), self.events.clone());
                let clock = self.clock.clone();
                tokio::spawn(async move {
                    let size = checkpoint.checkpoint.size;
                    let answer = ask(&log, &client, &witness, &url, old_size, checkpoint).await;
                    let now = u64::try_from(clock.unix_seconds()).unwrap_or(0);
                    let _ = events.send(Input::Event(Event::Answered { witness, size, answer, now })).await;
                });
            }
            Effect::RetryAfter { witness, delay } => {
                let events = self.events.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = events.send(Input::Event(Event::RetryDue { witness })).await;
                });
            }
            Effect::Store(cosigned) => {
                let size = i64::try_from(cosigned.checkpoint.checkpoint.size).unwrap_or(i64::MAX);
                let note = String::from_utf8_lossy(cosigned.checkpoint.note()).into_owned();
                let at = self.clock.now().to_string();
                if let Err(err) = self
                    .catalog
                    .store_witness_cosignature(&cosigned.witness_vkey, size, &note, &cosigned.line, &at)
                    .await
                {
                    tracing::error!(error = %custodia_service::error::Chain(&err), "could not store a witness's cosignature");
                }
            }
            Effect::Alarm { witness, witness_vkey, alarm } => {
                // The witness's name is the operator's own policy; nothing the witness sent is logged.
                if alarm == Alarm::NotInLog {
                    tracing::error!(
                        witness = %witness,
                        alarm = alarm.code(),
                        "the checkpoint this witness last cosigned is not in the log as it is now (was the log cut \
                         back or restored from a backup?): its cosignature is dropped and it is shown the log's \
                         checkpoint"
                    );
                } else {
                    tracing::error!(
                    witness = %witness,
                    alarm = alarm.code(),
                    "a witness refuses this log's checkpoint for good: this log may have shown two histories, or the \
                     witness holds another log under this name; it is asked again only in 10 minutes"
                    );
                }
                let at = self.clock.now().to_string();
                if let Err(err) = self.catalog.store_witness_alarm(&witness_vkey, alarm.code(), &at).await {
                    tracing::error!(error = %custodia_service::error::Chain(&err), "could not store a witness alarm");
                }
            }
            Effect::GaveUp { witness, size, reason } => {
                tracing::warn!(witness = %witness, size, reason = reason.code(), "a witness did not cosign a checkpoint");
            }
            Effect::Publish { size, .. } => {
                tracing::debug!(size, "published a checkpoint");
                self.cosigning.published_changed.notify_waiters();
            }
            _ => {}
        }
    }
}

/// Sends one add-checkpoint request and reads the answer.
async fn ask(
    log: &Log,
    client: &reqwest::Client,
    witness: &str,
    url: &str,
    old_size: u64,
    checkpoint: SignedCheckpoint,
) -> Answer {
    let size = checkpoint.checkpoint.size;
    let proof = if old_size == 0 || old_size >= size {
        Vec::new()
    } else {
        match log.storage().consistency_proof(old_size, size).await {
            Ok(proof) => proof,
            Err(err) => {
                tracing::error!(error = %custodia_service::error::Chain(&err), witness, old_size, size, "could not make a consistency proof");
                return Answer::Failed;
            }
        }
    };
    let body = AddCheckpoint { old_size, proof, checkpoint: checkpoint.note().to_vec() }.to_bytes();
    let sent = client
        .post(format!("{url}/add-checkpoint"))
        .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body)
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(err) => {
            tracing::debug!(witness, timeout = err.is_timeout(), "no answer from a witness");
            return Answer::Failed;
        }
    };
    let status = response.status().as_u16();
    let size_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"text/x.tlog.size"));
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= ANSWER_LIMIT => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Ok(Some(_)) | Err(_) => return Answer::Failed,
        }
    }
    match status {
        200 => String::from_utf8(body).map_or(Answer::Failed, Answer::Cosigned),
        409 if size_type => std::str::from_utf8(&body)
            .ok()
            .map(|text| text.strip_suffix('\n').unwrap_or(text))
            .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|text| text.parse().ok())
            .map_or(Answer::Failed, Answer::Conflict),
        408 | 409 | 429 => Answer::Failed,
        400..=499 => Answer::Refused(status),
        _ => Answer::Failed,
    }
}
