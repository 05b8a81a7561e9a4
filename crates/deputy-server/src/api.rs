//! The REST routes under `/v1`. Handlers parse and validate, call the engine, and map
//! results to the API's shapes; they hold no state of their own.

use std::str::FromStr;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use deputy_core::api::*;
use deputy_core::time::now_ms;
use deputy_core::{IdRef, Status, Stream, TaskId};
use deputy_store::{CancelOutcome, ListQuery};
use serde::Deserialize;

use crate::AppState;
use crate::body::OptionalJson;
use crate::error::ApiError;

pub(crate) async fn resolve_id(state: &AppState, raw: &str) -> Result<TaskId, ApiError> {
    let r = IdRef::from_str(raw)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_id", e.to_string()))?;
    Ok(state.engine.resolve(&r).await?)
}

#[utoipa::path(get, path = "/healthz", tag = "health", security(()), responses((status = 200, description = "The daemon is up", body = String, content_type = "text/plain")))]
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/readyz", tag = "health", security(()), responses((status = 200, description = "The database answers", body = String, content_type = "text/plain")))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state.engine.store().last_event_seq().await?;
    Ok("ready\n")
}

#[utoipa::path(get, path = "/v1/version", tag = "health", responses((status = 200, description = "Name and version", body = Object)))]
pub(crate) async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "name": "deputy", "version": env!("CARGO_PKG_VERSION") }))
}

#[utoipa::path(get, path = "/v1/status", tag = "health", responses((status = 200, body = DaemonStatus), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn status(State(state): State<AppState>) -> Result<Json<DaemonStatus>, ApiError> {
    let store = state.engine.store();
    Ok(Json(DaemonStatus {
        version: env!("CARGO_PKG_VERSION").to_string(),
        node: state.engine.config().node.to_string(),
        pid: std::process::id(),
        started_at: state.started_at,
        data_dir: state.data_dir.clone(),
        parallel: state.engine.config().parallel,
        running: state.engine.running_count(),
        queue_paused: store.queue_paused().await?,
        last_event: state.engine.bus().published(),
    }))
}

#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body = SubmitRequest,
    responses(
        (status = 201, description = "Created: one task (`SubmitResult`), or a batch (`BatchResult`)", body = SubmitResult),
        (status = 200, description = "An idempotency key matched: the existing task", body = SubmitResult),
        (status = 400, description = "Malformed JSON", body = crate::error::ErrorBody),
        (status = 413, description = "Body over `max_body`", body = crate::error::ErrorBody),
        (status = 422, description = "Invalid task, unknown group or dependency, cycle", body = crate::error::ErrorBody)))]
pub(crate) async fn submit(
    State(state): State<AppState>,
    body: Result<Json<SubmitRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let (batch, single) = match req {
        SubmitRequest::One(t) => (vec![*t], true),
        SubmitRequest::Batch(b) => {
            if b.tasks.is_empty() {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid",
                    "tasks: the batch is empty",
                ));
            }
            if b.tasks.len() > deputy_core::limits::MAX_BATCH {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid",
                    format!(
                        "tasks: at most {} tasks per batch",
                        deputy_core::limits::MAX_BATCH
                    ),
                ));
            }
            (b.tasks, false)
        }
    };
    let out = state.engine.submit(batch).await?;
    let any_created = out.iter().any(|s| s.created);
    let code = if any_created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let results: Vec<SubmitResult> = out
        .into_iter()
        .map(|s| SubmitResult {
            task: s.task,
            created: s.created,
        })
        .collect();
    if single {
        let one = results
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::bad_request("nothing submitted"))?;
        Ok((code, Json(one)).into_response())
    } else {
        Ok((code, Json(BatchResult { tasks: results })).into_response())
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// Comma-separated statuses.
    #[param(
        pattern = "^((blocked|scheduled|queued|running|succeeded|failed|cancelled|timed_out|interrupted)(,|$))*$"
    )]
    status: Option<String>,
    group: Option<String>,
    label: Option<String>,
    q: Option<String>,
    created_after: Option<i64>,
    created_before: Option<i64>,
    /// At most this many tasks (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    cursor: Option<i64>,
}

