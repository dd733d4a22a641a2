//! Wall clocks. Liveness never depends on them (observers judge by change, on their own
//! monotonic clock); they only stamp `lastSeenAt` and `startedAt` for humans and for the
//! .NET readers. Injectable so simulations can give each writer a skewed clock.

use std::fmt;

use chrono::{DateTime, Utc};

/// A source of wall-clock time.
pub trait WallClock: Send + Sync + fmt::Debug {
    /// The current wall-clock time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A wall clock that follows tokio's (possibly paused) time, shifted by a fixed offset.
/// With `tokio::time::pause()` it advances exactly as the simulation does; the offset
/// models a host whose clock is ahead (positive) or behind (negative).
#[derive(Debug, Clone)]
pub struct TokioClock {
    origin_wall: DateTime<Utc>,
    origin: tokio::time::Instant,
    offset: chrono::Duration,
}

impl TokioClock {
    /// A clock reading the system time now, then advancing with tokio time.
    pub fn new() -> Self {
        Self::with_offset(chrono::Duration::zero())
    }

    /// Like [`TokioClock::new`], shifted by `offset`.
    pub fn with_offset(offset: chrono::Duration) -> Self {
        Self {
            origin_wall: Utc::now(),
            origin: tokio::time::Instant::now(),
            offset,
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl WallClock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed =
            chrono::Duration::from_std(self.origin.elapsed()).unwrap_or(chrono::Duration::zero());
        self.origin_wall + elapsed + self.offset
    }
}
