//! Bad input gets a clear error with the documented status, and nothing is stored.

use deputy_core::DepMode;
use deputy_core::submit::{DepInput, DepTarget, NewTask};
use serde_json::{Value, json};

use crate::harness::*;

async fn post(url: &str, body: Vec<u8>) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/tasks"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    (status, v)
}

async fn get(url: &str, path: &str) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::get(format!("{url}{path}")).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn assert_error(case: &str, got: (u16, Value), status: u16, needle: &str) {
    assert_eq!(got.0, status, "{case}: {}", got.1);
    let msg = got.1["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{case}: no error JSON: {}", got.1));
    assert!(got.1["error"]["code"].is_string(), "{case}");
    assert!(
        msg.contains(needle),
        "{case}: {msg:?} should mention {needle:?}"
    );
}

#[tokio::test]
async fn bad_submissions_are_rejected_and_nothing_is_stored() {
    let d = TestDaemon::start(1).await;
    let url = d.url();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "empty command",
            json!({"command": ""}).to_string().into(),
            422,
            "empty",
        ),
        (
            "no command",
            json!({"name": "x"}).to_string().into(),
            422,
            "command",
        ),
        (
            "negative timeout",
            json!({"command": "true", "timeout": -5}).to_string().into(),
            422,
            "positive",
        ),
        (
            "unknown dependency",
            json!({"command": "true", "depends_on": ["0123456789abcdef"]})
                .to_string()
                .into(),
            422,
            "no task",
        ),
        (
            "unknown group",
            json!({"command": "true", "group": "nope"})
                .to_string()
                .into(),
            422,
            "no group `nope`",
        ),
        ("invalid JSON", b"{\"command\": ".to_vec(), 400, ""),
        (
            "wrong type",
            json!({"command": "true", "max_attempts": "three"})
                .to_string()
                .into(),
            422,
            "max_attempts",
        ),
        (
            "unknown field",
            json!({"command": "true", "colour": "blue"})
                .to_string()
                .into(),
            422,
            "colour",
        ),
        (
            "bad priority",
            json!({"command": "true", "priority": "P9"})
                .to_string()
                .into(),
            422,
            "priority",
        ),
        (
            "10 MiB command line",
            json!({"command": "x".repeat(10 << 20)}).to_string().into(),
            413,
            "max_body",
        ),
    ];
    for (case, body, status, needle) in cases {
        assert_error(case, post(&url, body).await, status, needle);
    }
    // A 10 MiB command under a raised body limit is still refused, by validation.
    let big = TestDaemon::start_with(1, |c| c.max_body = 64 << 20).await;
    let long = json!({"command": "x".repeat(10 << 20)}).to_string().into();
    assert_error(
        "10 MiB command, big body limit",
        post(&big.url(), long).await,
        422,
        "too long",
    );
    assert!(big.client.list(&[]).await.unwrap().tasks.is_empty());
    big.stop().await;

    // A cycle via the client, for completeness of "nothing stored".
    let cyc = vec![NewTask {
        key: Some("a".into()),
        depends_on: vec![DepInput {
            target: DepTarget::Key("a".into()),
            mode: DepMode::Success,
        }],
        ..sh("true")
    }];
    assert_eq!(
        d.client.submit_batch(&cyc).await.unwrap_err().status(),
        Some(422)
    );
    assert!(
        d.client.list(&[]).await.unwrap().tasks.is_empty(),
        "nothing was stored"
    );
    assert_eq!(
        d.client.status().await.unwrap().last_event,
        0,
        "no event was written"
    );
    d.stop().await;
}

