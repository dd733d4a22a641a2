//! The `heartbeat` command: an agent (one cluster member with health and metrics
//! endpoints), operator commands (`members`, `reclaim`) on any store, and a demo on the
//! embedded store.
//!
//! Exit codes:
//! - 0: success;
//! - 1: any other failure;
//! - 2: usage or configuration error (flags, environment variables, store URL, or a
//!   backend not included in this build);
//! - 3: the store is unreachable.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    cli::run(cli::Cli::parse())
}
