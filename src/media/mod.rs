//! Media: peers and what is forwarded to whom, decided per frame.

pub mod forward;
pub mod keyframe;
pub mod peer;
