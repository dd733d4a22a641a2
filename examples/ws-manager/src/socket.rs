//! The outbound WebSocket sockets this instance holds, one per subscription it owns.
//!
//! Each socket runs in its own task: connect (sending the instance id in the
//! `x-instance-id` header), count messages, reconnect with backoff after a drop when the
//! record says `autoReconnect`, and close cleanly (a close frame) when told to stop.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use reclaimer::{ConnectionId, ConnectionRecord, ConnectionStatus};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::upstream::INSTANCE_HEADER;

/// First reconnect delay; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Time allowed to open a socket.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for the close handshake when stopping.
pub const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

/// Counters of one socket, shared with its task.
#[derive(Debug, Default)]
struct Counters {
    connected: AtomicBool,
    connects: AtomicU64,
    messages: AtomicU64,
}

/// What this instance holds for one subscription.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SocketStatus {
    /// The subscription.
    pub id: String,
    /// The upstream URL.
    pub url: String,
    /// Whether the socket is open now.
    pub connected: bool,
    /// How often it was opened.
    pub connects: u64,
    /// Messages received.
    pub messages: u64,
}

#[derive(Debug)]
struct Held {
    url: String,
    started: Instant,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    counters: Arc<Counters>,
}

/// A change of a socket's state that its owner records in the subscription record
/// (`status`): [`ConnectionStatus::Connected`] after opening,
/// [`ConnectionStatus::Reconnecting`] or [`ConnectionStatus::Disconnected`] after the
/// upstream dropped it. Deliberate stops are not reported.
pub type StatusChange = (ConnectionId, ConnectionStatus);

/// The sockets of one instance, by subscription id.
#[derive(Debug)]
pub struct Sockets {
    instance: String,
    held: Mutex<BTreeMap<ConnectionId, Held>>,
    changes: Option<mpsc::UnboundedSender<StatusChange>>,
}

impl Sockets {
    /// No sockets yet; `instance` is sent to the upstream with every socket.
    pub fn new(instance: impl Into<String>) -> Self {
        Self {
            instance: instance.into(),
            held: Mutex::new(BTreeMap::new()),
            changes: None,
        }
    }

    /// Like [`Sockets::new`], reporting every [`StatusChange`] to `changes`.
    pub fn reporting(
        instance: impl Into<String>,
        changes: mpsc::UnboundedSender<StatusChange>,
    ) -> Self {
        Self {
            instance: instance.into(),
            held: Mutex::new(BTreeMap::new()),
            changes: Some(changes),
        }
    }

