use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::broadcast;

use crate::{Breaker, BreakerConfig, CircuitBreakerLayer, State, Transition};

/// One breaker per backend id, with one channel of transitions for all of them.
///
/// Cheap to clone; clones share everything. Lookups read an `ArcSwap` snapshot; only
/// adding and removing a breaker writes.
#[derive(Clone)]
pub struct CircuitBreakers {
    inner: Arc<Inner>,
}

struct Inner {
    config: ArcSwap<BreakerConfig>,
    breakers: ArcSwap<HashMap<Arc<str>, Arc<Breaker>>>,
    events: broadcast::Sender<Transition>,
}

impl CircuitBreakers {
    /// An empty set whose breakers will use `config`.
    pub fn new(config: BreakerConfig) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            inner: Arc::new(Inner {
                config: ArcSwap::from_pointee(config),
                breakers: ArcSwap::default(),
                events,
            }),
        }
    }

    /// The breaker of `id`, made (closed) if it does not exist yet.
    pub fn breaker(&self, id: &str) -> Arc<Breaker> {
        if let Some(b) = self.get(id) {
            return b;
        }
        let fresh = Arc::new(Breaker::new(
            id,
            BreakerConfig::clone(&self.inner.config.load()),
            self.inner.events.clone(),
        ));
        let mut chosen = fresh.clone();
        self.inner.breakers.rcu(|map| {
            let mut map = HashMap::clone(map);
            chosen = map
                .entry(Arc::from(id))
                .or_insert_with(|| fresh.clone())
                .clone();
            map
        });
        chosen
    }

    /// The settings of the breakers made from now on.
    pub fn config(&self) -> Arc<BreakerConfig> {
        self.inner.config.load_full()
    }

    /// Replaces the settings of every breaker, keeping their states (see
    /// [`Breaker::set_config`]), and of those made from now on.
    pub fn set_config(&self, config: BreakerConfig) {
        self.inner.config.store(Arc::new(config.clone()));
        for breaker in self.inner.breakers.load().values() {
            breaker.set_config(config.clone());
        }
    }

    /// A layer bound to the breaker of `id`.
    pub fn layer(&self, id: &str) -> CircuitBreakerLayer {
        CircuitBreakerLayer::with_breaker(self.breaker(id))
    }

    /// Forgets the breaker of `id` (its backend is gone).
    pub fn remove(&self, id: &str) {
        self.inner.breakers.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.remove(id);
            map
        });
    }

    /// The breaker of `id`, if there is one.
    pub fn get(&self, id: &str) -> Option<Arc<Breaker>> {
        self.inner.breakers.load().get(id).cloned()
    }

    /// The state of `id`'s breaker (specification `GetState`).
    pub fn state(&self, id: &str) -> Option<State> {
        self.get(id).map(|b| b.state())
    }

    /// How many times `id`'s breaker has tripped.
    pub fn trips(&self, id: &str) -> Option<u64> {
        self.get(id).map(|b| b.trips())
    }

    /// Every breaker's state, sorted by id.
    pub fn states(&self) -> Vec<(String, State)> {
        let mut all: Vec<_> = self
            .inner
            .breakers
            .load()
            .iter()
            .map(|(id, b)| (id.to_string(), b.state()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Opens `id`'s breaker until forced closed; `false` if there is no such breaker.
    pub fn force_open(&self, id: &str) -> bool {
        self.get(id).map(|b| b.force_open()).is_some()
    }

    /// Closes `id`'s breaker; `false` if there is no such breaker.
    pub fn force_close(&self, id: &str) -> bool {
        self.get(id).map(|b| b.force_close()).is_some()
    }

    /// Every transition of every breaker from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.inner.events.subscribe()
    }
}

impl fmt::Debug for CircuitBreakers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakers")
            .field("states", &self.states())
            .finish()
    }
}
