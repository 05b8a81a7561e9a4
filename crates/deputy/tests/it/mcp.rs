//! The MCP server, driven by the official rmcp client: `deputy mcp` as a real
//! subprocess over stdio, and `/mcp` over streamable HTTP.

use std::collections::HashMap;
use std::time::Duration;

use deputy_core::Status;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::harness::*;

type McpClient = RunningService<RoleClient, ()>;

async fn stdio_client(url: &str, config_home: &std::path::Path) -> McpClient {
    let cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_deputy")).configure(|c| {
        c.args(["--url", url, "mcp"])
            .env_remove("DEPUTY_CONFIG")
            .env("XDG_CONFIG_HOME", config_home);
    });
    ().serve(TokioChildProcess::new(cmd).unwrap())
        .await
        .unwrap()
}

async fn http_client(url: &str) -> McpClient {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let transport = StreamableHttpClientTransport::from_uri(format!("{url}/mcp"));
    ().serve(transport).await.unwrap()
}

async fn call(c: &McpClient, tool: &'static str, args: Value) -> CallToolResult {
    let args = args.as_object().cloned().unwrap_or_default();
    tokio::time::timeout(
        DEADLINE,
        c.call_tool(CallToolRequestParams::new(tool).with_arguments(args)),
    )
    .await
    .expect("tool call timed out")
    .unwrap()
}

fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| c.as_text())
        .map(|t| t.text.clone())
        .collect()
}

fn json_of(r: &CallToolResult) -> Value {
    assert_ne!(r.is_error, Some(true), "tool error: {}", text(r));
    serde_json::from_str(&text(r)).unwrap()
}

fn assert_tool_error(r: &CallToolResult, needle: &str) {
    assert_eq!(
        r.is_error,
        Some(true),
        "expected a tool error, got {}",
        text(r)
    );
    assert!(
        text(r).contains(needle),
        "{:?} should mention {needle:?}",
        text(r)
    );
}

