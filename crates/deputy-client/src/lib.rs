//! The one client of deputy's HTTP API, shared by the CLI and the MCP server.
//! Errors carry the daemon's `{"error": {"code", "message"}}` so callers can show the
//! message as is.

use std::time::Duration;

use deputy_core::api::*;
use deputy_core::schedule::{NewSchedule, ScheduleView};
use deputy_core::submit::NewTask;
use deputy_core::{Event, Task};
use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon answered with an error.
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach the deputy daemon at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Installs the TLS crypto provider once; reqwest needs one even for plain HTTP.
fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Client {
    /// `base` is the daemon's URL, e.g. `http://127.0.0.1:7477`.
    pub fn new(base: impl Into<String>) -> Self {
        init_tls();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client with default settings always builds");
        Self {
            base: base.into().trim_end_matches('/').to_string(),
            http,
            token: None,
        }
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.http.request(method, format!("{}{}", self.base, path));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn send<T: DeserializeOwned>(&self, rb: RequestBuilder) -> Result<T> {
        let resp = self.send_raw(rb).await?;
        let bytes = resp.bytes().await.map_err(|e| self.unreachable(e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    async fn send_raw(&self, rb: RequestBuilder) -> Result<reqwest::Response> {
        let resp = rb.send().await.map_err(|e| self.unreachable(e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        Err(api_error(status, &body))
    }

    fn unreachable(&self, e: reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            source: e,
        }
    }

    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        self.send(self.req(Method::GET, "/v1/nodes")).await
    }

    pub async fn status(&self) -> Result<DaemonStatus> {
        self.send(self.req(Method::GET, "/v1/status")).await
    }

    pub async fn submit(&self, task: &NewTask) -> Result<SubmitResult> {
        self.send(self.req(Method::POST, "/v1/tasks").json(task))
            .await
    }

    pub async fn submit_batch(&self, tasks: &[NewTask]) -> Result<BatchResult> {
        let body = serde_json::json!({ "tasks": tasks });
        self.send(self.req(Method::POST, "/v1/tasks").json(&body))
            .await
    }

    pub async fn get(&self, id: &str) -> Result<TaskDetail> {
        self.send(self.req(Method::GET, &format!("/v1/tasks/{}", enc(id))))
            .await
    }

    /// The debug record of a task's model calls.
    pub async fn trace(&self, id: &str) -> Result<deputy_core::trace::Trace> {
        self.send(self.req(Method::GET, &format!("/v1/tasks/{}/trace", enc(id))))
            .await
    }

    pub async fn list(&self, query: &[(&str, String)]) -> Result<TaskPage> {
        self.send(self.req(Method::GET, "/v1/tasks").query(query))
            .await
    }

    pub async fn cancel(&self, id: &str, reason: Option<&str>) -> Result<CancelResponse> {
        let body = CancelRequest {
            reason: reason.map(str::to_string),
        };
        self.send(
            self.req(Method::POST, &format!("/v1/tasks/{}/cancel", enc(id)))
                .json(&body),
        )
        .await
    }

    pub async fn retry(&self, id: &str) -> Result<Task> {
        self.send(self.req(Method::POST, &format!("/v1/tasks/{}/retry", enc(id))))
            .await
    }

    /// A new attempt that continues the last attempt's agent session.
    pub async fn retry_continue(&self, id: &str) -> Result<Task> {
        self.send(
            self.req(Method::POST, &format!("/v1/tasks/{}/retry", enc(id)))
                .json(&serde_json::json!({"continue": true})),
        )
        .await
    }

    /// Rendered output as text. `query` takes `stream`, `attempt`, `tail`.
    pub async fn logs_text(&self, id: &str, query: &[(&str, String)]) -> Result<Vec<u8>> {
        let resp = self
            .send_raw(
                self.req(Method::GET, &format!("/v1/tasks/{}/logs", enc(id)))
                    .query(query),
            )
            .await?;
        Ok(resp
            .bytes()
            .await
            .map_err(|e| self.unreachable(e))?
            .to_vec())
    }

    pub async fn pause(&self, group: Option<&str>) -> Result<()> {
        let body = PauseRequest {
            group: group.map(str::to_string),
        };
        self.send_raw(self.req(Method::POST, "/v1/queue/pause").json(&body))
            .await?;
        Ok(())
    }

    pub async fn resume(&self, group: Option<&str>) -> Result<()> {
        let body = PauseRequest {
            group: group.map(str::to_string),
        };
        self.send_raw(self.req(Method::POST, "/v1/queue/resume").json(&body))
            .await?;
        Ok(())
    }

    pub async fn groups(&self) -> Result<Vec<Group>> {
        self.send(self.req(Method::GET, "/v1/groups")).await
    }

    pub async fn add_group(&self, name: &str, parallel: Option<u32>) -> Result<Group> {
        let body = NewGroup {
            name: name.to_string(),
            parallel,
        };
        self.send(self.req(Method::POST, "/v1/groups").json(&body))
            .await
    }

    pub async fn set_group_parallel(&self, name: &str, parallel: Option<u32>) -> Result<Group> {
        self.send(
            self.req(Method::PATCH, &format!("/v1/groups/{}", enc(name)))
                .json(&GroupUpdate { parallel }),
        )
        .await
    }

    pub async fn add_schedule(&self, new: &NewSchedule) -> Result<ScheduleView> {
        self.send(self.req(Method::POST, "/v1/schedules").json(new))
            .await
    }

    pub async fn schedules(&self) -> Result<Vec<ScheduleView>> {
        self.send(self.req(Method::GET, "/v1/schedules")).await
    }

    pub async fn schedule(&self, name: &str) -> Result<ScheduleView> {
        self.send(self.req(Method::GET, &format!("/v1/schedules/{}", enc(name))))
            .await
    }

    pub async fn pause_schedule(&self, name: &str) -> Result<ScheduleView> {
        self.send(self.req(Method::POST, &format!("/v1/schedules/{}/pause", enc(name))))
            .await
    }

    pub async fn resume_schedule(&self, name: &str) -> Result<ScheduleView> {
        self.send(self.req(Method::POST, &format!("/v1/schedules/{}/resume", enc(name))))
            .await
    }

    pub async fn remove_schedule(&self, name: &str) -> Result<()> {
        self.send_raw(self.req(Method::DELETE, &format!("/v1/schedules/{}", enc(name))))
            .await?;
        Ok(())
    }

    pub async fn clean(&self, older_than_days: f64) -> Result<CleanResponse> {
        self.send(
            self.req(Method::POST, "/v1/clean")
                .json(&CleanRequest { older_than_days }),
        )
        .await
    }

    /// Follows an event stream (one task's, or all with `task = None`) from after
    /// `after`. A dropped connection is resumed from the last id seen, so the stream
    /// yields every event once, in order. A task's stream ends when the server closes it
    /// after a `task.finished` (that of the attempt current when the stream opened, or a
    /// later one: a retried task's stream replays every attempt).
    pub fn events(
        &self,
        task: Option<String>,
        after: i64,
    ) -> impl Stream<Item = Result<Event>> + Send + 'static {
        let client = self.clone();
        let path = match &task {
            Some(id) => format!("/v1/tasks/{}/events", enc(id)),
            None => "/v1/events".to_string(),
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event>>(64);
        tokio::spawn(async move {
            let mut last = after;
            let mut failures = 0u32;
            loop {
                let rb = client
                    .req(Method::GET, &path)
                    .header("Last-Event-ID", last.to_string())
                    .header("Accept", "text/event-stream");
                let resp = match client.send_raw(rb).await {
                    Ok(r) => r,
                    Err(e @ ClientError::Api { .. }) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    Err(e) => {
                        failures += 1;
                        if failures > 5 {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
                        continue;
                    }
                };
                let mut frames = resp.bytes_stream().eventsource();
                let mut ended_with_finish = false;
                while let Some(frame) = frames.next().await {
                    let Ok(frame) = frame else { break };
                    if frame.event == "stream.lagged" {
                        break;
                    }
                    let event: Event = match serde_json::from_str(&frame.data) {
                        Ok(e) => e,
                        Err(e) => {
                            let _ = tx
                                .send(Err(ClientError::Protocol(format!("bad event: {e}"))))
                                .await;
                            return;
                        }
                    };
                    if event.seq <= last {
                        continue;
                    }
                    last = event.seq;
                    failures = 0;
                    ended_with_finish = task.is_some()
                        && matches!(event.body, deputy_core::EventBody::TaskFinished { .. });
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                if tx.is_closed() || ended_with_finish {
                    return;
                }
                // The connection ended without the task finishing: resume from `last`.
            }
        });
        tokio_stream_from(rx)
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn enc(s: &str) -> String {
    // Ids, prefixes and group names are restricted to URL-safe characters by the
    // daemon; anything else is sent escaped so the daemon can reject it clearly.
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    #[derive(serde::Deserialize)]
    struct Wrapper {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        code: String,
        message: String,
    }
    match serde_json::from_slice::<Wrapper>(body) {
        Ok(w) => ClientError::Api {
            status: status.as_u16(),
            code: w.error.code,
            message: w.error.message,
        },
        Err(_) => ClientError::Api {
            status: status.as_u16(),
            code: "http".into(),
            message: format!("HTTP {status}: {}", String::from_utf8_lossy(body).trim()),
        },
    }
}
