//! A hearing end to end, with two aiortc peers (PyPI; a WebRTC stack none of us wrote) in the room: a judge and a
//! witness see and hear each other through the gateway only once the witness is admitted, the hearing is recorded,
//! and every segment and the signed minutes are artefacts of the case whose digests are in the ledger.
//!
//! Needs aiortc and websockets (tests/requirements.txt) and ffprobe (the ffmpeg package); skipped, saying so,
//! without them.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use axum::http::StatusCode;
use custodia_hearings::media_plane::MediaPlane;
use custodia_recorder::engine::MediaKind;
use custodia_recorder::sfu::RoomCounters;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{As, TestGateway, installed, probe_media, serve_on_loopback};

const SECONDS: f64 = 14.0;

/// What the gateway logged in this test binary, kept to check that no address or secret is in it (when RUST_LOG
/// is set, the logs go to the terminal instead, and are not checked).
static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogBuffer;

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The gateway's logs, as the gateway filters them: with its default filter, into [`LOGS`]; or as RUST_LOG asks,
/// to the terminal.
fn init_logs() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let safe = custodia_server::safe_log_filter();
    let _ = match std::env::var("RUST_LOG") {
        // To the terminal, with colours only if it is one: `RUST_LOG=... cargo test > file` gets plain text.
        Ok(filter) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .finish()
            .with(safe)
            .try_init(),
        Err(_) => tracing_subscriber::fmt()
            .with_env_filter(custodia_server::DEFAULT_LOG_FILTER)
            .with_writer(|| LogBuffer)
            .with_ansi(false)
            .finish()
            .with(safe)
            .try_init(),
    };
}

/// Checks that the logs so far name no IP address and none of `secrets`.
fn assert_logs_are_clean(secrets: &[&str]) {
    if std::env::var_os("RUST_LOG").is_some() {
        return;
    }
    let logs = String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    assert!(logs.contains("recording segment in custody"), "the logs were captured:\n{logs}");
    for line in logs.lines() {
        let address = line.split(|c: char| !(c.is_ascii_digit() || c == '.')).any(|word| {
            word.split('.').filter(|part| !part.is_empty()).count() == 4 && word.parse::<std::net::Ipv4Addr>().is_ok()
        });
        assert!(!address, "an IP address in the log: {line}");
        for secret in secrets {
            assert!(!line.contains(secret), "a secret in the log: {line}");
        }
    }
}

/// Issues an invite; returns its id and its secret.
async fn invite(gateway: &TestGateway, clerk: &str, hearing: &str, body: Value) -> (String, String) {
    let language = body["language"].as_str().map(str::to_owned);
    let reply = gateway
        .call("POST", &format!("/api/v1/cases/case-1/hearings/{hearing}/invites"), Some(As::Session(clerk)), body)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    let issued = reply.json();
    // Each role's own page: the court's controls in the console, everyone else's on /join.
    let page = if ["judge", "clerk"].contains(&issued["role"].as_str().unwrap()) { "/?room" } else { "/join" };
    let secret = issued["secret"].as_str().unwrap();
    // A language for the person's page travels in the fragment, with the secret.
    let fragment = match language.as_deref() {
        Some(code) if page == "/join" => format!("lang={code}&invite={secret}"),
        _ => secret.to_owned(),
    };
    assert_eq!(issued["link"], format!("{page}#{fragment}"));
    (issued["invite"].as_str().unwrap().to_owned(), issued["secret"].as_str().unwrap().to_owned())
}

/// A gateway with case-1, for tests whose peers are aiortc over the room's WebSocket; `None` (the test is
/// skipped, saying so) without aiortc, websockets or ffprobe.
async fn gateway_for_room_peers() -> Option<TestGateway> {
    if !installed("python3", &["-c", "import aiortc, websockets"]) || !installed("ffprobe", &["-version"]) {
        eprintln!("SKIPPED: aiortc, websockets or ffprobe is not installed (scripts/setup-system.sh test)");
        return None;
    }
    init_logs();
    let gateway = TestGateway::start().await;
    gateway.case("case-1").await;
    Some(gateway)
}

/// The seconds of audio a peer sent, by the media's own clock, from its script's [audio, video] report.
fn audio_sent(sent: &Value) -> f64 {
    sent[0].as_f64().unwrap()
}

/// Seconds of audio recorded of `participant`, counted in packets (20 ms of Opus each), from [`recordings`]. The
/// recording's duration is not the measure: its timeline follows the sender's clock (RTCP sender reports), so a
/// sender starved on a busy machine is recorded for longer than the media it managed to send.
fn audio_recorded(recorded: &BTreeMap<String, (f64, u64)>, participant: &str) -> f64 {
    recorded.get(participant).map_or(0, |(_, packets)| *packets) as f64 * 0.020
}

/// Seconds of audio that arrived at the gateway from `member` between two readings of the room's counters, by
/// its packets: each Opus packet of aiortc and of GStreamer's opusenc holds 20 ms. Media counted, not the clock: a
/// publisher on a busy machine sends less than real time, and the recording holds what arrived.
fn audio_arrived(before: &RoomCounters, after: &RoomCounters, member: &str) -> f64 {
    let arrived =
        |counters: &RoomCounters| counters.arrived.get(&(member.to_owned(), MediaKind::Audio)).copied().unwrap_or(0);
    arrived(after).saturating_sub(arrived(before)) as f64 * 0.020
}

/// Seconds of audio from `participant` that the recorder found lost while it recorded them (by RTP sequence
/// numbers), as the minutes' technical conditions say: sent, never arrived, and still a stretch of the recording.
fn audio_lost(minutes: &Value, participant: &str) -> f64 {
    let tracks = minutes["technical"]["tracks"].as_array().unwrap();
    let audio = tracks.iter().find(|track| track["participant"] == participant && track["track"] == "audio");
    audio.map_or(0, |track| track["packets_lost"].as_u64().unwrap()) as f64 * 0.020
}

/// The room of a live hearing of case-1.
fn room_of(gateway: &TestGateway, hearing: &str) -> std::sync::Arc<dyn MediaPlane> {
    let case = custodia_core::CaseId::new("case-1").unwrap();
    let live = gateway.state.hearings.of_case(&case).into_iter().find(|live| live.id().as_str() == hearing);
    live.expect("the hearing is live").room().clone()
}

/// The room's own counters, read when a peer script marked the start and the end of each of its phases.
struct Marks(BTreeMap<String, RoomCounters>);

impl Marks {
    /// In `phase`: the packets of `kind` that arrived from participant `from`, and those forwarded to `to`.
    fn relayed(&self, phase: &str, to: &str, from: &str, kind: MediaKind) -> (u64, u64) {
        let at =
            |edge: &str| self.0.get(&format!("{phase} {edge}")).unwrap_or_else(|| panic!("no mark {phase} {edge}"));
        let (start, end) = (at("start"), at("end"));
        let arrived = |c: &RoomCounters| c.arrived.get(&(from.to_owned(), kind)).copied().unwrap_or(0);
        let forwarded =
            |c: &RoomCounters| c.forwarded.get(&(to.to_owned(), from.to_owned(), kind)).copied().unwrap_or(0);
        (arrived(end).saturating_sub(arrived(start)), forwarded(end).saturating_sub(forwarded(start)))
    }

    /// Whether what `from` sent of `kind` in `phase` reached `to`: something arrived, and at least 80% of it was
    /// forwarded (the rest may still have been on its way when the counters were read). Says what went wrong.
    fn flowed(&self, phase: &str, to: &str, from: &str, kind: MediaKind) -> Result<(), String> {
        match self.relayed(phase, to, from, kind) {
            (0, _) => Err(format!("{phase}: no {kind:?} arrived from {from}")),
            (arrived, forwarded) if forwarded * 5 < arrived * 4 => {
                Err(format!("{phase}: {forwarded} of {arrived} {kind:?} packets from {from} forwarded to {to}"))
            }
            _ => Ok(()),
        }
    }

    /// In `phase`: the packets of `from`'s `kind` forwarded to `to` that were not of its masked feed (the
    /// original), and those that were.
    fn original_and_masked(&self, phase: &str, to: &str, from: &str, kind: MediaKind) -> (u64, u64) {
        let Treated { all, masked, .. } = self.treated(phase, to, from, kind);
        (all.saturating_sub(masked), masked)
    }

    /// In `phase`: the packets of `from`'s `kind` forwarded to `to`, and of those, how many a pipeline masked and
    /// how many one ducked.
    fn treated(&self, phase: &str, to: &str, from: &str, kind: MediaKind) -> Treated {
        let at =
            |edge: &str| self.0.get(&format!("{phase} {edge}")).unwrap_or_else(|| panic!("no mark {phase} {edge}"));
        let key = (to.to_owned(), from.to_owned(), kind);
        let count = |map: &BTreeMap<(String, String, MediaKind), u64>| map.get(&key).copied().unwrap_or(0);
        let (start, end) = (at("start"), at("end"));
        Treated {
            all: count(&end.forwarded).saturating_sub(count(&start.forwarded)),
            masked: count(&end.masked).saturating_sub(count(&start.masked)),
            ducked: count(&end.ducked).saturating_sub(count(&start.ducked)),
        }
    }

    /// Whether nothing of `kind` from `from` was forwarded to `to` in `phase`.
    fn cut(&self, phase: &str, to: &str, from: &str, kind: MediaKind) -> Result<(), String> {
        match self.relayed(phase, to, from, kind) {
            (_, 0) => Ok(()),
            (arrived, forwarded) => {
                Err(format!("{phase}: {forwarded} of {arrived} {kind:?} packets from {from} leaked to {to}"))
            }
        }
    }
}

