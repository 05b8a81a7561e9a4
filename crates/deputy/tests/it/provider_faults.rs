//! The provider fault corpus: each fixture in `faults/` is a recorded sequence of what an
//! OpenAI-compatible provider answered (an HTTP error with its headers, an SSE stream, a
//! stream cut off mid-way, bytes that are not JSON), replayed by a local server to
//! deputy's built-in agent running as a real task. Each fixture says what must come of it
//! (the task's outcome, how many HTTP attempts its first model call took, the reason). For
//! every fixture, every request the agent sent must keep tool-call sequencing: a tool
//! message only answers a call of an earlier assistant message, and each call is answered.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use deputy_llm::providers::{ProviderConfig, ProviderKind};
use serde::Deserialize;
use serde_json::Value;

use crate::agents::agent_task;
use crate::harness::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    description: String,
    responses: Vec<Reply>,
    expect: Expect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reply {
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
    /// SSE `data:` payloads: JSON values, or the string "[DONE]".
    #[serde(default)]
    stream: Option<Vec<Value>>,
    /// Bytes sent as they are (for streams that are not well-formed).
    #[serde(default)]
    raw: Option<String>,
    /// Send this many frames of `stream`, then drop the connection.
    #[serde(default)]
    reset_after: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// `succeeded`, `failed`, or `any` (terminal either way).
    status: String,
    #[serde(default)]
    answer: Option<String>,
    #[serde(default)]
    http_attempts: Option<usize>,
    #[serde(default)]
    reason_contains: Option<String>,
    #[serde(default)]
    tool_error_contains: Option<String>,
}

struct Replayer {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Value>>,
}

fn frame(v: &Value) -> String {
    match v {
        Value::String(s) if s == "[DONE]" => "data: [DONE]\n\n".to_string(),
        other => format!("data: {other}\n\n"),
    }
}

/// When the fixture runs out: a plain answer, so the agent can always finish.
fn final_answer() -> Reply {
    Reply {
        status: None,
        headers: Default::default(),
        body: None,
        stream: Some(vec![
            serde_json::json!({"choices":[{"index":0,"delta":{"content":"all done"}}]}),
            serde_json::json!({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}),
            Value::String("[DONE]".into()),
        ]),
        raw: None,
        reset_after: None,
    }
}

