//! The debug recorder: every model call of an agent run as a step, every HTTP round
//! trip of a step as an attempt, redacted and size-capped, written to the task's
//! database.
//!
//! Calls never wait on the database: records go through a bounded channel to one
//! writer task ([`drain`]), which batches them into transactions. A record that cannot
//! be written is logged and counted ([`RecorderStats::failed`]); it never fails the
//! call. The channel is bounded, so a slow database slows recording calls down rather
//! than growing memory.

pub mod capture;
pub mod otlp;
pub mod redact;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use deputy_core::TaskId;
use deputy_core::time::{Millis, now_ms};
use deputy_core::trace::{LlmAttempt, LlmRecord, RecordStatus, Usage};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

pub use capture::AttemptCapture;
use redact::{Redactor, cap};

/// Size caps on what one attempt or step keeps.
#[derive(Debug, Clone, Copy)]
pub struct RecordLimits {
    /// Per request or response body, and per normalized request or response.
    pub max_body_bytes: usize,
    /// All SSE chunks of one attempt together.
    pub max_chunk_bytes: usize,
}

impl Default for RecordLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 256 << 10,
            max_chunk_bytes: 512 << 10,
        }
    }
}

/// Counters of the recorder, for metrics.
#[derive(Debug, Default)]
pub struct RecorderStats {
    pub written: AtomicU64,
    pub failed: AtomicU64,
}

enum Message {
    Record(Box<LlmRecord>),
    Flush(oneshot::Sender<()>),
}

/// The sending side, cheap to clone; every run and step records through it.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Message>,
    stats: Arc<RecorderStats>,
    limits: RecordLimits,
    spans: Option<otlp::SpanExporter>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

/// The receiving side, consumed by [`drain`].
pub struct RecordReceiver {
    rx: mpsc::Receiver<Message>,
    stats: Arc<RecorderStats>,
}

impl Recorder {
    /// A recorder and its receiver; `capacity` bounds the records in flight.
    pub fn new(capacity: usize, limits: RecordLimits) -> (Recorder, RecordReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stats = Arc::new(RecorderStats::default());
        (
            Recorder {
                tx,
                stats: stats.clone(),
                limits,
                spans: None,
            },
            RecordReceiver { rx, stats },
        )
    }

    /// Also exports each finished step as an OpenTelemetry GenAI span.
    pub fn with_spans(mut self, exporter: otlp::SpanExporter) -> Self {
        self.spans = Some(exporter);
        self
    }

    pub fn stats(&self) -> &RecorderStats {
        &self.stats
    }

    async fn send(&self, record: LlmRecord) {
        if self
            .tx
            .send(Message::Record(Box::new(record)))
            .await
            .is_err()
        {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("the model-call recorder has stopped; a record was not kept");
        }
    }

