//! Trusted time for the custody log (RFC 3161): the gateway sends its checkpoints to the configured Time-Stamp
//! Authorities and records each verified token in the log as a [`CheckpointTimestamp`] entry.
//!
//! Runs beside the log, never in its way: an authority that is down, slow or answers garbage delays only the
//! timestamp, and shows in [`TimestampCounters`] and the operator log. Each answer is read under a size budget and a
//! timeout. When to ask is [`Schedule`]'s decision: every new checkpoint, at most once every `min_interval`, at
//! least once every `max_interval`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use custodia_ledger::Log;
use custodia_service::gateway::Gateway;
use custodia_timestamp::schedule::{Next, Schedule};
use custodia_timestamp::{CheckpointTimestamp, TimestampError, TimestampRequest, TrustAnchors};
use rand_core::OsRng;

use crate::config::TimestampConfig;

/// The most bytes read from an authority's answer: a token with a chain of a few RSA certificates is under 10 KiB.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// One configured authority.
pub struct Authority {
    url: reqwest::Url,
    anchors: TrustAnchors,
}

impl Authority {
    pub fn new(url: reqwest::Url, anchors: TrustAnchors) -> Self {
        Self { url, anchors }
    }

    /// For the operator log: the authority's host, never a query string.
    fn host(&self) -> &str {
        self.url.host_str().unwrap_or("(no host)")
    }
}

impl std::fmt::Debug for Authority {
    /// The host only: a commercial authority's URL may carry credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("host", &self.host()).field("anchors", &self.anchors.subjects()).finish()
    }
}

/// What happened to the timestamps, for monitoring.
#[derive(Debug, Default)]
pub struct TimestampCounters {
    /// Requests sent to an authority.
    pub requests: AtomicU64,
    /// Tokens verified and recorded in the log.
    pub recorded: AtomicU64,
    /// Authorities that could not be reached, timed out, or answered with an HTTP error.
    pub unreachable: AtomicU64,
    /// Answers that were not a granted, valid token for the request (garbage, a bad signature, a wrong imprint...).
    pub refused: AtomicU64,
    /// Verified tokens that could not be appended to the log.
    pub not_recorded: AtomicU64,
}

/// Why one authority gave no token.
#[derive(Debug, thiserror::Error)]
enum StampError {
    /// No answer came in full: no connection, a timeout, a connection lost. The error leaves out the URL.
    #[error("unreachable")]
    Unreachable(#[source] reqwest::Error),
    #[error("unreachable: it answered HTTP status {0}")]
    Status(reqwest::StatusCode),
    #[error("unreachable: an answer over {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
    #[error("answer refused")]
    Refused(#[from] TimestampError),
    /// A valid token whose time is further from this gateway's clock than the verifiers allow between a record's
    /// time and a token's: recorded, it would make every bundle it covers invalid.
    #[error("its time {gen_time} is {skew} s from this gateway's clock; one of the two clocks is wrong")]
    OffClock { gen_time: String, skew: u64 },
}

/// Where the timestamper records its tokens.
#[derive(Clone)]
pub enum Stamped {
    /// The gateway's custody log, through the evidence service ([`Gateway::record_checkpoint_timestamp`]): each
    /// token's entry is sequenced in the transaction that writes its row of the custody index, under no case, where
    /// court bundles look for it.
    Gateway(Box<Gateway>),
    /// A log with no catalog beside it (tools, tests): each token's entry is appended.
    Log(Log),
}

impl std::fmt::Debug for Stamped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Gateway(_) => "Stamped::Gateway",
            Self::Log(_) => "Stamped::Log",
        })
    }
}

impl Stamped {
    /// The log whose checkpoints are stamped.
    fn log(&self) -> &Log {
        match self {
            Self::Gateway(gateway) => gateway.log(),
            Self::Log(log) => log,
        }
    }

    /// Records `stamp` in the log: its ledger index.
    async fn record(&self, stamp: &CheckpointTimestamp) -> anyhow::Result<u64> {
        Ok(match self {
            Self::Gateway(gateway) => gateway.record_checkpoint_timestamp(stamp).await?,
            Self::Log(log) => log.append(stamp.to_entry()?).await?,
        })
    }
}

impl From<Gateway> for Stamped {
    fn from(gateway: Gateway) -> Self {
        Self::Gateway(Box::new(gateway))
    }
}

impl From<Log> for Stamped {
    fn from(log: Log) -> Self {
        Self::Log(log)
    }
}

/// The gateway's timestamp client.
#[derive(Debug)]
pub struct Timestamper {
    authorities: Vec<Authority>,
    schedule: Schedule,
    client: reqwest::Client,
    counters: Arc<TimestampCounters>,
}

impl Timestamper {
    /// A client for `authorities`, each request limited to `timeout`.
    pub fn new(authorities: Vec<Authority>, schedule: Schedule, timeout: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the timestamp client")?;
        Ok(Self { authorities, schedule, client, counters: Arc::default() })
    }

    /// From the configuration: `None` when no authority is configured.
    pub fn from_config(config: &TimestampConfig) -> anyhow::Result<Option<Self>> {
        if config.authorities.is_empty() {
            return Ok(None);
        }
        let mut authorities = Vec::new();
        // An entry is named by its place in the list, never quoted: its URL may carry credentials.
        for (place, entry) in config.authorities.iter().enumerate().map(|(at, entry)| (at + 1, entry)) {
            let (url, anchors) = entry
                .trim()
                .split_once(char::is_whitespace)
                .with_context(|| format!("CUSTODIA_TSA entry {place} is not `<url> <trust anchor PEM file>`"))?;
            let url = reqwest::Url::parse(url).with_context(|| format!("CUSTODIA_TSA entry {place}: its URL"))?;
            let pem = std::fs::read(anchors.trim())
                .with_context(|| format!("reading the TSA trust anchors {}", anchors.trim()))?;
            let anchors = TrustAnchors::from_pem(&pem).with_context(|| format!("the TSA trust anchors {anchors}"))?;
            authorities.push(Authority::new(url, anchors));
        }
        let schedule = Schedule {
            min_interval: Duration::from_secs(config.min_interval_secs),
            max_interval: Duration::from_secs(config.max_interval_minutes.saturating_mul(60)),
        };
        Self::new(authorities, schedule, Duration::from_secs(config.timeout_secs)).map(Some)
    }

