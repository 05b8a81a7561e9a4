//! `deputy submit`.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use deputy_core::agent::AgentInput;
use deputy_core::submit::{DepInput, DepTarget, NewTask, SizeInput, TimeoutInput, WhenInput};
use deputy_core::{Command, DepMode, IdRef};

use crate::cli::SubmitArgs;
use crate::config::Config;
use crate::connect;

fn agent_input(a: &SubmitArgs) -> anyhow::Result<Option<AgentInput>> {
    let Some(backend) = &a.agent else {
        let agent_only = [
            ("--model", a.model.is_some()),
            ("--provider", a.provider.is_some()),
            ("--system-prompt", a.system_prompt.is_some()),
            ("--worktree", a.worktree),
            ("--max-turns", a.max_turns.is_some()),
            ("--max-tokens", a.max_tokens.is_some()),
            ("--max-cost", a.max_cost.is_some()),
            ("--resume", a.resume.is_some()),
        ];
        if let Some((flag, _)) = agent_only.iter().find(|(_, set)| *set) {
            bail!("{flag} is for agent tasks: add --agent builtin (or claude, codex, ...)");
        }
        return Ok(None);
    };
    if a.command.is_empty() {
        bail!("give the prompt, e.g. `deputy submit --agent {backend} \"fix the flaky test\"`");
    }
    Ok(Some(AgentInput {
        backend: Some(backend.clone()),
        prompt: a.command.join(" "),
        provider: a.provider.clone(),
        model: a.model.clone(),
        system_prompt: a.system_prompt.clone(),
        worktree: a.worktree,
        max_turns: a.max_turns,
        max_tokens: a.max_tokens,
        max_cost_usd: a.max_cost,
        resume_session: a.resume.clone(),
    }))
}

pub fn build_task(a: &SubmitArgs) -> anyhow::Result<NewTask> {
    let agent = agent_input(a)?;
    let command = match (a.command.as_slice(), &agent) {
        (_, Some(_)) => None,
        ([], None) => bail!("give the command, e.g. `deputy submit -- make test`"),
        ([line], None) => Some(Command::Line(line.clone())),
        (argv, None) => Some(Command::Argv(argv.to_vec())),
    };
    let mut env = BTreeMap::new();
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("-e `{kv}` is not KEY=VALUE"))?;
        env.insert(k.to_string(), v.to_string());
    }
    let mut depends_on = Vec::new();
    for (ids, mode) in [
        (&a.after, DepMode::Success),
        (&a.after_finish, DepMode::Finish),
    ] {
        for id in ids {
            let r: IdRef = id.parse()?;
            depends_on.push(DepInput {
                target: DepTarget::Task(r),
                mode,
            });
        }
    }
    let cwd = match &a.cwd {
        Some(p) => std::path::absolute(p)?,
        None => std::env::current_dir().context("cannot read the current directory; pass --cwd")?,
    };
    Ok(NewTask {
        kind: None,
        agent,
        command,
        name: a.name.clone(),
        labels: a.labels.clone(),
        priority: a
            .priority
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        group: a.group.clone(),
        depends_on,
        cwd: Some(cwd.to_string_lossy().into_owned()),
        env,
        timeout: a
            .timeout
            .as_deref()
            .map(TimeoutInput::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        max_attempts: a.retries.map(|r| r.saturating_add(1)),
        backoff: a
            .backoff
            .as_deref()
            .map(|s| serde_json::from_value(serde_json::Value::String(s.into())))
            .transpose()
            .context("--backoff")?,
        output_cap: a
            .output_cap
            .as_deref()
            .map(deputy_core::size::parse_size)
            .transpose()
            .map_err(anyhow::Error::msg)?
            .map(SizeInput),
        run_at: a.run_at.clone().map(WhenInput::Text),
        idempotency_key: a.idempotency_key.clone(),
        key: None,
    })
}

pub async fn run(cfg: &Config, a: SubmitArgs) -> anyhow::Result<u8> {
    let task = build_task(&a)?;
    let client = connect::client(cfg)?;
    let out = client.submit(&task).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out.task)?);
    } else if a.wait {
        eprintln!(
            "{} {}",
            out.task.id,
            if out.created {
                "queued"
            } else {
                "(existing task for this idempotency key)"
            }
        );
    } else {
        println!("{}", out.task.id);
    }
    if !a.wait {
        return Ok(0);
    }
    let done = super::follow::wait_for(&client, &[out.task.id.to_string()], false).await?;
    let t = done.first().context("the task vanished while waiting")?;
    Ok(crate::render::exit_code(t))
}
