//! A hearing room while the database is down: the real `custodia serve` process on PostgreSQL and garage, whose
//! PostgreSQL is stopped in the middle of a hearing and started again. Entering the room then fails for a reason
//! that passes, and is said so: a join, a rejoin and a WHIP publish are refused retryably (the room's `unavailable`,
//! or `served_elsewhere` once the hearing's lease has lapsed unrenewed; WHIP's 503 with `Retry-After`), never with a
//! final refusal, and nothing is used up: once the database is back, the same join, rejoin and publish let them in,
//! as a page (web/src/lib/room.js) or a WHIP publisher trying again would.

mod support;

use serde_json::{Value, json};

/// Whether a refused entry is one a page tries again: nothing was used up.
fn retryable(answer: &Value) -> bool {
    answer["type"] == "refused" && matches!(answer["problem"].as_str(), Some("unavailable" | "served_elsewhere"))
}

/// Says `hello` at `room` until it is welcomed, as a page does, each answer meanwhile a retryable refusal; with a
/// generous bound (the gateway's database pool and its hearing's takeover take seconds).
async fn let_in_once_back(room: &str, hello: &Value, who: &str) -> (Value, support::RoomSocket) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let (answer, socket) = support::room_enter(room, hello.clone()).await;
        if answer["type"] == "welcome" {
            return (answer, socket);
        }
        assert!(retryable(&answer), "{who}, once the database was back, was refused for good: {answer}");
        assert!(std::time::Instant::now() < deadline, "{who} was never let in again: {answer}");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

async fn publish(port: u16, secret: &str, offer: &str) -> support::RawAnswer {
    let bearer = format!("Bearer {secret}");
    let headers = [("Authorization", bearer.as_str()), ("Content-Type", "application/sdp")];
    support::http_from(std::net::Ipv4Addr::LOCALHOST, port, "POST", "/api/v1/room/whip", &headers, offer.as_bytes())
        .await
        .unwrap()
}

/// One gateway process on PostgreSQL and garage, hosting the hearings, and a clerk of `case-o` signed in on it.
struct Hosting {
    backends: support::SharedBackends,
    dir: tempfile::TempDir,
    gateway: support::GatewayProcess,
    port: u16,
    clerk: support::Client,
}

impl Hosting {
    async fn start() -> Self {
        let (backends, session) = support::SharedBackends::start(async |setup| {
            let (clerk, session) = setup.person("clerk1", "IT").await;
            setup.case("case-o").await;
            setup.member("case-o", &clerk, "clerk").await;
            session
        })
        .await;
        let dir = support::data_dir_with_key(&backends.key);
        let (gateway, port) = Self::spawn(&backends, &dir);
        let clerk = support::Client { base: format!("http://127.0.0.1:{port}"), cookie: Some(session) };
        let hosting = Self { backends, dir, gateway, port, clerk };
        hosting.hosts_the_hearings().await;
        hosting
    }

    fn spawn(backends: &support::SharedBackends, dir: &tempfile::TempDir) -> (support::GatewayProcess, u16) {
        let env = backends.env(&[]);
        support::spawn_gateway(dir.path(), &support::env_refs(&env))
    }

