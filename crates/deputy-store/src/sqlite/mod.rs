//! The embedded store: SQLite in WAL mode.
//!
//! Writes go through one connection owned by the writer thread, so transactions are
//! serialized in-process and never fail with "database is locked"; reads run on three
//! reader threads, each owning a read-only connection that sees only committed data.
//! The daemon holds a lock file on its data dir, so no second process writes the same
//! database.

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

mod checkpoint;
mod conn;
mod threads;

/// The writer connection's page cache (SQLite's default is 2 MiB): the indexes a busy
/// queue touches stay in memory. A fixed part of the daemon's memory, whatever tasks print.
pub const WRITER_PAGE_CACHE_BYTES: u64 = 16 << 20;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use tokio::sync::Notify;

use crate::Result;
pub use store::DbStore as SqliteStore;
use store::DbStore;

/// Reader threads: enough for the HTTP handlers, the event follower and the scheduler
/// to read at once on a small machine.
const READERS: usize = 3;

/// What the shared backend code needs to know about SQLite.
mod dialect {
    pub use super::conn::SqliteConn as Conn;
    pub use super::threads::Readers;
    use crate::sql::query;
    pub const NAME: &str = "SqliteStore";
    pub const OCTET_LENGTH: &str = "length";
    /// `status` in a condition that must not pick the index: unary `+` keeps SQLite's
    /// planner from using it.
    pub const STATUS_CHECKED_ONLY: &str = "+status";

    /// Where the writer's connection comes from (and a fresh one after a failed batch).
    pub type Connector = super::conn::Opener;

    pub async fn connect(c: &Connector) -> crate::Result<Conn> {
        c.open()
    }

    /// The writer runs on a thread of its own: its statements block.
    pub fn spawn_writer(work: impl Future<Output = ()> + Send + 'static) -> crate::Result<()> {
        super::threads::spawn_thread("deputy-sqlite-writer", work).map_err(|e| {
            crate::StoreError::Database(format!("cannot start the writer thread: {e}"))
        })
    }

    /// `AUTOINCREMENT` numbers events.
    pub const EVENT_SEQ_IN_INSERT: bool = false;

    /// One writer connection serializes every write: transactions never run side by
    /// side, so every one may settle dependents and append events as it goes.
    pub const CONCURRENT_WRITERS: bool = false;

    /// Opens a write transaction. `IMMEDIATE` takes the write lock at once, so a
    /// transaction never fails to upgrade to one; one writer connection already
    /// serializes transactions, so nothing more is locked.
    pub async fn begin_write(conn: &mut Conn, _shared: bool) -> crate::Result<()> {
        query("BEGIN IMMEDIATE").execute(conn).await.map(drop)
    }

    /// Transactions are serialized already: event numbers commit in order.
    pub async fn lock_event_seq(_conn: &mut Conn) -> crate::Result<()> {
        Ok(())
    }

    /// Transactions are serialized already: a claim's count of a group stays true.
    pub async fn lock_group(_conn: &mut Conn, _name: &str) -> crate::Result<()> {
        Ok(())
    }

    /// `AUTOINCREMENT` never hands out a deleted number again; nothing to do.
    pub async fn before_deleting_events(_conn: &mut Conn) -> crate::Result<()> {
        Ok(())
    }

    /// Commits the open transaction (the bus learns of new events from the writer).
    pub async fn commit(conn: &mut Conn, _announces: bool) -> crate::Result<()> {
        query("COMMIT").execute(conn).await.map(drop)
    }

    /// The WAL grew: the checkpoint thread copies it into the database file.
    pub fn after_commit(conn: &mut Conn) {
        conn.committed();
    }

