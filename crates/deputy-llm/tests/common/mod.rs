//! A local mock of the model APIs speaking their real wire formats (JSON, SSE with and
//! without event names), with scripted faults; and a recording setup on a real SQLite
//! store. Shared by the integration tests of this crate.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use deputy_core::TaskId;
use deputy_core::submit::{NewTask, SubmitDefaults};
use deputy_llm::record::{RecordLimits, Recorder, RunRecorder, drain};
use deputy_store::Store;
use deputy_store::sqlite::SqliteStore;
use serde_json::Value;

#[derive(Clone)]
pub enum Reply {
    Status(u16, Option<&'static str>),
    /// A status with this body (servers echo keys back in error bodies).
    StatusBody(u16, String),
    /// SSE with `event:` names taken from each payload's `type` (the Anthropic form).
    Events(Vec<Value>),
    Json(Value),
    Sse(Vec<String>),
    /// Some frames, then the connection breaks.
    Reset(Vec<String>),
}

#[derive(Default)]
pub struct Mock {
    pub replies: Mutex<VecDeque<Reply>>,
    pub auth: Mutex<Vec<String>>,
    pub bodies: Mutex<Vec<Value>>,
}

async fn chat(State(m): State<Arc<Mock>>, headers: HeaderMap, body: String) -> Response {
    m.auth.lock().unwrap().push(
        headers
            .get("authorization")
            .or_else(|| headers.get("x-api-key"))
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default(),
    );
    m.bodies
        .lock()
        .unwrap()
        .push(serde_json::from_str(&body).unwrap());
    let reply = m
        .replies
        .lock()
        .unwrap()
        .pop_front()
        .expect("a scripted reply");
    let sse = |frames: &[String]| {
        frames
            .iter()
            .map(|f| format!("data: {f}\n\n"))
            .collect::<String>()
    };
    match reply {
        Reply::Status(code, retry_after) => {
            let mut r = (
                StatusCode::from_u16(code).unwrap(),
                r#"{"error":{"message":"scripted"}}"#,
            )
                .into_response();
            if let Some(s) = retry_after {
                r.headers_mut().insert("retry-after", s.parse().unwrap());
            }
            r
        }
        Reply::StatusBody(code, body) => {
            (StatusCode::from_u16(code).unwrap(), body).into_response()
        }
        Reply::Events(events) => {
            let body: String = events
                .iter()
                .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
                .collect();
            ([("content-type", "text/event-stream")], body).into_response()
        }
        Reply::Json(v) => axum::Json(v).into_response(),
        Reply::Sse(frames) => {
            ([("content-type", "text/event-stream")], sse(&frames)).into_response()
        }
        Reply::Reset(frames) => {
            let head = sse(&frames);
            let stream = futures_util::stream::iter(vec![
                Ok::<_, std::io::Error>(axum::body::Bytes::from(head)),
                Err(std::io::Error::other("connection reset")),
            ]);
            (
                [("content-type", "text/event-stream")],
                Body::from_stream(stream),
            )
                .into_response()
        }
    }
}

pub async fn mock(replies: Vec<Reply>) -> (Arc<Mock>, String) {
    let m = Arc::new(Mock::default());
    m.replies.lock().unwrap().extend(replies);
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/messages", post(chat))
        .with_state(m.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (m, url)
}

/// A real SQLite store with one task, and a recorder writing into it.
pub struct Recording {
    pub store: Arc<SqliteStore>,
    pub recorder: Recorder,
    pub task: TaskId,
    pub dir: tempfile::TempDir,
}

impl Recording {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("t.db")).await.unwrap());
        let task = NewTask {
            kind: Some("noop".into()),
            ..NewTask::default()
        }
        .validate(
            &SubmitDefaults {
                timeout_ms: None,
                output_cap: 1 << 20,
                cwd: "/tmp".into(),
            },
            0,
        )
        .unwrap();
        let task = store.submit(vec![task], 1).await.unwrap().remove(0).task.id;
        let (recorder, receiver) = Recorder::new(1024, RecordLimits::default());
        let s = store.clone();
        tokio::spawn(drain(receiver, async move |batch| {
            s.record_llm(batch).await.map_err(|e| e.to_string())
        }));
        Self {
            store,
            recorder,
            task,
            dir,
        }
    }

    pub async fn run(&self, provider: &str) -> RunRecorder {
        RunRecorder::start(&self.recorder, self.task, 1, provider, "m").await
    }

    pub async fn trace(&self) -> Vec<deputy_core::trace::LlmRun> {
        self.recorder.flush().await;
        self.store.trace(self.task).await.unwrap()
    }
}
