//! The evidence service end to end, in-process: ingest, retrieval with ranges, the custody timeline with proofs
//! that check offline, use restrictions and requests to widen them, outcome reports, and a restart.

mod support;

use axum::body::Body;
use axum::http::{StatusCode, header};
use base64::Engine as _;
use custodia_core::Sha256;
use custodia_ledger::TlogProof;
use serde_json::json;
use support::{As, TestGateway};

fn media() -> Vec<u8> {
    (0..300_000u32).map(|i| (i % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_retrieve_and_prove_custody() {
    let gw = TestGateway::start().await;
    let (prosecutor, p_session) = gw.person("prosecutor1", "IT").await;
    let (defence, d_session) = gw.person("defence1", "IT").await;
    gw.case("case-7").await;
    gw.member("case-7", &prosecutor, "prosecutor").await;
    gw.member("case-7", &defence, "defence").await;

    let bytes = media();
    let digest = Sha256::of(&bytes);
    let reply = gw
        .upload(
            "case-7",
            &format!("purpose=statement%20intake&filename=statement.webm&sha256={digest}"),
            As::Session(&p_session),
            bytes.clone(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    let registered = reply.json();
    assert_eq!(registered["sha256"], digest.to_hex());
    assert_eq!(registered["size"], bytes.len());
    let artefact = registered["artefact"].as_str().unwrap().to_owned();

    // The same bytes again: one object, a second registration, and an answer that does not say the bytes were
    // already held (a member of one case must not learn what another case holds).
    let again = gw.upload("case-7", "purpose=duplicate%20check", As::Session(&d_session), bytes.clone()).await.json();
    assert_eq!(again.as_object().unwrap().keys().collect::<Vec<_>>(), ["artefact", "ledger_index", "sha256", "size"]);
    assert_ne!(again["artefact"], artefact);
    let objects = gw.files_under("objects");
    let copies = objects.iter().filter(|path| path.file_name() == Some(digest.to_hex().as_ref())).count();
    assert_eq!(copies, 1, "{objects:?}");

    let detail = gw
        .get(&format!("/api/v1/artefacts/{artefact}?purpose=trial%20preparation"), Some(As::Session(&d_session)))
        .await;
    assert_eq!(detail.status, StatusCode::OK);
    let detail = detail.json();
    assert_eq!(detail["manifest"]["sha256"], digest.to_hex());
    assert_eq!(detail["manifest"]["original_name"], "statement.webm");
    assert_eq!(detail["manifest"]["media"]["outcome"], "unprobed", "{}", detail["manifest"]);
    // The manifest's signature verifies under the gateway's key.
    let canonical =
        base64::engine::general_purpose::STANDARD.decode(detail["manifest_canonical"].as_str().unwrap()).unwrap();
    let signature: custodia_core::ManifestSignature =
        serde_json::from_value(detail["manifest_signature"].clone()).unwrap();
    custodia_core::SignedManifest::verify(&canonical, signature, &gw.verifier().public_key().unwrap()).unwrap();

    let whole = gw
        .get(
            &format!("/api/v1/artefacts/{artefact}/content?purpose=trial%20preparation"),
            Some(As::Session(&d_session)),
        )
        .await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.body, bytes);
    assert_eq!(whole.headers[header::ACCEPT_RANGES], "bytes");

    let request = TestGateway::request(
        "GET",
        &format!("/api/v1/artefacts/{artefact}/content?purpose=playback&access=play"),
        Some(As::Session(&d_session)),
    )
    .header(header::RANGE, "bytes=1000-1999")
    .body(Body::empty())
    .unwrap();
    let part = gw.send(request).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers[header::CONTENT_RANGE], format!("bytes 1000-1999/{}", bytes.len()));
    assert_eq!(part.body, &bytes[1000..2000]);

    let request = TestGateway::request(
        "GET",
        &format!("/api/v1/artefacts/{artefact}/content?purpose=x"),
        Some(As::Session(&d_session)),
    )
    .header(header::RANGE, "bytes=999999999-")
    .body(Body::empty())
    .unwrap();
    gw.send(request).await.assert_problem(416, "bad-range", "bytes");

    // Every touch is in the timeline, each with an offline proof that checks against the gateway's key.
    let timeline =
        gw.get(&format!("/api/v1/artefacts/{artefact}/timeline"), Some(As::Session(&p_session))).await.json();
    let records = timeline["records"].as_array().unwrap();
    let kinds: Vec<&str> = records.iter().map(|r| r["record"]["event"]["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["artefact_registered", "artefact_accessed", "artefact_accessed", "artefact_accessed"]);
    assert_eq!(records[2]["record"]["event"]["access"], "download");
    assert_eq!(records[3]["record"]["event"]["access"], "play");
    assert_eq!(records[1]["openings"]["purpose"]["text"], "trial preparation");
    assert_ne!(records[1]["record"]["purpose"], "trial preparation", "the log holds only a commitment");
    assert_eq!(records[1]["record"]["actor"], defence);
    for record in records {
        let proof = TlogProof::parse(record["proof"].as_str().unwrap().as_bytes()).unwrap();
        let entry = custodia_core::to_canonical_vec(&record["record"]).unwrap();
        proof.verify(&entry, &[gw.verifier()]).unwrap();
        assert_eq!(proof.index, record["ledger_index"].as_u64().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_restrictions_are_enforced_recorded_and_widened_only_by_the_provider() {
    let gw = TestGateway::start().await;
    let (provider, provider_session) = gw.person("provider1", "IT").await;
    let (receiver, receiver_session) = gw.person("receiver1", "DE").await;
    gw.case("case-9").await;
    gw.member("case-9", &provider, "prosecutor").await;
    gw.member("case-9", &receiver, "prosecutor").await;

    let policy = json!({
        "tlp": "TLP:AMBER", "provider": "IT: Procura di Roma",
        "permitted_purposes": ["trial preparation"], "permitted_recipients": [], "permitted_jurisdictions": ["IT"],
        "onward_transfer": "with_consent",
    });
    let request = TestGateway::request(
        "POST",
        "/api/v1/cases/case-9/artefacts?purpose=mutual%20legal%20assistance",
        Some(As::Session(&provider_session)),
    )
    .header("custodia-use-policy", base64::engine::general_purpose::STANDARD.encode(policy.to_string()))
    .body(Body::from(media()))
    .unwrap();
    let reply = gw.send(request).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&reply.body));
    let artefact = reply.json()["artefact"].as_str().unwrap().to_owned();
    let content = format!("/api/v1/artefacts/{artefact}/content?purpose=trial%20preparation");

    // A German receiver is outside the permitted jurisdictions; the refusal says why and is recorded.
    gw.get(&content, Some(As::Session(&receiver_session))).await.assert_problem(403, "use-restricted", "DE");
    let wrong_purpose = format!("/api/v1/artefacts/{artefact}/content?purpose=press%20briefing");
    gw.get(&wrong_purpose, Some(As::Session(&provider_session))).await.assert_problem(
        403,
        "use-restricted",
        "press briefing",
    );

    // The receiver asks to widen use; only the provider may decide, and access changes only after the decision.
    let asked = gw
        .call(
            "POST",
            &format!("/api/v1/artefacts/{artefact}/widen-requests"),
            Some(As::Session(&receiver_session)),
            json!({ "jurisdictions": ["DE"] }),
        )
        .await;
    assert_eq!(asked.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&asked.body));
    let request_id = asked.json()["id"].as_str().unwrap().to_owned();
    let decide = format!("/api/v1/widen-requests/{request_id}/decision");
    gw.call("POST", &decide, Some(As::Session(&receiver_session)), json!({ "approve": true })).await.assert_problem(
        403,
        "provider-only",
        "providing authority",
    );
    gw.get(&content, Some(As::Session(&receiver_session))).await.assert_problem(403, "use-restricted", "DE");
    let decided = gw.call("POST", &decide, Some(As::Session(&provider_session)), json!({ "approve": true })).await;
    assert_eq!(decided.status, StatusCode::OK, "{}", String::from_utf8_lossy(&decided.body));
    assert_eq!(decided.json()["status"], "approved");
    gw.call("POST", &decide, Some(As::Session(&provider_session)), json!({ "approve": false })).await.assert_problem(
        409,
        "conflict",
        "already approved",
    );
    let allowed = gw.get(&content, Some(As::Session(&receiver_session))).await;
    assert_eq!(allowed.status, StatusCode::OK);

    // Outcome feedback reaches the provider.
    let filed = gw
        .call(
            "POST",
            &format!("/api/v1/artefacts/{artefact}/outcomes"),
            Some(As::Session(&receiver_session)),
            json!({ "outcome": "used_at_hearing", "note": "heard on 2026-12-01" }),
        )
        .await;
    assert_eq!(filed.status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&filed.body));
    let outcomes =
        gw.get(&format!("/api/v1/artefacts/{artefact}/outcomes"), Some(As::Session(&provider_session))).await.json();
    assert_eq!(outcomes[0]["outcome"], "used_at_hearing");

    let timeline =
        gw.get(&format!("/api/v1/artefacts/{artefact}/timeline"), Some(As::Session(&provider_session))).await.json();
    let kinds: Vec<&str> = timeline["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record"]["event"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "artefact_registered",
            "policy_changed", // attached at ingest
            "access_refused", // DE outside the permitted jurisdictions
            "access_refused", // purpose not permitted
            "wider_use_requested",
            "access_refused", // the receiver tried to decide
            // The read before the decision repeats the first refusal (same member, action, artefact and code)
            // within a minute: it is counted into that refusal's window, not recorded again.
            "policy_changed", // approved
            "artefact_accessed",
            "outcome_reported",
        ]
    );

    // Expiry: once the policy lapses, nobody may read.
    let expiring = json!({
        "tlp": "TLP:GREEN", "provider": "IT: Procura di Roma", "permitted_purposes": [], "permitted_recipients": [],
        "permitted_jurisdictions": [], "onward_transfer": "permitted", "expires_at": gw.clock.now().checked_add(jiff::SignedDuration::from_hours(24)).unwrap().to_string(),
    });
    let set = gw
        .call("PUT", &format!("/api/v1/artefacts/{artefact}/policy"), Some(As::Session(&provider_session)), expiring)
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", String::from_utf8_lossy(&set.body));
    let detail = gw
        .get(&format!("/api/v1/artefacts/{artefact}?purpose=review"), Some(As::Session(&receiver_session)))
        .await
        .json();
    assert!(detail["warnings"][0].as_str().unwrap().contains("lapses"), "{detail}");
    gw.clock.advance(25 * 3600);
    gw.get(&content, Some(As::Session(&receiver_session))).await.assert_problem(401, "unauthenticated", "sign in");
    let receiver_session = gw.sign_in("receiver1", "receiver1-correct-horse-battery").await;
    gw.get(&content, Some(As::Session(&receiver_session))).await.assert_problem(403, "use-restricted", "lapsed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_finds_everything_and_the_catalog_catches_up_with_the_ledger() {
    let gw = TestGateway::start().await;
    let (clerk, session) = gw.person("clerk1", "IT").await;
    gw.case("case-1").await;
    gw.member("case-1", &clerk, "clerk").await;
    let artefact = gw.upload("case-1", "purpose=intake", As::Session(&session), media()).await.json()["artefact"]
        .as_str()
        .unwrap()
        .to_owned();

    // Simulate a crash between the ledger append and the catalog insert: a registration in the ledger whose
    // catalog row and index are gone.
    let db = gw.dir.path().join("catalog.db");
    let dir = gw.dir;
    let log = gw.state.gateway.log().clone();
    drop(gw.state);
    log.close().await;
    delete_catalog_rows(&db, &artefact).await;
    let mut config = custodia_server::config::ServeConfig::with_data_dir(dir.path());
    config.probe.program = Some(env!("CARGO_BIN_EXE_custodia").into());
    let state = custodia_server::startup::open(&config, Default::default()).await.unwrap();
    let row = state
        .gateway
        .catalog()
        .artefact(&artefact)
        .await
        .unwrap()
        .expect("restored from the ledger and the stored manifest");
    assert_eq!(row.size, media().len() as i64);
    assert!(!state.gateway.catalog().artefact_timeline(&artefact).await.unwrap().is_empty());
}

/// Deletes an artefact's catalog row and index entries behind the gateway's back, as a crash would leave them.
async fn delete_catalog_rows(db: &std::path::Path, artefact: &str) {
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    for table in ["DELETE FROM custody_index WHERE artefact_id = $1", "DELETE FROM artefacts WHERE id = $1"] {
        sqlx::query(table).bind(artefact).execute(&mut conn).await.unwrap();
    }
}
