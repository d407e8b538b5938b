//! The OpenAPI document served at `/api/openapi.json` against the code it describes.
//!
//! - It is served, and is OpenAPI 3.1 JSON whose references all resolve.
//! - Every route the router source registers is documented with the same methods, and nothing else is: the
//!   source files are scanned for `.route("...", ...)`, so a route added without documenting it fails here.
//! - Every problem `type` the source can produce is listed in the `Problem` schema, and nothing else.
//! - The policy schemas match the serde forms of `custodia_core`, and `x-custodia-roles` matches `permits`.
//! - Real replies from a gateway carry documented statuses, and their JSON bodies validate against the documented
//!   schemas (a small validator for the JSON Schema keywords the document uses).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use axum::http::header;
use base64::Engine as _;
use custodia_core::{
    Action, OnwardTransfer, RefusalCode, Role, Tlp, TransferConsent, UsePolicy, WidenRequest, permits,
};
use serde_json::{Value, json};
use support::{As, Reply, TestGateway};

const PROBLEM_PREFIX: &str = "https://custodia.invalid/problems/";
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn document() -> Value {
    serde_json::from_str(custodia_server::openapi::DOCUMENT).expect("openapi.json is not JSON")
}

/// What a local `$ref` points at.
fn lookup<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let target = reference.strip_prefix('#').and_then(|pointer| doc.pointer(pointer));
    target.unwrap_or_else(|| panic!("unresolved $ref {reference}"))
}

/// A response, parameter or header object, following references.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => resolve(doc, lookup(doc, reference)),
        None => value,
    }
}

/// Every operation: (path, method, operation).
fn operations(doc: &Value) -> Vec<(&str, &str, &Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                found.push((path.as_str(), method, operation));
            }
        }
    }
    found
}

#[tokio::test]
async fn the_served_document_is_openapi_3_1() {
    let gateway = TestGateway::start().await;
    let reply = gateway.get("/api/openapi.json", None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json");
    let served = reply.json();
    let version = served["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1."), "openapi {version:?}");
    assert!(served["info"]["title"].is_string() && served["info"]["version"].is_string());
    assert_eq!(served, document());
    assert!(served["paths"].as_object().is_some_and(|paths| !paths.is_empty()));
}

// Reading the router source.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Lexeme {
    Code,
    Text,
    Comment,
}

/// What each byte of Rust source is: code, inside a string or character literal, or inside a comment.
fn lex(source: &str) -> Vec<Lexeme> {
    let bytes = source.as_bytes();
    let mut kinds = vec![Lexeme::Code; bytes.len()];
    let mut i = 0;
    let mark = |kinds: &mut [Lexeme], from: usize, to: usize, kind| kinds[from..to.min(bytes.len())].fill(kind);
    while i < bytes.len() {
        let rest = &bytes[i..];
        let after_identifier = i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&b| b == b'\n').map_or(bytes.len(), |n| i + n);
            mark(&mut kinds, i, end, Lexeme::Comment);
            i = end;
        } else if rest.starts_with(b"/*") {
            let end = source[i + 2..].find("*/").map_or(bytes.len(), |n| i + 2 + n + 2);
            mark(&mut kinds, i, end, Lexeme::Comment);
            i = end;
        } else if rest[0] == b'r'
            && !after_identifier
            && rest[1..].iter().position(|&b| b != b'#').is_some_and(|n| rest[1 + n] == b'"')
        {
            let hashes = rest[1..].iter().take_while(|&&b| b == b'#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let start = i + 1 + hashes + 1;
            let end = source[start..].find(&close).map_or(bytes.len(), |n| start + n + close.len());
            mark(&mut kinds, i, end, Lexeme::Text);
            i = end;
        } else if rest[0] == b'"' {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            mark(&mut kinds, i, j + 1, Lexeme::Text);
            i = j + 1;
        } else if rest[0] == b'\'' && (rest.get(1) == Some(&b'\\') || rest.get(2) == Some(&b'\'')) {
            // A character literal ('x', '\n', '\''); anything else after a quote is a lifetime.
            let from = if rest[1] == b'\\' { 3 } else { 2 };
            let end = rest[from..].iter().position(|&b| b == b'\'').map_or(bytes.len(), |n| i + from + n + 1);
            mark(&mut kinds, i, end, Lexeme::Text);
            i = end;
        } else {
            i += 1;
        }
    }
    kinds
}

/// Rust source, lexed.
struct Source {
    text: String,
    kinds: Vec<Lexeme>,
}

impl Source {
    fn read(path: &Path) -> Self {
        Self::read_str(&std::fs::read_to_string(path).unwrap())
    }

    fn read_str(text: &str) -> Self {
        Self { text: text.to_owned(), kinds: lex(text) }
    }

    fn is_code(&self, at: usize) -> bool {
        self.kinds[at] == Lexeme::Code
    }

    /// The top-level arguments of the parenthesised list opening at `open`, trimmed.
    fn arguments(&self, open: usize) -> Vec<&str> {
        let bytes = self.text.as_bytes();
        let (mut depth, mut start, mut arguments) = (0usize, open + 1, Vec::new());
        let code = bytes.iter().zip(&self.kinds).enumerate().skip(open).filter(|(_, (_, kind))| **kind == Lexeme::Code);
        for (at, (byte, _)) in code {
            match byte {
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        arguments.push(self.text[start..at].trim());
                        break;
                    }
                }
                b',' if depth == 1 => {
                    arguments.push(self.text[start..at].trim());
                    start = at + 1;
                }
                _ => {}
            }
        }
        arguments.retain(|argument| !argument.is_empty());
        arguments
    }

    /// The arguments of every call of `callee` in code (not in strings or comments).
    fn calls(&self, callee: &str) -> Vec<Vec<&str>> {
        let pattern = format!("{callee}(");
        self.text
            .match_indices(&pattern)
            .filter(|(at, _)| self.is_code(*at))
            .map(|(at, _)| self.arguments(at + callee.len()))
            .collect()
    }

    /// The arguments of every parenthesised list in code.
    fn all_lists(&self) -> Vec<Vec<&str>> {
        let opens = self.text.match_indices('(').map(|(at, _)| at).filter(|&at| self.is_code(at));
        opens.map(|at| self.arguments(at)).collect()
    }
}

/// The contents of a plain string literal.
fn literal(argument: &str) -> Option<&str> {
    argument.strip_prefix('"')?.strip_suffix('"').filter(|inner| !inner.contains(['"', '\\']))
}

/// The HTTP methods a method router expression such as `get(a).post(b)` routes: each method name called as a
/// function or method, outside strings and comments.
fn routed_methods(expression: &str) -> BTreeSet<String> {
    let kinds = lex(expression);
    let code: Vec<u8> =
        expression.bytes().zip(kinds).map(|(b, kind)| if kind == Lexeme::Code { b } else { b' ' }).collect();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut methods = BTreeSet::new();
    let mut at = 0;
    while at < code.len() {
        if !is_word(code[at]) {
            at += 1;
            continue;
        }
        let end = code[at..].iter().position(|&b| !is_word(b)).map_or(code.len(), |n| at + n);
        let word = std::str::from_utf8(&code[at..end]).unwrap();
        let next = code[end..].iter().find(|b| !b.is_ascii_whitespace());
        let before = code[..at].iter().rev().find(|b| !b.is_ascii_whitespace());
        if next == Some(&b'(') && before.is_none_or(|b| b".:(,".contains(b)) {
            assert!(!["any", "on"].contains(&word), "{expression}: route each method explicitly, for the document");
            if METHODS.contains(&word) {
                methods.insert(word.to_owned());
            }
        }
        at = end;
    }
    methods
}

