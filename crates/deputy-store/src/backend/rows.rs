//! Reading rows into core types. Reads run on the reader pool or inside a write
//! transaction (both are `&mut Conn`).

use deputy_core::spec::TaskSpec;
use deputy_core::{Attempt, DepMode, Dependency, IdRef, NodeId, Status, Task, TaskId};
use sqlx::{QueryBuilder, Row};

use super::dialect::{Conn, Db, DbRow, sql};
use crate::{Group, ListQuery, Page, Result, StoreError};

pub(super) const TASK_COLUMNS: &str = "id, status, attempt, spec, created_at, updated_at, \
    started_at, finished_at, ready_at, exit_code, signal, reason, node, lease_expires_at, pgid, \
    cancel_requested, queue_seq, usage, resume_session";

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

pub(super) fn parse_id(s: &str) -> Result<TaskId> {
    s.parse().map_err(corrupt)
}

pub(super) fn parse_status(s: &str) -> Result<Status> {
    s.parse().map_err(corrupt)
}

pub(super) fn usage_json(u: &deputy_core::agent::AgentUsage) -> String {
    serde_json::to_string(u).expect("usage serializes")
}

fn parse_usage(row: &DbRow) -> Result<Option<deputy_core::agent::AgentUsage>> {
    row.try_get::<Option<String>, _>("usage")?
        .map(|u| serde_json::from_str(&u).map_err(|e| corrupt(format!("usage: {e}"))))
        .transpose()
}

pub(super) fn task_from_row(row: &DbRow) -> Result<Task> {
    let id: String = row.try_get("id")?;
    let status: String = row.try_get("status")?;
    let spec: String = row.try_get("spec")?;
    let spec: TaskSpec =
        serde_json::from_str(&spec).map_err(|e| corrupt(format!("task {id}: {e}")))?;
    Ok(Task {
        id: parse_id(&id)?,
        status: parse_status(&status)?,
        attempt: row.try_get::<i64, _>("attempt")? as u32,
        spec,
        depends_on: Vec::new(),
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        exit_code: row
            .try_get::<Option<i64>, _>("exit_code")?
            .map(|v| v as i32),
        signal: row.try_get::<Option<i64>, _>("signal")?.map(|v| v as i32),
        reason: row.try_get("reason")?,
        ready_at: row.try_get("ready_at")?,
        node: row.try_get("node")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        pgid: row.try_get::<Option<i64>, _>("pgid")?.map(|v| v as i32),
        cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
        usage: parse_usage(row)?,
        resume_session: row.try_get("resume_session")?,
    })
}

