//! STUN and TURN servers for WebRTC clients, with short-lived TURN credentials.
//!
//! Credentials follow the TURN REST API convention (draft-uberti-behave-turn-rest) that coturn implements with
//! `use-auth-secret` / `static-auth-secret`: the username is `<unix expiry>:<opaque random id>` and the credential
//! is `base64(HMAC-SHA1(secret, username))`. The TURN server checks both with the shared secret alone, so the
//! gateway and coturn share nothing else, and a credential cannot be used to open a relay after its expiry (coturn
//! checks the expiry when a relay is allocated; a relay already open lives on, so a long hearing is not cut off).
//! The username names no one: no account, no name, no address.
//!
//! TURN is how a witness's phone on a network that blocks UDP reaches the gateway: TURN over TCP, or over TLS on
//! port 443 (`turns:turn.example:443?transport=tcp`), which looks like any HTTPS connection. The gateway's WebRTC
//! engine (webrtc-rs 0.17) cannot accept ICE over TCP itself (its ICE-TCP code is disabled), so the relay carries
//! the media the last hop over UDP.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::bail;
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use jiff::Timestamp;
use serde::Serialize;

/// One `RTCIceServer` (W3C WebRTC §4.2.1): STUN entries carry no credentials.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct IceServerJson {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl fmt::Debug for IceServerJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServerJson")
            .field("urls", &self.urls.len())
            .field("credential", &self.credential.as_ref().map(|_| "<hidden>"))
            .finish_non_exhaustive()
    }
}

/// The configured servers, and the secret TURN credentials are made from. Share it as `AppState::ice_servers`.
#[derive(Clone, Default)]
pub struct IceServers {
    stun: Vec<String>,
    turn: Vec<String>,
    secret: Option<Vec<u8>>,
    ttl_seconds: u64,
}

impl fmt::Debug for IceServers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServers")
            .field("stun", &self.stun.len())
            .field("turn", &self.turn.len())
            .field("ttl_seconds", &self.ttl_seconds)
            .finish_non_exhaustive()
    }
}

/// The shortest secret accepted: a TURN secret guessed is a relay for anyone.
const MIN_SECRET_BYTES: usize = 16;
const TTL_SECONDS: std::ops::RangeInclusive<u64> = 60..=86_400;

impl IceServers {
    /// The servers `stun_urls` and `turn_urls` (`CUSTODIA_STUN_URLS`, `CUSTODIA_TURN_URLS`), with credentials made
    /// from `turn_secret` for `turn_ttl_seconds`, once checked: every URL well-formed and of the right kind, a
    /// secret exactly when there are TURN servers, a sensible lifetime. The errors name the setting and say what is
    /// wrong.
    pub fn new(
        stun_urls: &[String],
        turn_urls: &[String],
        turn_secret: Option<&str>,
        turn_ttl_seconds: u64,
    ) -> anyhow::Result<Self> {
        let list = |urls: &[String]| -> Vec<String> {
            urls.iter().map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect()
        };
        let stun = list(stun_urls);
        let turn = list(turn_urls);
        // An entry is named by its place in the list, never quoted (as the servers' addresses stay out of the
        // log, and one written `turn:user:password@host` would put a password there).
        for (place, url) in stun.iter().enumerate() {
            if let Err(why) = check_url(url, &["stun", "stuns"]) {
                bail!("CUSTODIA_STUN_URLS entry {}: {why}", place + 1);
            }
        }
        for (place, url) in turn.iter().enumerate() {
            if let Err(why) = check_url(url, &["turn", "turns"]) {
                bail!("CUSTODIA_TURN_URLS entry {}: {why}", place + 1);
            }
        }
        let secret = turn_secret.filter(|s| !s.is_empty());
        match (turn.is_empty(), secret) {
            (false, None) => {
                bail!("CUSTODIA_TURN_URLS needs CUSTODIA_TURN_SECRET (the TURN server's static-auth-secret)")
            }
            (true, Some(_)) => bail!("CUSTODIA_TURN_SECRET is set but CUSTODIA_TURN_URLS names no TURN server"),
            (false, Some(secret)) if secret.len() < MIN_SECRET_BYTES => {
                bail!("CUSTODIA_TURN_SECRET is too short: use at least {MIN_SECRET_BYTES} random characters")
            }
            _ => {}
        }
        if !TTL_SECONDS.contains(&turn_ttl_seconds) {
            bail!(
                "CUSTODIA_TURN_TTL_SECONDS is {}: use {} to {} seconds",
                turn_ttl_seconds,
                TTL_SECONDS.start(),
                TTL_SECONDS.end()
            );
        }
        Ok(Self { stun, turn, secret: secret.map(|s| s.as_bytes().to_vec()), ttl_seconds: turn_ttl_seconds })
    }

    /// How many STUN and TURN URLs are configured (for the start-up log, which names no server).
    pub fn counts(&self) -> (usize, usize) {
        (self.stun.len(), self.turn.len())
    }

