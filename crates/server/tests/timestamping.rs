//! The gateway's timestamp client against real authorities: `openssl ts -reply` behind a tiny HTTP server, beside
//! authorities that are down, slow, failing or answering garbage. Only verified tokens enter the log; the others are
//! counted; the log never waits for them. A court bundle from a gateway with an authority carries the newest token
//! covering its records, and both `custodia verify` and the by-hand procedure check it (and refuse it forged).

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use custodia_ledger::{Log, LogOptions, LogSigner};
use custodia_server::timestamping::{Authority as Tsa, Timestamper};
use custodia_timestamp::CheckpointTimestamp;
use custodia_timestamp::schedule::Schedule;
use support::authority::{self, Authority, KeyKind};
use support::tsa::serve;

const ORIGIN: &str = "custodia.test/log";

/// A loopback address nobody listens on.
async fn down() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    format!("http://{address}/tsa")
}

fn tsa(url: &str, authority: &Authority) -> Tsa {
    Tsa::new(url.parse().expect("url"), authority.anchors())
}

async fn open_log(dir: &std::path::Path) -> Log {
    let signer = LogSigner::generate(ORIGIN).expect("log key");
    Log::open_local(dir, signer, LogOptions::default()).await.expect("log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_verified_tokens_enter_the_log_and_failures_are_counted_without_holding_the_log() {
    let authority = Arc::new(Authority::new(KeyKind::EcdsaP256));
    let stranger = Authority::with(KeyKind::Rsa, "Another CA", authority::Eku::CriticalTimestamping, "sha256");
    let base = serve(authority.clone()).await;
    let authorities = vec![
        tsa(&format!("{base}/tsa"), &authority),
        tsa(&format!("{base}/garbage"), &authority),
        tsa(&format!("{base}/slow"), &authority),
        tsa(&format!("{base}/failing"), &authority),
        tsa(&down().await, &authority),
        // A real token, but the operator trusts another root for this URL.
        tsa(&format!("{base}/tsa"), &stranger),
    ];
    // The slow authority holds its request until this timeout: long enough that the appends below, made while it
    // is held, finish first on a loaded machine.
    let schedule = Schedule { min_interval: Duration::from_secs(1), max_interval: Duration::from_secs(3600) };
    let timestamper = Arc::new(Timestamper::new(authorities, schedule, Duration::from_secs(20)).expect("client"));
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open_log(dir.path()).await;
    for i in 0..3u8 {
        log.append(vec![b'e', i]).await.expect("append");
    }
    let stamped = log.checkpoint().checkpoint;

    let stamping = tokio::spawn({
        let (timestamper, log) = (timestamper.clone(), log.clone());
        async move { timestamper.stamp_once(&log.into()).await }
    });
    // The log takes entries while an authority hangs.
    for i in 3..6u8 {
        log.append(vec![b'e', i]).await.expect("append while the timestamp is pending");
    }
    assert!(!stamping.is_finished(), "the slow authority is still held, yet the log went on");
    let (stamped_size, appended) = stamping.await.expect("stamping");
    assert_eq!(stamped_size, stamped.size);

    let counters = timestamper.counters();
    assert_eq!(appended.len(), 1, "one token from the one good, trusted authority");
    assert_eq!(counters.requests.load(Ordering::Relaxed), 6);
    assert_eq!(counters.recorded.load(Ordering::Relaxed), 1);
    assert_eq!(counters.refused.load(Ordering::Relaxed), 2, "garbage, and a chain to an untrusted root");
    assert_eq!(counters.unreachable.load(Ordering::Relaxed), 3, "slow, failing, down");
    assert_eq!(counters.not_recorded.load(Ordering::Relaxed), 0);

    let size = log.checkpoint().checkpoint.size;
    assert_eq!(size, 7, "six entries and the timestamp");
    let entry = log.storage().entry(appended[0], size).await.expect("entry");
    let stamp = CheckpointTimestamp::from_entry(&entry).expect("a timestamp entry");
    assert_eq!((stamp.size, stamp.root), (stamped.size, stamped.root.0), "it stamps the checkpoint of its time");
    let verified = stamp.verify(ORIGIN, &authority.anchors()).expect("the recorded token verifies");
    assert!(verified.tsa.contains("Custodia Test TSA"));
    assert!(stamp.verify(ORIGIN, &stranger.anchors()).is_err());

    // docs/verify-by-hand.md's step 3b: `openssl ts -verify` accepts the entry's token for the checkpoint it
    // stamps, under the authority's certificate, and refuses it under another's or for another size.
    let doc =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/verify-by-hand.md"))
            .expect("the by-hand document");
    let step = doc.split("```sh timestamp\n").nth(1).and_then(|block| block.split("```").next()).expect("step 3b");
    let consistency = custodia_bundle::consistency_proof_file(
        &log.storage().consistency_proof(stamped.size, size).await.expect("consistency proof"),
    );
    // The bag's records, made `at`: the first (the registration) must be below the stamped size.
    let by_hand_with = |anchor: &Authority, entry: &[u8], registration: u64, at: jiff::Timestamp| {
        let work = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(work.path().join("data/timestamp")).expect("data");
        std::fs::create_dir_all(work.path().join("data/custody")).expect("custody");
        for index in [registration, 5] {
            let record = serde_json::json!({ "at": at.to_string() }).to_string();
            std::fs::write(work.path().join(format!("data/custody/{index:012}.json")), record).expect("record");
        }
        std::fs::write(work.path().join("data/checkpoint"), log.checkpoint().note()).expect("checkpoint");
        std::fs::write(work.path().join("data/timestamp/entry.json"), entry).expect("entry");
        std::fs::write(work.path().join("data/timestamp/consistency.proof"), &consistency).expect("proof");
        let step = step.replacen(
            "TSA_ANCHOR=/path/to/the/authority/root/you/trust.pem",
            &format!("TSA_ANCHOR={}", anchor.path("ca.crt").display()),
            1,
        );
        support::run_script(&step, work.path())
    };
    let now = jiff::Timestamp::now();
    let by_hand = |anchor: &Authority, entry: &[u8]| by_hand_with(anchor, entry, 2, now);
    let (ok, said) = by_hand(&authority, &entry);
    assert!(ok && said.contains("timestamp: OK") && said.contains("existed no later than"), "{said}");
    assert!(!by_hand(&stranger, &entry).0, "another authority's certificate");
    let other_size = String::from_utf8(entry.to_vec()).expect("canonical JSON").replacen(
        &format!("\"size\":{}", stamped.size),
        &format!("\"size\":{}", stamped.size + 1),
        1,
    );
    assert!(!by_hand(&authority, other_size.as_bytes()).0, "a token does not stamp another checkpoint");
    // A token of the log before the registration says nothing of the evidence.
    let (ok, said) = by_hand_with(&authority, &entry, stamped.size, now);
    assert!(!ok && said.contains("ends before the registration, record 3"), "{said}");
    // A stamped record that says it was made an hour after the token's time contradicts it.
    let (ok, said) = by_hand_with(&authority, &entry, 2, now + jiff::SignedDuration::from_hours(1));
    assert!(!ok && said.contains("record 2 says it was made at") && said.contains("more than 300 s after"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_timestamper_stamps_new_checkpoints_but_not_its_own_entries() {
    let authority = Arc::new(Authority::new(KeyKind::Rsa));
    let base = serve(authority.clone()).await;
    let schedule = Schedule { min_interval: Duration::from_millis(50), max_interval: Duration::from_secs(3600) };
    let timestamper = Arc::new(
        Timestamper::new(vec![tsa(&format!("{base}/tsa"), &authority)], schedule, Duration::from_secs(60))
            .expect("client"),
    );
    let counters = timestamper.counters();
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open_log(dir.path()).await;
    log.append(b"first".to_vec()).await.expect("append");
    tokio::spawn(timestamper.clone().run(log.clone()));

    let recorded = |at_least: u64| {
        let counters = counters.clone();
        async move {
            while counters.recorded.load(Ordering::Relaxed) < at_least {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // The guard only stops a hang; the checks below are counts.
    let guard = Duration::from_secs(300);
    tokio::time::timeout(guard, recorded(1)).await.expect("the first checkpoint is stamped");
    log.append(b"second".to_vec()).await.expect("append");
    tokio::time::timeout(guard, recorded(2)).await.expect("the new checkpoint is stamped");

    // Every entry after the first is a timestamp or ours, and each timestamp stamps a checkpoint with a custody
    // entry the previous timestamp did not cover: the timestamper never stamps only its own entries.
    let size = log.checkpoint().checkpoint.size;
    let mut stamped_sizes = Vec::new();
    for index in 0..size {
        let entry = log.storage().entry(index, size).await.expect("entry");
        if let Ok(stamp) = CheckpointTimestamp::from_entry(&entry) {
            stamp.verify(ORIGIN, &authority.anchors()).expect("verifies");
            stamped_sizes.push(stamp.size);
        }
    }
    assert_eq!(stamped_sizes, vec![1, 3], "the first entry, then the second (after the first timestamp)");
    assert_eq!(counters.requests.load(Ordering::Relaxed), 2, "no request for a log that only grew by its timestamp");
}

/// A small ETSI TS 119 612 trusted list naming `certificate` (PEM) as one service of `kind`, with `status`.
fn trusted_list(certificate: &std::path::Path, kind: &str, status: &str) -> String {
    let pem = std::fs::read_to_string(certificate).expect("certificate");
    let base64: String = pem.lines().filter(|line| !line.starts_with("-----")).collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<TrustServiceStatusList xmlns="http://uri.etsi.org/02231/v2#" TSLTag="http://uri.etsi.org/19612/TSLTag">
  <SchemeInformation><TSLVersionIdentifier>5</TSLVersionIdentifier><SchemeTerritory>XT</SchemeTerritory></SchemeInformation>
  <TrustServiceProviderList>
    <TrustServiceProvider>
      <TSPInformation><TSPName><Name xml:lang="en">Custodia Test Trust Services</Name></TSPName></TSPInformation>
      <TSPServices>
        <TSPService>
          <ServiceInformation>
            <ServiceTypeIdentifier>{kind}</ServiceTypeIdentifier>
            <ServiceName><Name xml:lang="en">Custodia Test QTST</Name></ServiceName>
            <ServiceDigitalIdentity><DigitalId><X509Certificate>{base64}</X509Certificate></DigitalId></ServiceDigitalIdentity>
            <ServiceStatus>{status}</ServiceStatus>
            <StatusStartingTime>2026-01-01T00:00:00Z</StatusStartingTime>
          </ServiceInformation>
        </TSPService>
      </TSPServices>
    </TrustServiceProvider>
  </TrustServiceProviderList>
</TrustServiceStatusList>
"#
    )
}

const QTST: &str = "http://uri.etsi.org/TrstSvc/Svctype/TSA/QTST";
const GRANTED: &str = "http://uri.etsi.org/TrstSvc/TrustedList/Svcstatus/granted";
const WITHDRAWN: &str = "http://uri.etsi.org/TrstSvc/TrustedList/Svcstatus/withdrawn";

/// `custodia verify` on `bundle` with `args`: its exit code and what it said.
fn cli_verify(bundle: &[u8], args: &[std::ffi::OsString]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bundle.tar");
    std::fs::write(&file, bundle).expect("bundle");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_custodia"))
        .arg("verify")
        .arg(&file)
        .args(args)
        .output()
        .expect("custodia verify");
    (run.status.code(), format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_carries_the_token_covering_its_records_and_both_verifiers_check_it() {
    let authority = Arc::new(Authority::new(KeyKind::EcdsaP256));
    let stranger = Authority::with(KeyKind::EcdsaP256, "Another CA", authority::Eku::CriticalTimestamping, "sha256");
    let (gw, session, bundle) = support::tsa::timestamped_export(authority.clone()).await;
    let files = support::tar_files(&bundle);
    assert!(files.iter().any(|(path, _, _)| path.ends_with("/data/timestamp/entry.json")), "{files:?}");

    let key = gw.verifier().to_string();
    let key_args = ["--trusted-key", key.as_str()].map(std::ffi::OsStr::new);
    let with = |extra: &[&std::ffi::OsStr]| -> Vec<std::ffi::OsString> {
        key_args.iter().chain(extra).map(|arg| arg.to_os_string()).collect()
    };
    let anchor = authority.path("ca.crt");
    let flag = std::ffi::OsStr::new;

    // Under the authority's root: VALID, with the time and the authority, not qualified without a trusted list.
    let (code, said) = cli_verify(&bundle, &with(&[flag("--tsa-anchor"), anchor.as_os_str()]));
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("\nVALID"), "{said}");
    let line = said.lines().find(|line| line.starts_with("Timestamp: ")).expect("a Timestamp line");
    assert!(line.contains("existed no later than 20") && line.contains(" UTC per "), "{line}");
    assert!(line.contains("Custodia Test TSA") && line.contains("(not qualified: no --trusted-list given)"), "{line}");
    // Without an anchor: present, unchecked, and not a failure.
    let (code, said) = cli_verify(&bundle, &with(&[]));
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("unchecked (no --tsa-anchor given"), "{said}");

    // A trusted list naming the authority's certificate as a granted QTST: qualified, its certificate the anchor.
    let lists = tempfile::tempdir().expect("temp dir");
    let list = |name: &str, kind: &str, status: &str| {
        let path = lists.path().join(name);
        std::fs::write(&path, trusted_list(&authority.path("tsa.crt"), kind, status)).expect("list");
        path
    };
    let granted = list("granted.xml", QTST, GRANTED);
    let (code, said) = cli_verify(&bundle, &with(&[flag("--trusted-list"), granted.as_os_str()]));
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains(
            "(qualified: its authority is the granted QTST service Custodia Test QTST of the trusted list of XT)"
        ),
        "{said}"
    );
    let (code, said) = cli_verify(
        &bundle,
        &with(&[flag("--tsa-anchor"), anchor.as_os_str(), flag("--trusted-list"), granted.as_os_str()]),
    );
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("(qualified: "), "{said}");
    // Withdrawn: still a valid timestamp, not qualified.
    let withdrawn = list("withdrawn.xml", QTST, WITHDRAWN);
    let (code, said) = cli_verify(
        &bundle,
        &with(&[flag("--tsa-anchor"), anchor.as_os_str(), flag("--trusted-list"), withdrawn.as_os_str()]),
    );
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains(
            "(not qualified: its QTST service Custodia Test QTST in the trusted list of XT is withdrawn, not granted)"
        ),
        "{said}"
    );

    // A list with no time-stamping service: nothing to anchor the token to, so it is reported unchecked.
    let no_qtst = list("ca-only.xml", "http://uri.etsi.org/TrstSvc/Svctype/CA/QC", GRANTED);
    let (code, said) = cli_verify(&bundle, &with(&[flag("--trusted-list"), no_qtst.as_os_str()]));
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("unchecked (no --tsa-anchor given, and the trusted lists name no QTST certificate"),
        "{said}"
    );

    // Another authority's root: NOT VALID, and why.
    let (code, said) = cli_verify(&bundle, &with(&[flag("--tsa-anchor"), stranger.path("ca.crt").as_os_str()]));
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("FAIL trusted time (RFC 3161 timestamp): the token of timestamp entry"), "{said}");
    assert!(
        said.contains("no chain from") && said.contains("NOT VALID: trusted time (RFC 3161 timestamp) failed"),
        "{said}"
    );

    // A token altered in the entry (bag checksums made afresh): it is no longer the entry the log holds.
    let token_edited = support::tsa::timestamp_token_forged(&bundle);
    let (code, said) = cli_verify(&token_edited, &with(&[flag("--tsa-anchor"), anchor.as_os_str()]));
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("FAIL trusted time (RFC 3161 timestamp): data/timestamp/entry.proof: "), "{said}");
    // A consistency proof that does not hold.
    let proof_broken = support::tsa::timestamp_proof_broken(&bundle);
    let (code, said) = cli_verify(&proof_broken, &with(&[flag("--tsa-anchor"), anchor.as_os_str()]));
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("data/timestamp/consistency.proof does not prove that the stamped checkpoint"), "{said}");

    // A case bundle: each artefact bag in it carries its own token, checked like an artefact bundle's.
    let reply = gw
        .call(
            "POST",
            "/api/v1/cases/case-t/exports?purpose=disclosure",
            Some(support::As::Session(&session)),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(reply.status.as_u16(), 200, "{}", String::from_utf8_lossy(&reply.body));
    let (code, said) = cli_verify(&reply.body, &with(&[flag("--tsa-anchor"), anchor.as_os_str()]));
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("ok   trusted time (RFC 3161 timestamp): art-") && said.contains("existed no later than"),
        "{said}"
    );
    let (code, said) = cli_verify(&reply.body, &with(&[flag("--tsa-anchor"), stranger.path("ca.crt").as_os_str()]));
    assert_eq!(code, Some(1), "{said}");

    // Hostile trusted lists: refused with a reason, nothing checked (exit 2).
    let not_xml = lists.path().join("not.xml");
    std::fs::write(&not_xml, b"\x00\x01 not a list").expect("write");
    let (code, said) = cli_verify(&bundle, &with(&[flag("--trusted-list"), not_xml.as_os_str()]));
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("--trusted-list") && said.contains("could not be read, so nothing was checked"), "{said}");
    let deep = lists.path().join("deep.xml");
    std::fs::write(&deep, format!("{}{}", "<a>".repeat(100_000), "</a>".repeat(100_000))).expect("write");
    let (code, said) = cli_verify(&bundle, &with(&[flag("--trusted-list"), deep.as_os_str()]));
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("nest more than 64 deep"), "{said}");
    let huge = lists.path().join("huge.xml");
    std::fs::write(&huge, vec![b' '; custodia_bundle::MAX_TRUSTED_LIST_BYTES + 10]).expect("write");
    let (code, said) = cli_verify(&bundle, &with(&[flag("--trusted-list"), huge.as_os_str()]));
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("it is larger than"), "{said}");
}

