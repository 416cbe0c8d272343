//! `serve_connection` end to end over an in-memory duplex.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use switchyard_h1::{serve_connection, Config, RecvBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Echoes the method, path and body back.
async fn echo(req: Request<RecvBody>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let text = format!(
        "{} {} {}",
        parts.method,
        parts.uri,
        String::from_utf8_lossy(&body)
    );
    Ok(Response::new(Full::new(Bytes::from(text))))
}

async fn exchange(input: &[u8], half_close: bool) -> String {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let task = tokio::spawn(serve_connection(
        server,
        tower::service_fn(echo),
        Config::default(),
    ));
    client.write_all(input).await.unwrap();
    if half_close {
        client.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), client.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let _ = task.await.unwrap();
    strip_dates(&String::from_utf8_lossy(&out))
}

fn strip_dates(s: &str) -> String {
    s.split("\r\n")
        .filter(|l| !l.starts_with("date: "))
        .collect::<Vec<_>>()
        .join("\r\n")
}

#[tokio::test(start_paused = true)]
async fn pipelined_requests_answered_in_order_then_half_close() {
    let out = exchange(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcPOST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        true,
    )
    .await;
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nGET /a \
         HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nPOST /b abc\
         HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nPOST /c hi"
    );
}

#[tokio::test(start_paused = true)]
async fn http10_closes_and_keep_alive_is_honoured() {
    let out = exchange(b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n", false).await;
    assert_eq!(out, "HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nGET /a ");
    let out = exchange(
        b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
        false,
    )
    .await;
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: keep-alive\r\n\r\nGET /a \
         HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nGET /b "
    );
}

#[tokio::test(start_paused = true)]
async fn expect_continue_is_sent_when_the_body_is_read() {
    let out = exchange(
        b"PUT /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        false,
    )
    .await;
    assert_eq!(
        out,
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\nPUT /e ok"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_and_header_timeouts_close() {
    // Idle: nothing sent, the connection ends on its own.
    assert_eq!(exchange(b"", false).await, "");
    // A head that never completes.
    assert_eq!(exchange(b"GET / HTTP/1.1\r\n", false).await, "");
}

/// Answers by path: streams, trailers, lengths that lie, and no body at all.
async fn shapes(
    req: Request<RecvBody>,
) -> Result<Response<http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>>, Infallible> {
    use http_body::Frame;
    use http_body_util::StreamBody;
    let frames = |fs: Vec<Frame<Bytes>>| {
        StreamBody::new(futures::stream::iter(
            fs.into_iter().map(Ok::<_, Infallible>),
        ))
        .boxed_unsync()
    };
    let data = |s: &'static str| Frame::data(Bytes::from_static(s.as_bytes()));
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-sum", "3".parse().unwrap());
    let res = match req.uri().path() {
        "/stream" => Response::new(frames(vec![data("ab"), data("c")])),
        "/trailers" => Response::new(frames(vec![data("abc"), Frame::trailers(trailers)])),
        "/short" => Response::builder()
            .header("content-length", "5")
            .body(frames(vec![data("abc")]))
            .unwrap(),
        "/no-content" => Response::builder()
            .status(204)
            .header("content-length", "3")
            .body(frames(vec![data("abc")]))
            .unwrap(),
        _ => Response::new(frames(vec![data("full")])),
    };
    Ok(res)
}

async fn exchange_with<S, B>(input: &[u8], service: S) -> String
where
    S: tower::Service<Request<RecvBody>, Response = Response<B>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let task = tokio::spawn(serve_connection(server, service, Config::default()));
    client.write_all(input).await.unwrap();
    client.shutdown().await.unwrap();
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    let _ = task.await.unwrap();
    strip_dates(&String::from_utf8_lossy(&out))
}

