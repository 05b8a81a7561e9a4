//! The event bus: one follower reads the event log after every commit and broadcasts
//! the new events in `seq` order. Publishers never broadcast directly, so the bus
//! cannot announce an uncommitted event or reorder two commits.
//!
//! Subscribers get a bounded receiver. One that falls behind by more than the buffer
//! sees `Lagged` and must resume from the log with its last seq; it never slows the
//! engine, and nothing is dropped silently.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use deputy_core::Event;
use deputy_store::Store;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Events buffered per subscriber before it counts as lagging. With output chunks of at
/// most 16 KiB, the ring holds at most 16 MiB however slow a subscriber is.
pub const SUBSCRIBER_BUFFER: usize = 1024;
const PAGE: u32 = 256;

/// An event as broadcast: with its JSON rendered once, however many subscribers send it.
#[derive(Debug)]
pub struct Published {
    pub event: Event,
    pub json: String,
}

#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Published>>,
    published: Arc<AtomicI64>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("published", &self.published.load(Ordering::Relaxed))
            .finish()
    }
}

impl EventBus {
    /// Starts the follower from the log's current end.
    pub async fn start(
        store: Arc<dyn Store>,
        stop: CancellationToken,
        metrics: Arc<crate::Metrics>,
    ) -> deputy_store::Result<Self> {
        let (tx, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        let published = Arc::new(AtomicI64::new(store.last_event_seq().await?));
        let bus = Self {
            tx: tx.clone(),
            published: published.clone(),
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = store.wait_committed() => {}
                    () = stop.cancelled() => break,
                }
                loop {
                    let after = published.load(Ordering::Acquire);
                    let events = match store.events_after(after, PAGE, None).await {
                        Ok(e) => e,
                        Err(e) => {
                            tracing::error!(%e, "reading the event log failed; retrying on the next commit");
                            break;
                        }
                    };
                    // A short page is the log's end as of this read. A commit after it
                    // has left a wake-up behind (`wait_committed` keeps one), so there is
                    // no need to read again to see nothing: that read would be one per
                    // commit, on PostgreSQL a round trip each.
                    let at_end = events.len() < PAGE as usize;
                    metrics.events.inc_by(events.len() as u64);
                    for e in events {
                        published.store(e.seq, Ordering::Release);
                        // No receivers is fine: nobody is listening right now.
                        let json = serde_json::to_string(&e).unwrap_or_else(|_| "{}".into());
                        let _ = tx.send(Arc::new(Published { event: e, json }));
                    }
                    if at_end {
                        break;
                    }
                }
            }
        });
        Ok(bus)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.tx.subscribe()
    }

    pub fn subscriber_count(&self) -> usize {
        self.tx.receiver_count()
    }

    /// The last seq broadcast.
    pub fn published(&self) -> i64 {
        self.published.load(Ordering::Acquire)
    }
}