/// Tokens the gateway never records (it verifies each first), put straight into its log as someone with its storage
/// could: one over other bytes, and one whose signature was altered. The bag carries the newest token covering its
/// records, and `custodia verify` refuses each: the imprint with or without an anchor, the signature under one. A
/// bag exported before any token is refused under an anchor too: trusted time was asked for and there is none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_other_bytes_or_with_an_altered_signature_makes_the_bundle_invalid() {
    use support::As;
    use support::tsa::Forgery;
    let authority = Arc::new(Authority::new(KeyKind::EcdsaP256));
    let (gw, session, artefact) = support::tsa::gateway_with_a_silent_authority(authority.clone()).await;
    let key = gw.verifier().to_string();
    let anchor = authority.path("ca.crt");
    let args = ["--trusted-key".into(), key.clone().into(), "--tsa-anchor".into(), anchor.clone().into_os_string()];
    // Before any token: a reader who asks for trusted time with an anchor is told there is none, and the bundle is
    // not valid; one who does not ask is told it has none.
    let export = format!("/api/v1/artefacts/{artefact}/exports?purpose=disclosure");
    let reply = gw.call("POST", &export, Some(As::Session(&session)), serde_json::json!({})).await;
    assert_eq!(reply.status.as_u16(), 200);
    let (code, said) = cli_verify(&reply.body, &args);
    assert_eq!(code, Some(1), "no token, an anchor given: {said}");
    assert!(said.contains("carries no RFC 3161 timestamp token") && said.contains("--tsa-anchor"), "{said}");
    let (code, said) = cli_verify(&reply.body, &args[..2]);
    assert_eq!(code, Some(0), "no token, no anchor: {said}");
    assert!(said.contains("Timestamp: none"), "{said}");
    for (forgery, refused) in [
        (Forgery::OtherBytes, "its imprint is not the SHA-256 of the stamped checkpoint"),
        (Forgery::AlteredSignature, "does not verify: the token's signature does not verify"),
    ] {
        let index = support::tsa::append_forged_stamp(&gw, &authority, forgery).await;
        let export = format!("/api/v1/artefacts/{artefact}/exports?purpose=disclosure");
        let reply = gw.call("POST", &export, Some(As::Session(&session)), serde_json::json!({})).await;
        assert_eq!(reply.status.as_u16(), 200);
        let (code, said) = cli_verify(&reply.body, &args);
        assert_eq!(code, Some(1), "{forgery:?}: {said}");
        assert!(said.contains(&format!("entry {index}")) && said.contains(refused), "{forgery:?}: {said}");
        assert!(said.contains("NOT VALID: trusted time (RFC 3161 timestamp) failed"), "{forgery:?}: {said}");
        let (code, said) = cli_verify(&reply.body, &args[..2]);
        if forgery == Forgery::OtherBytes {
            assert_eq!(code, Some(1), "{forgery:?}, without an anchor: {said}");
        } else {
            assert_eq!(code, Some(0), "{forgery:?}, without an anchor, is unchecked: {said}");
            assert!(said.contains("unchecked (no --tsa-anchor given"), "{said}");
        }
    }
}

