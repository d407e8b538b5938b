//! A hearing lives on one gateway, which holds its lease in the shared database (`hearing_leases`): another gateway
//! on the database answers its requests 503 instead of starting a second copy (and its room tells a page with the
//! hearing's secret to try again), takes it over from its journal once the holder dies and the lease expires (one
//! epoch more), and the dead holder's epoch can write nothing more. One gateway at a time hosts the hearings: the
//! one the load balancer sends them to (`/readyz/hearings`), and the one that takes over. In one process, a gateway
//! that loses a hearing's lease stops it at once. Judged by leases, states and answers, never by timing: the
//! takeover is waited for with a generous bound.

mod support;

use custodia_catalog::{Catalog, CatalogError, HearingFence};
use serde_json::json;
use support::{As, TestGateway};

const SCHEDULE: &str = r#"{"scheduled_for": "2026-12-01T09:00:00Z", "place": "Aula 3"}"#;

/// Two gateway processes on one PostgreSQL database and one garage bucket, with one log's key: A, the one that
/// hosts the hearings (whichever took the duty first), and B. A clerk of `case-l` is signed in on both.
struct TwoGateways {
    backends: support::SharedBackends,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    process_a: support::GatewayProcess,
    _process_b: support::GatewayProcess,
    a: support::Client,
    b: support::Client,
    port_b: u16,
}

impl TwoGateways {
    async fn start() -> Self {
        // Accounts and the case, made through a gateway that then goes away before any hearing exists.
        let (backends, session) = support::SharedBackends::start(async |setup| {
            let (clerk, session) = setup.person("clerk1", "IT").await;
            setup.case("case-l").await;
            setup.member("case-l", &clerk, "clerk").await;
            session
        })
        .await;
        let shared_env = backends.env(&[]);
        let env = support::env_refs(&shared_env);
        let (dir_a, dir_b) = (support::data_dir_with_key(&backends.key), support::data_dir_with_key(&backends.key));
        let (process_a, port_a) = support::spawn_gateway(dir_a.path(), &env);
        let (process_b, port_b) = support::spawn_gateway(dir_b.path(), &env);
        let a = support::Client { base: format!("http://127.0.0.1:{port_a}"), cookie: Some(session.clone()) };
        let b = support::Client { base: format!("http://127.0.0.1:{port_b}"), cookie: Some(session) };
        // The setup gateway's duty lapses unrenewed; then one of the two takes it.
        let hosts = |client: &support::Client| client.send("GET", "/readyz/hearings", "text/plain", b"").0 == 200;
        eventually("a gateway hosting the hearings", async || hosts(&a) || hosts(&b)).await;
        let (a, b, process_a, process_b, port_b) =
            if hosts(&a) { (a, b, process_a, process_b, port_b) } else { (b, a, process_b, process_a, port_a) };
        Self { backends, _dirs: (dir_a, dir_b), process_a, _process_b: process_b, a, b, port_b }
    }

    /// A hearing scheduled and opened on A: its id and console path.
    fn open_hearing_on_a(&self) -> (String, String) {
        let (status, hearing) =
            self.a.send("POST", "/api/v1/cases/case-l/hearings", "application/json", SCHEDULE.as_bytes());
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&hearing));
        let hearing: serde_json::Value = serde_json::from_slice(&hearing).unwrap();
        let id = hearing["id"].as_str().unwrap().to_owned();
        let uri = format!("/api/v1/cases/case-l/hearings/{id}");
        let (status, opened) = self.a.json("POST", &format!("{uri}/open"), json!({}));
        assert_eq!(status, 200, "{opened}");
        (id, uri)
    }
}

