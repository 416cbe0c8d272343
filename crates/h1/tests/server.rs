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
