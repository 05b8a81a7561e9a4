//! deputy's model layer: one model of messages and tool calls for every provider, a
//! sequencing check that runs before any request leaves, streaming clients for
//! OpenAI-compatible Chat Completions and the Anthropic Messages API with retries, tool
//! arguments checked against their schema, and a debug recorder of every call
//! ([`record`]): steps and HTTP attempts, redacted, written to the task's database.

pub mod anthropic;
pub mod call;
pub mod client;
pub mod openai;
pub mod providers;
pub mod record;
pub mod retry;
pub mod sequence;
pub mod tools;
pub mod types;

pub use sequence::{SequenceError, check_sequence};
pub use types::{FinishReason, Message, ToolCall, Usage};
