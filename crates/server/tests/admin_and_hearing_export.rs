//! The routes behind the administration page and the portal's hearing bundle (issue 12):
//! - an administrator lists every account (with when it was disabled) and every case, and a case's members; nobody
//!   else may, and a member's refused look at the members is on the record;
//! - a hearing's bundle holds its output only (minutes and recordings, not the case's other evidence), verifies as
//!   a case bundle under the gateway's key, is recorded as a case export, and is made only once the hearing's
//!   minutes are in custody; it names its scope (this hearing only, by id) in its listing, bag-info.txt,
//!   certificate and record, both verifiers say so, and a copy relabelled as the whole case, or with a bundle
//!   added or taken out, fails.

mod support;

use std::time::Duration;

use custodia_bundle::{Part, verify};
use serde_json::{Value, json};
use support::{As, TestGateway, by_hand_case_script, rebagged, run_script, tar_files};

#[tokio::test]
async fn an_administrator_lists_accounts_cases_and_members_and_nobody_else_may() {
    let gw = TestGateway::start().await;
    let admin = Some(As::Session(&gw.admin));
    let (clerk, clerk_session) = gw.person("clerk.listed", "IT").await;
    let (pm, pm_session) = gw.person("pm.listed", "IT").await;
    let (spare, _) = gw.person("spare.listed", "NL").await;
    gw.case("case-a").await;
    gw.case("case-b").await;
    gw.member("case-a", &clerk, "clerk").await;
    gw.member("case-a", &pm, "prosecutor").await;

    let accounts = gw.get("/api/v1/accounts", admin).await;
    assert_eq!(accounts.status, 200, "{}", String::from_utf8_lossy(&accounts.body));
    let accounts = accounts.json();
    let names: Vec<&str> = accounts.as_array().unwrap().iter().map(|a| a["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin", "clerk.listed", "pm.listed", "spare.listed"], "sorted by username");
    assert!(!accounts.to_string().contains("argon2"), "a password hash left the catalog: {accounts}");
    assert!(accounts.as_array().unwrap().iter().all(|a| a["disabled_at"].is_null()));
    let reply = gw.call("POST", &format!("/api/v1/accounts/{spare}/disable"), admin, json!({})).await;
    assert_eq!(reply.status, 204);
    let accounts = gw.get("/api/v1/accounts", admin).await.json();
    let listed = accounts.as_array().unwrap().iter().find(|a| a["id"] == json!(spare)).unwrap();
    assert!(listed["disabled_at"].as_str().is_some_and(|at| at.ends_with('Z')), "{listed}");

    // Every case, member or not (the administrator is a member of none).
    let cases = gw.get("/api/v1/admin/cases", admin).await.json();
    let ids: Vec<&str> = cases.as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["case-a", "case-b"]);
    assert_eq!(gw.get("/api/v1/cases", admin).await.json(), json!([]));

    let members = gw.get("/api/v1/cases/case-a/members", admin).await.json();
    assert_eq!(members["members"].as_array().unwrap().len(), 2, "{members}");
    // The clerk manages the members of their case, so they may see them too.
    let seen = gw.get("/api/v1/cases/case-a/members", Some(As::Session(&clerk_session))).await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.json(), members);

    // Nobody else: not a prosecutor (a member's refusal is a custody record), not a stranger (not found).
    for uri in ["/api/v1/accounts", "/api/v1/admin/cases"] {
        gw.get(uri, Some(As::Session(&clerk_session))).await.assert_problem(403, "admin-only", "");
    }
    let before = gw.ledger_size();
    let pm_reply = gw.get("/api/v1/cases/case-a/members", Some(As::Session(&pm_session))).await;
    pm_reply.assert_problem(403, "role-forbidden", "");
    let record = gw.ledger_record(gw.ledger_size() - 1).await;
    assert!(gw.ledger_size() > before && record["event"]["type"] == "access_refused", "{record}");
    let stranger = gw.get("/api/v1/cases/case-b/members", Some(As::Session(&clerk_session))).await;
    stranger.assert_problem(404, "not-found", "");
    gw.get("/api/v1/cases/case-ghost/members", admin).await.assert_problem(404, "not-found", "");
}

