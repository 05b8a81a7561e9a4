//! One model call: its attempts, retried per policy, each reported for the recorder.
//! Provider clients supply the single HTTP round trip ([`Attempt`]); the loop here
//! decides whether and when to try again.

use std::time::{Duration, Instant};

use crate::openai::stream::{Completion, StreamError};
use crate::retry::{RetryPolicy, retryable_status};
use crate::sequence::SequenceError;

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

/// One HTTP round trip of a provider.
pub(crate) trait Attempt {
    async fn attempt(&self, on_text: &mut (dyn FnMut(&str) + Send)) -> AttemptResult;
}

/// Runs attempts until one succeeds, an error is not worth retrying, the attempts run
/// out, or the next delay would pass the deadline.
pub(crate) async fn with_retries<A: Attempt>(
    policy: &RetryPolicy,
    call: &A,
    on_text: &mut (dyn FnMut(&str) + Send),
) -> Result<Outcome, LlmError> {
    let started = Instant::now();
    let mut attempts = Vec::new();
    let mut number = 0;
    loop {
        number += 1;
        let t = Instant::now();
        let (result, status, retry_after) = call.attempt(on_text).await;
        attempts.push(AttemptReport {
            number,
            status,
            error: result.as_ref().err().map(|e| e.to_string()),
            duration: t.elapsed(),
        });
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
        tokio::time::sleep(delay).await;
    }
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
pub(crate) async fn send(
    rb: reqwest::RequestBuilder,
) -> Result<(reqwest::Response, u16), AttemptResult> {
    let resp = rb.send().await.map_err(|e| {
        (
            Err(LlmError::Connection(e.without_url().to_string())),
            None,
            None,
        )
    })?;
    let status = resp.status().as_u16();
    if resp.status().is_success() {
        return Ok((resp, status));
    }
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::retry::parse_retry_after);
    let text = resp.text().await.unwrap_or_default();
    let body: String = text.chars().take(2000).collect();
    Err((
        Err(LlmError::Status { status, body }),
        Some(status),
        retry_after,
    ))
}
