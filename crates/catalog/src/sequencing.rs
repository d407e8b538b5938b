//! The custody log's coordination rows (`custodia_ledger::coordinated`): every gateway on this database sequences
//! its entries here, and integrates them in turn under the integration row's lock.
//!
//! - An entry gets its index from `log_sequence` in the transaction that stores it in `custody_index`: the
//!   sequence row's lock, taken first, orders every appending transaction, so indices are contiguous, none is
//!   given twice, and a record's `prior` (the artefact's latest record) is read under that same lock, across
//!   processes.
//! - PostgreSQL: the integration lock is `SELECT … FOR UPDATE` on the `log_integration` row, in a transaction held
//!   until the checkpoint is published (or the holder dies: its connection goes, and the lock with it). SQLite: a
//!   catalog has one gateway, so the lock is in-process, and publishing is a short transaction.

use std::sync::Arc;

use bytes::Bytes;
use custodia_ledger::{Coordination, CoordinationError, Integrated, IntegrationLock};
use futures::future::BoxFuture;
use sqlx::{AnyPool, Row as _};

use crate::{Catalog, CatalogError, HearingFence, Result};

/// An entry sequenced into the custody log, not yet necessarily integrated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced {
    pub index: u64,
    pub entry: Vec<u8>,
}

/// The longest a PostgreSQL transaction holding the integration lock may sit idle: a gateway that stops answering
/// (frozen, cut off) loses the lock, and another integrates. Longer than a turn's writes to the store may take (S3
/// requests give up after 10 s of retries): a holder that loses the lock all the same may still write a checkpoint
/// after another's, which the next turn repairs (`custodia_ledger::coordinated`).
const IDLE_INTEGRATION_TIMEOUT: &str = "20s";
/// The longest a sequencing transaction may sit idle: it holds the sequence row's lock, which every append waits
/// for, and does nothing but a few statements.
const IDLE_SEQUENCING_TIMEOUT: &str = "5s";
/// The longest an append waits for this process's turn to sequence before it fails, retryably (while the database
/// is unreachable, each turn takes up to the pool's 5 s to fail).
const SEQUENCING_TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// The longest an append waits for the sequence row's lock before it fails, retryably.
const SEQUENCE_LOCK_WAIT: &str = "10s";
/// The longest a gateway waits for the integration lock before its turn fails (and its waiting appends are answered
/// with a retryable error): a turn takes milliseconds, so a wait this long means the holder is stuck.
const INTEGRATION_LOCK_WAIT: &str = "15s";

impl Catalog {
    /// Sequences a custody record about `case_id` (and `artefact_id`): gives it the log's next index, stores it in
    /// the custody index, and keeps `openings` (the openings of its commitments) under its SHA-256, in one
    /// transaction. `entry_for` makes the entry and its SHA-256 (hex) from the index of the artefact's latest
    /// record (its `prior`; `None` for the artefact's first record, or a record about no artefact), read in that
    /// transaction; if it fails, nothing is sequenced and its error is returned inside `Ok`.
    ///
    /// A record a hearing room writes carries the room's `fence`: it is sequenced only if the fence's node still
    /// holds the hearing's lease under the fence's epoch, checked in the same transaction; otherwise nothing is
    /// sequenced and the error is [`CatalogError::LeaseLost`].
    pub async fn sequence_custody<E>(
        &self,
        case_id: &str,
        artefact_id: Option<&str>,
        openings: &str,
        fence: Option<&HearingFence>,
        entry_for: impl FnOnce(Option<u64>) -> std::result::Result<(Vec<u8>, String), E>,
    ) -> Result<std::result::Result<Sequenced, E>> {
        self.sequence(case_id, artefact_id, Some(openings), fence, entry_for).await
    }

