//! Piecewise-constant bottleneck rate over time.

use std::time::Duration;

use super::config::ConfigError;

/// One rate change: from `at` (since the model started) the link sends at
/// `bps` bits per second; `None` means no rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateStep {
    pub at: Duration,
    pub bps: Option<u64>,
}

/// Rate steps sorted by time, the first at t=0.
#[derive(Debug, Clone, PartialEq)]
pub struct RateSchedule {
    steps: Vec<RateStep>,
}

impl RateSchedule {
    /// No rate limit at any time.
    pub fn unlimited() -> Self {
        Self::constant(None)
    }

    /// The same rate for ever.
    pub fn constant(bps: Option<u64>) -> Self {
        Self {
            steps: vec![RateStep {
                at: Duration::ZERO,
                bps,
            }],
        }
    }

    /// Builds a schedule from steps; they must start at 0 and strictly increase.
    pub fn new(steps: Vec<RateStep>) -> Result<Self, ConfigError> {
        let s = Self { steps };
        s.validate()?;
        Ok(s)
    }

    /// Sets the rate from `at` on, replacing a step at the same time.
    pub fn set_from(&mut self, at: Duration, bps: Option<u64>) {
        match self.steps.binary_search_by(|s| s.at.cmp(&at)) {
            Ok(i) => self.steps[i].bps = bps,
            Err(i) => self.steps.insert(i, RateStep { at, bps }),
        }
    }

    /// The steps, in time order.
    pub fn steps(&self) -> &[RateStep] {
        &self.steps
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let starts_at_zero = self.steps.first().is_some_and(|s| s.at.is_zero());
        let increasing = self.steps.windows(2).all(|w| w[0].at < w[1].at);
        if starts_at_zero && increasing {
            Ok(())
        } else {
            Err(ConfigError::ScheduleOrder)
        }
    }

    fn segment(&self, t: Duration) -> usize {
        // Index of the last step at or before t (step 0 is at 0, so always exists).
        self.steps.partition_point(|s| s.at <= t).saturating_sub(1)
    }

    /// Rate in force at `t`.
    pub fn rate_at(&self, t: Duration) -> Option<u64> {
        self.steps.get(self.segment(t)).and_then(|s| s.bps)
    }

    /// When `bits` started at `start` have been serialized, following rate
    /// changes that happen meanwhile; `None` if the link never sends them
    /// (rate 0 for ever).
    pub fn finish(&self, start: Duration, bits: u64) -> Option<Duration> {
        let mut i = self.segment(start);
        let mut t = start;
        let mut remaining = bits as f64;
        loop {
            let step = self.steps.get(i)?;
            let end = self.steps.get(i + 1).map(|s| s.at);
            match step.bps {
                None => return Some(t),
                Some(bps) if bps > 0 => {
                    let need = remaining / bps as f64;
                    let fits = end.is_none_or(|e| need <= (e - t).as_secs_f64());
                    if fits {
                        return Some(t + Duration::from_secs_f64(need));
                    }
                }
                Some(_) => {}
            }
            let end = end?;
            remaining -= step.bps.unwrap_or(0) as f64 * (end - t).as_secs_f64();
            t = end;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn collapse() -> RateSchedule {
        RateSchedule::new(vec![
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
        .unwrap()
    }

    #[test]
    fn rate_at_follows_steps() {
        let s = collapse();
        assert_eq!(s.rate_at(ms(0)), Some(2_000_000));
        assert_eq!(s.rate_at(ms(19_999)), Some(2_000_000));
        assert_eq!(s.rate_at(ms(20_000)), Some(300_000));
        assert_eq!(s.rate_at(ms(49_999)), Some(300_000));
        assert_eq!(s.rate_at(ms(50_000)), Some(2_000_000));
        assert_eq!(s.rate_at(ms(1_000_000)), Some(2_000_000));
    }

    #[test]
    fn finish_spans_a_rate_change() {
        let s = collapse();
        // 12 000 bits at 2 Mbit/s = 6 ms.
        assert_eq!(s.finish(ms(0), 12_000), Some(ms(6)));
        // Start 2 ms before the drop: 4 000 bits at 2M, 8 000 bits at 300k = 26.67 ms.
        let f = s.finish(ms(19_998), 12_000).unwrap();
        assert!(
            (f.as_secs_f64() - (20.0 + 8_000.0 / 300_000.0)).abs() < 1e-6,
            "{f:?}"
        );
    }

    #[test]
    fn outage_waits_and_permanent_outage_never_finishes() {
        let s = RateSchedule::new(vec![
            RateStep {
                at: ms(0),
                bps: Some(1_000_000),
            },
            RateStep {
                at: ms(10),
                bps: Some(0),
            },
            RateStep {
                at: ms(100),
                bps: Some(1_000_000),
            },
        ])
        .unwrap();
        assert_eq!(s.finish(ms(50), 1_000), Some(ms(101)));
        let dead = RateSchedule::constant(Some(0));
        assert_eq!(dead.finish(ms(0), 8), None);
        assert_eq!(
            RateSchedule::unlimited().finish(ms(5), 1 << 40),
            Some(ms(5))
        );
    }

    #[test]
    fn rejects_unordered_steps() {
        let bad = RateSchedule::new(vec![
            RateStep {
                at: ms(0),
                bps: None,
            },
            RateStep {
                at: ms(5),
                bps: None,
            },
            RateStep {
                at: ms(5),
                bps: None,
            },
        ]);
        assert_eq!(bad, Err(ConfigError::ScheduleOrder));
        assert_eq!(
            RateSchedule::new(vec![RateStep {
                at: ms(1),
                bps: None
            }]),
            Err(ConfigError::ScheduleOrder)
        );
        assert_eq!(RateSchedule::new(vec![]), Err(ConfigError::ScheduleOrder));
    }

    #[test]
    fn set_from_inserts_in_order() {
        let mut s = RateSchedule::constant(Some(1));
        s.set_from(ms(50), Some(3));
        s.set_from(ms(20), Some(2));
        s.set_from(ms(0), Some(9));
        let at: Vec<_> = s.steps().iter().map(|x| (x.at, x.bps)).collect();
        assert_eq!(
            at,
            vec![(ms(0), Some(9)), (ms(20), Some(2)), (ms(50), Some(3))]
        );
        assert!(s.validate().is_ok());
    }
}
