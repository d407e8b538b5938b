//! The published API fuzzed by schemathesis (PyPI; pinned in tests/requirements.txt and installed by
//! `scripts/setup-system.sh test`) against the real `custodia serve` process (issue 11, "Found by fuzzing").
//!
//! The gateway is seeded over HTTP with curl: an administrator, a clerk, a judge, a witness and a prosecutor of
//! another State, two cases, a note and a video artefact with a use policy and the prosecutor's request to use it
//! more widely, a hearing with an invite, a resumable upload, and API tokens. Then
//! schemathesis runs every check it has (`--checks all`) in every phase (examples, coverage, fuzzing, and
//! stateful sequences over the links it infers) as each identity in turn: the witness's session, a token with
//! `read` only, the judge's session, the clerk's token with every scope, and the administrator's session. Each
//! run is bounded by examples (25 per operation, 8 steps per stateful sequence) and derandomized (a fixed seed,
//! `deterministic` generation, no example database carried between runs), so that every run sends the same
//! requests and CI gives the same verdict each time. No `max-time` is given to schemathesis: under a time limit it
//! repeats its phases until the time is up (every run lasted exactly its limit, each doing as much as the
//! machine allowed). A run that takes longer than `CUSTODIA_SCHEMATHESIS_SECONDS` (600 s per identity by default)
//! is killed and fails the test, as a hung one. It passes only if no run
//! reports a failure, apart from the deliberate answers in [`DELIBERATE`], each with its reason.
//!
//! What schemathesis found, and how it was fixed: the hearing console's token scope was documented as `write`
//! (the code needs `manage`); an invite id was any string to the document but an identifier to the code; the
//! checkpoint and `/healthz` are `text/plain; charset=utf-8`; a whole number written `830.0` was refused where
//! JSON Schema reads it as the integer 830; two problem types meant "429, try later" (now one, `too-many`); an
//! optional property given `null` was read as absent (serde's `Option`) where the document says it is a string
//! when present (now every JSON body holding `null` is refused, `api::ApiJson`); a protective order naming a role
//! twice in `privileged`, which the document says holds each once, was merged (now refused). That last one was
//! found by one CI run of many: the requests were the same each run, but whether the per-minute budgets answered
//! one 429 before it reached the check depended on how fast the machine sent them. The gateway here runs with an
//! account's budgets lifted (uploads, refusal and custody records, console steps, and a secret's room entries),
//! so that every run reaches the same code there; openapi.rs checks each of their 429s against the document. The
//! budgets per client address stay (sign-in failures, failed room entries, witness requests), all from this one
//! loopback address: what schemathesis sends to those routes is mostly refused before any check anyway.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

