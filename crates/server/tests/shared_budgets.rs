//! Budgets that protect against abuse hold across every gateway on one database, not per process
//! (`custodia_service::budget::BudgetStore`): two gateway processes on one PostgreSQL, a client alternating between
//! them as a load balancer would send it, gets one budget. Judged by counts: the only allowance for time is what
//! the budget refills while the test runs, computed from how long it ran.

mod support;

use std::net::Ipv4Addr;
use std::time::Instant;

use custodia_tests::garage::Garage;
use custodia_tests::postgres::TempPostgres;
use serde_json::json;
use support::{As, TestGateway, http_from, on_garage};

/// The trusted reverse proxy in front of both gateways, which names each client's address.
const PROXY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);
/// Custody records of an account's steps a minute (and at once), on both gateways.
const RECORDS: u32 = 6;
const PASSWORD: &str = "clerk1-correct-horse-battery";

struct TwoGateways {
    postgres: TempPostgres,
    _garage: Garage,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    processes: (support::GatewayProcess, support::GatewayProcess),
    ports: [u16; 2],
    clients: [support::Client; 2],
    artefact: String,
}

impl TwoGateways {
    async fn start() -> Self {
        let postgres = TempPostgres::start();
        let garage = Garage::start();
        // A clerk of `case-b` and an artefact of the case, made through a gateway that then goes away.
        let (session, artefact, key) = {
            let setup = TestGateway::start_with(|config| {
                on_garage(&garage, config);
                config.database_url = Some(postgres.url.clone());
            })
            .await;
            let (clerk, session) = setup.person("clerk1", "IT").await;
            setup.case("case-b").await;
            setup.member("case-b", &clerk, "clerk").await;
            let uploaded =
                setup.upload("case-b", "purpose=statement", As::Session(&session), b"a statement".to_vec()).await;
            assert_eq!(uploaded.status, 201, "{}", String::from_utf8_lossy(&uploaded.body));
            let artefact = uploaded.json()["artefact"].as_str().unwrap().to_owned();
            (session, artefact, std::fs::read(setup.dir.path().join("keys/gateway.key")).unwrap())
        };
        let mut env: Vec<(&str, std::ffi::OsString)> =
            garage.gateway_env().into_iter().map(|(name, value)| (name, value.into())).collect();
        env.push(("CUSTODIA_DATABASE_URL", postgres.url.clone().into()));
        env.push(("CUSTODIA_TRUSTED_PROXIES", PROXY.to_string().into()));
        env.push(("CUSTODIA_CUSTODY_RECORDS_PER_MINUTE", RECORDS.to_string().into()));
        let env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(name, value)| (*name, value.as_os_str())).collect();
        let (dir_a, dir_b) = (support::data_dir_with_key(&key), support::data_dir_with_key(&key));
        let (process_a, port_a) = support::spawn_gateway(dir_a.path(), &env);
        let (process_b, port_b) = support::spawn_gateway(dir_b.path(), &env);
        let client =
            |port: u16| support::Client { base: format!("http://127.0.0.1:{port}"), cookie: Some(session.clone()) };
        Self {
            clients: [client(port_a), client(port_b)],
            postgres,
            _garage: garage,
            _dirs: (dir_a, dir_b),
            processes: (process_a, process_b),
            ports: [port_a, port_b],
            artefact,
        }
    }
}

/// How many more tokens a budget of `per_minute` can have refilled since `started`, at most.
fn refilled_since(started: Instant, per_minute: u32) -> usize {
    (started.elapsed().as_secs_f64() * f64::from(per_minute) / 60.0).ceil() as usize
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
    let catalog = custodia_catalog::Catalog::connect(&gateways.postgres.url).await.unwrap();
    assert!(catalog.budget_buckets().await.unwrap() >= 2);
}
