//! The gateway as a witness of its partners' logs (c2sp.org/tlog-witness v1.0.0): `POST /witness/add-checkpoint`,
//! and `GET /witness/logs` for monitors (the latest checkpoint cosigned of each log, and what was refused).
//!
//! The decision is `custodia_witness::decide`, pure; this module reads the log's state from the catalog, persists a
//! newly cosigned checkpoint with a compare-and-swap on the old size, and only then answers with the cosignature,
//! so that two requests (or two gateway processes) can never both advance a log from the same size.
//!
//! A request that fails is answered as the evidence API's are ([`GatewayError`], through [`Problem`]): the
//! database unreachable or at its limits is a 503 with `Retry-After`, which a log's witness client retries, and
//! nothing was cosigned; a fault inside (a stored row that breaks an invariant, a key that cannot sign) is a 500.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Extensions, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use custodia_catalog::{Catalog, WitnessedCheckpoint};
use custodia_ledger::LogVerifier;
use custodia_ledger::merkle::empty_root;
use custodia_witness::{AddCheckpoint, CosignerKey, Decision, Known, decide, parse_log_list};
use serde::Serialize;

use crate::config::WitnessConfig;
use crate::problem::Problem;
use custodia_service::budget::{Budget, BudgetStore, retry_after_seconds};
use custodia_service::clock::Clock;
use custodia_service::gateway::GatewayError;

/// An add-checkpoint body holds `old`, at most 63 proof lines and a checkpoint with its signatures: a few KiB.
pub const ADD_CHECKPOINT_LIMIT: usize = 64 * 1024;

/// Requests one peer may send: a log sends one per new checkpoint, with retries.
const REQUESTS_BURST: u32 = 120;
const REQUESTS_PER_MINUTE: u32 = 1200;

pub fn router(witness: Arc<Witness>) -> Router {
    Router::new()
        .route("/witness/add-checkpoint", post(add_checkpoint).layer(DefaultBodyLimit::max(ADD_CHECKPOINT_LIMIT)))
        .route("/witness/logs", get(logs))
        .with_state(witness)
}

/// This gateway's witness: its cosigner key, the logs it witnesses, and counts of what it refused.
#[derive(Debug)]
pub struct Witness {
    key: CosignerKey,
    logs: BTreeMap<String, LogVerifier>,
    catalog: Catalog,
    clock: Clock,
    requests: Budget,
    refusals: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// One request at a time in this process (each is a few signature checks); the catalog's compare-and-swap
    /// orders requests between processes.
    turn: tokio::sync::Mutex<()>,
}

/// What one request came to, as the HTTP answer says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200: the cosignature line.
    Cosigned(String),
    /// 409: the size this witness knows.
    Conflict(u64),
    /// 400, 403, 404 or 422, with a reason.
    Refused { status: u16, code: &'static str, reason: String },
}

