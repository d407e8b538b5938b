//! Resumable uploads (tus 1.0.0), driven in-process: chunks, a PATCH cut off half-way, refusals, termination,
//! expiry, and an artefact that ends up exactly as a direct upload would have left it.

mod support;

use std::io::Write as _;

use axum::body::Body;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use custodia_core::Sha256;
use serde_json::Value;
use sha1::Digest as _;
use support::{As, Reply, TestGateway};

const CASE: &str = "case-tus";

/// A gateway with a case, a remote-site officer of it (who uploads) and its clerk (who reads what came in).
/// Returns their sessions.
async fn gateway_with_officer() -> (TestGateway, String, String) {
    gateway_with_officer_on(|_| {}).await
}

async fn gateway_with_officer_on(
    configure: impl FnOnce(&mut custodia_server::config::ServeConfig),
) -> (TestGateway, String, String) {
    let gateway = TestGateway::start_with(configure).await;
    gateway.case(CASE).await;
    let (officer, officer_session) = gateway.person("officer", "FR").await;
    gateway.member(CASE, &officer, "remote_site_officer").await;
    let (clerk, clerk_session) = gateway.person("clerk", "NL").await;
    gateway.member(CASE, &clerk, "clerk").await;
    (gateway, officer_session, clerk_session)
}

/// Bytes that differ at every offset, so that a chunk in the wrong place changes the digest.
fn statement(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn metadata(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(key, value)| format!("{key} {}", BASE64.encode(value))).collect::<Vec<_>>().join(",")
}

fn statement_metadata(bytes: &[u8]) -> String {
    let sha256 = Sha256::of(bytes).to_hex();
    metadata(&[
        ("case", CASE),
        ("purpose", "witness statement"),
        ("filename", "statement.webm"),
        ("filetype", "video/webm"),
        ("sha256", &sha256),
    ])
}

/// A tus request: `Tus-Resumable` and the given headers.
async fn tus(
    gateway: &TestGateway,
    method: &str,
    uri: &str,
    auth: &str,
    headers: &[(&str, &str)],
    body: Body,
) -> Reply {
    let mut request = TestGateway::request(method, uri, Some(As::Session(auth))).header("tus-resumable", "1.0.0");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let reply = gateway.send(request.body(body).unwrap()).await;
    assert_eq!(reply.headers["tus-resumable"], "1.0.0", "every response names the protocol");
    reply
}

async fn try_create(gateway: &TestGateway, auth: &str, length: &str, metadata: &str) -> Reply {
    let headers = [("upload-length", length), ("upload-metadata", metadata)];
    tus(gateway, "POST", "/api/v1/uploads", auth, &headers, Body::empty()).await
}

/// Creates an upload and returns its URL.
async fn create(gateway: &TestGateway, auth: &str, length: usize, metadata: &str) -> String {
    let reply = try_create(gateway, auth, &length.to_string(), metadata).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    let location = reply.headers["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/api/v1/uploads/upl-"), "{location}");
    location
}

async fn patch(
    gateway: &TestGateway,
    auth: &str,
    url: &str,
    offset: usize,
    body: Body,
    extra: &[(&str, &str)],
) -> Reply {
    let offset = offset.to_string();
    let mut headers = vec![("content-type", "application/offset+octet-stream"), ("upload-offset", offset.as_str())];
    headers.extend_from_slice(extra);
    tus(gateway, "PATCH", url, auth, &headers, body).await
}

/// The upload's offset, from HEAD.
async fn offset(gateway: &TestGateway, auth: &str, url: &str) -> usize {
    let reply = tus(gateway, "HEAD", url, auth, &[], Body::empty()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["cache-control"], "no-store");
    reply.headers["upload-offset"].to_str().unwrap().parse().unwrap()
}

fn staging_file(gateway: &TestGateway, url: &str) -> std::path::PathBuf {
    gateway.dir.path().join("uploads").join(url.rsplit('/').next().unwrap())
}

/// Files under the data directory's `objects/`: artefacts and their manifests.
fn stored_objects(gateway: &TestGateway) -> usize {
    fn count(dir: &std::path::Path) -> usize {
        let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
        entries.map(|entry| if entry.path().is_dir() { count(&entry.path()) } else { 1 }).sum()
    }
    count(&gateway.dir.path().join("objects"))
}

