//! The `deputy` binary against a daemon.

use tokio::process::Command;

use deputy_core::Status;

use crate::harness::*;

async fn deputy(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_deputy"))
        .args(["--url", url])
        .args(args)
        .env("DEPUTY_CONFIG", "/nonexistent-but-named/deputy.toml")
        .output()
        .await
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn submit_wait_ls_show_logs_cancel() {
    let d = TestDaemon::start(2).await;
    let url = d.url();
    // A named config file that does not exist is an error, not silently ignored.
    let out = deputy(&url, &["ls"]).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot read the config file"));

    let config_home = d.dir.path().to_path_buf();
    let run = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_deputy"));
        c.args(["--url", &url])
            .args(args)
            .env_remove("DEPUTY_CONFIG")
            .env("XDG_CONFIG_HOME", &config_home);
        async move { c.output().await.unwrap() }
    };
    let out = run(&[
        "submit",
        "--name",
        "seven",
        "--wait",
        "--",
        "echo hello; exit 7",
    ])
    .await;
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));

    let out = run(&[
        "submit",
        "-e",
        "WHO=world",
        "--label",
        "cli",
        "--",
        "sh",
        "-c",
        "echo hi $WHO",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 32);
    let out = run(&["wait", &id]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&run(&["logs", &id[..8]]).await.stdout), "hi world\n");

    let out = run(&["ls", "--label", "cli"]).await;
    let listing = text(&out.stdout);
    assert!(
        listing.contains(&id[..12]) && listing.contains("succeeded"),
        "{listing}"
    );
    assert!(!listing.contains("seven"), "label filter: {listing}");

    let out = run(&["show", &id]).await;
    let shown = text(&out.stdout);
    assert!(
        shown.contains("WHO=world") && shown.contains("attempts:"),
        "{shown}"
    );

    let out = run(&["submit", "--", "sleep 100"]).await;
    let long = text(&out.stdout).trim().to_string();
    wait_status(&d.client, long.parse().unwrap(), Status::Running).await;
    let out = run(&["cancel", &long]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["wait", &long]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "wait exits non-zero when a task did not succeed"
    );
    assert!(text(&out.stdout).contains("cancelled"));

    let out = run(&["logs", "-f", &id]).await;
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "hi world\n");

    let out = run(&["show", "ffffffff"]).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no task"));
    d.stop().await;
}

#[tokio::test]
async fn without_a_daemon_the_cli_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_deputy"))
        .args(["ls", "--data-dir"])
        .arg(dir.path())
        .env_remove("DEPUTY_URL")
        .env("XDG_CONFIG_HOME", dir.path())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("deputy serve"),
        "{}",
        text(&out.stderr)
    );
}

async fn config_show(file: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_deputy"))
        .args(["config", "show", "--config"])
        .arg(file)
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn config_show_names_each_values_source() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, "output_cap = \"2MiB\"\nparallel = 3\n").unwrap();
    let out = config_show(&file, &[("DEPUTY_PARALLEL", "5")]).await;
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        shown
            .lines()
            .any(|l| l.contains("output_cap = \"2MiB\"") && l.contains("file")),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.contains("parallel = \"5\"") && l.contains("env DEPUTY_PARALLEL")),
        "{shown}"
    );
    assert!(
        shown
            .lines()
            .any(|l| l.contains("kill_grace = \"5s\"") && l.contains("default")),
        "{shown}"
    );

    // Tables: providers, agent backends and prices are listed; a key in the file is refused.
    std::fs::write(
        &file,
        "default_provider = \"local\"\n[providers.local]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:11434/v1\"\ndefault_model = \"llama3\"\n[agents.aider]\nformat = \"text\"\nprogram = \"aider\"\nargs = [\"--message\", \"{prompt}\"]\n[prices.\"llama3\"]\ninput = 0.5\noutput = 1.5\n",
    )
    .unwrap();
    let out = config_show(&file, &[]).await;
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        shown.contains("local = openai http://127.0.0.1:11434/v1"),
        "{shown}"
    );
    assert!(shown.contains("default_provider = \"local\""), "{shown}");
    assert!(shown.contains("aider = text aider"), "{shown}");
    assert!(shown.contains("llama3: input 0.5, output 1.5"), "{shown}");
    std::fs::write(
        &file,
        "[providers.x]\nkind = \"openai\"\nbase_url = \"http://x\"\napi_key = \"sk-nope\"\n",
    )
    .unwrap();
    let out = config_show(&file, &[]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown field `api_key`"),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(&file, "paralel = 3\n").unwrap();
    let out = config_show(&file, &[]).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unknown key `paralel`"));
}

#[tokio::test]
async fn nodes_lists_the_daemons_and_nothing_else() {
    let d = TestDaemon::start(1).await;
    let out = Command::new(env!("CARGO_BIN_EXE_deputy"))
        .args(["--url", &d.url(), "nodes"])
        .env("DEPUTY_CONFIG", "/dev/null")
        .output()
        .await
        .unwrap();
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 2, "a header and this node: {shown}");
    assert!(
        lines[0].starts_with("NODE") && lines[1].contains("ago"),
        "{shown}"
    );
    d.stop().await;
}
