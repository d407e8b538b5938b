//! Resumable uploads over tus 1.0.0 (core, creation, checksum and termination), so that tus-js-client, Uppy and
//! other tus clients can send evidence over links that drop.
//!
//! This module speaks the protocol and nothing more: it reads the headers (`Tus-Resumable`, `Upload-Length`,
//! `Upload-Metadata`, `Upload-Offset`, `Upload-Checksum`, the method override), checks a PATCH body against its
//! checksum and cuts off one that stalls for [`IDLE_TIMEOUT`], and answers each outcome and error of the upload
//! sessions with its status and headers. The sessions themselves (who owns an upload, its expiry, the offset's
//! compare-and-set, the chunks' objects, the claim on a completion, and whether an upload survives a failed chunk)
//! are [`custodia_service::uploads`]'s, decided from typed outcomes, never from a status.
//!
//! What tus clients are told: a chunk recorded is 204 with the new `Upload-Offset`; a PATCH racing another at one
//! offset, on one gateway or two, is 409 (ask with HEAD and resume). A body cut off midway keeps what arrived, as
//! tus allows: the answer (400 `upload-interrupted`) says where to resume, which is also what HEAD says, so a
//! client that asks (tus-js-client does) sends only the rest. With an `Upload-Checksum` nothing of a cut-off body
//! is kept, since it cannot be checked; a mismatch is 460, and leaves nothing. The PATCH that brings the last byte
//! takes the upload into custody before it is answered (204 with `Custodia-Artefact`); a PATCH or DELETE while
//! another request does that is 423, which tus clients retry. An expired upload is 410.

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
use custodia_core::{CaseId, Label, Sha256Hasher};
use custodia_store::BodyError;
use futures::{Stream, StreamExt as _};
use sha1::Digest as _;

use crate::api::original_name;
use crate::auth::Caller;
use crate::problem::Problem;
use crate::state::AppState;
use custodia_service::gateway::{GatewayError, UploadRequest, bad_input};
use custodia_service::uploads::{self, AppendOutcome, BodyFault, CutOff, UploadError};

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
/// `key base64(value)` pairs. It is checked when the upload is created and read again when it completes
/// ([`uploads::ReadMetadata`]).
fn upload_request(metadata: &str) -> Result<(CaseId, UploadRequest), GatewayError> {
    let mut pairs = std::collections::HashMap::new();
    for pair in metadata.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
        let (key, encoded) = pair.split_once(' ').unwrap_or((pair, ""));
        let value = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| bad_input("upload-metadata", format!("the value of {key} is not base64 of UTF-8 text")))?;
        if pairs.insert(key, value).is_some() {
            return Err(bad_input("upload-metadata", format!("{key} is given twice")));
        }
    }
    // Empty values count as absent: browsers send an empty type for files they do not recognise.
    let text = |key: &str| pairs.get(key).map(String::as_str).filter(|value| !value.is_empty());
    let required =
        |key: &'static str| text(key).ok_or_else(|| bad_input("upload-metadata", format!("{key} is required")));
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

// Status and termination.

