//! Turning what a user sends into a [`TaskSpec`]: parsing lenient inputs (`"30s"`,
//! `"10MiB"`, `"p1"`), applying defaults, and checking every bound. Nothing that fails
//! here reaches the store.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::id::{IdRef, truncate_for_message};
use crate::limits::*;
use crate::spec::{Command, DepMode, Priority, RetryPolicy, TaskKind, TaskSpec};
use crate::time::{Millis, parse_when};

/// A task as submitted through the API or CLI. Unknown fields are rejected.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewTask {
    // Serialization skips unset fields, so what the client sends reads like what a
    // person would write.
    /// `shell` (the default), `noop`, or `agent` (then `agent` says what to do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// For `kind: agent` (which it implies): the backend, prompt, model and budgets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<crate::agent::AgentInput>,
    /// A command line (run by `sh -c`) or an argv list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Command>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<DepInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Seconds (a number), a duration (`"90s"`, `"10m"`), or `"none"` for no timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<TimeoutInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Delay before the first automatic retry: seconds or a duration string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<DurationInput>,
    /// Bytes, or a size string (`"1MiB"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_cap: Option<SizeInput>,
    /// Unix milliseconds, RFC 3339, or relative (`"+10m"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<WhenInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// A name other tasks in the same batch use to depend on this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A dependency as submitted: an id or prefix (`"abcd1234"` or `{"task": "abcd1234"}`),
/// or a task of the same batch (`{"key": "build"}`), with an optional mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepInput {
    pub target: DepTarget,
    pub mode: DepMode,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DepTarget {
    Task(IdRef),
    Key(String),
}

impl Serialize for DepInput {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(2))?;
        match &self.target {
            DepTarget::Task(id) => m.serialize_entry("task", &id.to_string())?,
            DepTarget::Key(k) => m.serialize_entry("key", k)?,
        }
        m.serialize_entry("mode", &self.mode)?;
        m.end()
    }
}

impl<'de> Deserialize<'de> for DepInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Short(String),
            Full(Obj),
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Obj {
            #[serde(default)]
            task: Option<String>,
            #[serde(default)]
            key: Option<String>,
            #[serde(default)]
            mode: Option<String>,
        }
        let raw = Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "a dependency is an id string or {\"task\": id, \"mode\": \"success\"|\"finish\"} or {\"key\": batch-key}",
            )
        })?;
        let (target, mode) = match raw {
            Raw::Short(s) => (
                DepTarget::Task(s.parse().map_err(serde::de::Error::custom)?),
                None,
            ),
            Raw::Full(o) => {
                let target = match (o.task, o.key) {
                    (Some(t), None) => {
                        DepTarget::Task(t.parse().map_err(serde::de::Error::custom)?)
                    }
                    (None, Some(k)) => DepTarget::Key(k),
                    _ => {
                        return Err(serde::de::Error::custom(
                            "a dependency names exactly one of `task` or `key`",
                        ));
                    }
                };
                (target, o.mode)
            }
        };
        let mode = match mode {
            Some(m) => m.parse().map_err(serde::de::Error::custom)?,
            None => DepMode::default(),
        };
        Ok(DepInput { target, mode })
    }
}

/// A timeout as a user writes it.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeoutInput {
    /// Explicitly no timeout.
    Never,
    Millis(u64),
}

impl Serialize for TimeoutInput {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TimeoutInput::Never => s.serialize_str("none"),
            TimeoutInput::Millis(ms) => s.serialize_str(&format!("{ms}ms")),
        }
    }
}

impl<'de> Deserialize<'de> for TimeoutInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        parse_timeout_value(&v).map_err(serde::de::Error::custom)
    }
}

fn parse_timeout_value(v: &serde_json::Value) -> Result<TimeoutInput, String> {
    match v {
        serde_json::Value::String(s) if matches!(s.trim(), "none" | "never") => {
            Ok(TimeoutInput::Never)
        }
        _ => duration_value_ms(v, "timeout").map(TimeoutInput::Millis),
    }
}

