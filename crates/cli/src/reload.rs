//! Reloading the configuration file while the proxy runs (SIGHUP, `POST /config/reload`):
//! the backends that changed in the file since it was last loaded are added, removed or
//! updated in place ([`switchyard_admin::apply_backends`]), the `[proxy]` settings
//! apply to new requests ([`Proxy::reconfigure`]), and a new `listen` address is bound
//! ([`Listen::apply`]).

use switchyard::Proxy;
pub use switchyard_admin::Reloaded;

use crate::FileConfig;

/// Applies to `proxy` what changed from `old` to `new`: the backends (see
/// [`switchyard_admin::apply_backends`]) and the `[proxy]` settings (see
/// [`Proxy::reconfigure`]), and lists in [`Reloaded::need_restart`] the settings read only
/// at start that changed: `listen` (which [`Listen::apply`] moves), `admin`, `server` (but
/// for the certificate's contents, which reload on their own) and those of `[proxy]` that
/// `reconfigure` keeps. In `new` those are put back as in force, so that `GET /config`
/// shows them as they are, and the next reload reports them again.
pub fn apply(proxy: &Proxy, old: &FileConfig, new: &mut FileConfig) -> Reloaded {
    let mut done =
        switchyard_admin::apply_backends(proxy, &old.all_backends(), &new.all_backends());
    if old.listen != new.listen {
        done.need_restart.push("listen");
        new.listen = old.listen;
    }
    if old.admin != new.admin {
        done.need_restart.push("admin");
        new.admin = old.admin.clone();
    }
    if old.server != new.server {
        done.need_restart.push("server");
        new.server = old.server.clone();
    }
    match proxy.reconfigure(new.proxy.clone()) {
        Ok(proxied) => {
            done.applied = proxied.applied;
            done.need_restart.extend(proxied.need_restart);
        }
        Err(problems) => {
            let why = problems.iter().map(|p| p.to_string()).collect::<Vec<_>>();
            done.failed.push(("proxy".into(), why.join("; ")));
        }
    }
    done
}

/// Moves the proxy's listener when a reload changes `listen`: the new address is bound
/// at once and handed to whoever serves (see `switchyard_server::serve_until_replaced`).
#[derive(Debug, Clone)]
pub struct Listen {
    moves: tokio::sync::mpsc::UnboundedSender<std::net::TcpListener>,
}

impl Listen {
    /// A mover, and the listeners it binds, for the server loop.
    pub fn new() -> (
        Self,
        tokio::sync::mpsc::UnboundedReceiver<std::net::TcpListener>,
    ) {
        let (moves, bound) = tokio::sync::mpsc::unbounded_channel();
        (Self { moves }, bound)
    }

    /// [`apply`], and a changed `listen` bound and handed over: listed as applied. An
    /// address that cannot be bound is logged, the proxy keeps listening where it did,
    /// and `listen` is listed as needing a restart.
    pub fn apply(&self, proxy: &Proxy, old: &FileConfig, new: &mut FileConfig) -> Reloaded {
        let wanted = new.listen;
        let mut done = apply(proxy, old, new);
        if old.listen == wanted {
            return done;
        }
        let bound = std::net::TcpListener::bind(wanted).and_then(|listener| {
            listener.set_nonblocking(true)?;
            Ok(listener)
        });
        match bound.map(|listener| self.moves.send(listener)) {
            Ok(Ok(())) => {
                done.need_restart.retain(|s| *s != "listen");
                done.applied.insert(0, "listen");
                new.listen = wanted;
            }
            Ok(Err(_)) => tracing::error!(listen = %wanted, "nothing serves a new listener"),
            Err(e) => tracing::error!(listen = %wanted, error = %e, "cannot listen"),
        }
        done
    }
}
