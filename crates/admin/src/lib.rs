//! The admin API and dashboard of a running [`Proxy`], on their own listener: change the
//! backends without a restart, look at their health, breakers, pools and metrics, purge
//! the cache. [`router`] builds it as an axum `Router` ([`live_router`] with a token that
//! can change while it serves, [`AdminToken`]); [`serve`] serves it, and
//! [`serve_reloading`] on the listeners a reload moves it to. [`Listen`] puts in force
//! what a reload changed of where and how the proxy and the admin API are served
//! ([`Listening`]); [`LiveConfig`] reads a configuration again and applies it.
//! [`apply_backends`] applies a new list of backends, as from a configuration file read
//! again, without undoing what the API changed; [`apply_proxy`] its `[proxy]` settings.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the dashboard: one self-contained page that refreshes every second |
//! | `GET /backends` | every backend: admin state, health, breaker, pool, metrics |
//! | `POST /backends` | add one: `{"id", "url", "weight"?, "protocol"?, "active"?}` |
//! | `GET /backends/{id}` | one backend |
//! | `PATCH /backends/{id}` | `{"weight"?, "state"?: "enabled" \| "disabled" \| "draining"}` |
//! | `DELETE /backends/{id}` | remove it now (requests in flight finish) |
//! | `GET /stats` | the proxy's counters as JSON (specification `GetMetrics`) |
//! | `GET /metrics` | the same and the backends' pool, breaker and health state, as Prometheus text (OpenMetrics when asked for in `Accept`) |
//! | `GET /healthz` | the proxy's own liveness |
//! | `POST /health/check` | check every backend now; answers their health |
//! | `POST /cache/purge` | `{"url": "http://host/path"}` drops that URL's stored responses, `{"all": true}` every one |
//! | `GET /config` | the configuration in force, secrets redacted, and `loaded_at`, when it was read |
//! | `POST /config/reload` | read the configuration file again and apply it, as SIGHUP does: answers what changed, or 422 with every problem (key and line) and nothing changed |
//! | `GET /requests/recent` | the last requests' decision traces, newest first; `?status=503` or `5xx`, `backend=`, `path=` (prefix), `limit=` |
//! | `GET /requests/tail` | each request's decision trace as it finishes (server-sent events), with the same filters |
//!
//! Errors are JSON: `{"error": "..."}` with a 4xx status. Without a token only loopback
//! clients are served; with one, every request must carry `Authorization: Bearer <token>`
//! (or `?access_token=<token>`, RFC 6750 §2.3, so the dashboard page itself can be opened).
//! The same token, sent by a proxied request in `Switchyard-Trace`, gets that request's
//! decision trace back in the response's `Switchyard-Trace`.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use switchyard::trace::tokens_match as same;
use switchyard::{
    AdminState, Backend, BackendError, BackendSnapshot, PoolStats, Proxy, TextFormat,
};
use tokio::net::TcpListener;
use tokio::time::Instant;

mod config;
#[cfg(unix)]
mod listen;
mod reload;
mod requests;

pub use config::{LiveConfig, NotReloaded};
#[cfg(unix)]
pub use listen::{serve_reloading, AdminMoved, AdminMover, Handed, Listen, Listening};
pub use reload::{apply_backends, apply_proxy, Reloaded};

const DASHBOARD: &str = include_str!("dashboard.html");

#[derive(Clone)]
pub(crate) struct Admin {
    proxy: Proxy,
    token: AdminToken,
    config: LiveConfig,
}

/// The admin token in force: the one every admin request must carry (see the crate docs),
/// and the one a proxied request sends in `Switchyard-Trace` to get its trace. Cheap to
/// clone; clones share it, so that [`AdminToken::set`] applies at once to the router
/// built with it (to the next request on every admin connection) and to the proxy.
#[derive(Clone)]
pub struct AdminToken {
    token: Arc<ArcSwapOption<String>>,
    proxy: Proxy,
}

impl AdminToken {
    /// `token` for the admin API over `proxy`, and for its traces.
    pub fn new(proxy: &Proxy, token: Option<&str>) -> Self {
        let admin = Self {
            token: Arc::default(),
            proxy: proxy.clone(),
        };
        admin.set(token);
        admin
    }

