//! Output capture: the cap, head and tail, memory, and bytes that are not UTF-8.

use std::sync::Arc;

use deputy_core::submit::{NewTask, SizeInput};
use deputy_core::{Status, Stream};
use deputy_store::Store;
use deputy_store::sqlite::SqliteStore;

use crate::harness::*;

const LINES: u64 = 6_500_000; // `seq 1 6500000` prints about 51 MB.

fn seq_output_len(n: u64) -> u64 {
    (1..=n).map(|i| i.to_string().len() as u64 + 1).sum()
}

#[tokio::test]
async fn fifty_megabytes_under_a_one_megabyte_cap_keep_head_and_tail_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = ChildDaemon::spawn(&dir.path().join("data"), &[]).await;
    let cap: u64 = 1 << 20;
    // A warm-up task that prints about the cap, for a baseline of the daemon's memory.
    let warm = d
        .client
        .submit(&NewTask {
            output_cap: Some(SizeInput(cap)),
            ..sh("seq 1 150000")
        })
        .await
        .unwrap()
        .task;
    assert_eq!(
        wait_done(&d.client, warm.id).await.status,
        Status::Succeeded
    );
    let baseline = d.peak_rss();

    let line = format!("seq 1 {LINES}");
    let t = d
        .client
        .submit(&NewTask {
            output_cap: Some(SizeInput(cap)),
            ..sh(&line)
        })
        .await
        .unwrap()
        .task;
    assert_eq!(wait_done(&d.client, t.id).await.status, Status::Succeeded);
    let peak = d.peak_rss();

    let total = seq_output_len(LINES);
    assert!(total > 50_000_000);
    let detail = d.client.get(&t.id.to_string()).await.unwrap();
    let attempt = &detail.attempts[0];
    assert_eq!(attempt.output_bytes, total);
    let stored = attempt.output_bytes - attempt.omitted_bytes;
    assert!(stored <= cap, "stored {stored} bytes under a cap of {cap}");
    assert!(
        stored >= cap - 128 * 1024,
        "the cap is used, not wasted: {stored}"
    );

    let text =
        String::from_utf8(d.client.logs_text(&t.id.to_string(), &[]).await.unwrap()).unwrap();
    assert!(text.starts_with("1\n2\n3\n"), "head kept");
    assert!(
        text.ends_with(&format!("{}\n{LINES}\n", LINES - 1)),
        "tail kept"
    );
    assert!(text.contains(&format!(
        "[deputy: {} bytes omitted]",
        attempt.omitted_bytes
    )));
    assert!(text.len() as u64 <= cap + 100);

    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "daemon peak RSS: {} MiB after the warm-up, {} MiB after 50 MB of output",
        baseline >> 20,
        peak >> 20
    );
    assert!(
        growth < 24 << 20,
        "daemon memory grew by {} MiB with the output",
        growth >> 20
    );
}

#[tokio::test]
async fn bytes_that_are_not_utf8_are_stored_as_they_are_and_shown_lossily() {
    let d = TestDaemon::start(1).await;
    let t = d
        .submit(sh(
            r"printf '\377\376 caf\303\251 \303\n'; printf 'err \375\n' >&2",
        ))
        .await;
    assert_eq!(wait_done(&d.client, t.id).await.status, Status::Succeeded);
    let text =
        String::from_utf8(d.client.logs_text(&t.id.to_string(), &[]).await.unwrap()).unwrap();
    assert!(text.contains("café"), "{text:?}");
    assert!(text.contains('\u{fffd}'), "{text:?}");
    let err_only = String::from_utf8(
        d.client
            .logs_text(&t.id.to_string(), &[("stream", "stderr".into())])
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(err_only, "err \u{fffd}\n");

    // The CLI prints it too.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_deputy"))
        .args(["--url", &d.url(), "logs", &t.id.to_string()[..10]])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("café"));

    let db = d.data_dir().join("deputy.db");
    let _dir = d.stop().await;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).await.unwrap());
    let chunks = store
        .read_output(t.id, 1, Some(Stream::Stdout))
        .await
        .unwrap();
    let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.data).collect();
    assert_eq!(bytes, b"\xff\xfe caf\xc3\xa9 \xc3\n");
}
