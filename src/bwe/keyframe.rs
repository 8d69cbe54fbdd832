//! Keyframe requests throttled per publisher layer and shared across subscribers.
//!
//! Every subscriber switching to a layer needs a keyframe of it, and they tend to switch together
//! (one estimate drop at a county uplink hits a whole lesson). A keyframe costs the publisher's uplink
//! several frames' worth of bits, so per (publisher track, layer) at most one request leaves per
//! interval, and none while a keyframe that arrived after the subscriber started waiting is fresh.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Tuning;

/// Whether a subscriber waiting since `waiting_since` should ask for a keyframe of a layer whose last
/// keyframe arrived at `last_keyframe`. A keyframe from before the wait is of no use; one that came
/// during the wait less than `interval` ago may still be on its way to this subscriber.
pub fn keyframe_needed(
    now: Instant,
    waiting_since: Instant,
    last_keyframe: Option<Instant>,
    interval: Duration,
) -> bool {
    let on_its_way =
        |at: Instant| at >= waiting_since && now.saturating_duration_since(at) < interval;
    !last_keyframe.is_some_and(on_its_way)
}

/// Keyframe request throttle for every publisher layer of a media loop.
#[derive(Debug, Clone)]
pub struct KeyframeThrottle {
    interval: Duration,
    layers: HashMap<(u64, u8), LayerKeyframes>,
}

#[derive(Debug, Clone, Copy, Default)]
struct LayerKeyframes {
    last_keyframe: Option<Instant>,
    last_request: Option<Instant>,
}

impl KeyframeThrottle {
    /// A throttle allowing one request per `tuning.keyframe_interval` per layer.
    pub fn new(tuning: &Tuning) -> Self {
        Self {
            interval: tuning.keyframe_interval,
            layers: HashMap::new(),
        }
    }

    /// Note a keyframe of `layer` arriving from the publisher of `track`.
    pub fn on_keyframe(&mut self, now: Instant, track: u64, layer: u8) {
        self.layers.entry((track, layer)).or_default().last_keyframe = Some(now);
    }

    /// A subscriber waiting since `waiting_since` asks for a keyframe of `layer`; `true` means send
    /// the PLI now. The interval stretches to 1.25 × the publisher's RTT so that a slow uplink is not
    /// asked twice before the first keyframe can come back.
    pub fn request(
        &mut self,
        now: Instant,
        track: u64,
        layer: u8,
        waiting_since: Instant,
        publisher_rtt: Duration,
    ) -> bool {
        let interval = self.interval.max(publisher_rtt + publisher_rtt / 4);
        let state = self.layers.entry((track, layer)).or_default();
        if !keyframe_needed(now, waiting_since, state.last_keyframe, interval) {
            return false;
        }
        if state
            .last_request
            .is_some_and(|at| now.saturating_duration_since(at) < interval)
        {
            return false;
        }
        state.last_request = Some(now);
        true
    }

    /// Drop the state of a departed publisher track.
    pub fn forget_track(&mut self, track: u64) {
        self.layers.retain(|&(t, _), _| t != track);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACK: u64 = 7;
    const RTT: Duration = Duration::from_millis(100);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn twenty_subscribers_at_once_make_one_request() {
        let t0 = Instant::now();
        let mut throttle = KeyframeThrottle::new(&Tuning::default());
        let sent = (0..20)
            .filter(|_| throttle.request(t0, TRACK, 1, t0, RTT))
            .count();
        assert_eq!(sent, 1);
    }

    #[test]
    fn twenty_subscribers_retrying_stay_within_one_request_per_interval() {
        // No keyframe ever comes (the publisher's uplink is losing them); everyone retries every 10 ms.
        let t0 = Instant::now();
        let tuning = Tuning::default();
        let mut throttle = KeyframeThrottle::new(&tuning);
        let mut sent_at = Vec::new();
        for tick in 0..300u64 {
            let now = t0 + ms(tick * 10);
            for subscriber in 0..20u64 {
                let waiting_since = t0 + ms(subscriber * 7); // they started waiting at different times
                if waiting_since <= now && throttle.request(now, TRACK, 2, waiting_since, RTT) {
                    sent_at.push(now);
                }
            }
        }
        assert!(
            sent_at.len() >= 2,
            "a lost keyframe must be asked for again"
        );
        assert!(sent_at.len() as u128 <= 3_000 / tuning.keyframe_interval.as_millis() + 1);
        assert!(sent_at
            .windows(2)
            .all(|w| w[1] - w[0] >= tuning.keyframe_interval));
    }

    #[test]
    fn layers_and_tracks_are_throttled_separately() {
        let t0 = Instant::now();
        let mut throttle = KeyframeThrottle::new(&Tuning::default());
        assert!(throttle.request(t0, TRACK, 0, t0, RTT));
        assert!(throttle.request(t0, TRACK, 1, t0, RTT));
        assert!(throttle.request(t0, TRACK + 1, 0, t0, RTT));
        assert!(!throttle.request(t0 + ms(10), TRACK, 0, t0, RTT));
        throttle.forget_track(TRACK);
        assert!(
            throttle.request(t0 + ms(20), TRACK, 0, t0, RTT),
            "forgotten track starts afresh"
        );
        assert!(
            !throttle.request(t0 + ms(20), TRACK + 1, 0, t0, RTT),
            "other tracks keep their state"
        );
    }

    #[test]
    fn a_fresh_keyframe_after_the_wait_began_suppresses_requests() {
        let t0 = Instant::now();
        let interval = Tuning::default().keyframe_interval;
        let mut throttle = KeyframeThrottle::new(&Tuning::default());
        throttle.on_keyframe(t0 + ms(100), TRACK, 0);
        // Waiting since before that keyframe: it is on its way, do not ask.
        assert!(!throttle.request(t0 + ms(150), TRACK, 0, t0, RTT));
        // Still waiting one interval after it: it was lost for this subscriber, ask.
        assert!(throttle.request(t0 + ms(100) + interval, TRACK, 0, t0, RTT));
        // A keyframe from before the wait is of no use.
        assert!(keyframe_needed(
            t0 + ms(300),
            t0 + ms(200),
            Some(t0 + ms(100)),
            interval
        ));
        assert!(!keyframe_needed(
            t0 + ms(300),
            t0 + ms(200),
            Some(t0 + ms(250)),
            interval
        ));
        assert!(keyframe_needed(t0 + ms(300), t0 + ms(200), None, interval));
    }

    #[test]
    fn a_slow_publisher_uplink_stretches_the_interval() {
        let t0 = Instant::now();
        let mut throttle = KeyframeThrottle::new(&Tuning::default());
        let rtt = ms(600);
        assert!(throttle.request(t0, TRACK, 0, t0, rtt));
        assert!(
            !throttle.request(t0 + ms(600), TRACK, 0, t0, rtt),
            "keyframe cannot be back yet"
        );
        assert!(throttle.request(t0 + ms(750), TRACK, 0, t0, rtt));
    }
}
