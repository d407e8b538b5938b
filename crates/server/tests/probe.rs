//! Media probing runs in a child process under limits (`custodia probe`, src/probe.rs), never in the gateway
//! that holds the signing key. A file FFmpeg cannot read, or a probe that goes past its limits, gives an
//! "unprobed" manifest with the reason: the upload is taken (201, never a 5xx) and its bytes are kept intact.
//!
//! Needs the ffmpeg CLI for the sample video (scripts/test-packages.txt).

mod support;

use custodia_core::Sha256;
use custodia_media::MediaProbe;
use custodia_service::probe::{ProbeLimits, Prober, SEEN_HEAD_BYTES, SEEN_TAIL_BYTES, Seen};
use custodia_store::{ArtefactStore, CreateOnly, IngestOptions, StoredArtefact};
use custodia_tests::failing_store::FailingStore;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::Ordering;
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

/// A prober running this build's `custodia probe`, stopping a child after `seconds`.
fn prober(program: Option<std::path::PathBuf>) -> Prober {
    let program = program.unwrap_or_else(|| env!("CARGO_BIN_EXE_custodia").into());
    Prober::new(Some(program), ProbeLimits { wall: std::time::Duration::from_secs(20), ..ProbeLimits::default() })
        .unwrap()
}

/// `bytes` stored as an artefact in a local store in `dir`.
async fn stored(dir: &std::path::Path, bytes: Vec<u8>) -> (ArtefactStore, StoredArtefact) {
    let artefacts = ArtefactStore::local(dir).unwrap();
    let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(bytes))]);
    let stored = artefacts.ingest(body, IngestOptions::default()).await.unwrap();
    (artefacts, stored)
}

/// A file ffmpeg makes with `args` (its output last), read back.
fn made_by_ffmpeg(name: &str, args: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(args)
        .arg(&path)
        .status()
        .expect("ffmpeg runs (scripts/setup-system.sh test)");
    assert!(status.success());
    std::fs::read(path).unwrap()
}

/// An MP4 of `seconds` of noisy video (a few megabytes a second) and sound, with its index (`moov`) at its end.
fn noisy_mp4_with_its_index_last(seconds: &str) -> Vec<u8> {
    made_by_ffmpeg(
        "moov-last.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=640x480:rate=25,noise=alls=100:allf=t",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
            "-t",
            seconds,
            "-c:v",
            "mpeg4",
            "-q:v",
            "2",
            "-c:a",
            "aac",
        ],
    )
}

/// An object of a remote store is probed through the child's pipes, a block at a time, and described exactly as
/// the same bytes in a file are: a WebM, and an MP4 of several megabytes whose index (`moov`) is at its end, so
/// that FFmpeg seeks across blocks to read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_read_in_ranges_is_probed_as_its_file_is() {
    let mp4 = noisy_mp4_with_its_index_last("4");
    assert!(mp4.len() > 3 << 20, "{} bytes: not several blocks", mp4.len());
    let moov = mp4.windows(4).rposition(|window| window == b"moov").unwrap();
    assert!(moov > mp4.len() / 2, "the index is not at the end");
    let prober = prober(None);
    for (name, bytes) in [("webm", support::webm_clip()), ("mp4", mp4)] {
        let dir = tempfile::tempdir().unwrap();
        let (artefacts, stored) = stored(dir.path(), bytes).await;
        let from_file = prober.probe(&artefacts.local_path(&stored.sha256).unwrap()).await;
        let in_ranges = prober.probe_stored(&artefacts, &stored.sha256, stored.size, None).await;
        assert!(matches!(in_ranges, MediaProbe::Probed(_)), "{name}: {in_ranges:?}");
        assert_eq!(in_ranges, from_file, "{name}");
    }
}

/// What the gateway kept of an upload as it streamed into the store (its beginning and its end) is what a probe
/// reads: an MP4 larger than both together, with its index at the end, is probed as its file is while every read
/// from the store fails, so nothing was read from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_streamed_in_is_probed_without_reading_the_store() {
    let mp4 = noisy_mp4_with_its_index_last("12");
    assert!(mp4.len() as u64 > SEEN_HEAD_BYTES + SEEN_TAIL_BYTES + (1 << 20), "{} bytes: all kept", mp4.len());
    let (store, artefacts, stored) = stored_remotely(mp4.clone()).await;
    let mut seen = Seen::default();
    for chunk in mp4.chunks(65_536 + 7) {
        seen.observe(&bytes::Bytes::copy_from_slice(chunk));
    }
    store.fail_next_gets.store(1_000, Ordering::SeqCst);
    let probe = prober(None).probe_stored(&artefacts, &stored.sha256, stored.size, Some(seen)).await;
    assert_eq!(store.fail_next_gets.load(Ordering::SeqCst), 1_000, "the store was read");
    assert!(matches!(probe, MediaProbe::Probed(_)), "{probe:?}");
    assert_eq!(probe, probed_as_a_file(&mp4).await);
    // Without it, the same reads go to the store, and fail.
    let probe = prober(None).probe_stored(&artefacts, &stored.sha256, stored.size, None).await;
    assert!(matches!(probe, MediaProbe::Unprobed { .. }), "{probe:?}");
}

