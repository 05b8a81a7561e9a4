//! deputy's engine: it turns stored tasks into supervised processes.
//!
//! - [`Engine::start`] recovers what a previous life left running, then starts the
//!   scheduler, the lease heartbeat, the resource monitor and the event bus.
//! - The scheduler is event-driven: woken by submit, completion, cancel, queue changes
//!   and the next scheduled time, never by polling.
//! - Each claimed task gets one supervisor ([`supervisor`]), which owns its process.
//!
//! The engine never changes task state except through the [`Store`]; its in-memory map
//! of running supervisors is rebuilt from claims, never the other way round.

pub mod agent;
pub mod bus;
pub mod capture;
mod deathwatch;
pub mod metrics;
pub mod procfs;
mod recovery;
pub mod resources;
pub mod runner;
mod running;
mod scheduler;
pub mod schedules;
pub mod supervisor;

use deputy_llm::providers::ProviderConfig;
use deputy_llm::record::otlp::SpanExporter;
use deputy_llm::record::{RecordLimits, Recorder, drain};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use deputy_core::submit::{NewTask, SubmitDefaults, ValidTask};
use deputy_core::time::now_ms;
use deputy_core::{IdRef, NodeId, Task, TaskId, ValidationError};
use deputy_store::{CancelOutcome, Group, Store, StoreError, Submitted};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use bus::EventBus;
pub use metrics::Metrics;
pub use resources::{ResourceLimits, Snapshot};
use supervisor::Stops;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub node: NodeId,
    /// Tasks this node runs at once.
    pub parallel: usize,
    pub defaults: SubmitDefaults,
    /// Between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    pub lease: Duration,
    pub resources: ResourceLimits,
    pub resource_sample: Duration,
    pub output_flush_interval: Duration,
    /// This node's HTTP API, recorded for `deputy nodes`.
    pub address: Option<String>,
    /// Model providers by name (built-ins plus configured ones).
    pub providers: BTreeMap<String, ProviderConfig>,
    /// An OTLP/HTTP collector: each recorded model call is also exported as a span.
    pub otlp_endpoint: Option<String>,
    /// How agent tasks run.
    pub agents: agent::config::AgentConfig,
}

impl EngineConfig {
    pub fn new(node: NodeId, defaults: SubmitDefaults) -> Self {
        Self {
            node,
            parallel: std::thread::available_parallelism().map_or(2, |n| n.get()),
            defaults,
            kill_grace: Duration::from_secs(5),
            lease: Duration::from_secs(30),
            resources: ResourceLimits::default(),
            resource_sample: Duration::from_secs(1),
            output_flush_interval: Duration::from_millis(50),
            address: None,
            providers: deputy_llm::providers::builtin(&|k| std::env::var(k).ok()),
            otlp_endpoint: None,
            agents: agent::config::AgentConfig::new(std::env::temp_dir().join("deputy-worktrees")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("invalid task: {0}")]
    Invalid(#[from] ValidationError),
    #[error("invalid schedule: {0}")]
    InvalidSchedule(ValidationError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("task {id} is {status}: {what}")]
    WrongState {
        id: TaskId,
        status: deputy_core::Status,
        what: String,
    },
    #[error("the engine is shutting down")]
    ShuttingDown,
    #[error(
        "cannot start the process guard that kills tasks if the daemon dies ({0}); \
         deputy needs a working /bin/sh"
    )]
    DeathWatch(std::io::Error),
}

/// An agent task must name a backend and provider this daemon knows.
pub(crate) fn check_agent_kind(
    cfg: &EngineConfig,
    kind: &deputy_core::TaskKind,
) -> Result<(), (&'static str, String)> {
    match kind {
        deputy_core::TaskKind::Agent { agent } => agent::resolve(cfg, agent).map(|_| ()),
        _ => Ok(()),
    }
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) cfg: EngineConfig,
    pub(crate) base_env: BTreeMap<String, String>,
    wake: Notify,
    /// Set when this node queued tasks or freed a slot since the scheduler's last claim:
    /// that claim then goes straight to the writer (`Store::claim_queued`), skipping the
    /// check for ready tasks, which would only delay it.
    queued: std::sync::atomic::AtomicBool,
    running: running::RunningSet,
    /// Stop starting tasks.
    stop: CancellationToken,
    /// Stop background loops (after supervisors are done).
    halt: CancellationToken,
    supervisors: TaskTracker,
    resources: watch::Receiver<Snapshot>,
    pub(crate) metrics: Arc<Metrics>,
    /// Where model calls are recorded (into the store, off the call path).
    pub(crate) recorder: Recorder,
    /// Kills every running task's process group if the daemon dies.
    pub(crate) deathwatch: deathwatch::DeathWatch,
}

