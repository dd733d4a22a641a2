//! Configuration of the heartbeat service: a builder on [`Duration`]s, and the seed
//! system's environment variables.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `INSTANCE_HEARTBEAT_INTERVAL_SECONDS` | 10 | how often this instance publishes; 0 disables publishing |
//! | `INSTANCE_DISCOVERY_INTERVAL_SECONDS` | 30 | how often peers are polled |
//! | `INSTANCE_STALE_THRESHOLD_SECONDS` | 60 | unchanged for this long means dead; at least two heartbeat intervals |
//! | `HOSTNAME` | random GUID | the instance id |
//! | `WSM_GRPC_HOST`, `WSM_GRPC_PORT` | unset | the advertised `grpcHostPort` |
//!
//! ```
//! use std::time::Duration;
//! use heartbeat_core::{HeartbeatOptions, InstanceId};
//! let options = HeartbeatOptions::builder(InstanceId::new("pod-1")?)
//!     .heartbeat_interval(Duration::from_secs(2))
//!     .discovery_interval(Duration::from_secs(3))
//!     .stale_threshold(Duration::from_secs(10))
//!     .build()?;
//! assert_eq!(options.record_ttl(), Duration::from_secs(10));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Duration;

use crate::id::{InstanceId, InstanceIdError};
use crate::keys::KeyLayout;

/// Environment variable: heartbeat interval in seconds (0 disables publishing).
pub const ENV_HEARTBEAT_INTERVAL: &str = "INSTANCE_HEARTBEAT_INTERVAL_SECONDS";
/// Environment variable: discovery interval in seconds.
pub const ENV_DISCOVERY_INTERVAL: &str = "INSTANCE_DISCOVERY_INTERVAL_SECONDS";
/// Environment variable: stale threshold in seconds.
pub const ENV_STALE_THRESHOLD: &str = "INSTANCE_STALE_THRESHOLD_SECONDS";
/// Environment variable: the instance id.
pub const ENV_HOSTNAME: &str = "HOSTNAME";
/// Environment variable: advertised host.
pub const ENV_GRPC_HOST: &str = "WSM_GRPC_HOST";
/// Environment variable: advertised port.
pub const ENV_GRPC_PORT: &str = "WSM_GRPC_PORT";

/// Why options are invalid. Each names the variable or setting and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// A variable is not a whole number of seconds.
    #[error("{var}={value:?} is not a whole number of seconds")]
    NotANumber {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// A variable is negative.
    #[error("{var}={value:?} is negative; use 0 or more seconds")]
    Negative {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// A duration that must be positive is zero.
    #[error("{var} must be greater than zero")]
    Zero {
        /// The variable or setting.
        var: &'static str,
    },
    /// The stale threshold leaves no room for a missed beat.
    #[error(
        "{var} ({threshold:?}) must be at least two heartbeat intervals ({interval:?} each), \
         so that one late beat does not kill a live instance"
    )]
    ThresholdTooShort {
        /// The variable or setting.
        var: &'static str,
        /// The threshold.
        threshold: Duration,
        /// The heartbeat interval.
        interval: Duration,
    },
    /// The skew tolerance is too large for the threshold.
    #[error("skew tolerance ({skew:?}) must be less than half the stale threshold ({threshold:?})")]
    SkewTooLarge {
        /// The tolerance.
        skew: Duration,
        /// The threshold.
        threshold: Duration,
    },
    /// The instance id is invalid.
    #[error("{var} is not a valid instance id: {source}")]
    InstanceId {
        /// Where the id came from.
        var: &'static str,
        /// Why it is invalid.
        #[source]
        source: InstanceIdError,
    },
    /// The advertised port is not a port.
    #[error("{var}={value:?} is not a TCP port (1-65535)")]
    Port {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
}

