//! The death watch: when the daemon dies, every task's whole process group dies too.
//!
//! Task processes are started with `posix_spawn` (the kernel's vfork path: no copy of
//! the daemon's page tables, so a spawn costs the same at 20 MB or 2 GB of daemon
//! memory). That leaves no moment to run code in the child, so there is no
//! `PR_SET_PDEATHSIG` on it. Instead a small `sh` (the *guard*, one per engine, in a
//! process group of its own) reads the groups to watch from a pipe whose only write end
//! the daemon holds. The kernel closes that end when the daemon dies, however it dies
//! (`kill -9` included); the guard reads EOF and SIGKILLs every group still on its list.
//! This covers the whole tree, not just the direct child a parent-death signal reaches.
//!
//! A group is put on the list before its gate opens (a write to the pipe is enough: data
//! written before the daemon died is still read after), and taken off only once no live
//! process is left in it, so a recycled pgid is never on the list. If the guard itself
//! dies, it is started again and told the whole list.
//!
//! One actor task owns the guard and the list; callers talk to it over a bounded channel.

use std::collections::BTreeSet;
use std::io;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot};

use crate::runner;

/// Reads `+ PGID` / `- PGID` lines; at EOF kills what is left. The list is a string of
/// space-separated pgids (`sh` has no sets); removal is parameter expansion, so the
/// guard never forks while watching.
const GUARD_SCRIPT: &str = r#"live=' '
while read -r op pg; do
  case $op in
    +) live="$live$pg " ;;
    -) case $live in *" $pg "*) live="${live%% $pg *} ${live#* $pg }" ;; esac ;;
  esac
done
for pg in $live; do kill -s KILL -- "-$pg" 2>/dev/null; done
"#;

/// Messages waiting for the actor before callers wait to hand theirs over.
const QUEUE_DEPTH: usize = 1024;

enum Msg {
    Watch(i32, oneshot::Sender<io::Result<()>>),
    Release(i32),
    /// For tests: the guard's pid (0 when none is running).
    #[cfg(test)]
    GuardPid(oneshot::Sender<u32>),
}

/// Handle to the engine's death watch; cheap to clone.
#[derive(Clone)]
pub(crate) struct DeathWatch {
    tx: mpsc::Sender<Msg>,
}

/// A group on the watch list. Dropping it takes the group off the list once no live
/// process is left in it. It does not keep the watch alive: once the engine drops its
/// `DeathWatch`, the guard kills every group still on the list, as if the daemon died.
#[must_use = "dropping the handle takes the group off the watch list"]
pub(crate) struct Watched {
    pgid: i32,
    tx: mpsc::WeakSender<Msg>,
}

impl DeathWatch {
    /// Starts the guard. Fails when `/bin/sh` cannot be started (then no task could be).
    pub(crate) async fn start() -> io::Result<DeathWatch> {
        let guard = Guard::spawn()?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(guard, rx));
        Ok(DeathWatch { tx })
    }

    /// Puts `pgid` on the list; returns once the guard has it (the write reached the
    /// pipe), so the caller may let the group start work.
    pub(crate) async fn watch(&self, pgid: i32) -> io::Result<Watched> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Watch(pgid, reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())??;
        Ok(Watched {
            pgid,
            tx: self.tx.downgrade(),
        })
    }

    #[cfg(test)]
    async fn guard_pid(&self) -> u32 {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Msg::GuardPid(reply)).await.is_err() {
            return 0;
        }
        answer.await.unwrap_or(0)
    }
}

fn gone() -> io::Error {
    io::Error::other("the engine's death watch has stopped (the engine is shutting down)")
}

impl Drop for Watched {
    fn drop(&mut self) {
        let (pgid, weak) = (self.pgid, self.tx.clone());
        if runner::live_members(pgid).is_empty() {
            // No sender: the watch has stopped and its guard already has EOF.
            let Some(tx) = weak.upgrade() else { return };
            if let Err(mpsc::error::TrySendError::Full(msg)) = tx.try_send(Msg::Release(pgid)) {
                tokio::spawn(async move { tx.send(msg).await });
            }
            return;
        }
        // Still running (the attempt was abandoned mid-way, e.g. a cancelled tool call
        // whose group its owner is terminating right now): keep watching until it is
        // gone. Polled: processes that are not our children send no signal when they die.
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(5);
            while !runner::live_members(pgid).is_empty() {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            if let Some(tx) = weak.upgrade() {
                let _ = tx.send(Msg::Release(pgid)).await;
            }
        });
    }
}

