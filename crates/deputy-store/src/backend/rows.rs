//! Reading rows into core types. Reads run on the reader pool or inside a write
//! transaction (both are `&mut Conn`).

use deputy_core::spec::TaskSpec;
use deputy_core::{Attempt, DepMode, Dependency, IdRef, NodeId, Status, Task, TaskId};

use super::dialect::Conn;
use crate::sql::{Query, Row, query};
use crate::{Group, ListQuery, Page, Result, StoreError};

pub(super) const TASK_COLUMNS: &str = "id, status, attempt, spec, created_at, updated_at, \
    started_at, finished_at, ready_at, exit_code, signal, reason, node, lease_expires_at, pgid, \
    cancel_requested, queue_seq, usage, resume_session";

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// A task id as the database stores it ([`TaskId::key`]).
pub(super) fn parse_id(s: &str) -> Result<TaskId> {
    TaskId::from_key(s).map_err(corrupt)
}

pub(super) fn parse_status(s: &str) -> Result<Status> {
    s.parse().map_err(corrupt)
}

pub(super) fn usage_json(u: &deputy_core::agent::AgentUsage) -> String {
    serde_json::to_string(u).expect("usage serializes")
}

fn parse_usage(row: &Row) -> Result<Option<deputy_core::agent::AgentUsage>> {
    row.get::<Option<String>>("usage")?
        .map(|u| serde_json::from_str(&u).map_err(|e| corrupt(format!("usage: {e}"))))
        .transpose()
}

pub(super) fn task_from_row(row: &Row) -> Result<Task> {
    let id: String = row.get("id")?;
    let status: String = row.get("status")?;
    let spec: String = row.get("spec")?;
    let spec: TaskSpec =
        serde_json::from_str(&spec).map_err(|e| corrupt(format!("task {id}: {e}")))?;
    Ok(Task {
        id: parse_id(&id)?,
        status: parse_status(&status)?,
        attempt: row.get::<i64>("attempt")? as u32,
        spec,
        depends_on: Vec::new(),
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
        exit_code: row.get::<Option<i64>>("exit_code")?.map(|v| v as i32),
        signal: row.get::<Option<i64>>("signal")?.map(|v| v as i32),
        reason: row.get("reason")?,
        ready_at: row.get("ready_at")?,
        node: row.get("node")?,
        lease_expires_at: row.get("lease_expires_at")?,
        pgid: row.get::<Option<i64>>("pgid")?.map(|v| v as i32),
        cancel_requested: row.get::<i64>("cancel_requested")? != 0,
        usage: parse_usage(row)?,
        resume_session: row.get("resume_session")?,
    })
}

/// Loads one task's row without its dependencies: what status changes need.
pub(super) async fn load_row(conn: &mut Conn, id: TaskId) -> Result<Task> {
    let row = query(
        "SELECT id, status, attempt, spec, created_at, updated_at, started_at, finished_at, ready_at,
                exit_code, signal, reason, node, lease_expires_at, pgid, cancel_requested, queue_seq,
                usage, resume_session
         FROM tasks WHERE id = ?",
    )
    .bind(id.key())
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
    task_from_row(&row)
}

/// Loads tasks by a `WHERE` built by the caller, with their dependencies.
async fn load_many(conn: &mut Conn, q: Query) -> Result<(Vec<Task>, Vec<i64>)> {
    let rows = q.fetch_all(conn).await?;
    let mut tasks = Vec::with_capacity(rows.len());
    let mut seqs = Vec::with_capacity(rows.len());
    for row in &rows {
        tasks.push(task_from_row(row)?);
        seqs.push(row.get::<i64>("queue_seq")?);
    }
    if !tasks.is_empty() {
        let mut dq = query("SELECT task_id, depends_on, mode FROM task_deps WHERE task_id IN (");
        dq.push_list(tasks.iter().map(|t| t.id.key())).push(")");
        let deps: Vec<(String, String, String)> = dq.fetch_as(conn).await?;
        for (task, on, mode) in deps {
            let task = parse_id(&task)?;
            let dep = Dependency {
                task: parse_id(&on)?,
                mode: mode.parse::<DepMode>().map_err(corrupt)?,
            };
            if let Some(t) = tasks.iter_mut().find(|t| t.id == task) {
                t.depends_on.push(dep);
            }
        }
    }
    Ok((tasks, seqs))
}

