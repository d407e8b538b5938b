//! Voice anonymisation for a protected witness: McAdams-coefficient warping of the spectral envelope, as in the
//! VoicePrivacy Challenge's CPU-only baseline (Patino et al. 2021, "Speaker anonymisation using the McAdams
//! coefficient"). Pure Rust, no FFI: [`crate::mask::VoiceMasker`] wraps it between an Opus decoder and encoder.
//!
//! # Why this method
//!
//! A witness's voice must not identify them to the non-privileged participants of a hearing, yet what they say
//! must stay intelligible. McAdams warping keeps the excitation (the LPC residual: pitch, voicing, timing) and moves
//! the vocal tract's resonances (formants), which carry much of a speaker's identity. It needs no model, no GPU and
//! no training data, costs little CPU per feed and adds one frame of delay, which suits a live hearing.
//!
//! # The transform
//!
//! The signal is cut into 20 ms frames with 50 % overlap. For each frame: LPC analysis of order [`LPC_ORDER`]
//! (autocorrelation and Levinson–Durbin), the residual by inverse filtering, the roots of the LPC polynomial. Each
//! complex pole pair at angle φ (radians, 0..π) is moved to angle φ^α, α being the McAdams coefficient; real
//! poles are kept. The moved poles make a new all-pole filter, which resynthesises the frame from the residual.
//! Since φ^α > φ for φ < 1 rad and φ^α < φ above it (α < 1), low formants move up and high ones down; the
//! mapping is monotonic, so the order of a vowel's formants is kept.
//!
//! Differences from the baseline's script, each for streaming or robustness:
//!
//! - Analysis and synthesis windows are both the square root of a periodic Hann window, so that their product
//!   (a Hann window) overlap-adds to exactly one at 50 % overlap; the baseline applies a Hann window twice, which
//!   ripples the level by up to 6 dB within each frame.
//! - The baseline normalises the whole file to full scale at the end, which a stream cannot do. Instead each
//!   resynthesised frame is scaled to the energy of its analysis frame, so the output level follows the input's.
//! - Poles are kept strictly inside the unit circle (radius at most [`MAX_POLE_RADIUS`]), and a tiny white-noise
//!   correction on the autocorrelation keeps Levinson–Durbin well conditioned on pure tones.
//! - Non-finite input samples are taken as silence and every sample is clamped to [-1, 1]. A frame whose roots
//!   cannot be found is output as silence, never unwarped: the mask fails closed.
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
//! come out in all, and output sample `i` is the transform of input sample `i`. The delay is the analysis frame
//! (20 ms) plus the two resampling filters' half-lengths (2 ms): 24 ms in all. The work is triggered by sample
//! counts only, so the output does not depend on how the input was split into chunks.

use std::collections::VecDeque;
use std::f64::consts::PI;

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
pub const MCADAMS_RANGE: std::ops::RangeInclusive<f64> = 0.5..=0.95;

/// The range [`VoiceTransform::from_seed`] draws from, uniformly.
///
/// The VoicePrivacy baseline uses 0.8 for everyone. A coefficient drawn per hearing means an attacker who knows
/// the method still does not know the warp to undo. The upper end, 0.85, still moves F1 of an open vowel (700 Hz
/// at 16 kHz) by about 150 Hz (20 %), beyond the spread between speakers of the same sex; towards 0.95 the voice
/// is barely changed. The lower end, 0.65, moves the same F1 to about 1100 Hz, into the F2 range of back vowels:
/// further down, vowels become hard to tell apart and the voice sounds strained, costing intelligibility.
pub const SEEDED_RANGE: std::ops::Range<f64> = 0.65..0.85;

/// Analysis frames with less energy than this (sum of squared windowed samples) are silence.
const SILENCE_ENERGY: f64 = 1e-12;

/// Relative white-noise correction added to the zero-lag autocorrelation (about −90 dB).
const WHITE_NOISE_CORRECTION: f64 = 1e-9;

/// Poles with an imaginary part no larger than this are real.
const REAL_POLE_TOLERANCE: f64 = 1e-9;

/// The most QR iterations allowed to find a frame's roots.
const MAX_SCHUR_ITERATIONS: usize = 10_000;

/// The most a resynthesised frame is amplified to match its input's energy.
const MAX_FRAME_GAIN: f64 = 100.0;

/// Why a voice transform could not be made.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum VoiceError {
    #[error("McAdams coefficient {0} is outside [0.5, 0.95]")]
    CoefficientOutOfRange(f64),
}

