//! The HTTP surface, driven with `oneshot` and no socket.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use custodia_ledger::{Log, LogOptions, LogSigner, SignedCheckpoint};
use custodia_server::http::{AppState, app};
use http_body_util::BodyExt as _;
use object_store::memory::InMemory;
use tower::ServiceExt as _;

async fn get(state: &AppState, uri: &str) -> (StatusCode, Option<String>, Vec<u8>) {
    let response = app(state.clone()).oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
    let content_type = response.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned());
    let status = response.status();
    (status, content_type, response.into_body().collect().await.unwrap().to_bytes().to_vec())
}

#[tokio::test]
async fn serves_the_log_at_tlog_tiles_paths_and_nothing_else() {
    let signer = LogSigner::generate("custodia.test/log").unwrap();
    let verifier = signer.verifier();
    let log = Log::open(std::sync::Arc::new(InMemory::new()), Default::default(), signer, LogOptions::default())
        .await
        .unwrap();
    for i in 0..300u32 {
        log.append(i.to_be_bytes().to_vec()).await.unwrap();
    }
    let state = AppState { log: log.clone() };

    let (status, _, body) = get(&state, "/log/checkpoint").await;
    assert_eq!(status, StatusCode::OK);
    let signed = SignedCheckpoint::open(&body, &[verifier]).unwrap();
    assert_eq!(signed.checkpoint.size, 300);

    let (status, _, body) = get(&state, "/log/tile/0/000").await;
    assert_eq!((status, body.len()), (StatusCode::OK, 256 * 32));
    let (status, _, body) = get(&state, "/log/tile/entries/001.p/44").await;
    assert_eq!((status, body.len()), (StatusCode::OK, 44 * 6));

    for (uri, why) in [
        ("/log/tile/0/002", "beyond the published checkpoint"),
        ("/log/tile/0/001.p/45", "beyond the published checkpoint"),
        ("/log/tile/0/1", "not a c2sp.org/tlog-tiles path"),
        ("/log/tile/..%2F..%2Fkeys", "not a c2sp.org/tlog-tiles path"),
        ("/log/.sequencer.lock", "not a c2sp.org/tlog-tiles path"),
    ] {
        let (status, content_type, body) = get(&state, uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(content_type.as_deref(), Some("application/problem+json"), "{uri}");
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["status"], 404);
        assert!(problem["detail"].as_str().unwrap().contains(why), "{uri}: {problem}");
    }
}
