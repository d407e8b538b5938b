//! Turns: one holder at a time of a named thing (an account's storage quota, a case's membership, an artefact's use
//! policy, a transfer's steps), across every gateway on the catalog's database, so that a check made under the turn
//! still holds when what it allows is recorded.
//!
//! - In this process, a turn is an async mutex per key, made on demand and dropped once nobody holds or awaits it:
//!   the holders of one key queue here, and one at a time goes on to the database.
//! - On PostgreSQL, that holder then takes a transaction-scoped advisory lock on the key
//!   (`pg_try_advisory_xact_lock`, keyed by [`TURNS_CLASS`] and the key's `hashtext`). While another gateway holds
//!   it, the holder asks again (a little less often each time, for [`TURN_WAIT`] at most) without keeping a
//!   connection meanwhile, so that waiting for another gateway's turns never takes up this one's connections. Once
//!   granted, the transaction is kept by a task of the turn's own until the turn is let go, when it rolls back and
//!   the lock goes with it; the task asks the database something every [`KEEP_ALIVE`] (a transfer's completion holds
//!   the turn while a whole artefact is checked and stored), so that the lock goes with the gateway only: when it dies
//!   (its connection closes) or stops answering (frozen, cut off) for [`IDLE_TURN_TIMEOUT`].
//! - A lock can be lost while its turn is still held here (the connection cut, the gateway frozen past the idle
//!   limit): so a record made under a turn carries its [`TurnFence`], and the transaction that sequences it checks
//!   that the lock is still granted to the turn's connection, refusing the record otherwise (retryably)
//!   ([`Catalog::within_turn`]).
//! - Each [`TurnKind`] has a small pool of its own, apart from the catalog's: a turn's holder goes on to use the
//!   catalog's pool (to read, to sequence a record), and may take a turn of a later kind (a transfer's, then an
//!   artefact's policy, then a case's membership), never of its own or an earlier one; so a holder only ever waits
//!   for a connection that holders of later kinds give back, and turns never deadlock on connections. The two kinds
//!   taken alone, an account's quota and the partner registry's pin, share one pool.
//! - SQLite: a catalog has one gateway (the one that holds its data directory's lock), so this process's mutex is
//!   the turn, and records need no fence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::{Catalog, CatalogError, Result};

/// The first key of the advisory locks that turns take, plus the [`TurnKind`]'s place: so that they never meet
/// another of the database's advisory locks (the migrations' takes one 64-bit key, a lock of another kind), nor a
/// turn of another kind (a transfer's id, which a partner chooses, can never be made to meet an artefact's policy).
const TURNS_CLASS: i32 = 0x4355_5354; // "CUST"

/// The longest a turn's transaction may sit idle: a gateway that stops answering (frozen, cut off) for longer loses
/// its turns, and another gateway may take them.
const IDLE_TURN_TIMEOUT: &str = "30s";

/// How often a turn held asks the database something, well within [`IDLE_TURN_TIMEOUT`].
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// The longest a gateway waits for another gateway's turn before the request fails, retryably.
const TURN_WAIT: Duration = Duration::from_secs(30);

/// The first pause before asking again for a turn another gateway holds; it doubles up to [`TURN_ASK_AGAIN_MAX`].
const TURN_ASK_AGAIN_MIN: Duration = Duration::from_millis(2);
const TURN_ASK_AGAIN_MAX: Duration = Duration::from_millis(100);

/// What a turn is of, in the order in which a holder may take one within another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TurnKind {
    /// A partner transfer's steps.
    Transfer,
    /// An artefact's use policy (its changes, and the uses checked against it).
    Policy,
    /// A case's membership.
    Membership,
    /// An account's storage quota (taken alone).
    Quota,
    /// The partner registry's pin on the record: its check against the registry last pinned, and the pin (taken
    /// alone, at start-up), so that of gateways starting at once with a changed registry one pins it.
    PartnerRegistry,
}

impl TurnKind {
    /// The kinds with a pool of their own, in the order of [`Turns`]' pools.
    const POOLED: [TurnKind; 4] = [Self::Transfer, Self::Policy, Self::Membership, Self::Quota];

    /// The first key of this kind's advisory locks.
    fn class(self) -> i32 {
        TURNS_CLASS + self as i32
    }

    /// The pool this kind's turns are taken on. A partner registry's turn is taken on the quotas' pool: both kinds
    /// are taken alone (their holders take no turn within them), so a holder of either waits for a connection only
    /// before it holds one, and sharing the pool adds no connection for a turn taken once, at start-up.
    fn pool(self) -> usize {
        match self {
            Self::PartnerRegistry => Self::Quota as usize,
            pooled => pooled as usize,
        }
    }

    /// How many turns of this kind (a pooled one) this process may hold on PostgreSQL at once (the connections of
    /// its pool). With the catalog's 16 and the listener's one, 29 connections a gateway at most: three gateways
    /// stay within PostgreSQL's default `max_connections` of 100.
    fn connections(self) -> u32 {
        match self {
            Self::Transfer | Self::Membership => 2,
            Self::Policy => 5,
            Self::Quota | Self::PartnerRegistry => 3,
        }
    }
}

/// This process's mutex of one turn, while someone holds or waits for it.
type LocalTurn = Weak<tokio::sync::Mutex<()>>;

/// The turns of this process, and on PostgreSQL the pools their locks are taken on, one for each [`TurnKind`] but
/// the partner registry's ([`TurnKind::pool`]).
#[derive(Default)]
pub(crate) struct Turns {
    /// By kind and key, as the database's locks are: two kinds' turns of one key are two turns.
    local: Mutex<HashMap<(TurnKind, String), LocalTurn>>,
    database: Option<[PgPool; 4]>,
}