    /// Whether a socket is held for `id`.
    pub fn holds(&self, id: &ConnectionId) -> bool {
        self.lock().contains_key(id)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<ConnectionId, Held>> {
        // Changes are single inserts and removes: a poisoned map is still consistent.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes sure a socket runs for `record` (started if absent, restarted if its URL
    /// changed or, with `autoReconnect`, if its task ended). Returns whether a socket
    /// was started.
    pub fn ensure(&self, record: &ConnectionRecord) -> bool {
        let mut held = self.lock();
        // A socket that ended by itself is restarted only if the record asks for
        // reconnection; one without `autoReconnect` stays closed once dropped.
        if let Some(h) = held.get(&record.id)
            && h.url == record.url
            && (!h.task.is_finished() || !record.auto_reconnect)
        {
            return false;
        }
        if let Some(old) = held.remove(&record.id) {
            let _ = old.stop.send(true);
        }
        let (stop, stop_rx) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(run(
            record.id.clone(),
            record.url.clone(),
            record.auto_reconnect,
            self.instance.clone(),
            counters.clone(),
            self.changes.clone(),
            stop_rx,
        ));
        held.insert(
            record.id.clone(),
            Held {
                url: record.url.clone(),
                started: Instant::now(),
                stop,
                task,
                counters,
            },
        );
        tracing::info!(subscription = %record.id, url = %record.url, "socket started");
        metrics::counter!("ws_manager_sockets_started_total").increment(1);
        true
    }

    /// Stops the socket of `id` (close frame, then the task ends). Returns whether
    /// there was one.
    pub fn stop(&self, id: &ConnectionId) -> bool {
        match self.lock().remove(id) {
            Some(h) => {
                let _ = h.stop.send(true);
                tracing::info!(subscription = %id, "socket stopped");
                true
            }
            None => false,
        }
    }

    /// Stops every socket started before `before` whose id `keep` rejects.
    pub fn retain_started_before(&self, before: Instant, keep: impl Fn(&ConnectionId) -> bool) {
        let mut held = self.lock();
        let drop: Vec<ConnectionId> = held
            .iter()
            .filter(|(id, h)| h.started < before && !keep(id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in drop {
            if let Some(h) = held.remove(&id) {
                let _ = h.stop.send(true);
                tracing::info!(subscription = %id, "socket stopped: no longer ours");
            }
        }
    }

    /// Stops every socket and waits (at most `limit`) until all are closed.
    pub async fn stop_all(&self, limit: Duration) {
        let all: Vec<Held> = std::mem::take(&mut *self.lock()).into_values().collect();
        for h in &all {
            let _ = h.stop.send(true);
        }
        let deadline = Instant::now() + limit;
        for h in all {
            let mut task = h.task;
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
    }

    /// Drops every socket at once, without a close frame, as a crash would (in-process
    /// tests).
    pub fn abort_all(&self) {
        for (_, h) in std::mem::take(&mut *self.lock()) {
            h.task.abort();
        }
    }

    /// Ids of the subscriptions held.
    pub fn ids(&self) -> Vec<ConnectionId> {
        self.lock().keys().cloned().collect()
    }

    /// Status of every socket held.
    pub fn status(&self) -> Vec<SocketStatus> {
        self.lock()
            .iter()
            .map(|(id, h)| SocketStatus {
                id: id.to_string(),
                url: h.url.clone(),
                connected: h.counters.connected.load(Ordering::Relaxed),
                connects: h.counters.connects.load(Ordering::Relaxed),
                messages: h.counters.messages.load(Ordering::Relaxed),
            })
            .collect()
    }
}

impl Drop for Sockets {
    fn drop(&mut self) {
        for h in self.lock().values() {
            h.task.abort();
        }
    }
}

async fn run(
    id: ConnectionId,
    url: String,
    auto_reconnect: bool,
    instance: String,
    counters: Arc<Counters>,
    changes: Option<mpsc::UnboundedSender<StatusChange>>,
    mut stop: watch::Receiver<bool>,
) {
    let report = |status| {
        if let Some(c) = &changes {
            let _ = c.send((id.clone(), status));
        }
    };
    let mut backoff = MIN_BACKOFF;
    loop {
        if *stop.borrow() {
            return;
        }
        let request = match url.as_str().into_client_request() {
            Ok(mut r) => {
                if let Ok(v) = HeaderValue::from_str(&instance) {
                    r.headers_mut().insert(INSTANCE_HEADER, v);
                }
                r
            }
            Err(e) => {
                tracing::error!(subscription = %id, url, error = %e, "not a WebSocket URL; the subscription stays closed");
                return;
            }
        };
        let attempt =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request));
        let result = tokio::select! {
            r = attempt => r,
            _ = stop.changed() => return,
        };
        match result {
            Ok(Ok((mut ws, _))) => {
                counters.connected.store(true, Ordering::Relaxed);
                counters.connects.fetch_add(1, Ordering::Relaxed);
                report(ConnectionStatus::Connected);
                backoff = MIN_BACKOFF;
                tracing::debug!(subscription = %id, "socket open");
                loop {
                    tokio::select! {
                        _ = stop.changed() => {
                            let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
                            counters.connected.store(false, Ordering::Relaxed);
                            return;
                        }
                        m = ws.next() => match m {
                            Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                                counters.messages.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                            Some(Ok(_)) => {}
                        },
                    }
                }
                counters.connected.store(false, Ordering::Relaxed);
                tracing::warn!(subscription = %id, "socket dropped by the upstream");
                report(if auto_reconnect {
                    ConnectionStatus::Reconnecting
                } else {
                    ConnectionStatus::Disconnected
                });
            }
            Ok(Err(e)) => {
                tracing::warn!(subscription = %id, url, error = %e, "could not open socket");
            }
            Err(_) => {
                tracing::warn!(subscription = %id, url, after = ?CONNECT_TIMEOUT, "opening the socket timed out");
            }
        }
        if !auto_reconnect {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