#[tokio::test(start_paused = true)]
async fn response_framing() {
    let svc = || tower::service_fn(shapes);
    let out = exchange_with(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n", svc()).await;
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"
    );
    let out = exchange_with(b"GET /trailers HTTP/1.1\r\nHost: x\r\n\r\n", svc()).await;
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-sum: 3\r\n\r\n"
    );
    // HTTP/1.0: no chunked coding, the close delimits the body.
    let out = exchange_with(b"GET /stream HTTP/1.0\r\n\r\n", svc()).await;
    assert_eq!(out, "HTTP/1.1 200 OK\r\n\r\nabc");
    // HEAD: the GET's framing headers, no body; the connection stays open for the next.
    let out = exchange_with(
        b"HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n",
        svc(),
    )
    .await;
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
         HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nfull\r\n0\r\n\r\n"
    );
    let out = exchange_with(b"GET /no-content HTTP/1.1\r\nHost: x\r\n\r\n", svc()).await;
    assert_eq!(out, "HTTP/1.1 204 No Content\r\n\r\n");
    // A body shorter than its Content-Length: the connection is cut, never reused.
    let out = exchange_with(
        b"GET /short HTTP/1.1\r\nHost: x\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n",
        svc(),
    )
    .await;
    assert_eq!(out, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nabc");
}

/// Answers without reading the request body.
async fn ignore_body(_req: Request<RecvBody>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"no"))))
}

#[tokio::test(start_paused = true)]
async fn unread_bodies_are_drained_when_buffered_else_the_connection_closes() {
    let next = "GET /x HTTP/1.1\r\nHost: x\r\n\r\n";
    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nno";
    let input = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc{next}");
    let out = exchange_with(input.as_bytes(), tower::service_fn(ignore_body)).await;
    assert_eq!(out, format!("{ok}{ok}"));
    // Expect: 100-continue never answered: the body may or may not come; close.
    let input = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc{next}"
    );
    let out = exchange_with(input.as_bytes(), tower::service_fn(ignore_body)).await;
    assert_eq!(out, ok);
}

/// The server's side of a duplex: records the room in the buffer of every read that had
/// to wait, and counts the writes made on it.
struct Spy {
    inner: tokio::io::DuplexStream,
    waits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    writes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl tokio::io::AsyncRead for Spy {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let room = buf.remaining();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if poll.is_pending() && room == 1 {
            self.waits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        poll
    }
}

impl tokio::io::AsyncWrite for Spy {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    /// One write of all the slices, as a socket's `writev` is (a duplex has none).
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
        std::pin::Pin::new(&mut self.inner).poll_write(cx, &all)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_waits_without_a_read_buffer() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let waits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let io = Spy {
        inner: server,
        waits: waits.clone(),
        writes: Default::default(),
    };
    let task = tokio::spawn(serve_connection(
        io,
        tower::service_fn(echo),
        Config::default(),
    ));
    client
        .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = client.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Idle between requests: the only pending read is the one-byte one.
    assert!(waits.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    client
        .write_all(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let n = client.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).ends_with("GET /b "));
    drop(client);
    task.await.unwrap().unwrap();
}

/// Switches to an echo protocol: what was read past the head first, then everything.
async fn switch(mut req: Request<RecvBody>) -> Result<Response<Full<Bytes>>, Infallible> {
    let on_upgrade = req.extensions_mut().remove::<switchyard_h1::OnUpgrade>();
    let Some(on_upgrade) = on_upgrade else {
        return Ok(Response::new(Full::new(Bytes::from_static(
            b"no upgrade asked",
        ))));
    };
    tokio::spawn(async move {
        let (mut io, early) = on_upgrade.await.unwrap().into_parts();
        io.write_all(&early).await.unwrap();
        let mut buf = [0u8; 64];
        loop {
            let n = io.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            io.write_all(&buf[..n]).await.unwrap();
        }
    });
    Ok(Response::builder()
        .status(101)
        .header("upgrade", "echo")
        .header("connection", "upgrade")
        .body(Full::default())
        .unwrap())
}

#[tokio::test(start_paused = true)]
async fn upgrades_hand_over_the_connection_and_early_bytes() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let task = tokio::spawn(serve_connection(
        server,
        tower::service_fn(switch),
        Config::default(),
    ));
    client
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\nEARLY",
        )
        .await
        .unwrap();
    let head = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n";
    let mut got = Vec::new();
    while !got.ends_with(b"EARLY") {
        let mut buf = [0u8; 256];
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(head), "{}", String::from_utf8_lossy(&got));
    task.await.unwrap().unwrap();
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    // Without an Upgrade field there is nothing to switch to.
    let out = exchange_with(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        tower::service_fn(switch),
    )
    .await;
    assert!(out.ends_with("no upgrade asked"), "{out}");
}

