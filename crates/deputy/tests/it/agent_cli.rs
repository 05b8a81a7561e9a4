//! Agent CLI backends with stand-in executables (`tests/fixtures/fake-agent`, linked as
//! `claude` and `codex`) that print recorded output; and agent worktrees in a real git
//! repository.

use std::path::{Path, PathBuf};

use deputy_core::Status;
use deputy_engine::agent::config::{CliBackend, CliFormat, WorktreeCleanup};

use crate::agents::{agent_steps, agent_task};
use crate::harness::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `claude` and `codex` in a temp dir, both the fake.
fn fake_bin(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["claude", "codex"] {
        std::os::unix::fs::symlink(fixtures().join("fake-agent"), bin.join(name)).unwrap();
    }
    bin
}

async fn daemon_with_fakes(bin: &Path, cleanup: WorktreeCleanup) -> TestDaemon {
    let bin = bin.to_path_buf();
    TestDaemon::start_with(2, move |c| {
        for (name, format) in [("claude", CliFormat::Claude), ("codex", CliFormat::Codex)] {
            let mut b = CliBackend::builtin(name).unwrap();
            assert_eq!(b.format, format);
            b.program = bin.join(name).to_string_lossy().into_owned();
            c.agents.backends.insert(name.into(), b);
        }
        c.agents.worktree_cleanup = cleanup;
    })
    .await
}

fn fake_env(task: &mut deputy_core::submit::NewTask, record: &Path, output: &str) {
    task.env
        .insert("FAKE_DIR".into(), record.to_string_lossy().into_owned());
    task.env.insert("FAKE_OUTPUT".into(), output.into());
}

fn lines(path: PathBuf) -> Vec<String> {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn claude_output_becomes_events_usage_and_a_session_that_retry_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = fake_bin(tmp.path());
    let record = tmp.path().join("record");
    std::fs::create_dir(&record).unwrap();
    let d = daemon_with_fakes(&bin, WorktreeCleanup::RemoveIfClean).await;
    let mut task = agent_task(tmp.path(), |a| {
        a.backend = Some("claude".into());
        a.prompt = "run the tests".into();
        a.model = Some("sonnet".into());
    });
    fake_env(&mut task, &record, "claude-stream.jsonl");
    // A nested session's markers must not reach the CLI.
    task.env.insert("CLAUDECODE".into(), "1".into());
    task.env
        .insert("CLAUDE_CODE_ENTRYPOINT".into(), "cli".into());
    let t = d.submit(task).await;
    let done = wait_done(&d.client, t.id).await;
    assert_eq!(done.status, Status::Succeeded, "{:?}", done.reason);
    assert_eq!(
        lines(record.join("args.0")),
        [
            "-p",
            "run the tests",
            "--output-format",
            "stream-json",
            "--verbose",
            "--model",
            "sonnet"
        ]
    );
    assert!(
        lines(record.join("env.0"))[0].starts_with("CLAUDECODE=unset CLAUDE_CODE_ENTRYPOINT=unset")
    );
    let usage = done.usage.clone().unwrap();
    assert_eq!(
        usage.session_id.as_deref(),
        Some("5c2b8e0a-1f7d-4c3e-9a61-0d2f3b4c5e6f")
    );
    assert_eq!(usage.cost_usd, Some(0.0421));
    assert_eq!(
        (usage.input_tokens, usage.output_tokens, usage.cached_tokens),
        (Some(14), Some(77), Some(2100))
    );
    assert_eq!(usage.turns, Some(3));
    assert_eq!(usage.result.as_deref(), Some("All 3 tests pass."));
    let events = collect_events(&d.client).await;
    let steps = agent_steps(&events, t.id);
    let kinds: Vec<_> = steps
        .iter()
        .map(|(s, tool, ..)| (s.as_str(), tool.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("session", None),
            ("tool_started", Some("Bash".into())),
            ("tool_finished", None),
        ]
    );
    assert!(steps[1].2.as_deref().unwrap().contains("cargo test"));
    assert_eq!(steps[2].3, Some(false));
    let out = String::from_utf8(d.client.logs_text(&t.id.to_string(), &[]).await.unwrap()).unwrap();
    assert!(out.contains("I'll run the tests first.\n→ Bash("), "{out}");
    assert!(out.contains("← test result: ok. 3 passed"), "{out}");
    assert!(
        !out.contains("\"type\""),
        "the JSON is parsed, not stored raw: {out}"
    );

    // Retry with --continue resumes the session; a plain retry does not.
    d.client.retry_continue(&t.id.to_string()).await.unwrap();
    let again = wait_attempt_done(&d.client, t.id, 2).await;
    assert_eq!((again.status, again.attempt), (Status::Succeeded, 2));
    let args = lines(record.join("args.1"));
    assert_eq!(
        args[args.len() - 2..],
        ["--resume", "5c2b8e0a-1f7d-4c3e-9a61-0d2f3b4c5e6f"]
    );
    d.client.retry(&t.id.to_string()).await.unwrap();
    wait_attempt_done(&d.client, t.id, 3).await;
    assert!(!lines(record.join("args.2")).contains(&"--resume".to_string()));
    // A new task can continue another's session (what DelegateTask's continueFrom sends).
    let mut follow_up = agent_task(tmp.path(), |a| {
        a.backend = Some("claude".into());
        a.prompt = "now fix the warning".into();
        a.resume_session = usage.session_id.clone();
    });
    fake_env(&mut follow_up, &record, "claude-stream.jsonl");
    let follow_up = d.submit(follow_up).await;
    assert_eq!(
        wait_done(&d.client, follow_up.id).await.status,
        Status::Succeeded
    );
    let args = lines(record.join("args.3"));
    assert_eq!(args[1], "now fix the warning");
    assert_eq!(
        args[args.len() - 2..],
        ["--resume", "5c2b8e0a-1f7d-4c3e-9a61-0d2f3b4c5e6f"]
    );
    d.stop().await;
}

