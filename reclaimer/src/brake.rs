//! The brake: when too many owners look dead at once, the observer is the likelier
//! culprit (cut off from its peers, or from the store), so it stops and reports
//! instead of taking everything over.
//!
//! An owner **looks dead** when none of its lives is live in the view and its death is
//! inferred from silence: its record expired ([`LeaveReason::Expired`]) or it was never
//! seen and its connection records are old. Owners that left gracefully or restarted
//! (a new incarnation was seen) do not count: that is positive evidence, which a
//! partition cannot fake.
//!
//! **Owners seen** are the live instances of the view plus every other owner named by
//! a connection record of the sweep. The brake engages when at least
//! [`BrakePolicy::min_dead_owners`] owners look dead *and* they are more than
//! [`BrakePolicy::max_dead_fraction`] of the owners seen; it also engages whenever the
//! view says this instance is itself at risk of being judged dead.
//!
//! ```
//! use reclaimer::BrakePolicy;
//! let brake = BrakePolicy::default(); // one half, at least 3 dead owners
//! assert!(!brake.engages(2, 3));      // a 3-node cluster losing 2 still reclaims
//! assert!(brake.engages(4, 6));       // 4 of 6 owners dead at once: stop
//! assert!(!brake.engages(3, 6));      // exactly one half is not more than one half
//! ```
//!
//! [`LeaveReason::Expired`]: heartbeat_core::LeaveReason::Expired

/// When the brake engages (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BrakePolicy {
    max_dead_fraction: f64,
    min_dead_owners: usize,
}

/// Why a [`BrakePolicy`] cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum BrakePolicyError {
    /// The fraction is not between 0 and 1.
    #[error("brake fraction {0} must be between 0.0 and 1.0 (the default is 0.5)")]
    Fraction(f64),
}

impl Default for BrakePolicy {
    /// One half, with at least 3 dead owners.
    fn default() -> Self {
        Self {
            max_dead_fraction: 0.5,
            min_dead_owners: 3,
        }
    }
}

impl BrakePolicy {
    /// Engage when at least `min_dead_owners` owners look dead and they are more than
    /// `max_dead_fraction` (0.0 to 1.0) of the owners seen. A fraction of 1.0 never
    /// engages on dead owners (only on self-at-risk).
    pub fn new(max_dead_fraction: f64, min_dead_owners: usize) -> Result<Self, BrakePolicyError> {
        if !(0.0..=1.0).contains(&max_dead_fraction) {
            return Err(BrakePolicyError::Fraction(max_dead_fraction));
        }
        Ok(Self {
            max_dead_fraction,
            min_dead_owners,
        })
    }

    /// The fraction of owners seen that may look dead at once.
    pub fn max_dead_fraction(&self) -> f64 {
        self.max_dead_fraction
    }

    /// The number of dead-looking owners below which the fraction does not apply.
    pub fn min_dead_owners(&self) -> usize {
        self.min_dead_owners
    }

    /// Whether `dead` dead-looking owners out of `seen` owners engage the brake.
    pub fn engages(&self, dead: usize, seen: usize) -> bool {
        dead > 0
            && dead >= self.min_dead_owners
            && (dead as f64) > self.max_dead_fraction * (seen.max(dead) as f64)
    }
}

/// Why a sweep stopped instead of reclaiming.
#[derive(Debug, Clone, PartialEq)]
pub enum Brake {
    /// The view says this instance may be judged dead by its peers: it must not take
    /// anything from others (it may be the one that is cut off).
    SelfAtRisk,
    /// Too many owners look dead at once.
    TooManyDead {
        /// Owners that look dead.
        dead_owners: usize,
        /// Owners seen (live instances plus owners named by records).
        owners_seen: usize,
        /// The configured fraction.
        max_dead_fraction: f64,
    },
}

impl Brake {
    /// A short label for metrics (`self_at_risk`, `too_many_dead`).
    pub fn label(&self) -> &'static str {
        match self {
            Self::SelfAtRisk => "self_at_risk",
            Self::TooManyDead { .. } => "too_many_dead",
        }
    }
}

impl std::fmt::Display for Brake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SelfAtRisk => f.write_str(
                "this instance is at risk of being judged dead; it takes nothing over until it publishes again",
            ),
            Self::TooManyDead {
                dead_owners,
                owners_seen,
                max_dead_fraction,
            } => write!(
                f,
                "{dead_owners} of {owners_seen} owners look dead at once (more than {:.0}%); \
                 this instance may be the one cut off, so it reclaims nothing. Check the store \
                 and the network; the brake releases when fewer owners look dead",
                max_dead_fraction * 100.0
            ),
        }
    }
}
