//! Sans-IO model of one direction of a link: packets and the current time go
//! in, packets come out at their release times. Never reads the clock.
//!
//! Path of a packet: bottleneck queue (drop-tail) → serialization at the
//! scheduled rate → loss on the wire → propagation delay plus jitter.
//! Lost packets still use link time, as on a radio link that corrupts frames
//! after sending them.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use super::config::{ConfigError, LinkConfig};
use super::jitter::JitterProcess;
use super::loss::LossProcess;

/// What happened to a packet handed to [`LinkModel::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Will come out of [`LinkModel::pop_ready`] at this time.
    Scheduled(Instant),
    /// Bottleneck queue full.
    QueueDrop,
    /// Lost on the wire.
    Lost,
}

/// Counters for one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub queue_drops: u64,
    pub lost: u64,
    pub delivered: u64,
    pub bytes_delivered: u64,
    /// Highest bottleneck occupancy seen, bytes.
    pub max_queue_bytes: usize,
}

struct Pending<P> {
    release: Instant,
    seq: u64,
    size: usize,
    packet: P,
}

impl<P> PartialEq for Pending<P> {
    fn eq(&self, other: &Self) -> bool {
        (self.release, self.seq) == (other.release, other.seq)
    }
}
impl<P> Eq for Pending<P> {}
impl<P> PartialOrd for Pending<P> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<P> Ord for Pending<P> {
    // Reversed so the max-heap yields the earliest release (then arrival) first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.release, other.seq).cmp(&(self.release, self.seq))
    }
}

/// One direction of an emulated link.
pub struct LinkModel<P> {
    cfg: LinkConfig,
    start: Instant,
    loss: LossProcess,
    jitter: JitterProcess,
    /// When the bottleneck finishes the last accepted packet (since start).
    link_free: Duration,
    /// Serialization finish time and size of every packet still in the bottleneck.
    queue: VecDeque<(Duration, usize)>,
    queued_bytes: usize,
    last_release: Option<Instant>,
    in_flight: BinaryHeap<Pending<P>>,
    seq: u64,
    stats: LinkStats,
}

impl<P> LinkModel<P> {
    /// A link whose rate schedule counts from `start`.
    pub fn new(cfg: LinkConfig, start: Instant) -> Result<Self, ConfigError> {
        cfg.validate()?;
        // Separate streams so, e.g., adding jitter does not change the loss trace.
        let loss = LossProcess::new(cfg.loss, cfg.gilbert, cfg.seed);
        let jitter = JitterProcess::new(cfg.jitter, cfg.reorder, cfg.seed ^ 0x6A09_E667_F3BC_C908);
        Ok(Self {
            cfg,
            start,
            loss,
            jitter,
            link_free: Duration::ZERO,
            queue: VecDeque::new(),
            queued_bytes: 0,
            last_release: None,
            in_flight: BinaryHeap::new(),
            seq: 0,
            stats: LinkStats::default(),
        })
    }

    pub fn config(&self) -> &LinkConfig {
        &self.cfg
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Bytes in the bottleneck (waiting or being serialized) at `now`.
    pub fn queued_bytes(&mut self, now: Instant) -> usize {
        self.drain_queue(self.offset(now));
        self.queued_bytes
    }

    fn offset(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.start)
    }

    fn drain_queue(&mut self, t: Duration) {
        while let Some(&(finish, size)) = self.queue.front() {
            if finish > t {
                break;
            }
            self.queue.pop_front();
            self.queued_bytes -= size;
        }
    }

