//! Events: the append-only log every state change writes in the same transaction,
//! and what SSE streams, `logs -f` and `wait` follow. `seq` is global and strictly
//! increasing, so "everything after N" is a complete, ordered answer.

use serde::{Deserialize, Serialize};

use crate::id::TaskId;
use crate::status::Status;
use crate::time::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// Global sequence number; the SSE `id:`.
    pub seq: i64,
    pub at: Millis,
    pub task: Option<TaskId>,
    #[serde(flatten)]
    pub body: EventBody,
}

/// Every kind of event. The `type` tag is the SSE `event:` name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventBody {
    /// A task was stored.
    #[serde(rename = "task.created")]
    TaskCreated {
        status: Status,
        name: String,
        group: String,
        priority: crate::spec::Priority,
    },
    /// A task's status changed.
    #[serde(rename = "task.status")]
    TaskStatus {
        from: Status,
        to: Status,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        /// For `scheduled`: when it becomes ready.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run_at: Option<Millis>,
    },
    /// A chunk of output was stored. `data` is the chunk decoded lossily for display;
    /// it is absent when the chunk was later dropped by the output cap.
    #[serde(rename = "task.output")]
    TaskOutput {
        attempt: u32,
        stream: Stream,
        offset: u64,
        len: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<String>,
    },
    /// A task ended for good: no retry follows. The last event of a task's stream.
    #[serde(rename = "task.finished")]
    TaskFinished {
        status: Status,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A step of an agent task: a tool call started or finished, its workspace, its
    /// session. (Its text goes to the task's output as `task.output`.)
    #[serde(rename = "task.agent")]
    TaskAgent {
        attempt: u32,
        /// `tool_started`, `tool_finished`, `workspace`, `session` or `turn`.
        step: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tool: Option<String>,
        /// Arguments, a truncated result, a path or a session id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
    },
    /// Someone asked to cancel a running task; its owner acts on it.
    #[serde(rename = "task.cancel_requested")]
    TaskCancelRequested {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A group was created or changed, or the whole queue paused or resumed
    /// (`group` is None for the whole queue).
    #[serde(rename = "queue.updated")]
    QueueUpdated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        paused: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parallel: Option<u32>,
    },
    /// A schedule was created, paused, resumed or removed, or one of its ticks fired
    /// (submitting `tasks`) or was skipped.
    #[serde(rename = "schedule.updated")]
    ScheduleUpdated {
        schedule: String,
        /// `created`, `paused`, `resumed`, `removed`, `fired` or `skipped`.
        action: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_fire_at: Option<crate::time::Millis>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
        tasks: Vec<crate::TaskId>,
    },
}

impl EventBody {
    /// Every `type_name`, for validating filters.
    pub const TYPE_NAMES: [&'static str; 8] = [
        "task.created",
        "task.status",
        "task.output",
        "task.finished",
        "task.cancel_requested",
        "task.agent",
        "queue.updated",
        "schedule.updated",
    ];

    pub fn type_name(&self) -> &'static str {
        match self {
            EventBody::TaskCreated { .. } => "task.created",
            EventBody::TaskStatus { .. } => "task.status",
            EventBody::TaskOutput { .. } => "task.output",
            EventBody::TaskFinished { .. } => "task.finished",
            EventBody::TaskCancelRequested { .. } => "task.cancel_requested",
            EventBody::TaskAgent { .. } => "task.agent",
            EventBody::QueueUpdated { .. } => "queue.updated",
            EventBody::ScheduleUpdated { .. } => "schedule.updated",
        }
    }

    /// The JSON of the body without its tag, as stored in the `payload` column.
    pub fn payload(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut m)) => m.remove("data").unwrap_or_default(),
            _ => serde_json::Value::Null,
        }
    }

    /// Rebuilds a body from its stored type and payload.
    pub fn from_parts(
        type_name: &str,
        payload: serde_json::Value,
    ) -> Result<Self, serde_json::Error> {
        serde_json::from_value(serde_json::json!({ "type": type_name, "data": payload }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips() {
        let b = EventBody::TaskStatus {
            from: Status::Queued,
            to: Status::Running,
            attempt: 1,
            reason: None,
            exit_code: None,
            signal: None,
            run_at: None,
        };
        let again = EventBody::from_parts(b.type_name(), b.payload()).unwrap();
        assert_eq!(again, b);
    }
}
