//! A task's model-call record over HTTP (`GET /v1/tasks/{id}/trace`) and through
//! `deputy trace`, text and `--json`. The records are written through the daemon's own
//! store, as its recorder writes them.

use deputy_core::trace::{LlmAttempt, LlmRecord, RecordStatus, Trace, Usage};
use tokio::process::Command;

use crate::harness::*;

fn attempt(number: u32, code: u16, error: Option<&str>) -> LlmAttempt {
    LlmAttempt {
        number,
        method: "POST".into(),
        url: "http://127.0.0.1:9/v1/chat/completions".into(),
        status_code: Some(code),
        request_headers: vec![("authorization".into(), "[redacted]".into())],
        request_body: Some("{\"model\":\"m\"}".into()),
        response_headers: vec![],
        response_body: None,
        chunks: vec!["{\"choices\":[]}".into()],
        chunks_omitted: 0,
        started_at: 1_000,
        duration_ms: 40,
        error: error.map(str::to_string),
    }
}

#[tokio::test]
async fn a_trace_is_served_over_http_and_shown_by_the_cli() {
    let d = TestDaemon::start(1).await;
    let task = d.submit(sh("true")).await;
    wait_done(&d.client, task.id).await;
    let empty = d.client.trace(&task.id.to_string()).await.unwrap();
    assert!(empty.runs.is_empty());

    let run = "0190f0a1b2c3d4e5f60718293a4b5c6d".to_string();
    let store = d.daemon.as_ref().unwrap().engine.store().clone();
    store
        .record_llm(&[
            LlmRecord::RunStarted {
                run_id: run.clone(),
                task_id: task.id,
                task_attempt: 1,
                provider: "openai".into(),
                model: "gpt-test".into(),
                started_at: 1_000,
            },
            LlmRecord::StepStarted {
                run_id: run.clone(),
                step: 1,
                operation: "stream".into(),
                request: "{\"model\":\"gpt-test\"}".into(),
                started_at: 1_000,
            },
            LlmRecord::Attempt {
                run_id: run.clone(),
                step: 1,
                attempt: attempt(1, 503, Some("the model API answered 503: busy")),
            },
            LlmRecord::Attempt {
                run_id: run.clone(),
                step: 1,
                attempt: attempt(2, 200, None),
            },
            LlmRecord::StepUpdated {
                run_id: run.clone(),
                step: 1,
                status: RecordStatus::Completed,
                error: None,
                response: Some(
                    "{\"finish_reason\":\"stop\",\"message\":{\"role\":\"assistant\",\"content\":\"all done\"}}"
                        .into(),
                ),
                usage: Some(Usage {
                    input_tokens: Some(12),
                    output_tokens: Some(3),
                    ..Usage::default()
                }),
                first_token_at: Some(1_300),
                ended_at: Some(1_900),
            },
            LlmRecord::RunEnded {
                run_id: run.clone(),
                status: RecordStatus::Completed,
                error: None,
                usage: Usage {
                    input_tokens: Some(12),
                    output_tokens: Some(3),
                    ..Usage::default()
                },
                ended_at: 2_000,
            },
        ])
        .await
        .unwrap();

    // By id prefix, over HTTP.
    let t = d.client.trace(&task.id.to_string()[..8]).await.unwrap();
    assert_eq!(t.task_id, task.id);
    assert_eq!(t.runs.len(), 1);
    let step = &t.runs[0].steps[0];
    assert_eq!(step.status, RecordStatus::Completed);
    assert_eq!(
        step.attempts
            .iter()
            .map(|a| a.status_code)
            .collect::<Vec<_>>(),
        vec![Some(503), Some(200)]
    );
    let missing = d.client.trace("ffffffffffffffffffffffffffffffff").await;
    assert!(missing.unwrap_err().to_string().contains("no task"));

    let cli = |args: Vec<String>| {
        let url = d.url();
        async move {
            Command::new(env!("CARGO_BIN_EXE_deputy"))
                .args(["--url", &url])
                .args(args)
                .env("DEPUTY_CONFIG", "/dev/null")
                .output()
                .await
                .unwrap()
        }
    };
    let out = cli(vec!["trace".into(), task.id.to_string()]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("openai/gpt-test  completed  1 steps  in 12 out 3"),
        "{text}"
    );
    assert!(text.contains("first token 0.3s"), "{text}");
    assert!(text.contains("says \"all done\""), "{text}");
    assert!(
        text.contains("503  40ms  1 chunks  error: the model API answered 503: busy"),
        "{text}"
    );
    let out = cli(vec!["trace".into(), "--json".into(), task.id.to_string()]).await;
    let parsed: Trace = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed, t);
    d.stop().await;
}
