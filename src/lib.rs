//! tongbu: a WebRTC SFU for synchronized interactive classrooms.
//!
//! Layout (one job per module):
//! - [`signal`]: the WebSocket signaling protocol (the contract published in `proto/`).
//! - [`lesson`]: lessons, invitations, join codes, who is called on; pure state.
//! - [`engine`]: the one task that owns the UDP socket, every peer and every lesson.
//! - [`media`]: peers, the forwarding decisions and keyframe throttling.
//! - [`usage`]: usage accounting fed by engine events, off the hot path.
//! - [`http`]: web pages, WebSocket endpoint, metrics.
//! - [`auth`], [`directory`], [`metrics`], [`server`]: tokens, the school directory, Prometheus,
//!   and assembly of a running server.

pub mod auth;
pub mod bwe;
pub mod directory;
pub mod engine;
pub mod http;
pub mod lesson;
pub mod media;
pub mod metrics;
pub mod server;
pub mod signal;
pub mod usage;
