//! The agent's HTTP endpoints: `/healthz`, `/readyz` and `/metrics`.
//!
//! - `/healthz`: 200 while the view may be acted on ([`MembershipView::is_actionable`]);
//!   503 when this instance is at risk (it could not publish) or its view is unhealthy
//!   or stale. While the first discovery has not completed, 200 for a start-up grace
//!   period, 503 after it.
//! - `/readyz`: 200 once the view may be acted on, 503 before and whenever it may not
//!   (no grace).
//! - `/metrics`: Prometheus text (the `heartbeat_*` and `reclaim_*` metrics).
//!
//! Health bodies are one JSON object: `status`, `reason`, `instance`, `incarnation`,
//! `livePeers`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use heartbeat::{MembershipView, NotActionable};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

/// What the handlers read.
#[derive(Clone)]
pub struct Health {
    /// The service's view.
    pub view: watch::Receiver<Arc<MembershipView>>,
    /// When the agent started.
    pub started: Instant,
    /// How long `Starting` is still healthy.
    pub grace: Duration,
    /// The metrics registry.
    pub metrics: PrometheusHandle,
}

/// The outcome of a health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the check passes.
    pub ok: bool,
    /// `ok`, `starting`, `observer` or why not.
    pub reason: String,
}

impl Health {
    /// `/healthz`: `is_actionable`, with a grace period for `Starting` and the observer
    /// mode (heartbeat interval 0) treated as healthy.
    pub fn liveness(&self, now: Instant) -> Verdict {
        let view = self.view.borrow().clone();
        let in_grace = now.saturating_duration_since(self.started) < self.grace;
        match view.is_actionable(now) {
            Ok(()) => pass("ok"),
            Err(NotActionable::Starting) if in_grace => pass("starting"),
            Err(NotActionable::NotAuthoritative) => pass("observer"),
            Err(e) => fail(e),
        }
    }

    /// `/readyz`: `is_actionable`, strictly (observer mode excepted).
    pub fn readiness(&self, now: Instant) -> Verdict {
        let view = self.view.borrow().clone();
        match view.is_actionable(now) {
            Ok(()) => pass("ok"),
            Err(NotActionable::NotAuthoritative) => pass("observer"),
            Err(e) => fail(e),
        }
    }

    fn respond(&self, verdict: Verdict) -> Response {
        let view = self.view.borrow().clone();
        let body = serde_json::json!({
            "status": if verdict.ok { "ok" } else { "unavailable" },
            "reason": verdict.reason,
            "instance": view.observer.as_str(),
            "incarnation": view.observer_incarnation.to_string(),
            "livePeers": view.peers.len(),
        });
        let code = if verdict.ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (
            code,
            [(header::CONTENT_TYPE, "application/json")],
            format!("{body}\n"),
        )
            .into_response()
    }
}

fn pass(reason: &str) -> Verdict {
    Verdict {
        ok: true,
        reason: reason.to_owned(),
    }
}

fn fail(e: NotActionable) -> Verdict {
    Verdict {
        ok: false,
        reason: e.to_string(),
    }
}

async fn healthz(State(h): State<Health>) -> Response {
    let verdict = h.liveness(Instant::now());
    h.respond(verdict)
}

async fn readyz(State(h): State<Health>) -> Response {
    let verdict = h.readiness(Instant::now());
    h.respond(verdict)
}

async fn metrics(State(h): State<Health>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        h.metrics.render(),
    )
        .into_response()
}

/// The router.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

/// Binds `addr`; the error message says what to do.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        format!("could not listen on {addr}: {e}; choose another address with --listen (port 0 picks a free one)")
    })
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    health: Health,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(health))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use heartbeat::{Incarnation, InstanceId, ViewHealth};
    use metrics_exporter_prometheus::PrometheusBuilder;

    fn health(
        view: MembershipView,
        grace: Duration,
    ) -> (Health, watch::Sender<Arc<MembershipView>>) {
        let (tx, rx) = watch::channel(Arc::new(view));
        let h = Health {
            view: rx,
            started: Instant::now(),
            grace,
            metrics: PrometheusBuilder::new().build_recorder().handle(),
        };
        (h, tx)
    }

    fn starting() -> MembershipView {
        MembershipView::starting(
            InstanceId::new("me").unwrap(),
            Incarnation::from_u64(1),
            Duration::from_secs(10),
            Duration::from_secs(2),
            Duration::from_secs(5),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn starting_is_healthy_only_during_the_grace_period() {
        let (h, _tx) = health(starting(), Duration::from_secs(5));
        assert_eq!(h.liveness(Instant::now()), pass("starting"));
        assert!(!h.readiness(Instant::now()).ok);
        tokio::time::advance(Duration::from_secs(6)).await;
        let v = h.liveness(Instant::now());
        assert!(!v.ok);
        assert!(v.reason.contains("no discovery"), "{v:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn healthy_view_is_healthy_until_it_goes_stale() {
        let mut view = starting();
        view.health = ViewHealth::Healthy;
        view.observed_at = Some(Instant::now());
        let (h, _tx) = health(view, Duration::ZERO);
        assert!(h.liveness(Instant::now()).ok);
        assert!(h.readiness(Instant::now()).ok);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!h.liveness(Instant::now()).ok);
    }

    #[tokio::test(start_paused = true)]
    async fn at_risk_or_unhealthy_is_unavailable() {
        let mut view = starting();
        view.health = ViewHealth::Healthy;
        view.observed_at = Some(Instant::now());
        let (h, tx) = health(view, Duration::from_secs(60));
        tx.send_modify(|v| Arc::make_mut(v).self_at_risk = true);
        let v = h.liveness(Instant::now());
        assert!(!v.ok && v.reason.contains("at risk"), "{v:?}");
        tx.send_modify(|v| {
            let v = Arc::make_mut(v);
            v.self_at_risk = false;
            v.health = ViewHealth::Unhealthy {
                reason: "store down".into(),
                since: Instant::now(),
            };
        });
        let v = h.liveness(Instant::now());
        assert!(!v.ok && v.reason.contains("store down"), "{v:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_observer_is_healthy() {
        let mut view = starting();
        view.health = ViewHealth::Healthy;
        view.observed_at = Some(Instant::now());
        view.authoritative = false;
        let (h, _tx) = health(view, Duration::ZERO);
        assert_eq!(h.liveness(Instant::now()), pass("observer"));
    }
}
