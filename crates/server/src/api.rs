//! The HTTP API: JSON over axum, errors as RFC 9457 problem details, described by `/api/openapi.json`.

use std::ops::Range;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Extension, Router};
use base64::Engine as _;
use custodia_catalog::Account;
use custodia_core::{AccessKind, Action, ArtefactId, CaseId, Label, Role, Sha256, Tlp, UsePolicy, WidenRequest};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{self, Caller};
use crate::extract::{Path, Query};
use crate::problem::Problem;
use crate::state::AppState;
use custodia_service::directory;
use custodia_service::gateway::{GatewayError, UploadRequest, bad_input, new_id};
use custodia_service::identity::{Principal, SESSION_SECONDS, Scope};

/// JSON bodies are small; artefacts go through the upload routes, which lift this limit.
pub const JSON_LIMIT: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    let uploads =
        Router::new().route("/api/v1/cases/{case}/artefacts", post(upload_artefact)).layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/v1/session", post(sign_in).delete(sign_out))
        .route("/api/v1/me", get(me))
        .route("/api/v1/verifier-key", get(verifier_key))
        .route("/api/v1/tokens", post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route("/api/v1/accounts", post(create_account).get(list_accounts))
        .route("/api/v1/accounts/{id}/disable", post(disable_account))
        .route("/api/v1/cases", post(create_case).get(my_cases))
        .route("/api/v1/admin/cases", get(all_cases))
        .route("/api/v1/cases/{case}", get(case_detail))
        .route("/api/v1/cases/{case}/members", get(list_members))
        .route("/api/v1/cases/{case}/members/{account}", put(set_member).delete(remove_member))
        .route("/api/v1/cases/{case}/artefacts", get(list_artefacts))
        .route("/api/v1/cases/{case}/exports", post(export_case))
        .route("/api/v1/artefacts/{id}", get(artefact_detail))
        .route("/api/v1/artefacts/{id}/content", get(download))
        .route("/api/v1/artefacts/{id}/timeline", get(timeline))
        .route("/api/v1/artefacts/{id}/exports", post(export))
        .route("/api/v1/artefacts/{id}/policy", put(set_policy))
        .route("/api/v1/artefacts/{id}/policy/correction", put(correct_policy))
        .route("/api/v1/artefacts/{id}/widen-requests", post(request_widening).get(list_widen_requests))
        .route("/api/v1/widen-requests/{id}/decision", post(decide_widening))
        .route("/api/v1/artefacts/{id}/outcomes", post(report_outcome).get(list_outcomes))
        .route("/api/v1/proofs/{index}", get(proof))
        .layer(DefaultBodyLimit::max(JSON_LIMIT))
        .merge(uploads)
        .with_state(state)
}

/// A JSON body whose rejections are problem details.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<UniqueNames>::from_request(req, state).await {
            Ok(axum::Json(UniqueNames(mut value))) => {
                if let Some(name) = null_field::<T>(&value) {
                    return Err(Problem::bad_request(format!(
                        "JSON body: {name} is null; no property of a request is nullable: leave an optional one out"
                    )));
                }
                whole_numbers_as_integers(&mut value);
                serde_json::from_value(value).map(Self).map_err(|err| Problem::bad_request(format!("JSON body: {err}")))
            }
            Err(rejection) => {
                let status = rejection.status();
                let detail = rejection.body_text();
                Err(match status {
                    StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
                        status,
                        "too-large",
                        "Body too large",
                        format!("JSON bodies are at most {JSON_LIMIT} bytes"),
                    ),
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
                        status,
                        "unsupported-media-type",
                        "Send JSON",
                        "send Content-Type: application/json",
                    ),
                    _ => Problem::bad_request(detail),
                })
            }
        }
    }
}

/// A JSON value whose objects each name a member once (I-JSON, RFC 7493): `serde_json::Value` keeps the last of two
/// members of one name, so `{"privileged":["defence","defence"],"privileged":["defence"]}` would be taken as written
/// once, and a proxy or a log reading the first would have seen another request. Two members of one name, however
/// escaped, are refused.
struct UniqueNames(Value);

impl<'de> Deserialize<'de> for UniqueNames {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueNamesVisitor).map(UniqueNames)
    }
}

struct UniqueNamesVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueNamesVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(value).map(Value::Number).ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let mut array = Vec::new();
        while let Some(UniqueNames(item)) = items.next_element()? {
            array.push(item);
        }
        Ok(Value::Array(array))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut members: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(name) = members.next_key::<String>()? {
            if object.contains_key(&name) {
                return Err(serde::de::Error::custom(format!("two members named `{name}`")));
            }
            let UniqueNames(value) = members.next_value()?;
            object.insert(name, value);
        }
        Ok(Value::Object(object))
    }
}

/// The first property of `value` that `T` reads and that is `null`. No request schema in the published document is
/// nullable, but serde reads `null` as an absent `Option`, so a body the document calls invalid would be taken: every
/// JSON body is checked here, in one place, against the field names `T`'s derived `Deserialize` declares. Properties
/// `T` does not read are left alone (a schema without `additionalProperties: false` allows them, null included).
fn null_field<T: serde::de::DeserializeOwned>(value: &Value) -> Option<&'static str> {
    let Value::Object(properties) = value else { return None };
    field_names::<T>().iter().copied().find(|name| properties.get(*name).is_some_and(Value::is_null))
}

