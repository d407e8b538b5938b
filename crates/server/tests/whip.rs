//! WHIP publishing into a hearing, end to end, with aiortc (PyPI) as a publisher none of us wrote: a case member
//! publishes test video and audio for about 25 seconds with an API token; every segment of the recording must be
//! an artefact of the case whose registration record in the ledger carries the SHA-256 of the bytes the gateway
//! serves back, ffprobe must read each as VP8 + Opus, and together they must last as long as what was sent.
//!
//! Needs aiortc (tests/requirements.txt) and ffprobe (the ffmpeg package); skipped, saying so, without them.

mod support;

use std::path::Path;

use axum::http::StatusCode;
use sha2::{Digest, Sha256};
use support::{As, TestGateway, installed, probe_media, serve_on_loopback, write_token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_publishes_into_a_hearing_and_every_segment_is_in_custody() {
    if !installed("python3", &["-c", "import aiortc"]) || !installed("ffprobe", &["-version"]) {
        eprintln!("SKIPPED: aiortc or ffprobe is not installed (scripts/setup-system.sh test)");
        return;
    }
    let gateway = TestGateway::start().await;
    gateway.case("case-9").await;
    let (witness, session) = gateway.person("witness", "NL").await;
    gateway.member("case-9", &witness, "witness").await;
    let (judge, judge_session) = gateway.person("judge", "NL").await;
    gateway.member("case-9", &judge, "judge").await;
    let token = write_token(&gateway, &session).await;

    let port = serve_on_loopback(&gateway).await;

    // A non-member, and a body that is not SDP, are refused before any WebRTC work.
    let url = format!("http://127.0.0.1:{port}/api/v1/cases/case-9/hearings/hearing-1/whip");
    let (_, outsider) = gateway.person("outsider", "NL").await;
    let refused = gateway
        .send_bytes(
            "POST",
            "/api/v1/cases/case-9/hearings/hearing-1/whip",
            Some(As::Session(&outsider)),
            &[("content-type", "application/sdp")],
            "v=0",
        )
        .await;
    refused.assert_problem(404, "not-found", "");
    let refused = gateway
        .send_bytes(
            "POST",
            "/api/v1/cases/case-9/hearings/hearing-1/whip",
            Some(As::Token(&token)),
            &[("content-type", "text/plain")],
            "v=0",
        )
        .await;
    refused.assert_problem(415, "unsupported-media-type", "application/sdp");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recorder/tests/peers/whip_publish.py");
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .args([url.as_str(), "25", token.as_str()])
        .kill_on_drop(true)
        .output()
        .await
        .expect("python3 runs");
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the aiortc publisher failed:\n{log}");
    let report: serde_json::Value =
        serde_json::from_str(log.lines().find(|l| l.starts_with('{')).expect("its report")).unwrap();
    let sent_s = report["stopped_s"].as_f64().unwrap();

    // The DELETE returned once the last segment was in custody.
    let reply = gateway.get("/api/v1/cases/case-9/artefacts", Some(As::Session(&judge_session))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    let mut artefacts: Vec<serde_json::Value> = reply.json().as_array().unwrap().clone();
    artefacts.sort_by_key(|a| a["ledger_index"].as_u64());
    assert!(artefacts.len() >= 2, "at least two segments in custody: {artefacts:?}");
    let dir = tempfile::tempdir().unwrap();
    let mut total = 0.0;
    for (i, artefact) in artefacts.iter().enumerate() {
        let id = artefact["id"].as_str().unwrap();
        assert_eq!(artefact["media_type"], "video/webm");
        let record = gateway.ledger_record(artefact["ledger_index"].as_u64().unwrap()).await;
        assert_eq!(record["event"]["type"], "artefact_registered");
        assert_eq!(record["event"]["artefact"], id);
        assert_eq!(record["actor"], witness.as_str());
        let content = gateway
            .get(&format!("/api/v1/artefacts/{id}/content?purpose=review"), Some(As::Session(&judge_session)))
            .await;
        assert_eq!(content.status, StatusCode::OK);
        let digest: String = Sha256::digest(&content.body).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(record["event"]["sha256"], digest.as_str(), "segment {i}: the ledger's digest is the bytes served");
        let path = dir.path().join(format!("{i}.webm"));
        std::fs::write(&path, &content.body).unwrap();
        let (codecs, duration) = probe_media(&path);
        assert_eq!(codecs, ["opus", "vp8"], "segment {i}");
        eprintln!("segment {i}: {id}, {duration:.3} s, sha256 {digest}");
        total += duration;
    }
    // The recording starts at the first keyframe, a little after the offer (connection set-up); the segments
    // cover the rest of what was sent.
    eprintln!("sent {sent_s:.3} s after the offer, recorded {total:.3} s");
    assert!(total <= sent_s + 0.5 && total >= sent_s - 1.5, "recorded {total:.3} s of {sent_s:.3} s");
    // Nothing is left staged once the session is over.
    let staged = gateway.files_under("recordings");
    assert!(staged.is_empty(), "{staged:?}");
}
