//! Several daemons (real processes) on one PostgreSQL database. Skipped, with a printed
//! reason, when DEPUTY_TEST_DATABASE_URL is not set.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use deputy_core::submit::NewTask;
use deputy_core::{EventBody, Status};
use futures_util::StreamExt;

use crate::harness::*;

const PG_ENV: &str = "DEPUTY_TEST_DATABASE_URL";

/// A fresh schema in the test database, dropped when the guard goes.
struct Schema {
    url: String,
    admin_url: String,
    name: String,
}

impl Schema {
    async fn new() -> Option<Self> {
        let Ok(admin_url) = std::env::var(PG_ENV) else {
            eprintln!("skipped: {PG_ENV} is not set, so the multi-node test did not run");
            return None;
        };
        let name = format!(
            "deputy_it_{}",
            &deputy_core::TaskId::new().to_string()[..16]
        );
        let pool = sqlx::PgPool::connect(&admin_url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&pool)
            .await
            .unwrap();
        let sep = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{sep}options=-c%20search_path%3D{name}");
        Some(Self {
            url,
            admin_url,
            name,
        })
    }

    async fn drop_now(self) {
        let pool = sqlx::PgPool::connect(&self.admin_url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.name
        )))
        .execute(&pool)
        .await
        .unwrap();
    }
}

async fn node(dir: &std::path::Path, name: &str, url: &str, extra: &[(&str, &str)]) -> ChildDaemon {
    let mut env = vec![("DEPUTY_DATABASE", url), ("DEPUTY_PARALLEL", "4")];
    env.extend_from_slice(extra);
    ChildDaemon::spawn(&dir.join(name), &env).await
}