    /// The best queued tasks of one group, up to its free slots: one index seek.
    pub const CLAIM_GROUP: &str = "SELECT id, status, attempt, spec, created_at, updated_at, started_at, finished_at, ready_at, exit_code, signal, reason, node, lease_expires_at, pgid, cancel_requested, queue_seq, usage, resume_session
         FROM tasks WHERE group_name = ? AND status = 'queued'
         ORDER BY priority, queue_seq LIMIT ?";
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and runs migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        // Migrations run through sqlx, which keeps their record (`_sqlx_migrations`) as
        // every earlier deputy did; the store's own connections are rusqlite's.
        let mut migrating = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .connect()
            .await?;
        crate::migrator(&[
            (
                "init",
                include_str!("../../migrations/sqlite/0001_init.sql"),
            ),
            (
                "llm_trace",
                include_str!("../../migrations/sqlite/0002_llm_trace.sql"),
            ),
            (
                "agents",
                include_str!("../../migrations/sqlite/0003_agents.sql"),
            ),
            (
                "schedules",
                include_str!("../../migrations/sqlite/0004_schedules.sql"),
            ),
            (
                "drop_tasks_ready",
                include_str!("../../migrations/sqlite/0005_drop_tasks_ready.sql"),
            ),
            (
                "drop_groups_running",
                include_str!("../../migrations/sqlite/0006_drop_groups_running.sql"),
            ),
            (
                "time_ordered_task_keys",
                include_str!("../../migrations/sqlite/0007_time_ordered_task_keys.sql"),
            ),
        ])
        .run(&mut migrating)
        .await?;
        sqlx::Connection::close(migrating).await?;
        let writer = conn::Opener {
            path: path.to_path_buf(),
            read_only: false,
            checkpointer: Some(Arc::new(checkpoint::Checkpointer::start(path)?)),
        };
        let first = writer.open()?;
        let readers = threads::Readers::start(
            &conn::Opener {
                path: path.to_path_buf(),
                read_only: true,
                checkpointer: None,
            },
            READERS,
        )?;
        let closing = tokio::sync::watch::channel(false).0;
        DbStore::new(writer, first, readers, Arc::new(Notify::new()), closing)
    }
}

#[cfg(test)]
mod tests {
    use deputy_core::NodeId;
    use deputy_core::submit::{NewTask, SubmitDefaults};

    use super::*;
    use crate::Store;

    /// Regression: without statistics SQLite planned the claim's `UPDATE … WHERE status =
    /// 'queued' AND id IN (…)` through the status index, reading every queued task per
    /// claim (672 µs a claim with 8,000 queued, 92 µs by id).
    #[tokio::test]
    async fn a_claim_finds_its_rows_by_id_not_by_walking_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let (mut conn, tasks) = queued_noops(&dir.path().join("t.db"), 50).await;
        let plan = plan_of(
            &mut conn,
            tasks::claim_update(&NodeId("n".into()), 2, 1, &tasks[..16]),
        )
        .await;
        assert!(
            plan.iter().any(|d| d.contains("(id=?)")) && !plan.iter().any(|d| d.contains("status")),
            "{plan:?}"
        );
    }

    /// A claim's best tasks of a group come from one range of `tasks_group_ready`,
    /// already in claim order (no sort, whatever the queue holds), and a group's running
    /// count from another; a node's running tasks from the running range of an index.
    /// (Partial indexes holding only queued or running tasks were tried: they moved fewer
    /// index entries per claim and end, but the benchmark could not tell them apart.)
    #[tokio::test]
    async fn claims_and_running_counts_read_one_index_range_each() {
        let dir = tempfile::tempdir().unwrap();
        let (mut conn, _) = queued_noops(&dir.path().join("t.db"), 50).await;
        let claim = plan_of(
            &mut conn,
            crate::sql::query(dialect::CLAIM_GROUP)
                .bind("default")
                .bind(16_i64),
        )
        .await;
        assert!(
            claim
                .iter()
                .any(|d| d.contains("INDEX tasks_group_ready (group_name=? AND status=?)"))
                && !claim.iter().any(|d| d.contains("TEMP B-TREE")),
            "{claim:?}"
        );
        let open = plan_of(&mut conn, tasks::open_groups()).await;
        assert!(
            open.iter()
                .any(|d| d.contains("INDEX tasks_group_ready (group_name=? AND status=?)")),
            "{open:?}"
        );
        let node = plan_of(&mut conn, rows::running_query(Some(&NodeId("n".into())))).await;
        assert!(
            node.iter()
                .any(|d| d.contains("tasks_node (node=? AND status=?)")
                    || d.contains("tasks_status_seq (status=?)")),
            "{node:?}"
        );
    }

    async fn plan_of(conn: &mut conn::SqliteConn, q: crate::sql::Query) -> Vec<String> {
        q.explained()
            .fetch_all(conn)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String>("detail").unwrap())
            .collect()
    }

    /// A database at `path` holding `n` queued noop tasks, and a connection to it.
    async fn queued_noops(path: &Path, n: usize) -> (conn::SqliteConn, Vec<deputy_core::Task>) {
        let store = SqliteStore::open(path).await.unwrap();
        let defaults = SubmitDefaults {
            timeout_ms: Some(60_000),
            output_cap: 1 << 20,
            cwd: "/tmp".into(),
        };
        let batch = (0..n)
            .map(|_| NewTask {
                kind: Some("noop".into()),
                ..NewTask::default()
            })
            .map(|t| t.validate(&defaults, 0).unwrap())
            .collect();
        let tasks: Vec<_> = store
            .submit(batch, 1)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.task)
            .collect();
        store.close().await;
        (conn::SqliteConn::open(path, true).unwrap(), tasks)
    }
}
