//! External agent CLIs (Claude Code, Codex, any command): the command line for a task,
//! the environment it gets, and the parsers that turn their JSON output into readable
//! output, `task.agent` events, usage, cost and the session id.

use std::collections::BTreeMap;

use deputy_core::agent::{AgentSpec, AgentUsage, cap_result};
use deputy_core::trace::sum_counts;
use deputy_core::{Command, EventBody};
use serde_json::Value;

use super::config::{CliBackend, CliFormat};
use crate::supervisor::{FilterReport, StdoutFilter};

/// `arg` with `{prompt}`, `{model}` and `{system_prompt}` filled in.
fn fill(arg: &str, spec: &AgentSpec, prompt: &str) -> String {
    arg.replace("{prompt}", prompt)
        .replace("{model}", spec.model.as_deref().unwrap_or(""))
        .replace(
            "{system_prompt}",
            spec.system_prompt.as_deref().unwrap_or(""),
        )
}

/// The argv for a task on `backend`. `resume` is a session to continue. For `claude` and
/// `codex`, the backend's `args` are extra flags (e.g. a permission mode), placed before
/// the prompt.
pub fn argv(
    backend: &CliBackend,
    spec: &AgentSpec,
    prompt: &str,
    resume: Option<&str>,
) -> Result<Vec<String>, String> {
    let mut a = vec![backend.program.clone()];
    match backend.format {
        CliFormat::Claude => {
            a.extend(
                ["-p", prompt, "--output-format", "stream-json", "--verbose"].map(String::from),
            );
            if let Some(m) = &spec.model {
                a.extend(["--model".into(), m.clone()]);
            }
            if let Some(s) = &spec.system_prompt {
                a.extend(["--append-system-prompt".into(), s.clone()]);
            }
            if let Some(sid) = resume {
                a.extend(["--resume".into(), sid.to_string()]);
            }
            a.extend(backend.args.iter().map(|arg| fill(arg, spec, prompt)));
        }
        CliFormat::Codex => {
            if resume.is_some() {
                return Err(
                    "the codex backend cannot resume a session; retry without --continue".into(),
                );
            }
            a.extend(["exec", "--json", "--skip-git-repo-check"].map(String::from));
            if let Some(m) = &spec.model {
                a.extend(["--model".into(), m.clone()]);
            }
            a.extend(backend.args.iter().map(|arg| fill(arg, spec, prompt)));
            // codex exec has no system prompt flag: it goes first in the prompt.
            let full = match &spec.system_prompt {
                Some(s) => format!("{s}\n\n{prompt}"),
                None => prompt.to_string(),
            };
            a.push(full);
        }
        CliFormat::Text => {
            if resume.is_some() {
                return Err(
                    "this backend cannot resume a session; retry without --continue".into(),
                );
            }
            a.extend(backend.args.iter().map(|arg| fill(arg, spec, prompt)));
        }
    }
    Ok(a)
}

/// The environment of a CLI backend: the allowlist, the variables it names, the task's
/// own; never Claude Code's nesting markers (`CLAUDECODE`, `CLAUDE_CODE_*`), which make
/// a nested `claude` refuse to start.
pub fn env(
    backend: &CliBackend,
    base: &BTreeMap<String, String>,
    task_env: &BTreeMap<String, String>,
    daemon_env: &dyn Fn(&str) -> Option<String>,
) -> BTreeMap<String, String> {
    let mut env = base.clone();
    for var in &backend.env {
        if let Some(v) = daemon_env(var) {
            env.insert(var.clone(), v);
        }
    }
    env.extend(task_env.clone());
    env.retain(|k, _| k != "CLAUDECODE" && !k.starts_with("CLAUDE_CODE_"));
    env
}

pub fn command(argv: Vec<String>) -> Command {
    Command::Argv(argv)
}

fn shown(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    deputy_core::text::cut_chars(&s, 2000)
}

fn step(
    attempt: u32,
    step: &str,
    tool: Option<String>,
    detail: Option<String>,
    is_error: Option<bool>,
) -> EventBody {
    EventBody::TaskAgent {
        attempt,
        step: step.into(),
        tool,
        detail,
        is_error,
    }
}

/// Claude Code's `stream-json`: `system` (init, with the session id), `assistant`
/// (text and tool_use blocks), `user` (tool_result blocks) and `result` (final text,
/// cost, usage, session id, is_error).
pub struct ClaudeFilter {
    attempt: u32,
    usage: AgentUsage,
    failure: Option<String>,
    saw_result: bool,
}

impl ClaudeFilter {
    pub fn new(attempt: u32) -> Self {
        Self {
            attempt,
            usage: AgentUsage::default(),
            failure: None,
            saw_result: false,
        }
    }