/// Counts task.finished events on one node's all-events stream until `n`.
async fn wait_finished(client: &deputy_client::Client, after: i64, n: usize) {
    let mut s = Box::pin(client.events(None, after));
    let mut done = 0;
    tokio::time::timeout(Duration::from_secs(120), async {
        while done < n {
            let e = s.next().await.expect("stream ended").unwrap();
            if matches!(e.body, EventBody::TaskFinished { .. }) {
                done += 1;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {done} of {n} tasks finished"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_drain_a_thousand_tasks_exactly_once_within_cluster_limits() {
    let Some(schema) = Schema::new().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = node(dir.path(), "a", &schema.url, &[]).await;
    let b = node(dir.path(), "b", &schema.url, &[]).await;
    a.client.add_group("shared", Some(3)).await.unwrap();
    let out = dir.path().join("ran.log");
    let line = format!("echo \"$DEPUTY_TASK_ID\" >> {}", out.display());
    let tasks: Vec<NewTask> = (0..1000)
        .map(|_| NewTask {
            group: Some("shared".into()),
            ..sh(&line)
        })
        .collect();
    let after = a.client.status().await.unwrap().last_event;
    let submitted = b.client.submit_batch(&tasks).await.unwrap();
    wait_finished(&a.client, after, 1000).await;

    let log = std::fs::read_to_string(&out).unwrap();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for l in log.lines() {
        *seen.entry(l).or_default() += 1;
    }
    assert_eq!(seen.len(), 1000, "every task ran");
    assert!(seen.values().all(|&n| n == 1), "no task ran twice");
    for s in &submitted.tasks {
        assert!(seen.contains_key(s.task.id.to_string().as_str()));
    }

    // The group limit held across both nodes, replayed from the shared event log.
    let events = collect_events(&a.client).await;
    let (peak, _) = peak_running(&events, |_| true);
    let mut by_node: HashMap<String, usize> = HashMap::new();
    assert!(peak <= 3, "the group ran {peak} at once");
    for s in submitted.tasks.iter().take(200) {
        let t = a.client.get(&s.task.id.to_string()).await.unwrap().task;
        *by_node.entry(t.node.unwrap()).or_default() += 1;
    }
    eprintln!("tasks per node (first 200): {by_node:?}, peak group concurrency {peak}");
    assert_eq!(by_node.len(), 2, "both nodes claimed work: {by_node:?}");
    let nodes = a.client.nodes().await.unwrap();
    assert_eq!(nodes.len(), 2);
    assert!(nodes.iter().all(|n| {
        n.address
            .as_deref()
            .is_some_and(|a| a.starts_with("http://127.0.0.1:"))
    }));
    drop((a, b));
    schema.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_its_tasks_to_the_survivor() {
    let Some(schema) = Schema::new().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lease = [("DEPUTY_LEASE", "2s")];
    let mut a = node(dir.path(), "a", &schema.url, &lease).await;
    let attempts = dir.path().join("attempts.log");
    let line = format!(
        "echo \"$DEPUTY_TASK_ID $DEPUTY_ATTEMPT\" >> {}; if [ \"$DEPUTY_ATTEMPT\" = 1 ]; then exec sleep 100; fi",
        attempts.display()
    );
    // Only node a runs at first, so its tasks are the ones lost.
    let retried = NewTask {
        max_attempts: Some(2),
        ..sh(&line)
    };
    let t1 = a.client.submit(&retried).await.unwrap().task;
    let t2 = a.client.submit(&retried).await.unwrap().task;
    wait_status(&a.client, t1.id, Status::Running).await;
    wait_status(&a.client, t2.id, Status::Running).await;
    let b = node(dir.path(), "b", &schema.url, &lease).await;
    // A subscriber on the survivor, from before the death to the end.
    let from = b.client.status().await.unwrap().last_event;
    let follower = {
        let c = b.client.clone();
        tokio::spawn(async move {
            let mut s = Box::pin(c.events(None, from));
            let mut seqs = Vec::new();
            let mut finished = 0;
            while let Some(e) = s.next().await {
                let e = e.unwrap();
                seqs.push(e.seq);
                if matches!(e.body, EventBody::TaskFinished { .. }) {
                    finished += 1;
                    if finished == 2 {
                        break;
                    }
                }
            }
            seqs
        })
    };

    a.kill9();
    let killed = Instant::now();
    for id in [t1.id, t2.id] {
        wait_status(&b.client, id, Status::Interrupted).await;
    }
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(2 + 1 + 3),
        "recovered {took:?} after the kill (lease 2 s)"
    );
    for id in [t1.id, t2.id] {
        let t = wait_done(&b.client, id).await;
        assert_eq!((t.status, t.attempt), (Status::Succeeded, 2));
        let detail = b.client.get(&id.to_string()).await.unwrap();
        assert_eq!(detail.attempts[0].status, Status::Interrupted);
        assert!(
            detail.attempts[0]
                .reason
                .as_deref()
                .unwrap()
                .contains("stopped heartbeating")
        );
    }
    let log = std::fs::read_to_string(&attempts).unwrap();
    for id in [t1.id, t2.id] {
        let runs: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with(&id.to_string()))
            .collect();
        assert_eq!(runs.len(), 2, "one run per recorded attempt: {runs:?}");
    }
    let seqs = tokio::time::timeout(DEADLINE, follower)
        .await
        .unwrap()
        .unwrap();
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "the survivor's stream has no gaps");
    }
    // The dead node's orphaned `sleep`s are on this machine: clean them up.
    for id in [t1.id, t2.id] {
        for pid in processes_of(id) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    drop(b);
    schema.drop_now().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_fire_each_tick_of_a_schedule_exactly_once() {
    let Some(schema) = Schema::new().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = node(dir.path(), "a", &schema.url, &[]).await;
    let b = node(dir.path(), "b", &schema.url, &[]).await;
    a.client
        .add_schedule(&crate::schedules::every_second("both", "true"))
        .await
        .unwrap();
    // Watched from the other node: both race for every tick.
    crate::schedules::wait_fired(&b.client, "both", 0, 6).await;
    b.client.pause_schedule("both").await.unwrap();
    let v = a.client.schedule("both").await.unwrap();
    crate::schedules::assert_each_tick_once(&v, 1000);
    let ticks: Vec<i64> = v.runs.iter().rev().map(|r| r.tick).collect();
    assert!(
        ticks.windows(2).all(|w| w[1] - w[0] == 1000),
        "with both nodes up no tick is missed: {ticks:?}"
    );
    let listed = a
        .client
        .list(&[
            ("label", "schedule:both".to_string()),
            ("limit", "1000".to_string()),
        ])
        .await
        .unwrap();
    assert_eq!(
        listed.tasks.len(),
        v.runs.len(),
        "one task per tick, no more"
    );
    drop((a, b));
    schema.drop_now().await;
}
