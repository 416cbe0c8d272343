//! A [`Resolver`] on `hickory-resolver`: A/AAAA and SRV lookups with their TTLs, against
//! a given name server or the system's.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures::future::BoxFuture;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, ResolverBuilder, TokioResolver};

use crate::resolve::{Resolved, Resolver, SrvResolved, SrvTarget};

/// Resolves with `hickory-resolver` on tokio. Answers carry their TTL, so the registry
/// re-resolves when they expire (within `dns_min_ttl ..= dns_max_ttl`). It keeps no cache
/// of its own: the registry decides when to ask again.
#[derive(Clone)]
pub struct HickoryResolver {
    inner: TokioResolver,
}

impl HickoryResolver {
    /// Asks the name server at `server` (UDP, then TCP for truncated answers), such as a
    /// Consul agent's DNS interface at `127.0.0.1:8600`.
    pub fn with_server(server: SocketAddr) -> Self {
        let mut config = ResolverConfig::new();
        for protocol in [Protocol::Udp, Protocol::Tcp] {
            config.add_name_server(NameServerConfig::new(server, protocol));
        }
        Self::build(TokioResolver::builder_with_config(
            config,
            TokioConnectionProvider::default(),
        ))
    }

    /// Asks the name servers of the system's configuration (`/etc/resolv.conf`).
    pub fn system() -> io::Result<Self> {
        let builder = TokioResolver::builder_tokio().map_err(io::Error::other)?;
        Ok(Self::build(builder))
    }

    fn build(mut builder: ResolverBuilder<TokioConnectionProvider>) -> Self {
        let options = builder.options_mut();
        options.cache_size = 0;
        options.timeout = Duration::from_secs(2);
        options.attempts = 2;
        Self {
            inner: builder.build(),
        }
    }
}

impl fmt::Debug for HickoryResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HickoryResolver")
            .field("config", self.inner.config())
            .finish()
    }
}

/// The shortest TTL of an answer's records.
fn ttl(lookup: &Lookup) -> Option<Duration> {
    let ttl = lookup.records().iter().map(|r| r.ttl()).min()?;
    Some(Duration::from_secs(u64::from(ttl)))
}

fn io_error(e: ResolveError) -> io::Error {
    io::Error::other(e.to_string())
}

impl Resolver for HickoryResolver {
    fn resolve(&self, host: String, port: u16) -> BoxFuture<'static, io::Result<Resolved>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let lookup = inner.lookup_ip(host).await.map_err(io_error)?;
            let mut addrs: Vec<SocketAddr> =
                lookup.iter().map(|ip| SocketAddr::new(ip, port)).collect();
            addrs.dedup();
            Ok(Resolved {
                addrs,
                ttl: ttl(lookup.as_lookup()),
            })
        })
    }

    fn resolve_srv(&self, name: String) -> BoxFuture<'static, io::Result<SrvResolved>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let lookup = inner.srv_lookup(name).await.map_err(io_error)?;
            let targets = lookup
                .iter()
                .map(|srv| SrvTarget {
                    target: srv.target().to_utf8().trim_end_matches('.').to_owned(),
                    port: srv.port(),
                    priority: srv.priority(),
                    weight: srv.weight(),
                })
                .collect();
            Ok(SrvResolved {
                targets,
                ttl: ttl(lookup.as_lookup()),
            })
        })
    }
}
