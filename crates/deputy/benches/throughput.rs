//! deputy's benchmarks. Each prints its figures and a ratio against a baseline measured
//! in the same run, on the same machine. Run with `cargo bench -p deputy --bench throughput`
//! (optionally naming benchmarks after `--`: `drain`, `submit`, `latency`, `list`, `nodes`, `fanout`;
//! `BENCH_PARALLEL=N` sets the nodes benchmark's parallel limit per node, 16 by default).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use deputy_client::Client;
use deputy_core::submit::NewTask;
use deputy_core::{Command, EventBody, TaskId};
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
    let meter = CpuMeter::start(&[]);
    let start = Instant::now();
    let status = std::process::Command::new("sh")
        .args(["-c", "seq 500 | xargs -P2 -n1 sh -c true"])
        .status()?;
    if !status.success() {
        bail!("the xargs baseline failed");
    }
    let xargs = start.elapsed();
    let xargs_cpu = meter.report(N);

    let dir = tempfile::tempdir()?;
    let d = daemon(dir.path(), 2).await?;
    let client = Client::new(d.url());
    let after = client.status().await?.last_event;
    let batch: Vec<NewTask> = (0..N).map(|_| task("true")).collect();
    let meter = CpuMeter::start(&[("daemon and client", std::process::id())]);
    let start = Instant::now();
    client.submit_batch(&batch).await?;
    wait_finished(&client, after, N).await?;
    let ours = start.elapsed();
    let ours_cpu = meter.report(N);
    d.stop().await;

    let rate = |d: Duration| N as f64 / d.as_secs_f64();
    println!(
        "  xargs -P2 baseline : {:>8.1} tasks/s ({:.2?})",
        rate(xargs),
        xargs
    );
    println!("    {xargs_cpu}");
    println!(
        "  deputy             : {:>8.1} tasks/s ({:.2?})",
        rate(ours),
        ours
    );
    println!("    {ours_cpu}");
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

/// Counts SSE frames in a byte stream (lines starting `id:`), across chunk boundaries.
#[derive(Default)]
struct FrameCounter {
    at_line_start: bool,
    partial: Vec<u8>,
    frames: usize,
}

impl FrameCounter {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.partial.clear();
                self.at_line_start = true;
                continue;
            }
            if self.at_line_start || !self.partial.is_empty() {
                self.partial.push(b);
                if self.partial.len() == 3 {
                    if self.partial == b"id:" {
                        self.frames += 1;
                    }
                    self.partial.clear();
                }
            }
            self.at_line_start = b == b'\n';
        }
    }
}

/// CPU time used during a run, read from `/proc` (in USER_HZ ticks, 100 a second on
/// Linux): the whole machine's busy time, and the named processes' own. It shows what a
/// task costs in CPU, and so the most tasks per second the machine's cores allow.
struct CpuMeter {
    machine: u64,
    processes: Vec<(String, u32, u64)>,
}

const TICKS_PER_SECOND: f64 = 100.0;

/// The machine's busy ticks: every CPU field of `/proc/stat`'s first line except idle and iowait.
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum()
}

/// A process's user + system ticks, its children's not included.
fn process_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; fields after it start past its ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    field(11) + field(12)
}

impl CpuMeter {
    fn start(processes: &[(&str, u32)]) -> Self {
        CpuMeter {
            machine: machine_busy_ticks(),
            processes: processes
                .iter()
                .map(|(name, pid)| (name.to_string(), *pid, process_ticks(*pid)))
                .collect(),
        }
    }

    /// CPU per task (µs) for the machine and each process, and the rate 2 busy cores would
    /// allow at that cost.
    fn report(&self, tasks: usize) -> String {
        let per_task = |ticks: u64| ticks as f64 / TICKS_PER_SECOND * 1e6 / tasks as f64;
        let machine = per_task(machine_busy_ticks().saturating_sub(self.machine));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let own: Vec<String> = self
            .processes
            .iter()
            .map(|(name, pid, before)| {
                let used = per_task(process_ticks(*pid).saturating_sub(*before));
                format!("{name} {used:.0}")
            })
            .collect();
        let own = if own.is_empty() {
            String::new()
        } else {
            format!(" ({})", own.join(", "))
        };
        format!(
            "CPU per task {machine:.0} µs on the machine{own}: {cores:.0} cores allow at most {:.0} tasks/s at that cost",
            cores * 1e6 / machine.max(1.0)
        )
    }
}

/// A daemon as a child process, so its own peak memory can be read.
struct ChildDaemon {
    child: std::process::Child,
    url: String,
}

