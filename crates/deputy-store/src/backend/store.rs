//! The `Store` implementation shared by every SQL backend. It is compiled once per
//! backend (`#[path]` from `sqlite/` and `postgres/`), against that backend's `dialect`:
//! the pool and row types, placeholder syntax, and the hooks that make a write
//! transaction take its lock and announce its commit.

use std::sync::Arc;

use async_trait::async_trait;
use deputy_core::submit::ValidTask;
use deputy_core::time::Millis;
use deputy_core::trace::{LlmRecord, LlmRun};
use deputy_core::{Attempt, Event, IdRef, NodeId, Status, Stream, Task, TaskId};
use sqlx::{Pool, Transaction};
use tokio::sync::Notify;

use super::dialect::{self, Db, sql};
use super::{output, rows, tasks, trace};
use crate::{
    CancelOutcome, Finish, Group, ListQuery, OutputBatch, Page, Result, StatusCounts, Store,
    StoreError, StoredChunk, Submitted,
};

#[derive(Clone)]
pub struct DbStore {
    pub(super) writer: Pool<Db>,
    pub(super) reader: Pool<Db>,
    pub(super) committed: Arc<Notify>,
    /// Set on close: background parts (a listener) stop.
    pub(super) closing: Arc<tokio::sync::watch::Sender<bool>>,
}

impl std::fmt::Debug for DbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(dialect::NAME).finish_non_exhaustive()
    }
}

impl DbStore {
    /// Starts a write transaction, holding whatever lock keeps event sequence numbers
    /// in commit order for this backend.
    async fn begin(&self) -> Result<Transaction<'static, Db>> {
        let mut tx = self.writer.begin().await?;
        dialect::begin_write(&mut tx).await?;
        Ok(tx)
    }

    /// Commits, then wakes whoever follows the event log: announce only after commit.
    async fn commit(&self, mut tx: Transaction<'static, Db>) -> Result<()> {
        dialect::before_commit(&mut tx).await?;
        tx.commit().await?;
        self.committed.notify_one();
        Ok(())
    }
}

