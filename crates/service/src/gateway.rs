//! The evidence service's operations, one method each: who may do what, what goes into the ledger, and in which
//! order things are written so that a crash never leaves half-written evidence.
//!
//! The server's handlers only translate HTTP to these calls. Every operation on a case starts by finding the
//! caller's role in it ([`Gateway::authorize`]); a member's refusal is itself a custody record, a non-member's
//! probe goes to the operator's log only.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use custodia_bundle::{
    BundleRecord, BundleSource, BundleTimestamp, CaseListing, CaseRecord, ExportScope, ListedBundle,
};
use custodia_catalog::{
    Account, ArtefactRow, Catalog, CatalogError, LogShelf, OutcomeRow, Registration, TransferMove, Turn, TurnKind,
    UploadCompletion, WidenRequestRow,
};
use custodia_core::{
    AccessKind, Action, ActorId, ArtefactId, CaseId, Commitment, CustodyEvent, CustodyRecord, ExportFormat, Label,
    Manifest, MembershipChange, Openings, RefusalCode, Repeated, Role, Salt, Sha256, SignedManifest, UseAction,
    UseDecision, UsePolicy, UseRequest, WidenRequest,
};
use custodia_ledger::{Log, LogSigner, LogVerifier, TlogProof};
use custodia_store::{ArtefactStore, BodyError, IngestOptions, StoreError};
use ed25519_dalek::SigningKey;
use futures::Stream;
use jiff::Timestamp;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt as _};

use crate::clock::Clock;
pub use crate::error::{BoxError, ErrorClass, GatewayError, Result, SERVED_ELSEWHERE, bad_input};
use crate::identity::Principal;
pub use crate::identity::actor_of;
pub use crate::ids::{new_artefact_id, new_id};
use crate::probe::Seen;

/// The purpose of every custody record a live hearing writes.
pub const HEARING_PURPOSE: &str = "remote testimony";

/// Cosignatures on the log's checkpoints, as court bundles carry them: the server's `cosigning` collects them from
/// the operator's witnesses.
pub trait WitnessedCheckpoints: Send + Sync + std::fmt::Debug {
    /// The witness policy (tlog-policy text), when one is configured.
    fn policy_file(&self) -> Option<&str>;

    /// A published checkpoint of at least `size` whose cosignatures meet the policy's quorum, waited for a while;
    /// else the newest one that meets it, if any. With the checkpoint's size.
    fn cosigned_covering(&self, size: u64) -> futures::future::BoxFuture<'_, Option<(Vec<u8>, u64)>>;
}

/// Counts of what this process took into custody.
#[derive(Debug, Default)]
struct Ingested {
    bytes: AtomicU64,
    artefacts: AtomicU64,
}

impl Ingested {
    fn count(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.artefacts.fetch_add(1, Ordering::Relaxed);
    }
}

/// The first invisible format character (Unicode category Cf) in `text`, which can make one text read as another:
/// a right-to-left override turns `fdp.exe` into `exe.pdf`; a zero-width space makes `Amina` and `Am\u{200B}ina`
/// two names that look the same. The zero-width (non-)joiners are kept: Persian and Indic names are written with
/// them. One rule for everything people type and others read: file names, display names, places.
pub fn disguising_character(text: &str) -> Option<char> {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};
    text.chars().find(|&c| c.general_category() == GeneralCategory::Format && !matches!(c, '\u{200C}' | '\u{200D}'))
}

/// What a client says about an upload.
#[derive(Debug, Clone)]
pub struct UploadRequest {
    pub purpose: Label,
    pub media_type: Label,
    pub original_name: Option<Label>,
    pub expected_sha256: Option<Sha256>,
    pub policy: Option<UsePolicy>,
}

/// An artefact that entered custody.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Registered {
    pub artefact: ArtefactId,
    pub sha256: Sha256,
    pub size: u64,
    pub ledger_index: u64,
    // Whether the bytes were already held is not said: it would tell a member of one case what another case holds.
}

/// An artefact's export record, appended, and its chain up to it: what its bundle holds once proved.
struct ExportedChain {
    row: ArtefactRow,
    artefact: ArtefactId,
    export_index: u64,
    /// (ledger index, entry) of every record about the artefact up to its export record, in ledger order.
    entries: Vec<(i64, Vec<u8>)>,
}

/// The checkpoint an export's records are proved against: its note, its size, and what witnessing adds.
struct ProvedAgainst {
    note: Vec<u8>,
    size: u64,
    witnessing: Option<custodia_bundle::Witnessing>,
}

/// One custody record with the proof that it is in the log.
#[derive(Clone, serde::Serialize)]
pub struct TimelineEntry {
    pub ledger_index: u64,
    pub record: serde_json::Value,
    /// The openings of the record's commitments (salt and text, by field): for members entitled to the timeline.
    pub openings: serde_json::Value,
    /// A c2sp.org/tlog-proof@v1 proof against the latest checkpoint.
    pub proof: String,
}

/// Without the openings, whose texts are what people typed (a purpose, a reason, perhaps a name).
impl std::fmt::Debug for TimelineEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimelineEntry")
            .field("ledger_index", &self.ledger_index)
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

/// The gateway's state. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    catalog: Catalog,
    artefacts: ArtefactStore,
    log: Log,
    /// Signed manifests, write-once, so that the catalog can be rebuilt from the ledger and the objects.
    manifests: Arc<dyn ObjectStore>,
    signing_key: Arc<SigningKey>,
    /// The public half of `signing_key`, named after the log, for bundles.
    verifier: LogVerifier,
    clock: Clock,
    max_upload_bytes: u64,
    /// FFmpeg runs in a child process under limits, never in this one ([`crate::probe`]); without a prober,
    /// artefacts are kept unprobed.
    prober: Option<crate::probe::Prober>,
    refusals: crate::refusals::Refusals,
    /// Per-account quotas and rates: stored bytes, uploads, refusal records.
    quotas: Arc<crate::budget::Quotas>,
    /// The catalog's budgets, shared by every gateway on it ([`crate::budget::BudgetStore`]).
    budgets: crate::budget::BudgetStore,
    /// The cosignatures on this log's checkpoints, whose policy and cosigned checkpoint court bundles carry.
    cosigning: Option<Arc<dyn WitnessedCheckpoints>>,
    /// What this process took into custody, for monitoring.
    ingested: Arc<Ingested>,
    /// The lease a hearing room's records are fenced by ([`Gateway::fenced`]): `None` but in a hearing's own clone.
    fence: Option<Arc<custodia_catalog::HearingFence>>,
}

/// Past the budget of custody records, for as long as `wait`.
fn too_many_steps(wait: std::time::Duration) -> GatewayError {
    GatewayError::TooManyAttempts {
        what: "recorded steps",
        retry_after_seconds: crate::budget::retry_after_seconds(wait),
    }
}

/// How the bytes of an artefact being registered arrived.
#[derive(Debug, Clone, Copy)]
enum Arrival<'a> {
    /// In one request (a partner's transfer).
    Direct,
    /// In one request, holding the quota its bytes take with the holding named (a direct upload): registered only
    /// while the holding lasts, which the registration consumes.
    Held(&'a str),
    /// As a hearing's output: counted for the case, not the caller's quota.
    Hearing(&'a custodia_core::HearingId),
    /// As a resumable upload whose completion this request claimed: its registration consumes the upload.
    Resumable(&'a UploadCompletion),
}

/// A transfer moved on by its evidence's record ([`Gateway::record_moving_transfer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MovedOn {
    /// The record's index on this gateway's log.
    pub index: u64,
    /// Whether a published checkpoint covered the record within the log's patience (not while the log's store
    /// fails).
    pub integrated: bool,
}

/// A custody record ready for the ledger, with the openings of its commitments for the catalog.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub record: CustodyRecord,
    pub openings: Openings,
}

/// Makes a record's commitments, each under a fresh salt, and keeps their openings.
#[derive(Debug, Default)]
pub struct Committer {
    openings: Openings,
}

impl Committer {
    pub fn commit(&mut self, field: &str, text: impl Into<String>) -> Commitment {
        self.openings.commit(field, fresh_salt(), text)
    }
}

/// 32 bytes from the operating system's CSPRNG.
pub fn fresh_salt() -> Salt {
    let mut bytes = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    Salt::from_bytes(bytes)
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("artefacts", &self.artefacts).finish_non_exhaustive()
    }
}

fn manifest_path(artefact: &ArtefactId) -> StorePath {
    StorePath::from_iter(["manifests", artefact.as_str()])
}

/// Where the use policy attached at an artefact's registration is kept, write-once, before its registration
/// record: a catalog row restored from the log after a crash ([`Gateway::reindex`]) gets it back, so that the
/// artefact is never listed without the restrictions it came with.
fn attached_policy_path(artefact: &ArtefactId) -> StorePath {
    StorePath::from_iter(["policies", artefact.as_str()])
}

impl Gateway {
    pub fn new(
        catalog: Catalog,
        artefacts: ArtefactStore,
        manifests: Arc<dyn ObjectStore>,
        log: Log,
        signer: &LogSigner,
        clock: Clock,
        max_upload_bytes: u64,
    ) -> Self {
        let budgets = crate::budget::BudgetStore::new(catalog.clone(), clock.clone());
        Self {
            prober: None,
            quotas: Arc::new(crate::budget::Quotas::default().kept_in(&budgets)),
            budgets,
            catalog,
            artefacts,
            manifests,
            log,
            signing_key: Arc::new(signer.signing_key().clone()),
            verifier: signer.verifier(),
            clock,
            max_upload_bytes,
            refusals: crate::refusals::Refusals::default(),
            cosigning: None,
            ingested: Arc::default(),
            fence: None,
        }
    }

    /// This gateway, writing every custody record under `fence`: a hearing room's own clone, so that each record
    /// it writes (its events, refused steps, output entering custody, quarantines, derivatives) is sequenced only
    /// while this node holds the hearing's lease under that epoch ([`custodia_catalog::Catalog::sequence_custody`]).
    pub fn fenced(&self, fence: custodia_catalog::HearingFence) -> Self {
        Self { fence: Some(Arc::new(fence)), ..self.clone() }
    }

    /// The lease fence this gateway's records carry, if it is a hearing room's clone.
    pub fn fence(&self) -> Option<&custodia_catalog::HearingFence> {
        self.fence.as_deref()
    }

    /// Court bundles carry `cosigning`'s witness policy and cosigned checkpoint, when it has a policy.
    pub fn with_cosigning(mut self, cosigning: Arc<dyn WitnessedCheckpoints>) -> Self {
        self.cosigning = Some(cosigning);
        self
    }

    /// Holds accounts to `quotas` (the defaults otherwise), their budgets kept in the catalog for every gateway on
    /// it ([`crate::budget::Quotas::kept_in`]).
    pub fn with_quotas(mut self, quotas: crate::budget::Quotas) -> Self {
        self.quotas = Arc::new(quotas.kept_in(&self.budgets));
        self
    }

    /// Probes media with `prober` ([`crate::probe`]).
    pub fn with_prober(mut self, prober: crate::probe::Prober) -> Self {
        self.prober = Some(prober);
        self
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The catalog: accounts, cases, artefacts, and the custody index.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The artefacts' bytes.
    pub fn artefacts(&self) -> &ArtefactStore {
        &self.artefacts
    }

    /// The custody log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The most bytes one upload may hold.
    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
    }

    /// Per-account quotas and rates.
    pub fn quotas(&self) -> &crate::budget::Quotas {
        &self.quotas
    }

    /// Where the budgets that protect against abuse are kept, for every gateway on this catalog.
    pub fn budgets(&self) -> &crate::budget::BudgetStore {
        &self.budgets
    }

    /// Refusals counted into one record a window ([`crate::refusals`]).
    pub fn refusals(&self) -> &crate::refusals::Refusals {
        &self.refusals
    }

    /// Bytes and artefacts this process has taken into custody since it started.
    pub fn ingested(&self) -> (u64, u64) {
        (self.ingested.bytes.load(Ordering::Relaxed), self.ingested.artefacts.load(Ordering::Relaxed))
    }

    /// The gateway's public key, named after its log: what a court pins to check its bundles.
    pub fn verifier(&self) -> &LogVerifier {
        &self.verifier
    }

    /// Puts a custody record on the record: sequences it ([`Gateway::sequence`]) and waits until a published
    /// checkpoint of the log covers it. A record still unpublished when the log's patience runs out (its store
    /// failing) is durable all the same, and counts as recorded. Returns its ledger index.
    pub async fn record(&self, sealed: &Sealed) -> Result<u64> {
        let index = self.sequence(sealed).await?;
        self.settle(index).await?;
        Ok(index)
    }

