//! The upstream feed the managers subscribe to: a WebSocket server that streams messages
//! to every open socket and counts, per subscription, how many sockets are open, who
//! holds them and how long the subscription went without one (its gaps).
//!
//! A subscription is named by the WebSocket URL path after `/ws/` (`ws://host:port/ws/<key>`;
//! the query is ignored). Clients may say who they are with the `x-instance-id` header,
//! which the report shows per open socket.
//!
//! The report is served over HTTP (a second listener) as JSON:
//! `GET /subscriptions` (all), `GET /subscriptions/{key}` (one), `POST /reset` (forget
//! the history, keep the open sockets), `GET /healthz`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// The header a client uses to say which instance holds a socket.
pub const INSTANCE_HEADER: &str = "x-instance-id";

/// Errors of the upstream server.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A listener could not be bound.
    #[error("could not listen on {addr}: {source}; pick a free port")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// One socket that is open now.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenSocket {
    /// The server's number for the socket.
    pub socket: u64,
    /// The `x-instance-id` the client sent, if any.
    pub instance: Option<String>,
    /// How long it has been open, in milliseconds.
    pub open_for_ms: f64,
}

/// What the upstream knows about one subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionReport {
    /// The subscription key (URL path after `/ws/`).
    pub key: String,
    /// Sockets open now.
    pub open: usize,
    /// Who holds them.
    pub sockets: Vec<OpenSocket>,
    /// Sockets accepted in total.
    pub connects: u64,
    /// The most sockets open at once.
    pub max_open: usize,
    /// Every completed absence (no socket open, then one again), in milliseconds.
    pub gaps_ms: Vec<f64>,
    /// How long the subscription has had no socket, if it has none now (ms).
    pub absent_for_ms: Option<f64>,
    /// The longest time more than one socket was open at once (ms).
    pub longest_double_ms: f64,
    /// How long more than one socket is open now, if that is the case (ms).
    pub double_for_ms: Option<f64>,
    /// Messages sent.
    pub messages: u64,
}

#[derive(Debug, Default)]
struct Subscription {
    open: BTreeMap<u64, (Option<String>, Instant)>,
    connects: u64,
    max_open: usize,
    absent_since: Option<Instant>,
    gaps: Vec<Duration>,
    double_since: Option<Instant>,
    longest_double: Duration,
    messages: u64,
}

impl Subscription {
    fn report(&self, key: &str, now: Instant) -> SubscriptionReport {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let double_for = self.double_since.map(|s| now.saturating_duration_since(s));
        SubscriptionReport {
            key: key.to_owned(),
            open: self.open.len(),
            sockets: self
                .open
                .iter()
                .map(|(socket, (instance, at))| OpenSocket {
                    socket: *socket,
                    instance: instance.clone(),
                    open_for_ms: ms(now.saturating_duration_since(*at)),
                })
                .collect(),
            connects: self.connects,
            max_open: self.max_open,
            gaps_ms: self.gaps.iter().copied().map(ms).collect(),
            absent_for_ms: self
                .absent_since
                .map(|s| ms(now.saturating_duration_since(s))),
            longest_double_ms: ms(self
                .longest_double
                .max(double_for.unwrap_or(Duration::ZERO))),
            double_for_ms: double_for.map(ms),
            messages: self.messages,
        }
    }

    fn opened(&mut self, socket: u64, instance: Option<String>, now: Instant) {
        self.open.insert(socket, (instance, now));
        self.connects += 1;
        self.max_open = self.max_open.max(self.open.len());
        if let Some(since) = self.absent_since.take() {
            self.gaps.push(now.saturating_duration_since(since));
        }
        if self.open.len() > 1 && self.double_since.is_none() {
            self.double_since = Some(now);
        }
    }

    fn closed(&mut self, socket: u64, now: Instant) {
        self.open.remove(&socket);
        if self.open.len() <= 1
            && let Some(since) = self.double_since.take()
        {
            self.longest_double = self
                .longest_double
                .max(now.saturating_duration_since(since));
        }
        if self.open.is_empty() {
            self.absent_since = Some(now);
        }
    }
}

#[derive(Debug, Default)]
struct Registry {
    subscriptions: BTreeMap<String, Subscription>,
    next_socket: u64,
}

/// The shared state of a running upstream; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Upstream {
    inner: Arc<Mutex<Registry>>,
}

impl Upstream {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Every change is a few field updates; a poisoned lock still holds usable data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The report of every subscription ever seen.
    pub fn reports(&self) -> Vec<SubscriptionReport> {
        let now = Instant::now();
        self.lock()
            .subscriptions
            .iter()
            .map(|(k, s)| s.report(k, now))
            .collect()
    }

    /// The report of one subscription.
    pub fn report(&self, key: &str) -> Option<SubscriptionReport> {
        let now = Instant::now();
        self.lock()
            .subscriptions
            .get(key)
            .map(|s| s.report(key, now))
    }

    /// Forgets the history (gaps, counts) and keeps the open sockets.
    pub fn reset(&self) {
        let now = Instant::now();
        let mut reg = self.lock();
        reg.subscriptions.retain(|_, s| !s.open.is_empty());
        for s in reg.subscriptions.values_mut() {
            s.connects = 0;
            s.max_open = s.open.len();
            s.gaps.clear();
            s.absent_since = None;
            s.longest_double = Duration::ZERO;
            s.double_since = (s.open.len() > 1).then_some(now);
            s.messages = 0;
        }
    }

