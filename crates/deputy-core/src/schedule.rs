//! Recurring schedules: what a user sends ([`NewSchedule`]), what is stored
//! ([`Schedule`]), and the policies for runs missed while no node was up and for runs
//! that would overlap. Parsing cron patterns and time zones needs the time-zone database,
//! which is I/O, so it happens in the engine; this module checks everything else.

use serde::{Deserialize, Serialize};

use crate::Status;
use crate::id::{TaskId, truncate_for_message};
use crate::submit::{DurationInput, NewTask, ValidationError};
use crate::time::Millis;

pub const MAX_SCHEDULE_NAME_BYTES: usize = 64;
pub const MAX_CRON_BYTES: usize = 256;
pub const MAX_TZ_BYTES: usize = 64;
/// `every` at least this often is refused: a schedule is not a busy loop.
pub const MIN_EVERY_MS: u64 = 1000;
pub const MAX_EVERY_MS: u64 = 366 * 24 * 3600 * 1000;
pub const DEFAULT_CATCH_UP_LIMIT: u32 = 10;
pub const MAX_CATCH_UP_LIMIT: u32 = 1000;
pub const DEFAULT_KEEP_RUNS: u32 = 100;
pub const MAX_KEEP_RUNS: u32 = 100_000;

/// What to do with ticks that passed while no node could fire them (downtime, a
/// paused machine). A tick more than [`MISSED_GRACE_MS`] late is missed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MissedPolicy {
    /// Missed ticks are dropped; the schedule goes on from the next one.
    #[default]
    Skip,
    /// One run stands for all the missed ticks.
    RunOnce,
    /// One run per missed tick, the latest `catch_up_limit` of them.
    CatchUp,
}

/// A tick this late (or less) is on time; an older one was missed.
pub const MISSED_GRACE_MS: i64 = 60_000;

/// What to do when a tick comes while the schedule's previous run has not finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum OverlapPolicy {
    /// The tick is skipped (counted in `skipped`).
    #[default]
    Skip,
    /// The new run starts regardless.
    Allow,
    /// The new run waits for the previous one to finish (a `finish` dependency on it).
    Queue,
}

impl MissedPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            MissedPolicy::Skip => "skip",
            MissedPolicy::RunOnce => "run-once",
            MissedPolicy::CatchUp => "catch-up",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "skip" => MissedPolicy::Skip,
            "run-once" => MissedPolicy::RunOnce,
            "catch-up" => MissedPolicy::CatchUp,
            _ => return None,
        })
    }
}

impl OverlapPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            OverlapPolicy::Skip => "skip",
            OverlapPolicy::Allow => "allow",
            OverlapPolicy::Queue => "queue",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "skip" => OverlapPolicy::Skip,
            "allow" => OverlapPolicy::Allow,
            "queue" => OverlapPolicy::Queue,
            _ => return None,
        })
    }
}

/// A schedule as submitted through the API, the CLI or MCP. Exactly one of `cron` and
/// `every`. Unknown fields are rejected.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewSchedule {
    /// Unique; letters, digits, `.`, `_` and `-`.
    pub name: String,
    /// A cron pattern: 5 fields (minute hour day-of-month month day-of-week) or 6 with
    /// seconds first; `L`, `W` and `#` are understood.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// A fixed interval (`"10m"`, or seconds), counted from the schedule's creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub every: Option<DurationInput>,
    /// The IANA time zone the cron pattern is read in (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// The task each tick submits (any task field but `run_at`, `depends_on`,
    /// `idempotency_key` and `key`).
    pub task: NewTask,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<MissedPolicy>,
    /// For `missed: catch-up`: at most this many runs (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<OverlapPolicy>,
    /// Finished runs kept (older ones are deleted with their output; default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_runs: Option<u32>,
    /// Create it paused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Trigger {
    /// A cron pattern read in `tz`.
    Cron { pattern: String, tz: String },
    /// Every `ms` milliseconds from `anchor` (Unix ms).
    Every { ms: u64, anchor: Millis },
}

