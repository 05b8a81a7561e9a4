//! A stored task as the store returns it and the API sends it.

use serde::{Deserialize, Serialize};

use crate::id::TaskId;
use crate::spec::{Dependency, TaskSpec};
use crate::status::Status;
use crate::time::Millis;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Task {
    pub id: TaskId,
    pub status: Status,
    /// 1 for the first attempt; each retry adds one.
    pub attempt: u32,
    pub spec: TaskSpec,
    pub depends_on: Vec<Dependency>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: Option<String>,
    /// When a scheduled task becomes ready.
    pub ready_at: Option<Millis>,
    /// The node that runs (or last ran) it.
    pub node: Option<String>,
    pub lease_expires_at: Option<Millis>,
    /// Process group of the running attempt's child.
    pub pgid: Option<i32>,
    pub cancel_requested: bool,
    /// What the last ended agent attempt used (tokens, cost, session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::agent::AgentUsage>,
    /// The agent session the next attempt resumes (`retry --continue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_session: Option<String>,
}

impl Task {
    pub fn duration_ms(&self) -> Option<Millis> {
        let start = self.started_at?;
        Some(self.finished_at.unwrap_or_else(crate::time::now_ms) - start)
    }
}

/// One attempt of a task: its history survives retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attempt {
    pub number: u32,
    pub status: Status,
    pub node: Option<String>,
    pub started_at: Millis,
    pub finished_at: Option<Millis>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: Option<String>,
    pub output_bytes: u64,
    pub omitted_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::agent::AgentUsage>,
}
