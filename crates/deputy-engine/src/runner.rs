//! Starting and stopping a task's process tree.
//!
//! Every task runs in its own process group, so one signal reaches the whole tree.
//! Processes are started with `posix_spawn` (no code runs in the child before exec, so
//! the daemon's page tables are never copied; a spawn costs the same however big the
//! daemon is). The child starts behind a *gate*: `sh` first reads one line from stdin,
//! which the supervisor writes only after the process group is recorded in the database
//! and put on the death watch (`deathwatch`, which kills the group if the daemon dies).
//! A daemon killed in between closes the pipe, and the gate exits without running
//! anything; so a process that does work always has its group on record for recovery
//! to kill, and on the death watch.

use std::collections::BTreeMap;
use std::io;
use std::process::Stdio;
use std::time::Duration;

use deputy_core::{Command as TaskCommand, Task, TaskKind};
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use crate::procfs;

/// Variables a task inherits from the daemon; everything else it gets from its spec.
pub const ENV_ALLOWLIST: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TERM", "TZ",
    "TMPDIR", "SHELL",
];

/// Exit code of the gate when the daemon went away before letting the task start.
pub const GATE_CLOSED_EXIT: i32 = 125;

const GATE: &str = "IFS= read -r _deputy_gate || exit 125; exec </dev/null; unset _deputy_gate\n";

pub struct Spawned {
    pub child: Child,
    pub pgid: i32,
    pub gate: ChildStdin,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

/// The daemon's environment, filtered to the allowlist; taken once at start.
pub fn base_env() -> BTreeMap<String, String> {
    ENV_ALLOWLIST
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect()
}

/// What to run for one process of a task: a shell task's command, an agent CLI, or a
/// tool call of the built-in agent.
#[derive(Debug, Clone)]
pub struct ProcessPlan {
    pub command: TaskCommand,
    pub cwd: String,
    /// The whole environment (nothing else is inherited).
    pub env: BTreeMap<String, String>,
}

impl ProcessPlan {
    /// A shell task's plan: its command, cwd, and the allowlisted environment plus its own.
    pub fn shell(task: &Task, base_env: &BTreeMap<String, String>) -> io::Result<Self> {
        let TaskKind::Shell { command } = &task.spec.kind else {
            return Err(io::Error::other(format!(
                "a {} task has no command to run",
                task.spec.kind.name()
            )));
        };
        let mut env = base_env.clone();
        env.extend(task.spec.env.clone());
        Ok(Self {
            command: command.clone(),
            cwd: task.spec.cwd.clone(),
            env,
        })
    }
}

/// Spawns a process of `task` behind the gate, in its own process group. The caller
/// records the group and puts it on the death watch before opening the gate.
pub fn spawn(task: &Task, plan: &ProcessPlan) -> io::Result<Spawned> {
    let command = &plan.command;
    let mut cmd = Command::new("/bin/sh");
    match command {
        TaskCommand::Line(line) => {
            cmd.arg("-c").arg(format!("{GATE}{line}"));
        }
        TaskCommand::Argv(argv) => {
            cmd.arg("-c")
                .arg(format!("{GATE}exec \"$@\""))
                .arg("deputy-task")
                .args(argv);
        }
    }
    cmd.current_dir(&plan.cwd)
        .env_clear()
        .envs(&plan.env)
        .env("DEPUTY_TASK_ID", task.id.to_string())
        .env("DEPUTY_ATTEMPT", task.attempt.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Nothing else: no `pre_exec`, no uid/gid, and a program given by path, so the
        // standard library takes its `posix_spawn` path instead of `fork`.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("child exited before its pid was read"))?
        as i32;
    let take = |what: &str| io::Error::other(format!("child {what} pipe missing"));
    let gate = child.stdin.take().ok_or_else(|| take("stdin"))?;
    let stdout = child.stdout.take().ok_or_else(|| take("stdout"))?;
    let stderr = child.stderr.take().ok_or_else(|| take("stderr"))?;
    Ok(Spawned {
        child,
        pgid: pid,
        gate,
        stdout,
        stderr,
    })
}

/// Lets the gated child run. An error means it is already gone.
pub async fn open_gate(mut gate: ChildStdin) -> io::Result<()> {
    gate.write_all(b"go\n").await?;
    gate.flush().await
}

pub fn signal_group(pgid: i32, sig: Signal) {
    if pgid <= 1 {
        return;
    }
    // ESRCH (no such group) is the normal case once everything has exited.
    let _ = killpg(Pid::from_raw(pgid), sig);
}

/// Reaps members of `pgid` that were reparented to us (the daemon is a child
/// subreaper). Call only after the leader itself was reaped through its `Child`, so this
/// never steals the leader's exit status.
pub fn reap_orphans(pgid: i32) {
    if pgid <= 1 {
        return;
    }
    loop {
        match waitpid(Pid::from_raw(-pgid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => continue,
        }
    }
}

/// Whether any process (zombies included) is in group `pgid`. A group that `kill`
/// cannot find is certainly gone: the cheap common case after a task exits cleanly.
fn group_exists(pgid: i32) -> bool {
    !matches!(
        killpg(Pid::from_raw(pgid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Live (non-zombie) members of the group; empty without a /proc scan when the group
/// no longer exists at all.
pub(crate) fn live_members(pgid: i32) -> Vec<i32> {
    if pgid <= 1 || !group_exists(pgid) {
        return Vec::new();
    }
    procfs::live_members(pgid)
}

/// Waits until no live process is left in `pgid`, or `within` passes. Returns whether
/// the group is gone. Polls /proc on a short timer: group members that are not our
/// children send no signal when they die.
pub async fn wait_group_gone(pgid: i32, within: Duration) -> bool {
    let check = async {
        let mut delay = Duration::from_millis(2);
        loop {
            reap_orphans(pgid);
            if live_members(pgid).is_empty() {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    };
    tokio::time::timeout(within, check).await.is_ok()
}

/// SIGTERM to the group, then SIGKILL to whatever is left after `grace`. Returns once
/// the group is gone (or after a bounded wait past SIGKILL).
pub async fn terminate_group(pgid: i32, grace: Duration) {
    if live_members(pgid).is_empty() {
        reap_orphans(pgid);
        return;
    }
    signal_group(pgid, Signal::SIGTERM);
    // SIGCONT so stopped members can act on the SIGTERM.
    signal_group(pgid, Signal::SIGCONT);
    if wait_group_gone(pgid, grace).await {
        return;
    }
    signal_group(pgid, Signal::SIGKILL);
    if !wait_group_gone(pgid, Duration::from_secs(5)).await {
        tracing::warn!(
            pgid,
            "process group survived SIGKILL for 5s (uninterruptible sleep?)"
        );
    }
}

/// Kills a process group left by a previous life of the daemon, if its members still
/// carry the task's marker (the pid may have been reused since).
pub async fn kill_leftover(pgid: i32, task_id: &str, grace: Duration) -> bool {
    let members = live_members(pgid);
    if members.is_empty() || !members.iter().any(|&p| procfs::has_task_marker(p, task_id)) {
        return false;
    }
    terminate_group(pgid, grace).await;
    true
}
