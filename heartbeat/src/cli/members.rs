//! `heartbeat members`: who is in the cluster.
//!
//! One-shot, it reads the index and every record once. One read cannot judge liveness
//! by change, so it shows each record's own status and the age of its `lastSeenAt`
//! against this host's clock (the writer's clock: skew between hosts shows up here),
//! compared with the stale threshold. With `--watch` it runs a non-publishing observer
//! (heartbeat interval 0) that judges by change on this host's monotonic clock, as the
//! members themselves do, and prints every change.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::Args;
use heartbeat::{
    Connection, HeartbeatService, InstanceHeartbeat, InstanceId, InstanceStatus, KeyLayout,
    StoreError, StoreUrl,
};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::common::{
    CliError, CliResult, StoreArgs, TimingArgs, build_options, human, parse_duration,
    shutdown_signal,
};
use super::events;

/// Options of `heartbeat members`.
#[derive(Debug, Clone, Args)]
pub struct MembersArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Print JSON (one object; with --watch, one object per change and line).
    #[arg(long)]
    json: bool,
    /// Keep reading every discovery interval and print each change (judged by change
    /// on this host's clock) until interrupted.
    #[arg(long)]
    watch: bool,
    /// How often --watch reads the store. Overrides INSTANCE_DISCOVERY_INTERVAL_SECONDS.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    discovery_interval: Option<Duration>,
    /// Unchanged (or older) for this long means dead. Overrides
    /// INSTANCE_STALE_THRESHOLD_SECONDS (default 60 s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    stale_threshold: Option<Duration>,
    /// Time allowed for one store call (default 5 s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    store_timeout: Option<Duration>,
}

/// How one instance looks in one read.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The id as stored in the index.
    pub id: String,
    /// alive, suspected, leaving, dead, missing or unreadable.
    pub status: &'static str,
    /// The record, if it parsed.
    pub record: Option<InstanceHeartbeat>,
    /// `now - lastSeenAt` in milliseconds (negative: the writer's clock is ahead).
    pub age_ms: Option<i64>,
    /// Why the record does not parse.
    pub error: Option<String>,
}

/// Judges one read: the record's own status, then its age against the threshold.
pub fn judge(id: &str, value: Option<&[u8]>, now: DateTime<Utc>, threshold: Duration) -> Row {
    let Some(bytes) = value else {
        return Row {
            id: id.to_owned(),
            status: "missing",
            record: None,
            age_ms: None,
            error: None,
        };
    };
    match InstanceHeartbeat::from_json(bytes) {
        Err(e) => Row {
            id: id.to_owned(),
            status: "unreadable",
            record: None,
            age_ms: None,
            error: Some(e.to_string()),
        },
        Ok(record) => {
            let age_ms = (now - record.last_seen_at).num_milliseconds();
            let threshold_ms = i64::try_from(threshold.as_millis()).unwrap_or(i64::MAX);
            let status = if record.status == InstanceStatus::Leaving {
                "leaving"
            } else if age_ms > threshold_ms {
                "dead"
            } else if age_ms > threshold_ms / 2 {
                "suspected"
            } else {
                "alive"
            };
            Row {
                id: id.to_owned(),
                status,
                record: Some(record),
                age_ms: Some(age_ms),
                error: None,
            }
        }
    }
}

/// Reads the index and every record once.
pub async fn snapshot(
    connection: &Connection,
    keys: &KeyLayout,
    timeout: Duration,
    threshold: Duration,
) -> CliResult<Vec<Row>> {
    let url = &connection.url;
    let store = &connection.store;
    let index_key = keys.index_key();
    let members: BTreeSet<String> = timed(
        url,
        "reading the index",
        timeout,
        index_key,
        store.index_members(index_key),
    )
    .await?;
    let mut ids = Vec::new();
    for m in members {
        match InstanceId::new(m.as_str()) {
            Ok(id) => ids.push(id),
            Err(e) => eprintln!(
                "warning: ignoring index entry {:?}: {e}",
                m.escape_debug().to_string()
            ),
        }
    }
    let key_list: Vec<String> = ids.iter().map(|id| keys.heartbeat_key(id)).collect();
    let values = timed(
        url,
        "reading the heartbeat records",
        timeout,
        "records",
        store.get_many(&key_list),
    )
    .await?;
    if values.len() != ids.len() {
        return Err(CliError::failure(format!(
            "{url} returned {} records for {} keys; the store's bulk read is broken",
            values.len(),
            ids.len()
        )));
    }
    let now = Utc::now();
    Ok(ids
        .iter()
        .zip(values)
        .map(|(id, v)| {
            judge(
                id.as_str(),
                v.as_ref().map(|v| v.value.as_slice()),
                now,
                threshold,
            )
        })
        .collect())
}

