//! Request coalescing: the table of URLs being fetched, so that concurrent misses for one
//! URL make one upstream request.
//!
//! The leader holds a [`FlightGuard`]; followers hold a `watch::Receiver` whose sender
//! lives in the table. Dropping the guard (once the response is stored, or turned out not
//! to be storable, or was abandoned) removes the sender, which wakes every follower. The
//! table's locks are held for a map operation only, never across an `.await`, and only on
//! the miss path.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard, PoisonError};

use tokio::sync::watch;

use crate::tier::RemoteLock;

const SHARDS: usize = 16;

#[derive(Debug)]
pub(crate) struct Flights {
    shards: Box<[Shard]>,
    hasher: RandomState,
    next_id: AtomicU64,
}

// Held for one map operation on the miss path, never across an await, never on a hit.
#[allow(clippy::disallowed_types)]
type Lock<T> = std::sync::Mutex<T>;

type Shard = Lock<HashMap<Box<str>, Flight>>;

#[derive(Debug)]
struct Flight {
    id: u64,
    done: watch::Sender<()>,
}

/// A request's part in fetching a URL.
#[derive(Debug)]
pub(crate) enum Join {
    /// Nobody is fetching it: this request does, and holds the guard until it is done.
    Lead(FlightGuard),
    /// Another request is fetching it: wait on this (it resolves when that one is done).
    Follow(watch::Receiver<()>),
}

impl Flights {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Lock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            next_id: AtomicU64::new(0),
        }
    }

    /// The shard of `key`, locked. A panic while it was held cannot leave the map
    /// inconsistent (each operation is one insert or remove), so poisoning is ignored.
    fn lock(&self, key: &str) -> MutexGuard<'_, HashMap<Box<str>, Flight>> {
        self.shards[self.hasher.hash_one(key) as usize % SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Leads the fetch of `key`, or follows the request that already does.
    pub(crate) fn join(self: &Arc<Self>, key: &str) -> Join {
        let mut shard = self.lock(key);
        if let Some(flight) = shard.get(key) {
            return Join::Follow(flight.done.subscribe());
        }
        Join::Lead(self.lead_locked(&mut shard, key))
    }

    /// Follows the request fetching `key`, if one is.
    pub(crate) fn follow(&self, key: &str) -> Option<watch::Receiver<()>> {
        self.lock(key)
            .get(key)
            .map(|flight| flight.done.subscribe())
    }

    /// Leads the fetch of `key` if nobody does.
    pub(crate) fn lead(self: &Arc<Self>, key: &str) -> Option<FlightGuard> {
        let mut shard = self.lock(key);
        if shard.contains_key(key) {
            return None;
        }
        Some(self.lead_locked(&mut shard, key))
    }

    fn lead_locked(
        self: &Arc<Self>,
        shard: &mut HashMap<Box<str>, Flight>,
        key: &str,
    ) -> FlightGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (done, _) = watch::channel(());
        shard.insert(key.into(), Flight { id, done });
        FlightGuard {
            flights: self.clone(),
            key: key.into(),
            id,
            remote: None,
        }
    }
}

/// The leader's hold on a URL's fetch; dropping it wakes the followers (and releases
/// the fleet-wide lock it holds, if any).
#[derive(Debug)]
pub(crate) struct FlightGuard {
    flights: Arc<Flights>,
    key: Box<str>,
    id: u64,
    remote: Option<RemoteLock>,
}

impl FlightGuard {
    /// Holds `lock` (the fleet's claim on the URL) as long as this guard.
    pub(crate) fn hold(&mut self, lock: RemoteLock) {
        self.remote = Some(lock);
    }

    /// The fleet-wide lock, to release with the write of the response.
    pub(crate) fn take_remote(&mut self) -> Option<RemoteLock> {
        self.remote.take()
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let flight = {
            let mut shard = self.flights.lock(&self.key);
            match shard.get(&*self.key) {
                Some(f) if f.id == self.id => shard.remove(&*self.key),
                _ => None,
            }
        };
        // The sender drops here, outside the lock: every follower wakes.
        drop(flight);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_wake_when_the_leader_is_done() {
        let flights = Arc::new(Flights::new());
        let Join::Lead(guard) = flights.join("k") else {
            panic!("first is the leader")
        };
        let Join::Follow(mut rx) = flights.join("k") else {
            panic!("second follows")
        };
        assert!(flights.lead("k").is_none());
        drop(guard);
        assert!(rx.changed().await.is_err(), "woken by the sender's drop");
        assert!(flights.lead("k").is_some(), "the slot is free again");
    }
}