impl Inner {
    fn running_count(&self) -> usize {
        self.running.count()
    }

    /// A supervisor's process is over: forget it and let the scheduler fill its slot at
    /// once, without first asking whether anything is ready: that question's hop to a
    /// reader let this attempt's end reach the writer first, and the claim then waited
    /// for its commit. Claimed first, the next process starts while the end commits.
    pub(crate) fn release(&self, id: TaskId) {
        self.running.remove(id);
        self.queued
            .store(true, std::sync::atomic::Ordering::Release);
        self.wake.notify_one();
    }

    pub(crate) fn cancel_reason(&self, id: TaskId) -> Option<String> {
        self.running.cancel_reason(id)
    }

    /// Signals the local supervisor of `id`, if there is one (or will be: see
    /// [`running`]).
    fn signal_cancel(&self, id: TaskId, reason: Option<String>) -> bool {
        self.running.signal_cancel(id, reason)
    }
}

/// Starts the task that writes model-call records into the store.
fn start_recorder(store: &Arc<dyn Store>, cfg: &EngineConfig) -> Recorder {
    let (mut recorder, receiver) = Recorder::new(1024, RecordLimits::default());
    let store = store.clone();
    tokio::spawn(drain(receiver, async move |batch| {
        store.record_llm(batch).await.map_err(|e| e.to_string())
    }));
    if let Some(endpoint) = &cfg.otlp_endpoint {
        recorder = recorder.with_spans(SpanExporter::start(endpoint));
    }
    recorder
}

/// Moves a Prometheus counter up to a total kept elsewhere.
fn catch_up(counter: &prometheus_client::metrics::counter::Counter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

/// A cheap-clone handle to the running engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
    bus: EventBus,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("node", &self.inner.cfg.node)
            .finish()
    }
}

impl Engine {
    /// Recovers, then starts every background part. Call from within a tokio runtime.
    pub async fn start(store: Arc<dyn Store>, cfg: EngineConfig) -> Result<Self, EngineError> {
        let halt = CancellationToken::new();
        let metrics = Metrics::new();
        store
            .register_node(&cfg.node, cfg.address.as_deref(), now_ms())
            .await?;
        let bus = EventBus::start(store.clone(), halt.clone(), metrics.clone()).await?;
        recovery::recover(&store, &cfg).await?;
        let resources = if cfg.resources.is_off() {
            watch::channel(Snapshot::default()).1
        } else {
            resources::monitor(cfg.resource_sample, halt.clone())
        };
        let recorder = start_recorder(&store, &cfg);
        let deathwatch = deathwatch::DeathWatch::start()
            .await
            .map_err(EngineError::DeathWatch)?;
        let inner = Arc::new(Inner {
            store,
            base_env: runner::base_env(),
            cfg,
            wake: Notify::new(),
            queued: std::sync::atomic::AtomicBool::new(false),
            running: running::RunningSet::default(),
            stop: CancellationToken::new(),
            halt,
            supervisors: TaskTracker::new(),
            resources,
            metrics,
            recorder,
            deathwatch,
        });
        tokio::spawn(scheduler::run(inner.clone()));
        tokio::spawn(heartbeat(inner.clone()));
        tokio::spawn(follow_log(inner.clone(), bus.subscribe()));
        Ok(Self { inner, bus })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.cfg
    }

    pub fn running_count(&self) -> usize {
        self.inner.running_count()
    }

