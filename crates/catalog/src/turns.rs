//! Turns: one holder at a time of a named thing (an account's storage quota, a case's membership, an artefact's use
//! policy, a transfer's steps), across every gateway on the catalog's database, so that a check made under the turn
//! still holds when what it allows is recorded.
//!
//! - In this process, a turn is an async mutex per key, made on demand and dropped once nobody holds or awaits it:
//!   the holders of one key queue here, and one at a time goes on to the database.
//! - On PostgreSQL, that holder then takes a transaction-scoped advisory lock on the key (`pg_advisory_xact_lock`,
//!   keyed by [`TURNS_CLASS`] and the key's `hashtext`), in a transaction held until the turn is let go: the
//!   transaction then rolls back, and the lock goes with it. A task of the turn's own keeps the transaction, and asks
//!   the database something every [`KEEP_ALIVE`] while the turn is held (a transfer's completion holds it while a
//!   whole artefact is checked and stored), so that the lock goes with the gateway only: when it dies (its connection
//!   closes) or stops answering (frozen, cut off) for [`IDLE_TURN_TIMEOUT`]. The connections come from a small pool of
//!   their own: a turn's holder goes on to use the catalog's pool (to read, to sequence a record), which turns
//!   therefore never take up. Two keys whose digests meet only wait for each other.
//! - SQLite: a catalog has one gateway (the one that holds its data directory's lock), so this process's mutex is
//!   the turn.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, Weak};

use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::{Catalog, Result};

/// The first key of the advisory locks that turns take, so that they never meet another of the database's advisory
/// locks (the migrations' takes one 64-bit key, a lock of another kind).
const TURNS_CLASS: i32 = 0x4355_5354; // "CUST"

/// The longest a turn's transaction may sit idle: a gateway that stops answering (frozen, cut off) for longer loses
/// its turns, and another gateway may take them.
const IDLE_TURN_TIMEOUT: &str = "30s";

/// How often a turn held asks the database something, well within [`IDLE_TURN_TIMEOUT`].
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(5);

/// The longest a gateway waits for another gateway's turn before the request fails, retryably.
const TURN_WAIT: &str = "30s";

/// How many turns this process may hold on PostgreSQL at once (the pool's connections); more wait for one, as long as
/// the catalog's pool waits for a connection. With the catalog's 16 and the listener's one, 29 connections a gateway:
/// three gateways stay within PostgreSQL's default `max_connections` of 100.
const TURN_CONNECTIONS: u32 = 12;

/// The turns of this process, and on PostgreSQL the pool their locks are taken on.
#[derive(Default)]
pub(crate) struct Turns {
    local: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    database: Option<PgPool>,
}

impl Turns {
    /// Turns across every gateway on the PostgreSQL database at `url` (connected to when a turn is first taken).
    pub(crate) fn on_postgres(url: &str) -> Result<Self> {
        let database = PgPoolOptions::new()
            .max_connections(TURN_CONNECTIONS)
            // As the catalog's pool: a database that is down fails the request within seconds, retryably.
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_lazy(url)?;
        Ok(Self { local: Mutex::default(), database: Some(database) })
    }

    /// This process's mutex of `key`.
    fn local(&self, key: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(turn) = local.get(key).and_then(Weak::upgrade) {
            return turn;
        }
        if local.len() > 1024 {
            local.retain(|_, turn| turn.strong_count() > 0);
        }
        let turn = std::sync::Arc::new(tokio::sync::Mutex::new(()));
        local.insert(key.to_owned(), std::sync::Arc::downgrade(&turn));
        turn
    }
}

/// A turn, held until it is dropped.
#[must_use = "a turn is held only until it is dropped"]
pub struct Turn {
    // Declared first, so that it goes first: the database's lock (its keeper lets it go), then this process's.
    _database: Option<tokio::sync::oneshot::Sender<()>>,
    _local: tokio::sync::OwnedMutexGuard<()>,
}

impl std::fmt::Debug for Turn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turn").finish_non_exhaustive()
    }
}

impl Catalog {
    /// Waits for the turn of `key` among every gateway on this catalog's database, and holds it until the returned
    /// [`Turn`] is dropped. Fails (retryably) if the database cannot be reached, or another gateway holds the turn
    /// for longer than [`TURN_WAIT`].
    pub async fn take_turn(&self, key: &str) -> Result<Turn> {
        let local = self.turns.local(key).lock_owned().await;
        let Some(pool) = &self.turns.database else { return Ok(Turn { _database: None, _local: local }) };
        let mut tx = pool.begin_with(crate::sequencing::begin_with_limits(IDLE_TURN_TIMEOUT, TURN_WAIT)).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(TURNS_CLASS)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        let (release, released) = tokio::sync::oneshot::channel();
        tokio::spawn(keep_turn(tx, released));
        Ok(Turn { _database: Some(release), _local: local })
    }
}

/// Keeps a turn's transaction, holding its lock, until the turn is let go (`released` ends), then rolls it back;
/// meanwhile asks the database something every [`KEEP_ALIVE`], so that it is never idle long. A connection lost
/// meanwhile took the lock with it.
async fn keep_turn(
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    mut released: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut released => break,
            () = tokio::time::sleep(KEEP_ALIVE) => {
                if let Err(err) = sqlx::query("SELECT 1").execute(&mut *tx).await {
                    tracing::warn!(error = %err, "a turn held lost its database connection, and its lock with it");
                    return;
                }
            }
        }
    }
    if let Err(err) = tx.rollback().await {
        // The connection is gone, and the lock with it.
        tracing::debug!(error = %err, "letting a turn go");
    }
}
