//! Prometheus metrics. One registry per daemon (no process-wide recorder), so several
//! daemons in one process, as in tests, never mix their figures. Gauges that describe
//! stored state (tasks by status, queue depth) are read from the store at scrape time,
//! so they can never drift from it.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabel {
    pub group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct TokenLabel {
    pub kind: String,
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    pub tasks: Family<StatusLabel, Gauge>,
    pub queue_depth: Family<GroupLabel, Gauge>,
    pub running: Gauge,
    pub task_duration: HistogramFamily<StatusLabel>,
    pub events: Counter,
    pub sse_subscribers: Gauge,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_latency: HistogramFamily<RouteLabels>,
    pub llm_records: Counter,
    pub agent_tokens: Family<TokenLabel, Counter>,
    pub agent_cost_usd: Counter<f64, std::sync::atomic::AtomicU64>,
    pub llm_record_failures: Counter,
    /// Writes the store committed (or rolled back), and the transactions they took.
    pub store_writes: Counter,
    pub store_write_batches: Counter,
    /// Seconds inside those transactions (on PostgreSQL: holding the write lock).
    pub store_write_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn duration_buckets() -> Histogram {
    // 10 ms to about 3 hours.
    Histogram::new(exponential_buckets(0.01, 2.5, 14))
}

fn latency_buckets() -> Histogram {
    // 100 µs to about 2 s.
    Histogram::new(exponential_buckets(0.0001, 2.5, 12))
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("deputy");
        let tasks = Family::<StatusLabel, Gauge>::default();
        registry.register("tasks", "Tasks in the store by status", tasks.clone());
        let queue_depth = Family::<GroupLabel, Gauge>::default();
        registry.register("queue_depth", "Queued tasks per group", queue_depth.clone());
        let running = Gauge::default();
        registry.register(
            "running_tasks",
            "Tasks running on this node",
            running.clone(),
        );
        let task_duration: HistogramFamily<StatusLabel> =
            Family::new_with_constructor(duration_buckets);
        registry.register(
            "task_duration_seconds",
            "How long attempts ran, by outcome",
            task_duration.clone(),
        );
        let events = Counter::default();
        registry.register(
            "events",
            "Events appended to the log (seen by this node)",
            events.clone(),
        );
        let sse_subscribers = Gauge::default();
        registry.register(
            "sse_subscribers",
            "Open event streams",
            sse_subscribers.clone(),
        );
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        let http_latency: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(latency_buckets);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency (for streams: until the response starts)",
            http_latency.clone(),
        );
        let agent_tokens = Family::<TokenLabel, Counter>::default();
        registry.register(
            "agent_tokens",
            "Tokens used by agent tasks, by kind (input, output, cached)",
            agent_tokens.clone(),
        );
        let agent_cost_usd = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "agent_cost_usd",
            "Dollars spent by agent tasks (where a cost is known)",
            agent_cost_usd.clone(),
        );
        let llm_records = Counter::default();
        registry.register(
            "llm_records",
            "Model-call records written to the store",
            llm_records.clone(),
        );
        let llm_record_failures = Counter::default();
        registry.register(
            "llm_record_failures",
            "Model-call records that could not be written (the calls went on)",
            llm_record_failures.clone(),
        );
        let store_writes = Counter::default();
        registry.register(
            "store_writes",
            "Writes the store's writer carried out (each a compare-and-set or an append)",
            store_writes.clone(),
        );
        let store_write_batches = Counter::default();
        registry.register(
            "store_write_batches",
            "Transactions those writes took (group commit: writes per batch is the saving)",
            store_write_batches.clone(),
        );
        let store_write_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "store_write_seconds",
            "Seconds the writer spent inside those transactions (on PostgreSQL, holding the cluster's write lock)",
            store_write_seconds.clone(),
        );
        Arc::new(Self {
            registry,
            store_writes,
            store_write_seconds,
            store_write_batches,
            tasks,
            queue_depth,
            running,
            task_duration,
            events,
            sse_subscribers,
            http_requests,
            http_latency,
            llm_records,
            llm_record_failures,
            agent_tokens,
            agent_cost_usd,
        })
    }

    /// Counts an ended agent attempt's tokens and cost.
    pub fn record_agent_usage(&self, u: &deputy_core::agent::AgentUsage) {
        for (kind, n) in [
            ("input", u.input_tokens),
            ("output", u.output_tokens),
            ("cached", u.cached_tokens),
        ] {
            if let Some(n) = n {
                self.agent_tokens
                    .get_or_create(&TokenLabel { kind: kind.into() })
                    .inc_by(n);
            }
        }
        if let Some(c) = u.cost_usd.filter(|c| c.is_finite() && *c > 0.0) {
            self.agent_cost_usd.inc_by(c);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%e, "encoding metrics failed");
        }
        out
    }
}
