//! Load-test tooling for tongbu: the `linkem` userspace link emulator and the
//! network-namespace helpers that let tests and benchmarks run real traffic
//! through emulated rural links.

pub mod browser;
pub mod linkem;
pub mod netns;
