//! Resumable uploads (tus 1.0.0), driven in-process: chunks, a PATCH cut off half-way, refusals, termination,
//! expiry, two PATCHes racing at one offset, the sweep of chunk objects no upload holds, and an artefact that ends up
//! exactly as a direct upload would have left it.

mod support;

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

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// Where the embedded local store keeps the chunks of resumable uploads.
fn chunk_dir(gateway: &TestGateway) -> std::path::PathBuf {
    gateway.dir.path().join("objects/staging/tus")
}

/// The chunk objects staged for the upload at `url` (recorded or not): each one's name and size, by name.
fn chunks_of(gateway: &TestGateway, url: &str) -> Vec<(String, u64)> {
    let prefix = format!("{}.", url.rsplit('/').next().unwrap());
    let mut chunks: Vec<(String, u64)> = std::fs::read_dir(chunk_dir(gateway))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.starts_with(&prefix).then(|| (name, entry.metadata().unwrap().len()))
        })
        .collect();
    chunks.sort();
    chunks
}

/// Every chunk object staged, of any upload.
fn staged_chunks(gateway: &TestGateway) -> usize {
    std::fs::read_dir(chunk_dir(gateway)).map_or(0, |entries| entries.count())
}

/// Files under the data directory's `objects/` but for staging: artefacts and their manifests.
fn stored_objects(gateway: &TestGateway) -> usize {
    fn count(dir: &std::path::Path) -> usize {
        let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
        entries.map(|entry| if entry.path().is_dir() { count(&entry.path()) } else { 1 }).sum()
    }
    let objects = gateway.dir.path().join("objects");
    let entries = std::fs::read_dir(&objects).into_iter().flatten().flatten();
    entries.filter(|entry| entry.file_name() != "staging").map(|entry| count(&entry.path())).sum()
}

/// A PATCH body that sends `before`, then, once the gateway asks for more (it has taken `before` in, past every
/// check before the body), says so on `reached` and waits for `go` before it sends `after`.
fn gated_body(
    before: Vec<u8>,
    after: Vec<u8>,
) -> (Body, tokio::sync::oneshot::Receiver<()>, tokio::sync::oneshot::Sender<()>) {
    let (reached, reached_here) = tokio::sync::oneshot::channel();
    let (go_there, go) = tokio::sync::oneshot::channel::<()>();
    let before = futures::stream::iter((!before.is_empty()).then(|| Ok(bytes::Bytes::from(before))));
    let after = futures::stream::once(async move {
        let _ = reached.send(());
        let _ = go.await;
        Ok::<_, std::io::Error>(bytes::Bytes::from(after))
    });
    (Body::from_stream(futures::StreamExt::chain(before, after)), reached_here, go_there)
}

