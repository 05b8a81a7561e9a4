//! Agent tasks: what an agent task asks for ([`AgentSpec`]), what users send
//! ([`AgentInput`]), and what an attempt reports back ([`AgentUsage`]).

use serde::{Deserialize, Serialize};

use crate::id::truncate_for_message;
use crate::submit::ValidationError;

/// The backend that runs the built-in tool-using loop in the daemon.
pub const BUILTIN: &str = "builtin";
pub const DEFAULT_MAX_TURNS: u32 = 30;
pub const MAX_PROMPT_BYTES: usize = 256 << 10;
const MAX_FIELD_BYTES: usize = 4096;

/// A validated agent task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentSpec {
    /// `builtin`, or the name of a CLI backend (`claude`, `codex`, `generic`, or one
    /// configured under `[agents.NAME]`).
    pub backend: String,
    pub prompt: String,
    /// For the built-in loop: the provider (`[providers.NAME]`); none: the configured default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// Run in a fresh `git worktree` on a new branch `deputy/<short-id>`.
    #[serde(default)]
    pub worktree: bool,
    /// Model turns at most (built-in loop).
    pub max_turns: u32,
    /// Input plus output tokens at most (built-in loop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Cost at most, in millionths of a US dollar (built-in loop; prices from config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_micros: Option<u64>,
    /// A CLI session to resume (`--resume`), e.g. from an earlier task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_session: Option<String>,
}

/// An agent task as submitted (`"kind": "agent", "agent": {...}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentInput {
    /// `builtin` (the default) or a CLI backend name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    pub prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub worktree: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turns: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_session: Option<String>,
}

fn name_like(field: &'static str, v: &str) -> Result<(), ValidationError> {
    if v.is_empty()
        || v.len() > 64
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(ValidationError::new(
            field,
            format!(
                "`{}` must be 1-64 letters, digits, `-`, `_` or `.`",
                truncate_for_message(v)
            ),
        ));
    }
    Ok(())
}

fn bounded(field: &'static str, v: &str, max: usize) -> Result<(), ValidationError> {
    if v.len() > max {
        return Err(ValidationError::new(
            field,
            format!("is {} bytes, more than the {max} allowed", v.len()),
        ));
    }
    if v.contains('\0') {
        return Err(ValidationError::new(field, "may not contain NUL bytes"));
    }
    Ok(())
}

impl AgentInput {
    pub fn validate(self) -> Result<AgentSpec, ValidationError> {
        let backend = self.backend.unwrap_or_else(|| BUILTIN.to_string());
        name_like("agent.backend", &backend)?;
        if self.prompt.trim().is_empty() {
            return Err(ValidationError::new("agent.prompt", "the prompt is empty"));
        }
        bounded("agent.prompt", &self.prompt, MAX_PROMPT_BYTES)?;
        if let Some(p) = &self.provider {
            name_like("agent.provider", p)?;
        }
        if let Some(m) = &self.model {
            bounded("agent.model", m, 256)?;
            if m.trim().is_empty() {
                return Err(ValidationError::new("agent.model", "the model is empty"));
            }
        }
        if let Some(s) = &self.system_prompt {
            bounded("agent.system_prompt", s, MAX_PROMPT_BYTES)?;
        }
        let max_turns = self.max_turns.unwrap_or(DEFAULT_MAX_TURNS);
        if !(1..=1000).contains(&max_turns) {
            return Err(ValidationError::new(
                "agent.max_turns",
                "must be between 1 and 1000",
            ));
        }
        if self.max_tokens == Some(0) {
            return Err(ValidationError::new(
                "agent.max_tokens",
                "must be more than 0",
            ));
        }
        let max_cost_micros = match self.max_cost_usd {
            None => None,
            Some(c) if c.is_finite() && c > 0.0 && c <= 1e6 => Some((c * 1e6).round() as u64),
            Some(_) => {
                return Err(ValidationError::new(
                    "agent.max_cost_usd",
                    "must be a number of dollars above 0",
                ));
            }
        };
        if let Some(s) = &self.resume_session {
            bounded("agent.resume_session", s, MAX_FIELD_BYTES)?;
            if s.trim().is_empty() || s.starts_with('-') {
                return Err(ValidationError::new(
                    "agent.resume_session",
                    "is not a session id",
                ));
            }
        }
        Ok(AgentSpec {
            backend,
            prompt: self.prompt,
            provider: self.provider,
            model: self.model,
            system_prompt: self.system_prompt,
            worktree: self.worktree,
            max_turns,
            max_tokens: self.max_tokens,
            max_cost_micros,
            resume_session: self.resume_session,
        })
    }
}

/// What an agent attempt used and where it can be resumed, from the built-in loop or
/// from a CLI's result. Unknown counts stay unknown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentUsage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turns: Option<u32>,
    /// The CLI session (Claude Code's `session_id`), for `retry --continue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The final answer (at most [`MAX_RESULT_BYTES`]): what a later workflow step gets
    /// for `{{steps.NAME.output}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