#[tokio::test]
async fn bad_ids_and_queries_get_clear_errors() {
    let d = TestDaemon::start(1).await;
    let url = d.url();
    assert_error(
        "malformed id",
        get(&url, "/v1/tasks/not-an-id").await,
        400,
        "not a task id",
    );
    assert_error(
        "short prefix",
        get(&url, "/v1/tasks/abc").await,
        400,
        "at least 8",
    );
    assert_error(
        "unknown id",
        get(&url, "/v1/tasks/0123456789abcdef").await,
        404,
        "no task",
    );
    assert_error(
        "negative limit",
        get(&url, "/v1/tasks?limit=-1").await,
        400,
        "limit",
    );
    assert_error(
        "bad status",
        get(&url, "/v1/tasks?status=sleeping").await,
        400,
        "not a status",
    );
    assert_error(
        "unknown query key",
        get(&url, "/v1/tasks?colour=blue").await,
        400,
        "colour",
    );
    assert_error(
        "unknown route",
        get(&url, "/v2/everything").await,
        404,
        "no such endpoint",
    );
    let t = d.submit(sh("true")).await;
    wait_done(&d.client, t.id).await;
    assert_error(
        "negative tail",
        get(&url, &format!("/v1/tasks/{}/logs?tail=-3", t.id)).await,
        400,
        "tail",
    );
    assert_error(
        "bad attempt",
        get(&url, &format!("/v1/tasks/{}/logs?attempt=7", t.id)).await,
        400,
        "attempts 1 to 1",
    );
    assert_error(
        "bad stream",
        get(&url, &format!("/v1/tasks/{}/logs?stream=stdin", t.id)).await,
        400,
        "stream",
    );
    d.stop().await;
}

/// What API fuzzing (`.ci/api-fuzz`, schemathesis) found, kept as cases: optional bodies
/// that are `null`, arrays or not JSON, a PATCH of a group that does not exist, and an
/// out-of-range `clean`. Every answer is the API's JSON error, never plain text.
#[tokio::test]
async fn optional_bodies_and_named_resources_answer_as_documented() {
    let d = TestDaemon::start(1).await;
    let url = d.url();
    let http = reqwest::Client::new();
    let send = |method: reqwest::Method, path: &str, ct: Option<&str>, body: &str| {
        let mut rb = http.request(method, format!("{url}{path}"));
        if let Some(ct) = ct {
            rb = rb.header("content-type", ct);
        }
        let rb = rb.body(body.to_string());
        async move {
            let resp = rb.send().await.unwrap();
            let status = resp.status().as_u16();
            let json = resp
                .headers()
                .get("content-type")
                .is_some_and(|v| v.to_str().unwrap().starts_with("application/json"));
            let text = resp.text().await.unwrap();
            (status, json, text)
        }
    };
    use reqwest::Method;
    const JSON: Option<&str> = Some("application/json");
    // `null` and an empty body both mean "no options".
    for body in ["null", "", "  "] {
        let (status, _, text) = send(Method::POST, "/v1/queue/pause", JSON, body).await;
        assert_eq!(status, 204, "{body:?}: {text}");
        let (status, _, _) = send(Method::POST, "/v1/queue/resume", JSON, body).await;
        assert_eq!(status, 204);
    }
    for (body, ct, status, needle) in [
        ("[]", JSON, 422, "must be a JSON object"),
        ("{\"group\": 1}", JSON, 422, "group"),
        ("{\"nope\": true}", JSON, 422, "unknown field"),
        ("{", JSON, 400, "bad_json"),
        (
            "{\"group\": \"default\"}",
            Some("text/plain"),
            415,
            "Content-Type: application/json",
        ),
    ] {
        let (got, json, text) = send(Method::POST, "/v1/queue/pause", ct, body).await;
        assert_eq!(got, status, "{body}: {text}");
        assert!(json, "{body}: the error is not JSON: {text}");
        assert!(text.contains(needle), "{body}: {text}");
    }
    let t = d.submit(sh("true")).await;
    wait_done(&d.client, t.id).await;
    let (status, json, text) = send(
        Method::POST,
        &format!("/v1/tasks/{}/retry", t.id),
        JSON,
        "[true]",
    )
    .await;
    assert_eq!((status, json), (422, true), "{text}");
    let (status, _, text) = send(
        Method::PATCH,
        "/v1/groups/nosuchgroup",
        JSON,
        "{\"parallel\": 2}",
    )
    .await;
    assert_eq!(status, 404, "{text}");
    assert!(text.contains("deputy group add nosuchgroup"), "{text}");
    let (status, _, text) = send(
        Method::POST,
        "/v1/clean",
        JSON,
        "{\"older_than_days\": 1e300}",
    )
    .await;
    assert_eq!(status, 422, "{text}");
    // The queue is not left paused by any of it.
    assert!(!d.client.status().await.unwrap().queue_paused);
}
