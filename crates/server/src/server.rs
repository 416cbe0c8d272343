//! Serves a [`Proxy`] on a listener: HTTP/1.1 and HTTP/2 (h2c prior knowledge), limits on
//! what a client may do, graceful shutdown.
//!
//! HTTP/2 is served by hyper; HTTP/1.1 by hyper or by the native engine
//! ([`switchyard_h1`]), as [`ServerConfig::http1`] says. With the native engine and
//! `http2` on, a plaintext connection's first bytes are read to tell HTTP/2's preface from
//! an HTTP/1 request (what hyper's `auto` does for itself), then given back to the engine
//! that serves it; over TLS, ALPN decides.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::{self, Either};
use futures::FutureExt;
use pin_project_lite::pin_project;

use http::header::HeaderValue;
use http::{header, Request, Response, StatusCode};
use http_body_util::Limited;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use serde::{Deserialize, Serialize};
use switchyard::config::ConfigProblem;
use switchyard::{body, Body, ByteSize, ClientAddr, Proxy, ProxyFuture, Trace};
use switchyard_h1::upgrade::Io;
use switchyard_h1::{RecvBody, Rewind};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tower::util::{Oneshot, ServiceExt};

use crate::access::{AccessLog, Entry, JsonLog};
use crate::drain::Drain;
use crate::proxy_protocol;
use crate::tls::{CertFiles, ListenerOptions, ListenerTls};

switchyard_core::with_defaults! {
    /// Limits on client connections, so that one bad client cannot hurt the others.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct ServerConfig {
        /// A client must send a request's whole header within this time, or the connection is
        /// closed. The same bound closes an HTTP/1.1 keep-alive connection left idle.
        #[serde(with = "humantime_serde")]
        pub header_read_timeout: Duration = Duration::from_secs(30),
        /// Largest request header block accepted (at least 8KiB); larger gets 431.
        pub max_header_size: ByteSize = ByteSize(64 * 1024),
        /// Largest request body accepted, when set; a larger `Content-Length` gets 413 and a
        /// streamed body that grows past it is cut off.
        pub max_request_body: Option<ByteSize> = None,
        /// On SIGINT/SIGTERM, how long in-flight requests and open upgraded connections
        /// (WebSockets) may take to finish.
        #[serde(with = "humantime_serde")]
        pub shutdown_timeout: Duration = Duration::from_secs(30),
        /// Accept HTTP/2 with prior knowledge (h2c) beside HTTP/1.1; over TLS, offer it in
        /// ALPN.
        pub http2: bool = true,
        /// PEM certificate chain: with `tls_key_file`, the listener speaks TLS (HTTPS).
        pub tls_cert_file: Option<PathBuf> = None,
        /// PEM private key of `tls_cert_file`.
        pub tls_key_file: Option<PathBuf> = None,
        /// More certificates, each served to clients that ask (SNI) for a name it is valid
        /// for, wildcards included; the first that fits wins, and `tls_cert_file` serves the
        /// rest.
        pub tls_certs: Vec<CertFiles> = Vec::new(),
        /// PEM certificate authorities: when set, every client must present a certificate one
        /// of them signed (mutual TLS), or its handshake is refused. Reloaded with the
        /// certificates (`tls_reload_interval`, SIGHUP). Backends get
        /// `X-Forwarded-Client-Cert: Hash=<hex SHA-256 of the client's certificate>`, in place
        /// of any the client sent.
        pub tls_client_ca_file: Option<PathBuf> = None,
        /// Let returning clients resume with a session ticket instead of a full handshake
        /// (ticket keys made at start, rotated every 6 hours). Off: only the 256 most recent
        /// sessions can be resumed, each once.
        pub tls_session_tickets: bool = true,
        /// Every connection starts with a PROXY protocol header (version 1 or 2) naming the
        /// client, as a load balancer in front sends it (AWS NLB, HAProxy, Envoy); a
        /// connection without one is closed. Only for a listener that nothing but the load
        /// balancer can reach: anyone else could name any client.
        pub proxy_protocol: bool = false,
        /// How often the certificate and key files are read again; when they changed, new
        /// handshakes get the new certificate (connections stay open). On Unix, SIGHUP
        /// reloads at once. `0s`: only on SIGHUP.
        #[serde(with = "humantime_serde")]
        pub tls_reload_interval: Duration = Duration::from_secs(60),
        /// Which engine serves HTTP/1.1 connections; HTTP/2 is always hyper's.
        pub http1: Http1Engine = Http1Engine::default(),
    }
}

