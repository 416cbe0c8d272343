//! Backends discovered from DNS SRV records: a `dns+srv://NAME` backend stands for the
//! targets its records name, each a backend of its own, kept in line with the records
//! through the same operations as the admin API's (add, reweight, drain).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::Uri;

use super::{Endpoints, Inner, Member, Registry};
use crate::hickory::HickoryResolver;
use crate::resolve::{Resolver, SrvResolved, SrvTarget, SystemResolver};
use crate::status::{AdminState, Health, HealthEvent};
use crate::{BackendSpec, HealthConfig};

/// The scheme of a backend given by SRV name.
const SCHEME: &str = "dns+srv";

/// The SRV name of a `dns+srv://NAME` URL.
pub(super) fn name(url: &Uri) -> Option<String> {
    (url.scheme_str() == Some(SCHEME))
        .then(|| url.host().map(str::to_owned))
        .flatten()
        .filter(|host| !host.is_empty())
}

/// What a `dns+srv://NAME?dns_server=ADDR:PORT&min_ttl=5s&max_ttl=300s` URL says besides
/// the name: the name server that resolves the name and its targets' names, and bounds on
/// the time between resolutions, each in place of the registry's `dns_server`,
/// `dns_min_ttl` and `dns_max_ttl` for this one name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SrvSettings {
    /// The name server to ask instead of [`HealthConfig::dns_server`].
    pub dns_server: Option<SocketAddr>,
    /// The shortest time between resolutions, instead of [`HealthConfig::dns_min_ttl`].
    pub min_ttl: Option<Duration>,
    /// The longest time between resolutions, instead of [`HealthConfig::dns_max_ttl`].
    pub max_ttl: Option<Duration>,
}

/// Why the query of a `dns+srv://` URL does not say [`SrvSettings`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SrvSettingsError {
    /// A value that does not parse.
    Value {
        /// The query's `key=value`.
        pair: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A key other than `dns_server`, `min_ttl` and `max_ttl`.
    UnknownKey(String),
    /// `min_ttl` longer than `max_ttl`.
    MinOverMax {
        /// The `min_ttl` given.
        min: Duration,
        /// The `max_ttl` given.
        max: Duration,
    },
}

impl fmt::Display for SrvSettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value { pair, reason } => write!(f, "`{pair}`: {reason}"),
            Self::UnknownKey(key) => write!(
                f,
                "unknown setting `{key}`: use dns_server, min_ttl or max_ttl"
            ),
            Self::MinOverMax { min, max } => {
                write!(f, "min_ttl ({min:?}) is longer than max_ttl ({max:?})")
            }
        }
    }
}

impl std::error::Error for SrvSettingsError {}

impl SrvSettings {
    /// The settings in `url`'s query (none when it has no query); an unknown key or a
    /// value that does not parse is an error saying which.
    pub fn from_url(url: &Uri) -> Result<Self, SrvSettingsError> {
        let mut settings = Self::default();
        let pairs = url.query().unwrap_or_default().split('&');
        for pair in pairs.filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let bad = |e: &dyn fmt::Display| SrvSettingsError::Value {
                pair: format!("{key}={value}"),
                reason: e.to_string(),
            };
            let ttl = || humantime::parse_duration(value).map_err(|e| bad(&e));
            match key {
                "dns_server" => settings.dns_server = Some(value.parse().map_err(|e| bad(&e))?),
                "min_ttl" => settings.min_ttl = Some(ttl()?),
                "max_ttl" => settings.max_ttl = Some(ttl()?),
                _ => return Err(SrvSettingsError::UnknownKey(key.to_owned())),
            }
        }
        if let (Some(min), Some(max)) = (settings.min_ttl, settings.max_ttl) {
            if min > max {
                return Err(SrvSettingsError::MinOverMax { min, max });
            }
        }
        Ok(settings)
    }

    /// The URL query that says these settings (`dns_server=…&min_ttl=…`), empty when
    /// there are none.
    pub fn query(&self) -> String {
        let ttl = |d: Duration| humantime::format_duration(d).to_string().replace(' ', "");
        let pairs = [
            self.dns_server.map(|a| format!("dns_server={a}")),
            self.min_ttl.map(|d| format!("min_ttl={}", ttl(d))),
            self.max_ttl.map(|d| format!("max_ttl={}", ttl(d))),
        ];
        pairs.into_iter().flatten().collect::<Vec<_>>().join("&")
    }

    /// The time until the next resolution after one that gave `ttl`.
    fn delay(&self, config: &HealthConfig, ttl: Option<Duration>) -> Duration {
        let min = self.min_ttl.unwrap_or(config.dns_min_ttl);
        let max = self.max_ttl.unwrap_or(config.dns_max_ttl);
        ttl.unwrap_or(config.dns_refresh).clamp(min, max.max(min))
    }

    /// The resolver these settings name, if they name a name server.
    pub(super) fn resolver(&self) -> Option<Arc<dyn Resolver>> {
        let server = self.dns_server?;
        Some(Arc::new(HickoryResolver::with_server(server)))
    }
}

