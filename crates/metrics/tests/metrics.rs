//! The metrics layers as an integrator wires them: proxy-wide above a small round robin over
//! two backends, each behind its backend layer.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use switchyard_metrics::prometheus_client::collector::Collector;
use switchyard_metrics::prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use switchyard_metrics::prometheus_client::metrics::MetricType;
use switchyard_metrics::{BackendMetrics, CacheCounters, MetricsRegistry, TextFormat};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{service_fn, Layer, Service, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Hands each request to the next backend in turn.
#[derive(Clone)]
struct RoundRobin<S> {
    backends: Vec<S>,
    next: usize,
}

impl<S: Service<Req>, Req> Service<Req> for RoundRobin<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.backends[self.next].poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> S::Future {
        let fut = self.backends[self.next].call(req);
        self.next = (self.next + 1) % self.backends.len();
        fut
    }
}

/// A backend answering by path: `/ok` 200, `/missing` 404, `/boom` 500, `/error` an error,
/// `/slow` 200 after 200 ms; everything after 10 ms.
async fn backend(req: Request<()>) -> Result<Response<()>, BoxError> {
    let path = req.uri().path();
    let delay = if path == "/slow" { 200 } else { 10 };
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let status = match path {
        "/missing" => StatusCode::NOT_FOUND,
        "/boom" => StatusCode::INTERNAL_SERVER_ERROR,
        "/error" => return Err("connection reset".into()),
        _ => StatusCode::OK,
    };
    Ok(Response::builder().status(status).body(()).unwrap())
}

/// The proxy-wide layer over a round robin of backends "a" and "b".
fn proxy(
    metrics: &MetricsRegistry,
) -> impl Service<Request<()>, Response = Response<()>, Error = BoxError, Future: Send> + Clone + Send
{
    let backends = ["a", "b"]
        .into_iter()
        .map(|id| metrics.backend(id).layer(service_fn(backend)))
        .collect();
    metrics.layer().layer(RoundRobin { backends, next: 0 })
}

async fn send<S>(svc: &mut S, path: &str) -> Result<StatusCode, BoxError>
where
    S: Service<Request<()>, Response = Response<()>, Error = BoxError>,
{
    let req = Request::get(path).body(()).unwrap();
    Ok(svc.ready().await?.call(req).await?.status())
}

