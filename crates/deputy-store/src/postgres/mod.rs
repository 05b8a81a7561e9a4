//! The shared store on PostgreSQL, for several deputy nodes on one queue.
//!
//! - Every write transaction takes one advisory lock (the write lock) first, shared or
//!   exclusive (see `backend/writer.rs`). Exclusive transactions (submits, cancels,
//!   retries, recovery, anything that settles dependents) run alone in the cluster.
//!   Shared ones (claims and plain attempt ends, which touch only rows no other node's
//!   shared write can) run side by side, so a second node adds throughput. They append
//!   their events last, under a second lock held to the commit, so event sequence
//!   numbers commit in order (a reader of "events after N" never misses one that commits
//!   later). A claim from a group with a limit locks the group's row and counts its
//!   running tasks after, so two nodes' claims take turns and limits hold cluster-wide.
//!   Locks are held for one short transaction (milliseconds), never while a task runs.
//!   Opening the transaction with its lock is one round trip, as are notifying and
//!   committing.
//! - Each commit sends `NOTIFY deputy_events`; every node LISTENs and wakes its event
//!   bus, so any node's streams follow any node's tasks live.

#[path = "../backend/output.rs"]
#[allow(clippy::duplicate_mod)] // Compiled once per backend, on purpose.
mod output;
#[path = "../backend/rows.rs"]
#[allow(clippy::duplicate_mod)] // Compiled once per backend, on purpose.
mod rows;
#[path = "../backend/schedules.rs"]
#[allow(clippy::duplicate_mod)] // Compiled once per backend, on purpose.
mod schedules;
#[path = "../backend/store.rs"]
#[allow(clippy::duplicate_mod)] // Compiled once per backend, on purpose.
mod store;
#[path = "../backend/tasks.rs"]
#[allow(clippy::duplicate_mod)] // Compiled once per backend, on purpose.
mod tasks;
#[path = "../backend/trace.rs"]
#[allow(clippy::duplicate_mod)] // Compiled once per backend, on purpose.
mod trace;
#[path = "../backend/writer.rs"]
#[allow(clippy::duplicate_mod)] // Compiled once per backend, on purpose.
mod writer;

mod conn;

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::Notify;

use crate::Result;
pub use store::DbStore as PgStore;
use store::DbStore;

const CHANNEL: &str = "deputy_events";

/// What the shared backend code needs to know about PostgreSQL.
mod dialect {
    pub use super::conn::{PgConn as Conn, PgReaders as Readers};
    use crate::sql::query;

    pub const NAME: &str = "PgStore";
    pub const OCTET_LENGTH: &str = "octet_length";
    /// `status` in a condition that must not pick the index (PostgreSQL's planner has
    /// statistics and looks rows up by id by itself).
    pub const STATUS_CHECKED_ONLY: &str = "status";

    /// The writer's connection comes from the store's pool.
    pub type Connector = sqlx::PgPool;

    pub async fn connect(pool: &Connector) -> crate::Result<Conn> {
        Ok(Conn::new(pool.acquire().await?))
    }

    /// The writer is a task on the runtime: its statements wait on the network.
    pub fn spawn_writer(work: impl Future<Output = ()> + Send + 'static) -> crate::Result<()> {
        tokio::spawn(work);
        Ok(())
    }

    /// The insert numbers events itself (a trigger did, row by row, at three times the
    /// cost of the row).
    pub const EVENT_SEQ_IN_INSERT: bool = true;

    /// Every node has a writer of its own: shared transactions run side by side.
    pub const CONCURRENT_WRITERS: bool = true;

    /// Opens a write transaction and takes the write lock, in one round trip: shared
    /// (beside other nodes' shared transactions) or exclusive (alone). The lock's key is
    /// any fixed number all deputy write transactions share: 0x6465_7075_7479, "deputy"
    /// in ASCII.
    pub async fn begin_write(conn: &mut Conn, shared: bool) -> crate::Result<()> {
        if shared {
            conn.simple("BEGIN; SELECT pg_advisory_xact_lock_shared(110386841220217)")
                .await
        } else {
            conn.simple("BEGIN; SELECT pg_advisory_xact_lock(110386841220217)")
                .await
        }
    }

    /// Taken by a shared transaction just before it appends its events, and held to its
    /// commit: shared transactions append and commit one at a time, so event numbers
    /// commit in order. Exclusive transactions need not take it (no shared one runs
    /// beside them). Its key is the write lock's plus one.
    pub async fn lock_event_seq(conn: &mut Conn) -> crate::Result<()> {
        conn.simple("SELECT pg_advisory_xact_lock(110386841220218)")
            .await
    }