pub(super) async fn load_task(conn: &mut Conn, id: TaskId) -> Result<Task> {
    let mut qb = query(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = "));
    qb.push_bind(id.key());
    let (mut tasks, _) = load_many(conn, qb).await?;
    tasks
        .pop()
        .ok_or_else(|| StoreError::NotFound(id.to_string()))
}

pub(super) async fn resolve(conn: &mut Conn, id: &IdRef) -> Result<TaskId> {
    match id {
        IdRef::Full(id) => {
            let found: Option<String> = query("SELECT id FROM tasks WHERE id = ?")
                .bind(id.key())
                .scalar_optional(conn)
                .await?;
            found
                .map(|_| *id)
                .ok_or_else(|| StoreError::NotFound(id.to_string()))
        }
        IdRef::Prefix(p) => {
            // The stored key is the text form's bytes reversed, so a text prefix fixes
            // the key's end: one walk of the primary key, which a user typing a prefix
            // can afford, where a random first byte on every key cost each commit a
            // page per task in every index keyed by task.
            let found: Vec<String> = query("SELECT id FROM tasks WHERE id LIKE ? LIMIT 2")
                .bind(TaskId::key_pattern_for_prefix(p))
                .scalars(conn)
                .await?;
            match found.len() {
                0 => Err(StoreError::NotFound(p.clone())),
                1 => parse_id(&found[0]),
                n => Err(StoreError::Ambiguous {
                    prefix: p.clone(),
                    count: n,
                }),
            }
        }
    }
}

pub(super) async fn list(conn: &mut Conn, q: &ListQuery) -> Result<Page> {
    let columns: Vec<String> = TASK_COLUMNS
        .split(',')
        .map(|c| format!("t.{}", c.trim()))
        .collect();
    let columns = columns.join(", ");
    // With a label, walk that label's rows in list order (an index on (label, queue_seq))
    // rather than every task; otherwise walk tasks by queue_seq, or by (status, queue_seq).
    let (mut qb, order) = match &q.label {
        Some(l) => {
            let mut qb = query(&format!(
                "SELECT {columns} FROM task_labels l JOIN tasks t ON t.id = l.task_id WHERE l.label = "
            ));
            qb.push_bind(l.clone());
            (qb, "l.queue_seq")
        }
        None => (
            query(&format!("SELECT {columns} FROM tasks t WHERE 1 = 1")),
            "t.queue_seq",
        ),
    };
    if !q.statuses.is_empty() {
        qb.push(" AND t.status IN (")
            .push_list(q.statuses.iter().map(|s| s.as_str()))
            .push(")");
    }
    if let Some(g) = &q.group {
        qb.push(" AND t.group_name = ").push_bind(g.clone());
    }
    if let Some(text) = &q.text {
        let escaped = text
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        qb.push(" AND t.title LIKE ")
            .push_bind(format!("%{escaped}%"))
            .push(" ESCAPE '\\'");
    }
    if let Some(a) = q.created_after {
        qb.push(" AND t.created_at >= ").push_bind(a);
    }
    if let Some(b) = q.created_before {
        qb.push(" AND t.created_at < ").push_bind(b);
    }
    if let Some(c) = q.cursor {
        qb.push(&format!(" AND {order} < ")).push_bind(c);
    }
    let limit = q.limit.clamp(1, 1000);
    qb.push(&format!(" ORDER BY {order} DESC LIMIT "))
        .push_bind(i64::from(limit) + 1);
    let (mut tasks, seqs) = load_many(conn, qb).await?;
    let next_cursor = if tasks.len() > limit as usize {
        tasks.truncate(limit as usize);
        seqs.get(limit as usize - 1).copied()
    } else {
        None
    };
    Ok(Page { tasks, next_cursor })
}

pub(super) async fn running(conn: &mut Conn, node: Option<&NodeId>) -> Result<Vec<Task>> {
    Ok(load_many(conn, running_query(node)).await?.0)
}

/// The running tasks (of one node): a range of running tasks in an index, so its length
/// is bounded by the nodes' worker pools, never by the queue.
pub(super) fn running_query(node: Option<&NodeId>) -> Query {
    let mut qb = query(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'running'"
    ));
    if let Some(n) = node {
        qb.push(" AND node = ").push_bind(n.0.clone());
    }
    qb.push(" ORDER BY queue_seq");
    qb
}

pub(super) async fn attempts(conn: &mut Conn, id: TaskId) -> Result<Vec<Attempt>> {
    let rows = query(
        "SELECT number, status, node, started_at, finished_at, exit_code, signal, reason,
                output_bytes, omitted_bytes, usage
         FROM attempts WHERE task_id = ? ORDER BY number",
    )
    .bind(id.key())
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Attempt {
                number: r.get::<i64>("number")? as u32,
                status: parse_status(&r.get::<String>("status")?)?,
                node: r.get("node")?,
                started_at: r.get("started_at")?,
                finished_at: r.get("finished_at")?,
                exit_code: r.get::<Option<i64>>("exit_code")?.map(|v| v as i32),
                signal: r.get::<Option<i64>>("signal")?.map(|v| v as i32),
                reason: r.get("reason")?,
                output_bytes: r.get::<i64>("output_bytes")? as u64,
                omitted_bytes: r.get::<i64>("omitted_bytes")? as u64,
                usage: parse_usage(r)?,
            })
        })
        .collect()
}

pub(super) async fn dependents(conn: &mut Conn, id: TaskId) -> Result<Vec<TaskId>> {
    let ids: Vec<String> = query("SELECT task_id FROM task_deps WHERE depends_on = ?")
        .bind(id.key())
        .scalars(conn)
        .await?;
    ids.iter().map(|s| parse_id(s)).collect()
}

pub(super) fn group_from_row(row: &Row) -> Result<Group> {
    Ok(Group {
        name: row.get("name")?,
        parallel: row.get::<Option<i64>>("parallel")?.map(|v| v as u32),
        paused: row.get::<i64>("paused")? != 0,
        running: row.get::<i64>("running")? as u32,
    })
}

/// The tasks running in a group (`groups` in the query), counted from their rows: one
/// index range (`tasks_group_ready`), as long as the group's running tasks. A stored
/// counter would put every claim and every end of the default group on one row, which
/// on PostgreSQL every node's transactions would queue for.
pub(super) const RUNNING_IN_GROUP: &str =
    "(SELECT COUNT(*) FROM tasks t WHERE t.group_name = groups.name AND t.status = 'running')";

pub(super) async fn groups(conn: &mut Conn) -> Result<Vec<Group>> {
    let rows = query(&format!(
        "SELECT name, parallel, paused, {RUNNING_IN_GROUP} AS running FROM groups ORDER BY name"
    ))
    .fetch_all(conn)
    .await?;
    rows.iter().map(group_from_row).collect()
}
