//! The rules of `decide`, each proved by examples and by property tests against an
//! oracle written directly from the rules (no caching, no shortcuts).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::TimeDelta;
use common::*;
use heartbeat_core::{LeaveReason, MembershipView, OwnerState, ViewHealth};
use proptest::prelude::*;
use reclaimer::rendezvous::Rendezvous;
use reclaimer::{
    Brake, BrakePolicy, ConnectionRecord, Decision, DeferReason, KeepReason, ReclaimPolicy,
    ReclaimReason, ViewProblem, decide,
};
use tokio::time::Instant;

fn reclaims(d: &reclaimer::Decisions<'_>) -> usize {
    d.reclaims().count()
}

/// A policy where every orphan is reclaimed by this observer (designation off, no
/// brake, no cap): isolates the orphan rules.
fn open_policy() -> ReclaimPolicy {
    ReclaimPolicy::default()
        .require_designation(false)
        .brake(BrakePolicy::new(1.0, usize::MAX).unwrap())
        .max_claims_per_sweep(usize::MAX)
}

#[test]
fn own_records_are_kept() {
    let t = Instant::now();
    let view = healthy_view("me", 1, t);
    let records = [
        record("c1", "me", Some(1), ago(10_000)),
        record("c2", "me", None, ago(10)),
    ];
    let d = decide(&records, &view, now(t), &open_policy());
    assert_eq!(d.decisions, vec![Decision::Keep(KeepReason::Own); 2]);
}

#[test]
fn records_of_a_live_owner_are_kept_however_old() {
    let t = Instant::now();
    let mut view = healthy_view("me", 1, t);
    add_peer(&mut view, "pod-a", Some(7), Some(ago(100)), t);
    let records = [
        record("c1", "pod-a", Some(7), ago(1_000_000)),
        record("c2", "pod-a", None, ago(50)),
    ];
    let d = decide(&records, &view, now(t), &open_policy());
    assert_eq!(d.decisions, vec![Decision::Keep(KeepReason::OwnerLive); 2]);
}

#[test]
fn nothing_is_taken_on_a_view_that_cannot_be_trusted() {
    let t = Instant::now();
    let healthy = {
        let mut v = healthy_view("me", 1, t);
        add_ended(&mut v, "dead", Some(3), LeaveReason::Expired, t);
        v
    };
    let records = [
        record("c1", "dead", Some(3), ago(1000)),
        record("c2", "me", Some(1), ago(1000)),
    ];
    let mut cases: Vec<(MembershipView, Instant, ViewProblem)> = Vec::new();
    let mut v = healthy.clone();
    v.health = ViewHealth::Unhealthy {
        reason: "store down".into(),
        since: t,
    };
    cases.push((v, t, ViewProblem::Unhealthy));
    let mut v = healthy.clone();
    v.health = ViewHealth::Starting;
    cases.push((v, t, ViewProblem::Starting));
    let mut v = healthy.clone();
    v.authoritative = false;
    cases.push((v, t, ViewProblem::NotAuthoritative));
    cases.push((
        healthy.clone(),
        t + MAX_AGE + Duration::from_secs(1),
        ViewProblem::Stale,
    ));
    for (view, at, problem) in cases {
        let d = decide(&records, &view, now(at), &open_policy());
        assert_eq!(
            d.decisions,
            vec![
                Decision::Defer(DeferReason::View(problem)),
                Decision::Keep(KeepReason::Own)
            ],
            "{problem:?}"
        );
        assert!(d.not_actionable.is_some());
    }
    // The same records on the healthy view: the orphan is taken.
    let d = decide(&records, &healthy, now(t), &open_policy());
    assert_eq!(reclaims(&d), 1);
}

#[test]
fn self_at_risk_engages_the_brake() {
    let t = Instant::now();
    let mut view = healthy_view("me", 1, t);
    add_ended(&mut view, "dead", Some(3), LeaveReason::Graceful, t);
    view.self_at_risk = true;
    let records = [record("c1", "dead", Some(3), ago(1000))];
    let d = decide(&records, &view, now(t), &open_policy());
    assert_eq!(d.brake, Some(Brake::SelfAtRisk));
    assert_eq!(d.decisions, vec![Decision::Defer(DeferReason::Brake)]);
}

