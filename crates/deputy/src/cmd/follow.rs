//! Commands that follow the event stream: `logs -f` and `wait`. Both take the daemon's
//! last event id *before* reading state, then follow events after it, so nothing that
//! happens in between is missed.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use deputy_client::Client;
use deputy_core::{EventBody, Status, Stream, Task};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{LogsArgs, WaitArgs};
use crate::config::{Config, parse_duration};
use crate::{connect, render};

pub async fn logs(cfg: &Config, a: LogsArgs) -> anyhow::Result<u8> {
    let client = connect::client(cfg)?;
    let stream = if a.stdout {
        Some(Stream::Stdout)
    } else if a.stderr {
        Some(Stream::Stderr)
    } else {
        None
    };
    if !a.follow {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(s) = stream {
            q.push(("stream", s.as_str().into()));
        }
        if let Some(n) = a.tail {
            q.push(("tail", n.to_string()));
        }
        if let Some(n) = a.attempt {
            q.push(("attempt", n.to_string()));
        }
        let bytes = client.logs_text(&a.id, &q).await?;
        let mut out = std::io::stdout().lock();
        out.write_all(&bytes)?;
        out.flush()?;
        return Ok(0);
    }
    let snapshot = client.status().await?.last_event;
    let task = client.get(&a.id).await?.task;
    let mut events = Box::pin(client.events(Some(task.id.to_string()), 0));
    let mut out = std::io::stdout().lock();
    // With --tail, history (events up to the snapshot) is buffered and only its last
    // lines printed; live output is printed as it comes.
    let mut history: Option<String> = a.tail.map(|_| String::new());
    let mut shown_attempt: Option<u32> = None;
    let flush_history =
        |history: &mut Option<String>, out: &mut dyn Write| -> std::io::Result<()> {
            if let (Some(h), Some(n)) = (history.take(), a.tail) {
                out.write_all(deputy_core::output::tail_lines(&h, n).as_bytes())?;
            }
            Ok(())
        };
    while let Some(ev) = events.next().await {
        let ev = ev?;
        if ev.seq > snapshot {
            flush_history(&mut history, &mut out)?;
        }
        match ev.body {
            EventBody::TaskOutput {
                attempt,
                stream: s,
                data,
                len,
                ..
            } => {
                if stream.is_some_and(|want| want != s)
                    || a.attempt.is_some_and(|want| want != attempt)
                {
                    continue;
                }
                let mut text = String::new();
                if shown_attempt.is_some_and(|prev| prev != attempt) {
                    text.push_str(&format!("--- attempt {attempt} ---\n"));
                }
                shown_attempt = Some(attempt);
                match data {
                    Some(d) => text.push_str(&d),
                    None => text.push_str(&deputy_core::output::omitted_marker(len)),
                }
                match &mut history {
                    Some(h) => {
                        h.push_str(&text);
                        if let Some(n) = a.tail
                            && h.len() > 1 << 20
                        {
                            *h = deputy_core::output::tail_lines(h, n);
                        }
                    }
                    None => {
                        out.write_all(text.as_bytes())?;
                        out.flush()?;
                    }
                }
            }
            EventBody::TaskFinished { status, .. } => {
                flush_history(&mut history, &mut out)?;
                out.flush()?;
                let t = client.get(&task.id.to_string()).await?.task;
                eprintln!("deputy: task {} {status}", t.id.short());
                return Ok(render::exit_code(&t));
            }
            _ => {}
        }
    }
    flush_history(&mut history, &mut out)?;
    Ok(0)
}

pub async fn wait(cfg: &Config, a: WaitArgs) -> anyhow::Result<u8> {
    let client = connect::client(cfg)?;
    let ids: Vec<String> = if a.all {
        let page = client
            .list(&[
                ("status", "blocked,scheduled,queued,running".into()),
                ("limit", "1000".into()),
            ])
            .await?;
        page.tasks.iter().map(|t| t.id.to_string()).collect()
    } else if a.ids.is_empty() {
        bail!("name the tasks to wait for, or pass --all");
    } else {
        a.ids.clone()
    };
    if ids.is_empty() {
        println!("nothing to wait for");
        return Ok(0);
    }
    let limit = a
        .timeout
        .as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let fut = wait_for(&client, &ids, std::io::stderr().is_terminal());
    let done = match limit {
        Some(d) => match tokio::time::timeout(d, fut).await {
            Ok(r) => r?,
            Err(_) => {
                eprintln!(
                    "deputy: gave up waiting after {}",
                    humantime::format_duration(d)
                );
                return Ok(124);
            }
        },
        None => fut.await?,
    };
    let mut failed = 0;
    for t in &done {
        if t.status != Status::Succeeded {
            failed += 1;
        }
        println!(
            "{}  {:<10} {}{}",
            t.id.short(),
            t.status.to_string(),
            render::truncate(&t.spec.title(), 60),
            t.reason
                .as_deref()
                .map(|r| format!("  ({r})"))
                .unwrap_or_default()
        );
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

/// Waits until every task in `ids` has ended for good; returns them in that state.
pub async fn wait_for(
    client: &Client,
    ids: &[String],
    progress: bool,
) -> anyhow::Result<Vec<Task>> {
    let snapshot = client.status().await?.last_event;
    let mut tasks = Vec::with_capacity(ids.len());
    for id in ids {
        tasks.push(
            client
                .get(id)
                .await
                .with_context(|| format!("task {id}"))?
                .task,
        );
    }
    let mut pending: HashSet<_> = tasks
        .iter()
        .filter(|t| !t.status.is_terminal())
        .map(|t| t.id)
        .collect();
    let bar = (progress && !pending.is_empty()).then(|| {
        let b = ProgressBar::new(tasks.len() as u64);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_position((tasks.len() - pending.len()) as u64);
        b.enable_steady_tick(Duration::from_millis(120));
        b
    });
    if !pending.is_empty() {
        let mut events = Box::pin(client.events(None, snapshot));
        while let Some(ev) = events.next().await {
            let ev = ev?;
            if let (Some(id), EventBody::TaskFinished { status, .. }) = (ev.task, &ev.body)
                && pending.remove(&id)
            {
                if let Some(b) = &bar {
                    b.inc(1);
                    b.set_message(format!("{} {status}", id.short()));
                }
                if pending.is_empty() {
                    break;
                }
            }
        }
        if !pending.is_empty() {
            bail!("the daemon's event stream ended while waiting");
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in &tasks {
        out.push(client.get(&t.id.to_string()).await?.task);
    }
    Ok(out)
}
