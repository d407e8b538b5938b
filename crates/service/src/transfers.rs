//! Evidence sent to, and received from, partner gateways ([`custodia_partners::transfer`]), with e-CODEX's
//! ladder of signed evidences logged on both sides.
//!
//! **Sending.** A member sends an artefact to a partner: the gateway checks the artefact's use policy for a
//! transfer to that partner's jurisdiction, records the transfer (`artefact_transferred`), makes the head of the
//! artefact's court bundle (every file but the payload, the record of the transfer among them) and puts it in the
//! offer, issues and logs `SubmissionAcceptance`, and hands the rest to a driver task that survives restarts (its
//! state is in the catalog): it offers the transfer, sends the payload from the store in chunks from where the
//! receiving gateway says it holds them durably (the next chunk read and signed while one is on its way), asks it
//! to finish, and keeps every evidence the receiving gateway returns, checked against the keys pinned for it and
//! logged again here. If the receiving gateway stays silent past a timeout, the driver issues `RelayFailure` or
//! `NonDelivery` itself. A policy that forbids the transfer is refused and recorded before anything is made.
//!
//! **Receiving.** An offer from a pinned partner, with its `SubmissionAcceptance` shown on the partner's log, opens
//! a transfer here (`RelayAcceptance`); chunks of the payload are written at their offset, synced, and only then
//! counted; at the end the whole bundle (the offer's head, the staged payload, the tar's end) is verified with the
//! partner's pinned log key before anything is accepted: a bundle that fails gets `NonDelivery` and nothing is
//! stored. One that verifies is taken into custody in the partner's inbox case (the staged payload linked into the
//! store, not copied), with its provider's use policy and a `received_from` record that commits to the provider's
//! manifest, and gets `Delivery`. The provider's chain stays in the transfer's offer, and every bundle of the
//! artefact carries it ([`custodia_bundle::ProviderChain`]). The first download by a member there gets
//! `Retrieval`, or the retrieval timeout `NonRetrieval`.
//!
//! Every request is idempotent: an offer or a chunk sent twice changes nothing, and either gateway may be killed
//! at any point and pick up where the catalog says it was. The evidence that closes a retrieval is kept in the
//! transaction that moves the transfer on, before its proof exists; one whose gateway stopped before adding the
//! proof is completed by the sweep of the duty's holder, and only then sent.
//!
//! **Several gateways on one database.** One of them holds the duty of the transfers
//! ([`custodia_catalog::Duty::TRANSFERS`], a lease renewed every 5 s): it alone drives the transfers sent (whichever
//! gateway a member sent from), sends the outbox, sweeps the timeouts and takes the partners' requests about
//! transfers (`/readyz/transfers` says so, and the load balancer sends them to it); the others answer those 503
//! with `Retry-After`, and a sending gateway tries again. A gateway that takes the duty over (its holder dead,
//! frozen or cut off for 15 s) starts the drivers; one that finds it gone stops its own and forgets what was
//! arriving. What arrives is staged on the holder's own disk, and the catalog notes whose
//! ([`custodia_catalog::TransferStaging`], by the staging identity of a data directory, so a restart on the same
//! directory keeps it): what a gateway reports to the sender is what it holds itself, so a new holder, which has
//! none of the old one's staging file, reports nothing held and is sent the payload again from the start, and the
//! old holder can count nothing more and take nothing into custody. Only a whole bundle that verifies is ever
//! accepted, wherever it was staged.
//!
//! **Partner gateways** are reached through a [`PartnerClient`] (the server's signs HTTP requests); this gateway's
//! place among them, the partners it pins and the key that signs its evidences, is a [`Partnership`].

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use custodia_catalog::{Account, KeptEvidence, TransferEvidenceRow, TransferMove, TransferRow, Turn, TurnKind};
use custodia_core::{ArtefactId, CaseId, CustodyEvent, Label, Sha256, UsePolicy};
use custodia_ledger::LogVerifier;
use custodia_partners::Partner;
use custodia_partners::evidence::{
    DIGEST_ALGORITHM, EVIDENCE_TYPE, Evidence, EvidenceEvent, NegativeReason, SignedEvidence, check_ladder,
};
use custodia_partners::transfer::{
    EVIDENCE_FIELD, Logged, MAX_CHUNK_BYTES, Offer, Progress, Stage, WireEvidence, check_logged,
};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::Serialize;

use crate::chunk_buffers::ChunkBuffers;
use crate::error::Chain;
use crate::gateway::{Committer, Gateway, GatewayError, UploadRequest, bad_input};
use crate::identity::{Channel, Principal};
use crate::partner_client::{PartnerClient, PartnerError, Refusal};

type Result<T> = std::result::Result<T, GatewayError>;

/// How many transfers one partner may have arriving here at once, and one account sending at once: each holds a
/// staging file (up to the largest artefact) until it ends.
pub const RECEIVING_PER_PARTNER: i64 = 8;
pub const SENDING_PER_ACCOUNT: i64 = 4;
/// The most outcome reports a partner may send about one transfer.
pub const REPORTS_PER_TRANSFER: usize = 16;
/// Room kept free on the disk of the staging files beyond what an offer needs.
const STAGING_RESERVE: u64 = 1 << 30;

/// How many retry intervals apart a sending gateway asks whether a delivered transfer was retrieved.
const ASKS_APART: u32 = 6;

/// The chunk size this gateway sends with.
pub const CHUNK_BYTES: u64 = MAX_CHUNK_BYTES;
/// How many bytes of a transfer arriving here are written, at least, between the starts of syncs: each sync makes
/// them durable, and only when it has ended are they counted as received. A sync runs while the next bytes arrive,
/// and the next starts only once it has ended, so the arrival is never held up by the disk's flushing (only by its
/// own writes, which the kernel slows when too much is unflushed).
pub const SYNC_EVERY: u64 = 64 << 20;

/// How long each step of a transfer may take, and how often a driver tries again.
#[derive(Debug, Clone, Copy)]
pub struct TransferTiming {
    /// From submission to the receiving gateway's `RelayAcceptance`.
    pub relay: Duration,
    /// From submission to its `Delivery`.
    pub delivery: Duration,
    /// From delivery to a member's retrieval there.
    pub retrieval: Duration,
    /// Between tries of a failed request, and between asks for the retrieval.
    pub retry: Duration,
}

/// How often a gateway asks whether the duty of the transfers is (still) its own, and the duty's holder looks for
/// transfers to drive (sent from any gateway on the database).
const DUTY_CHECK: Duration = Duration::from_secs(5);

/// How old a sent transfer without its offer must be for the duty's holder to give it up: its row is made before
/// its submission is logged (seconds, on any gateway), and only a gateway cut off between the two leaves it so.
const UNSUBMITTED_ABANDONED_AFTER: Duration = Duration::from_secs(600);

/// How old a staging file that no transfer in the catalog names must be for a gateway to remove it: an offer makes
/// its file a moment before its row.
const ORPHAN_STAGING_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What is unavailable on a gateway that does not hold the duty of the transfers ([`GatewayError::Unavailable`]).
pub const TRANSFERS_ELSEWHERE: &str = "the transfers with partner gateways, handled by another gateway,";

/// Why a gateway that does not hold the duty of the transfers takes no partner's request about one.
#[derive(Debug, thiserror::Error)]
#[error("another gateway on this database holds the duty of the transfers with partner gateways")]
pub struct OffDuty;

/// Why an arriving transfer's chunk or completion is refused on a gateway that no longer stages it.
#[derive(Debug, thiserror::Error)]
#[error("transfer {0} is staged on another gateway now")]
struct StagedElsewhere(String);

/// Requests this process sent to partner gateways about transfers, by kind (for `/metrics`).
#[derive(Debug, Default)]
pub struct SentToPartners {
    pub offers: AtomicU64,
    pub chunks: AtomicU64,
    pub completions: AtomicU64,
    pub progress: AtomicU64,
    pub outbox: AtomicU64,
}

/// The staging identity of the data directory whose staging files lie in `dir` (`staging-id` there, made once:
/// random, naming no host): the catalog notes by it which gateway's disk holds an arriving transfer's payload.
fn staging_identity(dir: &std::path::Path) -> std::io::Result<String> {
    let path = dir.join("staging-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if is_id_of("stg", id.trim()) => return Ok(id.trim().to_owned()),
        Ok(_) => return Err(std::io::Error::other(format!("{} does not hold a staging identity", path.display()))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let id = crate::gateway::new_id("stg");
    let temporary = dir.join("staging-id.new");
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(id.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(id)
}

/// This gateway among its partners, as its transfers need it: the partners it pins, its name among them, and the
/// key that signs its evidences (the one that signs its requests, which its partners pin).
#[derive(Clone)]
pub struct Partnership {
    registry: custodia_partners::Registry,
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for Partnership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partnership")
            .field("name", &self.name)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl Partnership {
    /// Partners as `registry` pins them; this gateway's `name` among them, and its request key `key`.
    pub fn new(registry: custodia_partners::Registry, name: String, key: SigningKey) -> Self {
        Self { registry, name, key }
    }

    pub fn registry(&self) -> &custodia_partners::Registry {
        &self.registry
    }

    /// This gateway's name among its partners.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key that checks this gateway's own signatures (its requests' and its evidences').
    pub fn own_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Signs an evidence of a transfer as this gateway ([`custodia_partners::evidence`]), with the key that signs
    /// its requests, which its partners pin.
    pub fn sign_evidence(
        &self,
        evidence: &Evidence,
    ) -> std::result::Result<SignedEvidence, custodia_partners::evidence::EvidenceError> {
        evidence.sign(&self.key)
    }
}

/// Transfers of this gateway, both ways.
pub struct Transfers {
    gateway: Gateway,
    partnership: Partnership,
    /// Staging files: `in/<id>.part`, the payload of a transfer being received (a sent one is read from the store).
    dir: PathBuf,
    /// The partner gateways, as requests reach them.
    client: Arc<dyn PartnerClient>,
    /// Buffers for the chunks sent (each read from the store into one).
    buffers: Arc<ChunkBuffers>,
    timing: TransferTiming,
    /// The transfers a driver task is working on, so that each has one.
    driving: Mutex<HashSet<String>>,
    /// Wakes the sender of what waits in the outbox for a partner.
    outbox: Arc<tokio::sync::Notify>,
    /// Each transfer arriving here since this process started: what was written to its staging file beyond what
    /// the catalog holds as synced.
    arriving: Mutex<std::collections::HashMap<String, Arrival>>,
    /// Wakes the chunks that arrived early each time a chunk's handling ends.
    chunk_handled: tokio::sync::Notify,
    /// For each partner, the places for this gateway's large requests to it ([`CHUNKS_IN_FLIGHT`], offers and
    /// chunks of all transfers to it together): as many as it takes from one partner at once.
    sending: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// Partners that take chunks only one after another (they refused one sent ahead as out of order).
    one_chunk_at_a_time: Mutex<HashSet<String>>,
    /// The duty of the transfers ([`custodia_catalog::Duty::TRANSFERS`]).
    duty: custodia_catalog::DutyHolder,
    /// This data directory's staging identity ([`staging_identity`]).
    staging_id: String,
    /// Requests sent to partners by this process.
    sent: SentToPartners,
    /// Evidences still kept without their proof after this gateway's last sweep (at most a sweep's worth counted);
    /// 0 while another gateway holds the duty.
    evidences_pending: AtomicU64,
}

/// A transfer arriving here: the bytes handed to its staging file (the next chunk starts there), the writes under
/// way (at most [`WRITES_IN_FLIGHT`], each at its own offset, so that chunks are written while the next is on its
/// way), the sync under way, and the payload's SHA-256, computed chunk after chunk in order beside the writes, when
/// this process has seen every byte from the first (after a restart, the payload is hashed again when the bundle is
/// checked).
struct Arrival {
    written: u64,
    writing: std::collections::VecDeque<tokio::task::JoinHandle<std::io::Result<()>>>,
    hashing: Option<tokio::task::JoinHandle<Option<custodia_core::Sha256Hasher>>>,
    /// The sync under way, and the bytes it covers.
    syncing: Option<(u64, tokio::task::JoinHandle<std::io::Result<()>>)>,
}

/// How many chunks of one arriving transfer are written at once.
const WRITES_IN_FLIGHT: usize = 2;

/// How many chunks of one transfer this gateway sends at once: each is read from the store, signed and sent while
/// the receiving gateway writes those before it, so that neither side waits on the other's round trip. As many as
/// a receiving gateway takes large requests from one partner at once (the server's
/// `partner_api::LARGE_BODIES_PER_PARTNER` is this).
pub const CHUNKS_IN_FLIGHT: usize = 4;
/// How far beyond the next chunk due a chunk arriving here may start (in chunks): such a chunk waits, its body held
/// (one of the partner requests' large bodies at once), until those before it are written, at most
/// [`CHUNK_WAIT`]; one further ahead, or still early then, is refused as out of order.
const CHUNKS_AHEAD: u64 = CHUNKS_IN_FLIGHT as u64 - 1;
const CHUNK_WAIT: Duration = Duration::from_secs(10);

/// Wakes the chunks waiting for their turn when it is dropped: a chunk's handling has ended, however it ended.
struct WakeWaiting<'a>(&'a tokio::sync::Notify);

impl Drop for WakeWaiting<'_> {
    fn drop(&mut self) {
        self.0.notify_waiters();
    }
}

impl std::fmt::Debug for Transfers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfers").field("timing", &self.timing).finish_non_exhaustive()
    }
}

