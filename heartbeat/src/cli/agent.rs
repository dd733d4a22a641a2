//! `heartbeat agent`: one cluster member as a process. It publishes heartbeats,
//! discovers peers, logs membership events, serves `/healthz`, `/readyz` and
//! `/metrics`, and leaves the cluster cleanly on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use std::sync::Arc;

use heartbeat::reclaimer::{
    ConnectionRepository, ReclaimEvent, ReclaimPolicy, Reclaimer, ReclaimerHandle,
};
use heartbeat::{HeartbeatService, InstanceId, ServiceError};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::common::{
    CliError, CliResult, StoreArgs, TimingArgs, build_options, human, parse_duration, parse_id,
    shutdown_signal,
};
use super::{events, http};

/// Options of `heartbeat agent`.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// This instance's id [default: HOSTNAME, else a random GUID].
    #[arg(long, value_parser = parse_id, value_name = "ID")]
    id: Option<InstanceId>,
    /// The host:port peers reach this instance at (grpcHostPort)
    /// [default: WSM_GRPC_HOST:WSM_GRPC_PORT].
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    #[command(flatten)]
    timing: TimingArgs,
    /// Address of the /healthz, /readyz and /metrics endpoints (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR")]
    listen: SocketAddr,
    /// How long /healthz answers 200 before the first discovery completes
    /// [default: two discovery intervals plus the store timeout].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    startup_grace: Option<Duration>,
    /// How often the reclaimer sweeps the connection records (besides sweeping at once
    /// when a peer departs) [default: 30s].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    reclaim_interval: Option<Duration>,
    /// How long to keep retrying the first publish when the store answers too slowly
    /// or not at all (an unreachable store at start-up exits 3 at once).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", default_value = "30s")]
    join_timeout: Duration,
    /// Do not run the reclaimer. Orphans designated to this agent then wait until it
    /// leaves.
    #[arg(long)]
    no_reclaim: bool,
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(args: AgentArgs) -> CliResult {
    let started = Instant::now();
    let url = args.store.url()?;
    let mut builder = args.timing.builder(args.store.keys())?;
    if let Some(id) = args.id.clone() {
        builder = builder.instance_id(id);
    }
    if let Some(addr) = &args.advertise {
        builder = builder.grpc_host_port(addr.clone());
    }
    let options = build_options(builder)?;
    let metrics = install_metrics()?;
    // Listen before joining: a taken port must not leave a member behind.
    let listener = http::bind(args.listen).await.map_err(CliError::usage)?;
    let local = listener
        .local_addr()
        .map_err(|e| CliError::failure(format!("could not read the listening address: {e}")))?;

    // A sidecar (Dapr) may start after us: wait for it a while.
    let connection = args
        .store
        .connect(
            options.store_timeout().max(Duration::from_secs(1)),
            Duration::from_secs(30),
        )
        .await?;
    let service = join(&connection, &options, args.join_timeout).await?;
    tracing::info!(
        instance = %service.instance_id(),
        incarnation = %service.incarnation(),
        store = %url,
        listen = %local,
        heartbeat_interval = %human(options.heartbeat_interval()),
        discovery_interval = %human(options.discovery_interval()),
        stale_threshold = %human(options.stale_threshold()),
        "agent joined the cluster; serving /healthz, /readyz and /metrics on http://{local}"
    );

    let mut event_rx = service.events();
    // Events of the first discovery may have gone out before this subscription.
    let view = service.current_view();
    tracing::info!(
        live_peers = view.peers.len(),
        peers = %view.live_ids().map(|id| id.as_str()).collect::<Vec<_>>().join(","),
        "membership at start"
    );
    let event_log = tokio::spawn(async move {
        loop {
            match event_rx.recv().await {
                Ok(e) => events::log(&e),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "the event log fell behind and skipped events")
                }
                Err(RecvError::Closed) => break,
            }
        }
    });
    let upkeep = {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                metrics.run_upkeep();
            }
        })
    };

    let reclaim = if args.no_reclaim {
        tracing::info!("reclaimer disabled (--no-reclaim)");
        None
    } else {
        match connection.connections.clone() {
            Some(repo) => Some(start_reclaimer(repo, &service, args.reclaim_interval)),
            None => {
                tracing::warn!(
                    store = %url,
                    "this store has no connection repository in this build; the reclaimer does not run"
                );
                None
            }
        }
    };

    let health = http::Health {
        view: service.view(),
        started,
        grace: args.startup_grace.unwrap_or(options.max_view_age()),
        metrics,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, health, async move {
        let _ = stop_rx.await;
    }));

    let signal = tokio::select! {
        s = shutdown_signal() => s,
        r = wait_server(server) => {
            // The server stopped by itself: leave and report.
            if let Some(handle) = reclaim {
                handle.stop().await;
            }
            let left = service.leave().await;
            event_log.abort();
            upkeep.abort();
            let why = match r {
                Ok(()) => "the HTTP server stopped".to_owned(),
                Err(e) => e,
            };
            if let Err(e) = left {
                tracing::error!(error = %e, "could not leave cleanly");
            }
            return Err(CliError::failure(format!("{why}; the agent left the cluster")));
        }
    };
    tracing::info!(signal, "leaving the cluster");
    if let Some(handle) = reclaim {
        handle.stop().await;
    }
    let left = service.leave().await;
    let _ = stop_tx.send(());
    event_log.abort();
    upkeep.abort();
    match left {
        Ok(()) => {
            tracing::info!("left the cluster; peers see the departure at their next discovery");
            Ok(())
        }
        Err(e) => Err(CliError::store(
            &url,
            "could not leave cleanly (peers will judge this instance dead after the stale threshold)",
            &match e {
                ServiceError::Leave { source } => source,
                other => heartbeat::StoreError::Backend {
                    backend: "heartbeat",
                    message: other.to_string(),
                    source: None,
                },
            },
        )),
    }
}