fn server_sources() -> Vec<(String, Source)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    let mut pending = vec![dir.clone()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let name = path.strip_prefix(&dir).unwrap().display().to_string();
                found.push((name, Source::read(&path)));
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// Route paths registered in the source, in OpenAPI's spelling (`{*rest}` becomes `{rest}`), with their methods.
fn routes_in_source() -> BTreeMap<String, BTreeSet<String>> {
    let mut routes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files_with_routes = BTreeSet::new();
    for (name, source) in server_sources() {
        // A fallback adds no route (it answers unknown paths with a problem), so it is allowed.
        for forbidden in [".nest(", ".route_service(", ".nest_service("] {
            assert!(
                source.calls(forbidden.trim_end_matches('(')).is_empty(),
                "{name} uses {forbidden}: teach this test to read it"
            );
        }
        for arguments in source.calls(".route") {
            let [path, methods] = arguments[..] else { panic!("{name}: .route with arguments {arguments:?}") };
            let path = literal(path).unwrap_or_else(|| panic!("{name}: route path {path} is not a string literal"));
            let path = path.replace("{*", "{");
            let methods = routed_methods(methods);
            assert!(!methods.is_empty(), "{name}: no method found for {path}");
            routes.entry(path).or_default().extend(methods);
            files_with_routes.insert(name.clone());
        }
    }
    for file in ["api.rs", "log_routes.rs", "tus.rs"] {
        assert!(files_with_routes.contains(file), "found no route in {file}; is the scan still right?");
    }
    routes
}

#[test]
fn the_route_scan_reads_rust() {
    let source = Source::read_str(concat!(
        "// .route(\"/commented\", get(x))\n",
        "r.route(\"/a/{id}\", get(|| async { \"not(\" }).post(b)) /* .route(\"/b\", put(c)) */\n",
        ".route(\n    \"/c\",\n    head(s).patch(t), // trailing comment\n)\n",
        "let c = '('; let q = '\\''; fn f<'a>(x: &'a str) {}\n",
        ".route(\"/d\", delete(d))\n",
    ));
    let routes: Vec<Vec<&str>> = source.calls(".route");
    assert_eq!(routes.len(), 3, "{routes:?}");
    assert_eq!(literal(routes[0][0]), Some("/a/{id}"));
    assert_eq!(routed_methods(routes[0][1]), BTreeSet::from(["get".into(), "post".into()]));
    assert_eq!(literal(routes[1][0]), Some("/c"));
    assert_eq!(routed_methods(routes[1][1]), BTreeSet::from(["head".into(), "patch".into()]));
    assert_eq!(literal(routes[2][0]), Some("/d"));
}

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let doc = document();
    let in_source = routes_in_source();
    let mut in_document: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, method, _) in operations(&doc) {
        in_document.entry(path.to_owned()).or_default().insert(method.to_owned());
    }
    let mut wrong = Vec::new();
    for (path, methods) in &in_source {
        match in_document.get(path) {
            None => wrong.push(format!("{path} ({methods:?}) is routed but not documented")),
            Some(documented) if documented != methods => {
                wrong.push(format!("{path}: routed {methods:?}, documented {documented:?}"));
            }
            Some(_) => {}
        }
    }
    for (path, methods) in &in_document {
        if !in_source.contains_key(path) {
            wrong.push(format!("{path} ({methods:?}) is documented but not routed"));
        }
    }
    assert!(wrong.is_empty(), "the document and the router disagree:\n{}", wrong.join("\n"));
}

// The document on its own.

fn walk<'a>(value: &'a Value, found: &mut Vec<&'a Value>) {
    found.push(value);
    match value {
        Value::Object(map) => map.values().for_each(|v| walk(v, found)),
        Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
        _ => {}
    }
}

/// Parses JSON only to refuse an object that names a key twice: `Value` keeps the last one silently, so two
/// branches that each add a schema of the same name would leave one of them unseen.
struct KeysOnce;

