//! Resumable upload sessions, without HTTP: an upload in progress is a catalog row holding its durable offset, and
//! its bytes so far as chunk objects in the artefact store's staging area (`staging/tus/`), shared by every gateway
//! on one bucket, so a chunk may reach any gateway. The server's `tus` module speaks the tus protocol over them: it
//! parses headers and maps this module's outcomes and [`UploadError`]s to answers; every decision about an upload
//! (whose it is, whether it expired, where it stands, whether it survives a failed chunk) is made here.
//!
//! Each chunk ([`append`]) is written as one new object, then recorded with the offset moved in one catalog
//! transaction that is a compare-and-set on the offset ([`custodia_catalog::Catalog::record_upload_chunk`]): of
//! two requests racing at one offset, on one gateway or two, one alone records its chunk and the other is told the
//! offset moved ([`UploadError::OffsetMismatch`]), its object deleted unread. An upload's bytes are exactly its
//! recorded chunks in offset order; an object whose write succeeded but whose transaction did not is no part of it,
//! and the start-up sweep removes it once it is older than any upload could be ([`sweep`]), never sooner, since a
//! younger one may be another gateway's request under way. A body cut off midway ([`BodyFault::CutOff`]) keeps what
//! arrived; one that fails its checksum, or is cut off before it could be checked, leaves nothing.
//!
//! Staged bytes are not evidence. When the last byte is staged, one request claims the upload's completion
//! ([`custodia_catalog::Catalog::claim_upload_completion`]: one gateway alone takes an upload into custody), and the
//! chunks stream in order through [`Gateway::ingest_upload`], exactly as a direct upload. The transaction that
//! sequences the registration removes the upload, and only while the claim is still this request's, so an upload
//! is registered once, however its gateways fail; its chunks' objects are deleted after. The stored offset never
//! reaches the length before that, so a client asking where it stands is never told that an upload is done when it
//! is not in custody. The claim is renewed while the ingest runs, and a chunk or termination meanwhile is refused
//! ([`UploadError::Completing`]); one left unrenewed (its gateway died or froze) is released by the next request,
//! and the upload resumes from its offset. Whether an upload survives a failed completion is decided by whose the
//! failure is ([`crate::gateway::ErrorClass`]): a refusal is final, anything else leaves the upload to be finished
//! again. A crash at any point leaves the upload resumable or the artefact in custody. Expired uploads, and chunk
//! objects no upload holds, are swept ([`sweep`]).
//!
//! Concurrency comes from the catalog alone: no gateway holds a lock of its own on an upload.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use custodia_catalog::{UploadChunk, UploadCompletion, UploadRow};
use custodia_core::{Action, CaseId};
use custodia_store::{BodyError, StoreError};
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
fn claims_stale_before(gateway: &Gateway) -> i64 {
    gateway.clock().unix_seconds() - CLAIM_STALE_AFTER_SECONDS
}

/// Removes an upload, unless a claim on its completion was renewed since `claims_renewed_before` (`i64::MAX`:
/// whatever the claim): the row and its chunks' rows first, so that no one is told of bytes that are gone, then
/// the chunks' objects. False if it was not removed (gone already, or its completion claimed). An object that
/// cannot be deleted is left to the sweep, which finds it held by no upload.
async fn remove_upload(gateway: &Gateway, id: &str, claims_renewed_before: i64) -> Result<bool, GatewayError> {
    let Some(objects) = gateway.catalog().delete_upload(id, claims_renewed_before).await? else { return Ok(false) };
    for object in &objects {
        delete_chunk(gateway, object).await;
    }
    Ok(true)
}

