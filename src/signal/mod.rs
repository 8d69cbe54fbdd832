//! Signaling: the protocol messages and the WebSocket session that carries them.

pub mod message;
pub mod session;

/// One signaling connection; the media engine uses the same id for the connection's peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn-{}", self.0)
    }
}
