//! What an operator's monitoring reads: Prometheus metrics at `/metrics` on a listener of its own
//! (`CUSTODIA_METRICS_LISTEN`, off by default), in the Prometheus text format (version 0.0.4), encoded by the
//! Prometheus project's `prometheus-client`.
//!
//! Who may read them: whoever reaches that address. It is never the API's address, because behind a reverse
//! proxy on the same host every request comes from loopback, so "loopback only" on the API's listener would
//! serve the metrics to the whole Internet. Nothing in them is personal or secret, and nothing grows without
//! bound: every label value comes from a closed set the code fixes (a route template as the router matched it,
//! never the request's path, which carries ids and invite secrets; an HTTP method from a fixed list; a status
//! code; a problem `type`; a hearing phase; what start-up found of the bucket's Object Lock) or from the operator's own configuration (the names of the witnesses
//! in the witness policy). No name, case, account, token or address of anyone is a label or a value.
//!
//! Two kinds of figure: counters and the latency histogram, kept as requests happen
//! ([`crate::request_metrics::Metrics`]);
//! and the state of the log, the witnesses, the Time-Stamp Authorities and the hearings, read when scraped
//! ([`render`]); and what start-up found of the object store's Object Lock (`store_object_lock`,
//! `store_retention_days`).

use std::time::SystemTime;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::state::AppState;
use crate::timestamping::TimestampCounters;

/// The router of the metrics listener: `/metrics` and nothing else.
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new().route("/metrics", axum::routing::get(scrape)).with_state(state)
}

async fn scrape(State(state): State<AppState>) -> Response {
    match render(&state).await {
        Ok(text) => {
            ([(header::CONTENT_TYPE, prometheus_client::encoding::prometheus_text::CONTENT_TYPE)], text).into_response()
        }
        Err(err) => crate::problem::Problem::internal(&err).into_response(),
    }
}

/// Seconds since the Unix epoch of `time` (0 before it).
fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |since| since.as_secs_f64())
}

/// A hearing's phase, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

/// A witness of this log, by its name in the operator's witness policy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WitnessLabels {
    witness: String,
}

/// A witness's standing alarm.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WitnessAlarmLabels {
    witness: String,
    alarm: &'static str,
}

/// A duty one gateway on a database does for all.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DutyLabels {
    duty: &'static str,
}

/// A kind of request sent to partner gateways about transfers.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartnerRequestLabels {
    request: &'static str,
}

/// What start-up found of the bucket's Object Lock.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLockLabels {
    state: &'static str,
}

/// Why a Time-Stamp Authority gave no recorded token.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TimestampFailureLabels {
    reason: &'static str,
}

/// The whole exposition: the figures kept as things happen, then the state read now.
pub async fn render(state: &AppState) -> Result<String, std::fmt::Error> {
    let metrics = &state.metrics;
    let mut registry = Registry::with_prefix("custodia");
    let (ingested_bytes, ingested_artefacts) = state.gateway.ingested();
    registry.register(
        "ingest_bytes",
        "Bytes of artefacts taken into custody by this process",
        ConstCounter::new(ingested_bytes),
    );
    registry.register(
        "ingest_artefacts",
        "Artefacts taken into custody by this process",
        ConstCounter::new(ingested_artefacts),
    );
    registry.register(
        "http_request_duration_seconds",
        "Time from a request to its answer's head, by route template, method and status",
        metrics.request_seconds.clone(),
    );
    registry.register(
        "http_refusals",
        "Requests answered with a problem, by its type (the reason, a word from a closed list)",
        metrics.refusals.clone(),
    );

    let log = &state.gateway.log();
    let size = log.checkpoint().checkpoint.size;
    registry.register("log_entries", "Entries in the custody log's latest checkpoint", ConstGauge::new(gauge(size)));
    registry.register(
        "log_appends",
        "Entries this process appended to the custody log (each durable when counted), not those of other gateways on it",
        ConstCounter::new(log.appended_here()),
    );
    registry.register(
        "log_appends_waiting",
        "Appends waiting to be integrated into the log (the batch being written not counted): the integration lag",
        ConstGauge::new(gauge(log.appends_waiting() as u64)),
    );
    registry.register(
        "log_appending",
        "1 while the custody log takes appends, 0 while its store fails",
        ConstGauge::new(i64::from(log.is_appending())),
    );
    registry.register(
        "log_checkpoint_published_timestamp_seconds",
        "When this process last published a checkpoint (Unix seconds; until it has, when it opened the log)",
        ConstGauge::new(unix_seconds(log.published_at())),
    );

    let cosigning = state.cosigning.report();
    let duties = Family::<DutyLabels, Gauge>::default();
    let mut held = vec![("hearings", state.hearings.hosts_hearings()), ("transfers", state.transfers.on_duty())];
    // Asking the witnesses is a duty only where a witness policy names some.
    if cosigning.collecting {
        held.push(("cosigning", cosigning.asking));
    }
    for (duty, held) in held {
        duties.get_or_create(&DutyLabels { duty }).set(i64::from(held));
    }
    registry.register(
        "duty_held",
        "1 for each duty this gateway does for all the gateways on its database (hosting the hearings, the transfers \
         with partners, asking the witnesses), 0 for each another gateway does",
        duties,
    );
    register_partner_requests(&mut registry, state.transfers.sent());
    registry.register(
        "transfer_evidences_pending",
        "Evidences of transfers kept without their proof after the last sweep of the transfers that could list them \
         (at most 100 counted; 0 where another gateway does the transfers): the partner waits for each meanwhile",
        ConstGauge::new(gauge(state.transfers.evidences_pending())),
    );
    register_cosigning(&mut registry, &cosigning);
    if let Some((found, retention_days)) = metrics.object_lock.get().copied() {
        let object_lock = Family::<ObjectLockLabels, Gauge>::default();
        object_lock.get_or_create(&ObjectLockLabels { state: found }).set(1);
        registry.register(
            "store_object_lock",
            "1 for what start-up found of the bucket's S3 Object Lock: enabled, not_enabled, not_supported, unknown \
             (the bucket did not say), or local (no bucket)",
            object_lock,
        );
        registry.register(
            "store_retention_days",
            "Days of Object Lock retention the gateway gives each evidence object once written (0: none of its own)",
            ConstGauge::new(i64::from(retention_days)),
        );
    }
    if let Some(counters) = metrics.timestamps.get() {
        register_timestamps(&mut registry, counters);
    }
    register_hearings(&mut registry, &state.hearings.census().await);

    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}

