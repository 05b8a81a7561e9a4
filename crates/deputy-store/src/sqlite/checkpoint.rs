//! WAL checkpoints off the writer's path. Left to itself, SQLite checkpoints inside the
//! COMMIT that crosses `wal_autocheckpoint` pages, so one write in every few hundred waits
//! for thousands of pages to be copied into the database (measured: a commit averaged
//! 553 µs with autocheckpoint, 207 µs without). Here the writer only nudges a thread of
//! its own after each commit; that thread runs PASSIVE checkpoints (they never block the
//! writer or readers), at most one per `GAP`, so a busy writer's nudges are coalesced. The
//! writer's own autocheckpoint stays as a backstop, at `BACKSTOP_PAGES`.

use std::path::Path;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::threads::spawn_thread;
use crate::{Result, StoreError};

/// The shortest time between two checkpoints.
const GAP: Duration = Duration::from_millis(50);
/// The writer checkpoints by itself only if the WAL grows past this many pages (16 MiB
/// at 4 KiB a page): when the checkpointer has fallen far behind.
pub const BACKSTOP_PAGES: u32 = 4096;

#[derive(Debug)]
pub struct Checkpointer {
    nudges: mpsc::Sender<()>,
    /// Checkpoints completed so far (what tests wait on).
    #[cfg_attr(not(test), allow(dead_code))]
    done: watch::Receiver<u64>,
}

impl Checkpointer {
    /// Starts the checkpoint thread on its own connection to `path`. It ends when the
    /// last handle is dropped.
    pub fn start(path: &Path) -> Result<Checkpointer> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // One pending nudge is enough: it means "the WAL grew since the last checkpoint".
        let (nudges, mut pending) = mpsc::channel::<()>(1);
        let (count, done) = watch::channel(0u64);
        spawn_thread("deputy-sqlite-checkpoint", async move {
            while pending.recv().await.is_some() {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(
                        "WAL checkpoint failed (the writer's own checkpoints still run): {e}"
                    );
                }
                count.send_modify(|n| *n += 1);
                tokio::time::sleep(GAP).await;
            }
        })
        .map_err(|e| StoreError::Database(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer { nudges, done })
    }

    /// After a commit: the WAL grew. Never blocks; nudges already waiting absorb this one.
    pub fn nudge(&self) {
        let _ = self.nudges.try_send(());
    }

    /// Checkpoints completed so far, to wait on.
    #[cfg(test)]
    pub fn completed(&self) -> watch::Receiver<u64> {
        self.done.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_nudge_copies_the_wal_into_the_database_without_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let writer = rusqlite::Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        // The writer never checkpoints by itself here: only the thread can.
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        writer.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        for _ in 0..50 {
            writer
                .execute("INSERT INTO t VALUES (zeroblob(8192))", [])
                .unwrap();
        }
        let db_size = || std::fs::metadata(&path).unwrap().len();
        let before = db_size();
        assert!(before < 50 * 8192, "the rows are still only in the WAL");

        let checkpointer = Checkpointer::start(&path).unwrap();
        let mut completed = checkpointer.completed();
        checkpointer.nudge();
        tokio::time::timeout(Duration::from_secs(10), completed.wait_for(|n| *n >= 1))
            .await
            .expect("the nudge never led to a checkpoint")
            .unwrap();
        assert!(
            db_size() >= before + 50 * 8192,
            "the checkpoint copied the rows into the database file: {} bytes",
            db_size()
        );
    }
}
