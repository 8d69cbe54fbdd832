//! Per-layer bitrates of a publisher's simulcast layers, measured from the frames it sends.
//!
//! Each layer keeps a ring of time buckets spanning the window (fixed size: nothing is allocated per
//! frame). The rate is the bytes after the window's first frame over the time from that frame to the
//! last one, which is exact for a steady stream whatever the frame rate or where the window falls.

use std::time::{Duration, Instant};

use super::{LayerBitrate, Tuning};

/// Simulcast layers measured per track (q/h/f); frames of higher layers are ignored.
pub const MAX_LAYERS: usize = 3;

/// Buckets per window: 100 ms each for the default 1 s window.
const BUCKETS: usize = 10;

/// Measured bitrates of one publisher track's simulcast layers.
#[derive(Debug, Clone)]
pub struct LayerRates {
    bucket_us: u64,
    window_us: u64,
    stale_after: Duration,
    epoch: Option<Instant>,
    layers: [LayerMeter; MAX_LAYERS],
}

#[derive(Debug, Clone, Default)]
struct LayerMeter {
    all: Meter,
    /// Temporal layer 0 alone; frames without a temporal index count here.
    tl0: Meter,
    /// Temporal layers 0 and 1 (half the frame rate of three temporal layers).
    tl1: Meter,
    /// Frame ends (one unit per frame, no bytes): the layer's frame rate.
    frames: Meter,
    last_seen: Option<Instant>,
}

#[derive(Debug, Clone, Default)]
struct Meter {
    buckets: [Bucket; BUCKETS],
}

/// What one time slot saw; `units == 0` means empty.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    slot: u64,
    units: u32,
    bytes: u64,
    first_us: u64,
    first_bytes: u64,
    last_us: u64,
}

impl LayerRates {
    /// A meter with `tuning.rate_window` and `tuning.layer_stale_after`.
    pub fn new(tuning: &Tuning) -> Self {
        let window_us = (tuning.rate_window.as_micros() as u64).max(BUCKETS as u64);
        Self {
            bucket_us: window_us / BUCKETS as u64,
            window_us,
            stale_after: tuning.layer_stale_after,
            epoch: None,
            layers: Default::default(),
        }
    }

    /// Count a frame (or a packet) of `bytes` on `layer`. Call once per frame with its total size for
    /// exact rates; per packet is within a few percent.
    pub fn on_media(&mut self, now: Instant, layer: u8, temporal: Option<u8>, bytes: usize) {
        let at_us = self.micros(now);
        let slot = at_us / self.bucket_us;
        let Some(meter) = self.layers.get_mut(layer as usize) else {
            return;
        };
        meter.all.add(slot, at_us, bytes as u64);
        let temporal = temporal.unwrap_or(0);
        if temporal == 0 {
            meter.tl0.add(slot, at_us, bytes as u64);
        }
        if temporal <= 1 {
            meter.tl1.add(slot, at_us, bytes as u64);
        }
        meter.last_seen = Some(now);
    }

    /// Count the end of a frame on `layer` (the packet with the RTP marker bit).
    pub fn on_frame_end(&mut self, now: Instant, layer: u8) {
        let at_us = self.micros(now);
        let slot = at_us / self.bucket_us;
        if let Some(meter) = self.layers.get_mut(layer as usize) {
            meter.frames.add(slot, at_us, 0);
        }
    }

    /// Microseconds from the first count to `now` (the first count sets the epoch).
    fn micros(&mut self, now: Instant) -> u64 {
        now.saturating_duration_since(*self.epoch.get_or_insert(now))
            .as_micros() as u64
    }

    /// The bucket `now` falls in, once anything was counted.
    fn slot(&self, now: Instant) -> Option<u64> {
        Some(now.saturating_duration_since(self.epoch?).as_micros() as u64 / self.bucket_us)
    }