/// A transfer as the console shows it: where it stands, and its evidences in ladder order.
#[derive(Debug, Clone, Serialize)]
pub struct TransferView {
    pub id: String,
    pub direction: String,
    pub partner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artefact: Option<String>,
    pub stage: String,
    pub size: i64,
    pub sha256: String,
    pub received: i64,
    pub created_at: String,
    pub evidences: Vec<EvidenceView>,
}

/// One evidence, with both gateways' copies (each proved on the log of the gateway that kept it).
#[derive(Debug, Clone, Serialize)]
pub struct EvidenceView {
    pub rung: i64,
    pub event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub own: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner: Option<serde_json::Value>,
    /// Kept when its record was sequenced, its proof still to come ([`TransferEvidenceRow::is_pending`]).
    pub pending: bool,
}

pub(crate) const OUT: &str = "out";
pub(crate) const IN: &str = "in";

/// Why a step of a sending driver did not go through: tried again later, until its timeout.
#[derive(Debug, thiserror::Error)]
enum Hitch {
    #[error(transparent)]
    Partner(#[from] PartnerError),
    #[error("what the partner sent does not check: {0}")]
    Unchecked(String),
    /// What the partner sent failed a check of its own: `what` was checked, `source` says how it failed.
    #[error("what the partner sent does not check: {what}")]
    Disproved { what: &'static str, source: crate::error::BoxError },
    #[error(transparent)]
    Here(#[from] GatewayError),
}

impl Transfers {
    /// The transfers of `gateway` with the partners `partnership` pins, reached through `client`; what arrives is
    /// staged in `dir`, and chunks sent are read into `buffers`.
    pub fn new(
        gateway: Gateway,
        partnership: Partnership,
        client: Arc<dyn PartnerClient>,
        buffers: Arc<ChunkBuffers>,
        dir: PathBuf,
        timing: TransferTiming,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir.join(IN))
            .map_err(|err| GatewayError::internal("making the transfer staging directory", err))?;
        let staging_id = staging_identity(&dir)
            .map_err(|err| GatewayError::internal("the staging identity of this gateway", err))?;
        Ok(Self {
            gateway,
            partnership,
            dir,
            client,
            buffers,
            timing,
            driving: Mutex::new(HashSet::new()),
            outbox: Arc::new(tokio::sync::Notify::new()),
            arriving: Mutex::new(std::collections::HashMap::new()),
            chunk_handled: tokio::sync::Notify::new(),
            sending: Mutex::default(),
            one_chunk_at_a_time: Mutex::default(),
            duty: custodia_catalog::DutyHolder::new(
                custodia_catalog::Duty::TRANSFERS,
                &crate::gateway::new_id("node"),
                "handles the transfers with partner gateways",
            ),
            staging_id,
            sent: SentToPartners::default(),
            evidences_pending: AtomicU64::new(0),
        })
    }

    /// Whether this gateway holds the duty of the transfers (as of its last look, and within its lease): the one
    /// gateway on a database that drives the transfers sent to partners and takes the partners' requests about
    /// transfers. A gateway on SQLite is alone, and holds it.
    pub fn on_duty(&self) -> bool {
        self.duty.holds()
    }

    /// What this process sent to partners.
    pub fn sent(&self) -> &SentToPartners {
        &self.sent
    }

    /// The evidences of transfers still kept without their proof after this gateway's last sweep that could list
    /// them (at most a sweep's worth, 100, counted; 0 where another gateway holds the duty). One that stays is a
    /// log that does not publish, or a record that does not commit to its evidence: a partner waits for it
    /// meanwhile.
    pub fn evidences_pending(&self) -> u64 {
        self.evidences_pending.load(Ordering::Relaxed)
    }

    /// Takes the duty of the transfers if no other gateway holds it, or renews it; whether this gateway holds it. A
    /// gateway that finds it gone forgets what was arriving here (its drivers stop at their next step).
    async fn hold_the_duty(&self) -> bool {
        let held = self.duty.keep(self.gateway.catalog()).await;
        if !held {
            self.evidences_pending.store(0, Ordering::Relaxed);
            // What was arriving here is the holder's to take now: nothing of it is counted here any more.
            self.arriving.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        }
        held
    }

    /// The refusal of a partner's request about a transfer on a gateway without the duty.
    fn off_duty() -> GatewayError {
        GatewayError::Unavailable { what: TRANSFERS_ELSEWHERE, source: Box::new(OffDuty) }
    }

    /// Starts a driver for every transfer under way not yet driven here (after a restart, or sent from another
    /// gateway on the database); only while this gateway holds the duty of the transfers.
    async fn drive_all(self: &Arc<Self>) -> Result<()> {
        for stage in ["sending", "delivered"] {
            for row in self.gateway.catalog().transfers_in_stage(OUT, stage).await? {
                if !self.on_duty() {
                    return Ok(());
                }
                if row.offer.is_none() {
                    // Being submitted on some gateway now, or cut off between its row and its submission: nothing
                    // was offered then, and nothing will be.
                    if self.age(&row.created_at) > UNSUBMITTED_ABANDONED_AFTER {
                        let now = self.gateway.now().to_string();
                        self.gateway.catalog().advance_transfer(&row.id, stage, "failed", 0, &now).await?;
                        tracing::warn!(transfer = %row.id, "a transfer interrupted before its submission is given up");
                    }
                    continue;
                }
                self.drive(row.id);
            }
        }
        Ok(())
    }

    /// Takes or renews the duty of the transfers, and while held, drives what is under way; on any gateway, removes
    /// the staging files of transfers that another gateway stages now or that ended.
    async fn keep_duty(self: &Arc<Self>) {
        if self.hold_the_duty().await
            && let Err(err) = self.drive_all().await
        {
            tracing::warn!(error = %Chain(&err), "could not look for transfers to drive");
        }
        if let Err(err) = self.sweep_staging_files().await {
            tracing::warn!(error = %Chain(&err), "could not sweep the staging files of transfers");
        }
    }

    /// Starts the drivers of the transfers under way if this gateway holds the duty of the transfers, and the loops
    /// that keep the duty (every `DUTY_CHECK`, 5 s), send the outbox and sweep the timeouts (by the duty's holder).
    pub async fn resume(self: &Arc<Self>) -> Result<()> {
        self.keep_duty().await;
        // A receipt cut off while being finished, whose artefact is already listed (restored from the log at start,
        // perhaps without its policy): the provider's restrictions are back on it before anything is served.
        for row in self.gateway.catalog().transfers_in_stage(IN, "receiving").await? {
            let Some(artefact) = row.artefact_id.as_deref() else { continue };
            let artefact = ArtefactId::new(artefact).map_err(|err| GatewayError::internal("resume", err))?;
            let policy = offer_of(&row)?.policy.map(serde_json::from_value::<UsePolicy>).transpose();
            let policy = policy.map_err(|err| GatewayError::internal("a received offer's policy", err))?;
            if let Some(policy) = policy
                && self.gateway.catalog().artefact(artefact.as_str()).await?.is_some()
            {
                let partner = self.partner(&row.partner)?.clone();
                let provider = self.partner_caller(&partner).await?;
                self.gateway.ensure_received_policy(&provider, &artefact, &policy).await?;
            }
        }
        // The background loops hold the transfers weakly, so that they end when the gateway does (its log is
        // closed only once every handle to it is gone).
        let (weak, wake, retry) = (Arc::downgrade(self), self.outbox.clone(), self.timing.retry);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(retry) => {}
                }
                let Some(transfers) = weak.upgrade() else { return };
                if !transfers.on_duty() {
                    continue;
                }
                transfers.send_outbox().await;
                if let Err(err) = transfers.sweep().await {
                    tracing::warn!(error = %Chain(&err), "the sweep of received transfers failed");
                }
            }
        });
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(DUTY_CHECK);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(transfers) = weak.upgrade() else { return };
                transfers.keep_duty().await;
            }
        });
        Ok(())
    }

    /// Removes this gateway's staging files of transfers that no longer arrive here: ended, staged by another
    /// gateway now (it took the duty over), or, after a day, named by no transfer at all.
    async fn sweep_staging_files(&self) -> Result<()> {
        let entries = match std::fs::read_dir(self.dir.join(IN)) {
            Ok(entries) => entries,
            Err(err) => return Err(GatewayError::internal("listing the staging files of transfers", err)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|name| name.strip_suffix(".part")) else { continue };
            // Judged under the transfer's turn, so that no chunk stages it here meanwhile.
            let _turn = self.turn(id).await?;
            let row = self.gateway.catalog().transfer_without_offer(id).await?;
            let stale = match &row {
                Some(row) => row.direction != IN || row.stage != "receiving" || !self.staged_here(row).await?,
                None => entry
                    .metadata()
                    .and_then(|metadata| metadata.modified())
                    .ok()
                    .and_then(|modified| modified.elapsed().ok())
                    .is_some_and(|age| age > ORPHAN_STAGING_AFTER),
            };
            if stale {
                self.arriving.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
                if std::fs::remove_file(entry.path()).is_ok() {
                    tracing::info!(transfer = %id, "removed the staging file of a transfer no longer arriving here");
                }
            }
        }
        Ok(())
    }

    /// Whether the payload of arriving transfer `row` is staged on this gateway's disk: the catalog says so, or (a
    /// transfer staged before stagings were noted) its staging file is here.
    async fn staged_here(&self, row: &TransferRow) -> Result<bool> {
        Ok(match self.gateway.catalog().transfer_staging(&row.id).await? {
            Some(staging) => staging.staged_by == self.staging_id,
            None => self.staging(&row.id).exists(),
        })
    }

    /// The bytes of arriving transfer `row` durable on this gateway's disk: what the catalog counted while it was
    /// staged here, and nothing when another gateway stages it (its disk is not this one).
    async fn durable_here(&self, row: &TransferRow) -> Result<u64> {
        Ok(match self.gateway.catalog().transfer_staging(&row.id).await? {
            Some(staging) if staging.staged_by == self.staging_id => staging.received.max(0) as u64,
            Some(_) => 0,
            None if self.staging(&row.id).exists() => row.received.max(0) as u64,
            None => 0,
        })
    }

    /// Makes sure arriving transfer `row`'s payload is staged on this gateway's disk; the bytes durable here. One
    /// staged by another gateway (the one that held the duty before) or nowhere yet is staged here anew, from its
    /// first byte: an empty staging file, and the catalog's count back to 0, so the sender sends it all again.
    async fn stage_here(&self, row: &TransferRow) -> Result<u64> {
        let id = &row.id;
        let seen = match self.gateway.catalog().transfer_staging(id).await? {
            Some(staging) if staging.staged_by == self.staging_id => return Ok(staging.received.max(0) as u64),
            Some(staging) => Some(staging.staged_by),
            // Staged before stagings were noted: here, with what the catalog counted, if its file is here.
            None if self.staging(id).exists() => {
                let received = row.received.max(0);
                if self.gateway.catalog().stage_transfer_here(id, &self.staging_id, None, received).await? {
                    return Ok(received as u64);
                }
                return Err(staged_elsewhere(id));
            }
            None => None,
        };
        self.arriving.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
        std::fs::File::create(self.staging(id)).map_err(|err| GatewayError::internal("staging a transfer", err))?;
        if !self.gateway.catalog().stage_transfer_here(id, &self.staging_id, seen.as_deref(), 0).await? {
            return Err(staged_elsewhere(id));
        }
        tracing::info!(transfer = %id, "a transfer staged on another gateway is staged here anew, from its first byte");
        Ok(0)
    }

    fn partner(&self, name: &str) -> Result<&Partner> {
        self.partnership
            .registry()
            .partner(name)
            .ok_or_else(|| GatewayError::NotFound(format!("{name:?} is not a partner of this gateway")))
    }

    /// Where the payload of received transfer `id` is staged until it is verified.
    fn staging(&self, id: &str) -> PathBuf {
        self.dir.join(IN).join(format!("{id}.part"))
    }

    /// The account that stands for `partner` here: the provider of what it sends, the recipient of what it is
    /// sent. It signs nothing in (it is made disabled) and is never a member.
    async fn partner_account(&self, partner: &Partner) -> Result<Account> {
        let username = format!("partner:{}", partner.name);
        if let Some(account) = self.gateway.catalog().account_named(&username).await? {
            return Ok(account);
        }
        let account = Account {
            id: crate::gateway::new_id("acct"),
            username: username.clone(),
            display_name: format!("Partner gateway {}", partner.name),
            password_hash: "!".into(),
            is_admin: false,
            jurisdiction: partner.jurisdiction.clone(),
        };
        let now = self.gateway.now().to_string();
        match self.gateway.catalog().create_account(&account, &now).await {
            Ok(()) => {
                self.gateway.catalog().disable_account(&account.id, &now).await?;
                Ok(account)
            }
            // Made meanwhile by another request.
            Err(custodia_catalog::CatalogError::Conflict { .. }) => self
                .gateway
                .catalog()
                .account_named(&username)
                .await?
                .ok_or_else(|| GatewayError::internal_message("the partner's account vanished")),
            Err(err) => Err(err.into()),
        }
    }

    /// `partner` as a caller here: its account, over [`Channel::Partner`].
    async fn partner_caller(&self, partner: &Partner) -> Result<Principal> {
        Ok(Principal::new(&self.partner_account(partner).await?, Channel::Partner))
    }

    /// The case what `partner` sends is received into, made on first use; administrators give members access.
    async fn inbox(&self, partner: &Partner) -> Result<CaseId> {
        let id = if partner.name.len() <= 58 {
            format!("inbox-{}", partner.name)
        } else {
            format!("inbox-{}", &Sha256::of(partner.name.as_bytes()).to_hex()[..32])
        };
        let case = CaseId::new(id).map_err(|err| GatewayError::internal("inbox", err))?;
        if self.gateway.catalog().case(case.as_str()).await?.is_none() {
            let made = custodia_catalog::Case {
                id: case.to_string(),
                title: format!("Received from partner gateway {}", partner.name),
                created_at: self.gateway.now().to_string(),
            };
            match self.gateway.catalog().create_case(&made).await {
                Ok(()) | Err(custodia_catalog::CatalogError::Conflict { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(case)
    }

    fn evidence(
        &self,
        row: &TransferRow,
        event: EvidenceEvent,
        previous: Option<&SignedEvidence>,
        reason: Option<NegativeReason>,
    ) -> Result<SignedEvidence> {
        let own = self.partnership.name().to_owned();
        let (sender, recipient) =
            if row.direction == OUT { (own.clone(), row.partner.clone()) } else { (row.partner.clone(), own.clone()) };
        let payload_digest =
            row.sha256.parse().map_err(|err| GatewayError::internal("a transfer's stored digest", err))?;
        let evidence = Evidence {
            kind: EVIDENCE_TYPE.into(),
            event,
            time: self.gateway.now().to_string(),
            issuer: own,
            sender,
            recipient,
            transfer: row.id.clone(),
            payload_digest,
            digest_algorithm: DIGEST_ALGORITHM.into(),
            previous: previous.map(SignedEvidence::sha256),
            reason,
        };
        self.partnership.sign_evidence(&evidence).map_err(|err| GatewayError::internal("evidence", err))
    }

    /// Puts `signed` on this gateway's log (a `transfer_evidence` record about `artefact` in `case`, made for
    /// `actor`), and keeps it with the transfer, with `partner_copy` when the partner's is at hand.
    #[allow(clippy::too_many_arguments)]
    async fn log_evidence(
        &self,
        row: &TransferRow,
        case: &CaseId,
        actor: custodia_core::ActorId,
        purpose: &str,
        artefact: Option<ArtefactId>,
        signed: &SignedEvidence,
        partner_copy: Option<&Logged>,
    ) -> Result<Logged> {
        let recorded = self.gateway.record_for(case, actor, purpose, evidence_record(artefact, signed)?).await?;
        self.keep_logged(row, signed, recorded, partner_copy).await
    }

    /// Keeps `signed`, recorded on this gateway's log (its index, entry and openings), with the transfer, with
    /// `partner_copy` when the partner's is at hand.
    ///
    /// An evidence kept pending when its record was sequenced ([`KeptEvidence`]) is completed so; from then on it
    /// is shown and sent as logged.
    async fn keep_logged(
        &self,
        row: &TransferRow,
        signed: &SignedEvidence,
        recorded: (u64, Vec<u8>, custodia_core::Openings),
        partner_copy: Option<&Logged>,
    ) -> Result<Logged> {
        let logged = self.with_proof(signed, recorded).await?;
        self.keep_own(&row.id, signed, &logged, partner_copy).await?;
        Ok(logged)
    }

    /// `signed` as logged here: with its record (index, entry, openings) and the record's inclusion proof, once a
    /// checkpoint covers it.
    async fn with_proof(
        &self,
        signed: &SignedEvidence,
        (index, entry, openings): (u64, Vec<u8>, custodia_core::Openings),
    ) -> Result<Logged> {
        let proof = self.gateway.proof(index).await?;
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(Logged {
            signed: signed.into(),
            entry: b64.encode(entry),
            openings: String::from_utf8_lossy(&openings.to_canonical()).into_owned(),
            proof: b64.encode(proof.to_bytes()),
        })
    }

    /// Keeps `logged` (the evidence `signed`) as this gateway's copy of its rung of transfer `transfer`, with
    /// `partner_copy` when the partner's is at hand.
    async fn keep_own(
        &self,
        transfer: &str,
        signed: &SignedEvidence,
        logged: &Logged,
        partner_copy: Option<&Logged>,
    ) -> Result<()> {
        let event = signed.evidence().event;
        let own = serde_json::to_string(logged).map_err(|err| GatewayError::internal("log evidence", err))?;
        let theirs = partner_copy
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| GatewayError::internal("log evidence", e))?;
        self.gateway
            .catalog()
            .keep_transfer_evidence(transfer, i64::from(event.rung()), event.name(), Some(&own), theirs.as_deref())
            .await?;
        Ok(())
    }

    /// Completes the evidences kept pending ([`KeptEvidence`]): those whose gateway stopped, or whose log's store
    /// failed, after the transaction that sequenced their record and moved their transfer on, and before it kept
    /// them with their proof. Each is completed once its record is integrated (one still waiting is tried again at
    /// the next sweep); from then on the partner is sent it like any other rung (it asks for the retrieval). They
    /// are taken in the order of their records: once one waits in vain for the log (its store or the lock's holder
    /// not answering), those after it would too, each for the log's whole patience, so the sweep leaves them to
    /// the next.
    async fn complete_pending(&self) -> Result<()> {
        let pending = self.gateway.catalog().pending_transfer_evidences().await?;
        let mut left = pending.len() as u64;
        for kept in pending {
            match self.complete_kept(&kept).await {
                Ok(()) => {
                    left -= 1;
                    tracing::info!(transfer = %kept.transfer_id, event = %kept.event, "a kept evidence is completed with its proof");
                }
                Err(err) => {
                    tracing::warn!(transfer = %kept.transfer_id, event = %kept.event, error = %Chain(&err), "a kept evidence is not completed yet; trying again at the next sweep");
                    if matches!(err, GatewayError::Unavailable { .. }) {
                        break;
                    }
                }
            }
        }
        self.evidences_pending.store(left, Ordering::Relaxed);
        Ok(())
    }

    /// Completes one pending evidence: its record, read back from the log and the catalog, must be the one that
    /// commits to it on this gateway's log (as a partner checks it), or it is left pending and reported.
    async fn complete_kept(&self, kept: &TransferEvidenceRow) -> Result<()> {
        let (Some(signed), Some(index)) = (kept.signed.as_deref(), kept.ledger_index) else { return Ok(()) };
        let own_key = self.partnership.own_key();
        let signed: WireEvidence =
            serde_json::from_str(signed).map_err(|err| GatewayError::internal("a kept evidence", err))?;
        let signed = signed.verify(&own_key).map_err(|err| GatewayError::internal("a kept evidence", err))?;
        let index = u64::try_from(index).map_err(|err| GatewayError::internal("a kept evidence's index", err))?;
        let recorded = self.gateway.recorded_at(index).await?;
        let logged = self.with_proof(&signed, recorded).await?;
        check_logged(&logged, &own_key, self.gateway.verifier())
            .map_err(|err| GatewayError::internal("a kept evidence and its record", err))?;
        self.keep_own(&kept.transfer_id, &signed, &logged, None).await
    }

    /// The evidences of `row` as this gateway logged them, by rung, each read back and its signature checked with
    /// its issuer's key (this gateway's, or the one pinned for the partner).
    async fn own_ladder(&self, row: &TransferRow) -> Result<Vec<(Logged, SignedEvidence)>> {
        self.ladder_of(row, self.gateway.catalog().transfer_evidences(&row.id).await?)
    }

    /// [`Self::own_ladder`] from `row`'s evidences as the catalog keeps them (a pending one is skipped).
    fn ladder_of(&self, row: &TransferRow, kept: Vec<TransferEvidenceRow>) -> Result<Vec<(Logged, SignedEvidence)>> {
        let partner_key = self.partner(&row.partner)?.request_key;
        let mut ladder = Vec::new();
        for kept in kept {
            let Some(own) = kept.own else { continue };
            let logged: Logged = serde_json::from_str(&own).map_err(|err| GatewayError::internal("own ladder", err))?;
            let issuer = unverified(&logged)?.issuer;
            let key = if issuer == self.partnership.name() { self.partnership.own_key() } else { partner_key };
            let signed = logged.signed.verify(&key).map_err(|err| GatewayError::internal("a kept evidence", err))?;
            ladder.push((logged, signed));
        }
        Ok(ladder)
    }

    async fn turn(&self, id: &str) -> Result<Turn> {
        self.gateway.turn(TurnKind::Transfer, &format!("transfer {id}")).await
    }

    // Sending.

    /// A member sends artefact `id` to partner `partner_name` for `purpose`: checked, recorded, bundled and
    /// submitted here; a driver task does the rest.
    pub async fn send(
        self: &Arc<Self>,
        caller: &Principal,
        id: &ArtefactId,
        partner_name: &str,
        purpose: &Label,
    ) -> Result<TransferView> {
        // Who may send is asked before which partner: a refusal is on the record whatever the partner named.
        self.gateway.authorize_artefact(caller, id, custodia_core::Action::TransferArtefact).await?;
        let partner = self.partner(partner_name)?.clone();
        let sending = self.gateway.catalog().count_transfers(OUT, "sending", caller.account_id()).await?;
        if sending >= SENDING_PER_ACCOUNT {
            return Err(GatewayError::TooMany(format!(
                "you have {sending} transfers under way; wait for one to be delivered or to fail"
            )));
        }
        let recipient = self.partner_account(&partner).await?;
        let source = self.gateway.transfer_bundle(caller, id, purpose, &recipient, &partner.jurisdiction).await?;
        let transfer = new_transfer_id();
        // The bundle's head is fixed now, in the offer (the log grows, and a bundle made again later would prove
        // its records against another checkpoint); its payload is the stored artefact, read as it is sent.
        let head = custodia_bundle::BundleWriter::new(&source)
            .and_then(|writer| writer.head())
            .map_err(|err| GatewayError::internal("a transfer's bundle", err))?;
        let (size, sha256) = (source.payload_size, source.payload_sha256);
        let artefact = self
            .gateway
            .catalog()
            .artefact(id.as_str())
            .await?
            .ok_or_else(|| GatewayError::NotFound(format!("artefact {id}")))?;
        let now = self.gateway.now().to_string();
        let mut row = TransferRow {
            id: transfer.clone(),
            direction: OUT.into(),
            partner: partner.name.clone(),
            artefact_id: Some(id.to_string()),
            case_id: Some(artefact.case_id.clone()),
            account_id: Some(caller.account_id().to_owned()),
            size: i64::try_from(size).map_err(|err| GatewayError::internal("send", err))?,
            sha256: sha256.to_hex(),
            chunk_size: CHUNK_BYTES as i64,
            received: 0,
            stage: "sending".into(),
            offer: None,
            created_at: now.clone(),
            updated_at: now,
        };
        let case = CaseId::new(artefact.case_id.clone()).map_err(|err| GatewayError::internal("send", err))?;
        let submission = self.evidence(&row, EvidenceEvent::SubmissionAcceptance, None, None)?;
        self.gateway.catalog().insert_transfer(&row).await?;
        let logged = self
            .log_evidence(&row, &case, caller.actor(), purpose.as_str(), Some(id.clone()), &submission, None)
            .await?;
        let offer = Offer {
            transfer: transfer.clone(),
            size,
            sha256,
            chain: base64::engine::general_purpose::STANDARD.encode(&head),
            chunk_size: CHUNK_BYTES,
            submission: logged,
            policy: artefact
                .policy
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| GatewayError::internal("send", e))?,
            purpose: purpose.to_string(),
        };
        let offer = serde_json::to_string(&offer).map_err(|err| GatewayError::internal("send", err))?;
        self.gateway.catalog().settle_transfer(&transfer, None, None, Some(&offer)).await?;
        row.offer = Some(offer);
        tracing::info!(transfer = %transfer, artefact = %id, partner = %partner.name, size, "transfer submitted");
        // Driven here if this gateway holds the duty of the transfers; else the holder finds it at its next look.
        self.drive(transfer);
        self.view(&row).await
    }

    /// Starts the driver of sent transfer `id` unless one runs, while this gateway holds the duty of the transfers.
    fn drive(self: &Arc<Self>, id: String) {
        if !self.on_duty() {
            return;
        }
        if !self.driving.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id.clone()) {
            return;
        }
        // Held weakly between steps, so that the driver ends with the gateway.
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(transfers) = weak.upgrade() else { return };
                let Some(wait) = transfers.drive_once(&id).await else {
                    transfers.driving.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
                    return;
                };
                drop(transfers);
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// One step of sent transfer `id`'s driver: how long to wait before the next, or `None` when it is done (or
    /// this gateway no longer holds the duty of the transfers: the holder drives it).
    async fn drive_once(&self, id: &str) -> Option<Duration> {
        if !self.on_duty() {
            tracing::info!(transfer = %id, "another gateway drives this transfer now");
            return None;
        }
        let row = match self.gateway.catalog().transfer(id).await {
            Ok(Some(row)) => row,
            Ok(None) => return None,
            Err(err) => {
                tracing::warn!(transfer = %id, error = %Chain(&err), "a transfer's driver could not read it");
                return Some(self.timing.retry);
            }
        };
        let (step, wait) = match row.stage.as_str() {
            "sending" => (self.push(&row).await, self.timing.retry),
            // The retrieval is asked for less often, and no longer once the partner had time to close it.
            "delivered" if self.age(&row.created_at) <= self.timing.delivery + self.timing.retrieval * 2 => {
                (self.ask(&row).await, self.timing.retry * ASKS_APART)
            }
            _ => return None,
        };
        match step {
            Ok(true) => return Some(Duration::ZERO),
            Ok(false) => {}
            Err(hitch) => {
                tracing::info!(transfer = %id, error = %Chain(&hitch), "a transfer's step did not go through; trying again");
            }
        }
        if let Err(err) = self.time_out(&row).await {
            tracing::warn!(transfer = %id, error = %Chain(&err), "could not close a timed-out transfer");
        }
        Some(wait)
    }

    /// Offers, sends what the receiving gateway lacks, and asks it to finish. True when the transfer moved on.
    async fn push(&self, row: &TransferRow) -> std::result::Result<bool, Hitch> {
        let partner = self.partner(&row.partner)?.clone();
        let offer =
            row.offer.clone().ok_or_else(|| GatewayError::internal_message("a sent transfer without its offer"))?;
        let places = self.sending_places(&partner.name);
        let offering = Arc::clone(&places).acquire_owned().await.map_err(|err| GatewayError::internal("push", err))?;
        self.sent.offers.fetch_add(1, Ordering::Relaxed);
        let progress = self.client.offer(&partner, offer).await?;
        drop(offering);
        if self.absorb(row, &partner, &progress).await? {
            return Ok(true);
        }
        let size = row.size as u64;
        let chunk_size = row.chunk_size as u64;
        if progress.written > size
            || progress.received > progress.written
            || progress.written % chunk_size != 0 && progress.written != size
        {
            return Err(Hitch::Unchecked(format!(
                "the partner says it holds {} bytes of this transfer and has written {}",
                progress.received, progress.written
            )));
        }
        let sha256: Sha256 = row.sha256.parse().map_err(|err| GatewayError::internal("a transfer's digest", err))?;
        // Up to CHUNKS_IN_FLIGHT chunks are read, signed and sent at once, each holding one of the places for this
        // partner (shared by every transfer to it, taken in the order of the chunks, so that a chunk never waits at
        // the receiver for one that has no place); their answers are taken in order. To a partner that refused a
        // chunk as out of order right after taking the one before it (a gateway that takes chunks only one after
        // another; this one lets a chunk sent ahead wait for its turn), one at a time.
        let window = match self
            .one_chunk_at_a_time
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&partner.name)
        {
            true => 1,
            false => CHUNKS_IN_FLIGHT,
        };
        let mut in_flight = futures::stream::FuturesOrdered::new();
        let (mut next, mut durable) = (progress.written, row.received as u64);
        let mut taken_before = false;
        loop {
            while next < size && in_flight.len() < window {
                // A gateway that lost the duty sends nothing more: the holder drives the transfer now.
                if !self.on_duty() {
                    return Err(Hitch::Here(Self::off_duty()));
                }
                let place = match Arc::clone(&places).try_acquire_owned() {
                    Ok(place) => place,
                    // Waited for only with nothing of this transfer's on its way, whose answers free places.
                    Err(_) if in_flight.is_empty() => {
                        Arc::clone(&places).acquire_owned().await.map_err(|err| GatewayError::internal("push", err))?
                    }
                    Err(_) => break,
                };
                let (offset, length) = (next, chunk_size.min(size - next));
                next += length;
                let partner = &partner;
                in_flight.push_back(async move {
                    let chunk = self.read_chunk(sha256, offset, length).await?;
                    self.sent.chunks.fetch_add(1, Ordering::Relaxed);
                    let sent = std::time::Instant::now();
                    let answer = self.client.chunk(partner, &row.id, offset, chunk).await.map_err(Hitch::from);
                    drop(place);
                    Ok::<_, Hitch>((offset + length, answer, sent.elapsed()))
                });
            }
            let Some(answered) = futures::StreamExt::next(&mut in_flight).await else { break };
            let (end, answer, took) = answered?;
            let progress = match answer {
                // Refused at once (this gateway would have let it wait for its turn, and refuses one only once it
                // has waited that long).
                Err(Hitch::Partner(refused @ PartnerError::Refused { refusal: Refusal::Conflict, .. }))
                    if window > 1 && taken_before && took < CHUNK_WAIT / 2 =>
                {
                    tracing::warn!(partner = %partner.name, "a partner refused a chunk as out of order; one chunk at a time to it from now on");
                    self.one_chunk_at_a_time
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(partner.name.clone());
                    return Err(Hitch::Partner(refused));
                }
                answer => answer?,
            };
            taken_before = true;
            // The receiver has written at least up to the end of this chunk (and no more than the payload), or it
            // did not take it as sent: anything else is a failed step (the chunks still on their way are dropped),
            // tried again after the retry interval from what the receiver holds, never a loop at full speed.
            if progress.written < end || progress.written > size || progress.received > progress.written {
                return Err(Hitch::Unchecked(format!(
                    "after the chunk ending at {end}, the partner says it has written {} bytes",
                    progress.written,
                )));
            }
            if progress.received > durable {
                durable = progress.received;
                let now = self.gateway.now().to_string();
                self.gateway
                    .catalog()
                    .advance_transfer(&row.id, "sending", "sending", durable as i64, &now)
                    .await
                    .map_err(GatewayError::from)?;
            }
        }
        self.sent.completions.fetch_add(1, Ordering::Relaxed);
        let progress = self.client.complete(&partner, &row.id).await?;
        self.absorb(row, &partner, &progress).await
    }

    /// Asks the receiving gateway for the retrieval. True when the transfer moved on.
    async fn ask(&self, row: &TransferRow) -> std::result::Result<bool, Hitch> {
        let partner = self.partner(&row.partner)?.clone();
        self.sent.progress.fetch_add(1, Ordering::Relaxed);
        let progress = self.client.progress(&partner, &row.id).await?;
        self.absorb(row, &partner, &progress).await
    }

    /// The places for large requests to partner `name`.
    fn sending_places(&self, name: &str) -> Arc<tokio::sync::Semaphore> {
        let mut sending = self.sending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            sending.entry(name.to_owned()).or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(CHUNKS_IN_FLIGHT))),
        )
    }

    /// `length` bytes of the stored payload `sha256` from `offset`, read into one of the chunk buffers: what one
    /// chunk sends.
    async fn read_chunk(&self, sha256: Sha256, offset: u64, length: u64) -> Result<Bytes> {
        let mut chunk = self.buffers.take(length as usize);
        let ended_early =
            move || GatewayError::internal_message(format!("the stored payload ended before byte {}", offset + length));
        // From a local store, read in place into the chunk's buffer, in one blocking step.
        if let Some(file) = self.gateway.artefacts().local_path(&sha256) {
            return tokio::task::spawn_blocking(move || {
                chunk.read_at(&file, offset, length as usize).map_err(|err| match err.kind() {
                    std::io::ErrorKind::UnexpectedEof => ended_early(),
                    _ => GatewayError::internal("reading a stored payload", err),
                })?;
                Ok(chunk.into_bytes())
            })
            .await
            .map_err(|err| GatewayError::internal("reading a chunk", err))?;
        }
        let mut stream = std::pin::pin!(self.gateway.artefacts().read(&sha256, Some(offset..offset + length)).await?);
        while let Some(piece) = futures::StreamExt::next(&mut stream).await {
            chunk.extend_from_slice(&piece?);
        }
        if chunk.len() as u64 != length {
            return Err(ended_early());
        }
        Ok(chunk.into_bytes())
    }

    /// Keeps the evidences the receiving gateway sent (checked, and logged here too), and moves the transfer's
    /// stage on from the last. True when the stage changed.
    async fn absorb(
        &self,
        row: &TransferRow,
        partner: &Partner,
        progress: &Progress,
    ) -> std::result::Result<bool, Hitch> {
        if progress.transfer != row.id {
            return Err(Hitch::Unchecked("the progress of another transfer".into()));
        }
        let log: LogVerifier =
            partner.log_vkey.parse().map_err(|err| GatewayError::internal("the partner's pinned log key", err))?;
        let own_ladder = self.own_ladder(row).await?;
        let mut ladder: Vec<SignedEvidence> = Vec::new();
        let mut checked = Vec::new();
        for logged in &progress.evidences {
            let issuer = unverified(logged)?.issuer;
            let key = if issuer == self.partnership.name() { self.partnership.own_key() } else { partner.request_key };
            let proven = check_logged(logged, &key, &log)
                .map_err(|err| Hitch::Disproved { what: "an evidence and its proof in the log", source: err.into() })?;
            ladder.push(proven.evidence.clone());
            checked.push((logged, proven.evidence));
        }
        check_ladder(&ladder)
            .map_err(|err| Hitch::Disproved { what: "the ladder of evidences", source: err.into() })?;
        let own_first = own_ladder.first().map(|(_, signed)| signed.sha256());
        if ladder.first().map(SignedEvidence::sha256) != own_first {
            return Err(Hitch::Unchecked("the ladder does not start with this gateway's submission".into()));
        }
        let same = |signed: &SignedEvidence| {
            let evidence = signed.evidence();
            evidence.transfer == row.id
                && evidence.sender == self.partnership.name()
                && evidence.recipient == partner.name
                && evidence.payload_digest.to_hex() == row.sha256
        };
        if !ladder.iter().all(same) {
            return Err(Hitch::Unchecked("an evidence of another transfer, payload or pair of gateways".into()));
        }
        let (case, artefact) = about(row)?;
        let actor = self.partner_caller(partner).await?.actor();
        let purpose = offer_of(row)?.purpose;
        for (index, (logged, signed)) in checked.into_iter().enumerate() {
            match own_ladder.get(index) {
                Some((_, own)) if own.sha256() == signed.sha256() => {
                    let rung = signed.evidence().event;
                    let theirs = serde_json::to_string(logged).map_err(|e| GatewayError::internal("absorb", e))?;
                    self.gateway
                        .catalog()
                        .keep_transfer_evidence(&row.id, i64::from(rung.rung()), rung.name(), None, Some(&theirs))
                        .await
                        .map_err(GatewayError::from)?;
                }
                Some(_) => return Err(Hitch::Unchecked(format!("rung {} differs from the one kept here", index + 1))),
                None => {
                    self.log_evidence(row, &case, actor.clone(), &purpose, artefact.clone(), &signed, Some(logged))
                        .await?;
                }
            }
        }
        let stage = match ladder.last().map(|signed| signed.evidence().event) {
            Some(EvidenceEvent::Delivery) => "delivered",
            Some(EvidenceEvent::Retrieval) => "retrieved",
            Some(event) if !event.is_positive() => "failed",
            _ => return Ok(false),
        };
        if stage == row.stage {
            return Ok(false);
        }
        let moved = self
            .gateway
            .catalog()
            .advance_transfer(
                &row.id,
                &row.stage,
                stage,
                progress.received.min(row.size as u64) as i64,
                &self.gateway.now().to_string(),
            )
            .await
            .map_err(GatewayError::from)?;
        tracing::info!(transfer = %row.id, stage, "transfer moved on");
        Ok(moved)
    }

    /// Closes a sent transfer whose receiving gateway stayed silent past a timeout: `RelayFailure` without a
    /// `RelayAcceptance` by the relay timeout, `NonDelivery` without a `Delivery` by the delivery timeout, each
    /// issued here (e-CODEX's connector does the same).
    async fn time_out(&self, row: &TransferRow) -> Result<()> {
        let _turn = self.turn(&row.id).await?;
        let ladder = self.own_ladder(row).await?;
        let age = self.age(&row.created_at);
        let event = match ladder.len() {
            1 if age > self.timing.relay => EvidenceEvent::RelayFailure,
            2 if row.stage == "sending" && age > self.timing.delivery => EvidenceEvent::NonDelivery,
            _ => return Ok(()),
        };
        let previous = ladder.last().map(|(_, signed)| signed);
        let signed = self.evidence(row, event, previous, Some(NegativeReason::TimedOut))?;
        let (case, artefact) = about(row)?;
        let actor = self.partner_caller(&self.partner(&row.partner)?.clone()).await?.actor();
        let purpose = offer_of(row)?.purpose;
        self.log_evidence(row, &case, actor, &purpose, artefact, &signed, None).await?;
        self.gateway
            .catalog()
            .advance_transfer(&row.id, &row.stage, "failed", row.received, &self.gateway.now().to_string())
            .await?;
        tracing::warn!(transfer = %row.id, event = event.name(), "the partner stayed silent; the transfer timed out");
        Ok(())
    }

    fn age(&self, since: &str) -> Duration {
        let since: jiff::Timestamp = since.parse().unwrap_or_else(|_| self.gateway.now());
        let age = self.gateway.now().duration_since(since);
        Duration::try_from(age).unwrap_or_default()
    }

    // Receiving.

    /// A partner's offer: checked, and the transfer opened here (idempotent).
    pub async fn offered(&self, partner: &Partner, offer: Offer) -> Result<Progress> {
        let _turn = self.turn(&offer.transfer).await?;
        if !self.on_duty() {
            return Err(Self::off_duty());
        }
        if let Some(row) = self.gateway.catalog().transfer(&offer.transfer).await? {
            // The same offer again (a sender that did not hear the answer): the same terms, chain and all.
            let same =
                row.direction == IN && row.partner == partner.name && offer_of(&row).ok().as_ref() == Some(&offer);
            if !same {
                return Err(GatewayError::Conflict(format!("transfer {} is another transfer here", offer.transfer)));
            }
            return self.progress(&row).await;
        }
        offer.check(self.gateway.max_upload_bytes()).map_err(|err| bad_input("offer", err))?;
        // The chain is read now, so that one no bundle could hold is refused before anything is staged; it is
        // verified with the payload at the end.
        let chain = offer.chain_bytes().map_err(|err| bad_input("chain", err))?;
        let chain = custodia_bundle::ProviderChain::from_head(&chain)
            .map_err(|err| bad_input("chain", custodia_bundle::printable(&err.to_string())))?;
        if chain.payload_size != offer.size {
            return Err(bad_input(
                "chain",
                format!("its payload's header gives {} bytes, the offer {}", chain.payload_size, offer.size),
            ));
        }
        // A partner's budgets: transfers arriving at once, the custody records an offer makes (its submission and
        // the relay), and room on the disk for the whole bundle.
        let arriving = self.gateway.catalog().count_transfers(IN, "receiving", &partner.name).await?;
        if arriving >= RECEIVING_PER_PARTNER {
            return Err(GatewayError::TooMany(format!(
                "{arriving} transfers from {} are arriving; finish one first",
                partner.name
            )));
        }
        // Room for this bundle beside what the transfers still arriving were promised.
        let promised = u64::try_from(self.gateway.catalog().bytes_still_arriving().await?).unwrap_or(0);
        let free = free_bytes(&self.dir.join(IN)).map_err(|err| GatewayError::internal("disk space", err))?;
        if free < offer.size.saturating_add(promised).saturating_add(STAGING_RESERVE) {
            return Err(GatewayError::QuotaExceeded(format!(
                "this gateway has not the room for a bundle of {} bytes now",
                offer.size
            )));
        }
        let log: LogVerifier =
            partner.log_vkey.parse().map_err(|err| GatewayError::internal("a partner's pinned log key", err))?;
        let submission = check_logged(&offer.submission, &partner.request_key, &log)
            .map_err(|err| bad_input("submission", err))?
            .evidence;
        let evidence = submission.evidence();
        let fits = evidence.event == EvidenceEvent::SubmissionAcceptance
            && evidence.issuer == partner.name
            && evidence.sender == partner.name
            && evidence.recipient == self.partnership.name()
            && evidence.transfer == offer.transfer
            && evidence.payload_digest == offer.sha256;
        if !fits {
            return Err(bad_input(
                "submission",
                "it is not the partner's SubmissionAcceptance of this transfer to this gateway",
            ));
        }
        if let Some(policy) = &offer.policy {
            serde_json::from_value::<UsePolicy>(policy.clone()).map_err(|err| bad_input("policy", err))?;
        }
        let purpose = Label::new(offer.purpose.clone()).map_err(|err| bad_input("purpose", err))?;
        let provider = self.partner_caller(partner).await?;
        self.gateway.take_recorded_steps(&provider, 2).await?;
        let case = self.inbox(partner).await?;
        let now = self.gateway.now().to_string();
        let row = TransferRow {
            id: offer.transfer.clone(),
            direction: IN.into(),
            partner: partner.name.clone(),
            artefact_id: None,
            case_id: Some(case.to_string()),
            account_id: Some(provider.account_id().to_owned()),
            size: offer.size as i64,
            sha256: offer.sha256.to_hex(),
            chunk_size: offer.chunk_size as i64,
            received: 0,
            stage: "receiving".into(),
            offer: Some(serde_json::to_string(&offer).map_err(|err| GatewayError::internal("offered", err))?),
            created_at: now.clone(),
            updated_at: now,
        };
        std::fs::File::create(self.staging(&row.id))
            .map_err(|err| GatewayError::internal("staging a transfer", err))?;
        self.gateway.catalog().insert_transfer(&row).await?;
        self.gateway.catalog().stage_transfer_here(&row.id, &self.staging_id, None, 0).await?;
        let actor = provider.actor();
        self.log_evidence(&row, &case, actor.clone(), purpose.as_str(), None, &submission, Some(&offer.submission))
            .await?;
        let relay = self.evidence(&row, EvidenceEvent::RelayAcceptance, Some(&submission), None)?;
        self.log_evidence(&row, &case, actor, purpose.as_str(), None, &relay, None).await?;
        tracing::info!(transfer = %row.id, partner = %partner.name, size = row.size, "transfer offered and accepted for relay");
        self.progress(&row).await
    }

    /// A received transfer of `partner`'s.
    async fn received_row(&self, partner: &Partner, id: &str) -> Result<TransferRow> {
        received_of(partner, id, self.gateway.catalog().transfer(id).await?)
    }

    /// A received transfer of `partner`'s, without its offer (chunk after chunk, its chain is not read).
    async fn received_brief(&self, partner: &Partner, id: &str) -> Result<TransferRow> {
        received_of(partner, id, self.gateway.catalog().transfer_without_offer(id).await?)
    }

    /// A chunk of a transfer at `offset`, the next after those written: handed to the staging file's writer
    /// (written and hashed while the next chunk is on its way), and every [`SYNC_EVERY`] bytes and at the end,
    /// written, synced and only then counted as received (idempotent).
    pub async fn chunk(self: &Arc<Self>, partner: &Partner, id: &str, offset: u64, bytes: Bytes) -> Result<Progress> {
        self.chunk_due(partner, id, offset, bytes.len() as u64).await?;
        // Once its turn has come, a chunk is handled to the end in a task of its own: a request dropped halfway
        // (its sender gone) left the last chunk written but never synced nor counted, so the transfer could never
        // be completed, and a write popped but never waited for.
        let (this, partner, id) = (Arc::clone(self), partner.clone(), id.to_owned());
        tokio::spawn(async move { this.take_chunk(&partner, &id, offset, bytes).await })
            .await
            .map_err(|err| GatewayError::internal("handling a chunk", err))?
    }

    /// [`Self::chunk`], once its wait is over.
    async fn take_chunk(&self, partner: &Partner, id: &str, offset: u64, bytes: Bytes) -> Result<Progress> {
        // Declared before the turn, so dropped after it: the chunks woken find the turn free.
        let _wake = WakeWaiting(&self.chunk_handled);
        let _turn = self.turn(id).await?;
        let row = self.received_brief(partner, id).await?;
        if !self.on_duty() {
            return Err(Self::off_duty());
        }
        if row.stage != "receiving" {
            return self.progress(&row).await;
        }
        let (durable, size) = (self.stage_here(&row).await?, row.size as u64);
        let written = self.written_of(&row, durable);
        if row.stage != "receiving" || (offset < written && offset + bytes.len() as u64 <= written) {
            return self.progress(&row).await;
        }
        if offset != written {
            return Err(GatewayError::Conflict(format!("the next chunk of transfer {id} starts at byte {written}")));
        }
        let expected = chunk_shape(&row, offset, bytes.len() as u64)?;
        // At most WRITES_IN_FLIGHT writes at once: the oldest ends first.
        self.written_down(id, WRITES_IN_FLIGHT - 1).await?;
        let end = written + expected;
        let path = self.staging(id);
        let chunk = bytes.clone();
        let writing = tokio::task::spawn_blocking(move || crate::chunk_buffers::write_at(&path, offset, &chunk));
        {
            let mut arriving = self.arriving.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let arrival = arriving.entry(id.to_owned()).or_insert_with(|| Arrival {
                written: durable,
                writing: std::collections::VecDeque::new(),
                syncing: None,
                // Hashed here only from the first byte on.
                hashing: (durable == 0).then(|| tokio::spawn(async { Some(custodia_core::Sha256Hasher::default()) })),
            });
            arrival.written = end;
            arrival.writing.push_back(writing);
            // Each chunk is hashed after the one before it, beside its write.
            arrival.hashing = arrival.hashing.take().map(|before| {
                tokio::spawn(async move {
                    let mut hasher = before.await.ok()??;
                    tokio::task::spawn_blocking(move || {
                        hasher.update(&bytes);
                        hasher
                    })
                    .await
                    .ok()
                })
            });
        }
        // A sync that ended is counted; one is started every SYNC_EVERY bytes (the bytes it covers are counted
        // when it ends, the sender going on meanwhile); at the end, everything is synced and counted before the
        // answer.
        let counted = self.count_synced(id, false).await?.unwrap_or(durable);
        if end == size {
            self.written_down(id, 0).await?;
            self.count_synced(id, true).await?;
            self.start_sync(id, end);
            self.count_synced(id, true).await?;
            tracing::info!(transfer = %id, size, "every chunk of a transfer is held, synced");
        } else if self.syncing_of(id).is_none() && end - counted >= SYNC_EVERY {
            self.written_down(id, 0).await?;
            self.start_sync(id, end);
        }
        let row = self.received_brief(partner, id).await?;
        self.progress(&row).await
    }

    /// Waits while a chunk of transfer `id` at `offset` arrived before the ones due before it, at most
    /// [`CHUNK_WAIT`] and only if it starts at most [`CHUNKS_AHEAD`] chunks beyond the next due. Whatever then
    /// stands is judged under the transfer's turn (a chunk still early is refused there).
    async fn chunk_due(&self, partner: &Partner, id: &str, offset: u64, length: u64) -> Result<()> {
        let deadline = tokio::time::Instant::now() + CHUNK_WAIT;
        loop {
            let handled = self.chunk_handled.notified();
            tokio::pin!(handled);
            handled.as_mut().enable();
            let row = self.received_brief(partner, id).await?;
            let written = match row.stage.as_str() {
                "receiving" => self.written_of(&row, self.durable_here(&row).await?),
                _ => 0,
            };
            // One that could never be taken is refused now, not after holding its place while it waits.
            if row.stage == "receiving" && offset > written {
                chunk_shape(&row, offset, length)?;
            }
            let ahead = (offset.saturating_sub(written)).div_ceil(row.chunk_size.max(1) as u64);
            if row.stage != "receiving" || offset <= written || ahead > CHUNKS_AHEAD {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, handled).await.is_err() {
                return Ok(());
            }
        }
    }

    /// Starts syncing arriving transfer `id`'s staging file, whose writes up to `end` have ended.
    fn start_sync(&self, id: &str, end: u64) {
        let path = self.staging(id);
        let sync = tokio::task::spawn_blocking(move || std::fs::OpenOptions::new().write(true).open(path)?.sync_data());
        if let Some(arrival) = self.arriving.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_mut(id) {
            arrival.syncing = Some((end, sync));
        }
    }

    /// Where the sync under way of arriving transfer `id` reaches, if one is.
    fn syncing_of(&self, id: &str) -> Option<u64> {
        let arriving = self.arriving.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        arriving.get(id).and_then(|arrival| arrival.syncing.as_ref().map(|(end, _)| *end))
    }

    /// Counts the bytes the sync of arriving transfer `id` covered as received, once it has ended (waiting for it if
    /// `wait`): where the durable bytes now end, if a sync was counted. If it failed, what was written since the last
    /// sync is forgotten, and the failure returned.
    async fn count_synced(&self, id: &str, wait: bool) -> Result<Option<u64>> {
        let syncing = {
            let mut arriving = self.arriving.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let arrival = arriving.get_mut(id);
            match arrival.and_then(|arrival| arrival.syncing.take_if(|(_, sync)| wait || sync.is_finished())) {
                Some(syncing) => syncing,
                None => return Ok(None),
            }
        };
        let (end, sync) = syncing;
        if let Err(err) = sync.await.map_err(std::io::Error::other).and_then(|synced| synced) {
            self.arriving.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
            return Err(GatewayError::internal("syncing a transfer's chunks", err));
        }
        let now = self.gateway.now().to_string();
        if !self.gateway.catalog().count_staged(id, &self.staging_id, end as i64, &now).await? {
            // Another gateway took the transfer over (or it ended): nothing more of it counts here.
            self.arriving.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
            return Err(staged_elsewhere(id));
        }
        Ok(Some(end))
    }

    /// Waits for the writes under way of arriving transfer `id` until at most `left` are. If one failed, what was
    /// written since the last sync is forgotten (the sender sends it again from what is durable), and the failure
    /// returned.
    async fn written_down(&self, id: &str, left: usize) -> Result<()> {
        loop {
            let oldest = {
                let mut arriving = self.arriving.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let Some(arrival) = arriving.get_mut(id) else { return Ok(()) };
                if arrival.writing.len() <= left {
                    return Ok(());
                }
                arrival.writing.pop_front()
            };
            let Some(oldest) = oldest else { return Ok(()) };
            if let Err(err) = oldest.await.map_err(std::io::Error::other).and_then(|written| written) {
                self.arriving.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id);
                return Err(GatewayError::internal("writing a transfer's chunk", err));
            }
        }
    }

    /// The bytes of arriving transfer `row` handed to its staging file here: at least those `durable` here.
    fn written_of(&self, row: &TransferRow, durable: u64) -> u64 {
        match row.stage.as_str() {
            "receiving" => self
                .arriving
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&row.id)
                .map_or(durable, |arrival| durable.max(arrival.written)),
            _ => durable,
        }
    }

    /// The SHA-256 of arriving transfer `id`'s whole payload, if this process hashed every byte of it as it was
    /// written; the arrival is forgotten.
    async fn payload_hashed(&self, id: &str) -> Option<Sha256> {
        let arrival = self.arriving.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(id)?;
        Some(arrival.hashing?.await.ok()??.finish())
    }

    /// The partner asks to finish: the whole bundle is verified with its pinned keys, then taken into custody
    /// (`Delivery`), or refused with nothing stored (`NonDelivery`). Idempotent.
    pub async fn complete(self: &Arc<Self>, partner: &Partner, id: &str) -> Result<Progress> {
        // To the end in a task of its own, like a chunk: a request dropped halfway leaves nothing half done.
        let (this, partner, id) = (Arc::clone(self), partner.clone(), id.to_owned());
        tokio::spawn(async move { this.finish(&partner, &id).await })
            .await
            .map_err(|err| GatewayError::internal("finishing a transfer", err))?
    }

    /// [`Self::complete`], in its own task.
    async fn finish(&self, partner: &Partner, id: &str) -> Result<Progress> {
        let _turn = self.turn(id).await?;
        let row = self.received_row(partner, id).await?;
        if !self.on_duty() {
            return Err(Self::off_duty());
        }
        if row.stage != "receiving" {
            return self.progress(&row).await;
        }
        // Only what this gateway holds on its own disk: a gateway that took the transfer over holds none of what the
        // one before it staged, whatever was counted there.
        let durable = self.durable_here(&row).await?;
        if durable != row.size as u64 {
            return Err(GatewayError::Conflict(format!("transfer {id} holds {durable} of {} bytes here", row.size)));
        }
        let offer = offer_of(&row)?;
        let (case, _) = about(&row)?;
        let provider = self.partner_caller(partner).await?;
        let actor = provider.actor();
        let ladder = self.own_ladder(&row).await?;
        let relay = ladder
            .last()
            .map(|(_, signed)| signed.clone())
            .ok_or_else(|| GatewayError::internal_message("a received transfer without its relay"))?;
        let path = self.staging(id);
        let log: LogVerifier =
            partner.log_vkey.parse().map_err(|err| GatewayError::internal("a partner's pinned log key", err))?;
        let checking = std::time::Instant::now();
        self.written_down(id, 0).await?;
        let hashed = self.payload_hashed(id).await;
        let checked = {
            let path = path.clone();
            let chain = offer.chain_bytes().map_err(|err| bad_input("chain", err))?;
            let payload = (offer.sha256, offer.size);
            tokio::task::spawn_blocking(move || check_bundle(&chain, &path, hashed, payload, &log))
                .await
                .map_err(|err| GatewayError::internal("finish", err))?
        };
        let seconds = checking.elapsed().as_secs_f64();
        tracing::info!(transfer = %id, seconds, verified = checked.is_ok(), "a transferred bundle was checked");
        let outcome = match checked {
            // This gateway's failure, not the partner's: as one to take a verified bundle in.
            Err(BundleCheckError::Staged(err)) => {
                tracing::warn!(transfer = %id, error = %Chain(&err), "a transferred bundle's staged payload could not be read here; nothing is stored");
                Err(NegativeReason::StorageFailed)
            }
            Err(why) => {
                tracing::warn!(transfer = %id, partner = %partner.name, why = %Chain(&why), "a transferred bundle did not verify; nothing is stored");
                Err(NegativeReason::PayloadInvalid)
            }
            Ok(bundle) => match self.take_in(&provider, &case, &row, &offer, &bundle, &path).await {
                Ok(artefact) => Ok(artefact),
                // Staged on another gateway now, which takes it in: nothing is decided here.
                Err(err @ GatewayError::Unavailable { what: TRANSFERS_ELSEWHERE, .. }) => return Err(err),
                Err(err) => {
                    tracing::warn!(transfer = %id, error = %Chain(&err), "a verified transfer could not be stored");
                    Err(NegativeReason::StorageFailed)
                }
            },
        };
        let (event, reason, artefact, stage) = match &outcome {
            Ok(artefact) => (EvidenceEvent::Delivery, None, Some(artefact.clone()), "delivered"),
            Err(reason) => (EvidenceEvent::NonDelivery, Some(*reason), None, "failed"),
        };
        let signed = self.evidence(&row, event, Some(&relay), reason)?;
        if let Some(artefact) = &artefact {
            self.gateway.catalog().settle_transfer(id, Some(artefact.as_str()), None, None).await?;
        }
        self.log_evidence(&row, &case, actor, &offer.purpose, artefact, &signed, None).await?;
        self.gateway
            .catalog()
            .advance_transfer(id, "receiving", stage, row.received, &self.gateway.now().to_string())
            .await?;
        let _ = std::fs::remove_file(&path);
        tracing::info!(transfer = %id, partner = %partner.name, stage, "transfer completed");
        let row = self.received_row(partner, id).await?;
        self.progress(&row).await
    }

    /// Registers the payload of a verified bundle, with the provider's policy and a `received_from` record.
    async fn take_in(
        &self,
        provider: &Principal,
        case: &CaseId,
        row: &TransferRow,
        offer: &Offer,
        bundle: &CheckedBundle,
        path: &std::path::Path,
    ) -> Result<ArtefactId> {
        let policy = offer
            .policy
            .clone()
            .map(serde_json::from_value::<UsePolicy>)
            .transpose()
            .map_err(|err| bad_input("policy", err))?;
        let purpose = Label::new(offer.purpose.clone()).map_err(|err| bad_input("purpose", err))?;
        let mut provenance = BTreeMap::new();
        provenance.insert("provider_artefact", bundle.artefact.clone());
        provenance.insert("provider_checkpoint", bundle.checkpoint.clone());
        provenance.insert(custodia_bundle::PROVIDER_MANIFEST_FIELD, bundle.manifest_sha256.to_hex());
        provenance.insert("transfer", row.id.clone());
        let provenance = custodia_core::to_canonical_vec(&provenance)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .map_err(|err| GatewayError::internal("take in", err))?;
        let partner = row.partner.clone();
        let received_from = move |artefact, committer: &mut crate::gateway::Committer| CustodyEvent::ReceivedFrom {
            artefact,
            provider: committer.commit("provider", partner),
            provenance: committer.commit("provenance", provenance),
        };
        let request = UploadRequest {
            purpose,
            media_type: Label::new(bundle.media_type.clone()).map_err(|err| bad_input("media_type", err))?,
            original_name: None,
            expected_sha256: Some(offer.sha256),
            policy,
        };
        // The artefact's id is noted on the transfer before it is registered, so that a receipt finished again
        // after a crash finds what it registered and registers nothing twice: an id noted but not listed never
        // reached the log (a registration lists its artefact in the transaction that sequences it), and is given
        // up for a new one.
        let noted = row
            .artefact_id
            .as_deref()
            .map(ArtefactId::new)
            .transpose()
            .map_err(|e| GatewayError::internal("take in", e))?;
        let artefact = match noted {
            Some(noted) if self.gateway.catalog().artefact(noted.as_str()).await?.is_some() => {
                if let Some(policy) = &request.policy {
                    self.gateway.ensure_received_policy(provider, &noted, policy).await?;
                }
                noted
            }
            _ => {
                let artefact = crate::gateway::new_artefact_id();
                // Noted only while the payload verified is the one staged for the transfer: a gateway that took the
                // transfer over meanwhile stages it anew, and takes in its own.
                if !self.gateway.catalog().note_received_artefact(&row.id, &self.staging_id, artefact.as_str()).await? {
                    return Err(staged_elsewhere(&row.id));
                }
                let staged = (path, offer.sha256, offer.size);
                self.gateway.receive(provider, case, request.clone(), staged, artefact.clone()).await?;
                artefact
            }
        };
        self.gateway.record_received_from(provider, case, &request.purpose, &artefact, received_from).await?;
        Ok(artefact)
    }

    /// A member retrieved artefact `id` (downloaded it): the first time, for an artefact received from a partner,
    /// `Retrieval` is issued and logged.
    pub async fn retrieved(&self, caller: &Principal, id: &ArtefactId) -> Result<()> {
        for row in self.gateway.catalog().transfers_of_artefact(id.as_str()).await? {
            // One still being delivered is waited for (its turn is held until it is): the download is then its
            // retrieval.
            if row.direction != IN || !matches!(row.stage.as_str(), "receiving" | "delivered") {
                continue;
            }
            // The turn makes only a download on this gateway wait for the delivery; which download, on whichever
            // gateway, or the sweep's `NonRetrieval`, closes the transfer is the catalog's to say (`close_retrieval`).
            let _turn = self.turn(&row.id).await?;
            let Some(row) = self.gateway.catalog().transfer(&row.id).await?.filter(|row| row.stage == "delivered")
            else {
                continue;
            };
            self.close_retrieval(&row, EvidenceEvent::Retrieval, None, caller.actor()).await?;
        }
        Ok(())
    }

    /// Issues and logs `event` (`Retrieval` or `NonRetrieval`) for delivered transfer `row`, and moves it on, in
    /// the transaction that sequences the evidence's record: so, of the requests racing to close one transfer (two
    /// downloads through two gateways, a download and the sweep on the duty holder), one logs its evidence, and the
    /// others, finding it no longer delivered, log nothing. Whether this one closed it, and with its proof.
    async fn close_retrieval(
        &self,
        row: &TransferRow,
        event: EvidenceEvent,
        reason: Option<NegativeReason>,
        actor: custodia_core::ActorId,
    ) -> Result<Closing> {
        let ladder = self.own_ladder(row).await?;
        let delivery = ladder
            .last()
            .map(|(_, signed)| signed.clone())
            .ok_or_else(|| GatewayError::internal_message("a delivered transfer without its delivery"))?;
        let signed = self.evidence(row, event, Some(&delivery), reason)?;
        let (case, artefact) = about(row)?;
        let purpose = offer_of(row)?.purpose;
        // The signed evidence cannot be made again the same (it is dated), and the record commits to its digest
        // only: it is kept in the transaction that sequences the record and moves the transfer, pending its proof.
        let wire = serde_json::to_string(&WireEvidence::from(&signed))
            .map_err(|err| GatewayError::internal("a closing evidence", err))?;
        let moves = TransferMove {
            transfer_id: row.id.clone(),
            from: "delivered".into(),
            to: if event.is_positive() { "retrieved" } else { "failed" }.into(),
            at: self.gateway.now().to_string(),
            evidence: KeptEvidence { rung: i64::from(event.rung()), event: event.name().into(), signed: wire },
        };
        let record = evidence_record(artefact, &signed)?;
        let Some(moved) = self.gateway.record_moving_transfer(&case, actor, &purpose, moves, record).await? else {
            tracing::debug!(transfer = %row.id, event = event.name(), "the transfer's retrieval was closed meanwhile");
            return Ok(Closing::ClosedMeanwhile);
        };
        // From here on the retrieval is closed, whatever happens: a proof not had now (the log's store failing
        // past its patience) is added by the sweep of the transfers (`complete_pending`), and an error would only
        // refuse the member a download that is on the record already. A record the log did not publish is not
        // waited for a second time.
        if !moved.integrated {
            tracing::warn!(transfer = %row.id, event = event.name(), "transfer retrieval closed; its evidence is kept, and gets its proof at a later sweep");
            return Ok(Closing::Pending);
        }
        let kept = async { self.keep_logged(row, &signed, self.gateway.recorded_at(moved.index).await?, None).await };
        match kept.await {
            Ok(_) => {
                tracing::info!(transfer = %row.id, event = event.name(), "transfer retrieval closed");
                Ok(Closing::Proven)
            }
            Err(err) => {
                tracing::warn!(
                    transfer = %row.id, event = event.name(), error = %Chain(&err),
                    "transfer retrieval closed; its evidence is kept, and gets its proof at a later sweep"
                );
                Ok(Closing::Pending)
            }
        }
    }

    /// Evidences kept pending are completed ([`Self::complete_pending`]); then received transfers past their
    /// timeouts: a delivered one nobody retrieved gets `NonRetrieval`; one still receiving past the delivery timeout
    /// is dropped with its staging file (its sender issues `NonDelivery`).
    async fn sweep(&self) -> Result<()> {
        // The timeouts below are judged whatever became of the pending evidences.
        if let Err(err) = self.complete_pending().await {
            tracing::warn!(error = %Chain(&err), "the kept evidences could not be listed; trying again at the next sweep");
        }
        for row in self.gateway.catalog().transfers_in_stage(IN, "delivered").await? {
            if self.age(&row.updated_at) <= self.timing.retrieval {
                continue;
            }
            // A download (on any gateway) may close it first: then this logs nothing (`close_retrieval`).
            let Some(row) = self.gateway.catalog().transfer(&row.id).await?.filter(|row| row.stage == "delivered")
            else {
                continue;
            };
            let actor = self.partner_caller(&self.partner(&row.partner)?.clone()).await?.actor();
            let reason = Some(NegativeReason::TimedOut);
            if self.close_retrieval(&row, EvidenceEvent::NonRetrieval, reason, actor).await? == Closing::Pending {
                // The log does not publish now: the others would each wait as long for it. The next sweep closes
                // them.
                break;
            }
        }
        for row in self.gateway.catalog().transfers_in_stage(IN, "receiving").await? {
            if self.age(&row.created_at) <= self.timing.delivery {
                continue;
            }
            let _turn = self.turn(&row.id).await?;
            if self
                .gateway
                .catalog()
                .advance_transfer(&row.id, "receiving", "failed", row.received, &self.gateway.now().to_string())
                .await?
            {
                let _ = std::fs::remove_file(self.staging(&row.id));
                self.arriving.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&row.id);
                tracing::warn!(transfer = %row.id, "a transfer was not finished in time; its chunks are dropped");
            }
        }
        Ok(())
    }

    /// Where a received transfer stands, with the evidences as this gateway logged them.
    pub async fn progress_of(&self, partner: &Partner, id: &str) -> Result<Progress> {
        let row = self.received_row(partner, id).await?;
        self.progress(&row).await
    }

    async fn progress(&self, row: &TransferRow) -> Result<Progress> {
        let kept = self.gateway.catalog().transfer_evidences(&row.id).await?;
        let stage = match row.stage.as_str() {
            "receiving" => Stage::Receiving,
            "delivered" => Stage::Delivered,
            // Moved on, but the evidence that did it still waits for its proof: not told as done before its rung
            // can be shown.
            _ if kept.iter().any(TransferEvidenceRow::is_pending) => Stage::Delivered,
            "retrieved" => Stage::Retrieved,
            _ => Stage::Failed,
        };
        let evidences = self.ladder_of(row, kept)?.into_iter().map(|(logged, _)| logged).collect();
        // While it arrives, what this gateway holds itself: the sender sends the rest from there.
        let received = match row.stage.as_str() {
            "receiving" => self.durable_here(row).await?,
            _ => row.received as u64,
        };
        let written = self.written_of(row, received);
        Ok(Progress { transfer: row.id.clone(), stage, received, written, evidences })
    }

    // Feedback across the border.

    /// An outcome report filed here about an artefact a partner provided goes back to the partner: kept in the
    /// outbox until the partner's gateway has taken it.
    pub async fn outcome_filed(&self, outcome: &custodia_catalog::OutcomeRow) -> Result<()> {
        for transfer in self.gateway.catalog().transfers_of_artefact(&outcome.artefact_id).await? {
            if transfer.direction != IN {
                continue;
            }
            let report = OutcomeReport {
                id: outcome.id.clone(),
                outcome: serde_json::from_value(serde_json::Value::String(outcome.outcome.clone()))
                    .map_err(|err| GatewayError::internal("a stored outcome", err))?,
                note: outcome.note.clone(),
            };
            self.post_later(&transfer, "outcomes", &report).await?;
        }
        Ok(())
    }

    /// Keeps `body` for `transfer`'s partner, to be posted to the transfer's `what` route until it is taken.
    async fn post_later(&self, transfer: &TransferRow, what: &str, body: &impl Serialize) -> Result<()> {
        let body = serde_json::to_string(body).map_err(|err| GatewayError::internal("post later", err))?;
        let item = custodia_catalog::OutboxRow {
            id: crate::gateway::new_id("obx"),
            partner: transfer.partner.clone(),
            path: format!("/partner/v1/transfers/{}/{what}", transfer.id),
            body,
            attempts: 0,
            created_at: self.gateway.now().to_string(),
        };
        self.gateway.catalog().outbox_put(&item).await?;
        self.outbox.notify_one();
        Ok(())
    }

    /// A request to widen the use of evidence a partner provided goes to the partner, which alone decides.
    pub async fn widening_requested(&self, request: &custodia_catalog::WidenRequestRow) -> Result<()> {
        for transfer in self.gateway.catalog().transfers_of_artefact(&request.artefact_id).await? {
            if transfer.direction == IN {
                let request: WidenRequest = serde_json::from_str(&request.request)
                    .map(|widen| WidenRequest { id: request.id.clone(), widen })
                    .map_err(|err| GatewayError::internal("a stored request", err))?;
                self.post_later(&transfer, "widen-requests", &request).await?;
            }
        }
        Ok(())
    }

    /// A decision on a request a partner sent goes back to it.
    pub async fn widening_decided(&self, request: &custodia_catalog::WidenRequestRow) -> Result<()> {
        let Some(asker) = self.gateway.catalog().account(&request.requested_by).await? else { return Ok(()) };
        let Some(partner) = asker.username.strip_prefix("partner:") else { return Ok(()) };
        let decision = WidenDecision { request: request.id.clone(), approve: request.status == "approved" };
        for transfer in self.gateway.catalog().transfers_of_artefact(&request.artefact_id).await? {
            if transfer.direction == OUT && transfer.partner == partner {
                self.post_later(&transfer, "widen-decisions", &decision).await?;
                break;
            }
        }
        Ok(())
    }

    /// A transfer of `partner`'s one way, or not found.
    async fn transfer_with(&self, partner: &Partner, id: &str, direction: &str) -> Result<TransferRow> {
        match self.gateway.catalog().transfer(id).await? {
            Some(row) if row.direction == direction && row.partner == partner.name => Ok(row),
            _ => Err(GatewayError::NotFound(format!("no transfer {id} with {}", partner.name))),
        }
    }

    /// A request from the partner a transfer went to, to widen the use of what it was sent: recorded here, where
    /// the provider decides, once however often it arrives.
    pub async fn widen_requested(&self, partner: &Partner, id: &str, request: WidenRequest) -> Result<()> {
        let transfer = self.transfer_with(partner, id, OUT).await?;
        if !is_id_of("wr", &request.id) {
            return Err(bad_input("id", "a request's id is wr- and 24 hex digits"));
        }
        let _turn = self.turn(id).await?;
        if let Some(known) = self.gateway.catalog().widen_request(&request.id).await? {
            return if Some(&known.artefact_id) == transfer.artefact_id.as_ref() {
                Ok(())
            } else {
                Err(GatewayError::Conflict(format!("request {} is another request here", request.id)))
            };
        }
        let artefact_id = transfer.artefact_id.clone().unwrap_or_default();
        let artefact = self
            .gateway
            .catalog()
            .artefact(&artefact_id)
            .await?
            .ok_or_else(|| GatewayError::NotFound(format!("artefact {artefact_id}")))?;
        let caller = self.partner_caller(partner).await?;
        self.gateway.record_widen_request(&caller, &artefact, request.id, request.widen).await?;
        tracing::info!(transfer = %id, partner = %partner.name, "a partner asks to widen the use of what it was sent");
        Ok(())
    }

    /// The provider's decision on a request sent to it from here: recorded, and the policy widened if approved,
    /// by the provider's (the partner's) account; once, however often it arrives.
    pub async fn widen_decided(&self, partner: &Partner, id: &str, decision: WidenDecision) -> Result<()> {
        let transfer = self.transfer_with(partner, id, IN).await?;
        let request = self.gateway.catalog().widen_request(&decision.request).await?;
        let Some(request) = request.filter(|request| Some(&request.artefact_id) == transfer.artefact_id.as_ref())
        else {
            return Err(GatewayError::NotFound(format!("no request {} about transfer {id}", decision.request)));
        };
        if request.status != "pending" {
            return Ok(());
        }
        let caller = self.partner_caller(partner).await?;
        match self.gateway.settle_widening(&caller, &request.id, decision.approve).await {
            Ok(_) | Err(GatewayError::Conflict(_)) => {}
            Err(err) => return Err(err),
        }
        tracing::info!(transfer = %id, partner = %partner.name, approve = decision.approve, "a partner decided on wider use");
        Ok(())
    }

    /// Sends what waits in the outbox, oldest first, each until its partner takes it (a 2xx answer); a partner
    /// that refuses or is down is tried again at the next retry interval.
    async fn send_outbox(&self) {
        {
            let unsent = match self.gateway.catalog().outbox_unsent(64).await {
                Ok(unsent) => unsent,
                Err(err) => {
                    tracing::warn!(error = %Chain(&err), "could not read the partner outbox");
                    return;
                }
            };
            for item in unsent {
                let Ok(partner) = self.partner(&item.partner).cloned() else { continue };
                self.sent.outbox.fetch_add(1, Ordering::Relaxed);
                let answer = self.client.post(&partner, &item.path, item.body).await;
                let delivered = answer.is_ok();
                if let Err(err) = &answer {
                    let status = match err {
                        PartnerError::Refused { status, .. } => *status,
                        _ => 0,
                    };
                    tracing::info!(partner = %partner.name, status, attempts = item.attempts + 1, "a request to a partner did not go through; trying again");
                }
                let now = self.gateway.now().to_string();
                if let Err(err) = self.gateway.catalog().outbox_tried(&item.id, delivered.then_some(now.as_str())).await
                {
                    tracing::warn!(error = %Chain(&err), "could not note a partner request's delivery");
                }
            }
        }
    }

    /// An outcome report from the partner a transfer went to, about the artefact sent: recorded here, where the
    /// provider sees it, once however often it arrives.
    pub async fn outcome_reported(&self, partner: &Partner, id: &str, report: OutcomeReport) -> Result<()> {
        let transfer = match self.gateway.catalog().transfer(id).await? {
            Some(row) if row.direction == OUT && row.partner == partner.name => row,
            _ => return Err(GatewayError::NotFound(format!("no transfer {id} to {}", partner.name))),
        };
        if !is_id_of("out", &report.id) {
            return Err(bad_input("id", "an outcome report's id is out- and 24 hex digits"));
        }
        if let Some(note) = &report.note {
            Label::new(note.clone()).map_err(|err| bad_input("note", err))?;
        }
        // One report at a time per transfer, so that the same report sent twice at once is recorded once.
        let _turn = self.turn(id).await?;
        let artefact_id = transfer.artefact_id.clone().unwrap_or_default();
        let artefact = self
            .gateway
            .catalog()
            .artefact(&artefact_id)
            .await?
            .ok_or_else(|| GatewayError::NotFound(format!("artefact {artefact_id}")))?;
        let caller = self.partner_caller(partner).await?;
        let outcomes = self.gateway.catalog().outcomes_for(&artefact_id).await?;
        if outcomes.iter().any(|outcome| outcome.id == report.id) {
            return Ok(());
        }
        // What a partner says about what it was sent goes into the artefact's own history: a few, not a flood.
        let theirs = outcomes.iter().filter(|outcome| outcome.filed_by == caller.account_id()).count();
        if theirs >= REPORTS_PER_TRANSFER {
            return Err(GatewayError::TooMany(format!(
                "{theirs} outcome reports about this transfer are on the record; no more are taken"
            )));
        }
        // A partner's reports are budgeted like a member's: they are custody records here.
        self.gateway.take_recorded_step(&caller).await?;
        let outcome = serde_json::to_value(report.outcome)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default();
        let outcome = Label::new(outcome).map_err(|err| bad_input("outcome", err))?;
        self.gateway.record_outcome(&caller, &artefact, report.id, outcome, report.note).await?;
        tracing::info!(transfer = %id, partner = %partner.name, "an outcome report came back from a partner");
        Ok(())
    }

    // The console.

    /// A transfer as the console shows it.
    pub async fn view(&self, row: &TransferRow) -> Result<TransferView> {
        let parse = |text: Option<String>| text.and_then(|text| serde_json::from_str(&text).ok());
        let evidences = self
            .gateway
            .catalog()
            .transfer_evidences(&row.id)
            .await?
            .into_iter()
            .map(|evidence| EvidenceView {
                pending: evidence.is_pending(),
                rung: evidence.rung,
                event: evidence.event,
                own: parse(evidence.own),
                partner: parse(evidence.partner),
            })
            .collect();
        Ok(TransferView {
            id: row.id.clone(),
            direction: row.direction.clone(),
            partner: row.partner.clone(),
            artefact: row.artefact_id.clone(),
            stage: row.stage.clone(),
            size: row.size,
            sha256: row.sha256.clone(),
            received: row.received,
            created_at: row.created_at.clone(),
            evidences,
        })
    }

    /// The transfers of an artefact the caller may see the history of.
    pub async fn of_artefact(&self, caller: &Principal, id: &ArtefactId) -> Result<Vec<TransferView>> {
        self.gateway.authorize_artefact(caller, id, custodia_core::Action::ViewTimeline).await?;
        let mut views = Vec::new();
        for row in self.gateway.catalog().transfers_of_artefact(id.as_str()).await? {
            views.push(self.view(&row).await?);
        }
        Ok(views)
    }
}

