//! No custody record is lost or chained past, against the real binary: the catalog's index write fails (a SQLite
//! trigger raises) for one artefact while appends about others complete, and the gateway is killed with -9 while
//! appends are in flight. A record is sequenced in the transaction that indexes it, so a failed index write
//! sequences nothing and the step it records is refused. Afterwards every record about each artefact that reached
//! the ledger is in its timeline and its court bundle, each record chains to the one before, every bundle verifies
//! (`custodia verify`) and the log audits clean (`custodia log verify`).
//!
//! Needs curl (scripts/setup-system.sh test).

mod support;

use std::path::Path;
use std::process::{Command, Output};

use custodia_core::CustodyRecord;
use custodia_ledger::{Log, LogOptions, LogSigner};
use serde_json::{Value, json};
use sqlx::ConnectOptions as _;
use support::{Client, spawn_gateway};

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// The catalog of the gateway in `data`, opened beside the running gateway (WAL allows it).
async fn catalog(data: &Path) -> sqlx::SqliteConnection {
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(data.join("catalog.db"))
        .busy_timeout(std::time::Duration::from_secs(30))
        .connect()
        .await
        .unwrap()
}

/// From now on, the catalog refuses to index any record about `artefact`, with an error, as a failing disk would.
async fn fail_index_writes_about(data: &Path, artefact: &str) {
    let mut catalog = catalog(data).await;
    let trigger = format!(
        "CREATE TRIGGER fail_index BEFORE INSERT ON custody_index WHEN NEW.artefact_id = '{artefact}' \
         BEGIN SELECT RAISE(ABORT, 'injected: the disk is failing'); END"
    );
    sqlx::query(&trigger).execute(&mut catalog).await.unwrap();
}

async fn mend_index_writes(data: &Path) {
    let mut catalog = catalog(data).await;
    sqlx::query("DROP TRIGGER fail_index").execute(&mut catalog).await.unwrap();
}

/// How many entries the published checkpoint covers.
fn ledger_size(client: &Client) -> u64 {
    let (status, body) = client.send("GET", "/log/checkpoint", "text/plain", b"");
    assert_eq!(status, 200);
    String::from_utf8(body).unwrap().lines().nth(1).unwrap().parse().unwrap()
}

/// Every record in the ledger, read from the log directory once no gateway holds it.
async fn ledger_records(data: &Path) -> Vec<CustodyRecord> {
    let key = std::fs::read_to_string(data.join("keys/gateway.key")).unwrap();
    let log =
        Log::open_local(&data.join("log"), LogSigner::from_skey(&key).unwrap(), LogOptions::default()).await.unwrap();
    let size = log.checkpoint().checkpoint.size;
    let mut records = Vec::new();
    for index in 0..size {
        records.push(CustodyRecord::from_entry(&log.storage().entry(index, size).await.unwrap()).unwrap());
    }
    log.close().await;
    records
}

