//! WHIP into a running gateway:
//! - what its WebRTC answers say about where it is: with `CUSTODIA_MEDIA_ADDRESSES=public` (the production default)
//!   a WHIP answer announces no loopback, private or link-local address; with `loopback` (what the other tests use)
//!   the same offer is answered with a loopback candidate, so the check can tell them apart;
//! - how many publishers one case's hearings take at once (`CUSTODIA_WHIP_SESSIONS_PER_CASE`), and how many the
//!   invites of one case member let in at once (`CUSTODIA_WHIP_SESSIONS_PER_ACCOUNT`), however many post at once;
//! - that offers the media engine refuses, posted again and again, leave nothing in the hearing or on the record.
//!
//! The offer is aiortc's (tests/requirements.txt), an implementation none of us wrote; skipped, saying so, without
//! it.

mod support;

use std::net::{IpAddr, Ipv4Addr};

use serde_json::json;
use support::{RawAnswer, http_from};

const HERE: Ipv4Addr = Ipv4Addr::LOCALHOST;

async fn api(port: u16, method: &str, path: &str, session: &str, body: serde_json::Value) -> RawAnswer {
    let cookie = format!("custodia_session={session}");
    let headers =
        [("Cookie", cookie.as_str()), ("Sec-Fetch-Site", "same-origin"), ("Content-Type", "application/json")];
    http_from(HERE, port, method, path, &headers, body.to_string().as_bytes()).await.unwrap()
}

async fn sign_in(port: u16, username: &str, password: &str) -> String {
    let body = json!({"username": username, "password": password}).to_string();
    let answer =
        http_from(HERE, port, "POST", "/api/v1/session", &[("Content-Type", "application/json")], body.as_bytes())
            .await
            .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
    let cookie = answer.header("set-cookie").unwrap();
    cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned()
}

/// A gateway announcing `addresses`, with an open hearing in case-1 and `invites` WHIP invites to it (their
/// secrets), the environment `env` besides.
async fn hearing_with_invites(
    addresses: &str,
    env: &[(&str, &str)],
    invites: usize,
) -> (support::GatewayProcess, u16, tempfile::TempDir, Vec<String>) {
    let data = tempfile::tempdir().unwrap();
    let mut env: Vec<(&str, &std::ffi::OsStr)> = env.iter().map(|(k, v)| (*k, std::ffi::OsStr::new(*v))).collect();
    env.push(("CUSTODIA_MEDIA_ADDRESSES", std::ffi::OsStr::new(addresses)));
    let (gateway, port) = support::spawn_gateway(data.path(), &env);
    let password = std::fs::read_to_string(data.path().join("keys/initial-admin-password")).unwrap();
    let admin = sign_in(port, "admin", password.trim()).await;
    let account = json!({"username": "clerk", "display_name": "Clerk", "password": "clerk-correct-horse",
        "jurisdiction": "IT"});
    let clerk_id =
        api(port, "POST", "/api/v1/accounts", &admin, account).await.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        api(port, "POST", "/api/v1/cases", &admin, json!({"id": "case-1", "title": "R v Media"})).await.status,
        201
    );
    let member = format!("/api/v1/cases/case-1/members/{clerk_id}");
    assert_eq!(api(port, "PUT", &member, &admin, json!({"role": "clerk"})).await.status, 204);
    let clerk = sign_in(port, "clerk", "clerk-correct-horse").await;
    let schedule = json!({"scheduled_for": "2026-12-01T09:00:00Z", "place": "Tribunale di Catania, aula 2"});
    let hearing = api(port, "POST", "/api/v1/cases/case-1/hearings", &clerk, schedule).await.json()["id"].clone();
    let hearing = format!("/api/v1/cases/case-1/hearings/{}", hearing.as_str().unwrap());
    let mut secrets = Vec::new();
    for _ in 0..invites {
        let role = json!({"role": "remote_site_officer"});
        let invite = api(port, "POST", &format!("{hearing}/invites"), &clerk, role).await;
        secrets.push(invite.json()["secret"].as_str().unwrap().to_owned());
    }
    assert_eq!(api(port, "POST", &format!("{hearing}/open"), &clerk, json!({})).await.status, 200);
    (gateway, port, data, secrets)
}

/// The size of the gateway's public log.
async fn log_size(port: u16) -> u64 {
    let answer = http_from(HERE, port, "GET", "/log/checkpoint", &[], b"").await.unwrap();
    answer.text().lines().nth(1).unwrap().parse().unwrap()
}

