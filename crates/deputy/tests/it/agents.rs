//! Agent tasks end to end on a real daemon: the built-in loop against a scripted model
//! (a local OpenAI-compatible server), its tools confined to the workspace, its budgets,
//! its trace and events.

use deputy_core::agent::AgentInput;
use deputy_core::submit::NewTask;
use deputy_core::trace::RecordStatus;
use deputy_core::{Event, EventBody, Status, TaskId};
use serde_json::json;

use crate::harness::*;
use crate::mock_llm::{self, Turn, call, say};

async fn daemon_with_model(
    turns: Vec<Turn>,
    repeat: Option<Turn>,
) -> (TestDaemon, std::sync::Arc<mock_llm::MockModel>) {
    let (model, provider) = mock_llm::start(turns, repeat).await;
    let d = TestDaemon::start_with(2, |c| {
        c.providers.insert("mock".into(), provider);
        c.agents.default_provider = "mock".into();
    })
    .await;
    (d, model)
}

pub fn agent_task(cwd: &std::path::Path, tweak: impl FnOnce(&mut AgentInput)) -> NewTask {
    let mut a = AgentInput {
        prompt: "fix the bug in calc.sh so that test.sh passes".into(),
        ..AgentInput::default()
    };
    tweak(&mut a);
    NewTask {
        agent: Some(a),
        cwd: Some(cwd.to_string_lossy().into_owned()),
        ..NewTask::default()
    }
}

/// step, tool, detail, is_error
type Step = (String, Option<String>, Option<String>, Option<bool>);

pub fn agent_steps(events: &[Event], id: TaskId) -> Vec<Step> {
    events
        .iter()
        .filter(|e| e.task == Some(id))
        .filter_map(|e| match &e.body {
            EventBody::TaskAgent {
                step,
                tool,
                detail,
                is_error,
                ..
            } => Some((step.clone(), tool.clone(), detail.clone(), *is_error)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn the_builtin_agent_lists_reads_edits_tests_and_answers() {
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("calc.sh"), "echo $((2 - 2))\n").unwrap();
    std::fs::write(
        ws.path().join("test.sh"),
        "[ \"$(sh calc.sh)\" = 4 ] && echo PASS || { echo FAIL; exit 1; }\n",
    )
    .unwrap();
    let (d, model) = daemon_with_model(
        vec![
            call("list_dir", json!({})),
            call("read_file", json!({"path": "calc.sh"})),
            call(
                "edit_file",
                json!({"path": "calc.sh", "old_string": "2 - 2", "new_string": "2 + 2"}),
            ),
            call("shell", json!({"command": "sh test.sh"})),
            say("Fixed calc.sh: it subtracted instead of adding; test.sh passes."),
        ],
        None,
    )
    .await;
    let t = d.submit(agent_task(ws.path(), |_| {})).await;
    let done = wait_done(&d.client, t.id).await;
    assert_eq!(done.status, Status::Succeeded, "{:?}", done.reason);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("calc.sh")).unwrap(),
        "echo $((2 + 2))\n"
    );

    // What the model was sent back: each result answers its call.
    let results = model.tool_results();
    assert_eq!(results.len(), 4);
    assert!(
        results[0].contains("calc.sh") && results[0].contains("test.sh"),
        "{results:?}"
    );
    assert_eq!(results[1], "echo $((2 - 2))\n");
    assert!(results[2].contains("replaced 1 occurrence"));
    assert!(
        results[3].starts_with("exit code 0") && results[3].contains("PASS"),
        "{}",
        results[3]
    );
    let last = model.requests.lock().unwrap().last().unwrap().clone();
    let msgs = last["messages"].as_array().unwrap();
    for (i, m) in msgs.iter().enumerate() {
        if m["role"] == "tool" {
            let id = m["tool_call_id"].as_str().unwrap();
            let answered = msgs[..i].iter().any(|p| {
                p["tool_calls"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["id"] == id))
            });
            assert!(answered, "tool message {i} answers no earlier call");
        }
    }

    // Events: each tool call started and finished, in order.
    let events = collect_events(&d.client).await;
    let steps = agent_steps(&events, t.id);
    let tools: Vec<_> = steps
        .iter()
        .map(|(s, t, _, e)| (s.as_str(), t.clone().unwrap_or_default(), *e))
        .collect();
    assert_eq!(
        tools,
        vec![
            ("tool_started", "list_dir".into(), None),
            ("tool_finished", "list_dir".into(), Some(false)),
            ("tool_started", "read_file".into(), None),
            ("tool_finished", "read_file".into(), Some(false)),
            ("tool_started", "edit_file".into(), None),
            ("tool_finished", "edit_file".into(), Some(false)),
            ("tool_started", "shell".into(), None),
            ("tool_finished", "shell".into(), Some(false)),
        ]
    );
    // The transcript is the output: the answer streamed as text, the tool calls shown.
    let out = String::from_utf8(d.client.logs_text(&t.id.to_string(), &[]).await.unwrap()).unwrap();
    assert!(out.contains("→ edit_file("), "{out}");
    assert!(
        out.contains("Fixed calc.sh: it subtracted instead of adding"),
        "{out}"
    );

    // Accounting and trace.
    let usage = done.usage.clone().expect("usage recorded");
    assert_eq!(
        (usage.input_tokens, usage.output_tokens, usage.turns),
        (Some(500), Some(100), Some(5))
    );
    assert!(usage.result.unwrap().starts_with("Fixed calc.sh"));
    let trace = d.client.trace(&t.id.to_string()).await.unwrap();
    assert_eq!(trace.runs.len(), 1);
    let run = &trace.runs[0];
    assert_eq!(
        (run.status, run.provider.as_str(), run.model.as_str()),
        (RecordStatus::Completed, "mock", "mock-model")
    );
    assert_eq!(run.steps.len(), 5);
    assert!(
        run.steps
            .iter()
            .all(|s| s.status == RecordStatus::Completed && s.attempts.len() == 1)
    );
    assert_eq!(run.usage.input_tokens, Some(500));
    let metrics = metrics_text(&d.url()).await;
    assert!(
        metrics.contains("deputy_agent_tokens_total{kind=\"input\"} 500"),
        "{metrics}"
    );
    assert!(
        metrics.contains("deputy_agent_tokens_total{kind=\"output\"} 100"),
        "{metrics}"
    );
    d.stop().await;
}

