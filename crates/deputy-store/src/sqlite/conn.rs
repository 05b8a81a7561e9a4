//! One SQLite connection (rusqlite) as the shared code's [`Exec`]: statements run
//! synchronously, on the thread that owns the connection, from a cache of prepared
//! statements. Only the threads in `threads.rs` own one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{OpenFlags, ToSql};

use super::checkpoint::{BACKSTOP_PAGES, Checkpointer};
use crate::sql::{EventRow, Exec, Row, Value};
use crate::{Result, StoreError};

/// Prepared statements kept per connection: every fixed statement of the store, and
/// the recent shapes of the built ones (their `IN (…)` lists vary in length).
const STATEMENT_CACHE: usize = 256;

pub struct SqliteConn {
    conn: rusqlite::Connection,
    /// The writer's: told after each commit that the WAL grew.
    checkpointer: Option<Arc<Checkpointer>>,
    deferred: Vec<EventRow>,
}

/// Where connections come from: the database file, whether they may write, and (for the
/// writer) the thread that checkpoints what it writes.
#[derive(Debug, Clone)]
pub struct Opener {
    pub path: PathBuf,
    pub read_only: bool,
    pub checkpointer: Option<Arc<Checkpointer>>,
}

impl Opener {
    pub fn open(&self) -> Result<SqliteConn> {
        let mut conn = SqliteConn::open(&self.path, self.read_only)?;
        if let Some(c) = &self.checkpointer {
            // Checkpoints are the thread's job; the writer's own are only a backstop.
            conn.conn
                .pragma_update(None, "wal_autocheckpoint", BACKSTOP_PAGES)?;
            conn.checkpointer = Some(c.clone());
        }
        Ok(conn)
    }
}

impl SqliteConn {
    /// Opens the database at `path` (it must exist: migrations create it).
    pub fn open(path: &Path, read_only: bool) -> Result<SqliteConn> {
        let flags = if read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let conn = rusqlite::Connection::open_with_flags(path, flags)?;
        // Another process holding the write lock (a backup, a stray sqlite3 shell) is
        // waited for this long before a write fails as busy.
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        if !read_only {
            // WAL with NORMAL is durable against process crashes (kill -9); a power cut
            // may lose the last transactions, never corrupt the database.
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            // A negative cache_size is in KiB. Statement journals (a multi-row UPDATE
            // keeps one) stay in memory instead of spilling to temporary files.
            let cache_kib = (super::WRITER_PAGE_CACHE_BYTES / 1024) as i64;
            conn.pragma_update(None, "cache_size", -cache_kib)?;
            conn.pragma_update(None, "temp_store", "MEMORY")?;
        }
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(SqliteConn {
            conn,
            checkpointer: None,
            deferred: Vec::new(),
        })
    }

    /// After a commit: let the checkpointer know the WAL grew.
    pub fn committed(&self) {
        if let Some(c) = &self.checkpointer {
            c.nudge();
        }
    }

    fn run_now(&mut self, sql: &str, args: Vec<Value>) -> Result<u64> {
        let started = Instant::now();
        let mut stmt = self.conn.prepare_cached(sql)?;
        bind_all(&mut stmt, &args)?;
        let changed = stmt.raw_execute()? as u64;
        trace_statement(sql, started);
        Ok(changed)
    }

    fn each_now(
        &mut self,
        sql: &str,
        args: Vec<Value>,
        each: &mut (dyn FnMut(Row) -> Result<bool> + Send),
    ) -> Result<()> {
        let started = Instant::now();
        let mut stmt = self.conn.prepare_cached(sql)?;
        bind_all(&mut stmt, &args)?;
        let names: Arc<[String]> = stmt
            .column_names()
            .into_iter()
            .map(str::to_string)
            .collect();
        let width = names.len();
        let mut rows = stmt.raw_query();
        while let Some(r) = rows.next()? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(match r.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(Some(v)),
                    ValueRef::Real(v) => Value::Real(Some(v)),
                    ValueRef::Text(t) => Value::Text(Some(String::from_utf8_lossy(t).into_owned())),
                    ValueRef::Blob(b) => Value::Blob(Some(b.to_vec())),
                });
            }
            if !each(Row::new(names.clone(), values))? {
                break;
            }
        }
        trace_statement(sql, started);
        Ok(())
    }
}

/// Each statement's time, for finding where a write's time goes
/// (`DEPUTY_LOG=deputy_store::sql=trace`; sqlx logs PostgreSQL's statements the same
/// way under `sqlx::query`). Off, it costs a clock read.
fn trace_statement(sql: &str, started: Instant) {
    tracing::trace!(
        target: "deputy_store::sql",
        elapsed_us = started.elapsed().as_micros() as u64,
        sql = sql.get(..60).unwrap_or(sql),
    );
}

fn bind_all(stmt: &mut rusqlite::CachedStatement<'_>, args: &[Value]) -> Result<()> {
    let expected = stmt.parameter_count();
    if expected != args.len() {
        return Err(StoreError::Invalid(format!(
            "a statement takes {expected} values and was given {}",
            args.len()
        )));
    }
    for (i, v) in args.iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, v)?;
    }
    Ok(())
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Int(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Real(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Real(*v)),
            Value::Text(Some(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Blob(Some(b)) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            _ => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

/// The statement runs when called; the future is only there to share the backend code
/// with PostgreSQL, whose statements do wait.
impl Exec for SqliteConn {
    fn deferred_events(&mut self) -> &mut Vec<EventRow> {
        &mut self.deferred
    }

    fn run(&mut self, sql: &str, args: Vec<Value>) -> impl Future<Output = Result<u64>> + Send {
        std::future::ready(self.run_now(sql, args))
    }

    fn each(
        &mut self,
        sql: &str,
        args: Vec<Value>,
        each: &mut (dyn FnMut(Row) -> Result<bool> + Send),
    ) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(self.each_now(sql, args, each))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::Full(e.to_string()),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                StoreError::Busy(e.to_string())
            }
            _ => StoreError::Database(e.to_string()),
        }
    }
}
