use std::error::Error as StdError;
use std::fmt;

use http::StatusCode;

/// The error type of every layer that can fail on its own.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Declares leaf errors that carry nothing but their kind: for each, a struct with a
/// private field, its constructor `new` (of the visibility given), and its message.
///
/// ```
/// switchyard_core::leaf_error! {
///     /// The queue was full.
///     #[derive(Debug)]
///     pub struct QueueFull(pub fn new) => "queue is full";
/// }
///
/// assert_eq!(QueueFull::new().to_string(), "queue is full");
/// ```
#[macro_export]
macro_rules! leaf_error {
    ($(
        $(#[$meta:meta])*
        $vis:vis struct $name:ident($new_vis:vis fn new) => $message:literal;
    )+) => {$(
        $(#[$meta])*
        $vis struct $name(());

        impl $name {
            /// Creates the error.
            $new_vis fn new() -> Self {
                Self(())
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str($message)
            }
        }

        impl ::std::error::Error for $name {}
    )+};
}

/// No endpoint was ready to take the request: the set is empty, or every endpoint is
/// unhealthy, tripped or saturated. Returned at once, never after waiting.
///
/// It says whether any endpoint was only [busy](NoBackendsAvailable::is_busy) (at a
/// connection or concurrency cap, or not ready yet), which may change within a retry's
/// backoff, or whether there was nothing to wait for: no endpoints, or every one's circuit
/// open, which a short wait does not change.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NoBackendsAvailable {
    busy: bool,
}

impl NoBackendsAvailable {
    /// Creates the error: nothing to wait for (no endpoint, or every circuit open).
    pub fn new() -> Self {
        Self { busy: false }
    }

    /// Creates the error for a set where some endpoint was only busy.
    pub fn busy() -> Self {
        Self { busy: true }
    }

    /// Whether some endpoint was only busy, so that trying again shortly may find it ready.
    pub fn is_busy(&self) -> bool {
        self.busy
    }
}

impl fmt::Display for NoBackendsAvailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no backend is available")
    }
}

impl StdError for NoBackendsAvailable {}

crate::leaf_error! {
    /// The circuit breaker of the chosen backend is open: the request was not sent.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct CircuitOpen(pub fn new) => "circuit breaker is open";

    /// The request did not complete within the configured request timeout.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct RequestTimeout(pub fn new) => "request timed out";

    /// An attempt had no response head within its attempt timeout: it was abandoned, and its
    /// backend counted as timed out.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct AttemptTimeout(pub fn new) => "attempt timed out waiting for the backend's response";

    /// No connection to the backend became free within the wait timeout: the backend is at
    /// its connection cap and nobody released one in time.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub struct PoolTimeout(pub fn new) => "timed out waiting for a connection to the backend";
}

/// Why a connection to a backend could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectErrorKind {
    /// The name did not resolve.
    Dns,
    /// The backend refused the connection.
    Refused,
    /// Connecting (resolution included) took longer than the connect timeout.
    Timeout,
    /// The TLS handshake failed: the backend's certificate was not trusted or not for its
    /// name, or the two sides share no protocol version or cipher.
    Tls,
    /// Anything else: unreachable network, reset during the handshake…
    Other,
}

/// A connection to a backend could not be made. The request was not sent, so it is safe
/// to retry whatever its method.
#[derive(Debug)]
pub struct ConnectError {
    kind: ConnectErrorKind,
    backend: String,
    source: Option<BoxError>,
}

impl ConnectError {
    /// A connect error of `kind` for `backend` (`host:port`).
    pub fn new(
        kind: ConnectErrorKind,
        backend: impl Into<String>,
        source: Option<BoxError>,
    ) -> Self {
        Self {
            kind,
            backend: backend.into(),
            source,
        }
    }

    /// Why connecting failed.
    pub fn kind(&self) -> ConnectErrorKind {
        self.kind
    }

    /// The backend (`host:port`).
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Whether the name did not resolve (the specification's circuit breakers count these).
    pub fn is_dns(&self) -> bool {
        self.kind == ConnectErrorKind::Dns
    }

    /// Whether connecting timed out.
    pub fn is_timeout(&self) -> bool {
        self.kind == ConnectErrorKind::Timeout
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ConnectErrorKind::Dns => "cannot resolve",
            ConnectErrorKind::Refused => "connection refused by",
            ConnectErrorKind::Timeout => "timed out connecting to",
            ConnectErrorKind::Tls => "TLS handshake failed with",
            ConnectErrorKind::Other => "cannot connect to",
        };
        write!(f, "{what} {}", self.backend)
    }
}

impl StdError for ConnectError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// The client's request body failed while it was being forwarded: its framing was
/// malformed (a bad chunk size, a `Content-Length` it did not honour) or the client went
/// away in the middle of it. The client's fault, not the backend's: answered 400, never
/// retried, never counted against the backend by its breaker or health.
#[derive(Debug)]
pub struct ClientBodyError {
    source: BoxError,
}

