//! The command line: subcommands, their help, and the dispatch to each of them.

pub mod agent;
pub mod common;
pub mod events;
pub mod http;
pub mod init_store;
pub mod members;
pub mod reclaim;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use common::{CliError, LogFormat};

const AFTER_HELP: &str = "\
Store URLs (--store or HEARTBEAT_STORE):
  memory://                                  in-process store; every process has its own, empty one
                                             (members and reclaim on memory:// see only their own process)
  redis://[user:password@]host[:port][/db]   Redis (feature redis); rediss:// for TLS
  redis+cluster://host1:port1,host2:port2    Redis Cluster seed nodes (rediss+cluster:// for TLS)
  dapr://host:port/<store>                   Dapr sidecar state API (feature dapr)
  dapr:///<store>                            sidecar from DAPR_HTTP_ENDPOINT or DAPR_HTTP_PORT; token from DAPR_API_TOKEN
  dynamodb://<table>?region=..&endpoint=..   DynamoDB (feature dynamodb); credentials from the AWS variables

Environment (the seed system's; flags override them):
  HOSTNAME                              instance id (agent; default a random GUID)
  INSTANCE_HEARTBEAT_INTERVAL_SECONDS   default 10
  INSTANCE_DISCOVERY_INTERVAL_SECONDS   default 30
  INSTANCE_STALE_THRESHOLD_SECONDS      default 60
  WSM_GRPC_HOST, WSM_GRPC_PORT          advertised host:port (agent)
  RUST_LOG                              log filter (default: info for agent, warn otherwise)
Durations on flags: milliseconds (500) or with units (500ms, 2s, 1m30s).

Exit codes:
  0  success
  1  any other failure
  2  usage or configuration error (flags, environment, store URL, backend not in this build)
  3  the store is unreachable

Examples:
  heartbeat demo
  heartbeat agent --store redis://localhost:6379 --id pod-1 --advertise 10.0.0.7:5002
  heartbeat agent --store redis://localhost:6379 --heartbeat-interval 200ms --discovery-interval 200ms --stale-threshold 1s --listen 127.0.0.1:9465
  heartbeat members --store redis://localhost:6379
  heartbeat members --store redis://localhost:6379 --json
  heartbeat members --store redis://localhost:6379 --watch
  heartbeat reclaim --store redis://localhost:6379 --dry-run
  heartbeat reclaim --store redis://localhost:6379 --apply --id pod-2
  heartbeat init-store 'dynamodb://heartbeats?region=eu-west-1'";

const AGENT_HELP: &str = "\
Endpoints on --listen:
  /healthz  200 while this instance's view may be acted on; 503 when it is at risk (it could not
            publish) or its view is unhealthy or stale (200 during the start-up grace period)
  /readyz   200 once the first discovery completed and the view may be acted on, else 503
  /metrics  Prometheus text: heartbeat_* (and reclaim_*) metrics
Membership events are logged as structured lines (--log-format json for one JSON object per line).
On SIGTERM or SIGINT the agent leaves the cluster: peers see it gone at their next discovery.
The agent is a full member and runs a reclaimer: orphaned connections designated to it are
stamped with its id. Run it where something serves that id (a sidecar sharing the pod's
HOSTNAME), or pass --no-reclaim.

Examples:
  heartbeat agent --store redis://localhost:6379
  HOSTNAME=pod-1 WSM_GRPC_HOST=10.0.0.7 WSM_GRPC_PORT=5002 heartbeat agent --store redis://redis:6379
  heartbeat agent --store redis://localhost:6379 --id pod-2 --heartbeat-interval 200ms \\
      --discovery-interval 250ms --stale-threshold 1s --listen 127.0.0.1:0 --log-format json
  heartbeat agent --store memory://   (a cluster of one, to try the endpoints)";

const MEMBERS_HELP: &str = "\
Statuses (one-shot): alive, suspected (lastSeenAt older than half the stale threshold), leaving,
dead (older than the threshold), missing (in the index, no record). Ages compare the writer's
lastSeenAt with this host's clock, so clock skew between hosts shows up in them.
With --watch, members are judged by change on this host's clock, as the members themselves do;
like any member, the watcher prunes index entries whose record stayed missing.
On memory:// this lists only this process's own (empty) store.

Examples:
  heartbeat members --store redis://localhost:6379
  heartbeat members --store redis://localhost:6379 --json | jq '.instances[].status'
  heartbeat members --store redis://localhost:6379 --watch --discovery-interval 1s --stale-threshold 10s";

const RECLAIM_HELP: &str = "\
Decisions: keep (the owner is this member or live), claim (an orphan: its owner's life ended,
or it was never seen and the record is older than a new member could stay undiscovered), or
wait (the view cannot be trusted, the owner may be new, the brake is engaged, or another
member is the orphan's designated claimer).
--apply stamps the orphans designated to the live member named by --id (or HOSTNAME) with that
member's id and current incarnation, each by compare-and-swap: a record that changed since it
was read is left alone, so two claimers never both win. Exit 1 when --apply could not act
(unhealthy view, brake).
It first watches the cluster for the stale threshold plus one discovery interval (--observe
changes that): an observer that watched for less may not know every live member yet, so
owners it never saw are not taken before then.
On memory:// there is nothing to reclaim (every process has its own empty store).

Examples:
  heartbeat reclaim --store redis://localhost:6379 --dry-run
  heartbeat reclaim --store redis://localhost:6379 --apply --id pod-2
  HOSTNAME=pod-2 heartbeat reclaim --store redis://redis:6379 --apply --stale-threshold 60s --discovery-interval 10s";

/// Instance liveness and safe reclamation for horizontally scaled WebSocket services.
#[derive(Debug, Parser)]
#[command(
    name = "heartbeat",
    version,
    about = "Instance liveness and safe reclamation of orphaned connections: run a cluster member, list members, reclaim orphans",
    long_about = None,
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Log line format (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs a cluster on the embedded store, crashes one instance and stops one
    /// gracefully, and prints the timeline of what the survivors saw.
    #[cfg(feature = "memory")]
    #[command(after_help = "Examples:\n  heartbeat demo\n  heartbeat demo --instances 5")]
    Demo(heartbeat::demo::DemoArgs),
    /// Runs one cluster member: heartbeats, discovery, event log, /healthz, /readyz and
    /// /metrics; leaves cleanly on SIGTERM or SIGINT.
    #[command(after_help = AGENT_HELP)]
    Agent(agent::AgentArgs),
    /// Lists the instances in the store (--watch: follows changes).
    #[command(after_help = MEMBERS_HELP)]
    Members(members::MembersArgs),
    /// One sweep over the stored connection records: prints each decision (--dry-run)
    /// and claims the orphans designated to a live member (--apply).
    #[command(after_help = RECLAIM_HELP)]
    Reclaim(reclaim::ReclaimArgs),
    /// Prepares a store for first use (creates the DynamoDB table; safe to run again).
    /// Other stores need no setup: checks that they answer.
    #[command(
        after_help = "Examples:\n  heartbeat init-store 'dynamodb://heartbeats?region=eu-west-1'\n  heartbeat init-store 'dynamodb://heartbeats?region=us-east-1&endpoint=http://127.0.0.1:5000'\n  heartbeat init-store redis://localhost:6379"
    )]
    InitStore(init_store::InitStoreArgs),
}

/// Runs the parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return CliError::failure(format!("could not start the async runtime: {e}")).report();
        }
    };
    let result = match cli.command {
        #[cfg(feature = "memory")]
        Command::Demo(args) => return runtime.block_on(heartbeat::demo::run(args)),
        Command::Agent(args) => {
            common::init_logging(cli.log_format, "info");
            runtime.block_on(agent::run(args))
        }
        Command::Members(args) => {
            common::init_logging(cli.log_format, "warn");
            runtime.block_on(members::run(args))
        }
        Command::Reclaim(args) => {
            common::init_logging(cli.log_format, "warn");
            runtime.block_on(reclaim::run(args))
        }
        Command::InitStore(args) => {
            common::init_logging(cli.log_format, "warn");
            runtime.block_on(init_store::run(args))
        }
    };
    // Background tasks (reconnecting clients) must not delay the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}
