//! One supervisor per running attempt. It alone owns the child process, its timers,
//! its cancellation and its pipes, and it alone records the attempt's outcome: exactly
//! once, as a compare-and-set on `running`. Cancel and timeout race the child's exit
//! inside one `select!`, so only one of them can ever be the outcome.

use std::sync::Arc;
use std::time::Duration;

use deputy_core::agent::AgentUsage;
use deputy_core::retry::{backoff_ms, may_retry};
use deputy_core::time::now_ms;
use deputy_core::{Status, Task, TaskKind};
use deputy_store::{Finish, StoreError};
use tokio_util::sync::CancellationToken;

use crate::Inner;
use crate::capture::{self, CaptureConfig};
use crate::runner;

/// How an attempt is stopped from outside.
#[derive(Clone, Debug, Default)]
pub struct Stops {
    /// A user asked to cancel.
    pub cancel: CancellationToken,
    /// The daemon is shutting down and the grace period is over.
    pub interrupt: CancellationToken,
}

pub(crate) enum Ending {
    Exited(std::process::ExitStatus),
    Cancelled,
    TimedOut(Duration),
    Interrupted,
}

/// How an attempt ended, as it is recorded.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub status: Status,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: Option<String>,
    pub usage: Option<AgentUsage>,
}

impl Outcome {
    pub fn new(status: Status, reason: Option<String>) -> Self {
        Self {
            status,
            exit_code: None,
            signal: None,
            reason,
            usage: None,
        }
    }
}

/// Runs one claimed attempt to its recorded end.
pub(crate) async fn supervise(inner: Arc<Inner>, task: Task, stops: Stops) {
    let id = task.id;
    let attempt = task.attempt;
    let began = std::time::Instant::now();
    let out = run_attempt(&inner, &task, &stops).await;
    inner
        .metrics
        .task_duration
        .get_or_create(&crate::metrics::StatusLabel {
            status: out.status.to_string(),
        })
        .observe(began.elapsed().as_secs_f64());
    if let Some(u) = &out.usage {
        inner.metrics.record_agent_usage(u);
    }
    let status = out.status;
    let retry_at = (status.is_retryable_outcome() && may_retry(&task.spec.retry, attempt))
        .then(|| now_ms() + backoff_ms(&task.spec.retry, attempt + 1, fastrand::f64()) as i64);
    let finish = Finish {
        id,
        attempt,
        status,
        exit_code: out.exit_code,
        signal: out.signal,
        reason: out.reason,
        retry_at,
        now: now_ms(),
        usage: out.usage,
    };
    // The process is over, so its slot is free: the scheduler's next claim can then go
    // to the store while this end is being recorded (the two may share a transaction).
    // The slot bounds processes; the task stays `running` in the database (its lease
    // renewed with the node's others) until the end is recorded, and group limits,
    // kept in the database, count it until then.
    inner.release(id);
    record_end(&inner, finish).await;
}

/// Records the end of an attempt, retrying while the database cannot take the write (a
/// full disk, a locked file): the attempt is over, and the store must come to say so, or
/// memory (nothing runs) and the database (`running`) would disagree. The task stays
/// this node's, its lease renewed, until the write lands. If the engine stops first, the
/// next start's recovery ends the attempt as interrupted.
async fn record_end(inner: &Arc<Inner>, finish: Finish) {
    let (id, attempt, status) = (finish.id, finish.attempt, finish.status);
    let mut delay = Duration::from_millis(100);
    let mut failures = 0u32;
    loop {
        match inner.store.finish(finish.clone()).await {
            Ok(t) => {
                if failures > 0 {
                    tracing::warn!(task = %id, attempt, failures, "the attempt's end was recorded after the database recovered");
                }
                tracing::info!(task = %id, attempt, %status, now = %t.status, "attempt ended");
                return;
            }
            // Someone else recorded this attempt's end first (a node that recovered it
            // after our lease expired). Theirs stands; ours is dropped.
            Err(StoreError::Conflict { actual, .. }) => {
                tracing::warn!(task = %id, attempt, %status, %actual, "attempt already recorded elsewhere");
                return;
            }
            Err(
                e @ (StoreError::Database(_)
                | StoreError::WriteFailed(_)
                | StoreError::Full(_)
                | StoreError::Busy(_)),
            ) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::error!(task = %id, attempt, %e, failures, "recording the attempt's end failed; retrying");
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = inner.halt.cancelled() => {
                        tracing::error!(task = %id, attempt, "stopping before the attempt's end was recorded; recovery will end it as interrupted");
                        return;
                    }
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(task = %id, attempt, %e, "recording the attempt's end failed");
                return;
            }
        }
    }
}

