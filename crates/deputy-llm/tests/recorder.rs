//! The debug recorder end to end: model calls against the local mock, recorded into a
//! real SQLite store, read back as a trace. Each fault checks the call's result, the
//! recorded steps and attempts, and their statuses; and a run with an API key leaves
//! that key nowhere in the database or the logs.

use std::time::Duration;

use deputy_core::trace::{LlmRun, RecordStatus};
use deputy_llm::anthropic::client::AnthropicClient;
use deputy_llm::openai::client::{ChatRequest, LlmError, OpenAiClient, ToolSpec};
use deputy_llm::tools::ArgumentSchema;
use deputy_llm::{FinishReason, Message, check_sequence};
use serde_json::{Value, json};

mod common;
use common::{Recording, Reply, mock};

const KEY: &str = "sk-deputy-test-0f9e8d7c6b5a4321";

fn client(url: &str) -> OpenAiClient {
    let mut c = OpenAiClient::new(url, Some(KEY.into()));
    c.retry.base_delay = Duration::from_millis(5);
    c.retry.max_attempts = 3;
    c
}

fn tool() -> ToolSpec {
    ToolSpec {
        name: "read_file".into(),
        description: "Read a file".into(),
        parameters: json!({"type": "object", "properties": {"path": {"type": "string"}},
                           "required": ["path"], "additionalProperties": false}),
    }
}

fn request(messages: Vec<Message>) -> ChatRequest {
    ChatRequest {
        model: "m".into(),
        messages,
        tools: vec![tool()],
        max_tokens: None,
    }
}

fn ask() -> Vec<Message> {
    vec![Message::User {
        content: "read notes.txt".into(),
    }]
}

fn sse(v: &[Value]) -> Vec<String> {
    let mut f: Vec<String> = v.iter().map(Value::to_string).collect();
    f.push("[DONE]".into());
    f
}

fn answer(text: &str) -> Vec<String> {
    sse(&[
        json!({"choices": [{"delta": {"content": text}}]}),
        json!({"choices": [{"delta": {}, "finish_reason": "stop"}]}),
        json!({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2}}),
    ])
}

fn tool_call(arguments: &str) -> Vec<String> {
    sse(&[
        json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "read_file", "arguments": ""}}]}}]}),
        json!({"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]}, "finish_reason": "tool_calls"}]}),
    ])
}

fn only_run(runs: &[LlmRun]) -> &LlmRun {
    assert_eq!(runs.len(), 1, "{runs:#?}");
    &runs[0]
}

#[tokio::test]
async fn retried_faults_end_completed_with_every_attempt_kept() {
    let (_, url) = mock(vec![
        Reply::Status(429, Some("0")),
        Reply::Status(500, None),
        Reply::Reset(vec![
            json!({"choices": [{"delta": {"content": "par"}}]}).to_string(),
        ]),
        Reply::Sse(answer("done")),
    ])
    .await;
    let rec = Recording::new().await;
    let run = rec.run("openai").await;
    let mut c = client(&url);
    c.retry.max_attempts = 4;
    let out = c
        .call(&request(ask()), true, &mut |_| {}, Some(&run))
        .await
        .unwrap();
    assert_eq!(
        out.completion.message,
        Message::Assistant {
            content: Some("done".into()),
            tool_calls: vec![]
        }
    );
    run.finish(RecordStatus::Completed, None).await;

    let runs = rec.trace().await;
    let r = only_run(&runs);
    assert_eq!(r.status, RecordStatus::Completed);
    assert_eq!(r.usage.input_tokens, Some(11));
    assert_eq!(r.steps.len(), 1);
    let step = &r.steps[0];
    assert_eq!(step.status, RecordStatus::Completed);
    assert_eq!(
        step.error, None,
        "the retry that succeeded cleared the error"
    );
    assert_eq!(step.operation, "stream");
    assert_eq!(step.usage.output_tokens, Some(2));
    assert_eq!(step.usage.cached_tokens, None, "unknown stays unknown");
    assert!(step.first_token_at.is_some() && step.ended_at.is_some());
    assert_eq!(step.request["messages"][0]["content"], "read notes.txt");
    assert_eq!(step.response.as_ref().unwrap()["finish_reason"], "stop");
    // The reset may come before or after the response head reached the client.
    let codes: Vec<_> = step.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes[..2], [Some(429), Some(500)]);
    assert!(matches!(codes[2], None | Some(200)), "{codes:?}");
    assert_eq!(codes[3], Some(200));
    let a = &step.attempts;
    assert!(a[0].error.as_deref().unwrap().contains("429"));
    assert_eq!(
        a[0].response_body.as_deref(),
        Some(r#"{"error":{"message":"scripted"}}"#)
    );
    assert!(a[2].error.is_some(), "the reset attempt failed");
    assert!(a[2].chunks.len() <= 1);
    assert_eq!(a[3].error, None);
    assert_eq!(a[3].chunks.len(), 4);
    assert_eq!(a[3].method, "POST");
    assert!(a[3].url.ends_with("/v1/chat/completions"));
    let auth: Vec<_> = a[3]
        .request_headers
        .iter()
        .filter(|(k, _)| k == "authorization")
        .collect();
    assert_eq!(
        auth,
        vec![&("authorization".to_string(), "[redacted]".to_string())]
    );
    let body: Value = serde_json::from_str(a[3].request_body.as_deref().unwrap()).unwrap();
    assert_eq!(body["stream"], true);
}