    /// The recorder of model calls, for agent runs.
    pub fn recorder(&self) -> &Recorder {
        &self.inner.recorder
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Metrics in Prometheus text, with the stored-state gauges read fresh.
    pub async fn render_metrics(&self) -> Result<String, EngineError> {
        let m = &self.inner.metrics;
        let counts = self.inner.store.status_counts().await?;
        for st in deputy_core::status::ALL_STATUSES {
            let n = counts
                .by_status
                .iter()
                .find(|(s, _)| *s == st)
                .map_or(0, |(_, n)| *n);
            m.tasks
                .get_or_create(&metrics::StatusLabel {
                    status: st.to_string(),
                })
                .set(n as i64);
        }
        for g in self.inner.store.groups().await? {
            m.queue_depth
                .get_or_create(&metrics::GroupLabel {
                    group: g.name.clone(),
                })
                .set(0);
        }
        for (group, n) in self.inner.store.queue_depths().await? {
            m.queue_depth
                .get_or_create(&metrics::GroupLabel { group })
                .set(n as i64);
        }
        m.running.set(self.running_count() as i64);
        let stats = self.inner.recorder.stats();
        catch_up(&m.llm_records, stats.written.load(Ordering::Relaxed));
        catch_up(&m.llm_record_failures, stats.failed.load(Ordering::Relaxed));
        let writes = self.inner.store.write_counts();
        catch_up(&m.store_writes, writes.writes);
        catch_up(&m.store_write_batches, writes.batches);
        let seen = m.store_write_seconds.get();
        let busy = writes.busy.as_secs_f64();
        if busy > seen {
            m.store_write_seconds.inc_by(busy - seen);
        }
        Ok(m.render())
    }

    /// Validates and stores a batch (all or nothing), then wakes the scheduler.
    pub async fn submit(&self, batch: Vec<NewTask>) -> Result<Vec<Submitted>, EngineError> {
        if self.inner.stop.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        let now = now_ms();
        let valid: Vec<ValidTask> = batch
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                t.validate(&self.inner.cfg.defaults, now).map_err(|e| {
                    if i == 0 {
                        e
                    } else {
                        ValidationError::new(format!("tasks[{i}].{}", e.field), e.message)
                    }
                })
            })
            .collect::<Result<_, _>>()?;
        for (i, t) in valid.iter().enumerate() {
            self.check_agent(&t.spec.kind).map_err(|(field, message)| {
                let field = if valid.len() == 1 {
                    field.to_string()
                } else {
                    format!("tasks[{i}].{field}")
                };
                ValidationError::new(field, message)
            })?;
        }
        let out = self.inner.store.submit(valid, now).await?;
        if out
            .iter()
            .any(|s| s.task.status == deputy_core::Status::Queued)
        {
            self.inner
                .queued
                .store(true, std::sync::atomic::Ordering::Release);
        }
        self.inner.wake.notify_one();
        Ok(out)
    }

    pub async fn resolve(&self, id: &IdRef) -> Result<TaskId, EngineError> {
        Ok(self.inner.store.resolve(id).await?)
    }

    pub async fn get(&self, id: TaskId) -> Result<Task, EngineError> {
        Ok(self.inner.store.get(id).await?)
    }

    /// Cancels a task: at once if it has not started, through its supervisor if it runs.
    pub async fn cancel(
        &self,
        id: TaskId,
        reason: Option<String>,
    ) -> Result<CancelOutcome, EngineError> {
        let out = self
            .inner
            .store
            .cancel(id, reason.clone(), now_ms())
            .await?;
        if let CancelOutcome::Requested(_) = &out {
            // The flag is committed; a supervisor not registered yet gets it when it is
            // (see `running`).
            self.inner.signal_cancel(id, reason);
        }
        self.inner.wake.notify_one();
        Ok(out)
    }

    /// An agent task must name a backend and provider this daemon knows.
    fn check_agent(&self, kind: &deputy_core::TaskKind) -> Result<(), (&'static str, String)> {
        check_agent_kind(&self.inner.cfg, kind)
    }

    /// A new attempt of a finished task; `resume` continues its agent session.
    pub async fn retry(&self, id: TaskId, resume: bool) -> Result<Task, EngineError> {
        let t = self
            .inner
            .store
            .retry(id, now_ms(), resume)
            .await
            .map_err(|e| match e {
                StoreError::Conflict { id, actual, .. } => EngineError::WrongState {
                    id,
                    status: actual,
                    what: "only a finished task can be retried".into(),
                },
                other => other.into(),
            })?;
        self.inner.wake.notify_one();
        Ok(t)
    }

    pub async fn set_paused(&self, group: Option<&str>, paused: bool) -> Result<(), EngineError> {
        self.inner.store.set_paused(group, paused, now_ms()).await?;
        self.inner.wake.notify_one();
        Ok(())
    }

    pub async fn add_group(&self, name: &str, parallel: Option<u32>) -> Result<Group, EngineError> {
        let g = self.inner.store.add_group(name, parallel, now_ms()).await?;
        self.inner.wake.notify_one();
        Ok(g)
    }

    pub async fn set_group_parallel(
        &self,
        name: &str,
        parallel: Option<u32>,
    ) -> Result<Group, EngineError> {
        let g = self
            .inner
            .store
            .set_group_parallel(name, parallel, now_ms())
            .await?;
        self.inner.wake.notify_one();
        Ok(g)
    }

    /// Graceful shutdown: start nothing new, give running tasks `grace` to finish, then
    /// stop them (they end `interrupted`, requeued where their retries allow). The store
    /// is closed last.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stop.cancel();
        self.inner.supervisors.close();
        let running = self.inner.running_count();
        if running > 0 {
            tracing::info!(running, grace = ?grace, "waiting for running tasks");
        }
        if tokio::time::timeout(grace, self.inner.supervisors.wait())
            .await
            .is_err()
        {
            let stops: Vec<Stops> = self.inner.running.all_stops();
            tracing::warn!(
                count = stops.len(),
                "grace period over; interrupting running tasks"
            );
            for s in stops {
                s.interrupt.cancel();
            }
            self.inner.supervisors.wait().await;
        }
        // What the last runs recorded is written before the store closes.
        self.inner.recorder.flush().await;
        self.inner.halt.cancel();
        self.inner.store.close().await;
    }
}

