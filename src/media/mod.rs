//! Media: peers, what each subscriber receives, and the RTP timeline of forwarded video.

pub mod history;
pub mod peer;
pub mod timeline;