async fn artefact(gateway: &TestGateway, auth: &str, path: &str) -> Value {
    let reply = gateway.get(&format!("{path}?purpose=check"), Some(As::Session(auth))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

async fn ledger_record(gateway: &TestGateway, index: u64) -> Value {
    let log = &gateway.state.gateway.log();
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
                // Each PATCH is one chunk object, of exactly its bytes.
                let sizes: Vec<u64> = chunks_of(&gateway, &url).into_iter().map(|(_, size)| size).collect();
                assert_eq!(sizes.len(), i + 1);
                assert_eq!(sizes.iter().sum::<u64>(), (at + chunk.len()) as u64);
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
    // The upload is gone once its artefact is in custody, and so are its chunks.
    assert_eq!(tus(&gateway, "HEAD", &url, &officer, &[], Body::empty()).await.status, StatusCode::NOT_FOUND);
    assert_eq!(staged_chunks(&gateway), 0);

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

    // The link drops after 40,000 bytes of a PATCH: they are kept, as one chunk, and HEAD says so.
    let arrived = bytes[..40_000].to_vec();
    let cut = futures::stream::iter([Ok(arrived), Err(std::io::Error::other("connection reset"))]);
    let reply = patch(&gateway, &officer, &url, 0, Body::from_stream(cut), &[]).await;
    reply.assert_problem(400, "upload-interrupted", "40000 bytes of it were kept; resume from offset 40000");
    assert_eq!(offset(&gateway, &officer, &url).await, 40_000);
    assert_eq!(chunks_of(&gateway, &url).iter().map(|(_, size)| *size).collect::<Vec<_>>(), [40_000]);

    // With a checksum, a body cut off cannot be checked, so nothing of it is kept: no chunk, the offset unmoved.
    let checksum = format!("sha256 {}", BASE64.encode(Sha256::of(&bytes[40_000..]).as_bytes()));
    let cut = futures::stream::iter([Ok(bytes[40_000..70_000].to_vec()), Err(std::io::Error::other("reset"))]);
    let reply =
        patch(&gateway, &officer, &url, 40_000, Body::from_stream(cut), &[("upload-checksum", &checksum)]).await;
    reply.assert_problem(400, "upload-interrupted", "0 bytes of it were kept; resume from offset 40000");
    assert_eq!(offset(&gateway, &officer, &url).await, 40_000);
    assert_eq!(chunks_of(&gateway, &url).len(), 1);

    // A request that wrote its chunk but died before recording it leaves an object at the offset that no upload
    // holds: it is never read, and the upload goes on from its recorded offset.
    let id = url.rsplit('/').next().unwrap();
    let unrecorded = format!("{id}.40000.chunk-never-recorded");
    let garbage = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"never acknowledged"))]);
    gateway.state.gateway.artefacts().write_chunk(&unrecorded, garbage).await.unwrap();
    let reply = patch(&gateway, &officer, &url, 40_000, Body::from(bytes[40_000..].to_vec()), &[]).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&reply.body));
    let path = reply.headers["custodia-artefact"].to_str().unwrap();
    assert_eq!(artefact(&gateway, &clerk, path).await["sha256"], Sha256::of(&bytes).to_hex());
    assert_eq!(chunks_of(&gateway, &url), [(unrecorded, 18)], "only the object no upload held is left, for the sweep");
}

/// Two PATCHes at one offset, both past every check before their bodies come (so that the catalog's
/// compare-and-set alone decides): one records its chunk (204), the other is told the offset moved (409) and its
/// object is deleted unread; the upload's bytes are the winner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_patches_racing_at_one_offset_one_records_its_chunk() {
    let (gateway, officer, clerk) = gateway_with_officer().await;
    let (first, rest) = (statement(300_000), statement(50_000));
    let other: Vec<u8> = first.iter().map(|byte| byte ^ 0x5a).collect();
    let metadata = metadata(&[("case", CASE), ("purpose", "witness statement")]);
    let url = create(&gateway, &officer, first.len() + rest.len(), &metadata).await;

    let (body_a, reached_a, go_a) = gated_body(Vec::new(), first.clone());
    let (body_b, reached_b, go_b) = gated_body(Vec::new(), other.clone());
    let both = async {
        tokio::join!(patch(&gateway, &officer, &url, 0, body_a, &[]), patch(&gateway, &officer, &url, 0, body_b, &[]))
    };
    let gate = async {
        reached_a.await.unwrap();
        reached_b.await.unwrap();
        go_a.send(()).unwrap();
        go_b.send(()).unwrap();
    };
    let ((a, b), ()) = tokio::join!(both, gate);
    let statuses = [a.status.as_u16(), b.status.as_u16()];
    assert!(statuses == [204, 409] || statuses == [409, 204], "{statuses:?}: {} / {}", text(&a), text(&b));
    let (winner, loser, won) = if a.status == StatusCode::NO_CONTENT { (a, b, &first) } else { (b, a, &other) };
    assert_eq!(winner.headers["upload-offset"], "300000");
    loser.assert_problem(409, "offset-mismatch", "the upload is at offset 300000, not 0");
    assert_eq!(offset(&gateway, &officer, &url).await, 300_000);
    assert_eq!(chunks_of(&gateway, &url).iter().map(|(_, size)| *size).collect::<Vec<_>>(), [300_000]);

    let reply = patch(&gateway, &officer, &url, 300_000, Body::from(rest.clone()), &[]).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&reply.body));
    let path = reply.headers["custodia-artefact"].to_str().unwrap().to_owned();
    let expected = [won.as_slice(), &rest].concat();
    assert_eq!(artefact(&gateway, &clerk, &path).await["sha256"], Sha256::of(&expected).to_hex());
    let content = gateway.get(&format!("{path}/content?purpose=check"), Some(As::Session(&clerk))).await;
    assert!(content.body == expected, "the artefact's bytes are not the winner's chunk and the rest");
    assert_eq!(staged_chunks(&gateway), 0);
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
    assert_eq!(chunks_of(&gateway, &url), [], "the checksum is checked before the chunk is an object");

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
    assert_eq!(chunks_of(&gateway, &url).iter().map(|(_, size)| *size).collect::<Vec<_>>(), [500]);

    let reply = tus(&gateway, "PATCH", &url, &officer, &[("upload-offset", "500")], Body::from(vec![1])).await;
    reply.assert_problem(415, "unsupported-media-type", "application/offset+octet-stream");
    let request = TestGateway::request("HEAD", &url, Some(As::Session(&officer))).body(Body::empty()).unwrap();
    let reply = gateway.send(request).await;
    assert_eq!((reply.status.as_u16(), reply.headers["tus-version"].to_str().unwrap()), (412, "1.0.0"));

    // While another request (on any gateway) takes the upload into custody, a PATCH or a DELETE is told to come
    // back: tus clients retry on 423.
    let (catalog, now) = (&gateway.state.gateway.catalog(), gateway.clock.unix_seconds());
    let id = url.rsplit('/').next().unwrap();
    assert!(catalog.claim_upload_completion(id, 500, "the-last-chunk", now, now + 3600).await.unwrap());
    let reply = patch(&gateway, &officer, &url, 500, Body::from(bytes[500..].to_vec()), &[]).await;
    reply.assert_problem(423, "upload-locked", "try again");
    tus(&gateway, "DELETE", &url, &officer, &[], Body::empty()).await.assert_problem(423, "upload-locked", "");
    assert!(catalog.release_upload_claim(id, "the-last-chunk", i64::MAX).await.unwrap());

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
    assert_eq!(staged_chunks(&gateway), 1);
}

