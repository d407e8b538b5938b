//! Resumable uploads over tus 1.0.0 (core, creation, checksum and termination), so that tus-js-client, Uppy and
//! other tus clients can send evidence over links that drop.
//!
//! An upload in progress is a catalog row holding its durable offset, and its bytes so far as chunk objects in the
//! artefact store's staging area (`staging/tus/`, [`custodia_store::ArtefactStore::write_chunk`]): in the bucket
//! that every gateway behind a load balancer shares, or in the embedded local directory, on the same code path. So
//! a PATCH may reach any gateway. Each PATCH writes its body as one new chunk object, then records the chunk and
//! moves the offset in one catalog transaction that is a compare-and-set on the offset
//! ([`custodia_catalog::Catalog::record_upload_chunk`]): of two requests racing at one offset, on one gateway or
//! two, one alone records its chunk (204) and the other is told the offset moved (409), its object deleted unread.
//! An upload's bytes are exactly its recorded chunks in offset order; an object whose write succeeded but whose
//! transaction did not is no part of it, and the start-up sweep removes it once it is older than any upload could
//! be ([`uploads::sweep`]), never sooner, since a younger one may be another gateway's request under way.
//!
//! A body cut off midway (the link dropped, or it stalled for [`IDLE_TIMEOUT`]) keeps what arrived, as tus allows:
//! those bytes become a chunk and the answer says where to resume, which is also what HEAD says, so a client that
//! asks (tus-js-client does) sends only the rest. With an `Upload-Checksum` nothing of a cut-off body is kept,
//! since it cannot be checked. A checksum is checked before the chunk is an object at all: a mismatch leaves none.
//!
//! Staged bytes are not evidence. The PATCH that brings the last byte writes it as its chunk, then the service
//! takes the upload into custody ([`uploads::complete`]: it claims the upload's completion, so that one gateway
//! alone does, and streams the chunks in order through [`Gateway::ingest`], exactly as a direct upload); only
//! then are the upload and its chunks removed. The stored offset never reaches the length before that, so a client
//! asking where it stands is never told that an upload is done when it is not in custody. The claim is renewed
//! while the ingest runs, and a PATCH or DELETE meanwhile is answered 423, which tus clients retry; a claim left
//! unrenewed (its gateway died) is released by the next request, and the upload resumes from its offset. A crash
//! at any point leaves the upload resumable or the artefact in custody.
//!
//! Concurrency comes from the catalog alone: no gateway holds a lock of its own on an upload.

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
use bytes::Bytes;
use custodia_catalog::{UploadChunk, UploadRow};
use custodia_core::{Action, CaseId, Label, Sha256Hasher};
use futures::{Stream, StreamExt as _};
use sha1::Digest as _;

use crate::api::original_name;
use crate::auth::Caller;
use crate::problem::Problem;
use crate::state::AppState;
use custodia_service::gateway::{Gateway, GatewayError, UploadRequest, bad_input};
use custodia_service::uploads::{self, CompletionError};

const VERSION: &str = "1.0.0";
const EXTENSIONS: &str = "creation,checksum,termination";
const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";
const CHUNK_TYPE: &str = "application/offset+octet-stream";
/// A PATCH body that stalls this long counts as cut off, so that a dead mobile link does not hold a request (and
/// its chunk's file or multipart upload) open.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

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

// Discovery and creation.

async fn discover(State(state): State<AppState>) -> Result<Response, Problem> {
    tus_response(
        StatusCode::NO_CONTENT,
        [
            ("tus-version", VERSION.into()),
            ("tus-extension", EXTENSIONS.into()),
            ("tus-max-size", state.gateway.max_upload_bytes().to_string()),
            ("tus-checksum-algorithm", CHECKSUM_ALGORITHMS.into()),
        ],
    )
}