/// Validated configuration of a [`crate::HeartbeatService`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatOptions {
    instance_id: InstanceId,
    grpc_host_port: Option<String>,
    heartbeat_interval: Duration,
    discovery_interval: Duration,
    stale_threshold: Duration,
    skew_tolerance: Duration,
    store_timeout: Duration,
    keys: KeyLayout,
}

impl HeartbeatOptions {
    /// A builder with the seed's defaults (10 s beats, 30 s discovery, 60 s threshold).
    pub fn builder(instance_id: InstanceId) -> HeartbeatOptionsBuilder {
        HeartbeatOptionsBuilder {
            instance_id,
            grpc_host_port: None,
            heartbeat_interval: Duration::from_secs(10),
            discovery_interval: Duration::from_secs(30),
            stale_threshold: Duration::from_secs(60),
            skew_tolerance: None,
            store_timeout: None,
            keys: KeyLayout::default(),
        }
    }

    /// Reads the seed's environment variables (see the module docs).
    pub fn from_env() -> Result<Self, OptionsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`HeartbeatOptions::from_env`], reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, OptionsError> {
        Self::builder_from_lookup(&lookup)?.build()
    }

    /// A builder pre-filled from variables read through `lookup`, for callers that
    /// override some settings (command-line flags) before building.
    pub fn builder_from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<HeartbeatOptionsBuilder, OptionsError> {
        let id = match lookup(ENV_HOSTNAME).filter(|h| !h.is_empty()) {
            Some(h) => InstanceId::new(h).map_err(|source| OptionsError::InstanceId {
                var: ENV_HOSTNAME,
                source,
            })?,
            None => InstanceId::random(),
        };
        let mut b = Self::builder(id);
        if let Some(s) = seconds(lookup, ENV_HEARTBEAT_INTERVAL)? {
            b = b.heartbeat_interval(s);
        }
        if let Some(s) = seconds(lookup, ENV_DISCOVERY_INTERVAL)? {
            b = b.discovery_interval(s);
        }
        if let Some(s) = seconds(lookup, ENV_STALE_THRESHOLD)? {
            b = b.stale_threshold(s);
        }
        if let Some(host) = lookup(ENV_GRPC_HOST).filter(|h| !h.is_empty()) {
            let addr =
                match lookup(ENV_GRPC_PORT).filter(|p| !p.is_empty()) {
                    Some(port) => {
                        let p: u16 = port.trim().parse().ok().filter(|p| *p != 0).ok_or(
                            OptionsError::Port {
                                var: ENV_GRPC_PORT,
                                value: port.clone(),
                            },
                        )?;
                        format!("{host}:{p}")
                    }
                    None => host,
                };
            b = b.grpc_host_port(addr);
        }
        Ok(b)
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &InstanceId {
        &self.instance_id
    }
    /// The advertised `host:port`, if any.
    pub fn grpc_host_port(&self) -> Option<&str> {
        self.grpc_host_port.as_deref()
    }
    /// How often this instance publishes ([`Duration::ZERO`] when disabled).
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat_interval
    }
    /// Whether this instance publishes heartbeats at all.
    pub fn publishing(&self) -> bool {
        !self.heartbeat_interval.is_zero()
    }
    /// How often peers are polled.
    pub fn discovery_interval(&self) -> Duration {
        self.discovery_interval
    }
    /// Unchanged for longer than this means dead.
    pub fn stale_threshold(&self) -> Duration {
        self.stale_threshold
    }
    /// How far a writer's timestamp may move a first sighting's age (see [`crate::liveness`]).
    pub fn skew_tolerance(&self) -> Duration {
        self.skew_tolerance
    }
    /// Time allowed for one store call.
    pub fn store_timeout(&self) -> Duration {
        self.store_timeout
    }
    /// The key layout.
    pub fn keys(&self) -> &KeyLayout {
        &self.keys
    }
    /// TTL of heartbeat records: the stale threshold, so an instance that stops
    /// publishing disappears from the store when observers would judge it dead anyway.
    pub fn record_ttl(&self) -> Duration {
        self.stale_threshold
    }
    /// A peer unchanged for this long is suspected (half the threshold).
    pub fn suspect_after(&self) -> Duration {
        self.stale_threshold / 2
    }
    /// This instance is at risk when it has not published for this long (half the
    /// threshold): peers may soon judge it dead.
    pub fn self_at_risk_after(&self) -> Duration {
        self.stale_threshold / 2
    }
    /// The view is unhealthy when the last successful discovery is older than this
    /// (two discovery intervals plus a store timeout).
    pub fn max_view_age(&self) -> Duration {
        self.discovery_interval * 2 + self.store_timeout
    }
    /// How long ended lives stay in the view (so reclaimers can act on them).
    pub fn ended_retention(&self) -> Duration {
        self.stale_threshold * 10
    }
}