    /// The servers as `RTCIceServer` objects, with a fresh TURN credential that opens relays until `now` + the
    /// configured lifetime. Empty when nothing is configured.
    pub fn issue(&self, now: Timestamp) -> Vec<IceServerJson> {
        let mut servers = Vec::with_capacity(2);
        if !self.stun.is_empty() {
            servers.push(IceServerJson { urls: self.stun.clone(), username: None, credential: None });
        }
        if let (false, Some(secret)) = (self.turn.is_empty(), &self.secret) {
            let expiry = now.as_second().saturating_add(self.ttl_seconds as i64);
            let mut id = [0u8; 16];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
            let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
            let username = format!("{expiry}:{id}");
            let credential = credential(secret, &username);
            servers.push(IceServerJson {
                urls: self.turn.clone(),
                username: Some(username),
                credential: Some(credential),
            });
        }
        servers
    }

    /// RFC 9725 §4.4 `Link` header values for a WHIP answer, one per URL, from a fresh [`Self::issue`].
    pub fn link_headers(&self, now: Timestamp) -> Vec<String> {
        let mut links = Vec::new();
        for server in self.issue(now) {
            for url in &server.urls {
                links.push(match (&server.username, &server.credential) {
                    (Some(username), Some(credential)) => format!(
                        "<{url}>; rel=\"ice-server\"; username=\"{username}\"; credential=\"{credential}\"; \
                         credential-type=\"password\""
                    ),
                    _ => format!("<{url}>; rel=\"ice-server\""),
                });
            }
        }
        links
    }
}