async fn run_attempt(inner: &Arc<Inner>, task: &Task, stops: &Stops) -> Outcome {
    if stops.cancel.is_cancelled() {
        return Outcome::new(
            Status::Cancelled,
            Some("cancelled before it started".into()),
        );
    }
    match &task.spec.kind {
        TaskKind::Noop => Outcome::new(Status::Succeeded, None),
        TaskKind::Shell { command } => {
            let mut plan = match runner::ProcessPlan::shell(task, &inner.base_env) {
                Ok(plan) => plan,
                Err(e) => return Outcome::new(Status::Failed, Some(e.to_string())),
            };
            // Workflow output passing: {{steps.NAME.output}} of a dependency.
            if let deputy_core::Command::Line(line) = command
                && line.contains("{{steps.")
            {
                match crate::agent::template::expand_shell(inner.store.as_ref(), task, line).await {
                    Ok((line, env)) => {
                        plan.command = deputy_core::Command::Line(line);
                        plan.env.extend(env);
                    }
                    Err(e) => return Outcome::new(Status::Failed, Some(e)),
                }
            }
            run_process(inner, task, stops, plan, None).await
        }
        TaskKind::Agent { agent } => crate::agent::run(inner, task, stops, agent).await,
    }
}

/// Turns a process's stdout into what is stored as its output (an agent CLI's JSON
/// lines into readable text), reporting what it learned at the end.
pub(crate) trait StdoutFilter: Send + 'static {
    /// One line of stdout (without its newline): the text to store, if any, and the
    /// steps worth an event.
    fn line(&mut self, line: &str) -> (Option<String>, Vec<deputy_core::EventBody>);
    /// Called once stdout is closed.
    fn finish(self: Box<Self>) -> FilterReport;
}

#[derive(Debug, Default)]
pub(crate) struct FilterReport {
    pub usage: Option<AgentUsage>,
    /// Set when the output itself says the run failed (a CLI's error result).
    pub failure: Option<String>,
}

/// The longest stdout line a filter is given; longer lines are dropped (with a note).
const MAX_FILTERED_LINE: usize = 4 << 20;

/// Feeds stdout through `filter` into a pipe the capture reads as stdout.
fn filter_stdout(
    inner: &Inner,
    task: &Task,
    stdout: tokio::process::ChildStdout,
    mut filter: Box<dyn StdoutFilter>,
) -> (
    tokio::io::DuplexStream,
    tokio::task::JoinHandle<FilterReport>,
) {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
    let (mut writer, reader) = tokio::io::duplex(64 << 10);
    let store = inner.store.clone();
    let (id, attempt) = (task.id, task.attempt);
    let handle = tokio::spawn(async move {
        let mut lines = FramedRead::new(stdout, LinesCodec::new_with_max_length(MAX_FILTERED_LINE));
        while let Some(line) = lines.next().await {
            let text = match line {
                Ok(line) => {
                    let (text, events) = filter.line(&line);
                    for body in events {
                        if let Err(e) = store.attempt_event(id, attempt, body, now_ms()).await {
                            tracing::debug!(task = %id, %e, "agent event not stored");
                        }
                    }
                    text
                }
                Err(LinesCodecError::MaxLineLengthExceeded) => Some(format!(
                    "[deputy: a line over {MAX_FILTERED_LINE} bytes was dropped]\n"
                )),
                Err(LinesCodecError::Io(e)) => {
                    tracing::debug!(%e, "agent stdout read failed");
                    break;
                }
            };
            if let Some(text) = text
                && writer.write_all(text.as_bytes()).await.is_err()
            {
                break;
            }
        }
        drop(writer);
        filter.finish()
    });
    (reader, handle)
}

