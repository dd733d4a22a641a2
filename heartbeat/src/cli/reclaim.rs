//! `heartbeat reclaim`: one sweep over the stored connection records, from the command
//! line.
//!
//! It watches the cluster like any member (a non-publishing observer), reads every
//! connection record, and decides with the reclaimer's rules ([`decide`]): keep, reclaim
//! (and from whom) or wait (and why). `--dry-run` prints the decisions; `--apply` also
//! claims, by compare-and-swap, the orphans designated to the live member named by
//! `--id` (or `HOSTNAME`), stamping them with that member's id and current incarnation:
//! the member then owns them as if it had claimed them itself. Two claimers can never
//! both win a record, so running it beside the members' own reclaimers is safe.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use clap::{ArgGroup, Args};
use heartbeat::reclaimer::rendezvous::Rendezvous;
use heartbeat::reclaimer::{
    Claim, ClaimOutcome, ConnectionRepository, Decision, DeferReason, KeepReason, Now,
    ReclaimPolicy, RepositoryError, StoredConnection, decide,
};
use heartbeat::{HeartbeatService, InstanceId, MembershipView, OwnerState, StoreUrl, ViewHealth};
use tokio::time::Instant;

use super::common::{
    CliError, CliResult, StoreArgs, TimingArgs, build_options, human, parse_duration, parse_id,
};

/// Options of `heartbeat reclaim`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("mode").required(true).args(["dry_run", "apply"])))]
pub struct ReclaimArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Print each decision; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Claim the orphans designated to the member named by --id, by compare-and-swap.
    #[arg(long)]
    apply: bool,
    /// The live member on whose behalf orphans are claimed (its current incarnation is
    /// read from its heartbeat) [default: HOSTNAME].
    #[arg(long, value_parser = parse_id, value_name = "ID")]
    id: Option<InstanceId>,
    /// Watch the cluster this long before deciding [default: the stale threshold plus
    /// one discovery interval]. One read judges nobody dead by change, and an observer
    /// that has watched for less than that may not know every live member yet: owners
    /// it never saw are not taken before then (`wait (observer_not_settled)`).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    observe: Option<Duration>,
    /// Most claims in this sweep.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    max_claims: usize,
    /// How often peers are read while observing. Overrides
    /// INSTANCE_DISCOVERY_INTERVAL_SECONDS.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    discovery_interval: Option<Duration>,
    /// Unchanged for this long means dead. Overrides INSTANCE_STALE_THRESHOLD_SECONDS
    /// (default 60 s); use the cluster's value.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    stale_threshold: Option<Duration>,
    /// Time allowed for one store call (default 5 s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    store_timeout: Option<Duration>,
}

