//! The embedded store: SQLite in WAL mode.
//!
//! Writes go through a pool of exactly one connection, so transactions are serialized
//! in-process and never fail with "database is locked"; reads use a separate pool and
//! see only committed data. The daemon holds a lock file on its data dir, so no second
//! process writes the same database.

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

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::Notify;

use crate::Result;
pub use store::DbStore as SqliteStore;
use store::DbStore;

/// What the shared backend code needs to know about SQLite.
mod dialect {
    use sqlx::Sqlite;

    pub type Db = Sqlite;
    pub type Conn = sqlx::SqliteConnection;
    pub type DbRow = sqlx::sqlite::SqliteRow;
    pub const NAME: &str = "SqliteStore";
    pub const OCTET_LENGTH: &str = "length";

    /// Written with `?` placeholders, as SQLite takes them.
    pub fn sql(s: &'static str) -> &'static str {
        s
    }

    /// One writer connection already serializes transactions: nothing to lock.
    pub async fn begin_write(_conn: &mut Conn) -> crate::Result<()> {
        Ok(())
    }

    /// `AUTOINCREMENT` never hands out a deleted number again; nothing to do.
    pub async fn before_deleting_events(_conn: &mut Conn) -> crate::Result<()> {
        Ok(())
    }

    pub async fn before_commit(_conn: &mut Conn) -> crate::Result<()> {
        Ok(())
    }

    /// The best queued tasks of one group, up to its free slots: one index seek.
    pub const CLAIM_GROUP: &str = "SELECT id, status, attempt, spec, created_at, updated_at, started_at, finished_at, ready_at, exit_code, signal, reason, node, lease_expires_at, pgid, cancel_requested, queue_seq, usage, resume_session
         FROM tasks WHERE group_name = ? AND status = 'queued'
         ORDER BY priority, queue_seq LIMIT ?";
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and runs migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let base = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with NORMAL is durable against process crashes (kill -9); a power cut
            // may lose the last transactions, never corrupt the database.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(base.clone())
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
        ])
        .run(&writer)
        .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(base.read_only(true))
            .await?;
        let closing = tokio::sync::watch::channel(false).0;
        DbStore::new(writer, reader, Arc::new(Notify::new()), closing).await
    }
}