/// The field names a struct type's derived `Deserialize` reads (none for any other type): it names them to
/// `deserialize_struct`, which this deserializer records before giving up.
fn field_names<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("only the field names were wanted")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    struct FieldNames<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = fields;
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// JSON has one kind of number: `830.0` is the integer 830 to JSON Schema (and to the published document), so a
/// whole number written with a fraction is read as that integer wherever the body wants one. Numbers past 2^53,
/// which a float cannot hold exactly, are left as they are (and refused where an integer is wanted).
fn whole_numbers_as_integers(value: &mut Value) {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value {
        Value::Number(number) if !number.is_i64() && !number.is_u64() => {
            if let Some(float) = number.as_f64().filter(|f| f.fract() == 0.0 && f.abs() <= EXACT) {
                *value = Value::from(float as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

pub(crate) fn json(status: StatusCode, value: impl Serialize) -> Response {
    (status, axum::Json(value)).into_response()
}

fn parse<T: std::str::FromStr>(field: &'static str, text: &str) -> Result<T, Problem>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|err| Problem::from(bad_input(field, err)))
}

pub(crate) fn label(field: &'static str, text: &str) -> Result<Label, Problem> {
    Label::new(text).map_err(|err| Problem::from(bad_input(field, err)))
}

pub(crate) fn case_id(text: &str) -> Result<CaseId, Problem> {
    CaseId::new(text).map_err(|err| Problem::from(bad_input("case", err)))
}

pub(crate) fn artefact_id(text: &str) -> Result<ArtefactId, Problem> {
    ArtefactId::new(text).map_err(|err| Problem::from(bad_input("artefact", err)))
}

/// Every read of evidence states why. No `Debug`: a purpose is typed text, which may name people.
#[derive(Deserialize)]
pub(crate) struct PurposeQuery {
    purpose: Option<String>,
    access: Option<String>,
}

impl PurposeQuery {
    pub(crate) fn purpose(&self) -> Result<Label, Problem> {
        let text = self.purpose.as_deref().ok_or_else(|| {
            Problem::from(bad_input("purpose", "state the purpose of this access, e.g. ?purpose=trial%20preparation"))
        })?;
        label("purpose", text)
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi::DOCUMENT).into_response()
}

// Sessions, tokens and accounts.

#[derive(Deserialize)]
struct SignIn {
    username: String,
    password: String,
}

#[derive(Serialize)]
struct AccountView<'a> {
    id: &'a str,
    username: &'a str,
    display_name: &'a str,
    jurisdiction: &'a str,
    is_admin: bool,
}

impl<'a> From<&'a Account> for AccountView<'a> {
    fn from(account: &'a Account) -> Self {
        Self {
            id: &account.id,
            username: &account.username,
            display_name: &account.display_name,
            jurisdiction: &account.jurisdiction,
            is_admin: account.is_admin,
        }
    }
}

impl<'a> From<&'a Principal> for AccountView<'a> {
    fn from(caller: &'a Principal) -> Self {
        Self {
            id: caller.account_id(),
            username: caller.username(),
            display_name: caller.display_name(),
            jurisdiction: caller.jurisdiction_name(),
            is_admin: caller.is_admin(),
        }
    }
}

async fn sign_in(
    State(state): State<AppState>,
    auth::Https(https): auth::Https,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SignIn>,
) -> Result<Response, Problem> {
    // Served in-process (tests) there is no peer: all such sign-ins share one throttle entry.
    let peer = crate::listen::client_network(&extensions)
        .unwrap_or_else(|| custodia_service::network::ClientNetwork::of(std::net::IpAddr::from([0, 0, 0, 0])));
    let devices = auth::device_cookies(&headers, auth::device_cookie_name(https));
    let account = state.gateway.sign_in(&state.sign_ins, &body.username, &body.password, peer, &devices).await?;
    crate::listen::mark_signed_in(&extensions, &account.id);
    let secret = state.gateway.start_session(&account).await?;
    let cookie = auth::session_cookie(https, &secret, SESSION_SECONDS);
    // The session cookie first, then the device cookie: a new one on every sign-in (auth::DeviceKey).
    let device_cookie = auth::device_cookie(&state.sign_ins, &account.id, state.gateway.clock().unix_seconds(), https);
    let mut response = json(StatusCode::OK, AccountView::from(&account));
    for value in [cookie, device_cookie] {
        response
            .headers_mut()
            .append(header::SET_COOKIE, HeaderValue::from_str(&value).map_err(|e| Problem::internal(&e))?);
    }
    Ok(response)
}

async fn sign_out(State(state): State<AppState>, request: Request) -> Result<Response, Problem> {
    let (parts, _) = request.into_parts();
    let https = auth::reached_over_https(&parts, &state);
    if let Some(secret) = auth::session_secret(&parts, https) {
        if !auth::same_origin(&parts, https) {
            return Err(GatewayError::CrossOrigin.into());
        }
        state.gateway.end_session(&secret).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let expired = auth::session_cookie(https, "", 0);
    response
        .headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_str(&expired).map_err(|e| Problem::internal(&e))?);
    Ok(response)
}

async fn me(caller: Caller) -> Response {
    json(StatusCode::OK, AccountView::from(&*caller))
}

/// STUN/TURN servers for the caller's WebRTC client, with a TURN credential made for this answer only.
/// The gateway's public key, for a court to pin: the C2SP verifier key that its bundles and checkpoints are
/// checked with, the same key as PEM, and a fingerprint (SHA-256 of the 32 key bytes) to compare by eye or phone.
async fn verifier_key(State(state): State<AppState>) -> Result<Response, Problem> {
    let verifier = state.gateway.verifier();
    let key = verifier.public_key().map_err(|e| Problem::internal(&e))?;
    let answer = VerifierKey {
        vkey: verifier.to_string(),
        name: verifier.name(),
        key_id: format!("{:08x}", verifier.key_id()),
        algorithm: "Ed25519",
        fingerprint: custodia_core::Sha256::of(key.as_bytes()).to_hex(),
        public_key_pem: custodia_bundle::public_key_pem(&key),
    };
    Ok(json(StatusCode::OK, answer))
}

/// The gateway's public key ([`verifier_key`]; `VerifierKey` in the published document).
#[derive(Debug, Serialize)]
struct VerifierKey<'a> {
    vkey: String,
    name: &'a str,
    key_id: String,
    algorithm: &'static str,
    fingerprint: String,
    public_key_pem: String,
}

#[derive(Deserialize)]
struct NewToken {
    scopes: Vec<Scope>,
    expires_in_seconds: i64,
}

async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<Response, Problem> {
    let (token, secret) = state.gateway.issue_token(&caller, body.scopes, body.expires_in_seconds).await?;
    let issued = IssuedToken { id: &token.id, token: &secret, scopes: &token.scopes, expires_at: token.expires_at };
    Ok(json(StatusCode::CREATED, issued))
}

/// A new API token with its secret, shown this once (`IssuedToken`). No `Debug`: it carries the secret.
#[derive(Serialize)]
struct IssuedToken<'a> {
    id: &'a str,
    token: &'a str,
    /// Space-separated, as the catalog keeps them.
    scopes: &'a str,
    /// Unix seconds.
    expires_at: i64,
}

