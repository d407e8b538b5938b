//! A synthetic vowel and the measures the voice mask's tests take of it, shared by the unit tests of
//! [`crate::voice`] and [`crate::mask`] and by the integration tests (which include this file by path from
//! `tests/common/mod.rs`, and provide the `super` items it uses from the crate's public API), so that every test
//! of the voice mask measures it the same way.

use std::f64::consts::PI;

use nalgebra::Complex;

use super::{ANALYSIS_RATE, SAMPLE_RATE, lpc_coefficients};

const RATE: f64 = SAMPLE_RATE as f64;

/// An open vowel /a/: formants (frequency, bandwidth) in Hz.
pub(crate) const VOWEL_A: [(f64, f64); 4] = [(700.0, 80.0), (1220.0, 90.0), (2600.0, 120.0), (3500.0, 200.0)];

/// A two-pole resonator's coefficients at 48 kHz for a formant at `frequency` with `bandwidth`, in Hz.
fn resonator(frequency: f64, bandwidth: f64) -> [f64; 2] {
    let radius = (-PI * bandwidth / RATE).exp();
    [2.0 * radius * (2.0 * PI * frequency / RATE).cos(), -radius * radius]
}

/// A synthetic voiced vowel at 48 kHz: a glottal pulse train at `pitch` Hz (each pulse a 1 ms raised cosine,
/// which gives the source a falling spectrum) through formant resonators at `formants`, scaled to peak 0.5.
pub(crate) fn vowel(pitch: f64, formants: &[(f64, f64)], seconds: f64) -> Vec<f32> {
    let length = (seconds * RATE) as usize;
    let period = RATE / pitch;
    let pulse_length = 48.0;
    let mut signal: Vec<f64> = (0..length)
        .map(|n| {
            let phase = (n as f64) % period;
            if phase < pulse_length { 1.0 - (2.0 * PI * phase / pulse_length).cos() } else { 0.0 }
        })
        .collect();
    for &(frequency, bandwidth) in formants {
        let [a1, a2] = resonator(frequency, bandwidth);
        let (mut y1, mut y2) = (0.0, 0.0);
        for sample in signal.iter_mut() {
            let y = *sample + a1 * y1 + a2 * y2;
            y2 = y1;
            y1 = y;
            *sample = y;
        }
    }
    let mean = signal.iter().sum::<f64>() / length as f64;
    let peak = signal.iter().map(|v| (v - mean).abs()).fold(0.0, f64::max);
    signal.iter().map(|v| (0.5 * (v - mean) / peak) as f32).collect()
}

pub(crate) fn rms(signal: &[f32]) -> f64 {
    (signal.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / signal.len() as f64).sqrt()
}

/// The two strongest formants of a 48 kHz signal, in Hz, lower first: the two highest peaks of its spectral
/// envelope, the LPC envelope (order 20 at 16 kHz, every third sample; the signals measured have little above
/// 8 kHz) averaged in dB over 32 ms Hann frames with 50 % overlap, on a 5 Hz grid from 100 Hz to 4 kHz.
pub(crate) fn strongest_formants(signal: &[f32]) -> [f64; 2] {
    let downsampled: Vec<f64> = signal.iter().step_by(3).map(|&v| f64::from(v)).collect();
    let frame = 512;
    let window: Vec<f64> = (0..frame).map(|n| 0.5 - 0.5 * (2.0 * PI * n as f64 / frame as f64).cos()).collect();
    let grid: Vec<f64> = (0..780).map(|i| 100.0 + 5.0 * i as f64).collect();
    let mut envelope_db = vec![0.0; grid.len()];
    for start in (0..downsampled.len().saturating_sub(frame)).step_by(frame / 2) {
        let windowed: Vec<f64> = downsampled[start..start + frame].iter().zip(&window).map(|(a, b)| a * b).collect();
        let Some(predictor) = lpc_coefficients(&windowed, 20) else { continue };
        for (level, &frequency) in envelope_db.iter_mut().zip(&grid) {
            let omega = 2.0 * PI * frequency / f64::from(ANALYSIS_RATE);
            let response: Complex<f64> =
                predictor.iter().enumerate().map(|(k, &a)| Complex::from_polar(a, -omega * k as f64)).sum();
            *level -= 10.0 * response.norm_sqr().log10();
        }
    }
    let mut peaks: Vec<(f64, f64)> = (1..grid.len() - 1)
        .filter(|&i| envelope_db[i] > envelope_db[i - 1] && envelope_db[i] >= envelope_db[i + 1])
        .map(|i| (grid[i], envelope_db[i]))
        .collect();
    assert!(peaks.len() >= 2, "fewer than two envelope peaks: {peaks:?}");
    peaks.sort_by(|a, b| b.1.total_cmp(&a.1));
    let (first, second) = (peaks[0].0, peaks[1].0);
    [first.min(second), first.max(second)]
}

/// The fundamental frequency of a voiced 48 kHz signal, in Hz, by autocorrelation over at most its first 0.5 s:
/// the shortest lag between 2.5 ms and 16.7 ms (400 to 60 Hz) at which the normalised autocorrelation has a local
/// peak within 10 % of its highest there (so that a period's multiple, nearly as high on a periodic signal, is
/// not taken for the period), refined by a parabola through the peak and its neighbours.
pub(crate) fn pitch_hz(signal: &[f32]) -> f64 {
    let signal: Vec<f64> = signal.iter().take(24_000).map(|&v| f64::from(v)).collect();
    let (shortest, longest) = ((RATE / 400.0) as usize, (RATE / 60.0) as usize);
    assert!(signal.len() > 2 * longest, "too short to measure pitch: {} samples", signal.len());
    let correlation: Vec<f64> = (shortest - 1..=longest + 1)
        .map(|lag| {
            let (early, late) = (&signal[..signal.len() - lag], &signal[lag..]);
            let product: f64 = early.iter().zip(late).map(|(a, b)| a * b).sum();
            let energy = |part: &[f64]| part.iter().map(|v| v * v).sum::<f64>();
            product / (energy(early) * energy(late)).sqrt().max(f64::MIN_POSITIVE)
        })
        .collect();
    let highest = correlation.iter().copied().fold(f64::MIN, f64::max);
    let peak = (1..correlation.len() - 1)
        .find(|&i| {
            correlation[i] >= 0.9 * highest
                && correlation[i] >= correlation[i - 1]
                && correlation[i] >= correlation[i + 1]
        })
        .expect("a peak in the lag range");
    let (before, at, after) = (correlation[peak - 1], correlation[peak], correlation[peak + 1]);
    let curvature = before - 2.0 * at + after;
    let offset = if curvature < 0.0 { 0.5 * (before - after) / curvature } else { 0.0 };
    let lag = (shortest - 1 + peak) as f64 + offset;
    RATE / lag
}
