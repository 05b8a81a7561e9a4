//! Retrying model calls: 429, 5xx and connection errors are retried with exponential
//! backoff and jitter, honouring `Retry-After`, within a number of attempts and an
//! overall deadline. A 400 (or any other 4xx) is never retried: sending the same
//! request again cannot fix it.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, including the first.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No attempt starts after this much time since the first.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            deadline: Duration::from_secs(300),
        }
    }
}

/// Whether an HTTP status is worth another attempt.
pub fn retryable_status(status: u16) -> bool {
    status == 429 || status == 408 || (500..=599).contains(&status)
}

/// `Retry-After` as seconds (the HTTP-date form is rare from model APIs; it is ignored).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

impl RetryPolicy {
    /// The delay before attempt `next` (2 for the first retry): the server's
    /// `Retry-After` when it gave one (capped), else exponential with equal jitter.
    pub fn delay(&self, next: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        if let Some(d) = retry_after {
            return d.min(self.max_delay);
        }
        let exp = next.saturating_sub(2).min(16);
        let base = self.base_delay.saturating_mul(1 << exp).min(self.max_delay);
        base / 2 + base.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_and_delays() {
        assert!(retryable_status(429) && retryable_status(503));
        assert!(!retryable_status(400) && !retryable_status(401) && !retryable_status(404));
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(2, Some(Duration::from_secs(3)), 0.5),
            Duration::from_secs(3)
        );
        assert_eq!(p.delay(2, Some(Duration::from_secs(999)), 0.5), p.max_delay);
        let d = p.delay(3, None, 1.0);
        assert_eq!(d, Duration::from_secs(1));
        assert_eq!(p.delay(3, None, 0.0), Duration::from_millis(500));
    }
}
