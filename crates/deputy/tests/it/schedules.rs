//! Recurring schedules through the CLI and the API, across a kill -9, and with two nodes
//! on PostgreSQL: every tick submits exactly one task.

use std::collections::BTreeSet;

use deputy_client::Client;
use deputy_core::schedule::{NewSchedule, ScheduleView};
use deputy_core::submit::{DurationInput, WhenInput};
use deputy_core::{EventBody, TaskId};
use futures_util::StreamExt;
use tokio::process::Command;

use crate::harness::*;

async fn deputy(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_deputy"))
        .args(["--url", url])
        .args(args)
        .env_remove("DEPUTY_CONFIG")
        .env("XDG_CONFIG_HOME", "/nonexistent-deputy-config-home")
        .output()
        .await
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Follows the log from `after` until `n` ticks of `name` fired; returns the tasks they
/// submitted and the last seq seen.
pub(crate) async fn wait_fired(
    client: &Client,
    name: &str,
    after: i64,
    n: usize,
) -> (Vec<TaskId>, i64) {
    let mut s = Box::pin(client.events(None, after));
    let mut tasks = Vec::new();
    let mut fired = 0;
    let mut last = after;
    tokio::time::timeout(DEADLINE, async {
        while fired < n {
            let e = s.next().await.expect("the event stream ended").unwrap();
            last = e.seq;
            if let EventBody::ScheduleUpdated {
                schedule,
                action,
                tasks: ts,
                ..
            } = e.body
                && schedule == name
                && action == "fired"
            {
                fired += 1;
                tasks.extend(ts);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} ticks of {name} did not fire within {DEADLINE:?}"));
    (tasks, last)
}

pub(crate) fn every_second(name: &str, line: &str) -> NewSchedule {
    NewSchedule {
        name: name.into(),
        every: Some(DurationInput(1000)),
        task: sh(line),
        overlap: Some(deputy_core::schedule::OverlapPolicy::Allow),
        ..NewSchedule::default()
    }
}

/// Every tick of a schedule is either one run or counted as skipped; no tick has two.
pub(crate) fn assert_each_tick_once(v: &ScheduleView, every_ms: i64) {
    let ticks: Vec<i64> = v.runs.iter().map(|r| r.tick).collect();
    let unique: BTreeSet<i64> = ticks.iter().copied().collect();
    assert_eq!(unique.len(), ticks.len(), "a tick ran twice: {ticks:?}");
    let tasks: BTreeSet<TaskId> = v.runs.iter().map(|r| r.task).collect();
    assert_eq!(tasks.len(), ticks.len(), "a task stands for two ticks");
    assert_eq!(
        v.schedule.fired as usize,
        ticks.len(),
        "fired count vs runs"
    );
    for t in &ticks {
        assert_eq!(
            (t - unique.first().unwrap()) % every_ms,
            0,
            "a tick off the schedule's grid: {ticks:?}"
        );
    }
    let span = (unique.last().unwrap() - unique.first().unwrap()) / every_ms + 1;
    assert!(
        v.schedule.fired + v.schedule.skipped >= span as u64,
        "ticks between the first and last run neither ran nor were skipped: {ticks:?}, skipped {}",
        v.schedule.skipped
    );
}

#[tokio::test]
async fn the_cli_creates_lists_shows_pauses_resumes_and_removes_a_schedule() {
    let d = TestDaemon::start(2).await;
    let url = d.url();
    let add = deputy(
        &url,
        &[
            "schedule",
            "add",
            "--every",
            "1s",
            "--name",
            "tick",
            "--label",
            "nightly",
            "--overlap",
            "allow",
            "--",
            "echo ticked",
        ],
    )
    .await;
    assert!(add.status.success(), "{}", text(&add.stderr));
    assert!(text(&add.stdout).contains("schedule tick created; next: "));
    let (tasks, seen) = wait_fired(&d.client, "tick", 0, 2).await;
    assert_eq!(tasks.len(), 2);
    for id in &tasks {
        let t = wait_done(&d.client, *id).await;
        assert_eq!(t.status, deputy_core::Status::Succeeded);
        assert_eq!(t.spec.name.as_deref(), Some("tick"));
        assert!(t.spec.labels.contains(&"schedule:tick".to_string()));
        assert!(t.spec.labels.contains(&"nightly".to_string()));
        assert!(
            wait_output(&d.client, *id, "ticked")
                .await
                .contains("ticked")
        );
    }

    let ls = deputy(&url, &["schedule", "ls"]).await;
    let ls = text(&ls.stdout);
    assert!(ls.contains("SCHEDULE") && ls.contains("tick"), "{ls}");
    assert!(ls.contains("every 1s") && ls.contains("active"), "{ls}");
    let show = deputy(&url, &["schedule", "show", "tick", "--json"]).await;
    let v: ScheduleView = serde_json::from_slice(&show.stdout).unwrap();
    assert!(v.runs.len() >= 2);
    assert_eq!(v.upcoming.len(), 5);
    assert!(v.upcoming.windows(2).all(|w| w[1] - w[0] == 1000));
    assert_each_tick_once(&v, 1000);
    let human = text(&deputy(&url, &["schedule", "show", "tick"]).await.stdout);
    assert!(
        human.contains("latest runs:") && human.contains("overlap        allow"),
        "{human}"
    );

    // Paused: no tick fires. A task scheduled 2.5 s out marks that time has passed.
    let paused = deputy(&url, &["schedule", "pause", "tick"]).await;
    assert!(text(&paused.stdout).contains("schedule tick paused"));
    let fired_before = d.client.schedule("tick").await.unwrap().schedule.fired;
    let marker = d
        .submit(deputy_core::NewTask {
            run_at: Some(WhenInput::Text("+2500ms".into())),
            ..sh("true")
        })
        .await;
    wait_done(&d.client, marker.id).await;
    let v = d.client.schedule("tick").await.unwrap();
    assert_eq!(v.schedule.fired, fired_before, "a paused schedule fired");
    assert!(v.schedule.paused && v.upcoming.is_empty());
    let resumed = deputy(&url, &["schedule", "resume", "tick"]).await;
    assert!(text(&resumed.stdout).contains("schedule tick resumed; next: "));
    let (after_resume, _) = wait_fired(&d.client, "tick", seen, 1).await;
    assert_eq!(after_resume.len(), 1);
    let v = d.client.schedule("tick").await.unwrap();
    assert!(
        v.schedule.skipped == 0,
        "ticks passed while paused are not missed runs"
    );

    let rm = deputy(&url, &["schedule", "rm", "tick"]).await;
    assert!(rm.status.success());
    let gone = deputy(&url, &["schedule", "show", "tick"]).await;
    assert!(!gone.status.success());
    assert!(
        text(&gone.stderr).contains("no schedule `tick`"),
        "{}",
        text(&gone.stderr)
    );
    // Its runs stay.
    d.client.get(&tasks[0].to_string()).await.unwrap();
}

#[tokio::test]
async fn bad_schedules_are_refused_with_the_reason() {
    let d = TestDaemon::start(1).await;
    let url = d.url();
    for (args, needle) in [
        (vec!["--cron", "61 * * * *"], "is not a cron pattern"),
        (vec!["--cron", "0 0 31 2 *"], "never matches"),
        (
            vec!["--cron", "0 2 * * *", "--tz", "Mars/Olympus"],
            "unknown time zone `Mars/Olympus`",
        ),
        (vec!["--every", "10ms"], "between 1 second"),
        (
            vec!["--every", "1m", "--at", "+1m"],
            "--at does not go with a schedule",
        ),
        (
            vec!["--every", "1m", "--missed", "often"],
            "--missed is skip, run-once or catch-up",
        ),
        (
            vec!["--every", "1m", "--name", "a b"],
            "not a schedule name",
        ),
        (
            vec!["--every", "1m", "--agent", "nosuch"],
            "no agent backend `nosuch`",
        ),
    ] {
        let mut full = vec!["schedule", "add"];
        full.extend(args.iter().copied());
        full.extend(["--", "true"]);
        let out = deputy(&url, &full).await;
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // An agent task is scheduled like a shell one, with its flags.
    let agent = deputy(
        &url,
        &[
            "schedule",
            "add",
            "--every",
            "1h",
            "--name",
            "triage",
            "--agent",
            "generic",
            "--timeout",
            "10m",
            "--",
            "echo triaged",
        ],
    )
    .await;
    assert!(agent.status.success(), "{}", text(&agent.stderr));
    let v = d.client.schedule("triage").await.unwrap();
    assert_eq!(
        v.schedule.task.agent.as_ref().unwrap().backend.as_deref(),
        Some("generic")
    );
    d.client.remove_schedule("triage").await.unwrap();
    // The API answers 422 and 409, and nothing is stored.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{url}/v1/schedules"))
        .json(&serde_json::json!({"name": "x", "cron": "bad", "task": {"command": "true"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid");
    d.client
        .add_schedule(&every_second("dup", "true"))
        .await
        .unwrap();
    let again = http
        .post(format!("{url}/v1/schedules"))
        .json(&every_second("dup", "true"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let all = d.client.schedules().await.unwrap();
    assert_eq!(all.len(), 1);
    let missing = http
        .get(format!("{url}/v1/schedules/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn after_kill_9_a_schedule_goes_on_without_running_a_tick_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut a = ChildDaemon::spawn(&data, &[]).await;
    a.client
        .add_schedule(&every_second("beat", "true"))
        .await
        .unwrap();
    let (_, seen) = wait_fired(&a.client, "beat", 0, 2).await;
    a.kill9_with_guard();
    let b = ChildDaemon::spawn(&data, &[]).await;
    wait_fired(&b.client, "beat", seen, 2).await;
    b.client.pause_schedule("beat").await.unwrap();
    let v = b.client.schedule("beat").await.unwrap();
    assert!(v.runs.len() >= 4);
    assert_each_tick_once(&v, 1000);
}

#[tokio::test]
async fn ticks_missed_while_no_node_ran_follow_each_schedules_policy() {
    use deputy_core::schedule::MissedPolicy;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut a = ChildDaemon::spawn(&data, &[]).await;
    // Yearly at midnight UTC on January 1st; the next tick is 2027-01-01.
    for (name, missed) in [
        ("skips", MissedPolicy::Skip),
        ("once", MissedPolicy::RunOnce),
        ("catches-up", MissedPolicy::CatchUp),
    ] {
        a.client
            .add_schedule(&NewSchedule {
                name: name.into(),
                cron: Some("0 0 1 1 *".into()),
                task: sh("true"),
                missed: Some(missed),
                catch_up_limit: Some(2),
                ..NewSchedule::default()
            })
            .await
            .unwrap();
    }
    assert!(a.terminate().success());
    // As if no node had run since before 2024-01-01: ticks 2024, 2025 and 2026 were missed.
    let store = open_store_of(&data).await;
    let y = |year: i16| {
        jiff::civil::date(year, 1, 1)
            .at(0, 0, 0, 0)
            .in_tz("UTC")
            .unwrap()
            .timestamp()
            .as_millisecond()
    };
    for name in ["skips", "once", "catches-up"] {
        store
            .set_schedule_paused(name, false, Some(y(2024)), y(2023))
            .await
            .unwrap();
    }
    store.close().await;
    let b = ChildDaemon::spawn(&data, &[]).await;
    // Each schedule fires (or skips) once on start-up.
    let mut s = Box::pin(b.client.events(None, 0));
    let mut seen = BTreeSet::new();
    tokio::time::timeout(DEADLINE, async {
        while seen.len() < 3 {
            let e = s.next().await.unwrap().unwrap();
            if let EventBody::ScheduleUpdated {
                schedule, action, ..
            } = e.body
                && (action == "fired" || action == "skipped")
            {
                seen.insert(schedule);
            }
        }
    })
    .await
    .expect("the missed ticks were not handled within the deadline");
    let ticks = |v: &ScheduleView| {
        let mut t: Vec<i64> = v.runs.iter().map(|r| r.tick).collect();
        t.sort();
        t
    };
    let skips = b.client.schedule("skips").await.unwrap();
    assert_eq!((skips.schedule.fired, skips.schedule.skipped), (0, 3));
    let once = b.client.schedule("once").await.unwrap();
    assert_eq!((once.schedule.fired, once.schedule.skipped), (1, 2));
    assert_eq!(ticks(&once), vec![y(2026)]);
    let caught = b.client.schedule("catches-up").await.unwrap();
    assert_eq!((caught.schedule.fired, caught.schedule.skipped), (2, 1));
    assert_eq!(ticks(&caught), vec![y(2025), y(2026)]);
    for v in [&skips, &once, &caught] {
        assert_eq!(
            v.schedule.next_fire_at,
            Some(y(2027)),
            "{}",
            v.schedule.name
        );
    }
    // The caught-up runs go one after another.
    let newest = b
        .client
        .get(&caught.runs[0].task.to_string())
        .await
        .unwrap()
        .task;
    assert_eq!(newest.depends_on.len(), 1);
    assert_eq!(newest.depends_on[0].task, caught.runs[1].task);
}