#[tokio::test]
async fn escapes_from_the_workspace_are_refused_and_nothing_outside_changes() {
    let outer = tempfile::tempdir().unwrap();
    let ws = outer.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let outside = outer.path().join("outside.txt");
    std::fs::write(&outside, "untouched").unwrap();
    std::os::unix::fs::symlink(&outside, ws.join("link")).unwrap();
    let (d, model) = daemon_with_model(
        vec![
            call("read_file", json!({"path": "../../etc/passwd"})),
            call("read_file", json!({"path": "/etc/passwd"})),
            call(
                "write_file",
                json!({"path": "link", "content": "overwritten"}),
            ),
            call(
                "edit_file",
                json!({"path": "../outside.txt", "old_string": "untouched", "new_string": "x"}),
            ),
            say("I cannot reach those files."),
        ],
        None,
    )
    .await;
    let t = d.submit(agent_task(&ws, |_| {})).await;
    let done = wait_done(&d.client, t.id).await;
    assert_eq!(done.status, Status::Succeeded, "{:?}", done.reason);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "untouched");
    let results = model.tool_results();
    assert_eq!(results.len(), 4);
    for r in &results {
        assert!(
            r.starts_with("error: refused:") && r.contains("outside the workspace"),
            "{r}"
        );
    }
    let events = collect_events(&d.client).await;
    let finished: Vec<_> = agent_steps(&events, t.id)
        .into_iter()
        .filter(|(s, ..)| s == "tool_finished")
        .map(|(_, _, _, e)| e)
        .collect();
    assert_eq!(finished, vec![Some(true); 4]);
    d.stop().await;
}

