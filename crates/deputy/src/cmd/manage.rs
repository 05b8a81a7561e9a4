//! Commands that change the queue: cancel, retry, pause/resume, groups, clean; and
//! `config show`.

use anyhow::bail;

use crate::cli::{CancelArgs, CleanArgs, GroupArg, GroupCommand, RetryArgs};
use crate::config::{Config, KEYS};
use crate::{connect, render};

pub async fn cancel(cfg: &Config, a: CancelArgs) -> anyhow::Result<u8> {
    let client = connect::client(cfg)?;
    let mut code = 0;
    for id in &a.ids {
        match client.cancel(id, a.reason.as_deref()).await {
            Ok(r) => {
                let what = match r.result {
                    deputy_core::api::CancelResult::Cancelled => "cancelled",
                    deputy_core::api::CancelResult::Requested => "stopping (cancel requested)",
                };
                println!("{} {what}", r.task.id);
            }
            Err(e) => {
                eprintln!("deputy: {id}: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

pub async fn retry(cfg: &Config, a: RetryArgs) -> anyhow::Result<u8> {
    let client = connect::client(cfg)?;
    let t = if a.continue_session {
        client.retry_continue(&a.id).await?
    } else {
        client.retry(&a.id).await?
    };
    match &t.resume_session {
        Some(sid) => println!(
            "{} queued as attempt {}, continuing session {sid}",
            t.id, t.attempt
        ),
        None => println!("{} queued as attempt {}", t.id, t.attempt),
    }
    Ok(0)
}

pub async fn pause(cfg: &Config, a: GroupArg, paused: bool) -> anyhow::Result<u8> {
    let client = connect::client(cfg)?;
    if paused {
        client.pause(a.group.as_deref()).await?;
    } else {
        client.resume(a.group.as_deref()).await?;
    }
    let what = if paused { "paused" } else { "resumed" };
    match a.group {
        Some(g) => println!("group {g} {what}"),
        None => println!("queue {what}"),
    }
    Ok(0)
}

pub async fn group(cfg: &Config, g: GroupCommand) -> anyhow::Result<u8> {
    let client = connect::client(cfg)?;
    match g {
        GroupCommand::Add { name, parallel } => {
            let g = client.add_group(&name, parallel).await?;
            println!("group {} created", g.name);
        }
        GroupCommand::Ls { json } => {
            let groups = client.groups().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&groups)?);
            } else {
                let mut rows = vec![vec![
                    "GROUP".to_string(),
                    "PARALLEL".into(),
                    "RUNNING".into(),
                    "STATE".into(),
                ]];
                for g in groups {
                    rows.push(vec![
                        g.name,
                        g.parallel
                            .map(|p| p.to_string())
                            .unwrap_or_else(|| "-".into()),
                        g.running.to_string(),
                        if g.paused {
                            "paused".into()
                        } else {
                            "active".into()
                        },
                    ]);
                }
                print!("{}", render::table(&rows));
            }
        }
        GroupCommand::SetParallel { name, parallel } => {
            let p = match parallel.as_str() {
                "none" | "unlimited" => None,
                n => match n.parse::<u32>() {
                    Ok(v) if v > 0 => Some(v),
                    _ => bail!("parallel must be a number of at least 1, or none"),
                },
            };
            let g = client.set_group_parallel(&name, p).await?;
            println!(
                "group {} parallel {}",
                g.name,
                g.parallel
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "none".into())
            );
        }
    }
    Ok(0)
}

pub async fn nodes(cfg: &Config, json: bool) -> anyhow::Result<u8> {
    let client = connect::client(cfg)?;
    let nodes = client.nodes().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
        return Ok(0);
    }
    let now = deputy_core::time::now_ms();
    let mut rows = vec![vec![
        "NODE".to_string(),
        "ADDRESS".into(),
        "RUNNING".into(),
        "LAST SEEN".into(),
        "UP".into(),
    ]];
    for n in nodes {
        rows.push(vec![
            n.id,
            n.address.unwrap_or_else(|| "-".into()),
            n.running.to_string(),
            format!(
                "{} ago",
                deputy_core::time::short_duration(now - n.heartbeat_at)
            ),
            deputy_core::time::short_duration(now - n.started_at),
        ]);
    }
    print!("{}", render::table(&rows));
    Ok(0)
}

