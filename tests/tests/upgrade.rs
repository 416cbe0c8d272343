//! Protocol upgrades (WebSocket and the like) through the proxy: the client's upgrade is
//! forwarded, the backend's `101 Switching Protocols` comes back, and the two connections
//! are joined so that bytes flow both ways.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use switchyard::{Backend, Proxy};
use switchyard_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tower::ServiceExt;

/// A backend that switches to an echo protocol when asked (`Upgrade: echo`), answering
/// each read with `echo:` and the bytes read. `/refuse` answers 426 instead, and a request
/// without an upgrade gets 200 `plain`. Sends the headers of each request it gets.
async fn echo_backend() -> (SocketAddr, mpsc::UnboundedReceiver<http::HeaderMap>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, heads) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let _ = seen.send(req.headers().clone());
                let asked = req.headers().get(header::UPGRADE) == Some(&"echo".parse().unwrap());
                let res = if req.uri().path() == "/refuse" {
                    Response::builder()
                        .status(StatusCode::UPGRADE_REQUIRED)
                        .body(Full::new(Bytes::from_static(b"refused")))
                } else if asked {
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let mut io = TokioIo::new(on.await.unwrap());
                        let mut buf = [0u8; 1024];
                        loop {
                            let n = io.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                break;
                            }
                            let mut answer = b"echo:".to_vec();
                            answer.extend_from_slice(&buf[..n]);
                            if io.write_all(&answer).await.is_err() {
                                break;
                            }
                        }
                    });
                    Response::builder()
                        .status(StatusCode::SWITCHING_PROTOCOLS)
                        .header(header::UPGRADE, "echo")
                        .header(header::CONNECTION, "upgrade")
                        .body(Full::new(Bytes::new()))
                } else {
                    Response::builder().body(Full::new(Bytes::from_static(b"plain")))
                };
                async move { Ok::<_, Infallible>(res.unwrap()) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades(),
            );
        }
    });
    (addr, heads)
}

/// The proxy over `backend`, allowing the `echo` upgrade beside WebSocket.
async fn proxy_over(backend: SocketAddr) -> Proxy {
    let proxy = Proxy::new(switchyard::ProxyConfig {
        upgrade_protocols: vec!["websocket".into(), "echo".into()],
        ..switchyard_tests::config()
    });
    let url = format!("http://{backend}").parse().unwrap();
    proxy.add_backend(Backend::new("echo", url)).unwrap();
    proxy.settled().await;
    proxy
}

/// Serves `proxy` as the binary does; returns its address.
async fn serve(proxy: Proxy) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ServerConfig::default();
    tokio::spawn(switchyard_server::serve(
        listener,
        proxy,
        config,
        std::future::pending(),
    ));
    addr
}

