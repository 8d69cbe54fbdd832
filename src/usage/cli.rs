//! CLI pieces.
