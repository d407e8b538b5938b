//! S3 Object Lock: what a bucket answers about it ([`S3ObjectLock::state`]), and retention set on each evidence
//! object after it is written ([`EvidenceRetention`]), since `object_store` cannot send the `x-amz-object-lock-*`
//! headers with a PutObject.
//!
//! A bucket is one of three kinds ([`ObjectLockState`]): Object Lock enabled (with or without a default retention
//! rule, which S3 applies to every object version written), not enabled (S3 answers
//! `ObjectLockConfigurationNotFoundError`), or not supported by the server at all (garage 2.5 answers `501
//! NotImplemented`; a server that took the request for a listing would be taken for one too). Only an enabled
//! bucket is ever sent a `PUT ?retention`: a server that does not know the subresource may take it for something
//! else (a PutObject of the request's body over the evidence).
//!
//! Retention is set with PutObjectRetention on the object's current version, signed with `object_store`'s own SigV4
//! signer ([`AwsAuthorizer`]) and the store's own credentials, and sent with `object_store`'s HTTP client. It only
//! ever grows: the object's retention is read first (from a HEAD, which S3 and its imitations answer with
//! `x-amz-object-lock-mode` and `x-amz-object-lock-retain-until-date`), and a new one is sent only where it keeps
//! the object longer or in a stricter mode ([`retention_to_set`]); an object stored before (the same bytes
//! uploaded again) keeps what it has, extended when this upload asks for longer.
//!
//! A failure to set retention is an [`object_store::Error::Generic`] from the store `"S3 Object Lock"`: transient
//! ([`crate::is_transient`]), so the ingest it belongs to fails retryably and registers nothing, and a retry of the
//! same bytes finds the object stored and locks it then.
//!
//! The pure parts (the answers' parsing, the request body, which retention to send) do no IO and read no clock.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use custodia_core::ErrorChain;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use jiff::{SignedDuration, Timestamp};
use md5::Digest as _;
use object_store::aws::{AmazonS3, AwsAuthorizer, AwsCredentialProvider};
use object_store::client::{HttpClient, HttpConnector as _, HttpError, HttpRequestBody, ReqwestConnector};
use object_store::path::Path;
use object_store::{
    ClientOptions, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};

/// The name failures to set retention carry as `object_store` errors.
pub const OBJECT_LOCK_STORE: &str = "S3 Object Lock";

/// How many times one request is sent when the server cannot be reached or fails on its side, and how long to wait
/// before each retry.
const ATTEMPTS: u32 = 3;
const FIRST_RETRY_AFTER: Duration = Duration::from_millis(100);

/// The most days of retention the gateway asks for (a hundred years, S3's own bound).
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// How an object under retention is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RetentionMode {
    /// Nobody may delete or overwrite the version until its date, except a user with the
    /// `s3:BypassGovernanceRetention` permission who asks to bypass it.
    Governance,
    /// Nobody may delete or overwrite the version until its date, nor shorten its retention, not even the
    /// account's root user.
    Compliance,
}

impl RetentionMode {
    /// The word S3 uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Governance => "GOVERNANCE",
            Self::Compliance => "COMPLIANCE",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        match word.trim() {
            "GOVERNANCE" => Some(Self::Governance),
            "COMPLIANCE" => Some(Self::Compliance),
            _ => None,
        }
    }
}

impl fmt::Display for RetentionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long a bucket's default retention rule keeps each object version written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionPeriod {
    Days(u32),
    Years(u32),
}

impl fmt::Display for RetentionPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Days(days) => write!(f, "{days} days"),
            Self::Years(years) => write!(f, "{years} years"),
        }
    }
}

/// A bucket's default retention rule: S3 applies it to every object version written, whatever its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRetention {
    pub mode: RetentionMode,
    pub period: RetentionPeriod,
}