#[async_trait]
impl Store for DbStore {
    async fn submit(&self, batch: Vec<ValidTask>, now: Millis) -> Result<Vec<Submitted>> {
        let mut tx = self.begin().await?;
        let out = tasks::submit(&mut tx, batch, now).await?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn get(&self, id: TaskId) -> Result<Task> {
        let mut conn = self.reader.acquire().await?;
        rows::load_task(&mut conn, id).await
    }

    async fn resolve(&self, id: &IdRef) -> Result<TaskId> {
        let mut conn = self.reader.acquire().await?;
        rows::resolve(&mut conn, id).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        let mut conn = self.reader.acquire().await?;
        rows::list(&mut conn, query).await
    }

    async fn attempts(&self, id: TaskId) -> Result<Vec<Attempt>> {
        let mut conn = self.reader.acquire().await?;
        rows::attempts(&mut conn, id).await
    }

    async fn dependents(&self, id: TaskId) -> Result<Vec<TaskId>> {
        let mut conn = self.reader.acquire().await?;
        rows::dependents(&mut conn, id).await
    }

    async fn claim(&self, node: &NodeId, lease_ms: u64, now: Millis) -> Result<Option<Task>> {
        // Peek on a reader first: when nothing is ready (the common case after the last
        // task was claimed) the single writer stays free for the supervisors' writes.
        let ready: i64 = sqlx::query_scalar(sql(
            "SELECT COUNT(*) FROM (SELECT 1 FROM tasks WHERE status = 'queued' LIMIT 1) AS q",
        ))
        .fetch_one(&self.reader)
        .await?;
        if ready == 0 {
            return Ok(None);
        }
        let mut tx = self.begin().await?;
        let claimed = tasks::claim(&mut tx, node, lease_ms, now).await?;
        if claimed.is_some() {
            self.commit(tx).await?;
        } else {
            tx.rollback().await?;
        }
        Ok(claimed)
    }

    async fn set_pgid(&self, id: TaskId, attempt: u32, pgid: i32) -> Result<()> {
        // One statement: it commits on its own.
        let r = sqlx::query(sql(
            "UPDATE tasks SET pgid = ? WHERE id = ? AND attempt = ? AND status = 'running'",
        ))
        .bind(i64::from(pgid))
        .bind(id.to_string())
        .bind(i64::from(attempt))
        .execute(&self.writer)
        .await?;
        if r.rows_affected() != 1 {
            let actual = self.get(id).await?;
            return Err(StoreError::Conflict {
                id,
                expected: format!("running (attempt {attempt})"),
                actual: actual.status,
            });
        }
        Ok(())
    }

    async fn cancel_requested(&self, id: TaskId) -> Result<bool> {
        let v: Option<i64> =
            sqlx::query_scalar(sql("SELECT cancel_requested FROM tasks WHERE id = ?"))
                .bind(id.to_string())
                .fetch_optional(&self.reader)
                .await?;
        v.map(|v| v != 0)
            .ok_or_else(|| StoreError::NotFound(id.to_string()))
    }

    async fn finish(&self, finish: Finish) -> Result<Task> {
        let mut tx = self.begin().await?;
        let t = tasks::finish(&mut tx, finish).await?;
        self.commit(tx).await?;
        Ok(t)
    }

    async fn cancel(
        &self,
        id: TaskId,
        reason: Option<String>,
        now: Millis,
    ) -> Result<CancelOutcome> {
        let mut tx = self.begin().await?;
        let out = tasks::cancel(&mut tx, id, reason, now).await?;
        self.commit(tx).await?;
        Ok(out)
    }

    async fn retry(&self, id: TaskId, now: Millis, resume: bool) -> Result<Task> {
        let mut tx = self.begin().await?;
        let t = tasks::retry(&mut tx, id, now, resume).await?;
        self.commit(tx).await?;
        Ok(t)
    }

    async fn promote_due(&self, now: Millis) -> Result<u64> {
        let mut tx = self.begin().await?;
        let n = tasks::promote_due(&mut tx, now).await?;
        if n > 0 {
            self.commit(tx).await?;
        } else {
            tx.rollback().await?;
        }
        Ok(n)
    }

    async fn next_ready_at(&self) -> Result<Option<Millis>> {
        let mut conn = self.reader.acquire().await?;
        Ok(sqlx::query_scalar(sql(
            "SELECT MIN(ready_at) FROM tasks WHERE status = 'scheduled'",
        ))
        .fetch_one(&mut *conn)
        .await?)
    }

    async fn renew_leases(&self, node: &NodeId, until: Millis) -> Result<Vec<TaskId>> {
        let ids: Vec<String> = sqlx::query_scalar(sql(
            "UPDATE tasks SET lease_expires_at = ? WHERE node = ? AND status = 'running' RETURNING id",
        ))
        .bind(until)
        .bind(&node.0)
        .fetch_all(&self.writer)
        .await?;
        sqlx::query(sql("UPDATE nodes SET heartbeat_at = ? WHERE id = ?"))
            .bind(deputy_core::time::now_ms())
            .bind(&node.0)
            .execute(&self.writer)
            .await?;
        ids.iter().map(|s| rows::parse_id(s)).collect()
    }

    async fn nodes(&self) -> Result<Vec<deputy_core::api::NodeInfo>> {
        let rows: Vec<(String, Option<String>, i64, i64, i64)> =
            sqlx::query_as(sql("SELECT n.id, n.address, n.started_at, n.heartbeat_at,
                    (SELECT COUNT(*) FROM tasks t WHERE t.node = n.id AND t.status = 'running')
             FROM nodes n ORDER BY n.heartbeat_at DESC"))
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, address, started_at, heartbeat_at, running)| deputy_core::api::NodeInfo {
                    id,
                    address,
                    started_at,
                    heartbeat_at,
                    running: running as u64,
                },
            )
            .collect())
    }

    async fn running(&self, node: Option<&NodeId>) -> Result<Vec<Task>> {
        let mut conn = self.reader.acquire().await?;
        rows::running(&mut conn, node).await
    }

    async fn append_output(&self, batch: OutputBatch) -> Result<()> {
        let mut tx = self.begin().await?;
        output::append(&mut tx, batch).await?;
        self.commit(tx).await
    }

    async fn read_output(
        &self,
        id: TaskId,
        attempt: u32,
        stream: Option<Stream>,
        from: u64,
    ) -> Result<Vec<StoredChunk>> {
        let mut conn = self.reader.acquire().await?;
        output::read(&mut conn, id, attempt, stream, from).await
    }

