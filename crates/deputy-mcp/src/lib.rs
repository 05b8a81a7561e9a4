//! deputy's MCP server. A thin client of the daemon's HTTP API (through
//! `deputy-client`), never a second engine: the same tools serve stdio (`deputy mcp`)
//! and streamable HTTP (`/mcp` on the daemon).
//!
//! Tool inputs are validated here and a bad one comes back as a tool error (`isError`)
//! with a message a model can act on; the server keeps serving.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deputy_client::{Client, ClientError};
use deputy_core::submit::{DepInput, DepTarget, NewTask, SizeInput, TimeoutInput};
use deputy_core::{Command, EventBody, IdRef, Priority, Status};
use futures_util::StreamExt;
use rmcp::handler::server::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ListResourceTemplatesResult, ListResourcesResult,
    PaginatedRequestParams, ProgressNotificationParam, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, RequestMetaObject, Resource, ResourceContents,
    ResourceTemplate, ServerCapabilities, ServerConfig, SubscribeRequestParams, SubscriptionFilter,
    UnsubscribeRequestParams,
};
use rmcp::service::RequestContext;
use rmcp::service::SubscriptionContext;
use rmcp::{
    ErrorData as McpError, Peer, RoleServer, ServerHandler, schemars, tool, tool_handler,
    tool_router,
};
use serde::Deserialize;