/// Where a target backend comes from: its `dns+srv://` backend, its record's priority,
/// and the resolver of its `dns_server`, if it names one.
#[derive(Clone)]
pub(super) struct Origin {
    parent: Arc<str>,
    priority: u16,
    pub(super) resolver: Option<Arc<dyn Resolver>>,
}

/// The priority groups of a `dns+srv://` backend that take traffic: the preferred one,
/// and those of a lower priority value whose targets are healthy but not available (their
/// circuit breakers are open): they stay in the balancer's set, where requests skip them
/// and their breakers' probes find out when they are back.
#[derive(Debug)]
pub(super) struct Group {
    parent: Arc<str>,
    priority: u16,
    standby: Vec<u16>,
}

impl Origin {
    pub(super) fn is_in(&self, group: &Group) -> bool {
        self.parent == group.parent
            && (self.priority == group.priority || group.standby.contains(&self.priority))
    }

    /// Whether it comes from backend `id`.
    pub(super) fn is_of(&self, id: &str) -> bool {
        &*self.parent == id
    }
}

/// One `dns+srv://` backend's priorities, as [`preferred`] sorts them.
struct Priorities {
    parent: Arc<str>,
    /// Those with a target that has an endpoint not unhealthy.
    healthy: Vec<u16>,
    /// Those with such a target that is also available.
    up: Vec<u16>,
    lowest: u16,
}

