//! Resumable uploads over tus 1.0.0 (core, creation, checksum and termination), so that tus-js-client, Uppy and
//! other tus clients can send evidence over links that drop.
//!
//! An upload in progress is a staging file, `uploads/<id>`, and a catalog row holding its durable offset. A PATCH
//! appends to the file, fsyncs, then moves the offset with a compare-and-set. Bytes past the durable offset (from a
//! PATCH cut off before its fsync) are cut away by the next PATCH, so the file and the offset never disagree.
//!
//! Staged bytes are not evidence. The PATCH that brings the last byte streams the file through
//! [`Gateway::ingest`], exactly as a direct upload, and only then is the upload removed. The stored offset never
//! reaches the length before that, so a client asking where it stands is never told that an upload is done when it
//! is not in custody.

use std::io::{ErrorKind, SeekFrom};
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};

use crate::extract::Path;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{head, options};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use custodia_catalog::UploadRow;
use custodia_core::{Action, CaseId, Label, Sha256Hasher};
use futures::{Stream, StreamExt as _};
use sha1::Digest as _;
use tokio::fs::File;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

use crate::api::{AppState, original_name};
use crate::auth::Caller;
use crate::gateway::{Gateway, GatewayError, UploadRequest, bad_input, new_id};
use crate::problem::Problem;

const VERSION: &str = "1.0.0";
const EXTENSIONS: &str = "creation,checksum,termination";
const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
const CHUNK_TYPE: &str = "application/offset+octet-stream";
/// An upload not finished within a day is removed.
const TTL_SECONDS: i64 = 24 * 3600;
/// A PATCH body that stalls this long counts as cut off, so that a dead mobile link cannot hold an upload's lock.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const READ_SIZE: usize = 256 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/uploads", options(discover).post(create))
        .route("/api/v1/uploads/{id}", head(status).patch(append).delete(terminate).post(method_override))
        .layer(middleware::from_fn(tus_resumable))
}

/// Every response names the protocol version; every request but discovery must speak it.
async fn tus_resumable(request: Request, next: Next) -> Response {
    let speaks_tus =
        request.method() == Method::OPTIONS || request.headers().get("tus-resumable").is_some_and(|v| v == VERSION);
    let mut response = if speaks_tus {
        next.run(request).await
    } else {
        let detail = format!("send Tus-Resumable: {VERSION}");
        let mut response =
            Problem::new(StatusCode::PRECONDITION_FAILED, "tus-version", "Unsupported tus version", detail)
                .into_response();
        response.headers_mut().insert("tus-version", HeaderValue::from_static(VERSION));
        response
    };
    response.headers_mut().insert("tus-resumable", HeaderValue::from_static(VERSION));
    response
}

fn tus_response<const N: usize>(status: StatusCode, headers: [(&'static str, String); N]) -> Result<Response, Problem> {
    let mut response = status.into_response();
    for (name, value) in headers {
        let value = HeaderValue::try_from(value).map_err(|err| Problem::internal(&err))?;
        response.headers_mut().insert(name, value);
    }
    Ok(response)
}

fn header_text<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, Problem> {
    headers.get(name).map(|v| v.to_str().map_err(|_| bad_input(name, "not ASCII").into())).transpose()
}

fn header_number(headers: &HeaderMap, name: &'static str) -> Result<Option<u64>, Problem> {
    header_text(headers, name)?
        .map(|text| text.trim().parse().map_err(|_| bad_input(name, "send a non-negative integer").into()))
        .transpose()
}

fn required_number(headers: &HeaderMap, name: &'static str) -> Result<u64, Problem> {
    header_number(headers, name)?.ok_or_else(|| bad_input(name, "this header is required").into())
}

fn too_large(detail: String) -> Problem {
    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", "Upload too large", detail)
}

fn gone(detail: &str) -> Problem {
    Problem::new(StatusCode::GONE, "upload-gone", "Upload gone", detail)
}

/// The upload's case and what the final ingest is told, from the creation's `Upload-Metadata`: comma-separated
/// `key base64(value)` pairs. It is checked when the upload is created and read again when it completes.
fn upload_request(metadata: &str) -> Result<(CaseId, UploadRequest), Problem> {
    let mut pairs = std::collections::HashMap::new();
    for pair in metadata.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
        let (key, encoded) = pair.split_once(' ').unwrap_or((pair, ""));
        let value = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| bad_input("upload-metadata", format!("the value of {key} is not base64 of UTF-8 text")))?;
        if pairs.insert(key, value).is_some() {
            return Err(bad_input("upload-metadata", format!("{key} is given twice")).into());
        }
    }
    // Empty values count as absent: browsers send an empty type for files they do not recognise.
    let text = |key: &str| pairs.get(key).map(String::as_str).filter(|value| !value.is_empty());
    let required = |key: &'static str| {
        text(key).ok_or_else(|| Problem::from(bad_input("upload-metadata", format!("{key} is required"))))
    };
    let case = CaseId::new(required("case")?).map_err(|err| bad_input("case", err))?;
    let request = UploadRequest {
        purpose: Label::new(required("purpose")?).map_err(|err| bad_input("purpose", err))?,
        media_type: Label::new(text("filetype").unwrap_or("application/octet-stream"))
            .map_err(|err| bad_input("filetype", err))?,
        original_name: text("filename").map(original_name).transpose()?,
        expected_sha256: text("sha256").map(str::parse).transpose().map_err(|err| bad_input("sha256", err))?,
        policy: None,
    };
    Ok((case, request))
}

