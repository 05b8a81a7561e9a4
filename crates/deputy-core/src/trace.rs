//! The debug record of model calls: a *run* per agent task attempt, a *step* per model
//! call, an *attempt* per HTTP round trip of a step. The model layer produces
//! [`LlmRecord`]s; the store keeps them; `GET /v1/tasks/{id}/trace` and `deputy trace`
//! show them back as [`LlmRun`]s.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::id::TaskId;
use crate::time::Millis;

/// Token counts. A count the provider did not report stays `None`, never zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
}

/// Sums two token counts; unknown plus unknown stays unknown.
pub fn sum_counts(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
    }
}

impl Usage {
    /// Sums two usages count by count (see [`sum_counts`]).
    pub fn plus(self, other: Usage) -> Usage {
        let sum = sum_counts;
        Usage {
            input_tokens: sum(self.input_tokens, other.input_tokens),
            output_tokens: sum(self.output_tokens, other.output_tokens),
            cached_tokens: sum(self.cached_tokens, other.cached_tokens),
            reasoning_tokens: sum(self.reasoning_tokens, other.reasoning_tokens),
        }
    }
}

/// The status of a run or step. They are ordered: a record only ever moves up this
/// order, so a late "in progress" can never overwrite "completed", and a retry that
/// succeeds moves a step from `error` to `completed` (clearing the error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    InProgress,
    Interrupted,
    Error,
    Completed,
}

impl RecordStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordStatus::InProgress => "in_progress",
            RecordStatus::Interrupted => "interrupted",
            RecordStatus::Error => "error",
            RecordStatus::Completed => "completed",
        }
    }

    /// The position in the order, as the store compares it.
    pub fn rank(self) -> i64 {
        self as i64
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "in_progress" => RecordStatus::InProgress,
            "interrupted" => RecordStatus::Interrupted,
            "error" => RecordStatus::Error,
            "completed" => RecordStatus::Completed,
            _ => return None,
        })
    }
}

impl std::fmt::Display for RecordStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One HTTP round trip of a step, redacted and size-capped before it is recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LlmAttempt {
    pub number: u32,
    pub method: String,
    pub url: String,
    /// The HTTP status; none when the request never got an answer.
    pub status_code: Option<u16>,
    /// Header name and value pairs, secrets replaced by `[redacted]`.
    pub request_headers: Vec<(String, String)>,
    pub request_body: Option<String>,
    pub response_headers: Vec<(String, String)>,
    pub response_body: Option<String>,
    /// The raw SSE `data` of a streamed response, in order, up to a cap.
    pub chunks: Vec<String>,
    /// Chunks past the cap, counted but not kept.
    pub chunks_omitted: u64,
    pub started_at: Millis,
    pub duration_ms: u64,
    pub error: Option<String>,
}

/// One model call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LlmStep {
    pub number: u32,
    /// `stream` or `generate`.
    pub operation: String,
    /// The normalized request (model, messages, tools), as JSON.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub request: Value,
    /// The normalized response (message, finish reason, usage), once there is one.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub response: Option<Value>,
    pub usage: Usage,
    pub status: RecordStatus,
    pub error: Option<String>,
    pub started_at: Millis,
    pub first_token_at: Option<Millis>,
    pub ended_at: Option<Millis>,
    pub attempts: Vec<LlmAttempt>,
}

/// The model calls of one attempt of an agent task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LlmRun {
    pub id: String,
    pub task_id: TaskId,
    pub task_attempt: u32,
    pub provider: String,
    pub model: String,
    pub status: RecordStatus,
    pub error: Option<String>,
    /// The sum over its steps.
    pub usage: Usage,
    pub started_at: Millis,
    pub ended_at: Option<Millis>,
    pub steps: Vec<LlmStep>,
}

/// `GET /v1/tasks/{id}/trace`: every run of a task, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Trace {
    pub task_id: TaskId,
    pub runs: Vec<LlmRun>,
}

/// One change to the record, as the model layer emits it. Each is idempotent and a
/// status only moves up [`RecordStatus`]'s order, so records may be retried safely.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LlmRecord {
    RunStarted {
        run_id: String,
        task_id: TaskId,
        task_attempt: u32,
        provider: String,
        model: String,
        started_at: Millis,
    },
    RunEnded {
        run_id: String,
        status: RecordStatus,
        error: Option<String>,
        usage: Usage,
        ended_at: Millis,
    },
    StepStarted {
        run_id: String,
        step: u32,
        operation: String,
        /// JSON text, capped.
        request: String,
        started_at: Millis,
    },
    StepUpdated {
        run_id: String,
        step: u32,
        status: RecordStatus,
        error: Option<String>,
        /// JSON text, capped.
        response: Option<String>,
        usage: Option<Usage>,
        first_token_at: Option<Millis>,
        ended_at: Option<Millis>,
    },
    Attempt {
        run_id: String,
        step: u32,
        attempt: LlmAttempt,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_order_is_the_documented_one() {
        use RecordStatus::*;
        assert!(InProgress < Interrupted && Interrupted < Error && Error < Completed);
        for s in [InProgress, Interrupted, Error, Completed] {
            assert_eq!(RecordStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn unknown_usage_stays_unknown_when_summed() {
        let known = Usage {
            input_tokens: Some(3),
            ..Usage::default()
        };
        let sum = known.plus(Usage::default());
        assert_eq!(sum.input_tokens, Some(3));
        assert_eq!(sum.output_tokens, None);
    }
}
