//! Group commit: one writer task owns the write connection and commits every pending
//! write in one transaction per batch.
//!
//! Callers hand the writer a closure that does their part inside the batch's
//! transaction and await their own result, which they get only after the batch
//! committed (so "commit, then announce" still holds for each of them). A batch is
//! whatever is waiting when the writer becomes free; there is no timer window, so an
//! idle store adds no latency, and a busy one turns many small transactions into one.
//!
//! A batch first runs optimistically, every write straight in the one transaction: the
//! common case, where nothing fails, pays no savepoints. If a write fails (a lost
//! compare-and-set, a bad submit), the whole transaction is rolled back and the batch is
//! run again from the start with each write in its own savepoint, so the failing write
//! rolls back only its own changes and gets its own error while the others commit. A
//! write is therefore a closure that can run more than once; each run starts from the
//! database as the writes before it in the batch left it, so results are those of running
//! the writes one after another, in order. This needs a rollback to give back the event
//! seqs it took, or the log would have gaps: SQLite's `AUTOINCREMENT` counter is part of
//! the transaction, and on PostgreSQL the number is read from the log itself by the
//! statement that appends (`tasks::events_insert`), so it is too, where a sequence would
//! not be (it also keeps a daemon killed mid-commit from leaving a gap).
//!
//! Where several nodes write to one database (PostgreSQL), a batch whose every write can
//! share ([`WriteKind::Shares`]: claims, plain attempt ends, a process group's id) runs
//! in a *shared* transaction, beside other nodes' shared ones; any other write makes the
//! batch *exclusive*, alone in the cluster (`dialect::begin_write`). A shared write
//! defers its events (`tasks::defer_event`), and the batch appends them just before its
//! commit, under a lock held to the commit (`dialect::lock_event_seq`): shared
//! transactions overlap in everything but appending and committing, and their events
//! still commit in `seq` order. An end that must do more than a plain one (a retry, a
//! dependent to settle, an agent's trace) is left by the shared run and recorded in the
//! next batch, an exclusive one, before its caller hears back. In an exclusive
//! transaction (and on SQLite, whose one writer serializes everything) a write's
//! deferred events are appended right after it, so they keep their place among the
//! events other writes append directly.
//!
//! The writer never waits on anything but the database and its queue; the queue is
//! bounded, so callers feel back-pressure instead of growing memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::dialect::{self, Conn};
pub(super) use crate::sql::BoxFuture;
use crate::sql::{Exec, query};
use crate::{Result, StoreError};

/// Writes waiting for the writer before callers wait to hand theirs over.
const QUEUE_DEPTH: usize = 4096;
/// Writes committed together at most: bounds one transaction's length (and, on
/// PostgreSQL, how long the write lock is held at a time).
pub(super) const MAX_BATCH: usize = 512;

/// One caller's write, type-erased so writes of any result type share a batch.
trait PendingWrite: Send + std::any::Any {
    /// Does the write inside the batch's transaction (again, if the batch is re-run);
    /// `shared` when the transaction may run beside other nodes' (see the module doc).
    /// Returns false when it failed (its result then holds the error, and its changes
    /// must be rolled back).
    fn run<'a>(&'a mut self, conn: &'a mut Conn, shared: bool) -> BoxFuture<'a, bool>;
    /// Hands the result to the caller once the batch's fate is known.
    fn deliver(self: Box<Self>, committed: std::result::Result<(), BatchFailure>);
    /// Whether the write appended events (the bus is woken after the commit if any did).
    fn announces(&self) -> bool;
    /// Whether the write is one statement that takes no lock and appends no event, so
    /// alone in a batch it can run without a transaction around it.
    fn single_statement(&self) -> bool;
    /// Whether the write may run in a shared transaction: it defers its events and
    /// changes only rows no other node's shared write can touch.
    fn shares(&self) -> bool;
    /// After its batch committed: what a shared run left undone, to run again in an
    /// exclusive transaction (its callers are answered then).
    fn take_left(&mut self) -> Option<Box<dyn PendingWrite>> {
        None
    }
}