/// For each `dns+srv://` backend, the group that takes traffic: the lowest priority with
/// an enabled target that has an endpoint not unhealthy and is `available` (its circuit
/// breaker closed); when none is available, the lowest with a target not unhealthy; when
/// none is, the lowest priority of its enabled targets (panic mode may then route to
/// them). Healthy groups of a lower priority value stay routed (see [`Group`]).
pub(super) fn preferred<S>(
    members: &[Member<S>],
    available: impl Fn(&BackendSpec) -> bool,
) -> Vec<Group> {
    let mut all: Vec<Priorities> = Vec::new();
    for member in members.iter().filter(|m| m.admin == AdminState::Enabled) {
        let Some(origin) = &member.origin else {
            continue;
        };
        let index = match all.iter().position(|p| p.parent == origin.parent) {
            Some(i) => i,
            None => {
                all.push(Priorities {
                    parent: origin.parent.clone(),
                    healthy: Vec::new(),
                    up: Vec::new(),
                    lowest: origin.priority,
                });
                all.len() - 1
            }
        };
        let group = &mut all[index];
        group.lowest = group.lowest.min(origin.priority);
        if (member.endpoints.iter()).any(|ep| ep.health != Health::Unhealthy) {
            group.healthy.push(origin.priority);
            if available(&member.spec) {
                group.up.push(origin.priority);
            }
        }
    }
    (all.into_iter())
        .map(|p| {
            let best = |set: &[u16]| set.iter().min().copied();
            let priority = best(&p.up).or(best(&p.healthy)).unwrap_or(p.lowest);
            let mut standby: Vec<u16> = p.healthy.into_iter().filter(|&h| h < priority).collect();
            standby.sort_unstable();
            standby.dedup();
            Group {
                parent: p.parent,
                priority,
                standby,
            }
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
        lookup: &Lookup,
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
                    return Some(lookup.settings.delay(&inner.config(), Some(Duration::ZERO)));
                }
            };
            parent.dns_error = None;
            let parent_spec = parent.spec.clone();
            let targets = &resolved.targets;
            let plan = plan(
                inner,
                &mut state.members,
                &parent_spec,
                targets,
                &lookup.resolver,
            );
            (plan, lookup.settings.delay(&inner.config(), resolved.ttl))
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
    resolver: &Option<Arc<dyn Resolver>>,
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
            resolver: resolver.clone(),
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

/// How one `dns+srv://` backend is resolved: its settings, and the resolver of their
/// name server (which resolves its targets' names too), if they name one.
pub(super) struct Lookup {
    pub(super) settings: SrvSettings,
    pub(super) resolver: Option<Arc<dyn Resolver>>,
}

/// Resolves one `dns+srv://` backend incarnation's name, again and again (at once again
/// when the registry's name server changes, unless the URL names its own).
pub(super) async fn srv_loop<E: Endpoints>(
    registry: Weak<Inner<E>>,
    id: Arc<str>,
    generation: u64,
    name: String,
    lookup: Lookup,
) {
    loop {
        let Some(inner) = registry.upgrade() else {
            return;
        };
        let mut changes = inner.resolvers.subscribe();
        let resolver = match &lookup.resolver {
            Some(own) => own.clone(),
            None => (changes.borrow_and_update().srv)
                .get_or_init(system_srv)
                .clone(),
        };
        let bound = inner.config().timeout.max(Duration::from_secs(5));
        let outcome = tokio::time::timeout(bound, resolver.resolve_srv(name.clone()))
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")));
        let registry_now = Registry { inner };
        let Some(delay) = registry_now.srv_resolved(&id, generation, outcome, &lookup) else {
            return;
        };
        drop(registry_now);
        let own = lookup.resolver.is_some();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            Ok(()) = changes.changed(), if !own => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_from_the_query_and_go_back_into_it() {
        let url: Uri = "dns+srv://_http._tcp.web?dns_server=127.0.0.1:8600&min_ttl=5s&max_ttl=5m"
            .parse()
            .unwrap();
        assert_eq!(name(&url).as_deref(), Some("_http._tcp.web"));
        let settings = SrvSettings::from_url(&url).unwrap();
        assert_eq!(
            settings,
            SrvSettings {
                dns_server: Some("127.0.0.1:8600".parse().unwrap()),
                min_ttl: Some(Duration::from_secs(5)),
                max_ttl: Some(Duration::from_secs(300)),
            }
        );
        assert_eq!(
            settings.query(),
            "dns_server=127.0.0.1:8600&min_ttl=5s&max_ttl=5m"
        );
        let config = HealthConfig::default();
        assert_eq!(
            settings.delay(&config, Some(Duration::from_secs(1))),
            Duration::from_secs(5)
        );
        assert_eq!(
            settings.delay(&config, Some(Duration::from_secs(900))),
            Duration::from_secs(300)
        );
        let plain: Uri = "dns+srv://_http._tcp.web".parse().unwrap();
        assert_eq!(SrvSettings::from_url(&plain), Ok(SrvSettings::default()));
        for bad in [
            "?ttl=1s",
            "?min_ttl=soon",
            "?dns_server=x",
            "?min_ttl=2s&max_ttl=1s",
        ] {
            let url: Uri = format!("dns+srv://web{bad}").parse().unwrap();
            assert!(SrvSettings::from_url(&url).is_err(), "{bad}");
        }
    }
}
