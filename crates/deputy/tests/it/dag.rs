//! Dependencies: order, failure propagation, cycles.

use deputy_core::submit::{DepInput, DepTarget, NewTask};
use deputy_core::{DepMode, EventBody, Status};

use crate::harness::*;

fn dep(key: &str, mode: DepMode) -> DepInput {
    DepInput {
        target: DepTarget::Key(key.into()),
        mode,
    }
}

fn keyed(key: &str, line: &str, deps: Vec<DepInput>) -> NewTask {
    NewTask {
        key: Some(key.into()),
        name: Some(key.into()),
        depends_on: deps,
        ..sh(line)
    }
}

#[tokio::test]
async fn diamond_runs_in_dependency_order() {
    let d = TestDaemon::start(4).await;
    let batch = vec![
        keyed("top", "sleep 0.1", vec![]),
        keyed("left", "sleep 0.1", vec![dep("top", DepMode::Success)]),
        keyed("right", "true", vec![dep("top", DepMode::Success)]),
        keyed(
            "bottom",
            "true",
            vec![
                dep("left", DepMode::Success),
                dep("right", DepMode::Success),
            ],
        ),
    ];
    let r = d.client.submit_batch(&batch).await.unwrap();
    let ids: Vec<_> = r.tasks.iter().map(created).collect();
    let bottom = wait_done(&d.client, ids[3]).await;
    assert_eq!(bottom.status, Status::Succeeded);
    let ev = d.events().await;
    let seqs = status_seqs(&ev);
    let started = |i: usize| seqs[&(ids[i], Status::Running)];
    let ended = |i: usize| seqs[&(ids[i], Status::Succeeded)];
    assert!(
        started(1) > ended(0) && started(2) > ended(0),
        "left and right wait for top"
    );
    assert!(
        started(3) > ended(1) && started(3) > ended(2),
        "bottom waits for both"
    );
    d.stop().await;
}

#[tokio::test]
async fn failure_cancels_success_dependents_transitively_and_finish_dependents_run() {
    let d = TestDaemon::start(2).await;
    let batch = vec![
        keyed("fails", "exit 3", vec![]),
        keyed("child", "true", vec![dep("fails", DepMode::Success)]),
        keyed("grandchild", "true", vec![dep("child", DepMode::Success)]),
        keyed(
            "cleanup",
            "echo cleaning",
            vec![dep("fails", DepMode::Finish)],
        ),
        keyed(
            "after-cancelled",
            "true",
            vec![dep("child", DepMode::Finish)],
        ),
    ];
    let r = d.client.submit_batch(&batch).await.unwrap();
    let ids: Vec<_> = r.tasks.iter().map(created).collect();
    let cleanup = wait_done(&d.client, ids[3]).await;
    assert_eq!(cleanup.status, Status::Succeeded);
    let fails = wait_done(&d.client, ids[0]).await;
    assert_eq!((fails.status, fails.exit_code), (Status::Failed, Some(3)));
    let child = wait_done(&d.client, ids[1]).await;
    assert_eq!(child.status, Status::Cancelled);
    assert_eq!(
        child.reason.as_deref(),
        Some(format!("dependency {} failed (failed)", ids[0]).as_str())
    );
    let grandchild = wait_done(&d.client, ids[2]).await;
    assert_eq!(grandchild.status, Status::Cancelled);
    assert!(grandchild.reason.unwrap().contains(&ids[1].to_string()));
    // A finish edge on a cancelled task still lets its dependent run.
    assert_eq!(wait_done(&d.client, ids[4]).await.status, Status::Succeeded);
    // Cancelled dependents never started.
    let ev = d.events().await;
    for id in [ids[1], ids[2]] {
        assert!(
            !ev.iter().any(|e| e.task == Some(id)
                && matches!(
                    e.body,
                    EventBody::TaskStatus {
                        to: Status::Running,
                        ..
                    }
                )),
            "{id} must never run"
        );
    }
    d.stop().await;
}

#[tokio::test]
async fn a_cycle_is_rejected_naming_it_and_nothing_is_stored() {
    let d = TestDaemon::start(2).await;
    let batch = vec![
        keyed("a", "true", vec![dep("c", DepMode::Success)]),
        keyed("b", "true", vec![dep("a", DepMode::Success)]),
        keyed("c", "true", vec![dep("b", DepMode::Finish)]),
    ];
    let err = d.client.submit_batch(&batch).await.unwrap_err();
    assert_eq!(err.status(), Some(422));
    let msg = err.to_string();
    assert!(msg.contains("dependency cycle"), "{msg}");
    assert!(
        msg.contains("a") && msg.contains("b") && msg.contains("c"),
        "{msg}"
    );
    assert!(d.client.list(&[]).await.unwrap().tasks.is_empty());
    d.stop().await;
}

#[tokio::test]
async fn dependencies_on_stored_tasks_by_prefix() {
    let d = TestDaemon::start(2).await;
    let first = d.submit(sh("echo first")).await;
    let prefix = first.id.to_string()[..8].to_string();
    let second = d
        .submit(NewTask {
            depends_on: vec![DepInput {
                target: DepTarget::Task(prefix.parse().unwrap()),
                mode: DepMode::Success,
            }],
            ..sh("echo second")
        })
        .await;
    assert_eq!(second.depends_on[0].task, first.id);
    assert_eq!(
        wait_done(&d.client, second.id).await.status,
        Status::Succeeded
    );
    d.stop().await;
}