#[tokio::test]
async fn a_digest_mismatch_at_completion_keeps_nothing() {
    let (gateway, officer, _) = gateway_with_officer().await;
    let bytes = statement(10_000);
    let url = create(&gateway, &officer, bytes.len(), &statement_metadata(b"what the client meant to send")).await;
    let reply = patch(&gateway, &officer, &url, 0, Body::from(bytes), &[]).await;
    reply.assert_problem(422, "digest-mismatch", "nothing was kept");
    assert_eq!(tus(&gateway, "HEAD", &url, &officer, &[], Body::empty()).await.status, StatusCode::NOT_FOUND);
    assert_eq!(staged_chunks(&gateway), 0);
    assert_eq!(stored_objects(&gateway), 0);
}

#[tokio::test]
async fn uploads_end_on_termination_and_on_expiry() {
    let (gateway, officer, _) = gateway_with_officer().await;
    let bytes = statement(1000);
    let url = create(&gateway, &officer, bytes.len(), &statement_metadata(&bytes)).await;
    patch(&gateway, &officer, &url, 0, Body::from(bytes[..100].to_vec()), &[]).await;
    assert_eq!(chunks_of(&gateway, &url).len(), 1);
    let reply = tus(&gateway, "DELETE", &url, &officer, &[], Body::empty()).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(tus(&gateway, "HEAD", &url, &officer, &[], Body::empty()).await.status, StatusCode::NOT_FOUND);
    assert_eq!(chunks_of(&gateway, &url), []);

    // Clients behind proxies that only pass POST say which method they mean.
    let url = create(&gateway, &officer, bytes.len(), &statement_metadata(&bytes)).await;
    let headers = [("x-http-method-override", "DELETE")];
    assert_eq!(tus(&gateway, "POST", &url, &officer, &headers, Body::empty()).await.status, StatusCode::NO_CONTENT);

    let url = create(&gateway, &officer, bytes.len(), &statement_metadata(&bytes)).await;
    patch(&gateway, &officer, &url, 0, Body::from(bytes[..100].to_vec()), &[]).await;
    let expiring = create(&gateway, &officer, bytes.len(), &statement_metadata(&bytes)).await;
    patch(&gateway, &officer, &expiring, 0, Body::from(bytes[..100].to_vec()), &[]).await;
    assert_eq!(staged_chunks(&gateway), 2);
    gateway.clock.advance(25 * 3600);
    let officer = gateway.sign_in("officer", "officer-correct-horse-battery").await;
    let reply = patch(&gateway, &officer, &url, 100, Body::from(bytes[100..].to_vec()), &[]).await;
    reply.assert_problem(410, "upload-gone", "expired");
    assert_eq!(chunks_of(&gateway, &url), []);
    assert_eq!(tus(&gateway, "HEAD", &url, &officer, &[], Body::empty()).await.status, StatusCode::NOT_FOUND);

    // At start-up, expired uploads go with their chunks, and so do chunk objects that no upload holds (a crash
    // between an object and its record) once they are older than any upload could be.
    let orphan = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"left by a crash"))]);
    gateway.state.gateway.artefacts().write_chunk("upl-gone.0.chunk-orphan", orphan).await.unwrap();
    gateway.clock.advance(custodia_service::uploads::ORPHANED_CHUNK_SECONDS);
    let swept = custodia_service::uploads::sweep(&gateway.state.gateway).await.unwrap();
    assert_eq!(swept, 2, "the expired upload and the orphan");
    assert_eq!(chunks_of(&gateway, &expiring), []);
    assert_eq!(staged_chunks(&gateway), 0);
}

