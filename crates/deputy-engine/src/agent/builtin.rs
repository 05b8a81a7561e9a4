//! The built-in tool-using agent: the prompt goes to the model; tool calls run; their
//! results go back; until a final answer, the turn limit, the token or cost budget, or
//! the task's timeout (the supervisor's select) ends it. Every model call is recorded
//! (the trace); the transcript is the task's output; tool calls are `task.agent` events.
//!
//! The conversation is only ever extended by an assistant message followed by one tool
//! message per tool call it made, so it always passes the sequencing check.

use std::sync::Arc;
use std::sync::atomic::AtomicI32;
use std::time::Duration;

use deputy_core::agent::{AgentSpec, AgentUsage};
use deputy_core::time::now_ms;
use deputy_core::trace::{RecordStatus, Usage};
use deputy_core::{EventBody, Status, Task};
use deputy_llm::client::ModelClient;
use deputy_llm::openai::client::{ChatRequest, ToolSpec};
use deputy_llm::record::RunRecorder;
use deputy_llm::record::redact::Redactor;
use deputy_llm::tools::ArgumentSchema;
use deputy_llm::{Message, ToolCall};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::shell::{MAX_TIMEOUT, ShellTool};
use super::tools::{self, ToolOutput};
use super::workspace::Workspace;
use crate::Inner;

const DEFAULT_SYSTEM_PROMPT: &str = "You are a careful software engineer working in a workspace directory. \
Use the tools to inspect and change files and to run commands; paths are relative to the workspace. \
When the task is done, answer with a short summary of what you did and stop calling tools.";

/// Characters of a tool's arguments or result shown in events and the transcript.
const SHOWN: usize = 2000;

/// Where the transcript goes: the task's output, through a bounded channel. The
/// provider's key is scrubbed from everything written, since a model can repeat it.
pub(super) struct Transcript {
    pub tx: mpsc::Sender<String>,
    pub redactor: Redactor,
}

impl Transcript {
    pub async fn write(&self, s: impl Into<String>) {
        let _ = self.tx.send(self.redactor.text(&s.into())).await;
    }
}

/// Streamed text on its way to the transcript, scrubbed of secrets even when one is
/// split across deltas: the last `hold` bytes wait for the next delta.
struct Streamed<'a> {
    redactor: &'a Redactor,
    hold: usize,
    pending: String,
}

impl Streamed<'_> {
    /// Takes a delta; returns what can be written now.
    fn push(&mut self, delta: &str) -> Option<String> {
        self.pending.push_str(delta);
        self.pending = self.redactor.text(&self.pending);
        let cut = self
            .pending
            .floor_char_boundary(self.pending.len().saturating_sub(self.hold));
        (cut > 0).then(|| {
            let rest = self.pending.split_off(cut);
            std::mem::replace(&mut self.pending, rest)
        })
    }

    fn take_rest(&mut self) -> String {
        self.redactor.text(&std::mem::take(&mut self.pending))
    }
}

pub(super) struct BuiltinRun<'a> {
    pub inner: &'a Arc<Inner>,
    pub task: &'a Task,
    pub spec: &'a AgentSpec,
    pub provider_name: String,
    pub provider: deputy_llm::providers::ProviderConfig,
    pub prompt: String,
    pub workspace: Workspace,
    pub current_pgid: Arc<AtomicI32>,
    pub transcript: Transcript,
    /// Length of the longest secret the transcript scrubs.
    pub secret_len: usize,
}

pub(super) struct Ended {
    pub status: Status,
    pub reason: Option<String>,
    pub usage: AgentUsage,
}

fn shown(s: &str) -> String {
    deputy_core::text::cut_chars(s, SHOWN)
}

fn tool_specs() -> Vec<(ToolSpec, ArgumentSchema)> {
    let mut all: Vec<(&str, &str, Value)> = tools::specs();
    all.push((
        "shell",
        "Run a shell command (sh -c) in the workspace. Returns the exit code and the output (head and tail). Optional timeout_secs.",
        json!({"type": "object", "properties": {
            "command": {"type": "string", "minLength": 1},
            "timeout_secs": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT.as_secs()}
        }, "required": ["command"], "additionalProperties": false}),
    ));
    all.into_iter()
        .map(|(name, description, parameters)| {
            let schema = ArgumentSchema::new(&parameters).expect("built-in tool schemas compile");
            (
                ToolSpec {
                    name: name.into(),
                    description: description.into(),
                    parameters,
                },
                schema,
            )
        })
        .collect()
}

