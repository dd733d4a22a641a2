//! `heartbeat demo`: a small cluster on the embedded memory store, each instance owning
//! connections; one crash and one graceful stop; and the timeline of what the survivors
//! observed and took over.
//!
//! It exists so that a new user sees the whole protocol work in seconds with no setup:
//! detection latencies and takeovers are measured and shown, not claimed. The demo
//! checks its own outcome and exits non-zero when a departure went unseen or a
//! connection was not taken over exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use heartbeat_core::{
    HeartbeatOptions, HeartbeatService, InstanceId, KeyLayout, LeaveReason, MembershipEvent, Store,
};
use reclaimer::{
    ConnectionId, ConnectionRecord, ConnectionRepository, MemoryConnections, ReclaimPolicy,
    Reclaimer, ReclaimerHandle, WonConnection,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Options of `heartbeat demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Number of instances to start (at least 3: one crashes, one leaves, one observes).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(3..=50))]
    pub instances: u16,
    /// Connections each instance owns at the start.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub connections: u16,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_ms: u64,
    /// Discovery interval in milliseconds.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..))]
    pub discovery_ms: u64,
    /// Stale threshold in milliseconds (at least two heartbeat intervals).
    #[arg(long, default_value_t = 1200, value_parser = clap::value_parser!(u64).range(1..))]
    pub threshold_ms: u64,
}

/// Runs the demo and prints the timeline; exits 0 when both departures were detected
/// and every orphaned connection was taken over exactly once.
pub async fn run(args: DemoArgs) -> ExitCode {
    let probe = InstanceId::new("node-1").map_err(|e| e.to_string());
    if let Err(e) = probe.and_then(|id| options(&id, &args, 7001)) {
        eprintln!(
            "error: invalid demo timings (--heartbeat-ms {}, --discovery-ms {}, --threshold-ms {}): {e}",
            args.heartbeat_ms, args.discovery_ms, args.threshold_ms
        );
        eprintln!("The stale threshold must be at least two heartbeat intervals.");
        return ExitCode::from(2);
    }
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

/// Something an instance noticed or did, for the timeline.
enum Note {
    Membership(MembershipEvent),
    Won(Box<WonConnection>),
}

struct Node {
    id: InstanceId,
    service: HeartbeatService,
    reclaimer: ReclaimerHandle,
}

/// The timeline, with times relative to the start. Notes arrive a little out of order
/// (each instance forwards its own), so lines are sorted by time when rendered.
struct Timeline {
    start: Instant,
    lines: Vec<(Instant, String)>,
}

impl Timeline {
    fn line(&mut self, at: Instant, who: &str, what: &str) {
        let secs = at.saturating_duration_since(self.start).as_secs_f64();
        self.lines
            .push((at, format!("{secs:>9.3}s  {who:<8} {what}\n")));
    }

    fn render(mut self) -> String {
        self.lines.sort_by_key(|(at, _)| *at);
        self.lines.into_iter().map(|(_, l)| l).collect()
    }
}

/// What happened to one departed instance, measured.
struct Departure {
    id: InstanceId,
    at: Instant,
    reason: LeaveReason,
    owned: BTreeSet<ConnectionId>,
    seen: Vec<Instant>,
    /// connection -> (winner, when), one entry per won claim.
    taken: Vec<(ConnectionId, String, Instant)>,
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

async fn start_node(
    n: u16,
    args: &DemoArgs,
    store: &Arc<dyn Store>,
    repo: &Arc<MemoryConnections>,
    tx: &mpsc::UnboundedSender<(Instant, String, Note)>,
) -> Result<Node, String> {
    let id = InstanceId::new(format!("node-{n}")).map_err(|e| e.to_string())?;
    let service = HeartbeatService::start(store.clone(), options(&id, args, 7000 + n)?)
        .await
        .map_err(|e| e.to_string())?;
    for c in 1..=args.connections {
        let cid = ConnectionId::new(format!("conn-{n}-{c:02}")).map_err(|e| e.to_string())?;
        let url = format!("wss://feed.example.test/stream/{n}/{c}");
        let record = ConnectionRecord::new(
            cid,
            url,
            id.clone(),
            Some(service.incarnation()),
            chrono::Utc::now(),
        );
        repo.create(&record).await.map_err(|e| e.to_string())?;
    }
    let policy = ReclaimPolicy::default().sweep_interval(Duration::from_millis(args.discovery_ms));
    let (reclaimer, mut won) = Reclaimer::for_service(repo.clone(), &service, policy).spawn();
    let who = id.to_string();
    let mut events = service.events();
    let (events_tx, won_tx, who2) = (tx.clone(), tx.clone(), who.clone());
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            if events_tx
                .send((Instant::now(), who.clone(), Note::Membership(e)))
                .is_err()
            {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(w) = won.recv().await {
            if won_tx
                .send((Instant::now(), who2.clone(), Note::Won(Box::new(w))))
                .is_err()
            {
                break;
            }
        }
    });
    Ok(Node {
        id,
        service,
        reclaimer,
    })
}

async fn owned_by(
    repo: &MemoryConnections,
    owner: &InstanceId,
) -> Result<BTreeSet<ConnectionId>, String> {
    Ok(all_records(repo)
        .await?
        .into_iter()
        .filter(|(_, o)| o == owner)
        .map(|(c, _)| c)
        .collect())
}

async fn all_records(repo: &MemoryConnections) -> Result<Vec<(ConnectionId, InstanceId)>, String> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = repo
            .scan(cursor.as_ref(), 500)
            .await
            .map_err(|e| e.to_string())?;
        out.extend(
            page.records
                .into_iter()
                .map(|s| (s.record.id, s.record.owner)),
        );
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(out),
        }
    }
}

async fn demo(args: &DemoArgs) -> Result<String, String> {
    let store: Arc<dyn Store> = Arc::new(heartbeat_memory::MemoryStore::new());
    let repo = Arc::new(MemoryConnections::new());
    let mut timeline = Timeline {
        start: Instant::now(),
        lines: Vec::new(),
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let threshold = Duration::from_millis(args.threshold_ms);
    let discovery = Duration::from_millis(args.discovery_ms);
    timeline.line(timeline.start, "demo", &format!(
        "{} instances with {} connections each on the embedded store; beats every {} ms, discovery every {} ms, stale threshold {} ms",
        args.instances, args.connections, args.heartbeat_ms, args.discovery_ms, args.threshold_ms
    ));

    let mut nodes = Vec::new();
    for n in 1..=args.instances {
        let node = start_node(n, args, &store, &repo, &tx).await?;
        timeline.line(
            Instant::now(),
            node.id.as_str(),
            &format!(
                "started (incarnation {}), owns {} connections",
                node.service.incarnation(),
                args.connections
            ),
        );
        nodes.push(node);
    }
    drop(tx);
    tokio::time::sleep(discovery * 2 + Duration::from_millis(100)).await;
    let mut departures: Vec<Departure> = Vec::new();
    drain(&mut rx, &mut timeline, &mut departures);

    let leaver = nodes.pop().ok_or("no instance to stop")?;
    let crasher = nodes.pop().ok_or("no instance to crash")?;

    // The crash: the process stops, its reclaimer with it, nobody is told.
    let crash_owned = owned_by(&repo, &crasher.id).await?;
    departures.push(Departure {
        id: crasher.id.clone(),
        at: Instant::now(),
        reason: LeaveReason::Expired,
        owned: crash_owned,
        seen: Vec::new(),
        taken: Vec::new(),
    });
    timeline.line(
        Instant::now(),
        crasher.id.as_str(),
        "CRASH: stops publishing without leaving",
    );
    drop(crasher.reclaimer);
    crasher.service.abort();
    let crash_observers = nodes.len() + 1; // the leaver still runs
    wait_until_done(
        &mut rx,
        &mut timeline,
        &mut departures,
        crash_observers,
        threshold * 4,
    )
    .await;

    // The graceful stop: stop reclaiming first, then leave.
    let leave_owned = owned_by(&repo, &leaver.id).await?;
    departures.push(Departure {
        id: leaver.id.clone(),
        at: Instant::now(),
        reason: LeaveReason::Graceful,
        owned: leave_owned,
        seen: Vec::new(),
        taken: Vec::new(),
    });
    timeline.line(
        Instant::now(),
        leaver.id.as_str(),
        "STOP: leaves gracefully",
    );
    leaver.reclaimer.stop().await;
    leaver.service.leave().await.map_err(|e| e.to_string())?;
    let observers = nodes.len();
    wait_until_done(
        &mut rx,
        &mut timeline,
        &mut departures,
        observers,
        threshold * 4,
    )
    .await;

    let survivors: BTreeSet<InstanceId> = nodes.iter().map(|n| n.id.clone()).collect();
    let final_owners = all_records(&repo).await?;
    for node in nodes {
        node.reclaimer.stop().await;
        node.service.abort();
    }
    summarize(
        timeline,
        &departures,
        [crash_observers, observers],
        // One poll to see the last change, the threshold, and one more poll when the
        // threshold falls on a poll.
        threshold + discovery * 2,
        &survivors,
        &final_owners,
    )
}

/// Moves pending notes into the timeline and the departures they belong to.
fn drain(
    rx: &mut mpsc::UnboundedReceiver<(Instant, String, Note)>,
    timeline: &mut Timeline,
    departures: &mut [Departure],
) {
    while let Ok((at, who, note)) = rx.try_recv() {
        record(at, &who, note, timeline, departures);
    }
}

fn record(
    at: Instant,
    who: &str,
    note: Note,
    timeline: &mut Timeline,
    departures: &mut [Departure],
) {
    match note {
        Note::Membership(event) => {
            if let MembershipEvent::Left { id, reason, .. } = &event
                && let Some(d) = departures
                    .iter_mut()
                    .find(|d| &d.id == id && d.reason == *reason)
            {
                d.seen.push(at);
            }
            if let Some(text) = describe(who, &event) {
                timeline.line(at, who, &text);
            }
        }
        Note::Won(won) => {
            let cid = won.record.record.id.clone();
            let from = won.from.clone();
            if let Some(d) = departures.iter_mut().rev().find(|d| d.id == from) {
                let after = at.saturating_duration_since(d.at).as_millis();
                timeline.line(
                    at,
                    who,
                    &format!("takes over {cid} from {from} ({after} ms after it went)"),
                );
                d.taken.push((cid, who.to_owned(), at));
            } else {
                timeline.line(at, who, &format!("takes over {cid} from {from}"));
            }
        }
    }
}

/// Waits until the latest departure was seen by every observer and all its connections
/// were taken over, or `limit` passed.
async fn wait_until_done(
    rx: &mut mpsc::UnboundedReceiver<(Instant, String, Note)>,
    timeline: &mut Timeline,
    departures: &mut [Departure],
    observers: usize,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(d) = departures.last() {
            let taken: BTreeSet<&ConnectionId> = d.taken.iter().map(|(c, _, _)| c).collect();
            if d.seen.len() >= observers && d.owned.iter().all(|c| taken.contains(c)) {
                // Give duplicate claims, if any, one more discovery to show up.
                tokio::time::sleep(Duration::from_millis(300)).await;
                drain(rx, timeline, departures);
                return;
            }
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((at, who, note))) => record(at, &who, note, timeline, departures),
            _ => return,
        }
    }
}

fn describe(observer: &str, event: &MembershipEvent) -> Option<String> {
    Some(match event {
        MembershipEvent::Joined { id, .. } if id.as_str() == observer => {
            "sees itself in the store".to_owned()
        }
        MembershipEvent::Joined {
            id, grpc_host_port, ..
        } => {
            format!(
                "sees {id} join at {}",
                grpc_host_port.as_deref().unwrap_or("?")
            )
        }
        MembershipEvent::Left { id, reason, .. } => format!("sees {id} LEAVE ({reason})"),
        MembershipEvent::Suspected { id, unchanged_for } => {
            format!(
                "suspects {id} (unchanged for {} ms)",
                unchanged_for.as_millis()
            )
        }
        MembershipEvent::Recovered { id } => format!("sees {id} recover"),
        _ => return None,
    })
}

fn summarize(
    timeline: Timeline,
    departures: &[Departure],
    observers: [usize; 2],
    crash_bound: Duration,
    survivors: &BTreeSet<InstanceId>,
    final_owners: &[(ConnectionId, InstanceId)],
) -> Result<String, String> {
    let mut out = timeline.render();
    let mut problems = Vec::new();
    let _ = writeln!(out, "\nsummary");
    for (d, expected_observers) in departures.iter().zip(observers) {
        let what = if d.reason == LeaveReason::Graceful {
            "graceful stop of"
        } else {
            "crash of"
        };
        match d
            .seen
            .iter()
            .map(|s| s.saturating_duration_since(d.at))
            .max()
        {
            Some(w) if d.seen.len() >= expected_observers => {
                let bound = if d.reason == LeaveReason::Graceful {
                    "about one discovery interval".to_owned()
                } else {
                    format!("bound {} ms", crash_bound.as_millis())
                };
                let _ = writeln!(
                    out,
                    "  {what} {}: seen by {}/{expected_observers} observers, the slowest after {} ms ({bound})",
                    d.id,
                    d.seen.len(),
                    w.as_millis()
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "  {what} {}: seen by {}/{expected_observers} observers",
                    d.id,
                    d.seen.len()
                );
                problems.push(format!(
                    "the {what} {} was not seen by every observer",
                    d.id
                ));
            }
        }
        let mut claims: BTreeMap<&ConnectionId, Vec<&str>> = BTreeMap::new();
        for (c, winner, _) in &d.taken {
            claims.entry(c).or_default().push(winner);
        }
        let once = d
            .owned
            .iter()
            .filter(|c| claims.get(c).is_some_and(|w| w.len() == 1))
            .count();
        let slowest = d
            .taken
            .iter()
            .map(|(_, _, at)| at.saturating_duration_since(d.at).as_millis())
            .max()
            .unwrap_or(0);
        let mut by_winner: BTreeMap<&str, usize> = BTreeMap::new();
        for winners in claims.values() {
            for w in winners {
                *by_winner.entry(w).or_default() += 1;
            }
        }
        let spread: Vec<String> = by_winner.iter().map(|(w, n)| format!("{w}: {n}")).collect();
        let _ = writeln!(
            out,
            "    its {} connections: {once} taken over exactly once ({}), all within {slowest} ms",
            d.owned.len(),
            spread.join(", ")
        );
        if once != d.owned.len() || claims.values().any(|w| w.len() > 1) {
            problems.push(format!(
                "connections of {} were not each taken over exactly once",
                d.id
            ));
        }
    }
    let stray: Vec<String> = final_owners
        .iter()
        .filter(|(_, owner)| !survivors.contains(owner))
        .map(|(c, o)| format!("{c} (owner {o})"))
        .collect();
    let _ = writeln!(
        out,
        "  at the end every connection is owned by a live instance: {}",
        if stray.is_empty() { "yes" } else { "NO" }
    );
    if !stray.is_empty() {
        problems.push(format!(
            "connections left with departed owners: {}",
            stray.join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        // The timeline is the evidence: keep it on stdout, the verdict on stderr.
        print!("{out}");
        Err(problems.join("; "))
    }
}
