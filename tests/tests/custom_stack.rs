//! The hand-built stack of `examples/custom-stack`: layers used without the facade.

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use switchyard_tests::backend;

#[tokio::test]
async fn hand_built_stack_balances_and_maps_errors() {
    let (a, b) = (backend("a").await, backend("b").await);
    let stack = example_custom_stack::stack(&[a.url(), b.url()], Duration::from_secs(2)).unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let req = Request::get("http://proxy.test/")
            .body(switchyard::body::empty())
            .unwrap();
        let res = example_custom_stack::forward(stack.clone(), req).await;
        assert_eq!(res.status(), StatusCode::OK);
        seen.push(res.headers()["x-backend"].to_str().unwrap().to_owned());
    }
    assert_eq!(seen, ["a", "b", "a", "b"]);

    // Typed errors: a timeout is a 504 by `Error::status`.
    let req = Request::get("http://proxy.test/hang")
        .body(switchyard::body::empty())
        .unwrap();
    let stack = example_custom_stack::stack(&[a.url()], Duration::from_millis(100)).unwrap();
    let res = example_custom_stack::forward(stack, req).await;
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"504 Gateway Timeout\n");
}

#[tokio::test]
async fn retry_and_breaker_stand_alone_around_a_hyper_client() {
    use switchyard::{BreakerConfig, BreakerState, RetryConfig};
    use switchyard_tests::{backend_with, BackendOptions};
    use tower::ServiceExt;

    let flaky = backend_with("flaky", BackendOptions::failing_with(503)).await;
    let retry = RetryConfig {
        max_retries: 2,
        delay: Duration::from_millis(1),
        ..RetryConfig::default()
    };
    let breaker = BreakerConfig {
        threshold: 3,
        timeout: Duration::from_secs(60),
        ..BreakerConfig::default()
    };
    let (client, breakers) = example_custom_stack::resilient_client(retry, breaker);
    let url = format!("{}/", flaky.url());
    let call = |client: tower::util::BoxCloneSyncService<_, _, _>| {
        let req = Request::get(url.as_str())
            .body(switchyard::body::empty())
            .unwrap();
        client.oneshot(req)
    };

    // 1 attempt + 2 retries, all 503: the caller gets the last 503, and the breaker, three
    // failures in a row, opens.
    let res = call(client.clone()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(flaky.request_count(), 3);
    assert!(matches!(
        breakers.state("upstream"),
        Some(BreakerState::Open { .. })
    ));

    // Open: the next call fails at once without reaching the upstream.
    let err = call(client).await.unwrap_err();
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(err.to_string().contains("circuit"), "{err}");
    assert_eq!(flaky.request_count(), 3);
}
