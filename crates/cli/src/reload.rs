//! Reloading the configuration file while the proxy runs (SIGHUP, `POST /config/reload`):
//! the backends that changed in the file since it was last loaded are added, removed or
//! updated in place ([`switchyard_admin::apply_backends`]), the `[proxy]` settings
//! apply to new requests ([`Proxy::reconfigure`]), a new `listen` address is bound and a
//! new access log format written ([`Listen::apply`]).

use switchyard::Proxy;
pub use switchyard_admin::Reloaded;
use switchyard_server::{AccessLog, ServerConfig};

use crate::FileConfig;

/// Applies to `proxy` what changed from `old` to `new`: the backends (see
/// [`switchyard_admin::apply_backends`]) and the `[proxy]` settings (see
/// [`Proxy::reconfigure`]), and lists in [`Reloaded::need_restart`] the settings read only
/// at start that changed: `listen` and `server` (which [`Listen::apply`] moves),
/// `access_log` (which [`Listen::apply`] puts in force), `admin`, and those of `[proxy]`
/// that `reconfigure` keeps. In `new` those are put back as in force, so that
/// `GET /config` shows them as they are, and the next reload reports them again.
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
    if old.access_log != new.access_log {
        done.need_restart.push("access_log");
        new.access_log = old.access_log.clone();
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

/// What a reload hands the server loop: a listener bound on a new `listen` address, new
/// `[server]` settings, or both. The loop starts a server with them (on the same socket
/// when only the settings changed) and stops the previous one accepting (see
/// `switchyard_server::serve_until_replaced`).
#[derive(Debug, Default)]
pub struct Moved {
    /// Bound on the new `listen` address, non-blocking.
    pub listener: Option<std::net::TcpListener>,
    /// The new `[server]` settings.
    pub server: Option<ServerConfig>,
}

/// Moves the proxy's server when a reload changes `listen` or `[server]`: a new address is
/// bound at once, and the new listener and settings handed to whoever serves. A new
/// `[access_log]` applies to the servers' access log.
#[derive(Debug, Clone)]
pub struct Listen {
    moves: tokio::sync::mpsc::UnboundedSender<Moved>,
    access_log: AccessLog,
}

impl Listen {
    /// A mover, and what it hands over, for the server loop; the servers write
    /// `access_log`.
    pub fn new(access_log: AccessLog) -> (Self, tokio::sync::mpsc::UnboundedReceiver<Moved>) {
        let (moves, bound) = tokio::sync::mpsc::unbounded_channel();
        (Self { moves, access_log }, bound)
    }

    /// [`apply`], a changed `[access_log]` put in force for the requests that start from
    /// now on, and a changed `listen` bound and a changed `[server]` handed over: listed
    /// as applied. An address that cannot be bound is logged, the proxy keeps listening
    /// where it did, and `listen` is listed as needing a restart.
    pub fn apply(&self, proxy: &Proxy, old: &FileConfig, new: &mut FileConfig) -> Reloaded {
        let (listen, server) = (new.listen, new.server.clone());
        let access_log = new.access_log.clone();
        let mut done = apply(proxy, old, new);
        if old.access_log != access_log {
            self.access_log.set_format(access_log.format);
            done.need_restart.retain(|s| *s != "access_log");
            done.applied.insert(0, "access_log");
            new.access_log = access_log;
        }
        let mut moved = Moved::default();
        if old.listen != listen {
            let bound = std::net::TcpListener::bind(listen).and_then(|listener| {
                listener.set_nonblocking(true)?;
                Ok(listener)
            });
            match bound {
                Ok(listener) => moved.listener = Some(listener),
                Err(e) => tracing::error!(%listen, error = %e, "cannot listen"),
            }
        }
        if old.server != server {
            moved.server = Some(server.clone());
        }
        let (rebound, reserved) = (moved.listener.is_some(), moved.server.is_some());
        if !(rebound || reserved) {
            return done;
        }
        if self.moves.send(moved).is_err() {
            tracing::error!("nothing serves the reloaded listener");
            return done;
        }
        if rebound {
            done.need_restart.retain(|s| *s != "listen");
            done.applied.insert(0, "listen");
            new.listen = listen;
        }
        if reserved {
            done.need_restart.retain(|s| *s != "server");
            done.applied.insert(usize::from(rebound), "server");
            new.server = server;
        }
        done
    }
}