/// Parses OpenMetrics (or, with `eof: false`, Prometheus 0.0.4) text strictly enough to
/// catch what a scraper rejects, and returns each sample by its name and labels as written.
fn parse_exposition(text: &str, eof: bool) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut family: Option<(String, String)> = None;
    let mut lines: Vec<&str> = text.split('\n').collect();
    assert_eq!(lines.pop(), Some(""), "text must end with a newline");
    if eof {
        assert_eq!(
            lines.pop(),
            Some("# EOF"),
            "OpenMetrics text must end with # EOF"
        );
    }
    let valid_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    // Per histogram series (family, labels but `le`): its buckets in order, and its count.
    let mut buckets: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<(String, String), f64> = BTreeMap::new();
    for line in lines {
        assert!(!line.is_empty(), "empty line");
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().unwrap());
            let arg = parts.next().unwrap_or("");
            assert!(valid_name(name), "bad metric name {name:?}");
            match kind {
                "HELP" => {}
                "TYPE" => {
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "info",
                            "unknown"
                        ]
                        .contains(&arg),
                        "bad type in {line:?}"
                    );
                    assert!(
                        types.insert(name.into(), arg.into()).is_none(),
                        "family {name} declared twice"
                    );
                    family = Some((name.into(), arg.into()));
                }
                "UNIT" => assert!(name.ends_with(&format!("_{arg}")), "{line:?}"),
                _ => panic!("unknown descriptor {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample without a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.strip_suffix('}').expect("unclosed labels")),
            None => (series, ""),
        };
        let mut le = None;
        let mut others = Vec::new();
        for pair in split_labels(labels) {
            let (k, v) = pair.split_once('=').expect("label without =");
            assert!(valid_name(k), "bad label name in {line:?}");
            assert!(
                v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                "{line:?}"
            );
            if k == "le" {
                le = Some(v.trim_matches('"').to_string());
            } else {
                others.push(pair);
            }
        }
        let (fam, ty) = family.as_ref().expect("sample before any # TYPE");
        let suffix = name
            .strip_prefix(fam.as_str())
            .expect("sample outside its family");
        let allowed: &[&str] = match ty.as_str() {
            "counter" if eof => &["_total", "_created"],
            "counter" | "gauge" => &["", "_total"],
            "histogram" => &["_bucket", "_count", "_sum", "_created"],
            _ => &[""],
        };
        assert!(allowed.contains(&suffix), "{name} in a {ty} family {fam}");
        let histogram_series = (fam.clone(), others.join(","));
        match (ty.as_str(), suffix) {
            ("histogram", "_bucket") => {
                let le = le.expect("bucket without le");
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                buckets
                    .entry(histogram_series)
                    .or_default()
                    .push((le, value));
            }
            ("histogram", "_count") => {
                counts.insert(histogram_series, value);
            }
            ("histogram", "_sum") => assert!(value >= 0.0),
            _ => {}
        }
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "series {series} twice"
        );
    }
    for (series, buckets) in &buckets {
        for pair in buckets.windows(2) {
            assert!(pair[0].0 < pair[1].0, "bounds not increasing in {series:?}");
            assert!(
                pair[0].1 <= pair[1].1,
                "buckets not cumulative in {series:?}"
            );
        }
        let last = buckets.last().unwrap();
        assert_eq!(last.0, f64::INFINITY, "no +Inf bucket in {series:?}");
        assert_eq!(
            Some(&last.1),
            counts.get(series),
            "+Inf bucket != count in {series:?}"
        );
    }
    samples
}

