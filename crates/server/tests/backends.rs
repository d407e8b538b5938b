//! The gateway on the backends it scales out on, started on loopback: a real S3 server (garage,
//! tests/src/garage.rs) instead of a local directory, with evidence, manifests and the custody log all in the
//! bucket, and PostgreSQL (tests/src/postgres.rs) instead of SQLite; on the same code paths. Each backend is also
//! stopped in the middle of use, as a crash would stop it.
//!
//! S3 Object Lock, which garage does not have, on moto's standalone server (tests/src/moto.rs): retention set on
//! each evidence object, refused deletions, a failure to set retention, and a gateway that refuses to start when
//! retention asked of it cannot be had.

mod support;

use axum::body::Body;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use custodia_core::Sha256;
use custodia_tests::garage::Garage;
use custodia_tests::moto::{BucketLock, Moto};
use custodia_tests::postgres::TempPostgres;
use futures::TryStreamExt as _;
use object_store::ObjectStoreExt as _;
use object_store::path::Path;
use support::{As, Reply, TestGateway, on_garage};

/// A gateway in-process on `garage`'s bucket and `postgres`'s database: the scale-out configuration whole.
async fn on_garage_and_postgres(garage: &Garage, postgres: &TempPostgres) -> TestGateway {
    TestGateway::start_with(|config| {
        on_garage(garage, config);
        config.database_url = Some(postgres.url.clone());
    })
    .await
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

/// On a remote store, media is probed all the same, through the probe child's pipes: from the beginning and end the
/// gateway kept as the upload streamed into the bucket, and the rest read in ranges from the bucket. It is described
/// as the same bytes in a file are, and never copied to the data directory (where copies an earlier version left are
/// removed at start-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_in_the_bucket_is_probed_in_ranges_without_a_copy() {
    let garage = Garage::start();
    let gw = TestGateway::start_with(|config| {
        on_garage(&garage, config);
        // A whole copy an earlier version kept to probe from, left by a crash: evidence in the clear, removed.
        let old_copies = config.gateway.data_dir.join("probing");
        std::fs::create_dir_all(&old_copies).unwrap();
        std::fs::write(old_copies.join("tmp.witness-statement"), b"a statement").unwrap();
    })
    .await;
    assert!(!gw.dir.path().join("probing").exists(), "the copies an earlier version left are still there");
    let (clerk, session) = gw.person("clerk", "IT").await;
    gw.case("case-1").await;
    gw.member("case-1", &clerk, "clerk").await;
    let clip = support::webm_clip();
    let reply = gw.upload("case-1", "purpose=statement", As::Session(&session), clip.clone()).await;
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
    let artefact = reply.json()["artefact"].as_str().unwrap().to_owned();
    let detail = gw.get(&format!("/api/v1/artefacts/{artefact}?purpose=x"), Some(As::Session(&session))).await;
    let media = &detail.json()["manifest"]["media"];
    assert_eq!(media["outcome"], "probed", "{media}");
    let file = gw.dir.path().join("clip.webm");
    std::fs::write(&file, &clip).unwrap();
    let from_file = serde_json::to_value(custodia_media::probe(&file)).unwrap();
    assert_eq!(*media, from_file);
    assert!(!gw.dir.path().join("probing").exists(), "a directory for copies was made");
}