/// The whole sequence an agent would run, on any transport.
async fn delegate_wait_logs_cancel_retry(c: &McpClient, d: &TestDaemon) {
    let tools = c.list_tools(Default::default()).await.unwrap();
    let names: Vec<String> = tools.tools.iter().map(|t| t.name.to_string()).collect();
    for want in [
        "DelegateTask",
        "TaskStatus",
        "TaskLogs",
        "CancelTask",
        "RetryTask",
        "WaitForTask",
        "ListTasks",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    let delegate = tools
        .tools
        .iter()
        .find(|t| t.name == "DelegateTask")
        .unwrap();
    assert!(delegate.description.as_deref().unwrap_or("").len() > 40);
    assert!(
        serde_json::to_string(&delegate.input_schema)
            .unwrap()
            .contains("workingDirectory")
    );

    let r = json_of(
        &call(
            c,
            "DelegateTask",
            json!({"command": "echo hello-from-mcp", "priority": "P1", "labels": ["mcp"]}),
        )
        .await,
    );
    let id = r["taskId"].as_str().unwrap().to_string();
    let waited = json_of(&call(c, "WaitForTask", json!({"taskId": id, "timeout": 30})).await);
    assert_eq!(waited["finished"], true);
    assert_eq!(waited["status"], "succeeded");
    let logs = call(c, "TaskLogs", json!({"taskId": id})).await;
    assert_eq!(text(&logs), "hello-from-mcp\n");
    let status = json_of(&call(c, "TaskStatus", json!({"taskId": &id[..10]})).await);
    assert_eq!(status["status"], "succeeded");
    let listed = json_of(&call(c, "ListTasks", json!({"status": "succeeded"})).await);
    assert!(
        listed["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["taskId"] == id.as_str())
    );

    let long = json_of(&call(c, "DelegateTask", json!({"command": "sleep 100"})).await);
    let long_id = long["taskId"].as_str().unwrap().to_string();
    wait_status(&d.client, long_id.parse().unwrap(), Status::Running).await;
    let cancelled = json_of(
        &call(
            c,
            "CancelTask",
            json!({"taskId": long_id, "reason": "not needed"}),
        )
        .await,
    );
    assert_eq!(cancelled["result"], "requested");
    let waited = json_of(&call(c, "WaitForTask", json!({"taskId": long_id, "timeout": 30})).await);
    assert_eq!(waited["status"], "cancelled");

    let failing = json_of(&call(c, "DelegateTask", json!({"command": "exit 3"})).await);
    let failing_id = failing["taskId"].as_str().unwrap().to_string();
    let waited = json_of(&call(c, "WaitForTask", json!({"taskId": failing_id})).await);
    assert_eq!(
        (waited["status"].as_str(), waited["exitCode"].as_i64()),
        (Some("failed"), Some(3))
    );
    let retried = json_of(&call(c, "RetryTask", json!({"taskId": failing_id})).await);
    assert_eq!(retried["attempt"], 2);

    // Bad input: a tool error with a message, and the next call still works.
    assert_tool_error(&call(c, "DelegateTask", json!({})).await, "command");
    assert_tool_error(
        &call(c, "DelegateTask", json!({"kind": "agent"})).await,
        "needs a `prompt`",
    );
    assert_tool_error(
        &call(
            c,
            "DelegateTask",
            json!({"prompt": "go on", "backend": "claude", "continueFrom": failing_id}),
        )
        .await,
        "no agent session",
    );
    // An agent task: a prompt (here for the `generic` CLI backend, which runs it).
    let agent = json_of(
        &call(
            c,
            "DelegateTask",
            json!({"prompt": "echo agent done", "backend": "generic", "name": "agent"}),
        )
        .await,
    );
    let waited = json_of(&call(c, "WaitForTask", json!({"taskId": agent["taskId"]})).await);
    assert_eq!(waited["status"], "succeeded", "{waited}");
    assert_tool_error(
        &call(
            c,
            "DelegateTask",
            json!({"command": "true", "priority": "P9"}),
        )
        .await,
        "not a priority",
    );
    assert_tool_error(
        &call(c, "DelegateTask", json!({"command": "true", "timeout": -5})).await,
        "timeout",
    );
    assert_tool_error(
        &call(c, "TaskStatus", json!({"taskId": "ffffffffffffffff"})).await,
        "no task",
    );
    assert_tool_error(
        &call(c, "CancelTask", json!({"taskId": "nope"})).await,
        "not a task id",
    );
    assert!(c.list_tools(Default::default()).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_stdio_with_the_official_client() {
    let d = TestDaemon::start(2).await;
    let c = stdio_client(&d.url(), d.dir.path()).await;
    delegate_wait_logs_cancel_retry(&c, &d).await;
    c.cancel().await.unwrap();
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_streamable_http_with_the_official_client() {
    let d = TestDaemon::start(2).await;
    let c = http_client(&d.url()).await;
    delegate_wait_logs_cancel_retry(&c, &d).await;
    c.cancel().await.unwrap();
    d.stop().await;
}

/// Runs `deputy mcp` as a raw subprocess (debug logging on), writes `requests` as JSON
/// lines, and reads stdout until `answers` responses arrived. Every stdout line must be
/// JSON-RPC: logs go to stderr.
async fn raw_exchange(d: &TestDaemon, requests: &[Value], answers: usize) -> HashMap<i64, Value> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_deputy"))
        .args(["--url", &d.url(), "mcp"])
        .env("XDG_CONFIG_HOME", d.dir.path())
        .env_remove("DEPUTY_CONFIG")
        .env("DEPUTY_LOG", "debug")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for r in requests {
        stdin.write_all(format!("{r}\n").as_bytes()).await.unwrap();
    }
    stdin.flush().await.unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut answered = HashMap::new();
    tokio::time::timeout(DEADLINE, async {
        while answered.len() < answers {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("stdout closed early");
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not JSON-RPC: {line:?} ({e})"));
            assert_eq!(v["jsonrpc"], "2.0", "{line}");
            if let Some(id) = v.get("id").and_then(Value::as_i64) {
                answered.insert(id, v);
            }
        }
    })
    .await
    .expect("every request was answered");
    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_carries_only_the_protocol_for_both_client_generations() {
    let d = TestDaemon::start(1).await;
    let answered = raw_exchange(
        &d,
        &[
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
            json!({"jsonrpc": "2.0", "id": 2, "method": "no/such/method"}),
            json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "DelegateTask", "arguments": {"command": "echo raw"}}}),
        ],
        4,
    )
    .await;
    assert!(
        answered[&0]["result"]["serverInfo"]["name"] == "deputy",
        "id 0 is a valid request id"
    );
    assert_eq!(answered[&2]["error"]["code"], -32601);
    assert_eq!(answered[&3]["result"]["isError"], false);

    // A newer-generation client probes with `server/discover` and never initializes.
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}});
    let got = raw_exchange(
        &d,
        &[
            json!({"jsonrpc": "2.0", "id": 0, "method": "server/discover", "params": {"_meta": meta}}),
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "ListTasks", "arguments": {}, "_meta": meta}}),
        ],
        2,
    )
    .await;
    assert!(
        got[&0]["result"]["supportedVersions"]
            .as_array()
            .is_some_and(|v| !v.is_empty()),
        "{}",
        got[&0]
    );
    assert_eq!(got[&1]["result"]["isError"], false, "{}", got[&1]);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_daemon_deputy_mcp_starts_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_deputy")).configure(|c| {
        c.arg("--data-dir")
            .arg(&data)
            .arg("mcp")
            .env_remove("DEPUTY_URL")
            .env_remove("DEPUTY_CONFIG")
            .env("XDG_CONFIG_HOME", dir.path())
            .env("DEPUTY_MIN_FREE_MEMORY", "off")
            .env("DEPUTY_MAX_CPU_PERCENT", "off");
    });
    let c: McpClient = ().serve(TokioChildProcess::new(cmd).unwrap()).await.unwrap();
    let r = json_of(
        &call(
            &c,
            "DelegateTask",
            json!({"command": "echo started-for-you"}),
        )
        .await,
    );
    let id = r["taskId"].as_str().unwrap().to_string();
    let waited = json_of(&call(&c, "WaitForTask", json!({"taskId": id, "timeout": 30})).await);
    assert_eq!(waited["status"], "succeeded");
    c.cancel().await.unwrap();
    let info =
        deputy_server::daemon::read_info(&data).expect("a daemon was started for the data dir");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(info.pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    eventually("the started daemon to stop", || !alive(info.pid as i32)).await;
}

