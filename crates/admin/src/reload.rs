//! Applying a new list of backends to a running proxy, as when a configuration file is
//! read again: the backends that changed in the list are added, removed or updated in
//! place. Backends added or changed through the admin API since are left as they are,
//! unless the list changed the same backend. And applying new `[proxy]` settings.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;
use switchyard::{Backend, Proxy, ProxyConfig, Reconfigured};

/// What applying a new list of backends (and, for a configuration file, its other
/// settings) changed, and what it could not.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Reloaded {
    /// Ids of the backends added.
    pub added: Vec<String>,
    /// Ids of the backends removed.
    pub removed: Vec<String>,
    /// Ids of the backends whose URL, protocol, weight or state changed.
    pub updated: Vec<String>,
    /// Backends the new list changed that could not be changed, with why.
    pub failed: Vec<(String, String)>,
    /// Settings that changed and apply to new requests from now on (see
    /// [`Proxy::reconfigure`]). [`apply_backends`] leaves it empty; who reads a
    /// configuration file fills it.
    pub applied: Vec<&'static str>,
    /// Parts of the configuration that changed but are read only at start: applied after a
    /// restart. [`apply_backends`] leaves it empty; who reads a configuration file fills it.
    pub need_restart: Vec<&'static str>,
}

impl Reloaded {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl fmt::Display for Reloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("nothing changed");
        }
        let mut parts = Vec::new();
        for (what, ids) in [
            ("added", &self.added),
            ("removed", &self.removed),
            ("updated", &self.updated),
        ] {
            if !ids.is_empty() {
                parts.push(format!("{what} {}", ids.join(", ")));
            }
        }
        for (id, why) in &self.failed {
            parts.push(format!("backend {id} not changed: {why}"));
        }
        // Settings applied and those awaiting a restart read as the proxy reports them.
        let settings = Reconfigured {
            applied: self.applied.clone(),
            need_restart: self.need_restart.clone(),
        };
        if settings != Reconfigured::default() {
            parts.push(settings.to_string());
        }
        f.write_str(&parts.join("; "))
    }
}

/// Applies the `[proxy]` settings `config` to `proxy` (see [`Proxy::reconfigure`]), and
/// lists in `done` those applied and those that take a restart, or why none applied.
pub fn apply_proxy(proxy: &Proxy, config: ProxyConfig, done: &mut Reloaded) {
    match proxy.reconfigure(config) {
        Ok(proxied) => {
            done.applied.extend(proxied.applied);
            done.need_restart.extend(proxied.need_restart);
        }
        Err(problems) => {
            let why = problems.iter().map(|p| p.to_string()).collect::<Vec<_>>();
            done.failed.push(("proxy".into(), why.join("; ")));
        }
    }
}

/// Applies to `proxy` what changed from the backends `old` to `new` (a configuration
/// file's, as loaded before and now). Backends are matched by id: one only in `new` is
/// added, one only in `old` is removed (requests in flight on it finish), and one whose URL
/// or protocol changed is replaced by a fresh one (new connections, new health). A change
/// of weight or of `active` is made in place. Backends added or changed through the admin
/// API in the meantime are left as they are, unless `new` changed the same backend: one
/// the admin API removed is added back only then.
pub fn apply_backends(proxy: &Proxy, old: &[Backend], new: &[Backend]) -> Reloaded {
    let mut done = Reloaded::default();
    let before: HashMap<&str, &Backend> = old.iter().map(|b| (b.id.as_str(), b)).collect();
    let after: HashMap<&str, &Backend> = new.iter().map(|b| (b.id.as_str(), b)).collect();
    for b in old {
        if !after.contains_key(b.id.as_str()) {
            match proxy.remove_backend(&b.id) {
                Ok(_) => done.removed.push(b.id.clone()),
                // Already removed through the admin API: the file agrees now.
                Err(switchyard::BackendError::NotFound(_)) => {}
                Err(e) => done.failed.push((b.id.clone(), e.to_string())),
            }
        }
    }
    for b in new {
        let result = match before.get(b.id.as_str()) {
            None => proxy.add_backend(b.clone()).map(|()| &mut done.added),
            Some(was) if *was == b => continue,
            Some(was) if was.url != b.url || was.protocol != b.protocol => {
                let _ = proxy.remove_backend(&b.id);
                proxy.add_backend(b.clone()).map(|()| &mut done.updated)
            }
            Some(was) => update_in_place(proxy, was, b).map(|()| &mut done.updated),
        };
        match result {
            Ok(list) => list.push(b.id.clone()),
            Err(e) => done.failed.push((b.id.clone(), e.to_string())),
        }
    }
    done
}

