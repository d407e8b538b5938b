//! Court bundles: exported through the API, valid for our verifier, for the Library of Congress `bagit`
//! validator and for standard tools by hand; and every tampering is caught and named.

mod support;

use std::path::Path;
use std::process::Command;

use custodia_bundle::{BundleWriter, Part, Verdict, verify};
use serde_json::json;
use support::{
    As, TestGateway, bundled_artefacts, by_hand_blocks, by_hand_case_script, copy_tree, drop_report_lines, rebagged,
    retagged, run_script, run_script_plain, tar_files,
};

/// A gateway with one artefact that has a few custody records, exported as a bundle.
struct Exported {
    gw: TestGateway,
    artefact: String,
    session: String,
    bundle: Vec<u8>,
}

async fn exported(payload: Vec<u8>) -> Exported {
    let gw = TestGateway::start().await;
    let (prosecutor, session) = gw.person("prosecutor1", "IT").await;
    gw.case("case-b").await;
    gw.member("case-b", &prosecutor, "prosecutor").await;
    let reply =
        gw.upload("case-b", "purpose=statement%20intake&filename=statement.webm", As::Session(&session), payload).await;
    let artefact = reply.json()["artefact"].as_str().unwrap().to_owned();
    let read = gw
        .get(&format!("/api/v1/artefacts/{artefact}/content?purpose=trial%20preparation"), Some(As::Session(&session)))
        .await;
    assert_eq!(read.status.as_u16(), 200);
    // A witness refused the download by their role: a refusal in the history, its action committed.
    let (witness, witness_session) = gw.person("witness1", "NG").await;
    gw.member("case-b", &witness, "witness").await;
    let refused = format!("/api/v1/artefacts/{artefact}/content?purpose=my%20statement");
    gw.get(&refused, Some(As::Session(&witness_session))).await.assert_problem(403, "role-forbidden", "");
    let reply = gw
        .call(
            "POST",
            &format!("/api/v1/artefacts/{artefact}/exports?purpose=disclosure%20to%20the%20court"),
            Some(As::Session(&session)),
            json!({}),
        )
        .await;
    assert_eq!(reply.status.as_u16(), 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.headers["content-type"], "application/x-tar");
    assert_eq!(reply.headers["content-length"].to_str().unwrap(), reply.body.len().to_string());
    Exported { gw, artefact, session, bundle: reply.body }
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_bundle_verifies_offline_and_proves_its_own_export() {
    let ex = exported(payload(200_000)).await;
    let verifier = ex.gw.verifier();
    let report = verify(ex.bundle.as_slice(), std::slice::from_ref(&verifier)).unwrap();
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.records, 4, "registration, download, a refusal, export: {report}");
    assert_eq!(report.artefact.as_deref(), Some(ex.artefact.as_str()));

    // A stranger's key is refused; with no key pinned nothing is verified: anyone can sign a bundle.
    let stranger = custodia_ledger::LogSigner::generate("custodia.localhost/log").unwrap().verifier();
    let report = verify(ex.bundle.as_slice(), &[stranger]).unwrap();
    assert_eq!(report.failed_parts(), [Part::TrustedKey], "{report}");
    assert_eq!(report.verdict(), Verdict::Invalid, "{report}");
    let report = verify(ex.bundle.as_slice(), &[]).unwrap();
    assert_eq!(report.verdict(), Verdict::UnknownSigner, "{report}");
    assert!(!report.is_valid() && report.to_string().contains("NOT VERIFIED: unknown signer"), "{report}");
    assert!(!report.to_string().contains("\nVALID"), "{report}");

    // The export itself is in the timeline.
    let timeline =
        ex.gw.get(&format!("/api/v1/artefacts/{}/timeline", ex.artefact), Some(As::Session(&ex.session))).await.json();
    assert_eq!(timeline["records"].as_array().unwrap().last().unwrap()["record"]["event"]["type"], "artefact_exported");

    // The CLI, on a machine that has only the bundle and the key.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bundle.tar");
    std::fs::write(&file, &ex.bundle).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_custodia"))
        .arg("verify")
        .arg(&file)
        .args(["--trusted-key", &verifier.to_string()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success() && out.contains("\nVALID"), "{out}{}", String::from_utf8_lossy(&run.stderr));
    // Without a pinned key the CLI verifies nothing and exits non-zero; a mistyped key is called malformed.
    let run = Command::new(env!("CARGO_BIN_EXE_custodia")).arg("verify").arg(&file).output().unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(3), "{out}{}", String::from_utf8_lossy(&run.stderr));
    assert!(out.contains("NOT VERIFIED: unknown signer") && !out.contains("\nVALID"), "{out}");
    let key = verifier.to_string();
    let typo = format!("{}{}", &key[..key.len() - 3], if key.ends_with("AAA") { "BBB" } else { "AAA" });
    let run = Command::new(env!("CARGO_BIN_EXE_custodia"))
        .arg("verify")
        .arg(&file)
        .args(["--trusted-key", &typo])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.contains("is malformed") && !err.contains("not among the trusted keys"), "{err}");
    let mut forged = ex.bundle.clone();
    let (_, payload_start, _) =
        tar_files(&ex.bundle).into_iter().find(|(path, _, _)| path.contains("/data/payload/")).unwrap();
    forged[payload_start as usize + 10] ^= 1;
    std::fs::write(&file, &forged).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_custodia"))
        .arg("verify")
        .arg(&file)
        .args(["--trusted-key", &verifier.to_string()])
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stdout).contains("FAIL payload hash"),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
}