/// Builder of [`HeartbeatOptions`].
#[derive(Debug, Clone)]
pub struct HeartbeatOptionsBuilder {
    instance_id: InstanceId,
    grpc_host_port: Option<String>,
    heartbeat_interval: Duration,
    discovery_interval: Duration,
    stale_threshold: Duration,
    skew_tolerance: Option<Duration>,
    store_timeout: Option<Duration>,
    keys: KeyLayout,
}

impl HeartbeatOptionsBuilder {
    /// Replaces the instance id.
    pub fn instance_id(mut self, id: InstanceId) -> Self {
        self.instance_id = id;
        self
    }
    /// The advertised `host:port`.
    pub fn grpc_host_port(mut self, addr: impl Into<String>) -> Self {
        self.grpc_host_port = Some(addr.into());
        self
    }
    /// How often to publish; [`Duration::ZERO`] disables publishing (observer only).
    pub fn heartbeat_interval(mut self, d: Duration) -> Self {
        self.heartbeat_interval = d;
        self
    }
    /// How often to poll peers.
    pub fn discovery_interval(mut self, d: Duration) -> Self {
        self.discovery_interval = d;
        self
    }
    /// Unchanged for longer than this means dead.
    pub fn stale_threshold(mut self, d: Duration) -> Self {
        self.stale_threshold = d;
        self
    }
    /// How much a writer's own timestamp may age a first sighting (default: a quarter
    /// of the threshold).
    pub fn skew_tolerance(mut self, d: Duration) -> Self {
        self.skew_tolerance = Some(d);
        self
    }
    /// Time allowed for one store call (default: the heartbeat interval, at most 5 s).
    pub fn store_timeout(mut self, d: Duration) -> Self {
        self.store_timeout = Some(d);
        self
    }
    /// The key layout (prefix).
    pub fn keys(mut self, keys: KeyLayout) -> Self {
        self.keys = keys;
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<HeartbeatOptions, OptionsError> {
        if self.discovery_interval.is_zero() {
            return Err(OptionsError::Zero {
                var: ENV_DISCOVERY_INTERVAL,
            });
        }
        if self.stale_threshold.is_zero() {
            return Err(OptionsError::Zero {
                var: ENV_STALE_THRESHOLD,
            });
        }
        if !self.heartbeat_interval.is_zero() && self.stale_threshold < self.heartbeat_interval * 2
        {
            return Err(OptionsError::ThresholdTooShort {
                var: ENV_STALE_THRESHOLD,
                threshold: self.stale_threshold,
                interval: self.heartbeat_interval,
            });
        }
        let skew_tolerance = self.skew_tolerance.unwrap_or(self.stale_threshold / 4);
        if skew_tolerance * 2 >= self.stale_threshold {
            return Err(OptionsError::SkewTooLarge {
                skew: skew_tolerance,
                threshold: self.stale_threshold,
            });
        }
        let default_timeout = if self.heartbeat_interval.is_zero() {
            self.discovery_interval
        } else {
            self.heartbeat_interval
        };
        let store_timeout = self
            .store_timeout
            .unwrap_or_else(|| default_timeout.min(Duration::from_secs(5)));
        if store_timeout.is_zero() {
            return Err(OptionsError::Zero {
                var: "store timeout",
            });
        }
        Ok(HeartbeatOptions {
            instance_id: self.instance_id,
            grpc_host_port: self.grpc_host_port,
            heartbeat_interval: self.heartbeat_interval,
            discovery_interval: self.discovery_interval,
            stale_threshold: self.stale_threshold,
            skew_tolerance,
            store_timeout,
            keys: self.keys,
        })
    }
}

fn seconds(
    lookup: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<Option<Duration>, OptionsError> {
    let Some(raw) = lookup(var) else {
        return Ok(None);
    };
    let value = raw.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if let Ok(n) = value.parse::<i64>() {
        if n < 0 {
            return Err(OptionsError::Negative { var, value: raw });
        }
        return Ok(Some(Duration::from_secs(n.unsigned_abs())));
    }
    Err(OptionsError::NotANumber { var, value: raw })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_are_the_seeds() {
        let o = HeartbeatOptions::from_lookup(env(&[("HOSTNAME", "pod-1")])).unwrap();
        assert_eq!(o.instance_id().as_str(), "pod-1");
        assert_eq!(o.heartbeat_interval(), Duration::from_secs(10));
        assert_eq!(o.discovery_interval(), Duration::from_secs(30));
        assert_eq!(o.stale_threshold(), Duration::from_secs(60));
        assert!(o.publishing());
        assert_eq!(o.grpc_host_port(), None);
    }

    #[test]
    fn missing_hostname_gives_a_random_id() {
        let a = HeartbeatOptions::from_lookup(env(&[])).unwrap();
        let b = HeartbeatOptions::from_lookup(env(&[])).unwrap();
        assert_ne!(a.instance_id(), b.instance_id());
    }

    #[test]
    fn reads_every_variable() {
        let o = HeartbeatOptions::from_lookup(env(&[
            ("HOSTNAME", "pod-2"),
            (ENV_HEARTBEAT_INTERVAL, "2"),
            (ENV_DISCOVERY_INTERVAL, "5"),
            (ENV_STALE_THRESHOLD, "12"),
            (ENV_GRPC_HOST, "10.0.0.7"),
            (ENV_GRPC_PORT, "5002"),
        ]))
        .unwrap();
        assert_eq!(o.heartbeat_interval(), Duration::from_secs(2));
        assert_eq!(o.discovery_interval(), Duration::from_secs(5));
        assert_eq!(o.stale_threshold(), Duration::from_secs(12));
        assert_eq!(o.grpc_host_port(), Some("10.0.0.7:5002"));
    }

    #[test]
    fn zero_interval_disables_publishing() {
        let o = HeartbeatOptions::from_lookup(env(&[(ENV_HEARTBEAT_INTERVAL, "0")])).unwrap();
        assert!(!o.publishing());
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let cases: [(&[(&str, &str)], &str); 6] = [
            (&[(ENV_HEARTBEAT_INTERVAL, "ten")], ENV_HEARTBEAT_INTERVAL),
            (&[(ENV_DISCOVERY_INTERVAL, "-1")], ENV_DISCOVERY_INTERVAL),
            (&[(ENV_DISCOVERY_INTERVAL, "0")], ENV_DISCOVERY_INTERVAL),
            (
                &[(ENV_HEARTBEAT_INTERVAL, "10"), (ENV_STALE_THRESHOLD, "15")],
                ENV_STALE_THRESHOLD,
            ),
            (&[("HOSTNAME", "a/b")], "HOSTNAME"),
            (
                &[(ENV_GRPC_HOST, "h"), (ENV_GRPC_PORT, "http")],
                ENV_GRPC_PORT,
            ),
        ];
        for (vars, name) in cases {
            let err = HeartbeatOptions::from_lookup(env(vars)).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}
