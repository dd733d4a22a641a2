//! `ws-manager`: one replica of the example WebSocket connection manager. Runs the
//! heartbeat service and the reclaimer on a store, owns outbound WebSocket
//! subscriptions, serves the HTTP API, and leaves cleanly on SIGTERM or Ctrl-C.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use heartbeat_core::HeartbeatOptions;
use ws_manager::backend::{Backend, BackendError};
use ws_manager::duration::parse_duration;
use ws_manager::manager::{AtRiskPolicy, Manager, ManagerConfig};

/// One replica of the example WebSocket connection manager.
#[derive(Debug, Parser)]
#[command(name = "ws-manager", version, about, long_about = None,
    after_help = "Environment: HOSTNAME (instance id), INSTANCE_HEARTBEAT_INTERVAL_SECONDS, \
INSTANCE_DISCOVERY_INTERVAL_SECONDS, INSTANCE_STALE_THRESHOLD_SECONDS (the seed's; flags win).\n\n\
Example:\n  HOSTNAME=wsm-1 ws-manager --store redis://127.0.0.1:6379 --listen 127.0.0.1:8081 \
--upstream ws://127.0.0.1:9001/ws --heartbeat-interval 1s --stale-threshold 5s")]
struct Cli {
    /// The shared store (memory:// or redis://host:port).
    #[arg(long, env = "WSM_STORE", default_value = "memory://")]
    store: String,
    /// Where the HTTP API listens.
    #[arg(long, env = "WSM_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Base WebSocket URL of the upstream; a subscription created with only a topic
    /// connects to <upstream>/<topic>.
    #[arg(long, env = "WSM_UPSTREAM")]
    upstream: Option<String>,
    /// How often the heartbeat is published (200ms, 1s, ...).
    #[arg(long, value_parser = parse_duration)]
    heartbeat_interval: Option<Duration>,
    /// How often peers are discovered and ownership is checked.
    #[arg(long, value_parser = parse_duration)]
    discovery_interval: Option<Duration>,
    /// A heartbeat unchanged for this long means its instance is dead.
    #[arg(long, value_parser = parse_duration)]
    stale_threshold: Option<Duration>,
    /// What to do with the sockets while this instance cannot publish its heartbeat.
    #[arg(long, value_enum, default_value_t = AtRiskPolicy::Release)]
    at_risk: AtRiskPolicy,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ws_manager::startup::init_logging();
    let runtime = match ws_manager::startup::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let env = HeartbeatOptions::builder_from_lookup(&|k| std::env::var(k).ok())?.build()?;
    let config = ManagerConfig {
        instance: env.instance_id().clone(),
        heartbeat_interval: cli.heartbeat_interval.unwrap_or(env.heartbeat_interval()),
        discovery_interval: cli.discovery_interval.unwrap_or(env.discovery_interval()),
        stale_threshold: cli.stale_threshold.unwrap_or(env.stale_threshold()),
        upstream: cli.upstream,
        advertise: Some(cli.listen.to_string()),
        at_risk: cli.at_risk,
    };
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .map_err(|e| {
            format!(
                "could not listen on {}: {e}; pick a free port with --listen",
                cli.listen
            )
        })?;
    let reconnect_within = config.heartbeat_interval.min(Duration::from_secs(1));
    let manager = start_with_retry(&cli.store, reconnect_within, config).await?;
    let shared = manager.shared();
    println!(
        "{}",
        serde_json::json!({
            "listening": cli.listen.to_string(),
            "instance": shared.instance.as_str(),
            "incarnation": shared.incarnation.to_string(),
        })
    );
    let app = ws_manager::api::router(shared);
    let (stop_http, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    shutdown_signal().await;
    tracing::info!("shutting down: closing sockets, then leaving the cluster");
    let left = manager.shutdown().await;
    let _ = stop_http.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    left?;
    Ok(())
}

/// Opens the store and joins, retrying while the store is unreachable (as a replica
/// starting while its store restarts would); gives up on a configuration error or a
/// shutdown signal.
async fn start_with_retry(
    store: &str,
    reconnect_within: Duration,
    config: ManagerConfig,
) -> Result<Manager, Box<dyn std::error::Error>> {
    let mut delay = Duration::from_millis(100);
    loop {
        let attempt = async {
            let backend = Backend::open(store, reconnect_within).await?;
            Ok::<_, Box<dyn std::error::Error>>(Manager::start(backend, config.clone()).await?)
        };
        match attempt.await {
            Ok(m) => return Ok(m),
            Err(e)
                if e.downcast_ref::<BackendError>()
                    .is_some_and(BackendError::is_config) =>
            {
                return Err(e);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "could not start; retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown_signal() => return Err("stopped before the store could be reached".into()),
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
