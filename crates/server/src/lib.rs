//! The listener side of switchyard: serves a [`Proxy`](switchyard::Proxy) to clients.
//!
//! [`serve`] accepts connections and speaks HTTP/1.1 (hyper or the native engine,
//! [`Http1Engine`]) and HTTP/2 on them, over TLS when
//! [`ServerConfig`] names certificates ([`ListenerTls`]: SNI, client certificates, reload
//! without a restart), after a PROXY protocol header when a load balancer sends one. It
//! bounds how long a client may take to send a request's header, fills in the client's
//! address ([`switchyard::ClientAddr`]) for the proxy's `X-Forwarded-For`, writes the
//! access log (`switchyard::access` at `DEBUG`, or JSON lines with each request's
//! decision trace: [`AccessLogFormat`], a format that [`AccessLog`] can change while it
//! serves), and shuts down gracefully, upgraded
//! connections (WebSockets) included. [`settle`] waits for the proxy's first backends
//! before serving; [`reload`] serves across reloads that move the listener or change the
//! settings, and [`upgrade`] hands the listening sockets to a new process. [`demo`] has
//! the small backends of `switchyard demo`.

mod access;
pub mod demo;
mod drain;
pub mod proxy_protocol;
#[cfg(unix)]
pub mod reload;
mod server;
mod tls;
#[cfg(unix)]
pub mod upgrade;

pub use access::{AccessLog, AccessLogConfig, AccessLogFormat};
pub use server::{
    serve, serve_until_replaced, settle, shutdown_signal, Http1Engine, ServerConfig, SETTLE_TIMEOUT,
};
pub use tls::{CertFiles, ListenerOptions, ListenerTls};
