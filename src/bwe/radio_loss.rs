//! Radio loss: a village link's 4G or microwave hop loses packets in bursts whatever the rate,
//! and cutting the rate does not reduce it. str0m's loss-based controller (GCC's) reads those
//! bursts as congestion and cuts its estimate to a fraction of what the link carries (measured
//! on the bursty profile, 14 % Gilbert-Elliott loss on 1 Mbit/s: 53–166 kbit/s, and video
//! paused). Congestion shows as a queue that stands. So while no queue has stood for a while and
//! the link loses packets all the same, loss is tolerated (str0m's `set_loss_tolerant`: the
//! estimate is the delay-based one, which still falls as soon as a queue builds). A standing
//! queue, an overflow (see [`super::overflow`]) or loss too heavy for any link to carry video
//! ends tolerance at once; ten seconds without radio loss end it too. It is the mirror image of
//! the overflow detector: severe loss *with* a standing queue bounds the rate; loss without one
//! does not cut it.
//!
//! Fed with the same transport-wide feedback readings as the overflow detector, at each
//! adaptation tick, and the queue they show ([`super::queue`]; the newest packet's round trip
//! ended tolerance every few seconds on the bursty profile, at the tail of a frame's burst).
//! Pure logic: feedback and time in, a yes or no out.

use std::time::{Duration, Instant};

use str0m::bwe::RecentFeedback;

use super::overflow::QUEUE_GROWTH;

/// How long no queue must have stood before loss is tolerated. A link that
/// has just overflowed keeps losing while its queue drains, and at a low rate its buffer is a
/// few packets, so overflow can look like loss with hardly any delay for a second or two.
const CALM: Duration = Duration::from_secs(3);
/// Readings with a queue in a row that show it standing (one can be a keyframe's burst).
const STANDING: u32 = 2;
/// Average loss above which nothing is tolerated: no radio link worth sending video over loses
/// this much, a policer dropping what exceeds its rate does.
const MAX_LOSS: f32 = 0.35;
/// Weight of each new reading in the loss average (readings come every 200 ms: about a second).
const LOSS_WEIGHT: f32 = 0.2;
/// Loss in a reading without a standing queue that counts as radio loss.
const LOSS_PRESENT: f32 = 0.02;
/// How long tolerance lasts after the last such reading. Without loss it changes nothing but
/// str0m's probing (it probes as if delay-limited), which on a collapsed 300 kbit/s link kept the
/// estimate 10 % lower; a radio link's bursts come back within seconds.
const LOSS_MEMORY: Duration = Duration::from_secs(10);

/// How long a link must have shown radio loss before it counts as a radio link
/// ([`RadioLoss::radio_lossy`]).
const LOSSY_FOR: Duration = Duration::from_secs(3);

/// Per subscriber; see the module documentation.
#[derive(Debug, Clone, Default)]
pub struct RadioLoss {
    /// Readings with a queue in a row.
    grown: u32,
    /// Since when no queue has stood (`None`: one stands, or the link just overflowed).
    calm_since: Option<Instant>,
    loss: f32,
    /// The last reading with radio loss (loss, no standing queue).
    lossy_at: Option<Instant>,
    /// The first such reading after none for `LOSS_MEMORY`.
    lossy_since: Option<Instant>,
}