/// What a bucket answered about Object Lock ([`S3ObjectLock::state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectLockState {
    /// Object Lock is enabled: object versions may be given retention, and `default_retention`, if any, is given
    /// to every version written.
    Enabled { default_retention: Option<DefaultRetention> },
    /// The server knows Object Lock, and this bucket does not have it (it can be enabled on the bucket).
    NotEnabled,
    /// The server does not implement Object Lock.
    NotSupported,
}

impl ObjectLockState {
    /// A word for logs and metrics: `enabled`, `not_enabled` or `not_supported`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Enabled { .. } => "enabled",
            Self::NotEnabled => "not_enabled",
            Self::NotSupported => "not_supported",
        }
    }
}

/// An object version's retention: its mode, and the moment until which it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectRetention {
    pub mode: RetentionMode,
    pub retain_until: Timestamp,
}

/// The retention the gateway gives every evidence object: `mode`, for `days` from when it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionRule {
    pub mode: RetentionMode,
    /// At least 1, at most [`MAX_RETENTION_DAYS`].
    pub days: u32,
}

impl RetentionRule {
    /// The retention an object written at `now` gets: its date in whole seconds, rounded up, `days` × 24 h on.
    pub fn at(&self, now: Timestamp) -> ObjectRetention {
        let until = now.saturating_add(SignedDuration::from_hours(i64::from(self.days) * 24)).unwrap_or(now);
        let rounded = match until.subsec_nanosecond() {
            0 => until,
            _ => Timestamp::from_second(until.as_second() + 1).unwrap_or(until),
        };
        ObjectRetention { mode: self.mode, retain_until: rounded }
    }
}

/// How evidence objects are kept from deletion, decided at start-up ([`plan_retention`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionPlan {
    /// The gateway sets `rule` on each evidence object (the bucket's default rule, if any, applies as well, and
    /// the longer and stricter of the two holds).
    Retain(RetentionRule),
    /// The gateway sets none: the bucket's default rule locks every object version written.
    BucketDefault(DefaultRetention),
    /// Nothing locks evidence objects, and no retention was asked for: Object Lock is enabled without a default
    /// rule, or the bucket has none, or the server does not support it.
    Unlocked,
}

/// Retention was asked for (`CUSTODIA_S3_RETENTION_DAYS`) and the bucket cannot give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{days} days of {mode} retention were asked for, and the bucket's Object Lock is {}: evidence would not be \
     locked",
    state.label()
)]
pub struct RetentionUnavailable {
    pub days: u32,
    pub mode: RetentionMode,
    pub state: ObjectLockState,
}

/// Decides how evidence is locked in a bucket in `state`, `rule` being the retention asked for (none: 0 days).
/// Retention asked for on a bucket without Object Lock is refused: an operator who asked for it must not get a
/// gateway that takes evidence in unlocked.
pub fn plan_retention(
    state: ObjectLockState,
    rule: Option<RetentionRule>,
) -> Result<RetentionPlan, RetentionUnavailable> {
    match (state, rule) {
        (ObjectLockState::Enabled { .. }, Some(rule)) => Ok(RetentionPlan::Retain(rule)),
        (ObjectLockState::Enabled { default_retention: Some(default) }, None) => {
            Ok(RetentionPlan::BucketDefault(default))
        }
        (_, None) => Ok(RetentionPlan::Unlocked),
        (state, Some(rule)) => Err(RetentionUnavailable { days: rule.days, mode: rule.mode, state }),
    }
}

/// Which retention to send for an object whose retention now is `existing`, when `wanted` is asked for at `now`:
/// none if what it has already keeps it as long and as strictly; otherwise the later date and the stricter mode of
/// the two, so that retention is extended, never shortened nor weakened. A retention whose date has passed holds
/// nothing, and counts as none.
pub fn retention_to_set(
    existing: Option<ObjectRetention>,
    wanted: ObjectRetention,
    now: Timestamp,
) -> Option<ObjectRetention> {
    match existing.filter(|existing| existing.retain_until > now) {
        None => Some(wanted),
        Some(existing) => {
            let kept = ObjectRetention {
                mode: existing.mode.max(wanted.mode),
                retain_until: existing.retain_until.max(wanted.retain_until),
            };
            (kept != existing).then_some(kept)
        }
    }
}

