//! deputy's benchmarks. Each prints its figures and a ratio against a baseline measured
//! in the same run, on the same machine. Run with `cargo bench -p deputy --bench throughput`
//! (optionally naming benchmarks after `--`: `drain`, `submit`, `latency`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use deputy_client::Client;
use deputy_core::submit::NewTask;
use deputy_core::{Command, EventBody};
use deputy_engine::ResourceLimits;
use deputy_server::{Daemon, DaemonConfig};
use futures_util::StreamExt;

async fn daemon(dir: &Path, parallel: usize) -> anyhow::Result<Daemon> {
    let mut cfg = DaemonConfig::new(dir.join("data"));
    cfg.listen = "127.0.0.1:0".parse()?;
    cfg.parallel = parallel;
    cfg.retention = None;
    cfg.resources = ResourceLimits::default();
    cfg.max_body = 64 << 20;
    deputy_server::daemon::start(cfg).await
}

fn task(line: &str) -> NewTask {
    NewTask {
        command: Some(Command::Line(line.into())),
        cwd: Some("/tmp".into()),
        ..NewTask::default()
    }
}

/// Waits until `n` tasks have finished, counting task.finished events after `after`.
async fn wait_finished(client: &Client, after: i64, n: usize) -> anyhow::Result<()> {
    let mut events = Box::pin(client.events(None, after));
    let mut done = 0;
    while done < n {
        let e = events.next().await.context("event stream ended")??;
        if matches!(e.body, EventBody::TaskFinished { .. }) {
            done += 1;
        }
    }
    Ok(())
}

async fn drain() -> anyhow::Result<()> {
    const N: usize = 500;
    println!("== drain: {N} `true` tasks at parallel 2, end to end through the daemon");
    let start = Instant::now();
    let status = std::process::Command::new("sh")
        .args(["-c", "seq 500 | xargs -P2 -n1 sh -c true"])
        .status()?;
    if !status.success() {
        bail!("the xargs baseline failed");
    }
    let xargs = start.elapsed();

    let dir = tempfile::tempdir()?;
    let d = daemon(dir.path(), 2).await?;
    let client = Client::new(d.url());
    let after = client.status().await?.last_event;
    let batch: Vec<NewTask> = (0..N).map(|_| task("true")).collect();
    let start = Instant::now();
    client.submit_batch(&batch).await?;
    wait_finished(&client, after, N).await?;
    let ours = start.elapsed();
    d.stop().await;

    let rate = |d: Duration| N as f64 / d.as_secs_f64();
    println!(
        "  xargs -P2 baseline : {:>8.1} tasks/s ({:.2?})",
        rate(xargs),
        xargs
    );
    println!(
        "  deputy             : {:>8.1} tasks/s ({:.2?})",
        rate(ours),
        ours
    );
    println!(
        "  ratio deputy/xargs time: {:.2}x (aim: within 2x)",
        ours.as_secs_f64() / xargs.as_secs_f64()
    );
    Ok(())
}

async fn submit_scaling() -> anyhow::Result<()> {
    const N: usize = 500;
    const BACKLOG: usize = 10_000;
    println!("== submit: {N} tasks into an empty queue, then into a queue holding {BACKLOG}");
    let dir = tempfile::tempdir()?;
    let d = daemon(dir.path(), 2).await?;
    let client = Client::new(d.url());
    client.pause(None).await?;
    let one = task("true");
    let timed = |client: Client| {
        let one = one.clone();
        async move {
            let start = Instant::now();
            for _ in 0..N {
                client.submit(&one).await?;
            }
            anyhow::Ok(start.elapsed())
        }
    };
    let empty = timed(client.clone()).await?;
    let fill: Vec<NewTask> = (0..1000).map(|_| task("true")).collect();
    for _ in 0..BACKLOG / 1000 {
        client.submit_batch(&fill).await?;
    }
    let full = timed(client.clone()).await?;
    d.stop().await;
    println!(
        "  into an empty queue   : {:.2?} ({:.0} submits/s)",
        empty,
        N as f64 / empty.as_secs_f64()
    );
    println!(
        "  into {BACKLOG} queued : {:.2?} ({:.0} submits/s)",
        full,
        N as f64 / full.as_secs_f64()
    );
    println!(
        "  ratio full/empty: {:.2} (aim: <= 1.1)",
        full.as_secs_f64() / empty.as_secs_f64()
    );
    Ok(())
}

async fn latency() -> anyhow::Result<()> {
    const N: usize = 200;
    println!("== latency: submit to process start, {N} tasks on an idle daemon");
    let dir = tempfile::tempdir()?;
    let fifo = dir.path().join("started");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status()?;
    if !made.success() {
        bail!("mkfifo failed");
    }
    // A reader thread timestamps each line a task writes as its first act.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let reader_path = fifo.clone();
    std::thread::spawn(move || {
        loop {
            let Ok(f) = std::fs::File::open(&reader_path) else {
                return;
            };
            for line in BufReader::new(f).lines() {
                if line.is_err() || tx.send(Instant::now()).is_err() {
                    return;
                }
            }
        }
    });
    let d = daemon(dir.path(), 2).await?;
    let client = Client::new(d.url());
    let line = format!("echo started > {}", fifo.display());
    let mut samples = Vec::with_capacity(N);
    let mut acks = Vec::with_capacity(N);
    for _ in 0..N {
        let after = client.status().await?.last_event;
        let start = Instant::now();
        client.submit(&task(&line)).await?;
        acks.push(start.elapsed());
        let started = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .context("a task did not start within 10 s")?
            .context("fifo reader stopped")?;
        samples.push(started - start);
        wait_finished(&client, after, 1).await?;
    }
    d.stop().await;

    // Baseline: the same shell line started directly, no daemon.
    let mut direct = Vec::with_capacity(N);
    for _ in 0..N {
        let start = Instant::now();
        let mut child = std::process::Command::new("sh")
            .args(["-c", &line])
            .spawn()?;
        let started = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .context("baseline did not start")?
            .context("fifo reader stopped")?;
        direct.push(started - start);
        child.wait()?;
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
    };
    let (p50, p99) = (pct(&mut samples, 0.50), pct(&mut samples, 0.99));
    let (b50, b99) = (pct(&mut direct, 0.50), pct(&mut direct, 0.99));
    let (a50, a99) = (pct(&mut acks, 0.50), pct(&mut acks, 0.99));
    println!(
        "  submit acknowledged (HTTP round trip, task committed): p50 {a50:.2?}  p99 {a99:.2?}"
    );
    println!("  sh -c directly : p50 {b50:.2?}  p99 {b99:.2?}");
    println!("  through deputy : p50 {p50:.2?}  p99 {p99:.2?} (aim: p50 <= 2 ms)");
    println!(
        "  deputy's own share of p50: {:.2?} ({:.1}x the direct start)",
        p50.saturating_sub(b50),
        p50.as_secs_f64() / b50.as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; every other argument names a benchmark.
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    if cfg!(debug_assertions) {
        println!("(debug build: run with --release for meaningful figures)");
    }
    if run("drain") {
        drain().await?;
    }
    if run("submit") {
        submit_scaling().await?;
    }
    if run("latency") {
        latency().await?;
    }
    Ok(())
}
