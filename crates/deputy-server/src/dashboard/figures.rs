//! The daemon's recent figures (queue depth, running tasks, throughput), sampled at a
//! fixed interval into a bounded ring so the dashboard's sparklines show the last minutes
//! even when the page was just opened. One task owns the sampling; readers copy the ring.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use deputy_core::EventBody;
use deputy_core::api::{DaemonFigures, FigureSample};
use deputy_core::time::now_ms;
use deputy_engine::Engine;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::error::ApiError;

/// Samples kept: at the default 5 s interval, the last ten minutes.
pub const KEPT_SAMPLES: usize = 120;

#[derive(Debug)]
pub struct Figures {
    interval: Duration,
    samples: Mutex<VecDeque<FigureSample>>,
}

impl Figures {
    /// Starts sampling `engine` every `interval` until `stop` is cancelled.
    pub fn start(engine: Engine, interval: Duration, stop: CancellationToken) -> Arc<Self> {
        let figures = Arc::new(Self {
            interval,
            samples: Mutex::new(VecDeque::with_capacity(KEPT_SAMPLES)),
        });
        tokio::spawn(sample(engine, figures.clone(), stop));
        figures
    }

    pub fn snapshot(&self) -> DaemonFigures {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        DaemonFigures {
            interval_ms: self.interval.as_millis() as u64,
            samples: samples.iter().cloned().collect(),
        }
    }

    fn push(&self, sample: FigureSample) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == KEPT_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
    }
}

/// Counts events off the bus between ticks; at each tick reads the queue depth and
/// pushes a sample. Waits on the bus, the timer or the stop, never spins.
async fn sample(engine: Engine, figures: Arc<Figures>, stop: CancellationToken) {
    let mut bus = engine.bus().subscribe();
    let mut tick = tokio::time::interval(figures.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // The first tick is immediate; the first sample is one interval in.
    let (mut finished, mut events, mut complete) = (0u64, 0u64, true);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            got = bus.recv() => match got {
                Ok(published) => {
                    events += 1;
                    if matches!(published.event.body, EventBody::TaskFinished { .. }) {
                        finished += 1;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    events += missed;
                    complete = false;
                }
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                let queued = match engine.store().queue_depths().await {
                    Ok(depths) => depths.iter().map(|(_, n)| n).sum(),
                    Err(e) => {
                        tracing::warn!("figures: cannot read the queue depth: {e}");
                        continue;
                    }
                };
                figures.push(FigureSample {
                    at: now_ms(),
                    queued,
                    running: engine.running_count() as u64,
                    finished,
                    events,
                    complete,
                });
                (finished, events, complete) = (0, 0, true);
            }
        }
    }
}

/// The daemon's recent figures.
#[utoipa::path(get, path = "/v1/stats", tag = "health", responses((status = 200, description = "Recent figures, oldest first, one sample per interval", body = DaemonFigures)))]
pub(crate) async fn stats(State(state): State<AppState>) -> Result<Json<DaemonFigures>, ApiError> {
    Ok(Json(state.figures.snapshot()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: i64) -> FigureSample {
        FigureSample {
            at,
            queued: 0,
            running: 0,
            finished: 0,
            events: 0,
            complete: true,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_samples_only() {
        let f = Figures {
            interval: Duration::from_secs(1),
            samples: Mutex::new(VecDeque::new()),
        };
        for at in 0..(KEPT_SAMPLES as i64 + 10) {
            f.push(sample(at));
        }
        let snap = f.snapshot();
        assert_eq!(snap.samples.len(), KEPT_SAMPLES);
        assert_eq!(snap.samples[0].at, 10);
        assert_eq!(snap.samples.last().unwrap().at, KEPT_SAMPLES as i64 + 9);
        assert_eq!(snap.interval_ms, 1000);
    }
}
