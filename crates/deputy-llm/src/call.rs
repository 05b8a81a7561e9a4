//! One model call: its attempts, retried per policy, each reported for the recorder.
//! Provider clients supply the single HTTP round trip ([`Attempt`]); the loop here
//! decides whether and when to try again.

use std::time::{Duration, Instant};

use crate::openai::client::ChatRequest;
use crate::openai::stream::{Completion, StreamError};
use crate::record::redact::Redactor;
use crate::record::{AttemptCapture, RunRecorder, StepRecorder};
use crate::retry::{RetryPolicy, retryable_status};
use crate::sequence::{SequenceError, check_sequence};

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("refusing to send a malformed conversation: {0}")]
    Sequence(#[from] SequenceError),
    #[error("the model API answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("cannot reach the model API: {0}")]
    Connection(String),
    #[error("bad stream: {0}")]
    Stream(#[from] StreamError),
    #[error("unexpected response: {0}")]
    Malformed(String),
    #[error("the response is over {0} bytes")]
    TooLarge(usize),
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: Box<LlmError> },
}

impl LlmError {
    pub fn retryable(&self) -> bool {
        match self {
            LlmError::Status { status, .. } => retryable_status(*status),
            LlmError::Connection(_) => true,
            LlmError::Stream(StreamError::Truncated { .. }) => true,
            _ => false,
        }
    }
}

/// One HTTP round trip, as a recorder keeps it.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub number: u32,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration: Duration,
}

#[derive(Debug)]
pub struct Outcome {
    pub completion: Completion,
    pub attempts: Vec<AttemptReport>,
}

/// What one HTTP round trip returned: the result, the HTTP status, and the server's
/// `Retry-After`.
pub type AttemptResult = (Result<Completion, LlmError>, Option<u16>, Option<Duration>);

/// One HTTP round trip of a provider. It fills `capture` with what went over the wire.
pub(crate) trait Attempt {
    async fn attempt(
        &self,
        on_text: &mut (dyn FnMut(&str) + Send),
        capture: &mut AttemptCapture,
    ) -> AttemptResult;
}

/// Runs attempts until one succeeds, an error is not worth retrying, the attempts run
/// out, or the next delay would pass the deadline. With a `step`, each attempt is
/// recorded as it ends.
pub(crate) async fn with_retries<A: Attempt>(
    policy: &RetryPolicy,
    call: &A,
    on_text: &mut (dyn FnMut(&str) + Send),
    mut step: Option<&mut StepRecorder<'_>>,
) -> Result<Outcome, LlmError> {
    let started = Instant::now();
    let limits = step.as_ref().map(|s| s.limits()).unwrap_or_default();
    let mut attempts = Vec::new();
    let mut number = 0;
    loop {
        number += 1;
        let t = Instant::now();
        let mut capture = AttemptCapture::new(step.is_some(), limits);
        let (result, status, retry_after) = call.attempt(on_text, &mut capture).await;
        capture.done();
        let error = result.as_ref().err().map(|e| e.to_string());
        attempts.push(AttemptReport {
            number,
            status,
            error: error.clone(),
            duration: t.elapsed(),
        });
        if let Some(step) = step.as_deref_mut() {
            step.attempt(number, capture, error).await;
        }
        let err = match result {
            Ok(completion) => {
                return Ok(Outcome {
                    completion,
                    attempts,
                });
            }
            Err(e) => e,
        };
        let delay = policy.delay(number + 1, retry_after, fastrand::f64());
        let out_of_time = started.elapsed() + delay > policy.deadline;
        if !err.retryable() || number >= policy.max_attempts || out_of_time {
            return Err(if number > 1 {
                LlmError::Exhausted {
                    attempts: number,
                    last: Box::new(err),
                }
            } else {
                err
            });
        }
        tracing::info!(attempt = number, error = %err, ?delay, "model call failed; retrying");
        tokio::time::sleep(delay).await;
    }
}

/// One model call from start to end: the sequencing check, the attempts, and (with a
/// `run`) the step's record around them. A conversation that fails the check is never
/// sent; with a run, it is recorded as a failed step with no attempts.
pub(crate) async fn recorded_call<A: Attempt>(
    run: Option<&RunRecorder>,
    operation: &'static str,
    request: &ChatRequest,
    secret: Option<&str>,
    policy: &RetryPolicy,
    call: &A,
    on_text: &mut (dyn FnMut(&str) + Send),
) -> Result<Outcome, LlmError> {
    let mut step = match run {
        Some(run) => Some(run.begin_step(operation, request, secret).await),
        None => None,
    };
    let result = match check_sequence(&request.messages) {
        Err(e) => Err(LlmError::from(e)),
        Ok(()) => with_retries(policy, call, on_text, step.as_mut()).await,
    };
    if let Some(step) = step {
        step.finish(&result).await;
    }
    result
}

/// The HTTP client every provider uses (TLS via rustls with ring).
pub(crate) fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client with default settings always builds")
}

/// Sends one request. A success status gives the response and its status; anything else
/// is the attempt's result already: the error, the status, and the server's Retry-After.
/// `secret` (the API key) is scrubbed from error text, since servers echo it back.
pub(crate) async fn send(
    http: &reqwest::Client,
    rb: reqwest::RequestBuilder,
    capture: &mut AttemptCapture,
    secret: Option<&str>,
) -> Result<(reqwest::Response, u16), AttemptResult> {
    let req = rb.build().map_err(|e| {
        (
            Err(LlmError::Malformed(e.without_url().to_string())),
            None,
            None,
        )
    })?;
    capture.request(&req);
    let resp = http.execute(req).await.map_err(|e| {
        (
            Err(LlmError::Connection(e.without_url().to_string())),
            None,
            None,
        )
    })?;
    capture.response(&resp);
    let status = resp.status().as_u16();
    if resp.status().is_success() {
        return Ok((resp, status));
    }
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::retry::parse_retry_after);
    let bytes = resp.bytes().await.unwrap_or_default();
    capture.response_body(&bytes);
    let text = String::from_utf8_lossy(&bytes);
    let body: String = text.chars().take(2000).collect();
    let body = Redactor::new(secret.map(str::to_string)).text(&body);
    Err((
        Err(LlmError::Status { status, body }),
        Some(status),
        retry_after,
    ))
}
