//! Usage accounting: the engine's [`event::UsageEvent`]s become usage sessions in the store.
//!
//! - [`recorder`]: pure session logic (events and time in, rows out);
//! - [`service`]: the task that runs it, checkpoints to the store and recovers after a crash;
//! - [`metrics`]: per-classroom Prometheus counters;
//! - [`cli`]: `usage export`, admin token minting, directory import.

pub mod cli;
pub mod csv;
pub mod event;
pub mod metrics;
pub mod recorder;
pub mod service;

pub use recorder::{Recorder, RecorderConfig};
pub use service::{start, UsageConfig, UsageError, UsageHandle};
