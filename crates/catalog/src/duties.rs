//! Duties one gateway on a database performs for all of them (timestamping the shared log's checkpoints, hosting
//! the live hearings, the transfers with partner gateways, collecting the witnesses' cosignatures): a lease in `duty_leases`, taken when nobody holds it or its holder's lease expired, and
//! renewed by its holder every few seconds. A holder that dies, freezes or is cut off stops renewing, and another
//! gateway takes the duty over once its lease expires ([`DUTY_EXPIRY`]); a database that restarts keeps the row,
//! so the duty stays where it was. A SQLite catalog has one gateway, which holds every duty.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::Row as _;

use crate::{Catalog, Result};

/// How long a duty's lease holds unrenewed: its holder renews it well within this (every 5 s), so a holder that
/// has not for this long is dead, frozen or cut off.
pub const DUTY_EXPIRY: Duration = Duration::from_secs(15);

/// A duty, by the key that stands for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duty(i64);

impl Duty {
    /// Timestamping the custody log's checkpoints with the configured authorities: "tsalog" in ASCII.
    pub const TIMESTAMPING: Self = Self(0x7473_616c_6f67);
    /// Hosting the live hearings: the gateway the load balancer sends every hearing's requests to (it alone says it
    /// is ready for them), and the one that takes over the hearings of a gateway that died: "hearng" in ASCII.
    pub const HEARINGS: Self = Self(0x6865_6172_6e67);
    /// The transfers with partner gateways: the gateway that drives every transfer sent to a partner and takes
    /// every request a partner makes about a transfer (the load balancer sends them to it alone, and it stages what
    /// arrives on its own disk): "xfers" in ASCII.
    pub const TRANSFERS: Self = Self(0x78_6665_7273);
    /// Asking the witnesses to cosign the shared log's checkpoints, so that each witness is asked once per
    /// checkpoint, not once per gateway: "cosign" in ASCII.
    pub const COSIGNING: Self = Self(0x636f_7369_676e);
}

/// A duty held by this process, while [`DutyLease::still_held`] says so.
pub struct DutyLease {
    duty: Duty,
    node: String,
    /// `None` on SQLite, where the one gateway holds every duty.
    catalog: Option<Catalog>,
    /// Until when (ms since the Unix epoch, on the database's clock) the lease was last renewed.
    held_until: AtomicI64,
    /// How far the database's clock was ahead of this process's at the last renewal (ms).
    shift: AtomicI64,
}

impl fmt::Debug for DutyLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DutyLease").field("duty", &self.duty).field("node", &self.node).finish_non_exhaustive()
    }
}

fn expiry_from(now: i64) -> i64 {
    now + DUTY_EXPIRY.as_millis() as i64
}

impl Catalog {
    /// Takes `duty` for `node` (an opaque id of this process) if no other gateway on this database holds it, its
    /// holder's lease has expired, or `node` holds it already; `None` if another gateway holds it.
    /// Leases are read and written on the database's clock ([`Catalog::database_now_ms`]), so a gateway whose
    /// clock runs ahead takes no duty from a holder that renews it.
    pub async fn try_duty(&self, duty: Duty, node: &str) -> Result<Option<DutyLease>> {
        let local = crate::database_clock::system_ms();
        let now = self.on_database_clock(local).await;
        self.try_duty_shifted(duty, node, now, now - local).await
    }

    /// [`Catalog::try_duty`] at `now` (ms since the Unix epoch, on the database's clock and this process's alike).
    pub async fn try_duty_at(&self, duty: Duty, node: &str, now: i64) -> Result<Option<DutyLease>> {
        self.try_duty_shifted(duty, node, now, 0).await
    }

    /// [`Catalog::try_duty`] at `now` on the database's clock, which is `shift` ms ahead of this process's.
    async fn try_duty_shifted(&self, duty: Duty, node: &str, now: i64, shift: i64) -> Result<Option<DutyLease>> {
        if self.postgres_url.is_none() {
            let held_until = AtomicI64::new(i64::MAX);
            let lease = DutyLease { duty, node: node.to_owned(), catalog: None, held_until, shift: AtomicI64::new(0) };
            return Ok(Some(lease));
        }
        let taken = sqlx::query(
            "INSERT INTO duty_leases (duty, node, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (duty) DO UPDATE SET node = excluded.node, expires_at = excluded.expires_at \
             WHERE duty_leases.node = excluded.node OR duty_leases.expires_at <= $4 \
             RETURNING expires_at",
        )
        .bind(duty.0)
        .bind(node)
        .bind(expiry_from(now))
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = taken else { return Ok(None) };
        let held_until: i64 = row.try_get("expires_at")?;
        Ok(Some(DutyLease {
            duty,
            node: node.to_owned(),
            catalog: Some(self.clone()),
            held_until: AtomicI64::new(held_until),
            shift: AtomicI64::new(shift),
        }))
    }
}