#[tokio::test]
async fn a_malformed_chunk_is_a_failed_step_and_is_not_retried() {
    let (m, url) = mock(vec![Reply::Sse(vec!["{\"choices\": [".into()])]).await;
    let rec = Recording::new().await;
    let run = rec.run("openai").await;
    let err = client(&url)
        .call(&request(ask()), true, &mut |_| {}, Some(&run))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not valid JSON"), "{err}");
    run.finish(RecordStatus::Error, Some(&err.to_string()))
        .await;
    assert_eq!(m.bodies.lock().unwrap().len(), 1);
    let runs = rec.trace().await;
    let r = only_run(&runs);
    assert_eq!(r.status, RecordStatus::Error);
    let step = &r.steps[0];
    assert_eq!(step.status, RecordStatus::Error);
    assert!(step.error.as_deref().unwrap().contains("not valid JSON"));
    assert_eq!(step.response, None);
    assert_eq!(step.attempts.len(), 1);
    assert_eq!(step.attempts[0].chunks, vec!["{\"choices\": [".to_string()]);
}

#[tokio::test]
async fn a_stream_truncated_every_time_gives_up_with_each_attempt_recorded() {
    let partial = vec![json!({"choices": [{"delta": {"content": "half"}}]}).to_string()];
    let (_, url) = mock(vec![
        Reply::Sse(partial.clone()),
        Reply::Sse(partial.clone()),
        Reply::Sse(partial),
    ])
    .await;
    let rec = Recording::new().await;
    let run = rec.run("openai").await;
    let err = client(&url)
        .call(&request(ask()), true, &mut |_| {}, Some(&run))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LlmError::Exhausted { attempts: 3, .. }),
        "{err}"
    );
    let runs = rec.trace().await;
    let step = &only_run(&runs).steps[0];
    assert_eq!(step.status, RecordStatus::Error);
    assert!(
        step.error
            .as_deref()
            .unwrap()
            .starts_with("gave up after 3 attempts")
    );
    assert_eq!(step.attempts.len(), 3);
    for a in &step.attempts {
        assert_eq!(a.status_code, Some(200));
        assert!(
            a.error
                .as_deref()
                .unwrap()
                .contains("neither [DONE] nor a finish reason")
        );
    }
}

#[tokio::test]
async fn invalid_tool_arguments_go_back_to_the_model_as_a_tool_error() {
    let (m, url) = mock(vec![
        Reply::Sse(tool_call("{\"path\": ")),
        Reply::Sse(answer("sorry, fixed")),
    ])
    .await;
    let rec = Recording::new().await;
    let run = rec.run("openai").await;
    let c = client(&url);
    let mut messages = ask();
    let first = c
        .call(&request(messages.clone()), true, &mut |_| {}, Some(&run))
        .await
        .unwrap();
    assert_eq!(first.completion.finish_reason, FinishReason::ToolCalls);
    let Message::Assistant { tool_calls, .. } = &first.completion.message else {
        panic!("an assistant message")
    };
    let call = tool_calls[0].clone();
    let schema = ArgumentSchema::new(&tool().parameters).unwrap();
    let problem = schema.check(&call.name, &call.arguments).unwrap_err();
    assert!(problem.contains("not valid JSON"), "{problem}");
    messages.push(first.completion.message.clone());
    messages.push(Message::Tool {
        tool_call_id: call.id.clone(),
        content: problem.clone(),
    });
    check_sequence(&messages).unwrap();
    let second = c
        .call(&request(messages), true, &mut |_| {}, Some(&run))
        .await
        .unwrap();
    assert_eq!(second.completion.finish_reason, FinishReason::Stop);
    run.finish(RecordStatus::Completed, None).await;

    let sent = m.bodies.lock().unwrap()[1].clone();
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], "call_1");
    assert_eq!(sent["messages"][2]["role"], "tool");
    assert_eq!(sent["messages"][2]["tool_call_id"], "call_1");
    let runs = rec.trace().await;
    let r = only_run(&runs);
    assert_eq!(r.steps.len(), 2);
    assert!(r.steps.iter().all(|s| s.status == RecordStatus::Completed));
    assert_eq!(r.steps[1].request["messages"][2]["content"], problem);
    assert_eq!(r.usage.input_tokens, Some(11), "only step 2 reported usage");
}

