//! Duties one gateway on a database performs for all of them (timestamping the shared log's checkpoints, say):
//! held as a PostgreSQL session advisory lock on a connection of its own, so that when its holder dies, its
//! connection and the lock go with it, and another gateway takes the duty over. A SQLite catalog has one gateway,
//! which holds every duty.

use std::fmt;
use std::sync::Arc;

use sqlx::Connection as _;

use crate::{Catalog, Result};

/// A duty, by the advisory lock key that stands for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duty(i64);

impl Duty {
    /// Timestamping the custody log's checkpoints with the configured authorities: "tsalog" in ASCII.
    pub const TIMESTAMPING: Self = Self(0x7473_616c_6f67);
    /// Hosting the live hearings: the gateway the load balancer sends every hearing's requests to (it alone says it
    /// is ready for them), and the one that takes over the hearings of a gateway that died: "hearng" in ASCII.
    pub const HEARINGS: Self = Self(0x6865_6172_6e67);
}

/// A duty held by this process, until dropped.
pub struct DutyLease {
    duty: Duty,
    /// The connection that holds the lock; `None` on SQLite.
    connection: tokio::sync::Mutex<Option<sqlx::AnyConnection>>,
    url: Option<Arc<str>>,
}

impl fmt::Debug for DutyLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password.
        f.debug_struct("DutyLease").field("duty", &self.duty).finish_non_exhaustive()
    }
}

async fn lock(url: &str, duty: Duty) -> Result<Option<sqlx::AnyConnection>> {
    let mut connection = sqlx::AnyConnection::connect(url).await?;
    let held: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(duty.0).fetch_one(&mut connection).await?;
    Ok(held.then_some(connection))
}

impl Catalog {
    /// Takes `duty` if no other gateway on this database holds it; `None` if one does.
    pub async fn try_duty(&self, duty: Duty) -> Result<Option<DutyLease>> {
        let Some(url) = &self.postgres_url else {
            return Ok(Some(DutyLease { duty, connection: tokio::sync::Mutex::new(None), url: None }));
        };
        let Some(connection) = lock(url, duty).await? else { return Ok(None) };
        Ok(Some(DutyLease { duty, connection: tokio::sync::Mutex::new(Some(connection)), url: Some(url.clone()) }))
    }
}

impl DutyLease {
    /// Whether the duty is still this process's: its connection answers, or (the database restarted, and every
    /// session lock with it) the lock is taken again on a new one. `false` once another process holds it: stop.
    pub async fn still_held(&self) -> bool {
        let Some(url) = &self.url else { return true };
        let mut connection = self.connection.lock().await;
        if let Some(held) = connection.as_mut()
            && sqlx::query("SELECT 1").execute(&mut *held).await.is_ok()
        {
            return true;
        }
        *connection = lock(url, self.duty).await.ok().flatten();
        connection.is_some()
    }
}