fn update_in_place(
    proxy: &Proxy,
    was: &Backend,
    now: &Backend,
) -> Result<(), switchyard::BackendError> {
    if was.weight != now.weight {
        proxy.set_weight(&now.id, now.weight)?;
    }
    match (was.active, now.active) {
        (false, true) => proxy.enable_backend(&now.id),
        (true, false) => proxy.disable_backend(&now.id),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard::{Protocol, ProxyConfig};

    fn backend(id: &str, url: &str, weight: u32, active: bool) -> Backend {
        Backend {
            weight,
            active,
            ..Backend::new(id, url.parse().unwrap())
        }
    }

    fn proxy_for(backends: &[Backend]) -> Proxy {
        let mut config = ProxyConfig::default();
        config.health.enabled = false;
        let proxy = Proxy::new(config);
        for b in backends {
            proxy.add_backend(b.clone()).unwrap();
        }
        proxy
    }

    fn listed(proxy: &Proxy) -> Vec<(String, String, u32, bool)> {
        let mut list: Vec<_> = proxy
            .list_backends()
            .into_iter()
            .map(|b| (b.id, b.url.to_string(), b.weight, b.active))
            .collect();
        list.sort();
        list
    }

    fn row(id: &str, url: &str, weight: u32, active: bool) -> (String, String, u32, bool) {
        (id.into(), url.into(), weight, active)
    }

    #[tokio::test]
    async fn backends_are_added_removed_and_updated_by_id() {
        let old = [
            backend("a", "http://127.0.0.1:1001", 1, true),
            backend("b", "http://127.0.0.1:1002", 1, true),
            backend("c", "http://127.0.0.1:1003", 1, true),
        ];
        let proxy = proxy_for(&old);
        let new = [
            backend("a", "http://127.0.0.1:1001", 3, false),
            backend("c", "http://127.0.0.1:2003", 1, true),
            backend("d", "http://127.0.0.1:1004", 2, true),
        ];
        let done = apply_backends(&proxy, &old, &new);
        assert_eq!(done.added, ["d"]);
        assert_eq!(done.removed, ["b"]);
        assert_eq!(done.updated, ["a", "c"]);
        assert!(
            done.failed.is_empty() && done.need_restart.is_empty(),
            "{done:?}"
        );
        assert_eq!(
            listed(&proxy),
            [
                row("a", "http://127.0.0.1:1001/", 3, false),
                row("c", "http://127.0.0.1:2003/", 1, true),
                row("d", "http://127.0.0.1:1004/", 2, true),
            ]
        );
        assert_eq!(
            apply_backends(&proxy, &new, &new).to_string(),
            "nothing changed"
        );
    }

    /// What the admin API changed stays, unless the new list changed the same backend; an id
    /// the admin API took first is reported, not overwritten.
    #[tokio::test]
    async fn admin_changes_the_file_did_not_touch_are_kept() {
        let old = [backend("a", "http://127.0.0.1:1001", 1, true)];
        let proxy = proxy_for(&old);
        proxy.set_weight("a", 5).unwrap();
        proxy
            .add_backend(backend("x", "http://127.0.0.1:1009", 1, true))
            .unwrap();

        let mut new = [
            backend("a", "http://127.0.0.1:1001", 1, true),
            backend("x", "http://127.0.0.1:2009", 1, true),
            backend("h2", "http://127.0.0.1:1010", 1, true),
        ];
        new[2].protocol = Protocol::Http2;
        let done = apply_backends(&proxy, &old, &new);
        assert_eq!(done.added, ["h2"]);
        assert_eq!(done.failed.len(), 1, "{done:?}");
        assert_eq!(done.failed[0].0, "x");
        assert!(done.to_string().contains("backend x not changed"), "{done}");
        let list = listed(&proxy);
        assert_eq!(list[0], row("a", "http://127.0.0.1:1001/", 5, true));
        assert_eq!(list[2], row("x", "http://127.0.0.1:1009/", 1, true));
    }
}
