//! Usage accounting.

pub mod event;