/// A stored schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Schedule {
    pub name: String,
    pub trigger: Trigger,
    /// The template, as submitted; validated again at each tick.
    pub task: NewTask,
    pub missed: MissedPolicy,
    pub catch_up_limit: u32,
    pub overlap: OverlapPolicy,
    pub keep_runs: u32,
    pub paused: bool,
    /// The next tick (Unix ms); None when the pattern never matches again.
    pub next_fire_at: Option<Millis>,
    pub last_fire_at: Option<Millis>,
    /// Runs submitted so far.
    pub fired: u64,
    /// Ticks that submitted nothing (missed under `skip`, or overlapping under `skip`).
    pub skipped: u64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// One run of a schedule: the task a tick submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleRun {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub task: TaskId,
    /// The tick it stands for (Unix ms).
    pub tick: Millis,
    pub fired_at: Millis,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub status: Status,
}

/// What `show` returns: the schedule, its next ticks, and its latest runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleView {
    #[serde(flatten)]
    pub schedule: Schedule,
    /// The next few ticks (Unix ms), from now.
    pub upcoming: Vec<Millis>,
    /// Newest first.
    pub runs: Vec<ScheduleRun>,
}

/// A [`NewSchedule`] whose fields are checked, except the cron pattern and time zone.
#[derive(Debug, Clone)]
pub struct CheckedSchedule {
    pub name: String,
    pub cron: Option<String>,
    pub every_ms: Option<u64>,
    pub tz: String,
    pub task: NewTask,
    pub missed: MissedPolicy,
    pub catch_up_limit: u32,
    pub overlap: OverlapPolicy,
    pub keep_runs: u32,
    pub paused: bool,
}

pub fn check_schedule_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a schedule needs a name".into());
    }
    if name.len() > MAX_SCHEDULE_NAME_BYTES {
        return Err(format!(
            "schedule names are at most {MAX_SCHEDULE_NAME_BYTES} bytes"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "`{}` is not a schedule name: use letters, digits, `.`, `_` and `-`",
            truncate_for_message(name)
        ));
    }
    Ok(())
}

