//! The HTTP API of a manager (axum):
//!
//! | request | what it does |
//! |---|---|
//! | `POST /subscriptions` `{"topic":"eurusd"}` | creates a subscription owned by this instance and opens its socket; optional `id`, `url` (default `<upstream>/<topic>`), `tags`, `autoReconnect` |
//! | `GET /subscriptions` | every subscription record in the store, with its owner |
//! | `GET /subscriptions/{id}` | one record |
//! | `DELETE /subscriptions/{id}` | deletes the record; its owner closes the socket (at once if it is this instance, else at its next round) |
//! | `GET /local` | the sockets this instance holds |
//! | `GET /healthz` | this instance, its life and its view of the cluster |

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use heartbeat_core::{DeleteMode, ViewHealth};
use reclaimer::{ConnectionId, ConnectionRecord, RepositoryError, StoredConnection};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::manager::{Shared, new_subscription_id};

/// The body of `POST /subscriptions`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSubscription {
    /// The id (default: a random GUID).
    pub id: Option<String>,
    /// The WebSocket URL (default: `<upstream>/<topic>`).
    pub url: Option<String>,
    /// The topic.
    pub topic: Option<String>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Reconnect after a drop (default true).
    pub auto_reconnect: Option<bool>,
}

/// The router of the API.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/subscriptions", get(list).post(create))
        .route("/subscriptions/{id}", get(one).delete(remove))
        .route("/local", get(local))
        .route("/healthz", get(health))
        .with_state(shared)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn repo_error(e: &RepositoryError) -> Response {
    let status = match e {
        RepositoryError::Conflict { .. } => StatusCode::CONFLICT,
        RepositoryError::Unavailable { .. } | RepositoryError::Timeout { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

fn describe(shared: &Shared, stored: &StoredConnection) -> Value {
    let mut v = stored
        .record
        .to_json()
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .unwrap_or_else(|| json!({ "id": stored.record.id.as_str() }));
    if let Value::Object(map) = &mut v {
        map.insert("version".into(), json!(stored.version.as_str()));
        map.insert("heldHere".into(), json!(shared.owns(&stored.record)));
    }
    v
}

async fn list(State(shared): State<Arc<Shared>>) -> Response {
    match shared.scan_all().await {
        Ok(all) => {
            Json(all.iter().map(|s| describe(&shared, s)).collect::<Vec<_>>()).into_response()
        }
        Err(e) => repo_error(&e),
    }
}

async fn one(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let Ok(id) = ConnectionId::new(id) else {
        return error(StatusCode::BAD_REQUEST, "invalid subscription id");
    };
    match shared.connections.get(&id).await {
        Ok(Some(s)) => Json(describe(&shared, &s)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no subscription {id}")),
        Err(e) => repo_error(&e),
    }
}

async fn create(State(shared): State<Arc<Shared>>, Json(body): Json<NewSubscription>) -> Response {
    let id = match body.id {
        Some(id) => ConnectionId::new(id),
        None => new_subscription_id(),
    };
    let id = match id {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let url = match (body.url, &body.topic, &shared.config.upstream) {
        (Some(url), _, _) => url,
        (None, Some(topic), Some(base)) => format!("{}/{topic}", base.trim_end_matches('/')),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give a url, or a topic and start the manager with --upstream",
            );
        }
    };
    if !(url.starts_with("ws://") || url.starts_with("wss://")) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{url:?} is not a ws:// or wss:// URL"),
        );
    }
    let mut record = ConnectionRecord::new(
        id,
        url,
        shared.instance.clone(),
        Some(shared.incarnation),
        chrono::Utc::now(),
    );
    record.topic = body.topic;
    record.tags = body.tags;
    record.auto_reconnect = body.auto_reconnect.unwrap_or(true);
    match shared.connections.create(&record).await {
        Ok(stored) => {
            // At risk, the socket opens at the first round after recovery.
            if !shared.releasing() {
                shared.sockets.ensure(&stored.record);
            }
            (StatusCode::CREATED, Json(describe(&shared, &stored))).into_response()
        }
        Err(RepositoryError::Conflict { id }) => error(
            StatusCode::CONFLICT,
            format!("subscription {id} exists already"),
        ),
        Err(e) => repo_error(&e),
    }
}

async fn remove(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let Ok(id) = ConnectionId::new(id) else {
        return error(StatusCode::BAD_REQUEST, "invalid subscription id");
    };
    let current = match shared.connections.get(&id).await {
        Ok(Some(s)) => s,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no subscription {id}")),
        Err(e) => return repo_error(&e),
    };
    match shared
        .connections
        .delete(&id, DeleteMode::IfVersion(current.version.clone()))
        .await
    {
        Ok(()) => {
            shared.sockets.stop(&id);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => repo_error(&e),
    }
}

async fn local(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.sockets.status()).into_response()
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    let view = shared.view.borrow().clone();
    let health = match &view.health {
        ViewHealth::Starting => "starting".to_owned(),
        ViewHealth::Healthy => "healthy".to_owned(),
        ViewHealth::Unhealthy { reason, .. } => format!("unhealthy: {reason}"),
    };
    let peers: Vec<Value> = view
        .peers
        .values()
        .map(|p| {
            json!({
                "id": p.id.as_str(),
                "incarnation": p.incarnation.map(|i| i.to_string()),
                "liveness": format!("{:?}", p.liveness).to_lowercase(),
                "address": p.grpc_host_port,
            })
        })
        .collect();
    let ended: Vec<Value> = view
        .ended
        .iter()
        .map(|e| {
            json!({
                "id": e.id.as_str(),
                "incarnation": e.incarnation.map(|i| i.to_string()),
                "reason": e.reason.to_string(),
            })
        })
        .collect();
    Json(json!({
        "instance": shared.instance.as_str(),
        "incarnation": shared.incarnation.to_string(),
        "view": health,
        "selfAtRisk": view.self_at_risk,
        "peers": peers,
        "ended": ended,
        "sockets": shared.sockets.ids().len(),
    }))
    .into_response()
}