/// The engine that serves HTTP/1.1 client connections (file key `server.http1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Http1Engine {
    /// [`switchyard_h1`]: strict framing, no buffer held by an idle connection.
    Native,
    /// hyper's HTTP/1 server.
    Hyper,
}

impl Default for Http1Engine {
    /// `Native`, unless the environment variable `SWITCHYARD_HTTP1` says `hyper` (or
    /// `native`): so that a test suite can run under either engine without a change.
    fn default() -> Self {
        match std::env::var("SWITCHYARD_HTTP1").as_deref() {
            Ok("hyper") => Self::Hyper,
            _ => Self::Native,
        }
    }
}

impl ServerConfig {
    /// The TLS side of the listener: `None` for plain HTTP. Errors name the key.
    pub fn tls(&self) -> Result<Option<ListenerTls>, ConfigProblem> {
        let default = match (&self.tls_cert_file, &self.tls_key_file) {
            (None, None) if self.tls_certs.is_empty() => return Ok(None),
            (None, None) => {
                let message = "is needed with tls_certs: the certificate for clients that send no name, or one no certificate is for";
                return Err(problem("tls_cert_file", message));
            }
            (Some(cert), Some(key)) => CertFiles {
                cert_file: cert.clone(),
                key_file: key.clone(),
            },
            (Some(_), None) => return Err(problem("tls_key_file", "is needed with tls_cert_file")),
            (None, Some(_)) => return Err(problem("tls_cert_file", "is needed with tls_key_file")),
        };
        let options = ListenerOptions {
            http2: self.http2,
            session_tickets: self.tls_session_tickets,
            client_ca_file: self.tls_client_ca_file.clone(),
        };
        ListenerTls::load(&default, &self.tls_certs, &options).map(Some)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if let Err(p) = self.tls() {
            problems.push(p);
        }
        if self.header_read_timeout.is_zero() {
            problems.push(problem("header_read_timeout", "must be longer than 0s"));
        }
        if self.max_header_size.bytes() < 8192 {
            problems.push(problem("max_header_size", "must be at least 8KiB"));
        }
        problems
    }

    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        let max_header = usize::try_from(self.max_header_size.bytes()).unwrap_or(usize::MAX);
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(max_header.max(8192))
            // A client that half-closes after its request still gets the answer, as from
            // the native engine (hyper would drop the request already sent on).
            .half_close(true)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(max_header).unwrap_or(u32::MAX));
        if self.http2 {
            builder
        } else {
            builder.http1_only()
        }
    }

    /// The native HTTP/1.1 engine's settings, when it serves HTTP/1.1: the same limits as
    /// hyper's (the header read timeout also bounds a keep-alive connection's idle time),
    /// and the same bounded drain of an unread request body as [`Drain`].
    fn native(&self) -> Option<switchyard_h1::Config> {
        if self.http1 != Http1Engine::Native {
            return None;
        }
        let max_header = usize::try_from(self.max_header_size.bytes()).unwrap_or(usize::MAX);
        let limits = switchyard_h1::parse::Limits::default().max_head(max_header.max(8192));
        let config = switchyard_h1::Config::default()
            .limits(limits)
            .header_read_timeout(self.header_read_timeout)
            .idle_timeout(self.header_read_timeout)
            .linger(crate::drain::DRAIN_FOR, crate::drain::DRAIN_MAX);
        Some(config)
    }
}

/// The engines of a listener's connections, and the graceful stop that the native one
/// watches (hyper's connections are told through their [`Watcher`]).
#[derive(Clone)]
struct Engines {
    hyper: auto::Builder<TokioExecutor>,
    native: Option<switchyard_h1::Config>,
    http2: bool,
    header_read_timeout: Duration,
    stop: switchyard_h1::Stop,
}