/// Waits, with a generous bound, until `done` says so; `what` says what was waited for.
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hearing_is_held_by_one_gateway_and_taken_over_when_it_dies() {
    let mut two = TwoGateways::start().await;
    // Scheduled and opened on A, which holds its lease under epoch 1.
    let (id, uri) = two.open_hearing_on_a();
    let (postgres, a, b, port_b) = (&two.backends.postgres, &two.a, &two.b, two.port_b);
    let catalog = Catalog::connect(&postgres.url).await.unwrap();
    let held_by_a = catalog.hearing_lease(&id).await.unwrap().unwrap();
    assert_eq!(held_by_a.epoch, 1);

    // A hosts the hearings: it alone is ready for them.
    assert_eq!(a.send("GET", "/readyz/hearings", "text/plain", b"").0, 200);
    let (status, not_host) = b.send("GET", "/readyz/hearings", "text/plain", b"");
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&not_host));
    assert!(String::from_utf8_lossy(&not_host).contains("another gateway hosts the hearings"));
    assert_eq!(b.send("GET", "/readyz", "text/plain", b"").0, 200, "B is ready for everything else");

    // A witness's invite, made on A. B's room does not know its secret, but knows that another gateway holds
    // hearings: a page is told to try again (its invite stays unused), not that its link is invalid.
    let (status, invite) = a.json("POST", &format!("{uri}/invites"), json!({ "role": "witness" }));
    assert_eq!(status, 201, "{invite}");
    let secret = invite["secret"].as_str().unwrap().to_owned();
    let journalled = catalog.hearing_journal(&id).await.unwrap().len();
    assert!(journalled >= 4, "scheduled, its voice, its opening and the invite: {journalled} entries");
    let room_b = format!("ws://127.0.0.1:{port_b}/api/v1/room");
    let join = json!({ "type": "join", "invite": secret });
    let looked = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (answer, _socket) = support::room_enter(&room_b, join.clone()).await;
        assert_eq!(answer["type"], "refused", "{answer}");
        if answer["problem"] == "served_elsewhere" {
            break;
        }
        // B looks at the leases every 5 s: until it has seen A's, the secret is simply unknown there.
        assert_eq!(answer["problem"], "invalid", "{answer}");
        assert!(std::time::Instant::now() < looked, "B never said the hearing is served elsewhere");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    // A court's participants behind one address, retrying while their hearing moves, are not guessers: more
    // tries than the address's budget of failed entries (60) are each told to try again, never "too many".
    for attempt in 0..65 {
        let (answer, _socket) = support::room_enter(&room_b, join.clone()).await;
        assert_eq!(answer["problem"], "served_elsewhere", "attempt {attempt}: {answer}");
    }
    assert_eq!(catalog.hearing_journal(&id).await.unwrap().len(), journalled, "B's room wrote nothing");

    // B does not start a second copy: 503, retryable, naming another gateway; A answers.
    let (status, view) = a.json("GET", &uri, serde_json::Value::Null);
    assert_eq!((status, view["phase"].as_str()), (200, Some("open")), "{view}");
    let (status, refused) = b.json("GET", &uri, serde_json::Value::Null);
    assert_eq!(status, 503, "{refused}");
    assert!(refused["type"].as_str().unwrap().ends_with("/unavailable"), "{refused}");
    assert!(refused["detail"].as_str().unwrap().contains("another gateway"), "{refused}");
    let (status, refused) = b.json("POST", &format!("{uri}/close"), json!({}));
    assert_eq!(status, 503, "a console step on B: {refused}");
    assert_eq!(catalog.hearing_journal(&id).await.unwrap().len(), journalled, "B wrote nothing");

    // A dies; B takes the hearing over once its lease expires (15 s), at its next look (every 5 s).
    two.process_a.stop();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let held_by_b = loop {
        let lease = catalog.hearing_lease(&id).await.unwrap().unwrap();
        if lease.node != held_by_a.node {
            break lease;
        }
        assert!(std::time::Instant::now() < deadline, "nobody took the hearing over from the dead gateway");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert_eq!(held_by_b.epoch, 2, "taken over: one epoch more");
    // Only the gateway that hosts the hearings takes them over: B hosts them now.
    assert_eq!(b.send("GET", "/readyz/hearings", "text/plain", b"").0, 200);
    let (status, view) = loop {
        let (status, view) = b.json("GET", &uri, serde_json::Value::Null);
        if status != 503 || std::time::Instant::now() > deadline {
            break (status, view);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!((status, view["phase"].as_str()), (200, Some("open")), "restored on B from its journal: {view}");
    // The page that was told to try again gets in now: its invite was restored with the hearing.
    let (answer, _socket) = support::room_enter(&room_b, join).await;
    assert_eq!(answer["type"], "welcome", "{answer}");

    // A's epoch is stale: a record or a journal entry under it is refused, and nothing is written.
    let stale = HearingFence { hearing_id: id.clone(), node: held_by_a.node.clone(), epoch: 1 };
    let refused = catalog
        .sequence_custody("case-l", None, "{}", Some(&stale), |_| {
            Ok::<_, std::convert::Infallible>((b"stale".to_vec(), "stale".to_owned()))
        })
        .await;
    assert!(matches!(refused, Err(CatalogError::LeaseLost { epoch: 1, .. })), "{refused:?}");
    let journal = catalog.hearing_journal(&id).await.unwrap().len();
    let refused = catalog.append_hearing_journal(&id, journal as i64, "{}", Some(&stale)).await;
    assert!(matches!(refused, Err(CatalogError::LeaseLost { .. })), "{refused:?}");
    assert_eq!(catalog.hearing_journal(&id).await.unwrap().len(), journal);

    // B, the holder now, runs it: the hearing ends there.
    let (status, closed) = b.json("POST", &format!("{uri}/close"), json!({}));
    assert_eq!(status, 200, "{closed}");
    let (status, view) = b.json("GET", &uri, serde_json::Value::Null);
    assert_eq!((status, view["phase"].as_str()), (200, Some("ended")), "{view}");
    assert!(catalog.hearing_journal(&id).await.unwrap().len() > journal, "B journals under epoch 2");
}

/// In one gateway: a hearing whose lease another node takes is stopped here at the next renewal, failing closed:
/// it leaves the registry, its steps are refused here (503: served by another gateway), and it writes nothing
/// more to the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_lease_stops_the_hearing_here() {
    let gw = TestGateway::start().await;
    let (clerk, session) = gw.person("clerk1", "IT").await;
    gw.case("case-l").await;
    gw.member("case-l", &clerk, "clerk").await;
    let schedule: serde_json::Value = serde_json::from_str(SCHEDULE).unwrap();
    let hearing = gw.call("POST", "/api/v1/cases/case-l/hearings", Some(As::Session(&session)), schedule).await;
    assert_eq!(hearing.status, 201, "{}", String::from_utf8_lossy(&hearing.body));
    let id = hearing.json()["id"].as_str().unwrap().to_owned();
    let uri = format!("/api/v1/cases/case-l/hearings/{id}");
    let opened = gw.call("POST", &format!("{uri}/open"), Some(As::Session(&session)), json!({})).await;
    assert_eq!(opened.status, 200, "{}", String::from_utf8_lossy(&opened.body));

    let hearings = gw.state.hearings.clone();
    let catalog = gw.state.gateway.catalog().clone();
    let caller = gw.caller(&session).await;
    let case = custodia_core::CaseId::new("case-l").unwrap();
    let live = hearings.find(&caller, &case, &id).await.unwrap();
    let fence = live.fence().clone();
    assert_eq!((fence.node.as_str(), fence.epoch), (hearings.node(), 1));
    // Renewing while held changes nothing.
    hearings.renew_leases().await;
    assert!(!live.is_lost());

    // Another node takes the lease (as it would once this one's expired): epoch 2.
    assert!(catalog.renew_hearing_lease(&fence, 0).await.unwrap(), "its lease made to expire at once");
    assert_eq!(catalog.take_hearing_lease(&id, "node-elsewhere", 0, i64::MAX).await.unwrap(), Some(2));
    let journal = catalog.hearing_journal(&id).await.unwrap().len();
    hearings.renew_leases().await;
    assert!(live.is_lost(), "stopped at the renewal that found the lease lost");
    let view = gw.get(&uri, Some(As::Session(&session))).await;
    view.assert_problem(503, "unavailable", "another gateway");
    let closed = gw.call("POST", &format!("{uri}/close"), Some(As::Session(&session)), json!({})).await;
    closed.assert_problem(503, "unavailable", "another gateway");
    assert_eq!(catalog.hearing_journal(&id).await.unwrap().len(), journal, "nothing more journalled");
    // Nor is it taken back here while the other node holds it.
    assert_eq!(hearings.take_over().await.unwrap(), 0);
}

/// A host that freezes (SIGSTOP: its connections stay open, so the database cannot tell) stops renewing its duty
/// and its hearings' leases: once they expire, B hosts the hearings and takes the hearing over. Thawed, A finds
/// both gone, stops the hearing here and says it is not ready for hearings; the hearing stays B's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_host_loses_the_hearings_to_another_and_does_not_take_them_back() {
    let two = TwoGateways::start().await;
    let (id, uri) = two.open_hearing_on_a();
    let catalog = Catalog::connect(&two.backends.postgres.url).await.unwrap();
    let held_by_a = catalog.hearing_lease(&id).await.unwrap().unwrap();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill").args([name, &two.process_a.pid().to_string()]).status();
        assert!(status.unwrap().success(), "kill {name}");
    };
    signal("-STOP");
    eventually("B hosting the hearings", async || two.b.send("GET", "/readyz/hearings", "text/plain", b"").0 == 200)
        .await;
    eventually("B taking the hearing over", async || {
        catalog.hearing_lease(&id).await.unwrap().unwrap().node != held_by_a.node
    })
    .await;
    let held_by_b = catalog.hearing_lease(&id).await.unwrap().unwrap();
    assert_eq!(held_by_b.epoch, held_by_a.epoch + 1);
    eventually("B serving the hearing", async || two.b.json("GET", &uri, serde_json::Value::Null).0 == 200).await;

    signal("-CONT");
    eventually("A saying it does not host the hearings", async || {
        two.a.send("GET", "/readyz/hearings", "text/plain", b"").0 == 503
    })
    .await;
    let (status, refused) = two.a.json("GET", &uri, serde_json::Value::Null);
    assert_eq!(status, 503, "A stopped the hearing here: {refused}");
    let (status, refused) =
        two.a.send("POST", "/api/v1/cases/case-l/hearings", "application/json", SCHEDULE.as_bytes());
    assert_eq!(status, 503, "A schedules no hearing now: {}", String::from_utf8_lossy(&refused));
    let still = catalog.hearing_lease(&id).await.unwrap().unwrap();
    assert_eq!((still.node, still.epoch), (held_by_b.node, held_by_b.epoch), "the hearing stays B's");
    assert_eq!(two.b.send("GET", "/readyz/hearings", "text/plain", b"").0, 200);
}