/// A gateway whose clock ran an hour ahead wrote a record that says it was made after the time of a token that
/// stamps it: a contradiction, so the bundle is not valid, and the verifier names the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_dated_after_the_token_that_stamps_it_makes_the_bundle_invalid() {
    use support::As;
    use support::tsa::Forgery;
    let authority = Arc::new(Authority::new(KeyKind::Rsa));
    let (gw, session, artefact) = support::tsa::gateway_with_a_silent_authority(authority.clone()).await;
    let key = gw.verifier().to_string();
    let args = ["--trusted-key".into(), key.into(), "--tsa-anchor".into(), authority.path("ca.crt").into_os_string()];
    let export = format!("/api/v1/artefacts/{artefact}/exports?purpose=disclosure");
    let punctual = support::tsa::append_forged_stamp(&gw, &authority, Forgery::Genuine).await;
    let reply = gw.call("POST", &export, Some(As::Session(&session)), serde_json::json!({})).await;
    assert_eq!(reply.status.as_u16(), 200);
    let (code, said) = cli_verify(&reply.body, &args);
    assert_eq!(code, Some(0), "a clock in step, timestamp entry {punctual}: {said}");

    gw.clock.advance(3600);
    let reply = gw.call("POST", &export, Some(As::Session(&session)), serde_json::json!({})).await;
    assert_eq!(reply.status.as_u16(), 200);
    let ahead = support::tsa::append_forged_stamp(&gw, &authority, Forgery::Genuine).await;
    let reply = gw.call("POST", &export, Some(As::Session(&session)), serde_json::json!({})).await;
    assert_eq!(reply.status.as_u16(), 200);
    let (code, said) = cli_verify(&reply.body, &args);
    assert_eq!(code, Some(1), "timestamp entry {ahead}: {said}");
    assert!(said.contains("after the token's time") && said.contains("the gateway's clock ran ahead"), "{said}");
}
