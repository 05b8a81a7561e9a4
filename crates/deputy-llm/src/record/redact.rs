//! What the recorder keeps is redacted first: credential headers, JSON values under
//! secret-looking keys, and every occurrence of the known secrets (the provider's API
//! key) anywhere in the text, since servers echo keys back in error messages. Usage
//! counters such as `input_tokens` are not secrets and are kept.

use serde_json::Value;

pub const REDACTED: &str = "[redacted]";

/// Headers whose values are always credentials.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "set-cookie",
];

/// Whether a JSON key names a secret. `token` and `*_token` are; `*_tokens` (usage
/// counters) and `max_tokens` are not.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    k == "token"
        || k.ends_with("_token")
        || k.ends_with("apikey")
        || k.ends_with("api_key")
        || k.contains("secret")
        || k.contains("password")
        || k == "authorization"
        || k == "cookie"
}

/// Whether a JSON text may have an object key that names a secret: each `:` that
/// follows a quoted string is checked. Cheap (no parse, no allocation), and never
/// wrong in the direction that matters: a `:` inside a string value can only cause a
/// needless parse, never a missed key.
fn may_hold_secret_key(s: &str) -> bool {
    let b = s.as_bytes();
    for (colon, _) in s.match_indices(':') {
        let mut end = colon;
        while end > 0 && b[end - 1].is_ascii_whitespace() {
            end -= 1;
        }
        if end == 0 || b[end - 1] != b'"' {
            continue;
        }
        let close = end - 1;
        let from = close.saturating_sub(64);
        if let Some(open) = b[from..close].iter().rposition(|&c| c == b'"')
            && let Ok(key) = std::str::from_utf8(&b[from + open + 1..close])
            && is_secret_key(key)
        {
            return true;
        }
    }
    false
}

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Literal secrets to scrub wherever they appear (empty ones are ignored).
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        Self {
            // Very short "secrets" would scrub ordinary text; real keys are long.
            secrets: secrets.into_iter().filter(|s| s.len() >= 8).collect(),
        }
    }

    /// Replaces every known secret in free text.
    pub fn text(&self, s: &str) -> String {
        let mut out = s.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }

    pub fn header(&self, name: &str, value: &str) -> (String, String) {
        let name = name.to_ascii_lowercase();
        let value = if SECRET_HEADERS.contains(&name.as_str()) {
            REDACTED.to_string()
        } else {
            self.text(value)
        };
        (name, value)
    }

    /// A JSON body (or any text): values under secret keys replaced, then known
    /// secrets scrubbed. Text that is not JSON is scrubbed as text.
    pub fn body(&self, s: &str) -> String {
        let s = if may_hold_secret_key(s) {
            match serde_json::from_str::<Value>(s) {
                Ok(mut v) => {
                    redact_value(&mut v);
                    serde_json::to_string(&v).unwrap_or_else(|_| s.to_string())
                }
                Err(_) => s.to_string(),
            }
        } else {
            s.to_string()
        };
        self.text(&s)
    }
}

fn redact_value(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if is_secret_key(k) && !val.is_null() {
                    *val = Value::String(REDACTED.into());
                } else {
                    redact_value(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_value),
        _ => {}
    }
}

/// Cuts text to at most `max` bytes on a character boundary, saying how much was cut.
pub fn cap(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let end = s.floor_char_boundary(max);
    format!("{}… [{} bytes omitted]", &s[..end], s.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_are_secrets_and_keys_that_are_counters() {
        for k in [
            "api_key",
            "apiKey",
            "x-api-key",
            "secret",
            "client_secret",
            "password",
            "token",
            "access_token",
            "refresh-token",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "input_tokens",
            "output_tokens",
            "max_tokens",
            "prompt_tokens",
            "model",
            "keys",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn bodies_headers_and_free_text_lose_their_secrets() {
        let r = Redactor::new(["sk-live-0123456789".to_string()]);
        let body = r#"{"model":"m","api_key":"abc","nested":[{"password":"p"}],"usage":{"input_tokens":5},"note":"key sk-live-0123456789 here"}"#;
        let out: Value = serde_json::from_str(&r.body(body)).unwrap();
        assert_eq!(out["api_key"], REDACTED);
        assert_eq!(out["nested"][0]["password"], REDACTED);
        assert_eq!(out["usage"]["input_tokens"], 5);
        assert_eq!(out["note"], "key [redacted] here");
        assert_eq!(
            r.header("Authorization", "Bearer x").1,
            REDACTED,
            "credential headers"
        );
        assert_eq!(r.header("x-request-id", "42").1, "42");
        assert_eq!(
            r.body("Incorrect API key provided: sk-live-0123456789."),
            "Incorrect API key provided: [redacted]."
        );
    }

    #[test]
    fn secret_keys_are_spotted_without_parsing() {
        assert!(may_hold_secret_key(r#"{"a":1,"api_key":"x"}"#));
        assert!(may_hold_secret_key(r#"{"a": {"Password" : "x"}}"#));
        assert!(!may_hold_secret_key(
            r#"{"model":"m","usage":{"input_tokens":3},"content":"a: b"}"#
        ));
        assert!(!may_hold_secret_key("plain text: no json"));
    }

    #[test]
    fn caps_cut_on_a_character_boundary() {
        let s = "é".repeat(10);
        let c = cap(s, 5);
        assert!(c.starts_with("éé"));
        assert!(c.ends_with("[16 bytes omitted]"), "{c}");
    }
}
