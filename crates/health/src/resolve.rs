//! Resolving backend host names.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures::future::BoxFuture;

/// The addresses a name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Every address, in the resolver's order.
    pub addrs: Vec<SocketAddr>,
    /// How long the answer may be kept, when the resolver knows.
    pub ttl: Option<Duration>,
}

/// One target an SRV record names (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    /// The target's host name, without the final dot.
    pub target: String,
    /// The port the service listens on there.
    pub port: u16,
    /// Lower is preferred: only the lowest group that is up takes traffic.
    pub priority: u16,
    /// The target's share within its priority group.
    pub weight: u16,
}

/// The targets an SRV name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvResolved {
    /// Every record's target, in the resolver's order.
    pub targets: Vec<SrvTarget>,
    /// How long the answer may be kept, when the resolver knows.
    pub ttl: Option<Duration>,
}

/// Resolves host names. The default is [`SystemResolver`]; a resolver with TTLs (such as
/// [`HickoryResolver`](crate::HickoryResolver)) or a test double can be plugged in.
pub trait Resolver: Send + Sync + 'static {
    /// The addresses of `host`, with `port`.
    fn resolve(&self, host: String, port: u16) -> BoxFuture<'static, io::Result<Resolved>>;

    /// The SRV records of `name` (`_http._tcp.web.service.consul`). The default fails:
    /// the system's resolver (`getaddrinfo`) cannot look them up.
    fn resolve_srv(&self, name: String) -> BoxFuture<'static, io::Result<SrvResolved>> {
        let error = format!("`{name}`: this resolver does not look up SRV records");
        Box::pin(async move { Err(io::Error::new(io::ErrorKind::Unsupported, error)) })
    }
}

/// The operating system's resolver (`getaddrinfo` on a blocking thread, through
/// `tokio::net::lookup_host`). It reports no TTL, so names are re-resolved every
/// `dns_refresh`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, host: String, port: u16) -> BoxFuture<'static, io::Result<Resolved>> {
        Box::pin(async move {
            let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect();
            addrs.dedup();
            Ok(Resolved { addrs, ttl: None })
        })
    }
}