#[tokio::test]
async fn a_claude_error_result_fails_the_task_and_codex_output_is_parsed() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = fake_bin(tmp.path());
    let record = tmp.path().join("record");
    std::fs::create_dir(&record).unwrap();
    let d = daemon_with_fakes(&bin, WorktreeCleanup::RemoveIfClean).await;
    let mut failing = agent_task(tmp.path(), |a| a.backend = Some("claude".into()));
    fake_env(&mut failing, &record, "claude-error.jsonl");
    let failing = d.submit(failing).await;
    let done = wait_done(&d.client, failing.id).await;
    assert_eq!(done.status, Status::Failed);
    assert!(
        done.reason
            .as_deref()
            .unwrap()
            .contains("claude reported error_max_turns"),
        "{:?}",
        done.reason
    );
    assert_eq!(done.usage.as_ref().unwrap().cost_usd, Some(0.003));

    let codex_record = tmp.path().join("codex");
    std::fs::create_dir(&codex_record).unwrap();
    let mut codex = agent_task(tmp.path(), |a| {
        a.backend = Some("codex".into());
        a.prompt = "check the tests".into();
    });
    fake_env(&mut codex, &codex_record, "codex-stream.jsonl");
    let codex = d.submit(codex).await;
    let done = wait_done(&d.client, codex.id).await;
    assert_eq!(done.status, Status::Succeeded, "{:?}", done.reason);
    assert_eq!(
        lines(codex_record.join("args.0")),
        ["exec", "--json", "--skip-git-repo-check", "check the tests"]
    );
    let u = done.usage.unwrap();
    assert_eq!(
        u.session_id.as_deref(),
        Some("0199a213-81c0-7800-8aa1-bbab2a035a53")
    );
    assert_eq!(
        (u.input_tokens, u.output_tokens, u.cached_tokens),
        (Some(24763), Some(122), Some(24448))
    );
    assert_eq!(u.result.as_deref(), Some("All tests pass."));
    let events = collect_events(&d.client).await;
    let tools: Vec<_> = agent_steps(&events, codex.id)
        .into_iter()
        .map(|(s, ..)| s)
        .collect();
    assert_eq!(tools, ["session", "tool_started", "tool_finished"]);
    // codex cannot resume: asking is a clear error, not a silent fresh start.
    d.client
        .retry_continue(&codex.id.to_string())
        .await
        .unwrap();
    let again = wait_attempt_done(&d.client, codex.id, 2).await;
    assert_eq!(again.status, Status::Failed);
    assert!(again.reason.unwrap().contains("cannot resume"));
    d.stop().await;
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn repo(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["config", "user.email", "t@example.invalid"]);
    git(&repo, &["config", "user.name", "t"]);
    std::fs::write(repo.join("README"), "hello\n").unwrap();
    git(&repo, &["add", "README"]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    repo
}

