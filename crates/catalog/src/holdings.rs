//! What direct uploads under way hold of their accounts' storage quotas (`direct_holdings`), so that every gateway
//! on the database counts what the others' uploads hold, and how many they are.
//!
//! - A holding is a row: an opaque id, the account, the bytes held (a declared length from the start, or what an
//!   undeclared one has reserved as it grew) and until when it lasts unrenewed (`expires_at`, ms). Its gateway
//!   writes it, and each growth, under the account's quota turn ([`crate::TurnKind::Quota`]), after checking what
//!   is left; renews it while the upload runs; and deletes it when the upload ends, whether it succeeded or not.
//! - A holding past its expiry is counted nowhere: its gateway died, froze or lost the database for that long, so a
//!   crashed gateway cannot hold an account's quota for ever. It is not renewed or grown again either (its gateway's
//!   upload fails, retryably), and it is deleted by the account's next direct upload
//!   ([`Catalog::hold_direct`]) or by the sweep at start-up ([`Catalog::remove_expired_direct_holdings`]). So an
//!   account has no more rows than it may have direct uploads at once.
//! - A holding is renewed or grown only while it still lasts [`HOLDING_MARGIN`] past the renewing gateway's now:
//!   every gateway reads the database's clock to about a second ([`Catalog::database_now_ms`]), and a statement may
//!   wait seconds for a connection, so no holding another gateway already counted out comes back to life.
//! - Times are given on each gateway's clock, in milliseconds since the Unix epoch, and shifted to the database's
//!   before they are compared or stored, as for every time gateways compare.

use std::time::Duration;

use sqlx::Row as _;

use crate::{Catalog, Result};

/// How long before its expiry a holding stops being renewed or grown: more than the second to which gateways read
/// the database's clock and the catalog pool's wait for a connection (5 s) together.
pub const HOLDING_MARGIN: Duration = Duration::from_secs(10);

/// What an account's direct uploads under way hold, as every gateway counts them: the holdings not expired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectHoldings {
    /// How many.
    pub uploads: i64,
    /// The bytes they hold between them.
    pub bytes: i64,
}

fn margin_ms() -> i64 {
    HOLDING_MARGIN.as_millis() as i64
}

/// The later of `expires_at` and the time bound at `$n`: a renewal and a growth at once never shorten a holding.
macro_rules! later {
    ($n:literal) => {
        concat!("CASE WHEN ", $n, " > expires_at THEN ", $n, " ELSE expires_at END")
    };
}

/// How far the database's clock is ahead of this process's (ms), once for the times of one statement.
async fn shift(catalog: &Catalog) -> i64 {
    catalog.on_database_clock(0).await
}

