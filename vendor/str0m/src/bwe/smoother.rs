use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::rtp_::Bitrate;

/// Time window for averaging estimate changes.
const ESTIMATE_WINDOW: Duration = Duration::from_secs(3);

type TimeBitrate = (Instant, Bitrate);

const TOLERANCE: f64 = 0.05;

/// tongbu patch: an estimate this many times what was last emitted is emitted at once, the
/// window restarted from it. The window averages distinct estimates, not time: after a fall,
/// its many low values held the emitted estimate down for the whole 3 s while the estimate
/// itself was back (on a 1 Mbit/s village link, 282 kbit/s emitted for 2.5 s while the
/// estimate was 586 kbit/s, and the classroom stayed on its lowest layer). Rises this steep
/// come from a probe that found room; noise is within ±30 %.
const JUMP: f64 = 1.5;

/// Smooths BWE estimates by averaging over a time window.
pub struct EstimateSmoother {
    estimates: VecDeque<TimeBitrate>,
    maybe_emit: bool,
    emitted: Option<Bitrate>,
}

impl EstimateSmoother {
    pub fn new() -> Self {
        Self {
            estimates: VecDeque::new(),
            maybe_emit: false,
            emitted: None,
        }
    }

    /// Record a new estimate and update the smoothed average.
    pub fn record(&mut self, now: Instant, estimate: Bitrate) {
        // Did value change from previous?
        let do_update = self.estimates.back().map(|b| b.1) != Some(estimate);

        if do_update
            && self
                .emitted
                .is_some_and(|emitted| estimate.as_f64() >= emitted.as_f64() * JUMP)
        {
            self.estimates.clear();
            self.estimates.push_back((now, estimate));
            self.maybe_emit = true;
            return;
        }

        if do_update {
            self.maybe_emit = true;
            self.estimates.push_back((now, estimate));
        }

        // Remove entries older than the window.
        while let Some((time, _)) = self.estimates.front() {
            if now.duration_since(*time) > ESTIMATE_WINDOW {
                // Keep last entry
                if self.estimates.len() == 1 {
                    break;
                }

                self.maybe_emit = true;
                self.estimates.pop_front();
            } else {
                break;
            }
        }
    }

    /// Poll for an estimate to emit. Returns Some only when there's a new value to emit.
    pub fn poll(&mut self) -> Option<Bitrate> {
        if !self.maybe_emit {
            return None;
        }

        if self.estimates.is_empty() {
            return None;
        }

        let total: f64 = self.estimates.iter().map(|b| b.1.as_f64()).sum();
        let avg = total / self.estimates.len() as f64;
        let rate: Bitrate = avg.into();

        // This forces emitting if we have the first ever value, or a last
        // where the rest of the window is gone (estimates stop coming).
        let force = self.estimates.len() == 1 && self.emitted != Some(rate);

        // Emit if we deviate enough from previously emitted.
        let deviate = if let Some(emitted) = self.emitted {
            !in_tolerance(emitted, rate)
        } else {
            true
        };

        self.maybe_emit = false;

        // Are we not to emit?
        if !force && !deviate {
            return None;
        }

        self.emitted = Some(rate);
        Some(rate)
    }
}

fn in_tolerance(b1: Bitrate, b2: Bitrate) -> bool {
    let min = b1 * (1.0 - TOLERANCE);
    let max = b1 * (1.0 + TOLERANCE);
    b2 > min && b2 < max
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_steep_rise_is_emitted_at_once_and_noise_is_averaged() {
        // tongbu patch. A fall to 270 kbit/s through many small steps, then a probe finds
        // 590 kbit/s: emitted at once, not after the low values leave the 3 s window.
        let start = Instant::now();
        let mut smoother = EstimateSmoother::new();
        smoother.record(start, Bitrate::kbps(600));
        assert_eq!(smoother.poll(), Some(Bitrate::kbps(600)));
        let mut now = start;
        for (i, kbps) in (270..=300).rev().enumerate() {
            now = start + Duration::from_millis(25 * (i as u64 + 1));
            smoother.record(now, Bitrate::kbps(kbps));
        }
        let low = smoother.poll().expect("the fall is emitted");
        assert!(low < Bitrate::kbps(300), "{low}");
        smoother.record(now + Duration::from_millis(500), Bitrate::kbps(590));
        assert_eq!(smoother.poll(), Some(Bitrate::kbps(590)));
        // A rise within the noise is averaged with what came before.
        smoother.record(now + Duration::from_millis(600), Bitrate::kbps(800));
        let averaged = smoother.poll().expect("a rise past the tolerance");
        assert!(averaged < Bitrate::kbps(800), "{averaged}");
    }
}