impl ChildDaemon {
    async fn start(dir: &Path, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let data = dir.join("data");
        let cfg = dir.join("config.toml");
        std::fs::write(&cfg, "")?;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_deputy"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("DEPUTY_CONFIG", &cfg)
            .env("DEPUTY_MIN_FREE_MEMORY", "off")
            .env("DEPUTY_MAX_CPU_PERCENT", "off")
            .env("DEPUTY_LOG", "warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(info) = deputy_server::daemon::read_info(&data) {
                return Ok(Self {
                    child,
                    url: info.url,
                });
            }
            if Instant::now() > deadline {
                bail!("the daemon did not start");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn peak_rss_mib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kb| kb / 1024)
    }
}

impl Drop for ChildDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens `n` streams of one task's events and counts each one's frames to its end.
fn subscribe(
    url: &str,
    task: TaskId,
    n: usize,
) -> Vec<tokio::task::JoinHandle<anyhow::Result<usize>>> {
    let http = reqwest::Client::new();
    (0..n)
        .map(|_| {
            let req = http.get(format!("{url}/v1/tasks/{task}/events"));
            tokio::spawn(async move {
                let resp = req.send().await?;
                let mut body = resp.bytes_stream();
                let mut counter = FrameCounter {
                    at_line_start: true,
                    ..FrameCounter::default()
                };
                while let Some(chunk) = body.next().await {
                    counter.feed(&chunk?);
                }
                anyhow::Ok(counter.frames)
            })
        })
        .collect()
}

/// Waits for every stream; all must have seen the same number of events.
async fn joined(
    handles: Vec<tokio::task::JoinHandle<anyhow::Result<usize>>>,
) -> anyhow::Result<usize> {
    let mut frames = None;
    for h in handles {
        let n = h.await??;
        if frames.is_some_and(|f| f != n) {
            bail!("subscribers received different numbers of events ({n} vs {frames:?})");
        }
        frames = Some(n);
    }
    Ok(frames.unwrap_or(0))
}

