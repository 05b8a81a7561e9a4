//! The routes under `/v1/schedules`: recurring schedules and their runs.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use deputy_core::schedule::{NewSchedule, ScheduleView, check_schedule_name};

use crate::AppState;
use crate::error::{ApiError, ErrorBody};

fn checked_name(name: &str) -> Result<(), ApiError> {
    check_schedule_name(name).map_err(ApiError::bad_request)
}

/// Creates a schedule; its first tick is the first after now.
#[utoipa::path(post, path = "/v1/schedules", tag = "schedules", request_body = NewSchedule,
    responses((status = 201, body = ScheduleView), (status = 409, description = "A schedule of that name exists", body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn add(
    State(state): State<AppState>,
    body: Result<Json<NewSchedule>, JsonRejection>,
) -> Result<(StatusCode, Json<ScheduleView>), ApiError> {
    let Json(new) = body?;
    Ok((
        StatusCode::CREATED,
        Json(state.engine.add_schedule(new).await?),
    ))
}

/// Every schedule with its next ticks.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules",
    responses((status = 200, body = Vec<ScheduleView>)))]
pub(crate) async fn list(
    State(state): State<AppState>,
) -> Result<Json<Vec<ScheduleView>>, ApiError> {
    Ok(Json(state.engine.schedules().await?))
}

/// One schedule with its next ticks and latest runs (newest first).
#[utoipa::path(get, path = "/v1/schedules/{name}", tag = "schedules", params(("name" = String, Path)),
    responses((status = 200, body = ScheduleView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    checked_name(&name)?;
    Ok(Json(state.engine.schedule(&name).await?))
}

/// Removes a schedule; the tasks it submitted stay.
#[utoipa::path(delete, path = "/v1/schedules/{name}", tag = "schedules", params(("name" = String, Path)),
    responses((status = 204, description = "Removed"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    checked_name(&name)?;
    state.engine.remove_schedule(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pauses a schedule: no tick fires until it is resumed.
#[utoipa::path(post, path = "/v1/schedules/{name}/pause", tag = "schedules", params(("name" = String, Path)),
    responses((status = 200, body = ScheduleView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn pause(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    checked_name(&name)?;
    Ok(Json(state.engine.pause_schedule(&name).await?))
}

/// Resumes a schedule from now (ticks that passed while it was paused do not run).
#[utoipa::path(post, path = "/v1/schedules/{name}/resume", tag = "schedules", params(("name" = String, Path)),
    responses((status = 200, body = ScheduleView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn resume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    checked_name(&name)?;
    Ok(Json(state.engine.resume_schedule(&name).await?))
}