/// Puts a gated child's group on the death watch and records it on the attempt, before
/// the child does anything, so it dies with the daemon and recovery can always find it.
/// The two are independent (either failing alone stops the child), so they run
/// together: the gate waits for the slower of them, not for both in turn. `what` names
/// the process in the error.
pub(crate) async fn watch_and_record(
    inner: &Inner,
    task: &Task,
    pgid: i32,
    what: &str,
) -> Result<crate::deathwatch::Watched, String> {
    let (watched, stored) = tokio::join!(
        inner.deathwatch.watch(pgid),
        inner.store.set_pgid(task.id, task.attempt, pgid)
    );
    match (watched, stored) {
        (Ok(watched), Ok(())) => Ok(watched),
        (Err(e), _) => Err(format!("could not watch the {what}: {e}")),
        (Ok(_), Err(e)) => Err(format!("could not record the {what}: {e}")),
    }
}

/// Runs one process of a task to its end: spawn behind the gate, record its group,
/// capture its output, and race its exit against cancel, timeout and shutdown.
pub(crate) async fn run_process(
    inner: &Inner,
    task: &Task,
    stops: &Stops,
    plan: runner::ProcessPlan,
    filter: Option<Box<dyn StdoutFilter>>,
) -> Outcome {
    let spawned = match runner::spawn(task, &plan) {
        Ok(s) => s,
        Err(e) => {
            let reason = format!("could not start `/bin/sh` in {}: {e}", plan.cwd);
            return Outcome::new(Status::Failed, Some(reason));
        }
    };
    let runner::Spawned {
        mut child,
        pgid,
        gate,
        stdout,
        stderr,
    } = spawned;
    tracing::debug!(task = %task.id, pgid, "spawned");
    let recorded = watch_and_record(inner, task, pgid, "process").await;
    let watched = match recorded {
        Ok(w) => w,
        Err(reason) => {
            drop(gate);
            runner::terminate_group(pgid, inner.cfg.kill_grace).await;
            let _ = child.wait().await;
            runner::reap_orphans(pgid);
            return Outcome::new(Status::Failed, Some(reason));
        }
    };
    let capture_cfg = CaptureConfig {
        cap: task.spec.output_cap,
        flush_bytes: capture::FLUSH_BYTES,
        flush_interval: inner.cfg.output_flush_interval,
    };
    let (capture, filtered) = match filter {
        None => (
            capture::start(
                inner.store.clone(),
                task.id,
                task.attempt,
                capture_cfg,
                stdout,
                stderr,
            ),
            None,
        ),
        Some(filter) => {
            let (text, report) = filter_stdout(inner, task, stdout, filter);
            (
                capture::start(
                    inner.store.clone(),
                    task.id,
                    task.attempt,
                    capture_cfg,
                    text,
                    stderr,
                ),
                Some(report),
            )
        }
    };
    if let Err(e) = runner::open_gate(gate).await {
        tracing::debug!(task = %task.id, %e, "gate already closed");
    }
    tracing::debug!(task = %task.id, "gate open");

    let ending = tokio::select! {
        // Biased: an exit that is already there wins over a cancel or timeout that
        // arrives in the same instant.
        biased;
        status = child.wait() => match status {
            Ok(s) => Ending::Exited(s),
            Err(e) => {
                tracing::error!(task = %task.id, %e, "waiting for the child failed");
                Ending::Interrupted
            }
        },
        ending = stopped(task, stops) => ending,
    };
    tracing::debug!(task = %task.id, "attempt ended");
    // Whatever the ending, nothing of the task's process group outlives the attempt.
    runner::terminate_group(pgid, inner.cfg.kill_grace).await;
    tracing::debug!(task = %task.id, "group gone");
    let exit = match &ending {
        Ending::Exited(s) => Some(*s),
        _ => child.wait().await.ok(),
    };
    runner::reap_orphans(pgid);
    drop(watched);
    // The pipes close when the last member of the group is gone. A process that left
    // the group (setsid) could hold them open: bound the wait, then stop reading.
    let totals = match tokio::time::timeout(Duration::from_secs(10), capture).await {
        Ok(Ok(t)) => Some(t),
        Ok(Err(e)) => {
            tracing::error!(task = %task.id, %e, "output capture failed");
            None
        }
        Err(_) => {
            tracing::warn!(task = %task.id, "a process outside the task's group kept its output open; stopped reading");
            None
        }
    };
    tracing::debug!(task = %task.id, "output stored");
    if let Some(t) = totals
        && t.omitted_bytes > 0
    {
        tracing::info!(task = %task.id, omitted = t.omitted_bytes, "output over the cap was omitted");
    }
    let report = match filtered {
        Some(h) => tokio::time::timeout(Duration::from_secs(10), h)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default(),
        None => FilterReport::default(),
    };
    use std::os::unix::process::ExitStatusExt;
    let code = exit.and_then(|s| s.code());
    let sig = exit.and_then(|s| s.signal());
    let (status, reason) = match ending {
        Ending::Exited(s) if s.success() => match report.failure {
            None => (Status::Succeeded, None),
            Some(f) => (Status::Failed, Some(f)),
        },
        Ending::Exited(_) => {
            let reason = match (code, sig) {
                (Some(runner::GATE_CLOSED_EXIT), _) => {
                    format!("exited with code {}", runner::GATE_CLOSED_EXIT)
                }
                (Some(c), _) => format!("exited with code {c}"),
                (None, Some(s)) => format!("killed by signal {s}"),
                _ => "ended without an exit status".to_string(),
            };
            let reason = match report.failure {
                Some(f) => format!("{reason}: {f}"),
                None => reason,
            };
            (Status::Failed, reason.into())
        }
        other => ended_from_outside(inner, task, other),
    };
    Outcome {
        status,
        exit_code: code,
        signal: sig,
        reason,
        usage: report.usage,
    }
}

