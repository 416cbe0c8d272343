//! Serving across reloads: a reload that binds a new `listen` address or changes the
//! `[server]` settings hands them over with a [`Mover`], and [`serve_reloading`] starts a
//! new server with them (on the same socket when only the settings changed) while the
//! previous one stops accepting and finishes the connections it has.

use std::net::SocketAddr;
use std::os::fd::AsFd;

use switchyard::Proxy;
use tokio::net::TcpListener;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::upgrade::HandedOver;
use crate::{AccessLog, AccessLogFormat, ServerConfig};

/// What a reload hands the server loop: a listener bound on a new `listen` address, new
/// `[server]` settings, or both. The loop starts a server with them (on the same socket
/// when only the settings changed) and stops the previous one accepting (see
/// [`serve_until_replaced`](crate::serve_until_replaced)).
#[derive(Debug, Default)]
pub struct Moved {
    /// Bound on the new `listen` address, non-blocking.
    pub listener: Option<std::net::TcpListener>,
    /// The new `[server]` settings.
    pub server: Option<ServerConfig>,
}

/// Puts in force what a reload changed of the proxy's server: a new address bound at once
/// and handed, with new settings, to [`serve_reloading`]; a new access log format for the
/// requests that start from now on. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Mover {
    moves: UnboundedSender<Moved>,
    access_log: AccessLog,
}

impl Mover {
    /// A mover over the servers' `access_log`, and the moves it hands over, for
    /// [`serve_reloading`].
    pub fn new(access_log: AccessLog) -> (Self, UnboundedReceiver<Moved>) {
        let (moves, moved) = tokio::sync::mpsc::unbounded_channel();
        (Self { moves, access_log }, moved)
    }

    /// Writes the access log in `format` from now on.
    pub fn set_access_log(&self, format: AccessLogFormat) {
        self.access_log.set_format(format);
    }

    /// Binds `listen` and hands the listener over, with the `server` settings: gives
    /// whether each was handed over. An address that cannot be bound is logged, and the
    /// server keeps listening where it did.
    pub fn hand_over(
        &self,
        listen: Option<SocketAddr>,
        server: Option<ServerConfig>,
    ) -> (bool, bool) {
        let listener = listen.and_then(|listen| match bind(listen) {
            Ok(listener) => Some(listener),
            Err(e) => {
                tracing::error!(%listen, error = %e, "cannot listen");
                None
            }
        });
        let moved = Moved { listener, server };
        let handed = (moved.listener.is_some(), moved.server.is_some());
        if handed == (false, false) {
            return handed;
        }
        if self.moves.send(moved).is_err() {
            tracing::error!("nothing serves the reloaded listener");
            return (false, false);
        }
        handed
    }
}

/// A non-blocking listener bound on `addr`.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves `proxy` on `listener` with the `server` settings, and again on each listener
/// and with the settings that `moves` hands over (see [`Mover`]): a new server takes the
/// connections from then on, the previous one's are served until shutdown. A listener
/// bound anew is offered to a binary upgrade in place of the old one. Every server stops
/// at once when the sockets are `handed` over, or on SIGINT or SIGTERM; returns when they
/// have all finished.
pub async fn serve_reloading(
    listener: TcpListener,
    proxy: Proxy,
    server: ServerConfig,
    access_log: AccessLog,
    mut moves: UnboundedReceiver<Moved>,
    handed: HandedOver,
) {
    // Every listener, the current one and those a reload moved away from, stops at once.
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let stop = handed.clone().or_signal();
    tokio::spawn(async move {
        stop.await;
        stopping.send_replace(true);
    });
    let shutdown = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|&stop| stop).await;
        }
    };
    let mut listener = listener;
    let mut server = server;
    let mut replaced = Vec::new();
    loop {
        // The socket itself, for a server with new settings on the same address.
        let same = listener.as_fd().try_clone_to_owned();
        let (replace, moved) = tokio::sync::oneshot::channel::<()>();
        let moved = async move {
            if moved.await.is_err() {
                std::future::pending().await
            }
        };
        let mut serving = tokio::spawn(crate::serve_until_replaced(
            listener,
            proxy.clone(),
            server.clone(),
            access_log.clone(),
            moved,
            shutdown(),
        ));
        // A reload that moved the listener or changed the server's settings: a new server
        // takes the connections from now on, the old one's are served until shutdown.
        let moved = tokio::select! {
            moved = moves.recv() => moved,
            _ = &mut serving => break,
        };
        let Some(moved) = moved else {
            let _ = serving.await;
            break;
        };
        let fresh = moved.listener.is_some();
        let next = match moved.listener {
            Some(bound) => Ok(bound),
            None => same.map(std::net::TcpListener::from),
        };
        let next = match next.and_then(TcpListener::from_std) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "cannot serve the reloaded listener");
                let _ = serving.await;
                break;
            }
        };
        if fresh {
            if let Err(e) = handed.reoffer("proxy", &next) {
                tracing::warn!(error = %e, "a binary upgrade would take the old listener");
            }
        }
        if let Some(settings) = moved.server {
            server = settings;
        }
        let _ = replace.send(());
        replaced.push(serving);
        let addr = next.local_addr().ok();
        let tls = server.tls_cert_file.is_some();
        tracing::info!(listen = ?addr, tls, "switchyard listening");
        listener = next;
    }
    for serving in replaced {
        let _ = serving.await;
    }
}