#[tokio::test]
async fn concurrent_agents_get_their_own_worktrees_and_cleanup_follows_the_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repo(tmp.path());
    let bin = fake_bin(tmp.path());
    // Keep: both worktrees stay, each on its own branch.
    let d = daemon_with_fakes(&bin, WorktreeCleanup::Keep).await;
    let script = "pwd > where; git branch --show-current >> where; echo change >> README";
    let a = d
        .submit(agent_task(&repo, |a| {
            a.backend = Some("generic".into());
            a.prompt = script.into();
            a.worktree = true;
        }))
        .await;
    let b = d
        .submit(agent_task(&repo, |a| {
            a.backend = Some("generic".into());
            a.prompt = script.into();
            a.worktree = true;
        }))
        .await;
    let mut seen = Vec::new();
    for t in [&a, &b] {
        let done = wait_done(&d.client, t.id).await;
        assert_eq!(done.status, Status::Succeeded, "{:?}", done.reason);
        let dir = d
            .dir
            .path()
            .join("data/worktrees")
            .join(format!("{}-a1", t.id));
        let where_ = lines(dir.join("where"));
        assert_eq!(
            Path::new(&where_[0]).canonicalize().unwrap(),
            dir.canonicalize().unwrap()
        );
        assert_eq!(where_[1], format!("deputy/{}", &t.id.to_string()[..8]));
        seen.push(dir);
    }
    assert_ne!(seen[0], seen[1]);
    assert_eq!(
        std::fs::read_to_string(repo.join("README")).unwrap(),
        "hello\n",
        "the repo's own checkout is untouched"
    );
    d.stop().await;

    // Remove if clean: a task that changes nothing loses its worktree (and its empty
    // branch); one that leaves a change keeps both.
    let d = daemon_with_fakes(&bin, WorktreeCleanup::RemoveIfClean).await;
    let clean = d
        .submit(agent_task(&repo, |a| {
            a.backend = Some("generic".into());
            a.prompt = "git status --short".into();
            a.worktree = true;
        }))
        .await;
    let dirty = d
        .submit(agent_task(&repo, |a| {
            a.backend = Some("generic".into());
            a.prompt = "echo more >> README".into();
            a.worktree = true;
        }))
        .await;
    for t in [&clean, &dirty] {
        assert_eq!(wait_done(&d.client, t.id).await.status, Status::Succeeded);
    }
    let wt = |t: &deputy_core::Task| {
        d.dir
            .path()
            .join("data/worktrees")
            .join(format!("{}-a1", t.id))
    };
    assert!(!wt(&clean).exists());
    assert!(wt(&dirty).join("README").exists());
    let branches = git(&repo, &["branch", "--list", "deputy/*"]);
    assert!(!branches.contains(&clean.id.to_string()[..8]), "{branches}");
    assert!(branches.contains(&dirty.id.to_string()[..8]), "{branches}");
    let events = collect_events(&d.client).await;
    let details: Vec<_> = agent_steps(&events, clean.id)
        .into_iter()
        .filter_map(|(s, _, d, _)| (s == "workspace").then_some(d.unwrap()))
        .collect();
    assert!(details[1].starts_with("removed"), "{details:?}");
    d.stop().await;
}
