//! tongbu: a WebRTC SFU for synchronized interactive classrooms.
//!
//! Layout (one job per module):
//! - [`signal`]: the WebSocket signaling protocol (the contract published in `proto/`).
//! - [`lesson`]: lessons, invitations, join codes, who is called on; pure state.
//! - [`media`]: the str0m engine loop (one UDP port) and the forwarding path.
//! - [`bwe`]: bandwidth allocation and layer selection per subscriber; pure logic.
//! - [`usage`]: usage accounting fed by engine events, off the hot path.
//! - [`http`]: web pages, WebSocket endpoint, admin API, metrics.
//! - [`auth`], [`directory`], [`config`]: tokens, the school directory, settings.

pub mod auth;
pub mod directory;
pub mod http;
pub mod signal;
pub mod store;
pub mod usage;
