//! Voice anonymisation for a protected witness: McAdams-coefficient warping of the spectral envelope, as in the
//! VoicePrivacy Challenge's CPU-only baseline (Patino et al. 2021, "Speaker anonymisation using the McAdams
//! coefficient"), together with a change of pitch. Both amounts are drawn per hearing from one seed. Pure Rust,
//! no FFI: [`crate::mask::VoiceMasker`] wraps it between an Opus decoder and encoder.
//!
//! # Why this method
//!
//! A witness's voice must not identify them to the non-privileged participants of a hearing, yet what they say
//! must stay intelligible. McAdams warping moves the vocal tract's resonances (formants), which carry much of a
//! speaker's identity. It needs no model, no GPU and no training data, costs little CPU per feed and adds one frame
//! of delay, which suits a live hearing.
//!
//! On its own it keeps the excitation (the LPC residual) and so the speaker's pitch exactly: a security review
//! measured a 120 Hz voice at 120.0 Hz at every masked receiver. Pitch is one of the strongest cues to who is
//! speaking, and a single coefficient is a small space for an informed attacker to search. So the excitation is
//! also resampled, moving the fundamental frequency by a factor β drawn from the same seed as α
//! ([`SEEDED_PITCH_DOWN`], [`SEEDED_PITCH_UP`]). Because it is the *residual* that is resampled and the envelope
//! is still imposed by the (warped) LPC filter, the pitch moves without dragging the formants along, and the
//! formant warp stays what α says. This is residual-excited pitch modification, the LP variant of PSOLA (Moulines
//! and Charpentier 1990), with the pitch marks replaced by a waveform-similarity search (WSOLA, Verhelst and
//! Roelands 1993) so that no pitch tracker is needed. Neither step is a cipher: together they take away the pitch
//! cue and widen what an attacker must search to two independent parameters, nothing more.
//!
//! # The transform
//!
//! The signal is cut into 20 ms frames with 50 % overlap; frame `k` is centred on 16 kHz sample `c_k` and gives
//! the output's grain there. For each frame:
//!
//! 1. **Where to read.** A grain's output sample `c_k + n` is read from source position `s_k + n·β`: β > 1
//!    reads faster and so shortens the periods (a higher pitch) without changing the grain's length. Left alone,
//!    `s_k` would drift away from `c_k` by `HOP·(β − 1)` per frame; instead it is chosen anew each frame within a
//!    window of 15 ms that ends at the latest position the data at hand allows (no look-ahead), as the position
//!    whose waveform best matches (normalised cross-correlation) the natural continuation of the previous grain,
//!    `s_{k−1} + HOP·β`. The shared half of two neighbouring grains is then in phase (their pulses coincide), so
//!    the overlap-add neither doubles nor cancels pulses, and the content never lags more than the window behind.
//! 2. **The envelope.** LPC analysis of order [`LPC_ORDER`] (autocorrelation and Levinson–Durbin) of the 20 ms
//!    around `s_k`, and the roots of the LPC polynomial. Each complex pole pair at angle φ (radians, 0..π) is moved
//!    to angle φ^α, α being the McAdams coefficient; real poles are kept. Since φ^α > φ for φ < 1 rad and φ^α < φ
//!    above it (α < 1), low formants move up and high ones down; the mapping is monotonic, so the order of a
//!    vowel's formants is kept.
//! 3. **The excitation.** The residual of the source by inverse filtering, read at the positions `s_k + n·β`
//!    with a windowed-sinc interpolator (16 taps, Blackman window, cut-off at the Nyquist frequency divided by β
//!    when β > 1, so that reading faster does not alias).
//! 4. **Synthesis.** The excitation through the all-pole filter of the moved poles, started 4 ms before the grain
//!    with the source itself as the filter's state, scaled to the power of its source, windowed and overlap-added.
//!
//! With α = 1 and β = 1 every step is the identity (the filter is started in the state that makes it the exact
//! inverse of the analysis): the tests check that the signal then comes through unchanged.
//!
//! Differences from the baseline's script, each for streaming or robustness:
//!
//! - The baseline windows the frame before analysis and again after synthesis (Hann twice), which ripples the
//!   level by up to 6 dB within each frame. Here the analysis window is the square root of a periodic Hann window,
//!   and the synthesised grain is windowed once by a Hann window, which overlap-adds to exactly one at 50 %
//!   overlap.
//! - The baseline normalises the whole file to full scale at the end, which a stream cannot do. Instead each grain
//!   is scaled to the power of its source, so the output level follows the input's whatever β is.
//! - Poles are kept strictly inside the unit circle (radius at most [`MAX_POLE_RADIUS`]), and a tiny white-noise
//!   correction on the autocorrelation keeps Levinson–Durbin well conditioned on pure tones.
//! - Non-finite input samples are taken as silence and every sample is clamped to [-1, 1]. A frame whose roots
//!   cannot be found is output as silence, never unwarped: the mask fails closed.
//!
//! # The pitch factors, and why not a crate
//!
//! β is drawn half the time below one and half the time above, log-uniformly within each of [`SEEDED_PITCH_DOWN`]
//! (0.8–0.9) and [`SEEDED_PITCH_UP`] (1.12–1.25), that is between about two and four semitones either way. A
//! change under two semitones (10 %) is within what one speaker's own pitch varies from day to day, and would not
//! hide it from someone who knows the voice; the gap around one also keeps the factor from being close to the
//! identity by chance. Beyond four semitones residual resampling starts to sound artificial (a man's 120 Hz at
//! 1.25 is 150 Hz, still a plausible voice; at 1.4 it would be 170 Hz with a man's formants), and a factor below
//! 0.8 band-limits the excitation to β × 7.3 kHz, dulling sibilants. [`PITCH_RANGE`] is what
//! [`VoiceTransform::with_pitch`] accepts, a little wider.
//!
//! The pitch change is written here, not taken from a crate: `wsola` (0.1.0, one release) time-stretches a whole
//! interleaved stream with its own buffering and a latency that varies with the tempo, on the signal rather than
//! on the LPC residual of these frames, and `tdpsola` (0.1.0) is AGPL-3.0 and needs a pitch tracker. What is
//! needed here is about a hundred lines inside the existing frame loop, with the delay fixed.
//!
//! # 48 kHz in, 16 kHz analysis
//!
//! WebRTC audio is 48 kHz; the method was designed and tuned at 16 kHz. The angle warp φ^α depends on the sample
//! rate (the same formant has a third of the angle at 48 kHz, where φ^0.8 moves F1 = 700 Hz to 1130 Hz rather
//! than 906 Hz), and an order-20 predictor at 48 kHz spends its poles on the 8–24 kHz band and the spectral tilt
//! rather than on the formants. So the signal is decimated by 3 to 16 kHz, transformed exactly as the baseline
//! does, and interpolated back to 48 kHz. The output is therefore band-limited to about 7.3 kHz (wideband speech,
//! fully intelligible). That is also the safer choice for privacy: the band above 8 kHz, which the warp would not
//! touch, is dropped rather than passed through with the speaker's own timbre in it.
//!
//! The resampling filter is a windowed-sinc FIR ([`RESAMPLING_TAPS`] taps, Blackman window, cut-off 7.3 kHz,
//! about 74 dB stop-band attenuation), applied polyphase-fashion at the fixed ratio 3. It is hand-written because
//! the ratio is a fixed integer and the filter is a dozen lines; a general resampling crate would bring FFT
//! dependencies and a fixed-chunk API that would need re-buffering here anyway.
//!
//! # Streaming and delay
//!
//! [`VoiceTransform::process`] takes any number of samples and returns exactly as many as keep the output
//! [`VoiceTransform::DELAY_SAMPLES`] behind the input: after `n` samples in, `n - DELAY_SAMPLES` (or none) have
//! come out in all. The delay is the analysis frame (20 ms) plus the two resampling filters' half-lengths (2 ms):
//! 24 ms in all, as before the pitch change, which needs no look-ahead: it reads only from the past (a history of
//! 64 ms at 16 kHz). The price is that the content of output sample `i` comes from up to 18 ms before input
//! sample `i`, varying from grain to grain within the search window; the least lag grows with β (none below 0.94,
//! 0.5 ms at 1, 3 ms at 1.25). A pitch change cannot keep every sample in place anyway. The work is triggered by
//! sample counts only, so the output does not depend on how the input was split into chunks.

