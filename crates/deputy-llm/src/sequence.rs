//! The conversation rules a provider enforces, checked before a request leaves: every
//! tool message answers a tool call of the assistant message that opened its turn, and
//! every tool call is answered before the conversation moves on. A violation names the
//! message index, so the bug ("messages with role 'tool' must be a response to a
//! preceding message with 'tool_calls'") can never reach a provider.

use std::collections::BTreeSet;

use crate::types::Message;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error(
        "message {index}: a tool result for `{id}` answers no pending tool call of the preceding assistant message"
    )]
    OrphanToolResult { index: usize, id: String },
    #[error("message {index}: tool call `{id}` is answered twice")]
    DuplicateToolResult { index: usize, id: String },
    #[error(
        "message {index}: the assistant's tool calls {ids:?} (message {opened_at}) were not all answered before it"
    )]
    UnansweredToolCalls {
        index: usize,
        opened_at: usize,
        ids: Vec<String>,
    },
    #[error("message {index}: two tool calls share the id `{id}`")]
    DuplicateToolCallId { index: usize, id: String },
    #[error(
        "the conversation ends with unanswered tool calls {ids:?} (message {opened_at}); answer them before the next model turn"
    )]
    EndsUnanswered { opened_at: usize, ids: Vec<String> },
}

/// Checks a conversation about to be sent to a model.
pub fn check_sequence(messages: &[Message]) -> Result<(), SequenceError> {
    // The tool calls still waiting for a result, and where they were made.
    let mut pending: BTreeSet<String> = BTreeSet::new();
    let mut answered: BTreeSet<String> = BTreeSet::new();
    let mut opened_at = 0;
    for (index, m) in messages.iter().enumerate() {
        match m {
            Message::Tool { tool_call_id, .. } => {
                if answered.contains(tool_call_id) {
                    return Err(SequenceError::DuplicateToolResult {
                        index,
                        id: tool_call_id.clone(),
                    });
                }
                if !pending.remove(tool_call_id) {
                    return Err(SequenceError::OrphanToolResult {
                        index,
                        id: tool_call_id.clone(),
                    });
                }
                answered.insert(tool_call_id.clone());
            }
            other => {
                if !pending.is_empty() {
                    return Err(SequenceError::UnansweredToolCalls {
                        index,
                        opened_at,
                        ids: pending.iter().cloned().collect(),
                    });
                }
                answered.clear();
                if let Message::Assistant { tool_calls, .. } = other {
                    for c in tool_calls {
                        if !pending.insert(c.id.clone()) {
                            return Err(SequenceError::DuplicateToolCallId {
                                index,
                                id: c.id.clone(),
                            });
                        }
                    }
                    opened_at = index;
                }
            }
        }
    }
    if pending.is_empty() {
        Ok(())
    } else {
        Err(SequenceError::EndsUnanswered {
            opened_at,
            ids: pending.into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ToolCall;

    fn user(s: &str) -> Message {
        Message::User { content: s.into() }
    }

    fn calls(ids: &[&str]) -> Message {
        Message::Assistant {
            content: None,
            tool_calls: ids
                .iter()
                .map(|id| ToolCall {
                    id: (*id).into(),
                    name: "shell".into(),
                    arguments: "{}".into(),
                })
                .collect(),
        }
    }

    fn result(id: &str) -> Message {
        Message::Tool {
            tool_call_id: id.into(),
            content: "ok".into(),
        }
    }

    fn answer(s: &str) -> Message {
        Message::Assistant {
            content: Some(s.into()),
            tool_calls: vec![],
        }
    }

    #[test]
    fn a_well_formed_tool_turn_passes() {
        let m = [
            user("hi"),
            calls(&["a", "b"]),
            result("b"),
            result("a"),
            answer("done"),
        ];
        assert_eq!(check_sequence(&m), Ok(()));
    }

    #[test]
    fn a_tool_message_without_its_call_is_caught_with_its_index() {
        let m = [user("hi"), result("a")];
        assert_eq!(
            check_sequence(&m),
            Err(SequenceError::OrphanToolResult {
                index: 1,
                id: "a".into()
            })
        );
        // A result for a call of an earlier, closed turn is also an orphan.
        let m = [
            user("hi"),
            calls(&["a"]),
            result("a"),
            answer("x"),
            result("a"),
        ];
        assert!(matches!(
            check_sequence(&m),
            Err(SequenceError::OrphanToolResult { index: 4, .. })
        ));
    }

    #[test]
    fn unanswered_calls_are_caught_before_the_next_turn_and_at_the_end() {
        let m = [user("hi"), calls(&["a", "b"]), result("a"), user("more")];
        assert!(matches!(
            check_sequence(&m),
            Err(SequenceError::UnansweredToolCalls {
                index: 3,
                opened_at: 1,
                ..
            })
        ));
        let m = [user("hi"), calls(&["a"])];
        assert!(matches!(
            check_sequence(&m),
            Err(SequenceError::EndsUnanswered { .. })
        ));
    }

    #[test]
    fn duplicates_are_caught() {
        let m = [user("hi"), calls(&["a"]), result("a"), result("a")];
        assert!(matches!(
            check_sequence(&m),
            Err(SequenceError::DuplicateToolResult { index: 3, .. })
        ));
        let m = [user("hi"), calls(&["a", "a"])];
        assert!(matches!(
            check_sequence(&m),
            Err(SequenceError::DuplicateToolCallId { index: 1, .. })
        ));
    }
}
