//! Membership events as log lines (the agent) and as output lines (`members --watch`).

use heartbeat::MembershipEvent;
use serde_json::{Value, json};

/// The event as one JSON object (camelCase fields, like the records).
pub fn to_json(e: &MembershipEvent) -> Value {
    let mut v = match e {
        MembershipEvent::Joined {
            id,
            incarnation,
            grpc_host_port,
        } => json!({
            "instanceId": id.as_str(),
            "incarnation": incarnation.map(|i| i.to_string()),
            "grpcHostPort": grpc_host_port,
        }),
        MembershipEvent::Left {
            id,
            incarnation,
            reason,
        } => json!({
            "instanceId": id.as_str(),
            "incarnation": incarnation.map(|i| i.to_string()),
            "reason": reason.to_string(),
        }),
        MembershipEvent::Suspected { id, unchanged_for } => json!({
            "instanceId": id.as_str(),
            "unchangedForMs": unchanged_for.as_millis() as u64,
        }),
        MembershipEvent::Recovered { id } => json!({ "instanceId": id.as_str() }),
        MembershipEvent::SelfAtRisk { since_last_publish } => json!({
            "sinceLastPublishMs": since_last_publish.as_millis() as u64,
        }),
        MembershipEvent::IdConflict { other } => json!({
            "otherIncarnation": other.map(|i| i.to_string()),
        }),
        MembershipEvent::ViewUnhealthy { reason } => json!({ "reason": reason }),
        MembershipEvent::SelfRecovered | MembershipEvent::ViewHealthy => json!({}),
    };
    if let Value::Object(map) = &mut v {
        map.insert("event".into(), Value::from(e.kind()));
    }
    v
}

/// The event as one human line (without time).
pub fn describe(e: &MembershipEvent) -> String {
    let inc = |i: &Option<heartbeat::Incarnation>| {
        i.map(|i| format!(" incarnation={i}")).unwrap_or_default()
    };
    match e {
        MembershipEvent::Joined {
            id,
            incarnation,
            grpc_host_port,
        } => format!(
            "joined     {id}{} grpc={}",
            inc(incarnation),
            grpc_host_port.as_deref().unwrap_or("-")
        ),
        MembershipEvent::Left {
            id,
            incarnation,
            reason,
        } => {
            let what = match reason {
                heartbeat::LeaveReason::Expired => "DEAD (unchanged for the stale threshold)",
                heartbeat::LeaveReason::Graceful => "left gracefully",
                heartbeat::LeaveReason::Superseded => "restarted (new incarnation)",
            };
            format!(
                "left       {id}{} reason={reason}: {what}",
                inc(incarnation)
            )
        }
        MembershipEvent::Suspected { id, unchanged_for } => format!(
            "suspected  {id}: unchanged for {}",
            super::common::human(*unchanged_for)
        ),
        MembershipEvent::Recovered { id } => format!("recovered  {id}"),
        MembershipEvent::SelfAtRisk { since_last_publish } => format!(
            "self-at-risk: no successful publish for {}",
            super::common::human(*since_last_publish)
        ),
        MembershipEvent::SelfRecovered => "self-recovered".to_owned(),
        MembershipEvent::IdConflict { other } => format!(
            "id-conflict: another process publishes under this id{}",
            inc(other)
        ),
        MembershipEvent::ViewUnhealthy { reason } => {
            format!("view-unhealthy: {reason} (nobody is judged dead until discovery works again)")
        }
        MembershipEvent::ViewHealthy => "view-healthy: discovery works again".to_owned(),
    }
}

/// Logs the event as one structured line (`event`, `instance`, ... fields).
pub fn log(e: &MembershipEvent) {
    let k = e.kind();
    match e {
        MembershipEvent::Joined {
            id,
            incarnation,
            grpc_host_port,
        } => tracing::info!(
            event = k,
            instance = %id,
            incarnation = incarnation.map(|i| i.to_string()),
            grpc_host_port = grpc_host_port.as_deref(),
            "instance joined"
        ),
        MembershipEvent::Left {
            id,
            incarnation,
            reason,
        } => tracing::info!(
            event = k,
            instance = %id,
            incarnation = incarnation.map(|i| i.to_string()),
            reason = %reason,
            "instance left"
        ),
        MembershipEvent::Suspected { id, unchanged_for } => tracing::warn!(
            event = k,
            instance = %id,
            unchanged_for_ms = unchanged_for.as_millis() as u64,
            "instance suspected"
        ),
        MembershipEvent::Recovered { id } => {
            tracing::info!(event = k, instance = %id, "instance recovered")
        }
        MembershipEvent::SelfAtRisk { since_last_publish } => tracing::error!(
            event = k,
            since_last_publish_ms = since_last_publish.as_millis() as u64,
            "this instance could not publish; peers may judge it dead"
        ),
        MembershipEvent::SelfRecovered => {
            tracing::info!(event = k, "this instance publishes again")
        }
        MembershipEvent::IdConflict { other } => tracing::error!(
            event = k,
            other_incarnation = other.map(|i| i.to_string()),
            "another process publishes under this instance id; give each process its own id"
        ),
        MembershipEvent::ViewUnhealthy { reason } => tracing::warn!(
            event = k,
            reason = %reason,
            "discovery failed; nobody is judged dead until it works again"
        ),
        MembershipEvent::ViewHealthy => tracing::info!(event = k, "discovery works again"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heartbeat::{Incarnation, InstanceId, LeaveReason};

    #[test]
    fn left_is_described_and_serialized() {
        let e = MembershipEvent::Left {
            id: InstanceId::new("pod-2").unwrap_or_else(|_| InstanceId::random()),
            incarnation: Some(Incarnation::from_u64(0xab)),
            reason: LeaveReason::Expired,
        };
        assert!(describe(&e).contains("DEAD"));
        let j = to_json(&e);
        assert_eq!(j["event"], "left");
        assert_eq!(j["reason"], "expired");
        assert_eq!(j["incarnation"], "00000000000000ab");
    }
}