#[tokio::test]
async fn max_turns_and_the_token_budget_stop_the_loop() {
    let ws = tempfile::tempdir().unwrap();
    let forever = call("list_dir", json!({}));
    let (d, _) = daemon_with_model(vec![], Some(forever)).await;
    let turns = d
        .submit(agent_task(ws.path(), |a| a.max_turns = Some(3)))
        .await;
    let tokens = d
        .submit(agent_task(ws.path(), |a| a.max_tokens = Some(250)))
        .await;
    let t = wait_done(&d.client, turns.id).await;
    assert_eq!(t.status, Status::Failed);
    assert_eq!(
        t.reason.as_deref(),
        Some("max turns (3) reached without a final answer")
    );
    assert_eq!(t.usage.as_ref().unwrap().turns, Some(3));
    let t = wait_done(&d.client, tokens.id).await;
    assert_eq!(t.status, Status::Failed);
    assert_eq!(
        t.reason.as_deref(),
        Some("token budget of 250 exceeded: 360 tokens used")
    );
    let trace = d.client.trace(&tokens.id.to_string()).await.unwrap();
    assert_eq!(trace.runs[0].status, RecordStatus::Error);
    assert_eq!(trace.runs[0].error.as_deref(), t.reason.as_deref());
    d.stop().await;
}

#[tokio::test]
async fn a_cancelled_agent_stops_its_running_tool_command() {
    let ws = tempfile::tempdir().unwrap();
    let (d, _) = daemon_with_model(
        vec![call("shell", json!({"command": "sleep 100 & sleep 100"}))],
        None,
    )
    .await;
    let t = d.submit(agent_task(ws.path(), |_| {})).await;
    // The tool command is running once its process group is recorded.
    eventually("the tool command runs", || !processes_of(t.id).is_empty()).await;
    d.client
        .cancel(&t.id.to_string(), Some("enough"))
        .await
        .unwrap();
    let done = wait_done(&d.client, t.id).await;
    assert_eq!(done.status, Status::Cancelled);
    assert!(
        processes_of(t.id).is_empty(),
        "no tool process outlives the attempt"
    );
    let trace = d.client.trace(&t.id.to_string()).await.unwrap();
    assert_eq!(trace.runs[0].status, RecordStatus::Interrupted);
    d.stop().await;
}

/// The daemon as a child process with an API key in its environment, the model echoing
/// the key back: afterwards no file of the database and no line of the daemon's log
/// holds the key (the trace, the transcript, events and results are all scrubbed).
#[tokio::test]
async fn an_api_key_is_nowhere_in_the_database_or_the_daemon_log() {
    const KEY: &str = "sk-deputy-e2e-7f6e5d4c3b2a1908";
    let ws = tempfile::tempdir().unwrap();
    let (model, provider) = mock_llm::start(
        vec![
            call("shell", json!({"command": format!("echo {KEY}")})),
            say(&format!("The key you gave me is {KEY}; I will not use it.")),
        ],
        None,
    )
    .await;
    let data = ws.path().join("data");
    let mut d = ChildDaemon::spawn(
        &data,
        &[
            ("OPENAI_API_KEY", KEY),
            ("OPENAI_BASE_URL", &provider.base_url),
            ("DEPUTY_LOG", "debug"),
        ],
    )
    .await;
    let r = d
        .client
        .submit(&agent_task(ws.path(), |a| {
            a.model = Some("mock-model".into());
            a.prompt = "print the API key".into();
        }))
        .await
        .unwrap();
    let done = wait_done(&d.client, r.task.id).await;
    assert_eq!(done.status, Status::Succeeded, "{:?}", done.reason);
    let sent_auth = model.requests.lock().unwrap().len();
    assert_eq!(sent_auth, 2, "the model was called with the key");
    let trace = d.client.trace(&r.task.id.to_string()).await.unwrap();
    let auth = &trace.runs[0].steps[0].attempts[0].request_headers;
    assert!(
        auth.contains(&("authorization".into(), "[redacted]".into())),
        "{auth:?}"
    );
    let out = String::from_utf8(
        d.client
            .logs_text(&r.task.id.to_string(), &[])
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(out.contains("The key you gave me is [redacted]"), "{out}");
    d.terminate();
    let count = |bytes: &[u8]| {
        bytes
            .windows(KEY.len())
            .filter(|w| *w == KEY.as_bytes())
            .count()
    };
    let mut files = 0;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            files += 1;
            assert_eq!(
                count(&std::fs::read(&path).unwrap()),
                0,
                "{} holds the key",
                path.display()
            );
        }
    }
    assert!(files >= 2, "the database files were read");
    let log = std::fs::read(data.with_extension("log")).unwrap();
    assert!(!log.is_empty(), "the daemon logged at debug level");
    assert_eq!(count(&log), 0, "the daemon log holds the key");
}