impl Catalog {
    /// What `account_id`'s direct uploads under way hold at `now` (ms), on every gateway: the holdings not expired.
    pub async fn direct_holdings_of(&self, account_id: &str, now: i64) -> Result<DirectHoldings> {
        let now = self.on_database_clock(now).await;
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(bytes), 0) AS BIGINT) AS bytes FROM direct_holdings \
             WHERE account_id = $1 AND expires_at > $2",
        )
        .bind(account_id)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(DirectHoldings { uploads: row.try_get("n")?, bytes: row.try_get("bytes")? })
    }

    /// Stores holding `id` of `bytes` for `account_id`, lasting until `until` (ms), and deletes the account's
    /// holdings expired by `now` (ms), in one transaction. The caller holds the account's quota turn, and has found
    /// the account's uploads under way and the bytes left ([`Catalog::direct_holdings_of`]).
    pub async fn hold_direct(&self, id: &str, account_id: &str, bytes: i64, now: i64, until: i64) -> Result<()> {
        let shift = shift(self).await;
        let (now, until) = (now.saturating_add(shift), until.saturating_add(shift));
        let mut tx = self.pool.begin().await?;
        self.still_within_turns(&mut tx).await?;
        sqlx::query("DELETE FROM direct_holdings WHERE account_id = $1 AND expires_at <= $2")
            .bind(account_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO direct_holdings (id, account_id, bytes, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(account_id)
            .bind(bytes)
            .bind(until)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Makes holding `id` hold `bytes` in all, lasting until `until` (ms), if it lasts [`HOLDING_MARGIN`] past
    /// `now` (ms) still; false, and nothing changed, if it does not (it expired, or is gone). The caller holds the
    /// account's quota turn, and has found the growth left.
    pub async fn grow_direct_holding(&self, id: &str, bytes: i64, now: i64, until: i64) -> Result<bool> {
        self.extend_direct_holding(id, Some(bytes), now, until).await
    }

    /// Makes holding `id` last until `until` (ms), its bytes unchanged, if it lasts [`HOLDING_MARGIN`] past `now`
    /// (ms) still; false, and nothing changed, if it does not. Needs no turn: it counts nothing more.
    pub async fn renew_direct_holding(&self, id: &str, now: i64, until: i64) -> Result<bool> {
        self.extend_direct_holding(id, None, now, until).await
    }

    /// A growth (`bytes`) or a renewal (`None`) of holding `id`, if it lasts [`HOLDING_MARGIN`] past `now` still,
    /// and the turns this catalog is within are still held.
    async fn extend_direct_holding(&self, id: &str, bytes: Option<i64>, now: i64, until: i64) -> Result<bool> {
        let shift = shift(self).await;
        let (now, until) = (now.saturating_add(shift), until.saturating_add(shift));
        let mut tx = self.pool.begin().await?;
        self.still_within_turns(&mut tx).await?;
        let done = sqlx::query(concat!(
            "UPDATE direct_holdings SET bytes = COALESCE($1, bytes), expires_at = ",
            later!("$2"),
            " WHERE id = $3 AND expires_at > $4"
        ))
        .bind(bytes)
        .bind(until)
        .bind(id)
        .bind(now.saturating_add(margin_ms()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// Fails with [`crate::CatalogError::TurnLost`] unless every turn this catalog is within
    /// ([`Catalog::within_turn`]) is still held, as the sequencing of a record made under one does: a holding
    /// written by a gateway whose quota turn went (its connection cut, or it froze past the idle limit) would be
    /// counted after another gateway's check had found its bytes free.
    async fn still_within_turns(&self, tx: &mut sqlx::Transaction<'static, sqlx::Any>) -> Result<()> {
        let held = crate::turns::turns_held(tx, self.turn_fences.iter()).await?;
        if held.values().all(|held| *held) { Ok(()) } else { Err(crate::CatalogError::TurnLost) }
    }

    /// Deletes holding `id`: its upload ended. Nothing if it is gone already.
    pub async fn release_direct_holding(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM direct_holdings WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// Deletes every holding expired by `now` (ms; `i64::MAX`: every holding, which only the one gateway of an
    /// embedded catalog may ask, at start-up). Returns how many.
    pub async fn remove_expired_direct_holdings(&self, now: i64) -> Result<u64> {
        let now = self.on_database_clock(now).await;
        let done =
            sqlx::query("DELETE FROM direct_holdings WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    /// Which of `holdings` last [`HOLDING_MARGIN`] more on the database's clock, each looked at once in `tx`, its
    /// row locked (on PostgreSQL) until the transaction ends, so that no renewal, growth or release passes it
    /// meanwhile: what a registration that consumes one checks ([`crate::Registration::holding`]).
    pub(crate) async fn holdings_lasting<'a>(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        holdings: impl Iterator<Item = &'a str>,
    ) -> sqlx::Result<std::collections::BTreeMap<String, bool>> {
        let mut lasting: std::collections::BTreeMap<String, bool> =
            holdings.map(|holding| (holding.to_owned(), false)).collect();
        if lasting.is_empty() {
            return Ok(lasting);
        }
        let until = self.database_now_ms().await.saturating_add(margin_ms());
        let lock = if self.postgres_url.is_some() { " FOR UPDATE" } else { "" };
        for (holding, lasts) in &mut lasting {
            let found =
                sqlx::query(&format!("SELECT 1 AS found FROM direct_holdings WHERE id = $1 AND expires_at > $2{lock}"))
                    .bind(holding.as_str())
                    .bind(until)
                    .fetch_optional(&mut **tx)
                    .await?;
            *lasts = found.is_some();
        }
        Ok(lasting)
    }
}

/// Deletes holding `id` in `tx`, whose registration counts its bytes as the artefact's from now on.
pub(crate) async fn holding_consumed(tx: &mut sqlx::Transaction<'static, sqlx::Any>, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM direct_holdings WHERE id = $1").bind(id).execute(&mut **tx).await?;
    Ok(())
}
