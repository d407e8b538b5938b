//! kill -9 in the middle of a recorded hearing: every segment sealed before the crash is still in custody, its
//! bytes are what the ledger says, its court bundle verifies offline, the log audits clean, the open segment that
//! the crash cut off is quarantined (kept, and on the record), and the gateway starts again cleanly with the hearing
//! restored from its journal: the judge comes back with their credential, ends it, and the minutes list every
//! segment sealed before the crash.
//!
//! Needs aiortc and websockets (tests/requirements.txt) and curl; skipped, saying so, without them.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::{installed, spawn_gateway};
use tokio::io::AsyncBufReadExt as _;

fn custodia(args: &[&str], data_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_custodia")).args(args).env("CUSTODIA_DATA_DIR", data_dir).output().unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn curl(args: &[&str]) -> Vec<u8> {
    let output = Command::new("curl").args(["-sS", "--fail-with-body"]).args(args).output().unwrap();
    assert!(output.status.success(), "curl {args:?}: {}", text(&output));
    output.stdout
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() { pending.push(path) } else { found.push(path) }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_hearing_keeps_every_sealed_segment_provable() {
    if !installed("python3", &["-c", "import aiortc, websockets"]) || !installed("curl", &["--version"]) {
        eprintln!("SKIPPED: aiortc, websockets or curl is not installed (scripts/setup-system.sh test)");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let (gateway, port) = spawn_gateway(data.path(), &[]);
    let base = format!("http://127.0.0.1:{port}");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/hearing_crash_driver.py");
    let mut driver = tokio::process::Command::new("python3")
        .arg(&script)
        .args([base.as_str(), data.path().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(driver.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(120), lines.next_line())
        .await
        .expect("two segments sealed within two minutes")
        .unwrap()
        .expect("the driver reports the sealed segments");
    let sealed: Value = serde_json::from_str(&line).unwrap();
    // Well into the open segment, the gateway dies without warning.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    drop(gateway);
    driver.kill().await.unwrap();
    let cut_off = files_under(&data.path().join("recordings"));
    assert!(!cut_off.is_empty(), "the crash came while a segment was open");
    let mut cut_off_digests: Vec<String> =
        cut_off.iter().map(|path| format!("{:x}", Sha256::digest(std::fs::read(path).unwrap()))).collect();
    cut_off_digests.sort();

    let (gateway, port) = spawn_gateway(data.path(), &[]);
    let base = format!("http://127.0.0.1:{port}");
    assert!(files_under(&data.path().join("recordings")).is_empty(), "the cut-off segment left staging");
    let mut kept: Vec<String> = files_under(&data.path().join("quarantine"))
        .iter()
        .map(|path| format!("{:x}", Sha256::digest(std::fs::read(path).unwrap())))
        .collect();
    kept.sort();
    assert_eq!(kept, cut_off_digests, "the cut-off segments are kept in quarantine, byte for byte");
    let keygen = custodia(&["keygen"], data.path());
    let vkey = String::from_utf8(keygen.stdout).unwrap().trim().to_owned();
    let audit = custodia(&["log", "verify", data.path().join("log").to_str().unwrap(), "--key", &vkey], data.path());
    assert!(audit.status.success(), "{}", text(&audit));

    let cookie = format!("Cookie: custodia_session={}", sealed["clerk"].as_str().unwrap());
    let segments = sealed["segments"].as_array().unwrap();
    assert!(segments.len() >= 2);
    for segment in segments {
        let id = segment["artefact"].as_str().unwrap();
        let bytes = curl(&["-H", &cookie, &format!("{base}/api/v1/artefacts/{id}/content?purpose=review")]);
        let digest: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(segment["sha256"], digest.as_str(), "{id}: the bytes are the ones sealed");
        let bundle = data.path().join(format!("{id}.tar"));
        let exports = format!("{base}/api/v1/artefacts/{id}/exports?purpose=trial");
        let exported = curl(&["-X", "POST", "-H", &cookie, "-H", "Sec-Fetch-Site: same-origin", &exports]);
        std::fs::write(&bundle, exported).unwrap();
        let verified = custodia(&["verify", bundle.to_str().unwrap(), "--trusted-key", &vkey], data.path());
        assert!(verified.status.success(), "{id}: {}", text(&verified));
    }

    // The hearing is back, still in session and recording, everyone's connection lost.
    let uri = format!("{base}/api/v1/cases/case-crash/hearings/{}", sealed["hearing"].as_str().unwrap());
    let view: Value = serde_json::from_slice(&curl(&["-H", &cookie, &uri])).unwrap();
    assert_eq!(view["phase"], "in_session", "{view}");
    assert_eq!(view["recording"], true);
    assert!(view["participants"].as_array().unwrap().iter().all(|p| p["place"] == "away"), "{view}");
    let before: Vec<&Value> = segments.iter().map(|s| &s["sha256"]).collect();
    let after: Vec<&Value> = view["segments"].as_array().unwrap().iter().map(|s| &s["sha256"]).collect();
    assert_eq!(after[..before.len()], before[..], "the restored hearing lists the sealed segments");

    // The judge comes back with their credential, into the hearing, and ends it.
    use futures::{SinkExt as _, StreamExt as _};
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/api/v1/room")).await.unwrap();
    let rejoin = serde_json::json!({"type": "rejoin", "credential": sealed["judge"]});
    socket.send(rejoin.to_string().into()).await.unwrap();
    let mut back_in_session = false;
    while let Some(Ok(message)) = socket.next().await {
        let Ok(text) = message.into_text() else { continue };
        let message: Value = serde_json::from_str(&text).unwrap();
        match message["type"].as_str() {
            Some("state") if message["you"]["place"] == "main_room" && !back_in_session => {
                back_in_session = true;
                socket.send(serde_json::json!({"type": "end"}).to_string().into()).await.unwrap();
            }
            Some("ended") => break,
            Some("refused" | "error") => panic!("{message}"),
            _ => {}
        }
    }
    assert!(back_in_session, "the judge came back into the hearing");
    let mut minutes = Value::Null;
    for _ in 0..60 {
        let view: Value = serde_json::from_slice(&curl(&["-H", &cookie, &uri])).unwrap();
        if let Some(id) = view["minutes_artefact"].as_str() {
            let bytes = curl(&["-H", &cookie, &format!("{base}/api/v1/artefacts/{id}/content?purpose=review")]);
            minutes = serde_json::from_slice(&bytes).unwrap();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(minutes["phase"], "ended", "the minutes are in custody: {minutes}");
    let listed: Vec<&Value> = minutes["segments"].as_array().unwrap().iter().map(|s| &s["sha256"]).collect();
    assert_eq!(listed[..before.len()], before[..]);
    let judge = minutes["present"].as_array().unwrap().iter().find(|a| a["role"] == "judge").unwrap();
    assert!(judge["reconnections"].as_u64().unwrap() >= 1, "{judge}");
    drop(gateway);

    // Each quarantined segment is on the record, by its digest: the public record commits to the digest under a
    // salt, and the opening the catalog keeps for the record opens that commitment to it.
    let key = std::fs::read_to_string(data.path().join("keys/gateway.key")).unwrap();
    let log = custodia_ledger::Log::open_local(
        &data.path().join("log"),
        custodia_ledger::LogSigner::from_skey(&key).unwrap(),
        custodia_ledger::LogOptions::default(),
    )
    .await
    .unwrap();
    let catalog_url = format!("sqlite://{}?mode=rw", data.path().join("catalog.db").display());
    let catalog = custodia_catalog::Catalog::connect(&catalog_url).await.unwrap();
    let size = log.checkpoint().checkpoint.size;
    let mut recorded = Vec::new();
    for index in 0..size {
        let entry = log.storage().entry(index, size).await.unwrap();
        let record: Value = serde_json::from_slice(&entry).unwrap();
        if record["event"]["kind"] == "output_quarantined" {
            let commitment: custodia_core::Commitment = record["event"]["detail"].as_str().unwrap().parse().unwrap();
            let openings = catalog.openings(&custodia_core::Sha256::of(&entry).to_hex()).await.unwrap();
            let openings = openings.unwrap_or_else(|| panic!("the catalog keeps the openings of {record}"));
            let openings = custodia_core::Openings::from_canonical(openings.as_bytes()).unwrap();
            let opening = openings.get("detail").unwrap_or_else(|| panic!("no opening of the detail of {record}"));
            assert_eq!(opening.commitment("detail"), commitment, "the opening opens the record's commitment: {record}");
            recorded.push(opening.text.clone());
        }
    }
    log.close().await;
    recorded.sort();
    assert_eq!(recorded, cut_off_digests, "every quarantined segment is on the record");
}
