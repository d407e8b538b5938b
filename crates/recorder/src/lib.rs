//! Evidence-grade recording of what a publisher sends over WebRTC, and the WHIP (RFC 9725) ingest that lets a
//! standard client publish.
//!
//! The pieces, from the network inwards:
//!
//! - [`engine`]: the seam over the WebRTC engine. webrtc-rs is used only there; the rest of the crate sees
//!   [`engine::IncomingTrack`]s that yield RTP packets and RTCP sender reports, and a way to ask for a keyframe.
//! - [`jitter`]: a small jitter buffer that puts RTP packets back in sequence order and reports losses.
//! - [`timeline`]: unwraps 32-bit RTP timestamps and maps them to one timeline for all of a publisher's tracks,
//!   through RTCP sender reports once they come (arrival time until then).
//! - [`track`]: depacketizes VP8 (whole frames, keyframes marked; a keyframe is requested when the track starts
//!   and after any loss) and Opus.
//! - [`segmenter`]: orders frames from all tracks by time and copies them, without transcoding, into WebM files
//!   cut at the first video keyframe after about ten seconds; each file is handed to a [`SegmentSealer`] as soon
//!   as it is closed and on disk, so a crash loses at most the open segment.
//! - [`sfu`]: a hearing room's media plane: relays each member's packets to the others in the same place, and
//!   records each member while the hearing says so; a protected member's media reaches those a protective order
//!   does not privilege only through a masking pipeline ([`masking`]).
//! - [`whip`]: the WHIP session table: accept an offer, answer it, tear a session down.

pub mod engine;
pub mod jitter;
pub mod masking;
pub mod segmenter;
pub mod sfu;
pub mod timeline;
pub mod track;
pub mod whip;

pub use engine::{Announce, EngineConfig, EngineError, WebRtcEngine};
pub use segmenter::{RecordingConfig, RecordingError, RecordingSummary, SealError, SealedSegment, SegmentSealer};
pub use whip::{WhipAnswer, WhipError, WhipIngest};

/// An error and every cause under it, each once, for the log ([`custodia_core::ErrorChain`]).
pub(crate) use custodia_core::ErrorChain as Chain;