use std::collections::VecDeque;
use std::f64::consts::PI;
use std::ops::{Range, RangeInclusive};

use nalgebra::{Complex, SMatrix, Schur};

/// The sample rate [`VoiceTransform`] takes and gives (WebRTC's Opus rate).
pub const SAMPLE_RATE: u32 = 48_000;

/// The rate the LPC analysis runs at, the rate the McAdams baseline was designed for.
pub const ANALYSIS_RATE: u32 = 16_000;

/// [`SAMPLE_RATE`] / [`ANALYSIS_RATE`].
const DECIMATION: usize = 3;

/// The analysis frame: 20 ms at [`ANALYSIS_RATE`].
const FRAME_LEN: usize = 320;

/// Frames overlap by half.
const HOP: usize = FRAME_LEN / 2;

/// The order of the linear predictor at 16 kHz, the baseline's.
pub const LPC_ORDER: usize = 20;

/// Taps of the resampling low-pass filter (odd, so that its delay is a whole number of samples).
pub const RESAMPLING_TAPS: usize = 193;

/// The resampling filter's delay in 48 kHz samples, compensated in the output's alignment.
const RESAMPLING_HALF: usize = (RESAMPLING_TAPS - 1) / 2;

/// The resampling filter's cut-off, in Hz; the stop band starts near 8 kHz, the Nyquist frequency at 16 kHz.
const RESAMPLING_CUTOFF_HZ: f64 = 7_300.0;

/// The largest radius a pole of the resynthesis filter may have; anything further out is pulled in to it.
pub const MAX_POLE_RADIUS: f64 = 0.999;

/// The McAdams coefficients [`VoiceTransform::new`] accepts.
pub const MCADAMS_RANGE: RangeInclusive<f64> = 0.5..=0.95;

/// The range [`VoiceTransform::from_seed`] draws the McAdams coefficient from, uniformly.
///
/// The VoicePrivacy baseline uses 0.8 for everyone. A coefficient drawn per hearing means an attacker who knows
/// the method still does not know the warp to undo. The upper end, 0.85, still moves F1 of an open vowel (700 Hz
/// at 16 kHz) by about 150 Hz (20 %), beyond the spread between speakers of the same sex; towards 0.95 the voice
/// is barely changed. The lower end, 0.65, moves the same F1 to about 1100 Hz, into the F2 range of back vowels:
/// further down, vowels become hard to tell apart and the voice sounds strained, costing intelligibility.
pub const SEEDED_RANGE: Range<f64> = 0.65..0.85;

/// The pitch factors [`VoiceTransform::with_pitch`] accepts (about five semitones either way); 1 keeps the pitch.
pub const PITCH_RANGE: RangeInclusive<f64> = 0.75..=1.35;

/// The lowering pitch factors [`VoiceTransform::from_seed`] draws from (half the seeds), log-uniformly: two to
/// four semitones down. See the module documentation for why.
pub const SEEDED_PITCH_DOWN: Range<f64> = 0.8..0.9;

/// The raising pitch factors [`VoiceTransform::from_seed`] draws from (the other half), log-uniformly: two to
/// four semitones up.
pub const SEEDED_PITCH_UP: Range<f64> = 1.12..1.25;

/// Analysis frames with less energy than this (sum of squared windowed samples) are silence.
const SILENCE_ENERGY: f64 = 1e-12;

/// Relative white-noise correction added to the zero-lag autocorrelation (about −90 dB).
const WHITE_NOISE_CORRECTION: f64 = 1e-9;

/// Poles with an imaginary part no larger than this are real.
const REAL_POLE_TOLERANCE: f64 = 1e-9;

/// The most QR iterations allowed to find a frame's roots.
const MAX_SCHUR_ITERATIONS: usize = 10_000;

/// The most a resynthesised grain is amplified to match its source's power.
const MAX_FRAME_GAIN: f64 = 100.0;

/// The 16 kHz samples kept: the frame being gathered (the newest [`FRAME_LEN`]) and the history that grains and
/// the similarity search reach back into (64 ms).
const SOURCE_LEN: usize = 1024;

/// How far back from the latest possible source position the similarity search looks, in 16 kHz samples (15 ms):
/// at least one pitch period of voices down to 67 Hz, so that a position in phase with the previous grain is
/// always among the candidates.
const SEARCH_SPAN: usize = 240;

/// The stretch the search compares, in 16 kHz samples: the source of the half frame a grain shares with the one
/// before it.
const SIMILARITY_LEN: usize = HOP;

/// Samples synthesised before a grain's window opens (4 ms), so that the all-pole filter settles where the window
/// is still near zero.
const PREROLL: usize = 64;

/// Half the taps of the excitation's interpolator.
const INTERPOLATION_HALF: usize = 8;

/// Taps of the excitation's interpolator.
const INTERPOLATION_TAPS: usize = 2 * INTERPOLATION_HALF;

/// Fractional positions tabulated for the interpolator (linear interpolation between neighbouring rows).
const INTERPOLATION_PHASES: usize = 128;

/// Samples synthesised per grain: the filter's initial state, the pre-roll and the frame.
const GRAIN_LEN: usize = LPC_ORDER + PREROLL + FRAME_LEN;

/// The grain's output sample `g` is `g - GRAIN_CENTRE` samples from the frame's centre.
const GRAIN_CENTRE: usize = LPC_ORDER + PREROLL + HOP;