#[tokio::test]
async fn a_conversation_that_fails_the_check_is_a_failed_step_with_no_attempts() {
    let (m, url) = mock(vec![]).await;
    let rec = Recording::new().await;
    let run = rec.run("openai").await;
    let mut messages = ask();
    messages.push(Message::Tool {
        tool_call_id: "nobody".into(),
        content: "x".into(),
    });
    let err = client(&url)
        .call(&request(messages), true, &mut |_| {}, Some(&run))
        .await
        .unwrap_err();
    assert!(matches!(err, LlmError::Sequence(_)));
    assert!(m.bodies.lock().unwrap().is_empty());
    let runs = rec.trace().await;
    let step = &only_run(&runs).steps[0];
    assert_eq!(step.status, RecordStatus::Error);
    assert!(
        step.error.as_deref().unwrap().contains("message 1"),
        "{:?}",
        step.error
    );
    assert!(step.attempts.is_empty());
}

#[tokio::test]
async fn anthropic_calls_are_recorded_the_same_way() {
    let (_, url) = mock(vec![Reply::Events(vec![
        json!({"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "read_file", "input": {}}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"path\":\"a\"}"}}),
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 6}}),
        json!({"type": "message_stop"}),
    ])])
    .await;
    let rec = Recording::new().await;
    let run = rec.run("anthropic").await;
    let c = AnthropicClient::new(&url, Some(KEY.into()));
    let out = c
        .call(&request(ask()), &mut |_| {}, Some(&run))
        .await
        .unwrap();
    assert_eq!(out.completion.finish_reason, FinishReason::ToolCalls);
    run.finish(RecordStatus::Completed, None).await;
    let runs = rec.trace().await;
    let r = only_run(&runs);
    assert_eq!(r.provider, "anthropic");
    let step = &r.steps[0];
    assert_eq!(step.status, RecordStatus::Completed);
    assert_eq!(step.usage.input_tokens, Some(9));
    assert_eq!(step.usage.output_tokens, Some(6));
    let a = &step.attempts[0];
    assert!(a.url.ends_with("/v1/messages"));
    assert_eq!(a.chunks.len(), 6);
    let key_header = a.request_headers.iter().find(|(k, _)| k == "x-api-key");
    assert_eq!(key_header.unwrap().1, "[redacted]");
}

#[tokio::test]
async fn each_step_is_exported_as_a_genai_span_when_a_collector_is_configured() {
    use axum::routing::post;
    let (spans_tx, mut spans_rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let collector = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::Json<Value>| {
            let tx = spans_tx.clone();
            async move {
                tx.send(body.0).unwrap();
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await.unwrap() });

    let (_, url) = mock(vec![Reply::Sse(answer("hi")), Reply::Status(400, None)]).await;
    let rec = Recording::new().await;
    let exporter = deputy_llm::record::otlp::SpanExporter::start(&endpoint);
    let recorder = rec.recorder.clone().with_spans(exporter.clone());
    let run = deputy_llm::record::RunRecorder::start(&recorder, rec.task, 1, "openai", "m").await;
    let c = client(&url);
    c.call(&request(ask()), true, &mut |_| {}, Some(&run))
        .await
        .unwrap();
    c.call(&request(ask()), true, &mut |_| {}, Some(&run))
        .await
        .unwrap_err();

    let mut spans = Vec::new();
    while spans.len() < 2 {
        let body = tokio::time::timeout(Duration::from_secs(10), spans_rx.recv())
            .await
            .expect("the collector got the spans in time")
            .unwrap();
        for s in body["resourceSpans"][0]["scopeSpans"][0]["spans"]
            .as_array()
            .unwrap()
        {
            spans.push(s.clone());
        }
    }
    let attr = |span: &Value, key: &str| {
        span["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| a["value"].clone())
    };
    assert_eq!(spans[0]["name"], "chat m");
    assert_eq!(
        spans[0]["traceId"], spans[1]["traceId"],
        "one trace per run"
    );
    assert_eq!(
        attr(&spans[0], "gen_ai.operation.name").unwrap()["stringValue"],
        "chat"
    );
    assert_eq!(
        attr(&spans[0], "gen_ai.request.model").unwrap()["stringValue"],
        "m"
    );
    assert_eq!(
        attr(&spans[0], "gen_ai.usage.input_tokens").unwrap()["intValue"],
        "11"
    );
    assert_eq!(
        attr(&spans[0], "deputy.task.id").unwrap()["stringValue"],
        rec.task.to_string()
    );
    assert_eq!(spans[0]["status"]["code"], 1);
    assert_eq!(
        spans[1]["status"]["code"], 2,
        "the failed call is an error span"
    );
    assert!(attr(&spans[1], "error.type").is_some());
    assert_eq!(
        exporter
            .stats()
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}