impl TimeoutInput {
    pub fn parse(s: &str) -> Result<Self, String> {
        parse_timeout_value(&serde_json::Value::String(s.to_string()))
    }
}

/// A duration as a user writes it: seconds (number) or a string like `"1m30s"`.
/// Holds milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationInput(pub u64);

impl Serialize for DurationInput {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.0))
    }
}

impl<'de> Deserialize<'de> for DurationInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        duration_value_ms(&v, "duration")
            .map(DurationInput)
            .map_err(serde::de::Error::custom)
    }
}

fn duration_value_ms(v: &serde_json::Value, what: &str) -> Result<u64, String> {
    match v {
        serde_json::Value::Number(n) => {
            let secs = n
                .as_f64()
                .ok_or_else(|| format!("{what} must be a number of seconds"))?;
            if !secs.is_finite() || secs <= 0.0 {
                return Err(format!("{what} must be positive, got {n}"));
            }
            if secs * 1000.0 > u64::MAX as f64 / 2.0 {
                return Err(format!("{what} {n}s is too long"));
            }
            Ok((secs * 1000.0).ceil() as u64)
        }
        serde_json::Value::String(s) => {
            let t = s.trim();
            if let Some(rest) = t.strip_prefix('-') {
                return Err(format!("{what} must be positive, got -{rest}"));
            }
            if let Ok(secs) = t.parse::<f64>() {
                return duration_value_ms(
                    &serde_json::Number::from_f64(secs)
                        .map(serde_json::Value::Number)
                        .unwrap_or(serde_json::Value::Null),
                    what,
                );
            }
            let d = humantime::parse_duration(t).map_err(|e| {
                format!(
                    "{what} `{}` is not a duration like 30s or 10m: {e}",
                    truncate_for_message(t)
                )
            })?;
            if d.is_zero() {
                return Err(format!("{what} must be positive"));
            }
            Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        }
        _ => Err(format!("{what} must be seconds or a string like \"30s\"")),
    }
}

/// A size: bytes (number) or a string like `"10MiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SizeInput(pub u64);

impl<'de> Deserialize<'de> for SizeInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        match v {
            serde_json::Value::Number(n) => n.as_u64().map(SizeInput).ok_or_else(|| {
                serde::de::Error::custom(format!("a size must be a whole number of bytes, got {n}"))
            }),
            serde_json::Value::String(s) => crate::size::parse_size(&s)
                .map(SizeInput)
                .map_err(serde::de::Error::custom),
            _ => Err(serde::de::Error::custom(
                "a size is bytes or a string like \"10MiB\"",
            )),
        }
    }
}

/// A point in time: Unix milliseconds, RFC 3339, or `+10m`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum WhenInput {
    Millis(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for WhenInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        match v {
            serde_json::Value::Number(n) => n.as_i64().map(WhenInput::Millis).ok_or_else(|| {
                serde::de::Error::custom("run_at must be Unix milliseconds or a time string")
            }),
            serde_json::Value::String(s) => Ok(WhenInput::Text(s)),
            _ => Err(serde::de::Error::custom(
                "run_at must be Unix milliseconds or a time string",
            )),
        }
    }
}