impl RadioLoss {
    /// One reading of the newest feedback (`None`: none yet), the queue it shows (`None`: no
    /// word on it), and whether the overflow detector bounds the link now. Returns whether loss is
    /// to be tolerated until the next reading.
    pub fn on_feedback(
        &mut self,
        now: Instant,
        feedback: Option<&RecentFeedback>,
        queue: Option<Duration>,
        overflowing: bool,
    ) -> bool {
        if overflowing {
            self.calm_since = None;
        }
        let Some(fb) = feedback else {
            return self.tolerant(now);
        };
        self.loss += (fb.loss.clamp(0.0, 1.0) - self.loss) * LOSS_WEIGHT;
        let Some(queue) = queue else {
            return self.tolerant(now);
        };
        if queue >= QUEUE_GROWTH {
            self.grown += 1;
            if self.grown >= STANDING {
                self.calm_since = None;
            }
        } else {
            self.grown = 0;
            if !overflowing && self.calm_since.is_none() {
                self.calm_since = Some(now);
            }
            if fb.loss >= LOSS_PRESENT {
                if !self.recently_lossy(now) {
                    self.lossy_since = Some(now);
                }
                self.lossy_at = Some(now);
            }
        }
        self.tolerant(now)
    }

    /// Whether the link has been losing packets with no queue standing for `LOSSY_FOR` (3 s)
    /// or more, and did within `LOSS_MEMORY` (10 s), tolerated or not: a queue that stands ends
    /// tolerance, not the radio's bursts. The overflow detector's early reading stays off while
    /// it is ([`super::OverflowDetector::on_early_feedback`]): on the bursty profile a burst read
    /// as a collapse 1.2 s after a standing queue (a larger layer) had ended tolerance. Not a
    /// single reading: a collapse's first one can show loss before the queue shows (5.7 % with
    /// 1 ms of queue); counting it kept a collapse run's early reading off, and the classroom
    /// reached the lowest layer 1.45 s after the drop.
    pub fn radio_lossy(&self, now: Instant) -> bool {
        self.recently_lossy(now)
            && self
                .lossy_since
                .is_some_and(|since| now.saturating_duration_since(since) >= LOSSY_FOR)
    }

    fn recently_lossy(&self, now: Instant) -> bool {
        self.lossy_at
            .is_some_and(|at| now.saturating_duration_since(at) < LOSS_MEMORY)
    }

