//! Protocol upgrades through the proxy (WebSocket, and any other `Upgrade` an HTTP/1.1
//! client and backend agree on).
//!
//! A client's HTTP/1.1 request with `Connection: upgrade` and `Upgrade: <protocol>` is sent
//! on with those two headers, and when the backend answers `101 Switching Protocols` the
//! two connections are joined: bytes are copied both ways until either side closes, or
//! until neither has sent a byte for the idle timeout
//! ([`ProxyHeaders::upgrade_idle_timeout`](crate::ProxyHeaders::upgrade_idle_timeout)).
//!
//! Joining needs the client connection's upgrade handle, which hyper's server puts in the
//! request's extensions when it serves the connection with upgrades
//! (`serve_connection_with_upgrades`, as `axum::serve` does), and the native engine
//! (`switchyard_h1`) always does.
//! Without one there is nothing to join, so the request goes on as a plain request, its
//! upgrade headers removed like any hop-by-hop header, and the backend answers it as
//! such. Upgrades need an HTTP/1.1 backend: HTTP/2 has no `Upgrade`.
//!
//! Only the protocols of an allow-list go through
//! ([`ProxyHeaders::upgrade_protocols`](crate::ProxyHeaders::upgrade_protocols), by
//! default `websocket`); an upgrade to any other is removed and the request goes on as a
//! plain one. `h2c` never goes through, whatever the list says: joined end to end, it
//! would let a client talk HTTP/2 straight to the backend, past every rule the proxy
//! applies to requests ("h2c smuggling").
//!
//! A backend's `101` that cannot be joined becomes `502 Bad Gateway` (see
//! [`refuse_switch`]): one to a request that asked for no upgrade the proxy took, one
//! switching to a protocol the client did not ask for (RFC 9110 §7.8 forbids it; `h2c`
//! too), or one without a connection to hand over. The client is never told of a switch
//! that did not happen, and the backend's connection, already out of its pool, is closed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Upgraded connections (tunnels) through one stack: how many are open, and how many
/// were opened. Cheap to clone; clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct Tunnels(Arc<TunnelCounts>);

#[derive(Debug, Default)]
struct TunnelCounts {
    opened: AtomicU64,
    closed: AtomicU64,
    /// Woken each time a tunnel closes.
    closing: tokio::sync::Notify,
}

/// A snapshot of [`Tunnels`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TunnelStats {
    /// Tunnels open now.
    pub open: u64,
    /// Tunnels opened since the stack was built.
    pub total: u64,
}

impl Tunnels {
    /// The counts now.
    pub fn stats(&self) -> TunnelStats {
        // Closed first: a tunnel closing between the two reads is not counted as open
        // without having been opened.
        let closed = self.0.closed.load(Ordering::Relaxed);
        let total = self.0.opened.load(Ordering::Relaxed);
        TunnelStats {
            open: total.saturating_sub(closed),
            total,
        }
    }

    /// Completes once no tunnel is open: for a shutdown that lets them finish.
    pub async fn all_closed(&self) {
        loop {
            let closing = self.0.closing.notified();
            tokio::pin!(closing);
            // Registered before the count is read, so that a close in between wakes it.
            closing.as_mut().enable();
            if self.stats().open == 0 {
                return;
            }
            closing.await;
        }
    }

    /// Counts a tunnel open until the returned guard is dropped.
    fn open(&self) -> OpenTunnel {
        self.0.opened.fetch_add(1, Ordering::Relaxed);
        OpenTunnel(self.clone())
    }
}

/// An open tunnel, counted closed when dropped (also when its task is aborted).
struct OpenTunnel(Tunnels);

impl Drop for OpenTunnel {
    fn drop(&mut self) {
        self.0 .0.closed.fetch_add(1, Ordering::Relaxed);
        self.0 .0.closing.notify_waiters();
    }
}

/// A client's upgrade, held while its request is forwarded.
#[derive(Debug)]
pub(crate) struct Upgrade {
    protocol: HeaderValue,
    client: ClientUpgrade,
    idle: Option<Duration>,
    tunnels: Tunnels,
}

impl Upgrade {
    /// Takes the upgrade a request asks for, if it asks for one and its connection can be
    /// handed over.
    /// The tunnel it opens is closed after `idle` without a byte either way.
    /// Only the protocols in `allowed` are taken (see [`allowed_protocols`]).
    pub(crate) fn take<B>(
        req: &mut Request<B>,
        allowed: &[Box<str>],
        idle: Option<Duration>,
        tunnels: &Tunnels,
    ) -> Option<Self> {
        let protocol = requested(req, Some(allowed))?;
        let client = ClientUpgrade::take(req)?;
        Some(Self {
            protocol,
            client,
            idle,
            tunnels: tunnels.clone(),
        })
    }