impl<'de> serde::Deserialize<'de> for KeysOnce {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = KeysOnce;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, _: bool) -> Result<KeysOnce, E> {
                Ok(KeysOnce)
            }
            fn visit_i64<E>(self, _: i64) -> Result<KeysOnce, E> {
                Ok(KeysOnce)
            }
            fn visit_u64<E>(self, _: u64) -> Result<KeysOnce, E> {
                Ok(KeysOnce)
            }
            fn visit_f64<E>(self, _: f64) -> Result<KeysOnce, E> {
                Ok(KeysOnce)
            }
            fn visit_str<E>(self, _: &str) -> Result<KeysOnce, E> {
                Ok(KeysOnce)
            }
            fn visit_unit<E>(self) -> Result<KeysOnce, E> {
                Ok(KeysOnce)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<KeysOnce, A::Error> {
                while items.next_element::<KeysOnce>()?.is_some() {}
                Ok(KeysOnce)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<KeysOnce, A::Error> {
                let mut keys = BTreeSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<KeysOnce>()?;
                    if !keys.insert(key.clone()) {
                        return Err(serde::de::Error::custom(format!("the key {key:?} appears twice in one object")));
                    }
                }
                Ok(KeysOnce)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[test]
fn the_document_hangs_together() {
    serde_json::from_str::<KeysOnce>(custodia_server::openapi::DOCUMENT).unwrap_or_else(|err| panic!("{err}"));
    assert!(serde_json::from_str::<KeysOnce>(r#"{"a": {"b": 1, "b": 2}}"#).is_err(), "the check catches a repeat");
    let doc = document();
    let mut all = Vec::new();
    walk(&doc, &mut all);
    for value in all {
        if let Some(reference) = value.get("$ref").and_then(Value::as_str) {
            let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("external $ref {reference}"));
            assert!(doc.pointer(pointer).is_some(), "unresolved $ref {reference}");
        }
        if let Some(options) = value.get("oneOf").and_then(Value::as_array) {
            let distinct: BTreeSet<String> = options.iter().map(Value::to_string).collect();
            assert_eq!(distinct.len(), options.len(), "a oneOf lists an option twice: {options:?}");
            if let Some(mapping) = value["discriminator"]["mapping"].as_object() {
                let mapped: BTreeSet<String> =
                    mapping.values().map(|target| json!({ "$ref": target }).to_string()).collect();
                assert_eq!(mapped, distinct, "the discriminator maps exactly the oneOf options");
                for (tag, target) in mapping {
                    let option = lookup(&doc, target.as_str().unwrap());
                    let property = value["discriminator"]["propertyName"].as_str().unwrap();
                    assert_eq!(option["properties"][property]["const"], *tag, "{target}");
                }
            }
        }
    }

    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    let session = &schemes["session"];
    assert_eq!(
        (&session["type"], &session["in"], &session["name"]),
        (&json!("apiKey"), &json!("cookie"), &json!("custodia_session"))
    );
    assert_eq!((&schemes["token"]["type"], &schemes["token"]["scheme"]), (&json!("http"), &json!("bearer")));
    let mut operation_ids = BTreeSet::new();
    for (path, method, operation) in operations(&doc) {
        let here = format!("{} {path}", method.to_uppercase());
        let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{here} has no operationId"));
        assert!(operation_ids.insert(id), "{here}: operationId {id} is used twice");
        assert!(operation["summary"].is_string(), "{here} has no summary");

        // Every path template parameter is declared, at the path or the operation.
        let declared: Vec<Value> = doc["paths"][path]["parameters"]
            .as_array()
            .into_iter()
            .chain(operation["parameters"].as_array())
            .flatten()
            .map(|parameter| resolve(&doc, parameter).clone())
            .collect();
        for name in path.split('{').skip(1).filter_map(|rest| rest.split_once('}')).map(|(name, _)| name) {
            let found = declared.iter().any(|p| p["in"] == "path" && p["name"] == name && p["required"] == true);
            assert!(found, "{here}: path parameter {name} is not declared");
        }

        // Security names only defined schemes, and tokens only the three scopes.
        let security = operation.get("security").unwrap_or(&doc["security"]);
        for requirement in security.as_array().unwrap_or_else(|| panic!("{here}: security is not a list")) {
            for (scheme, scopes) in requirement.as_object().unwrap() {
                assert!(schemes.contains_key(scheme), "{here}: unknown security scheme {scheme}");
                for scope in scopes.as_array().unwrap() {
                    assert!(["read", "write", "manage"].contains(&scope.as_str().unwrap()), "{here}: scope {scope}");
                }
            }
        }

        // Every error is a problem.
        let responses = operation["responses"].as_object().unwrap_or_else(|| panic!("{here} has no responses"));
        // A WebSocket's success is 101 Switching Protocols.
        let success = |status: &String| status.starts_with('2') || status == "101";
        assert!(responses.keys().any(success), "{here} has no success response");
        for (status, response) in responses {
            let response = resolve(&doc, response);
            assert!(response["description"].is_string(), "{here} {status} has no description");
            if status.starts_with('4') || status.starts_with('5') {
                let content = response["content"].as_object().unwrap_or_else(|| panic!("{here} {status}: no body"));
                // c2sp.org/tlog-witness answers a stale old size with the witness's size, as text/x.tlog.size.
                if operation["operationId"] == "witnessAddCheckpoint" && status == "409" {
                    assert_eq!(content.keys().collect::<Vec<_>>(), ["text/x.tlog.size"], "{here} {status}");
                    continue;
                }
                assert_eq!(content.keys().collect::<Vec<_>>(), ["application/problem+json"], "{here} {status}");
                let schema = &content["application/problem+json"]["schema"];
                assert_eq!(schema["$ref"], "#/components/schemas/Problem", "{here} {status}");
            }
        }
    }
}

/// Problem types the source can produce: the kind in every `(StatusCode::X, "kind", ...)`, `(S::X, "kind", ...)`
/// or `(status, "kind", ...)` argument list, which is how `Problem::new` and `problem.rs` spell them.
fn problem_kinds_in_source() -> BTreeSet<String> {
    let mut kinds = BTreeSet::new();
    for (_, source) in server_sources() {
        for arguments in source.all_lists() {
            let [status, kind, ..] = arguments[..] else { continue };
            let is_status = status.starts_with("StatusCode::") || status.starts_with("S::") || status == "status";
            if let (true, Some(kind)) = (is_status, literal(kind)) {
                kinds.insert(kind.to_owned());
            }
        }
    }
    kinds
}

#[test]
fn the_problem_schema_lists_every_problem_type_and_no_other() {
    let doc = document();
    let problem = &doc["components"]["schemas"]["Problem"];
    assert_eq!(problem["required"], json!(["type", "title", "status", "detail"]));
    let documented: BTreeSet<String> = problem["properties"]["type"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|uri| uri.as_str().unwrap().strip_prefix(PROBLEM_PREFIX).unwrap_or_else(|| panic!("{uri}")).to_owned())
        .collect();
    let in_source = problem_kinds_in_source();
    for kind in ["unauthenticated", "role-forbidden", "digest-mismatch", "internal", "too-large"] {
        assert!(in_source.contains(kind), "the scan missed {kind}: {in_source:?}");
    }
    let undocumented: Vec<_> = in_source.difference(&documented).collect();
    let unused: Vec<_> = documented.difference(&in_source).collect();
    assert!(
        undocumented.is_empty() && unused.is_empty(),
        "undocumented: {undocumented:?}; documented but unused: {unused:?}"
    );
    let description = problem["description"].as_str().unwrap();
    for kind in &documented {
        assert!(description.contains(&format!("`{kind}`")), "the Problem description does not explain {kind}");
    }
}

// Schemas against the serde forms in custodia_core.

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    &doc["components"]["schemas"][name]
}

fn property_names(schema: &Value) -> BTreeSet<String> {
    schema["properties"].as_object().unwrap().keys().cloned().collect()
}

fn strings(value: &Value) -> BTreeSet<String> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

fn serde_names<T: serde::Serialize>(values: impl IntoIterator<Item = T>) -> BTreeSet<String> {
    values.into_iter().map(|value| serde_json::to_value(value).unwrap().as_str().unwrap().to_owned()).collect()
}

#[test]
fn policy_schemas_match_the_serde_forms() {
    let doc = document();
    let label = |text: &str| custodia_core::Label::new(text).unwrap();
    let actor = |text: &str| custodia_core::ActorId::new(text).unwrap();
    let consent = TransferConsent { recipient: actor("police-fr"), jurisdiction: label("FR") };
    let mut policy = UsePolicy::new(Tlp::AmberStrict, label("IT: Procura di Roma"), OnwardTransfer::WithConsent);
    policy.consented_transfers.push(consent.clone());
    policy.expires_at = Some("2027-06-30T00:00:00Z".parse().unwrap());
    let full = serde_json::to_value(&policy).unwrap();

    let use_policy = schema(&doc, "UsePolicy");
    assert_eq!(property_names(use_policy), full.as_object().unwrap().keys().cloned().collect());
    assert_eq!(use_policy["additionalProperties"], false, "UsePolicy refuses unknown fields");
    // Required: exactly the fields without a serde default. Check by removing each field in turn.
    let required = strings(&use_policy["required"]);
    for field in full.as_object().unwrap().keys() {
        let mut without = full.clone();
        without.as_object_mut().unwrap().remove(field);
        let parses = serde_json::from_value::<UsePolicy>(without).is_ok();
        assert_eq!(!parses, required.contains(field), "UsePolicy.{field}: required in serde is {}", !parses);
    }
    assert_eq!(use_policy["properties"]["expiry_warning_days"]["default"], UsePolicy::DEFAULT_EXPIRY_WARNING_DAYS);
    for (field, target) in [("tlp", "Tlp"), ("onward_transfer", "OnwardTransfer")] {
        assert_eq!(use_policy["properties"][field]["$ref"], format!("#/components/schemas/{target}"), "{field}");
    }
    assert_eq!(strings(&schema(&doc, "Tlp")["enum"]), serde_names(Tlp::ALL));
    assert!(schema(&doc, "Tlp")["enum"].as_array().unwrap().contains(&json!("TLP:AMBER+STRICT")));
    let onward = [OnwardTransfer::Prohibited, OnwardTransfer::WithConsent, OnwardTransfer::Permitted];
    assert_eq!(strings(&schema(&doc, "OnwardTransfer")["enum"]), serde_names(onward));
    for example in [full.clone(), use_policy["example"].clone()] {
        serde_json::from_value::<UsePolicy>(example.clone()).unwrap_or_else(|err| panic!("{err}: {example}"));
        assert_valid(&doc, use_policy, &example);
    }

    let transfer = schema(&doc, "TransferConsent");
    let consent = serde_json::to_value(&consent).unwrap();
    assert_eq!(property_names(transfer), consent.as_object().unwrap().keys().cloned().collect());
    assert_eq!(strings(&transfer["required"]), property_names(transfer));
    assert_eq!(transfer["additionalProperties"], false);

    let widen = schema(&doc, "WidenRequest");
    let empty = serde_json::to_value(WidenRequest::default()).unwrap();
    assert_eq!(property_names(widen), empty.as_object().unwrap().keys().cloned().collect());
    assert!(widen.get("required").is_none(), "every WidenRequest field has a serde default");
    assert!(serde_json::from_value::<WidenRequest>(json!({})).is_ok());
    assert_eq!(widen["additionalProperties"], false, "WidenRequest refuses unknown fields");
    serde_json::from_value::<WidenRequest>(widen["example"].clone()).unwrap();

    assert_eq!(strings(&schema(&doc, "Role")["enum"]), serde_names(Role::ALL));
    // A case's detail says what its caller may do, in the actions' spellings; a refusal record commits to the
    // action (in clear it would say the role) and says why by a code.
    assert_eq!(strings(&schema(&doc, "Action")["enum"]), serde_names(Action::ALL));
    assert_eq!(schema(&doc, "CaseDetail")["properties"]["may"]["items"]["$ref"], "#/components/schemas/Action");
    assert_eq!(schema(&doc, "AccessRefused")["properties"]["action"]["$ref"], "#/components/schemas/Commitment");
    assert_eq!(schema(&doc, "HearingEvent")["properties"]["subject"]["$ref"], "#/components/schemas/Commitment");
    assert_eq!(strings(&schema(&doc, "RefusalCode")["enum"]), serde_names(RefusalCode::ALL));
    use custodia_service::identity::Scope;
    assert_eq!(strings(&schema(&doc, "Scope")["enum"]), serde_names([Scope::Read, Scope::Write, Scope::Manage]));
}

/// `x-custodia-roles` on each operation is the set of roles `permits` allows its action, and `x-custodia-action`
/// names a real action.
#[test]
fn documented_roles_match_permits() {
    let doc = document();
    let mut actions_seen = BTreeSet::new();
    for (path, method, operation) in operations(&doc) {
        let Some(action) = operation.get("x-custodia-action") else { continue };
        let action: Action = action.as_str().unwrap().parse().unwrap();
        actions_seen.insert(action);
        let documented = strings(&operation["x-custodia-roles"]);
        let permitted = serde_names(Role::ALL.into_iter().filter(|role| permits(*role, action)));
        assert_eq!(documented, permitted, "{method} {path} ({action})");
        let provider_only = operation.get("x-custodia-provider-only") == Some(&json!(true));
        assert_eq!(provider_only, matches!(action, Action::SetPolicy | Action::DecideWiderUse), "{method} {path}");
    }
    // Every action is performed by some documented operation.
    assert_eq!(actions_seen, Action::ALL.into_iter().collect());
}

/// The document says every error is a problem; that holds for rejections by axum's own extractors too: a path
/// parameter that does not parse, a query string that does not deserialize.
#[tokio::test]
async fn extractor_rejections_are_problems_too() {
    let gateway = TestGateway::start().await;
    let admin = Some(As::Session(&gateway.admin));
    for uri in ["/api/v1/proofs/abc", "/api/v1/artefacts/art-1?purpose=a&purpose=b"] {
        let reply = gateway.get(uri, admin).await;
        assert!(
            reply.headers.get(header::CONTENT_TYPE).is_some_and(|v| v == "application/problem+json"),
            "GET {uri}: {} {:?} {}",
            reply.status,
            reply.headers.get(header::CONTENT_TYPE),
            String::from_utf8_lossy(&reply.body)
        );
        reply.assert_problem(400, "bad-input", "");
    }
    // A JSON body naming a member twice is refused (the last is not quietly taken), and nothing is made.
    let twice = r#"{"id":"case-9","title":"R v Nine","title":"R v Other"}"#;
    let json = [("content-type", "application/json")];
    let reply = gateway.send_bytes("POST", "/api/v1/cases", admin, &json, twice).await;
    reply.assert_problem(400, "bad-input", "two members named `title`");
    let once = r#"{"id":"case-9","title":"R v Nine"}"#;
    let reply = gateway.send_bytes("POST", "/api/v1/cases", admin, &json, once).await;
    assert_eq!(reply.status, 201, "the refused body made the case: {}", String::from_utf8_lossy(&reply.body));
}

// Real replies against the document.

/// Checks `instance` against `schema`, for the JSON Schema keywords the document uses (formats and patterns are
/// not checked). Returns what does not match.
fn validate(doc: &Value, schema: &Value, instance: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        validate(doc, lookup(doc, reference), instance, at, errors);
    }
    if let Some(expected) = schema.get("const")
        && expected != instance
    {
        errors.push(format!("{at}: {instance} is not {expected}"));
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(instance)
    {
        errors.push(format!("{at}: {instance} is not one of {options:?}"));
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(one) => vec![one.as_str()],
            many => many.as_array().unwrap().iter().filter_map(Value::as_str).collect(),
        };
        let is = |kind: &str| match kind {
            "object" => instance.is_object(),
            "array" => instance.is_array(),
            "string" => instance.is_string(),
            "integer" => instance.is_i64() || instance.is_u64(),
            "number" => instance.is_number(),
            "boolean" => instance.is_boolean(),
            "null" => instance.is_null(),
            other => panic!("unknown type {other}"),
        };
        if !types.iter().any(|kind| is(kind)) {
            errors.push(format!("{at}: {instance} is not of type {types:?}"));
            return;
        }
    }
    for (keyword, want_one) in [("oneOf", true), ("anyOf", false)] {
        if let Some(options) = schema.get(keyword).and_then(Value::as_array) {
            let matching = options.iter().filter(|option| is_valid(doc, option, instance)).count();
            if (want_one && matching != 1) || matching == 0 {
                errors.push(format!("{at}: {instance} matches {matching} of {keyword}"));
            }
        }
    }
    for option in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        validate(doc, option, instance, at, errors);
    }
    if let Some(number) = instance.as_f64() {
        if schema.get("minimum").and_then(Value::as_f64).is_some_and(|min| number < min) {
            errors.push(format!("{at}: {number} is below the minimum"));
        }
        if schema.get("maximum").and_then(Value::as_f64).is_some_and(|max| number > max) {
            errors.push(format!("{at}: {number} is above the maximum"));
        }
    }
    if let Some(text) = instance.as_str() {
        let length = text.chars().count() as u64;
        if schema.get("minLength").and_then(Value::as_u64).is_some_and(|min| length < min)
            || schema.get("maxLength").and_then(Value::as_u64).is_some_and(|max| length > max)
        {
            errors.push(format!("{at}: {instance} has the wrong length"));
        }
    }
    if let Some(items) = instance.as_array() {
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate(doc, item_schema, item, &format!("{at}[{i}]"), errors);
            }
        }
        if schema.get("minItems").and_then(Value::as_u64).is_some_and(|min| (items.len() as u64) < min) {
            errors.push(format!("{at}: too few items"));
        }
    }
    if let Some(object) = instance.as_object() {
        for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            if !object.contains_key(name.as_str().unwrap()) {
                errors.push(format!("{at}: {name} is missing"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, value) in object {
            match properties.and_then(|properties| properties.get(name)) {
                Some(property) => validate(doc, property, value, &format!("{at}.{name}"), errors),
                None if schema.get("additionalProperties") == Some(&json!(false)) => {
                    errors.push(format!("{at}: {name} is not a documented property"));
                }
                None => {}
            }
        }
    }
}

fn is_valid(doc: &Value, schema: &Value, instance: &Value) -> bool {
    let mut errors = Vec::new();
    validate(doc, schema, instance, "", &mut errors);
    errors.is_empty()
}

fn assert_valid(doc: &Value, schema: &Value, instance: &Value) {
    let mut errors = Vec::new();
    validate(doc, schema, instance, "$", &mut errors);
    assert!(errors.is_empty(), "{instance}\ndoes not match its schema:\n{}", errors.join("\n"));
}

#[test]
fn the_validator_catches_mismatches() {
    let doc = document();
    let policy = schema(&doc, "UsePolicy");
    let good = policy["example"].clone();
    assert!(is_valid(&doc, policy, &good));
    for (field, value) in [("tlp", json!("TLP:WHITE")), ("onward_transfer", json!("allowed")), ("extra", json!(1))] {
        let mut bad = good.clone();
        bad[field] = value;
        assert!(!is_valid(&doc, policy, &bad), "{bad}");
    }
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("provider");
    assert!(!is_valid(&doc, policy, &missing));
    let event = schema(&doc, "CustodyEvent");
    let action = "ab".repeat(32);
    assert!(is_valid(&doc, event, &json!({ "type": "access_refused", "action": action, "code": "policy_tlp" })));
    assert!(!is_valid(&doc, event, &json!({ "type": "access_refused", "action": action })));
    assert!(!is_valid(&doc, event, &json!({ "type": "access_refused", "action": action, "reason": "no" })));
    let listing = "cd".repeat(32);
    let case = json!({ "type": "case_exported", "listing_sha256": listing, "artefacts": 2 });
    assert!(is_valid(&doc, event, &case));
    let mut hearing = case.clone();
    hearing["hearing"] = json!(action);
    assert!(is_valid(&doc, event, &hearing), "a hearing export's record");
    hearing["hearing"] = json!({ "id": "h-1" });
    assert!(!is_valid(&doc, event, &hearing), "a hearing that is not a commitment");
    let mut extra = case.clone();
    extra["hearing_id"] = json!("h-1");
    assert!(!is_valid(&doc, event, &extra), "a field the schema does not name");
}

/// A gateway whose replies are checked against the document: the status must be documented for the operation,
/// and a JSON body must match the documented schema for its content type.
struct Checked {
    gateway: TestGateway,
    doc: Value,
    seen: BTreeSet<(String, String, String)>,
}

impl Checked {
    fn check(&mut self, method: &str, template: &str, reply: Reply) -> Reply {
        let here = format!("{method} {template} -> {}", reply.status);
        let doc = &self.doc;
        let operation = &doc["paths"][template][method.to_lowercase()];
        assert!(operation.is_object(), "{here}: operation not documented");
        let response = &operation["responses"][reply.status.as_str()];
        assert!(response.is_object(), "{here}: status not documented ({})", String::from_utf8_lossy(&reply.body));
        let response = resolve(doc, response);
        if reply.body.is_empty() {
            assert!(method == "HEAD" || response.get("content").is_none(), "{here}: documented a body, sent none");
        } else {
            let content_type = reply.headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap()).unwrap_or_default();
            let media = content_type.split(';').next().unwrap().trim();
            let content =
                response["content"].as_object().unwrap_or_else(|| panic!("{here}: sent an undocumented body"));
            let described = content.get(content_type).or_else(|| content.get(media)).or_else(|| content.get("*/*"));
            let described = described.unwrap_or_else(|| panic!("{here}: {media} is not documented"));
            if media.ends_with("json") {
                let body: Value = serde_json::from_slice(&reply.body).unwrap();
                let mut errors = Vec::new();
                validate(doc, &described["schema"], &body, "$", &mut errors);
                assert!(errors.is_empty(), "{here}: {body}\ndoes not match:\n{}", errors.join("\n"));
            }
        }
        self.seen.insert((method.to_owned(), template.to_owned(), reply.status.as_str().to_owned()));
        reply
    }

    async fn call(&mut self, method: &str, template: &str, uri: &str, auth: Option<As<'_>>, body: Value) -> Reply {
        let reply = self.gateway.call(method, uri, auth, body).await;
        self.check(method, template, reply)
    }

    async fn get(&mut self, template: &str, uri: &str, auth: Option<As<'_>>) -> Reply {
        let reply = self.gateway.get(uri, auth).await;
        self.check("GET", template, reply)
    }

    async fn raw(
        &mut self,
        method: &str,
        template: &str,
        uri: &str,
        auth: Option<As<'_>>,
        headers: &[(&str, &str)],
        body: &'static str,
    ) -> Reply {
        let reply = self.gateway.send_bytes(method, uri, auth, headers, body).await;
        self.check(method, template, reply)
    }
}