/// The longest a WaitForTask call may block.
const MAX_WAIT_SECS: f64 = 3600.0;
/// Log resources one `subscriptions/listen` stream follows at most; the acknowledged
/// filter says which.
const MAX_LISTENED_RESOURCES: usize = 64;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DelegateArgs {
    /// For shell tasks: the command line to run with `sh -c`, e.g. "cargo test -p core".
    #[serde(default)]
    pub command: Option<String>,
    /// For agent tasks: what the agent should do.
    #[serde(default)]
    pub prompt: Option<String>,
    /// "shell" or "agent"; a `prompt` without a `command` means "agent".
    #[serde(default)]
    pub kind: Option<String>,
    /// Agent: "builtin" (deputy's own tool-using agent, the default) or a CLI backend:
    /// "claude", "codex", "generic", or one configured on the daemon.
    #[serde(default)]
    pub backend: Option<String>,
    /// Agent: the model (default: the provider's or the CLI's own).
    #[serde(default)]
    pub model: Option<String>,
    /// Agent (builtin): the model provider, e.g. "openai" or "anthropic".
    #[serde(default)]
    pub provider: Option<String>,
    /// Agent: a system prompt.
    #[serde(default)]
    pub system_prompt: Option<String>,
    /// Agent: run in a fresh git worktree on a new branch deputy/<short-id>.
    #[serde(default)]
    pub worktree: Option<bool>,
    /// Agent (CLI): the id of an earlier agent task whose session to continue
    /// (Claude Code's --resume).
    #[serde(default)]
    pub continue_from: Option<String>,
    /// Agent (builtin): model turns at most.
    #[serde(default)]
    pub max_turns: Option<u32>,
    /// Agent (builtin): input plus output tokens at most.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Agent (builtin): dollars at most.
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
    /// A short name shown in listings.
    #[serde(default)]
    pub name: Option<String>,
    /// "P0" (critical), "P1" (high) or "P2" (normal, the default).
    #[serde(default)]
    pub priority: Option<String>,
    /// Absolute directory to run in. Defaults to the daemon's directory.
    #[serde(default)]
    pub working_directory: Option<String>,
    /// Seconds before the task is stopped and marked timed_out (more than 0).
    #[serde(default)]
    pub timeout: Option<f64>,
    /// Bytes of output to keep (the head and a rolling tail beyond it).
    #[serde(default)]
    pub max_output_buffer: Option<u64>,
    /// Task ids (or 8+ character prefixes) that must succeed before this one runs.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Queue group; "default" unless given. The group must exist.
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    /// Submitting again with the same key returns the first task instead of a new one.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusArgs {
    /// A task id (or prefix). Without it, a filtered list of tasks.
    #[serde(default)]
    pub task_id: Option<String>,
    /// Comma-separated statuses, e.g. "running,queued" (list only).
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListArgs {
    /// Comma-separated statuses: blocked, scheduled, queued, running, succeeded, failed,
    /// cancelled, timed_out, interrupted.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub label: Option<String>,
    /// Text in the name or command.
    #[serde(default)]
    pub search: Option<String>,
    /// At most this many, newest first (default 20, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogsArgs {
    pub task_id: String,
    /// Only the last N lines.
    #[serde(default)]
    pub tail: Option<u32>,
    /// "stdout" or "stderr" (default: both, interleaved).
    #[serde(default)]
    pub stream: Option<String>,
    /// Start at this byte offset of the stream (needs `stream`): poll for new output.
    #[serde(default)]
    pub offset: Option<u64>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelArgs {
    pub task_id: String,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdArgs {
    pub task_id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaitArgs {
    pub task_id: String,
    /// Seconds to wait at most (default 60, at most 3600). Returns early when the task ends.
    #[serde(default)]
    pub timeout: Option<f64>,
}

/// ScheduleTask's arguments: when, the policies, and the task (DelegateTask's fields;
/// `name` names the schedule).
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleArgs {
    /// A cron pattern (minute hour day-of-month month day-of-week), e.g. "0 2 * * *".
    #[serde(default)]
    pub cron: Option<String>,
    /// Instead of cron: a fixed interval such as "10m" or "1h".
    #[serde(default)]
    pub every: Option<String>,
    /// The IANA time zone the cron pattern is read in (default UTC), e.g. "Europe/Berlin".
    #[serde(default)]
    pub tz: Option<String>,
    /// Ticks missed while deputy was down: "skip" (default), "run-once" or "catch-up".
    #[serde(default)]
    pub missed: Option<String>,
    /// With missed "catch-up": at most this many runs (default 10).
    #[serde(default)]
    pub catch_up_limit: Option<u32>,
    /// When a tick comes while the last run still goes: "skip" (default), "allow" or "queue".
    #[serde(default)]
    pub overlap: Option<String>,
    /// Finished runs kept; older ones are deleted (default 100).
    #[serde(default)]
    pub keep_runs: Option<u32>,
    #[serde(flatten)]
    pub task: DelegateArgs,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleNameArgs {
    /// The schedule's name.
    pub name: String,
}

fn schedule_json(v: &deputy_core::schedule::ScheduleView) -> serde_json::Value {
    let s = &v.schedule;
    let at = |t: i64| deputy_core::time::to_rfc3339(t);
    serde_json::json!({
        "name": s.name,
        "trigger": s.trigger,
        "paused": s.paused,
        "missed": s.missed,
        "overlap": s.overlap,
        "keepRuns": s.keep_runs,
        "nextFireAt": s.next_fire_at.map(at),
        "upcoming": v.upcoming.iter().map(|t| at(*t)).collect::<Vec<_>>(),
        "lastFireAt": s.last_fire_at.map(at),
        "fired": s.fired,
        "skipped": s.skipped,
        "runs": v.runs.iter().map(|r| serde_json::json!({
            "taskId": r.task, "tick": at(r.tick), "status": r.status,
        })).collect::<Vec<_>>(),
    })
}

#[derive(Clone)]
pub struct DeputyMcp {
    client: Client,
    tool_router: ToolRouter<Self>,
    /// Live resource subscriptions of this session, by URI.
    subscriptions: Arc<Mutex<HashMap<String, tokio::task::AbortHandle>>>,
}

impl Drop for DeputyMcp {
    fn drop(&mut self) {
        // The last clone of a session's server stops its followers.
        if Arc::strong_count(&self.subscriptions) == 1 {
            for (_, h) in self.subscriptions.lock().expect("subscriptions").drain() {
                h.abort();
            }
        }
    }
}

const LOGS_PREFIX: &str = "deputy://tasks/";
const LOGS_SUFFIX: &str = "/logs";

/// The task id in `deputy://tasks/{id}/logs`.
fn logs_uri_id(uri: &str) -> Option<&str> {
    uri.strip_prefix(LOGS_PREFIX)?.strip_suffix(LOGS_SUFFIX)
}

impl std::fmt::Debug for DeputyMcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeputyMcp")
            .field("daemon", &self.client.base())
            .finish()
    }
}

fn ok_json(v: serde_json::Value) -> Result<CallToolResult, McpError> {
    let text = serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string());
    Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
}

/// A tool error the model can read and act on.
fn tool_error(message: impl Into<String>) -> Result<CallToolResult, McpError> {
    Ok(CallToolResult::error(vec![ContentBlock::text(
        message.into(),
    )]))
}

fn from_client(e: ClientError) -> Result<CallToolResult, McpError> {
    tool_error(client_message(e))
}

fn client_message(e: ClientError) -> String {
    match e {
        ClientError::Api { message, .. } => message,
        other => format!("deputy daemon error: {other}"),
    }
}

impl DeputyMcp {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            tool_router: Self::tool_router(),
            subscriptions: Arc::default(),
        }
    }
}