fn staging_path(dir: &FsPath, id: &str) -> PathBuf {
    dir.join(id)
}

fn io_error(err: std::io::Error) -> GatewayError {
    GatewayError::internal("staging an upload", err)
}

// Discovery and creation.

async fn discover(State(state): State<AppState>) -> Result<Response, Problem> {
    tus_response(
        StatusCode::NO_CONTENT,
        [
            ("tus-version", VERSION.into()),
            ("tus-extension", EXTENSIONS.into()),
            ("tus-max-size", state.gateway.max_upload_bytes.to_string()),
            ("tus-checksum-algorithm", CHECKSUM_ALGORITHMS.into()),
        ],
    )
}

/// Resumable uploads one account may have open at once.
pub const OPEN_UPLOADS_PER_ACCOUNT: i64 = 4;

async fn create(State(state): State<AppState>, caller: Caller, headers: HeaderMap) -> Result<Response, Problem> {
    let gateway = &state.gateway;
    if headers.contains_key("upload-defer-length") {
        return Err(bad_input("upload-defer-length", "deferred lengths are not supported; send Upload-Length").into());
    }
    let length = required_number(&headers, "upload-length")?;
    if length == 0 {
        return Err(bad_input("upload-length", "an empty file is not evidence").into());
    }
    if length > gateway.max_upload_bytes {
        return Err(too_large(format!("uploads are at most {} bytes", gateway.max_upload_bytes)));
    }
    let metadata = header_text(&headers, "upload-metadata")?.unwrap_or_default();
    let (case, _) = upload_request(metadata)?;
    // Nobody stages bytes into a case they may not upload to.
    gateway.authorize(&caller, &case, Action::UploadArtefact).await?;
    // Nobody reserves the disk without limit: a few open uploads per account, declaring one largest upload's bytes
    // between them.
    // The checks and the creation take the account's quota turn, as direct uploads do, so that creations and
    // uploads at once cannot all pass the checks before any of them is counted.
    let _turn = gateway.quota_turn(&caller.account.id).await;
    let now = gateway.clock.unix_seconds();
    let (open, reserved) =
        gateway.catalog.open_uploads_of(&caller.account.id, now).await.map_err(GatewayError::from)?;
    if open >= OPEN_UPLOADS_PER_ACCOUNT {
        return Err(GatewayError::TooMany(format!(
            "you have {open} resumable uploads open; finish or delete one first (at most {OPEN_UPLOADS_PER_ACCOUNT})"
        ))
        .into());
    }
    if u64::try_from(reserved).unwrap_or(u64::MAX).saturating_add(length) > gateway.max_upload_bytes {
        return Err(too_large(format!(
            "your open resumable uploads already declare {reserved} bytes; together they may declare at most {}",
            gateway.max_upload_bytes
        )));
    }
    // The account's storage quota counts what it holds, what its open and unfinished uploads hold, and this one.
    let account = caller.account.id.as_str();
    let left = gateway.quota_left(account).await?;
    if length > left {
        return Err(gateway.quota_exceeded(left).into());
    }
    gateway.take_upload_allowance(account)?;
    // Expired uploads go lazily too, so a gateway that runs for weeks does not collect them; a failure to clean up
    // must not refuse an upload.
    if let Err(err) = remove_expired(gateway, &state.uploads_dir).await {
        tracing::warn!(error = %err, "could not remove expired uploads");
    }

    let row = UploadRow {
        id: new_id("upl"),
        case_id: case.to_string(),
        account_id: caller.account.id.clone(),
        length: i64::try_from(length).map_err(|err| bad_input("upload-length", err))?,
        offset: 0,
        metadata: metadata.to_owned(),
        expires_at: gateway.clock.unix_seconds() + TTL_SECONDS,
    };
    let path = staging_path(&state.uploads_dir, &row.id);
    create_staging(&state.uploads_dir, &path).await.map_err(io_error)?;
    if let Err(err) = gateway.catalog.create_upload(&row).await {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(GatewayError::from(err).into());
    }
    tracing::info!(upload = %row.id, case = %case, length, by = %caller.account.id, "resumable upload created");
    tus_response(StatusCode::CREATED, [(header::LOCATION.as_str(), format!("/api/v1/uploads/{}", row.id))])
}