    async fn events_after(
        &self,
        after: i64,
        limit: u32,
        task: Option<TaskId>,
    ) -> Result<Vec<Event>> {
        let mut conn = self.reader.acquire().await?;
        output::events_after(&mut conn, after, limit, task).await
    }

    async fn last_event_seq(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar::<_, Option<i64>>(sql("SELECT MAX(seq) FROM events"))
                .fetch_one(&self.reader)
                .await?
                .unwrap_or(0),
        )
    }

    async fn wait_committed(&self) {
        self.committed.notified().await;
    }

    async fn groups(&self) -> Result<Vec<Group>> {
        let mut conn = self.reader.acquire().await?;
        rows::groups(&mut conn).await
    }

    async fn add_group(&self, name: &str, parallel: Option<u32>, now: Millis) -> Result<Group> {
        let mut tx = self.begin().await?;
        let g = tasks::add_group(&mut tx, name, parallel, now).await?;
        self.commit(tx).await?;
        Ok(g)
    }

    async fn set_group_parallel(
        &self,
        name: &str,
        parallel: Option<u32>,
        now: Millis,
    ) -> Result<Group> {
        let mut tx = self.begin().await?;
        let g = tasks::set_group_parallel(&mut tx, name, parallel, now).await?;
        self.commit(tx).await?;
        Ok(g)
    }

    async fn set_paused(&self, group: Option<&str>, paused: bool, now: Millis) -> Result<()> {
        let mut tx = self.begin().await?;
        tasks::set_paused(&mut tx, group, paused, now).await?;
        self.commit(tx).await
    }

    async fn queue_paused(&self) -> Result<bool> {
        let v: String =
            sqlx::query_scalar(sql("SELECT value FROM settings WHERE key = 'queue_paused'"))
                .fetch_one(&self.reader)
                .await?;
        Ok(v == "1")
    }

    async fn clean(&self, before: Millis) -> Result<u64> {
        let mut tx = self.begin().await?;
        let n = tasks::clean(&mut tx, before).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn status_counts(&self) -> Result<StatusCounts> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as(sql("SELECT status, COUNT(*) FROM tasks GROUP BY status"))
                .fetch_all(&self.reader)
                .await?;
        let mut by_status = Vec::new();
        for (s, n) in rows {
            let st: Status = s.parse().map_err(StoreError::Corrupt)?;
            by_status.push((st, n as u64));
        }
        Ok(StatusCounts { by_status })
    }

    async fn queue_depths(&self) -> Result<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(sql(
            "SELECT group_name, COUNT(*) FROM tasks WHERE status = 'queued' GROUP BY group_name",
        ))
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(|(g, n)| (g, n as u64)).collect())
    }

    async fn register_node(&self, node: &NodeId, address: Option<&str>, now: Millis) -> Result<()> {
        sqlx::query(sql(
            "INSERT INTO nodes (id, started_at, heartbeat_at, address) VALUES (?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at,
               heartbeat_at = excluded.heartbeat_at, address = excluded.address",
        ))
        .bind(&node.0)
        .bind(now)
        .bind(now)
        .bind(address)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn attempt_event(
        &self,
        id: TaskId,
        attempt: u32,
        body: deputy_core::EventBody,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let cur = rows::load_row(&mut tx, id).await?;
        if cur.status != Status::Running || cur.attempt != attempt {
            return Err(StoreError::Conflict {
                id,
                expected: format!("running (attempt {attempt})"),
                actual: cur.status,
            });
        }
        tasks::append_event(&mut tx, Some(id), &body, now).await?;
        self.commit(tx).await
    }

    async fn record_llm(&self, records: &[LlmRecord]) -> Result<()> {
        // No event seq is taken, so no lock is either; and nothing to announce.
        let mut tx = self.writer.begin().await?;
        for r in records {
            trace::record(&mut tx, r).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn trace(&self, id: TaskId) -> Result<Vec<LlmRun>> {
        let mut conn = self.reader.acquire().await?;
        trace::load(&mut conn, id).await
    }

    async fn close(&self) {
        let _ = self.closing.send(true);
        self.reader.close().await;
        self.writer.close().await;
    }
}