#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", params(ListParams), responses((status = 200, body = TaskPage), (status = 400, body = crate::error::ErrorBody)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<TaskPage>, ApiError> {
    let Query(p) = params?;
    let mut statuses = Vec::new();
    for s in p
        .status
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
    {
        statuses.push(Status::from_str(s.trim()).map_err(ApiError::bad_request)?);
    }
    let limit = match p.limit {
        None => 100,
        Some(n) if (1..=1000).contains(&n) => n as u32,
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "limit must be between 1 and 1000, got {n}"
            )));
        }
    };
    let q = ListQuery {
        statuses,
        group: p.group,
        label: p.label,
        text: p.q,
        created_after: p.created_after,
        created_before: p.created_before,
        limit,
        cursor: p.cursor,
    };
    Ok(Json(state.engine.store().list(&q).await?))
}

#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", params(("id" = String, Path, description = "Id or unique prefix (8+ hex)")), responses((status = 200, body = TaskDetail), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get_task(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<TaskDetail>, ApiError> {
    let id = resolve_id(&state, &raw).await?;
    let store = state.engine.store();
    Ok(Json(TaskDetail {
        task: store.get(id).await?,
        attempts: store.attempts(id).await?,
        dependents: store.dependents(id).await?,
    }))
}

/// The debug record of a task's model calls: runs, steps, attempts.
#[utoipa::path(get, path = "/v1/tasks/{id}/trace", tag = "tasks", params(("id" = String, Path, description = "Id or unique prefix (8+ hex)")), responses((status = 200, description = "Every model-call run of the task, oldest first (none for a shell task)", body = deputy_core::trace::Trace), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn trace(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<deputy_core::trace::Trace>, ApiError> {
    let id = resolve_id(&state, &raw).await?;
    state.engine.store().get(id).await?; // 404 for a task that does not exist.
    Ok(Json(deputy_core::trace::Trace {
        task_id: id,
        runs: state.engine.store().trace(id).await?,
    }))
}

#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", tag = "tasks", params(("id" = String, Path)), request_body(content = Option<CancelRequest>), responses((status = 200, body = CancelResponse), (status = 404, body = crate::error::ErrorBody), (status = 409, description = "Already ended", body = crate::error::ErrorBody)))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    OptionalJson(body): OptionalJson<CancelRequest>,
) -> Result<Json<CancelResponse>, ApiError> {
    let id = resolve_id(&state, &raw).await?;
    let reason = body.and_then(|b| b.reason);
    if let Some(r) = &reason
        && r.len() > 1024
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "reason: at most 1024 bytes",
        ));
    }
    match state.engine.cancel(id, reason).await? {
        CancelOutcome::Cancelled(task) => Ok(Json(CancelResponse {
            result: CancelResult::Cancelled,
            task,
        })),
        CancelOutcome::Requested(task) => Ok(Json(CancelResponse {
            result: CancelResult::Requested,
            task,
        })),
        CancelOutcome::AlreadyFinished(t) => Err(ApiError::conflict(format!(
            "task {id} already ended ({}); nothing to cancel",
            t.status
        ))),
    }
}

