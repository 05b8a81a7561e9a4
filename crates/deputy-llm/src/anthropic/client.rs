//! The Anthropic Messages API client (streaming), with the same retries and attempt
//! reports as the OpenAI-compatible one.

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::stream::AnthropicAccumulator;
use super::wire::wire_messages;
use crate::call::{Attempt, AttemptResult};
pub use crate::call::{AttemptReport, LlmError, Outcome};
use crate::openai::client::ChatRequest;
use crate::record::{AttemptCapture, RunRecorder};
use crate::retry::RetryPolicy;

pub const API_VERSION: &str = "2023-06-01";
/// The Messages API requires `max_tokens`; used when the request sets none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

#[derive(Clone)]
pub struct AnthropicClient {
    base_url: String,
    api_key: Option<String>,
    http: reqwest::Client,
    pub retry: RetryPolicy,
    pub max_response_bytes: usize,
}

impl std::fmt::Debug for AnthropicClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl AnthropicClient {
    /// `base_url` like `https://api.anthropic.com/v1`.
    pub fn new(base_url: impl Into<String>, api_key: Option<String>) -> Self {
        let http = crate::call::http_client();
        Self {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            api_key,
            http,
            retry: RetryPolicy::default(),
            max_response_bytes: 8 << 20,
        }
    }

    fn body(&self, req: &ChatRequest) -> Value {
        let (system, messages) = wire_messages(&req.messages);
        let mut body = json!({
            "model": req.model,
            "max_tokens": req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            "messages": messages,
            "stream": true,
        });
        if let Some(s) = system {
            body["system"] = json!(s);
        }
        if !req.tools.is_empty() {
            body["tools"] = req
                .tools
                .iter()
                .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
                .collect();
        }
        body
    }

    /// A streaming completion; `on_text` sees text as it arrives.
    pub async fn stream(
        &self,
        req: &ChatRequest,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Outcome, LlmError> {
        self.call(req, on_text, None).await
    }

    /// A streaming completion, recorded as a step of `run` when there is one.
    pub async fn call(
        &self,
        req: &ChatRequest,
        on_text: &mut (dyn FnMut(&str) + Send),
        run: Option<&RunRecorder>,
    ) -> Result<Outcome, LlmError> {
        let body = self.body(req);
        let call = AnthropicAttempt {
            client: self,
            body: &body,
        };
        crate::call::recorded_call(
            run,
            "stream",
            req,
            self.api_key.as_deref(),
            &self.retry,
            &call,
            on_text,
        )
        .await
    }
}

struct AnthropicAttempt<'a> {
    client: &'a AnthropicClient,
    body: &'a Value,
}

impl Attempt for AnthropicAttempt<'_> {
    async fn attempt(
        &self,
        on_text: &mut (dyn FnMut(&str) + Send),
        capture: &mut AttemptCapture,
    ) -> AttemptResult {
        let c = self.client;
        let mut rb = c
            .http
            .post(format!("{}/messages", c.base_url))
            .header("anthropic-version", API_VERSION)
            .json(self.body);
        if let Some(k) = &c.api_key {
            rb = rb.header("x-api-key", k);
        }
        let secret = c.api_key.as_deref();
        let (resp, status) = match crate::call::send(&c.http, rb, capture, secret).await {
            Ok(r) => r,
            Err(failed) => return failed,
        };
        let mut acc = AnthropicAccumulator::new();
        let mut size = 0usize;
        let mut events = resp.bytes_stream().eventsource();
        while let Some(ev) = events.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => return (Err(LlmError::Connection(e.to_string())), Some(status), None),
            };
            capture.chunk(&ev.data);
            size += ev.data.len();
            if size > c.max_response_bytes {
                return (
                    Err(LlmError::TooLarge(c.max_response_bytes)),
                    Some(status),
                    None,
                );
            }
            match acc.push(&ev.data) {
                Ok(Some(text)) => on_text(&text),
                Ok(None) => {}
                Err(e) => return (Err(e.into()), Some(status), None),
            }
        }
        (acc.finish().map_err(LlmError::from), Some(status), None)
    }
}
