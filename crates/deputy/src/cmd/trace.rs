//! `deputy trace`: a task's model calls as a readable timeline (runs, steps, attempts,
//! tokens, durations, errors), or the full record with `--json`.

use deputy_core::time::{Millis, short_duration};
use deputy_core::trace::{LlmAttempt, LlmRun, LlmStep, Trace, Usage};

use crate::cli::ShowArgs;
use crate::config::Config;
use crate::connect;
use crate::render::truncate;

pub async fn trace(cfg: &Config, a: ShowArgs) -> anyhow::Result<u8> {
    let client = connect::client(cfg)?;
    let t = client.trace(&a.id).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&t)?);
    } else {
        print!("{}", timeline(&t));
    }
    Ok(0)
}

fn tokens(u: &Usage) -> String {
    let n = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
    let mut s = format!("in {} out {}", n(u.input_tokens), n(u.output_tokens));
    if let Some(c) = u.cached_tokens {
        s.push_str(&format!(" cached {c}"));
    }
    if let Some(r) = u.reasoning_tokens {
        s.push_str(&format!(" reasoning {r}"));
    }
    s
}

fn span(start: Millis, end: Option<Millis>) -> String {
    end.map_or_else(|| "running".to_string(), |e| short_duration(e - start))
}

/// The whole trace as text, one line per run, step and attempt.
pub fn timeline(t: &Trace) -> String {
    if t.runs.is_empty() {
        return format!(
            "task {} made no model calls (shell tasks never do; an agent task may have failed before its first)\n",
            t.task_id
        );
    }
    let mut out = String::new();
    for run in &t.runs {
        run_lines(&mut out, run);
    }
    out
}

fn run_lines(out: &mut String, run: &LlmRun) {
    out.push_str(&format!(
        "run {} (task attempt {})  {}/{}  {}  {} steps  {}  {}\n",
        &run.id[..run.id.len().min(12)],
        run.task_attempt,
        run.provider,
        run.model,
        run.status,
        run.steps.len(),
        tokens(&run.usage),
        span(run.started_at, run.ended_at),
    ));
    if let Some(e) = &run.error {
        out.push_str(&format!("  error: {}\n", truncate(e, 300)));
    }
    for step in &run.steps {
        step_lines(out, run.started_at, step);
    }
}

fn step_lines(out: &mut String, run_start: Millis, s: &LlmStep) {
    let ttft = s
        .first_token_at
        .map(|f| format!("  first token {}", short_duration(f - s.started_at)))
        .unwrap_or_default();
    let finish = s
        .response
        .as_ref()
        .and_then(|r| r.get("finish_reason"))
        .and_then(|f| f.as_str())
        .map(|f| format!("  finish {f}"))
        .unwrap_or_default();
    out.push_str(&format!(
        "  +{:<7} step {}  {}  {}  {}{}  {}{}\n",
        short_duration(s.started_at - run_start),
        s.number,
        s.operation,
        s.status,
        span(s.started_at, s.ended_at),
        ttft,
        tokens(&s.usage),
        finish,
    ));
    if let Some(calls) = s
        .response
        .as_ref()
        .and_then(|r| r.pointer("/message/tool_calls"))
        .and_then(|c| c.as_array())
    {
        for c in calls {
            out.push_str(&format!(
                "             tool call {} {}\n",
                c["name"].as_str().unwrap_or("?"),
                truncate(c["arguments"].as_str().unwrap_or(""), 120),
            ));
        }
    }
    if let Some(text) = s
        .response
        .as_ref()
        .and_then(|r| r.pointer("/message/content"))
        .and_then(|c| c.as_str())
        .filter(|t| !t.is_empty())
    {
        out.push_str(&format!(
            "             says {:?}\n",
            truncate(&text.replace('\n', " "), 120)
        ));
    }
    if let Some(e) = &s.error {
        out.push_str(&format!("             error: {}\n", truncate(e, 300)));
    }
    for a in &s.attempts {
        attempt_line(out, a);
    }
}

fn attempt_line(out: &mut String, a: &LlmAttempt) {
    let status = a
        .status_code
        .map_or_else(|| "no answer".to_string(), |c| c.to_string());
    let chunks = if a.chunks.is_empty() && a.chunks_omitted == 0 {
        String::new()
    } else {
        format!("  {} chunks", a.chunks.len() as u64 + a.chunks_omitted)
    };
    let error = a
        .error
        .as_ref()
        .map(|e| format!("  error: {}", truncate(e, 200)))
        .unwrap_or_default();
    out.push_str(&format!(
        "             attempt {}  {} {}  {}  {}ms{}{}\n",
        a.number, a.method, a.url, status, a.duration_ms, chunks, error
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use deputy_core::TaskId;
    use deputy_core::trace::RecordStatus;
    use serde_json::json;

    #[test]
    fn a_timeline_shows_steps_attempts_tokens_and_errors() {
        let attempt = |n, code, error: Option<&str>| LlmAttempt {
            number: n,
            method: "POST".into(),
            url: "http://m/v1/chat/completions".into(),
            status_code: code,
            request_headers: vec![],
            request_body: None,
            response_headers: vec![],
            response_body: None,
            chunks: vec!["{}".into(); 3],
            chunks_omitted: 1,
            started_at: 0,
            duration_ms: 12,
            error: error.map(str::to_string),
        };
        let t = Trace {
            task_id: TaskId::new(),
            runs: vec![LlmRun {
                id: "0190f0a1b2c3d4e5f60718293a4b5c6d".into(),
                task_id: TaskId::new(),
                task_attempt: 1,
                provider: "openai".into(),
                model: "gpt-x".into(),
                status: RecordStatus::Completed,
                error: None,
                usage: Usage {
                    input_tokens: Some(30),
                    output_tokens: Some(4),
                    ..Usage::default()
                },
                started_at: 1_000,
                ended_at: Some(3_500),
                steps: vec![LlmStep {
                    number: 1,
                    operation: "stream".into(),
                    request: json!({}),
                    response: Some(
                        json!({"finish_reason": "tool_calls", "message": {"role": "assistant", "tool_calls": [{"id": "c", "name": "read_file", "arguments": "{\"path\":\"a\"}"}]}}),
                    ),
                    usage: Usage {
                        input_tokens: Some(30),
                        ..Usage::default()
                    },
                    status: RecordStatus::Completed,
                    error: None,
                    started_at: 1_200,
                    first_token_at: Some(1_450),
                    ended_at: Some(2_000),
                    attempts: vec![
                        attempt(1, Some(429), Some("the model API answered 429")),
                        attempt(2, Some(200), None),
                    ],
                }],
            }],
        };
        let text = timeline(&t);
        assert!(
            text.contains("openai/gpt-x  completed  1 steps  in 30 out 4  2.5s"),
            "{text}"
        );
        assert!(
            text.contains(
                "step 1  stream  completed  0.8s  first token 0.2s  in 30 out ?  finish tool_calls"
            ),
            "{text}"
        );
        assert!(
            text.contains("tool call read_file {\"path\":\"a\"}"),
            "{text}"
        );
        assert!(text.contains("attempt 1  POST http://m/v1/chat/completions  429  12ms  4 chunks  error: the model API answered 429"), "{text}");
        let empty = Trace {
            task_id: TaskId::new(),
            runs: vec![],
        };
        assert!(timeline(&empty).contains("made no model calls"));
    }
}