/// Three gateways on one database and one bucket append to one custody log (`custodia_ledger::coordinated`): two
/// real processes take uploads and downloads at once, records about one artefact arriving through all of them, and
/// the process found integrating (holding the log's integration lock, as PostgreSQL shows) is killed (-9) in the
/// middle of that load. Another carries on within seconds; every upload any gateway acknowledged downloads intact
/// from the others, the artefact's records chain one to the next across gateways, and the log read back from a
/// survivor is one tree that `custodia log verify` accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_share_one_log_and_a_killed_integrator_loses_nothing_acknowledged() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let postgres = TempPostgres::start();
    let garage = Garage::start();
    // One account uploads and downloads from four clients at once here, and the first gateway reads every upload
    // back: the per-account budgets are not what is tested.
    let first = TestGateway::start_with(|config| {
        on_garage(&garage, config);
        config.database_url = Some(postgres.url.clone());
        config.quotas.custody_records_per_minute = 10_000;
    })
    .await;
    let (prosecutor, session) = first.person("prosecutor1", "IT").await;
    first.case("case-s3").await;
    first.member("case-s3", &prosecutor, "prosecutor").await;
    let shared = first.upload("case-s3", "purpose=statement", As::Session(&session), vec![1; 5000]).await;
    assert_eq!(shared.status, 201, "{}", String::from_utf8_lossy(&shared.body));
    let shared = shared.json()["artefact"].as_str().unwrap().to_owned();

    // Two more gateways, each with a data directory of its own and the log's key, and its connections named, so
    // that PostgreSQL says which one holds the integration lock.
    let key = std::fs::read(first.dir.path().join("keys/gateway.key")).unwrap();
    let mut gateways = Vec::new();
    for n in 0..2 {
        let mut env: Vec<(&str, std::ffi::OsString)> =
            garage.gateway_env().into_iter().map(|(name, value)| (name, value.into())).collect();
        env.push(("CUSTODIA_DATABASE_URL", format!("{}?application_name=gateway-{n}", postgres.url).into()));
        env.push(("CUSTODIA_UPLOADS_PER_MINUTE", "10000".into()));
        env.push(("CUSTODIA_DIRECT_UPLOADS_PER_ACCOUNT", "8".into()));
        env.push(("CUSTODIA_CUSTODY_RECORDS_PER_MINUTE", "10000".into()));
        let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(name, value)| (*name, value.as_os_str())).collect();
        let dir = support::data_dir_with_key(&key);
        let (process, port) = support::spawn_gateway(dir.path(), &env);
        let client = support::Client { base: format!("http://127.0.0.1:{port}"), cookie: Some(session.clone()) };
        gateways.push((dir, process, client));
    }

    // Two clients on each, until told to stop: uploads (each acknowledged one remembered with its bytes) and
    // downloads of the shared artefact, whose records chain through every gateway.
    struct Load {
        victim: AtomicUsize,
        stop: AtomicBool,
        acknowledged: [AtomicUsize; 2],
        /// Downloads of the shared artefact asked for, and those answered 200: each answered one has its record.
        downloads_asked: AtomicUsize,
        downloads_answered: AtomicUsize,
    }
    let load = Arc::new(Load {
        victim: AtomicUsize::new(usize::MAX),
        stop: AtomicBool::new(false),
        acknowledged: Default::default(),
        downloads_asked: AtomicUsize::new(0),
        downloads_answered: AtomicUsize::new(0),
    });
    let mut workers = Vec::new();
    for (gateway, (_, _, client)) in gateways.iter().enumerate() {
        for worker in 0..2 {
            let (client, shared, load) = (client.clone(), shared.clone(), load.clone());
            workers.push(tokio::task::spawn_blocking(move || {
                let mut acknowledged = Vec::new();
                let mut round = 0;
                while !load.stop.load(Ordering::SeqCst) {
                    let seed = (gateway * 100_000 + worker * 10_000 + round) as u64;
                    round += 1;
                    let bytes = custodia_tests::pseudo_random_bytes(40_000, seed);
                    let uri = format!(
                        "/api/v1/cases/case-s3/artefacts?purpose=statement&sha256={}",
                        Sha256::of(&bytes).to_hex()
                    );
                    let (status, body) = client.send("POST", &uri, "application/octet-stream", &bytes);
                    let victim = gateway == load.victim.load(Ordering::SeqCst);
                    if status == 201 {
                        let reply: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        acknowledged.push((reply["artefact"].as_str().unwrap().to_owned(), bytes));
                        load.acknowledged[gateway].fetch_add(1, Ordering::SeqCst);
                    } else {
                        // Only the killed gateway may fail, and only from its death on.
                        assert!(victim && status == 0, "{status}: {}", String::from_utf8_lossy(&body));
                        break;
                    }
                    load.downloads_asked.fetch_add(1, Ordering::SeqCst);
                    let downloaded = client.download(&shared);
                    if downloaded == 200 {
                        load.downloads_answered.fetch_add(1, Ordering::SeqCst);
                    }
                    let victim = gateway == load.victim.load(Ordering::SeqCst);
                    assert!(downloaded == 200 || (victim && downloaded == 0), "download from {gateway}: {downloaded}");
                }
                acknowledged
            }));
        }
    }
    let waited = |what: &str, started: std::time::Instant, within: u64| {
        assert!(started.elapsed() < std::time::Duration::from_secs(within), "{what} took over {within} s");
    };
    let started = std::time::Instant::now();
    while load.acknowledged.iter().any(|count| count.load(Ordering::SeqCst) < 3) {
        waited("three uploads acknowledged by each process", started, 180);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The process PostgreSQL shows in the middle of an integration turn (its lock taken, its tiles being written) is
    // killed. The role moves between gateways (each takes a whole turn every few seconds), so one comes.
    let observer = sqlx::PgPool::connect(&postgres.url).await.unwrap();
    let started = std::time::Instant::now();
    let victim = loop {
        waited("a process seen integrating", started, 120);
        let integrating: Option<String> = sqlx::query_scalar(
            "SELECT application_name FROM pg_stat_activity WHERE state = 'idle in transaction' \
             AND query LIKE '%FOR UPDATE OF i%' AND application_name LIKE 'gateway-%' LIMIT 1",
        )
        .fetch_optional(&observer)
        .await
        .unwrap();
        if let Some(name) = integrating {
            break name.trim_start_matches("gateway-").parse::<usize>().unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    };
    load.victim.store(victim, Ordering::SeqCst);
    gateways[victim].1.stop();
    let killed = std::time::Instant::now();
    // The survivors carry on: another gateway takes the lock and publishes what the killed one left mid-turn.
    let survivor = 1 - victim;
    let before = load.acknowledged[survivor].load(Ordering::SeqCst);
    while load.acknowledged[survivor].load(Ordering::SeqCst) < before + 6 {
        waited("six uploads acknowledged by the surviving process after the kill", killed, 60);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    load.stop.store(true, Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    for worker in workers {
        acknowledged.extend(worker.await.unwrap());
    }

    // Everything acknowledged, through either process, comes back intact from the survivors.
    let survivor = &gateways[survivor].2;
    for (artefact, bytes) in &acknowledged {
        let uri = format!("/api/v1/artefacts/{artefact}/content?purpose=x");
        let whole = first.get(&uri, Some(As::Session(&session))).await;
        assert_eq!(whole.status, 200, "{artefact}");
        assert!(whole.body == *bytes, "{artefact} changed");
        let (status, body) = survivor.send("GET", &uri, "text/plain", b"");
        assert!(status == 200 && body == *bytes, "{artefact} from the surviving process: {status}");
    }
    // The shared artefact's records, made by three gateways, chain one to the next: its upload's, one for each
    // download answered (the killed process may have recorded one more it never answered, none it was not asked).
    let uri = format!("/api/v1/artefacts/{shared}/timeline");
    let (status, timeline) = survivor.json("GET", &uri, serde_json::Value::Null);
    assert_eq!(status, 200, "{timeline}");
    let timeline = timeline["records"].as_array().unwrap();
    let (answered, asked) =
        (load.downloads_answered.load(Ordering::SeqCst), load.downloads_asked.load(Ordering::SeqCst));
    assert!(answered >= 9, "{answered} downloads answered");
    assert!(
        (1 + answered..=1 + asked).contains(&timeline.len()),
        "{} records about the shared artefact, for {answered} downloads answered of {asked} asked",
        timeline.len()
    );
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
    let gw = TestGateway::start_with(|config| {
        on_garage(&garage, config);
        under_load(config);
    })
    .await;
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
        under_load(config);
    })
    .await;
    outage(&gw, || postgres.stop(), || postgres.restart(), false).await;
}

/// Budgets wide enough for [`outage`]'s load: one account uploads from three clients at once, as fast as it is
/// answered, and reads everything back; the per-account budgets are not what is tested.
fn under_load(config: &mut custodia_server::config::ServeConfig) {
    config.quotas.direct_uploads_per_account = 8;
    config.quotas.uploads_per_minute = 10_000;
    config.quotas.custody_records_per_minute = 10_000;
}

/// A backend goes down in the middle of a load run (`down`): clients keep uploading throughout, each upload
/// answered 201 or a retryable 503 and nothing else. While the backend is down, an upload and a download fail within
/// seconds with a retryable 503 (`Retry-After`); once it is back (`up`), the gateway resumes by itself, every upload
/// it acknowledged, before, during or after, downloads intact, and the log verifies. With `exactly`, the refused
/// uploads are known to have left nothing (they failed before any record: the bucket was down); otherwise one may
/// have reached the log before the database failed, and then it is listed, complete, once the gateway indexes it.
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
    // A resumable upload, half sent.
    let resumable = file(11);
    let metadata = format!("case {},purpose {}", BASE64.encode("case-s3"), BASE64.encode("statement"));
    let length = resumable.len().to_string();
    let headers = [("upload-length", length.as_str()), ("upload-metadata", metadata.as_str())];
    let created = tus(gw, "POST", "/api/v1/uploads", &session, &headers, Body::empty()).await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let url = created.headers["location"].to_str().unwrap().to_owned();
    assert_eq!(tus_patch(gw, &url, &session, 0, Body::from(resumable[..100_000].to_vec())).await.status, 204);

    // The load: clients uploading one file after another until the gateway has resumed, each acknowledged upload
    // remembered with its bytes; a refused one is tried again as a client would, after a moment.
    let resumed_flag = std::sync::atomic::AtomicBool::new(false);
    let client = |first_seed: u32| {
        let (upload, resumed_flag) = (&upload, &resumed_flag);
        async move {
            let (mut acknowledged, mut refused) = (Vec::new(), 0);
            let mut seed = first_seed;
            while !resumed_flag.load(std::sync::atomic::Ordering::SeqCst) {
                let bytes = file(seed);
                let reply = upload(bytes.clone()).await;
                match reply.status.as_u16() {
                    201 => {
                        acknowledged.push((reply.json()["artefact"].as_str().unwrap().to_owned(), bytes));
                        seed += 2;
                    }
                    503 => {
                        assert!(reply.headers.contains_key("retry-after"), "{:?}", reply.headers);
                        refused += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                    other => {
                        panic!("an upload under load was answered {other}: {}", String::from_utf8_lossy(&reply.body))
                    }
                }
            }
            (acknowledged, refused)
        }
    };
    let load = futures::future::join(client(1001), client(2001));
    let run = async {
        // The load runs a little before the backend goes.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let resumed = down_and_up(gw, &session, &upload, &file, &url, &resumable, &kept, down, up).await;
        resumed_flag.store(true, std::sync::atomic::Ordering::SeqCst);
        resumed
    };
    let (((mut under_load, refused_a), (more, refused_b)), after) = futures::future::join(load, run).await;
    under_load.extend(more);
    assert!(refused_a + refused_b > 0, "the load met the outage");
    assert!(!under_load.is_empty(), "the load had uploads acknowledged");
    for (artefact, bytes) in [(kept.clone(), file(3)), (after.clone(), file(7))].iter().chain(&under_load) {
        let uri = format!("/api/v1/artefacts/{artefact}/content?purpose=x");
        let whole = gw.get(&uri, Some(As::Session(&session))).await;
        assert_eq!(whole.status, 200);
        assert!(whole.body == *bytes, "{artefact} changed");
    }
    let listed = gw.get("/api/v1/cases/case-s3/artefacts", Some(As::Session(&session))).await;
    assert_eq!(listed.status, 200);
    let listed = listed.json();
    let ids: std::collections::BTreeSet<&str> =
        listed.as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    let expected: std::collections::BTreeSet<&str> = [kept.as_str(), after.as_str()]
        .into_iter()
        .chain(under_load.iter().map(|(artefact, _)| artefact.as_str()))
        .collect();
    assert!(ids.is_superset(&expected), "an acknowledged upload is not listed: {listed}");
    if exactly {
        assert_eq!(ids, expected, "a refused upload left something: {listed}");
    }
    // The resumable upload resumes where it stood, and completes intact.
    assert_eq!(tus_offset(gw, &url, &session).await, 100_000);
    let last = tus_patch(gw, &url, &session, 100_000, Body::from(resumable[100_000..].to_vec())).await;
    assert_eq!(last.status, 204, "{}", String::from_utf8_lossy(&last.body));
    let artefact = last.headers["custodia-artefact"].to_str().unwrap().to_owned();
    let whole = gw.get(&format!("{artefact}/content?purpose=x"), Some(As::Session(&session))).await;
    assert!(whole.body == resumable, "the resumable upload's artefact differs from its bytes");
    // The log, read back by the offline verifier, is one consistent tree.
    let port = support::serve_on_loopback(gw).await;
    let verified = std::process::Command::new(env!("CARGO_BIN_EXE_custodia"))
        .args(["log", "verify", &format!("http://127.0.0.1:{port}/log"), "--key", &gw.verifier().to_string()])
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&verified.stdout), String::from_utf8_lossy(&verified.stderr));
    assert!(verified.status.success(), "{said}");
}

