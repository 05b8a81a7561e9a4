//! Mapping deputy's messages onto the Messages API: the system prompt is a top-level
//! field, tool calls are `tool_use` blocks of an assistant message, and tool results are
//! `tool_result` blocks of the following user message (consecutive results share one).

use serde_json::{Value, json};

use crate::types::Message;

/// `(system, messages)` for a request body.
pub fn wire_messages(messages: &[Message]) -> (Option<String>, Vec<Value>) {
    let mut system: Vec<&str> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    for m in messages {
        match m {
            Message::System { content } => system.push(content),
            Message::User { content } => {
                out.push(json!({"role": "user", "content": [{"type": "text", "text": content}]}))
            }
            Message::Assistant {
                content,
                tool_calls,
            } => {
                let mut blocks = Vec::new();
                if let Some(t) = content.as_deref().filter(|t| !t.is_empty()) {
                    blocks.push(json!({"type": "text", "text": t}));
                }
                for c in tool_calls {
                    let input: Value =
                        serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
                    blocks.push(
                        json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}),
                    );
                }
                out.push(json!({"role": "assistant", "content": blocks}));
            }
            Message::Tool {
                tool_call_id,
                content,
            } => {
                let block =
                    json!({"type": "tool_result", "tool_use_id": tool_call_id, "content": content});
                // Results answering one assistant turn travel in one user message.
                let appended = out.last_mut().is_some_and(|last| {
                    let is_results = last["role"] == "user"
                        && last["content"]
                            .as_array()
                            .is_some_and(|b| b.iter().all(|b| b["type"] == "tool_result"));
                    if is_results {
                        last["content"]
                            .as_array_mut()
                            .expect("checked")
                            .push(block.clone());
                    }
                    is_results
                });
                if !appended {
                    out.push(json!({"role": "user", "content": [block]}));
                }
            }
        }
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    (system, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ToolCall;

    #[test]
    fn tool_results_of_one_turn_share_a_user_message() {
        let (system, msgs) = wire_messages(&[
            Message::System {
                content: "be brief".into(),
            },
            Message::User {
                content: "go".into(),
            },
            Message::Assistant {
                content: None,
                tool_calls: vec![
                    ToolCall {
                        id: "t1".into(),
                        name: "a".into(),
                        arguments: "{\"x\":1}".into(),
                    },
                    ToolCall {
                        id: "t2".into(),
                        name: "b".into(),
                        arguments: "{}".into(),
                    },
                ],
            },
            Message::Tool {
                tool_call_id: "t1".into(),
                content: "one".into(),
            },
            Message::Tool {
                tool_call_id: "t2".into(),
                content: "two".into(),
            },
        ]);
        assert_eq!(system.as_deref(), Some("be brief"));
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[1]["content"][0]["input"]["x"], 1);
        assert_eq!(msgs[2]["content"].as_array().unwrap().len(), 2);
        assert_eq!(msgs[2]["content"][1]["tool_use_id"], "t2");
    }
}