/// One attempt's end, waiting for its batch.
struct FinishMember {
    finish: crate::Finish,
    /// `None` until recorded (and after a shared run that left it for an exclusive one).
    result: Option<Result<deputy_core::Task>>,
    reply: oneshot::Sender<Result<deputy_core::Task>>,
}

/// Attempt ends, recorded together ([`super::tasks::finish_many`]), each still its own
/// compare-and-set. Every end is queued as a group of one; a batch's groups are joined.
struct FinishGroup {
    members: Vec<FinishMember>,
    /// Set when the whole group failed (a database error): every member gets it.
    failed: Option<BatchFailure>,
    /// Set for the ends a shared run left (a retry to schedule, dependents to settle, an
    /// agent's trace to close): they need an exclusive transaction.
    exclusive: bool,
}

impl PendingWrite for FinishGroup {
    fn run<'a>(&'a mut self, conn: &'a mut Conn, shared: bool) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let finishes: Vec<crate::Finish> =
                self.members.iter().map(|m| m.finish.clone()).collect();
            match super::tasks::finish_many(conn, &finishes, !shared).await {
                Ok(results) => {
                    for (m, r) in self.members.iter_mut().zip(results) {
                        m.result = r;
                    }
                    self.failed = None;
                    true
                }
                Err(e) => {
                    self.failed = Some(BatchFailure::of(&e));
                    false
                }
            }
        })
    }

    fn deliver(self: Box<Self>, committed: std::result::Result<(), BatchFailure>) {
        let committed = match self.failed {
            Some(why) => Err(why),
            None => committed,
        };
        for m in self.members {
            let _ = m.reply.send(outcome(m.result, committed.clone()));
        }
    }

    fn announces(&self) -> bool {
        true
    }

    fn single_statement(&self) -> bool {
        false
    }

    fn shares(&self) -> bool {
        !self.exclusive
    }

    fn take_left(&mut self) -> Option<Box<dyn PendingWrite>> {
        if self.failed.is_some() || self.members.iter().all(|m| m.result.is_some()) {
            return None;
        }
        let (left, done) = std::mem::take(&mut self.members)
            .into_iter()
            .partition(|m| m.result.is_none());
        self.members = done;
        Some(Box::new(FinishGroup {
            members: left,
            failed: None,
            exclusive: true,
        }))
    }
}

/// Joins a batch's attempt ends into one [`FinishGroup`] (in the place of the first), so
/// they cost a few statements together instead of several each. The writes of a batch
/// were all waiting at once, so any order of them is one their callers could have seen.
/// If any of them was left for an exclusive transaction, the joined group is exclusive
/// (the batch is then exclusive anyway, and every end in it may settle).
fn group_finishes(batch: Vec<Box<dyn PendingWrite>>) -> Vec<Box<dyn PendingWrite>> {
    let groups = batch.iter().filter(|w| is_finish(w.as_ref())).count();
    if groups < 2 {
        return batch;
    }
    let mut out: Vec<Box<dyn PendingWrite>> = Vec::with_capacity(batch.len() - groups + 1);
    let mut joined: Option<(usize, FinishGroup)> = None;
    for w in batch {
        if !is_finish(w.as_ref()) {
            out.push(w);
            continue;
        }
        let any: Box<dyn std::any::Any> = w;
        let g = any
            .downcast::<FinishGroup>()
            .unwrap_or_else(|_| unreachable!("checked by is_finish"));
        match &mut joined {
            Some((_, into)) => {
                into.members.extend(g.members);
                into.exclusive |= g.exclusive;
            }
            None => joined = Some((out.len(), *g)),
        }
    }
    if let Some((at, g)) = joined {
        out.insert(at, Box::new(g));
    }
    out
}

fn is_finish(w: &dyn PendingWrite) -> bool {
    (w as &dyn std::any::Any).is::<FinishGroup>()
}

