//! Schedules: stored objects whose ticks submit tasks. Firing a tick is a
//! compare-and-set on the schedule's `next_fire_at` in the same transaction as the
//! tasks it submits, and `schedule_runs` holds one row per tick (its primary key), so a
//! tick submits at most one task however many nodes race for it.

use deputy_core::event::EventBody;
use deputy_core::schedule::{MissedPolicy, OverlapPolicy, Schedule, ScheduleRun, Trigger};
use deputy_core::submit::{DepInput, DepTarget};
use deputy_core::time::Millis;
use deputy_core::{DepMode, NewTask, TaskId};
use sqlx::Row;

use super::dialect::{Conn, DbRow, sql};
use super::rows::{parse_id, parse_status};
use super::tasks::{self, append_event};
use crate::{Fire, Fired, Result, StoreError, Submitted};

/// The columns of a schedule row (a macro so queries are built with `concat!`).
macro_rules! columns {
    () => {
        "name, cron, tz, every_ms, anchor, task, missed, catch_up_limit, overlap, keep_runs, \
         paused, next_fire_at, last_fire_at, fired, skipped, created_at, updated_at"
    };
}

/// The terminal statuses, as an SQL list.
macro_rules! terminal {
    () => {
        "('succeeded', 'failed', 'cancelled', 'timed_out', 'interrupted')"
    };
}

/// Runs deleted by retention in one firing at most; the rest go at the next.
const MAX_CLEANED_PER_FIRE: i64 = 1000;

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("schedule row: {what}"))
}

fn from_row(row: &DbRow) -> Result<Schedule> {
    let cron: Option<String> = row.try_get("cron")?;
    let tz: String = row.try_get("tz")?;
    let trigger = match cron {
        Some(pattern) => Trigger::Cron { pattern, tz },
        None => Trigger::Every {
            ms: row
                .try_get::<Option<i64>, _>("every_ms")?
                .ok_or_else(|| corrupt("neither cron nor every_ms"))? as u64,
            anchor: row.try_get::<Option<i64>, _>("anchor")?.unwrap_or(0),
        },
    };
    let task: String = row.try_get("task")?;
    let task: NewTask = serde_json::from_str(&task).map_err(|e| corrupt(format!("task: {e}")))?;
    let missed: String = row.try_get("missed")?;
    let overlap: String = row.try_get("overlap")?;
    Ok(Schedule {
        name: row.try_get("name")?,
        trigger,
        task,
        missed: MissedPolicy::parse(&missed).ok_or_else(|| corrupt(&missed))?,
        catch_up_limit: row.try_get::<i64, _>("catch_up_limit")? as u32,
        overlap: OverlapPolicy::parse(&overlap).ok_or_else(|| corrupt(&overlap))?,
        keep_runs: row.try_get::<i64, _>("keep_runs")? as u32,
        paused: row.try_get::<i64, _>("paused")? != 0,
        next_fire_at: row.try_get("next_fire_at")?,
        last_fire_at: row.try_get("last_fire_at")?,
        fired: row.try_get::<i64, _>("fired")? as u64,
        skipped: row.try_get::<i64, _>("skipped")? as u64,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn not_found(name: &str) -> StoreError {
    StoreError::NoSchedule(name.to_string())
}

pub(super) async fn get(conn: &mut Conn, name: &str) -> Result<Schedule> {
    let row = sqlx::query(sql(concat!(
        "SELECT ",
        columns!(),
        " FROM schedules WHERE name = ?"
    )))
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| not_found(name))?;
    from_row(&row)
}

pub(super) async fn list(conn: &mut Conn) -> Result<Vec<Schedule>> {
    let rows = sqlx::query(sql(concat!(
        "SELECT ",
        columns!(),
        " FROM schedules ORDER BY name"
    )))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Unpaused schedules whose next tick is at or before `now`, soonest first.
pub(super) async fn due(conn: &mut Conn, now: Millis, limit: u32) -> Result<Vec<Schedule>> {
    let rows = sqlx::query(sql(concat!(
        "SELECT ",
        columns!(),
        " FROM schedules WHERE paused = 0 AND next_fire_at <= ? ORDER BY next_fire_at LIMIT ?"
    )))
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(from_row).collect()
}

pub(super) async fn next_at(conn: &mut Conn) -> Result<Option<Millis>> {
    Ok(sqlx::query_scalar(sql(
        "SELECT MIN(next_fire_at) FROM schedules WHERE paused = 0",
    ))
    .fetch_one(&mut *conn)
    .await?)
}

pub(super) async fn runs(conn: &mut Conn, name: &str, limit: u32) -> Result<Vec<ScheduleRun>> {
    let rows = sqlx::query(sql(
        "SELECT r.task_id, r.tick, r.fired_at, t.status FROM schedule_runs r \
         JOIN tasks t ON t.id = r.task_id WHERE r.schedule = ? ORDER BY r.tick DESC LIMIT ?",
    ))
    .bind(name)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ScheduleRun {
                task: parse_id(&r.try_get::<String, _>("task_id")?)?,
                tick: r.try_get("tick")?,
                fired_at: r.try_get("fired_at")?,
                status: parse_status(&r.try_get::<String, _>("status")?)?,
            })
        })
        .collect()
}

