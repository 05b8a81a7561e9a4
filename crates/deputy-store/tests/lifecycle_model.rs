//! A state-machine property test of the task lifecycle: random sequences of submits,
//! claims, finishes (with and without a retry to follow), cancels and retries run against
//! the real store (SQLite) and against a model of what each must do. After every step the
//! store's status and attempt of every task equal the model's, a step the model refuses
//! is refused by the store and changes nothing, and the event log stays gapless.

use std::collections::BTreeSet;

use deputy_core::submit::{NewTask, SubmitDefaults};
use deputy_core::{Command, NodeId, Status, TaskId};
use deputy_store::sqlite::SqliteStore;
use deputy_store::{CancelOutcome, Finish, Store};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Submit,
    Claim(usize),
    /// Ends task i's running attempt; `retry` asks for another attempt after it.
    Finish(usize, Status, bool),
    Cancel(usize),
    Retry(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let ended = prop_oneof![
        Just(Status::Succeeded),
        Just(Status::Failed),
        Just(Status::TimedOut),
        Just(Status::Interrupted),
        Just(Status::Cancelled),
    ];
    prop_oneof![
        3 => Just(Op::Submit),
        3 => (1usize..4).prop_map(Op::Claim),
        3 => (0usize..8, ended, any::<bool>()).prop_map(|(i, s, r)| Op::Finish(i, s, r)),
        1 => (0usize..8).prop_map(Op::Cancel),
        1 => (0usize..8).prop_map(Op::Retry),
    ]
}

/// What the model knows of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Model {
    status: Status,
    attempt: u32,
}

fn task() -> deputy_core::submit::ValidTask {
    NewTask {
        command: Some(Command::Line("true".into())),
        max_attempts: Some(100),
        ..NewTask::default()
    }
    .validate(
        &SubmitDefaults {
            timeout_ms: Some(60_000),
            output_cap: 1 << 20,
            cwd: "/tmp".into(),
        },
        0,
    )
    .unwrap()
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("m.db")).await.unwrap();
    let node = NodeId("model".into());
    let mut ids: Vec<TaskId> = Vec::new();
    let mut model: Vec<Model> = Vec::new();
    for (step, op) in ops.into_iter().enumerate() {
        let now = 1000 + step as i64;
        match op.clone() {
            Op::Submit => {
                let t = s.submit(vec![task()], now).await.unwrap().remove(0).task;
                ids.push(t.id);
                model.push(Model {
                    status: Status::Queued,
                    attempt: 1,
                });
            }
            Op::Claim(k) => {
                let queued: BTreeSet<TaskId> = ids
                    .iter()
                    .zip(&model)
                    .filter(|(_, m)| m.status == Status::Queued)
                    .map(|(id, _)| *id)
                    .collect();
                let got = s.claim_batch(&node, 60_000, now, k).await.unwrap();
                prop_assert_eq!(got.len(), k.min(queued.len()), "{:?}", op);
                for t in got {
                    prop_assert!(queued.contains(&t.id), "claimed a task that was not queued");
                    let i = ids.iter().position(|id| *id == t.id).unwrap();
                    model[i].status = Status::Running;
                }
            }
            Op::Finish(i, status, retry) => {
                let Some(&id) = ids.get(i) else { continue };
                let m = model[i];
                let r = s
                    .finish(Finish {
                        id,
                        attempt: m.attempt,
                        status,
                        exit_code: None,
                        signal: None,
                        reason: None,
                        retry_at: retry.then_some(0),
                        now,
                        usage: None,
                    })
                    .await;
                if m.status == Status::Running {
                    prop_assert!(r.is_ok(), "{:?} on {:?}: {:?}", op, m, r);
                    model[i] = if retry && status.is_retryable_outcome() {
                        Model {
                            status: Status::Queued,
                            attempt: m.attempt + 1,
                        }
                    } else {
                        Model {
                            status,
                            attempt: m.attempt,
                        }
                    };
                } else {
                    prop_assert!(r.is_err(), "{:?} on {:?} was accepted", op, m);
                }
            }
            Op::Cancel(i) => {
                let Some(&id) = ids.get(i) else { continue };
                let m = model[i];
                let r = s.cancel(id, None, now).await.unwrap();
                match (m.status, r) {
                    (Status::Queued, CancelOutcome::Cancelled(_)) => {
                        model[i].status = Status::Cancelled;
                    }
                    (Status::Running, CancelOutcome::Requested(_)) => {}
                    (st, CancelOutcome::AlreadyFinished(_)) if st.is_terminal() => {}
                    (st, other) => prop_assert!(false, "cancel of a {} task: {:?}", st, other),
                }
            }
            Op::Retry(i) => {
                let Some(&id) = ids.get(i) else { continue };
                let m = model[i];
                let r = s.retry(id, now, false).await;
                if m.status.is_terminal() {
                    prop_assert!(r.is_ok(), "retry of a {} task: {:?}", m.status, r);
                    model[i] = Model {
                        status: Status::Queued,
                        attempt: m.attempt + 1,
                    };
                } else {
                    prop_assert!(r.is_err(), "retry of a {} task was accepted", m.status);
                }
            }
        }
        for (id, m) in ids.iter().zip(&model) {
            let t = s.get(*id).await.unwrap();
            prop_assert_eq!(
                (t.status, t.attempt),
                (m.status, m.attempt),
                "after {:?}",
                op
            );
        }
    }
    let seqs: Vec<i64> = s
        .events_after(0, 10_000, None)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    prop_assert_eq!(seqs.clone(), (1..=seqs.len() as i64).collect::<Vec<_>>());
    s.close().await;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_store_follows_the_lifecycle_model(ops in prop::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops))?;
    }
}
