//! Shared helpers for the end-to-end tests: real hyper backends and a real switchyard
//! server on 127.0.0.1, and a client.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use switchyard::{Backend, Proxy, ProxyConfig};
use switchyard_server::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub mod binary;
pub mod dnsmasq;
pub mod redis;

/// A body of any kind, for the test client and backends.
pub type TestBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// 64 KiB of static data: streamed bodies repeat it, so producing them allocates nothing.
pub static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// A body of `n` bytes (a multiple of 64 KiB) streamed in chunks of [`CHUNK`].
pub fn streamed(n: usize) -> TestBody {
    assert_eq!(n % CHUNK.len(), 0);
    let chunks =
        stream::iter((0..n / CHUNK.len()).map(|_| Ok(Frame::data(Bytes::from_static(&CHUNK)))));
    StreamBody::new(chunks).boxed_unsync()
}

/// A complete body.
pub fn full(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A running test backend.
#[derive(Debug, Clone)]
pub struct TestBackend {
    /// Its id, sent back in `x-backend`.
    pub id: &'static str,
    /// `https` when it speaks TLS.
    pub scheme: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests it has received.
    pub requests: Arc<AtomicUsize>,
    /// TCP connections it has accepted.
    pub connections: Arc<AtomicUsize>,
    /// TCP connections that have ended.
    pub closed: Arc<AtomicUsize>,
    stop: Arc<tokio::sync::watch::Sender<bool>>,
}

impl TestBackend {
    /// Its URL.
    pub fn url(&self) -> http::Uri {
        format!("{}://{}", self.scheme, self.addr).parse().unwrap()
    }

    /// A [`Backend`] entry for it, with its id.
    pub fn backend(&self) -> Backend {
        Backend::new(self.id, self.url())
    }

    /// Requests received so far.
    pub fn request_count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Stops the backend as a crash would: it stops accepting (new connections are
    /// refused) and drops its open connections, requests in flight included.
    pub fn kill(&self) {
        self.stop.send_replace(true);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Connections ended so far.
    pub fn closed_count(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }

    /// Waits (up to 10 s) until `n` connections have ended; returns how many have.
    pub async fn wait_closed(&self, n: usize) -> usize {
        for _ in 0..1000 {
            if self.closed_count() >= n {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.closed_count()
    }
}

/// How a test backend treats its connections.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackendOptions {
    /// Close keep-alive connections left idle this long (hyper's header read timeout).
    pub idle_close: Option<std::time::Duration>,
    /// Read each request whole, then answer it with this status.
    pub fail_with: Option<u16>,
}

impl BackendOptions {
    /// A backend that answers every request with `status`, after reading it whole.
    pub fn failing_with(status: u16) -> Self {
        Self {
            fail_with: Some(status),
            ..Self::default()
        }
    }
}

/// The representation a [`backend`] serves at `/cacheable/ranged`.
pub const RANGED: &str = "0123456789abcdefghij";

/// Starts a backend on 127.0.0.1. Every response carries `x-backend: <id>`. Paths:
/// - `/headers`: the request's headers, one `name: value` line each;
/// - `/hang`: never answers;
/// - `/stream/<n>`: streams `n` bytes;
/// - `/upload`: reads the whole body and answers its length;
/// - `/hop`: answers with hop-by-hop headers that a proxy must strip;
/// - `/close`: answers with `Connection: close`;
/// - `/delay/<ms>`: answers after `ms` milliseconds;
/// - `/status/<code>`: answers with that status;
/// - `/cacheable/<s>`: `<id> <method>`, cacheable for `s` seconds, with an `ETag`
///   (every other answer says `Cache-Control: no-store`);
/// - `/cacheable/versioned`: stale at once with `ETag: "v1"` and `x-version: 1`; its
///   revalidation gets a `304` with `max-age=60` and `x-version: 2`;
/// - `/targeted`: `CDN-Cache-Control: max-age=60` over `Cache-Control: no-store`;
/// - `/cacheable/ranged`: [`RANGED`] as `text/plain` with `ETag: "r1"`, cacheable for a
///   minute; a `Range: bytes=a-b` (or `a-`) of one range gets its `206`;
///   `/cacheable/ranged/stale` the same, stale at once (`max-age=0`);
/// - anything else: the id.
///
/// A request carrying `x-test-hang` is never answered, whatever its path.
pub async fn backend(id: &'static str) -> TestBackend {
    backend_with(id, BackendOptions::default()).await
}

/// [`backend`], with options. It speaks HTTP/1.1 and HTTP/2 (prior knowledge).
pub async fn backend_with(id: &'static str, options: BackendOptions) -> TestBackend {
    serve_backend(id, options, None).await
}

/// A certificate authority made for one test, a server certificate it signed for
/// `localhost` and `127.0.0.1`, and a client certificate it signed.
#[derive(Debug)]
pub struct TestCa {
    /// The CA's certificate, PEM: what a client must trust.
    pub ca_pem: String,
    /// The server certificate, PEM, for a server configured from files.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
    /// A client certificate, PEM, for mutual TLS.
    pub client_cert_pem: String,
    /// Its private key, PEM.
    pub client_key_pem: String,
    cert: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    ca: rustls::pki_types::CertificateDer<'static>,
}

impl TestCa {
    /// A fresh CA and server certificate.
    pub fn new() -> Self {
        Self::issue(&[], true)
    }

    /// A fresh CA and a server certificate for the DNS `names` only (`*.example.test`
    /// for a wildcard).
    pub fn for_names(names: &[&str]) -> Self {
        Self::issue(names, false)
    }

    /// The CA's certificate, DER.
    pub fn ca_der(&self) -> &[u8] {
        &self.ca
    }

    /// A client's TLS settings that trust this CA alone.
    pub fn trust(&self) -> switchyard::TlsConfig {
        switchyard::TlsConfig::from_ca_pem(self.ca_pem.as_bytes()).unwrap()
    }

    fn issue(names: &[&str], local: bool) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = names
            .iter()
            .map(|n| SanType::DnsName((*n).try_into().unwrap()))
            .collect();
        if local {
            params.subject_alt_names.extend([
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ]);
        }
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(vec!["switchyard".to_owned()]).unwrap();
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();
        Self {
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            client_cert_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
            cert: cert.der().clone(),
            key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            ca: ca.der().clone(),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// Sends `GET path` with `headers` over HTTP/1.1 on `io`, a connection of its own (a TLS
/// stream, or one that started with something else).
pub async fn h1_get_on<I>(
    io: I,
    path: &str,
    headers: &[(&str, &str)],
) -> hyper::Result<Response<Incoming>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let mut req = Request::get(path);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    sender
        .send_request(req.body(http_body_util::Empty::<Bytes>::new()).unwrap())
        .await
}

/// [`backend`] over TLS with `ca`'s server certificate: HTTP/1.1, or HTTP/2 when the
/// client offers `h2` with ALPN.
pub async fn tls_backend(id: &'static str, ca: &TestCa) -> TestBackend {
    tls_backend_with_alpn(id, ca, &[b"h2", b"http/1.1"]).await
}

/// [`tls_backend`] agreeing in ALPN only to the protocols in `alpn`.
pub async fn tls_backend_with_alpn(id: &'static str, ca: &TestCa, alpn: &[&[u8]]) -> TestBackend {
    tls_backend_from(id, ca, alpn, false).await
}

/// [`tls_backend`] that asks every client for a certificate signed by `ca` (mutual TLS)
/// and refuses the handshake of a client without one.
pub async fn tls_backend_requiring_client_cert(id: &'static str, ca: &TestCa) -> TestBackend {
    tls_backend_from(id, ca, &[b"h2", b"http/1.1"], true).await
}

async fn tls_backend_from(
    id: &'static str,
    ca: &TestCa,
    alpn: &[&[u8]],
    client_auth: bool,
) -> TestBackend {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.ca.clone()).unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(vec![ca.cert.clone()], ca.key.clone_key())
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    serve_backend(id, BackendOptions::default(), Some(acceptor)).await
}

/// A backend's connection: plain TCP, or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

async fn serve_backend(
    id: &'static str,
    options: BackendOptions,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> TestBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = TestBackend {
        id,
        scheme: if tls.is_some() { "https" } else { "http" },
        addr: listener.local_addr().unwrap(),
        requests: Arc::default(),
        connections: Arc::default(),
        closed: Arc::default(),
        stop: Arc::new(tokio::sync::watch::channel(false).0),
    };
    let (requests, connections, closed) =
        (b.requests.clone(), b.connections.clone(), b.closed.clone());
    let mut stopped = b.stop.subscribe();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => break,
                },
                _ = stopped.wait_for(|&s| s) => break,
            };
            let mut conn_stopped = stopped.clone();
            connections.fetch_add(1, Ordering::SeqCst);
            let requests = requests.clone();
            let closed = closed.clone();
            let service = hyper::service::service_fn(move |req| {
                requests.fetch_add(1, Ordering::SeqCst);
                answer(id, req, options.fail_with)
            });
            let tls = tls.clone();
            tokio::spawn(async move {
                let stream: Box<dyn Io> = match tls {
                    None => Box::new(stream),
                    Some(tls) => match tls.accept(stream).await {
                        Ok(stream) => Box::new(stream),
                        Err(_) => {
                            closed.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    },
                };
                let mut builder = auto::Builder::new(TokioExecutor::new());
                if let Some(idle) = options.idle_close {
                    builder
                        .http1()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(idle);
                }
                tokio::select! {
                    _ = builder.serve_connection(TokioIo::new(stream), service) => {}
                    _ = conn_stopped.wait_for(|&s| s) => {}
                }
                closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    b
}

async fn answer(
    id: &'static str,
    req: Request<Incoming>,
    fail_with: Option<u16>,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let mut res = Response::builder().header("x-backend", id);
    // Dynamic answers, as most of a backend's are: a cache must not store them.
    if !path.starts_with("/cacheable/") {
        res = res.header("cache-control", "no-store");
    }
    if let Some(status) = fail_with {
        // Read the request first, as a backend that fails while handling it would.
        let _ = req.into_body().collect().await;
        return Ok(res.status(status).body(full(id)).unwrap());
    }
    if req.headers().contains_key("x-test-hang") {
        // Any path: never answer (a backend that stopped responding).
        return std::future::pending().await;
    }
    let body = match path.as_str() {
        "/headers" => {
            let mut text = String::new();
            for (name, value) in req.headers() {
                text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
            }
            full(text)
        }
        "/hang" => std::future::pending().await,
        "/close" => {
            res = res.header("connection", "close");
            full(id)
        }
        p if p.starts_with("/delay/") => {
            let ms = p["/delay/".len()..].parse().unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            full(id)
        }
        "/upload" => {
            let mut body = req.into_body();
            let mut n = 0usize;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len()),
                    Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
                }
            }
            full(n.to_string())
        }
        "/hop" => {
            res = res
                .header("connection", "x-hop-private")
                .header("x-hop-private", "secret")
                .header("keep-alive", "timeout=5")
                .header("x-end-to-end", "kept");
            full(id)
        }
        p if p.starts_with("/stream/") => streamed(p["/stream/".len()..].parse().unwrap()),
        "/cacheable/versioned" => {
            res = res.header("etag", "\"v1\"");
            if req
                .headers()
                .get("if-none-match")
                .is_some_and(|v| v == "\"v1\"")
            {
                res = res
                    .status(StatusCode::NOT_MODIFIED)
                    .header("cache-control", "max-age=60")
                    .header("x-version", "2");
                full("")
            } else {
                res = res
                    .header("cache-control", "max-age=0")
                    .header("x-version", "1");
                full(id)
            }
        }
        "/targeted" => {
            res = res.header("cdn-cache-control", "max-age=60");
            full(id)
        }
        "/cacheable/ranged" | "/cacheable/ranged/stale" => {
            let max_age = if path.ends_with("/stale") { 0 } else { 60 };
            res = res
                .header("cache-control", format!("public, max-age={max_age}"))
                .header("etag", "\"r1\"")
                .header("content-type", "text/plain");
            let range = req.headers().get("range").and_then(|v| v.to_str().ok());
            let range = range
                .and_then(|r| r.strip_prefix("bytes="))
                .filter(|r| !r.contains(','))
                .and_then(|r| r.split_once('-'));
            match range {
                Some((first, last)) => {
                    let first: usize = first.parse().unwrap();
                    let last = last.parse().unwrap_or(RANGED.len() - 1);
                    let content_range = format!("bytes {first}-{last}/{}", RANGED.len());
                    res = res
                        .status(StatusCode::PARTIAL_CONTENT)
                        .header("content-range", content_range);
                    full(&RANGED[first..=last])
                }
                None => full(RANGED),
            }
        }
        p if p.starts_with("/cacheable/") => {
            let max_age: u64 = p["/cacheable/".len()..].parse().unwrap();
            res = res
                .header("cache-control", format!("public, max-age={max_age}"))
                .header("etag", "\"v1\"");
            full(format!("{id} {}", req.method()))
        }
        p if p.starts_with("/status/") => {
            let code: u16 = p["/status/".len()..].parse().unwrap();
            res = res.status(code);
            full(id)
        }
        _ => full(id),
    };
    Ok(res.body(body).unwrap())
}

fn status(status: StatusCode) -> Response<TestBody> {
    let mut res = Response::new(full(""));
    *res.status_mut() = status;
    res
}

/// A [`Proxy`] with `config` over `backends`, once the balancer has them.
pub async fn proxy_over(config: ProxyConfig, backends: &[&TestBackend]) -> Proxy {
    let proxy = Proxy::new(config);
    for b in backends {
        proxy.add_backend(b.backend()).unwrap();
    }
    proxy.settled().await;
    proxy
}

/// Runs a server on a fresh 127.0.0.1 listener: `serve(listener)` is spawned and lives as
/// long as the test's runtime. Returns where it listens.
pub async fn serve_on_loopback<F>(serve: impl FnOnce(TcpListener) -> F) -> SocketAddr
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener));
    addr
}

