//! Delay variation.
//!
//! Independent per-packet jitter reorders packets whenever the variation
//! exceeds the packet spacing, which real access links rarely do. Clamping
//! such jitter to FIFO order would instead raise the mean delay with the packet
//! rate. So the FIFO mode moves the extra delay along a random piecewise-linear
//! path over time whose slope stays within ±[`MAX_SLOPE`]: release times then
//! never run backwards, the mean stays at the configured delay, and every
//! value remains within `[-jitter, +jitter]`.

use std::time::Duration;

use super::rng::Rng;

/// Steepest change of the jitter path, in seconds of delay per second; below
/// 1 so a later packet is never released before an earlier one.
pub const MAX_SLOPE: f64 = 0.5;

/// Source of per-packet delay variation.
#[derive(Debug, Clone)]
pub struct JitterProcess {
    amp: f64,
    reorder: bool,
    rng: Rng,
    seg_start: f64,
    seg_end: f64,
    v0: f64,
    v1: f64,
}

impl JitterProcess {
    pub fn new(jitter: Duration, reorder: bool, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let amp = jitter.as_secs_f64();
        let v0 = rng.uniform(-amp, amp);
        let v1 = rng.uniform(-amp, amp);
        let mut p = Self {
            amp,
            reorder,
            rng,
            seg_start: 0.0,
            seg_end: 0.0,
            v0,
            v1,
        };
        p.seg_end = p.segment_len();
        p
    }

    fn segment_len(&mut self) -> f64 {
        // Values differ by at most 2*amp; a segment of at least 2*amp/MAX_SLOPE
        // keeps the slope within bounds. Up to twice that varies the pace.
        let min = 2.0 * self.amp / MAX_SLOPE;
        self.rng.uniform(min, 2.0 * min)
    }

    /// Extra delay in seconds (may be negative) for a packet leaving the
    /// bottleneck at `at` seconds after start. In FIFO mode `at` must not
    /// decrease between calls (earlier values are treated as the latest one).
    pub fn sample(&mut self, at: f64) -> f64 {
        if self.amp == 0.0 {
            return 0.0;
        }
        if self.reorder {
            return self.rng.uniform(-self.amp, self.amp);
        }
        let max_len = 4.0 * self.amp / MAX_SLOPE;
        if at - self.seg_end > 4.0 * max_len {
            // Long idle gap: nothing in flight, so restart the path at `at`
            // instead of walking through every missed segment.
            self.seg_start = at;
            self.seg_end = at;
        }
        while at >= self.seg_end {
            self.v0 = self.v1;
            self.v1 = self.rng.uniform(-self.amp, self.amp);
            self.seg_start = self.seg_end;
            self.seg_end = self.seg_start + self.segment_len();
        }
        let f = ((at - self.seg_start) / (self.seg_end - self.seg_start)).clamp(0.0, 1.0);
        self.v0 + (self.v1 - self.v0) * f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_path_bounded_monotone_release_and_centered() {
        let amp = 0.010;
        let mut j = JitterProcess::new(Duration::from_millis(10), false, 5);
        let mut last_release = f64::MIN;
        let mut sum = 0.0;
        let mut sq = 0.0;
        let n = 100_000;
        for i in 0..n {
            let at = i as f64 * 0.001; // one packet per ms
            let v = j.sample(at);
            assert!(v.abs() <= amp + 1e-12);
            let release = at + v;
            assert!(release >= last_release, "reordered at packet {i}");
            last_release = release;
            sum += v;
            sq += v * v;
        }
        let mean = sum / n as f64;
        let sd = (sq / n as f64 - mean * mean).sqrt();
        assert!(mean.abs() < 0.1 * amp, "mean {mean}");
        // Linear interpolation between uniform points: sd = amp * sqrt(2/9) ≈ 0.47 amp.
        assert!(sd > 0.35 * amp && sd < 0.6 * amp, "sd {sd}");
    }

    #[test]
    fn reorder_mode_is_independent_uniform() {
        let mut j = JitterProcess::new(Duration::from_millis(10), true, 5);
        let vals: Vec<f64> = (0..50_000).map(|i| j.sample(i as f64 * 0.001)).collect();
        let inversions = vals.windows(2).filter(|w| 0.001 + w[1] < w[0]).count();
        assert!(
            inversions > 1000,
            "independent jitter should reorder: {inversions}"
        );
        assert!(vals.iter().all(|v| v.abs() <= 0.010));
    }

    #[test]
    fn zero_jitter_is_zero() {
        let mut j = JitterProcess::new(Duration::ZERO, false, 5);
        assert_eq!(j.sample(1.0), 0.0);
    }
}
