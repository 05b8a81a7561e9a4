//! The recorder's overhead per model call: streamed calls against a local mock
//! (40-chunk responses, a 6-message conversation), without a recorder and with one
//! writing into a real SQLite store, in alternating rounds of the same run.
//! Run with `cargo bench -p deputy-llm --bench recorder`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use deputy_core::trace::RecordStatus;
use deputy_llm::Message;
use deputy_llm::openai::client::{ChatRequest, OpenAiClient};
use deputy_llm::record::{RecordLimits, Recorder, RunRecorder, drain};
use deputy_store::Store;
use serde_json::json;

#[path = "../tests/common/mod.rs"]
mod common;

const ROUNDS: usize = 3;
const CALLS_PER_ROUND: usize = 600;

fn stream_body() -> String {
    let mut body = String::new();
    for i in 0..38 {
        let chunk = json!({"choices": [{"index": 0, "delta": {"content": format!("word{i} ")}}]});
        body.push_str(&format!("data: {chunk}\n\n"));
    }
    let end = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 300, "completion_tokens": 38}});
    body.push_str(&format!("data: {end}\n\ndata: [DONE]\n\n"));
    body
}

fn request() -> ChatRequest {
    let mut messages = vec![Message::System {
        content: "You are a careful engineer.".into(),
    }];
    for i in 0..5 {
        messages.push(Message::User {
            content: format!("Question {i}: {}", "context ".repeat(40)),
        });
    }
    ChatRequest {
        model: "m".into(),
        messages,
        tools: vec![],
        max_tokens: None,
    }
}

async fn round(c: &OpenAiClient, run: Option<&RunRecorder>) -> Duration {
    let req = request();
    let start = Instant::now();
    for _ in 0..CALLS_PER_ROUND {
        c.call(&req, true, &mut |_| {}, run).await.expect("a call");
    }
    start.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let body = Arc::new(stream_body());
    let slow_body = body.clone();
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(move || {
                let body = body.clone();
                async move { ([("content-type", "text/event-stream")], (*body).clone()) }
            }),
        )
        // The same answer after 20 ms, about the fastest a hosted model starts to answer.
        .route(
            "/slow/v1/chat/completions",
            post(move || {
                let body = slow_body.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    ([("content-type", "text/event-stream")], (*body).clone())
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = OpenAiClient::new(&url, Some("sk-bench-key-0123456789".into()));
    let slow_client = OpenAiClient::new(
        url.replace("/v1", "/slow/v1"),
        Some("sk-bench-key-0123456789".into()),
    );

    let rec = common::Recording::new().await;
    let (store, recorder, task) = (&rec.store, &rec.recorder, rec.task);
    let run = rec.run("openai").await;
    // The same recording work, with records dropped instead of written: what the call
    // path itself pays, apart from the database competing for the 2 cores.
    let (null_recorder, null_receiver) = Recorder::new(1024, RecordLimits::default());
    tokio::spawn(drain(null_receiver, async |_batch| Ok(())));
    let null_run = RunRecorder::start(&null_recorder, task, 1, "openai", "m").await;

    // Warm up both paths.
    round(&client, None).await;
    round(&client, Some(&run)).await;
    recorder.flush().await;

    let (mut off, mut on, mut on_flushed) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut no_db = Duration::ZERO;
    for _ in 0..ROUNDS {
        off += round(&client, None).await;
        no_db += round(&client, Some(&null_run)).await;
        let t = Instant::now();
        on += round(&client, Some(&run)).await;
        recorder.flush().await;
        on_flushed += t.elapsed();
    }
    // Against a model that takes 20 ms, fewer calls.
    let slow_round = async |run: Option<&RunRecorder>| {
        let req = request();
        let start = Instant::now();
        for _ in 0..50 {
            slow_client
                .call(&req, true, &mut |_| {}, run)
                .await
                .expect("a call");
        }
        start.elapsed()
    };
    let (mut slow_off, mut slow_on) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..2 {
        slow_off += slow_round(None).await;
        slow_on += slow_round(Some(&run)).await;
    }
    recorder.flush().await;
    run.finish(RecordStatus::Completed, None).await;
    let calls = (ROUNDS * CALLS_PER_ROUND) as f64;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / calls;
    let steps = store.trace(task).await.unwrap()[0].steps.len();
    println!("recorder overhead, {calls} streamed calls each way (40 chunks, 6 messages):");
    println!("  without recorder        {:8.1} µs/call", per(off));
    println!(
        "  with recorder           {:8.1} µs/call   ratio {:.3}",
        per(on),
        on.as_secs_f64() / off.as_secs_f64()
    );
    println!(
        "  recording, no database  {:8.1} µs/call   ratio {:.3}",
        per(no_db),
        no_db.as_secs_f64() / off.as_secs_f64()
    );
    println!(
        "  with recorder + flushed {:8.1} µs/call   ratio {:.3} (every record written)",
        per(on_flushed),
        on_flushed.as_secs_f64() / off.as_secs_f64()
    );
    println!(
        "  against a model that answers after 20 ms (100 calls each way): {:.2} ms/call without, {:.2} ms/call with, ratio {:.4}",
        slow_off.as_secs_f64() * 1e3 / 100.0,
        slow_on.as_secs_f64() * 1e3 / 100.0,
        slow_on.as_secs_f64() / slow_off.as_secs_f64()
    );
    println!(
        "  steps recorded: {steps}; failed records: {}",
        recorder
            .stats()
            .failed
            .load(std::sync::atomic::Ordering::Relaxed)
    );
}