/// [`outage`]'s backend going down and coming back, beside the load: the refusals while it is down, then uploads
/// tried until one is acknowledged. Returns that upload's artefact.
#[allow(clippy::too_many_arguments)]
async fn down_and_up<F: std::future::Future<Output = Reply>>(
    gw: &TestGateway,
    session: &str,
    upload: &impl Fn(Vec<u8>) -> F,
    file: &impl Fn(u32) -> Vec<u8>,
    url: &str,
    resumable: &[u8],
    kept: &str,
    down: impl FnOnce(),
    up: impl FnOnce(),
) -> String {
    down();
    let started = std::time::Instant::now();
    let refused = upload(file(5)).await;
    refused.assert_problem(503, "unavailable", "try again");
    assert!(refused.headers.contains_key("retry-after"), "{:?}", refused.headers);
    let refused = tus_patch(gw, url, session, 100_000, Body::from(resumable[100_000..].to_vec())).await;
    refused.assert_problem(503, "unavailable", "try again");
    assert!(refused.headers.contains_key("retry-after"), "{:?}", refused.headers);
    let content = format!("/api/v1/artefacts/{kept}/content?purpose=trial%20preparation");
    let download = gw.get(&content, Some(As::Session(session))).await;
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
    resumed.json()["artefact"].as_str().unwrap().to_owned()
}

// Resumable uploads shared by gateways behind one load balancer.

/// The chunk objects of resumable uploads in the bucket.
async fn chunks_in(garage: &Garage) -> Vec<String> {
    let s3 = garage.object_store();
    let all: Vec<object_store::ObjectMeta> =
        s3.list(Some(&Path::from("artefacts/staging/tus"))).try_collect().await.unwrap();
    let mut names: Vec<String> = all.into_iter().map(|meta| meta.location.filename().unwrap().to_owned()).collect();
    names.sort();
    names
}

