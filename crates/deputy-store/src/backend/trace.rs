//! The debug record of model calls: writing [`LlmRecord`]s and reading a task's trace.
//! Every write is idempotent, and a status only moves up `RecordStatus`'s order (the
//! `status_rank <= ?` guards), so a record applied twice or late never regresses one.

use std::collections::BTreeMap;

use deputy_core::TaskId;
use deputy_core::time::Millis;
use deputy_core::trace::{LlmAttempt, LlmRecord, LlmRun, LlmStep, RecordStatus, Usage};

use super::dialect::Conn;
use super::rows::parse_id;
use crate::sql::{Row, query};
use crate::{Result, StoreError};

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("trace values always serialize")
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| corrupt(format!("{what}: {e}")))
}

pub(super) async fn record(conn: &mut Conn, rec: &LlmRecord) -> Result<()> {
    match rec {
        LlmRecord::RunStarted {
            run_id,
            task_id,
            task_attempt,
            provider,
            model,
            started_at,
        } => {
            query(
                "INSERT INTO llm_runs (id, task_id, task_attempt, provider, model, status,
                     status_rank, started_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            )
            .bind(run_id)
            .bind(task_id.key())
            .bind(i64::from(*task_attempt))
            .bind(provider)
            .bind(model)
            .bind(RecordStatus::InProgress.as_str())
            .bind(RecordStatus::InProgress.rank())
            .bind(started_at)
            .execute(conn)
            .await?;
        }
        LlmRecord::RunEnded {
            run_id,
            status,
            error,
            usage,
            ended_at,
        } => {
            query(
                "UPDATE llm_runs SET status = ?, status_rank = ?, error = ?, usage = ?,
                     ended_at = ?
                 WHERE id = ? AND status_rank <= ?",
            )
            .bind(status.as_str())
            .bind(status.rank())
            .bind(error)
            .bind(to_json(usage))
            .bind(ended_at)
            .bind(run_id)
            .bind(status.rank())
            .execute(conn)
            .await?;
        }
        LlmRecord::StepStarted {
            run_id,
            step,
            operation,
            request,
            started_at,
        } => {
            query(
                "INSERT INTO llm_steps (run_id, number, operation, request, status, status_rank,
                     started_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, number) DO NOTHING",
            )
            .bind(run_id)
            .bind(i64::from(*step))
            .bind(operation)
            .bind(request)
            .bind(RecordStatus::InProgress.as_str())
            .bind(RecordStatus::InProgress.rank())
            .bind(started_at)
            .execute(conn)
            .await?;
        }
        LlmRecord::StepUpdated {
            run_id,
            step,
            status,
            error,
            response,
            usage,
            first_token_at,
            ended_at,
        } => {
            // `error` is set as given: a step that completes after a failed attempt
            // clears the earlier error. The other fields keep their value when absent.
            query(
                "UPDATE llm_steps SET status = ?, status_rank = ?, error = ?,
                     response = COALESCE(?, response), usage = COALESCE(?, usage),
                     first_token_at = COALESCE(first_token_at, ?),
                     ended_at = COALESCE(?, ended_at)
                 WHERE run_id = ? AND number = ? AND status_rank <= ?",
            )
            .bind(status.as_str())
            .bind(status.rank())
            .bind(error)
            .bind(response)
            .bind(usage.as_ref().map(to_json))
            .bind(first_token_at)
            .bind(ended_at)
            .bind(run_id)
            .bind(i64::from(*step))
            .bind(status.rank())
            .execute(conn)
            .await?;
        }
        LlmRecord::Attempt {
            run_id,
            step,
            attempt: a,
        } => {
            query(
                "INSERT INTO llm_attempts (run_id, step, number, method, url, status_code,
                     request_headers, request_body, response_headers, response_body, chunks,
                     chunks_omitted, started_at, duration_ms, error)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (run_id, step, number) DO NOTHING",
            )
            .bind(run_id)
            .bind(i64::from(*step))
            .bind(i64::from(a.number))
            .bind(&a.method)
            .bind(&a.url)
            .bind(a.status_code.map(i64::from))
            .bind(to_json(&a.request_headers))
            .bind(&a.request_body)
            .bind(to_json(&a.response_headers))
            .bind(&a.response_body)
            .bind(to_json(&a.chunks))
            .bind(a.chunks_omitted as i64)
            .bind(a.started_at)
            .bind(a.duration_ms as i64)
            .bind(&a.error)
            .execute(conn)
            .await?;
        }
    }
    Ok(())
}

