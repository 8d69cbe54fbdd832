//! Media: peers, what each subscriber receives, and how forwarded packets are rewritten into
//! one continuous stream per subscriber.

pub mod fec;
pub mod frames;
pub mod history;
pub mod peer;
pub mod red;
pub mod rewrite;
pub mod timeline;
pub mod vp8;
