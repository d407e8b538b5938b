//! The reference tus client, tus-js-client from npm (what Uppy uploads with), against the real `custodia` binary
//! over HTTP: a statement sent in 64 KiB chunks, cut off and resumed, and registered with its SHA-256.
//!
//! Needs node and npm (`scripts/setup-system.sh test`). The client is pinned by `tests/tus-js/package-lock.json`
//! and installed with `npm ci` on first run. Accounts, the case and the check at the end go through `curl`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use custodia_core::Sha256;
use serde_json::{Value, json};

mod support;

const SETUP: &str = "run scripts/setup-system.sh test to install nodejs and npm";

fn tus_js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/tus-js")
}

/// Runs a command to completion, or kills it and fails after `limit`.
fn run(command: &mut Command, limit: Duration) -> Output {
    support::run_for(command, limit, SETUP)
}

/// Installs the pinned tus-js-client, unless it already is.
fn install_tus_js_client() {
    support::npm_ci(&tus_js_dir(), "node_modules/tus-js-client/package.json", SETUP);
}

fn serve(data_dir: &Path) -> (support::GatewayProcess, String) {
    let (process, port) = support::spawn_gateway(data_dir, &[]);
    (process, format!("http://127.0.0.1:{port}"))
}

/// An HTTP reply, as curl saw it.
struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| panic!("{err}: {}", self.body))
    }
}

/// One request through curl. `auth` is a header line: a session cookie or a bearer token.
fn curl(method: &str, url: &str, auth: Option<&str>, body: Option<Value>) -> Reply {
    let mut command = Command::new("curl");
    command.args(["--silent", "--show-error", "--include", "--max-time", "30", "--request", method, url]);
    if let Some(auth) = auth {
        command.args(["--header", auth]);
        if auth.starts_with("cookie:") {
            // As the gateway's own pages would: a cookie-authenticated change must say it is same-origin.
            command.args(["--header", "sec-fetch-site: same-origin"]);
        }
    }
    if let Some(body) = body {
        command.args(["--header", "content-type: application/json", "--data-binary", &body.to_string()]);
    }
    let output = run(&mut command, Duration::from_secs(60));
    assert!(output.status.success(), "curl {method} {url}: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    Reply { status, headers: headers.to_owned(), body: body.to_owned() }
}

fn expect(reply: Reply, status: u16) -> Reply {
    assert_eq!(reply.status, status, "{}{}", reply.headers, reply.body);
    reply
}

/// Signs in and returns the session cookie as a request header line.
fn sign_in(base: &str, username: &str, password: &str) -> String {
    let reply = curl(
        "POST",
        &format!("{base}/api/v1/session"),
        None,
        Some(json!({ "username": username, "password": password })),
    );
    let cookie = expect(reply, 200).header("set-cookie").unwrap().split(';').next().unwrap().to_owned();
    format!("cookie: {cookie}")
}

#[test]
fn tus_js_client_uploads_a_statement_through_a_dropped_link() {
    let node = run(Command::new("node").arg("--version"), Duration::from_secs(30));
    assert!(node.status.success(), "node does not run; {SETUP}");
    install_tus_js_client();

    let data = tempfile::tempdir().unwrap();
    let (_server, base) = serve(data.path());
    let password = std::fs::read_to_string(data.path().join("keys/initial-admin-password")).unwrap();
    let admin = sign_in(&base, "admin", password.trim());
    let admin_id = expect(curl("GET", &format!("{base}/api/v1/me"), Some(&admin), None), 200).json()["id"].clone();
    let account = json!({
        "username": "consul", "display_name": "Consular officer", "password": "consul-correct-horse", "jurisdiction": "FR",
    });
    let officer_id =
        expect(curl("POST", &format!("{base}/api/v1/accounts"), Some(&admin), Some(account)), 201).json()["id"].clone();
    let case = json!({ "id": "case-interop", "title": "R v Interop" });
    expect(curl("POST", &format!("{base}/api/v1/cases"), Some(&admin), Some(case)), 201);
    for (member, role) in [(&officer_id, "remote_site_officer"), (&admin_id, "clerk")] {
        let url = format!("{base}/api/v1/cases/case-interop/members/{}", member.as_str().unwrap());
        expect(curl("PUT", &url, Some(&admin), Some(json!({ "role": role }))), 204);
    }
    // The officer's app holds a write-only token, not a session.
    let officer = sign_in(&base, "consul", "consul-correct-horse");
    let token = json!({ "scopes": ["write"], "expires_in_seconds": 3600 });
    let token = expect(curl("POST", &format!("{base}/api/v1/tokens"), Some(&officer), Some(token)), 201).json();

    let statement: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let file = data.path().join("statement.webm");
    std::fs::write(&file, &statement).unwrap();
    let sha256 = Sha256::of(&statement).to_hex();
    let bearer = format!("Authorization: Bearer {}", token["token"].as_str().unwrap());
    let args = [
        "upload.mjs",
        &format!("{base}/api/v1/uploads"),
        file.to_str().unwrap(),
        "--chunk-size=65536",
        "--header",
        &bearer,
        "--metadata=case=case-interop",
        "--metadata=purpose=witness statement",
        "--metadata=filename=statement.webm",
        "--metadata=filetype=video/webm",
        &format!("--metadata=sha256={sha256}"),
    ];
    let output = run(Command::new("node").current_dir(tus_js_dir()).args(args), Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "tus-js-client failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    let uploaded: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|err| panic!("{err}: {stdout}"));
    assert!(uploaded["url"].as_str().unwrap().starts_with(&format!("{base}/api/v1/uploads/upl-")), "{uploaded}");

    let artefact = uploaded["artefact"].as_str().unwrap_or_else(|| panic!("no Custodia-Artefact: {uploaded}"));
    let detail = expect(curl("GET", &format!("{base}{artefact}?purpose=verification"), Some(&admin), None), 200).json();
    assert_eq!((detail["sha256"].as_str(), detail["size"].as_u64()), (Some(sha256.as_str()), Some(300_000)));
    assert_eq!(detail["manifest"]["original_name"], "statement.webm");
    let chunks = std::fs::read_dir(data.path().join("objects/staging/tus")).map_or(0, |entries| entries.count());
    assert_eq!(chunks, 0, "chunks left behind");
}
