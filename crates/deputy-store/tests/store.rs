//! The store's contract, tested on both backends: SQLite always, PostgreSQL when
//! `DEPUTY_TEST_DATABASE_URL` is set (each test in its own schema; without the variable
//! the PostgreSQL variants print that they were skipped). Compare-and-set transitions,
//! claims under group limits, dependency settlement, and a gapless event log.

use std::sync::Arc;

use deputy_core::schedule::{MissedPolicy, OverlapPolicy, Schedule, Trigger};
use deputy_core::submit::{NewTask, SubmitDefaults, ValidTask};
use deputy_core::trace::{LlmAttempt, LlmRecord, RecordStatus, Usage};
use deputy_core::{Command, EventBody, NodeId, Status};
use deputy_store::postgres::PgStore;
use deputy_store::sqlite::SqliteStore;
use deputy_store::{CancelOutcome, Finish, Fire, Store, StoreError};
use sqlx::postgres::PgConnectOptions;

const PG_ENV: &str = "DEPUTY_TEST_DATABASE_URL";

struct Backend {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    pg_schema: Option<(sqlx::PgPool, String)>,
}

impl Backend {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        Self {
            store: Arc::new(s),
            _dir: Some(dir),
            pg_schema: None,
        }
    }

    /// A store in a fresh schema of the test database, or None (with a printed reason).
    async fn postgres() -> Option<Self> {
        let Ok(url) = std::env::var(PG_ENV) else {
            eprintln!("skipped: {PG_ENV} is not set, so the PostgreSQL variant did not run");
            return None;
        };
        let admin = sqlx::PgPool::connect(&url).await.unwrap();
        let schema = format!("deputy_t_{}", uuid_hex());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await
            .unwrap();
        let opts: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .unwrap()
            .options([("search_path", schema.as_str())]);
        let s = PgStore::open_with(opts).await.unwrap();
        Some(Self {
            store: Arc::new(s),
            _dir: None,
            pg_schema: Some((admin, schema)),
        })
    }

    async fn cleanup(self) {
        self.store.close().await;
        if let Some((admin, schema)) = self.pg_schema {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                .execute(&admin)
                .await
                .unwrap();
        }
    }
}

fn uuid_hex() -> String {
    deputy_core::TaskId::new().to_string()[..16].to_string()
}

/// Runs a contract test on each backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let b = super::Backend::sqlite().await;
                super::$name(b.store.clone()).await;
                b.cleanup().await;
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(b) = super::Backend::postgres().await {
                    super::$name(b.store.clone()).await;
                    b.cleanup().await;
                }
            }
        }
    )*};
}

on_both_backends!(
    an_attempt_ends_once_and_the_loser_changes_nothing,
    claims_respect_group_limits_and_pauses,
    a_cancelled_queued_task_cannot_be_claimed_and_a_running_one_is_flagged,
    retries_are_new_attempts_with_history,
    idempotency_keys_return_the_first_task,
    the_event_log_is_gapless_and_ordered,
    a_failed_batch_stores_nothing,
    dependencies_settle_in_the_same_transaction,
    listing_and_prefixes,
    trace_statuses_never_regress_and_end_with_the_attempt,
    concurrent_writes_share_transactions_and_each_loser_changes_nothing,
    a_batched_claim_takes_the_best_tasks_up_to_each_groups_free_slots,
    a_tick_fires_once_and_a_racing_firing_changes_nothing,
    overlapping_runs_follow_the_schedules_policy,
    a_schedule_keeps_its_newest_runs_and_cleans_older_finished_ones,
    a_write_that_fails_after_appending_events_leaves_no_gap,
    ends_recorded_together_are_each_their_own_compare_and_set,
    a_mixed_batch_is_stored_in_order_with_its_labels_events_and_edges,
);

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
        usage: None,
    }
}