    async fn sequence<E>(
        &self,
        case_id: &str,
        artefact_id: Option<&str>,
        openings: Option<&str>,
        fence: Option<&HearingFence>,
        entry_for: impl FnOnce(Option<u64>) -> std::result::Result<(Vec<u8>, String), E>,
    ) -> Result<std::result::Result<Sequenced, E>> {
        // One sequencing transaction at a time from this process: the sequence row's lock orders every gateway's
        // appends anyway, and a gateway that freezes then holds or awaits it on one connection, not on many that
        // would each hold it in turn once the database ends the first.
        let _turn = tokio::time::timeout(SEQUENCING_TURN_WAIT, self.sequencing.lock())
            .await
            .map_err(|_| CatalogError::Busy { waited: SEQUENCING_TURN_WAIT })?;
        let mut tx = self.pool.begin().await?;
        if self.postgres_url.is_some() {
            // A gateway that stops answering while it holds the lock (frozen, cut off) loses it within seconds, and
            // one waiting for it too long gives up retryably.
            sqlx::query("SELECT set_config('idle_in_transaction_session_timeout', $1, true), set_config('lock_timeout', $2, true)")
                .bind(IDLE_SEQUENCING_TIMEOUT)
                .bind(SEQUENCE_LOCK_WAIT)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(fence) = fence {
            crate::leases::check_fence(&mut tx, fence).await?;
        }
        let next: i64 = sqlx::query("UPDATE log_sequence SET next = next + 1 WHERE id = 1 RETURNING next")
            .fetch_one(&mut *tx)
            .await?
            .try_get("next")?;
        let index = next - 1;
        let prior = match artefact_id {
            Some(artefact) => {
                let row = sqlx::query("SELECT MAX(ledger_index) AS last FROM custody_index WHERE artefact_id = $1")
                    .bind(artefact)
                    .fetch_one(&mut *tx)
                    .await?;
                row.try_get::<Option<i64>, _>("last")?.map(|last| last as u64)
            }
            None => None,
        };
        let (entry, sha256) = match entry_for(prior) {
            Ok(made) => made,
            Err(err) => return Ok(Err(err)),
        };
        if let Some(openings) = openings {
            sqlx::query(
                "INSERT INTO custody_openings (record_sha256, openings) VALUES ($1, $2) \
                 ON CONFLICT (record_sha256) DO NOTHING",
            )
            .bind(&sha256)
            .bind(openings)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("INSERT INTO custody_index (ledger_index, case_id, artefact_id, record) VALUES ($1, $2, $3, $4)")
            .bind(index)
            .bind(case_id)
            .bind(artefact_id)
            .bind(&entry)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Ok(Sequenced { index: index as u64, entry }))
    }

    /// The coordination of the custody log through this database, for `custodia_ledger::Log::open_coordinated`.
    pub fn log_coordination(&self) -> Arc<dyn Coordination> {
        Arc::new(LogCoordination { catalog: self.clone() })
    }
}

struct LogCoordination {
    catalog: Catalog,
}

fn coordination_error(what: &'static str) -> impl FnOnce(CatalogError) -> CoordinationError {
    move |err| CoordinationError { what, transient: err.is_transient(), source: Box::new(err) }
}

/// The integration row, locked until `tx` ends (PostgreSQL).
async fn lock_row(tx: &mut sqlx::Transaction<'static, sqlx::Any>) -> Result<(i64, Option<Vec<u8>>)> {
    let row = sqlx::query("SELECT size, checkpoint FROM log_integration WHERE id = 1 FOR UPDATE")
        .fetch_one(&mut **tx)
        .await?;
    Ok((row.try_get("size")?, row.try_get("checkpoint")?))
}

async fn sequenced(pool: &AnyPool) -> Result<i64> {
    Ok(sqlx::query("SELECT next FROM log_sequence WHERE id = 1").fetch_one(pool).await?.try_get("next")?)
}

fn integrated((size, checkpoint): (i64, Option<Vec<u8>>), sequenced: i64) -> Integrated {
    Integrated { size: size as u64, checkpoint: checkpoint.map(Bytes::from), sequenced: sequenced as u64 }
}

impl LogCoordination {
    /// Both coordination rows in one query: what every gateway's integrator asks every 200 ms.
    async fn read(&self) -> Result<Integrated> {
        let row = sqlx::query(
            "SELECT i.size AS size, i.checkpoint AS checkpoint, s.next AS next \
             FROM log_integration i, log_sequence s WHERE i.id = 1 AND s.id = 1",
        )
        .fetch_one(&self.catalog.pool)
        .await?;
        Ok(integrated((row.try_get("size")?, row.try_get("checkpoint")?), row.try_get("next")?))
    }

    async fn entries(&self, from: u64, to: u64, limit: usize) -> Result<Vec<(u64, Bytes)>> {
        let rows = sqlx::query(
            "SELECT ledger_index, record FROM custody_index WHERE ledger_index >= $1 AND ledger_index < $2 \
             ORDER BY ledger_index LIMIT $3",
        )
        .bind(from as i64)
        .bind(to.min(i64::MAX as u64) as i64)
        .bind(limit as i64)
        .fetch_all(&self.catalog.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let index: i64 = row.try_get("ledger_index")?;
                let record: Vec<u8> = row.try_get("record")?;
                Ok((index as u64, Bytes::from(record)))
            })
            .collect()
    }

