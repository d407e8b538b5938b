//! Budgets that protect against abuse hold across every gateway on one database, not per process
//! (`custodia_service::budget::BudgetStore`): two gateway processes on one PostgreSQL, a client alternating between
//! them as a load balancer would send it, gets one budget. Judged by counts: the only allowance for time is what
//! the budget refills while the test runs, computed from how long it ran.

mod support;

use std::net::Ipv4Addr;
use std::time::Instant;

use serde_json::json;
use support::{As, http_from, refilled_since};

/// The trusted reverse proxy in front of both gateways, which names each client's address.
const PROXY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);
/// Custody records of an account's steps a minute (and at once), on both gateways.
const RECORDS: u32 = 6;
const PASSWORD: &str = "clerk1-correct-horse-battery";

struct TwoGateways {
    backends: support::SharedBackends,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    processes: (support::GatewayProcess, support::GatewayProcess),
    ports: [u16; 2],
    clients: [support::Client; 2],
    artefact: String,
}

impl TwoGateways {
    async fn start() -> Self {
        // A clerk of `case-b` and an artefact of the case, made through a gateway that then goes away.
        let (backends, (session, artefact)) = support::SharedBackends::start(async |setup| {
            let (clerk, session) = setup.person("clerk1", "IT").await;
            setup.case("case-b").await;
            setup.member("case-b", &clerk, "clerk").await;
            let uploaded =
                setup.upload("case-b", "purpose=statement", As::Session(&session), b"a statement".to_vec()).await;
            assert_eq!(uploaded.status, 201, "{}", String::from_utf8_lossy(&uploaded.body));
            let artefact = uploaded.json()["artefact"].as_str().unwrap().to_owned();
            (session, artefact)
        })
        .await;
        let (proxy, records) = (PROXY.to_string(), RECORDS.to_string());
        let env =
            backends.env(&[("CUSTODIA_TRUSTED_PROXIES", &proxy), ("CUSTODIA_CUSTODY_RECORDS_PER_MINUTE", &records)]);
        let env = support::env_refs(&env);
        let key = &backends.key;
        let (dir_a, dir_b) = (support::data_dir_with_key(key), support::data_dir_with_key(key));
        let (process_a, port_a) = support::spawn_gateway(dir_a.path(), &env);
        // One device cookie key, made by A, as the keys volume of deploy/compose.yaml shares it: a browser's cookie
        // counts on either gateway.
        let device_key = "keys/device-cookie.key";
        std::fs::copy(dir_a.path().join(device_key), dir_b.path().join(device_key)).unwrap();
        let (process_b, port_b) = support::spawn_gateway(dir_b.path(), &env);
        let client =
            |port: u16| support::Client { base: format!("http://127.0.0.1:{port}"), cookie: Some(session.clone()) };
        Self {
            clients: [client(port_a), client(port_b)],
            backends,
            _dirs: (dir_a, dir_b),
            processes: (process_a, process_b),
            ports: [port_a, port_b],
            artefact,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_database_give_a_client_one_budget_not_two() {
    use custodia_service::identity::{ACCOUNT_CHECKS_BURST, ACCOUNT_CHECKS_PER_MINUTE};
    if !support::installed("curl", &["--version"]) {
        eprintln!("SKIPPED: curl is not installed (scripts/setup-system.sh test)");
        return;
    }
    let set_up = Instant::now();
    let gateways = TwoGateways::start().await;

    // Custody records: downloads by one account alternated over the two gateways. Per process, each gateway
    // would have let RECORDS through.
    let started = Instant::now();
    let mut downloaded = [0usize; 2];
    for n in 0..(4 * RECORDS as usize) {
        match gateways.clients[n % 2].download(&gateways.artefact) {
            200 => downloaded[n % 2] += 1,
            429 => {}
            other => panic!("a download was answered {other}"),
        }
    }
    let allowed = RECORDS as usize + refilled_since(started, RECORDS);
    let total = downloaded[0] + downloaded[1];
    assert!(total >= RECORDS as usize && total <= allowed, "{downloaded:?} downloads, one budget allows {allowed}");
    assert!(allowed < 2 * RECORDS as usize, "the run took too long to tell one budget from two");
    assert!(downloaded[0] > 0 && downloaded[1] > 0, "both gateways served some: {downloaded:?}");

    // Password guessing: wrong passwords for one account, each from a network of its own (so that no address's
    // own lockout counts), alternated over the two gateways. The account's ceiling of password checks is one.
    // The setup gateway's sign-in of the clerk, from no address it knew, was a password check of the account:
    // one of the budget is spent already, in the database.
    let burst = ACCOUNT_CHECKS_BURST as usize - 1;
    let mut checked = [0usize; 2];
    for n in 0..(2 * burst + 10) {
        let client = format!("2001:db8:{n:x}::1");
        let body = json!({"username": "clerk1", "password": format!("guess-{n}")}).to_string();
        let headers = [("Content-Type", "application/json"), ("X-Forwarded-For", client.as_str())];
        let port = gateways.ports[n % 2];
        let answer = http_from(PROXY, port, "POST", "/api/v1/session", &headers, body.as_bytes()).await.unwrap();
        match answer.status {
            401 => checked[n % 2] += 1,
            429 => {}
            other => panic!("a wrong password was answered {other}: {}", answer.text()),
        }
    }
    let allowed = burst + refilled_since(set_up, ACCOUNT_CHECKS_PER_MINUTE);
    let total = checked[0] + checked[1];
    assert!(total >= burst && total <= allowed, "{checked:?} passwords checked, one budget allows {allowed}");
    assert!(allowed < 2 * burst, "the run took too long to tell one budget from two");
    assert!(checked[0] > 0 && checked[1] > 0, "both gateways checked some: {checked:?}");
    // The owner, from a network it signed in from before on neither gateway, is delayed like any stranger...
    let body = json!({"username": "clerk1", "password": PASSWORD}).to_string();
    let headers = [("Content-Type", "application/json"), ("X-Forwarded-For", "2001:db8:ffff::1")];
    let answer = http_from(PROXY, gateways.ports[1], "POST", "/api/v1/session", &headers, body.as_bytes()).await;
    assert_eq!(answer.unwrap().status, 429, "the ceiling is spent on both gateways");
    // ...and neither gateway's log names the account or the networks that tried it.
    for process in [&gateways.processes.0, &gateways.processes.1] {
        let log = process.log();
        for secret in ["clerk1", "2001:db8"] {
            assert!(!log.contains(secret), "a gateway's log names {secret}");
        }
    }
    // The buckets are in the one database: the account's records, its password checks, and its sign-ins.
    let catalog = custodia_catalog::Catalog::connect(&gateways.backends.postgres.url).await.unwrap();
    assert!(catalog.budget_buckets().await.unwrap() >= 2);
}

/// A sign-in to the clerk's account from `client` (a network named by the proxy), through the gateway on `port`,
/// with the device cookie `device` if any.
async fn sign_in(port: u16, client: &str, password: &str, device: Option<&str>) -> support::RawAnswer {
    let body = json!({"username": "clerk1", "password": password}).to_string();
    let cookie = device.map(|device| format!("custodia_device={device}"));
    let mut headers = vec![("Content-Type", "application/json"), ("X-Forwarded-For", client)];
    headers.extend(cookie.as_deref().map(|cookie| ("Cookie", cookie)));
    http_from(PROXY, port, "POST", "/api/v1/session", &headers, body.as_bytes()).await.unwrap()
}

/// Wrong passwords for one account from one network lock that network out of the account once they number
/// `ACCOUNT_PEER_FAILURES` over both gateways together, not on each: the counts are budgets in the catalog. The
/// owner's device cookie still gets them in, through either gateway, and that success clears the network's count on
/// both. Judged by counts; the only allowance for time is what the lockout refills while the test runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_through_two_gateways_count_once_and_the_owners_device_still_gets_in() {
    use custodia_service::identity::{ACCOUNT_PEER_FAILURES, THROTTLE_WINDOW};
    if !support::installed("curl", &["--version"]) {
        eprintln!("SKIPPED: curl is not installed (scripts/setup-system.sh test)");
        return;
    }
    let gateways = TwoGateways::start().await;
    let ports = gateways.ports;
    // The owner signs in on A from their desk: their browser keeps a device cookie.
    let signed_in = sign_in(ports[0], "2001:db8:d35c::1", PASSWORD, None).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.text());
    let device = signed_in
        .head
        .lines()
        .filter_map(|line| line.split_once(':').filter(|(name, _)| name.eq_ignore_ascii_case("set-cookie")))
        .find_map(|(_, cookie)| cookie.trim().strip_prefix("custodia_device="))
        .and_then(|cookie| cookie.split(';').next())
        .unwrap_or_else(|| panic!("no device cookie: {}", signed_in.head))
        .to_owned();

    // A guesser on one network alternates over the two gateways until refused. Per process, each gateway would
    // have checked ACCOUNT_PEER_FAILURES of them before refusing.
    let guesser = "2001:db8:bad::1";
    let started = Instant::now();
    let mut checked = [0usize; 2];
    let mut refused = None;
    for n in 0..(2 * ACCOUNT_PEER_FAILURES as usize + 2) {
        let answer = sign_in(ports[n % 2], guesser, &format!("guess-{n}"), None).await;
        match answer.status {
            401 => checked[n % 2] += 1,
            429 => {
                refused = Some(answer.text());
                break;
            }
            other => panic!("a wrong password was answered {other}: {}", answer.text()),
        }
    }
    let refill_every = THROTTLE_WINDOW.as_secs_f64() / f64::from(ACCOUNT_PEER_FAILURES);
    let refilled = (started.elapsed().as_secs_f64() / refill_every).ceil() as usize;
    let limit = ACCOUNT_PEER_FAILURES as usize;
    let total = checked[0] + checked[1];
    assert!(total >= limit && total <= limit + refilled, "{checked:?} checked, one count allows {limit} + {refilled}");
    let refused = refused.unwrap_or_else(|| panic!("never refused: {checked:?} wrong passwords checked"));
    assert!(refused.contains("from your address"), "{refused}");
    assert!(limit + refilled < 2 * limit, "the run took too long to tell one count from two");
    assert!(checked[0] > 0 && checked[1] > 0, "both gateways counted some: {checked:?}");
    // Locked on both gateways: the right password from that network is refused too, without the owner's cookie.
    for port in ports {
        let answer = sign_in(port, guesser, PASSWORD, None).await;
        assert_eq!(answer.status, 429, "{}", answer.text());
    }
    // With it, the owner gets in from there through B, and that success clears the count for the network: A
    // checks its next wrong password instead of refusing it.
    let answer = sign_in(ports[1], guesser, PASSWORD, Some(&device)).await;
    assert_eq!(answer.status, 200, "the owner's device was locked out: {}", answer.text());
    let answer = sign_in(ports[0], guesser, "one-more-guess", None).await;
    assert_eq!(answer.status, 401, "the success on B cleared nothing on A: {}", answer.text());
    // The operator's log says a lockout began, never for whom or from where; the database keeps only digests.
    let logs = gateways.processes.0.log() + &gateways.processes.1.log();
    assert!(logs.contains("locked out for one account from one address"), "no lockout in the logs");
    for secret in ["clerk1", "2001:db8", "guess-"] {
        assert!(!logs.contains(secret), "a gateway's log names {secret}");
    }
}