    /// Offers a packet of `size` bytes (IP length) arriving at `now`.
    pub fn push(&mut self, now: Instant, size: usize, packet: P) -> Verdict {
        let t = self.offset(now);
        self.stats.packets_in += 1;
        self.stats.bytes_in += size as u64;
        self.drain_queue(t);

        let limit = self.cfg.queue.bytes_at(self.cfg.rate.rate_at(t));
        // A packet always fits an empty queue, so a tiny limit still passes traffic.
        if !self.queue.is_empty() && self.queued_bytes + size > limit {
            self.stats.queue_drops += 1;
            return Verdict::QueueDrop;
        }
        let begin = self.link_free.max(t);
        let Some(finish) = self.cfg.rate.finish(begin, size as u64 * 8) else {
            // The schedule never sends again: the packet would wait for ever.
            self.stats.queue_drops += 1;
            return Verdict::QueueDrop;
        };
        self.link_free = finish;
        if finish > t {
            self.queue.push_back((finish, size));
            self.queued_bytes += size;
            self.stats.max_queue_bytes = self.stats.max_queue_bytes.max(self.queued_bytes);
        }

        if self.loss.lose() {
            self.stats.lost += 1;
            return Verdict::Lost;
        }

        let jitter = self.jitter.sample(finish.as_secs_f64());
        let delay = (self.cfg.delay.as_secs_f64() + jitter).max(0.0);
        let mut release = self.start + finish + Duration::from_secs_f64(delay);
        if !self.cfg.reorder {
            // Guards against float rounding in the jitter path: strictly FIFO.
            if let Some(last) = self.last_release {
                release = release.max(last);
            }
            self.last_release = Some(release);
        }
        self.seq += 1;
        self.in_flight.push(Pending {
            release,
            seq: self.seq,
            size,
            packet,
        });
        Verdict::Scheduled(release)
    }

    /// Release time of the next packet, if any is in flight.
    pub fn next_release(&self) -> Option<Instant> {
        self.in_flight.peek().map(|p| p.release)
    }

    /// Takes the next packet whose release time is at or before `now`.
    pub fn pop_ready(&mut self, now: Instant) -> Option<P> {
        if self.in_flight.peek()?.release > now {
            return None;
        }
        let p = self.in_flight.pop()?;
        self.stats.delivered += 1;
        self.stats.bytes_delivered += p.size as u64;
        Some(p.packet)
    }

    /// Packets scheduled but not yet released.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linkem::config::{GilbertElliott, QueueLimit};
    use crate::linkem::schedule::{RateSchedule, RateStep};

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    struct Out {
        /// (packet id, arrival offset, release offset) of delivered packets, in output order.
        delivered: Vec<(usize, Duration, Duration)>,
        verdicts: Vec<Verdict>,
    }

    /// Feeds packets `(arrival offset, size)` in order, then collects every release.
    fn simulate(cfg: LinkConfig, arrivals: &[(Duration, usize)]) -> Out {
        let t0 = Instant::now();
        let mut m = LinkModel::new(cfg, t0).unwrap();
        let verdicts: Vec<Verdict> = arrivals
            .iter()
            .enumerate()
            .map(|(id, &(at, size))| m.push(t0 + at, size, id))
            .collect();
        let mut delivered = Vec::new();
        while let Some(id) = m.pop_ready(t0 + Duration::from_secs(1_000_000)) {
            let Verdict::Scheduled(rel) = verdicts[id] else {
                panic!("packet {id} delivered after {:?}", verdicts[id]);
            };
            delivered.push((id, arrivals[id].0, rel - t0));
        }
        Out {
            delivered,
            verdicts,
        }
    }

    /// Evenly spaced packets: `rate_bps` offered with `size`-byte packets for `secs`.
    fn cbr(rate_bps: u64, size: usize, secs: f64) -> Vec<(Duration, usize)> {
        let gap = size as f64 * 8.0 / rate_bps as f64;
        let n = (secs / gap) as usize;
        (0..n)
            .map(|i| (Duration::from_secs_f64(i as f64 * gap), size))
            .collect()
    }

    /// Bits per second released in `[from, to)`.
    fn out_rate(out: &Out, size: usize, from: f64, to: f64) -> f64 {
        let n = out
            .delivered
            .iter()
            .filter(|(_, _, r)| (from..to).contains(&r.as_secs_f64()))
            .count();
        n as f64 * size as f64 * 8.0 / (to - from)
    }

    fn within(measured: f64, setting: f64, rel: f64) -> bool {
        (measured - setting).abs() <= rel * setting
    }

    #[test]
    fn fixed_delay_is_exact() {
        let cfg = LinkConfig {
            delay: ms(30),
            ..Default::default()
        };
        let arrivals = cbr(1_000_000, 1000, 1.0);
        let out = simulate(cfg, &arrivals);
        assert_eq!(out.delivered.len(), arrivals.len());
        for (_, at, rel) in &out.delivered {
            assert_eq!(*rel - *at, ms(30));
        }
    }