/// Answers schemathesis would count as failures that are what the gateway means to say: (operations, as a regex
/// over schemathesis's operation names such as `GET /api/v1/room`; the check; the statuses it also accepts there;
/// why). Schemathesis applies the first entry that matches an operation, so no two entries for one check overlap.
const DELIBERATE: &[(&str, &str, &[u16], &str)] = &[
    (
        "^(HEAD|PATCH|POST|DELETE) /api/v1/uploads",
        "negative_data_rejection",
        &[204, 412],
        "tus 1.0 answers a request without `Tus-Resumable: 1.0.0` with 412 Precondition Failed (documented), where \
         schemathesis expects a 4xx of its own list; and a PATCH without a body at the upload's offset is an empty \
         chunk, which tus takes (204, the offset unchanged), whatever else schemathesis changed beside it",
    ),
    (
        "^(HEAD|PATCH|POST|DELETE) /api/v1/uploads",
        "missing_required_header",
        &[405, 412],
        "the same: tus 1.0 answers a missing `Tus-Resumable` with 412; and a POST to an upload without \
         X-HTTP-Method-Override is not a method the upload takes (405, documented)",
    ),
    (
        "^POST /api/v1/uploads$",
        "positive_data_acceptance",
        &[400, 413],
        "Upload-Metadata carries base64 values (a case id, a purpose label) whose decoded contents no schema can \
         state; a length over the configured maximum is 413",
    ),
    (
        "^POST /api/v1/cases/\\{case\\}/artefacts$",
        "positive_data_acceptance",
        &[400, 413, 422],
        "the stated digests (the sha256 parameter, Repr-Digest, Content-Digest) must agree with each other and with \
         the bytes, which a schema cannot say: disagreeing digests are 400, bytes that differ from them 422",
    ),
    (
        "^POST /witness/add-checkpoint$",
        "positive_data_acceptance",
        &[400, 403, 404, 422],
        "the body is a text format (c2sp.org/tlog-witness) whose checkpoint must be a partner log's signed note, \
         consistent with what this witness cosigned before; no schema can say that, so any string is 400, 403, 404 \
         or 422 as the spec lists them",
    ),
    (
        "^POST /api/v1/cases/\\{case\\}/artefacts$",
        "negative_data_rejection",
        &[201],
        "an upload's body is the evidence's bytes in whatever media type it declares (`*/*`): the four bytes `null` \
         sent as `text/json` are a file like any other, kept as sent; no schema of the bytes can be broken",
    ),
    (
        "^GET /api/v1/artefacts/\\{id\\}/content$",
        "positive_data_acceptance",
        &[416],
        "a Range past the end of the artefact cannot be satisfied (RFC 9110), whatever the schema allows",
    ),
    (
        "^PATCH /api/v1/uploads/",
        "positive_data_acceptance",
        &[400, 413, 460],
        "a chunk that does not match its Upload-Checksum is 460 (tus checksum extension), one that runs past the \
         upload's length 413, and a checksum whose base64 does not decode 400: a schema cannot tie a header to the \
         bytes of the body, nor say which base64 strings decode",
    ),
    (
        "^POST /api/v1/uploads/",
        "positive_data_acceptance",
        &[400, 413, 415, 460],
        "the PATCH above, through X-HTTP-Method-Override; and what a PATCH needs (Upload-Offset, a body of \
         application/offset+octet-stream) a DELETE does not, which the schema cannot make depend on the header",
    ),
    (
        "^POST /api/v1/cases/\\{case\\}/hearings(/\\{hearing\\}/invites)?$",
        "positive_data_acceptance",
        &[400],
        "a display name, a hearing's place and its contact may hold no control character and no invisible format \
         character (Unicode Cf: direction overrides, zero-width spaces), which make one text read as another, nor \
         be blank; JSON Schema's regular expressions cannot name a Unicode category portably",
    ),
    (
        "^GET /api/v1/room$",
        "positive_data_acceptance",
        &[426],
        "the hearing room is a WebSocket: a plain GET is told to upgrade, and schemathesis does not speak WebSocket",
    ),
];

/// An operation no run with a session takes: signing out would end the session the rest of the run uses (the
/// token runs take it, where it changes nothing).
const SIGN_OUT: &str = "DELETE /api/v1/session";

/// Seconds each identity's run may take at most: a safety net, well above what a run bounded by its examples needs.
fn seconds_per_run() -> u64 {
    std::env::var("CUSTODIA_SCHEMATHESIS_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(600)
}

/// The gateway over HTTP with curl; each identity has its own cookie jar.
struct Client {
    base: String,
    jars: tempfile::TempDir,
}

impl Client {
    fn call(&self, who: &str, method: &str, path: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
        let jar = self.jars.path().join(who);
        let body_file = self.jars.path().join("body");
        std::fs::write(&body_file, body).unwrap();
        let mut command = Command::new("curl");
        command.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method]).arg("-b").arg(&jar).arg("-c").arg(&jar);
        command.args(["-H", "Sec-Fetch-Site: same-origin"]);
        for (name, value) in headers {
            command.args(["-H", &format!("{name}: {value}")]);
        }
        if !body.is_empty() {
            command.arg("--data-binary").arg(format!("@{}", body_file.display()));
        }
        let output =
            command.arg(format!("{}{path}", self.base)).output().expect("curl runs (scripts/setup-system.sh test)");
        assert!(output.status.success(), "curl {method} {path}: {}", String::from_utf8_lossy(&output.stderr));
        let split = output.stdout.iter().rposition(|b| *b == b'\n').unwrap();
        let status = String::from_utf8_lossy(&output.stdout[split + 1..]).parse().unwrap();
        (status, output.stdout[..split].to_vec())
    }

    fn json(&self, who: &str, method: &str, path: &str, body: Value, expect: u16) -> Value {
        let (status, reply) =
            self.call(who, method, path, body.to_string().as_bytes(), &[("Content-Type", "application/json")]);
        assert_eq!(status, expect, "{method} {path}: {}", String::from_utf8_lossy(&reply));
        serde_json::from_slice(&reply).unwrap_or(Value::Null)
    }

    /// The session cookie's value in `who`'s jar.
    fn session(&self, who: &str) -> String {
        let jar = std::fs::read_to_string(self.jars.path().join(who)).unwrap();
        let line = jar.lines().find(|line| line.contains("custodia_session")).expect("a session cookie");
        line.split('\t').next_back().unwrap().trim().to_owned()
    }
}