pub async fn clean(cfg: &Config, a: CleanArgs) -> anyhow::Result<u8> {
    let client = connect::client(cfg)?;
    let r = client.clean(a.days).await?;
    println!("deleted {} finished tasks", r.deleted);
    Ok(0)
}

pub fn config_show(cfg: &Config) -> anyhow::Result<u8> {
    println!("# config file: {}", cfg.file.display());
    let mut rows = Vec::new();
    for (key, _, help) in KEYS {
        let e = &cfg.entries[key];
        let value = match (*key, e.value.as_str()) {
            ("data_dir", "") => cfg.data_dir().display().to_string(),
            ("parallel", "") => std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .to_string(),
            ("api_token", v) if !v.is_empty() => "<set, hidden>".into(),
            ("database", v) if v.contains('@') => match (v.find("://"), v.rfind('@')) {
                (Some(scheme), Some(at)) if v[scheme + 3..at].contains(':') => {
                    let user_end = scheme + 3 + v[scheme + 3..at].find(':').unwrap_or(0);
                    format!("{}:***{}", &v[..user_end], &v[at..])
                }
                _ => v.to_string(),
            },
            (_, "") => "(unset)".into(),
            (_, v) => v.to_string(),
        };
        rows.push(vec![
            format!("{key} = {value:?}"),
            format!("# {}; {help}", e.source),
        ]);
    }
    print!("{}", render::table(&rows));
    let d = cfg.daemon_config()?;
    println!("\n# model providers (built-in openai and anthropic, plus [providers.<name>])");
    let mut rows = Vec::new();
    for (name, p) in &d.providers {
        let key = match &p.api_key_env {
            Some(var) if std::env::var(var).is_ok_and(|v| !v.is_empty()) => {
                format!("key from ${var} (set)")
            }
            Some(var) => format!("key from ${var} (unset)"),
            None => "no key".into(),
        };
        let origin = if cfg.providers.contains_key(name) {
            format!("file {}", cfg.file.display())
        } else {
            "built-in".into()
        };
        rows.push(vec![
            format!(
                "{name} = {} {}",
                match p.kind {
                    deputy_llm::providers::ProviderKind::OpenAi => "openai",
                    deputy_llm::providers::ProviderKind::Anthropic => "anthropic",
                },
                p.base_url
            ),
            format!(
                "# {key}; model {}; timeout {}s; {origin}",
                p.default_model.as_deref().unwrap_or("(none)"),
                p.timeout_secs
            ),
        ]);
    }
    print!("{}", render::table(&rows));
    println!("\n# agent backends (built-in claude, codex and generic, plus [agents.<name>])");
    let mut names: Vec<String> = ["claude", "codex", "generic"].map(String::from).to_vec();
    for k in d.agents.backends.keys() {
        if !names.contains(k) {
            names.push(k.clone());
        }
    }
    let mut rows = Vec::new();
    for name in names {
        let Some(b) = d.agents.backend(&name) else {
            continue;
        };
        let origin = if d.agents.backends.contains_key(&name) {
            format!("file {}", cfg.file.display())
        } else {
            "built-in".into()
        };
        let found = if deputy_engine::agent::which(&b.program).is_some() {
            "found"
        } else {
            "not found in PATH"
        };
        rows.push(vec![
            format!("{name} = {:?} {}", b.format, b.program).to_lowercase(),
            format!("# program {found}; {origin}"),
        ]);
    }
    print!("{}", render::table(&rows));
    if !d.agents.prices.is_empty() {
        println!("\n# prices, dollars per million tokens");
        for (model, p) in &d.agents.prices {
            let cached = p
                .cached_input
                .map(|c| format!(", cached input {c}"))
                .unwrap_or_default();
            println!("{model}: input {}, output {}{cached}", p.input, p.output);
        }
    }
    Ok(0)
}
