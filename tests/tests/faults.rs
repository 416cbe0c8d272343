//! Requests built to confuse one hop about another's idea of the origin or the protocol,
//! sent as raw bytes through the whole stack on real sockets: a malformed or ambiguous
//! `Host` is answered 400 before any backend sees it, and an `h2c` upgrade never reaches a
//! backend, while WebSocket still does. Also checks that the fault-test helpers
//! (`FaultBackend`, `load`) do what they claim.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard::{Backend, ProxyConfig};
use switchyard_server::ServerConfig;
use switchyard_tests::{
    backend, config, load, raw_exchange, FaultBackend, Load, TestBackend, TestProxy,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Every exchange here is bounded by this.
const BOUND: Duration = Duration::from_secs(10);

/// A proxy (keeping the client's `Host`) over one test backend.
async fn host_proxy() -> (TestBackend, TestProxy) {
    let b = backend("origin").await;
    let proxy = TestProxy::with(&[&b]).await;
    (b, proxy)
}

#[tokio::test]
async fn an_ambiguous_or_malformed_host_is_refused_before_any_backend() {
    let (b, proxy) = host_proxy().await;
    let refused: [&[u8]; 12] = [
        b"GET /headers HTTP/1.1\r\nHost: a, b\r\n\r\n",
        b"GET /headers HTTP/1.1\r\nHost: user@host\r\n\r\n",
        b"GET /headers HTTP/1.1\r\nHost: host/path\r\n\r\n",
        b"GET /headers HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET /headers HTTP/1.1\r\nHost: a\tb\r\n\r\n",
        b"GET /headers HTTP/1.1\r\nHost:\r\n\r\n",
        b"GET /headers HTTP/1.1\r\nHost: host:99999\r\n\r\n",
        b"GET /headers HTTP/1.1\r\nHost: host:\r\n\r\n",
        b"GET /headers HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        b"GET /headers HTTP/1.1\r\n\r\n",
        b"GET http://a.example/headers HTTP/1.1\r\nHost: b.example\r\n\r\n",
        b"GET http://user@a.example/headers HTTP/1.1\r\nHost: a.example\r\n\r\n",
    ];
    for request in refused {
        let (status, head) = raw_exchange(proxy.addr, request).await;
        let shown = String::from_utf8_lossy(request);
        assert_eq!(status, 400, "{shown:?} got {head}");
        // hyper's parser takes every one of these (its own 400s carry no such header): the
        // refusal is the stack's strict Host check.
        assert!(
            head.contains("cache-control: no-store"),
            "{shown:?} got {head}"
        );
    }
    assert_eq!(
        b.request_count(),
        0,
        "a refused request reached the backend"
    );
}

#[tokio::test]
async fn a_valid_host_reaches_the_backend_as_sent() {
    let mut raw = RawBackend::start().await;
    let proxy = proxy_over_raw(&raw, &["websocket"]).await;
    let passed = [
        ("GET / HTTP/1.1", Some("[::1]:8080")),
        ("GET / HTTP/1.1", Some("[2001:db8::1]")),
        ("GET / HTTP/1.1", Some("example.com:80")),
        ("GET / HTTP/1.1", Some("127.0.0.1")),
        ("GET / HTTP/1.1", Some("EXAMPLE.com")),
        ("GET http://a.example/x HTTP/1.1", Some("a.example")),
        // HTTP/1.0 need not name a host.
        ("GET / HTTP/1.0", None),
    ];
    for (line, host) in passed {
        let host_line = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
        let request = format!("{line}\r\n{host_line}\r\n");
        let (status, head) = raw_exchange(proxy.addr, request.as_bytes()).await;
        assert_eq!(status, 200, "{request:?} got {head}");
    }
    let heads = raw.heads();
    assert_eq!(heads.len(), passed.len(), "{heads:?}");
    for ((line, host), head) in passed.iter().zip(&heads) {
        // Without one, the backend is sent its own authority.
        let expected = host.map_or_else(|| raw.addr.to_string(), str::to_owned);
        assert_eq!(
            header_value(head, "host"),
            Some(&*expected),
            "{line}: {head}"
        );
    }
}

/// Sends `req` over HTTP/2 (prior knowledge) on a connection of its own to `addr`;
/// returns the status and the body, or the error the stream ended with.
async fn h2_exchange(
    addr: SocketAddr,
    req: Request<Empty<Bytes>>,
) -> Result<(StatusCode, String), hyper::Error> {
    let exchange = async {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(conn);
        let res = sender.send_request(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(BOUND, exchange)
        .await
        .expect("an answer within the bound")
}

#[tokio::test]
async fn an_http2_authority_is_held_to_the_same_rule() {
    let (b, proxy) = host_proxy().await;

    // hyper's HTTP/2 server takes both of these as they are (the `http` crate's authority
    // allows userinfo, and nothing below the stack compares `host` with `:authority`), so
    // it is the strict Host layer that answers 400.
    let userinfo = Request::get("http://user@a.example/headers")
        .body(Empty::new())
        .unwrap();
    let (status, _) = h2_exchange(proxy.addr, userinfo).await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let two_names = Request::get("http://a.example/headers")
        .header(header::HOST, "other.example")
        .body(Empty::new())
        .unwrap();
    let (status, _) = h2_exchange(proxy.addr, two_names).await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        b.request_count(),
        0,
        "a refused request reached the backend"
    );

    let named = Request::get("http://a.example/headers")
        .body(Empty::new())
        .unwrap();
    let (status, body) = h2_exchange(proxy.addr, named).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\nhost: a.example\n"), "{body}");
    assert_eq!(b.request_count(), 1);
}

/// A backend on raw sockets that records the head of every request it reads and answers
/// `200 ok`, but switches protocols whenever asked: to `h2c` with a bare `101` (counted in
/// `switched`; then it closes), to WebSocket with a real handshake and an echo session. On
/// `/h2c-anyway` it switches to `h2c` whatever the request asked for, as no backend may.
#[derive(Debug)]
struct RawBackend {
    addr: SocketAddr,
    heads: mpsc::UnboundedReceiver<String>,
    switched: Arc<AtomicUsize>,
}

impl RawBackend {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen, heads) = mpsc::unbounded_channel();
        let switched = Arc::new(AtomicUsize::new(0));
        let counter = switched.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(raw_connection(stream, seen.clone(), counter.clone()));
            }
        });
        Self {
            addr,
            heads,
            switched,
        }
    }

    fn backend(&self) -> Backend {
        Backend::new("raw", format!("http://{}", self.addr).parse().unwrap())
    }

    /// The request heads received so far.
    fn heads(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.heads.try_recv().ok()).collect()
    }
}

