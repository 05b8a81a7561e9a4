//! Agent tasks: the built-in tool-using loop or an agent CLI, in the task's cwd or a
//! fresh git worktree. One attempt is still owned by one supervisor: the loop (or the
//! CLI process) races cancel, timeout and shutdown in the same biased select as a
//! shell task's process, and its end is recorded once.

pub(crate) mod builtin;
pub(crate) mod cli;
pub mod config;
pub(crate) mod shell;
pub(crate) mod template;
pub(crate) mod tools;
pub(crate) mod workspace;
pub(crate) mod worktree;

pub use shell::which;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use deputy_core::agent::{AgentSpec, BUILTIN};
use deputy_core::time::now_ms;
use deputy_core::{EventBody, Status, Task};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::capture::{self, CaptureConfig};
use crate::supervisor::{Outcome, Stops, ended_from_outside, run_process, stopped};
use crate::{EngineConfig, Inner, runner};
use deputy_llm::providers::ProviderConfig;

async fn event(inner: &Inner, task: &Task, step: &str, detail: String) {
    let body = EventBody::TaskAgent {
        attempt: task.attempt,
        step: step.into(),
        tool: None,
        detail: Some(detail),
        is_error: None,
    };
    if let Err(e) = inner
        .store
        .attempt_event(task.id, task.attempt, body, now_ms())
        .await
    {
        tracing::debug!(task = %task.id, %e, "agent event not stored");
    }
}

/// What runs an agent task, as this daemon's config resolves it.
pub(crate) enum Backend {
    Builtin {
        provider_name: String,
        provider: ProviderConfig,
    },
    Cli(config::CliBackend),
}

