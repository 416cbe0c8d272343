//! Active health checks: who is checked, when, and what a result does to an endpoint.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{Endpoints, Inner, Registry, State};
use crate::check::CheckTarget;
use crate::error::CheckFailed;
use crate::status::{Health, HealthEvent, HealthReport};
use crate::HealthConfig;
/// The outcome of one check of one endpoint.
struct Checked {
    backend: Arc<str>,
    generation: u64,
    addr: SocketAddr,
    result: Result<(), CheckFailed>,
    elapsed: Duration,
}

impl<E: Endpoints> Registry<E> {
    /// Checks every endpoint now and returns when all checks are done (specification
    /// `HealthCheck()`); the periodic checks keep their schedule. With checks disabled
    /// nothing is checked.
    pub async fn check_now(&self) -> HealthReport {
        if self.inner.config().enabled {
            let targets = self.inner.targets(None);
            self.inner.run_checks(targets).await;
        }
        self.status()
    }
}

impl<E: Endpoints> Inner<E> {
    /// The endpoints to check: of one backend incarnation, or of all (`None`).
    fn targets(&self, only: Option<(&str, u64)>) -> Vec<(CheckTarget, u64)> {
        let state = self.lock();
        state
            .members
            .iter()
            .filter(|m| only.is_none_or(|(id, g)| m.spec.id == id && m.generation == g))
            .flat_map(|m| {
                let authority = m
                    .spec
                    .url
                    .authority()
                    .map(|a| a.as_str().to_owned())
                    .unwrap_or_default();
                m.endpoints.iter().map(move |ep| {
                    let target = CheckTarget {
                        backend: m.spec.id.clone(),
                        addr: ep.addr,
                        authority: authority.clone(),
                        path: self.config().path.clone(),
                        http2: m.spec.http2,
                        https: m.spec.url.scheme_str() == Some("https"),
                    };
                    (target, m.generation)
                })
            })
            .collect()
    }

    async fn run_checks(&self, targets: Vec<(CheckTarget, u64)>) {
        let checks = targets
            .into_iter()
            .map(|(target, generation)| self.check(target, generation));
        let results = futures::future::join_all(checks).await;
        let mut state = self.lock();
        let mut changed = false;
        for checked in results {
            changed |= self.apply(&mut state, checked);
        }
        if changed {
            self.reconcile(&mut state);
        }
    }

    async fn check(&self, target: CheckTarget, generation: u64) -> Checked {
        // The semaphore is never closed.
        let _permit = self.permits.acquire().await;
        let started = Instant::now();
        let backend: Arc<str> = target.backend.as_str().into();
        let addr = target.addr;
        let checked = tokio::time::timeout(self.config().timeout, self.checker.check(target)).await;
        let result = match checked {
            Ok(Ok(status)) if self.config().expected_status.contains(status) => Ok(()),
            Ok(Ok(status)) => Err(CheckFailed::Status(status)),
            Ok(Err(e)) => Err(CheckFailed::Check(e)),
            Err(_) => Err(CheckFailed::Timeout(self.config().timeout)),
        };
        Checked {
            backend,
            generation,
            addr,
            result,
            elapsed: started.elapsed(),
        }
    }

    /// Records one check; returns whether the endpoint's health changed.
    fn apply(&self, state: &mut State<E::Service>, checked: Checked) -> bool {
        let Some(member) = state
            .members
            .iter_mut()
            .find(|m| *m.spec.id == *checked.backend && m.generation == checked.generation)
        else {
            return false; // removed while it was being checked
        };
        let Some(ep) = member
            .endpoints
            .iter_mut()
            .find(|ep| ep.addr == checked.addr)
        else {
            return false;
        };
        let now = Instant::now();
        ep.checks += 1;
        ep.last_check = Some(now);
        ep.last_response_time = Some(checked.elapsed);
        let before = ep.health;
        match checked.result {
            Ok(()) => {
                ep.consecutive_successes += 1;
                ep.consecutive_failures = 0;
                ep.last_error = None;
                if before == Health::Unknown
                    || (before == Health::Unhealthy
                        && ep.consecutive_successes >= self.config().rise.max(1))
                {
                    ep.health = Health::Healthy;
                }
            }
            Err(e) => {
                ep.consecutive_failures += 1;
                ep.consecutive_successes = 0;
                if before != Health::Unhealthy
                    && ep.consecutive_failures >= self.config().fall.max(1)
                {
                    ep.health = Health::Unhealthy;
                }
                ep.last_error = Some(e.to_string());
            }
        }
        if ep.health == before {
            return false;
        }
        ep.last_transition = Some(now);
        if before == Health::Unhealthy {
            // Before the balancer routes to it again (`reconcile`, under the same lock).
            self.factory.recovered(&member.spec, ep.addr);
        }
        match ep.health {
            Health::Unhealthy => tracing::warn!(
                backend = %member.spec.id, addr = %ep.addr, error = ep.last_error.as_deref().unwrap_or(""),
                failures = ep.consecutive_failures, "endpoint unhealthy"
            ),
            _ => {
                tracing::info!(backend = %member.spec.id, addr = %ep.addr, from = %before, "endpoint healthy")
            }
        }
        let _ = self.events.send(HealthEvent::Transition {
            backend: member.spec.id.clone(),
            addr: ep.addr,
            from: before,
            to: ep.health,
        });
        true
    }
}

/// Checks one backend incarnation's endpoints every interval, from a random phase, while
/// checks are enabled. A new interval ([`Registry::reconfigure`]) applies at once: the
/// next round comes one new interval after the last.
pub(super) async fn check_loop<E: Endpoints>(
    registry: Weak<Inner<E>>,
    id: Arc<str>,
    generation: u64,
    offset: Duration,
    mut configs: watch::Receiver<Arc<HealthConfig>>,
) {
    let mut next = Instant::now() + offset;
    let mut last = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            changed = configs.changed() => {
                if changed.is_err() {
                    return; // the registry is gone
                }
                let interval = configs.borrow_and_update().interval;
                next = match last {
                    Some(last) => Instant::now().max(last + interval),
                    // No round yet: the first comes within one new interval.
                    None => next.min(Instant::now() + interval),
                };
                continue;
            }
        }
        let Some(inner) = registry.upgrade() else {
            return;
        };
        last = Some(next);
        if inner.config().enabled {
            let targets = inner.targets(Some((&id, generation)));
            inner.run_checks(targets).await;
        }
        let interval = inner.config().interval;
        next += interval;
        // A round that overran its interval does not make the next ones bunch up.
        let now = Instant::now();
        if next < now {
            next = now + interval;
        }
    }
}
