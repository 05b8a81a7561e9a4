//! Time as Unix milliseconds: what the store keeps and the API sends.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

pub fn to_rfc3339(ms: Millis) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses an RFC 3339 timestamp (`2026-11-24T10:00:00Z`) or a relative one (`+10m`, `in 10m`).
pub fn parse_when(s: &str, now: Millis) -> Result<Millis, String> {
    let s = s.trim();
    let relative = s
        .strip_prefix('+')
        .or_else(|| s.strip_prefix("in "))
        .map(str::trim);
    if let Some(rel) = relative {
        let d = humantime::parse_duration(rel)
            .map_err(|e| format!("`{s}` is not a relative time like +10m: {e}"))?;
        return Ok(now.saturating_add(d.as_millis() as Millis));
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
        format!("`{s}` is not a time: use RFC 3339 (2026-11-24T10:00:00Z) or +10m ({e})")
    })?;
    Ok(t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0))
}

/// Short human age: `4s`, `3m`, `2h`, `5d`.
pub fn short_duration(ms: Millis) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    match s {
        0..=9 => format!("{:.1}s", ms as f64 / 1000.0),
        10..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}