impl Engines {
    /// Serves a plaintext connection: with the native engine and `http2` on, its first
    /// bytes say which engine.
    async fn plain(
        self: Arc<Self>,
        mut io: TcpStream,
        service: Connection,
        watcher: Watcher,
        remote: SocketAddr,
    ) {
        let Some(native) = self.native.clone() else {
            return self.hyper(io, service, watcher, remote).await;
        };
        if !self.http2 {
            tokio::spawn(self.native(native, io, service, watcher, remote));
            return;
        }
        let deadline = tokio::time::Instant::now() + self.header_read_timeout;
        let Some((h2, read)) = first(deadline, sniff_h2(&mut io), "preface", remote).await else {
            return;
        };
        let io = Rewind::new(io, read);
        if h2 {
            self.hyper(io, service, watcher, remote).await;
        } else {
            // A task of its own: this one's state (the preface read, a second copy of
            // everything passed in) goes, and an idle connection keeps only the engine's.
            tokio::spawn(self.native(native, io, service, watcher, remote));
        }
    }

    /// Serves a TLS connection: the native engine, when it serves HTTP/1.1, unless ALPN
    /// chose `h2`.
    async fn tls<I: Io>(
        self: Arc<Self>,
        io: I,
        h2: bool,
        service: Connection,
        watcher: Watcher,
        remote: SocketAddr,
    ) {
        match self.native.clone() {
            // A task of its own, without the handshake's state (see `plain`).
            Some(native) if !h2 => drop(tokio::spawn(
                self.native(native, io, service, watcher, remote),
            )),
            _ => self.hyper(io, service, watcher, remote).await,
        }
    }

    /// One connection on hyper's engines, boxed: its state (several KiB with HTTP/2's)
    /// would otherwise be part of every connection's task, the native engine's idle
    /// keep-alive connections included.
    fn hyper<I: Io>(
        &self,
        io: I,
        service: Connection,
        watcher: Watcher,
        remote: SocketAddr,
    ) -> Pin<Box<impl Future<Output = ()> + Send + 'static>> {
        Box::pin(connection(
            &self.hyper,
            TokioIo::new(io),
            service,
            (self.stop.clone(), self.header_read_timeout),
            watcher,
            remote,
        ))
    }

    /// One connection on the native engine: counted by `watcher` while it lasts, and
    /// stopped gracefully (no new request read) when the listener shuts down. A plain
    /// function around the engine's future, so that nothing is kept twice in it.
    fn native<I: Io>(
        &self,
        config: switchyard_h1::Config,
        io: I,
        service: Connection,
        watcher: Watcher,
        remote: SocketAddr,
    ) -> impl Future<Output = ()> + Send + 'static {
        let stop = self.stop.clone();
        switchyard_h1::serve_connection_until(io, service, config, stop).map(move |served| {
            if let Err(e) = served {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
            drop(watcher);
        })
    }
}

/// HTTP/2's connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the first bytes are HTTP/2's preface (`true`) or cannot be; returns them.
async fn sniff_h2(io: &mut TcpStream) -> std::io::Result<(bool, Bytes)> {
    let mut read = BytesMut::with_capacity(H2_PREFACE.len());
    loop {
        if io.read_buf(&mut read).await? == 0 || !H2_PREFACE.starts_with(&read) {
            return Ok((false, read.freeze()));
        }
        if read.len() == H2_PREFACE.len() {
            return Ok((true, read.freeze()));
        }
    }
}