/// A third gateway starts with its clock 20 minutes ahead. Leases are read and written on the database's clock, so
/// it takes no duty from A, which renews them, and no hearing: A stays the host, the hearing stays A's under the
/// same epoch, and no lease is dated 20 minutes ahead. Before, it took every duty at once and, once killed, left
/// them unusable to the others until real time caught up with its clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_clock_runs_ahead_takes_no_duty_and_no_hearing() {
    let two = TwoGateways::start().await;
    let (id, _uri) = two.open_hearing_on_a();
    let catalog = Catalog::connect(&two.backends.postgres.url).await.unwrap();
    let held_by_a = catalog.hearing_lease(&id).await.unwrap().unwrap();

    let shared_env = two.backends.env(&[]);
    let mut env = support::env_refs(&shared_env);
    let preload = support::libfaketime();
    env.push(("LD_PRELOAD", preload.as_os_str()));
    env.push(("FAKETIME", std::ffi::OsStr::new("+20m")));
    // Its timers (tokio's, on the monotonic clock) run at the real pace; only the wall clock is ahead.
    env.push(("FAKETIME_DONT_FAKE_MONOTONIC", std::ffi::OsStr::new("1")));
    let dir_c = support::data_dir_with_key(&two.backends.key);
    let (process_c, port_c) = support::spawn_gateway(dir_c.path(), &env);
    let c = support::Client { base: format!("http://127.0.0.1:{port_c}"), cookie: None };
    let log = std::fs::read_to_string(dir_c.path().join("gateway-stderr.log")).unwrap_or_default();
    assert!(!log.contains("ERROR"), "{log}");

    // C looks for duties every 5 s, and a lease is taken once 15 s past its expiry: 40 s of C running are several
    // looks at leases it would have found expired by its own clock.
    let watched = std::time::Instant::now() + std::time::Duration::from_secs(40);
    while std::time::Instant::now() < watched {
        assert_eq!(two.a.send("GET", "/readyz/hearings", "text/plain", b"").0, 200, "A still hosts the hearings");
        assert_eq!(c.send("GET", "/readyz/hearings", "text/plain", b"").0, 503, "C hosts nothing");
        assert_eq!(c.send("GET", "/readyz/transfers", "text/plain", b"").0, 503, "C handles no transfers");
        let lease = catalog.hearing_lease(&id).await.unwrap().unwrap();
        assert_eq!((&lease.node, lease.epoch), (&held_by_a.node, held_by_a.epoch), "the hearing stays A's");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    let now = catalog.database_now_ms().await;
    let latest: i64 = sqlx::query_scalar("SELECT MAX(expires_at) FROM duty_leases")
        .fetch_one(&sqlx::AnyPool::connect(&two.backends.postgres.url).await.unwrap())
        .await
        .unwrap();
    assert!(latest < now + 60_000, "no duty's lease runs 20 minutes ahead: {} s", (latest - now) / 1000);
    let log = std::fs::read_to_string(dir_c.path().join("gateway-stderr.log")).unwrap();
    assert!(log.contains("clock differs from the database"), "C was told its clock is off: {log}");
    drop(process_c);
}