/// Renews this node's leases; stops supervisors whose task another node recovered;
/// recovers tasks whose node stopped heartbeating.
async fn heartbeat(inner: Arc<Inner>) {
    let every = inner.cfg.lease / 3;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = inner.halt.cancelled() => break,
        }
        // Taken before renewing: every task in it was claimed (committed) before the
        // renewal, so one missing from the renewed set has really lost its lease.
        let local: Vec<TaskId> = inner.running.ids();
        let until = now_ms() + inner.cfg.lease.as_millis() as i64;
        match inner.store.renew_leases(&inner.cfg.node, until).await {
            Ok(renewed) => {
                for id in local.iter().filter(|id| !renewed.contains(id)) {
                    if let Some(stops) = inner.running.stops(*id) {
                        tracing::warn!(task = %id, "lease lost to another node; stopping the local process");
                        stops.interrupt.cancel();
                    }
                }
            }
            Err(e) => tracing::error!(%e, "renewing leases failed"),
        }
        match recovery::recover_expired(&inner.store, &inner.cfg).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(
                    recovered = n,
                    "recovered tasks of nodes that stopped heartbeating"
                );
                inner.wake.notify_one();
            }
            Err(e) => tracing::error!(%e, "recovering expired leases failed"),
        }
    }
}

/// Follows the log for what other nodes (or this one) changed: cancels reach the local
/// supervisor, and every change that may free or add work wakes the scheduler.
async fn follow_log(
    inner: Arc<Inner>,
    mut events: tokio::sync::broadcast::Receiver<Arc<bus::Published>>,
) {
    loop {
        tokio::select! {
            r = events.recv() => match r {
                Ok(p) => match (&p.event.body, p.event.task) {
                    (deputy_core::EventBody::TaskCancelRequested { reason }, Some(id)) => {
                        inner.signal_cancel(id, reason.clone());
                    }
                    (deputy_core::EventBody::TaskOutput { .. }, _) => {}
                    // Any other change, made here or on another node (a task queued, a
                    // slot freed, a group resumed), may let this node start something.
                    _ => inner.wake.notify_one(),
                },
                // Missed events: the stored flag is still there; re-check local tasks.
                // A missed one may have queued work too, so the scheduler looks again.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    inner.wake.notify_one();
                    for id in inner.running.lagged() {
                        if inner.store.cancel_requested(id).await.unwrap_or(false) {
                            inner.signal_cancel(id, None);
                        }
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            () = inner.halt.cancelled() => break,
        }
    }
}
