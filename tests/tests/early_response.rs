//! A backend that answers an upload before reading it (413, 401, 303) and closes the
//! connection: the client gets that answer through the proxy, not a 502, whether the
//! backend resets the connection (closed with the upload unread) or half-closes it first.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use switchyard::Backend;
use switchyard_pool::{Pool, PoolConfig};
use switchyard_tests::{client, read_head, streamed, TestBody, TestProxy, CHUNK};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// The upload: 50 MiB, far more than every socket buffer on the way holds.
const UPLOAD: usize = 50 * 1024 * 1024;

/// How the backend ends the connection after its answer.
#[derive(Debug, Clone, Copy)]
enum Close {
    /// Drops the socket with the upload unread: the kernel sends a reset.
    Reset,
    /// Half-closes (FIN after the answer), lingers, then drops the socket.
    Linger,
}

/// A backend that reads the request head and 1 KiB of its body, writes `answer` and ends
/// the connection as `close` says. Returns where it listens.
async fn early_backend(answer: &'static str, close: Close) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(answer_early(conn, answer, close));
        }
    });
    addr
}

/// The proxy in front of the backend at `addr`.
async fn proxy_to(addr: SocketAddr) -> TestProxy {
    let proxy = TestProxy::with(&[]).await;
    let url = format!("http://{addr}").parse().unwrap();
    proxy.proxy.add_backend(Backend::new("early", url)).unwrap();
    proxy.proxy.settled().await;
    proxy
}

async fn answer_early(mut conn: TcpStream, answer: &'static str, close: Close) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let body_start = loop {
        let Ok(n) = conn.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        seen.extend_from_slice(&buf[..n]);
        if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let mut body = seen.len() - body_start;
    while body < 1024 {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body += n,
        }
    }
    if conn.write_all(answer.as_bytes()).await.is_err() {
        return;
    }
    match close {
        Close::Reset => drop(conn),
        Close::Linger => {
            let _ = conn.shutdown().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(conn);
        }
    }
}

/// Uploads [`UPLOAD`] bytes to `addr` on a raw connection, writing the body while reading
/// the answer, and returns the answer's status and head. Write errors are expected: the
/// proxy stops reading once the answer is out.
async fn raw_upload(addr: SocketAddr) -> (u16, String) {
    let conn = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = conn.into_split();
    let writer = tokio::spawn(async move {
        let head = format!(
            "POST /upload HTTP/1.1\r\nhost: example.test\r\ncontent-length: {UPLOAD}\r\n\r\n"
        );
        wr.write_all(head.as_bytes()).await?;
        for _ in 0..UPLOAD / CHUNK.len() {
            wr.write_all(&CHUNK).await?;
        }
        Ok::<_, std::io::Error>(wr)
    });
    let answer = tokio::time::timeout(Duration::from_secs(20), read_head(&mut rd))
        .await
        .expect("an answer within 20 s");
    writer.abort();
    answer
}

/// Uploads [`UPLOAD`] bytes with hyper's client and returns the status.
async fn hyper_upload(proxy: &TestProxy) -> StatusCode {
    let req = Request::post(proxy.url("/upload"))
        .header("content-length", UPLOAD)
        .body(streamed(UPLOAD))
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(20), client().request(req))
        .await
        .expect("an answer within 20 s")
        .expect("the proxy answers");
    let status = res.status();
    let _ = res.into_body().collect().await;
    status
}

const TOO_LARGE: &str =
    "HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const UNAUTHORIZED: &str = "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const SEE_OTHER: &str =
    "HTTP/1.1 303 See Other\r\nlocation: /elsewhere\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

async fn check(answer: &'static str, close: Close, want: u16) {
    let proxy = proxy_to(early_backend(answer, close).await).await;
    for round in 0..3 {
        let (status, head) = raw_upload(proxy.addr).await;
        assert_eq!(status, want, "raw client, round {round}, {close:?}: {head}");
        let status = hyper_upload(&proxy).await;
        assert_eq!(
            status.as_u16(),
            want,
            "hyper client, round {round}, {close:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_answered_before_the_upload_reaches_the_client_on_reset() {
    check(TOO_LARGE, Close::Reset, 413).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_answered_before_the_upload_reaches_the_client_on_half_close() {
    check(TOO_LARGE, Close::Linger, 413).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_answered_before_the_upload_reaches_the_client() {
    check(UNAUTHORIZED, Close::Reset, 401).await;
    check(UNAUTHORIZED, Close::Linger, 401).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn see_other_answered_before_the_upload_reaches_the_client() {
    check(SEE_OTHER, Close::Reset, 303).await;
    check(SEE_OTHER, Close::Linger, 303).await;
}

/// The pool alone: the answer, not the failed write of the rest of the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_returns_the_answer_not_the_failed_write() {
    for close in [Close::Reset, Close::Linger] {
        let addr = early_backend(TOO_LARGE, close).await;
        let pool: Pool<TestBody> =
            Pool::new(addr.to_string().parse().unwrap(), PoolConfig::default());
        for round in 0..3 {
            let req = Request::post("/upload")
                .header("content-length", UPLOAD)
                .body(streamed(UPLOAD))
                .unwrap();
            let res = pool.clone().oneshot(req).await;
            let status = res.map(|r| r.status()).map_err(|e| e.to_string());
            assert_eq!(
                status,
                Ok(StatusCode::PAYLOAD_TOO_LARGE),
                "round {round}, {close:?}"
            );
        }
    }
}