fn event(name: &str, action: &str, next_fire_at: Option<Millis>, tasks: Vec<TaskId>) -> EventBody {
    EventBody::ScheduleUpdated {
        schedule: name.to_string(),
        action: action.to_string(),
        next_fire_at,
        tasks,
    }
}

pub(super) async fn add(conn: &mut Conn, s: &Schedule) -> Result<Schedule> {
    let (cron, tz, every_ms, anchor) = match &s.trigger {
        Trigger::Cron { pattern, tz } => (Some(pattern.as_str()), tz.as_str(), None, None),
        Trigger::Every { ms, anchor } => (None, "UTC", Some(*ms as i64), Some(*anchor)),
    };
    let task = serde_json::to_string(&s.task).expect("a task serializes");
    let r = sqlx::query(sql(
        "INSERT INTO schedules (name, cron, tz, every_ms, anchor, task, missed, catch_up_limit, \
         overlap, keep_runs, paused, next_fire_at, last_fire_at, fired, skipped, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 0, 0, ?, ?) ON CONFLICT DO NOTHING",
    ))
    .bind(&s.name)
    .bind(cron)
    .bind(tz)
    .bind(every_ms)
    .bind(anchor)
    .bind(task)
    .bind(s.missed.as_str())
    .bind(i64::from(s.catch_up_limit))
    .bind(s.overlap.as_str())
    .bind(i64::from(s.keep_runs))
    .bind(i64::from(s.paused))
    .bind(s.next_fire_at)
    .bind(s.created_at)
    .bind(s.updated_at)
    .execute(&mut *conn)
    .await?;
    if r.rows_affected() == 0 {
        return Err(StoreError::ScheduleExists(s.name.clone()));
    }
    append_event(
        conn,
        None,
        &event(&s.name, "created", s.next_fire_at, Vec::new()),
        s.created_at,
    )
    .await?;
    get(conn, &s.name).await
}

/// Pauses, or resumes with `next_fire_at` as the next tick (ticks that passed while it
/// was paused are not missed runs: resuming starts from now).
pub(super) async fn set_paused(
    conn: &mut Conn,
    name: &str,
    paused: bool,
    next_fire_at: Option<Millis>,
    now: Millis,
) -> Result<Schedule> {
    let r = if paused {
        sqlx::query(sql(
            "UPDATE schedules SET paused = 1, updated_at = ? WHERE name = ?",
        ))
        .bind(now)
        .bind(name)
        .execute(&mut *conn)
        .await?
    } else {
        sqlx::query(sql(
            "UPDATE schedules SET paused = 0, next_fire_at = ?, updated_at = ? WHERE name = ?",
        ))
        .bind(next_fire_at)
        .bind(now)
        .bind(name)
        .execute(&mut *conn)
        .await?
    };
    if r.rows_affected() == 0 {
        return Err(not_found(name));
    }
    let s = get(conn, name).await?;
    let action = if paused { "paused" } else { "resumed" };
    append_event(
        conn,
        None,
        &event(name, action, s.next_fire_at, Vec::new()),
        now,
    )
    .await?;
    Ok(s)
}

/// Deletes the schedule; the tasks it submitted stay.
pub(super) async fn remove(conn: &mut Conn, name: &str, now: Millis) -> Result<()> {
    sqlx::query(sql("DELETE FROM schedule_runs WHERE schedule = ?"))
        .bind(name)
        .execute(&mut *conn)
        .await?;
    let r = sqlx::query(sql("DELETE FROM schedules WHERE name = ?"))
        .bind(name)
        .execute(&mut *conn)
        .await?;
    if r.rows_affected() == 0 {
        return Err(not_found(name));
    }
    append_event(conn, None, &event(name, "removed", None, Vec::new()), now).await?;
    Ok(())
}

