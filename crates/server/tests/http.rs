//! The log's read-only HTTP surface, driven with `oneshot` and no socket.

mod support;

use axum::http::StatusCode;
use custodia_ledger::SignedCheckpoint;

#[tokio::test]
async fn serves_the_log_at_tlog_tiles_paths_and_nothing_else() {
    let gateway = support::TestGateway::start().await;
    for i in 0..300u32 {
        gateway.state.gateway.log().append(i.to_be_bytes().to_vec()).await.unwrap();
    }

    let response = gateway.get("/log/checkpoint", None).await;
    assert_eq!(response.status, StatusCode::OK);
    let signed = SignedCheckpoint::open(&response.body, &[gateway.verifier()]).unwrap();
    assert!(signed.checkpoint.size >= 300);

    let response = gateway.get("/log/tile/0/000", None).await;
    assert_eq!((response.status, response.body.len()), (StatusCode::OK, 256 * 32));

    for (uri, why) in [
        ("/log/tile/0/x001/000", "beyond the published checkpoint"),
        ("/log/tile/0/1", "not a c2sp.org/tlog-tiles path"),
        ("/log/tile/..%2F..%2Fkeys", "not a c2sp.org/tlog-tiles path"),
        ("/log/.sequencer.lock", "not a c2sp.org/tlog-tiles path"),
    ] {
        let response = gateway.get(uri, None).await;
        assert_eq!(response.status, StatusCode::NOT_FOUND, "{uri}");
        response.assert_problem(404, "not-found", why);
    }
}

/// No request property is nullable in the published document, so a property the body's type reads is refused when
/// `null`, not read as absent (which would take a body the document calls invalid); leaving it out works.
#[tokio::test]
async fn a_json_body_with_null_is_refused_in_every_place() {
    let gateway = support::TestGateway::start().await;
    let admin = Some(support::As::Session(&gateway.admin));
    let cases = "/api/v1/cases";
    for (body, at) in [
        (serde_json::json!({"id": null, "title": "R v Null"}), "id is null"),
        (serde_json::json!({"title": null}), "title is null"),
        (serde_json::json!(null), "JSON body"),
    ] {
        let reply = gateway.call("POST", cases, admin, body).await;
        reply.assert_problem(400, "bad-input", at);
    }
    let reply = gateway.call("POST", cases, admin, serde_json::json!({"title": "R v Null"})).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
}
