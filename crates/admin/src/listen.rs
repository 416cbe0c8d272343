//! Where and how a proxy and its admin API are served, across reloads: [`Listen`] puts in
//! force what a reload changed of it ([`Listening`]). The proxy's server moves with a
//! [`Mover`] (see [`switchyard_server::reload`]); the admin API takes a new token at once,
//! and a listener on a new address (or the API turned off) with an [`AdminMover`], which
//! [`serve_reloading`] serves while the previous listener stops accepting.

use std::net::SocketAddr;

use axum::Router;
use switchyard_server::reload::{bind, Moved, Mover};
use switchyard_server::upgrade::HandedOver;
use switchyard_server::{AccessLog, AccessLogConfig, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::{AdminConfig, AdminToken, Reloaded};

/// Where and how a proxy and its admin API are served: what of a configuration a reload
/// changes while they serve (`listen`, `[server]`, `[access_log]` and `[admin]` in the
/// binary's file).
#[derive(Debug, Clone, PartialEq)]
pub struct Listening {
    /// Where the proxy listens.
    pub listen: SocketAddr,
    /// The proxy's server settings.
    pub server: ServerConfig,
    /// The access log.
    pub access_log: AccessLogConfig,
    /// The admin API's settings.
    pub admin: AdminConfig,
}

impl Listening {
    /// Lists in `done` as needing a restart each part that changed from `self` to `new`:
    /// `listen`, `admin`, `access_log`, `server` (what a reload reports that moves nothing;
    /// [`Listen::apply`] puts them in force).
    pub fn need_restart(&self, new: &Self, done: &mut Reloaded) {
        let changed = [
            (self.listen != new.listen, "listen"),
            (self.admin != new.admin, "admin"),
            (self.access_log != new.access_log, "access_log"),
            (self.server != new.server, "server"),
        ];
        let changed = changed.into_iter().filter(|(changed, _)| *changed);
        done.need_restart.extend(changed.map(|(_, part)| part));
    }
}

/// What [`Listen`] hands over: to the server loop
/// ([`switchyard_server::reload::serve_reloading`]), and to the admin API's
/// ([`serve_reloading`]).
#[derive(Debug)]
pub struct Handed {
    /// New listeners and settings of the proxy's server.
    pub server: UnboundedReceiver<Moved>,
    /// New listeners of the admin API.
    pub admin: UnboundedReceiver<AdminMoved>,
}

/// Moves the proxy's server when a reload changes `listen` or `[server]`: a new address is
/// bound at once, and the new listener and settings handed to whoever serves. A new
/// `[access_log]` applies to the servers' access log, a new `[admin]` token at once to
/// the admin API, and a new admin address is bound and handed over as `listen` is.
#[derive(Debug, Clone)]
pub struct Listen {
    server: Mover,
    admin: AdminMover,
}

impl Listen {
    /// A mover, and what it hands over, for the server loop and the admin API's; the
    /// servers write `access_log`, the admin API checks `admin`.
    pub fn new(access_log: AccessLog, admin: AdminToken) -> (Self, Handed) {
        let (server, server_moves) = Mover::new(access_log);
        let (admin, admin_moves) = AdminMover::new(admin);
        let handed = Handed {
            server: server_moves,
            admin: admin_moves,
        };
        (Self { server, admin }, handed)
    }

    /// Puts in force what changed from `old` to `new`, in `done` listed as needing a
    /// restart (see [`Listening::need_restart`]): a changed `[access_log]` for the
    /// requests that start from now on, a changed `[admin]` (its token at once, a new
    /// address bound and handed over, the admin API turned on or off), a changed `listen`
    /// bound and a changed `[server]` handed over; lists them as applied instead, and gives
    /// the settings in force. An address that cannot be bound is logged, the proxy (or the
    /// admin API) keeps listening where it did, and `listen` (or `admin.listen`) is listed
    /// as needing a restart.
    pub fn apply(&self, old: &Listening, new: Listening, done: &mut Reloaded) -> Listening {
        let mut in_force = old.clone();
        if old.access_log != new.access_log {
            self.server.set_access_log(new.access_log.format);
            done.need_restart.retain(|s| *s != "access_log");
            done.applied.insert(0, "access_log");
            in_force.access_log = new.access_log;
        }
        if old.admin != new.admin {
            in_force.admin = self.admin.apply(&old.admin, new.admin, done);
        }
        let (rebound, reserved) = self.server.hand_over(
            (old.listen != new.listen).then_some(new.listen),
            (old.server != new.server).then(|| new.server.clone()),
        );
        if rebound {
            done.need_restart.retain(|s| *s != "listen");
            done.applied.insert(0, "listen");
            in_force.listen = new.listen;
        }
        if reserved {
            done.need_restart.retain(|s| *s != "server");
            done.applied.insert(usize::from(rebound), "server");
            in_force.server = new.server;
        }
        in_force
    }
}

/// A listener for the admin API on a new `admin.listen` address (or the API turned on):
/// `Some`, bound and non-blocking; `None`: the admin API turned off. Whoever serves the admin
/// API serves the new listener and stops the previous one accepting.
pub type AdminMoved = Option<std::net::TcpListener>;

/// Puts in force what a reload changed of `[admin]`: the token, and the listener, handed
/// to [`serve_reloading`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AdminMover {
    token: AdminToken,
    moves: UnboundedSender<AdminMoved>,
}

