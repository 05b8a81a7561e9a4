//! `deputy demo`: a daemon on a temporary SQLite database, a small DAG of shell tasks,
//! their progress live, and the outcome. It exercises priorities, a dependency, a
//! failure that is retried, a timeout, and a dependent cancelled by a failed dependency.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use deputy_client::Client;
use deputy_core::submit::{DepInput, DepTarget, DurationInput, NewTask, TimeoutInput};
use deputy_core::time::now_ms;
use deputy_core::{Command, DepMode, EventBody, Priority, Status, TaskId};
use deputy_engine::ResourceLimits;
use deputy_server::DaemonConfig;
use futures_util::StreamExt;

use crate::cli::Command as CliCommand;
use crate::render;

fn shell(key: &str, name: &str, line: &str) -> NewTask {
    NewTask {
        key: Some(key.into()),
        name: Some(name.into()),
        command: Some(Command::Line(line.into())),
        labels: vec!["demo".into()],
        ..NewTask::default()
    }
}

fn after(key: &str, mode: DepMode) -> DepInput {
    DepInput {
        target: DepTarget::Key(key.into()),
        mode,
    }
}

pub async fn run(cmd: CliCommand) -> anyhow::Result<u8> {
    let CliCommand::Demo(args) = cmd else {
        unreachable!()
    };
    let dir = tempfile::Builder::new().prefix("deputy-demo-").tempdir()?;
    let mut cfg = DaemonConfig::new(dir.path().join("data"));
    cfg.listen = "127.0.0.1:0".parse()?;
    cfg.parallel = 2;
    cfg.kill_grace = Duration::from_secs(1);
    cfg.shutdown_grace = Duration::from_secs(5);
    cfg.retention = None;
    cfg.resources = ResourceLimits::default();
    let daemon = deputy_server::daemon::start(cfg)
        .await
        .context("starting the demo daemon")?;
    println!(
        "deputy demo: daemon on {} with SQLite in {}",
        daemon.url(),
        dir.path().display()
    );
    println!("parallel limit 2; tasks and their events follow.\n");
    let client = Client::new(daemon.url());

    let marker = dir.path().join("flaky.mark");
    let mut tasks = vec![
        NewTask {
            priority: Some(Priority::P1),
            ..shell(
                "prepare",
                "prepare",
                "echo 'preparing inputs'; sleep 0.4; echo 'inputs ready'",
            )
        },
        shell(
            "build",
            "build",
            "for unit in core store engine; do echo \"compiling $unit\"; sleep 0.2; done",
        ),
        NewTask {
            max_attempts: Some(3),
            backoff: Some(DurationInput(300)),
            env: [("MARK".to_string(), marker.display().to_string())].into(),
            ..shell(
                "upload",
                "flaky-upload",
                "if [ -e \"$MARK\" ]; then echo 'uploaded'; else touch \"$MARK\"; echo 'network blip, will retry' >&2; exit 1; fi",
            )
        },
        NewTask {
            timeout: Some(TimeoutInput::Millis(1000)),
            ..shell(
                "hung",
                "hung-service",
                "echo 'waiting for a service that never answers'; sleep 60",
            )
        },
        shell("report", "report", "echo 'all required steps done'"),
        shell(
            "publish",
            "publish",
            "echo 'this never runs: its dependency timed out'",
        ),
        NewTask {
            priority: Some(Priority::P0),
            ..shell(
                "urgent",
                "urgent-check",
                "echo 'P0: runs before everything queued'",
            )
        },
    ];
    tasks[1].depends_on = vec![after("prepare", DepMode::Success)];
    tasks[4].depends_on = vec![
        after("build", DepMode::Success),
        after("upload", DepMode::Success),
        after("hung", DepMode::Finish),
    ];
    tasks[5].depends_on = vec![after("hung", DepMode::Success)];

    let snapshot = client.status().await?.last_event;
    // Pause while submitting so priorities decide the order, not submission timing.
    client.pause(None).await?;
    let submitted = client.submit_batch(&tasks).await?;
    let names: HashMap<TaskId, String> = submitted
        .tasks
        .iter()
        .map(|s| (s.task.id, s.task.spec.title()))
        .collect();
    client.resume(None).await?;

    let start = now_ms();
    let mut pending: std::collections::HashSet<TaskId> = names.keys().copied().collect();
    let mut events = Box::pin(client.events(None, snapshot));
    let width = names.values().map(String::len).max().unwrap_or(8);
    while let Some(ev) = events.next().await {
        let ev = ev?;
        let Some(id) = ev.task else { continue };
        let Some(name) = names.get(&id) else { continue };
        let t = format!("{:>6.2}s", (ev.at - start).max(0) as f64 / 1000.0);
        match &ev.body {
            EventBody::TaskStatus {
                from,
                to,
                attempt,
                reason,
                ..
            } => {
                let extra = reason
                    .as_deref()
                    .map(|r| format!("  ({r})"))
                    .unwrap_or_default();
                let att = if *attempt > 1 {
                    format!(" [attempt {attempt}]")
                } else {
                    String::new()
                };
                println!("{t}  {name:<width$}  {from} -> {to}{att}{extra}");
            }
            EventBody::TaskOutput {
                data: Some(d),
                stream,
                ..
            } => {
                for line in d.lines() {
                    let tag = if *stream == deputy_core::Stream::Stderr {
                        "!"
                    } else {
                        "|"
                    };
                    println!("{t}  {name:<width$}  {tag} {line}");
                }
            }
            EventBody::TaskFinished { .. } => {
                pending.remove(&id);
                if pending.is_empty() {
                    break;
                }
            }
            _ => {}
        }
    }

    drop(events);
    println!("\noutcome:");
    let mut finals = Vec::new();
    for s in &submitted.tasks {
        finals.push(client.get(&s.task.id.to_string()).await?.task);
    }
    print!("{}", render::task_rows(&finals));
    let expect = |name: &str| -> Status {
        match name {
            "hung-service" => Status::TimedOut,
            "publish" => Status::Cancelled,
            _ => Status::Succeeded,
        }
    };
    let as_expected = finals.iter().all(|t| t.status == expect(&t.spec.title()));
    daemon.stop().await;
    if args.keep {
        let kept = dir.keep();
        println!("\ndata kept in {}", kept.display());
    }
    if as_expected {
        println!(
            "\nevery task ended as expected: retries, the timeout and the dependency rules worked."
        );
        Ok(0)
    } else {
        println!("\nsome tasks did not end as expected (see above).");
        Ok(1)
    }
}
