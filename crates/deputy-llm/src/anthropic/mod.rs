//! The Anthropic Messages API: the same types, its own wire format.

pub mod client;
pub mod stream;
pub mod wire;