/// An outcome report as it goes back to the partner that provided the artefact.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeReport {
    /// The report's id at the receiving gateway, kept at the provider's too (so that it is recorded once).
    pub id: String,
    pub outcome: OutcomeKind,
    /// What the person who filed it typed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl std::fmt::Debug for OutcomeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutcomeReport").field("id", &self.id).field("outcome", &self.outcome).finish_non_exhaustive()
    }
}

/// The bytes free to an unprivileged writer on the file system of `dir`.
fn free_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    let stats = rustix::fs::statvfs(dir)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// A request to widen use as it goes to the partner that provided the artefact: its id here (kept there too), and
/// what it asks.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WidenRequest {
    pub id: String,
    pub widen: custodia_core::WidenRequest,
}

/// The provider's decision on a request to widen use, as it comes back.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WidenDecision {
    pub request: String,
    pub approve: bool,
}

/// The refusal of a step of arriving transfer `id` on a gateway that no longer stages it.
fn staged_elsewhere(id: &str) -> GatewayError {
    GatewayError::Unavailable { what: TRANSFERS_ELSEWHERE, source: Box::new(StagedElsewhere(id.to_owned())) }
}

/// `found`, if it is transfer `id` received from `partner`.
fn received_of(partner: &Partner, id: &str, found: Option<TransferRow>) -> Result<TransferRow> {
    match found {
        Some(row) if row.direction == IN && row.partner == partner.name => Ok(row),
        _ => Err(GatewayError::NotFound(format!("no transfer {id} from {}", partner.name))),
    }
}

