//! Output capture: both pipes read concurrently as bytes, batched by size and time, and
//! stored as ordered chunks. The task's output cap bounds what is stored: the first half
//! of the cap is kept (the head), the rest is a rolling tail whose oldest chunks are
//! deleted as new ones arrive. Memory per task is bounded whatever the child prints.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use deputy_core::text::utf8_safe_len;
use deputy_core::time::now_ms;
use deputy_core::{Stream, TaskId};
use deputy_store::{ChunkKey, NewChunk, OutputBatch, Store};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Largest stored chunk. Chunks travel whole in events (and in the bus's bounded
/// ring), so this bounds the memory one event can hold.
pub const MAX_CHUNK: usize = 16 * 1024;
/// Pending output that triggers a flush (one transaction of up to four chunks).
pub const FLUSH_BYTES: usize = 64 * 1024;
const READ_BUF: usize = 16 * 1024;
/// Reads in flight between a pipe reader and the flusher.
const CHANNEL_DEPTH: usize = 8;
/// The rolling tail remembers at most this many chunks, so a task that trickles one
/// byte at a time cannot grow the bookkeeping without bound.
const MAX_TAIL_CHUNKS: usize = 4096;

#[derive(Debug, Clone, Copy)]
pub struct CaptureConfig {
    pub cap: u64,
    pub flush_bytes: usize,
    pub flush_interval: Duration,
}

/// What the capture stored, for the attempt's record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureTotals {
    pub total_bytes: u64,
    pub stored_bytes: u64,
    pub omitted_bytes: u64,
}

/// Reads one pipe to EOF, sending what it reads to the flusher.
async fn read_pipe<R: AsyncRead + Unpin>(
    mut pipe: R,
    stream: Stream,
    tx: mpsc::Sender<(Stream, Vec<u8>)>,
) {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if tx.send((stream, buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(%e, ?stream, "pipe read failed");
                break;
            }
        }
    }
}

struct Flusher {
    store: Arc<dyn Store>,
    task: TaskId,
    attempt: u32,
    cfg: CaptureConfig,
    head_limit: u64,
    tail_limit: u64,
    /// Bytes read per stream (the next chunk's offset).
    offsets: [u64; 2],
    pending: [Vec<u8>; 2],
    head_stored: u64,
    tail: VecDeque<(ChunkKey, u64)>,
    tail_bytes: u64,
    totals: CaptureTotals,
}

fn idx(s: Stream) -> usize {
    match s {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl Flusher {
    fn pending_len(&self) -> usize {
        self.pending[0].len() + self.pending[1].len()
    }

    /// Turns pending bytes into chunks and stores them with their events in one
    /// transaction. `last` flushes everything, even a trailing partial character.
    async fn flush(&mut self, last: bool) {
        let mut chunks = Vec::new();
        let mut drop = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let i = idx(stream);
            let cut = if last {
                self.pending[i].len()
            } else {
                utf8_safe_len(&self.pending[i])
            };
            if cut == 0 {
                continue;
            }
            let data: Vec<u8> = self.pending[i].drain(..cut).collect();
            let mut rest = &data[..];
            while !rest.is_empty() {
                let in_head = self.head_stored < self.head_limit;
                let room = if in_head {
                    (self.head_limit - self.head_stored) as usize
                } else {
                    self.tail_limit.max(1) as usize
                };
                let mut take = rest.len().min(MAX_CHUNK).min(room.max(1));
                if take < rest.len() {
                    // Do not split a character across chunks when there is a choice.
                    let safe = utf8_safe_len(&rest[..take]);
                    if safe > 0 {
                        take = safe;
                    }
                }
                let (piece, tail) = rest.split_at(take);
                rest = tail;
                let key = ChunkKey {
                    stream,
                    offset: self.offsets[i],
                };
                self.offsets[i] += piece.len() as u64;
                self.totals.total_bytes += piece.len() as u64;
                if in_head {
                    self.head_stored += piece.len() as u64;
                } else {
                    self.tail.push_back((key, piece.len() as u64));
                    self.tail_bytes += piece.len() as u64;
                    while self.tail_bytes > self.tail_limit || self.tail.len() > MAX_TAIL_CHUNKS {
                        let Some((old, len)) = self.tail.pop_front() else {
                            break;
                        };
                        self.tail_bytes -= len;
                        self.totals.omitted_bytes += len;
                        // A chunk dropped before it was ever stored is simply not sent.
                        if let Some(pos) = chunks.iter().position(|c: &NewChunk| {
                            c.stream == old.stream && c.offset == old.offset
                        }) {
                            chunks.remove(pos);
                        } else {
                            drop.push(old);
                        }
                    }
                }
                if self.tail.back().map(|(k, _)| *k) == Some(key) || in_head {
                    chunks.push(NewChunk {
                        stream,
                        offset: key.offset,
                        data: piece.to_vec(),
                    });
                }
            }
        }
        if chunks.is_empty() && drop.is_empty() {
            return;
        }
        self.totals.stored_bytes = self.head_stored + self.tail_bytes;
        let batch = OutputBatch {
            task: self.task,
            attempt: self.attempt,
            chunks,
            drop,
            total_bytes: self.totals.total_bytes,
            omitted_bytes: self.totals.omitted_bytes,
            now: now_ms(),
        };
        if let Err(e) = self.store.append_output(batch).await {
            // Output is best effort next to the task's outcome, which must still be
            // recorded; the bytes are counted as omitted.
            tracing::error!(task = %self.task, %e, "storing output failed");
        }
    }
}

/// Starts capturing both pipes. The returned handle resolves when both pipes reached
/// EOF and everything read was stored.
pub fn start<O, E>(
    store: Arc<dyn Store>,
    task: TaskId,
    attempt: u32,
    cfg: CaptureConfig,
    stdout: O,
    stderr: E,
) -> tokio::task::JoinHandle<CaptureTotals>
where
    O: AsyncRead + Unpin + Send + 'static,
    E: AsyncRead + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(CHANNEL_DEPTH);
    tokio::spawn(read_pipe(stdout, Stream::Stdout, tx.clone()));
    tokio::spawn(read_pipe(stderr, Stream::Stderr, tx));
    let head_limit = cfg.cap / 2;
    let mut f = Flusher {
        store,
        task,
        attempt,
        cfg,
        head_limit,
        tail_limit: cfg.cap - head_limit,
        offsets: [0, 0],
        pending: [Vec::new(), Vec::new()],
        head_stored: 0,
        tail: VecDeque::new(),
        tail_bytes: 0,
        totals: CaptureTotals::default(),
    };
    tokio::spawn(async move {
        let mut deadline: Option<Instant> = None;
        loop {
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some((stream, data)) => {
                        f.pending[idx(stream)].extend_from_slice(&data);
                        if f.pending_len() >= f.cfg.flush_bytes {
                            f.flush(false).await;
                            deadline = None;
                        } else if deadline.is_none() {
                            deadline = Some(Instant::now() + f.cfg.flush_interval);
                        }
                    }
                    None => break,
                },
                () = timer => {
                    f.flush(false).await;
                    deadline = None;
                    if f.pending_len() > 0 {
                        deadline = Some(Instant::now() + f.cfg.flush_interval);
                    }
                }
            }
        }
        f.flush(true).await;
        f.totals
    })
}