async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    state.gateway.revoke_token(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    username: String,
    display_name: String,
    password: String,
    jurisdiction: String,
    #[serde(default)]
    is_admin: bool,
}

async fn create_account(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewAccount>,
) -> Result<Response, Problem> {
    let account = state
        .gateway
        .create_account(
            Some(&caller),
            &state.sign_ins,
            directory::NewAccount {
                username: body.username,
                display_name: body.display_name,
                password: &body.password,
                jurisdiction: body.jurisdiction,
                is_admin: body.is_admin,
            },
        )
        .await?;
    Ok(json(StatusCode::CREATED, AccountView::from(&account)))
}

/// Every account, for the administration page: who they are, whether they administer, and whether (since when)
/// they are disabled. Password hashes never leave the catalog.
async fn list_accounts(State(state): State<AppState>, caller: Caller) -> Result<Response, Problem> {
    let accounts = state.gateway.accounts(&caller).await?;
    let accounts: Vec<_> = accounts
        .iter()
        .map(|(account, disabled_at)| AccountListed {
            account: AccountView::from(account),
            disabled_at: disabled_at.as_deref(),
        })
        .collect();
    Ok(json(StatusCode::OK, accounts))
}

/// An account as the administration page lists it (`AccountListed`): the account, and since when it is disabled
/// (`null` while it is active). No `Debug`: it carries names.
#[derive(Serialize)]
struct AccountListed<'a> {
    #[serde(flatten)]
    account: AccountView<'a>,
    disabled_at: Option<&'a str>,
}

/// Disables an account: it can no longer sign in, and its sessions and API tokens stop working at once. For a
/// compromised account; its records and memberships stay.
async fn disable_account(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    state.gateway.disable_account(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// Cases and members.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCase {
    id: Option<String>,
    title: String,
}

async fn create_case(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewCase>,
) -> Result<Response, Problem> {
    let id = case_id(&body.id.unwrap_or_else(|| new_id("case")))?;
    let title = label("title", &body.title)?;
    let case = state.gateway.create_case(&caller, id, title).await?;
    Ok(json(StatusCode::CREATED, CaseCreated { id: &case.id, title: &case.title }))
}

/// A case just created (`CaseCreated`). No `Debug`, nor in the other views of a case: a title can name a person.
#[derive(Serialize)]
struct CaseCreated<'a> {
    id: &'a str,
    title: &'a str,
}

/// A case in the list of every case, for the administration page (`CaseListed`).
#[derive(Serialize)]
struct CaseListed<'a> {
    id: &'a str,
    title: &'a str,
    created_at: &'a str,
}

/// One of the caller's cases, with their role there (`CaseSummary`).
#[derive(Serialize)]
struct CaseSummary<'a> {
    id: &'a str,
    title: &'a str,
    role: &'a str,
}

/// A case as one of its members sees it (`CaseDetail`).
#[derive(Serialize)]
struct CaseDetail<'a> {
    id: &'a str,
    title: &'a str,
    role: Role,
    /// What the caller may do here, so that a client calls nothing it would be refused.
    may: Vec<Action>,
    members: Vec<MemberView<'a>>,
}

/// A case's members, for whoever may change them (`MemberList`).
#[derive(Serialize)]
struct MemberList<'a> {
    case: &'a CaseId,
    members: Vec<MemberView<'a>>,
}

/// A member of a case: their account and role (`Member`).
#[derive(Serialize)]
struct MemberView<'a> {
    account: &'a str,
    role: &'a str,
}

impl<'a> From<&'a custodia_catalog::Member> for MemberView<'a> {
    fn from(member: &'a custodia_catalog::Member) -> Self {
        Self { account: &member.account_id, role: &member.role }
    }
}

/// Every case, for the administration page (an administrator need not be a member of any).
async fn all_cases(State(state): State<AppState>, caller: Caller) -> Result<Response, Problem> {
    let cases = state.gateway.all_cases(&caller).await?;
    let cases: Vec<_> = cases
        .iter()
        .map(|case| CaseListed { id: &case.id, title: &case.title, created_at: &case.created_at })
        .collect();
    Ok(json(StatusCode::OK, cases))
}

