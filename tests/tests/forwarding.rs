//! End to end on loopback: real backends, the real server, the standard stack.

use std::collections::HashMap;
use std::time::Duration;

use http::{Request, StatusCode};
use switchyard::{Backend, ProxyConfig};
use switchyard_server::ServerConfig;
use switchyard_tests::{
    backend, client, full, get, h2_client, send, tally, BackgroundGets, TestProxy,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn three_hundred_gets_spread_evenly_over_three_backends() {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let proxy = TestProxy::with(&[&a, &b, &c]).await;
    let seen = tally(&proxy, 300).await;
    assert_eq!(
        seen,
        HashMap::from([("a".into(), 100), ("b".into(), 100), ("c".into(), 100)])
    );
    assert_eq!(
        (a.request_count(), b.request_count(), c.request_count()),
        (100, 100, 100)
    );
}

#[tokio::test]
async fn weights_are_honoured() {
    let (a, b) = (backend("a").await, backend("b").await);
    let proxy = TestProxy::start(switchyard_tests::config(), ServerConfig::default(), &[]).await;
    proxy.proxy.add_backend(a.backend().weight(3)).unwrap();
    proxy.proxy.add_backend(b.backend()).unwrap();
    proxy.proxy.settled().await;
    let seen = tally(&proxy, 400).await;
    assert_eq!(seen, HashMap::from([("a".into(), 300), ("b".into(), 100)]));
}

#[tokio::test]
async fn backends_added_and_removed_at_runtime_lose_no_request() {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let proxy = TestProxy::with(&[&a, &b]).await;
    let load = BackgroundGets::start(&proxy.url("/"), 4, 150);
    load.until_sent(100).await;
    proxy.proxy.add_backend(c.backend()).unwrap();
    load.until_sent(300).await;
    let removed = proxy.proxy.remove_backend("a").unwrap();
    assert_eq!(removed.id, "a");
    let a_at_removal = a.request_count();
    let (sent, failures) = load.finish().await;
    assert_eq!(failures, 0, "requests failed during changes");
    assert_eq!(sent, 600);
    assert!(c.request_count() > 0, "added backend got no traffic");
    // At most the requests already routed to `a` when it was removed may reach it after.
    assert!(
        a.request_count() <= a_at_removal + 4,
        "removed backend kept getting traffic"
    );
    assert_eq!(proxy.backend_ids(), ["b", "c"]);
    let seen = tally(&proxy, 10).await;
    assert!(!seen.contains_key("a"), "{seen:?}");
}

#[tokio::test]
async fn inactive_backend_is_listed_but_gets_nothing() {
    let (a, b) = (backend("a").await, backend("b").await);
    let proxy = TestProxy::with(&[&a]).await;
    proxy.proxy.add_backend(b.backend().active(false)).unwrap();
    proxy.proxy.settled().await;
    assert_eq!(proxy.proxy.list_backends().len(), 2);
    let seen = tally(&proxy, 6).await;
    assert_eq!(seen, HashMap::from([("a".into(), 6)]));
}

#[tokio::test]
async fn duplicate_and_unknown_backends_are_refused() {
    let a = backend("a").await;
    let proxy = TestProxy::with(&[&a]).await;
    let err = proxy.proxy.add_backend(a.backend()).unwrap_err();
    assert!(err.to_string().contains("exists already"), "{err}");
    let err = proxy.proxy.remove_backend("nope").unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    let err = proxy
        .proxy
        .add_backend(Backend::new("x", "ftp://127.0.0.1:1".parse().unwrap()))
        .unwrap_err();
    assert!(err.to_string().contains("unsupported scheme"), "{err}");
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_and_forwarding_headers_added() {
    let a = backend("a").await;
    let proxy = TestProxy::with(&[&a]).await;
    let req = Request::get(proxy.url("/headers"))
        .header("connection", "keep-alive, x-private")
        .header("x-private", "do not forward")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("x-forwarded-for", "192.0.2.1")
        .header("x-end-to-end", "yes")
        .body(full(""))
        .unwrap();
    let (status, _, seen) = send(&client(), req).await;
    assert_eq!(status, StatusCode::OK);
    let header = |name: &str| {
        seen.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::to_owned)
    };
    for gone in ["x-private", "keep-alive", "proxy-connection"] {
        assert_eq!(header(gone), None, "{gone} reached the backend:\n{seen}");
    }
    assert_ne!(
        header("connection").as_deref(),
        Some("keep-alive, x-private")
    );
    assert_eq!(
        header("x-forwarded-for").as_deref(),
        Some("192.0.2.1, 127.0.0.1")
    );
    assert_eq!(header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(header("x-forwarded-host"), Some(proxy.addr.to_string()));
    assert_eq!(
        header("host"),
        Some(proxy.addr.to_string()),
        "client Host kept"
    );
    assert_eq!(header("via").as_deref(), Some("1.1 switchyard"));
    assert_eq!(header("x-end-to-end").as_deref(), Some("yes"));

    let res = client()
        .request(Request::get(proxy.url("/hop")).body(full("")).unwrap())
        .await
        .unwrap();
    assert!(
        !res.headers().contains_key("x-hop-private"),
        "{:?}",
        res.headers()
    );
    assert!(!res.headers().contains_key("keep-alive"));
    assert_eq!(res.headers()["x-end-to-end"], "kept");
    assert_eq!(res.headers()["via"], "1.1 switchyard");
}

#[tokio::test]
async fn host_rewritten_to_backend_when_not_preserved() {
    let a = backend("a").await;
    let config = ProxyConfig {
        preserve_host: false,
        ..switchyard_tests::config()
    };
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&a]).await;
    let (_, _, seen) = get(&client(), &proxy.url("/headers")).await;
    assert!(seen.contains(&format!("host: {}\n", a.addr)), "{seen}");
    assert!(
        seen.contains(&format!("x-forwarded-host: {}\n", proxy.addr)),
        "{seen}"
    );
}

