//! Printing tasks for people.

use deputy_core::time::{now_ms, short_duration, to_rfc3339};
use deputy_core::{Status, Task};

/// Exit code for `submit --wait` and `wait`: the task's own code when it has one.
pub fn exit_code(t: &Task) -> u8 {
    match t.status {
        Status::Succeeded => 0,
        Status::TimedOut => 124,
        Status::Cancelled => 130,
        _ => match t.exit_code {
            Some(c) if (1..=255).contains(&c) => c as u8,
            _ => 1,
        },
    }
}

pub fn truncate(s: &str, max: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut out: String = one_line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub fn task_rows(tasks: &[Task]) -> String {
    let mut rows = vec![vec![
        "ID".to_string(),
        "STATUS".into(),
        "PRI".into(),
        "GROUP".into(),
        "AGE".into(),
        "TIME".into(),
        "TRY".into(),
        "USAGE".into(),
        "TASK".into(),
    ]];
    let now = now_ms();
    for t in tasks {
        rows.push(vec![
            t.id.short(),
            t.status.to_string(),
            t.spec.priority.to_string(),
            t.spec.group.clone(),
            short_duration(now - t.created_at),
            t.duration_ms()
                .map(short_duration)
                .unwrap_or_else(|| "-".into()),
            t.attempt.to_string(),
            t.usage.as_ref().map_or_else(|| "-".into(), |u| u.summary()),
            truncate(&t.spec.title(), 60),
        ]);
    }
    table(&rows)
}

pub fn when(ms: Option<i64>) -> String {
    ms.map(to_rfc3339).unwrap_or_else(|| "-".into())
}
