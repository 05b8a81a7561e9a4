//! Each finished model call as an OpenTelemetry span with the GenAI semantic
//! conventions' `gen_ai.*` attributes, sent to an OTLP/HTTP collector in OTLP's JSON
//! encoding (`POST {endpoint}/v1/traces`, `application/json`).
//!
//! Why not the opentelemetry SDK crates: their OTLP/HTTP exporters bring a blocking
//! HTTP client or a runtime of their own plus protobuf code generation, while deputy
//! already has an async HTTP client and a step's span is fully known when the step
//! ends (no context propagation, no sampling). The JSON encoding is a stable part of
//! OTLP 1.x.
//!
//! Spans never slow a call down: `export` never waits. Spans go through a bounded
//! queue to one sender task; when the queue is full or the collector fails, spans are
//! dropped, logged and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deputy_core::TaskId;
use deputy_core::time::Millis;
use deputy_core::trace::Usage;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::types::FinishReason;

/// What a span says about one finished step.
#[derive(Debug, Clone)]
pub struct StepSpan {
    pub run_id: String,
    pub task_id: TaskId,
    pub step: u32,
    pub operation: &'static str,
    pub provider: String,
    pub model: String,
    pub started_at: Millis,
    pub ended_at: Millis,
    pub usage: Usage,
    pub finish_reason: Option<FinishReason>,
    pub error: Option<String>,
}

#[derive(Debug, Default)]
pub struct SpanStats {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
}

#[derive(Clone)]
pub struct SpanExporter {
    tx: mpsc::Sender<StepSpan>,
    stats: Arc<SpanStats>,
}

impl std::fmt::Debug for SpanExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanExporter").finish_non_exhaustive()
    }
}

/// The traces URL for an OTLP/HTTP endpoint: a base URL gets `/v1/traces` appended, as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` does; a URL already ending in it is used as is.
pub fn traces_url(endpoint: &str) -> String {
    let e = endpoint.trim_end_matches('/');
    if e.ends_with("/v1/traces") {
        e.to_string()
    } else {
        format!("{e}/v1/traces")
    }
}

impl SpanExporter {
    /// Starts the sender task (on the current tokio runtime).
    pub fn start(endpoint: &str) -> SpanExporter {
        let (tx, rx) = mpsc::channel(1024);
        let stats = Arc::new(SpanStats::default());
        tokio::spawn(send_loop(traces_url(endpoint), rx, stats.clone()));
        SpanExporter { tx, stats }
    }

    pub fn stats(&self) -> &SpanStats {
        &self.stats
    }

    pub fn export(&self, span: StepSpan) {
        if self.tx.try_send(span).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn send_loop(url: String, mut rx: mpsc::Receiver<StepSpan>, stats: Arc<SpanStats>) {
    let http = crate::call::http_client();
    let mut batch = Vec::with_capacity(128);
    while rx.recv_many(&mut batch, 128).await > 0 {
        let n = batch.len() as u64;
        let body = export_request(&batch);
        batch.clear();
        let sent = http
            .post(&url)
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                stats.exported.fetch_add(n, Ordering::Relaxed);
            }
            Ok(r) => {
                stats.dropped.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(status = r.status().as_u16(), %url, "the OTLP collector refused {n} spans");
            }
            Err(e) => {
                stats.dropped.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(error = %e.without_url(), %url, "could not send {n} spans to the OTLP collector");
            }
        }
    }
}

fn attr(key: &str, value: Value) -> Value {
    json!({"key": key, "value": value})
}

fn string(s: &str) -> Value {
    json!({"stringValue": s})
}

fn int(n: u64) -> Value {
    // OTLP's JSON encoding writes 64-bit integers as strings.
    json!({"intValue": n.to_string()})
}

fn nanos(ms: Millis) -> String {
    (ms.max(0) as u128 * 1_000_000).to_string()
}

fn finish_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

