//! The database's storage failing under a running daemon: a full disk (the data dir on a
//! small tmpfs, filled up) and a database file locked by another process. Writes get a
//! clear error and store nothing, reads keep working, and once the fault is gone the
//! daemon carries on by itself: the attempt that ended meanwhile is recorded, and new
//! work is taken. SQLite only (PostgreSQL's storage is the server's).

use std::path::{Path, PathBuf};
use std::process::Command as Proc;

use deputy_core::{EventBody, Status};
use futures_util::StreamExt;

use crate::harness::*;

/// A tmpfs of `mib` MiB, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mib: u32) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Proc::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Proc::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` until a write fails.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    // Byte by byte to the very end, so not even a page is left.
    while f.write_all(&[0]).is_ok() {}
    let _ = f.sync_all();
    path
}

async fn post_task(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/tasks"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_clearly_serves_reads_and_recovers() {
    if postgres_backend().is_some() {
        eprintln!("skipped: the disk-full test is about SQLite's own storage");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("small"), 16) else {
        eprintln!(
            "skipped: cannot mount a tmpfs here (the test needs root), so the disk-full test did not run"
        );
        return;
    };
    let data = fs.0.join("data");
    let d = ChildDaemon::spawn(&data, &[]).await;
    let before = d.client.submit(&sh("true")).await.unwrap().task;
    wait_done(&d.client, before.id).await;
    // A task that is running when the disk fills, and ends while it is full.
    let gate = dir.path().join("gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let running = d
        .client
        .submit(&sh(&format!("cat '{}' >/dev/null; exit 3", gate.display())))
        .await
        .unwrap()
        .task;
    wait_status(&d.client, running.id, Status::Running).await;
    // Tasks accepted below stay queued, so the only writes are the submits.
    d.client.pause(None).await.unwrap();
    // A reader holding a snapshot (a backup, say) keeps the WAL from being checkpointed
    // and reused from its start, so every write from here on needs new space.
    use sqlx::Connection;
    let db = data.join("deputy.db");
    let mut reader = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut reader).await.unwrap();
    sqlx::query("SELECT count(*) FROM tasks")
        .fetch_one(&mut reader)
        .await
        .unwrap();
    let filler = fill(&fs.0);

    // Writes that fit in space the database already holds still succeed (a checkpointed
    // WAL is reused from its start), so submit until one needs space there is none of.
    let mut accepted = 0;
    let (status, body) = loop {
        let (status, body) =
            post_task(d.client.base(), serde_json::json!({"command": "true"})).await;
        if status != 201 || accepted == 500 {
            break (status, body);
        }
        accepted += 1;
    };
    assert_eq!(status, 507, "after {accepted} accepted: {body}");
    assert_eq!(body["error"]["code"], "disk_full", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("free space"), "{message}");
    // Reads go on.
    let listed = d.client.list(&[("limit", "1000".into())]).await.unwrap();
    assert_eq!(
        listed.tasks.len(),
        2 + accepted,
        "the refused task was stored"
    );
    assert!(d.client.get(&before.id.to_string()).await.is_ok());
    // The running task ends while the disk is full.
    let mut events = Box::pin(d.client.events(Some(running.id.to_string()), 0));
    let writer = gate.clone();
    tokio::task::spawn_blocking(move || std::fs::write(writer, b"go"))
        .await
        .unwrap()
        .unwrap();
    // The attempt is over (its process gone) and its end has been tried against the full
    // disk at least once (the writer took two more batches) before space returns.
    eventually("the task's process to exit", || {
        processes_of(running.id).is_empty()
    })
    .await;
    let batches = |text: String| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix("deputy_store_write_batches_total ")?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let seen = batches(metrics_text(d.client.base()).await);
    let mut now = seen;
    tokio::time::timeout(DEADLINE, async {
        while now < seen + 2.0 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            now = batches(metrics_text(d.client.base()).await);
        }
    })
    .await
    .expect("the attempt's end was not tried while the disk was full");
    let still = d.client.get(&running.id.to_string()).await.unwrap().task;
    assert_eq!(still.status, Status::Running, "recorded on a full disk?");
    sqlx::query("ROLLBACK").execute(&mut reader).await.unwrap();
    drop(reader);
    std::fs::remove_file(&filler).unwrap();
    tokio::time::timeout(DEADLINE, async {
        while let Some(e) = events.next().await {
            if let EventBody::TaskFinished { status, .. } = e.unwrap().body {
                assert_eq!(status, Status::Failed);
                return;
            }
        }
        panic!("the stream ended before the task finished");
    })
    .await
    .expect("the attempt that ended while the disk was full was never recorded");
    let t = d.client.get(&running.id.to_string()).await.unwrap().task;
    assert_eq!((t.status, t.exit_code), (Status::Failed, Some(3)));
    // And new work is taken again.
    d.client.resume(None).await.unwrap();
    let after = d.client.submit(&sh("true")).await.unwrap().task;
    assert_eq!(
        wait_done(&d.client, after.id).await.status,
        Status::Succeeded
    );
    drop(d);
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_locked_by_another_process_refuses_writes_clearly_and_recovers() {
    if postgres_backend().is_some() {
        eprintln!("skipped: the locked-database test is about SQLite's file lock");
        return;
    }
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = ChildDaemon::spawn(&data, &[]).await;
    let first = d.client.submit(&sh("true")).await.unwrap().task;
    wait_done(&d.client, first.id).await;
    // Another process takes the database's write lock and keeps it.
    let mut other =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", data.join("deputy.db").display()))
            .await
            .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let (status, body) = post_task(d.client.base(), serde_json::json!({"command": "true"})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "database_busy", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("locked"),
        "{body}"
    );
    // Reads go on while the lock is held.
    let listed = d.client.list(&[("limit", "100".into())]).await.unwrap();
    assert_eq!(listed.tasks.len(), 1, "the refused task was stored");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    drop(other);
    let t = d.client.submit(&sh("true")).await.unwrap().task;
    assert_eq!(wait_done(&d.client, t.id).await.status, Status::Succeeded);
}
