//! `upstream`: the WebSocket feed the example managers subscribe to. Streams a message
//! per interval to every socket, and reports over HTTP, per subscription, how many
//! sockets are open, who holds them, and every gap (time without a socket).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ws_manager::duration::parse_duration;
use ws_manager::upstream::Upstream;

/// A WebSocket feed that counts sockets and gaps per subscription.
#[derive(Debug, Parser)]
#[command(name = "upstream", version, about, long_about = None,
    after_help = "Subscriptions connect to ws://<ws>/ws/<key>; the report is at http://<http>/subscriptions.")]
struct Cli {
    /// Where the WebSocket server listens.
    #[arg(long, default_value = "127.0.0.1:9001")]
    ws: SocketAddr,
    /// Where the HTTP report listens.
    #[arg(long, default_value = "127.0.0.1:9002")]
    http: SocketAddr,
    /// How often each socket gets a message.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    interval: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ws_manager::startup::init_logging();
    let runtime = match ws_manager::startup::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async {
        match Upstream::default()
            .bind(cli.ws, cli.http, cli.interval)
            .await
        {
            Ok((ws, http, serve)) => {
                println!(
                    "{}",
                    serde_json::json!({ "ws": ws.to_string(), "http": http.to_string() })
                );
                tokio::select! {
                    () = serve => ExitCode::SUCCESS,
                    _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        }
    })
}