    /// Puts `token` in force from now on; `None`: no token (loopback clients only, and no
    /// proxied request gets its trace).
    pub fn set(&self, token: Option<&str>) {
        self.token.store(token.map(|t| Arc::new(t.to_owned())));
        self.proxy.traces().set_token(token);
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.token.load().is_some();
        f.debug_struct("AdminToken").field("set", &set).finish()
    }
}

switchyard_core::with_defaults! {
    /// The admin listener's settings.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct AdminConfig {
        /// Whether the admin API and dashboard are served.
        pub enabled: bool = true,
        /// Where the admin API listens; loopback unless a token is set.
        pub listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9901)),
        /// Bearer token every admin request must carry, when set.
        pub token: Option<String> = None,
    }
}

impl AdminConfig {
    /// Why these settings cannot be served, as (key, message): an empty token, or a
    /// listener off loopback without a token.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        match &self.token {
            Some(token) if token.is_empty() => Some(("admin.token", "must not be empty")),
            None if !self.listen.ip().is_loopback() => Some((
                "admin.listen",
                "a non-loopback admin listener needs `admin.token`",
            )),
            _ => None,
        }
    }
}

/// The admin API over `proxy`, with `admin`'s token, showing `config` at `GET /config`
/// (the whole configuration, in which `admin.token`, the token, is redacted).
pub fn router(proxy: Proxy, admin: &AdminConfig, config: &impl Serialize) -> Router {
    let token = AdminToken::new(&proxy, admin.token.as_deref());
    live_router(proxy, &token, LiveConfig::fixed(config))
}

/// The admin API over `proxy`, with `token` (which may change while it serves), showing
/// `config` at `GET /config` and reading it again at `POST /config/reload`.
pub fn live_router(proxy: Proxy, token: &AdminToken, config: LiveConfig) -> Router {
    let admin = Admin {
        proxy,
        token: token.clone(),
        config,
    };
    Router::new()
        .route("/", get(dashboard))
        .route("/backends", get(list_backends).post(add_backend))
        .route(
            "/backends/{id}",
            get(get_backend).patch(patch_backend).delete(delete_backend),
        )
        .route("/stats", get(stats))
        .route("/metrics", get(prometheus))
        .route("/healthz", get(healthz))
        .route("/health/check", post(check_now))
        .route("/cache/purge", post(purge))
        .route("/config", get(config_view))
        .route("/config/reload", post(config_reload))
        .route("/requests/recent", get(requests::recent))
        .route("/requests/tail", get(requests::tail))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such admin route") })
        .layer(middleware::from_fn_with_state(admin.clone(), authorize))
        .with_state(admin)
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "admin listener failed");
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn authorize(
    State(admin): State<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    match admin.token.token.load().as_deref() {
        None if !peer.ip().is_loopback() => {
            return error(
                StatusCode::FORBIDDEN,
                "the admin API serves loopback clients only unless a token is configured",
            )
        }
        None => {}
        Some(token) => {
            let offered = bearer(&req).or_else(|| query_token(&req));
            if !offered.is_some_and(|t| same(t.as_bytes(), token.as_bytes())) {
                let mut res = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return res;
            }
        }
    }
    next.run(req).await
}

fn bearer(req: &Request) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

fn query_token(req: &Request) -> Option<String> {
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "access_token").then(|| v.to_owned())
    })
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ago(t: Option<Instant>) -> Value {
    t.map_or(Value::Null, |t| json!(ms(t.elapsed())))
}

fn pool_json(p: &PoolStats) -> Value {
    serde_json::to_value(p).unwrap_or(Value::Null)
}