/// The running guard process and the write end of its pipe.
struct Guard {
    child: Child,
    stdin: ChildStdin,
}

impl Guard {
    fn spawn() -> io::Result<Guard> {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(GUARD_SCRIPT)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: a Ctrl-C meant for the daemon must not take the guard first.
            .process_group(0)
            // It must outlive the daemon: that is its whole job.
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start /bin/sh: {e}")))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("the guard's stdin pipe is missing"))?;
        Ok(Guard { child, stdin })
    }

    async fn send(&mut self, line: &str) -> io::Result<()> {
        self.stdin.write_all(line.as_bytes()).await
    }

    /// A fresh guard told the whole list.
    async fn restart(live: &BTreeSet<i32>) -> io::Result<Guard> {
        let mut guard = Guard::spawn()?;
        let list: String = live.iter().map(|pg| format!("+ {pg}\n")).collect();
        guard.send(&list).await?;
        Ok(guard)
    }
}

async fn run(guard: Guard, mut rx: mpsc::Receiver<Msg>) {
    let mut live = BTreeSet::new();
    let mut guard = Some(guard);
    loop {
        let msg = tokio::select! {
            msg = rx.recv() => msg,
            status = exited(&mut guard) => {
                tracing::warn!(?status, "the process guard exited; starting a new one");
                guard = None;
                ensure(&mut guard, &live).await;
                continue;
            }
        };
        let Some(msg) = msg else { break };
        match msg {
            Msg::Watch(pgid, reply) => {
                live.insert(pgid);
                let r = tell(&mut guard, &live, &format!("+ {pgid}\n")).await;
                if r.is_err() {
                    live.remove(&pgid);
                }
                let _ = reply.send(r);
            }
            Msg::Release(pgid) => {
                if live.remove(&pgid) {
                    // A guard that missed this only kills a group that is already gone.
                    let _ = tell(&mut guard, &live, &format!("- {pgid}\n")).await;
                }
            }
            #[cfg(test)]
            Msg::GuardPid(reply) => {
                let pid = guard.as_ref().and_then(|g| g.child.id()).unwrap_or(0);
                let _ = reply.send(pid);
            }
        }
    }
    // Every handle is gone (the engine was dropped): EOF tells the guard to kill what is
    // still on the list, and it exits.
    if let Some(Guard { mut child, stdin }) = guard {
        drop(stdin);
        let _ = child.wait().await;
    }
}

/// Resolves when the guard exits; never, when there is none.
async fn exited(guard: &mut Option<Guard>) -> io::Result<std::process::ExitStatus> {
    match guard {
        Some(g) => g.child.wait().await,
        None => std::future::pending().await,
    }
}

/// Starts a guard if none is running; a failure is logged and retried on the next message.
async fn ensure(guard: &mut Option<Guard>, live: &BTreeSet<i32>) {
    if guard.is_some() {
        return;
    }
    match Guard::restart(live).await {
        Ok(g) => *guard = Some(g),
        Err(e) => tracing::error!(%e, "cannot start the process guard"),
    }
}