/// McAdams voice anonymisation of a mono 48 kHz stream; see the module documentation.
pub struct VoiceTransform {
    mcadams: f64,
    /// The resampling low-pass filter, symmetric, unity gain at DC.
    resampling_filter: Box<[f64]>,
    /// The sqrt-Hann window, applied at analysis and at synthesis.
    window: Box<[f64]>,
    /// The last [`RESAMPLING_TAPS`] input samples, stored twice over (at `i` and `i + RESAMPLING_TAPS`) so that
    /// the newest window is always one contiguous slice.
    input_history: Box<[f64]>,
    input_history_position: usize,
    /// Input samples taken so far.
    input_count: u64,
    /// 16 kHz samples of the frame being gathered (from its start, at most [`FRAME_LEN`]).
    analysis_frame: Vec<f64>,
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
    resynthesised: Vec<f64>,
}

/// Taps of the interpolator's history: the 16 kHz samples one 48 kHz output sample depends on.
const SYNTHESIS_HISTORY: usize = RESAMPLING_TAPS.div_ceil(DECIMATION);

impl std::fmt::Debug for VoiceTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the coefficient: the buffers hold the witness's voice.
        f.debug_struct("VoiceTransform").field("mcadams", &self.mcadams).finish_non_exhaustive()
    }
}

impl VoiceTransform {
    /// Output sample `i` comes out once input sample `i + DELAY_SAMPLES` has gone in: 1,152 samples, 24 ms at
    /// 48 kHz (one 20 ms analysis frame and the two resampling filters' delays).
    pub const DELAY_SAMPLES: usize = DECIMATION * FRAME_LEN + 2 * RESAMPLING_HALF;

    /// A transform with McAdams coefficient `mcadams` (α), in [0.5, 0.95].
    pub fn new(mcadams: f64) -> Result<Self, VoiceError> {
        if !MCADAMS_RANGE.contains(&mcadams) {
            return Err(VoiceError::CoefficientOutOfRange(mcadams));
        }
        Ok(Self::with_coefficient(mcadams))
    }

    /// A transform with a coefficient for one hearing, drawn uniformly from [`SEEDED_RANGE`] by `seed`: the same
    /// seed always gives the same coefficient.
    pub fn from_seed(seed: u64) -> Self {
        // One SplitMix64 output (Steele, Lea and Flood 2014): a single well-mixed draw needs no RNG crate.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // The top 53 bits as a fraction in [0, 1).
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        Self::with_coefficient(SEEDED_RANGE.start + unit * (SEEDED_RANGE.end - SEEDED_RANGE.start))
    }

    /// Any coefficient, unchecked (tests use 1.0, the identity).
    fn with_coefficient(mcadams: f64) -> Self {
        VoiceTransform {
            mcadams,
            resampling_filter: resampling_filter(),
            window: sqrt_hann_window(),
            input_history: vec![0.0; 2 * RESAMPLING_TAPS].into_boxed_slice(),
            input_history_position: 0,
            input_count: 0,
            analysis_frame: Vec::with_capacity(FRAME_LEN),
            overlap: vec![0.0; FRAME_LEN].into_boxed_slice(),
            synthesis_history: vec![0.0; 2 * SYNTHESIS_HISTORY].into_boxed_slice(),
            synthesis_history_position: 0,
            synthesis_count: 0,
            ready: VecDeque::with_capacity(Self::DELAY_SAMPLES + DECIMATION * HOP),
            emitted: 0,
            scratch: FrameScratch {
                windowed: vec![0.0; FRAME_LEN],
                residual: vec![0.0; FRAME_LEN],
                resynthesised: vec![0.0; FRAME_LEN],
            },
        }
    }

    /// The McAdams coefficient α.
    pub fn mcadams(&self) -> f64 {
        self.mcadams
    }

    /// Takes mono 48 kHz samples in [-1, 1], in chunks of any size, and appends the transformed samples to `out`:
    /// over the stream, as many as went in minus [`Self::DELAY_SAMPLES`], each aligned with its input sample.
    /// Non-finite samples are taken as silence, others clamped to [-1, 1].
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
        self.analysis_frame.push(sample);
        if self.analysis_frame.len() < FRAME_LEN {
            return;
        }
        self.transform_frame();
        // The first half of the accumulator now has every frame that covers it: hand it on.
        for index in 0..HOP {
            let finished = self.overlap[index];
            self.take_synthesis_sample(finished);
        }
        self.overlap.copy_within(HOP.., 0);
        self.overlap[FRAME_LEN - HOP..].fill(0.0);
        self.analysis_frame.drain(..HOP);
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

