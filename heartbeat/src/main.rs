//! The `heartbeat` command: a demo on the embedded store, and (as backends land) an
//! agent and operator commands on any store.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Instance liveness and safe reclamation for horizontally scaled WebSocket services.
#[derive(Debug, Parser)]
#[command(name = "heartbeat", version, about, long_about = None,
    after_help = "Examples:\n  heartbeat demo\n  heartbeat demo --instances 5")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a cluster on the embedded store, crashes one instance and stops one
    /// gracefully, and prints the timeline of what the survivors saw.
    Demo(heartbeat::demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Command::Demo(args) => runtime.block_on(heartbeat::demo::run(args)),
    }
}
