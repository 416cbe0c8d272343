//! Backends discovered from DNS SRV records: a `dns+srv://NAME` backend stands for the
//! targets its records name, each a backend of its own, kept in line with the records
//! through the same operations as the admin API's (add, reweight, drain).

use std::io;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::Uri;

use super::{Endpoints, Inner, Member, Registry};
use crate::hickory::HickoryResolver;
use crate::resolve::{Resolver, SrvResolved, SrvTarget, SystemResolver};
use crate::status::{AdminState, Health, HealthEvent};
use crate::BackendSpec;

/// The scheme of a backend given by SRV name.
const SCHEME: &str = "dns+srv";

/// The SRV name of a `dns+srv://NAME` URL.
pub(super) fn name(url: &Uri) -> Option<String> {
    (url.scheme_str() == Some(SCHEME))
        .then(|| url.host().map(str::to_owned))
        .flatten()
        .filter(|host| !host.is_empty())
}

/// Where a target backend comes from: its `dns+srv://` backend, and its record's priority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Origin {
    parent: Arc<str>,
    priority: u16,
}

/// The priority group of a `dns+srv://` backend that takes traffic.
#[derive(Debug)]
pub(super) struct Group {
    parent: Arc<str>,
    priority: u16,
}

impl Origin {
    pub(super) fn is_in(&self, group: &Group) -> bool {
        self.parent == group.parent && self.priority == group.priority
    }

    /// Whether it comes from backend `id`.
    pub(super) fn is_of(&self, id: &str) -> bool {
        &*self.parent == id
    }
}

/// For each `dns+srv://` backend, the group that takes traffic: the lowest priority with
/// an enabled target that has an endpoint not unhealthy; when none has, the lowest
/// priority of its enabled targets (panic mode may then route to them).
pub(super) fn preferred<S>(members: &[Member<S>]) -> Vec<Group> {
    let mut groups: Vec<(Arc<str>, Option<u16>, u16)> = Vec::new();
    for member in members.iter().filter(|m| m.admin == AdminState::Enabled) {
        let Some(origin) = &member.origin else {
            continue;
        };
        let up = (member.endpoints.iter()).any(|ep| ep.health != Health::Unhealthy);
        let up = up.then_some(origin.priority);
        match groups.iter_mut().find(|(p, _, _)| *p == origin.parent) {
            Some((_, best_up, lowest)) => {
                if let Some(p) = up {
                    *best_up = Some(best_up.map_or(p, |b| b.min(p)));
                }
                *lowest = (*lowest).min(origin.priority);
            }
            None => groups.push((origin.parent.clone(), up, origin.priority)),
        }
    }
    (groups.into_iter())
        .map(|(parent, up, lowest)| Group {
            parent,
            priority: up.unwrap_or(lowest),
        })
        .collect()
}

/// The backend a record's target becomes.
fn target_spec(parent: &BackendSpec, t: &SrvTarget) -> Option<(BackendSpec, u16)> {
    let url: Uri = format!("http://{}:{}", t.target, t.port).parse().ok()?;
    let spec = BackendSpec {
        id: format!("{}/{}:{}", parent.id, t.target, t.port),
        url,
        // RFC 2782: weight 0 is for when there is no choice to make; it still serves.
        weight: u32::from(t.weight).max(1),
        http2: parent.http2,
    };
    Some((spec, t.priority))
}

/// What a resolution asks for once the registry's lock is released.
#[derive(Default)]
struct Plan {
    add: Vec<(BackendSpec, Origin)>,
    enable: Vec<String>,
    drain: Vec<String>,
}