/// Splits `k="v",k2="v2"` at the commas between labels (not those inside values).
fn split_labels(labels: &str) -> Vec<&str> {
    let (mut out, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&labels[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < labels.len() {
        out.push(&labels[start..]);
    }
    out
}

fn scrape(metrics: &MetricsRegistry) -> BTreeMap<String, f64> {
    parse_exposition(&metrics.encode_prometheus(), true)
}

#[tokio::test(start_paused = true)]
async fn a_known_mix_is_counted_exactly() {
    let metrics = MetricsRegistry::new();
    let mut svc = proxy(&metrics);
    let mix = [
        ("/ok", 6, Ok(StatusCode::OK)),
        ("/missing", 2, Ok(StatusCode::NOT_FOUND)),
        ("/boom", 3, Ok(StatusCode::INTERNAL_SERVER_ERROR)),
        ("/error", 1, Err("connection reset")),
    ];
    for (path, times, expected) in mix {
        for _ in 0..times {
            let got = send(&mut svc, path).await.map_err(|e| e.to_string());
            assert_eq!(got, expected.map_err(String::from), "{path}");
        }
    }

    let s = metrics.snapshot();
    assert_eq!(s.total_requests, 12);
    assert_eq!(s.successful_requests, 8, "200s and 404s");
    assert_eq!(s.failed_requests, 4, "500s and errors");
    assert_eq!(s.cancelled_requests, 0);
    assert_eq!(s.in_flight, 0);
    assert_eq!(s.latency.count, 12);
    assert_eq!(s.backend_metrics.len(), 2);
    let (a, b) = (&s.backend_metrics["a"], &s.backend_metrics["b"]);
    assert_eq!((a.requests, b.requests), (6, 6), "round robin");
    assert_eq!(a.requests + b.requests, s.total_requests);
    assert_eq!(a.successes + b.successes, s.successful_requests);
    assert_eq!(a.failures + b.failures, s.failed_requests);
    for backend in [a, b] {
        let rate = backend.successes as f64 / backend.requests as f64;
        assert_eq!(backend.success_rate, Some(rate));
    }

    let p = scrape(&metrics);
    assert_eq!(p["switchyard_requests_total{outcome=\"success\"}"], 8.0);
    assert_eq!(p["switchyard_requests_total{outcome=\"failure\"}"], 4.0);
    assert_eq!(p["switchyard_requests_total{outcome=\"cancelled\"}"], 0.0);
    assert_eq!(p["switchyard_requests_in_flight"], 0.0);
    assert_eq!(p["switchyard_request_duration_seconds_count"], 12.0);
    for outcome in ["success", "failure"] {
        let per_backend: f64 = ["a", "b"]
            .iter()
            .map(|id| {
                p[&format!(
                    "switchyard_backend_requests_total{{backend=\"{id}\",outcome=\"{outcome}\"}}"
                )]
            })
            .sum();
        assert_eq!(
            per_backend,
            p[&format!("switchyard_requests_total{{outcome=\"{outcome}\"}}")]
        );
    }
    assert_eq!(
        p["switchyard_backend_request_duration_seconds_count{backend=\"a\"}"],
        6.0
    );
}

#[tokio::test(start_paused = true)]
async fn in_flight_returns_to_zero_when_futures_are_dropped() {
    let metrics = MetricsRegistry::new();
    let mut svc = proxy(&metrics);

    let mut calls = Vec::new();
    for _ in 0..3 {
        let req = Request::get("/slow").body(()).unwrap();
        calls.push(svc.ready().await.unwrap().call(req));
    }
    let s = metrics.snapshot();
    assert_eq!(s.in_flight, 3);
    assert_eq!(
        s.backend_metrics["a"].in_flight + s.backend_metrics["b"].in_flight,
        3
    );
    assert_eq!(scrape(&metrics)["switchyard_requests_in_flight"], 3.0);

    let mut calls = calls.into_iter();
    let (first, second, third) = (
        calls.next().unwrap(),
        calls.next().unwrap(),
        calls.next().unwrap(),
    );
    // Dropped before it was ever polled.
    drop(second);
    assert_eq!(metrics.snapshot().in_flight, 2);
    // Dropped mid-flight by a timeout above, its backend sleep under way.
    let timed_out = tokio::time::timeout(Duration::from_millis(50), third).await;
    assert!(timed_out.is_err());
    // Answered.
    assert_eq!(first.await.unwrap().status(), StatusCode::OK);

    let s = metrics.snapshot();
    assert_eq!(s.in_flight, 0);
    assert_eq!(s.cancelled_requests, 2);
    assert_eq!(s.successful_requests, 1);
    assert_eq!(s.latency.count, 1, "cancelled requests have no latency");
    for b in s.backend_metrics.values() {
        assert_eq!(b.in_flight, 0);
    }
    let p = scrape(&metrics);
    assert_eq!(p["switchyard_requests_in_flight"], 0.0);
    assert_eq!(p["switchyard_requests_total{outcome=\"cancelled\"}"], 2.0);
    assert_eq!(
        p["switchyard_backend_requests_in_flight{backend=\"a\"}"]
            + p["switchyard_backend_requests_in_flight{backend=\"b\"}"],
        0.0
    );
}

fn assert_within_bound(got: Duration, exact: Duration) {
    let bound = exact.as_secs_f64() / 128.0;
    let err = (got.as_secs_f64() - exact.as_secs_f64()).abs();
    assert!(err <= bound, "{got:?} not within 1/128 of {exact:?}");
}

#[tokio::test(start_paused = true)]
async fn latency_is_exact_on_paused_time() {
    let metrics = MetricsRegistry::new();
    let mut svc = proxy(&metrics);
    for _ in 0..20 {
        send(&mut svc, "/ok").await.unwrap();
    }
    let s = metrics.snapshot();
    let ten = Duration::from_millis(10);
    assert_eq!(s.average_response_time, ten);
    assert_eq!(s.latency.max, ten);
    assert_eq!(s.latency.sum, ten * 20);
    for p in [s.latency.p50, s.latency.p90, s.latency.p99] {
        assert_within_bound(p, ten);
    }
    assert_eq!(s.backend_metrics["a"].average_response_time, ten);
    assert_within_bound(s.backend_metrics["a"].p99, ten);

    let p = scrape(&metrics);
    assert!((p["switchyard_request_duration_seconds_sum"] - 0.2).abs() < 1e-9);
    // 10 ms lies between the 8.192 ms and 16.384 ms bounds.
    let bucket =
        |le: &str| p[&format!("switchyard_request_duration_seconds_bucket{{le=\"{le}\"}}")];
    assert_eq!(bucket("0.008192"), 0.0);
    assert_eq!(bucket("0.016384"), 20.0);
    assert_eq!(bucket("+Inf"), 20.0);
}

#[tokio::test(start_paused = true)]
async fn percentiles_follow_the_distribution() {
    let metrics = MetricsRegistry::new();
    let mut svc = proxy(&metrics);
    // 90 answers in 10 ms, 10 in 200 ms.
    for i in 0..100 {
        let path = if i % 10 == 9 { "/slow" } else { "/ok" };
        send(&mut svc, path).await.unwrap();
    }
    let s = metrics.snapshot();
    assert_eq!(s.average_response_time, Duration::from_millis(29));
    assert_within_bound(s.latency.p50, Duration::from_millis(10));
    assert_within_bound(s.latency.p90, Duration::from_millis(10));
    assert_within_bound(s.latency.p99, Duration::from_millis(200));
    assert_eq!(s.latency.max, Duration::from_millis(200));
    // Round robin over two backends puts every slow request (odd-numbered) on "b".
    assert_within_bound(s.backend_metrics["a"].p99, Duration::from_millis(10));
    assert_within_bound(s.backend_metrics["b"].p99, Duration::from_millis(200));
}

#[tokio::test]
async fn external_counters_show_in_snapshot_and_prometheus() {
    let metrics = MetricsRegistry::new();
    assert_eq!(metrics.snapshot().cache_hits, 0);
    let p = scrape(&metrics);
    assert!(!p
        .keys()
        .any(|k| k.contains("cache") || k.contains("retries")));

    let (hits, misses, retries) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let (h, m) = (hits.clone(), misses.clone());
    metrics.cache_source(move || CacheCounters {
        hits: h.load(Ordering::Relaxed),
        misses: m.load(Ordering::Relaxed),
    });
    let r = retries.clone();
    metrics.retry_source(move || r.load(Ordering::Relaxed));

    hits.store(7, Ordering::Relaxed);
    misses.store(3, Ordering::Relaxed);
    retries.store(2, Ordering::Relaxed);
    let s = metrics.snapshot();
    assert_eq!((s.cache_hits, s.cache_misses, s.total_retries), (7, 3, 2));
    let p = scrape(&metrics);
    assert_eq!(p["switchyard_cache_hits_total"], 7.0);
    assert_eq!(p["switchyard_cache_misses_total"], 3.0);
    assert_eq!(p["switchyard_retries_total"], 2.0);

    // Read again at each scrape, not copied once.
    hits.store(8, Ordering::Relaxed);
    assert_eq!(metrics.snapshot().cache_hits, 8);
    assert_eq!(scrape(&metrics)["switchyard_cache_hits_total"], 8.0);
}

#[tokio::test(start_paused = true)]
async fn a_removed_backend_disappears() {
    let metrics = MetricsRegistry::new();
    let mut svc = proxy(&metrics);
    for _ in 0..4 {
        send(&mut svc, "/ok").await.unwrap();
    }
    assert!(metrics.remove_backend("a"));
    assert!(!metrics.remove_backend("a"));

    let s = metrics.snapshot();
    assert_eq!(s.backend_metrics.keys().collect::<Vec<_>>(), ["b"]);
    assert_eq!(
        s.total_requests, 4,
        "proxy-wide numbers keep what a removed backend served"
    );
    let text = metrics.encode_prometheus();
    assert!(!text.contains("backend=\"a\""), "{text}");
    assert!(text.contains("backend=\"b\""));

    // Added again, it starts from zero.
    assert_eq!(metrics.backend("a").snapshot().requests, 0);
    assert_eq!(metrics.snapshot().backend_metrics["a"].requests, 0);
}

#[tokio::test(start_paused = true)]
async fn turned_off_nothing_is_recorded_or_shown_and_turned_on_it_goes_on() {
    let metrics = MetricsRegistry::new();
    metrics.cache_source(|| CacheCounters { hits: 7, misses: 1 });
    let mut svc = proxy(&metrics);
    for _ in 0..4 {
        send(&mut svc, "/ok").await.unwrap();
    }
    assert!(metrics.is_enabled());

    metrics.set_enabled(false);
    for _ in 0..3 {
        send(&mut svc, "/ok").await.unwrap();
    }
    // Off: what an empty registry shows, sources and backends left out.
    let off = metrics.snapshot();
    assert_eq!((off.total_requests, off.cache_hits), (0, 0));
    assert!(off.backend_metrics.is_empty(), "{off:?}");
    assert_eq!(
        metrics.encode_prometheus(),
        MetricsRegistry::new().encode_prometheus()
    );

    // On again: the four from before, not the three sent while off, then one more.
    metrics.set_enabled(true);
    send(&mut svc, "/ok").await.unwrap();
    let on = metrics.snapshot();
    assert_eq!((on.total_requests, on.cache_hits), (5, 7));
    let per_backend: u64 = on.backend_metrics.values().map(|b| b.requests).sum();
    assert_eq!(per_backend, 5);
    assert_eq!(
        scrape(&metrics)["switchyard_requests_total{outcome=\"success\"}"],
        5.0
    );
}

/// One request through `backend`'s layer over a service that answers 200 at once.
async fn one_request(backend: BackendMetrics) {
    let ok = service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
    backend.layer(ok).oneshot(Request::new(())).await.unwrap();
}

#[tokio::test]
async fn handles_of_one_backend_share_its_numbers() {
    let metrics = MetricsRegistry::new();
    one_request(metrics.backend("a")).await;
    one_request(metrics.backend("a")).await;
    assert_eq!(metrics.backend("a").snapshot().requests, 2);
    assert_eq!(metrics.snapshot().backend_metrics.len(), 1);
}

/// Connection pool numbers, as an integrator would expose them.
#[derive(Debug)]
struct PoolCollector {
    idle: Arc<AtomicU64>,
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let mut m = encoder.encode_descriptor(
            "pool_idle_connections",
            "Idle connections.",
            None,
            MetricType::Gauge,
        )?;
        m.encode_family(&[("backend", "a")])?
            .encode_gauge(&self.idle.load(Ordering::Relaxed))
    }
}

#[derive(Debug)]
struct Broken;

impl Collector for Broken {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        encoder
            .encode_descriptor("broken", "Fails half-way.", None, MetricType::Counter)?
            .encode_counter::<NoLabelSet, _, u64>(&1u64, None)?;
        Err(std::fmt::Error)
    }
}

