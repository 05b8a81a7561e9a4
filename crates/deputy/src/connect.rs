//! Finding the daemon: `--url` (or `DEPUTY_URL`), else the `daemon.json` that a running
//! daemon keeps in its data dir. The CLI never starts a daemon by itself; when none is
//! running it says how to start one.

use std::path::Path;

use anyhow::bail;
use deputy_client::Client;

use crate::config::Config;

pub fn client(cfg: &Config) -> anyhow::Result<Client> {
    if let Some(url) = cfg.url() {
        return Ok(Client::new(url).with_token(cfg.api_token()));
    }
    let dir = cfg.data_dir();
    match deputy_server::daemon::read_info(&dir) {
        Some(info) if pid_alive(info.pid) => Ok(Client::new(info.url).with_token(cfg.api_token())),
        _ => bail!(no_daemon(&dir)),
    }
}

/// Like [`client`], but starts a daemon in the background when none is running (for
/// `deputy mcp`, whose MCP client cannot be asked to start one). Says so on stderr.
pub async fn client_or_start(cfg: &Config) -> anyhow::Result<Client> {
    if let Ok(c) = client(cfg) {
        return Ok(c);
    }
    let dir = cfg.data_dir();
    std::fs::create_dir_all(&dir)?;
    let log_path = dir.join("daemon.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("serve").arg("--data-dir").arg(&dir);
    {
        use std::os::unix::process::CommandExt;
        // Its own process group: the daemon outlives this command and its terminal.
        cmd.process_group(0);
    }
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let pid = child.id();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(info) = deputy_server::daemon::read_info(&dir)
            && info.pid == pid
        {
            eprintln!(
                "deputy: no daemon was running for {}; started one in the background (pid {pid}, log {})",
                dir.display(),
                log_path.display()
            );
            return Ok(Client::new(info.url).with_token(cfg.api_token()));
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "started a daemon (pid {pid}) but it did not come up within 30 s; see {}",
                log_path.display()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn no_daemon(dir: &Path) -> String {
    format!(
        "no deputy daemon is running for {}.\n\
         Start one with `deputy serve` (in another terminal, or `deputy serve &`),\n\
         or point at one with --url / DEPUTY_URL.",
        dir.display()
    )
}

fn pid_alive(pid: u32) -> bool {
    deputy_engine::procfs::read_stat(pid as i32).is_some_and(|p| p.is_alive())
}
