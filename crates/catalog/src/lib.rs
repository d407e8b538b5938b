//! The catalog: accounts, sessions and tokens, cases and their members, artefacts, policies, requests to widen
//! use, outcome reports, resumable uploads, what direct uploads under way hold of their accounts' quotas
//! (holdings), transfers to and from partner gateways with their evidences, an index of the custody ledger, and
//! the token buckets of the budgets every gateway on the database shares (budgets).
//!
//! One code path for SQLite (embedded, the default) and PostgreSQL (at scale), through sqlx's `Any` driver, with
//! portable SQL only. The ledger is the truth about custody; the `custody_index` table is derived from it and
//! can be rebuilt from it. Values come in already validated (ids, roles) as plain strings: this crate stores and
//! finds, and decides nothing.

mod budgets;
mod database_clock;
mod duties;
mod holdings;
mod leases;
mod schema;
mod sequencing;
mod transfers;
mod turns;

pub use budgets::{BucketRule, PRUNE_EVERY_MS, Take};
pub use duties::{DUTY_EXPIRY, Duty, DutyHolder, DutyLease};
pub use holdings::{DirectHoldings, HOLDING_MARGIN};
pub use leases::{HearingFence, HearingLease};
pub use sequencing::{EntryOpenings, LogShelf, Sequenced};
pub use turns::{Turn, TurnFence, TurnKind};

/// What the catalog lists with the record that registers an artefact ([`Catalog::sequence_registration`]), in the
/// transaction that sequences it.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The artefact's row; its `ledger_index` is set to the record's.
    pub artefact: ArtefactRow,
    /// The hearing whose output the artefact is, if it is one.
    pub hearing: Option<String>,
    /// The resumable upload whose bytes it is, if it is one: consumed by the registration.
    pub consumes: Option<UploadCompletion>,
    /// The holding of the direct upload whose bytes it is, if it is one ([`Catalog::hold_direct`]): the
    /// registration is stored only while the holding lasts [`HOLDING_MARGIN`] more, and deletes it, its bytes then
    /// counted as the artefact's.
    pub holding: Option<String>,
}

/// The claimed completion of a resumable upload, which the record registering its bytes consumes
/// ([`Catalog::sequence_registration`]): the upload, and the last chunk its claim was made with
/// ([`Catalog::claim_upload_completion`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UploadCompletion {
    pub upload_id: String,
    pub last_chunk: String,
}

/// A transfer moved on by the record that is its evidence ([`Catalog::sequence_moving_transfer`]), in the
/// transaction that sequences it: from stage `from` (the record is sequenced only while the transfer is still in
/// it) to `to`, its `updated_at` set to `at`, and `evidence` kept with it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TransferMove {
    pub transfer_id: String,
    pub from: String,
    pub to: String,
    pub at: String,
    pub evidence: KeptEvidence,
}

/// The signed evidence a transfer's move is recorded by, kept in the transaction that sequences its record, as
/// pending ([`TransferEvidenceRow::is_pending`]) until its inclusion proof is added. The record commits to the
/// evidence's digest only, and the evidence is signed at a time of its own, so it cannot be made again the same
/// later: kept anywhere but in that transaction, a crash or a failing log store between the two would lose the
/// one evidence the log commits to, and leave the transfer moved on with no rung to show for it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeptEvidence {
    /// Its rung on the transfer's ladder.
    pub rung: i64,
    /// Its event's name (`Retrieval`, `NonRetrieval`).
    pub event: String,
    /// The signed evidence as it travels (JSON).
    pub signed: String,
}

pub use transfers::{OutboxRow, TransferEvidenceRow, TransferRow, TransferStaging};

use std::fmt;
use std::sync::Arc;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row as _};

use database_clock::Shift;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    #[error("{what} already exists")]
    Conflict { what: String },
    /// A membership change would leave a case that has a clerk without one: nobody could run it any more.
    #[error("a case keeps at least one clerk: make someone else clerk first")]
    LastClerk,
    /// A write fenced by a hearing's lease ([`HearingFence`]) whose node no longer holds the lease under that
    /// epoch: another gateway took the hearing over. Nothing was written.
    #[error("hearing {hearing_id} is no longer held under epoch {epoch} by this gateway")]
    LeaseLost { hearing_id: String, epoch: i64 },
    /// The completion of resumable upload `upload_id` is no longer claimed as the registration of its bytes said
    /// (another gateway took it over, or it was removed): nothing was sequenced
    /// ([`Catalog::sequence_registration`]).
    #[error("the completion of upload {upload_id} is no longer claimed by this request")]
    ClaimLost { upload_id: String },
    /// Transfer `transfer_id` is no longer in stage `from`, which the record that was to move it on needed (another
    /// request, on this gateway or another, moved it first): nothing was sequenced
    /// ([`Catalog::sequence_moving_transfer`]).
    #[error("transfer {transfer_id} is no longer {from}")]
    TransferMoved { transfer_id: String, from: String },
    /// No turn to write came within `waited`: others in this process were ahead, and the database slow or away.
    #[error("the database is busy: no turn to sequence within {waited:?}")]
    Busy { waited: std::time::Duration },
    /// A record made under a turn whose lock was lost before the record was stored (the turn's connection cut, its
    /// gateway frozen past the idle limit): nothing was stored, and the step may be taken again.
    #[error("a turn this step was taken under was lost meanwhile; nothing was recorded; try again")]
    TurnLost,
    /// The holding of the direct upload a registration was of had expired, or was about to (its gateway could not
    /// renew it: frozen, or the database away that long), so other gateways may have counted the quota it held as
    /// free: nothing was stored, and the upload may be sent again ([`Registration::holding`]).
    #[error("this upload's holding of its account's quota lapsed before it was registered; nothing was recorded")]
    HoldingLapsed,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The transaction that sequenced a batch of `records` custody records ([`Catalog::sequence_custody`]) failed,
    /// and none of their records was stored: every request of the batch gets the one database error (one the
    /// database refused a write with, as a constraint, comes to a request sequenced again alone: `records` is 1).
    #[error("database error, sequencing a batch of {records} record(s): {source}")]
    BatchFailed { records: usize, source: Arc<sqlx::Error> },
    /// The task that runs this process's sequencing transactions ended before answering (its runtime shut down, or
    /// it panicked): the record may or may not have been stored.
    #[error("sequencing ended before answering: the record may or may not have been stored")]
    SequencingStopped,
}

impl CatalogError {
    /// Whether trying again later may succeed: the database could not be reached or reached its limits (a
    /// connection refused or cut, the pool exhausted, the server shutting down or starting up), not an answer
    /// about the data.
    pub fn is_transient(&self) -> bool {
        let err = match self {
            Self::Busy { .. } | Self::TurnLost | Self::HoldingLapsed => return true,
            Self::Database(err) => err,
            Self::BatchFailed { source, .. } => source,
            _ => return false,
        };
        transient(err)
    }

    fn from_insert(err: sqlx::Error, what: impl Into<String>) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict { what: what.into() },
            _ => Self::Database(err),
        }
    }
}

