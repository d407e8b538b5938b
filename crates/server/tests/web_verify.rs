//! The browser's bundle checker (`/verify`, web/src/lib/bundle.js) against the Rust verifier
//! (`custodia_bundle::verify`), on the same bundles: exported by a gateway (a plain file, a real WebM recording,
//! a case bundle, a larger file), and tampered copies of them (a byte flipped in the payload, a custody record,
//! the manifest, its signature, a proof, the checkpoint; a record dropped with the bag's checksums made afresh;
//! a bundle cut short; a key that is not the trusted one; a record's opening changed, emptied or swapped with
//! another record's, with the bag's checksums made afresh; case bundles forged with fresh BagIt checksums, with an
//! artefact withheld, swapped or added, or the case export record's opening edited or a second one added; small
//! files past the verifiers' memory limit; a hearing's bundle relabelled as the whole case, or its listing's scope
//! edited; data after the tar's end-of-archive marker, in a bundle or in a case bundle's artefact bundle; a
//! bag-info.txt whose Payload-Oxum is wrong, with a field added or one given twice), a hearing's bundle, whose
//! scope both must name, a bundle checked with no key pinned ("not verified: unknown signer",
//! never VALID) and with a mistyped key (malformed, not "another key"); a bundle from a gateway a real second
//! gateway witnesses, under the pinned witness policy, under its own, under one whose quorum it does not meet, with
//! a forged, a duplicated and a wrong-key cosignature, and with a mistyped policy; a bundle from a gateway whose log a
//! real Time-Stamp Authority stamps, and copies with its consistency proof or its token changed. Both must reach the same verdict and blame
//! the same parts. The page is the one embedded in the binary, served over HTTP and driven in headless Chromium
//! (web/tests/verify.mjs, playwright-core); it must not send anything while it checks.
//!
//! Needs node, npm, ffmpeg and chromium (`scripts/setup-system.sh test`); it fails, never skips, without them.
//! Screenshots of a valid and an invalid verdict are written to target/web-screenshots/.
//! `CUSTODIA_WEB_VERIFY_MIB` sets the size of the larger bundle (default 16 MiB), to time the browser on more.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use axum::http::header;
use custodia_bundle::{BundleWriter, Part, Verdict};
use serde_json::{Value, json};
use support::{As, TestGateway, drop_report_lines, rebagged, retagged, tar_files};

const SETUP: &str = "run scripts/setup-system.sh test to install nodejs, npm, ffmpeg and chromium";

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Runs a command to completion, or kills it and fails after `limit`.
fn run(command: &mut Command, limit: Duration) -> Output {
    support::run_for(command, limit, SETUP)
}

/// The pinned playwright-core and noble libraries, installed unless they already are.
fn install_web_packages() {
    support::npm_ci(&web_dir(), "node_modules/playwright-core/package.json", SETUP);
}

fn part_key(part: Part) -> &'static str {
    match part {
        Part::Bag => "bag",
        Part::PayloadHash => "payload_hash",
        Part::ManifestSignature => "manifest_signature",
        Part::TrustedKey => "trusted_key",
        Part::Checkpoint => "checkpoint",
        Part::Witnesses => "witnesses",
        Part::InclusionProof => "inclusion_proof",
        Part::CustodyHistory => "custody_history",
        Part::Openings => "openings",
        Part::CaseContents => "case_contents",
        Part::Timestamp => "timestamp",
        Part::Report => "report",
        Part::ProviderChain => "provider_chain",
    }
}

/// A bundle to check, what the Rust verifier made of it, and what the browser must therefore say.
struct Case {
    name: String,
    path: PathBuf,
    trusted: Option<String>,
    /// A witness policy pinned, as text.
    policy: Option<String>,
    screenshot: bool,
    /// "valid", "invalid" (with the failed parts) or "error" (not readable as a bundle at all).
    rust_verdict: &'static str,
    rust_failed: BTreeSet<String>,
    rust_seconds: f64,
    size: u64,
}

fn rust_verdict(path: &Path, trusted: Option<&str>, policy: Option<&str>) -> (&'static str, BTreeSet<String>, f64) {
    let Ok(keys) = trusted.iter().map(|key| key.parse()).collect::<Result<Vec<custodia_ledger::LogVerifier>, _>>()
    else {
        return ("pin-malformed", BTreeSet::new(), 0.0);
    };
    let Ok(policy) = policy.map(custodia_witness::Policy::parse).transpose() else {
        return ("policy-malformed", BTreeSet::new(), 0.0);
    };
    let started = Instant::now();
    let file = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path).unwrap());
    let pins = custodia_bundle::Pins { keys: &keys, policy: policy.as_ref(), time: None };
    let result = custodia_bundle::verify_pinned(file, &pins, custodia_bundle::Limits::default());
    let seconds = started.elapsed().as_secs_f64();
    let failed = |report: &custodia_bundle::Verification| {
        report.failed_parts().into_iter().map(|p| part_key(p).to_owned()).collect()
    };
    match result {
        Ok(report) => match report.verdict() {
            Verdict::Valid => ("valid", BTreeSet::new(), seconds),
            Verdict::UnknownSigner => ("unknown-signer", failed(&report), seconds),
            Verdict::Invalid => ("invalid", failed(&report), seconds),
        },
        Err(_) => ("error", BTreeSet::from(["bag".to_owned()]), seconds),
    }
}

/// A tar of small files under one bag directory that together exceed what a verifier keeps, and no bag files.
fn too_many_small_files() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let chunk = vec![b'x'; 1 << 20];
    let files = (custodia_bundle::MAX_KEPT_BYTES >> 20) as usize + 2;
    for i in 0..files {
        let mut header = tar::Header::new_ustar();
        header.set_size(chunk.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, format!("custodia-bundle-x/data/custody/{i:012}.json"), &chunk[..]).unwrap();
    }
    builder.into_inner().unwrap()
}

/// A tar whose first entry is a PAX extended header that says it is 100 MiB long: both verifiers must refuse it
/// before reading it (the bytes are not even there).
fn oversized_pax_header() -> Vec<u8> {
    let mut header = tar::Header::new_ustar();
    header.set_path("custodia-bundle-x/PaxHeaders/x").unwrap();
    header.set_entry_type(tar::EntryType::XHeader);
    header.set_size(100 << 20);
    header.set_mode(0o644);
    header.set_cksum();
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(&[0; 4096]);
    out
}

/// A copy of `bundle` with one byte flipped, `at` bytes into the last file whose path contains `file`.
fn flipped(bundle: &[u8], file: &str, at: impl Fn(u64) -> u64) -> Vec<u8> {
    let (path, start, size) = tar_files(bundle)
        .into_iter()
        .rev()
        .find(|(path, _, _)| path.contains(file))
        .unwrap_or_else(|| panic!("no {file} in the bundle"));
    let offset = at(size);
    assert!(offset < size, "{path} has {size} bytes");
    let mut copy = bundle.to_vec();
    copy[(start + offset) as usize] ^= 0x01;
    copy
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

/// A short real WebM (VP8 and Opus), made by the ffmpeg command-line tool.
fn webm(dir: &Path) -> Vec<u8> {
    let file = dir.join("statement.webm");
    let output = run(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
            .arg("testsrc=duration=2:size=320x240:rate=15")
            .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:v", "libvpx", "-c:a", "libopus"])
            .arg("-shortest")
            .arg(&file),
        Duration::from_secs(120),
    );
    assert!(output.status.success(), "ffmpeg failed: {}; {SETUP}", String::from_utf8_lossy(&output.stderr));
    std::fs::read(&file).unwrap()
}

async fn upload(gw: &TestGateway, session: &str, case: &str, name: &str, bytes: Vec<u8>) -> String {
    let reply =
        gw.upload(case, &format!("purpose=statement%20intake&filename={name}"), As::Session(session), bytes).await;
    assert_eq!(reply.status.as_u16(), 201, "{}", String::from_utf8_lossy(&reply.body));
    reply.json()["artefact"].as_str().unwrap().to_owned()
}

async fn export_case(gw: &TestGateway, session: &str, case: &str) -> Vec<u8> {
    let uri = format!("/api/v1/cases/{case}/exports?purpose=disclosure");
    let reply = gw.call("POST", &uri, Some(As::Session(session)), json!({})).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", String::from_utf8_lossy(&reply.body));
    reply.body
}

/// A hearing of `case` scheduled, opened and closed by the clerk, and its bundle once its minutes are in custody,
/// exported by the member of `session`; with the hearing's id.
async fn export_hearing(gw: &TestGateway, clerk_session: &str, session: &str, case: &str) -> (String, Vec<u8>) {
    let clerk = Some(As::Session(clerk_session));
    let body = json!({ "scheduled_for": "2026-12-01T09:00:00Z", "place": "Tribunale di Catania, aula 2" });
    let hearing = gw.call("POST", &format!("/api/v1/cases/{case}/hearings"), clerk, body).await.json();
    let id = hearing["id"].as_str().unwrap().to_owned();
    let uri = format!("/api/v1/cases/{case}/hearings/{id}");
    assert_eq!(gw.call("POST", &format!("{uri}/open"), clerk, json!({})).await.status, 200);
    assert_eq!(gw.call("POST", &format!("{uri}/close"), clerk, json!({})).await.status, 200);
    for _ in 0..300 {
        if gw.get(&uri, Some(As::Session(session))).await.json()["minutes_artefact"].is_string() {
            let export = format!("{uri}/exports?purpose=disclosure");
            let reply = gw.call("POST", &export, Some(As::Session(session)), json!({})).await;
            assert_eq!(reply.status.as_u16(), 200, "{}", String::from_utf8_lossy(&reply.body));
            return (id, reply.body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the hearing's minutes never entered custody");
}

/// A tar of `files` (path, bytes), ended by the end-of-archive marker.
fn tar_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, path, bytes.as_slice()).unwrap();
    }
    builder.into_inner().unwrap()
}

/// `bundle` with a small tar of one file appended after its end-of-archive marker.
fn smuggled(bundle: &[u8]) -> Vec<u8> {
    let mut out = bundle.to_vec();
    out.extend_from_slice(&tar_of(&[("x/data/hidden.txt".into(), b"found by tar -i".to_vec())]));
    out
}

async fn export(gw: &TestGateway, session: &str, artefact: &str) -> Vec<u8> {
    let uri = format!("/api/v1/artefacts/{artefact}/exports?purpose=disclosure%20to%20the%20court");
    let reply = gw.call("POST", &uri, Some(As::Session(session)), json!({})).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", String::from_utf8_lossy(&reply.body));
    reply.body
}

/// A bundle from a gateway whose log a real second gateway witnesses (its policy: that witness, required), with the
/// policy and the gateway's key; the witness process is stopped once the bundle is made.
async fn witnessed_bundle(work: &Path) -> (Vec<u8>, String, String) {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let secret = |dir: &Path, file: &str, text: &str| {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).unwrap();
        let mut out =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dir.join(file)).unwrap();
        writeln!(out, "{text}").unwrap();
    };
    let log = custodia_ledger::LogSigner::generate("witnessed.custodia.test/log").unwrap();
    let cosigner = custodia_witness::CosignerKey::generate("w.custodia.test/witness").unwrap();
    let witness_dir = tempfile::tempdir().unwrap();
    secret(&witness_dir.path().join("keys"), "witness.key", &cosigner.expose_secret());
    let port = support::free_port();
    let policy = format!(
        "log {}\nwitness w {} http://127.0.0.1:{port}/witness\nquorum w\n",
        log.verifier(),
        cosigner.verifier()
    );
    let policy_file = work.join("witness-policy");
    std::fs::write(&policy_file, &policy).unwrap();
    let gw = TestGateway::start_with(|config| {
        config.gateway.origin = "witnessed.custodia.test/log".into();
        secret(&config.gateway.data_dir.join("keys"), "gateway.key", log.expose_secret());
        config.witness.policy_file = Some(policy_file.clone());
        config.witness.export_wait_seconds = 600;
    })
    .await;
    let logs_file = work.join("witnessed-logs");
    std::fs::write(&logs_file, format!("log {}\n", log.verifier())).unwrap();
    let env = [("CUSTODIA_ORIGIN", "w.custodia.test/log".as_ref()), ("CUSTODIA_WITNESSED_LOGS", logs_file.as_os_str())];
    let witness = support::spawn_gateway_on(witness_dir.path(), &env, None, port);
    let (prosecutor, session) = gw.person("prosecutor1", "IT").await;
    gw.case("case-witnessed").await;
    gw.member("case-witnessed", &prosecutor, "prosecutor").await;
    let id = upload(&gw, &session, "case-witnessed", "witnessed.bin", payload(5000)).await;
    let bundle = export(&gw, &session, &id).await;
    drop(witness);
    (bundle, policy, log.verifier().to_string())
}

