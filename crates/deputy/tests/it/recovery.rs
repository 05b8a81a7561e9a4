//! `kill -9` of a real daemon while tasks run, then a restart.

use deputy_core::submit::NewTask;
use deputy_core::{EventBody, Status};

use crate::harness::*;

const LONG: &str =
    "if [ \"$DEPUTY_ATTEMPT\" = 1 ]; then sleep 100 & echo \"bg=$!\"; sleep 100; fi; echo finished";

#[tokio::test]
async fn kill_9_then_restart_recovers_without_running_anything_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ran = dir.path().join("ran.log");
    let mut d = ChildDaemon::spawn(&data, &[("DEPUTY_PARALLEL", "2")]).await;

    let retried = d
        .client
        .submit(&NewTask {
            max_attempts: Some(2),
            ..sh(LONG)
        })
        .await
        .unwrap()
        .task;
    let single = d.client.submit(&sh(LONG)).await.unwrap().task;
    let mut queued = Vec::new();
    for _ in 0..3 {
        let line = format!("echo \"$DEPUTY_TASK_ID\" >> {}", ran.display());
        queued.push(d.client.submit(&sh(&line)).await.unwrap().task.id);
    }
    let mut grandchildren = Vec::new();
    for id in [retried.id, single.id] {
        let out = wait_output(&d.client, id, "bg=").await;
        let pid: i32 = out
            .lines()
            .find_map(|l| l.strip_prefix("bg="))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        grandchildren.push(pid);
    }
    for id in &queued {
        assert_eq!(
            d.client.get(&id.to_string()).await.unwrap().task.status,
            Status::Queued
        );
    }

    d.kill9_with_guard();
    // The daemon is gone, and its guard with it; its tasks' background processes are
    // still there, orphaned.
    assert!(
        grandchildren.iter().any(|&p| alive(p)),
        "the test needs leftovers to recover"
    );

    let d = ChildDaemon::spawn(&data, &[("DEPUTY_PARALLEL", "2")]).await;
    // Recovery runs before the daemon announces itself: leftovers are gone already.
    for p in &grandchildren {
        assert!(
            !alive(*p),
            "process {p} of the old daemon survived the restart"
        );
    }

    let r = wait_done(&d.client, retried.id).await;
    assert_eq!((r.status, r.attempt), (Status::Succeeded, 2));
    let attempts = d
        .client
        .get(&retried.id.to_string())
        .await
        .unwrap()
        .attempts;
    assert_eq!(attempts[0].status, Status::Interrupted);
    assert_eq!(attempts.len(), 2);

    let s = wait_done(&d.client, single.id).await;
    assert_eq!((s.status, s.attempt), (Status::Interrupted, 1));

    for id in &queued {
        assert_eq!(wait_done(&d.client, *id).await.status, Status::Succeeded);
    }
    let log = std::fs::read_to_string(&ran).unwrap();
    for id in &queued {
        assert_eq!(
            log.lines().filter(|l| *l == id.to_string()).count(),
            1,
            "{id} ran exactly once"
        );
    }
    for id in [retried.id, single.id] {
        assert!(processes_of(id).is_empty());
    }

    let events = collect_events(&d.client).await;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1, "the event log has no gaps");
    }
    // Each attempt that started has exactly one recorded end.
    let interrupted = events
        .iter()
        .filter(|e| {
            matches!(
                e.body,
                EventBody::TaskStatus {
                    to: Status::Interrupted,
                    ..
                }
            )
        })
        .count();
    assert_eq!(interrupted, 2);
}

#[tokio::test]
async fn when_the_daemon_is_killed_its_tasks_whole_process_groups_die_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut d = ChildDaemon::spawn(&data, &[("DEPUTY_PARALLEL", "2")]).await;
    let mut tasks = Vec::new();
    for _ in 0..2 {
        tasks.push(d.client.submit(&sh(LONG)).await.unwrap().task.id);
    }
    for id in &tasks {
        wait_output(&d.client, *id, "bg=").await;
    }
    let before: Vec<i32> = tasks.iter().flat_map(|id| processes_of(*id)).collect();
    // Each task: its shell, a background sleep and a foreground sleep.
    assert!(before.len() >= 4, "the tasks' processes: {before:?}");
    d.kill9();
    // No restart: the guard saw the daemon's end of its pipe close, and killed the
    // groups, grandchildren included (a parent-death signal reaches only the leader).
    eventually("every process of the killed daemon's tasks to die", || {
        tasks.iter().all(|id| processes_of(*id).is_empty())
    })
    .await;
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully_and_a_second_daemon_on_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut d = ChildDaemon::spawn(&data, &[("DEPUTY_SHUTDOWN_GRACE", "1s")]).await;
    let t = d.client.submit(&sh("sleep 100")).await.unwrap().task;
    wait_status(&d.client, t.id, Status::Running).await;

    let second = std::process::Command::new(env!("CARGO_BIN_EXE_deputy"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("DEPUTY_CONFIG", data.with_extension("config.toml"))
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already using"));

    let status = d.terminate();
    assert!(status.success(), "graceful shutdown exits 0: {status}");
    assert!(!data.join("daemon.json").exists());
    assert!(processes_of(t.id).is_empty());
    // The interrupted task is on record after the restart.
    let d = ChildDaemon::spawn(&data, &[]).await;
    let after = d.client.get(&t.id.to_string()).await.unwrap().task;
    assert_eq!(after.status, Status::Interrupted);
    assert_eq!(
        after.reason.as_deref(),
        Some("the daemon shut down while it ran")
    );
}