/// Runs `reclaim`.
pub async fn run(args: ReclaimArgs) -> CliResult {
    let keys = args.store.keys();
    let timing = TimingArgs {
        heartbeat_interval: Some(Duration::ZERO),
        discovery_interval: args.discovery_interval,
        stale_threshold: args.stale_threshold,
        store_timeout: args.store_timeout,
    };
    let options = build_options(
        timing
            .builder(keys.clone())?
            .instance_id(InstanceId::random()),
    )?;
    let claimer = match args.id.clone() {
        Some(id) => Some(id),
        None => match std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()) {
            Some(h) => Some(InstanceId::new(h).map_err(|e| {
                CliError::usage(format!(
                    "HOSTNAME is not a valid instance id: {e}; pass --id"
                ))
            })?),
            None => None,
        },
    };
    if args.apply && claimer.is_none() {
        return Err(CliError::usage(
            "--apply claims on behalf of a live member: name it with --id (or HOSTNAME)",
        ));
    }
    let timeout = args.store_timeout.unwrap_or(Duration::from_secs(5));
    let connection = args.store.connect(timeout, timeout).await?;
    let url = connection.url.clone();
    let Some(repo) = connection.connections.clone() else {
        return Err(CliError::usage(format!(
            "{url}: this build has no connection repository for the {} backend, so there are no connection records to sweep",
            url.backend()
        )));
    };
    if url == StoreUrl::Memory {
        eprintln!(
            "note: memory:// is a new, empty store in every process; there is nothing to reclaim"
        );
    }

    let service = HeartbeatService::start(connection.store.clone(), options.clone())
        .await
        .map_err(|e| CliError::failure(format!("could not watch {url}: {e}")))?;
    let mut view = service.discover_now().await;
    let observe = args
        .observe
        .unwrap_or(options.stale_threshold() + options.discovery_interval());
    if !observe.is_zero() {
        eprintln!("observing the cluster for {} ...", human(observe));
        tokio::time::sleep(observe).await;
        view = service.discover_now().await;
    }
    service.abort();
    if let ViewHealth::Unhealthy { reason, .. } = &view.health {
        return Err(CliError::unreachable(format!(
            "could not read the members from {url}: {reason}. Check the --store URL and the network between here and the store"
        )));
    }

    let decision_view = decision_view(&view, claimer.as_ref(), args.apply)?;
    let records = scan_all(&url, repo.as_ref(), timeout).await?;
    let policy = ReclaimPolicy::default().max_claims_per_sweep(args.max_claims);
    let now = Now::new(Instant::now(), Utc::now());
    let decisions = decide(&records, &decision_view, now, &policy);

    let mut outcomes: BTreeMap<usize, String> = BTreeMap::new();
    let mut won = 0;
    let mut conflicts = 0;
    let mut failure = None;
    if args.apply && decisions.not_actionable.is_none() && decisions.brake.is_none() {
        let claim = Claim {
            owner: decision_view.observer.clone(),
            incarnation: decision_view.observer_incarnation,
            at: Utc::now(),
        };
        for (i, orphan) in decisions.reclaims() {
            let result = timed(timeout, repo.claim(&records[i], &claim)).await;
            let text = match result {
                Ok(ClaimOutcome::Won(_)) => {
                    won += 1;
                    format!("CLAIMED for {} ({})", claim.owner, orphan.reason.label())
                }
                Ok(ClaimOutcome::Conflict) => {
                    conflicts += 1;
                    "conflict: the record changed since it was read (another claimer won)"
                        .to_owned()
                }
                Err(e) => {
                    let text = format!("error: {e}");
                    failure = Some(e);
                    outcomes.insert(i, text);
                    break;
                }
            };
            outcomes.insert(i, text);
        }
    }

    print!(
        "{}",
        report(&records, &decisions, &decision_view, &outcomes, args.apply)
    );
    let s = decisions.summary;
    let acting = view.peers.contains_key(&decision_view.observer);
    // kept + to take now + waiting = records; orphans span the last two (an orphan
    // designated to another member waits here).
    let mut summary = format!(
        "{} record(s): {} kept, {} to take now, {} waiting ({} orphan(s) found)",
        s.records, s.kept, s.reclaim, s.deferred, s.orphans
    );
    if acting {
        let _ = write!(
            summary,
            "; {} designated to {}",
            s.reclaim, decision_view.observer
        );
    }
    if args.apply {
        let _ = write!(summary, "; {won} claimed, {conflicts} conflict(s)");
    } else {
        summary.push_str(" (dry run: nothing changed)");
    }
    println!("{summary}");
    if let Some(why) = &decisions.not_actionable {
        println!("nothing may be reclaimed now: {why}");
    }
    if let Some(brake) = &decisions.brake {
        println!("brake: {brake}");
    }
    if let Some(e) = failure {
        return Err(repo_error(&url, "claiming", &e));
    }
    if args.apply {
        if let Some(why) = &decisions.not_actionable {
            return Err(CliError::failure(format!(
                "nothing was claimed: {why}; try again once the store is healthy"
            )));
        }
        if let Some(brake) = &decisions.brake {
            return Err(CliError::failure(format!("nothing was claimed: {brake}")));
        }
    }
    Ok(())
}