/// A tus request to an in-process gateway.
async fn tus(gw: &TestGateway, method: &str, uri: &str, session: &str, headers: &[(&str, &str)], body: Body) -> Reply {
    let mut request = TestGateway::request(method, uri, Some(As::Session(session))).header("tus-resumable", "1.0.0");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    gw.send(request.body(body).unwrap()).await
}

async fn tus_patch(gw: &TestGateway, url: &str, session: &str, offset: usize, body: Body) -> Reply {
    let offset = offset.to_string();
    let headers = [("content-type", "application/offset+octet-stream"), ("upload-offset", offset.as_str())];
    tus(gw, "PATCH", url, session, &headers, body).await
}

async fn tus_offset(gw: &TestGateway, url: &str, session: &str) -> usize {
    let reply = tus(gw, "HEAD", url, session, &[], Body::empty()).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    reply.headers["upload-offset"].to_str().unwrap().parse().unwrap()
}

/// A PATCH body that, on the gateway's first ask for it (past every check before the body), says so on `reached`,
/// then waits for `go` before it sends `bytes`.
fn gated_body(bytes: Vec<u8>) -> (Body, tokio::sync::oneshot::Receiver<()>, tokio::sync::oneshot::Sender<()>) {
    let (reached, reached_here) = tokio::sync::oneshot::channel();
    let (go_there, go) = tokio::sync::oneshot::channel::<()>();
    let body = futures::stream::once(async move {
        let _ = reached.send(());
        let _ = go.await;
        Ok::<_, std::io::Error>(bytes::Bytes::from(bytes))
    });
    (Body::from_stream(body), reached_here, go_there)
}

/// A second gateway on the first's database and bucket, in this process: its own catalog connections, object store
/// client and `Gateway`, so that a resumable upload's state can pass between the two only through PostgreSQL and
/// the bucket, as between two gateway processes. It shares the first's custody log handle, which holds nothing of an
/// upload (the records they append are sequenced in the database either way); gateways with a log handle each, on
/// one database, are the processes of `gateways_share_one_log_and_a_killed_one_loses_nothing_acknowledged` and
/// `two_gateway_processes_share_a_resumable_upload`.
async fn second_gateway(first: &TestGateway, garage: &Garage, postgres: &TempPostgres) -> TestGateway {
    let store = garage.object_store();
    let catalog = custodia_catalog::Catalog::connect(&postgres.url).await.unwrap();
    let create_only = first.state.gateway.artefacts().create_only();
    let artefacts = custodia_store::ArtefactStore::new(store.clone(), Path::from("artefacts"), create_only);
    let manifests: std::sync::Arc<dyn object_store::ObjectStore> =
        std::sync::Arc::new(object_store::prefix::PrefixStore::new(store, "artefacts"));
    let key = std::fs::read_to_string(first.dir.path().join("keys/gateway.key")).unwrap();
    let signer = custodia_ledger::LogSigner::from_skey(&key).unwrap();
    let log = first.state.gateway.log().clone();
    let max = first.state.gateway.max_upload_bytes();
    let gateway =
        custodia_service::gateway::Gateway::new(catalog, artefacts, manifests, log, &signer, first.clock.clone(), max);
    let state = custodia_server::state::AppState { gateway, ..first.state.clone() };
    TestGateway::over(tempfile::tempdir().unwrap(), state, first.clock.clone(), first.dir.path().join("log"))
}

/// One resumable upload through two gateways on one PostgreSQL database and one garage bucket: created and begun
/// on A, continued on B, raced at one offset on both, cut off on B, finished on B; HEAD agrees on both throughout;
/// the artefact downloads intact from both; a sweep on A leaves a chunk B has just written alone, and takes it once
/// it is older than any upload could be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_a_resumable_upload_through_the_bucket_and_the_database() {
    let postgres = TempPostgres::start();
    let garage = Garage::start();
    let a = on_garage_and_postgres(&garage, &postgres).await;
    let (officer, session) = a.person("officer", "FR").await;
    a.case("case-tus").await;
    a.member("case-tus", &officer, "remote_site_officer").await;
    let (clerk, clerk_session) = a.person("clerk", "NL").await;
    a.member("case-tus", &clerk, "clerk").await;
    let b = second_gateway(&a, &garage, &postgres).await;

    // 12 MiB: a first chunk past one multipart part (8 MiB), then 1 MiB chunks.
    let bytes = custodia_tests::pseudo_random_bytes(12 << 20, 11);
    let (first, race, cut) = (9 << 20, 10 << 20, (10 << 20) + (512 << 10));
    let metadata = format!("case {},purpose {}", BASE64.encode("case-tus"), BASE64.encode("witness statement"));
    let length = bytes.len().to_string();
    let created = tus(
        &a,
        "POST",
        "/api/v1/uploads",
        &session,
        &[("upload-length", &length), ("upload-metadata", &metadata)],
        Body::empty(),
    )
    .await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
    let url = created.headers["location"].to_str().unwrap().to_owned();
    let id = url.rsplit('/').next().unwrap().to_owned();

    let reply = tus_patch(&a, &url, &session, 0, Body::from(bytes[..first].to_vec())).await;
    assert_eq!(reply.status, 204, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!((tus_offset(&a, &url, &session).await, tus_offset(&b, &url, &session).await), (first, first));

    // A PATCH to each gateway at the same offset, both past their checks before either body comes: one records its
    // chunk, the other is told the offset moved and deletes its object.
    let other: Vec<u8> = bytes[first..race].iter().map(|byte| !byte).collect();
    let (body_a, reached_a, go_a) = gated_body(bytes[first..race].to_vec());
    let (body_b, reached_b, go_b) = gated_body(other.clone());
    let both = async {
        tokio::join!(tus_patch(&a, &url, &session, first, body_a), tus_patch(&b, &url, &session, first, body_b))
    };
    let gate = async {
        reached_a.await.unwrap();
        reached_b.await.unwrap();
        go_a.send(()).unwrap();
        go_b.send(()).unwrap();
    };
    let ((on_a, on_b), ()) = tokio::join!(both, gate);
    let statuses = [on_a.status.as_u16(), on_b.status.as_u16()];
    assert!(statuses == [204, 409] || statuses == [409, 204], "{statuses:?}");
    let loser = if on_a.status == 409 { &on_a } else { &on_b };
    loser.assert_problem(409, "offset-mismatch", &format!("the upload is at offset {race}"));
    assert_eq!((tus_offset(&a, &url, &session).await, tus_offset(&b, &url, &session).await), (race, race));
    assert_eq!(chunks_in(&garage).await.len(), 2, "one chunk a PATCH recorded; the loser's object is gone");
    // The upload's bytes are the winner's.
    let mut expected = bytes.clone();
    if on_b.status == 204 {
        expected[first..race].copy_from_slice(&other);
    }

    // Cut off on B after 512 KiB: kept, and both gateways say so.
    let cut_body = futures::stream::iter([Ok(bytes[race..cut].to_vec()), Err(std::io::Error::other("link dropped"))]);
    let reply = tus_patch(&b, &url, &session, race, Body::from_stream(cut_body)).await;
    reply.assert_problem(400, "upload-interrupted", &format!("resume from offset {cut}"));
    assert_eq!((tus_offset(&a, &url, &session).await, tus_offset(&b, &url, &session).await), (cut, cut));

    // Another gateway between its chunk's object and its record, just now: a sweep on A leaves it alone.
    let in_flight = format!("{id}.{cut}.chunk-in-flight");
    let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"arriving"))]);
    b.state.gateway.artefacts().write_chunk(&in_flight, body).await.unwrap();
    assert_eq!(custodia_service::uploads::sweep(&a.state.gateway).await.unwrap(), 0);
    assert_eq!(chunks_in(&garage).await.len(), 4);

    let reply = tus_patch(&b, &url, &session, cut, Body::from(bytes[cut..].to_vec())).await;
    assert_eq!(reply.status, 204, "{}", String::from_utf8_lossy(&reply.body));
    let artefact = reply.headers["custodia-artefact"].to_str().unwrap().to_owned();
    for gw in [&a, &b] {
        let detail = gw.get(&format!("{artefact}?purpose=check"), Some(As::Session(&clerk_session))).await;
        assert_eq!(detail.status, 200, "{}", String::from_utf8_lossy(&detail.body));
        assert_eq!(detail.json()["sha256"], Sha256::of(&expected).to_hex());
        let content = gw.get(&format!("{artefact}/content?purpose=check"), Some(As::Session(&clerk_session))).await;
        assert_eq!(content.status, 200);
        assert!(content.body == expected, "the artefact's bytes differ from those uploaded");
        assert_eq!(tus(gw, "HEAD", &url, &session, &[], Body::empty()).await.status, 404, "the upload is gone");
    }
    assert_eq!(chunks_in(&garage).await, [in_flight], "the upload's chunks are removed with it");
    // Once older than any upload could be, no upload holding it, it goes.
    a.clock.advance(custodia_service::uploads::ORPHANED_CHUNK_SECONDS + 3600);
    assert_eq!(custodia_service::uploads::sweep(&a.state.gateway).await.unwrap(), 1);
    assert!(chunks_in(&garage).await.is_empty());
}

