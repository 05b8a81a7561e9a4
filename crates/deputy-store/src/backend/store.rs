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
use tokio::sync::{Notify, oneshot};

use super::dialect::{self, Conn};
use super::writer::{BoxFuture, WriteKind, Writer};
use super::{output, rows, schedules, tasks, trace};
use crate::sql::query;
use deputy_core::schedule::{Schedule, ScheduleRun};

use crate::{
    CancelOutcome, Finish, Fire, Fired, Group, ListQuery, OutputBatch, Page, Result, StatusCounts,
    Store, StoreError, StoredChunk, Submitted,
};

#[derive(Clone)]
pub struct DbStore {
    /// Every write goes through here: one writer, one connection, group commit.
    pub(super) writer: Writer,
    /// Resolves once the writer has let go of its connection (after `close`).
    writer_exited: Arc<tokio::sync::Mutex<Option<oneshot::Receiver<()>>>>,
    pub(super) readers: Arc<dialect::Readers>,
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
    /// Starts the writer on `conn` (a connection from `connector`, which gives it a fresh
    /// one after a failed batch) and builds the store.
    pub(super) fn new(
        connector: dialect::Connector,
        conn: Conn,
        readers: dialect::Readers,
        committed: Arc<Notify>,
        closing: tokio::sync::watch::Sender<bool>,
    ) -> Result<Self> {
        let closing = Arc::new(closing);
        let (writer, exited) =
            Writer::start(connector, conn, committed.clone(), closing.subscribe())?;
        Ok(Self {
            writer,
            writer_exited: Arc::new(tokio::sync::Mutex::new(Some(exited))),
            readers: Arc::new(readers),
            committed,
            closing,
        })
    }

    /// Runs `read` on a reader connection (committed data only).
    async fn read<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.readers.run(read).await
    }
}

#[async_trait]
impl Store for DbStore {
    async fn submit(&self, batch: Vec<ValidTask>, now: Millis) -> Result<Vec<Submitted>> {
        self.writer
            .write(WriteKind::Announces, move |c| {
                Box::pin(tasks::submit(c, batch.clone(), now))
            })
            .await
    }

    async fn get(&self, id: TaskId) -> Result<Task> {
        self.read(move |c| Box::pin(rows::load_task(c, id))).await
    }