impl<E: Endpoints> Registry<E> {
    /// Applies a resolution of `dns+srv://` backend `id`; returns the delay before the
    /// next one, or `None` when the backend is gone.
    fn srv_resolved(
        &self,
        id: &str,
        generation: u64,
        outcome: io::Result<SrvResolved>,
    ) -> Option<Duration> {
        let inner = &self.inner;
        let (plan, delay) = {
            let mut state = inner.lock();
            let parent = (state.members.iter_mut())
                .find(|m| m.spec.id == id && m.generation == generation)?;
            let resolved = match outcome {
                Ok(resolved) if !resolved.targets.is_empty() => resolved,
                failed => {
                    let error = match failed {
                        Ok(_) => format!("`{id}`: the SRV name has no record"),
                        Err(e) => format!("resolving `{}`: {e}", parent.spec.url),
                    };
                    tracing::warn!(%id, %error, "SRV resolution failed; keeping the last targets");
                    inner.resolve_failed();
                    parent.dns_error = Some(error.clone());
                    parent.resolved = true;
                    let _ = inner.events.send(HealthEvent::ResolveFailed {
                        backend: id.to_owned(),
                        error,
                    });
                    inner.reconcile(&mut state);
                    return Some(inner.config.dns_min_ttl);
                }
            };
            parent.dns_error = None;
            let parent_spec = parent.spec.clone();
            let plan = plan(inner, &mut state.members, &parent_spec, &resolved.targets);
            (plan, inner.config.dns_delay(resolved.ttl))
        };
        if !(plan.add.is_empty() && plan.drain.is_empty() && plan.enable.is_empty()) {
            let added: Vec<&str> = plan.add.iter().map(|(s, _)| s.id.as_str()).collect();
            tracing::info!(%id, ?added, removed = ?plan.drain, "SRV targets changed");
        }
        for (spec, origin) in plan.add {
            let child = spec.id.clone();
            if let Err(e) = self.add_member(spec, AdminState::Enabled, Some(origin)) {
                tracing::warn!(%id, %child, error = %e, "cannot add an SRV target");
            }
        }
        for child in plan.enable {
            let _ = self.enable(&child);
        }
        for child in plan.drain {
            let _ = self.drain(&child);
        }
        // The targets are in place: the backend counts as resolved from now on.
        let mut state = inner.lock();
        if let Some(parent) =
            (state.members.iter_mut()).find(|m| m.spec.id == id && m.generation == generation)
        {
            parent.resolved = true;
        }
        inner.reconcile(&mut state);
        Some(delay)
    }
}

/// Brings the targets of `parent` in line with `targets` where that needs no operation of
/// its own (weights, priorities), and says what does.
fn plan<E: Endpoints>(
    inner: &Inner<E>,
    members: &mut [Member<E::Service>],
    parent: &BackendSpec,
    targets: &[SrvTarget],
) -> Plan {
    let mut plan = Plan::default();
    let wanted: Vec<(BackendSpec, u16)> = targets
        .iter()
        .filter_map(|t| target_spec(parent, t))
        .collect();
    let parent_id: Arc<str> = parent.id.as_str().into();
    for (spec, priority) in &wanted {
        let origin = Origin {
            parent: parent_id.clone(),
            priority: *priority,
        };
        // A target listed twice is one backend.
        if plan.add.iter().any(|(s, _)| s.id == spec.id) {
            continue;
        }
        let Some(member) = members.iter_mut().find(|m| m.spec.id == spec.id) else {
            plan.add.push((spec.clone(), origin));
            continue;
        };
        if member.origin.as_ref().is_none_or(|o| o.parent != parent_id) {
            tracing::warn!(id = %spec.id, "an SRV target has the id of another backend; skipped");
            continue;
        }
        member.origin = Some(origin);
        if member.spec.weight != spec.weight {
            member.spec.weight = spec.weight;
            for ep in member.endpoints.iter().filter(|ep| ep.routed) {
                inner.insert(member, ep);
            }
        }
        if member.admin == AdminState::Draining {
            plan.enable.push(spec.id.clone());
        }
    }
    plan.drain = members
        .iter()
        .filter(|m| m.origin.as_ref().is_some_and(|o| o.parent == parent_id))
        .filter(|m| m.admin != AdminState::Draining)
        .filter(|m| !wanted.iter().any(|(s, _)| s.id == m.spec.id))
        .map(|m| m.spec.id.clone())
        .collect();
    plan
}

/// The resolver of SRV names when none was configured: the system's name servers.
fn system_srv() -> Arc<dyn Resolver> {
    match HickoryResolver::system() {
        Ok(resolver) => Arc::new(resolver),
        Err(e) => {
            tracing::warn!(error = %e, "no system name servers: SRV names cannot be resolved");
            Arc::new(SystemResolver)
        }
    }
}

/// Resolves one `dns+srv://` backend incarnation's name, again and again.
pub(super) async fn srv_loop<E: Endpoints>(
    registry: Weak<Inner<E>>,
    id: Arc<str>,
    generation: u64,
    name: String,
) {
    loop {
        let Some(inner) = registry.upgrade() else {
            return;
        };
        let resolver = inner.srv.get_or_init(system_srv).clone();
        let bound = inner.config.timeout.max(Duration::from_secs(5));
        let outcome = tokio::time::timeout(bound, resolver.resolve_srv(name.clone()))
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")));
        let registry_now = Registry { inner };
        let Some(delay) = registry_now.srv_resolved(&id, generation, outcome) else {
            return;
        };
        drop(registry_now);
        tokio::time::sleep(delay).await;
    }
}
