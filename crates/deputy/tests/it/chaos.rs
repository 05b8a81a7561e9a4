//! Chaos: a real daemon under a mixed workload is killed with `kill -9` at random moments
//! and restarted, again and again; then the whole history is checked.
//!
//! After the last restart the queue drains, and:
//! - every task is in exactly one terminal state, and the log's last status event for it
//!   agrees with the stored row (status and attempt);
//! - the event log is gapless;
//! - every process that ran (each shell task appends "task attempt" to a ledger as its
//!   first act) belongs to an attempt the store recorded, and no attempt ran twice: a
//!   re-run after a crash is always a new, recorded attempt;
//! - no process of any task is left alive (checked in /proc by each task's marker).
//!
//! Runs on SQLite, and on PostgreSQL in the CI pass with `DEPUTY_TEST_BACKEND=postgres`.
//! `DEPUTY_CHAOS_ROUNDS` (default 20) and `DEPUTY_CHAOS_SEED` (printed) set the run;
//! `DEPUTY_CHAOS_TASKS` the workload size (default 500).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use deputy_client::Client;
use deputy_core::submit::{DepInput, DepTarget, DurationInput, NewTask, TimeoutInput};
use deputy_core::{DepMode, EventBody, Status, TaskId};
use futures_util::StreamExt;

use crate::agents::agent_task;
use crate::harness::*;
use crate::mock_llm;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A shell task that records itself in the ledger first.
fn marked(ledger: &Path, body: &str) -> NewTask {
    sh(&format!(
        "echo \"$DEPUTY_TASK_ID $DEPUTY_ATTEMPT\" >> '{}'; {body}",
        ledger.display()
    ))
}

/// The mixed workload: quick, slow, failing with retries, timing out, chains, tasks
/// with grandchildren, and agent tasks on a scripted model.
fn workload(n: usize, ledger: &Path, ws: &Path, rng: &mut fastrand::Rng) -> Vec<NewTask> {
    let mut tasks = Vec::with_capacity(n);
    let mut chain = 0;
    while tasks.len() < n {
        let kind = rng.u32(0..100);
        let t = match kind {
            0..=39 => marked(ledger, "true"),
            40..=51 => marked(ledger, &format!("sleep 0.{}", rng.u32(2..9))),
            52..=63 => NewTask {
                max_attempts: Some(3),
                backoff: Some(DurationInput(50)),
                ..marked(ledger, "exit 3")
            },
            64..=67 => NewTask {
                timeout: Some(TimeoutInput::Millis(300)),
                ..marked(ledger, "sleep 30")
            },
            68..=79 => marked(ledger, "sh -c 'sleep 0.3 & sleep 0.4; wait' & wait"),
            80..=95 => {
                // A chain of three: each after the one before succeeded.
                chain += 1;
                for link in 0..3 {
                    if tasks.len() >= n {
                        break;
                    }
                    let mut t = NewTask {
                        key: Some(format!("c{chain}-{link}")),
                        max_attempts: Some(2),
                        ..marked(ledger, "sleep 0.1")
                    };
                    if link > 0 {
                        t.depends_on = vec![DepInput {
                            target: DepTarget::Key(format!("c{chain}-{}", link - 1)),
                            mode: DepMode::Success,
                        }];
                    }
                    tasks.push(t);
                }
                continue;
            }
            _ => agent_task(ws, |a| {
                a.backend = Some("builtin".into());
                a.model = Some("mock-model".into());
                a.max_turns = Some(3);
            }),
        };
        tasks.push(t);
    }
    tasks
}

/// Waits until `n` more events arrived after `after` (or the deadline); returns the last
/// seq seen. This is how a random moment to kill is picked: by progress, not by time.
async fn after_events(client: &Client, after: i64, n: u64) -> i64 {
    let mut s = Box::pin(client.events(None, after));
    let mut last = after;
    let mut seen = 0;
    let _ = tokio::time::timeout(DEADLINE, async {
        while seen < n {
            match s.next().await {
                Some(Ok(e)) => {
                    last = e.seq;
                    seen += 1;
                }
                _ => break,
            }
        }
    })
    .await;
    last
}