async fn artefact(gateway: &TestGateway, auth: &str, path: &str) -> Value {
    let reply = gateway.get(&format!("{path}?purpose=check"), Some(As::Session(auth))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

async fn ledger_record(gateway: &TestGateway, index: u64) -> Value {
    let log = &gateway.state.gateway.log;
    let entry = log.storage().entry(index, log.checkpoint().checkpoint.size).await.unwrap();
    serde_json::from_slice(&entry).unwrap()
}

/// A registration record without what differs between two registrations of the same bytes: the ids, the time,
/// and the case's and purpose's commitments, whose salts are the record's own (compare the opened texts instead).
fn registration_without_ids(mut record: Value) -> Value {
    let fields = record.as_object_mut().unwrap();
    fields.remove("at");
    assert!(fields.remove("case").is_some(), "case missing from {fields:?}");
    assert!(fields.remove("purpose").is_some(), "purpose missing from {fields:?}");
    let event = record["event"].as_object_mut().unwrap();
    for key in ["artefact", "manifest_sha256", "manifest_signature"] {
        assert!(event.remove(key).is_some(), "{key} missing from {event:?}");
    }
    record
}

#[tokio::test]
async fn uploads_in_chunks_and_registers_what_a_direct_upload_would() {
    let (gateway, officer, clerk) = gateway_with_officer().await;
    let reply = tus(&gateway, "OPTIONS", "/api/v1/uploads", &officer, &[], Body::empty()).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(reply.headers["tus-version"], "1.0.0");
    assert_eq!(reply.headers["tus-extension"], "creation,checksum,termination");
    assert_eq!(reply.headers["tus-checksum-algorithm"], "sha1,sha256");
    assert_eq!(reply.headers["tus-max-size"], (64u64 << 30).to_string().as_str());

    let bytes = statement(300_000);
    let url = create(&gateway, &officer, bytes.len(), &statement_metadata(&bytes)).await;
    let reply = tus(&gateway, "HEAD", &url, &officer, &[], Body::empty()).await;
    assert_eq!(reply.headers["upload-length"], "300000");
    assert_eq!(reply.headers["upload-metadata"].to_str().unwrap(), statement_metadata(&bytes));
    assert_eq!(offset(&gateway, &officer, &url).await, 0);

    let mut artefact_path = None;
    for (i, chunk) in bytes.chunks(128 * 1024).enumerate() {
        let at = i * 128 * 1024;
        let reply = patch(&gateway, &officer, &url, at, Body::from(chunk.to_vec()), &[]).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.headers["upload-offset"].to_str().unwrap(), (at + chunk.len()).to_string());
        match reply.headers.get("custodia-artefact") {
            Some(path) => artefact_path = Some(path.to_str().unwrap().to_owned()),
            None => {
                // Staged bytes are not evidence: nothing is stored or listed until the last byte is in.
                assert_eq!(offset(&gateway, &officer, &url).await, at + chunk.len());
                assert_eq!(stored_objects(&gateway), 0);
                let listed = gateway.get(&format!("/api/v1/cases/{CASE}/artefacts"), Some(As::Session(&clerk))).await;
                assert_eq!(listed.json(), serde_json::json!([]));
            }
        }
    }
    let resumable = artefact(&gateway, &clerk, &artefact_path.expect("the last PATCH names the artefact")).await;
    assert_eq!(resumable["sha256"], Sha256::of(&bytes).to_hex());
    assert_eq!((resumable["size"].as_u64(), resumable["media_type"].as_str()), (Some(300_000), Some("video/webm")));
    assert_eq!(resumable["manifest"]["original_name"], "statement.webm");
    // The upload is gone once its artefact is in custody.
    assert_eq!(tus(&gateway, "HEAD", &url, &officer, &[], Body::empty()).await.status, StatusCode::NOT_FOUND);
    assert!(!staging_file(&gateway, &url).exists());

    let reply = gateway.upload(CASE, "purpose=witness%20statement", As::Session(&officer), bytes.clone()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    let direct = artefact(&gateway, &clerk, reply.headers["location"].to_str().unwrap()).await;
    assert_eq!(direct["sha256"], resumable["sha256"]);
    let (direct_index, resumable_index) =
        (direct["ledger_index"].as_u64().unwrap(), resumable["ledger_index"].as_u64().unwrap());
    let direct_record = ledger_record(&gateway, direct_index).await;
    let resumable_record = ledger_record(&gateway, resumable_index).await;
    assert_eq!(gateway.opened(resumable_index, "purpose").await.as_deref(), Some("witness statement"));
    assert_eq!(gateway.opened(direct_index, "purpose").await.as_deref(), Some("witness statement"));
    for index in [resumable_index, direct_index] {
        assert_eq!(gateway.opened(index, "case").await.as_deref(), Some(CASE));
    }
    assert_eq!(resumable_record["event"]["type"], direct_record["event"]["type"], "{resumable_record}");
    assert_eq!(registration_without_ids(resumable_record), registration_without_ids(direct_record));
}

#[tokio::test]
async fn resumes_after_a_patch_cut_off_half_way() {
    let (gateway, officer, clerk) = gateway_with_officer().await;
    let bytes = statement(100_000);
    let url = create(&gateway, &officer, bytes.len(), &statement_metadata(&bytes)).await;

    // The link drops after 40,000 bytes of a PATCH: they are kept, and HEAD says so.
    let arrived = bytes[..40_000].to_vec();
    let cut = futures::stream::iter([Ok(arrived), Err(std::io::Error::other("connection reset"))]);
    let reply = patch(&gateway, &officer, &url, 0, Body::from_stream(cut), &[]).await;
    reply.assert_problem(400, "upload-interrupted", "resume from offset 40000");
    assert_eq!(offset(&gateway, &officer, &url).await, 40_000);

    // A PATCH that wrote more but died before making it durable leaves bytes past the offset: they are cut away.
    let staging = staging_file(&gateway, &url);
    std::fs::OpenOptions::new().append(true).open(&staging).unwrap().write_all(b"never acknowledged").unwrap();
    let reply = patch(&gateway, &officer, &url, 40_000, Body::from(bytes[40_000..].to_vec()), &[]).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&reply.body));
    let path = reply.headers["custodia-artefact"].to_str().unwrap();
    assert_eq!(artefact(&gateway, &clerk, path).await["sha256"], Sha256::of(&bytes).to_hex());
}

