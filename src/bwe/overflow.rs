//! Collapse detection: when a village link's capacity drops under a full queue, most of what is
//! sent is dropped at once, seconds before a delay-based estimate has fallen. Severe loss *while
//! a queue stands* (by the least transit of the newest packets, [`super::queue`]; by the newest
//! round trip when none arrived) means the queue overflows (congestion), and the rate the link
//! delivered the rest at is then the best measure of it. Severe loss at the usual round trip
//! is radio loss, not congestion: it is left to the estimator (cutting the rate would not reduce
//! it). Read at the adaptation tick from transport-wide feedback over the last few hundred
//! milliseconds of sends (str0m's `recent_feedback`), not from the once-a-second loss average.
//! Two such readings in a row bound the rate; a collapse shows sooner in an early reading of
//! only the newest sends, taken between ticks and after each regular one, where most of them
//! are lost, except on a link known for radio loss, where a burst can take most of so short a
//! window. When a bound lapses, an estimate still far over it restarts at the least rate the
//! bound held ([`restart_at`]). Pure logic: feedback and time in, a bound out.

use std::time::{Duration, Instant};

use str0m::bwe::RecentFeedback;

/// Loss above which a reading may be an overflow.
pub const SEVERE_LOSS: f32 = 0.2;
/// Round-trip growth over the floor that shows a standing queue.
pub const QUEUE_GROWTH: Duration = Duration::from_millis(30);
/// The sends each reading covers: a collapse shows within a few feedback reports, and even the
/// lowest layer puts a dozen packets in it.
pub const WINDOW: Duration = Duration::from_millis(300);
/// Fewer packets than this say too little about loss.
const MIN_PACKETS: u32 = 8;
/// Readings in a row that must show it: a keyframe's burst or a loss burst on a radio link can
/// make one window look like an overflow (measured on the bursty profile: several a minute); a
/// collapse persists.
const READINGS: u32 = 2;
/// The sends an early reading covers. A collapse loses most of what is sent from the moment the
/// link's queue is full; over a longer window the packets sent before it dilute that loss. With
/// this reading the collapse bench reached the lowest layer 0.61 s after the drop on average
/// over 19 runs, against 0.89 s over 6 with the two 300 ms readings alone.
pub const EARLY_WINDOW: Duration = Duration::from_millis(100);
/// Loss in an early reading that bounds at once. A radio link's loss bursts (the bursty profile
/// loses 14 % in runs of about three packets) rarely take half of a window's packets, and they
/// do not come with a standing queue.
pub const COLLAPSE_LOSS: f32 = 0.5;
/// A bound stays this long after the last overflowing reading: the queue needs that long to
/// drain and the estimator to follow, and lifting it sooner would refill the queue at once.
const HOLD: Duration = Duration::from_secs(1);
/// A lapsing bound restarts the estimator at it when the estimate is more than this over it.
/// str0m's delay-based estimate, which saw less of the loss, was still 1.3–1.9 Mbit/s when the
/// bound on a 300 kbit/s link lapsed (collapse bench, session 9), and following it overflowed
/// the link a second time one to four seconds after the collapse.
const RESTART_ABOVE: f64 = 1.25;

/// Where the estimator restarts when a bound of `lapsed_bps` lapses while it estimates
/// `estimate_bps`: at the bound, the rate the link last delivered while overflowing, when the
/// estimate is far over it; `None` when the estimate has come down by itself. From there the
/// estimator probes up again, as after any restart.
pub fn restart_at(lapsed_bps: u64, estimate_bps: Option<u64>) -> Option<u64> {
    let estimate = estimate_bps?;
    (estimate as f64 > lapsed_bps as f64 * RESTART_ABOVE).then_some(lapsed_bps)
}

/// What str0m may pace at while the link is bounded at `cap_bps`: a little under it, so that the
/// overflowing queue drains and the next keyframe does not arrive as a burst it drops (str0m paces
/// at 1.1 × the rate it is given, and `cap_bps` counts RTP payload only).
pub fn pacing_cap(cap_bps: u64) -> u64 {
    cap_bps * 85 / 100
}