/// Reads one head (up to the blank line) byte by byte, so nothing after it is consumed;
/// `None` at the end of the stream.
async fn read_head(io: &mut (impl AsyncRead + Unpin)) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        match io.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// The value of header `name` in `head` (names compared without ASCII case).
fn header_value<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn raw_connection(
    mut stream: TcpStream,
    seen: mpsc::UnboundedSender<String>,
    switched: Arc<AtomicUsize>,
) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{handshake::derive_accept_key, protocol::Role};

    while let Some(head) = read_head(&mut stream).await {
        let _ = seen.send(head.clone());
        let mut upgrade = header_value(&head, "upgrade").map(str::to_ascii_lowercase);
        if head.starts_with("GET /h2c-anyway ") {
            upgrade = Some("h2c".to_owned());
        }
        match upgrade.as_deref() {
            Some("h2c") => {
                let switch = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
                let _ = stream.write_all(switch.as_bytes()).await;
                switched.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Some("websocket") => {
                let key = header_value(&head, "sec-websocket-key").unwrap_or_default();
                let accept = derive_accept_key(key.as_bytes());
                let switch = format!("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n");
                if stream.write_all(switch.as_bytes()).await.is_err() {
                    return;
                }
                let mut ws =
                    tokio_tungstenite::WebSocketStream::from_raw_socket(stream, Role::Server, None)
                        .await;
                while let Some(Ok(message)) = ws.next().await {
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err()
                    {
                        break;
                    }
                }
                return;
            }
            _ => {
                let ok =
                    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: no-store\r\n\r\nok";
                if stream.write_all(ok.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A proxy over `raw`, forwarding upgrades to `protocols`.
async fn proxy_over_raw(raw: &RawBackend, protocols: &[&str]) -> TestProxy {
    let config = ProxyConfig {
        upgrade_protocols: protocols.iter().map(|p| (*p).to_owned()).collect(),
        ..config()
    };
    let proxy = TestProxy::start(config, ServerConfig::default(), &[]).await;
    proxy.proxy.add_backend(raw.backend()).unwrap();
    proxy.proxy.settled().await;
    proxy
}

const H2C_UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: h2c.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";

/// Sends the `h2c` upgrade through `proxy` and checks it was answered as a plain request,
/// that the backend saw it without its upgrade and never switched, and that the client's
/// connection goes on carrying HTTP/1.1.
async fn h2c_is_never_forwarded(raw: &mut RawBackend, proxy: &TestProxy) {
    let exchange = async {
        let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
        conn.write_all(H2C_UPGRADE).await.unwrap();
        let head = read_head(&mut conn).await.expect("a response head");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(header_value(&head, "upgrade"), None, "{head}");
        let mut body = [0u8; 2];
        conn.read_exact(&mut body).await.unwrap();
        assert_eq!(&body, b"ok");

        conn.write_all(b"GET /next HTTP/1.1\r\nHost: h2c.test\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut conn).await.expect("a second response head");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    };
    tokio::time::timeout(BOUND, exchange)
        .await
        .expect("answers within the bound");

    let heads = raw.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    for head in &heads {
        assert_eq!(header_value(head, "upgrade"), None, "{head}");
        assert_eq!(header_value(head, "http2-settings"), None, "{head}");
        let connection = header_value(head, "connection").unwrap_or_default();
        assert!(!connection.to_lowercase().contains("upgrade"), "{head}");
    }
    assert_eq!(
        raw.switched.load(Ordering::SeqCst),
        0,
        "the backend switched"
    );
}

#[tokio::test]
async fn an_h2c_upgrade_never_reaches_the_backend() {
    let mut raw = RawBackend::start().await;
    let proxy = proxy_over_raw(&raw, &["websocket"]).await;
    h2c_is_never_forwarded(&mut raw, &proxy).await;
}

/// Listing `h2c` among the allowed upgrades does not let it through, and WebSocket through
/// the same proxy still works.
#[tokio::test]
async fn h2c_is_refused_even_when_listed_while_websocket_works() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let mut raw = RawBackend::start().await;
    let proxy = proxy_over_raw(&raw, &["websocket", "h2c"]).await;
    h2c_is_never_forwarded(&mut raw, &proxy).await;

    let session = async {
        let url = format!("ws://{}/chat", proxy.addr);
        let (mut ws, res) = tokio_tungstenite::connect_async(url).await.unwrap();
        assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
        ws.send(Message::text("hello")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
        ws.close(None).await.unwrap();
    };
    tokio::time::timeout(BOUND, session)
        .await
        .expect("a session within the bound");
    let heads = raw.heads();
    let upgrade = heads.last().expect("the backend saw the handshake");
    let protocol = header_value(upgrade, "upgrade").unwrap_or_default();
    assert!(protocol.eq_ignore_ascii_case("websocket"), "{upgrade}");
}

/// A backend that switches protocols when it must not, to a request whose upgrade the
/// proxy removed or to another protocol than the one asked for, gets its `101` turned
/// into `502`: the client is not told of a switch, and nothing is joined.
#[tokio::test]
async fn a_switch_the_proxy_cannot_follow_is_a_bad_gateway() {
    let mut raw = RawBackend::start().await;
    let proxy = proxy_over_raw(&raw, &["websocket", "h2c"]).await;
    let websocket = b"GET /h2c-anyway HTTP/1.1\r\nHost: h2c.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let h2c = [
        b"GET /h2c-anyway".as_slice(),
        &H2C_UPGRADE[b"GET /".len()..],
    ]
    .concat();
    let plain = b"GET /h2c-anyway HTTP/1.1\r\nHost: h2c.test\r\n\r\n";
    for request in [websocket.as_slice(), &h2c, plain] {
        let (status, head) = raw_exchange(proxy.addr, request).await;
        assert_eq!(status, 502, "{head}");
        assert!(!head.contains("upgrade"), "{head}");
    }
    assert_eq!(raw.switched.load(Ordering::SeqCst), 3);
    assert_eq!(raw.heads().len(), 3);
    assert_eq!(proxy.proxy.tunnel_stats().total, 0);
}

/// A proxy over `fault`.
async fn proxy_over_fault(fault: &FaultBackend) -> TestProxy {
    let proxy = TestProxy::start(config(), ServerConfig::default(), &[]).await;
    proxy.proxy.add_backend(fault.backend()).unwrap();
    proxy.proxy.settled().await;
    proxy
}

/// `GET path` on a connection of its own to `addr`, bounded; the status.
async fn status_of(addr: SocketAddr, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    raw_exchange(addr, request.as_bytes()).await.0
}

#[tokio::test]
async fn a_killed_fault_backend_refuses_and_a_restarted_one_serves_on_its_port() {
    let mut fault = FaultBackend::start("fault").await;
    let addr = fault.addr();
    assert_eq!(status_of(addr, "/x").await, 200);

    fault.kill().await;
    assert!(!fault.is_running());
    let refused = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

    fault.restart().await;
    assert!(fault.is_running());
    assert_eq!(fault.addr(), addr);
    assert_eq!(status_of(addr, "/x").await, 200);
    assert_eq!(fault.requests("/x"), 2);
}

#[tokio::test]
async fn a_slowed_fault_backend_delays_proxied_requests_but_not_health() {
    let delay = Duration::from_millis(300);
    let fault = FaultBackend::start("fault").await;
    let proxy = proxy_over_fault(&fault).await;
    fault.set_delay(delay);

    let begun = tokio::time::Instant::now();
    assert_eq!(status_of(proxy.addr, "/slow").await, 200);
    assert!(begun.elapsed() >= delay, "{:?}", begun.elapsed());

    let begun = tokio::time::Instant::now();
    assert_eq!(status_of(fault.addr(), "/health").await, 200);
    assert!(begun.elapsed() < delay, "{:?}", begun.elapsed());
    assert_eq!(fault.requests("/slow"), 1);
    assert_eq!(fault.requests("/health"), 1);
}

#[tokio::test]
async fn load_reports_what_it_sent() {
    let fault = FaultBackend::start("fault").await;
    let proxy = proxy_over_fault(&fault).await;
    let spec = Load {
        max_requests: 40,
        duration: BOUND,
        ..Load::new(proxy.addr, "/load")
    };
    let report = load(&spec).await;
    assert_eq!(report.count(200), 40, "{report:?}");
    assert_eq!(report.responses(), 40, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.completions.iter().sum::<usize>(), 40, "{report:?}");
    assert_eq!(fault.requests("/load"), 40);

    // With the backend gone every request still gets an answer, an error status (after
    // about a second of retries with backoff: one request per connection keeps this
    // short); the counts per status add up to what was sent.
    let mut fault = fault;
    fault.kill().await;
    let gone = Load {
        connections: 8,
        max_requests: 8,
        ..spec
    };
    let report = load(&gone).await;
    assert_eq!(report.responses(), 8, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.count(502) + report.count(503), 8, "{report:?}");
    assert_eq!(report.completions.iter().sum::<usize>(), 8, "{report:?}");

    // Straight at the killed port, every request is a connection error.
    let report = load(&Load {
        max_requests: 8,
        ..Load::new(fault.addr(), "/load")
    })
    .await;
    assert_eq!(report.errors, 8, "{report:?}");
    assert_eq!(report.responses(), 0, "{report:?}");
}
