//! Recurring schedules: creating, pausing and removing them, and firing their due
//! ticks from the scheduler loop. Every node fires due schedules; the store's
//! compare-and-set on `next_fire_at` lets exactly one of them submit each tick.

pub mod timing;

use std::sync::Arc;

use deputy_core::ValidationError;
use deputy_core::limits::MAX_LABELS;
use deputy_core::schedule::{NewSchedule, Schedule, ScheduleView, Trigger};
use deputy_core::submit::ValidTask;
use deputy_core::time::{Millis, now_ms};
use deputy_store::{Fire, StoreError};

use crate::{Engine, EngineError, Inner};
use timing::Ticker;

/// Ticks shown ahead in `show` and `ls`.
const UPCOMING: usize = 5;
/// Runs shown in `show`.
const RUNS_SHOWN: u32 = 20;
/// Schedules fired in one pass at most; the rest are due at once in the next.
const FIRE_BATCH: u32 = 64;
/// After a firing failed for a reason other than a lost race, wait this long before
/// trying again, so a broken database is not retried in a tight loop.
const RETRY_AFTER_ERROR_MS: i64 = 1000;

fn invalid(field: &str, message: impl Into<String>) -> EngineError {
    EngineError::InvalidSchedule(ValidationError::new(field, message))
}

impl Engine {
    /// Checks and stores a schedule; its first tick is the first after now.
    pub async fn add_schedule(&self, new: NewSchedule) -> Result<ScheduleView, EngineError> {
        let now = now_ms();
        let c = new.check().map_err(EngineError::InvalidSchedule)?;
        // The template must make a valid task now, with this daemon's defaults.
        let probe = c
            .task
            .clone()
            .validate(&self.inner.cfg.defaults, now)
            .map_err(|e| invalid(&format!("task.{}", e.field), e.message))?;
        self.check_agent(&probe.spec.kind)
            .map_err(|(field, message)| invalid(&format!("task.{field}"), message))?;
        if c.task.labels.len() >= MAX_LABELS {
            return Err(invalid(
                "task.labels",
                format!(
                    "a schedule's task has at most {} labels: each run also gets `schedule:NAME`",
                    MAX_LABELS - 1
                ),
            ));
        }
        let trigger = match (c.cron, c.every_ms) {
            (Some(pattern), _) => Trigger::Cron { pattern, tz: c.tz },
            (None, Some(ms)) => Trigger::Every { ms, anchor: now },
            (None, None) => return Err(invalid("cron", "a schedule needs `cron` or `every`")),
        };
        let ticker = Ticker::new(&trigger).map_err(|e| invalid(e.field, e.message))?;
        let schedule = Schedule {
            name: c.name,
            trigger,
            task: c.task,
            missed: c.missed,
            catch_up_limit: c.catch_up_limit,
            overlap: c.overlap,
            keep_runs: c.keep_runs,
            paused: c.paused,
            next_fire_at: ticker.next_after(now),
            last_fire_at: None,
            fired: 0,
            skipped: 0,
            created_at: now,
            updated_at: now,
        };
        let stored = self.inner.store.add_schedule(schedule).await?;
        self.inner.wake.notify_one();
        Ok(view(stored, Vec::new()))
    }

    /// Every schedule with its next ticks.
    pub async fn schedules(&self) -> Result<Vec<ScheduleView>, EngineError> {
        let all = self.inner.store.schedules().await?;
        Ok(all.into_iter().map(|s| view(s, Vec::new())).collect())
    }

    /// One schedule with its next ticks and latest runs.
    pub async fn schedule(&self, name: &str) -> Result<ScheduleView, EngineError> {
        let s = self.inner.store.schedule(name).await?;
        let runs = self.inner.store.schedule_runs(name, RUNS_SHOWN).await?;
        Ok(view(s, runs))
    }

    /// Pauses a schedule: no tick fires until it is resumed.
    pub async fn pause_schedule(&self, name: &str) -> Result<ScheduleView, EngineError> {
        let s = self
            .inner
            .store
            .set_schedule_paused(name, true, None, now_ms())
            .await?;
        Ok(view(s, Vec::new()))
    }