/// Whether `err` says the database could not be reached or reached its limits ([`CatalogError::is_transient`]).
fn transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => true,
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE class 08 (connection exception), 53 (insufficient resources: disk full, out of memory, too many
        // connections), 58 (system error: an I/O error), 57014 (a statement cancelled or timed out), 57P01-57P03
        // (admin shutdown, crash shutdown, cannot connect now), 55P03 (a lock not granted in time), 40001 and
        // 40P01 (a serialization failure, a deadlock), 25P03, 25P04 and 57P05 (a session or transaction ended for
        // its time limits).
        sqlx::Error::Database(db) => match sqlite_primary_code(db.as_ref()) {
            // SQLite's extended codes, by their primary code: busy, locked, an I/O error, a full disk.
            Some(primary) => matches!(primary, 5 | 6 | 10 | 13),
            None => db.code().is_some_and(|code| {
                ["08", "53", "58"].iter().any(|class| code.starts_with(class))
                    || matches!(
                        code.as_ref(),
                        "57014"
                            | "57P01"
                            | "57P02"
                            | "57P03"
                            | "57P05"
                            | "55P03"
                            | "40001"
                            | "40P01"
                            | "25P03"
                            | "25P04"
                    )
            }),
        },
        _ => false,
    }
}

/// Whether `err` is the database refusing what a statement wrote (a constraint, a value out of range, a trigger's
/// refusal), which other statements, writing other rows, need not meet: SQLSTATE classes 22 (data exception), 23
/// (integrity constraint violation) and P0 (raised by a trigger or function); SQLite's too big, constraint
/// (a trigger's `RAISE` among them) and mismatch.
fn refused_a_write(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else { return false };
    match sqlite_primary_code(db.as_ref()) {
        Some(primary) => matches!(primary, 18..=20),
        None => db.code().is_some_and(|code| ["22", "23", "P0"].iter().any(|class| code.starts_with(class))),
    }
}

/// The primary result code of an SQLite error (sqlx gives the extended one, such as 1811 for a trigger's `RAISE`,
/// whose low byte is the primary code, 19); `None` for another database's.
fn sqlite_primary_code(db: &dyn sqlx::error::DatabaseError) -> Option<u32> {
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
    db.code()?.parse::<u32>().ok().map(|code| code & 0xff)
}

pub type Result<T> = std::result::Result<T, CatalogError>;

/// Metadata storage. Cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    pool: AnyPool,
    /// The PostgreSQL database's URL (`None` for SQLite).
    postgres_url: Option<Arc<str>>,
    /// The custody log's integration lock on SQLite, whose one gateway holds it in-process
    /// ([`Catalog::log_coordination`]).
    integration: Arc<tokio::sync::Mutex<()>>,
    /// This process's sequencing: the requests waiting for the next transaction, and the one task that runs them,
    /// one at a time ([`Catalog::sequence_custody`]).
    sequencer: Arc<sequencing::Sequencer>,
    /// The salt of the budgets' keys, read once ([`Catalog::budget_salt`]).
    budget_salt: Arc<tokio::sync::OnceCell<[u8; 32]>>,
    /// When this process last deleted the budget buckets that were full again (ms; [`budgets::PRUNE_EVERY_MS`]).
    budgets_pruned_at: Arc<std::sync::atomic::AtomicI64>,
    /// How this process's clock differs from the database's ([`Catalog::database_now_ms`]).
    database_clock: Arc<database_clock::DatabaseClock>,
    /// One holder at a time of a named thing, across every gateway on the database ([`Catalog::take_turn`]).
    turns: Arc<turns::Turns>,
    /// The turns this catalog's records are made under ([`Catalog::within_turn`]): none, unless it is one
    /// `within_turn` made.
    turn_fences: Arc<[turns::TurnFence]>,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may hold a password; never print it.
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

/// An account. `display_name` is personal data: it never goes to logs or the ledger.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
    pub is_admin: bool,
    pub jurisdiction: String,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account").field("id", &self.id).field("is_admin", &self.is_admin).finish_non_exhaustive()
    }
}

/// A machine's API token, found by the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: String,
    pub account_id: String,
    pub scopes: String,
    /// Unix seconds, on this process's clock (stored on the database's).
    pub expires_at: i64,
    pub revoked: bool,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Case {
    pub id: String,
    /// May name people.
    pub title: String,
    pub created_at: String,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case").field("id", &self.id).field("created_at", &self.created_at).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub account_id: String,
    pub role: String,
}

/// An artefact's catalog entry. The signed manifest is the evidence; the other columns are for finding it.
#[derive(Clone, PartialEq, Eq)]
pub struct ArtefactRow {
    pub id: String,
    pub case_id: String,
    pub sha256: String,
    pub size: i64,
    pub media_type: String,
    pub manifest: Vec<u8>,
    pub manifest_signature: String,
    pub ledger_index: i64,
    pub provider_account: String,
    pub policy: Option<String>,
    pub created_at: String,
}

/// Without the manifest (the file's original name) or the policy (its purposes), which people typed.
impl fmt::Debug for ArtefactRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtefactRow")
            .field("id", &self.id)
            .field("case_id", &self.case_id)
            .field("sha256", &self.sha256)
            .field("size", &self.size)
            .field("ledger_index", &self.ledger_index)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct WidenRequestRow {
    pub id: String,
    pub artefact_id: String,
    pub requested_by: String,
    /// The request (JSON): purposes and reasons people typed.
    pub request: String,
    pub status: String,
    pub decided_by: Option<String>,
    pub decision_ledger_index: Option<i64>,
    pub created_at: String,
}

impl fmt::Debug for WidenRequestRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WidenRequestRow")
            .field("id", &self.id)
            .field("artefact_id", &self.artefact_id)
            .field("status", &self.status)
            .field("decision_ledger_index", &self.decision_ledger_index)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct OutcomeRow {
    pub id: String,
    pub artefact_id: String,
    pub filed_by: String,
    pub outcome: String,
    /// What the person who filed it typed.
    pub note: Option<String>,
    pub ledger_index: i64,
    pub created_at: String,
}

impl fmt::Debug for OutcomeRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutcomeRow")
            .field("id", &self.id)
            .field("artefact_id", &self.artefact_id)
            .field("outcome", &self.outcome)
            .field("ledger_index", &self.ledger_index)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A resumable upload in progress. Its bytes are its chunks ([`UploadChunk`]) in offset order; `offset` is where
/// they end.
#[derive(Clone, PartialEq, Eq)]
pub struct UploadRow {
    pub id: String,
    pub case_id: String,
    pub account_id: String,
    pub length: i64,
    pub offset: i64,
    /// What the client said of the upload (its file name, its purpose).
    pub metadata: String,
    /// Unix seconds, on this process's clock (stored on the database's).
    pub expires_at: i64,
    /// The claim on the upload's completion, while one gateway takes it into custody
    /// ([`Catalog::claim_upload_completion`]).
    pub completing: Option<UploadClaim>,
}

impl fmt::Debug for UploadRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UploadRow")
            .field("id", &self.id)
            .field("case_id", &self.case_id)
            .field("length", &self.length)
            .field("offset", &self.offset)
            .field("expires_at", &self.expires_at)
            .field("completing", &self.completing)
            .finish_non_exhaustive()
    }
}

/// A gateway's claim on a resumable upload's completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadClaim {
    /// The object of the upload's last chunk, which no chunk record names.
    pub object: String,
    /// When the claim was last renewed: unix seconds, on this process's clock (stored on the database's).
    pub renewed_at: i64,
}

