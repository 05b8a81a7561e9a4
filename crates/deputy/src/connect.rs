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