/// What the seeded gateway holds, as schemathesis parameters.
struct Seeded {
    artefact: String,
    hearing: String,
    invite: String,
    upload: String,
    judge: String,
    spare_account: String,
    read_token_id: String,
    widen_request: String,
}

/// A TOML string.
fn toml(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// The schemathesis configuration for one identity: `auth` is the TOML that authenticates it.
fn config(base: &str, seeded: &Seeded, auth: &str, hooks: &Path) -> String {
    let mut config = format!(
        "base-url = {base}\nhooks = {hooks}\nworkers = 1\nseed = 11\n\
         [generation]\nmax-examples = 25\ncodec = \"utf-8\"\ndeterministic = true\ndatabase = \"none\"\n\
         [phases.stateful]\nenabled = true\nmax-steps = 8\n\
         [parameters]\n\"path.case\" = \"case-1\"\n\"path.hearing\" = {hearing}\n\"path.invite\" = {invite}\n\
         \"path.account\" = {judge}\n\"path.index\" = 1\n",
        base = toml(base),
        hooks = toml(hooks.to_str().unwrap()),
        hearing = toml(&seeded.hearing),
        invite = toml(&seeded.invite),
        judge = toml(&seeded.judge),
    );
    // `id` names a different thing on each route.
    for (paths, id) in [
        ("^/api/v1/artefacts/", &seeded.artefact),
        ("^/api/v1/uploads/", &seeded.upload),
        ("^/api/v1/accounts/", &seeded.spare_account),
        ("^/api/v1/tokens/", &seeded.read_token_id),
        ("^/api/v1/widen-requests/", &seeded.widen_request),
    ] {
        config.push_str(&format!(
            "[[operations]]\ninclude-path-regex = {}\nparameters = {{ \"path.id\" = {} }}\n",
            toml(paths),
            toml(id)
        ));
    }
    for (operations, check, statuses, _why) in DELIBERATE {
        // What the check accepts anyway, plus the deliberate answers.
        let base: &[u16] = match *check {
            "negative_data_rejection" => &[400, 401, 403, 404, 405, 406, 409, 415, 422, 428, 429],
            "missing_required_header" => &[400, 401, 403, 406, 415, 422],
            _ => &[200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 401, 403, 404, 409, 429],
        };
        let expected: Vec<String> = base.iter().chain(statuses.iter()).map(u16::to_string).collect();
        config.push_str(&format!("[[operations]]\ninclude-name-regex = {}\n", toml(operations)));
        config.push_str(&format!("checks.{check}.expected-statuses = [{}]\n", expected.join(", ")));
    }
    config.push_str(auth);
    config
}

fn seed(client: &Client, password: &str) -> (Seeded, String, String) {
    client.json("admin", "POST", "/api/v1/session", json!({"username": "admin", "password": password}), 200);
    let mut ids = std::collections::HashMap::new();
    for (name, jurisdiction) in
        [("clerk", "IT"), ("judge", "IT"), ("witness", "NG"), ("prosecutor", "DE"), ("spare", "IT")]
    {
        let account = json!({"username": name, "display_name": format!("The {name}"),
            "password": format!("{name}-correct-horse"), "jurisdiction": jurisdiction});
        let created = client.json("admin", "POST", "/api/v1/accounts", account, 201);
        ids.insert(name, created["id"].as_str().unwrap().to_owned());
    }
    for case in ["case-1", "case-2"] {
        client.json("admin", "POST", "/api/v1/cases", json!({"id": case, "title": format!("R v {case}")}), 201);
    }
    for (name, role) in [("clerk", "clerk"), ("judge", "judge"), ("witness", "witness"), ("prosecutor", "prosecutor")] {
        let member = format!("/api/v1/cases/case-1/members/{}", ids[name]);
        let (status, body) = client.call(
            "admin",
            "PUT",
            &member,
            json!({"role": role}).to_string().as_bytes(),
            &[("Content-Type", "application/json")],
        );
        assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
        let sign_in = json!({"username": name, "password": format!("{name}-correct-horse")});
        client.json(name, "POST", "/api/v1/session", sign_in, 200);
    }
    let upload = |query: &str, content_type: &str, bytes: &[u8]| {
        let path = format!("/api/v1/cases/case-1/artefacts?{query}");
        let (status, body) = client.call("clerk", "POST", &path, bytes, &[("Content-Type", content_type)]);
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice::<Value>(&body).unwrap()["artefact"].as_str().unwrap().to_owned()
    };
    upload("purpose=statement&filename=note.txt", "text/plain", b"a note of the interview");
    // Not a video FFmpeg can read: the manifest says so, and the artefact is kept all the same.
    let artefact = upload("purpose=trial%20preparation&filename=clip.webm", "video/webm", &[0x1a, 0x45, 0xdf, 0xa3, 1]);
    let policy = json!({"tlp": "TLP:AMBER", "provider": "IT: Procura di Catania",
        "permitted_purposes": ["trial preparation"], "permitted_recipients": [], "permitted_jurisdictions": ["IT"],
        "onward_transfer": "with_consent"});
    client.json("clerk", "PUT", &format!("/api/v1/artefacts/{artefact}/policy"), policy, 200);
    // A prosecutor of another State asks to use it there: a request the provider's clerk may decide.
    let widen = format!("/api/v1/artefacts/{artefact}/widen-requests");
    let widen_request = client.json("prosecutor", "POST", &widen, json!({"jurisdictions": ["DE"]}), 201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let schedule = json!({"scheduled_for": "2026-12-01T09:00:00Z", "place": "Tribunale di Catania, aula 2"});
    let hearing =
        client.json("clerk", "POST", "/api/v1/cases/case-1/hearings", schedule, 201)["id"].as_str().unwrap().to_owned();
    let invites = format!("/api/v1/cases/case-1/hearings/{hearing}/invites");
    let invite =
        client.json("clerk", "POST", &invites, json!({"role": "witness"}), 201)["invite"].as_str().unwrap().to_owned();
    let metadata = "case Y2FzZS0x,purpose c3RhdGVtZW50,filename bm90ZS50eHQ=";
    let headers = [("Tus-Resumable", "1.0.0"), ("Upload-Length", "100"), ("Upload-Metadata", metadata)];
    let upload_id = {
        // The new upload's Location is in the answer's head.
        let output = Command::new("curl")
            .args(["-sS", "-D", "-", "-o", "/dev/null", "-X", "POST", "-b"])
            .arg(client.jars.path().join("clerk"))
            .args(["-H", "Sec-Fetch-Site: same-origin"])
            .args(headers.iter().flat_map(|(name, value)| ["-H".to_owned(), format!("{name}: {value}")]))
            .arg(format!("{}/api/v1/uploads", client.base))
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&output.stdout).into_owned();
        let location = head.lines().find_map(|line| line.strip_prefix("location: ")).expect("a Location");
        location.trim().rsplit('/').next().unwrap().to_owned()
    };
    let token = |scopes: &[&str]| {
        client.json("clerk", "POST", "/api/v1/tokens", json!({"scopes": scopes, "expires_in_seconds": 86400}), 201)
    };
    let read = token(&["read"]);
    let every = token(&["read", "write", "manage"]);
    let seeded = Seeded {
        artefact,
        hearing,
        invite,
        upload: upload_id,
        judge: ids["judge"].clone(),
        spare_account: ids["spare"].clone(),
        read_token_id: read["id"].as_str().unwrap().to_owned(),
        widen_request,
    };
    (seeded, read["token"].as_str().unwrap().to_owned(), every["token"].as_str().unwrap().to_owned())
}

#[test]
fn schemathesis_finds_nothing_undocumented() {
    let available = Command::new("python3").args(["-c", "import schemathesis"]).status().is_ok_and(|s| s.success());
    assert!(available, "schemathesis is not installed: run scripts/setup-system.sh test (tests/requirements.txt)");
    let data = tempfile::tempdir().unwrap();
    // An account's per-minute budgets are lifted past anything a run sends: under them, whether an operation was
    // answered 429 or reached its logic depended on how fast the machine ran the requests, so a run was not the
    // same run each time. The budgets themselves are tested in tests/quotas.rs and tests/room_secrets.rs, and
    // their answers in tests/openapi.rs.
    let unbounded = std::ffi::OsStr::new("1000000");
    let budgets = [
        ("CUSTODIA_UPLOADS_PER_MINUTE", unbounded),
        ("CUSTODIA_REFUSAL_RECORDS_PER_MINUTE", unbounded),
        ("CUSTODIA_ROOM_ENTRIES_PER_MINUTE", unbounded),
        ("CUSTODIA_CONSOLE_STEPS_PER_MINUTE", unbounded),
        ("CUSTODIA_CUSTODY_RECORDS_PER_MINUTE", unbounded),
    ];
    let (_gateway, port) = support::spawn_gateway(data.path(), &budgets);
    let client = Client { base: format!("http://127.0.0.1:{port}"), jars: tempfile::tempdir().unwrap() };
    let password = std::fs::read_to_string(data.path().join("keys/initial-admin-password")).unwrap();
    let (seeded, read_token, every_token) = seed(&client, password.trim());

    // Two bodies schemathesis cannot make on its own: an SDP offer is text, a tus chunk is bytes. And labels refuse
    // the invisible format characters beyond the Basic Multilingual Plane too, which the document's pattern (an
    // ECMA-262 one, without the u flag) cannot list: generated requests that hold one are not sent.
    let work = tempfile::tempdir().unwrap();
    let hooks = work.path().join("hooks.py");
    std::fs::write(
        &hooks,
        "import unicodedata\n\
         import schemathesis\n\
         schemathesis.serializer.alias(\"application/sdp\", \"text/plain\")\n\
         schemathesis.serializer.alias(\"application/offset+octet-stream\", \"application/octet-stream\")\n\
         def hidden(value):\n\
         \x20   if isinstance(value, str):\n\
         \x20       return any(ord(c) > 0xFFFF and unicodedata.category(c) == \"Cf\" for c in value)\n\
         \x20   if isinstance(value, dict):\n\
         \x20       return any(hidden(k) or hidden(v) for k, v in value.items())\n\
         \x20   if isinstance(value, (list, tuple)):\n\
         \x20       return any(hidden(v) for v in value)\n\
         \x20   return False\n\
         @schemathesis.hook\n\
         def filter_body(ctx, body):\n\
         \x20   return not hidden(body)\n\
         @schemathesis.hook\n\
         def filter_query(ctx, query):\n\
         \x20   return not hidden(query)\n",
    )
    .unwrap();
    let session = |who: &str| {
        format!(
            "[headers]\n\"Sec-Fetch-Site\" = \"same-origin\"\n[auth.openapi.session]\napi_key = {}\n\
             [[operations]]\ninclude-name = {}\nenabled = false\n",
            toml(&client.session(who)),
            toml(SIGN_OUT)
        )
    };
    let bearer = |token: &str| format!("[auth.openapi.token]\nbearer = {}\n", toml(token));
    // In this order: the clerk's run may change the judge's membership, and the administrator's disables an
    // account.
    let identities = [
        ("witness", session("witness")),
        ("read-only token", bearer(&read_token)),
        ("judge", session("judge")),
        ("clerk's token", bearer(&every_token)),
        ("administrator", session("admin")),
    ];
    let schema = format!("{}/api/openapi.json", client.base);
    let mut failed = Vec::new();
    for (n, (identity, auth)) in identities.iter().enumerate() {
        let config_path = work.path().join(format!("schemathesis-{n}.toml"));
        std::fs::write(&config_path, config(&client.base, &seeded, auth, &hooks)).unwrap();
        let output = support::run_for(
            Command::new("python3")
                .args(["-c", "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"])
                .arg("--config-file")
                .arg(&config_path)
                .args([
                    "--no-color",
                    "run",
                    &schema,
                    "--checks",
                    "all",
                    "--phases",
                    "examples,coverage,fuzzing,stateful",
                ])
                .current_dir(work.path()),
            std::time::Duration::from_secs(seconds_per_run()),
            "run scripts/setup-system.sh test to install schemathesis",
        );
        let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        if let Some(dir) = std::env::var_os("CUSTODIA_SCHEMATHESIS_OUTPUT") {
            std::fs::write(Path::new(&dir).join(format!("schemathesis-{n}.txt")), &text).unwrap();
        }
        let summary = text.lines().rev().find(|line| line.contains(" in ") && line.starts_with('=')).unwrap_or("");
        eprintln!("{identity}: {summary}");
        if !output.status.success() {
            failed.push(format!("as the {identity}:\n{text}"));
        }
    }
    assert!(failed.is_empty(), "schemathesis found failures:\n{}", failed.join("\n\n"));
}