#[tokio::test]
async fn refuses_wrong_offsets_checksums_lengths_and_strangers() {
    let (gateway, officer, clerk) = gateway_with_officer().await;
    let bytes = statement(1000);
    let url = create(&gateway, &officer, bytes.len(), &statement_metadata(&bytes)).await;
    let first = Body::from(bytes[..500].to_vec());

    let reply = patch(&gateway, &officer, &url, 10, first, &[]).await;
    reply.assert_problem(409, "offset-mismatch", "the upload is at offset 0");

    let wrong = format!("sha256 {}", BASE64.encode(Sha256::of(b"something else").as_bytes()));
    let reply =
        patch(&gateway, &officer, &url, 0, Body::from(bytes[..500].to_vec()), &[("upload-checksum", &wrong)]).await;
    reply.assert_problem(460, "checksum-mismatch", "nothing of it was kept");
    assert_eq!(offset(&gateway, &officer, &url).await, 0);
    assert_eq!(std::fs::metadata(staging_file(&gateway, &url)).unwrap().len(), 0);

    let reply =
        patch(&gateway, &officer, &url, 0, Body::from(bytes[..500].to_vec()), &[("upload-checksum", "md5 AAAA")]).await;
    reply.assert_problem(400, "bad-input", "md5 is not supported");

    let sha1 = format!("sha1 {}", BASE64.encode(sha1::Sha1::digest(&bytes[..500])));
    let reply =
        patch(&gateway, &officer, &url, 0, Body::from(bytes[..500].to_vec()), &[("upload-checksum", &sha1)]).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&reply.body));

    // More than the declared length: refused, and nothing appended.
    let reply = patch(&gateway, &officer, &url, 500, Body::from(vec![0; 501]), &[]).await;
    reply.assert_problem(413, "too-large", "only 500 bytes");
    let streamed = futures::stream::iter([Ok::<_, std::io::Error>(vec![0; 400]), Ok(vec![0; 400])]);
    let reply = patch(&gateway, &officer, &url, 500, Body::from_stream(streamed), &[]).await;
    reply.assert_problem(413, "too-large", "only 500 bytes");
    assert_eq!(offset(&gateway, &officer, &url).await, 500);
    assert_eq!(std::fs::metadata(staging_file(&gateway, &url)).unwrap().len(), 500);

    let reply = tus(&gateway, "PATCH", &url, &officer, &[("upload-offset", "500")], Body::from(vec![1])).await;
    reply.assert_problem(415, "unsupported-media-type", "application/offset+octet-stream");
    let request = TestGateway::request("HEAD", &url, Some(As::Session(&officer))).body(Body::empty()).unwrap();
    let reply = gateway.send(request).await;
    assert_eq!((reply.status.as_u16(), reply.headers["tus-version"].to_str().unwrap()), (412, "1.0.0"));

    // While another request holds the upload, a PATCH is told to come back: tus clients retry on 423.
    let held = std::fs::File::open(staging_file(&gateway, &url)).unwrap();
    held.lock().unwrap();
    let reply = patch(&gateway, &officer, &url, 500, Body::from(bytes[500..].to_vec()), &[]).await;
    reply.assert_problem(423, "upload-locked", "try again");
    drop(held);

    // Someone else, even a member of the same case, cannot see, extend or end the upload.
    assert_eq!(tus(&gateway, "HEAD", &url, &clerk, &[], Body::empty()).await.status, StatusCode::NOT_FOUND);
    let reply = patch(&gateway, &clerk, &url, 500, Body::from(bytes[500..].to_vec()), &[]).await;
    reply.assert_problem(404, "not-found", "you have no upload");
    tus(&gateway, "DELETE", &url, &clerk, &[], Body::empty()).await.assert_problem(404, "not-found", "");
    assert_eq!(offset(&gateway, &officer, &url).await, 500);

    // Creation checks everything before a byte is staged.
    let reply = try_create(&gateway, &officer, "1099511627776", &statement_metadata(&bytes)).await;
    reply.assert_problem(413, "too-large", "at most");
    let reply = try_create(&gateway, &officer, "10", &metadata(&[("case", CASE)])).await;
    reply.assert_problem(400, "bad-input", "purpose is required");
    let reply = try_create(&gateway, &officer, "10", &metadata(&[("case", "case-other"), ("purpose", "p")])).await;
    reply.assert_problem(404, "not-found", "no case case-other");
    let (judge, judge_session) = gateway.person("judge", "FR").await;
    gateway.member(CASE, &judge, "judge").await;
    let reply = try_create(&gateway, &judge_session, "10", &metadata(&[("case", CASE), ("purpose", "p")])).await;
    reply.assert_problem(403, "role-forbidden", "upload");
    assert_eq!(std::fs::read_dir(gateway.dir.path().join("uploads")).unwrap().count(), 1);
}