impl Turns {
    /// Turns across every gateway on the PostgreSQL database at `url` (connected to when a turn is first taken).
    pub(crate) fn on_postgres(url: &str) -> Result<Self> {
        let pool = |kind: TurnKind| {
            PgPoolOptions::new()
                .max_connections(kind.connections())
                // As the catalog's pool: a database that is down fails the request within seconds, retryably.
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy(url)
        };
        let [transfer, policy, membership, quota] = TurnKind::POOLED.map(pool);
        Ok(Self { local: Mutex::default(), database: Some([transfer?, policy?, membership?, quota?]) })
    }

    /// This process's mutex of `kind`'s `key`.
    fn local(&self, kind: TurnKind, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (kind, key.to_owned());
        if let Some(turn) = local.get(&key).and_then(Weak::upgrade) {
            return turn;
        }
        if local.len() > 1024 {
            local.retain(|_, turn| turn.strong_count() > 0);
        }
        let turn = Arc::new(tokio::sync::Mutex::new(()));
        local.insert(key, Arc::downgrade(&turn));
        turn
    }
}

/// What a record made under a turn is sequenced under: the turn's advisory lock (its second key, the key's
/// `hashtext`) granted to the connection of the turn's transaction (its backend's process id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TurnFence {
    class: i32,
    key_hash: i32,
    backend: i32,
}

/// A turn, held until it is dropped.
#[must_use = "a turn is held only until it is dropped"]
pub struct Turn {
    // Declared first, so that it goes first: the database's lock (its keeper lets it go), then this process's.
    database: Option<(tokio::sync::oneshot::Sender<()>, TurnFence)>,
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
    /// for longer than 30 s.
    pub async fn take_turn(&self, kind: TurnKind, key: &str) -> Result<Turn> {
        let local = self.turns.local(kind, key).lock_owned().await;
        let Some(pools) = &self.turns.database else { return Ok(Turn { database: None, _local: local }) };
        let pool = &pools[kind.pool()];
        let started = tokio::time::Instant::now();
        let mut pause = TURN_ASK_AGAIN_MIN;
        loop {
            let mut tx = pool
                .begin_with(format!("BEGIN; SET LOCAL idle_in_transaction_session_timeout = '{IDLE_TURN_TIMEOUT}'"))
                .await?;
            let row = sqlx::query(
                "SELECT pg_try_advisory_xact_lock($1, hashtext($2)) AS granted, hashtext($2) AS key_hash, \
                 pg_backend_pid() AS backend",
            )
            .bind(kind.class())
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
            if row.try_get::<bool, _>("granted")? {
                let (key_hash, backend) = (row.try_get("key_hash")?, row.try_get("backend")?);
                let fence = TurnFence { class: kind.class(), key_hash, backend };
                let (release, released) = tokio::sync::oneshot::channel();
                tokio::spawn(keep_turn(tx, released));
                return Ok(Turn { database: Some((release, fence)), _local: local });
            }
            // Held by another gateway: this connection goes back to the pool while this one waits.
            drop(tx);
            if started.elapsed() >= TURN_WAIT {
                return Err(CatalogError::Busy { waited: started.elapsed() });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(TURN_ASK_AGAIN_MAX);
        }
    }

    /// This catalog, whose records are sequenced only while `turn` is still held: each carries the turn's fence,
    /// which the sequencing transaction checks ([`CatalogError::TurnLost`] otherwise, and nothing is stored).
    pub fn within_turn(&self, turn: &Turn) -> Catalog {
        let Some((_, fence)) = &turn.database else { return self.clone() };
        let mut fences = self.turn_fences.to_vec();
        fences.push(*fence);
        Catalog { turn_fences: fences.into(), ..self.clone() }
    }
}

/// Whether each of `fences` is still held: its lock granted to its turn's connection.
pub(crate) async fn turns_held<'a>(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    fences: impl Iterator<Item = &'a TurnFence>,
) -> sqlx::Result<std::collections::BTreeMap<TurnFence, bool>> {
    let mut held: std::collections::BTreeMap<TurnFence, bool> = fences.map(|fence| (*fence, false)).collect();
    for (fence, holds) in &mut held {
        // An advisory lock on two int4 keys shows them as `classid` and `objid` (as oids), with `objsubid` 2.
        *holds = sqlx::query(
            "SELECT 1 AS held FROM pg_locks WHERE locktype = 'advisory' AND classid = ($1::int4)::oid \
             AND objid = ($2::int4)::oid AND objsubid = 2 AND pid = $3 AND granted",
        )
        .bind(fence.class)
        .bind(fence.key_hash)
        .bind(fence.backend)
        .fetch_optional(&mut **tx)
        .await?
        .is_some();
    }
    Ok(held)
}

/// Keeps a turn's transaction, holding its lock, until the turn is let go (`released` ends), then rolls it back;
/// meanwhile asks the database something every [`KEEP_ALIVE`], so that it is never idle long. A connection lost
/// meanwhile took the lock with it (the records of the turn are then refused: [`turns_held`]).
async fn keep_turn(
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    mut released: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut released => break,
            () = tokio::time::sleep(KEEP_ALIVE) => {
                if let Err(err) = sqlx::query("SELECT 1").execute(&mut *tx).await {
                    tracing::warn!(error = %custodia_core::ErrorChain(&err), "a turn held lost its database connection, and its lock with it");
                    return;
                }
            }
        }
    }
    if let Err(err) = tx.rollback().await {
        // The connection is gone, and the lock with it.
        tracing::debug!(error = %custodia_core::ErrorChain(&err), "letting a turn go");
    }
}
