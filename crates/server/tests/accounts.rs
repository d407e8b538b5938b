//! Sessions, cookies and accounts (issue 11): disabling a compromised account, purging expired sessions,
//! password-guessing throttles, the session cookie's name and flags, and the same-origin rule for cookie-borne
//! changes. In-process; tests/abuse.rs attacks a real process.

mod support;

use axum::body::Body;
use axum::http::{StatusCode, header};
use serde_json::json;
use support::{As, TestGateway, write_token};

#[tokio::test]
async fn an_administrator_disables_an_account_and_its_sessions_and_tokens_stop_working() {
    let gateway = TestGateway::start().await;
    let (witness, session) = gateway.person("witness", "NL").await;
    let token = write_token(&gateway, &session).await;
    let (_, other) = gateway.person("other", "IT").await;
    assert_eq!(gateway.get("/api/v1/me", Some(As::Token(&token))).await.status, StatusCode::OK);

    let disable = format!("/api/v1/accounts/{witness}/disable");
    // Only an administrator, with a session.
    gateway.call("POST", &disable, Some(As::Session(&other)), json!({})).await.assert_problem(403, "admin-only", "");
    gateway.call("POST", &disable, Some(As::Session(&session)), json!({})).await.assert_problem(403, "admin-only", "");
    let reply =
        gateway.call("POST", "/api/v1/accounts/acct-nobody/disable", Some(As::Session(&gateway.admin)), json!({}));
    reply.await.assert_problem(404, "not-found", "acct-nobody");
    let reply = gateway.call("POST", &disable, Some(As::Session(&gateway.admin)), json!({})).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", String::from_utf8_lossy(&reply.body));

    gateway.get("/api/v1/me", Some(As::Session(&session))).await.assert_problem(401, "unauthenticated", "");
    gateway.get("/api/v1/me", Some(As::Token(&token))).await.assert_problem(401, "token-revoked", "");
    let body = json!({"username": "witness", "password": "witness-correct-horse-battery"});
    gateway.call("POST", "/api/v1/session", None, body).await.assert_problem(401, "bad-credentials", "");
    // Everyone else is unaffected.
    assert_eq!(gateway.get("/api/v1/me", Some(As::Session(&other))).await.status, StatusCode::OK);
    // Disabling again changes nothing; an administrator cannot lock themselves out.
    let reply = gateway.call("POST", &disable, Some(As::Session(&gateway.admin)), json!({})).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let me = gateway.get("/api/v1/me", Some(As::Session(&gateway.admin))).await.json();
    let own = format!("/api/v1/accounts/{}/disable", me["id"].as_str().unwrap());
    gateway.call("POST", &own, Some(As::Session(&gateway.admin)), json!({})).await.assert_problem(
        400,
        "bad-input",
        "own",
    );
}

#[tokio::test]
async fn expired_sessions_are_deleted() {
    let gateway = TestGateway::start().await;
    let (_, session) = gateway.person("witness", "NL").await;
    let catalog = &gateway.state.gateway.catalog();
    let now = gateway.clock.unix_seconds();
    assert_eq!(catalog.purge_expired_sessions(now).await.unwrap(), 0, "nothing has expired yet");
    gateway.clock.advance(custodia_service::identity::SESSION_SECONDS + 1);
    gateway.get("/api/v1/me", Some(As::Session(&session))).await.assert_problem(401, "unauthenticated", "");
    // The administrator's session and the witness's: both over 12 hours old.
    assert_eq!(catalog.purge_expired_sessions(gateway.clock.unix_seconds()).await.unwrap(), 2);
    assert_eq!(catalog.purge_expired_sessions(gateway.clock.unix_seconds()).await.unwrap(), 0);
}

#[tokio::test]
async fn wrong_passwords_lock_the_account_for_a_while_and_the_right_one_does_not_get_through_meanwhile() {
    let gateway = TestGateway::start().await;
    gateway.person("witness", "NL").await;
    let wrong = json!({"username": "witness", "password": "not-the-password"});
    for _ in 0..custodia_service::identity::ACCOUNT_PEER_FAILURES {
        gateway.call("POST", "/api/v1/session", None, wrong.clone()).await.assert_problem(401, "bad-credentials", "");
    }
    gateway.call("POST", "/api/v1/session", None, wrong).await.assert_problem(429, "too-many", "this account");
    let right = json!({"username": "witness", "password": "witness-correct-horse-battery"});
    gateway.call("POST", "/api/v1/session", None, right).await.assert_problem(429, "too-many", "this account");
    // Another account is not locked by it.
    gateway.person("other", "IT").await;
}

