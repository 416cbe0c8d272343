//! The admin API: every route, authentication, bad input, and changes that reach routing.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use http::{Request, StatusCode};
use serde_json::{json, Value};
use switchyard::ProxyConfig;
use switchyard_admin::AdminConfig;
use switchyard_server::ServerConfig;
use switchyard_tests::{backend, client, full, get, send, TestBackend, TestProxy};
use tokio::net::TcpListener;
use tower::ServiceExt;

struct Admin {
    base: String,
    token: Option<String>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_admin(proxy: &TestProxy, token: Option<&str>) -> Admin {
    let admin = AdminConfig {
        token: token.map(str::to_owned),
        ..AdminConfig::default()
    };
    // The configuration `GET /config` shows, as the binary's file has it.
    let shown = json!({ "admin": &admin, "proxy": ProxyConfig::default() });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = switchyard_admin::router(proxy.proxy.clone(), &admin, &shown);
    tokio::spawn(switchyard_admin::serve(listener, router, async {
        let _ = stopped.await;
    }));
    Admin {
        base,
        token: token.map(str::to_owned),
        _stop: stop,
    }
}

impl Admin {
    async fn call(&self, method: &str, path: &str, body: Option<&str>) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(full(body.unwrap_or("").to_owned())).unwrap();
        let (status, _, text) = send(&client(), req).await;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }
}

async fn two() -> (TestBackend, TestBackend, TestProxy) {
    let (a, b) = (backend("a").await, backend("b").await);
    let proxy = TestProxy::with(&[&a, &b]).await;
    (a, b, proxy)
}

async fn backends_seen(proxy: &TestProxy, n: usize) -> Vec<String> {
    let client = client();
    let mut seen = Vec::new();
    for _ in 0..n {
        seen.push(get(&client, &proxy.url("/")).await.1);
    }
    seen.sort();
    seen.dedup();
    seen
}

