//! The store's contract, tested on a real SQLite file: compare-and-set transitions,
//! claims under group limits, dependency settlement, and a gapless event log.

use std::sync::Arc;

use deputy_core::submit::{NewTask, SubmitDefaults, ValidTask};
use deputy_core::{Command, EventBody, NodeId, Status};
use deputy_store::sqlite::SqliteStore;
use deputy_store::{CancelOutcome, Finish, Store, StoreError};

async fn store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
    (Arc::new(s), dir)
}

fn valid(line: &str, tweak: impl FnOnce(&mut NewTask)) -> ValidTask {
    let mut t = NewTask {
        command: Some(Command::Line(line.into())),
        ..NewTask::default()
    };
    tweak(&mut t);
    t.validate(
        &SubmitDefaults {
            timeout_ms: Some(60_000),
            output_cap: 1 << 20,
            cwd: "/tmp".into(),
        },
        0,
    )
    .unwrap()
}

fn node() -> NodeId {
    NodeId("test-node".into())
}

fn finish(t: &deputy_core::Task, status: Status, retry_at: Option<i64>) -> Finish {
    Finish {
        id: t.id,
        attempt: t.attempt,
        status,
        exit_code: None,
        signal: None,
        reason: None,
        retry_at,
        now: 10,
    }
}

#[tokio::test]
async fn an_attempt_ends_once_and_the_loser_changes_nothing() {
    let (s, _d) = store().await;
    let t = s
        .submit(vec![valid("true", |_| {})], 1)
        .await
        .unwrap()
        .remove(0)
        .task;
    let running = s.claim(&node(), 30_000, 2).await.unwrap().unwrap();
    assert_eq!(running.id, t.id);
    s.finish(finish(&running, Status::Succeeded, None))
        .await
        .unwrap();
    let second = s.finish(finish(&running, Status::Cancelled, None)).await;
    assert!(matches!(
        second,
        Err(StoreError::Conflict {
            actual: Status::Succeeded,
            ..
        })
    ));
    assert_eq!(s.get(t.id).await.unwrap().status, Status::Succeeded);
    let finished = s
        .events_after(0, 1000, Some(t.id))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.body, EventBody::TaskFinished { .. }))
        .count();
    assert_eq!(finished, 1);
    assert!(matches!(
        s.set_pgid(t.id, 1, 1234).await,
        Err(StoreError::Conflict { .. })
    ));
}

#[tokio::test]
async fn claims_respect_group_limits_and_pauses() {
    let (s, _d) = store().await;
    s.add_group("one", Some(1), 0).await.unwrap();
    let batch = vec![
        valid("a", |t| t.group = Some("one".into())),
        valid("b", |t| t.group = Some("one".into())),
    ];
    s.submit(batch, 1).await.unwrap();
    let first = s.claim(&node(), 30_000, 2).await.unwrap().unwrap();
    assert!(
        s.claim(&node(), 30_000, 2).await.unwrap().is_none(),
        "group full"
    );
    s.finish(finish(&first, Status::Failed, None))
        .await
        .unwrap();
    s.set_paused(None, true, 3).await.unwrap();
    assert!(
        s.claim(&node(), 30_000, 4).await.unwrap().is_none(),
        "queue paused"
    );
    s.set_paused(None, false, 5).await.unwrap();
    assert!(s.claim(&node(), 30_000, 6).await.unwrap().is_some());
    assert_eq!(
        s.groups()
            .await
            .unwrap()
            .iter()
            .find(|g| g.name == "one")
            .unwrap()
            .running,
        1
    );
}

#[tokio::test]
async fn a_cancelled_queued_task_cannot_be_claimed_and_a_running_one_is_flagged() {
    let (s, _d) = store().await;
    let a = s
        .submit(vec![valid("a", |_| {})], 1)
        .await
        .unwrap()
        .remove(0)
        .task;
    assert!(matches!(
        s.cancel(a.id, None, 2).await.unwrap(),
        CancelOutcome::Cancelled(_)
    ));
    assert!(s.claim(&node(), 30_000, 3).await.unwrap().is_none());
    let b = s
        .submit(vec![valid("b", |_| {})], 4)
        .await
        .unwrap()
        .remove(0)
        .task;
    s.claim(&node(), 30_000, 5).await.unwrap().unwrap();
    assert!(!s.cancel_requested(b.id).await.unwrap());
    assert!(matches!(
        s.cancel(b.id, None, 6).await.unwrap(),
        CancelOutcome::Requested(_)
    ));
    assert!(s.cancel_requested(b.id).await.unwrap());
    assert!(matches!(
        s.cancel(a.id, None, 7).await.unwrap(),
        CancelOutcome::AlreadyFinished(_)
    ));
}

#[tokio::test]
async fn retries_are_new_attempts_with_history() {
    let (s, _d) = store().await;
    let t = s
        .submit(vec![valid("x", |t| t.max_attempts = Some(2))], 1)
        .await
        .unwrap()
        .remove(0)
        .task;
    let r1 = s.claim(&node(), 30_000, 2).await.unwrap().unwrap();
    // Interrupted with a retry due now: requeued as attempt 2 in the same transaction.
    let after = s
        .finish(finish(&r1, Status::Interrupted, Some(5)))
        .await
        .unwrap();
    assert_eq!((after.status, after.attempt), (Status::Queued, 2));
    let r2 = s.claim(&node(), 30_000, 11).await.unwrap().unwrap();
    assert_eq!(r2.attempt, 2);
    s.finish(finish(&r2, Status::Failed, None)).await.unwrap();
    assert!(matches!(s.retry(t.id, 12).await.unwrap().attempt, 3));
    let attempts = s.attempts(t.id).await.unwrap();
    let outcomes: Vec<_> = attempts.iter().map(|a| a.status).collect();
    assert_eq!(outcomes, vec![Status::Interrupted, Status::Failed]);
    assert!(
        matches!(s.retry(t.id, 13).await, Err(StoreError::Conflict { .. })),
        "not finished"
    );
}

#[tokio::test]
async fn idempotency_keys_return_the_first_task() {
    let (s, _d) = store().await;
    let first = s
        .submit(
            vec![valid("x", |t| t.idempotency_key = Some("k".into()))],
            1,
        )
        .await
        .unwrap()
        .remove(0);
    let again = s
        .submit(
            vec![valid("y", |t| t.idempotency_key = Some("k".into()))],
            2,
        )
        .await
        .unwrap()
        .remove(0);
    assert!(first.created && !again.created);
    assert_eq!(first.task.id, again.task.id);
}

#[tokio::test]
async fn the_event_log_is_gapless_and_ordered() {
    let (s, _d) = store().await;
    for i in 0..20 {
        let t = s
            .submit(vec![valid("x", |_| {})], i)
            .await
            .unwrap()
            .remove(0)
            .task;
        if i % 2 == 0 {
            s.cancel(t.id, None, i).await.unwrap();
        }
    }
    let events = s.events_after(0, 10_000, None).await.unwrap();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1);
    }
    assert_eq!(s.last_event_seq().await.unwrap(), events.len() as i64);
}

#[tokio::test]
async fn a_failed_batch_stores_nothing() {
    let (s, _d) = store().await;
    let bad = vec![
        valid("ok", |_| {}),
        valid("x", |t| t.group = Some("missing".into())),
    ];
    assert!(matches!(
        s.submit(bad, 1).await,
        Err(StoreError::UnknownGroup(_))
    ));
    assert_eq!(s.last_event_seq().await.unwrap(), 0);
    assert!(s.status_counts().await.unwrap().by_status.is_empty());
}