    fn blocks(v: &Value) -> &[Value] {
        v.pointer("/message/content")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }
}

impl StdoutFilter for ClaudeFilter {
    fn line(&mut self, line: &str) -> (Option<String>, Vec<EventBody>) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return (Some(format!("{line}\n")), vec![]);
        };
        let mut text = String::new();
        let mut events = Vec::new();
        if let Some(sid) = v.get("session_id").and_then(Value::as_str)
            && self.usage.session_id.as_deref() != Some(sid)
        {
            self.usage.session_id = Some(sid.to_string());
            events.push(step(
                self.attempt,
                "session",
                None,
                Some(sid.to_string()),
                None,
            ));
        }
        match v.get("type").and_then(Value::as_str) {
            Some("assistant") => {
                for b in Self::blocks(&v) {
                    match b.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            text.push_str(b.get("text").and_then(Value::as_str).unwrap_or(""));
                            text.push('\n');
                        }
                        Some("tool_use") => {
                            let name = b
                                .get("name")
                                .and_then(Value::as_str)
                                .unwrap_or("?")
                                .to_string();
                            let input = shown(b.get("input").unwrap_or(&Value::Null));
                            text.push_str(&format!("→ {name}({input})\n"));
                            events.push(step(
                                self.attempt,
                                "tool_started",
                                Some(name),
                                Some(input),
                                None,
                            ));
                        }
                        _ => {}
                    }
                }
            }
            Some("user") => {
                for b in Self::blocks(&v) {
                    if b.get("type").and_then(Value::as_str) == Some("tool_result") {
                        let is_error = b.get("is_error").and_then(Value::as_bool).unwrap_or(false);
                        let content = shown(b.get("content").unwrap_or(&Value::Null));
                        text.push_str(&format!("{} {content}\n", if is_error { "✗" } else { "←" }));
                        events.push(step(
                            self.attempt,
                            "tool_finished",
                            None,
                            Some(content),
                            Some(is_error),
                        ));
                    }
                }
            }
            Some("result") => {
                self.saw_result = true;
                let u = v.get("usage");
                let count = |k: &str| u.and_then(|u| u.get(k)).and_then(Value::as_u64);
                self.usage.input_tokens = count("input_tokens");
                self.usage.output_tokens = count("output_tokens");
                self.usage.cached_tokens = count("cache_read_input_tokens");
                self.usage.cost_usd = v.get("total_cost_usd").and_then(Value::as_f64);
                self.usage.turns = v.get("num_turns").and_then(Value::as_u64).map(|n| n as u32);
                let result = v.get("result").and_then(Value::as_str).unwrap_or("");
                self.usage.result = Some(cap_result(result));
                let is_error = v.get("is_error").and_then(Value::as_bool).unwrap_or(false)
                    || v.get("subtype")
                        .and_then(Value::as_str)
                        .is_some_and(|s| s != "success");
                if is_error {
                    let subtype = v.get("subtype").and_then(Value::as_str).unwrap_or("error");
                    self.failure = Some(format!(
                        "claude reported {subtype}: {}",
                        shown(&Value::String(result.into()))
                    ));
                }
            }
            _ => {}
        }
        ((!text.is_empty()).then_some(text), events)
    }

    fn finish(self: Box<Self>) -> FilterReport {
        let failure = self.failure.or_else(|| {
            (!self.saw_result).then(|| "claude ended without a result message".to_string())
        });
        FilterReport {
            usage: Some(self.usage),
            failure,
        }
    }
}

/// `codex exec --json`: `thread.started` (the session), `item.completed` items
/// (agent messages, commands with their output), `turn.completed` (usage), and
/// `turn.failed` / `error`.
pub struct CodexFilter {
    attempt: u32,
    usage: AgentUsage,
    failure: Option<String>,
    last_message: Option<String>,
}

impl CodexFilter {
    pub fn new(attempt: u32) -> Self {
        Self {
            attempt,
            usage: AgentUsage::default(),
            failure: None,
            last_message: None,
        }
    }
}

