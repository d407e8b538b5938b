//! Resumable upload sessions, without HTTP: an upload in progress is a catalog row holding its durable offset, and
//! its bytes so far as chunk objects in the artefact store's staging area (`staging/tus/`), shared by every gateway
//! on one bucket. The server's `tus` module speaks the tus protocol over them.
//!
//! Staged bytes are not evidence. When the last byte is staged, one request claims the upload's completion
//! ([`custodia_catalog::Catalog::claim_upload_completion`]: one gateway alone takes an upload into custody), and the
//! chunks stream in order through [`Gateway::ingest_upload`], exactly as a direct upload ([`complete`]). The
//! transaction that sequences the registration removes the upload, and only while the claim is still this
//! request's, so an upload is registered once, however its gateways fail; its chunks' objects are deleted after.
//! The claim is renewed while the ingest runs; one left unrenewed (its gateway died or froze) is released by the
//! next request ([`claims_stale_before`]), and the upload resumes from its offset. Whether an
//! upload survives a failed completion is decided by whose the failure is ([`crate::gateway::ErrorClass`]): a
//! refusal is final, anything else leaves the upload to be finished again. Expired uploads, and chunk objects no
//! upload holds, are swept ([`sweep`]).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use custodia_catalog::{UploadCompletion, UploadRow};
use custodia_core::CaseId;
use custodia_store::StoreError;
use futures::{Stream, StreamExt as _, TryStreamExt as _};

use crate::gateway::{ErrorClass, Gateway, GatewayError, Registered, UploadRequest, new_id};
use crate::identity::Principal;

/// An upload not finished within a day is removed.
pub const TTL_SECONDS: i64 = 24 * 3600;
/// How often the gateway completing an upload renews its claim, and how long an unrenewed claim holds: past it, the
/// gateway is taken for dead, and the next request releases the claim so that the upload can go on.
pub const CLAIM_RENEW_EVERY: Duration = Duration::from_secs(10);
pub const CLAIM_STALE_AFTER_SECONDS: i64 = 60;
/// A chunk object that no upload holds is removed by the sweep once it is older than this: longer than any upload
/// stays open, and far longer than a chunk waits between its last byte and its record (seconds). A younger one may
/// be a request under way on another gateway sharing the bucket.
pub const ORPHANED_CHUNK_SECONDS: i64 = TTL_SECONDS;
/// Chunks whose objects are opened ahead of the one being read, when an upload completes.
const CHUNKS_OPENED_AHEAD: usize = 2;

/// Claims on a completion last renewed before this are stale: their gateway stopped renewing them. On this
/// gateway's clock, like every time the catalog is given: it compares them on the database's, so a gateway whose
/// clock runs ahead takes no live claim for stale.
pub fn claims_stale_before(gateway: &Gateway) -> i64 {
    gateway.clock().unix_seconds() - CLAIM_STALE_AFTER_SECONDS
}

/// Removes an upload, unless a claim on its completion was renewed since `claims_renewed_before` (`i64::MAX`:
/// whatever the claim): the row and its chunks' rows first, so that no one is told of bytes that are gone, then
/// the chunks' objects. False if it was not removed (gone already, or its completion claimed). An object that
/// cannot be deleted is left to the sweep, which finds it held by no upload.
pub async fn remove_upload(gateway: &Gateway, id: &str, claims_renewed_before: i64) -> Result<bool, GatewayError> {
    let Some(objects) = gateway.catalog().delete_upload(id, claims_renewed_before).await? else { return Ok(false) };
    for object in &objects {
        delete_chunk(gateway, object).await;
    }
    Ok(true)
}

/// Deletes a chunk's object that is no part of any upload (any more); one that cannot be deleted now is left to
/// the sweep.
pub async fn delete_chunk(gateway: &Gateway, object: &str) {
    if let Err(err) = gateway.artefacts().delete_chunk(object).await {
        tracing::warn!(chunk = %object, error = %err, "could not delete a resumable upload's chunk; the sweep will");
    }
}