/// An HTTP request to a gateway process on `port`, as the officer or clerk whose session is `session`.
async fn http(
    port: u16,
    method: &str,
    path: &str,
    session: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> support::RawAnswer {
    let cookie = session.map(|session| format!("custodia_session={session}"));
    let mut all = headers.to_vec();
    if let Some(cookie) = &cookie {
        all.extend([("Cookie", cookie.as_str()), ("Sec-Fetch-Site", "same-origin")]);
    }
    support::http_from(std::net::Ipv4Addr::LOCALHOST, port, method, path, &all, body).await.unwrap()
}

async fn json_call(
    port: u16,
    method: &str,
    path: &str,
    session: Option<&str>,
    body: serde_json::Value,
) -> support::RawAnswer {
    http(port, method, path, session, &[("Content-Type", "application/json")], body.to_string().as_bytes()).await
}

/// Signs in on the gateway on `port`; the session cookie's value.
async fn sign_in_at(port: u16, username: &str, password: &str) -> String {
    let answer = json_call(
        port,
        "POST",
        "/api/v1/session",
        None,
        serde_json::json!({"username": username, "password": password}),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let session = answer.head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        let value = value.trim().strip_prefix("custodia_session=")?;
        name.eq_ignore_ascii_case("set-cookie").then(|| value.split(';').next().unwrap().to_owned())
    });
    session.unwrap_or_else(|| panic!("no session cookie: {}", answer.head))
}

const TUS: (&str, &str) = ("Tus-Resumable", "1.0.0");
const CHUNK: (&str, &str) = ("Content-Type", "application/offset+octet-stream");

async fn offset_at(port: u16, url: &str, session: &str) -> usize {
    let answer = http(port, "HEAD", url, Some(session), &[TUS], b"").await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    answer.header("upload-offset").unwrap().parse().unwrap()
}

async fn patch_at(port: u16, url: &str, session: &str, offset: usize, body: &[u8]) -> support::RawAnswer {
    let offset = offset.to_string();
    http(port, "PATCH", url, Some(session), &[TUS, CHUNK, ("Upload-Offset", &offset)], body).await
}