async fn my_cases(State(state): State<AppState>, caller: Caller) -> Result<Response, Problem> {
    let cases = state.gateway.cases_of(&caller).await?;
    let cases: Vec<_> =
        cases.iter().map(|(case, role)| CaseSummary { id: &case.id, title: &case.title, role }).collect();
    Ok(json(StatusCode::OK, cases))
}

async fn case_detail(
    State(state): State<AppState>,
    caller: Caller,
    Path(case): Path<String>,
) -> Result<Response, Problem> {
    let case = case_id(&case)?;
    let directory::CaseView { case: row, role, members } = state.gateway.case_view(&caller, &case).await?;
    // What the caller may do here (their role, and a token's scopes), so that a client calls nothing it would be
    // refused: a refusal is a public record, and a pattern of them would say the role.
    let may: Vec<Action> = Action::ALL.into_iter().filter(|action| caller.may(role, *action)).collect();
    let members = members.iter().map(MemberView::from).collect();
    let detail = CaseDetail { id: &row.id, title: &row.title, role, may, members };
    Ok(json(StatusCode::OK, detail))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Membership {
    role: Role,
}

/// A case's members, for whoever may change them: an administrator, or a member whose role manages members.
async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
    Path(case): Path<String>,
) -> Result<Response, Problem> {
    let case = case_id(&case)?;
    let members = state.gateway.members(&caller, &case).await?;
    let members = members.iter().map(MemberView::from).collect();
    Ok(json(StatusCode::OK, MemberList { case: &case, members }))
}

async fn set_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((case, account)): Path<(String, String)>,
    ApiJson(body): ApiJson<Membership>,
) -> Result<Response, Problem> {
    let case = case_id(&case)?;
    state.gateway.set_member(&caller, &case, &account, body.role).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((case, account)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let case = case_id(&case)?;
    state.gateway.remove_member(&caller, &case, &account).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// Artefacts.

/// No `Debug`: a purpose and a file name are typed text, which may name people.
#[derive(Deserialize)]
struct UploadQuery {
    purpose: Option<String>,
    filename: Option<String>,
    sha256: Option<String>,
}

/// The SHA-256 stated by the client: `?sha256=<hex>`, or an RFC 9530 `Repr-Digest` / `Content-Digest` header.
fn expected_digest(query: &UploadQuery, headers: &HeaderMap) -> Result<Option<Sha256>, Problem> {
    if let Some(hex) = &query.sha256 {
        return parse("sha256", hex).map(Some);
    }
    for name in ["repr-digest", "content-digest"] {
        let Some(value) = headers.get(name) else { continue };
        let value = value.to_str().map_err(|_| Problem::from(bad_input("digest", "not ASCII")))?;
        let Some(encoded) = value.split(',').find_map(|item| item.trim().strip_prefix("sha-256=:")?.strip_suffix(':'))
        else {
            return Err(bad_input("digest", format!("{name} carries no sha-256 digest")).into());
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| Problem::from(bad_input("digest", "sha-256 digest is not base64")))?;
        let bytes: [u8; 32] =
            bytes.try_into().map_err(|_| Problem::from(bad_input("digest", "a SHA-256 digest is 32 bytes")))?;
        return Ok(Some(Sha256::from_bytes(bytes)));
    }
    Ok(None)
}

/// Original file names are kept for people to read, never used as paths: anything path-like is refused, and so
/// is any invisible format character (Unicode category Cf): a right-to-left override (U+202E) makes
/// `statement\u{202E}fdp.exe` read as `statementexe.pdf`, and a zero-width character makes two names look alike.
pub fn original_name(name: &str) -> Result<Label, GatewayError> {
    let hostile =
        name.contains(['/', '\\', '\0']) || name == "." || name == ".." || name.starts_with('.') || name.len() > 255;
    if hostile {
        return Err(bad_input("filename", "give a plain file name, without directories or a leading dot"));
    }
    if let Some(format) = custodia_service::gateway::disguising_character(name) {
        return Err(bad_input(
            "filename",
            format!(
                "the name holds the invisible format character U+{:04X}, which can disguise what a file is (a \
                 right-to-left override makes 'fdp.exe' read as 'exe.pdf'); rename the file without it",
                u32::from(format)
            ),
        ));
    }
    Label::new(name).map_err(|err| bad_input("filename", err))
}

/// Reads the use policy a provider attaches at ingest: `Custodia-Use-Policy: <base64 of the policy JSON>`.
fn attached_policy(headers: &HeaderMap) -> Result<Option<UsePolicy>, Problem> {
    let Some(value) = headers.get("custodia-use-policy") else { return Ok(None) };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.as_bytes())
        .map_err(|_| Problem::from(bad_input("policy", "Custodia-Use-Policy is not base64")))?;
    serde_json::from_slice(&bytes).map(Some).map_err(|err| bad_input("policy", err).into())
}

pub fn media_type(headers: &HeaderMap) -> Result<Label, GatewayError> {
    let text = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/octet-stream");
    Label::new(text).map_err(|err| bad_input("content-type", err))
}

async fn upload_artefact(
    State(state): State<AppState>,
    caller: Caller,
    Path(case): Path<String>,
    Query(query): Query<UploadQuery>,
    descriptors: Option<axum::Extension<crate::listen::Descriptors>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let case = case_id(&case)?;
    let request = UploadRequest {
        purpose: PurposeQuery { purpose: query.purpose.clone(), access: None }.purpose()?,
        media_type: media_type(&headers)?,
        original_name: query.filename.as_deref().map(original_name).transpose()?,
        expected_sha256: expected_digest(&query, &headers)?,
        policy: attached_policy(&headers)?,
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .map(|value| value.to_str().ok().and_then(|text| text.trim().parse::<u64>().ok()))
        .map(|length| length.ok_or_else(|| bad_input("content-length", "send a non-negative integer")))
        .transpose()?;
    // A place for the staging file beside the connection's own ([`crate::listen::Descriptors`]).
    let _staging = crate::listen::Descriptors::take(descriptors.as_deref(), 1)?;
    let registered = state.gateway.upload(&caller, &case, request, declared, body.into_data_stream()).await?;
    let location = format!("/api/v1/artefacts/{}", registered.artefact);
    let mut response = json(StatusCode::CREATED, registered);
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_str(&location).map_err(|e| Problem::internal(&e))?);
    Ok(response)
}

async fn list_artefacts(
    State(state): State<AppState>,
    caller: Caller,
    Path(case): Path<String>,
) -> Result<Response, Problem> {
    let case = case_id(&case)?;
    state.gateway.authorize(&caller, &case, Action::ListArtefacts).await?;
    let rows = state.gateway.catalog().artefacts_in_case(case.as_str()).await.map_err(GatewayError::from)?;
    let list: Vec<_> = rows.iter().map(ArtefactSummary::from).collect();
    Ok(json(StatusCode::OK, list))
}

/// An artefact in its case's list (`ArtefactSummary`).
#[derive(Debug, Serialize)]
struct ArtefactSummary<'a> {
    id: &'a str,
    sha256: &'a str,
    size: i64,
    media_type: &'a str,
    ledger_index: i64,
    registered_at: &'a str,
    /// Whether a use policy applies.
    restricted: bool,
    /// The use policy's TLP label; `null` without a policy (or one that does not read).
    tlp: Option<Tlp>,
}

