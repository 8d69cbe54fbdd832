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
//! The picture needs more than the estimate. The receiver lost seconds of video, and with them
//! every reference its decoder had: it asks for all of it again, and the resends of what is
//! still in the retransmission history, seconds of it, go out ahead of the keyframe that would
//! actually restart the picture (the outage bench's video came back 1–4 s after its link). An
//! outage shows to the sender as feedback that stops, or comes seconds late, while media goes
//! out; [`OutageWatch`] tells when the link is back from one, and the video then restarts on a
//! fresh keyframe, asked for at once, with the resends dropped.
//!
//! Pure logic: feedback readings and str0m's estimate in, a rate to restore and the link's
//! return out.

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

/// Feedback silent this long means a link that carries nothing (or nothing back): a receiver
/// that gets packets reports every 50–100 ms, on any link. Shorter gaps are left to repair.
pub const SILENCE: Duration = Duration::from_secs(1);

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

/// Per subscriber: whether its link is out, and when it is back. Out: reports stopped a
/// [`SILENCE`] ago while packets sent as long ago are not reported, or the newest reading covers
/// sends of an outage ([`is_outage`]). Back: reports come again and cover what was sent within
/// the last [`SILENCE`]; a report that trickles through an outage with what was sent before it
/// (measured: 1.4 s late, in the middle of a 3 s outage) is not the link coming back.
#[derive(Debug, Clone, Default)]
pub struct OutageWatch {
    /// Since when the link has carried nothing, as far as feedback tells.
    out_since: Option<Instant>,
}

/// What transport-wide feedback tells at one tick (str0m's `Bwe`).
#[derive(Debug, Clone, Copy, Default)]
pub struct FeedbackTimes {
    /// When the newest report arrived; `None` before any.
    pub last_report: Option<Instant>,
    /// When the oldest packet no report covers yet went out; `None` when all are covered.
    pub oldest_unreported: Option<Instant>,
}

impl OutageWatch {
    /// One adaptation tick, with the regular reading. True once when the link is back after an
    /// outage of at least [`SILENCE`].
    pub fn on_tick(
        &mut self,
        now: Instant,
        times: FeedbackTimes,
        feedback: Option<&RecentFeedback>,
    ) -> bool {
        let Some(last_report) = times.last_report else {
            return false;
        };
        let age = |t: Instant| now.saturating_duration_since(t);
        let unreported_since = times.oldest_unreported.filter(|&t| age(t) >= SILENCE);
        // Out since the send of what a late reading covers, or of the oldest unreported packet
        // while reports are silent.
        let late_since = feedback
            .filter(|fb| is_outage(fb))
            .map(|fb| now.checked_sub(fb.rtt).unwrap_or(now));
        let silent_since = unreported_since.filter(|_| age(last_report) >= SILENCE);
        if let Some(since) = late_since.or(silent_since) {
            self.out_since = Some(self.out_since.map_or(since, |out| out.min(since)));
            return false;
        }
        if unreported_since.is_some() {
            // Reports flow, but of what was sent before the outage: not back yet.
            return false;
        }
        self.out_since
            .take()
            .is_some_and(|since| age(since) >= SILENCE)
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

    /// Feedback times: the newest report at `report_ms`, the oldest unreported send at
    /// `unreported_ms` (if any), from `t0`.
    fn times(t0: Instant, report_ms: u64, unreported_ms: Option<u64>) -> FeedbackTimes {
        FeedbackTimes {
            last_report: Some(t0 + Duration::from_millis(report_ms)),
            oldest_unreported: unreported_ms.map(|ms| t0 + Duration::from_millis(ms)),
        }
    }

    #[test]
    fn the_link_is_back_once_feedback_covers_fresh_sends_after_a_second_of_nothing() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let flowing = feedback(0.0, 60, Some(1_800_000));
        let mut w = OutageWatch::default();
        assert!(
            !w.on_tick(at(0), FeedbackTimes::default(), None),
            "no feedback yet"
        );
        assert!(!w.on_tick(at(200), times(t0, 150, Some(140)), Some(&flowing)));
        // Reports stop at 200 ms, for what was sent up to 140 ms; a second later the link is out.
        assert!(!w.on_tick(at(1400), times(t0, 200, Some(145)), Some(&flowing)));
        // A report trickles through with what went out before the outage, 1.4 s late.
        let trickle = feedback(0.0, 1440, Some(1_490_000));
        assert!(!w.on_tick(at(1600), times(t0, 1590, Some(160)), Some(&trickle)));
        // The first reports back cover what went out during it, seconds late ...
        let late = feedback(0.9, 2900, Some(2_000));
        assert!(!w.on_tick(at(3400), times(t0, 3350, Some(500)), Some(&late)));
        // ... then fresh sends: back, once.
        assert!(w.on_tick(at(3600), times(t0, 3550, Some(3500)), Some(&flowing)));
        assert!(!w.on_tick(at(3800), times(t0, 3750, Some(3700)), Some(&flowing)));
    }

    #[test]
    fn late_feedback_alone_is_an_outage_and_quiet_or_slow_feedback_is_not() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let flowing = feedback(0.0, 60, Some(1_800_000));
        let mut w = OutageWatch::default();
        // A report every 200 ms throughout, the first ones after the outage seconds late (the
        // link queued through it): the outage began at the send of what they cover.
        assert!(!w.on_tick(at(3000), times(t0, 2990, Some(2950)), Some(&flowing)));
        let late = feedback(0.5, 2500, Some(10_000));
        assert!(!w.on_tick(at(3200), times(t0, 3190, Some(3150)), Some(&late)));
        assert!(w.on_tick(at(3400), times(t0, 3390, Some(3350)), Some(&flowing)));
        // Nothing sent for seconds (a teacher with no classroom to see): no reports, and none
        // missing.
        assert!(!w.on_tick(at(9000), times(t0, 3390, None), Some(&flowing)));
        assert!(!w.on_tick(at(9200), times(t0, 9150, Some(9100)), Some(&flowing)));
        // A 600 ms round trip: reports every 100 ms, each of what went out 700 ms before.
        let satellite = feedback(0.0, 600, Some(1_800_000));
        for tick in 0..20 {
            let now = 10_000 + 200 * tick;
            assert!(!w.on_tick(
                at(now),
                times(t0, now - 50, Some(now - 700)),
                Some(&satellite)
            ));
        }
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