/// Fires one due tick (or several, catching up): the compare-and-set on
/// `next_fire_at`, the overlap policy against the schedule's unfinished runs, the tasks,
/// their `schedule_runs` rows, retention, and the event, all in this transaction.
pub(super) async fn fire(conn: &mut Conn, f: &Fire) -> Result<Fired> {
    let moved = sqlx::query(sql(
        "UPDATE schedules SET next_fire_at = ?, updated_at = ? \
         WHERE name = ? AND paused = 0 AND next_fire_at = ?",
    ))
    .bind(f.next_fire_at)
    .bind(f.now)
    .bind(&f.name)
    .bind(f.expected_next)
    .execute(&mut *conn)
    .await?;
    if moved.rows_affected() == 0 {
        return Err(StoreError::ScheduleMoved(f.name.clone()));
    }
    let s = get(conn, &f.name).await?;
    let unfinished: Option<String> = sqlx::query_scalar(sql(concat!(
        "SELECT r.task_id FROM schedule_runs r JOIN tasks t ON t.id = r.task_id \
         WHERE r.schedule = ? AND t.status NOT IN ",
        terminal!(),
        " ORDER BY r.tick DESC LIMIT 1"
    )))
    .bind(&f.name)
    .fetch_optional(&mut *conn)
    .await?;
    let mut skipped = f.skipped;
    let mut runs = f.runs.clone();
    if unfinished.is_some() && s.overlap == OverlapPolicy::Skip {
        skipped += runs.len() as u64;
        runs.clear();
    }
    let mut batch = Vec::with_capacity(runs.len());
    for (i, (_, task)) in runs.iter().enumerate() {
        let mut task = task.clone();
        // Runs of one firing go one after another unless overlapping is allowed; with
        // `queue`, the first waits for the run still going.
        task.key = Some(format!("tick-{i}"));
        if s.overlap != OverlapPolicy::Allow {
            if i > 0 {
                task.depends_on.push(DepInput {
                    target: DepTarget::Key(format!("tick-{}", i - 1)),
                    mode: DepMode::Finish,
                });
            } else if let (Some(id), OverlapPolicy::Queue) = (&unfinished, s.overlap) {
                task.depends_on.push(DepInput {
                    target: DepTarget::Task(id.parse().map_err(|_| corrupt(id))?),
                    mode: DepMode::Finish,
                });
            }
        }
        batch.push(task);
    }
    let submitted: Vec<Submitted> = if batch.is_empty() {
        Vec::new()
    } else {
        tasks::submit(conn, batch, f.now).await?
    };
    for ((tick, _), sub) in runs.iter().zip(&submitted) {
        sqlx::query(sql(
            "INSERT INTO schedule_runs (schedule, tick, task_id, fired_at) VALUES (?, ?, ?, ?)",
        ))
        .bind(&f.name)
        .bind(tick)
        .bind(sub.task.id.to_string())
        .bind(f.now)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(sql(
        "UPDATE schedules SET fired = fired + ?, skipped = skipped + ?, \
         last_fire_at = CASE WHEN ? > 0 THEN ? ELSE last_fire_at END WHERE name = ?",
    ))
    .bind(submitted.len() as i64)
    .bind(skipped as i64)
    .bind(submitted.len() as i64)
    .bind(f.now)
    .bind(&f.name)
    .execute(&mut *conn)
    .await?;
    let cleaned = clean_old_runs(conn, &f.name, s.keep_runs).await?;
    let ids: Vec<TaskId> = submitted.iter().map(|s| s.task.id).collect();
    let action = if ids.is_empty() { "skipped" } else { "fired" };
    append_event(
        conn,
        None,
        &event(&f.name, action, f.next_fire_at, ids),
        f.now,
    )
    .await?;
    Ok(Fired {
        submitted,
        skipped,
        cleaned,
    })
}

/// Deletes the finished runs older than the newest `keep` (with their output, attempts
/// and events), unless a task still waiting depends on one.
async fn clean_old_runs(conn: &mut Conn, name: &str, keep: u32) -> Result<u64> {
    let old: Vec<String> = sqlx::query_scalar(sql(concat!(
        "SELECT r.task_id FROM schedule_runs r JOIN tasks t ON t.id = r.task_id \
         WHERE r.schedule = ? AND t.status IN ",
        terminal!(),
        " AND r.tick < (SELECT MIN(tick) FROM (SELECT tick FROM schedule_runs \
                          WHERE schedule = ? ORDER BY tick DESC LIMIT ?) newest) \
           AND NOT EXISTS (SELECT 1 FROM task_deps d JOIN tasks o ON o.id = d.task_id \
                           WHERE d.depends_on = t.id AND o.finished_at IS NULL) \
         ORDER BY r.tick LIMIT ?"
    )))
    .bind(name)
    .bind(name)
    .bind(i64::from(keep))
    .bind(MAX_CLEANED_PER_FIRE)
    .fetch_all(&mut *conn)
    .await?;
    for id in &old {
        tasks::delete_task(conn, id).await?;
    }
    Ok(old.len() as u64)
}
