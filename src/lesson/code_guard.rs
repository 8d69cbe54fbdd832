//! Rate limit on wrong join codes, so the six-digit code space cannot be searched.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Wrong codes one address may try per window.
const PER_ADDRESS_FAILURES: u32 = 5;
/// Wrong codes all addresses together may try per window (guessing from many addresses).
const GLOBAL_FAILURES: u32 = 60;
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; older windows are pruned first.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Default)]
pub struct CodeGuard {
    per_address: HashMap<IpAddr, Window>,
    global: Window,
}

#[derive(Debug, Clone, Copy, Default)]
struct Window {
    start: Option<Instant>,
    failures: u32,
}

impl Window {
    fn current(&mut self, now: Instant) -> &mut Self {
        if self.start.is_none_or(|s| now.duration_since(s) >= WINDOW) {
            *self = Window {
                start: Some(now),
                failures: 0,
            };
        }
        self
    }
}

impl CodeGuard {
    /// Whether `addr` may try a code now.
    pub fn allows(&mut self, addr: IpAddr, now: Instant) -> bool {
        if self.global.current(now).failures >= GLOBAL_FAILURES {
            return false;
        }
        match self.per_address.get_mut(&addr) {
            Some(w) => w.current(now).failures < PER_ADDRESS_FAILURES,
            None => true,
        }
    }

    pub fn record_failure(&mut self, addr: IpAddr, now: Instant) {
        self.global.current(now).failures += 1;
        if self.per_address.len() >= MAX_TRACKED {
            self.per_address
                .retain(|_, w| w.start.is_some_and(|s| now.duration_since(s) < WINDOW));
        }
        self.per_address
            .entry(addr)
            .or_default()
            .current(now)
            .failures += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_an_address_after_five_failures_until_the_window_passes() {
        let mut guard = CodeGuard::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..PER_ADDRESS_FAILURES {
            assert!(guard.allows(a, t0));
            guard.record_failure(a, t0);
        }
        assert!(!guard.allows(a, t0));
        assert!(guard.allows(b, t0), "other addresses are not punished");
        assert!(guard.allows(a, t0 + WINDOW));
    }

    #[test]
    fn blocks_everyone_when_many_addresses_guess() {
        let mut guard = CodeGuard::default();
        let t0 = Instant::now();
        for i in 0..GLOBAL_FAILURES {
            let addr = IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
            guard.record_failure(addr, t0);
        }
        assert!(!guard.allows("127.0.0.9".parse().unwrap(), t0));
    }
}
