//! The Anthropic Messages API: the same types, its own wire format.

pub mod stream;
pub mod wire;
