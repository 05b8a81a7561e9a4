//! Priorities, groups and their limits, pause and resume, schedules, retries.

use deputy_core::submit::{DurationInput, NewTask, WhenInput};
use deputy_core::{Priority, Status, TaskId};

use crate::harness::*;

#[tokio::test]
async fn p0_runs_before_an_earlier_p2() {
    let d = TestDaemon::start(1).await;
    d.client.pause(None).await.unwrap();
    let p2 = d
        .submit(NewTask {
            priority: Some(Priority::P2),
            ..sh("true")
        })
        .await;
    let p0 = d
        .submit(NewTask {
            priority: Some(Priority::P0),
            ..sh("true")
        })
        .await;
    d.client.resume(None).await.unwrap();
    wait_done(&d.client, p2.id).await;
    wait_done(&d.client, p0.id).await;
    let seqs = status_seqs(&d.events().await);
    assert!(seqs[&(p0.id, Status::Running)] < seqs[&(p2.id, Status::Running)]);
    d.stop().await;
}

#[tokio::test]
async fn a_group_with_parallel_2_never_runs_3() {
    let d = TestDaemon::start(6).await;
    d.client.add_group("pair", Some(2)).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(
            d.submit(NewTask {
                group: Some("pair".into()),
                ..sh("sleep 0.05")
            })
            .await
            .id,
        );
    }
    for id in &ids {
        assert_eq!(wait_done(&d.client, *id).await.status, Status::Succeeded);
    }
    // Replay the log: count running tasks of the group at every event.
    let (peak, running) = peak_running(&d.events().await, |t| ids.contains(&t));
    assert_eq!(running, 0);
    assert_eq!(peak, 2, "the group limit is reached but never passed");
    d.stop().await;
}

#[tokio::test]
async fn paused_group_holds_its_tasks_and_others_run() {
    let d = TestDaemon::start(2).await;
    d.client.add_group("held", None).await.unwrap();
    d.client.pause(Some("held")).await.unwrap();
    let held = d
        .submit(NewTask {
            group: Some("held".into()),
            ..sh("true")
        })
        .await;
    let free = d.submit(sh("true")).await;
    assert_eq!(
        wait_done(&d.client, free.id).await.status,
        Status::Succeeded
    );
    assert_eq!(
        d.client
            .get(&held.id.to_string())
            .await
            .unwrap()
            .task
            .status,
        Status::Queued
    );
    d.client.resume(Some("held")).await.unwrap();
    assert_eq!(
        wait_done(&d.client, held.id).await.status,
        Status::Succeeded
    );
    d.stop().await;
}

#[tokio::test]
async fn run_at_in_the_future_is_scheduled_then_runs() {
    let d = TestDaemon::start(2).await;
    let t = d
        .submit(NewTask {
            run_at: Some(WhenInput::Text("+300ms".into())),
            ..sh("true")
        })
        .await;
    assert_eq!(t.status, Status::Scheduled);
    let done = wait_done(&d.client, t.id).await;
    assert_eq!(done.status, Status::Succeeded);
    assert!(done.started_at.unwrap() >= t.spec.run_at.unwrap());
    d.stop().await;
}

#[tokio::test]
async fn failed_attempts_are_retried_with_history_kept() {
    let d = TestDaemon::start(2).await;
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    let line = format!("echo x >> {0}; [ $(wc -l < {0}) -ge 3 ]", count.display());
    let t = d
        .submit(NewTask {
            max_attempts: Some(3),
            backoff: Some(DurationInput(50)),
            ..sh(&line)
        })
        .await;
    let done = wait_done(&d.client, t.id).await;
    assert_eq!((done.status, done.attempt), (Status::Succeeded, 3));
    let detail = d.client.get(&t.id.to_string()).await.unwrap();
    let outcomes: Vec<_> = detail.attempts.iter().map(|a| a.status).collect();
    assert_eq!(
        outcomes,
        vec![Status::Failed, Status::Failed, Status::Succeeded]
    );
    // Manual retry of a finished task starts attempt 4.
    let again = d.client.retry(&t.id.to_string()).await.unwrap();
    assert_eq!(again.attempt, 4);
    assert_eq!(wait_done(&d.client, t.id).await.attempt, 4);
    d.stop().await;
}

#[tokio::test]
async fn retry_of_an_unfinished_task_is_a_conflict() {
    let d = TestDaemon::start(1).await;
    d.client.pause(None).await.unwrap();
    let t = d.submit(sh("true")).await;
    let err = d.client.retry(&t.id.to_string()).await.unwrap_err();
    assert_eq!(err.status(), Some(409));
    d.stop().await;
}

#[tokio::test]
async fn concurrent_submits_with_one_idempotency_key_create_one_task() {
    let d = TestDaemon::start(1).await;
    d.client.pause(None).await.unwrap();
    let task = NewTask {
        idempotency_key: Some("build-42".into()),
        ..sh("true")
    };
    let mut handles = Vec::new();
    for _ in 0..8 {
        let c = d.client.clone();
        let t = task.clone();
        handles.push(tokio::spawn(async move { c.submit(&t).await.unwrap() }));
    }
    let mut ids: Vec<TaskId> = Vec::new();
    let mut created = 0;
    for h in handles {
        let r = h.await.unwrap();
        ids.push(r.task.id);
        created += usize::from(r.created);
    }
    assert_eq!(created, 1);
    assert!(ids.iter().all(|i| *i == ids[0]));
    assert_eq!(d.client.list(&[]).await.unwrap().tasks.len(), 1);
    d.stop().await;
}

#[tokio::test]
async fn noop_tasks_succeed_without_a_process_and_take_no_command() {
    let d = TestDaemon::start(1).await;
    let noop = NewTask {
        kind: Some("noop".into()),
        ..NewTask::default()
    };
    let t = d.submit(noop.clone()).await;
    let done = wait_done(&d.client, t.id).await;
    assert_eq!(done.status, Status::Succeeded);
    assert_eq!(done.pgid, None);
    let with_command = NewTask {
        command: Some(deputy_core::Command::Line("true".into())),
        ..noop
    };
    let err = d.client.submit(&with_command).await.unwrap_err();
    assert_eq!(err.status(), Some(422));
    d.stop().await;
}
