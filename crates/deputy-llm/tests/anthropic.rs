//! The Anthropic client against a local mock speaking the Messages API's SSE.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use deputy_llm::anthropic::client::{AnthropicClient, LlmError};
use deputy_llm::openai::client::ChatRequest;
use deputy_llm::openai::stream::StreamError;
use deputy_llm::{FinishReason, Message};
use serde_json::{Value, json};

#[derive(Default)]
struct Mock {
    replies: Mutex<VecDeque<Result<Vec<Value>, u16>>>,
    seen: Mutex<Vec<(String, Value)>>,
}

async fn messages(State(m): State<Arc<Mock>>, headers: HeaderMap, body: String) -> Response {
    let key = headers
        .get("x-api-key")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    m.seen
        .lock()
        .unwrap()
        .push((key, serde_json::from_str(&body).unwrap()));
    match m
        .replies
        .lock()
        .unwrap()
        .pop_front()
        .expect("a scripted reply")
    {
        Err(code) => (StatusCode::from_u16(code).unwrap(), r#"{"type":"error"}"#).into_response(),
        Ok(events) => {
            let body: String = events
                .iter()
                .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
                .collect();
            ([("content-type", "text/event-stream")], body).into_response()
        }
    }
}

async fn mock(replies: Vec<Result<Vec<Value>, u16>>) -> (Arc<Mock>, String) {
    let m = Arc::new(Mock::default());
    m.replies.lock().unwrap().extend(replies);
    let app = Router::new()
        .route("/v1/messages", post(messages))
        .with_state(m.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (m, url)
}

fn ok_stream() -> Vec<Value> {
    vec![
        json!({"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_7", "name": "glob", "input": {}}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"pattern\":\"*.rs\"}"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 12}}),
        json!({"type": "message_stop"}),
    ]
}

fn request() -> ChatRequest {
    ChatRequest {
        model: "claude-test".into(),
        messages: vec![
            Message::System {
                content: "You are terse.".into(),
            },
            Message::User {
                content: "find rust files".into(),
            },
        ],
        tools: vec![],
        max_tokens: None,
    }
}

fn client(url: &str) -> AnthropicClient {
    let mut c = AnthropicClient::new(url, Some("sk-ant-secret".into()));
    c.retry.base_delay = Duration::from_millis(10);
    c
}

#[tokio::test]
async fn a_tool_use_stream_after_an_overloaded_answer() {
    let (m, url) = mock(vec![Err(529), Ok(ok_stream())]).await;
    let out = client(&url).stream(&request(), &mut |_| {}).await.unwrap();
    assert_eq!(out.attempts.len(), 2);
    assert_eq!(out.completion.finish_reason, FinishReason::ToolCalls);
    let Message::Assistant { tool_calls, .. } = &out.completion.message else {
        panic!()
    };
    assert_eq!(tool_calls[0].arguments, r#"{"pattern":"*.rs"}"#);
    assert_eq!(out.completion.usage.output_tokens, Some(12));
    let seen = m.seen.lock().unwrap();
    assert_eq!(seen[1].0, "sk-ant-secret");
    assert_eq!(seen[1].1["system"], "You are terse.");
    assert_eq!(seen[1].1["max_tokens"], 4096);
}

#[tokio::test]
async fn an_error_event_fails_the_call_without_retrying() {
    let (m, url) = mock(vec![Ok(vec![
        json!({"type": "message_start", "message": {"usage": {}}}),
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}),
    ])])
    .await;
    let err = client(&url)
        .stream(&request(), &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, LlmError::Stream(StreamError::ServerError(_))),
        "{err}"
    );
    assert_eq!(m.seen.lock().unwrap().len(), 1);
}
