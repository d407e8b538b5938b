//! Media probing runs in a child process under limits (`custodia probe`, src/probe.rs), never in the gateway
//! that holds the signing key. A file FFmpeg cannot read, or a probe that goes past its limits, gives an
//! "unprobed" manifest with the reason: the upload is taken (201, never a 5xx) and its bytes are kept intact.
//!
//! Needs the ffmpeg CLI for the sample video (scripts/test-packages.txt).

mod support;

use custodia_core::Sha256;
use serde_json::Value;
use support::{As, TestGateway};

/// Uploads `bytes` into a new case as a clerk; returns the manifest's `media` and the downloaded bytes.
async fn upload(gateway: &TestGateway, bytes: Vec<u8>) -> (Value, Vec<u8>) {
    let (clerk, session) = gateway.person("clerk", "IT").await;
    gateway.case("case-1").await;
    gateway.member("case-1", &clerk, "clerk").await;
    let reply = gateway.upload("case-1", "purpose=statement&filename=clip.webm", As::Session(&session), bytes).await;
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
    let artefact = reply.json()["artefact"].as_str().unwrap().to_owned();
    let detail =
        gateway.get(&format!("/api/v1/artefacts/{artefact}?purpose=statement"), Some(As::Session(&session))).await;
    assert_eq!(detail.status, 200, "{}", String::from_utf8_lossy(&detail.body));
    let detail = detail.json();
    let content = format!("/api/v1/artefacts/{artefact}/content?purpose=statement");
    let download = gateway.get(&content, Some(As::Session(&session))).await;
    assert_eq!(download.status, 200);
    (detail["manifest"]["media"].clone(), download.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_is_probed_in_a_child_process() {
    let gateway = TestGateway::start().await;
    let bytes = support::webm_clip();
    let (media, kept) = upload(&gateway, bytes.clone()).await;
    assert_eq!(media["outcome"], "probed", "{media}");
    assert_eq!(media["format"], "matroska,webm", "{media}");
    let codecs: Vec<&str> = media["streams"].as_array().unwrap().iter().map(|s| s["codec"].as_str().unwrap()).collect();
    assert_eq!(codecs, ["vp8", "opus"], "{media}");
    assert_eq!(Sha256::of(&kept), Sha256::of(&bytes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_media_is_kept_with_the_reason_it_was_not_probed() {
    let gateway = TestGateway::start().await;
    // A WebM cut off in its first cluster, with garbage where the rest was.
    let mut bytes = support::webm_clip();
    bytes.truncate(bytes.len() / 3);
    bytes.extend((0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let (media, kept) = upload(&gateway, bytes.clone()).await;
    assert!(media["outcome"] == "unprobed" || media["outcome"] == "probed", "{media}");
    assert_eq!(Sha256::of(&kept), Sha256::of(&bytes), "the upload was not kept intact");
    // Not media at all.
    let garbage: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let (clerk, session) = gateway.person("clerk2", "IT").await;
    gateway.member("case-1", &clerk, "clerk").await;
    let reply =
        gateway.upload("case-1", "purpose=statement&filename=x.webm", As::Session(&session), garbage.clone()).await;
    assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
    let artefact = reply.json()["artefact"].as_str().unwrap().to_owned();
    let detail =
        gateway.get(&format!("/api/v1/artefacts/{artefact}?purpose=statement"), Some(As::Session(&session))).await;
    assert_eq!(detail.status, 200, "{}", String::from_utf8_lossy(&detail.body));
    let detail = detail.json();
    let media = &detail["manifest"]["media"];
    assert_eq!(media["outcome"], "unprobed", "{media}");
    assert!(!media["reason"].as_str().unwrap().is_empty(), "{media}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_that_never_ends_is_killed_and_the_upload_kept() {
    // A probe stuck in a loop, as a parser a hostile file traps would be: the probe binary is replaced by a shell
    // script that spins. After its wall-clock time the gateway kills it, and the upload goes on.
    let dir = tempfile::tempdir().unwrap();
    let spinner = dir.path().join("spin");
    std::fs::write(&spinner, "#!/bin/sh\nwhile :; do :; done\n").unwrap();
    std::fs::set_permissions(&spinner, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let program = spinner.clone();
    let gateway = TestGateway::start_with(move |config| {
        config.probe.program = Some(program);
        config.probe.seconds = 2;
    })
    .await;
    let bytes = support::webm_clip();
    let (media, kept) = upload(&gateway, bytes.clone()).await;
    assert_eq!(media["outcome"], "unprobed", "{media}");
    let reason = media["reason"].as_str().unwrap();
    assert!(reason.contains("took longer than 2 s"), "{reason}");
    assert_eq!(Sha256::of(&kept), Sha256::of(&bytes));
}
