use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Why connections were closed, counted since the pool was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClosedStats {
    /// Idle longer than the idle timeout, or spare (never needed) for that long.
    pub idle_timeout: u64,
    /// Closed by the backend (seen when idle, or when a request could not be sent on it).
    pub backend_closed: u64,
    /// Broken by an error, or abandoned with a response half read.
    pub error: u64,
    /// Dropped by the pool: more idle than `max_idle`, or the pool was closed.
    pub evicted: u64,
    /// Handed over to a protocol the backend switched to (`101 Switching Protocols`, as
    /// for a WebSocket): the connection left the pool and carries the tunnel.
    pub upgraded: u64,
}

/// A snapshot of one pool, read from atomics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Connections open now.
    pub open: u64,
    /// Open connections carrying no request.
    pub idle: u64,
    /// Requests being served now (HTTP/1.1: busy connections; HTTP/2: open streams).
    pub in_use: u64,
    /// Requests waiting for a connection.
    pub waiting: u64,
    /// Connections dialled.
    pub created: u64,
    /// Requests served on a connection taken from the idle set.
    pub reused: u64,
    /// Connections closed, by reason.
    pub closed: ClosedStats,
    /// Failed attempts to connect.
    pub connect_errors: u64,
    /// Requests that gave up waiting for a connection (`PoolTimeout`).
    pub wait_timeouts: u64,
}

/// Why a connection left the pool.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Closed {
    IdleTimeout,
    Backend,
    Error,
    Evicted,
    Upgraded,
}

switchyard_core::counters! {
    pub(crate) struct Counters {
        pub(crate) created,
        pub(crate) reused,
        pub(crate) waiting,
        pub(crate) in_use,
        pub(crate) connect_errors,
        pub(crate) wait_timeouts,
        closed_idle,
        closed_backend,
        closed_error,
        closed_evicted,
        closed_upgraded,
    }
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self, why: Closed) {
        let counter = match why {
            Closed::IdleTimeout => &self.closed_idle,
            Closed::Backend => &self.closed_backend,
            Closed::Error => &self.closed_error,
            Closed::Evicted => &self.closed_evicted,
            Closed::Upgraded => &self.closed_upgraded,
        };
        Self::bump(counter);
        tracing::trace!(?why, "connection closed");
    }

    pub(crate) fn snapshot(&self, idle: u64) -> PoolStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let closed = ClosedStats {
            idle_timeout: get(&self.closed_idle),
            backend_closed: get(&self.closed_backend),
            error: get(&self.closed_error),
            evicted: get(&self.closed_evicted),
            upgraded: get(&self.closed_upgraded),
        };
        let created = get(&self.created);
        let gone = closed.idle_timeout
            + closed.backend_closed
            + closed.error
            + closed.evicted
            + closed.upgraded;
        PoolStats {
            open: created.saturating_sub(gone),
            idle,
            in_use: get(&self.in_use),
            waiting: get(&self.waiting),
            created,
            reused: get(&self.reused),
            closed,
            connect_errors: get(&self.connect_errors),
            wait_timeouts: get(&self.wait_timeouts),
        }
    }
}

/// Adds another pool's counters, for totals over several pools (the addresses of one
/// backend, or every backend).
impl std::ops::AddAssign for PoolStats {
    fn add_assign(&mut self, b: Self) {
        self.open += b.open;
        self.idle += b.idle;
        self.in_use += b.in_use;
        self.waiting += b.waiting;
        self.created += b.created;
        self.reused += b.reused;
        self.closed.idle_timeout += b.closed.idle_timeout;
        self.closed.backend_closed += b.closed.backend_closed;
        self.closed.error += b.closed.error;
        self.closed.evicted += b.closed.evicted;
        self.closed.upgraded += b.closed.upgraded;
        self.connect_errors += b.connect_errors;
        self.wait_timeouts += b.wait_timeouts;
    }
}