#[test]
fn an_owner_never_seen_is_given_threshold_plus_discovery_before_its_records_are_taken() {
    let t = Instant::now();
    let view = healthy_view("me", 1, t);
    let skew = THRESHOLD / 4;
    let window = (THRESHOLD + DISCOVERY + skew).as_secs() as i64;
    let records = [
        record("young", "ghost", Some(9), ago(window - 1)),
        record("old", "ghost", Some(9), ago(window + 1)),
        // updatedAt counts as the latest stamp.
        {
            let mut r = record("touched", "ghost", None, ago(10 * window));
            r.updated_at = Some(ago(5));
            r
        },
        // A record stamped in the future (skewed writer) is young.
        record("future", "ghost", None, ago(-3600)),
    ];
    let d = decide(&records, &view, now(t), &open_policy());
    assert_eq!(
        d.decisions[0],
        Decision::Defer(DeferReason::OwnerUnknownRecent)
    );
    assert!(matches!(
        d.decisions[1],
        Decision::Reclaim(o) if o.reason == ReclaimReason::OwnerLongGone && o.from.as_str() == "ghost"
    ));
    assert_eq!(
        d.decisions[2],
        Decision::Defer(DeferReason::OwnerUnknownRecent)
    );
    assert_eq!(
        d.decisions[3],
        Decision::Defer(DeferReason::OwnerUnknownRecent)
    );
}

#[test]
fn never_seen_owners_wait_until_the_observer_has_watched_long_enough() {
    // Just started, or just back from an outage (the store may have lost heartbeats that
    // its live owners have not re-published yet): an old record of a never-seen owner
    // is not evidence that the owner is gone.
    let t = Instant::now();
    let mut view = healthy_view("me", 1, t);
    let old = record("old", "ghost", Some(9), ago(100_000));
    let settle = THRESHOLD + DISCOVERY;
    for (since, settled) in [
        (None, false),
        (Some(t), false),
        (t.checked_sub(settle - Duration::from_millis(1)), false),
        (t.checked_sub(settle), true),
    ] {
        view.healthy_since = since;
        let d = decide(std::slice::from_ref(&old), &view, now(t), &open_policy());
        if settled {
            assert!(
                matches!(d.decisions[0], Decision::Reclaim(o) if o.reason == ReclaimReason::OwnerLongGone)
            );
        } else {
            assert_eq!(
                d.decisions[0],
                Decision::Defer(DeferReason::ObserverNotSettled),
                "{since:?}"
            );
        }
    }
    // Owners that were seen, and ended, are not affected.
    view.healthy_since = Some(t);
    add_ended(&mut view, "gone", Some(2), LeaveReason::Expired, t);
    let gone = [record("r", "gone", Some(2), ago(10))];
    let d = decide(&gone, &view, now(t), &open_policy());
    assert!(matches!(d.decisions[0], Decision::Reclaim(_)));
}