#[tokio::test]
async fn a_digest_mismatch_at_completion_keeps_nothing() {
    let (gateway, officer, _) = gateway_with_officer().await;
    let bytes = statement(10_000);
    let url = create(&gateway, &officer, bytes.len(), &statement_metadata(b"what the client meant to send")).await;
    let reply = patch(&gateway, &officer, &url, 0, Body::from(bytes), &[]).await;
    reply.assert_problem(422, "digest-mismatch", "nothing was kept");
    assert_eq!(tus(&gateway, "HEAD", &url, &officer, &[], Body::empty()).await.status, StatusCode::NOT_FOUND);
    assert!(!staging_file(&gateway, &url).exists());
    assert_eq!(stored_objects(&gateway), 0);
}

#[tokio::test]
async fn uploads_end_on_termination_and_on_expiry() {
    let (gateway, officer, _) = gateway_with_officer().await;
    let bytes = statement(1000);
    let url = create(&gateway, &officer, bytes.len(), &statement_metadata(&bytes)).await;
    patch(&gateway, &officer, &url, 0, Body::from(bytes[..100].to_vec()), &[]).await;
    let reply = tus(&gateway, "DELETE", &url, &officer, &[], Body::empty()).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(tus(&gateway, "HEAD", &url, &officer, &[], Body::empty()).await.status, StatusCode::NOT_FOUND);
    assert!(!staging_file(&gateway, &url).exists());

    // Clients behind proxies that only pass POST say which method they mean.
    let url = create(&gateway, &officer, bytes.len(), &statement_metadata(&bytes)).await;
    let headers = [("x-http-method-override", "DELETE")];
    assert_eq!(tus(&gateway, "POST", &url, &officer, &headers, Body::empty()).await.status, StatusCode::NO_CONTENT);

    let url = create(&gateway, &officer, bytes.len(), &statement_metadata(&bytes)).await;
    let expiring = create(&gateway, &officer, bytes.len(), &statement_metadata(&bytes)).await;
    gateway.clock.advance(25 * 3600);
    let officer = gateway.sign_in("officer", "officer-correct-horse-battery").await;
    let reply = patch(&gateway, &officer, &url, 0, Body::from(bytes), &[]).await;
    reply.assert_problem(410, "upload-gone", "expired");
    assert!(!staging_file(&gateway, &url).exists());
    assert_eq!(tus(&gateway, "HEAD", &url, &officer, &[], Body::empty()).await.status, StatusCode::NOT_FOUND);

    // At start-up, expired uploads go, and so do staging files without an upload (a crash between the two).
    let uploads = gateway.dir.path().join("uploads");
    std::fs::write(uploads.join("upl-orphan"), b"left by a crash").unwrap();
    let swept = custodia_server::tus::sweep(&gateway.state.gateway, &uploads).await.unwrap();
    assert_eq!(swept, 2);
    assert!(!staging_file(&gateway, &expiring).exists());
    assert_eq!(std::fs::read_dir(&uploads).unwrap().count(), 0);
}