/// Loads one task's row without its dependencies: what status changes need.
pub(super) async fn load_row(conn: &mut Conn, id: TaskId) -> Result<Task> {
    let row = sqlx::query(
        sql("SELECT id, status, attempt, spec, created_at, updated_at, started_at, finished_at, ready_at,
                exit_code, signal, reason, node, lease_expires_at, pgid, cancel_requested, queue_seq,
                usage, resume_session
         FROM tasks WHERE id = ?"),
    )
    .bind(id.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
    task_from_row(&row)
}

/// Loads tasks by a `WHERE` built by the caller, with their dependencies.
async fn load_many(conn: &mut Conn, mut qb: QueryBuilder<Db>) -> Result<(Vec<Task>, Vec<i64>)> {
    let rows = qb.build().fetch_all(&mut *conn).await?;
    let mut tasks = Vec::with_capacity(rows.len());
    let mut seqs = Vec::with_capacity(rows.len());
    for row in &rows {
        tasks.push(task_from_row(row)?);
        seqs.push(row.try_get::<i64, _>("queue_seq")?);
    }
    if !tasks.is_empty() {
        let mut dq = QueryBuilder::<Db>::new(
            "SELECT task_id, depends_on, mode FROM task_deps WHERE task_id IN (",
        );
        let mut sep = dq.separated(", ");
        for t in &tasks {
            sep.push_bind(t.id.to_string());
        }
        dq.push(")");
        let deps: Vec<(String, String, String)> = dq.build_query_as().fetch_all(&mut *conn).await?;
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
    let mut qb = QueryBuilder::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = "));
    qb.push_bind(id.to_string());
    let (mut tasks, _) = load_many(conn, qb).await?;
    tasks
        .pop()
        .ok_or_else(|| StoreError::NotFound(id.to_string()))
}

pub(super) async fn resolve(conn: &mut Conn, id: &IdRef) -> Result<TaskId> {
    match id {
        IdRef::Full(id) => {
            let found: Option<String> =
                sqlx::query_scalar(sql("SELECT id FROM tasks WHERE id = ?"))
                    .bind(id.to_string())
                    .fetch_optional(&mut *conn)
                    .await?;
            found
                .map(|_| *id)
                .ok_or_else(|| StoreError::NotFound(id.to_string()))
        }
        IdRef::Prefix(p) => {
            // A range scan on the primary key: ids starting with p sort in [p, p + "g").
            let upper = format!("{p}g");
            let found: Vec<String> =
                sqlx::query_scalar(sql("SELECT id FROM tasks WHERE id >= ? AND id < ? LIMIT 2"))
                    .bind(p)
                    .bind(upper)
                    .fetch_all(&mut *conn)
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
            let mut qb = QueryBuilder::<Db>::new(format!(
                "SELECT {columns} FROM task_labels l JOIN tasks t ON t.id = l.task_id WHERE l.label = "
            ));
            qb.push_bind(l.clone());
            (qb, "l.queue_seq")
        }
        None => (
            QueryBuilder::<Db>::new(format!("SELECT {columns} FROM tasks t WHERE 1 = 1")),
            "t.queue_seq",
        ),
    };
    if !q.statuses.is_empty() {
        qb.push(" AND t.status IN (");
        let mut sep = qb.separated(", ");
        for s in &q.statuses {
            sep.push_bind(s.as_str());
        }
        qb.push(")");
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
        qb.push(format!(" AND {order} < ")).push_bind(c);
    }
    let limit = q.limit.clamp(1, 1000);
    qb.push(format!(" ORDER BY {order} DESC LIMIT "))
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
    let mut qb = QueryBuilder::<Db>::new(format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'running'"
    ));
    if let Some(n) = node {
        qb.push(" AND node = ").push_bind(n.0.clone());
    }
    qb.push(" ORDER BY queue_seq");
    Ok(load_many(conn, qb).await?.0)
}

pub(super) async fn attempts(conn: &mut Conn, id: TaskId) -> Result<Vec<Attempt>> {
    let rows = sqlx::query(sql(
        "SELECT number, status, node, started_at, finished_at, exit_code, signal, reason,
                output_bytes, omitted_bytes, usage
         FROM attempts WHERE task_id = ? ORDER BY number",
    ))
    .bind(id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Attempt {
                number: r.try_get::<i64, _>("number")? as u32,
                status: parse_status(&r.try_get::<String, _>("status")?)?,
                node: r.try_get("node")?,
                started_at: r.try_get("started_at")?,
                finished_at: r.try_get("finished_at")?,
                exit_code: r.try_get::<Option<i64>, _>("exit_code")?.map(|v| v as i32),
                signal: r.try_get::<Option<i64>, _>("signal")?.map(|v| v as i32),
                reason: r.try_get("reason")?,
                output_bytes: r.try_get::<i64, _>("output_bytes")? as u64,
                omitted_bytes: r.try_get::<i64, _>("omitted_bytes")? as u64,
                usage: parse_usage(r)?,
            })
        })
        .collect()
}

pub(super) async fn dependents(conn: &mut Conn, id: TaskId) -> Result<Vec<TaskId>> {
    let ids: Vec<String> =
        sqlx::query_scalar(sql("SELECT task_id FROM task_deps WHERE depends_on = ?"))
            .bind(id.to_string())
            .fetch_all(&mut *conn)
            .await?;
    ids.iter().map(|s| parse_id(s)).collect()
}

pub(super) fn group_from_row(row: &DbRow) -> Result<Group> {
    Ok(Group {
        name: row.try_get("name")?,
        parallel: row.try_get::<Option<i64>, _>("parallel")?.map(|v| v as u32),
        paused: row.try_get::<i64, _>("paused")? != 0,
        running: row.try_get::<i64, _>("running")? as u32,
    })
}

pub(super) async fn groups(conn: &mut Conn) -> Result<Vec<Group>> {
    let rows = sqlx::query(sql(
        "SELECT name, parallel, paused, running FROM groups ORDER BY name",
    ))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(group_from_row).collect()
}