#[test]
fn records_of_every_kind_of_ended_life_are_reclaimed() {
    let t = Instant::now();
    let mut view = healthy_view("me", 1, t);
    add_ended(&mut view, "left", Some(2), LeaveReason::Graceful, t);
    add_ended(&mut view, "expired", Some(3), LeaveReason::Expired, t);
    add_ended(&mut view, "restarted", Some(4), LeaveReason::Superseded, t);
    add_peer(&mut view, "restarted", Some(5), Some(ago(20)), t);
    let records = [
        record("c1", "left", Some(2), ago(1)),
        record("c2", "expired", Some(3), ago(1)),
        record("c3", "restarted", Some(4), ago(1)),
        // Our own id with another incarnation: our previous life.
        record("c4", "me", Some(99), ago(1)),
        // The new life of the restarted id keeps its records.
        record("c5", "restarted", Some(5), ago(1)),
    ];
    let d = decide(&records, &view, now(t), &open_policy());
    let reasons: Vec<Option<ReclaimReason>> = d
        .decisions
        .iter()
        .map(|x| match x {
            Decision::Reclaim(o) => Some(o.reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            Some(ReclaimReason::Ended(LeaveReason::Graceful)),
            Some(ReclaimReason::Ended(LeaveReason::Expired)),
            Some(ReclaimReason::Ended(LeaveReason::Superseded)),
            Some(ReclaimReason::Ended(LeaveReason::Superseded)),
            None,
        ]
    );
    assert_eq!(d.decisions[4], Decision::Keep(KeepReason::OwnerLive));
}

#[test]
fn dotnet_records_stamped_before_the_owners_restart_belong_to_its_previous_life() {
    let t = Instant::now();
    let mut view = healthy_view("me", 1, t);
    // pod-r restarted 100 s ago (its new life is live); the .NET-style records carry
    // no incarnation.
    add_peer(&mut view, "pod-r", Some(5), Some(ago(100)), t);
    // A .NET peer (no incarnation, no startedAt): the rule cannot apply.
    add_peer(&mut view, "dotnet", None, None, t);
    let skew = (THRESHOLD / 4).as_secs() as i64;
    let records = [
        record("before", "pod-r", None, ago(100 + skew + 1)),
        record("within-skew", "pod-r", None, ago(100 + skew - 1)),
        record("after", "pod-r", None, ago(50)),
        {
            // Created long ago but re-stamped in the new life.
            let mut r = record("restamped", "pod-r", None, ago(10_000));
            r.updated_at = Some(ago(10));
            r
        },
        record("dotnet-old", "dotnet", None, ago(100_000)),
        // Our own .NET-style record from before our start (an hour ago).
        record("mine-before", "me", None, ago(3600 + skew + 1)),
        record("mine-after", "me", None, ago(3600 - skew)),
    ];
    let d = decide(&records, &view, now(t), &open_policy());
    assert!(
        matches!(d.decisions[0], Decision::Reclaim(o) if o.reason == ReclaimReason::PreviousLife)
    );
    assert_eq!(d.decisions[1], Decision::Keep(KeepReason::OwnerLive));
    assert_eq!(d.decisions[2], Decision::Keep(KeepReason::OwnerLive));
    assert_eq!(d.decisions[3], Decision::Keep(KeepReason::OwnerLive));
    assert_eq!(d.decisions[4], Decision::Keep(KeepReason::OwnerLive));
    assert!(
        matches!(d.decisions[5], Decision::Reclaim(o) if o.reason == ReclaimReason::PreviousLife)
    );
    assert_eq!(d.decisions[6], Decision::Keep(KeepReason::Own));
}

#[test]
fn only_the_designated_survivor_reclaims_each_orphan() {
    let t = Instant::now();
    let survivors = ["me", "pod-b", "pod-c", "pod-d"];
    let mut base = healthy_view("me", 1, t);
    for (i, s) in survivors.iter().enumerate().skip(1) {
        add_peer(&mut base, s, Some(10 + i as u64), Some(ago(1000)), t);
    }
    add_ended(&mut base, "dead", Some(3), LeaveReason::Expired, t);
    let records: Vec<ConnectionRecord> = (0..400)
        .map(|i| record(&format!("conn-{i}"), "dead", Some(3), ago(1)))
        .collect();
    let policy = ReclaimPolicy::default().max_claims_per_sweep(usize::MAX);
    let mut claimed = vec![0usize; records.len()];
    let mut per_survivor = BTreeMap::new();
    for s in survivors {
        let mut view = base.clone();
        view.observer = iid(s);
        view.observer_incarnation = view.peers[&iid(s)].incarnation.unwrap();
        let d = decide(&records, &view, now(t), &policy);
        for (i, x) in d.decisions.iter().enumerate() {
            match x {
                Decision::Reclaim(_) => claimed[i] += 1,
                Decision::Defer(DeferReason::NotDesignated) => {}
                other => panic!("{other:?}"),
            }
        }
        per_survivor.insert(s, reclaims(&d));
    }
    assert!(claimed.iter().all(|&c| c == 1), "{claimed:?}");
    // Evenly spread: 100 each expected.
    for (s, n) in per_survivor {
        assert!((60..=140).contains(&n), "{s}: {n}");
    }
}

#[test]
fn the_brake_engages_when_most_owners_look_dead_at_once() {
    let t = Instant::now();
    let mut view = healthy_view("me", 1, t);
    add_peer(&mut view, "pod-b", Some(2), Some(ago(1000)), t);
    for d in ["d1", "d2", "d3"] {
        add_ended(&mut view, d, Some(5), LeaveReason::Expired, t);
    }
    let records: Vec<ConnectionRecord> = ["d1", "d2", "d3"]
        .iter()
        .enumerate()
        .map(|(i, o)| record(&format!("c{i}"), o, Some(5), ago(1000)))
        .collect();
    // 3 dead of 5 owners seen (me, pod-b, d1..d3): more than one half.
    let d = decide(&records, &view, now(t), &ReclaimPolicy::default());
    assert_eq!(
        d.brake,
        Some(Brake::TooManyDead {
            dead_owners: 3,
            owners_seen: 5,
            max_dead_fraction: 0.5
        })
    );
    assert!(
        d.decisions
            .iter()
            .all(|x| *x == Decision::Defer(DeferReason::Brake))
    );

    // Graceful leavers are positive evidence, not silence: no brake.
    let mut graceful = healthy_view("me", 1, t);
    add_peer(&mut graceful, "pod-b", Some(2), Some(ago(1000)), t);
    for d in ["d1", "d2", "d3"] {
        add_ended(&mut graceful, d, Some(5), LeaveReason::Graceful, t);
    }
    let d = decide(
        &records,
        &graceful,
        now(t),
        &open_policy()
            .require_designation(true)
            .brake(BrakePolicy::default()),
    );
    assert_eq!(d.brake, None);
    assert_eq!(d.summary.dead_owners, 0);

    // Two dead of four: below the minimum count, no brake.
    let d = decide(
        &records[..2],
        &view,
        now(t),
        &open_policy().brake(BrakePolicy::default()),
    );
    assert_eq!(d.brake, None);
    assert_eq!(reclaims(&d), 2);
}

#[test]
fn claims_per_sweep_are_capped_in_record_order() {
    let t = Instant::now();
    let mut view = healthy_view("me", 1, t);
    add_ended(&mut view, "dead", Some(3), LeaveReason::Expired, t);
    let records: Vec<ConnectionRecord> = (0..10)
        .map(|i| record(&format!("c{i}"), "dead", Some(3), ago(1)))
        .collect();
    let d = decide(
        &records,
        &view,
        now(t),
        &ReclaimPolicy::default().max_claims_per_sweep(4),
    );
    let kinds: Vec<bool> = d
        .decisions
        .iter()
        .map(|x| matches!(x, Decision::Reclaim(_)))
        .collect();
    assert_eq!(
        kinds,
        [
            true, true, true, true, false, false, false, false, false, false
        ]
    );
    assert!(
        d.decisions[4..]
            .iter()
            .all(|x| *x == Decision::Defer(DeferReason::ClaimCap))
    );
    assert_eq!(d.summary.reclaim, 4);
    assert_eq!(d.summary.orphans, 10);
}

// ------------------------------------------------------------------------------------
// Property tests against an oracle.

#[derive(Debug, Clone)]
enum OwnerModel {
    /// Live with an incarnation, started `started_ago` seconds ago.
    Live { inc: u64, started_ago: i64 },
    /// Live, written by .NET (no incarnation, no startedAt).
    LiveDotnet,
    /// Its life `inc` ended.
    Ended { inc: u64, reason: LeaveReason },
    /// Restarted: life `old` superseded, life `new` live since `started_ago`.
    Restarted {
        old: u64,
        new: u64,
        started_ago: i64,
    },
    /// Never seen.
    Unknown,
}

fn owner_model() -> impl Strategy<Value = OwnerModel> {
    let reason = prop_oneof![
        Just(LeaveReason::Graceful),
        Just(LeaveReason::Expired),
        Just(LeaveReason::Superseded)
    ];
    prop_oneof![
        (1u64..50, 0i64..5000).prop_map(|(inc, started_ago)| OwnerModel::Live { inc, started_ago }),
        Just(OwnerModel::LiveDotnet),
        (1u64..50, reason).prop_map(|(inc, reason)| OwnerModel::Ended { inc, reason }),
        (1u64..50, 50u64..100, 0i64..5000).prop_map(|(old, new, started_ago)| {
            OwnerModel::Restarted {
                old,
                new,
                started_ago,
            }
        }),
        Just(OwnerModel::Unknown),
    ]
}

#[derive(Debug, Clone)]
enum IncChoice {
    Current,
    Old,
    Absent,
    Other(u64),
}

#[derive(Debug, Clone)]
struct RecordModel {
    owner: usize,
    inc: IncChoice,
    created_ago: i64,
    updated_ago: Option<i64>,
}

fn record_model(owners: usize) -> impl Strategy<Value = RecordModel> {
    let inc = prop_oneof![
        Just(IncChoice::Current),
        Just(IncChoice::Old),
        Just(IncChoice::Absent),
        (100u64..110).prop_map(IncChoice::Other)
    ];
    (
        0..=owners,
        inc,
        -100i64..20_000,
        proptest::option::of(-100i64..20_000),
    )
        .prop_map(|(owner, inc, created_ago, updated_ago)| RecordModel {
            owner,
            inc,
            created_ago,
            updated_ago,
        })
}

#[derive(Debug, Clone)]
enum ViewFlag {
    Healthy,
    Unhealthy,
    Starting,
    Stale,
    NotAuthoritative,
    SelfAtRisk,
}

fn view_flag() -> impl Strategy<Value = ViewFlag> {
    prop_oneof![
        6 => Just(ViewFlag::Healthy),
        1 => Just(ViewFlag::Unhealthy),
        1 => Just(ViewFlag::Starting),
        1 => Just(ViewFlag::Stale),
        1 => Just(ViewFlag::NotAuthoritative),
        1 => Just(ViewFlag::SelfAtRisk),
    ]
}

#[derive(Debug, Clone)]
struct Scenario {
    owners: Vec<OwnerModel>,
    records: Vec<RecordModel>,
    flag: ViewFlag,
    my_started_ago: i64,
    fraction: f64,
    min_dead: usize,
    cap: usize,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    proptest::collection::vec(owner_model(), 1..8).prop_flat_map(|owners| {
        let n = owners.len();
        (
            Just(owners),
            proptest::collection::vec(record_model(n), 0..60),
            view_flag(),
            0i64..10_000,
            prop_oneof![Just(0.5), 0.0f64..=1.0],
            0usize..5,
            prop_oneof![Just(usize::MAX), 0usize..20],
        )
            .prop_map(
                |(owners, records, flag, my_started_ago, fraction, min_dead, cap)| Scenario {
                    owners,
                    records,
                    flag,
                    my_started_ago,
                    fraction,
                    min_dead,
                    cap,
                },
            )
    })
}

const MY_INC: u64 = 1;

fn owner_name(i: usize, n: usize) -> String {
    if i == n {
        "me".into()
    } else {
        format!("owner-{i}")
    }
}

fn build(s: &Scenario, t: Instant) -> (MembershipView, Vec<ConnectionRecord>) {
    let mut view = healthy_view("me", MY_INC, t);
    view.peers.get_mut(&iid("me")).unwrap().started_at = Some(ago(s.my_started_ago));
    for (i, o) in s.owners.iter().enumerate() {
        let name = owner_name(i, s.owners.len());
        match *o {
            OwnerModel::Live { inc, started_ago } => {
                add_peer(&mut view, &name, Some(inc), Some(ago(started_ago)), t)
            }
            OwnerModel::LiveDotnet => add_peer(&mut view, &name, None, None, t),
            OwnerModel::Ended { inc, reason } => add_ended(&mut view, &name, Some(inc), reason, t),
            OwnerModel::Restarted {
                old,
                new,
                started_ago,
            } => {
                add_ended(&mut view, &name, Some(old), LeaveReason::Superseded, t);
                add_peer(&mut view, &name, Some(new), Some(ago(started_ago)), t);
            }
            OwnerModel::Unknown => {}
        }
    }
    let records = s
        .records
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let n = s.owners.len();
            let (current, old) = if r.owner == n {
                (Some(MY_INC), Some(77))
            } else {
                match s.owners[r.owner] {
                    OwnerModel::Live { inc, .. } => (Some(inc), Some(inc + 1000)),
                    OwnerModel::LiveDotnet | OwnerModel::Unknown => (None, Some(5)),
                    OwnerModel::Ended { inc, .. } => (Some(inc), Some(inc + 1000)),
                    OwnerModel::Restarted { old, new, .. } => (Some(new), Some(old)),
                }
            };
            let inc = match r.inc {
                IncChoice::Current => current,
                IncChoice::Old => old,
                IncChoice::Absent => None,
                IncChoice::Other(v) => Some(v),
            };
            let mut rec = record(
                &format!("conn-{k}"),
                &owner_name(r.owner, n),
                inc,
                ago(r.created_ago),
            );
            rec.updated_at = r.updated_ago.map(ago);
            rec
        })
        .collect();
    match s.flag {
        ViewFlag::Healthy | ViewFlag::Stale => {}
        ViewFlag::Unhealthy => {
            view.health = ViewHealth::Unhealthy {
                reason: "x".into(),
                since: t,
            }
        }
        ViewFlag::Starting => view.health = ViewHealth::Starting,
        ViewFlag::NotAuthoritative => view.authoritative = false,
        ViewFlag::SelfAtRisk => view.self_at_risk = true,
    }
    (view, records)
}

