//! Every time that gateways on one database compare is stored and compared on the database's clock (the catalog's
//! `database_clock`), not on each gateway's own: a gateway whose clock runs two minutes ahead (under libfaketime)
//! takes no live upload completion claim of another gateway's for stale, takes none of its sessions, tokens or
//! uploads with a minute and a half left for expired, and dates none of its own two minutes late. Judged by answers
//! and rows: the times the test sets leave each step far longer than it takes on a loaded machine.

mod support;

use std::net::Ipv4Addr;

use base64::Engine as _;
use custodia_catalog::Catalog;
use custodia_service::identity::{SESSION_SECONDS, secret_digest};
use custodia_service::uploads::TTL_SECONDS;
use serde_json::json;
use support::{Client, RawAnswer, http_from};

const CASE: &str = "case-clock";
const PASSWORD: &str = "officer-correct-horse-battery";
/// How far B's clock runs ahead of A's and the database's.
const AHEAD: &str = "+2m";
/// What the test leaves of a session, a token and an upload of A's: less than B's lead, so that B would take each
/// for expired by its own clock.
const LEFT: i64 = 90;

/// Two gateway processes on one PostgreSQL database and one garage bucket: A on the machine's clock, B two minutes
/// ahead. An officer of `CASE` may upload to it.
struct Gateways {
    backends: support::SharedBackends,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    _a: support::GatewayProcess,
    b: support::GatewayProcess,
    ports: (u16, u16),
}

impl Gateways {
    async fn start() -> Self {
        // The account and the case, made through a gateway that then goes away.
        let (backends, ()) = support::SharedBackends::start(async |setup| {
            let (officer, _) = setup.person("officer", "FR").await;
            setup.case(CASE).await;
            setup.member(CASE, &officer, "remote_site_officer").await;
        })
        .await;
        let env = backends.env(&[]);
        let (dir_a, dir_b) = (support::data_dir_with_key(&backends.key), support::data_dir_with_key(&backends.key));
        let shared = support::env_refs(&env);
        let (a, port_a) = support::spawn_gateway(dir_a.path(), &shared);
        let preload = support::libfaketime();
        let mut ahead = shared.clone();
        ahead.push(("LD_PRELOAD", preload.as_os_str()));
        ahead.push(("FAKETIME", std::ffi::OsStr::new(AHEAD)));
        // Its timers (tokio's, on the monotonic clock) run at the real pace; only the wall clock is ahead.
        ahead.push(("FAKETIME_DONT_FAKE_MONOTONIC", std::ffi::OsStr::new("1")));
        let (b, port_b) = support::spawn_gateway(dir_b.path(), &ahead);
        Self { backends, _dirs: (dir_a, dir_b), _a: a, b, ports: (port_a, port_b) }
    }

    fn base(port: u16) -> String {
        format!("http://127.0.0.1:{port}")
    }
}