pub(crate) fn problem(key: &str, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// Serves `proxy` on `listener` until `shutdown` resolves, then stops accepting and lets
/// requests in flight, then upgraded connections (WebSockets), finish for up to
/// `config.shutdown_timeout` in all. With
/// [`ServerConfig::proxy_protocol`] each connection's PROXY header is read first, and
/// names the client. Over TLS when `config` has a certificate: each handshake runs in its
/// connection's task, bounded (with the PROXY header) by `header_read_timeout`, so a slow
/// or broken client holds up no one else, and the
/// certificate is reloaded when its files change (see
/// [`ServerConfig::tls_reload_interval`]). A certificate that cannot be loaded (which
/// [`ServerConfig::validate`] reports) is logged, and nothing is served. The access log is
/// the text one ([`serve_until_replaced`] takes any).
pub async fn serve(
    listener: TcpListener,
    proxy: Proxy,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let log = AccessLog::default();
    serve_until_replaced(
        listener,
        proxy,
        config,
        log,
        std::future::pending(),
        shutdown,
    )
    .await;
}

/// [`serve`], writing `access_log` (whose format may change while it serves), for a
/// listener that another may replace (a new `listen` address): once `replaced` resolves it
/// stops accepting and closes, while the connections it accepted go on being served until
/// `shutdown`, which stops them gracefully as [`serve`] does.
pub async fn serve_until_replaced(
    listener: TcpListener,
    proxy: Proxy,
    config: ServerConfig,
    access_log: AccessLog,
    replaced: impl Future<Output = ()>,
    shutdown: impl Future<Output = ()>,
) {
    let tls = match config.tls() {
        Ok(tls) => tls.map(Arc::new),
        Err(p) => {
            tracing::error!("server.{}: {}", p.key, p.message);
            return;
        }
    };
    // Stops with the listener: aborted when this function returns.
    let _reloading = tls.clone().map(|tls| {
        let watch = tokio::spawn(tls.watch(config.tls_reload_interval));
        AbortOnDrop(watch)
    });
    let stop = switchyard_h1::Stop::new();
    let engines = Arc::new(Engines {
        hyper: config.builder(),
        native: config.native(),
        http2: config.http2,
        header_read_timeout: config.header_read_timeout,
        stop: stop.clone(),
    });
    let max_body = config.max_request_body.map(|b| b.bytes());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    tokio::pin!(replaced);
    let mut moved = false;
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
            () = &mut replaced => {
                moved = true;
                break;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = Connection {
            proxy: proxy.clone(),
            client: ClientAddr::new(remote),
            max_body,
            tls: tls.is_some(),
            access_log: access_log.clone(),
        };
        if tls.is_none() && !config.proxy_protocol {
            let watcher = graceful.watcher();
            match &engines.native {
                None => {
                    let io = TokioIo::new(stream);
                    let stop = (engines.stop.clone(), engines.header_read_timeout);
                    let conn = connection(&engines.hyper, io, service, stop, watcher, remote);
                    tokio::spawn(conn);
                }
                // Nothing to read first: the engine's future is the whole task.
                Some(native) if !engines.http2 => {
                    let native = native.clone();
                    tokio::spawn(engines.native(native, stream, service, watcher, remote));
                }
                Some(_) => {
                    let plain = Arc::clone(&engines).plain(stream, service, watcher, remote);
                    tokio::spawn(plain);
                }
            }
            continue;
        }
        // A PROXY protocol header, a TLS handshake, or both come first: in the
        // connection's own task, within `header_read_timeout` together.
        let acceptor = tls.as_ref().map(|tls| tls.acceptor());
        let (engines, watcher) = (engines.clone(), graceful.watcher());
        let deadline = tokio::time::Instant::now() + config.header_read_timeout;
        let proxy_protocol = config.proxy_protocol;
        tokio::spawn(async move {
            let (mut stream, mut service) = (stream, service);
            if proxy_protocol {
                let header = proxy_protocol::read_header(&mut stream);
                let Some(client) = first(deadline, header, "PROXY protocol header", remote).await
                else {
                    return;
                };
                if let Some(client) = client {
                    service.client = ClientAddr::new(client);
                }
            }
            let Some(tls) = acceptor else {
                return engines.plain(stream, service, watcher, remote).await;
            };
            let handshake = tls.accept(stream);
            let Some(stream) = first(deadline, handshake, "TLS handshake", remote).await else {
                return;
            };
            // A client presents a certificate only when the listener asks for one, and
            // then it has been verified.
            if let Some(cert) = client_cert_header(stream.get_ref().1) {
                service.client = service.client.with_forwarded_cert(cert);
            }
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            engines.tls(stream, h2, service, watcher, remote).await;
        });
    }
    let addr = listener.local_addr().ok();
    drop(listener);
    if moved {
        tracing::info!(
            ?addr,
            "stopped listening; its connections go on until shutdown"
        );
        shutdown.await;
    }
    stop.stop();
    tracing::info!(timeout = ?config.shutdown_timeout, "shutting down: waiting for in-flight requests");
    let deadline = tokio::time::Instant::now() + config.shutdown_timeout;
    if tokio::time::timeout_at(deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout reached; closing the remaining connections");
    }
    // Upgraded connections (WebSockets) left hyper's watch when they switched: they get
    // what is left of the same timeout to close.
    let open = proxy.tunnel_stats().open;
    if open > 0 {
        tracing::info!(
            open,
            "shutting down: waiting for upgraded connections to close"
        );
        if tokio::time::timeout_at(deadline, proxy.tunnels().all_closed())
            .await
            .is_err()
        {
            let open = proxy.tunnel_stats().open;
            tracing::warn!(
                open,
                "shutdown timeout reached; closing the upgraded connections"
            );
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM: the `shutdown` of [`serve`] for a
/// process that stops when told to.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// How long [`settle`] waits for the configured backends to be in the balancer.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits until the backends `proxy` was given at start are in the balancer, so that the
/// first requests (queued on the listening socket meanwhile) find them: with none there,
/// a request gets its 503 at once. Backends named by host wait for their first
/// resolution, up to [`SETTLE_TIMEOUT`]: a name server that does not answer delays
/// serving, never stops it.
pub async fn settle(proxy: &Proxy) {
    if tokio::time::timeout(SETTLE_TIMEOUT, proxy.settled())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout = ?SETTLE_TIMEOUT,
            "not every backend resolved in time; serving with those that did"
        );
    }
}

/// Runs `step`, what comes before HTTP on a connection (`what`: its PROXY header, its TLS
/// handshake), by `deadline`; logs why not and gives `None` when it fails or is late.
async fn first<T, E: std::fmt::Display>(
    deadline: tokio::time::Instant,
    step: impl Future<Output = Result<T, E>>,
    what: &str,
    remote: SocketAddr,
) -> Option<T> {
    match tokio::time::timeout_at(deadline, step).await {
        Ok(Ok(done)) => Some(done),
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "{what} failed");
            None
        }
        Err(_) => {
            tracing::debug!(%remote, "{what} timed out");
            None
        }
    }
}