/// Deletes a chunk's object that is no part of any upload (any more); one that cannot be deleted now is left to
/// the sweep.
async fn delete_chunk(gateway: &Gateway, object: &str) {
    if let Err(err) = gateway.artefacts().delete_chunk(object).await {
        tracing::warn!(chunk = %object, error = %crate::error::Chain(&err), "could not delete a resumable upload's chunk; the sweep will");
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
        tracing::warn!(error = %crate::error::Chain(&err), "could not remove expired uploads");
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

/// Why a request about a resumable upload was not done ([`own_upload`], [`start_append`], [`append`],
/// [`terminate`]). The server says each in its protocol's terms; the ids are the ones the caller asked for.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The caller has no upload by that id: there never was one, it is someone else's, or it is finished or
    /// removed.
    #[error("no upload {0} of the caller's")]
    NotFound(String),
    /// The upload was finished or removed by another request while this one ran: its artefact may be in custody.
    #[error("upload {0} was finished or removed by another request meanwhile")]
    RemovedMeanwhile(String),
    /// The upload expired before it was finished, and was removed with its bytes.
    #[error("the upload expired before it was finished")]
    Expired,
    /// The upload's last bytes arrived after it expired: they were not kept, and the upload was removed.
    #[error("the upload expired before its last bytes arrived")]
    ExpiredBeforeLastBytes,
    /// Another request is taking the upload into custody now; the same request may succeed shortly.
    #[error("the upload is being taken into custody by another request")]
    Completing,
    /// The chunk was sent for offset `sent`, but the upload stands at `at` (another request, perhaps on another
    /// gateway, recorded its chunk first). Nothing of this chunk was kept.
    #[error("the upload is at offset {at}, not {sent}")]
    OffsetMismatch { at: u64, sent: u64 },
    /// The chunk would pass the upload's declared length, which leaves `room` bytes. Nothing of it was kept.
    #[error("only {room} bytes of the upload's declared length remain")]
    TooLong { room: u64 },
    /// The chunk does not match the checksum it came with ([`BodyFault::ChecksumMismatch`]). Nothing of it was
    /// kept.
    #[error("the chunk does not match its checksum")]
    ChecksumMismatch,
    /// The upload's staged bytes are not what was recorded: it was removed, and cannot go on.
    #[error("the staged bytes of the upload were lost")]
    StagedBytesLost(#[source] StoreError),
    /// Refused, unavailable or failed as any operation of the gateway is.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
}

impl From<custodia_catalog::CatalogError> for UploadError {
    fn from(err: custodia_catalog::CatalogError) -> Self {
        Self::Gateway(err.into())
    }
}

/// The caller's own upload `id`, if it has not expired (one that has is removed: [`UploadError::Expired`]), and if
/// the caller may upload at all (a token's scope). Anyone else's is [`UploadError::NotFound`].
pub async fn own_upload(gateway: &Gateway, caller: &Principal, id: &str) -> Result<UploadRow, UploadError> {
    caller.require_scope(Action::UploadArtefact)?;
    let row = gateway.catalog().upload(id).await?;
    let Some(row) = row.filter(|row| row.account_id == caller.account_id()) else {
        return Err(UploadError::NotFound(id.to_owned()));
    };
    if row.expires_at <= gateway.clock().unix_seconds() {
        remove_upload(gateway, &row.id, i64::MAX).await?;
        return Err(UploadError::Expired);
    }
    Ok(row)
}

/// Ends the caller's upload `id` and deletes its bytes, unless a request is taking it into custody now
/// ([`UploadError::Completing`]).
pub async fn terminate(gateway: &Gateway, caller: &Principal, id: &str) -> Result<(), UploadError> {
    let row = own_upload(gateway, caller, id).await?;
    if !remove_upload(gateway, &row.id, claims_stale_before(gateway)).await? {
        return match gateway.catalog().upload(&row.id).await? {
            Some(_) => Err(UploadError::Completing),
            None => Err(UploadError::NotFound(id.to_owned())),
        };
    }
    tracing::info!(upload = %row.id, "resumable upload terminated");
    Ok(())
}

/// An upload that its caller may append to ([`start_append`]): theirs, not expired when it was looked up, and in a
/// case where they may upload.
#[derive(Debug)]
pub struct Appending {
    id: String,
}

/// Checks that `caller` may append to upload `id`, before a chunk's body is read ([`append`]).
pub async fn start_append(gateway: &Gateway, caller: &Principal, id: &str) -> Result<Appending, UploadError> {
    let row = own_upload(gateway, caller, id).await?;
    let case = CaseId::new(row.case_id).map_err(|err| GatewayError::internal("reading an upload's case", err))?;
    gateway.authorize(caller, &case, Action::UploadArtefact).await?;
    Ok(Appending { id: row.id })
}

/// Why a chunk's body ended before its end ([`append`]), as its sender's protocol found.
#[derive(Debug)]
pub enum BodyFault {
    /// The link failed or stalled (the reason, kept whole): what arrived is kept, and the upload goes on after it.
    CutOff(BodyError),
    /// Cut off (the reason) while the body came with a checksum: what arrived cannot be checked, so none of it is
    /// kept.
    CutOffUnverified(BodyError),
    /// The body does not match the checksum it came with: none of it is kept ([`UploadError::ChecksumMismatch`]).
    ChecksumMismatch,
}

/// What became of a chunk ([`append`]).
#[derive(Debug)]
pub enum AppendOutcome {
    /// The upload stands at `offset` bytes, of which this chunk's are recorded (none if its body was empty or
    /// could not be kept). `cut_off` says whether its body ended early, why, and how much of it was kept.
    Staged { offset: u64, cut_off: Option<CutOff> },
    /// The chunk brought the last of the upload's `length` bytes: the upload was taken into custody as
    /// `registered`, and is gone.
    Completed { length: u64, registered: Registered },
}

/// A chunk's body that ended early ([`BodyFault::CutOff`], [`BodyFault::CutOffUnverified`]): why, and how many of
/// its bytes were kept.
#[derive(Debug)]
pub struct CutOff {
    /// Why, as the body's stream said.
    pub reason: BodyError,
    pub kept: u64,
}

/// How the metadata kept with an upload ([`open`]) reads as what its ingest is told: the case and the request.
/// Metadata that no longer reads when the upload completes is final: the upload is removed, and the error returned.
pub type ReadMetadata = fn(&str) -> Result<(CaseId, UploadRequest), GatewayError>;

/// Appends the chunk `body`, sent for `offset` (`declared_length` bytes if its sender said), to `upload`; the chunk
/// that brings the last byte takes the upload into custody as `caller`, reading what its ingest is told from the
/// upload's metadata with `read_metadata`.
///
/// The upload is read again (another request, on this gateway or another, may have moved it since
/// [`start_append`]), and a claim on its completion that its gateway stopped renewing is released first (its last
/// chunk's object deleted), so the upload goes on from its offset. A chunk whose record fails because the upload
/// moved meanwhile is deleted, and the error says what became of the upload: finished or removed, expired (then
/// removed), being completed, or at another offset.
///
/// Run it to its end (in a task of its own if the request may be dropped): dropped between a chunk's write and
/// its record, it leaves an object for the sweep; dropped during a completion, a claim that goes stale.
pub async fn append<B>(
    gateway: &Gateway,
    caller: &Principal,
    upload: Appending,
    offset: u64,
    declared_length: Option<u64>,
    body: B,
    read_metadata: ReadMetadata,
) -> Result<AppendOutcome, UploadError>
where
    B: Stream<Item = Result<Bytes, BodyFault>> + Send,
{
    let row = current(gateway, &upload.id).await?;
    if row.completing.is_some() {
        return Err(UploadError::Completing);
    }
    let (durable, length) = (row.offset as u64, row.length as u64);
    if offset != durable {
        return Err(UploadError::OffsetMismatch { at: durable, sent: offset });
    }
    let room = length - durable;
    if declared_length.is_some_and(|n| n > room) {
        return Err(UploadError::TooLong { room });
    }
    let name = chunk_name(&row.id, durable);
    let mut read = BodyRead::default();
    let written = gateway.artefacts().write_chunk(&name, within_room(body, room, &mut read)).await;
    // A refused body was never made an object: the store dropped what it had of it.
    if read.too_long {
        return Err(UploadError::TooLong { room });
    }
    let cut_off = match read.fault {
        None => None,
        Some(BodyFault::CutOff(reason)) => Some(reason),
        Some(BodyFault::CutOffUnverified(reason)) => {
            return Ok(AppendOutcome::Staged { offset: durable, cut_off: Some(CutOff { reason, kept: 0 }) });
        }
        Some(BodyFault::ChecksumMismatch) => return Err(UploadError::ChecksumMismatch),
    };
    let size = written.map_err(GatewayError::from)?;
    if size == 0 {
        delete_chunk(gateway, &name).await;
        let cut_off = cut_off.map(|reason| CutOff { reason, kept: 0 });
        return Ok(AppendOutcome::Staged { offset: durable, cut_off });
    }
    let end = durable + size;
    if end == length {
        return last_chunk(gateway, caller, &row, &name, size, read_metadata).await;
    }
    let recorded = UploadChunk { offset: row.offset, size: size as i64, object: name.clone() };
    let now = gateway.clock().unix_seconds();
    // Should the transaction fail, whether it was committed is not known: the object is left to the sweep, which
    // removes it only if no upload holds it.
    if !gateway.catalog().record_upload_chunk(&row.id, &recorded, now).await? {
        delete_chunk(gateway, &name).await;
        return Err(not_taken(gateway, &row.id, durable, UploadError::Expired).await);
    }
    let cut_off = cut_off.map(|reason| CutOff { reason, kept: size });
    Ok(AppendOutcome::Staged { offset: end, cut_off })
}

/// The upload as it stands now, with a claim on its completion that its gateway stopped renewing released (and
/// its last chunk's object deleted): the upload goes on from its offset.
async fn current(gateway: &Gateway, id: &str) -> Result<UploadRow, UploadError> {
    let not_found = || UploadError::NotFound(id.to_owned());
    let row = gateway.catalog().upload(id).await?.ok_or_else(not_found)?;
    let stale_before = claims_stale_before(gateway);
    let Some(claim) = row.completing.as_ref().filter(|claim| claim.renewed_at < stale_before) else {
        return Ok(row);
    };
    if gateway.catalog().release_upload_claim(id, &claim.object, stale_before).await? {
        tracing::warn!(upload = %id, "released the completion claim of a gateway that stopped renewing it");
        delete_chunk(gateway, &claim.object).await;
    }
    gateway.catalog().upload(id).await?.ok_or_else(not_found)
}

/// Every byte of upload `row` is staged, the last ones in the chunk `last` of `size` bytes: the upload is taken
/// into custody ([`complete`]).
async fn last_chunk(
    gateway: &Gateway,
    caller: &Principal,
    row: &UploadRow,
    last: &str,
    size: u64,
    read_metadata: ReadMetadata,
) -> Result<AppendOutcome, UploadError> {
    let request = match read_metadata(&row.metadata) {
        Ok(request) => request,
        Err(err) => {
            // Checked when the upload was opened: metadata that no longer reads is final.
            delete_chunk(gateway, last).await;
            remove_upload(gateway, &row.id, i64::MAX).await?;
            return Err(err.into());
        }
    };
    match complete(gateway, caller, row, request, last, size).await {
        Ok(registered) => Ok(AppendOutcome::Completed { length: row.length as u64, registered }),
        Err(CompletionError::NotClaimed) => {
            Err(not_taken(gateway, &row.id, row.offset as u64, UploadError::ExpiredBeforeLastBytes).await)
        }
        Err(CompletionError::Lost(err)) => Err(UploadError::StagedBytesLost(err)),
        Err(CompletionError::Refused(err) | CompletionError::Failed(err)) => Err(err.into()),
    }
}

/// Why a chunk written from offset `from` could not be recorded (or its completion claimed): the upload is gone,
/// expired (then removed, and `expired` is returned), being completed by another request, or at another offset
/// (another request, perhaps on another gateway, recorded its chunk first).
async fn not_taken(gateway: &Gateway, id: &str, from: u64, expired: UploadError) -> UploadError {
    let row = match gateway.catalog().upload(id).await {
        Ok(row) => row,
        Err(err) => return err.into(),
    };
    let Some(row) = row else { return UploadError::RemovedMeanwhile(id.to_owned()) };
    if row.expires_at <= gateway.clock().unix_seconds() {
        if let Err(err) = remove_upload(gateway, id, i64::MAX).await {
            return err.into();
        }
        tracing::info!(upload = %id, "a resumable upload's bytes came after it expired");
        return expired;
    }
    if row.completing.is_some() {
        return UploadError::Completing;
    }
    UploadError::OffsetMismatch { at: row.offset as u64, sent: from }
}

/// What became of a chunk's body as the store read it ([`within_room`]).
#[derive(Debug, Default)]
struct BodyRead {
    /// Why the body ended early, as its sender found.
    fault: Option<BodyFault>,
    /// The body would have gone past the upload's length.
    too_long: bool,
}

/// A chunk's body as the store writes it, which ends in an error (so that the store keeps nothing of it) when the
/// body would pass the `room` left in the upload, or ends with a fault that keeps nothing; a body cut off
/// ([`BodyFault::CutOff`]) just ends, so that what arrived is kept. `read` says which.
fn within_room<'a, B>(
    body: B,
    room: u64,
    read: &'a mut BodyRead,
) -> impl Stream<Item = Result<Bytes, &'static str>> + Send + 'a
where
    B: Stream<Item = Result<Bytes, BodyFault>> + Send + 'a,
{
    /// The error that makes the store keep nothing; `read` says why.
    const REFUSED: &str = "the body was refused";
    let state = (Box::pin(body), 0u64, read, false);
    futures::stream::unfold(state, move |(mut body, mut bytes, read, done)| async move {
        if done {
            return None;
        }
        match body.next().await? {
            Ok(data) => {
                bytes += data.len() as u64;
                if bytes > room {
                    read.too_long = true;
                    return Some((Err(REFUSED), (body, bytes, read, true)));
                }
                Some((Ok(data), (body, bytes, read, false)))
            }
            Err(BodyFault::CutOff(reason)) => {
                read.fault = Some(BodyFault::CutOff(reason));
                None
            }
            Err(fault) => {
                read.fault = Some(fault);
                Some((Err(REFUSED), (body, bytes, read, true)))
            }
        }
    })
}

/// A new name for the chunk of upload `id` from `offset`: the upload's id, the offset, and a random part, so that
/// requests racing at one offset write different objects.
fn chunk_name(id: &str, offset: u64) -> String {
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
enum CompletionError {
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
/// Only an upload whose reservation still counts against its account's quota completes. The request bringing the
/// last chunk may have begun before the upload expired and ended after it (or after another request removed it as
/// expired), when its reservation no longer counts and the room it held may be another upload's: then it is not
/// claimed and its last chunk is removed, so nothing is stored uncharged ([`CompletionError::NotClaimed`]). One
/// that has not expired is held open for the ingest in the claim's statement, so its reservation counts until its
/// artefact does.
async fn complete(
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
            tracing::error!(upload = %row.id, error = %crate::error::Chain(&err), "a resumable upload's staged bytes are lost");
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
                    tracing::warn!(upload = %row.id, error = %crate::error::Chain(&failed), "a completion taken over meanwhile failed here");
                    delete_chunk(gateway, last).await;
                    return Err(CompletionError::NotClaimed);
                }
                Err(err) => {
                    tracing::warn!(upload = %row.id, error = %crate::error::Chain(&err), "could not release a completion claim")
                }
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
                Err(err) => {
                    tracing::warn!(upload = %id, error = %crate::error::Chain(&err), "could not renew a completion claim")
                }
            }
        }
    }))
}