impl Witness {
    /// Opens the witness: the configured logs are checked against those already witnessed (none may be dropped or
    /// re-keyed) and new ones start at size 0.
    pub async fn open(
        config: &WitnessConfig,
        own_origin: &str,
        key: CosignerKey,
        catalog: Catalog,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let configured = match &config.logs_file {
            None => Vec::new(),
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                parse_log_list(&text).with_context(|| format!("{} (CUSTODIA_WITNESSED_LOGS)", path.display()))?
            }
        };
        let logs: BTreeMap<String, LogVerifier> =
            configured.into_iter().map(|log| (log.name().to_owned(), log)).collect();
        if logs.contains_key(own_origin) {
            bail!("the witnessed logs include this gateway's own log {own_origin:?}; a log cannot witness itself");
        }
        for known in catalog.witnessed_logs().await? {
            match logs.get(&known.origin) {
                None => bail!(
                    "the log {:?} is witnessed but no longer listed in the witnessed logs; a witnessed log cannot be \
                     dropped (that would hide a split view): list it again",
                    known.origin
                ),
                Some(log) if log.to_string() != known.vkey => bail!(
                    "the witnessed logs list {:?} with a new key; a witnessed log cannot be re-keyed (that would hide \
                     a split view). Its pinned key is {}",
                    known.origin,
                    known.vkey
                ),
                Some(_) => {}
            }
        }
        let now = clock.now().to_string();
        for (origin, log) in &logs {
            if catalog.add_witnessed_log(origin, &log.to_string(), &empty_root().to_base64(), &now).await? {
                tracing::info!(log = %origin, "witnessing a new log");
            }
        }
        // Kept for every gateway on the catalog: a peer spreading its requests over N gateways gets one budget.
        let requests = Budget::new(REQUESTS_BURST, REQUESTS_PER_MINUTE)
            .kept_in("witness_requests", &BudgetStore::new(catalog.clone(), clock.clone()));
        Ok(Self { key, logs, catalog, clock, requests, refusals: Mutex::default(), turn: tokio::sync::Mutex::new(()) })
    }

    /// The witness's public key, for partners' policies.
    pub fn vkey(&self) -> String {
        self.key.verifier().to_string()
    }

    /// Handles one add-checkpoint body. A catalog that cannot be reached now fails it as retryable
    /// ([`GatewayError::Unavailable`], from the catalog's error); anything else that fails is internal.
    pub async fn add_checkpoint(&self, body: &[u8]) -> Result<Answer, GatewayError> {
        let request = match AddCheckpoint::parse(body) {
            Ok(request) => request,
            Err(err) => return Ok(self.refused("", 400, "malformed-request", err.to_string())),
        };
        let origin = custodia_witness::witness::claimed_origin(&request.checkpoint).unwrap_or_default().to_owned();
        let _turn = self.turn.lock().await;
        let known = match self.catalog.witnessed_log(&origin).await? {
            Some(row) => Known {
                size: u64::try_from(row.size)
                    .map_err(|err| GatewayError::internal("a negative size in witnessed_logs", err))?,
                root: custodia_ledger::Hash::from_base64(&row.root)
                    .ok_or_else(|| GatewayError::internal_message("a malformed root in witnessed_logs"))?,
            },
            None => Known::unseen(),
        };
        let keys = self.logs.get(&origin).map(std::slice::from_ref);
        match decide(keys, &known, &request) {
            Decision::Cosign { old_size, checkpoint } => {
                let timestamp = u64::try_from(self.clock.unix_seconds()).unwrap_or(0).max(1);
                let line = self
                    .key
                    .cosign(checkpoint.checkpoint.body().as_bytes(), timestamp)
                    .map_err(|err| GatewayError::internal("cosigning a checkpoint", err))?;
                let log = self
                    .logs
                    .get(&origin)
                    .ok_or_else(|| GatewayError::internal_message("a cosigned checkpoint of a log not configured"))?;
                let own = custodia_witness::witness::with_only_log_signatures(&checkpoint, log);
                let mut note =
                    String::from_utf8(own).map_err(|err| GatewayError::internal("a checkpoint note is UTF-8", err))?;
                note.push_str(&line);
                let beyond_i64 = |err| GatewayError::internal("a tree size beyond i64", err);
                let new = WitnessedCheckpoint {
                    size: i64::try_from(checkpoint.checkpoint.size).map_err(beyond_i64)?,
                    root: &checkpoint.checkpoint.root.to_base64(),
                    cosigned_note: &note,
                };
                let old = i64::try_from(old_size).map_err(beyond_i64)?;
                if self.catalog.advance_witnessed_log(&origin, old, &new, &self.clock.now().to_string()).await? {
                    Ok(Answer::Cosigned(line))
                } else {
                    // Another process moved the log first: the log must catch up from there.
                    let size = self.catalog.witnessed_log(&origin).await?.map_or(0, |row| row.size);
                    Ok(Answer::Conflict(u64::try_from(size).unwrap_or(0)))
                }
            }
            Decision::Conflict { known_size } => {
                self.count(&origin, "stale-old-size");
                Ok(Answer::Conflict(known_size))
            }
            Decision::Refuse(refusal) => {
                if refusal.is_split_view() {
                    // Only configured logs get here: their origin is the operator's own configuration.
                    tracing::error!(log = %origin, "a partner log signed two roots for one tree size: a split view");
                }
                Ok(self.refused(&origin, refusal.status(), refusal.code(), refusal.to_string()))
            }
        }
    }

    /// Counts and logs a refusal. The operator log gets the kind and the origin only when it is a configured log:
    /// never the request's own text (an unknown origin or a signature name is whatever a stranger typed).
    fn refused(&self, origin: &str, status: u16, code: &'static str, reason: String) -> Answer {
        let log = self.known_origin(origin);
        self.count(log, code);
        tracing::warn!(log, code, "witness refused a checkpoint");
        Answer::Refused { status, code, reason }
    }

    /// `origin` if this witness witnesses it, else a fixed placeholder.
    fn known_origin<'a>(&self, origin: &'a str) -> &'a str {
        if self.logs.contains_key(origin) { origin } else { "(unknown)" }
    }

    fn count(&self, origin: &str, code: &'static str) {
        // Only configured logs get a counter of their own: strangers cannot grow the map.
        let origin = self.known_origin(origin);
        let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        *refusals.entry((origin.to_owned(), code)).or_default() += 1;
    }

    /// The monitoring view: each witnessed log's latest cosigned checkpoint and refusal counts. Fails as
    /// [`Witness::add_checkpoint`] does.
    pub async fn report(&self) -> Result<WitnessReport, GatewayError> {
        let refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let count_for = |origin: &str| -> BTreeMap<&'static str, u64> {
            refusals.iter().filter(|((log, _), _)| log == origin).map(|((_, code), n)| (*code, *n)).collect()
        };
        let logs = self
            .catalog
            .witnessed_logs()
            .await?
            .into_iter()
            .map(|row| WitnessedLogReport {
                refused: count_for(&row.origin),
                origin: row.origin,
                vkey: row.vkey,
                size: row.size,
                cosigned_checkpoint: row.cosigned_note,
                updated_at: row.updated_at,
            })
            .collect();
        Ok(WitnessReport { witness: self.vkey(), logs, refused_unknown_logs: count_for("(unknown)") })
    }
}