impl DeputyMcp {
    /// The task a DelegateTask (or ScheduleTask) call describes, or what is wrong with it.
    async fn task_from_args(&self, a: DelegateArgs) -> Result<NewTask, String> {
        let default_kind = if a.command.is_none() && a.prompt.is_some() {
            "agent"
        } else {
            "shell"
        };
        let agent = match a.kind.as_deref().unwrap_or(default_kind) {
            "shell" => None,
            "agent" => {
                let Some(prompt) = a.prompt.clone().filter(|p| !p.trim().is_empty()) else {
                    return Err("an agent task needs a `prompt` saying what to do".into());
                };
                if a.command.is_some() {
                    return Err("an agent task takes a `prompt`, not a `command`".into());
                }
                let resume_session = match &a.continue_from {
                    None => None,
                    Some(id) => match self.client.get(id).await {
                        Ok(d) => match d.task.usage.and_then(|u| u.session_id) {
                            Some(s) => Some(s),
                            None => {
                                return Err(format!(
                                    "task {id} has no agent session to continue (only CLI agents such as claude report one)"
                                ));
                            }
                        },
                        Err(e) => return Err(client_message(e)),
                    },
                };
                Some(deputy_core::agent::AgentInput {
                    backend: a.backend.clone(),
                    prompt,
                    provider: a.provider.clone(),
                    model: a.model.clone(),
                    system_prompt: a.system_prompt.clone(),
                    worktree: a.worktree.unwrap_or(false),
                    max_turns: a.max_turns,
                    max_tokens: a.max_tokens,
                    max_cost_usd: a.max_cost_usd,
                    resume_session,
                })
            }
            other => {
                return Err(format!(
                    "kind `{other}` is not known: use \"shell\" or \"agent\""
                ));
            }
        };
        let command = match (&agent, a.command) {
            (Some(_), _) => None,
            (None, Some(c)) if !c.trim().is_empty() => Some(Command::Line(c)),
            (None, _) => {
                return Err(
                    "give the shell `command` to run (e.g. \"cargo test\"), or a `prompt` for an agent"
                        .into(),
                );
            }
        };
        let priority = match a.priority.as_deref().map(str::parse::<Priority>) {
            None => None,
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => return Err(e.to_string()),
        };
        let timeout = match a.timeout {
            None => None,
            Some(s) if s.is_finite() && s > 0.0 => {
                Some(TimeoutInput::Millis((s * 1000.0).ceil() as u64))
            }
            Some(s) => {
                return Err(format!(
                    "timeout must be a number of seconds above 0, got {s}"
                ));
            }
        };
        let mut depends_on = Vec::new();
        for d in &a.depends_on {
            match d.parse() {
                Ok(id) => depends_on.push(DepInput {
                    target: DepTarget::Task(id),
                    mode: deputy_core::DepMode::Success,
                }),
                Err(e) => return Err(format!("dependsOn: {e}")),
            }
        }
        let task = NewTask {
            agent,
            command,
            name: a.name,
            labels: a.labels,
            priority,
            group: a.group,
            depends_on,
            cwd: a.working_directory,
            timeout,
            output_cap: a.max_output_buffer.map(SizeInput),
            idempotency_key: a.idempotency_key,
            ..NewTask::default()
        };
        Ok(task)
    }
}

