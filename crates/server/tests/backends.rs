//! The gateway on the backends it scales out on, started on loopback: a real S3 server (garage,
//! tests/src/garage.rs) instead of a local directory, with evidence, manifests and the custody log all in the
//! bucket, and PostgreSQL (tests/src/postgres.rs) instead of SQLite; on the same code paths. Each backend is also
//! stopped in the middle of use, as a crash would stop it.

mod support;

use custodia_core::Sha256;
use custodia_tests::garage::Garage;
use custodia_tests::postgres::TempPostgres;
use futures::TryStreamExt as _;
use object_store::ObjectStoreExt as _;
use object_store::path::Path;
use support::{As, TestGateway};

/// The gateway's settings for `garage`'s bucket.
fn on_garage(garage: &Garage, config: &mut custodia_server::config::ServeConfig) {
    config.s3.bucket = Some(garage.bucket.clone());
    config.s3.endpoint = Some(garage.endpoint.clone());
    config.s3.region = garage.region.clone();
    config.s3.access_key_id = Some(garage.key_id.clone());
    config.s3.secret_access_key = Some(garage.secret.clone());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_goes_into_the_bucket_and_comes_back_intact() {
    let garage = Garage::start();
    let gw = TestGateway::start_with(|config| on_garage(&garage, config)).await;
    let (prosecutor, session) = gw.person("prosecutor1", "IT").await;
    gw.case("case-s3").await;
    gw.member("case-s3", &prosecutor, "prosecutor").await;

    // Past one multipart part (8 MiB).
    let bytes: Vec<u8> = (0..9_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let digest = Sha256::of(&bytes);
    let query = format!("purpose=statement&sha256={}", digest.to_hex());
    let registered = gw.upload("case-s3", &query, As::Session(&session), bytes.clone()).await;
    assert_eq!(registered.status, 201, "{}", String::from_utf8_lossy(&registered.body));
    let artefact = registered.json()["artefact"].as_str().unwrap().to_owned();
    // The same bytes again: one object still.
    let again = gw.upload("case-s3", &query, As::Session(&session), bytes.clone()).await;
    assert_eq!(again.status, 201);

    let content = format!("/api/v1/artefacts/{artefact}/content?purpose=trial%20preparation");
    let whole = gw.get(&content, Some(As::Session(&session))).await;
    assert_eq!(whole.status, 200);
    assert!(whole.body == bytes, "the bytes downloaded differ from those uploaded");
    let detail = gw.get(&format!("/api/v1/artefacts/{artefact}?purpose=x"), Some(As::Session(&session))).await;
    assert_eq!(detail.status, 200);
    assert_eq!(detail.json()["manifest"]["sha256"], digest.to_hex());
    let timeline = gw.get(&format!("/api/v1/artefacts/{artefact}/timeline"), Some(As::Session(&session))).await;
    assert_eq!(timeline.status, 200);

    // All of it is in the bucket: one object for the bytes, the manifests, the log's checkpoint and tiles.
    let s3 = garage.object_store();
    let listed = |prefix: &'static str| {
        let s3 = s3.clone();
        async move {
            let all: Vec<object_store::ObjectMeta> = s3.list(Some(&Path::from(prefix))).try_collect().await.unwrap();
            all.into_iter().map(|meta| meta.location.to_string()).collect::<Vec<_>>()
        }
    };
    let objects = listed("artefacts/objects").await;
    assert_eq!(objects.iter().filter(|path| path.ends_with(&digest.to_hex())).count(), 1, "{objects:?}");
    assert!(listed("artefacts/staging").await.is_empty());
    assert!(s3.head(&Path::from("log/checkpoint")).await.is_ok());
    assert!(!listed("log/tile").await.is_empty());
    assert!(listed("probes").await.is_empty(), "the start-up probe left objects behind");
}

/// On a remote store, media is probed all the same: from an owner-only copy in the data directory, removed after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_in_the_bucket_is_probed_from_a_scratch_copy() {
    let garage = Garage::start();
    let gw = TestGateway::start_with(|config| on_garage(&garage, config)).await;
    let (clerk, session) = gw.person("clerk", "IT").await;
    gw.case("case-1").await;
    gw.member("case-1", &clerk, "clerk").await;
    let reply = gw.upload("case-1", "purpose=statement", As::Session(&session), support::webm_clip()).await;
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
    let artefact = reply.json()["artefact"].as_str().unwrap().to_owned();
    let detail = gw.get(&format!("/api/v1/artefacts/{artefact}?purpose=x"), Some(As::Session(&session))).await;
    let media = &detail.json()["manifest"]["media"];
    assert_eq!(media["outcome"], "probed", "{media}");
    assert_eq!(media["format"], "matroska,webm", "{media}");
    let scratch = gw.files_under("probing");
    assert!(scratch.is_empty(), "copies left behind: {scratch:?}");
}

