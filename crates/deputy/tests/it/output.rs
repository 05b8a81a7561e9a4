//! Output capture: the cap, head and tail, memory, and bytes that are not UTF-8.

use deputy_core::submit::{NewTask, SizeInput};
use deputy_core::{Status, Stream};

use crate::harness::*;

const LINES: u64 = 6_500_000; // `seq 1 6500000` prints about 51 MB.

fn seq_output_len(n: u64) -> u64 {
    (1..=n).map(|i| i.to_string().len() as u64 + 1).sum()
}

async fn poll_until_finished(client: &deputy_client::Client, id: deputy_core::TaskId) {
    let poll = async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if client
                .get(&id.to_string())
                .await
                .unwrap()
                .task
                .status
                .is_terminal()
            {
                return;
            }
        }
    };
    tokio::time::timeout(DEADLINE * 2, poll)
        .await
        .expect("the task did not finish in time");
}

#[tokio::test]
async fn fifty_megabytes_under_a_one_megabyte_cap_keep_head_and_tail_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = ChildDaemon::spawn(&dir.path().join("data"), &[]).await;
    let cap: u64 = 1 << 20;
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
    // Waiting by polling on purpose: a live event subscriber would add its own (bounded)
    // stream buffers to the daemon's memory, and this test measures the capture alone.
    poll_until_finished(&d.client, t.id).await;
    let after_50mb = d.peak_rss();

    // Three times as much output again must not raise the peak: memory is bounded by the
    // cap and the buffers, not by what the task prints.
    let more = format!("seq 1 {}", LINES * 3);
    let big = d
        .client
        .submit(&NewTask {
            output_cap: Some(SizeInput(cap)),
            ..sh(&more)
        })
        .await
        .unwrap()
        .task;
    poll_until_finished(&d.client, big.id).await;
    let after_200mb = d.peak_rss();
    eprintln!(
        "daemon peak RSS: {} MiB after 50 MB of output, {} MiB after 150 MB more",
        after_50mb >> 20,
        after_200mb >> 20
    );
    assert!(
        after_50mb < 128 << 20,
        "daemon peak RSS {} MiB",
        after_50mb >> 20
    );
    // The writer's page cache fills as the store grows (a fixed bound of its own), so
    // growth is allowed up to that bound plus 8 MiB; 150 MB held anywhere would fail.
    let growth = after_200mb.saturating_sub(after_50mb);
    assert!(
        growth < (8 << 20) + deputy_store::sqlite::WRITER_PAGE_CACHE_BYTES,
        "daemon memory grew by {} MiB with the output",
        growth >> 20
    );

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

    let stopped = d.stop().await;
    let store = stopped.open_store().await;
    let chunks = store
        .read_output(t.id, 1, Some(Stream::Stdout), 0)
        .await
        .unwrap();
    let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.data).collect();
    assert_eq!(bytes, b"\xff\xfe caf\xc3\xa9 \xc3\n");
}
