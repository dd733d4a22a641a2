//! `heartbeat demo`: a small cluster on the embedded memory store, one crash and one
//! graceful stop, and the timeline of what the survivors observed.
//!
//! It exists so that a new user sees the protocol work in seconds with no setup, and so
//! that the detection latencies are visible rather than claimed.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use heartbeat_core::{HeartbeatOptions, HeartbeatService, InstanceId, KeyLayout, LeaveReason, MembershipEvent, Store};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Options of `heartbeat demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Number of instances to start (at least 3: one crashes, one leaves, one observes).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(3..=50))]
    pub instances: u16,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub heartbeat_ms: u64,
    /// Discovery interval in milliseconds.
    #[arg(long, default_value_t = 250)]
    pub discovery_ms: u64,
    /// Stale threshold in milliseconds (at least two heartbeat intervals).
    #[arg(long, default_value_t = 1200)]
    pub threshold_ms: u64,
}

/// One line of the timeline.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Time since the demo started.
    pub at: Duration,
    /// Who observed or acted.
    pub who: String,
    /// What happened.
    pub what: String,
}

/// Runs the demo and prints the timeline; exits 0 when both departures were detected.
pub async fn run(args: DemoArgs) -> ExitCode {
    match demo(&args).await {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::from(1)
        }
    }
}

struct Node {
    id: InstanceId,
    service: HeartbeatService,
}

fn options(id: &InstanceId, args: &DemoArgs, port: u16) -> Result<HeartbeatOptions, String> {
    HeartbeatOptions::builder(id.clone())
        .grpc_host_port(format!("127.0.0.1:{port}"))
        .heartbeat_interval(Duration::from_millis(args.heartbeat_ms))
        .discovery_interval(Duration::from_millis(args.discovery_ms))
        .stale_threshold(Duration::from_millis(args.threshold_ms))
        .keys(KeyLayout::default())
        .build()
        .map_err(|e| e.to_string())
}

/// Forwards one instance's events to the timeline channel.
fn watch_events(node: &Node, tx: mpsc::UnboundedSender<(Instant, String, MembershipEvent)>) {
    let mut events = node.service.events();
    let who = node.id.to_string();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            if tx.send((Instant::now(), who.clone(), e)).is_err() {
                break;
            }
        }
    });
}

async fn demo(args: &DemoArgs) -> Result<String, String> {
    let store: Arc<dyn Store> = Arc::new(heartbeat_memory::MemoryStore::new());
    let start = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut out = String::new();
    let mut line = |at: Instant, who: &str, what: &str| {
        let _ = writeln!(out, "{:>9.3}s  {who:<8} {what}", at.duration_since(start).as_secs_f64());
    };
    let threshold = Duration::from_millis(args.threshold_ms);
    let discovery = Duration::from_millis(args.discovery_ms);
    line(start, "demo", &format!(
        "{} instances on the embedded store; beats every {} ms, discovery every {} ms, stale threshold {} ms",
        args.instances, args.heartbeat_ms, args.discovery_ms, args.threshold_ms
    ));

    let mut nodes = Vec::new();
    for n in 1..=args.instances {
        let id = InstanceId::new(format!("node-{n}")).map_err(|e| e.to_string())?;
        let service = HeartbeatService::start(store.clone(), options(&id, args, 7000 + n)?)
            .await
            .map_err(|e| e.to_string())?;
        line(Instant::now(), id.as_str(), &format!("started (incarnation {})", service.incarnation()));
        let node = Node { id, service };
        watch_events(&node, tx.clone());
        nodes.push(node);
    }
    drop(tx);
    tokio::time::sleep(discovery * 2 + Duration::from_millis(100)).await;

    while let Ok((at, observer, event)) = rx.try_recv() {
        if let Some(text) = describe(&observer, &event) {
            line(at, &observer, &text);
        }
    }
    let leaver = nodes.pop().ok_or("no instance to stop")?;
    let crasher = nodes.pop().ok_or("no instance to crash")?;
    // Everybody but the crashed instance sees the crash, the leaver included.
    let crash_survivors = nodes.len() + 1;
    let survivors = nodes.len();
    let crash_at = Instant::now();
    line(crash_at, crasher.id.as_str(), "CRASH: stops publishing without leaving");
    let crashed = crasher.id.clone();
    crasher.service.abort();

    let crash_seen = collect(&mut rx, &mut line, &crashed, LeaveReason::Expired, crash_survivors, threshold * 3).await;
    let leave_at = Instant::now();
    line(leave_at, leaver.id.as_str(), "STOP: leaves gracefully");
    let left = leaver.id.clone();
    leaver.service.leave().await.map_err(|e| e.to_string())?;
    let leave_seen = collect(&mut rx, &mut line, &left, LeaveReason::Graceful, survivors, threshold * 3).await;
    for node in nodes {
        node.service.abort();
    }

    let _ = writeln!(out);
    let _ = writeln!(out, "summary");
    summarize(&mut out, "crash of", &crashed, crash_at, &crash_seen, crash_survivors, threshold + discovery);
    summarize(&mut out, "graceful stop of", &left, leave_at, &leave_seen, survivors, discovery);
    if crash_seen.len() < crash_survivors || leave_seen.len() < survivors {
        return Err(format!("{out}\nnot every survivor saw both departures"));
    }
    Ok(out)
}

/// Prints events until every survivor has seen `who` leave for `reason`, or `limit`.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<(Instant, String, MembershipEvent)>,
    line: &mut impl FnMut(Instant, &str, &str),
    who: &InstanceId,
    reason: LeaveReason,
    survivors: usize,
    limit: Duration,
) -> Vec<Instant> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + limit;
    while seen.len() < survivors {
        let Ok(Some((at, observer, event))) = tokio::time::timeout_at(deadline, rx.recv()).await else { break };
        if let Some(text) = describe(&observer, &event) {
            line(at, &observer, &text);
        }
        if matches!(&event, MembershipEvent::Left { id, reason: r, .. } if id == who && *r == reason) {
            seen.push(at);
        }
    }
    seen
}

fn describe(observer: &str, event: &MembershipEvent) -> Option<String> {
    Some(match event {
        MembershipEvent::Joined { id, .. } if id.as_str() == observer => "sees itself in the store".to_owned(),
        MembershipEvent::Joined { id, grpc_host_port, .. } => {
            format!("sees {id} join at {}", grpc_host_port.as_deref().unwrap_or("?"))
        }
        MembershipEvent::Left { id, reason, .. } => format!("sees {id} LEAVE ({reason})"),
        MembershipEvent::Suspected { id, unchanged_for } => {
            format!("suspects {id} (unchanged for {} ms)", unchanged_for.as_millis())
        }
        MembershipEvent::Recovered { id } => format!("sees {id} recover"),
        _ => return None,
    })
}

fn summarize(out: &mut String, what: &str, who: &InstanceId, at: Instant, seen: &[Instant], survivors: usize, bound: Duration) {
    let worst = seen.iter().map(|s| s.duration_since(at)).max();
    let _ = match worst {
        Some(w) => writeln!(
            out,
            "  {what} {who}: seen by {}/{survivors} survivors, slowest after {} ms (bound {} ms)",
            seen.len(),
            w.as_millis(),
            bound.as_millis()
        ),
        None => writeln!(out, "  {what} {who}: NOT detected"),
    };
}