/// An upload whose last PATCH begins before it expires and ends after it: an expired upload's reservation no
/// longer counts against its account's quota, so its completion is refused as expired and its staged bytes are
/// removed; nothing of it is stored or recorded, uncharged or otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_expires_during_its_last_patch_is_refused_and_keeps_nothing() {
    use futures::SinkExt as _;
    let (gateway, officer, _) = gateway_with_officer().await;
    let bytes = statement(10_000);
    let url = create(&gateway, &officer, bytes.len(), &statement_metadata(&bytes)).await;
    let ledger = gateway.ledger_size();
    let (first, rest) = bytes.split_at(4_000);
    let (mut sender, receiver) = futures::channel::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
    let staged = staging_file(&gateway, &url);
    let (gateway_ref, staged_ref) = (&gateway, &staged);
    let drive = async move {
        sender.send(Ok(bytes::Bytes::copy_from_slice(first))).await.unwrap();
        // Once the first bytes are staged, the upload expires before the rest arrives.
        let mut waited = 0;
        while std::fs::metadata(staged_ref).map_or(0, |meta| meta.len()) < first.len() as u64 {
            assert!(waited < 6000, "the first bytes were never staged");
            waited += 1;
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        gateway_ref.clock.advance(25 * 3600);
        sender.send(Ok(bytes::Bytes::copy_from_slice(rest))).await.unwrap();
    };
    let (reply, ()) = tokio::join!(patch(&gateway, &officer, &url, 0, Body::from_stream(receiver), &[]), drive);
    reply.assert_problem(410, "upload-gone", "expired");
    assert!(!staged.exists(), "the staged bytes are removed");
    assert_eq!(stored_objects(&gateway), 0, "nothing was stored");
    assert_eq!(gateway.ledger_size(), ledger, "nothing was recorded");
    let officer = gateway.sign_in("officer", "officer-correct-horse-battery").await;
    assert_eq!(tus(&gateway, "HEAD", &url, &officer, &[], Body::empty()).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn one_account_cannot_reserve_the_disk_with_open_uploads() {
    // Uploads smaller than the account's storage quota, so that the reservation's own limit is what refuses.
    let (gateway, officer, clerk) = gateway_with_officer_on(|config| config.max_upload_bytes = 1 << 30).await;
    let max = gateway.state.gateway.max_upload_bytes;
    let open = custodia_server::tus::OPEN_UPLOADS_PER_ACCOUNT as usize;
    for n in 0..open {
        create(&gateway, &officer, 1000 + n, &statement_metadata(&statement(1000 + n))).await;
    }
    let reply = try_create(&gateway, &officer, "10", &statement_metadata(&statement(10))).await;
    reply.assert_problem(429, "too-many", "resumable uploads open");
    // Another account has its own allowance, up to one largest upload's bytes in all.
    let half = (max / 2).to_string();
    assert_eq!(try_create(&gateway, &clerk, &half, &statement_metadata(b"a")).await.status, StatusCode::CREATED);
    let reply = try_create(&gateway, &clerk, &half, &statement_metadata(b"b")).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    let reply = try_create(&gateway, &clerk, "2", &statement_metadata(b"c")).await;
    reply.assert_problem(413, "too-large", "declare at most");
}