async fn status(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Response, Problem> {
    let row = uploads::own_upload(&state.gateway, &caller, &id).await?;
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
    uploads::terminate(&state.gateway, &caller, &id).await?;
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

/// The upload sessions' errors in tus's terms.
impl From<UploadError> for Problem {
    fn from(err: UploadError) -> Self {
        match err {
            UploadError::NotFound(id) => Problem::not_found(format!("you have no upload {id}")),
            UploadError::RemovedMeanwhile(id) => Problem::not_found(format!(
                "upload {id} was finished or removed by another request while this one ran: look for its artefact \
                 in the case before you upload it again"
            )),
            UploadError::Expired => gone("the upload expired before it was finished; start it again"),
            UploadError::ExpiredBeforeLastBytes => {
                gone("the upload expired before its last bytes arrived; nothing of it was kept; start it again")
            }
            // Another request is taking the upload into custody: tus clients retry on 423.
            UploadError::Completing => Problem::new(
                StatusCode::LOCKED,
                "upload-locked",
                "Upload busy",
                "the upload's last bytes are being taken into custody; try again shortly",
            ),
            UploadError::OffsetMismatch { at, sent } => {
                let detail = format!("the upload is at offset {at}, not {sent}; ask with HEAD and resume from there");
                Problem::new(StatusCode::CONFLICT, "offset-mismatch", "Offset mismatch", detail)
            }
            UploadError::TooLong { room } => {
                too_large(format!("only {room} bytes of the declared Upload-Length remain"))
            }
            UploadError::ChecksumMismatch => Problem::new(
                StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
                "checksum-mismatch",
                "Checksum mismatch",
                "the body does not match its Upload-Checksum; nothing of it was kept",
            ),
            UploadError::StagedBytesLost(_) => gone("the staged bytes of this upload were lost; start it again"),
            UploadError::Gateway(err) => err.into(),
        }
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
    let upload = uploads::start_append(&state.gateway, &caller, &id).await?;
    // The chunk's file (or its upload to the store), and at completion the artefact's staging file, beside the
    // connection ([`crate::listen::Descriptors`]).
    let places = crate::listen::Descriptors::take(descriptors.as_deref(), 2)?;
    // In a task of its own: a client that hangs up drops this handler, and must not cancel the work between the
    // chunk's write and its record, or a registration half-way.
    let outcome = tokio::spawn(async move {
        let _places = places;
        let body = chunk_body(body, checksum);
        uploads::append(&state.gateway, &caller, upload, offset, content_length, body, upload_request).await
    })
    .await
    .map_err(|err| Problem::internal(&err))??;
    match outcome {
        AppendOutcome::Staged { offset, cut_off: None } => {
            tus_response(StatusCode::NO_CONTENT, [("upload-offset", offset.to_string())])
        }
        AppendOutcome::Staged { offset, cut_off: Some(CutOff { reason, kept }) } => {
            let detail =
                format!("the body was cut off ({reason}); {kept} bytes of it were kept; resume from offset {offset}");
            Err(Problem::new(StatusCode::BAD_REQUEST, "upload-interrupted", "Upload cut off", detail))
        }
        AppendOutcome::Completed { length, registered } => tus_response(
            StatusCode::NO_CONTENT,
            [
                ("upload-offset", length.to_string()),
                ("custodia-artefact", format!("/api/v1/artefacts/{}", registered.artefact)),
            ],
        ),
    }
}

/// The PATCH body as a chunk's bytes: a body that does not match its checksum ends in
/// [`BodyFault::ChecksumMismatch`], and one that fails or stalls for [`IDLE_TIMEOUT`] in a cut-off, which keeps
/// what arrived only when there is no checksum to check it against.
fn chunk_body(body: Body, checksum: Option<Checksum>) -> impl Stream<Item = Result<Bytes, BodyFault>> + Send {
    let state = (body.into_data_stream(), checksum, false);
    futures::stream::unfold(state, |(mut body, mut checksum, done)| async move {
        if done {
            return None;
        }
        let cut = match tokio::time::timeout(IDLE_TIMEOUT, body.next()).await {
            Ok(Some(Ok(data))) => {
                if let Some(checksum) = &mut checksum {
                    checksum.update(&data);
                }
                return Some((Ok(data), (body, checksum, false)));
            }
            Ok(None) => {
                let matches = checksum.take().is_none_or(Checksum::matches);
                return (!matches).then_some((Err(BodyFault::ChecksumMismatch), (body, checksum, true)));
            }
            Ok(Some(Err(err))) => BodyError::from(err),
            Err(_) => BodyError::from(format!("no data for {} seconds", IDLE_TIMEOUT.as_secs())),
        };
        // A body cut short cannot be checked against its checksum, so none of it is kept.
        let fault = if checksum.is_some() { BodyFault::CutOffUnverified(cut) } else { BodyFault::CutOff(cut) };
        Some((Err(fault), (body, checksum, true)))
    })
}
