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
                    // A page short of `PAGE` events and of the byte budget is the log's
                    // end: stop without a read that would find nothing (a commit since
                    // then has left `wait_committed` a wake-up). A page the budget cut
                    // is not the end, however few events it holds.
                    let last = deputy_store::page_is_last(&events, PAGE);
                    metrics.events.inc_by(events.len() as u64);
                    for e in events {
                        published.store(e.seq, Ordering::Release);
                        // No receivers is fine: nobody is listening right now.
                        let json = serde_json::to_string(&e).unwrap_or_else(|_| "{}".into());
                        let _ = tx.send(Arc::new(Published { event: e, json }));
                    }
                    if last {
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

#[cfg(test)]
mod tests {
    use super::*;
    use deputy_core::submit::{NewTask, SubmitDefaults};
    use deputy_core::{EventBody, Stream};
    use deputy_store::{NewChunk, OutputBatch};
    use std::time::Duration;

    /// One commit whose output spans more than one page of the log (pages stop at
    /// `EVENT_PAGE_BYTES`) is broadcast whole, down to its last event, with no later
    /// commit to wake the bus again.
    #[tokio::test]
    async fn a_commit_larger_than_a_page_is_broadcast_to_its_last_event() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            deputy_store::sqlite::SqliteStore::open(&dir.path().join("t.db"))
                .await
                .unwrap(),
        );
        let stop = CancellationToken::new();
        let bus = EventBus::start(store.clone(), stop.clone(), crate::Metrics::new())
            .await
            .unwrap();
        let mut events = bus.subscribe();
        let valid = NewTask {
            command: Some(deputy_core::Command::Line("true".into())),
            ..NewTask::default()
        }
        .validate(
            &SubmitDefaults {
                timeout_ms: None,
                output_cap: 16 << 20,
                cwd: "/tmp".into(),
            },
            0,
        )
        .unwrap();
        let task = store.submit(vec![valid], 1).await.unwrap().remove(0).task;
        let chunk = deputy_store::EVENT_PAGE_BYTES / 2 + 1;
        let chunks: Vec<NewChunk> = (0..5)
            .map(|i| NewChunk {
                stream: Stream::Stdout,
                offset: (i * chunk) as u64,
                data: vec![b'x'; chunk],
            })
            .collect();
        store
            .append_output(OutputBatch {
                task: task.id,
                attempt: 1,
                chunks,
                drop: Vec::new(),
                total_bytes: (5 * chunk) as u64,
                omitted_bytes: 0,
                now: 2,
            })
            .await
            .unwrap();
        let last = store.last_event_seq().await.unwrap();
        let mut outputs = 0;
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let p = events.recv().await.unwrap();
                if matches!(p.event.body, EventBody::TaskOutput { .. }) {
                    outputs += 1;
                }
                if p.event.seq == last {
                    break;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the bus stopped after {outputs} of 5 output events"));
        assert_eq!(outputs, 5);
        stop.cancel();
    }
}