/// The body of a PutObjectRetention request.
pub fn retention_body(retention: &ObjectRetention) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode>\
         <RetainUntilDate>{}</RetainUntilDate></Retention>",
        retention.mode,
        retention.retain_until.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
}

/// Reads an answer to `GET /<bucket>?object-lock`: its status, and its body (a configuration, or an S3 error).
/// Anything that is neither a configuration nor an error S3 gives about one is a server that does not support
/// Object Lock only where it says so (`NotImplemented`, 501) or answers with something else altogether (garage
/// takes the request for a listing); any other error is returned, for the operator to see.
pub fn parse_lock_configuration(status: u16, body: &[u8]) -> Result<ObjectLockState, LockAnswer> {
    let text = std::str::from_utf8(body).ok();
    let document = text.and_then(|text| roxmltree::Document::parse(text).ok());
    let root = document.as_ref().map(|document| document.root_element());
    if (200..300).contains(&status) {
        let Some(root) = root else { return Ok(ObjectLockState::NotSupported) };
        if root.tag_name().name() != "ObjectLockConfiguration" {
            return Ok(ObjectLockState::NotSupported);
        }
        if child_text(root, "ObjectLockEnabled").map(str::trim) != Some("Enabled") {
            return Ok(ObjectLockState::NotEnabled);
        }
        let default_retention = match child(root, "Rule").and_then(|rule| child(rule, "DefaultRetention")) {
            None => None,
            Some(retention) => Some(
                default_retention(retention)
                    .ok_or(LockAnswer::Unreadable { reason: "a default retention rule without a mode and a period" })?,
            ),
        };
        return Ok(ObjectLockState::Enabled { default_retention });
    }
    let code = root
        .filter(|root| root.tag_name().name() == "Error")
        .and_then(|root| child_text(root, "Code"))
        .map(|code| code.trim().to_owned());
    match (status, code.as_deref()) {
        (404, Some("ObjectLockConfigurationNotFoundError")) => Ok(ObjectLockState::NotEnabled),
        (501, _) | (_, Some("NotImplemented")) => Ok(ObjectLockState::NotSupported),
        _ => Err(LockAnswer::Refused { status, code: code.unwrap_or_default() }),
    }
}

fn default_retention(node: roxmltree::Node<'_, '_>) -> Option<DefaultRetention> {
    let mode = RetentionMode::parse(child_text(node, "Mode")?)?;
    let number = |name| child_text(node, name).and_then(|text| text.trim().parse::<u32>().ok());
    let period = match (number("Days"), number("Years")) {
        (Some(days), None) => RetentionPeriod::Days(days),
        (None, Some(years)) => RetentionPeriod::Years(years),
        _ => return None,
    };
    Some(DefaultRetention { mode, period })
}

fn child<'a, 'input>(node: roxmltree::Node<'a, 'input>, name: &str) -> Option<roxmltree::Node<'a, 'input>> {
    node.children().find(|child| child.is_element() && child.tag_name().name() == name)
}

fn child_text<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> Option<&'a str> {
    child(node, name).and_then(|child| child.text())
}

/// Reads an object version's retention from the headers of a HEAD or GET of it: none when it has none.
pub fn retention_from_headers(headers: &HeaderMap) -> Result<Option<ObjectRetention>, LockAnswer> {
    let header = |name: &str| headers.get(name).map(|value| value.to_str().map(str::trim));
    match (header("x-amz-object-lock-mode"), header("x-amz-object-lock-retain-until-date")) {
        (None, None) => Ok(None),
        (Some(Ok(mode)), Some(Ok(until))) => {
            let mode = RetentionMode::parse(mode).ok_or(LockAnswer::Unreadable { reason: "an unknown lock mode" })?;
            let retain_until =
                until.parse().map_err(|_| LockAnswer::Unreadable { reason: "an unreadable retain-until date" })?;
            Ok(Some(ObjectRetention { mode, retain_until }))
        }
        _ => Err(LockAnswer::Unreadable { reason: "a lock mode without a retain-until date, or one unreadable" }),
    }
}

