//! deputy's model layer (in progress): one model of messages and tool calls for every
//! provider, a sequencing check that runs before any request leaves, and a streamed
//! tool-call assembler for OpenAI-compatible Chat Completions.
//!
//! Done: the OpenAI-compatible client (streaming and not) with retries. Next: the
//! Anthropic client, tool-argument schema checks, and the debug recorder.

pub mod anthropic;
pub mod call;
pub mod openai;
pub mod providers;
pub mod record;
pub mod retry;
pub mod sequence;
pub mod tools;
pub mod types;

pub use sequence::{SequenceError, check_sequence};
pub use types::{FinishReason, Message, ToolCall, Usage};
