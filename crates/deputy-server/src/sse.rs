//! Server-sent events. A stream first replays committed events after the client's last
//! id from the log, then follows the bus live. It subscribes to the bus *before* the
//! replay, and skips live events it already replayed, so nothing falls between the two
//! and nothing comes twice. The producer runs in its own task, feeding a bounded
//! channel; when the client goes away the channel closes and the producer stops at once.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use deputy_core::{Event, EventBody, TaskId};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::AppState;
use crate::api::resolve_id;
use crate::error::ApiError;

const REPLAY_PAGE: u32 = 256;
/// Frames buffered between the producer and a client's connection.
const CLIENT_BUFFER: usize = 32;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamParams {
    /// For browsers' first connection, which cannot set `Last-Event-ID`.
    last_event_id: Option<i64>,
    group: Option<String>,
    /// Only these event types (comma-separated, e.g. `task.created,task.status`);
    /// `/v1/events` only.
    #[param(
        pattern = "^((task\\.(created|status|output|finished|cancel_requested|agent)|queue\\.updated|schedule\\.updated)(,|$))+$"
    )]
    types: Option<String>,
}

/// The `types` filter, checked against the event types that exist.
fn parse_types(raw: Option<&str>) -> Result<Option<Vec<&'static str>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let mut types = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let known = EventBody::TYPE_NAMES
            .iter()
            .find(|t| **t == name)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unknown event type `{name}` in types; known types: {}",
                    EventBody::TYPE_NAMES.join(", ")
                ))
            })?;
        types.push(*known);
    }
    if types.is_empty() {
        return Err(ApiError::bad_request(
            "types names no event type; leave it out for every type",
        ));
    }
    Ok(Some(types))
}

/// Which events a stream carries, and when it ends.
#[derive(Debug, Clone)]
enum Scope {
    /// One task's events; the stream ends with the end of attempt `until` or a later one
    /// (the task's attempt when the stream opened), so replaying a retried task does not
    /// stop at an earlier attempt's end.
    Task { id: TaskId, until: u32 },
    All {
        group: Option<String>,
        /// Only events of these types (None: every type).
        types: Option<Vec<&'static str>>,
    },
}

impl Scope {
    fn wants(&self, e: &Event) -> bool {
        match self {
            Scope::Task { id, .. } => e.task == Some(*id),
            Scope::All {
                types: Some(types), ..
            } if !types.contains(&e.body.type_name()) => false,
            Scope::All { group: None, .. } => true,
            Scope::All { group: Some(g), .. } => match &e.body {
                EventBody::TaskCreated { group, .. } => group == g,
                EventBody::QueueUpdated { group, .. } => group.as_deref() == Some(g),
                // Other task events carry no group; the stream's consumer filters by
                // the task ids it saw created in the group.
                _ => true,
            },
        }
    }

    /// A task stream ends with the task's terminal event.
    fn ends_with(&self, e: &Event) -> bool {
        match self {
            Scope::Task { id, until } => {
                e.task == Some(*id)
                    && matches!(e.body, EventBody::TaskFinished { attempt, .. } if attempt >= *until)
            }
            Scope::All { .. } => false,
        }
    }
}

fn start_after(headers: &HeaderMap, query: Option<i64>) -> Result<i64, ApiError> {
    if let Some(v) = headers.get("last-event-id") {
        let s = v
            .to_str()
            .map_err(|_| ApiError::bad_request("Last-Event-ID is not text"))?;
        return s
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Last-Event-ID must be an event id (a whole number), got `{s}`"
                ))
            });
    }
    match query {
        Some(n) if n < 0 => Err(ApiError::bad_request("last_event_id must be 0 or more")),
        Some(n) => Ok(n),
        None => Ok(0),
    }
}

#[utoipa::path(get, path = "/v1/tasks/{id}/events", tag = "events", params(("id" = String, Path), StreamParams, ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event id")),
    responses((status = 200, description = "Server-sent events: `id:` is the event seq, `event:` its type, `data:` an `Event` as JSON", body = deputy_core::Event, content_type = "text/event-stream"), (status = 400, body = crate::error::ErrorBody)))]
