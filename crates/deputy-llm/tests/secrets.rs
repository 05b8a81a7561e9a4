//! A run with an API key leaves that key nowhere: not in the database (every file of
//! it, byte by byte), not in the trace, not in the logs. Its own test binary, so the
//! log subscriber it installs sees every callsite (tracing caches interest per
//! process).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deputy_core::trace::RecordStatus;
use deputy_llm::Message;
use deputy_llm::openai::client::{ChatRequest, OpenAiClient};
use deputy_store::Store;
use serde_json::{Value, json};

mod common;
use common::{Recording, Reply, mock};

const KEY: &str = "sk-deputy-test-0f9e8d7c6b5a4321";

fn sse(v: &[Value]) -> Vec<String> {
    let mut f: Vec<String> = v.iter().map(Value::to_string).collect();
    f.push("[DONE]".into());
    f
}

fn request(messages: Vec<Message>) -> ChatRequest {
    ChatRequest {
        model: "m".into(),
        messages,
        tools: vec![],
        max_tokens: None,
    }
}

fn only_run(runs: &[deputy_core::trace::LlmRun]) -> &deputy_core::trace::LlmRun {
    assert_eq!(runs.len(), 1);
    &runs[0]
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn occurrences(haystack: &[u8], needle: &str) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle.as_bytes())
        .count()
}

#[tokio::test]
async fn the_api_key_is_nowhere_in_the_database_or_the_logs() {
    let logs = Logs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // The server echoes the key in an error body (as OpenAI does for a bad key), in a
    // header and in a streamed chunk; the user pasted it into the prompt.
    let echo = format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY}"}}}}"#);
    let (m, url) = mock(vec![
        Reply::StatusBody(500, echo.clone()),
        Reply::Sse(sse(&[
            json!({"choices": [{"delta": {"content": format!("your key is {KEY}")}}]}),
            json!({"choices": [{"delta": {}, "finish_reason": "stop"}]}),
        ])),
        Reply::StatusBody(401, echo),
    ])
    .await;
    let rec = Recording::new().await;
    let run = rec.run("openai").await;
    let mut c = OpenAiClient::new(&url, Some(KEY.into()));
    c.retry.base_delay = Duration::from_millis(5);
    let messages = vec![Message::User {
        content: format!("my key is {KEY}, and my api_key field too"),
    }];
    let out = c
        .call(&request(messages.clone()), true, &mut |_| {}, Some(&run))
        .await
        .unwrap();
    assert!(
        matches!(&out.completion.message, Message::Assistant { content: Some(t), .. } if t.contains(KEY)),
        "the caller still gets the model's answer unchanged"
    );
    let err = c
        .call(&request(messages), false, &mut |_| {}, Some(&run))
        .await
        .unwrap_err();
    assert!(!err.to_string().contains(KEY), "{err}");
    run.finish(RecordStatus::Error, Some(&err.to_string()))
        .await;
    assert_eq!(
        m.auth.lock().unwrap()[0],
        format!("Bearer {KEY}"),
        "the key was sent"
    );

    let runs = rec.trace().await;
    assert_eq!(only_run(&runs).steps.len(), 2);
    let json = serde_json::to_string(&runs).unwrap();
    assert!(json.contains("[redacted]"));
    assert_eq!(occurrences(json.as_bytes(), KEY), 0);
    rec.store.close().await;
    for entry in std::fs::read_dir(rec.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            occurrences(&bytes, KEY),
            0,
            "{} holds the key",
            path.display()
        );
    }
    let logged = logs.0.lock().unwrap().clone();
    assert!(
        String::from_utf8_lossy(&logged).contains("retrying"),
        "the failed attempt was logged: {}",
        String::from_utf8_lossy(&logged)
    );
    assert_eq!(occurrences(&logged, KEY), 0, "the logs hold the key");
}