/// Every budget's 429 is a documented answer of the operation it cuts off, with a `too-many` problem the document's
/// schema admits and a `Retry-After`. (The schemathesis test runs its gateway with the budgets lifted, so that its
/// runs do not depend on the machine's speed: these answers are checked here instead, one per budget.)
#[tokio::test]
async fn budget_refusals_match_the_document() {
    let gateway = TestGateway::start_with(|config| {
        config.quotas.console_steps_per_minute = 1;
        config.quotas.uploads_per_minute = 1;
        // Two: the administrator's two changes of membership below are custody records too.
        config.quotas.custody_records_per_minute = 2;
        config.quotas.refusal_records_per_minute = 1;
    })
    .await;
    gateway.case("case-1").await;
    let (clerk, clerk_session) = gateway.person("clerk", "IT").await;
    gateway.member("case-1", &clerk, "clerk").await;
    let (witness, witness_session) = gateway.person("witness", "NG").await;
    gateway.member("case-1", &witness, "witness").await;
    let mut api = Checked { gateway, doc: document(), seen: BTreeSet::new() };
    let (clerk, witness) = (Some(As::Session(&clerk_session)), Some(As::Session(&witness_session)));
    // A budget of one or two a minute lets a step or two through (the burst), then answers 429 until it comes back.
    fn cut_off(replies: &[Reply]) {
        let last = replies.last().unwrap();
        last.assert_problem(429, "too-many", "");
        let wait = last.headers[header::RETRY_AFTER].to_str().unwrap().parse::<u64>().unwrap();
        assert!((1..=60).contains(&wait), "Retry-After: {wait}");
        assert!(replies.len() <= 3, "{} steps before the budget cut them off", replies.len());
    }
    // The step, again until it is cut off (four times at most); its replies.
    macro_rules! until_cut_off {
        ($step:expr) => {{
            let mut replies: Vec<Reply> = Vec::new();
            while replies.len() < 4 && replies.last().is_none_or(|reply| reply.status != 429) {
                replies.push($step.await);
            }
            cut_off(&replies);
            replies
        }};
    }

    // Console steps.
    let hearings = "/api/v1/cases/{case}/hearings";
    let schedule = json!({"scheduled_for": "2026-12-01T09:00:00Z", "place": "Aula 2"});
    until_cut_off!(api.call("POST", hearings, "/api/v1/cases/case-1/hearings", clerk, schedule.clone()));
    // New uploads.
    let artefacts = "/api/v1/cases/{case}/artefacts";
    let uri = "/api/v1/cases/case-1/artefacts?purpose=intake&filename=note.txt";
    let replies = until_cut_off!(api.raw("POST", artefacts, uri, clerk, &[("content-type", "text/plain")], "a note"));
    let artefact = replies[0].json()["artefact"].as_str().unwrap().to_owned();
    // Custody records of an account's steps: each download is one.
    let content = format!("/api/v1/artefacts/{artefact}/content?purpose=review");
    until_cut_off!(api.get("/api/v1/artefacts/{id}/content", &content, clerk));
    // Records of refusals: a witness may neither list the case's evidence nor its members. The same refusal again
    // is counted into its first record (and answered 403 again); another takes from the budget.
    let refused = api.get(artefacts, "/api/v1/cases/case-1/artefacts", witness).await;
    refused.assert_problem(403, "role-forbidden", "");
    let again = api.get(artefacts, "/api/v1/cases/case-1/artefacts", witness).await;
    again.assert_problem(403, "role-forbidden", "");
    let another = api.get("/api/v1/cases/{case}/members", "/api/v1/cases/case-1/members", witness).await;
    cut_off(&[refused, again, another]);
}