    /// Whether the request's connection can be handed over. Checked first: hyper adds the
    /// handle only to requests that ask for an upgrade, and an empty extension map answers
    /// without hashing anything.
    fn can_upgrade<B>(req: &Request<B>) -> bool {
        let extensions = req.extensions();
        extensions.get::<OnUpgrade>().is_some()
            || extensions.get::<switchyard_h1::OnUpgrade>().is_some()
    }

    /// Puts the upgrade request's headers back after the hop-by-hop ones were removed.
    pub(crate) fn restore_request<B>(&self, req: &mut Request<B>) {
        restore_request(req, self.protocol.clone());
    }

    /// For the backend's `101 Switching Protocols`: joins the two connections (in a task
    /// of their own) and returns the `Upgrade` header to send the client, or `None` when
    /// they cannot be joined: the backend switched to a protocol the client did not ask for
    /// (or was not allowed), or its connection cannot be handed over.
    pub(crate) fn answer<B>(self, res: &mut Response<B>) -> Option<HeaderValue> {
        let protocol = res.headers().get(header::UPGRADE).cloned()?;
        if !switches_as_asked(&protocol, &self.protocol) {
            return None;
        }
        let backend = BackendUpgrade::take(res)?;
        tokio::spawn(join(self.client, backend, self.idle, self.tunnels));
        Some(protocol)
    }
}

/// The protocols an HTTP/1.1 request asks to switch to: its `Upgrade`, when its
/// `Connection` lists `upgrade` and its connection can be handed over, less the protocols
/// not allowed (see [`allowed_protocols`]; `None`: any but `h2c`).
pub(crate) fn requested<B>(req: &Request<B>, allowed: Option<&[Box<str>]>) -> Option<HeaderValue> {
    if !Upgrade::can_upgrade(req) {
        return None;
    }
    let protocol = req.headers().get(header::UPGRADE)?;
    if req.version() != Version::HTTP_11 || !wants_upgrade(req.headers()) {
        return None;
    }
    allowed_protocols(protocol, allowed)
}

/// The protocols of an `Upgrade` value that may go through: those named in `allowed`
/// (compared without ASCII case, on the name before any `/version`), or with `None` any;
/// never `h2c`, whose upgrade would let a client speak HTTP/2 to the backend past every
/// check the proxy makes on requests (RFC 9113 §3.1 dropped it). `None` when none may.
/// The value is returned as it is when every protocol in it may go through.
pub(crate) fn allowed_protocols(
    value: &HeaderValue,
    allowed: Option<&[Box<str>]>,
) -> Option<HeaderValue> {
    let text = value.to_str().ok()?;
    let may = |protocol: &str| {
        let name = protocol_name(protocol);
        !name.eq_ignore_ascii_case("h2c")
            && allowed.is_none_or(|list| list.iter().any(|a| a.eq_ignore_ascii_case(name)))
    };
    let protocols = || text.split(',').map(str::trim).filter(|p| !p.is_empty());
    if protocols().all(may) {
        return protocols().next().is_some().then(|| value.clone());
    }
    let kept: Vec<&str> = protocols().filter(|p| may(p)).collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join(", ")).ok()
}

/// A protocol's name in an `Upgrade` value: what comes before any `/version`, trimmed.
fn protocol_name(protocol: &str) -> &str {
    protocol.split('/').next().unwrap_or_default().trim()
}

/// Whether a `101`'s `Upgrade` (`switched`) names only protocols the request's (`asked`,
/// already less those not allowed) named, and at least one (RFC 9110 §7.8: a server must
/// not switch to a protocol the client did not indicate). Names compare as in
/// [`allowed_protocols`].
fn switches_as_asked(switched: &HeaderValue, asked: &HeaderValue) -> bool {
    let (Ok(switched), Ok(asked)) = (switched.to_str(), asked.to_str()) else {
        return false;
    };
    let mut names = protocol_names(switched).peekable();
    names.peek().is_some()
        && names.all(|s| protocol_names(asked).any(|a| a.eq_ignore_ascii_case(s)))
}

/// The protocol names in an `Upgrade` value, empty ones skipped.
fn protocol_names(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(protocol_name)
        .filter(|name| !name.is_empty())
}

/// Turns a backend's `101` that was not joined into `502 Bad Gateway`, dropping the
/// backend's connection handle (which closes that connection): the client must not be
/// told of a switch that did not happen, nor the backend left speaking another protocol
/// on a connection the client cannot reach.
pub(crate) fn refuse_switch<B>(res: &mut Response<B>) {
    tracing::debug!(
        upgrade = ?res.headers().get(header::UPGRADE),
        "the backend switched protocols where the proxy could not follow"
    );
    drop(BackendUpgrade::take(res));
    *res.status_mut() = StatusCode::BAD_GATEWAY;
}

