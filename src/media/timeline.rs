//! RTP timestamp rewriting for one subscriber's video: every simulcast layer has its own
//! timestamp base, so when the forwarded layer changes, the outgoing time continues from the last
//! forwarded frame plus the wall-clock gap instead of jumping to the new layer's base.
//!
//! Sequence numbers and VP8 picture ids are made continuous by `media::rewrite`; this is the
//! timestamp half. Pure: time is passed in.

use std::time::{Duration, Instant};

/// 90 kHz video clock.
const TICKS_PER_SEC: u64 = 90_000;
/// Longest gap the rewritten timestamp advances across a switch (after a pause, say). Up to it
/// the outgoing time keeps pace with the wall clock: a stream that resumed 6 s behind it (an
/// 8 s pause under the former 2 s cap) set Chromium's timestamp extrapolator off, and it
/// alarmed every ~8 s for the rest of the run (replayed on the weak-link bench's outage
/// profile; with the time shifted to the wall clock, no alarm). Chromium restarts that
/// estimate after 10 s without a frame; a minute stays far inside the 32-bit time's range.
const MAX_SWITCH_GAP: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default)]
pub struct RtpTimeline {
    /// Added to the publisher's timestamp of the layer flowing now.
    offset: i64,
    last_out: Option<(u64, Instant)>,
}

impl RtpTimeline {
    /// The frame at publisher time `time` starts a new layer: continue from the last output.
    pub fn rebase(&mut self, time: u64, now: Instant) {
        self.offset = match self.last_out {
            Some((last, at)) => {
                let gap = now.saturating_duration_since(at).min(MAX_SWITCH_GAP);
                let ticks = (gap.as_micros() as u64 * TICKS_PER_SEC / 1_000_000).max(1);
                (last + ticks) as i64 - time as i64
            }
            None => 0,
        };
    }

    /// The outgoing time of a forwarded frame.
    pub fn rewrite(&mut self, time: u64, now: Instant) -> u64 {
        let out = (time as i64).wrapping_add(self.offset) as u64;
        self.last_out = Some((out, now));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: u64 = 2970; // 33 ms at 90 kHz

    #[test]
    fn a_switch_continues_one_frame_interval_later_whatever_the_new_base() {
        let t0 = Instant::now();
        let mut tl = RtpTimeline::default();
        tl.rebase(5_000_000, t0);
        let mut last = tl.rewrite(5_000_000, t0);
        assert_eq!(last, 5_000_000, "the first layer passes through");
        for (n, base) in [
            (1u64, 5_000_000u64),
            (2, 5_000_000),
            (3, 900),
            (4, 900),
            (5, 77_000_000),
        ] {
            let now = t0 + Duration::from_millis(33 * n);
            let time = base + n * FRAME;
            if n == 3 || n == 5 {
                tl.rebase(time, now);
            }
            let out = tl.rewrite(time, now);
            assert_eq!(out, last + FRAME, "frame {n}");
            last = out;
        }
    }

    #[test]
    fn a_pause_advances_by_the_wall_clock_gap_capped() {
        let t0 = Instant::now();
        let mut tl = RtpTimeline::default();
        let first = tl.rewrite(1000, t0);
        tl.rebase(50, t0 + Duration::from_millis(500));
        assert_eq!(
            tl.rewrite(50, t0 + Duration::from_millis(500)),
            first + 45_000
        );
        // Eight seconds paused: the time follows the wall clock.
        let resumed = t0 + Duration::from_millis(8500);
        tl.rebase(7, resumed);
        let after_pause = tl.rewrite(7, resumed);
        assert_eq!(after_pause, first + 8 * TICKS_PER_SEC + 45_000);
        // Beyond the cap it advances by the cap.
        let much_later = resumed + Duration::from_secs(600);
        tl.rebase(3, much_later);
        assert_eq!(
            tl.rewrite(3, much_later),
            after_pause + MAX_SWITCH_GAP.as_secs() * TICKS_PER_SEC
        );
    }
}
