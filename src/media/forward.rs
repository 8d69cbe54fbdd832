//! Per-subscriber video forwarding decisions: which simulcast layer flows, when a switch
//! happens, and how RTP timestamps are rewritten so the receiver sees one continuous stream.
//!
//! Decide, then apply: [`VideoForward::on_frame`] only returns a [`Decision`]; the engine writes
//! the frame. Pure logic: time is passed in.
//!
//! str0m repacketizes each forwarded frame on the subscriber's own outgoing stream, so SSRC,
//! sequence numbers and the VP8 picture id are already continuous across a layer switch; the
//! RTP timestamp is the one thing the forwarder must rewrite, because every simulcast layer has
//! its own timestamp base.

use std::time::{Duration, Instant};

/// 90 kHz video clock.
const TICKS_PER_SEC: u64 = 90_000;
/// Longest gap the rewritten timestamp advances across a switch (after a pause, say).
const MAX_SWITCH_GAP: Duration = Duration::from_secs(2);

/// Why a frame was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The frame belongs to a layer this subscriber does not take.
    OtherLayer,
    /// The subscriber switches to this layer but its next keyframe has not arrived.
    WaitingForKeyframe,
    /// Video is paused for this subscriber.
    Paused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Drop(DropReason),
    /// Forward with this (90 kHz) RTP time; `switched` when this keyframe starts a new layer.
    Forward {
        rtp_time: u64,
        switched: bool,
    },
}

/// One subscriber's view of one publisher's video track. Layers are indices, lowest first.
#[derive(Debug, Clone, Default)]
pub struct VideoForward {
    /// The layer the subscriber should get; `None` pauses the video.
    target: Option<usize>,
    /// The layer flowing now.
    current: Option<usize>,
    /// Added to the publisher's timestamp of the current layer.
    offset: i64,
    last_out: Option<(u64, Instant)>,
}

impl VideoForward {
    pub fn new(target: Option<usize>) -> Self {
        VideoForward {
            target,
            ..Default::default()
        }
    }

    pub fn target(&self) -> Option<usize> {
        self.target
    }

    pub fn current(&self) -> Option<usize> {
        self.current
    }

    pub fn set_target(&mut self, target: Option<usize>) {
        self.target = target;
        if target.is_none() {
            // Pausing needs no keyframe: stop at once.
            self.current = None;
        }
    }

    /// The layer whose keyframe this forwarder waits for, if any.
    pub fn awaited_keyframe(&self) -> Option<usize> {
        match self.target {
            Some(t) if self.current != Some(t) => Some(t),
            _ => None,
        }
    }

    /// Decides what to do with one frame of `layer`, whose publisher RTP time is `time` (90 kHz,
    /// extended) and which arrived at `now`.
    pub fn on_frame(
        &mut self,
        layer: usize,
        time: u64,
        is_keyframe: bool,
        now: Instant,
    ) -> Decision {
        let Some(target) = self.target else {
            return Decision::Drop(DropReason::Paused);
        };
        if layer == target && self.current != Some(target) {
            if !is_keyframe {
                // Keep the old layer flowing until the new one can start cleanly.
                return Decision::Drop(DropReason::WaitingForKeyframe);
            }
            self.offset = match self.last_out {
                Some((last_ts, last_at)) => {
                    let gap = now.saturating_duration_since(last_at).min(MAX_SWITCH_GAP);
                    let gap_ticks = (gap.as_micros() as u64 * TICKS_PER_SEC / 1_000_000).max(1);
                    (last_ts + gap_ticks) as i64 - time as i64
                }
                None => 0,
            };
            self.current = Some(target);
            return self.forward(time, now, true);
        }
        if Some(layer) == self.current {
            // Includes the old layer while a switch waits for the target's keyframe.
            return self.forward(time, now, false);
        }
        Decision::Drop(DropReason::OtherLayer)
    }