/// Opens a resumable upload of `length` bytes into `case` for `caller` (`metadata` as the client sent it, kept for
/// the completion): nobody stages bytes into a case they may not upload to, nor reserves the store without limit (a
/// few open uploads per account, declaring one largest upload's bytes between them, within the account's storage
/// quota and its budget of new uploads). The checks and the creation take the account's quota turn, as direct
/// uploads do, so that creations and uploads at once, on any gateway, cannot all pass the checks before any of them
/// is counted.
pub async fn open(
    gateway: &Gateway,
    caller: &Principal,
    case: &CaseId,
    length: u64,
    metadata: &str,
) -> Result<UploadRow, GatewayError> {
    if length == 0 {
        return Err(crate::error::bad_input("upload-length", "an empty file is not evidence"));
    }
    let max = gateway.max_upload_bytes();
    if length > max {
        return Err(GatewayError::TooLarge(format!("uploads are at most {max} bytes")));
    }
    gateway.authorize(caller, case, custodia_core::Action::UploadArtefact).await?;
    let account = caller.account_id();
    let _turn = gateway.quota_turn(account).await?;
    let now = gateway.clock().unix_seconds();
    let (open, reserved) = gateway.catalog().open_uploads_of(account, now).await?;
    if open >= OPEN_UPLOADS_PER_ACCOUNT {
        return Err(GatewayError::TooMany(format!(
            "you have {open} resumable uploads open; finish or delete one first (at most {OPEN_UPLOADS_PER_ACCOUNT})"
        )));
    }
    if u64::try_from(reserved).unwrap_or(u64::MAX).saturating_add(length) > max {
        return Err(GatewayError::TooLarge(format!(
            "your open resumable uploads already declare {reserved} bytes; together they may declare at most {max}"
        )));
    }
    // The account's storage quota counts what it holds, what its open and unfinished uploads hold, and this one.
    let left = gateway.quota_left(account).await?;
    if length > left {
        return Err(gateway.quota_exceeded(left));
    }
    gateway.take_upload_allowance(account).await?;
    // Expired uploads go lazily too, so a gateway that runs for weeks does not collect them; a failure to clean up
    // must not refuse an upload.
    if let Err(err) = remove_expired(gateway).await {
        tracing::warn!(error = %err, "could not remove expired uploads");
    }
    let row = UploadRow {
        id: new_id("upl"),
        case_id: case.to_string(),
        account_id: account.to_owned(),
        length: i64::try_from(length).map_err(|err| crate::error::bad_input("upload-length", err))?,
        offset: 0,
        metadata: metadata.to_owned(),
        expires_at: now + TTL_SECONDS,
        completing: None,
    };
    gateway.catalog().create_upload(&row).await?;
    tracing::info!(upload = %row.id, case = %case, length, by = %account, "resumable upload created");
    Ok(row)
}

/// Removes every expired upload with its chunks; returns how many.
pub async fn remove_expired(gateway: &Gateway) -> Result<usize, GatewayError> {
    let expired = gateway.catalog().expired_uploads(gateway.clock().unix_seconds()).await?;
    let mut removed = 0;
    for row in &expired {
        removed += usize::from(remove_upload(gateway, &row.id, i64::MAX).await?);
    }
    Ok(removed)
}

/// Removes expired uploads with their chunks, and chunk objects that no upload holds (left by a crash between an
/// object and its record, a record that failed, or a deletion that did) once they are older than
/// [`ORPHANED_CHUNK_SECONDS`]: younger ones may be requests under way on other gateways that share the store. Also
/// removes direct uploads' expired holdings of their accounts' quotas ([`crate::budget::DirectUpload`]), and on an
/// embedded catalog, whose one gateway is this one starting, every holding: their uploads died with the process
/// before, so its accounts get their quotas back at once rather than once those expire. Call at start-up, before
/// serving. Returns how many uploads and objects were removed.
pub async fn sweep(gateway: &Gateway) -> Result<usize, GatewayError> {
    let before = if gateway.catalog().is_embedded() { i64::MAX } else { gateway.clock().now().as_millisecond() };
    let holdings = gateway.catalog().remove_expired_direct_holdings(before).await?;
    if holdings > 0 {
        tracing::info!(holdings, "removed the holdings of direct uploads that ended with their gateway");
    }
    let mut removed = remove_expired(gateway).await?;
    let seconds = u64::try_from(gateway.clock().unix_seconds() - ORPHANED_CHUNK_SECONDS).unwrap_or(0);
    let written_before = SystemTime::UNIX_EPOCH + Duration::from_secs(seconds);
    let old: Vec<String> = gateway
        .artefacts()
        .staged_chunks()
        .try_filter_map(|chunk| futures::future::ready(Ok((chunk.written < written_before).then_some(chunk.name))))
        .try_collect()
        .await?;
    for name in old {
        if gateway.catalog().upload_holds_object(upload_of_chunk(&name), &name).await? {
            continue;
        }
        gateway.artefacts().delete_chunk(&name).await?;
        removed += 1;
    }
    Ok(removed)
}