/// Every backend as the API shows it, in the order they were added.
fn backend_views(admin: &Admin) -> Vec<Value> {
    let proxy = &admin.proxy;
    let health = proxy.health_status();
    let pools: HashMap<String, PoolStats> = proxy.pool_stats().into_iter().collect();
    let protocols: HashMap<String, Backend> = proxy
        .list_backends()
        .into_iter()
        .map(|b| (b.id.clone(), b))
        .collect();
    let breakers = proxy.circuit_breaker();
    let max_connections = proxy.config().pool.max_connections;
    let metrics = proxy.metrics().backend_metrics;
    health
        .backends
        .iter()
        .map(|b| {
            let endpoints: Vec<Value> = b
                .endpoints
                .iter()
                .map(|e| {
                    json!({
                        "addr": e.addr.to_string(),
                        "health": e.health.name(),
                        "routed": e.routed,
                        "consecutive_failures": e.consecutive_failures,
                        "consecutive_successes": e.consecutive_successes,
                        "checks": e.checks,
                        "last_check_ms_ago": ago(e.last_check),
                        "response_time_ms": e.last_response_time.map(ms),
                        "error": e.last_error,
                        "last_transition_ms_ago": ago(e.last_transition),
                    })
                })
                .collect();
            let breaker = breakers.state(&b.id);
            json!({
                "id": b.id,
                "url": b.url.to_string(),
                "weight": b.weight,
                "protocol": protocols.get(&b.id).map(|p| p.protocol),
                "state": b.admin.name(),
                "in_flight": b.in_flight,
                "health": {
                    "state": b.health.name(),
                    "is_healthy": b.is_healthy(),
                    "consecutive_failures": b.consecutive_failures,
                    "response_time_ms": b.response_time.map(ms),
                    "error": b.error,
                    "passive": b.passive,
                    "panic": health.panic,
                    "endpoints": endpoints,
                },
                "breaker": {
                    "state": breaker.map(|s| s.name()),
                    "trips": breakers.trips(&b.id),
                },
                "pool": pools.get(&b.id).map(pool_json),
                "metrics": metrics.get(&b.id).map(backend_metrics_json),
                "max_connections": max_connections,
            })
        })
        .collect()
}

async fn list_backends(State(admin): State<Admin>) -> Json<Vec<Value>> {
    Json(backend_views(&admin))
}

fn one_backend(admin: &Admin, id: &str) -> Response {
    match backend_views(admin).into_iter().find(|b| b["id"] == id) {
        Some(view) => Json(view).into_response(),
        None => no_such_backend(id),
    }
}

async fn get_backend(State(admin): State<Admin>, Path(id): Path<String>) -> Response {
    one_backend(&admin, &id)
}

fn no_such_backend(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no backend has id `{id}`"))
}

