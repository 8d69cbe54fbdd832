//! `linkem`: userspace emulation of weak links (delay, jitter, loss, bursty
//! loss, rate cap with a bounded queue, rate changes over time).
//!
//! [`model`] is the sans-IO core; [`relay`] moves IP packets between two TUN
//! devices through it.

pub mod config;
pub mod jitter;
pub mod loss;
pub mod model;
pub mod profile;
pub mod relay;
pub mod rng;
pub mod schedule;
pub mod spec;
pub mod tun;

pub use config::{ConfigError, GilbertElliott, LinkConfig, QueueLimit};
pub use model::{LinkModel, LinkStats, Verdict};
pub use profile::{profile, Direction, Profile};
pub use schedule::{RateSchedule, RateStep};
pub use spec::parse_spec;