impl<'a> From<&'a custodia_catalog::ArtefactRow> for ArtefactSummary<'a> {
    fn from(row: &'a custodia_catalog::ArtefactRow) -> Self {
        let policy = row.policy.as_deref();
        Self {
            id: &row.id,
            sha256: &row.sha256,
            size: row.size,
            media_type: &row.media_type,
            ledger_index: row.ledger_index,
            registered_at: &row.created_at,
            restricted: policy.is_some(),
            tlp: policy.and_then(|policy| serde_json::from_str::<UsePolicy>(policy).ok()).map(|policy| policy.tlp),
        }
    }
}

async fn artefact_detail(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<PurposeQuery>,
) -> Result<Response, Problem> {
    let id = artefact_id(&id)?;
    let (row, warnings) = state.gateway.view(&caller, &id, &query.purpose()?).await?;
    let manifest: Value = serde_json::from_slice(&row.manifest).map_err(|e| Problem::internal(&e))?;
    let policy: Option<Value> =
        row.policy.as_deref().map(serde_json::from_str).transpose().map_err(|e| Problem::internal(&e))?;
    let detail = ArtefactDetail {
        id: &row.id,
        case: &row.case_id,
        sha256: &row.sha256,
        size: row.size,
        media_type: &row.media_type,
        ledger_index: row.ledger_index,
        manifest,
        manifest_canonical: base64::engine::general_purpose::STANDARD.encode(&row.manifest),
        manifest_signature: &row.manifest_signature,
        policy,
        warnings,
    };
    Ok(json(StatusCode::OK, detail))
}

/// An artefact as a member views it (`ArtefactDetail`). No `Debug`: the manifest carries the original file name.
#[derive(Serialize)]
struct ArtefactDetail<'a> {
    id: &'a str,
    case: &'a str,
    sha256: &'a str,
    size: i64,
    media_type: &'a str,
    ledger_index: i64,
    /// The signed manifest, read back as JSON as it is stored.
    manifest: Value,
    /// The exact signed bytes of the manifest, base64.
    manifest_canonical: String,
    manifest_signature: &'a str,
    /// The use policy as it is stored; `null` without one.
    policy: Option<Value>,
    /// What the policy asks of whoever uses the artefact.
    warnings: Vec<String>,
}

/// A `Range` header that the artefact cannot satisfy: answered 416 with the artefact's size.
struct Unsatisfiable {
    size: u64,
}

impl IntoResponse for Unsatisfiable {
    fn into_response(self) -> Response {
        let size = self.size;
        let detail = format!("the artefact is {size} bytes");
        let mut response =
            Problem::new(StatusCode::RANGE_NOT_SATISFIABLE, "bad-range", "Range not satisfiable", detail)
                .into_response();
        if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
        response
    }
}

/// A single byte range from a `Range` header, `None` to send the whole artefact (no header, or several ranges,
/// which RFC 9110 lets a server ignore).
fn requested_range(headers: &HeaderMap, size: u64) -> Result<Option<Range<u64>>, Unsatisfiable> {
    let Some(value) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else { return Ok(None) };
    let ranges = http_range_header::parse_range_header(value)
        .and_then(|parsed| parsed.validate(size))
        .map_err(|_| Unsatisfiable { size })?;
    match ranges.as_slice() {
        [one] => Ok(Some(*one.start()..one.end() + 1)),
        _ => Ok(None),
    }
}

/// Why a download was refused: a problem, or a range the artefact cannot satisfy (answered with Content-Range).
enum DownloadRefused {
    Problem(Problem),
    Range(Unsatisfiable),
}

impl From<GatewayError> for DownloadRefused {
    fn from(err: GatewayError) -> Self {
        Self::Problem(err.into())
    }
}

impl From<Problem> for DownloadRefused {
    fn from(problem: Problem) -> Self {
        Self::Problem(problem)
    }
}

impl IntoResponse for DownloadRefused {
    fn into_response(self) -> Response {
        match self {
            Self::Problem(problem) => problem.into_response(),
            Self::Range(unsatisfiable) => unsatisfiable.into_response(),
        }
    }
}

