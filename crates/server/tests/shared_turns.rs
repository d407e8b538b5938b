//! A check made before a record is appended holds across every gateway on one database, not per process
//! (`custodia_catalog::Catalog::take_turn`): decisions on one request to widen an artefact's use, sent at once to two
//! gateway processes on one PostgreSQL and one bucket, as a load balancer spreads them, leave one decision in the
//! ledger, and every other decider gets 409. With a turn per process, each gateway let one through: two decisions
//! in the ledger, one of which the catalog then refused. Judged by the records, never by time.

mod support;

use custodia_tests::garage::Garage;
use custodia_tests::postgres::TempPostgres;
use serde_json::{Value, json};
use support::{As, TestGateway, on_garage};

/// How many decisions are sent at once, alternating between the two gateways, approvals and refusals alternating.
const DECISIONS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_decisions_sent_to_two_gateways_at_once_only_one_reaches_the_ledger() {
    // A provider's artefact under a policy, and a receiver's request to widen it, made through a gateway that then
    // goes away.
    let (backends, (provider_session, artefact, request)) = support::SharedBackends::start(async |setup| {
        let (provider, provider_session) = setup.person("provider1", "IT").await;
        let (receiver, receiver_session) = setup.person("receiver1", "DE").await;
        setup.case("case-d").await;
        setup.member("case-d", &provider, "prosecutor").await;
        setup.member("case-d", &receiver, "prosecutor").await;
        let policy = support::use_policy("IT: Procura di Roma");
        let uploaded = support::upload_with_policy(setup, "case-d", &provider_session, &policy).await;
        assert_eq!(uploaded.status, 201, "{}", String::from_utf8_lossy(&uploaded.body));
        let artefact = uploaded.json()["artefact"].as_str().unwrap().to_owned();
        let asked = setup
            .call(
                "POST",
                &format!("/api/v1/artefacts/{artefact}/widen-requests"),
                Some(As::Session(&receiver_session)),
                json!({ "jurisdictions": ["DE"] }),
            )
            .await;
        assert_eq!(asked.status, 201, "{}", String::from_utf8_lossy(&asked.body));
        let request = asked.json()["id"].as_str().unwrap().to_owned();
        (provider_session, artefact, request)
    })
    .await;
    let env = backends.env(&[]);
    let env = support::env_refs(&env);
    let key = &backends.key;
    let (dir_a, dir_b) = (support::data_dir_with_key(key), support::data_dir_with_key(key));
    let (_process_a, port_a) = support::spawn_gateway(dir_a.path(), &env);
    let (_process_b, port_b) = support::spawn_gateway(dir_b.path(), &env);
    let clients = [port_a, port_b].map(|port| support::Client {
        base: format!("http://127.0.0.1:{port}"),
        cookie: Some(provider_session.clone()),
    });

    let decide = format!("/api/v1/widen-requests/{request}/decision");
    let replies: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let sent: Vec<_> = (0..DECISIONS)
            .map(|n| {
                let (client, decide) = (&clients[n % 2], &decide);
                scope.spawn(move || client.json("POST", decide, json!({ "approve": n % 4 < 2 })))
            })
            .collect();
        sent.into_iter().map(|sent| sent.join().unwrap()).collect()
    });
    let won = replies.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(won, 1, "exactly one decision stands: {replies:?}");
    for (status, problem) in replies.iter().filter(|(status, _)| *status != 200) {
        assert_eq!(*status, 409, "{problem}");
        assert!(problem["detail"].as_str().unwrap_or_default().contains("already"), "{problem}");
    }

    // Either gateway's timeline of the artefact: the policy attached at ingest, and the one decision.
    for client in &clients {
        let (status, body) =
            client.send("GET", &format!("/api/v1/artefacts/{artefact}/timeline"), "application/json", b"");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let timeline: Value = serde_json::from_slice(&body).unwrap();
        let changes: Vec<&Value> = timeline["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|entry| entry["record"]["event"]["type"] == "policy_changed")
            .collect();
        assert_eq!(changes.len(), 2, "the policy attached at ingest, and one decision: {changes:?}");
    }
}

/// Exports take an artefact's policy turn and, within it, the case's membership turn: many at once, of different
/// artefacts, by one member, all go through. (When turns of every kind shared one pool of connections, the policy
/// turns took every connection while each waited for a membership turn's: a dozen exports at once stalled the pool,
/// and half of them, and every other request needing a turn, failed after seconds.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_exports_at_once_do_not_starve_each_other_of_turns() {
    const EXPORTS: usize = 24;
    let postgres = TempPostgres::start();
    let garage = Garage::start();
    let gw = TestGateway::start_with(|config| {
        on_garage(&garage, config);
        config.database_url = Some(postgres.url.clone());
        config.quotas.uploads_per_minute = 1000;
        config.quotas.custody_records_per_minute = 1000;
    })
    .await;
    let (prosecutor, session) = gw.person("prosecutor1", "IT").await;
    gw.case("case-x").await;
    gw.member("case-x", &prosecutor, "prosecutor").await;
    let mut artefacts = Vec::new();
    for n in 0..EXPORTS {
        let uploaded = gw
            .upload("case-x", "purpose=statement", As::Session(&session), format!("statement {n}").into_bytes())
            .await;
        assert_eq!(uploaded.status, 201, "{}", String::from_utf8_lossy(&uploaded.body));
        artefacts.push(uploaded.json()["artefact"].as_str().unwrap().to_owned());
    }
    let exports = artefacts.iter().map(|artefact| {
        let (gw, session) = (&gw, &session);
        async move {
            let uri = format!("/api/v1/artefacts/{artefact}/exports?purpose=disclosure%20to%20the%20court");
            gw.call("POST", &uri, Some(As::Session(session)), json!({})).await
        }
    });
    let replies = futures::future::join_all(exports).await;
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    }
}