    fn forward(&mut self, time: u64, now: Instant, switched: bool) -> Decision {
        let rtp_time = (time as i64).wrapping_add(self.offset) as u64;
        self.last_out = Some((rtp_time, now));
        Decision::Forward { rtp_time, switched }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: u64 = 2970; // 33 ms at 90 kHz

    /// Feeds one frame of each of three layers per tick; layer bases differ like Chromium's.
    struct Source {
        t0: Instant,
        n: u64,
    }

    impl Source {
        fn frames(&mut self, keyframe_on: &[usize]) -> Vec<(usize, u64, bool, Instant)> {
            let now = self.t0 + Duration::from_millis(33 * self.n);
            let base = [1_000_000u64, 5_000_000, 9_000_000];
            let out = (0..3)
                .map(|l| (l, base[l] + self.n * FRAME, keyframe_on.contains(&l), now))
                .collect();
            self.n += 1;
            out
        }
    }

    fn run(
        fwd: &mut VideoForward,
        src: &mut Source,
        keyframes: &[usize],
    ) -> Vec<(usize, Decision)> {
        src.frames(keyframes)
            .into_iter()
            .map(|(l, t, k, now)| (l, fwd.on_frame(l, t, k, now)))
            .collect()
    }

    fn forwarded(ds: &[(usize, Decision)]) -> Vec<(usize, u64)> {
        ds.iter()
            .filter_map(|(l, d)| match d {
                Decision::Forward { rtp_time, .. } => Some((*l, *rtp_time)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn starts_on_a_keyframe_and_switches_seamlessly_on_the_next_one() {
        let mut src = Source {
            t0: Instant::now(),
            n: 0,
        };
        let mut fwd = VideoForward::new(Some(2));
        // No keyframe yet: nothing flows.
        assert!(forwarded(&run(&mut fwd, &mut src, &[])).is_empty());
        assert_eq!(fwd.awaited_keyframe(), Some(2));
        let first = forwarded(&run(&mut fwd, &mut src, &[0, 1, 2]));
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].0, 2);
        let mut last = first[0].1;

        // Ask for the lowest layer: the top layer keeps flowing until layer 0's keyframe.
        fwd.set_target(Some(0));
        for _ in 0..3 {
            let f = forwarded(&run(&mut fwd, &mut src, &[]));
            assert_eq!(f, vec![(2, last + FRAME)]);
            last += FRAME;
        }
        let ds = run(&mut fwd, &mut src, &[0]);
        let f = forwarded(&ds);
        assert_eq!(f.len(), 1, "exactly one layer is forwarded: {ds:?}");
        assert_eq!(f[0].0, 0);
        // Rewritten time continues one frame interval later, whatever layer 0's base is.
        assert_eq!(f[0].1, last + FRAME);
        assert!(ds
            .iter()
            .any(|(_, d)| matches!(d, Decision::Forward { switched: true, .. })));
        last = f[0].1;
        let f = forwarded(&run(&mut fwd, &mut src, &[]));
        assert_eq!(f, vec![(0, last + FRAME)]);
    }

    #[test]
    fn pause_stops_at_once_and_resume_waits_for_a_keyframe() {
        let mut src = Source {
            t0: Instant::now(),
            n: 0,
        };
        let mut fwd = VideoForward::new(Some(1));
        assert_eq!(forwarded(&run(&mut fwd, &mut src, &[1])).len(), 1);
        fwd.set_target(None);
        let ds = run(&mut fwd, &mut src, &[0, 1, 2]);
        assert!(ds
            .iter()
            .all(|(_, d)| *d == Decision::Drop(DropReason::Paused)));
        fwd.set_target(Some(1));
        assert!(forwarded(&run(&mut fwd, &mut src, &[])).is_empty());
        let f = forwarded(&run(&mut fwd, &mut src, &[1]));
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn timestamps_stay_monotonic_across_many_switches() {
        let mut src = Source {
            t0: Instant::now(),
            n: 0,
        };
        let mut fwd = VideoForward::new(Some(0));
        let mut out = Vec::new();
        for i in 0..60u64 {
            if i % 10 == 5 {
                fwd.set_target(Some(((i / 10) % 3) as usize));
            }
            let key = if i % 7 == 0 { vec![0, 1, 2] } else { vec![] };
            out.extend(forwarded(&run(&mut fwd, &mut src, &key)));
        }
        assert!(out.len() > 40, "{}", out.len());
        for w in out.windows(2) {
            assert!(w[1].1 > w[0].1, "time went backwards: {w:?}");
            assert!(w[1].1 - w[0].1 <= 2 * FRAME, "time jumped: {w:?}");
        }
    }
}