// The history reaches back far enough for the fastest reading: the search's earliest candidate, less the grain's
// reach before its centre, the interpolator's taps and the inverse filter's memory (with a sample to spare for
// each rounding).
const _: () = {
    let fastest = *PITCH_RANGE.end();
    let latest_lag = INTERPOLATION_HALF + 1 + ((HOP - 1) as f64 * fastest) as usize + 1;
    let reach = (GRAIN_CENTRE as f64 * fastest) as usize + 1 + INTERPOLATION_HALF + LPC_ORDER + 1;
    assert!(latest_lag + SEARCH_SPAN + reach <= SOURCE_LEN);
    assert!(latest_lag + SEARCH_SPAN + SIMILARITY_LEN <= SOURCE_LEN);
};

/// Why a voice transform could not be made.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum VoiceError {
    #[error("McAdams coefficient {0} is outside [0.5, 0.95]")]
    CoefficientOutOfRange(f64),
    #[error("pitch factor {0} is outside [0.75, 1.35]")]
    PitchFactorOutOfRange(f64),
}

/// McAdams voice anonymisation with a change of pitch, of a mono 48 kHz stream; see the module documentation.
pub struct VoiceTransform {
    mcadams: f64,
    pitch_factor: f64,
    /// The latest source centre the data at hand allows for this pitch factor (an index into `source`).
    latest_source_centre: usize,
    /// The resampling low-pass filter, symmetric, unity gain at DC.
    resampling_filter: Box<[f64]>,
    /// The sqrt-Hann window: the analysis window, and squared the synthesis window.
    window: Box<[f64]>,
    /// The excitation's interpolator: [`INTERPOLATION_PHASES`] + 1 rows of [`INTERPOLATION_TAPS`] taps, row `q`
    /// for a position `q / INTERPOLATION_PHASES` past a sample.
    interpolator: Box<[f64]>,
    /// The last [`RESAMPLING_TAPS`] input samples, stored twice over (at `i` and `i + RESAMPLING_TAPS`) so that
    /// the newest window is always one contiguous slice.
    input_history: Box<[f64]>,
    input_history_position: usize,
    /// Input samples taken so far.
    input_count: u64,
    /// The last [`SOURCE_LEN`] 16 kHz samples, oldest first (zeros before the stream's start); a frame is
    /// transformed each time it is full, then [`HOP`] samples are dropped from its front.
    source: Vec<f64>,
    /// Where the previous grain's source was centred, as an index into `source` (kept up to date as it shifts).
    previous_source_centre: Option<usize>,
    /// Overlap-add accumulator of the frame being gathered.
    overlap: Box<[f64]>,
    /// The last transformed 16 kHz samples, stored twice over like `input_history`.
    synthesis_history: Box<[f64]>,
    synthesis_history_position: usize,
    /// Transformed 16 kHz samples made so far.
    synthesis_count: u64,
    /// Transformed 48 kHz samples not yet handed out (they are held to keep the delay constant).
    ready: VecDeque<f32>,
    /// Samples handed out so far.
    emitted: u64,
    scratch: FrameScratch,
}

/// Per-frame working buffers, kept to avoid allocating per frame.
#[derive(Debug)]
struct FrameScratch {
    windowed: Vec<f64>,
    residual: Vec<f64>,
    grain: Vec<f64>,
}

/// Taps of the interpolator's history: the 16 kHz samples one 48 kHz output sample depends on.
const SYNTHESIS_HISTORY: usize = RESAMPLING_TAPS.div_ceil(DECIMATION);

impl std::fmt::Debug for VoiceTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the coefficients: the buffers hold the witness's voice.
        f.debug_struct("VoiceTransform")
            .field("mcadams", &self.mcadams)
            .field("pitch_factor", &self.pitch_factor)
            .finish_non_exhaustive()
    }
}

/// SplitMix64 (Steele, Lea and Flood 2014): a few well-mixed draws from a seed need no RNG crate.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The next draw's top 53 bits as a fraction in [0, 1).
    fn next_unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The pitch factor for a draw `unit` in [0, 1): its first half maps log-uniformly onto [`SEEDED_PITCH_DOWN`],
/// its second half onto [`SEEDED_PITCH_UP`].
fn seeded_pitch_factor(unit: f64) -> f64 {
    let (range, within) =
        if unit < 0.5 { (SEEDED_PITCH_DOWN, 2.0 * unit) } else { (SEEDED_PITCH_UP, 2.0 * unit - 1.0) };
    let (low, high) = (range.start.ln(), range.end.ln());
    // Rounding could land on the open end; keep it inside.
    (low + within * (high - low)).exp().clamp(range.start, range.end.next_down())
}

impl VoiceTransform {
    /// Output sample `i` comes out once input sample `i + DELAY_SAMPLES` has gone in: 1,152 samples, 24 ms at
    /// 48 kHz (one 20 ms analysis frame and the two resampling filters' delays; the pitch change reads only from
    /// the past and adds nothing).
    pub const DELAY_SAMPLES: usize = DECIMATION * FRAME_LEN + 2 * RESAMPLING_HALF;

    /// A transform with McAdams coefficient `mcadams` (α), in [0.5, 0.95], that keeps the pitch: the formant warp
    /// alone. A witness's feed is masked with [`Self::from_seed`], which changes the pitch too.
    pub fn new(mcadams: f64) -> Result<Self, VoiceError> {
        Self::with_pitch(mcadams, 1.0)
    }

    /// A transform with McAdams coefficient `mcadams` (α), in [0.5, 0.95], and pitch factor `pitch_factor` (β),
    /// in [`PITCH_RANGE`]: the fundamental frequency is multiplied by β.
    pub fn with_pitch(mcadams: f64, pitch_factor: f64) -> Result<Self, VoiceError> {
        if !MCADAMS_RANGE.contains(&mcadams) {
            return Err(VoiceError::CoefficientOutOfRange(mcadams));
        }
        if !PITCH_RANGE.contains(&pitch_factor) {
            return Err(VoiceError::PitchFactorOutOfRange(pitch_factor));
        }
        Ok(Self::with_parameters(mcadams, pitch_factor))
    }

    /// A transform for one hearing: the McAdams coefficient drawn uniformly from [`SEEDED_RANGE`] and the pitch
    /// factor from [`SEEDED_PITCH_DOWN`] or [`SEEDED_PITCH_UP`], by two successive draws from `seed`, so that the
    /// two are independent and the same seed always gives the same pair. (The coefficient is the first draw, the
    /// one earlier versions took alone, so a seed keeps its coefficient.)
    pub fn from_seed(seed: u64) -> Self {
        let mut draws = SplitMix64(seed);
        let mcadams = SEEDED_RANGE.start + draws.next_unit() * (SEEDED_RANGE.end - SEEDED_RANGE.start);
        let pitch_factor = seeded_pitch_factor(draws.next_unit());
        Self::with_parameters(mcadams, pitch_factor)
    }

