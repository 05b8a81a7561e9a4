//! `deputy schedule`: recurring schedules.

use anyhow::{Context, bail};
use deputy_core::schedule::{
    MissedPolicy, NewSchedule, OverlapPolicy, ScheduleView, Trigger, check_schedule_name,
};
use deputy_core::submit::DurationInput;

use crate::cli::{ScheduleAddArgs, ScheduleCommand};
use crate::config::Config;
use crate::{connect, render};

pub async fn run(cfg: &Config, cmd: ScheduleCommand) -> anyhow::Result<u8> {
    let client = connect::client(cfg)?;
    match cmd {
        ScheduleCommand::Add(a) => {
            let json = a.task.json;
            let new = build(a)?;
            let v = client.add_schedule(&new).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "schedule {} created; next: {}",
                    v.schedule.name,
                    next_text(&v)
                );
            }
        }
        ScheduleCommand::Ls { json } => {
            let all = client.schedules().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                print!("{}", render::table(&rows(&all)));
            }
        }
        ScheduleCommand::Show { name, json } => {
            let v = client.schedule(&name).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", details(&v));
            }
        }
        ScheduleCommand::Pause { name } => {
            let v = client.pause_schedule(&name).await?;
            println!("schedule {} paused", v.schedule.name);
        }
        ScheduleCommand::Resume { name } => {
            let v = client.resume_schedule(&name).await?;
            println!(
                "schedule {} resumed; next: {}",
                v.schedule.name,
                next_text(&v)
            );
        }
        ScheduleCommand::Rm { name } => {
            client.remove_schedule(&name).await?;
            println!("schedule {name} removed (the tasks it submitted stay)");
        }
    }
    Ok(0)
}

/// The API request for `schedule add`.
fn build(a: ScheduleAddArgs) -> anyhow::Result<NewSchedule> {
    for (set, flag) in [
        (a.task.run_at.is_some(), "--at"),
        (!a.task.after.is_empty(), "--after"),
        (!a.task.after_finish.is_empty(), "--after-finish"),
        (a.task.idempotency_key.is_some(), "--idempotency-key"),
        (a.task.wait, "--wait"),
    ] {
        if set {
            bail!("{flag} does not go with a schedule: each tick submits a new task");
        }
    }
    let mut task = super::submit::build_task(&a.task)?;
    let name = match task.name.take() {
        Some(n) => n,
        None => derived_name(&a.task.command, a.task.agent.is_some()),
    };
    check_schedule_name(&name).map_err(|e| {
        anyhow::anyhow!("{e} (the schedule's name comes from --name; runs are named after it)")
    })?;
    let every = a
        .every
        .as_deref()
        .map(|s| serde_json::from_value::<DurationInput>(serde_json::Value::String(s.into())))
        .transpose()
        .context("--every takes a duration such as 10m or 1h30m")?;
    let missed = a
        .missed
        .as_deref()
        .map(|m| {
            MissedPolicy::parse(m)
                .with_context(|| format!("--missed is skip, run-once or catch-up, not `{m}`"))
        })
        .transpose()?;
    let overlap = a
        .overlap
        .as_deref()
        .map(|m| {
            OverlapPolicy::parse(m)
                .with_context(|| format!("--overlap is skip, allow or queue, not `{m}`"))
        })
        .transpose()?;
    Ok(NewSchedule {
        name,
        cron: a.cron,
        every,
        tz: a.tz,
        task,
        missed,
        catch_up_limit: a.catch_up_limit,
        overlap,
        keep_runs: a.keep_runs,
        paused: a.paused,
    })
}

/// A schedule name from the command's words: `cargo test --all` -> `cargo-test-all`.
fn derived_name(command: &[String], agent: bool) -> String {
    let words = command.join(" ");
    let mut name = String::new();
    for c in words.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_lowercase());
        } else if !name.ends_with('-') && !name.is_empty() {
            name.push('-');
        }
        if name.len() >= 40 {
            break;
        }
    }
    let name = name.trim_end_matches('-');
    match (name.is_empty(), agent) {
        (true, true) => "agent".into(),
        (true, false) => "schedule".into(),
        (false, _) => name.into(),
    }
}