impl DutyLease {
    /// Renews the duty's lease; whether it is still this process's. `false` once another gateway holds it, or
    /// once the lease has run out unrenewed (the database unreachable meanwhile): stop doing the duty.
    pub async fn still_held(&self) -> bool {
        let Some(catalog) = &self.catalog else { return true };
        let local = crate::database_clock::system_ms();
        let now = catalog.on_database_clock(local).await;
        self.shift.store(now - local, Ordering::Release);
        self.still_held_at(now).await
    }

    /// Until when (ms since the Unix epoch, on this process's clock) the duty is this process's as of its last
    /// renewal: no other gateway may take it before then. `i64::MAX` on SQLite.
    pub fn held_until(&self) -> i64 {
        self.held_until.load(Ordering::Acquire).saturating_sub(self.shift.load(Ordering::Acquire))
    }

    /// [`DutyLease::still_held`] at `now` (ms since the Unix epoch, on the database's clock).
    pub async fn still_held_at(&self, now: i64) -> bool {
        let Some(catalog) = &self.catalog else { return true };
        let renewed = sqlx::query("UPDATE duty_leases SET expires_at = $1 WHERE duty = $2 AND node = $3")
            .bind(expiry_from(now))
            .bind(self.duty.0)
            .bind(&self.node)
            .execute(&catalog.pool)
            .await;
        match renewed {
            Ok(done) if done.rows_affected() == 1 => {
                self.held_until.store(expiry_from(now), Ordering::Release);
                true
            }
            Ok(_) => false,
            // The database does not answer: the duty is ours until our lease would have run out, since no other
            // gateway can take it before then.
            Err(err) => {
                tracing::warn!(duty = ?self.duty, error = %custodia_core::ErrorChain(&err), "could not renew a duty's lease");
                now < self.held_until.load(Ordering::Acquire)
            }
        }
    }
}

/// A duty this process keeps asking for ([`DutyHolder::keep`], every few seconds), and whether it holds it now
/// ([`DutyHolder::holds`]): the lease while held, and until when it holds, on this process's clock.
#[derive(Debug)]
pub struct DutyHolder {
    duty: Duty,
    /// This process's id in the lease: random per start, naming no host or address.
    node: String,
    /// What the duty is, for the operator's log: "this gateway {what}".
    what: &'static str,
    lease: tokio::sync::Mutex<Option<DutyLease>>,
    /// Until when (ms since the Unix epoch, this process's clock) it holds the duty as of its last look: 0 while
    /// it does not.
    held_until: AtomicI64,
}

impl DutyHolder {
    pub fn new(duty: Duty, node: &str, what: &'static str) -> Self {
        Self {
            duty,
            node: node.to_owned(),
            what,
            lease: tokio::sync::Mutex::const_new(None),
            held_until: AtomicI64::new(0),
        }
    }

    /// Renews the lease if this process holds it, else takes the duty if no other gateway holds it; whether this
    /// process holds it now. A change either way is in the operator's log.
    pub async fn keep(&self, catalog: &Catalog) -> bool {
        let what = self.what;
        let mut lease = self.lease.lock().await;
        if let Some(held) = lease.as_ref()
            && !held.still_held().await
        {
            tracing::warn!("another gateway {what} now");
            *lease = None;
        }
        if lease.is_none() {
            match catalog.try_duty(self.duty, &self.node).await {
                Ok(Some(taken)) => {
                    tracing::info!("this gateway {what}");
                    *lease = Some(taken);
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(error = %custodia_core::ErrorChain(&err), "cannot ask whether this gateway {what}")
                }
            }
        }
        let until = lease.as_ref().map_or(0, DutyLease::held_until);
        self.held_until.store(until, Ordering::Release);
        lease.is_some()
    }

    /// Whether this process holds the duty, as of its last [`DutyHolder::keep`] and within its lease: past it (a
    /// process that was frozen, and has not looked again yet), it may do the duty no more.
    pub fn holds(&self) -> bool {
        crate::database_clock::system_ms() < self.held_until.load(Ordering::Acquire)
    }
}