/// One chunk of a resumable upload: the object holding its `size` bytes from `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadChunk {
    pub offset: i64,
    pub size: i64,
    pub object: String,
}

/// A partner log this gateway witnesses, and the latest checkpoint it cosigned of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessedLog {
    pub origin: String,
    /// The log's key, pinned when the log was first configured.
    pub vkey: String,
    pub size: i64,
    /// Base64 root hash of the tree of `size`.
    pub root: String,
    /// The checkpoint as the log signed it, with this witness's cosignature appended; none before the first.
    pub cosigned_note: Option<String>,
    pub updated_at: String,
}

/// A checkpoint a witness has just decided to cosign.
#[derive(Debug, Clone, Copy)]
pub struct WitnessedCheckpoint<'a> {
    pub size: i64,
    pub root: &'a str,
    pub cosigned_note: &'a str,
}

/// What this gateway's log holds of one of its own witnesses: its latest cosignature and any alarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessCosignature {
    pub witness_vkey: String,
    pub size: Option<i64>,
    /// The checkpoint cosigned, as the log signed it.
    pub checkpoint: Option<String>,
    /// The cosignature line.
    pub cosignature: Option<String>,
    pub alarm: Option<String>,
    pub updated_at: String,
}

fn witness_cosignature(row: &AnyRow) -> sqlx::Result<WitnessCosignature> {
    Ok(WitnessCosignature {
        witness_vkey: row.try_get("witness_vkey")?,
        size: row.try_get("size")?,
        checkpoint: row.try_get("checkpoint")?,
        cosignature: row.try_get("cosignature")?,
        alarm: row.try_get("alarm")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn witnessed_log(row: &AnyRow) -> sqlx::Result<WitnessedLog> {
    Ok(WitnessedLog {
        origin: row.try_get("origin")?,
        vkey: row.try_get("vkey")?,
        size: row.try_get("size")?,
        root: row.try_get("root")?,
        cosigned_note: row.try_get("cosigned_note")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn account(row: &AnyRow) -> sqlx::Result<Account> {
    Ok(Account {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        password_hash: row.try_get("password_hash")?,
        is_admin: row.try_get::<i64, _>("is_admin")? != 0,
        jurisdiction: row.try_get("jurisdiction")?,
    })
}

fn artefact(row: &AnyRow) -> sqlx::Result<ArtefactRow> {
    Ok(ArtefactRow {
        id: row.try_get("id")?,
        case_id: row.try_get("case_id")?,
        sha256: row.try_get("sha256")?,
        size: row.try_get("size")?,
        media_type: row.try_get("media_type")?,
        manifest: row.try_get("manifest")?,
        manifest_signature: row.try_get("manifest_signature")?,
        ledger_index: row.try_get("ledger_index")?,
        provider_account: row.try_get("provider_account")?,
        policy: row.try_get("policy")?,
        created_at: row.try_get("created_at")?,
    })
}

fn widen_request(row: &AnyRow) -> sqlx::Result<WidenRequestRow> {
    Ok(WidenRequestRow {
        id: row.try_get("id")?,
        artefact_id: row.try_get("artefact_id")?,
        requested_by: row.try_get("requested_by")?,
        request: row.try_get("request")?,
        status: row.try_get("status")?,
        decided_by: row.try_get("decided_by")?,
        decision_ledger_index: row.try_get("decision_ledger_index")?,
        created_at: row.try_get("created_at")?,
    })
}

/// An upload's row ([`UPLOAD_SELECT`]), its times back on this process's clock.
fn upload(row: &AnyRow, shift: Shift) -> sqlx::Result<UploadRow> {
    let completing: Option<String> = row.try_get("completing")?;
    let completing_at: Option<i64> = row.try_get("completing_at")?;
    Ok(UploadRow {
        id: row.try_get("id")?,
        case_id: row.try_get("case_id")?,
        account_id: row.try_get("account_id")?,
        length: row.try_get("length")?,
        offset: row.try_get("upload_offset")?,
        metadata: row.try_get("metadata")?,
        expires_at: shift.on_this_clock(row.try_get("expires_at")?),
        completing: completing
            .map(|object| UploadClaim { object, renewed_at: shift.on_this_clock(completing_at.unwrap_or(0)) }),
    })
}

/// Within a transaction that holds upload `id`'s row lock: whether a gateway claims its completion (read after the
/// lock, so that a claim committed before it is seen).
async fn claimed(tx: &mut sqlx::Transaction<'_, sqlx::Any>, id: &str) -> Result<bool> {
    let row = sqlx::query("SELECT COUNT(*) AS claims FROM upload_claims WHERE upload_id = $1")
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.try_get::<i64, _>("claims")? > 0)
}

/// Within a membership change: takes the case's row lock first (so that two changes to one case's members take
/// turns on PostgreSQL too; SQLite has one writer anyway), then counts its clerks.
async fn lock_case_and_count_clerks(tx: &mut sqlx::Transaction<'_, sqlx::Any>, case_id: &str) -> Result<i64> {
    sqlx::query("UPDATE cases SET id = id WHERE id = $1").bind(case_id).execute(&mut **tx).await?;
    count_clerks(tx, case_id).await
}

async fn count_clerks(tx: &mut sqlx::Transaction<'_, sqlx::Any>, case_id: &str) -> Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) AS clerks FROM members WHERE case_id = $1 AND role = 'clerk'")
        .bind(case_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.try_get("clerks")?)
}

/// Refuses (and so rolls back) a change that took the case's last clerk away.
async fn keep_a_clerk(tx: &mut sqlx::Transaction<'_, sqlx::Any>, case_id: &str, clerks_before: i64) -> Result<()> {
    if clerks_before > 0 && count_clerks(tx, case_id).await? == 0 { Err(CatalogError::LastClerk) } else { Ok(()) }
}

/// An upload's row with its completion's claim, if any.
const UPLOAD_SELECT: &str = "SELECT uploads.id, uploads.case_id, uploads.account_id, uploads.length, \
                             uploads.upload_offset, uploads.metadata, uploads.expires_at, \
                             upload_claims.object AS completing, upload_claims.renewed_at AS completing_at \
                             FROM uploads LEFT JOIN upload_claims ON upload_claims.upload_id = uploads.id";

const ARTEFACT_COLUMNS: &str = "id, case_id, sha256, size, media_type, manifest, manifest_signature, ledger_index, \
                                provider_account, policy, created_at";

impl Catalog {
    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://...`) and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            // SQLite allows one writer; more connections only queue on its lock.
            .max_connections(if sqlite { 4 } else { 16 })
            // A database that is down fails a request within seconds (a 503 the client may retry), not after 30.
            .acquire_timeout(std::time::Duration::from_secs(5))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if sqlite {
                        // WAL with synchronous=FULL: a committed transaction survives power loss.
                        for pragma in [
                            "PRAGMA journal_mode=WAL",
                            "PRAGMA synchronous=FULL",
                            "PRAGMA foreign_keys=ON",
                            "PRAGMA busy_timeout=10000",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        schema::migrate(&pool, if sqlite { schema::Dialect::Sqlite } else { schema::Dialect::Postgres }).await?;
        Ok(Self {
            pool,
            postgres_url: (!sqlite).then(|| Arc::from(url)),
            integration: Arc::default(),
            sequencer: Arc::default(),
            budget_salt: Arc::default(),
            budgets_pruned_at: Arc::default(),
            database_clock: Arc::default(),
            turns: Arc::new(if sqlite { turns::Turns::default() } else { turns::Turns::on_postgres(url)? }),
            turn_fences: Arc::new([]),
        })
    }

    /// Whether this is an embedded SQLite catalog, which one gateway at a time uses (the one that holds its data
    /// directory's lock): whatever another gateway process left in it, that process is gone.
    pub fn is_embedded(&self) -> bool {
        self.postgres_url.is_none()
    }

    /// Whether the database answers a query now (a readiness check): a round trip, reading nothing.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // Accounts, sessions and tokens.

    pub async fn create_account(&self, account: &Account, created_at: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO accounts (id, username, display_name, password_hash, is_admin, jurisdiction, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&account.id)
        .bind(&account.username)
        .bind(&account.display_name)
        .bind(&account.password_hash)
        .bind(i64::from(account.is_admin))
        .bind(&account.jurisdiction)
        .bind(created_at)
        .execute(&self.pool)
        .await
        .map_err(|err| CatalogError::from_insert(err, "an account with that username"))?;
        Ok(())
    }

    pub async fn account(&self, id: &str) -> Result<Option<Account>> {
        let row = sqlx::query("SELECT * FROM accounts WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(account).transpose()?)
    }

    /// The account of this username, disabled or not.
    pub async fn account_named(&self, username: &str) -> Result<Option<Account>> {
        let row =
            sqlx::query("SELECT * FROM accounts WHERE username = $1").bind(username).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(account).transpose()?)
    }

    /// The account of this username, unless it is disabled.
    pub async fn account_by_username(&self, username: &str) -> Result<Option<Account>> {
        let row = sqlx::query("SELECT * FROM accounts WHERE username = $1 AND disabled_at IS NULL")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(account).transpose()?)
    }

    /// The account, unless it is disabled: what may authenticate.
    pub async fn active_account(&self, id: &str) -> Result<Option<Account>> {
        let row = sqlx::query("SELECT * FROM accounts WHERE id = $1 AND disabled_at IS NULL")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(account).transpose()?)
    }

    /// Disables an account at `at`, ends all its sessions and revokes all its API tokens, in one transaction.
    /// `false` if there is no such account. Disabling a disabled account keeps its first date.
    pub async fn disable_account(&self, id: &str, at: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // Writes first: a SQLite transaction that reads and then writes fails at once (SQLITE_BUSY, no waiting)
        // when another connection committed in between; one that writes first waits for the lock instead.
        let disabled = sqlx::query("UPDATE accounts SET disabled_at = COALESCE(disabled_at, $2) WHERE id = $1")
            .bind(id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        if disabled.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM sessions WHERE account_id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("UPDATE api_tokens SET revoked = 1 WHERE account_id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes the sessions that expired by `now` (unix seconds); returns how many.
    pub async fn purge_expired_sessions(&self, now: i64) -> Result<u64> {
        let now = self.shift().await.on_database(now);
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    /// Every account, by username, with when it was disabled (`None` while it is active): for administrators.
    pub async fn accounts(&self) -> Result<Vec<(Account, Option<String>)>> {
        let rows = sqlx::query("SELECT * FROM accounts ORDER BY username").fetch_all(&self.pool).await?;
        rows.iter().map(|row| Ok((account(row)?, row.try_get("disabled_at")?))).collect()
    }

    pub async fn count_accounts(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM accounts").fetch_one(&self.pool).await?.try_get("n")?)
    }

    /// Stores a session that expires at `expires_at` (unix seconds).
    pub async fn create_session(&self, token_sha256: &str, account_id: &str, expires_at: i64) -> Result<()> {
        let expires_at = self.shift().await.on_database(expires_at);
        sqlx::query("INSERT INTO sessions (token_sha256, account_id, expires_at) VALUES ($1, $2, $3)")
            .bind(token_sha256)
            .bind(account_id)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The account of a session that has not expired by `now` (unix seconds).
    pub async fn session_account(&self, token_sha256: &str, now: i64) -> Result<Option<String>> {
        let now = self.shift().await.on_database(now);
        let row = sqlx::query("SELECT account_id FROM sessions WHERE token_sha256 = $1 AND expires_at > $2")
            .bind(token_sha256)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("account_id")).transpose()?)
    }

    pub async fn delete_session(&self, token_sha256: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_sha256 = $1").bind(token_sha256).execute(&self.pool).await?;
        Ok(())
    }

    /// Stores `token`, which expires at its `expires_at` (unix seconds).
    pub async fn create_api_token(&self, token: &ApiToken, token_sha256: &str) -> Result<()> {
        let expires_at = self.shift().await.on_database(token.expires_at);
        sqlx::query(
            "INSERT INTO api_tokens (id, token_sha256, account_id, scopes, expires_at, revoked) \
             VALUES ($1, $2, $3, $4, $5, 0)",
        )
        .bind(&token.id)
        .bind(token_sha256)
        .bind(&token.account_id)
        .bind(&token.scopes)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The token whose secret's SHA-256 is `token_sha256`, its expiry on this process's clock.
    pub async fn api_token(&self, token_sha256: &str) -> Result<Option<ApiToken>> {
        let row = sqlx::query("SELECT * FROM api_tokens WHERE token_sha256 = $1")
            .bind(token_sha256)
            .fetch_optional(&self.pool)
            .await?;
        let shift = self.shift().await;
        let token = |row: &AnyRow| -> sqlx::Result<ApiToken> {
            Ok(ApiToken {
                id: row.try_get("id")?,
                account_id: row.try_get("account_id")?,
                scopes: row.try_get("scopes")?,
                expires_at: shift.on_this_clock(row.try_get("expires_at")?),
                revoked: row.try_get::<i64, _>("revoked")? != 0,
            })
        };
        Ok(row.as_ref().map(token).transpose()?)
    }

    /// Revokes a token of `account_id`. Returns false if it has no such token.
    pub async fn revoke_api_token(&self, id: &str, account_id: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE api_tokens SET revoked = 1 WHERE id = $1 AND account_id = $2")
            .bind(id)
            .bind(account_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    // Cases and members.

    pub async fn create_case(&self, case: &Case) -> Result<()> {
        sqlx::query("INSERT INTO cases (id, title, created_at) VALUES ($1, $2, $3)")
            .bind(&case.id)
            .bind(&case.title)
            .bind(&case.created_at)
            .execute(&self.pool)
            .await
            .map_err(|err| CatalogError::from_insert(err, format!("case {}", case.id)))?;
        Ok(())
    }

    pub async fn case(&self, id: &str) -> Result<Option<Case>> {
        let row = sqlx::query("SELECT * FROM cases WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        let case = |row: &AnyRow| -> sqlx::Result<Case> {
            Ok(Case { id: row.try_get("id")?, title: row.try_get("title")?, created_at: row.try_get("created_at")? })
        };
        Ok(row.as_ref().map(case).transpose()?)
    }

    /// Every case, by id: for administrators.
    pub async fn cases(&self) -> Result<Vec<Case>> {
        let rows = sqlx::query("SELECT id, title, created_at FROM cases ORDER BY id").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                Ok(Case {
                    id: row.try_get("id")?,
                    title: row.try_get("title")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// The cases `account_id` is a member of.
    pub async fn cases_of(&self, account_id: &str) -> Result<Vec<(Case, String)>> {
        let rows = sqlx::query(
            "SELECT c.id, c.title, c.created_at, m.role FROM cases c JOIN members m ON m.case_id = c.id \
             WHERE m.account_id = $1 ORDER BY c.id",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let case = Case {
                    id: row.try_get("id")?,
                    title: row.try_get("title")?,
                    created_at: row.try_get("created_at")?,
                };
                Ok((case, row.try_get("role")?))
            })
            .collect()
    }

    /// Adds a member, or changes their role. A case that has a clerk keeps one ([`CatalogError::LastClerk`]).
    pub async fn set_member(&self, case_id: &str, account_id: &str, role: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let clerks_before = lock_case_and_count_clerks(&mut tx, case_id).await?;
        sqlx::query("DELETE FROM members WHERE case_id = $1 AND account_id = $2")
            .bind(case_id)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO members (case_id, account_id, role) VALUES ($1, $2, $3)")
            .bind(case_id)
            .bind(account_id)
            .bind(role)
            .execute(&mut *tx)
            .await?;
        keep_a_clerk(&mut tx, case_id, clerks_before).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a member; false if they were not one. A case that has a clerk keeps one
    /// ([`CatalogError::LastClerk`]).
    pub async fn remove_member(&self, case_id: &str, account_id: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let clerks_before = lock_case_and_count_clerks(&mut tx, case_id).await?;
        let done = sqlx::query("DELETE FROM members WHERE case_id = $1 AND account_id = $2")
            .bind(case_id)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        keep_a_clerk(&mut tx, case_id, clerks_before).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn member_role(&self, case_id: &str, account_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT role FROM members WHERE case_id = $1 AND account_id = $2")
            .bind(case_id)
            .bind(account_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("role")).transpose()?)
    }

    pub async fn members(&self, case_id: &str) -> Result<Vec<Member>> {
        let rows = sqlx::query("SELECT account_id, role FROM members WHERE case_id = $1 ORDER BY account_id")
            .bind(case_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok(Member { account_id: row.try_get("account_id")?, role: row.try_get("role")? }))
            .collect()
    }

    // Artefacts and their policies.

    pub async fn insert_artefact(&self, artefact: &ArtefactRow) -> Result<()> {
        self.insert_artefact_of(artefact, None).await
    }

    /// Inserts an artefact, and with `hearing` (the hearing whose output it is) counts it as that hearing's output
    /// in the same transaction: for its case, and never against its provider's stored bytes
    /// ([`Catalog::stored_bytes_of`]).
    pub async fn insert_artefact_of(&self, artefact: &ArtefactRow, hearing: Option<&str>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_artefact_row(&mut tx, artefact, hearing)
            .await
            .map_err(|err| CatalogError::from_insert(err, format!("artefact {}", artefact.id)))?;
        tx.commit().await?;
        Ok(())
    }

    /// The bytes of the hearing output of `case_id` in custody: what its hearings recorded, counted for the case.
    pub async fn hearing_output_bytes(&self, case_id: &str) -> Result<i64> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes FROM hearing_output WHERE case_id = $1",
        )
        .bind(case_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("bytes")?)
    }

    pub async fn artefact(&self, id: &str) -> Result<Option<ArtefactRow>> {
        let row = sqlx::query(&format!("SELECT {ARTEFACT_COLUMNS} FROM artefacts WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(artefact).transpose()?)
    }

    pub async fn artefacts_in_case(&self, case_id: &str) -> Result<Vec<ArtefactRow>> {
        let rows =
            sqlx::query(&format!("SELECT {ARTEFACT_COLUMNS} FROM artefacts WHERE case_id = $1 ORDER BY ledger_index"))
                .bind(case_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(artefact).collect::<sqlx::Result<_>>()?)
    }

    pub async fn set_policy(&self, artefact_id: &str, policy: &str) -> Result<()> {
        sqlx::query("UPDATE artefacts SET policy = $1 WHERE id = $2")
            .bind(policy)
            .bind(artefact_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // The custody index: written where entries are sequenced (`sequencing`); caught up from the ledger only for a
    // catalog that predates the log's coordination.

    /// Records that ledger entry `ledger_index` concerns `case_id` (and `artefact_id`), for an entry the ledger
    /// holds but the index lacks (`Gateway::reindex`, over a log that predates its coordination); every entry
    /// sequenced through this catalog is indexed in the transaction that sequences it. Idempotent.
    pub async fn index_custody(
        &self,
        ledger_index: i64,
        case_id: &str,
        artefact_id: Option<&str>,
        record: &[u8],
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO custody_index (ledger_index, case_id, artefact_id, record) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (ledger_index) DO NOTHING",
        )
        .bind(ledger_index)
        .bind(case_id)
        .bind(artefact_id)
        .bind(record)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Keeps the openings of a ledger entry's commitments, before the entry is appended. Idempotent.
    pub async fn store_openings(&self, record_sha256: &str, openings: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO custody_openings (record_sha256, openings) VALUES ($1, $2) \
             ON CONFLICT (record_sha256) DO NOTHING",
        )
        .bind(record_sha256)
        .bind(openings)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The openings of the ledger entry with this SHA-256.
    pub async fn openings(&self, record_sha256: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT openings FROM custody_openings WHERE record_sha256 = $1")
            .bind(record_sha256)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.try_get("openings")).transpose()?)
    }

    /// The log's own entries on `shelf` (its RFC 3161 timestamps, or the pins of the partner registry), with ledger
    /// indexes from `from` up to but not including `to`, newest first, at most `limit` of them.
    pub async fn log_entries_newest_first(
        &self,
        shelf: LogShelf,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>> {
        let rows = sqlx::query(
            "SELECT ledger_index, record FROM custody_index WHERE case_id = $1 AND ledger_index >= $2 \
             AND ledger_index < $3 ORDER BY ledger_index DESC LIMIT $4",
        )
        .bind(shelf.case_id())
        .bind(from)
        .bind(to)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok((row.try_get("ledger_index")?, row.try_get("record")?))).collect()
    }

    /// The first ledger index missing from the custody index: every index below it is there. Indexes above it may
    /// be there too (appends index concurrently, and a failed index write leaves a gap), so this is the start of the
    /// first gap, never one past the highest index.
    pub async fn custody_indexed_up_to(&self) -> Result<i64> {
        let row = sqlx::query(
            "SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM custody_index WHERE ledger_index = 0) THEN 0 \
             ELSE (SELECT MIN(c.ledger_index) + 1 FROM custody_index c WHERE NOT EXISTS \
             (SELECT 1 FROM custody_index d WHERE d.ledger_index = c.ledger_index + 1)) END AS n",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// The ledger indexes in `from..to` that the custody index holds, in order.
    pub async fn custody_indexed_between(&self, from: i64, to: i64) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT ledger_index FROM custody_index WHERE ledger_index >= $1 AND ledger_index < $2 \
             ORDER BY ledger_index",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok(row.try_get("ledger_index")?)).collect()
    }

    /// The ledger index of the latest record about an artefact.
    pub async fn last_custody_index(&self, artefact_id: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MAX(ledger_index) AS last FROM custody_index WHERE artefact_id = $1")
            .bind(artefact_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("last")?)
    }

    /// The custody records about artefacts the catalog does not list, in ledger order: registrations whose
    /// artefact row a stopped gateway never wrote.
    pub async fn records_about_unlisted_artefacts(&self) -> Result<Vec<(i64, Vec<u8>)>> {
        let rows = sqlx::query(
            "SELECT c.ledger_index, c.record FROM custody_index c WHERE c.artefact_id IS NOT NULL AND NOT EXISTS \
             (SELECT 1 FROM artefacts a WHERE a.id = c.artefact_id) ORDER BY c.ledger_index",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok((row.try_get("ledger_index")?, row.try_get("record")?))).collect()
    }

    /// Every custody record about an artefact, in ledger order.
    pub async fn artefact_timeline(&self, artefact_id: &str) -> Result<Vec<(i64, Vec<u8>)>> {
        let rows =
            sqlx::query("SELECT ledger_index, record FROM custody_index WHERE artefact_id = $1 ORDER BY ledger_index")
                .bind(artefact_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|row| Ok((row.try_get("ledger_index")?, row.try_get("record")?))).collect()
    }

    // Requests to widen use, and outcome reports.

    pub async fn insert_widen_request(&self, request: &WidenRequestRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO widen_requests (id, artefact_id, requested_by, request, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&request.id)
        .bind(&request.artefact_id)
        .bind(&request.requested_by)
        .bind(&request.request)
        .bind(&request.status)
        .bind(&request.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn widen_request(&self, id: &str) -> Result<Option<WidenRequestRow>> {
        let row = sqlx::query("SELECT * FROM widen_requests WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(widen_request).transpose()?)
    }

    pub async fn widen_requests_for(&self, artefact_id: &str) -> Result<Vec<WidenRequestRow>> {
        let rows = sqlx::query("SELECT * FROM widen_requests WHERE artefact_id = $1 ORDER BY created_at, id")
            .bind(artefact_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(widen_request).collect::<sqlx::Result<_>>()?)
    }

    /// Records the provider's decision on a pending request, together with the artefact's resulting policy, in
    /// one transaction. Returns false if the request was not pending (decided already, or raced).
    pub async fn decide_widen_request(
        &self,
        id: &str,
        status: &str,
        decided_by: &str,
        ledger_index: i64,
        new_policy: Option<(&str, &str)>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE widen_requests SET status = $1, decided_by = $2, decision_ledger_index = $3 \
             WHERE id = $4 AND status = 'pending'",
        )
        .bind(status)
        .bind(decided_by)
        .bind(ledger_index)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        if let Some((artefact_id, policy)) = new_policy {
            sqlx::query("UPDATE artefacts SET policy = $1 WHERE id = $2")
                .bind(policy)
                .bind(artefact_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub async fn insert_outcome(&self, outcome: &OutcomeRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO outcomes (id, artefact_id, filed_by, outcome, note, ledger_index, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&outcome.id)
        .bind(&outcome.artefact_id)
        .bind(&outcome.filed_by)
        .bind(&outcome.outcome)
        .bind(&outcome.note)
        .bind(outcome.ledger_index)
        .bind(&outcome.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn outcomes_for(&self, artefact_id: &str) -> Result<Vec<OutcomeRow>> {
        let rows = sqlx::query("SELECT * FROM outcomes WHERE artefact_id = $1 ORDER BY ledger_index")
            .bind(artefact_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(OutcomeRow {
                    id: row.try_get("id")?,
                    artefact_id: row.try_get("artefact_id")?,
                    filed_by: row.try_get("filed_by")?,
                    outcome: row.try_get("outcome")?,
                    note: row.try_get("note")?,
                    ledger_index: row.try_get("ledger_index")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    // Hearing journals: each live hearing's accepted steps, in order, so that it can be replayed after a restart.

    /// Appends entry `seq` of a hearing's journal; durable when this returns. A `seq` already taken is an error,
    /// so two writers can never interleave one journal.
    ///
    /// With a `fence`, only while its node holds the hearing's lease under its epoch, checked in the transaction
    /// that appends ([`CatalogError::LeaseLost`] otherwise, and nothing is appended).
    pub async fn append_hearing_journal(
        &self,
        hearing_id: &str,
        seq: i64,
        entry: &str,
        fence: Option<&HearingFence>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if let Some(fence) = fence {
            leases::check_fence(&mut tx, fence).await?;
        }
        sqlx::query("INSERT INTO hearing_journal (hearing_id, seq, entry) VALUES ($1, $2, $3)")
            .bind(hearing_id)
            .bind(seq)
            .bind(entry)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One hearing's journal, in order (empty if it has none).
    pub async fn hearing_journal(&self, hearing_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT entry FROM hearing_journal WHERE hearing_id = $1 ORDER BY seq")
            .bind(hearing_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| Ok(row.try_get("entry")?)).collect()
    }

    /// Every hearing's journal, each in order.
    pub async fn hearing_journals(&self) -> Result<Vec<(String, Vec<String>)>> {
        let rows = sqlx::query("SELECT hearing_id, entry FROM hearing_journal ORDER BY hearing_id, seq")
            .fetch_all(&self.pool)
            .await?;
        let mut journals: Vec<(String, Vec<String>)> = Vec::new();
        for row in &rows {
            let hearing: String = row.try_get("hearing_id")?;
            let entry: String = row.try_get("entry")?;
            match journals.last_mut() {
                Some((last, entries)) if *last == hearing => entries.push(entry),
                _ => journals.push((hearing, vec![entry])),
            }
        }
        Ok(journals)
    }

    // Resumable uploads.

    /// Stores a new upload, which expires at its `expires_at` (unix seconds).
    pub async fn create_upload(&self, upload: &UploadRow) -> Result<()> {
        let expires_at = self.shift().await.on_database(upload.expires_at);
        sqlx::query(
            "INSERT INTO uploads (id, case_id, account_id, length, upload_offset, metadata, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&upload.id)
        .bind(&upload.case_id)
        .bind(&upload.account_id)
        .bind(upload.length)
        .bind(upload.offset)
        .bind(&upload.metadata)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Upload `id`, its times on this process's clock.
    pub async fn upload(&self, id: &str) -> Result<Option<UploadRow>> {
        let row =
            sqlx::query(&format!("{UPLOAD_SELECT} WHERE uploads.id = $1")).bind(id).fetch_optional(&self.pool).await?;
        let shift = self.shift().await;
        Ok(row.as_ref().map(|row| upload(row, shift)).transpose()?)
    }

    /// Records `chunk` as the next bytes of upload `id` and moves its offset past them, in one transaction: only
    /// if the upload is still at the chunk's offset (a compare-and-set, so that of two requests racing at one
    /// offset, on any gateways, one alone records its chunk), has not expired at `now`, and no gateway claims its
    /// completion. False, and nothing recorded, otherwise: the chunk's object is then no part of the upload.
    pub async fn record_upload_chunk(&self, id: &str, chunk: &UploadChunk, now: i64) -> Result<bool> {
        let now = self.shift().await.on_database(now);
        let mut tx = self.pool.begin().await?;
        // The offset moves first, taking the upload's row lock; a claim committed before it is then seen below, and
        // one after it finds the offset moved.
        let moved = sqlx::query(
            "UPDATE uploads SET upload_offset = $1 WHERE id = $2 AND upload_offset = $3 AND expires_at > $4",
        )
        .bind(chunk.offset + chunk.size)
        .bind(id)
        .bind(chunk.offset)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 || claimed(&mut tx, id).await? {
            return Ok(false);
        }
        sqlx::query("INSERT INTO upload_chunks (upload_id, chunk_offset, size, object) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(chunk.offset)
            .bind(chunk.size)
            .bind(&chunk.object)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// An upload's chunks, in offset order.
    pub async fn upload_chunks(&self, id: &str) -> Result<Vec<UploadChunk>> {
        let rows = sqlx::query(
            "SELECT chunk_offset, size, object FROM upload_chunks WHERE upload_id = $1 ORDER BY chunk_offset",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(UploadChunk {
                    offset: row.try_get("chunk_offset")?,
                    size: row.try_get("size")?,
                    object: row.try_get("object")?,
                })
            })
            .collect()
    }

    /// Whether `object` holds bytes of upload `id`: one of its chunks, or the last chunk of its claimed completion.
    pub async fn upload_holds_object(&self, id: &str, object: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM upload_chunks WHERE upload_id = $1 AND object = $2) \
             + (SELECT COUNT(*) FROM upload_claims WHERE upload_id = $3 AND object = $4) AS held",
        )
        .bind(id)
        .bind(object)
        .bind(id)
        .bind(object)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("held")? > 0)
    }

    /// Claims the completion of upload `id`, whose last chunk (not recorded) is `object`, as of `now`: only if the
    /// upload is at `offset`, has not expired at `now` and no one else claims it. In the same transaction the upload
    /// is kept open until `until`, so that its reservation counts against its account's quota until its artefact
    /// does. The claim holds while it is renewed ([`Catalog::renew_upload_claim`]); false, and nothing changed,
    /// otherwise.
    pub async fn claim_upload_completion(
        &self,
        id: &str,
        offset: i64,
        object: &str,
        now: i64,
        until: i64,
    ) -> Result<bool> {
        let shift = self.shift().await;
        let (now, until) = (shift.on_database(now), shift.on_database(until));
        let mut tx = self.pool.begin().await?;
        let held =
            sqlx::query("UPDATE uploads SET expires_at = $1 WHERE id = $2 AND upload_offset = $3 AND expires_at > $4")
                .bind(until)
                .bind(id)
                .bind(offset)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        if held.rows_affected() != 1 || claimed(&mut tx, id).await? {
            return Ok(false);
        }
        sqlx::query("INSERT INTO upload_claims (upload_id, object, renewed_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(object)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Renews the claim on upload `id`'s completion whose last chunk is `object`, as of `now`; false if that claim
    /// is no longer held (released as stale, or the upload removed).
    pub async fn renew_upload_claim(&self, id: &str, object: &str, now: i64) -> Result<bool> {
        let now = self.shift().await.on_database(now);
        let done = sqlx::query("UPDATE upload_claims SET renewed_at = $1 WHERE upload_id = $2 AND object = $3")
            .bind(now)
            .bind(id)
            .bind(object)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Releases the claim on upload `id`'s completion whose last chunk is `object`, if it was last renewed before
    /// `renewed_before` (`i64::MAX`: the holder's own release); the upload stays at its offset. False if no such
    /// claim is held.
    pub async fn release_upload_claim(&self, id: &str, object: &str, renewed_before: i64) -> Result<bool> {
        let renewed_before = self.shift().await.on_database(renewed_before);
        let done = sqlx::query("DELETE FROM upload_claims WHERE upload_id = $1 AND object = $2 AND renewed_at < $3")
            .bind(id)
            .bind(object)
            .bind(renewed_before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes upload `id` with its chunks' rows and any claim, in one transaction, unless a claim on its
    /// completion was renewed at or after `claims_renewed_before` (`i64::MAX`: whatever the claim). Returns the
    /// objects that held its bytes (its chunks', and a claim's last chunk's), for the caller to delete; `None` if
    /// the upload is gone or its completion is claimed.
    pub async fn delete_upload(&self, id: &str, claims_renewed_before: i64) -> Result<Option<Vec<String>>> {
        let claims_renewed_before = self.shift().await.on_database(claims_renewed_before);
        let mut tx = self.pool.begin().await?;
        // The upload's row lock first, so that a chunk or a claim being recorded meanwhile either is among those
        // read below or finds the upload gone.
        let locked = sqlx::query("UPDATE uploads SET upload_offset = upload_offset WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if locked.rows_affected() != 1 {
            return Ok(None);
        }
        let renewed: Option<i64> = sqlx::query_scalar("SELECT renewed_at FROM upload_claims WHERE upload_id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if renewed.is_some_and(|renewed| renewed >= claims_renewed_before) {
            return Ok(None);
        }
        let objects = uploads_removed(&mut tx, id).await?;
        tx.commit().await?;
        Ok(Some(objects))
    }

    /// How many resumable uploads `account_id` has open at `now`, and the bytes they declared in all.
    pub async fn open_uploads_of(&self, account_id: &str, now: i64) -> Result<(i64, i64)> {
        let now = self.shift().await.on_database(now);
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(length), 0) AS BIGINT) AS bytes FROM uploads \
             WHERE account_id = $1 AND expires_at > $2",
        )
        .bind(account_id)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("n")?, row.try_get("bytes")?))
    }

    // Partner logs this gateway witnesses.

    /// Every witnessed log, by origin.
    pub async fn witnessed_logs(&self) -> Result<Vec<WitnessedLog>> {
        let rows = sqlx::query("SELECT * FROM witnessed_logs ORDER BY origin").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(witnessed_log).collect::<sqlx::Result<_>>()?)
    }

    pub async fn witnessed_log(&self, origin: &str) -> Result<Option<WitnessedLog>> {
        let row = sqlx::query("SELECT * FROM witnessed_logs WHERE origin = $1")
            .bind(origin)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(witnessed_log).transpose()?)
    }

    /// Starts witnessing a log at size 0 with `empty_root`. False if the origin is already witnessed.
    pub async fn add_witnessed_log(&self, origin: &str, vkey: &str, empty_root: &str, at: &str) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO witnessed_logs (origin, vkey, size, root, cosigned_note, updated_at) \
             VALUES ($1, $2, 0, $3, NULL, $4) ON CONFLICT (origin) DO NOTHING",
        )
        .bind(origin)
        .bind(vkey)
        .bind(empty_root)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves a witnessed log from `old_size` to a newly cosigned checkpoint, in one statement: false, and nothing
    /// changed, if its size is no longer `old_size` (another request got there first).
    pub async fn advance_witnessed_log(
        &self,
        origin: &str,
        old_size: i64,
        new: &WitnessedCheckpoint<'_>,
        at: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE witnessed_logs SET size = $1, root = $2, cosigned_note = $3, updated_at = $4 \
             WHERE origin = $5 AND size = $6",
        )
        .bind(new.size)
        .bind(new.root)
        .bind(new.cosigned_note)
        .bind(at)
        .bind(origin)
        .bind(old_size)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // The witnesses of this gateway's own log.

    /// What is stored of every witness of this log, by key.
    pub async fn witness_cosignatures(&self) -> Result<Vec<WitnessCosignature>> {
        let rows =
            sqlx::query("SELECT * FROM witness_cosignatures ORDER BY witness_vkey").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(witness_cosignature).collect::<sqlx::Result<_>>()?)
    }

    /// Stores a witness's latest cosignature of this log (the checkpoint and the line) and clears its alarm.
    pub async fn store_witness_cosignature(
        &self,
        witness_vkey: &str,
        size: i64,
        checkpoint: &str,
        cosignature: &str,
        at: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO witness_cosignatures (witness_vkey, size, checkpoint, cosignature, alarm, updated_at) \
             VALUES ($1, $2, $3, $4, NULL, $5) ON CONFLICT (witness_vkey) DO UPDATE SET size = excluded.size, \
             checkpoint = excluded.checkpoint, cosignature = excluded.cosignature, alarm = NULL, \
             updated_at = excluded.updated_at",
        )
        .bind(witness_vkey)
        .bind(size)
        .bind(checkpoint)
        .bind(cosignature)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records an alarm against a witness of this log, keeping its latest cosignature.
    pub async fn store_witness_alarm(&self, witness_vkey: &str, alarm: &str, at: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO witness_cosignatures (witness_vkey, size, checkpoint, cosignature, alarm, updated_at) \
             VALUES ($1, NULL, NULL, NULL, $2, $3) ON CONFLICT (witness_vkey) DO UPDATE SET alarm = excluded.alarm, \
             updated_at = excluded.updated_at",
        )
        .bind(witness_vkey)
        .bind(alarm)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The bytes of the artefacts `account_id` provided (each artefact counted, however its bytes are stored), but
    /// for hearing output in its name ([`Catalog::insert_artefact_of`]): that is the court's, not the person's.
    pub async fn stored_bytes_of(&self, account_id: &str) -> Result<i64> {
        let mut bytes = [0i64; 2];
        for (sum, table) in bytes.iter_mut().zip(["artefacts", "hearing_output"]) {
            let row = sqlx::query(&format!(
                "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) AS bytes FROM {table} WHERE provider_account = $1"
            ))
            .bind(account_id)
            .fetch_one(&self.pool)
            .await?;
            *sum = row.try_get("bytes")?;
        }
        Ok(bytes[0].saturating_sub(bytes[1]))
    }

    /// The uploads expired by `now` (unix seconds).
    pub async fn expired_uploads(&self, now: i64) -> Result<Vec<UploadRow>> {
        let shift = self.shift().await;
        let rows = sqlx::query(&format!("{UPLOAD_SELECT} WHERE uploads.expires_at <= $1"))
            .bind(shift.on_database(now))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|row| upload(row, shift)).collect::<sqlx::Result<_>>()?)
    }
}

/// Removes upload `id` inside `tx`, with its claim and its chunks' rows: the objects that held its bytes (its
/// chunks', and a claim's last chunk's), for the caller to delete once `tx` commits.
pub(crate) async fn uploads_removed(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &str,
) -> sqlx::Result<Vec<String>> {
    let mut objects: Vec<String> =
        sqlx::query_scalar("DELETE FROM upload_claims WHERE upload_id = $1 RETURNING object")
            .bind(id)
            .fetch_all(&mut **tx)
            .await?;
    let chunks: Vec<String> = sqlx::query_scalar("DELETE FROM upload_chunks WHERE upload_id = $1 RETURNING object")
        .bind(id)
        .fetch_all(&mut **tx)
        .await?;
    objects.extend(chunks);
    sqlx::query("DELETE FROM uploads WHERE id = $1").bind(id).execute(&mut **tx).await?;
    Ok(objects)
}

/// Inserts `artefact`'s row inside `tx`, with `hearing` (the hearing whose output it is) counted as that hearing's
/// output ([`Catalog::insert_artefact_of`]).
pub(crate) async fn insert_artefact_row(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    artefact: &ArtefactRow,
    hearing: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(&format!(
        "INSERT INTO artefacts ({ARTEFACT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    ))
    .bind(&artefact.id)
    .bind(&artefact.case_id)
    .bind(&artefact.sha256)
    .bind(artefact.size)
    .bind(&artefact.media_type)
    .bind(&artefact.manifest)
    .bind(&artefact.manifest_signature)
    .bind(artefact.ledger_index)
    .bind(&artefact.provider_account)
    .bind(&artefact.policy)
    .bind(&artefact.created_at)
    .execute(&mut **tx)
    .await?;
    if let Some(hearing) = hearing {
        sqlx::query(
            "INSERT INTO hearing_output (artefact_id, case_id, hearing_id, provider_account, size) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&artefact.id)
        .bind(&artefact.case_id)
        .bind(hearing)
        .bind(&artefact.provider_account)
        .bind(artefact.size)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What people typed (a case's title, an upload's file name and purpose, a note, a request, an offer, a
    /// message to a partner) is in no row's `Debug`.
    #[test]
    fn rows_withhold_what_people_typed_from_debug() {
        let typed = "Maria Rossi, witness in hiding";
        let shown = [
            format!("{:?}", Case { id: "case-1".into(), title: typed.into(), created_at: "now".into() }),
            format!(
                "{:?}",
                UploadRow {
                    id: "upl-1".into(),
                    case_id: "case-1".into(),
                    account_id: "acct-1".into(),
                    length: 10,
                    offset: 0,
                    metadata: format!("filename={typed}&purpose={typed}"),
                    expires_at: 0,
                    completing: None,
                }
            ),
            format!(
                "{:?}",
                ArtefactRow {
                    id: "art-1".into(),
                    case_id: "case-1".into(),
                    sha256: "00".into(),
                    size: 1,
                    media_type: "video/webm".into(),
                    manifest: typed.as_bytes().to_vec(),
                    manifest_signature: "sig".into(),
                    ledger_index: 0,
                    provider_account: "acct-1".into(),
                    policy: Some(typed.into()),
                    created_at: "now".into(),
                }
            ),
            format!(
                "{:?}",
                OutcomeRow {
                    id: "out-1".into(),
                    artefact_id: "art-1".into(),
                    filed_by: "acct-1".into(),
                    outcome: "other".into(),
                    note: Some(typed.into()),
                    ledger_index: 0,
                    created_at: "now".into(),
                }
            ),
            format!(
                "{:?}",
                WidenRequestRow {
                    id: "wid-1".into(),
                    artefact_id: "art-1".into(),
                    requested_by: "acct-1".into(),
                    request: typed.into(),
                    status: "pending".into(),
                    decided_by: None,
                    decision_ledger_index: None,
                    created_at: "now".into(),
                }
            ),
            format!(
                "{:?}",
                TransferRow {
                    id: "xfer-1".into(),
                    direction: "out".into(),
                    partner: "it-catania".into(),
                    artefact_id: None,
                    case_id: None,
                    account_id: None,
                    size: 1,
                    sha256: "00".into(),
                    chunk_size: 1,
                    received: 0,
                    stage: "sending".into(),
                    offer: Some(typed.into()),
                    created_at: "now".into(),
                    updated_at: "now".into(),
                }
            ),
            format!(
                "{:?}",
                OutboxRow {
                    id: "box-1".into(),
                    partner: "it-catania".into(),
                    path: "/outcomes".into(),
                    body: typed.into(),
                    attempts: 0,
                    created_at: "now".into(),
                }
            ),
        ];
        let manifest_bytes = format!("{:?}", typed.as_bytes());
        for shown in shown {
            assert!(!shown.contains(typed) && !shown.contains(&manifest_bytes[1..20]), "{shown}");
        }
    }
}