/// Which part the verifier must blame when a byte of `path` changes.
fn expected_part(path: &str) -> Part {
    match path {
        p if p.contains("/data/payload/") => Part::PayloadHash,
        p if p.ends_with("data/manifest.json") || p.ends_with("data/manifest.sig") => Part::ManifestSignature,
        p if p.ends_with("data/checkpoint") => Part::Checkpoint,
        p if p.contains("/data/custody/") => Part::InclusionProof,
        p if p.ends_with("data/keys/gateway.vkey") => Part::TrustedKey,
        _ => Part::Bag,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flipped_byte_is_caught_and_the_broken_part_named() {
    let ex = exported(payload(3000)).await;
    let verifier = ex.gw.verifier();
    let files = tar_files(&ex.bundle);
    assert!(files.len() >= 12, "{files:?}");
    let mut flips = 0;
    for (path, start, size) in &files {
        // Every byte of the small signed files; larger files sampled, as their every byte is hashed the same way.
        let step = if *size > 1024 { 13 } else { 1 };
        for offset in (0..*size).step_by(step) {
            let mut tampered = ex.bundle.clone();
            tampered[(start + offset) as usize] ^= 0x01;
            let report = verify(tampered.as_slice(), std::slice::from_ref(&verifier)).unwrap();
            assert!(!report.is_valid(), "flipping byte {offset} of {path} went unnoticed");
            // The part the file stands for is blamed; or, where the flip leaves its meaning unchanged (a newline
            // turned into other whitespace), the bag's checksum names the very file.
            let failed = report.failed_parts();
            let relative = path.split_once('/').unwrap().1;
            let named = report.to_string().contains(&format!("{relative} does not match its checksum"));
            assert!(
                failed.contains(&expected_part(path)) || named,
                "byte {offset} of {path}: blamed {failed:?}\n{report}"
            );
            flips += 1;
        }
    }
    assert!(flips > 3000, "{flips}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_or_reordered_records_are_caught_even_with_fresh_bag_checksums() {
    let ex = exported(payload(1000)).await;
    let verifier = ex.gw.verifier();
    let caller_session = ex.session.clone();
    // Export again in-process to get the parts, then rebuild bags that a forger would make: consistent
    // checksums, but a history with a record missing, or two records swapped.
    let caller = ex.gw.caller(&caller_session).await;
    let id = custodia_core::ArtefactId::new(ex.artefact.clone()).unwrap();
    let purpose = custodia_core::Label::new("second export").unwrap();
    let source = ex.gw.state.gateway.export(&caller, &id, &purpose).await.unwrap();
    assert!(source.records.len() >= 4);
    let bundle_of = |source: &custodia_bundle::BundleSource| {
        let mut out = Vec::new();
        let payload = payload(1000);
        BundleWriter::new(source).unwrap().write_to(&mut payload.as_slice(), &mut out).unwrap();
        out
    };
    assert!(verify(bundle_of(&source).as_slice(), std::slice::from_ref(&verifier)).unwrap().is_valid());

    let mut dropped = source.clone();
    dropped.records.remove(1);
    let report = verify(bundle_of(&dropped).as_slice(), std::slice::from_ref(&verifier)).unwrap();
    assert_eq!(report.failed_parts(), [Part::CustodyHistory], "{report}");

    // Cut back to the first export, the bundle is that earlier export's: still true, and it says so.
    let mut earlier = source.clone();
    earlier.records.pop();
    assert!(verify(bundle_of(&earlier).as_slice(), std::slice::from_ref(&verifier)).unwrap().is_valid());
    // Cut anywhere else, the records after the cut are missing.
    let mut truncated = source.clone();
    truncated.records.truncate(2);
    let report = verify(bundle_of(&truncated).as_slice(), std::slice::from_ref(&verifier)).unwrap();
    assert_eq!(report.failed_parts(), [Part::CustodyHistory], "{report}");

    let mut swapped = source.clone();
    let (a, b) = (swapped.records[1].entry.clone(), swapped.records[2].entry.clone());
    swapped.records[1].entry = b;
    swapped.records[2].entry = a;
    let report = verify(bundle_of(&swapped).as_slice(), std::slice::from_ref(&verifier)).unwrap();
    assert!(report.failed_parts().contains(&Part::InclusionProof), "{report}");
}

fn extract(bundle: &[u8], into: &Path) -> std::path::PathBuf {
    tar::Archive::new(bundle).unpack(into).unwrap();
    let top = std::fs::read_dir(into).unwrap().next().unwrap().unwrap().path();
    assert!(top.join("bagit.txt").exists());
    top
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_of_congress_bagit_validates_our_bags() {
    let ex = exported(payload(50_000)).await;
    let dir = tempfile::tempdir().unwrap();
    let bag = extract(&ex.bundle, dir.path());
    let run = Command::new("python3").args(["-m", "bagit", "--validate"]).arg(&bag).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(
        !said.contains("No module named bagit"),
        "the bagit validator is missing; run scripts/setup-system.sh test"
    );
    assert!(run.status.success() && said.contains("is valid"), "{said}");

    std::fs::write(bag.join("data/REPORT.txt"), "edited").unwrap();
    let run = Command::new("python3").args(["-m", "bagit", "--validate"]).arg(&bag).output().unwrap();
    assert!(!run.status.success(), "bagit accepted an edited bag");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_by_hand_procedure_in_the_docs_works_with_standard_tools() {
    let ex = exported(payload(10_000)).await;
    let dir = tempfile::tempdir().unwrap();
    let bag = extract(&ex.bundle, dir.path());
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/verify-by-hand.md")).unwrap();
    // Every ```sh block of the document, run in order in the bag's directory, must succeed.
    let script: String =
        doc.split("```sh\n").skip(1).filter_map(|block| block.split("```").next()).collect::<Vec<_>>().join("\n");
    assert!(script.contains("openssl pkeyutl -verify") && script.contains("sha256sum"), "{script}");
    let (ok, said) = run_script(&script, &bag);
    assert!(ok, "{said}");
    assert!(said.contains("Signature Verified Successfully"), "{said}");
    assert!(
        said.contains("payload: OK")
            && said.contains("inclusion proof: OK")
            && said.contains("checkpoint signature: OK"),
        "{said}"
    );
    // The fingerprint printed by hand is the one the gateway publishes for courts to pin.
    let published = ex.gw.get("/api/v1/verifier-key", None).await;
    assert_eq!(published.status.as_u16(), 200);
    let published = published.json();
    assert_eq!(published["vkey"], ex.gw.verifier().to_string());
    let fingerprint = published["fingerprint"].as_str().unwrap();
    let key = ex.gw.verifier().public_key().unwrap();
    assert_eq!(fingerprint, custodia_core::Sha256::of(key.as_bytes()).to_hex());
    assert!(said.contains(&format!("key fingerprint: {fingerprint}")), "{said}");
    let page = ex.gw.get("/key", None).await;
    assert_eq!(page.status.as_u16(), 200);
    assert!(String::from_utf8_lossy(&page.body).contains("/key.js"));

    // And the same procedure fails on a tampered record.
    let record = std::fs::read_dir(bag.join("data/custody"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json") && !p.to_string_lossy().ends_with(".opening.json"))
        .unwrap();
    let text = std::fs::read_to_string(&record).unwrap();
    std::fs::write(&record, text.replacen("\"v\":2", "\"v\":3", 1)).unwrap();
    let (ok, _) = run_script(&script, &bag);
    assert!(!ok, "the by-hand check accepted a tampered record");
    std::fs::write(&record, text).unwrap();
    assert!(said.contains("openings: OK"), "{said}");

    // And on an opening whose text was changed: the purpose no longer opens the record's commitment.
    let opening = record.to_string_lossy().replace(".json", ".opening.json");
    let original = std::fs::read_to_string(&opening).unwrap();
    let purpose: serde_json::Value = serde_json::from_str(&original).unwrap();
    let stated = purpose["purpose"]["text"].as_str().unwrap();
    std::fs::write(&opening, original.replacen(stated, &format!("{stated}x"), 1)).unwrap();
    let (ok, said) = run_script(&script, &bag);
    assert!(!ok, "the by-hand check accepted an edited opening: {said}");
    std::fs::write(&opening, original).unwrap();

    // And on a refusal whose committed action is opened as another: the refused action says the role, so it is
    // committed, and its opening is checked like any other.
    let refusal = std::fs::read_dir(bag.join("data/custody"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.to_string_lossy().ends_with(".opening.json") && std::fs::read_to_string(p).unwrap().contains("\"action\"")
        })
        .expect("the bundle holds the witness's refusal, its action committed");
    let record = std::fs::read_to_string(refusal.to_string_lossy().replace(".opening.json", ".json")).unwrap();
    assert!(record.contains("\"type\":\"access_refused\"") && !record.contains("download_artefact"), "{record}");
    let original = std::fs::read_to_string(&refusal).unwrap();
    assert!(original.contains("\"text\":\"download_artefact\""), "{original}");
    std::fs::write(&refusal, original.replace("\"text\":\"download_artefact\"", "\"text\":\"view_case\"")).unwrap();
    let (ok, said) = run_script(&script, &bag);
    assert!(!ok, "the by-hand check accepted a refusal opened as another action: {said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_exports_as_one_bag_of_bundles_that_verifies_as_a_whole() {
    let gw = TestGateway::start().await;
    let (clerk, session) = gw.person("clerk1", "IT").await;
    gw.case("case-c").await;
    gw.member("case-c", &clerk, "clerk").await;
    for (i, size) in [5000, 70_000].into_iter().enumerate() {
        let reply = gw.upload("case-c", &format!("purpose=intake%20{i}"), As::Session(&session), payload(size)).await;
        assert_eq!(reply.status.as_u16(), 201);
    }
    let reply = gw
        .call("POST", "/api/v1/cases/case-c/exports?purpose=disclosure", Some(As::Session(&session)), json!({}))
        .await;
    assert_eq!(reply.status.as_u16(), 200, "{}", String::from_utf8_lossy(&reply.body));
    let verifier = gw.verifier();
    let report = verify(reply.body.as_slice(), std::slice::from_ref(&verifier)).unwrap();
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.records, 5, "a registration and an export per artefact, and the case export: {report}");

    let dir = tempfile::tempdir().unwrap();
    let bag = extract(&reply.body, dir.path());
    assert!(bag.file_name().unwrap().to_str().unwrap().starts_with("custodia-case-case-c"));
    let run = Command::new("python3").args(["-m", "bagit", "--validate"]).arg(&bag).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));

    // A byte of one artefact's evidence, in its bundle's directory: caught, and the artefact named.
    let (path, start, _) = tar_files(&reply.body)
        .into_iter()
        .find(|(path, _, size)| path.contains("/data/bundles/") && path.contains("/data/payload/") && *size >= 70_000)
        .unwrap();
    let mut tampered = reply.body.clone();
    tampered[start as usize + 100] ^= 1;
    let report = verify(tampered.as_slice(), std::slice::from_ref(&verifier)).unwrap();
    assert!(report.failed_parts().contains(&Part::PayloadHash), "{report}");
    let artefact = path.rsplit('/').next().unwrap();
    assert!(report.to_string().contains(&format!("FAIL payload hash: {artefact}")), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_export_is_refused_whole_when_one_artefact_forbids_it() {
    let gw = TestGateway::start().await;
    let (clerk, session) = gw.person("clerk1", "IT").await;
    gw.case("case-r").await;
    gw.member("case-r", &clerk, "clerk").await;
    gw.upload("case-r", "purpose=intake", As::Session(&session), payload(100)).await;
    let red = json!({ "tlp": "TLP:RED", "provider": "IT", "permitted_purposes": [], "permitted_recipients": [], "permitted_jurisdictions": [], "onward_transfer": "prohibited" });
    let request =
        TestGateway::request("POST", "/api/v1/cases/case-r/artefacts?purpose=intake", Some(As::Session(&session)))
            .header(
                "custodia-use-policy",
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, red.to_string()),
            )
            .body(axum::body::Body::from(payload(200)))
            .unwrap();
    let red_artefact = gw.send(request).await.json()["artefact"].as_str().unwrap().to_owned();
    let reply = gw
        .call("POST", "/api/v1/cases/case-r/exports?purpose=disclosure", Some(As::Session(&session)), json!({}))
        .await;
    reply.assert_problem(403, "use-restricted", &red_artefact);
    let listed = gw.get("/api/v1/cases/case-r/artefacts", Some(As::Session(&session))).await.json();
    for artefact in listed.as_array().unwrap() {
        let timeline = gw
            .get(
                &format!("/api/v1/artefacts/{}/timeline", artefact["id"].as_str().unwrap()),
                Some(As::Session(&session)),
            )
            .await
            .json();
        let exported =
            timeline["records"].as_array().unwrap().iter().any(|r| r["record"]["event"]["type"] == "artefact_exported");
        assert!(!exported, "a refused case export recorded an export");
    }
}

/// The body of an HTTP/1.1 answer, its chunked transfer coding undone if it has one.
fn answer_body(answer: &support::RawAnswer) -> Vec<u8> {
    if !answer.head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return answer.body.clone();
    }
    let (mut body, mut rest) = (Vec::new(), answer.body.as_slice());
    loop {
        let line = rest.windows(2).position(|pair| pair == b"\r\n").expect("a chunk size line");
        let size = std::str::from_utf8(&rest[..line]).unwrap().split(';').next().unwrap().trim();
        let size = usize::from_str_radix(size, 16).unwrap();
        rest = &rest[line + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// F6: case exports raced by uploads to the same case, by downloads and by policy changes of an artefact in it,
/// over HTTP on a real socket. Every export completes (none refused because the case grew meanwhile), each holds
/// the case as it stood when it began, and each bundle verifies with `custodia verify`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn case_exports_complete_and_verify_while_uploads_keep_coming() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const EXPORTERS: usize = 3;
    const EXPORTS_EACH: usize = 3;
    let gw = TestGateway::start_with(|config| config.quotas.uploads_per_minute = 100_000).await;
    let (clerk, session) = gw.person("clerk1", "IT").await;
    gw.case("case-s").await;
    gw.member("case-s", &clerk, "clerk").await;
    let first = upload_all(&gw, &session, "case-s", &[4000, 9000]).await;
    let port = support::serve_on_loopback(&gw).await;
    let here = std::net::Ipv4Addr::LOCALHOST;
    let cookie = format!("custodia_session={session}");
    let headers = Arc::new([
        ("Cookie".to_owned(), cookie),
        ("Sec-Fetch-Site".to_owned(), "same-origin".to_owned()),
        ("Content-Type".to_owned(), "video/webm".to_owned()),
    ]);
    let header_refs = |headers: &[(String, String); 3]| -> Vec<(String, String)> { headers.to_vec() };
    let send = move |method: &'static str, path: String, headers: Vec<(String, String)>, body: Vec<u8>| async move {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        support::http_from(here, port, method, &path, &headers, &body).await.unwrap()
    };

    let stop = Arc::new(AtomicBool::new(false));
    let uploaded = Arc::new(AtomicUsize::new(0));
    let uploader = {
        let (stop, uploaded, headers) = (stop.clone(), uploaded.clone(), headers.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let path = format!("/api/v1/cases/case-s/artefacts?purpose=steady%20intake%20{i}");
                let answer = send("POST", path, header_refs(&headers), payload(1000 + i)).await;
                assert_eq!(answer.status, 201, "an upload during the exports: {}", answer.text());
                uploaded.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // Accesses and policy changes on an exported artefact, in the same race.
    let toucher = {
        let (stop, headers, artefact) = (stop.clone(), headers.clone(), first[0].clone());
        tokio::spawn(async move {
            let mut touched = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let path = format!("/api/v1/artefacts/{artefact}/content?purpose=review");
                let answer = send("GET", path, header_refs(&headers), Vec::new()).await;
                assert_eq!(answer.status, 200, "a download during the exports: {}", answer.head);
                let policy = json!({ "tlp": "TLP:AMBER", "provider": "IT", "permitted_purposes": [],
                    "permitted_recipients": [], "permitted_jurisdictions": [], "onward_transfer": "permitted" });
                let mut json_headers = header_refs(&headers);
                json_headers[2].1 = "application/json".to_owned();
                let path = format!("/api/v1/artefacts/{artefact}/policy");
                let answer = send("PUT", path, json_headers, policy.to_string().into_bytes()).await;
                assert_eq!(answer.status, 200, "a policy change during the exports: {}", answer.text());
                touched += 1;
            }
            touched
        })
    };
    // Uploads are under way before the first export starts.
    while uploaded.load(Ordering::SeqCst) == 0 {
        // An uploader that failed has said why: its panic, not a wait here for ever.
        if uploader.is_finished() {
            uploader.await.unwrap();
            unreachable!("the uploader stopped before it was told to");
        }
        tokio::task::yield_now().await;
    }
    let mut exporters = Vec::new();
    for exporter in 0..EXPORTERS {
        let headers = headers.clone();
        exporters.push(tokio::spawn(async move {
            let mut bundles = Vec::new();
            for export in 0..EXPORTS_EACH {
                let path = format!("/api/v1/cases/case-s/exports?purpose=disclosure%20{exporter}%20{export}");
                let answer = send("POST", path, header_refs(&headers), Vec::new()).await;
                assert_eq!(answer.status, 200, "a case export under steady uploads: {}", answer.text());
                bundles.push(answer_body(&answer));
            }
            bundles
        }));
    }
    let mut bundles = Vec::new();
    for exporter in exporters {
        bundles.extend(exporter.await.unwrap());
    }
    stop.store(true, Ordering::SeqCst);
    uploader.await.unwrap();
    let touched = toucher.await.unwrap();
    let uploads = uploaded.load(Ordering::SeqCst);
    eprintln!("{} case exports beside {uploads} uploads and {touched} downloads with policy changes", bundles.len());
    assert_eq!(bundles.len(), EXPORTERS * EXPORTS_EACH);

    let key = gw.verifier().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut sizes = std::collections::BTreeSet::new();
    for (n, bundle) in bundles.iter().enumerate() {
        let report = verify(bundle.as_slice(), std::slice::from_ref(&gw.verifier())).unwrap();
        assert!(report.is_valid(), "export {n}: {report}");
        let listed = bundled_artefacts(bundle).len();
        assert!(listed >= first.len(), "export {n} holds {listed} artefact bundles");
        sizes.insert(listed);
        let file = dir.path().join(format!("case-{n}.tar"));
        std::fs::write(&file, bundle).unwrap();
        let run = Command::new(env!("CARGO_BIN_EXE_custodia"))
            .args(["verify"])
            .arg(&file)
            .args(["--trusted-key", &key])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success() && said.lines().last().unwrap().starts_with("VALID"), "export {n}: {said}");
    }
    // The case grew while it was being exported: the exports hold different numbers of artefacts.
    assert!(sizes.len() > 1, "every export held the same artefacts ({sizes:?}): the uploads never raced them");
}

/// A case with artefacts `sizes`, each uploaded by the clerk; their ids.
async fn upload_all(gw: &TestGateway, session: &str, case: &str, sizes: &[usize]) -> Vec<String> {
    let mut ids = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let reply = gw.upload(case, &format!("purpose=intake%20{i}"), As::Session(session), payload(*size)).await;
        assert_eq!(reply.status.as_u16(), 201);
        ids.push(reply.json()["artefact"].as_str().unwrap().to_owned());
    }
    ids
}

async fn export_case(gw: &TestGateway, session: &str, case: &str) -> Vec<u8> {
    let uri = format!("/api/v1/cases/{case}/exports?purpose=disclosure");
    let reply = gw.call("POST", &uri, Some(As::Session(session)), json!({})).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", String::from_utf8_lossy(&reply.body));
    reply.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_bundle_with_an_artefact_withheld_added_or_swapped_is_not_valid() {
    let gw = TestGateway::start().await;
    let (clerk, session) = gw.person("clerk1", "IT").await;
    gw.case("case-k").await;
    gw.member("case-k", &clerk, "clerk").await;
    let ids = upload_all(&gw, &session, "case-k", &[5000, 70_000]).await;
    let first = export_case(&gw, &session, "case-k").await;
    let later = upload_all(&gw, &session, "case-k", &[3000]).await;
    let second = export_case(&gw, &session, "case-k").await;
    let verifier = gw.verifier();
    for bundle in [&first, &second] {
        let report = verify(bundle.as_slice(), std::slice::from_ref(&verifier)).unwrap();
        assert!(report.is_valid(), "{report}");
    }
    let unpacked = tempfile::tempdir().unwrap();
    let second_bag = extract(&second, unpacked.path());
    let inner = |artefact: &str| second_bag.join(format!("data/bundles/{artefact}"));

    // Withheld: one artefact's bundle deleted, its line gone from REPORT.txt, the bag's checksums made afresh.
    let withheld = rebagged(&first, |bag| {
        std::fs::remove_dir_all(bag.join(format!("data/bundles/{}", ids[1]))).unwrap();
        drop_report_lines(bag, &ids[1]);
    });
    // Swapped: one artefact's bundle replaced by its bundle from the other export, each valid on its own.
    let swapped = rebagged(&first, |bag| {
        let dir = bag.join(format!("data/bundles/{}", ids[0]));
        std::fs::remove_dir_all(&dir).unwrap();
        copy_tree(&inner(&ids[0]), &dir);
    });
    // Added: a bundle from the other export that this export did not hold.
    let added = rebagged(&first, |bag| {
        copy_tree(&inner(&later[0]), &bag.join(format!("data/bundles/{}", later[0])));
    });
    // Without its case export record (and the listing), as case bundles were before.
    let unrecorded = rebagged(&first, |bag| {
        std::fs::remove_dir_all(bag.join("data/custody")).unwrap();
        std::fs::remove_file(bag.join("data/case-listing.json")).unwrap();
    });
    // The withheld artefact's line was dropped from the certificate too, which no longer says what the listing
    // does; the others left the certificate as the export wrote it.
    let expectations = [
        (&withheld, format!("artefact {} is missing", ids[1]), &[Part::CaseContents, Part::Report][..]),
        (
            &swapped,
            format!("artefact {}: data/bundles/{}/ is not the bundle this export made", ids[0], ids[0]),
            &[Part::CaseContents][..],
        ),
        (&added, format!("data/bundles/{}/ is not in the case export record", later[0]), &[Part::CaseContents][..]),
        (
            &unrecorded,
            "a case bundle holds exactly one custody record, its case export record; this one holds 0".to_owned(),
            &[Part::CaseContents][..],
        ),
    ];
    for (forged, named, parts) in &expectations {
        let report = verify(forged.as_slice(), std::slice::from_ref(&verifier)).unwrap();
        assert_eq!(report.failed_parts(), *parts, "{report}");
        assert!(report.to_string().contains(&format!("FAIL case contents: {named}")), "{named}\n{report}");
    }

    // The CLI says the same, and fails.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("withheld.tar");
    std::fs::write(&file, &withheld).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_custodia"))
        .arg("verify")
        .arg(&file)
        .args(["--trusted-key", &verifier.to_string()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "{out}");
    assert!(out.contains(&format!("artefact {} is missing", ids[1])) && out.contains("NOT VALID"), "{out}");

    // The export is one record in the public log: its listing's digest and count, no names.
    let size = gw.ledger_size();
    let mut found = 0;
    for index in 0..size {
        let record = gw.ledger_record(index).await;
        if record["event"]["type"] == "case_exported" {
            assert_eq!(record["event"].as_object().unwrap().len(), 3, "{record}");
            assert!(record["event"]["listing_sha256"].is_string(), "{record}");
            found += 1;
            assert_eq!(record["event"]["artefacts"], if found == 1 { 2 } else { 3 }, "{record}");
        }
    }
    assert_eq!(found, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_by_hand_procedure_checks_a_case_bundle_and_names_a_withheld_artefact() {
    let gw = TestGateway::start().await;
    let (clerk, session) = gw.person("clerk1", "IT").await;
    gw.case("case-h").await;
    gw.member("case-h", &clerk, "clerk").await;
    let ids = upload_all(&gw, &session, "case-h", &[4000, 9000]).await;
    let bundle = export_case(&gw, &session, "case-h").await;
    let (artefact_blocks, _) = by_hand_blocks();
    let case_script = by_hand_case_script();
    let dir = tempfile::tempdir().unwrap();
    let bag = extract(&bundle, dir.path());
    let (ok, said) = run_script(&case_script, &bag);
    assert!(ok, "{said}");
    assert!(
        said.contains("case contents: OK (2 artefact bundles")
            && said.contains("scope: OK (the whole case case-h")
            && said.contains("bag-info.txt: OK")
            && said.contains("inclusion proof: OK")
            && said.contains("checkpoint signature: OK"),
        "{said}"
    );
    // Each artefact bundle in it, by the artefact steps.
    for id in &ids {
        let (ok, said) = run_script(&artefact_blocks.join("\n"), &bag.join(format!("data/bundles/{id}")));
        assert!(ok && said.contains("payload: OK"), "{id}: {said}");
    }

    // An artefact withheld, with fresh bag checksums: the case steps fail, naming it.
    let withheld = rebagged(&bundle, |bag| {
        std::fs::remove_dir_all(bag.join(format!("data/bundles/{}", ids[0]))).unwrap();
        drop_report_lines(bag, &ids[0]);
    });
    let dir = tempfile::tempdir().unwrap();
    let (ok, said) = run_script(&case_script, &extract(&withheld, dir.path()));
    assert!(!ok, "the by-hand check accepted a case bundle with an artefact withheld: {said}");
    assert!(said.contains("< ") && said.contains(&format!("data/bundles/{}", ids[0])), "{said}");

    // The case export record's opening beside it: its purpose edited, or a second opening slipped in beside it, each
    // with fresh bag checksums. The case steps fail, and the verifier names the part.
    let opening_of = |bag: &Path| {
        std::fs::read_dir(bag.join("data/custody"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|path| path.to_string_lossy().ends_with(".opening.json"))
            .unwrap()
    };
    let edited = rebagged(&bundle, |bag| {
        let path = opening_of(bag);
        let mut openings = custodia_core::Openings::from_canonical(&std::fs::read(&path).unwrap()).unwrap();
        let purpose = openings.get("purpose").unwrap().clone();
        openings.insert("purpose", custodia_core::Opening { text: format!("{} (edited)", purpose.text), ..purpose });
        std::fs::write(&path, openings.to_canonical()).unwrap();
    });
    let stray = rebagged(&bundle, |bag| {
        std::fs::copy(opening_of(bag), bag.join("data/custody/000000000001.opening.json")).unwrap();
    });
    let verifier = gw.verifier();
    for (forged, part, named) in [
        (&edited, Part::Openings, "the opening of `purpose` does not match"),
        (&stray, Part::Bag, "data/custody/000000000001.opening.json does not belong in a case bundle"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (ok, said) = run_script(&case_script, &extract(forged, dir.path()));
        assert!(!ok, "the by-hand check accepted a case bundle with its custody files changed ({named}): {said}");
        let report = verify(forged.as_slice(), std::slice::from_ref(&verifier)).unwrap();
        assert_eq!(report.failed_parts(), [part], "{report}");
        assert!(report.to_string().contains(named), "{named}\n{report}");
    }
}

/// Streams a hostile "bundle" into `out`: `files` small files of `size` bytes under one bag directory, as fast as the
/// reader takes them, until done or the reader stops reading.
fn write_small_files(out: &mut impl std::io::Write, files: usize, size: usize) {
    let data = vec![b'{'; size];
    let padding = vec![0u8; size.next_multiple_of(512) - size];
    for i in 0..files {
        let mut header = tar::Header::new_ustar();
        header.set_path(format!("custodia-bundle-x/data/custody/{i:012}.json")).unwrap();
        header.set_size(size as u64);
        header.set_mode(0o644);
        header.set_cksum();
        let written =
            out.write_all(header.as_bytes()).and_then(|()| out.write_all(&data)).and_then(|()| out.write_all(&padding));
        if written.is_err() {
            return; // the verifier stopped reading, as it should
        }
    }
    let _ = out.write_all(&[0; 1024]);
}

/// One PAX record, `<length> <key>=<value>\n`, its length counting itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut length = body.len() + 1;
    while format!("{length}{body}").len() != length {
        length += 1;
    }
    format!("{length}{body}").into_bytes()
}

/// A tar header of `kind` for `path` with `size` bytes of data.
fn tar_header(path: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_path(path).unwrap();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    header
}

/// Streams a tar whose first entry is a PAX extended header of `size` bytes (one long `comment`), then a file: a
/// reader that holds an extended header whole holds all of it.
fn write_huge_pax_header(out: &mut impl std::io::Write, size: usize) {
    let header = tar_header("custodia-bundle-x/PaxHeaders/bagit.txt", tar::EntryType::XHeader, size as u64);
    if out.write_all(header.as_bytes()).is_err() {
        return;
    }
    let chunk = vec![b'a'; 1 << 20];
    let mut left = size;
    let prefix = format!("{size} comment=");
    if out.write_all(prefix.as_bytes()).is_err() {
        return;
    }
    left -= prefix.len();
    while left > 1 {
        let n = left.min(chunk.len()) - usize::from(left <= chunk.len());
        if out.write_all(&chunk[..n]).is_err() {
            return; // the verifier stopped reading, as it should
        }
        left -= n;
    }
    let _ = out.write_all(b"\n");
    let _ = out.write_all(&vec![0u8; size.next_multiple_of(512) - size]);
    let file = tar_header("custodia-bundle-x/bagit.txt", tar::EntryType::Regular, 0);
    let _ = out.write_all(file.as_bytes());
    let _ = out.write_all(&[0; 1024]);
}

/// Streams `entries` tiny entries, each an empty file whose long path (`path_len` bytes) comes in a PAX header of
/// its own, as a tar tool writes long names.
fn write_tiny_entries_with_long_paths(out: &mut impl std::io::Write, entries: usize, path_len: usize) {
    for i in 0..entries {
        let stem = format!("custodia-bundle-x/data/custody/{i:012}-");
        let path = format!("{stem}{}.json", "p".repeat(path_len.saturating_sub(stem.len() + 5)));
        let record = pax_record("path", &path);
        let pax = tar_header("custodia-bundle-x/PaxHeaders/entry", tar::EntryType::XHeader, record.len() as u64);
        let file = tar_header("custodia-bundle-x/data/custody/short.json", tar::EntryType::Regular, 0);
        let padding = vec![0u8; record.len().next_multiple_of(512) - record.len()];
        let written = out
            .write_all(pax.as_bytes())
            .and_then(|()| out.write_all(&record))
            .and_then(|()| out.write_all(&padding))
            .and_then(|()| out.write_all(file.as_bytes()));
        if written.is_err() {
            return; // the verifier stopped reading, as it should
        }
    }
    let _ = out.write_all(&[0; 1024]);
}

/// Runs `custodia verify - --trusted-key <key>` on what `feed` writes, through python's getrusage so that the kernel's
/// count of the child's peak resident memory is read exactly. (exit code, stderr, peak RSS in MiB)
fn verify_stdin_peak_rss(key: &str, feed: impl FnOnce(&mut std::process::ChildStdin) + Send) -> (i32, String, u64) {
    let script = "import resource, subprocess, sys\n\
                  code = subprocess.run(sys.argv[1:]).returncode\n\
                  print('maxrss-kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n\
                  sys.exit(code)";
    let mut child = Command::new("python3")
        .args(["-c", script, env!("CARGO_BIN_EXE_custodia"), "verify", "-", "--trusted-key", key])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::scope(|scope| {
        scope.spawn(move || feed(&mut stdin));
    });
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let kib: u64 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("maxrss-kib "))
        .unwrap_or_else(|| panic!("no peak memory reported: {stdout}"))
        .trim()
        .parse()
        .unwrap();
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned(), kib >> 10)
}

#[test]
fn the_cli_keeps_its_memory_bounded_on_hostile_bundles() {
    let key = custodia_ledger::LogSigner::generate("custodia.localhost/log").unwrap().verifier().to_string();
    // 400 MiB of 512 KiB files: kept whole, they would take 400 MiB and more. The verifier stops at its limit.
    let (code, said, peak_mib) = verify_stdin_peak_rss(&key, |stdin| write_small_files(stdin, 800, 512 << 10));
    eprintln!("400 MiB of small files: exit {code}, peak RSS {peak_mib} MiB");
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("too large to check") && said.contains("64 MiB"), "{said}");
    let limit_mib = (custodia_bundle::MAX_KEPT_BYTES >> 20) + 136;
    assert!(peak_mib < limit_mib, "peak RSS {peak_mib} MiB, more than {limit_mib} MiB: {said}");

    // A PAX extended header of 100 MiB: refused from its header, before a byte of it is held.
    let (code, said, peak_mib) = verify_stdin_peak_rss(&key, |stdin| write_huge_pax_header(stdin, 100 << 20));
    eprintln!("a 100 MiB PAX header: exit {code}, peak RSS {peak_mib} MiB");
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("malformed") && said.contains("an extended header of 104857600 bytes"), "{said}");
    assert!(peak_mib < limit_mib, "peak RSS {peak_mib} MiB, more than {limit_mib} MiB: {said}");

    // A million tiny entries, each with a 1,000-byte path in a PAX header: the names count toward what is kept.
    let (code, said, peak_mib) =
        verify_stdin_peak_rss(&key, |stdin| write_tiny_entries_with_long_paths(stdin, 1_000_000, 1000));
    eprintln!("a million tiny entries with 1,000-byte paths: exit {code}, peak RSS {peak_mib} MiB");
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("too large to check"), "{said}");
    assert!(peak_mib < limit_mib, "peak RSS {peak_mib} MiB, more than {limit_mib} MiB: {said}");

    // 300,000 empty files: the count is capped too.
    let (code, said, peak_mib) = verify_stdin_peak_rss(&key, |stdin| write_small_files(stdin, 300_000, 0));
    eprintln!("300,000 empty files: exit {code}, peak RSS {peak_mib} MiB");
    assert_eq!(code, 1, "{said}");
    assert!(said.contains(&format!("more than {} files", custodia_bundle::MAX_FILES)), "{said}");
    assert!(peak_mib < limit_mib, "peak RSS {peak_mib} MiB, more than {limit_mib} MiB: {said}");
}

/// Runs `custodia verify <bundle> --trusted-key <key>`: (exit code, stdout, stderr).
fn cli_verify(bundle: &[u8], key: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bundle.tar");
    std::fs::write(&file, bundle).unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_custodia"))
        .arg("verify")
        .arg(&file)
        .args(["--trusted-key", key])
        .output()
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).expect("the CLI writes UTF-8");
    (run.status.code().unwrap_or(-1), text(&run.stdout), text(&run.stderr))
}

/// What a terminal or a page would act on instead of showing: any control character but the line feeds that end
/// the CLI's own lines, a line or paragraph separator, or a bidirectional or other invisible format character.
fn acts_on_display(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{061C}' | '\u{200B}' | '\u{200E}' | '\u{200F}' | '\u{FEFF}')
        || ('\u{202A}'..='\u{202E}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// F4: names in a bundle (a forger's file, a tar entry) can carry terminal escape sequences (`ESC[1A` moves the
/// cursor up a line, `ESC[2K` erases it), line breaks and bidirectional overrides. The CLI shows each as `\u{..}`:
/// its output holds none of them, and its verdict line is there and intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_hostile_names_escaped_and_its_verdict_intact() {
    let ex = exported(payload(3000)).await;
    let key = ex.gw.verifier().to_string();
    let hostile = "\u{1b}[1A\u{1b}[2K\u{1b}]0;VALID\u{7}ok   bag structure: fine\u{202E}fdp.exe\u{2066}";

    // A forger's file, listed in fresh BagIt manifests: reported as a stray, its name escaped.
    let forged = rebagged(&ex.bundle, |bag| std::fs::write(bag.join("data").join(hostile), b"planted").unwrap());
    let (code, stdout, stderr) = cli_verify(&forged, &key);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(!all.chars().any(acts_on_display), "the output acts on the terminal: {all:?}");
    assert!(stdout.contains("\\u{1b}[1A\\u{1b}[2K") && stdout.contains("\\u{202e}fdp.exe"), "{stdout}");
    let verdicts: Vec<&str> =
        stdout.lines().filter(|line| line.starts_with("VALID") || line.starts_with("NOT ")).collect();
    assert_eq!(verdicts.len(), 1, "{stdout}");
    assert!(stdout.lines().last().unwrap().starts_with("NOT VALID: bag structure and checksums"), "{stdout}");
    assert!(stdout.lines().any(|line| line.starts_with("FAIL ") && line.contains("does not belong")), "{stdout}");
    assert!(stderr.contains("FAILED verification"), "{stderr}");

    // A tar entry whose name breaks the line and moves the cursor, twice: refused as malformed, and the message
    // that quotes it (stderr) is one line.
    let mut builder = tar::Builder::new(Vec::new());
    let mut top = String::new();
    for entry in tar::Archive::new(ex.bundle.as_slice()).entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut header = entry.header().clone();
        let path = entry.path().unwrap().display().to_string();
        top = path.split('/').next().unwrap().to_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        builder.append_data(&mut header, &path, data.as_slice()).unwrap();
    }
    for _ in 0..2 {
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        let name = format!("{top}/data/\u{1b}[1A\u{1b}[2K\nVALID: \u{202E}x");
        builder.append_data(&mut header, name, &b"x"[..]).unwrap();
    }
    let (code, stdout, stderr) = cli_verify(&builder.into_inner().unwrap(), &key);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(!all.chars().any(acts_on_display), "the output acts on the terminal: {all:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("FAILED verification") && stderr.contains("appears twice"), "{stderr}");
    assert!(stderr.contains("\\u{1b}[1A\\u{1b}[2K\\u{a}VALID: \\u{202e}x"), "{stderr}");
    assert!(!stdout.lines().any(|line| line.starts_with("VALID")), "{stdout}");
}

/// Every check of the by-hand document says `OK` or `FAILED` on its own, as a reader runs it: pasted into plain
/// bash, without `set -e`, where a bare `test` that fails would go unnoticed and the next line would print "OK".
/// A bag forged in one part at a time, each with fresh bag checksums where that hides the change, makes the check of
/// that part say FAILED and never OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_by_hand_check_says_failed_in_plain_bash() {
    let ex = exported(payload(3000)).await;
    let (blocks, _) = by_hand_blocks();
    let script = blocks.join("\n");
    let plain = |bundle: &[u8]| {
        let dir = tempfile::tempdir().unwrap();
        let bag = extract(bundle, dir.path());
        run_script_plain(&script, &bag).1
    };
    const CHECKS: [&str; 11] = [
        "bag checksums",
        "bag-info.txt",
        "payload",
        "key",
        "manifest signature",
        "checkpoint signature",
        "inclusion proof",
        "registration",
        "openings",
        "bag contents",
        "certificate",
    ];
    let said = plain(&ex.bundle);
    for check in CHECKS {
        assert!(said.contains(&format!("{check}: OK")), "{check}: {said}");
    }
    assert!(!said.contains("FAILED"), "{said}");

    let first_record = |bag: &Path| {
        let mut records: Vec<_> = std::fs::read_dir(bag.join("data/custody"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                path.to_string_lossy().ends_with(".json") && !path.to_string_lossy().ends_with(".opening.json")
            })
            .collect();
        records.sort();
        records.remove(0)
    };
    let in_file = |path: std::path::PathBuf, from: String, to: String| {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&from), "{from:?} not in {}", path.display());
        std::fs::write(&path, text.replacen(&from, &to, 1)).unwrap();
    };
    let forged: [(&str, Vec<u8>); 10] = [
        ("bag checksums", {
            let dir = tempfile::tempdir().unwrap();
            let bag = extract(&ex.bundle, dir.path());
            let payload = std::fs::read_dir(bag.join("data/payload")).unwrap().next().unwrap().unwrap().path();
            std::fs::write(&payload, b"other bytes").unwrap();
            let out = dir.path().join("forged.tar");
            let parent = bag.parent().unwrap();
            let mut tar = Command::new("tar");
            tar.arg("-cf").arg(&out).arg("-C").arg(parent).arg(bag.file_name().unwrap());
            assert!(tar.output().unwrap().status.success());
            std::fs::read(out).unwrap()
        }),
        (
            "bag-info.txt",
            retagged(&ex.bundle, |bag| {
                in_file(bag.join("bag-info.txt"), "Payload-Oxum".into(), "Note: forged\nPayload-Oxum".into())
            }),
        ),
        (
            "payload",
            rebagged(&ex.bundle, |bag| {
                let payload = std::fs::read_dir(bag.join("data/payload")).unwrap().next().unwrap().unwrap().path();
                std::fs::write(payload, b"other bytes").unwrap();
            }),
        ),
        (
            "key",
            rebagged(&ex.bundle, |bag| {
                let other = custodia_ledger::LogSigner::generate("custodia.test/other").unwrap().verifier().to_string();
                std::fs::write(bag.join("data/keys/gateway.vkey"), format!("{other}\n")).unwrap();
            }),
        ),
        (
            "manifest signature",
            rebagged(&ex.bundle, |bag| {
                let path = bag.join("data/manifest.sig");
                let mut signature = std::fs::read(&path).unwrap();
                signature[0] ^= 1;
                std::fs::write(path, signature).unwrap();
            }),
        ),
        (
            "checkpoint signature",
            rebagged(&ex.bundle, |bag| {
                let path = bag.join("data/checkpoint");
                let text = std::fs::read_to_string(&path).unwrap();
                let size = text.lines().nth(1).unwrap().to_owned();
                in_file(path, format!("\n{size}\n"), format!("\n{}\n", size.parse::<u64>().unwrap() + 1));
            }),
        ),
        (
            "registration",
            rebagged(&ex.bundle, |bag| {
                let path = bag.join("data/manifest.json");
                let text = std::fs::read_to_string(&path).unwrap();
                std::fs::write(path, text.replacen("\"size\":", "\"size\": ", 1)).unwrap();
            }),
        ),
        (
            "openings",
            rebagged(&ex.bundle, |bag| {
                let opening = first_record(bag).to_string_lossy().replace(".json", ".opening.json");
                in_file(opening.into(), "statement intake".into(), "statement intakes".into());
            }),
        ),
        ("bag contents", rebagged(&ex.bundle, |bag| std::fs::write(bag.join("data/planted.txt"), b"planted").unwrap())),
        (
            "certificate",
            rebagged(&ex.bundle, |bag| in_file(bag.join("data/REPORT.txt"), "SHA-256:".into(), "SHA-256: 0".into())),
        ),
    ];
    for (check, bundle) in forged {
        let said = plain(&bundle);
        assert!(said.contains(&format!("{check}: FAILED")), "{check} did not say FAILED: {said}");
        // The openings are checked record by record: the others' still say OK.
        if check != "openings" {
            assert!(!said.lines().any(|line| line.starts_with(&format!("{check}: OK"))), "{check} said OK: {said}");
        }
    }
}

/// The by-hand document's `check_tar` refuses the tar tricks the verifiers refuse (a link, a name twice, an
/// extended header that gives more than a path and a size, a directory that carries data), and passes a bundle as
/// the gateway made it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_by_hand_tar_check_refuses_what_the_verifiers_refuse() {
    let ex = exported(payload(2000)).await;
    let (blocks, _) = by_hand_blocks();
    let definition = blocks.iter().find(|block| block.contains("check_tar()")).expect("the document defines check_tar");
    let entries: Vec<(tar::Header, String, Vec<u8>)> = tar::Archive::new(ex.bundle.as_slice())
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            (entry.header().clone(), path, data)
        })
        .collect();
    let top = entries[0].1.split('/').next().unwrap().to_owned();
    // The bundle as it came, then with `add` writing more entries at its end.
    let with = |add: &dyn Fn(&mut tar::Builder<Vec<u8>>)| {
        let mut builder = tar::Builder::new(Vec::new());
        for (header, path, data) in &entries {
            builder.append_data(&mut header.clone(), path, data.as_slice()).unwrap();
        }
        add(&mut builder);
        builder.into_inner().unwrap()
    };
    let file = |path: &str, data: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        (header, format!("{top}/{path}"), data.to_vec())
    };
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, bundle: &[u8]| {
        let path = dir.path().join(format!("{name}.tar"));
        std::fs::write(&path, bundle).unwrap();
        // As a reader runs it: plain bash, without -e, so only check_tar's own status and words count.
        run_script_plain(&format!("{definition}\ncheck_tar {}", path.display()), dir.path())
    };
    // A file under a name written as is: the tar crate would tidy `./` and `//` away.
    let raw = |builder: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.as_ustar_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        builder.append(&header, data).unwrap();
    };

    let (ok, said) = check("as-made", &ex.bundle);
    assert!(ok && said.contains("tar: OK"), "{said}");
    // The document's other commands on the tar itself: nothing past the end-of-archive marker, and it unpacks.
    let (ok, said) =
        run_script("diff <(tar -tf as-made.tar) <(tar -tif as-made.tar) && tar -xf as-made.tar", dir.path());
    assert!(ok, "{said}");
    assert!(dir.path().join(&top).join("bagit.txt").is_file());
    let (ok, said) = check("rewritten", &with(&|_| {}));
    assert!(ok, "the test's own rewriting is refused: {said}");
    let forgeries: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "link",
            with(&|builder| {
                let mut header = tar::Header::new_ustar();
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                header.set_mode(0o777);
                builder.append_link(&mut header, format!("{top}/data/evidence"), "/etc/passwd").unwrap();
            }),
            "neither a regular file nor an empty directory",
        ),
        (
            "twice",
            with(&|builder| {
                let (mut header, path, data) = file("data/REPORT.txt", b"a second certificate");
                builder.append_data(&mut header, path, data.as_slice()).unwrap();
            }),
            "appears twice",
        ),
        (
            "pax-mtime",
            with(&|builder| {
                builder.append_pax_extensions([("mtime", &b"1700000000"[..])]).unwrap();
                let (mut header, path, data) = file("data/later.txt", b"x");
                builder.append_data(&mut header, path, data.as_slice()).unwrap();
            }),
            "an extended header gives ['mtime']",
        ),
        (
            "directory-with-data",
            with(&|builder| {
                let mut header = tar::Header::new_ustar();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(512);
                header.set_mode(0o755);
                builder.append_data(&mut header, format!("{top}/data/more/"), &[0u8; 512][..]).unwrap();
            }),
            "neither a regular file nor an empty directory",
        ),
        // Names that differ as text and that `tar -xf` writes to the one certificate file.
        (
            "dot-duplicate",
            with(&|builder| raw(builder, &format!("{top}/./data/REPORT.txt"), b"a forged certificate")),
            "a hostile path",
        ),
        (
            "slash-duplicate",
            with(&|builder| raw(builder, &format!("{top}/data//REPORT.txt"), b"a forged certificate")),
            "a hostile path",
        ),
        (
            "trailing-dot",
            with(&|builder| raw(builder, &format!("{top}/data/REPORT.txt/."), b"a forged certificate")),
            "a hostile path",
        ),
        (
            "dot-dot",
            with(&|builder| raw(builder, &format!("{top}/data/../data/REPORT.txt"), b"a forged certificate")),
            "a hostile path",
        ),
    ];
    let verifier = ex.gw.verifier();
    for (name, forged, says) in &forgeries {
        let (ok, said) = check(name, forged);
        assert!(!ok && said.contains(says) && !said.contains("tar: OK"), "{name}: check_tar said {said}");
        assert!(said.contains("tar: FAILED"), "{name}: check_tar said {said}");
        match verify(forged.as_slice(), std::slice::from_ref(&verifier)) {
            Ok(report) => assert_eq!(report.verdict(), Verdict::Invalid, "{name}: {report}"),
            Err(err) => assert!(matches!(err, custodia_bundle::VerifyError::Malformed(_)), "{name}: {err}"),
        }
    }
}

