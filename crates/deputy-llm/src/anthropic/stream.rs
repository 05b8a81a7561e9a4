//! Assembling a streamed Messages API response: `message_start` (input usage),
//! `content_block_start` (text or `tool_use` with id and name), `content_block_delta`
//! (`text_delta` or `input_json_delta` pieces of the tool input), `content_block_stop`,
//! `message_delta` (stop reason, output usage), `message_stop`. An `error` event or a
//! stream that ends before `message_stop` is an error.

use serde_json::Value;

use crate::openai::stream::{Completion, StreamError};
use crate::types::{FinishReason, Message, ToolCall, Usage};

#[derive(Debug, Default)]
struct Block {
    tool: Option<(String, String)>,
    text: String,
    input: String,
}

#[derive(Debug, Default)]
pub struct AnthropicAccumulator {
    blocks: Vec<Block>,
    usage: Usage,
    stop: Option<FinishReason>,
    stopped: bool,
    events: u64,
}

impl AnthropicAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one SSE event's data (its `type` field names the event). Returns new text.
    pub fn push(&mut self, data: &str) -> Result<Option<String>, StreamError> {
        self.events += 1;
        let v: Value = serde_json::from_str(data).map_err(|e| StreamError::MalformedChunk {
            chunk: self.events,
            error: e.to_string(),
        })?;
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
        match v.get("type").and_then(Value::as_str).unwrap_or_default() {
            "message_start" => {
                let u = &v["message"]["usage"];
                self.usage.input_tokens = u.get("input_tokens").and_then(Value::as_u64);
                self.usage.cached_tokens = u.get("cache_read_input_tokens").and_then(Value::as_u64);
                self.usage.output_tokens = u.get("output_tokens").and_then(Value::as_u64);
            }
            "content_block_start" => {
                while self.blocks.len() <= index {
                    self.blocks.push(Block::default());
                }
                let b = &v["content_block"];
                if b["type"] == "tool_use" {
                    let id = b["id"].as_str().unwrap_or_default().to_string();
                    let name = b["name"].as_str().unwrap_or_default().to_string();
                    self.blocks[index].tool = Some((id, name));
                }
            }
            "content_block_delta" => {
                let Some(block) = self.blocks.get_mut(index) else {
                    return Err(StreamError::MalformedChunk {
                        chunk: self.events,
                        error: format!("delta for block {index}, which never started"),
                    });
                };
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => {
                        let t = d["text"].as_str().unwrap_or_default();
                        block.text.push_str(t);
                        return Ok((!t.is_empty()).then(|| t.to_string()));
                    }
                    Some("input_json_delta") => block
                        .input
                        .push_str(d["partial_json"].as_str().unwrap_or_default()),
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v["delta"]["stop_reason"].as_str() {
                    self.stop = FinishReason::parse(r);
                }
                if let Some(n) = v["usage"]["output_tokens"].as_u64() {
                    self.usage.output_tokens = Some(n);
                }
            }
            "message_stop" => self.stopped = true,
            "error" => return Err(StreamError::ServerError(v["error"].to_string())),
            _ => {} // ping, content_block_stop
        }
        Ok(None)
    }

    pub fn finish(self) -> Result<Completion, StreamError> {
        if !self.stopped {
            return Err(StreamError::Truncated {
                chunks: self.events,
            });
        }
        let mut text = String::new();
        let mut tool_calls = Vec::new();
        for b in self.blocks {
            match b.tool {
                Some((id, name)) => tool_calls.push(ToolCall {
                    id,
                    name,
                    arguments: if b.input.trim().is_empty() {
                        "{}".into()
                    } else {
                        b.input
                    },
                }),
                None => text.push_str(&b.text),
            }
        }
        let finish_reason = self.stop.unwrap_or(if tool_calls.is_empty() {
            FinishReason::Stop
        } else {
            FinishReason::ToolCalls
        });
        Ok(Completion {
            message: Message::Assistant {
                content: (!text.is_empty()).then_some(text),
                tool_calls,
            },
            finish_reason,
            usage: self.usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_tool_use_blocks_assemble() {
        let mut acc = AnthropicAccumulator::new();
        for e in [
            r#"{"type":"message_start","message":{"usage":{"input_tokens":25,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Reading."}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"read_file","input":{}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"path\": "}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"a.rs\"}"}}"#,
            r#"{"type":"content_block_stop","index":1}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":40}}"#,
            r#"{"type":"message_stop"}"#,
        ] {
            acc.push(e).unwrap();
        }
        let c = acc.finish().unwrap();
        assert_eq!(c.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            (c.usage.input_tokens, c.usage.output_tokens),
            (Some(25), Some(40))
        );
        assert_eq!(
            c.message,
            Message::Assistant {
                content: Some("Reading.".into()),
                tool_calls: vec![ToolCall {
                    id: "toolu_1".into(),
                    name: "read_file".into(),
                    arguments: r#"{"path": "a.rs"}"#.into()
                }],
            }
        );
    }

    #[test]
    fn errors_and_truncation() {
        let mut acc = AnthropicAccumulator::new();
        assert!(matches!(
            acc.push(r#"{"type":"error","error":{"type":"overloaded_error"}}"#),
            Err(StreamError::ServerError(_))
        ));
        let mut acc = AnthropicAccumulator::new();
        acc.push(r#"{"type":"message_start","message":{"usage":{}}}"#)
            .unwrap();
        assert!(matches!(acc.finish(), Err(StreamError::Truncated { .. })));
    }
}
