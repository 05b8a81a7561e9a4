//! Agent tasks with `worktree = true` run in a fresh `git worktree` on a new branch,
//! `deputy/<short-id>` (`-a<N>` for later attempts), under the data dir. The path
//! carries the task's full id and attempt, so no task ever gets, reuses or removes
//! another task's worktree. After the attempt it is kept, removed, or removed if clean;
//! the branch always stays unless it holds nothing new (`git branch -d`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use deputy_core::Task;
use tokio::sync::Mutex;

use super::config::WorktreeCleanup;

/// `git worktree add/remove` of one repository must not run concurrently (they share
/// the repository's administrative files); one lock per daemon is enough.
static GIT_WORKTREE_LOCK: Mutex<()> = Mutex::const_new(());

#[derive(Debug, Clone)]
pub struct Worktree {
    pub repo: PathBuf,
    pub path: PathBuf,
    pub branch: String,
    /// The task's cwd inside the worktree (same place relative to the repo root).
    pub workdir: PathBuf,
}

async fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("-C").arg(dir).args(args).kill_on_drop(true);
    cmd.stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .map_err(|_| format!("git {} took over 120s", args.join(" ")))?
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Creates the task's worktree from the repository that holds its cwd.
pub async fn create(task: &Task, base: &Path) -> Result<Worktree, String> {
    let cwd = Path::new(&task.spec.cwd);
    let repo = git(cwd, &["rev-parse", "--show-toplevel"])
        .await
        .map_err(|e| format!("worktree needs the task's cwd inside a git repository: {e}"))?;
    let repo = PathBuf::from(repo);
    let short = &task.id.to_string()[..8];
    let branch = if task.attempt == 1 {
        format!("deputy/{short}")
    } else {
        format!("deputy/{short}-a{}", task.attempt)
    };
    let path = base.join(format!("{}-a{}", task.id, task.attempt));
    std::fs::create_dir_all(base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    {
        let _one_at_a_time = GIT_WORKTREE_LOCK.lock().await;
        git(
            &repo,
            &[
                "worktree",
                "add",
                "-b",
                &branch,
                &path.to_string_lossy(),
                "HEAD",
            ],
        )
        .await?;
    }
    let relative = cwd
        .canonicalize()
        .ok()
        .and_then(|c| {
            let r = repo.canonicalize().ok()?;
            c.strip_prefix(&r).ok().map(Path::to_path_buf)
        })
        .unwrap_or_default();
    let workdir = path.join(relative);
    Ok(Worktree {
        repo,
        path,
        branch,
        workdir,
    })
}

/// Applies the cleanup policy. Returns what happened, for the task's events.
pub async fn cleanup(wt: &Worktree, policy: WorktreeCleanup) -> String {
    let remove = match policy {
        WorktreeCleanup::Keep => false,
        WorktreeCleanup::Remove => true,
        WorktreeCleanup::RemoveIfClean => match git(&wt.path, &["status", "--porcelain"]).await {
            Ok(s) => s.is_empty(),
            Err(_) => false,
        },
    };
    if !remove {
        return format!("kept {} (branch {})", wt.path.display(), wt.branch);
    }
    let _one_at_a_time = GIT_WORKTREE_LOCK.lock().await;
    let path = wt.path.to_string_lossy();
    if let Err(e) = git(&wt.repo, &["worktree", "remove", "--force", &path]).await {
        return format!("could not remove {}: {e}", wt.path.display());
    }
    // Deletes the branch only when it holds nothing that is not in HEAD.
    match git(&wt.repo, &["branch", "-d", &wt.branch]).await {
        Ok(_) => format!("removed {} and its branch", wt.path.display()),
        Err(_) => format!(
            "removed {}; branch {} kept (it has commits)",
            wt.path.display(),
            wt.branch
        ),
    }
}