impl AdminMover {
    /// A mover over the admin API's `token`, and the listeners it hands over, for
    /// [`serve_reloading`].
    pub fn new(token: AdminToken) -> (Self, UnboundedReceiver<AdminMoved>) {
        let (moves, moved) = tokio::sync::mpsc::unbounded_channel();
        (Self { token, moves }, moved)
    }

    /// Puts the admin settings `new` in force in place of `old`: the token at once (for
    /// the next request on every admin connection, and for `Switchyard-Trace`); a new
    /// address, or the admin API turned on, bound and handed over; the admin API turned off
    /// handed over as `None`. Gives the settings in force, and lists in `done` `admin` as
    /// applied when they changed: an address that cannot be bound is logged, the admin
    /// API goes on where it was (or stays off), and `admin.listen` is listed as needing a
    /// restart.
    pub fn apply(&self, old: &AdminConfig, new: AdminConfig, done: &mut Reloaded) -> AdminConfig {
        done.need_restart.retain(|s| *s != "admin");
        let (in_force, moved) = self.put_in_force(old, new);
        if in_force != *old {
            done.applied.insert(0, "admin");
        }
        if !moved {
            done.need_restart.push("admin.listen");
        }
        in_force
    }

    /// [`apply`](Self::apply)'s settings in force, and whether the admin listener is where
    /// `new` says.
    fn put_in_force(&self, old: &AdminConfig, mut new: AdminConfig) -> (AdminConfig, bool) {
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
        let handed = moved.is_some_and(|moved| match self.moves.send(moved) {
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
        self.token.set(token);
        (new, handed || !asked)
    }
}

/// Serves `router` on `listener`, and on each listener that `moves` hands over in its
/// place (`None`: the admin API turned off; see [`AdminMover`]): the previous one stops
/// accepting, while its connections (a live tail of requests…) may finish. A listener
/// bound anew is offered to a binary upgrade in place of the old one. Everything stops
/// when the sockets are `handed` over, or on SIGINT or SIGTERM.
pub async fn serve_reloading(
    listener: Option<TcpListener>,
    router: Router,
    mut moves: UnboundedReceiver<AdminMoved>,
    handed: HandedOver,
) {
    let mut listener = listener;
    loop {
        let mut replace = None;
        if let Some(listener) = listener.take() {
            let addr = listener.local_addr().ok();
            let (replacing, replaced) = tokio::sync::oneshot::channel::<()>();
            let stop = handed.clone().or_signal();
            // A dropped sender (this loop gone) leaves it serving until the stop.
            let stop = async move {
                tokio::select! {
                    () = stop => {}
                    Ok(()) = replaced => {}
                }
            };
            tokio::spawn(crate::serve(listener, router.clone(), stop));
            tracing::info!(admin = ?addr, "admin API and dashboard listening");
            replace = Some(replacing);
        }
        let Some(moved) = moves.recv().await else {
            return;
        };
        if let Some(replacing) = replace {
            let _ = replacing.send(());
        }
        let Some(next) = moved else {
            tracing::info!("admin API turned off");
            continue;
        };
        listener = match TcpListener::from_std(next) {
            Ok(next) => Some(next),
            Err(e) => {
                tracing::error!(error = %e, "cannot serve the reloaded admin listener");
                continue;
            }
        };
        if let Some(next) = &listener {
            if let Err(e) = handed.reoffer("admin", next) {
                tracing::warn!(error = %e, "a binary upgrade would take the old admin listener");
            }
        }
    }
}