/// The hearing as the console shows it, once `ready` says so (the minutes are sealed in the background).
async fn hearing_when(gw: &TestGateway, uri: &str, session: &str, ready: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        let hearing = gw.get(uri, Some(As::Session(session))).await.json();
        if ready(&hearing) {
            return hearing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the hearing never got there: {}", gw.get(uri, Some(As::Session(session))).await.json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hearing_exports_as_one_bundle_of_its_own_output_recorded_like_a_case_export() {
    let gw = TestGateway::start().await;
    let (clerk, clerk_session) = gw.person("clerk.h", "IT").await;
    let (pm, pm_session) = gw.person("pm.h", "IT").await;
    let (_, stranger_session) = gw.person("stranger.h", "FR").await;
    gw.case("case-h").await;
    gw.member("case-h", &clerk, "clerk").await;
    gw.member("case-h", &pm, "prosecutor").await;
    // Evidence of the case that is not the hearing's: it stays out of the hearing's bundle.
    let statement = gw.upload("case-h", "purpose=intake", As::Session(&clerk_session), b"a statement".to_vec()).await;
    let statement = statement.json()["artefact"].as_str().unwrap().to_owned();

    let clerk_as = Some(As::Session(&clerk_session));
    let body = json!({ "scheduled_for": "2026-12-01T09:00:00Z", "place": "Tribunale di Catania, aula 2" });
    let hearing = gw.call("POST", "/api/v1/cases/case-h/hearings", clerk_as, body).await.json();
    let uri = format!("/api/v1/cases/case-h/hearings/{}", hearing["id"].as_str().unwrap());
    let export = format!("{uri}/exports?purpose=trial%20preparation");
    assert_eq!(gw.call("POST", &format!("{uri}/open"), clerk_as, json!({})).await.status, 200);

    // Before the end there are no minutes: no bundle, and nothing recorded.
    let before = gw.ledger_size();
    let early = gw.call("POST", &export, Some(As::Session(&pm_session)), json!({})).await;
    early.assert_problem(409, "conflict", "minutes");
    assert_eq!(gw.ledger_size(), before, "a refused hearing export left a record");

    assert_eq!(gw.call("POST", &format!("{uri}/close"), clerk_as, json!({})).await.status, 200);
    let ended = hearing_when(&gw, &uri, &pm_session, |h| h["minutes_artefact"].is_string()).await;
    let minutes = ended["minutes_artefact"].as_str().unwrap().to_owned();

    gw.call("POST", &export, Some(As::Session(&stranger_session)), json!({})).await.assert_problem(
        404,
        "not-found",
        "",
    );
    gw.call("POST", &format!("{uri}/exports"), Some(As::Session(&pm_session)), json!({})).await.assert_problem(
        400,
        "bad-input",
        "purpose",
    );

    let reply = gw.call("POST", &export, Some(As::Session(&pm_session)), json!({})).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let disposition = reply.headers["content-disposition"].to_str().unwrap();
    assert!(
        disposition.contains(&format!("custodia-hearing-{}.tar", hearing["id"].as_str().unwrap())),
        "{disposition}"
    );
    let report = verify(reply.body.as_slice(), std::slice::from_ref(&gw.verifier())).unwrap();
    assert!(report.is_valid(), "{report}");
    let hearing_id = hearing["id"].as_str().unwrap();
    let scope = format!("hearing {hearing_id} of case case-h only, not the whole case");
    assert_eq!(report.scope.as_deref(), Some(scope.as_str()), "{report}");
    assert!(report.to_string().contains(&format!("SCOPE: this is the bundle of {scope}")), "{report}");
    let hearing_bundle = reply.body.clone();
    let file = |name: &str| {
        // The case bag's own file (each artefact bundle in it has its own bag-info.txt and REPORT.txt).
        let (_, start, size) = tar_files(&hearing_bundle)
            .into_iter()
            .find(|(path, _, _)| path.split_once('/').is_some_and(|(_, path)| format!("/{path}") == name))
            .unwrap();
        String::from_utf8(hearing_bundle[start as usize..(start + size) as usize].to_vec()).unwrap()
    };
    assert!(file("/bag-info.txt").contains(&format!("\nCustodia-Scope: hearing {hearing_id}\n")));
    assert!(file("/data/REPORT.txt").contains(&format!("\nScope: {scope}\n")));
    assert!(
        file("/data/case-listing.json").contains(&format!(r#""scope":{{"hearing":"{hearing_id}","kind":"hearing"}}"#))
    );
    // The CLI says it too.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &hearing_bundle).unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_custodia"))
        .arg("verify")
        .arg(file.path())
        .args(["--trusted-key", &gw.verifier().to_string()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{out}");
    assert!(out.contains(&format!("SCOPE: this is the bundle of {scope}")), "{out}");
    // By hand, with standard tools, as docs/verify-by-hand.md says.
    let dir = tempfile::tempdir().unwrap();
    tar::Archive::new(hearing_bundle.as_slice()).unpack(dir.path()).unwrap();
    let bag = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
    let (ok, said) = run_script(&by_hand_case_script(), &bag);
    assert!(ok, "{said}");
    assert!(
        said.contains(&format!("scope: OK (this is the bundle of hearing {hearing_id} of case case-h only")),
        "{said}"
    );

    let bundles = support::bundled_artefacts(&reply.body);
    assert!(bundles.iter().any(|name| name.contains(&minutes)), "the minutes are missing: {bundles:?}");
    assert!(!bundles.iter().any(|name| name.contains(&statement)), "the case's other evidence is in: {bundles:?}");

    // On the record like a case export: one record committing to a listing of exactly one bundle (the minutes),
    // and to the hearing, whose id the public entry does not hold in clear.
    let index = gw.ledger_size() - 1;
    let record = gw.ledger_record(index).await;
    assert_eq!(record["event"]["type"], "case_exported", "{record}");
    assert_eq!(record["event"]["artefacts"], 1, "{record}");
    assert_eq!(record["actor"], json!(pm), "{record}");
    assert_eq!(record["event"]["hearing"].as_str().map(str::len), Some(64), "{record}");
    assert!(!record.to_string().contains(hearing_id), "{record}");
    assert_eq!(gw.opened(index, "hearing").await.as_deref(), Some(hearing_id));

    // The whole case's bundle says so, and its record commits to no hearing.
    let whole =
        gw.call("POST", "/api/v1/cases/case-h/exports?purpose=trial", Some(As::Session(&pm_session)), json!({}));
    let whole = whole.await;
    assert_eq!(whole.status, 200, "{}", String::from_utf8_lossy(&whole.body));
    let whole_report = verify(whole.body.as_slice(), std::slice::from_ref(&gw.verifier())).unwrap();
    assert!(whole_report.is_valid(), "{whole_report}");
    assert_eq!(whole_report.scope.as_deref(), Some("the whole case case-h"));
    assert_eq!(gw.ledger_record(gw.ledger_size() - 1).await["event"].get("hearing"), None);

    // Forged copies of the hearing's bundle, each with fresh BagIt checksums.
    let key = [gw.verifier()];
    let failed = |bundle: &[u8]| verify(bundle, &key).unwrap().failed_parts();
    // Relabelled as the whole case, in every text a reader sees: bag-info.txt and the certificate.
    let relabelled = rebagged(&hearing_bundle, |bag| {
        for name in ["bag-info.txt", "data/REPORT.txt"] {
            let text = std::fs::read_to_string(bag.join(name)).unwrap();
            let whole = text
                .replace(&format!("Custodia-Scope: hearing {hearing_id}"), "Custodia-Scope: case")
                .replace(
                    &format!("hearing {hearing_id} of case case-h only, not the whole case"),
                    "the whole case case-h",
                )
                .replace("of the hearing's output", "");
            assert_ne!(whole, text, "{name}");
            std::fs::write(bag.join(name), whole).unwrap();
        }
    });
    assert_eq!(failed(&relabelled), [Part::Bag, Part::Report]);
    // The listing's scope edited: it is no longer the listing the record commits to.
    let listing_relabelled = rebagged(&hearing_bundle, |bag| {
        let path = bag.join("data/case-listing.json");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace(&format!(r#"{{"hearing":"{hearing_id}","kind":"hearing"}}"#), r#"{"kind":"case"}"#),
        )
        .unwrap();
    });
    assert!(failed(&listing_relabelled).contains(&Part::CaseContents));
    // The case's other evidence added from the whole case's bundle, or the minutes taken out.
    let whole_dir = tempfile::tempdir().unwrap();
    tar::Archive::new(whole.body.as_slice()).unpack(whole_dir.path()).unwrap();
    let statement_bundle = whole_dir.path().join(format!("custodia-case-case-h/data/bundles/{statement}"));
    let added = rebagged(&hearing_bundle, |bag| {
        support::copy_tree(&statement_bundle, &bag.join(format!("data/bundles/{statement}")));
    });
    let report = verify(added.as_slice(), &key).unwrap();
    assert!(report.failed_parts().contains(&Part::CaseContents), "{report}");
    assert!(report.to_string().contains(&format!("data/bundles/{statement}/ is not in the case export record")));
    let removed = rebagged(&hearing_bundle, |bag| {
        std::fs::remove_dir_all(bag.join(format!("data/bundles/{minutes}"))).unwrap();
    });
    let report = verify(removed.as_slice(), &key).unwrap();
    assert!(report.to_string().contains(&format!("artefact {minutes} is missing")), "{report}");
}

/// A hearing's output that fails ingest (here: larger than the gateway accepts) is offered again
/// (`INGEST_ATTEMPTS` in all), then quarantined: kept byte for byte, never deleted, and on the record as an
/// `output_quarantined` hearing event that commits to its SHA-256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hearing_output_that_fails_ingest_is_tried_again_then_quarantined_and_on_the_record() {
    use custodia_hearings::quarantine::Output;
    let gw = TestGateway::start_with(|config| config.max_upload_bytes = 100).await;
    let (clerk, session) = gw.person("clerk1", "IT").await;
    gw.case("case-q").await;
    gw.member("case-q", &clerk, "clerk").await;
    let court = gw.caller(&session).await;
    let (case, hearing) =
        (custodia_core::CaseId::new("case-q").unwrap(), custodia_core::HearingId::new("h-q").unwrap());
    let output = Output {
        court: &court,
        case: &case,
        hearing: &hearing,
        purpose: custodia_service::gateway::HEARING_PURPOSE,
        media_type: "video/webm",
        name: "h-q-segment-1.webm",
        policy: None,
    };
    let segment: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let destination = gw.dir.path().join("quarantine/case-q/h-q/segment-1.webm");
    let before = gw.ledger_size();
    let refused = output.into_custody(&gw.state.gateway, segment.clone(), None, &destination).await;
    assert!(refused.is_err(), "an output over the upload limit entered custody");
    assert_eq!(std::fs::read(&destination).unwrap(), segment, "the output is kept in quarantine, byte for byte");
    let mut quarantined = Vec::new();
    for index in before..gw.ledger_size() {
        let record = gw.ledger_record(index).await;
        assert_ne!(record["event"]["type"], "artefact_registered", "{record}");
        if record["event"]["kind"] == "output_quarantined" {
            quarantined.push(gw.opened(index, "detail").await);
        }
    }
    let digest = custodia_core::Sha256::of(&segment).to_hex();
    assert_eq!(quarantined, [Some(digest)], "one quarantine record, committing to the output's SHA-256");
}
