//! Use policies follow one set of rules however they arrive: of concurrent decisions on one request to widen use,
//! exactly one reaches the ledger and the others get 409; concurrent policy changes leave the catalog applying the
//! last one recorded; a policy attached at upload needs the role that may set one later; and the court corrects a
//! policy that locks an artefact for everyone, on the record.

mod support;

use axum::http::StatusCode;
use custodia_core::{CustodyRecord, Openings, UsePolicy};
use serde_json::{Value, json};
use support::{As, TestGateway};

/// The entries about an artefact, as its timeline lists them: each a record, its ledger index and the openings of
/// its commitments, checked to open them.
async fn records(gw: &TestGateway, session: &str, artefact: &str) -> Vec<Value> {
    let timeline = gw.get(&format!("/api/v1/artefacts/{artefact}/timeline"), Some(As::Session(session))).await;
    assert_eq!(timeline.status, StatusCode::OK, "{}", String::from_utf8_lossy(&timeline.body));
    let entries = timeline.json()["records"].as_array().unwrap().clone();
    for entry in &entries {
        let record: CustodyRecord = serde_json::from_value(entry["record"].clone()).unwrap();
        let openings: Openings = serde_json::from_value(entry["openings"].clone()).unwrap();
        record.check_openings(&openings).unwrap_or_else(|err| panic!("{err}: {entry}"));
    }
    entries
}

fn policy_changes(entries: &[Value]) -> Vec<&Value> {
    entries.iter().filter(|entry| entry["record"]["event"]["type"] == "policy_changed").collect()
}

/// The SHA-256 (hex) of the policy a `policy_changed` entry commits to, as its opening reads.
fn committed_policy_sha256(entry: &Value) -> &str {
    entry["openings"]["policy"]["text"].as_str().unwrap_or_else(|| panic!("no opened policy in {entry}"))
}