async fn create(State(state): State<AppState>, caller: Caller, headers: HeaderMap) -> Result<Response, Problem> {
    let gateway = &state.gateway;
    if headers.contains_key("upload-defer-length") {
        return Err(bad_input("upload-defer-length", "deferred lengths are not supported; send Upload-Length").into());
    }
    let length = required_number(&headers, "upload-length")?;
    let metadata = header_text(&headers, "upload-metadata")?.unwrap_or_default();
    let (case, _) = upload_request(metadata)?;
    let row = uploads::open(gateway, &caller, &case, length, metadata).await?;
    tus_response(StatusCode::CREATED, [(header::LOCATION.as_str(), format!("/api/v1/uploads/{}", row.id))])
}

// Status, termination, expiry.

/// The caller's own upload, if it has not expired. Anyone else's is not found.
async fn owned_upload(state: &AppState, caller: &Caller, id: &str) -> Result<UploadRow, Problem> {
    caller.require_scope(Action::UploadArtefact)?;
    let row = state.gateway.catalog().upload(id).await.map_err(GatewayError::from)?;
    let Some(row) = row.filter(|row| row.account_id == caller.account_id()) else {
        return Err(Problem::not_found(format!("you have no upload {id}")));
    };
    if row.expires_at <= state.gateway.clock().unix_seconds() {
        uploads::remove_upload(&state.gateway, &row.id, i64::MAX).await?;
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

/// Ends an upload, unless a gateway is taking it into custody now (423, as for a PATCH).
async fn terminate(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Response, Problem> {
    let gateway = &state.gateway;
    let row = owned_upload(&state, &caller, &id).await?;
    if !uploads::remove_upload(gateway, &row.id, uploads::claims_stale_before(gateway)).await? {
        return match gateway.catalog().upload(&row.id).await.map_err(GatewayError::from)? {
            Some(_) => Err(completing()),
            None => Err(Problem::not_found(format!("you have no upload {id}"))),
        };
    }
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

/// Another request is taking the upload into custody: tus clients retry on 423.
fn completing() -> Problem {
    Problem::new(
        StatusCode::LOCKED,
        "upload-locked",
        "Upload busy",
        "the upload's last bytes are being taken into custody; try again shortly",
    )
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
    // The chunk's file (or its upload to the store), and at completion the artefact's staging file, beside the
    // connection ([`crate::listen::Descriptors`]).
    let places = crate::listen::Descriptors::take(descriptors.as_deref(), 2)?;
    // In a task of its own: a client that hangs up drops this handler, and must not cancel the work between the
    // chunk's write and its record, or a registration half-way.
    tokio::spawn(async move {
        let _places = places;
        receive(state, caller, chunk, body).await
    })
    .await
    .map_err(|err| Problem::internal(&err))?
}

/// The upload as it stands now, with a claim on its completion that its gateway stopped renewing released (and
/// its last chunk's object deleted): the upload goes on from its offset.
async fn current(gateway: &Gateway, id: &str) -> Result<UploadRow, Problem> {
    let not_found = || Problem::not_found(format!("you have no upload {id}"));
    let row = gateway.catalog().upload(id).await.map_err(GatewayError::from)?.ok_or_else(not_found)?;
    let stale_before = uploads::claims_stale_before(gateway);
    let Some(claim) = row.completing.as_ref().filter(|claim| claim.renewed_at < stale_before) else {
        return Ok(row);
    };
    if gateway.catalog().release_upload_claim(id, &claim.object, stale_before).await.map_err(GatewayError::from)? {
        tracing::warn!(upload = %id, "released the completion claim of a gateway that stopped renewing it");
        uploads::delete_chunk(gateway, &claim.object).await;
    }
    gateway.catalog().upload(id).await.map_err(GatewayError::from)?.ok_or_else(not_found)
}

async fn receive(state: AppState, caller: Caller, chunk: Chunk, body: Body) -> Result<Response, Problem> {
    let gateway = &state.gateway;
    // Read again: another request, on this gateway or another, may have moved the offset since.
    let row = current(gateway, &chunk.id).await?;
    if row.completing.is_some() {
        return Err(completing());
    }
    let (durable, length) = (row.offset as u64, row.length as u64);
    if chunk.offset != durable {
        return Err(offset_mismatch(durable, chunk.offset));
    }
    let room = length - durable;
    if chunk.content_length.is_some_and(|n| n > room) {
        return Err(too_large(format!("only {room} bytes of the declared Upload-Length remain")));
    }
    let name = uploads::chunk_name(&row.id, durable);
    let mut received = Received::default();
    let written = gateway.artefacts().write_chunk(&name, chunk_body(body, room, chunk.checksum, &mut received)).await;
    // A refused body was never made an object: the store dropped what it had of it.
    if received.too_long {
        return Err(too_large(format!("only {room} bytes of the declared Upload-Length remain")));
    }
    if received.checksum_failed {
        return Err(Problem::new(
            StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
            "checksum-mismatch",
            "Checksum mismatch",
            "the body does not match its Upload-Checksum; nothing of it was kept",
        ));
    }
    if let (Some(reason), true) = (&received.cut_off, received.checked) {
        // A body cut short cannot be checked against its checksum, so none of it is kept.
        return Err(cut_off(reason, 0, durable));
    }
    let size = written.map_err(GatewayError::from)?;
    if size == 0 {
        uploads::delete_chunk(gateway, &name).await;
        return match received.cut_off {
            Some(reason) => Err(cut_off(&reason, 0, durable)),
            None => tus_response(StatusCode::NO_CONTENT, [("upload-offset", durable.to_string())]),
        };
    }
    let end = durable + size;
    if end == length {
        return complete(&state, &caller, &row, &name, size).await;
    }
    let recorded = UploadChunk { offset: row.offset, size: size as i64, object: name.clone() };
    let now = gateway.clock().unix_seconds();
    // Should the transaction fail, whether it was committed is not known: the object is left to the sweep, which
    // removes it only if no upload holds it.
    if !gateway.catalog().record_upload_chunk(&row.id, &recorded, now).await.map_err(GatewayError::from)? {
        uploads::delete_chunk(gateway, &name).await;
        return Err(not_taken(gateway, &row.id, durable, "").await);
    }
    match received.cut_off {
        Some(reason) => Err(cut_off(&reason, size, end)),
        None => tus_response(StatusCode::NO_CONTENT, [("upload-offset", end.to_string())]),
    }
}

fn offset_mismatch(durable: u64, sent: u64) -> Problem {
    let detail = format!("the upload is at offset {durable}, not {sent}; ask with HEAD and resume from there");
    Problem::new(StatusCode::CONFLICT, "offset-mismatch", "Offset mismatch", detail)
}

fn cut_off(reason: &str, kept: u64, offset: u64) -> Problem {
    let detail = format!("the body was cut off ({reason}); {kept} bytes of it were kept; resume from offset {offset}");
    Problem::new(StatusCode::BAD_REQUEST, "upload-interrupted", "Upload cut off", detail)
}

/// Why a chunk written from offset `from` could not be recorded (or its completion claimed): the upload is gone,
/// expired (then removed: `expired` says what of it), being completed by another request, or at another offset
/// (another request, perhaps on another gateway, recorded its chunk first).
async fn not_taken(gateway: &Gateway, id: &str, from: u64, expired: &str) -> Problem {
    let row = match gateway.catalog().upload(id).await {
        Ok(row) => row,
        Err(err) => return GatewayError::from(err).into(),
    };
    let Some(row) = row else {
        return Problem::not_found(format!(
            "upload {id} was finished or removed by another request while this one ran: look for its artefact in \
             the case before you upload it again"
        ));
    };
    if row.expires_at <= gateway.clock().unix_seconds() {
        if let Err(err) = uploads::remove_upload(gateway, id, i64::MAX).await {
            return err.into();
        }
        tracing::info!(upload = %id, "a resumable upload's bytes came after it expired");
        let detail =
            if expired.is_empty() { "the upload expired before it was finished; start it again" } else { expired };
        return gone(detail);
    }
    if row.completing.is_some() {
        return completing();
    }
    offset_mismatch(row.offset as u64, from)
}

/// What became of a PATCH body as it was read ([`chunk_body`]).
#[derive(Debug, Default)]
struct Received {
    /// Why the body ended early: the connection failed or stalled.
    cut_off: Option<String>,
    /// The body would have gone past the upload's length.
    too_long: bool,
    /// It came with an `Upload-Checksum`.
    checked: bool,
    /// The body did not match its `Upload-Checksum`.
    checksum_failed: bool,
}

/// The PATCH body as a chunk's bytes, which ends in an error (so that the store keeps nothing of it) when the body
/// would pass the `room` left in the upload, or does not match its checksum, or is cut off while it has one; a body
/// cut off without a checksum just ends, so that what arrived is kept. `received` says which.
fn chunk_body(
    body: Body,
    room: u64,
    checksum: Option<Checksum>,
    received: &mut Received,
) -> impl Stream<Item = Result<Bytes, &'static str>> + Send + '_ {
    /// The error that makes the store keep nothing; `received` says why.
    const REFUSED: &str = "the body was refused";
    received.checked = checksum.is_some();
    let state = (body.into_data_stream(), 0u64, checksum, received, false);
    futures::stream::unfold(state, move |(mut body, mut bytes, mut checksum, received, done)| async move {
        if done {
            return None;
        }
        let cut = match tokio::time::timeout(IDLE_TIMEOUT, body.next()).await {
            Ok(Some(Ok(data))) => {
                bytes += data.len() as u64;
                if bytes > room {
                    received.too_long = true;
                    return Some((Err(REFUSED), (body, bytes, checksum, received, true)));
                }
                if let Some(checksum) = &mut checksum {
                    checksum.update(&data);
                }
                return Some((Ok(data), (body, bytes, checksum, received, false)));
            }
            Ok(None) => {
                let matches = checksum.take().is_none_or(Checksum::matches);
                received.checksum_failed = !matches;
                return (!matches).then_some((Err(REFUSED), (body, bytes, checksum, received, true)));
            }
            Ok(Some(Err(err))) => err.to_string(),
            Err(_) => format!("no data for {} seconds", IDLE_TIMEOUT.as_secs()),
        };
        received.cut_off = Some(cut);
        let keep = checksum.is_none();
        (!keep).then_some((Err(REFUSED), (body, bytes, checksum, received, true)))
    })
}

/// Every byte is staged, the last ones in the chunk `last` of `size` bytes: the upload is taken into custody
/// ([`uploads::complete`]), and the answer says where its artefact is.
async fn complete(
    state: &AppState,
    caller: &Caller,
    row: &UploadRow,
    last: &str,
    size: u64,
) -> Result<Response, Problem> {
    let gateway = &state.gateway;
    let request = match upload_request(&row.metadata) {
        Ok(request) => request,
        Err(problem) => {
            // Checked when the upload was created: metadata that no longer reads is final.
            uploads::delete_chunk(gateway, last).await;
            uploads::remove_upload(gateway, &row.id, i64::MAX).await?;
            return Err(problem);
        }
    };
    match uploads::complete(gateway, caller, row, request, last, size).await {
        Ok(registered) => tus_response(
            StatusCode::NO_CONTENT,
            [
                ("upload-offset", row.length.to_string()),
                ("custodia-artefact", format!("/api/v1/artefacts/{}", registered.artefact)),
            ],
        ),
        Err(CompletionError::NotClaimed) => {
            let expired = "the upload expired before its last bytes arrived; nothing of it was kept; start it again";
            Err(not_taken(gateway, &row.id, row.offset as u64, expired).await)
        }
        Err(CompletionError::Lost(_)) => Err(gone("the staged bytes of this upload were lost; start it again")),
        Err(CompletionError::Refused(err) | CompletionError::Failed(err)) => Err(err.into()),
    }
}