/// The view the decision is made on: the observer's, acting as `claimer` when it is a
/// live member (as that member's own reclaimer would). The observer does not publish,
/// but the member it acts for does, so the view is treated as authoritative.
fn decision_view(
    view: &MembershipView,
    claimer: Option<&InstanceId>,
    apply: bool,
) -> CliResult<MembershipView> {
    let mut v = view.clone();
    v.authoritative = true;
    let Some(id) = claimer else {
        return Ok(v);
    };
    match view.peers.get(id).map(|p| p.incarnation) {
        Some(Some(incarnation)) => {
            v.observer = id.clone();
            v.observer_incarnation = incarnation;
            Ok(v)
        }
        Some(None) if apply => Err(CliError::usage(format!(
            "{id} publishes no incarnation (a .NET writer): claims on its behalf cannot be stamped; run the reclaim from a member of this implementation"
        ))),
        None if apply => Err(CliError::usage(format!(
            "no live member named {id}: --apply claims on behalf of a live member (its id from --id or HOSTNAME); `heartbeat members` lists them"
        ))),
        _ => {
            eprintln!(
                "note: {id} is not a live member; showing the decisions without claiming for it"
            );
            Ok(v)
        }
    }
}

async fn scan_all(
    url: &StoreUrl,
    repo: &dyn ConnectionRepository,
    timeout: Duration,
) -> CliResult<Vec<StoredConnection>> {
    let mut records = Vec::new();
    let mut cursor = None;
    loop {
        let page = timed(timeout, repo.scan(cursor.as_ref(), 500))
            .await
            .map_err(|e| repo_error(url, "reading the connection records", &e))?;
        for bad in &page.invalid {
            eprintln!(
                "warning: skipping the record at {:?}: {}",
                bad.key, bad.error
            );
        }
        records.extend(page.records);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    // A scan may return a record twice (a page boundary moving under writes).
    let mut seen = std::collections::HashSet::new();
    records.retain(|r| seen.insert(r.record.id.clone()));
    Ok(records)
}

async fn timed<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, RepositoryError>>,
) -> Result<T, RepositoryError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(RepositoryError::Timeout {
            what: "connection repository call".to_owned(),
            after: timeout,
        }),
    }
}

fn repo_error(url: &StoreUrl, what: &str, e: &RepositoryError) -> CliError {
    match e {
        RepositoryError::Unavailable { .. } | RepositoryError::Timeout { .. } => {
            CliError::unreachable(format!(
                "{what}: {url} is unreachable: {e}. Check the --store URL and the network between here and the store"
            ))
        }
        RepositoryError::Store(s) => CliError::store(url, what, s),
        other => CliError::failure(format!("{what} on {url}: {other}")),
    }
}

fn owner_state_text(state: OwnerState) -> String {
    match state {
        OwnerState::Live => "live".to_owned(),
        OwnerState::Ended(reason) => format!("ended ({reason})"),
        OwnerState::Unknown => "never seen".to_owned(),
    }
}

fn report(
    records: &[StoredConnection],
    decisions: &heartbeat::reclaimer::Decisions<'_>,
    view: &MembershipView,
    outcomes: &BTreeMap<usize, String>,
    apply: bool,
) -> String {
    let live = Rendezvous::new(view.claimer_ids());
    let header = [
        "CONNECTION",
        "OWNER",
        "OWNER INCARNATION",
        "OWNER STATE",
        "DECISION",
    ];
    let rows: Vec<[String; 5]> = records
        .iter()
        .zip(&decisions.decisions)
        .enumerate()
        .map(|(i, (r, d))| {
            let rec = &r.record;
            let state = view.owner_state(&rec.owner, rec.owner_incarnation);
            let decision = match d {
                Decision::Keep(KeepReason::Own) => format!("keep: owned by {}", view.observer),
                Decision::Keep(KeepReason::OwnerLive) => "keep: owner is live".to_owned(),
                Decision::Reclaim(o) => match outcomes.get(&i) {
                    Some(text) => text.clone(),
                    None if apply => format!("not claimed ({})", o.reason.label()),
                    None => format!("would claim for {} ({})", view.observer, o.reason.label()),
                },
                Decision::Defer(DeferReason::NotDesignated) => format!(
                    "orphan: designated claimer is {}",
                    live.designate(rec.id.as_str())
                        .map_or_else(|| "nobody (no live member)".to_owned(), ToString::to_string)
                ),
                Decision::Defer(reason) => format!("wait ({})", reason.label()),
            };
            [
                rec.id.to_string(),
                rec.owner.to_string(),
                rec.owner_incarnation
                    .map_or_else(|| "-".to_owned(), |i| i.to_string()),
                owner_state_text(state),
                decision,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cols: [&str; 5]| {
        let mut l = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i == 4 {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4]]);
    }
    out
}
