//! The scheduler loop. Each pass fires due schedules, promotes due tasks, then claims ready ones (as many as
//! this node has free slots, in one claim) while the machine has room; then it sleeps
//! until something can change the answer: a wake-up (submit, completion, cancel, queue
//! change), the next scheduled time or schedule tick, or a new resource sample while admission is holding
//! tasks back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use deputy_core::Task;
use deputy_core::time::now_ms;

use crate::Inner;
use crate::running::ClaimWindow;
use crate::supervisor;

pub(crate) async fn run(inner: Arc<Inner>) {
    let mut resources = inner.resources.clone();
    // When the earliest scheduled task becomes ready; promoting is skipped until then.
    let mut next_due: Option<i64> = Some(0);
    // When the earliest schedule ticks; firing is skipped until then.
    let mut next_tick: Option<i64> = Some(0);
    loop {
        if inner.stop.is_cancelled() {
            break;
        }
        let now = now_ms();
        let retry_ticks_at = if next_tick.is_some_and(|at| at <= now) {
            crate::schedules::fire_due(&inner, now).await
        } else {
            None
        };
        if next_due.is_some_and(|at| at <= now)
            && let Err(e) = inner.store.promote_due(now).await
        {
            tracing::error!(%e, "promoting scheduled tasks failed");
        }
        let mut held_back = false;
        // Set when a claim failed (a full disk, a locked database): nothing else may wake
        // the loop when the database recovers, so it looks again after a second.
        let mut claim_failed = false;
        loop {
            let running = inner.running_count();
            if running >= inner.cfg.parallel || inner.stop.is_cancelled() {
                break;
            }
            // With nothing running, always admit one task: outside load alone must not
            // stall the queue forever. Otherwise every free slot is filled at once, in
            // one claim.
            let want = match resources.borrow().refusal(&inner.cfg.resources) {
                Some(why) if running > 0 => {
                    tracing::debug!(%why, "holding back new tasks");
                    held_back = true;
                    break;
                }
                Some(_) => 1,
                None => inner.cfg.parallel - running,
            };
            let lease = inner.cfg.lease.as_millis() as u64;
            // Opened before the claim commits: cancels from then on reach the claimed.
            let window = inner.running.open_window();
            let (node, now) = (&inner.cfg.node, now_ms());
            let claimed = if inner.queued.swap(false, Ordering::AcqRel) {
                inner.store.claim_queued(node, lease, now, want).await
            } else {
                inner.store.claim_batch(node, lease, now, want).await
            };
            match claimed {
                Ok(tasks) => {
                    let got = tasks.len();
                    start_tasks(&inner, window, tasks).await;
                    if got < want {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(%e, "claiming tasks failed; trying again in a second");
                    claim_failed = true;
                    break;
                }
            }
        }
        next_due = match inner.store.next_ready_at().await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(%e, "reading the next scheduled time failed");
                Some(now_ms() + 1000)
            }
        };
        next_tick = match inner.store.next_schedule_at().await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(%e, "reading the next schedule tick failed");
                Some(now_ms() + 1000)
            }
        };
        if let Some(retry) = retry_ticks_at {
            next_tick = next_tick.map(|t| t.max(retry));
        }
        let retry_claims = claim_failed.then(|| now_ms() + 1000);
        let wake_at = [next_due, next_tick, retry_claims]
            .into_iter()
            .flatten()
            .min();
        let until_due = async {
            match wake_at {
                Some(at) => {
                    let wait = (at - now_ms()).max(0) as u64;
                    tokio::time::sleep(Duration::from_millis(wait)).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = inner.wake.notified() => {}
            () = until_due => {}
            r = resources.changed(), if held_back => {
                if r.is_err() {
                    // The monitor stopped; fall back to a slow re-check.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            () = inner.stop.cancelled() => break,
        }
    }
}

/// Registers the supervisors (which closes the claim window, applying the cancels that
/// came during it) and starts them. Only when the bus lost events during the window are
/// the stored cancel flags read.
async fn start_tasks(inner: &Arc<Inner>, window: ClaimWindow<'_>, tasks: Vec<Task>) {
    for task in &tasks {
        tracing::debug!(task = %task.id, "claimed");
    }
    let registered = window.register(tasks);
    if registered.read_flags {
        let ids: Vec<_> = registered.tasks.iter().map(|(t, _)| t.id).collect();
        match inner.store.cancels_requested(&ids).await {
            Ok(cancelled) => {
                for (task, stops) in &registered.tasks {
                    if cancelled.contains(&task.id) {
                        stops.cancel.cancel();
                    }
                }
            }
            Err(e) => tracing::warn!(%e, "re-reading claimed tasks failed"),
        }
    }
    for (task, stops) in registered.tasks {
        tracing::debug!(task = %task.id, attempt = task.attempt, "starting");
        inner
            .supervisors
            .spawn(supervisor::supervise(inner.clone(), task, stops));
    }
}
