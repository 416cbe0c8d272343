//! Admin operations: adding, removing, reweighting, enabling and disabling backends.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::Uri;

use super::checks::check_loop;
use super::dns::resolve_loop;
use super::srv::{self, srv_loop, Lookup, Origin, SrvSettings};
use super::{Ep, Inner, Listed, Member, Registry, State};
use crate::error::{InvalidUrl, RegistryError};
use crate::status::{AdminState, HealthEvent};
use crate::tracked::InFlight;
use crate::BackendSpec;
use crate::Endpoints;
impl<E: Endpoints> Registry<E> {
    /// Adds a backend in state `admin` (specification `AddBackend`). A backend given by
    /// IP address is routable at once; one given by name once its name has resolved; one
    /// given as `dns+srv://NAME` stands for the targets of the name's SRV records (see the
    /// [crate docs](crate#dns-srv)).
    pub fn add(&self, spec: BackendSpec, admin: AdminState) -> Result<(), RegistryError> {
        self.add_member(spec, admin, None)
    }

    pub(super) fn add_member(
        &self,
        spec: BackendSpec,
        admin: AdminState,
        origin: Option<Origin>,
    ) -> Result<(), RegistryError> {
        let id = spec.id.clone();
        let invalid = |reason: String| RegistryError::Invalid {
            id: id.clone(),
            reason,
        };
        let srv_name = srv::name(&spec.url);
        let (host, port) = match &srv_name {
            Some(name) => (name.clone(), 0),
            None => host_port(&spec.url).map_err(|e| invalid(e.to_string()))?,
        };
        let lookup = match &srv_name {
            Some(_) => {
                let settings =
                    SrvSettings::from_url(&spec.url).map_err(|e| invalid(e.to_string()))?;
                let resolver = settings.resolver();
                Some(Lookup { settings, resolver })
            }
            None => None,
        };
        // A target of a `dns+srv://` backend asks its backend's name server.
        let resolver = origin.as_ref().and_then(|o| o.resolver.clone());
        let inner = &self.inner;
        let mut state = inner.lock();
        if state.members.iter().any(|m| m.spec.id == spec.id) {
            return Err(RegistryError::Duplicate(spec.id));
        }
        let generation = inner.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let mut member = Member {
            generation,
            admin,
            name: None,
            resolved: true,
            dns_error: None,
            inflight: Arc::default(),
            endpoints: Vec::new(),
            tasks: Vec::new(),
            origin,
            spec,
        };
        match host.parse::<IpAddr>() {
            _ if srv_name.is_some() => member.resolved = false,
            Ok(ip) => {
                let addr = SocketAddr::new(ip, port);
                let service = inner
                    .factory
                    .make(&member.spec, addr)
                    .map_err(|e| invalid(e.to_string()))?;
                member.endpoints.push(Ep::new(addr, service));
            }
            Err(_) => {
                member.name = Some((host, port));
                member.resolved = false;
            }
        }
        let id: Arc<str> = member.spec.id.as_str().into();
        let weak = Arc::downgrade(inner);
        if let Some((host, port)) = member.name.clone() {
            let task = tokio::spawn(resolve_loop(
                weak.clone(),
                id.clone(),
                generation,
                host,
                port,
                resolver,
            ));
            member.tasks.push(task.abort_handle());
        }
        if let (Some(name), Some(lookup)) = (srv_name.clone(), lookup) {
            let task = tokio::spawn(srv_loop(weak.clone(), id.clone(), generation, name, lookup));
            member.tasks.push(task.abort_handle());
        }
        // A `dns+srv://` backend has no endpoint of its own to check: its targets do. The
        // loop runs with checks off too, checking nothing until they are turned on.
        if srv_name.is_none() {
            // A random phase within the first interval spreads the checks of many
            // backends over the interval; each keeps its phase afterwards.
            let offset = inner.config().interval.mul_f64(1.0 - fastrand::f64());
            let configs = inner.config.subscribe();
            let task = tokio::spawn(check_loop(weak, id, generation, offset, configs));
            member.tasks.push(task.abort_handle());
        }
        tracing::info!(id = %member.spec.id, url = %member.spec.url, weight = member.spec.weight, admin = %admin, "backend added");
        state.members.push(member);
        inner.reconcile(&mut state);
        Ok(())
    }

