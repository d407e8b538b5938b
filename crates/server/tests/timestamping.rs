//! The gateway's timestamp client against real authorities: `openssl ts -reply` behind a tiny HTTP server, beside
//! authorities that are down, slow, failing or answering garbage. Only verified tokens enter the log; the others are
//! counted; the log never waits for them.

#[path = "../../timestamp/tests/support/mod.rs"]
mod authority;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use authority::{Authority, KeyKind};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::routing::post;
use custodia_ledger::{Log, LogOptions, LogSigner};
use custodia_server::timestamping::{Authority as Tsa, Timestamper};
use custodia_timestamp::CheckpointTimestamp;
use custodia_timestamp::schedule::Schedule;

const ORIGIN: &str = "custodia.test/log";

/// Serves `openssl ts -reply` at /tsa, and the misbehaving authorities beside it.
async fn serve(authority: Arc<Authority>) -> String {
    let app = Router::new()
        .route(
            "/tsa",
            post(|State(authority): State<Arc<Authority>>, query: Bytes| async move {
                let reply = tokio::task::spawn_blocking(move || authority.reply(&query)).await.expect("openssl ran");
                ([(header::CONTENT_TYPE, "application/timestamp-reply")], reply)
            }),
        )
        .route("/garbage", post(|| async { ([(header::CONTENT_TYPE, "application/timestamp-reply")], "garbage") }))
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "never"
            }),
        )
        .route("/failing", post(|| async { StatusCode::SERVICE_UNAVAILABLE }))
        .with_state(authority);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{address}")
}

/// A loopback address nobody listens on.
async fn down() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    format!("http://{address}/tsa")
}

fn tsa(url: &str, authority: &Authority) -> Tsa {
    Tsa::new(url.parse().expect("url"), authority.anchors())
}