    /// Waits until everything sent before this call has been written (or failed).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Writes records until every [`Recorder`] is dropped. `write` applies one batch in one
/// transaction; when a batch fails, its records are retried one by one so one bad
/// record (say, of a task cleaned meanwhile) does not lose the others.
pub async fn drain<W>(mut receiver: RecordReceiver, mut write: W)
where
    W: AsyncFnMut(&[LlmRecord]) -> Result<(), String>,
{
    let mut inbox = Vec::with_capacity(256);
    while receiver.rx.recv_many(&mut inbox, 256).await > 0 {
        let mut records = Vec::with_capacity(inbox.len());
        let mut flushes = Vec::new();
        for m in inbox.drain(..) {
            match m {
                Message::Record(r) => records.push(*r),
                Message::Flush(ack) => flushes.push(ack),
            }
        }
        if !records.is_empty() {
            write_batch(&mut write, &records, &receiver.stats).await;
        }
        for ack in flushes {
            let _ = ack.send(());
        }
    }
}

async fn write_batch<W>(write: &mut W, records: &[LlmRecord], stats: &RecorderStats)
where
    W: AsyncFnMut(&[LlmRecord]) -> Result<(), String>,
{
    if write(records).await.is_ok() {
        stats
            .written
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        return;
    }
    for r in records {
        match write(std::slice::from_ref(r)).await {
            Ok(()) => stats.written.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                tracing::warn!(error = %e, "could not record a model call; the call itself went on");
                stats.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

fn json_capped<T: Serialize>(v: &T, redactor: &Redactor, max: usize) -> String {
    let text = serde_json::to_string(v).expect("records serialize");
    cap(redactor.body(&text), max)
}

/// The record of one agent run: the model calls of one attempt of a task.
#[derive(Debug)]
pub struct RunRecorder {
    recorder: Recorder,
    run_id: String,
    task_id: TaskId,
    provider: String,
    model: String,
    last_step: AtomicU32,
    usage: std::sync::Mutex<Usage>,
}

impl RunRecorder {
    pub async fn start(
        recorder: &Recorder,
        task_id: TaskId,
        task_attempt: u32,
        provider: &str,
        model: &str,
    ) -> RunRecorder {
        let run_id = uuid::Uuid::now_v7().simple().to_string();
        recorder
            .send(LlmRecord::RunStarted {
                run_id: run_id.clone(),
                task_id,
                task_attempt,
                provider: provider.to_string(),
                model: model.to_string(),
                started_at: now_ms(),
            })
            .await;
        RunRecorder {
            recorder: recorder.clone(),
            run_id,
            task_id,
            provider: provider.to_string(),
            model: model.to_string(),
            last_step: AtomicU32::new(0),
            usage: std::sync::Mutex::new(Usage::default()),
        }
    }

    pub fn id(&self) -> &str {
        &self.run_id
    }

    /// Tokens over every step so far.
    pub fn usage(&self) -> Usage {
        *self.usage.lock().expect("usage lock")
    }

    /// Ends the run and waits until its records are written.
    pub async fn finish(&self, status: RecordStatus, error: Option<&str>) {
        self.recorder
            .send(LlmRecord::RunEnded {
                run_id: self.run_id.clone(),
                status,
                error: error.map(str::to_string),
                usage: self.usage(),
                ended_at: now_ms(),
            })
            .await;
        self.recorder.flush().await;
    }

    /// Starts the record of one model call. `secrets` (the provider's key) are
    /// scrubbed from everything the step keeps.
    pub(crate) async fn begin_step<T: Serialize>(
        &self,
        operation: &'static str,
        request: &T,
        secrets: Option<&str>,
    ) -> StepRecorder<'_> {
        let step = self.last_step.fetch_add(1, Ordering::Relaxed) + 1;
        let redactor = Redactor::new(secrets.map(str::to_string));
        let started_at = now_ms();
        self.recorder
            .send(LlmRecord::StepStarted {
                run_id: self.run_id.clone(),
                step,
                operation: operation.to_string(),
                request: json_capped(request, &redactor, self.recorder.limits.max_body_bytes),
                started_at,
            })
            .await;
        StepRecorder {
            run: self,
            step,
            operation,
            redactor,
            started_at,
            first_token_at: None,
        }
    }
}

/// The record of one model call in progress.
pub(crate) struct StepRecorder<'a> {
    run: &'a RunRecorder,
    step: u32,
    operation: &'static str,
    redactor: Redactor,
    started_at: Millis,
    first_token_at: Option<Millis>,
}

impl StepRecorder<'_> {
    pub fn limits(&self) -> RecordLimits {
        self.run.recorder.limits
    }

    /// Records one finished HTTP round trip; a failed one marks the step `error`
    /// until a later attempt completes it.
    pub async fn attempt(&mut self, number: u32, capture: AttemptCapture, error: Option<String>) {
        let limits = self.run.recorder.limits;
        let r = &self.redactor;
        if self.first_token_at.is_none() {
            self.first_token_at = capture.first_token_at;
        }
        let error = error.map(|e| r.text(&e));
        let (chunks, chunks_omitted) = capture.chunks(r);
        let attempt = LlmAttempt {
            number,
            method: capture.method.clone(),
            url: r.text(&capture.url),
            status_code: capture.status_code,
            request_headers: capture
                .request_headers
                .iter()
                .map(|(k, v)| r.header(k, v))
                .collect(),
            request_body: capture
                .request_body
                .as_deref()
                .map(|b| cap(r.body(b), limits.max_body_bytes)),
            response_headers: capture
                .response_headers
                .iter()
                .map(|(k, v)| r.header(k, v))
                .collect(),
            response_body: capture
                .response_body
                .as_deref()
                .map(|b| cap(r.body(b), limits.max_body_bytes)),
            chunks,
            chunks_omitted,
            started_at: capture.started_at,
            duration_ms: capture.duration_ms,
            error: error.clone(),
        };
        let rec = &self.run.recorder;
        rec.send(LlmRecord::Attempt {
            run_id: self.run.run_id.clone(),
            step: self.step,
            attempt,
        })
        .await;
        if let Some(error) = error {
            rec.send(LlmRecord::StepUpdated {
                run_id: self.run.run_id.clone(),
                step: self.step,
                status: RecordStatus::Error,
                error: Some(error),
                response: None,
                usage: None,
                first_token_at: self.first_token_at,
                ended_at: None,
            })
            .await;
        }
    }

    /// Records how the call ended.
    pub async fn finish(self, result: &Result<crate::call::Outcome, crate::call::LlmError>) {
        let run = self.run;
        let ended_at = now_ms();
        let limits = run.recorder.limits;
        let (status, error, response, usage) = match result {
            Ok(outcome) => {
                let c = &outcome.completion;
                {
                    let mut total = run.usage.lock().expect("usage lock");
                    *total = total.plus(c.usage);
                }
                (
                    RecordStatus::Completed,
                    None,
                    Some(json_capped(c, &self.redactor, limits.max_body_bytes)),
                    Some(c.usage),
                )
            }
            Err(e) => (
                RecordStatus::Error,
                Some(self.redactor.text(&e.to_string())),
                None,
                None,
            ),
        };
        if let Some(spans) = &run.recorder.spans {
            spans.export(otlp::StepSpan {
                run_id: run.run_id.clone(),
                task_id: run.task_id,
                step: self.step,
                operation: self.operation,
                provider: run.provider.clone(),
                model: run.model.clone(),
                started_at: self.started_at,
                ended_at,
                usage: usage.unwrap_or_default(),
                finish_reason: result.as_ref().ok().map(|o| o.completion.finish_reason),
                error: error.clone(),
            });
        }
        run.recorder
            .send(LlmRecord::StepUpdated {
                run_id: run.run_id.clone(),
                step: self.step,
                status,
                error,
                response,
                usage,
                first_token_at: self.first_token_at,
                ended_at: Some(ended_at),
            })
            .await;
    }
}