impl ClientBodyError {
    /// Wraps the request body's own error.
    pub fn new(source: impl Into<BoxError>) -> Self {
        Self {
            source: source.into(),
        }
    }
}

impl fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the client's request body failed: {}", self.source)
    }
}

impl StdError for ClientBodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// What kind of failure an error is, for mapping it to a status or deciding on a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`NoBackendsAvailable`]: 503.
    NoBackendsAvailable,
    /// [`CircuitOpen`]: 503.
    CircuitOpen,
    /// [`RequestTimeout`] or tower's `timeout::error::Elapsed`: 504.
    RequestTimeout,
    /// [`AttemptTimeout`]: the backend did not answer within the attempt timeout, 504.
    AttemptTimeout,
    /// [`PoolTimeout`]: 503.
    PoolTimeout,
    /// [`ConnectError`]: the backend could not be reached, 502.
    Connect,
    /// Anything else from the upstream side (connect refused, reset, bad response): 502.
    Upstream,
    /// [`ClientBodyError`]: the client's request body was malformed or cut off, 400.
    ClientBody,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [Self; 8] = [
        Self::NoBackendsAvailable,
        Self::CircuitOpen,
        Self::RequestTimeout,
        Self::AttemptTimeout,
        Self::PoolTimeout,
        Self::Connect,
        Self::Upstream,
        Self::ClientBody,
    ];

    /// A short name: `no_backends_available`, `circuit_open`, `request_timeout`,
    /// `attempt_timeout`, `pool_timeout`, `connect`, `upstream`, `client_body`.
    pub fn name(self) -> &'static str {
        match self {
            Self::NoBackendsAvailable => "no_backends_available",
            Self::CircuitOpen => "circuit_open",
            Self::RequestTimeout => "request_timeout",
            Self::AttemptTimeout => "attempt_timeout",
            Self::PoolTimeout => "pool_timeout",
            Self::Connect => "connect",
            Self::Upstream => "upstream",
            Self::ClientBody => "client_body",
        }
    }

    /// Classifies an error by walking its `source()` chain for a known leaf error.
    ///
    /// The first known leaf wins, so a timeout that wraps a connect error is a timeout.
    pub fn of(err: &(dyn StdError + 'static)) -> Self {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if e.is::<NoBackendsAvailable>() {
                return Self::NoBackendsAvailable;
            }
            if e.is::<CircuitOpen>() {
                return Self::CircuitOpen;
            }
            if e.is::<RequestTimeout>() || e.is::<tower::timeout::error::Elapsed>() {
                return Self::RequestTimeout;
            }
            if e.is::<AttemptTimeout>() {
                return Self::AttemptTimeout;
            }
            if e.is::<PoolTimeout>() {
                return Self::PoolTimeout;
            }
            if e.is::<ConnectError>() {
                return Self::Connect;
            }
            if e.is::<ClientBodyError>() {
                return Self::ClientBody;
            }
            cur = e.source();
        }
        Self::Upstream
    }

    /// The status a proxy answers with for this kind of failure.
    pub fn status(self) -> StatusCode {
        match self {
            Self::NoBackendsAvailable | Self::CircuitOpen | Self::PoolTimeout => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RequestTimeout | Self::AttemptTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Upstream | Self::Connect => StatusCode::BAD_GATEWAY,
            Self::ClientBody => StatusCode::BAD_REQUEST,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn leaf_errors_map_to_their_status() {
        let refused = ConnectError::new(ConnectErrorKind::Refused, "127.0.0.1:1", None);
        let cases: [(BoxError, ErrorKind, u16); 8] = [
            (AttemptTimeout::new().into(), ErrorKind::AttemptTimeout, 504),
            (PoolTimeout::new().into(), ErrorKind::PoolTimeout, 503),
            (refused.into(), ErrorKind::Connect, 502),
            (
                NoBackendsAvailable::new().into(),
                ErrorKind::NoBackendsAvailable,
                503,
            ),
            (CircuitOpen::new().into(), ErrorKind::CircuitOpen, 503),
            (RequestTimeout::new().into(), ErrorKind::RequestTimeout, 504),
            (
                tower::timeout::error::Elapsed::new().into(),
                ErrorKind::RequestTimeout,
                504,
            ),
            ("connection refused".into(), ErrorKind::Upstream, 502),
        ];
        for (err, kind, status) in cases {
            assert_eq!(ErrorKind::of(&*err), kind, "{err}");
            assert_eq!(kind.status().as_u16(), status);
        }
    }

    #[test]
    fn classification_walks_the_source_chain() {
        let err = Wrapper(Box::new(Wrapper(Box::new(CircuitOpen::new()))));
        assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);
        let plain = Wrapper("reset by peer".into());
        assert_eq!(ErrorKind::of(&plain), ErrorKind::Upstream);
    }
}