/// Typed text that would act on a page or a terminal is refused at the door, as file names are: a purpose with a
/// line separator would forge a custody line in REPORT.txt for viewers that break lines there, and a bidi control
/// reorders what follows it. The zero-width non-joiner that Persian needs is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_text_with_a_line_separator_or_a_bidi_control_is_refused() {
    let ex = exported(payload(3000)).await;
    let (gw, session, artefact) = (&ex.gw, As::Session(&ex.session), &ex.artefact);
    let before = gw.state.gateway.catalog().custody_indexed_up_to().await.unwrap();
    let forged_line = "review%E2%80%A8%20%20%2399%202026-01-01%20exported%20by%20the%20judge";
    for (what, uri, code) in [
        ("download", format!("/api/v1/artefacts/{artefact}/content?purpose={forged_line}"), "U+2028"),
        ("download", format!("/api/v1/artefacts/{artefact}/content?purpose=a%E2%80%A9b"), "U+2029"),
        ("download", format!("/api/v1/artefacts/{artefact}/content?purpose=fdp%E2%80%AEexe"), "U+202E"),
        ("download", format!("/api/v1/artefacts/{artefact}/content?purpose=x%E2%81%A6y"), "U+2066"),
        ("download", format!("/api/v1/artefacts/{artefact}/content?purpose=Am%E2%80%8Bina"), "U+200B"),
    ] {
        let reply = gw.get(&uri, Some(session)).await;
        reply.assert_problem(400, "bad-input", code);
        reply.assert_problem(400, "bad-input", "purpose");
        eprintln!("{what}: {}", reply.json()["detail"]);
    }
    for uri in [
        format!("/api/v1/artefacts/{artefact}/exports?purpose={forged_line}"),
        format!("/api/v1/cases/case-b/exports?purpose={forged_line}"),
    ] {
        gw.call("POST", &uri, Some(session), json!({})).await.assert_problem(400, "bad-input", "U+2028");
    }
    gw.upload("case-b", &format!("purpose={forged_line}"), session, payload(100)).await.assert_problem(
        400,
        "bad-input",
        "U+2028",
    );
    // Nothing refused reached the record.
    assert_eq!(gw.state.gateway.catalog().custody_indexed_up_to().await.unwrap(), before);
    // Persian written with a zero-width non-joiner is a purpose like any other.
    let persian = "/api/v1/artefacts/{a}/content?purpose=%D9%85%DB%8C%E2%80%8C%D8%AE%D9%88%D8%A7%D9%87%D9%85";
    let reply = gw.get(&persian.replace("{a}", artefact), Some(session)).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", String::from_utf8_lossy(&reply.body));
}