/// An answer about Object Lock that is not what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LockAnswer {
    /// The server refused the request: its status and S3 error code (empty when it gave none).
    #[error("the server answered {status} {code}")]
    Refused { status: u16, code: String },
    #[error("the server's answer is unreadable: {reason}")]
    Unreadable { reason: &'static str },
}

/// A request about Object Lock that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectLockError {
    /// The store's credentials could not be had.
    #[error("no credentials to sign {what}")]
    Credentials {
        what: &'static str,
        #[source]
        source: object_store::Error,
    },
    /// The request could not be signed.
    #[error("could not sign {what}")]
    Signing {
        what: &'static str,
        #[source]
        source: object_store::Error,
    },
    /// The server could not be reached, or the answer not read.
    #[error("{what} did not reach the server, or its answer was cut off")]
    Transport {
        what: &'static str,
        #[source]
        source: HttpError,
    },
    /// The server answered, not as asked.
    #[error("{what} of {key}")]
    Answer {
        what: &'static str,
        /// The object's key, or the bucket's (`""`).
        key: String,
        #[source]
        source: LockAnswer,
    },
}

/// Requests about Object Lock to one S3 bucket, with the store's endpoint, credentials and region.
pub struct S3ObjectLock {
    http: HttpClient,
    credentials: AwsCredentialProvider,
    /// `<endpoint>/<bucket>`, path-style, as `object_store` addresses it.
    bucket_url: String,
    region: String,
}

impl fmt::Debug for S3ObjectLock {
    // The endpoint may be an address; the credentials are secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3ObjectLock").field("region", &self.region).finish_non_exhaustive()
    }
}

impl S3ObjectLock {
    /// Requests to the bucket `s3` stores in, at `bucket_url` (see [`bucket_url`]), in `region`, signed with the
    /// store's own credentials, through a client made with `options` (those the store was made with).
    pub fn new(
        s3: &AmazonS3,
        bucket_url: String,
        region: String,
        options: &ClientOptions,
    ) -> Result<Self, object_store::Error> {
        let http = ReqwestConnector::default().connect(options)?;
        Ok(Self { http, credentials: Arc::clone(s3.credentials()), bucket_url, region })
    }

    /// What the bucket answers to `GET /<bucket>?object-lock`.
    pub async fn state(&self) -> Result<ObjectLockState, ObjectLockError> {
        const WHAT: &str = "GetObjectLockConfiguration";
        let url = format!("{}?object-lock", self.bucket_url);
        let (status, _, body) = self.send(WHAT, Method::GET, &url, HeaderMap::new(), Bytes::new()).await?;
        parse_lock_configuration(status.as_u16(), &body).map_err(|source| ObjectLockError::Answer {
            what: WHAT,
            key: String::new(),
            source,
        })
    }

    /// The retention of the object at `key`'s current version, from a HEAD of it.
    pub async fn retention(&self, key: &Path) -> Result<Option<ObjectRetention>, ObjectLockError> {
        const WHAT: &str = "reading the retention";
        let (status, headers, _) =
            self.send(WHAT, Method::HEAD, &self.object_url(key), HeaderMap::new(), Bytes::new()).await?;
        let answer = match status.is_success() {
            true => retention_from_headers(&headers),
            false => Err(LockAnswer::Refused { status: status.as_u16(), code: String::new() }),
        };
        answer.map_err(|source| ObjectLockError::Answer { what: WHAT, key: key.to_string(), source })
    }