/// A caller's result once its batch's fate is known.
fn outcome<T>(
    result: Option<Result<T>>,
    committed: std::result::Result<(), BatchFailure>,
) -> Result<T> {
    match (result, committed) {
        // A write that failed on its own reports its own error, whatever the batch did.
        (Some(Err(e)), _) => Err(e),
        (Some(Ok(v)), Ok(())) => Ok(v),
        (_, Err(why)) => Err(why.into_error()),
        (None, Ok(())) => Err(StoreError::WriteFailed("the write did not run".into())),
    }
}

type WriteFn<T> = Box<dyn for<'c> Fn(&'c mut Conn) -> BoxFuture<'c, Result<T>> + Send>;

struct Write<T> {
    work: WriteFn<T>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
    kind: WriteKind,
}

/// What a write does besides changing rows, which decides how it is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WriteKind {
    /// Appends events: the bus is woken after the commit.
    Announces,
    /// Appends events only by deferring them, and changes only rows no other node's
    /// shared write can touch (its own running tasks, or queued ones it claims with
    /// `SKIP LOCKED`): may run in a shared transaction.
    Shares,
    /// Changes rows only.
    Quiet,
    /// One statement that changes rows only (no lock needed, nothing to announce).
    Statement,
}

impl<T: Send + 'static> PendingWrite for Write<T> {
    fn run<'a>(&'a mut self, conn: &'a mut Conn, _shared: bool) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let r = (self.work)(conn).await;
            let ok = r.is_ok();
            self.result = Some(r);
            ok
        })
    }

    fn deliver(self: Box<Self>, committed: std::result::Result<(), BatchFailure>) {
        // The caller may have gone away (its request was dropped); nothing to tell.
        let _ = self.reply.send(outcome(self.result, committed));
    }

    fn announces(&self) -> bool {
        matches!(self.kind, WriteKind::Announces | WriteKind::Shares)
    }

    fn single_statement(&self) -> bool {
        self.kind == WriteKind::Statement
    }

    fn shares(&self) -> bool {
        matches!(self.kind, WriteKind::Shares | WriteKind::Statement)
    }
}

/// The handle callers use; cheap to clone.
#[derive(Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Box<dyn PendingWrite>>,
    stats: Arc<WriterStats>,
}

/// What the writer has done, for tests and benchmarks.
#[derive(Debug, Default)]
pub(super) struct WriterStats {
    pub(super) writes: AtomicU64,
    pub(super) batches: AtomicU64,
    /// Time spent inside batch transactions once they hold the write lock (on
    /// PostgreSQL: the cluster-wide advisory lock; waiting for it is not counted).
    pub(super) busy_nanos: AtomicU64,
}

impl Writer {
    /// Starts the writer on `conn`, the store's only write connection (on the backend's
    /// own thread or task: `dialect::spawn_writer`). `committed` is woken after every
    /// batch that appended events. Once `closing` turns true it commits what is already
    /// queued, refuses the rest, and drops the connection; the returned receiver
    /// resolves then.
    pub(super) fn start(
        connector: dialect::Connector,
        conn: Conn,
        committed: Arc<Notify>,
        closing: watch::Receiver<bool>,
    ) -> Result<(Writer, oneshot::Receiver<()>)> {
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        let stats = Arc::new(WriterStats::default());
        let (done, exited) = oneshot::channel();
        let work = run(connector, conn, rx, committed, closing, stats.clone());
        dialect::spawn_writer(async move {
            work.await;
            drop(done);
        })?;
        Ok((Writer { queue, stats }, exited))
    }

    /// What the writer has done so far.
    pub(super) fn counts(&self) -> crate::WriteCounts {
        crate::WriteCounts {
            writes: self.stats.writes.load(Ordering::Relaxed),
            batches: self.stats.batches.load(Ordering::Relaxed),
            busy: Duration::from_nanos(self.stats.busy_nanos.load(Ordering::Relaxed)),
        }
    }

