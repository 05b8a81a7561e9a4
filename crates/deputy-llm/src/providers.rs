//! Named model providers. Each has a kind (the wire format), a base URL, the *name* of
//! the environment variable that holds its API key (the key itself is never stored or
//! written to config), a default model and a request timeout. With no configuration,
//! the built-in `openai` and `anthropic` providers read the variables their own SDKs
//! read: OPENAI_API_KEY, OPENAI_BASE_URL, ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Chat Completions: OpenAI, vLLM, llama.cpp, Ollama, LiteLLM, OpenRouter.
    #[serde(rename = "openai", alias = "open_ai")]
    OpenAi,
    /// The Anthropic Messages API.
    Anthropic,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    pub base_url: String,
    /// The environment variable holding the API key (None: no key, e.g. a local server).
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub default_model: Option<String>,
    /// Seconds for one request.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_timeout_secs() -> u64 {
    600
}

impl ProviderConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }

    /// The API key from the environment, read when a call is made.
    pub fn api_key(&self, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        self.api_key_env
            .as_deref()
            .and_then(env)
            .filter(|k| !k.is_empty())
    }
}

/// The built-in providers, honouring the variables the vendors' own SDKs read.
pub fn builtin(env: &dyn Fn(&str) -> Option<String>) -> BTreeMap<String, ProviderConfig> {
    let base = |var: &str, default: &str| {
        env(var)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_string())
    };
    BTreeMap::from([
        (
            "openai".to_string(),
            ProviderConfig {
                kind: ProviderKind::OpenAi,
                base_url: base("OPENAI_BASE_URL", "https://api.openai.com/v1"),
                api_key_env: Some("OPENAI_API_KEY".into()),
                default_model: None,
                timeout_secs: default_timeout_secs(),
            },
        ),
        (
            "anthropic".to_string(),
            ProviderConfig {
                kind: ProviderKind::Anthropic,
                base_url: base("ANTHROPIC_BASE_URL", "https://api.anthropic.com/v1"),
                api_key_env: Some("ANTHROPIC_API_KEY".into()),
                default_model: None,
                timeout_secs: default_timeout_secs(),
            },
        ),
    ])
}

/// The built-ins, overridden or extended by configured providers of the same or new names.
pub fn resolve(
    configured: &BTreeMap<String, ProviderConfig>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, ProviderConfig>, String> {
    let mut all = builtin(env);
    for (name, p) in configured {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "provider name `{name}` may only use letters, digits, `-` and `_`"
            ));
        }
        if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
            return Err(format!(
                "provider `{name}`: base_url must start with http:// or https://"
            ));
        }
        if let Some(var) = &p.api_key_env
            && (var.is_empty() || var.contains('='))
        {
            return Err(format!(
                "provider `{name}`: api_key_env names an environment variable (e.g. MY_KEY), not the key"
            ));
        }
        all.insert(name.clone(), p.clone());
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn builtins_honour_the_sdk_variables() {
        let e = env(&[
            ("OPENAI_BASE_URL", "http://127.0.0.1:8080/v1"),
            ("ANTHROPIC_API_KEY", "sk-ant"),
        ]);
        let all = builtin(&e);
        assert_eq!(all["openai"].base_url, "http://127.0.0.1:8080/v1");
        assert_eq!(all["anthropic"].base_url, "https://api.anthropic.com/v1");
        assert_eq!(all["anthropic"].api_key(&e).as_deref(), Some("sk-ant"));
        assert_eq!(all["openai"].api_key(&e), None);
    }

    #[test]
    fn configured_providers_are_checked_and_keys_are_never_in_config() {
        let e = env(&[("LOCAL_KEY", "k")]);
        let local: ProviderConfig = serde_json::from_value(serde_json::json!({
            "kind": "open_ai", "base_url": "http://127.0.0.1:11434/v1", "api_key_env": "LOCAL_KEY", "default_model": "llama3"
        }))
        .unwrap();
        let all = resolve(&BTreeMap::from([("ollama".into(), local.clone())]), &e).unwrap();
        assert_eq!(all["ollama"].api_key(&e).as_deref(), Some("k"));
        let mut bad = local.clone();
        bad.api_key_env = Some("sk-live=abc".into());
        assert!(
            resolve(&BTreeMap::from([("x".into(), bad)]), &e)
                .unwrap_err()
                .contains("not the key")
        );
        let mut bad = local;
        bad.base_url = "ftp://x".into();
        assert!(resolve(&BTreeMap::from([("x".into(), bad)]), &e).is_err());
        let unknown = serde_json::from_value::<ProviderConfig>(
            serde_json::json!({"kind": "open_ai", "base_url": "http://x", "api_key": "sk"}),
        );
        assert!(unknown.is_err(), "a key in the config is refused");
    }
}
