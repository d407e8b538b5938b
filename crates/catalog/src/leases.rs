//! Hearing leases: which gateway holds each live hearing (`hearing_leases`). A hearing's room lives in one
//! gateway process's memory; the lease says which, until when, and under which epoch.
//!
//! - Taking a lease is one compare-and-set statement: a hearing nobody holds, one whose lease has expired, or one
//!   this node already holds. Taken from another node, the epoch goes up by one.
//! - Renewing changes the row only while node and epoch still match: a node that lost its lease
//!   learns so from its next renewal.
//! - The holder's custody records and journal entries carry a [`HearingFence`], checked in the transaction that
//!   writes them ([`Catalog::sequence_custody`], [`Catalog::append_hearing_journal`]): a stale epoch writes
//!   nothing ([`CatalogError::LeaseLost`]). The check is an `UPDATE` of the lease row that changes nothing, so on
//!   PostgreSQL it locks the row until the write commits: a takeover waits for it (and then reads a journal that
//!   holds it), or the write waits for the takeover and is refused. SQLite has one writer at a time anyway.
//!
//! Times are given and read on each gateway's clock, in milliseconds since the Unix epoch, and stored on the
//! database's ([`Catalog::database_now_ms`]): a gateway whose clock runs ahead takes no hearing from a holder that
//! renews its lease (and the fence, not the clock, keeps two holders from writing).

use sqlx::Row as _;

use crate::{Catalog, CatalogError, Result};

/// What a hearing room's writes carry: the hearing, the node that holds it, and the epoch it holds it under.
/// The node id is random per gateway process; nothing here is personal data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HearingFence {
    pub hearing_id: String,
    pub node: String,
    pub epoch: i64,
}

impl HearingFence {
    /// The error of a write under this fence once it is stale.
    pub(crate) fn lost(&self) -> CatalogError {
        CatalogError::LeaseLost { hearing_id: self.hearing_id.clone(), epoch: self.epoch }
    }
}

/// A hearing's lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HearingLease {
    pub node: String,
    pub epoch: i64,
    /// Milliseconds since the Unix epoch, on this process's clock.
    pub expires_at: i64,
}

impl Catalog {
    /// Takes the lease of `hearing_id` for `node` until `expires_at` (ms), if nobody holds it, its lease expired by
    /// `now` (ms), or `node` already holds it: the epoch it is held under (one more than before when taken from
    /// another node). `None` if another node holds it now.
    pub async fn take_hearing_lease(
        &self,
        hearing_id: &str,
        node: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<Option<i64>> {
        let row = sqlx::query(
            "INSERT INTO hearing_leases (hearing_id, node, epoch, expires_at) VALUES ($1, $2, 1, $3) \
             ON CONFLICT (hearing_id) DO UPDATE SET \
               epoch = CASE WHEN hearing_leases.node = excluded.node THEN hearing_leases.epoch \
                            ELSE hearing_leases.epoch + 1 END, \
               node = excluded.node, expires_at = excluded.expires_at \
             WHERE hearing_leases.node = excluded.node OR hearing_leases.expires_at <= $4 \
             RETURNING epoch",
        )
        .bind(hearing_id)
        .bind(node)
        .bind(self.on_database_clock(expires_at).await)
        .bind(self.on_database_clock(now).await)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => Some(row.try_get("epoch")?),
            None => None,
        })
    }

    /// Extends the lease `fence` names to `expires_at` (ms), if its node still holds it under its epoch; `false`
    /// if the lease was lost (another node took it).
    pub async fn renew_hearing_lease(&self, fence: &HearingFence, expires_at: i64) -> Result<bool> {
        let done =
            sqlx::query("UPDATE hearing_leases SET expires_at = $1 WHERE hearing_id = $2 AND node = $3 AND epoch = $4")
                .bind(self.on_database_clock(expires_at).await)
                .bind(&fence.hearing_id)
                .bind(&fence.node)
                .bind(fence.epoch)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// How many hearings a node other than `node` holds a lease on that has not expired at `now` (ms).
    pub async fn hearings_leased_elsewhere(&self, node: &str, now: i64) -> Result<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hearing_leases WHERE node <> $1 AND expires_at > $2")
            .bind(node)
            .bind(self.on_database_clock(now).await)
            .fetch_one(&self.pool)
            .await?;
        Ok(count as u64)
    }

    /// The lease of `hearing_id`, if it ever had one.
    pub async fn hearing_lease(&self, hearing_id: &str) -> Result<Option<HearingLease>> {
        let row = sqlx::query("SELECT node, epoch, expires_at FROM hearing_leases WHERE hearing_id = $1")
            .bind(hearing_id)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(HearingLease {
            node: row.try_get("node")?,
            epoch: row.try_get("epoch")?,
            expires_at: row.try_get::<i64, _>("expires_at")? - (self.on_database_clock(0).await),
        }))
    }

    /// The hearings that have a journal (they are live, or ended and kept for their output) and that nobody holds
    /// at `now` (ms): their lease expired, or they never had one (journalled before leases).
    pub async fn unheld_hearings(&self, now: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT j.hearing_id AS hearing_id FROM hearing_journal j \
             LEFT JOIN hearing_leases l ON l.hearing_id = j.hearing_id \
             WHERE l.hearing_id IS NULL OR l.expires_at <= $1 ORDER BY j.hearing_id",
        )
        .bind(self.on_database_clock(now).await)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok(row.try_get("hearing_id")?)).collect()
    }
}

/// Checks `fence` inside `tx`: the lease row is touched (locked on PostgreSQL until `tx` ends) only if its node and
/// epoch are still the fence's. A stale fence is [`CatalogError::LeaseLost`].
pub(crate) async fn check_fence(tx: &mut sqlx::Transaction<'static, sqlx::Any>, fence: &HearingFence) -> Result<()> {
    if holds_lease(tx, fence).await? { Ok(()) } else { Err(fence.lost()) }
}

/// Whether `fence`'s node still holds its hearing's lease under its epoch, checked as [`check_fence`] does. A stale
/// fence changes nothing and is no error to the database: `tx` goes on.
pub(crate) async fn holds_lease(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    fence: &HearingFence,
) -> sqlx::Result<bool> {
    let held =
        sqlx::query("UPDATE hearing_leases SET epoch = epoch WHERE hearing_id = $1 AND node = $2 AND epoch = $3")
            .bind(&fence.hearing_id)
            .bind(&fence.node)
            .bind(fence.epoch)
            .execute(&mut **tx)
            .await?;
    Ok(held.rows_affected() == 1)
}
