//! A hearing room's secrets work only while they can let someone in, and what is turned away leaves no trace:
//! an invite that was used, revoked or has expired, the credential of someone removed, and every secret once the
//! hearing has ended are refused before the hearing's rules, so nothing of them reaches the public log, the
//! hearing or its room. Repeated attempts, room steps and console steps are held to budgets, so that one client
//! cannot flood the record. Everything runs against a gateway serving on loopback, through the room's WebSocket.

mod support;

use std::time::Duration;

use custodia_core::CaseId;
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use support::{As, TestGateway, serve_on_loopback};

type Socket = support::RoomSocket;

const CASE: &str = "case-1";

use support::{room_enter as enter, room_message as next};

async fn join(url: &str, secret: &str) -> (Value, Socket) {
    enter(url, json!({"type": "join", "invite": secret})).await
}

/// Checks that the room turned the hello away, saying `why`.
/// A refused entry: its text says `why`, and its `problem` key (which the person's page words in their language)
/// is `problem`.
fn assert_refused(answer: &Value, why: &str, problem: &str) {
    assert_eq!(answer["type"], "refused", "{answer}");
    let reason = answer["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(why), "reason {reason:?} lacks {why:?}");
    assert_eq!(answer["problem"], problem, "{answer}");
}

struct Hearing {
    id: String,
    clerk: String,
}

impl Hearing {
    async fn schedule(gateway: &TestGateway) -> Self {
        let (clerk_id, clerk) = gateway.person("clerk", "IT").await;
        gateway.member(CASE, &clerk_id, "clerk").await;
        let schedule = json!({"scheduled_for": "2026-12-01T09:00:00Z", "place": "Aula 2"});
        let reply =
            gateway.call("POST", &format!("/api/v1/cases/{CASE}/hearings"), Some(As::Session(&clerk)), schedule).await;
        assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
        Hearing { id: reply.json()["id"].as_str().unwrap().to_owned(), clerk }
    }

    fn uri(&self, rest: &str) -> String {
        format!("/api/v1/cases/{CASE}/hearings/{}{rest}", self.id)
    }

    /// Issues an invite; returns its id and secret.
    async fn invite(&self, gateway: &TestGateway, body: Value) -> (String, String) {
        let reply = gateway.call("POST", &self.uri("/invites"), Some(As::Session(&self.clerk)), body).await;
        assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
        let issued = reply.json();
        (issued["invite"].as_str().unwrap().to_owned(), issued["secret"].as_str().unwrap().to_owned())
    }

    async fn console(&self, gateway: &TestGateway, step: &str) -> support::Reply {
        gateway.send_bytes("POST", &self.uri(step), Some(As::Session(&self.clerk)), &[], "").await
    }

    async fn view(&self, gateway: &TestGateway) -> Value {
        gateway.get(&self.uri(""), Some(As::Session(&self.clerk))).await.json()
    }

    /// How many members the hearing's media room holds, connected or not.
    fn room_members(&self, gateway: &TestGateway) -> usize {
        let case = CaseId::new(CASE).unwrap();
        let live = gateway.state.hearings.of_case(&case).into_iter().find(|live| live.id().as_str() == self.id);
        live.expect("the hearing is live").room().member_count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_secrets_are_refused_without_a_trace_and_attempts_are_budgeted() {
    let gateway = TestGateway::start().await;
    gateway.case(CASE).await;
    let hearing = Hearing::schedule(&gateway).await;
    let (_, judge_secret) = hearing.invite(&gateway, json!({"role": "judge", "admit_on_join": true})).await;
    let (_, witness_secret) = hearing.invite(&gateway, json!({"role": "witness"})).await;
    let (revoked, revoked_secret) = hearing.invite(&gateway, json!({"role": "witness"})).await;
    let (_, short_secret) = hearing.invite(&gateway, json!({"role": "witness", "expires_in_seconds": 300})).await;
    let (_, unused_secret) = hearing.invite(&gateway, json!({"role": "interpreter"})).await;
    let port = serve_on_loopback(&gateway).await;
    let url = format!("ws://127.0.0.1:{port}/api/v1/room");

    // Before the lobby opens, an invite is turned away without a record.
    let before = gateway.ledger_size();
    assert_refused(&join(&url, &witness_secret).await.0, "not opened", "not_open");
    assert_eq!(gateway.ledger_size(), before);
    assert_eq!(hearing.console(&gateway, "/open").await.status, 200);
    let reply = gateway.delete(&hearing.uri(&format!("/invites/{revoked}")), Some(As::Session(&hearing.clerk))).await;
    assert_eq!(reply.status, 204, "{}", String::from_utf8_lossy(&reply.body));

    let (welcome, mut judge) = join(&url, &judge_secret).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let judge_credential = welcome["credential"].as_str().unwrap().to_owned();
    let (welcome, _witness) = join(&url, &witness_secret).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let witness = welcome["participant"].as_str().unwrap().to_owned();
    let witness_credential = welcome["credential"].as_str().unwrap().to_owned();

    // Used, revoked, expired and made-up secrets: refused, and nothing changes anywhere.
    let (ledger, members) = (gateway.ledger_size(), hearing.room_members(&gateway));
    assert_eq!(members, 2);
    assert_refused(&join(&url, &witness_secret).await.0, "already been used", "used");
    assert_refused(&join(&url, &revoked_secret).await.0, "revoked", "revoked");
    gateway.clock.advance(301);
    assert_refused(&join(&url, &short_secret).await.0, "expired", "expired");
    assert_refused(&join(&url, "not-an-invite").await.0, "not valid", "invalid");
    assert_eq!(gateway.ledger_size(), ledger, "a refused entry reached the public log");
    assert_eq!(hearing.room_members(&gateway), members, "a refused entry left a member in the room");
    assert_eq!(hearing.view(&gateway).await["participants"].as_array().unwrap().len(), 2);

    // A secret tried again and again runs out of attempts: ten a minute (as many at once), and what real time has
    // given back since the budget was last full (the clock moved past a minute above).
    let started = std::time::Instant::now();
    let mut tries = 0;
    loop {
        let (answer, _) = join(&url, &witness_secret).await;
        assert_eq!(answer["type"], "refused", "{answer}");
        tries += 1;
        if answer["reason"].as_str().unwrap().contains("too many attempts") {
            break;
        }
        assert!(tries <= 10 + support::refilled_since(started, 10), "{tries} tries of one secret, all answered");
    }
    assert_eq!(gateway.ledger_size(), ledger);

    // Once removed, a participant's credential no longer works.
    judge.send(json!({"type": "admit", "participant": witness}).to_string().into()).await.unwrap();
    judge.send(json!({"type": "remove", "participant": witness}).to_string().into()).await.unwrap();
    for _ in 0..600 {
        let view = hearing.view(&gateway).await;
        let removed =
            view["participants"].as_array().unwrap().iter().any(|p| p["id"] == witness && p["place"] == "away");
        if removed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ledger = gateway.ledger_size();
    assert_refused(
        &enter(&url, json!({"type": "rejoin", "credential": witness_credential})).await.0,
        "removed",
        "removed",
    );
    assert_eq!(gateway.ledger_size(), ledger);

    // A participant's steps are budgeted: a flood of refused steps is cut off, and only what was taken is recorded.
    // The flood is larger than the participant's burst of room steps (40) but, with the three messages this socket
    // has sent (hello, admit, remove), within the socket's own burst of frames (60), over which the gateway closes
    // the socket instead of answering (tests/abuse.rs floods that).
    const FLOOD: usize = 55;
    for _ in 0..FLOOD {
        judge.send(json!({"type": "admit", "participant": witness}).to_string().into()).await.unwrap();
    }
    let mut budgeted = 0;
    for _ in 0..FLOOD {
        let answer = next(&mut judge).await;
        assert_eq!(answer["type"], "refused", "{answer}");
        budgeted += usize::from(answer["reason"].as_str().unwrap().contains("too many room steps"));
    }
    let recorded = gateway.ledger_size() - ledger;
    assert!(budgeted >= 1, "{FLOOD} refused steps were all taken");
    assert!(recorded as usize <= FLOOD - budgeted, "{recorded} records for {} steps taken", FLOOD - budgeted);

    // Once the hearing has ended, no secret works, and trying leaves nothing.
    assert_eq!(hearing.console(&gateway, "/close").await.status, 200);
    assert_eq!(next(&mut judge).await["type"], "ended", "hearing_ended");
    for _ in 0..600 {
        if !hearing.view(&gateway).await["minutes_artefact"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ledger = gateway.ledger_size();
    assert_refused(
        &enter(&url, json!({"type": "rejoin", "credential": judge_credential})).await.0,
        "ended",
        "hearing_ended",
    );
    assert_refused(&join(&url, &unused_secret).await.0, "ended", "hearing_ended");
    assert_eq!(gateway.ledger_size(), ledger);
}

/// A clerk's console steps are budgeted per account (`CUSTODIA_CONSOLE_STEPS_PER_MINUTE`, twice as many at once):
/// a flood of refused steps (opening an open hearing) is cut off with 429 problems that leave nothing on the
/// record, and the budget comes back with time.
#[tokio::test]
async fn console_steps_are_budgeted_per_account() {
    const PER_MINUTE: u32 = 5;
    let gateway = TestGateway::start_with(|config| config.quotas.console_steps_per_minute = PER_MINUTE).await;
    gateway.case(CASE).await;
    let started = std::time::Instant::now();
    let hearing = Hearing::schedule(&gateway).await;
    assert_eq!(hearing.console(&gateway, "/open").await.status, 200);
    // Scheduling and opening took two of the burst. The budget comes back with the gateway's clock, which runs
    // with real time besides the test's moves: a step a twelfth of a minute, which a slow machine may add.
    let came_back = || support::refilled_since(started, PER_MINUTE);
    let flood = |count: usize| {
        let (gateway, hearing) = (&gateway, &hearing);
        async move {
            let before = gateway.ledger_size();
            let mut taken = 0;
            for _ in 0..count {
                let reply = hearing.console(gateway, "/open").await;
                match reply.status.as_u16() {
                    409 => taken += 1,
                    429 => reply.assert_problem(429, "too-many", "try again in"),
                    other => panic!("{other}: {}", String::from_utf8_lossy(&reply.body)),
                }
            }
            let recorded = (gateway.ledger_size() - before) as usize;
            assert!(recorded <= taken, "{recorded} records for {taken} steps taken");
            taken
        }
    };
    let burst = 2 * PER_MINUTE as usize - 2;
    let taken = flood(100).await;
    assert!((burst..=burst + came_back()).contains(&taken), "{taken} taken: the burst, less scheduling and opening");
    gateway.clock.advance(60);
    let taken = taken + flood(100).await;
    let minute = burst + PER_MINUTE as usize;
    assert!((minute..=minute + came_back()).contains(&taken), "{taken} taken: and then a minute's worth");
}

/// An invite is valid for five minutes to thirty days; anything else is refused with a clear error.
#[tokio::test]
async fn invite_validity_is_bounded() {
    let gateway = TestGateway::start().await;
    gateway.case(CASE).await;
    let hearing = Hearing::schedule(&gateway).await;
    for seconds in [json!(-5), json!(0), json!(299), json!(30 * 86_400 + 1), json!(4_000_000_000_i64)] {
        let body = json!({"role": "witness", "expires_in_seconds": seconds});
        let reply = gateway.call("POST", &hearing.uri("/invites"), Some(As::Session(&hearing.clerk)), body).await;
        reply.assert_problem(400, "bad-input", "5 minutes");
    }
    for seconds in [300, 30 * 86_400] {
        let body = json!({"role": "witness", "expires_in_seconds": seconds});
        let reply = gateway.call("POST", &hearing.uri("/invites"), Some(As::Session(&hearing.clerk)), body).await;
        assert_eq!(reply.status, 201, "{}", String::from_utf8_lossy(&reply.body));
    }
}

/// The console's JSON bodies are held to the API's 64 KiB, and the 413 says so truthfully.
#[tokio::test]
async fn console_bodies_are_held_to_the_json_limit() {
    let gateway = TestGateway::start().await;
    gateway.case(CASE).await;
    let hearing = Hearing::schedule(&gateway).await;
    let body = json!({"role": "witness", "padding": "x".repeat(100 * 1024)});
    let reply = gateway.call("POST", &hearing.uri("/invites"), Some(As::Session(&hearing.clerk)), body).await;
    reply.assert_problem(413, "too-large", "65536 bytes");
    let place = "x".repeat(300 * 1024);
    let schedule = json!({"scheduled_for": "2026-12-01T09:00:00Z", "place": place});
    let reply = gateway
        .call("POST", &format!("/api/v1/cases/{CASE}/hearings"), Some(As::Session(&hearing.clerk)), schedule)
        .await;
    reply.assert_problem(413, "too-large", "65536 bytes");
}

/// The witness's refused steps in the flood below, cycling through actions a witness may not take, each with a
/// number or id the sender chooses, so that no two steps in a row have the same words.
fn refused_step(n: usize) -> Value {
    let someone = format!("p-{n:06x}");
    match n % 9 {
        0 => json!({"type": "end_consultation", "consultation": n}),
        1 => json!({"type": "admit", "participant": someone}),
        2 => json!({"type": "remove", "participant": someone}),
        3 => json!({"type": "unmute", "participant": someone}),
        4 => json!({"type": "start_consultation", "with": [someone]}),
        5 => json!({"type": "swear_interpreter", "interpreter": someone, "languages": format!("it-{n}")}),
        6 => json!({"type": "mute", "participant": someone}),
        7 => json!({"type": "start_recording"}),
        _ => json!({"type": "end"}),
    }
}

/// One admitted participant sends 1,000 refused steps, varying the words of each: the public log gains a few
/// records, bounded by the refusal budget and the aggregation windows (never one a step), with the counts of the
/// rest; past the budget the room takes no step of theirs for a while; and the judge's steps go on being taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participants_refused_steps_cost_a_few_records_and_the_judge_goes_on() {
    const BUDGET: u32 = 3;
    const FLOOD: usize = 1000;
    const JUDGE_EVERY: usize = 50;
    let started = std::time::Instant::now();
    let gateway = TestGateway::start_with(|config| config.quotas.refusal_records_per_minute = BUDGET).await;
    gateway.case(CASE).await;
    let hearing = Hearing::schedule(&gateway).await;
    let (_, judge_secret) = hearing.invite(&gateway, json!({"role": "judge", "admit_on_join": true})).await;
    let (_, witness_secret) = hearing.invite(&gateway, json!({"role": "witness"})).await;
    assert_eq!(hearing.console(&gateway, "/open").await.status, 200);
    let port = serve_on_loopback(&gateway).await;
    let url = format!("ws://127.0.0.1:{port}/api/v1/room");
    let (welcome, judge) = join(&url, &judge_secret).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let judge_id = welcome["participant"].as_str().unwrap().to_owned();
    let (welcome, mut witness) = join(&url, &witness_secret).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let witness_id = welcome["participant"].as_str().unwrap().to_owned();

    // The judge's socket is read all along (a socket that is not read is closed); what is not a state is kept.
    let (mut judge, mut judge_messages) = judge.split();
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let kept = heard.clone();
    tokio::spawn(async move {
        while let Some(Ok(message)) = judge_messages.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] != "state" {
                    kept.lock().unwrap().push(value);
                }
            }
        }
    });
    judge.send(json!({"type": "admit", "participant": witness_id}).to_string().into()).await.unwrap();
    let mut admitted = false;
    for _ in 0..1200 {
        let view = hearing.view(&gateway).await;
        admitted =
            view["participants"].as_array().unwrap().iter().any(|p| p["id"] == witness_id && p["place"] == "main_room");
        if admitted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(admitted, "the witness was never admitted");

    // The flood, each step answered before the next, paced under the socket's own allowance of frames (ten a
    // second), over which the gateway would close the socket instead of answering.
    let before = gateway.ledger_size();
    let (mut by_rule, mut too_many, mut judge_steps) = (0usize, 0usize, 0usize);
    for n in 0..FLOOD {
        witness.send(refused_step(n).to_string().into()).await.unwrap();
        let answer = next(&mut witness).await;
        assert_eq!(answer["type"], "refused", "step {n}: {answer}");
        if answer["problem"].is_string() {
            by_rule += 1;
        } else {
            assert!(answer["reason"].as_str().unwrap().contains("too many"), "{answer}");
            too_many += 1;
        }
        if n % JUDGE_EVERY == 0 {
            let kind = if judge_steps % 2 == 0 { "mute" } else { "unmute" };
            judge.send(json!({"type": kind, "participant": witness_id}).to_string().into()).await.unwrap();
            judge_steps += 1;
        }
        tokio::time::sleep(Duration::from_millis(110)).await;
    }
    let minutes = started.elapsed().as_secs() / 60 + 1;

    // Whatever is still being counted is written at the next activity once its window has closed.
    gateway.clock.advance(61);
    gateway.state.gateway.flush_refusals().await.unwrap();
    let (mut witness_records, mut counted, mut judge_records) = (0u64, 0u64, 0usize);
    // The judge's last steps may still be on their way: the records are read until they are all there.
    for _ in 0..1200 {
        (witness_records, counted, judge_records) = (0, 0, 0);
        for index in before..gateway.ledger_size() {
            let record = gateway.ledger_record(index).await;
            if record["actor"] == witness_id.as_str() {
                assert_eq!(record["event"]["kind"], "step_refused", "{record}");
                witness_records += 1;
                counted += record["repeated"]["count"].as_u64().unwrap_or(1);
            } else if record["actor"] == judge_id.as_str() {
                let kind = record["event"]["kind"].as_str().unwrap();
                assert!(kind == "muted" || kind == "unmuted", "{record}");
                judge_records += 1;
            }
        }
        if judge_records >= judge_steps {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "{FLOOD} refused steps: {by_rule} refused by a rule, {too_many} over a budget; {witness_records} records \
         counting {counted} refusals; {judge_records} of the judge's {judge_steps} steps recorded"
    );
    // Recorded: the budget's burst and what it refilled while the flood ran, first refusals and counts of their
    // repeats alike; and each minute, one record for the refusals past the budget.
    let budgeted = u64::from(BUDGET) * (minutes + 1);
    // A count takes from the budget like a first refusal, and past it joins the flood record.
    let bound = budgeted + minutes + 1;
    assert!(witness_records <= bound, "{witness_records} records for {FLOOD} refused steps (at most {bound})");
    assert!(witness_records as usize <= FLOOD / 20, "{witness_records} records for {FLOOD} refused steps");
    assert!(counted as usize >= by_rule, "{counted} refusals counted of {by_rule} refused by a rule");
    assert!(counted as usize <= by_rule + too_many);
    assert!(too_many > 0, "nothing was over the budget");
    // The judge's steps were taken, each on the record, none refused.
    assert_eq!(judge_records, judge_steps, "{:?}", heard.lock().unwrap());
    assert!(heard.lock().unwrap().iter().all(|message| message["type"] != "refused"), "{:?}", heard.lock().unwrap());
}

/// Made-up secrets sent from one address (a court behind one NAT) cannot lock out a valid secret sent from the same
/// address: the address's budget counts failed attempts only, and what it changes is the answer a guesser gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secrets_from_the_courts_address_never_lock_out_its_valid_secret() {
    const GUESSES: usize = 200;
    let gateway = TestGateway::start().await;
    gateway.case(CASE).await;
    let hearing = Hearing::schedule(&gateway).await;
    let (_, judge_secret) = hearing.invite(&gateway, json!({"role": "judge", "admit_on_join": true})).await;
    let (_, witness_secret) = hearing.invite(&gateway, json!({"role": "witness"})).await;
    assert_eq!(hearing.console(&gateway, "/open").await.status, 200);
    let port = serve_on_loopback(&gateway).await;
    let url = format!("ws://127.0.0.1:{port}/api/v1/room");
    let ledger = gateway.ledger_size();
    let (mut invalid, mut too_many) = (0, 0);
    for n in 0..GUESSES {
        let (answer, _) = join(&url, &format!("made-up-secret-{n:04}")).await;
        match answer["problem"].as_str() {
            Some("invalid") => invalid += 1,
            Some("too_many_attempts") => too_many += 1,
            _ => panic!("guess {n}: {answer}"),
        }
    }
    eprintln!("{GUESSES} made-up secrets from one address: {invalid} answered invalid, {too_many} too many attempts");
    assert!(too_many > 0, "the address's failures have no budget");
    assert_eq!(gateway.ledger_size(), ledger, "a failed attempt reached the public log");

    // From the same address, the judge's secret gets in at once, and so does the witness's.
    let (welcome, _judge) = join(&url, &judge_secret).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let (welcome, _witness) = join(&url, &witness_secret).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(hearing.view(&gateway).await["participants"].as_array().unwrap().len(), 2);
}

/// A participant who comes back 300 times through the room's WebSocket (a rejoin storm, or a link that keeps
/// dropping) adds a bounded number of records to the public log: past their budget of repeatable steps a window's
/// changes are counted, one record per kind with its count, so that every change is accounted for; and the state
/// at the end is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_storm_adds_a_bounded_number_of_records_and_ends_in_the_right_state() {
    const REJOINS: u64 = 300;
    // Entries per credential are budgeted too (ten a minute by default); here they are not what bounds the records.
    let gateway = TestGateway::start_with(|config| config.quotas.room_entries_per_minute = 10_000).await;
    gateway.case(CASE).await;
    let hearing = Hearing::schedule(&gateway).await;
    let (_, judge_secret) = hearing.invite(&gateway, json!({"role": "judge", "admit_on_join": true})).await;
    let (_, witness_secret) = hearing.invite(&gateway, json!({"role": "witness"})).await;
    assert_eq!(hearing.console(&gateway, "/open").await.status, 200);
    let port = serve_on_loopback(&gateway).await;
    let url = format!("ws://127.0.0.1:{port}/api/v1/room");
    let (welcome, _judge) = join(&url, &judge_secret).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let (welcome, mut witness) = join(&url, &witness_secret).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let witness_id = welcome["participant"].as_str().unwrap().to_owned();
    let credential = welcome["credential"].as_str().unwrap().to_owned();

    let before = gateway.ledger_size();
    for n in 0..REJOINS {
        // Each comes back on a new socket while the last is still open: the last connection is lost, this one in.
        let (answer, socket) = enter(&url, json!({"type": "rejoin", "credential": credential})).await;
        assert_eq!(answer["type"], "welcome", "rejoin {n}: {answer}");
        witness = socket;
    }
    // The state at the end is right: the witness is connected, still waiting in the lobby.
    let view = hearing.view(&gateway).await;
    let entry = view["participants"].as_array().unwrap().iter().find(|p| p["id"] == witness_id.as_str()).cloned();
    let entry = entry.unwrap_or_else(|| panic!("{view}"));
    assert_eq!((&entry["connected"], &entry["place"]), (&json!(true), &json!("lobby")), "{entry}");

    // The end of the hearing closes the window: what was counted is recorded with its count.
    assert_eq!(hearing.console(&gateway, "/close").await.status, 200);
    let (mut records, mut changes) = (0u64, 0u64);
    for index in before..gateway.ledger_size() {
        let record = gateway.ledger_record(index).await;
        if record["actor"] == witness_id.as_str() {
            let kind = record["event"]["kind"].as_str().unwrap();
            assert!(kind == "connection_lost" || kind == "reconnected", "{record}");
            records += 1;
            changes += record["repeated"]["count"].as_u64().unwrap_or(1);
        }
    }
    eprintln!("{REJOINS} rejoins: {records} public records, counting {changes} changes");
    assert_eq!(changes, 2 * REJOINS, "every lost connection and every return is accounted for");
    // The budget's records, and one count per kind, per window of ten minutes (two, if the storm ran past one).
    let budget = u64::from(custodia_hearing::OWN_STEPS_PER_WINDOW);
    assert!(records <= 2 * (budget + 2), "{records} records for {REJOINS} rejoins");
    drop(witness);

    // The minutes know every return.
    let mut minutes_artefact = Value::Null;
    for _ in 0..1200 {
        minutes_artefact = hearing.view(&gateway).await["minutes_artefact"].clone();
        if !minutes_artefact.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let minutes_artefact = minutes_artefact.as_str().expect("the minutes in custody").to_owned();
    let uri = format!("/api/v1/artefacts/{minutes_artefact}/content?purpose=review");
    let reply = gateway.get(&uri, Some(As::Session(&hearing.clerk))).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let minutes: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(minutes["technical"]["reconnections"], REJOINS, "{minutes}");
}

/// Someone in the room: their socket's sending half, and everything they are sent, read all along (a socket that
/// is not read is closed).
struct InRoom {
    id: String,
    sink: futures::stream::SplitSink<Socket, tokio_tungstenite::tungstenite::Message>,
    heard: tokio::sync::mpsc::UnboundedReceiver<Value>,
}

impl InRoom {
    async fn join(url: &str, secret: &str) -> Self {
        let (welcome, socket) = join(url, secret).await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        let (sink, mut stream) = socket.split();
        let (tell, heard) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                if let tokio_tungstenite::tungstenite::Message::Text(text) = message
                    && tell.send(serde_json::from_str::<Value>(&text).unwrap()).is_err()
                {
                    break;
                }
            }
        });
        Self { id: welcome["participant"].as_str().unwrap().to_owned(), sink, heard }
    }

    async fn send(&mut self, step: Value) {
        self.sink.send(step.to_string().into()).await.unwrap();
    }

    /// The next message they are sent that `wanted` picks.
    async fn until(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(60), self.heard.recv())
                .await
                .expect("a room message within a minute")
                .expect("the room is open");
            if wanted(&message) {
                return message;
            }
        }
    }

    /// Sends a step the rules refuse them, and waits for its refusal: every step they sent before has been taken.
    async fn settle(&mut self) {
        self.send(json!({"type": "start_recording"})).await;
        let refused = self.until(|message| message["type"] == "refused").await;
        assert_eq!(refused["problem"], "role_not_allowed", "{refused}");
    }
}

