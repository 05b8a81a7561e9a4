//! `deputy run FILE`: submit a workflow as one DAG of tasks, optionally wait for it.

use std::io::IsTerminal;

use anyhow::Context;
use deputy_core::Status;

use crate::cli::RunArgs;
use crate::config::Config;
use crate::connect;
use crate::render;
use crate::workflow::Workflow;

pub async fn run(cfg: &Config, a: RunArgs) -> anyhow::Result<u8> {
    let wf = Workflow::load(&a.file)?;
    let cwd = match &a.cwd {
        Some(p) => std::path::absolute(p)?,
        None => std::env::current_dir().context("cannot read the current directory; pass --cwd")?,
    };
    let tasks = wf.tasks(&cwd.to_string_lossy())?;
    let client = connect::client(cfg)?;
    let submitted = client.submit_batch(&tasks).await?.tasks;
    if a.json && !a.wait {
        println!("{}", serde_json::to_string_pretty(&submitted)?);
        return Ok(0);
    }
    if !a.json {
        println!(
            "workflow {} submitted: {} steps (deputy ls --workflow {})",
            wf.name(),
            submitted.len(),
            wf.name()
        );
        for s in &submitted {
            println!(
                "  {}  {}",
                s.task.id.short(),
                s.task.spec.name.as_deref().unwrap_or("-")
            );
        }
    }
    if !a.wait {
        return Ok(0);
    }
    let ids: Vec<String> = submitted.iter().map(|s| s.task.id.to_string()).collect();
    let done = super::follow::wait_for(&client, &ids, std::io::stderr().is_terminal()).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else {
        for t in &done {
            println!(
                "{}  {:<10} {:<16} {}",
                t.id.short(),
                t.status.to_string(),
                t.spec.name.as_deref().unwrap_or("-"),
                t.reason
                    .as_deref()
                    .map(|r| render::truncate(r, 80))
                    .unwrap_or_default()
            );
        }
    }
    Ok(if done.iter().all(|t| t.status == Status::Succeeded) {
        0
    } else {
        1
    })
}
