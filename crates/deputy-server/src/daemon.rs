//! The daemon's life cycle. Start: lock the data dir (one daemon per data dir), open the
//! store (migrations run), start the engine (recovery runs first), bind the listener and
//! publish `daemon.json` so clients find it. Stop: stop accepting requests, let the
//! engine shut down gracefully, remove `daemon.json`; the store closes last.

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use deputy_core::NodeId;
use deputy_core::submit::SubmitDefaults;
use deputy_core::time::now_ms;
use deputy_engine::{Engine, EngineConfig, ResourceLimits};
use deputy_store::Store;
use deputy_store::sqlite::SqliteStore;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{AppState, app};

/// The daemon's port when none is configured.
pub const DEFAULT_PORT: u16 = 7477;

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub parallel: usize,
    /// The timeout of tasks that set none. None: no default timeout.
    pub default_timeout: Option<Duration>,
    pub output_cap: u64,
    pub kill_grace: Duration,
    pub shutdown_grace: Duration,
    /// Finished tasks older than this are deleted automatically. None: kept.
    pub retention: Option<Duration>,
    pub max_body: usize,
    pub resources: ResourceLimits,
    pub lease: Duration,
    /// Required to listen on anything but loopback; then every request must present it.
    pub api_token: Option<String>,
    /// A client that accepts no data for this long is disconnected.
    pub write_timeout: Duration,
    /// How long output may wait in memory before it is stored and announced.
    pub output_flush_interval: Duration,
    /// A PostgreSQL URL: share the queue with other nodes. None: SQLite in the data dir.
    pub database: Option<String>,
    /// Model providers by name (built-ins plus configured ones).
    pub providers: std::collections::BTreeMap<String, deputy_llm::providers::ProviderConfig>,
    /// An OTLP/HTTP collector for model-call spans.
    pub otlp_endpoint: Option<String>,
    /// How agent tasks run (worktrees go under the data dir unless set otherwise).
    pub agents: deputy_engine::agent::config::AgentConfig,
    /// How often the daemon samples the figures the dashboard's sparklines draw.
    pub figures_interval: Duration,
}

impl DaemonConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        let worktrees = data_dir.join("worktrees");
        Self {
            data_dir,
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            parallel: std::thread::available_parallelism().map_or(2, |n| n.get()),
            default_timeout: Some(Duration::from_secs(3600)),
            output_cap: deputy_core::limits::DEFAULT_OUTPUT_CAP,
            kill_grace: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            retention: Some(Duration::from_secs(30 * 86_400)),
            max_body: 1 << 20,
            resources: ResourceLimits {
                min_free_memory: Some(256 << 20),
                max_cpu_percent: Some(95.0),
            },
            lease: Duration::from_secs(30),
            api_token: None,
            write_timeout: Duration::from_secs(30),
            output_flush_interval: Duration::from_millis(50),
            database: None,
            providers: deputy_llm::providers::builtin(&|k| std::env::var(k).ok()),
            otlp_endpoint: None,
            agents: deputy_engine::agent::config::AgentConfig::new(worktrees),
            figures_interval: Duration::from_secs(5),
        }
    }
}

/// What `daemon.json` in the data dir says about a running daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub url: String,
    pub node: String,
    pub started_at: i64,
    pub version: String,
}

pub const INFO_FILE: &str = "daemon.json";
const LOCK_FILE: &str = "daemon.lock";
const NODE_FILE: &str = "node_id";
pub const DB_FILE: &str = "deputy.db";

/// A running daemon. Dropping it does not stop it; call [`Daemon::stop`].
pub struct Daemon {
    pub addr: SocketAddr,
    pub engine: Engine,
    data_dir: PathBuf,
    http_stop: CancellationToken,
    http: tokio::task::JoinHandle<()>,
    shutdown_grace: Duration,
    _lock: File,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon").field("addr", &self.addr).finish()
    }
}

impl Daemon {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful stop; returns when tasks are settled and the store is closed.
    pub async fn stop(self) {
        // Stop serving first (open event streams end on `stopping`), so no request can
        // reach the store after it closes; then the engine, which closes the store last.
        self.http_stop.cancel();
        if tokio::time::timeout(Duration::from_secs(5), self.http)
            .await
            .is_err()
        {
            tracing::warn!("HTTP connections still open 5 s into shutdown; dropping them");
        }
        self.engine.shutdown(self.shutdown_grace).await;
        let _ = fs::remove_file(self.data_dir.join(INFO_FILE));
        tracing::info!("daemon stopped");
    }
}