    /// Removes a backend at once (specification `RemoveBackend`): it gets no new
    /// requests, requests in flight on it finish. See [`Registry::drain`] for a removal
    /// that waits for them.
    pub fn remove(&self, id: &str) -> Result<Listed, RegistryError> {
        self.inner.remove(id, None)
    }

    /// Sets a backend's weight; the balancer uses it for the next request.
    pub fn set_weight(&self, id: &str, weight: u32) -> Result<(), RegistryError> {
        let inner = &self.inner;
        let mut state = inner.lock();
        let member = find(&mut state, id)?;
        member.spec.weight = weight;
        for ep in member.endpoints.iter().filter(|ep| ep.routed) {
            inner.insert(member, ep);
        }
        tracing::info!(%id, weight, "backend weight changed");
        Ok(())
    }

    /// Lets a disabled or draining backend take traffic again.
    pub fn enable(&self, id: &str) -> Result<(), RegistryError> {
        self.inner.set_admin(id, AdminState::Enabled).map(drop)
    }

    /// Stops sending a backend requests; it stays listed and checked.
    pub fn disable(&self, id: &str) -> Result<(), RegistryError> {
        self.inner.set_admin(id, AdminState::Disabled).map(drop)
    }
}

impl<E: Endpoints> Inner<E> {
    pub(super) fn set_admin(
        &self,
        id: &str,
        admin: AdminState,
    ) -> Result<(Arc<InFlight>, u64), RegistryError> {
        let mut state = self.lock();
        let member = find(&mut state, id)?;
        let before = member.admin;
        member.admin = admin;
        let out = (member.inflight.clone(), member.generation);
        if before != admin {
            tracing::info!(%id, from = %before, to = %admin, "backend state changed");
        }
        self.reconcile(&mut state);
        Ok(out)
    }

    /// Removes backend `id`; with `generation`, only that incarnation and only if it is
    /// still draining.
    pub(super) fn remove(
        &self,
        id: &str,
        generation: Option<u64>,
    ) -> Result<Listed, RegistryError> {
        let mut state = self.lock();
        let pos = state
            .members
            .iter()
            .position(|m| {
                m.spec.id == id
                    && generation
                        .is_none_or(|g| m.generation == g && m.admin == AdminState::Draining)
            })
            .ok_or_else(|| RegistryError::NotFound(id.to_owned()))?;
        let member = state.members.remove(pos);
        for task in &member.tasks {
            task.abort();
        }
        for ep in &member.endpoints {
            if ep.routed {
                self.withdraw(&member, ep.addr);
            }
            self.factory.retire(&member.spec, &ep.service);
        }
        self.factory.removed(&member.spec);
        self.reconcile(&mut state);
        // The targets of a `dns+srv://` backend go with it.
        let targets: Vec<String> = (state.members.iter())
            .filter(|m| m.origin.as_ref().is_some_and(|o| o.is_of(id)))
            .map(|m| m.spec.id.clone())
            .collect();
        drop(state);
        for target in targets {
            let _ = self.remove(&target, None);
        }
        tracing::info!(%id, "backend removed");
        let _ = self.events.send(HealthEvent::Removed {
            backend: id.to_owned(),
        });
        Ok(Listed {
            addrs: member.endpoints.iter().map(|ep| ep.addr).collect(),
            admin: member.admin,
            spec: member.spec,
        })
    }
}

fn find<'a, S>(state: &'a mut State<S>, id: &str) -> Result<&'a mut Member<S>, RegistryError> {
    state
        .members
        .iter_mut()
        .find(|m| m.spec.id == id)
        .ok_or_else(|| RegistryError::NotFound(id.to_owned()))
}

/// The host and port of `url`, the port defaulting by scheme.
fn host_port(url: &Uri) -> Result<(String, u16), InvalidUrl> {
    let default_port = match url.scheme_str() {
        Some("http") | None => 80,
        Some("https") => 443,
        Some(other) => {
            return Err(InvalidUrl {
                url: url.clone(),
                scheme: Some(other.to_owned()),
            })
        }
    };
    let authority = url.authority().ok_or_else(|| no_host(url))?;
    let host = authority.host().trim_matches(['[', ']']).to_owned();
    if host.is_empty() {
        return Err(no_host(url));
    }
    Ok((host, authority.port_u16().unwrap_or(default_port)))
}

fn no_host(url: &Uri) -> InvalidUrl {
    InvalidUrl {
        url: url.clone(),
        scheme: None,
    }
}