/// Steps a participant can repeat on their own, taken again and again through the room's WebSocket (within their
/// burst of room steps): a witness muting and unmuting themself, counsel taking the accused into a consultation and
/// back, the remote-site officer checking the witness's identity again. Past the participant's budget of
/// repeatable steps the mutes and the consultations are counted, one record per kind and person with its count, so
/// that every step is accounted for in a bounded number of records; identity checks, which each store a document,
/// stop at three per person, refused beyond with their own problem key. The state at the end is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_own_steps_add_a_bounded_number_of_records_and_end_in_the_right_state() {
    const MUTES: u64 = 37;
    const CONSULTATIONS: u64 = 18;
    const CHECKS: usize = 6;
    let gateway = TestGateway::start().await;
    gateway.case(CASE).await;
    let hearing = Hearing::schedule(&gateway).await;
    let (_, judge_secret) = hearing.invite(&gateway, json!({"role": "judge", "admit_on_join": true})).await;
    let mut secrets = Vec::new();
    for role in ["witness", "defence", "accused", "remote_site_officer"] {
        secrets.push(hearing.invite(&gateway, json!({"role": role})).await.1);
    }
    assert_eq!(hearing.console(&gateway, "/open").await.status, 200);
    let port = serve_on_loopback(&gateway).await;
    let url = format!("ws://127.0.0.1:{port}/api/v1/room");
    let mut judge = InRoom::join(&url, &judge_secret).await;
    let mut people = Vec::new();
    for secret in &secrets {
        let mut someone = InRoom::join(&url, secret).await;
        judge.send(json!({"type": "admit", "participant": someone.id})).await;
        someone.until(|message| message["type"] == "state" && message["you"]["place"] == "main_room").await;
        people.push(someone);
    }
    let [mut witness, mut defence, accused, mut officer] = <[InRoom; 4]>::try_from(people).ok().unwrap();

    let before = gateway.ledger_size();
    for n in 0..MUTES {
        let kind = if n % 2 == 0 { "mute" } else { "unmute" };
        witness.send(json!({"type": kind, "participant": witness.id})).await;
    }
    witness.settle().await;
    for n in 1..=CONSULTATIONS {
        defence.send(json!({"type": "start_consultation", "with": [accused.id]})).await;
        defence.send(json!({"type": "end_consultation", "consultation": n})).await;
    }
    defence.settle().await;
    for _ in 0..CHECKS {
        let check = json!({"type": "verify_identity", "person": witness.id, "document": "passport",
            "officer_name": "Leila Ben Salah", "site": "Tunis, court of first instance"});
        officer.send(check).await;
    }
    for _ in custodia_hearing::IDENTITY_CHECKS_PER_PERSON..CHECKS {
        let refused = officer.until(|message| message["type"] == "refused").await;
        assert_eq!(refused["problem"], "too_many_identity_checks", "{refused}");
    }
    // The identity documents stored: one for each check taken, none for those refused.
    let mut documents = 0;
    for index in before..gateway.ledger_size() {
        documents += usize::from(gateway.ledger_record(index).await["event"]["type"] == "artefact_registered");
    }
    assert_eq!(documents, custodia_hearing::IDENTITY_CHECKS_PER_PERSON);

    // The state at the end is right: the witness muted (an odd number of steps), everyone in the main room.
    let view = hearing.view(&gateway).await;
    let entry = |id: &str| view["participants"].as_array().unwrap().iter().find(|p| p["id"] == id).cloned().unwrap();
    assert_eq!(entry(&witness.id)["muted"], true, "{view}");
    for id in [&defence.id, &accused.id] {
        assert_eq!(entry(id)["place"], "main_room", "{view}");
    }

    // The end of the hearing closes the windows: what was counted is recorded with its count.
    assert_eq!(hearing.console(&gateway, "/close").await.status, 200);
    let (mut mute_records, mut mutes, mut consultation_records, mut consultation_steps, mut checks) = (0, 0, 0, 0, 0);
    for index in before..gateway.ledger_size() {
        let record = gateway.ledger_record(index).await;
        let (actor, kind) = (record["actor"].as_str().unwrap_or_default(), &record["event"]["kind"]);
        let count = record["repeated"]["count"].as_u64().unwrap_or(1);
        if actor == witness.id && (kind == "muted" || kind == "unmuted") {
            mute_records += 1;
            mutes += count;
        } else if actor == defence.id && (kind == "consultation_started" || kind == "consultation_ended") {
            consultation_records += 1;
            consultation_steps += count;
        } else if actor == officer.id && kind == "identity_verified" {
            checks += 1;
        }
    }
    eprintln!(
        "{MUTES} self mutes and unmutes: {mute_records} records counting {mutes}; {CONSULTATIONS} consultations \
         opened and closed: {consultation_records} records counting {consultation_steps}; {CHECKS} identity checks \
         sent: {checks} taken"
    );
    let budget = u64::from(custodia_hearing::OWN_STEPS_PER_WINDOW);
    assert_eq!(mutes, MUTES, "every mute and unmute is accounted for");
    assert!(mute_records <= budget + 2, "{mute_records} records for {MUTES} steps");
    // Each start and end has a record per member (counsel and the accused).
    assert_eq!(consultation_steps, 2 * 2 * CONSULTATIONS, "every start and end is accounted for");
    assert!(consultation_records <= 2 * budget + 4, "{consultation_records} records for {} steps", 2 * CONSULTATIONS);
    assert_eq!(checks, custodia_hearing::IDENTITY_CHECKS_PER_PERSON);
    drop(judge);
}

