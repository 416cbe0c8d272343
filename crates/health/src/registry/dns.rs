//! Re-resolving the names of backends given by host name.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Endpoints, Ep, Inner};
use crate::resolve::{Resolved, Resolver};
use crate::status::HealthEvent;
impl<E: Endpoints> Inner<E> {
    /// Counts a failed resolution.
    pub(super) fn resolve_failed(&self) {
        self.resolve_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Applies a resolution of backend `id`; returns the delay before the next one, or
    /// `None` when the backend is gone.
    fn resolved(
        &self,
        id: &str,
        generation: u64,
        outcome: io::Result<Resolved>,
    ) -> Option<Duration> {
        let mut state = self.lock();
        let member = state
            .members
            .iter_mut()
            .find(|m| m.spec.id == id && m.generation == generation)?;
        member.resolved = true;
        let delay = match outcome {
            Ok(Resolved { addrs, ttl }) if !addrs.is_empty() => {
                member.dns_error = None;
                let before: Vec<SocketAddr> = member.endpoints.iter().map(|ep| ep.addr).collect();
                let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut member.endpoints)
                    .into_iter()
                    .partition(|ep| !addrs.contains(&ep.addr));
                member.endpoints = kept;
                for ep in gone {
                    if ep.routed {
                        self.withdraw(member, ep.addr);
                    }
                    self.factory.retire(&member.spec, &ep.service);
                }
                for addr in addrs {
                    // Kept endpoints, and addresses listed twice, are there already.
                    if member.endpoints.iter().any(|ep| ep.addr == addr) {
                        continue;
                    }
                    match self.factory.make(&member.spec, addr) {
                        Ok(service) => member.endpoints.push(Ep::new(addr, service)),
                        Err(e) => {
                            tracing::warn!(%id, %addr, error = %e, "cannot use a resolved address")
                        }
                    }
                }
                let now: Vec<SocketAddr> = member.endpoints.iter().map(|ep| ep.addr).collect();
                if now != before {
                    tracing::info!(%id, addrs = ?now, "backend resolved");
                    let _ = self.events.send(HealthEvent::Resolved {
                        backend: id.to_owned(),
                        addrs: now,
                    });
                }
                self.config().dns_delay(ttl)
            }
            failed => {
                let error = match failed {
                    Ok(_) => format!("`{id}`: the name resolved to no address"),
                    Err(e) => format!(
                        "resolving `{}`: {e}",
                        member.name.as_ref().map_or("", |n| n.0.as_str())
                    ),
                };
                tracing::warn!(%id, %error, kept = member.endpoints.len(), "resolution failed; keeping the last addresses");
                self.factory.resolve_failed(&member.spec, &error);
                self.resolve_failed();
                member.dns_error = Some(error.clone());
                let _ = self.events.send(HealthEvent::ResolveFailed {
                    backend: id.to_owned(),
                    error,
                });
                self.config().dns_min_ttl
            }
        };
        self.reconcile(&mut state);
        Some(delay)
    }
}

/// Resolves one backend incarnation's name, again and again, with `resolver` or else the
/// registry's (at once again when the registry's changes).
pub(super) async fn resolve_loop<E: Endpoints>(
    registry: Weak<Inner<E>>,
    id: Arc<str>,
    generation: u64,
    host: String,
    port: u16,
    resolver: Option<Arc<dyn Resolver>>,
) {
    loop {
        let Some(inner) = registry.upgrade() else {
            return;
        };
        let mut changes = inner.resolvers.subscribe();
        let names = changes.borrow_and_update().names.clone();
        let lookup = (resolver.as_ref().unwrap_or(&names)).resolve(host.clone(), port);
        let bound = inner.config().timeout.max(Duration::from_secs(5));
        let outcome = tokio::time::timeout(bound, lookup)
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")));
        let Some(delay) = inner.resolved(&id, generation, outcome) else {
            return;
        };
        drop(inner);
        let own = resolver.is_some();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            Ok(()) = changes.changed(), if !own => {}
        }
    }
}