/// An empty staging file, durable before any offset counts on it.
async fn create_staging(dir: &FsPath, path: &FsPath) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    tokio::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).await?;
    File::open(dir).await?.sync_all().await
}

// Status, termination, expiry.

/// The caller's own upload, if it has not expired. Anyone else's is not found.
async fn owned_upload(state: &AppState, caller: &Caller, id: &str) -> Result<UploadRow, Problem> {
    caller.require_scope(Action::UploadArtefact)?;
    let row = state.gateway.catalog.upload(id).await.map_err(GatewayError::from)?;
    let Some(row) = row.filter(|row| row.account_id == caller.account.id) else {
        return Err(Problem::not_found(format!("you have no upload {id}")));
    };
    if row.expires_at <= state.gateway.clock.unix_seconds() {
        remove_upload(&state.gateway, &state.uploads_dir, &row.id).await?;
        return Err(gone("the upload expired before it was finished; start it again"));
    }
    Ok(row)
}

async fn status(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Response, Problem> {
    let row = owned_upload(&state, &caller, &id).await?;
    let mut response = tus_response(
        StatusCode::OK,
        [
            ("upload-offset", row.offset.to_string()),
            ("upload-length", row.length.to_string()),
            (header::CACHE_CONTROL.as_str(), "no-store".into()),
        ],
    )?;
    if !row.metadata.is_empty() {
        let metadata = HeaderValue::try_from(row.metadata).map_err(|err| Problem::internal(&err))?;
        response.headers_mut().insert("upload-metadata", metadata);
    }
    Ok(response)
}

async fn terminate(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Response, Problem> {
    let row = owned_upload(&state, &caller, &id).await?;
    let _lock = lock(&staging_path(&state.uploads_dir, &row.id)).await?;
    remove_upload(&state.gateway, &state.uploads_dir, &row.id).await?;
    tracing::info!(upload = %row.id, "resumable upload terminated");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// tus lets clients behind proxies that pass only GET and POST send PATCH and DELETE as a POST.
async fn method_override(
    state: State<AppState>,
    caller: Caller,
    id: Path<String>,
    descriptors: Option<axum::Extension<crate::listen::Descriptors>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    match headers.get("x-http-method-override").map(HeaderValue::as_bytes) {
        Some(b"PATCH") => append(state, caller, id, descriptors, headers, body).await,
        Some(b"DELETE") => terminate(state, caller, id).await,
        _ => Err(Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "POST to an upload needs X-HTTP-Method-Override: PATCH or DELETE",
        )),
    }
}

/// Removes an upload: the row first, so that no one is told of bytes that are gone.
async fn remove_upload(gateway: &Gateway, dir: &FsPath, id: &str) -> Result<(), GatewayError> {
    gateway.catalog.delete_upload(id).await?;
    match tokio::fs::remove_file(staging_path(dir, id)).await {
        Err(err) if err.kind() != ErrorKind::NotFound => Err(io_error(err)),
        _ => Ok(()),
    }
}

async fn remove_expired(gateway: &Gateway, dir: &FsPath) -> Result<usize, GatewayError> {
    let expired = gateway.catalog.expired_uploads(gateway.clock.unix_seconds()).await?;
    for row in &expired {
        remove_upload(gateway, dir, &row.id).await?;
    }
    Ok(expired.len())
}

/// Removes expired uploads, and staging files that no upload owns (left by a crash between creating the file and
/// its row). Call at start-up, before serving.
pub async fn sweep(gateway: &Gateway, dir: &FsPath) -> Result<usize, GatewayError> {
    let mut removed = remove_expired(gateway, dir).await?;
    let mut entries = match tokio::fs::read_dir(dir).await {
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(removed),
        entries => entries.map_err(io_error)?,
    };
    while let Some(entry) = entries.next_entry().await.map_err(io_error)? {
        if !entry.file_type().await.map_err(io_error)?.is_file() {
            continue;
        }
        let owned = match entry.file_name().to_str() {
            Some(id) => gateway.catalog.upload(id).await?.is_some(),
            None => false,
        };
        if !owned {
            tokio::fs::remove_file(entry.path()).await.map_err(io_error)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// An upload's advisory lock (flock on its staging file), held while it lives: one PATCH or DELETE at a time per
/// upload, even between gateway processes sharing the directory.
#[derive(Debug)]
struct UploadLock {
    _file: std::fs::File,
}

/// Locks an upload, or answers 423, which tus clients retry. `None` when its staging file is gone.
async fn lock(path: &FsPath) -> Result<Option<UploadLock>, Problem> {
    let file = match File::open(path).await {
        Ok(file) => file.into_std().await,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(Problem::internal(&err)),
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(UploadLock { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Err(Problem::new(
            StatusCode::LOCKED,
            "upload-locked",
            "Upload busy",
            "another request is writing to this upload; try again shortly",
        )),
        Err(std::fs::TryLockError::Error(err)) => Err(Problem::internal(&err)),
    }
}

// Appending.

/// The digest a client sent in `Upload-Checksum` for one PATCH body.
enum Checksum {
    Sha1(sha1::Sha1, Vec<u8>),
    Sha256(Sha256Hasher, Vec<u8>),
}

impl Checksum {
    fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, Problem> {
        let Some(text) = header_text(headers, "upload-checksum")? else { return Ok(None) };
        let (algorithm, encoded) =
            text.split_once(' ').ok_or_else(|| bad_input("upload-checksum", "send '<algorithm> <base64 digest>'"))?;
        let expected = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| bad_input("upload-checksum", "the digest is not base64"))?;
        match algorithm {
            "sha1" => Ok(Some(Self::Sha1(sha1::Sha1::new(), expected))),
            "sha256" => Ok(Some(Self::Sha256(Sha256Hasher::default(), expected))),
            other => {
                Err(bad_input("upload-checksum", format!("{other} is not supported; use {CHECKSUM_ALGORITHMS}")).into())
            }
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha1(hasher, _) => hasher.update(bytes),
            Self::Sha256(hasher, _) => hasher.update(bytes),
        }
    }

    fn matches(self) -> bool {
        match self {
            Self::Sha1(hasher, expected) => hasher.finalize().as_slice() == expected,
            Self::Sha256(hasher, expected) => hasher.finish().as_bytes().as_slice() == expected,
        }
    }
}

/// What a PATCH asks for, read from its headers.
struct Chunk {
    id: String,
    offset: u64,
    content_length: Option<u64>,
    checksum: Option<Checksum>,
}

async fn append(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    descriptors: Option<axum::Extension<crate::listen::Descriptors>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let content_type = header_text(&headers, header::CONTENT_TYPE.as_str())?.unwrap_or_default();
    if !content_type.split(';').next().is_some_and(|media| media.trim().eq_ignore_ascii_case(CHUNK_TYPE)) {
        let detail = format!("send PATCH bodies as Content-Type: {CHUNK_TYPE}");
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Wrong media type",
            detail,
        ));
    }
    let offset = required_number(&headers, "upload-offset")?;
    let content_length = header_number(&headers, header::CONTENT_LENGTH.as_str())?;
    let checksum = Checksum::from_headers(&headers)?;
    let row = owned_upload(&state, &caller, &id).await?;
    let case = CaseId::new(row.case_id).map_err(|err| Problem::internal(&err))?;
    state.gateway.authorize(&caller, &case, Action::UploadArtefact).await?;
    let chunk = Chunk { id: row.id, offset, content_length, checksum };
    // The upload's lock and its staging file, beside the connection ([`crate::listen::Descriptors`]).
    let places = crate::listen::Descriptors::take(descriptors.as_deref(), 2)?;
    // In a task of its own: a client that hangs up drops this handler, and must not cancel the work between the
    // fsync and the offset update, or a registration half-way.
    tokio::spawn(async move {
        let _places = places;
        receive(state, caller, chunk, body).await
    })
    .await
    .map_err(|err| Problem::internal(&err))?
}

async fn receive(state: AppState, caller: Caller, mut chunk: Chunk, body: Body) -> Result<Response, Problem> {
    let gateway = &state.gateway;
    let path = staging_path(&state.uploads_dir, &chunk.id);
    let Some(_lock) = lock(&path).await? else { return Err(lost(&state, &chunk.id).await) };
    // Read again under the lock: another PATCH may have moved the offset since.
    let row = gateway.catalog.upload(&chunk.id).await.map_err(GatewayError::from)?;
    let row = row.ok_or_else(|| Problem::not_found(format!("you have no upload {}", chunk.id)))?;
    let (durable, length) = (row.offset as u64, row.length as u64);
    if chunk.offset != durable {
        let detail =
            format!("the upload is at offset {durable}, not {}; ask with HEAD and resume from there", chunk.offset);
        return Err(Problem::new(StatusCode::CONFLICT, "offset-mismatch", "Offset mismatch", detail));
    }
    let room = length - durable;
    if chunk.content_length.is_some_and(|n| n > room) {
        return Err(too_large(format!("only {room} bytes of the declared Upload-Length remain")));
    }
    let Some(mut file) = open_at(&path, durable).await.map_err(io_error)? else {
        return Err(lost(&state, &chunk.id).await);
    };
    let received = copy_body(&mut file, body, room, chunk.checksum.as_mut()).await.map_err(io_error)?;
    let end = durable + received.bytes;

    let refusal = if received.too_long {
        Some(too_large(format!("only {room} bytes of the declared Upload-Length remain")))
    } else if let Some(checksum) = chunk.checksum {
        // A body cut short cannot be checked against its checksum, so none of it is kept.
        match &received.cut_off {
            Some(reason) => Some(cut_off(reason, 0, durable)),
            None if !checksum.matches() => Some(Problem::new(
                StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
                "checksum-mismatch",
                "Checksum mismatch",
                "the body does not match its Upload-Checksum; nothing of it was kept",
            )),
            None => None,
        }
    } else {
        None
    };
    if let Some(problem) = refusal {
        file.set_len(durable).await.map_err(io_error)?;
        return Err(problem);
    }
    file.sync_data().await.map_err(io_error)?;
    if end == length {
        return complete(&state, &caller, &row, &mut file).await;
    }
    if !gateway.catalog.advance_upload(&row.id, durable as i64, end as i64).await.map_err(GatewayError::from)? {
        return Err(Problem::not_found(format!("upload {} was removed while this request ran", row.id)));
    }
    match received.cut_off {
        Some(reason) => Err(cut_off(&reason, received.bytes, end)),
        None => tus_response(StatusCode::NO_CONTENT, [("upload-offset", end.to_string())]),
    }
}

fn cut_off(reason: &str, kept: u64, offset: u64) -> Problem {
    let detail = format!("the body was cut off ({reason}); {kept} bytes of it were kept; resume from offset {offset}");
    Problem::new(StatusCode::BAD_REQUEST, "upload-interrupted", "Upload cut off", detail)
}

/// The staging file is missing or shorter than its durable offset: the upload cannot go on.
async fn lost(state: &AppState, id: &str) -> Problem {
    tracing::error!(upload = %id, "a resumable upload's staged bytes are missing");
    if let Err(err) = remove_upload(&state.gateway, &state.uploads_dir, id).await {
        return err.into();
    }
    gone("the staged bytes of this upload were lost; start it again")
}

/// Opens the staging file for appending at the durable offset, cutting away what a PATCH cut off before its fsync
/// left beyond it. `None` if the file holds less than the offset.
async fn open_at(path: &FsPath, durable: u64) -> std::io::Result<Option<File>> {
    let mut file = tokio::fs::OpenOptions::new().read(true).write(true).open(path).await?;
    let on_disk = file.metadata().await?.len();
    if on_disk < durable {
        return Ok(None);
    }
    if on_disk > durable {
        file.set_len(durable).await?;
    }
    file.seek(SeekFrom::Start(durable)).await?;
    Ok(Some(file))
}

struct Received {
    bytes: u64,
    /// Why the body ended early: the connection failed or stalled.
    cut_off: Option<String>,
    /// The body would have gone past the upload's length.
    too_long: bool,
}

async fn copy_body(
    file: &mut File,
    body: Body,
    room: u64,
    mut checksum: Option<&mut Checksum>,
) -> std::io::Result<Received> {
    let mut received = Received { bytes: 0, cut_off: None, too_long: false };
    let mut body = body.into_data_stream();
    loop {
        let data = match tokio::time::timeout(IDLE_TIMEOUT, body.next()).await {
            Ok(None) => break,
            Ok(Some(Ok(data))) => data,
            Ok(Some(Err(err))) => {
                received.cut_off = Some(err.to_string());
                break;
            }
            Err(_) => {
                received.cut_off = Some(format!("no data for {} seconds", IDLE_TIMEOUT.as_secs()));
                break;
            }
        };
        if received.bytes + data.len() as u64 > room {
            received.too_long = true;
            break;
        }
        if let Some(checksum) = checksum.as_deref_mut() {
            checksum.update(&data);
        }
        file.write_all(&data).await?;
        received.bytes += data.len() as u64;
    }
    file.flush().await?;
    Ok(received)
}

/// Every byte is staged: register the artefact as a direct upload would, then remove the upload.
///
/// Only an upload whose reservation still counts against its account's quota completes. The last PATCH may have
/// begun before the upload expired and ended after it (or after another request removed it as expired), when its
/// reservation no longer counts and the room it held may be another upload's: then it is refused as expired and
/// its staged bytes are removed, so nothing is stored uncharged. One that has not expired is held open for the
/// ingest in the same statement, so its reservation counts until its artefact does.
async fn complete(state: &AppState, caller: &Caller, row: &UploadRow, file: &mut File) -> Result<Response, Problem> {
    let now = state.gateway.clock.unix_seconds();
    let held = state.gateway.catalog.hold_upload(&row.id, now, now + TTL_SECONDS).await.map_err(GatewayError::from)?;
    if !held {
        remove_upload(&state.gateway, &state.uploads_dir, &row.id).await?;
        tracing::info!(upload = %row.id, "a resumable upload's last bytes came after it expired");
        return Err(gone("the upload expired before its last bytes arrived; nothing of it was kept; start it again"));
    }
    let registered = async {
        let (case, request) = upload_request(&row.metadata)?;
        file.seek(SeekFrom::Start(0)).await.map_err(io_error)?;
        Ok::<_, Problem>(state.gateway.ingest(caller, &case, request, read_file(file)).await?)
    }
    .await;
    let registered = match registered {
        Ok(registered) => registered,
        Err(problem) => {
            // A refusal (digest mismatch, role) is final. After a server error the upload stays at its offset, so
            // that the client can send the last chunk again.
            if problem.status().is_client_error() {
                remove_upload(&state.gateway, &state.uploads_dir, &row.id).await?;
            }
            return Err(problem);
        }
    };
    if let Err(err) = remove_upload(&state.gateway, &state.uploads_dir, &row.id).await {
        tracing::warn!(upload = %row.id, error = %err, "registered, but could not remove the finished upload");
    }
    tracing::info!(upload = %row.id, artefact = %registered.artefact, "resumable upload registered");
    tus_response(
        StatusCode::NO_CONTENT,
        [
            ("upload-offset", row.length.to_string()),
            ("custodia-artefact", format!("/api/v1/artefacts/{}", registered.artefact)),
        ],
    )
}

fn read_file(file: &mut File) -> impl Stream<Item = std::io::Result<Bytes>> + Send + '_ {
    futures::stream::try_unfold(file, |file| async move {
        let mut buffer = BytesMut::with_capacity(READ_SIZE);
        let read = file.read_buf(&mut buffer).await?;
        Ok((read > 0).then(|| (buffer.freeze(), file)))
    })
}
