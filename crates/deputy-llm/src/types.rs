//! Provider-agnostic messages, tool calls, usage and finish reasons.

use serde::{Deserialize, Serialize};

/// One tool call an assistant asked for. `arguments` is the raw JSON text the model
/// produced; it is parsed and checked against the tool's schema before the tool runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    System {
        content: String,
    },
    User {
        content: String,
    },
    Assistant {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call, answering `tool_call_id`.
    Tool {
        tool_call_id: String,
        content: String,
    },
}

pub use deputy_core::trace::Usage;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

impl FinishReason {
    /// Maps a provider's finish reason; unknown or empty ones are `None`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stop" | "end_turn" | "stop_sequence" => Some(Self::Stop),
            "length" | "max_tokens" => Some(Self::Length),
            "tool_calls" | "tool_use" | "function_call" => Some(Self::ToolCalls),
            "content_filter" | "refusal" => Some(Self::ContentFilter),
            _ => None,
        }
    }
}
