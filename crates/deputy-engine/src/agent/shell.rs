//! The built-in agent's `shell` tool: a command run in the workspace through the same
//! machinery as a shell task (gate, process group recorded for recovery and on the
//! death watch, SIGTERM then SIGKILL), with its own timeout and a bounded capture of its
//! output (head and tail). Optionally under bubblewrap.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use deputy_core::{Command, Task};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::config::Sandbox;
use super::tools::ToolOutput;
use crate::Inner;
use crate::runner::{self, ProcessPlan};

/// Bytes of output kept from the start and from the end of a command's output.
const KEEP_HEAD: usize = 12 << 10;
const KEEP_TAIL: usize = 12 << 10;
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Head and tail of a stream, in bounded memory.
#[derive(Default)]
struct Kept {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    dropped: u64,
}

impl Kept {
    fn push(&mut self, mut data: &[u8]) {
        let room = KEEP_HEAD.saturating_sub(self.head.len());
        let take = room.min(data.len());
        self.head.extend_from_slice(&data[..take]);
        data = &data[take..];
        for &b in data {
            if self.tail.len() == KEEP_TAIL {
                self.tail.pop_front();
                self.dropped += 1;
            }
            self.tail.push_back(b);
        }
    }

    fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.head).into_owned();
        if self.dropped > 0 {
            s.push_str(&format!("\n[… {} bytes omitted …]\n", self.dropped));
        }
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        s.push_str(&String::from_utf8_lossy(&tail));
        s
    }
}

async fn keep<R: AsyncRead + Unpin>(mut r: R) -> Kept {
    let mut kept = Kept::default();
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.push(&buf[..n]);
    }
    kept
}

/// What the `shell` tool needs from its task.
pub struct ShellTool<'a> {
    pub inner: &'a Inner,
    pub task: &'a Task,
    pub workspace: &'a Path,
    pub env: BTreeMap<String, String>,
    pub sandbox: Sandbox,
    /// The group of the command now running (0: none), for the supervisor to stop it
    /// when the attempt is cancelled or times out mid-call.
    pub current_pgid: Arc<AtomicI32>,
}

impl ShellTool<'_> {
    fn plan(&self, command: &str) -> ProcessPlan {
        let ws = self.workspace.to_string_lossy().into_owned();
        let command = match self.sandbox {
            Sandbox::None => Command::Line(command.to_string()),
            Sandbox::Bwrap => Command::Argv(
                [
                    "bwrap",
                    "--ro-bind",
                    "/",
                    "/",
                    "--dev",
                    "/dev",
                    "--proc",
                    "/proc",
                    "--tmpfs",
                    "/tmp",
                    "--bind",
                    &ws,
                    &ws,
                    "--unshare-all",
                    "--die-with-parent",
                    "--chdir",
                    &ws,
                    "/bin/sh",
                    "-c",
                    command,
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ),
        };
        ProcessPlan {
            command,
            cwd: ws,
            env: self.env.clone(),
        }
    }

    pub async fn run(&self, command: &str, timeout: Duration) -> ToolOutput {
        if self.sandbox == Sandbox::Bwrap && which("bwrap").is_none() {
            return ToolOutput::error(
                "the shell sandbox is set to bwrap but bubblewrap is not installed; \
                 no command was run",
            );
        }
        let spawned = match runner::spawn(self.task, &self.plan(command)) {
            Ok(s) => s,
            Err(e) => return ToolOutput::error(format!("could not start the command: {e}")),
        };
        let runner::Spawned {
            mut child,
            pgid,
            gate,
            stdout,
            stderr,
        } = spawned;
        self.current_pgid.store(pgid, Ordering::SeqCst);
        let recorded =
            crate::supervisor::watch_and_record(self.inner, self.task, pgid, "command's process")
                .await;
        let watched = match recorded {
            Ok(w) => w,
            Err(reason) => {
                drop(gate);
                runner::terminate_group(pgid, self.inner.cfg.kill_grace).await;
                let _ = child.wait().await;
                runner::reap_orphans(pgid);
                self.current_pgid.store(0, Ordering::SeqCst);
                return ToolOutput::error(reason);
            }
        };
        let out = tokio::spawn(keep(stdout));
        let err = tokio::spawn(keep(stderr));
        let _ = runner::open_gate(gate).await;
        let exit = tokio::select! {
            biased;
            s = child.wait() => s.ok(),
            () = tokio::time::sleep(timeout) => None,
        };
        // Background children of the command do not outlive the call.
        runner::terminate_group(pgid, self.inner.cfg.kill_grace).await;
        let exit = match exit {
            Some(s) => Some(s),
            None => {
                let _ = child.wait().await;
                None
            }
        };
        runner::reap_orphans(pgid);
        drop(watched);
        self.current_pgid.store(0, Ordering::SeqCst);
        let bound = Duration::from_secs(5);
        let stdout = tokio::time::timeout(bound, out)
            .await
            .ok()
            .and_then(Result::ok);
        let stderr = tokio::time::timeout(bound, err)
            .await
            .ok()
            .and_then(Result::ok);
        let mut text = String::new();
        let status = match exit {
            None => format!("timed out after {}s and was stopped", timeout.as_secs()),
            Some(s) => match s.code() {
                Some(c) => format!("exit code {c}"),
                None => "killed by a signal".into(),
            },
        };
        text.push_str(&status);
        text.push('\n');
        for (name, kept) in [("stdout", stdout), ("stderr", stderr)] {
            if let Some(k) = kept {
                let t = k.text();
                if !t.is_empty() {
                    text.push_str(&format!("--- {name} ---\n{t}"));
                    if !t.ends_with('\n') {
                        text.push('\n');
                    }
                }
            }
        }
        let ok = exit.is_some_and(|s| s.success());
        if ok {
            ToolOutput::ok(text)
        } else {
            ToolOutput::error(text)
        }
    }
}

/// The path of `program` in PATH, if it is there.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        let p = Path::new(program);
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_output_is_head_and_tail() {
        let mut k = Kept::default();
        k.push(&vec![b'a'; KEEP_HEAD]);
        k.push(&vec![b'b'; 100_000]);
        k.push(b"end");
        let t = k.text();
        assert!(t.starts_with("aaa"));
        assert!(t.ends_with("bbbend"));
        assert!(t.contains(&format!("{} bytes omitted", 100_000 + 3 - KEEP_TAIL)));
    }
}
