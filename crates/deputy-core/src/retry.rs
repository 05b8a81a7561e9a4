//! Backoff between automatic retries: exponential, capped, with jitter so that many
//! tasks failing together do not all come back at the same instant.

use crate::spec::RetryPolicy;

/// Delay before attempt `next_attempt` (2 for the first retry). `unit` is a number in
/// [0, 1) supplied by the caller (random in the daemon, fixed in tests); the delay is
/// drawn from [base/2, base] ("equal jitter"), so it never collapses to zero.
pub fn backoff_ms(policy: &RetryPolicy, next_attempt: u32, unit: f64) -> u64 {
    let exp = next_attempt.saturating_sub(2).min(32);
    let base = policy
        .backoff_ms
        .saturating_mul(1u64 << exp)
        .min(policy.backoff_max_ms);
    let half = base / 2;
    half + ((base - half) as f64 * unit.clamp(0.0, 1.0)) as u64
}

/// Whether another attempt is allowed after attempt `attempt` ended.
pub fn may_retry(policy: &RetryPolicy, attempt: u32) -> bool {
    attempt < policy.max_attempts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            backoff_ms: 1000,
            backoff_max_ms: 5000,
        };
        assert_eq!(backoff_ms(&p, 2, 1.0), 1000);
        assert_eq!(backoff_ms(&p, 3, 1.0), 2000);
        assert_eq!(backoff_ms(&p, 4, 1.0), 4000);
        assert_eq!(backoff_ms(&p, 9, 1.0), 5000);
        assert_eq!(backoff_ms(&p, 2, 0.0), 500);
        assert!(may_retry(&p, 9));
        assert!(!may_retry(&p, 10));
    }
}