    /// Locks a group's row until the commit: two nodes' claims from a group with a limit
    /// take turns, each counting the other's committed claims.
    pub async fn lock_group(conn: &mut Conn, name: &str) -> crate::Result<()> {
        query("SELECT name FROM groups WHERE name = ? FOR UPDATE")
            .bind(name)
            .execute(conn)
            .await
            .map(drop)
    }

    /// Event numbers are one past the highest stored (migration 0005); before events are
    /// deleted, the highest is remembered so it is never handed out again.
    pub async fn before_deleting_events(conn: &mut Conn) -> crate::Result<()> {
        query("UPDATE event_seq SET floor = GREATEST(floor, (SELECT COALESCE(MAX(seq), 0) FROM events))")
            .execute(conn)
            .await?;
        Ok(())
    }

    /// PostgreSQL checkpoints by itself.
    pub fn after_commit(_conn: &mut Conn) {}

    /// Commits the open transaction, in one round trip. With `announces`, it first
    /// notifies the other nodes, which PostgreSQL delivers when (and only if) the
    /// transaction commits.
    pub async fn commit(conn: &mut Conn, announces: bool) -> crate::Result<()> {
        if announces {
            conn.simple("SELECT pg_notify('deputy_events', ''); COMMIT")
                .await
        } else {
            query("COMMIT").execute(conn).await.map(drop)
        }
    }

    /// The best queued tasks of one group, up to its free slots; rows another node is
    /// claiming right now are skipped, not waited for.
    pub const CLAIM_GROUP: &str = "SELECT id, status, attempt, spec, created_at, updated_at, started_at, finished_at, ready_at, exit_code, signal, reason, node, lease_expires_at, pgid, cancel_requested, queue_seq, usage, resume_session
         FROM tasks WHERE group_name = ? AND status = 'queued'
         ORDER BY priority, queue_seq LIMIT ?
         FOR UPDATE SKIP LOCKED";
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host/db`), runs migrations, and starts
    /// listening for other nodes' commits.
    pub async fn open(url: &str) -> Result<PgStore> {
        let opts: PgConnectOptions = url.parse()?;
        Self::open_with(opts).await
    }

    pub async fn open_with(opts: PgConnectOptions) -> Result<PgStore> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await?;
        crate::migrator(&[
            (
                "init",
                include_str!("../../migrations/postgres/0001_init.sql"),
            ),
            (
                "llm_trace",
                include_str!("../../migrations/postgres/0002_llm_trace.sql"),
            ),
            (
                "agents",
                include_str!("../../migrations/postgres/0003_agents.sql"),
            ),
            (
                "schedules",
                include_str!("../../migrations/postgres/0004_schedules.sql"),
            ),
            (
                "event_seq",
                include_str!("../../migrations/postgres/0005_event_seq.sql"),
            ),
            (
                "drop_tasks_ready",
                include_str!("../../migrations/postgres/0006_drop_tasks_ready.sql"),
            ),
            (
                "drop_groups_running",
                include_str!("../../migrations/postgres/0007_drop_groups_running.sql"),
            ),
            (
                "events_numbered_by_insert",
                include_str!("../../migrations/postgres/0008_events_numbered_by_insert.sql"),
            ),
            (
                "time_ordered_task_keys",
                include_str!("../../migrations/postgres/0009_time_ordered_task_keys.sql"),
            ),
        ])
        .run(&pool)
        .await?;
        let committed = Arc::new(Notify::new());
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(CHANNEL).await?;
        let wake = committed.clone();
        let (closing, mut closed) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            // Each notification (from any node) wakes this node's event follower.
            // `recv` reconnects by itself after a dropped connection.
            loop {
                tokio::select! {
                    r = listener.recv() => match r {
                        Ok(_) => wake.notify_one(),
                        // The store is shutting down.
                        Err(sqlx::Error::PoolClosed) => break,
                        Err(e) => {
                            tracing::warn!(%e, "event listener error; retrying");
                            wake.notify_one();
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    },
                    _ = closed.changed() => break,
                }
            }
        });
        let first = dialect::connect(&pool).await?;
        DbStore::new(
            pool.clone(),
            first,
            conn::PgReaders::new(pool),
            committed,
            closing,
        )
    }
}
