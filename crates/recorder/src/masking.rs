//! What the room needs from a masking pipeline: the others receive a protected member's media only as the pipeline
//! masked it (a mosaic for the face, an altered voice), never the original. The same pipelines duck a voice (lower
//! its level) for the listeners of a simultaneous interpretation, who hear the floor beneath the interpreter: a
//! [`Treatment`] says what a pipeline does.
//!
//! The room does not mask anything itself: a [`MaskerFactory`] starts a pipeline for one track, and the room feeds
//! it whole frames (a VP8 frame, or one Opus packet) and sends on what comes back. The gateway's factory runs each
//! pipeline in a child process under limits (FFmpeg decodes what a peer sent), so a pipeline that crashes, hangs or
//! is killed takes nothing down with it: its receivers get nothing until a new one runs. Nothing in this module, or
//! in the room, ever routes the original to someone who should get the masked feed; a pipeline that fails only
//! means silence and no picture.

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::engine::MediaKind;

/// What the room hands a masking pipeline.
#[derive(Debug, Clone)]
pub enum ToMasker {
    /// One whole frame: a VP8 frame as reassembled from RTP, or one Opus packet; `pts_ms` on the feed's own timeline.
    Frame { pts_ms: i64, data: Bytes },
    /// A receiver asked for a keyframe: make the next masked video frame one.
    Keyframe,
}

/// One frame a pipeline made: masked, and encoded again (VP8, or one Opus packet).
#[derive(Debug, Clone)]
pub struct MaskedFrame {
    /// The `pts_ms` of the frame it was made from.
    pub pts_ms: i64,
    pub data: Bytes,
    pub keyframe: bool,
}

/// A running pipeline for one track. Dropping it stops the pipeline; its `output` ending means it stopped (it
/// crashed, was killed, or gave up), and the room starts another.
#[derive(Debug)]
pub struct MaskPipe {
    /// Bounded: what does not fit is dropped by the room, never queued without limit.
    pub input: mpsc::Sender<ToMasker>,
    pub output: mpsc::Receiver<MaskedFrame>,
}

/// What a pipeline makes of a track: masked (the face or the voice, as a protective order says), ducked (an audio
/// track's level lowered, for a listener of a simultaneous interpretation channel), or both. Neither is the
/// original, which no pipeline handles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Treatment {
    pub mask: bool,
    /// Audio only.
    pub duck: bool,
}

impl Treatment {
    /// The original: what no pipeline makes.
    pub const ORIGINAL: Treatment = Treatment { mask: false, duck: false };

    pub fn is_original(self) -> bool {
        self == Self::ORIGINAL
    }
}

/// Starts masking pipelines.
pub trait MaskerFactory: Send + Sync + std::fmt::Debug {
    /// Starts a pipeline that makes `treatment` of one track of `kind` (VP8 video or Opus audio). An error means
    /// nobody gets that treatment of the track until a later start succeeds.
    fn start(&self, kind: MediaKind, treatment: Treatment) -> std::io::Result<MaskPipe>;
}
