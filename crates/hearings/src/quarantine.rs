//! A hearing's output that could not enter custody: kept in `data/quarantine/`, never deleted, and on the record.
//!
//! A recording segment or the minutes that fail ingest are tried again ([`INGEST_ATTEMPTS`] in all), then
//! quarantined: a `output_quarantined` hearing record carrying the file's SHA-256 (nothing else about it) is
//! appended, and the file moves out of the staging directory. At start-up, the files that a crash left in
//! `data/recordings/` (open segments it cut off) are quarantined the same way instead of deleted. An operator can
//! examine a quarantined file, and the ledger says it exists and which bytes it held.

use std::path::{Path, PathBuf};
use std::time::Duration;

use custodia_core::{ActorId, CaseId, CustodyEvent, HearingId, Label, Sha256};
use custodia_hearing::HearingEventKind;

use custodia_service::error::Chain;
use custodia_service::gateway::{Gateway, GatewayError, Registered, UploadRequest};
use custodia_service::identity::Principal;

/// How many times a hearing's output is offered for ingest before it is quarantined.
pub const INGEST_ATTEMPTS: u32 = 4;

/// The pause before attempt `attempt` (from 1): 1 s, 2 s, 4 s...
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1 << attempt.saturating_sub(1).min(5))
}

/// The actor of a quarantine made at start-up, when no person is acting: the gateway itself.
pub fn gateway_actor() -> ActorId {
    ActorId::new("gateway").unwrap_or_else(|_| unreachable!("a well-formed id"))
}

/// Output of a hearing on its way into custody.
#[derive(Debug)]
pub struct Output<'a> {
    /// The identity bound to the hearing (or to the WHIP session) when it began.
    pub court: &'a Principal,
    pub case: &'a CaseId,
    pub hearing: &'a HearingId,
    pub purpose: &'a str,
    pub media_type: &'a str,
    pub name: &'a str,
    /// The court's restriction of who may use it (a protected witness's original recording), if any.
    pub policy: Option<&'a custodia_core::UsePolicy>,
}

impl Output<'_> {
    /// Takes `bytes` into custody through [`Gateway::ingest_hearing_output`], trying again after a failure; after
    /// [`INGEST_ATTEMPTS`] they are quarantined at `destination` (moved from `source`, the staged file holding
    /// them, if any) and the error is returned.
    pub async fn into_custody(
        &self,
        gateway: &Gateway,
        bytes: Vec<u8>,
        source: Option<&Path>,
        destination: &Path,
    ) -> Result<Registered, GatewayError> {
        let label = |text: &str| Label::new(text).map_err(|e| GatewayError::internal("into custody", e));
        let mut attempt = 1;
        let failure = loop {
            let request = UploadRequest {
                purpose: label(self.purpose)?,
                media_type: label(self.media_type)?,
                original_name: Some(label(self.name)?),
                expected_sha256: None,
                policy: self.policy.cloned(),
            };
            let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(bytes.clone()))]);
            match gateway.ingest_hearing_output(self.court, self.case, self.hearing, request, body).await {
                Ok(registered) => return Ok(registered),
                Err(err) if attempt < INGEST_ATTEMPTS => {
                    tracing::warn!(
                        hearing = %self.hearing, attempt, error = %Chain(&err),
                        "hearing output not yet in custody"
                    );
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(err) => break err,
            }
        };
        let actor = self.court.actor();
        if let Err(err) = quarantine(gateway, actor, self.case, self.hearing, &bytes, source, destination).await {
            tracing::error!(hearing = %self.hearing, error = %Chain(&err), "could not quarantine hearing output");
        }
        Err(failure)
    }
}

/// Records that `bytes`, output of `hearing`, could not enter custody, then keeps them at `destination`. Recorded
/// first: if keeping fails, the file stays where it is and is quarantined again at the next start.
pub async fn quarantine(
    gateway: &Gateway,
    actor: ActorId,
    case: &CaseId,
    hearing: &HearingId,
    bytes: &[u8],
    source: Option<&Path>,
    destination: &Path,
) -> Result<u64, GatewayError> {
    let sealed = gateway
        .seal(case, actor, gateway.now(), custodia_service::gateway::HEARING_PURPOSE, |committer| {
            CustodyEvent::HearingEvent {
                hearing: hearing.clone(),
                kind: HearingEventKind::OutputQuarantined.label(),
                subject: None,
                detail: Some(committer.commit("detail", Sha256::of(bytes).to_hex())),
            }
        })
        .await?;
    let index = gateway.record(&sealed).await?;
    let keep = async {
        if let Some(parent) = destination.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        match source {
            Some(source) => tokio::fs::rename(source, destination).await,
            None => tokio::fs::write(destination, bytes).await,
        }
    };
    keep.await.map_err(|err| GatewayError::internal("keeping quarantined output", err))?;
    tracing::error!(case = %case, hearing = %hearing, ledger_index = index, "hearing output quarantined");
    Ok(index)
}

/// Quarantines every file left under `recordings` (open segments a crash cut off) into `quarantine_dir`, keeping
/// its path below `recordings`. Returns how many. A file whose path names no case and hearing is kept unrecorded.
pub async fn sweep_recordings(
    gateway: &Gateway,
    recordings: &Path,
    quarantine_dir: &Path,
) -> Result<usize, GatewayError> {
    let mut files = Vec::new();
    let mut pending = vec![recordings.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() { pending.push(path) } else { files.push(path) }
        }
    }
    for file in &files {
        let relative = file.strip_prefix(recordings).unwrap_or(file);
        let destination = quarantine_dir.join(relative);
        let bytes = tokio::fs::read(file).await.map_err(|err| GatewayError::internal("sweep recordings", err))?;
        match case_and_hearing(relative) {
            Some((case, hearing)) => {
                quarantine(gateway, gateway_actor(), &case, &hearing, &bytes, Some(file), &destination).await?;
            }
            None => {
                tracing::warn!(file = %relative.display(), "kept a stray file from the recordings directory");
                if let Some(parent) = destination.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|err| GatewayError::internal("sweep recordings", err))?;
                }
                tokio::fs::rename(file, &destination)
                    .await
                    .map_err(|err| GatewayError::internal("sweep recordings", err))?;
            }
        }
    }
    remove_empty_dirs(recordings);
    Ok(files.len())
}

/// `hearings/<case>/<hearing>/...` (a hearing's recorders) or `<case>/<hearing>/...` (WHIP into a hearing).
fn case_and_hearing(relative: &Path) -> Option<(CaseId, HearingId)> {
    let mut parts = relative.iter().filter_map(|part| part.to_str());
    let first = parts.next()?;
    let case = if first == "hearings" { parts.next()? } else { first };
    Some((CaseId::new(case).ok()?, HearingId::new(parts.next()?).ok()?))
}

fn remove_empty_dirs(dir: &Path) -> bool {
    let mut empty = true;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        empty &= path.is_dir() && remove_empty_dirs(&path) && std::fs::remove_dir(&path).is_ok();
    }
    empty
}

/// Where a hearing's quarantined output is kept.
pub fn hearing_dir(quarantine_dir: &Path, case: &CaseId, hearing: &HearingId) -> PathBuf {
    quarantine_dir.join(case.as_str()).join(hearing.as_str())
}
