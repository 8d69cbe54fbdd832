//! When to probe toward the allocation's next step (the estimate at which one more layer would
//! fit), so that a subscriber held under its link climbs in seconds rather than at the rate
//! control's pace.
//!
//! A subscriber on a lower layer sends under its estimate, and its rate control grows to at
//! most 1.5× what is acked; str0m's own periodic probe comes only while it sends under 65 % of
//! the estimate, and 5 s after any other probe. After a collapse, a recovered 2 Mbit/s link's
//! estimate stayed at 675 kbit/s for ~5 s while the classroom sent on 320 px. LiveKit
//! probes toward the next layer whenever its allocation is short and the channel is calm, and
//! backs off when probes fail; so does this. Pure logic: time and readings in, a probe target out.

use std::time::{Duration, Instant};

/// Between probes while they succeed (or the step changes).
pub const FIRST_INTERVAL: Duration = Duration::from_millis(2500);
/// The longest wait after failed probes: a link that is simply full is probed every 5 s, 15 ms
/// of padding at up to twice its estimate each time; a collapsed link that comes back is found
/// within 5 s.
pub const MAX_INTERVAL: Duration = Duration::from_secs(5);
/// None in a subscriber's first seconds: str0m's own start-up probes run then, and drop a
/// request (a first cut probed 0.5 s in, counted the dropped request as a failure, and backed
/// off through the start-up slump it was meant for).
pub const START: Duration = Duration::from_secs(2);
/// Probe a little over the step: a result right at it leaves the allocation on the edge, and
/// the selector's up-hold needs the estimate to stay there.
const OVERSHOOT: f64 = 1.15;
/// When a probe's result shows in the estimate, or never will.
const SETTLE: Duration = Duration::from_secs(1);
/// A probe that raised the estimate by this much found room.
const FOUND: f64 = 1.1;

/// Per subscriber.
#[derive(Debug, Clone)]
pub struct ClimbProbe {
    interval: Duration,
    last: Option<Probe>,
    first_tick: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    at: Instant,
    estimate_before: u64,
    judged: bool,
}

impl Default for ClimbProbe {
    fn default() -> Self {
        ClimbProbe {
            interval: FIRST_INTERVAL,
            last: None,
            first_tick: None,
        }
    }
}

impl ClimbProbe {
    /// Per adaptation tick: the rate to probe toward now, if any. `next_step_bps`: the
    /// allocation's next step (`Allocation::next_step_bps`); `calm`: no overflow, outage,
    /// standing queue or heavy loss on the link now.
    pub fn on_tick(
        &mut self,
        now: Instant,
        estimate_bps: u64,
        next_step_bps: Option<u64>,
        calm: bool,
    ) -> Option<u64> {
        if let Some(last) = self.last.as_mut().filter(|l| !l.judged) {
            if now >= last.at + SETTLE {
                last.judged = true;
                self.interval = if estimate_bps as f64 >= last.estimate_before as f64 * FOUND {
                    FIRST_INTERVAL
                } else {
                    (self.interval * 2).min(MAX_INTERVAL)
                };
            }
        }
        let first_tick = *self.first_tick.get_or_insert(now);
        if now < first_tick + START {
            return None;
        }
        let step = next_step_bps.filter(|&step| step > estimate_bps && calm)?;
        if let Some(last) = self.last {
            if !last.judged || now < last.at + self.interval {
                return None;
            }
        }
        self.last = Some(Probe {
            at: now,
            estimate_before: estimate_bps,
            judged: false,
        });
        Some((step as f64 * OVERSHOOT).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(200);

    /// Ticks from `start` for `span`, with the estimate `estimate(t)`; the probes asked for.
    fn run(
        climb: &mut ClimbProbe,
        start: Instant,
        span: Duration,
        estimate: impl Fn(Duration) -> u64,
        step: Option<u64>,
        calm: bool,
    ) -> Vec<(Duration, u64)> {
        let mut probes = Vec::new();
        let mut t = Duration::ZERO;
        while t < span {
            if let Some(target) = climb.on_tick(start + t, estimate(t), step, calm) {
                probes.push((t, target));
            }
            t += TICK;
        }
        probes
    }

    #[test]
    fn a_subscriber_short_of_its_next_layer_probes_a_little_over_it() {
        let start = Instant::now();
        let mut climb = ClimbProbe::default();
        let probes = run(
            &mut climb,
            start,
            START + Duration::from_millis(100),
            |_| 300_000,
            Some(700_000),
            true,
        );
        assert_eq!(
            probes,
            vec![(START, 805_000)],
            "after str0m's start-up probes"
        );
    }

    #[test]
    fn failed_probes_back_off_to_five_seconds_and_success_resets() {
        let start = Instant::now();
        let mut climb = ClimbProbe::default();
        // A full 1 Mbit/s link: the estimate never moves, the step (1280 px) never fits.
        let probes = run(
            &mut climb,
            start,
            Duration::from_secs(40),
            |_| 950_000,
            Some(1_400_000),
            true,
        );
        let at: Vec<u64> = probes.iter().map(|(t, _)| t.as_millis() as u64).collect();
        // 2 s in (after the start-up probes), then every 5 s (2.5 doubled, at most 5).
        assert_eq!(
            at,
            vec![2_000, 7_000, 12_000, 17_000, 22_000, 27_000, 32_000, 37_000]
        );

        // The link recovers: a probe finds room, and the next comes 2.5 s after it.
        let later = start + Duration::from_secs(45);
        let probes = run(
            &mut climb,
            later,
            Duration::from_secs(6),
            |t| {
                if t >= Duration::from_millis(600) {
                    1_300_000
                } else {
                    950_000
                }
            },
            Some(1_400_000),
            true,
        );
        let at: Vec<u64> = probes.iter().map(|(t, _)| t.as_millis() as u64).collect();
        assert_eq!(at, vec![0, 2_600], "{probes:?}");
    }

    #[test]
    fn no_probe_on_a_troubled_link_nor_with_nothing_to_climb_to() {
        let connected = Instant::now();
        let start = connected + START;
        let mut climb = ClimbProbe::default();
        let second = Duration::from_secs(1);
        climb.on_tick(connected, 300_000, None, true);
        assert!(run(&mut climb, start, second, |_| 300_000, Some(700_000), false).is_empty());
        assert!(run(&mut climb, start, second, |_| 300_000, None, true).is_empty());
        assert!(run(&mut climb, start, second, |_| 800_000, Some(700_000), true).is_empty());
    }
}
