//! The knobs of the reclaimer: what [`crate::decide`] allows and how the driver sweeps.
//!
//! ```
//! use std::time::Duration;
//! use reclaimer::{BrakePolicy, ReclaimPolicy};
//! let policy = ReclaimPolicy::default()
//!     .sweep_interval(Duration::from_secs(10))
//!     .max_claims_per_sweep(200)
//!     .brake(BrakePolicy::new(0.4, 2)?);
//! assert_eq!(policy.get_max_claims_per_sweep(), 200);
//! # Ok::<(), reclaimer::BrakePolicyError>(())
//! ```

use std::time::Duration;

use crate::brake::BrakePolicy;

/// Default time between periodic sweeps (the seed's sweep period).
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// Default cap of claims per sweep.
pub const DEFAULT_MAX_CLAIMS_PER_SWEEP: usize = 1000;
/// Default page size of repository scans.
pub const DEFAULT_PAGE_SIZE: usize = 500;
/// Default time allowed for one repository call.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

/// How the reclaimer decides and sweeps. Build from [`ReclaimPolicy::default`] with the
/// chaining setters; read with the `get_` methods.
#[derive(Debug, Clone, PartialEq)]
pub struct ReclaimPolicy {
    pub(crate) brake: BrakePolicy,
    pub(crate) max_claims_per_sweep: usize,
    pub(crate) skew_margin: Option<Duration>,
    pub(crate) require_designation: bool,
    pub(crate) sweep_interval: Duration,
    pub(crate) page_size: usize,
    pub(crate) operation_timeout: Duration,
}

impl Default for ReclaimPolicy {
    fn default() -> Self {
        Self {
            brake: BrakePolicy::default(),
            max_claims_per_sweep: DEFAULT_MAX_CLAIMS_PER_SWEEP,
            skew_margin: None,
            require_designation: true,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            page_size: DEFAULT_PAGE_SIZE,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
        }
    }
}

impl ReclaimPolicy {
    /// When the brake engages (default: more than one half, at least 3 dead owners).
    pub fn brake(mut self, brake: BrakePolicy) -> Self {
        self.brake = brake;
        self
    }

    /// At most this many claims per sweep (default 1000); the rest wait for the next
    /// sweep. 0 reclaims nothing.
    pub fn max_claims_per_sweep(mut self, n: usize) -> Self {
        self.max_claims_per_sweep = n;
        self
    }

    /// The margin for wall-clock skew between hosts when record timestamps (written by
    /// other hosts' clocks) are compared with our clock or with an owner's `startedAt`
    /// (default: a quarter of the view's stale threshold, like the heartbeat service's
    /// skew tolerance).
    pub fn skew_margin(mut self, margin: Duration) -> Self {
        self.skew_margin = Some(margin);
        self
    }

    /// Whether only the rendezvous-designated survivor claims an orphan (default true).
    /// Turning it off is still safe (claims are compare-and-swap) but makes survivors
    /// race for every orphan; the driver turns it off only for
    /// [`crate::Reclaimer::reclaim_on_access`], where the accessing instance has the
    /// request in hand.
    pub fn require_designation(mut self, on: bool) -> Self {
        self.require_designation = on;
        self
    }

    /// Time between periodic sweeps of the driver (default 30 s). Departures trigger a
    /// sweep at once besides.
    pub fn sweep_interval(mut self, d: Duration) -> Self {
        self.sweep_interval = d;
        self
    }

    /// Records per scan page (default 500; at least 1).
    pub fn page_size(mut self, n: usize) -> Self {
        self.page_size = n.max(1);
        self
    }

    /// Time allowed for one repository call before it counts as failed (default 5 s).
    pub fn operation_timeout(mut self, d: Duration) -> Self {
        self.operation_timeout = d;
        self
    }

    /// See [`ReclaimPolicy::brake`].
    pub fn get_brake(&self) -> BrakePolicy {
        self.brake
    }

    /// See [`ReclaimPolicy::max_claims_per_sweep`].
    pub fn get_max_claims_per_sweep(&self) -> usize {
        self.max_claims_per_sweep
    }

    /// The skew margin for a view judged with `stale_threshold` (see
    /// [`ReclaimPolicy::skew_margin`]).
    pub fn skew_margin_for(&self, stale_threshold: Duration) -> Duration {
        self.skew_margin.unwrap_or(stale_threshold / 4)
    }

    /// See [`ReclaimPolicy::require_designation`].
    pub fn get_require_designation(&self) -> bool {
        self.require_designation
    }

    /// See [`ReclaimPolicy::sweep_interval`].
    pub fn get_sweep_interval(&self) -> Duration {
        self.sweep_interval
    }

    /// See [`ReclaimPolicy::page_size`].
    pub fn get_page_size(&self) -> usize {
        self.page_size
    }

    /// See [`ReclaimPolicy::operation_timeout`].
    pub fn get_operation_timeout(&self) -> Duration {
        self.operation_timeout
    }
}