    /// Frames per second `layer` sent over the window, or `None` when it ended no frame in it.
    pub fn frame_rate(&self, now: Instant, layer: u8) -> Option<f64> {
        let meter = self.layers.get(layer as usize)?;
        let now_slot = self.slot(now)?;
        meter
            .frames
            .window(now_slot)
            .per_second(self.bucket_us, self.window_us)
    }

    /// Whether `layer` runs at under `ratio` of the lowest layer's frame rate. Simulcast layers
    /// share one camera, so a higher layer that sends fewer frames is one its encoder starves:
    /// Chromium's VP8 at 1 Mbit/s drops two frames in three of a detailed 720p picture, and the
    /// ones it keeps come in bursts with gaps of 200–600 ms. The lowest layer is never choppy.
    pub fn choppy(&self, now: Instant, layer: u8, ratio: f64) -> bool {
        if layer == 0 || ratio <= 0.0 {
            return false;
        }
        match (self.frame_rate(now, 0), self.frame_rate(now, layer)) {
            (Some(lowest), Some(this)) => this < lowest * ratio,
            _ => false,
        }
    }

    /// The bitrate of `layer`, or `None` when it has sent nothing for `layer_stale_after`.
    pub fn layer(&self, now: Instant, layer: u8) -> Option<LayerBitrate> {
        let meter = self.layers.get(layer as usize)?;
        let last_seen = meter.last_seen?;
        if now.saturating_duration_since(last_seen) > self.stale_after {
            return None;
        }
        let now_slot = self.slot(now)?; // the epoch is set together with last_seen
        let all = meter.all.window(now_slot);
        let tl0 = meter.tl0.window(now_slot);
        // A layer still counts between the frames of a slow screen share, at what it last measured
        // (nothing): the allocator's floor prices it.
        let bps = all.bps(self.bucket_us, self.window_us).unwrap_or(0);
        let has_upper_temporal = all.bytes > tl0.bytes;
        let tl0_bps =
            has_upper_temporal.then(|| tl0.bps(self.bucket_us, self.window_us).unwrap_or(0));
        let tl1 = meter.tl1.window(now_slot);
        // Only a middle step when there is a layer above it and one below it.
        let tl1_bps = (all.bytes > tl1.bytes && tl1.bytes > tl0.bytes)
            .then(|| tl1.bps(self.bucket_us, self.window_us).unwrap_or(0));
        Some(LayerBitrate {
            layer,
            bps,
            tl0_bps,
            tl1_bps,
        })
    }

    /// Every available layer, ascending (the allocator takes them through
    /// `Dynacast::offered`, which also prices layers switched off).
    #[cfg(test)]
    pub fn bitrates(&self, now: Instant) -> Vec<LayerBitrate> {
        (0..MAX_LAYERS as u8)
            .filter_map(|layer| self.layer(now, layer))
            .collect()
    }
}

/// Sums over the buckets inside the window.
#[derive(Debug, Default)]
struct WindowSum {
    units: u32,
    bytes: u64,
    first_us: u64,
    first_bytes: u64,
    last_us: u64,
}

impl WindowSum {
    /// Units per second: between the first and the last unit when they span a bucket, else
    /// spread over the window.
    fn per_second(&self, bucket_us: u64, window_us: u64) -> Option<f64> {
        if self.units == 0 {
            return None;
        }
        let span_us = self.last_us - self.first_us;
        Some(if self.units >= 2 && span_us >= bucket_us {
            f64::from(self.units - 1) * 1e6 / span_us as f64
        } else {
            f64::from(self.units) * 1e6 / window_us as f64
        })
    }

    fn bps(&self, bucket_us: u64, window_us: u64) -> Option<u64> {
        if self.units == 0 {
            return None;
        }
        let span_us = self.last_us - self.first_us;
        if self.units >= 2 && span_us >= bucket_us {
            Some((self.bytes - self.first_bytes) * 8 * 1_000_000 / span_us)
        } else {
            // Too few frames to time (stream start, very low frame rate): spread them over the window.
            Some(self.bytes * 8 * 1_000_000 / window_us)
        }
    }
}

