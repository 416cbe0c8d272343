//! Backends with names: a [`Fleet`].

use std::ops::Index;

use http::Uri;

use crate::backend::ScriptedBackend;
use crate::journal::Journal;
use crate::script::Script;

/// Scripted backends with names, recording into one [`Journal`], so that a test can ask
/// which of them saw what, in which order.
#[derive(Debug, Clone)]
pub struct Fleet {
    backends: Vec<ScriptedBackend>,
    journal: Journal,
}

impl Fleet {
    /// Backends in process, one per `(name, script)`.
    pub fn new<N: AsRef<str>, S: Into<Script>>(scripts: impl IntoIterator<Item = (N, S)>) -> Self {
        let journal = Journal::new();
        let backends = scripts
            .into_iter()
            .map(|(name, script)| {
                ScriptedBackend::builder(name.as_ref(), script)
                    .journal(journal.clone())
                    .build()
            })
            .collect();
        Self { backends, journal }
    }

    /// Backends on ports of 127.0.0.1, one per `(name, script)`.
    ///
    /// # Panics
    ///
    /// If ports cannot be bound.
    pub async fn bind<N: AsRef<str>, S: Into<Script>>(
        scripts: impl IntoIterator<Item = (N, S)>,
    ) -> Self {
        let journal = Journal::new();
        let mut backends = Vec::new();
        for (name, script) in scripts {
            let backend = ScriptedBackend::builder(name.as_ref(), script)
                .journal(journal.clone())
                .bind()
                .await;
            backends.push(backend);
        }
        Self { backends, journal }
    }

    /// A fleet of backends built elsewhere (with [`ScriptedBackend::builder`], sharing
    /// `journal`).
    pub fn from_backends(backends: Vec<ScriptedBackend>, journal: Journal) -> Self {
        Self { backends, journal }
    }

    /// The backend called `name`.
    ///
    /// # Panics
    ///
    /// If there is none.
    pub fn get(&self, name: &str) -> &ScriptedBackend {
        self.backends
            .iter()
            .find(|b| b.name() == name)
            .unwrap_or_else(|| panic!("no backend {name} in the fleet: {:?}", self.names()))
    }

    /// The backends, in order.
    pub fn backends(&self) -> &[ScriptedBackend] {
        &self.backends
    }

    /// Their names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.backends.iter().map(ScriptedBackend::name).collect()
    }

    /// Their names and loopback URLs, in order.
    ///
    /// # Panics
    ///
    /// If they serve in process only.
    pub fn urls(&self) -> Vec<(&str, Uri)> {
        self.backends.iter().map(|b| (b.name(), b.url())).collect()
    }

    /// One entry per backend, in order, built from its name and loopback URL: a proxy's
    /// backend list, say (`fleet.entries(switchyard::Backend::new)`).
    ///
    /// # Panics
    ///
    /// If they serve in process only.
    pub fn entries<'a, T>(&'a self, mut entry: impl FnMut(&'a str, Uri) -> T) -> Vec<T> {
        self.backends
            .iter()
            .map(|b| entry(b.name(), b.url()))
            .collect()
    }

    /// The journal they share.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// How many requests each received (health checks aside), in order.
    pub fn counts(&self) -> Vec<(&str, usize)> {
        self.backends
            .iter()
            .map(|b| (b.name(), b.request_count()))
            .collect()
    }

    /// The share of the fleet's requests (health checks aside) that `name` received,
    /// from 0 to 1 (0 when there were none).
    pub fn share(&self, name: &str) -> f64 {
        let all = self.journal.requests();
        if all.is_empty() {
            return 0.0;
        }
        let mine = all.iter().filter(|s| &*s.backend == name).count();
        mine as f64 / all.len() as f64
    }

    /// Asserts how many requests each backend received (health checks aside); the
    /// message lists them all.
    #[track_caller]
    pub fn assert_counts(&self, expected: &[(&str, usize)]) {
        let got = self.counts();
        assert!(
            got == expected,
            "the fleet received {got:?}, expected {expected:?}:\n{}",
            self.journal.describe()
        );
    }
}

impl Index<&str> for Fleet {
    type Output = ScriptedBackend;

    fn index(&self, name: &str) -> &ScriptedBackend {
        self.get(name)
    }
}
