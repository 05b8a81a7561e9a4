//! Event streams: resume without gaps or duplicates, fan-out, slow subscribers.

use std::time::Duration;

use deputy_core::submit::{NewTask, SizeInput};
use deputy_core::{Event, EventBody, Status, TaskId};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// Prints `line 1` .. `line 5000`, pausing every 50 lines (longer than the 50 ms flush
/// interval) so the output arrives as about a hundred separate events.
// 200 bursts a pause apart: a loaded machine may merge some bursts into one stored chunk,
// and even if it merges half, the stream holds the 100 events fifty resumes can use.
const NUMBERED: &str = "i=0; while [ $i -lt 5000 ]; do i=$((i+1)); echo \"line $i\"; \
                        if [ $((i % 25)) -eq 0 ]; then sleep 0.06; fi; done";

fn expected_numbered() -> String {
    (1..=5000).map(|i| format!("line {i}\n")).collect()
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Opens a task's stream after `last` and reads up to `max` events (all when None).
/// Returns the events and whether the stream ended by itself.
async fn read_some(url: &str, task: TaskId, last: i64, max: Option<usize>) -> (Vec<Event>, bool) {
    let resp = http()
        .get(format!("{url}/v1/tasks/{task}/events"))
        .header("Last-Event-ID", last.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-accel-buffering"], "no");
    let mut frames = resp.bytes_stream().eventsource();
    let mut out = Vec::new();
    loop {
        if max.is_some_and(|m| out.len() >= m) {
            return (out, false); // Dropping `frames` disconnects.
        }
        match tokio::time::timeout(DEADLINE, frames.next())
            .await
            .expect("stream stalled")
        {
            Some(Ok(f)) => {
                let e: Event = serde_json::from_str(&f.data).unwrap();
                assert_eq!(f.id, e.seq.to_string());
                assert_eq!(f.event, e.body.type_name());
                out.push(e);
            }
            Some(Err(e)) => panic!("bad frame: {e}"),
            None => return (out, true),
        }
    }
}

fn output_of(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::TaskOutput { data, .. } => {
                Some(data.clone().expect("data kept under the cap"))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn resuming_at_fifty_random_points_loses_and_repeats_nothing() {
    // Output stored on every read: the stream has far more than 50 events however the
    // machine's load batches the task's writes (a 50 ms window could merge them).
    let d = TestDaemon::start_with(1, |c| c.output_flush_interval = Duration::ZERO).await;
    let url = d.url();
    let t = d.submit(sh(NUMBERED)).await;
    let mut rng = fastrand::Rng::with_seed(7);
    let mut got: Vec<Event> = Vec::new();
    let mut disconnects = 0;
    loop {
        let last = got.last().map_or(0, |e| e.seq);
        let max = (disconnects < 50).then(|| rng.usize(1..=2));
        let (events, ended) = read_some(&url, t.id, last, max).await;
        got.extend(events);
        if ended {
            break;
        }
        disconnects += 1;
    }
    assert_eq!(disconnects, 50, "the stream had room for 50 disconnects");
    for w in got.windows(2) {
        assert!(w[0].seq < w[1].seq, "in order, no duplicates");
    }
    assert!(matches!(
        got.last().unwrap().body,
        EventBody::TaskFinished {
            status: Status::Succeeded,
            ..
        }
    ));
    assert_eq!(output_of(&got), expected_numbered());
    // The same as one uninterrupted replay.
    let (all, ended) = read_some(&url, t.id, 0, None).await;
    assert!(ended);
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        got.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
    d.stop().await;
}

#[tokio::test]
async fn two_hundred_subscribers_get_the_same_complete_sequence() {
    let d = TestDaemon::start(1).await;
    let url = d.url();
    d.client.pause(None).await.unwrap();
    let t = d.submit(sh("for i in $(seq 1 300); do echo \"n $i\"; [ $((i % 30)) -eq 0 ] && sleep 0.01; done; true")).await;
    let mut handles = Vec::new();
    for _ in 0..200 {
        let url = url.clone();
        handles.push(tokio::spawn(
            async move { read_some(&url, t.id, 0, None).await },
        ));
    }
    // Every subscriber is connected before the task starts.
    wait_metric(&url, "deputy_sse_subscribers 200").await;
    d.client.resume(None).await.unwrap();
    let mut first: Option<Vec<i64>> = None;
    for h in handles {
        let (events, ended) = h.await.unwrap();
        assert!(ended);
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        assert!(matches!(
            events.last().unwrap().body,
            EventBody::TaskFinished { .. }
        ));
        let want: String = (1..=300).map(|i| format!("n {i}\n")).collect();
        assert_eq!(output_of(&events), want);
        match &first {
            None => first = Some(seqs),
            Some(f) => assert_eq!(&seqs, f, "every subscriber saw the same sequence"),
        }
    }
    d.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_never_reads_neither_delays_the_task_nor_stays_connected() {
    let d = TestDaemon::start_with(1, |c| c.write_timeout = Duration::from_secs(1)).await;
    let url = d.url();
    let t = d
        .submit(NewTask {
            output_cap: Some(SizeInput(64 << 20)),
            ..sh("seq 1 3000000")
        })
        .await;
    // A raw connection that asks for the stream and then never reads a byte.
    let addr = url.trim_start_matches("http://").to_string();
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "GET /v1/tasks/{}/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n",
        t.id
    );
    stalled.write_all(req.as_bytes()).await.unwrap();

    // The task finishes on its own time: 20 MB of output were produced and stored.
    let done = wait_done(&d.client, t.id).await;
    assert_eq!(done.status, Status::Succeeded);
    let attempts = d.client.get(&t.id.to_string()).await.unwrap().attempts;
    assert!(attempts[0].output_bytes > 20_000_000);

    // The server gives up on the stalled stream after its write timeout.
    wait_metric(&url, "deputy_sse_subscribers 0").await;
    // And the connection is closed: reading now drains what was sent, then ends.
    let drained = async {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(DEADLINE, drained)
        .await
        .expect("the server closed the connection");
    d.stop().await;
}

#[tokio::test]
async fn the_all_events_stream_resumes_from_last_event_id_and_filters_by_group() {
    let d = TestDaemon::start(1).await;
    d.client.add_group("g1", None).await.unwrap();
    let a = d.submit(sh("true")).await;
    wait_done(&d.client, a.id).await;
    let mid = d.client.status().await.unwrap().last_event;
    let b = d
        .submit(NewTask {
            group: Some("g1".into()),
            ..sh("true")
        })
        .await;
    wait_done(&d.client, b.id).await;
    let all = collect_events(&d.client).await;
    let resumed: Vec<i64> = {
        let mut s = Box::pin(d.client.events(None, mid));
        let last = all.last().unwrap().seq;
        let mut v = Vec::new();
        while let Some(e) = s.next().await {
            let e = e.unwrap();
            v.push(e.seq);
            if e.seq >= last {
                break;
            }
        }
        v
    };
    let expected: Vec<i64> = all.iter().filter(|e| e.seq > mid).map(|e| e.seq).collect();
    assert_eq!(resumed, expected);
    // ?last_event_id= works like the header, for browsers.
    let text = http()
        .get(format!(
            "{}/v1/events?group=g1&last_event_id={mid}",
            d.url()
        ))
        .send()
        .await
        .unwrap();
    let mut frames = text.bytes_stream().eventsource();
    let first = tokio::time::timeout(DEADLINE, frames.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let e: Event = serde_json::from_str(&first.data).unwrap();
    assert_eq!(e.task, Some(b.id));
    assert!(matches!(e.body, EventBody::TaskCreated { ref group, .. } if group == "g1"));
    d.stop().await;
}

#[tokio::test]
async fn a_retried_task_stream_replays_every_attempt_and_ends_with_the_last() {
    let d = TestDaemon::start(1).await;
    let t = d.submit(sh("echo run; exit 1")).await;
    wait_done(&d.client, t.id).await;
    d.client.retry(&t.id.to_string()).await.unwrap();
    wait_attempt_done(&d.client, t.id, 2).await;
    let mut s = Box::pin(d.client.events(Some(t.id.to_string()), 0));
    let mut finished = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while let Some(e) = s.next().await {
            if let EventBody::TaskFinished { attempt, .. } = e.unwrap().body {
                finished.push(attempt);
            }
        }
    })
    .await
    .expect("the stream ends after the last attempt's end");
    assert_eq!(finished, vec![1, 2]);
    d.stop().await;
}

/// A finished task's stream is rendered once and shared: it must equal, frame for
/// frame, what a subscriber saw live while the task ran, for many clients opening it at
/// once and for every resume point.
#[tokio::test]
async fn a_finished_task_replays_exactly_what_was_streamed_live_to_every_client() {
    let d = TestDaemon::start(1).await;
    let url = d.url();
    d.client.pause(None).await.unwrap();
    let t = d
        .submit(sh("for i in $(seq 1 200); do echo \"r $i\"; [ $((i % 20)) -eq 0 ] && sleep 0.06; done; echo oops >&2; true"))
        .await;
    let live = {
        let url = url.clone();
        tokio::spawn(async move { read_some(&url, t.id, 0, None).await })
    };
    wait_metric(&url, "deputy_sse_subscribers 1").await;
    d.client.resume(None).await.unwrap();
    let (live, ended) = live.await.unwrap();
    assert!(ended);
    let live_seqs: Vec<i64> = live.iter().map(|e| e.seq).collect();
    assert!(live.len() > 5, "the output came as several events");

    let replays: Vec<_> = (0..100)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { read_some(&url, t.id, 0, None).await })
        })
        .collect();
    for r in replays {
        let (events, ended) = r.await.unwrap();
        assert!(ended, "a finished task's replay ends by itself");
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), live_seqs);
        assert_eq!(
            serde_json::to_value(&events).unwrap(),
            serde_json::to_value(&live).unwrap()
        );
    }
    for (i, e) in live.iter().enumerate() {
        let (rest, ended) = read_some(&url, t.id, e.seq, None).await;
        assert!(ended);
        assert_eq!(
            rest.iter().map(|e| e.seq).collect::<Vec<_>>(),
            live_seqs[i + 1..].to_vec(),
            "resuming after {}",
            e.seq
        );
    }
    d.stop().await;
}