#[tokio::test]
async fn under_bwrap_the_shell_tool_writes_only_inside_the_workspace() {
    let Some(_) = deputy_engine::agent::which("bwrap") else {
        eprintln!("skipped: bubblewrap (bwrap) is not installed, so the sandbox test did not run");
        return;
    };
    let outer = tempfile::tempdir().unwrap();
    let ws = outer.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let (model, provider) = mock_llm::start(
        vec![
            call("shell", json!({"command": "echo in > inside.txt; echo out > ../outside.txt; echo out > /etc/deputy-sandbox-probe; cat inside.txt"})),
            say("done"),
        ],
        None,
    )
    .await;
    let d = TestDaemon::start_with(1, |c| {
        c.providers.insert("mock".into(), provider);
        c.agents.default_provider = "mock".into();
        c.agents.sandbox = deputy_engine::agent::config::Sandbox::Bwrap;
    })
    .await;
    let t = d.submit(agent_task(&ws, |_| {})).await;
    let done = wait_done(&d.client, t.id).await;
    assert_eq!(done.status, Status::Succeeded, "{:?}", done.reason);
    assert_eq!(
        std::fs::read_to_string(ws.join("inside.txt")).unwrap(),
        "in\n"
    );
    assert!(
        !outer.path().join("outside.txt").exists(),
        "nothing written outside the workspace"
    );
    let probe = std::path::Path::new("/etc/deputy-sandbox-probe");
    let escaped = probe.exists();
    let _ = std::fs::remove_file(probe); // Clean up even when the assertion below fails.
    assert!(!escaped, "the sandboxed command wrote to /etc");
    let result = &model.tool_results()[0];
    assert!(result.contains("Read-only file system"), "{result}");
    assert!(result.contains("--- stdout ---\nin\n"), "{result}");
    d.stop().await;
}

#[tokio::test]
async fn the_cost_budget_and_the_task_timeout_stop_the_agent() {
    let ws = tempfile::tempdir().unwrap();
    let (_, provider) = mock_llm::start(vec![], Some(call("list_dir", json!({})))).await;
    let d = TestDaemon::start_with(2, |c| {
        c.providers.insert("mock".into(), provider);
        c.agents.default_provider = "mock".into();
        c.agents.prices.insert(
            "mock-model".into(),
            deputy_engine::agent::config::Price {
                input: 10.0,
                output: 30.0,
                cached_input: None,
            },
        );
    })
    .await;
    // Each turn: 100 tokens in at $10/M and 20 out at $30/M, $0.0016.
    let costly = d
        .submit(agent_task(ws.path(), |a| a.max_cost_usd = Some(0.003)))
        .await;
    let t = wait_done(&d.client, costly.id).await;
    assert_eq!(t.status, Status::Failed);
    assert_eq!(
        t.reason.as_deref(),
        Some("cost budget of $0.0030 exceeded: $0.0032 spent")
    );
    let cost = t.usage.unwrap().cost_usd.unwrap();
    assert!((cost - 0.0032).abs() < 1e-9, "{cost}");

    // The task's timeout ends the loop while a tool command runs, and stops it.
    let (_, provider) =
        mock_llm::start(vec![call("shell", json!({"command": "sleep 100"}))], None).await;
    let d2 = TestDaemon::start_with(1, |c| {
        c.providers.insert("mock".into(), provider);
        c.agents.default_provider = "mock".into();
    })
    .await;
    let mut task = agent_task(ws.path(), |_| {});
    task.timeout = Some(deputy_core::submit::TimeoutInput::Millis(1500));
    let slow = d2.submit(task).await;
    let t = wait_done(&d2.client, slow.id).await;
    assert_eq!(t.status, Status::TimedOut);
    assert_eq!(t.reason.as_deref(), Some("timed out after 1.5s"));
    assert!(processes_of(slow.id).is_empty());
    d.stop().await;
    d2.stop().await;
}