    /// Transforms the gathered analysis frame and adds it, windowed, to the overlap-add accumulator.
    fn transform_frame(&mut self) {
        let FrameScratch { windowed, residual, resynthesised } = &mut self.scratch;
        for ((windowed, &sample), &weight) in windowed.iter_mut().zip(&self.analysis_frame).zip(self.window.iter()) {
            *windowed = sample * weight;
        }
        let input_energy: f64 = windowed.iter().map(|v| v * v).sum();
        if input_energy <= SILENCE_ENERGY {
            return;
        }
        let Some(predictor) = lpc_coefficients(windowed, LPC_ORDER) else { return };
        let Some(roots) = polynomial_roots(&predictor) else { return };
        let warped = warped_polynomial(&roots, self.mcadams);
        inverse_filter(&predictor, windowed, residual);
        all_pole_filter(&warped, residual, resynthesised);
        let output_energy: f64 = resynthesised.iter().map(|v| v * v).sum();
        let gain = (input_energy / output_energy).sqrt();
        if !gain.is_finite() {
            return;
        }
        let gain = gain.min(MAX_FRAME_GAIN);
        for ((accumulated, &sample), &weight) in
            self.overlap.iter_mut().zip(resynthesised.iter()).zip(self.window.iter())
        {
            *accumulated += gain * sample * weight;
        }
    }
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

/// `residual[n] = Σ_k predictor[k] · signal[n−k]`, from zero state (an FIR filter).
fn inverse_filter(predictor: &[f64], signal: &[f64], residual: &mut [f64]) {
    for (n, out) in residual.iter_mut().enumerate() {
        *out = predictor.iter().take(n + 1).enumerate().map(|(k, &a)| a * signal[n - k]).sum();
    }
}

/// `output[n] = excitation[n] − Σ_{k≥1} denominator[k] · output[n−k]`, from zero state (an all-pole filter;
/// `denominator[0]` is 1).
fn all_pole_filter(denominator: &[f64], excitation: &[f64], output: &mut [f64]) {
    for n in 0..output.len() {
        let feedback: f64 = denominator.iter().enumerate().skip(1).take(n).map(|(k, &b)| b * output[n - k]).sum();
        output[n] = excitation[n] - feedback;
    }
}

/// Signals and measurements shared by this module's tests, [`crate::mask`]'s and the integration tests.
#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests {
    use super::test_support::{VOWEL_A, rms, strongest_formants, vowel};
    use super::*;

    fn transform_all(transform: &mut VoiceTransform, input: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        transform.process(input, &mut out);
        out
    }