    /// Waits until a published checkpoint covers the sequenced record `index`. One that the log could not
    /// integrate within its patience (its store failing: [`custodia_ledger::LogError::NotIntegrated`]) is done all
    /// the same: it is durable since it was sequenced, and is integrated once the store answers again. Saying
    /// otherwise would have the caller take the step a second time (and upload the same evidence twice).
    pub(crate) async fn settle(&self, index: u64) -> Result<()> {
        match self.log.integrated(index).await {
            Ok(_) => Ok(()),
            Err(custodia_ledger::LogError::NotIntegrated { cause, .. }) => {
                tracing::warn!(index, cause = ?cause, "a record is sequenced, and will be published once the log's store answers");
                Ok(())
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Sequences a custody record: one database transaction gives it the log's next index, chains it to its
    /// artefact's previous record (`prior`, read in that transaction, so records about one artefact chain whichever
    /// gateway appends them), stores it in the custody index, and keeps the openings of its commitments. From then
    /// on it is durable: whichever gateway integrates next puts it in the log ([`custodia_ledger::coordinated`]).
    ///
    /// Refusal counts whose window has closed are recorded first ([`crate::refusals`]): any activity flushes them.
    pub async fn sequence(&self, sealed: &Sealed) -> Result<u64> {
        self.flush_refusals().await?;
        self.sequence_now(sealed, None).await
    }

    /// Sequences `sealed` as [`Gateway::sequence`] does; if it registers an artefact, with what the catalog lists
    /// with it in the same transaction ([`custodia_catalog::Catalog::sequence_registration`]).
    async fn sequence_now(&self, sealed: &Sealed, registration: Option<Registration>) -> Result<u64> {
        Ok(self.sequence_sealed(sealed, registration, None).await??)
    }

    /// Sequences `sealed` as [`Gateway::sequence_now`] does, or, with `moves`, as the evidence that moves a
    /// transfer on, with that move in the same transaction
    /// ([`custodia_catalog::Catalog::sequence_moving_transfer`]). The catalog's refusal is returned inside `Ok`.
    async fn sequence_sealed(
        &self,
        sealed: &Sealed,
        registration: Option<Registration>,
        moves: Option<TransferMove>,
    ) -> Result<custodia_catalog::Result<u64>> {
        let Sealed { record, openings } = sealed;
        record.check_openings(openings).map_err(|err| GatewayError::internal("sequencing a custody record", err))?;
        let case = openings.text("case").ok_or_else(|| GatewayError::internal_message("a record without its case"))?;
        let openings =
            String::from_utf8(openings.to_canonical()).map_err(|err| GatewayError::internal("openings", err))?;
        let artefact = record.event.artefact().map(ArtefactId::as_str);
        let entry_for = |prior| {
            let entry = CustodyRecord { prior, ..record.clone() }.to_entry()?;
            let sha256 = Sha256::of(&entry).to_hex();
            Ok::<_, custodia_core::RecordError>((entry, sha256))
        };
        let fence = self.fence.as_deref();
        let sequenced = match (registration, moves) {
            (Some(registration), _) => {
                self.catalog.sequence_registration(&openings, fence, registration, entry_for).await
            }
            // A transfer's evidence is never a hearing room's record, so it carries no fence.
            (None, Some(moves)) => {
                self.catalog.sequence_moving_transfer(case, artefact, &openings, moves, entry_for).await
            }
            (None, None) => self.catalog.sequence_custody(case, artefact, &openings, fence, entry_for).await,
        };
        match sequenced {
            Ok(made) => {
                let index = made.map_err(|err| GatewayError::internal("sequencing a custody record", err))?.index;
                // Sequenced, the record is durable and this process's append ([`Log::appended_here`]).
                self.log.count_appended_here(1);
                Ok(Ok(index))
            }
            Err(refused) => Ok(Err(refused)),
        }
    }

    /// Indexes one ledger record, first restoring the catalog row of an artefact whose registration it is, if the
    /// catalog lacks it.
    async fn index_entry(&self, index: u64, record: &CustodyRecord, case: &str, entry: &[u8]) -> Result<()> {
        if let CustodyEvent::ArtefactRegistered { artefact, .. } = &record.event
            && self.catalog.artefact(artefact.as_str()).await?.is_none()
        {
            self.restore_artefact_row(record, index).await?;
        }
        let artefact = record.event.artefact().map(ArtefactId::as_str);
        self.catalog.index_custody(index as i64, case, artefact, entry).await?;
        Ok(())
    }

    /// The case a ledger entry is about: its case reference is a commitment under a salt of its own, opened by the
    /// openings the catalog keeps under the entry's SHA-256 (written before the entry was appended).
    pub async fn case_of(&self, entry: &[u8]) -> Result<CaseId> {
        let openings = self.openings_of(entry).await?;
        let case = openings.text("case").ok_or_else(|| GatewayError::internal_message("a record without its case"))?;
        CaseId::new(case).map_err(|err| GatewayError::internal("the opened case", err))
    }

    /// A custody record about `case`, with its case reference and purpose committed and the event's own
    /// commitments made by `event`. Every commitment, the case reference included, is under a fresh salt, so no two
    /// records share a case reference: an observer of the log can neither find a case's records nor count them.
    ///
    /// `at` is a time of this gateway's clock; the record is dated by the database's (shifted by their measured
    /// difference; no shift on SQLite, whose one gateway dates everything), so that the records gateways on one
    /// database write about one artefact are dated in the order they were made, whatever their clocks say.
    pub async fn seal(
        &self,
        case: &CaseId,
        actor: ActorId,
        at: Timestamp,
        purpose: &str,
        event: impl FnOnce(&mut Committer) -> CustodyEvent,
    ) -> Result<Sealed> {
        let mut committer = Committer::default();
        let case_ref = committer.commit("case", case.as_str());
        let purpose = committer.commit("purpose", purpose);
        let event = event(&mut committer);
        let shift = jiff::SignedDuration::from_millis(self.catalog.on_database_clock(0).await);
        let at = at.checked_add(shift).unwrap_or(at);
        Ok(Sealed { record: CustodyRecord::new(case_ref, actor, at, purpose, event), openings: committer.openings })
    }

    async fn custody_record(
        &self,
        caller: &Principal,
        case: &CaseId,
        purpose: &str,
        event: impl FnOnce(&mut Committer) -> CustodyEvent,
    ) -> Result<Sealed> {
        self.seal(case, caller.actor(), self.now(), purpose, event).await
    }

    /// One of the caller's custody records a minute ([`crate::budget::Quotas::custody_records`]), taken before the
    /// step it records happens: past the budget, the step is refused and nothing happens. Evidence entering
    /// custody (an upload, a hearing's output, and the policy attached at ingest) is never refused its record: the
    /// upload budget bounds it.
    pub async fn take_recorded_step(&self, caller: &Principal) -> Result<()> {
        self.take_recorded_steps(caller, 1).await
    }

    /// Whether the caller's budget of custody records has `records` left, without taking them.
    async fn has_recorded_steps(&self, caller: &Principal, records: u64) -> Result<()> {
        self.quotas.custody_records.check_many(caller.account_id(), records).await.map_err(too_many_steps)
    }

    /// [`Self::take_recorded_step`] for a step that makes `records` records at once (a case export: one for each
    /// artefact and one for the export); at most the budget's whole burst.
    pub async fn take_recorded_steps(&self, caller: &Principal, records: u64) -> Result<()> {
        self.quotas.custody_records.take_many(caller.account_id(), records).await.map_err(too_many_steps)
    }

    /// The openings kept for a ledger entry.
    pub async fn openings_of(&self, entry: &[u8]) -> Result<Openings> {
        let text = self.catalog.openings(&Sha256::of(entry).to_hex()).await?;
        let text = text.ok_or_else(|| GatewayError::internal_message("a custody record's openings are missing"))?;
        Openings::from_canonical(text.as_bytes()).map_err(|err| GatewayError::internal("stored openings", err))
    }

    /// Brings the catalog up to date with the ledger: indexes every ledger record the custody index lacks (a log
    /// adopted from a catalog that predates its coordination, whose index was written after the append), and
    /// restores the catalog row of any artefact whose registration is on the record but that the case does not
    /// list (a gateway stopped between the two), from its write-once signed manifest. Returns how many records it
    /// indexed or restored.
    pub async fn reindex(&self) -> Result<u64> {
        let size = self.log.checkpoint().checkpoint.size;
        let from = self.catalog.custody_indexed_up_to().await? as u64;
        let indexed: std::collections::BTreeSet<u64> = self
            .catalog
            .custody_indexed_between(from as i64, size as i64)
            .await?
            .into_iter()
            .map(|index| index as u64)
            .collect();
        let mut caught_up = 0;
        for index in (from..size).filter(|index| !indexed.contains(index)) {
            let entry = self.log.storage().entry(index, size).await?;
            // The log's own timestamps (the server's timestamping) and the partners it pinned
            // (Gateway::pin_partner_registry) belong to no case: each kind on its shelf.
            let shelf = if custodia_timestamp::CheckpointTimestamp::from_entry(&entry).is_ok() {
                Some(LogShelf::Timestamps)
            } else if custodia_partners::pinned::PartnersPinned::from_entry(&entry).is_ok() {
                Some(LogShelf::PartnerRegistryPins)
            } else {
                None
            };
            if let Some(shelf) = shelf {
                self.catalog.index_custody(index as i64, shelf.case_id(), None, &entry).await?;
                caught_up += 1;
                continue;
            }
            let record = CustodyRecord::from_entry(&entry)
                .map_err(|err| GatewayError::internal(format!("ledger entry {index}"), err))?;
            let case = self.case_of(&entry).await.map_err(|err| {
                GatewayError::internal(format!("ledger entry {index}: its case reference is not opened"), err)
            })?;
            self.index_entry(index, &record, case.as_str(), &entry).await?;
            caught_up += 1;
        }
        // Registrations sequenced by a gateway that stopped before the case listed their artefact.
        for (index, entry) in self.catalog.records_about_unlisted_artefacts().await? {
            let record = CustodyRecord::from_entry(&entry)
                .map_err(|err| GatewayError::internal(format!("ledger entry {index}"), err))?;
            if matches!(record.event, CustodyEvent::ArtefactRegistered { .. }) {
                self.restore_artefact_row(&record, index as u64).await?;
                caught_up += 1;
            }
        }
        Ok(caught_up)
    }

    async fn restore_artefact_row(&self, record: &CustodyRecord, index: u64) -> Result<()> {
        let CustodyEvent::ArtefactRegistered { artefact, manifest_signature, .. } = &record.event else {
            return Ok(());
        };
        let bytes = self
            .manifests
            .get(&manifest_path(artefact))
            .await
            .map_err(|err| GatewayError::internal(format!("manifest of {artefact}"), err))?
            .bytes()
            .await
            .map_err(|err| GatewayError::internal("restore artefact row", err))?;
        let signed = SignedManifest::verify(&bytes, *manifest_signature, &self.signing_key.verifying_key())
            .map_err(|err| GatewayError::internal(format!("manifest of {artefact}"), err))?;
        let manifest = signed.manifest();
        // The policy it was registered with, if one was attached (kept before the record).
        let policy = match self.manifests.get(&attached_policy_path(artefact)).await {
            Ok(got) => {
                let bytes = got.bytes().await.map_err(|err| GatewayError::internal("restore artefact row", err))?;
                Some(
                    String::from_utf8(bytes.to_vec())
                        .map_err(|err| GatewayError::internal("restore artefact row", err))?,
                )
            }
            Err(object_store::Error::NotFound { .. }) => None,
            Err(err) => return Err(GatewayError::internal(format!("attached policy of {artefact}"), err)),
        };
        let listed = self
            .catalog
            .insert_artefact(&ArtefactRow {
                id: artefact.to_string(),
                case_id: manifest.case.to_string(),
                sha256: manifest.sha256.to_hex(),
                size: manifest.size as i64,
                media_type: manifest.media_type.to_string(),
                manifest: bytes.to_vec(),
                manifest_signature: signed.signature().to_string(),
                ledger_index: index as i64,
                provider_account: manifest.registered_by.to_string(),
                policy,
                created_at: manifest.registered_at.to_string(),
            })
            .await;
        if self.listed_now(listed, artefact, index).await? {
            tracing::warn!(artefact = %artefact, "restored an artefact's catalog row from the ledger");
        }
        Ok(())
    }

    /// What an insert of `artefact`'s catalog row for its registration at `ledger_index` came to: `true` if it was
    /// listed now, `false` if it already was, for that registration (the gateway that sequenced it listed it, or
    /// another one starting up restored it, meanwhile). Any other failure is the caller's.
    async fn listed_now(
        &self,
        insert: std::result::Result<(), custodia_catalog::CatalogError>,
        artefact: &ArtefactId,
        ledger_index: u64,
    ) -> Result<bool> {
        match insert {
            Ok(()) => Ok(true),
            Err(custodia_catalog::CatalogError::Conflict { .. })
                if self
                    .catalog
                    .artefact(artefact.as_str())
                    .await?
                    .is_some_and(|row| row.ledger_index == ledger_index as i64) =>
            {
                Ok(false)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// The caller's role in `case`, if the role permits `action`. A non-member learns nothing about the case: it
    /// is "not found" whether or not it exists, and the probe goes to the operator's log, not to the public ledger,
    /// whose growth would otherwise tell who probes which cases exist. A member's refusal is a custody record.
    pub async fn authorize(&self, caller: &Principal, case: &CaseId, action: Action) -> Result<Role> {
        self.authorize_about(caller, case, None, action).await
    }

    async fn authorize_about(
        &self,
        caller: &Principal,
        case: &CaseId,
        artefact: Option<&ArtefactId>,
        action: Action,
    ) -> Result<Role> {
        let role = self.catalog.member_role(case.as_str(), caller.account_id()).await?;
        let Some(role) = role else {
            // A case that exists is named; one that does not is whatever the caller typed (a name, perhaps), so the
            // log says only that it is no case.
            if self.catalog.case(case.as_str()).await?.is_some() {
                tracing::info!(case = %case, actor = %caller.account_id(), action = ?action, "refused a non-member");
            } else {
                tracing::info!(actor = %caller.account_id(), action = ?action, "refused a probe of no case");
            }
            return Err(GatewayError::NotFound(format!("no case {case} of which you are a member")));
        };
        let role: Role = role.parse().map_err(|err| GatewayError::internal("stored role", err))?;
        let (refusal, code) = match caller.require_scope(action) {
            Err(err) => (err, RefusalCode::MissingScope),
            Ok(()) if custodia_core::permits(role, action) => return Ok(role),
            Ok(()) => (GatewayError::RoleForbids { role, action: action_words(action) }, RefusalCode::RoleForbids),
        };
        Err(self.record_refusal(caller, case, artefact, action, code).await.unwrap_or(refusal))
    }

    /// Records that an attempt was refused, as a code: never the caller's role (with the account id it would say
    /// who the witness is), never the policy's terms. Identical refusals (same actor, action, artefact and code)
    /// within a window are one record with a count ([`crate::refusals`]). Recording must not turn a refusal into
    /// a server error, so a failure to record is logged and the refusal still stands.
    ///
    /// Each account may cause [`crate::budget::Quotas::refusal_records`] refusal records a minute. Past that, a
    /// refusal that would be recorded is counted into one record per (case, actor, code) a minute instead, and
    /// the answer is this 429 (returned), so that no member can flood the public log by varying what they try.
    async fn record_refusal(
        &self,
        caller: &Principal,
        case: &CaseId,
        artefact: Option<&ArtefactId>,
        action: Action,
        code: RefusalCode,
    ) -> Option<GatewayError> {
        let refusal = crate::refusals::Refusal::Access {
            case: case.clone(),
            actor: caller.actor(),
            artefact: artefact.cloned(),
            action,
            code,
        };
        tracing::info!(case = %case, actor = %caller.account_id(), action = ?action, "refused");
        let budget = &self.quotas.refusal_records;
        match self.refuse_within(refusal, None, Some((budget, caller.account_id()))).await {
            Ok((_, over_budget)) => over_budget,
            Err(err) => {
                tracing::error!(error = %crate::error::Chain(&err), "could not record a refusal");
                None
            }
        }
    }

    /// Records a hearing step the rules refused ([`crate::refusals::Refusal::Step`]), whose canonical detail
    /// document has the SHA-256 `detail_sha256`, within its actor's budget of refusal records (a participant's
    /// own, an account's shared with its other refusals): a repeat of the same action within the window is only
    /// counted, and past the budget the refusal is counted into the actor's flood window for the hearing. Returns
    /// whether a record was written now (the hearing's journal then keeps the detail), and the 429 to answer
    /// past the budget.
    pub async fn refuse_step(
        &self,
        refusal: crate::refusals::Refusal,
        detail_sha256: Sha256,
    ) -> Result<(bool, Option<GatewayError>)> {
        let crate::refusals::Refusal::Step { actor, .. } = &refusal else {
            return Err(GatewayError::internal_message("refuse_step takes a refused hearing step"));
        };
        let actor = actor.as_str().to_owned();
        self.refuse_within(refusal, Some(detail_sha256), Some((&self.quotas.refusal_records, &actor))).await
    }

    /// Records a refusal now, unless an identical one was recorded within the window; then it is only counted.
    /// Within `budget`'s allowance for `account`: a refusal that would be recorded past it is counted into its
    /// flood window instead ([`crate::refusals::Refusals::divert`]), and the 429 to answer is returned. A step's
    /// record carries `detail`, the digest of what was refused; a count's record carries a summary of its own.
    async fn refuse_within(
        &self,
        refusal: crate::refusals::Refusal,
        detail: Option<Sha256>,
        budget: Option<(&crate::budget::Budget, &str)>,
    ) -> Result<(bool, Option<GatewayError>)> {
        let now = self.now();
        let (record_now, overdue) = self.refusals.note(&refusal, now);
        if let Some((refusal, repeated)) = overdue {
            self.record_refusal_count(&refusal, now, repeated).await?;
        }
        if !record_now {
            return Ok((false, None));
        }
        if let Some((budget, account)) = budget
            && let Err(wait) = budget.take(account).await
        {
            self.refusals.divert(&refusal, now);
            let what = match refusal {
                crate::refusals::Refusal::Step { .. } => REFUSED_STEPS,
                _ => "refused requests",
            };
            let retry_after_seconds = crate::budget::retry_after_seconds(wait);
            return Ok((false, Some(GatewayError::TooManyAttempts { what, retry_after_seconds })));
        }
        self.record_refusal_record(&refusal, now, None, detail).await?;
        Ok((true, None))
    }

    /// Writes every count whose window has closed. Every other record calls it first, so a count is written at
    /// the gateway's next activity after its window closes.
    pub async fn flush_refusals(&self) -> Result<usize> {
        let now = self.now();
        let due = self.refusals.take_due(now);
        for (refusal, repeated) in &due {
            self.record_refusal_count(refusal, now, *repeated).await?;
        }
        Ok(due.len())
    }

    /// Records the count of a closed window within its actor's budget of refusal records, like any refusal record;
    /// past it, the count joins the actor's flood window, recorded (with every count it took) when that window
    /// closes. So an actor trying many different refused things adds at most their budget of records a minute,
    /// first refusals and counts together, and one record for each flood window.
    async fn record_refusal_count(
        &self,
        refusal: &crate::refusals::Refusal,
        now: Timestamp,
        repeated: Repeated,
    ) -> Result<()> {
        // Every route that can record a refusal documents its 429 (openapi.json), which a count taken from the
        // budget makes a later first refusal answer sooner.
        if let Some(actor) = refusal.budgeted_actor()
            && self.quotas.refusal_records.take(actor.as_str()).await.is_err()
            && self.refusals.fold(refusal, repeated, now)
        {
            return Ok(());
        }
        self.record_refusal_record(refusal, now, Some(repeated), None).await?;
        Ok(())
    }

    async fn record_refusal_record(
        &self,
        refusal: &crate::refusals::Refusal,
        at: Timestamp,
        repeated: Option<Repeated>,
        detail: Option<Sha256>,
    ) -> Result<u64> {
        use crate::refusals::Refusal;
        let mut sealed = match refusal {
            Refusal::Access { case, actor, artefact, action, code } => {
                self.seal(case, actor.clone(), at, "refused", |committer| CustodyEvent::AccessRefused {
                    artefact: artefact.clone(),
                    action: committer.commit("action", action.as_str()),
                    code: *code,
                })
                .await?
            }
            Refusal::Flood { case, actor, code, actions } => {
                let actions = actions.iter().map(|action| action.as_str()).collect::<Vec<_>>().join(", ");
                self.seal(case, actor.clone(), at, "refused", |committer| CustodyEvent::AccessRefused {
                    artefact: None,
                    action: committer.commit("action", actions),
                    code: *code,
                })
                .await?
            }
            // The first refusal of a window carries its own detail (kept in the hearing's journal); a count stands
            // for refusals whose words differed, and carries what they share: the actions tried.
            Refusal::Step { case, hearing, actor, action } => {
                let digest = match detail {
                    Some(digest) => digest,
                    None => Sha256::of(&refused_steps_detail(hearing, [*action])?),
                };
                self.seal_step_refused(case, hearing, actor, at, digest).await?
            }
            Refusal::StepFlood { case, hearing, actor, actions } => {
                let digest = Sha256::of(&refused_steps_detail(hearing, actions.iter().copied())?);
                self.seal_step_refused(case, hearing, actor, at, digest).await?
            }
        };
        sealed.record.repeated = repeated;
        let index = self.sequence_now(&sealed, None).await?;
        self.settle(index).await?;
        Ok(index)
    }

    /// A `step_refused` hearing record whose detail document has the SHA-256 `detail_sha256` (committed).
    async fn seal_step_refused(
        &self,
        case: &CaseId,
        hearing: &custodia_core::HearingId,
        actor: &ActorId,
        at: Timestamp,
        detail_sha256: Sha256,
    ) -> Result<Sealed> {
        self.seal(case, actor.clone(), at, HEARING_PURPOSE, |committer| CustodyEvent::HearingEvent {
            hearing: hearing.clone(),
            kind: custodia_hearing::HearingEventKind::StepRefused.label(),
            subject: None,
            detail: Some(committer.commit("detail", detail_sha256.to_hex())),
        })
        .await
    }

    /// A hearing's custody record: its subject and its detail digest, if any, each committed under a fresh salt.
    /// In clear, the subject of an oath would say which participant is the witness, and a detail document made of
    /// public ids and a closed list of words could be confirmed by guessing.
    pub async fn record_hearing(
        &self,
        case: &CaseId,
        hearing: &custodia_core::HearingId,
        record: &custodia_hearing::HearingEventRecord,
    ) -> Result<u64> {
        let mut sealed = self
            .seal(case, record.actor.clone(), record.at, HEARING_PURPOSE, |committer| {
                record.to_custody_event(hearing, |field, text| committer.commit(field, text))
            })
            .await?;
        // A count of presence changes past the participant's budget says how many it stands for.
        sealed.record.repeated = record.repeated;
        self.record(&sealed).await
    }

    /// An artefact of a case the caller may act on with `action`.
    pub async fn authorize_artefact(
        &self,
        caller: &Principal,
        id: &ArtefactId,
        action: Action,
    ) -> Result<(ArtefactRow, Role)> {
        let not_found = || GatewayError::NotFound(format!("no artefact {id} in a case of which you are a member"));
        let row = self.catalog.artefact(id.as_str()).await?.ok_or_else(not_found)?;
        let case = CaseId::new(row.case_id.clone()).map_err(|err| GatewayError::internal("authorize artefact", err))?;
        match self.authorize_about(caller, &case, Some(id), action).await {
            Err(GatewayError::NotFound(_)) => Err(not_found()),
            other => other.map(|role| (row, role)),
        }
    }

    /// Applies the providing authority's use policy, recording a refusal.
    async fn check_use(
        &self,
        caller: &Principal,
        row: &ArtefactRow,
        action: UseAction,
        purpose: &Label,
    ) -> Result<Vec<String>> {
        self.check_use_by(caller, row, action, purpose, caller.actor(), caller.jurisdiction()).await
    }

    /// [`Self::check_use`] of a use whose recipient is not the caller (a transfer to a partner gateway).
    async fn check_use_by(
        &self,
        caller: &Principal,
        row: &ArtefactRow,
        action: UseAction,
        purpose: &Label,
        recipient: ActorId,
        recipient_jurisdiction: Label,
    ) -> Result<Vec<String>> {
        let Some(policy) = &row.policy else { return Ok(Vec::new()) };
        let policy: UsePolicy =
            serde_json::from_str(policy).map_err(|err| GatewayError::internal("stored policy", err))?;
        let request =
            UseRequest { action, purpose: purpose.clone(), recipient, recipient_jurisdiction, at: self.now() };
        match custodia_core::decide(&policy, &request) {
            UseDecision::Permit { warnings } => Ok(warnings.iter().map(ToString::to_string).collect()),
            UseDecision::Deny(reason) => {
                let err = GatewayError::UseRestricted(reason.to_string());
                let (case, artefact) = ids(row)?;
                let kind = match action {
                    UseAction::View => Action::ViewArtefact,
                    UseAction::Download => Action::DownloadArtefact,
                    UseAction::Export => Action::ExportArtefact,
                    UseAction::Transfer => Action::TransferArtefact,
                };
                let over_budget =
                    self.record_refusal(caller, &case, Some(&artefact), kind, RefusalCode::from(&reason)).await;
                Err(over_budget.unwrap_or(err))
            }
        }
    }

    // Ingest.

    /// Takes an artefact into custody: streams and hashes it into write-once storage, probes it, signs its
    /// manifest, stores the manifest write-once, appends the registration to the ledger, and only then lists it
    /// in the catalog. A failure at any step leaves nothing that looks like evidence.
    pub async fn ingest<S, E>(
        &self,
        caller: &Principal,
        case: &CaseId,
        request: UploadRequest,
        body: S,
    ) -> Result<Registered>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BodyError>,
    {
        self.authorize_ingest(caller, case, &request).await?;
        self.register_as(caller, case, Arrival::Direct, request, self.max_upload_bytes, body).await
    }

    /// Whether `caller` may put `request`'s artefact into `case`: upload there, and set a policy if it attaches one
    /// (attaching a policy is setting one: the same role rule as setting one later).
    async fn authorize_ingest(&self, caller: &Principal, case: &CaseId, request: &UploadRequest) -> Result<()> {
        self.authorize(caller, case, Action::UploadArtefact).await?;
        if request.policy.is_some() {
            self.authorize(caller, case, Action::SetPolicy).await?;
        }
        Ok(())
    }

    /// [`Gateway::ingest`] of the bytes of a resumable upload whose completion this request has claimed
    /// (`completion`): the registration is sequenced only while the claim still holds, and removes the upload in
    /// its own transaction, so the upload is registered once, whichever gateway finishes it; a claim taken over
    /// meanwhile registers nothing ([`GatewayError::CompletionTakenOver`]).
    pub async fn ingest_upload<S, E>(
        &self,
        caller: &Principal,
        case: &CaseId,
        request: UploadRequest,
        body: S,
        completion: &UploadCompletion,
    ) -> Result<Registered>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BodyError>,
    {
        self.authorize_ingest(caller, case, &request).await?;
        self.register_as(caller, case, Arrival::Resumable(completion), request, self.max_upload_bytes, body).await
    }

    /// A direct upload: [`Gateway::ingest`] within the account's quotas ([`crate::budget::Quotas`]). A new upload
    /// takes one from the account's rate (429 past it); at most a few run at once per account, on all gateways
    /// together (429); and the account's stored bytes, with what its open and unfinished uploads hold, stay within
    /// its quota: a declared length (`Content-Length`) is held from the start, and one over what is left is
    /// refused (507) before a byte is staged; an undeclared length holds its bytes as they arrive, and a body that
    /// passes what is left is cut off and deleted (507). Every check takes the account's quota turn with the
    /// holding it allows, and the holding is in the catalog ([`crate::budget::DirectUpload`]), so uploads at once,
    /// direct or resumable, on any gateways, never hold more than the quota between them.
    pub async fn upload<S, E>(
        &self,
        caller: &Principal,
        case: &CaseId,
        request: UploadRequest,
        declared: Option<u64>,
        body: S,
    ) -> Result<Registered>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BodyError>,
    {
        self.authorize_ingest(caller, case, &request).await?;
        let account = caller.account_id();
        self.take_upload_allowance(account).await?;
        if let Some(declared) = declared
            && declared > self.max_upload_bytes
        {
            return Err(StoreError::TooLarge { limit: self.max_upload_bytes }.into());
        }
        let quotas = &self.quotas;
        let under_way = {
            let turn = self.quota_turn(account).await?;
            let now = self.clock.now().as_millisecond();
            let direct = self.catalog.direct_holdings_of(account, now).await?;
            if usize::try_from(direct.uploads).unwrap_or(usize::MAX) >= quotas.direct_uploads_at_once {
                return Err(GatewayError::TooMany(format!(
                    "you have {} direct uploads under way; wait for one to end, or upload resumably (tus)",
                    quotas.direct_uploads_at_once
                )));
            }
            let left = self.quota_left(account).await?;
            let declared = declared.unwrap_or(0);
            if declared > left {
                return Err(self.quota_exceeded(left));
            }
            let start =
                crate::budget::DirectUpload::start(&self.catalog, &self.clock, quotas, account, declared, &turn);
            Arc::new(start.await?)
        };
        // Held until the artefact is in the catalog (or refused), so its bytes are never counted nowhere.
        let held = under_way.clone();
        let exceeded = Arc::new(std::sync::Mutex::new(None));
        let passed = exceeded.clone();
        // Why a holding could not be taken (the database away, say): the upload then fails for that reason, a
        // retryable one perhaps, not as a body the client cut off.
        let hold_failed = Arc::new(std::sync::Mutex::new(None));
        let failed = hold_failed.clone();
        let account = account.to_owned();
        let gateway = self.clone();
        let body = futures::stream::unfold((Box::pin(body), 0u64), move |(mut body, received)| {
            let (gateway, account, held, passed, failed) =
                (gateway.clone(), account.clone(), held.clone(), passed.clone(), failed.clone());
            async move {
                let chunk = futures::StreamExt::next(&mut body).await?.map_err(Into::<BodyError>::into);
                let (chunk, received) = match chunk {
                    Err(err) => (Err(err), received),
                    Ok(bytes) => {
                        let received = received.saturating_add(bytes.len() as u64);
                        match gateway.hold_for_upload(&account, &held, received).await {
                            Ok(None) => (Ok(bytes), received),
                            Ok(Some(left)) => {
                                *passed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(left);
                                (Err("the body passed the account's storage quota".into()), received)
                            }
                            Err(err) => {
                                // The upload fails with `err` itself (below), not as a body cut off.
                                *failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(err);
                                (Err("the upload's holding of its quota failed".into()), received)
                            }
                        }
                    }
                };
                Some((chunk, (body, received)))
            }
        });
        let arrival = Arrival::Held(under_way.id());
        let registered = self.register_as(caller, case, arrival, request, self.max_upload_bytes, body).await;
        under_way.release().await;
        let passed = *exceeded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let hold_failed = hold_failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        match (registered, passed, hold_failed) {
            (Err(_), Some(left), _) => Err(self.quota_exceeded(left)),
            (Err(_), None, Some(failed)) => Err(failed),
            (registered, ..) => registered,
        }
    }

    /// Makes a direct upload of `account` hold at least `needed` bytes of its quota, holding a little ahead so that
    /// a growing body takes the quota turn and writes the catalog now and then, not at every chunk. `Some(left)`
    /// (what the upload could have held in all) when the quota has not that much left. Fails, retryably, when the
    /// upload's holding lapsed (renewed too late: it may have gone uncounted meanwhile).
    async fn hold_for_upload(
        &self,
        account: &str,
        upload: &crate::budget::DirectUpload,
        needed: u64,
    ) -> Result<Option<u64>> {
        if upload.lapsed() {
            return Err(upload.lapsed_error());
        }
        if upload.held() >= needed {
            return Ok(None);
        }
        let turn = self.quota_turn(account).await?;
        let (held_now, left) = (upload.held(), self.quota_left(account).await?);
        let want = needed - held_now;
        if want > left {
            return Ok(Some(held_now.saturating_add(left)));
        }
        // Never more than a quarter of what is left ahead, so that near the quota other uploads still find room.
        let ahead = (held_now / 4).clamp(HOLD_AHEAD_MIN, HOLD_AHEAD_MAX).min(left / 4);
        let more = want.max(ahead).min(left);
        upload.hold(&turn, more).await?;
        Ok(None)
    }

    /// The turn of `account`'s storage quota: taken by every check of what is left with the holding it allows (a
    /// direct upload's declared or growing bytes, a resumable upload's creation), so that uploads at once cannot
    /// each find room that only one of them has: in every gateway on the catalog ([`Catalog::take_turn`]).
    pub async fn quota_turn(&self, account: &str) -> Result<Turn> {
        self.turn(TurnKind::Quota, &format!("quota of {account}")).await
    }

    /// The bytes left of `account`'s quota: the quota less its artefacts, the lengths its open resumable uploads
    /// declare, and what its direct uploads under way hold on every gateway.
    pub async fn quota_left(&self, account: &str) -> Result<u64> {
        Ok(self.quotas.stored_bytes.saturating_sub(self.bytes_held_for(account).await?))
    }

    /// Takes one new upload from `account`'s rate.
    pub async fn take_upload_allowance(&self, account: &str) -> Result<()> {
        self.quotas.uploads.take(account).await.map_err(|wait| GatewayError::TooManyAttempts {
            what: "new uploads",
            retry_after_seconds: crate::budget::retry_after_seconds(wait),
        })
    }

    /// The bytes counted against `account`'s quota: the artefacts it provided, the lengths its open resumable
    /// uploads declare, and what its direct uploads under way hold on every gateway (their holdings not expired).
    pub async fn bytes_held_for(&self, account: &str) -> Result<u64> {
        let stored = self.catalog.stored_bytes_of(account).await?;
        let (_, reserved) = self.catalog.open_uploads_of(account, self.clock.unix_seconds()).await?;
        let direct = self.catalog.direct_holdings_of(account, self.clock.now().as_millisecond()).await?;
        let bytes = [stored, reserved, direct.bytes].map(|bytes| u64::try_from(bytes).unwrap_or(0));
        Ok(bytes.into_iter().fold(0, u64::saturating_add))
    }

    /// The refusal of an upload that would take an account past its quota, with `left` bytes left.
    pub fn quota_exceeded(&self, left: u64) -> GatewayError {
        GatewayError::QuotaExceeded(format!(
            "this upload would pass your storage quota of {} bytes ({left} bytes left, counting your open and \
             unfinished uploads); nothing of it was kept",
            self.quotas.stored_bytes
        ))
    }

    /// Takes a hearing's output (a recording segment, the minutes) into custody in the name of the court account
    /// bound to the hearing when it was scheduled. The scheduling was authorised to ingest then
    /// (the server's `hearings::Hearings::schedule`); the output of a hearing under way does not depend on that
    /// person's membership or token now. It is the court's own record, so it is counted for the case and the
    /// hearing, reported in the operator's log, and never against that person's storage quota nor refused for
    /// quota: a long hearing neither fills the clerk's quota nor loses a segment to it.
    pub async fn ingest_hearing_output<S, E>(
        &self,
        court: &Principal,
        case: &CaseId,
        hearing: &custodia_core::HearingId,
        request: UploadRequest,
        body: S,
    ) -> Result<Registered>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BodyError>,
    {
        // A policy here is the court's own: a protected witness's original recording restricted to those the
        // protective order privileges (the server's `hearings`). It is attached before the artefact is listed, as any
        // policy at ingest.
        let registered =
            self.register_as(court, case, Arrival::Hearing(hearing), request, self.max_upload_bytes, body).await?;
        match self.catalog.hearing_output_bytes(case.as_str()).await {
            Ok(bytes) => {
                tracing::info!(case = %case, hearing = %hearing, case_hearing_bytes = bytes, "hearing output counted for its case")
            }
            Err(err) => {
                tracing::warn!(case = %case, error = %crate::error::Chain(&err), "could not sum the case's hearing output")
            }
        }
        Ok(registered)
    }

    /// Stores `body` and registers it in `case`, as what `arrival` says it is.
    async fn register_as<S, E>(
        &self,
        caller: &Principal,
        case: &CaseId,
        arrival: Arrival<'_>,
        request: UploadRequest,
        max_size: u64,
        body: S,
    ) -> Result<Registered>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<BodyError>,
    {
        let options = IngestOptions { expected_sha256: request.expected_sha256, max_size: Some(max_size) };
        // What a probe will read first is kept as it streams into a remote store, so that it need not be fetched
        // back (a local store's file is probed where it lies).
        let seen = match &self.prober {
            Some(prober) if !self.artefacts.is_local() => {
                prober.watch_upload().map(std::sync::Mutex::new).map(Arc::new)
            }
            _ => None,
        };
        let watching = seen.clone();
        let body = futures::StreamExt::inspect(custodia_store::regrouped(body), move |chunk| {
            if let (Some(seen), Ok(chunk)) = (&watching, chunk) {
                seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).observe(chunk);
            }
        });
        let stored = match self.artefacts.ingest(body, options).await {
            Ok(stored) => stored,
            Err(err) => {
                tracing::info!(case = %case, error = %crate::error::Chain(&err), "upload refused");
                return Err(err.into());
            }
        };
        let seen =
            seen.map(|seen| std::mem::take(&mut *seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner)));
        self.register_stored(caller, case, arrival, request, (stored, seen), new_artefact_id()).await
    }

    /// [`Gateway::register_as`] from the point where the artefact's bytes are durable at their content address.
    async fn register_stored(
        &self,
        caller: &Principal,
        case: &CaseId,
        arrival: Arrival<'_>,
        request: UploadRequest,
        (stored, seen): (custodia_store::StoredArtefact, Option<Seen>),
        artefact: ArtefactId,
    ) -> Result<Registered> {
        let mut manifest = Manifest::new(
            artefact.clone(),
            case.clone(),
            fresh_salt(),
            stored.sha256,
            stored.size,
            request.media_type.clone(),
            self.now(),
            caller.actor(),
        );
        manifest.original_name = request.original_name.clone();
        manifest.media = Some(self.probe(&stored.sha256, stored.size, seen).await);
        let signed = manifest.sign(&self.signing_key).map_err(|err| GatewayError::internal("register stored", err))?;
        self.put_once(&manifest_path(&artefact), signed.bytes(), "manifest").await?;
        let policy = request
            .policy
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|err| GatewayError::internal("register stored", err))?;
        if let Some(policy) = &policy {
            self.put_once(&attached_policy_path(&artefact), policy.as_bytes(), "attached policy").await?;
        }
        let event = CustodyEvent::ArtefactRegistered {
            artefact: artefact.clone(),
            manifest_sha256: signed.sha256(),
            manifest_signature: signed.signature(),
        };
        let sealed = self.custody_record(caller, case, request.purpose.as_str(), |_| event).await?;
        let registration = Registration {
            artefact: ArtefactRow {
                id: artefact.to_string(),
                case_id: case.to_string(),
                sha256: stored.sha256.to_hex(),
                size: stored.size as i64,
                media_type: request.media_type.to_string(),
                manifest: signed.bytes().to_vec(),
                manifest_signature: signed.signature().to_string(),
                // The record's, once it is sequenced.
                ledger_index: 0,
                provider_account: caller.account_id().to_owned(),
                policy,
                created_at: manifest.registered_at.to_string(),
            },
            hearing: match arrival {
                Arrival::Hearing(hearing) => Some(hearing.to_string()),
                Arrival::Direct | Arrival::Held(_) | Arrival::Resumable(_) => None,
            },
            consumes: match arrival {
                Arrival::Resumable(completion) => Some(completion.clone()),
                Arrival::Direct | Arrival::Held(_) | Arrival::Hearing(_) => None,
            },
            holding: match arrival {
                Arrival::Held(holding) => Some(holding.to_owned()),
                Arrival::Direct | Arrival::Resumable(_) | Arrival::Hearing(_) => None,
            },
        };
        // From the moment the case lists it to its policy's record: a case export that lists it waits for the
        // policy's record, so the artefact's bundle holds the policy its export was checked against.
        let turn = self.policy_turn(&artefact).await?;
        let this = self.within(&turn);
        // Sequenced, the registration is durable, and the case lists the artefact in the same transaction; the
        // upload is answered once the log's checkpoint covers the record.
        this.flush_refusals().await?;
        let ledger_index = this.sequence_now(&sealed, Some(registration)).await?;
        this.settle(ledger_index).await?;
        if let Some(policy) = &request.policy {
            this.record_policy(caller, case, &artefact, policy, "attached at ingest").await?;
        }
        tracing::info!(case = %case, artefact = %artefact, size = stored.size, ledger_index, "artefact registered");
        this.ingested.count(stored.size);
        Ok(Registered { artefact, sha256: stored.sha256, size: stored.size, ledger_index })
    }

    /// Stores `bytes` at `path` beside the manifests, write-once.
    async fn put_once(&self, path: &StorePath, bytes: &[u8], what: &str) -> Result<()> {
        let create_only = self.artefacts.create_only();
        custodia_store::put_once(self.manifests.as_ref(), create_only, path, Bytes::copy_from_slice(bytes))
            .await
            .map_err(|err| GatewayError::storage(format!("storing the {what}"), err))?;
        Ok(())
    }

    /// Describes the stored artefact's media, of `size` bytes: from its file in a local store, else read in ranges
    /// from the remote store (never copied to disk whole).
    async fn probe(&self, sha256: &Sha256, size: u64, seen: Option<Seen>) -> serde_json::Value {
        use custodia_media::MediaProbe;
        let probe = match (&self.prober, self.artefacts.local_path(sha256)) {
            (None, _) => MediaProbe::Unprobed { reason: "no media prober is configured".into() },
            (Some(prober), Some(path)) => prober.probe(&path).await,
            (Some(prober), None) => prober.probe_stored(&self.artefacts, sha256, size, seen).await,
        };
        serde_json::to_value(probe).unwrap_or(serde_json::Value::Null)
    }

    async fn record_policy(
        &self,
        caller: &Principal,
        case: &CaseId,
        artefact: &ArtefactId,
        policy: &UsePolicy,
        change: &str,
    ) -> Result<u64> {
        let policy_sha256 = policy.sha256().map_err(|err| GatewayError::internal("record policy", err))?;
        let sealed = self
            .custody_record(caller, case, "use restrictions", |committer| CustodyEvent::PolicyChanged {
                artefact: Some(artefact.clone()),
                policy: committer.commit("policy", policy_sha256.to_hex()),
                change: committer.commit("change", change),
            })
            .await?;
        self.record(&sealed).await
    }

    /// Records that `artefact` was derived from `source` by `operation` (a masked copy for disclosure): committed
    /// like every text, on the record of the new artefact.
    pub async fn record_derivative(
        &self,
        caller: &Principal,
        case: &CaseId,
        artefact: &ArtefactId,
        source: &ArtefactId,
        operation: &str,
    ) -> Result<u64> {
        let sealed = self
            .custody_record(caller, case, "derivative", |committer| CustodyEvent::DerivativeMade {
                artefact: artefact.clone(),
                source: source.clone(),
                operation: committer.commit("operation", operation),
            })
            .await?;
        self.record(&sealed).await
    }

    // Reading.

    /// The artefact's catalog row as it is now. Read under the artefact's policy turn, its policy is the one in
    /// force until the turn is let go: a use checked against it and recorded before then can never follow, in the
    /// ledger, a policy change that forbade it.
    async fn under_policy_turn(&self, row: ArtefactRow) -> Result<ArtefactRow> {
        let gone = || GatewayError::NotFound(format!("no artefact {}", row.id));
        self.catalog.artefact(&row.id).await?.ok_or_else(gone)
    }

    /// An artefact's catalog entry and signed manifest. Viewing is a custody record.
    pub async fn view(
        &self,
        caller: &Principal,
        id: &ArtefactId,
        purpose: &Label,
    ) -> Result<(ArtefactRow, Vec<String>)> {
        let (row, _) = self.authorize_artefact(caller, id, Action::ViewArtefact).await?;
        let turn = self.policy_turn(id).await?;
        let this = self.within(&turn);
        let row = this.under_policy_turn(row).await?;
        let warnings = this.check_use(caller, &row, UseAction::View, purpose).await?;
        this.record_access(caller, &row, AccessKind::View, purpose).await?;
        Ok((row, warnings))
    }

    /// Authorises a download, lets the caller check the request against the artefact (a byte range, say), and
    /// records the access (durably) before a byte is sent. A request refused by `check` is not an access: nothing
    /// is recorded, and nobody learns anything about an artefact they may not read.
    pub async fn download<R, E: From<GatewayError>>(
        &self,
        caller: &Principal,
        id: &ArtefactId,
        purpose: &Label,
        access: AccessKind,
        check: impl FnOnce(&ArtefactRow) -> std::result::Result<R, E>,
    ) -> std::result::Result<(ArtefactRow, R), E> {
        let (row, _) = self.authorize_artefact(caller, id, Action::DownloadArtefact).await?;
        let turn = self.policy_turn(id).await?;
        let this = self.within(&turn);
        let row = this.under_policy_turn(row).await?;
        // Whatever the client says it will do with them (`access`), bytes that reach it are a copy that has left
        // the gateway: a browser can save what it plays. So the policy always decides on a download, and `access`
        // only says how the access is recorded and how the response is disposed.
        this.check_use(caller, &row, UseAction::Download, purpose).await?;
        // `check` may take a place among the streams leaving, which can close another's: only a download that will
        // be recorded takes one.
        this.has_recorded_steps(caller, 1).await?;
        let checked = check(&row)?;
        this.record_access(caller, &row, access, purpose).await?;
        Ok((row, checked))
    }

    async fn record_access(
        &self,
        caller: &Principal,
        row: &ArtefactRow,
        access: AccessKind,
        purpose: &Label,
    ) -> Result<u64> {
        let (case, artefact) = ids(row)?;
        let site = caller.site();
        self.take_recorded_step(caller).await?;
        let sealed = self
            .custody_record(caller, &case, purpose.as_str(), |committer| CustodyEvent::ArtefactAccessed {
                artefact,
                access,
                site: committer.commit("site", site.as_str()),
            })
            .await?;
        self.record(&sealed).await
    }

    /// Every custody record about an artefact, each with its offline proof.
    pub async fn timeline(&self, caller: &Principal, id: &ArtefactId) -> Result<Vec<TimelineEntry>> {
        self.authorize_artefact(caller, id, Action::ViewTimeline).await?;
        let mut entries = Vec::new();
        for (index, record) in self.catalog.artefact_timeline(id.as_str()).await? {
            let proof = self.proof(index as u64).await?;
            let openings = self.openings_of(&record).await?;
            entries.push(TimelineEntry {
                ledger_index: index as u64,
                record: serde_json::from_slice(&record).map_err(|err| GatewayError::internal("timeline", err))?,
                openings: serde_json::to_value(&openings).map_err(|err| GatewayError::internal("timeline", err))?,
                proof: String::from_utf8_lossy(&proof.to_bytes()).into_owned(),
            });
        }
        Ok(entries)
    }

    /// The offline proof of a ledger entry, once a checkpoint covers it.
    pub async fn proof(&self, index: u64) -> Result<TlogProof> {
        self.log.integrated(index).await?;
        Ok(self.log.tlog_proof(index).await?)
    }

    /// Exports an artefact as a court bundle. The export is recorded first, so the bundle carries the record of
    /// its own export, and every record's proof is against one checkpoint that covers them all.
    pub async fn export(&self, caller: &Principal, id: &ArtefactId, purpose: &Label) -> Result<BundleSource> {
        self.export_leaving(caller, id, purpose, || Ok(())).await.map(|(source, ())| source)
    }

    /// [`Self::export`], calling `leave` once the export is found permitted and before it is recorded: where the
    /// caller takes its place among the streams of evidence leaving (the server's `outflow::Outflow`), so that an
    /// export refused (by role, by policy) takes none, nor closes another's stream to make room.
    pub async fn export_leaving<T>(
        &self,
        caller: &Principal,
        id: &ArtefactId,
        purpose: &Label,
        leave: impl FnOnce() -> Result<T>,
    ) -> Result<(BundleSource, T)> {
        let (row, _) = self.authorize_artefact(caller, id, Action::ExportArtefact).await?;
        let turn = self.policy_turn(id).await?;
        let this = self.within(&turn);
        let row = this.under_policy_turn(row).await?;
        this.check_use(caller, &row, UseAction::Export, purpose).await?;
        this.has_recorded_steps(caller, 1).await?;
        let left = leave()?;
        this.take_recorded_step(caller).await?;
        let chain = this.record_export(caller, row, purpose).await?;
        drop(turn);
        let covering = chain.export_index + 1;
        let proved = this.covering_checkpoint(covering).await?;
        Ok((this.bundle_source(chain, &proved).await?, left))
    }

    /// Exports every artefact of a case, one bundle each. Every artefact's use policy is checked before any
    /// export is recorded, so a case export is refused whole, naming the artefact that forbids it.
    ///
    /// The case is exported as it stood when the export began: the artefacts then in its catalog. One that enters
    /// the case meanwhile is not in this export (the next one holds it), so steady uploads never hold an export
    /// back. Each artefact's policy turn is held only while its use is checked again, its export record appended
    /// and its chain read (`Gateway::record_export`): a use or policy change on it takes the same turn, so its record
    /// is either in the artefact's bundle or after its export record, and a download of one artefact never waits
    /// for the export of the others. The caller's membership is checked again with each export record, so that
    /// none is written for someone whose access was withdrawn meanwhile.
    pub async fn export_case(&self, caller: &Principal, case: &CaseId, purpose: &Label) -> Result<Vec<BundleSource>> {
        self.export_case_part(caller, case, purpose, |_| true, || Ok(())).await.map(|(sources, ())| sources)
    }

    /// [`Self::export_case`] for the artefacts of the case that `keep` chooses (a hearing's output, say): the same
    /// checks, records and bundle sources, and the same case export record once the bundles are written
    /// ([`Self::record_case_export`]), whose listing names exactly the bundles exported. `leave` is called once
    /// every artefact is found permitted and before anything is recorded ([`Self::export_leaving`]).
    pub async fn export_case_part<T>(
        &self,
        caller: &Principal,
        case: &CaseId,
        purpose: &Label,
        keep: impl Fn(&ArtefactRow) -> bool,
        leave: impl FnOnce() -> Result<T>,
    ) -> Result<(Vec<BundleSource>, T)> {
        self.authorize(caller, case, Action::ExportArtefact).await?;
        let mut rows: Vec<ArtefactRow> =
            self.catalog.artefacts_in_case(case.as_str()).await?.into_iter().filter(|row| keep(row)).collect();
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        // Refused whole, before any export is recorded, if one artefact forbids it now.
        for row in &rows {
            self.check_export_of(caller, row, purpose).await?;
        }
        self.has_recorded_steps(caller, rows.len() as u64 + 1).await?;
        let left = leave()?;
        // An export record for each artefact now, and the case export's once its bundles are written
        // ([`Self::record_case_export`]): their places in the caller's budget are taken before anything leaves.
        self.take_recorded_steps(caller, rows.len() as u64 + 1).await?;
        let mut chains = Vec::with_capacity(rows.len());
        for row in rows {
            let (_, id) = ids(&row)?;
            let turn = self.policy_turn(&id).await?;
            let this = self.within(&turn);
            // Read and checked again under the turn, for the policy in force now; artefacts are never removed from
            // a case. A policy changed meanwhile to forbid the export stops it here.
            let row = this.under_policy_turn(row).await?;
            this.check_export_of(caller, &row, purpose).await?;
            chains.push(this.record_export(caller, row, purpose).await?);
        }
        // One checkpoint covers every export record; the proofs need no turn.
        let Some(covering) = chains.iter().map(|chain| chain.export_index + 1).max() else {
            return Ok((Vec::new(), left));
        };
        let proved = self.covering_checkpoint(covering).await?;
        let mut sources = Vec::with_capacity(chains.len());
        for chain in chains {
            sources.push(self.bundle_source(chain, &proved).await?);
        }
        Ok((sources, left))
    }

    /// Records a case export once its artefact bundles are written: one custody record that commits, by SHA-256
    /// and count, to the listing of every bundle in it (salted, so its digest in the public log reveals nothing),
    /// proved against a checkpoint that covers it. A case bundle without it, or with a bundle it does not list,
    /// fails verification. The listing names the `scope`, and for one hearing's export the record commits to the
    /// hearing's id, so the record says which part of the case left without the public log saying it.
    pub async fn record_case_export(
        &self,
        caller: &Principal,
        case: &CaseId,
        purpose: &Label,
        scope: ExportScope,
        bundles: Vec<ListedBundle>,
    ) -> Result<(CaseListing, CaseRecord)> {
        let mut salt = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut salt);
        let listing = CaseListing::new(case.clone(), scope, salt, bundles);
        let bytes = listing.to_bytes().map_err(|err| GatewayError::internal("record case export", err))?;
        let (listing_sha256, artefacts) = (Sha256::of(&bytes), listing.bundles.len() as u64);
        let hearing = listing.scope.hearing();
        let sealed = self
            .seal(case, caller.actor(), self.now(), purpose.as_str(), |committer| CustodyEvent::CaseExported {
                listing_sha256,
                artefacts,
                hearing: hearing.map(|hearing| committer.commit("hearing", hearing.as_str())),
            })
            .await?;
        let index = self.record(&sealed).await?;
        let entry = sealed.record.to_entry().map_err(|err| GatewayError::internal("record case export", err))?;
        let checkpoint = self.log.integrated(index).await?;
        let (note, size, witnessing) = self.witnessed_checkpoint(checkpoint, index + 1).await?;
        let path = self.log.storage().inclusion_proof(index, size).await?;
        let proof = TlogProof { extra: None, index, path, checkpoint_note: note.clone() };
        let record = BundleRecord { index, entry, proof: proof.to_bytes(), openings: sealed.openings.to_canonical() };
        Ok((listing, CaseRecord { record, checkpoint: note, witnessing }))
    }

    /// The checkpoint a bundle's records of ledger indexes below `covering` are proved against, its size, and what
    /// witnessing adds. Without a witness policy: `checkpoint`, as the log signed it. With one: the newest
    /// checkpoint whose cosignatures meet the quorum, if one covers the records within the export wait; else
    /// `checkpoint`, with the newest cosigned one and the consistency proof from it (so the verifier can say which
    /// records are witnessed and which not yet; nothing unproved is claimed).
    async fn witnessed_checkpoint(
        &self,
        checkpoint: custodia_ledger::SignedCheckpoint,
        covering: u64,
    ) -> Result<(Vec<u8>, u64, Option<custodia_bundle::Witnessing>)> {
        let (note, size) = (checkpoint.note().to_vec(), checkpoint.checkpoint.size);
        let Some((cosigning, policy)) =
            self.cosigning.as_ref().and_then(|cosigning| Some((cosigning, cosigning.policy_file()?)))
        else {
            return Ok((note, size, None));
        };
        let policy = policy.as_bytes().to_vec();
        match cosigning.cosigned_covering(covering).await {
            Some((cosigned, cosigned_size)) if cosigned_size >= covering => {
                Ok((cosigned, cosigned_size, Some(custodia_bundle::Witnessing { policy, older: None })))
            }
            Some((cosigned, cosigned_size)) if cosigned_size > 0 && cosigned_size <= size => {
                let older = Some((cosigned, self.consistency_file(cosigned_size, size).await?));
                Ok((note, size, Some(custodia_bundle::Witnessing { policy, older })))
            }
            _ => Ok((note, size, Some(custodia_bundle::Witnessing { policy, older: None }))),
        }
    }

    /// The consistency proof from the log at size `from` to size `to`, as a bag carries it
    /// ([`custodia_bundle::consistency_proof_file`]).
    async fn consistency_file(&self, from: u64, to: u64) -> Result<Vec<u8>> {
        let proof = self.log.storage().consistency_proof(from, to).await?;
        Ok(custodia_bundle::consistency_proof_file(&proof))
    }

    /// The newest of the log's timestamps (RFC 3161 `checkpoint_timestamp` entries) that a bag whose first record
    /// is `first` and whose records are proved against `proved` can carry: an entry below `proved`'s size whose
    /// stamped checkpoint holds that first record (the registration) at least, with its inclusion proof against
    /// `proved` and the consistency proof from the stamped checkpoint to it. `None` when no token covers it.
    async fn covering_timestamp(&self, first: u64, proved: &ProvedAgainst) -> Result<Option<BundleTimestamp>> {
        // A stamp of a size above `first` is appended after it; the newest few are enough, since stamps follow the log.
        const LOOKED_AT: i64 = 8;
        let (from, to) = (first as i64 + 1, proved.size as i64);
        let candidates = self.catalog.log_entries_newest_first(LogShelf::Timestamps, from, to, LOOKED_AT).await?;
        for (index, entry) in candidates {
            let Ok(stamp) = custodia_timestamp::CheckpointTimestamp::from_entry(&entry) else { continue };
            if stamp.size <= first || stamp.size > proved.size {
                continue;
            }
            let index = index as u64;
            let path = self.log.storage().inclusion_proof(index, proved.size).await?;
            let proof = TlogProof { extra: None, index, path, checkpoint_note: proved.note.clone() };
            let consistency = self.consistency_file(stamp.size, proved.size).await?;
            return Ok(Some(BundleTimestamp { entry, proof: proof.to_bytes(), consistency }));
        }
        Ok(None)
    }

    /// Whether `row`'s use policy lets the caller export it, a refusal naming the artefact.
    async fn check_export_of(&self, caller: &Principal, row: &ArtefactRow, purpose: &Label) -> Result<()> {
        match self.check_use(caller, row, UseAction::Export, purpose).await {
            Ok(_) => Ok(()),
            Err(GatewayError::UseRestricted(reason)) => {
                Err(GatewayError::UseRestricted(format!("artefact {}: {reason}", row.id)))
            }
            Err(other) => Err(other),
        }
    }

    /// Appends `row`'s export record and reads its chain up to that record. Called under the artefact's policy
    /// turn, so that no use or policy change on it falls between its last record read and its export record.
    /// The caller's membership and scope are checked again under the case's membership turn, with the record
    /// appended before it is let go: an export record is never written for an account whose access a recorded
    /// change has withdrawn (the export then fails with [`GatewayError::AccessWithdrawn`]).
    async fn record_export(&self, caller: &Principal, row: ArtefactRow, purpose: &Label) -> Result<ExportedChain> {
        self.record_leaving(caller, row, purpose, Action::ExportArtefact, |artefact, _| {
            CustodyEvent::ArtefactExported { artefact, format: ExportFormat::CourtBundle, export_sha256: None }
        })
        .await
    }

    /// [`Self::record_export`] for `action` with the record `event` makes: an export's, or a transfer's.
    async fn record_leaving(
        &self,
        caller: &Principal,
        row: ArtefactRow,
        purpose: &Label,
        action: Action,
        event: impl FnOnce(ArtefactId, &mut Committer) -> CustodyEvent,
    ) -> Result<ExportedChain> {
        let (case, artefact) = ids(&row)?;
        let leaving = artefact.clone();
        let membership = self.membership_turn(&case).await?;
        let this = self.within(&membership);
        this.authorize(caller, &case, action).await.map_err(|err| match err {
            GatewayError::NotFound(_) | GatewayError::RoleForbids { .. } | GatewayError::MissingScope(_) => {
                GatewayError::AccessWithdrawn(format!(
                    "your access to case {case} changed during the export, before artefact {artefact} was \
                     exported: the export stops here, and no bundle of it is given"
                ))
            }
            other => other,
        })?;
        // Budgeted by the caller of this, once per export: a case export is one step, however many artefacts.
        let sealed = self
            .seal(&case, caller.actor(), this.now(), purpose.as_str(), |committer| event(leaving, committer))
            .await?;
        let export_index = this.record(&sealed).await?;
        drop(membership);
        let mut entries = this.catalog.artefact_timeline(artefact.as_str()).await?;
        entries.retain(|(index, _)| (*index as u64) <= export_index);
        Ok(ExportedChain { row, artefact, export_index, entries })
    }

    /// The turn of `key` (a transfer's steps, say): one holder at a time in every gateway on the catalog.
    pub async fn turn(&self, kind: TurnKind, key: &str) -> Result<Turn> {
        Ok(self.catalog.take_turn(kind, key).await?)
    }

    /// This gateway, whose records are stored only while `turn` is still held (the sequencing transaction checks;
    /// [`custodia_catalog::Catalog::within_turn`]): what a step records after its check under a turn goes through it.
    pub fn within(&self, turn: &Turn) -> Self {
        Self { catalog: self.catalog.within_turn(turn), ..self.clone() }
    }

    /// The turn taken by every change of a case's membership, and by each export record with its check of the
    /// exporter's membership.
    async fn membership_turn(&self, case: &CaseId) -> Result<Turn> {
        self.turn(TurnKind::Membership, &format!("membership in {case}")).await
    }

    /// A checkpoint that covers the ledger's first `covering` entries, as bundles prove their records against it
    /// ([`Self::witnessed_checkpoint`]).
    async fn covering_checkpoint(&self, covering: u64) -> Result<ProvedAgainst> {
        let checkpoint = self.log.integrated(covering.saturating_sub(1)).await?;
        let (note, size, witnessing) = self.witnessed_checkpoint(checkpoint, covering).await?;
        Ok(ProvedAgainst { note, size, witnessing })
    }

    /// The bundle source of an exported chain, every record proved against `proved`.
    async fn bundle_source(&self, chain: ExportedChain, proved: &ProvedAgainst) -> Result<BundleSource> {
        let ExportedChain { row, artefact, export_index: _, entries } = chain;
        let sha256: Sha256 = row.sha256.parse().map_err(|err| GatewayError::internal("stored digest", err))?;
        let mut records = Vec::with_capacity(entries.len());
        for (index, entry) in entries {
            let index = index as u64;
            let path = self.log.storage().inclusion_proof(index, proved.size).await?;
            let proof = TlogProof { extra: None, index, path, checkpoint_note: proved.note.clone() };
            let openings = self.openings_of(&entry).await?.to_canonical();
            records.push(BundleRecord { index, entry, proof: proof.to_bytes(), openings });
        }
        let signature =
            row.manifest_signature.parse().map_err(|err| GatewayError::internal("stored signature", err))?;
        let timestamp = match records.first() {
            Some(first) => self.covering_timestamp(first.index, proved).await?,
            None => None,
        };
        let provider_chain = self.provider_chain_of(&artefact).await?;
        Ok(BundleSource {
            artefact,
            payload_sha256: sha256,
            payload_size: row.size as u64,
            manifest: row.manifest,
            manifest_signature: signature,
            records,
            checkpoint: proved.note.clone(),
            vkey: self.verifier.to_string(),
            bagged_at: self.now().to_string(),
            witnessing: proved.witnessing.clone(),
            timestamp,
            provider_chain,
        })
    }

    /// Of an artefact received from a partner gateway: the provider's chain its transfer's offer carried, verified
    /// when the artefact was received, which its bundles carry beside this gateway's own.
    async fn provider_chain_of(&self, artefact: &ArtefactId) -> Result<Option<custodia_bundle::ProviderChain>> {
        let Some(offer) = self.catalog.received_offer(artefact.as_str()).await? else {
            return Ok(None);
        };
        let context = "a received artefact's chain";
        let offer: custodia_partners::transfer::Offer =
            serde_json::from_str(&offer).map_err(|e| GatewayError::internal(context, e))?;
        let head = offer.chain_bytes().map_err(|e| GatewayError::internal(context, e))?;
        custodia_bundle::ProviderChain::from_head(&head).map(Some).map_err(|e| GatewayError::internal(context, e))
    }

    // Transfers to and from partner gateways (`crate::transfers`).

    /// The court bundle of an artefact a member sends to a partner gateway: checked against the artefact's use
    /// policy as a transfer to `recipient` (the partner's account here) in the partner's `jurisdiction`, and
    /// recorded first (`artefact_transferred`), so that the bundle carries the record of its own transfer.
    pub async fn transfer_bundle(
        &self,
        caller: &Principal,
        id: &ArtefactId,
        purpose: &Label,
        recipient: &Account,
        jurisdiction: &str,
    ) -> Result<BundleSource> {
        let (row, _) = self.authorize_artefact(caller, id, Action::TransferArtefact).await?;
        let turn = self.policy_turn(id).await?;
        let this = self.within(&turn);
        let row = this.under_policy_turn(row).await?;
        let recipient = actor_of(&recipient.id);
        let place = Label::new(jurisdiction).map_err(|err| bad_input("partner", err))?;
        // The providing authority sending its own evidence provides it: its policy travels with it and binds the
        // receiver. Anyone else's transfer is an onward one, under the policy's terms.
        if row.provider_account != caller.account_id() {
            this.check_use_by(caller, &row, UseAction::Transfer, purpose, recipient.clone(), place).await?;
        }
        this.take_recorded_step(caller).await?;
        let chain = self
            .record_leaving(caller, row, purpose, Action::TransferArtefact, |artefact, committer| {
                CustodyEvent::ArtefactTransferred {
                    artefact,
                    recipient,
                    jurisdiction: committer.commit("jurisdiction", jurisdiction),
                }
            })
            .await?;
        drop(turn);
        let proved = this.covering_checkpoint(chain.export_index + 1).await?;
        this.bundle_source(chain, &proved).await
    }

    /// Puts a record about `case` on the log for `actor` (a transfer's evidence, made by this gateway or by a
    /// partner): sealed, appended and indexed. Its ledger index, entry and openings.
    pub async fn record_for(
        &self,
        case: &CaseId,
        actor: ActorId,
        purpose: &str,
        event: impl FnOnce(&mut Committer) -> CustodyEvent,
    ) -> Result<(u64, Vec<u8>, Openings)> {
        let sealed = self.seal(case, actor, self.now(), purpose, event).await?;
        let index = self.record(&sealed).await?;
        self.recorded(index, sealed).await
    }

    /// Puts the evidence that moves a transfer on (`moves`, which carries the signed evidence) on the log, as
    /// [`Gateway::record`] does, in the transaction that sequences its record
    /// ([`custodia_catalog::Catalog::sequence_moving_transfer`]), which also keeps the signed evidence, pending its
    /// inclusion proof: its ledger index. `None`, and nothing recorded, if the transfer is no longer in the stage it
    /// was to move from (another request, here or on another gateway, moved it first, with an evidence of its own).
    /// Its entry and openings are then [`Gateway::recorded_at`] that index, once integrated.
    pub async fn record_moving_transfer(
        &self,
        case: &CaseId,
        actor: ActorId,
        purpose: &str,
        moves: TransferMove,
        event: impl FnOnce(&mut Committer) -> CustodyEvent,
    ) -> Result<Option<MovedOn>> {
        let sealed = self.seal(case, actor, self.now(), purpose, event).await?;
        self.flush_refusals().await?;
        let index = match self.sequence_sealed(&sealed, None, Some(moves)).await? {
            Ok(index) => index,
            Err(CatalogError::TransferMoved { .. }) => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        // The record is durable and the transfer moved on, whatever happens next: a log that does not publish it
        // now (its store failing, the process shutting down) is no error of the move's.
        let integrated = match self.log.integrated(index).await {
            Ok(_) => true,
            Err(err) => {
                tracing::warn!(index, error = %crate::error::Chain(&err), "a transfer moved on; its record is published once the log's store answers");
                false
            }
        };
        Ok(Some(MovedOn { index, integrated }))
    }

    /// The record sequenced at `index`, as [`Gateway::record_for`] answers it, read back once a published
    /// checkpoint covers it: its entry from the log's store and its openings from the catalog (kept under the
    /// entry's SHA-256 in the transaction that sequenced it). Whoever sequenced it, and whether or not that process
    /// still runs: what completes an evidence kept pending ([`custodia_catalog::KeptEvidence`]).
    pub async fn recorded_at(&self, index: u64) -> Result<(u64, Vec<u8>, Openings)> {
        let entry = self.integrated_entry(index).await?;
        let openings = self.openings_of(&entry).await?;
        Ok((index, entry, openings))
    }

    /// What [`Gateway::record_for`] answers about the record `sealed`, recorded at `index`.
    async fn recorded(&self, index: u64, sealed: Sealed) -> Result<(u64, Vec<u8>, Openings)> {
        Ok((index, self.integrated_entry(index).await?, sealed.openings))
    }

    /// The entry at `index` as appended (recording chains it to the artefact's record before it), once a published
    /// checkpoint covers it.
    async fn integrated_entry(&self, index: u64) -> Result<Vec<u8>> {
        let checkpoint = self.log.integrated(index).await?;
        Ok(self.log.storage().entry(index, checkpoint.checkpoint.size).await?.to_vec())
    }

    /// Takes an artefact received from a partner gateway into custody in `case` as `artefact` (an id the caller
    /// chose and noted first, so that a receipt finished again after a crash registers it once), provided by
    /// `provider` (the partner's account here), registered like an upload. Its `received_from` record follows
    /// ([`Gateway::record_received_from`]).
    ///
    /// The artefact's bytes are the file at `staged`, whose SHA-256 and size the caller verified (they are the
    /// ones the provider's signed manifest names): taken into the store without another pass over them.
    pub async fn receive(
        &self,
        provider: &Principal,
        case: &CaseId,
        request: UploadRequest,
        staged: (&std::path::Path, Sha256, u64),
        artefact: ArtefactId,
    ) -> Result<Registered> {
        let (file, sha256, size) = staged;
        let stored = self.artefacts.ingest_file(file, sha256, size).await?;
        self.register_stored(provider, case, Arrival::Direct, request, (stored, None), artefact).await
    }

    /// The provider's use policy on an artefact received from a partner, and its record, made again if a crash
    /// took either: a registration record that reached the log before its catalog row is listed again at start
    /// without a policy (the manifest names none), and a row may have been written without its record. Called
    /// before a receipt is finished again, and at start for every receipt not yet finished, so that no such
    /// artefact is served without its provider's restrictions.
    pub async fn ensure_received_policy(
        &self,
        provider: &Principal,
        artefact: &ArtefactId,
        policy: &UsePolicy,
    ) -> Result<()> {
        let row = self
            .catalog
            .artefact(artefact.as_str())
            .await?
            .ok_or_else(|| GatewayError::NotFound(format!("artefact {artefact}")))?;
        let (case, _) = ids(&row)?;
        let json =
            serde_json::to_string(policy).map_err(|err| GatewayError::internal("ensure received policy", err))?;
        if row.policy.as_deref() != Some(json.as_str()) {
            tracing::warn!(artefact = %artefact, "a received artefact's policy was restored after a crash");
            self.catalog.set_policy(artefact.as_str(), &json).await?;
        }
        if self.has_record(artefact, |event| matches!(event, CustodyEvent::PolicyChanged { .. })).await? {
            return Ok(());
        }
        self.record_policy(provider, &case, artefact, policy, "attached at ingest").await?;
        Ok(())
    }

    /// Whether a custody record about `artefact` is one `is` picks.
    async fn has_record(&self, artefact: &ArtefactId, is: impl Fn(&CustodyEvent) -> bool) -> Result<bool> {
        let timeline = self.catalog.artefact_timeline(artefact.as_str()).await?;
        Ok(timeline.iter().any(|(_, entry)| CustodyRecord::from_entry(entry).is_ok_and(|record| is(&record.event))))
    }

    /// The `received_from` record of an artefact received from a partner, which `received_from` makes, unless it
    /// has one already (a receipt finished again after a crash).
    pub async fn record_received_from(
        &self,
        provider: &Principal,
        case: &CaseId,
        purpose: &Label,
        artefact: &ArtefactId,
        received_from: impl FnOnce(ArtefactId, &mut Committer) -> CustodyEvent,
    ) -> Result<()> {
        if self.has_record(artefact, |event| matches!(event, CustodyEvent::ReceivedFrom { .. })).await? {
            return Ok(());
        }
        let artefact = artefact.clone();
        let sealed = self
            .custody_record(provider, case, purpose.as_str(), |committer| received_from(artefact, committer))
            .await?;
        self.record(&sealed).await?;
        Ok(())
    }

    // Restrictions on use, requests to widen them, and outcome reports.

    /// Only the account that provided an artefact speaks for its providing authority. Refusals are recorded.
    async fn require_provider(
        &self,
        caller: &Principal,
        row: &ArtefactRow,
        action: Action,
        what: &'static str,
    ) -> Result<()> {
        if caller.account_id() == row.provider_account {
            return Ok(());
        }
        let err = GatewayError::ProviderOnly(what);
        let (case, artefact) = ids(row)?;
        self.record_refusal(caller, &case, Some(&artefact), action, RefusalCode::ProviderOnly).await;
        Err(err)
    }

    pub async fn set_policy(&self, caller: &Principal, id: &ArtefactId, policy: UsePolicy) -> Result<u64> {
        let (row, _) = self.authorize_artefact(caller, id, Action::SetPolicy).await?;
        self.require_provider(caller, &row, Action::SetPolicy, "set the use policy").await?;
        self.change_policy(caller, &row, &policy, "set by provider").await
    }

    /// The judge replaces an artefact's use policy by the court's decision, say one attached in error that locks
    /// the artefact for everyone ([`custodia_core::permits`] gives [`Action::CorrectPolicy`] to the judge alone).
    /// On the record like any other policy change, under the judge's account.
    pub async fn correct_policy(&self, caller: &Principal, id: &ArtefactId, policy: UsePolicy) -> Result<u64> {
        let (row, _) = self.authorize_artefact(caller, id, Action::CorrectPolicy).await?;
        // What a partner gateway provided is under another State's restrictions: only that State widens them (a
        // request to widen use goes to it), and no court here corrects them away.
        let provider = self.catalog.account(&row.provider_account).await?;
        if provider.is_some_and(|provider| provider.username.starts_with("partner:")) {
            let (case, artefact) = ids(&row)?;
            let code = RefusalCode::ProviderOnly;
            let refused = self.record_refusal(caller, &case, Some(&artefact), Action::CorrectPolicy, code).await;
            let err = GatewayError::ProviderOnly(
                "change the restrictions of evidence a partner gateway provided: ask it to widen use",
            );
            return Err(refused.unwrap_or(err));
        }
        self.change_policy(caller, &row, &policy, "corrected by the judge's decision").await
    }

    /// Records a new policy and applies it, in that order, while the artefact's policy turn is held: concurrent
    /// changes reach the ledger and the catalog in the same order, so the catalog applies the last one recorded.
    async fn change_policy(
        &self,
        caller: &Principal,
        row: &ArtefactRow,
        policy: &UsePolicy,
        change: &str,
    ) -> Result<u64> {
        let (case, artefact) = ids(row)?;
        self.take_recorded_step(caller).await?;
        let turn = self.policy_turn(&artefact).await?;
        let this = self.within(&turn);
        let index = this.record_policy(caller, &case, &artefact, policy, change).await?;
        let text = serde_json::to_string(policy).map_err(|err| GatewayError::internal("change policy", err))?;
        this.catalog.set_policy(artefact.as_str(), &text).await?;
        Ok(index)
    }

    /// The turn taken by every check-then-append about an artefact's use policy and the requests to widen it: the
    /// check is made again under it, so only one of several concurrent decisions reaches the ledger.
    async fn policy_turn(&self, artefact: &ArtefactId) -> Result<Turn> {
        self.turn(TurnKind::Policy, &format!("policy of {artefact}")).await
    }

    pub async fn request_widening(
        &self,
        caller: &Principal,
        id: &ArtefactId,
        request: WidenRequest,
    ) -> Result<WidenRequestRow> {
        let (row, _) = self.authorize_artefact(caller, id, Action::RequestWiderUse).await?;
        self.record_widen_request(caller, &row, new_id("wr"), request).await
    }

    /// Records `caller`'s request `id` to widen the use of `row`: a member's here, or one a receiving partner
    /// gateway sent about what this gateway provided (its caller the partner's account).
    pub async fn record_widen_request(
        &self,
        caller: &Principal,
        row: &ArtefactRow,
        id: String,
        request: WidenRequest,
    ) -> Result<WidenRequestRow> {
        let (case, artefact) = ids(row)?;
        let requested =
            serde_json::to_string(&request).map_err(|err| GatewayError::internal("record widen request", err))?;
        let row = WidenRequestRow {
            id,
            artefact_id: artefact.to_string(),
            requested_by: caller.account_id().to_owned(),
            request: requested,
            status: "pending".into(),
            decided_by: None,
            decision_ledger_index: None,
            created_at: self.now().to_string(),
        };
        // There must be a policy to widen. The request itself is recorded, not a policy that is not in force.
        let turn = self.policy_turn(&artefact).await?;
        let this = self.within(&turn);
        current_policy(
            &self
                .catalog
                .artefact(artefact.as_str())
                .await?
                .ok_or_else(|| GatewayError::NotFound(artefact.to_string()))?,
        )?;
        let canonical = custodia_core::to_canonical_vec(&request)
            .map_err(|err| GatewayError::internal("record widen request", err))?;
        this.take_recorded_step(caller).await?;
        let sealed = self
            .custody_record(caller, &case, "wider use", |committer| CustodyEvent::WiderUseRequested {
                artefact: artefact.clone(),
                request: committer.commit("request", Sha256::of(&canonical).to_hex()),
            })
            .await?;
        this.record(&sealed).await?;
        this.catalog.insert_widen_request(&row).await?;
        Ok(row)
    }

    /// The provider approves or refuses a request. The decision is in the ledger before access changes.
    pub async fn decide_widening(
        &self,
        caller: &Principal,
        request_id: &str,
        approve: bool,
    ) -> Result<WidenRequestRow> {
        let not_found = || GatewayError::NotFound(format!("no request {request_id} for you to decide"));
        let request = self.catalog.widen_request(request_id).await?.ok_or_else(not_found)?;
        let artefact = ArtefactId::new(request.artefact_id.clone())
            .map_err(|err| GatewayError::internal("decide widening", err))?;
        let (row, _) =
            self.authorize_artefact(caller, &artefact, Action::DecideWiderUse).await.map_err(|err| match err {
                GatewayError::NotFound(_) => not_found(),
                other => other,
            })?;
        self.require_provider(caller, &row, Action::DecideWiderUse, "decide on wider use").await?;
        self.settle_widening(caller, request_id, approve).await
    }

    /// Records the provider's decision on pending request `request_id` and, if it approves, widens the policy: a
    /// member's decision here, or, about evidence received from a partner gateway, the decision the partner sent
    /// (its caller the partner's account, the artefact's provider).
    pub async fn settle_widening(
        &self,
        caller: &Principal,
        request_id: &str,
        approve: bool,
    ) -> Result<WidenRequestRow> {
        let not_found = || GatewayError::NotFound(format!("no request {request_id} for you to decide"));
        let request = self.catalog.widen_request(request_id).await?.ok_or_else(not_found)?;
        let artefact = ArtefactId::new(request.artefact_id.clone())
            .map_err(|err| GatewayError::internal("settle widening", err))?;
        // Check again under the turn: of concurrent decisions, only the first reaches the ledger.
        let turn = self.policy_turn(&artefact).await?;
        let this = self.within(&turn);
        let request = this.catalog.widen_request(request_id).await?.ok_or_else(not_found)?;
        if request.status != "pending" {
            return Err(GatewayError::Conflict(format!("request {request_id} was already {}", request.status)));
        }
        let row = this.catalog.artefact(artefact.as_str()).await?.ok_or_else(not_found)?;
        let widen: WidenRequest =
            serde_json::from_str(&request.request).map_err(|err| GatewayError::internal("settle widening", err))?;
        let policy = current_policy(&row)?;
        let (case, _) = ids(&row)?;
        let (status, resulting) = if approve { ("approved", policy.widened(&widen)) } else { ("refused", policy) };
        this.take_recorded_step(caller).await?;
        let index = self
            .record_policy(caller, &case, &artefact, &resulting, &format!("wider use {status} ({request_id})"))
            .await?;
        let text = serde_json::to_string(&resulting).map_err(|err| GatewayError::internal("settle widening", err))?;
        let new_policy = approve.then_some((artefact.as_str(), text.as_str()));
        if !this.catalog.decide_widen_request(request_id, status, caller.account_id(), index as i64, new_policy).await?
        {
            return Err(GatewayError::Conflict(format!("request {request_id} was decided concurrently")));
        }
        this.catalog.widen_request(request_id).await?.ok_or_else(not_found)
    }

    pub async fn report_outcome(
        &self,
        caller: &Principal,
        id: &ArtefactId,
        outcome: Label,
        note: Option<String>,
    ) -> Result<OutcomeRow> {
        let (row, _) = self.authorize_artefact(caller, id, Action::FileOutcome).await?;
        self.take_recorded_step(caller).await?;
        self.record_outcome(caller, &row, new_id("out"), outcome, note).await
    }

    /// Records an outcome report about `row` by `caller` under the id `id`: the report a member files here, or one a
    /// receiving partner gateway sent back about what this gateway provided (its caller the partner's account).
    pub async fn record_outcome(
        &self,
        caller: &Principal,
        row: &ArtefactRow,
        id: String,
        outcome: Label,
        note: Option<String>,
    ) -> Result<OutcomeRow> {
        let (case, artefact) = ids(row)?;
        let sealed = self
            .custody_record(caller, &case, "outcome feedback", |committer| CustodyEvent::OutcomeReported {
                artefact: artefact.clone(),
                outcome: committer.commit("outcome", outcome.as_str()),
            })
            .await?;
        let index = self.record(&sealed).await?;
        let row = OutcomeRow {
            id,
            artefact_id: artefact.to_string(),
            filed_by: caller.account_id().to_owned(),
            outcome: outcome.to_string(),
            note,
            ledger_index: index as i64,
            created_at: self.now().to_string(),
        };
        self.catalog.insert_outcome(&row).await?;
        Ok(row)
    }

    /// Puts a change of a case's membership on the record before it takes effect: who may read a case's
    /// evidence is custody too. The member is named by opaque account id; the new role is committed, since with
    /// the id it would say who the witness is. An administrator granting themself membership is both the record's
    /// actor and its member, so a self-grant is visible as one. Returns `None` when nothing changes.
    pub async fn change_membership(
        &self,
        caller: &Principal,
        case: &CaseId,
        member: &str,
        role: Option<Role>,
    ) -> Result<Option<u64>> {
        // Check-then-append under one turn per case, so that concurrent changes are recorded one after the other,
        // each against the membership the one before it left, and the catalog ends on the last recorded. Every
        // check the catalog would make is made here first, so that a change it would refuse never reaches the
        // ledger: two clerks removed at once must not leave two records of which one never happened.
        let turn = self.membership_turn(case).await?;
        let this = self.within(&turn);
        let current = this.catalog.member_role(case.as_str(), member).await?;
        let change = match (&current, role) {
            (None, None) => return Ok(None),
            (Some(current), Some(role)) if *current == role.as_str() => return Ok(None),
            (None, Some(_)) => MembershipChange::Added,
            (Some(_), Some(_)) => MembershipChange::RoleChanged,
            (Some(_), None) => MembershipChange::Removed,
        };
        if current.as_deref() == Some(Role::Clerk.as_str()) && role != Some(Role::Clerk) {
            let members = this.catalog.members(case.as_str()).await?;
            if members.iter().filter(|member| member.role == Role::Clerk.as_str()).count() < 2 {
                return Err(CatalogError::LastClerk.into());
            }
        }
        let member_id = ActorId::new(member).map_err(|err| bad_input("account", err))?;
        this.take_recorded_step(caller).await?;
        let sealed = self
            .custody_record(caller, case, "case membership", |committer| CustodyEvent::MembershipChanged {
                member: member_id,
                change,
                role: role.map(|role| committer.commit("role", role.as_str())),
            })
            .await?;
        let index = this.record(&sealed).await?;
        match role {
            Some(role) => this.catalog.set_member(case.as_str(), member, role.as_str()).await?,
            None => {
                this.catalog.remove_member(case.as_str(), member).await?;
            }
        }
        if member == caller.account_id() {
            tracing::warn!(case = %case, actor = %caller.account_id(), ?change, "a self-granted change of membership");
        }
        Ok(Some(index))
    }

    /// Outcome reports: for the provider, and for members whose role may see them.
    pub async fn outcomes(&self, caller: &Principal, id: &ArtefactId) -> Result<Vec<OutcomeRow>> {
        let row = self.catalog.artefact(id.as_str()).await?;
        let is_provider = row.as_ref().is_some_and(|row| row.provider_account == caller.account_id());
        if is_provider {
            caller.require_scope(Action::ViewOutcomes)?;
        } else {
            // Checks the scope too, so that a member's refusal by scope is recorded like any other.
            self.authorize_artefact(caller, id, Action::ViewOutcomes).await?;
        }
        Ok(self.catalog.outcomes_for(id.as_str()).await?)
    }

    pub async fn widen_requests(&self, caller: &Principal, id: &ArtefactId) -> Result<Vec<WidenRequestRow>> {
        self.authorize_artefact(caller, id, Action::ViewArtefact).await?;
        Ok(self.catalog.widen_requests_for(id.as_str()).await?)
    }
}

fn ids(row: &ArtefactRow) -> Result<(CaseId, ArtefactId)> {
    let case = CaseId::new(row.case_id.clone()).map_err(|err| GatewayError::internal("ids", err))?;
    let artefact = ArtefactId::new(row.id.clone()).map_err(|err| GatewayError::internal("ids", err))?;
    Ok((case, artefact))
}

fn current_policy(row: &ArtefactRow) -> Result<UsePolicy> {
    match &row.policy {
        Some(text) => serde_json::from_str(text).map_err(|err| GatewayError::internal("stored policy", err)),
        None => Err(GatewayError::BadInput { field: "artefact", reason: "it carries no use policy to widen".into() }),
    }
}

/// A direct upload of undeclared length holds its account's quota ahead of its bytes by a quarter of what it holds,
/// within these bounds (and never more than a quarter of what is left).
const HOLD_AHEAD_MIN: u64 = 1 << 20;
const HOLD_AHEAD_MAX: u64 = 64 << 20;

/// What a 429 says when an actor's refused hearing steps pass their budget of refusal records; a room socket that
/// hears it takes no step from its participant until the wait is over.
pub const REFUSED_STEPS: &str = "refused hearing steps";

/// The canonical detail document of a record that counts refused hearing steps
/// ([`custodia_hearing::refused_steps_detail`]).
fn refused_steps_detail(
    hearing: &custodia_core::HearingId,
    actions: impl IntoIterator<Item = custodia_hearing::HearingAction>,
) -> Result<Vec<u8>> {
    custodia_hearing::refused_steps_detail(hearing, actions)
        .map_err(|err| GatewayError::internal("refused steps detail", err))
}

/// How an action reads in a refusal: "download artefacts", "manage members".
pub fn action_words(action: Action) -> String {
    serde_json::to_value(action).ok().and_then(|v| v.as_str().map(|s| s.replace('_', " "))).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_request_withholds_its_purpose_and_file_name_from_debug() {
        let request = UploadRequest {
            purpose: Label::new("interview of Maria Rossi").unwrap(),
            media_type: Label::new("video/webm").unwrap(),
            original_name: Some(Label::new("maria-rossi.webm").unwrap()),
            expected_sha256: None,
            policy: None,
        };
        let shown = format!("{request:?}");
        assert!(!shown.contains("Maria") && !shown.contains("maria"), "{shown}");
    }
}