async fn chat(State(r): State<Arc<Replayer>>, body: String) -> Response {
    let req: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    r.requests.lock().unwrap().push(req);
    let reply = r
        .replies
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(final_answer);
    if let Some(status) = reply.status {
        let mut resp = (
            StatusCode::from_u16(status).unwrap(),
            reply.body.clone().unwrap_or_default(),
        )
            .into_response();
        for (k, v) in &reply.headers {
            resp.headers_mut().insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        return resp;
    }
    let sse = [("content-type", "text/event-stream")];
    if let Some(raw) = reply.raw {
        return (sse, raw).into_response();
    }
    let frames: Vec<String> = reply.stream.unwrap_or_default().iter().map(frame).collect();
    match reply.reset_after {
        None => (sse, frames.concat()).into_response(),
        Some(n) => {
            // The first frames, then an error: hyper aborts the response mid-body.
            let head: Vec<Result<Bytes, std::io::Error>> = frames
                .into_iter()
                .take(n)
                .map(|f| Ok(Bytes::from(f)))
                .chain([Err(std::io::Error::other(
                    "connection reset by the fixture",
                ))])
                .collect();
            (sse, Body::from_stream(futures_util::stream::iter(head))).into_response()
        }
    }
}

async fn serve(fixture: &Fixture) -> (Arc<Replayer>, ProviderConfig) {
    let r = Arc::new(Replayer {
        replies: Mutex::new(fixture.responses.iter().cloned().collect()),
        requests: Mutex::default(),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (
        r,
        ProviderConfig {
            kind: ProviderKind::OpenAi,
            base_url: url,
            api_key_env: None,
            default_model: Some("mock-model".into()),
            timeout_secs: 30,
        },
    )
}

/// Every tool message answers a call made by an earlier assistant message, once; every
/// call an assistant message made is answered before the conversation goes on.
fn check_sequencing(name: &str, req: &Value) {
    let Some(messages) = req["messages"].as_array() else {
        panic!("{name}: a request without messages: {req}");
    };
    let mut open: BTreeSet<String> = BTreeSet::new();
    let mut answered: BTreeSet<String> = BTreeSet::new();
    for m in messages {
        match m["role"].as_str() {
            Some("assistant") => {
                assert!(
                    open.is_empty(),
                    "{name}: calls {open:?} unanswered before the next turn"
                );
                for c in m["tool_calls"].as_array().into_iter().flatten() {
                    let id = c["id"].as_str().unwrap_or_default();
                    assert!(
                        !id.is_empty(),
                        "{name}: a tool call sent without an id: {c}"
                    );
                    open.insert(id.to_string());
                }
            }
            Some("tool") => {
                let id = m["tool_call_id"].as_str().unwrap_or_default().to_string();
                assert!(
                    open.remove(&id),
                    "{name}: tool message {id:?} answers no open call"
                );
                assert!(answered.insert(id), "{name}: a call answered twice");
            }
            _ => assert!(open.is_empty(), "{name}: calls {open:?} unanswered"),
        }
    }
    assert!(
        open.is_empty(),
        "{name}: the request left calls {open:?} unanswered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_survives_every_recorded_provider_fault() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/faults");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "the corpus is missing fixtures");
    for path in files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let fixture: Fixture = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{name}: bad fixture: {e}"));
        let (replayer, provider) = serve(&fixture).await;
        let d = TestDaemon::start_with(1, |c| {
            c.providers.insert("faulty".into(), provider);
            c.agents.default_provider = "faulty".into();
        })
        .await;
        let ws = tempfile::tempdir().unwrap();
        let task = d
            .submit(agent_task(ws.path(), |a| {
                a.max_turns = Some(4);
                a.prompt = "list the files, then say you are done".into();
            }))
            .await;
        let t = wait_done(&d.client, task.id).await;
        let e = &fixture.expect;
        let context = format!(
            "{name} ({}): ended {} ({:?})",
            fixture.description, t.status, t.reason
        );
        match e.status.as_str() {
            "any" => assert!(t.status.is_terminal(), "{context}"),
            want => assert_eq!(t.status.to_string(), want, "{context}"),
        }
        if let Some(answer) = &e.answer {
            let got = t.usage.as_ref().and_then(|u| u.result.clone());
            assert_eq!(got.as_deref(), Some(answer.as_str()), "{context}");
        }
        if let Some(needle) = &e.reason_contains {
            let reason = t.reason.clone().unwrap_or_default();
            assert!(
                reason.contains(needle.as_str()),
                "{context}: reason {reason:?}"
            );
        }
        let trace = d.client.trace(&task.id.to_string()).await.unwrap();
        if let Some(n) = e.http_attempts {
            let first = &trace.runs[0].steps[0];
            assert_eq!(
                first.attempts.len(),
                n,
                "{context}: HTTP attempts of the first call"
            );
        }
        let requests = replayer.requests.lock().unwrap().clone();
        for req in &requests {
            check_sequencing(&name, req);
        }
        if let Some(needle) = &e.tool_error_contains {
            let last = requests.last().expect("a request");
            let tool = last["messages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["role"] == "tool")
                .unwrap_or_else(|| panic!("{context}: no tool message was sent back"));
            let content = tool["content"].as_str().unwrap_or_default();
            assert!(
                content.contains(needle.as_str()),
                "{context}: tool result {content:?}"
            );
        }
        eprintln!(
            "fault {name}: {} after {} requests",
            t.status,
            requests.len()
        );
        d.stop().await;
    }
}