/// Resolves when the attempt is stopped from outside: cancel, its timeout, or shutdown.
/// Never resolves when none of them happens.
pub(crate) async fn stopped(task: &Task, stops: &Stops) -> Ending {
    let timeout = task.spec.timeout_ms.map(Duration::from_millis);
    let timer = async {
        match timeout {
            Some(d) => {
                tokio::time::sleep(d).await;
                d
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        () = stops.cancel.cancelled() => Ending::Cancelled,
        d = timer => Ending::TimedOut(d),
        () = stops.interrupt.cancelled() => Ending::Interrupted,
    }
}

/// The status and reason of an attempt stopped from outside.
pub(crate) fn ended_from_outside(
    inner: &Inner,
    task: &Task,
    ending: Ending,
) -> (Status, Option<String>) {
    match ending {
        Ending::Cancelled => {
            let reason = inner
                .cancel_reason(task.id)
                .unwrap_or_else(|| "cancelled".into());
            (Status::Cancelled, Some(reason))
        }
        Ending::TimedOut(d) => (
            Status::TimedOut,
            Some(format!("timed out after {}", humanize(d))),
        ),
        Ending::Interrupted | Ending::Exited(_) => (
            Status::Interrupted,
            Some("the daemon shut down while it ran".into()),
        ),
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