/// One GET answered with a body of `frames` (each ready at once; an `Err` item breaks
/// the body there): what the client read, and how many writes the server made.
async fn small_frames(frames: Vec<Result<&'static str, &'static str>>) -> (String, usize) {
    use futures::stream;
    use http_body_util::StreamBody;

    let (mut client, server) = tokio::io::duplex(1 << 16);
    let writes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = Spy {
        inner: server,
        waits: Default::default(),
        writes: writes.clone(),
    };
    let service = tower::service_fn(move |_req: Request<RecvBody>| {
        let frames = frames.clone();
        async move {
            let frames = frames.into_iter().map(|f| {
                f.map(|s| http_body::Frame::data(Bytes::from_static(s.as_bytes())))
                    .map_err(std::io::Error::other)
            });
            Ok::<_, Infallible>(Response::new(StreamBody::new(stream::iter(frames))))
        }
    });
    let task = tokio::spawn(serve_connection(server, service, Config::default()));
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    let _ = task.await.unwrap();
    let out = strip_dates(&String::from_utf8_lossy(&out));
    (out, writes.load(std::sync::atomic::Ordering::Relaxed))
}

#[tokio::test]
async fn small_frames_ready_together_leave_in_one_write() {
    let (out, writes) = small_frames(vec![Ok("ab"); 50]).await;
    let chunks = "2\r\nab\r\n".repeat(50);
    assert_eq!(
        out,
        format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{chunks}0\r\n\r\n"
        )
    );
    // The head with the first chunk, then the other 49 and the last chunk together (a
    // frame at a time was 51 writes).
    assert_eq!(writes, 2);
}

#[tokio::test]
async fn small_frames_before_a_failure_still_reach_the_client() {
    let (out, _) = small_frames(vec![Ok("ab"), Ok("cd"), Err("backend went away")]).await;
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n2\r\nab\r\n2\r\ncd\r\n"
    );
}

/// The idle timeout counts from the end of the last response, whatever came before: the
/// connection's one timer, set during earlier waits, neither cuts a later wait short nor
/// lets it run long.
#[tokio::test(start_paused = true)]
async fn the_idle_timeout_counts_from_the_last_response() {
    let idle = Duration::from_secs(10);
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let task = tokio::spawn(serve_connection(
        server,
        tower::service_fn(echo),
        Config::default().idle_timeout(idle),
    ));
    let mut buf = [0u8; 256];
    let mut ask = async |path: &str| {
        let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        client.write_all(head.as_bytes()).await.unwrap();
        let n = client.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{path}: {text}");
        assert!(text.ends_with(&format!("GET {path} ")), "{path}: {text}");
    };
    // Busy: a request every 100 ms for two seconds (the buffers are kept between them).
    for i in 0..20 {
        ask(&format!("/busy/{i}")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then waits just short of the timeout, each longer than the last: none closes.
    for (i, wait) in [9_000, 9_900, 9_990].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(wait) - Duration::from_millis(100)).await;
        ask(&format!("/late/{i}")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = tokio::time::Instant::now() - Duration::from_millis(100);
    // Then nothing: the connection closes one idle timeout after the last response.
    let n = client.read(&mut buf).await.unwrap();
    assert_eq!(n, 0, "closed");
    let waited = tokio::time::Instant::now() - last;
    assert!(
        waited >= idle && waited < idle + Duration::from_millis(50),
        "closed after {waited:?}"
    );
    task.await.unwrap().unwrap();
}
