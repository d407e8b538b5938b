//! WHIP (RFC 9725): a publisher POSTs an SDP offer and gets an answer and a session resource; DELETE on the
//! resource ends the session. This module keeps the sessions; HTTP is the caller's.

use std::collections::HashMap;
use std::sync::Arc;

use rand_core::{OsRng, RngCore};
use tokio::sync::Mutex;

use crate::engine::{EngineError, Peer, WebRtcEngine};
use crate::segmenter::{Recording, RecordingConfig, RecordingSummary, SegmentSealer};

/// The largest SDP offer taken. Real offers are a few kilobytes.
pub const MAX_OFFER_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WhipError {
    #[error("the offer is larger than {MAX_OFFER_BYTES} bytes")]
    OfferTooLarge,
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("could not create the recording directory")]
    Directory(#[source] std::io::Error),
}

/// The answer to an accepted offer. `Debug` withholds both: the session's identifier ends the session, and the
/// SDP holds the ICE credentials and the candidates' addresses.
#[derive(Clone)]
pub struct WhipAnswer {
    /// The session's identifier: 128 random bits in hex, for the resource URL.
    pub session_id: String,
    pub sdp: String,
}

impl std::fmt::Debug for WhipAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhipAnswer").finish_non_exhaustive()
    }
}

struct Session {
    peer: Peer,
    recording: Recording,
}

/// The live WHIP sessions.
pub struct WhipIngest {
    engine: WebRtcEngine,
    sessions: Arc<Mutex<HashMap<String, Session>>>,
}

impl std::fmt::Debug for WhipIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhipIngest").field("engine", &self.engine).finish_non_exhaustive()
    }
}

fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl WhipIngest {
    pub fn new(engine: WebRtcEngine) -> Self {
        WhipIngest { engine, sessions: Arc::default() }
    }

    /// Accepts a publisher's offer: starts a receive-only peer and a recording into `config.dir` (created if
    /// missing), sealing each segment through `sealer`. Returns the answer, with all ICE candidates.
    pub async fn accept_whip_offer(
        &self,
        sdp_offer: &str,
        config: RecordingConfig,
        sealer: Arc<dyn SegmentSealer>,
    ) -> Result<WhipAnswer, WhipError> {
        if sdp_offer.len() > MAX_OFFER_BYTES {
            return Err(WhipError::OfferTooLarge);
        }
        tokio::fs::create_dir_all(&config.dir).await.map_err(WhipError::Directory)?;
        let recording = Recording::start(config, sealer);
        let mut peer = match self.engine.accept_publisher(sdp_offer, recording.track_sender()).await {
            Ok(peer) => peer,
            Err(e) => {
                recording.stop().await;
                return Err(e.into());
            }
        };
        let session_id = new_session_id();
        let sdp = peer.answer_sdp().to_owned();
        // A publisher that vanishes without a DELETE: end its session when the connection fails, so that what it
        // sent is sealed and nothing is left running.
        let failed = peer.failed();
        self.sessions.lock().await.insert(session_id.clone(), Session { peer, recording });
        let sessions = Arc::downgrade(&self.sessions);
        let id = session_id.clone();
        tokio::spawn(async move {
            failed.await;
            let Some(sessions) = sessions.upgrade() else { return };
            let Some(session) = sessions.lock().await.remove(&id) else { return };
            tracing::warn!("a WHIP publisher's connection failed; ending its session");
            let summary = end(session).await;
            // Each error was logged, with its causes, as it happened.
            tracing::info!(segments = summary.segments.len(), errors = summary.errors.len(), "WHIP session ended");
        });
        Ok(WhipAnswer { session_id, sdp })
    }

    /// Whether a session exists.
    pub async fn contains(&self, session_id: &str) -> bool {
        self.sessions.lock().await.contains_key(session_id)
    }

    /// Ends a session (the WHIP DELETE): closes the peer, seals the open segment, and returns the recording's
    /// summary; `None` if there is no such session (or it already ended because its connection failed).
    pub async fn teardown(&self, session_id: &str) -> Option<RecordingSummary> {
        let session = self.sessions.lock().await.remove(session_id)?;
        Some(end(session).await)
    }
}

async fn end(session: Session) -> RecordingSummary {
    if let Err(e) = session.peer.close().await {
        tracing::warn!(error = %crate::Chain(&e), "closing a WHIP peer");
    }
    session.recording.stop().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer's SDP (ICE credentials, candidates' addresses) and the session's identifier (which ends the
    /// session) never reach a log line through `Debug`.
    #[test]
    fn an_answer_withholds_its_session_and_its_sdp_from_debug() {
        let answer = WhipAnswer {
            session_id: "5f1e0c9a2b7d4e3f8a6c1b0d9e8f7a6b".to_owned(),
            sdp: concat!(
                "v=0\r\na=ice-ufrag:Qx7f\r\na=ice-pwd:s3cretpassw0rd\r\n",
                "a=candidate:1 1 udp 2130706431 203.0.113.7 50000 typ host\r\n",
            )
            .to_owned(),
        };
        let shown = format!("{answer:?}");
        for private in ["5f1e0c9a", "Qx7f", "s3cret", "203.0.113.7", "candidate"] {
            assert!(!shown.contains(private), "{private} in {shown}");
        }
        assert_eq!(shown, "WhipAnswer { .. }");
    }
}