/// The device cookie a sign-in's reply sets (after the session cookie).
fn device_cookie(reply: &support::Reply) -> String {
    let mut cookies = reply.headers.get_all(header::SET_COOKIE).iter().map(|value| value.to_str().unwrap().to_owned());
    let cookie = cookies.nth(1).unwrap_or_else(|| panic!("no second cookie: {:?}", reply.headers));
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    assert!(!cookie.contains("Domain"), "{cookie}");
    cookie
}

#[tokio::test]
async fn the_session_cookie_is_host_bound_and_secure_over_https_only() {
    let plain = TestGateway::start().await;
    let body = json!({"username": "witness", "password": "witness-correct-horse-battery"});
    plain.person("witness", "NL").await;
    let reply = plain.call("POST", "/api/v1/session", None, body.clone()).await;
    let cookie = reply.headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("custodia_session=") && !cookie.contains("Secure"), "{cookie}");
    let device = device_cookie(&reply);
    assert!(device.starts_with("custodia_device=") && !device.contains("Secure"), "{device}");

    // Configured for HTTPS (the gateway's own TLS; behind a trusted proxy, the proxy's X-Forwarded-Proto).
    let https = TestGateway::start_with(|config| config.tls_cert = Some("unused-in-process.pem".into())).await;
    let (gateway, password) = (&https.state.gateway, "witness-correct-horse-battery");
    let witness = custodia_service::directory::NewAccount {
        username: "witness".into(),
        display_name: "W".into(),
        password,
        jurisdiction: "NL".into(),
        is_admin: false,
    };
    gateway.create_account(None, &https.state.sign_ins, witness).await.unwrap();
    let reply = https.call("POST", "/api/v1/session", None, body).await;
    let cookie = reply.headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("__Host-custodia_session="), "{cookie}");
    assert!(cookie.contains("; Secure") && cookie.contains("Path=/") && !cookie.contains("Domain"), "{cookie}");
    let device = device_cookie(&reply);
    assert!(device.starts_with("__Host-custodia_device=") && device.contains("; Secure"), "{device}");
    let secret = cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
    let me = |name: &str| {
        TestGateway::request("GET", "/api/v1/me", None)
            .header(header::COOKIE, format!("{name}={secret}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(https.send(me("__Host-custodia_session")).await.status, StatusCode::OK);
    // Over HTTPS the plain name is not taken: a sibling subdomain could have set it.
    https.send(me("custodia_session")).await.assert_problem(401, "unauthenticated", "");
}

#[tokio::test]
async fn a_change_riding_on_the_cookie_must_come_from_the_gateways_own_pages() {
    let gateway = TestGateway::start().await;
    gateway.case("case-1").await;
    let (clerk, session) = gateway.person("clerk", "IT").await;
    gateway.member("case-1", &clerk, "clerk").await;
    let upload = |extra: &[(&str, &str)], text: &str| {
        let mut request = TestGateway::request("POST", "/api/v1/cases/case-1/artefacts?purpose=statement", None)
            .header(header::COOKIE, format!("custodia_session={session}"))
            .header(header::HOST, "gateway.example")
            .header(header::CONTENT_TYPE, "text/plain");
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        request.body(Body::from(text.to_owned())).unwrap()
    };
    for forged in [
        vec![("origin", "https://evil.example")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site"), ("origin", "http://gateway.example")],
        vec![("origin", "http://gateway.example.evil.example")],
        vec![],
    ] {
        gateway.send(upload(&forged, "forged")).await.assert_problem(403, "cross-origin", "own pages");
    }
    assert_eq!(gateway.get("/api/v1/cases/case-1/artefacts", Some(As::Session(&session))).await.json(), json!([]));
    // Reads need no proof of origin; a bearer token is never sent by a browser on its own, so it needs none either.
    assert_eq!(gateway.get("/api/v1/me", Some(As::Session(&session))).await.status, StatusCode::OK);
    let own = [vec![("sec-fetch-site", "same-origin")], vec![("origin", "http://gateway.example")]];
    for (n, own) in own.iter().enumerate() {
        assert_eq!(gateway.send(upload(own, &format!("statement {n}"))).await.status, StatusCode::CREATED);
    }
}
