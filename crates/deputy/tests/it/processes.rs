//! Timeouts and cancels stop the whole process tree.

use std::time::Instant;

use deputy_core::submit::{NewTask, TimeoutInput};
use deputy_core::{EventBody, Status};

use crate::harness::*;

/// Starts `sleep 100 & sleep 100` and returns the task and the background sleep's pid.
const TREE: &str = "sleep 100 & echo \"bg=$!\"; sleep 100";

fn bg_pid(output: &str) -> i32 {
    output
        .lines()
        .find_map(|l| l.strip_prefix("bg="))
        .and_then(|p| p.trim().parse().ok())
        .expect("the task printed its background pid")
}

#[tokio::test]
async fn timeout_kills_child_and_grandchild() {
    let d = TestDaemon::start(2).await;
    let start = Instant::now();
    let t = d
        .submit(NewTask {
            timeout: Some(TimeoutInput::Millis(1000)),
            ..sh(TREE)
        })
        .await;
    let out = wait_output(&d.client, t.id, "bg=").await;
    let grandchild = bg_pid(&out);
    let running = d.client.get(&t.id.to_string()).await.unwrap().task;
    let pgid = running
        .pgid
        .expect("the process group is recorded while it runs");
    let done = wait_done(&d.client, t.id).await;
    assert_eq!(done.status, Status::TimedOut);
    assert!(start.elapsed().as_secs() < 10, "timed out within 10 s");
    assert!(done.reason.unwrap().contains("timed out after 1s"));
    assert!(!alive(grandchild), "the grandchild is gone");
    assert!(
        deputy_engine::procfs::live_members(pgid).is_empty(),
        "the whole group is gone"
    );
    assert!(processes_of(t.id).is_empty());
    d.stop().await;
}

#[tokio::test]
async fn cancel_kills_a_running_tree() {
    let d = TestDaemon::start(2).await;
    let t = d.submit(sh(TREE)).await;
    let out = wait_output(&d.client, t.id, "bg=").await;
    let grandchild = bg_pid(&out);
    let r = d
        .client
        .cancel(&t.id.to_string(), Some("no longer needed"))
        .await
        .unwrap();
    assert_eq!(r.result, deputy_core::api::CancelResult::Requested);
    let done = wait_done(&d.client, t.id).await;
    assert_eq!(done.status, Status::Cancelled);
    assert_eq!(done.reason.as_deref(), Some("no longer needed"));
    assert!(!alive(grandchild));
    assert!(processes_of(t.id).is_empty());
    // A second cancel says it is over.
    assert_eq!(
        d.client
            .cancel(&t.id.to_string(), None)
            .await
            .unwrap_err()
            .status(),
        Some(409)
    );
    d.stop().await;
}

#[tokio::test]
async fn a_cancelled_queued_task_never_starts() {
    let d = TestDaemon::start(1).await;
    d.client.pause(None).await.unwrap();
    let t = d.submit(sh("echo should-not-run")).await;
    let r = d.client.cancel(&t.id.to_string(), None).await.unwrap();
    assert_eq!(r.result, deputy_core::api::CancelResult::Cancelled);
    d.client.resume(None).await.unwrap();
    let probe = d.submit(sh("true")).await;
    wait_done(&d.client, probe.id).await;
    let ev = d.events().await;
    assert!(!ev.iter().any(|e| e.task == Some(t.id)
        && matches!(
            e.body,
            EventBody::TaskStatus {
                to: Status::Running,
                ..
            }
        )));
    assert_eq!(
        d.client.get(&t.id.to_string()).await.unwrap().task.status,
        Status::Cancelled
    );
    d.stop().await;
}

#[tokio::test]
async fn leftover_background_processes_are_stopped_when_the_task_exits() {
    let d = TestDaemon::start(1).await;
    let t = d.submit(sh("sleep 100 & echo \"bg=$!\"")).await;
    let done = wait_done(&d.client, t.id).await;
    assert_eq!(done.status, Status::Succeeded);
    let logs =
        String::from_utf8(d.client.logs_text(&t.id.to_string(), &[]).await.unwrap()).unwrap();
    assert!(!alive(bg_pid(&logs)));
    d.stop().await;
}

#[tokio::test]
async fn a_missing_working_directory_fails_the_task_with_a_reason() {
    let d = TestDaemon::start(1).await;
    let t = d
        .submit(NewTask {
            cwd: Some("/nonexistent/deputy-test".into()),
            ..sh("true")
        })
        .await;
    let done = wait_done(&d.client, t.id).await;
    assert_eq!(done.status, Status::Failed);
    assert!(done.reason.unwrap().contains("/nonexistent/deputy-test"));
    d.stop().await;
}

#[tokio::test]
async fn tasks_get_only_allowlisted_environment_plus_their_own() {
    // SAFETY of the test: the variable is only read by the daemon's spawn below.
    let d = TestDaemon::start(1).await;
    let t = d
        .submit(NewTask {
            env: [("GREETING".to_string(), "hi".to_string())].into(),
            ..sh("env")
        })
        .await;
    wait_done(&d.client, t.id).await;
    let env = String::from_utf8(d.client.logs_text(&t.id.to_string(), &[]).await.unwrap()).unwrap();
    assert!(env.contains("GREETING=hi"));
    assert!(env.contains(&format!("DEPUTY_TASK_ID={}", t.id)));
    for line in env.lines() {
        let key = line.split('=').next().unwrap();
        let allowed = deputy_engine::runner::ENV_ALLOWLIST.contains(&key)
            || matches!(
                key,
                "GREETING" | "DEPUTY_TASK_ID" | "DEPUTY_ATTEMPT" | "PWD" | "SHLVL" | "OLDPWD" | "_"
            );
        assert!(
            allowed,
            "unexpected variable in the task's environment: {line}"
        );
    }
    d.stop().await;
}