/// Sends `line` to the guard, starting a new one (told the whole list, which already
/// holds the change) if the pipe is broken.
async fn tell(guard: &mut Option<Guard>, live: &BTreeSet<i32>, line: &str) -> io::Result<()> {
    if let Some(g) = guard.as_mut() {
        if g.send(line).await.is_ok() {
            return Ok(());
        }
        *guard = None;
    }
    let g = Guard::restart(live).await?;
    *guard = Some(g);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A process group of `sleep`s (a leader and a background grandchild), not behind
    /// any gate, started the way tasks are.
    fn sleeping_group() -> (Child, i32) {
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg("sleep 300 & sleep 300")
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn sh");
        let pgid = child.id().expect("pid") as i32;
        (child, pgid)
    }

    async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        let mut delay = Duration::from_millis(2);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }

    /// The group's leader exits (killed by the guard) within a deadline, and is reaped.
    async fn exits(child: &mut Child) {
        tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("the guard did not kill the group's leader within 10 s")
            .unwrap();
    }

    fn members(pgid: i32) -> usize {
        runner::live_members(pgid).len()
    }

    #[tokio::test]
    async fn when_the_watch_stops_its_guard_kills_the_watched_groups_and_only_them() {
        let watch = DeathWatch::start().await.unwrap();
        let (mut watched_child, watched) = sleeping_group();
        let (mut other_child, other) = sleeping_group();
        wait_until(
            "both sleeps of the watched group",
            Duration::from_secs(10),
            || members(watched) >= 2,
        )
        .await;
        let _handle = watch.watch(watched).await.unwrap();
        // The engine going away closes the pipe, as the kernel does when the daemon dies.
        drop(watch);
        exits(&mut watched_child).await;
        wait_until(
            "the whole watched group to die",
            Duration::from_secs(10),
            || members(watched) == 0,
        )
        .await;
        runner::reap_orphans(watched);
        assert!(members(other) > 0, "an unwatched group was killed");
        other_child.kill().await.unwrap();
        runner::signal_group(other, nix::sys::signal::Signal::SIGKILL);
    }

    #[tokio::test]
    async fn a_group_released_while_running_stays_watched_until_it_is_gone() {
        let watch = DeathWatch::start().await.unwrap();
        let (mut child, pgid) = sleeping_group();
        drop(watch.watch(pgid).await.unwrap());
        drop(watch);
        exits(&mut child).await;
        wait_until("the group to die", Duration::from_secs(10), || {
            members(pgid) == 0
        })
        .await;
        runner::reap_orphans(pgid);
    }

    #[tokio::test]
    async fn a_group_released_after_it_ended_is_off_the_list() {
        let watch = DeathWatch::start().await.unwrap();
        let (mut done, done_pgid) = sleeping_group();
        let handle = watch.watch(done_pgid).await.unwrap();
        runner::signal_group(done_pgid, nix::sys::signal::Signal::SIGKILL);
        done.wait().await.unwrap();
        wait_until("the group to end", Duration::from_secs(10), || {
            members(done_pgid) == 0
        })
        .await;
        runner::reap_orphans(done_pgid);
        drop(handle);
        let guard = watch.guard_pid().await as i32;
        assert!(guard > 0);
        // The guard has the release before its EOF, so it kills nothing when it exits.
        let (mut later, later_pgid) = sleeping_group();
        drop(watch);
        wait_until("the guard to exit", Duration::from_secs(10), || {
            members(guard) == 0
        })
        .await;
        assert!(members(later_pgid) >= 2, "an unwatched group was killed");
        later.kill().await.unwrap();
        runner::signal_group(later_pgid, nix::sys::signal::Signal::SIGKILL);
    }

    #[tokio::test]
    async fn a_killed_guard_is_replaced_and_told_the_whole_list() {
        let watch = DeathWatch::start().await.unwrap();
        let (mut child, pgid) = sleeping_group();
        let _handle = watch.watch(pgid).await.unwrap();
        let first = watch.guard_pid().await;
        assert!(first > 0);
        runner::signal_group(first as i32, nix::sys::signal::Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pid = watch.guard_pid().await;
            if pid != 0 && pid != first {
                break;
            }
            assert!(Instant::now() < deadline, "no new guard was started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The new guard learnt the group from the list, not from a new watch() call.
        drop(watch);
        exits(&mut child).await;
        wait_until("the group to die", Duration::from_secs(10), || {
            members(pgid) == 0
        })
        .await;
        runner::reap_orphans(pgid);
    }

    #[tokio::test]
    async fn the_guard_kills_at_eof_exactly_the_groups_left_on_its_list() {
        let (mut a, pa) = sleeping_group();
        let (mut b, pb) = sleeping_group();
        let (mut c, pc) = sleeping_group();
        // Each group is whole (its shell has started the background sleep) before the
        // guard acts: b's count at the end must not be low because it was never 2.
        wait_until(
            "both sleeps of every group",
            Duration::from_secs(10),
            || [pa, pb, pc].iter().all(|&g| members(g) >= 2),
        )
        .await;
        let mut guard = Guard::spawn().unwrap();
        // b is removed; a removal of a group never added (and a repeated one) changes
        // nothing; a prefix of another pgid's digits must not match it.
        let script = format!("+ {pa}\n+ {pb}\n+ {pc}\n- {pb}\n- 1{pa}\n- {pb}\n- 1\n");
        guard.send(&script).await.unwrap();
        drop(guard.stdin);
        tokio::time::timeout(Duration::from_secs(10), guard.child.wait())
            .await
            .expect("the guard did not exit at EOF")
            .unwrap();
        exits(&mut a).await;
        exits(&mut c).await;
        wait_until("a and c to die", Duration::from_secs(10), || {
            members(pa) == 0 && members(pc) == 0
        })
        .await;
        assert!(members(pb) >= 2, "a group taken off the list was killed");
        b.kill().await.unwrap();
        runner::signal_group(pb, nix::sys::signal::Signal::SIGKILL);
        for pg in [pa, pb, pc] {
            runner::reap_orphans(pg);
        }
    }
}
