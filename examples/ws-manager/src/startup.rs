//! What both binaries (`ws-manager` and `upstream`) do before their work: logging to
//! stderr filtered by `RUST_LOG` (default `info`), and a two-thread tokio runtime.

use std::process::ExitCode;

use tokio::runtime::Runtime;

/// Installs the log subscriber: stderr, filter from `RUST_LOG`, `info` by default.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// A multi-threaded runtime on two workers, or the exit code to leave with (after
/// saying why on stderr).
pub fn runtime() -> Result<Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: could not start the async runtime: {e}");
            ExitCode::from(1)
        })
}