/// A PATCH whose head and first half are sent now, and the rest by [`finish_patch`].
async fn begin_patch(port: u16, url: &str, session: &str, offset: usize, body: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let mut stream = support::connect_from(std::net::Ipv4Addr::LOCALHOST, port).await.unwrap();
    let head = format!(
        "PATCH {url} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nTus-Resumable: 1.0.0\r\n\
         Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\nContent-Length: {}\r\n\
         Cookie: custodia_session={session}\r\nSec-Fetch-Site: same-origin\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    stream
}

async fn finish_patch(mut stream: tokio::net::TcpStream, body: &[u8]) -> support::RawAnswer {
    use tokio::io::AsyncWriteExt as _;
    stream.write_all(&body[body.len() / 2..]).await.unwrap();
    support::read_answer(&mut stream).await.unwrap()
}

/// One resumable upload through two `custodia serve` processes on one PostgreSQL database and one garage bucket,
/// as behind a load balancer that spreads requests without affinity (deploy/compose/Caddyfile): created and begun on
/// A, continued on B, raced at one offset on both, finished on B, HEAD agreeing on both throughout; the artefact
/// downloads intact from both, and no chunk is left in the bucket. Both processes append to the one custody log, and
/// sessions made on one serve on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_share_a_resumable_upload() {
    let postgres = TempPostgres::start();
    let garage = Garage::start();
    let mut env: Vec<(&str, std::ffi::OsString)> =
        garage.gateway_env().into_iter().map(|(name, value)| (name, value.into())).collect();
    env.push(("CUSTODIA_DATABASE_URL", postgres.url.clone().into()));
    let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(name, value)| (*name, value.as_os_str())).collect();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_a, a) = support::spawn_gateway(dir_a.path(), &env);
    // One log, one key: the second gateway signs with the first's.
    support::copy_tree(&dir_a.path().join("keys"), &dir_b.path().join("keys"));
    let (_b, b) = support::spawn_gateway(dir_b.path(), &env);

    let password = std::fs::read_to_string(dir_a.path().join("keys/initial-admin-password")).unwrap();
    let admin = sign_in_at(a, "admin", password.trim()).await;
    let answer =
        json_call(a, "POST", "/api/v1/cases", Some(&admin), serde_json::json!({"id": "case-tus", "title": "R v Tus"}))
            .await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    let mut sessions = Vec::new();
    for (username, role) in [("officer", "remote_site_officer"), ("clerk", "clerk")] {
        let password = format!("{username}-correct-horse-battery");
        let account = serde_json::json!({"username": username, "display_name": username, "jurisdiction": "FR", "password": password});
        let answer = json_call(a, "POST", "/api/v1/accounts", Some(&admin), account).await;
        assert_eq!(answer.status, 201, "{}", answer.text());
        let path = format!("/api/v1/cases/case-tus/members/{}", answer.json()["id"].as_str().unwrap());
        assert_eq!(json_call(a, "PUT", &path, Some(&admin), serde_json::json!({"role": role})).await.status, 204);
        // Signed in on B: sessions are in the shared database.
        sessions.push(sign_in_at(b, username, &password).await);
    }
    let (officer, clerk) = (&sessions[0], &sessions[1]);

    let bytes = custodia_tests::pseudo_random_bytes(6 << 20, 12);
    let (first, second, race) = (2 << 20, 3 << 20, 4 << 20);
    let metadata = format!("case {},purpose {}", BASE64.encode("case-tus"), BASE64.encode("witness statement"));
    let length = bytes.len().to_string();
    let headers = [TUS, ("Upload-Length", length.as_str()), ("Upload-Metadata", metadata.as_str())];
    let created = http(a, "POST", "/api/v1/uploads", Some(officer), &headers, b"").await;
    assert_eq!(created.status, 201, "{}", created.text());
    let url = created.header("location").unwrap();

    assert_eq!(patch_at(a, &url, officer, 0, &bytes[..first]).await.status, 204);
    assert_eq!((offset_at(a, &url, officer).await, offset_at(b, &url, officer).await), (first, first));
    assert_eq!(patch_at(b, &url, officer, first, &bytes[first..second]).await.status, 204);
    assert_eq!((offset_at(a, &url, officer).await, offset_at(b, &url, officer).await), (second, second));

    // Racing at one offset, one PATCH on each gateway: one records its chunk, the other is told the offset moved.
    let other: Vec<u8> = bytes[second..race].iter().map(|byte| !byte).collect();
    let on_a = begin_patch(a, &url, officer, second, &bytes[second..race]).await;
    let on_b = begin_patch(b, &url, officer, second, &other).await;
    let (on_a, on_b) = tokio::join!(finish_patch(on_a, &bytes[second..race]), finish_patch(on_b, &other));
    let statuses = [on_a.status, on_b.status];
    assert!(statuses == [204, 409] || statuses == [409, 204], "{statuses:?}: {} / {}", on_a.text(), on_b.text());
    let mut expected = bytes.clone();
    if on_b.status == 204 {
        expected[second..race].copy_from_slice(&other);
    }
    assert_eq!((offset_at(a, &url, officer).await, offset_at(b, &url, officer).await), (race, race));

    let last = patch_at(b, &url, officer, race, &bytes[race..]).await;
    assert_eq!(last.status, 204, "{}", last.text());
    let artefact = last.header("custodia-artefact").unwrap();
    for port in [a, b] {
        let detail = http(port, "GET", &format!("{artefact}?purpose=check"), Some(clerk), &[], b"").await;
        assert_eq!(detail.json()["sha256"], Sha256::of(&expected).to_hex(), "{}", detail.text());
        let content = http(port, "GET", &format!("{artefact}/content?purpose=check"), Some(clerk), &[], b"").await;
        assert_eq!(content.status, 200);
        assert!(content.body == expected, "the artefact's bytes differ from those uploaded");
        assert_eq!(http(port, "HEAD", &url, Some(officer), &[TUS], b"").await.status, 404, "the upload is gone");
    }
    assert!(chunks_in(&garage).await.is_empty(), "chunks left in the bucket");
}

// S3 Object Lock. garage has none; moto's standalone server (tests/src/moto.rs) is a real S3 implementation that
// has it, and the gateway's own binary runs against it.

const DAY_SECONDS: i64 = 24 * 3600;