    /// Output sample i lines up with input sample i; these are the two streams' common span.
    fn aligned<'a>(input: &'a [f32], output: &'a [f32]) -> (&'a [f32], &'a [f32]) {
        (&input[..output.len()], output)
    }

    /// The pitch period in 48 kHz samples: the autocorrelation's highest peak between 2.5 ms and 16 ms.
    fn pitch_period(signal: &[f32]) -> usize {
        let signal: Vec<f64> = signal.iter().map(|&v| f64::from(v)).collect();
        (120..768)
            .max_by(|&a, &b| {
                let correlation = |lag: usize| dot(&signal[..signal.len() - lag], &signal[lag..]);
                correlation(a).total_cmp(&correlation(b))
            })
            .expect("a lag range")
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
    fn output_count_is_input_count_minus_the_delay_at_every_point() {
        let input = vowel(120.0, &VOWEL_A, 0.2);
        let mut transform = VoiceTransform::new(0.8).expect("valid");
        let mut out = Vec::new();
        for (index, &sample) in input.iter().enumerate() {
            transform.process(&[sample], &mut out);
            assert_eq!(out.len(), (index + 1).saturating_sub(VoiceTransform::DELAY_SAMPLES), "after {index}");
        }
        assert_eq!(VoiceTransform::DELAY_SAMPLES, 1152);
    }

    #[test]
    fn chunking_does_not_change_the_output() {
        let input = vowel(120.0, &VOWEL_A, 0.3);
        let whole = transform_all(&mut VoiceTransform::from_seed(7), &input);
        assert_eq!(whole.len(), input.len() - VoiceTransform::DELAY_SAMPLES);
        for chunk in [1, 7, 960] {
            let mut transform = VoiceTransform::from_seed(7);
            let mut out = Vec::new();
            for piece in input.chunks(chunk) {
                transform.process(piece, &mut out);
            }
            assert!(out == whole, "chunks of {chunk} differ from the whole buffer");
        }
    }

    #[test]
    fn formants_move_and_pitch_and_level_stay() {
        let input = vowel(120.0, &VOWEL_A, 0.6);
        let output = transform_all(&mut VoiceTransform::new(0.8).expect("valid"), &input);
        // Skip the first 100 ms (start-up) of both.
        let (input, output) = aligned(&input, &output);
        let (input, output) = (&input[4800..], &output[4800..]);

        let [input_f1, input_f2] = strongest_formants(input);
        assert!((input_f1 - 700.0).abs() < 80.0 && (input_f2 - 1220.0).abs() < 80.0, "{input_f1} {input_f2}");
        let [output_f1, output_f2] = strongest_formants(output);
        // φ^0.8 at 16 kHz moves 700 Hz to about 906 Hz and 1220 Hz to about 1414 Hz: each up by about 200 Hz
        // (measured: 725 → 935 and 1190 → 1440). Require at least half of that.
        assert!(output_f1 - input_f1 > 100.0, "F1 {input_f1} → {output_f1}");
        assert!(output_f2 - input_f2 > 100.0, "F2 {input_f2} → {output_f2}");

        // The residual carries the excitation: the pitch period (400 samples at 120 Hz) is kept, within 2 %.
        let period = pitch_period(output);
        assert!(period.abs_diff(400) <= 8, "pitch period {period}");

        let level_db = 20.0 * (rms(output) / rms(input)).log10();
        assert!(level_db.abs() < 6.0, "level changed by {level_db:.1} dB");
    }

    #[test]
    fn coefficient_one_leaves_speech_band_signals_unchanged() {
        // α = 1 is the identity warp: what is left is the resampling (flat below 6.5 kHz) and the overlap-add.
        let input = vowel(120.0, &VOWEL_A, 0.4);
        // Low-pass the input's own content is not needed: the vowel has little energy above 6.5 kHz.
        let output = transform_all(&mut VoiceTransform::with_coefficient(1.0), &input);
        let (input, output) = aligned(&input, &output);
        let (input, output) = (&input[4800..], &output[4800..]);
        let error: Vec<f32> = input.iter().zip(output).map(|(a, b)| a - b).collect();
        let snr_db = 20.0 * (rms(input) / rms(&error)).log10();
        assert!(snr_db > 25.0, "identity warp changed the signal: SNR {snr_db:.1} dB");
        let [input_f1, input_f2] = strongest_formants(input);
        let [output_f1, output_f2] = strongest_formants(output);
        assert!((output_f1 - input_f1).abs() < 30.0 && (output_f2 - input_f2).abs() < 30.0);
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
        let mut transform = VoiceTransform::from_seed(2);
        let output = transform_all(&mut transform, &input);
        assert!(output.iter().all(|v| v.is_finite() && v.abs() <= 1.0));
        assert!(rms(&output) > 0.01, "the voiced input should not be silenced");
        let all_nan = transform_all(&mut VoiceTransform::from_seed(3), &[f32::NAN; 4800]);
        assert!(all_nan.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn seeds_give_different_coefficients_within_range() {
        let coefficients: Vec<f64> = (0..100).map(|seed| VoiceTransform::from_seed(seed).mcadams()).collect();
        assert!(coefficients.iter().all(|c| SEEDED_RANGE.contains(c)));
        assert_ne!(coefficients[0], coefficients[1]);
        assert_eq!(VoiceTransform::from_seed(42).mcadams(), VoiceTransform::from_seed(42).mcadams());
        let spread =
            coefficients.iter().fold(f64::MAX, |a, &b| a.min(b))..coefficients.iter().fold(0.0, |a: f64, &b| a.max(b));
        assert!(spread.end - spread.start > 0.15, "{spread:?}");
    }

    #[test]
    fn coefficients_outside_the_range_are_refused_and_debug_shows_only_the_coefficient() {
        assert!(VoiceTransform::new(0.49).is_err());
        assert!(VoiceTransform::new(0.96).is_err());
        assert!(VoiceTransform::new(f64::NAN).is_err());
        let mut transform = VoiceTransform::new(0.8).expect("valid");
        let _ = transform_all(&mut transform, &vowel(120.0, &VOWEL_A, 0.05));
        assert_eq!(format!("{transform:?}"), "VoiceTransform { mcadams: 0.8, .. }");
    }
}