/// The start-up sweep in a store that other gateways share: a chunk no upload holds is removed only once it is
/// older than any upload could be, since a younger one may be another gateway's request between its object and its
/// record; the chunks of a live upload stay however old they are; and the sweep of direct uploads' staging leaves
/// chunks alone.
#[tokio::test]
async fn the_sweep_leaves_chunks_in_flight_and_of_live_uploads_alone() {
    let (gateway, officer, clerk) = gateway_with_officer().await;
    let bytes = statement(20_000);
    let url = create(&gateway, &officer, bytes.len(), &statement_metadata(&bytes)).await;
    let id = url.rsplit('/').next().unwrap().to_owned();
    let reply = patch(&gateway, &officer, &url, 0, Body::from(bytes[..8_000].to_vec()), &[]).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&reply.body));
    let store = &gateway.state.gateway.artefacts();
    let write = |name: String| async move {
        let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(vec![9u8; 1000]))]);
        store.write_chunk(&name, body).await.unwrap();
        name
    };
    // Another gateway's request at offset 8,000, its object written and its record not yet: fresh.
    let in_flight = write(format!("{id}.8000.chunk-in-flight")).await;
    // A request that died between the two, three days ago.
    let orphan = write(format!("{id}.8000.chunk-orphan")).await;
    let three_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 24 * 3600);
    let age = |name: &str| {
        let file = std::fs::File::options().write(true).open(chunk_dir(&gateway).join(name)).unwrap();
        file.set_modified(three_days_ago).unwrap();
    };
    age(&orphan);
    // The upload's own chunk, as old: it is recorded, so it stays.
    let (recorded, _) = chunks_of(&gateway, &url).into_iter().find(|(name, _)| name.contains(".0.")).unwrap();
    age(&recorded);
    // A direct upload's staging object left by a crash three days ago, and one under way.
    let staging = gateway.dir.path().join("objects/staging");
    std::fs::write(staging.join("old-direct-upload"), b"left by a crash").unwrap();
    std::fs::File::options()
        .write(true)
        .open(staging.join("old-direct-upload"))
        .unwrap()
        .set_modified(three_days_ago)
        .unwrap();
    std::fs::write(staging.join("direct-upload-under-way"), b"arriving").unwrap();

    let a_day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(24 * 3600);
    assert_eq!(store.sweep_staging(a_day_ago).await.unwrap(), 1, "the old direct upload's staging only");
    assert!(!staging.join("old-direct-upload").exists());
    assert!(staging.join("direct-upload-under-way").exists());
    assert_eq!(chunks_of(&gateway, &url).len(), 3, "chunks are left to the sweep of resumable uploads");

    assert_eq!(custodia_service::uploads::sweep(&gateway.state.gateway).await.unwrap(), 1, "the orphan only");
    let left: Vec<String> = chunks_of(&gateway, &url).into_iter().map(|(name, _)| name).collect();
    assert_eq!(left, [recorded, in_flight.clone()]);

    // The upload goes on and completes with its own bytes; the object in flight was never part of it.
    let reply = patch(&gateway, &officer, &url, 8_000, Body::from(bytes[8_000..].to_vec()), &[]).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&reply.body));
    let path = reply.headers["custodia-artefact"].to_str().unwrap();
    assert_eq!(artefact(&gateway, &clerk, path).await["sha256"], Sha256::of(&bytes).to_hex());
    let left: Vec<String> = chunks_of(&gateway, &url).into_iter().map(|(name, _)| name).collect();
    assert_eq!(left, [in_flight]);
}