async fn download(
    State(state): State<AppState>,
    caller: Caller,
    connection: Option<Extension<crate::listen::Connection>>,
    Path(id): Path<String>,
    Query(query): Query<PurposeQuery>,
    headers: HeaderMap,
) -> Result<Response, DownloadRefused> {
    let id = artefact_id(&id)?;
    let access = match query.access.as_deref() {
        None | Some("download") => AccessKind::Download,
        Some("play") => AccessKind::Play,
        Some(_) => return Err(bad_input("access", "use download or play").into()),
    };
    let purpose = query.purpose()?;
    // The place is taken once the download is found permitted, its range included, and before it is recorded.
    let (row, (range, outflowing)) = state
        .gateway
        .download(&caller, &id, &purpose, access, |row| {
            let range = requested_range(&headers, row.size as u64).map_err(DownloadRefused::Range)?;
            let outflowing = state.start_outflow(&caller, connection, crate::outflow::Stream::Artefact)?;
            Ok::<_, DownloadRefused>((range, outflowing))
        })
        .await?;
    // What a partner gateway sent is retrieved here: its sender gets a `Retrieval` evidence, once.
    state.transfers.retrieved(&caller, &id).await?;
    let digest: Sha256 = row.sha256.parse().map_err(|e| Problem::internal(&e))?;
    let size = row.size as u64;
    let stream = state.gateway.artefacts().read(&digest, range.clone()).await.map_err(GatewayError::from)?;
    let meter = outflowing.meter();
    let stream = stream.map(move |chunk| {
        let _leaving = &outflowing;
        let chunk = chunk.map_err(std::io::Error::other)?;
        meter.sent(chunk.len())?;
        Ok::<_, std::io::Error>(chunk)
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    let mut set = |name: header::HeaderName, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, row.media_type.clone());
    set(header::ACCEPT_RANGES, "bytes".into());
    set(header::ETAG, format!("\"{}\"", row.sha256));
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff".into());
    set(header::CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'".into());
    set(
        header::CONTENT_DISPOSITION,
        format!("{}; filename=\"{}\"", if access == AccessKind::Play { "inline" } else { "attachment" }, row.id),
    );
    set(
        header::HeaderName::from_static("repr-digest"),
        format!("sha-256=:{}:", base64::engine::general_purpose::STANDARD.encode(digest.as_bytes())),
    );
    match range {
        Some(range) => {
            set(header::CONTENT_LENGTH, (range.end - range.start).to_string());
            set(header::CONTENT_RANGE, format!("bytes {}-{}/{size}", range.start, range.end - 1));
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        None => set(header::CONTENT_LENGTH, size.to_string()),
    }
    Ok(response)
}

/// Streams a court bundle: the small files from memory, the payload straight from storage.
async fn export(
    State(state): State<AppState>,
    caller: Caller,
    connection: Option<Extension<crate::listen::Connection>>,
    Path(id): Path<String>,
    Query(query): Query<PurposeQuery>,
) -> Result<Response, Problem> {
    let id = artefact_id(&id)?;
    let purpose = query.purpose()?;
    let leave = || state.start_outflow(&caller, connection, crate::outflow::Stream::Artefact);
    let (source, outflowing) = state.gateway.export_leaving(&caller, &id, &purpose, leave).await?;
    let meter = outflowing.meter();
    let writer = custodia_bundle::BundleWriter::new(&source).map_err(|e| Problem::internal(&e))?;
    let head = writer.head().map_err(|e| Problem::internal(&e))?;
    let tail = writer.tail();
    let length = head.len() as u64 + source.payload_size + tail.len() as u64;
    let payload = state.gateway.artefacts().read(&source.payload_sha256, None).await.map_err(GatewayError::from)?;
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(bytes::Bytes::from(head)) })
        .chain(payload.map(move |chunk| {
            let chunk = chunk.map_err(std::io::Error::other)?;
            meter.sent(chunk.len())?;
            Ok(chunk)
        }))
        .chain(futures::stream::once(async move {
            drop(outflowing);
            Ok(bytes::Bytes::from(tail))
        }));
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    let disposition = format!("attachment; filename=\"custodia-bundle-{id}.tar\"");
    for (name, value) in [(header::CONTENT_LENGTH, length.to_string()), (header::CONTENT_DISPOSITION, disposition)] {
        headers.insert(name, HeaderValue::from_str(&value).map_err(|e| Problem::internal(&e))?);
    }
    Ok(response)
}

/// Streams a case bundle: one artefact bundle after another, each digested as it passes, then the listing of
/// them and the case export record that commits to it (appended once the last bundle is written, so the bundles
/// are read from storage once), then the tag files. A producer task feeds a small channel, so memory stays
/// bounded however large the case. If the record cannot be made the stream ends in an error, and what the client
/// holds fails verification: a case bundle is complete or invalid.
async fn export_case(
    State(state): State<AppState>,
    caller: Caller,
    connection: Option<Extension<crate::listen::Connection>>,
    Path(case): Path<String>,
    Query(query): Query<PurposeQuery>,
) -> Result<Response, Problem> {
    let case = case_id(&case)?;
    let purpose = query.purpose()?;
    let leave = || state.start_outflow(&caller, connection, crate::outflow::Stream::Case);
    let (sources, outflowing) = state.gateway.export_case_part(&caller, &case, &purpose, |_| true, leave).await?;
    let filename = format!("custodia-case-{case}.tar");
    let export = CaseExportRequest { caller, case, purpose, scope: custodia_bundle::ExportScope::Case, outflowing };
    stream_case_bundle(&state, export, sources, &filename)
}

/// Who exports which part of which case, and why.
pub(crate) struct CaseExportRequest {
    pub caller: Caller,
    pub case: CaseId,
    pub purpose: Label,
    /// The whole case, or one hearing's output: named in the bundle and in its record.
    pub scope: custodia_bundle::ExportScope,
    /// Its place among the case exports under way ([`crate::outflow::Outflow`]), held until the stream ends.
    pub outflowing: crate::outflow::Outflowing,
}

/// Streams a case bundle of `sources` (the whole case, or a part such as a hearing's output, as `export.scope`
/// says) under `filename`, and records the export once the bundles are written ([`export_case`]).
pub(crate) fn stream_case_bundle(
    state: &AppState,
    export: CaseExportRequest,
    sources: Vec<custodia_bundle::BundleSource>,
    filename: &str,
) -> Result<Response, Problem> {
    let CaseExportRequest { caller, case, purpose, scope, outflowing } = export;
    let meter = outflowing.meter();
    let vkey = state.gateway.verifier().to_string();
    let bagged_at = state.gateway.now().to_string();
    let writer = custodia_bundle::CaseBundleWriter::new(&case, &vkey, &bagged_at).map_err(|e| Problem::internal(&e))?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let (gateway, exported) = (state.gateway.clone(), case.clone());
    tokio::spawn(async move {
        let export = CaseExport {
            writer: &writer,
            gateway: &gateway,
            caller: &caller,
            case: &exported,
            purpose: &purpose,
            scope: &scope,
        };
        if let Err(err) = export.stream(&sources, &sender).await {
            tracing::error!(error = %format_args!("{err:#}"), "case bundle stream failed");
            let _ = sender.send(Err(std::io::Error::other("the case bundle could not be completed"))).await;
        }
        drop(outflowing);
    });
    let body = futures::stream::unfold((receiver, meter), |(mut receiver, meter)| async move {
        let item = receiver.recv().await?;
        let item = item.and_then(|bytes| meter.sent(bytes.len()).map(|()| bytes));
        Some((item, (receiver, meter)))
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-tar"));
    let disposition = format!("attachment; filename=\"{filename}\"");
    headers
        .insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).map_err(|e| Problem::internal(&e))?);
    Ok(response)
}

/// One case export being streamed.
struct CaseExport<'a> {
    writer: &'a custodia_bundle::CaseBundleWriter,
    gateway: &'a custodia_service::gateway::Gateway,
    caller: &'a Caller,
    case: &'a custodia_core::CaseId,
    purpose: &'a custodia_core::Label,
    scope: &'a custodia_bundle::ExportScope,
}

