//! A listener behind a load balancer that speaks the PROXY protocol: the header's client
//! is the one `X-Forwarded-For` names, the bytes after it are left for HTTP or TLS, and a
//! connection without a header is closed.

use http::StatusCode;
use http_body_util::BodyExt;
use switchyard_pool::Protocol;
use switchyard_server::ServerConfig;
use switchyard_tests::{h1_get_on, TestBackend, TestCa, TestProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn proxy(backend: &TestBackend, server: ServerConfig) -> TestProxy {
    let server = ServerConfig {
        proxy_protocol: true,
        ..server
    };
    TestProxy::start(switchyard_tests::config(), server, &[backend]).await
}

/// Sends `header` and a GET of `/headers` in one write; returns the whole answer.
async fn send(proxy: &TestProxy, header: &[u8]) -> String {
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(b"GET /headers HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    conn.write_all(&bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).to_lowercase()
}

/// A version 2 header: PROXY over TCP from `src` to `dst` (both IPv6), or LOCAL.
fn v2(local: bool, src: ([u16; 8], u16), dst: ([u16; 8], u16)) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(if local { 0x20 } else { 0x21 });
    h.push(0x21); // IPv6, stream
    h.extend_from_slice(&36u16.to_be_bytes());
    for (addr, _) in [src, dst] {
        for part in addr {
            h.extend_from_slice(&part.to_be_bytes());
        }
    }
    h.extend_from_slice(&src.1.to_be_bytes());
    h.extend_from_slice(&dst.1.to_be_bytes());
    h
}

#[tokio::test]
async fn the_header_names_the_client_in_x_forwarded_for() {
    let a = switchyard_tests::backend("a").await;
    let proxy = proxy(&a, ServerConfig::default()).await;

    let answer = send(&proxy, b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n").await;
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(
        answer.contains("x-forwarded-for: 203.0.113.7\n"),
        "{answer}"
    );

    let client = ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 7], 40000);
    let answer = send(&proxy, &v2(false, client, ([0, 0, 0, 0, 0, 0, 0, 1], 443))).await;
    assert!(
        answer.contains("x-forwarded-for: 2001:db8::7\n"),
        "{answer}"
    );

    // LOCAL (the load balancer's own check) and UNKNOWN name no client: the peer is.
    let answer = send(&proxy, &v2(true, client, client)).await;
    assert!(answer.contains("x-forwarded-for: 127.0.0.1\n"), "{answer}");
    let answer = send(&proxy, b"PROXY UNKNOWN\r\n").await;
    assert!(answer.contains("x-forwarded-for: 127.0.0.1\n"), "{answer}");
}

/// A connection that does not start with a header, or starts with a broken one, is
/// closed unanswered; nothing reaches the backend.
#[tokio::test]
async fn a_connection_without_a_valid_header_is_closed() {
    let a = switchyard_tests::backend("a").await;
    let proxy = proxy(&a, ServerConfig::default()).await;
    for header in [
        &b""[..],
        b"PROXY TCP4 not-an-address 10.0.0.1 1 2\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443 and more than a v1 header may hold, which is 107 bytes in all\r\n",
    ] {
        let answer = send(&proxy, header).await;
        assert_eq!(answer, "", "{header:?}");
    }
    assert_eq!(a.request_count(), 0);
}

/// Over TLS the header comes before the handshake.
#[tokio::test]
async fn the_header_comes_before_the_tls_handshake() {
    let ca = TestCa::new();
    let a = switchyard_tests::backend("a").await;
    let dir = std::env::temp_dir().join(format!("switchyard-pp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("proxy.pem"), &ca.cert_pem).unwrap();
    std::fs::write(dir.join("proxy.key"), &ca.key_pem).unwrap();
    let server = ServerConfig {
        tls_cert_file: Some(dir.join("proxy.pem")),
        tls_key_file: Some(dir.join("proxy.key")),
        ..ServerConfig::default()
    };
    let proxy = proxy(&a, server).await;

    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"PROXY TCP4 198.51.100.9 10.0.0.1 5555 443\r\n")
        .await
        .unwrap();
    let tls = ca
        .trust()
        .handshake("127.0.0.1", tcp, Protocol::Http1)
        .await
        .unwrap();
    let res = h1_get_on(tls, "/headers", &[("host", "x")]).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let headers = String::from_utf8_lossy(&body).to_lowercase();
    assert!(
        headers.contains("x-forwarded-for: 198.51.100.9\n"),
        "{headers}"
    );
    assert!(headers.contains("x-forwarded-proto: https\n"), "{headers}");
    std::fs::remove_dir_all(&dir).unwrap();
}