    /// Waits until the gateway hosts the hearings: the setup gateway's duty, or a killed one's, lapses unrenewed.
    async fn hosts_the_hearings(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while self.clerk.send("GET", "/readyz/hearings", "text/plain", b"").0 != 200 {
            assert!(std::time::Instant::now() < deadline, "the gateway never hosted the hearings");
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    /// A hearing of `case-o` scheduled: its console path.
    fn schedule(&self) -> String {
        let schedule = json!({"scheduled_for": "2026-12-01T09:00:00Z", "place": "Tribunale di Catania, aula 2"});
        let (status, hearing) = self.clerk.json("POST", "/api/v1/cases/case-o/hearings", schedule);
        assert_eq!(status, 201, "{hearing}");
        format!("/api/v1/cases/case-o/hearings/{}", hearing["id"].as_str().unwrap())
    }

    fn room(&self) -> String {
        format!("ws://127.0.0.1:{}/api/v1/room", self.port)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_down_entering_the_room_is_refused_retryably_and_works_once_it_is_back() {
    let hosting = Hosting::start().await;
    let (backends, port, clerk) = (&hosting.backends, hosting.port, &hosting.clerk);
    let uri = hosting.schedule();
    let mut secrets = Vec::new();
    for role in ["witness", "witness", "remote_site_officer"] {
        let (status, invite) = clerk.json("POST", &format!("{uri}/invites"), json!({ "role": role }));
        assert_eq!(status, 201, "{invite}");
        secrets.push(invite["secret"].as_str().unwrap().to_owned());
    }
    let (status, opened) = clerk.json("POST", &format!("{uri}/open"), json!({}));
    assert_eq!(status, 200, "{opened}");
    let room = hosting.room();

    // The first witness is in, and stays connected.
    let (welcome, _first_socket) = support::room_enter(&room, json!({"type": "join", "invite": secrets[0]})).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let rejoin = json!({"type": "rejoin", "credential": welcome["credential"]});
    let join = json!({"type": "join", "invite": secrets[1]});
    let offer = support::aiortc_offer();

    backends.postgres.stop();
    // A new witness's join: the step's record cannot be appended, so nothing of it happened. Told to try again,
    // by the key a page retries, not "other", after which the page stopped for good.
    let (refused, _socket) = support::room_enter(&room, join.clone()).await;
    assert_eq!(refused["type"], "refused", "{refused}");
    assert_eq!(refused["problem"], "unavailable", "{refused}");
    assert!(refused["reason"].as_str().unwrap().contains("try again"), "{refused}");
    // The first witness coming back on a new connection (a reloaded page), and a WHIP publisher: the same, unless
    // the hearing's lease has lapsed unrenewed meanwhile and the hearing stopped here, which is retryable too.
    let (refused, _socket) = support::room_enter(&room, rejoin.clone()).await;
    assert!(retryable(&refused), "a rejoin while the database is down: {refused}");
    if let Some(offer) = &offer {
        let refused = publish(port, &secrets[2], offer).await;
        assert_eq!(refused.status, 503, "a WHIP publish while the database is down: {}", refused.text());
        assert!(refused.header("retry-after").is_some(), "{}", refused.text());
    }

    backends.postgres.restart();
    // The same join, rejoin and publish let them in: no invite was used up by the refused attempts.
    let (welcome, _second) = let_in_once_back(&room, &join, "the second witness").await;
    assert_eq!(welcome["role"], "witness", "{welcome}");
    let (welcome, _first_again) = let_in_once_back(&room, &rejoin, "the first witness, rejoining").await;
    assert_eq!(welcome["role"], "witness", "{welcome}");
    if let Some(offer) = &offer {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let answer = publish(port, &secrets[2], offer).await;
            if answer.status == 201 {
                break;
            }
            assert_eq!(answer.status, 503, "a WHIP publish once the database was back: {}", answer.text());
            assert!(answer.header("retry-after").is_some(), "{}", answer.text());
            assert!(std::time::Instant::now() < deadline, "the WHIP publisher was never let in again");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
    // One participant per invite that was let in, none for the refused attempts.
    let (status, view) = clerk.json("GET", &uri, Value::Null);
    assert_eq!(status, 200, "{view}");
    let participants = view["participants"].as_array().unwrap();
    assert_eq!(participants.len(), 2 + usize::from(offer.is_some()), "{view}");
    let used = view["invites"].as_array().unwrap().iter().filter(|invite| invite["state"] == "used").count();
    assert_eq!(used, participants.len(), "{view}");
}

/// A join that happened in part: its first custody record appended (durable, public), then the next one's write
/// failing (the database connection cut, by a trigger of this test's, as a failover would). The invite is used, so
/// the refusal is final (`other`), not one the page would try again for five minutes only to be told `used`; and
/// the hearing's journal keeps the join, so a gateway restoring the hearing after a crash does not find the invite
/// unused and let a second person in on it (before, the join was refused `unavailable`, then after the restart the
/// same invite was welcomed again: two joins on one invite in the ledger).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_recorded_in_part_is_final_and_the_invite_stays_used_after_a_restart() {
    let mut hosting = Hosting::start().await;
    let uri = hosting.schedule();
    let (status, invite) =
        hosting.clerk.json("POST", &format!("{uri}/invites"), json!({"role": "clerk", "admit_on_join": true}));
    assert_eq!(status, 201, "{invite}");
    let (status, opened) = hosting.clerk.json("POST", &format!("{uri}/open"), json!({}));
    assert_eq!(status, 200, "{opened}");
    // The join's second record (`admitted`, after `joined_lobby`) loses its connection as it is written, once.
    let pool = sqlx::PgPool::connect(&hosting.backends.postgres.url).await.unwrap();
    for statement in [
        "CREATE SEQUENCE cut_once",
        "CREATE FUNCTION cut_admitted() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF convert_from(NEW.record, 'UTF8') LIKE '%\"admitted\"%' AND nextval('cut_once') = 1 THEN \
             PERFORM pg_terminate_backend(pg_backend_pid()); \
           END IF; RETURN NEW; END $$",
        "CREATE TRIGGER cut_admitted BEFORE INSERT ON custody_index FOR EACH ROW EXECUTE FUNCTION cut_admitted()",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let join = json!({"type": "join", "invite": invite["secret"]});
    let (refused, _socket) = support::room_enter(&hosting.room(), join.clone()).await;
    assert_eq!((refused["type"].as_str(), refused["problem"].as_str()), (Some("refused"), Some("other")), "{refused}");
    let (again, _socket) = support::room_enter(&hosting.room(), join.clone()).await;
    assert_eq!(again["problem"], "used", "{again}");

    // The gateway dies; restarted on its data, it takes the hearing over from the journal: the invite is used there.
    hosting.gateway.stop();
    (hosting.gateway, hosting.port) = Hosting::spawn(&hosting.backends, &hosting.dir);
    hosting.clerk.base = format!("http://127.0.0.1:{}", hosting.port);
    hosting.hosts_the_hearings().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let after = loop {
        let (answer, _socket) = support::room_enter(&hosting.room(), join.clone()).await;
        if !retryable(&answer) {
            break answer;
        }
        assert!(std::time::Instant::now() < deadline, "the hearing was never taken over: {answer}");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    };
    assert_eq!((after["type"].as_str(), after["problem"].as_str()), (Some("refused"), Some("used")), "{after}");
    let joins: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM custody_index WHERE convert_from(record, 'UTF8') LIKE '%\"joined_lobby\"%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(joins, 1, "one join on the record for the one invite");
}