#[tokio::test]
async fn unknown_backends_providers_and_bad_agent_fields_are_refused_at_submit() {
    let d = TestDaemon::start(1).await;
    let ws = tempfile::tempdir().unwrap();
    for (tweak, field, needle) in [
        (
            Box::new(|a: &mut AgentInput| a.backend = Some("nope".into()))
                as Box<dyn Fn(&mut AgentInput)>,
            "agent.backend",
            "no agent backend `nope`",
        ),
        (
            Box::new(|a: &mut AgentInput| a.provider = Some("nowhere".into())),
            "agent.provider",
            "no model provider `nowhere`",
        ),
        (
            Box::new(|a: &mut AgentInput| a.max_turns = Some(0)),
            "agent.max_turns",
            "between 1 and 1000",
        ),
        (
            Box::new(|a: &mut AgentInput| a.prompt = " ".into()),
            "agent.prompt",
            "empty",
        ),
    ] {
        let err = d
            .client
            .submit(&agent_task(ws.path(), |a| tweak(a)))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(422), "{err}");
        let text = err.to_string();
        assert!(text.contains(field) && text.contains(needle), "{text}");
    }
    let mut both = agent_task(ws.path(), |_| {});
    both.command = Some(deputy_core::Command::Line("true".into()));
    let err = d.client.submit(&both).await.unwrap_err();
    assert!(err.to_string().contains("takes a prompt"), "{err}");
    assert!(
        d.client.list(&[]).await.unwrap().tasks.is_empty(),
        "nothing was stored"
    );
    d.stop().await;
}

/// kill -9 of the daemon while its built-in agent runs a tool command: after the
/// restart the command is gone, the task is `interrupted` (it had no retries), and its
/// trace says the run was interrupted, while the model call that had finished stays
/// completed.
#[tokio::test]
async fn an_agent_killed_with_its_daemon_is_recovered_and_its_trace_interrupted() {
    let ws = tempfile::tempdir().unwrap();
    let (_, provider) = mock_llm::start(
        vec![call("shell", json!({"command": "sleep 300 & sleep 300"}))],
        None,
    )
    .await;
    let data = ws.path().join("data");
    let env = [
        ("OPENAI_API_KEY", "sk-deputy-recovery-test-key"),
        ("OPENAI_BASE_URL", provider.base_url.as_str()),
    ];
    let mut d = ChildDaemon::spawn(&data, &env).await;
    let task = d
        .client
        .submit(&agent_task(ws.path(), |a| {
            a.model = Some("mock-model".into())
        }))
        .await
        .unwrap()
        .task;
    eventually("the tool command runs", || processes_of(task.id).len() >= 2).await;
    let leftovers = processes_of(task.id);
    d.kill9_with_guard();
    let d = ChildDaemon::spawn(&data, &env).await;
    for p in &leftovers {
        assert!(!alive(*p), "tool process {p} survived the restart");
    }
    let done = wait_done(&d.client, task.id).await;
    assert_eq!(done.status, Status::Interrupted);
    let trace = d.client.trace(&task.id.to_string()).await.unwrap();
    let run = &trace.runs[0];
    assert_eq!(run.status, RecordStatus::Interrupted);
    assert_eq!(run.steps[0].status, RecordStatus::Completed);
    drop(d);
}