impl CaseExport<'_> {
    /// Each artefact bundle unpacked in its directory of the case bag, its payload streamed from the store and
    /// named in the manifests by the digest it is stored under (nothing large is hashed on the way out), then the
    /// listing, recorded, and the rest of the case bag.
    async fn stream(
        &self,
        sources: &[custodia_bundle::BundleSource],
        sender: &tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    ) -> anyhow::Result<()> {
        let send = |bytes: bytes::Bytes| async move {
            sender.send(Ok(bytes)).await.map_err(|_| anyhow::anyhow!("client went away"))
        };
        let mut listed = Vec::with_capacity(sources.len());
        let mut bundled = Vec::new();
        for source in sources {
            let bundle = custodia_bundle::BundleWriter::in_case(source, self.case)?;
            send(bundle.head()?.into()).await?;
            let mut payload = std::pin::pin!(self.gateway.artefacts().read(&source.payload_sha256, None).await?);
            let mut streamed = 0u64;
            while let Some(chunk) = payload.next().await {
                let chunk = chunk?;
                streamed += chunk.len() as u64;
                send(chunk).await?;
            }
            anyhow::ensure!(streamed == source.payload_size, "artefact {} ended early in storage", source.artefact);
            send(bundle.payload_padding().into()).await?;
            listed.push(bundle.listed_bundle());
            bundled.extend(bundle.listed_in_case());
        }
        let (listing, record) =
            self.gateway.record_case_export(self.caller, self.case, self.purpose, self.scope.clone(), listed).await?;
        send(self.writer.finish(&listing, &record, bundled)?.into()).await
    }
}

async fn timeline(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Response, Problem> {
    let id = artefact_id(&id)?;
    let entries = state.gateway.timeline(&caller, &id).await?;
    let checkpoint = String::from_utf8_lossy(state.gateway.log().checkpoint().note()).into_owned();
    Ok(json(StatusCode::OK, Timeline { artefact: &id, checkpoint, records: entries }))
}

/// An artefact's custody records, each with its proof against `checkpoint` (`Timeline`). No `Debug`: the
/// openings hold the texts of the records' commitments.
#[derive(Serialize)]
struct Timeline<'a> {
    artefact: &'a ArtefactId,
    /// The latest signed checkpoint (a signed note).
    checkpoint: String,
    records: Vec<custodia_service::gateway::TimelineEntry>,
}

async fn proof(State(state): State<AppState>, Path(index): Path<u64>) -> Result<Response, Problem> {
    // An entry another gateway sequenced may not be published here yet: it is waited for, like this gateway's own.
    let size = state.gateway.log().checkpoint().checkpoint.size;
    if index >= size && index >= state.gateway.log().sequenced().await.map_err(GatewayError::from)? {
        return Err(Problem::not_found(format!("the log has {size} entries")));
    }
    let proof = state.gateway.proof(index).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], proof.to_bytes()).into_response())
}

// Restrictions on use, wider use, outcome reports.