fn trigger_text(t: &Trigger) -> String {
    match t {
        Trigger::Cron { pattern, tz } => format!("{pattern} ({tz})"),
        Trigger::Every { ms, .. } => format!(
            "every {}",
            humantime::format_duration(std::time::Duration::from_millis(*ms))
        ),
    }
}

fn next_text(v: &ScheduleView) -> String {
    if v.schedule.paused {
        return "paused".into();
    }
    match v.schedule.next_fire_at {
        Some(t) => render::when(Some(t)),
        None => "never (the pattern matches no later date)".into(),
    }
}

fn rows(all: &[ScheduleView]) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "SCHEDULE".to_string(),
        "WHEN".into(),
        "NEXT".into(),
        "LAST".into(),
        "RUNS".into(),
        "SKIPPED".into(),
        "STATE".into(),
    ]];
    for v in all {
        let s = &v.schedule;
        rows.push(vec![
            s.name.clone(),
            trigger_text(&s.trigger),
            next_text(v),
            render::when(s.last_fire_at),
            s.fired.to_string(),
            s.skipped.to_string(),
            if s.paused { "paused" } else { "active" }.into(),
        ]);
    }
    rows
}

fn details(v: &ScheduleView) -> String {
    let s = &v.schedule;
    let mut out = String::new();
    let mut line = |k: &str, val: String| out.push_str(&format!("{k:<14} {val}\n"));
    line("schedule", s.name.clone());
    line("when", trigger_text(&s.trigger));
    line("state", if s.paused { "paused" } else { "active" }.into());
    line("missed", {
        let mut m = s.missed.as_str().to_string();
        if s.missed == MissedPolicy::CatchUp {
            m.push_str(&format!(" (at most {})", s.catch_up_limit));
        }
        m
    });
    line("overlap", s.overlap.as_str().into());
    line("keep runs", s.keep_runs.to_string());
    line("task", task_text(&s.task));
    line("runs", format!("{} fired, {} skipped", s.fired, s.skipped));
    line("last fired", render::when(s.last_fire_at));
    line(
        "next",
        if v.upcoming.is_empty() {
            next_text(v)
        } else {
            v.upcoming
                .iter()
                .map(|t| render::when(Some(*t)))
                .collect::<Vec<_>>()
                .join("\n               ")
        },
    );
    if !v.runs.is_empty() {
        out.push_str("\nlatest runs:\n");
        let mut rows = vec![vec!["TASK".to_string(), "TICK".into(), "STATUS".into()]];
        for r in &v.runs {
            rows.push(vec![
                r.task.to_string(),
                render::when(Some(r.tick)),
                r.status.to_string(),
            ]);
        }
        out.push_str(&render::table(&rows));
    }
    out
}

fn task_text(t: &deputy_core::NewTask) -> String {
    if let Some(a) = &t.agent {
        return format!(
            "agent {}: {}",
            a.backend.as_deref().unwrap_or("builtin"),
            render::truncate(&a.prompt, 60)
        );
    }
    match &t.command {
        Some(deputy_core::Command::Line(l)) => render::truncate(l, 70),
        Some(deputy_core::Command::Argv(v)) => render::truncate(&v.join(" "), 70),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::derived_name;

    #[test]
    fn names_are_made_from_the_command() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            derived_name(&v(&["cargo test --all"]), false),
            "cargo-test-all"
        );
        assert_eq!(derived_name(&v(&["make", "-k", "x"]), false), "make-k-x");
        assert_eq!(derived_name(&v(&["!!"]), false), "schedule");
        assert_eq!(
            derived_name(&v(&["Triage new issues"]), true),
            "triage-new-issues"
        );
        assert!(derived_name(&v(&[&"a ".repeat(100)]), false).len() <= 40);
    }
}