/// Serves one client connection on hyper's engines, with upgrades, counted by `watcher`
/// while it lasts. Once `stop` is given the connection shuts down gracefully (hyper's
/// HTTP/1 answers the request in flight with `Connection: close`, HTTP/2 sends GOAWAY);
/// but as on the native engine, the first request of a connection accepted before the
/// stop is read and answered first (for up to `first_wait`): its client sent it to a
/// listener that was still accepting, and hyper would close the connection unanswered.
fn connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: Connection,
    (stop, first_wait): (switchyard_h1::Stop, Duration),
    watcher: Watcher,
    remote: SocketAddr,
) -> impl Future<Output = ()> + Send + 'static
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let served = Arc::new(AtomicBool::new(false));
    let service = Served {
        service,
        served: served.clone(),
    };
    let conn = builder
        .serve_connection_with_upgrades(io, service)
        .into_owned();
    async move {
        let mut conn = std::pin::pin!(conn);
        // Polled after the connection, which notes its first request in `served`.
        let stopping = async {
            stop.stopped().await;
            let mut first = std::pin::pin!(tokio::time::sleep(first_wait));
            future::poll_fn(|cx| match served.load(Ordering::Acquire) {
                true => Poll::Ready(()),
                false => first.as_mut().poll(cx),
            })
            .await;
        };
        let ended = tokio::select! {
            biased;
            ended = conn.as_mut() => ended,
            () = stopping => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(%remote, error = %e, "connection ended with an error");
        }
        drop(watcher);
    }
}

/// A hyper connection's service, noting that a request came (see [`connection`]).
struct Served {
    service: Connection,
    served: Arc<AtomicBool>,
}

