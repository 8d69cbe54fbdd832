//! Keyframe requests towards publishers, throttled per layer and shared by all subscribers, so
//! many weak classrooms asking at once cost the teacher's encoder one keyframe.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use str0m::media::{Mid, Rid};

use crate::signal::ConnId;

/// At most one request per publisher layer in this interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct KeyframeThrottle {
    interval: Duration,
    last: HashMap<(ConnId, Mid, Option<Rid>), Instant>,
}

impl Default for KeyframeThrottle {
    fn default() -> Self {
        KeyframeThrottle {
            interval: DEFAULT_INTERVAL,
            last: HashMap::new(),
        }
    }
}

impl KeyframeThrottle {
    /// Whether a request for this layer may go out now; records it if so.
    pub fn allow(&mut self, publisher: ConnId, mid: Mid, rid: Option<Rid>, now: Instant) -> bool {
        let key = (publisher, mid, rid);
        if let Some(last) = self.last.get(&key) {
            if now.saturating_duration_since(*last) < self.interval {
                return false;
            }
        }
        self.last.insert(key, now);
        true
    }

    /// Forgets a publisher that left.
    pub fn forget(&mut self, publisher: ConnId) {
        self.last.retain(|(p, _, _), _| *p != publisher);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_subscribers_asking_at_once_make_one_request_per_interval() {
        let mut throttle = KeyframeThrottle::default();
        let t0 = Instant::now();
        let mid = Mid::from("0");
        let rid = Some(Rid::from("f"));
        let mut sent = 0;
        for ms in (0..1000u64).step_by(50) {
            for _subscriber in 0..20 {
                if throttle.allow(ConnId(1), mid, rid, t0 + Duration::from_millis(ms)) {
                    sent += 1;
                }
            }
        }
        assert_eq!(sent, 2);
        assert!(
            throttle.allow(ConnId(1), mid, Some(Rid::from("q")), t0),
            "layers are separate"
        );
    }
}
