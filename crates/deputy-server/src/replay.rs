//! Replays of finished tasks' event streams, read from the log once and rendered once.
//!
//! A finished task's stream never changes (a retry is a new attempt, and so a new
//! replay). When many clients open it at once, as a dashboard or a fleet of agents
//! does, each would otherwise read the whole log and render every frame again. Here the
//! first opener reads the task's events and renders their SSE frames into one buffer;
//! everyone else (including those that arrive while it is being built) waits for that
//! and is sent a zero-copy slice of it, starting after their `Last-Event-ID`.
//!
//! Bounded: a replay larger than [`MAX_REPLAY_BYTES`] is not built (those streams take
//! the ordinary paged path), and at most [`MAX_CACHED`] replays are kept, the least
//! recently opened dropped first.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use deputy_core::{EventBody, TaskId};
use deputy_store::Store;
use tokio::sync::OnceCell;

/// Replays kept at once.
pub const MAX_CACHED: usize = 32;
/// The largest replay rendered into one buffer; larger ones are streamed page by page.
pub const MAX_REPLAY_BYTES: usize = 32 << 20;
const PAGE: u32 = 1000;

/// One finished task's stream, rendered.
#[derive(Debug)]
pub struct Rendered {
    /// Every frame, back to back, as sent.
    pub frames: Bytes,
    /// Each frame's event seq and where it starts in `frames`, in seq order.
    pub index: Vec<(i64, usize)>,
}

impl Rendered {
    /// The frames after event `after`: a slice of the shared buffer, not a copy.
    pub fn after(&self, after: i64) -> Bytes {
        let first = self.index.partition_point(|(seq, _)| *seq <= after);
        match self.index.get(first) {
            Some((_, at)) => self.frames.slice(*at..),
            None => Bytes::new(),
        }
    }
}

type Key = (TaskId, u32);
type Slot = Arc<OnceCell<Option<Arc<Rendered>>>>;

#[derive(Debug, Default)]
pub struct ReplayCache {
    slots: Mutex<VecDeque<(Key, Slot)>>,
}

impl ReplayCache {
    /// The rendered stream of `task` up to the end of attempt `until`, which has
    /// finished. None when it is too large to render whole (or the log no longer holds
    /// its end): the caller streams it the ordinary way.
    pub async fn finished(
        &self,
        store: &dyn Store,
        task: TaskId,
        until: u32,
    ) -> deputy_store::Result<Option<Arc<Rendered>>> {
        let slot = self.slot((task, until));
        let rendered = slot
            .get_or_try_init(|| render(store, task, until))
            .await?
            .clone();
        Ok(rendered)
    }

    fn slot(&self, key: Key) -> Slot {
        let mut slots = self.slots.lock().expect("replay cache");
        if let Some(pos) = slots.iter().position(|(k, _)| *k == key) {
            // Most recently opened last.
            let entry = slots.remove(pos).expect("position is in range");
            let slot = entry.1.clone();
            slots.push_back(entry);
            return slot;
        }
        if slots.len() >= MAX_CACHED {
            slots.pop_front();
        }
        let slot = Slot::default();
        slots.push_back((key, slot.clone()));
        slot
    }
}

/// Reads the task's events from the log once and renders them as SSE frames, up to and
/// including the end of attempt `until`.
async fn render(
    store: &dyn Store,
    task: TaskId,
    until: u32,
) -> deputy_store::Result<Option<Arc<Rendered>>> {
    use std::fmt::Write;
    let mut frames = String::new();
    let mut index = Vec::new();
    let mut last = 0;
    loop {
        let page = store.events_after(last, PAGE, Some(task)).await?;
        if page.is_empty() {
            // The log ended before the attempt's end (it was cleaned meanwhile).
            return Ok(None);
        }
        for e in page {
            last = e.seq;
            index.push((e.seq, frames.len()));
            let json = serde_json::to_string(&e).unwrap_or_else(|_| "{}".into());
            // The same frame axum's `Event` writes: JSON has no raw newlines.
            let _ = write!(
                frames,
                "id: {}\nevent: {}\ndata: {json}\n\n",
                e.seq,
                e.body.type_name()
            );
            if frames.len() > MAX_REPLAY_BYTES {
                return Ok(None);
            }
            if matches!(e.body, EventBody::TaskFinished { attempt, .. } if attempt >= until) {
                return Ok(Some(Arc::new(Rendered {
                    frames: Bytes::from(frames),
                    index,
                })));
            }
        }
    }
}