/// Three gateways on one database and one bucket append to one custody log (`custodia_ledger::coordinated`): two
/// real processes take uploads and downloads at once, records about one artefact arriving through all of them, and
/// one of them is killed (-9) in the middle of that load. The survivors carry on; every upload any gateway
/// acknowledged downloads intact from the others, the artefact's records chain one to the next across gateways, and
/// the log read back from a survivor is one tree that `custodia log verify` accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_share_one_log_and_a_killed_one_loses_nothing_acknowledged() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let postgres = TempPostgres::start();
    let garage = Garage::start();
    let first = TestGateway::start_with(|config| {
        on_garage(&garage, config);
        config.database_url = Some(postgres.url.clone());
    })
    .await;
    let (prosecutor, session) = first.person("prosecutor1", "IT").await;
    first.case("case-s3").await;
    first.member("case-s3", &prosecutor, "prosecutor").await;
    let shared = first.upload("case-s3", "purpose=statement", As::Session(&session), vec![1; 5000]).await;
    assert_eq!(shared.status, 201, "{}", String::from_utf8_lossy(&shared.body));
    let shared = shared.json()["artefact"].as_str().unwrap().to_owned();

    // Two more gateways, each with a data directory of its own and the log's key.
    let key = std::fs::read(first.dir.path().join("keys/gateway.key")).unwrap();
    let mut env: Vec<(&str, std::ffi::OsString)> =
        garage.gateway_env().into_iter().map(|(name, value)| (name, value.into())).collect();
    env.push(("CUSTODIA_DATABASE_URL", postgres.url.clone().into()));
    // One account uploads from four clients at once here; the per-account budgets are not what is tested.
    env.push(("CUSTODIA_UPLOADS_PER_MINUTE", "1000".into()));
    env.push(("CUSTODIA_DIRECT_UPLOADS_PER_ACCOUNT", "8".into()));
    let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(name, value)| (*name, value.as_os_str())).collect();
    let mut gateways = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("keys")).unwrap();
        std::fs::write(dir.path().join("keys/gateway.key"), &key).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path().join("keys/gateway.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let (process, port) = support::spawn_gateway(dir.path(), &env);
        let client = support::Client { base: format!("http://127.0.0.1:{port}"), cookie: Some(session.clone()) };
        gateways.push((dir, process, client));
    }

    // Two clients on each: uploads (each acknowledged one remembered with its bytes) and downloads of the shared
    // artefact, whose records chain through every gateway.
    const ROUNDS: usize = 16;
    let acknowledged_by_victim = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for (gateway, (_, _, client)) in gateways.iter().enumerate() {
        for worker in 0..2 {
            let (client, shared, counted) = (client.clone(), shared.clone(), acknowledged_by_victim.clone());
            workers.push(tokio::task::spawn_blocking(move || {
                let mut acknowledged = Vec::new();
                for round in 0..ROUNDS {
                    let seed = (gateway * 1000 + worker * 100 + round) as u64;
                    let bytes = custodia_tests::pseudo_random_bytes(40_000, seed);
                    let uri = format!(
                        "/api/v1/cases/case-s3/artefacts?purpose=statement&sha256={}",
                        Sha256::of(&bytes).to_hex()
                    );
                    let (status, body) = client.send("POST", &uri, "application/octet-stream", &bytes);
                    if status == 201 {
                        let reply: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        acknowledged.push((reply["artefact"].as_str().unwrap().to_owned(), bytes));
                        if gateway == 1 {
                            counted.fetch_add(1, Ordering::SeqCst);
                        }
                    } else {
                        // Only the killed gateway may fail, and only from its death on.
                        assert!(gateway == 1 && status == 0, "{status}: {}", String::from_utf8_lossy(&body));
                        break;
                    }
                    let downloaded = client.download(&shared);
                    assert!(downloaded == 200 || (gateway == 1 && downloaded == 0), "download: {downloaded}");
                }
                acknowledged
            }));
        }
    }
    // The second process is killed once it has acknowledged a few uploads, in the middle of its clients' load.
    while acknowledged_by_victim.load(Ordering::SeqCst) < 6 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    gateways[1].1.stop();
    let mut acknowledged = Vec::new();
    for worker in workers {
        acknowledged.extend(worker.await.unwrap());
    }
    assert!(acknowledged.len() >= 2 * ROUNDS + 6, "{} uploads acknowledged", acknowledged.len());

    // Everything acknowledged, through either process, comes back intact from the survivors.
    let survivor = &gateways[0].2;
    for (artefact, bytes) in &acknowledged {
        let uri = format!("/api/v1/artefacts/{artefact}/content?purpose=x");
        let whole = first.get(&uri, Some(As::Session(&session))).await;
        assert_eq!(whole.status, 200, "{artefact}");
        assert!(whole.body == *bytes, "{artefact} changed");
        let (status, body) = survivor.send("GET", &uri, "text/plain", b"");
        assert!(status == 200 && body == *bytes, "{artefact} from the surviving process: {status}");
    }
    // The shared artefact's records, made by three gateways, chain one to the next.
    let uri = format!("/api/v1/artefacts/{shared}/timeline");
    let (status, timeline) = survivor.json("GET", &uri, serde_json::Value::Null);
    assert_eq!(status, 200, "{timeline}");
    let timeline = timeline["records"].as_array().unwrap();
    assert!(timeline.len() > 2 * ROUNDS, "{} records about the shared artefact", timeline.len());
    let mut before: Option<u64> = None;
    for entry in timeline {
        let index = entry["ledger_index"].as_u64().unwrap();
        assert_eq!(entry["record"]["prior"].as_u64(), before, "record {index} chains to the one before it");
        before = Some(index);
    }
    // One tree, read back from the survivor by the offline verifier.
    let verified = std::process::Command::new(env!("CARGO_BIN_EXE_custodia"))
        .args(["log", "verify", &format!("{}/log", survivor.base), "--key", &first.verifier().to_string()])
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&verified.stdout), String::from_utf8_lossy(&verified.stderr));
    assert!(verified.status.success(), "{said}");
}

