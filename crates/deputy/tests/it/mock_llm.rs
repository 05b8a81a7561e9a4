//! A scripted model behind a local OpenAI-compatible Chat Completions server (SSE
//! streaming, usage in the last chunk), for agent tests. Each request gets the next
//! scripted turn; every request body is kept so tests can check what the agent sent
//! back (tool results answering their calls).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use deputy_llm::providers::{ProviderConfig, ProviderKind};
use serde_json::{Value, json};

/// One model turn: text and/or tool calls (name, JSON arguments), with token counts.
#[derive(Clone)]
pub struct Turn {
    pub text: Option<String>,
    pub calls: Vec<(String, Value)>,
    pub tokens: (u64, u64),
}

pub fn say(text: &str) -> Turn {
    Turn {
        text: Some(text.into()),
        calls: vec![],
        tokens: (100, 20),
    }
}

pub fn call(name: &str, args: Value) -> Turn {
    Turn {
        text: None,
        calls: vec![(name.into(), args)],
        tokens: (100, 20),
    }
}

#[derive(Default)]
pub struct MockModel {
    turns: Mutex<VecDeque<Turn>>,
    /// When the script runs out: this turn again (a model that never stops).
    repeat: Mutex<Option<Turn>>,
    pub requests: Mutex<Vec<Value>>,
}

impl MockModel {
    /// Tool results the agent sent, in order (content of each tool message).
    pub fn tool_results(&self) -> Vec<String> {
        let reqs = self.requests.lock().unwrap();
        let Some(last) = reqs.last() else {
            return vec![];
        };
        last["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "tool")
            .map(|m| m["content"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

fn frames(turn: &Turn, n: usize) -> String {
    let mut out = Vec::new();
    if let Some(t) = &turn.text {
        // Text in two deltas, as streams do.
        let mid = t.floor_char_boundary(t.len() / 2);
        for part in [&t[..mid], &t[mid..]] {
            out.push(json!({"choices": [{"index": 0, "delta": {"content": part}}]}));
        }
    }
    for (i, (name, args)) in turn.calls.iter().enumerate() {
        let id = format!("call_{n}_{i}");
        let args = args.to_string();
        let mid = args.len() / 2;
        out.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, "id": id, "type": "function", "function": {"name": name, "arguments": &args[..mid]}}]}}]}));
        out.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, "function": {"arguments": &args[mid..]}}]}}]}));
    }
    let finish = if turn.calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    out.push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}));
    out.push(json!({"choices": [], "usage": {"prompt_tokens": turn.tokens.0, "completion_tokens": turn.tokens.1}}));
    let mut body: String = out.iter().map(|f| format!("data: {f}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    body
}

async fn chat(State(m): State<Arc<MockModel>>, body: String) -> impl IntoResponse {
    let req: Value = serde_json::from_str(&body).unwrap();
    let n = {
        let mut reqs = m.requests.lock().unwrap();
        reqs.push(req);
        reqs.len()
    };
    let turn = m.turns.lock().unwrap().pop_front();
    let turn = turn
        .or_else(|| m.repeat.lock().unwrap().clone())
        .unwrap_or_else(|| say("(the script ran out)"));
    ([("content-type", "text/event-stream")], frames(&turn, n))
}

/// Starts the model; returns it and a provider config pointing at it.
pub async fn start(turns: Vec<Turn>, repeat: Option<Turn>) -> (Arc<MockModel>, ProviderConfig) {
    let m = Arc::new(MockModel::default());
    m.turns.lock().unwrap().extend(turns);
    *m.repeat.lock().unwrap() = repeat;
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(m.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let provider = ProviderConfig {
        kind: ProviderKind::OpenAi,
        base_url: url,
        api_key_env: None,
        default_model: Some("mock-model".into()),
        timeout_secs: 60,
    };
    (m, provider)
}
