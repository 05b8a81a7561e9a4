//! What one HTTP round trip looked like on the wire, gathered while it happens and
//! redacted only when recorded. Capturing is off unless a step is being recorded, so an
//! unrecorded call copies nothing.

use std::time::Instant;

use deputy_core::time::{Millis, now_ms};

use super::redact::Redactor;

#[derive(Debug)]
pub struct AttemptCapture {
    enabled: bool,
    /// Raw chunk bytes kept so far; kept chunks stop at the recorder's cap.
    chunk_bytes: usize,
    chunk_limit: usize,
    chunks: Vec<String>,
    chunks_omitted: u64,
    body_limit: usize,
    began: Instant,
    pub started_at: Millis,
    pub duration_ms: u64,
    pub method: String,
    pub url: String,
    pub status_code: Option<u16>,
    pub request_headers: Vec<(String, String)>,
    pub request_body: Option<String>,
    pub response_headers: Vec<(String, String)>,
    pub response_body: Option<String>,
    pub first_token_at: Option<Millis>,
}

fn headers(map: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

impl AttemptCapture {
    /// `enabled` false makes every method a no-op but the timings.
    pub fn new(enabled: bool, limits: super::RecordLimits) -> Self {
        Self {
            enabled,
            chunk_bytes: 0,
            chunk_limit: limits.max_chunk_bytes,
            chunks: Vec::new(),
            chunks_omitted: 0,
            // Bodies are kept whole up to twice the cap: redaction must see a complete
            // JSON document to find secret keys; the cap is applied after.
            body_limit: limits.max_body_bytes.saturating_mul(2),
            began: Instant::now(),
            started_at: now_ms(),
            duration_ms: 0,
            method: String::new(),
            url: String::new(),
            status_code: None,
            request_headers: Vec::new(),
            request_body: None,
            response_headers: Vec::new(),
            response_body: None,
            first_token_at: None,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn body_text(&self, bytes: &[u8]) -> String {
        let cut = bytes.len().min(self.body_limit);
        String::from_utf8_lossy(&bytes[..cut]).into_owned()
    }

    pub fn request(&mut self, req: &reqwest::Request) {
        self.method = req.method().to_string();
        self.url = req.url().to_string();
        if !self.enabled {
            return;
        }
        self.request_headers = headers(req.headers());
        self.request_body = req
            .body()
            .and_then(|b| b.as_bytes())
            .map(|b| self.body_text(b));
    }

    pub fn response(&mut self, resp: &reqwest::Response) {
        self.status_code = Some(resp.status().as_u16());
        if self.enabled {
            self.response_headers = headers(resp.headers());
        }
    }

    pub fn response_body(&mut self, bytes: &[u8]) {
        if self.enabled {
            self.response_body = Some(self.body_text(bytes));
        }
    }

    /// One SSE `data` payload.
    pub fn chunk(&mut self, data: &str) {
        if self.first_token_at.is_none() && !data.is_empty() {
            self.first_token_at = Some(now_ms());
        }
        if !self.enabled {
            return;
        }
        if self.chunk_bytes + data.len() > self.chunk_limit {
            self.chunks_omitted += 1;
            return;
        }
        self.chunk_bytes += data.len();
        self.chunks.push(data.to_string());
    }

    /// Called when the round trip is over.
    pub fn done(&mut self) {
        self.duration_ms = self.began.elapsed().as_millis() as u64;
    }

    /// The kept chunks, redacted, and how many were left out.
    pub(crate) fn chunks(&self, r: &Redactor) -> (Vec<String>, u64) {
        (
            self.chunks.iter().map(|c| r.body(c)).collect(),
            self.chunks_omitted,
        )
    }
}
