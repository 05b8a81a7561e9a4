//! Output chunks and the event log's read side.

use deputy_core::event::EventBody;
use deputy_core::{Event, Stream, TaskId};

use super::dialect::Conn;
use super::rows::parse_id;
use super::tasks::append_event;
use crate::sql::query;
use crate::{OutputBatch, Result, StoreError, StoredChunk};

pub(super) async fn append(conn: &mut Conn, b: OutputBatch) -> Result<()> {
    for c in &b.chunks {
        let seq = append_event(
            conn,
            Some(b.task),
            &EventBody::TaskOutput {
                attempt: b.attempt,
                stream: c.stream,
                offset: c.offset,
                len: c.data.len() as u64,
                data: None,
            },
            b.now,
        )
        .await?;
        query(
            "INSERT INTO output_chunks (task_id, attempt, stream, \"offset\", data, event_seq)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(b.task.key())
        .bind(i64::from(b.attempt))
        .bind(c.stream.as_str())
        .bind(c.offset as i64)
        .bind(&c.data)
        .bind(seq)
        .execute(conn)
        .await?;
    }
    for k in &b.drop {
        query(
            "DELETE FROM output_chunks WHERE task_id = ? AND attempt = ? AND stream = ? AND \"offset\" = ?",
        )
        .bind(b.task.key())
        .bind(i64::from(b.attempt))
        .bind(k.stream.as_str())
        .bind(k.offset as i64)
        .execute(conn)
        .await?;
    }
    query(
        "UPDATE attempts SET output_bytes = ?, omitted_bytes = ? WHERE task_id = ? AND number = ?",
    )
    .bind(b.total_bytes as i64)
    .bind(b.omitted_bytes as i64)
    .bind(b.task.key())
    .bind(i64::from(b.attempt))
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn read(
    conn: &mut Conn,
    id: TaskId,
    attempt: u32,
    stream: Option<Stream>,
    from: u64,
) -> Result<Vec<StoredChunk>> {
    let mut qb = query("SELECT stream, \"offset\", data FROM output_chunks WHERE task_id = ");
    qb.push_bind(id.key())
        .push(" AND attempt = ")
        .push_bind(i64::from(attempt));
    if let Some(s) = stream {
        qb.push(" AND stream = ").push_bind(s.as_str());
    }
    if from > 0 {
        qb.push(&format!(
            " AND \"offset\" + {}(data) > ",
            super::dialect::OCTET_LENGTH
        ))
        .push_bind(from as i64);
    }
    // event_seq is the order the bytes were captured in, across both streams.
    qb.push(" ORDER BY event_seq");
    let rows = qb.fetch_all(conn).await?;
    rows.iter()
        .map(|r| {
            let s: String = r.get("stream")?;
            Ok(StoredChunk {
                stream: Stream::parse(&s)
                    .ok_or_else(|| StoreError::Corrupt(format!("stream {s}")))?,
                offset: r.get::<i64>("offset")? as u64,
                data: r.get("data")?,
            })
        })
        .collect()
}

pub(super) async fn events_after(
    conn: &mut Conn,
    after: i64,
    limit: u32,
    task: Option<TaskId>,
) -> Result<Vec<Event>> {
    let mut qb = query(
        "SELECT e.seq, e.task_id, e.type, e.payload, e.at, c.data
         FROM events e LEFT JOIN output_chunks c ON c.event_seq = e.seq
         WHERE e.seq > ",
    );
    qb.push_bind(after);
    if let Some(t) = task {
        qb.push(" AND e.task_id = ").push_bind(t.key());
    }
    qb.push(" ORDER BY e.seq LIMIT ")
        .push_bind(i64::from(limit.clamp(1, 10_000)));
    // Rows are streamed, and a page stops early once it holds EVENT_PAGE_BYTES of output,
    // so a page's memory is bounded by bytes, not only by count.
    let mut out = Vec::new();
    let mut bytes_in_page = 0usize;
    qb.fetch_while(conn, &mut |r| {
        let type_name: String = r.get("type")?;
        let payload: String = r.get("payload")?;
        let payload: serde_json::Value = serde_json::from_str(&payload)
            .map_err(|e| StoreError::Corrupt(format!("event payload: {e}")))?;
        let mut body = EventBody::from_parts(&type_name, payload)
            .map_err(|e| StoreError::Corrupt(format!("event {type_name}: {e}")))?;
        if let EventBody::TaskOutput { data, .. } = &mut body {
            let bytes: Option<Vec<u8>> = r.get("data")?;
            bytes_in_page += bytes.as_ref().map_or(0, Vec::len);
            *data = bytes.map(|b| String::from_utf8_lossy(&b).into_owned());
        }
        let task: Option<String> = r.get("task_id")?;
        out.push(Event {
            seq: r.get("seq")?,
            at: r.get("at")?,
            task: task.as_deref().map(parse_id).transpose()?,
            body,
        });
        Ok(bytes_in_page < crate::EVENT_PAGE_BYTES)
    })
    .await?;
    Ok(out)
}
