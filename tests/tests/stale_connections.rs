//! Kept-alive backend connections that the backend closes: while idle (found closed and
//! replaced, for every method, and no failure to the breaker), and at the moment the next
//! request arrives (an idempotent request is retried; a POST may have been received, so it
//! is not).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use switchyard::{Backend, ProxyConfig};
use switchyard_server::ServerConfig;
use switchyard_tests::{client, full, send, TestProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the backend ends its kept-alive connections.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// Closes a connection left idle this long after its last response.
    IdleClose(Duration),
    /// Answers the first request of a connection, then resets the connection as soon as
    /// the next request's first bytes arrive.
    ResetNext,
}

/// A raw HTTP/1.1 backend: it answers every request `200` with `<method> <body length>`,
/// and ends connections as `ending` says. Returns where it listens and how many
/// connections it accepted.
async fn raw_backend(ending: Ending) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(conn, ending));
        }
    });
    (addr, accepted)
}

async fn serve(mut conn: TcpStream, ending: Ending) {
    let mut buf = Vec::new();
    let mut served = 0;
    loop {
        // Wait for the next request's first bytes.
        if buf.is_empty() {
            let mut chunk = [0u8; 8192];
            let read = match ending {
                Ending::IdleClose(idle) if served > 0 => {
                    match tokio::time::timeout(idle, conn.read(&mut chunk)).await {
                        Ok(read) => read,
                        Err(_) => return, // idle too long: close (FIN)
                    }
                }
                _ => conn.read(&mut chunk).await,
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if matches!(ending, Ending::ResetNext) && served > 0 {
                let _ = conn.set_zero_linger();
                return; // dropped with linger 0: a reset
            }
        }
        let Some((method, len)) = read_request(&mut conn, &mut buf).await else {
            return;
        };
        let body = format!("{method} {len}");
        let res = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-backend: raw\r\n\r\n{body}",
            body.len()
        );
        if conn.write_all(res.as_bytes()).await.is_err() {
            return;
        }
        served += 1;
    }
}

/// Reads one request (head and `content-length` body) from `buf` and `conn`; returns its
/// method and body length, and leaves what follows it in `buf`.
async fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, usize)> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let method = head.split(' ').next()?.to_uppercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap_or(0));
    while buf.len() < head_end + len {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf.drain(..head_end + len);
    Some((method, len))
}

/// The proxy in front of the backend at `addr`, named `raw`.
async fn proxy_to(addr: SocketAddr, config: ProxyConfig) -> TestProxy {
    let proxy = TestProxy::start(config, ServerConfig::default(), &[]).await;
    let url = format!("http://{addr}").parse().unwrap();
    proxy.proxy.add_backend(Backend::new("raw", url)).unwrap();
    proxy.proxy.settled().await;
    proxy
}

fn request(method: &str, url: &str, body: &'static str) -> Request<switchyard_tests::TestBody> {
    Request::builder()
        .method(method)
        .uri(url)
        .body(full(body))
        .unwrap()
}

#[tokio::test]
async fn connections_closed_while_idle_are_replaced_without_a_failure() {
    let (addr, accepted) = raw_backend(Ending::IdleClose(Duration::from_millis(100))).await;
    let mut config = switchyard_tests::config();
    config.cache = None;
    // One failure would trip the breaker, and none may be hidden by a retry.
    config.breaker.threshold = 1;
    config.retry.max_retries = 0;
    config.pool.idle_timeout = Duration::from_secs(60);
    let proxy = proxy_to(addr, config).await;
    let client = client();

    let mut failed = Vec::new();
    for i in 0..30 {
        let (method, body) = if i % 2 == 0 {
            ("GET", "")
        } else {
            ("POST", "some form data")
        };
        let (status, _, text) = send(&client, request(method, &proxy.url("/"), body)).await;
        if (status, text.as_str()) != (StatusCode::OK, &*format!("{method} {}", body.len())) {
            failed.push((i, method, status, text));
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(failed, vec![], "failed requests");
    let breakers = proxy.proxy.circuit_breaker();
    assert_eq!(
        breakers.trips("raw"),
        Some(0),
        "the breaker recorded a failure"
    );
    assert!(breakers.get("raw").unwrap().state().is_closed());
    assert_eq!(proxy.proxy.retry_stats().retries, 0);
    // Each request found its connection closed by the backend and dialled a new one.
    assert!(
        accepted.load(Ordering::SeqCst) >= 25,
        "{accepted:?} connections"
    );
}

#[tokio::test]
async fn a_connection_reset_as_the_next_request_arrives() {
    let (addr, accepted) = raw_backend(Ending::ResetNext).await;
    let mut config = switchyard_tests::config();
    config.cache = None; // every GET goes to the backend
    let proxy = proxy_to(addr, config).await;
    let client = client();
    let url = proxy.url("/");

    // A fresh connection serves the first GET and is kept.
    let first = send(&client, request("GET", &url, "")).await;
    assert_eq!((first.0, first.2.as_str()), (StatusCode::OK, "GET 0"));
    // The second goes out on it, and the backend resets it on receipt: the request may
    // have been seen, but a GET is idempotent, so it is sent again on a new connection.
    let second = send(&client, request("GET", &url, "")).await;
    assert_eq!((second.0, second.2.as_str()), (StatusCode::OK, "GET 0"));
    assert_eq!(proxy.proxy.retry_stats().retries_upstream, 1);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    // A POST on the kept connection meets the same reset. It left in full before the
    // reset, so the backend may have acted on it: it is not sent again, and the client is
    // told the backend failed (502) rather than risk doing it twice.
    let post = send(&client, request("POST", &url, "pay once")).await;
    assert_eq!(post.0, StatusCode::BAD_GATEWAY);
    assert_eq!(proxy.proxy.retry_stats().retries_upstream, 1);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the POST was sent again"
    );
}