/// Packets forwarded in a phase, and of those, how many a pipeline masked and how many one ducked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Treated {
    all: u64,
    masked: u64,
    ducked: u64,
}

/// Runs a script of aiortc room peers (tests/peers) to completion, reading `room`'s counters at each "mark ..."
/// line it prints; returns the JSON line it reports, its whole output, and the counters at its marks. The peers'
/// own frame counts depend on how much CPU a busy machine leaves them to decode; the gateway's counters say what
/// it relayed.
async fn run_peers(room: &std::sync::Arc<dyn MediaPlane>, script: &str, arguments: &[&str]) -> (Value, String, Marks) {
    run_peers_telling(room, script, arguments, None).await
}

/// [`run_peers`], telling `marks` of each mark as the script prints it (so that the test can act at that moment).
/// The script waits at each mark until the gateway's counters are read and the test told (a line on its stdin,
/// `mark` in room_two_party.py), so that what it does next cannot reach the counters first.
async fn run_peers_telling(
    room: &std::sync::Arc<dyn MediaPlane>,
    script: &str,
    arguments: &[&str],
    marks_to: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) -> (Value, String, Marks) {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
    // One script of peers at a time: each runs several WebRTC peers, encoding and decoding, in one Python thread,
    // and two at once on a 2-core machine starve each other's decoders.
    static PEERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = PEERS.lock().await;
    let mut child = tokio::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers").join(script))
        .args(arguments)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let mut acknowledge = child.stdin.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        stderr.read_to_string(&mut text).await.ok();
        text
    });
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut out, mut marks) = (String::new(), BTreeMap::new());
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(mark) = line.strip_prefix("mark ") {
            marks.insert(mark.to_owned(), room.counters());
            if let Some(to) = &marks_to {
                let _ = to.send(mark.to_owned());
            }
            // A script that has already failed is no longer reading: its status tells, below.
            let _ = acknowledge.write_all(b"read\n").await;
            let _ = acknowledge.flush().await;
        }
        out.push_str(&line);
        out.push('\n');
    }
    let status = child.wait().await.unwrap();
    let log = format!("{out}{}", errors.await.unwrap());
    assert!(status.success(), "the aiortc peers failed:\n{log}");
    let report: Value = serde_json::from_str(log.lines().find(|l| l.starts_with('{')).expect("its report")).unwrap();
    eprintln!("{report}");
    (report, log, Marks(marks))
}