/// Records what the server tells the client on its own.
#[derive(Clone, Default)]
struct Recorder {
    updated: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    progress: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl rmcp::ClientHandler for Recorder {
    async fn on_resource_updated(
        &self,
        params: rmcp::model::ResourceUpdatedNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        self.updated.lock().unwrap().push(params.uri);
    }

    async fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        self.progress
            .lock()
            .unwrap()
            .push(params.message.unwrap_or_default());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_resources_and_subscribers_hear_about_new_output() {
    let d = TestDaemon::start(2).await;
    let cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_deputy")).configure(|c| {
        c.args(["--url", &d.url(), "mcp"])
            .env_remove("DEPUTY_CONFIG")
            .env("XDG_CONFIG_HOME", d.dir.path());
    });
    let recorder = Recorder::default();
    let c = recorder
        .clone()
        .serve(TokioChildProcess::new(cmd).unwrap())
        .await
        .unwrap();

    d.client.pause(None).await.unwrap();
    let t = d
        .submit(sh(
            "for i in 1 2 3 4 5; do echo \"tick $i\"; sleep 0.1; done",
        ))
        .await;
    let uri = format!("deputy://tasks/{}/logs", t.id);
    let listed = c.list_resources(Default::default()).await.unwrap();
    assert!(
        listed.resources.iter().any(|r| r.uri == uri),
        "the task's logs are listed"
    );
    let templates = c.list_resource_templates(Default::default()).await.unwrap();
    assert_eq!(
        templates.resource_templates[0].uri_template,
        "deputy://tasks/{id}/logs"
    );

