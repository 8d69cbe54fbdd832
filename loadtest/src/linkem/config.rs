//! Configuration of one direction of an emulated link.

use std::time::Duration;

use super::schedule::RateSchedule;

/// Invalid link configuration or link specification.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} must be a probability in [0, 1], got {value}")]
    Probability { name: &'static str, value: f64 },
    #[error("rate schedule needs a step at t=0 and strictly increasing step times")]
    ScheduleOrder,
    #[error("queue limit must be positive")]
    EmptyQueue,
    #[error("unknown profile {0:?} (known: {known})", known = super::profile::NAMES.join(", "))]
    UnknownProfile(String),
    #[error("bad link spec item {item:?}: {reason}")]
    Spec { item: String, reason: String },
}

/// Gilbert-Elliott two-state bursty loss, evaluated once per packet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Probability of moving from the good to the bad state after a packet.
    pub p_gb: f64,
    /// Probability of moving from the bad to the good state after a packet.
    pub p_bg: f64,
    /// Loss probability while in the bad state.
    pub loss_bad: f64,
    /// Loss probability while in the good state.
    pub loss_good: f64,
}

impl GilbertElliott {
    /// Long-run loss rate of the chain: the stationary state mix times each state's loss.
    pub fn stationary_loss(&self) -> f64 {
        let denom = self.p_gb + self.p_bg;
        if denom <= 0.0 {
            // Never leaves the initial (good) state.
            return self.loss_good;
        }
        let bad = self.p_gb / denom;
        bad * self.loss_bad + (1.0 - bad) * self.loss_good
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_prob("ge p_gb", self.p_gb)?;
        check_prob("ge p_bg", self.p_bg)?;
        check_prob("ge loss_bad", self.loss_bad)?;
        check_prob("ge loss_good", self.loss_good)
    }
}

/// Bound on the bottleneck queue (drop-tail).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QueueLimit {
    /// At most this many bytes waiting or in serialization.
    Bytes(usize),
    /// As many bytes as the current rate sends in this time, but at least
    /// [`MIN_QUEUE_BYTES`] so one video frame burst fits even at very low rates.
    Delay(Duration),
}

/// Floor for [`QueueLimit::Delay`]: two full-size Ethernet packets.
pub const MIN_QUEUE_BYTES: usize = 3000;

impl QueueLimit {
    /// Byte limit in force while the link runs at `bps` (`None` = unlimited).
    pub fn bytes_at(&self, bps: Option<u64>) -> usize {
        match *self {
            QueueLimit::Bytes(b) => b,
            QueueLimit::Delay(d) => match bps {
                Some(bps) => {
                    let b = (bps as f64 * d.as_secs_f64() / 8.0) as usize;
                    b.max(MIN_QUEUE_BYTES)
                }
                None => usize::MAX,
            },
        }
    }
}

impl Default for QueueLimit {
    fn default() -> Self {
        QueueLimit::Delay(Duration::from_millis(100))
    }
}

/// Impairments for one direction of a link. The default impairs nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Fixed one-way propagation delay.
    pub delay: Duration,
    /// Delay variation: each packet's delay is `delay` plus a value in `[-jitter, +jitter]`.
    pub jitter: Duration,
    /// Independent per-packet jitter that may reorder packets. When false (the
    /// default) the variation follows a smooth random path so the link stays FIFO.
    pub reorder: bool,
    /// Independent random loss probability per packet.
    pub loss: f64,
    /// Optional bursty loss on top of `loss`.
    pub gilbert: Option<GilbertElliott>,
    /// Bottleneck rate over time (bits of IP packet per second).
    pub rate: RateSchedule,
    /// Bottleneck queue bound.
    pub queue: QueueLimit,
    /// Seed for every random choice of this direction.
    pub seed: u64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: false,
            loss: 0.0,
            gilbert: None,
            rate: RateSchedule::unlimited(),
            queue: QueueLimit::default(),
            seed: 1,
        }
    }
}

impl LinkConfig {
    /// Checks every field; the model refuses configurations that fail here.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_prob("loss", self.loss)?;
        if let Some(ge) = &self.gilbert {
            ge.validate()?;
        }
        if self.queue == QueueLimit::Bytes(0) || self.queue == QueueLimit::Delay(Duration::ZERO) {
            return Err(ConfigError::EmptyQueue);
        }
        self.rate.validate()
    }

    /// Long-run loss probability from random and bursty loss combined.
    pub fn expected_loss(&self) -> f64 {
        let ge = self.gilbert.map_or(0.0, |g| g.stationary_loss());
        1.0 - (1.0 - self.loss) * (1.0 - ge)
    }
}

fn check_prob(name: &'static str, value: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Probability { name, value })
    }
}

/// Renders the config in the link-spec syntax that [`super::parse_spec`] reads back.
impl std::fmt::Display for LinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = |bps: Option<u64>| match bps {
            None => "off".to_string(),
            Some(b) if b >= 1_000_000 && b.is_multiple_of(1_000_000) => {
                format!("{}M", b / 1_000_000)
            }
            Some(b) if b >= 1_000 && b.is_multiple_of(1_000) => format!("{}k", b / 1_000),
            Some(b) => b.to_string(),
        };
        let steps = self.rate.steps();
        write!(f, "rate={}", rate(steps.first().and_then(|s| s.bps)))?;
        for s in steps.iter().skip(1) {
            write!(f, ",at={}:{}", fmt_duration(s.at), rate(s.bps))?;
        }
        write!(
            f,
            ",delay={},jitter={}",
            fmt_duration(self.delay),
            fmt_duration(self.jitter)
        )?;
        write!(f, ",loss={}", self.loss)?;
        if let Some(g) = &self.gilbert {
            write!(
                f,
                ",ge={}/{}/{}/{}",
                g.p_gb, g.p_bg, g.loss_bad, g.loss_good
            )?;
        }
        match self.queue {
            QueueLimit::Bytes(b) => write!(f, ",queue={b}B")?,
            QueueLimit::Delay(d) => write!(f, ",queue={}", fmt_duration(d))?,
        }
        if self.reorder {
            write!(f, ",reorder")?;
        }
        write!(f, ",seed={}", self.seed)
    }
}

fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns >= 1_000_000_000 && ns.is_multiple_of(1_000_000_000) {
        format!("{}s", ns / 1_000_000_000)
    } else if ns.is_multiple_of(1_000_000) {
        format!("{}ms", ns / 1_000_000)
    } else if ns.is_multiple_of(1_000) {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}
