//! Who is calling, over HTTP: the session and device cookies, the same-origin rule for a request signed in by
//! cookie, and the extractor that finds the caller ([`Caller`]) by its bearer token or session cookie. Who may sign
//! in, and how sign-ins are throttled, is the service's (`custodia_service::identity`).

use std::ops::Deref;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use custodia_service::gateway::GatewayError;
use custodia_service::identity::{self, DEVICE_COOKIES_READ, Principal, SignInThrottle};

use crate::problem::Problem;
use crate::state::AppState;

/// The session cookie over plain HTTP (loopback, tests, a private network).
pub const SESSION_COOKIE: &str = "custodia_session";
/// The session cookie over HTTPS: `__Host-` binds it to this origin (`Secure`, `Path=/`, no `Domain`), so that no
/// sibling subdomain can set or shadow it.
pub const HOST_SESSION_COOKIE: &str = "__Host-custodia_session";
/// The device cookie over plain HTTP ([`identity::DeviceKey`]).
pub const DEVICE_COOKIE: &str = "custodia_device";
/// The device cookie over HTTPS, bound to this origin like [`HOST_SESSION_COOKIE`].
pub const HOST_DEVICE_COOKIE: &str = "__Host-custodia_device";

/// The authenticated caller of a request, as a handler takes it: a [`Principal`] (which it dereferences to), found
/// by bearer token or session cookie.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl Deref for Caller {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.0
    }
}

/// Whether the client reached the gateway over HTTPS: its own TLS, or a trusted proxy's ([`crate::listen::Site`]);
/// a request served in-process has no site and follows the configuration.
pub fn reached_over_https(parts: &Parts, state: &AppState) -> bool {
    parts.extensions.get::<crate::listen::Site>().map_or(state.secure_cookies, |site| site.https)
}

/// The session cookie's name for a request: `__Host-` over HTTPS.
pub fn session_cookie_name(https: bool) -> &'static str {
    if https { HOST_SESSION_COOKIE } else { SESSION_COOKIE }
}

/// The device cookie's name for a request: `__Host-` over HTTPS.
pub fn device_cookie_name(https: bool) -> &'static str {
    if https { HOST_DEVICE_COOKIE } else { DEVICE_COOKIE }
}

/// The `Set-Cookie` value of a new device cookie for `account_id` ([`identity::DeviceKey`]), made at `now` (unix
/// seconds).
pub fn device_cookie(throttle: &SignInThrottle, account_id: &str, now: i64, https: bool) -> String {
    let value = throttle.device_cookie_value(account_id, now);
    set_cookie(device_cookie_name(https), &value, identity::DEVICE_COOKIE_SECONDS, https)
}

/// The `Set-Cookie` value for a session secret (empty, with `Max-Age=0`, to end one).
pub fn session_cookie(https: bool, secret: &str, max_age: i64) -> String {
    set_cookie(session_cookie_name(https), secret, max_age, https)
}

/// The `Set-Cookie` value for one of the gateway's cookies: never for scripts, never sent by another site's
/// requests, for the whole origin, and `Secure` over HTTPS (where its name is `__Host-`).
fn set_cookie(name: &str, value: &str, max_age: i64, https: bool) -> String {
    let secure = if https { "; Secure" } else { "" };
    format!("{name}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}")
}

/// The value of the cookie `wanted` in a request's headers, if it carries one.
pub fn cookie(headers: &HeaderMap, wanted: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == wanted).then(|| value.to_owned())
    })
}

/// The values of every device cookie named `wanted` in a request's headers, the first [`DEVICE_COOKIES_READ`]: a
/// cookie planted under the same name (by a sibling site, or over plain HTTP) must not hide the real one.
pub fn device_cookies(headers: &HeaderMap, wanted: &str) -> Vec<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == wanted).then(|| value.to_owned())
        })
        .take(DEVICE_COOKIES_READ)
        .collect()
}

/// The session cookie's value, if the request carries one. Over HTTPS only the `__Host-` cookie counts.
pub fn session_secret(parts: &Parts, https: bool) -> Option<String> {
    cookie(&parts.headers, session_cookie_name(https))
}