fn lock_data_dir(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join(LOCK_FILE);
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(fs::TryLockError::WouldBlock) => bail!(
            "another deputy daemon is already using {} (stop it with Ctrl-C or `kill {}`, or pick another data dir with --data-dir)",
            dir.display(),
            read_info(dir)
                .map(|i| i.pid.to_string())
                .unwrap_or_else(|| "<pid>".into())
        ),
        Err(fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

fn node_id(dir: &Path) -> anyhow::Result<NodeId> {
    let path = dir.join(NODE_FILE);
    match fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(NodeId(s.trim().to_string())),
        _ => {
            let id = NodeId::generate();
            fs::write(&path, format!("{id}\n"))
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(id)
        }
    }
}

/// Reads `daemon.json` from a data dir, if there is one.
pub fn read_info(dir: &Path) -> Option<DaemonInfo> {
    let s = fs::read_to_string(dir.join(INFO_FILE)).ok()?;
    serde_json::from_str(&s).ok()
}

fn write_info(dir: &Path, info: &DaemonInfo) -> anyhow::Result<()> {
    let tmp = dir.join(format!("{INFO_FILE}.tmp"));
    fs::write(&tmp, serde_json::to_vec_pretty(info)?)?;
    fs::rename(&tmp, dir.join(INFO_FILE))?;
    Ok(())
}

/// Starts the daemon in this process.
pub async fn start(cfg: DaemonConfig) -> anyhow::Result<Daemon> {
    let token = cfg
        .api_token
        .as_deref()
        .map(crate::auth::Token::new)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    if !cfg.listen.ip().is_loopback() && token.is_none() {
        bail!(
            "refusing to listen on {} without an API token: anyone who can reach it could run commands as you. \
             Set `api_token` in the config (or DEPUTY_API_TOKEN), or listen on 127.0.0.1",
            cfg.listen
        );
    }
    fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data dir {}", cfg.data_dir.display()))?;
    let lock = lock_data_dir(&cfg.data_dir)?;
    let node = node_id(&cfg.data_dir)?;
    let store: Arc<dyn Store> = match &cfg.database {
        Some(url) => Arc::new(
            deputy_store::postgres::PgStore::open(url)
                .await
                .with_context(|| {
                    format!("cannot open the PostgreSQL database {}", redact_url(url))
                })?,
        ),
        None => {
            let db = cfg.data_dir.join(DB_FILE);
            Arc::new(
                SqliteStore::open(&db)
                    .await
                    .with_context(|| format!("cannot open the database {}", db.display()))?,
            )
        }
    };
    // Bound before the engine starts, so the node registers with its real address.
    let listener = TcpListener::bind(cfg.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (is another daemon using it? set another address with --listen or DEPUTY_LISTEN)",
            cfg.listen
        )
    })?;
    let addr = listener.local_addr()?;
    let cwd = std::env::current_dir()
        .ok()
        .or_else(dirs_home)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into());
    let mut ecfg = EngineConfig::new(
        node.clone(),
        SubmitDefaults {
            timeout_ms: cfg.default_timeout.map(|d| d.as_millis() as u64),
            output_cap: cfg.output_cap,
            cwd,
        },
    );
    ecfg.parallel = cfg.parallel.max(1);
    ecfg.kill_grace = cfg.kill_grace;
    ecfg.resources = cfg.resources;
    ecfg.lease = cfg.lease;
    ecfg.output_flush_interval = cfg.output_flush_interval;
    ecfg.address = Some(format!("http://{addr}"));
    ecfg.providers = cfg.providers.clone();
    ecfg.otlp_endpoint = cfg.otlp_endpoint.clone();
    ecfg.agents = cfg.agents.clone();
    let engine = Engine::start(store.clone(), ecfg).await?;

    let started_at = now_ms();
    let http_stop = CancellationToken::new();
    let state = AppState {
        engine: engine.clone(),
        stopping: http_stop.clone(),
        self_client: deputy_client::Client::new(format!("http://{addr}"))
            .with_token(cfg.api_token.clone()),
        started_at,
        data_dir: cfg.data_dir.display().to_string(),
        replays: Default::default(),
        figures: crate::dashboard::Figures::start(
            engine.clone(),
            cfg.figures_interval,
            http_stop.clone(),
        ),
    };
    let router = app(state, cfg.max_body, token);
    let listener = crate::listener::TimeoutListener::new(listener, cfg.write_timeout);
    let stop = http_stop.clone();
    let http = tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(%e, "HTTP server failed");
        }
    });
    if let Some(keep) = cfg.retention {
        tokio::spawn(retention(engine.clone(), keep, http_stop.clone()));
    }
    write_info(
        &cfg.data_dir,
        &DaemonInfo {
            pid: std::process::id(),
            url: format!("http://{addr}"),
            node: node.to_string(),
            started_at,
            version: env!("CARGO_PKG_VERSION").into(),
        },
    )?;
    tracing::info!(%addr, node = %node, data_dir = %cfg.data_dir.display(), "deputy daemon ready");
    Ok(Daemon {
        addr,
        engine,
        data_dir: cfg.data_dir,
        http_stop,
        http,
        shutdown_grace: cfg.shutdown_grace,
        _lock: lock,
    })
}

/// Runs the daemon until `shutdown` resolves, then stops it gracefully.
pub async fn run(
    cfg: DaemonConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    // Orphaned grandchildren of tasks are reparented to the daemon, which reaps them.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!(%e, "cannot become a child subreaper; orphaned task processes go to init");
    }
    let daemon = start(cfg).await?;
    shutdown.await;
    tracing::info!("shutting down");
    daemon.stop().await;
    Ok(())
}

/// A database URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn dirs_home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// Deletes finished tasks past the retention period, hourly.
async fn retention(engine: Engine, keep: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        let before = now_ms() - keep.as_millis() as i64;
        match engine.store().clean(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "retention removed old finished tasks"),
            Err(e) => tracing::error!(%e, "retention clean-up failed"),
        }
    }
}