fn api_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A transfer's offer from `partner` (whose log is `log`, whose requests `key` signs) to `recipient`: its
/// SubmissionAcceptance of `payload`, logged as the only entry of the partner's log, with its inclusion proof.
fn partner_offer(
    log: &custodia_ledger::LogSigner,
    key: &ed25519_dalek::SigningKey,
    recipient: &str,
    transfer: &str,
    payload: &[u8],
) -> Value {
    use custodia_partners::evidence::{DIGEST_ALGORITHM, EVIDENCE_TYPE, Evidence, EvidenceEvent};
    let b64 = base64::engine::general_purpose::STANDARD;
    let sha256 = custodia_core::Sha256::of(payload);
    let evidence = Evidence {
        kind: EVIDENCE_TYPE.into(),
        event: EvidenceEvent::SubmissionAcceptance,
        time: "2026-12-04T10:00:00Z".into(),
        issuer: "partner-gw".into(),
        sender: "partner-gw".into(),
        recipient: recipient.into(),
        transfer: transfer.into(),
        payload_digest: sha256,
        digest_algorithm: DIGEST_ALGORITHM.into(),
        previous: None,
        reason: None,
    };
    let signed = evidence.sign(key).unwrap();
    let mut openings = custodia_core::Openings::default();
    let salt = |byte| custodia_core::Salt::from_bytes([byte; 32]);
    let case = openings.commit("case", salt(1), "tn-1");
    let purpose = openings.commit("purpose", salt(2), "trial");
    let committed = openings.commit("evidence", salt(3), signed.sha256().to_hex());
    let event = custodia_core::CustodyEvent::TransferEvidence {
        artefact: None,
        rung: custodia_core::Label::new("SubmissionAcceptance").unwrap(),
        evidence: committed,
    };
    let actor = custodia_core::ActorId::new("acct-partner").unwrap();
    let record =
        custodia_core::CustodyRecord::new(case, actor, "2026-12-04T10:00:00Z".parse().unwrap(), purpose, event);
    let entry = record.to_entry().unwrap();
    let checkpoint = custodia_ledger::Checkpoint::new(log.name(), 1, custodia_ledger::merkle::leaf_hash(&entry));
    let note = log.sign(&checkpoint).unwrap().note().to_vec();
    let proof = custodia_ledger::TlogProof { extra: None, index: 0, path: vec![], checkpoint_note: note }.to_bytes();
    // A bundle's head: one file, then the payload's header (what the receiving gateway reads before any chunk).
    let mut head = Vec::new();
    for (path, bytes) in [
        ("custodia-bundle-art-1/bagit.txt", &b"BagIt-Version: 1.0\n"[..]),
        ("custodia-bundle-art-1/data/payload/art-1", payload),
    ] {
        let mut header = tar::Header::new_ustar();
        header.set_path(path).unwrap();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        head.extend_from_slice(header.as_bytes());
        if !path.contains("payload") {
            head.extend_from_slice(bytes);
            head.resize(head.len().next_multiple_of(512), 0);
        }
    }
    json!({
        "transfer": transfer, "size": payload.len(), "sha256": sha256.to_hex(), "chunk_size": payload.len(),
        "chain": b64.encode(&head),
        "submission": {
            "evidence": b64.encode(signed.bytes()), "signature": b64.encode(signed.signature()),
            "entry": b64.encode(&entry), "openings": String::from_utf8(openings.to_canonical()).unwrap(),
            "proof": b64.encode(proof),
        },
        "purpose": "trial",
    })
}

