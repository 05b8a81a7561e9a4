//! Recovery at start: tasks this node's previous life left `running` have their process
//! group killed (if it is still there and still theirs), become `interrupted`, and are
//! requeued as a new attempt where their retry policy allows. Each is a compare-and-set
//! on (running, attempt), so recovery can never record an attempt's end twice.

use std::sync::Arc;

use deputy_core::Status;
use deputy_core::retry::may_retry;
use deputy_core::time::now_ms;
use deputy_store::{Finish, Store, StoreError};

use crate::{EngineConfig, runner};

/// The end of an attempt whose owner is gone: interrupted, requeued at once where the
/// task's retries allow.
fn interrupted(t: &deputy_core::Task, reason: String, now: deputy_core::time::Millis) -> Finish {
    Finish {
        id: t.id,
        attempt: t.attempt,
        status: Status::Interrupted,
        exit_code: None,
        signal: None,
        reason: Some(reason),
        retry_at: may_retry(&t.spec.retry, t.attempt).then_some(now),
        now,
        usage: None,
    }
}

pub(crate) async fn recover(store: &Arc<dyn Store>, cfg: &EngineConfig) -> Result<(), StoreError> {
    let left = store.running(Some(&cfg.node)).await?;
    if left.is_empty() {
        return Ok(());
    }
    tracing::warn!(
        count = left.len(),
        "recovering tasks left running by this node's previous life"
    );
    for t in left {
        let killed = match t.pgid {
            Some(pgid) => runner::kill_leftover(pgid, &t.id.to_string(), cfg.kill_grace).await,
            None => false,
        };
        let finish = interrupted(&t, "the daemon stopped while it ran".into(), now_ms());
        match store.finish(finish).await {
            Ok(after) => tracing::warn!(
                task = %t.id,
                attempt = t.attempt,
                killed_leftover_processes = killed,
                now = %after.status,
                "recovered"
            ),
            Err(StoreError::Conflict { .. }) => {
                tracing::info!(task = %t.id, "already recovered elsewhere")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Recovers running tasks whose lease expired (their node stopped heartbeating), on
/// whichever node notices first: each is a compare-and-set, so only one node records
/// it. The dead node's processes cannot be reached from here; if that node is merely
/// stalled, it finds its lease gone at its next heartbeat and stops them itself.
pub(crate) async fn recover_expired(
    store: &Arc<dyn Store>,
    cfg: &EngineConfig,
) -> Result<usize, StoreError> {
    let now = now_ms();
    let mut recovered = 0;
    for t in store.running(None).await? {
        if t.lease_expires_at.is_none_or(|at| at >= now) {
            continue;
        }
        let owner = t.node.clone().unwrap_or_else(|| "?".into());
        let reason = format!("node {owner} stopped heartbeating; its lease expired");
        let finish = interrupted(&t, reason, now);
        match store.finish(finish).await {
            Ok(after) => {
                recovered += 1;
                tracing::warn!(task = %t.id, attempt = t.attempt, %owner, by = %cfg.node, now = %after.status, "recovered an expired lease");
            }
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(recovered)
}