pub const MAX_RESULT_BYTES: usize = 64 << 10;

/// Cuts a final answer to [`MAX_RESULT_BYTES`] on a character boundary.
pub fn cap_result(s: &str) -> String {
    crate::text::cut_bytes(s, MAX_RESULT_BYTES)
}

/// The text of `{{steps.NAME.output}}`: a workflow step's reference to the output of
/// the step NAME it depends on.
pub fn step_placeholder(name: &str) -> String {
    format!("{{{{steps.{name}.output}}}}")
}

/// The step names referenced as `{{steps.NAME.output}}`, once each, in order of
/// appearance. A name is never empty and has no braces or spaces.
pub fn step_references(text: &str) -> Vec<String> {
    const OPEN: &str = "{{steps.";
    const CLOSE: &str = ".output}}";
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        match after.find(CLOSE) {
            Some(end) if end > 0 && !after[..end].contains(['{', '}', ' ']) => {
                let name = after[..end].to_string();
                if !names.contains(&name) {
                    names.push(name);
                }
                rest = &after[end + CLOSE.len()..];
            }
            _ => rest = after,
        }
    }
    names
}

impl AgentUsage {
    /// `in 1200 out 340 $0.0123`, for tables.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.input_tokens.is_some() || self.output_tokens.is_some() {
            let n = |v: Option<u64>| v.map_or_else(|| "?".into(), |v| v.to_string());
            parts.push(format!(
                "in {} out {}",
                n(self.input_tokens),
                n(self.output_tokens)
            ));
        }
        if let Some(c) = self.cost_usd {
            parts.push(format!("${c:.4}"));
        }
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(" ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(prompt: &str) -> AgentInput {
        AgentInput {
            prompt: prompt.into(),
            ..AgentInput::default()
        }
    }

    #[test]
    fn step_references_are_found_once_each() {
        assert_eq!(
            step_references(
                "Plan: {{steps.plan.output}}\nAgain {{steps.plan.output}} and {{steps.build-1.output}} {{steps.bad name.output}} {{steps..output}}"
            ),
            vec!["plan".to_string(), "build-1".to_string()]
        );
        assert!(step_references("no refs {{steps.x}}").is_empty());
        assert_eq!(step_placeholder("plan"), "{{steps.plan.output}}");
    }

    #[test]
    fn defaults_and_bounds() {
        let spec = input("fix the test").validate().unwrap();
        assert_eq!(spec.backend, BUILTIN);
        assert_eq!(spec.max_turns, DEFAULT_MAX_TURNS);
        assert!(input("  ").validate().is_err());
        let mut i = input("x");
        i.backend = Some("../claude".into());
        assert_eq!(i.validate().unwrap_err().field, "agent.backend");
        let mut i = input("x");
        i.max_cost_usd = Some(f64::NAN);
        assert!(i.validate().is_err());
        let mut i = input("x");
        i.max_cost_usd = Some(0.25);
        assert_eq!(i.validate().unwrap().max_cost_micros, Some(250_000));
        let mut i = input("x");
        i.resume_session = Some("--dangerously".into());
        assert!(i.validate().is_err(), "a session id is never a flag");
        assert!(input(&"p".repeat(MAX_PROMPT_BYTES + 1)).validate().is_err());
    }
}

#[cfg(test)]
mod reference_props {
    use super::{step_placeholder, step_references};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any text: the names found are well-formed and distinct.
        #[test]
        fn any_text_yields_well_formed_distinct_names(text in any::<String>(), extra in "[{}a-z. ]{0,40}") {
            for t in [text.clone(), format!("{extra}{text}{{{{steps.{extra}.output}}}}")] {
                let names = step_references(&t);
                let mut seen = std::collections::HashSet::new();
                for n in &names {
                    prop_assert!(!n.is_empty());
                    prop_assert!(!n.contains(['{', '}', ' ']), "bad name {:?}", n);
                    prop_assert!(seen.insert(n.clone()), "{} twice", n);
                    prop_assert!(t.contains(&step_placeholder(n)));
                }
            }
        }

        /// Placeholders among text that holds none: exactly their names, in order of first
        /// appearance.
        #[test]
        fn placeholders_are_found_in_order(
            parts in prop::collection::vec(("[a-zA-Z0-9 .,:}]{0,12}", "[a-z][a-z0-9_-]{0,8}"), 0..10),
        ) {
            let mut text = String::new();
            let mut want: Vec<String> = Vec::new();
            for (filler, name) in &parts {
                text.push_str(filler);
                text.push_str(&step_placeholder(name));
                if !want.contains(name) {
                    want.push(name.clone());
                }
            }
            prop_assert_eq!(step_references(&text), want);
        }
    }
}
