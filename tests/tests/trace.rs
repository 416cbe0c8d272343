//! The decision trace and W3C Trace Context, end to end on loopback: what the trace says of
//! a cache hit, of a request retried on a second backend after a 503, and of one refused
//! by open breakers; the `Switchyard-Trace` header only for the admin token, never sent
//! on; the admin API's live tail; `traceparent` at the backend, new or continued.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use switchyard::ProxyConfig;
use switchyard_admin::AdminConfig;
use switchyard_server::ServerConfig;
use switchyard_tests::{backend, backend_with, client, full, BackendOptions, TestProxy};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "s3cret";

/// Serves the admin API of `proxy` with [`TOKEN`] on loopback (which also gives the token
/// to `Switchyard-Trace`); returns where.
async fn admin(proxy: &TestProxy) -> SocketAddr {
    let config = AdminConfig {
        token: Some(TOKEN.to_owned()),
        ..AdminConfig::default()
    };
    let router = switchyard_admin::router(proxy.proxy.clone(), &config, &());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(switchyard_admin::serve(
        listener,
        router,
        std::future::pending(),
    ));
    addr
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Answer {
    /// The trace the response carries back.
    fn trace(&self) -> Value {
        let header = self
            .headers
            .get("switchyard-trace")
            .expect("the response carries its trace");
        serde_json::from_slice(header.as_bytes()).unwrap()
    }
}

/// GETs `path` through `proxy` with `headers`.
async fn get(proxy: &TestProxy, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = Request::get(proxy.url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = client().request(req.body(full("")).unwrap()).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// GETs `path` asking for its trace.
async fn traced(proxy: &TestProxy, path: &str) -> Answer {
    get(proxy, path, &[("switchyard-trace", TOKEN)]).await
}

fn config() -> ProxyConfig {
    let mut config = switchyard_tests::config();
    config.trace = true;
    config.retry.delay = Duration::from_millis(1);
    config
}

#[tokio::test]
async fn the_trace_of_a_cache_hit() {
    let a = backend("a").await;
    let proxy = TestProxy::start(config(), ServerConfig::default(), &[&a]).await;
    admin(&proxy).await;
    let miss = traced(&proxy, "/cacheable/60").await.trace();
    assert_eq!(miss["cache"]["outcome"], "miss");
    assert_eq!(miss["cache"]["reason"], "uri-miss");
    assert_eq!(miss["cache"]["stored"], true);
    assert_eq!(miss["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(miss["backend"], "a");

    let hit = traced(&proxy, "/cacheable/60").await;
    assert_eq!(hit.status, StatusCode::OK);
    let trace = hit.trace();
    assert_eq!(trace["method"], "GET");
    assert_eq!(trace["path"], "/cacheable/60");
    assert_eq!(trace["status"], 200);
    assert_eq!(trace["bytes"], hit.body.len());
    assert!(trace["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(trace["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(trace["cache"]["outcome"], "hit");
    assert_eq!(trace["cache"]["reason"], Value::Null);
    assert_eq!(trace["cache"]["stored"], false);
    // Answered from the store: no attempt, no backend.
    assert_eq!(trace["attempts"], serde_json::json!([]));
    assert_eq!(trace["backend"], Value::Null);
    assert_eq!(trace["trace_id"].as_str().unwrap().len(), 32);
    assert_eq!(a.request_count(), 1);
}

#[tokio::test]
async fn the_trace_of_a_request_retried_on_a_second_backend_after_a_503() {
    let (good, bad) = (
        backend("good").await,
        backend_with("bad", BackendOptions::failing_with(503)).await,
    );
    let mut config = config();
    config.breaker.enabled = false;
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&bad, &good]).await;
    admin(&proxy).await;
    // Round robin: one of the first two requests goes to `bad` first.
    let mut retried = None;
    for _ in 0..2 {
        let answer = traced(&proxy, "/").await;
        assert_eq!(answer.status, StatusCode::OK);
        let trace = answer.trace();
        if trace["attempts"].as_array().unwrap().len() == 2 {
            retried = Some(trace);
        }
    }
    let trace = retried.expect("a request met `bad` first");
    assert_eq!(trace["status"], 200);
    assert_eq!(trace["backend"], "good");
    assert_eq!(trace["cache"]["outcome"], "miss");
    assert_eq!(trace["cache"]["reason"], "uri-miss");
    let first = &trace["attempts"][0];
    assert_eq!(first["kind"], "first");
    assert_eq!(first["backend"], "bad");
    assert_eq!(first["status"], 503);
    assert_eq!(first["decision"], "retried");
    assert!(first["retry_after_ms"].as_f64().unwrap() <= 2.0);
    assert!(first["duration_ms"].as_f64().unwrap() >= 0.0);
    let second = &trace["attempts"][1];
    assert_eq!(second["kind"], "retry");
    assert_eq!(second["backend"], "good");
    assert_eq!(second["status"], 200);
    assert_eq!(second["decision"], "returned");
    assert_eq!(second["why"], "success");
    assert!(second["start_ms"].as_f64().unwrap() >= first["start_ms"].as_f64().unwrap());
    assert_eq!(second.get("error"), None);
    // Round robin draws nothing: the policy and the set, no costs, no alternative.
    for attempt in [first, second] {
        assert_eq!(
            attempt["balancer"],
            serde_json::json!({ "policy": "round_robin", "endpoints": 2 })
        );
    }
}

#[tokio::test]
async fn the_trace_names_the_backend_the_balancer_passed_over_and_why() {
    let (a, b) = (backend("a").await, backend("b").await);
    let mut config = config();
    config.balance.policy = switchyard::Policy::LeastRequest;
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&a, &b]).await;
    admin(&proxy).await;
    // One request held open on one of the two: it is busier by one. (Another path than
    // the traced requests', which the cache would otherwise have wait for this one.)
    let url = proxy.url("/held");
    let held = tokio::spawn(async move {
        let req = Request::get(url).header("x-test-hang", "1");
        client().request(req.body(full("")).unwrap()).await
    });
    for _ in 0..500 {
        if a.request_count() + b.request_count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let busy = if a.request_count() == 1 { "a" } else { "b" };
    assert_eq!(a.request_count() + b.request_count(), 1);
    // With two endpoints both are drawn: the idle one wins, and the trace says over which.
    for _ in 0..3 {
        let trace = traced(&proxy, "/").await.trace();
        assert_eq!(trace["status"], 200);
        assert_ne!(trace["backend"], busy, "{trace}");
        assert_eq!(
            trace["attempts"][0]["balancer"],
            serde_json::json!({
                "policy": "least_request",
                "endpoints": 2,
                "cost": 1.0,
                "alternative": { "backend": busy, "cost": 2.0 },
            })
        );
    }
    held.abort();
}

#[tokio::test]
async fn the_trace_of_a_request_refused_by_open_breakers() {
    let (x, y) = (
        backend_with("x", BackendOptions::failing_with(500)).await,
        backend_with("y", BackendOptions::failing_with(500)).await,
    );
    let proxy = TestProxy::start(config(), ServerConfig::default(), &[&x, &y]).await;
    admin(&proxy).await;
    // Five failures each open both circuits (for 30 s).
    for _ in 0..10 {
        get(&proxy, "/", &[]).await;
    }
    let answer = traced(&proxy, "/").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let trace = answer.trace();
    assert_eq!(trace["status"], 503);
    assert_eq!(trace["backend"], Value::Null);
    // The answer is the proxy's own, made above the cache: nothing the cache decided.
    assert_eq!(trace["cache"], Value::Null);
    let attempts = trace["attempts"].as_array().unwrap();
    // One attempt, not retried: with every circuit open, a backoff would find the same.
    assert_eq!(attempts.len(), 1, "{trace}");
    let attempt = &attempts[0];
    assert_eq!(attempt["kind"], "first");
    assert_eq!(attempt["backend"], Value::Null);
    assert_eq!(attempt["error"], "no_backends_available");
    assert_eq!(attempt["skipped_open_circuits"], 2);
    assert_eq!(attempt.get("status"), None);
    assert_eq!(attempt["decision"], "returned");
    assert_eq!(attempt["why"], "not_retryable");
    assert_eq!(x.request_count() + y.request_count(), 10);
}

#[tokio::test]
async fn the_trace_header_needs_the_admin_token_and_is_never_forwarded() {
    let a = backend("a").await;
    let proxy = TestProxy::start(config(), ServerConfig::default(), &[&a]).await;
    // No admin API, no token: nobody gets a trace.
    let before = get(&proxy, "/headers", &[("switchyard-trace", TOKEN)]).await;
    assert!(!before.headers.contains_key("switchyard-trace"));
    assert!(!before.body.contains("switchyard-trace"), "{}", before.body);

    admin(&proxy).await;
    let plain = get(&proxy, "/headers", &[]).await;
    assert!(!plain.headers.contains_key("switchyard-trace"));
    let wrong = get(&proxy, "/headers", &[("switchyard-trace", "s3creT")]).await;
    assert!(!wrong.headers.contains_key("switchyard-trace"));
    assert!(!wrong.body.contains("switchyard-trace"), "{}", wrong.body);
    let right = traced(&proxy, "/headers").await;
    assert_eq!(right.status, StatusCode::OK);
    assert!(!right.body.contains("switchyard-trace"), "{}", right.body);
    assert_eq!(right.trace()["path"], "/headers");
}

/// The `traceparent` line of a `/headers` answer.
fn traceparent_seen(answer: &Answer) -> String {
    answer
        .body
        .lines()
        .find_map(|l| l.strip_prefix("traceparent: "))
        .expect("the backend got a traceparent")
        .to_owned()
}

#[tokio::test]
async fn traceparent_reaches_the_backend_new_or_continued() {
    let a = backend("a").await;
    let proxy = TestProxy::start(config(), ServerConfig::default(), &[&a]).await;
    admin(&proxy).await;

    let new = traced(&proxy, "/headers").await;
    let sent = traceparent_seen(&new);
    let fields: Vec<&str> = sent.split('-').collect();
    assert_eq!(fields.len(), 4, "{sent}");
    assert_eq!((fields[0], fields[3]), ("00", "01"));
    assert_eq!((fields[1].len(), fields[2].len()), (32, 16));
    let trace = new.trace();
    assert_eq!(trace["trace_id"], fields[1]);
    assert_eq!(trace["span_id"], fields[2]);

    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let continued = get(
        &proxy,
        "/headers",
        &[
            ("traceparent", given),
            ("tracestate", "vendor=1"),
            ("switchyard-trace", TOKEN),
        ],
    )
    .await;
    let sent = traceparent_seen(&continued);
    assert!(
        sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{sent}"
    );
    assert!(sent.ends_with("-01"), "{sent}");
    // The proxy is the backend's parent now.
    assert_ne!(&sent[36..52], "00f067aa0ba902b7");
    assert!(continued.body.contains("tracestate: vendor=1"));
    assert_eq!(
        continued.trace()["trace_id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );

    // An invalid one is replaced by a new trace, and its tracestate dropped.
    let invalid = get(
        &proxy,
        "/headers",
        &[("traceparent", "00-xyz-01"), ("tracestate", "vendor=1")],
    )
    .await;
    let sent = traceparent_seen(&invalid);
    assert_eq!(sent.len(), 55, "{sent}");
    assert!(!invalid.body.contains("tracestate"));
}

#[tokio::test]
async fn traceparent_passes_untouched_when_generation_is_off() {
    let a = backend("a").await;
    let mut config = config();
    config.generate_traceparent = false;
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&a]).await;
    let none = get(&proxy, "/headers", &[]).await;
    assert!(!none.body.contains("traceparent"), "{}", none.body);
    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let passed = get(&proxy, "/headers", &[("traceparent", given)]).await;
    assert_eq!(traceparent_seen(&passed), given);
}

/// Reads the next `data:` line of a server-sent event stream.
async fn next_event(lines: &mut tokio::io::Lines<BufReader<TcpStream>>) -> Value {
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream is open");
        if let Some(data) = line.strip_prefix("data: ") {
            return serde_json::from_str(data).unwrap();
        }
    }
}

#[tokio::test]
async fn the_admin_api_tails_requests_live_and_lists_recent_ones() {
    let (a, b) = (backend("a").await, backend("b").await);
    let proxy = TestProxy::start(config(), ServerConfig::default(), &[&a, &b]).await;
    let admin = admin(&proxy).await;
    let mut conn = TcpStream::connect(admin).await.unwrap();
    let head = format!(
        "GET /requests/tail?path=/tailed&status=2xx HTTP/1.1\r\nhost: admin\r\nauthorization: Bearer {TOKEN}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut lines = BufReader::new(conn).lines();
    // The head is sent once the stream is subscribed.
    let status = lines.next_line().await.unwrap().unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    while !lines.next_line().await.unwrap().unwrap().is_empty() {}

    get(&proxy, "/other", &[]).await;
    get(&proxy, "/tailed/first", &[]).await;
    get(&proxy, "/status/404", &[]).await;
    get(&proxy, "/tailed/one", &[]).await;
    let event = next_event(&mut lines).await;
    assert_eq!(event["path"], "/tailed/first");
    assert_eq!(event["status"], 200);
    let event = next_event(&mut lines).await;
    assert_eq!(event["path"], "/tailed/one");
    assert_eq!(event["method"], "GET");
    assert!(event["backend"] == "a" || event["backend"] == "b");

    let recent = admin_get(admin, "/requests/recent?limit=2").await;
    let recent = recent.as_array().unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0]["path"], "/tailed/one");
    assert_eq!(recent[1]["path"], "/status/404");
    let failed = admin_get(admin, "/requests/recent?status=404").await;
    assert_eq!(failed.as_array().unwrap().len(), 1);
    assert_eq!(failed[0]["path"], "/status/404");
    let on_a = admin_get(admin, "/requests/recent?backend=a").await;
    assert!(on_a
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["attempts"][0]["backend"] == "a"));
}

async fn admin_get(admin: SocketAddr, path: &str) -> Value {
    let req = Request::get(format!("http://{admin}{path}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(full(""))
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}