/// A switchyard server on 127.0.0.1, stopped when dropped.
#[derive(Debug)]
pub struct TestProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its handle, to change backends.
    pub proxy: Proxy,
    stop: Option<oneshot::Sender<()>>,
    /// Resolves when the server has shut down.
    pub done: Option<tokio::task::JoinHandle<()>>,
}

/// The default configuration without active health checks: their connections would show
/// in the tests' accept counts at a random moment. Tests of health checks turn them on.
pub fn config() -> ProxyConfig {
    let mut config = ProxyConfig::default();
    config.health.enabled = false;
    config
}

impl TestProxy {
    /// Starts the server with `config` over `backends`, and waits until the balancer has
    /// them.
    pub async fn start(
        config: ProxyConfig,
        server: ServerConfig,
        backends: &[&TestBackend],
    ) -> Self {
        let proxy = proxy_over(config, backends).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(switchyard_server::serve(
            listener,
            proxy.clone(),
            server,
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            proxy,
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// Starts with `config` over `backends` added at run time (as the admin API adds
    /// them), once they are routed.
    pub async fn over(config: ProxyConfig, backends: impl IntoIterator<Item = Backend>) -> Self {
        let proxy = Self::start(config, ServerConfig::default(), &[]).await;
        for b in backends {
            proxy.proxy.add_backend(b).unwrap();
        }
        proxy.proxy.settled().await;
        proxy
    }

    /// Starts with default settings.
    pub async fn with(backends: &[&TestBackend]) -> Self {
        Self::start(config(), ServerConfig::default(), backends).await
    }

    /// The ids of the proxy's backends, in its order.
    pub fn backend_ids(&self) -> Vec<String> {
        self.proxy
            .list_backends()
            .into_iter()
            .map(|b| b.id)
            .collect()
    }

    /// The URL of `path` on the proxy.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Signals shutdown (as SIGTERM does).
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// An HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// An HTTP/2 (prior knowledge) client.
pub fn h2_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// GETs `url`, returning status, `x-backend` and the body as text.
pub async fn get(
    client: &Client<HttpConnector, TestBody>,
    url: &str,
) -> (StatusCode, String, String) {
    send(client, Request::get(url).body(full("")).unwrap()).await
}

/// GETs `/` through `proxy` `n` times, each answered 200, and counts the answers by the
/// backend that gave them (`x-backend`).
pub async fn tally(proxy: &TestProxy, n: usize) -> HashMap<String, usize> {
    let client = client();
    let mut seen = HashMap::new();
    for _ in 0..n {
        let (status, backend, _) = get(&client, &proxy.url("/")).await;
        assert_eq!(status, StatusCode::OK);
        *seen.entry(backend).or_default() += 1;
    }
    seen
}

/// GETs of one URL sent in the background by several clients at once, each sending its
/// share one after another; counts those sent and those not answered 200.
#[derive(Debug)]
pub struct BackgroundGets {
    sent: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl BackgroundGets {
    /// Starts `clients` clients, each sending `each` GETs of `url`.
    pub fn start(url: &str, clients: usize, each: usize) -> Self {
        let sent = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let clients = (0..clients)
            .map(|_| {
                let (url, sent, failed) = (url.to_owned(), sent.clone(), failed.clone());
                tokio::spawn(async move {
                    let client = client();
                    for _ in 0..each {
                        let (status, _, _) = get(&client, &url).await;
                        sent.fetch_add(1, Ordering::SeqCst);
                        if status != StatusCode::OK {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        Self {
            sent,
            failed,
            clients,
        }
    }

    /// Waits until at least `n` requests have been answered.
    pub async fn until_sent(&self, n: usize) {
        while self.sent.load(Ordering::SeqCst) < n {
            tokio::task::yield_now().await;
        }
    }

    /// Waits for every client to finish; returns the requests sent and those that failed.
    pub async fn finish(self) -> (usize, usize) {
        for client in self.clients {
            client.await.unwrap();
        }
        (
            self.sent.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

/// Sends `req`, returning status, `x-backend` and the body as text.
pub async fn send(
    client: &Client<HttpConnector, TestBody>,
    req: Request<TestBody>,
) -> (StatusCode, String, String) {
    send_reading(client, req, "x-backend").await
}

/// Sends `req`, returning status, the response's `header` (empty when it has none) and
/// the body as text.
pub async fn send_reading(
    client: &Client<HttpConnector, TestBody>,
    req: Request<TestBody>,
    header: &str,
) -> (StatusCode, String, String) {
    let res = client.request(req).await.expect("the proxy answers");
    let status = res.status();
    let value = res
        .headers()
        .get(header)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, value, String::from_utf8_lossy(&body).into_owned())
}

/// Sends `request` as it is, bytes for bytes, on a fresh connection to `addr` (so that no
/// client normalises it), and returns the response head, lower-cased, and its status.
/// Bounded: gives up after 10 s.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    use tokio::io::AsyncWriteExt;

    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(request).await.unwrap();
        read_head(&mut conn).await
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
        .await
        .expect("an answer within 10 s")
}

/// Reads a response head from `conn` byte by byte (nothing past it), up to the end of the
/// stream or an error; returns its status and the head, lower-cased.
pub async fn read_head(conn: &mut (impl tokio::io::AsyncRead + Unpin)) -> (u16, String) {
    use tokio::io::AsyncReadExt;

    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    (status, head)
}

/// A backend for fault tests: HTTP/1.1 on a loopback port that can be killed (listener
/// closed, every connection reset), restarted on the same port, and slowed at run time.
/// It answers `/health` at once and any other path after the current delay, with its id
/// in `x-backend`, and counts requests per path across restarts.
#[derive(Debug)]
pub struct FaultBackend {
    id: &'static str,
    addr: SocketAddr,
    state: Arc<FaultState>,
    running: Option<Running>,
}

#[derive(Debug, Default)]
struct FaultState {
    delay_ms: std::sync::atomic::AtomicU64,
    total: AtomicUsize,
    // A test backend's bookkeeping, not a proxy's request path: a short lock is simplest.
    #[allow(clippy::disallowed_types)]
    per_path: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

#[derive(Debug)]
struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultBackend {
    /// Starts on an ephemeral 127.0.0.1 port.
    pub async fn start(id: &'static str) -> Self {
        Self::start_on(id, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts one backend per id, in order, each on an ephemeral 127.0.0.1 port.
    pub async fn start_all<const N: usize>(ids: [&'static str; N]) -> [Self; N] {
        let mut started = Vec::with_capacity(N);
        for id in ids {
            started.push(Self::start(id).await);
        }
        started
            .try_into()
            .unwrap_or_else(|_| unreachable!("one backend per id"))
    }

    /// Starts on `addr` (port 0: an ephemeral one).
    pub async fn start_on(id: &'static str, addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let mut b = Self {
            id,
            addr: listener.local_addr().unwrap(),
            state: Arc::default(),
            running: None,
        };
        b.running = Some(b.serve(listener));
        b
    }

    /// Where it listens (or listened, while killed).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A [`Backend`] entry for it, with its id.
    pub fn backend(&self) -> Backend {
        Backend::new(self.id, format!("http://{}", self.addr).parse().unwrap())
    }

    /// Whether it is serving (started or restarted, and not killed since).
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Makes every request but `/health` wait `delay` before its answer, from the next
    /// request on.
    pub fn set_delay(&self, delay: std::time::Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Requests received for `path`, over every run.
    pub fn requests(&self, path: &str) -> usize {
        let counts = self.state.per_path.lock().unwrap();
        counts.get(path).copied().unwrap_or(0)
    }

    /// Requests received, over every run.
    pub fn total_requests(&self) -> usize {
        self.state.total.load(Ordering::SeqCst)
    }

    /// Crashes it: the listener is closed (connections are refused) and every open
    /// connection is reset, requests in flight included. Returns once all that is done.
    pub async fn kill(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop.send_replace(true);
            let _ = running.task.await;
        }
    }

    /// Serves again on the same port, with the same counts and delay.
    pub async fn restart(&mut self) {
        self.kill().await;
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.running = Some(self.serve(listener));
    }

    fn serve(&self, listener: TcpListener) -> Running {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (id, state) = (self.id, self.state.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let mut stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                    _ = stopped.wait_for(|&s| s) => break,
                };
                let mut conn_stopped = stopped.clone();
                let state = state.clone();
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        fault_answer(id, state.clone(), req)
                    });
                    let killed = tokio::select! {
                        _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(&mut stream), service) => false,
                        _ = conn_stopped.wait_for(|&s| s) => true,
                    };
                    if killed {
                        // Dropped with a zero linger: the peer sees a reset, as after a crash.
                        let _ = stream.set_zero_linger();
                    }
                });
            }
            drop(listener);
            while conns.join_next().await.is_some() {}
        });
        Running { stop, task }
    }
}

impl Drop for FaultBackend {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.stop.send_replace(true);
        }
    }
}

async fn fault_answer(
    id: &'static str,
    state: Arc<FaultState>,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_owned();
    state.total.fetch_add(1, Ordering::SeqCst);
    *state
        .per_path
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default() += 1;
    if path != "/health" {
        let delay = state.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
    }
    let _ = req.into_body().collect().await;
    Ok(Response::builder()
        .header("x-backend", id)
        .header("cache-control", "no-store")
        .body(full(id))
        .unwrap())
}

/// What [`load`] sends: `GET path` on `connections` connections at once to `addr`, each
/// request after the previous answer on its connection, until `duration` has passed or
/// `max_requests` were sent.
#[derive(Debug, Clone)]
pub struct Load {
    /// Where to send.
    pub addr: SocketAddr,
    /// The path requested.
    pub path: String,
    /// Connections, each carrying one request at a time.
    pub connections: usize,
    /// How long to keep sending.
    pub duration: std::time::Duration,
    /// Requests to send at most (failed ones included).
    pub max_requests: usize,
    /// A request not answered within this long counts as an error.
    pub request_timeout: std::time::Duration,
    /// The width of the time buckets completions are counted in.
    pub bucket: std::time::Duration,
}

impl Load {
    /// `GET path` to `addr` on 4 connections, for at most 5 s and 200 requests, each
    /// bounded by 5 s, counted in 100 ms buckets.
    pub fn new(addr: SocketAddr, path: &str) -> Self {
        Self {
            addr,
            path: path.to_owned(),
            connections: 4,
            duration: std::time::Duration::from_secs(5),
            max_requests: 200,
            request_timeout: std::time::Duration::from_secs(5),
            bucket: std::time::Duration::from_millis(100),
        }
    }
}

/// What [`load`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Responses by status code.
    pub statuses: std::collections::BTreeMap<u16, usize>,
    /// Requests that got no response: refused or reset connections, timeouts.
    pub errors: usize,
    /// The longest a request took to be answered (or to fail).
    pub max_latency: std::time::Duration,
    /// Requests completed (answered or failed) in each `bucket` from the start.
    pub completions: Vec<usize>,
}

impl LoadReport {
    /// Responses with `status`.
    pub fn count(&self, status: u16) -> usize {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// Responses of any status.
    pub fn responses(&self) -> usize {
        self.statuses.values().sum()
    }

    fn merge(&mut self, other: Self) {
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.errors += other.errors;
        self.max_latency = self.max_latency.max(other.max_latency);
        if self.completions.len() < other.completions.len() {
            self.completions.resize(other.completions.len(), 0);
        }
        for (mine, theirs) in self.completions.iter_mut().zip(other.completions) {
            *mine += theirs;
        }
    }
}

/// Sends the bounded load `spec` describes and reports what came back. A connection that
/// fails is opened again for the next request (after 10 ms, so a refusing port is not
/// hammered).
pub async fn load(spec: &Load) -> LoadReport {
    let start = tokio::time::Instant::now();
    let deadline = start + spec.duration;
    let sent = Arc::new(AtomicUsize::new(0));
    let buckets = usize::try_from(spec.duration.as_nanos().div_ceil(spec.bucket.as_nanos()))
        .unwrap_or(usize::MAX)
        .max(1);
    let workers: Vec<_> = (0..spec.connections)
        .map(|_| {
            let (spec, sent) = (spec.clone(), sent.clone());
            tokio::spawn(async move {
                let mut report = LoadReport {
                    completions: vec![0; buckets],
                    ..LoadReport::default()
                };
                let mut conn = None;
                while tokio::time::Instant::now() < deadline
                    && sent.fetch_add(1, Ordering::SeqCst) < spec.max_requests
                {
                    let begun = tokio::time::Instant::now();
                    let answered =
                        tokio::time::timeout(spec.request_timeout, one_request(&spec, &mut conn))
                            .await;
                    let now = tokio::time::Instant::now();
                    report.max_latency = report.max_latency.max(now - begun);
                    let bucket = ((now - start).as_nanos() / spec.bucket.as_nanos()) as usize;
                    report.completions[bucket.min(buckets - 1)] += 1;
                    match answered {
                        Ok(Ok(status)) => *report.statuses.entry(status).or_default() += 1,
                        _ => {
                            report.errors += 1;
                            conn = None;
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        }
                    }
                }
                report
            })
        })
        .collect();
    let mut total = LoadReport {
        completions: vec![0; buckets],
        ..LoadReport::default()
    };
    for worker in workers {
        total.merge(worker.await.expect("a load worker panicked"));
    }
    total
}

type LoadConn = hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>;

/// One request of [`load`] on `conn`, opened first if need be.
async fn one_request(spec: &Load, conn: &mut Option<LoadConn>) -> Result<u16, LoadError> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        let stream = tokio::net::TcpStream::connect(spec.addr).await?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        *conn = Some(sender);
    }
    let sender = conn.as_mut().expect("just opened");
    sender.ready().await?;
    let req = Request::get(spec.path.as_str())
        .header(http::header::HOST, spec.addr.to_string())
        .body(http_body_util::Empty::new())
        .expect("a valid request");
    let res = sender.send_request(req).await?;
    let status = res.status().as_u16();
    res.into_body().collect().await?;
    Ok(status)
}

/// Why one request of [`load`] failed.
#[derive(Debug)]
enum LoadError {
    Io,
    Http,
}

impl From<std::io::Error> for LoadError {
    fn from(_: std::io::Error) -> Self {
        Self::Io
    }
}

impl From<hyper::Error> for LoadError {
    fn from(_: hyper::Error) -> Self {
        Self::Http
    }
}
