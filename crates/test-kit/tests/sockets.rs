//! What needs real sockets: a protocol upgrade and its scripted tunnel (through the whole
//! proxy served by switchyard's server), a backend killed and restarted on its port, and,
//! with the `tls` feature, HTTPS backends behind a proxy that trusts their CA.

use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use switchyard::{Backend, Health, Proxy, ProxyConfig};
use switchyard_server::ServerConfig;
use switchyard_test::{send, Script, ScriptedBackend, Step, Tunnel, Tunnelled};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Every exchange here is bounded by this.
const BOUND: Duration = Duration::from_secs(10);

/// A WebSocket handshake, as a browser sends it.
const HANDSHAKE: &[u8] = b"GET /chat HTTP/1.1\r\nHost: chat.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// The proxy's defaults without what would answer or check on its own: no health checks,
/// no breaker, no cache.
fn config() -> ProxyConfig {
    let mut config = ProxyConfig::default();
    config.health.enabled = false;
    config.breaker.enabled = false;
    config.cache = None;
    config
}

async fn proxy_over(backends: &[&ScriptedBackend], config: ProxyConfig) -> Proxy {
    let proxy = Proxy::new(config);
    for b in backends {
        proxy.add_backend(Backend::new(b.name(), b.url())).unwrap();
    }
    proxy.settled().await;
    proxy
}

/// Serves `proxy` with switchyard's server on a port of 127.0.0.1, for as long as the
/// test runs.
async fn serve(proxy: Proxy) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(switchyard_server::serve(
        listener,
        proxy,
        ServerConfig::default(),
        std::future::pending(),
    ));
    addr
}

/// Reads a response head byte by byte (nothing past it), lower-cased.
async fn read_head(io: &mut (impl AsyncRead + Unpin)) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        match io.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            other => panic!("the head broke off after {head:?}: {other:?}"),
        }
    }
    String::from_utf8_lossy(&head).to_lowercase()
}

/// Connects to `addr`, sends the handshake and reads the head of the answer.
async fn handshake(addr: SocketAddr) -> (TcpStream, String) {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(HANDSHAKE).await.unwrap();
    let head = read_head(&mut conn).await;
    (conn, head)
}