#[tokio::test]
async fn real_replies_match_the_document() {
    // The gateway witnesses one partner log, so that the witness's routes answer too.
    let partner = custodia_ledger::LogSigner::generate("partner.custodia.test/log").unwrap();
    let witnessed = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(witnessed.path(), format!("log {}\n", partner.verifier())).unwrap();
    // And pins one partner gateway, so that a signed partner request is answered.
    let partner_key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let partner_card = json!({
        "name": "partner-gw", "jurisdiction": "TN", "base_url": "http://127.0.0.1:9",
        "log_vkey": partner.verifier().to_string(), "witness_vkey": partner.verifier().to_string(),
        "request_key": base64::engine::general_purpose::STANDARD.encode(partner_key.verifying_key().as_bytes()),
    });
    let registry = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(registry.path(), json!({ "partners": [&partner_card] }).to_string()).unwrap();
    let gateway = TestGateway::start_with(|config| {
        config.witness.logs_file = Some(witnessed.path().to_path_buf());
        config.partners.registry_file = Some(registry.path().to_path_buf());
    })
    .await;
    let mut api = Checked { gateway, doc: document(), seen: BTreeSet::new() };
    let admin = api.gateway.admin.clone();
    let admin = Some(As::Session(&admin));

    let account = json!({ "username": "pm.rossi", "display_name": "PM Rossi", "password": "correct-horse-battery", "jurisdiction": "IT" });
    let reply = api.call("POST", "/api/v1/accounts", "/api/v1/accounts", admin, account.clone()).await;
    let prosecutor = reply.json()["id"].as_str().unwrap().to_owned();
    api.call("POST", "/api/v1/accounts", "/api/v1/accounts", admin, account).await.assert_problem(409, "conflict", "");
    let body = json!({ "username": "pm.rossi", "password": "correct-horse-battery" });
    let reply = api.call("POST", "/api/v1/session", "/api/v1/session", None, body).await;
    let cookie = reply.headers[header::SET_COOKIE].to_str().unwrap();
    let session = cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned();
    let pm = Some(As::Session(&session));
    let body = json!({ "username": "pm.rossi", "password": "wrong-password" });
    api.call("POST", "/api/v1/session", "/api/v1/session", None, body).await.assert_problem(401, "bad-credentials", "");
    api.get("/api/v1/me", "/api/v1/me", pm).await;
    api.get("/api/v1/me", "/api/v1/me", None).await;
    // STUN/TURN servers are for people in a hearing (below), not for any signed-in account.
    api.get("/api/v1/ice-servers", "/api/v1/ice-servers", pm).await.assert_problem(401, "unauthenticated", "");
    api.get("/api/v1/ice-servers", "/api/v1/ice-servers", None).await.assert_problem(401, "unauthenticated", "");
    let key = api.get("/api/v1/verifier-key", "/api/v1/verifier-key", None).await.json();
    assert_eq!(key["vkey"], api.gateway.verifier().to_string());

    api.call("POST", "/api/v1/cases", "/api/v1/cases", admin, json!({ "id": "case-7", "title": "R v Seven" })).await;
    api.call("POST", "/api/v1/cases", "/api/v1/cases", pm, json!({ "title": "R v Eight" })).await;
    let members = "/api/v1/cases/{case}/members/{account}";
    api.call(
        "PUT",
        members,
        &format!("/api/v1/cases/case-7/members/{prosecutor}"),
        admin,
        json!({ "role": "prosecutor" }),
    )
    .await;
    api.get("/api/v1/cases", "/api/v1/cases", pm).await;
    api.get("/api/v1/cases/{case}", "/api/v1/cases/case-7", pm).await;
    api.get("/api/v1/cases/{case}", "/api/v1/cases/case-ghost", pm).await;

    let token = api
        .call("POST", "/api/v1/tokens", "/api/v1/tokens", pm, json!({ "scopes": ["read"], "expires_in_seconds": 600 }))
        .await;
    let (token_id, secret) =
        (token.json()["id"].as_str().unwrap().to_owned(), token.json()["token"].as_str().unwrap().to_owned());

    let artefacts = "/api/v1/cases/{case}/artefacts";
    let uri = "/api/v1/cases/case-7/artefacts?purpose=intake&filename=clip.webm";
    let sha = custodia_core::Sha256::of(b"0123456789").to_hex();
    let reply = api
        .raw("POST", artefacts, &format!("{uri}&sha256={sha}"), pm, &[("content-type", "video/webm")], "0123456789")
        .await;
    let artefact = reply.json()["artefact"].as_str().unwrap().to_owned();
    let wrong = format!("{uri}&sha256={}", "0".repeat(64));
    api.raw("POST", artefacts, &wrong, pm, &[], "0123456789").await.assert_problem(422, "digest-mismatch", "");
    api.raw("POST", artefacts, uri, Some(As::Token(&secret)), &[], "0123456789").await;
    let reply = api.raw("POST", artefacts, uri, pm, &[], "another").await;
    let unrestricted = reply.json()["artefact"].as_str().unwrap().to_owned();
    api.get(artefacts, "/api/v1/cases/case-7/artefacts", pm).await;
    let case_export = "/api/v1/cases/{case}/exports";
    let reply = api.raw("POST", case_export, "/api/v1/cases/case-7/exports?purpose=trial", pm, &[], "").await;
    assert_eq!(reply.status, 200);

    let detail = "/api/v1/artefacts/{id}";
    api.get(detail, &format!("/api/v1/artefacts/{artefact}?purpose=review"), pm).await;
    api.get(detail, &format!("/api/v1/artefacts/{artefact}"), pm).await;
    let policy = json!({
        "tlp": "TLP:RED", "provider": "IT: Procura di Roma", "permitted_purposes": [], "permitted_recipients": [],
        "permitted_jurisdictions": [], "onward_transfer": "with_consent", "expires_at": "2099-01-01T00:00:00Z"
    });
    let policy_uri = format!("/api/v1/artefacts/{artefact}/policy");
    api.call("PUT", "/api/v1/artefacts/{id}/policy", &policy_uri, pm, policy).await;
    api.call("PUT", "/api/v1/artefacts/{id}/policy", &policy_uri, pm, json!({ "tlp": "TLP:RED" })).await;
    api.raw("PUT", "/api/v1/artefacts/{id}/policy", &policy_uri, pm, &[("content-type", "text/plain")], "{}").await;
    api.get(detail, &format!("/api/v1/artefacts/{artefact}?purpose=review"), pm).await;
    let reply = api.raw("POST", case_export, "/api/v1/cases/case-7/exports?purpose=trial", pm, &[], "").await;
    reply.assert_problem(403, "use-restricted", &artefact);
    let export = "/api/v1/artefacts/{id}/exports";
    let uri = format!("/api/v1/artefacts/{artefact}/exports?purpose=trial");
    api.raw("POST", export, &uri, pm, &[], "").await.assert_problem(403, "use-restricted", "TLP:RED");
    let uri = format!("/api/v1/artefacts/{unrestricted}/exports?purpose=trial");
    assert_eq!(api.raw("POST", export, &uri, pm, &[], "").await.status, 200);

    let content = "/api/v1/artefacts/{id}/content";
    api.get(content, &format!("/api/v1/artefacts/{artefact}/content?purpose=review"), pm).await;
    // Playing TLP:RED is a download too: refused.
    let uri = format!("/api/v1/artefacts/{artefact}/content?purpose=review&access=play");
    api.get(content, &uri, pm).await.assert_problem(403, "use-restricted", "TLP:RED");
    let ranged = |range: &'static str| {
        let uri = format!("/api/v1/artefacts/{unrestricted}/content?purpose=review&access=play");
        TestGateway::request("GET", &uri, pm).header(header::RANGE, range).body(Default::default()).unwrap()
    };
    let reply = api.gateway.send(ranged("bytes=0-3")).await;
    api.check("GET", content, reply);
    let reply = api.gateway.send(ranged("bytes=50-60")).await;
    api.check("GET", content, reply);
    api.get("/api/v1/artefacts/{id}/timeline", &format!("/api/v1/artefacts/{artefact}/timeline"), pm).await;

    let widen = "/api/v1/artefacts/{id}/widen-requests";
    let widen_uri = format!("/api/v1/artefacts/{artefact}/widen-requests");
    let transfer = json!({ "transfers": [{ "recipient": "police-fr", "jurisdiction": "FR" }] });
    let request = api.call("POST", widen, &widen_uri, pm, transfer).await.json()["id"].as_str().unwrap().to_owned();
    api.get(widen, &widen_uri, pm).await;
    let decision = "/api/v1/widen-requests/{id}/decision";
    let decision_uri = format!("/api/v1/widen-requests/{request}/decision");
    api.call("POST", decision, &decision_uri, pm, json!({ "approve": true })).await;
    api.call("POST", decision, &decision_uri, pm, json!({ "approve": true })).await;
    // The timeline now holds every kind of artefact record the API makes, the request for wider use included.
    let timeline =
        api.get("/api/v1/artefacts/{id}/timeline", &format!("/api/v1/artefacts/{artefact}/timeline"), pm).await;
    let kinds: BTreeSet<String> = timeline.json()["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["record"]["event"]["type"].as_str().unwrap().to_owned())
        .collect();
    assert!(kinds.contains("wider_use_requested") && kinds.contains("policy_changed"), "{kinds:?}");

    let outcomes = "/api/v1/artefacts/{id}/outcomes";
    let outcomes_uri = format!("/api/v1/artefacts/{artefact}/outcomes");
    api.call("POST", outcomes, &outcomes_uri, pm, json!({ "outcome": "charges_brought", "note": "count 2" })).await;
    api.call("POST", outcomes, &outcomes_uri, pm, json!({ "outcome": "charges_brought" })).await;
    api.get(outcomes, &outcomes_uri, Some(As::Token(&secret))).await;
    api.call("POST", outcomes, &outcomes_uri, Some(As::Token(&secret)), json!({ "outcome": "other" })).await;
    let huge = json!({ "outcome": "other", "note": "x".repeat(70_000) });
    api.call("POST", outcomes, &outcomes_uri, pm, huge).await;

    api.get("/api/v1/proofs/{index}", "/api/v1/proofs/0", None).await;
    api.get("/api/v1/proofs/{index}", "/api/v1/proofs/999999", None).await;
    let checkpoint = api.get("/log/checkpoint", "/log/checkpoint", None).await;
    let size: u64 = String::from_utf8(checkpoint.body).unwrap().lines().nth(1).unwrap().parse().unwrap();
    assert!(size < 256, "{size} entries: the latest entry bundle is a partial one");
    api.get("/log/{path}", &format!("/log/tile/entries/000.p/{size}"), None).await;
    api.get("/log/{path}", "/log/keys/gateway.key", None).await;
    api.get("/healthz", "/healthz", None).await;
    api.get("/readyz", "/readyz", None).await;
    api.get("/readyz/hearings", "/readyz/hearings", None).await;
    api.get("/readyz/transfers", "/readyz/transfers", None).await;
    // /metrics is on the metrics listener's router, never the API's.
    let request = axum::http::Request::get("/metrics").body(axum::body::Body::empty()).unwrap();
    let scraped = tower::ServiceExt::oneshot(custodia_server::metrics::router(api.gateway.state.clone()), request);
    let scraped = scraped.await.unwrap();
    let (status, headers) = (scraped.status(), scraped.headers().clone());
    let body = http_body_util::BodyExt::collect(scraped.into_body()).await.unwrap().to_bytes().to_vec();
    api.check("GET", "/metrics", Reply { status, headers, body });
    api.get("/api/openapi.json", "/api/openapi.json", None).await;

    // Resumable uploads: discovery, a refusal for want of the protocol header, one whole upload, one abandoned.
    let reply = api.gateway.send_bytes("OPTIONS", "/api/v1/uploads", None, &[], "").await;
    api.check("OPTIONS", "/api/v1/uploads", reply);
    api.raw("POST", "/api/v1/uploads", "/api/v1/uploads", pm, &[], "").await.assert_problem(412, "tus-version", "");
    let metadata = {
        use base64::Engine as _;
        let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        format!("case {},purpose {}", encode("case-7"), encode("intake"))
    };
    let tus = [("tus-resumable", "1.0.0"), ("upload-length", "4"), ("upload-metadata", metadata.as_str())];
    let mut uploads = Vec::new();
    for _ in 0..2 {
        let reply = api.raw("POST", "/api/v1/uploads", "/api/v1/uploads", pm, &tus, "").await;
        assert_eq!(reply.status, 201);
        uploads.push(reply.headers[header::LOCATION].to_str().unwrap().to_owned());
    }
    let upload = "/api/v1/uploads/{id}";
    let reply = api.gateway.send_bytes("HEAD", &uploads[0], pm, &tus[..1], "").await;
    assert_eq!(api.check("HEAD", upload, reply).headers["upload-offset"], "0");
    let chunk = |offset| {
        [("tus-resumable", "1.0.0"), ("content-type", "application/offset+octet-stream"), ("upload-offset", offset)]
    };
    api.raw("PATCH", upload, &uploads[0], pm, &chunk("2"), "abcd").await.assert_problem(409, "offset-mismatch", "");
    let reply = api.raw("PATCH", upload, &uploads[0], pm, &chunk("0"), "abcd").await;
    assert!(reply.headers.contains_key("custodia-artefact"), "{:?}", reply.headers);
    api.raw("POST", upload, &uploads[1], pm, &tus[..1], "").await.assert_problem(405, "method-not-allowed", "");
    api.raw("DELETE", upload, &uploads[1], pm, &tus[..1], "").await;

    // Hearings: only a clerk schedules; the room is a WebSocket (tests/hearing.rs has it with real peers).
    let clerk = json!({ "username": "clerk.bianchi", "display_name": "Clerk", "password": "correct-horse-battery", "jurisdiction": "IT" });
    let reply = api.call("POST", "/api/v1/accounts", "/api/v1/accounts", admin, clerk).await;
    let clerk_id = reply.json()["id"].as_str().unwrap().to_owned();
    let uri = format!("/api/v1/cases/case-7/members/{clerk_id}");
    api.call("PUT", members, &uri, admin, json!({ "role": "clerk" })).await;
    let clerk_session = api.gateway.sign_in("clerk.bianchi", "correct-horse-battery").await;
    let clerk = Some(As::Session(&clerk_session));
    let judge = json!({ "username": "judge.rossi", "display_name": "Judge", "password": "correct-horse-battery", "jurisdiction": "IT" });
    let reply = api.call("POST", "/api/v1/accounts", "/api/v1/accounts", admin, judge).await;
    let uri = format!("/api/v1/cases/case-7/members/{}", reply.json()["id"].as_str().unwrap());
    api.call("PUT", members, &uri, admin, json!({ "role": "judge" })).await;
    let judge_session = api.gateway.sign_in("judge.rossi", "correct-horse-battery").await;
    // The judge corrects a policy; a prosecutor may not, nor the clerk: overriding a restriction is judicial.
    let correction = "/api/v1/artefacts/{id}/policy/correction";
    let uri = format!("/api/v1/artefacts/{artefact}/policy/correction");
    let open = json!({
        "tlp": "TLP:GREEN", "provider": "the court", "permitted_purposes": [], "permitted_recipients": [],
        "permitted_jurisdictions": [], "onward_transfer": "permitted",
    });
    api.call("PUT", correction, &uri, pm, open.clone()).await.assert_problem(403, "role-forbidden", "");
    api.call("PUT", correction, &uri, clerk, open.clone()).await.assert_problem(403, "role-forbidden", "");
    assert_eq!(api.call("PUT", correction, &uri, Some(As::Session(&judge_session)), open).await.status, 200);
    let hearings = "/api/v1/cases/{case}/hearings";
    let new_hearing = json!({ "scheduled_for": "2026-12-01T09:00:00Z", "place": "Tribunale di Catania, aula 2" });
    let refused = api.call("POST", hearings, "/api/v1/cases/case-7/hearings", pm, new_hearing.clone()).await;
    refused.assert_problem(403, "role-forbidden", "");
    let reply = api.call("POST", hearings, "/api/v1/cases/case-7/hearings", clerk, new_hearing).await;
    let hearing = format!("/api/v1/cases/case-7/hearings/{}", reply.json()["id"].as_str().unwrap());
    api.get(hearings, "/api/v1/cases/case-7/hearings", pm).await;
    api.get("/api/v1/cases/{case}/hearings/{hearing}", &hearing, pm).await;
    let invites = "/api/v1/cases/{case}/hearings/{hearing}/invites";
    let reply = api.call("POST", invites, &format!("{hearing}/invites"), clerk, json!({ "role": "witness" })).await;
    let invite = reply.json()["invite"].as_str().unwrap().to_owned();
    let wrong = json!({ "role": "witness", "admit_on_join": true });
    api.call("POST", invites, &format!("{hearing}/invites"), clerk, wrong).await.assert_problem(409, "conflict", "");
    let reply = api.gateway.delete(&format!("{hearing}/invites/{invite}"), clerk).await;
    api.check("DELETE", "/api/v1/cases/{case}/hearings/{hearing}/invites/{invite}", reply);
    api.call("POST", "/api/v1/cases/{case}/hearings/{hearing}/open", &format!("{hearing}/open"), clerk, json!({}))
        .await;
    // A witness's protection is the judge's order, not the clerk's.
    let reply = api.call("POST", invites, &format!("{hearing}/invites"), clerk, json!({ "role": "witness" })).await;
    let protected = reply.json()["invite"].as_str().unwrap().to_owned();
    let protection = "/api/v1/cases/{case}/hearings/{hearing}/invites/{invite}/protection";
    let protection_uri = format!("{hearing}/invites/{protected}/protection");
    let order = json!({ "pseudonym": "Witness A", "mask_face": true, "alter_voice": true, "privileged": ["defence"] });
    let judge = Some(As::Session(&judge_session));
    api.call("PUT", protection, &protection_uri, clerk, order.clone()).await.assert_problem(403, "role-forbidden", "");
    let view = api.call("PUT", protection, &protection_uri, judge, order.clone()).await.json();
    let listed = view["invites"].as_array().unwrap().iter().find(|i| i["id"] == json!(protected)).unwrap().clone();
    assert_eq!(listed["protection"], order);
    api.call("PUT", protection, &protection_uri, judge, order).await.assert_problem(409, "conflict", "");
    let reply = api.gateway.delete(&protection_uri, judge).await;
    api.check("DELETE", protection, reply);
    // A WHIP publisher's invite secret is its credential: while the hearing lasts it gets STUN/TURN servers (none
    // are configured here; tests/turn.rs has them, with a real coturn), and not after.
    let reply = api.call("POST", invites, &format!("{hearing}/invites"), clerk, json!({ "role": "observer" })).await;
    let publisher = reply.json()["secret"].as_str().unwrap().to_owned();
    api.gateway.state.hearings.enter(&publisher, None, None).await.unwrap();
    let ice = "/api/v1/ice-servers";
    assert_eq!(api.get(ice, ice, Some(As::Token(&publisher))).await.json(), json!({ "ice_servers": [] }));
    // A hearing's bundle: none before its minutes are in custody, then one case bundle of its output.
    let hearing_export = "/api/v1/cases/{case}/hearings/{hearing}/exports";
    let export_uri = format!("{hearing}/exports?purpose=trial");
    api.raw("POST", hearing_export, &export_uri, pm, &[], "").await.assert_problem(409, "conflict", "minutes");
    let masked = "/api/v1/cases/{case}/hearings/{hearing}/masked-copies";
    let masked_uri = format!("{hearing}/masked-copies");
    api.call("POST", masked, &masked_uri, clerk, json!({})).await.assert_problem(409, "conflict", "minutes");
    let closed = "/api/v1/cases/{case}/hearings/{hearing}/close";
    assert_eq!(api.call("POST", closed, &format!("{hearing}/close"), clerk, json!({})).await.json()["phase"], "ended");
    for _ in 0..300 {
        if api.gateway.get(&hearing, pm).await.json()["minutes_artefact"].is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let exported = api.raw("POST", hearing_export, &export_uri, pm, &[], "").await;
    assert_eq!(exported.status, 200);
    // Nothing was recorded of its protected witness, so there is nothing to mask.
    assert_eq!(api.call("POST", masked, &masked_uri, clerk, json!({})).await.json(), json!({ "masked_copies": [] }));
    // The hearing export's own record, as the public log and the bundle hold it, matches its schema: its `hearing`
    // commitment included.
    let (path, start, size) = support::tar_files(&exported.body)
        .into_iter()
        .find(|(path, _, _)| {
            // The case bag's own record (each artefact bundle in it has its records too).
            path.split_once('/').is_some_and(|(_, path)| path.starts_with("data/custody/"))
                && path.ends_with(".json")
                && !path.ends_with(".opening.json")
        })
        .expect("the hearing bundle holds its case export record");
    let record: Value = serde_json::from_slice(&exported.body[start as usize..(start + size) as usize]).unwrap();
    assert_eq!(record["event"]["type"], "case_exported", "{path}: {record}");
    assert!(record["event"]["hearing"].is_string(), "{path}: {record}");
    assert_valid(&api.doc, schema(&api.doc, "CustodyRecord"), &record);
    api.get(ice, ice, Some(As::Token(&publisher))).await.assert_problem(401, "unauthenticated", "");

    // The administration page's lists: administrators only (and a case's members for whoever manages them).
    api.get("/api/v1/accounts", "/api/v1/accounts", admin).await;
    api.get("/api/v1/accounts", "/api/v1/accounts", pm).await.assert_problem(403, "admin-only", "");
    api.get("/api/v1/admin/cases", "/api/v1/admin/cases", admin).await;
    let pinned = api.get("/api/v1/admin/partners/pinned", "/api/v1/admin/partners/pinned", admin).await;
    assert_eq!(pinned.json().as_array().map(Vec::len), Some(1), "the registry pinning partner-gw");
    api.get("/api/v1/admin/cases", "/api/v1/admin/cases", None).await.assert_problem(401, "unauthenticated", "");
    let case_members = "/api/v1/cases/{case}/members";
    api.get(case_members, "/api/v1/cases/case-7/members", admin).await;
    api.get(case_members, "/api/v1/cases/case-7/members", clerk).await;
    api.get(case_members, "/api/v1/cases/case-7/members", pm).await.assert_problem(403, "role-forbidden", "");
    api.get(case_members, "/api/v1/cases/case-ghost/members", admin).await.assert_problem(404, "not-found", "");
    api.get("/api/v1/room", "/api/v1/room", None).await.assert_problem(426, "upgrade-required", "WebSocket");

    // Transfers: the partners one may send to; a prosecutor sends an artefact (the partner is unreachable, so it
    // stays sending in the background) and lists it.
    api.get("/api/v1/partners", "/api/v1/partners", pm).await;
    let transfers = "/api/v1/artefacts/{id}/transfers";
    let uri = format!("/api/v1/artefacts/{unrestricted}/transfers");
    let sent = api.call("POST", transfers, &uri, pm, json!({ "partner": "partner-gw", "purpose": "trial" })).await;
    assert_eq!(sent.status.as_u16(), 202, "{}", String::from_utf8_lossy(&sent.body));
    api.get(transfers, &uri, pm).await;
    let sent_id = sent.json()["id"].as_str().unwrap().to_owned();
    // And one from the partner: its SubmissionAcceptance, on a one-entry log of its own, offered; a chunk; the
    // progress; the end (a chunk that is no bundle: NonDelivery, nothing stored).
    let revoke = format!("/api/v1/tokens/{token_id}");
    for _ in 0..2 {
        let reply = api.gateway.delete(&revoke, pm).await;
        api.check("DELETE", "/api/v1/tokens/{id}", reply);
    }
    api.get("/api/v1/me", "/api/v1/me", Some(As::Token(&secret))).await.assert_problem(401, "token-revoked", "");
    let remove = format!("/api/v1/cases/case-7/members/{prosecutor}");
    let reply = api.gateway.delete(&remove, admin).await;
    api.check("DELETE", members, reply);
    let reply = api.gateway.delete("/api/v1/session", pm).await;
    api.check("DELETE", "/api/v1/session", reply);

    let spare = json!({ "username": "spare", "display_name": "Spare", "password": "correct-horse-battery", "jurisdiction": "IT" });
    let reply = api.call("POST", "/api/v1/accounts", "/api/v1/accounts", admin, spare).await;
    let spare = reply.json()["id"].as_str().unwrap().to_owned();
    let disable = format!("/api/v1/accounts/{spare}/disable");
    let reply = api.call("POST", "/api/v1/accounts/{id}/disable", &disable, admin, json!({})).await;
    assert_eq!(reply.status.as_u16(), 204, "{}", String::from_utf8_lossy(&reply.body));

    // The witness: a partner's first checkpoint is cosigned; the same request again is a 409 with the size; a log
    // it does not witness is a 404.
    let add = "/witness/add-checkpoint";
    let empty = custodia_ledger::Checkpoint::new("partner.custodia.test/log", 0, custodia_ledger::merkle::empty_root());
    let first = format!("old 0\n\n{}", String::from_utf8(partner.sign(&empty).unwrap().note().to_vec()).unwrap());
    let first: &'static str = Box::leak(first.into_boxed_str());
    let reply = api.raw("POST", add, add, None, &[("content-type", "text/plain")], first).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", String::from_utf8_lossy(&reply.body));
    let bigger =
        custodia_ledger::Checkpoint::new("partner.custodia.test/log", 1, custodia_ledger::merkle::leaf_hash(b"one"));
    let stale = format!("old 1\n\n{}", String::from_utf8(partner.sign(&bigger).unwrap().note().to_vec()).unwrap());
    let reply =
        api.raw("POST", add, add, None, &[("content-type", "text/plain")], Box::leak(stale.into_boxed_str())).await;
    assert_eq!((reply.status.as_u16(), reply.body.as_slice()), (409, &b"0\n"[..]));
    let stranger = custodia_ledger::LogSigner::generate("stranger.custodia.test/log").unwrap();
    let unknown =
        custodia_ledger::Checkpoint::new("stranger.custodia.test/log", 0, custodia_ledger::merkle::empty_root());
    let unknown = format!("old 0\n\n{}", String::from_utf8(stranger.sign(&unknown).unwrap().note().to_vec()).unwrap());
    api.raw("POST", add, add, None, &[("content-type", "text/plain")], Box::leak(unknown.into_boxed_str()))
        .await
        .assert_problem(404, "checkpoint-refused", "does not witness");
    let report = api.get("/witness/logs", "/witness/logs", None).await.json();
    assert_eq!(report["logs"][0]["size"], 0);
    assert!(
        report["logs"][0]["cosigned_checkpoint"].as_str().unwrap().contains("\u{2014} custodia.localhost/witness ")
    );
    // No witness policy here: nothing is collected, and the checkpoint is published as the log signed it.
    let collected = api.get("/witness/cosignatures", "/witness/cosignatures", None).await.json();
    assert_eq!((&collected["collecting"], &collected["witnesses"]), (&json!(false), &json!([])));

    // Partner gateways: the card is public; a handshake is answered only when signed by a pinned partner.
    let card = api.get("/partner/v1/card", "/partner/v1/card", None).await.json();
    assert_eq!(card["log_vkey"], api.gateway.verifier().to_string());
    let handshake = "/partner/v1/handshake";
    let body: &'static str = Box::leak(partner_card.to_string().into_boxed_str());
    let now = api.gateway.clock.unix_seconds();
    let sha256 = custodia_core::Sha256::of(body.as_bytes());
    let signed =
        custodia_partners::request::sign("POST", handshake, &sha256, &partner_key, "partner-gw", "nonce-1".into(), now);
    let mut headers: Vec<(&str, &str)> = signed.iter().map(|(name, value)| (*name, value.as_str())).collect();
    headers.push(("content-type", "application/json"));
    let reply = api.raw("POST", handshake, handshake, None, &headers, body).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", String::from_utf8_lossy(&reply.body));
    api.raw("POST", handshake, handshake, None, &headers, body).await.assert_problem(
        401,
        "partner-unauthenticated",
        "replay",
    );

    let junk: &'static str = "not a bag!";
    let transfer = format!("xfer-{}", "ab".repeat(16));
    let offer = partner_offer(&partner, &partner_key, card["name"].as_str().unwrap(), &transfer, junk.as_bytes());
    let offer: &'static str = Box::leak(offer.to_string().into_boxed_str());
    let mut nonce = 0;
    let mut signed_by_partner = |method: &str, path: &str, body: &str| {
        nonce += 1;
        let sha256 = custodia_core::Sha256::of(body.as_bytes());
        let at = api_now();
        let headers = custodia_partners::request::sign(
            method,
            path,
            &sha256,
            &partner_key,
            "partner-gw",
            format!("transfer-{nonce}"),
            at,
        );
        headers
            .into_iter()
            .map(|(name, value)| (name, &*Box::leak(value.into_boxed_str())))
            .collect::<Vec<(&str, &str)>>()
    };
    let path = "/partner/v1/transfers";
    let headers = signed_by_partner("POST", path, offer);
    let reply = api.raw("POST", path, path, None, &headers, offer).await;
    assert_eq!(reply.status.as_u16(), 200, "{}", String::from_utf8_lossy(&reply.body));
    let chunk = format!("/partner/v1/transfers/{transfer}/chunks/0");
    let headers = signed_by_partner("PUT", &chunk, junk);
    let reply = api.raw("PUT", "/partner/v1/transfers/{id}/chunks/{offset}", &chunk, None, &headers, junk).await;
    assert_eq!(reply.json()["received"], junk.len(), "{}", String::from_utf8_lossy(&reply.body));
    let one = format!("/partner/v1/transfers/{transfer}");
    let headers = signed_by_partner("GET", &one, "");
    api.raw("GET", "/partner/v1/transfers/{id}", &one, None, &headers, "").await;
    // The partner reports what the evidence sent to it achieved.
    let outcomes = format!("/partner/v1/transfers/{sent_id}/outcomes");
    let report: &'static str = r#"{"id":"out-0123456789abcdef01234567","outcome":"used_at_hearing"}"#;
    let headers = signed_by_partner("POST", &outcomes, report);
    let reply = api.raw("POST", "/partner/v1/transfers/{id}/outcomes", &outcomes, None, &headers, report).await;
    assert_eq!(reply.status.as_u16(), 204, "{}", String::from_utf8_lossy(&reply.body));
    let complete = format!("/partner/v1/transfers/{transfer}/complete");
    let headers = signed_by_partner("POST", &complete, "");
    let reply = api.raw("POST", "/partner/v1/transfers/{id}/complete", &complete, None, &headers, "").await;
    let progress = reply.json();
    assert_eq!(progress["stage"], "failed", "{progress}");
    assert_eq!(progress["evidences"].as_array().unwrap().len(), 3, "{progress}");

    // Every documented operation succeeded at least once here, but the tus method override (tests/tus.rs has it),
    // WHIP, which needs a WebRTC peer (tests/hearing.rs, tests/turn.rs), the hearing room's WebSocket
    // (tests/hearing.rs), and wider use across the border (tests/transfers.rs).
    let succeeded: BTreeSet<(&str, &str)> = api
        .seen
        .iter()
        .filter(|(_, _, status)| status.starts_with('2'))
        .map(|(m, t, _)| (m.as_str(), t.as_str()))
        .collect();
    let missing: Vec<String> = operations(&api.doc)
        .into_iter()
        .filter(|(path, method, _)| (*path, *method) != ("/api/v1/uploads/{id}", "post"))
        .filter(|(path, _, _)| !path.contains("/whip") && *path != "/api/v1/room")
        // Requests to widen use across the border and their decisions need evidence that crossed it first:
        // tests/transfers.rs plays them between two gateways.
        .filter(|(path, _, _)| !path.ends_with("/widen-requests") || !path.starts_with("/partner/"))
        .filter(|(path, _, _)| !path.ends_with("/widen-decisions"))
        .map(|(path, method, _)| (method.to_uppercase(), path))
        .filter(|(method, path)| !succeeded.contains(&(method.as_str(), *path)))
        .map(|(method, path)| format!("{method} {path}"))
        .collect();
    assert!(missing.is_empty(), "never seen succeeding: {missing:?}");
}