    async fn lock(&self) -> Result<Box<dyn IntegrationLock>> {
        let pool = &self.catalog.pool;
        if self.catalog.postgres_url.is_none() {
            let held = self.catalog.integration.clone().lock_owned().await;
            let row = self.read().await?;
            return Ok(Box::new(InProcessLock { pool: pool.clone(), row, _held: held }));
        }
        let mut tx = pool.begin().await?;
        sqlx::query(
            "SELECT set_config('idle_in_transaction_session_timeout', $1, true), set_config('lock_timeout', $2, true)",
        )
        .bind(IDLE_INTEGRATION_TIMEOUT)
        .bind(INTEGRATION_LOCK_WAIT)
        .execute(&mut *tx)
        .await?;
        let row = lock_row(&mut tx).await?;
        let row = integrated(row, sequenced(pool).await?);
        Ok(Box::new(RowLock { tx, row }))
    }
}

impl Coordination for LogCoordination {
    fn sequence(&self, entry: Bytes) -> BoxFuture<'_, std::result::Result<u64, CoordinationError>> {
        Box::pin(async move {
            let sequenced = self
                .catalog
                .sequence("", None, None, None, |_| Ok::<_, std::convert::Infallible>((entry.to_vec(), String::new())))
                .await
                .map_err(coordination_error("sequencing a log entry"))?;
            Ok(sequenced.map_or_else(|never| match never {}, |sequenced| sequenced.index))
        })
    }

    fn integrated(&self) -> BoxFuture<'_, std::result::Result<Integrated, CoordinationError>> {
        Box::pin(async move { self.read().await.map_err(coordination_error("reading the log's integration row")) })
    }

    fn entries(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> BoxFuture<'_, std::result::Result<Vec<(u64, Bytes)>, CoordinationError>> {
        Box::pin(async move {
            self.entries(from, to, limit).await.map_err(coordination_error("reading sequenced log entries"))
        })
    }

    fn lock_integration(&self) -> BoxFuture<'_, std::result::Result<Box<dyn IntegrationLock>, CoordinationError>> {
        Box::pin(async move { self.lock().await.map_err(coordination_error("taking the log's integration lock")) })
    }
}

/// Publishes what was integrated: the row's size and checkpoint, and the sequence moved past them if it was behind
/// (a log adopted from its store).
async fn publish_row(tx: &mut sqlx::Transaction<'static, sqlx::Any>, size: u64, checkpoint: &[u8]) -> Result<()> {
    sqlx::query("UPDATE log_integration SET size = $1, checkpoint = $2 WHERE id = 1")
        .bind(size as i64)
        .bind(checkpoint)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE log_sequence SET next = $1 WHERE id = 1 AND next < $1")
        .bind(size as i64)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// PostgreSQL: the integration row, locked by the transaction that will publish.
struct RowLock {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    row: Integrated,
}

impl IntegrationLock for RowLock {
    fn integrated(&self) -> &Integrated {
        &self.row
    }

    fn publish(
        mut self: Box<Self>,
        size: u64,
        checkpoint: Bytes,
    ) -> BoxFuture<'static, std::result::Result<(), CoordinationError>> {
        Box::pin(async move {
            let published = async {
                publish_row(&mut self.tx, size, &checkpoint).await?;
                self.tx.commit().await?;
                Ok(())
            };
            published.await.map_err(coordination_error("publishing the log's checkpoint"))
        })
    }
}

/// SQLite: the one gateway's in-process lock, and a short transaction to publish.
struct InProcessLock {
    pool: AnyPool,
    row: Integrated,
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl IntegrationLock for InProcessLock {
    fn integrated(&self) -> &Integrated {
        &self.row
    }

    fn publish(
        self: Box<Self>,
        size: u64,
        checkpoint: Bytes,
    ) -> BoxFuture<'static, std::result::Result<(), CoordinationError>> {
        Box::pin(async move {
            let published = async {
                let mut tx = self.pool.begin().await?;
                publish_row(&mut tx, size, &checkpoint).await?;
                tx.commit().await?;
                Ok(())
            };
            published.await.map_err(coordination_error("publishing the log's checkpoint"))
        })
    }
}