async fn wait_subscribers(url: &str, n: usize) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let want = format!("deputy_sse_subscribers {n}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = http
            .get(format!("{url}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        if m.lines().any(|l| l == want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("subscribers did not connect");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn fanout() -> anyhow::Result<()> {
    const SUBSCRIBERS: usize = 1000;
    const LINES: usize = 10_000;
    println!("== fanout: {SUBSCRIBERS} SSE subscribers on one task emitting about {LINES} events");
    // Output is flushed on every read, and the task writes one line per millisecond, so
    // nearly every line becomes its own event.
    let env = [
        ("DEPUTY_OUTPUT_FLUSH_INTERVAL", "0ms"),
        ("DEPUTY_PARALLEL", "1"),
    ];
    let dir = tempfile::tempdir()?;
    let d = ChildDaemon::start(dir.path(), &env).await?;
    let client = Client::new(d.url.clone());
    client.pause(None).await?;
    let line = format!(
        "perl -e 'use Time::HiRes qw(usleep); $| = 1; for my $i (1..{LINES}) {{ print \"event $i\\n\"; usleep(1000) }}'"
    );
    let t = client.submit(&task(&line)).await?.task;

    // Live: every subscriber follows the task while it runs.
    let live = subscribe(&d.url, t.id, SUBSCRIBERS);
    wait_subscribers(&d.url, SUBSCRIBERS).await?;
    let start = Instant::now();
    client.resume(None).await?;
    let live_events = joined(live).await?;
    let live_total = start.elapsed();
    let detail = client.get(&t.id.to_string()).await?.task;
    let ran = Duration::from_millis(
        (detail.finished_at.unwrap_or(0) - detail.started_at.unwrap_or(0)).max(0) as u64,
    );

    // Replay: the same stream from the log, to a new set of subscribers at once.
    let start = Instant::now();
    let replay_events = joined(subscribe(&d.url, t.id, SUBSCRIBERS)).await?;
    let replay = start.elapsed();
    let one_start = Instant::now();
    joined(subscribe(&d.url, t.id, 1)).await?;
    let one = one_start.elapsed();
    let rss = d.peak_rss_mib();

    println!(
        "  live  : {live_events} events to each of {SUBSCRIBERS} subscribers; all delivered {live_total:.2?} after start (the task itself ran {ran:.2?})"
    );
    println!(
        "  replay: {replay_events} events to each of {SUBSCRIBERS} subscribers in {replay:.2?} ({:.0} deliveries/s); one subscriber alone: {one:.2?}",
        (replay_events * SUBSCRIBERS) as f64 / replay.as_secs_f64()
    );
    println!(
        "  ratio replay {SUBSCRIBERS} / 1 subscriber: {:.1}x",
        replay.as_secs_f64() / one.as_secs_f64()
    );
    println!("  daemon peak RSS: {rss} MiB (aim: delivery <= 10 s, RSS <= 200 MB)");
    Ok(())
}

async fn listing() -> anyhow::Result<()> {
    const TASKS: usize = 100_000;
    println!("== list: filtered listing with {TASKS} tasks stored");
    let dir = tempfile::tempdir()?;
    let d = daemon(dir.path(), 2).await?;
    let client = Client::new(d.url());
    client.pause(None).await?;
    client.add_group("rare", None).await?;
    let start = Instant::now();
    for b in 0..TASKS / 1000 {
        let batch: Vec<NewTask> = (0..1000)
            .map(|i| {
                let mut t = task("true");
                t.name = Some(format!("job-{b}-{i}"));
                if i == 0 {
                    t.labels = vec!["needle".into()];
                    t.group = Some("rare".into());
                }
                t
            })
            .collect();
        client.submit_batch(&batch).await?;
    }
    println!("  stored {TASKS} tasks in {:.2?}", start.elapsed());
    let queries: [(&str, Vec<(&str, String)>); 6] = [
        ("newest 100", vec![]),
        ("status=queued", vec![("status", "queued".into())]),
        ("group=rare (1 in 1000)", vec![("group", "rare".into())]),
        ("label=needle (1 in 1000)", vec![("label", "needle".into())]),
        ("text job-99-", vec![("q", "job-99-".into())]),
        ("status=failed (none)", vec![("status", "failed".into())]),
    ];
    for (name, q) in queries {
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..20 {
            let t = Instant::now();
            n = client.list(&q).await?.tasks.len();
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "  {name:<26}: {n:>3} tasks, p50 {:.2?}",
            times[times.len() / 2]
        );
    }
    d.stop().await;
    Ok(())
}

fn noop() -> NewTask {
    NewTask {
        kind: Some("noop".into()),
        ..NewTask::default()
    }
}

/// Submits `n` noop tasks to the first node and waits until all finished.
async fn drain_noops(urls: &[String], n: usize) -> anyhow::Result<Duration> {
    let client = Client::new(urls[0].clone());
    let after = client.status().await?.last_event;
    let batch: Vec<NewTask> = (0..1000.min(n)).map(|_| noop()).collect();
    let start = Instant::now();
    // Every task, the last batch short when n is not a multiple of the batch.
    let mut left = n;
    while left > 0 {
        let take = left.min(batch.len());
        client.submit_batch(&batch[..take]).await?;
        left -= take;
    }
    wait_finished(&client, after, n).await?;
    Ok(start.elapsed())
}

/// The daemon's group commit so far.
#[derive(Clone, Copy, Default)]
struct Writes {
    writes: u64,
    batches: u64,
    /// Seconds inside those transactions (on PostgreSQL, holding the write lock).
    busy: f64,
}

impl std::ops::Add for Writes {
    type Output = Writes;
    fn add(self, o: Writes) -> Writes {
        Writes {
            writes: self.writes + o.writes,
            batches: self.batches + o.batches,
            busy: self.busy + o.busy,
        }
    }
}

async fn write_counts(url: &str) -> anyhow::Result<Writes> {
    let text = reqwest::get(format!("{url}/metrics")).await?.text().await?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(Writes {
        writes: value("deputy_store_writes_total") as u64,
        batches: value("deputy_store_write_batches_total") as u64,
        busy: value("deputy_store_write_seconds_total"),
    })
}

/// Writes per transaction, and how long the transactions were open (`wall`: the run's
/// duration; busy / wall near 100% across nodes means the write lock is the limit).
fn per_batch(w: Writes, wall: Duration) -> String {
    format!(
        "{} writes in {} transactions ({:.1} per transaction, {:.2} ms each, open {:.0}% of the run)",
        w.writes,
        w.batches,
        w.writes as f64 / w.batches.max(1) as f64,
        w.busy * 1e3 / w.batches.max(1) as f64,
        100.0 * w.busy / wall.as_secs_f64()
    )
}

async fn pg_schema(url: &str, name: &str) -> anyhow::Result<String> {
    // The bench talks to PostgreSQL only through deputy; psql makes its schema.
    let status = std::process::Command::new("psql")
        .arg(url)
        .args(["-qc", &format!("SET client_min_messages = warning; DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}")])
        .status()
        .context("psql is needed to prepare the benchmark's schema")?;
    if !status.success() {
        bail!("psql could not create schema {name}");
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{sep}options=-c%20search_path%3D{name}"))
}

async fn cluster() -> anyhow::Result<()> {
    // BENCH_TASKS sets how many tasks each run drains (20,000 unless set: a run of a
    // second or more, so one slow moment of the machine moves the rate little).
    let n: usize = match std::env::var("BENCH_TASKS") {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .context("BENCH_TASKS must be a positive number of tasks")?,
        Err(_) => 20_000,
    };
    // BENCH_PARALLEL sets each node's parallel limit (16 unless set).
    let par = std::env::var("BENCH_PARALLEL").unwrap_or_else(|_| "16".into());
    println!("== nodes: {n} noop tasks (no process) through the queue, parallel {par} per node");
    let env = [("DEPUTY_PARALLEL", par.as_str())];
    let dir = tempfile::tempdir()?;
    let one = ChildDaemon::start(&dir.path().join("sqlite"), &env).await?;
    let meter = CpuMeter::start(&[
        ("daemon", one.child.id()),
        ("bench client", std::process::id()),
    ]);
    let sqlite = drain_noops(std::slice::from_ref(&one.url), n).await?;
    let sqlite_cpu = meter.report(n);
    let sqlite_writes = write_counts(&one.url).await?;
    drop(one);
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "  SQLite, 1 node      : {:>8.0} tasks/s ({sqlite:.2?}); {}",
        rate(sqlite),
        per_batch(sqlite_writes, sqlite)
    );
    println!("    {sqlite_cpu}");
    let Ok(pg) = std::env::var("DEPUTY_TEST_DATABASE_URL") else {
        println!("  PostgreSQL: skipped (set DEPUTY_TEST_DATABASE_URL to measure it)");
        return Ok(());
    };
    let url = pg_schema(&pg, "deputy_bench_one").await?;
    let db = [
        ("DEPUTY_PARALLEL", par.as_str()),
        ("DEPUTY_DATABASE", url.as_str()),
    ];
    let a = ChildDaemon::start(&dir.path().join("pg1"), &db).await?;
    let meter = CpuMeter::start(&[
        ("daemon", a.child.id()),
        ("bench client", std::process::id()),
    ]);
    let pg1 = drain_noops(std::slice::from_ref(&a.url), n).await?;
    let pg1_cpu = meter.report(n);
    let pg1_writes = write_counts(&a.url).await?;
    drop(a);
    let url = pg_schema(&pg, "deputy_bench_two").await?;
    let db = [
        ("DEPUTY_PARALLEL", par.as_str()),
        ("DEPUTY_DATABASE", url.as_str()),
    ];
    let a = ChildDaemon::start(&dir.path().join("pg2a"), &db).await?;
    let b = ChildDaemon::start(&dir.path().join("pg2b"), &db).await?;
    let meter = CpuMeter::start(&[
        ("daemon a", a.child.id()),
        ("daemon b", b.child.id()),
        ("bench client", std::process::id()),
    ]);
    let pg2 = drain_noops(&[a.url.clone(), b.url.clone()], n).await?;
    let pg2_cpu = meter.report(n);
    let pg2_writes = write_counts(&a.url).await? + write_counts(&b.url).await?;
    drop((a, b));
    println!(
        "  PostgreSQL, 1 node  : {:>8.0} tasks/s ({pg1:.2?}); {}",
        rate(pg1),
        per_batch(pg1_writes, pg1)
    );
    println!("    {pg1_cpu}; the rest is mostly PostgreSQL");
    println!(
        "  PostgreSQL, 2 nodes : {:>8.0} tasks/s ({pg2:.2?}); {}",
        rate(pg2),
        per_batch(pg2_writes, pg2)
    );
    println!("    {pg2_cpu}; the rest is mostly PostgreSQL");
    println!(
        "  ratio PostgreSQL 2 nodes / 1 node: {:.2}x; PostgreSQL 1 node / SQLite: {:.2}x (aim: >= 20k/s SQLite, >= 5k/s PostgreSQL)",
        rate(pg2) / rate(pg1),
        rate(pg1) / rate(sqlite)
    );
    for name in ["deputy_bench_one", "deputy_bench_two"] {
        let _ = std::process::Command::new("psql")
            .arg(&pg)
            .args([
                "-qc",
                &format!("SET client_min_messages = warning; DROP SCHEMA IF EXISTS {name} CASCADE"),
            ])
            .status();
    }
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
    if run("list") {
        listing().await?;
    }
    if run("nodes") {
        cluster().await?;
    }
    if run("fanout") {
        fanout().await?;
    }
    Ok(())
}
