//! Property tests of the sequencing check: conversations built the way an agent loop
//! builds them always pass; any of the ways a loop could get it wrong always fails.

use deputy_llm::{Message, ToolCall, check_sequence};
use proptest::prelude::*;

/// A conversation of `turns`, each: the model answers with `calls[i]` tool calls, whose
/// results come back in a shuffled order (`order` seeds it), then the next user message.
fn build(turns: &[(usize, u64)]) -> Vec<Message> {
    let mut m = vec![
        Message::System {
            content: "sys".into(),
        },
        Message::User {
            content: "task".into(),
        },
    ];
    for (t, (n, seed)) in turns.iter().enumerate() {
        let ids: Vec<String> = (0..*n).map(|i| format!("call_{t}_{i}")).collect();
        m.push(Message::Assistant {
            content: (*n == 0).then(|| "thinking".to_string()),
            tool_calls: ids
                .iter()
                .map(|id| ToolCall {
                    id: id.clone(),
                    name: "shell".into(),
                    arguments: "{}".into(),
                })
                .collect(),
        });
        let mut order = ids.clone();
        // A deterministic shuffle from the seed.
        let mut s = *seed;
        for i in (1..order.len()).rev() {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            order.swap(i, (s % (i as u64 + 1)) as usize);
        }
        for id in order {
            m.push(Message::Tool {
                tool_call_id: id,
                content: "ok".into(),
            });
        }
        if t + 1 < turns.len() {
            m.push(Message::User {
                content: "more".into(),
            });
        }
    }
    m
}

fn turns() -> impl Strategy<Value = Vec<(usize, u64)>> {
    prop::collection::vec((0usize..4, any::<u64>()), 1..6)
}

proptest! {
    #[test]
    fn loop_built_conversations_pass(t in turns()) {
        prop_assert_eq!(check_sequence(&build(&t)), Ok(()));
    }

    #[test]
    fn dropping_a_tool_result_fails(t in turns(), pick in any::<prop::sample::Index>()) {
        let mut m = build(&t);
        let results: Vec<usize> = m.iter().enumerate().filter(|(_, x)| matches!(x, Message::Tool { .. })).map(|(i, _)| i).collect();
        prop_assume!(!results.is_empty());
        m.remove(results[pick.index(results.len())]);
        prop_assert!(check_sequence(&m).is_err());
    }

    #[test]
    fn duplicating_a_tool_result_fails(t in turns(), pick in any::<prop::sample::Index>()) {
        let mut m = build(&t);
        let results: Vec<usize> = m.iter().enumerate().filter(|(_, x)| matches!(x, Message::Tool { .. })).map(|(i, _)| i).collect();
        prop_assume!(!results.is_empty());
        let i = results[pick.index(results.len())];
        let dup = m[i].clone();
        m.insert(i + 1, dup);
        prop_assert!(check_sequence(&m).is_err());
    }

    #[test]
    fn a_result_before_its_call_or_an_orphan_fails(t in turns(), pick in any::<prop::sample::Index>()) {
        let mut m = build(&t);
        // An orphan answering nothing, anywhere after the first message.
        let at = 1 + pick.index(m.len());
        m.insert(at, Message::Tool { tool_call_id: "nobody".into(), content: "?".into() });
        prop_assert!(check_sequence(&m).is_err());
    }
}