    // resources/subscribe is what current clients (protocol 2025-xx) send; 2026-07-28
    // replaces it with subscriptions/listen, which deputy does not serve yet.
    #[allow(deprecated)]
    c.subscribe(rmcp::model::SubscribeRequestParams::new(uri.clone()))
        .await
        .unwrap();
    // Progress notifications while waiting, when the client asks for them.
    let handle = c
        .send_cancellable_request(
            rmcp::model::ClientRequest::CallToolRequest(rmcp::model::Request::new(
                CallToolRequestParams::new("WaitForTask").with_arguments(
                    json!({"taskId": t.id.to_string(), "timeout": 30})
                        .as_object()
                        .cloned()
                        .unwrap(),
                ),
            )),
            rmcp::service::PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    d.client.resume(None).await.unwrap();
    let response = tokio::time::timeout(DEADLINE, handle.await_response())
        .await
        .unwrap()
        .unwrap();
    let rmcp::model::ServerResult::CallToolResult(result) = response else {
        panic!("unexpected response {response:?}")
    };
    assert_eq!(json_of(&result)["status"], "succeeded");
    eventually("resource-updated notifications for the output", || {
        recorder
            .updated
            .lock()
            .unwrap()
            .iter()
            .filter(|u| **u == uri)
            .count()
            >= 2
    })
    .await;
    assert!(
        recorder
            .progress
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.contains("running")),
        "progress: {:?}",
        recorder.progress.lock().unwrap()
    );
    let read = c
        .read_resource(rmcp::model::ReadResourceRequestParams::new(uri.clone()))
        .await
        .unwrap();
    let body = serde_json::to_string(&read).unwrap();
    assert!(body.contains("tick 5"), "{body}");
    c.cancel().await.unwrap();
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_create_list_and_remove_schedules_over_mcp() {
    let d = TestDaemon::start(2).await;
    let c = http_client(&d.url()).await;
    let tools = c.list_tools(Default::default()).await.unwrap();
    for name in ["ScheduleTask", "ListSchedules", "RemoveSchedule"] {
        assert!(tools.tools.iter().any(|t| t.name == name), "{name} missing");
    }
    let made = json_of(
        &call(
            &c,
            "ScheduleTask",
            json!({"name": "pulse", "every": "1s", "overlap": "allow", "command": "echo pulse"}),
        )
        .await,
    );
    assert_eq!(made["name"], "pulse");
    assert_eq!(made["upcoming"].as_array().unwrap().len(), 5);
    let (tasks, _) = crate::schedules::wait_fired(&d.client, "pulse", 0, 1).await;
    let t = wait_done(&d.client, tasks[0]).await;
    assert_eq!(t.status, Status::Succeeded);
    let listed = json_of(&call(&c, "ListSchedules", json!({})).await);
    let pulse = &listed.as_array().unwrap()[0];
    assert_eq!(pulse["name"], "pulse");
    assert!(pulse["fired"].as_u64().unwrap() >= 1);
    // Bad input is a tool error a model can act on; nothing is stored.
    assert_tool_error(
        &call(
            &c,
            "ScheduleTask",
            json!({"name": "bad", "cron": "99 * * * *", "command": "true"}),
        )
        .await,
        "is not a cron pattern",
    );
    assert_tool_error(
        &call(
            &c,
            "ScheduleTask",
            json!({"cron": "0 2 * * *", "command": "true"}),
        )
        .await,
        "give the schedule a `name`",
    );
    assert_tool_error(
        &call(
            &c,
            "ScheduleTask",
            json!({"name": "tz", "cron": "0 2 * * *", "tz": "Nowhere/Land", "command": "true"}),
        )
        .await,
        "unknown time zone",
    );
    let removed = json_of(&call(&c, "RemoveSchedule", json!({"name": "pulse"})).await);
    assert_eq!(removed["removed"], "pulse");
    assert_tool_error(
        &call(&c, "RemoveSchedule", json!({"name": "pulse"})).await,
        "no schedule `pulse`",
    );
    assert!(d.client.schedules().await.unwrap().is_empty());
    c.cancel().await.unwrap();
    d.stop().await;
}

/// The 2026-07-28 protocol generation: the official client starts with
/// `server/discover` (no `initialize`) and follows a task's log over one
/// `subscriptions/listen` stream, which ends gracefully with the task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_protocol_follows_logs_over_subscriptions_listen() {
    use rmcp::model::{ProtocolVersion, SubscriptionFilter};
    use rmcp::service::{ClientLifecycleMode, ClientServiceExt, SubscriptionEnd};