    /// Records an attempt's end in the next batch (together with the other ends waiting
    /// then) and returns the task as it now stands, once the batch committed.
    pub(super) async fn finish(&self, finish: crate::Finish) -> Result<deputy_core::Task> {
        let (reply, answer) = oneshot::channel();
        let pending: Box<dyn PendingWrite> = Box::new(FinishGroup {
            members: vec![FinishMember {
                finish,
                result: None,
                reply,
            }],
            failed: None,
            exclusive: false,
        });
        self.queue.send(pending).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Runs `work` in the next batch and returns its result once the batch committed.
    /// `work` may run more than once (see the module doc); only its last run counts.
    pub(super) async fn write<T, F>(&self, kind: WriteKind, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> Fn(&'c mut Conn) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let pending: Box<dyn PendingWrite> = Box::new(Write {
            work: Box::new(work),
            result: None,
            reply,
            kind,
        });
        self.queue.send(pending).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

/// Drops `old` and opens a new connection, waiting (with backoff) while the database
/// cannot give one.
async fn fresh_connection(connector: &dialect::Connector, old: Conn) -> Conn {
    drop(old);
    let mut delay = Duration::from_millis(50);
    loop {
        match dialect::connect(connector).await {
            Ok(c) => return c,
            Err(e) => {
                tracing::error!(%e, "the store's writer cannot reconnect; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Why a whole batch failed, handed to each of its writers (a full disk and a locked
/// database keep their kind, so callers and the API can say what to do).
#[derive(Debug, Clone)]
enum BatchFailure {
    Full(String),
    Busy(String),
    Other(String),
}

impl BatchFailure {
    fn of(e: &StoreError) -> Self {
        match e {
            StoreError::Full(m) => BatchFailure::Full(m.clone()),
            StoreError::Busy(m) => BatchFailure::Busy(m.clone()),
            other => BatchFailure::Other(other.to_string()),
        }
    }

    fn into_error(self) -> StoreError {
        match self {
            BatchFailure::Full(m) => StoreError::Full(m),
            BatchFailure::Busy(m) => StoreError::Busy(m),
            BatchFailure::Other(m) => StoreError::WriteFailed(m),
        }
    }
}

fn closed() -> StoreError {
    StoreError::WriteFailed("the store is closed".into())
}

async fn run(
    connector: dialect::Connector,
    mut conn: Conn,
    mut rx: mpsc::Receiver<Box<dyn PendingWrite>>,
    committed: Arc<Notify>,
    mut closing: watch::Receiver<bool>,
    stats: Arc<WriterStats>,
) {
    // What a shared transaction left for an exclusive one: the next batch, at once.
    let mut left: Vec<Box<dyn PendingWrite>> = Vec::new();
    loop {
        let mut batch = std::mem::take(&mut left);
        // Writes left by an earlier batch were counted with it.
        let carried = batch.len();
        if batch.is_empty() {
            let first = tokio::select! {
                w = rx.recv() => w,
                r = closing.wait_for(|c| *c), if !rx.is_closed() => {
                    // Closing (or the store is gone): take no new writes, finish the queued.
                    let _ = r;
                    rx.close();
                    continue;
                }
            };
            // None: closed and drained, or every handle dropped.
            let Some(first) = first else { break };
            batch.push(first);
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let writes = (batch.len() - carried) as u64;
        let mut batch = group_finishes(batch);
        let announces = batch.iter().any(|w| w.announces());
        let mut held = Duration::ZERO;
        let outcome = commit_batch(&mut conn, &mut batch, announces, &mut held).await;
        if outcome.is_err() {
            // A batch that failed as a whole (a COMMIT refused on a full disk, a lost
            // connection) can leave the connection inside a transaction the driver believes
            // closed; every later write would then land in it and never commit. Start over
            // on a fresh connection.
            conn = fresh_connection(&connector, conn).await;
        }
        let held = u64::try_from(held.as_nanos()).unwrap_or(u64::MAX);
        stats.busy_nanos.fetch_add(held, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.writes.fetch_add(writes, Ordering::Relaxed);
        if outcome.is_ok() && announces {
            committed.notify_one();
        }
        if outcome.is_ok() {
            left.extend(batch.iter_mut().filter_map(|w| w.take_left()));
        }
        let outcome = outcome.map_err(|e| BatchFailure::of(&e));
        for w in batch {
            w.deliver(outcome.clone());
        }
    }
}

/// Runs every write of the batch in one transaction and commits it: optimistically
/// first, and with a savepoint per write only when one of them failed. Adds to `held`
/// the time its transactions were open once they held the write lock. The transaction
/// is shared when the backend has writers side by side and every write can share.
async fn commit_batch(
    conn: &mut Conn,
    batch: &mut [Box<dyn PendingWrite>],
    announces: bool,
    held: &mut Duration,
) -> Result<()> {
    if let [only] = batch
        && only.single_statement()
    {
        // One statement is atomic by itself: no BEGIN and COMMIT around it.
        let started = Instant::now();
        only.run(conn, false).await;
        *held += started.elapsed();
        dialect::after_commit(conn);
        return Ok(());
    }
    let shared = dialect::CONCURRENT_WRITERS && batch.iter().all(|w| w.shares());
    if batch.len() > 1 {
        dialect::begin_write(conn, shared).await?;
        let locked = Instant::now();
        let mut all_ok = true;
        for w in batch.iter_mut() {
            if !run_write(conn, w.as_mut(), shared).await? {
                all_ok = false;
                break;
            }
        }
        if all_ok {
            let r = finish(conn, announces, shared).await;
            *held += locked.elapsed();
            return r;
        }
        conn.deferred_events().clear();
        let r = query("ROLLBACK").execute(conn).await;
        *held += locked.elapsed();
        r?;
    }
    dialect::begin_write(conn, shared).await?;
    let locked = Instant::now();
    let r = run_each(conn, batch, shared).await;
    let r = match r {
        Ok(true) => finish(conn, announces, shared).await,
        Ok(false) => {
            conn.deferred_events().clear();
            query("ROLLBACK").execute(conn).await.map(drop)
        }
        Err(e) => Err(e),
    };
    *held += locked.elapsed();
    r
}

/// Runs one write. In an exclusive transaction its deferred events are appended right
/// after it, so they keep their place among events other writes append directly; in a
/// shared one they wait for the commit ([`finish`]). A failed write's deferred events
/// are dropped. `Err`: the database failed, which fails the batch.
async fn run_write(conn: &mut Conn, w: &mut dyn PendingWrite, shared: bool) -> Result<bool> {
    let before = conn.deferred_events().len();
    if !w.run(conn, shared).await {
        conn.deferred_events().truncate(before);
        return Ok(false);
    }
    if !shared {
        super::tasks::flush_events(conn, false).await?;
    }
    Ok(true)
}

/// Runs the writes in the open transaction, each in its own savepoint when there are
/// several. Ok(false): the batch was one write and it failed (the transaction must be
/// rolled back).
async fn run_each(
    conn: &mut Conn,
    batch: &mut [Box<dyn PendingWrite>],
    shared: bool,
) -> Result<bool> {
    if let [only] = batch {
        // Alone, a write needs no savepoint: its failure rolls back the whole transaction.
        return run_write(conn, only.as_mut(), shared).await;
    }
    for w in batch.iter_mut() {
        query("SAVEPOINT write").execute(conn).await?;
        if run_write(conn, w.as_mut(), shared).await? {
            query("RELEASE SAVEPOINT write").execute(conn).await?;
        } else {
            query("ROLLBACK TO SAVEPOINT write").execute(conn).await?;
            query("RELEASE SAVEPOINT write").execute(conn).await?;
        }
    }
    Ok(true)
}

/// Appends a shared transaction's deferred events (taking the event-order lock, held to
/// the commit) and commits.
async fn finish(conn: &mut Conn, announces: bool, shared: bool) -> Result<()> {
    if shared {
        super::tasks::flush_events(conn, true).await?;
    }
    dialect::commit(conn, announces).await?;
    dialect::after_commit(conn);
    Ok(())
}