pub(crate) async fn task_events(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    params: Result<Query<StreamParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    if p.group.is_some() || p.types.is_some() {
        return Err(ApiError::bad_request(
            "group and types filters apply to /v1/events only",
        ));
    }
    let id = resolve_id(&state, &raw).await?;
    let after = start_after(&headers, p.last_event_id)?;
    let task = state.engine.store().get(id).await?;
    let until = task.attempt;
    // A finished task's stream is fixed: every client gets the one rendered copy.
    if task.status.is_terminal()
        && let Some(replay) = state
            .replays
            .finished(state.engine.store().as_ref(), id, until)
            .await?
    {
        return Ok(replay_response(replay.after(after)));
    }
    Ok(sse_response(stream_events(
        state,
        Scope::Task { id, until },
        after,
    )))
}

#[utoipa::path(get, path = "/v1/events", tag = "events", params(StreamParams, ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event id")),
    responses((status = 200, description = "Server-sent events: `id:` is the event seq, `event:` its type, `data:` an `Event` as JSON", body = deputy_core::Event, content_type = "text/event-stream"), (status = 400, body = crate::error::ErrorBody)))]
pub(crate) async fn all_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<StreamParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let after = start_after(&headers, p.last_event_id)?;
    let types = parse_types(p.types.as_deref())?;
    Ok(sse_response(stream_events(
        state,
        Scope::All {
            group: p.group,
            types,
        },
        after,
    )))
}

fn sse_response(
    stream: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static,
) -> Response {
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    resp
}

/// A finished stream sent whole: the frames as rendered once, then the end.
fn replay_response(frames: axum::body::Bytes) -> Response {
    let mut resp = Response::new(axum::body::Body::from(frames));
    let h = resp.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

fn frame(e: &Event) -> SseEvent {
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
    frame_with(e, &data)
}

fn frame_with(e: &Event, json: &str) -> SseEvent {
    SseEvent::default()
        .id(e.seq.to_string())
        .event(e.body.type_name())
        .data(json)
}

fn stream_events(
    state: AppState,
    scope: Scope,
    after: i64,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    let live = state.engine.bus().subscribe();
    tokio::spawn(async move {
        let gauge = state.engine.metrics().sse_subscribers.clone();
        gauge.inc();
        tokio::select! {
            () = produce(&state, &scope, after, live, &tx) => {}
            () = tx.closed() => {}
            () = state.stopping.cancelled() => {}
        }
        gauge.dec();
    });
    ReceiverStream::new(rx)
}

/// Sends one frame; false when the client is gone.
async fn send(tx: &mpsc::Sender<Result<SseEvent, Infallible>>, f: SseEvent) -> bool {
    tx.send(Ok(f)).await.is_ok()
}

async fn produce(
    state: &AppState,
    scope: &Scope,
    mut last: i64,
    mut live: broadcast::Receiver<Arc<deputy_engine::bus::Published>>,
    tx: &mpsc::Sender<Result<SseEvent, Infallible>>,
) {
    let task = match scope {
        Scope::Task { id, .. } => Some(*id),
        Scope::All { .. } => None,
    };
    // Replay what is committed.
    loop {
        let page = match state
            .engine
            .store()
            .events_after(last, REPLAY_PAGE, task)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(%e, "replaying events failed; closing the stream");
                return;
            }
        };
        // The live receiver was subscribed before this read, so what commits after a
        // last page arrives there.
        let at_end = deputy_store::page_is_last(&page, REPLAY_PAGE);
        for e in page {
            last = e.seq;
            if !scope.wants(&e) {
                continue;
            }
            if !send(tx, frame(&e)).await {
                return;
            }
            if scope.ends_with(&e) {
                return;
            }
        }
        if at_end {
            break;
        }
    }
    // Follow live.
    loop {
        match live.recv().await {
            Ok(p) => {
                let e = &p.event;
                if e.seq <= last {
                    continue;
                }
                last = e.seq;
                if !scope.wants(e) {
                    continue;
                }
                if !send(tx, frame_with(e, &p.json)).await {
                    return;
                }
                if scope.ends_with(e) {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                // Too slow to keep up: close, so the client resumes from its last id
                // (which the log still has). Say so first.
                tracing::info!(missed = n, last, "closing a lagging event stream");
                let note = SseEvent::default()
                    .event("stream.lagged")
                    .data(format!("{{\"resume_after\":{last}}}"));
                let _ = tx.try_send(Ok(note));
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
