//! A task's resolved, immutable specification: what the store keeps and the engine runs.
//! It is fixed at submit (defaults already applied), so nothing that changes later in the
//! daemon's config can change how a queued or running task behaves.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::id::TaskId;
use crate::time::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Priority {
    /// Critical: runs before everything else.
    P0,
    /// High.
    P1,
    /// Normal, the default.
    #[default]
    P2,
}

impl Priority {
    pub fn rank(self) -> i64 {
        match self {
            Priority::P0 => 0,
            Priority::P1 => 1,
            Priority::P2 => 2,
        }
    }

    pub fn from_rank(rank: i64) -> Option<Self> {
        match rank {
            0 => Some(Priority::P0),
            1 => Some(Priority::P1),
            2 => Some(Priority::P2),
            _ => None,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P{}", self.rank())
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for Priority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "p0" | "0" | "critical" => Ok(Priority::P0),
            "p1" | "1" | "high" => Ok(Priority::P1),
            "p2" | "2" | "normal" => Ok(Priority::P2),
            _ => Err(format!(
                "`{s}` is not a priority: use P0 (critical), P1 (high) or P2 (normal)"
            )),
        }
    }
}

/// When a dependency edge is satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DepMode {
    /// Run only after the dependency succeeded; if it fails, this task is cancelled.
    #[default]
    Success,
    /// Run after the dependency ended, whatever its outcome.
    Finish,
}

impl fmt::Display for DepMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DepMode::Success => "success",
            DepMode::Finish => "finish",
        })
    }
}

impl FromStr for DepMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "success" => Ok(DepMode::Success),
            "finish" => Ok(DepMode::Finish),
            _ => Err(format!(
                "`{s}` is not a dependency mode: use success or finish"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Dependency {
    pub task: TaskId,
    pub mode: DepMode,
}

/// What a shell task runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Command {
    /// A command line, run by `sh -c`.
    Line(String),
    /// An argv list, run without a shell's word splitting.
    Argv(Vec<String>),
}

impl Command {
    pub fn display(&self) -> String {
        match self {
            Command::Line(s) => s.clone(),
            Command::Argv(v) => v
                .iter()
                .map(|a| {
                    if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
                        format!("'{}'", a.replace('\'', "'\\''"))
                    } else {
                        a.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// What kind of work a task is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TaskKind {
    Shell {
        command: Command,
    },
    /// Does nothing and succeeds: a join point in a DAG, or a probe of the queue itself.
    Noop,
    /// An AI agent: the built-in tool-using loop or an agent CLI.
    Agent {
        agent: crate::agent::AgentSpec,
    },
}

impl TaskKind {
    pub fn name(&self) -> &'static str {
        match self {
            TaskKind::Shell { .. } => "shell",
            TaskKind::Noop => "noop",
            TaskKind::Agent { .. } => "agent",
        }
    }

    pub fn summary(&self) -> String {
        match self {
            TaskKind::Shell { command } => command.display(),
            TaskKind::Noop => "(noop)".to_string(),
            TaskKind::Agent { agent } => format!(
                "[{}] {}",
                agent.backend,
                crate::text::first_line(&agent.prompt, 200)
            ),
        }
    }
}

/// Automatic retries: how many attempts in all, and how long to wait between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetryPolicy {
    /// Attempts in all, including the first. 1 means no automatic retry.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles for each further one.
    pub backoff_ms: u64,
    /// Upper bound of the delay.
    pub backoff_max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            backoff_ms: 1_000,
            backoff_max_ms: 300_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskSpec {
    pub name: Option<String>,
    pub labels: Vec<String>,
    pub priority: Priority,
    pub group: String,
    #[serde(flatten)]
    pub kind: TaskKind,
    pub cwd: String,
    pub env: BTreeMap<String, String>,
    /// None only when the user asked for no timeout explicitly.
    pub timeout_ms: Option<u64>,
    pub retry: RetryPolicy,
    pub output_cap: u64,
    pub run_at: Option<Millis>,
    pub idempotency_key: Option<String>,
}

impl TaskSpec {
    /// The name if given, else the command: what tables show.
    pub fn title(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.kind.summary())
    }
}
