//! Named link profiles for the rural scenarios the benchmarks replay.
//!
//! Each profile gives the downlink (towards the village) and a matching
//! uplink. Delay and loss are symmetric (a radio link impairs both ways, and
//! RTT = 2 x one-way); rate changes apply to the downlink only so a collapse
//! test is not confounded by feedback starving on the way back.

use std::time::Duration;

use super::config::{ConfigError, GilbertElliott, LinkConfig};
use super::schedule::{RateSchedule, RateStep};

/// Profile names, for help texts and errors.
pub const NAMES: &[&str] = &[
    "clean",
    "village4g",
    "collapse",
    "bursty",
    "satellite",
    "cap300",
];

/// Which way a link configuration applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Central side (namespace A) to the village (namespace B).
    Down,
    /// Village to the central side.
    Up,
}

/// Both directions of a named profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub down: LinkConfig,
    pub up: LinkConfig,
}

impl Profile {
    pub fn get(&self, dir: Direction) -> &LinkConfig {
        match dir {
            Direction::Down => &self.down,
            Direction::Up => &self.up,
        }
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn constant(bps: u64) -> RateSchedule {
    RateSchedule::constant(Some(bps))
}

/// Looks a profile up by name.
pub fn profile(name: &str) -> Result<Profile, ConfigError> {
    let base = |delay: u64, rate: RateSchedule| LinkConfig {
        delay: ms(delay),
        rate,
        ..Default::default()
    };
    let down = match name {
        "clean" => LinkConfig::default(),
        "village4g" => LinkConfig {
            jitter: ms(10),
            loss: 0.01,
            ..base(30, constant(1_000_000))
        },
        "collapse" => base(30, collapse_schedule()),
        "bursty" => LinkConfig {
            gilbert: Some(GilbertElliott {
                p_gb: 0.05,
                p_bg: 0.3,
                loss_bad: 0.9,
                loss_good: 0.01,
            }),
            ..base(150, constant(1_000_000))
        },
        "satellite" => LinkConfig {
            loss: 0.005,
            ..base(300, constant(2_000_000))
        },
        "cap300" => base(30, constant(300_000)),
        other => return Err(ConfigError::UnknownProfile(other.to_string())),
    };
    let mut up = down.clone();
    // Different loss/jitter draws each way; same seed would mirror the traces.
    up.seed = down.seed.wrapping_add(1);
    if name == "collapse" {
        up.rate = constant(2_000_000);
    }
    Ok(Profile { down, up })
}

/// 2 Mbit/s, 300 kbit/s from t=20 s, back to 2 Mbit/s at t=50 s.
fn collapse_schedule() -> RateSchedule {
    let step = |s: u64, bps: u64| RateStep {
        at: Duration::from_secs(s),
        bps: Some(bps),
    };
    // Steps are literal and ordered, so construction cannot fail; fall back
    // to a constant rate rather than panic should that ever change.
    RateSchedule::new(vec![
        step(0, 2_000_000),
        step(20, 300_000),
        step(50, 2_000_000),
    ])
    .unwrap_or_else(|_| constant(2_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_is_valid_and_matches_its_brief() {
        for name in NAMES {
            let p = profile(name).unwrap();
            p.down.validate().unwrap();
            p.up.validate().unwrap();
            assert_ne!(p.down.seed, p.up.seed);
        }
        let v = profile("village4g").unwrap().down;
        assert_eq!((v.delay, v.jitter, v.loss), (ms(30), ms(10), 0.01));
        assert_eq!(v.rate.rate_at(ms(0)), Some(1_000_000));
        let b = profile("bursty").unwrap().down;
        assert!((b.expected_loss() - 0.137).abs() < 0.005);
        let c = profile("collapse").unwrap();
        assert_eq!(c.down.rate.rate_at(ms(25_000)), Some(300_000));
        assert_eq!(c.up.rate.rate_at(ms(25_000)), Some(2_000_000));
        let s = profile("satellite").unwrap().up;
        assert_eq!((s.delay, s.loss), (ms(300), 0.005));
        assert_eq!(
            profile("cap300").unwrap().down.rate.rate_at(ms(0)),
            Some(300_000)
        );
        assert!(matches!(
            profile("nope"),
            Err(ConfigError::UnknownProfile(_))
        ));
    }
}