    /// Sets the retention of the object at `key`'s current version (PutObjectRetention, with the Content-MD5 S3
    /// requires of it). S3 refuses to shorten a COMPLIANCE retention, and a GOVERNANCE one without a bypass this
    /// never asks for.
    pub async fn set_retention(&self, key: &Path, retention: &ObjectRetention) -> Result<(), ObjectLockError> {
        const WHAT: &str = "PutObjectRetention";
        let body = Bytes::from(retention_body(retention));
        let mut headers = HeaderMap::new();
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
        headers.insert(HeaderName::from_static("content-md5"), header_value(&md5));
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        let url = format!("{}?retention", self.object_url(key));
        let (status, _, answer) = self.send(WHAT, Method::PUT, &url, headers, body).await?;
        if status.is_success() {
            return Ok(());
        }
        let source = LockAnswer::Refused { status: status.as_u16(), code: error_code(&answer).unwrap_or_default() };
        Err(ObjectLockError::Answer { what: WHAT, key: key.to_string(), source })
    }

    /// Makes the object at `key` kept at least as `wanted` asks, at `now`: its retention read, and extended where it
    /// is shorter or weaker ([`retention_to_set`]). Returns the retention sent, if one was.
    pub async fn retain_at_least(
        &self,
        key: &Path,
        wanted: ObjectRetention,
        now: Timestamp,
    ) -> Result<Option<ObjectRetention>, ObjectLockError> {
        let existing = self.retention(key).await?;
        let Some(retention) = retention_to_set(existing, wanted, now) else { return Ok(None) };
        self.set_retention(key, &retention).await?;
        Ok(Some(retention))
    }

    fn object_url(&self, key: &Path) -> String {
        let encoded: Vec<String> = key.as_ref().split('/').map(percent_encode).collect();
        format!("{}/{}", self.bucket_url, encoded.join("/"))
    }

    /// Sends one signed request, again after a pause while the server cannot be reached or fails on its side
    /// ([`ATTEMPTS`] in all); the last answer, whatever its status.
    async fn send(
        &self,
        what: &'static str,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ObjectLockError> {
        let mut pause = FIRST_RETRY_AFTER;
        let mut attempt = 1;
        loop {
            let sent = self.send_once(what, method.clone(), url, headers.clone(), body.clone()).await;
            let retry = match &sent {
                Ok((status, ..)) => status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS,
                Err(ObjectLockError::Transport { .. }) => true,
                Err(_) => false,
            };
            if !retry || attempt == ATTEMPTS {
                return sent;
            }
            tokio::time::sleep(pause).await;
            pause *= 4;
            attempt += 1;
        }
    }

    async fn send_once(
        &self,
        what: &'static str,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ObjectLockError> {
        let credential =
            self.credentials.get_credential().await.map_err(|source| ObjectLockError::Credentials { what, source })?;
        let mut request = http::Request::new(HttpRequestBody::from(body));
        *request.method_mut() = method;
        *request.uri_mut() = url.parse().map_err(|err: http::uri::InvalidUri| ObjectLockError::Signing {
            what,
            source: object_store::Error::Generic { store: OBJECT_LOCK_STORE, source: Box::new(err) },
        })?;
        *request.headers_mut() = headers;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|source| ObjectLockError::Signing { what, source })?;
        let response =
            self.http.execute(request).await.map_err(|source| ObjectLockError::Transport { what, source })?;
        let (parts, body) = response.into_parts();
        let body = body.bytes().await.map_err(|source| ObjectLockError::Transport { what, source })?;
        Ok((parts.status, parts.headers, body))
    }
}