#[tokio::test]
async fn registered_collectors_are_scraped() {
    let metrics = MetricsRegistry::new();
    let idle = Arc::new(AtomicU64::new(2));
    metrics.register_collector(PoolCollector { idle: idle.clone() });
    metrics.register_collector(Broken);

    let p = scrape(&metrics);
    assert_eq!(p["switchyard_pool_idle_connections{backend=\"a\"}"], 2.0);
    assert!(
        !p.keys().any(|k| k.contains("broken")),
        "a failing collector is left out"
    );
    idle.store(5, Ordering::Relaxed);
    assert_eq!(
        scrape(&metrics)["switchyard_pool_idle_connections{backend=\"a\"}"],
        5.0
    );
}

#[tokio::test(start_paused = true)]
async fn classic_prometheus_text_parses_too() {
    let metrics = MetricsRegistry::new();
    let mut svc = proxy(&metrics);
    send(&mut svc, "/boom").await.unwrap();
    metrics.retry_source(|| 4);
    let text = metrics.encode(TextFormat::Prometheus);
    assert!(!text.contains("# EOF"));
    let p = parse_exposition(&text, false);
    assert_eq!(p["switchyard_requests_total{outcome=\"failure\"}"], 1.0);
    assert_eq!(p["switchyard_retries_total"], 4.0);
    assert_eq!(p["switchyard_request_duration_seconds_count"], 1.0);
    assert!(TextFormat::Prometheus
        .content_type()
        .starts_with("text/plain"));
    assert!(TextFormat::OpenMetrics
        .content_type()
        .starts_with("application/openmetrics-text"));
}

