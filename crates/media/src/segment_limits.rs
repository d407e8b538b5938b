//! The bounds on a recorded segment that [`mask_segment`](crate::mask_segment) masks, re-exported from
//! [`masked_copy`](crate::masked_copy) where they apply; [`MaskError`](crate::MaskError)'s messages for a segment
//! beyond one of them name it.

use std::time::Duration;

/// The largest segment file accepted, in bytes. A 10 s segment of 1080p VP8 is a few MiB.
pub const MAX_SEGMENT_BYTES: u64 = 512 << 20;

/// The most streams a segment may have. The recorder writes one video and one audio stream.
pub const MAX_SEGMENT_STREAMS: usize = 4;

/// The longest timeline accepted, in milliseconds from the first packet to the last (30 times the recorder's
/// segment length). It also bounds the silence that gaps in the audio are filled with.
pub const MAX_SEGMENT_DURATION_MS: i64 = 5 * 60 * 1000;

/// How long masking one segment may take before it is abandoned.
pub const SEGMENT_TIME_LIMIT: Duration = Duration::from_secs(300);