impl BuiltinRun<'_> {
    async fn event(
        &self,
        step: &str,
        tool: Option<&str>,
        detail: Option<String>,
        is_error: Option<bool>,
    ) {
        let body = EventBody::TaskAgent {
            attempt: self.task.attempt,
            step: step.into(),
            tool: tool.map(str::to_string),
            detail: detail.map(|d| self.transcript.redactor.text(&d)),
            is_error,
        };
        if let Err(e) = self
            .inner
            .store
            .attempt_event(self.task.id, self.task.attempt, body, now_ms())
            .await
        {
            tracing::debug!(task = %self.task.id, %e, "agent event not stored");
        }
    }

    async fn call_tool(
        &self,
        call: &ToolCall,
        schemas: &[(ToolSpec, ArgumentSchema)],
    ) -> ToolOutput {
        let Some((_, schema)) = schemas.iter().find(|(s, _)| s.name == call.name) else {
            let names: Vec<&str> = schemas.iter().map(|(s, _)| s.name.as_str()).collect();
            return ToolOutput::error(format!(
                "there is no tool `{}`; the tools are {}",
                call.name,
                names.join(", ")
            ));
        };
        let args = match schema.check(&call.name, &call.arguments) {
            Ok(v) => v,
            Err(e) => return ToolOutput::error(e),
        };
        if call.name == "shell" {
            let secs = args
                .get("timeout_secs")
                .and_then(Value::as_u64)
                .map_or(self.inner.cfg.agents.shell_timeout, Duration::from_secs)
                .min(MAX_TIMEOUT);
            let mut env = self.inner.base_env.clone();
            env.extend(self.task.spec.env.clone());
            let shell = ShellTool {
                inner: self.inner,
                task: self.task,
                workspace: self.workspace.root(),
                env,
                sandbox: self.inner.cfg.agents.sandbox,
                current_pgid: self.current_pgid.clone(),
            };
            let command = args["command"].as_str().unwrap_or_default();
            return shell.run(command, secs).await;
        }
        let ws = self.workspace.clone();
        let name = call.name.clone();
        match tokio::task::spawn_blocking(move || tools::run(&ws, &name, &args)).await {
            Ok(out) => out,
            Err(e) => ToolOutput::error(format!("the tool failed: {e}")),
        }
    }

    pub async fn run(self) -> Ended {
        let cfg = &self.inner.cfg;
        let (provider_name, provider) = (&self.provider_name, &self.provider);
        let mut usage = AgentUsage::default();
        let fail = |reason: String, usage: AgentUsage| Ended {
            status: Status::Failed,
            reason: Some(reason),
            usage,
        };
        let Some(model) = self
            .spec
            .model
            .clone()
            .or_else(|| provider.default_model.clone())
        else {
            return fail(
                format!(
                    "no model: pass --model, or set default_model of provider `{provider_name}`"
                ),
                usage,
            );
        };
        if self.spec.max_cost_micros.is_some() && !cfg.agents.prices.contains_key(&model) {
            return fail(
                format!(
                    "a cost budget needs the price of `{model}`: add [prices.\"{model}\"] with input and output dollars per million tokens"
                ),
                usage,
            );
        }
        if let Some(var) = &provider.api_key_env
            && provider.api_key(&|k| std::env::var(k).ok()).is_none()
        {
            return fail(
                format!(
                    "provider `{provider_name}` reads its API key from ${var}, which is not set in the daemon's environment; set it and restart the daemon, or configure [providers.{provider_name}] api_key_env"
                ),
                usage,
            );
        }
        let client = ModelClient::for_provider(provider, &|k| std::env::var(k).ok());
        let run = RunRecorder::start(
            &self.inner.recorder,
            self.task.id,
            self.task.attempt,
            provider_name,
            &model,
        )
        .await;
        let schemas = tool_specs();
        let mut messages = vec![
            Message::System {
                content: self
                    .spec
                    .system_prompt
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.to_string()),
            },
            Message::User {
                content: self.prompt.clone(),
            },
        ];
        let mut total = Usage::default();
        let mut turns = 0;
        let ended = loop {
            if turns >= self.spec.max_turns {
                break fail(
                    format!(
                        "max turns ({}) reached without a final answer",
                        self.spec.max_turns
                    ),
                    usage.clone(),
                );
            }
            turns += 1;
            usage.turns = Some(turns);
            let req = ChatRequest {
                model: model.clone(),
                messages: messages.clone(),
                tools: schemas.iter().map(|(s, _)| s.clone()).collect(),
                max_tokens: None,
            };
            let mut streamed = Streamed {
                redactor: &self.transcript.redactor,
                hold: self.secret_len.saturating_sub(1),
                pending: String::new(),
            };
            let mut unsent = String::new();
            let tx = self.transcript.tx.clone();
            let mut on_text = |t: &str| {
                // Never waits: text that does not fit in the channel now goes with the
                // next delta (bounded by the response size cap).
                if let Some(ready) = streamed.push(t) {
                    unsent.push_str(&ready);
                }
                if !unsent.is_empty()
                    && let Err(mpsc::error::TrySendError::Full(back)) =
                        tx.try_send(std::mem::take(&mut unsent))
                {
                    unsent = back;
                }
            };
            let result = client.stream(&req, &mut on_text, Some(&run)).await;
            unsent.push_str(&streamed.take_rest());
            if !unsent.is_empty() {
                self.transcript.write(std::mem::take(&mut unsent)).await;
            }
            let outcome = match result {
                Ok(o) => o,
                Err(e) => break fail(format!("the model call failed: {e}"), usage.clone()),
            };
            total = total.plus(outcome.completion.usage);
            usage.input_tokens = total.input_tokens;
            usage.output_tokens = total.output_tokens;
            usage.cached_tokens = total.cached_tokens;
            usage.cost_usd = cfg.agents.cost(&model, &total);
            let Message::Assistant {
                content,
                tool_calls,
            } = outcome.completion.message.clone()
            else {
                break fail(
                    "the model answered with something other than an assistant message".into(),
                    usage.clone(),
                );
            };
            messages.push(outcome.completion.message);
            let spent = total.input_tokens.unwrap_or(0) + total.output_tokens.unwrap_or(0);
            if let Some(max) = self.spec.max_tokens
                && spent > max
            {
                break fail(
                    format!("token budget of {max} exceeded: {spent} tokens used"),
                    usage.clone(),
                );
            }
            if let (Some(max), Some(cost)) = (self.spec.max_cost_micros, usage.cost_usd)
                && cost * 1e6 > max as f64
            {
                break fail(
                    format!(
                        "cost budget of ${:.4} exceeded: ${cost:.4} spent",
                        max as f64 / 1e6
                    ),
                    usage.clone(),
                );
            }
            if tool_calls.is_empty() {
                self.transcript.write("\n").await;
                break Ended {
                    status: Status::Succeeded,
                    reason: None,
                    usage: AgentUsage {
                        result: content.as_deref().map(|c| {
                            deputy_core::agent::cap_result(&self.transcript.redactor.text(c))
                        }),
                        ..usage.clone()
                    },
                };
            }
            if content.as_deref().is_some_and(|c| !c.is_empty()) {
                self.transcript.write("\n").await;
            }
            for call in &tool_calls {
                self.event(
                    "tool_started",
                    Some(&call.name),
                    Some(shown(&call.arguments)),
                    None,
                )
                .await;
                self.transcript
                    .write(format!("→ {}({})\n", call.name, shown(&call.arguments)))
                    .await;
                let out = self.call_tool(call, &schemas).await;
                self.event(
                    "tool_finished",
                    Some(&call.name),
                    Some(shown(&out.content)),
                    Some(out.is_error),
                )
                .await;
                let mark = if out.is_error { "✗" } else { "←" };
                self.transcript
                    .write(format!("{mark} {}\n", shown(out.content.trim_end())))
                    .await;
                messages.push(Message::Tool {
                    tool_call_id: call.id.clone(),
                    content: if out.is_error {
                        format!("error: {}", out.content)
                    } else {
                        out.content
                    },
                });
            }
        };
        let (status, error) = match ended.status {
            Status::Succeeded => (RecordStatus::Completed, None),
            _ => (RecordStatus::Error, ended.reason.clone()),
        };
        run.finish(status, error.as_deref()).await;
        ended
    }
}