    /// Any coefficient and factor, unchecked (tests use 1.0 and 1.0, the identity).
    fn with_parameters(mcadams: f64, pitch_factor: f64) -> Self {
        VoiceTransform {
            mcadams,
            pitch_factor,
            latest_source_centre: latest_source_centre(pitch_factor),
            resampling_filter: resampling_filter(),
            window: sqrt_hann_window(),
            interpolator: interpolation_table(pitch_factor),
            input_history: vec![0.0; 2 * RESAMPLING_TAPS].into_boxed_slice(),
            input_history_position: 0,
            input_count: 0,
            source: {
                let mut source = Vec::with_capacity(SOURCE_LEN);
                source.resize(SOURCE_LEN - FRAME_LEN, 0.0);
                source
            },
            previous_source_centre: None,
            overlap: vec![0.0; FRAME_LEN].into_boxed_slice(),
            synthesis_history: vec![0.0; 2 * SYNTHESIS_HISTORY].into_boxed_slice(),
            synthesis_history_position: 0,
            synthesis_count: 0,
            ready: VecDeque::with_capacity(Self::DELAY_SAMPLES + DECIMATION * HOP),
            emitted: 0,
            scratch: FrameScratch {
                windowed: vec![0.0; FRAME_LEN],
                residual: Vec::with_capacity(SOURCE_LEN),
                grain: Vec::with_capacity(GRAIN_LEN),
            },
        }
    }

    /// The McAdams coefficient α.
    pub fn mcadams(&self) -> f64 {
        self.mcadams
    }

    /// The pitch factor β: the output's fundamental frequency is β times the input's.
    pub fn pitch_factor(&self) -> f64 {
        self.pitch_factor
    }

    /// Takes mono 48 kHz samples in [-1, 1], in chunks of any size, and appends the transformed samples to `out`:
    /// over the stream, as many as went in minus [`Self::DELAY_SAMPLES`]. Non-finite samples are taken as
    /// silence, others clamped to [-1, 1].
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        out.reserve(input.len());
        for &sample in input {
            let sample = if sample.is_finite() { f64::from(sample.clamp(-1.0, 1.0)) } else { 0.0 };
            self.take_input_sample(sample);
            let due = self.input_count.saturating_sub(Self::DELAY_SAMPLES as u64);
            while self.emitted < due {
                // DELAY_SAMPLES covers the pipeline's latency, so the sample is always ready (tests check that
                // the counts are exact).
                let Some(next) = self.ready.pop_front() else { break };
                out.push(next);
                self.emitted += 1;
            }
        }
    }

    /// Decimation: every third input sample (offset by the filter's delay) yields one 16 kHz sample, the filter
    /// centred on input sample `3m` for 16 kHz sample `m`.
    fn take_input_sample(&mut self, sample: f64) {
        let position = self.input_history_position;
        self.input_history[position] = sample;
        self.input_history[position + RESAMPLING_TAPS] = sample;
        self.input_history_position = (position + 1) % RESAMPLING_TAPS;
        let index = self.input_count;
        self.input_count += 1;
        let Some(offset) = index.checked_sub(RESAMPLING_HALF as u64) else { return };
        if offset % DECIMATION as u64 != 0 {
            return;
        }
        // Oldest to newest; the filter is symmetric, so the direction does not matter.
        let start = self.input_history_position;
        let newest = &self.input_history[start..start + RESAMPLING_TAPS];
        let decimated = dot(newest, &self.resampling_filter);
        self.take_analysis_sample(decimated);
    }

    fn take_analysis_sample(&mut self, sample: f64) {
        self.source.push(sample);
        if self.source.len() < SOURCE_LEN {
            return;
        }
        self.transform_frame();
        // The first half of the accumulator now has every grain that covers it: hand it on.
        for index in 0..HOP {
            let finished = self.overlap[index];
            self.take_synthesis_sample(finished);
        }
        self.overlap.copy_within(HOP.., 0);
        self.overlap[FRAME_LEN - HOP..].fill(0.0);
        self.source.drain(..HOP);
        if let Some(centre) = &mut self.previous_source_centre {
            *centre -= HOP;
        }
    }

    /// Interpolation: 16 kHz sample `m` completes the 48 kHz samples `3m - half + r`, r = 0, 1, 2 (those before
    /// the stream's start are dropped).
    fn take_synthesis_sample(&mut self, sample: f64) {
        let position = self.synthesis_history_position;
        self.synthesis_history[position] = sample;
        self.synthesis_history[position + SYNTHESIS_HISTORY] = sample;
        self.synthesis_history_position = (position + 1) % SYNTHESIS_HISTORY;
        let m = self.synthesis_count;
        self.synthesis_count += 1;
        // history[newest - d] is 16 kHz sample m - d.
        let newest = self.synthesis_history_position + SYNTHESIS_HISTORY - 1;
        for phase in 0..DECIMATION {
            let Some(output_index) = (DECIMATION as u64 * m + phase as u64).checked_sub(RESAMPLING_HALF as u64) else {
                continue;
            };
            debug_assert_eq!(output_index, self.emitted + self.ready.len() as u64);
            let mut sum = 0.0;
            let mut tap = phase;
            let mut back = 0;
            while tap < RESAMPLING_TAPS {
                sum += self.resampling_filter[tap] * self.synthesis_history[newest - back];
                tap += DECIMATION;
                back += 1;
            }
            let value = (DECIMATION as f64 * sum).clamp(-1.0, 1.0);
            self.ready.push_back(value as f32);
        }
    }

    /// Where this frame's grain reads its source, centred (an index into `source`): the latest position allowed,
    /// or, after the first frame, the position within [`SEARCH_SPAN`] of it whose waveform best continues the
    /// previous grain (highest normalised cross-correlation over [`SIMILARITY_LEN`] samples; the latest wins a
    /// tie). See the module documentation.
    fn source_centre(&self) -> usize {
        let latest = self.latest_source_centre;
        let Some(previous) = self.previous_source_centre else { return latest };
        // At most `latest + HOP·(β − 1) + 1`, inside the data (checked where SOURCE_LEN is).
        let natural = (previous as f64 + HOP as f64 * self.pitch_factor).round() as usize;
        let reference = &self.source[natural - SIMILARITY_LEN..natural];
        let mut energy: f64 = self.source[latest - SIMILARITY_LEN..latest].iter().map(|v| v * v).sum();
        let (mut best, mut best_score) = (latest, f64::NEG_INFINITY);
        for candidate in (latest - SEARCH_SPAN..=latest).rev() {
            if candidate < latest {
                // Slide the compared stretch back by one sample.
                let (entering, leaving) = (self.source[candidate - SIMILARITY_LEN], self.source[candidate]);
                energy += entering * entering - leaving * leaving;
            }
            let correlation = dot(reference, &self.source[candidate - SIMILARITY_LEN..candidate]);
            let score = if energy > SILENCE_ENERGY { correlation / energy.sqrt() } else { 0.0 };
            if score > best_score {
                (best, best_score) = (candidate, score);
            }
        }
        best
    }

    /// Transforms the frame just gathered and adds its grain, windowed, to the overlap-add accumulator.
    fn transform_frame(&mut self) {
        let source_centre = self.source_centre();
        self.previous_source_centre = Some(source_centre);
        let pitch = self.pitch_factor;
        let source = &self.source;
        let FrameScratch { windowed, residual, grain } = &mut self.scratch;

        // The envelope, from the 20 ms around the grain's source.
        let frame = &source[source_centre - HOP..source_centre + HOP];
        for ((windowed, &sample), &weight) in windowed.iter_mut().zip(frame).zip(self.window.iter()) {
            *windowed = sample * weight;
        }
        let frame_energy: f64 = windowed.iter().map(|v| v * v).sum();
        if frame_energy <= SILENCE_ENERGY {
            return;
        }
        let Some(predictor) = lpc_coefficients(windowed, LPC_ORDER) else { return };
        let Some(roots) = polynomial_roots(&predictor) else { return };
        let warped = warped_polynomial(&roots, self.mcadams);

        // Grain sample g is read from source position `position(g)`.
        let position = |g: usize| source_centre as f64 + (g as f64 - GRAIN_CENTRE as f64) * pitch;
        // The residual (FIR inverse filter over the source's own history) at every sample the excitation's
        // interpolation reads; `residual[j - first]` is the residual at source sample j.
        let first = position(LPC_ORDER).floor() as usize + 1 - INTERPOLATION_HALF;
        let last = position(GRAIN_LEN - 1).floor() as usize + INTERPOLATION_HALF;
        residual.clear();
        residual.extend((first..=last).map(|j| {
            predictor.iter().enumerate().map(|(lag, &coefficient)| coefficient * source[j - lag]).sum::<f64>()
        }));

        // The filter's initial state is the source itself, read the same way; then the excitation through the
        // warped all-pole filter.
        grain.clear();
        grain.extend((0..LPC_ORDER).map(|g| interpolate(&self.interpolator, source, position(g))));
        for g in LPC_ORDER..GRAIN_LEN {
            let excitation = interpolate(&self.interpolator, residual, position(g) - first as f64);
            let feedback: f64 = warped[1..].iter().zip(grain[..g].iter().rev()).map(|(b, y)| b * y).sum();
            grain.push(excitation - feedback);
        }

        // Scale the grain to the Hann-weighted power of the source it was read from.
        let span_start = source_centre as f64 - HOP as f64 * pitch;
        let span = FRAME_LEN as f64 * pitch;
        let (mut source_energy, mut source_weights) = (0.0, 0.0);
        let span_first = span_start.ceil() as usize;
        for (j, &sample) in (span_first..).zip(&source[span_first..(span_start + span).ceil() as usize]) {
            let weight = (PI * (j as f64 - span_start) / span).sin().powi(2);
            source_energy += weight * sample * sample;
            source_weights += weight;
        }
        let output = &grain[LPC_ORDER + PREROLL..];
        let (mut output_energy, mut output_weights) = (0.0, 0.0);
        for (&sample, &root_weight) in output.iter().zip(self.window.iter()) {
            let weight = root_weight * root_weight;
            output_energy += weight * sample * sample;
            output_weights += weight;
        }
        let gain = ((source_energy / source_weights) / (output_energy / output_weights)).sqrt();
        if !gain.is_finite() {
            return;
        }
        let gain = gain.min(MAX_FRAME_GAIN);
        for ((accumulated, &sample), &root_weight) in self.overlap.iter_mut().zip(output).zip(self.window.iter()) {
            *accumulated += gain * sample * root_weight * root_weight;
        }
    }
}