/// `bundle` with every copy of its checkpoint's cosignature line by `key_name` replaced by what `edit` makes of it
/// (in data/checkpoint and in each proof), and fresh BagIt checksums.
fn cosignature_edited(bundle: &[u8], key_name: &str, edit: impl Fn(&str) -> String) -> Vec<u8> {
    rebagged(bundle, |bag| {
        let custody = std::fs::read_dir(bag.join("data/custody")).unwrap().map(|entry| entry.unwrap().path());
        let proofs = custody.filter(|path| path.extension().is_some_and(|ext| ext == "proof"));
        for path in proofs.chain([bag.join("data/checkpoint")]) {
            let text = std::fs::read_to_string(&path).unwrap();
            let line = text.lines().find(|line| line.starts_with(&format!("\u{2014} {key_name} "))).unwrap().to_owned();
            std::fs::write(&path, text.replace(&line, &edit(&line))).unwrap();
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_and_the_rust_verifier_agree_on_every_bundle() {
    // What must be there, checked first so that a missing tool fails with what to run.
    let node = run(Command::new("node").arg("--version"), Duration::from_secs(30));
    assert!(node.status.success(), "node does not run; {SETUP}");
    assert!(chromium().is_file(), "{} is missing; {SETUP}", chromium().display());
    install_web_packages();

    let gw = TestGateway::start().await;
    let (prosecutor, session) = gw.person("prosecutor1", "IT").await;
    let (clerk, clerk_session) = gw.person("clerk1", "IT").await;
    gw.case("case-w").await;
    gw.member("case-w", &prosecutor, "prosecutor").await;
    gw.member("case-w", &clerk, "clerk").await;
    let work = tempfile::tempdir().unwrap();

    // The page as the binary serves it.
    let page = gw.get("/verify", None).await;
    assert_eq!(page.status.as_u16(), 200);
    assert_eq!(page.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(page.headers[header::CONTENT_SECURITY_POLICY], custodia_server::web::CONTENT_SECURITY_POLICY);
    assert_eq!(page.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(page.headers[header::REFERRER_POLICY], "no-referrer");
    assert!(page.headers["permissions-policy"].to_str().unwrap().contains("camera=(self), microphone=(self)"));
    let html = String::from_utf8(page.body).unwrap();
    assert!(!html.contains("<script>") && !html.contains("style=") && !html.contains("<style"), "inline code");
    let script = gw.get("/verify.js", None).await;
    assert_eq!(script.headers[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
    gw.get("/api/v1/no-such-thing", None).await.assert_problem(404, "not-found", "no such endpoint");
    gw.get("/log/not-a-tile", None).await.assert_problem(404, "not-found", "");
    gw.get("/no-such-page", None).await.assert_problem(404, "not-found", "no such endpoint");

    // Good bundles.
    let plain_id = upload(&gw, &session, "case-w", "statement.bin", payload(200_000)).await;
    let read = gw
        .get(&format!("/api/v1/artefacts/{plain_id}/content?purpose=trial%20preparation"), Some(As::Session(&session)))
        .await;
    assert_eq!(read.status.as_u16(), 200);
    // A witness refused the download by their role: the plain bundle's history holds a refusal whose action is
    // committed, so both verifiers check that opening too.
    let (witness, witness_session) = gw.person("witness1", "NG").await;
    gw.member("case-w", &witness, "witness").await;
    let refused = format!("/api/v1/artefacts/{plain_id}/content?purpose=my%20statement");
    gw.get(&refused, Some(As::Session(&witness_session))).await.assert_problem(403, "role-forbidden", "");
    let plain = export(&gw, &session, &plain_id).await;
    let webm_id = upload(&gw, &session, "case-w", "statement.webm", webm(work.path())).await;
    let webm = export(&gw, &session, &webm_id).await;
    let mib: usize = std::env::var("CUSTODIA_WEB_VERIFY_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let large_id = upload(&gw, &session, "case-w", "large.bin", payload(mib << 20)).await;
    let large = export(&gw, &session, &large_id).await;
    let case_bundle = export_case(&gw, &session, "case-w").await;
    // Forged case bundles, each with fresh BagIt checksums: an artefact withheld (and its REPORT.txt line gone), one
    // swapped for its bundle from a later export, one added from that later export.
    let later_id = upload(&gw, &session, "case-w", "later.bin", payload(3000)).await;
    let later_case = export_case(&gw, &session, "case-w").await;
    let later_dir = tempfile::tempdir().unwrap();
    tar::Archive::new(later_case.as_slice()).unpack(later_dir.path()).unwrap();
    let later_bag = std::fs::read_dir(later_dir.path()).unwrap().next().unwrap().unwrap().path();
    let later_inner = |artefact: &str| later_bag.join(format!("data/bundles/{artefact}"));
    let withheld = rebagged(&case_bundle, |bag| {
        std::fs::remove_dir_all(bag.join(format!("data/bundles/{webm_id}"))).unwrap();
        drop_report_lines(bag, &webm_id);
    });
    let swapped = rebagged(&case_bundle, |bag| {
        let dir = bag.join(format!("data/bundles/{plain_id}"));
        std::fs::remove_dir_all(&dir).unwrap();
        support::copy_tree(&later_inner(&plain_id), &dir);
    });
    let added = rebagged(&case_bundle, |bag| {
        support::copy_tree(&later_inner(&later_id), &bag.join(format!("data/bundles/{later_id}")));
    });
    // The case export record's opening: its purpose edited, or a second opening slipped in beside it.
    let case_opening = |bag: &Path| {
        std::fs::read_dir(bag.join("data/custody"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|path| path.to_string_lossy().ends_with(".opening.json"))
            .unwrap()
    };
    let case_opening_edited = rebagged(&case_bundle, |bag| {
        let path = case_opening(bag);
        let mut openings = custodia_core::Openings::from_canonical(&std::fs::read(&path).unwrap()).unwrap();
        let purpose = openings.get("purpose").unwrap().clone();
        openings.insert("purpose", custodia_core::Opening { text: format!("{} (edited)", purpose.text), ..purpose });
        std::fs::write(&path, openings.to_canonical()).unwrap();
    });
    let case_opening_added = rebagged(&case_bundle, |bag| {
        std::fs::copy(case_opening(bag), bag.join("data/custody/000000000001.opening.json")).unwrap();
    });
    // A hearing's bundle, and copies of it relabelled as the whole case (bag-info.txt and the certificate), or with
    // its listing's scope edited.
    let (hearing_id, hearing_bundle) = export_hearing(&gw, &clerk_session, &session, "case-w").await;
    let hearing_scope = format!("hearing {hearing_id} of case case-w only, not the whole case");
    let hearing_relabelled = rebagged(&hearing_bundle, |bag| {
        for name in ["bag-info.txt", "data/REPORT.txt"] {
            let text = std::fs::read_to_string(bag.join(name)).unwrap();
            let whole = text
                .replace(&format!("Custodia-Scope: hearing {hearing_id}"), "Custodia-Scope: case")
                .replace(&hearing_scope, "the whole case case-w");
            assert_ne!(whole, text, "{name}");
            std::fs::write(bag.join(name), whole).unwrap();
        }
    });
    let hearing_listing_relabelled = rebagged(&hearing_bundle, |bag| {
        let path = bag.join("data/case-listing.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let edited = text.replace(&format!(r#"{{"hearing":"{hearing_id}","kind":"hearing"}}"#), r#"{"kind":"case"}"#);
        assert_ne!(edited, text);
        std::fs::write(&path, edited).unwrap();
    });
    // bag-info.txt edited with only the tag manifest made afresh: a wrong Payload-Oxum, a field added, one twice.
    let edit_info = |edit: fn(String) -> String| {
        retagged(&plain, move |bag| {
            let path = bag.join("bag-info.txt");
            std::fs::write(&path, edit(std::fs::read_to_string(&path).unwrap())).unwrap();
        })
    };
    let oxum_edited = edit_info(|info| {
        let (head, rest) = info.split_once("Payload-Oxum: ").unwrap();
        format!("{head}Payload-Oxum: 1{rest}")
    });
    let info_field_added = edit_info(|info| format!("{info}Contact-Name: someone\n"));
    let info_field_twice = edit_info(|info| {
        let line = info.lines().find(|line| line.starts_with("External-Identifier: ")).unwrap().to_owned();
        format!("{info}{line}\n")
    });
    // A case bundle holding an artefact bundle as a tar file (as case bundles once did) beside the directories.
    let case_loose = rebagged(&case_bundle, |bag| {
        std::fs::write(bag.join(format!("data/bundles/{plain_id}.tar")), &plain).unwrap();
    });
    // Files planted in an artefact bag, each listed in the bag's checksum manifests afresh, and its certificate
    // reworded: the verifiers name the planted file and the line of the certificate that says something else.
    let planted = rebagged(&plain, |bag| std::fs::write(bag.join("data/notes.txt"), b"planted").unwrap());
    let planted_custody =
        rebagged(&plain, |bag| std::fs::write(bag.join("data/custody/000000000099.proof"), b"planted").unwrap());
    let planted_top = rebagged(&plain, |bag| std::fs::write(bag.join("evil.sh"), b"echo planted").unwrap());
    let report_edited = rebagged(&plain, |bag| {
        let report = bag.join("data/REPORT.txt");
        let text = std::fs::read_to_string(&report).unwrap();
        let edited = text.replacen("purpose: trial preparation", "purpose: release of the witness", 1);
        assert_ne!(edited, text, "{text}");
        std::fs::write(report, edited).unwrap();
    });
    // A bundle from a gateway that a real second gateway witnesses, and copies whose cosignature line a forger
    // altered, doubled, or replaced by one under another key with the witness's name, each with fresh checksums.
    let (witnessed, witnessed_policy, witnessed_key) = witnessed_bundle(work.path()).await;
    let cosigner = "w.custodia.test/witness";
    let cosignature_forged = cosignature_edited(&witnessed, cosigner, |line| {
        let (head, encoded) = line.rsplit_once(' ').unwrap();
        let mut raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded).unwrap();
        raw[50] ^= 0x10;
        format!("{head} {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw))
    });
    let cosignature_duplicated = cosignature_edited(&witnessed, cosigner, |line| format!("{line}\n{line}"));
    let checkpoint =
        tar_entries(&witnessed).into_iter().find(|(path, _)| path.ends_with("/data/checkpoint")).unwrap().1;
    let body = String::from_utf8(checkpoint).unwrap().split_once("\n\n").unwrap().0.to_owned() + "\n";
    let impostor =
        custodia_witness::CosignerKey::generate(cosigner).unwrap().cosign(body.as_bytes(), 1_800_000_000).unwrap();
    let cosignature_wrong_key = cosignature_edited(&witnessed, cosigner, |_| impostor.trim_end().to_owned());
    // A bundle from a gateway whose log a real Time-Stamp Authority (`openssl ts -reply`) stamps, and copies whose
    // timestamp consistency proof, or the token in its entry, a forger changed, with fresh checksums.
    let (stamping, _, timestamped) = support::tsa::timestamped_export(std::sync::Arc::new(
        support::authority::Authority::new(support::authority::KeyKind::EcdsaP256),
    ))
    .await;
    let timestamped_key = stamping.verifier().to_string();
    // And a bag whose newest timestamp is a real token over other bytes, put in the log by someone with its storage.
    let silent = std::sync::Arc::new(support::authority::Authority::new(support::authority::KeyKind::EcdsaP256));
    let (forging, forging_session, forged_artefact) =
        support::tsa::gateway_with_a_silent_authority(silent.clone()).await;
    support::tsa::append_forged_stamp(&forging, &silent, support::tsa::Forgery::OtherBytes).await;
    let imprint_forged = export(&forging, &forging_session, &forged_artefact).await;
    let forging_key = forging.verifier().to_string();
    // And a bag from a gateway whose clock ran an hour ahead: a record dated after the token that stamps it.
    let (hasty, hasty_session, hasty_artefact) = support::tsa::gateway_with_a_silent_authority(silent.clone()).await;
    hasty.clock.advance(3600);
    export(&hasty, &hasty_session, &hasty_artefact).await;
    support::tsa::append_forged_stamp(&hasty, &silent, support::tsa::Forgery::Genuine).await;
    let dated_after = export(&hasty, &hasty_session, &hasty_artefact).await;
    let hasty_key = hasty.verifier().to_string();
    let timestamp_proof_broken = support::tsa::timestamp_proof_broken(&timestamped);
    let timestamp_token_edited = support::tsa::timestamp_token_forged(&timestamped);
    let named = [
        ("valid-timestamped", "Timestamp: existed no later than ".to_owned()),
        ("timestamp-consistency-broken-bag-rehashed", "does not prove that the stamped checkpoint".to_owned()),
        ("timestamp-token-edited-bag-rehashed", "data/timestamp/entry.proof: ".to_owned()),
        ("timestamp-over-other-bytes", "its imprint is not the SHA-256 of the stamped checkpoint".to_owned()),
        ("timestamp-before-a-record-it-stamps", "after the token's time".to_owned()),
        ("valid-witnessed", "WITNESSES: witnessed under the policy you pinned: its quorum is met by w at".to_owned()),
        ("valid-witnessed-own-policy", "witnessed under the bundle's policy, not one you pinned".to_owned()),
        ("witness-quorum-unmet", "NOT witnessed under the policy you pinned: its quorum is not met".to_owned()),
        ("witness-cosignature-forged-bag-rehashed", "forged or altered, not counted".to_owned()),
        ("witness-cosignature-duplicated-bag-rehashed", "witness w cosigns twice".to_owned()),
        ("witness-cosignature-wrong-key-bag-rehashed", "carries witness w's name but another key".to_owned()),
        ("artefact-file-planted-bag-rehashed", "data/notes.txt does not belong in an artefact bundle".to_owned()),
        (
            "artefact-custody-file-planted-bag-rehashed",
            "data/custody/000000000099.proof does not belong in an artefact bundle".to_owned(),
        ),
        ("artefact-top-file-planted-bag-rehashed", "evil.sh does not belong in an artefact bundle".to_owned()),
        ("report-edited-bag-rehashed", "purpose: release of the witness".to_owned()),
        ("manifest-nonce-changed-resigned", "is not the registration of this manifest".to_owned()),
        ("refused-action-edited-bag-rehashed", "the opening of `action` does not match".to_owned()),
        ("case-opening-edited-bag-rehashed", "the opening of `purpose` does not match".to_owned()),
        ("case-opening-added-bag-rehashed", "000000000001.opening.json does not belong in a case bundle".to_owned()),
        ("case-artefact-withheld", format!("artefact {webm_id} is missing")),
        ("case-artefact-swapped", format!("artefact {plain_id}: data/bundles/{plain_id}/ is not the bundle")),
        ("case-artefact-added", format!("data/bundles/{later_id}/ is not in the case export record")),
        ("case-artefact-as-a-file", format!("data/bundles/{plain_id}.tar is not an artefact bundle's directory")),
        ("valid-hearing", format!("SCOPE: this is the bundle of {hearing_scope}")),
        ("valid-case", "SCOPE: this is the bundle of the whole case case-w".to_owned()),
        (
            "hearing-relabelled-as-case-bag-rehashed",
            format!(r#"Custodia-Scope "case" where the checked files make "hearing {hearing_id}""#),
        ),
        ("bag-info-oxum-edited-retagged", "bag-info.txt gives Payload-Oxum 1".to_owned()),
        ("bag-info-field-added-retagged", "bag-info.txt gives Contact-Name".to_owned()),
        ("bag-info-field-twice-retagged", "bag-info.txt gives External-Identifier more than once".to_owned()),
        ("case-artefact-data-after-end-of-archive", "data after its end-of-archive marker".to_owned()),
    ];

    // A record dropped and the bag's checksums made afresh: only the chain of `prior` indices gives it away.
    let caller = gw.caller(&session).await;
    let artefact = custodia_core::ArtefactId::new(plain_id.clone()).unwrap();
    let purpose = custodia_core::Label::new("second export").unwrap();
    let mut source = gw.state.gateway.export(&caller, &artefact, &purpose).await.unwrap();
    assert!(source.records.len() >= 4, "{}", source.records.len());
    let rebagged = |source: &custodia_bundle::BundleSource| {
        let mut out = Vec::new();
        BundleWriter::new(source).unwrap().write_to(&mut payload(200_000).as_slice(), &mut out).unwrap();
        out
    };
    // Openings tampered with, the bag's checksums made afresh: only the commitments in the log give it away.
    let mut opened: custodia_core::Openings =
        custodia_core::Openings::from_canonical(&source.records[1].openings).unwrap();
    let purpose = opened.get("purpose").unwrap().clone();
    opened.insert("purpose", custodia_core::Opening { text: format!("{} (edited)", purpose.text), ..purpose });
    let mut edited_source = source.clone();
    edited_source.records[1].openings = opened.to_canonical();
    let opening_edited = rebagged(&edited_source);
    let mut emptied_source = source.clone();
    emptied_source.records[2].openings = b"{}".to_vec();
    let opening_emptied = rebagged(&emptied_source);
    let mut swapped_source = source.clone();
    swapped_source.records[1].openings = source.records[2].openings.clone();
    let openings_swapped = rebagged(&swapped_source);
    // The manifest with another nonce, signed again with the gateway's own key: the signature holds, but the
    // registration in the log committed to the manifest with the first nonce.
    let signer = custodia_ledger::LogSigner::from_skey(
        &std::fs::read_to_string(gw.dir.path().join("keys/gateway.key")).unwrap(),
    )
    .unwrap();
    let mut manifest: custodia_core::Manifest = custodia_core::from_canonical_slice(&source.manifest).unwrap();
    manifest.nonce = custodia_core::Salt::from_bytes([7; 32]);
    let resigned = manifest.sign(signer.signing_key()).unwrap();
    let mut nonce_source = source.clone();
    nonce_source.manifest = resigned.bytes().to_vec();
    nonce_source.manifest_signature = resigned.signature();
    let nonce_changed = rebagged(&nonce_source);
    // The refusal's action opened as another action.
    let mut action_source = source.clone();
    let refusal = action_source
        .records
        .iter_mut()
        .find(|record| String::from_utf8_lossy(&record.entry).contains("\"type\":\"access_refused\""))
        .expect("the witness's refusal is in the history");
    let mut opened = custodia_core::Openings::from_canonical(&refusal.openings).unwrap();
    let action = opened.get("action").expect("a refusal commits to its action").clone();
    assert_eq!(action.text, "download_artefact");
    opened.insert("action", custodia_core::Opening { text: "view_case".into(), ..action });
    refusal.openings = opened.to_canonical();
    let refused_action_edited = rebagged(&action_source);
    source.records.remove(1);
    let dropped = rebagged(&source);

    // A bundle made before typed text was held to printable characters: a download on the record whose purpose
    // carries a line separator (a line of its own in REPORT.txt, to viewers that break lines there) and a
    // right-to-left override, sealed and recorded as the gateway did before it refused them.
    let before_the_rule_id = upload(&gw, &session, "case-w", "older.bin", payload(3000)).await;
    let gateway = &gw.state.gateway;
    let artefact = custodia_core::ArtefactId::new(before_the_rule_id.clone()).unwrap();
    let sealed = gateway
        .seal(
            &custodia_core::CaseId::new("case-w").unwrap(),
            gw.caller(&session).await.actor(),
            gateway.now(),
            FORGING_PURPOSE,
            |committer| custodia_core::CustodyEvent::ArtefactAccessed {
                artefact,
                access: custodia_core::AccessKind::Download,
                site: committer.commit("site", "IT"),
            },
        )
        .await
        .unwrap();
    gateway.record(&sealed).await.unwrap();
    let before_the_rule = export(&gw, &session, &before_the_rule_id).await;
    let stranger = custodia_ledger::LogSigner::generate("custodia.localhost/log").unwrap().verifier().to_string();
    let key = gw.verifier().to_string();
    // One character of the key mistyped: the pin is malformed (its key ID no longer matches), not another key.
    let mut typo = key.clone().into_bytes();
    let last = typo.len() - 2;
    typo[last] = if typo[last] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).unwrap();
    let inner_payload = tar_files(&case_bundle)
        .into_iter()
        .find(|(path, _, size)| path.contains("/data/bundles/") && path.contains("/data/payload/") && *size > 100_000)
        .unwrap();
    let mut case_tampered = case_bundle.clone();
    case_tampered[inner_payload.1 as usize + 1000] ^= 1;

    let is_record =
        |path: &str| path.contains("/data/custody/") && path.ends_with(".json") && !path.ends_with(".opening.json");
    let first_record = tar_files(&plain).into_iter().find(|(path, _, _)| is_record(path)).unwrap().0;
    let last_record = tar_files(&plain).into_iter().rev().find(|(path, _, _)| is_record(path)).unwrap().0;
    let bundles: Vec<(&str, Vec<u8>, Option<&str>, bool)> = vec![
        ("valid-plain", plain.clone(), Some(&key), true),
        ("valid-purpose-before-the-rule", before_the_rule, Some(&key), false),
        ("unpinned-plain", plain.clone(), None, true),
        ("unpinned-case", case_bundle.clone(), None, false),
        ("pin-mistyped", plain.clone(), Some(&typo), true),
        ("valid-webm", webm.clone(), Some(&key), false),
        ("valid-case", case_bundle.clone(), Some(&key), true),
        ("valid-large", large, Some(&key), false),
        ("payload-byte-flipped", flipped(&plain, "/data/payload/", |size| size / 2), Some(&key), true),
        ("webm-payload-byte-flipped", flipped(&webm, "/data/payload/", |size| size - 7), Some(&key), false),
        ("first-custody-record-byte-flipped", flipped(&plain, &first_record, |size| size / 2), Some(&key), true),
        ("last-custody-record-byte-flipped", flipped(&plain, &last_record, |size| size - 3), Some(&key), false),
        ("opening-byte-flipped", flipped(&plain, ".opening.json", |size| size - 5), Some(&key), false),
        ("opening-edited-bag-rehashed", opening_edited, Some(&key), true),
        ("opening-emptied-bag-rehashed", opening_emptied, Some(&key), false),
        ("openings-swapped-bag-rehashed", openings_swapped, Some(&key), false),
        ("refused-action-edited-bag-rehashed", refused_action_edited, Some(&key), false),
        ("manifest-signature-byte-flipped", flipped(&plain, "data/manifest.sig", |_| 10), Some(&key), false),
        ("manifest-byte-flipped", flipped(&plain, "data/manifest.json", |size| size / 3), Some(&key), false),
        ("checkpoint-byte-flipped", flipped(&plain, "data/checkpoint", |size| size / 2), Some(&key), false),
        ("proof-byte-flipped", flipped(&plain, ".proof", |_| 40), Some(&key), false),
        ("record-dropped-bag-rehashed", dropped, Some(&key), true),
        ("manifest-nonce-changed-resigned", nonce_changed, Some(&key), false),
        ("artefact-file-planted-bag-rehashed", planted, Some(&key), true),
        ("artefact-custody-file-planted-bag-rehashed", planted_custody, Some(&key), false),
        ("artefact-top-file-planted-bag-rehashed", planted_top, Some(&key), false),
        ("report-edited-bag-rehashed", report_edited, Some(&key), true),
        ("pax-header-oversized", oversized_pax_header(), Some(&key), false),
        ("untrusted-key", plain.clone(), Some(&stranger), false),
        ("case-inner-payload-flipped", case_tampered, Some(&key), false),
        ("case-artefact-withheld", withheld, Some(&key), true),
        ("case-artefact-swapped", swapped, Some(&key), false),
        ("case-artefact-added", added, Some(&key), false),
        ("case-opening-edited-bag-rehashed", case_opening_edited, Some(&key), false),
        ("case-opening-added-bag-rehashed", case_opening_added, Some(&key), false),
        ("valid-hearing", hearing_bundle.clone(), Some(&key), true),
        ("hearing-relabelled-as-case-bag-rehashed", hearing_relabelled, Some(&key), true),
        ("hearing-listing-relabelled-bag-rehashed", hearing_listing_relabelled, Some(&key), false),
        ("bag-info-oxum-edited-retagged", oxum_edited, Some(&key), false),
        ("bag-info-field-added-retagged", info_field_added, Some(&key), false),
        ("bag-info-field-twice-retagged", info_field_twice, Some(&key), false),
        ("data-after-end-of-archive", smuggled(&plain), Some(&key), false),
        ("case-artefact-as-a-file", case_loose, Some(&key), false),
        ("too-many-small-files", too_many_small_files(), Some(&key), false),
        ("cut-short", plain[..plain.len() / 2].to_vec(), Some(&key), false),
        ("not-a-tar", b"this is not a bundle at all".repeat(100), Some(&key), false),
        ("valid-witnessed", witnessed.clone(), Some(&witnessed_key), true),
        ("valid-witnessed-own-policy", witnessed.clone(), Some(&witnessed_key), false),
        ("witness-quorum-unmet", witnessed.clone(), Some(&witnessed_key), false),
        ("witness-cosignature-forged-bag-rehashed", cosignature_forged, Some(&witnessed_key), true),
        ("witness-cosignature-duplicated-bag-rehashed", cosignature_duplicated, Some(&witnessed_key), false),
        ("witness-cosignature-wrong-key-bag-rehashed", cosignature_wrong_key, Some(&witnessed_key), false),
        ("policy-mistyped", witnessed.clone(), Some(&witnessed_key), false),
        ("valid-timestamped", timestamped.clone(), Some(&timestamped_key), true),
        ("timestamp-consistency-broken-bag-rehashed", timestamp_proof_broken, Some(&timestamped_key), false),
        ("timestamp-token-edited-bag-rehashed", timestamp_token_edited, Some(&timestamped_key), false),
        ("timestamp-over-other-bytes", imprint_forged, Some(&forging_key), false),
        ("timestamp-before-a-record-it-stamps", dated_after, Some(&hasty_key), false),
    ];
    // The witness policies pinned, by case; the others pin none.
    let demanding = format!(
        "{witnessed_policy}witness other {}\ngroup both all w other\nquorum both\n",
        custodia_witness::CosignerKey::generate("other.custodia.test/witness").unwrap().verifier()
    )
    .replace("quorum w\n", "");
    let policies = std::collections::BTreeMap::from([
        ("valid-witnessed", witnessed_policy.clone()),
        ("witness-quorum-unmet", demanding),
        ("witness-cosignature-forged-bag-rehashed", witnessed_policy.clone()),
        ("witness-cosignature-duplicated-bag-rehashed", witnessed_policy.clone()),
        ("witness-cosignature-wrong-key-bag-rehashed", witnessed_policy.clone()),
        ("policy-mistyped", "log nothing-here\nquorum none\n".to_owned()),
    ]);

    let mut cases = Vec::new();
    for (name, bytes, trusted, screenshot) in bundles {
        let path = work.path().join(format!("{name}.tar"));
        std::fs::write(&path, &bytes).unwrap();
        let policy = policies.get(name).cloned();
        let (verdict, failed, seconds) = rust_verdict(&path, trusted, policy.as_deref());
        let expected = match name {
            n if n.starts_with("valid") => "valid",
            n if n.starts_with("unpinned") => "unknown-signer",
            "pin-mistyped" => "pin-malformed",
            "policy-mistyped" => "policy-malformed",
            "not-a-tar"
            | "cut-short"
            | "too-many-small-files"
            | "pax-header-oversized"
            | "data-after-end-of-archive" => "error",
            _ => "invalid",
        };
        assert_eq!(verdict, expected, "{name}: the Rust verifier; failed {failed:?}");
        cases.push(Case {
            name: name.to_owned(),
            path,
            trusted: trusted.map(str::to_owned),
            policy,
            screenshot,
            rust_verdict: verdict,
            rust_failed: failed,
            rust_seconds: seconds,
            size: bytes.len() as u64,
        });
    }
    let listed: Vec<Value> = cases
        .iter()
        .map(|c| json!({ "name": c.name, "path": c.path, "trusted": c.trusted.clone().unwrap_or_default(), "policy": c.policy.clone().unwrap_or_default(), "screenshot": c.screenshot }))
        .collect();
    let cases_file = work.path().join("cases.json");
    std::fs::write(&cases_file, serde_json::to_vec(&listed).unwrap()).unwrap();

    // The gateway over HTTP, for the browser.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = custodia_server::app(gw.state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../web-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let script = web_dir().join("tests/verify.mjs");
    let mut command = Command::new("node");
    command.arg(&script).arg(&base).arg(&cases_file).arg(&screenshots).current_dir(web_dir());
    command.env("CHROMIUM", chromium());
    let output = tokio::task::spawn_blocking(move || run(&mut command, Duration::from_secs(900))).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the browser run failed ({SETUP}):\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let found: Vec<Value> = stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect();
    assert_eq!(found.len(), cases.len(), "{stdout}");

    let mut disagreements = Vec::new();
    let mut table =
        String::from("bundle                              size  rust     browser  failed parts  rust s  browser s\n");
    for (case, seen) in cases.iter().zip(&found) {
        assert_eq!(seen["name"], case.name.as_str());
        let verdict = seen["verdict"].as_str().unwrap_or_default();
        let failed: BTreeSet<String> =
            seen["failed"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect();
        table.push_str(&format!(
            "{:<32} {:>8}  {:<8} {:<8} {:<13} {:>6.3}  {}\n",
            case.name,
            case.size,
            case.rust_verdict,
            verdict,
            failed.iter().cloned().collect::<Vec<_>>().join(","),
            case.rust_seconds,
            seen["seconds"],
        ));
        if verdict != case.rust_verdict || failed != case.rust_failed {
            disagreements.push(format!(
                "{}: Rust says {} {:?}, the browser says {verdict} {failed:?}\n{}",
                case.name,
                case.rust_verdict,
                case.rust_failed,
                seen["report"].as_str().unwrap_or_default()
            ));
        }
        let requests = seen["requests"].as_array().unwrap();
        assert!(requests.is_empty(), "{}: the page made requests while checking: {requests:?}", case.name);
        let problems = seen["problems"].as_array().unwrap();
        assert!(problems.is_empty(), "{}: console errors (CSP?): {problems:?}", case.name);
        assert_eq!(seen["focused"], "verdict", "{}: the verdict should take focus", case.name);
        let heading = seen["heading"].as_str().unwrap_or_default();
        let expected = match verdict {
            "valid" => "VALID",
            "unknown-signer" => "NOT VERIFIED: unknown signer",
            "pin-malformed" => "NOT CHECKED: the key you entered is malformed",
            "policy-malformed" => "NOT CHECKED: the witness policy you entered is malformed",
            _ => "NOT VALID",
        };
        assert_eq!(heading, expected, "{}", case.name);
        if let Some((_, words)) = named.iter().find(|(name, _)| *name == case.name) {
            let report = seen["report"].as_str().unwrap_or_default();
            assert!(report.contains(words.as_str()), "{}: the browser does not say {words:?}:\n{report}", case.name);
        }
    }
    eprintln!("{table}");
    assert!(disagreements.is_empty(), "the verifiers disagree:\n{}\n{table}", disagreements.join("\n"));
    // The page's custody history shows that purpose through printable: escapes, not a line break or reversed text.
    let seen = found.iter().find(|seen| seen["name"] == "valid-purpose-before-the-rule").unwrap();
    let cells: Vec<&str> = seen["history"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|cell| cell.as_str().unwrap()))
        .collect();
    assert!(!cells.iter().any(|cell| cell.contains(['\u{2028}', '\u{202E}'])), "raw in the history: {cells:?}");
    assert!(
        cells.iter().any(|cell| cell.contains("review\\u{2028}  #99") && cell.contains("\\u{202e}")),
        "the purpose is not in the history, escaped: {cells:?}"
    );
    for (case, expected) in [
        ("opening-edited-bag-rehashed", "openings"),
        ("opening-emptied-bag-rehashed", "openings"),
        ("openings-swapped-bag-rehashed", "openings"),
        ("case-opening-edited-bag-rehashed", "openings"),
        ("case-opening-added-bag-rehashed", "bag"),
        ("artefact-file-planted-bag-rehashed", "bag"),
        ("artefact-custody-file-planted-bag-rehashed", "bag"),
        ("artefact-top-file-planted-bag-rehashed", "bag"),
        ("report-edited-bag-rehashed", "report"),
        ("manifest-nonce-changed-resigned", "custody_history"),
        ("bag-info-oxum-edited-retagged", "bag"),
        ("bag-info-field-added-retagged", "bag"),
        ("bag-info-field-twice-retagged", "bag"),
        ("witness-quorum-unmet", "witnesses"),
        ("witness-cosignature-forged-bag-rehashed", "witnesses"),
        ("witness-cosignature-duplicated-bag-rehashed", "witnesses"),
        ("witness-cosignature-wrong-key-bag-rehashed", "witnesses"),
        ("timestamp-consistency-broken-bag-rehashed", "timestamp"),
        ("timestamp-token-edited-bag-rehashed", "timestamp"),
        ("timestamp-over-other-bytes", "timestamp"),
        ("timestamp-before-a-record-it-stamps", "timestamp"),
    ] {
        let case = cases.iter().find(|c| c.name == case).unwrap();
        assert_eq!(case.rust_failed, BTreeSet::from([expected.to_owned()]), "{}", case.name);
    }
    let relabelled = cases.iter().find(|c| c.name == "hearing-relabelled-as-case-bag-rehashed").unwrap();
    assert_eq!(relabelled.rust_failed, BTreeSet::from(["bag".to_owned(), "report".to_owned()]));
    for name in [
        "valid-plain",
        "payload-byte-flipped",
        "unpinned-plain",
        "case-artefact-withheld",
        "valid-hearing",
        "valid-witnessed",
        "witness-cosignature-forged-bag-rehashed",
        "valid-timestamped",
    ] {
        assert!(screenshots.join(format!("{name}.png")).is_file(), "no screenshot of {name}");
    }
}

/// Every byte of the small files of a bundle, and a sample of the payload's, flipped one at a time (and every fifth
/// byte of a timestamped bundle's trusted-time files): the browser's verifier (run under node, as the same module
/// the page bundles) and the Rust one must agree on each copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flipped_byte_gets_the_same_verdict_from_both_verifiers() {
    let node = run(Command::new("node").arg("--version"), Duration::from_secs(30));
    assert!(node.status.success(), "node does not run; {SETUP}");
    install_web_packages();
    let gw = TestGateway::start().await;
    let (prosecutor, session) = gw.person("prosecutor1", "IT").await;
    gw.case("case-f").await;
    gw.member("case-f", &prosecutor, "prosecutor").await;
    let artefact = upload(&gw, &session, "case-f", "statement.bin", payload(3000)).await;
    let bundle = export(&gw, &session, &artefact).await;
    let key = gw.verifier().to_string();

    // And a bundle from a gateway whose log a real Time-Stamp Authority stamps: its trusted-time files, flipped.
    let (stamping, _, timestamped) = support::tsa::timestamped_export(std::sync::Arc::new(
        support::authority::Authority::new(support::authority::KeyKind::EcdsaP256),
    ))
    .await;
    let stamping_key = stamping.verifier().to_string();

    let work = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    let mut listed = Vec::new();
    for (bundle, key, only_timestamp) in [(&bundle, &key, false), (&timestamped, &stamping_key, true)] {
        for (path, start, size) in tar_files(bundle) {
            if only_timestamp && !path.contains("/data/timestamp/") {
                continue;
            }
            // Every byte of the signed small files; the larger ones sampled, as every byte of them is hashed alike.
            let step = if only_timestamp {
                5
            } else if size > 1024 {
                97
            } else if path.ends_with(".txt") || path.ends_with(".pem") {
                11
            } else {
                3
            };
            for offset in (0..size).step_by(step) {
                let name = format!("{}+{offset}", path.split_once('/').unwrap().1);
                let mut copy = bundle.clone();
                copy[(start + offset) as usize] ^= 0x01;
                let file = work.path().join(format!("{}.tar", cases.len()));
                std::fs::write(&file, &copy).unwrap();
                let (verdict, failed, _) = rust_verdict(&file, Some(key), None);
                assert_ne!(verdict, "valid", "flipping {name} went unnoticed by the Rust verifier");
                listed.push(json!({ "name": name, "path": file, "trusted": key }));
                cases.push((name, verdict, failed));
            }
        }
    }
    assert!(cases.len() > 700, "{}", cases.len());
    let cases_file = work.path().join("cases.json");
    std::fs::write(&cases_file, serde_json::to_vec(&listed).unwrap()).unwrap();
    let output = run(
        Command::new("node").arg(web_dir().join("tests/verify-files.mjs")).arg(&cases_file).current_dir(web_dir()),
        Duration::from_secs(600),
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let found: Vec<Value> = stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(found.len(), cases.len());
    let mut disagreements = Vec::new();
    for ((name, verdict, failed), seen) in cases.iter().zip(&found) {
        let seen_failed: BTreeSet<String> =
            seen["failed"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect();
        if seen["verdict"] != *verdict || seen_failed != *failed {
            disagreements.push(format!(
                "{name}: Rust {verdict} {failed:?}, browser {} {seen_failed:?}\n{}",
                seen["verdict"],
                seen["report"].as_str().unwrap_or_default()
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} flipped bundles get different verdicts:\n{}",
        disagreements.len(),
        cases.len(),
        disagreements.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    eprintln!("{} flipped bundles: both verifiers agree on every one", cases.len());
}

/// A case bag of `artefacts` artefact bundles that are not bundles at all: each directory holds 100 planted files
/// with 200-byte names (GNU long names), so each fails with many checks.
fn case_of_junk(artefacts: usize) -> Vec<u8> {
    let files: Vec<(String, Vec<u8>)> = (0..artefacts)
        .flat_map(|a| {
            (0..100).map(move |f| {
                (format!("custodia-case-x/data/bundles/a-{a}/data/{f:06}{}", "n".repeat(194)), Vec::new())
            })
        })
        .collect();
    tar_of(&files)
}

/// A name that, printed raw, moves a terminal's cursor up a line, erases it, and turns the rest right to left.
/// A purpose typed before the gateway refused separators and format characters: to a viewer that breaks lines at
/// U+2028, a custody line of its own, then text turned right to left.
const FORGING_PURPOSE: &str = "review\u{2028}  #99      2026-01-01T00:00:00Z  exported by the judge\u{202E}x";

const HOSTILE_NAME: &str = "\u{1b}[1A\u{202e}\u{1b}[2KVALID";

/// An artefact bag of `strays` empty files with 100-character names, none of which a bundle holds.
fn bag_of_strays(strays: usize) -> Vec<u8> {
    let files: Vec<(String, Vec<u8>)> =
        (0..strays).map(|n| (format!("custodia-bundle-x/data/{n:04}{}", "n".repeat(96)), Vec::new())).collect();
    tar_of(&files)
}

/// One budget for the whole read, in both verifiers alike: a real case bundle of many artefacts, and case bundles of
/// junk artefact bundles, each checked within lowered limits by the Rust verifier and by the browser's (under node,
/// the module the page bundles). Both must reach the same verdict, count the same files, and hold at most the same
/// number of bytes; a limit one byte under that peak must stop both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_verifiers_hold_one_budget_for_a_whole_case_bundle() {
    let node = run(Command::new("node").arg("--version"), Duration::from_secs(30));
    assert!(node.status.success(), "node does not run; {SETUP}");
    install_web_packages();
    let gw = TestGateway::start().await;
    let (prosecutor, session) = gw.person("prosecutor1", "IT").await;
    let (second, second_session) = gw.person("prosecutor2", "IT").await;
    gw.case("case-m").await;
    gw.member("case-m", &prosecutor, "prosecutor").await;
    gw.member("case-m", &second, "prosecutor").await;
    // Two accounts, 20 uploads each: within the gateway's new uploads per account and minute (30).
    for i in 0..40 {
        let session = if i % 2 == 0 { &session } else { &second_session };
        upload(&gw, session, "case-m", &format!("item-{i}.bin"), payload(1000 + i)).await;
    }
    let case_bundle = export_case(&gw, &session, "case-m").await;
    let key = gw.verifier().to_string();
    let keys = [gw.verifier()];
    let rust = |bytes: &[u8], limits: custodia_bundle::Limits| custodia_bundle::verify_within(bytes, &keys, limits);

    let defaults = custodia_bundle::Limits::default();
    let whole = rust(&case_bundle, defaults).unwrap();
    assert!(whole.is_valid(), "{whole}");
    let one_mib = custodia_bundle::Limits { files: custodia_bundle::MAX_FILES, kept_bytes: 1 << 20 };
    let four_mib = custodia_bundle::Limits { files: custodia_bundle::MAX_FILES, kept_bytes: 4 << 20 };
    let junk = rust(&case_of_junk(20), one_mib).unwrap();
    let exact = |peak: u64| custodia_bundle::Limits { files: custodia_bundle::MAX_FILES, kept_bytes: peak };
    // A bag of planted files with long names: the checks made of the bag itself (one or more per file, each
    // naming it) count toward the budget too, to the byte.
    let strays = bag_of_strays(400);
    let strayed = rust(&strays, defaults).unwrap();
    let names: u64 = tar_entries(&strays).iter().map(|(path, _)| path.len() as u64).sum();
    let details: u64 = strayed.checks.iter().map(|check| check.detail.len() as u64).sum();
    let counted = strayed.peak_kept_bytes;
    assert!(counted > names + details, "{counted} counted, {names} bytes of names, {details} of details");
    let runs: Vec<(&str, Vec<u8>, custodia_bundle::Limits)> = vec![
        ("case-of-40", case_bundle.clone(), defaults),
        ("case-of-40-at-its-peak", case_bundle.clone(), exact(whole.peak_kept_bytes)),
        ("case-of-40-a-byte-short", case_bundle.clone(), exact(whole.peak_kept_bytes - 1)),
        ("junk-20", case_of_junk(20), one_mib),
        ("junk-20-a-byte-short", case_of_junk(20), exact(junk.peak_kept_bytes - 1)),
        ("junk-400", case_of_junk(400), one_mib),
        // The reviewer's: nested bundles with 10,000-byte PAX names, whose every kept check once echoed the name.
        ("long-names-60", case_of_long_names(60, 10_000), four_mib),
        ("long-names-200", case_of_long_names(200, 10_000), four_mib),
        ("strays-400", strays.clone(), defaults),
        ("strays-400-at-its-peak", strays.clone(), exact(strayed.peak_kept_bytes)),
        ("strays-400-a-byte-short", strays.clone(), exact(strayed.peak_kept_bytes - 1)),
    ];
    let work = tempfile::tempdir().unwrap();
    let mut listed = Vec::new();
    let mut expected = Vec::new();
    for (name, bytes, limits) in &runs {
        let path = work.path().join(format!("{name}.tar"));
        std::fs::write(&path, bytes).unwrap();
        let limits_json = json!({ "files": limits.files, "keptBytes": limits.kept_bytes });
        listed.push(json!({ "name": name, "path": path, "trusted": key, "limits": limits_json }));
        expected.push(match rust(bytes, *limits) {
            Ok(report) => {
                let verdict = if report.is_valid() { "valid" } else { "invalid" };
                (verdict, Some((report.files_read as u64, report.peak_kept_bytes)))
            }
            Err(err) => {
                assert!(matches!(err, custodia_bundle::VerifyError::TooLarge(_)), "{name}: {err}");
                ("error", None)
            }
        });
    }
    let verdicts: Vec<&str> = expected.iter().map(|(verdict, _)| *verdict).collect();
    assert_eq!(
        verdicts,
        ["valid", "valid", "error", "invalid", "error", "error", "invalid", "error", "invalid", "invalid", "error"]
    );
    // Every byte of every detail kept is counted: the report holds no more than the counted peak.
    let long_names = rust(&case_of_long_names(60, 10_000), four_mib).unwrap();
    let details: u64 = long_names.checks.iter().map(|check| check.detail.len() as u64).sum();
    assert!(
        details <= long_names.peak_kept_bytes,
        "{details} bytes of details, {} counted",
        long_names.peak_kept_bytes
    );
    assert!(long_names.checks.iter().all(|check| check.detail.len() < 1_000), "a whole long name is echoed");
    assert!(junk.peak_kept_bytes <= 1 << 20);
    let cases_file = work.path().join("cases.json");
    std::fs::write(&cases_file, serde_json::to_vec(&listed).unwrap()).unwrap();
    let output = run(
        Command::new("node").arg(web_dir().join("tests/verify-files.mjs")).arg(&cases_file).current_dir(web_dir()),
        Duration::from_secs(600),
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let found: Vec<Value> = stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(found.len(), runs.len());
    for (((name, _, _), (verdict, counts)), seen) in runs.iter().zip(&expected).zip(&found) {
        assert_eq!(seen["verdict"], *verdict, "{name}: {}", seen["report"]);
        if let Some((files, peak)) = counts {
            assert_eq!(seen["filesRead"], *files, "{name}: files read");
            assert_eq!(seen["peakKeptBytes"], *peak, "{name}: the most bytes held");
        }
        eprintln!("{name}: {verdict}, {counts:?}");
    }
}

/// A raw tar header as a forger writes it by hand (any type, any magic, any prefix), checksummed.
fn raw_header(name: &[u8], size: u64, kind: u8, prefix: &[u8], magic: &[u8; 8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = kind;
    h[257..265].copy_from_slice(magic);
    h[345..345 + prefix.len()].copy_from_slice(prefix);
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h.to_vec()
}

const USTAR: &[u8; 8] = b"ustar\x0000";
const GNU: &[u8; 8] = b"ustar  \0";
const END_OF_ARCHIVE: [u8; 1024] = [0; 1024];

/// An entry of `kind` with `data`: header, bytes, zero padding.
fn raw_entry(name: &str, kind: u8, data: &[u8]) -> Vec<u8> {
    let mut out = raw_header(name.as_bytes(), data.len() as u64, kind, b"", USTAR);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
    out
}

/// Regular file entries of `files`, with no end-of-archive marker.
fn raw_files(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    files.iter().flat_map(|(path, bytes)| raw_entry(path, b'0', bytes)).collect()
}

/// A PAX extended header ('x') of `records`.
fn pax_entry(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (key, value) in records {
        let rest = 3 + key.len() + value.len();
        let mut len = rest + 1;
        while len.to_string().len() + rest != len {
            len = len.to_string().len() + rest;
        }
        body.extend_from_slice(format!("{len} {key}=").as_bytes());
        body.extend_from_slice(value);
        body.push(b'\n');
    }
    raw_entry("PaxHeaders/x", b'x', &body)
}

/// The files of a tar, (path, bytes), in order.
fn tar_entries(bundle: &[u8]) -> Vec<(String, Vec<u8>)> {
    tar_files(bundle)
        .into_iter()
        .map(|(path, start, size)| (path, bundle[start as usize..(start + size) as usize].to_vec()))
        .collect()
}

/// A case bundle as the reviewer forged it: `nested` artefact bundles, each in a directory whose name has
/// `name_len` bytes (PAX paths), each holding 2 planted files that fail the checks.
fn case_of_long_names(nested: usize, name_len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for k in 0..nested {
        for i in 0..2 {
            let name = format!("custodia-case-x/data/bundles/{k:06}{}/data/x{i}", "n".repeat(name_len));
            out.extend_from_slice(&pax_entry(&[("path", name.as_bytes())]));
            out.extend_from_slice(&raw_entry("placeholder", b'0', b"x"));
        }
    }
    out.extend_from_slice(&END_OF_ARCHIVE);
    out
}

/// Tars that tar tools read otherwise than the verifiers would if they let them pass, found by a reviewer: a
/// directory entry whose data is a forged file (GNU tar and Python extract it over the real one), a directory with
/// a hostile path, a link, PAX keys that change what GNU tar writes (GNU.sparse.*), two extended headers in a row,
/// one before a directory or the end, a GNU header with a ustar prefix; and a bag-info.txt with an impossible date,
/// a forged software agent or CRLF lines. Both verifiers must refuse each alike; a bundle repacked with directory
/// entries and a PAX path stays valid in both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_verifiers_refuse_the_same_hostile_tars() {
    let node = run(Command::new("node").arg("--version"), Duration::from_secs(30));
    assert!(node.status.success(), "node does not run; {SETUP}");
    install_web_packages();
    let gw = TestGateway::start().await;
    let (prosecutor, session) = gw.person("prosecutor1", "IT").await;
    gw.case("case-h").await;
    gw.member("case-h", &prosecutor, "prosecutor").await;
    let artefact = upload(&gw, &session, "case-h", "statement.bin", payload(3000)).await;
    let plain = export(&gw, &session, &artefact).await;
    let case_bundle = export_case(&gw, &session, "case-h").await;
    let key = gw.verifier().to_string();

    let files = tar_entries(&plain);
    let top = files[0].0.split_once('/').unwrap().0.to_owned();
    let (payload_at, (payload_path, payload_bytes)) =
        files.iter().enumerate().find(|(_, (path, _))| path.contains("/data/payload/")).unwrap();
    let others: Vec<(String, Vec<u8>)> = files.iter().filter(|(path, _)| path != payload_path).cloned().collect();
    let payload_entry = raw_entry(payload_path, b'0', payload_bytes);
    let dir = |name: &str| raw_header(name.as_bytes(), 0, b'5', b"", USTAR);
    let forged_payload = raw_entry(payload_path, b'0', b"FORGED: the witness said the opposite");
    let hiding = raw_entry(&format!("{top}/data/payload/"), b'5', &forged_payload);
    let case_files = tar_entries(&case_bundle);
    let case_top = case_files[0].0.split_once('/').unwrap().0.to_owned();
    let nested = case_files.iter().find(|(path, _)| path.contains("/data/bundles/")).unwrap();
    let forged_nested = raw_entry(&nested.0, b'0', b"not the real bundle");
    let case_hiding = raw_entry(&format!("{case_top}/data/bundles/"), b'5', &forged_nested);
    let sparse = pax_entry(&[
        ("GNU.sparse.major", b"0"),
        ("GNU.sparse.minor", b"1"),
        ("GNU.sparse.name", payload_path.as_bytes()),
        ("GNU.sparse.realsize", (payload_bytes.len() + 1000).to_string().as_bytes()),
        ("GNU.sparse.map", format!("1000,{}", payload_bytes.len()).as_bytes()),
    ]);
    let pax_path = pax_entry(&[("path", payload_path.as_bytes())]);
    let renamed_payload = raw_entry("whatever", b'0', payload_bytes);
    let mut gnu_prefixed = raw_header(payload_path.as_bytes(), payload_bytes.len() as u64, b'0', b"zzz", GNU);
    gnu_prefixed.extend_from_slice(payload_bytes);
    gnu_prefixed.resize(gnu_prefixed.len().next_multiple_of(512), 0);
    let mut junk_padded = payload_entry.clone();
    assert!(payload_bytes.len() % 512 != 0, "the payload has padding");
    *junk_padded.last_mut().unwrap() = b'X';
    let edit_info = |edit: fn(String) -> String| {
        retagged(&plain, move |bag| {
            let path = bag.join("bag-info.txt");
            std::fs::write(&path, edit(std::fs::read_to_string(&path).unwrap())).unwrap();
        })
    };
    let date_impossible = edit_info(|info| {
        let line = info.lines().find(|line| line.starts_with("Bagging-Date: ")).unwrap().to_owned();
        info.replace(&line, "Bagging-Date: 1999-99-99")
    });
    let agent_forged = edit_info(|info| {
        let line = info.lines().find(|line| line.starts_with("Bag-Software-Agent: ")).unwrap().to_owned();
        info.replace(&line, "Bag-Software-Agent: custodia-forger 9")
    });
    let crlf = edit_info(|info| info.replace('\n', "\r\n"));
    let with_directories = [
        dir(&format!("{top}/")),
        dir(&format!("{top}/data/")),
        raw_files(&others),
        pax_path.clone(),
        renamed_payload.clone(),
    ]
    .concat();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("valid-repacked-with-directories-and-a-pax-path", [with_directories, END_OF_ARCHIVE.to_vec()].concat()),
        ("directory-with-data-hides-a-forged-payload", [raw_files(&files), hiding, END_OF_ARCHIVE.to_vec()].concat()),
        (
            "directory-with-data-in-a-case-bundle",
            [raw_files(&case_files), case_hiding, END_OF_ARCHIVE.to_vec()].concat(),
        ),
        ("directory-with-a-hostile-path", [dir("../../escaped/"), raw_files(&files), END_OF_ARCHIVE.to_vec()].concat()),
        ("directory-outside-the-bag", [raw_files(&files), dir("elsewhere/"), END_OF_ARCHIVE.to_vec()].concat()),
        (
            "symbolic-link",
            [raw_files(&files), raw_entry(&format!("{top}/data/link"), b'2', b""), END_OF_ARCHIVE.to_vec()].concat(),
        ),
        (
            "pax-global-header",
            [raw_entry("PaxHeaders/g", b'g', b"13 comment=x\n"), raw_files(&files), END_OF_ARCHIVE.to_vec()].concat(),
        ),
        ("pax-gnu-sparse", [raw_files(&others), sparse, payload_entry.clone(), END_OF_ARCHIVE.to_vec()].concat()),
        (
            "pax-two-in-a-row",
            [raw_files(&others), pax_path.clone(), pax_path.clone(), renamed_payload.clone(), END_OF_ARCHIVE.to_vec()]
                .concat(),
        ),
        (
            "pax-before-a-directory",
            [raw_files(&files), pax_path.clone(), dir(&format!("{top}/data/")), END_OF_ARCHIVE.to_vec()].concat(),
        ),
        ("pax-before-the-end", [raw_files(&files), pax_path.clone(), END_OF_ARCHIVE.to_vec()].concat()),
        ("junk-in-padding", [raw_files(&others), junk_padded, END_OF_ARCHIVE.to_vec()].concat()),
        ("gnu-magic-with-a-prefix", [raw_files(&others), gnu_prefixed, END_OF_ARCHIVE.to_vec()].concat()),
        ("bag-info-date-impossible-retagged", date_impossible),
        ("bag-info-agent-forged-retagged", agent_forged),
        ("bag-info-crlf-retagged", crlf),
        // A planted file whose name moves the cursor up, erases the line and turns the text right to left.
        (
            "hostile-name-planted",
            [raw_files(&files), raw_entry(&format!("{top}/data/{HOSTILE_NAME}"), b'0', b"x"), END_OF_ARCHIVE.to_vec()]
                .concat(),
        ),
    ];
    assert!(payload_at > 0);
    let work = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    let mut listed = Vec::new();
    for (name, bytes) in &cases {
        let path = work.path().join(format!("{name}.tar"));
        std::fs::write(&path, bytes).unwrap();
        let (verdict, failed, _) = rust_verdict(&path, Some(&key), None);
        let want = if name.starts_with("valid") {
            "valid"
        } else if name.starts_with("bag-info") || name.starts_with("hostile-name") {
            "invalid"
        } else {
            "error"
        };
        assert_eq!(verdict, want, "{name}: the Rust verifier; failed {failed:?}");
        listed.push(json!({ "name": name, "path": path, "trusted": key }));
        expected.push((verdict, failed));
    }
    let cases_file = work.path().join("cases.json");
    std::fs::write(&cases_file, serde_json::to_vec(&listed).unwrap()).unwrap();
    let output = run(
        Command::new("node").arg(web_dir().join("tests/verify-files.mjs")).arg(&cases_file).current_dir(web_dir()),
        Duration::from_secs(600),
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let found: Vec<Value> = stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(found.len(), cases.len());
    for (((name, bytes), (verdict, failed)), seen) in cases.iter().zip(&expected).zip(&found) {
        let seen_failed: BTreeSet<String> =
            seen["failed"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect();
        assert_eq!(seen["verdict"], *verdict, "{name}: the browser's verifier: {}", seen["report"]);
        assert_eq!(seen_failed, *failed, "{name}: the browser's verifier: {}", seen["report"]);
        if name.starts_with("hostile-name") {
            // Both reports show the name escaped: nothing in them acts on a terminal, and each verdict is intact.
            let rust = custodia_bundle::verify(bytes.as_slice(), std::slice::from_ref(&gw.verifier())).unwrap();
            for (who, report) in [("rust", rust.to_string()), ("browser", seen["report"].as_str().unwrap().to_owned())]
            {
                assert!(!report.chars().any(|c| c.is_control() && c != '\n'), "{who}: {report:?}");
                assert!(!report.contains('\u{202E}') && report.contains("\\u{1b}[1A\\u{202e}"), "{who}: {report}");
                assert!(report.lines().last().unwrap().starts_with("NOT VALID: bag structure"), "{who}: {report}");
            }
        }
        eprintln!(
            "{name}: {verdict} {failed:?}: {}",
            seen["report"].as_str().unwrap_or_default().lines().find(|l| !l.starts_with("ok")).unwrap_or_default()
        );
    }
}

/// A witness policy of `levels` levels of two groups that both name both groups of the level below (judged per
/// path, the work doubles per level), or else a chain of `levels` groups each naming the one before, over the
/// witness `w` (`witness_line`) of the log `log_line`.
fn deep_policy(log_line: &str, witness_line: &str, levels: usize, shared: bool) -> String {
    let mut text = format!("{log_line}\n{witness_line}\ngroup g0 any w\ngroup h0 all w\n");
    for k in 1..=levels {
        let below = k - 1;
        if shared {
            text.push_str(&format!("group g{k} all g{below} h{below}\ngroup h{k} any g{below} h{below}\n"));
        } else {
            text.push_str(&format!("group g{k} any g{below}\n"));
        }
    }
    text + &format!("quorum g{levels}\n")
}

/// Whether `text` holds a character that would act on a terminal or a page: a control character but the line
/// break, or a bidirectional control (a right-to-left override reorders what follows it).
fn acts_on_display(text: &str) -> bool {
    text.chars().any(|c| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    })
}

/// The witness policies and cosignatures a reviewer forged: 60 levels of groups that share members, a chain of
/// 30,000 groups, a policy that asks for no witness, two witnesses with one key name, cosignatures dated in the
/// year 3000, at 2^63 and at 2^64-1 seconds, and terminal escapes and a right-to-left override in names. The Rust
/// verifier and the browser's (under node, the module /verify bundles) each judge every one (the old ones never
/// finished the first, and overflowed their stacks on the second), reach the same verdict, say the same plain
/// words, and show every name escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_verifiers_judge_hostile_witness_policies_alike() {
    let node = run(Command::new("node").arg("--version"), Duration::from_secs(30));
    assert!(node.status.success(), "node does not run; {SETUP}");
    install_web_packages();
    let work = tempfile::tempdir().unwrap();
    let (bundle, policy, key) = witnessed_bundle(work.path()).await;
    let log_line = policy.lines().next().unwrap().to_owned();
    let witness_line = policy.lines().nth(1).unwrap().to_owned();
    let checkpoint = tar_entries(&bundle).into_iter().find(|(path, _)| path.ends_with("/data/checkpoint")).unwrap().1;
    let body = String::from_utf8(checkpoint).unwrap().split_once("\n\n").unwrap().0.to_owned() + "\n";
    let own_policy = |text: String| {
        rebagged(&bundle, |bag| std::fs::write(bag.join("data/witness/policy.txt"), text.as_bytes()).unwrap())
    };
    // The checkpoint (data/checkpoint and each proof's) with one more cosignature, by `signer` at `time`.
    let cosigned_also = |signer: &custodia_witness::CosignerKey, time: u64| {
        let line = signer.cosign(body.as_bytes(), time).unwrap();
        cosignature_edited(&bundle, "w.custodia.test/witness", |own| format!("{own}\n{}", line.trim_end()))
    };
    let namesake = custodia_witness::CosignerKey::generate("w.custodia.test/witness").unwrap();
    let early = custodia_witness::CosignerKey::generate("early.custodia.test/witness").unwrap();
    let rogue = custodia_witness::CosignerKey::generate("rogue.example/witness").unwrap();
    let bidi = custodia_witness::CosignerKey::generate("x\u{202e}DILAV").unwrap();
    let escaped_name = "\u{1b}[2K\u{1b}[1GVALID:\u{1b}[8m";
    let escaped_policy = format!("{log_line}\nwitness {escaped_name} {}\nquorum {escaped_name}\n", rogue.verifier());
    let escaped = rebagged(&cosigned_also(&rogue, 1_700_000_000), |bag| {
        std::fs::write(bag.join("data/witness/policy.txt"), &escaped_policy).unwrap();
    });
    let early_policy =
        format!("{log_line}\n{witness_line}\nwitness early {}\ngroup any any w early\nquorum any\n", early.verifier());
    let witnessed_own = "witnessed under the bundle's policy, not one you pinned: its quorum is met by w at";
    // Name, bundle, policy pinned, the verdict, and words both reports must hold.
    let cases = vec![
        (
            "dag-60-shared-members",
            own_policy(deep_policy(&log_line, &witness_line, 60, true)),
            None,
            "valid",
            witnessed_own.to_owned(),
        ),
        (
            "chain-30000",
            own_policy(deep_policy(&log_line, &witness_line, 30_000, false)),
            None,
            "valid",
            witnessed_own.to_owned(),
        ),
        (
            "quorum-none-own",
            own_policy(format!("{log_line}\nquorum none\n")),
            None,
            "valid",
            "NOT witnessed: the bundle's policy, not one you pinned asks for no witness (quorum none), so nothing was \
             witnessed"
                .to_owned(),
        ),
        (
            "quorum-none-pinned",
            bundle.clone(),
            Some(format!("{log_line}\nquorum none\n")),
            "valid",
            "NOT witnessed: the policy you pinned asks for no witness (quorum none)".to_owned(),
        ),
        (
            "same-key-name",
            cosigned_also(&namesake, 1_700_000_000),
            Some(format!(
                "{log_line}\nwitness one {}\n{witness_line}\ngroup both all one w\nquorum both\n",
                namesake.verifier()
            )),
            "valid",
            "one at 2023-11-14T22:13:20Z, on a checkpoint that covers every record".to_owned(),
        ),
        (
            "cosigned-in-3000",
            cosigned_also(&early, 32_503_680_000),
            Some(early_policy.clone()),
            "invalid",
            "witness early's cosignature is dated 3000-01-01T00:00:00Z, more than 10 minutes after this computer's \
             clock"
                .to_owned(),
        ),
        (
            "cosigned-at-2^63",
            cosigned_also(&early, 1 << 63),
            Some(early_policy.clone()),
            "invalid",
            "dated 9223372036854775808 s after the epoch, more than 10 minutes after".to_owned(),
        ),
        (
            "cosigned-at-2^64-1",
            cosigned_also(&early, u64::MAX),
            Some(early_policy),
            "invalid",
            "dated 18446744073709551615 s after the epoch, more than 10 minutes after".to_owned(),
        ),
        (
            "escapes-in-the-policy",
            escaped,
            None,
            "valid",
            "witness \\u{1b}[2K\\u{1b}[1GVALID:\\u{1b}[8m (rogue.example/witness) cosigned".to_owned(),
        ),
        (
            "right-to-left-override-in-a-key-name",
            cosigned_also(&bidi, 1_700_000_000),
            None,
            "valid",
            "a cosignature by x\\u{202e}DILAV, whose key is not in the bundle's policy".to_owned(),
        ),
    ];
    let mut listed = Vec::new();
    let mut expected = Vec::new();
    for (name, bytes, pinned, verdict, words) in cases {
        let path = work.path().join(format!("{name}.tar"));
        std::fs::write(&path, &bytes).unwrap();
        let policy = pinned.as_deref().map(|text| custodia_witness::Policy::parse(text).unwrap());
        let keys = [key.parse::<custodia_ledger::LogVerifier>().unwrap()];
        let pins = custodia_bundle::Pins { keys: &keys, policy: policy.as_ref(), time: None };
        let report =
            custodia_bundle::verify_pinned(bytes.as_slice(), &pins, custodia_bundle::Limits::default()).unwrap();
        let said = report.to_string();
        let (rust_verdict, failed, _) = rust_verdict(&path, Some(&key), pinned.as_deref());
        assert_eq!(rust_verdict, verdict, "{name}: {said}");
        assert!(said.contains(&words), "{name}: the Rust report lacks {words:?}:\n{said}");
        assert!(!acts_on_display(&said), "{name}: {said:?}");
        listed.push(json!({ "name": name, "path": path, "trusted": key, "policy": pinned.unwrap_or_default() }));
        expected.push((name, rust_verdict, failed, words));
    }
    let cases_file = work.path().join("cases.json");
    std::fs::write(&cases_file, serde_json::to_vec(&listed).unwrap()).unwrap();
    let output = run(
        Command::new("node").arg(web_dir().join("tests/verify-files.mjs")).arg(&cases_file).current_dir(web_dir()),
        Duration::from_secs(300),
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let found: Vec<Value> = stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(found.len(), expected.len(), "{stdout}");
    for ((name, verdict, failed, words), seen) in expected.iter().zip(&found) {
        let report = seen["report"].as_str().unwrap_or_default();
        let seen_failed: BTreeSet<String> =
            seen["failed"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect();
        assert_eq!((seen["verdict"].as_str().unwrap(), &seen_failed), (*verdict, failed), "{name}: {report}");
        assert!(report.contains(words.as_str()), "{name}: the browser's report lacks {words:?}:\n{report}");
        assert!(!acts_on_display(report), "{name}: {report:?}");
    }
}
