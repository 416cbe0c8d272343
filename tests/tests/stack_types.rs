//! Compile-time checks: the standard stack fits axum and tonic as they are.

use std::convert::Infallible;

use http::Request;
use switchyard::Proxy;
use tower::Service;

/// What axum's `Router::nest_service`/`fallback_service` and a tonic channel ask of a
/// service: cheap to clone, shareable across tasks, never failing.
fn infallible_shared_service<S, B>()
where
    S: Service<Request<B>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
}

#[test]
fn the_standard_stack_serves_axum_and_tonic_bodies() {
    infallible_shared_service::<Proxy, axum::body::Body>();
    infallible_shared_service::<Proxy, tonic::body::Body>();
    infallible_shared_service::<Proxy, hyper::body::Incoming>();
}

#[test]
fn the_forward_layer_keeps_an_axum_router_infallible() {
    type Forwarding = switchyard::Forward<axum::Router, Proxy, switchyard::forward::PathPrefix>;
    infallible_shared_service::<Forwarding, axum::body::Body>();
}