    #[test]
    fn jitter_keeps_mean_bounds_and_fifo() {
        let cfg = LinkConfig {
            delay: ms(30),
            jitter: ms(10),
            ..Default::default()
        };
        // Dense traffic (1 packet/ms) would expose any FIFO clamping bias.
        let out = simulate(cfg, &cbr(8_000_000, 1000, 20.0));
        let delays: Vec<f64> = out
            .delivered
            .iter()
            .map(|(_, at, rel)| (*rel - *at).as_secs_f64())
            .collect();
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        assert!(within(mean, 0.030, 0.10), "mean {mean}");
        let min = delays.iter().cloned().fold(f64::MAX, f64::min);
        let max = delays.iter().cloned().fold(f64::MIN, f64::max);
        assert!(min >= 0.020 - 1e-6 && max <= 0.040 + 1e-6, "{min}..{max}");
        assert!(max - min > 0.015, "jitter too small: {min}..{max}");
        assert!(
            out.delivered.windows(2).all(|w| w[0].0 < w[1].0),
            "reordered"
        );
    }

    #[test]
    fn reorder_mode_reorders() {
        let cfg = LinkConfig {
            delay: ms(30),
            jitter: ms(10),
            reorder: true,
            ..Default::default()
        };
        let out = simulate(cfg, &cbr(8_000_000, 1000, 1.0));
        assert!(out.delivered.windows(2).any(|w| w[0].0 > w[1].0));
    }

    #[test]
    fn random_loss_within_ten_percent() {
        let cfg = LinkConfig {
            loss: 0.10,
            seed: 11,
            ..Default::default()
        };
        let arrivals = cbr(1_000_000, 100, 40.0); // 50 000 packets
        let out = simulate(cfg, &arrivals);
        let lost = out.verdicts.iter().filter(|v| **v == Verdict::Lost).count();
        let measured = lost as f64 / arrivals.len() as f64;
        assert!(within(measured, 0.10, 0.10), "loss {measured}");
        assert_eq!(out.delivered.len() + lost, arrivals.len());
    }

    #[test]
    fn gilbert_elliott_converges_to_stationary_loss() {
        let ge = GilbertElliott {
            p_gb: 0.05,
            p_bg: 0.3,
            loss_bad: 0.9,
            loss_good: 0.01,
        };
        let cfg = LinkConfig {
            gilbert: Some(ge),
            seed: 5,
            ..Default::default()
        };
        let expected = cfg.expected_loss();
        let arrivals = cbr(8_000_000, 100, 20.0); // 200 000 packets
        let out = simulate(cfg, &arrivals);
        let measured = 1.0 - out.delivered.len() as f64 / arrivals.len() as f64;
        assert!(within(measured, expected, 0.05), "{measured} vs {expected}");
    }

    #[test]
    fn rate_cap_within_ten_percent() {
        let cfg = LinkConfig {
            rate: RateSchedule::constant(Some(500_000)),
            ..Default::default()
        };
        // Offer twice the cap.
        let out = simulate(cfg, &cbr(1_000_000, 1000, 10.0));
        let r = out_rate(&out, 1000, 1.0, 9.0);
        assert!(within(r, 500_000.0, 0.10), "rate {r}");
        assert!(out.verdicts.contains(&Verdict::QueueDrop));
    }

    #[test]
    fn under_the_cap_nothing_is_dropped_and_spacing_is_serialization() {
        let cfg = LinkConfig {
            rate: RateSchedule::constant(Some(1_000_000)),
            ..Default::default()
        };
        // Back-to-back burst of 5 packets at t=0: 8 ms apart on the way out.
        let burst: Vec<_> = (0..5).map(|_| (Duration::ZERO, 1000)).collect();
        let out = simulate(cfg, &burst);
        let rel: Vec<Duration> = out.delivered.iter().map(|d| d.2).collect();
        assert_eq!(rel, vec![ms(8), ms(16), ms(24), ms(32), ms(40)]);
    }

