//! Shared test helpers.

use std::collections::HashMap;
use std::time::Duration;

use deputy_client::Client;
use deputy_core::api::SubmitResult;
use deputy_core::submit::NewTask;
use deputy_core::{Command, Event, EventBody, Status, Task, TaskId};
use deputy_engine::ResourceLimits;
use deputy_server::{Daemon, DaemonConfig};
use futures_util::StreamExt;

pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct TestDaemon {
    pub daemon: Option<Daemon>,
    pub client: Client,
    pub dir: tempfile::TempDir,
    pg_schema: Option<String>,
}

/// With `DEPUTY_TEST_BACKEND=postgres` (and `DEPUTY_TEST_DATABASE_URL`), the engine tests run
/// their daemons on PostgreSQL, each in its own schema; otherwise on SQLite.
pub fn postgres_backend() -> Option<String> {
    let wanted = std::env::var("DEPUTY_TEST_BACKEND").is_ok_and(|b| b == "postgres");
    if !wanted {
        return None;
    }
    Some(
        std::env::var("DEPUTY_TEST_DATABASE_URL")
            .expect("DEPUTY_TEST_BACKEND=postgres needs DEPUTY_TEST_DATABASE_URL"),
    )
}

/// A stopped daemon's data, removed on drop.
pub struct Stopped {
    pub dir: tempfile::TempDir,
    schema: Option<String>,
}