impl hyper::service::Service<Request<Incoming>> for Served {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = <Connection as hyper::service::Service<Request<Incoming>>>::Future;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.served.store(true, Ordering::Release);
        hyper::service::Service::call(&self.service, req)
    }
}

/// `X-Forwarded-Client-Cert` for a client that presented a verified certificate, in
/// Envoy's form: `Hash=` and the SHA-256 of the certificate's DER, in hex.
fn client_cert_header(tls: &rustls::ServerConnection) -> Option<HeaderValue> {
    let cert = tls.peer_certificates()?.first()?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert);
    let hex: String = digest
        .as_ref()
        .iter()
        .flat_map(|byte| [byte >> 4, byte & 0xf])
        .map(|nibble| char::from_digit(u32::from(nibble), 16).unwrap_or('0'))
        .collect();
    HeaderValue::try_from(format!("Hash={hex}")).ok()
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Ready = future::Ready<Result<Response<Body>, Infallible>>;

/// What a request to the proxy is: the proxy readied (`poll_ready`) and then called.
type Call = Oneshot<Proxy, Request<Body>>;

/// The service of one client connection.
struct Connection {
    proxy: Proxy,
    /// The client, for `X-Forwarded-For` (and, when the listener verifies client
    /// certificates, `X-Forwarded-Client-Cert`): set on every request as an extension.
    client: ClientAddr,
    max_body: Option<u64>,
    /// The connection is TLS: HTTP/1.1 requests are `https` ones.
    tls: bool,
    /// The access log, whose format each request reads as it starts.
    access_log: AccessLog,
}

impl hyper::service::Service<Request<Incoming>> for Connection {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready, Logged<Call>>;

    /// hyper calls through `&self`: each request readies and calls a clone of the proxy.
    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let prepared = if req.version() <= http::Version::HTTP_11 {
            prepare(self, req.map(Drain::new))
        } else {
            prepare(self, req)
        };
        prepared.send(|req| self.proxy.clone().oneshot(req))
    }
}

/// The native engine readies the connection's service before each call: the
/// connection's own proxy is readied and called, with no clone of it per request.
impl tower::Service<Request<RecvBody>> for Connection {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready, Logged<ProxyFuture>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower::Service::<Request<Body>>::poll_ready(&mut self.proxy, cx)
    }

    fn call(&mut self, req: Request<RecvBody>) -> Self::Future {
        prepare(self, req).send(|req| self.proxy.call(req))
    }
}

/// A request as the connection prepared it.
enum Prepared {
    /// For the proxy: its body boxed (and limited), the client's address set, and what
    /// its access log lines need.
    Forward {
        req: Request<Body>,
        log: Option<Box<LogLine>>,
        json: Option<JsonLog>,
    },
    /// Answered by the connection itself.
    Answered(Response<Body>),
}

impl Prepared {
    /// The response: `call`'s future on the request, logged, or the connection's answer.
    fn send<F>(self, call: impl FnOnce(Request<Body>) -> F) -> Either<Ready, Logged<F>> {
        match self {
            Prepared::Forward { req, log, json } => Either::Right(Logged {
                inner: call(req),
                log,
                json,
            }),
            Prepared::Answered(res) => Either::Left(future::ready(Ok(res))),
        }
    }
}

