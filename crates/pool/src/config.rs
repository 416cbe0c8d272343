use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::TlsConfig;

/// How the pool speaks to its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTP/1.1, one request per connection at a time.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c), requests multiplexed on shared connections.
    #[serde(alias = "h2", alias = "http2")]
    Http2,
}

/// Which HTTP/1.1 implementation speaks to HTTP/1.1 backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Http1Engine {
    /// `switchyard-h1`'s client: the request's task drives its connection.
    #[default]
    Native,
    /// hyper's `client::conn::http1`, a task per connection.
    Hyper,
}

switchyard_core::with_defaults! {
    /// A pool's limits and timeouts. The defaults are the specification's.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct PoolConfig {
        /// Hard cap on open connections to the backend (default 100; at least 1).
        pub max_connections: usize = 100,
        /// Idle connections kept at most (default 100).
        pub max_idle: usize = 100,
        /// Bound on resolving and connecting (default 10 s).
        pub connect_timeout: Duration = Duration::from_secs(10),
        /// How long a request waits for a free connection when the cap is reached before
        /// failing with `PoolTimeout` (default 10 s, the specification's connection timeout).
        pub wait_timeout: Duration = Duration::from_secs(10),
        /// Connections idle this long are closed, and so are those the traffic left spare
        /// that long (default 90 s).
        pub idle_timeout: Duration = Duration::from_secs(90),
        /// HTTP/1.1 or HTTP/2.
        pub protocol: Protocol = Protocol::Http1,
        /// The HTTP/1.1 engine (default native). HTTP/2 always runs on hyper.
        pub http1: Http1Engine = Http1Engine::default(),
        /// Concurrent streams carried by one HTTP/2 connection before another is opened
        /// (default 100).
        pub h2_max_streams: usize = 100,
        /// Speak TLS to the backend (an `https` one) with these settings; `None`: plain TCP.
        pub tls: Option<TlsConfig> = None,
    }
}