/// A scheduled hearing of case-1 whose lobby is open: its id, the clerk's session, and the secrets of `invites`.
async fn open_hearing(gateway: &TestGateway, invites: &[Value]) -> (String, String, Vec<String>) {
    let (clerk, clerk_session) = gateway.person("clerk", "IT").await;
    gateway.member("case-1", &clerk, "clerk").await;
    let schedule = json!({"scheduled_for": "2026-12-01T09:00:00Z", "place": "Tribunale di Catania, aula 2"});
    let reply =
        gateway.call("POST", "/api/v1/cases/case-1/hearings", Some(As::Session(&clerk_session)), schedule).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    let hearing = reply.json()["id"].as_str().unwrap().to_owned();
    let mut secrets = Vec::new();
    for body in invites {
        secrets.push(invite(gateway, &clerk_session, &hearing, body.clone()).await.1);
    }
    let open = format!("/api/v1/cases/case-1/hearings/{hearing}/open");
    let reply = gateway.call("POST", &open, Some(As::Session(&clerk_session)), json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    (hearing, clerk_session, secrets)
}

/// The hearing's view once its minutes are in custody (they follow the last segment), as `session` sees it.
async fn view_after_the_minutes(gateway: &TestGateway, hearing: &str, session: &str) -> Value {
    let uri = format!("/api/v1/cases/case-1/hearings/{hearing}");
    for _ in 0..60 {
        let view = gateway.get(&uri, Some(As::Session(session))).await.json();
        if !view["minutes_artefact"].is_null() {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("no minutes in custody 30 s after the end");
}

/// Fetches an artefact's bytes as `session`.
async fn content(gateway: &TestGateway, artefact: &str, session: &str) -> Vec<u8> {
    let reply =
        gateway.get(&format!("/api/v1/artefacts/{artefact}/content?purpose=review"), Some(As::Session(session))).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.body.to_vec()
}

/// The Opus packets (20 ms each) in a recorded segment, as ffprobe counts them.
fn audio_packets(path: &Path) -> u64 {
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_packets", "-select_streams", "a", "-show_entries", "stream=nb_read_packets"])
        .args(["-of", "json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(probe.status.success(), "ffprobe {}: {}", path.display(), String::from_utf8_lossy(&probe.stderr));
    let probe: Value = serde_json::from_slice(&probe.stdout).unwrap();
    // A segment cut as its audio began may hold none of it: ffprobe then gives no count (seen once under load).
    match probe["streams"][0]["nb_read_packets"].as_str() {
        Some(count) => count.parse().unwrap(),
        None => {
            eprintln!("{}: no audio packets counted: {probe}", path.display());
            0
        }
    }
}

/// Every segment of the hearing's view, checked: its bytes are what the ledger's registration record and the view
/// say, and ffprobe reads VP8 + Opus. Returns per participant the seconds recorded (the segments' durations) and the
/// audio packets recorded.
async fn recordings(gateway: &TestGateway, view: &Value, session: &str) -> BTreeMap<String, (f64, u64)> {
    let dir = tempfile::tempdir().unwrap();
    let mut recorded: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    for segment in view["segments"].as_array().unwrap() {
        let id = segment["artefact"].as_str().unwrap();
        let record = gateway.ledger_record(segment["ledger_index"].as_u64().unwrap()).await;
        assert_eq!(record["event"]["type"], "artefact_registered");
        assert_eq!(record["event"]["artefact"], id);
        let bytes = content(gateway, id, session).await;
        let digest: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        // The ledger commits to the bytes through the signed manifest's digest (the manifest carries a nonce).
        let detail = gateway.get(&format!("/api/v1/artefacts/{id}?purpose=review"), Some(As::Session(session))).await;
        assert_eq!(detail.status, StatusCode::OK);
        let detail = detail.json();
        let canonical = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            detail["manifest_canonical"].as_str().unwrap(),
        )
        .unwrap();
        let manifest_digest: String = Sha256::digest(&canonical).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(record["event"]["manifest_sha256"], manifest_digest.as_str(), "{id}: the registered manifest");
        assert_eq!(detail["manifest"]["sha256"], digest.as_str(), "{id}: the manifest's digest is the bytes served");
        assert_eq!(segment["sha256"], digest.as_str());
        let path = dir.path().join(format!("{id}.webm"));
        std::fs::write(&path, &bytes).unwrap();
        let (codecs, duration) = probe_media(&path);
        assert_eq!(codecs, ["opus", "vp8"], "{id}");
        let entry = recorded.entry(segment["participant"].as_str().unwrap().to_owned()).or_default();
        entry.0 += duration;
        entry.1 += audio_packets(&path);
    }
    recorded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_aiortc_peers_hold_a_recorded_hearing_through_the_gateway() {
    let Some(gateway) = gateway_for_room_peers().await else { return };
    let (clerk, clerk_session) = gateway.person("clerk", "IT").await;
    gateway.member("case-1", &clerk, "clerk").await;
    let (prosecutor, prosecutor_session) = gateway.person("prosecutor", "IT").await;
    gateway.member("case-1", &prosecutor, "prosecutor").await;

    // Only a clerk schedules.
    let schedule = json!({"scheduled_for": "2026-12-01T09:00:00Z", "place": "Tribunale di Catania, aula 2"});
    let refused = gateway
        .call("POST", "/api/v1/cases/case-1/hearings", Some(As::Session(&prosecutor_session)), schedule.clone())
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", String::from_utf8_lossy(&refused.body));
    let reply =
        gateway.call("POST", "/api/v1/cases/case-1/hearings", Some(As::Session(&clerk_session)), schedule).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    let hearing = reply.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(reply.json()["phase"], "scheduled");

    let (_, judge_secret) =
        invite(&gateway, &clerk_session, &hearing, json!({"role": "judge", "admit_on_join": true})).await;
    let (_, witness_secret) = invite(&gateway, &clerk_session, &hearing, json!({"role": "witness"})).await;
    let (observer_invite, revoked) = invite(&gateway, &clerk_session, &hearing, json!({"role": "observer"})).await;
    let reply = gateway
        .delete(
            &format!("/api/v1/cases/case-1/hearings/{hearing}/invites/{observer_invite}"),
            Some(As::Session(&clerk_session)),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&reply.body));
    let reply = gateway
        .call(
            "POST",
            &format!("/api/v1/cases/case-1/hearings/{hearing}/open"),
            Some(As::Session(&clerk_session)),
            json!({}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["phase"], "open");

    let port = serve_on_loopback(&gateway).await;
    let url = format!("ws://127.0.0.1:{port}/api/v1/room");
    // A revoked invite cannot join.
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    use futures::{SinkExt as _, StreamExt as _};
    socket.send(json!({"type": "join", "invite": revoked}).to_string().into()).await.unwrap();
    let answer: Value = serde_json::from_str(&socket.next().await.unwrap().unwrap().into_text().unwrap()).unwrap();
    assert_eq!(answer["type"], "refused", "{answer}");

    let room = room_of(&gateway, &hearing);
    let (report, log, marks) =
        run_peers(&room, "room_two_party.py", &[url.as_str(), &judge_secret, &witness_secret, &SECONDS.to_string()])
            .await;
    let (judge, witness) = (report["judge"].as_str().unwrap(), report["witness"].as_str().unwrap());

    // Nothing crossed the lobby; once admitted, the gateway relayed everything each sent to the other, and each
    // decoded the other's video and audio.
    let mut wrong = Vec::new();
    for (direction, to, from) in [("judge_from_witness", judge, witness), ("witness_from_judge", witness, judge)] {
        assert_eq!(report["lobby"][direction], json!([0, 0]), "{direction} while the witness waited in the lobby");
        for kind in [MediaKind::Audio, MediaKind::Video] {
            wrong.extend(marks.flowed("admitted", to, from, kind).err());
        }
        let decoded = &report["admitted"][direction];
        if decoded[0] == 0 || decoded[1] == 0 {
            wrong.push(format!("admitted: {direction} decoded {decoded} video and audio frames"));
        }
    }
    assert_eq!(report["self_admit"]["type"], "refused", "a witness cannot admit themself");
    // Data saver: the witness took no video but all the audio, and still sent their own video.
    wrong.extend(marks.cut("data_saver", witness, judge, MediaKind::Video).err());
    wrong.extend(marks.flowed("data_saver", witness, judge, MediaKind::Audio).err());
    wrong.extend(marks.flowed("data_saver", judge, witness, MediaKind::Video).err());
    assert!(wrong.is_empty(), "{wrong:?}\n{report}\n{log}");

    let view = view_after_the_minutes(&gateway, &hearing, &prosecutor_session).await;
    assert_eq!(view["phase"], "ended");
    let minutes_id = view["minutes_artefact"].as_str().unwrap().to_owned();
    let segments = view["segments"].as_array().unwrap();
    let recorded = recordings(&gateway, &view, &prosecutor_session).await;
    eprintln!("recorded per participant (seconds, audio packets): {recorded:?}");
    // Recording starts at the first keyframe after the judge starts it and stops when the hearing ends: it holds no
    // more than each peer sent from the judge asking for it to the end (plus what was on its way then), and no less
    // than it sent from the judge seeing it start to asking for the end, less the wait for that first keyframe.
    // Judged by the audio each peer sent and the packets recorded, not by the clock: on a busy machine a peer sends
    // less than real time.
    for who in ["judge", "witness"] {
        let seconds = audio_recorded(&recorded, report[who].as_str().unwrap());
        let at_most = audio_sent(&report["recording_at_most"][who]);
        let at_least = audio_sent(&report["recording_at_least"][who]);
        assert!(
            (at_least - 3.0..=at_most + 1.0).contains(&seconds),
            "{who}: recorded {seconds:.2} s of audio, while it sent {at_least:.2} to {at_most:.2} s in the recording"
        );
    }

    // The minutes: canonical JSON, everyone present with their role, every segment's digest.
    let minutes: Value = serde_json::from_slice(&content(&gateway, &minutes_id, &prosecutor_session).await).unwrap();
    assert_eq!(minutes["hearing"], hearing.as_str());
    assert_eq!(minutes["phase"], "ended");
    assert_eq!(minutes["place"], "Tribunale di Catania, aula 2");
    let mut roles: Vec<&str> =
        minutes["present"].as_array().unwrap().iter().map(|a| a["role"].as_str().unwrap()).collect();
    roles.sort();
    assert_eq!(roles, ["judge", "witness"]);
    let listed: Vec<&str> =
        minutes["segments"].as_array().unwrap().iter().map(|s| s["sha256"].as_str().unwrap()).collect();
    let sealed: Vec<&str> = segments.iter().map(|s| s["sha256"].as_str().unwrap()).collect();
    assert_eq!(listed, sealed);
    assert!(!minutes["technical"].is_null());

    // The hearing's steps are in the ledger, in order, as opaque ids only.
    let mut kinds = Vec::new();
    for index in 0..gateway.ledger_size() {
        let record = gateway.ledger_record(index).await;
        if record["event"]["type"] == "hearing_event" && record["event"]["hearing"] == hearing.as_str() {
            kinds.push(record["event"]["kind"].as_str().unwrap().to_owned());
        }
    }
    for kind in [
        "hearing_scheduled",
        "invite_revoked",
        "lobby_opened",
        "joined_lobby",
        "admitted",
        "session_started",
        "recording_started",
        "recording_stopped",
        "hearing_ended",
        "step_refused",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} missing from {kinds:?}");
    }
    let position = |kind: &str| kinds.iter().position(|k| k == kind).unwrap();
    assert!(position("admitted") < position("recording_started"));
    assert_logs_are_clean(&[&judge_secret, &witness_secret, &revoked]);
    // Nothing is left staged.
    let staged = gateway.files_under("recordings");
    assert!(staged.is_empty(), "{staged:?}");
}

/// A room participant on a WebSocket, with no media: enough to run a hearing from the bench.
struct Console {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    state: Value,
}

impl Console {
    async fn join(url: &str, secret: &str) -> Self {
        use futures::SinkExt as _;
        let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        socket.send(json!({"type": "join", "invite": secret}).to_string().into()).await.unwrap();
        let mut console = Console { socket, state: Value::Null };
        let welcome = console.next().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        console
    }

    async fn next(&mut self) -> Value {
        use futures::StreamExt as _;
        loop {
            let message = tokio::time::timeout(Duration::from_secs(60), self.socket.next())
                .await
                .expect("a room message within a minute")
                .expect("the room is open")
                .unwrap();
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] == "state" {
                    self.state = value.clone();
                }
                return value;
            }
        }
    }

    async fn send(&mut self, message: Value) {
        use futures::SinkExt as _;
        self.socket.send(message.to_string().into()).await.unwrap();
    }

    /// Waits for a state in which `test` holds, and returns it.
    async fn until(&mut self, test: impl Fn(&Value) -> bool) -> Value {
        while !(self.state.is_object() && test(&self.state)) {
            self.next().await;
        }
        self.state.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aiortc_whip_publisher_waits_in_the_lobby_and_is_recorded_once_admitted() {
    if !installed("python3", &["-c", "import aiortc"]) || !installed("ffprobe", &["-version"]) {
        eprintln!("SKIPPED: aiortc or ffprobe is not installed (scripts/setup-system.sh test)");
        return;
    }
    whip_publisher_in_a_hearing("python3", "whip_publish.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gstreamer_whip_publisher_waits_in_the_lobby_and_is_recorded_once_admitted() {
    let gi = "import gi; gi.require_version('GstWebRTC', '1.0')";
    if !installed("/usr/bin/python3", &["-c", gi]) || !installed("ffprobe", &["-version"]) {
        eprintln!(
            "SKIPPED: GStreamer's webrtcbin (python3-gi) or ffprobe is not installed (scripts/setup-system.sh test)"
        );
        return;
    }
    whip_publisher_in_a_hearing("/usr/bin/python3", "gst_whip_publish.py").await;
}

/// A WHIP publisher (`script`, in crates/recorder/tests/peers, run by `python`) joins a hearing with its invite's
/// secret; a judge on the room's WebSocket admits it after it has waited in the lobby and records it; it leaves
/// with a DELETE; what it sent while admitted and recorded is in custody.
async fn whip_publisher_in_a_hearing(python: &str, script: &str) {
    init_logs();
    let gateway = TestGateway::start().await;
    gateway.case("case-1").await;
    let invites = [json!({"role": "judge", "admit_on_join": true}), json!({"role": "remote_site_officer"})];
    let (hearing, clerk_session, secrets) = open_hearing(&gateway, &invites).await;
    let [judge_secret, camera_secret] = <[String; 2]>::try_from(secrets).unwrap();
    let port = serve_on_loopback(&gateway).await;
    let whip = format!("http://127.0.0.1:{port}/api/v1/room/whip");

    // No token, and a token that is no invite, are turned away before any WebRTC work.
    let headers = [("content-type", "application/sdp")];
    let reply = gateway.send_bytes("POST", "/api/v1/room/whip", None, &headers, "v=0").await;
    reply.assert_problem(401, "unauthenticated", "");
    let reply =
        gateway.send_bytes("POST", "/api/v1/room/whip", Some(As::Token("not-an-invite")), &headers, "v=0").await;
    reply.assert_problem(403, "room-refused", "not valid");

    let mut judge = Console::join(&format!("ws://127.0.0.1:{port}/api/v1/room"), &judge_secret).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recorder/tests/peers").join(script);
    let publisher = tokio::process::Command::new(python)
        .arg(&script)
        .args([whip.as_str(), "16", camera_secret.as_str()])
        .kill_on_drop(true)
        .output();
    let publisher = tokio::spawn(publisher);
    let in_lobby = |state: &Value| {
        state["participants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["role"] == "remote_site_officer" && p["place"] == "lobby")
            .cloned()
    };
    let state = judge.until(|state| in_lobby(state).is_some()).await;
    let camera = in_lobby(&state).unwrap()["id"].as_str().unwrap().to_owned();
    // While it waits, nothing it sends is recorded or relayed; the court lets it in and records.
    let room = room_of(&gateway, &hearing);
    tokio::time::sleep(Duration::from_secs(2)).await;
    judge.send(json!({"type": "admit", "participant": camera})).await;
    judge.send(json!({"type": "start_session"})).await;
    let asked = room.counters();
    judge.send(json!({"type": "start_recording"})).await;
    judge.until(|state| state["recording"] == true).await;
    let seen = room.counters();
    let output = publisher.await.unwrap().expect("python3 runs");
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the WHIP publisher failed:\n{log}");
    // Its DELETE took it out of the hearing.
    judge
        .until(|state| {
            state["participants"].as_array().unwrap().iter().any(|p| p["id"] == camera.as_str() && p["place"] == "away")
        })
        .await;
    let ended = room.counters();
    judge.send(json!({"type": "end"})).await;
    while judge.next().await["type"] != "ended" {}

    let view = view_after_the_minutes(&gateway, &hearing, &clerk_session).await;
    let recorded = recordings(&gateway, &view, &clerk_session).await;
    let seconds = recorded.get(&camera).map_or(0.0, |(seconds, _)| *seconds);
    let minutes = content(&gateway, view["minutes_artefact"].as_str().unwrap(), &clerk_session).await;
    let lost = audio_lost(&serde_json::from_slice(&minutes).unwrap(), &camera);
    // Judged by counts, not the clock: the audio packets recorded against those that arrived, by the room's own
    // counters. The recording holds no more than arrived from the judge asking for it to the publisher's leaving
    // (with those the recorder found lost meanwhile, in case it fills their place), and no fewer than arrived from
    // the judge seeing it start, less 3 s of waiting for the first keyframe. Nothing from its wait in the lobby.
    let at_most = audio_arrived(&asked, &ended, &camera) + lost;
    let at_least = audio_arrived(&seen, &ended, &camera);
    let recorded = audio_recorded(&recorded, &camera);
    eprintln!(
        "the WHIP publisher was recorded for {seconds:.2} s, {recorded:.2} s of audio packets; {at_least:.2} to \
         {at_most:.2} s arrived or were lost meanwhile ({lost:.2} s lost)"
    );
    assert!(recorded > 0.0, "nothing recorded; {at_least:.2} to {at_most:.2} s arrived while recording\n{log}");
    assert!(
        (at_least - 3.0..=at_most).contains(&recorded),
        "recorded {recorded:.2} s of audio, while {at_least:.2} to {at_most:.2} s arrived during the recording\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_consultation_is_relayed_among_its_members_only_and_never_recorded() {
    let Some(gateway) = gateway_for_room_peers().await else { return };
    let invites =
        [json!({"role": "judge", "admit_on_join": true}), json!({"role": "prosecutor"}), json!({"role": "witness"})];
    let (hearing, clerk_session, secrets) = open_hearing(&gateway, &invites).await;
    let port = serve_on_loopback(&gateway).await;
    let url = format!("ws://127.0.0.1:{port}/api/v1/room");
    let arguments: Vec<&str> = std::iter::once(url.as_str()).chain(secrets.iter().map(String::as_str)).collect();
    let room = room_of(&gateway, &hearing);
    let (report, log, marks) = run_peers(&room, "room_consultation.py", &arguments).await;
    // In each 5 s phase, judged by what the gateway relayed of what arrived: all of it, or none at all. The judge
    // is cut off from the consultation both ways; everyone else keeps flowing. And what was relayed could be
    // decoded: each peer decoded video from each sender it got since the phase began (after the consultation, that
    // takes the keyframe the gateway asks for when the routes change); a busy peer decodes late, so the script
    // waits for that before ending the hearing, and the frames it decodes within a phase are only reported.
    let names = ["judge", "prosecutor", "witness"];
    let mut wrong = Vec::new();
    for phase in ["hearing", "consultation", "after"] {
        for (to, from) in names.iter().flat_map(|to| names.iter().map(move |from| (*to, *from))) {
            if to == from {
                continue;
            }
            let (to_id, from_id) = (report["ids"][to].as_str().unwrap(), report["ids"][from].as_str().unwrap());
            let separated = phase == "consultation" && (to == "judge" || from == "judge");
            for kind in [MediaKind::Audio, MediaKind::Video] {
                let judged = if separated {
                    marks.cut(phase, to_id, from_id, kind)
                } else {
                    marks.flowed(phase, to_id, from_id, kind)
                };
                wrong.extend(judged.err().map(|e| format!("{e} ({from} to {to})")));
            }
            if !separated && report["decoded_since"][phase][format!("{to}<-{from}")] == 0 {
                wrong.push(format!("{phase}: {to} decoded no video from {from} since it began"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:?}\n{report}\n{log}");

    let view = view_after_the_minutes(&gateway, &hearing, &clerk_session).await;
    let recorded = recordings(&gateway, &view, &clerk_session).await;
    let seconds = |who: &str| audio_recorded(&recorded, report["ids"][who].as_str().unwrap());
    eprintln!(
        "recorded audio: judge {:.2} s, prosecutor {:.2} s, witness {:.2} s",
        seconds("judge"),
        seconds("prosecutor"),
        seconds("witness")
    );
    // Judged by the audio each peer sent between the script's steps and the packets recorded (on a busy machine a
    // peer sends less than real time), with 3 s for the first keyframe and 1 s for what was on its way: the judge
    // was recorded throughout; the consultation's members were recorded in the hearing and not for any of the
    // consultation.
    let sent = &report["sent"];
    let between = |who: &str, from: &str, to: &str| audio_sent(&sent[to][who]) - audio_sent(&sent[from][who]);
    for who in ["judge", "prosecutor", "witness"] {
        let at_most = between(who, "asked_to_record", "ended");
        let at_least = between(who, "recording_seen", "asked_to_end");
        if who == "judge" {
            assert!((at_least - 3.0..=at_most + 1.0).contains(&seconds(who)), "judge: {recorded:?}\n{sent}");
            continue;
        }
        let before = between(who, "recording_seen", "asked_for_consultation");
        let consulting = between(who, "consultation_seen", "asked_to_end_consultation");
        assert!(seconds(who) > 0.0 && seconds(who) >= before - 3.0, "{who} was not recorded in the hearing\n{sent}");
        assert!(seconds(who) <= at_most - consulting + 1.0, "{who} was recorded in the consultation\n{sent}");
    }
    let minutes = content(&gateway, view["minutes_artefact"].as_str().unwrap(), &clerk_session).await;
    let minutes: Value = serde_json::from_slice(&minutes).unwrap();
    assert_eq!(minutes["consultations"].as_array().unwrap().len(), 1, "{minutes}");
}

/// A token of the clerk's with `scopes`, valid ten minutes: its id and its secret.
async fn clerk_token(gateway: &TestGateway, session: &str, scopes: Value) -> (String, String) {
    let body = json!({ "scopes": scopes, "expires_in_seconds": 600 });
    let reply = gateway.call("POST", "/api/v1/tokens", Some(As::Session(session)), body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    (reply.json()["id"].as_str().unwrap().to_owned(), reply.json()["token"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_output_enters_custody_though_the_clerk_scheduled_with_a_token_and_left_the_case_mid_hearing() {
    if !installed("python3", &["-c", "import aiortc"]) || !installed("ffprobe", &["-version"]) {
        eprintln!("SKIPPED: aiortc or ffprobe is not installed (scripts/setup-system.sh test)");
        return;
    }
    init_logs();
    let gateway = TestGateway::start().await;
    gateway.case("case-1").await;
    let (clerk, clerk_session) = gateway.person("clerk", "IT").await;
    gateway.member("case-1", &clerk, "clerk").await;
    let (judge, judge_session) = gateway.person("judge", "IT").await;
    gateway.member("case-1", &judge, "judge").await;
    // A second clerk, so that the case keeps a clerk when the first leaves.
    let (usher, _) = gateway.person("usher", "IT").await;
    gateway.member("case-1", &usher, "clerk").await;
    let schedule = json!({"scheduled_for": "2026-12-01T09:00:00Z", "place": "Tribunale di Catania, aula 2"});

    // Running hearings is the `manage` scope's; but a token that may run hearings and not upload could not take
    // the output into custody: scheduling with it is refused up front, naming the scope it lacks.
    let (_, manage_only) = clerk_token(&gateway, &clerk_session, json!(["manage"])).await;
    gateway
        .call("POST", "/api/v1/cases/case-1/hearings", Some(As::Token(&manage_only)), schedule.clone())
        .await
        .assert_problem(403, "insufficient-scope", "write");
    let (token_id, token) = clerk_token(&gateway, &clerk_session, json!(["manage", "write"])).await;
    let reply = gateway.call("POST", "/api/v1/cases/case-1/hearings", Some(As::Token(&token)), schedule).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    let hearing = reply.json()["id"].as_str().unwrap().to_owned();
    let mut secrets = Vec::new();
    for body in [json!({"role": "judge", "admit_on_join": true}), json!({"role": "remote_site_officer"})] {
        secrets.push(invite(&gateway, &clerk_session, &hearing, body).await.1);
    }
    let open = format!("/api/v1/cases/case-1/hearings/{hearing}/open");
    let reply = gateway.call("POST", &open, Some(As::Token(&token)), json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));

    let port = serve_on_loopback(&gateway).await;
    let mut court = Console::join(&format!("ws://127.0.0.1:{port}/api/v1/room"), &secrets[0]).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recorder/tests/peers/whip_publish.py");
    let whip = format!("http://127.0.0.1:{port}/api/v1/room/whip");
    let publisher = tokio::process::Command::new("python3")
        .arg(&script)
        .args([whip.as_str(), "14", secrets[1].as_str()])
        .kill_on_drop(true)
        .output();
    let publisher = tokio::spawn(publisher);
    let in_lobby =
        |state: &Value| state["participants"].as_array().unwrap().iter().find(|p| p["place"] == "lobby").cloned();
    let state = court.until(|state| in_lobby(state).is_some()).await;
    let camera = in_lobby(&state).unwrap()["id"].as_str().unwrap().to_owned();
    court.send(json!({"type": "admit", "participant": camera})).await;
    court.send(json!({"type": "start_session"})).await;
    court.send(json!({"type": "start_recording"})).await;
    court.until(|state| state["recording"] == true).await;
    let room = room_of(&gateway, &hearing);
    let seen = room.counters();

    // The clerk who scheduled it leaves the case, and their token is revoked, while the hearing records.
    let removed =
        gateway.delete(&format!("/api/v1/cases/case-1/members/{clerk}"), Some(As::Session(&gateway.admin))).await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&removed.body));
    let revoked = gateway.delete(&format!("/api/v1/tokens/{token_id}"), Some(As::Session(&clerk_session))).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&revoked.body));
    let output = publisher.await.unwrap().expect("python3 runs");
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the WHIP publisher failed:\n{log}");
    let ended = room.counters();
    court.send(json!({"type": "end"})).await;
    while court.next().await["type"] != "ended" {}

    // Every segment and the minutes are in custody, in the name of the court account bound at scheduling: all that
    // arrived while it recorded (by the room's counters, less the wait for the first keyframe), after the revocation
    // as before it.
    let view = view_after_the_minutes(&gateway, &hearing, &judge_session).await;
    let segments = view["segments"].as_array().unwrap();
    assert!(!segments.is_empty(), "{view}");
    let recorded = recordings(&gateway, &view, &judge_session).await;
    let arrived = audio_arrived(&seen, &ended, &camera);
    let seconds = audio_recorded(&recorded, &camera);
    assert!(seconds > 0.0 && seconds >= arrived - 3.0, "recorded {recorded:?}, {arrived:.2} s arrived\n{view}");
    let minutes_id = view["minutes_artefact"].as_str().unwrap();
    let minutes: Value = serde_json::from_slice(&content(&gateway, minutes_id, &judge_session).await).unwrap();
    assert_eq!(minutes["segments"].as_array().unwrap().len(), segments.len(), "{minutes}");
    let mut registered_by = Vec::new();
    for index in 0..gateway.ledger_size() {
        let record = gateway.ledger_record(index).await;
        if record["event"]["type"] == "artefact_registered" {
            registered_by.push(record["actor"].as_str().unwrap().to_owned());
        }
        assert_ne!(record["event"]["kind"], "output_quarantined", "nothing was quarantined: {record}");
    }
    assert_eq!(registered_by.len(), segments.len() + 1, "every segment and the minutes");
    assert!(registered_by.iter().all(|actor| *actor == clerk), "{registered_by:?}");
    assert!(gateway.files_under("recordings").is_empty());
}

/// A hearing's output is the court's own record, not the storage of the clerk who scheduled it: a hearing that
/// records more than the clerk's whole quota has every segment and its minutes in custody (none refused, none
/// quarantined), and the clerk's own uploads are still held to their quota, which the recordings did not use up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hearing_recording_more_than_the_clerks_quota_is_all_in_custody_and_the_clerk_still_uploads() {
    if !installed("python3", &["-c", "import aiortc, websockets"]) || !installed("ffprobe", &["-version"]) {
        eprintln!("SKIPPED: aiortc, websockets or ffprobe is not installed (scripts/setup-system.sh test)");
        return;
    }
    const QUOTA: u64 = 20_000;
    init_logs();
    let gateway = TestGateway::start_with(|config| config.quotas.account_stored_bytes = QUOTA).await;
    gateway.case("case-1").await;
    let invites = [json!({"role": "judge", "admit_on_join": true}), json!({"role": "remote_site_officer"})];
    let (hearing, clerk_session, secrets) = open_hearing(&gateway, &invites).await;
    let port = serve_on_loopback(&gateway).await;
    let mut court = Console::join(&format!("ws://127.0.0.1:{port}/api/v1/room"), &secrets[0]).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recorder/tests/peers/whip_publish.py");
    let whip = format!("http://127.0.0.1:{port}/api/v1/room/whip");
    let publisher = tokio::process::Command::new("python3")
        .arg(&script)
        .args([whip.as_str(), "8", secrets[1].as_str()])
        .kill_on_drop(true)
        .output();
    let publisher = tokio::spawn(publisher);
    let in_lobby =
        |state: &Value| state["participants"].as_array().unwrap().iter().find(|p| p["place"] == "lobby").cloned();
    let state = court.until(|state| in_lobby(state).is_some()).await;
    let camera = in_lobby(&state).unwrap()["id"].as_str().unwrap().to_owned();
    court.send(json!({"type": "admit", "participant": camera})).await;
    court.send(json!({"type": "start_session"})).await;
    court.send(json!({"type": "start_recording"})).await;
    court.until(|state| state["recording"] == true).await;
    let output = publisher.await.unwrap().expect("python3 runs");
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the WHIP publisher failed:\n{log}");
    court.send(json!({"type": "end"})).await;
    while court.next().await["type"] != "ended" {}

    // Every segment and the minutes are in custody, though together they hold more than the clerk's quota.
    let view = view_after_the_minutes(&gateway, &hearing, &clerk_session).await;
    let segments = view["segments"].as_array().unwrap();
    assert!(!segments.is_empty(), "{view}");
    let mut recorded = 0;
    for segment in segments {
        recorded += content(&gateway, segment["artefact"].as_str().unwrap(), &clerk_session).await.len() as u64;
    }
    assert!(recorded > QUOTA, "the hearing recorded {recorded} bytes, not more than the quota of {QUOTA}");
    let mut registered = 0;
    for index in 0..gateway.ledger_size() {
        let record = gateway.ledger_record(index).await;
        registered += usize::from(record["event"]["type"] == "artefact_registered");
        assert_ne!(record["event"]["kind"], "output_quarantined", "nothing was quarantined: {record}");
    }
    assert_eq!(registered, segments.len() + 1, "every segment and the minutes");
    assert!(gateway.files_under("recordings").is_empty());

    // The clerk's own uploads are held to their quota as before: one within it is taken, one past it refused.
    let query = "purpose=statement&filename=note.txt";
    let reply = gateway.upload("case-1", query, As::Session(&clerk_session), vec![7; 1000]).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    let reply = gateway.upload("case-1", query, As::Session(&clerk_session), vec![7; QUOTA as usize]).await;
    reply.assert_problem(507, "quota-exceeded", "quota");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_client_whose_link_goes_silent_is_noticed_as_lost_and_refusals_carry_their_rule() {
    init_logs();
    let gateway = TestGateway::start().await;
    gateway.case("case-1").await;
    let invites = [json!({"role": "judge", "admit_on_join": true}), json!({"role": "witness"})];
    let (hearing, clerk_session, secrets) = open_hearing(&gateway, &invites).await;
    let port = serve_on_loopback(&gateway).await;
    let url = format!("ws://127.0.0.1:{port}/api/v1/room");
    let mut judge = Console::join(&url, &secrets[0]).await;
    let mut witness = Console::join(&url, &secrets[1]).await;
    let state = witness.until(|state| state["you"]["place"] == "lobby").await;
    let witness_id = state["you"]["id"].as_str().unwrap().to_owned();
    assert_eq!(state["you"]["media_stopped"], false, "{state}");

    // A refusal names its rule by a stable key, for the page to say it in its reader's language.
    witness.send(json!({"type": "start_recording"})).await;
    let refused = loop {
        let message = witness.next().await;
        if message["type"] == "refused" {
            break message;
        }
    };
    assert_eq!(refused["problem"], "not_admitted", "{refused}");

    // A client that pings is answered, and from then on its silence counts: this one falls silent with its socket
    // open, as behind a dead network, and the gateway lets it go as a lost connection.
    witness.send(json!({"type": "ping"})).await;
    while witness.next().await["type"] != "pong" {}
    let gone = |state: &Value| {
        state["participants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == witness_id.as_str() && p["connected"] == false)
    };
    judge.until(gone).await;
    // The judge, who never pinged, is not timed out however long they say nothing; the witness comes back.
    let uri = format!("/api/v1/cases/case-1/hearings/{hearing}");
    let view = gateway.get(&uri, Some(As::Session(&clerk_session))).await.json();
    let judge_entry = view["participants"].as_array().unwrap().iter().find(|p| p["role"] == "judge").unwrap().clone();
    assert_eq!(judge_entry["connected"], true, "{view}");
    let mut kinds = Vec::new();
    for index in 0..gateway.ledger_size() {
        let record = gateway.ledger_record(index).await;
        if record["event"]["type"] == "hearing_event" && record["event"]["hearing"] == hearing.as_str() {
            kinds.push(record["event"]["kind"].as_str().unwrap().to_owned());
        }
    }
    assert!(kinds.iter().any(|k| k == "connection_lost"), "{kinds:?}");
    drop(witness);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_have_display_names_that_stay_out_of_the_records_the_minutes_and_the_logs() {
    init_logs();
    let gateway = TestGateway::start().await;
    gateway.case("case-1").await;
    let (amina, yusuf) = ("أمينة حداد", "Yusuf Karim-Display");
    let invites = [
        json!({"role": "judge", "admit_on_join": true}),
        json!({"role": "witness", "display_name": format!("  {amina} ")}),
        json!({"role": "witness", "display_name": yusuf, "language": "fr"}),
    ];
    let (hearing, clerk_session, secrets) = open_hearing(&gateway, &invites).await;

    // A name that could pass for another (a direction override, a zero-width space, a byte order mark), an empty
    // one, a control character and one too long are refused, naming the field; a Persian name keeps its
    // zero-width non-joiner.
    let uri = format!("/api/v1/cases/case-1/hearings/{hearing}/invites");
    let body = json!({"role": "witness", "language": "arabic"});
    let reply = gateway.call("POST", &uri, Some(As::Session(&clerk_session)), body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(&reply.body));
    let persian = json!({"role": "witness", "display_name": "مهدی\u{200C}زاده"});
    let reply = gateway.call("POST", &uri, Some(As::Session(&clerk_session)), persian).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    for bad in ["Yusuf\u{202E}mirK", "Yu\u{200B}suf", "\u{FEFF}Yusuf", "   ", "Yusuf\nKarim", &"x".repeat(81)] {
        let body = json!({"role": "witness", "display_name": bad});
        let reply = gateway.call("POST", &uri, Some(As::Session(&clerk_session)), body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad:?}: {}", String::from_utf8_lossy(&reply.body));
        assert!(String::from_utf8_lossy(&reply.body).contains("display_name"), "{bad:?}");
    }
    // Debug never shows a name.
    let request: custodia_hearings::live::InviteRequest =
        serde_json::from_value(json!({"role": "witness", "display_name": yusuf})).unwrap();
    assert!(!format!("{request:?}").contains("Yusuf"), "{request:?}");

    // The court sees who is who in the lobby: the two witnesses by their names, trimmed.
    let port = serve_on_loopback(&gateway).await;
    let url = format!("ws://127.0.0.1:{port}/api/v1/room");
    let mut judge = Console::join(&url, &secrets[0]).await;
    let mut first = Console::join(&url, &secrets[1]).await;
    let _second = Console::join(&url, &secrets[2]).await;
    let names = |state: &Value| -> Vec<String> {
        let mut names: Vec<String> = state["participants"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["role"] == "witness")
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    };
    let state = judge.until(|state| names(state).len() == 2).await;
    let mut expected = vec![amina.to_owned(), yusuf.to_owned()];
    expected.sort();
    assert_eq!(names(&state), expected, "{state}");
    let view =
        gateway.get(&format!("/api/v1/cases/case-1/hearings/{hearing}"), Some(As::Session(&clerk_session))).await;
    let view = view.json();
    assert_eq!(names(&view), expected, "{view}");
    let invited: Vec<&str> = view["invites"].as_array().unwrap().iter().filter_map(|i| i["name"].as_str()).collect();
    assert_eq!(invited.len(), 3, "the two witnesses who joined and the Persian name: {view}");
    assert!(invited.contains(&"مهدی\u{200C}زاده"), "{view}");
    // A member of the case who does not run its hearings (a witness's own account, counsel, a read-only token)
    // sees which roles take part, not who is invited, by what name, or who waits where.
    let (member, member_session) = gateway.person("witness-member", "NG").await;
    gateway.member("case-1", &member, "witness").await;
    let seen =
        gateway.get(&format!("/api/v1/cases/case-1/hearings/{hearing}"), Some(As::Session(&member_session))).await;
    let seen = seen.json();
    assert_eq!(seen["invites"], json!([]), "{seen}");
    let people = seen["participants"].as_array().unwrap();
    assert!(people.len() >= 2, "{seen}");
    assert!(people.iter().all(|p| p.as_object().unwrap().keys().all(|k| k == "id" || k == "role")), "{seen}");
    assert!(!seen.to_string().contains("Yusuf") && !seen.to_string().contains(amina), "{seen}");

    // A witness in the lobby is shown the court and themselves, not who else waits or is let in.
    judge.send(json!({"type": "start_session"})).await;
    let state = first.until(|state| state["phase"] == "in_session").await;
    let shown: Vec<&str> =
        state["participants"].as_array().unwrap().iter().map(|p| p["role"].as_str().unwrap()).collect();
    assert_eq!(shown.len(), 2, "{state}");
    assert!(shown.contains(&"judge") && shown.contains(&"witness"), "{state}");
    assert_eq!(state["you"]["name"], amina, "{state}");

    // After the hearing, neither name is in the public log, the minutes or the gateway's log.
    judge.send(json!({"type": "end"})).await;
    while judge.next().await["type"] != "ended" {}
    let view = view_after_the_minutes(&gateway, &hearing, &clerk_session).await;
    let minutes = content(&gateway, view["minutes_artefact"].as_str().unwrap(), &clerk_session).await;
    let minutes = String::from_utf8_lossy(&minutes).into_owned();
    let mut records = String::new();
    for index in 0..gateway.ledger_size() {
        records.push_str(&gateway.ledger_record(index).await.to_string());
    }
    let logs = String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    for name in [amina, "Yusuf", "Karim-Display"] {
        assert!(!minutes.contains(name), "{name} in the minutes: {minutes}");
        assert!(!records.contains(name), "{name} in the public log");
        assert!(!logs.contains(name), "{name} in the gateway's log");
    }
}

/// A witness under a protective order: the judge's order (before anyone joins) masks their face and voice under a
/// pseudonym. Four aiortc peers (tests/peers/room_protection.py): the judge gets the original; the defence and an
/// observer get only what the masking pipelines make, judged by the gateway's own counters (not one packet of the
/// original forwarded to them, ever) and by what they decode (every frame far from the witness's picture, their
/// audio's spectrum moved); the order is changed to let the defence see the original, and then takes effect; the
/// masking pipelines are killed, the observer gets nothing meanwhile, and masked media comes back. Names follow the
/// order, the witness's page says which protection is active, and the minutes and the record keep every order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_witness_reaches_those_the_order_does_not_privilege_only_masked() {
    let Some(gateway) = gateway_for_room_peers().await else { return };
    if !installed("pkill", &["--version"]) {
        panic!("pkill (procps) is needed to kill the masking pipelines");
    }
    let (clerk, clerk_session) = gateway.person("clerk", "IT").await;
    gateway.member("case-1", &clerk, "clerk").await;
    let (judge, judge_session) = gateway.person("judge", "IT").await;
    gateway.member("case-1", &judge, "judge").await;
    // Counsel in the case whom the order never privileges: the witness's original recording is not theirs.
    let (prosecutor, prosecutor_session) = gateway.person("prosecutor", "IT").await;
    gateway.member("case-1", &prosecutor, "prosecutor").await;
    let schedule = json!({"scheduled_for": "2026-12-01T09:00:00Z", "place": "Tribunale di Catania, aula 2"});
    let reply =
        gateway.call("POST", "/api/v1/cases/case-1/hearings", Some(As::Session(&clerk_session)), schedule).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    let hearing = reply.json()["id"].as_str().unwrap().to_owned();
    let name = "Amina Haddad";
    let bodies = [
        json!({"role": "judge", "admit_on_join": true}),
        json!({"role": "witness", "display_name": name}),
        json!({"role": "defence", "display_name": "Avv. Rossi"}),
        json!({"role": "observer"}),
    ];
    let mut invites = Vec::new();
    for body in bodies {
        invites.push(invite(&gateway, &clerk_session, &hearing, body).await);
    }
    let protection = format!("/api/v1/cases/case-1/hearings/{hearing}/invites/{}/protection", invites[1].0);
    let order = |privileged: &[&str]| json!({"pseudonym": "Witness A", "mask_face": true, "alter_voice": true, "privileged": privileged});
    // Only the judge orders protection; the clerk who runs the hearing may not.
    let refused = gateway.call("PUT", &protection, Some(As::Session(&clerk_session)), order(&[])).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", String::from_utf8_lossy(&refused.body));
    let ordered = gateway.call("PUT", &protection, Some(As::Session(&judge_session)), order(&[])).await;
    assert_eq!(ordered.status, StatusCode::OK, "{}", String::from_utf8_lossy(&ordered.body));
    // An order naming a role twice is refused as written (OpenAPI's uniqueItems), and the order stands unchanged.
    let twice =
        gateway.call("PUT", &protection, Some(As::Session(&judge_session)), order(&["defence", "defence"])).await;
    assert_eq!(twice.status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(&twice.body));
    assert!(twice.json()["detail"].as_str().unwrap().contains("duplicate"), "{:?}", twice.json());
    let witness_order = |view: &Value| {
        let invite = view["invites"].as_array().unwrap().iter().find(|i| i["id"] == invites[1].0.as_str());
        invite.unwrap()["protection"].clone()
    };
    let shown =
        gateway.get(&format!("/api/v1/cases/case-1/hearings/{hearing}"), Some(As::Session(&judge_session))).await;
    assert_eq!(witness_order(&shown.json()), witness_order(&ordered.json()));
    assert_eq!(witness_order(&shown.json())["pseudonym"], "Witness A");
    assert!(witness_order(&shown.json()).get("privileged").is_none(), "{:?}", shown.json());
    let open = format!("/api/v1/cases/case-1/hearings/{hearing}/open");
    let reply = gateway.call("POST", &open, Some(As::Session(&clerk_session)), json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));

    let port = serve_on_loopback(&gateway).await;
    let url = format!("ws://127.0.0.1:{port}/api/v1/room");
    let mut arguments: Vec<&str> = vec![url.as_str()];
    arguments.extend(invites.iter().map(|(_, secret)| secret.as_str()));
    arguments.extend(["Witness A", name]);
    let room = room_of(&gateway, &hearing);
    let (marks_to, mut marks) = tokio::sync::mpsc::unbounded_channel();
    let change_order = async {
        while let Some(mark) = marks.recv().await {
            if mark == "change_order start" {
                let changed =
                    gateway.call("PUT", &protection, Some(As::Session(&judge_session)), order(&["defence"])).await;
                assert_eq!(changed.status, StatusCode::OK, "{}", String::from_utf8_lossy(&changed.body));
            }
        }
    };
    let ((report, log, marks), ()) =
        tokio::join!(run_peers_telling(&room, "room_protection.py", &arguments, Some(marks_to)), change_order);

    let id = |who: &str| report["ids"][who].as_str().unwrap().to_owned();
    let witness = id("witness");
    let mut wrong = Vec::new();
    // The gateway's counters: nothing of the original to whoever the order does not privilege, in any phase.
    let phases = ["protected", "change_order", "privileged", "killed", "restored"];
    for phase in phases {
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let (original, masked) = marks.original_and_masked(phase, &id("observer"), &witness, kind);
            if original > 0 {
                wrong.push(format!(
                    "{phase}: {original} packets of the witness's original {kind:?} reached the observer"
                ));
            }
            if matches!(phase, "protected" | "restored") && masked == 0 {
                wrong.push(format!("{phase}: the observer got no masked {kind:?}"));
            }
            let (original, masked) = marks.original_and_masked(phase, &id("judge"), &witness, kind);
            if masked > 0 {
                wrong.push(format!("{phase}: the judge got {masked} masked {kind:?} packets"));
            }
            if phase != "change_order" {
                wrong.extend(marks.flowed(phase, &id("judge"), &witness, kind).err());
            }
            let _ = original;
        }
        let defence = |kind| marks.original_and_masked(phase, &id("defence"), &witness, kind);
        match phase {
            "protected" => {
                for kind in [MediaKind::Audio, MediaKind::Video] {
                    if defence(kind).0 > 0 {
                        wrong.push(format!("protected: the original {kind:?} reached the defence"));
                    }
                }
            }
            "privileged" | "killed" | "restored" => {
                for kind in [MediaKind::Audio, MediaKind::Video] {
                    wrong.extend(marks.flowed(phase, &id("defence"), &witness, kind).err());
                    if defence(kind).1 > 0 {
                        wrong.push(format!("{phase}: the privileged defence still got masked {kind:?}"));
                    }
                }
            }
            _ => {}
        }
    }
    // What the peers decoded: the original is close to the witness's picture, and every masked frame far from it.
    let psnr = |phase: &str, who: &str| -> Vec<f64> {
        report[phase][who]["psnr"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
    };
    // A peer starved of CPU on a busy machine loses packets (aiortc reads them in its one Python thread and has no
    // pacer: a keyframe leaves as one burst) and decodes frames damaged by it until the next keyframe, so the
    // original is judged by the best frame the judge decoded in the hearing, and the defence's by the best of the
    // phase it is privileged in (its first frame is a keyframe: the room waits for one when it switches a track);
    // every masked frame, damaged or not, must be far from the picture. The counters above say what flowed when.
    const ORIGINAL_DB: f64 = 35.0;
    const MASKED_DB: f64 = 22.0;
    let best = |values: Vec<f64>| values.into_iter().reduce(f64::max);
    let judge =
        best(["protected", "privileged", "killed_phase", "restored"].iter().flat_map(|p| psnr(p, "judge")).collect());
    if judge.is_none_or(|db| db < ORIGINAL_DB) {
        wrong.push(format!("the judge's frames are not the witness's picture: best {judge:?} dB"));
    }
    for phase in ["protected", "privileged", "restored"] {
        let masked_receivers: &[&str] = if phase == "protected" { &["observer", "defence"] } else { &["observer"] };
        for who in masked_receivers {
            let frames = psnr(phase, who);
            if frames.is_empty() {
                wrong.push(format!("{phase}: {who} decoded no masked frame"));
            }
            if let Some(worst) = frames.iter().copied().reduce(f64::max)
                && worst > MASKED_DB
            {
                wrong.push(format!("{phase}: a frame {who} decoded is {worst:.1} dB from the witness's picture"));
            }
        }
    }
    let killed: Vec<f64> = psnr("killed_phase", "observer");
    if killed.iter().any(|db| *db > MASKED_DB) {
        wrong.push(format!("while the masking was killed the observer decoded {killed:?} dB"));
    }
    if best(psnr("privileged", "defence")).is_none_or(|db| db < ORIGINAL_DB) {
        wrong.push(format!(
            "privileged: the defence's frames are not the original: {:?}",
            psnr("privileged", "defence")
        ));
    }
    // The voice, over the whole hearing: the original's spectral centroid is the source's; the masked one's moved.
    let centroid = |who: &str| report["whole"][who]["centroid"].as_f64();
    let source = report["source_centroid"].as_f64().unwrap();
    let judge = centroid("judge");
    if judge.is_none_or(|hz| (hz - source).abs() > 0.15 * source) {
        wrong.push(format!("the judge's audio centroid {judge:?} Hz, the source's {source:.0} Hz"));
    }
    let observer = centroid("observer");
    if observer.is_none_or(|hz| (hz - source).abs() < 0.1 * source) {
        wrong.push(format!("the observer's audio centroid {observer:?} Hz is the source's {source:.0} Hz"));
    }
    // Names follow the order; the witness's page says what protects them.
    let names = &report["names"];
    assert_eq!(names["protected"], json!({"judge": name, "defence": "Witness A", "observer": "Witness A"}));
    assert_eq!(names["privileged"], json!({"judge": name, "defence": name, "observer": "Witness A"}));
    assert_eq!(report["witness_sees"], json!({"pseudonym": "Witness A", "mask_face": true, "alter_voice": true}));
    assert!(report["killed"].as_bool().unwrap(), "no masking pipeline was running to kill\n{log}");
    assert!(wrong.is_empty(), "{wrong:#?}\n{report}\n{log}");

    let view = view_after_the_minutes(&gateway, &hearing, &clerk_session).await;
    let minutes = content(&gateway, view["minutes_artefact"].as_str().unwrap(), &clerk_session).await;
    let minutes: Value = serde_json::from_slice(&minutes).unwrap();
    let orders = minutes["protection_orders"].as_array().unwrap();
    assert_eq!(orders.len(), 2, "{minutes}");
    assert_eq!(orders[1]["measures"]["privileged"], json!(["defence"]));
    assert_eq!(orders[1]["participant"], json!(witness));

    // The recording keeps the original, and only those the order privileges may have the witness's: the court may,
    // the prosecutor (not privileged) may not; everyone else's segments are the prosecutor's like any evidence.
    let segments = view["segments"].as_array().unwrap();
    let of = |who: &str| {
        let participant = json!(id(who));
        segments.iter().filter(move |s| s["participant"] == participant)
    };
    assert!(of("witness").count() > 0 && of("judge").count() > 0, "{view}");
    let fetch = |artefact: &str, session: &str| {
        let uri = format!("/api/v1/artefacts/{artefact}/content?purpose=review");
        let session = session.to_owned();
        let gateway = &gateway;
        async move { gateway.get(&uri, Some(As::Session(&session))).await.status }
    };
    for segment in of("witness") {
        let artefact = segment["artefact"].as_str().unwrap();
        assert_eq!(fetch(artefact, &clerk_session).await, StatusCode::OK, "{segment}");
        assert_eq!(fetch(artefact, &judge_session).await, StatusCode::OK, "{segment}");
        assert_eq!(fetch(artefact, &prosecutor_session).await, StatusCode::FORBIDDEN, "{segment}");
    }
    for segment in of("judge") {
        assert_eq!(fetch(segment["artefact"].as_str().unwrap(), &prosecutor_session).await, StatusCode::OK);
    }

    // For disclosure, masked copies of the witness's segments: new artefacts made from the originals, each named as
    // a derivative of its source on the record, which counsel may have; far from the original picture.
    let masked = format!("/api/v1/cases/case-1/hearings/{hearing}/masked-copies");
    let refused = gateway.call("POST", &masked, Some(As::Session(&prosecutor_session)), json!({})).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let reply = gateway.call("POST", &masked, Some(As::Session(&clerk_session)), json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    let copies = reply.json()["masked_copies"].as_array().unwrap().clone();
    assert_eq!(copies.len(), of("witness").count(), "{copies:?}");
    let dir = tempfile::tempdir().unwrap();
    for copy in &copies {
        let source = copy["source"].as_str().unwrap();
        assert!(of("witness").any(|s| s["artefact"] == json!(source)), "{copy}");
        let artefact = copy["artefact"].as_str().unwrap();
        assert_eq!(fetch(artefact, &prosecutor_session).await, StatusCode::OK, "{copy}");
        let (copy_file, original_file) =
            (dir.path().join(format!("{artefact}.webm")), dir.path().join("original.webm"));
        std::fs::write(&copy_file, content(&gateway, artefact, &clerk_session).await).unwrap();
        std::fs::write(&original_file, content(&gateway, source, &clerk_session).await).unwrap();
        let (codecs, _) = probe_media(&copy_file);
        assert!(codecs.contains(&"vp8".to_owned()) && codecs.contains(&"opus".to_owned()), "{codecs:?}");
        // A last segment cut a moment after it began may hold no picture at all: nothing to compare, and nothing
        // of the original either.
        if copy["summary"]["video_frames"] == 0 {
            let (_, original_seconds) = probe_media(&original_file);
            assert!(original_seconds < 1.0, "{copy}: no masked picture from {original_seconds} s of original");
            continue;
        }
        let psnr = psnr_between(&copy_file, &original_file);
        assert!(psnr < 22.0, "the masked copy of {source} is {psnr:.1} dB from its original");
        let timeline = gateway
            .get(&format!("/api/v1/artefacts/{artefact}/timeline?purpose=review"), Some(As::Session(&clerk_session)))
            .await
            .json();
        let derived = timeline.to_string();
        assert!(derived.contains("derivative_made") && derived.contains(source), "{timeline}");
    }
    // Asked again, the same copies: none made twice.
    let again = gateway.call("POST", &masked, Some(As::Session(&clerk_session)), json!({})).await.json();
    assert_eq!(again["masked_copies"], json!(copies));
}

/// The average PSNR (dB) of `a`'s pictures against `b`'s, by FFmpeg's own filter.
fn psnr_between(a: &Path, b: &Path) -> f64 {
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(a)
        .arg("-i")
        .arg(b)
        .args(["-lavfi", "[0:v][1:v]scale2ref[x][y];[x][y]psnr", "-f", "null", "-"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let average = log.split("average:").nth(1).and_then(|rest| rest.split_whitespace().next());
    average
        .and_then(|v| if v == "inf" { Some(f64::INFINITY) } else { v.parse().ok() })
        .unwrap_or_else(|| panic!("{log}"))
}

/// Simultaneous interpretation (tests/peers/room_interpretation.py, five aiortc peers, each with its own tone): the
/// court cannot open a channel for an interpreter not yet sworn in; once sworn, it opens one into Italian, and an
/// observer chooses it. The witness's voice is altered by a protective order for all but the court and the defence.
/// By the gateway's counters, the observer then gets the interpreter's audio as it is and every floor voice
/// through a pipeline that ducks it (the witness's through one that alters it too, never the original), the floor
/// (defence) gets the witness and not the interpreter, and the interpreter hears the floor; by what the peers
/// decoded, the observer hears the interpreter's tone in full and the floor's a fifth as loud. The interpreter's
/// recording (the channel's own sealed track) is read by ffprobe, and the minutes list the channel and who
/// interpreted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interpretation_channel_carries_the_interpreter_to_its_listeners_with_the_floor_ducked() {
    let Some(gateway) = gateway_for_room_peers().await else { return };
    let (clerk, clerk_session) = gateway.person("clerk", "IT").await;
    gateway.member("case-1", &clerk, "clerk").await;
    let (judge, judge_session) = gateway.person("judge", "IT").await;
    gateway.member("case-1", &judge, "judge").await;
    let schedule = json!({"scheduled_for": "2026-12-01T09:00:00Z", "place": "Tribunale di Catania, aula 2"});
    let reply =
        gateway.call("POST", "/api/v1/cases/case-1/hearings", Some(As::Session(&clerk_session)), schedule).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    let hearing = reply.json()["id"].as_str().unwrap().to_owned();
    let bodies = [
        json!({"role": "judge", "admit_on_join": true}),
        json!({"role": "witness"}),
        json!({"role": "interpreter"}),
        json!({"role": "defence"}),
        json!({"role": "observer"}),
    ];
    let mut invites = Vec::new();
    for body in bodies {
        invites.push(invite(&gateway, &clerk_session, &hearing, body).await);
    }
    // The witness's voice is altered for everyone but the court and the defence: the observer on the channel hears
    // it altered and ducked.
    let protection = format!("/api/v1/cases/case-1/hearings/{hearing}/invites/{}/protection", invites[1].0);
    let order = json!({"pseudonym": "Witness B", "mask_face": false, "alter_voice": true, "privileged": ["defence"]});
    let ordered = gateway.call("PUT", &protection, Some(As::Session(&judge_session)), order).await;
    assert_eq!(ordered.status, StatusCode::OK, "{}", String::from_utf8_lossy(&ordered.body));
    let open = format!("/api/v1/cases/case-1/hearings/{hearing}/open");
    let reply = gateway.call("POST", &open, Some(As::Session(&clerk_session)), json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    let port = serve_on_loopback(&gateway).await;
    let url = format!("ws://127.0.0.1:{port}/api/v1/room");
    let arguments: Vec<&str> =
        std::iter::once(url.as_str()).chain(invites.iter().map(|(_, secret)| secret.as_str())).collect();
    let room = room_of(&gateway, &hearing);
    let (report, log, marks) = run_peers(&room, "room_interpretation.py", &arguments).await;
    let id = |who: &str| report["ids"][who].as_str().unwrap().to_owned();
    let mut wrong = Vec::new();
    if report["unsworn"]["problem"] != "interpreter_not_sworn" {
        wrong.push(format!("a channel opened for an interpreter not sworn in: {}", report["unsworn"]));
    }
    let phase = "interpreted";
    let audio = MediaKind::Audio;
    wrong.extend(marks.flowed(phase, &id("observer"), &id("interpreter"), audio).err());
    wrong.extend(marks.flowed(phase, &id("observer"), &id("witness"), audio).err());
    wrong.extend(marks.flowed(phase, &id("observer"), &id("judge"), audio).err());
    wrong.extend(marks.cut(phase, &id("defence"), &id("interpreter"), audio).err());
    wrong.extend(marks.flowed(phase, &id("defence"), &id("witness"), audio).err());
    wrong.extend(marks.flowed(phase, &id("interpreter"), &id("witness"), audio).err());
    // What the gateway sent, packet by packet: the interpreter as they speak; the floor only through pipelines
    // that duck it, the witness's through one that also alters it; the defence, privileged and on the floor, the
    // witness's original.
    let expect = |to: &str, from: &str, masked: bool, ducked: bool| {
        let treated = marks.treated(phase, &id(to), &id(from), audio);
        let want = Treated {
            all: treated.all,
            masked: if masked { treated.all } else { 0 },
            ducked: if ducked { treated.all } else { 0 },
        };
        (treated != want).then(|| format!("{from} to {to}: {treated:?}, not {want:?}"))
    };
    wrong.extend(expect("observer", "interpreter", false, false));
    wrong.extend(expect("observer", "judge", false, true));
    wrong.extend(expect("observer", "witness", true, true));
    wrong.extend(expect("defence", "witness", false, false));
    wrong.extend(expect("interpreter", "witness", true, false));
    // What the listeners decoded: the observer, the interpreter's tone in full and the floor's a fifth as loud
    // (14 dB down; between 9 and 20 dB allowed), the witness's at another pitch; the defence, the witness's own
    // tone and nothing of the interpreter.
    let heard = &report[phase];
    let tone = |who: &str| report["tones"][who].as_f64().unwrap();
    let near = |dominant: &Value, hz: f64| dominant.as_f64().is_some_and(|d| (d - hz).abs() < 15.0);
    let rms = |listener: &str, sender: &str| heard[listener][sender]["rms"].as_f64().unwrap_or(0.0);
    if !near(&heard["observer"]["interpreter"]["dominant"], tone("interpreter")) {
        wrong.push(format!("the observer did not hear the interpreter's tone: {}", heard["observer"]["interpreter"]));
    }
    if !near(&heard["observer"]["judge"]["dominant"], tone("judge")) {
        wrong.push(format!("the observer did not hear the judge beneath: {}", heard["observer"]["judge"]));
    }
    if near(&heard["observer"]["witness"]["dominant"], tone("witness")) || heard["observer"]["witness"]["frames"] == 0 {
        wrong.push(format!("the observer did not hear the witness altered: {}", heard["observer"]["witness"]));
    }
    let full = rms("defence", "witness");
    for (sender, low, high) in [("interpreter", 0.6, 1.6), ("judge", 0.1, 0.35), ("witness", 0.1, 0.35)] {
        let ratio = rms("observer", sender) / full;
        if !(low..=high).contains(&ratio) {
            wrong.push(format!("the observer heard {sender} at {ratio:.2} of the floor's level, not {low}–{high}"));
        }
    }
    if !near(&heard["defence"]["witness"]["dominant"], tone("witness")) {
        wrong.push(format!("the floor did not hear the witness's tone: {}", heard["defence"]["witness"]));
    }
    if heard["defence"]["interpreter"]["frames"] != 0 {
        wrong.push(format!("the floor decoded the interpreter: {}", heard["defence"]["interpreter"]));
    }
    assert!(wrong.is_empty(), "{wrong:#?}\n{report}\n{log}");

    let view = view_after_the_minutes(&gateway, &hearing, &clerk_session).await;
    let minutes = content(&gateway, view["minutes_artefact"].as_str().unwrap(), &clerk_session).await;
    let minutes: Value = serde_json::from_slice(&minutes).unwrap();
    let channels = minutes["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 1, "{minutes}");
    assert_eq!(channels[0]["language"], "it");
    assert_eq!(channels[0]["interpreter"], json!(id("interpreter")));
    assert_eq!(channels[0]["mode"], "simultaneous");
    // The channel's own track: the interpreter's recording, sealed segment by segment, read by ffprobe.
    let interpreter = json!(id("interpreter"));
    let segment = view["segments"].as_array().unwrap().iter().find(|s| s["participant"] == interpreter);
    let segment = segment.unwrap_or_else(|| panic!("no recording of the interpreter: {view}"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("channel.webm");
    std::fs::write(&file, content(&gateway, segment["artefact"].as_str().unwrap(), &clerk_session).await).unwrap();
    let (codecs, duration) = probe_media(&file);
    assert!(codecs.contains(&"opus".to_owned()) && duration > 0.0, "{codecs:?} {duration}");
}