async fn an_attempt_ends_once_and_the_loser_changes_nothing(s: Arc<dyn Store>) {
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

async fn claims_respect_group_limits_and_pauses(s: Arc<dyn Store>) {
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
    // Without the check for ready tasks first, the claim itself still honours the pause.
    assert!(
        s.claim_queued(&node(), 30_000, 4, 2)
            .await
            .unwrap()
            .is_empty(),
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

async fn a_cancelled_queued_task_cannot_be_claimed_and_a_running_one_is_flagged(s: Arc<dyn Store>) {
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

async fn retries_are_new_attempts_with_history(s: Arc<dyn Store>) {
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
    assert!(matches!(s.retry(t.id, 12, false).await.unwrap().attempt, 3));
    let attempts = s.attempts(t.id).await.unwrap();
    let outcomes: Vec<_> = attempts.iter().map(|a| a.status).collect();
    assert_eq!(outcomes, vec![Status::Interrupted, Status::Failed]);
    assert!(
        matches!(
            s.retry(t.id, 13, false).await,
            Err(StoreError::Conflict { .. })
        ),
        "not finished"
    );
}

async fn idempotency_keys_return_the_first_task(s: Arc<dyn Store>) {
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

async fn the_event_log_is_gapless_and_ordered(s: Arc<dyn Store>) {
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

async fn a_failed_batch_stores_nothing(s: Arc<dyn Store>) {
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

async fn dependencies_settle_in_the_same_transaction(s: Arc<dyn Store>) {
    use deputy_core::submit::{DepInput, DepTarget};
    let dep = |key: &str, mode| DepInput {
        target: DepTarget::Key(key.into()),
        mode,
    };
    let batch = vec![
        valid("a", |t| t.key = Some("a".into())),
        valid("b", |t| {
            t.key = Some("b".into());
            t.depends_on = vec![dep("a", deputy_core::DepMode::Success)];
        }),
        valid("c", |t| {
            t.depends_on = vec![dep("a", deputy_core::DepMode::Finish)]
        }),
    ];
    let out = s.submit(batch, 1).await.unwrap();
    assert_eq!(out[1].task.status, Status::Blocked);
    let a = s.claim(&node(), 30_000, 2).await.unwrap().unwrap();
    assert_eq!(a.id, out[0].task.id);
    s.finish(finish(&a, Status::Failed, None)).await.unwrap();
    let b = s.get(out[1].task.id).await.unwrap();
    assert_eq!(b.status, Status::Cancelled);
    assert!(b.reason.unwrap().contains("failed"));
    assert_eq!(s.get(out[2].task.id).await.unwrap().status, Status::Queued);
}

async fn listing_and_prefixes(s: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let t = s
            .submit(
                vec![valid("x", |t| {
                    t.labels = vec![if i % 2 == 0 { "even" } else { "odd" }.into()];
                    t.name = Some(format!("n{i}"));
                })],
                i,
            )
            .await
            .unwrap()
            .remove(0)
            .task;
        ids.push(t.id);
    }
    let even = s
        .list(&deputy_store::ListQuery {
            label: Some("even".into()),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        even.tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![ids[4], ids[2]]
    );
    let rest = s
        .list(&deputy_store::ListQuery {
            label: Some("even".into()),
            limit: 2,
            cursor: even.next_cursor,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        rest.tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![ids[0]]
    );
    let by_text = s
        .list(&deputy_store::ListQuery {
            text: Some("n3".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_text.tasks.len(), 1);
    for len in [10, 9] {
        let prefix: deputy_core::IdRef = ids[1].to_string()[..len].parse().unwrap();
        assert_eq!(s.resolve(&prefix).await.unwrap(), ids[1]);
    }
    let missing: deputy_core::IdRef = "ffffffffffffffff".parse().unwrap();
    assert!(matches!(
        s.resolve(&missing).await,
        Err(StoreError::NotFound(_))
    ));
}

fn attempt_record(run: &str, step: u32, number: u32, error: Option<&str>) -> LlmRecord {
    LlmRecord::Attempt {
        run_id: run.into(),
        step,
        attempt: LlmAttempt {
            number,
            method: "POST".into(),
            url: "http://127.0.0.1:1/v1/chat/completions".into(),
            status_code: Some(if error.is_some() { 500 } else { 200 }),
            request_headers: vec![("authorization".into(), "[redacted]".into())],
            request_body: Some("{}".into()),
            response_headers: vec![],
            response_body: None,
            chunks: vec!["{\"a\":1}".into()],
            chunks_omitted: 0,
            started_at: 5,
            duration_ms: 3,
            error: error.map(str::to_string),
        },
    }
}

fn step_update(run: &str, step: u32, status: RecordStatus, error: Option<&str>) -> LlmRecord {
    LlmRecord::StepUpdated {
        run_id: run.into(),
        step,
        status,
        error: error.map(str::to_string),
        response: None,
        usage: None,
        first_token_at: None,
        ended_at: Some(9),
    }
}

async fn trace_statuses_never_regress_and_end_with_the_attempt(s: Arc<dyn Store>) {
    let t = s
        .submit(
            vec![valid("unused", |t| {
                t.command = None;
                t.agent = Some(deputy_core::agent::AgentInput {
                    prompt: "fix it".into(),
                    ..Default::default()
                });
            })],
            1,
        )
        .await
        .unwrap()
        .remove(0)
        .task;
    let running = s.claim(&node(), 30_000, 2).await.unwrap().unwrap();
    let run = "run-1";
    let started = |step: u32| LlmRecord::StepStarted {
        run_id: run.into(),
        step,
        operation: "stream".into(),
        request: "{\"model\":\"m\"}".into(),
        started_at: 3 + i64::from(step),
    };
    s.record_llm(&[
        LlmRecord::RunStarted {
            run_id: run.into(),
            task_id: t.id,
            task_attempt: running.attempt,
            provider: "openai".into(),
            model: "m".into(),
            started_at: 3,
        },
        started(1),
        attempt_record(run, 1, 1, Some("the model API answered 500")),
        step_update(
            run,
            1,
            RecordStatus::Error,
            Some("the model API answered 500"),
        ),
        attempt_record(run, 1, 2, None),
        LlmRecord::StepUpdated {
            run_id: run.into(),
            step: 1,
            status: RecordStatus::Completed,
            error: None,
            response: Some("{\"finish_reason\":\"stop\"}".into()),
            usage: Some(Usage {
                input_tokens: Some(7),
                ..Usage::default()
            }),
            first_token_at: Some(6),
            ended_at: Some(8),
        },
        // Late or repeated records change nothing.
        step_update(run, 1, RecordStatus::Error, Some("late")),
        step_update(run, 1, RecordStatus::InProgress, None),
        started(1),
        attempt_record(run, 1, 2, Some("a duplicate")),
        started(2),
    ])
    .await
    .unwrap();
    // The attempt ends while step 2 is still in progress: it is interrupted, step 1 stays.
    s.finish(finish(&running, Status::Failed, None))
        .await
        .unwrap();
    let runs = s.trace(t.id).await.unwrap();
    assert_eq!(runs.len(), 1);
    let r = &runs[0];
    assert_eq!((r.status, r.task_attempt), (RecordStatus::Interrupted, 1));
    assert_eq!(r.steps.len(), 2);
    let one = &r.steps[0];
    assert_eq!(one.status, RecordStatus::Completed);
    assert_eq!(one.error, None, "a retry that succeeds clears the error");
    assert_eq!(one.usage.input_tokens, Some(7));
    assert_eq!(one.usage.output_tokens, None);
    assert_eq!(one.first_token_at, Some(6));
    assert_eq!(one.response.as_ref().unwrap()["finish_reason"], "stop");
    assert_eq!(one.attempts.len(), 2);
    assert_eq!(one.attempts[0].status_code, Some(500));
    assert_eq!(one.attempts[1].error, None);
    assert_eq!(one.attempts[1].chunks, vec!["{\"a\":1}".to_string()]);
    assert_eq!(r.steps[1].status, RecordStatus::Interrupted);
    // Ended runs do not move back either.
    s.record_llm(&[LlmRecord::RunEnded {
        run_id: run.into(),
        status: RecordStatus::InProgress,
        error: None,
        usage: Usage::default(),
        ended_at: 20,
    }])
    .await
    .unwrap();
    assert_eq!(
        s.trace(t.id).await.unwrap()[0].status,
        RecordStatus::Interrupted
    );
    // Cleaning the task takes its trace with it.
    assert_eq!(s.clean(i64::MAX).await.unwrap(), 1);
    assert!(s.trace(t.id).await.unwrap().is_empty());
}

/// Group commit: writes that arrive together commit in one transaction, yet each keeps
/// its own compare-and-set. Every task is finished twice at once with different
/// outcomes; exactly one of each pair wins, the loser changes nothing, and the log and
/// the rows agree.
async fn concurrent_writes_share_transactions_and_each_loser_changes_nothing(s: Arc<dyn Store>) {
    const N: usize = 40;
    let batch = (0..N).map(|i| valid(&format!("t{i}"), |_| {})).collect();
    s.submit(batch, 1).await.unwrap();
    let claimed = s.claim_batch(&node(), 30_000, 2, N).await.unwrap();
    assert_eq!(claimed.len(), N);
    let before = s.write_counts();
    let mut racing = Vec::new();
    for t in &claimed {
        for status in [Status::Succeeded, Status::Failed] {
            let (s, f) = (s.clone(), finish(t, status, None));
            racing.push(tokio::spawn(async move { s.finish(f).await }));
        }
    }
    let (mut wins, mut conflicts) = (0, 0);
    for r in racing {
        match r.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::Conflict { .. }) => conflicts += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((wins, conflicts), (N, N));
    let after = s.write_counts();
    assert_eq!(after.writes - before.writes, 2 * N as u64);
    assert!(
        after.busy > before.busy,
        "the time inside batches was not counted"
    );
    assert!(
        after.batches - before.batches < N as u64,
        "{} writes took {} transactions: they were not grouped",
        2 * N,
        after.batches - before.batches
    );
    let events = s.events_after(0, 10_000, None).await.unwrap();
    for t in &claimed {
        let finished: Vec<Status> = events
            .iter()
            .filter(|e| e.task == Some(t.id))
            .filter_map(|e| match e.body {
                EventBody::TaskFinished { status, .. } => Some(status),
                _ => None,
            })
            .collect();
        let stored = s.get(t.id).await.unwrap().status;
        assert_eq!(finished, vec![stored], "task {}: one end, as stored", t.id);
    }
    let default = s.groups().await.unwrap();
    assert!(default.iter().all(|g| g.running == 0), "{default:?}");
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "gapless log");
}

async fn a_batched_claim_takes_the_best_tasks_up_to_each_groups_free_slots(s: Arc<dyn Store>) {
    use deputy_core::spec::Priority;
    s.add_group("two", Some(2), 0).await.unwrap();
    let mut batch = Vec::new();
    for (name, group, priority) in [
        ("a", "default", Priority::P2),
        ("b", "default", Priority::P0),
        ("x", "two", Priority::P1),
        ("y", "two", Priority::P1),
        ("z", "two", Priority::P1),
        ("c", "default", Priority::P2),
    ] {
        batch.push(valid(name, |t| {
            t.name = Some(name.into());
            t.group = Some(group.into());
            t.priority = Some(priority);
        }));
    }
    s.submit(batch, 1).await.unwrap();
    let got = s.claim_batch(&node(), 30_000, 2, 4).await.unwrap();
    let names: Vec<String> = got.iter().map(|t| t.spec.title()).collect();
    assert_eq!(names, ["b", "x", "y", "a"], "best first, at most `max`");
    assert!(got.iter().all(|t| t.status == Status::Running));
    // Group `two` is full (2 of 2): z waits; c is the only one left to claim.
    let rest = s.claim_batch(&node(), 30_000, 3, 10).await.unwrap();
    let names: Vec<String> = rest.iter().map(|t| t.spec.title()).collect();
    assert_eq!(names, ["c"]);
    assert!(
        s.claim_batch(&node(), 30_000, 4, 10)
            .await
            .unwrap()
            .is_empty()
    );
    for t in got.iter().chain(&rest) {
        let stored = s.get(t.id).await.unwrap();
        assert_eq!(stored.status, Status::Running);
        assert_eq!(stored.node.as_deref(), Some("test-node"));
        let attempts = s.attempts(t.id).await.unwrap();
        assert_eq!(attempts.len(), 1);
        let claimed_events = s
            .events_after(0, 1000, Some(t.id))
            .await
            .unwrap()
            .into_iter()
            .filter(|e| {
                matches!(
                    e.body,
                    EventBody::TaskStatus {
                        from: Status::Queued,
                        to: Status::Running,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(claimed_events, 1, "one claim event for {}", t.id);
    }
    let two = s.groups().await.unwrap();
    let two = two.iter().find(|g| g.name == "two").unwrap();
    assert_eq!(two.running, 2);
}

fn schedule(name: &str, overlap: OverlapPolicy, keep_runs: u32) -> Schedule {
    Schedule {
        name: name.into(),
        trigger: Trigger::Every {
            ms: 1000,
            anchor: 0,
        },
        task: NewTask {
            command: Some(Command::Line("true".into())),
            ..NewTask::default()
        },
        missed: MissedPolicy::Skip,
        catch_up_limit: 10,
        overlap,
        keep_runs,
        paused: false,
        next_fire_at: Some(1000),
        last_fire_at: None,
        fired: 0,
        skipped: 0,
        created_at: 0,
        updated_at: 0,
    }
}

fn fire(name: &str, ticks: &[i64], next: i64) -> Fire {
    Fire {
        name: name.into(),
        expected_next: ticks[0],
        next_fire_at: Some(next),
        runs: ticks.iter().map(|&t| (t, valid("true", |_| {}))).collect(),
        skipped: 0,
        now: ticks[ticks.len() - 1],
    }
}

async fn a_tick_fires_once_and_a_racing_firing_changes_nothing(s: Arc<dyn Store>) {
    s.add_schedule(schedule("nightly", OverlapPolicy::Allow, 100))
        .await
        .unwrap();
    let again = s
        .add_schedule(schedule("nightly", OverlapPolicy::Allow, 100))
        .await;
    assert!(matches!(again, Err(StoreError::ScheduleExists(n)) if n == "nightly"));
    // Two nodes planned the same tick from the same read: one wins.
    let (a, b) = tokio::join!(
        s.fire_schedule(fire("nightly", &[1000], 2000)),
        s.fire_schedule(fire("nightly", &[1000], 2000))
    );
    let (won, lost) = match (a, b) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
        other => panic!("exactly one firing must win: {other:?}"),
    };
    assert!(matches!(lost, StoreError::ScheduleMoved(n) if n == "nightly"));
    assert_eq!(won.submitted.len(), 1);
    let runs = s.schedule_runs("nightly", 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].tick, runs[0].task),
        (1000, won.submitted[0].task.id)
    );
    let stored = s.schedule("nightly").await.unwrap();
    assert_eq!((stored.next_fire_at, stored.fired), (Some(2000), 1));
    assert_eq!(s.next_schedule_at().await.unwrap(), Some(2000));
    assert!(s.due_schedules(1999, 10).await.unwrap().is_empty());
    assert_eq!(s.due_schedules(2000, 10).await.unwrap().len(), 1);
    // A paused schedule is not due and cannot be fired; resuming sets the next tick.
    s.set_schedule_paused("nightly", true, None, 1500)
        .await
        .unwrap();
    assert!(s.due_schedules(5000, 10).await.unwrap().is_empty());
    assert!(matches!(
        s.fire_schedule(fire("nightly", &[2000], 3000)).await,
        Err(StoreError::ScheduleMoved(_))
    ));
    let resumed = s
        .set_schedule_paused("nightly", false, Some(9000), 8500)
        .await
        .unwrap();
    assert_eq!((resumed.paused, resumed.next_fire_at), (false, Some(9000)));
    // The log says what happened to the schedule.
    let actions: Vec<String> = s
        .events_after(0, 1000, None)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.body {
            EventBody::ScheduleUpdated { action, .. } => Some(action),
            _ => None,
        })
        .collect();
    assert_eq!(actions, ["created", "fired", "paused", "resumed"]);
    s.remove_schedule("nightly", 9100).await.unwrap();
    assert!(matches!(
        s.schedule("nightly").await,
        Err(StoreError::NoSchedule(_))
    ));
    // The task it submitted stays.
    s.get(won.submitted[0].task.id).await.unwrap();
}

async fn overlapping_runs_follow_the_schedules_policy(s: Arc<dyn Store>) {
    for (name, overlap) in [
        ("skip", OverlapPolicy::Skip),
        ("queue", OverlapPolicy::Queue),
        ("allow", OverlapPolicy::Allow),
    ] {
        s.add_schedule(schedule(name, overlap, 100)).await.unwrap();
        let first = s.fire_schedule(fire(name, &[1000], 2000)).await.unwrap();
        let first = &first.submitted[0].task;
        // The first run is still queued when the next tick comes.
        let second = s.fire_schedule(fire(name, &[2000], 3000)).await.unwrap();
        let stored = s.schedule(name).await.unwrap();
        match overlap {
            OverlapPolicy::Skip => {
                assert!(second.submitted.is_empty());
                assert_eq!((second.skipped, stored.skipped, stored.fired), (1, 1, 1));
            }
            OverlapPolicy::Queue => {
                let t = &second.submitted[0].task;
                assert_eq!(
                    t.status,
                    Status::Blocked,
                    "a queued run waits for the one going"
                );
                assert_eq!(t.depends_on.len(), 1);
                assert_eq!(t.depends_on[0].task, first.id);
                assert_eq!(stored.fired, 2);
            }
            OverlapPolicy::Allow => {
                assert_eq!(second.submitted[0].task.status, Status::Queued);
                assert_eq!(stored.fired, 2);
            }
        }
    }
    // Catching up several ticks at once runs them one after another.
    s.add_schedule(schedule("chain", OverlapPolicy::Skip, 100))
        .await
        .unwrap();
    let caught = s
        .fire_schedule(fire("chain", &[1000, 2000, 3000], 4000))
        .await
        .unwrap();
    let ts: Vec<_> = caught.submitted.iter().map(|x| &x.task).collect();
    assert_eq!(ts.len(), 3);
    assert_eq!(ts[0].status, Status::Queued);
    assert_eq!(ts[1].depends_on[0].task, ts[0].id);
    assert_eq!(ts[2].depends_on[0].task, ts[1].id);
}

async fn a_schedule_keeps_its_newest_runs_and_cleans_older_finished_ones(s: Arc<dyn Store>) {
    s.add_schedule(schedule("kept", OverlapPolicy::Allow, 2))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for k in 1..=4 {
        let tick = k * 1000;
        let f = s
            .fire_schedule(fire("kept", &[tick], tick + 1000))
            .await
            .unwrap();
        let id = f.submitted[0].task.id;
        ids.push(id);
        // Each run but the first finishes before the next tick; the first keeps running.
        let t = s.claim(&node(), 60_000, tick).await.unwrap().unwrap();
        assert_eq!(t.id, id);
        if k != 1 {
            s.finish(finish(&t, Status::Succeeded, None)).await.unwrap();
        }
    }
    let runs: Vec<_> = s
        .schedule_runs("kept", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.task)
        .collect();
    // The two newest stay; of the older ones the finished second is gone, and the first,
    // still running, stays.
    assert_eq!(runs, vec![ids[3], ids[2], ids[0]]);
    assert!(matches!(s.get(ids[1]).await, Err(StoreError::NotFound(_))));
    assert!(
        s.events_after(0, 1000, Some(ids[1]))
            .await
            .unwrap()
            .is_empty(),
        "a cleaned run's events go with it"
    );
    s.get(ids[0]).await.unwrap();
}

/// A write that appended events and then failed gives their numbers back, alone in its
/// batch or among others: the log stays gapless (a PostgreSQL sequence would not).
async fn a_write_that_fails_after_appending_events_leaves_no_gap(s: Arc<dyn Store>) {
    s.add_schedule(schedule("again", OverlapPolicy::Allow, 100))
        .await
        .unwrap();
    s.fire_schedule(fire("again", &[1000], 2000)).await.unwrap();
    for round in 0..2 {
        // Point the schedule back at a tick it already ran: firing it submits the task
        // (appending its event), then its run row collides, and the write fails.
        s.set_schedule_paused("again", false, Some(1000), 1500)
            .await
            .unwrap();
        if round == 0 {
            assert!(s.fire_schedule(fire("again", &[1000], 2000)).await.is_err());
        } else {
            let (bad, good) = tokio::join!(
                s.fire_schedule(fire("again", &[1000], 2000)),
                s.submit(vec![valid("true", |_| {})], 1600)
            );
            assert!(bad.is_err());
            good.unwrap();
        }
        s.submit(vec![valid("true", |_| {})], 1700).await.unwrap();
    }
    let seqs: Vec<i64> = s
        .events_after(0, 1000, None)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "a gap in the log"
    );
    assert_eq!(s.schedule_runs("again", 10).await.unwrap().len(), 1);
    // Deleting the newest events (cleaning finished tasks) never lets a number be
    // handed out twice.
    let last = *seqs.last().unwrap();
    let ids: Vec<_> = s
        .list(&deputy_store::ListQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| t.id)
        .collect();
    for id in ids {
        let _ = s.cancel(id, None, 1800).await;
    }
    let cancelled_last = s.last_event_seq().await.unwrap();
    assert!(cancelled_last > last);
    assert!(s.clean(i64::MAX).await.unwrap() > 0);
    let fresh = s.submit(vec![valid("true", |_| {})], 1900).await.unwrap();
    let fresh_events = s
        .events_after(0, 1000, Some(fresh[0].task.id))
        .await
        .unwrap();
    assert!(!fresh_events.is_empty());
    for e in &fresh_events {
        assert!(
            e.seq > cancelled_last,
            "number {} was handed out again after cleaning (highest before: {cancelled_last})",
            e.seq
        );
    }
}

/// Attempt ends waiting together are recorded in one group (a few statements for all of
/// them): each must still end exactly as it would alone. Plain ends, an end with a retry,
/// an end with a dependent, a stale attempt, and a second end of an attempt, all at once.
async fn ends_recorded_together_are_each_their_own_compare_and_set(s: Arc<dyn Store>) {
    use deputy_core::submit::{DepInput, DepTarget};
    const PLAIN: usize = 30;
    let mut batch: Vec<ValidTask> = (0..PLAIN)
        .map(|i| valid(&format!("p{i}"), |_| {}))
        .collect();
    batch.push(valid("retried", |_| {}));
    batch.push(valid("parent", |t| t.key = Some("parent".into())));
    batch.push(valid("child", |t| {
        t.depends_on = vec![DepInput {
            target: DepTarget::Key("parent".into()),
            mode: deputy_core::DepMode::Success,
        }]
    }));
    let submitted = s.submit(batch, 1).await.unwrap();
    let (retried, parent, child) = (
        submitted[PLAIN].task.id,
        submitted[PLAIN + 1].task.id,
        submitted[PLAIN + 2].task.id,
    );
    let claimed = s.claim_batch(&node(), 30_000, 2, 100).await.unwrap();
    assert_eq!(claimed.len(), PLAIN + 2, "all but the blocked child");
    let before = s.write_counts();

    let mut ends = Vec::new();
    for (i, t) in claimed.iter().enumerate() {
        let mut f = finish(t, Status::Succeeded, None);
        if t.id == retried {
            f = finish(t, Status::Failed, Some(1000));
            f.exit_code = Some(3);
        } else if i % 3 == 1 && t.id != parent {
            f.status = Status::Failed;
            f.exit_code = Some(i as i32);
            f.reason = Some(format!("reason {i}"));
        }
        ends.push(f);
    }
    // A stale attempt, and a second end of the first task's attempt.
    let mut stale = finish(&claimed[2], Status::Succeeded, None);
    stale.attempt += 1;
    // The first plain task's attempt also gets a second end.
    let first = claimed
        .iter()
        .position(|t| t.id != retried && t.id != parent)
        .unwrap();
    let mut second = ends[first].clone();
    second.status = Status::Cancelled;
    let mut racing = Vec::new();
    for f in ends.iter().cloned().chain([stale, second]) {
        let s = s.clone();
        racing.push(tokio::spawn(async move { s.finish(f).await }));
    }
    let mut results = Vec::new();
    for r in racing {
        results.push(r.await.unwrap());
    }
    let after = s.write_counts();
    assert!(
        after.batches - before.batches < results.len() as u64,
        "{} ends took {} transactions: they were not grouped",
        results.len(),
        after.batches - before.batches
    );

    let (stale_result, second_result) = (&results[ends.len()], &results[ends.len() + 1]);
    // Whether it came before or after the real end, a stale attempt changes nothing.
    assert!(
        matches!(stale_result, Err(StoreError::Conflict { .. })),
        "{stale_result:?}"
    );
    // The second end of the first attempt loses to whichever came first.
    let first_two = [&results[first], second_result];
    assert_eq!(
        first_two.iter().filter(|r| r.is_ok()).count(),
        1,
        "{first_two:?}"
    );
    let winner = if results[first].is_ok() {
        &ends[first]
    } else {
        &{
            let mut c = ends[first].clone();
            c.status = Status::Cancelled;
            c
        }
    };

    for (i, (f, r)) in ends.iter().zip(&results).enumerate() {
        if i == first {
            continue;
        }
        let t = r.as_ref().unwrap_or_else(|e| panic!("{}: {e}", f.id));
        let stored = s.get(f.id).await.unwrap();
        assert_eq!(
            stored.status, t.status,
            "what the caller was told is what is stored"
        );
        if f.id == retried {
            assert_eq!((t.status, t.attempt), (Status::Scheduled, 2));
        } else {
            assert_eq!(stored.status, f.status);
            assert_eq!(stored.exit_code, f.exit_code);
            assert_eq!(stored.reason, f.reason);
            assert_eq!(stored.finished_at, Some(f.now));
            assert_eq!(stored.lease_expires_at, None);
            let attempts = s.attempts(f.id).await.unwrap();
            assert_eq!(attempts.len(), 1);
            assert_eq!(
                (attempts[0].status, attempts[0].exit_code),
                (f.status, f.exit_code)
            );
            assert_eq!(attempts[0].finished_at, Some(f.now));
        }
    }
    assert_eq!(
        s.get(claimed[first].id).await.unwrap().status,
        winner.status
    );
    assert_eq!(
        s.get(child).await.unwrap().status,
        Status::Queued,
        "the dependent was settled"
    );
    assert_eq!(s.get(parent).await.unwrap().status, Status::Succeeded);

    // The log: gapless, one end per ended task, each after its status change.
    let events = s.events_after(0, 10_000, None).await.unwrap();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1, "the log has a gap");
    }
    for t in &claimed {
        let mine: Vec<&EventBody> = events
            .iter()
            .filter(|e| e.task == Some(t.id))
            .map(|e| &e.body)
            .collect();
        let finished = mine
            .iter()
            .filter(|b| matches!(b, EventBody::TaskFinished { .. }))
            .count();
        let expected = usize::from(t.id != retried);
        assert_eq!(finished, expected, "task {}: {mine:?}", t.id);
        if expected == 1 {
            assert!(
                matches!(
                    mine[mine.len() - 2],
                    EventBody::TaskStatus {
                        from: Status::Running,
                        ..
                    }
                ),
                "task {}: {mine:?}",
                t.id
            );
            assert!(matches!(
                mine[mine.len() - 1],
                EventBody::TaskFinished { .. }
            ));
        }
    }
    let groups = s.groups().await.unwrap();
    let default = groups.iter().find(|g| g.name == "default").unwrap();
    assert_eq!(
        default.running, 0,
        "no task of the group is counted as running"
    );
}

/// A batch mixing plain tasks (inserted together) with keyed, dependent and idempotent
/// ones (one by one): every task comes back in the order sent, with its status, labels,
/// one `task.created` event, and a queue position in the order sent.
async fn a_mixed_batch_is_stored_in_order_with_its_labels_events_and_edges(s: Arc<dyn Store>) {
    use deputy_core::submit::{DepInput, DepTarget, WhenInput};
    let mut batch = Vec::new();
    for i in 0..20 {
        batch.push(valid(&format!("plain {i}"), |t| {
            t.name = Some(format!("plain-{i}"));
            if i % 4 == 0 {
                t.labels = vec!["tagged".into(), "tagged".into()];
            }
            if i == 7 {
                t.run_at = Some(WhenInput::Millis(1_000_000));
            }
        }));
    }
    batch.push(valid("keyed", |t| t.key = Some("k".into())));
    batch.push(valid("after keyed", |t| {
        t.depends_on = vec![DepInput {
            target: DepTarget::Key("k".into()),
            mode: deputy_core::DepMode::Success,
        }];
        t.labels = vec!["tagged".into()];
    }));
    batch.push(valid("once", |t| t.idempotency_key = Some("once".into())));
    let n = batch.len();
    let out = s.submit(batch, 1).await.unwrap();
    assert_eq!(out.len(), n);
    for (i, sub) in out.iter().enumerate().take(20) {
        assert!(sub.created);
        assert_eq!(sub.task.spec.title(), format!("plain-{i}"));
        let want = if i == 7 {
            Status::Scheduled
        } else {
            Status::Queued
        };
        assert_eq!(sub.task.status, want);
        assert_eq!(s.get(sub.task.id).await.unwrap().status, want);
    }
    assert_eq!(out[20].task.status, Status::Queued);
    assert_eq!(out[21].task.status, Status::Blocked);
    assert_eq!(out[21].task.depends_on[0].task, out[20].task.id);
    // Sent again, the idempotent task is the same task.
    let again = s
        .submit(
            vec![valid("once", |t| t.idempotency_key = Some("once".into()))],
            2,
        )
        .await
        .unwrap();
    assert!(!again[0].created);
    assert_eq!(again[0].task.id, out[22].task.id);

    let tagged = s
        .list(&deputy_store::ListQuery {
            label: Some("tagged".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ids: Vec<_> = tagged.tasks.iter().map(|t| t.id).collect();
    ids.reverse(); // newest first -> order sent
    let want: Vec<_> = [0, 4, 8, 12, 16, 21]
        .iter()
        .map(|&i| out[i].task.id)
        .collect();
    assert_eq!(ids, want, "labels, each once, in queue order");

    let all = s
        .list(&deputy_store::ListQuery {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let plain_order: Vec<_> = all
        .tasks
        .iter()
        .rev()
        .filter(|t| t.spec.title().starts_with("plain-"))
        .map(|t| t.spec.title())
        .collect();
    let sent: Vec<_> = (0..20).map(|i| format!("plain-{i}")).collect();
    assert_eq!(plain_order, sent, "queue order is the order sent");

    let events = s.events_after(0, 10_000, None).await.unwrap();
    for sub in &out {
        let created = events
            .iter()
            .filter(|e| e.task == Some(sub.task.id))
            .filter(|e| matches!(e.body, EventBody::TaskCreated { .. }))
            .count();
        assert_eq!(created, 1, "{}", sub.task.spec.title());
    }
}

/// Two nodes on one PostgreSQL database, each claiming and ending tasks as fast as it
/// can, their claims and plain ends in shared transactions side by side: every task is
/// claimed once per attempt, a group's limit holds across both, ends with dependents or
/// retries still settle them, and a follower reading the log while they commit sees
/// every event, in order, with no gap (so events commit in `seq` order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_sharing_transactions_claim_once_keep_limits_and_commit_events_in_order() {
    use deputy_core::submit::{DepInput, DepTarget};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    let Some(first) = Backend::postgres().await else {
        return;
    };
    let (_, schema) = first.pg_schema.clone().unwrap();
    let opts: PgConnectOptions = std::env::var(PG_ENV)
        .unwrap()
        .parse::<PgConnectOptions>()
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let second: Arc<dyn Store> = Arc::new(PgStore::open_with(opts).await.unwrap());
    let nodes = [first.store.clone(), second.clone()];
    const LIMIT: u32 = 3;
    nodes[0].add_group("limited", Some(LIMIT), 1).await.unwrap();

    // 200 plain tasks, half of them in the limited group; 20 that fail once and are
    // retried; 20 that wait for one of the plain ones.
    let dep = |key: String| DepInput {
        target: DepTarget::Key(key),
        mode: deputy_core::DepMode::Success,
    };
    let mut batch = Vec::new();
    for i in 0..200 {
        batch.push(valid("plain", |t| {
            t.key = Some(format!("p{i}"));
            if i % 2 == 0 {
                t.group = Some("limited".into());
            }
        }));
    }
    for i in 0..20 {
        batch.push(valid("retried", |t| {
            t.name = Some(format!("retried-{i}"));
            t.max_attempts = Some(2);
        }));
        batch.push(valid("dependent", |t| {
            t.depends_on = vec![dep(format!("p{i}"))]
        }));
    }
    let total = batch.len();
    nodes[0].submit(batch, 2).await.unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let follower = {
        let s = nodes[1].clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut last = s.last_event_seq().await.unwrap();
            let mut seen = 0usize;
            loop {
                let finished = done.load(Ordering::Acquire);
                loop {
                    let page = s.events_after(last, 256, None).await.unwrap();
                    if page.is_empty() {
                        break;
                    }
                    for e in page {
                        assert_eq!(e.seq, last + 1, "the follower saw a gap or a reorder");
                        last = e.seq;
                        seen += 1;
                    }
                }
                if finished {
                    return seen;
                }
                let _ = tokio::time::timeout(Duration::from_millis(100), s.wait_committed()).await;
            }
        })
    };

    let workers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, s)| {
            let s = s.clone();
            tokio::spawn(async move {
                let node = NodeId(format!("node-{n}"));
                let mut idle_rounds = 0;
                loop {
                    let claimed = s.claim_batch(&node, 30_000, 3, 8).await.unwrap();
                    if claimed.is_empty() {
                        let open = s
                            .status_counts()
                            .await
                            .unwrap()
                            .by_status
                            .iter()
                            .filter(|(st, _)| !st.is_terminal())
                            .map(|(_, n)| *n)
                            .sum::<u64>();
                        if open == 0 {
                            return;
                        }
                        idle_rounds += 1;
                        assert!(
                            idle_rounds < 600,
                            "the queue stopped moving with {open} open"
                        );
                        let _ =
                            tokio::time::timeout(Duration::from_millis(100), s.wait_committed())
                                .await;
                        continue;
                    }
                    idle_rounds = 0;
                    let ends = claimed.iter().map(|t| {
                        let fails = t
                            .spec
                            .name
                            .as_deref()
                            .is_some_and(|n| n.starts_with("retried"))
                            && t.attempt == 1;
                        let f = if fails {
                            finish(t, Status::Failed, Some(0))
                        } else {
                            finish(t, Status::Succeeded, None)
                        };
                        s.finish(f)
                    });
                    for r in futures_util::future::join_all(ends).await {
                        r.unwrap();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .expect("the nodes did not drain the queue")
            .unwrap();
    }
    done.store(true, Ordering::Release);
    let followed = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .unwrap()
        .unwrap();

    let log = nodes[0].events_after(0, 100_000, None).await.unwrap();
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1, "the stored log has a gap");
    }
    assert!(followed > 0);
    let mut running_limited = 0i64;
    let mut peak = 0;
    let mut claims: HashMap<(deputy_core::TaskId, u32), usize> = HashMap::new();
    let mut limited = std::collections::HashSet::new();
    for t in nodes[0]
        .list(&deputy_store::ListQuery {
            group: Some("limited".into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .tasks
    {
        limited.insert(t.id);
    }
    assert_eq!(limited.len(), 100);
    for e in &log {
        if let (
            EventBody::TaskStatus {
                from, to, attempt, ..
            },
            Some(id),
        ) = (&e.body, e.task)
        {
            if *to == Status::Running {
                *claims.entry((id, *attempt)).or_default() += 1;
            }
            if limited.contains(&id) {
                if *to == Status::Running {
                    running_limited += 1;
                } else if *from == Status::Running {
                    running_limited -= 1;
                }
                peak = peak.max(running_limited);
            }
        }
    }
    assert!(
        claims.values().all(|&n| n == 1),
        "an attempt was claimed twice"
    );
    assert!(
        peak <= i64::from(LIMIT),
        "the limited group ran {peak} at once"
    );
    assert_eq!(peak, i64::from(LIMIT), "the limited group never filled up");
    let counts = nodes[0].status_counts().await.unwrap().by_status;
    let succeeded = counts
        .iter()
        .find(|(s, _)| *s == Status::Succeeded)
        .map_or(0, |(_, n)| *n);
    assert_eq!(
        succeeded as usize, total,
        "every task succeeded: {counts:?}"
    );
    second.close().await;
    first.cleanup().await;
}

/// Fills a store with what every id-keyed table holds: a task with a label, a
/// dependent, an attempt with output, events. Returns (parent, dependent).
async fn fill_every_table_keyed_by_task(s: &dyn Store) -> (deputy_core::Task, deputy_core::TaskId) {
    use deputy_core::submit::{DepInput, DepTarget};
    let out = s
        .submit(
            vec![
                valid("a", |t| {
                    t.key = Some("a".into());
                    t.labels = vec!["upgrade".into()];
                }),
                valid("b", |t| {
                    t.depends_on = vec![DepInput {
                        target: DepTarget::Key("a".into()),
                        mode: deputy_core::DepMode::Finish,
                    }]
                }),
            ],
            1,
        )
        .await
        .unwrap();
    let a = s.claim(&node(), 30_000, 2).await.unwrap().unwrap();
    assert_eq!(a.id, out[0].task.id);
    s.append_output(deputy_store::OutputBatch {
        task: a.id,
        attempt: a.attempt,
        chunks: vec![deputy_store::NewChunk {
            stream: deputy_core::Stream::Stdout,
            offset: 0,
            data: b"hello\n".to_vec(),
        }],
        drop: Vec::new(),
        total_bytes: 6,
        omitted_bytes: 0,
        now: 3,
    })
    .await
    .unwrap();
    s.record_llm(&[LlmRecord::RunStarted {
        run_id: "upgrade-run".into(),
        task_id: a.id,
        task_attempt: a.attempt,
        provider: "openai".into(),
        model: "m".into(),
        started_at: 3,
    }])
    .await
    .unwrap();
    (a, out[1].task.id)
}

/// Every column that holds a task id, as the test knows them (not from the migration,
/// so a table the migration forgets stays in the old form and fails the test).
const TASK_ID_COLUMNS: &[(&str, &str)] = &[
    ("tasks", "id"),
    ("task_labels", "task_id"),
    ("task_deps", "task_id"),
    ("task_deps", "depends_on"),
    ("attempts", "task_id"),
    ("events", "task_id"),
    ("output_chunks", "task_id"),
    ("llm_runs", "task_id"),
    ("schedule_runs", "task_id"),
];

/// Statements that turn every stored key back into the text form (the bytes reversed),
/// as a database written before the time-ordered keys held them.
fn to_text_form() -> String {
    let reversed = |c: &str| {
        (0..16)
            .rev()
            .map(|byte| format!("substr({c}, {}, 2)", byte * 2 + 1))
            .collect::<Vec<_>>()
            .join(" || ")
    };
    TASK_ID_COLUMNS
        .iter()
        .map(|(t, c)| format!("UPDATE {t} SET {c} = {};", reversed(c)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What [`fill_every_table_keyed_by_task`] stored, read back through the store.
async fn assert_every_table_keyed_by_task(
    s: &dyn Store,
    a: &deputy_core::Task,
    b: deputy_core::TaskId,
) {
    assert_eq!(s.get(a.id).await.unwrap().status, Status::Running);
    assert_eq!(s.attempts(a.id).await.unwrap().len(), 1);
    assert_eq!(s.trace(a.id).await.unwrap().len(), 1);
    let output = s.read_output(a.id, a.attempt, None, 0).await.unwrap();
    assert_eq!(output.len(), 1, "{output:?}");
    let events = s.events_after(0, 100, Some(a.id)).await.unwrap();
    assert!(events.len() >= 3, "{events:?}");
    assert!(events.iter().all(|e| e.task == Some(a.id)));
    assert_eq!(s.dependents(a.id).await.unwrap(), vec![b]);
    let b_task = s.get(b).await.unwrap();
    assert_eq!(b_task.depends_on.first().map(|d| d.task), Some(a.id));
    let labelled = s
        .list(&deputy_store::ListQuery {
            label: Some("upgrade".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        labelled.tasks.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![a.id]
    );
    let prefix: deputy_core::IdRef = a.id.to_string()[..9].parse().unwrap();
    assert_eq!(s.resolve(&prefix).await.unwrap(), a.id);
    // And the task can still end, with its dependent settled.
    s.finish(finish(a, Status::Succeeded, None)).await.unwrap();
    assert_eq!(s.get(b).await.unwrap().status, Status::Queued);
}

/// A database written before ids were stored in time order (their text form, random
/// bytes first) is rewritten by the migration: every task keeps its id, attempts,
/// output, events, edges, labels and model calls. The old state is made by turning
/// every key back into the text form and forgetting the migration was applied.
#[tokio::test]
async fn ids_stored_in_text_form_are_rewritten_to_time_ordered_keys_sqlite() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let s = SqliteStore::open(&path).await.unwrap();
    let (a, b) = fill_every_table_keyed_by_task(&s).await;
    s.close().await;

    let mut raw = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PRAGMA foreign_keys = OFF; BEGIN; {} COMMIT;",
        to_text_form()
    )))
    .execute(&mut raw)
    .await
    .unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE description = 'time_ordered_task_keys'")
        .execute(&mut raw)
        .await
        .unwrap();
    let stored: String = sqlx::query_scalar("SELECT task_id FROM attempts")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(stored, a.id.to_string(), "the old form is the text form");
    raw.close().await.unwrap();

    let s = SqliteStore::open(&path).await.unwrap();
    assert_every_table_keyed_by_task(&s, &a, b).await;
    s.close().await;
}

#[tokio::test]
async fn ids_stored_in_text_form_are_rewritten_to_time_ordered_keys_postgres() {
    let Some(backend) = Backend::postgres().await else {
        return;
    };
    let (a, b) = fill_every_table_keyed_by_task(backend.store.as_ref()).await;
    backend.store.close().await;
    let (admin, schema) = backend.pg_schema.clone().unwrap();

    let mut tx = admin.begin().await.unwrap();
    // Replica mode skips the foreign keys' triggers while the keys change under them.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET LOCAL search_path = {schema}; SET LOCAL session_replication_role = replica; {}",
        to_text_form()
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {schema}._sqlx_migrations WHERE description = 'time_ordered_task_keys'"
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    let stored: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT task_id FROM {schema}.attempts"
    )))
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(stored, a.id.to_string(), "the old form is the text form");
    tx.commit().await.unwrap();

    let url = std::env::var(PG_ENV).unwrap();
    let opts: PgConnectOptions = url
        .parse::<PgConnectOptions>()
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let s = PgStore::open_with(opts).await.unwrap();
    assert_every_table_keyed_by_task(&s, &a, b).await;
    s.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
}

/// A database a newer deputy migrated is refused with a message saying so, before
/// anything is written.
#[tokio::test]
async fn a_database_from_a_newer_deputy_is_refused_with_the_reason() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    SqliteStore::open(&path).await.unwrap().close().await;
    let mut raw = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         SELECT 999, 'from the future', success, checksum, execution_time
         FROM _sqlx_migrations WHERE version = 1",
    )
    .execute(&mut raw)
    .await
    .unwrap();
    raw.close().await.unwrap();
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert!(matches!(err, StoreError::NewerSchema(999)), "{err}");
    assert!(err.to_string().contains("newer deputy"), "{err}");
}
