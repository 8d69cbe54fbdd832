//! Signaling: the protocol messages and the WebSocket session that carries them.

pub mod message;