#[tokio::test]
async fn backend_ids_are_escaped_in_labels() {
    let metrics = MetricsRegistry::new();
    one_request(metrics.backend("we\"ird\\id")).await;
    let p = scrape(&metrics);
    assert_eq!(
        p["switchyard_backend_requests_total{backend=\"we\\\"ird\\\\id\",outcome=\"success\"}"],
        1.0
    );
}

#[tokio::test(start_paused = true)]
async fn snapshot_serializes_to_json() {
    let metrics = MetricsRegistry::new();
    let mut svc = proxy(&metrics);
    send(&mut svc, "/ok").await.unwrap();
    metrics.cache_source(|| CacheCounters { hits: 1, misses: 2 });
    let json = serde_json::to_value(metrics.snapshot()).unwrap();
    assert_eq!(json["total_requests"], 1);
    assert_eq!(json["successful_requests"], 1);
    assert_eq!(json["failed_requests"], 0);
    assert_eq!(json["average_response_time"], 0.01);
    assert_eq!(json["cache_hits"], 1);
    assert_eq!(json["cache_misses"], 2);
    assert_eq!(json["total_retries"], 0);
    assert_eq!(json["latency"]["max"], 0.01);
    assert_eq!(json["backend_metrics"]["a"]["success_rate"], 1.0);
    assert_eq!(
        json["backend_metrics"]["b"]["success_rate"],
        serde_json::Value::Null
    );
    assert_eq!(json["backend_metrics"]["b"]["requests"], 0);
}