/// The kind of each custody record in the ledger up to what the catalog has indexed, with its actor: every
/// record, once the checkpoint covers them.
async fn all_records(gw: &TestGateway) -> Vec<serde_json::Value> {
    let size = gw.state.gateway.catalog().custody_indexed_up_to().await.unwrap() as u64;
    gw.state.gateway.log().wait_for_size(size).await.unwrap();
    let mut records = Vec::new();
    for index in 0..size {
        records.push(gw.ledger_record(index).await);
    }
    records
}

/// Waits until the catalog holds an export record about `artefact`.
async fn until_exported(gw: &TestGateway, artefact: &str) {
    loop {
        let timeline = gw.state.gateway.catalog().artefact_timeline(artefact).await.unwrap();
        if timeline.iter().any(|(_, entry)| String::from_utf8_lossy(entry).contains("\"type\":\"artefact_exported\"")) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// A member removed while their case export is under way gets no further export record: the export fails with
/// 403 at the first artefact after the removal (or completed before it), and no export record follows the
/// removal's record in the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_removed_mid_export_gets_no_further_export_record() {
    const ARTEFACTS: usize = 80;
    let gw = TestGateway::start_with(|config| config.quotas.uploads_per_minute = 100_000).await;
    let (prosecutor, session) = gw.person("prosecutor1", "IT").await;
    let (clerk, clerk_session) = gw.person("clerk1", "IT").await;
    gw.case("case-r").await;
    gw.member("case-r", &prosecutor, "prosecutor").await;
    gw.member("case-r", &clerk, "clerk").await;
    let mut ids = upload_all(&gw, &clerk_session, "case-r", &[500; ARTEFACTS]).await;
    ids.sort();
    let exporting = spawn_case_export(&gw, "case-r", &session);
    until_exported(&gw, &ids[0]).await;
    let removed = gw.delete(&format!("/api/v1/cases/case-r/members/{prosecutor}"), Some(As::Session(&gw.admin))).await;
    assert_eq!(removed.status.as_u16(), 204, "{}", String::from_utf8_lossy(&removed.body));
    let (status, body) = exporting.await.unwrap();

    let records = all_records(&gw).await;
    let removal = records
        .iter()
        .position(|record| {
            record["event"]["type"] == "membership_changed"
                && record["event"]["member"] == prosecutor.as_str()
                && record["event"]["change"] == "removed"
        })
        .expect("the removal is on the record");
    let exports: Vec<usize> = records
        .iter()
        .enumerate()
        .filter(|(_, record)| record["event"]["type"] == "artefact_exported")
        .map(|(index, _)| index)
        .collect();
    let after: Vec<&usize> = exports.iter().filter(|&&index| index > removal).collect();
    eprintln!(
        "export answered {status}; {} export records before the removal (#{removal}), {} after",
        exports.len() - after.len(),
        after.len()
    );
    assert!(after.is_empty(), "export records {after:?} were written after the removal #{removal}");
    assert!(!exports.is_empty(), "the export recorded nothing before the removal");
    if exports.len() < ARTEFACTS {
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 403, "{problem}");
        assert_eq!(problem["type"].as_str().map(|t| t.ends_with("access-withdrawn")), Some(true), "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains("changed during the export"), "{problem}");
    } else {
        // It completed before the removal: then it is a whole, valid case bundle.
        assert_eq!(status, 200);
        let report = verify(body.as_slice(), std::slice::from_ref(&gw.verifier())).unwrap();
        assert!(report.is_valid(), "{report}");
    }
    // No case export record was written for a failed export.
    let case_exports = records.iter().filter(|record| record["event"]["type"] == "case_exported").count();
    assert_eq!(case_exports, usize::from(status == 200));
}

/// One case export holds each artefact's policy turn only while its own export record is appended: a download of
/// an artefact already exported completes while the export is still recording the others (its access record
/// lands before the export's last export record), and every bundle still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_download_during_a_large_case_export_does_not_wait_for_it() {
    const ARTEFACTS: usize = 80;
    let gw = TestGateway::start_with(|config| config.quotas.uploads_per_minute = 100_000).await;
    let (clerk, session) = gw.person("clerk1", "IT").await;
    gw.case("case-d").await;
    gw.member("case-d", &clerk, "clerk").await;
    let mut ids = upload_all(&gw, &session, "case-d", &[500; ARTEFACTS]).await;
    ids.sort();
    let exporting = spawn_case_export(&gw, "case-d", &session);
    // The first artefact in the export's order is exported; a download of it now waits for no other artefact.
    until_exported(&gw, &ids[0]).await;
    let read =
        gw.get(&format!("/api/v1/artefacts/{}/content?purpose=review", ids[0]), Some(As::Session(&session))).await;
    assert_eq!(read.status.as_u16(), 200);
    let (status, body) = exporting.await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    let records = all_records(&gw).await;
    let index_of = |kind: &str, artefact: &str| -> Vec<usize> {
        records
            .iter()
            .enumerate()
            .filter(|(_, record)| record["event"]["type"] == kind && record["event"]["artefact"] == artefact)
            .map(|(index, _)| index)
            .collect()
    };
    let download = *index_of("artefact_accessed", &ids[0]).last().expect("the download is on the record");
    let exports: Vec<usize> = ids.iter().flat_map(|id| index_of("artefact_exported", id)).collect();
    assert_eq!(exports.len(), ARTEFACTS);
    let last_export = *exports.iter().max().unwrap();
    let later = exports.iter().filter(|&&index| index > download).count();
    eprintln!("the download's record #{download}; {later} of {ARTEFACTS} export records after it");
    assert!(download < last_export, "the download (#{download}) waited for the whole export (last #{last_export})");
    assert!(download > index_of("artefact_exported", &ids[0])[0], "the download came before its artefact's export");
    // Every bundle verifies, each whole to its own export record.
    let report = verify(body.as_slice(), std::slice::from_ref(&gw.verifier())).unwrap();
    assert!(report.is_valid(), "{report}");
    assert_eq!(bundled_artefacts(&body).len(), ARTEFACTS);
}