/// The length a chunk of transfer `row` at `offset` must have, or why no chunk can start there with `length`
/// bytes: chunks start at multiples of the chunk size, within the payload, and each is whole (the last one is
/// what is left).
fn chunk_shape(row: &TransferRow, offset: u64, length: u64) -> Result<u64> {
    let (chunk_size, size) = (row.chunk_size.max(1) as u64, row.size as u64);
    if !offset.is_multiple_of(chunk_size) || offset >= size {
        return Err(GatewayError::Conflict(format!(
            "a chunk of transfer {} starts at a multiple of {chunk_size} below {size}, not at byte {offset}",
            row.id
        )));
    }
    let expected = chunk_size.min(size - offset);
    if length != expected {
        return Err(bad_input("chunk", format!("the chunk at {offset} has {expected} bytes, not {length}")));
    }
    Ok(expected)
}

/// Whether `id` is one this gateway's kind makes with `prefix` ([`crate::gateway::new_id`]): the prefix, `-`,
/// and 24 lowercase hex digits.
fn is_id_of(prefix: &str, id: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hex| hex.len() == 24 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// `xfer-` and 16 random bytes in hex.
fn new_transfer_id() -> String {
    let mut bytes = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    format!("xfer-{}", hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// What became of a request to close a delivered transfer's retrieval ([`Transfers::close_retrieval`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// Another request (a download here or on another gateway, the sweep) closed it first; this one logged nothing.
    ClosedMeanwhile,
    /// Closed by this request, its evidence kept with its proof.
    Proven,
    /// Closed by this request, its evidence kept pending its proof, which a later sweep adds (the log did not
    /// publish the record in time).
    Pending,
}

/// What a transfer's records are about here: its case, and its artefact (the one sent, or the one received once
/// under custody).
/// The `transfer_evidence` record of `signed`, about `artefact`: the rung in clear, the evidence's digest committed.
fn evidence_record(
    artefact: Option<ArtefactId>,
    signed: &SignedEvidence,
) -> Result<impl FnOnce(&mut Committer) -> CustodyEvent> {
    let rung = Label::new(signed.evidence().event.name()).map_err(|err| GatewayError::internal("log evidence", err))?;
    let digest = signed.sha256().to_hex();
    Ok(move |committer: &mut Committer| CustodyEvent::TransferEvidence {
        artefact,
        rung,
        evidence: committer.commit(EVIDENCE_FIELD, digest),
    })
}

fn about(row: &TransferRow) -> Result<(CaseId, Option<ArtefactId>)> {
    let internal = |err: custodia_core::IdError| GatewayError::internal("a transfer's stored ids", err);
    let case = CaseId::new(row.case_id.clone().unwrap_or_default()).map_err(internal)?;
    let artefact = row.artefact_id.clone().map(ArtefactId::new).transpose().map_err(internal)?;
    Ok((case, artefact))
}

/// The offer a transfer was opened with.
fn offer_of(row: &TransferRow) -> Result<Offer> {
    let offer = row.offer.as_deref().ok_or_else(|| GatewayError::internal_message("a transfer without its offer"))?;
    serde_json::from_str(offer).map_err(|err| GatewayError::internal("a transfer's stored offer", err))
}

/// The evidence a [`Logged`] carries, read without its signature checked: to learn who issued it, and so which
/// pinned key checks it.
fn unverified(logged: &Logged) -> Result<Evidence> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let bytes = b64.decode(&logged.signed.evidence).map_err(|_| bad_input("evidence", "not base64"))?;
    custodia_core::from_canonical_slice(&bytes).map_err(|err| bad_input("evidence", err))
}

/// What a verified bundle says of the provider's artefact.
#[derive(Debug)]
struct CheckedBundle {
    artefact: String,
    /// The SHA-256 of the provider's signed manifest, which the `received_from` record commits to.
    manifest_sha256: Sha256,
    media_type: String,
    /// The first lines of the provider's checkpoint the records are proved against.
    checkpoint: String,
}

/// Why a transferred bundle was not taken in: it does not verify, which is the partner's doing
/// (`PayloadInvalid`), or its payload staged here could not be read, which is this gateway's ([`Self::Staged`]).
#[derive(Debug, thiserror::Error)]
enum BundleCheckError {
    #[error("the offer's head is not a provider's chain")]
    Chain(#[source] custodia_bundle::VerifyError),
    #[error("the bundle is not signed by the partner's pinned log key")]
    NotPinned,
    #[error("the bundle could not be verified")]
    Unverifiable(#[source] custodia_bundle::VerifyError),
    /// The parts whose checks failed; not the checks' details, which may quote what people typed (a line of the
    /// bundle's certificate).
    #[error("the bundle does not verify with the provider's pinned key (failed: {})", failed_parts(.0))]
    Failed(Vec<custodia_bundle::Part>),
    #[error("the bundle's payload is not the one offered")]
    NotOffered,
    #[error("the bundle holds no {0}")]
    Lacks(&'static str),
    #[error("the bundle's manifest cannot be read")]
    Manifest(#[source] custodia_core::CanonicalError),
    /// The payload staged on this gateway's disk could not be read (or is shorter than the bytes counted as
    /// received): nothing is known of the bundle, and the failure is not the partner's.
    #[error("the payload staged here could not be read")]
    Staged(#[source] std::io::Error),
}

/// `parts`, as a list in words, or that no check was made.
fn failed_parts(parts: &[custodia_bundle::Part]) -> String {
    match parts {
        [] => "no check was made".to_owned(),
        parts => parts.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
    }
}

/// The payload staged for a transfer, read for the verifier: the `left` bytes counted as received, no more. A
/// failure to read them (the file unreadable, or ending early) is this gateway's, not the bundle's: the first is
/// kept in `failed`, and the verifier is given an error of the same kind that says only that.
struct StagedPayload<'a> {
    file: std::fs::File,
    left: u64,
    failed: &'a mut Option<std::io::Error>,
}

impl StagedPayload<'_> {
    fn fail(&mut self, err: std::io::Error) -> std::io::Error {
        let kind = err.kind();
        self.failed.get_or_insert(err);
        std::io::Error::new(kind, "the payload staged here could not be read")
    }
}

impl std::io::Read for StagedPayload<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        match std::io::Read::read(&mut self.file, &mut buf[..want]) {
            Ok(0) => {
                let short = format!("the staged file ends {} bytes before the payload does", self.left);
                Err(self.fail(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, short)))
            }
            Ok(read) => {
                self.left -= read as u64;
                Ok(read)
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => Err(err),
            Err(err) => Err(self.fail(err)),
        }
    }
}

/// Verifies the bundle made of `chain` (its head), the payload staged at `path` and the tar's end, with `log`, the
/// provider's pinned log key: the bag is signed by that key, and its payload is the one offered, `(sha256, size)`.
/// A bag the provider itself received from a gateway before it carries that gateway's chain, whose key is not
/// pinned here: it must pass every other check, and the provider's `received_from` record vouches for it; a court
/// here checks it with that gateway's key. The staged payload is read only if it was not `hashed` as it was
/// written; a failure to read it is [`BundleCheckError::Staged`], whatever the verifier made of it.
fn check_bundle(
    chain: &[u8],
    path: &std::path::Path,
    hashed: Option<Sha256>,
    (sha256, size): (Sha256, u64),
    log: &LogVerifier,
) -> std::result::Result<CheckedBundle, BundleCheckError> {
    use std::io::Read as _;
    let files = custodia_bundle::ProviderChain::from_head(chain).map_err(BundleCheckError::Chain)?.files;
    let file_of = |name: &str| files.iter().find(|(path, _)| path == name).map(|(_, bytes)| bytes.as_slice());
    if file_of(custodia_bundle::layout_paths::VKEY).map(|vkey| String::from_utf8_lossy(vkey).trim().to_owned())
        != Some(log.to_string())
    {
        return Err(BundleCheckError::NotPinned);
    }
    let pins = custodia_bundle::Pins { keys: std::slice::from_ref(log), policy: None, time: None };
    let limits = custodia_bundle::Limits::default();
    let verification = match hashed {
        // Hashed as it was written: the staged bytes are not read again.
        Some(hashed) => custodia_bundle::verify_with_payload_digest(chain, (hashed, size), &pins, limits),
        None => {
            let file = std::fs::File::open(path).map_err(BundleCheckError::Staged)?;
            let mut unread = None;
            let payload = StagedPayload { file, left: size, failed: &mut unread };
            let mut tail = custodia_bundle::padding(size);
            tail.resize(tail.len() + 1024, 0);
            let bundle = chain.chain(payload).chain(tail.as_slice());
            let verified =
                custodia_bundle::verify_pinned(std::io::BufReader::with_capacity(1 << 20, bundle), &pins, limits);
            if let Some(err) = unread {
                return Err(BundleCheckError::Staged(err));
            }
            verified
        }
    }
    .map_err(BundleCheckError::Unverifiable)?;
    let unpinned_before = |check: &&custodia_bundle::Check| {
        check.part == custodia_bundle::Part::TrustedKey && check.detail.starts_with(custodia_bundle::PROVIDER_CHAIN)
    };
    let failed: Vec<&custodia_bundle::Check> =
        verification.checks.iter().filter(|check| !check.passed && !unpinned_before(check)).collect();
    if verification.checks.is_empty() || !failed.is_empty() {
        let mut parts: Vec<custodia_bundle::Part> = failed.iter().map(|check| check.part).collect();
        parts.sort();
        parts.dedup();
        return Err(BundleCheckError::Failed(parts));
    }
    if verification.sha256 != Some(sha256) {
        return Err(BundleCheckError::NotOffered);
    }
    let manifest_bytes = file_of(custodia_bundle::layout_paths::MANIFEST).ok_or(BundleCheckError::Lacks("manifest"))?;
    let manifest: custodia_core::Manifest =
        custodia_core::from_canonical_slice(manifest_bytes).map_err(BundleCheckError::Manifest)?;
    let checkpoint = file_of(custodia_bundle::layout_paths::CHECKPOINT).ok_or(BundleCheckError::Lacks("checkpoint"))?;
    Ok(CheckedBundle {
        artefact: manifest.artefact.to_string(),
        manifest_sha256: Sha256::of(manifest_bytes),
        media_type: manifest.media_type.to_string(),
        checkpoint: String::from_utf8_lossy(checkpoint).lines().take(3).collect::<Vec<_>>().join("\n"),
    })
}

/// What an artefact achieved, reported back to its provider.
#[derive(Debug, Clone, Copy, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    UsedAtHearing,
    ChargesBrought,
    Conviction,
    Acquittal,
    CaseDiscontinued,
    VictimIdentified,
    Other,
}

#[cfg(test)]
mod tests;