/// Waits until every task is terminal, re-reading the store after each task.finished.
async fn drained(client: &Client, ids: &[TaskId]) {
    let mut s = Box::pin(client.events(None, 0));
    let all_done = || async {
        // Every page of the task list (it pages at 1000).
        let mut terminal: BTreeSet<TaskId> = BTreeSet::new();
        let mut cursor: Option<i64> = None;
        loop {
            let mut q = vec![("limit", "1000".to_string())];
            if let Some(c) = cursor {
                q.push(("cursor", c.to_string()));
            }
            let page = client.list(&q).await.unwrap();
            terminal.extend(
                page.tasks
                    .iter()
                    .filter(|t| t.status.is_terminal())
                    .map(|t| t.id),
            );
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        ids.iter().all(|id| terminal.contains(id))
    };
    tokio::time::timeout(std::time::Duration::from_secs(300), async {
        if all_done().await {
            return;
        }
        while let Some(Ok(e)) = s.next().await {
            if matches!(e.body, EventBody::TaskFinished { .. }) && all_done().await {
                return;
            }
        }
        panic!("the event stream ended before the queue drained");
    })
    .await
    .expect("the queue did not drain within 300 s after the last restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_and_runs_nothing_twice() {
    let rounds = env_or("DEPUTY_CHAOS_ROUNDS", 20);
    let n = env_or("DEPUTY_CHAOS_TASKS", 500) as usize;
    let seed = env_or("DEPUTY_CHAOS_SEED", fastrand::u64(..));
    eprintln!("chaos: {rounds} kills, {n} tasks, DEPUTY_CHAOS_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ledger = dir.path().join("ledger");
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    let (_model, provider) = mock_llm::start(vec![], Some(mock_llm::say("done"))).await;
    let env = [
        ("DEPUTY_PARALLEL", "8"),
        ("OPENAI_API_KEY", "sk-deputy-chaos-test-key"),
        ("OPENAI_BASE_URL", provider.base_url.as_str()),
    ];
    let mut daemon = ChildDaemon::spawn(&data, &env).await;
    // In batches the API takes (chains stay inside one batch: they refer by key).
    let mut ids: Vec<TaskId> = Vec::with_capacity(n);
    while ids.len() < n {
        let batch = workload((n - ids.len()).min(900), &ledger, &ws, &mut rng);
        let submitted = daemon.client.submit_batch(&batch).await.unwrap();
        ids.extend(submitted.tasks.iter().map(|s| s.task.id));
    }
    assert_eq!(ids.len(), n);

    // Old daemons are kept until the end: dropping one would drop its PostgreSQL schema.
    let mut killed = Vec::new();
    let mut seen = 0;
    for round in 0..rounds {
        seen = after_events(&daemon.client, seen, rng.u64(10..120)).await;
        // Mostly the daemon alone (its guard then kills the tasks' groups); sometimes the
        // guard too, as when a whole service is killed (recovery kills them on restart).
        if rng.u32(0..4) == 0 {
            daemon.kill9_with_guard();
        } else {
            daemon.kill9();
        }
        eprintln!("chaos: kill {} of {rounds} after event {seen}", round + 1);
        killed.push(daemon);
        daemon = ChildDaemon::spawn(&data, &env).await;
    }
    drained(&daemon.client, &ids).await;

    // Every task ended once, and the log agrees with the store.
    let events = collect_events(&daemon.client).await;
    for w in events.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "the event log has a gap");
    }
    let mut last_status: HashMap<TaskId, (Status, u32)> = HashMap::new();
    let mut finished: HashMap<TaskId, u32> = HashMap::new();
    for e in &events {
        match (&e.body, e.task) {
            (EventBody::TaskStatus { to, attempt, .. }, Some(id)) => {
                last_status.insert(id, (*to, *attempt));
            }
            (EventBody::TaskFinished { .. }, Some(id)) => *finished.entry(id).or_default() += 1,
            _ => {}
        }
    }
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut recorded: BTreeSet<(TaskId, u32)> = BTreeSet::new();
    let mut attempts_total = 0;
    for id in &ids {
        let d = daemon.client.get(&id.to_string()).await.unwrap();
        let t = &d.task;
        assert!(t.status.is_terminal(), "task {id} ended {}", t.status);
        assert_eq!(
            last_status.get(id),
            Some(&(t.status, t.attempt)),
            "the log's last status of {id} differs from the stored one"
        );
        assert_eq!(finished.get(id), Some(&1), "task {id}: task.finished count");
        *outcomes.entry(t.status.to_string()).or_default() += 1;
        for a in &d.attempts {
            recorded.insert((*id, a.number));
            attempts_total += 1;
        }
    }
    // Every process that ran was a recorded attempt, and none ran twice.
    let ledger_text = std::fs::read_to_string(&ledger).unwrap_or_default();
    let mut runs: BTreeMap<(TaskId, u32), usize> = BTreeMap::new();
    for line in ledger_text.lines() {
        let (id, attempt) = line.split_once(' ').expect("a ledger line");
        let id: TaskId = id.parse().expect("a task id in the ledger");
        let attempt: u32 = attempt.parse().expect("an attempt in the ledger");
        *runs.entry((id, attempt)).or_default() += 1;
    }
    for (run, count) in &runs {
        assert!(
            recorded.contains(run),
            "task {} attempt {} ran without being recorded",
            run.0,
            run.1
        );
        assert_eq!(
            *count, 1,
            "task {} attempt {} ran {count} times",
            run.0, run.1
        );
    }
    // Nothing of any task is left running.
    for id in &ids {
        let left = processes_of(*id);
        assert!(left.is_empty(), "task {id} left processes {left:?}");
    }
    eprintln!(
        "chaos: {rounds} kills; {n} tasks ended {outcomes:?}; {attempts_total} attempts recorded, {} ran a process; {} events",
        runs.len(),
        events.len()
    );
    drop(killed);
}

/// Two nodes on PostgreSQL: one is killed again and again while the other keeps running;
/// the queue still drains with every task ended once and no attempt run twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_nodes_killing_one_again_and_again_loses_nothing() {
    let Ok(base) = std::env::var("DEPUTY_TEST_DATABASE_URL") else {
        eprintln!(
            "skipped: DEPUTY_TEST_DATABASE_URL is not set, so the two-node chaos test did not run"
        );
        return;
    };
    if postgres_backend().is_some() {
        // The CI pass on PostgreSQL already ran this once; once is enough.
        eprintln!("skipped: runs in the SQLite pass (it always uses PostgreSQL)");
        return;
    }
    let rounds = env_or("DEPUTY_CHAOS_ROUNDS", 20) / 2;
    let n = env_or("DEPUTY_CHAOS_TASKS", 500) as usize / 2;
    let seed = env_or("DEPUTY_CHAOS_SEED", fastrand::u64(..));
    eprintln!("chaos (2 nodes): {rounds} kills, {n} tasks, DEPUTY_CHAOS_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let schema = format!(
        "deputy_chaos_{}",
        &deputy_core::TaskId::new().to_string()[..12]
    );
    let admin = sqlx::PgPool::connect(&base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let ledger = dir.path().join("ledger");
    let env = [
        ("DEPUTY_DATABASE", url.as_str()),
        ("DEPUTY_PARALLEL", "4"),
        ("DEPUTY_LEASE", "3s"),
    ];
    let steady = ChildDaemon::spawn(&dir.path().join("steady"), &env).await;
    let victim_dir = dir.path().join("victim");
    let mut victim = ChildDaemon::spawn(&victim_dir, &env).await;
    let tasks: Vec<NewTask> = (0..n)
        .map(|i| match i % 4 {
            0 => marked(&ledger, "sleep 0.2"),
            1 => NewTask {
                max_attempts: Some(3),
                backoff: Some(DurationInput(50)),
                ..marked(&ledger, "exit 3")
            },
            2 => marked(&ledger, "sh -c 'sleep 0.2 & wait' & wait"),
            _ => marked(&ledger, "true"),
        })
        .collect();
    let ids: Vec<TaskId> = steady
        .client
        .submit_batch(&tasks)
        .await
        .unwrap()
        .tasks
        .iter()
        .map(|s| s.task.id)
        .collect();
    let mut killed = Vec::new();
    let mut seen = 0;
    for _ in 0..rounds {
        seen = after_events(&steady.client, seen, rng.u64(10..80)).await;
        victim.kill9();
        killed.push(victim);
        victim = ChildDaemon::spawn(&victim_dir, &env).await;
    }
    drained(&steady.client, &ids).await;
    let ledger_text = std::fs::read_to_string(&ledger).unwrap_or_default();
    let mut runs: BTreeMap<(String, u32), usize> = BTreeMap::new();
    for line in ledger_text.lines() {
        let (id, attempt) = line.split_once(' ').unwrap();
        *runs
            .entry((id.to_string(), attempt.parse().unwrap()))
            .or_default() += 1;
    }
    for id in &ids {
        let d = steady.client.get(&id.to_string()).await.unwrap();
        assert!(d.task.status.is_terminal());
        let recorded: BTreeSet<u32> = d.attempts.iter().map(|a| a.number).collect();
        for ((rid, attempt), count) in runs.range((id.to_string(), 0)..=(id.to_string(), u32::MAX))
        {
            assert_eq!(rid, &id.to_string());
            assert!(
                recorded.contains(attempt),
                "task {id} attempt {attempt} ran unrecorded"
            );
            assert_eq!(*count, 1, "task {id} attempt {attempt} ran {count} times");
        }
        assert!(processes_of(*id).is_empty(), "task {id} left processes");
    }
    let events = collect_events(&steady.client).await;
    for w in events.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "the event log has a gap");
    }
    eprintln!(
        "chaos (2 nodes): {rounds} kills of one node; {n} tasks drained; {} processes ran; {} events",
        runs.len(),
        events.len()
    );
    drop((steady, victim, killed));
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
}
