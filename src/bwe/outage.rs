//! Outage recovery: a link that carried nothing for a few seconds (a radio fade, a 4G handover)
//! did not lose its capacity. When feedback comes back, its first readings cover what was sent
//! during the outage: nearly all lost, the rest delivered seconds late at a few hundred bit/s.
//! Read as congestion, that bounds the allocation at nothing (`super::overflow`), and str0m's
//! delay-based estimate falls to what was acknowledged meanwhile, which is nothing: after a 3 s
//! outage of a 2 Mbit/s link the classroom's video stayed paused 5 s more while the estimate
//! climbed back from ~0 (weak-link bench, profile `outage`). Read as an outage, the estimate is
//! restored to a share of what it was before and probed from there; a link that did come back
//! slower is then bounded by the next readings as any collapse.
//!
//! Pure logic: feedback readings and str0m's estimate in, a rate to restore out.

use std::time::{Duration, Instant};

use str0m::bwe::RecentFeedback;

/// A round trip this long means the packets waited through an outage, not in a queue a
/// congested link keeps (village links queue 100 ms–1 s).
pub const OUTAGE_RTT: Duration = Duration::from_millis(1500);
/// Less than this delivered is nothing worth measuring: under the lowest video layer. An
/// 8 kbit/s outage measured 17 kbit/s over the early reading's 100 ms.
pub const OUTAGE_DELIVERED_BPS: u64 = 64_000;
/// Share of the estimate before the outage it restarts at: str0m probes up from there.
pub const RESTORE_SHARE: f64 = 0.5;
/// How long the restored rate is a floor under str0m's estimate: the outage's late feedback
/// drains within a round trip of the link's return; a link that stays this slow is left to the
/// estimator and the overflow bound after it.
pub const FLOOR_FOR: Duration = Duration::from_secs(2);

/// Whether a reading covers sends of an outage (see the module doc).
pub fn is_outage(feedback: &RecentFeedback) -> bool {
    feedback.rtt >= OUTAGE_RTT
        && feedback
            .delivered_bps
            .is_none_or(|bps| bps < OUTAGE_DELIVERED_BPS)
}

/// Per subscriber; fed at each adaptation tick.
#[derive(Debug, Clone, Default)]
pub struct OutageRecovery {
    /// str0m's estimate at the last reading outside an outage.
    before: Option<u64>,
    /// The rate restored for the outage under way (once per outage), and when.
    restored: Option<(u64, Instant)>,
}

impl OutageRecovery {
    /// One reading with str0m's current estimate. Returns the rate to restore the estimate to
    /// when this reading is the first of an outage's.
    pub fn on_feedback(
        &mut self,
        now: Instant,
        feedback: &RecentFeedback,
        estimate: Option<u64>,
    ) -> Option<u64> {
        if !is_outage(feedback) {
            self.restored = None;
            if estimate.is_some() {
                self.before = estimate;
            }
            return None;
        }
        if self.restored.is_some() {
            return None;
        }
        let restore = self.before.map(|bps| (bps as f64 * RESTORE_SHARE) as u64)?;
        self.restored = Some((restore, now));
        Some(restore)
    }

    /// The least the estimate may be for [`FLOOR_FOR`] after a restore: the outage's late
    /// feedback still arriving would pull str0m's estimate down again.
    pub fn floor(&self, now: Instant) -> Option<u64> {
        self.restored
            .filter(|(_, at)| now.saturating_duration_since(*at) < FLOOR_FOR)
            .map(|(bps, _)| bps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feedback(loss: f32, rtt_ms: u64, delivered_bps: Option<u64>) -> RecentFeedback {
        RecentFeedback {
            packets: 20,
            loss,
            rtt: Duration::from_millis(rtt_ms),
            delivered_bps,
            min_transit_us: Some(1000 * rtt_ms as i64 / 2),
        }
    }

    #[test]
    fn the_first_reading_after_an_outage_restores_half_the_estimate_before_it_once() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut o = OutageRecovery::default();
        let flowing = feedback(0.0, 60, Some(1_800_000));
        assert_eq!(o.on_feedback(t0, &flowing, Some(2_000_000)), None);
        assert_eq!(o.floor(t0), None);
        // str0m's estimate has already fallen when the outage's feedback arrives.
        let outage = feedback(0.77, 2960, Some(438));
        assert_eq!(
            o.on_feedback(at(100), &outage, Some(150_000)),
            Some(1_000_000)
        );
        assert_eq!(
            o.on_feedback(at(300), &outage, Some(90_000)),
            None,
            "once per outage"
        );
        assert_eq!(
            o.floor(at(1900)),
            Some(1_000_000),
            "a floor while it drains"
        );
        assert_eq!(o.floor(at(2100)), None, "for two seconds at most");
        // Flowing again; a later outage restores from the estimate before that one.
        let back = feedback(0.0, 70, Some(900_000));
        assert_eq!(o.on_feedback(at(400), &back, Some(1_200_000)), None);
        assert_eq!(o.floor(at(400)), None);
        let silent = feedback(1.0, 2000, None);
        assert_eq!(
            o.on_feedback(at(5000), &silent, Some(50_000)),
            Some(600_000)
        );
    }

    #[test]
    fn a_collapse_and_a_radio_loss_burst_are_not_outages() {
        // 2 → 0.3 Mbit/s behind a 100 ms queue: the link delivers its new rate.
        assert!(!is_outage(&feedback(0.87, 152, Some(265_971))));
        // Even behind a deep (bufferbloated) queue, it delivers something.
        assert!(!is_outage(&feedback(0.6, 2500, Some(280_000))));
        // A burst of radio loss at the usual round trip.
        assert!(!is_outage(&feedback(0.5, 300, Some(20_000))));
        assert!(is_outage(&feedback(0.77, 2960, Some(438))));
        assert!(is_outage(&feedback(0.52, 2996, Some(17_134))), "measured");
        assert!(is_outage(&feedback(1.0, 1600, None)));
        let mut o = OutageRecovery::default();
        assert_eq!(
            o.on_feedback(Instant::now(), &feedback(1.0, 3000, None), None),
            None,
            "nothing to restore without an estimate before"
        );
    }
}
