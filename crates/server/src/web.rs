//! The browser pages, built by `web/build.mjs` into `web/dist` and embedded in the binary when it is compiled
//! (`build.rs` insists that the build ran): the console at `/`, the witness's join page at `/join`, the
//! prosecutor's portal at `/portal`, the offline bundle verifier at `/verify`, the gateway's key for a court to pin
//! at `/key`, and their scripts, styles and translations by file name.
//!
//! The pages are served from the router's fallback, after every API, WHIP and log route has had its turn, so they
//! add no route to the API (the OpenAPI test reads only API routes) and can never shadow one: anything under
//! `/api/` or `/log/`, and any path that is no page or file, gets the API's not-found problem as before.
//!
//! Every answer carries a strict Content-Security-Policy: the pages load only their own scripts and styles (no
//! CDN, nothing inline), talk only to this origin, and may not be framed.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use include_dir::{Dir, include_dir};
use sha2::Digest as _;

use crate::problem::Problem;

static DIST: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../web/dist");

/// What a page may load and do: only its own origin's scripts, styles, fonts and images (plus `data:` and `blob:`
/// images and `blob:` media, for previews and local recordings), no plugins, no framing, no foreign forms.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Camera and microphone for the hearing pages, on this origin only; nothing else.
pub const PERMISSIONS_POLICY: &str = "camera=(self), microphone=(self), display-capture=(), geolocation=(), \
     payment=(), usb=(), serial=(), hid=(), midi=()";

/// Each page's path and the file that is served for it (and the icon browsers ask for by its old name).
pub const PAGES: [(&str, &str); 8] = [
    ("/", "console.html"),
    ("/join", "join.html"),
    ("/portal", "portal.html"),
    ("/minutes", "minutes.html"),
    ("/admin", "admin.html"),
    ("/verify", "verify.html"),
    ("/key", "key.html"),
    ("/favicon.ico", "favicon.svg"),
];

/// Answers a request that no route took: a page or one of the pages' files, or else the not-found problem.
pub async fn fallback(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path();
    let reserved = path.starts_with("/api/") || path.starts_with("/log/");
    let file = if reserved || !(method == Method::GET || method == Method::HEAD) { None } else { lookup(path) };
    let Some((name, bytes)) = file else {
        return Problem::not_found("no such endpoint; see /api/openapi.json").into_response();
    };
    let tag = etag(name);
    let mut response = if headers.get(header::IF_NONE_MATCH).is_some_and(|sent| sent.as_bytes() == tag.as_bytes()) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = bytes.into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(name)));
        response
    };
    let set = response.headers_mut();
    if let Ok(tag) = HeaderValue::from_str(&tag) {
        set.insert(header::ETAG, tag);
    }
    // File names carry no content hash, so a browser asks again each time (and gets 304 when nothing changed).
    set.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    set_security_headers(set);
    response
}

/// The headers every page and page file carries.
pub fn set_security_headers(headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert("permissions-policy", HeaderValue::from_static(PERMISSIONS_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
}

/// The embedded file a path names: a page by its route, any other file by its name under `web/dist`.
fn lookup(path: &str) -> Option<(&'static str, &'static [u8])> {
    let name = match PAGES.iter().find(|(route, _)| *route == path) {
        Some((_, file)) => (*file).to_owned(),
        None => path.strip_prefix('/')?.to_owned(),
    };
    if name.is_empty() || name.split('/').any(|part| part.is_empty() || part.starts_with('.')) {
        return None;
    }
    let file = DIST.get_file(&name)?;
    Some((file.path().to_str()?, file.contents()))
}

/// A strong validator for an embedded file: the start of its SHA-256, computed once per file.
fn etag(name: &str) -> String {
    static TAGS: OnceLock<HashMap<&'static str, String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags = HashMap::new();
        let mut pending = vec![&DIST];
        while let Some(dir) = pending.pop() {
            for file in dir.files() {
                let digest = sha2::Sha256::digest(file.contents());
                let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                if let Some(path) = file.path().to_str() {
                    tags.insert(path, format!("\"{hex}\""));
                }
            }
            pending.extend(dir.dirs());
        }
        tags
    });
    tags.get(name).cloned().unwrap_or_default()
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        Some("webm") => "video/webm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_the_pages_are_refused() {
        for path in ["/verify", "/verify.js"] {
            assert!(lookup(path).is_some(), "{path}");
        }
        for path in ["/../Cargo.toml", "/.hidden", "//verify.html", "/nothing-here.js", ""] {
            assert!(lookup(path).is_none(), "{path}");
        }
        assert_eq!(content_type("verify.js"), "text/javascript; charset=utf-8");
        assert!(etag("verify.html").starts_with('"'));
    }
}