impl StdoutFilter for CodexFilter {
    fn line(&mut self, line: &str) -> (Option<String>, Vec<EventBody>) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return (Some(format!("{line}\n")), vec![]);
        };
        let mut events = Vec::new();
        let text = match v.get("type").and_then(Value::as_str) {
            Some("thread.started") => {
                let id = v
                    .get("thread_id")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                self.usage.session_id.clone_from(&id);
                events.push(step(self.attempt, "session", None, id, None));
                None
            }
            Some("item.started") => {
                let item = v.get("item").unwrap_or(&Value::Null);
                (item.get("type").and_then(Value::as_str) == Some("command_execution")).then(|| {
                    let cmd = shown(item.get("command").unwrap_or(&Value::Null));
                    events.push(step(
                        self.attempt,
                        "tool_started",
                        Some("command".into()),
                        Some(cmd.clone()),
                        None,
                    ));
                    format!("$ {cmd}\n")
                })
            }
            Some("item.completed") => {
                let item = v.get("item").unwrap_or(&Value::Null);
                match item.get("type").and_then(Value::as_str) {
                    Some("agent_message") => {
                        let t = item
                            .get("text")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string();
                        self.last_message = Some(t.clone());
                        Some(format!("{t}\n"))
                    }
                    Some("command_execution") => {
                        let out = shown(item.get("aggregated_output").unwrap_or(&Value::Null));
                        let code = item.get("exit_code").and_then(Value::as_i64);
                        let is_error = code.is_some_and(|c| c != 0);
                        events.push(step(
                            self.attempt,
                            "tool_finished",
                            Some("command".into()),
                            Some(out.clone()),
                            Some(is_error),
                        ));
                        Some(format!("{} {out}\n", if is_error { "✗" } else { "←" }))
                    }
                    Some("file_change") => Some(format!(
                        "(changed files: {})\n",
                        shown(item.get("changes").unwrap_or(&Value::Null))
                    )),
                    _ => None,
                }
            }
            Some("turn.completed") => {
                let u = v.get("usage");
                let count = |k: &str| u.and_then(|u| u.get(k)).and_then(Value::as_u64);
                self.usage.input_tokens =
                    sum_counts(self.usage.input_tokens, count("input_tokens"));
                self.usage.output_tokens =
                    sum_counts(self.usage.output_tokens, count("output_tokens"));
                self.usage.cached_tokens =
                    sum_counts(self.usage.cached_tokens, count("cached_input_tokens"));
                self.usage.turns = Some(self.usage.turns.unwrap_or(0) + 1);
                None
            }
            Some("turn.failed") | Some("error") => {
                let msg = v
                    .pointer("/error/message")
                    .or_else(|| v.get("message"))
                    .map(shown)
                    .unwrap_or_else(|| "unknown error".into());
                self.failure = Some(format!("codex reported an error: {msg}"));
                Some(format!("error: {msg}\n"))
            }
            _ => None,
        };
        (text, events)
    }

    fn finish(self: Box<Self>) -> FilterReport {
        let mut usage = self.usage;
        usage.result = self.last_message.as_deref().map(cap_result);
        FilterReport {
            usage: Some(usage),
            failure: self.failure,
        }
    }
}

/// Plain text, stored as it is; the last lines are the result.
pub struct TextFilter {
    tail: std::collections::VecDeque<String>,
    tail_bytes: usize,
}

impl TextFilter {
    pub fn new() -> Self {
        Self {
            tail: Default::default(),
            tail_bytes: 0,
        }
    }
}

impl StdoutFilter for TextFilter {
    fn line(&mut self, line: &str) -> (Option<String>, Vec<EventBody>) {
        self.tail.push_back(line.to_string());
        self.tail_bytes += line.len() + 1;
        while self.tail_bytes > deputy_core::agent::MAX_RESULT_BYTES {
            if let Some(l) = self.tail.pop_front() {
                self.tail_bytes -= l.len() + 1;
            }
        }
        (Some(format!("{line}\n")), vec![])
    }

    fn finish(self: Box<Self>) -> FilterReport {
        let result: Vec<String> = self.tail.into_iter().collect();
        FilterReport {
            usage: Some(AgentUsage {
                result: Some(result.join("\n")),
                ..AgentUsage::default()
            }),
            failure: None,
        }
    }
}

