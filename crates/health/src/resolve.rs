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

/// Resolves host names. The default is [`SystemResolver`]; a resolver with TTLs (such as
/// one built on `hickory-resolver`) or a test double can be plugged in.
pub trait Resolver: Send + Sync + 'static {
    /// The addresses of `host`, with `port`.
    fn resolve(&self, host: String, port: u16) -> BoxFuture<'static, io::Result<Resolved>>;
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