/// A count as a gauge's value (gauges are signed).
fn gauge(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn register_cosigning(registry: &mut Registry, report: &crate::cosigning::CosigningReport) {
    registry.register(
        "witness_policy",
        "1 when a witness policy is configured and cosignatures are collected on this log's checkpoints",
        ConstGauge::new(i64::from(report.collecting)),
    );
    if !report.collecting {
        return;
    }
    registry.register(
        "witness_published_size",
        "Size of the checkpoint published under the witness policy (0: none yet)",
        ConstGauge::new(gauge(report.published.as_ref().map_or(0, |published| published.size))),
    );
    let cosigned_size = Family::<WitnessLabels, Gauge>::default();
    let requests = Family::<WitnessLabels, Counter>::default();
    let cosignatures = Family::<WitnessLabels, Counter>::default();
    let gave_up = Family::<WitnessLabels, Counter>::default();
    let alarms = Family::<WitnessAlarmLabels, Gauge>::default();
    for witness in &report.witnesses {
        let labels = WitnessLabels { witness: witness.name.clone() };
        cosigned_size.get_or_create(&labels).set(gauge(witness.cosigned_size.unwrap_or(0)));
        requests.get_or_create(&labels).inc_by(witness.requests);
        cosignatures.get_or_create(&labels).inc_by(witness.cosigned);
        gave_up.get_or_create(&labels).inc_by(witness.gave_up);
        if let Some(alarm) = witness.alarm {
            alarms.get_or_create(&WitnessAlarmLabels { witness: witness.name.clone(), alarm }).set(1);
        }
    }
    registry.register("witness_cosigned_size", "The size each witness last cosigned (0: never)", cosigned_size);
    registry.register("witness_requests", "Requests sent to each witness since start", requests);
    registry.register("witness_cosignatures", "Cosignatures each witness gave since start", cosignatures);
    registry.register("witness_gave_up", "Checkpoints left unwitnessed by each witness after every attempt", gave_up);
    registry.register("witness_alarm", "1 for each alarm standing against a witness, by its kind", alarms);
}

fn register_partner_requests(registry: &mut Registry, sent: &custodia_service::transfers::SentToPartners) {
    use std::sync::atomic::Ordering::Relaxed;
    let requests = Family::<PartnerRequestLabels, Counter>::default();
    for (request, count) in [
        ("offer", &sent.offers),
        ("chunk", &sent.chunks),
        ("complete", &sent.completions),
        ("progress", &sent.progress),
        ("outbox", &sent.outbox),
    ] {
        requests.get_or_create(&PartnerRequestLabels { request }).inc_by(count.load(Relaxed));
    }
    registry.register(
        "partner_transfer_requests",
        "Requests this process sent to partner gateways about transfers since start, by kind",
        requests,
    );
}

fn register_timestamps(registry: &mut Registry, counters: &TimestampCounters) {
    use std::sync::atomic::Ordering::Relaxed;
    registry.register(
        "tsa_requests",
        "Requests sent to the Time-Stamp Authorities since start",
        ConstCounter::new(counters.requests.load(Relaxed)),
    );
    registry.register(
        "tsa_tokens_recorded",
        "Timestamp tokens verified and recorded in the log since start",
        ConstCounter::new(counters.recorded.load(Relaxed)),
    );
    let failures = Family::<TimestampFailureLabels, Counter>::default();
    for (reason, count) in [
        ("unreachable", &counters.unreachable),
        ("refused", &counters.refused),
        ("not_recorded", &counters.not_recorded),
    ] {
        failures.get_or_create(&TimestampFailureLabels { reason }).inc_by(count.load(Relaxed));
    }
    registry.register("tsa_failures", "Answers from the Time-Stamp Authorities that gave no recorded token", failures);
}

fn register_hearings(registry: &mut Registry, census: &[(custodia_hearing::Phase, usize)]) {
    use custodia_hearing::Phase;
    let hearings = Family::<PhaseLabels, Gauge>::default();
    for phase in [Phase::Scheduled, Phase::Open, Phase::InSession, Phase::Ended] {
        let count = census.iter().filter(|(of, _)| *of == phase).count();
        hearings.get_or_create(&PhaseLabels { phase: phase_label(phase) }).set(gauge(count as u64));
    }
    let connected: usize = census.iter().map(|(_, connected)| connected).sum();
    registry.register("hearings", "Hearings this process holds, by phase", hearings);
    registry.register(
        "hearing_participants_connected",
        "Participants connected to a hearing now, in all hearings",
        ConstGauge::new(gauge(connected as u64)),
    );
}

fn phase_label(phase: custodia_hearing::Phase) -> &'static str {
    use custodia_hearing::Phase;
    match phase {
        Phase::Scheduled => "scheduled",
        Phase::Open => "open",
        Phase::InSession => "in_session",
        Phase::Ended => "ended",
    }
}