/// A new name for the chunk of upload `id` from `offset`: the upload's id, the offset, and a random part, so that
/// requests racing at one offset write different objects.
pub fn chunk_name(id: &str, offset: u64) -> String {
    format!("{id}.{offset}.{}", new_id("chunk"))
}

/// The upload a chunk's name says it belongs to ([`chunk_name`]).
fn upload_of_chunk(name: &str) -> &str {
    name.split('.').next().unwrap_or_default()
}

/// Resumable uploads one account may have open at once.
pub const OPEN_UPLOADS_PER_ACCOUNT: i64 = 4;

/// Why a finished upload was not taken into custody ([`complete`]).
#[derive(Debug, thiserror::Error)]
pub enum CompletionError {
    /// Its completion could not be claimed (the upload expired or was removed, another request is completing it,
    /// or its offset moved), or the claim went stale while this request ran and another took the upload over
    /// (this request registered nothing). The last chunk was deleted.
    #[error("the upload's completion could not be claimed")]
    NotClaimed,
    /// Its staged bytes are not what was recorded: the upload was removed, and cannot go on.
    #[error("the staged bytes of the upload were lost")]
    Lost(#[source] StoreError),
    /// The ingest refused it (a wrong digest, the caller's role, a quota): final, and the upload was removed.
    #[error(transparent)]
    Refused(GatewayError),
    /// A failure that may pass (an outage) or one inside: the upload stays at its offset, its last chunk deleted
    /// and its claim released, so that the client sends the last chunk again.
    #[error(transparent)]
    Failed(GatewayError),
}

/// Every byte of upload `row` is staged, the last ones in the chunk `last` of `size` bytes, not recorded: claims
/// the upload's completion, registers the artefact (about `case`, as `request` says) as a direct upload would,
/// then removes the upload.
///
/// Only an upload whose reservation still counts against its account's quota completes. The last PATCH may have
/// begun before the upload expired and ended after it (or after another request removed it as expired), when its
/// reservation no longer counts and the room it held may be another upload's: then it is not claimed and its last
/// chunk is removed, so nothing is stored uncharged ([`CompletionError::NotClaimed`]). One that has not expired is
/// held open for the ingest in the claim's statement, so its reservation counts until its artefact does.
pub async fn complete(
    gateway: &Gateway,
    caller: &Principal,
    row: &UploadRow,
    (case, request): (CaseId, UploadRequest),
    last: &str,
    size: u64,
) -> Result<Registered, CompletionError> {
    let now = gateway.clock().unix_seconds();
    let claimed = gateway.catalog().claim_upload_completion(&row.id, row.offset, last, now, now + TTL_SECONDS).await;
    if !claimed.map_err(|err| CompletionError::Failed(err.into()))? {
        delete_chunk(gateway, last).await;
        return Err(CompletionError::NotClaimed);
    }
    let renewing = renew_claim(gateway.clone(), row.id.clone(), last.to_owned());
    let registered = take_into_custody(gateway, caller, row, &case, request, last, size).await;
    drop(renewing);
    let (registered, objects) = match registered {
        Ok(registered) => registered,
        Err(CompletionError::NotClaimed) => {
            // Taken over after this request's claim went stale: the upload, and its registration, are another's;
            // the last chunk this request staged is nobody's.
            delete_chunk(gateway, last).await;
            return Err(CompletionError::NotClaimed);
        }
        Err(CompletionError::Lost(err)) => {
            tracing::error!(upload = %row.id, error = %err, "a resumable upload's staged bytes are lost");
            remove_upload(gateway, &row.id, i64::MAX).await.map_err(CompletionError::Failed)?;
            return Err(CompletionError::Lost(err));
        }
        Err(CompletionError::Refused(err)) => {
            remove_upload(gateway, &row.id, i64::MAX).await.map_err(CompletionError::Failed)?;
            return Err(CompletionError::Refused(err));
        }
        Err(failed) => {
            match gateway.catalog().release_upload_claim(&row.id, last, i64::MAX).await {
                Ok(true) => delete_chunk(gateway, last).await,
                Ok(false) => {
                    // The claim was no longer this request's (its gateway froze past it, and another request took
                    // the upload over, and may have finished it): what failed here is not the client's to retry.
                    tracing::warn!(upload = %row.id, error = %failed, "a completion taken over meanwhile failed here");
                    delete_chunk(gateway, last).await;
                    return Err(CompletionError::NotClaimed);
                }
                Err(err) => tracing::warn!(upload = %row.id, error = %err, "could not release a completion claim"),
            }
            return Err(failed);
        }
    };
    // The registration removed the upload's rows; its objects are nobody's now.
    for object in &objects {
        delete_chunk(gateway, object).await;
    }
    tracing::info!(upload = %row.id, artefact = %registered.artefact, "resumable upload registered");
    Ok(registered)
}

/// Streams upload `row`'s chunks in order, then its last chunk `last` of `size` bytes, through
/// [`Gateway::ingest_upload`]: the registration, and the objects that held the upload's bytes.
async fn take_into_custody(
    gateway: &Gateway,
    caller: &Principal,
    row: &UploadRow,
    case: &CaseId,
    request: UploadRequest,
    last: &str,
    size: u64,
) -> Result<(Registered, Vec<String>), CompletionError> {
    let by_class = |err: GatewayError| match err {
        GatewayError::CompletionTakenOver(_) => CompletionError::NotClaimed,
        err if err.class() == ErrorClass::Refused => CompletionError::Refused(err),
        err => CompletionError::Failed(err),
    };
    let chunks = gateway.catalog().upload_chunks(&row.id).await.map_err(|err| by_class(err.into()))?;
    // The upload's bytes are exactly its chunks in offset order: one after another from 0 to its offset.
    let mut end = 0;
    for chunk in &chunks {
        if chunk.offset != end {
            return Err(CompletionError::Lost(StoreError::ChunkLost(format!("at offset {end} of upload {}", row.id))));
        }
        end += chunk.size;
    }
    if end != row.offset {
        return Err(CompletionError::Lost(StoreError::ChunkLost(format!("at offset {end} of upload {}", row.id))));
    }
    let pieces: Vec<(String, u64)> =
        chunks.into_iter().map(|chunk| (chunk.object, chunk.size as u64)).chain([(last.to_owned(), size)]).collect();
    let objects = pieces.iter().map(|(object, _)| object.clone()).collect();
    // The ingest sees a failed read only as a cut-off body; what failed is kept here.
    let failure = std::sync::Mutex::new(None);
    let store = &gateway.artefacts();
    let body = futures::stream::iter(pieces)
        .map(|(object, size)| async move { store.read_chunk(&object).await.map(|bytes| exactly(bytes, object, size)) })
        .buffered(CHUNKS_OPENED_AHEAD)
        .try_flatten()
        .map_err(|err| {
            let mut failure = failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *failure = Some(err);
            "a staged chunk could not be read"
        });
    let completion = UploadCompletion { upload_id: row.id.clone(), last_chunk: last.to_owned() };
    let ingested = gateway.ingest_upload(caller, case, request, body, &completion).await;
    match (ingested, failure.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner)) {
        (Ok(registered), _) => Ok((registered, objects)),
        (Err(_), Some(err @ StoreError::ChunkLost(_))) => Err(CompletionError::Lost(err)),
        (Err(_), Some(err)) => Err(by_class(err.into())),
        (Err(err), None) => Err(by_class(err)),
    }
}

