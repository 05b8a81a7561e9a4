//! The OpenAI-compatible Chat Completions client: one request shape for OpenAI, vLLM,
//! llama.cpp's server, Ollama, LiteLLM and OpenRouter (the base URL is configurable).
//! Every conversation passes the sequencing check before it is sent; failed attempts
//! are retried per [`RetryPolicy`]; each attempt is reported so a recorder can keep it.

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::stream::{Completion, StreamAccumulator};
pub use crate::call::{AttemptReport, LlmError, Outcome};
use crate::record::{AttemptCapture, RunRecorder};
use crate::retry::RetryPolicy;
use crate::types::{FinishReason, Message, ToolCall, Usage};

/// A tool the model may call: its name, what it does, and a JSON schema of its arguments.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub max_tokens: Option<u32>,
}

#[derive(Clone)]
pub struct OpenAiClient {
    base_url: String,
    api_key: Option<String>,
    http: reqwest::Client,
    pub retry: RetryPolicy,
    /// Bound on a response body (non-streaming) or on the assembled stream.
    pub max_response_bytes: usize,
}

impl std::fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("OpenAiClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// The wire form of a conversation.
pub fn wire_messages(messages: &[Message]) -> Vec<Value> {
    messages
        .iter()
        .map(|m| match m {
            Message::System { content } => json!({"role": "system", "content": content}),
            Message::User { content } => json!({"role": "user", "content": content}),
            Message::Assistant { content, tool_calls } => {
                let mut v = json!({"role": "assistant", "content": content});
                if !tool_calls.is_empty() {
                    v["tool_calls"] = tool_calls
                        .iter()
                        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                        .collect();
                }
                v
            }
            Message::Tool { tool_call_id, content } => {
                json!({"role": "tool", "tool_call_id": tool_call_id, "content": content})
            }
        })
        .collect()
}

impl OpenAiClient {
    /// `base_url` like `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1`.
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

    fn body(&self, req: &ChatRequest, stream: bool) -> Value {
        let mut body =
            json!({"model": req.model, "messages": wire_messages(&req.messages), "stream": stream});
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        if !req.tools.is_empty() {
            body["tools"] = req
                .tools
                .iter()
                .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
                .collect();
        }
        if let Some(n) = req.max_tokens {
            body["max_tokens"] = json!(n);
        }
        body
    }

    /// A non-streaming completion.
    pub async fn generate(&self, req: &ChatRequest) -> Result<Outcome, LlmError> {
        self.call(req, false, &mut |_| {}, None).await
    }

    /// A streaming completion; `on_text` sees text as it arrives (including text of an
    /// attempt that later failed and was retried).
    pub async fn stream(
        &self,
        req: &ChatRequest,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Outcome, LlmError> {
        self.call(req, true, on_text, None).await
    }

    /// A completion, streamed or not, recorded as a step of `run` when there is one.
    pub async fn call(
        &self,
        req: &ChatRequest,
        stream: bool,
        on_text: &mut (dyn FnMut(&str) + Send),
        run: Option<&RunRecorder>,
    ) -> Result<Outcome, LlmError> {
        let body = self.body(req, stream);
        let call = OpenAiAttempt {
            client: self,
            body: &body,
            stream,
        };
        let operation = if stream { "stream" } else { "generate" };
        crate::call::recorded_call(
            run,
            operation,
            req,
            self.api_key.as_deref(),
            &self.retry,
            &call,
            on_text,
        )
        .await
    }

    /// One HTTP round trip: the result, the status, and the server's Retry-After.
    async fn attempt(
        &self,
        body: &Value,
        stream: bool,
        on_text: &mut (dyn FnMut(&str) + Send),
        capture: &mut AttemptCapture,
    ) -> crate::call::AttemptResult {
        let mut rb = self
            .http
            .post(format!("{}/chat/completions", self.base_url))
            .json(body);
        if let Some(k) = &self.api_key {
            rb = rb.bearer_auth(k);
        }
        let secret = self.api_key.as_deref();
        let (resp, status) = match crate::call::send(&self.http, rb, capture, secret).await {
            Ok(r) => r,
            Err(failed) => return failed,
        };
        let result = if stream {
            self.read_stream(resp, on_text, capture).await
        } else {
            self.read_body(resp, capture).await
        };
        (result, Some(status), None)
    }

    async fn read_stream(
        &self,
        resp: reqwest::Response,
        on_text: &mut (dyn FnMut(&str) + Send),
        capture: &mut AttemptCapture,
    ) -> Result<Completion, LlmError> {
        let mut acc = StreamAccumulator::new();
        let mut size = 0usize;
        let mut events = resp.bytes_stream().eventsource();
        while let Some(ev) = events.next().await {
            let ev = ev.map_err(|e| LlmError::Connection(e.to_string()))?;
            size += ev.data.len();
            if size > self.max_response_bytes {
                return Err(LlmError::TooLarge(self.max_response_bytes));
            }
            capture.chunk(&ev.data);
            if let Some(text) = acc.push(&ev.data)? {
                on_text(&text);
            }
        }
        Ok(acc.finish()?)
    }

    async fn read_body(
        &self,
        resp: reqwest::Response,
        capture: &mut AttemptCapture,
    ) -> Result<Completion, LlmError> {
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| LlmError::Connection(e.to_string()))?;
        capture.response_body(&bytes);
        if bytes.len() > self.max_response_bytes {
            return Err(LlmError::TooLarge(self.max_response_bytes));
        }
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|e| LlmError::Malformed(e.to_string()))?;
        let choice = v
            .get("choices")
            .and_then(|c| c.get(0))
            .ok_or_else(|| LlmError::Malformed("no choices".into()))?;
        let msg = choice
            .get("message")
            .ok_or_else(|| LlmError::Malformed("no message".into()))?;
        let tool_calls = msg
            .get("tool_calls")
            .and_then(Value::as_array)
            .map(|calls| {
                calls
                    .iter()
                    .enumerate()
                    .map(|(i, c)| ToolCall {
                        id: c
                            .get("id")
                            .and_then(Value::as_str)
                            .map_or_else(|| format!("call_{i}"), str::to_string),
                        name: c
                            .pointer("/function/name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        arguments: c
                            .pointer("/function/arguments")
                            .and_then(Value::as_str)
                            .unwrap_or("{}")
                            .to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let usage = v
            .get("usage")
            .filter(|u| u.is_object())
            .map_or(Usage::default(), |u| Usage {
                input_tokens: u.get("prompt_tokens").and_then(Value::as_u64),
                output_tokens: u.get("completion_tokens").and_then(Value::as_u64),
                cached_tokens: u
                    .pointer("/prompt_tokens_details/cached_tokens")
                    .and_then(Value::as_u64),
                reasoning_tokens: u
                    .pointer("/completion_tokens_details/reasoning_tokens")
                    .and_then(Value::as_u64),
            });
        let finish_reason = choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .and_then(FinishReason::parse)
            .ok_or_else(|| LlmError::Malformed("no finish_reason".into()))?;
        Ok(Completion {
            message: Message::Assistant {
                content: msg
                    .get("content")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                tool_calls,
            },
            finish_reason,
            usage,
        })
    }
}

struct OpenAiAttempt<'a> {
    client: &'a OpenAiClient,
    body: &'a Value,
    stream: bool,
}

impl crate::call::Attempt for OpenAiAttempt<'_> {
    async fn attempt(
        &self,
        on_text: &mut (dyn FnMut(&str) + Send),
        capture: &mut AttemptCapture,
    ) -> crate::call::AttemptResult {
        self.client
            .attempt(self.body, self.stream, on_text, capture)
            .await
    }
}