    fn tolerant(&self, now: Instant) -> bool {
        let since = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t));
        self.loss <= MAX_LOSS
            && since(self.calm_since).is_some_and(|calm| calm >= CALM)
            && since(self.lossy_at).is_some_and(|ago| ago < LOSS_MEMORY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn feedback(loss: f32) -> RecentFeedback {
        RecentFeedback {
            packets: 30,
            loss,
            rtt: MS(300),
            delivered_bps: Some(500_000),
            min_transit_us: Some(150_000),
        }
    }

    /// One reading with `loss` and a queue of `queue_ms`.
    fn reading(
        d: &mut RadioLoss,
        at: Instant,
        loss: f32,
        queue_ms: u64,
        overflowing: bool,
    ) -> bool {
        d.on_feedback(at, Some(&feedback(loss)), Some(MS(queue_ms)), overflowing)
    }

    /// Readings every 200 ms from `from` for `secs` seconds; returns the last answer.
    fn readings(d: &mut RadioLoss, from: Instant, secs: u64, loss: f32, queue_ms: u64) -> bool {
        let mut tolerant = false;
        for i in 0..secs * 5 {
            tolerant = reading(d, from + MS(200 * i), loss, queue_ms, false);
        }
        tolerant
    }

    #[test]
    fn bursty_loss_at_the_floor_is_tolerated_after_a_calm_while() {
        let t0 = Instant::now();
        let mut d = RadioLoss::default();
        assert!(
            !d.on_feedback(t0, None, None, false),
            "nothing known: not tolerant"
        );
        // Bursts of 0 and 40 % loss alternating (14 % on average), no queue standing.
        let mut answers = Vec::new();
        for i in 0..50u64 {
            let loss = if i % 3 == 0 { 0.4 } else { 0.0 };
            let queue = (i % 2) * 10; // jitter well under the queue threshold
            answers.push(reading(&mut d, t0 + MS(200 * i), loss, queue, false));
        }
        let first = answers.iter().position(|t| *t).expect("tolerated at last");
        assert_eq!(
            first as u64 * 200,
            CALM.as_millis() as u64,
            "after the calm time"
        );
        assert!(answers[first..].iter().all(|t| *t), "and it stays");
    }

    #[test]
    fn a_standing_queue_ends_it_at_once_and_one_burst_does_not() {
        let t0 = Instant::now();
        let mut d = RadioLoss::default();
        assert!(readings(&mut d, t0, 4, 0.1, 0));
        let t1 = t0 + Duration::from_secs(4);
        // One reading over the floor: still tolerant.
        assert!(reading(&mut d, t1, 0.1, 40, false));
        assert!(reading(&mut d, t1 + MS(200), 0.1, 0, false));
        // Two in a row: a queue stands, congestion; the calm time starts again after it.
        assert!(reading(&mut d, t1 + MS(400), 0.1, 40, false));
        assert!(!reading(&mut d, t1 + MS(600), 0.1, 50, false));
        assert!(!readings(&mut d, t1 + MS(800), 2, 0.1, 0));
        assert!(readings(&mut d, t1 + MS(2800), 2, 0.1, 0));
    }

    #[test]
    fn an_overflow_or_heavy_loss_is_never_tolerated() {
        let t0 = Instant::now();
        let mut d = RadioLoss::default();
        assert!(readings(&mut d, t0, 4, 0.05, 0));
        // The overflow detector bounds the link: off, and the calm time restarts after it.
        let t1 = t0 + Duration::from_secs(4);
        assert!(!reading(&mut d, t1, 0.3, 5, true));
        assert!(!d.on_feedback(t1 + MS(200), None, None, true));
        assert!(!readings(&mut d, t1 + MS(400), 2, 0.05, 0));
        assert!(readings(&mut d, t1 + MS(2400), 2, 0.05, 0));
        // Half the packets lost at the floor (a policer): the average climbs past the limit.
        let t2 = t1 + MS(4400);
        assert!(!readings(&mut d, t2, 2, 0.5, 0));
    }

    #[test]
    fn without_loss_or_with_a_queue_there_is_nothing_to_tolerate() {
        let t0 = Instant::now();
        let mut d = RadioLoss::default();
        assert!(!readings(&mut d, t0, 5, 0.0, 0), "a clean link");
        // Loss that comes with a standing queue is congestion, not radio loss.
        let t1 = t0 + Duration::from_secs(5);
        assert!(!readings(&mut d, t1, 2, 0.1, 50));
        // Radio loss once, then a clean link: tolerated for a while, then not.
        let t2 = t1 + Duration::from_secs(2);
        assert!(!readings(&mut d, t2, 3, 0.0, 0), "the calm time first");
        let t3 = t2 + Duration::from_secs(3);
        assert!(reading(&mut d, t3, 0.1, 0, false));
        assert!(readings(&mut d, t3 + MS(200), 9, 0.0, 0));
        assert!(!reading(&mut d, t3 + LOSS_MEMORY, 0.0, 0, false));
    }

    #[test]
    fn radio_loss_is_remembered_through_a_standing_queue() {
        let t0 = Instant::now();
        let mut d = RadioLoss::default();
        assert!(!d.radio_lossy(t0));
        // One lossy reading is not a radio link: a collapse can start so.
        reading(&mut d, t0, 0.06, 1, false);
        assert!(!d.radio_lossy(t0 + MS(200)));
        readings(&mut d, t0 + MS(200), 4, 0.14, 2);
        let t1 = t0 + MS(4200);
        assert!(d.radio_lossy(t1));
        // A larger layer fills the link: a queue stands, tolerance ends, the radio is the same.
        reading(&mut d, t1, 0.06, 35, false);
        assert!(!reading(&mut d, t1 + MS(200), 0.06, 40, false));
        assert!(d.radio_lossy(t1 + MS(200)));
        // Ten seconds with no loss outside a queue forget it.
        assert!(!d.radio_lossy(t1 + LOSS_MEMORY));
    }
}