/// Per subscriber; fed at each adaptation tick.
#[derive(Debug, Clone, Default)]
pub struct OverflowDetector {
    min_rtt: Option<Duration>,
    /// Overflowing readings in a row.
    streak: u32,
    /// The bound, if any.
    cap: Option<Bound>,
    /// The least rate of a bound that lapsed and has not been taken yet
    /// ([`OverflowDetector::take_lapsed`]).
    lapsed: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Bound {
    /// What the newest overflowing reading saw delivered: the allocation's limit.
    bps: u64,
    /// The least of those since the bound started. A reading soon after a collapse still counts
    /// arrivals at the old rate: bounds of 650–770 kbit/s on a 300 kbit/s link lapsed in
    /// collapse runs, whose early readings had seen 250–410.
    lowest: u64,
    /// Until when it holds.
    until: Instant,
}

impl Bound {
    fn new(bps: u64, until: Instant) -> Bound {
        Bound {
            bps,
            lowest: bps,
            until,
        }
    }
}

impl OverflowDetector {
    /// One reading of the newest feedback (`None`: none yet, or no transport-wide feedback) and
    /// the standing queue it shows ([`super::queue`]; `None` when no packet of it arrived).
    /// Returns true when this reading started a bound (for logging).
    pub fn on_feedback(
        &mut self,
        now: Instant,
        feedback: Option<&RecentFeedback>,
        queue: Option<Duration>,
    ) -> bool {
        if let Some(bound) = self.cap.filter(|b| now >= b.until) {
            self.cap = None;
            self.lapsed = Some(bound.lowest);
        }
        let Some(fb) = feedback else {
            return false;
        };
        let floor = self.min_rtt.map_or(fb.rtt, |lowest| lowest.min(fb.rtt));
        self.min_rtt = Some(floor);
        let overflowing = fb.loss > SEVERE_LOSS && queue_stands(fb, queue, floor);
        let Some(delivered) = fb.delivered_bps.filter(|_| overflowing) else {
            self.streak = 0;
            return false;
        };
        self.streak += 1;
        if self.streak < READINGS {
            return false;
        }
        // While it overflows, the link is busy and delivers at its rate. The newest reading is
        // the closest: older ones mix in the queue's drain at the old rate, or the gap after the
        // sender cut back (measured: 139 kbit/s once on a 300 kbit/s link, which paused video).
        let started = self.cap.is_none();
        self.cap = Some(match self.cap {
            Some(b) => Bound {
                bps: delivered,
                lowest: b.lowest.min(delivered),
                until: now + HOLD,
            },
            None => Bound::new(delivered, now + HOLD),
        });
        self.lapsed = None;
        started
    }

    /// An early reading of the newest sends only ([`EARLY_WINDOW`]), taken between adaptation
    /// ticks and after each regular reading (`queue` read without moving the gauge's floor).
    /// Starts a bound at once when most of them were lost behind a standing queue; otherwise
    /// leaves everything to the regular readings. Returns true when it started a bound.
    ///
    /// `radio_lossy`: the link is known for radio loss now (loss with no queue standing lately,
    /// [`super::RadioLoss::radio_lossy`]). Then early readings do not bound, and a collapse is
    /// left to two regular readings in a row. Under bursty loss (Gilbert-Elliott, 14 %, no
    /// collapse), a burst took 55-80 % of an early window while a frame's burst queued
    /// 31-38 ms, in three of six runs; the bound's lapse restarted the estimate at the
    /// 109-289 kbit/s the burst let through, and video paused for 5.8 and 9 s in two of them.
    /// The regular readings just after had seen the same loss with no queue standing.
    pub fn on_early_feedback(
        &mut self,
        now: Instant,
        feedback: &RecentFeedback,
        queue: Option<Duration>,
        radio_lossy: bool,
    ) -> bool {
        // Before any regular reading there is no floor to tell a queue by.
        let Some(floor) = self.min_rtt.filter(|_| !radio_lossy) else {
            return false;
        };
        if self.cap.is_some_and(|b| now < b.until) {
            return false;
        }
        let collapsing = feedback.loss >= COLLAPSE_LOSS && queue_stands(feedback, queue, floor);
        let Some(delivered) = feedback.delivered_bps.filter(|_| collapsing) else {
            return false;
        };
        // The regular reading that follows counts as the second of a streak.
        self.streak = 1;
        self.cap = Some(Bound::new(delivered, now + HOLD));
        self.lapsed = None;
        true
    }