fn backend_error(e: BackendError) -> Response {
    let status = match e {
        BackendError::Duplicate(_) => StatusCode::CONFLICT,
        BackendError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    error(status, e.to_string())
}

fn bad_json(rejection: JsonRejection) -> Response {
    error(StatusCode::BAD_REQUEST, rejection.body_text())
}

async fn add_backend(
    State(admin): State<Admin>,
    body: Result<Json<Backend>, JsonRejection>,
) -> Result<Response, Response> {
    let Json(backend) = body.map_err(bad_json)?;
    let id = backend.id.clone();
    admin.proxy.add_backend(backend).map_err(backend_error)?;
    admin.proxy.settled().await;
    let mut res = one_backend(&admin, &id);
    *res.status_mut() = StatusCode::CREATED;
    Ok(res)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    weight: Option<u32>,
    state: Option<AdminState>,
}

async fn patch_backend(
    State(admin): State<Admin>,
    Path(id): Path<String>,
    body: Result<Json<Patch>, JsonRejection>,
) -> Result<Response, Response> {
    let Json(patch) = body.map_err(bad_json)?;
    if !admin.proxy.list_backends().iter().any(|b| b.id == id) {
        return Err(no_such_backend(&id));
    }
    let proxy = &admin.proxy;
    if let Some(weight) = patch.weight {
        proxy.set_weight(&id, weight).map_err(backend_error)?;
    }
    let changed = match patch.state {
        None => Ok(()),
        Some(AdminState::Enabled) => proxy.enable_backend(&id),
        Some(AdminState::Disabled) => proxy.disable_backend(&id),
        // The drain goes on in the background; GET shows it until the backend is gone.
        Some(AdminState::Draining) => proxy.drain_backend(&id).map(drop),
    };
    changed.map_err(backend_error)?;
    proxy.settled().await;
    let res = one_backend(&admin, &id);
    if res.status() == StatusCode::NOT_FOUND && patch.state == Some(AdminState::Draining) {
        // Nothing was in flight: the drain is over already.
        return Ok(Json(json!({ "id": id, "state": "draining", "removed": true })).into_response());
    }
    Ok(res)
}

async fn delete_backend(State(admin): State<Admin>, Path(id): Path<String>) -> Response {
    match admin.proxy.remove_backend(&id) {
        Ok(removed) => {
            admin.proxy.settled().await;
            Json(json!({ "removed": removed.id })).into_response()
        }
        Err(e) => backend_error(e),
    }
}

async fn check_now(State(admin): State<Admin>) -> Json<Vec<Value>> {
    admin.proxy.check_now().await;
    Json(backend_views(&admin))
}

fn backend_metrics_json(m: &BackendSnapshot) -> Value {
    json!({
        "requests": m.requests,
        "successes": m.successes,
        "failures": m.failures,
        "cancelled": m.cancelled,
        "success_rate": m.success_rate,
        "in_flight": m.in_flight,
        "average_response_time_ms": ms(m.average_response_time),
        "p99_ms": ms(m.p99),
    })
}

async fn stats(State(admin): State<Admin>) -> Json<Value> {
    let m = admin.proxy.metrics();
    let backends: serde_json::Map<String, Value> = m
        .backend_metrics
        .iter()
        .map(|(id, b)| (id.clone(), backend_metrics_json(b)))
        .collect();
    Json(json!({
        "total_requests": m.total_requests,
        "successful_requests": m.successful_requests,
        "failed_requests": m.failed_requests,
        "cancelled_requests": m.cancelled_requests,
        "in_flight": m.in_flight,
        "average_response_time_ms": ms(m.average_response_time),
        "latency": {
            "p50_ms": ms(m.latency.p50),
            "p90_ms": ms(m.latency.p90),
            "p99_ms": ms(m.latency.p99),
            "max_ms": ms(m.latency.max),
            "count": m.latency.count,
        },
        "cache_hits": m.cache_hits,
        "cache_misses": m.cache_misses,
        "total_retries": m.total_retries,
        "retry": admin.proxy.retry_stats(),
        "cache": admin.proxy.cache().map(|c| c.stats()),
        "upgraded_connections": admin.proxy.tunnel_stats(),
        "backend_metrics": backends,
    }))
}

async fn prometheus(State(admin): State<Admin>, headers: axum::http::HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let format = if openmetrics {
        TextFormat::OpenMetrics
    } else {
        TextFormat::Prometheus
    };
    let body = admin.proxy.encode_metrics(format);
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Purge {
    url: Option<String>,
    #[serde(default)]
    all: bool,
}

async fn purge(State(admin): State<Admin>, body: Result<Json<Purge>, JsonRejection>) -> Response {
    let Json(purge) = match body {
        Ok(purge) => purge,
        Err(rejection) => return bad_json(rejection),
    };
    let Some(cache) = admin.proxy.cache() else {
        return error(StatusCode::CONFLICT, "the response cache is off");
    };
    match (purge.url, purge.all) {
        (None, true) => {
            let entries = cache.stats().entries;
            cache.purge_all();
            Json(json!({ "purged": entries })).into_response()
        }
        (Some(url), false) => {
            let uri = match url.parse::<http::Uri>() {
                Ok(uri) if uri.scheme().is_some() && uri.authority().is_some() => uri,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("`{url}` is not an absolute URL (http://host/path)"),
                    )
                }
            };
            Json(json!({ "purged": u64::from(cache.purge(&uri)) })).into_response()
        }
        _ => error(
            StatusCode::BAD_REQUEST,
            "give either `url` or `\"all\": true`",
        ),
    }
}

async fn config_reload(State(admin): State<Admin>) -> Response {
    match admin.config.reload().await {
        Some(Ok(done)) => {
            Json(json!({ "reloaded": done, "summary": done.to_string() })).into_response()
        }
        Some(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        None => error(
            StatusCode::CONFLICT,
            "the configuration does not come from a file: nothing to reload",
        ),
    }
}

async fn config_view(State(admin): State<Admin>) -> Json<Value> {
    Json(admin.config.shown())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_needs_the_whole_token() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3cre"));
        assert!(!same(b"s3cret", b"s3creT"));
        assert!(!same(b"", b"x"));
    }
}
