//! How long a subscriber link's bottleneck queue holds packets now: the least transit time (send
//! to arrival) of the packets sent in the newest half of a feedback window (150 ms), over the
//! least ever seen. A queue that stood through that time delayed every packet in it; a burst (a
//! frame's packets, six of them are 58 ms at 1 Mbit/s) delays only its tail, and the least
//! transit ignores it (CoDel's idea). The newest packet's round trip cannot tell the two apart.
//! Over the whole 300 ms window it saw a collapsing link's queue a second late.
//!
//! Transit times come from transport-wide feedback (the receiver's arrival clock against ours),
//! so they carry the clocks' offset, which cancels out, and their drift, which the floor follows
//! slowly. Pure logic: readings in, a duration out.

use std::time::Duration;

use str0m::bwe::RecentFeedback;

/// How far the floor follows each reading above it. The two ends' clocks drift apart by up to
/// about 0.1 ms a second; a standing queue is tens of milliseconds at once. At one reading every
/// 200 ms, a 100 ms standing queue lifts the floor by 1 ms a second.
const FLOOR_RISE: f64 = 0.002;

/// Per subscriber; fed with each feedback reading.
#[derive(Debug, Clone, Default)]
pub struct QueueGauge {
    /// The least transit seen (µs, clock offset included).
    floor_us: Option<f64>,
}

impl QueueGauge {
    /// The queueing delay this reading shows; `None` when none of its packets arrived (no word
    /// on the queue).
    pub fn on_feedback(&mut self, feedback: &RecentFeedback) -> Option<Duration> {
        let transit = feedback.min_transit_us? as f64;
        let floor = match self.floor_us {
            Some(floor) if transit > floor => floor + (transit - floor) * FLOOR_RISE,
            _ => transit,
        };
        self.floor_us = Some(floor);
        Some(Duration::from_micros((transit - floor).max(0.0) as u64))
    }

    /// The queueing delay a reading between the regular ones shows, against the floor as it
    /// stands: the floor's slow rise is paced by the regular readings alone. `None` without a
    /// floor yet, or when none of its packets arrived.
    pub fn peek(&self, feedback: &RecentFeedback) -> Option<Duration> {
        let transit = feedback.min_transit_us? as f64;
        let floor = self.floor_us?;
        Some(Duration::from_micros((transit - floor).max(0.0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(transit_ms: i64) -> RecentFeedback {
        RecentFeedback {
            packets: 20,
            loss: 0.0,
            rtt: Duration::from_millis(100),
            delivered_bps: None,
            // A clock offset that makes transit negative must not matter.
            min_transit_us: Some(-9_000_000 + transit_ms * 1000),
        }
    }

    #[test]
    fn queue_is_transit_over_the_floor_which_drifts_up_slowly() {
        let mut q = QueueGauge::default();
        assert_eq!(q.on_feedback(&reading(50)), Some(Duration::ZERO));
        assert_eq!(
            q.on_feedback(&reading(40)),
            Some(Duration::ZERO),
            "a new floor"
        );
        let queued = q.on_feedback(&reading(140)).expect("a queue");
        assert!(queued > Duration::from_millis(99) && queued <= Duration::from_millis(100));
        // Fifty readings (10 s) of a standing 100 ms queue move the floor by about 10 ms.
        let mut last = Duration::ZERO;
        for _ in 0..50 {
            last = q.on_feedback(&reading(140)).expect("a queue");
        }
        assert!(last > Duration::from_millis(88) && last < Duration::from_millis(95));
        let nothing = RecentFeedback {
            min_transit_us: None,
            ..reading(0)
        };
        assert_eq!(q.on_feedback(&nothing), None);
        assert_eq!(q.peek(&nothing), None);
    }

    #[test]
    fn a_peek_reads_the_queue_without_moving_the_floor() {
        let mut q = QueueGauge::default();
        assert_eq!(q.peek(&reading(50)), None, "no floor yet");
        q.on_feedback(&reading(50));
        for _ in 0..100 {
            assert_eq!(q.peek(&reading(150)), Some(Duration::from_millis(100)));
        }
        assert_eq!(q.peek(&reading(30)), Some(Duration::ZERO));
        // Had the peek at 30 ms lowered the floor, this would show a 20 ms queue.
        assert_eq!(q.on_feedback(&reading(50)), Some(Duration::ZERO));
    }
}