/// A child that says what the protocol does not (a hostile file that took the probe over, or another program):
/// the upload's probe is "unprobed" with the reason, and the gateway gives it nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_child_that_breaks_the_protocol_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (artefacts, stored) = stored(dir.path(), support::webm_clip()).await;
    let scripts = tempfile::tempdir().unwrap();
    let script = |name: &str, body: &str| {
        let path = scripts.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        prober(Some(path))
    };
    // Not a request at all.
    let garbage = script("garbage", "printf 'X'");
    let probe = garbage.probe_stored(&artefacts, &stored.sha256, stored.size, None).await;
    let MediaProbe::Unprobed { reason } = probe else { panic!("{probe:?}") };
    assert!(reason.contains("not a request"), "{reason}");
    // A read asked by a child probing a file of its own: there is no object to read.
    let reader = script("reader", r"printf 'R\000\000\000\000\000\000\000\000\000\000\000\001'");
    let probe = reader.probe(&artefacts.local_path(&stored.sha256).unwrap()).await;
    let MediaProbe::Unprobed { reason } = probe else { panic!("{probe:?}") };
    assert!(reason.contains("bytes of no object"), "{reason}");
    // An answer longer than any probe's.
    let long = script("long", r"printf 'J\177\000\000\000'");
    let probe = long.probe_stored(&artefacts, &stored.sha256, stored.size, None).await;
    let MediaProbe::Unprobed { reason } = probe else { panic!("{probe:?}") };
    assert!(reason.contains("too long"), "{reason}");
    // Nonsense, then hanging on: stopped at once, for what it said (not after the wall-clock limit).
    let hanging = script("hanging", "printf 'X'; exec sleep 60");
    let probe = hanging.probe_stored(&artefacts, &stored.sha256, stored.size, None).await;
    let MediaProbe::Unprobed { reason } = probe else { panic!("{probe:?}") };
    assert!(reason.contains("not a request"), "{reason}");
    // An answer, then not ending: the answer is not taken.
    let lingering = script("lingering", r"printf 'J\000\000\000\002{}'; exec sleep 60");
    let probe = lingering.probe_stored(&artefacts, &stored.sha256, stored.size, None).await;
    let MediaProbe::Unprobed { reason } = probe else { panic!("{probe:?}") };
    assert!(reason.contains("did not end after it answered"), "{reason}");
    // Stopping in the middle of a request.
    let cut = script("cut", r"printf 'R\000\000'");
    let probe = cut.probe_stored(&artefacts, &stored.sha256, stored.size, None).await;
    let MediaProbe::Unprobed { reason } = probe else { panic!("{probe:?}") };
    assert!(reason.contains("not understood"), "{reason}");
}

/// `bytes` stored in a store in memory whose reads can be made slow or failing, as a remote store's can.
async fn stored_remotely(bytes: Vec<u8>) -> (Arc<FailingStore>, ArtefactStore, StoredArtefact) {
    let store = Arc::new(FailingStore::default());
    let artefacts = ArtefactStore::new(store.clone(), object_store::path::Path::from("artefacts"), CreateOnly::Ignored);
    let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(bytes))]);
    let stored = artefacts.ingest(body, IngestOptions::default()).await.unwrap();
    assert!(artefacts.local_path(&stored.sha256).is_none());
    (store, artefacts, stored)
}

/// What probing `bytes` as a file finds.
async fn probed_as_a_file(bytes: &[u8]) -> MediaProbe {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("media");
    std::fs::write(&file, bytes).unwrap();
    prober(None).probe(&file).await
}

/// The store takes longer to give a block than FFmpeg may take to probe (10 s): that wait is not FFmpeg's, so the
/// probe finds what it finds in a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_store_does_not_change_what_a_probe_finds() {
    let clip = support::webm_clip();
    let (store, artefacts, stored) = stored_remotely(clip.clone()).await;
    store.next_get_delay_ms.store(11_000, Ordering::SeqCst);
    let in_ranges = prober(None).probe_stored(&artefacts, &stored.sha256, stored.size, None).await;
    assert_eq!(store.next_get_delay_ms.load(Ordering::SeqCst), 0, "the store was not slow");
    assert!(matches!(in_ranges, MediaProbe::Probed(_)), "{in_ranges:?}");
    assert_eq!(in_ranges, probed_as_a_file(&clip).await);
}

/// A store that fails for a moment is asked again (twice); one that goes on failing leaves the upload unprobed, in
/// words that say nothing of the store's own (its endpoint, its bucket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failing_for_a_moment_is_asked_again() {
    let clip = support::webm_clip();
    let (store, artefacts, stored) = stored_remotely(clip.clone()).await;
    store.fail_next_gets.store(2, Ordering::SeqCst);
    let probe = prober(None).probe_stored(&artefacts, &stored.sha256, stored.size, None).await;
    assert_eq!(store.fail_next_gets.load(Ordering::SeqCst), 0);
    assert_eq!(probe, probed_as_a_file(&clip).await);
    store.fail_next_gets.store(3, Ordering::SeqCst);
    let probe = prober(None).probe_stored(&artefacts, &stored.sha256, stored.size, None).await;
    assert_eq!(
        probe,
        MediaProbe::Unprobed { reason: "the object could not be read from the store to be probed".to_owned() }
    );
}