async fn timed<T>(
    url: &StoreUrl,
    what: &str,
    timeout: Duration,
    key: &str,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> CliResult<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(CliError::store(url, what, &e)),
        Err(_) => Err(CliError::store(
            url,
            what,
            &StoreError::Timeout {
                key: key.to_owned(),
                after: timeout,
            },
        )),
    }
}

fn age_text(age_ms: i64) -> String {
    if age_ms >= 0 {
        format!(
            "{} ago",
            human(Duration::from_millis(age_ms.unsigned_abs()))
        )
    } else {
        format!(
            "{} ahead",
            human(Duration::from_millis(age_ms.unsigned_abs()))
        )
    }
}

/// The table of `members`.
pub fn table(rows: &[Row], threshold: Duration) -> String {
    let header = [
        "INSTANCE",
        "STATUS",
        "LAST BEAT (writer clock)",
        "INCARNATION",
        "SEQ",
        "GRPC",
    ];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let rec = r.record.as_ref();
            [
                r.id.clone(),
                r.status.to_owned(),
                r.age_ms
                    .map(age_text)
                    .or_else(|| r.error.as_ref().map(|_| "-".to_owned()))
                    .unwrap_or_else(|| "no record".to_owned()),
                rec.and_then(|h| h.incarnation)
                    .map_or_else(|| "-".to_owned(), |i| i.to_string()),
                rec.and_then(|h| h.sequence)
                    .map_or_else(|| "-".to_owned(), |s| s.to_string()),
                rec.and_then(|h| h.grpc_host_port.clone())
                    .unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cols: &[&str]| {
        let mut l = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i + 1 == cols.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &cells {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
    for r in rows {
        if let Some(e) = &r.error {
            let _ = writeln!(out, "  {}: {e}", r.id);
        }
    }
    let _ = writeln!(
        out,
        "{} instance(s). Ages compare each writer's lastSeenAt with this host's clock; dead means older than the stale threshold ({}), suspected older than half of it.",
        rows.len(),
        human(threshold)
    );
    out
}

/// The JSON of `members --json`.
pub fn to_json(url: &StoreUrl, rows: &[Row], threshold: Duration) -> Value {
    let instances: Vec<Value> = rows
        .iter()
        .map(|r| {
            let rec = r.record.as_ref();
            json!({
                "instanceId": r.id,
                "status": r.status,
                "lastSeenAt": rec.map(|h| h.last_seen_at.to_rfc3339_opts(SecondsFormat::Millis, true)),
                "ageMs": r.age_ms,
                "ageClock": "writer",
                "incarnation": rec.and_then(|h| h.incarnation).map(|i| i.to_string()),
                "sequence": rec.and_then(|h| h.sequence),
                "startedAt": rec.and_then(|h| h.started_at).map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
                "grpcHostPort": rec.and_then(|h| h.grpc_host_port.clone()),
                "error": r.error,
            })
        })
        .collect();
    json!({
        "store": url.to_string(),
        "observedAt": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "staleThresholdMs": threshold.as_millis() as u64,
        "instances": instances,
    })
}

/// Runs `members`.
pub async fn run(args: MembersArgs) -> CliResult {
    let keys = args.store.keys();
    let timing = TimingArgs {
        heartbeat_interval: Some(Duration::ZERO),
        discovery_interval: args.discovery_interval,
        stale_threshold: args.stale_threshold,
        store_timeout: args.store_timeout,
    };
    // A random observer id: HOSTNAME may be the id of a member running on this host.
    let options = build_options(
        timing
            .builder(keys.clone())?
            .instance_id(InstanceId::random()),
    )?;
    let timeout = args.store_timeout.unwrap_or(Duration::from_secs(5));
    let connection = args.store.connect(timeout, timeout).await?;
    if connection.url == StoreUrl::Memory {
        eprintln!(
            "note: memory:// is a new, empty store in every process; members sees only its own"
        );
    }
    if !args.watch {
        let rows = snapshot(&connection, &keys, timeout, options.stale_threshold()).await?;
        if args.json {
            println!(
                "{}",
                to_json(&connection.url, &rows, options.stale_threshold())
            );
        } else {
            print!("{}", table(&rows, options.stale_threshold()));
        }
        return Ok(());
    }
    watch(connection, options, args.json).await
}

async fn watch(
    connection: Connection,
    options: heartbeat::HeartbeatOptions,
    json: bool,
) -> CliResult {
    let url = connection.url.clone();
    if !json {
        println!(
            "watching {url}: reading every {}, dead after {} unchanged (judged by change on this host's clock); Ctrl-C to stop",
            human(options.discovery_interval()),
            human(options.stale_threshold())
        );
    }
    let service = HeartbeatService::start(connection.store.clone(), options)
        .await
        .map_err(|e| CliError::failure(format!("could not start watching {url}: {e}")))?;
    let mut rx = service.events();
    // The first discovery may have run before the subscription: announce what the view
    // already holds, and skip the matching joined events if they arrive anyway.
    let mut announced = std::collections::BTreeSet::new();
    for peer in service.current_view().peers.values() {
        let event = heartbeat::MembershipEvent::Joined {
            id: peer.id.clone(),
            incarnation: peer.incarnation,
            grpc_host_port: peer.grpc_host_port.clone(),
        };
        print_event(&event, json);
        announced.insert((peer.id.clone(), peer.incarnation));
    }
    loop {
        tokio::select! {
            _ = shutdown_signal() => break,
            e = rx.recv() => match e {
                Ok(event) => {
                    match &event {
                        heartbeat::MembershipEvent::Joined { id, incarnation, .. }
                            if announced.remove(&(id.clone(), *incarnation)) =>
                        {
                            continue;
                        }
                        heartbeat::MembershipEvent::Left { id, incarnation, .. } => {
                            announced.remove(&(id.clone(), *incarnation));
                        }
                        _ => {}
                    }
                    print_event(&event, json);
                }
                Err(RecvError::Lagged(n)) => eprintln!("warning: {n} changes were skipped (output too slow)"),
                Err(RecvError::Closed) => break,
            }
        }
    }
    service.abort();
    Ok(())
}

fn print_event(event: &heartbeat::MembershipEvent, json: bool) {
    let at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    if json {
        let mut v = events::to_json(event);
        if let Value::Object(m) = &mut v {
            m.insert("at".into(), Value::from(at));
        }
        println!("{v}");
    } else {
        println!("{at}  {}", events::describe(event));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use heartbeat::Incarnation;

    fn record(age: chrono::Duration, status: InstanceStatus, now: DateTime<Utc>) -> Vec<u8> {
        InstanceHeartbeat {
            instance_id: InstanceId::new("pod-1").unwrap(),
            last_seen_at: now - age,
            grpc_host_port: Some("10.0.0.1:5002".into()),
            incarnation: Some(Incarnation::from_u64(7)),
            sequence: Some(3),
            started_at: None,
            status,
        }
        .to_json()
        .unwrap()
    }

    #[test]
    fn one_read_judges_by_status_and_age() {
        let now = Utc::now();
        let t = Duration::from_secs(10);
        let ms = chrono::Duration::milliseconds;
        let cases = [
            (ms(1_000), InstanceStatus::Alive, "alive"),
            (ms(-3_000), InstanceStatus::Alive, "alive"),
            (ms(6_000), InstanceStatus::Alive, "suspected"),
            (ms(11_000), InstanceStatus::Alive, "dead"),
            (ms(1_000), InstanceStatus::Leaving, "leaving"),
        ];
        for (age, status, expected) in cases {
            let bytes = record(age, status, now);
            assert_eq!(
                judge("pod-1", Some(&bytes), now, t).status,
                expected,
                "{age:?} {status:?}"
            );
        }
        assert_eq!(judge("pod-1", None, now, t).status, "missing");
        let bad = judge("pod-1", Some(b"{not json"), now, t);
        assert_eq!(bad.status, "unreadable");
        assert!(bad.error.is_some());
    }

    #[test]
    fn table_marks_the_writer_clock() {
        let now = Utc::now();
        let bytes = record(
            chrono::Duration::milliseconds(1_500),
            InstanceStatus::Alive,
            now,
        );
        let rows = vec![
            judge("pod-1", Some(&bytes), now, Duration::from_secs(10)),
            judge("pod-2", None, now, Duration::from_secs(10)),
        ];
        let t = table(&rows, Duration::from_secs(10));
        assert!(t.contains("LAST BEAT (writer clock)"), "{t}");
        assert!(t.contains("1.5s ago"), "{t}");
        assert!(t.contains("0000000000000007"), "{t}");
        assert!(t.contains("10.0.0.1:5002"), "{t}");
        let pod2 = t.lines().find(|l| l.starts_with("pod-2")).unwrap();
        assert!(
            pod2.contains("missing") && pod2.contains("no record"),
            "{t}"
        );
        let j = to_json(&StoreUrl::Memory, &rows, Duration::from_secs(10));
        assert_eq!(j["instances"][0]["status"], "alive");
        assert_eq!(j["instances"][0]["ageClock"], "writer");
        assert_eq!(j["instances"][1]["status"], "missing");
    }
}
