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
