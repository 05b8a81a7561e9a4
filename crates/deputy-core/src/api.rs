//! Shapes that cross the HTTP API, shared by the server and its one client. Plain data;
//! the server owns the routes and status codes.

use serde::{Deserialize, Serialize};

use crate::event::Stream;
use crate::id::TaskId;
use crate::submit::NewTask;
use crate::task::{Attempt, Task};
use crate::time::Millis;

/// A page of tasks, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskPage {
    pub tasks: Vec<Task>,
    /// Pass as `cursor` to get the next (older) page.
    pub next_cursor: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Group {
    pub name: String,
    /// None: no group limit.
    pub parallel: Option<u32>,
    pub paused: bool,
    pub running: u32,
}

/// `POST /v1/tasks` accepts one task, or `{"tasks": [...]}` stored in one transaction.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum SubmitRequest {
    Batch(BatchRequest),
    One(Box<NewTask>),
}

impl<'de> Deserialize<'de> for SubmitRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Decide by shape first, so errors come from the type that was meant.
        let v = serde_json::Value::deserialize(d)?;
        let is_batch = v.as_object().is_some_and(|o| o.contains_key("tasks"));
        // serde_path_to_error names the field that failed (`tasks[2].timeout: ...`).
        if is_batch {
            serde_path_to_error::deserialize(v)
                .map(SubmitRequest::Batch)
                .map_err(serde::de::Error::custom)
        } else if v.is_object() {
            serde_path_to_error::deserialize(v)
                .map(|t: NewTask| SubmitRequest::One(Box::new(t)))
                .map_err(serde::de::Error::custom)
        } else {
            Err(serde::de::Error::custom(
                "expected a task object or {\"tasks\": [...]}",
            ))
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchRequest {
    pub tasks: Vec<NewTask>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubmitResult {
    pub task: Task,
    /// False when the idempotency key matched an existing task.
    pub created: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchResult {
    pub tasks: Vec<SubmitResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: Task,
    pub attempts: Vec<Attempt>,
    pub dependents: Vec<TaskId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CancelResult {
    /// It had not started and is now cancelled.
    Cancelled,
    /// It is running; its process is being stopped.
    Requested,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CancelResponse {
    pub result: CancelResult,
    pub task: Task,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetryRequest {
    /// Continue the last attempt's agent session (`claude --resume`).
    #[serde(default, rename = "continue")]
    pub continue_session: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CancelRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

/// One stored chunk of output, as `GET /v1/tasks/{id}/logs?format=json` returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogChunk {
    pub stream: Stream,
    pub offset: u64,
    /// Decoded lossily; the stored bytes are kept as they were.
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogsResponse {
    pub task: TaskId,
    pub attempt: u32,
    pub chunks: Vec<LogChunk>,
    pub omitted_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PauseRequest {
    /// A group; the whole queue when left out.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._-]{1,64}$"))]
    pub group: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewGroup {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._-]{1,64}$"))]
    pub name: String,
    /// Tasks of the group running at once (default: no limit beyond the daemon's).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub parallel: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupUpdate {
    /// A number, or null for no group limit.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub parallel: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CleanRequest {
    /// Delete tasks that finished more than this many days ago (0: all finished ones).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1000000))]
    pub older_than_days: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CleanResponse {
    pub deleted: u64,
}

/// `GET /v1/status`: who this daemon is and what it is doing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DaemonStatus {
    pub version: String,
    pub node: String,
    pub pid: u32,
    pub started_at: Millis,
    pub data_dir: String,
    pub parallel: usize,
    pub running: usize,
    pub queue_paused: bool,
    pub last_event: i64,
}

/// A node (daemon) sharing the store, as `GET /v1/nodes` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeInfo {
    pub id: String,
    /// Its HTTP API.
    pub address: Option<String>,
    pub started_at: Millis,
    /// Its last heartbeat.
    pub heartbeat_at: Millis,
    /// Tasks it runs now.
    pub running: u64,
}

/// `GET /v1/stats`: this daemon's recent figures, oldest first, one sample per interval
/// (what the dashboard's sparklines draw).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DaemonFigures {
    /// Milliseconds between samples.
    pub interval_ms: u64,
    pub samples: Vec<FigureSample>,
}

/// One interval's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FigureSample {
    /// When the interval ended.
    pub at: Millis,
    /// Tasks queued in the store (every group, every node) at that moment.
    pub queued: u64,
    /// Tasks this node was running at that moment.
    pub running: u64,
    /// Tasks that ended for good during the interval (seen in the event log).
    pub finished: u64,
    /// Events appended to the log during the interval.
    pub events: u64,
    /// False when this node fell behind the event log during the interval, so
    /// `finished` and `events` are lower bounds.
    pub complete: bool,
}