/// Where `object_store` sends requests about `bucket`, path-style: `<endpoint>/<bucket>`, or AWS's regional
/// endpoint when none is named.
pub fn bucket_url(endpoint: Option<&str>, region: &str, bucket: &str) -> String {
    match endpoint {
        Some(endpoint) => format!("{}/{}", endpoint.trim_end_matches('/'), percent_encode(bucket)),
        None => format!("https://s3.{region}.amazonaws.com/{}", percent_encode(bucket)),
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters, as SigV4's canonical URI has a key's segments.
fn percent_encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn header_value(text: &str) -> HeaderValue {
    // Base64 is always a valid header value.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `<Code>` of an S3 error body.
fn error_code(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let document = roxmltree::Document::parse(text).ok()?;
    let root = document.root_element();
    (root.tag_name().name() == "Error").then(|| child_text(root, "Code").map(|code| code.trim().to_owned()))?
}

/// The retention every evidence object gets ([`RetentionRule`]), set through [`S3ObjectLock`] once it is written,
/// dated from the gateway's clock.
#[derive(Clone)]
pub struct EvidenceRetention {
    lock: Arc<S3ObjectLock>,
    rule: RetentionRule,
    now: Arc<dyn Fn() -> Timestamp + Send + Sync>,
}

impl fmt::Debug for EvidenceRetention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvidenceRetention").field("lock", &self.lock).field("rule", &self.rule).finish_non_exhaustive()
    }
}

impl EvidenceRetention {
    /// `rule` set on evidence objects through `lock`, dated from `now`.
    pub fn new(
        lock: Arc<S3ObjectLock>,
        rule: RetentionRule,
        now: impl Fn() -> Timestamp + Send + Sync + 'static,
    ) -> Self {
        Self { lock, rule, now: Arc::new(now) }
    }

    /// The retention set.
    pub fn rule(&self) -> RetentionRule {
        self.rule
    }

    /// Keeps the object at `path` (its full key in the bucket) for the rule's period from now, at least: a
    /// failure is an [`object_store::Error::Generic`] (transient) from [`OBJECT_LOCK_STORE`], its cause kept.
    pub async fn retain(&self, path: &Path) -> Result<(), object_store::Error> {
        let now = (self.now)();
        match self.lock.retain_at_least(path, self.rule.at(now), now).await {
            Ok(set) => {
                if let Some(set) = set {
                    tracing::debug!(object = %path, mode = %set.mode, until = %set.retain_until, "retention set");
                }
                Ok(())
            }
            Err(err) => {
                tracing::warn!(object = %path, error = %ErrorChain(&err), "could not set the retention of an evidence object");
                Err(object_store::Error::Generic { store: OBJECT_LOCK_STORE, source: Box::new(err) })
            }
        }
    }
}

/// An object store every object written through which is evidence, given [`EvidenceRetention`] once written:
/// a put, a completed multipart upload, the target of a copy or a rename. An error setting it fails the write
/// (the object is written, unlocked, and a retry of the same write locks it). Reads and deletes pass through.
/// Paths are the inner store's: wrap the bucket's store itself, beneath any prefix.
#[derive(Debug)]
pub struct RetainingStore {
    inner: Arc<dyn ObjectStore>,
    retention: EvidenceRetention,
}

impl RetainingStore {
    pub fn new(inner: Arc<dyn ObjectStore>, retention: EvidenceRetention) -> Self {
        Self { inner, retention }
    }
}

impl fmt::Display for RetainingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RetainingStore({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for RetainingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let put = self.inner.put_opts(location, payload, opts).await?;
        self.retention.retain(location).await?;
        Ok(put)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(RetainedUpload { upload, location: location.clone(), retention: self.retention.clone() }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[std::ops::Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, object_store::Result<Path>>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await?;
        self.retention.retain(to).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await?;
        self.retention.retain(to).await
    }
}

/// A multipart upload through a [`RetainingStore`]: the object is given retention once completed.
#[derive(Debug)]
struct RetainedUpload {
    upload: Box<dyn MultipartUpload>,
    location: Path,
    retention: EvidenceRetention,
}

#[async_trait::async_trait]
impl MultipartUpload for RetainedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.upload.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let put = self.upload.complete().await?;
        self.retention.retain(&self.location).await?;
        Ok(put)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.upload.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn the_three_answers_about_object_lock_are_told_apart() {
        let enabled = br#"<?xml version="1.0" encoding="UTF-8"?><ObjectLockConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><ObjectLockEnabled>Enabled</ObjectLockEnabled></ObjectLockConfiguration>"#;
        assert_eq!(parse_lock_configuration(200, enabled), Ok(ObjectLockState::Enabled { default_retention: None }));
        let with_rule = b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule>\
            <DefaultRetention><Mode>COMPLIANCE</Mode><Years>7</Years></DefaultRetention></Rule></ObjectLockConfiguration>";
        let rule = DefaultRetention { mode: RetentionMode::Compliance, period: RetentionPeriod::Years(7) };
        assert_eq!(
            parse_lock_configuration(200, with_rule),
            Ok(ObjectLockState::Enabled { default_retention: Some(rule) })
        );
        let not_found = b"<Error><Code>ObjectLockConfigurationNotFoundError</Code><Message>m</Message></Error>";
        assert_eq!(parse_lock_configuration(404, not_found), Ok(ObjectLockState::NotEnabled));
        let not_implemented = b"<Error><Code>NotImplemented</Code><Message>m</Message></Error>";
        assert_eq!(parse_lock_configuration(501, not_implemented), Ok(ObjectLockState::NotSupported));
        assert_eq!(parse_lock_configuration(400, not_implemented), Ok(ObjectLockState::NotSupported));
        // A server that takes the subresource for a listing.
        let listing = b"<ListBucketResult><Name>custodia</Name></ListBucketResult>";
        assert_eq!(parse_lock_configuration(200, listing), Ok(ObjectLockState::NotSupported));
        // Other errors are the operator's to see, not a verdict.
        let denied = b"<Error><Code>AccessDenied</Code></Error>";
        assert_eq!(
            parse_lock_configuration(403, denied),
            Err(LockAnswer::Refused { status: 403, code: "AccessDenied".into() })
        );
        assert_eq!(
            parse_lock_configuration(404, b"<Error><Code>NoSuchBucket</Code></Error>"),
            Err(LockAnswer::Refused { status: 404, code: "NoSuchBucket".into() })
        );
        let half_rule = b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule>\
            <DefaultRetention><Mode>COMPLIANCE</Mode></DefaultRetention></Rule></ObjectLockConfiguration>";
        assert!(matches!(parse_lock_configuration(200, half_rule), Err(LockAnswer::Unreadable { .. })));
    }

    #[test]
    fn retention_is_extended_or_made_stricter_never_shortened_nor_weakened() {
        let now = at("2030-01-01T00:00:00Z");
        let governance = |until| ObjectRetention { mode: RetentionMode::Governance, retain_until: at(until) };
        let compliance = |until| ObjectRetention { mode: RetentionMode::Compliance, retain_until: at(until) };
        let wanted = compliance("2037-01-01T00:00:00Z");
        // None, or one that has lapsed: what is asked.
        assert_eq!(retention_to_set(None, wanted, now), Some(wanted));
        assert_eq!(retention_to_set(Some(compliance("2029-01-01T00:00:00Z")), wanted, now), Some(wanted));
        // As long and as strict already, or more: nothing is sent.
        assert_eq!(retention_to_set(Some(wanted), wanted, now), None);
        assert_eq!(retention_to_set(Some(compliance("2040-01-01T00:00:00Z")), wanted, now), None);
        // Shorter: extended, in its mode or a stricter one.
        assert_eq!(retention_to_set(Some(compliance("2031-01-01T00:00:00Z")), wanted, now), Some(wanted));
        assert_eq!(retention_to_set(Some(governance("2031-01-01T00:00:00Z")), wanted, now), Some(wanted));
        // Longer but weaker: made stricter, its date kept.
        assert_eq!(
            retention_to_set(Some(governance("2040-01-01T00:00:00Z")), wanted, now),
            Some(compliance("2040-01-01T00:00:00Z"))
        );
        // Stricter and shorter: extended, still the stricter.
        assert_eq!(
            retention_to_set(Some(compliance("2031-01-01T00:00:00Z")), governance("2037-01-01T00:00:00Z"), now),
            Some(compliance("2037-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn a_rule_dates_retention_in_whole_seconds_from_now() {
        let rule = RetentionRule { mode: RetentionMode::Governance, days: 2 };
        let retention = rule.at(at("2030-01-01T10:00:00.25Z"));
        assert_eq!(retention.retain_until, at("2030-01-03T10:00:01Z"));
        let body = retention_body(&retention);
        assert!(
            body.contains("<Mode>GOVERNANCE</Mode><RetainUntilDate>2030-01-03T10:00:01Z</RetainUntilDate>"),
            "{body}"
        );
    }

    #[test]
    fn retention_asked_for_without_object_lock_is_refused_and_none_asked_for_is_not() {
        let rule = RetentionRule { mode: RetentionMode::Compliance, days: 3650 };
        let default = DefaultRetention { mode: RetentionMode::Governance, period: RetentionPeriod::Days(30) };
        let enabled = ObjectLockState::Enabled { default_retention: Some(default) };
        assert_eq!(plan_retention(enabled, Some(rule)), Ok(RetentionPlan::Retain(rule)));
        assert_eq!(plan_retention(enabled, None), Ok(RetentionPlan::BucketDefault(default)));
        let bare = ObjectLockState::Enabled { default_retention: None };
        assert_eq!(plan_retention(bare, None), Ok(RetentionPlan::Unlocked));
        for state in [ObjectLockState::NotEnabled, ObjectLockState::NotSupported] {
            assert_eq!(plan_retention(state, None), Ok(RetentionPlan::Unlocked));
            let refused = plan_retention(state, Some(rule)).unwrap_err();
            assert_eq!(refused.state, state);
            assert!(refused.to_string().contains(state.label()), "{refused}");
        }
    }

    #[test]
    fn retention_is_read_from_an_objects_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(retention_from_headers(&headers), Ok(None));
        headers.insert("x-amz-object-lock-mode", HeaderValue::from_static("COMPLIANCE"));
        assert!(retention_from_headers(&headers).is_err(), "a mode without a date");
        headers.insert("x-amz-object-lock-retain-until-date", HeaderValue::from_static("2031-02-03T04:05:06.000Z"));
        assert_eq!(
            retention_from_headers(&headers),
            Ok(Some(ObjectRetention { mode: RetentionMode::Compliance, retain_until: at("2031-02-03T04:05:06Z") }))
        );
        headers.insert("x-amz-object-lock-mode", HeaderValue::from_static("LOCKED"));
        assert!(retention_from_headers(&headers).is_err());
    }

    #[test]
    fn keys_and_buckets_are_addressed_path_style_and_percent_encoded() {
        assert_eq!(bucket_url(Some("http://127.0.0.1:9000/"), "r", "evidence"), "http://127.0.0.1:9000/evidence");
        assert_eq!(bucket_url(None, "eu-west-3", "evidence"), "https://s3.eu-west-3.amazonaws.com/evidence");
        assert_eq!(percent_encode("a b+c~d"), "a%20b%2Bc~d");
    }

    proptest::proptest! {
        #[test]
        fn answers_of_any_shape_never_panic(status in 100u16..600, body in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..400)) {
            let _ = parse_lock_configuration(status, &body);
            let _ = error_code(&body);
        }

        #[test]
        fn configurations_of_any_text_never_panic(text in "<ObjectLockConfiguration>(<[A-Za-z]{1,20}>[A-Za-z0-9 ]{0,10}</[A-Za-z]{1,20}>){0,6}</ObjectLockConfiguration>") {
            let _ = parse_lock_configuration(200, text.as_bytes());
        }
    }
}