impl Stopped {
    /// The store the daemon used, opened directly.
    pub async fn open_store(&self) -> std::sync::Arc<dyn deputy_store::Store> {
        match (postgres_backend(), &self.schema) {
            (Some(base), Some(schema)) => std::sync::Arc::new(
                deputy_store::postgres::PgStore::open(&schema_url(&base, schema))
                    .await
                    .unwrap(),
            ),
            _ => std::sync::Arc::new(
                deputy_store::sqlite::SqliteStore::open(
                    &self.dir.path().join("data").join("deputy.db"),
                )
                .await
                .unwrap(),
            ),
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let (Some(schema), Some(base)) = (self.schema.take(), postgres_backend()) {
            psql(&base, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        }
    }
}

/// The store of a `ChildDaemon`'s data dir, opened directly (the daemon must be stopped).
pub async fn open_store_of(data_dir: &std::path::Path) -> std::sync::Arc<dyn deputy_store::Store> {
    match postgres_backend() {
        Some(base) => std::sync::Arc::new(
            deputy_store::postgres::PgStore::open(&schema_url(&base, &schema_for(data_dir)))
                .await
                .unwrap(),
        ),
        None => std::sync::Arc::new(
            deputy_store::sqlite::SqliteStore::open(&data_dir.join("deputy.db"))
                .await
                .unwrap(),
        ),
    }
}

/// Runs one SQL statement on the test database with psql (no pool to manage in Drop).
fn psql(url: &str, statement: &str) {
    let _ = std::process::Command::new("psql")
        .arg(url)
        .args([
            "-qc",
            &format!("SET client_min_messages = warning; {statement}"),
        ])
        .status();
}

/// Creates `schema` and returns a URL whose connections use it.
fn schema_url(base: &str, schema: &str) -> String {
    psql(base, &format!("CREATE SCHEMA IF NOT EXISTS {schema}"));
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

/// A schema name that is the same for the same data dir (a restarted daemon finds its
/// database again) and different across tests.
fn schema_for(data_dir: &std::path::Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut h);
    format!("deputy_it_{:016x}", h.finish())
}

impl TestDaemon {
    pub async fn start(parallel: usize) -> Self {
        Self::start_with(parallel, |_| {}).await
    }

    pub async fn start_with(parallel: usize, tweak: impl FnOnce(&mut DaemonConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = DaemonConfig::new(dir.path().join("data"));
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.parallel = parallel;
        cfg.kill_grace = Duration::from_secs(2);
        cfg.shutdown_grace = Duration::from_secs(5);
        cfg.retention = None;
        cfg.resources = ResourceLimits::default();
        let pg_schema = postgres_backend().map(|base| {
            let schema = schema_for(dir.path());
            cfg.database = Some(schema_url(&base, &schema));
            schema
        });
        tweak(&mut cfg);
        let daemon = deputy_server::daemon::start(cfg).await.unwrap();
        let client = Client::new(daemon.url());
        Self {
            daemon: Some(daemon),
            client,
            dir,
            pg_schema,
        }
    }

    pub fn url(&self) -> String {
        self.client.base().to_string()
    }

    pub async fn submit(&self, t: NewTask) -> Task {
        self.client.submit(&t).await.unwrap().task
    }

    /// Stops the daemon gracefully; its data (dir, and schema on PostgreSQL) stays until
    /// the returned guard drops.
    pub async fn stop(mut self) -> Stopped {
        if let Some(d) = self.daemon.take() {
            d.stop().await;
        }
        Stopped {
            schema: self.pg_schema.take(),
            dir: self.dir,
        }
    }

    /// All events in the log, oldest first.
    pub async fn events(&self) -> Vec<Event> {
        collect_events(&self.client).await
    }
}

pub fn sh(line: &str) -> NewTask {
    NewTask {
        command: Some(Command::Line(line.to_string())),
        cwd: Some(std::env::temp_dir().display().to_string()),
        ..NewTask::default()
    }
}

/// Reads the whole event log through the API's replay (the all-events stream, until the
/// daemon's last event at the time of the call).
pub async fn collect_events(client: &Client) -> Vec<Event> {
    let last = client.status().await.unwrap().last_event;
    let mut out = Vec::new();
    if last == 0 {
        return out;
    }
    let mut s = Box::pin(client.events(None, 0));
    while let Some(e) = tokio::time::timeout(DEADLINE, s.next())
        .await
        .expect("event log replay stalled")
    {
        let e = e.unwrap();
        let seq = e.seq;
        out.push(e);
        if seq >= last {
            break;
        }
    }
    out
}

/// Waits (with a deadline) until `id` has ended for good.
pub async fn wait_done(client: &Client, id: TaskId) -> Task {
    let mut s = Box::pin(client.events(Some(id.to_string()), 0));
    tokio::time::timeout(DEADLINE, async {
        while let Some(e) = s.next().await {
            if let EventBody::TaskFinished { .. } = e.unwrap().body {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("task {id} did not finish within {DEADLINE:?}"));
    client.get(&id.to_string()).await.unwrap().task
}

/// Waits for the end of attempt `attempt` of `id`. Opened after the retry, the task's
/// stream replays the earlier attempts' ends and goes on to this one's.
pub async fn wait_attempt_done(client: &Client, id: TaskId, attempt: u32) -> Task {
    let mut s = Box::pin(client.events(Some(id.to_string()), 0));
    tokio::time::timeout(DEADLINE, async {
        while let Some(e) = s.next().await {
            if let EventBody::TaskFinished { attempt: a, .. } = e.unwrap().body
                && a >= attempt
            {
                return;
            }
        }
        panic!("the stream of {id} ended before attempt {attempt} finished");
    })
    .await
    .unwrap_or_else(|_| panic!("attempt {attempt} of {id} did not finish within {DEADLINE:?}"));
    client.get(&id.to_string()).await.unwrap().task
}

/// Waits until `id` reaches `status` (seen in its event stream).
pub async fn wait_status(client: &Client, id: TaskId, status: Status) {
    let mut s = Box::pin(client.events(Some(id.to_string()), 0));
    tokio::time::timeout(DEADLINE, async {
        while let Some(e) = s.next().await {
            if let EventBody::TaskStatus { to, .. } = e.unwrap().body
                && to == status
            {
                return;
            }
        }
        panic!("stream of {id} ended before it reached {status}");
    })
    .await
    .unwrap_or_else(|_| panic!("task {id} did not reach {status} within {DEADLINE:?}"));
}

/// Waits until the task's output contains `needle`.
pub async fn wait_output(client: &Client, id: TaskId, needle: &str) -> String {
    let mut s = Box::pin(client.events(Some(id.to_string()), 0));
    let mut seen = String::new();
    tokio::time::timeout(DEADLINE, async {
        while let Some(e) = s.next().await {
            if let EventBody::TaskOutput { data: Some(d), .. } = e.unwrap().body {
                seen.push_str(&d);
                if seen.contains(needle) {
                    return;
                }
            }
        }
        panic!("task {id} ended without printing {needle:?}; it printed {seen:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("task {id} did not print {needle:?} within {DEADLINE:?}"));
    seen
}

/// Index of each task's events of a kind, by seq.
pub fn status_seqs(events: &[Event]) -> HashMap<(TaskId, Status), i64> {
    let mut m = HashMap::new();
    for e in events {
        if let (Some(t), EventBody::TaskStatus { to, .. }) = (e.task, &e.body) {
            m.entry((t, *to)).or_insert(e.seq);
        }
    }
    m
}

pub fn created(r: &SubmitResult) -> TaskId {
    r.task.id
}

/// Whether a process is alive (not a zombie).
pub fn alive(pid: i32) -> bool {
    deputy_engine::procfs::read_stat(pid).is_some_and(|p| p.is_alive())
}

/// Live processes carrying a task's marker in their environment.
pub fn processes_of(task: TaskId) -> Vec<i32> {
    let marker = task.to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| alive(pid) && deputy_engine::procfs::has_task_marker(pid, &marker))
        .collect()
}

/// Waits (bounded) for a condition that changes outside our control, like a process
/// exiting after SIGKILL. Checks on a short timer; used only where no event exists.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let check = async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(DEADLINE, check)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"));
}

/// A daemon as a real child process (`deputy serve`), for tests that kill it.
pub struct ChildDaemon {
    pub child: std::process::Child,
    pub client: Client,
    pg_schema: Option<String>,
}

impl ChildDaemon {
    pub async fn spawn(data_dir: &std::path::Path, extra_env: &[(&str, &str)]) -> Self {
        let info = data_dir.join("daemon.json");
        let _ = std::fs::remove_file(&info);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_deputy"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("DEPUTY_MIN_FREE_MEMORY", "off")
            .env("DEPUTY_MAX_CPU_PERCENT", "off")
            .env("DEPUTY_KILL_GRACE", "1s")
            .env("DEPUTY_LOG", "warn")
            .stdin(std::process::Stdio::null());
        if let Some(base) = postgres_backend() {
            cmd.env("DEPUTY_DATABASE", schema_url(&base, &schema_for(data_dir)));
        }
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        // The named config file does not exist; point at an empty one instead.
        let cfg = data_dir.with_extension("config.toml");
        std::fs::create_dir_all(data_dir.parent().unwrap()).unwrap();
        std::fs::write(&cfg, "").unwrap();
        cmd.env("DEPUTY_CONFIG", &cfg);
        // Its log, for tests that read it (see `log_path`).
        let log = std::fs::File::create(data_dir.with_extension("log")).unwrap();
        cmd.stderr(log);
        let mut child = cmd.spawn().unwrap();
        let mut url = None;
        eventually("the daemon to write daemon.json", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the daemon exited early: {status}");
            }
            url = deputy_server::daemon::read_info(data_dir).map(|i| i.url);
            url.is_some()
        })
        .await;
        Self {
            child,
            client: Client::new(url.unwrap()),
            pg_schema: postgres_backend().map(|_| schema_for(data_dir)),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Peak resident memory so far, in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap()
    }

    pub fn kill9(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        self.child.wait().unwrap();
    }

    /// The daemon's process guard (its death watch): the `sh` child reading the list.
    pub fn guard_pid(&self) -> Option<i32> {
        let daemon = self.pid().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|&pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let ppid = stat
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().nth(1));
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                ppid == Some(daemon.as_str())
                    && String::from_utf8_lossy(&cmdline).contains("while read -r op pg")
            })
    }

    /// `kill -9` of the daemon *and* its process guard at once (as when a whole service
    /// is killed): nothing kills the tasks' groups then, until recovery on restart. The
    /// daemon is stopped first, so it cannot start a new guard in between.
    pub fn kill9_with_guard(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        kill(Pid::from_raw(self.pid()), Signal::SIGSTOP).unwrap();
        let guard = self.guard_pid().expect("the daemon has a process guard");
        kill(Pid::from_raw(guard), Signal::SIGKILL).unwrap();
        let deadline = std::time::Instant::now() + DEADLINE;
        while alive(guard) {
            assert!(
                std::time::Instant::now() < deadline,
                "the guard survived SIGKILL"
            );
            std::thread::yield_now();
        }
        self.kill9();
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for ChildDaemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let (Some(schema), Some(base)) = (self.pg_schema.take(), postgres_backend()) {
            psql(&base, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        }
    }
}

/// The daemon's /metrics text.
pub async fn metrics_text(url: &str) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits (bounded) until /metrics has the exact line `line`, e.g. a gauge's value.
pub async fn wait_metric(url: &str, line: &str) {
    let check = async {
        while !metrics_text(url).await.lines().any(|l| l == line) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(DEADLINE, check)
        .await
        .unwrap_or_else(|_| panic!("/metrics never showed `{line}`"));
}

/// Replays the log: the most tasks (of those `counted`) running at once, and how many
/// are still running at the end.
pub fn peak_running(events: &[Event], counted: impl Fn(TaskId) -> bool) -> (i32, i32) {
    let mut running = 0i32;
    let mut peak = 0;
    for e in events {
        if !e.task.is_some_and(&counted) {
            continue;
        }
        if let EventBody::TaskStatus { from, to, .. } = e.body {
            if to == Status::Running {
                running += 1;
            }
            if from == Status::Running {
                running -= 1;
            }
            peak = peak.max(running);
        }
    }
    (peak, running)
}