async fn set_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(policy): ApiJson<UsePolicy>,
) -> Result<Response, Problem> {
    let id = artefact_id(&id)?;
    let index = state.gateway.set_policy(&caller, &id, policy).await?;
    Ok(json(StatusCode::OK, PolicySet { ledger_index: index }))
}

/// A use policy set or corrected: the custody record of the change (`PolicySet`).
#[derive(Debug, Serialize)]
struct PolicySet {
    ledger_index: u64,
}

async fn correct_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(policy): ApiJson<UsePolicy>,
) -> Result<Response, Problem> {
    let id = artefact_id(&id)?;
    let index = state.gateway.correct_policy(&caller, &id, policy).await?;
    Ok(json(StatusCode::OK, PolicySet { ledger_index: index }))
}

/// A request to widen an artefact's use, and its decision once made (`WidenRequestView`). No `Debug`: the request
/// names recipients and authorities.
#[derive(Serialize)]
struct WidenRequestView<'a> {
    id: &'a str,
    artefact: &'a str,
    requested_by: &'a str,
    /// The request as it is stored (`null` if it does not read as JSON).
    request: Value,
    status: &'a str,
    /// `null` while pending.
    decided_by: Option<&'a str>,
    /// `null` while pending.
    decision_ledger_index: Option<i64>,
}

impl<'a> From<&'a custodia_catalog::WidenRequestRow> for WidenRequestView<'a> {
    fn from(row: &'a custodia_catalog::WidenRequestRow) -> Self {
        Self {
            id: &row.id,
            artefact: &row.artefact_id,
            requested_by: &row.requested_by,
            request: serde_json::from_str(&row.request).unwrap_or_default(),
            status: &row.status,
            decided_by: row.decided_by.as_deref(),
            decision_ledger_index: row.decision_ledger_index,
        }
    }
}

async fn request_widening(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<WidenRequest>,
) -> Result<Response, Problem> {
    let id = artefact_id(&id)?;
    let row = state.gateway.request_widening(&caller, &id, request).await?;
    // About evidence a partner gateway provided: the request goes to it, which alone decides.
    state.transfers.widening_requested(&row).await?;
    Ok(json(StatusCode::CREATED, WidenRequestView::from(&row)))
}

async fn list_widen_requests(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = artefact_id(&id)?;
    let rows = state.gateway.widen_requests(&caller, &id).await?;
    Ok(json(StatusCode::OK, rows.iter().map(WidenRequestView::from).collect::<Vec<_>>()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    approve: bool,
}

async fn decide_widening(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Decision>,
) -> Result<Response, Problem> {
    let row = state.gateway.decide_widening(&caller, &id, body.approve).await?;
    // A request a partner gateway sent: the decision goes back to it, where access changes once it arrives.
    state.transfers.widening_decided(&row).await?;
    Ok(json(StatusCode::OK, WidenRequestView::from(&row)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOutcome {
    outcome: custodia_service::transfers::OutcomeKind,
    note: Option<String>,
}

async fn report_outcome(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewOutcome>,
) -> Result<Response, Problem> {
    let id = artefact_id(&id)?;
    let outcome =
        serde_json::to_value(body.outcome).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    if let Some(note) = &body.note {
        label("note", note)?;
    }
    let row = state.gateway.report_outcome(&caller, &id, label("outcome", &outcome)?, body.note).await?;
    // About evidence a partner gateway provided: the report goes back to it.
    state.transfers.outcome_filed(&row).await?;
    Ok(json(StatusCode::CREATED, Outcome::from(&row)))
}

/// An outcome reported on an artefact (`Outcome`). No `Debug`: the note is free text, which can name a person.
#[derive(Serialize)]
struct Outcome<'a> {
    id: &'a str,
    artefact: &'a str,
    filed_by: &'a str,
    outcome: &'a str,
    /// `null` without one.
    note: Option<&'a str>,
    ledger_index: i64,
    filed_at: &'a str,
}

impl<'a> From<&'a custodia_catalog::OutcomeRow> for Outcome<'a> {
    fn from(row: &'a custodia_catalog::OutcomeRow) -> Self {
        Self {
            id: &row.id,
            artefact: &row.artefact_id,
            filed_by: &row.filed_by,
            outcome: &row.outcome,
            note: row.note.as_deref(),
            ledger_index: row.ledger_index,
            filed_at: &row.created_at,
        }
    }
}

async fn list_outcomes(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = artefact_id(&id)?;
    let rows = state.gateway.outcomes(&caller, &id).await?;
    Ok(json(StatusCode::OK, rows.iter().map(Outcome::from).collect::<Vec<_>>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Value, String> {
        serde_json::from_str::<UniqueNames>(text).map(|UniqueNames(value)| value).map_err(|err| err.to_string())
    }

    /// What `serde_json::Value` reads, [`UniqueNames`] reads the same; but for two members of one name, refused
    /// however either is escaped and at whatever depth.
    #[test]
    fn a_json_body_names_each_member_once() {
        let text = r#"{"a":[1,-2,3.5,1e3,true,null,"x\u00e9"],"b":{"c":{}},"d":18446744073709551615,"e":-9223372036854775808}"#;
        assert_eq!(read(text).unwrap(), serde_json::from_str::<Value>(text).unwrap());
        for twice in [
            r#"{"privileged":["defence","defence"],"privileged":["defence"]}"#,
            r#"{"a":1,"\u0061":2}"#,
            r#"{"outer":[{"inner":{"k":1,"k":1}}]}"#,
        ] {
            let refused = read(twice).unwrap_err();
            assert!(refused.contains("two members named"), "{twice}: {refused}");
        }
        assert!(read(&"[".repeat(200)).unwrap_err().contains("recursion limit"));
    }
}