/// The environment of a gateway process: `base`, then `extra`.
fn process_env(
    base: Vec<(&'static str, String)>,
    extra: &[(&'static str, String)],
) -> Vec<(&'static str, std::ffi::OsString)> {
    base.into_iter().chain(extra.iter().cloned()).map(|(name, value)| (name, value.into())).collect()
}

fn borrowed<'a>(env: &'a [(&'static str, std::ffi::OsString)]) -> Vec<(&'static str, &'a std::ffi::OsStr)> {
    env.iter().map(|(name, value)| (*name, value.as_os_str())).collect()
}

/// On a gateway process in `dir`: the first administrator signs in, makes `case` and a prosecutor in it; the
/// prosecutor's session.
async fn prosecutor_in(port: u16, dir: &std::path::Path, case: &str) -> String {
    let password = std::fs::read_to_string(dir.join("keys/initial-admin-password")).unwrap();
    let admin = sign_in_at(port, "admin", password.trim()).await;
    let answer =
        json_call(port, "POST", "/api/v1/cases", Some(&admin), serde_json::json!({"id": case, "title": "R v Lock"}))
            .await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    let password = "prosecutor-correct-horse-battery";
    let account =
        serde_json::json!({"username": "prosecutor", "display_name": "P", "jurisdiction": "IT", "password": password});
    let answer = json_call(port, "POST", "/api/v1/accounts", Some(&admin), account).await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    let path = format!("/api/v1/cases/{case}/members/{}", answer.json()["id"].as_str().unwrap());
    assert_eq!(
        json_call(port, "PUT", &path, Some(&admin), serde_json::json!({"role": "prosecutor"})).await.status,
        204
    );
    sign_in_at(port, "prosecutor", password).await
}

/// Uploads `bytes` into `case`, with a use policy attached, stating their SHA-256 or not.
async fn upload_at(port: u16, session: &str, case: &str, bytes: &[u8], state_digest: bool) -> support::RawAnswer {
    let policy = serde_json::json!({
        "tlp": "TLP:AMBER", "provider": "IT: Procura di Roma", "permitted_purposes": ["trial preparation"],
        "permitted_recipients": [], "permitted_jurisdictions": ["IT"], "onward_transfer": "with_consent",
    });
    let policy = BASE64.encode(policy.to_string());
    let mut path = format!("/api/v1/cases/{case}/artefacts?purpose=statement");
    if state_digest {
        path.push_str(&format!("&sha256={}", Sha256::of(bytes).to_hex()));
    }
    let headers = [("Content-Type", "application/octet-stream"), ("Custodia-Use-Policy", policy.as_str())];
    http(port, "POST", &path, Some(session), &headers, bytes).await
}

/// The bucket's keys of an artefact's evidence objects: its bytes, its manifest, its attached policy.
fn evidence_keys(sha256: &str, artefact: &str) -> [String; 3] {
    [
        format!("artefacts/objects/sha256/{}/{sha256}", &sha256[..2]),
        format!("artefacts/manifests/{artefact}"),
        format!("artefacts/policies/{artefact}"),
    ]
}

/// The artefacts `case` lists, by id.
async fn listed_in(port: u16, session: &str, case: &str) -> Vec<String> {
    let answer = http(port, "GET", &format!("/api/v1/cases/{case}/artefacts"), Some(session), &[], b"").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json().as_array().unwrap().iter().map(|row| row["id"].as_str().unwrap().to_owned()).collect()
}

async fn metrics_at(port: u16) -> String {
    let answer = support::http_from(std::net::Ipv4Addr::LOCALHOST, port, "GET", "/metrics", &[], b"").await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.text()
}

/// On a bucket with Object Lock, each evidence object the real gateway writes (the artefact at its content address,
/// its manifest, its attached policy) is given the configured retention, as the S3 server reports it, and the
/// server refuses to delete those versions; the log's checkpoint, which is overwritten, is not locked. Bytes
/// uploaded again keep a longer retention they already have (never shortened), and their new manifest is locked.
/// `/metrics` says what start-up found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_bucket_with_object_lock_each_evidence_object_is_retained_and_its_versions_cannot_be_deleted() {
    let moto = Moto::start();
    moto.create_bucket("evidence", BucketLock::Enabled);
    let metrics_port = support::free_port();
    let env = process_env(
        moto.gateway_env("evidence"),
        &[
            ("CUSTODIA_S3_RETENTION_MODE", "compliance".into()),
            ("CUSTODIA_S3_RETENTION_DAYS", "3".into()),
            ("CUSTODIA_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}")),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let (gateway, port) = support::spawn_gateway(dir.path(), &borrowed(&env));
    let session = prosecutor_in(port, dir.path(), "case-lock").await;

    let bytes = custodia_tests::pseudo_random_bytes(300_000, 7);
    let sha256 = Sha256::of(&bytes).to_hex();
    let before = jiff::Timestamp::now();
    let answer = upload_at(port, &session, "case-lock", &bytes, true).await;
    let after = jiff::Timestamp::now();
    assert_eq!(answer.status, 201, "{}\n{}", answer.text(), gateway.log());
    let artefact = answer.json()["artefact"].as_str().unwrap().to_owned();
    let three_days = jiff::SignedDuration::from_secs(3 * DAY_SECONDS);
    for key in evidence_keys(&sha256, &artefact) {
        let (mode, until) = moto.retention("evidence", &key).unwrap_or_else(|| panic!("{key} has no retention"));
        assert_eq!(mode, "COMPLIANCE", "{key}");
        assert!(
            until >= before + three_days - jiff::SignedDuration::from_secs(1)
                && until <= after + three_days + jiff::SignedDuration::from_secs(1),
            "{key} is retained until {until}, not three days from its upload ({before} to {after})"
        );
    }
    assert_eq!(moto.retention("evidence", "log/checkpoint"), None, "the checkpoint, overwritten, must not be locked");

    // The server keeps the locked versions: deleting one for good is refused.
    for prefix in ["artefacts/objects/", "artefacts/manifests/", "artefacts/policies/"] {
        let versions = moto.versions("evidence", prefix);
        assert_eq!(versions.len(), 1, "{prefix}: {versions:?}");
        assert_eq!(moto.delete_version("evidence", &versions[0]), Err("AccessDenied".to_owned()), "{prefix}");
    }
    let content = format!("/api/v1/artefacts/{artefact}/content?purpose=trial%20preparation");
    let downloaded = http(port, "GET", &content, Some(&session), &[], b"").await;
    assert_eq!(downloaded.status, 200, "{}", downloaded.text());
    assert!(downloaded.body == bytes, "the locked artefact's bytes differ from those uploaded");

    // Held longer by hand: the same bytes again (through staging and a copy, no digest stated) keep that date.
    let [object_key, ..] = evidence_keys(&sha256, &artefact);
    let held_until = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() + 30 * DAY_SECONDS).unwrap();
    moto.set_retention("evidence", &object_key, "COMPLIANCE", held_until);
    let again = upload_at(port, &session, "case-lock", &bytes, false).await;
    assert_eq!(again.status, 201, "{}\n{}", again.text(), gateway.log());
    assert_eq!(moto.retention("evidence", &object_key), Some(("COMPLIANCE".to_owned(), held_until)));
    let second = again.json()["artefact"].as_str().unwrap().to_owned();
    let [_, manifest, policy] = evidence_keys(&sha256, &second);
    for key in [manifest, policy] {
        assert_eq!(moto.retention("evidence", &key).map(|(mode, _)| mode), Some("COMPLIANCE".to_owned()), "{key}");
    }
    // The staging object the second upload went through is deleted, and its versions can be: never locked.
    let staged = moto.versions("evidence", "artefacts/staging/");
    assert!(!staged.is_empty(), "the second upload went through no staging object");
    for version in &staged {
        assert_eq!(moto.delete_version("evidence", version), Ok(()), "{version:?}");
    }

    let metrics = metrics_at(metrics_port).await;
    assert!(metrics.contains("custodia_store_object_lock{state=\"enabled\"} 1"), "{metrics}");
    assert!(metrics.contains("custodia_store_retention_days 3"), "{metrics}");
    assert!(!gateway.log().contains(&moto.secret), "the store's secret is in the gateway's log");
}

/// A loopback proxy to the S3 server on `upstream` that answers, itself, `403 AccessDenied` to every
/// PutObjectRetention whose request line contains what `refused` holds now (nothing, while it is empty): as a
/// store whose key lacks `s3:PutObjectRetention` would. Every other request goes through (moto closes each
/// connection after one answer, so each request is a connection of its own, looked at here).
async fn refusing_retention(upstream: u16, refused: std::sync::Arc<std::sync::Mutex<String>>) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else { return };
            let refused = refused.lock().unwrap().clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 8192];
                while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                    match client.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => head.extend_from_slice(&buffer[..read]),
                    }
                }
                let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_owned();
                if !refused.is_empty()
                    && line.starts_with("PUT ")
                    && line.contains("?retention")
                    && line.contains(&refused)
                {
                    let body = "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";
                    let answer = format!(
                        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = client.write_all(answer.as_bytes()).await;
                    return;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else { return };
                if server.write_all(&head).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    port
}

/// Where the bucket has Object Lock and retention cannot be set on an evidence object (the artefact's bytes, then
/// its manifest), the upload fails retryably (503, `Retry-After`) and the case lists nothing; once the store sets
/// retention again, the same upload succeeds and its bytes, stored unlocked by the failed try, are locked. The
/// uploads state no digest, so they go through staging and a copy (the test above states one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_retention_cannot_be_set_the_upload_fails_retryably_and_nothing_is_listed() {
    let moto = Moto::start();
    moto.create_bucket("evidence", BucketLock::Enabled);
    let refused = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let upstream: u16 = moto.endpoint.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = refusing_retention(upstream, refused.clone()).await;
    let mut base = moto.gateway_env("evidence");
    base.retain(|(name, _)| *name != "CUSTODIA_S3_ENDPOINT");
    let env = process_env(
        base,
        &[
            ("CUSTODIA_S3_ENDPOINT", format!("http://127.0.0.1:{proxy}")),
            ("CUSTODIA_S3_RETENTION_MODE", "governance".into()),
            ("CUSTODIA_S3_RETENTION_DAYS", "1".into()),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let (gateway, port) = support::spawn_gateway(dir.path(), &borrowed(&env));
    let session = prosecutor_in(port, dir.path(), "case-lock").await;
    let bytes = custodia_tests::pseudo_random_bytes(50_000, 9);
    let sha256 = Sha256::of(&bytes).to_hex();

    for refusing in ["/artefacts/objects/", "/artefacts/manifests/"] {
        *refused.lock().unwrap() = refusing.to_owned();
        let answer = upload_at(port, &session, "case-lock", &bytes, false).await;
        assert_eq!(answer.status, 503, "refusing {refusing}: {}\n{}", answer.text(), gateway.log());
        assert!(answer.header("retry-after").is_some(), "{}", answer.head);
        assert!(listed_in(port, &session, "case-lock").await.is_empty(), "refusing {refusing}: evidence is listed");
    }
    assert!(gateway.log().contains("could not set the retention of an evidence object"), "{}", gateway.log());

    refused.lock().unwrap().clear();
    let answer = upload_at(port, &session, "case-lock", &bytes, false).await;
    assert_eq!(answer.status, 201, "{}\n{}", answer.text(), gateway.log());
    let artefact = answer.json()["artefact"].as_str().unwrap().to_owned();
    assert_eq!(listed_in(port, &session, "case-lock").await, std::slice::from_ref(&artefact));
    for key in evidence_keys(&sha256, &artefact) {
        assert_eq!(moto.retention("evidence", &key).map(|(mode, _)| mode), Some("GOVERNANCE".to_owned()), "{key}");
    }
}

/// Runs `custodia serve` with `env` until it exits (it must, within a minute); its exit status and operator log.
fn serve_until_it_exits(env: &[(&'static str, std::ffi::OsString)]) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_custodia"));
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{}", support::free_port())])
        .env("CUSTODIA_DATA_DIR", dir.path())
        .envs(env.iter().map(|(name, value)| (name, value)));
    let output = support::run_for(&mut command, std::time::Duration::from_secs(60), "cargo builds it");
    (output.status, String::from_utf8_lossy(&output.stderr).into_owned())
}

/// garage does not support Object Lock: the gateway says so at start-up and in `/metrics`, and serves all the
/// same; asked for retention there, or on a moto bucket without Object Lock, or with no bucket at all, it refuses
/// to start and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_object_lock_the_gateway_says_so_and_refuses_to_start_if_retention_was_asked_for() {
    let garage = Garage::start();
    let metrics_port = support::free_port();
    let env = process_env(garage.gateway_env(), &[("CUSTODIA_METRICS_LISTEN", format!("127.0.0.1:{metrics_port}"))]);
    let dir = tempfile::tempdir().unwrap();
    let (mut gateway, port) = support::spawn_gateway(dir.path(), &borrowed(&env));
    let session = prosecutor_in(port, dir.path(), "case-garage").await;
    let answer = upload_at(port, &session, "case-garage", b"no lock here", true).await;
    assert_eq!(answer.status, 201, "{}\n{}", answer.text(), gateway.log());
    let metrics = metrics_at(metrics_port).await;
    assert!(metrics.contains("custodia_store_object_lock{state=\"not_supported\"} 1"), "{metrics}");
    assert!(metrics.contains("custodia_store_retention_days 0"), "{metrics}");
    assert!(gateway.log().contains("object_lock=\"not_supported\""), "{}", gateway.log());
    gateway.stop();

    let asked = [("CUSTODIA_S3_RETENTION_DAYS", "2555".to_owned())];
    let (status, log) = serve_until_it_exits(&process_env(garage.gateway_env(), &asked));
    assert!(!status.success(), "{log}");
    assert!(log.contains("Object Lock is not_supported"), "{log}");

    let moto = Moto::start();
    moto.create_bucket("plain", BucketLock::None);
    let (status, log) = serve_until_it_exits(&process_env(moto.gateway_env("plain"), &asked));
    assert!(!status.success(), "{log}");
    assert!(log.contains("Object Lock is not_enabled"), "{log}");
    assert!(!log.contains(&moto.secret), "the store's secret is in the gateway's log");

    let (status, log) = serve_until_it_exits(&process_env(Vec::new(), &asked));
    assert!(!status.success(), "{log}");
    assert!(log.contains("only an S3 bucket"), "{log}");
}
