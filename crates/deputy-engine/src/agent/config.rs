//! How agent tasks run: the default provider, CLI backends, prices, the shell sandbox
//! and what happens to worktrees.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a CLI backend's output is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CliFormat {
    /// Claude Code's `--output-format stream-json`.
    Claude,
    /// `codex exec --json` events.
    Codex,
    /// Plain text, stored as it is.
    Text,
}

/// An agent CLI. `claude`, `codex` and `generic` are built in; `[agents.NAME]` adds one
/// or overrides a built-in (e.g. its `program` path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliBackend {
    pub format: CliFormat,
    /// The executable (looked up in PATH when it has no `/`).
    pub program: String,
    /// For `text` backends: the arguments, where `{prompt}`, `{model}` and
    /// `{system_prompt}` are replaced (each in place, never through a shell). For
    /// `claude` and `codex`: extra flags added to the command deputy builds, such as
    /// `--permission-mode acceptEdits` or `--sandbox workspace-write`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Variables passed from the daemon's environment (API keys, config dirs); for a
    /// backend named like a built-in, in addition to the built-in's.
    #[serde(default)]
    pub env: Vec<String>,
}

impl CliBackend {
    pub fn builtin(name: &str) -> Option<CliBackend> {
        let vars = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Some(match name {
            "claude" => CliBackend {
                format: CliFormat::Claude,
                program: "claude".into(),
                args: vec![],
                env: vars(&[
                    "ANTHROPIC_API_KEY",
                    "ANTHROPIC_BASE_URL",
                    "ANTHROPIC_AUTH_TOKEN",
                    "CLAUDE_CONFIG_DIR",
                ]),
            },
            "codex" => CliBackend {
                format: CliFormat::Codex,
                program: "codex".into(),
                args: vec![],
                env: vars(&["OPENAI_API_KEY", "OPENAI_BASE_URL", "CODEX_HOME"]),
            },
            "generic" => CliBackend {
                format: CliFormat::Text,
                program: "sh".into(),
                args: vec!["-c".into(), "{prompt}".into()],
                env: vec![],
            },
            _ => return None,
        })
    }
}

/// Dollars per million tokens of one model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Cached input, when cheaper (default: the input price).
    #[serde(default)]
    pub cached_input: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sandbox {
    /// `shell` runs as the daemon's user in the workspace; only file tools are confined.
    #[default]
    None,
    /// `shell` runs under bubblewrap: the filesystem read-only except the workspace and
    /// a private /tmp, no network, its own process namespace.
    Bwrap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorktreeCleanup {
    Keep,
    Remove,
    /// Remove it when it has no uncommitted changes (its branch stays).
    #[default]
    RemoveIfClean,
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The provider of built-in agent tasks that name none.
    pub default_provider: String,
    pub backends: BTreeMap<String, CliBackend>,
    pub prices: BTreeMap<String, Price>,
    pub sandbox: Sandbox,
    pub worktree_dir: PathBuf,
    pub worktree_cleanup: WorktreeCleanup,
    /// Default timeout of one `shell` tool call.
    pub shell_timeout: Duration,
}

impl AgentConfig {
    pub fn new(worktree_dir: PathBuf) -> Self {
        Self {
            default_provider: "openai".into(),
            backends: BTreeMap::new(),
            prices: BTreeMap::new(),
            sandbox: Sandbox::None,
            worktree_dir,
            worktree_cleanup: WorktreeCleanup::RemoveIfClean,
            shell_timeout: Duration::from_secs(120),
        }
    }

    /// The backend called `name`: configured, else built in. A configured backend named
    /// like a built-in keeps the built-in's environment variables besides its own, so
    /// overriding `program` or `args` does not lose the API key.
    pub fn backend(&self, name: &str) -> Option<CliBackend> {
        let builtin = CliBackend::builtin(name);
        match (self.backends.get(name), builtin) {
            (Some(configured), Some(b)) => {
                let mut merged = configured.clone();
                for var in b.env {
                    if !merged.env.contains(&var) {
                        merged.env.push(var);
                    }
                }
                Some(merged)
            }
            (Some(configured), None) => Some(configured.clone()),
            (None, b) => b,
        }
    }

    /// The cost of `usage` for `model`, when its price is known.
    pub fn cost(&self, model: &str, usage: &deputy_core::trace::Usage) -> Option<f64> {
        let p = self.prices.get(model)?;
        let input = usage.input_tokens.unwrap_or(0) as f64;
        let cached = usage.cached_tokens.unwrap_or(0) as f64;
        let output = usage.output_tokens.unwrap_or(0) as f64;
        let cached_price = p.cached_input.unwrap_or(p.input);
        Some(
            ((input - cached).max(0.0) * p.input + cached * cached_price + output * p.output) / 1e6,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overriding_a_builtin_keeps_its_environment_and_prices_give_costs() {
        let mut cfg = AgentConfig::new(PathBuf::from("/tmp/w"));
        cfg.backends.insert(
            "claude".into(),
            CliBackend {
                format: CliFormat::Claude,
                program: "/opt/claude".into(),
                args: vec!["--permission-mode".into(), "acceptEdits".into()],
                env: vec!["MY_VAR".into()],
            },
        );
        let b = cfg.backend("claude").unwrap();
        assert_eq!(b.program, "/opt/claude");
        assert!(b.env.contains(&"MY_VAR".to_string()));
        assert!(b.env.contains(&"ANTHROPIC_API_KEY".to_string()));
        assert!(cfg.backend("nope").is_none());
        cfg.prices.insert(
            "m".into(),
            Price {
                input: 2.0,
                output: 8.0,
                cached_input: Some(0.5),
            },
        );
        let usage = deputy_core::trace::Usage {
            input_tokens: Some(1_000_000),
            output_tokens: Some(500_000),
            cached_tokens: Some(400_000),
            reasoning_tokens: None,
        };
        // 600k uncached at $2/M + 400k cached at $0.5/M + 500k out at $8/M.
        let cost = cfg.cost("m", &usage).unwrap();
        assert!((cost - (1.2 + 0.2 + 4.0)).abs() < 1e-9, "{cost}");
        assert_eq!(cfg.cost("unpriced", &usage), None);
    }
}