    fn opened(&self, key: &str, instance: Option<String>) -> u64 {
        let now = Instant::now();
        let mut reg = self.lock();
        reg.next_socket += 1;
        let socket = reg.next_socket;
        reg.subscriptions
            .entry(key.to_owned())
            .or_default()
            .opened(socket, instance, now);
        socket
    }

    fn closed(&self, key: &str, socket: u64) {
        let now = Instant::now();
        if let Some(s) = self.lock().subscriptions.get_mut(key) {
            s.closed(socket, now);
        }
    }

    fn sent(&self, key: &str) {
        if let Some(s) = self.lock().subscriptions.get_mut(key) {
            s.messages += 1;
        }
    }

    /// Binds both listeners and serves until the task is dropped. Returns the bound
    /// addresses (useful with port 0) and the serving future.
    pub async fn bind(
        self,
        ws_addr: SocketAddr,
        http_addr: SocketAddr,
        message_interval: Duration,
    ) -> Result<(SocketAddr, SocketAddr, impl Future<Output = ()> + Send), UpstreamError> {
        let ws = TcpListener::bind(ws_addr)
            .await
            .map_err(|source| UpstreamError::Bind {
                addr: ws_addr,
                source,
            })?;
        let http = TcpListener::bind(http_addr)
            .await
            .map_err(|source| UpstreamError::Bind {
                addr: http_addr,
                source,
            })?;
        let ws_local = ws.local_addr().unwrap_or(ws_addr);
        let http_local = http.local_addr().unwrap_or(http_addr);
        let router = self.router();
        let upstream = self;
        let serve = async move {
            let http = async move {
                if let Err(e) = axum::serve(http, router).await {
                    tracing::error!(error = %e, "upstream HTTP server stopped");
                }
            };
            let ws = async move {
                loop {
                    match ws.accept().await {
                        Ok((stream, _)) => {
                            tokio::spawn(serve_socket(upstream.clone(), stream, message_interval));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            };
            tokio::join!(http, ws);
        };
        Ok((ws_local, http_local, serve))
    }

    /// The HTTP report API.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/subscriptions", get(list))
            .route("/subscriptions/{key}", get(one))
            .route("/reset", post(reset))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(self.clone())
    }
}

async fn list(State(up): State<Upstream>) -> Json<Vec<SubscriptionReport>> {
    Json(up.reports())
}

async fn one(State(up): State<Upstream>, Path(key): Path<String>) -> impl IntoResponse {
    match up.report(&key) {
        Some(r) => Json(r).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("no subscription {key:?} seen"),
        )
            .into_response(),
    }
}

async fn reset(State(up): State<Upstream>) -> StatusCode {
    up.reset();
    StatusCode::NO_CONTENT
}

/// The subscription key of a request path: what follows `/ws/`, or the whole path.
pub fn key_of_path(path: &str) -> String {
    let path = path.split('?').next().unwrap_or_default();
    path.strip_prefix("/ws/")
        .unwrap_or_else(|| path.trim_start_matches('/'))
        .to_owned()
}

async fn serve_socket(upstream: Upstream, stream: TcpStream, interval: Duration) {
    let _ = stream.set_nodelay(true);
    let mut key = String::new();
    let mut instance = None;
    // The error type is tungstenite's (a whole HTTP response); we never return it.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        key = key_of_path(&req.uri().to_string());
        instance = req
            .headers()
            .get(INSTANCE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(resp)
    };
    let mut ws = match tokio_tungstenite::accept_hdr_async(stream, callback).await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "handshake failed");
            return;
        }
    };
    let socket = upstream.opened(&key, instance.clone());
    tracing::info!(
        key,
        socket,
        instance = instance.as_deref().unwrap_or("-"),
        "socket open"
    );
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                seq += 1;
                let msg = format!(r#"{{"topic":{},"seq":{seq}}}"#, serde_json::Value::from(key.as_str()));
                if ws.send(Message::text(msg)).await.is_err() {
                    break;
                }
                upstream.sent(&key);
            }
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    upstream.closed(&key, socket);
    tracing::info!(key, socket, "socket closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_the_path_after_ws() {
        assert_eq!(key_of_path("/ws/sub-1?x=1"), "sub-1");
        assert_eq!(key_of_path("/feed"), "feed");
    }

    #[test]
    fn gaps_and_doubles_are_measured() {
        let t0 = Instant::now();
        let mut s = Subscription::default();
        s.opened(1, Some("a".into()), t0);
        s.closed(1, t0 + Duration::from_millis(10));
        s.opened(2, Some("b".into()), t0 + Duration::from_millis(40));
        s.opened(3, Some("c".into()), t0 + Duration::from_millis(50));
        s.closed(2, t0 + Duration::from_millis(55));
        let r = s.report("k", t0 + Duration::from_millis(60));
        assert_eq!(r.open, 1);
        assert_eq!(r.connects, 3);
        assert_eq!(r.max_open, 2);
        assert_eq!(r.gaps_ms.len(), 1);
        assert!((r.gaps_ms[0] - 30.0).abs() < 0.001);
        assert!((r.longest_double_ms - 5.0).abs() < 0.001);
        assert!(r.absent_for_ms.is_none());
        assert!(r.double_for_ms.is_none());
    }
}