#[utoipa::path(post, path = "/v1/tasks/{id}/retry", tag = "tasks", params(("id" = String, Path)), request_body(content = Option<deputy_core::api::RetryRequest>), responses((status = 400, description = "`continue` asked of a task with no agent session", body = crate::error::ErrorBody), (status = 200, description = "Queued as a new attempt", body = deputy_core::Task), (status = 404, body = crate::error::ErrorBody), (status = 409, description = "Not finished", body = crate::error::ErrorBody)))]
pub(crate) async fn retry(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    OptionalJson(body): OptionalJson<deputy_core::api::RetryRequest>,
) -> Result<Json<deputy_core::Task>, ApiError> {
    let id = resolve_id(&state, &raw).await?;
    let resume = body.is_some_and(|b| b.continue_session);
    Ok(Json(state.engine.retry(id, resume).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogParams {
    /// `stdout`, `stderr` or `all` (the default).
    #[param(pattern = "^(stdout|stderr|all)$")]
    stream: Option<String>,
    #[param(minimum = 1)]
    attempt: Option<u32>,
    /// Last N lines.
    #[param(minimum = 0)]
    tail: Option<i64>,
    /// `text` (default) or `json`.
    #[param(pattern = "^(text|json)$")]
    format: Option<String>,
    /// Start at this byte offset of the stream (needs `stream`).
    #[param(minimum = 0)]
    from: Option<i64>,
    /// Return at most this many bytes of output.
    #[param(minimum = 1)]
    max_bytes: Option<i64>,
}

#[utoipa::path(get, path = "/v1/tasks/{id}/logs", tag = "tasks", params(("id" = String, Path), LogParams), responses((status = 200, description = "Text (default) or JSON chunks (`format=json`)", content((String = "text/plain"), (LogsResponse = "application/json"))), (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn logs(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    params: Result<Query<LogParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let id = resolve_id(&state, &raw).await?;
    let stream = match p.stream.as_deref() {
        None | Some("all") => None,
        Some(s) => Some(Stream::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!("stream must be stdout, stderr or all, got `{s}`"))
        })?),
    };
    if let Some(n) = p.tail
        && n < 0
    {
        return Err(ApiError::bad_request(format!(
            "tail must be 0 or more, got {n}"
        )));
    }
    let store = state.engine.store();
    let task = store.get(id).await?;
    let attempt = match p.attempt {
        Some(a) if a == 0 || a > task.attempt => {
            return Err(ApiError::bad_request(format!(
                "task {id} has attempts 1 to {}",
                task.attempt
            )));
        }
        Some(a) => a,
        // A task waiting for its next attempt shows the last one that ran.
        None if task.started_at.is_none() && task.attempt > 1 => task.attempt - 1,
        None => task.attempt,
    };
    let from = match (p.from, stream) {
        (None, _) => 0,
        (Some(n), _) if n < 0 => {
            return Err(ApiError::bad_request(format!(
                "from must be 0 or more, got {n}"
            )));
        }
        (Some(_), None) => {
            return Err(ApiError::bad_request(
                "from is a byte offset within one stream: add stream=stdout or stream=stderr",
            ));
        }
        (Some(n), Some(_)) => n as u64,
    };
    let max_bytes = match p.max_bytes {
        None => u64::MAX,
        Some(n) if n < 1 => {
            return Err(ApiError::bad_request(format!(
                "max_bytes must be 1 or more, got {n}"
            )));
        }
        Some(n) => n as u64,
    };
    let chunks = clip(
        store.read_output(id, attempt, stream, from).await?,
        from,
        max_bytes,
    );
    let omitted = store
        .attempts(id)
        .await?
        .iter()
        .find(|a| a.number == attempt)
        .map_or(0, |a| a.omitted_bytes);
    match p.format.as_deref() {
        None | Some("text") => {
            let rendered = deputy_core::output::render_from(
                chunks.iter().map(|c| (c.stream, c.offset, &c.data[..])),
                from,
            );
            let text = String::from_utf8_lossy(&rendered).into_owned();
            let text = match p.tail {
                Some(n) => deputy_core::output::tail_lines(&text, n as usize),
                None => text,
            };
            Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
        }
        Some("json") => Ok(Json(LogsResponse {
            task: id,
            attempt,
            omitted_bytes: omitted,
            chunks: chunks
                .into_iter()
                .map(|c| LogChunk {
                    stream: c.stream,
                    offset: c.offset,
                    text: String::from_utf8_lossy(&c.data).into_owned(),
                })
                .collect(),
        })
        .into_response()),
        Some(f) => Err(ApiError::bad_request(format!(
            "format must be text or json, got `{f}`"
        ))),
    }
}

/// Trims chunks to the byte range [from, from + max_bytes) of their stream.
fn clip(
    chunks: Vec<deputy_store::StoredChunk>,
    from: u64,
    max_bytes: u64,
) -> Vec<deputy_store::StoredChunk> {
    let mut budget = max_bytes;
    let mut out = Vec::with_capacity(chunks.len());
    for mut c in chunks {
        if budget == 0 {
            break;
        }
        if c.offset < from {
            let skip = ((from - c.offset) as usize).min(c.data.len());
            c.data.drain(..skip);
            c.offset = from;
        }
        if c.data.len() as u64 > budget {
            c.data.truncate(budget as usize);
        }
        budget -= c.data.len() as u64;
        if !c.data.is_empty() {
            out.push(c);
        }
    }
    out
}

