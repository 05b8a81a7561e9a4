//! deputy's model layer (in progress): one model of messages and tool calls for every
//! provider, a sequencing check that runs before any request leaves, and a streamed
//! tool-call assembler for OpenAI-compatible Chat Completions.
//!
//! This crate never does I/O yet: the HTTP clients, retries and the recorder come next.

pub mod openai;
pub mod sequence;
pub mod types;

pub use sequence::{SequenceError, check_sequence};
pub use types::{FinishReason, Message, ToolCall, Usage};