/// What the rules say about one record before the brake, designation and cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    Own,
    Live,
    YoungUnknown,
    Orphan(ReclaimReason),
}

fn oracle(r: &ConnectionRecord, view: &MembershipView, skew: TimeDelta) -> Base {
    let stamp = r.updated_at.map_or(r.created_at, |u| u.max(r.created_at));
    let before_start = |id| {
        view.peers
            .get(id)
            .filter(|p| p.incarnation.is_some())
            .and_then(|p| p.started_at)
            .is_some_and(|s| stamp < s - skew)
    };
    if r.owner == view.observer {
        return match r.owner_incarnation {
            Some(i) if i == view.observer_incarnation => Base::Own,
            Some(_) => Base::Orphan(ReclaimReason::Ended(LeaveReason::Superseded)),
            None if before_start(&r.owner) => Base::Orphan(ReclaimReason::PreviousLife),
            None => Base::Own,
        };
    }
    match view.owner_state(&r.owner, r.owner_incarnation) {
        OwnerState::Live if r.owner_incarnation.is_none() && before_start(&r.owner) => {
            Base::Orphan(ReclaimReason::PreviousLife)
        }
        OwnerState::Live => Base::Live,
        OwnerState::Ended(reason) => Base::Orphan(ReclaimReason::Ended(reason)),
        OwnerState::Unknown => {
            let window = TimeDelta::from_std(THRESHOLD + DISCOVERY).unwrap() + skew;
            if wall() - stamp < window {
                Base::YoungUnknown
            } else {
                Base::Orphan(ReclaimReason::OwnerLongGone)
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_decision_follows_the_rules(s in scenario()) {
        let t = Instant::now();
        let (view, records) = build(&s, t);
        let at = if matches!(s.flag, ViewFlag::Stale) { t + MAX_AGE + Duration::from_secs(1) } else { t };
        let policy = ReclaimPolicy::default()
            .brake(BrakePolicy::new(s.fraction, s.min_dead).unwrap())
            .max_claims_per_sweep(s.cap);
        let d = decide(&records, &view, now(at), &policy);
        prop_assert_eq!(d.decisions.len(), records.len());

        let skew = TimeDelta::from_std(THRESHOLD / 4).unwrap();
        let actionable = !view.self_at_risk && view.is_actionable(at).is_ok();
        if !actionable {
            // Nothing is taken; own records of this life are kept; the rest waits.
            for (r, x) in records.iter().zip(&d.decisions) {
                let own = r.owner == view.observer
                    && r.owner_incarnation.is_none_or(|i| i == view.observer_incarnation);
                if own {
                    prop_assert_eq!(*x, Decision::Keep(KeepReason::Own));
                } else {
                    prop_assert!(matches!(x, Decision::Defer(DeferReason::View(_) | DeferReason::Brake)), "{:?}", x);
                }
            }
            prop_assert_eq!(d.brake.is_some(), view.self_at_risk);
            return Ok(());
        }

        let bases: Vec<Base> = records.iter().map(|r| oracle(r, &view, skew)).collect();

        // Brake, from the definition.
        let mut owners: BTreeSet<&str> = view.peers.keys().map(|k| k.as_str()).collect();
        let mut dead: BTreeSet<&str> = BTreeSet::new();
        for (r, b) in records.iter().zip(&bases) {
            owners.insert(r.owner.as_str());
            let silent = matches!(b, Base::Orphan(ReclaimReason::Ended(LeaveReason::Expired) | ReclaimReason::OwnerLongGone));
            if silent && !view.peers.contains_key(&r.owner) {
                dead.insert(r.owner.as_str());
            }
        }
        let braked = dead.len() >= s.min_dead && !dead.is_empty()
            && (dead.len() as f64) > s.fraction * owners.len() as f64;
        prop_assert_eq!(d.brake.is_some(), braked, "dead {:?} of {:?}", dead, owners);
        prop_assert_eq!(d.summary.dead_owners, dead.len());
        prop_assert_eq!(d.summary.owners_seen, owners.len());

        let live = Rendezvous::new(view.peers.keys());
        let mut claims = 0usize;
        for ((r, b), x) in records.iter().zip(&bases).zip(&d.decisions) {
            match *b {
                Base::Own => prop_assert_eq!(*x, Decision::Keep(KeepReason::Own)),
                Base::Live => prop_assert_eq!(*x, Decision::Keep(KeepReason::OwnerLive)),
                Base::YoungUnknown => prop_assert_eq!(*x, Decision::Defer(DeferReason::OwnerUnknownRecent)),
                Base::Orphan(reason) => {
                    let expected = if braked {
                        Decision::Defer(DeferReason::Brake)
                    } else if live.designate(r.id.as_str()) != Some(&view.observer) {
                        Decision::Defer(DeferReason::NotDesignated)
                    } else if claims >= s.cap {
                        Decision::Defer(DeferReason::ClaimCap)
                    } else {
                        claims += 1;
                        Decision::Reclaim(reclaimer::Orphan { from: &r.owner, reason })
                    };
                    prop_assert_eq!(*x, expected);
                }
            }
        }
        // Never a live owner's record, never our own.
        for ((r, b), x) in records.iter().zip(&bases).zip(&d.decisions) {
            if matches!(x, Decision::Reclaim(_)) {
                prop_assert!(matches!(b, Base::Orphan(_)));
                prop_assert!(!(r.owner == view.observer && r.owner_incarnation == Some(view.observer_incarnation)));
                if view.owner_state(&r.owner, r.owner_incarnation) == OwnerState::Live {
                    // Only the documented previous-life rule takes from a live id.
                    prop_assert_eq!(*b, Base::Orphan(ReclaimReason::PreviousLife));
                }
            }
        }
        prop_assert_eq!(d.summary.reclaim, claims);
        prop_assert!(claims <= s.cap);
    }

    #[test]
    fn survivors_sharing_a_view_designate_exactly_one_claimer_per_orphan(s in scenario()) {
        let t = Instant::now();
        let (view, records) = build(&s, t);
        let policy = ReclaimPolicy::default()
            .brake(BrakePolicy::new(1.0, usize::MAX).unwrap())
            .max_claims_per_sweep(usize::MAX);
        let mut claimers = vec![0usize; records.len()];
        let mut orphans = None;
        for (id, peer) in &view.peers {
            let Some(inc) = peer.incarnation else { continue };
            let mut v = view.clone();
            v.observer = id.clone();
            v.observer_incarnation = inc;
            v.self_at_risk = false;
            v.health = ViewHealth::Healthy;
            v.authoritative = true;
            let d = decide(&records, &v, now(t), &policy);
            orphans = Some(d.summary.orphans);
            for (i, x) in d.decisions.iter().enumerate() {
                if matches!(x, Decision::Reclaim(_)) {
                    claimers[i] += 1;
                }
            }
        }
        // .NET peers (no incarnation) run no reclaimer of ours: their designations
        // are lost, so count only orphans designated to one of ours.
        let ours: Vec<_> = view.peers.iter().filter(|(_, p)| p.incarnation.is_some()).map(|(k, _)| k).collect();
        let live = Rendezvous::new(view.peers.keys());
        for (i, r) in records.iter().enumerate() {
            prop_assert!(claimers[i] <= 1, "{} claimed by {}", r.id, claimers[i]);
            let designated = live.designate(r.id.as_str());
            if claimers[i] == 1 {
                prop_assert!(designated.is_some_and(|d| ours.contains(&d)));
            }
        }
        if let Some(o) = orphans {
            let designated_to_ours = claimers.iter().sum::<usize>();
            prop_assert!(designated_to_ours <= o);
        }
    }

    #[test]
    fn decisions_do_not_depend_on_record_order_without_a_cap(s in scenario(), seed in any::<u64>()) {
        let t = Instant::now();
        let (view, records) = build(&s, t);
        let policy = ReclaimPolicy::default().brake(BrakePolicy::new(s.fraction, s.min_dead).unwrap()).max_claims_per_sweep(usize::MAX);
        let d = decide(&records, &view, now(t), &policy);
        let mut shuffled: Vec<usize> = (0..records.len()).collect();
        // A deterministic shuffle.
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let permuted: Vec<ConnectionRecord> = shuffled.iter().map(|&i| records[i].clone()).collect();
        let e = decide(&permuted, &view, now(t), &policy);
        for (k, &i) in shuffled.iter().enumerate() {
            let a = format!("{:?}", d.decisions[i]);
            let b = format!("{:?}", e.decisions[k]);
            prop_assert_eq!(a, b);
        }
    }
}