impl Meter {
    fn add(&mut self, slot: u64, at_us: u64, bytes: u64) {
        let bucket = &mut self.buckets[(slot % BUCKETS as u64) as usize];
        if bucket.slot != slot || bucket.units == 0 {
            *bucket = Bucket {
                slot,
                units: 0,
                bytes: 0,
                first_us: at_us,
                first_bytes: bytes,
                last_us: at_us,
            };
        }
        bucket.units += 1;
        bucket.bytes += bytes;
        bucket.last_us = at_us;
    }

    /// Buckets in slots `(now_slot - BUCKETS, now_slot]`.
    fn window(&self, now_slot: u64) -> WindowSum {
        let mut sum = WindowSum {
            first_us: u64::MAX,
            ..WindowSum::default()
        };
        let in_window =
            |b: &&Bucket| b.units > 0 && b.slot <= now_slot && b.slot + BUCKETS as u64 > now_slot;
        for bucket in self.buckets.iter().filter(in_window) {
            sum.units += bucket.units;
            sum.bytes += bucket.bytes;
            if bucket.first_us < sum.first_us {
                sum.first_us = bucket.first_us;
                sum.first_bytes = bucket.first_bytes;
            }
            sum.last_us = sum.last_us.max(bucket.last_us);
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frame sizes cycle through these factors of the mean (mean exactly 1.0 over a cycle): a steady
    /// encoder between keyframes. A window holds a partial cycle, which alone is worth up to ~1 %.
    const SIZE_PATTERN: [f64; 5] = [0.9, 1.1, 1.0, 0.95, 1.05];
    /// VP8 three-layer temporal pattern; TL0 frames are twice the size of the others.
    const TL_PATTERN: [u8; 4] = [0, 2, 1, 2];

    struct Stream {
        layer: u8,
        fps: u32,
        bps: u64,
        temporal: bool,
    }

    impl Stream {
        fn frame_interval(&self) -> Duration {
            Duration::from_secs(1) / self.fps
        }

        /// Size and temporal index of frame `n`, so that the long-run rate is `bps`.
        fn frame(&self, n: usize) -> (usize, Option<u8>) {
            let mean = self.bps as f64 / 8.0 / self.fps as f64;
            let size = mean * SIZE_PATTERN[n % SIZE_PATTERN.len()];
            if !self.temporal {
                return (size as usize, None);
            }
            let tl = TL_PATTERN[n % TL_PATTERN.len()];
            // Weights 2,1,1,1 average 1.25 over the pattern.
            let weight = if tl == 0 { 2.0 } else { 1.0 } / 1.25;
            ((size * weight) as usize, Some(tl))
        }

        /// Expected TL0 rate: TL0 frames are 1 in 4 at weight 2/1.25 of the mean.
        fn tl0_bps(&self) -> f64 {
            self.bps as f64 * 0.25 * 2.0 / 1.25
        }

        /// Expected TL0+TL1 rate: TL1 frames add 1 in 4 at weight 1/1.25.
        fn tl1_bps(&self) -> f64 {
            self.tl0_bps() + self.bps as f64 * 0.25 / 1.25
        }
    }

    /// Feed `streams` from `start` for `duration`, in timestamp order.
    fn feed(rates: &mut LayerRates, start: Instant, duration: Duration, streams: &[Stream]) {
        let mut events: Vec<(Duration, usize, usize)> = Vec::new();
        for (i, s) in streams.iter().enumerate() {
            let mut n = 0;
            while s.frame_interval() * n as u32 <= duration {
                events.push((s.frame_interval() * n as u32, i, n));
                n += 1;
            }
        }
        events.sort();
        for (offset, i, n) in events {
            let (bytes, temporal) = streams[i].frame(n);
            rates.on_media(start + offset, streams[i].layer, temporal, bytes);
            rates.on_frame_end(start + offset, streams[i].layer);
        }
    }

    fn within(measured: u64, expected: f64, tolerance: f64) -> bool {
        (measured as f64 - expected).abs() <= expected * tolerance
    }

    #[test]
    fn simulcast_rates_within_three_percent_at_any_phase() {
        let start = Instant::now();
        let streams = [
            Stream {
                layer: 0,
                fps: 30,
                bps: 150_000,
                temporal: true,
            },
            Stream {
                layer: 1,
                fps: 30,
                bps: 500_000,
                temporal: true,
            },
            Stream {
                layer: 2,
                fps: 30,
                bps: 1_500_000,
                temporal: false,
            },
        ];
        // Sample at several phases against frame times and bucket edges.
        for offset_ms in [2_000, 2_037, 2_091, 3_333, 4_999] {
            let now = start + Duration::from_millis(offset_ms);
            let mut probe = LayerRates::new(&Tuning::default());
            feed(&mut probe, start, now - start, &streams);
            let measured = probe.bitrates(now);
            assert_eq!(measured.len(), 3, "at {offset_ms} ms");
            for (m, s) in measured.iter().zip(&streams) {
                assert_eq!(m.layer, s.layer);
                assert!(
                    within(m.bps, s.bps as f64, 0.03),
                    "layer {} at {offset_ms} ms: {}",
                    m.layer,
                    m.bps
                );
                match s.temporal {
                    true => {
                        assert!(
                            within(m.tl0_bps.expect("temporal layers seen"), s.tl0_bps(), 0.03),
                            "tl0 of layer {} at {offset_ms} ms: {:?}",
                            m.layer,
                            m.tl0_bps
                        );
                        // TL0 and TL1 frames alternate big and small: the window edge weighs more.
                        assert!(
                            within(m.tl1_bps.expect("three temporal layers"), s.tl1_bps(), 0.05),
                            "tl1 of layer {} at {offset_ms} ms: {:?}",
                            m.layer,
                            m.tl1_bps
                        );
                    }
                    false => assert_eq!((m.tl0_bps, m.tl1_bps), (None, None)),
                }
            }
        }
    }

    #[test]
    fn low_frame_rate_screen_within_three_percent() {
        let start = Instant::now();
        let screen = [Stream {
            layer: 0,
            fps: 5,
            bps: 200_000,
            temporal: false,
        }];
        for offset_ms in [3_000, 3_050, 3_150, 3_199] {
            let mut rates = LayerRates::new(&Tuning::default());
            let now = start + Duration::from_millis(offset_ms);
            feed(&mut rates, start, now - start, &screen);
            let bps = rates.layer(now, 0).expect("screen seen").bps;
            assert!(within(bps, 200_000.0, 0.03), "at {offset_ms} ms: {bps}");
        }
    }

    #[test]
    fn rate_follows_a_step_within_one_window() {
        let start = Instant::now();
        let mut rates = LayerRates::new(&Tuning::default());
        feed(
            &mut rates,
            start,
            Duration::from_secs(3),
            &[Stream {
                layer: 0,
                fps: 30,
                bps: 800_000,
                temporal: false,
            }],
        );
        let later = start + Duration::from_secs(3) + Duration::from_millis(33);
        // The publisher's encoder halves its rate (e.g. its own uplink estimate dropped).
        let half = [Stream {
            layer: 0,
            fps: 30,
            bps: 400_000,
            temporal: false,
        }];
        feed(&mut rates, later, Duration::from_millis(1_500), &half);
        let bps = rates
            .layer(later + Duration::from_millis(1_500), 0)
            .unwrap()
            .bps;
        assert!(within(bps, 400_000.0, 0.03), "{bps}");
    }

    #[test]
    fn layers_not_seen_recently_are_unavailable() {
        let start = Instant::now();
        let tuning = Tuning::default();
        let mut rates = LayerRates::new(&tuning);
        let frame_interval = Duration::from_millis(40); // 25 fps: frame times exact in ms
        let last_top_frame = 50; // dynacast (or the publisher's uplink) stops f after 2 s; q goes on
        let mut seen = Vec::new();
        for k in 0..=120u32 {
            let now = start + frame_interval * k;
            rates.on_media(now, 0, None, 750);
            if k <= last_top_frame {
                rates.on_media(now, 2, None, 7_500);
            }
            let layers: Vec<u8> = rates.bitrates(now).iter().map(|l| l.layer).collect();
            seen.push((
                frame_interval * (k - last_top_frame.min(k)),
                layers,
                rates.layer(now, 2),
            ));
        }
        let at =
            |since_last_top: Duration| seen.iter().rev().find(|e| e.0 == since_last_top).unwrap();
        assert_eq!(at(Duration::ZERO).1, vec![0, 2]);
        assert_eq!(at(Duration::ZERO).2.map(|l| l.bps), Some(7_500 * 8 * 25));
        // After the window, before the stale time: still there, measured at nothing (the floor prices it).
        assert_eq!(at(Duration::from_millis(1_520)).2.map(|l| l.bps), Some(0));
        assert_eq!(at(tuning.layer_stale_after).1, vec![0, 2]);
        assert_eq!(at(tuning.layer_stale_after + frame_interval).1, vec![0]);
        // Never-seen layer 1 and out-of-range layers.
        let end = start + frame_interval * 120;
        assert_eq!(rates.layer(end, 1), None);
        rates.on_media(end, MAX_LAYERS as u8, None, 1_000);
        assert_eq!(rates.layer(end, MAX_LAYERS as u8), None);
    }

    #[test]
    fn no_temporal_index_counts_as_tl0() {
        let start = Instant::now();
        let mut rates = LayerRates::new(&Tuning::default());
        feed(
            &mut rates,
            start,
            Duration::from_secs(2),
            &[Stream {
                layer: 0,
                fps: 30,
                bps: 300_000,
                temporal: false,
            }],
        );
        let layer = rates.layer(start + Duration::from_secs(2), 0).unwrap();
        assert_eq!(
            layer.tl0_bps, None,
            "no upper temporal layer: no TL0-only step to offer"
        );
    }

    #[test]
    fn a_layer_starved_of_frames_is_choppy() {
        let start = Instant::now();
        let stream = |layer, fps| Stream {
            layer,
            fps,
            bps: 300_000,
            temporal: false,
        };
        let end = start + Duration::from_secs(3);
        let mut rates = LayerRates::new(&Tuning::default());
        // The 720p encoder keeps one frame in three; the 360p one keeps them all.
        feed(
            &mut rates,
            start,
            Duration::from_secs(3),
            &[stream(0, 30), stream(1, 30), stream(2, 10)],
        );
        let fps = |layer| rates.frame_rate(end, layer).unwrap();
        assert!((fps(0) - 30.0).abs() < 0.5, "{}", fps(0));
        assert!((fps(2) - 10.0).abs() < 0.5, "{}", fps(2));
        assert!(
            !rates.choppy(end, 0, 0.6),
            "the lowest layer is never choppy"
        );
        assert!(!rates.choppy(end, 1, 0.6));
        assert!(rates.choppy(end, 2, 0.6));
        assert!(!rates.choppy(end, 2, 0.0), "ratio 0 turns the rule off");
        assert!(!rates.choppy(end, 2, 0.3), "10 of 30 fps is over 0.3 of it");

        // 20 of 30 fps is two thirds: smooth enough at 0.6.
        let mut rates = LayerRates::new(&Tuning::default());
        feed(
            &mut rates,
            start,
            Duration::from_secs(3),
            &[stream(0, 30), stream(2, 20)],
        );
        assert!(!rates.choppy(end, 2, 0.6));
        // A layer that ended no frame in the window is not judged (it is stale or about to be).
        assert_eq!(rates.frame_rate(end + Duration::from_secs(2), 2), None);
        assert!(!rates.choppy(end + Duration::from_secs(2), 2, 0.6));
    }
}