impl NewSchedule {
    /// Checks every field but the pattern and the zone (the engine parses those). The
    /// task template is validated by the caller with the daemon's defaults.
    pub fn check(self) -> Result<CheckedSchedule, ValidationError> {
        check_schedule_name(&self.name).map_err(|m| ValidationError::new("name", m))?;
        let (cron, every_ms) = match (self.cron, self.every) {
            (Some(_), Some(_)) => {
                return Err(ValidationError::new(
                    "cron",
                    "give either `cron` or `every`, not both",
                ));
            }
            (None, None) => {
                return Err(ValidationError::new(
                    "cron",
                    "a schedule needs `cron` (a pattern such as \"*/5 * * * *\") or `every` (such as \"10m\")",
                ));
            }
            (Some(c), None) => {
                let c = c.trim().to_string();
                if c.is_empty() || c.len() > MAX_CRON_BYTES {
                    return Err(ValidationError::new(
                        "cron",
                        format!("a cron pattern is 1 to {MAX_CRON_BYTES} bytes"),
                    ));
                }
                (Some(c), None)
            }
            (None, Some(DurationInput(ms))) => {
                if !(MIN_EVERY_MS..=MAX_EVERY_MS).contains(&ms) {
                    return Err(ValidationError::new(
                        "every",
                        "`every` is between 1 second and 366 days",
                    ));
                }
                (None, Some(ms))
            }
        };
        let tz_given = self.tz.is_some();
        let tz = self.tz.unwrap_or_else(|| "UTC".to_string());
        if tz.is_empty() || tz.len() > MAX_TZ_BYTES {
            return Err(ValidationError::new(
                "tz",
                format!("a time zone name is 1 to {MAX_TZ_BYTES} bytes, such as Europe/Berlin"),
            ));
        }
        if every_ms.is_some() && tz_given && tz != "UTC" {
            return Err(ValidationError::new(
                "tz",
                "`tz` goes with `cron`; `every` counts real time and needs no zone",
            ));
        }
        let t = &self.task;
        for (set, field) in [
            (t.run_at.is_some(), "run_at"),
            (!t.depends_on.is_empty(), "depends_on"),
            (t.idempotency_key.is_some(), "idempotency_key"),
            (t.key.is_some(), "key"),
        ] {
            if set {
                return Err(ValidationError::new(
                    format!("task.{field}"),
                    format!("a schedule's task cannot set `{field}`: each tick submits it anew"),
                ));
            }
        }
        let catch_up_limit = self.catch_up_limit.unwrap_or(DEFAULT_CATCH_UP_LIMIT);
        if !(1..=MAX_CATCH_UP_LIMIT).contains(&catch_up_limit) {
            return Err(ValidationError::new(
                "catch_up_limit",
                format!("`catch_up_limit` is between 1 and {MAX_CATCH_UP_LIMIT}"),
            ));
        }
        let keep_runs = self.keep_runs.unwrap_or(DEFAULT_KEEP_RUNS);
        if !(1..=MAX_KEEP_RUNS).contains(&keep_runs) {
            return Err(ValidationError::new(
                "keep_runs",
                format!("`keep_runs` is between 1 and {MAX_KEEP_RUNS}"),
            ));
        }
        Ok(CheckedSchedule {
            name: self.name,
            cron,
            every_ms,
            tz,
            task: self.task,
            missed: self.missed.unwrap_or_default(),
            catch_up_limit,
            overlap: self.overlap.unwrap_or_default(),
            keep_runs,
            paused: self.paused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<CheckedSchedule, String> {
        let s: NewSchedule = serde_json::from_str(json).map_err(|e| e.to_string())?;
        s.check().map_err(|e| format!("{}: {}", e.field, e.message))
    }

    #[test]
    fn a_cron_schedule_gets_its_defaults() {
        let s = parse(r#"{"name": "nightly", "cron": "0 2 * * *", "tz": "Europe/Berlin", "task": {"command": "true"}}"#).unwrap();
        assert_eq!(s.cron.as_deref(), Some("0 2 * * *"));
        assert_eq!(s.tz, "Europe/Berlin");
        assert_eq!(s.missed, MissedPolicy::Skip);
        assert_eq!(s.overlap, OverlapPolicy::Skip);
        assert_eq!(s.catch_up_limit, DEFAULT_CATCH_UP_LIMIT);
        assert_eq!(s.keep_runs, DEFAULT_KEEP_RUNS);
        let e = parse(r#"{"name": "e", "every": "10m", "missed": "catch-up", "overlap": "queue", "task": {"command": "true"}}"#).unwrap();
        assert_eq!(e.every_ms, Some(600_000));
        assert_eq!(e.missed, MissedPolicy::CatchUp);
        assert_eq!(e.overlap, OverlapPolicy::Queue);
    }

    #[test]
    fn bad_schedules_name_the_field_at_fault() {
        for (json, field) in [
            (
                r#"{"name": "a b", "every": "1m", "task": {"command": "x"}}"#,
                "name",
            ),
            (
                r#"{"name": "", "every": "1m", "task": {"command": "x"}}"#,
                "name",
            ),
            (r#"{"name": "n", "task": {"command": "x"}}"#, "cron"),
            (
                r#"{"name": "n", "cron": "* * * * *", "every": "1m", "task": {"command": "x"}}"#,
                "cron",
            ),
            (
                r#"{"name": "n", "cron": "  ", "task": {"command": "x"}}"#,
                "cron",
            ),
            (
                r#"{"name": "n", "every": "10ms", "task": {"command": "x"}}"#,
                "every",
            ),
            (
                r#"{"name": "n", "every": "1m", "tz": "Europe/Berlin", "task": {"command": "x"}}"#,
                "tz",
            ),
            (
                r#"{"name": "n", "every": "1m", "task": {"command": "x", "run_at": "+1m"}}"#,
                "task.run_at",
            ),
            (
                r#"{"name": "n", "every": "1m", "task": {"command": "x", "depends_on": ["abcdef12"]}}"#,
                "task.depends_on",
            ),
            (
                r#"{"name": "n", "every": "1m", "task": {"command": "x", "idempotency_key": "k"}}"#,
                "task.idempotency_key",
            ),
            (
                r#"{"name": "n", "every": "1m", "catch_up_limit": 0, "task": {"command": "x"}}"#,
                "catch_up_limit",
            ),
            (
                r#"{"name": "n", "every": "1m", "keep_runs": 0, "task": {"command": "x"}}"#,
                "keep_runs",
            ),
        ] {
            let err = parse(json).unwrap_err();
            assert!(err.starts_with(&format!("{field}:")), "{json}: {err}");
        }
        for json in [
            r#"{"name": "n", "every": "1m", "task": {"command": "x"}, "extra": 1}"#,
            r#"{"name": "n", "every": "1m", "missed": "sometimes", "task": {"command": "x"}}"#,
        ] {
            assert!(parse(json).is_err(), "{json}");
        }
    }
}