    /// Drops a bound (and the streak toward one): the link is known to carry more again.
    pub fn lift(&mut self) {
        self.cap = None;
        self.lapsed = None;
        self.streak = 0;
    }

    /// The least rate of the bound that lapsed since the last call, once (not of one
    /// [`lift`](Self::lift)ed).
    pub fn take_lapsed(&mut self) -> Option<u64> {
        self.lapsed.take()
    }

    /// What the link delivered while it overflowed lately; the allocation must not exceed it.
    pub fn cap_bps(&self) -> Option<u64> {
        self.cap.map(|b| b.bps)
    }
}

/// Enough packets to judge, sent while a queue stood: through the newest half of the window by
/// their least transit (a loss burst on a radio link that meets a frame's burst at the
/// bottleneck does not stand; by the newest round trip alone it bounded bursty links a few times
/// a minute), or, with nothing delivered and so no transit to go by, by the newest round trip.
fn queue_stands(feedback: &RecentFeedback, queue: Option<Duration>, floor: Duration) -> bool {
    let queued = match queue {
        Some(queue) => queue >= QUEUE_GROWTH,
        None => feedback.rtt >= floor + QUEUE_GROWTH,
    };
    feedback.packets >= MIN_PACKETS && queued
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// A reading without transit times: the newest round trip tells the queue.
    fn on(d: &mut OverflowDetector, now: Instant, feedback: Option<&RecentFeedback>) -> bool {
        d.on_feedback(now, feedback, None)
    }

    fn feedback(loss: f32, rtt_ms: u64, delivered_bps: Option<u64>) -> RecentFeedback {
        RecentFeedback {
            packets: 30,
            loss,
            rtt: MS(rtt_ms),
            delivered_bps,
            min_transit_us: Some(1000 * rtt_ms as i64 / 2),
        }
    }

    #[test]
    fn an_overflowing_queue_bounds_the_rate_at_what_the_link_delivered() {
        let t0 = Instant::now();
        let mut d = OverflowDetector::default();
        assert!(!on(&mut d, t0, Some(&feedback(0.0, 60, Some(1_100_000)))));
        assert_eq!(d.cap_bps(), None, "a clean link is not bounded");
        // 1.1 Mbit/s sent into a 300 kbit/s link: most is lost, the queue adds 100 ms. One
        // reading is not enough; the second bounds at what it saw delivered.
        assert!(!on(
            &mut d,
            t0 + MS(200),
            Some(&feedback(0.6, 160, Some(450_000)))
        ));
        assert_eq!(d.cap_bps(), None);
        assert!(on(
            &mut d,
            t0 + MS(400),
            Some(&feedback(0.6, 160, Some(290_000)))
        ));
        assert_eq!(d.cap_bps(), Some(290_000));
        // Still overflowing: the newest reading is the bound, and not a new one.
        assert!(!on(
            &mut d,
            t0 + MS(600),
            Some(&feedback(0.7, 165, Some(280_000)))
        ));
        assert_eq!(d.cap_bps(), Some(280_000));
        // Clean readings keep the bound while the queue drains...
        on(
            &mut d,
            t0 + MS(1400),
            Some(&feedback(0.0, 70, Some(200_000))),
        );
        assert_eq!(d.cap_bps(), Some(280_000));
        assert_eq!(d.take_lapsed(), None);
        // ... and lift it a hold after the last overflow, once.
        on(
            &mut d,
            t0 + MS(600) + HOLD,
            Some(&feedback(0.0, 65, Some(200_000))),
        );
        assert_eq!(d.cap_bps(), None);
        // Its least rate: 290 kbit/s, then 280.
        assert_eq!(d.take_lapsed(), Some(280_000));
        assert_eq!(d.take_lapsed(), None);
        // It lapses without feedback too (a silent link is the estimator's to judge).
        on(
            &mut d,
            t0 + MS(2000),
            Some(&feedback(0.5, 170, Some(250_000))),
        );
        on(
            &mut d,
            t0 + MS(2200),
            Some(&feedback(0.5, 170, Some(250_000))),
        );
        assert_eq!(d.cap_bps(), Some(250_000));
        on(&mut d, t0 + MS(2200) + HOLD, None);
        assert_eq!(d.cap_bps(), None);
    }

    #[test]
    fn a_lapsing_bound_restarts_an_estimate_still_far_over_it() {
        // Session 9's collapse traces: str0m at 1.3–1.9 Mbit/s when a 280 kbit/s bound lapsed.
        assert_eq!(restart_at(280_000, Some(1_300_000)), Some(280_000));
        assert_eq!(restart_at(280_000, Some(1_900_000)), Some(280_000));
        // An estimate that came down by itself is left alone, as is a missing one.
        assert_eq!(restart_at(280_000, Some(330_000)), None);
        assert_eq!(restart_at(280_000, Some(200_000)), None);
        assert_eq!(restart_at(280_000, None), None);
    }

    #[test]
    fn a_lapsed_bound_is_the_least_rate_it_held() {
        // A collapse run's trace: the early reading bounded at 414 kbit/s, and the regular
        // reading after it, whose window still held arrivals at the old rate, at 771.
        let t0 = Instant::now();
        let mut d = OverflowDetector::default();
        on(&mut d, t0, Some(&feedback(0.0, 60, Some(1_900_000))));
        assert!(d.on_early_feedback(
            t0 + MS(50),
            &feedback(0.5, 167, Some(414_000)),
            Some(MS(95)),
            false
        ));
        on(
            &mut d,
            t0 + MS(200),
            Some(&feedback(0.4, 170, Some(771_000))),
        );
        assert_eq!(d.cap_bps(), Some(771_000));
        on(
            &mut d,
            t0 + MS(200) + HOLD,
            Some(&feedback(0.0, 70, Some(250_000))),
        );
        assert_eq!(d.take_lapsed(), Some(414_000));
    }

    #[test]
    fn a_radio_lossy_link_is_bounded_by_regular_readings_only() {
        // The bursty profile's trace: a Gilbert-Elliott burst took 73 % of an early window
        // while a frame's burst queued 31 ms.
        let t0 = Instant::now();
        let burst = feedback(0.73, 335, Some(138_000));
        let mut d = OverflowDetector::default();
        d.on_feedback(t0, Some(&feedback(0.05, 300, Some(700_000))), Some(MS(0)));
        assert!(!d.on_early_feedback(t0 + MS(50), &burst, Some(MS(31)), true));
        assert_eq!(d.cap_bps(), None);
        // A collapse all the same: two regular readings of loss behind a standing queue.
        let overflow = feedback(0.5, 420, Some(290_000));
        d.on_feedback(t0 + MS(200), Some(&overflow), Some(MS(90)));
        d.on_feedback(t0 + MS(400), Some(&overflow), Some(MS(110)));
        assert_eq!(d.cap_bps(), Some(290_000));
        // Without radio loss known, the same early reading bounds at once.
        let mut clean = OverflowDetector::default();
        clean.on_feedback(t0, Some(&feedback(0.0, 300, Some(700_000))), Some(MS(0)));
        assert!(clean.on_early_feedback(t0 + MS(50), &burst, Some(MS(31)), false));
        assert_eq!(clean.cap_bps(), Some(138_000));
    }

    #[test]
    fn a_lifted_or_renewed_bound_does_not_lapse() {
        let t0 = Instant::now();
        let overflow = feedback(0.6, 160, Some(290_000));
        let mut d = OverflowDetector::default();
        on(&mut d, t0, Some(&feedback(0.0, 60, Some(1_100_000))));
        on(&mut d, t0 + MS(200), Some(&overflow));
        on(&mut d, t0 + MS(400), Some(&overflow));
        assert_eq!(d.cap_bps(), Some(290_000));
        // An outage's recovery lifts it: the link carries more again, nothing to restart at.
        d.lift();
        on(&mut d, t0 + MS(400) + HOLD, Some(&feedback(0.0, 60, None)));
        assert_eq!(d.take_lapsed(), None);
        // A bound renewed by the reading at which it would lapse goes on holding.
        on(&mut d, t0 + MS(3000), Some(&overflow));
        on(&mut d, t0 + MS(3200), Some(&overflow));
        on(&mut d, t0 + MS(3200) + HOLD, Some(&overflow));
        assert_eq!(d.cap_bps(), Some(290_000));
        assert_eq!(d.take_lapsed(), None);
    }

    #[test]
    fn radio_loss_at_the_usual_round_trip_is_left_to_the_estimator() {
        let t0 = Instant::now();
        let mut d = OverflowDetector::default();
        on(&mut d, t0, Some(&feedback(0.0, 300, Some(500_000))));
        // 30 % bursty loss, round trip unchanged.
        on(
            &mut d,
            t0 + MS(200),
            Some(&feedback(0.3, 305, Some(500_000))),
        );
        assert_eq!(d.cap_bps(), None);
        // Mild loss with a growing queue is the estimator's business too.
        on(
            &mut d,
            t0 + MS(400),
            Some(&feedback(0.1, 400, Some(500_000))),
        );
        assert_eq!(d.cap_bps(), None);
        // Too few packets to judge, or arrivals too close together for a rate.
        let few = RecentFeedback {
            packets: 4,
            ..feedback(0.5, 400, Some(100_000))
        };
        on(&mut d, t0 + MS(600), Some(&few));
        on(&mut d, t0 + MS(800), Some(&feedback(0.5, 400, None)));
        assert_eq!(d.cap_bps(), None);
    }

    #[test]
    fn the_round_trip_floor_is_the_lowest_seen() {
        let t0 = Instant::now();
        let mut d = OverflowDetector::default();
        // The first reading already carries a queue; a later one shows the true floor.
        on(&mut d, t0, Some(&feedback(0.0, 120, Some(500_000))));
        on(
            &mut d,
            t0 + MS(200),
            Some(&feedback(0.0, 60, Some(500_000))),
        );
        // 120 ms is 60 ms over the floor now: a queue.
        on(
            &mut d,
            t0 + MS(400),
            Some(&feedback(0.5, 120, Some(300_000))),
        );
        assert!(on(
            &mut d,
            t0 + MS(600),
            Some(&feedback(0.5, 120, Some(300_000)))
        ));
    }

    #[test]
    fn a_single_overflowing_reading_is_a_burst_not_a_collapse() {
        let t0 = Instant::now();
        let mut d = OverflowDetector::default();
        on(&mut d, t0, Some(&feedback(0.0, 300, Some(400_000))));
        // A keyframe's burst meets a loss burst, then the link is calm again, twice over.
        for start in [MS(200), MS(600)] {
            on(&mut d, t0 + start, Some(&feedback(0.4, 350, Some(450_000))));
            on(
                &mut d,
                t0 + start + MS(200),
                Some(&feedback(0.02, 305, Some(400_000))),
            );
            assert_eq!(d.cap_bps(), None);
        }
    }

    #[test]
    fn the_least_transit_tells_a_standing_queue_from_a_burst() {
        let t0 = Instant::now();
        let mut d = OverflowDetector::default();
        d.on_feedback(t0, Some(&feedback(0.0, 300, Some(800_000))), Some(MS(0)));
        // A loss burst meets a frame's burst: the newest packet waited 60 ms behind the frame,
        // the window's quickest did not wait. Not an overflow, however often.
        for i in 1..=5 {
            let fb = feedback(0.4, 360, Some(600_000));
            assert!(!d.on_feedback(t0 + MS(200 * i), Some(&fb), Some(MS(2))));
        }
        assert_eq!(d.cap_bps(), None);
        // Every packet of the window queued 80 ms: overflowing, whatever the newest's round trip.
        let fb = feedback(0.4, 310, Some(300_000));
        assert!(!d.on_feedback(t0 + MS(1200), Some(&fb), Some(MS(80))));
        assert!(d.on_feedback(t0 + MS(1400), Some(&fb), Some(MS(80))));
        assert_eq!(d.cap_bps(), Some(300_000));
    }

    #[test]
    fn an_early_reading_of_a_collapse_bounds_at_once() {
        let t0 = Instant::now();
        let mut d = OverflowDetector::default();
        let collapse = feedback(0.7, 160, Some(290_000));
        assert!(
            !d.on_early_feedback(t0, &collapse, Some(MS(100)), false),
            "no floor before a regular reading"
        );
        on(&mut d, t0, Some(&feedback(0.0, 60, Some(1_500_000))));
        // Most of the newest sends lost behind a standing queue: bounded without a second look.
        assert!(d.on_early_feedback(t0 + MS(50), &collapse, Some(MS(100)), false));
        assert_eq!(d.cap_bps(), Some(290_000));
        // Once bounded, early readings leave it to the regular ones...
        let lower = feedback(0.8, 160, Some(200_000));
        assert!(!d.on_early_feedback(t0 + MS(100), &lower, Some(MS(100)), false));
        assert_eq!(d.cap_bps(), Some(290_000));
        // ... and the next regular reading that still overflows is the second of a streak: it
        // moves the bound to what it saw, without starting another.
        assert!(!on(&mut d, t0 + MS(200), Some(&lower)));
        assert_eq!(d.cap_bps(), Some(200_000));
        // It lapses like any bound.
        on(
            &mut d,
            t0 + MS(200) + HOLD,
            Some(&feedback(0.0, 60, Some(250_000))),
        );
        assert_eq!(d.cap_bps(), None);
    }

    #[test]
    fn an_early_reading_needs_most_sends_lost_behind_a_standing_queue() {
        let t0 = Instant::now();
        let mut d = OverflowDetector::default();
        on(&mut d, t0, Some(&feedback(0.0, 300, Some(800_000))));
        let early = |d: &mut OverflowDetector, fb: RecentFeedback, queue: Option<Duration>| {
            let started = d.on_early_feedback(t0 + MS(50), &fb, queue, false);
            assert_eq!(started, d.cap_bps().is_some());
            started
        };
        // A loss burst at the usual transit: radio loss, however deep.
        assert!(!early(
            &mut d,
            feedback(0.9, 305, Some(300_000)),
            Some(MS(2))
        ));
        // A standing queue with loss that a regular reading calls severe, but not most.
        assert!(!early(
            &mut d,
            feedback(0.4, 400, Some(300_000)),
            Some(MS(80))
        ));
        // Too few packets, or too few arrivals for a rate.
        let few = RecentFeedback {
            packets: 4,
            ..feedback(0.75, 400, Some(300_000))
        };
        assert!(!early(&mut d, few, Some(MS(80))));
        assert!(!early(&mut d, feedback(0.9, 400, None), Some(MS(80))));
        // Nothing delivered: the newest round trip tells the queue.
        assert!(!early(&mut d, feedback(0.6, 310, Some(300_000)), None));
        assert!(early(&mut d, feedback(0.6, 400, Some(300_000)), None));
    }
}
