//! `deputy ls` and `deputy show`.

use deputy_core::size::human_size;
use deputy_core::time::short_duration;

use crate::cli::{LsArgs, ShowArgs};
use crate::config::Config;
use crate::connect;
use crate::render::{self, when};

pub async fn ls(cfg: &Config, a: LsArgs) -> anyhow::Result<u8> {
    let client = connect::client(cfg)?;
    let mut q: Vec<(&str, String)> = vec![("limit", a.limit.clamp(1, 1000).to_string())];
    if let Some(s) = a.status {
        q.push(("status", s));
    }
    if let Some(g) = a.group {
        q.push(("group", g));
    }
    if let Some(w) = a.workflow {
        q.push(("label", format!("workflow:{w}")));
    }
    if let Some(l) = a.label {
        q.push(("label", l));
    }
    if let Some(s) = a.search {
        q.push(("q", s));
    }
    let page = client.list(&q).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&page.tasks)?);
        return Ok(0);
    }
    // The API pages newest first; a table reads better oldest first.
    let mut tasks = page.tasks;
    tasks.reverse();
    if tasks.is_empty() {
        println!("no tasks");
    } else {
        print!("{}", render::task_rows(&tasks));
        if page.next_cursor.is_some() {
            println!("(older tasks not shown; raise --limit)");
        }
    }
    Ok(0)
}

pub async fn show(cfg: &Config, a: ShowArgs) -> anyhow::Result<u8> {
    let client = connect::client(cfg)?;
    let d = client.get(&a.id).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(0);
    }
    let t = &d.task;
    let s = &t.spec;
    let mut rows: Vec<Vec<String>> = vec![
        vec!["id".into(), t.id.to_string()],
        vec!["name".into(), s.name.clone().unwrap_or_else(|| "-".into())],
        vec!["status".into(), t.status.to_string()],
        vec![
            "reason".into(),
            t.reason.clone().unwrap_or_else(|| "-".into()),
        ],
        vec!["kind".into(), s.kind.name().into()],
        vec!["command".into(), s.kind.summary()],
        vec!["priority".into(), s.priority.to_string()],
        vec!["group".into(), s.group.clone()],
        vec![
            "labels".into(),
            if s.labels.is_empty() {
                "-".into()
            } else {
                s.labels.join(", ")
            },
        ],
        vec!["cwd".into(), s.cwd.clone()],
        vec![
            "env".into(),
            if s.env.is_empty() {
                "-".into()
            } else {
                s.env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            },
        ],
        vec![
            "timeout".into(),
            s.timeout_ms
                .map(|m| short_duration(m as i64))
                .unwrap_or_else(|| "none".into()),
        ],
        vec![
            "retries".into(),
            format!(
                "{} attempts at most, backoff {}",
                s.retry.max_attempts,
                short_duration(s.retry.backoff_ms as i64)
            ),
        ],
        vec!["output cap".into(), human_size(s.output_cap)],
        vec!["attempt".into(), t.attempt.to_string()],
        vec![
            "exit code".into(),
            t.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
        ],
        vec![
            "signal".into(),
            t.signal
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
        ],
        vec!["created".into(), when(Some(t.created_at))],
        vec!["run at".into(), when(s.run_at)],
        vec!["started".into(), when(t.started_at)],
        vec!["finished".into(), when(t.finished_at)],
        vec!["node".into(), t.node.clone().unwrap_or_else(|| "-".into())],
        vec![
            "idempotency key".into(),
            s.idempotency_key.clone().unwrap_or_else(|| "-".into()),
        ],
    ];
    if t.cancel_requested {
        rows.push(vec!["cancel".into(), "requested".into()]);
    }
    if let deputy_core::TaskKind::Agent { agent } = &s.kind {
        rows.push(vec!["backend".into(), agent.backend.clone()]);
        let model = match (&agent.provider, &agent.model) {
            (Some(p), Some(m)) => format!("{p}/{m}"),
            (None, Some(m)) => m.clone(),
            (Some(p), None) => format!("{p} (its default model)"),
            (None, None) => "(the default)".into(),
        };
        rows.push(vec!["model".into(), model]);
        rows.push(vec![
            "worktree".into(),
            if agent.worktree { "yes" } else { "no" }.into(),
        ]);
        let mut budget = vec![format!("{} turns", agent.max_turns)];
        if let Some(n) = agent.max_tokens {
            budget.push(format!("{n} tokens"));
        }
        if let Some(c) = agent.max_cost_micros {
            budget.push(format!("${:.2}", c as f64 / 1e6));
        }
        rows.push(vec!["budget".into(), budget.join(", ")]);
    }
    if let Some(u) = &t.usage {
        rows.push(vec!["usage".into(), u.summary()]);
        if let Some(n) = u.turns {
            rows.push(vec!["turns".into(), n.to_string()]);
        }
        if let Some(sid) = &u.session_id {
            rows.push(vec!["session".into(), sid.clone()]);
        }
        if let Some(r) = &u.result {
            rows.push(vec![
                "result".into(),
                render::truncate(&r.replace('\n', " "), 200),
            ]);
        }
    }
    if let Some(sid) = &t.resume_session {
        rows.push(vec!["resumes".into(), sid.clone()]);
    }
    print!("{}", render::table(&rows));
    if !t.depends_on.is_empty() {
        println!("\ndepends on:");
        for dep in &t.depends_on {
            println!("  {} ({})", dep.task, dep.mode);
        }
    }
    if !d.dependents.is_empty() {
        println!("\nneeded by:");
        for id in &d.dependents {
            println!("  {id}");
        }
    }
    if !d.attempts.is_empty() {
        println!("\nattempts:");
        let mut rows = vec![vec![
            "#".to_string(),
            "STATUS".into(),
            "STARTED".into(),
            "TIME".into(),
            "EXIT".into(),
            "OUTPUT".into(),
            "REASON".into(),
        ]];
        for a in &d.attempts {
            rows.push(vec![
                a.number.to_string(),
                a.status.to_string(),
                when(Some(a.started_at)),
                a.finished_at
                    .map(|f| short_duration(f - a.started_at))
                    .unwrap_or_else(|| "-".into()),
                a.exit_code
                    .map(|c| c.to_string())
                    .or(a.signal.map(|s| format!("sig {s}")))
                    .unwrap_or_else(|| "-".into()),
                if a.omitted_bytes > 0 {
                    format!(
                        "{} ({} omitted)",
                        human_size(a.output_bytes),
                        human_size(a.omitted_bytes)
                    )
                } else {
                    human_size(a.output_bytes)
                },
                a.reason.clone().unwrap_or_default(),
            ]);
        }
        print!("{}", render::table(&rows));
    }
    Ok(0)
}