/// A tus request with the session `session` to the gateway on `port`.
async fn tus(port: u16, session: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> RawAnswer {
    let cookie = format!("custodia_session={session}");
    let mut all = vec![("Cookie", cookie.as_str()), ("Sec-Fetch-Site", "same-origin"), ("Tus-Resumable", "1.0.0")];
    all.extend_from_slice(headers);
    http_from(Ipv4Addr::LOCALHOST, port, method, path, &all, body).await.unwrap()
}

/// A PATCH of `bytes` at `offset`.
async fn patch(port: u16, session: &str, path: &str, offset: usize, bytes: &[u8]) -> RawAnswer {
    let offset = offset.to_string();
    let headers = [("Content-Type", "application/offset+octet-stream"), ("Upload-Offset", offset.as_str())];
    tus(port, session, "PATCH", path, &headers, bytes).await
}

/// Creates an upload of `length` bytes into `CASE`: its path.
async fn create_upload(port: u16, session: &str, length: usize) -> String {
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let metadata = format!("case {},purpose {},filetype {}", b64(CASE), b64("statement"), b64("text/plain"));
    let length = length.to_string();
    let headers = [("Upload-Length", length.as_str()), ("Upload-Metadata", metadata.as_str())];
    let created = tus(port, session, "POST", "/api/v1/uploads", &headers, b"").await;
    assert_eq!(created.status, 201, "{}", created.text());
    created.header("location").unwrap()
}

/// The database's clock now, in unix seconds.
async fn database_now(catalog: &Catalog) -> i64 {
    catalog.database_now_ms().await / 1000
}

/// Asserts that `stored` (unix seconds, as the database holds it) is `span` after a time between `before` and
/// `after` (read from the database's clock around the request that stored it), give or take a second.
fn assert_dated(what: &str, stored: i64, before: i64, span: i64, after: i64) {
    assert!(
        before + span - 1 <= stored && stored <= after + span + 1,
        "{what} is stored {} s from the database's clock, not {span}",
        stored - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_clock_runs_ahead_expires_and_takes_over_nothing_early_and_dates_nothing_late() {
    let gateways = Gateways::start().await;
    let (a, b) = gateways.ports;
    let catalog = Catalog::connect(&gateways.backends.postgres.url).await.unwrap();
    let pool = sqlx::AnyPool::connect(&gateways.backends.postgres.url).await.unwrap();

    // A session of A's with a minute and a half left: B takes it.
    let session = Client::sign_in(&Gateways::base(a), "officer", PASSWORD).cookie.unwrap();
    sqlx::query("UPDATE sessions SET expires_at = $1 WHERE token_sha256 = $2")
        .bind(database_now(&catalog).await + LEFT)
        .bind(secret_digest(&session))
        .execute(&pool)
        .await
        .unwrap();
    let on_b = Client { base: Gateways::base(b), cookie: Some(session.clone()) };
    let (status, me) = on_b.json("GET", "/api/v1/me", json!({}));
    assert_eq!(status, 200, "B took a live session for expired: {me}");

    // An API token A makes for a minute and a half: B takes it.
    let on_a = Client { base: Gateways::base(a), cookie: Some(session) };
    let (status, token) = on_a.json("POST", "/api/v1/tokens", json!({"scopes": ["read"], "expires_in_seconds": LEFT}));
    assert_eq!(status, 201, "{token}");
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    let me = http_from(Ipv4Addr::LOCALHOST, b, "GET", "/api/v1/me", &[("Authorization", &bearer)], b"").await.unwrap();
    assert_eq!(me.status, 200, "B took a live token for expired: {}", me.text());

    // An upload made on A with a minute and a half left: B goes on with it.
    let session = Client::sign_in(&Gateways::base(a), "officer", PASSWORD).cookie.unwrap();
    let bytes = b"a statement in two halves".to_vec();
    let half = bytes.len() / 2;
    let path = create_upload(a, &session, bytes.len()).await;
    let id = path.rsplit('/').next().unwrap().to_owned();
    sqlx::query("UPDATE uploads SET expires_at = $1 WHERE id = $2")
        .bind(database_now(&catalog).await + LEFT)
        .bind(&id)
        .execute(&pool)
        .await
        .unwrap();
    let status = tus(b, &session, "HEAD", &path, &[], b"").await;
    assert_eq!(status.status, 200, "B took a live upload for expired: {}", status.head);
    assert_eq!(status.header("upload-offset").as_deref(), Some("0"));
    let patched = patch(b, &session, &path, 0, &bytes[..half]).await;
    assert_eq!(patched.status, 204, "B took a live upload for expired: {}", patched.text());

    // Another upload, whose last bytes A takes into custody now, having just renewed its claim: B leaves the claim
    // alone, and answers that the upload is busy, to the last PATCH and to its termination alike.
    let path = create_upload(a, &session, bytes.len()).await;
    let id = path.rsplit('/').next().unwrap().to_owned();
    let patched = patch(a, &session, &path, 0, &bytes[..half]).await;
    assert_eq!(patched.status, 204, "{}", patched.text());
    let last = format!("{id}.{half}.a-gateway-completing-it");
    let now = catalog.database_now_ms().await / 1000;
    assert!(catalog.claim_upload_completion(&id, half as i64, &last, now, now + 3600).await.unwrap());
    let finished = patch(b, &session, &path, half, &bytes[half..]).await;
    assert_eq!(finished.status, 423, "B took A's live claim over: {}", finished.text());
    let terminated = tus(b, &session, "DELETE", &path, &[], b"").await;
    assert_eq!(terminated.status, 423, "B took A's live claim over: {}", terminated.text());
    let upload = catalog.upload(&id).await.unwrap().expect("the upload stays A's to finish");
    assert_eq!(upload.completing.map(|claim| claim.object), Some(last), "the claim is still A's");
    assert_eq!(upload.offset, half as i64);

    // What B stores itself is dated by the database's clock, not two minutes late: a session, a token, an upload.
    let before = database_now(&catalog).await;
    let on_b = Client::sign_in(&Gateways::base(b), "officer", PASSWORD);
    let after = database_now(&catalog).await;
    let stored: i64 = sqlx::query_scalar("SELECT expires_at FROM sessions WHERE token_sha256 = $1")
        .bind(secret_digest(on_b.cookie.as_deref().unwrap()))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_dated("B's session", stored, before, SESSION_SECONDS, after);
    let before = database_now(&catalog).await;
    let (status, token) = on_b.json("POST", "/api/v1/tokens", json!({"scopes": ["read"], "expires_in_seconds": LEFT}));
    let after = database_now(&catalog).await;
    assert_eq!(status, 201, "{token}");
    let stored: i64 = sqlx::query_scalar("SELECT expires_at FROM api_tokens WHERE id = $1")
        .bind(token["id"].as_str().unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_dated("B's token", stored, before, LEFT, after);
    let before = database_now(&catalog).await;
    let path = create_upload(b, on_b.cookie.as_deref().unwrap(), 10).await;
    let after = database_now(&catalog).await;
    let stored: i64 = sqlx::query_scalar("SELECT expires_at FROM uploads WHERE id = $1")
        .bind(path.rsplit('/').next().unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_dated("B's upload", stored, before, TTL_SECONDS, after);

    // The custody record of what B takes into custody is dated by the database's clock too: a record B writes
    // about an artefact is not dated two minutes after a later record of A's, nor two minutes ahead of it.
    let before = database_now(&catalog).await;
    let finished = patch(b, on_b.cookie.as_deref().unwrap(), &path, 0, b"ten bytes.").await;
    let after = database_now(&catalog).await;
    assert_eq!(finished.status, 204, "{}", finished.text());
    let record: Vec<u8> = sqlx::query_scalar("SELECT record FROM custody_index ORDER BY ledger_index DESC LIMIT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    assert_eq!(record["event"]["type"], "artefact_registered", "{record}");
    let at: jiff::Timestamp = record["at"].as_str().unwrap().parse().unwrap();
    assert_dated("B's registration record", at.as_second(), before, 0, after);

    let log = gateways.b.log();
    assert!(log.contains("clock differs from the database"), "B was told its clock is off: {log}");
}
