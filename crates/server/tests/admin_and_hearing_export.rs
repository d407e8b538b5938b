//! The routes behind the administration page and the portal's hearing bundle (issue 12):
//! - an administrator lists every account (with when it was disabled) and every case, and a case's members; nobody
//!   else may, and a member's refused look at the members is on the record;
//! - a hearing's bundle holds its output only (minutes and recordings, not the case's other evidence), verifies as
//!   a case bundle under the gateway's key, is recorded as a case export, and is made only once the hearing's
//!   minutes are in custody.

mod support;

use std::time::Duration;

use custodia_bundle::verify;
use serde_json::{Value, json};
use support::{As, TestGateway, tar_files};

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

    let bundles: Vec<String> = tar_files(&reply.body)
        .into_iter()
        .filter_map(|(path, _, _)| path.split("/data/bundles/").nth(1).map(str::to_owned))
        .collect();
    assert!(bundles.iter().any(|name| name.contains(&minutes)), "the minutes are missing: {bundles:?}");
    assert!(!bundles.iter().any(|name| name.contains(&statement)), "the case's other evidence is in: {bundles:?}");

    // On the record like a case export: one record committing to a listing of exactly one bundle (the minutes).
    let record = gw.ledger_record(gw.ledger_size() - 1).await;
    assert_eq!(record["event"]["type"], "case_exported", "{record}");
    assert_eq!(record["event"]["artefacts"], 1, "{record}");
    assert_eq!(record["actor"], json!(pm), "{record}");
}