/// The SHA-256 of the policy the catalog applies to an artefact.
async fn applied_policy_sha256(gw: &TestGateway, session: &str, artefact: &str) -> String {
    let detail =
        gw.get(&format!("/api/v1/artefacts/{artefact}?purpose=trial%20preparation"), Some(As::Session(session))).await;
    assert_eq!(detail.status, StatusCode::OK, "{}", String::from_utf8_lossy(&detail.body));
    let policy: UsePolicy = serde_json::from_value(detail.json()["policy"].clone()).unwrap();
    policy.sha256().unwrap().to_hex()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_concurrent_decisions_on_one_request_only_one_reaches_the_ledger() {
    let gw = TestGateway::start().await;
    let (provider, provider_session) = gw.person("provider1", "IT").await;
    let (receiver, receiver_session) = gw.person("receiver1", "DE").await;
    gw.case("case-d").await;
    gw.member("case-d", &provider, "prosecutor").await;
    gw.member("case-d", &receiver, "prosecutor").await;
    let reply =
        support::upload_with_policy(&gw, "case-d", &provider_session, &support::use_policy("IT: Procura di Roma"))
            .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    let artefact = reply.json()["artefact"].as_str().unwrap().to_owned();
    let asked = gw
        .call(
            "POST",
            &format!("/api/v1/artefacts/{artefact}/widen-requests"),
            Some(As::Session(&receiver_session)),
            json!({ "jurisdictions": ["DE"] }),
        )
        .await;
    assert_eq!(asked.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&asked.body));
    let decide = format!("/api/v1/widen-requests/{}/decision", asked.json()["id"].as_str().unwrap());

    // Six decisions at once, approvals and refusals alternating.
    let decisions = (0..6).map(|i| {
        let (gw, decide, session) = (&gw, decide.clone(), provider_session.clone());
        async move { gw.call("POST", &decide, Some(As::Session(&session)), json!({ "approve": i % 2 == 0 })).await }
    });
    let replies = futures::future::join_all(decisions).await;
    let won: Vec<&support::Reply> = replies.iter().filter(|reply| reply.status == StatusCode::OK).collect();
    assert_eq!(won.len(), 1, "exactly one decision stands");
    for reply in replies.iter().filter(|reply| reply.status != StatusCode::OK) {
        reply.assert_problem(409, "conflict", "already");
    }
    let status = won[0].json()["status"].as_str().unwrap().to_owned();

    let records = records(&gw, &provider_session, &artefact).await;
    let changes = policy_changes(&records);
    assert_eq!(changes.len(), 2, "the policy attached at ingest, and one decision: {changes:?}");
    assert_eq!(
        committed_policy_sha256(changes[1]),
        applied_policy_sha256(&gw, &provider_session, &artefact).await,
        "the catalog applies the decision the ledger holds ({status})"
    );
    let content = format!("/api/v1/artefacts/{artefact}/content?purpose=trial%20preparation");
    let read = gw.get(&content, Some(As::Session(&receiver_session))).await;
    assert_eq!(read.status == StatusCode::OK, status == "approved", "access follows the one decision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_policy_changes_leave_the_catalog_on_the_last_one_recorded() {
    let gw = TestGateway::start().await;
    let (provider, provider_session) = gw.person("provider1", "IT").await;
    gw.case("case-p").await;
    gw.member("case-p", &provider, "prosecutor").await;
    let reply =
        support::upload_with_policy(&gw, "case-p", &provider_session, &support::use_policy("IT: Procura di Roma"))
            .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    let artefact = reply.json()["artefact"].as_str().unwrap().to_owned();

    let uri = format!("/api/v1/artefacts/{artefact}/policy");
    let changes = (0..6).map(|i| {
        let (gw, uri, session) = (&gw, uri.clone(), provider_session.clone());
        async move {
            gw.call("PUT", &uri, Some(As::Session(&session)), support::use_policy(&format!("IT: office {i}"))).await
        }
    });
    for reply in futures::future::join_all(changes).await {
        assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
    }
    let records = records(&gw, &provider_session, &artefact).await;
    let changes = policy_changes(&records);
    assert_eq!(changes.len(), 7);
    assert_eq!(committed_policy_sha256(changes[6]), applied_policy_sha256(&gw, &provider_session, &artefact).await);
}

/// Reads racing a restriction: the provider locks an artefact (TLP:RED) while a member downloads it many times at
/// once. Each download is checked against the policy and recorded under the artefact's policy turn, so the ledger
/// never shows an access after the change that forbade it: a check made before the change and recorded after it
/// would put a read of locked evidence on the record as if it had been allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_access_is_recorded_after_the_restriction_that_forbids_it() {
    let gw = TestGateway::start().await;
    let (provider, provider_session) = gw.person("provider1", "IT").await;
    let (reader, reader_session) = gw.person("reader1", "IT").await;
    gw.case("case-r").await;
    gw.member("case-r", &provider, "prosecutor").await;
    gw.member("case-r", &reader, "defence").await;
    let reply = gw.upload("case-r", "purpose=intake", As::Session(&provider_session), b"evidence".to_vec()).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let artefact = reply.json()["artefact"].as_str().unwrap().to_owned();
    let policy_uri = format!("/api/v1/artefacts/{artefact}/policy");
    let with_tlp = |tlp: &str| {
        json!({ "tlp": tlp, "provider": "IT: Procura di Roma", "permitted_purposes": [], "permitted_recipients": [],
                "permitted_jurisdictions": [], "onward_transfer": "permitted" })
    };
    let content = format!("/api/v1/artefacts/{artefact}/content?purpose=trial%20preparation");
    for round in 0..6 {
        let reply = gw.call("PUT", &policy_uri, Some(As::Session(&provider_session)), with_tlp("TLP:CLEAR")).await;
        assert_eq!(reply.status, StatusCode::OK);
        let before = gw.ledger_size();
        // As many reads at once as one account may have under way (budget::Stream::per_account).
        let reads = (0..16).map(|_| gw.get(&content, Some(As::Session(&reader_session))));
        let lock = gw.call("PUT", &policy_uri, Some(As::Session(&provider_session)), with_tlp("TLP:RED"));
        let (reads, lock) = tokio::join!(futures::future::join_all(reads), lock);
        assert_eq!(lock.status, StatusCode::OK);
        assert!(reads.iter().all(|read| [200, 403].contains(&read.status.as_u16())), "round {round}");
        let mut locked_at = None;
        for index in before..gw.ledger_size() {
            let record = gw.ledger_record(index).await;
            match record["event"]["type"].as_str() {
                Some("policy_changed") => locked_at = Some(index),
                Some("artefact_accessed") => {
                    assert!(
                        locked_at.is_none(),
                        "round {round}: access {index} recorded after the lock at {locked_at:?}"
                    );
                }
                _ => {}
            }
        }
        assert!(locked_at.is_some(), "round {round}: the lock is on the record");
        // What each reader was told agrees with the ledger: as many accesses recorded as downloads allowed.
        let allowed = reads.iter().filter(|read| read.status == StatusCode::OK).count();
        let mut accessed = 0;
        for index in before..gw.ledger_size() {
            accessed += usize::from(gw.ledger_record(index).await["event"]["type"] == "artefact_accessed");
        }
        assert_eq!(accessed, allowed, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_at_upload_needs_the_role_and_the_court_corrects_one_that_locks_everyone_out() {
    let gw = TestGateway::start().await;
    let (witness, witness_session) = gw.person("witness1", "IT").await;
    let (prosecutor, prosecutor_session) = gw.person("prosecutor1", "IT").await;
    let (judge, judge_session) = gw.person("judge1", "IT").await;
    let (defence, defence_session) = gw.person("defence1", "IT").await;
    gw.case("case-w").await;
    gw.member("case-w", &witness, "witness").await;
    gw.member("case-w", &prosecutor, "prosecutor").await;
    gw.member("case-w", &judge, "judge").await;
    gw.member("case-w", &defence, "defence").await;

    // Already lapsed, TLP:RED: attached, it would lock the artefact for everyone.
    let lock = json!({
        "tlp": "TLP:RED", "provider": "witness", "permitted_purposes": [], "permitted_recipients": [],
        "permitted_jurisdictions": [], "onward_transfer": "prohibited", "expires_at": "2020-01-01T00:00:00Z",
    });
    let size = gw.ledger_size();
    support::upload_with_policy(&gw, "case-w", &witness_session, &lock).await.assert_problem(
        403,
        "role-forbidden",
        "set policy",
    );
    let refusal = gw.ledger_record(size).await;
    assert_eq!(refusal["event"]["type"], "access_refused", "the refusal is on the record");
    assert_eq!(gw.ledger_size(), size + 1, "and nothing else: no artefact was registered");
    let listed = gw.get("/api/v1/cases/case-w/artefacts", Some(As::Session(&prosecutor_session))).await.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");

    // Without a policy the witness may upload.
    let plain = gw.upload("case-w", "purpose=statement", As::Session(&witness_session), b"statement".to_vec()).await;
    assert_eq!(plain.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&plain.body));

    // A prosecutor may attach one, even one that locks the artefact for everyone, the prosecutor included.
    let reply = support::upload_with_policy(&gw, "case-w", &prosecutor_session, &lock).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    let artefact = reply.json()["artefact"].as_str().unwrap().to_owned();
    let content = format!("/api/v1/artefacts/{artefact}/content?purpose=trial%20preparation");
    gw.get(&content, Some(As::Session(&judge_session))).await.assert_problem(403, "use-restricted", "lapsed");

    // The defence may not correct it; the judge may, and the correction is a policy change on the record.
    let correction = format!("/api/v1/artefacts/{artefact}/policy/correction");
    let open = json!({
        "tlp": "TLP:GREEN", "provider": "the court", "permitted_purposes": [], "permitted_recipients": [],
        "permitted_jurisdictions": [], "onward_transfer": "permitted",
    });
    gw.call("PUT", &correction, Some(As::Session(&defence_session)), open.clone()).await.assert_problem(
        403,
        "role-forbidden",
        "correct policy",
    );
    let corrected = gw.call("PUT", &correction, Some(As::Session(&judge_session)), open.clone()).await;
    assert_eq!(corrected.status, StatusCode::OK, "{}", String::from_utf8_lossy(&corrected.body));
    let index = corrected.json()["ledger_index"].as_u64().unwrap();
    let record = gw.ledger_record(index).await;
    assert_eq!(record["event"]["type"], "policy_changed", "{record}");
    let entries = records(&gw, &judge_session, &artefact).await;
    let entry = entries.iter().find(|entry| entry["ledger_index"] == index).expect("the correction is in the timeline");
    assert_eq!(entry["record"], record, "the timeline shows the record the ledger holds");
    let open: UsePolicy = serde_json::from_value(open).unwrap();
    assert_eq!(committed_policy_sha256(entry), open.sha256().unwrap().to_hex());
    let read = gw.get(&content, Some(As::Session(&defence_session))).await;
    assert_eq!(read.status, StatusCode::OK, "{}", String::from_utf8_lossy(&read.body));
}