/// An upload whose last PATCH begins before it expires and ends after it: an expired upload's reservation no
/// longer counts against its account's quota, so its completion is refused as expired and its staged bytes are
/// removed; nothing of it is stored or recorded, uncharged or otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_expires_during_its_last_patch_is_refused_and_keeps_nothing() {
    let (gateway, officer, _) = gateway_with_officer().await;
    let bytes = statement(10_000);
    let url = create(&gateway, &officer, bytes.len(), &statement_metadata(&bytes)).await;
    let ledger = gateway.ledger_size();
    let (first, rest) = bytes.split_at(4_000);
    let (body, reached, go) = gated_body(first.to_vec(), rest.to_vec());
    let drive = async {
        // Once the first bytes are taken in, the upload expires before the rest arrives.
        reached.await.unwrap();
        gateway.clock.advance(25 * 3600);
        go.send(()).unwrap();
    };
    let (reply, ()) = tokio::join!(patch(&gateway, &officer, &url, 0, body, &[]), drive);
    reply.assert_problem(410, "upload-gone", "expired");
    assert_eq!(staged_chunks(&gateway), 0, "the staged bytes are removed");
    assert_eq!(stored_objects(&gateway), 0, "nothing was stored");
    assert_eq!(gateway.ledger_size(), ledger, "nothing was recorded");
    let officer = gateway.sign_in("officer", "officer-correct-horse-battery").await;
    assert_eq!(tus(&gateway, "HEAD", &url, &officer, &[], Body::empty()).await.status, StatusCode::NOT_FOUND);
}

/// A gateway that died while taking an upload into custody leaves its claim, no longer renewed: the next request
/// releases it (and deletes the last chunk it had written), and the upload completes from its recorded offset.
#[tokio::test]
async fn a_completion_claim_its_gateway_stopped_renewing_is_released_by_the_next_request() {
    let (gateway, officer, clerk) = gateway_with_officer().await;
    let bytes = statement(30_000);
    let url = create(&gateway, &officer, bytes.len(), &statement_metadata(&bytes)).await;
    let id = url.rsplit('/').next().unwrap();
    let reply = patch(&gateway, &officer, &url, 0, Body::from(bytes[..10_000].to_vec()), &[]).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&reply.body));
    // The dead gateway's last chunk, and its claim, last renewed two minutes ago.
    let dead = format!("{id}.10000.chunk-of-a-dead-gateway");
    let last = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(bytes[10_000..].to_vec()))]);
    gateway.state.gateway.artefacts().write_chunk(&dead, last).await.unwrap();
    let (catalog, now) = (&gateway.state.gateway.catalog(), gateway.clock.unix_seconds());
    assert!(catalog.claim_upload_completion(id, 10_000, &dead, now - 120, now + 3600).await.unwrap());
    assert_eq!(chunks_of(&gateway, &url).len(), 2);
    assert_eq!(offset(&gateway, &officer, &url).await, 10_000, "HEAD never calls a claimed upload done");

    let reply = patch(&gateway, &officer, &url, 10_000, Body::from(bytes[10_000..].to_vec()), &[]).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&reply.body));
    let path = reply.headers["custodia-artefact"].to_str().unwrap();
    assert_eq!(artefact(&gateway, &clerk, path).await["sha256"], Sha256::of(&bytes).to_hex());
    assert_eq!(staged_chunks(&gateway), 0, "the dead gateway's last chunk went with its claim");
}

#[tokio::test]
async fn one_account_cannot_reserve_the_disk_with_open_uploads() {
    // Uploads smaller than the account's storage quota, so that the reservation's own limit is what refuses.
    let (gateway, officer, clerk) = gateway_with_officer_on(|config| config.max_upload_bytes = 1 << 30).await;
    let max = gateway.state.gateway.max_upload_bytes();
    let open = custodia_service::uploads::OPEN_UPLOADS_PER_ACCOUNT as usize;
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
