//! The web dashboard's HTTP side: the embedded page and its headers, the login that
//! turns the API token into a session cookie, what the cookie may and may not do, and
//! the figures its sparklines draw. (The page itself is driven in a real browser by
//! `.ci/dashboard-test`.)

use std::time::Duration;

use deputy_core::api::DaemonFigures;
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::{Value, json};

use crate::harness::*;

const TOKEN: &str = "correct-horse-battery-staple";

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_page_is_served_from_the_binary_under_a_strict_policy() {
    let d = TestDaemon::start(1).await;
    let url = d.url();
    let h = http();
    let page = h.get(format!("{url}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert!(page.text().await.unwrap().contains("/assets/app.js"));

    let js = h.get(format!("{url}/assets/app.js")).send().await.unwrap();
    assert_eq!(js.status(), 200);
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let etag = js.headers()["etag"].to_str().unwrap().to_string();
    let again = h
        .get(format!("{url}/assets/app.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert!(again.bytes().await.unwrap().is_empty());

    let missing = h.get(format!("{url}/assets/nope.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");

    // Without a token there is nothing to log in to.
    let login = h.get(format!("{url}/login")).send().await.unwrap();
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    assert_eq!(login.headers()["location"], "/");
    d.stop().await;
}

/// A login form post.
async fn log_in(h: &reqwest::Client, url: &str, form: &str) -> reqwest::Response {
    h.post(format!("{url}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_string())
        .send()
        .await
        .unwrap()
}

/// A request carrying a cookie and, optionally, the dashboard's header.
async fn with_cookie(
    req: reqwest::RequestBuilder,
    cookie: &str,
    dashboard_header: bool,
) -> reqwest::Response {
    let req = req.header("cookie", cookie);
    let req = if dashboard_header {
        req.header("x-deputy-dashboard", "1")
    } else {
        req
    };
    req.send().await.unwrap()
}

#[tokio::test]
async fn with_a_token_the_dashboard_logs_in_to_a_cookie_that_cannot_be_used_cross_site() {
    let d = TestDaemon::start_with(1, |c| c.api_token = Some(TOKEN.into())).await;
    let url = d.url();
    let h = http();
    let status = |path: &'static str| {
        let req = h.get(format!("{url}{path}"));
        async move { req.send().await.unwrap().status() }
    };

    // A person without a session is sent to the login form; the API still says 401.
    let page = h.get(format!("{url}/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(page.headers()["location"], "/login");
    assert_eq!(status("/v1/tasks").await, 401);
    // The login page and the assets are public: they reveal nothing.
    let form = h.get(format!("{url}/login")).send().await.unwrap();
    assert_eq!(form.status(), 200);
    assert!(form.text().await.unwrap().contains("name=\"token\""));
    assert_eq!(status("/assets/app.css").await, 200);

    // A wrong token is refused, with no cookie; a garbled form is a 400.
    let wrong = log_in(&h, &url, "token=wrong-token-of-some-length").await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let text = wrong.text().await.unwrap();
    assert!(text.contains("not this daemon's API token"), "{text}");
    assert_eq!(log_in(&h, &url, "nothing-useful").await.status(), 400);

    // The right one sets an HttpOnly, SameSite=Strict cookie that is not the token.
    let ok = log_in(&h, &url, &format!("token={TOKEN}")).await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert_eq!(ok.headers()["location"], "/");
    let set = ok.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(
        !set.contains(TOKEN),
        "the cookie must not carry the token: {set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();

    // The cookie reads...
    let page = with_cookie(h.get(format!("{url}/")), &cookie, false).await;
    assert_eq!(page.status(), 200);
    let list = with_cookie(h.get(format!("{url}/v1/tasks")), &cookie, false).await;
    assert_eq!(list.status(), 200);
    // ...but a change needs the dashboard's header as well, which a cross-site form
    // cannot send; with it the change goes through.
    let task = json!({"command": "true"});
    let refused = with_cookie(
        h.post(format!("{url}/v1/tasks")).json(&task),
        &cookie,
        false,
    )
    .await;
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("X-Deputy-Dashboard"), "{message}");
    let made = with_cookie(h.post(format!("{url}/v1/tasks")).json(&task), &cookie, true).await;
    assert_eq!(made.status(), 201);

    // Logging out clears the cookie.
    let out = h.post(format!("{url}/logout")).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let cleared = out.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    d.stop().await;
}

#[tokio::test]
async fn the_figures_count_finished_tasks_per_interval() {
    let d = TestDaemon::start_with(2, |c| c.figures_interval = Duration::from_millis(100)).await;
    let url = d.url();
    let h = http();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(d.client.submit(&sh("true")).await.unwrap().task.id);
    }
    for id in &ids {
        wait_done(&d.client, *id).await;
    }
    // Samples come on the daemon's timer, not on an event: read them until the interval
    // holding the last finish has been sampled (bounded by the deadline).
    let figures = tokio::time::timeout(DEADLINE, async {
        loop {
            let f: DaemonFigures = h
                .get(format!("{url}/v1/stats"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if f.samples.iter().map(|s| s.finished).sum::<u64>() >= 5 {
                return f;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the figures never counted the five finished tasks");
    assert_eq!(figures.interval_ms, 100);
    assert_eq!(figures.samples.iter().map(|s| s.finished).sum::<u64>(), 5);
    assert!(figures.samples.iter().all(|s| s.complete));
    // Each task wrote at least created, running, succeeded and finished events.
    assert!(figures.samples.iter().map(|s| s.events).sum::<u64>() >= 20);
    assert!(figures.samples.windows(2).all(|w| w[0].at <= w[1].at));
    d.stop().await;
}

#[tokio::test]
async fn the_event_stream_can_leave_out_types_the_page_does_not_show() {
    let d = TestDaemon::start(1).await;
    let url = d.url();
    let h = http();
    let t = d
        .client
        .submit(&sh("echo one; echo two >&2"))
        .await
        .unwrap()
        .task;
    wait_done(&d.client, t.id).await;

    // Replayed from the start with only status changes and ends: no output, no creation.
    let resp = h
        .get(format!(
            "{url}/v1/events?types=task.status,task.finished&last_event_id=0"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    tokio::time::timeout(DEADLINE, async {
        while !text.contains("event: task.finished") {
            let chunk = futures_util::StreamExt::next(&mut body)
                .await
                .unwrap()
                .unwrap();
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .expect("the filtered stream never sent the task's end");
    let types: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        types,
        ["task.status", "task.status", "task.finished"],
        "{text}"
    );

    // Unknown types are refused with the list of known ones; a task's stream has no filter.
    let bad = h
        .get(format!("{url}/v1/events?types=task.exploded"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("task.exploded") && message.contains("task.output"),
        "{message}"
    );
    let on_task = h
        .get(format!("{url}/v1/tasks/{}/events?types=task.status", t.id))
        .send()
        .await
        .unwrap();
    assert_eq!(on_task.status(), 400);
    d.stop().await;
}