/// The backend connection's upgrade handle, from either HTTP/1.1 engine of the pool.
enum BackendUpgrade {
    Hyper(OnUpgrade),
    Native(switchyard_h1::OnUpgrade),
}

/// The backend's side of a tunnel.
type BackendIo = Box<dyn switchyard_h1::upgrade::Io>;

impl BackendUpgrade {
    /// Takes the handle out of a `101` response's extensions.
    fn take<B>(res: &mut Response<B>) -> Option<Self> {
        let extensions = res.extensions_mut();
        if let Some(native) = extensions.remove::<switchyard_h1::OnUpgrade>() {
            return Some(Self::Native(native));
        }
        extensions.remove::<OnUpgrade>().map(Self::Hyper)
    }

    /// The connection, once handed over.
    async fn io(self) -> Result<BackendIo, BoxError> {
        Ok(match self {
            Self::Hyper(on) => Box::new(TokioIo::new(on.await?)),
            Self::Native(on) => Box::new(on.await?),
        })
    }
}

/// Puts an upgrade request's headers back after the hop-by-hop ones were removed.
pub(crate) fn restore_request<B>(req: &mut Request<B>, protocol: HeaderValue) {
    let headers = req.headers_mut();
    headers.insert(header::UPGRADE, protocol);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Puts a switching response's headers back after the hop-by-hop ones were removed.
pub(crate) fn restore_response<B>(res: &mut Response<B>, protocol: HeaderValue) {
    let headers = res.headers_mut();
    headers.insert(header::UPGRADE, protocol);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Whether `Connection` lists the `upgrade` option.
fn wants_upgrade(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|option| option.trim().eq_ignore_ascii_case("upgrade"))
}

/// A client connection's upgrade handle: from hyper's server or the native engine.
#[derive(Debug)]
enum ClientUpgrade {
    Hyper(OnUpgrade),
    Native(switchyard_h1::OnUpgrade),
}

impl ClientUpgrade {
    fn take<B>(req: &mut Request<B>) -> Option<Self> {
        let extensions = req.extensions_mut();
        match extensions.remove::<OnUpgrade>() {
            Some(hyper) => Some(Self::Hyper(hyper)),
            None => extensions
                .remove::<switchyard_h1::OnUpgrade>()
                .map(Self::Native),
        }
    }

    /// The client's connection, once handed over.
    async fn io(self) -> Result<BackendIo, BoxError> {
        Ok(match self {
            Self::Hyper(on) => Box::new(TokioIo::new(on.await?)),
            Self::Native(on) => {
                let (io, read) = on.await?.into_parts();
                Box::new(switchyard_h1::Rewind::new(io, read))
            }
        })
    }
}

/// Joins the client and the backend once both connections are handed over.
async fn join(
    client: ClientUpgrade,
    backend: BackendUpgrade,
    idle: Option<Duration>,
    tunnels: Tunnels,
) {
    let (mut client, mut backend) = match tokio::try_join!(client.io(), backend.io()) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed before the tunnel opened");
            return;
        }
    };
    let _open = tunnels.open();
    match tunnel(&mut client, &mut backend, idle).await {
        Ok((up, down)) => tracing::debug!(up, down, "upgraded connection closed"),
        Err(e) => tracing::debug!(error = %e, "upgraded connection ended"),
    }
}

/// Copies bytes both ways between `a` and `b` until both directions are done, or until
/// neither side has sent a byte for `idle`: a peer gone without closing its connection
/// does not hold the other open for ever. Returns the bytes copied from `a` to `b` and
/// back.
pub(crate) async fn tunnel<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Option<Duration>,
) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let Some(idle) = idle else {
        return tokio::io::copy_bidirectional(a, b).await;
    };
    let activity = Activity::new();
    let (mut a, mut b) = (activity.watch(a), activity.watch(b));
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    let watchdog = async {
        loop {
            let deadline = activity.last() + idle;
            if deadline <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        copied = copy => copied,
        () = watchdog => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no byte either way for {idle:?}"),
        )),
    }
}

/// When a tunnel last carried a byte, either way.
struct Activity {
    start: Instant,
    /// Nanoseconds from `start`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }

    fn touch(&self) {
        let since = Instant::now().saturating_duration_since(self.start);
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
        self.last.store(nanos, Ordering::Relaxed);
    }

    fn watch<'a, T: ?Sized>(&'a self, io: &'a mut T) -> Watched<'a, T> {
        Watched { io, activity: self }
    }
}

/// An I/O object whose reads mark the tunnel active.
struct Watched<'a, T: ?Sized> {
    io: &'a mut T,
    activity: &'a Activity,
}

