//! Collapse detection: when a village link's capacity drops under a full queue, most of what is
//! sent is dropped at once, seconds before a delay-based estimate has fallen. Severe loss *while
//! the round trip grows over its floor* means the queue overflows (congestion), and what got
//! through, `sent × (1 − loss)`, is then the best measure of the link. Severe loss at the usual
//! round trip is radio loss, not congestion: it is left to the estimator (cutting the rate would
//! not reduce it). Pure logic: stats and time in, a bound out.

use std::time::{Duration, Instant};

/// Loss above which an interval may be an overflow.
pub const SEVERE_LOSS: f32 = 0.2;
/// Round-trip growth over the floor that shows a standing queue.
pub const QUEUE_GROWTH: Duration = Duration::from_millis(30);
/// Intervals shorter than this are too noisy to measure a rate over.
const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// Per subscriber; fed with each peer-stats report (twice a second).
#[derive(Debug, Clone, Default)]
pub struct OverflowDetector {
    last: Option<(Instant, u64)>,
    min_rtt: Option<Duration>,
    cap_bps: Option<u64>,
}

impl OverflowDetector {
    /// One stats report: total bytes sent to the peer so far, loss fraction and round trip of
    /// the last interval.
    pub fn on_stats(
        &mut self,
        at: Instant,
        sent_total: u64,
        loss: Option<f32>,
        rtt: Option<Duration>,
    ) {
        let previous = self.last.replace((at, sent_total));
        if let Some(rtt) = rtt {
            self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        }
        self.cap_bps = None;
        let Some((then, sent_then)) = previous else {
            return;
        };
        let interval = at.saturating_duration_since(then);
        let severe = loss.filter(|l| *l > SEVERE_LOSS);
        let queueing = match (rtt, self.min_rtt) {
            (Some(rtt), Some(floor)) => rtt >= floor + QUEUE_GROWTH,
            _ => false,
        };
        if let (Some(loss), true) = (severe, queueing && interval >= MIN_INTERVAL) {
            let sent_bps =
                sent_total.saturating_sub(sent_then) as f64 * 8.0 / interval.as_secs_f64();
            self.cap_bps = Some((sent_bps * f64::from(1.0 - loss)) as u64);
        }
    }

    /// What the link carried during the last interval, if it overflowed; the allocation must
    /// not exceed it until the next report.
    pub fn cap_bps(&self) -> Option<u64> {
        self.cap_bps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn an_overflowing_queue_bounds_the_rate_at_what_got_through() {
        let t0 = Instant::now();
        let mut d = OverflowDetector::default();
        d.on_stats(t0, 0, Some(0.0), Some(MS(60)));
        assert_eq!(
            d.cap_bps(),
            None,
            "the first report only starts the interval"
        );
        // 1.3 Mbit/s sent into a 300 kbit/s link: 77 % lost, the queue adds 100 ms.
        d.on_stats(t0 + MS(1000), 162_500, Some(0.77), Some(MS(160)));
        let cap = d.cap_bps().expect("overflow");
        assert!((290_000..=310_000).contains(&cap), "{cap}");
        // The next clean report lifts the bound.
        d.on_stats(t0 + MS(2000), 200_000, Some(0.0), Some(MS(160)));
        assert_eq!(d.cap_bps(), None);
    }

    #[test]
    fn radio_loss_at_the_usual_round_trip_is_left_to_the_estimator() {
        let t0 = Instant::now();
        let mut d = OverflowDetector::default();
        d.on_stats(t0, 0, None, Some(MS(300)));
        // 30 % bursty loss, round trip unchanged.
        d.on_stats(t0 + MS(1000), 125_000, Some(0.3), Some(MS(305)));
        assert_eq!(d.cap_bps(), None);
        // Without a round trip there is no evidence of a queue either.
        d.on_stats(t0 + MS(2000), 250_000, Some(0.3), None);
        assert_eq!(d.cap_bps(), None);
        // Mild loss with a growing queue is the estimator's business too.
        d.on_stats(t0 + MS(3000), 375_000, Some(0.1), Some(MS(400)));
        assert_eq!(d.cap_bps(), None);
    }
}