#[tokio::test]
async fn no_backends_is_503() {
    let proxy = TestProxy::with(&[]).await;
    let (status, _, body) = get(&client(), &proxy.url("/")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "no backend is available\n");
}

#[tokio::test]
async fn connection_refused_is_502() {
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let proxy = TestProxy::with(&[]).await;
    let url = format!("http://{closed}").parse().unwrap();
    proxy.proxy.add_backend(Backend::new("gone", url)).unwrap();
    proxy.proxy.settled().await;
    let (status, _, body) = get(&client(), &proxy.url("/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        body, "bad gateway\n",
        "no backend detail leaks to the client"
    );
}

#[tokio::test]
async fn backend_slower_than_the_request_timeout_is_504() {
    let a = backend("a").await;
    let config = ProxyConfig {
        request_timeout: Duration::from_millis(200),
        ..switchyard_tests::config()
    };
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&a]).await;
    let (status, _, _) = get(&client(), &proxy.url("/hang")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    // The proxy is fine afterwards.
    let (status, backend, _) = get(&client(), &proxy.url("/")).await;
    assert_eq!((status, backend.as_str()), (StatusCode::OK, "a"));
}

#[tokio::test]
async fn http2_clients_are_served() {
    let a = backend("a").await;
    let proxy = TestProxy::with(&[&a]).await;
    let (status, backend, seen) = get(&h2_client(), &proxy.url("/headers")).await;
    assert_eq!((status, backend.as_str()), (StatusCode::OK, "a"));
    assert!(seen.contains("via: 2 switchyard\n"), "{seen}");
    assert!(
        seen.contains(&format!("host: {}\n", proxy.addr)),
        "h2 authority kept as Host:\n{seen}"
    );
}

async fn raw(proxy: &TestProxy, bytes: &[u8]) -> String {
    exchange(proxy, bytes).await.0
}

/// Writes `bytes` on a new connection and reads until the proxy closes it or 5 s pass:
/// what came back, and whether the proxy closed the connection in that time.
async fn exchange(proxy: &TestProxy, bytes: &[u8]) -> (String, bool) {
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut out)).await;
    (String::from_utf8_lossy(&out).into_owned(), read.is_ok())
}

