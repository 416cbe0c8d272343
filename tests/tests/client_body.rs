//! A client's malformed or cut-off request body is the client's fault: the proxy answers
//! 400, does not retry it, and does not count it against the backend it was being
//! streamed to. Otherwise one client sending bad bodies would open the breakers of
//! healthy backends, and every other client would get 503s.

use http::StatusCode;
use switchyard::BreakerState;
use switchyard_tests::{backend, client, get, raw_exchange, TestProxy};

/// A POST whose chunked body has a chunk size that is not hex: the head is valid (and
/// forwarded), the body is not.
const BAD_CHUNK: &[u8] = b"POST /upload HTTP/1.1\r\nHost: shop.test\r\n\
    Transfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n";

#[tokio::test]
async fn malformed_request_bodies_get_400_and_never_open_the_backends_breaker() {
    let a = backend("a").await;
    let proxy = TestProxy::with(&[&a]).await;

    // Twice the breaker's threshold of consecutive failures, each on a new connection.
    for _ in 0..10 {
        let (status, head) = raw_exchange(proxy.addr, BAD_CHUNK).await;
        assert_eq!(status, 400, "{head}");
    }
    assert_eq!(
        proxy.proxy.circuit_breaker().state("a"),
        Some(BreakerState::Closed),
        "the backend is not blamed for the client's bodies"
    );
    assert_eq!(proxy.proxy.retry_stats().retries, 0, "nothing was retried");

    // Every other client is still served.
    let (status, served_by, _) = get(&client(), &proxy.url("/")).await;
    assert_eq!((status, served_by.as_str()), (StatusCode::OK, "a"));
}

/// A chunked POST whose trailer section has `fields` fields.
fn with_trailers(fields: usize) -> Vec<u8> {
    let mut req = b"POST /upload HTTP/1.1\r\nHost: shop.test\r\n\
        Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
        .to_vec();
    for i in 0..fields {
        req.extend_from_slice(format!("X-T-{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req
}

#[tokio::test]
async fn a_trailer_section_the_proxy_would_refuse_as_a_head_is_the_clients_error() {
    let a = backend("a").await;
    let proxy = TestProxy::with(&[&a]).await;

    // A few trailer fields are forwarded with the body.
    let (status, head) = raw_exchange(proxy.addr, &with_trailers(20)).await;
    assert_eq!(status, 200, "{head}");
    let forwarded = a.request_count();

    // More fields than a head may carry (100): were they forwarded, a backend with the
    // same limit would drop the connection, and that would count against it. The proxy
    // refuses them as the client's error instead, ten times over without tripping.
    for _ in 0..10 {
        let (status, head) = raw_exchange(proxy.addr, &with_trailers(120)).await;
        assert_eq!(status, 400, "{head}");
    }
    assert_eq!(
        proxy.proxy.circuit_breaker().state("a"),
        Some(BreakerState::Closed),
        "the backend is not blamed for the client's trailers"
    );
    assert_eq!(proxy.proxy.retry_stats().retries, 0, "nothing was retried");
    let (status, served_by, _) = get(&client(), &proxy.url("/")).await;
    assert_eq!((status, served_by.as_str()), (StatusCode::OK, "a"));
    // The refused requests' heads had gone ahead of their bodies; their trailers did not.
    assert_eq!(a.request_count(), forwarded + 10 + 1);
}