/// The latest source centre a grain may read from for pitch factor `pitch_factor`, as an index into the source
/// buffer: its last sample's interpolation must find its taps in the buffer, and its analysis frame too.
fn latest_source_centre(pitch_factor: f64) -> usize {
    let by_grain = (SOURCE_LEN - 1 - INTERPOLATION_HALF) as f64 - (HOP - 1) as f64 * pitch_factor;
    (by_grain.floor() as usize).min(SOURCE_LEN - HOP)
}

/// The excitation's interpolator for pitch factor `pitch_factor`: a Blackman-windowed sinc of
/// [`INTERPOLATION_TAPS`] taps, tabulated at [`INTERPOLATION_PHASES`] + 1 fractional positions, each row
/// normalised to unity gain at DC. Its cut-off is the Nyquist frequency, divided by the factor when it is above
/// one (reading faster would otherwise fold the top of the band down). At a whole position and a factor of at
/// most one it returns the sample itself.
fn interpolation_table(pitch_factor: f64) -> Box<[f64]> {
    let cutoff = 1.0 / pitch_factor.max(1.0);
    let half = INTERPOLATION_HALF as f64;
    let mut table = Vec::with_capacity((INTERPOLATION_PHASES + 1) * INTERPOLATION_TAPS);
    for phase in 0..=INTERPOLATION_PHASES {
        let fraction = phase as f64 / INTERPOLATION_PHASES as f64;
        let row: Vec<f64> = (0..INTERPOLATION_TAPS)
            .map(|tap| {
                // Distance from the interpolated position to this tap's sample.
                let t = tap as f64 - (INTERPOLATION_HALF - 1) as f64 - fraction;
                if t.abs() >= half {
                    return 0.0;
                }
                let sinc = if t == 0.0 { 1.0 } else { (PI * cutoff * t).sin() / (PI * cutoff * t) };
                let blackman = 0.42 + 0.5 * (PI * t / half).cos() + 0.08 * (2.0 * PI * t / half).cos();
                cutoff * sinc * blackman
            })
            .collect();
        let sum: f64 = row.iter().sum();
        table.extend(row.iter().map(|tap| tap / sum));
    }
    table.into_boxed_slice()
}

