//! The OpenAI-compatible client against a local mock server speaking the real wire
//! format (JSON and SSE), faults included.

use std::time::Duration;

use deputy_llm::openai::client::{ChatRequest, LlmError, OpenAiClient, ToolSpec};
use deputy_llm::openai::stream::StreamError;
use deputy_llm::{FinishReason, Message, ToolCall};
use serde_json::{Value, json};

mod common;
use common::{Reply, mock};

fn client(url: &str) -> OpenAiClient {
    let mut c = OpenAiClient::new(url, Some("sk-test-secret".into()));
    c.retry.base_delay = Duration::from_millis(10);
    c
}

fn request() -> ChatRequest {
    ChatRequest {
        model: "m".into(),
        messages: vec![Message::User {
            content: "list the files".into(),
        }],
        tools: vec![ToolSpec {
            name: "list_dir".into(),
            description: "List a directory".into(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
        }],
        max_tokens: None,
    }
}

fn frames(v: &[Value]) -> Vec<String> {
    v.iter().map(Value::to_string).collect()
}

fn stream_ok() -> Vec<String> {
    let mut f = frames(&[
        json!({"choices": [{"delta": {"content": "Let me look."}}]}),
        json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "call_9", "function": {"name": "list_dir", "arguments": ""}}]}}]}),
        json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"path\":\".\"}"}}]}, "finish_reason": "tool_calls"}]}),
        json!({"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 7}}),
    ]);
    f.push("[DONE]".into());
    f
}

#[tokio::test]
async fn a_stream_is_assembled_and_text_arrives_as_it_streams() {
    let (m, url) = mock(vec![Reply::Sse(stream_ok())]).await;
    let mut seen = String::new();
    let out = client(&url)
        .stream(&request(), &mut |t| seen.push_str(t))
        .await
        .unwrap();
    assert_eq!(seen, "Let me look.");
    assert_eq!(out.completion.finish_reason, FinishReason::ToolCalls);
    let Message::Assistant { tool_calls, .. } = &out.completion.message else {
        panic!()
    };
    assert_eq!(
        tool_calls,
        &vec![ToolCall {
            id: "call_9".into(),
            name: "list_dir".into(),
            arguments: r#"{"path":"."}"#.into()
        }]
    );
    assert_eq!(out.completion.usage.input_tokens, Some(20));
    assert_eq!(out.attempts.len(), 1);
    let body = &m.bodies.lock().unwrap()[0];
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["tools"][0]["function"]["name"], "list_dir");
    assert_eq!(m.auth.lock().unwrap()[0], "Bearer sk-test-secret");
}

#[tokio::test]
async fn a_429_with_retry_after_and_a_500_are_retried() {
    let (m, url) = mock(vec![
        Reply::Status(429, Some("0")),
        Reply::Status(500, None),
        Reply::Sse(stream_ok()),
    ])
    .await;
    let out = client(&url).stream(&request(), &mut |_| {}).await.unwrap();
    let statuses: Vec<_> = out.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![Some(429), Some(500), Some(200)]);
    assert_eq!(m.bodies.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn a_400_is_never_retried() {
    let (m, url) = mock(vec![Reply::Status(400, None), Reply::Sse(stream_ok())]).await;
    let err = client(&url)
        .stream(&request(), &mut |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Status { status: 400, .. }), "{err}");
    assert_eq!(m.bodies.lock().unwrap().len(), 1);
    assert!(!err.to_string().contains("sk-test-secret"));
}

#[tokio::test]
async fn a_reset_mid_stream_and_a_truncated_stream_are_retried() {
    let truncated = frames(&[json!({"choices": [{"delta": {"content": "partial"}}]})]);
    let (_, url) = mock(vec![
        Reply::Reset(truncated.clone()),
        Reply::Sse(truncated),
        Reply::Sse(stream_ok()),
    ])
    .await;
    let out = client(&url).stream(&request(), &mut |_| {}).await.unwrap();
    assert_eq!(out.attempts.len(), 3);
    assert!(
        out.attempts[1]
            .error
            .as_deref()
            .unwrap()
            .contains("neither [DONE] nor a finish reason")
    );
}

#[tokio::test]
async fn a_malformed_chunk_fails_the_call() {
    let (_, url) = mock(vec![Reply::Sse(vec!["{\"choices\": [".into()])]).await;
    let err = client(&url)
        .stream(&request(), &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, LlmError::Stream(StreamError::MalformedChunk { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn non_streaming_completions_parse() {
    let (_, url) = mock(vec![Reply::Json(json!({
        "choices": [{"message": {"role": "assistant", "content": "done"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1}
    }))])
    .await;
    let out = client(&url).generate(&request()).await.unwrap();
    assert_eq!(
        out.completion.message,
        Message::Assistant {
            content: Some("done".into()),
            tool_calls: vec![]
        }
    );
    assert_eq!(out.completion.usage.output_tokens, Some(1));
}

#[tokio::test]
async fn a_malformed_conversation_never_leaves() {
    let (m, url) = mock(vec![]).await;
    let mut req = request();
    req.messages.push(Message::Tool {
        tool_call_id: "nobody".into(),
        content: "x".into(),
    });
    let err = client(&url).generate(&req).await.unwrap_err();
    assert!(matches!(err, LlmError::Sequence(_)), "{err}");
    assert!(m.bodies.lock().unwrap().is_empty(), "nothing was sent");
}
