//! One function per command; `run` dispatches.

mod demo;
mod follow;
mod manage;
mod run;
mod schedule;
mod serve;
mod submit;
mod trace;
mod view;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::config::Config;

/// Runs a command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let mut flags: Vec<(&'static str, String)> = Vec::new();
    if let Some(d) = &cli.data_dir {
        flags.push(("data_dir", d.display().to_string()));
    }
    if let Some(u) = &cli.url {
        flags.push(("url", u.clone()));
    }
    if let Command::Serve(s) = &cli.command {
        if let Some(l) = &s.listen {
            flags.push(("listen", l.clone()));
        }
        if let Some(p) = &s.parallel {
            flags.push(("parallel", p.clone()));
        }
        if let Some(d) = &s.database {
            flags.push(("database", d.clone()));
        }
    }
    if let Command::Demo(_) = &cli.command {
        return demo::run(cli.command).await;
    }
    let cfg = Config::load(cli.config.as_deref(), &flags)?;
    match cli.command {
        Command::Serve(_) => serve::run(&cfg).await,
        Command::Config(ConfigCommand::Show) => manage::config_show(&cfg),
        Command::Submit(a) => submit::run(&cfg, a).await,
        Command::Ls(a) => view::ls(&cfg, a).await,
        Command::Show(a) => view::show(&cfg, a).await,
        Command::Logs(a) => follow::logs(&cfg, a).await,
        Command::Trace(a) => trace::trace(&cfg, a).await,
        Command::Run(a) => run::run(&cfg, a).await,
        Command::Wait(a) => follow::wait(&cfg, a).await,
        Command::Cancel(a) => manage::cancel(&cfg, a).await,
        Command::Retry(a) => manage::retry(&cfg, a).await,
        Command::Pause(a) => manage::pause(&cfg, a, true).await,
        Command::Resume(a) => manage::pause(&cfg, a, false).await,
        Command::Group(g) => manage::group(&cfg, g).await,
        Command::Clean(a) => manage::clean(&cfg, a).await,
        Command::Schedule(s) => schedule::run(&cfg, s).await,
        Command::Nodes { json } => manage::nodes(&cfg, json).await,
        Command::Mcp => {
            let client = crate::connect::client_or_start(&cfg).await?;
            deputy_mcp::serve_stdio(client)
                .await
                .map_err(|e| anyhow::anyhow!("MCP session failed: {e}"))?;
            Ok(0)
        }
        Command::Demo(_) => unreachable!("handled above"),
    }
}