/// `signal` at fractional position `position` (at least [`INTERPOLATION_HALF`] − 1 from its start and
/// [`INTERPOLATION_HALF`] + 1 from its end), by the tabulated interpolator `table`.
fn interpolate(table: &[f64], signal: &[f64], position: f64) -> f64 {
    let whole = position.floor();
    let scaled = (position - whole) * INTERPOLATION_PHASES as f64;
    let phase = scaled.floor();
    let between = scaled - phase;
    let phase = phase as usize;
    let start = whole as usize + 1 - INTERPOLATION_HALF;
    let taps = &signal[start..start + INTERPOLATION_TAPS];
    let row = |index: usize| &table[index * INTERPOLATION_TAPS..(index + 1) * INTERPOLATION_TAPS];
    let lower = dot(row(phase), taps);
    if between == 0.0 {
        return lower;
    }
    lower + between * (dot(row(phase + 1), taps) - lower)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

/// The square root of a periodic Hann window of [`FRAME_LEN`]: `sin(π n / N)`. Its square overlap-adds to one at
/// 50 % overlap (sin² + cos² = 1).
fn sqrt_hann_window() -> Box<[f64]> {
    (0..FRAME_LEN).map(|n| (PI * n as f64 / FRAME_LEN as f64).sin()).collect()
}

/// The resampling low-pass: a Blackman-windowed sinc with cut-off [`RESAMPLING_CUTOFF_HZ`] at 48 kHz, normalised
/// to unity gain at DC.
fn resampling_filter() -> Box<[f64]> {
    let cutoff = RESAMPLING_CUTOFF_HZ / f64::from(SAMPLE_RATE);
    let span = (RESAMPLING_TAPS - 1) as f64;
    let mut taps: Vec<f64> = (0..RESAMPLING_TAPS)
        .map(|k| {
            let t = k as f64 - RESAMPLING_HALF as f64;
            let sinc = if t == 0.0 { 2.0 * cutoff } else { (2.0 * PI * cutoff * t).sin() / (PI * t) };
            let phase = 2.0 * PI * k as f64 / span;
            let blackman = 0.42 - 0.5 * phase.cos() + 0.08 * (2.0 * phase).cos();
            sinc * blackman
        })
        .collect();
    let sum: f64 = taps.iter().sum();
    taps.iter_mut().for_each(|tap| *tap /= sum);
    taps.into_boxed_slice()
}

/// The LPC polynomial `[1, a1, …, a_order]` of `frame` (so that `e[n] = Σ a_k x[n−k]` is the residual), by the
/// autocorrelation method and Levinson–Durbin recursion; `None` for a frame that cannot be modelled (no energy, or
/// numerically unstable). Levinson–Durbin is written out: it is a dozen lines and the textbook form (the
/// autocorrelation method guarantees all roots inside the unit circle). Public so that the integration tests
/// measure formants with the very analysis the transform uses (`tests/common`).
pub fn lpc_coefficients(frame: &[f64], order: usize) -> Option<Vec<f64>> {
    let mut autocorrelation: Vec<f64> =
        (0..=order).map(|lag| dot(&frame[..frame.len().saturating_sub(lag)], &frame[lag.min(frame.len())..])).collect();
    autocorrelation[0] *= 1.0 + WHITE_NOISE_CORRECTION;
    let mut error = autocorrelation[0];
    if error.is_nan() || error <= 0.0 || error.is_infinite() {
        return None;
    }
    let mut coefficients = vec![0.0; order + 1];
    coefficients[0] = 1.0;
    let mut previous = coefficients.clone();
    for i in 1..=order {
        let accumulated: f64 = (0..i).map(|j| coefficients[j] * autocorrelation[i - j]).sum();
        let reflection = -accumulated / error;
        // Also refuses NaN.
        if reflection.is_nan() || reflection.abs() >= 1.0 {
            return None;
        }
        previous.copy_from_slice(&coefficients);
        for j in 1..i {
            coefficients[j] = previous[j] + reflection * previous[i - j];
        }
        coefficients[i] = reflection;
        error *= 1.0 - reflection * reflection;
    }
    coefficients.iter().all(|c| c.is_finite()).then_some(coefficients)
}

/// The roots of `z^p + a1 z^(p−1) + … + a_p` for `polynomial = [1, a1, …, a_p]` with p = [`LPC_ORDER`]: the
/// eigenvalues of its (balanced) companion matrix, by nalgebra's real Schur decomposition, as numpy's `roots`
/// does. `None` if the decomposition does not converge.
pub(crate) fn polynomial_roots(polynomial: &[f64]) -> Option<Vec<Complex<f64>>> {
    if polynomial.len() != LPC_ORDER + 1 {
        return None;
    }
    let mut companion = SMatrix::<f64, LPC_ORDER, LPC_ORDER>::zeros();
    for (column, &coefficient) in polynomial[1..].iter().enumerate() {
        companion[(0, column)] = -coefficient;
    }
    for row in 1..LPC_ORDER {
        companion[(row, row - 1)] = 1.0;
    }
    nalgebra::linalg::balancing::balance_parlett_reinsch(&mut companion);
    let schur = Schur::try_new(companion, f64::EPSILON, MAX_SCHUR_ITERATIONS)?;
    let roots: Vec<Complex<f64>> = schur.complex_eigenvalues().iter().copied().collect();
    roots.iter().all(|root| root.re.is_finite() && root.im.is_finite()).then_some(roots)
}

/// The McAdams warp: the polynomial `[1, b1, …]` whose roots are `roots` with each complex pair's angle φ moved to
/// φ^`mcadams` (within 0..π) and every radius at most [`MAX_POLE_RADIUS`]. Built from real first- and second-order
/// factors, so its coefficients are real by construction.
fn warped_polynomial(roots: &[Complex<f64>], mcadams: f64) -> Vec<f64> {
    let mut polynomial = Vec::with_capacity(roots.len() + 1);
    polynomial.push(1.0);
    for root in roots {
        if root.im < -REAL_POLE_TOLERANCE {
            // The conjugate of a root with positive imaginary part, which stands for the pair.
            continue;
        }
        if root.im <= REAL_POLE_TOLERANCE {
            let real = root.re.clamp(-MAX_POLE_RADIUS, MAX_POLE_RADIUS);
            multiply_in_place(&mut polynomial, &[1.0, -real]);
        } else {
            let radius = root.norm().min(MAX_POLE_RADIUS);
            let angle = root.arg().powf(mcadams).clamp(0.0, PI);
            multiply_in_place(&mut polynomial, &[1.0, -2.0 * radius * angle.cos(), radius * radius]);
        }
    }
    polynomial
}

fn multiply_in_place(polynomial: &mut Vec<f64>, factor: &[f64]) {
    let original = polynomial.clone();
    polynomial.resize(original.len() + factor.len() - 1, 0.0);
    polynomial.fill(0.0);
    for (i, &a) in original.iter().enumerate() {
        for (j, &b) in factor.iter().enumerate() {
            polynomial[i + j] += a * b;
        }
    }
}

/// Signals and measurements shared by this module's tests, [`crate::mask`]'s and the integration tests.
#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests {
    use super::test_support::{VOWEL_A, pitch_hz, rms, strongest_formants, vowel};
    use super::*;

    fn transform_all(transform: &mut VoiceTransform, input: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        transform.process(input, &mut out);
        out
    }

    /// Output sample i lines up with input sample i (give or take the pitch change's content lag, a few ms);
    /// these are the two streams' common span.
    fn aligned<'a>(input: &'a [f32], output: &'a [f32]) -> (&'a [f32], &'a [f32]) {
        (&input[..output.len()], output)
    }

    /// The output's signal-to-error ratio against the input, in dB, at the content lag (0 to 20 ms, in 48 kHz
    /// samples) that gives the best; and that lag.
    fn best_aligned_snr_db(input: &[f32], output: &[f32]) -> (f64, usize) {
        (0..=960)
            .map(|lag| {
                let output = &output[lag..];
                let input = &input[..output.len()];
                let error: Vec<f32> = input.iter().zip(output).map(|(a, b)| a - b).collect();
                (20.0 * (rms(input) / rms(&error)).log10(), lag)
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .expect("lags")
    }

    #[test]
    fn lpc_roots_of_known_resonators_are_found() {
        // (1 − 2r cos θ z⁻¹ + r² z⁻²) for two known pole pairs, padded with roots at zero.
        let mut polynomial = vec![1.0];
        multiply_in_place(&mut polynomial, &[1.0, -2.0 * 0.9 * 0.5f64.cos(), 0.81]);
        multiply_in_place(&mut polynomial, &[1.0, -2.0 * 0.95 * 2.0f64.cos(), 0.9025]);
        polynomial.resize(LPC_ORDER + 1, 0.0);
        let roots = polynomial_roots(&polynomial).expect("roots");
        let mut upper: Vec<(f64, f64)> = roots
            .iter()
            .filter(|root| root.im > 1e-6 && root.norm() > 0.5)
            .map(|root| (root.norm(), root.arg()))
            .collect();
        upper.sort_by(|a, b| a.1.total_cmp(&b.1));
        assert_eq!(upper.len(), 2, "{roots:?}");
        assert!((upper[0].0 - 0.9).abs() < 1e-6 && (upper[0].1 - 0.5).abs() < 1e-6, "{upper:?}");
        assert!((upper[1].0 - 0.95).abs() < 1e-6 && (upper[1].1 - 2.0).abs() < 1e-6, "{upper:?}");
    }

    #[test]
    fn warp_moves_angles_to_their_power_and_keeps_real_poles() {
        let roots = [
            Complex::new(0.9 * 0.5f64.cos(), 0.9 * 0.5f64.sin()),
            Complex::new(0.9 * 0.5f64.cos(), -0.9 * 0.5f64.sin()),
            Complex::new(0.3, 0.0),
        ];
        let warped = warped_polynomial(&roots, 0.8);
        let mut expected = vec![1.0];
        multiply_in_place(&mut expected, &[1.0, -0.3]);
        multiply_in_place(&mut expected, &[1.0, -2.0 * 0.9 * 0.5f64.powf(0.8).cos(), 0.81]);
        assert_eq!(warped.len(), expected.len());
        for (a, b) in warped.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-12, "{warped:?} vs {expected:?}");
        }
        // A pole on or outside the unit circle is pulled inside.
        let unstable = [Complex::new(0.0, 1.2), Complex::new(0.0, -1.2), Complex::new(-1.5, 0.0)];
        let pulled = warped_polynomial(&unstable, 0.8);
        let mut padded = pulled.clone();
        padded.resize(LPC_ORDER + 1, 0.0);
        let roots = polynomial_roots(&padded).expect("roots");
        assert!(roots.iter().all(|root| root.norm() <= MAX_POLE_RADIUS + 1e-9), "{roots:?}");
    }

    #[test]
    fn the_interpolator_returns_samples_at_whole_positions_and_follows_a_slow_sine_between() {
        let signal: Vec<f64> = (0..64).map(|n| (0.2 * n as f64).sin()).collect();
        let identity = interpolation_table(1.0);
        for n in 10..50 {
            assert!((interpolate(&identity, &signal, n as f64) - signal[n]).abs() < 1e-12, "sample {n}");
            let between = n as f64 + 0.37;
            assert!((interpolate(&identity, &signal, between) - (0.2 * between).sin()).abs() < 1e-3, "at {between}");
        }
        // Reading faster low-passes, but leaves a slow sine (0.03 of the sample rate) alone.
        let faster = interpolation_table(1.25);
        let between = 30.61;
        assert!((interpolate(&faster, &signal, between) - (0.2 * between).sin()).abs() < 1e-2);
    }

    #[test]
    fn output_count_is_input_count_minus_the_delay_at_every_point() {
        let input = vowel(120.0, &VOWEL_A, 0.2);
        for mut transform in [VoiceTransform::from_seed(5), VoiceTransform::with_pitch(0.8, 0.8).expect("valid")] {
            let mut out = Vec::new();
            for (index, &sample) in input.iter().enumerate() {
                transform.process(&[sample], &mut out);
                assert_eq!(out.len(), (index + 1).saturating_sub(VoiceTransform::DELAY_SAMPLES), "after {index}");
            }
        }
        assert_eq!(VoiceTransform::DELAY_SAMPLES, 1152);
    }

    #[test]
    fn chunking_does_not_change_the_output() {
        let input = vowel(120.0, &VOWEL_A, 0.3);
        let seeded = VoiceTransform::from_seed(7).pitch_factor();
        // A seeded transform and one of each direction of pitch change.
        for (mcadams, pitch) in [(None, seeded), (Some(0.7), 0.85), (Some(0.8), 1.2)] {
            let make = || match mcadams {
                None => VoiceTransform::from_seed(7),
                Some(mcadams) => VoiceTransform::with_pitch(mcadams, pitch).expect("valid"),
            };
            let whole = transform_all(&mut make(), &input);
            assert_eq!(whole.len(), input.len() - VoiceTransform::DELAY_SAMPLES);
            for chunk in [1, 7, 960] {
                let mut transform = make();
                let mut out = Vec::new();
                for piece in input.chunks(chunk) {
                    transform.process(piece, &mut out);
                }
                assert!(out == whole, "β {pitch}: chunks of {chunk} differ from the whole buffer");
            }
        }
    }

    #[test]
    fn formants_and_pitch_move_and_level_stays() {
        let input = vowel(120.0, &VOWEL_A, 0.6);
        // Both directions of pitch, the ends of the seeded ranges, with the ends of the seeded coefficients.
        for (mcadams, pitch) in [(0.8, 1.0), (0.8, 1.2), (0.8, 0.85), (0.65, 1.25), (0.85, 0.8), (0.85, 1.12)] {
            let output = transform_all(&mut VoiceTransform::with_pitch(mcadams, pitch).expect("valid"), &input);
            // Skip the first 100 ms (start-up) of both.
            let (input, output) = aligned(&input, &output);
            let (input, output) = (&input[4800..], &output[4800..]);

            let [input_f1, input_f2] = strongest_formants(input);
            assert!((input_f1 - 700.0).abs() < 80.0 && (input_f2 - 1220.0).abs() < 80.0, "{input_f1} {input_f2}");
            let [output_f1, output_f2] = strongest_formants(output);
            // φ^0.8 at 16 kHz moves 700 Hz to about 906 Hz and 1220 Hz to about 1414 Hz: each up by about
            // 200 Hz; φ^0.85 by about 150 Hz. Require at least 100 Hz, whatever the pitch does.
            let case = format!("α {mcadams}, β {pitch}");
            assert!(output_f1 - input_f1 > 100.0, "{case}: F1 {input_f1} → {output_f1}");
            assert!(output_f2 - input_f2 > 100.0, "{case}: F2 {input_f2} → {output_f2}");

            // The pitch is the input's times β, within 3 %.
            let (input_pitch, output_pitch) = (pitch_hz(input), pitch_hz(output));
            assert!((input_pitch - 120.0).abs() < 1.0, "input pitch {input_pitch}");
            let expected = input_pitch * pitch;
            assert!((output_pitch / expected - 1.0).abs() < 0.03, "{case}: pitch {output_pitch} Hz, not {expected}");

            let level_db = 20.0 * (rms(output) / rms(input)).log10();
            assert!(level_db.abs() < 6.0, "{case}: level changed by {level_db:.1} dB");
        }
    }

    #[test]
    fn coefficient_and_pitch_factor_one_leave_speech_band_signals_unchanged() {
        // α = 1 and β = 1 are the identity: what is left is the resampling (flat below 6.5 kHz; the vowel has
        // little energy above), the overlap-add and the grain's fixed lag (8 samples at 16 kHz).
        let input = vowel(120.0, &VOWEL_A, 0.4);
        let output = transform_all(&mut VoiceTransform::with_parameters(1.0, 1.0), &input);
        let (input, output) = aligned(&input, &output);
        let (input, output) = (&input[4800..], &output[4800..]);
        let (snr_db, lag) = best_aligned_snr_db(input, output);
        assert!(snr_db > 25.0, "identity changed the signal: SNR {snr_db:.1} dB at lag {lag}");
        assert_eq!(lag, DECIMATION * INTERPOLATION_HALF, "the identity's content lag");
        let output = &output[lag..];
        let [input_f1, input_f2] = strongest_formants(input);
        let [output_f1, output_f2] = strongest_formants(output);
        assert!((output_f1 - input_f1).abs() < 30.0 && (output_f2 - input_f2).abs() < 30.0);
        assert!((pitch_hz(output) - pitch_hz(input)).abs() < 0.5);
        // Not an artefact of the measure: a real pitch change scores far lower.
        let shifted = transform_all(&mut VoiceTransform::with_parameters(1.0, 1.12), &vowel(120.0, &VOWEL_A, 0.4));
        let (shifted_snr_db, _) = best_aligned_snr_db(input, &shifted[4800..]);
        assert!(shifted_snr_db < 10.0, "β 1.12 scored {shifted_snr_db:.1} dB against the input");
    }

    #[test]
    fn silence_gives_silence_and_nan_gives_no_nan() {
        let mut transform = VoiceTransform::from_seed(1);
        let silence = transform_all(&mut transform, &[0.0; 4800]);
        assert_eq!(silence.len(), 4800 - VoiceTransform::DELAY_SAMPLES);
        assert!(silence.iter().all(|&v| v == 0.0));

        let mut input = vowel(120.0, &VOWEL_A, 0.2);
        for (index, sample) in input.iter_mut().enumerate() {
            match index % 50 {
                0 => *sample = f32::NAN,
                1 => *sample = f32::INFINITY,
                2 => *sample = f32::NEG_INFINITY,
                3 => *sample = 1e30,
                _ => {}
            }
        }
        for seed in [2, 4] {
            let mut transform = VoiceTransform::from_seed(seed);
            let output = transform_all(&mut transform, &input);
            assert!(output.iter().all(|v| v.is_finite() && v.abs() <= 1.0));
            assert!(rms(&output) > 0.01, "the voiced input should not be silenced");
        }
        let all_nan = transform_all(&mut VoiceTransform::from_seed(3), &[f32::NAN; 4800]);
        assert!(all_nan.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn the_widest_pitch_factors_stay_within_the_history() {
        // The constant check on SOURCE_LEN, exercised: the fastest and slowest reading, through loud noise-like
        // input that moves the similarity search all over its window.
        let mut state = 1u64;
        let noise: Vec<f32> = (0..24_000)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        for (mcadams, pitch) in [(0.5, *PITCH_RANGE.start()), (0.95, *PITCH_RANGE.end())] {
            for input in [noise.clone(), vowel(70.0, &VOWEL_A, 0.5)] {
                let output = transform_all(&mut VoiceTransform::with_pitch(mcadams, pitch).expect("valid"), &input);
                assert!(output.iter().all(|v| v.is_finite()) && rms(&output) > 0.01, "β {pitch}");
            }
        }
    }

    #[test]
    fn seeds_give_independent_coefficients_and_pitch_factors_within_range() {
        let transforms: Vec<VoiceTransform> = (0..1000).map(VoiceTransform::from_seed).collect();
        let coefficients: Vec<f64> = transforms.iter().map(VoiceTransform::mcadams).collect();
        let factors: Vec<f64> = transforms.iter().map(VoiceTransform::pitch_factor).collect();
        assert!(coefficients.iter().all(|c| SEEDED_RANGE.contains(c)));
        assert!(factors.iter().all(|f| SEEDED_PITCH_DOWN.contains(f) || SEEDED_PITCH_UP.contains(f)), "{factors:?}");
        assert_ne!(coefficients[0], coefficients[1]);
        let seeded = (VoiceTransform::from_seed(42), VoiceTransform::from_seed(42));
        assert_eq!((seeded.0.mcadams(), seeded.0.pitch_factor()), (seeded.1.mcadams(), seeded.1.pitch_factor()));
        let spread = |values: &[f64]| {
            values.iter().fold(f64::MAX, |a, &b| a.min(b))..values.iter().fold(f64::MIN, |a, &b| a.max(b))
        };
        let range = spread(&coefficients);
        assert!(range.end - range.start > 0.15, "{range:?}");
        // Both directions, about equally often, each spread over its range.
        let (down, up): (Vec<f64>, Vec<f64>) = factors.iter().partition(|&&f| f < 1.0);
        assert!(down.len().abs_diff(500) < 60, "{} of 1000 lowered", down.len());
        assert!(spread(&down).start < 0.81 && spread(&down).end > 0.89, "{:?}", spread(&down));
        assert!(spread(&up).start < 1.13 && spread(&up).end > 1.24, "{:?}", spread(&up));
        // Independent draws: the coefficient and the log factor are uncorrelated (|r| < 0.1 over 1000 seeds).
        let logs: Vec<f64> = factors.iter().map(|f| f.ln()).collect();
        let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
        let (mean_c, mean_l) = (mean(&coefficients), mean(&logs));
        let covariance: f64 = coefficients.iter().zip(&logs).map(|(c, l)| (c - mean_c) * (l - mean_l)).sum();
        let deviation = |values: &[f64], mean: f64| values.iter().map(|v| (v - mean).powi(2)).sum::<f64>().sqrt();
        let correlation = covariance / (deviation(&coefficients, mean_c) * deviation(&logs, mean_l));
        assert!(correlation.abs() < 0.1, "coefficient and pitch factor correlate: r = {correlation:.3}");
    }

    #[test]
    fn parameters_outside_their_ranges_are_refused_and_debug_shows_only_the_coefficients() {
        assert!(VoiceTransform::new(0.49).is_err());
        assert!(VoiceTransform::new(0.96).is_err());
        assert!(VoiceTransform::new(f64::NAN).is_err());
        assert_eq!(VoiceTransform::with_pitch(0.8, 0.74).err(), Some(VoiceError::PitchFactorOutOfRange(0.74)));
        assert!(VoiceTransform::with_pitch(0.8, 1.36).is_err());
        assert!(VoiceTransform::with_pitch(0.8, f64::NAN).is_err());
        assert_eq!(VoiceTransform::new(0.8).expect("valid").pitch_factor(), 1.0);
        let mut transform = VoiceTransform::with_pitch(0.8, 1.2).expect("valid");
        let _ = transform_all(&mut transform, &vowel(120.0, &VOWEL_A, 0.05));
        assert_eq!(format!("{transform:?}"), "VoiceTransform { mcadams: 0.8, pitch_factor: 1.2, .. }");
    }
}