    async fn resolve(&self, id: &IdRef) -> Result<TaskId> {
        let id = id.clone();
        self.read(move |c| Box::pin(async move { rows::resolve(c, &id).await }))
            .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Page> {
        let query = query.clone();
        self.read(move |c| Box::pin(async move { rows::list(c, &query).await }))
            .await
    }

    async fn attempts(&self, id: TaskId) -> Result<Vec<Attempt>> {
        self.read(move |c| Box::pin(rows::attempts(c, id))).await
    }

    async fn dependents(&self, id: TaskId) -> Result<Vec<TaskId>> {
        self.read(move |c| Box::pin(rows::dependents(c, id))).await
    }

    async fn claim_batch(
        &self,
        node: &NodeId,
        lease_ms: u64,
        now: Millis,
        max: usize,
    ) -> Result<Vec<Task>> {
        // Peek on a reader first: when nothing is ready (the common case after the last
        // task was claimed) or the queue is paused, the writer stays free for the
        // supervisors' writes. The claim itself checks both again under the write lock.
        let ready: i64 = self
            .read(|c| {
                Box::pin(
                    query(
                        "SELECT COUNT(*) FROM (SELECT 1 FROM tasks WHERE status = 'queued' LIMIT 1) AS q
                         WHERE (SELECT value FROM settings WHERE key = 'queue_paused') = '0'",
                    )
                    .scalar(c),
                )
            })
            .await?;
        if ready == 0 {
            return Ok(Vec::new());
        }
        self.claim_queued(node, lease_ms, now, max).await
    }

    async fn claim_queued(
        &self,
        node: &NodeId,
        lease_ms: u64,
        now: Millis,
        max: usize,
    ) -> Result<Vec<Task>> {
        let node = node.clone();
        self.writer
            .write(WriteKind::Shares, move |c| {
                let node = node.clone();
                Box::pin(async move { tasks::claim_batch(c, &node, lease_ms, now, max).await })
            })
            .await
    }

    async fn set_pgid(&self, id: TaskId, attempt: u32, pgid: i32) -> Result<()> {
        self.writer
            .write(WriteKind::Statement, move |c| {
                Box::pin(async move {
                    let changed = query(
                        "UPDATE tasks SET pgid = ? WHERE id = ? AND attempt = ? AND status = 'running'",
                    )
                    .bind(i64::from(pgid))
                    .bind(id.key())
                    .bind(i64::from(attempt))
                    .execute(c)
                    .await?;
                    if changed != 1 {
                        let actual = rows::load_row(c, id).await?;
                        return Err(StoreError::Conflict {
                            id,
                            expected: format!("running (attempt {attempt})"),
                            actual: actual.status,
                        });
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn cancel_requested(&self, id: TaskId) -> Result<bool> {
        let v: Option<i64> = self
            .read(move |c| {
                Box::pin(
                    query("SELECT cancel_requested FROM tasks WHERE id = ?")
                        .bind(id.key())
                        .scalar_optional(c),
                )
            })
            .await?;
        v.map(|v| v != 0)
            .ok_or_else(|| StoreError::NotFound(id.to_string()))
    }

    async fn cancels_requested(&self, ids: &[TaskId]) -> Result<Vec<TaskId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = query("SELECT id FROM tasks WHERE cancel_requested = 1 AND id IN (");
        q.push_list(ids.iter().map(TaskId::key)).push(")");
        let found: Vec<String> = self.read(move |c| Box::pin(q.scalars(c))).await?;
        found.iter().map(|s| rows::parse_id(s)).collect()
    }

    async fn finish(&self, finish: Finish) -> Result<Task> {
        self.writer.finish(finish).await
    }

    async fn cancel(
        &self,
        id: TaskId,
        reason: Option<String>,
        now: Millis,
    ) -> Result<CancelOutcome> {
        self.writer
            .write(WriteKind::Announces, move |c| {
                Box::pin(tasks::cancel(c, id, reason.clone(), now))
            })
            .await
    }

    async fn retry(&self, id: TaskId, now: Millis, resume: bool) -> Result<Task> {
        self.writer
            .write(WriteKind::Announces, move |c| {
                Box::pin(tasks::retry(c, id, now, resume))
            })
            .await
    }

    async fn promote_due(&self, now: Millis) -> Result<u64> {
        self.writer
            .write(WriteKind::Announces, move |c| {
                Box::pin(tasks::promote_due(c, now))
            })
            .await
    }

    async fn next_ready_at(&self) -> Result<Option<Millis>> {
        self.read(|c| {
            Box::pin(query("SELECT MIN(ready_at) FROM tasks WHERE status = 'scheduled'").scalar(c))
        })
        .await
    }

    async fn renew_leases(&self, node: &NodeId, until: Millis) -> Result<Vec<TaskId>> {
        let node = node.clone();
        self.writer
            .write(WriteKind::Quiet, move |c| {
                let node = node.clone();
                Box::pin(async move {
                    let ids: Vec<String> = query(
                        "UPDATE tasks SET lease_expires_at = ? WHERE node = ? AND status = 'running' RETURNING id",
                    )
                    .bind(until)
                    .bind(&node.0)
                    .scalars(c)
                    .await?;
                    query("UPDATE nodes SET heartbeat_at = ? WHERE id = ?")
                        .bind(deputy_core::time::now_ms())
                        .bind(&node.0)
                        .execute(c)
                        .await?;
                    ids.iter().map(|s| rows::parse_id(s)).collect()
                })
            })
            .await
    }

    async fn nodes(&self) -> Result<Vec<deputy_core::api::NodeInfo>> {
        let rows: Vec<(String, Option<String>, i64, i64, i64)> = self
            .read(|c| {
                Box::pin(
                    query(
                        "SELECT n.id, n.address, n.started_at, n.heartbeat_at,
                    (SELECT COUNT(*) FROM tasks t WHERE t.node = n.id AND t.status = 'running')
             FROM nodes n ORDER BY n.heartbeat_at DESC",
                    )
                    .fetch_as(c),
                )
            })
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
        let node = node.cloned();
        self.read(move |c| Box::pin(async move { rows::running(c, node.as_ref()).await }))
            .await
    }

    async fn append_output(&self, batch: OutputBatch) -> Result<()> {
        self.writer
            .write(WriteKind::Announces, move |c| {
                Box::pin(output::append(c, batch.clone()))
            })
            .await
    }

    async fn read_output(
        &self,
        id: TaskId,
        attempt: u32,
        stream: Option<Stream>,
        from: u64,
    ) -> Result<Vec<StoredChunk>> {
        self.read(move |c| Box::pin(output::read(c, id, attempt, stream, from)))
            .await
    }

    async fn events_after(
        &self,
        after: i64,
        limit: u32,
        task: Option<TaskId>,
    ) -> Result<Vec<Event>> {
        self.read(move |c| Box::pin(output::events_after(c, after, limit, task)))
            .await
    }

    async fn last_event_seq(&self) -> Result<i64> {
        let last: Option<i64> = self
            .read(|c| Box::pin(query("SELECT MAX(seq) FROM events").scalar(c)))
            .await?;
        Ok(last.unwrap_or(0))
    }

    async fn wait_committed(&self) {
        self.committed.notified().await;
    }

    async fn groups(&self) -> Result<Vec<Group>> {
        self.read(move |c| Box::pin(rows::groups(c))).await
    }

    async fn add_group(&self, name: &str, parallel: Option<u32>, now: Millis) -> Result<Group> {
        let name = name.to_string();
        self.writer
            .write(WriteKind::Announces, move |c| {
                let name = name.clone();
                Box::pin(async move { tasks::add_group(c, &name, parallel, now).await })
            })
            .await
    }

    async fn set_group_parallel(
        &self,
        name: &str,
        parallel: Option<u32>,
        now: Millis,
    ) -> Result<Group> {
        let name = name.to_string();
        self.writer
            .write(WriteKind::Announces, move |c| {
                let name = name.clone();
                Box::pin(async move { tasks::set_group_parallel(c, &name, parallel, now).await })
            })
            .await
    }

    async fn set_paused(&self, group: Option<&str>, paused: bool, now: Millis) -> Result<()> {
        let group = group.map(str::to_string);
        self.writer
            .write(WriteKind::Announces, move |c| {
                let group = group.clone();
                Box::pin(async move { tasks::set_paused(c, group.as_deref(), paused, now).await })
            })
            .await
    }

    async fn queue_paused(&self) -> Result<bool> {
        let v: String = self
            .read(|c| {
                Box::pin(query("SELECT value FROM settings WHERE key = 'queue_paused'").scalar(c))
            })
            .await?;
        Ok(v == "1")
    }

    async fn clean(&self, before: Millis) -> Result<u64> {
        self.writer
            .write(WriteKind::Quiet, move |c| Box::pin(tasks::clean(c, before)))
            .await
    }

    async fn status_counts(&self) -> Result<StatusCounts> {
        let rows: Vec<(String, i64)> = self
            .read(|c| {
                Box::pin(query("SELECT status, COUNT(*) FROM tasks GROUP BY status").fetch_as(c))
            })
            .await?;
        let mut by_status = Vec::new();
        for (s, n) in rows {
            let st: Status = s.parse().map_err(StoreError::Corrupt)?;
            by_status.push((st, n as u64));
        }
        Ok(StatusCounts { by_status })
    }

    async fn queue_depths(&self) -> Result<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = self
            .read(|c| {
                Box::pin(
                    query("SELECT group_name, COUNT(*) FROM tasks WHERE status = 'queued' GROUP BY group_name")
                        .fetch_as(c),
                )
            })
            .await?;
        Ok(rows.into_iter().map(|(g, n)| (g, n as u64)).collect())
    }

    async fn register_node(&self, node: &NodeId, address: Option<&str>, now: Millis) -> Result<()> {
        let node = node.clone();
        let address = address.map(str::to_string);
        self.writer
            .write(WriteKind::Quiet, move |c| {
                let (node, address) = (node.clone(), address.clone());
                Box::pin(async move {
                    query(
                        "INSERT INTO nodes (id, started_at, heartbeat_at, address) VALUES (?, ?, ?, ?)
                         ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at,
                           heartbeat_at = excluded.heartbeat_at, address = excluded.address",
                    )
                    .bind(&node.0)
                    .bind(now)
                    .bind(now)
                    .bind(address)
                    .execute(c)
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    async fn attempt_event(
        &self,
        id: TaskId,
        attempt: u32,
        body: deputy_core::EventBody,
        now: Millis,
    ) -> Result<()> {
        self.writer
            .write(WriteKind::Announces, move |c| {
                let body = body.clone();
                Box::pin(async move {
                    let cur = rows::load_row(c, id).await?;
                    if cur.status != Status::Running || cur.attempt != attempt {
                        return Err(StoreError::Conflict {
                            id,
                            expected: format!("running (attempt {attempt})"),
                            actual: cur.status,
                        });
                    }
                    tasks::append_event(c, Some(id), &body, now).await?;
                    Ok(())
                })
            })
            .await
    }

    async fn record_llm(&self, records: &[LlmRecord]) -> Result<()> {
        // Nothing to announce: model-call records append no events.
        let records = records.to_vec();
        self.writer
            .write(WriteKind::Quiet, move |c| {
                let records = records.clone();
                Box::pin(async move {
                    for r in &records {
                        trace::record(c, r).await?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn trace(&self, id: TaskId) -> Result<Vec<LlmRun>> {
        self.read(move |c| Box::pin(trace::load(c, id))).await
    }

    fn write_counts(&self) -> crate::WriteCounts {
        self.writer.counts()
    }

    async fn add_schedule(&self, schedule: Schedule) -> Result<Schedule> {
        self.writer
            .write(WriteKind::Announces, move |c| {
                let s = schedule.clone();
                Box::pin(async move { schedules::add(c, &s).await })
            })
            .await
    }

    async fn schedule(&self, name: &str) -> Result<Schedule> {
        let name = name.to_string();
        self.read(move |c| Box::pin(async move { schedules::get(c, &name).await }))
            .await
    }

    async fn schedules(&self) -> Result<Vec<Schedule>> {
        self.read(move |c| Box::pin(schedules::list(c))).await
    }

    async fn schedule_runs(&self, name: &str, limit: u32) -> Result<Vec<ScheduleRun>> {
        let name = name.to_string();
        self.read(move |c| Box::pin(async move { schedules::runs(c, &name, limit).await }))
            .await
    }

    async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        next_fire_at: Option<Millis>,
        now: Millis,
    ) -> Result<Schedule> {
        let name = name.to_string();
        self.writer
            .write(WriteKind::Announces, move |c| {
                let name = name.clone();
                Box::pin(
                    async move { schedules::set_paused(c, &name, paused, next_fire_at, now).await },
                )
            })
            .await
    }

    async fn remove_schedule(&self, name: &str, now: Millis) -> Result<()> {
        let name = name.to_string();
        self.writer
            .write(WriteKind::Announces, move |c| {
                let name = name.clone();
                Box::pin(async move { schedules::remove(c, &name, now).await })
            })
            .await
    }

    async fn due_schedules(&self, now: Millis, limit: u32) -> Result<Vec<Schedule>> {
        self.read(move |c| Box::pin(schedules::due(c, now, limit)))
            .await
    }

    async fn next_schedule_at(&self) -> Result<Option<Millis>> {
        self.read(move |c| Box::pin(schedules::next_at(c))).await
    }

    async fn fire_schedule(&self, fire: Fire) -> Result<Fired> {
        self.writer
            .write(WriteKind::Announces, move |c| {
                let f = fire.clone();
                Box::pin(async move { schedules::fire(c, &f).await })
            })
            .await
    }

    async fn close(&self) {
        // The writer commits what is already queued, then lets go of its connection.
        let _ = self.closing.send(true);
        if let Some(exited) = self.writer_exited.lock().await.take() {
            let _ = exited.await;
        }
        self.readers.close().await;
    }
}
