//! A real Time-Stamp Authority over HTTP for the gateway's tests: `openssl ts -reply` (see [`super::authority`])
//! behind a tiny server, with misbehaving authorities beside it.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::routing::post;

use super::authority::Authority;

/// Serves `openssl ts -reply` at /tsa, and the misbehaving authorities beside it.
pub async fn serve(authority: Arc<Authority>) -> String {
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

/// A gateway whose log `authority` stamps (every new checkpoint, served by [`serve`]), and one artefact's bundle,
/// exported once a token covers its registration: the gateway, the exporter's session (a prosecutor of case `case-t`),
/// and the bundle.
pub async fn timestamped_export(authority: Arc<Authority>) -> (super::TestGateway, String, Vec<u8>) {
    use super::{As, TestGateway};
    let base = serve(authority.clone()).await;
    let tsa = format!("{base}/tsa {}", authority.path("ca.crt").display());
    let gw = TestGateway::start_with(|config| {
        config.timestamps.authorities = vec![tsa];
        config.timestamps.min_interval_secs = 0;
    })
    .await;
    let (prosecutor, session) = gw.person("prosecutor1", "IT").await;
    gw.case("case-t").await;
    gw.member("case-t", &prosecutor, "prosecutor").await;
    let reply = gw.upload("case-t", "purpose=intake", As::Session(&session), b"stamped evidence".to_vec()).await;
    assert_eq!(reply.status.as_u16(), 201);
    let artefact = reply.json()["artefact"].as_str().expect("artefact").to_owned();
    // The authority stamps the checkpoint holding the registration (the guard only stops a hang).
    let registered = gw.state.gateway.log().checkpoint().checkpoint.size;
    let catalog = gw.state.gateway.catalog().clone();
    tokio::time::timeout(Duration::from_secs(300), async {
        loop {
            let stamps = catalog
                .log_entries_newest_first(custodia_catalog::LogShelf::Timestamps, 0, i64::MAX, 8)
                .await
                .expect("catalog");
            let covering = |entry: &[u8]| {
                custodia_timestamp::CheckpointTimestamp::from_entry(entry).is_ok_and(|stamp| stamp.size >= registered)
            };
            if stamps.iter().any(|(_, entry)| covering(entry)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the registration is stamped");
    let export = format!("/api/v1/artefacts/{artefact}/exports?purpose=disclosure");
    let reply = gw.call("POST", &export, Some(As::Session(&session)), serde_json::json!({})).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", String::from_utf8_lossy(&reply.body));
    (gw, session, reply.body)
}

/// `bundle` (from [`timestamped_export`]) as a forger leaves it, with fresh bag checksums: a base64 character near the
/// end of its timestamp token changed, so the token's signature no longer verifies (nor is the entry the log's).
pub fn timestamp_token_forged(bundle: &[u8]) -> Vec<u8> {
    super::rebagged(bundle, |bag| {
        let path = bag.join("data/timestamp/entry.json");
        let text = std::fs::read_to_string(&path).expect("entry");
        let start = text.find("\"token\":\"").expect("token") + 9;
        let end = text[start..].find('"').expect("end of the token") + start;
        let mut bytes = text.into_bytes();
        bytes[end - 8] = if bytes[end - 8] == b'A' { b'B' } else { b'A' };
        std::fs::write(path, bytes).expect("entry");
    })
}

/// `bundle` (from [`timestamped_export`]) with the first hash of its timestamp consistency proof changed, and fresh
/// bag checksums.
pub fn timestamp_proof_broken(bundle: &[u8]) -> Vec<u8> {
    super::rebagged(bundle, |bag| {
        let path = bag.join("data/timestamp/consistency.proof");
        let mut bytes = std::fs::read(&path).expect("proof");
        bytes[0] = if bytes[0] == b'A' { b'B' } else { b'A' };
        std::fs::write(path, bytes).expect("proof");
    })
}

/// What someone with the gateway's storage could put in its log as a timestamp; the gateway itself verifies each
/// token first, and records neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forgery {
    /// A real token of the authority, over other bytes than the checkpoint it names.
    OtherBytes,
    /// A real token over the checkpoint, its signature's last byte changed.
    AlteredSignature,
    /// No forgery: a real token over the checkpoint, as the gateway would record it.
    Genuine,
}

/// Records a `forgery` naming the log's current checkpoint in `gw`'s log as the gateway records its timestamps
/// (`Gateway::record_checkpoint_timestamp`): the newest timestamp, at the index returned.
pub async fn append_forged_stamp(gw: &super::TestGateway, authority: &Authority, forgery: Forgery) -> u64 {
    use custodia_timestamp::CheckpointTimestamp;
    let log = &gw.state.gateway.log();
    let checkpoint = log.checkpoint().checkpoint;
    let body = CheckpointTimestamp::checkpoint_body(&checkpoint.origin, checkpoint.size, &checkpoint.root.0);
    let stamped = match forgery {
        Forgery::OtherBytes => b"other bytes".to_vec(),
        Forgery::AlteredSignature | Forgery::Genuine => body.into_bytes(),
    };
    let request = custodia_timestamp::TimestampRequest::new(&stamped, None, &mut rand_core::OsRng).expect("request");
    let mut token = custodia_timestamp::token_from_response(&authority.reply(request.to_der())).expect("token");
    if forgery == Forgery::AlteredSignature {
        let last = token.len() - 1;
        token[last] ^= 1;
    }
    let stamp = CheckpointTimestamp { size: checkpoint.size, root: checkpoint.root.0, token };
    gw.state.gateway.record_checkpoint_timestamp(&stamp).await.expect("recorded")
}

/// A gateway configured with `authority` at a URL that never answers (so the only timestamps in its log are those a
/// test puts there), and one uploaded artefact: the gateway, the uploader's session (a prosecutor of `case-f`), the
/// artefact.
pub async fn gateway_with_a_silent_authority(authority: Arc<Authority>) -> (super::TestGateway, String, String) {
    use super::{As, TestGateway};
    let base = serve(authority.clone()).await;
    let tsa = format!("{base}/failing {}", authority.path("ca.crt").display());
    let gw = TestGateway::start_with(|config| config.timestamps.authorities = vec![tsa]).await;
    let (prosecutor, session) = gw.person("prosecutor1", "IT").await;
    gw.case("case-f").await;
    gw.member("case-f", &prosecutor, "prosecutor").await;
    let reply = gw.upload("case-f", "purpose=intake", As::Session(&session), b"evidence".to_vec()).await;
    let artefact = reply.json()["artefact"].as_str().expect("artefact").to_owned();
    (gw, session, artefact)
}
