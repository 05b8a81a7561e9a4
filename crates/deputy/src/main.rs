//! `deputy`: the command line. Thin: every command but `serve` and `demo` is a call to
//! the daemon's HTTP API through `deputy-client`.

mod cli;
mod cmd;
mod config;
mod connect;
mod render;
mod workflow;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging(&cli.command);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("deputy: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cmd::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("deputy: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(command: &cli::Command) {
    use tracing_subscriber::EnvFilter;
    // The daemon logs at info; client commands only say what went wrong.
    let default = match command {
        cli::Command::Serve(_) => "info",
        _ => "warn",
    };
    let filter = EnvFilter::try_from_env("DEPUTY_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        // A log that cannot be written (stderr on a full disk) must not take the daemon
        // down: the subscriber would report it with `eprintln!`, which panics then.
        .log_internal_errors(false)
        .init();
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
