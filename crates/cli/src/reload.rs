//! Reloading the configuration file while the proxy runs (SIGHUP, `POST /config/reload`):
//! the backends that changed in the file since it was last loaded are added, removed or
//! updated in place ([`switchyard_admin::apply_backends`]), the `[proxy]` settings
//! apply to new requests ([`Proxy::reconfigure`]), a new `listen` or `admin.listen`
//! address is bound, a new admin token checked and a new access log format written
//! ([`Listen::apply`]).

use switchyard::Proxy;
pub use switchyard_admin::Reloaded;
use switchyard_admin::{AdminConfig, AdminToken};
use switchyard_server::{AccessLog, ServerConfig};

use crate::FileConfig;

/// Applies to `proxy` what changed from `old` to `new`: the backends (see
/// [`switchyard_admin::apply_backends`]) and the `[proxy]` settings (see
/// [`Proxy::reconfigure`]), and lists in [`Reloaded::need_restart`] the settings read only
/// at start that changed: `listen` and `server` (which [`Listen::apply`] moves),
/// and `access_log` and `admin` (which [`Listen::apply`] puts in force). In `new` those are
/// put back as in force, so that `GET /config` shows them as they are, and the next reload
/// reports them again.
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

/// A listener for the admin API on a new `admin.listen` address (or the API turned on):
/// `Some`, bound and non-blocking; `None`: the admin API turned off. Whoever serves the admin
/// API serves the new listener and stops the previous one accepting.
pub type AdminMoved = Option<std::net::TcpListener>;

/// What [`Listen`] hands over: to the server loop, and to the admin API's.
#[derive(Debug)]
pub struct Handed {
    /// New listeners and settings of the proxy's server.
    pub server: tokio::sync::mpsc::UnboundedReceiver<Moved>,
    /// New listeners of the admin API.
    pub admin: tokio::sync::mpsc::UnboundedReceiver<AdminMoved>,
}

/// Moves the proxy's server when a reload changes `listen` or `[server]`: a new address is
/// bound at once, and the new listener and settings handed to whoever serves. A new
/// `[access_log]` applies to the servers' access log, a new `[admin]` token at once to
/// the admin API, and a new admin address is bound and handed over as `listen` is.
#[derive(Debug, Clone)]
pub struct Listen {
    moves: tokio::sync::mpsc::UnboundedSender<Moved>,
    access_log: AccessLog,
    admin: AdminToken,
    admin_moves: tokio::sync::mpsc::UnboundedSender<AdminMoved>,
}

impl Listen {
    /// A mover, and what it hands over, for the server loop and the admin API's; the
    /// servers write `access_log`, the admin API checks `admin`.
    pub fn new(access_log: AccessLog, admin: AdminToken) -> (Self, Handed) {
        let (moves, server) = tokio::sync::mpsc::unbounded_channel();
        let (admin_moves, admin_bound) = tokio::sync::mpsc::unbounded_channel();
        let listen = Self {
            moves,
            access_log,
            admin,
            admin_moves,
        };
        let handed = Handed {
            server,
            admin: admin_bound,
        };
        (listen, handed)
    }

    /// [`apply`], a changed `[access_log]` put in force for the requests that start from
    /// now on, a changed `[admin]` applied (its token at once, a new address bound and
    /// handed over, the admin API turned on or off), and a changed `listen` bound and a
    /// changed `[server]` handed over: listed as applied. An address that cannot be bound
    /// is logged, the proxy (or the admin API) keeps listening where it did, and `listen`
    /// (or `admin.listen`) is listed as needing a restart.
    pub fn apply(&self, proxy: &Proxy, old: &FileConfig, new: &mut FileConfig) -> Reloaded {
        let (listen, server) = (new.listen, new.server.clone());
        let (access_log, admin) = (new.access_log.clone(), new.admin.clone());
        let mut done = apply(proxy, old, new);
        if old.access_log != access_log {
            self.access_log.set_format(access_log.format);
            done.need_restart.retain(|s| *s != "access_log");
            done.applied.insert(0, "access_log");
            new.access_log = access_log;
        }
        if old.admin != admin {
            done.need_restart.retain(|s| *s != "admin");
            let (in_force, moved) = self.apply_admin(&old.admin, admin);
            if in_force != old.admin {
                done.applied.insert(0, "admin");
            }
            if !moved {
                done.need_restart.push("admin.listen");
            }
            new.admin = in_force;
        }
        let mut moved = Moved::default();
        if old.listen != listen {
            match bind(listen) {
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

    /// Puts the admin settings `new` in force in place of `old`: the token at once (for
    /// the next request on every admin connection, and for `Switchyard-Trace`); a new
    /// address, or the admin API turned on, bound and handed over; the admin API turned off
    /// handed over as `None`. Gives the settings in force, and whether the admin listener
    /// is where `new` says: an address that cannot be bound is logged, and the admin API
    /// goes on where it was (or stays off).
    fn apply_admin(&self, old: &AdminConfig, mut new: AdminConfig) -> (AdminConfig, bool) {
        let (rebind, stop) = (
            new.enabled && (!old.enabled || old.listen != new.listen),
            old.enabled && !new.enabled,
        );
        let moved = match (rebind, stop) {
            (true, _) => match bind(new.listen) {
                Ok(listener) => Some(Some(listener)),
                Err(e) => {
                    tracing::error!(admin = %new.listen, error = %e, "admin API: cannot listen");
                    None
                }
            },
            (false, true) => Some(None),
            (false, false) => None,
        };
        let handed = moved.is_some_and(|moved| match self.admin_moves.send(moved) {
            Ok(()) => true,
            Err(_) => {
                tracing::error!("nothing serves the reloaded admin listener");
                false
            }
        });
        let asked = rebind || stop;
        if asked && !handed {
            (new.listen, new.enabled) = (old.listen, old.enabled);
        }
        let token = new.token.as_deref().filter(|_| new.enabled);
        self.admin.set(token);
        (new, handed || !asked)
    }
}

/// A non-blocking listener bound on `addr`.
fn bind(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}