/// The task's backend (and for the built-in loop, its provider), or the field that names
/// something this daemon does not know and why. Checked at submit, and again when an
/// attempt starts, since the config may have changed in between.
pub(crate) fn resolve(
    cfg: &EngineConfig,
    spec: &AgentSpec,
) -> Result<Backend, (&'static str, String)> {
    if spec.backend != BUILTIN {
        return cfg.agents.backend(&spec.backend).map(Backend::Cli).ok_or_else(|| {
            (
                "agent.backend",
                format!(
                    "no agent backend `{}`: use builtin, claude, codex, generic{}, or configure [agents.{}]",
                    spec.backend,
                    cfg.agents
                        .backends
                        .keys()
                        .map(|k| format!(", {k}"))
                        .collect::<String>(),
                    spec.backend
                ),
            )
        });
    }
    let provider_name = spec
        .provider
        .clone()
        .unwrap_or_else(|| cfg.agents.default_provider.clone());
    match cfg.providers.get(&provider_name) {
        Some(p) => Ok(Backend::Builtin {
            provider: p.clone(),
            provider_name,
        }),
        None => Err((
            "agent.provider",
            format!(
                "no model provider `{provider_name}`: use one of {} or configure [providers.{provider_name}]",
                cfg.providers.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

pub(crate) async fn run(
    inner: &Arc<Inner>,
    task: &Task,
    stops: &Stops,
    spec: &AgentSpec,
) -> Outcome {
    let backend = match resolve(&inner.cfg, spec) {
        Ok(b) => b,
        Err((_, why)) => return Outcome::new(Status::Failed, Some(why)),
    };
    let prompt = match template::expand(inner.store.as_ref(), task, &spec.prompt).await {
        Ok(p) => p,
        Err(e) => return Outcome::new(Status::Failed, Some(e)),
    };
    let wt = if spec.worktree {
        match worktree::create(task, &inner.cfg.agents.worktree_dir).await {
            Ok(wt) => {
                event(
                    inner,
                    task,
                    "workspace",
                    format!("{} (branch {})", wt.workdir.display(), wt.branch),
                )
                .await;
                Some(wt)
            }
            Err(e) => return Outcome::new(Status::Failed, Some(e)),
        }
    } else {
        None
    };
    let workdir = wt
        .as_ref()
        .map_or_else(|| PathBuf::from(&task.spec.cwd), |w| w.workdir.clone());
    let outcome = match backend {
        Backend::Builtin {
            provider_name,
            provider,
        } => {
            let run = Builtin {
                provider_name,
                provider,
                prompt,
                workdir,
            };
            run_builtin(inner, task, stops, spec, run).await
        }
        Backend::Cli(backend) => {
            run_cli(inner, task, stops, spec, &backend, &prompt, workdir).await
        }
    };
    if let Some(wt) = &wt {
        let what = worktree::cleanup(wt, inner.cfg.agents.worktree_cleanup).await;
        event(inner, task, "workspace", what).await;
    }
    outcome
}

async fn run_cli(
    inner: &Arc<Inner>,
    task: &Task,
    stops: &Stops,
    spec: &AgentSpec,
    backend: &config::CliBackend,
    prompt: &str,
    workdir: PathBuf,
) -> Outcome {
    let resume = task
        .resume_session
        .as_deref()
        .or(spec.resume_session.as_deref());
    let argv = match cli::argv(backend, spec, prompt, resume) {
        Ok(a) => a,
        Err(e) => return Outcome::new(Status::Failed, Some(e)),
    };
    let plan = runner::ProcessPlan {
        command: cli::command(argv),
        cwd: workdir.to_string_lossy().into_owned(),
        env: cli::env(backend, &inner.base_env, &task.spec.env, &|k| {
            std::env::var(k).ok()
        }),
    };
    let filter = cli::filter(backend.format, task.attempt);
    let mut out = run_process(inner, task, stops, plan, Some(filter)).await;
    if out.status == Status::Failed
        && out.exit_code == Some(127)
        && shell::which(&backend.program).is_none()
    {
        out.reason = Some(format!(
            "the `{}` backend's program `{}` was not found in PATH; install it or set [agents.{}] program",
            spec.backend, backend.program, spec.backend
        ));
    }
    out
}

/// A built-in agent attempt, resolved.
struct Builtin {
    provider_name: String,
    provider: ProviderConfig,
    prompt: String,
    workdir: PathBuf,
}

async fn run_builtin(
    inner: &Arc<Inner>,
    task: &Task,
    stops: &Stops,
    spec: &AgentSpec,
    run: Builtin,
) -> Outcome {
    let Builtin {
        provider_name,
        provider,
        prompt,
        workdir,
    } = run;
    let ws = match workspace::Workspace::new(&workdir) {
        Ok(w) => w,
        Err(e) => {
            return Outcome::new(
                Status::Failed,
                Some(format!(
                    "the workspace {} is not usable: {e}",
                    workdir.display()
                )),
            );
        }
    };
    // The transcript is the task's output: text goes through a bounded channel to a
    // writer, into the same capture a process's stdout goes through.
    let (text_tx, mut text_rx) = mpsc::channel::<String>(64);
    let (mut writer, reader) = tokio::io::duplex(64 << 10);
    let pump = tokio::spawn(async move {
        while let Some(t) = text_rx.recv().await {
            if writer.write_all(t.as_bytes()).await.is_err() {
                break;
            }
        }
    });
    let capture = capture::start(
        inner.store.clone(),
        task.id,
        task.attempt,
        CaptureConfig {
            cap: task.spec.output_cap,
            flush_bytes: capture::FLUSH_BYTES,
            flush_interval: inner.cfg.output_flush_interval,
        },
        reader,
        tokio::io::empty(),
    );
    let current_pgid = Arc::new(AtomicI32::new(0));
    // The provider's key, to scrub from everything the agent writes.
    let secret = provider.api_key(&|k| std::env::var(k).ok());
    let agent = builtin::BuiltinRun {
        inner,
        task,
        spec,
        provider_name,
        provider,
        prompt,
        workspace: ws,
        current_pgid: current_pgid.clone(),
        transcript: builtin::Transcript {
            tx: text_tx,
            redactor: deputy_llm::record::redact::Redactor::new(secret.clone()),
        },
        secret_len: secret.as_ref().map_or(0, String::len),
    };
    let ended = tokio::select! {
        biased;
        ended = agent.run() => Ok(ended),
        ending = stopped(task, stops) => Err(ending),
    };
    // A tool command still running when the attempt was stopped goes with it.
    let pgid = current_pgid.load(Ordering::SeqCst);
    if pgid > 0 {
        runner::terminate_group(pgid, inner.cfg.kill_grace).await;
        runner::reap_orphans(pgid);
    }
    // The loop (and its sender) is gone: the pump and the capture drain and end.
    let _ = tokio::time::timeout(Duration::from_secs(10), pump).await;
    if let Err(e) = tokio::time::timeout(Duration::from_secs(10), capture).await {
        tracing::warn!(task = %task.id, %e, "the agent's transcript was not fully stored");
    }
    match ended {
        Ok(e) => Outcome {
            status: e.status,
            exit_code: None,
            signal: None,
            reason: e.reason,
            usage: Some(e.usage),
        },
        Err(ending) => {
            let (status, reason) = ended_from_outside(inner, task, ending);
            Outcome::new(status, reason)
        }
    }
}
