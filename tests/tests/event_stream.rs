//! A stream of small events (server-sent events) through the proxy on loopback: each
//! event reaches the client before the backend sends the next. The server gathers small
//! body frames that are ready together into one write; this shows it never holds one
//! back waiting for more.

use std::net::SocketAddr;
use std::time::Duration;

use switchyard::Backend;
use switchyard_tests::TestProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const EVENTS: usize = 50;

/// A backend that answers its first request with a chunked event stream: event `i` goes
/// out once the client has acknowledged event `i - 1` on `acks`.
async fn event_backend(mut acks: mpsc::UnboundedReceiver<usize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let (mut head, mut buf) = (Vec::new(), [0u8; 1024]);
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let start = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                     cache-control: no-store\r\ntransfer-encoding: chunked\r\n\r\n";
        conn.write_all(start.as_bytes()).await.unwrap();
        for i in 0..EVENTS {
            let event = format!("data: {i}\n\n");
            let chunk = format!("{:x}\r\n{event}\r\n", event.len());
            conn.write_all(chunk.as_bytes()).await.unwrap();
            if acks.recv().await != Some(i) {
                return;
            }
        }
        conn.write_all(b"0\r\n\r\n").await.unwrap();
    });
    addr
}

#[tokio::test]
async fn each_event_reaches_the_client_before_the_backend_sends_the_next() {
    let (ack, acks) = mpsc::unbounded_channel();
    let backend = event_backend(acks).await;
    let proxy = TestProxy::with(&[]).await;
    let url = format!("http://{backend}").parse().unwrap();
    proxy
        .proxy
        .add_backend(Backend::new("events", url))
        .unwrap();
    proxy.proxy.settled().await;

    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(b"GET /events HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // Event i can only arrive if event i - 1 did: a held-back event stalls the stream,
    // and the bound turns that stall into a failure that names it.
    for i in 0..=EVENTS {
        let want = match i {
            EVENTS => "0\r\n\r\n".to_owned(),
            i => format!("data: {i}\n\n"),
        };
        let arrived = tokio::time::timeout(Duration::from_secs(20), async {
            while !String::from_utf8_lossy(&seen).contains(&want) {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the proxy closed the stream");
                seen.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        assert!(arrived.is_ok(), "{want:?} never arrived; got {seen:?}");
        if i < EVENTS {
            ack.send(i).unwrap();
        }
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("content-type: text/event-stream"), "{text}");
}
