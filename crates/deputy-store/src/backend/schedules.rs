//! Schedules: stored objects whose ticks submit tasks. Firing a tick is a
//! compare-and-set on the schedule's `next_fire_at` in the same transaction as the
//! tasks it submits, and `schedule_runs` holds one row per tick (its primary key), so a
//! tick submits at most one task however many nodes race for it.

use deputy_core::event::EventBody;
use deputy_core::schedule::{MissedPolicy, OverlapPolicy, Schedule, ScheduleRun, Trigger};
use deputy_core::submit::{DepInput, DepTarget};
use deputy_core::time::Millis;
use deputy_core::{DepMode, NewTask, TaskId};

use super::dialect::Conn;
use super::rows::{parse_id, parse_status};
use super::tasks::{self, append_event};
use crate::sql::{Row, query};
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

fn from_row(row: &Row) -> Result<Schedule> {
    let cron: Option<String> = row.get("cron")?;
    let tz: String = row.get("tz")?;
    let trigger = match cron {
        Some(pattern) => Trigger::Cron { pattern, tz },
        None => Trigger::Every {
            ms: row
                .get::<Option<i64>>("every_ms")?
                .ok_or_else(|| corrupt("neither cron nor every_ms"))? as u64,
            anchor: row.get::<Option<i64>>("anchor")?.unwrap_or(0),
        },
    };
    let task: String = row.get("task")?;
    let task: NewTask = serde_json::from_str(&task).map_err(|e| corrupt(format!("task: {e}")))?;
    let missed: String = row.get("missed")?;
    let overlap: String = row.get("overlap")?;
    Ok(Schedule {
        name: row.get("name")?,
        trigger,
        task,
        missed: MissedPolicy::parse(&missed).ok_or_else(|| corrupt(&missed))?,
        catch_up_limit: row.get::<i64>("catch_up_limit")? as u32,
        overlap: OverlapPolicy::parse(&overlap).ok_or_else(|| corrupt(&overlap))?,
        keep_runs: row.get::<i64>("keep_runs")? as u32,
        paused: row.get::<i64>("paused")? != 0,
        next_fire_at: row.get("next_fire_at")?,
        last_fire_at: row.get("last_fire_at")?,
        fired: row.get::<i64>("fired")? as u64,
        skipped: row.get::<i64>("skipped")? as u64,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

fn not_found(name: &str) -> StoreError {
    StoreError::NoSchedule(name.to_string())
}

pub(super) async fn get(conn: &mut Conn, name: &str) -> Result<Schedule> {
    let row = query(concat!(
        "SELECT ",
        columns!(),
        " FROM schedules WHERE name = ?"
    ))
    .bind(name)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| not_found(name))?;
    from_row(&row)
}

pub(super) async fn list(conn: &mut Conn) -> Result<Vec<Schedule>> {
    let rows = query(concat!(
        "SELECT ",
        columns!(),
        " FROM schedules ORDER BY name"
    ))
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Unpaused schedules whose next tick is at or before `now`, soonest first.
pub(super) async fn due(conn: &mut Conn, now: Millis, limit: u32) -> Result<Vec<Schedule>> {
    let rows = query(concat!(
        "SELECT ",
        columns!(),
        " FROM schedules WHERE paused = 0 AND next_fire_at <= ? ORDER BY next_fire_at LIMIT ?"
    ))
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await?;
    rows.iter().map(from_row).collect()
}

pub(super) async fn next_at(conn: &mut Conn) -> Result<Option<Millis>> {
    query("SELECT MIN(next_fire_at) FROM schedules WHERE paused = 0")
        .scalar(conn)
        .await
}

pub(super) async fn runs(conn: &mut Conn, name: &str, limit: u32) -> Result<Vec<ScheduleRun>> {
    let rows = query(
        "SELECT r.task_id, r.tick, r.fired_at, t.status FROM schedule_runs r \
         JOIN tasks t ON t.id = r.task_id WHERE r.schedule = ? ORDER BY r.tick DESC LIMIT ?",
    )
    .bind(name)
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ScheduleRun {
                task: parse_id(&r.get::<String>("task_id")?)?,
                tick: r.get("tick")?,
                fired_at: r.get("fired_at")?,
                status: parse_status(&r.get::<String>("status")?)?,
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
    let r = query("INSERT INTO schedules (name, cron, tz, every_ms, anchor, task, missed, catch_up_limit, \
         overlap, keep_runs, paused, next_fire_at, last_fire_at, fired, skipped, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, 0, 0, ?, ?) ON CONFLICT DO NOTHING")
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
    .execute(conn)
    .await?;
    if r == 0 {
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
        query("UPDATE schedules SET paused = 1, updated_at = ? WHERE name = ?")
            .bind(now)
            .bind(name)
            .execute(conn)
            .await?
    } else {
        query("UPDATE schedules SET paused = 0, next_fire_at = ?, updated_at = ? WHERE name = ?")
            .bind(next_fire_at)
            .bind(now)
            .bind(name)
            .execute(conn)
            .await?
    };
    if r == 0 {
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
    query("DELETE FROM schedule_runs WHERE schedule = ?")
        .bind(name)
        .execute(conn)
        .await?;
    let r = query("DELETE FROM schedules WHERE name = ?")
        .bind(name)
        .execute(conn)
        .await?;
    if r == 0 {
        return Err(not_found(name));
    }
    append_event(conn, None, &event(name, "removed", None, Vec::new()), now).await?;
    Ok(())
}

/// Fires one due tick (or several, catching up): the compare-and-set on
/// `next_fire_at`, the overlap policy against the schedule's unfinished runs, the tasks,
/// their `schedule_runs` rows, retention, and the event, all in this transaction.
pub(super) async fn fire(conn: &mut Conn, f: &Fire) -> Result<Fired> {
    let moved = query(
        "UPDATE schedules SET next_fire_at = ?, updated_at = ? \
         WHERE name = ? AND paused = 0 AND next_fire_at = ?",
    )
    .bind(f.next_fire_at)
    .bind(f.now)
    .bind(&f.name)
    .bind(f.expected_next)
    .execute(conn)
    .await?;
    if moved == 0 {
        return Err(StoreError::ScheduleMoved(f.name.clone()));
    }
    let s = get(conn, &f.name).await?;
    let unfinished: Option<String> = query(concat!(
        "SELECT r.task_id FROM schedule_runs r JOIN tasks t ON t.id = r.task_id \
         WHERE r.schedule = ? AND t.status NOT IN ",
        terminal!(),
        " ORDER BY r.tick DESC LIMIT 1"
    ))
    .bind(&f.name)
    .scalar_optional(conn)
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
                    target: DepTarget::Task(deputy_core::IdRef::Full(parse_id(id)?)),
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
        query("INSERT INTO schedule_runs (schedule, tick, task_id, fired_at) VALUES (?, ?, ?, ?)")
            .bind(&f.name)
            .bind(tick)
            .bind(sub.task.id.key())
            .bind(f.now)
            .execute(conn)
            .await?;
    }
    query(
        "UPDATE schedules SET fired = fired + ?, skipped = skipped + ?, \
         last_fire_at = CASE WHEN ? > 0 THEN ? ELSE last_fire_at END WHERE name = ?",
    )
    .bind(submitted.len() as i64)
    .bind(skipped as i64)
    .bind(submitted.len() as i64)
    .bind(f.now)
    .bind(&f.name)
    .execute(conn)
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
    let old: Vec<String> = query(concat!(
        "SELECT r.task_id FROM schedule_runs r JOIN tasks t ON t.id = r.task_id \
         WHERE r.schedule = ? AND t.status IN ",
        terminal!(),
        " AND r.tick < (SELECT MIN(tick) FROM (SELECT tick FROM schedule_runs \
                          WHERE schedule = ? ORDER BY tick DESC LIMIT ?) newest) \
           AND NOT EXISTS (SELECT 1 FROM task_deps d JOIN tasks o ON o.id = d.task_id \
                           WHERE d.depends_on = t.id AND o.finished_at IS NULL) \
         ORDER BY r.tick LIMIT ?"
    ))
    .bind(name)
    .bind(name)
    .bind(i64::from(keep))
    .bind(MAX_CLEANED_PER_FIRE)
    .scalars(conn)
    .await?;
    for id in &old {
        tasks::delete_task(conn, id).await?;
    }
    Ok(old.len() as u64)
}