/// garage killed in the middle of use: see [`outage`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_bucket_is_down_requests_fail_retryably_and_service_resumes_by_itself() {
    let garage = Garage::start();
    let gw = TestGateway::start_with(|config| on_garage(&garage, config)).await;
    outage(&gw, || garage.kill(), || garage.restart(), true).await;
}

/// PostgreSQL stopped in the middle of use (with garage for the objects: the scale-out configuration whole): see
/// [`outage`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_down_requests_fail_retryably_and_service_resumes_by_itself() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_ansi(false).try_init();
    let postgres = TempPostgres::start();
    let garage = Garage::start();
    let gw = TestGateway::start_with(|config| {
        on_garage(&garage, config);
        config.database_url = Some(postgres.url.clone());
    })
    .await;
    outage(&gw, || postgres.stop(), || postgres.restart(), false).await;
}

/// A backend goes down in the middle of use (`down`): while it is down, an upload and a download fail within
/// seconds with a retryable 503 (`Retry-After`); once it is back (`up`), the gateway resumes by itself, every upload
/// it acknowledged downloads intact, and the log verifies. With `exactly`, the refused upload is known to have left
/// nothing (it failed before any record: the bucket was down); otherwise it may have reached the log before the
/// database failed, and then it is listed, complete, once the gateway indexes it.
async fn outage(gw: &TestGateway, down: impl FnOnce(), up: impl FnOnce(), exactly: bool) {
    let (prosecutor, session) = gw.person("prosecutor1", "IT").await;
    gw.case("case-s3").await;
    gw.member("case-s3", &prosecutor, "prosecutor").await;
    let file = |seed: u32| -> Vec<u8> { (0..300_000u32).map(|i| (i.wrapping_mul(seed) >> 7) as u8).collect() };
    let upload = |bytes: Vec<u8>| {
        let query = format!("purpose=statement&sha256={}", Sha256::of(&bytes).to_hex());
        let session = session.clone();
        async move { gw.upload("case-s3", &query, As::Session(&session), bytes).await }
    };
    let before = upload(file(3)).await;
    assert_eq!(before.status, 201, "{}", String::from_utf8_lossy(&before.body));
    let kept = before.json()["artefact"].as_str().unwrap().to_owned();

    down();
    let started = std::time::Instant::now();
    let refused = upload(file(5)).await;
    refused.assert_problem(503, "unavailable", "try again");
    assert!(refused.headers.contains_key("retry-after"), "{:?}", refused.headers);
    let content = format!("/api/v1/artefacts/{kept}/content?purpose=trial%20preparation");
    let download = gw.get(&content, Some(As::Session(&session))).await;
    download.assert_problem(503, "unavailable", "try again");
    // Within the backends' retry budgets (10 s for S3, 5 s for a database connection), not their defaults of
    // minutes.
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "took {:?}", started.elapsed());

    up();
    let mut resumed = None;
    for _ in 0..60 {
        let reply = upload(file(7)).await;
        if reply.status == 201 {
            resumed = Some(reply);
            break;
        }
        assert_eq!(reply.status, 503, "{}", String::from_utf8_lossy(&reply.body));
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    let resumed = resumed.expect("the gateway resumed within a minute of the backend's return");
    let after = resumed.json()["artefact"].as_str().unwrap().to_owned();
    for (artefact, bytes) in [(&kept, file(3)), (&after, file(7))] {
        let uri = format!("/api/v1/artefacts/{artefact}/content?purpose=x");
        let whole = gw.get(&uri, Some(As::Session(&session))).await;
        assert_eq!(whole.status, 200);
        assert!(whole.body == bytes, "{artefact} changed");
    }
    let listed = gw.get("/api/v1/cases/case-s3/artefacts", Some(As::Session(&session))).await;
    assert_eq!(listed.status, 200);
    let listed = listed.json();
    let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&kept.as_str()) && ids.contains(&after.as_str()), "{listed}");
    if exactly {
        assert_eq!(ids.len(), 2, "the refused upload left something: {listed}");
    }
    // The log, read back by the offline verifier, is one consistent tree.
    let port = support::serve_on_loopback(gw).await;
    let verified = std::process::Command::new(env!("CARGO_BIN_EXE_custodia"))
        .args(["log", "verify", &format!("http://127.0.0.1:{port}/log"), "--key", &gw.verifier().to_string()])
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&verified.stdout), String::from_utf8_lossy(&verified.stderr));
    assert!(verified.status.success(), "{said}");
}
