//! The client side against raw loopback servers: response framing, keep-alive reuse,
//! upgrades, early responses, and malformed responses rejected.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use switchyard_h1::client::{ClientConfig, Connection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A server that reads one request head (and `body` more bytes), answers `answers[i]`
/// to the i-th request on one connection, then closes.
async fn server(answers: Vec<&'static [u8]>, body: usize) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        for answer in answers {
            loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    if buf.len() >= end + 4 + body {
                        buf.drain(..end + 4 + body);
                        break;
                    }
                }
                let mut chunk = [0u8; 4096];
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            if conn.write_all(answer).await.is_err() {
                return;
            }
        }
        let _ = conn.shutdown().await;
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest).await;
    });
    addr
}

async fn connect(addr: std::net::SocketAddr) -> Connection<TcpStream> {
    Connection::new(
        TcpStream::connect(addr).await.unwrap(),
        ClientConfig::default(),
    )
}

fn get(method: Method) -> Request<Empty<Bytes>> {
    Request::builder()
        .method(method)
        .uri("/")
        .header("host", "x")
        .body(Empty::new())
        .unwrap()
}

/// One exchange: status and body, or the error's text.
async fn exchange(answer: &'static [u8], method: Method) -> Result<(StatusCode, Bytes), String> {
    let addr = server(vec![answer], 0).await;
    let res = connect(addr)
        .await
        .send(get(method))
        .await
        .map_err(|e| e.to_string())?;
    let status = res.status();
    let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok((status, body.to_bytes()))
}

#[tokio::test]
async fn framing_by_rfc_9112() {
    let ok = |r: Result<(StatusCode, Bytes), String>| r.unwrap();
    let (s, b) = ok(exchange(
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
        Method::GET,
    )
    .await);
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"hello"[..]));
    let (_, b) = ok(exchange(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n1;x=y\r\n!\r\n0\r\n\r\n",
        Method::GET,
    )
    .await);
    assert_eq!(&b[..], b"hello!");
    let (_, b) = ok(exchange(b"HTTP/1.1 200 OK\r\n\r\nuntil the close", Method::GET).await);
    assert_eq!(&b[..], b"until the close");
    let (_, b) = ok(exchange(
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
        Method::HEAD,
    )
    .await);
    assert!(b.is_empty());
    let (s, b) = ok(exchange(b"HTTP/1.1 204 No Content\r\n\r\n", Method::GET).await);
    assert_eq!((s, b.len()), (StatusCode::NO_CONTENT, 0));
    let (s, _) = ok(exchange(
        b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
        Method::GET,
    )
    .await);
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    let (s, b) = ok(exchange(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        Method::GET,
    )
    .await);
    assert_eq!((s, &b[..]), (StatusCode::OK, &b"ok"[..]));
}

#[tokio::test]
async fn trailers_and_large_heads() {
    let addr = server(
        vec![b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-sum: 1\r\n\r\n"],
        0,
    )
    .await;
    let res = connect(addr).await.send(get(Method::GET)).await.unwrap();
    let collected = res.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["x-sum"], "1");

    let big: &'static str = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 0\r\n\r\n",
            "a".repeat(40_000)
        )
        .into_boxed_str(),
    );
    let (s, _) = exchange(big.as_bytes(), Method::GET).await.unwrap();
    assert_eq!(s, StatusCode::OK);
    let huge: &'static str = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 0\r\n\r\n",
            "a".repeat(70_000)
        )
        .into_boxed_str(),
    );
    assert!(exchange(huge.as_bytes(), Method::GET).await.is_err());
}

#[tokio::test]
async fn malformed_responses_are_rejected() {
    for bad in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 5x\r\n\r\nhello"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\ncontent-length: 0\n\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\n\r\n",
        b"HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
    ] {
        let r = exchange(bad, Method::GET).await;
        assert!(r.is_err(), "accepted {:?}", String::from_utf8_lossy(bad));
    }
    // Both framings: the transfer coding wins and the connection is not reused.
    let addr = server(
        vec![b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"],
        0,
    )
    .await;
    let res = connect(addr).await.send(get(Method::GET)).await.unwrap();
    let mut body = res.into_body();
    while body.frame().await.is_some() {}
    assert!(body.take_connection().is_none());
}

#[tokio::test]
async fn keep_alive_reuses_the_connection() {
    let addr = server(
        vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nb\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\nconnection: close\r\n\r\nc",
        ],
        3,
    )
    .await;
    let mut conn = connect(addr).await;
    for (i, want) in ["a", "b", "c"].into_iter().enumerate() {
        assert!(!conn.is_closed());
        let req = Request::post("/")
            .header("host", "x")
            .body(Full::new(Bytes::from_static(b"abc")))
            .unwrap();
        let res = conn.send(req).await.unwrap();
        let mut body = res.into_body();
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                got.extend_from_slice(&data);
            }
        }
        assert_eq!(got, want.as_bytes());
        match body.take_connection() {
            Some(next) => conn = next,
            None => {
                assert_eq!(i, 2, "the connection was not reusable after {want}");
                return;
            }
        }
    }
    panic!("connection: close was not honoured");
}

#[tokio::test]
async fn a_closed_idle_connection_is_seen() {
    let addr = server(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"], 0).await;
    let res = connect(addr).await.send(get(Method::GET)).await.unwrap();
    let mut body = res.into_body();
    assert!(body.frame().await.is_none());
    let mut conn = body.take_connection().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(conn.is_closed());
}

#[tokio::test]
async fn switching_protocols_hands_over_the_socket() {
    let addr = server(
        vec![b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\nearly"],
        0,
    )
    .await;
    let req = Request::get("/")
        .header("host", "x")
        .header("upgrade", "echo")
        .header("connection", "upgrade")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let mut res = connect(addr).await.send(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    let on = res
        .extensions_mut()
        .remove::<switchyard_h1::OnUpgrade>()
        .unwrap();
    let mut upgraded = on.await.unwrap();
    let mut got = [0u8; 5];
    upgraded.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"early");
}

#[tokio::test]
async fn an_early_response_reaches_the_caller() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 1024];
        let _ = conn.read(&mut head).await;
        let _ = conn
            .write_all(
                b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await;
        // Closed with the upload unread: the kernel resets the connection.
    });
    let body = Full::new(Bytes::from(vec![b'x'; 8 << 20]));
    let req = Request::post("/").header("host", "x").body(body).unwrap();
    let res = connect(addr).await.send(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn expect_continue_waits_for_the_go_ahead() {
    let addr = server(vec![b"HTTP/1.1 100 Continue\r\n\r\n"], 0).await;
    // The server answers 100 after the head, then reads nothing more and closes: the
    // body went out after the 100 (the exchange then fails for want of a response).
    let req = Request::put("/")
        .header("host", "x")
        .header("expect", "100-continue")
        .body(Full::new(Bytes::from_static(b"abc")))
        .unwrap();
    assert!(connect(addr).await.send(req).await.is_err());

    // A final answer instead of 100: the body is not sent, the connection not reused.
    let addr = server(
        vec![b"HTTP/1.1 417 Expectation Failed\r\ncontent-length: 0\r\n\r\n"],
        0,
    )
    .await;
    let req = Request::put("/")
        .header("host", "x")
        .header("expect", "100-continue")
        .body(Full::new(Bytes::from_static(b"abc")))
        .unwrap();
    let res = connect(addr).await.send(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::EXPECTATION_FAILED);
    let mut body = res.into_body();
    assert!(body.frame().await.is_none());
    assert!(body.take_connection().is_none());
}
