//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "deputy",
    version,
    about = "Hand work to agents and shell commands; get it back done.",
    long_about = "deputy queues tasks (priorities, groups, dependencies, schedules, retries, timeouts), \
                  runs them on a bounded worker pool, keeps their output, and survives crashes.\n\n\
                  Start the daemon with `deputy serve`; every other command talks to it."
)]
pub struct Cli {
    /// Config file (default: $XDG_CONFIG_HOME/deputy/config.toml).
    #[arg(long, global = true, env = "DEPUTY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data dir of the daemon to use (default: $XDG_DATA_HOME/deputy).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Daemon URL, overriding the one found through the data dir.
    #[arg(long, global = true)]
    pub url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // Parsed once per process; boxing buys nothing.
pub enum Command {
    /// Run the daemon in the foreground.
    Serve(ServeArgs),
    /// Queue a task: `deputy submit -- make test` or `deputy submit -- 'cargo build && cargo test'`.
    #[command(visible_alias = "add")]
    Submit(SubmitArgs),
    /// List tasks.
    Ls(LsArgs),
    /// Show every field of a task, its dependencies and its attempts.
    Show(ShowArgs),
    /// Print a task's output.
    Logs(LogsArgs),
    /// Show a task's model calls as a timeline: steps, attempts, tokens, durations and
    /// errors (`--json`: the full record, with redacted requests and responses).
    Trace(ShowArgs),
    /// Wait for tasks to end; exits non-zero if any did not succeed.
    Wait(WaitArgs),
    /// Cancel tasks (a running task's process group is stopped).
    Cancel(CancelArgs),
    /// Run a finished task again as a new attempt.
    Retry(RetryArgs),
    /// Stop starting tasks, in the whole queue or in one group.
    Pause(GroupArg),
    /// Start tasks again, in the whole queue or in one group.
    Resume(GroupArg),
    /// Manage groups (named queues with their own parallel limit).
    #[command(subcommand)]
    Group(GroupCommand),
    /// Delete finished tasks older than N days, with their output.
    Clean(CleanArgs),
    /// Recurring schedules: `deputy schedule add --cron "0 2 * * *" --tz Europe/Berlin -- make nightly`.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Serve MCP on stdin/stdout for an AI agent (Claude Code, Cursor, ...); starts a
    /// daemon in the background if none is running.
    Mcp,
    /// List the nodes (daemons) sharing the queue.
    Nodes {
        #[arg(long)]
        json: bool,
    },
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Submit a workflow file (TOML or YAML: named shell and agent steps with
    /// dependencies) as one DAG of tasks.
    Run(RunArgs),
    /// Run a small DAG of shell tasks on a temporary daemon and show it live.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (also DEPUTY_LISTEN).
    #[arg(long)]
    pub listen: Option<String>,
    /// Tasks to run at once.
    #[arg(long)]
    pub parallel: Option<String>,
    /// PostgreSQL URL: share one queue with other nodes (also DEPUTY_DATABASE).
    #[arg(long)]
    pub database: Option<String>,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// A name shown instead of the command.
    #[arg(long)]
    pub name: Option<String>,
    /// A label (repeatable).
    #[arg(long = "label", short = 'l')]
    pub labels: Vec<String>,
    /// P0 (critical), P1 (high) or P2 (normal, the default).
    #[arg(long, short = 'p')]
    pub priority: Option<String>,
    /// Group (a named queue); `default` unless given.
    #[arg(long, short = 'g')]
    pub group: Option<String>,
    /// Run only after this task succeeded (repeatable).
    #[arg(long = "after", value_name = "ID")]
    pub after: Vec<String>,
    /// Run after this task ended, whatever its outcome (repeatable).
    #[arg(long = "after-finish", value_name = "ID")]
    pub after_finish: Vec<String>,
    /// Working directory (default: the current directory).
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Environment variable for the task, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Timeout, e.g. 30s or 10m; `none` for no timeout.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Automatic retries after a failure, timeout or interruption.
    #[arg(long)]
    pub retries: Option<u32>,
    /// Delay before the first retry (doubles after each), e.g. 2s.
    #[arg(long)]
    pub backoff: Option<String>,
    /// Output kept per attempt, e.g. 1MiB.
    #[arg(long)]
    pub output_cap: Option<String>,
    /// Not before this time: RFC 3339 or relative, e.g. +10m.
    #[arg(long = "at", value_name = "WHEN")]
    pub run_at: Option<String>,
    /// A second submit with the same key returns the first task.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Wait for the task and exit with its exit code.
    #[arg(long)]
    pub wait: bool,
    /// Print the task as JSON.
    #[arg(long)]
    pub json: bool,
    /// Run an agent instead of a command: `builtin` (deputy's own tool-using loop) or a
    /// CLI backend (`claude`, `codex`, `generic`, or one configured under [agents.NAME]).
    /// The arguments are then the prompt.
    #[arg(long, value_name = "BACKEND")]
    pub agent: Option<String>,
    /// Agent: the model.
    #[arg(long)]
    pub model: Option<String>,
    /// Agent (builtin): the provider (`openai`, `anthropic`, or [providers.NAME]).
    #[arg(long)]
    pub provider: Option<String>,
    /// Agent: a system prompt.
    #[arg(long)]
    pub system_prompt: Option<String>,
    /// Agent: work in a fresh git worktree on a new branch deputy/<short-id>.
    #[arg(long)]
    pub worktree: bool,
    /// Agent (builtin): model turns at most (default 30).
    #[arg(long)]
    pub max_turns: Option<u32>,
    /// Agent (builtin): input plus output tokens at most.
    #[arg(long)]
    pub max_tokens: Option<u64>,
    /// Agent (builtin): dollars at most (needs the model's price in config).
    #[arg(long)]
    pub max_cost: Option<f64>,
    /// Agent (CLI): resume this session (e.g. a Claude Code session id).
    #[arg(long, value_name = "SESSION")]
    pub resume: Option<String>,
    /// The command (one argument is a shell line run by `sh -c`; several are an argv),
    /// or with --agent, the prompt. Put a command after `--` so its own flags are not
    /// taken for deputy's: `deputy submit -- make -k test`.
    #[arg(value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only these statuses (comma-separated), e.g. running,queued.
    #[arg(long, short = 's')]
    pub status: Option<String>,
    #[arg(long, short = 'g')]
    pub group: Option<String>,
    #[arg(long, short = 'l')]
    pub label: Option<String>,
    /// Only the steps of this workflow (`deputy run`).
    #[arg(long, conflicts_with = "label")]
    pub workflow: Option<String>,
    /// Only tasks whose name or command contains this.
    #[arg(long)]
    pub search: Option<String>,
    /// At most this many (newest).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    pub id: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub id: String,
    /// Keep printing new output until the task ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<usize>,
    #[arg(long, conflicts_with = "stderr")]
    pub stdout: bool,
    #[arg(long)]
    pub stderr: bool,
    /// Which attempt (default: the latest that ran).
    #[arg(long)]
    pub attempt: Option<u32>,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    pub ids: Vec<String>,
    /// Every task not yet finished.
    #[arg(long, conflicts_with = "ids")]
    pub all: bool,
    /// Give up after this long (exit 124), e.g. 10m.
    #[arg(long)]
    pub timeout: Option<String>,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    #[arg(required = true)]
    pub ids: Vec<String>,
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The workflow file (.toml, .yaml or .yml).
    pub file: PathBuf,
    /// Working directory of steps that set none (default: the current directory).
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Wait for every step; exit 1 if any did not succeed.
    #[arg(long)]
    pub wait: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    pub id: String,
    /// Continue the last attempt's agent session (Claude Code's --resume).
    #[arg(long = "continue")]
    pub continue_session: bool,
}

#[derive(Debug, Args)]
pub struct GroupArg {
    /// A group; the whole queue when omitted.
    pub group: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group.
    Add {
        name: String,
        /// Its parallel limit (default: none beyond the daemon's).
        #[arg(long)]
        parallel: Option<u32>,
    },
    /// List groups.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Set a group's parallel limit (`none` removes it).
    SetParallel { name: String, parallel: String },
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Delete tasks that finished more than this many days ago (0: all finished).
    #[arg(long, default_value_t = 7.0)]
    pub days: f64,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// The effective configuration, and where each value came from.
    Show,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's data dir instead of deleting it.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // Parsed once per process; boxing buys nothing.
pub enum ScheduleCommand {
    /// Create a schedule: every tick submits the task given by the task flags and the
    /// command (or, with --agent, the prompt).
    Add(ScheduleAddArgs),
    /// List schedules with their next tick.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show a schedule, its next ticks and its latest runs.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop a schedule's ticks until it is resumed.
    Pause { name: String },
    /// Start a paused schedule again from now (ticks missed while paused do not run).
    Resume { name: String },
    /// Delete a schedule (the tasks it submitted stay).
    #[command(visible_alias = "remove")]
    Rm { name: String },
}

#[derive(Debug, Args)]
pub struct ScheduleAddArgs {
    /// A cron pattern: minute hour day-of-month month day-of-week (an optional seconds
    /// field first), e.g. "*/5 * * * *" or "0 2 * * MON-FRI".
    #[arg(long, conflicts_with = "every", required_unless_present = "every")]
    pub cron: Option<String>,
    /// A fixed interval instead of a pattern, e.g. 10m or 1h30m.
    #[arg(long)]
    pub every: Option<String>,
    /// The time zone the pattern is read in, e.g. Europe/Berlin (default UTC).
    #[arg(long, requires = "cron")]
    pub tz: Option<String>,
    /// Ticks missed while deputy was down: skip (default), run-once, or catch-up.
    #[arg(long, value_name = "POLICY")]
    pub missed: Option<String>,
    /// With --missed catch-up: at most this many runs (default 10).
    #[arg(long)]
    pub catch_up_limit: Option<u32>,
    /// When a tick comes while the last run still goes: skip (default), allow, or queue.
    #[arg(long, value_name = "POLICY")]
    pub overlap: Option<String>,
    /// Finished runs to keep; older ones are deleted with their output (default 100).
    #[arg(long)]
    pub keep_runs: Option<u32>,
    /// Create it paused.
    #[arg(long)]
    pub paused: bool,
    /// The task: every `deputy submit` flag. `--name` names the schedule (and its runs);
    /// without it a name is made from the command.
    #[command(flatten)]
    pub task: SubmitArgs,
}
