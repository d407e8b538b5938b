//! The figures kept as requests happen ([`Metrics`]): request latency by route template, method and status, and
//! refusals by problem type, counted by a middleware around every route ([`track_requests`]). `/metrics` shows them
//! ([`crate::metrics`]).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use crate::problem::ProblemType;
use crate::timestamping::TimestampCounters;

/// The upper bounds, in seconds, of the request latency histogram's buckets: from a health check to an export.
const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The route label of a request no route took (the browser pages, unknown paths): one value for all of them.
pub const UNMATCHED_ROUTE: &str = "(unmatched)";

/// An HTTP request as the latency histogram labels it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// The route template (`/api/v1/artefacts/{id}`), or [`UNMATCHED_ROUTE`].
    route: String,
    method: &'static str,
    status: u16,
}

/// The request's method, from a fixed list: anything else a client sends is `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// A refusal, by its problem `type` ([`crate::problem::Problem`]): a stable word from the code, never the detail.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefusalLabels {
    reason: &'static str,
}

/// The figures kept as things happen: one per process ([`crate::state::AppState::metrics`]); what the service took into
/// custody is counted by the service itself ([`custodia_service::gateway::Gateway::ingested`]).
#[derive(Debug)]
pub struct Metrics {
    pub(crate) request_seconds: Family<RequestLabels, Histogram>,
    pub(crate) refusals: Family<RefusalLabels, Counter>,
    /// The Time-Stamp Authorities' counts, when any is configured.
    pub(crate) timestamps: OnceLock<Arc<TimestampCounters>>,
    /// What start-up found of the bucket's Object Lock, and the days of retention evidence gets.
    pub(crate) object_lock: OnceLock<(&'static str, u32)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            request_seconds: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            refusals: Family::default(),
            timestamps: OnceLock::new(),
            object_lock: OnceLock::new(),
        }
    }
}

impl Metrics {
    /// Counts from the timestamp client ([`crate::timestamping::Timestamper::counters`]). Only the first call counts.
    pub fn follow_timestamps(&self, counters: Arc<TimestampCounters>) {
        let _ = self.timestamps.set(counters);
    }

    /// What start-up found of the bucket's Object Lock (`state`: a word from
    /// [`crate::startup::ObjectLockReport::state`]), and the days of retention the gateway gives each evidence
    /// object (0: none). Only the first call counts.
    pub fn object_lock_found(&self, state: &'static str, retention_days: u32) {
        let _ = self.object_lock.set((state, retention_days));
    }

    fn observe_request(&self, route: &str, method: &Method, status: u16, seconds: f64) {
        let labels = RequestLabels { route: route.to_owned(), method: method_label(method), status };
        self.request_seconds.get_or_create(&labels).observe(seconds);
    }

    fn refused(&self, reason: &'static str) {
        self.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }
}

/// Middleware over the whole router: times each request until its answer's head, labelled by the route the router
/// matched (never the path itself), and counts every problem answered by its `type`.
pub async fn track_requests(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map(|matched| matched.as_str().to_owned());
    let response = next.run(request).await;
    let route = route.as_deref().unwrap_or(UNMATCHED_ROUTE);
    metrics.observe_request(route, &method, response.status().as_u16(), started.elapsed().as_secs_f64());
    if let Some(ProblemType(reason)) = response.extensions().get::<ProblemType>() {
        metrics.refused(reason);
    }
    response
}