    pub fn counters(&self) -> Arc<TimestampCounters> {
        self.counters.clone()
    }

    /// Stamps the log's current checkpoint with every authority at once, and records one entry per verified token
    /// ([`Stamped`]). Returns the size of the checkpoint stamped and the indexes of the entries recorded; an
    /// authority that fails is counted and logged, not an error.
    pub async fn stamp_once(&self, stamped: &Stamped) -> (u64, Vec<u64>) {
        let signed = stamped.log().checkpoint();
        let checkpoint = &signed.checkpoint;
        let root: [u8; 32] = checkpoint.root.0;
        let body = CheckpointTimestamp::checkpoint_body(&checkpoint.origin, checkpoint.size, &root);
        let answers =
            futures::future::join_all(self.authorities.iter().map(|authority| self.ask(authority, body.as_bytes())))
                .await;
        let mut appended = Vec::new();
        for (authority, answer) in self.authorities.iter().zip(answers) {
            let token = match answer {
                Ok(token) => token,
                Err(error) => {
                    let counter = match error {
                        StampError::Unreachable(_) | StampError::Status(_) | StampError::TooLarge => {
                            &self.counters.unreachable
                        }
                        StampError::Refused(_) | StampError::OffClock { .. } => &self.counters.refused,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    let error = custodia_service::error::Chain(&error);
                    tracing::warn!(tsa = authority.host(), %error, "no timestamp from this authority");
                    continue;
                }
            };
            let stamp = CheckpointTimestamp { size: checkpoint.size, root, token };
            match stamped.record(&stamp).await {
                Ok(index) => {
                    self.counters.recorded.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(tsa = authority.host(), size = checkpoint.size, index, "checkpoint timestamped");
                    appended.push(index);
                }
                Err(error) => {
                    self.counters.not_recorded.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(tsa = authority.host(), error = %format_args!("{error:#}"), "a verified timestamp was not recorded");
                }
            }
        }
        (checkpoint.size, appended)
    }

    /// One authority's verified token over `message`.
    async fn ask(&self, authority: &Authority, message: &[u8]) -> Result<Vec<u8>, StampError> {
        let request = TimestampRequest::new(message, None, &mut OsRng)?;
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let unreachable = |error: reqwest::Error| StampError::Unreachable(error.without_url());
        let mut response = self
            .client
            .post(authority.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/timestamp-query")
            .body(request.to_der().to_vec())
            .send()
            .await
            .map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(StampError::Status(response.status()));
        }
        let mut answer = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if answer.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(StampError::TooLarge);
            }
            answer.extend_from_slice(&chunk);
        }
        let verified = request.verify_response(&answer, &authority.anchors)?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
        let skew = verified.gen_time_unix().abs_diff(now);
        if skew > custodia_bundle::MAX_CLOCK_SKEW_SECONDS.unsigned_abs() {
            return Err(StampError::OffClock { gen_time: verified.gen_time_text(), skew });
        }
        Ok(verified.token)
    }

    /// Stamps the log for as long as it is open, as the schedule says.
    pub async fn run(self: Arc<Self>, stamped: impl Into<Stamped>) {
        let stamped = stamped.into();
        let log = stamped.log().clone();
        let mut last_attempt: Option<Instant> = None;
        // The size the last attempt stamped, and the entries appended since that are the timestamps themselves.
        let mut stamped_size = 0u64;
        let mut own_entries = 0u64;
        loop {
            let size = log.checkpoint().checkpoint.size;
            let uncovered = size > stamped_size + own_entries;
            match self.schedule.next(last_attempt.map(|at| at.elapsed()), uncovered) {
                Next::Stamp => {
                    last_attempt = Some(Instant::now());
                    let (size, appended) = self.stamp_once(&stamped).await;
                    // When every authority failed, the entries stay uncovered and are tried again after the
                    // minimum interval.
                    if !appended.is_empty() {
                        stamped_size = size;
                        own_entries = appended.len() as u64;
                    }
                }
                Next::Sleep(wait) => tokio::time::sleep(wait).await,
                Next::SleepUnlessGrows(wait) => {
                    let grown = log.wait_for_size(size + 1);
                    if tokio::time::timeout(wait, grown).await.is_ok_and(|grown| grown.is_err()) {
                        return; // the log was closed
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An authority's URL may carry credentials: a configuration error names the entry by its place, never quotes
    /// it, whether the entry lacks its trust anchors or its URL does not parse.
    #[test]
    fn a_misconfigured_authority_is_named_by_its_place_not_quoted() {
        for entry in ["https://clerk:hunter2-secret@tsa.example/stamp", "https//clerk:hunter2-secret@ /tmp/anchors.pem"]
        {
            let config = TimestampConfig { authorities: vec![entry.to_owned()], ..TimestampConfig::default() };
            let Err(err) = Timestamper::from_config(&config) else { panic!("{entry} was taken") };
            let text = format!("{err:#}");
            assert!(text.contains("CUSTODIA_TSA entry 1"), "{text}");
            assert!(!text.contains("hunter2") && !text.contains("clerk"), "{text}");
        }
    }
}
