//! `deputy serve`: the daemon in the foreground until SIGINT or SIGTERM.

use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;

pub async fn run(cfg: &Config) -> anyhow::Result<u8> {
    let dc = cfg.daemon_config()?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    deputy_server::daemon::run(dc, shutdown).await?;
    Ok(0)
}