/// A chunk's bytes, failing with [`StoreError::ChunkLost`] unless they are exactly the `size` written.
fn exactly(
    bytes: impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static,
    object: String,
    size: u64,
) -> impl Stream<Item = Result<Bytes, StoreError>> + Send + 'static {
    let state = (Box::pin(bytes), 0u64, Some(object));
    futures::stream::unfold(state, move |(mut bytes, seen, object)| async move {
        let object = object?;
        match bytes.next().await {
            Some(Ok(data)) if seen + data.len() as u64 <= size => {
                let seen = seen + data.len() as u64;
                Some((Ok(data), (bytes, seen, Some(object))))
            }
            Some(Err(err)) => Some((Err(err), (bytes, seen, None))),
            None if seen == size => None,
            _ => Some((Err(StoreError::ChunkLost(object)), (bytes, seen, None))),
        }
    })
}

/// Renews the claim on upload `id`'s completion, whose last chunk is `last`, until dropped.
struct Renewing(tokio::task::JoinHandle<()>);

impl Drop for Renewing {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn renew_claim(gateway: Gateway, id: String, last: String) -> Renewing {
    Renewing(tokio::spawn(async move {
        loop {
            tokio::time::sleep(CLAIM_RENEW_EVERY).await;
            match gateway.catalog().renew_upload_claim(&id, &last, gateway.clock().unix_seconds()).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(upload = %id, "lost the claim on a resumable upload's completion");
                    return;
                }
                Err(err) => tracing::warn!(upload = %id, error = %err, "could not renew a completion claim"),
            }
        }
    }))
}