impl<T: AsyncRead + Unpin + ?Sized> AsyncRead for Watched<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut *self.io).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        read
    }
}

impl<T: AsyncWrite + Unpin + ?Sized> AsyncWrite for Watched<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    /// A tunnel between two in-memory pipes; returns the far ends and the tunnel's task.
    fn open(
        idle: Option<Duration>,
    ) -> (
        tokio::io::DuplexStream,
        tokio::io::DuplexStream,
        tokio::task::JoinHandle<io::Result<(u64, u64)>>,
    ) {
        let (client, mut near_client) = duplex(1024);
        let (backend, mut near_backend) = duplex(1024);
        let task =
            tokio::spawn(async move { tunnel(&mut near_client, &mut near_backend, idle).await });
        (client, backend, task)
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_tunnel_is_closed_after_the_idle_timeout_and_not_before() {
        let (mut client, mut backend, task) = open(Some(Duration::from_secs(60)));
        let mut buf = [0u8; 5];
        // Traffic either way keeps it open, however long the tunnel lives.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(50)).await;
            client.write_all(b"ping!").await.unwrap();
            backend.read_exact(&mut buf).await.unwrap();
            tokio::time::sleep(Duration::from_secs(50)).await;
            backend.write_all(b"pong!").await.unwrap();
            client.read_exact(&mut buf).await.unwrap();
        }
        let quiet = tokio::time::Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(7200), task).await;
        let err = ended
            .expect("still open after two hours")
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(quiet.elapsed(), Duration::from_secs(60));
        // Both peers see their connection closed.
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
        assert_eq!(backend.read(&mut buf).await.unwrap(), 0);
    }

    #[test]
    fn only_allowed_protocols_go_through_and_never_h2c() {
        let list: Vec<Box<str>> = vec!["websocket".into(), "echo".into()];
        let allowed = |value: &str, list: Option<&[Box<str>]>| {
            allowed_protocols(&HeaderValue::from_str(value).unwrap(), list)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let some = Some(list.as_slice());
        assert_eq!(allowed("websocket", some).as_deref(), Some("websocket"));
        assert_eq!(allowed("WebSocket", some).as_deref(), Some("WebSocket"));
        assert_eq!(
            allowed("websocket/13", some).as_deref(),
            Some("websocket/13")
        );
        assert_eq!(allowed("echo, irc/6.9", some).as_deref(), Some("echo"));
        assert_eq!(
            allowed("h2c, websocket", some).as_deref(),
            Some("websocket")
        );
        for refused in ["h2c", "H2C", "h2c/1", "irc", "", " , "] {
            assert_eq!(allowed(refused, some), None, "{refused:?}");
        }
        assert_eq!(allowed("irc", None).as_deref(), Some("irc"));
        assert_eq!(allowed("h2c", None), None);
        let h2c: Vec<Box<str>> = vec!["h2c".into()];
        assert_eq!(allowed("h2c", Some(h2c.as_slice())), None);
    }

    #[test]
    fn a_backend_may_switch_only_to_a_protocol_asked_for() {
        let switches = |switched: &str, asked: &str| {
            let value = |v: &str| HeaderValue::from_str(v).unwrap();
            switches_as_asked(&value(switched), &value(asked))
        };
        assert!(switches("websocket", "websocket"));
        assert!(switches("WebSocket", "websocket"));
        assert!(switches("echo/2", "websocket, echo/2"));
        assert!(switches("echo", "echo/1"));
        for (switched, asked) in [
            ("h2c", "websocket"),
            ("websocket, h2c", "websocket"),
            ("irc", "websocket, echo"),
            ("", "websocket"),
            (" , ", "websocket"),
        ] {
            assert!(!switches(switched, asked), "{switched:?} for {asked:?}");
        }
    }

    #[tokio::test]
    async fn all_closed_waits_for_the_last_open_tunnel() {
        let tunnels = Tunnels::default();
        tunnels.all_closed().await;
        let (first, second) = (tunnels.open(), tunnels.open());
        let waiting = tokio::spawn({
            let tunnels = tunnels.clone();
            async move { tunnels.all_closed().await }
        });
        drop(first);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished(), "one tunnel is still open");
        drop(second);
        waiting.await.unwrap();
        assert_eq!(tunnels.stats(), TunnelStats { open: 0, total: 2 });
    }

    #[tokio::test(start_paused = true)]
    async fn a_tunnel_ends_when_both_sides_close() {
        let (mut client, mut backend, task) = open(Some(Duration::from_secs(60)));
        client.write_all(b"bye").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        backend.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
        backend.write_all(b"ok").await.unwrap();
        backend.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ok");
        assert_eq!(task.await.unwrap().unwrap(), (3, 2));
    }
}
