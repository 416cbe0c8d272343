//! One worked example per layer: how to test your own retry policy, your breaker
//! thresholds, your cache rules, and a whole proxy over a fleet, with scripted backends.
//!
//! Each runs on paused time: the seconds of backoff, open circuits and freshness pass
//! at once, and the times the journals show are exact.

use std::time::Duration;

use http::Request;
use switchyard_test::{send, Fleet, Script, ScriptedBackend, Step, REQUEST_ID};
use tower::ServiceBuilder;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `GET path` with an empty body.
fn get(path: &str) -> Request<String> {
    Request::get(path).body(String::new()).unwrap()
}

/// Your retry policy: a 503 with `Retry-After` is retried after exactly that long, other
/// 5xx after the backoff, and the budget of attempts ends it.
mod retry_policy {
    use super::*;
    use switchyard_retry::{Jitter, Retry, RetryConfig, RetryLayer};

    fn policy() -> RetryConfig {
        RetryConfig {
            // Exact delays: jitter would make the times random.
            jitter: Jitter::None,
            ..RetryConfig::default()
        }
    }

    /// The stack under test: retries as `config` says, over `backend`.
    fn retrying(config: RetryConfig, backend: &ScriptedBackend) -> Retry<ScriptedBackend> {
        ServiceBuilder::new()
            .layer(RetryLayer::new(config))
            .service(backend.clone())
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_obeyed_then_the_third_attempt_succeeds() {
        let backend = ScriptedBackend::new(
            "b",
            Script::new([
                Step::status(503).header("retry-after", "2").times(2),
                Step::ok().body("done"),
            ]),
        );
        let got = send(retrying(policy(), &backend), get("/")).await.unwrap();

        got.assert_status(200);
        assert_eq!(got.text(), "done");
        assert_eq!(got.elapsed, secs(4));
        backend.assert_times(&[Duration::ZERO, secs(2), secs(4)]);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_and_the_last_failure_comes_back() {
        let backend = ScriptedBackend::new("b", Script::always(Step::status(502)));
        let got = send(retrying(policy(), &backend), get("/")).await.unwrap();

        got.assert_status(502);
        // One attempt and `max_retries` (3) retries, 100, 200 and 400 ms apart.
        backend.assert_requests(4);
        assert_eq!(backend.gaps(), [ms(100), ms(200), ms(400)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_post_is_not_retried_unless_opted_in() {
        let backend = ScriptedBackend::new("b", Script::new([Step::status(503), Step::ok()]));
        let post = || Request::post("/orders").body("order".to_owned()).unwrap();

        send(retrying(policy(), &backend), post())
            .await
            .unwrap()
            .assert_status(503);
        backend.assert_requests(1);

        let retried = ScriptedBackend::new("c", Script::new([Step::status(503), Step::ok()]));
        let opted_in = RetryConfig {
            non_idempotent: true,
            ..policy()
        };
        send(retrying(opted_in, &retried), post())
            .await
            .unwrap()
            .assert_status(200);
        // The body was kept and sent again whole.
        let lens: Vec<_> = retried.requests().iter().map(|s| s.body_len).collect();
        assert_eq!(lens, [Some(5), Some(5)]);
    }
}

/// Your breaker thresholds: three failures in a row open the circuit; while it is open
/// calls fail at once without reaching the backend; after the open time one probe goes
/// through and its success closes the circuit.
mod breaker_thresholds {
    use super::*;
    use switchyard_breaker::{BreakerConfig, CircuitBreakerLayer, CircuitOpen, State};

    #[tokio::test(start_paused = true)]
    async fn three_failures_open_it_and_a_probe_closes_it() {
        let layer = CircuitBreakerLayer::new(BreakerConfig {
            threshold: 3,
            timeout: secs(10),
            jitter: 0.0,
            ..BreakerConfig::default()
        });
        let breaker = layer.breaker().clone();
        let backend =
            ScriptedBackend::new("b", Script::new([Step::status(500).times(3), Step::ok()]));
        let stack = ServiceBuilder::new().layer(layer).service(backend.clone());

        for _ in 0..3 {
            send(stack.clone(), get("/"))
                .await
                .unwrap()
                .assert_status(500);
        }
        assert!(
            matches!(breaker.state(), State::Open { .. }),
            "{}",
            breaker.state()
        );

        // Open: refused at once, the backend never asked.
        let refused = send(stack.clone(), get("/")).await.unwrap_err();
        assert!(refused.is::<CircuitOpen>(), "{refused}");
        backend.assert_requests(3);

        // After the open time, one probe; it succeeds, and the circuit closes.
        tokio::time::sleep(secs(10)).await;
        send(stack.clone(), get("/"))
            .await
            .unwrap()
            .assert_status(200);
        assert!(breaker.state().is_closed(), "{}", breaker.state());
        backend.assert_times(&[Duration::ZERO, Duration::ZERO, Duration::ZERO, secs(10)]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_that_are_not_in_a_row_never_open_it() {
        let layer = CircuitBreakerLayer::new(BreakerConfig {
            threshold: 3,
            ..BreakerConfig::default()
        });
        let breaker = layer.breaker().clone();
        let flaky = Script::new([Step::status(503).times(2), Step::ok()]).cycles();
        let backend = ScriptedBackend::new("b", flaky);
        let stack = ServiceBuilder::new().layer(layer).service(backend.clone());

        for _ in 0..30 {
            send(stack.clone(), get("/")).await.unwrap();
        }
        assert!(breaker.state().is_closed());
        backend.assert_requests(30);
    }
}

/// Your cache rules: a response with `max-age` is served from the cache while fresh and
/// fetched again once stale; `no-store` is never kept.
mod cache_rules {
    use super::*;
    use switchyard_cache::{CacheConfig, CacheLayer};

    /// `GET path` for `example.com`: the cache keys on the host.
    fn get(path: &str) -> Request<String> {
        let mut req = super::get(path);
        req.headers_mut()
            .insert("host", http::HeaderValue::from_static("example.com"));
        req
    }

    #[tokio::test(start_paused = true)]
    async fn fresh_answers_come_from_the_cache_until_stale() {
        let backend = ScriptedBackend::new(
            "b",
            Script::new([
                Step::ok().header("cache-control", "max-age=60").body("v1"),
                Step::ok().header("cache-control", "max-age=60").body("v2"),
            ]),
        );
        let stack = ServiceBuilder::new()
            .layer(CacheLayer::new(CacheConfig::default()))
            .service(backend.clone());

        for _ in 0..5 {
            let got = send(stack.clone(), get("/page")).await.unwrap();
            assert_eq!(got.text(), "v1");
        }
        backend.assert_requests(1);

        tokio::time::sleep(secs(61)).await;
        let got = send(stack.clone(), get("/page")).await.unwrap();
        assert_eq!(got.text(), "v2");
        backend.assert_times(&[Duration::ZERO, secs(61)]);
    }

    #[tokio::test(start_paused = true)]
    async fn no_store_always_goes_to_the_backend() {
        let backend = ScriptedBackend::new(
            "b",
            Script::always(Step::ok().header("cache-control", "no-store")),
        );
        let stack = ServiceBuilder::new()
            .layer(CacheLayer::new(CacheConfig::default()))
            .service(backend.clone());
        for _ in 0..3 {
            send(stack.clone(), get("/live"))
                .await
                .unwrap()
                .assert_status(200);
        }
        backend.assert_requests(3);
    }
}

/// A whole `switchyard::Proxy` over a fleet on loopback: one backend resets every
/// connection; every client request still succeeds, and the journal shows each request
/// that met it retried on another backend.
mod whole_proxy {
    use super::*;
    use switchyard::{Backend, Proxy, ProxyConfig};

    async fn proxy_over(fleet: &Fleet, config: ProxyConfig) -> Proxy {
        let proxy = Proxy::new(config);
        for backend in fleet.entries(Backend::new) {
            proxy.add_backend(backend).unwrap();
        }
        proxy.settled().await;
        proxy
    }

    #[tokio::test(start_paused = true)]
    async fn a_resetting_backend_is_retried_around() {
        let fleet = Fleet::bind([
            ("a", Script::always(Step::ok())),
            ("b", Script::always(Step::reset())),
            ("c", Script::always(Step::ok())),
        ])
        .await;
        let mut config = ProxyConfig::default();
        config.health.enabled = false;
        config.breaker.enabled = false;
        // The scripted answers say nothing of caching: without this, the proxy's cache
        // would keep the first one (heuristic freshness) and answer every request.
        config.cache = None;
        let proxy = proxy_over(&fleet, config).await;

        for n in 0..30 {
            let req = Request::get("http://app.example/work")
                .header(REQUEST_ID, n.to_string())
                .body(String::new())
                .unwrap();
            let got = send(proxy.clone(), req).await.unwrap();
            got.assert_status(200);
            assert_ne!(got.backend(), Some("b"));
        }

        let met_b = fleet["b"].requests();
        assert!(!met_b.is_empty(), "round robin sent some to b");
        for seen in &met_b {
            let id = seen.headers[REQUEST_ID].to_str().unwrap();
            let attempts = fleet.journal().attempts(id);
            let last = attempts.last().unwrap();
            assert!(
                &*last.backend != "b" && last.attempt >= 2,
                "request {id}: {attempts:?}"
            );
        }
        // Every request reached a good backend exactly once.
        let good = fleet["a"].request_count() + fleet["c"].request_count();
        assert_eq!(good, 30, "{}", fleet.journal().describe());
        assert_eq!(
            proxy.retry_stats().retries as usize,
            met_b.len(),
            "{:?}",
            proxy.retry_stats()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_backend_is_cut_off_at_the_attempt_timeout() {
        let fleet = Fleet::bind([
            ("fast", Script::always(Step::ok())),
            ("slow", Script::always(Step::delay(secs(30)))),
        ])
        .await;
        let mut config = ProxyConfig::default();
        config.health.enabled = false;
        config.breaker.enabled = false;
        config.cache = None;
        config.retry.attempt_timeout = Some(ms(500));
        let proxy = proxy_over(&fleet, config).await;

        for _ in 0..4 {
            let got = send(proxy.clone(), get("http://app.example/"))
                .await
                .unwrap();
            got.assert_status(200).assert_backend("fast");
            // At worst one attempt timed out on the slow backend, then a backoff.
            got.assert_within(secs(1));
        }
        assert!(fleet["slow"].request_count() >= 1);
    }
}
