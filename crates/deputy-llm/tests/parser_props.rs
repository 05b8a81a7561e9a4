//! Property tests of the parsers of what providers send: the SSE framing (however the
//! bytes are split into network reads), and the OpenAI and Anthropic stream assemblers
//! (any payload, well-formed or not, is an answer or an error, never a panic).

use deputy_llm::anthropic::stream::AnthropicAccumulator;
use deputy_llm::openai::stream::StreamAccumulator;
use deputy_llm::{Message, ToolCall};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use proptest::prelude::*;
use serde_json::{Value, json};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// Parses an SSE byte stream delivered in the given pieces; returns (event, data) pairs.
fn parse_sse(rt: &tokio::runtime::Runtime, pieces: Vec<Vec<u8>>) -> Vec<(String, String)> {
    rt.block_on(async move {
        let chunks = futures_util::stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>));
        chunks
            .eventsource()
            .filter_map(|e| async move { e.ok().map(|e| (e.event, e.data)) })
            .collect()
            .await
    })
}

/// Splits `bytes` at the given cut points.
fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts {
        out.push(bytes[at..c].to_vec());
        at = c;
    }
    out.push(bytes[at..].to_vec());
    out
}

/// An SSE stream: events with a name or not, data over one or more lines, comments,
/// LF or CRLF line ends.
fn sse_stream() -> impl Strategy<Value = (Vec<u8>, Vec<(String, String)>)> {
    let data_line = "[a-zA-Z0-9 {}\":,é☃-]{0,40}";
    let event = (
        prop::option::of("[a-z.]{1,12}"),
        prop::collection::vec(data_line, 1..4),
        any::<bool>(),
    );
    (prop::collection::vec(event, 0..12), any::<bool>()).prop_map(|(events, crlf)| {
        let nl = if crlf { "\r\n" } else { "\n" };
        let mut text = String::new();
        let mut expected = Vec::new();
        for (name, lines, comment) in events {
            if comment {
                text.push_str(&format!(": keep-alive{nl}"));
            }
            if let Some(n) = &name {
                text.push_str(&format!("event: {n}{nl}"));
            }
            for l in &lines {
                text.push_str(&format!("data: {l}{nl}"));
            }
            text.push_str(nl);
            expected.push((name.unwrap_or_else(|| "message".into()), lines.join("\n")));
        }
        (text.into_bytes(), expected)
    })
}

/// Plausible OpenAI chunks: content deltas, tool-call pieces (with or without ids,
/// indexes that may jump), finish reasons, usage, empty choice lists, odd types.
fn openai_chunk() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z ]{0,10}".prop_map(|t| json!({"choices": [{"index": 0, "delta": {"content": t}}]})),
        (
            0u64..3,
            prop::option::of("[a-z_0-9]{1,8}"),
            "[a-z_]{0,6}",
            "[{}\":a-z0-9 ]{0,12}"
        )
            .prop_map(|(i, id, name, args)| {
                let mut call = json!({"index": i, "function": {"name": name, "arguments": args}});
                if let Some(id) = id {
                    call["id"] = json!(id);
                }
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
            }),
        prop_oneof![
            Just("stop"),
            Just("tool_calls"),
            Just("length"),
            Just("weird")
        ]
        .prop_map(|f| json!({"choices": [{"index": 0, "delta": {}, "finish_reason": f}]})),
        (0u64..1000, 0u64..1000).prop_map(
            |(p, c)| json!({"choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c}})
        ),
        Just(json!({"choices": []})),
        Just(json!({"choices": null})),
        Just(json!({"choices": [{"delta": {"content": 7}}]})),
        Just(json!({"error": {"message": "boom"}})),
        Just(json!([1, 2])),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn sse_events_do_not_depend_on_how_the_bytes_arrive(
        (bytes, expected) in sse_stream(),
        cuts in prop::collection::vec(any::<usize>(), 0..16),
    ) {
        let rt = runtime();
        let whole = parse_sse(&rt, vec![bytes.clone()]);
        prop_assert_eq!(&whole, &expected);
        let pieces = parse_sse(&rt, split(&bytes, &cuts));
        prop_assert_eq!(pieces, expected);
    }

    #[test]
    fn any_payload_is_an_answer_or_an_error_never_a_panic(
        payloads in prop::collection::vec(any::<String>(), 0..8),
    ) {
        let mut o = StreamAccumulator::new();
        let mut a = AnthropicAccumulator::new();
        for p in &payloads {
            let _ = o.push(p);
            let _ = a.push(p);
        }
        let _ = o.finish();
        let _ = a.finish();
    }

    #[test]
    fn openai_chunks_in_any_mix_assemble_or_fail_cleanly(
        chunks in prop::collection::vec(openai_chunk(), 0..24),
        done in any::<bool>(),
    ) {
        let mut acc = StreamAccumulator::new();
        let mut streamed = String::new();
        let mut failed = false;
        for c in &chunks {
            match acc.push(&c.to_string()) {
                Ok(Some(t)) => streamed.push_str(&t),
                Ok(None) => {}
                Err(_) => { failed = true; break; }
            }
        }
        if !failed && done {
            let _ = acc.push("[DONE]");
        }
        if let (false, Ok(c)) = (failed, acc.finish()) {
            match c.message {
                Message::Assistant { content, tool_calls } => {
                    // What streamed out is the text of the answer.
                    prop_assert_eq!(content.unwrap_or_default(), streamed);
                    // An assembled call always has a name and an id no other call of the
                    // answer has (results must name their call), or the call failed.
                    let mut ids = std::collections::HashSet::new();
                    for ToolCall { id, name, .. } in tool_calls {
                        prop_assert!(!id.is_empty());
                        prop_assert!(!name.trim().is_empty());
                        prop_assert!(ids.insert(id.clone()), "duplicate id {}", id);
                    }
                }
                other => prop_assert!(false, "not an assistant message: {:?}", other),
            }
        }
    }

    #[test]
    fn anthropic_events_in_any_mix_assemble_or_fail_cleanly(
        kinds in prop::collection::vec(0u8..9, 0..20),
        texts in prop::collection::vec("[a-z ]{0,8}", 20),
    ) {
        let mut acc = AnthropicAccumulator::new();
        for (k, t) in kinds.iter().zip(&texts) {
            let ev = match k {
                0 => json!({"type": "message_start", "message": {"usage": {"input_tokens": 5}}}),
                1 => json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                2 => json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}),
                3 => json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "shell", "input": {}}}),
                4 => json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": t}}),
                5 => json!({"type": "content_block_stop", "index": 1}),
                6 => json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}),
                7 => json!({"type": "message_stop"}),
                _ => json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}),
            };
            if acc.push(&ev.to_string()).is_err() {
                break;
            }
        }
        let _ = acc.finish();
    }
}