async fn open_log(dir: &std::path::Path) -> Log {
    let signer = LogSigner::generate(ORIGIN).expect("log key");
    Log::open_local(dir, signer, LogOptions::default()).await.expect("log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_verified_tokens_enter_the_log_and_failures_are_counted_without_holding_the_log() {
    let authority = Arc::new(Authority::new(KeyKind::EcdsaP256));
    let stranger = Authority::with(KeyKind::Rsa, "Another CA", authority::Eku::CriticalTimestamping, "sha256");
    let base = serve(authority.clone()).await;
    let authorities = vec![
        tsa(&format!("{base}/tsa"), &authority),
        tsa(&format!("{base}/garbage"), &authority),
        tsa(&format!("{base}/slow"), &authority),
        tsa(&format!("{base}/failing"), &authority),
        tsa(&down().await, &authority),
        // A real token, but the operator trusts another root for this URL.
        tsa(&format!("{base}/tsa"), &stranger),
    ];
    // The slow authority holds its request until this timeout: long enough that the appends below, made while it
    // is held, finish first on a loaded machine.
    let schedule = Schedule { min_interval: Duration::from_secs(1), max_interval: Duration::from_secs(3600) };
    let timestamper = Arc::new(Timestamper::new(authorities, schedule, Duration::from_secs(20)).expect("client"));
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open_log(dir.path()).await;
    for i in 0..3u8 {
        log.append(vec![b'e', i]).await.expect("append");
    }
    let stamped = log.checkpoint().checkpoint;

    let stamping = tokio::spawn({
        let (timestamper, log) = (timestamper.clone(), log.clone());
        async move { timestamper.stamp_once(&log, None).await }
    });
    // The log takes entries while an authority hangs.
    for i in 3..6u8 {
        log.append(vec![b'e', i]).await.expect("append while the timestamp is pending");
    }
    assert!(!stamping.is_finished(), "the slow authority is still held, yet the log went on");
    let (stamped_size, appended) = stamping.await.expect("stamping");
    assert_eq!(stamped_size, stamped.size);

    let counters = timestamper.counters();
    assert_eq!(appended.len(), 1, "one token from the one good, trusted authority");
    assert_eq!(counters.requests.load(Ordering::Relaxed), 6);
    assert_eq!(counters.recorded.load(Ordering::Relaxed), 1);
    assert_eq!(counters.refused.load(Ordering::Relaxed), 2, "garbage, and a chain to an untrusted root");
    assert_eq!(counters.unreachable.load(Ordering::Relaxed), 3, "slow, failing, down");
    assert_eq!(counters.not_recorded.load(Ordering::Relaxed), 0);

    let size = log.checkpoint().checkpoint.size;
    assert_eq!(size, 7, "six entries and the timestamp");
    let entry = log.storage().entry(appended[0], size).await.expect("entry");
    let stamp = CheckpointTimestamp::from_entry(&entry).expect("a timestamp entry");
    assert_eq!((stamp.size, stamp.root), (stamped.size, stamped.root.0), "it stamps the checkpoint of its time");
    let verified = stamp.verify(ORIGIN, &authority.anchors()).expect("the recorded token verifies");
    assert!(verified.tsa.contains("Custodia Test TSA"));
    assert!(stamp.verify(ORIGIN, &stranger.anchors()).is_err());

    // docs/verify-by-hand.md's step 3b: `openssl ts -verify` accepts the entry's token for the checkpoint it
    // stamps, under the authority's certificate, and refuses it under another's or for another size.
    let doc =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/verify-by-hand.md"))
            .expect("the by-hand document");
    let step = doc.split("```sh timestamp\n").nth(1).and_then(|block| block.split("```").next()).expect("step 3b");
    let by_hand = |anchor: &Authority, entry: &[u8]| {
        let work = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(work.path().join("data")).expect("data");
        std::fs::write(work.path().join("data/checkpoint"), log.checkpoint().note()).expect("checkpoint");
        std::fs::write(work.path().join("entry.json"), entry).expect("entry");
        std::fs::copy(anchor.path("ca.crt"), work.path().join("tsa-anchor.pem")).expect("anchor");
        let run = std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", step])
            .current_dir(work.path())
            .output()
            .expect("bash");
        (
            run.status.success(),
            format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr)),
        )
    };
    let (ok, said) = by_hand(&authority, &entry);
    assert!(ok && said.contains("Verification: OK") && said.contains("Time stamp:"), "{said}");
    assert!(!by_hand(&stranger, &entry).0, "another authority's certificate");
    let other_size = String::from_utf8(entry.to_vec()).expect("canonical JSON").replacen(
        &format!("\"size\":{}", stamped.size),
        &format!("\"size\":{}", stamped.size + 1),
        1,
    );
    assert!(!by_hand(&authority, other_size.as_bytes()).0, "a token does not stamp another checkpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_timestamper_stamps_new_checkpoints_but_not_its_own_entries() {
    let authority = Arc::new(Authority::new(KeyKind::Rsa));
    let base = serve(authority.clone()).await;
    let schedule = Schedule { min_interval: Duration::from_millis(50), max_interval: Duration::from_secs(3600) };
    let timestamper = Arc::new(
        Timestamper::new(vec![tsa(&format!("{base}/tsa"), &authority)], schedule, Duration::from_secs(60))
            .expect("client"),
    );
    let counters = timestamper.counters();
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open_log(dir.path()).await;
    log.append(b"first".to_vec()).await.expect("append");
    tokio::spawn(timestamper.clone().run(log.clone(), None));

    let recorded = |at_least: u64| {
        let counters = counters.clone();
        async move {
            while counters.recorded.load(Ordering::Relaxed) < at_least {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // The guard only stops a hang; the checks below are counts.
    let guard = Duration::from_secs(300);
    tokio::time::timeout(guard, recorded(1)).await.expect("the first checkpoint is stamped");
    log.append(b"second".to_vec()).await.expect("append");
    tokio::time::timeout(guard, recorded(2)).await.expect("the new checkpoint is stamped");

    // Every entry after the first is a timestamp or ours, and each timestamp stamps a checkpoint with a custody
    // entry the previous timestamp did not cover: the timestamper never stamps only its own entries.
    let size = log.checkpoint().checkpoint.size;
    let mut stamped_sizes = Vec::new();
    for index in 0..size {
        let entry = log.storage().entry(index, size).await.expect("entry");
        if let Ok(stamp) = CheckpointTimestamp::from_entry(&entry) {
            stamp.verify(ORIGIN, &authority.anchors()).expect("verifies");
            stamped_sizes.push(stamp.size);
        }
    }
    assert_eq!(stamped_sizes, vec![1, 3], "the first entry, then the second (after the first timestamp)");
    assert_eq!(counters.requests.load(Ordering::Relaxed), 2, "no request for a log that only grew by its timestamp");
}