/// Daemon-side defaults applied at submit, so a stored spec never depends on config later.
#[derive(Debug, Clone)]
pub struct SubmitDefaults {
    /// The global default timeout. `None` means the daemon is configured with no default.
    pub timeout_ms: Option<u64>,
    pub output_cap: u64,
    /// Working directory for tasks that do not name one.
    pub cwd: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A validated submission, dependencies not yet resolved against the store.
#[derive(Debug, Clone)]
pub struct ValidTask {
    pub spec: TaskSpec,
    pub depends_on: Vec<DepInput>,
    pub key: Option<String>,
}

impl NewTask {
    /// Validates every field and applies defaults. `now` resolves relative `run_at`s.
    pub fn validate(
        self,
        defaults: &SubmitDefaults,
        now: Millis,
    ) -> Result<ValidTask, ValidationError> {
        let default_kind = if self.agent.is_some() {
            "agent"
        } else {
            "shell"
        };
        let kind_name = self.kind.as_deref().unwrap_or(default_kind);
        if self.agent.is_some() && kind_name != "agent" {
            return Err(ValidationError::new(
                "agent",
                format!(
                    "`agent` goes with kind agent, not {}",
                    truncate_for_message(kind_name)
                ),
            ));
        }
        let kind = match (kind_name, self.command) {
            ("agent", Some(_)) => {
                return Err(ValidationError::new(
                    "command",
                    "an agent task takes a prompt (agent.prompt), not a command",
                ));
            }
            ("agent", None) => match self.agent {
                Some(a) => TaskKind::Agent {
                    agent: a.validate()?,
                },
                None => {
                    return Err(ValidationError::new(
                        "agent",
                        "an agent task needs `agent` with at least a prompt",
                    ));
                }
            },
            ("noop", None) => TaskKind::Noop,
            ("noop", Some(_)) => {
                return Err(ValidationError::new(
                    "command",
                    "a noop task takes no command",
                ));
            }
            ("shell", command) => TaskKind::Shell {
                command: validate_command(command)?,
            },
            (other, _) => {
                return Err(ValidationError::new(
                    "kind",
                    format!(
                        "`{}` is not a task kind: use shell, agent or noop",
                        truncate_for_message(other)
                    ),
                ));
            }
        };

        if let Some(name) = &self.name {
            if name.trim().is_empty() {
                return Err(ValidationError::new("name", "the name is empty"));
            }
            check_len("name", name, MAX_NAME_BYTES)?;
        }
        if self.labels.len() > MAX_LABELS {
            return Err(ValidationError::new(
                "labels",
                format!("at most {MAX_LABELS} labels"),
            ));
        }
        for l in &self.labels {
            if l.is_empty() || l.chars().any(|c| c.is_control() || c == ',') {
                return Err(ValidationError::new(
                    "labels",
                    format!(
                        "label `{}` must be non-empty, without commas or control characters",
                        truncate_for_message(l)
                    ),
                ));
            }
            check_len("labels", l, MAX_LABEL_BYTES)?;
        }
        let group = self.group.unwrap_or_else(|| "default".to_string());
        crate::limits::check_group_name(&group).map_err(|m| ValidationError::new("group", m))?;

        if self.depends_on.len() > MAX_DEPENDENCIES {
            return Err(ValidationError::new(
                "depends_on",
                format!("at most {MAX_DEPENDENCIES} dependencies"),
            ));
        }

        let cwd = self.cwd.unwrap_or_else(|| defaults.cwd.clone());
        check_len("cwd", &cwd, MAX_CWD_BYTES)?;
        if !cwd.starts_with('/') {
            return Err(ValidationError::new(
                "cwd",
                format!("`{}` is not an absolute path", truncate_for_message(&cwd)),
            ));
        }

        if self.env.len() > MAX_ENV_VARS {
            return Err(ValidationError::new(
                "env",
                format!("at most {MAX_ENV_VARS} variables"),
            ));
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || !k.is_ascii() {
                return Err(ValidationError::new(
                    "env",
                    format!("`{}` is not a variable name", truncate_for_message(k)),
                ));
            }
            check_len("env", k, MAX_ENV_KEY_BYTES)?;
            check_len("env", v, MAX_ENV_VALUE_BYTES)?;
            if v.contains('\0') {
                return Err(ValidationError::new(
                    "env",
                    format!("{k}: values may not contain NUL bytes"),
                ));
            }
        }

        let timeout_ms = match self.timeout {
            Some(TimeoutInput::Never) => None,
            Some(TimeoutInput::Millis(ms)) => Some(ms),
            None => defaults.timeout_ms,
        };
        if let Some(ms) = timeout_ms
            && (ms == 0 || ms > MAX_TIMEOUT_MS)
        {
            return Err(ValidationError::new(
                "timeout",
                format!(
                    "must be between 1ms and {} days",
                    MAX_TIMEOUT_MS / 86_400_000
                ),
            ));
        }

        let mut retry = RetryPolicy::default();
        if let Some(n) = self.max_attempts {
            if n == 0 || n > MAX_ATTEMPTS {
                return Err(ValidationError::new(
                    "max_attempts",
                    format!("must be between 1 and {MAX_ATTEMPTS}"),
                ));
            }
            retry.max_attempts = n;
        }
        if let Some(DurationInput(ms)) = self.backoff {
            retry.backoff_ms = ms.min(retry.backoff_max_ms);
        }

        let output_cap = self.output_cap.map(|s| s.0).unwrap_or(defaults.output_cap);
        if !(MIN_OUTPUT_CAP..=MAX_OUTPUT_CAP).contains(&output_cap) {
            return Err(ValidationError::new(
                "output_cap",
                format!("must be between {MIN_OUTPUT_CAP} bytes and 1GiB"),
            ));
        }

        let run_at = match self.run_at {
            None => None,
            Some(WhenInput::Millis(ms)) => Some(ms),
            Some(WhenInput::Text(s)) => {
                Some(parse_when(&s, now).map_err(|m| ValidationError::new("run_at", m))?)
            }
        };

        if let Some(k) = &self.idempotency_key {
            if k.is_empty() {
                return Err(ValidationError::new("idempotency_key", "the key is empty"));
            }
            check_len("idempotency_key", k, MAX_IDEMPOTENCY_KEY_BYTES)?;
        }
        if let Some(k) = &self.key {
            if k.is_empty() {
                return Err(ValidationError::new("key", "the batch key is empty"));
            }
            check_len("key", k, MAX_NAME_BYTES)?;
        }

        Ok(ValidTask {
            spec: TaskSpec {
                name: self.name,
                labels: self.labels,
                priority: self.priority.unwrap_or_default(),
                group,
                kind,
                cwd,
                env: self.env,
                timeout_ms,
                retry,
                output_cap,
                run_at,
                idempotency_key: self.idempotency_key,
            },
            depends_on: self.depends_on,
            key: self.key,
        })
    }
}

/// A shell task's command: present, not empty, bounded, without NUL bytes.
fn validate_command(command: Option<Command>) -> Result<Command, ValidationError> {
    let command = match command {
        None => {
            return Err(ValidationError::new(
                "command",
                "a shell task needs a command",
            ));
        }
        Some(Command::Line(line)) => {
            if line.trim().is_empty() {
                return Err(ValidationError::new("command", "the command is empty"));
            }
            check_len("command", &line, MAX_COMMAND_BYTES)?;
            Command::Line(line)
        }
        Some(Command::Argv(argv)) => {
            if argv.is_empty() || argv[0].is_empty() {
                return Err(ValidationError::new("command", "the argv list is empty"));
            }
            if argv.len() > MAX_ARGV {
                return Err(ValidationError::new(
                    "command",
                    format!("at most {MAX_ARGV} arguments"),
                ));
            }
            let total: usize = argv.iter().map(|a| a.len() + 1).sum();
            if total > MAX_COMMAND_BYTES {
                return Err(too_long("command", total, MAX_COMMAND_BYTES));
            }
            if argv.iter().any(|a| a.contains('\0')) {
                return Err(ValidationError::new(
                    "command",
                    "arguments may not contain NUL bytes",
                ));
            }
            Command::Argv(argv)
        }
    };
    if let Command::Line(l) = &command
        && l.contains('\0')
    {
        return Err(ValidationError::new(
            "command",
            "the command may not contain NUL bytes",
        ));
    }
    Ok(command)
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.len() > max {
        Err(too_long(field, value.len(), max))
    } else {
        Ok(())
    }
}

fn too_long(field: &str, len: usize, max: usize) -> ValidationError {
    ValidationError::new(
        field,
        format!(
            "{} is too long ({} bytes; the limit is {})",
            field,
            len,
            crate::size::human_size(max as u64)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> SubmitDefaults {
        SubmitDefaults {
            timeout_ms: Some(3_600_000),
            output_cap: DEFAULT_OUTPUT_CAP,
            cwd: "/tmp".into(),
        }
    }

    fn parse(json: &str) -> Result<ValidTask, String> {
        let t: NewTask = serde_json::from_str(json).map_err(|e| e.to_string())?;
        t.validate(&defaults(), 0).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_applied() {
        let t = parse(r#"{"command": "echo hi"}"#).unwrap();
        assert_eq!(t.spec.timeout_ms, Some(3_600_000));
        assert_eq!(t.spec.group, "default");
        assert_eq!(t.spec.priority, Priority::P2);
        assert_eq!(t.spec.cwd, "/tmp");
    }

    #[test]
    fn lenient_inputs() {
        let t = parse(
            r#"{"command": ["ls", "-l"], "timeout": "90s", "priority": "p0", "output_cap": "1MiB",
                "depends_on": ["abcdef12", {"key": "b", "mode": "finish"}]}"#,
        )
        .unwrap();
        assert_eq!(t.spec.timeout_ms, Some(90_000));
        assert_eq!(t.spec.priority, Priority::P0);
        assert_eq!(t.spec.output_cap, 1 << 20);
        assert_eq!(t.depends_on[1].mode, DepMode::Finish);
        let none = parse(r#"{"command": "x", "timeout": "none"}"#).unwrap();
        assert_eq!(none.spec.timeout_ms, None);
    }

    #[test]
    fn serialized_input_reads_back_the_same() {
        let t: NewTask = serde_json::from_str(
            r#"{"command": "x", "timeout": "1500ms", "backoff": 2, "depends_on": ["abcdef12", {"key": "k", "mode": "finish"}]}"#,
        )
        .unwrap();
        let again: NewTask = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(again.timeout, Some(TimeoutInput::Millis(1500)));
        assert_eq!(again.backoff, Some(DurationInput(2000)));
        assert_eq!(again.depends_on, t.depends_on);
        let never: NewTask =
            serde_json::from_str(r#"{"command": "x", "timeout": "none"}"#).unwrap();
        let again: NewTask = serde_json::from_str(&serde_json::to_string(&never).unwrap()).unwrap();
        assert_eq!(again.timeout, Some(TimeoutInput::Never));
    }

    #[test]
    fn bad_inputs_are_rejected_with_the_field() {
        for (json, field) in [
            (r#"{"command": ""}"#, "command"),
            (r#"{"command": []}"#, "command"),
            (r#"{}"#, "command"),
            (r#"{"command": "x", "timeout": -1}"#, "timeout"),
            (r#"{"command": "x", "timeout": "-5s"}"#, "timeout"),
            (r#"{"command": "x", "group": "no spaces"}"#, "group"),
            (r#"{"command": "x", "max_attempts": 0}"#, "max_attempts"),
            (r#"{"command": "x", "cwd": "relative"}"#, "cwd"),
            (r#"{"command": "x", "priority": "urgent"}"#, "priority"),
            (r#"{"command": "x", "bogus": 1}"#, "bogus"),
        ] {
            let err = parse(json).unwrap_err();
            assert!(err.contains(field), "{json}: {err}");
        }
        let huge = format!(r#"{{"command": "{}"}}"#, "x".repeat(10 << 20));
        assert!(parse(&huge).unwrap_err().contains("too long"));
    }
}