    let d = TestDaemon::start(2).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let transport = StreamableHttpClientTransport::from_uri(format!("{}/mcp", d.url()));
    let c = ()
        .serve_with_lifecycle(
            transport,
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .unwrap();
    // The task prints, then waits on a FIFO the test writes once it heard of the output.
    let fifo = d.dir.path().join("go");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let task = d
        .submit(sh(&format!(
            "echo first; cat '{}' >/dev/null; echo second",
            fifo.display()
        )))
        .await;
    let uri = format!("deputy://tasks/{}/logs", task.id);
    let mut sub = c
        .peer()
        .listen(
            SubscriptionFilter::builder()
                .resource_subscription(uri.clone())
                .resource_subscription("deputy://tasks/not-an-id/logs")
                .resource_subscription("file:///etc/passwd")
                .build(),
        )
        .await
        .unwrap();
    assert_eq!(
        sub.acknowledged().resource_subscriptions,
        Some(vec![uri.clone()]),
        "only log resources with a task id are accepted"
    );
    assert_eq!(next_update(&mut sub).await.as_deref(), Some(uri.as_str()));
    let read = c
        .read_resource(rmcp::model::ReadResourceRequestParams::new(uri.clone()))
        .await
        .unwrap();
    assert!(format!("{read:?}").contains("first"));
    let writer = fifo.clone();
    tokio::task::spawn_blocking(move || std::fs::write(writer, b"go"))
        .await
        .unwrap()
        .unwrap();
    // More updates (the second chunk, the end), then the stream closes gracefully.
    let mut more = 0;
    while let Some(u) = next_update(&mut sub).await {
        assert_eq!(u, uri);
        more += 1;
    }
    assert!(more >= 1, "no update after the second line");
    assert!(
        matches!(sub.end(), Some(SubscriptionEnd::Graceful(_))),
        "the stream should end with its final result, got {:?}",
        sub.end()
    );
    let t = wait_done(&d.client, task.id).await;
    assert_eq!(t.status, Status::Succeeded);
    let read = c
        .read_resource(rmcp::model::ReadResourceRequestParams::new(uri))
        .await
        .unwrap();
    assert!(format!("{read:?}").contains("second"));
    c.cancel().await.unwrap();
    d.stop().await;
}

/// The next `notifications/resources/updated` URI on a subscription; None once it ended.
async fn next_update(sub: &mut rmcp::service::Subscription) -> Option<String> {
    match tokio::time::timeout(DEADLINE, sub.next())
        .await
        .expect("no notification within the deadline")
        .unwrap()
    {
        Some(rmcp::model::ServerNotification::ResourceUpdatedNotification(n)) => Some(n.params.uri),
        Some(other) => panic!("unexpected notification {other:?}"),
        None => None,
    }
}