/// The tunnel the first request `backend` received opened, once `done` says it is as
/// awaited (it is recorded as the backend goes: a client can be done a moment before).
async fn tunnel_of(backend: &ScriptedBackend, done: impl Fn(&Tunnelled) -> bool) -> Tunnelled {
    let wait = async {
        loop {
            let seen = backend.requests();
            if let Some(t) = seen.first().and_then(|s| s.tunnel.clone()) {
                if done(&t) {
                    return t;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    timeout(BOUND, wait)
        .await
        .unwrap_or_else(|_| panic!("{}", backend.journal().describe()))
}

mod upgrades {
    use super::*;

    #[tokio::test]
    async fn a_websocket_upgrade_through_the_proxy_reaches_the_tunnel_and_echoes() {
        let tunnel = Tunnel::echo().first("hello\n");
        let b = ScriptedBackend::bind("chat", Script::always(Step::upgrade(tunnel))).await;
        let proxy = proxy_over(&[&b], config()).await;
        let addr = serve(proxy.clone()).await;

        let session = async {
            let (mut conn, head) = handshake(addr).await;
            assert!(head.starts_with("http/1.1 101"), "{head}");
            assert!(head.contains("upgrade: websocket"), "{head}");
            let mut greeting = [0u8; 6];
            conn.read_exact(&mut greeting).await.unwrap();
            assert_eq!(&greeting, b"hello\n");
            conn.write_all(b"ping").await.unwrap();
            let mut echo = [0u8; 4];
            conn.read_exact(&mut echo).await.unwrap();
            assert_eq!(&echo, b"ping");
            // Closing our side closes the tunnel end to end.
            conn.shutdown().await.unwrap();
            let mut rest = Vec::new();
            conn.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty(), "{rest:?}");
        };
        timeout(BOUND, session)
            .await
            .expect("a session within the bound");

        b.assert_requests(1);
        let tunnel = tunnel_of(&b, |t| t.closed).await;
        assert_eq!(tunnel.protocol, "websocket");
        assert_eq!(tunnel.received, b"ping");
        assert_eq!(tunnel.sent, b"hello\nping");
        assert_eq!(proxy.tunnel_stats().total, 1);
    }

    #[tokio::test]
    async fn a_tunnel_closes_after_its_bytes_or_says_its_piece_and_closes() {
        let b = ScriptedBackend::bind(
            "b",
            Script::new([
                Step::upgrade(Tunnel::echo().close_after(4)),
                Step::upgrade(Tunnel::send("bye")),
            ]),
        )
        .await;
        let session = async {
            let (mut conn, head) = handshake(b.addr()).await;
            assert!(head.starts_with("http/1.1 101"), "{head}");
            conn.write_all(b"abcd").await.unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"abcd", "echoed up to the limit, then closed");

            let (mut conn, head) = handshake(b.addr()).await;
            assert!(head.starts_with("http/1.1 101"), "{head}");
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"bye");
        };
        timeout(BOUND, session)
            .await
            .expect("both within the bound");
        let tunnels: Vec<_> = b.requests().into_iter().map(|s| s.tunnel).collect();
        assert_eq!(tunnels.len(), 2);
        assert_eq!(tunnels[0].as_ref().unwrap().received, b"abcd");
        assert_eq!(tunnels[1].as_ref().unwrap().sent, b"bye");
    }

    /// A silent tunnel reads and says nothing; killing the backend resets it, and once
    /// restarted it switches the next connection again.
    #[tokio::test]
    async fn a_silent_tunnel_holds_until_the_backend_is_killed() {
        let b =
            ScriptedBackend::bind("quiet", Script::always(Step::upgrade(Tunnel::silent()))).await;
        let (mut conn, head) = timeout(BOUND, handshake(b.addr())).await.unwrap();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        conn.write_all(b"anyone?").await.unwrap();
        let mut byte = [0u8; 1];
        let quiet = timeout(Duration::from_millis(300), conn.read(&mut byte)).await;
        assert!(quiet.is_err(), "the silent tunnel answered: {quiet:?}");
        let tunnel = tunnel_of(&b, |t| t.received == b"anyone?").await;
        assert!(!tunnel.closed && tunnel.sent.is_empty(), "{tunnel:?}");

        b.kill().await;
        let ended = timeout(BOUND, conn.read(&mut byte)).await.unwrap();
        assert!(matches!(ended, Ok(0) | Err(_)), "{ended:?}");
        assert!(tunnel_of(&b, |t| t.closed).await.closed);

        b.restart().await;
        let (_conn, head) = timeout(BOUND, handshake(b.addr())).await.unwrap();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        b.assert_requests(2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_without_an_upgrade_is_told_to_ask_for_one() {
        let b = ScriptedBackend::new("b", Script::always(Step::upgrade(Tunnel::echo())));
        let plain = Request::get("/chat").body(String::new()).unwrap();
        send(b.clone(), plain).await.unwrap().assert_status(426);
        // In process the switch is answered, with no connection to run a tunnel on.
        let asking = Request::get("/chat")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(String::new())
            .unwrap();
        let got = send(b.clone(), asking).await.unwrap();
        got.assert_status(101).assert_backend("b");
        assert_eq!(got.headers["upgrade"], "websocket");
        let tunnels: Vec<_> = b.requests().into_iter().map(|s| s.tunnel).collect();
        assert!(tunnels[0].is_none());
        assert_eq!(tunnels[1].as_ref().unwrap().protocol, "websocket");
    }
}

/// A backend killed as its process would be (listener closed, connections reset) and
/// started again on its port: the proxy over it sees the outage and the recovery.
#[tokio::test(start_paused = true)]
async fn a_killed_backend_is_an_outage_until_it_is_restarted_on_its_port() {
    let b = ScriptedBackend::bind("b", Script::always(Step::ok().body("up"))).await;
    let mut config = config();
    config.health.enabled = true;
    // Long: only `check_now` checks during the test.
    config.health.interval = Duration::from_secs(3600);
    config.health.fall = 1;
    config.health.rise = 1;
    let proxy = proxy_over(&[&b], config).await;
    let get = || {
        Request::get("http://app.example/")
            .body(String::new())
            .unwrap()
    };
    let health = |report: switchyard::HealthReport| report.get("b").unwrap().health;

    let got = send(proxy.clone(), get()).await.unwrap();
    got.assert_status(200).assert_backend("b");
    let addr = b.addr();

    b.kill().await;
    assert!(!b.is_running());
    let refused = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    let down = send(proxy.clone(), get()).await.unwrap();
    assert!(down.status.is_server_error(), "{down:?}");
    assert_eq!(health(proxy.check_now().await), Health::Unhealthy);

    b.restart().await;
    assert!(b.is_running());
    assert_eq!(b.addr(), addr);
    assert_eq!(health(proxy.check_now().await), Health::Healthy);
    let up = send(proxy.clone(), get()).await.unwrap();
    up.assert_status(200).assert_backend("b");
    assert_eq!(up.text(), "up");

    // One request before the outage, one after it on a new connection.
    b.assert_requests(2);
    let conns: Vec<_> = b.requests().iter().map(|s| s.connection).collect();
    assert!(conns[1] > conns[0], "{}", b.journal().describe());
}

#[cfg(feature = "tls")]
mod https {
    use super::*;
    use switchyard_test::Ca;

    /// The proxy reaches an HTTPS backend whose CA it trusts; one that trusts only the
    /// public roots is refused at the handshake and answers 502, and the backend sees
    /// no request from it.
    #[tokio::test]
    async fn an_https_backend_is_reached_through_a_proxy_that_trusts_its_ca() {
        let ca = Ca::new();
        let b = ScriptedBackend::builder("secure", Script::always(Step::ok().body("sealed")))
            .tls(&ca)
            .bind()
            .await;
        assert_eq!(b.url().scheme_str(), Some("https"));
        assert_eq!(b.ca().map(Ca::pem), Some(ca.pem()));
        let file = std::env::temp_dir().join(format!("switchyard-test-ca-{}.pem", b.addr().port()));
        std::fs::write(&file, ca.pem()).unwrap();
        let get = || {
            Request::get("http://app.example/")
                .body(String::new())
                .unwrap()
        };

        let trusting = ProxyConfig {
            backend_ca_file: Some(file.clone()),
            ..config()
        };
        let got = send(proxy_over(&[&b], trusting).await, get())
            .await
            .unwrap();
        got.assert_status(200).assert_backend("secure");
        assert_eq!(got.text(), "sealed");
        b.assert_requests(1);

        let untrusting = proxy_over(&[&b], config()).await;
        let got = send(untrusting, get()).await.unwrap();
        got.assert_status(502);
        b.assert_requests(1);
        let _ = std::fs::remove_file(file);
    }
}
