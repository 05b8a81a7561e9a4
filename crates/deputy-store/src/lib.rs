//! deputy's durable store. The [`Store`] trait is the only way task state changes;
//! [`sqlite::SqliteStore`] is the embedded implementation.
//!
//! Invariants every implementation keeps:
//! - A status change is one transaction: a compare-and-set on the current status and
//!   attempt, the change's events, and (when a task ends for good) its dependents'
//!   updates. A lost race returns [`StoreError::Conflict`] and changes nothing.
//! - Events are appended with a strictly increasing `seq` and announced (through
//!   [`Store::wait_committed`]) only after their transaction committed.
//! - Only this crate knows SQL.

use async_trait::async_trait;
use deputy_core::schedule::{Schedule, ScheduleRun};
use deputy_core::submit::ValidTask;
use deputy_core::time::Millis;
use deputy_core::trace::{LlmRecord, LlmRun};
use deputy_core::{Attempt, Event, EventBody, IdRef, NodeId, Status, Stream, Task, TaskId};
use serde::{Deserialize, Serialize};

pub mod postgres;
mod sql;

/// The embedded migrations of one backend (each has its own dialect of the schema), in
/// order: version 1 is the first.
fn migrator(steps: &[(&'static str, &'static str)]) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    Migrator::with_migrations(
        steps
            .iter()
            .zip(1..)
            .map(|((name, sql), version)| {
                Migration::new(
                    version,
                    (*name).into(),
                    MigrationType::Simple,
                    (*sql).into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

pub mod sqlite;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("no task {0}")]
    NotFound(String),
    #[error("`{prefix}` matches {count} tasks; type more of the id")]
    Ambiguous { prefix: String, count: usize },
    #[error("task {id} is {actual}, not {expected}")]
    Conflict {
        id: TaskId,
        expected: String,
        actual: Status,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("no group `{0}`: create it with `deputy group add {0}`")]
    UnknownGroup(String),
    #[error("group `{0}` already exists")]
    GroupExists(String),
    /// The database's disk (or its quota) is full; the write did not happen.
    #[error(
        "the database's disk is full ({0}); nothing was written: free space where the data dir lives, then try again"
    )]
    Full(String),
    /// Another process holds the database's write lock (past the busy timeout).
    #[error(
        "the database is locked by another process ({0}); nothing was written: try again, or stop whatever holds deputy.db open for writing"
    )]
    Busy(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("database migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    /// The database holds a migration this version does not know: a newer deputy
    /// migrated it. Running on would write rows in a form that version may not read.
    #[error(
        "the database was upgraded by a newer deputy (it has schema migration {0}, which this version does not know); nothing was changed: run that newer version, or point this one at another database"
    )]
    NewerSchema(i64),
    #[error("corrupt row in the database: {0}")]
    Corrupt(String),
    /// The batch this write was committed with failed (or the store is closed); the
    /// write did not happen. Retrying it is safe.
    #[error("the database write did not commit: {0}")]
    WriteFailed(String),
    /// The schedule's tick was fired, or the schedule paused or removed, by someone else
    /// since it was read; nothing changed.
    #[error(
        "schedule `{0}` changed since it was read (another node fired it, or it was paused or removed)"
    )]
    ScheduleMoved(String),
    #[error(
        "schedule `{0}` already exists: remove it first with `deputy schedule rm {0}`, or pick another name"
    )]
    ScheduleExists(String),
    #[error("no schedule `{0}`: list them with `deputy schedule ls`")]
    NoSchedule(String),
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        match e {
            sqlx::migrate::MigrateError::VersionMissing(version) => {
                StoreError::NewerSchema(version)
            }
            other => StoreError::Migrate(other),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        // SQLITE_FULL is 13 (its extended codes keep 13 in the low byte); PostgreSQL's
        // disk_full is 53100.
        let full = match &e {
            sqlx::Error::Database(d) => {
                let code = d.code().unwrap_or_default();
                code == "53100"
                    || code.parse::<i64>().is_ok_and(|c| c & 0xff == 13)
                    || d.message().contains("disk is full")
            }
            _ => false,
        };
        // SQLITE_BUSY is 5 and SQLITE_LOCKED 6, also in the low byte of extended codes.
        let busy = match &e {
            sqlx::Error::Database(d) => d
                .code()
                .and_then(|c| c.parse::<i64>().ok())
                .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
            _ => false,
        };
        if full {
            StoreError::Full(e.to_string())
        } else if busy {
            StoreError::Busy(e.to_string())
        } else {
            StoreError::Database(e.to_string())
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A page of events stops early once its output data reaches this many bytes (it always
/// holds at least one event), so reading the log never loads unbounded output at once.
pub const EVENT_PAGE_BYTES: usize = 1 << 20;

/// Whether a page of [`Store::events_after`] read with `limit` reached the log's end as
/// it was then, so a follower need not read again to find nothing: it holds fewer than
/// `limit` events and its output is under [`EVENT_PAGE_BYTES`], so the byte budget did
/// not cut it either. Output text is decoded lossily, which never shortens it, so text
/// under the budget means stored bytes under it. A page at or over the budget is never
/// taken for the end.
pub fn page_is_last(events: &[Event], limit: u32) -> bool {
    if events.len() >= limit as usize {
        return false;
    }
    let output: usize = events
        .iter()
        .map(|e| match &e.body {
            EventBody::TaskOutput { data, .. } => data.as_ref().map_or(0, String::len),
            _ => 0,
        })
        .sum();
    output < EVENT_PAGE_BYTES
}

/// What a submit did for one task of the batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Submitted {
    pub task: Task,
    /// False when the idempotency key matched an existing task, which is returned instead.
    pub created: bool,
}

/// The end of an attempt, as the supervisor (or recovery) saw it.
#[derive(Debug, Clone)]
pub struct Finish {
    pub id: TaskId,
    pub attempt: u32,
    pub status: Status,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: Option<String>,
    /// Set when another attempt follows: when it becomes ready.
    pub retry_at: Option<Millis>,
    pub now: Millis,
    /// What an agent attempt used.
    pub usage: Option<deputy_core::agent::AgentUsage>,
}

#[derive(Debug, Clone)]
pub enum CancelOutcome {
    /// It had not started; it is now cancelled.
    Cancelled(Task),
    /// It is running; its owner was asked to stop it.
    Requested(Task),
    /// It had already ended.
    AlreadyFinished(Task),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListQuery {
    pub statuses: Vec<Status>,
    pub group: Option<String>,
    pub label: Option<String>,
    /// Substring of the name or command.
    pub text: Option<String>,
    pub created_after: Option<Millis>,
    pub created_before: Option<Millis>,
    pub limit: u32,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<i64>,
}

pub use deputy_core::api::{Group, TaskPage as Page};

/// A chunk of output ready to store.
#[derive(Debug, Clone)]
pub struct NewChunk {
    pub stream: Stream,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// A chunk already stored, named for deletion by the output cap's rolling tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkKey {
    pub stream: Stream,
    pub offset: u64,
}

#[derive(Debug, Clone)]
pub struct OutputBatch {
    pub task: TaskId,
    pub attempt: u32,
    pub chunks: Vec<NewChunk>,
    /// Chunks to delete because the rolling tail moved past them.
    pub drop: Vec<ChunkKey>,
    /// Totals for the attempt after this batch.
    pub total_bytes: u64,
    pub omitted_bytes: u64,
    pub now: Millis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredChunk {
    pub stream: Stream,
    pub offset: u64,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusCounts {
    pub by_status: Vec<(Status, u64)>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a batch in one transaction: all or nothing. Dependencies are resolved,
    /// cycles inside the batch rejected, initial statuses decided, events appended.
    async fn submit(&self, batch: Vec<ValidTask>, now: Millis) -> Result<Vec<Submitted>>;
    async fn get(&self, id: TaskId) -> Result<Task>;
    /// A full id or a unique prefix.
    async fn resolve(&self, id: &IdRef) -> Result<TaskId>;
    async fn list(&self, query: &ListQuery) -> Result<Page>;
    async fn attempts(&self, id: TaskId) -> Result<Vec<Attempt>>;
    /// Tasks that depend on `id`.
    async fn dependents(&self, id: TaskId) -> Result<Vec<TaskId>>;

    /// Claims the best ready task for `node`: highest priority, then oldest, in a group
    /// that is not paused and below its limit. Queued -> running as a compare-and-set.
    async fn claim(&self, node: &NodeId, lease_ms: u64, now: Millis) -> Result<Option<Task>> {
        Ok(self
            .claim_batch(node, lease_ms, now, 1)
            .await?
            .into_iter()
            .next())
    }
    /// Claims up to `max` ready tasks at once, best first (priority, then age), never
    /// more from a group than its free slots, in one transaction.
    async fn claim_batch(
        &self,
        node: &NodeId,
        lease_ms: u64,
        now: Millis,
        max: usize,
    ) -> Result<Vec<Task>>;
    /// [`Store::claim_batch`] for a caller that knows tasks were just queued: a store
    /// that first checks cheaply whether anything is ready (to spare the writer an empty
    /// claim) may skip that check, which would only delay the claim.
    async fn claim_queued(
        &self,
        node: &NodeId,
        lease_ms: u64,
        now: Millis,
        max: usize,
    ) -> Result<Vec<Task>> {
        self.claim_batch(node, lease_ms, now, max).await
    }
    /// Records the process group of a running attempt, before the child is let go.
    async fn set_pgid(&self, id: TaskId, attempt: u32, pgid: i32) -> Result<()>;
    /// Whether someone asked to cancel the task.
    async fn cancel_requested(&self, id: TaskId) -> Result<bool>;
    /// Which of `ids` someone asked to cancel, in one read.
    async fn cancels_requested(&self, ids: &[TaskId]) -> Result<Vec<TaskId>>;
    /// Ends a running attempt (and schedules the next one when `retry_at` is set).
    async fn finish(&self, finish: Finish) -> Result<Task>;
    async fn cancel(
        &self,
        id: TaskId,
        reason: Option<String>,
        now: Millis,
    ) -> Result<CancelOutcome>;
    /// Starts a new attempt of a finished task.
    /// A new attempt of a finished task; `resume` makes it continue the last attempt's
    /// agent session.
    async fn retry(&self, id: TaskId, now: Millis, resume: bool) -> Result<Task>;
    /// Scheduled tasks whose time has come become queued. Returns how many.
    async fn promote_due(&self, now: Millis) -> Result<u64>;
    /// When the next scheduled task becomes ready.
    async fn next_ready_at(&self) -> Result<Option<Millis>>;
    /// Extends the leases of `node`'s running tasks and records its heartbeat. Returns
    /// the tasks whose lease was renewed: a task the node runs that is missing from it
    /// was recovered by another node, which now owns it.
    async fn renew_leases(&self, node: &NodeId, until: Millis) -> Result<Vec<TaskId>>;
    /// Every node with its running count and last heartbeat.
    async fn nodes(&self) -> Result<Vec<deputy_core::api::NodeInfo>>;
    /// Running tasks, of one node or of all.
    async fn running(&self, node: Option<&NodeId>) -> Result<Vec<Task>>;

    async fn append_output(&self, batch: OutputBatch) -> Result<()>;
    /// Stored chunks of one attempt in capture order, per stream when given, skipping
    /// chunks that end at or before byte `from` of their stream.
    async fn read_output(
        &self,
        id: TaskId,
        attempt: u32,
        stream: Option<Stream>,
        from: u64,
    ) -> Result<Vec<StoredChunk>>;

    /// Events with `seq > after`, oldest first, at most `limit` (fewer when their output
    /// passes [`EVENT_PAGE_BYTES`]), optionally of one task. A page with fewer events is
    /// the log's end only if [`page_is_last`] says so; otherwise read again after its last seq.
    async fn events_after(
        &self,
        after: i64,
        limit: u32,
        task: Option<TaskId>,
    ) -> Result<Vec<Event>>;
    async fn last_event_seq(&self) -> Result<i64>;
    /// Resolves after a transaction that appended events has committed (at once if one
    /// committed since the previous call). Never misses a commit.
    async fn wait_committed(&self);

    async fn groups(&self) -> Result<Vec<Group>>;
    async fn add_group(&self, name: &str, parallel: Option<u32>, now: Millis) -> Result<Group>;
    async fn set_group_parallel(
        &self,
        name: &str,
        parallel: Option<u32>,
        now: Millis,
    ) -> Result<Group>;
    /// Pauses or resumes one group, or the whole queue when `group` is None.
    async fn set_paused(&self, group: Option<&str>, paused: bool, now: Millis) -> Result<()>;
    async fn queue_paused(&self) -> Result<bool>;

    /// Deletes tasks that finished before `before`, with their output, attempts and events.
    async fn clean(&self, before: Millis) -> Result<u64>;
    async fn status_counts(&self) -> Result<StatusCounts>;
    /// Queued tasks per group (groups with none are left out).
    async fn queue_depths(&self) -> Result<Vec<(String, u64)>>;
    async fn register_node(&self, node: &NodeId, address: Option<&str>, now: Millis) -> Result<()>;
    /// Appends an event of a running attempt (an agent's step); refused once the
    /// attempt has ended.
    async fn attempt_event(
        &self,
        id: TaskId,
        attempt: u32,
        body: EventBody,
        now: Millis,
    ) -> Result<()>;
    /// Applies records of model calls in one transaction (each is idempotent).
    async fn record_llm(&self, records: &[LlmRecord]) -> Result<()>;
    /// Every model-call run of a task, with steps and attempts, oldest first.
    async fn trace(&self, id: TaskId) -> Result<Vec<LlmRun>>;
    /// Writes committed (or rolled back) so far, and the transactions they took.
    fn write_counts(&self) -> WriteCounts;

    /// Stores a new schedule (its `next_fire_at` computed by the caller).
    async fn add_schedule(&self, schedule: Schedule) -> Result<Schedule>;
    async fn schedule(&self, name: &str) -> Result<Schedule>;
    async fn schedules(&self) -> Result<Vec<Schedule>>;
    /// The latest runs of a schedule, newest first.
    async fn schedule_runs(&self, name: &str, limit: u32) -> Result<Vec<ScheduleRun>>;
    /// Pauses, or resumes with `next_fire_at` as the next tick.
    async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        next_fire_at: Option<Millis>,
        now: Millis,
    ) -> Result<Schedule>;
    /// Deletes a schedule; the tasks it submitted stay.
    async fn remove_schedule(&self, name: &str, now: Millis) -> Result<()>;
    /// Unpaused schedules due at `now`, soonest first.
    async fn due_schedules(&self, now: Millis, limit: u32) -> Result<Vec<Schedule>>;
    /// The soonest tick of any unpaused schedule.
    async fn next_schedule_at(&self) -> Result<Option<Millis>>;
    /// Fires a due tick: a compare-and-set on its `next_fire_at` together with the tasks
    /// it submits. [`StoreError::ScheduleMoved`] when someone else got there first.
    async fn fire_schedule(&self, fire: Fire) -> Result<Fired>;
    async fn close(&self);
}

/// One firing of a schedule, as the engine planned it.
#[derive(Debug, Clone)]
pub struct Fire {
    pub name: String,
    /// The `next_fire_at` the plan was made from: the compare-and-set.
    pub expected_next: Millis,
    /// The schedule's next tick after this firing.
    pub next_fire_at: Option<Millis>,
    /// The runs to submit: each tick with its validated task.
    pub runs: Vec<(Millis, ValidTask)>,
    /// Ticks the missed policy dropped.
    pub skipped: u64,
    pub now: Millis,
}

/// What a firing did.
#[derive(Debug, Clone)]
pub struct Fired {
    pub submitted: Vec<Submitted>,
    /// Ticks that submitted nothing (missed, or overlapping a run still going).
    pub skipped: u64,
    /// Old runs deleted by retention.
    pub cleaned: u64,
}

/// What group commit did: `writes / batches` is how many writes shared a transaction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteCounts {
    pub writes: u64,
    pub batches: u64,
    /// Time those transactions held the write lock (from taking it to the commit; on
    /// SQLite, from the first statement). On PostgreSQL the lock is cluster-wide, so its
    /// share of wall time summed over nodes says how close the cluster is to being bound
    /// by it.
    pub busy: std::time::Duration,
}

#[cfg(test)]
mod page_tests {
    use super::*;

    fn output(bytes: usize) -> Event {
        Event {
            seq: 1,
            at: 0,
            task: None,
            body: EventBody::TaskOutput {
                attempt: 1,
                stream: Stream::Stdout,
                offset: 0,
                len: bytes as u64,
                data: Some("x".repeat(bytes)),
            },
        }
    }

    #[test]
    fn a_page_is_the_end_only_when_short_of_both_the_count_and_the_byte_budget() {
        assert!(page_is_last(&[], 256));
        assert!(page_is_last(&[output(EVENT_PAGE_BYTES - 1)], 256));
        // Cut by the byte budget: more may follow, however few events it holds.
        assert!(!page_is_last(&[output(EVENT_PAGE_BYTES)], 256));
        assert!(!page_is_last(
            &[output(EVENT_PAGE_BYTES / 2), output(EVENT_PAGE_BYTES / 2)],
            256
        ));
        // Full by count.
        assert!(!page_is_last(&[output(1), output(1)], 2));
        assert!(page_is_last(&[output(1)], 2));
    }
}