/// One span in OTLP JSON.
pub fn span_json(s: &StepSpan) -> Value {
    let mut attrs = vec![
        attr("gen_ai.operation.name", string("chat")),
        attr("gen_ai.provider.name", string(&s.provider)),
        attr("gen_ai.system", string(&s.provider)),
        attr("gen_ai.request.model", string(&s.model)),
        attr("deputy.task.id", string(&s.task_id.to_string())),
        attr("deputy.run.id", string(&s.run_id)),
        attr("deputy.step", int(u64::from(s.step))),
        attr("deputy.operation", string(s.operation)),
    ];
    if let Some(n) = s.usage.input_tokens {
        attrs.push(attr("gen_ai.usage.input_tokens", int(n)));
    }
    if let Some(n) = s.usage.output_tokens {
        attrs.push(attr("gen_ai.usage.output_tokens", int(n)));
    }
    if let Some(r) = s.finish_reason {
        attrs.push(attr(
            "gen_ai.response.finish_reasons",
            json!({"arrayValue": {"values": [string(finish_reason(r))]}}),
        ));
    }
    let status = match &s.error {
        Some(e) => {
            attrs.push(attr("error.type", string("model_call_failed")));
            json!({"code": 2, "message": e})
        }
        None => json!({"code": 1}),
    };
    // The run id is a UUID: its 32 hex digits make every step of a run one trace.
    let trace_id: String = s
        .run_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .chain(std::iter::repeat('0'))
        .take(32)
        .collect();
    json!({
        "traceId": trace_id,
        "spanId": format!("{:016x}", fastrand::u64(1..)),
        "name": format!("chat {}", s.model),
        "kind": 3,
        "startTimeUnixNano": nanos(s.started_at),
        "endTimeUnixNano": nanos(s.ended_at),
        "attributes": attrs,
        "status": status,
    })
}

/// An `ExportTraceServiceRequest` of spans, in OTLP JSON.
pub fn export_request(spans: &[StepSpan]) -> Value {
    json!({
        "resourceSpans": [{
            "resource": {"attributes": [attr("service.name", string("deputy"))]},
            "scopeSpans": [{
                "scope": {"name": "deputy-llm", "version": env!("CARGO_PKG_VERSION")},
                "spans": spans.iter().map(span_json).collect::<Vec<_>>(),
            }],
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_otlp_environment_convention() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/v1/traces/"),
            "http://c:4318/v1/traces"
        );
    }

    #[test]
    fn a_span_carries_the_genai_attributes() {
        let s = StepSpan {
            run_id: "0190f0a1b2c3d4e5f60718293a4b5c6d".into(),
            task_id: TaskId::new(),
            step: 2,
            operation: "stream",
            provider: "openai".into(),
            model: "gpt-x".into(),
            started_at: 1_000,
            ended_at: 1_250,
            usage: Usage {
                input_tokens: Some(10),
                output_tokens: Some(3),
                ..Usage::default()
            },
            finish_reason: Some(FinishReason::ToolCalls),
            error: None,
        };
        let v = span_json(&s);
        assert_eq!(v["traceId"], "0190f0a1b2c3d4e5f60718293a4b5c6d");
        assert_eq!(v["spanId"].as_str().unwrap().len(), 16);
        assert_eq!(v["startTimeUnixNano"], "1000000000");
        let attrs: std::collections::BTreeMap<String, Value> = v["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["key"].as_str().unwrap().to_string(), a["value"].clone()))
            .collect();
        assert_eq!(attrs["gen_ai.request.model"]["stringValue"], "gpt-x");
        assert_eq!(attrs["gen_ai.usage.input_tokens"]["intValue"], "10");
        assert_eq!(
            attrs["gen_ai.response.finish_reasons"]["arrayValue"]["values"][0]["stringValue"],
            "tool_calls"
        );
        assert!(!attrs.contains_key("gen_ai.usage.reasoning_tokens"));
    }
}
