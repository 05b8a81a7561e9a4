//! The HTTP API's surface: auth, endpoints, metrics.

use deputy_core::Status;
use deputy_core::submit::NewTask;
use serde_json::{Value, json};

use crate::harness::*;

const TOKEN: &str = "correct-horse-battery-staple";

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

#[tokio::test]
async fn with_a_token_every_request_needs_it() {
    let d = TestDaemon::start_with(1, |c| c.api_token = Some(TOKEN.into())).await;
    let url = d.url();
    let h = http();
    for path in [
        "/v1/tasks",
        "/v1/status",
        "/v1/groups",
        "/v1/events",
        "/metrics",
        "/v1/version",
    ] {
        let r = h.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without a token");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{path}");
        let r = h
            .get(format!("{url}{path}"))
            .bearer_auth("wrong-token-of-some-length")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} with a wrong token");
    }
    // The MCP endpoint is behind the same token.
    let r = h
        .post(format!("{url}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "/mcp without a token");
    // Health probes stay open.
    assert_eq!(
        h.get(format!("{url}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The client with the token does everything, streams included.
    let authed = deputy_client::Client::new(url.clone()).with_token(Some(TOKEN.into()));
    let t = authed.submit(&sh("echo secret-ok")).await.unwrap().task;
    assert_eq!(wait_done(&authed, t.id).await.status, Status::Succeeded);
    let unauthed = deputy_client::Client::new(url);
    assert_eq!(
        unauthed.get(&t.id.to_string()).await.unwrap_err().status(),
        Some(401)
    );
    d.stop().await;
}

#[tokio::test]
async fn listening_beyond_loopback_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = deputy_server::DaemonConfig::new(dir.path().join("data"));
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    let err = deputy_server::daemon::start(cfg.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("without an API token"), "{err}");
    cfg.api_token = Some("short".into());
    let err = deputy_server::daemon::start(cfg.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least 16"), "{err}");
    cfg.api_token = Some(TOKEN.into());
    let d = deputy_server::daemon::start(cfg).await.unwrap();
    d.stop().await;
}

#[tokio::test]
async fn every_endpoint_answers() {
    let d = TestDaemon::start(2).await;
    let url = d.url();
    let h = http();
    let get = |path: &str| {
        let h = h.clone();
        let u = format!("{url}{path}");
        async move { h.get(u).send().await.unwrap() }
    };
    assert_eq!(get("/healthz").await.text().await.unwrap(), "ok\n");
    assert_eq!(get("/readyz").await.text().await.unwrap(), "ready\n");
    let v: Value = get("/v1/version").await.json().await.unwrap();
    assert_eq!(v["name"], "deputy");
    let s: Value = get("/v1/status").await.json().await.unwrap();
    assert_eq!(s["parallel"], 2);
    let served = get("/v1/openapi.json").await.text().await.unwrap();
    assert_eq!(served, deputy_server::openapi::document());

    // Groups: create, conflict on a second create, update, list, bad limit.
    let r = h
        .post(format!("{url}/v1/groups"))
        .json(&json!({"name": "gpu", "parallel": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = h
        .post(format!("{url}/v1/groups"))
        .json(&json!({"name": "gpu"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = h
        .patch(format!("{url}/v1/groups/gpu"))
        .json(&json!({"parallel": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["parallel"], 3);
    let r = h
        .patch(format!("{url}/v1/groups/gpu"))
        .json(&json!({"parallel": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = h
        .patch(format!("{url}/v1/groups/nope"))
        .json(&json!({"parallel": 2}))
        .send()
        .await
        .unwrap();
    // The route names the group: a missing one is not found.
    assert_eq!(r.status(), 404);
    let groups: Value = get("/v1/groups").await.json().await.unwrap();
    assert_eq!(groups.as_array().unwrap().len(), 2);

    // Pause and resume, with and without a group.
    assert_eq!(
        h.post(format!("{url}/v1/queue/pause"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert!(d.client.status().await.unwrap().queue_paused);
    let t = d
        .submit(NewTask {
            group: Some("gpu".into()),
            ..sh("printf 'out-1\\nout-2\\n'; printf 'err-1\\n' >&2")
        })
        .await;
    assert_eq!(
        h.post(format!("{url}/v1/queue/resume"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let r = h
        .post(format!("{url}/v1/queue/pause"))
        .json(&json!({"group": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(wait_done(&d.client, t.id).await.status, Status::Succeeded);

    // Logs: text, JSON, per stream, tail, byte ranges.
    let logs = |q: &str| get(&format!("/v1/tasks/{}/logs{q}", t.id));
    assert_eq!(
        logs("?stream=stdout").await.text().await.unwrap(),
        "out-1\nout-2\n"
    );
    assert_eq!(
        logs("?stream=stderr").await.text().await.unwrap(),
        "err-1\n"
    );
    assert_eq!(
        logs("?stream=stdout&tail=1").await.text().await.unwrap(),
        "out-2\n"
    );
    assert_eq!(
        logs("?stream=stdout&from=4&max_bytes=5")
            .await
            .text()
            .await
            .unwrap(),
        "1\nout"
    );
    assert_eq!(logs("?from=4").await.status(), 400);
    let j: Value = logs("?format=json&stream=stdout")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(j["chunks"][0]["offset"], 0);
    assert_eq!(j["attempt"], 1);

    // List with filters and cursor pagination.
    for i in 0..5 {
        d.submit(NewTask {
            labels: vec!["page".into()],
            name: Some(format!("p{i}")),
            ..sh("true")
        })
        .await;
    }
    let page1: Value = get("/v1/tasks?label=page&limit=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page1["tasks"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"].as_i64().unwrap();
    let page2: Value = get(&format!("/v1/tasks?label=page&limit=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = page1["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["tasks"].as_array().unwrap())
        .map(|t| t["spec"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["p4", "p3", "p2", "p1"],
        "newest first, no overlap"
    );
    let searched: Value = get("/v1/tasks?q=out-1").await.json().await.unwrap();
    assert_eq!(searched["tasks"].as_array().unwrap().len(), 1);
    let by_status: Value = get("/v1/tasks?status=succeeded&group=gpu")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_status["tasks"].as_array().unwrap().len(), 1);

    // Clean: finished tasks older than 0 days go; validation first.
    let r = h
        .post(format!("{url}/v1/clean"))
        .json(&json!({"older_than_days": -1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r: Value = h
        .post(format!("{url}/v1/clean"))
        .json(&json!({"older_than_days": 0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["deleted"].as_u64().unwrap() >= 1);
    assert_eq!(get(&format!("/v1/tasks/{}", t.id)).await.status(), 404);
    d.stop().await;
}

#[tokio::test]
async fn metrics_describe_tasks_queues_events_streams_and_requests() {
    let d = TestDaemon::start(1).await;
    d.client.add_group("batch", Some(1)).await.unwrap();
    let ok = d.submit(sh("true")).await;
    let bad = d.submit(sh("exit 2")).await;
    wait_done(&d.client, ok.id).await;
    wait_done(&d.client, bad.id).await;
    d.client.pause(Some("batch")).await.unwrap();
    d.submit(NewTask {
        group: Some("batch".into()),
        ..sh("true")
    })
    .await;
    let text = metrics_text(&d.url()).await;
    let has = |needle: &str| {
        assert!(
            text.lines().any(|l| l.starts_with(needle)),
            "no `{needle}` in:\n{text}"
        )
    };
    has("deputy_tasks{status=\"succeeded\"} 1");
    has("deputy_tasks{status=\"failed\"} 1");
    has("deputy_queue_depth{group=\"batch\"} 1");
    has("deputy_running_tasks 0");
    has("deputy_task_duration_seconds_count{status=\"failed\"} 1");
    has("deputy_events_total");
    has("deputy_sse_subscribers");
    has("deputy_http_requests_total{method=\"POST\",route=\"/v1/tasks\",status=\"201\"} 3");
    has("deputy_http_request_duration_seconds_bucket{");
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no `{name}` in:\n{text}"))
    };
    // Three submits, two claims, two pgids, two finishes, a group, a pause at least.
    let (writes, batches) = (
        value("deputy_store_writes_total"),
        value("deputy_store_write_batches_total"),
    );
    assert!(writes >= 11, "{writes} writes");
    assert!(batches >= 1 && batches <= writes, "{batches} batches");
    d.stop().await;
}