fn custodia(args: &[&str], data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_custodia")).args(args).env("CUSTODIA_DATA_DIR", data).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_index_write_or_a_crash_loses_no_record_from_any_chain() {
    if !support::installed("curl", &["--version"]) {
        eprintln!("SKIPPED: curl is not installed (scripts/setup-system.sh test)");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let (gateway, port) = spawn_gateway(data.path(), &[]);
    let base = format!("http://127.0.0.1:{port}");
    let password = std::fs::read_to_string(data.path().join("keys/initial-admin-password")).unwrap();
    let admin = Client::sign_in(&base, "admin", password.trim());
    let account = json!({ "username": "clerk", "display_name": "Clerk", "password": "clerk-correct-horse-battery",
                          "jurisdiction": "IT" });
    let (status, clerk_account) = admin.json("POST", "/api/v1/accounts", account);
    assert_eq!(status, 201, "{clerk_account}");
    assert_eq!(admin.json("POST", "/api/v1/cases", json!({ "id": "case-gap", "title": "R v Gap" })).0, 201);
    let member = format!("/api/v1/cases/case-gap/members/{}", clerk_account["id"].as_str().unwrap());
    assert_eq!(admin.json("PUT", &member, json!({ "role": "clerk" })).0, 204);
    let clerk = Client::sign_in(&base, "clerk", "clerk-correct-horse-battery");
    let upload = |content: &[u8]| {
        let (status, body) =
            clerk.send("POST", "/api/v1/cases/case-gap/artefacts?purpose=statement", "video/webm", content);
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice::<Value>(&body).unwrap()["artefact"].as_str().unwrap().to_owned()
    };
    let (gapped, busy) = (upload(b"the artefact whose index fails"), upload(b"an artefact read all the while"));

    // The index write about one artefact fails while appends about another complete around it.
    fail_index_writes_about(data.path(), &gapped).await;
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (clerk, busy) = (clerk.clone(), busy.clone());
            std::thread::spawn(move || (0..5).map(|_| clerk.download(&busy)).collect::<Vec<u16>>())
        })
        .collect();
    assert_eq!(
        clerk.download(&gapped),
        500,
        "its record cannot be indexed, so it is not sequenced, and the download is refused"
    );
    for reader in readers {
        assert!(reader.join().unwrap().iter().all(|status| *status == 200), "appends about others complete");
    }
    // Nothing about that artefact reaches the ledger while its index cannot be written.
    let before = ledger_size(&clerk);
    assert_eq!(clerk.download(&gapped), 500);
    assert_eq!(clerk.download(&busy), 200);
    assert_eq!(ledger_size(&clerk), before + 1, "the refused download appended nothing");
    mend_index_writes(data.path()).await;
    assert_eq!(clerk.download(&gapped), 200, "once the index can be written, so can the record");

    // Again, and this time the gateway dies (kill -9) while appends about the other artefact are in flight.
    fail_index_writes_about(data.path(), &gapped).await;
    assert_eq!(clerk.download(&gapped), 500);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (clerk, busy, stop) = (clerk.clone(), busy.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    clerk.download(&busy);
                }
            })
        })
        .collect();
    let in_flight = ledger_size(&clerk);
    while ledger_size(&clerk) < in_flight + 8 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(gateway);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        reader.join().unwrap();
    }
    mend_index_writes(data.path()).await;

    let (gateway, port) = spawn_gateway(data.path(), &[]);
    let base = format!("http://127.0.0.1:{port}");
    let clerk = Client { base: base.clone(), ..clerk };
    assert_eq!(clerk.download(&gapped), 200);
    let vkey = String::from_utf8(custodia(&["keygen"], data.path()).stdout).unwrap().trim().to_owned();
    let mut timelines = Vec::new();
    for artefact in [&gapped, &busy] {
        let (status, bundle) =
            clerk.send("POST", &format!("/api/v1/artefacts/{artefact}/exports?purpose=trial"), "text/plain", b"");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bundle));
        let path = data.path().join(format!("{artefact}.tar"));
        std::fs::write(&path, &bundle).unwrap();
        let verified = custodia(&["verify", path.to_str().unwrap(), "--trusted-key", &vkey], data.path());
        assert!(verified.status.success(), "{artefact}: {}", text(&verified));
        let bagged: Vec<u64> = support::tar_files(&bundle)
            .iter()
            .filter_map(|(name, ..)| name.split_once("/data/custody/")?.1.strip_suffix(".json")?.parse().ok())
            .collect();
        let (status, timeline) = clerk.json("GET", &format!("/api/v1/artefacts/{artefact}/timeline"), json!(null));
        assert_eq!(status, 200, "{timeline}");
        let indexes: Vec<u64> = timeline["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["ledger_index"].as_u64().unwrap())
            .collect();
        timelines.push((artefact.clone(), indexes, bagged));
    }
    drop(gateway);

    let audit = custodia(&["log", "verify", data.path().join("log").to_str().unwrap(), "--key", &vkey], data.path());
    assert!(audit.status.success(), "{}", text(&audit));
    let records = ledger_records(data.path()).await;
    for (artefact, indexes, bagged) in timelines {
        let in_ledger: Vec<u64> = (0..records.len() as u64)
            .filter(|index| records[*index as usize].event.artefact().is_some_and(|a| a.as_str() == artefact))
            .collect();
        assert_eq!(indexes, in_ledger, "{artefact}: the timeline holds every record in the ledger about it");
        assert_eq!(bagged, in_ledger, "{artefact}: the bundle holds every record in the ledger about it");
        let mut prior = None;
        for index in in_ledger {
            assert_eq!(records[index as usize].prior, prior, "{artefact}: record {index} chains to the one before");
            prior = Some(index);
        }
    }
}