pub fn filter(format: CliFormat, attempt: u32) -> Box<dyn StdoutFilter> {
    match format {
        CliFormat::Claude => Box::new(ClaudeFilter::new(attempt)),
        CliFormat::Codex => Box::new(CodexFilter::new(attempt)),
        CliFormat::Text => Box::new(TextFilter::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AgentSpec {
        deputy_core::agent::AgentInput {
            backend: Some("claude".into()),
            prompt: "fix it".into(),
            model: Some("sonnet".into()),
            system_prompt: Some("be brief".into()),
            ..Default::default()
        }
        .validate()
        .unwrap()
    }

    #[test]
    fn claude_command_line_and_environment() {
        let b = CliBackend::builtin("claude").unwrap();
        let a = argv(&b, &spec(), "fix it", Some("sess-1")).unwrap();
        assert_eq!(
            a,
            [
                "claude",
                "-p",
                "fix it",
                "--output-format",
                "stream-json",
                "--verbose",
                "--model",
                "sonnet",
                "--append-system-prompt",
                "be brief",
                "--resume",
                "sess-1"
            ]
        );
        let base = BTreeMap::from([("PATH".to_string(), "/bin".to_string())]);
        let task_env = BTreeMap::from([
            ("CLAUDECODE".to_string(), "1".to_string()),
            ("CLAUDE_CODE_ENTRYPOINT".to_string(), "cli".to_string()),
            ("X".to_string(), "y".to_string()),
        ]);
        let e = env(&b, &base, &task_env, &|k| {
            (k == "ANTHROPIC_API_KEY").then(|| "k".into())
        });
        assert_eq!(e.get("ANTHROPIC_API_KEY").map(String::as_str), Some("k"));
        assert!(!e.contains_key("CLAUDECODE") && !e.contains_key("CLAUDE_CODE_ENTRYPOINT"));
        assert_eq!(e.get("X").map(String::as_str), Some("y"));
        let mut codex = CliBackend::builtin("codex").unwrap();
        assert!(argv(&codex, &spec(), "p", Some("s")).is_err());
        // Extra flags of a configured backend go before the prompt.
        codex.args = vec!["--sandbox".into(), "workspace-write".into()];
        let a = argv(&codex, &spec(), "p", None).unwrap();
        assert_eq!(
            a[a.len() - 3..],
            ["--sandbox", "workspace-write", "be brief\n\np"]
        );
        let mut claude = CliBackend::builtin("claude").unwrap();
        claude.args = vec!["--permission-mode".into(), "acceptEdits".into()];
        let a = argv(&claude, &spec(), "fix it", None).unwrap();
        assert_eq!(a[a.len() - 2..], ["--permission-mode", "acceptEdits"]);
    }

    #[test]
    fn generic_templates_fill_each_argument_in_place() {
        let b = CliBackend {
            format: CliFormat::Text,
            program: "my-agent".into(),
            args: vec!["--task".into(), "{prompt}".into(), "--model={model}".into()],
            env: vec![],
        };
        let a = argv(&b, &spec(), "a; rm -rf /", None).unwrap();
        assert_eq!(a, ["my-agent", "--task", "a; rm -rf /", "--model=sonnet"]);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;
        use serde_json::json;

        /// Lines a CLI could print: JSON events of the shapes claude and codex emit, with
        /// fields of the wrong types, plus arbitrary text.
        fn line() -> impl Strategy<Value = String> {
            let text = r#"[a-zA-Z0-9 {}":,é-]{0,30}"#;
            prop_oneof![
                any::<String>(),
                text.prop_map(|t| t),
                ("[a-z_.]{0,16}", text).prop_map(|(ty, t)| json!({"type": ty, "text": t}).to_string()),
                text.prop_map(|t| json!({"type": "assistant", "message": {"content": [{"type": "text", "text": t}, {"type": "tool_use", "name": t, "input": {"x": 1}}]}}).to_string()),
                text.prop_map(|t| json!({"type": "user", "message": {"content": [{"type": "tool_result", "content": t, "is_error": true}]}}).to_string()),
                (any::<bool>(), any::<u32>()).prop_map(|(err, n)| json!({"type": "result", "is_error": err, "result": "r", "session_id": "s", "total_cost_usd": n, "num_turns": n, "usage": {"input_tokens": n, "output_tokens": "many"}}).to_string()),
                text.prop_map(|t| json!({"type": "item.completed", "item": {"type": "agent_message", "text": t}}).to_string()),
                text.prop_map(|t| json!({"type": "item.started", "item": {"type": "command_execution", "command": t}}).to_string()),
                any::<u64>().prop_map(|n| json!({"type": "turn.completed", "usage": {"input_tokens": n, "output_tokens": n}}).to_string()),
                Just(json!({"type": "thread.started", "thread_id": 7}).to_string()),
                Just("null".to_string()),
                Just("[]".to_string()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            /// Whatever a CLI prints, its filter keeps going and ends with a report.
            #[test]
            fn every_filter_takes_any_output(lines in prop::collection::vec(line(), 0..24)) {
                for format in [CliFormat::Claude, CliFormat::Codex, CliFormat::Text] {
                    let mut f = filter(format, 1);
                    for l in &lines {
                        let (text, events) = f.line(l);
                        if let Some(t) = text {
                            prop_assert!(t.len() <= l.len() + 4096, "output grew without bound");
                        }
                        prop_assert!(events.len() <= 64);
                    }
                    let report = f.finish();
                    if let Some(u) = report.usage {
                        prop_assert!(u.cost_usd.is_none_or(|c| c.is_finite() && c >= 0.0));
                    }
                }
            }
        }
    }
}
