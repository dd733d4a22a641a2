//! How daprd's error answers map to [`StoreError`]s.
//!
//! `409` is a conflict, and so is a `500` (or the Redis component's `400` for a
//! malformed ETag) whose message is an ETag mismatch: transactions and the Redis
//! component's script errors report conflicts that way. A message that is a transport
//! failure between daprd and its store (`dial tcp`, `connection refused`, ...) is
//! [`StoreError::Unavailable`] whatever the status, because the Redis component reports a
//! failed DELETE as "possible etag mismatch". `401` says to set `DAPR_API_TOKEN`.
//! Everything else is [`StoreError::Backend`] (or `Unavailable` for 502-504) with a
//! [`DaprError`] (status, Dapr error code, message) as its source.

use heartbeat_core::StoreError;
use reqwest::StatusCode;
use serde::Deserialize;

use crate::client::BACKEND;

/// An error answer of daprd: status, Dapr error code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("daprd answered {status} {code}: {message}", code = code.as_deref().unwrap_or("(no error code)"))]
pub struct DaprError {
    /// HTTP status.
    pub status: u16,
    /// The Dapr error code (`ERR_STATE_SAVE`, ...), when the body had one.
    pub code: Option<String>,
    /// The message (or the raw body).
    pub message: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "errorCode")]
    error_code: Option<String>,
    message: Option<String>,
}

pub(crate) fn is_transport_message(lower: &str) -> bool {
    const MARKS: &[&str] = &[
        "dial tcp",
        "connection refused",
        "i/o timeout",
        "connection reset",
        "broken pipe",
        "context deadline exceeded",
        "no route to host",
        "network is unreachable",
        "client is closed",
        "connection pool timeout",
        ": eof",
    ];
    MARKS.iter().any(|m| lower.contains(m)) || lower.ends_with(" eof")
}

fn is_conflict_message(lower: &str) -> bool {
    const MARKS: &[&str] = &[
        "etag mismatch",
        "etag not match",
        "state not exist",
        "item already exists",
        "user_script",
        "invalid etag",
    ];
    MARKS.iter().any(|m| lower.contains(m))
}

/// Maps an error answer to a [`StoreError`] (see the module docs). `write` says
/// whether the request was a conditional write or delete (only those can conflict).
pub fn classify(key: &str, status: StatusCode, body: &[u8], write: bool) -> StoreError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let (code, message) = match parsed {
        Some(b) => (
            b.error_code,
            b.message
                .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()),
        ),
        None => (None, String::from_utf8_lossy(body).trim().to_owned()),
    };
    let lower = message.to_ascii_lowercase();
    let error = DaprError {
        status: status.as_u16(),
        code: code.clone(),
        message: message.clone(),
    };
    if status == StatusCode::UNAUTHORIZED {
        return StoreError::Backend {
            backend: BACKEND,
            message: format!(
                "daprd rejected the API token for {key:?}: set DAPR_API_TOKEN to the sidecar's token"
            ),
            source: Some(Box::new(error)),
        };
    }
    if is_transport_message(&lower) {
        return StoreError::Unavailable {
            backend: BACKEND,
            message: format!("the state store behind daprd is unreachable ({key:?})"),
            source: Some(Box::new(error)),
        };
    }
    let conflict_status = matches!(status.as_u16(), 400 | 409 | 500);
    if write && conflict_status && (status == StatusCode::CONFLICT || is_conflict_message(&lower)) {
        return StoreError::Conflict {
            key: key.to_owned(),
        };
    }
    if status == StatusCode::BAD_REQUEST
        && (lower.contains("illegal_key") || message.contains("DAPR_STATE_ILLEGAL_KEY"))
    {
        return StoreError::InvalidKey {
            key: key.to_owned(),
            reason: message,
        };
    }
    let hint = match code.as_deref() {
        Some("ERR_STATE_STORE_NOT_FOUND") => {
            "the state store component is not loaded in daprd; check its name and the resources folder"
        }
        Some("ERR_STATE_STORE_NOT_CONFIGURED") => {
            "daprd has no state store configured; add a component"
        }
        _ if status == StatusCode::NOT_FOUND => {
            "no such route: check that the endpoint is a Dapr sidecar's HTTP port"
        }
        _ => "see the Dapr error code",
    };
    if matches!(status.as_u16(), 502..=504) {
        return StoreError::Unavailable {
            backend: BACKEND,
            message: format!("daprd is unavailable ({key:?}): {hint}"),
            source: Some(Box::new(error)),
        };
    }
    StoreError::Backend {
        backend: BACKEND,
        message: format!("request for {key:?} failed: {hint}"),
        source: Some(Box::new(error)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn body(code: &str, message: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"errorCode": code, "message": message})).unwrap()
    }

    #[test]
    fn conflicts_are_recognised_in_409_and_500() {
        let redis_500 = body(
            "ERR_STATE_TRANSACTION",
            "error while executing state transaction: ERR user_script:14: failed to set key heartbeat-test||x1 script: d9",
        );
        assert!(classify("k", StatusCode::INTERNAL_SERVER_ERROR, &redis_500, true).is_conflict());
        let mem_409 = body(
            "ERR_STATE_SAVE",
            "failed saving state in state store memstore: possible etag mismatch. error from state store: state etag not match for key=a||k",
        );
        assert!(classify("k", StatusCode::CONFLICT, &mem_409, true).is_conflict());
        // Reads never conflict.
        assert!(!classify("k", StatusCode::CONFLICT, &mem_409, false).is_conflict());
    }

    #[test]
    fn store_outages_are_unavailable_even_when_reported_as_conflicts() {
        let delete_down = body(
            "ERR_STATE_DELETE",
            "failed deleting state with key r1: possible etag mismatch. error from state store: dial tcp 127.0.0.1:41193: connect: connection refused",
        );
        assert!(matches!(
            classify("r1", StatusCode::CONFLICT, &delete_down, true),
            StoreError::Unavailable { .. }
        ));
        let get_down = body(
            "ERR_STATE_GET",
            "fail to get r1 from state store redisstore: dial tcp 127.0.0.1:1: connect: connection refused",
        );
        assert!(matches!(
            classify("r1", StatusCode::INTERNAL_SERVER_ERROR, &get_down, false),
            StoreError::Unavailable { .. }
        ));
    }

    #[test]
    fn other_errors_carry_status_and_code() {
        let e = classify(
            "k",
            StatusCode::BAD_REQUEST,
            &body("ERR_STATE_STORE_NOT_FOUND", "state store nope is not found"),
            false,
        );
        let StoreError::Backend {
            source, message, ..
        } = e
        else {
            panic!("{e:?}")
        };
        assert!(message.contains("not loaded"), "{message}");
        let source = source.unwrap();
        let dapr = source.downcast_ref::<DaprError>().unwrap();
        assert_eq!(dapr.status, 400);
        assert_eq!(dapr.code.as_deref(), Some("ERR_STATE_STORE_NOT_FOUND"));
        let e = classify("k", StatusCode::UNAUTHORIZED, b"invalid api token\n", false);
        assert!(e.to_string().contains("DAPR_API_TOKEN"), "{e}");
    }
}
