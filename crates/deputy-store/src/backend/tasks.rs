//! Every write to task state. Each function runs inside the caller's transaction; the
//! status changes all go through [`apply`], the compare-and-set that checks the core
//! state machine, writes the row and appends the event.

use std::collections::HashMap;

use deputy_core::event::EventBody;
use deputy_core::status::check_transition;
use deputy_core::submit::{DepTarget, ValidTask};
use deputy_core::time::Millis;
use deputy_core::{DepMode, Dependency, NodeId, Status, Task, TaskId};

use super::dialect::Conn;
use super::rows::{self, load_row, load_task};
use crate::sql::{Bind, EventRow, Exec, Query, query};
use crate::{CancelOutcome, Finish, Group, Result, StoreError, Submitted};

pub(super) async fn append_event(
    conn: &mut Conn,
    task: Option<TaskId>,
    body: &EventBody,
    now: Millis,
) -> Result<i64> {
    let row = vec![
        task.map(|t| t.key()).value(),
        body.type_name().value(),
        body.payload().to_string().value(),
        now.value(),
    ];
    let mut q = events_insert([row]);
    q.push(" RETURNING seq");
    q.scalar(conn).await
}

/// The statement that appends `rows` (task id, type, payload, time) to the log, numbered
/// in their order. On SQLite `AUTOINCREMENT` numbers them. On PostgreSQL the statement
/// does: one past the highest number stored or ever handed out (`event_seq.floor`,
/// migrations 0005 and 0008), read once for all the rows. That is safe because every
/// append holds the write lock exclusively or the event-order lock, and it rolls back
/// with its transaction, leaving no gap.
fn events_insert(rows: impl IntoIterator<Item = Vec<crate::sql::Value>>) -> Query {
    if super::dialect::EVENT_SEQ_IN_INSERT {
        let mut q = query(
            "INSERT INTO events (seq, task_id, type, payload, at)
             SELECT n.base + v.ord, v.task_id, v.type, v.payload, v.at FROM (VALUES ",
        );
        q.push_rows(rows.into_iter().enumerate(), |(i, mut row)| {
            row.insert(0, (i as i64 + 1).value());
            row
        });
        q.push(
            ") AS v (ord, task_id, type, payload, at),
             (SELECT GREATEST(COALESCE(MAX(seq), 0), (SELECT floor FROM event_seq)) AS base
              FROM events) AS n
             ORDER BY v.ord",
        );
        q
    } else {
        let mut q = query("INSERT INTO events (task_id, type, payload, at) VALUES ");
        q.push_rows(rows, |row| row);
        q
    }
}

/// Defers an event to the writer's flush ([`flush_events`]): what the writes that may
/// share a transaction with other nodes' (claims, plain ends) use instead of
/// [`append_event`]. Its `seq` is not known until then, so only events nothing in the
/// transaction refers to are deferred.
fn defer_event(conn: &mut Conn, task: TaskId, body: &EventBody, now: Millis) {
    conn.deferred_events().push(EventRow {
        task: Some(task.key()),
        kind: body.type_name(),
        payload: body.payload().to_string(),
        at: now,
    });
}

/// Rows per statement when flushing: 4 values each, well under either backend's limit
/// on bound values.
const FLUSH_ROWS: usize = 1000;

/// Appends the deferred events, in the order they were deferred. With `lock_seq` it
/// first takes the backend's event-order lock (`dialect::lock_event_seq`), held until
/// the commit.
pub(super) async fn flush_events(conn: &mut Conn, lock_seq: bool) -> Result<()> {
    let rows = std::mem::take(conn.deferred_events());
    if rows.is_empty() {
        return Ok(());
    }
    if lock_seq {
        super::dialect::lock_event_seq(conn).await?;
    }
    for chunk in rows.chunks(FLUSH_ROWS) {
        events_insert(chunk.iter().map(|e| {
            vec![
                e.task.clone().value(),
                e.kind.value(),
                e.payload.clone().value(),
                e.at.value(),
            ]
        }))
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// One status change, described by what it sets besides the status.
#[derive(Debug, Default)]
struct Move {
    new_attempt: bool,
    reason: Option<String>,
    exit_code: Option<i32>,
    signal: Option<i32>,
    ready_at: Option<Millis>,
    claim: Option<(String, Millis)>,
    /// An ending agent attempt's usage.
    usage: Option<deputy_core::agent::AgentUsage>,
    /// For a new attempt: the session it resumes.
    resume_session: Option<String>,
}

/// The compare-and-set at the heart of the store.
async fn apply(conn: &mut Conn, cur: &Task, to: Status, mv: Move, now: Millis) -> Result<Task> {
    check_transition(cur.status, to, mv.new_attempt)
        .map_err(|e| StoreError::Invalid(format!("task {}: {e}", cur.id)))?;
    let mut t = cur.clone();
    t.status = to;
    t.updated_at = now;
    if mv.new_attempt {
        t.attempt += 1;
        t.started_at = None;
        t.finished_at = None;
        t.exit_code = None;
        t.signal = None;
        t.pgid = None;
        t.cancel_requested = false;
        t.lease_expires_at = None;
        t.resume_session = mv.resume_session.clone();
    }
    if mv.usage.is_some() {
        t.usage = mv.usage.clone();
    }
    t.reason = mv.reason.clone();
    match to {
        Status::Running => {
            let (node, lease) = mv.claim.clone().unwrap_or_default();
            t.node = Some(node);
            t.lease_expires_at = Some(lease);
            t.started_at = Some(now);
            t.pgid = None;
            t.ready_at = None;
        }
        Status::Queued => t.ready_at = None,
        Status::Scheduled => t.ready_at = mv.ready_at,
        Status::Blocked => {}
        _ => {
            // Terminal.
            t.finished_at = Some(now);
            t.exit_code = mv.exit_code;
            t.signal = mv.signal;
            t.lease_expires_at = None;
            t.ready_at = None;
        }
    }
    let updated = query(
        "UPDATE tasks SET status = ?, attempt = ?, updated_at = ?, started_at = ?, finished_at = ?,
            ready_at = ?, exit_code = ?, signal = ?, reason = ?, node = ?, lease_expires_at = ?,
            pgid = ?, cancel_requested = ?, usage = ?, resume_session = ?
         WHERE id = ? AND status = ? AND attempt = ?",
    )
    .bind(t.status.as_str())
    .bind(i64::from(t.attempt))
    .bind(t.updated_at)
    .bind(t.started_at)
    .bind(t.finished_at)
    .bind(t.ready_at)
    .bind(t.exit_code.map(i64::from))
    .bind(t.signal.map(i64::from))
    .bind(&t.reason)
    .bind(&t.node)
    .bind(t.lease_expires_at)
    .bind(t.pgid.map(i64::from))
    .bind(i64::from(t.cancel_requested))
    .bind(t.usage.as_ref().map(rows::usage_json))
    .bind(&t.resume_session)
    .bind(t.id.key())
    .bind(cur.status.as_str())
    .bind(i64::from(cur.attempt))
    .execute(conn)
    .await?;
    if updated != 1 {
        let actual = load_row(conn, cur.id).await?;
        return Err(StoreError::Conflict {
            id: cur.id,
            expected: format!("{} (attempt {})", cur.status, cur.attempt),
            actual: actual.status,
        });
    }
    if cur.status == Status::Running {
        query("UPDATE attempts SET status = ?, finished_at = ?, exit_code = ?, signal = ?, reason = ?,
                 usage = ?
             WHERE task_id = ? AND number = ?")
        .bind(to.as_str())
        .bind(now)
        .bind(t.exit_code.map(i64::from))
        .bind(t.signal.map(i64::from))
        .bind(&t.reason)
        .bind(mv.usage.as_ref().map(rows::usage_json))
        .bind(t.id.key())
        .bind(i64::from(cur.attempt))
        .execute(conn)
        .await?;
        // Model calls the attempt left unfinished end with it (only agents make any).
        if matches!(t.spec.kind, deputy_core::TaskKind::Agent { .. }) {
            super::trace::interrupt(conn, t.id, cur.attempt, now).await?;
        }
    }
    if to == Status::Running {
        query(
            "INSERT INTO attempts (task_id, number, status, node, started_at) VALUES (?, ?, 'running', ?, ?)",
        )
        .bind(t.id.key())
        .bind(i64::from(t.attempt))
        .bind(&t.node)
        .bind(now)
        .execute(conn)
        .await?;
    }
    append_event(
        conn,
        Some(t.id),
        &EventBody::TaskStatus {
            from: cur.status,
            to,
            attempt: t.attempt,
            reason: mv.reason,
            exit_code: mv.exit_code,
            signal: mv.signal,
            run_at: if to == Status::Scheduled {
                t.ready_at
            } else {
                None
            },
        },
        now,
    )
    .await?;
    Ok(t)
}

/// A task reached a terminal status with no retry to follow: announce it and settle
/// every dependent that was waiting on it, transitively.
async fn ended_for_good(conn: &mut Conn, task: &Task, now: Millis) -> Result<()> {
    append_event(
        conn,
        Some(task.id),
        &EventBody::TaskFinished {
            status: task.status,
            attempt: task.attempt,
            exit_code: task.exit_code,
            reason: task.reason.clone(),
        },
        now,
    )
    .await?;
    let mut work = vec![task.id];
    while let Some(done) = work.pop() {
        for dependent in rows::dependents(conn, done).await? {
            let d = load_task(conn, dependent).await?;
            if d.status != Status::Blocked {
                continue;
            }
            match readiness(conn, &d.depends_on).await? {
                Readiness::Waiting => {}
                Readiness::Ready => {
                    make_ready(conn, &d, now).await?;
                }
                Readiness::DependencyFailed(reason) => {
                    let c = apply(
                        conn,
                        &d,
                        Status::Cancelled,
                        Move {
                            reason: Some(reason),
                            ..Move::default()
                        },
                        now,
                    )
                    .await?;
                    append_event(
                        conn,
                        Some(c.id),
                        &EventBody::TaskFinished {
                            status: c.status,
                            attempt: c.attempt,
                            exit_code: None,
                            reason: c.reason.clone(),
                        },
                        now,
                    )
                    .await?;
                    work.push(c.id);
                }
            }
        }
    }
    Ok(())
}

enum Readiness {
    Waiting,
    Ready,
    DependencyFailed(String),
}

async fn readiness(conn: &mut Conn, deps: &[Dependency]) -> Result<Readiness> {
    let mut waiting = false;
    for dep in deps {
        let status: String = query("SELECT status FROM tasks WHERE id = ?")
            .bind(dep.task.key())
            .scalar(conn)
            .await?;
        let status = rows::parse_status(&status)?;
        if !status.is_terminal() {
            waiting = true;
        } else if dep.mode == DepMode::Success && !status.satisfies_success_edge() {
            return Ok(Readiness::DependencyFailed(format!(
                "dependency {} failed ({status})",
                dep.task
            )));
        }
    }
    Ok(if waiting {
        Readiness::Waiting
    } else {
        Readiness::Ready
    })
}

async fn make_ready(conn: &mut Conn, t: &Task, now: Millis) -> Result<Task> {
    match t.spec.run_at {
        Some(at) if at > now => {
            apply(
                conn,
                t,
                Status::Scheduled,
                Move {
                    ready_at: Some(at),
                    ..Move::default()
                },
                now,
            )
            .await
        }
        _ => apply(conn, t, Status::Queued, Move::default(), now).await,
    }
}

pub(super) async fn submit(
    conn: &mut Conn,
    batch: Vec<ValidTask>,
    now: Millis,
) -> Result<Vec<Submitted>> {
    if batch.is_empty() {
        return Err(StoreError::Invalid("the batch is empty".into()));
    }
    // Batch keys must be unique; dependencies on keys must name one of them.
    let mut key_index: HashMap<&str, usize> = HashMap::new();
    for (i, t) in batch.iter().enumerate() {
        if let Some(k) = &t.key
            && key_index.insert(k.as_str(), i).is_some()
        {
            return Err(StoreError::Invalid(format!(
                "batch key `{k}` is used twice"
            )));
        }
    }
    let mut local_edges: Vec<Vec<usize>> = vec![Vec::new(); batch.len()];
    let mut resolved: Vec<Vec<(DepRef, DepMode)>> = Vec::with_capacity(batch.len());
    for (i, t) in batch.iter().enumerate() {
        let mut deps = Vec::new();
        for d in &t.depends_on {
            let r = match &d.target {
                DepTarget::Key(k) => {
                    let j = *key_index.get(k.as_str()).ok_or_else(|| {
                        StoreError::Invalid(format!(
                            "depends_on: no task with key `{k}` in this batch"
                        ))
                    })?;
                    local_edges[i].push(j);
                    DepRef::Local(j)
                }
                DepTarget::Task(id) => {
                    DepRef::Stored(rows::resolve(conn, id).await.map_err(|e| match e {
                        StoreError::NotFound(x) => {
                            StoreError::Invalid(format!("depends_on: no task {x}"))
                        }
                        other => other,
                    })?)
                }
            };
            deps.push((r, d.mode));
        }
        resolved.push(deps);
    }
    if let Some(cycle) = deputy_core::dag::find_cycle(&local_edges) {
        let names: Vec<String> = cycle
            .iter()
            .map(|&i| batch[i].key.clone().unwrap_or_else(|| format!("#{i}")))
            .collect();
        return Err(StoreError::Invalid(format!(
            "dependency cycle: {}",
            names.join(" -> ")
        )));
    }
    let groups: std::collections::HashSet<&str> =
        batch.iter().map(|t| t.spec.group.as_str()).collect();
    for group in groups {
        let exists: Option<String> = query("SELECT name FROM groups WHERE name = ?")
            .bind(group)
            .scalar_optional(conn)
            .await?;
        if exists.is_none() {
            return Err(StoreError::UnknownGroup(group.to_string()));
        }
    }

    // Insert in dependency order, so every edge points at a stored row.
    let order = topo_order(&local_edges);
    let mut ids: Vec<Option<TaskId>> = vec![None; batch.len()];
    let mut out: Vec<Option<Submitted>> = vec![None; batch.len()];
    // Tasks with no edges, no batch key and no idempotency key (the common bulk
    // submit) are inserted together, a few statements for all of them.
    let plain: Vec<usize> = (0..batch.len())
        .filter(|&i| {
            let t = &batch[i];
            t.depends_on.is_empty() && t.key.is_none() && t.spec.idempotency_key.is_none()
        })
        .collect();
    for chunk in plain.chunks(INSERT_ROWS) {
        let tasks: Vec<&ValidTask> = chunk.iter().map(|&i| &batch[i]).collect();
        for (&i, task) in chunk
            .iter()
            .zip(insert_plain_tasks(conn, &tasks, now).await?)
        {
            ids[i] = Some(task.id);
            out[i] = Some(Submitted {
                task,
                created: true,
            });
        }
    }
    for i in order {
        if out[i].is_some() {
            continue;
        }
        let t = &batch[i];
        if let Some(key) = &t.spec.idempotency_key {
            let existing: Option<String> = query("SELECT id FROM tasks WHERE idempotency_key = ?")
                .bind(key)
                .scalar_optional(conn)
                .await?;
            if let Some(existing) = existing {
                let task = load_task(conn, rows::parse_id(&existing)?).await?;
                ids[i] = Some(task.id);
                out[i] = Some(Submitted {
                    task,
                    created: false,
                });
                continue;
            }
        }
        let deps: Vec<Dependency> = resolved[i]
            .iter()
            .map(|(r, mode)| Dependency {
                task: match r {
                    DepRef::Stored(id) => *id,
                    DepRef::Local(j) => ids[*j].expect("inserted in dependency order"),
                },
                mode: *mode,
            })
            .collect();
        let task = insert_task(conn, t, deps, now).await?;
        ids[i] = Some(task.id);
        out[i] = Some(Submitted {
            task,
            created: true,
        });
    }
    Ok(out
        .into_iter()
        .map(|s| s.expect("every task handled"))
        .collect())
}

#[derive(Debug, Clone, Copy)]
enum DepRef {
    Stored(TaskId),
    Local(usize),
}

fn topo_order(edges: &[Vec<usize>]) -> Vec<usize> {
    // Kahn's algorithm over the batch; the graph is known to be acyclic.
    let n = edges.len();
    let mut remaining: Vec<usize> = edges.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, deps) in edges.iter().enumerate() {
        for &j in deps {
            dependents[j].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..n).rev().filter(|&i| remaining[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop() {
        order.push(i);
        for &d in &dependents[i] {
            remaining[d] -= 1;
            if remaining[d] == 0 {
                ready.push(d);
            }
        }
    }
    order
}

/// A task as a submit creates it (attempt 1, nothing run yet).
fn fresh_task(
    t: &ValidTask,
    status: Status,
    depends_on: Vec<Dependency>,
    ready_at: Option<Millis>,
    reason: Option<String>,
    now: Millis,
) -> Task {
    Task {
        id: TaskId::new(),
        status,
        attempt: 1,
        spec: t.spec.clone(),
        depends_on,
        created_at: now,
        updated_at: now,
        started_at: None,
        finished_at: status.is_terminal().then_some(now),
        exit_code: None,
        signal: None,
        reason,
        ready_at,
        node: None,
        lease_expires_at: None,
        pgid: None,
        cancel_requested: false,
        usage: None,
        resume_session: None,
    }
}

fn created_event(t: &Task) -> EventBody {
    EventBody::TaskCreated {
        status: t.status,
        name: t.spec.title(),
        group: t.spec.group.clone(),
        priority: t.spec.priority,
    }
}

/// The insert of new tasks' rows, each with its queue position (its `task.created` seq).
fn insert_rows(rows: &[(&Task, i64)]) -> Result<Query> {
    let mut q = query(
        "INSERT INTO tasks (id, status, priority, group_name, attempt, spec, title, idempotency_key,
            queue_seq, created_at, updated_at, ready_at, reason, finished_at) VALUES ",
    );
    let mut values = Vec::with_capacity(rows.len());
    for (t, seq) in rows {
        let spec =
            serde_json::to_string(&t.spec).map_err(|e| StoreError::Invalid(e.to_string()))?;
        values.push(vec![
            t.id.key().value(),
            t.status.as_str().value(),
            t.spec.priority.rank().value(),
            t.spec.group.clone().value(),
            i64::from(t.attempt).value(),
            spec.value(),
            t.spec.title().value(),
            t.spec.idempotency_key.clone().value(),
            seq.value(),
            t.created_at.value(),
            t.updated_at.value(),
            t.ready_at.value(),
            t.reason.clone().value(),
            t.finished_at.value(),
        ]);
    }
    q.push_rows(values, |v| v);
    Ok(q)
}

/// Rows per multi-row insert: well under both backends' limits on bound values
/// (13 values a task).
const INSERT_ROWS: usize = 500;

/// Inserts tasks that depend on nothing and that nothing in their batch depends on:
/// their `task.created` events in one statement (each task's queue position is its
/// event's seq), the tasks in one, their labels in one.
async fn insert_plain_tasks(
    conn: &mut Conn,
    batch: &[&ValidTask],
    now: Millis,
) -> Result<Vec<Task>> {
    let tasks: Vec<Task> = batch
        .iter()
        .map(|t| match t.spec.run_at {
            Some(at) if at > now => {
                fresh_task(t, Status::Scheduled, Vec::new(), Some(at), None, now)
            }
            _ => fresh_task(t, Status::Queued, Vec::new(), None, None, now),
        })
        .collect();
    let mut q = events_insert(tasks.iter().map(|t| {
        let created = created_event(t);
        vec![
            t.id.key().value(),
            created.type_name().value(),
            created.payload().to_string().value(),
            now.value(),
        ]
    }));
    q.push(" RETURNING seq, task_id");
    let seqs: HashMap<String, i64> = q
        .fetch_as::<(i64, String)>(conn)
        .await?
        .into_iter()
        .map(|(seq, id)| (id, seq))
        .collect();
    let mut rows = Vec::with_capacity(tasks.len());
    for t in &tasks {
        let seq = *seqs
            .get(&t.id.key())
            .ok_or_else(|| StoreError::Corrupt(format!("no event was stored for task {}", t.id)))?;
        rows.push((t, seq));
    }
    insert_rows(&rows)?.execute(conn).await?;
    let labels: Vec<(&String, String, i64)> = rows
        .iter()
        .flat_map(|(t, seq)| t.spec.labels.iter().map(move |l| (l, t.id.key(), *seq)))
        .collect();
    for chunk in labels.chunks(INSERT_ROWS * 4) {
        let mut q = query("INSERT INTO task_labels (label, task_id, queue_seq) VALUES ");
        q.push_rows(chunk, |(label, id, seq)| {
            vec![(*label).value(), id.clone().value(), seq.value()]
        });
        q.push(" ON CONFLICT DO NOTHING");
        q.execute(conn).await?;
    }
    Ok(tasks)
}

async fn insert_task(
    conn: &mut Conn,
    t: &ValidTask,
    deps: Vec<Dependency>,
    now: Millis,
) -> Result<Task> {
    let (status, reason, ready_at) = match readiness(conn, &deps).await? {
        Readiness::Waiting => (Status::Blocked, None, None),
        Readiness::DependencyFailed(r) => (Status::Cancelled, Some(r), None),
        Readiness::Ready => match t.spec.run_at {
            Some(at) if at > now => (Status::Scheduled, None, Some(at)),
            _ => (Status::Queued, None, None),
        },
    };
    let task = fresh_task(t, status, deps, ready_at, reason, now);
    let id = task.id;
    let seq = append_event(conn, Some(id), &created_event(&task), now).await?;
    insert_rows(&[(&task, seq)])?.execute(conn).await?;
    for label in &t.spec.labels {
        query(
            "INSERT INTO task_labels (label, task_id, queue_seq) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(label)
        .bind(id.key())
        .bind(seq)
        .execute(conn)
        .await?;
    }
    for d in &task.depends_on {
        query("INSERT INTO task_deps (task_id, depends_on, mode) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
            .bind(id.key())
            .bind(d.task.key())
            .bind(d.mode.to_string())
            .execute(conn)
            .await?;
    }
    if status.is_terminal() {
        ended_for_good(conn, &task, now).await?;
    }
    Ok(task)
}

/// Claims up to `max` ready tasks in one go: the best queued tasks of each group with
/// room (one index seek per group, never more than its free slots), the best `max` of
/// those, then one compare-and-set `UPDATE` for all of them, one insert of their
/// attempts and one of their events. The statements per claim grow with the number of
/// groups, not of tasks claimed or queued.
pub(super) async fn claim_batch(
    conn: &mut Conn,
    node: &NodeId,
    lease_ms: u64,
    now: Millis,
    max: usize,
) -> Result<Vec<Task>> {
    if max == 0 {
        return Ok(Vec::new());
    }
    let open: Vec<(String, Option<i64>, i64)> = open_groups().fetch_as(conn).await?;
    let mut candidates: Vec<(i64, i64, Task)> = Vec::new();
    for (group, parallel, mut running) in open {
        if parallel.is_some() && super::dialect::CONCURRENT_WRITERS {
            // Another node's claim from this group may be committing now: take turns on
            // the group's row (in name order, so two claims never wait on each other),
            // then count again, seeing every claim committed before.
            super::dialect::lock_group(conn, &group).await?;
            running = query(&format!(
                "SELECT {} FROM groups WHERE name = ?",
                rows::RUNNING_IN_GROUP
            ))
            .bind(&group)
            .scalar(conn)
            .await?;
        }
        let room = parallel
            .map_or(max, |p| (p - running).max(0) as usize)
            .min(max);
        if room == 0 {
            continue;
        }
        let rows = query(super::dialect::CLAIM_GROUP)
            .bind(&group)
            .bind(room as i64)
            .fetch_all(conn)
            .await?;
        for row in &rows {
            let task = rows::task_from_row(row)?;
            let queue_seq: i64 = row.get("queue_seq")?;
            candidates.push((task.spec.priority.rank(), queue_seq, task));
        }
    }
    candidates.sort_by_key(|(priority, queue_seq, _)| (*priority, *queue_seq));
    candidates.truncate(max);
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let lease = now.saturating_add(lease_ms as i64);
    let mut claimed: Vec<Task> = Vec::with_capacity(candidates.len());
    for (_, _, cur) in candidates {
        check_transition(cur.status, Status::Running, false)
            .map_err(|e| StoreError::Invalid(format!("task {}: {e}", cur.id)))?;
        // What `apply` sets for a move into `running`.
        let mut t = cur;
        t.status = Status::Running;
        t.updated_at = now;
        t.reason = None;
        t.node = Some(node.0.clone());
        t.lease_expires_at = Some(lease);
        t.started_at = Some(now);
        t.pgid = None;
        t.ready_at = None;
        claimed.push(t);
    }

    let updated = claim_update(node, lease, now, &claimed)
        .execute(conn)
        .await?;
    if updated != claimed.len() as u64 {
        // Another writer moved one of them first; this claim changes nothing.
        return Err(StoreError::Conflict {
            id: claimed[0].id,
            expected: "queued".into(),
            actual: Status::Running,
        });
    }

    let mut q = query("INSERT INTO attempts (task_id, number, status, node, started_at) VALUES ");
    q.push_rows(&claimed, |t| {
        vec![
            t.id.key().value(),
            i64::from(t.attempt).value(),
            "running".value(),
            node.0.as_str().value(),
            now.value(),
        ]
    });
    q.execute(conn).await?;

    for t in &claimed {
        let body = EventBody::TaskStatus {
            from: Status::Queued,
            to: Status::Running,
            attempt: t.attempt,
            reason: None,
            exit_code: None,
            signal: None,
            run_at: None,
        };
        defer_event(conn, t.id, &body, now);
    }
    Ok(claimed)
}

/// The groups that may start tasks (none while the whole queue is paused), with the tasks
/// running in each one that has a limit: one statement, as every round trip counts on
/// PostgreSQL.
pub(super) fn open_groups() -> Query {
    query(&format!(
        "SELECT name, parallel, CASE WHEN parallel IS NULL THEN 0 ELSE {} END AS running
         FROM groups
         WHERE paused = 0 AND (SELECT value FROM settings WHERE key = 'queue_paused') = '0'
         ORDER BY name",
        rows::RUNNING_IN_GROUP
    ))
}

/// The compare-and-set of a claim: every named task from `queued` to `running` on
/// `node`. The rows are found by id and their status only checked: SQLite's planner,
/// without statistics, would otherwise walk every queued task through the status index,
/// so a claim would cost as much as the queue is long.
pub(super) fn claim_update(node: &NodeId, lease: Millis, now: Millis, tasks: &[Task]) -> Query {
    let mut q = query(
        "UPDATE tasks SET status = 'running', reason = NULL, pgid = NULL, ready_at = NULL, updated_at = ",
    );
    q.push_bind(now)
        .push(", started_at = ")
        .push_bind(now)
        .push(", node = ")
        .push_bind(node.0.clone())
        .push(", lease_expires_at = ")
        .push_bind(lease)
        .push(" WHERE ")
        .push(super::dialect::STATUS_CHECKED_ONLY)
        .push(" = 'queued' AND id IN (")
        .push_list(tasks.iter().map(|t| t.id.key()))
        .push(")");
    q
}

pub(super) async fn finish(conn: &mut Conn, f: Finish) -> Result<Task> {
    let cur = load_row(conn, f.id).await?;
    if cur.status != Status::Running || cur.attempt != f.attempt {
        return Err(StoreError::Conflict {
            id: f.id,
            expected: format!("running (attempt {})", f.attempt),
            actual: cur.status,
        });
    }
    let ended = apply(
        conn,
        &cur,
        f.status,
        Move {
            reason: f.reason.clone(),
            exit_code: f.exit_code,
            signal: f.signal,
            usage: f.usage.clone(),
            ..Move::default()
        },
        f.now,
    )
    .await?;
    match f.retry_at {
        Some(at) if f.status.is_retryable_outcome() => {
            let (to, ready_at) = if at > f.now {
                (Status::Scheduled, Some(at))
            } else {
                (Status::Queued, None)
            };
            let reason = format!(
                "retrying: attempt {} ended {}{}",
                ended.attempt,
                ended.status,
                ended
                    .reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
            apply(
                conn,
                &ended,
                to,
                Move {
                    new_attempt: true,
                    reason: Some(reason),
                    ready_at,
                    ..Move::default()
                },
                f.now,
            )
            .await
        }
        _ => {
            ended_for_good(conn, &ended, f.now).await?;
            Ok(ended)
        }
    }
}

/// Records the ends of many attempts at once, each a compare-and-set of its own: one
/// whose task is no longer `running` at that attempt gets its own `Conflict` and changes
/// nothing, the others commit. The common end (a final outcome, no dependents, no model
/// calls to close) of all of them takes a fixed handful of statements: one read of the
/// rows (each with whether it has dependents), one `UPDATE … FROM (VALUES …)` of the tasks and one of
/// their attempts, and one insert of their events. Any other end (a
/// retry to schedule, dependents to settle, an agent's trace to close) goes through
/// [`finish`], one at a time, and only with `settle`: without it (a transaction that
/// may run beside other nodes', which must not touch dependents or schedule retries)
/// such an end is left unrecorded, its result `None`. The plain ends' events are
/// deferred ([`defer_event`]). Results are in the order of `finishes`; an `Err` of the
/// whole call is a database failure.
pub(super) async fn finish_many(
    conn: &mut Conn,
    finishes: &[Finish],
    settle: bool,
) -> Result<Vec<Option<Result<Task>>>> {
    // The rows, each with whether any task depends on it, in one statement.
    let mut q = query(&format!(
        "SELECT {}, EXISTS (SELECT 1 FROM task_deps d WHERE d.depends_on = tasks.id) AS has_dependents
         FROM tasks WHERE id IN (",
        rows::TASK_COLUMNS
    ));
    q.push_list(finishes.iter().map(|f| f.id.key())).push(")");
    let mut current: HashMap<TaskId, Task> = HashMap::new();
    let mut with_dependents = std::collections::HashSet::new();
    for row in q.fetch_all(conn).await? {
        let t = rows::task_from_row(&row)?;
        if row.get::<i64>("has_dependents")? != 0 {
            with_dependents.insert(t.id);
        }
        current.insert(t.id, t);
    }

    let mut results: Vec<Option<Result<Task>>> = finishes.iter().map(|_| None).collect();
    // (index, the task as it was)
    let mut simple: Vec<(usize, Task)> = Vec::new();
    let mut one_by_one: Vec<usize> = Vec::new();
    // A second end of an attempt already ended in this batch: it loses to the first, as
    // it would one write after the other.
    let mut repeated: Vec<usize> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, f) in finishes.iter().enumerate() {
        let Some(cur) = current.get(&f.id) else {
            results[i] = Some(Err(StoreError::NotFound(f.id.to_string())));
            continue;
        };
        if cur.status != Status::Running || cur.attempt != f.attempt {
            results[i] = Some(Err(StoreError::Conflict {
                id: f.id,
                expected: format!("running (attempt {})", f.attempt),
                actual: cur.status,
            }));
            continue;
        }
        if !seen.insert(f.id) {
            repeated.push(i);
            continue;
        }
        let retries = f.retry_at.is_some() && f.status.is_retryable_outcome();
        let agent = matches!(cur.spec.kind, deputy_core::TaskKind::Agent { .. });
        if retries || agent || with_dependents.contains(&f.id) {
            one_by_one.push(i);
        } else {
            simple.push((i, cur.clone()));
        }
    }

    if !simple.is_empty() {
        for (i, cur) in &simple {
            check_transition(cur.status, finishes[*i].status, false)
                .map_err(|e| StoreError::Invalid(format!("task {}: {e}", cur.id)))?;
        }
        let mut q = query(
            "UPDATE tasks SET status = v.column3, updated_at = v.column4, finished_at = v.column4,
                exit_code = v.column5, signal = v.column6, reason = v.column7,
                usage = COALESCE(v.column8, tasks.usage), lease_expires_at = NULL, ready_at = NULL
             FROM (VALUES ",
        );
        q.push_rows(&simple, |(i, _)| finish_values(&finishes[*i]));
        q.push(
            ") AS v WHERE tasks.id = v.column1 AND tasks.attempt = v.column2 AND tasks.status = 'running'",
        );
        let changed = q.execute(conn).await?;
        if changed != simple.len() as u64 {
            // Impossible under the write lock (the rows were read in this transaction);
            // refuse rather than record half of it.
            return Err(StoreError::WriteFailed(format!(
                "{changed} of {} attempt ends applied; nothing was recorded",
                simple.len()
            )));
        }
        let mut q = query(
            "UPDATE attempts SET status = v.column3, finished_at = v.column4, exit_code = v.column5,
                signal = v.column6, reason = v.column7, usage = v.column8
             FROM (VALUES ",
        );
        q.push_rows(&simple, |(i, _)| finish_values(&finishes[*i]));
        q.push(") AS v WHERE attempts.task_id = v.column1 AND attempts.number = v.column2");
        q.execute(conn).await?;

        let mut ended = Vec::with_capacity(simple.len());
        for (i, cur) in &simple {
            let f = &finishes[*i];
            let mut t = cur.clone();
            t.status = f.status;
            t.updated_at = f.now;
            t.finished_at = Some(f.now);
            t.exit_code = f.exit_code;
            t.signal = f.signal;
            t.reason = f.reason.clone();
            if f.usage.is_some() {
                t.usage = f.usage.clone();
            }
            t.lease_expires_at = None;
            t.ready_at = None;
            ended.push((*i, t));
        }
        // Each task's status change, then its end, in the order the ends were given:
        // the same events, in the same order, as one `finish` after another.
        for (_, t) in &ended {
            let status = EventBody::TaskStatus {
                from: Status::Running,
                to: t.status,
                attempt: t.attempt,
                reason: t.reason.clone(),
                exit_code: t.exit_code,
                signal: t.signal,
                run_at: None,
            };
            defer_event(conn, t.id, &status, t.updated_at);
            let finished = EventBody::TaskFinished {
                status: t.status,
                attempt: t.attempt,
                exit_code: t.exit_code,
                reason: t.reason.clone(),
            };
            defer_event(conn, t.id, &finished, t.updated_at);
        }
        for (i, t) in ended {
            results[i] = Some(Ok(t));
        }
    }

    for i in one_by_one {
        if !settle {
            continue;
        }
        // In a savepoint of its own: a failure part way must not keep its first changes.
        query("SAVEPOINT finish").execute(conn).await?;
        let r = finish(conn, finishes[i].clone()).await;
        if r.is_err() {
            query("ROLLBACK TO SAVEPOINT finish").execute(conn).await?;
        }
        query("RELEASE SAVEPOINT finish").execute(conn).await?;
        results[i] = Some(r);
    }
    for i in repeated {
        let f = &finishes[i];
        let now = load_row(conn, f.id).await?;
        results[i] = Some(Err(StoreError::Conflict {
            id: f.id,
            expected: format!("running (attempt {})", f.attempt),
            actual: now.status,
        }));
    }
    Ok(results)
}

/// (id, attempt, status, now, exit code, signal, reason, usage) of one attempt's end.
fn finish_values(f: &Finish) -> Vec<crate::sql::Value> {
    vec![
        f.id.key().value(),
        i64::from(f.attempt).value(),
        f.status.as_str().value(),
        f.now.value(),
        f.exit_code.map(i64::from).value(),
        f.signal.map(i64::from).value(),
        f.reason.clone().value(),
        f.usage.as_ref().map(rows::usage_json).value(),
    ]
}

pub(super) async fn cancel(
    conn: &mut Conn,
    id: TaskId,
    reason: Option<String>,
    now: Millis,
) -> Result<CancelOutcome> {
    let cur = load_task(conn, id).await?;
    match cur.status {
        s if s.is_pending() => {
            let t = apply(
                conn,
                &cur,
                Status::Cancelled,
                Move {
                    reason: Some(reason.unwrap_or_else(|| "cancelled before it started".into())),
                    ..Move::default()
                },
                now,
            )
            .await?;
            ended_for_good(conn, &t, now).await?;
            Ok(CancelOutcome::Cancelled(t))
        }
        Status::Running => {
            if !cur.cancel_requested {
                query("UPDATE tasks SET cancel_requested = 1, updated_at = ? WHERE id = ? AND status = 'running'")
                    .bind(now)
                    .bind(id.key())
                    .execute(conn)
                    .await?;
                append_event(
                    conn,
                    Some(id),
                    &EventBody::TaskCancelRequested { reason },
                    now,
                )
                .await?;
            }
            Ok(CancelOutcome::Requested(load_task(conn, id).await?))
        }
        _ => Ok(CancelOutcome::AlreadyFinished(cur)),
    }
}

pub(super) async fn retry(conn: &mut Conn, id: TaskId, now: Millis, resume: bool) -> Result<Task> {
    let cur = load_task(conn, id).await?;
    if !cur.status.is_terminal() {
        return Err(StoreError::Conflict {
            id,
            expected: "finished".into(),
            actual: cur.status,
        });
    }
    let resume_session = if resume {
        let session = cur.usage.as_ref().and_then(|u| u.session_id.clone());
        if session.is_none() {
            return Err(StoreError::Invalid(format!(
                "task {id} has no agent session to continue: only agent CLIs that report one \
                 (claude) can be resumed; retry without --continue to start afresh"
            )));
        }
        session
    } else {
        None
    };
    apply(
        conn,
        &cur,
        Status::Queued,
        Move {
            new_attempt: true,
            reason: Some(if resume {
                "retried by request, continuing the agent session".into()
            } else {
                "retried by request".into()
            }),
            resume_session,
            ..Move::default()
        },
        now,
    )
    .await
}

pub(super) async fn promote_due(conn: &mut Conn, now: Millis) -> Result<u64> {
    let due: Vec<String> = query(
        "SELECT id FROM tasks WHERE status = 'scheduled' AND ready_at <= ? ORDER BY ready_at LIMIT 1000",
    )
    .bind(now)
    .scalars(conn)
    .await?;
    for id in &due {
        let cur = load_row(conn, rows::parse_id(id)?).await?;
        apply(conn, &cur, Status::Queued, Move::default(), now).await?;
    }
    Ok(due.len() as u64)
}

async fn load_group(conn: &mut Conn, name: &str) -> Result<Group> {
    let row = query(&format!(
        "SELECT name, parallel, paused, {} AS running FROM groups WHERE name = ?",
        rows::RUNNING_IN_GROUP
    ))
    .bind(name)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| StoreError::UnknownGroup(name.to_string()))?;
    rows::group_from_row(&row)
}

pub(super) async fn add_group(
    conn: &mut Conn,
    name: &str,
    parallel: Option<u32>,
    now: Millis,
) -> Result<Group> {
    deputy_core::limits::check_group_name(name).map_err(StoreError::Invalid)?;
    let r = query("INSERT INTO groups (name, parallel, paused, created_at) VALUES (?, ?, 0, ?) ON CONFLICT DO NOTHING")
        .bind(name)
        .bind(parallel.map(i64::from))
        .bind(now)
        .execute(conn)
        .await?;
    if r == 0 {
        return Err(StoreError::GroupExists(name.to_string()));
    }
    append_event(
        conn,
        None,
        &EventBody::QueueUpdated {
            group: Some(name.to_string()),
            paused: Some(false),
            parallel,
        },
        now,
    )
    .await?;
    load_group(conn, name).await
}

pub(super) async fn set_group_parallel(
    conn: &mut Conn,
    name: &str,
    parallel: Option<u32>,
    now: Millis,
) -> Result<Group> {
    load_group(conn, name).await?;
    query("UPDATE groups SET parallel = ? WHERE name = ?")
        .bind(parallel.map(i64::from))
        .bind(name)
        .execute(conn)
        .await?;
    append_event(
        conn,
        None,
        &EventBody::QueueUpdated {
            group: Some(name.to_string()),
            paused: None,
            parallel,
        },
        now,
    )
    .await?;
    load_group(conn, name).await
}

pub(super) async fn set_paused(
    conn: &mut Conn,
    group: Option<&str>,
    paused: bool,
    now: Millis,
) -> Result<()> {
    match group {
        Some(name) => {
            load_group(conn, name).await?;
            query("UPDATE groups SET paused = ? WHERE name = ?")
                .bind(i64::from(paused))
                .bind(name)
                .execute(conn)
                .await?;
        }
        None => {
            query("UPDATE settings SET value = ? WHERE key = 'queue_paused'")
                .bind(if paused { "1" } else { "0" })
                .execute(conn)
                .await?;
        }
    }
    append_event(
        conn,
        None,
        &EventBody::QueueUpdated {
            group: group.map(str::to_string),
            paused: Some(paused),
            parallel: None,
        },
        now,
    )
    .await?;
    Ok(())
}

pub(super) async fn clean(conn: &mut Conn, before: Millis) -> Result<u64> {
    // Only tasks whose dependents have all ended too, so no waiting task loses an edge.
    let ids: Vec<String> = query(
        "SELECT id FROM tasks t WHERE finished_at < ?
           AND status IN ('succeeded', 'failed', 'cancelled', 'timed_out', 'interrupted')
           AND NOT EXISTS (SELECT 1 FROM task_deps d JOIN tasks o ON o.id = d.task_id
                           WHERE d.depends_on = t.id AND o.finished_at IS NULL)",
    )
    .bind(before)
    .scalars(conn)
    .await?;
    for id in &ids {
        delete_task(conn, id).await?;
    }
    Ok(ids.len() as u64)
}

/// Deletes one task with its events; its output, attempts, edges and schedule run go
/// with it (foreign keys cascade).
pub(super) async fn delete_task(conn: &mut Conn, id: &str) -> Result<()> {
    super::dialect::before_deleting_events(conn).await?;
    query("DELETE FROM events WHERE task_id = ?")
        .bind(id)
        .execute(conn)
        .await?;
    query("DELETE FROM tasks WHERE id = ?")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