    /// Resumes a schedule from now: ticks that passed while it was paused do not run.
    pub async fn resume_schedule(&self, name: &str) -> Result<ScheduleView, EngineError> {
        let now = now_ms();
        let s = self.inner.store.schedule(name).await?;
        let next = Ticker::new(&s.trigger)
            .map_err(|e| invalid(e.field, e.message))?
            .next_after(now);
        let s = self
            .inner
            .store
            .set_schedule_paused(name, false, next, now)
            .await?;
        self.inner.wake.notify_one();
        Ok(view(s, Vec::new()))
    }

    /// Removes a schedule; the tasks it already submitted stay.
    pub async fn remove_schedule(&self, name: &str) -> Result<(), EngineError> {
        Ok(self.inner.store.remove_schedule(name, now_ms()).await?)
    }
}

fn view(s: Schedule, runs: Vec<deputy_core::schedule::ScheduleRun>) -> ScheduleView {
    let upcoming = match (s.paused, s.next_fire_at, Ticker::new(&s.trigger)) {
        (false, Some(next), Ok(t)) => {
            let mut v = vec![next];
            v.extend(t.upcoming(next, UPCOMING - 1));
            v
        }
        _ => Vec::new(),
    };
    ScheduleView {
        schedule: s,
        upcoming,
        runs,
    }
}

/// The task one tick submits: the template with the schedule's label (and its name
/// when the template has none), validated with today's defaults.
fn run_task(inner: &Inner, s: &Schedule, now: Millis) -> Result<ValidTask, String> {
    let mut t = s.task.clone();
    t.labels.push(format!("schedule:{}", s.name));
    if t.name.is_none() {
        t.name = Some(s.name.clone());
    }
    let valid = t
        .validate(&inner.cfg.defaults, now)
        .map_err(|e| format!("task.{}: {}", e.field, e.message))?;
    crate::check_agent_kind(&inner.cfg, &valid.spec.kind)
        .map_err(|(field, message)| format!("task.{field}: {message}"))?;
    Ok(valid)
}

/// Fires every schedule due at `now`. Returns the earliest time to look again when a
/// firing failed (None when all went through or lost their race to another node).
pub(crate) async fn fire_due(inner: &Arc<Inner>, now: Millis) -> Option<Millis> {
    let due = match inner.store.due_schedules(now, FIRE_BATCH).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(%e, "reading due schedules failed");
            return Some(now + RETRY_AFTER_ERROR_MS);
        }
    };
    let mut retry = None;
    for s in due {
        let Some(due_at) = s.next_fire_at else {
            continue;
        };
        let fire = match plan_fire(inner, &s, due_at, now) {
            Ok(f) => f,
            Err(why) => {
                // The schedule cannot fire (its zone left the system's database, or its
                // task is no longer valid here): its ticks are skipped, not retried in a
                // loop, and the reason is logged.
                tracing::error!(schedule = %s.name, %why, "a schedule's tick cannot run; skipped");
                let ticker = Ticker::new(&s.trigger).ok();
                Fire {
                    name: s.name.clone(),
                    expected_next: due_at,
                    next_fire_at: ticker.and_then(|t| t.next_after(now)),
                    runs: Vec::new(),
                    skipped: 1,
                    now,
                }
            }
        };
        match inner.store.fire_schedule(fire).await {
            Ok(fired) => {
                tracing::debug!(
                    schedule = %s.name,
                    submitted = fired.submitted.len(),
                    skipped = fired.skipped,
                    cleaned = fired.cleaned,
                    "schedule fired"
                );
                if !fired.submitted.is_empty() {
                    inner.wake.notify_one();
                }
            }
            // Another node fired it, or it was paused or removed meanwhile.
            Err(StoreError::ScheduleMoved(_)) => {}
            Err(e) => {
                tracing::error!(schedule = %s.name, %e, "firing a schedule failed");
                retry = Some(now + RETRY_AFTER_ERROR_MS);
            }
        }
    }
    retry
}

fn plan_fire(inner: &Inner, s: &Schedule, due: Millis, now: Millis) -> Result<Fire, String> {
    let ticker = Ticker::new(&s.trigger).map_err(|e| e.message)?;
    let plan = timing::plan(&ticker, due, now, s.missed, s.catch_up_limit);
    let task = run_task(inner, s, now)?;
    Ok(Fire {
        name: s.name.clone(),
        expected_next: due,
        next_fire_at: plan.next,
        runs: plan.run.into_iter().map(|t| (t, task.clone())).collect(),
        skipped: plan.skipped,
        now,
    })
}
