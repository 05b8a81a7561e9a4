//! One supervisor per running attempt. It alone owns the child process, its timers,
//! its cancellation and its pipes, and it alone records the attempt's outcome: exactly
//! once, as a compare-and-set on `running`. Cancel and timeout race the child's exit
//! inside one `select!`, so only one of them can ever be the outcome.

use std::sync::Arc;
use std::time::Duration;

use deputy_core::retry::{backoff_ms, may_retry};
use deputy_core::time::now_ms;
use deputy_core::{Status, Task};
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

enum Ending {
    Exited(std::process::ExitStatus),
    Cancelled,
    TimedOut(Duration),
    Interrupted,
}

/// Runs one claimed attempt to its recorded end.
pub(crate) async fn supervise(inner: Arc<Inner>, task: Task, stops: Stops) {
    let id = task.id;
    let attempt = task.attempt;
    let began = std::time::Instant::now();
    let (status, exit_code, signal, reason) = run_attempt(&inner, &task, &stops).await;
    inner
        .metrics
        .task_duration
        .get_or_create(&crate::metrics::StatusLabel {
            status: status.to_string(),
        })
        .observe(began.elapsed().as_secs_f64());
    let retry_at = (status.is_retryable_outcome() && may_retry(&task.spec.retry, attempt))
        .then(|| now_ms() + backoff_ms(&task.spec.retry, attempt + 1, fastrand::f64()) as i64);
    let finish = Finish {
        id,
        attempt,
        status,
        exit_code,
        signal,
        reason,
        retry_at,
        now: now_ms(),
    };
    match inner.store.finish(finish).await {
        Ok(t) => tracing::info!(task = %id, attempt, %status, now = %t.status, "attempt ended"),
        // Someone else recorded this attempt's end first (a node that recovered it after
        // our lease expired). Theirs stands; ours is dropped.
        Err(StoreError::Conflict { actual, .. }) => {
            tracing::warn!(task = %id, attempt, %status, %actual, "attempt already recorded elsewhere")
        }
        Err(e) => tracing::error!(task = %id, attempt, %e, "recording the attempt's end failed"),
    }
    inner.release(id);
}

async fn run_attempt(
    inner: &Inner,
    task: &Task,
    stops: &Stops,
) -> (Status, Option<i32>, Option<i32>, Option<String>) {
    if stops.cancel.is_cancelled() {
        return (
            Status::Cancelled,
            None,
            None,
            Some("cancelled before it started".into()),
        );
    }
    if matches!(task.spec.kind, deputy_core::TaskKind::Noop) {
        return (Status::Succeeded, None, None, None);
    }
    let spawned = match runner::spawn(task, &inner.base_env) {
        Ok(s) => s,
        Err(e) => {
            let reason = format!("could not start `/bin/sh` in {}: {e}", task.spec.cwd);
            return (Status::Failed, None, None, Some(reason));
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
    // Record the group before the child does anything, so recovery can always find it.
    if let Err(e) = inner.store.set_pgid(task.id, task.attempt, pgid).await {
        drop(gate);
        runner::terminate_group(pgid, inner.cfg.kill_grace).await;
        let _ = child.wait().await;
        return (
            Status::Failed,
            None,
            None,
            Some(format!("could not record the process: {e}")),
        );
    }
    let capture = capture::start(
        inner.store.clone(),
        task.id,
        task.attempt,
        CaptureConfig {
            cap: task.spec.output_cap,
            flush_bytes: capture::FLUSH_BYTES,
            flush_interval: inner.cfg.output_flush_interval,
        },
        stdout,
        stderr,
    );
    if let Err(e) = runner::open_gate(gate).await {
        tracing::debug!(task = %task.id, %e, "gate already closed");
    }
    tracing::debug!(task = %task.id, "gate open");

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
        () = stops.cancel.cancelled() => Ending::Cancelled,
        d = timer => Ending::TimedOut(d),
        () = stops.interrupt.cancelled() => Ending::Interrupted,
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
    use std::os::unix::process::ExitStatusExt;
    let code = exit.and_then(|s| s.code());
    let sig = exit.and_then(|s| s.signal());
    match ending {
        Ending::Exited(s) if s.success() => (Status::Succeeded, Some(0), None, None),
        Ending::Exited(_) => {
            let reason = match (code, sig) {
                (Some(runner::GATE_CLOSED_EXIT), _) => {
                    format!("exited with code {}", runner::GATE_CLOSED_EXIT)
                }
                (Some(c), _) => format!("exited with code {c}"),
                (None, Some(s)) => format!("killed by signal {s}"),
                _ => "ended without an exit status".to_string(),
            };
            (Status::Failed, code, sig, Some(reason))
        }
        Ending::Cancelled => {
            let reason = inner
                .cancel_reason(task.id)
                .unwrap_or_else(|| "cancelled".into());
            (Status::Cancelled, code, sig, Some(reason))
        }
        Ending::TimedOut(d) => (
            Status::TimedOut,
            code,
            sig,
            Some(format!("timed out after {}", humanize(d))),
        ),
        Ending::Interrupted => (
            Status::Interrupted,
            code,
            sig,
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