/// Joins the cluster, retrying a slow or failing first publish until `limit`.
async fn join(
    connection: &heartbeat::Connection,
    options: &heartbeat::HeartbeatOptions,
    limit: Duration,
) -> CliResult<HeartbeatService> {
    let url = &connection.url;
    let deadline = Instant::now() + limit;
    let mut backoff = Duration::from_millis(100);
    loop {
        match HeartbeatService::start(connection.store.clone(), options.clone()).await {
            Ok(service) => return Ok(service),
            Err(ServiceError::Join { source, .. })
                if heartbeat::connect::is_unreachable(&source) && Instant::now() < deadline =>
            {
                tracing::warn!(error = %source, retry_in = ?backoff, "could not join yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(ServiceError::Join { source, .. }) => {
                return Err(CliError::store(url, "could not join", &source));
            }
            Err(other) => return Err(CliError::failure(format!("could not join: {other}"))),
        }
    }
}

/// Starts the background reclaimer and logs what it does. The agent holds no sockets:
/// a connection it wins is stamped with its id, and whatever serves that id (the
/// application beside it) must re-establish it.
fn start_reclaimer(
    repo: Arc<dyn ConnectionRepository>,
    service: &HeartbeatService,
    interval: Option<Duration>,
) -> ReclaimerHandle {
    let mut policy = ReclaimPolicy::default();
    if let Some(d) = interval {
        policy = policy.sweep_interval(d);
    }
    let reclaimer = Reclaimer::for_service(repo, service, policy);
    let mut events = reclaimer.events();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) => log_reclaim_event(&e),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "the reclaim log fell behind and skipped events")
                }
                Err(RecvError::Closed) => break,
            }
        }
    });
    let (handle, mut won) = reclaimer.spawn();
    tokio::spawn(async move {
        while let Some(w) = won.recv().await {
            tracing::warn!(
                event = "claimed",
                connection = %w.record.record.id,
                from = %w.from,
                from_incarnation = w.from_incarnation.map(|i| i.to_string()),
                reason = w.reason.label(),
                trigger = w.trigger.label(),
                "took over an orphaned connection; the process serving this instance id must re-establish it"
            );
        }
    });
    // The view may have become actionable before the reclaimer watched it: sweep once
    // now rather than a full interval later.
    handle.sweep_now();
    tracing::info!("reclaimer started");
    handle
}