/// A cookie rides along on any request the browser sends, whoever's page made it. So an unsafe request
/// authenticated by the cookie must say it comes from our own pages: `Sec-Fetch-Site: same-origin`, or, from a
/// browser that does not send that, an `Origin` equal to ours. A request that says neither is refused too, and so
/// is one that sends either header twice. Both are set by the browser, never by a page: where `Sec-Fetch-Site`
/// says same-origin, the browser has compared the origins itself (behind a proxy that rewrites `Host`, the
/// `Origin` would not match ours).
pub fn same_origin(parts: &Parts, https: bool) -> bool {
    if parts.method.is_safe() {
        return true;
    }
    let mut sites = parts.headers.get_all("sec-fetch-site").iter();
    let mut origins = parts.headers.get_all(header::ORIGIN).iter();
    let (site, origin) = (sites.next(), origins.next());
    if sites.next().is_some() || origins.next().is_some() {
        return false;
    }
    match (site, origin) {
        (Some(site), _) => site.as_bytes().eq_ignore_ascii_case(b"same-origin"),
        (None, Some(origin)) => origin.to_str().is_ok_and(|origin| origin_is_ours(parts, origin, https)),
        (None, None) => false,
    }
}

/// Whether `origin` is this gateway's, as the request addressed it.
fn origin_is_ours(parts: &Parts, origin: &str, https: bool) -> bool {
    let host =
        parts.headers.get(header::HOST).and_then(|v| v.to_str().ok()).or(parts.uri.authority().map(|a| a.as_str()));
    let scheme = if https { "https://" } else { "http://" };
    match (origin.strip_prefix(scheme), host) {
        (Some(origin_host), Some(host)) => origin_host.eq_ignore_ascii_case(host),
        _ => false,
    }
}

/// Whether this request reached the gateway over HTTPS ([`reached_over_https`]).
#[derive(Debug, Clone, Copy)]
pub struct Https(pub bool);

impl FromRequestParts<AppState> for Https {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> std::result::Result<Self, Self::Rejection> {
        Ok(Self(reached_over_https(parts, state)))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> std::result::Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let https = reached_over_https(parts, state);
        let caller = match (bearer, session_secret(parts, https)) {
            (Some(token), _) => state.gateway.principal_from_token(token).await,
            (None, Some(_)) if !same_origin(parts, https) => Err(GatewayError::CrossOrigin),
            (None, Some(session)) => state.gateway.principal_from_session(&session).await,
            (None, None) => Err(GatewayError::Unauthenticated),
        };
        if let Ok(caller) = &caller {
            crate::listen::mark_signed_in(&parts.extensions, caller.account_id());
        }
        caller.map(Caller).map_err(|err| {
            tracing::info!(reason = %err, "unauthenticated request refused");
            Problem::from(err)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cookie-authenticated unsafe request must come from our pages by the browser's own word; a request that
    /// sends either header twice is refused whatever they say.
    #[test]
    fn cross_site_requests_are_told_apart_by_what_the_browser_says() {
        let parts = |headers: &[(&str, &str)]| {
            let mut request = axum::http::Request::builder().method("POST").uri("/api/v1/cases").header("host", "gw");
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.body(()).unwrap().into_parts().0
        };
        let allowed = |headers: &[(&str, &str)]| same_origin(&parts(headers), false);
        assert!(allowed(&[("sec-fetch-site", "same-origin")]));
        assert!(allowed(&[("origin", "http://gw")]));
        assert!(!allowed(&[]), "nothing said");
        assert!(!allowed(&[("sec-fetch-site", "cross-site"), ("origin", "http://gw")]));
        assert!(!allowed(&[("origin", "https://evil.example")]));
        assert!(!allowed(&[("origin", "http://gw"), ("origin", "https://evil.example")]), "Origin twice");
        assert!(!allowed(&[("sec-fetch-site", "same-origin"), ("sec-fetch-site", "cross-site")]), "twice");
        let mut get = parts(&[]);
        get.method = axum::http::Method::GET;
        assert!(same_origin(&get, false), "a safe method changes nothing");
    }

    #[test]
    fn every_device_cookie_is_read_up_to_a_limit() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, format!("{DEVICE_COOKIE}=x; {DEVICE_COOKIE}=y; lang=en").parse().unwrap());
        headers.append(header::COOKIE, format!("{DEVICE_COOKIE}=z").parse().unwrap());
        assert_eq!(device_cookies(&headers, DEVICE_COOKIE), ["x", "y", "z"]);
        let many = vec![format!("{DEVICE_COOKIE}=x"); 10].join("; ");
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, many.parse().unwrap());
        assert_eq!(device_cookies(&headers, DEVICE_COOKIE).len(), DEVICE_COOKIES_READ, "no more than that are read");
    }
}