/// One request: the client's address for [`ProxyHeaders`](switchyard::ProxyHeaders), the
/// body limit, and the access log line; or the connection's own answer to a request it
/// does not forward. No async block: the caller wraps the proxy's own future once.
fn prepare<B>(conn: &Connection, mut req: Request<B>) -> Prepared
where
    B: hyper::body::Body<Data = hyper::body::Bytes> + Send + 'static,
    B::Error: Into<switchyard::BoxError>,
{
    let (client, max_body, tls) = (&conn.client, conn.max_body, conn.tls);
    if req.method() == http::Method::CONNECT {
        // A tunnel to a host of the client's choosing is a forward proxy's job (and an
        // HTTP/2 extended CONNECT, a WebSocket over HTTP/2, is not supported): refused
        // here rather than sent on to a backend as a request it cannot make sense of.
        let mut res = status(StatusCode::METHOD_NOT_ALLOWED);
        res.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE"),
        );
        return Prepared::Answered(res);
    }
    if tls && req.uri().scheme().is_none() {
        // An HTTP/1.1 request over TLS is an `https` one (HTTP/2 carries its `:scheme`):
        // made absolute, `X-Forwarded-Proto` says so and the cache keys it apart.
        if let Some(uri) = https_uri(&req) {
            *req.uri_mut() = uri;
        }
    }
    if let Some(max) = max_body {
        if content_length(&req).is_some_and(|len| len > max) {
            return Prepared::Answered(status(StatusCode::PAYLOAD_TOO_LARGE));
        }
    }
    let text = tracing::enabled!(target: "switchyard::access", tracing::Level::DEBUG);
    // A JSON line is the request's trace, when the proxy keeps one.
    let json = conn.access_log.json().cloned();
    let untraced = json.is_some() && !conn.proxy.config().trace;
    let log = (text || untraced).then(|| {
        Box::new(LogLine {
            remote: client.addr(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            start: tokio::time::Instant::now(),
            text,
        })
    });
    // ProxyHeaders takes the client's address (and certificate) from here, after it has
    // removed the hop-by-hop headers: a client cannot strip them by listing them in
    // `Connection`.
    req.extensions_mut().insert(client.clone());
    Prepared::Forward {
        req: limit(req, max_body),
        log,
        json,
    }
}

/// Boxes the request body, under `max_body` when there is one.
fn limit<B>(req: Request<B>, max_body: Option<u64>) -> Request<Body>
where
    B: hyper::body::Body<Data = hyper::body::Bytes> + Send + 'static,
    B::Error: Into<switchyard::BoxError>,
{
    match max_body {
        Some(max) => {
            let limit = usize::try_from(max).unwrap_or(usize::MAX);
            req.map(|b| body::boxed_request(Limited::new(b, limit)))
        }
        None => req.map(body::boxed_request),
    }
}

struct LogLine {
    remote: SocketAddr,
    method: http::Method,
    uri: http::Uri,
    start: tokio::time::Instant,
    /// Written as a `tracing` event (the text format).
    text: bool,
}

pin_project! {
    /// Logs the text line when the response head is ready, and has the JSON line written
    /// once the response body ends, if access logging is on.
    struct Logged<F> {
        #[pin]
        inner: F,
        log: Option<Box<LogLine>>,
        json: Option<JsonLog>,
    }
}

impl<F> Future for Logged<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx));
        let Ok(res) = res;
        let trace = res.extensions().get::<Trace>();
        let line = this.log.take();
        if let Some(line) = line.as_ref().filter(|line| line.text) {
            let trace_id = trace.and_then(Trace::context).map(|c| c.trace_id_hex());
            tracing::debug!(
                target: "switchyard::access",
                remote = %line.remote, method = %line.method, uri = %line.uri,
                status = res.status().as_u16(), elapsed = ?line.start.elapsed(),
                trace_id = trace_id.as_deref().unwrap_or("-"),
            );
        }
        let Some(json) = this.json.take() else {
            return Poll::Ready(Ok(res));
        };
        let entry = match (trace, line) {
            (Some(trace), _) => Entry::Traced(trace.clone()),
            (None, Some(line)) => Entry::Plain {
                method: line.method,
                uri: line.uri,
                client: line.remote,
                status: res.status().as_u16(),
                elapsed: line.start.elapsed(),
            },
            (None, None) => return Poll::Ready(Ok(res)),
        };
        Poll::Ready(Ok(res.map(|body| json.after(entry, body))))
    }
}

/// The request's URI in absolute `https` form, with its `Host` as authority.
fn https_uri<B>(req: &Request<B>) -> Option<http::Uri> {
    let host = req.headers().get(header::HOST)?.to_str().ok()?;
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    http::Uri::builder()
        .scheme("https")
        .authority(host)
        .path_and_query(path)
        .build()
        .ok()
}

fn content_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn status(status: StatusCode) -> Response<Body> {
    let mut res = Response::new(body::full(format!("{status}\n")));
    *res.status_mut() = status;
    res
}