/// `GET /witness/logs`.
#[derive(Debug, Serialize)]
pub struct WitnessReport {
    /// This witness's cosigner key (`<name>+<key ID>+<base64(0x04 || key)>`).
    pub witness: String,
    pub logs: Vec<WitnessedLogReport>,
    /// Refusals of checkpoints from logs this witness does not witness, by kind.
    pub refused_unknown_logs: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Serialize)]
pub struct WitnessedLogReport {
    pub origin: String,
    pub vkey: String,
    pub size: i64,
    /// The latest checkpoint cosigned, with the log's signature and this witness's cosignature.
    pub cosigned_checkpoint: Option<String>,
    pub updated_at: String,
    /// Refusals since this process started, by kind (`root-conflict`, two roots the log signed for one size, is a split view).
    pub refused: BTreeMap<&'static str, u64>,
}

async fn add_checkpoint(State(witness): State<Arc<Witness>>, extensions: Extensions, body: Bytes) -> Response {
    let peer = crate::listen::client_network(&extensions).map_or_else(String::new, |network| network.key());
    if let Err(wait) = witness.requests.take(&peer).await {
        let mut response = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many",
            "Too many requests",
            "this peer has sent too many checkpoints; wait and try again",
        )
        .into_response();
        if let Ok(value) = HeaderValue::from_str(&retry_after_seconds(wait).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    match witness.add_checkpoint(&body).await {
        Ok(Answer::Cosigned(line)) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], line).into_response(),
        Ok(Answer::Conflict(size)) => {
            (StatusCode::CONFLICT, [(header::CONTENT_TYPE, "text/x.tlog.size")], format!("{size}\n")).into_response()
        }
        Ok(Answer::Refused { status, code, reason }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            Problem::new(status, "checkpoint-refused", "Checkpoint refused", format!("{code}: {reason}"))
                .into_response()
        }
        // 503 with Retry-After while the database is away, 500 for a fault inside; the cause goes to the log.
        Err(err) => Problem::from(err).into_response(),
    }
}

async fn logs(State(witness): State<Arc<Witness>>) -> Response {
    match witness.report().await {
        Ok(report) => axum::Json(report).into_response(),
        Err(err) => Problem::from(err).into_response(),
    }
}

/// This gateway's witness key, made on first use, named after the log's host by default.
pub fn witness_key(config: &crate::config::ServeConfig) -> anyhow::Result<CosignerKey> {
    let gateway = &config.gateway;
    let name = gateway.witness_name(config.witness.name.as_deref());
    let (key, created) = crate::keys::load_or_create_witness(&gateway.witness_key_file(), &name)?;
    if created {
        tracing::info!(key = %crate::config::absolute(&gateway.witness_key_file()).display(), "made a new witness key");
    }
    Ok(key)
}

/// The witness for `state`'s configuration: its key made on first start, named after the log's host by default.
pub async fn open_for(
    config: &crate::config::ServeConfig,
    catalog: Catalog,
    clock: Clock,
) -> anyhow::Result<Arc<Witness>> {
    let gateway = &config.gateway;
    let key = witness_key(config)?;
    let witness = Witness::open(&config.witness, &gateway.origin, key, catalog, clock).await?;
    tracing::info!(vkey = %witness.vkey(), logs = witness.logs.len(), "witness ready");
    Ok(Arc::new(witness))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a witness request that failed is answered with: a database that does not answer now (no connection
    /// within the pool's wait, say) is a 503 a log's witness client retries after `Retry-After`; a stored row that
    /// breaks an invariant is a 500 without one, since asking again changes nothing.
    #[test]
    fn a_database_away_is_retryable_and_a_fault_inside_is_not() {
        let away = GatewayError::from(custodia_catalog::CatalogError::Database(sqlx::Error::PoolTimedOut));
        let answer = Problem::from(away).into_response();
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        let retry_after = crate::problem::UNAVAILABLE_RETRY_AFTER_SECONDS.to_string();
        assert_eq!(
            answer.headers().get(header::RETRY_AFTER).and_then(|value| value.to_str().ok()),
            Some(&*retry_after)
        );

        let about_the_data = custodia_catalog::CatalogError::Database(sqlx::Error::RowNotFound);
        let faults =
            [GatewayError::internal_message("a malformed root in witnessed_logs"), GatewayError::from(about_the_data)];
        for fault in faults {
            let answer = Problem::from(fault).into_response();
            assert_eq!(answer.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert!(answer.headers().get(header::RETRY_AFTER).is_none());
        }
    }
}