#[tool_router]
impl DeputyMcp {
    #[tool(
        name = "DelegateTask",
        description = "Hand a task to deputy to run in the background: a shell `command`, or an agent `prompt` (deputy's built-in agent or a CLI backend such as claude or codex, optionally in its own git worktree). Returns at once with the task id and status; use WaitForTask, TaskStatus and TaskLogs to follow it."
    )]
    async fn delegate_task(
        &self,
        Parameters(a): Parameters<DelegateArgs>,
    ) -> Result<CallToolResult, McpError> {
        let task = match self.task_from_args(a).await {
            Ok(t) => t,
            Err(message) => return tool_error(message),
        };
        match self.client.submit(&task).await {
            Ok(r) => ok_json(serde_json::json!({
                "taskId": r.task.id,
                "status": r.task.status,
                "created": r.created,
            })),
            Err(e) => from_client(e),
        }
    }

    #[tool(
        name = "ScheduleTask",
        description = "Run a task on a recurring schedule: `cron` (e.g. \"0 2 * * *\" with `tz` \"Europe/Berlin\") or `every` (e.g. \"10m\"), and the task as for DelegateTask (a shell `command` or an agent `prompt`); `name` names the schedule. Returns the schedule with its next ticks. Each tick submits one task labelled schedule:NAME."
    )]
    async fn schedule_task(
        &self,
        Parameters(mut a): Parameters<ScheduleArgs>,
    ) -> Result<CallToolResult, McpError> {
        let Some(name) = a.task.name.take() else {
            return tool_error("give the schedule a `name` (letters, digits, `.`, `_`, `-`)");
        };
        let missed = match a
            .missed
            .as_deref()
            .map(deputy_core::schedule::MissedPolicy::parse)
        {
            None => None,
            Some(Some(m)) => Some(m),
            Some(None) => return tool_error("missed is \"skip\", \"run-once\" or \"catch-up\""),
        };
        let overlap = match a
            .overlap
            .as_deref()
            .map(deputy_core::schedule::OverlapPolicy::parse)
        {
            None => None,
            Some(Some(o)) => Some(o),
            Some(None) => return tool_error("overlap is \"skip\", \"allow\" or \"queue\""),
        };
        let every = match a.every.as_deref().map(|e| {
            serde_json::from_value::<deputy_core::submit::DurationInput>(serde_json::Value::String(
                e.into(),
            ))
        }) {
            None => None,
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => return tool_error(format!("every: {e}")),
        };
        let task = match self.task_from_args(a.task).await {
            Ok(t) => t,
            Err(message) => return tool_error(message),
        };
        let new = deputy_core::schedule::NewSchedule {
            name,
            cron: a.cron,
            every,
            tz: a.tz,
            task,
            missed,
            catch_up_limit: a.catch_up_limit,
            overlap,
            keep_runs: a.keep_runs,
            paused: false,
        };
        match self.client.add_schedule(&new).await {
            Ok(v) => ok_json(schedule_json(&v)),
            Err(e) => from_client(e),
        }
    }

    #[tool(
        name = "ListSchedules",
        description = "List the recurring schedules with their next ticks and how many runs they submitted."
    )]
    async fn list_schedules(&self) -> Result<CallToolResult, McpError> {
        match self.client.schedules().await {
            Ok(all) => ok_json(serde_json::Value::Array(
                all.iter().map(schedule_json).collect(),
            )),
            Err(e) => from_client(e),
        }
    }

    #[tool(
        name = "RemoveSchedule",
        description = "Delete a recurring schedule by name. The tasks it already submitted stay."
    )]
    async fn remove_schedule(
        &self,
        Parameters(a): Parameters<ScheduleNameArgs>,
    ) -> Result<CallToolResult, McpError> {
        match self.client.remove_schedule(&a.name).await {
            Ok(()) => ok_json(serde_json::json!({ "removed": a.name })),
            Err(e) => from_client(e),
        }
    }

    #[tool(
        name = "TaskStatus",
        description = "With taskId: everything about one task (status, exit code, reason, attempts). Without: a list of tasks, filtered by status and group."
    )]
    async fn task_status(
        &self,
        Parameters(a): Parameters<StatusArgs>,
    ) -> Result<CallToolResult, McpError> {
        match a.task_id {
            Some(id) => match self.client.get(&id).await {
                Ok(d) => ok_json(serde_json::to_value(d).unwrap_or_default()),
                Err(e) => from_client(e),
            },
            None => {
                self.list(ListArgs {
                    status: a.status,
                    group: a.group,
                    label: None,
                    search: None,
                    limit: a.limit,
                })
                .await
            }
        }
    }

    #[tool(
        name = "ListTasks",
        description = "List tasks, newest first, filtered by status, group, label or text."
    )]
    async fn list_tasks(
        &self,
        Parameters(a): Parameters<ListArgs>,
    ) -> Result<CallToolResult, McpError> {
        self.list(a).await
    }

    #[tool(
        name = "TaskLogs",
        description = "A task's output (stdout and stderr). Use tail for the last lines, or stream plus offset to read only what is new since a previous call."
    )]
    async fn task_logs(
        &self,
        Parameters(a): Parameters<LogsArgs>,
    ) -> Result<CallToolResult, McpError> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(s) = &a.stream {
            if !matches!(s.as_str(), "stdout" | "stderr") {
                return tool_error(format!(
                    "stream must be \"stdout\" or \"stderr\", got `{s}`"
                ));
            }
            q.push(("stream", s.clone()));
        }
        if let Some(n) = a.tail {
            q.push(("tail", n.to_string()));
        }
        if let Some(o) = a.offset {
            if a.stream.is_none() {
                return tool_error("offset counts bytes of one stream: give stream too");
            }
            q.push(("from", o.to_string()));
        }
        q.push(("max_bytes", (1 << 20).to_string()));
        match self.client.logs_text(&a.task_id, &q).await {
            Ok(bytes) => Ok(CallToolResult::success(vec![ContentBlock::text(
                String::from_utf8_lossy(&bytes).into_owned(),
            )])),
            Err(e) => from_client(e),
        }
    }

    #[tool(
        name = "CancelTask",
        description = "Cancel a task: a queued one never starts; a running one has its whole process tree stopped."
    )]
    async fn cancel_task(
        &self,
        Parameters(a): Parameters<CancelArgs>,
    ) -> Result<CallToolResult, McpError> {
        match self.client.cancel(&a.task_id, a.reason.as_deref()).await {
            Ok(r) => ok_json(
                serde_json::json!({ "taskId": r.task.id, "result": r.result, "status": r.task.status }),
            ),
            Err(e) => from_client(e),
        }
    }

    #[tool(
        name = "RetryTask",
        description = "Run a finished task (failed, cancelled, timed out...) again as a new attempt."
    )]
    async fn retry_task(
        &self,
        Parameters(a): Parameters<IdArgs>,
    ) -> Result<CallToolResult, McpError> {
        match self.client.retry(&a.task_id).await {
            Ok(t) => ok_json(
                serde_json::json!({ "taskId": t.id, "status": t.status, "attempt": t.attempt }),
            ),
            Err(e) => from_client(e),
        }
    }

    #[tool(
        name = "WaitForTask",
        description = "Wait until a task ends or the timeout passes, then return its status. Sends progress notifications while waiting when the client asks for them."
    )]
    async fn wait_for_task(
        &self,
        Parameters(a): Parameters<WaitArgs>,
        meta: RequestMetaObject,
        peer: Peer<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let secs = match a.timeout {
            None => 60.0,
            Some(s) if s.is_finite() && s > 0.0 => s.min(MAX_WAIT_SECS),
            Some(s) => {
                return tool_error(format!(
                    "timeout must be a number of seconds above 0, got {s}"
                ));
            }
        };
        let task = match self.client.get(&a.task_id).await {
            Ok(d) => d.task,
            Err(e) => return from_client(e),
        };
        let progress = meta.get_progress_token();
        let mut events = Box::pin(self.client.events(Some(task.id.to_string()), 0));
        let mut seen = 0u32;
        let waited = tokio::time::timeout(Duration::from_secs_f64(secs), async {
            while let Some(ev) = events.next().await {
                let Ok(ev) = ev else { break };
                match &ev.body {
                    EventBody::TaskFinished { .. } => return true,
                    EventBody::TaskStatus { to, .. } => {
                        seen += 1;
                        if let Some(token) = &progress {
                            let _ = peer
                                .notify_progress(
                                    ProgressNotificationParam::new(token.clone(), f64::from(seen))
                                        .with_message(format!("task {} is {to}", task.id.short())),
                                )
                                .await;
                        }
                    }
                    _ => {}
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        match self.client.get(&task.id.to_string()).await {
            Ok(d) => ok_json(serde_json::json!({
                "taskId": d.task.id,
                "finished": waited || d.task.status.is_terminal(),
                "status": d.task.status,
                "exitCode": d.task.exit_code,
                "reason": d.task.reason,
                "attempt": d.task.attempt,
            })),
            Err(e) => from_client(e),
        }
    }
}

impl DeputyMcp {
    async fn list(&self, a: ListArgs) -> Result<CallToolResult, McpError> {
        let mut q: Vec<(&str, String)> =
            vec![("limit", a.limit.unwrap_or(20).clamp(1, 1000).to_string())];
        if let Some(s) = a.status {
            for part in s.split(',').filter(|p| !p.trim().is_empty()) {
                if let Err(e) = part.trim().parse::<Status>() {
                    return tool_error(e);
                }
            }
            q.push(("status", s));
        }
        if let Some(g) = a.group {
            q.push(("group", g));
        }
        if let Some(l) = a.label {
            q.push(("label", l));
        }
        if let Some(t) = a.search {
            q.push(("q", t));
        }
        match self.client.list(&q).await {
            Ok(page) => ok_json(serde_json::json!({
                "tasks": page.tasks.iter().map(|t| serde_json::json!({
                    "taskId": t.id,
                    "name": t.spec.title(),
                    "status": t.status,
                    "priority": t.spec.priority,
                    "group": t.spec.group,
                    "attempt": t.attempt,
                    "exitCode": t.exit_code,
                })).collect::<Vec<_>>(),
                "more": page.next_cursor.is_some(),
            })),
            Err(e) => from_client(e),
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for DeputyMcp {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .build(),
        );
        info.server_info = Implementation::new("deputy", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(
            "deputy runs tasks in the background: queued, parallel, durable. DelegateTask hands one over and returns its id at once; WaitForTask, TaskStatus and TaskLogs follow it; CancelTask and RetryTask manage it."
                .into(),
        );
        info
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let page = self
            .client
            .list(&[("limit", "50".to_string())])
            .await
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        Ok(ListResourcesResult::with_all_items(
            page.tasks
                .iter()
                .map(|t| {
                    Resource::new(
                        format!("{LOGS_PREFIX}{}{LOGS_SUFFIX}", t.id),
                        format!("logs: {}", t.spec.title()),
                    )
                    .with_description(format!("Output of task {} ({})", t.id.short(), t.status))
                    .with_mime_type("text/plain")
                })
                .collect(),
        ))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(format!("{LOGS_PREFIX}{{id}}{LOGS_SUFFIX}"), "task logs")
                .with_description("A task's output; subscribe to be told when more arrives")
                .with_mime_type("text/plain"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let id = logs_uri_id(&request.uri).ok_or_else(|| {
            McpError::invalid_params(
                format!("`{}` is not deputy://tasks/{{id}}/logs", request.uri),
                None,
            )
        })?;
        let bytes = self
            .client
            .logs_text(id, &[("max_bytes", (1 << 20).to_string())])
            .await
            .map_err(|e| McpError::invalid_params(e.to_string(), None))?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Ok(ReadResourceResult::new(vec![ResourceContents::text(text, request.uri)]).into())
    }

    /// `subscriptions/listen` (protocol 2026-07-28): log resources only. A URI that is
    /// not `deputy://tasks/{id}/logs` with a well-formed id is left out of the
    /// acknowledged filter.
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let uris: Vec<String> = requested
            .resource_subscriptions
            .iter()
            .flatten()
            .filter(|uri| logs_uri_id(uri).is_some_and(|id| id.parse::<IdRef>().is_ok()))
            .take(MAX_LISTENED_RESOURCES)
            .cloned()
            .collect();
        Some(
            SubscriptionFilter::builder()
                .resource_subscriptions(uris)
                .build(),
        )
    }

    /// One `subscriptions/listen` stream: a follower per accepted log resource sends
    /// `notifications/resources/updated` on the stream for each stored chunk of output
    /// and at the end. The stream closes gracefully (its final result) once every task
    /// it follows has ended, or when the client cancels it.
    async fn listen(&self, subscription: SubscriptionContext) -> Result<(), McpError> {
        let uris = subscription
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default();
        if uris.is_empty() {
            // Nothing we could follow was asked for: hold it open until the client
            // closes it, as an empty subscription.
            subscription.cancelled().await;
            return Ok(());
        }
        let mut followers = tokio::task::JoinSet::new();
        for uri in uris {
            let client = self.client.clone();
            let sink = subscription.sink().clone();
            followers.spawn(async move {
                let Some(id) = logs_uri_id(&uri) else { return };
                // A task that does not exist has nothing to report.
                let Ok(detail) = client.get(id).await else {
                    return;
                };
                let notify = |uri: String| {
                    let sink = sink.clone();
                    async move { sink.notify_resource_updated(uri).await.is_ok() }
                };
                follow_logs(&client, detail.task.id, &uri, notify).await;
            });
        }
        tokio::select! {
            () = subscription.cancelled() => {
                followers.abort_all();
            }
            () = async { while followers.join_next().await.is_some() {} } => {}
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let uri = request.uri;
        let id = logs_uri_id(&uri)
            .ok_or_else(|| {
                McpError::invalid_params(format!("`{uri}` is not deputy://tasks/{{id}}/logs"), None)
            })?
            .to_string();
        let task = self
            .client
            .get(&id)
            .await
            .map_err(|e| McpError::invalid_params(e.to_string(), None))?
            .task;
        let client = self.client.clone();
        let peer = context.peer.clone();
        let notify_uri = uri.clone();
        // Follow the task's events; each stored chunk of output is one notification.
        // Ends with the task, on unsubscribe, or when the session goes away.
        let follower = tokio::spawn(async move {
            let notify = |uri: String| {
                let peer = peer.clone();
                async move {
                    peer.notify_resource_updated(
                        rmcp::model::ResourceUpdatedNotificationParam::new(uri),
                    )
                    .await
                    .is_ok()
                }
            };
            follow_logs(&client, task.id, &notify_uri, notify).await;
        });
        if let Some(old) = self
            .subscriptions
            .lock()
            .expect("subscriptions")
            .insert(uri, follower.abort_handle())
        {
            old.abort();
        }
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if let Some(h) = self
            .subscriptions
            .lock()
            .expect("subscriptions")
            .remove(&request.uri)
        {
            h.abort();
        }
        Ok(())
    }
}

/// Follows a task's events and calls `notify` for each stored chunk of output and once
/// at the end; stops when the task has ended for good or `notify` fails (the client is
/// gone). Shared by both subscription generations.
async fn follow_logs<F, Fut>(client: &Client, task: deputy_core::TaskId, uri: &str, notify: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut events = Box::pin(client.events(Some(task.to_string()), 0));
    while let Some(Ok(ev)) = events.next().await {
        let done = matches!(ev.body, EventBody::TaskFinished { .. });
        if matches!(
            ev.body,
            EventBody::TaskOutput { .. } | EventBody::TaskFinished { .. }
        ) && !notify(uri.to_string()).await
        {
            break;
        }
        if done {
            break;
        }
    }
}

/// Serves MCP on stdin/stdout until the client goes away. Logs go to stderr.
pub async fn serve_stdio(client: Client) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use rmcp::ServiceExt;
    let service = DeputyMcp::new(client)
        .serve(rmcp::transport::stdio())
        .await?;
    service.waiting().await?;
    Ok(())
}

/// The streamable-HTTP MCP endpoint, served by the daemon at `/mcp`. Each session gets
/// a `DeputyMcp` talking to the daemon's own API (with its token), so HTTP and stdio
/// clients see exactly the same tools and rules.
pub fn http_service(
    client: Client,
) -> rmcp::transport::streamable_http_server::StreamableHttpService<
    DeputyMcp,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    StreamableHttpService::new(
        move || Ok(DeputyMcp::new(client.clone())),
        Default::default(),
        StreamableHttpServerConfig::default(),
    )
}