/// The close frame that ends a room socket, read past everything else the gateway sends.
async fn close_code(socket: &mut Socket) -> Option<u16> {
    loop {
        let message =
            tokio::time::timeout(Duration::from_secs(60), socket.next()).await.expect("closed within a minute");
        match message {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                return frame.map(|frame| u16::from(frame.code));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

/// A participant's socket that sends a message over the room's 128 KiB is closed with 1009 (message too big), and
/// one that sends more frames than its allowance with 1008 (policy): the client is told why it was cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_cut_off_is_told_why_in_its_close_frame() {
    let gateway = TestGateway::start().await;
    gateway.case(CASE).await;
    let hearing = Hearing::schedule(&gateway).await;
    let (_, witness_secret) = hearing.invite(&gateway, json!({"role": "witness"})).await;
    let (_, accused_secret) = hearing.invite(&gateway, json!({"role": "accused"})).await;
    assert_eq!(hearing.console(&gateway, "/open").await.status, 200);
    let port = serve_on_loopback(&gateway).await;
    let url = format!("ws://127.0.0.1:{port}/api/v1/room");

    let (welcome, mut witness) = join(&url, &witness_secret).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let big = json!({"type": "leave", "padding": "x".repeat(200 * 1024)}).to_string();
    witness.send(big.into()).await.unwrap();
    assert_eq!(close_code(&mut witness).await, Some(1009));

    let (welcome, mut accused) = join(&url, &accused_secret).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    for _ in 0..200 {
        if accused.send(json!({"type": "ping"}).to_string().into()).await.is_err() {
            break;
        }
    }
    assert_eq!(close_code(&mut accused).await, Some(1008));
}