fn log_reclaim_event(e: &ReclaimEvent) {
    match e {
        ReclaimEvent::SweepFinished {
            trigger,
            summary,
            won,
            conflicts,
        } => tracing::debug!(
            event = "sweep_finished",
            trigger = trigger.label(),
            records = summary.records,
            orphans = summary.orphans,
            won,
            conflicts,
            "reclaim sweep finished"
        ),
        ReclaimEvent::SweepSkipped { trigger, reason } => tracing::debug!(
            event = "sweep_skipped",
            trigger = trigger.label(),
            reason = %reason,
            "reclaim sweep skipped"
        ),
        ReclaimEvent::Braked(brake) => tracing::error!(
            event = "reclaim_braked",
            reason = brake.label(),
            detail = %brake,
            "reclaim brake engaged"
        ),
        ReclaimEvent::BrakeReleased => {
            tracing::info!(event = "reclaim_brake_released", "reclaim brake released")
        }
        ReclaimEvent::Claimed { .. } => {}
        ReclaimEvent::Conflict { id } => tracing::info!(
            event = "claim_conflict",
            connection = %id,
            "another instance claimed the connection first"
        ),
    }
}

async fn wait_server(server: tokio::task::JoinHandle<std::io::Result<()>>) -> Result<(), String> {
    match server.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("the HTTP server failed: {e}")),
        Err(e) => Err(format!("the HTTP server task failed: {e}")),
    }
}

/// Installs the Prometheus recorder for this process.
pub fn install_metrics() -> CliResult<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| CliError::failure(format!("could not set up metrics: {e}")))?;
    describe_metrics();
    Ok(handle)
}

fn describe_metrics() {
    metrics::describe_counter!(
        "heartbeat_publish_total",
        "Heartbeat publishes, by result (ok, error)"
    );
    metrics::describe_counter!(
        "heartbeat_discovery_total",
        "Discoveries (reads of the index and the records), by result"
    );
    metrics::describe_histogram!(
        "heartbeat_discovery_seconds",
        metrics::Unit::Seconds,
        "Time one discovery took"
    );
    metrics::describe_counter!(
        "heartbeat_membership_events_total",
        "Membership events observed, by kind"
    );
    metrics::describe_gauge!(
        "heartbeat_live_peers",
        "Peers whose life goes on, this instance included"
    );
    metrics::describe_gauge!(
        "heartbeat_view_healthy",
        "1 when the last discovery succeeded and is recent"
    );
    metrics::describe_gauge!(
        "heartbeat_self_at_risk",
        "1 when this instance could not publish for half the stale threshold"
    );
    metrics::describe_counter!(
        "heartbeat_index_pruned_total",
        "Index entries pruned because their record stayed missing"
    );
    metrics::describe_counter!(
        "reclaim_sweeps_total",
        "Reclaim sweeps, by trigger (periodic, departure, view_actionable, manual)"
    );
    metrics::describe_counter!(
        "reclaim_sweeps_skipped_total",
        "Reclaim sweeps skipped because the view could not be acted on, by reason"
    );
    metrics::describe_counter!(
        "reclaim_claims_total",
        "Claims of orphaned connections, by result (won, conflict, error, skipped)"
    );
    metrics::describe_counter!(
        "reclaim_brakes_total",
        "Times the reclaim brake engaged, by reason"
    );
    metrics::describe_gauge!(
        "reclaim_orphans",
        "Orphaned connections found by the last sweep"
    );
    metrics::describe_gauge!(
        "reclaim_brake_engaged",
        "1 while the reclaim brake is engaged"
    );
    // Present from the start, so dashboards and alerts see 0 rather than nothing.
    metrics::gauge!("heartbeat_self_at_risk").set(0.0);
    metrics::gauge!("heartbeat_view_healthy").set(0.0);
}