    #[test]
    fn schedule_changes_take_effect_on_time() {
        let cfg = LinkConfig {
            delay: ms(30),
            rate: RateSchedule::new(vec![
                RateStep {
                    at: ms(0),
                    bps: Some(2_000_000),
                },
                RateStep {
                    at: ms(20_000),
                    bps: Some(300_000),
                },
                RateStep {
                    at: ms(50_000),
                    bps: Some(2_000_000),
                },
            ])
            .unwrap(),
            ..Default::default()
        };
        let out = simulate(cfg, &cbr(3_000_000, 1000, 70.0));
        // Whole windows well inside each phase (releases lag by 30 ms + queue).
        for (from, to, setting) in [(2.0, 19.5, 2e6), (21.0, 49.5, 3e5), (52.0, 69.5, 2e6)] {
            let r = out_rate(&out, 1000, from, to);
            assert!(within(r, setting, 0.10), "{from}-{to}: {r} vs {setting}");
        }
        // Right at the change: the spacing of released packets switches from
        // 4 ms (2 Mbit/s) to 26.7 ms (300 kbit/s) within one packet of t=20 s + delay.
        let gaps: Vec<(f64, f64)> = out
            .delivered
            .windows(2)
            .map(|w| (w[1].2.as_secs_f64(), (w[1].2 - w[0].2).as_secs_f64()))
            .collect();
        let first_slow = gaps.iter().find(|(_, g)| *g > 0.010).unwrap().0;
        assert!(
            (20.030..20.030 + 0.027).contains(&first_slow),
            "slow from {first_slow}"
        );
        let first_fast_again = gaps
            .iter()
            .find(|(t, g)| *t > 21.0 && *g < 0.010)
            .unwrap()
            .0;
        assert!(
            (50.030..50.030 + 0.027).contains(&first_fast_again),
            "fast from {first_fast_again}"
        );
    }

    #[test]
    fn queue_is_bounded_by_time_and_bytes() {
        for (queue, limit) in [
            (QueueLimit::Delay(ms(100)), 6_250),
            (QueueLimit::Bytes(20_000), 20_000),
        ] {
            let cfg = LinkConfig {
                rate: RateSchedule::constant(Some(500_000)),
                queue,
                ..Default::default()
            };
            let t0 = Instant::now();
            let mut m = LinkModel::<()>::new(cfg, t0).unwrap();
            // 4x overload for 5 s with 500-byte packets.
            for (at, size) in cbr(2_000_000, 500, 5.0) {
                let now = t0 + at;
                let v = m.push(now, size, ());
                assert!(m.queued_bytes(now) <= limit, "{queue:?}");
                if let Verdict::Scheduled(rel) = v {
                    // Queueing + serialization delay is bounded by the limit.
                    let wait = (rel - now).as_secs_f64();
                    assert!(
                        wait <= limit as f64 * 8.0 / 500_000.0 + 1e-6,
                        "{queue:?} {wait}"
                    );
                }
                while m.pop_ready(now).is_some() {}
            }
            let s = m.stats();
            assert!(s.max_queue_bytes > limit - 1000 && s.max_queue_bytes <= limit);
            assert!(s.queue_drops > s.packets_in / 2, "{s:?}");
        }
    }

    #[test]
    fn same_seed_same_trace() {
        let cfg = LinkConfig {
            delay: ms(20),
            jitter: ms(5),
            loss: 0.05,
            seed: 77,
            ..Default::default()
        };
        let arr = cbr(1_000_000, 500, 2.0);
        let a = simulate(cfg.clone(), &arr);
        let b = simulate(cfg.clone(), &arr);
        let c = simulate(LinkConfig { seed: 78, ..cfg }, &arr);
        assert_eq!(a.delivered, b.delivered);
        assert_ne!(a.delivered, c.delivered);
    }

    #[test]
    fn invalid_config_is_an_error() {
        let bad = LinkConfig {
            loss: 1.5,
            ..Default::default()
        };
        assert!(matches!(
            LinkModel::<()>::new(bad, Instant::now()),
            Err(ConfigError::Probability { .. })
        ));
        let nan = LinkConfig {
            loss: f64::NAN,
            ..Default::default()
        };
        assert!(LinkModel::<()>::new(nan, Instant::now()).is_err());
    }
}