async fn publish(port: u16, secret: &str, offer: &str) -> RawAnswer {
    let bearer = format!("Bearer {secret}");
    let headers = [("Authorization", bearer.as_str()), ("Content-Type", "application/sdp")];
    http_from(HERE, port, "POST", "/api/v1/room/whip", &headers, offer.as_bytes()).await.unwrap()
}

/// The host addresses of the `a=candidate` lines of the answer a gateway announcing `addresses` gives `offer`.
async fn answered_candidates(addresses: &str, offer: &str) -> Vec<IpAddr> {
    let (_gateway, port, _data, secrets) = hearing_with_invites(addresses, &[], 1).await;
    let answer = publish(port, &secrets[0], offer).await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    answer
        .text()
        .lines()
        .filter_map(|line| line.trim().strip_prefix("a=candidate:"))
        .map(|candidate| {
            let address = candidate.split_whitespace().nth(4).unwrap_or_else(|| panic!("candidate {candidate}"));
            address.parse().unwrap_or_else(|_| panic!("a candidate's address is not an address: {candidate}"))
        })
        .collect()
}

/// Loopback, RFC 1918 and unique local, link-local, or unspecified: no address a client elsewhere should be told.
fn internal(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || v6.is_unspecified() || first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfe80
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_answers_announce_no_internal_address_in_production() {
    let Some(offer) = support::aiortc_offer() else { return };
    let public = answered_candidates("public", &offer).await;
    eprintln!("public: {public:?}");
    assert!(public.iter().all(|&address| !internal(address)), "a public answer announced {public:?}");
    let loopback = answered_candidates("loopback", &offer).await;
    eprintln!("loopback: {loopback:?}");
    assert!(loopback.iter().any(|address| address.is_loopback()), "the check cannot see loopback: {loopback:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cases_hearings_take_a_few_whip_publishers_at_once() {
    let Some(offer) = support::aiortc_offer() else { return };
    let env = [("CUSTODIA_WHIP_SESSIONS_PER_CASE", "2")];
    let (_gateway, port, _data, secrets) = hearing_with_invites("loopback", &env, 4).await;
    let mut answers = Vec::new();
    for secret in &secrets {
        let answer = publish(port, secret, &offer).await;
        if answer.status == 429 {
            // Nobody knows when a place frees: the publisher is asked to wait a few seconds.
            let retry_after = answer.header("retry-after").expect("Retry-After on a 429");
            assert_eq!(retry_after, custodia_server::problem::AT_ONCE_RETRY_AFTER_SECONDS.to_string());
        }
        answers.push((answer.status, answer.problem()));
    }
    let published = answers.iter().filter(|(status, _)| *status == 201).count();
    let refused = answers.iter().filter(|(status, problem)| *status == 429 && problem == "too-many").count();
    assert_eq!((published, refused), (2, 2), "{answers:?}");
    // One publisher ends its session: a place is free again for the next.
    let location = {
        let answer = publish(port, &secrets[0], &offer).await;
        assert_eq!(answer.status, 201, "the first publisher reconnects in its own place: {}", answer.text());
        answer.header("location").unwrap()
    };
    let bearer = format!("Bearer {}", secrets[0]);
    let ended = http_from(HERE, port, "DELETE", &location, &[("Authorization", bearer.as_str())], b"").await.unwrap();
    assert_eq!(ended.status, 200, "{}", ended.text());
    assert_eq!(publish(port, &secrets[2], &offer).await.status, 201, "the freed place was not given back");
}

/// Offers the engine cannot answer, posted again and again with a live invite, and by a publisher that is in:
/// each is refused (400), or past the invite's budget of attempts turned away (429 `too-many`, with `Retry-After`
/// like every budget), and none reaches the hearing or the public log; the invite still lets its publisher in, and
/// the publisher's session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_whip_offers_leave_nothing_on_the_record() {
    const REPOSTS: usize = 30;
    let (_gateway, port, _data, secrets) = hearing_with_invites("loopback", &[], 2).await;
    let before = log_size(port).await;
    let (mut refused, mut turned_away) = (0, 0);
    for n in 0..REPOSTS {
        let answer = publish(port, &secrets[0], &format!("not an offer {n}")).await;
        match (answer.status, answer.problem().as_str()) {
            (400, "bad-input") => refused += 1,
            (429, "too-many") if answer.text().contains("too many attempts to enter") => {
                let retry_after: u64 = answer.header("retry-after").expect("Retry-After").parse().unwrap();
                assert!((1..=60).contains(&retry_after), "Retry-After: {retry_after}");
                turned_away += 1;
            }
            other => panic!("a refused offer answered {other:?}: {}", answer.text()),
        }
    }
    eprintln!("{REPOSTS} refused offers: {refused} refused by the engine, {turned_away} over the invite's budget");
    assert!(refused >= 1 && turned_away >= 1, "{refused} refused, {turned_away} turned away");
    let document: serde_json::Value = serde_json::from_str(custodia_server::openapi::DOCUMENT).unwrap();
    let documented = &document["paths"]["/api/v1/room/whip"]["post"]["responses"]["429"];
    assert!(documented["headers"]["Retry-After"].is_object(), "the 429 is documented with Retry-After: {documented}");
    assert_eq!(log_size(port).await, before, "refused offers reached the public log");

    let Some(offer) = support::aiortc_offer() else { return };
    // The other invite, after refused offers of its own, still lets its publisher in; refused offers from the
    // publisher that is in change nothing: no lost connection, no reconnection.
    for n in 0..3 {
        assert_eq!(publish(port, &secrets[1], &format!("not an offer {n}")).await.status, 400);
    }
    let published = publish(port, &secrets[1], &offer).await;
    assert_eq!(published.status, 201, "{}", published.text());
    for n in 0..3 {
        assert_eq!(publish(port, &secrets[1], &format!("not an offer {n}")).await.status, 400);
    }
    // (What the gateway notices of the publisher's media, which never comes, may follow; it is not counted.)
    let kinds: Vec<String> = support::served_records(port).await[before as usize..]
        .iter()
        .filter_map(|record| record["event"]["kind"].as_str().map(str::to_owned))
        .collect();
    let count = |kind: &str| kinds.iter().filter(|k| *k == kind).count();
    assert_eq!(count("joined_lobby"), 1, "{kinds:?}");
    assert_eq!(count("reconnected"), 0, "a refused offer reconnected the publisher: {kinds:?}");
    assert_eq!(count("step_refused"), 0, "{kinds:?}");
}

/// The invites of one case member let at most `CUSTODIA_WHIP_SESSIONS_PER_ACCOUNT` publishers in at once, posting
/// all at once; another member's invites have places of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_members_invites_let_a_few_whip_publishers_in_at_once() {
    let Some(offer) = support::aiortc_offer() else { return };
    let env = [("CUSTODIA_WHIP_SESSIONS_PER_ACCOUNT", "2"), ("CUSTODIA_WHIP_SESSIONS_PER_CASE", "8")];
    let (_gateway, port, data, secrets) = hearing_with_invites("loopback", &env, 4).await;
    let at_once = secrets.iter().map(|secret| publish(port, secret, &offer));
    let answers: Vec<(u16, String)> =
        futures::future::join_all(at_once).await.into_iter().map(|answer| (answer.status, answer.problem())).collect();
    let published = answers.iter().filter(|(status, _)| *status == 201).count();
    let refused = answers.iter().filter(|(status, problem)| *status == 429 && problem == "too-many").count();
    assert_eq!((published, refused), (2, 2), "{answers:?}");

    // A second clerk's invite to the same hearing: a place of its own.
    let password = std::fs::read_to_string(data.path().join("keys/initial-admin-password")).unwrap();
    let admin = sign_in(port, "admin", password.trim()).await;
    let account = json!({"username": "clerk2", "display_name": "Clerk Two", "password": "clerk2-correct-horse",
        "jurisdiction": "IT"});
    let id = api(port, "POST", "/api/v1/accounts", &admin, account).await.json()["id"].as_str().unwrap().to_owned();
    let member = format!("/api/v1/cases/case-1/members/{id}");
    assert_eq!(api(port, "PUT", &member, &admin, json!({"role": "clerk"})).await.status, 204);
    let clerk2 = sign_in(port, "clerk2", "clerk2-correct-horse").await;
    let hearings = api(port, "GET", "/api/v1/cases/case-1/hearings", &clerk2, serde_json::Value::Null).await.json();
    let hearing = hearings["hearings"][0]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/cases/case-1/hearings/{hearing}/invites");
    let invite = api(port, "POST", &path, &clerk2, json!({"role": "remote_site_officer"})).await;
    let secret = invite.json()["secret"].as_str().unwrap().to_owned();
    let answer = publish(port, &secret, &offer).await;
    assert_eq!(answer.status, 201, "another member's invite found no place: {}", answer.text());
}