/// Marks what was still in progress for one attempt of a task as interrupted: the
/// attempt ended (crash, timeout, cancel) before its model calls did.
pub(super) async fn interrupt(
    conn: &mut Conn,
    task: TaskId,
    attempt: u32,
    now: Millis,
) -> Result<()> {
    let interrupted = RecordStatus::Interrupted;
    query(
        "UPDATE llm_steps SET status = ?, status_rank = ?, ended_at = ?
         WHERE status_rank < ? AND run_id IN
             (SELECT id FROM llm_runs WHERE task_id = ? AND task_attempt = ?)",
    )
    .bind(interrupted.as_str())
    .bind(interrupted.rank())
    .bind(now)
    .bind(interrupted.rank())
    .bind(task.key())
    .bind(i64::from(attempt))
    .execute(conn)
    .await?;
    query(
        "UPDATE llm_runs SET status = ?, status_rank = ?, ended_at = ?
         WHERE status_rank < ? AND task_id = ? AND task_attempt = ?",
    )
    .bind(interrupted.as_str())
    .bind(interrupted.rank())
    .bind(now)
    .bind(interrupted.rank())
    .bind(task.key())
    .bind(i64::from(attempt))
    .execute(conn)
    .await?;
    Ok(())
}

fn status_of(row: &Row) -> Result<RecordStatus> {
    let s: String = row.get("status")?;
    RecordStatus::parse(&s).ok_or_else(|| corrupt(format!("record status `{s}`")))
}

fn usage_of(row: &Row) -> Result<Usage> {
    row.get::<Option<String>>("usage")?
        .map_or(Ok(Usage::default()), |u| from_json("usage", &u))
}

/// Every run of a task with its steps and their attempts, oldest first.
pub(super) async fn load(conn: &mut Conn, task: TaskId) -> Result<Vec<LlmRun>> {
    let id = task.key();
    let run_rows = query(
        "SELECT id, task_id, task_attempt, provider, model, status, error, usage, started_at,
                ended_at
         FROM llm_runs WHERE task_id = ? ORDER BY started_at, id",
    )
    .bind(&id)
    .fetch_all(conn)
    .await?;
    let step_rows = query(
        "SELECT s.run_id, s.number, s.operation, s.request, s.response, s.usage, s.status,
                s.error, s.started_at, s.first_token_at, s.ended_at
         FROM llm_steps s JOIN llm_runs r ON r.id = s.run_id
         WHERE r.task_id = ? ORDER BY s.run_id, s.number",
    )
    .bind(&id)
    .fetch_all(conn)
    .await?;
    let attempt_rows = query(
        "SELECT a.run_id, a.step, a.number, a.method, a.url, a.status_code, a.request_headers,
                a.request_body, a.response_headers, a.response_body, a.chunks, a.chunks_omitted,
                a.started_at, a.duration_ms, a.error
         FROM llm_attempts a JOIN llm_runs r ON r.id = a.run_id
         WHERE r.task_id = ? ORDER BY a.run_id, a.step, a.number",
    )
    .bind(&id)
    .fetch_all(conn)
    .await?;

    let mut attempts: BTreeMap<(String, u32), Vec<LlmAttempt>> = BTreeMap::new();
    for r in &attempt_rows {
        let key = (r.get::<String>("run_id")?, r.get::<i64>("step")? as u32);
        attempts.entry(key).or_default().push(LlmAttempt {
            number: r.get::<i64>("number")? as u32,
            method: r.get("method")?,
            url: r.get("url")?,
            status_code: r.get::<Option<i64>>("status_code")?.map(|v| v as u16),
            request_headers: from_json("headers", &r.get::<String>("request_headers")?)?,
            request_body: r.get("request_body")?,
            response_headers: from_json("headers", &r.get::<String>("response_headers")?)?,
            response_body: r.get("response_body")?,
            chunks: from_json("chunks", &r.get::<String>("chunks")?)?,
            chunks_omitted: r.get::<i64>("chunks_omitted")? as u64,
            started_at: r.get("started_at")?,
            duration_ms: r.get::<i64>("duration_ms")? as u64,
            error: r.get("error")?,
        });
    }
    let mut steps: BTreeMap<String, Vec<LlmStep>> = BTreeMap::new();
    for r in &step_rows {
        let run_id: String = r.get("run_id")?;
        let number = r.get::<i64>("number")? as u32;
        let request: String = r.get("request")?;
        let response: Option<String> = r.get("response")?;
        steps.entry(run_id.clone()).or_default().push(LlmStep {
            number,
            operation: r.get("operation")?,
            request: json_or_text(&request),
            response: response.as_deref().map(json_or_text),
            usage: usage_of(r)?,
            status: status_of(r)?,
            error: r.get("error")?,
            started_at: r.get("started_at")?,
            first_token_at: r.get("first_token_at")?,
            ended_at: r.get("ended_at")?,
            attempts: attempts.remove(&(run_id, number)).unwrap_or_default(),
        });
    }
    run_rows
        .iter()
        .map(|r| {
            let run_id: String = r.get("id")?;
            Ok(LlmRun {
                task_id: parse_id(&r.get::<String>("task_id")?)?,
                task_attempt: r.get::<i64>("task_attempt")? as u32,
                provider: r.get("provider")?,
                model: r.get("model")?,
                status: status_of(r)?,
                error: r.get("error")?,
                usage: usage_of(r)?,
                started_at: r.get("started_at")?,
                ended_at: r.get("ended_at")?,
                steps: steps.remove(&run_id).unwrap_or_default(),
                id: run_id,
            })
        })
        .collect()
}

/// A stored request or response is JSON unless it was cut at the size cap; then it is
/// shown as the text it is.
fn json_or_text(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::String(s.to_string()))
}
