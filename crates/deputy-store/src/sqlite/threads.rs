//! The threads that own SQLite connections. SQLite blocks, so its connections live on
//! threads of their own, never on the runtime's: one for the writer (the group-commit
//! loop runs there whole, so a batch of writes is one hop, not one per statement) and a
//! few readers that take whole reads (a task with its dependencies, a page of events)
//! from one bounded queue.

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::conn::{Opener, SqliteConn};
use crate::sql::BoxFuture;
use crate::{Result, StoreError};

/// Reads waiting for a reader thread before callers wait to hand theirs over.
const READ_QUEUE: usize = 1024;

/// Runs `work` to completion on a new thread named `name` (with a runtime of its own,
/// for the channels and timers the work awaits); `done` is dropped when it ends.
pub fn spawn_thread<F>(name: &str, work: F) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || rt.block_on(work))?;
    Ok(())
}

type ReadJob = Box<dyn for<'c> FnOnce(&'c mut SqliteConn) -> BoxFuture<'c, ()> + Send>;

/// A few threads with read-only connections, fed from one queue.
pub struct Readers {
    queue: Mutex<Option<mpsc::Sender<ReadJob>>>,
    /// One receiver per thread; each resolves when its thread has let go of its connection.
    exited: Mutex<Vec<oneshot::Receiver<()>>>,
}

impl Readers {
    pub fn start(opener: &Opener, threads: usize) -> Result<Readers> {
        let (tx, rx) = mpsc::channel::<ReadJob>(READ_QUEUE);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let mut exited = Vec::new();
        for i in 0..threads {
            let mut conn = opener.open()?;
            let rx = rx.clone();
            let (done, exit) = oneshot::channel::<()>();
            exited.push(exit);
            spawn_thread(&format!("deputy-sqlite-read-{i}"), async move {
                let _done = done;
                loop {
                    // One thread waits on the queue at a time; the others wait for it.
                    let job = rx.lock().await.recv().await;
                    let Some(job) = job else { break };
                    job(&mut conn).await;
                }
            })
            .map_err(|e| StoreError::Database(format!("cannot start a reader thread: {e}")))?;
        }
        Ok(Readers {
            queue: Mutex::new(Some(tx)),
            exited: Mutex::new(exited),
        })
    }

    /// Runs `read` on a reader thread and returns its result.
    pub async fn run<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConn) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let queue = self
            .queue
            .lock()
            .expect("reader queue")
            .clone()
            .ok_or_else(closed)?;
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |c| {
            Box::pin(async move {
                let r = read(c).await;
                // The caller may have gone away; nothing to tell.
                let _ = reply.send(r);
            })
        });
        queue.send(job).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Takes no more reads; returns once every thread finished what it had and closed
    /// its connection.
    pub async fn close(&self) {
        self.queue.lock().expect("reader queue").take();
        let exited = std::mem::take(&mut *self.exited.lock().expect("reader exits"));
        for e in exited {
            let _ = e.await;
        }
    }
}

fn closed() -> StoreError {
    StoreError::WriteFailed("the store is closed".into())
}