/// `base64(HMAC-SHA1(secret, username))`, the TURN REST API credential.
pub fn credential(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks a STUN (RFC 7064) or TURN (RFC 7065) URL: `scheme:host[:port][?transport=udp|tcp]`, the transport for
/// TURN only, and `turns` over TCP only (browsers speak TLS to a TURN server, not DTLS).
fn check_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once(':') else { return Err("has no scheme".into()) };
    let scheme = scheme.to_ascii_lowercase();
    if !schemes.contains(&scheme.as_str()) {
        return Err(format!(
            "must start with {}",
            schemes.iter().map(|s| format!("{s}:")).collect::<Vec<_>>().join(" or ")
        ));
    }
    if rest.starts_with("//") {
        return Err(format!("is not written {scheme}:host[:port] (no \"//\")"));
    }
    let (authority, query) = match rest.split_once('?') {
        Some((authority, query)) => (authority, Some(query)),
        None => (rest, None),
    };
    match query {
        None => {}
        Some(_) if scheme.starts_with("stun") => return Err("takes no query (?transport is for TURN)".into()),
        Some(query) => match query.to_ascii_lowercase().strip_prefix("transport=") {
            Some("tcp") => {}
            Some("udp") if scheme == "turn" => {}
            Some("udp") => return Err("turns: runs over TLS, so use ?transport=tcp".into()),
            _ => return Err("takes only ?transport=udp or ?transport=tcp".into()),
        },
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else { return Err("has an unclosed '['".into()) };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err("has a bad IPv6 address".into());
        }
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err("has something after the IPv6 address".into()),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    let dotted_numbers = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !authority.starts_with('[') {
        if dotted_numbers && host.parse::<Ipv4Addr>().is_err() {
            return Err("has a bad IPv4 address".into());
        }
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !host.split('.').all(label_ok) {
            return Err("has a bad host name (user names, passwords and paths do not belong in the URL)".into());
        }
    }
    if let Some(port) = port
        && !port.parse::<u16>().is_ok_and(|p| p != 0)
    {
        return Err("has a bad port (1 to 65535)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The servers of these settings, each credential good for an hour.
    fn servers(stun: &[&str], turn: &[&str], secret: Option<&str>) -> anyhow::Result<IceServers> {
        let owned = |urls: &[&str]| urls.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        IceServers::new(&owned(stun), &owned(turn), secret, 3600)
    }

    const SECRET: &str = "correct horse battery staple";

    #[test]
    fn the_credential_is_the_rest_api_hmac() {
        // printf '%s' '1767225600:0123456789abcdef0123456789abcdef' \
        //   | openssl dgst -sha1 -hmac 'correct horse battery staple' -binary | base64
        let username = "1767225600:0123456789abcdef0123456789abcdef";
        assert_eq!(credential(SECRET.as_bytes(), username), "8sUXE6XXrMdgz8BrhrvBcBmt72U=");
        // RFC 2202 test case 2, in base64.
        assert_eq!(credential(b"Jefe", "what do ya want for nothing?"), "7/zfauXrL6LSdBbV8YTfnCWafHk=");
    }

    #[test]
    fn the_credential_matches_openssl() {
        let Ok(output) = std::process::Command::new("sh")
            .args(["-c", "printf '%s' \"$1\" | openssl dgst -sha1 -hmac \"$2\" -binary | base64", "sh"])
            .args(["1700000000:feedface", SECRET])
            .output()
        else {
            eprintln!("SKIPPED: no sh or openssl");
            return;
        };
        if !output.status.success() {
            eprintln!("SKIPPED: openssl failed");
            return;
        }
        let expected = String::from_utf8(output.stdout).unwrap();
        assert_eq!(credential(SECRET.as_bytes(), "1700000000:feedface"), expected.trim());
    }

    #[test]
    fn issued_servers_have_the_rtc_ice_server_shape() {
        let servers = servers(
            &["stun:stun.example:3478"],
            &["turn:turn.example:3478?transport=udp", "turns:turn.example:443?transport=tcp"],
            Some(SECRET),
        )
        .unwrap();
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let issued = servers.issue(now);
        let json = serde_json::to_value(&issued).unwrap();
        assert_eq!(json[0], serde_json::json!({ "urls": ["stun:stun.example:3478"] }));
        let turn = &json[1];
        assert_eq!(
            turn["urls"],
            serde_json::json!(["turn:turn.example:3478?transport=udp", "turns:turn.example:443?transport=tcp"])
        );
        let username = turn["username"].as_str().unwrap();
        let (expiry, id) = username.split_once(':').unwrap();
        assert_eq!(expiry, (now.as_second() + 3600).to_string());
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert_eq!(turn["credential"], credential(SECRET.as_bytes(), username).as_str());
        // Every issue is a new opaque id.
        assert_ne!(servers.issue(now)[1].username, issued[1].username);
        let debug = format!("{servers:?} {issued:?}");
        assert!(!debug.contains(SECRET) && !debug.contains(id) && !debug.contains("turn.example"), "{debug}");
    }

    #[test]
    fn link_headers_follow_rfc_9725() {
        let servers = servers(&["stun:stun.example"], &["turn:[::1]:3478?transport=tcp"], Some(SECRET)).unwrap();
        let links = servers.link_headers(Timestamp::UNIX_EPOCH);
        assert_eq!(links.len(), 2);
        assert_eq!(links[0], "<stun:stun.example>; rel=\"ice-server\"");
        let prefix = "<turn:[::1]:3478?transport=tcp>; rel=\"ice-server\"; username=\"3600:";
        assert!(links[1].starts_with(prefix) && links[1].ends_with("; credential-type=\"password\""), "{}", links[1]);
        assert!(IceServers::default().link_headers(Timestamp::UNIX_EPOCH).is_empty());
    }

    #[test]
    fn bad_configuration_is_refused_with_a_reason() {
        let refused = |stun: &[&str], turn: &[&str], secret: Option<&str>, says: &str| {
            let err = servers(stun, turn, secret).unwrap_err().to_string();
            assert!(err.contains(says), "{err:?} lacks {says:?}");
        };
        refused(&["turn:turn.example"], &[], None, "CUSTODIA_STUN_URLS entry 1: must start with stun:");
        refused(&["stun:a.example", " ", "turn:b.example"], &[], None, "CUSTODIA_STUN_URLS entry 2: must start");
        refused(&[], &["stun:x.example"], Some(SECRET), "must start with turn: or turns:");
        refused(&[], &["turn:x.example"], None, "needs CUSTODIA_TURN_SECRET");
        refused(&[], &[], Some(SECRET), "names no TURN server");
        refused(&[], &["turn:x.example"], Some("short"), "too short");
        refused(&[], &["turn://x.example"], Some(SECRET), "no \"//\"");
        refused(&[], &["turn:user:pw@x.example"], Some(SECRET), "CUSTODIA_TURN_URLS entry 1: has a bad port");
        let quoted = servers(&[], &["turn:user:hunter2@x.example"], Some(SECRET)).unwrap_err().to_string();
        assert!(!quoted.contains("hunter2") && !quoted.contains("x.example"), "{quoted}");
        refused(&[], &["turn:x.example:0"], Some(SECRET), "bad port");
        refused(&[], &["turn:x.example:70000"], Some(SECRET), "bad port");
        refused(&[], &["turn:x.example?transport=sctp"], Some(SECRET), "only ?transport=udp or ?transport=tcp");
        refused(&[], &["turns:x.example:443?transport=udp"], Some(SECRET), "use ?transport=tcp");
        refused(&["stun:x.example?transport=udp"], &[], None, "takes no query");
        refused(&["stun:300.1.1.1"], &[], None, "bad IPv4");
        refused(&["stun:[::g]"], &[], None, "bad IPv6");
        refused(&["stun:x.example/path"], &[], None, "bad host name");
        refused(&["stun:"], &[], None, "no host");
        let long = IceServers::new(&[], &[], None, 10);
        assert!(long.unwrap_err().to_string().contains("CUSTODIA_TURN_TTL_SECONDS is 10"));
        // Accepted: spaces and empty entries around commas, IP literals, upper-case schemes.
        let ok = servers(
            &[" stun:127.0.0.1:3478 ", ""],
            &["TURN:[2001:db8::1]:3478?transport=udp", "turns:turn.example:443?transport=tcp", "turn:t-1.example"],
            Some(SECRET),
        )
        .unwrap();
        assert_eq!(ok.counts(), (1, 3));
        assert!(servers(&[], &[], None).unwrap().issue(Timestamp::UNIX_EPOCH).is_empty());
    }
}