/// Reads one response head (up to the blank line) from `conn`.
async fn read_head(conn: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(conn.read(&mut byte).await.unwrap(), 1, "closed mid-head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap().to_lowercase()
}

async fn ask_upgrade(conn: &mut TcpStream, path: &str) -> String {
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: chat.test\r\nconnection: keep-alive, Upgrade\r\nupgrade: echo\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    read_head(conn).await
}

#[tokio::test]
async fn an_upgrade_joins_the_client_and_the_backend() {
    let (backend, mut heads) = echo_backend().await;
    let proxy = proxy_over(backend).await;
    let addr = serve(proxy.clone()).await;

    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = ask_upgrade(&mut conn, "/chat").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo\r\n"), "{head}");
    assert!(head.contains("connection: upgrade\r\n"), "{head}");
    let seen = heads.recv().await.unwrap();
    assert_eq!(seen[header::UPGRADE], "echo");
    assert_eq!(seen[header::CONNECTION], "upgrade");
    assert!(seen.contains_key("x-forwarded-for"), "{seen:?}");

    for message in ["hello", "second message"] {
        conn.write_all(message.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 5 + message.len()];
        conn.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer, format!("echo:{message}").as_bytes());
    }

    // The tunnel's connection left the pool; plain requests get another one.
    let stats = proxy.pool_stats();
    assert_eq!(stats[0].1.closed.upgraded, 1, "{stats:?}");
    let res = switchyard_tests::client()
        .get(format!("http://{addr}/").parse().unwrap())
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "plain");

    let open = switchyard::TunnelStats { open: 1, total: 1 };
    assert_eq!(proxy.tunnel_stats(), open);
    let metrics = proxy.encode_metrics(switchyard::TextFormat::OpenMetrics);
    assert!(metrics.contains("upgraded_connections 1"), "{metrics}");

    // Closing the client's side closes the tunnel: the backend stops echoing.
    conn.shutdown().await.unwrap();
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    let closed = switchyard::TunnelStats { open: 0, total: 1 };
    let counted = tokio::time::timeout(Duration::from_secs(5), async {
        while proxy.tunnel_stats() != closed {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    assert!(counted.await.is_ok(), "{:?}", proxy.tunnel_stats());
}

/// A backend that does not switch answers as usual, and the client's connection goes on
/// carrying requests.
#[tokio::test]
async fn a_refused_upgrade_is_an_ordinary_response() {
    let (backend, _heads) = echo_backend().await;
    let addr = serve(proxy_over(backend).await).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = ask_upgrade(&mut conn, "/refuse").await;
    assert!(head.starts_with("http/1.1 426"), "{head}");
    let mut body = [0u8; 7];
    conn.read_exact(&mut body).await.unwrap();
    assert_eq!(&body, b"refused");

    conn.write_all(b"GET / HTTP/1.1\r\nhost: chat.test\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut conn).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
}

/// Called as a plain tower service, with no connection to hand over, the proxy sends an
/// upgrade request on as an ordinary one: no upgrade headers reach the backend.
#[tokio::test]
async fn without_a_connection_to_hand_over_the_request_goes_as_plain() {
    let (backend, mut heads) = echo_backend().await;
    let proxy = proxy_over(backend).await;
    let req = Request::get("http://chat.test/chat")
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "echo")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = proxy.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let seen = heads.recv().await.unwrap();
    assert!(!seen.contains_key(header::UPGRADE), "{seen:?}");
    assert!(!seen.contains_key(header::CONNECTION), "{seen:?}");
}

/// Mounted in an axum application (`axum::serve` serves with upgrades), the proxy joins a
/// WebSocket-style upgrade just the same.
#[tokio::test]
async fn an_upgrade_through_the_axum_gateway_is_joined() {
    let (backend, mut heads) = echo_backend().await;
    let proxy = proxy_over(backend).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(example_axum_gateway::serve(
        listener,
        proxy,
        std::future::pending(),
    ));

    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = ask_upgrade(&mut conn, "/api/chat").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(heads.recv().await.unwrap().contains_key("x-forwarded-for"));
    conn.write_all(b"over axum").await.unwrap();
    let mut answer = [0u8; 14];
    conn.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"echo:over axum");
}

/// At shutdown the proxy stops accepting but lets an open tunnel run, within the shutdown
/// timeout: the server finishes once the tunnel closes.
#[tokio::test]
async fn shutdown_waits_for_open_tunnels_to_close() {
    let (backend, _heads) = echo_backend().await;
    let proxy = proxy_over(backend).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchyard_server::serve(
        listener,
        proxy.clone(),
        ServerConfig::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = ask_upgrade(&mut conn, "/chat").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");

    stop.send(()).unwrap();
    // The tunnel still carries messages after the shutdown began.
    for message in ["during", "shutdown"] {
        conn.write_all(message.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 5 + message.len()];
        conn.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer, format!("echo:{message}").as_bytes());
    }
    assert!(
        !server.is_finished(),
        "the server stopped with a tunnel open"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting connections"
    );

    conn.shutdown().await.unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(10), server).await;
    assert!(stopped.is_ok(), "the server outlived the tunnel");
    assert_eq!(proxy.tunnel_stats().open, 0);
}

/// A real WebSocket session (tungstenite on both ends) through the proxy: the handshake's
/// key and accept headers, text and binary frames (one larger than any buffer on the
/// way), ping and pong, and the closing handshake, after which the tunnel is gone.
#[tokio::test]
async fn a_websocket_session_passes_through_end_to_end() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() || message.is_binary() {
                        ws.send(message).await.unwrap();
                    }
                }
            });
        }
    });
    let proxy = proxy_over(backend).await;
    let addr = serve(proxy.clone()).await;

    let (mut ws, res) = tokio_tungstenite::connect_async(format!("ws://{addr}/chat"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::Pong(Bytes::from_static(b"are you there"))
    );
    assert_eq!(proxy.tunnel_stats().open, 1);

    ws.close(None).await.unwrap();
    while let Some(Ok(message)) = ws.next().await {
        assert!(message.is_close(), "{message:?}");
    }
    // The backend closed its connection after the closing handshake; the tunnel ends
    // once the client closes its own too.
    drop(ws);
    let closed = tokio::time::timeout(Duration::from_secs(5), proxy.tunnels().all_closed());
    assert!(closed.await.is_ok(), "{:?}", proxy.tunnel_stats());
}