#[tokio::test]
async fn backends_healthz_config_and_unknown_routes() {
    let (_a, _b, proxy) = two().await;
    let admin = start_admin(&proxy, None).await;

    let (status, list) = admin.call("GET", "/backends", None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    let a = &list[0];
    assert_eq!(a["state"], "enabled");
    assert_eq!(a["weight"], 1);
    assert_eq!(a["health"]["state"], "unknown");
    assert_eq!(a["breaker"]["state"], "closed");
    assert_eq!(a["pool"]["open"], 0);

    let (status, one) = admin.call("GET", "/backends/b", None).await;
    assert_eq!((status, one["id"].as_str()), (StatusCode::OK, Some("b")));
    let (status, err) = admin.call("GET", "/backends/zzz", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"], "no backend has id `zzz`");

    assert_eq!(
        admin.call("GET", "/healthz", None).await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let (status, config) = admin.call("GET", "/config", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config["proxy"]["max_retries"], 3);
    assert_eq!(config["proxy"]["request_timeout"], "30s");

    let (status, err) = admin.call("GET", "/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(err["error"].is_string());

    get(&client(), &proxy.url("/")).await;
    let (status, stats) = admin.call("GET", "/stats", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["total_requests"], 1);
    assert_eq!(stats["successful_requests"], 1);
    assert!(stats["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(stats["backend_metrics"]["a"]["requests"], 1);
    let (_, list) = admin.call("GET", "/backends", None).await;
    assert_eq!(list[0]["metrics"]["requests"], 1);
    let (status, text) = admin.call("GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().unwrap();
    assert!(
        text.contains("switchyard_requests_total{outcome=\"success\"} 1"),
        "{text}"
    );

    let (status, page) = admin.call("GET", "/", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.as_str().unwrap().contains("<title>switchyard</title>"));
}

#[tokio::test]
async fn a_token_is_required_when_configured_and_never_shown() {
    let (_a, _b, proxy) = two().await;
    let mut admin = start_admin(&proxy, Some("s3cret")).await;
    let (status, config) = admin.call("GET", "/config", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config["admin"]["token"], "<redacted>");

    admin.token = Some("wrong".into());
    let (status, err) = admin.call("GET", "/backends", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(err["error"], "a valid bearer token is required");
    admin.token = None;
    for (path, expected) in [
        ("/backends", StatusCode::UNAUTHORIZED),
        ("/", StatusCode::UNAUTHORIZED),
        // The dashboard page can be opened with the token in its URL.
        ("/?access_token=s3cret", StatusCode::OK),
        ("/?access_token=s3cre", StatusCode::UNAUTHORIZED),
    ] {
        assert_eq!(admin.call("GET", path, None).await.0, expected, "{path}");
    }
}

#[tokio::test]
async fn without_a_token_only_loopback_clients_are_served() {
    let (_a, _b, proxy) = two().await;
    let router = switchyard_admin::router(proxy.proxy.clone(), &AdminConfig::default(), &());
    let from = |peer: SocketAddr| {
        let mut req = Request::get("/healthz")
            .body(axum::body::Body::empty())
            .unwrap();
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    };
    let res = router
        .clone()
        .oneshot(from(([10, 1, 2, 3], 5000).into()))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = router
        .oneshot(from(([127, 0, 0, 1], 5000).into()))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn adding_patching_and_removing_backends_changes_routing() {
    let (_a, _b, proxy) = two().await;
    let c = backend("c").await;
    let admin = start_admin(&proxy, None).await;

    let body = json!({ "id": "c", "url": c.backend().url.to_string(), "weight": 2 }).to_string();
    let (status, added) = admin.call("POST", "/backends", Some(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(added["weight"], 2);
    assert_eq!(backends_seen(&proxy, 8).await, ["a", "b", "c"]);

    // Bad input: 4xx with a JSON error, nothing changed.
    let (status, err) = admin.call("POST", "/backends", Some("{not json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["error"].as_str().unwrap().contains("JSON"), "{err}");
    let (status, err) = admin.call("POST", "/backends", Some(&body)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(err["error"], "a backend with id `c` exists already");
    let bad_url = json!({ "id": "d", "url": "ftp://127.0.0.1:1" }).to_string();
    assert_eq!(
        admin.call("POST", "/backends", Some(&bad_url)).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let unknown_key =
        json!({ "id": "d", "url": "http://127.0.0.1:1", "colour": "red" }).to_string();
    let (status, err) = admin.call("POST", "/backends", Some(&unknown_key)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["error"].as_str().unwrap().contains("colour"), "{err}");
    assert_eq!(
        admin
            .call("GET", "/backends", None)
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let (status, patched) = admin
        .call("PATCH", "/backends/a", Some(r#"{"state":"disabled"}"#))
        .await;
    assert_eq!(
        (status, &patched["state"]),
        (StatusCode::OK, &json!("disabled"))
    );
    assert_eq!(backends_seen(&proxy, 6).await, ["b", "c"]);
    let (status, patched) = admin
        .call(
            "PATCH",
            "/backends/a",
            Some(r#"{"state":"enabled","weight":5}"#),
        )
        .await;
    assert_eq!((status, &patched["weight"]), (StatusCode::OK, &json!(5)));
    assert_eq!(backends_seen(&proxy, 8).await, ["a", "b", "c"]);
    assert_eq!(
        admin
            .call("PATCH", "/backends/a", Some(r#"{"state":"asleep"}"#))
            .await
            .0
            .as_u16()
            / 100,
        4
    );
    for (path, patch, expected) in [
        (
            "/backends/a",
            r#"{"weight":0}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("/backends/zzz", r#"{"weight":1}"#, StatusCode::NOT_FOUND),
    ] {
        let (status, _) = admin.call("PATCH", path, Some(patch)).await;
        assert_eq!(status, expected, "{path} {patch}");
    }

    let (status, removed) = admin.call("DELETE", "/backends/b", None).await;
    assert_eq!((status, &removed["removed"]), (StatusCode::OK, &json!("b")));
    assert_eq!(backends_seen(&proxy, 8).await, ["a", "c"]);
    assert_eq!(
        admin.call("DELETE", "/backends/b", None).await.0,
        StatusCode::NOT_FOUND
    );

    let (status, _) = admin
        .call("PATCH", "/backends/c", Some(r#"{"state":"draining"}"#))
        .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(5), async {
        while admin.call("GET", "/backends/c", None).await.0 != StatusCode::NOT_FOUND {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the drained backend is removed");
    assert_eq!(backends_seen(&proxy, 4).await, ["a"]);
}

#[tokio::test]
async fn health_check_now_reports_a_dead_backend() {
    let (a, b) = (backend("a").await, backend("b").await);
    let mut config = switchyard_tests::config();
    config.health.enabled = true;
    config.health.interval = Duration::from_secs(3600);
    config.health.fall = 1;
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&a, &b]).await;
    let admin = start_admin(&proxy, None).await;
    b.kill();
    let (status, report) = admin.call("POST", "/health/check", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report[0]["health"]["state"], "healthy");
    assert_eq!(report[1]["health"]["state"], "unhealthy");
    assert!(report[1]["health"]["error"]
        .as_str()
        .unwrap()
        .contains("connect"));
    assert!(report[1]["health"]["endpoints"][0]["response_time_ms"].is_number());
    assert_eq!(backends_seen(&proxy, 4).await, ["a"]);
}

#[tokio::test]
async fn cache_purge_drops_stored_responses() {
    let (a, b, proxy) = two().await;
    let admin = start_admin(&proxy, None).await;
    let client = client();
    let cached = proxy.url("/cacheable/60");
    let fetched = || a.request_count() + b.request_count();
    get(&client, &cached).await;
    get(&client, &cached).await;
    assert_eq!(fetched(), 1, "the second GET was a hit");

    let body = json!({ "url": cached }).to_string();
    let (status, purged) = admin.call("POST", "/cache/purge", Some(&body)).await;
    assert_eq!((status, &purged["purged"]), (StatusCode::OK, &json!(1)));
    get(&client, &cached).await;
    assert_eq!(fetched(), 2, "purged: fetched again");

    let (status, purged) = admin
        .call("POST", "/cache/purge", Some(r#"{"all":true}"#))
        .await;
    assert_eq!((status, &purged["purged"]), (StatusCode::OK, &json!(1)));
    let (status, err) = admin
        .call("POST", "/cache/purge", Some(r#"{"url":"/relative"}"#))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["error"].as_str().unwrap().contains("absolute"));
    assert_eq!(
        admin.call("POST", "/cache/purge", Some("{}")).await.0,
        StatusCode::BAD_REQUEST
    );
}