#[tokio::test]
async fn malformed_requests_get_4xx_and_the_proxy_keeps_serving() {
    let a = backend("a").await;
    let proxy = TestProxy::with(&[&a]).await;
    let res = raw(&proxy, b"THIS IS NOT HTTP\r\n\r\n").await;
    assert!(res.starts_with("HTTP/1.1 400"), "{res}");
    let huge = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let res = raw(&proxy, huge.as_bytes()).await;
    assert!(res.starts_with("HTTP/1.1 431"), "{res}");
    // CONNECT asks for a tunnel to a host of the client's choosing: not a reverse
    // proxy's job, and nothing for a backend.
    let connect =
        b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\nconnection: close\r\n\r\n";
    let res = raw(&proxy, connect).await.to_lowercase();
    assert!(res.starts_with("http/1.1 405"), "{res}");
    assert!(res.contains("allow: get, head"), "{res}");
    assert_eq!(a.request_count(), 0);
    let (status, _, _) = get(&client(), &proxy.url("/")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn request_body_over_the_limit_is_413() {
    let a = backend("a").await;
    let server = ServerConfig {
        max_request_body: Some(switchyard::ByteSize(1024)),
        ..ServerConfig::default()
    };
    let proxy = TestProxy::start(switchyard_tests::config(), server, &[&a]).await;
    let req = Request::post(proxy.url("/upload"))
        .body(full(vec![0u8; 2048]))
        .unwrap();
    let (status, _, _) = send(&client(), req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        a.request_count(),
        0,
        "an oversized body reached the backend"
    );
    let req = Request::post(proxy.url("/upload"))
        .body(full(vec![0u8; 512]))
        .unwrap();
    let (status, _, body) = send(&client(), req).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "512"));
}

#[tokio::test]
async fn slow_and_idle_clients_are_cut_off() {
    let server = ServerConfig {
        header_read_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let a = backend("a").await;
    let proxy = TestProxy::start(switchyard_tests::config(), server, &[&a]).await;

    // A client that never finishes its header is disconnected.
    let (_, closed) = exchange(&proxy, b"GET / HTTP/1.1\r\nhost: x\r\n").await;
    assert!(closed, "slow client was not cut off");

    // An idle keep-alive connection is closed too.
    let (answer, closed) = exchange(&proxy, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(closed, "idle keep-alive connection was not closed");
    assert!(answer.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let a = backend("a").await;
    let mut proxy = TestProxy::with(&[&a]).await;
    let url = proxy.url("/stream/1048576");
    let in_flight = tokio::spawn(async move {
        let res = client()
            .request(Request::get(url).body(full("")).unwrap())
            .await
            .unwrap();
        http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes()
            .len()
    });
    while a.request_count() == 0 {
        tokio::task::yield_now().await;
    }
    proxy.shutdown();
    assert_eq!(
        in_flight.await.unwrap(),
        1 << 20,
        "in-flight response was cut"
    );
    proxy.done.take().unwrap().await.unwrap();
    assert!(
        TcpStream::connect(proxy.addr).await.is_err(),
        "still accepting after shutdown"
    );
}

/// A client that sends its requests and then half-closes (`nc -N`, `curl` over a pipe)
/// gets every answer, from either HTTP/1.1 engine: the requests have gone on to the
/// backend, so dropping their answers would lose work the backend did.
#[tokio::test]
async fn a_client_that_half_closes_gets_its_answers_from_either_engine() {
    use switchyard_server::Http1Engine;

    for engine in [Http1Engine::Native, Http1Engine::Hyper] {
        let a = backend("a").await;
        let server = ServerConfig {
            http1: engine,
            ..ServerConfig::default()
        };
        let proxy = TestProxy::start(switchyard_tests::config(), server, &[&a]).await;
        let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
        let two = "GET /one HTTP/1.1\r\nhost: example.test\r\n\r\n\
                   GET /two HTTP/1.1\r\nhost: example.test\r\n\r\n";
        conn.write_all(two.as_bytes()).await.unwrap();
        conn.shutdown().await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out))
            .await
            .expect("the proxy answers and closes within 10 s")
            .unwrap();
        let out = String::from_utf8_lossy(&out);
        assert_eq!(
            out.matches("HTTP/1.1 200 OK").count(),
            2,
            "{engine:?}: both answers reach the client; it got:\n{out}"
        );
        assert_eq!(a.request_count(), 2, "{engine:?}");
    }
}