/// Starts a case export as `session` in the background: its status and body once it ends.
fn spawn_case_export(gw: &TestGateway, case: &str, session: &str) -> tokio::task::JoinHandle<(u16, Vec<u8>)> {
    let request = TestGateway::request("POST", &format!("/api/v1/cases/{case}/exports?purpose=disclosure"), None)
        .header("cookie", format!("custodia_session={session}"))
        .header("sec-fetch-site", "same-origin")
        .body(axum::body::Body::empty())
        .unwrap();
    let state = gw.state.clone();
    tokio::spawn(async move {
        let response = tower::ServiceExt::oneshot(custodia_server::app(state), request).await.unwrap();
        let status = response.status().as_u16();
        let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes().to_vec();
        (status, body)
    })
}

/// Step 3b of the by-hand document on a bag from a gateway whose log a real Time-Stamp Authority (`openssl ts
/// -reply`) stamps: `openssl ts -verify` accepts the bag's token against the stamped checkpoint's text and the
/// consistency proof leads to the bag's checkpoint, so it says OK with every other step; a forged token and a broken
/// consistency proof each say FAILED and fail, in plain bash too. A bag with no token says none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_by_hand_timestamp_step_checks_the_bags_token_and_refuses_a_forged_one() {
    let authority = std::sync::Arc::new(support::authority::Authority::new(support::authority::KeyKind::EcdsaP256));
    let (_gw, _, bundle) = support::tsa::timestamped_export(authority.clone()).await;
    // By hand: every ```sh block, then step 3b under the authority's root (`openssl ts -verify` on the bag's token
    // against the stamped checkpoint's text), says OK; a forged token and a broken proof say FAILED and fail.
    let (blocks, _) = by_hand_blocks();
    let doc =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/verify-by-hand.md"))
            .expect("the by-hand document");
    let step = doc.split("```sh timestamp\n").nth(1).and_then(|block| block.split("```").next()).expect("step 3b");
    let step = step.replacen(
        "TSA_ANCHOR=/path/to/the/authority/root/you/trust.pem",
        &format!("TSA_ANCHOR={}", authority.path("ca.crt").display()),
        1,
    );
    let by_hand = |bundle: &[u8], script: &str| {
        let dir = tempfile::tempdir().expect("temp dir");
        tar::Archive::new(bundle).unpack(dir.path()).expect("unpack");
        let bag = std::fs::read_dir(dir.path()).expect("bag").next().expect("bag").expect("bag").path();
        run_script(script, &bag)
    };
    let (ok, said) = by_hand(&bundle, &format!("{}\n{step}", blocks.join("\n")));
    assert!(ok && said.contains("timestamp: OK (the log's first ") && !said.contains("FAILED"), "{said}");
    let stamp_index = said.matches("inclusion proof: OK for record").count();
    assert!(stamp_index >= 3, "the records and the timestamp entry: {said}");
    let forged = support::tsa::timestamp_token_forged(&bundle);
    let proof_broken = support::tsa::timestamp_proof_broken(&bundle);
    for (what, bag) in [("forged token", &forged), ("broken consistency proof", &proof_broken)] {
        let (ok, said) = by_hand(bag, &step);
        assert!(!ok && said.contains("timestamp: FAILED (") && !said.contains("timestamp: OK"), "{what}: {said}");
        // Pasted into plain bash, without set -e, it says FAILED too.
        let dir = tempfile::tempdir().expect("temp dir");
        tar::Archive::new(bag.as_slice()).unpack(dir.path()).expect("unpack");
        let top = std::fs::read_dir(dir.path()).expect("bag").next().expect("bag").expect("bag").path();
        let (ok, plain) = run_script_plain(&step, &top);
        assert!(!ok && plain.contains("timestamp: FAILED"), "{what}: {plain}");
    }
    assert!(by_hand(&forged, &step).1.contains("openssl ts -verify refuses the token"), "the forged signature");
    assert!(by_hand(&proof_broken, &step).1.contains("does not lead from the stamped checkpoint"), "the proof");
    // A bag from a gateway without an authority: with an anchor given, step 3b fails; without one (the document's
    // placeholder path), it says none, and succeeds.
    let plain = exported(payload(1000)).await;
    let (ok, said) = by_hand(&plain.bundle, &step);
    assert!(!ok && said.contains("the bag carries no timestamp token, and you gave an authority"), "{said}");
    let placeholder = doc.split("```sh timestamp\n").nth(1).and_then(|block| block.split("```").next()).unwrap();
    let (ok, said) = by_hand(&plain.bundle, placeholder);
    assert!(ok && said.contains("timestamp: none (the gateway had no Time-Stamp Authority token"), "{said}");
    let report = verify(plain.bundle.as_slice(), &[plain.gw.verifier()]).unwrap();
    assert!(
        report.to_string().contains("\nTimestamp: none (the gateway had no Time-Stamp Authority token"),
        "{report}"
    );
}