#[tokio::test]
async fn readiness_and_errors_pass_through() {
    let metrics = MetricsRegistry::new();
    let (mut svc, mut handle) =
        tower_test::mock::spawn_layer::<Request<()>, Response<()>, _>(metrics.layer());

    handle.allow(0);
    assert_pending!(svc.poll_ready());
    assert_eq!(
        metrics.snapshot().total_requests,
        0,
        "readiness records nothing"
    );
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());

    let fut = svc.call(Request::new(()));
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_error(std::io::Error::other("backend hung up"));
    let err = fut.await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<std::io::Error>().unwrap().to_string(),
        "backend hung up"
    );
    assert_eq!(metrics.snapshot().failed_requests, 1);
}

#[test]
fn counts_stay_exact_across_threads() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let metrics = MetricsRegistry::new();
    rt.block_on(async {
        let ok = service_fn(|_req: Request<()>| async {
            tokio::task::yield_now().await;
            Ok::<_, Infallible>(Response::new(()))
        });
        let svc = metrics.layer().layer(metrics.backend("a").layer(ok));
        let tasks: Vec<_> = (0..2000)
            .map(|_| tokio::spawn(svc.clone().oneshot(Request::new(()))))
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    });
    let s = metrics.snapshot();
    assert_eq!(s.total_requests, 2000);
    assert_eq!(s.successful_requests, 2000);
    assert_eq!(s.latency.count, 2000);
    assert_eq!(s.in_flight, 0);
    assert_eq!(s.backend_metrics["a"].successes, 2000);
}