#[utoipa::path(post, path = "/v1/queue/pause", tag = "queue", request_body(content = Option<PauseRequest>), responses((status = 204, description = "Paused"), (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn pause(
    State(state): State<AppState>,
    OptionalJson(body): OptionalJson<PauseRequest>,
) -> Result<StatusCode, ApiError> {
    let group = body.and_then(|b| b.group);
    state.engine.set_paused(group.as_deref(), true).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/queue/resume", tag = "queue", request_body(content = Option<PauseRequest>), responses((status = 204, description = "Resumed"), (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn resume(
    State(state): State<AppState>,
    OptionalJson(body): OptionalJson<PauseRequest>,
) -> Result<StatusCode, ApiError> {
    let group = body.and_then(|b| b.group);
    state.engine.set_paused(group.as_deref(), false).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/groups", tag = "queue", responses((status = 200, body = Vec<Group>)))]
pub(crate) async fn groups(State(state): State<AppState>) -> Result<Json<Vec<Group>>, ApiError> {
    Ok(Json(state.engine.store().groups().await?))
}

fn check_parallel(p: Option<u32>) -> Result<(), ApiError> {
    match p {
        Some(0) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "parallel must be at least 1 (pause the group to stop it)",
        )),
        Some(n) if n > deputy_core::limits::MAX_GROUP_PARALLEL => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!(
                "parallel must be at most {}",
                deputy_core::limits::MAX_GROUP_PARALLEL
            ),
        )),
        _ => Ok(()),
    }
}

#[utoipa::path(post, path = "/v1/groups", tag = "queue", request_body = NewGroup, responses((status = 201, body = Group), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn add_group(
    State(state): State<AppState>,
    body: Result<Json<NewGroup>, JsonRejection>,
) -> Result<(StatusCode, Json<Group>), ApiError> {
    let Json(g) = body?;
    check_parallel(g.parallel)?;
    deputy_core::limits::check_group_name(&g.name)
        .map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m))?;
    Ok((
        StatusCode::CREATED,
        Json(state.engine.add_group(&g.name, g.parallel).await?),
    ))
}

#[utoipa::path(patch, path = "/v1/groups/{name}", tag = "queue", params(("name" = String, Path)), request_body = GroupUpdate, responses((status = 200, body = Group), (status = 404, description = "No such group", body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn update_group(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<GroupUpdate>, JsonRejection>,
) -> Result<Json<Group>, ApiError> {
    let Json(u) = body?;
    check_parallel(u.parallel)?;
    // The group is the resource this route names: a missing one is 404 here (a body
    // naming an unknown group elsewhere stays 422).
    match state.engine.set_group_parallel(&name, u.parallel).await {
        Err(deputy_engine::EngineError::Store(deputy_store::StoreError::UnknownGroup(g))) => {
            Err(ApiError::not_found(format!(
                "no group `{g}`: create it with `deputy group add {g}`"
            )))
        }
        other => Ok(Json(other?)),
    }
}

#[utoipa::path(post, path = "/v1/clean", tag = "queue", request_body = CleanRequest, responses((status = 200, body = CleanResponse), (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn clean(
    State(state): State<AppState>,
    body: Result<Json<CleanRequest>, JsonRejection>,
) -> Result<Json<CleanResponse>, ApiError> {
    let Json(c) = body?;
    if !c.older_than_days.is_finite() || !(0.0..=1_000_000.0).contains(&c.older_than_days) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "older_than_days must be between 0 and 1000000",
        ));
    }
    let before = now_ms() - (c.older_than_days * 86_400_000.0) as i64;
    Ok(Json(CleanResponse {
        deleted: state.engine.store().clean(before).await?,
    }))
}

#[utoipa::path(get, path = "/v1/nodes", tag = "health", responses((status = 200, description = "Nodes sharing the store", body = Vec<NodeInfo>)))]
pub(crate) async fn nodes(State(state): State<AppState>) -> Result<Json<Vec<NodeInfo>>, ApiError> {
    Ok(Json(state.engine.store().nodes().await?))
}
