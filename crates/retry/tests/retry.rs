//! The retry layer with tower-test mocks, on paused time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream;
use http::{Method, Request, Response};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use switchyard_core::{
    BoxError, CircuitOpen, ConnectError, ConnectErrorKind, GiveBack, NoBackendsAvailable,
    ReturnHead, RouteHint,
};
use switchyard_retry::{BudgetConfig, Jitter, ReplayBody, Retry, RetryConfig, RetryLayer};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};
use tower_test::mock;

type Body = UnsyncBoxBody<Bytes, BoxError>;
type Mock = mock::Mock<Request<ReplayBody<Body>>, Response<()>>;
type Handle = mock::Handle<Request<ReplayBody<Body>>, Response<()>>;

fn exact() -> RetryConfig {
    RetryConfig {
        jitter: Jitter::None,
        ..RetryConfig::default()
    }
}

fn setup(config: RetryConfig) -> (Retry<Mock>, Handle, RetryLayer) {
    let (mock, handle) = mock::pair();
    let layer = RetryLayer::new(config);
    (layer.layer(mock), handle, layer)
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn request(method: Method, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri("/r")
        .body(body)
        .unwrap()
}

/// Sends a GET with an empty body through `svc`, on a task of its own.
fn spawn_get(svc: Retry<Mock>) -> JoinHandle<Result<Response<()>, BoxError>> {
    tokio::spawn(svc.oneshot(request(Method::GET, empty())))
}

fn response(status: u16, retry_after: Option<&str>) -> Response<()> {
    let mut b = Response::builder().status(status);
    if let Some(v) = retry_after {
        b = b.header("retry-after", v);
    }
    b.body(()).unwrap()
}

/// Answers the next attempts with `statuses`, returning when each arrived.
async fn answer(handle: &mut Handle, statuses: &[u16]) -> Vec<Instant> {
    let mut at = Vec::new();
    for &status in statuses {
        let (_, reply) = handle.next_request().await.expect("an attempt");
        at.push(Instant::now());
        reply.send_response(response(status, None));
    }
    at
}

/// The route hint an attempt carries, by address: attempts of one request share it.
fn hint(req: &Request<ReplayBody<Body>>) -> *const RouteHint {
    RouteHint::in_extensions(req).expect("hinted")
}

fn gaps(at: &[Instant]) -> Vec<Duration> {
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

fn ms(v: &[u64]) -> Vec<Duration> {
    v.iter().map(|&m| Duration::from_millis(m)).collect()
}

#[tokio::test(start_paused = true)]
async fn delays_double_exactly_without_jitter() {
    let (svc, mut handle, layer) = setup(exact());
    let res = spawn_get(svc);
    let at = answer(&mut handle, &[503, 502, 504, 200]).await;
    assert_eq!(res.await.unwrap().unwrap().status(), 200);
    assert_eq!(gaps(&at), ms(&[100, 200, 400]));
    let s = layer.stats();
    assert_eq!(
        (s.requests, s.attempts, s.retries, s.retries_status),
        (1, 4, 3, 3)
    );
}

#[tokio::test(start_paused = true)]
async fn without_backoff_every_delay_is_the_same() {
    let (svc, mut handle, _) = setup(RetryConfig {
        backoff: false,
        ..exact()
    });
    let res = spawn_get(svc);
    let at = answer(&mut handle, &[503, 503, 503, 200]).await;
    assert_eq!(res.await.unwrap().unwrap().status(), 200);
    assert_eq!(gaps(&at), ms(&[100, 100, 100]));
}

#[tokio::test(start_paused = true)]
async fn equal_jitter_stays_within_bounds() {
    for _ in 0..20 {
        let (svc, mut handle, _) = setup(RetryConfig::default());
        let res = spawn_get(svc);
        let at = answer(&mut handle, &[503, 503, 503, 200]).await;
        res.await.unwrap().unwrap();
        for (gap, full) in gaps(&at).into_iter().zip([100u64, 200, 400]) {
            let full = Duration::from_millis(full);
            assert!(
                gap >= full / 2 && gap <= full,
                "{gap:?} outside [{:?}, {full:?}]",
                full / 2
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_last_failure_is_returned_after_max_retries() {
    let (svc, mut handle, layer) = setup(exact());
    let res = spawn_get(svc);
    answer(&mut handle, &[503, 503, 503, 502]).await;
    assert_eq!(res.await.unwrap().unwrap().status(), 502);
    assert_eq!(layer.stats().attempts, 4);
}

#[tokio::test(start_paused = true)]
async fn client_errors_and_other_statuses_are_not_retried() {
    for status in [400, 404, 429, 500, 501] {
        let (svc, mut handle, layer) = setup(exact());
        let res = spawn_get(svc);
        answer(&mut handle, &[status]).await;
        assert_eq!(res.await.unwrap().unwrap().status(), status);
        assert_eq!(layer.stats().attempts, 1, "{status} was retried");
    }
}

#[tokio::test(start_paused = true)]
async fn grpc_statuses_in_headers_are_retried_when_configured() {
    let grpc = |code: &str| {
        Response::builder()
            .status(200)
            .header("grpc-status", code)
            .body(())
            .unwrap()
    };
    let config = RetryConfig {
        grpc_statuses: vec![14],
        non_idempotent: true,
        ..exact()
    };
    // UNAVAILABLE (14) is retried; the next answer (INVALID_ARGUMENT, 3) is returned.
    let (svc, mut handle, layer) = setup(config.clone());
    let res = tokio::spawn(svc.oneshot(request(Method::POST, empty())));
    for code in ["14", "3"] {
        let (_, reply) = handle.next_request().await.expect("an attempt");
        reply.send_response(grpc(code));
    }
    let res = res.await.unwrap().unwrap();
    assert_eq!(res.headers()["grpc-status"], "3");
    assert_eq!(
        (layer.stats().attempts, layer.stats().retries_status),
        (2, 1)
    );

    // Without the setting a gRPC error is an HTTP 200 like any other.
    let (svc, mut handle, layer) = setup(RetryConfig {
        non_idempotent: true,
        ..exact()
    });
    let res = tokio::spawn(svc.oneshot(request(Method::POST, empty())));
    let (_, reply) = handle.next_request().await.expect("an attempt");
    reply.send_response(grpc("14"));
    assert_eq!(res.await.unwrap().unwrap().headers()["grpc-status"], "14");
    assert_eq!(layer.stats().attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn post_is_retried_only_when_opted_in() {
    let (svc, mut handle, layer) = setup(exact());
    let res = tokio::spawn(svc.oneshot(request(Method::POST, empty())));
    answer(&mut handle, &[503]).await;
    assert_eq!(res.await.unwrap().unwrap().status(), 503);
    assert_eq!(layer.stats().attempts, 1);

    let (svc, mut handle, layer) = setup(RetryConfig {
        non_idempotent: true,
        ..exact()
    });
    let res = tokio::spawn(svc.oneshot(request(Method::POST, empty())));
    answer(&mut handle, &[503, 200]).await;
    assert_eq!(res.await.unwrap().unwrap().status(), 200);
    assert_eq!(layer.stats().attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn proxy_refusals_are_retried_with_their_reason() {
    let (svc, mut handle, layer) = setup(exact());
    let res = spawn_get(svc);
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(ConnectError::new(ConnectErrorKind::Refused, "b:1", None));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(CircuitOpen::new());
    answer(&mut handle, &[200]).await;
    assert_eq!(res.await.unwrap().unwrap().status(), 200);
    let s = layer.stats();
    assert_eq!(
        (s.retries_connect, s.retries_circuit_open, s.retries),
        (1, 1, 2)
    );

    // A broken connection: an idempotent request is resent, an opted-in POST is not (it
    // may have been processed).
    let (svc, mut handle, layer) = setup(RetryConfig {
        non_idempotent: true,
        ..exact()
    });
    let res = tokio::spawn(svc.clone().oneshot(request(Method::GET, empty())));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(std::io::Error::other("reset mid-response"));
    answer(&mut handle, &[200]).await;
    assert_eq!(res.await.unwrap().unwrap().status(), 200);
    assert_eq!(layer.stats().retries_upstream, 1);
    let res = tokio::spawn(svc.oneshot(request(Method::POST, empty())));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(std::io::Error::other("reset mid-response"));
    assert!(res.await.unwrap().is_err());
    assert_eq!(layer.stats().attempts, 3);
}

#[tokio::test(start_paused = true)]
async fn no_backend_is_retried_only_when_one_was_busy() {
    // A busy backend (at its connection cap) may be free after the backoff: retried.
    let (svc, mut handle, layer) = setup(exact());
    let res = spawn_get(svc);
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(NoBackendsAvailable::busy());
    answer(&mut handle, &[200]).await;
    assert_eq!(res.await.unwrap().unwrap().status(), 200);
    assert_eq!(layer.stats().retries_no_backends, 1);

    // None at all, or every circuit open: the backoff would find the same, so the client
    // gets the failure at once.
    let (svc, mut handle, layer) = setup(exact());
    let started = Instant::now();
    let res = spawn_get(svc);
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(NoBackendsAvailable::new());
    let err = res.await.unwrap().unwrap_err();
    assert!(err.is::<NoBackendsAvailable>(), "{err}");
    assert_eq!(started.elapsed(), Duration::ZERO);
    let s = layer.stats();
    assert_eq!((s.attempts, s.retries), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn retry_after_sets_the_delay_within_the_cap() {
    let (svc, mut handle, _) = setup(exact());
    let res = spawn_get(svc);
    let (_, reply) = handle.next_request().await.unwrap();
    let first = Instant::now();
    reply.send_response(response(503, Some("2")));
    let at = answer(&mut handle, &[200]).await;
    assert_eq!(res.await.unwrap().unwrap().status(), 200);
    assert_eq!(at[0] - first, Duration::from_secs(2));

    // Beyond the cap the response goes back as it is.
    let (svc, mut handle, layer) = setup(exact());
    let res = spawn_get(svc);
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(response(503, Some("60")));
    assert_eq!(res.await.unwrap().unwrap().status(), 503);
    assert_eq!(layer.stats().attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn no_attempt_starts_after_the_deadline() {
    let config = RetryConfig {
        deadline: Some(Duration::from_millis(250)),
        ..exact()
    };
    let (svc, mut handle, layer) = setup(config);
    let res = spawn_get(svc);
    // Attempts at 0 and 100 ms; the next would be at 300 ms, past 250 ms.
    answer(&mut handle, &[503, 503]).await;
    assert_eq!(res.await.unwrap().unwrap().status(), 503);
    assert_eq!(layer.stats().attempts, 2);
}

fn streamed(chunks: &[&'static [u8]]) -> Body {
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
        .iter()
        .map(|c| Ok(Frame::data(Bytes::from_static(c))))
        .collect();
    StreamBody::new(stream::iter(frames)).boxed_unsync()
}

#[tokio::test(start_paused = true)]
async fn replayed_bodies_are_byte_identical() {
    let (svc, mut handle, _) = setup(RetryConfig {
        non_idempotent: true,
        ..exact()
    });
    let body = streamed(&[b"hello ", b"replayed ", b"world"]);
    let res = tokio::spawn(svc.oneshot(request(Method::POST, body)));
    let mut seen = Vec::new();
    for status in [503, 502, 200] {
        let (req, reply) = handle.next_request().await.unwrap();
        seen.push(req.into_body().collect().await.unwrap().to_bytes());
        reply.send_response(response(status, None));
    }
    assert_eq!(res.await.unwrap().unwrap().status(), 200);
    assert!(
        seen.iter()
            .all(|b| b == &Bytes::from_static(b"hello replayed world")),
        "{seen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_sends_what_the_failed_attempt_never_read() {
    let (svc, mut handle, _) = setup(RetryConfig {
        non_idempotent: true,
        ..exact()
    });
    let res = tokio::spawn(svc.oneshot(request(Method::POST, streamed(&[b"abc", b"def"]))));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(ConnectError::new(ConnectErrorKind::Refused, "b:1", None)); // body untouched
    let (req, reply) = handle.next_request().await.unwrap();
    assert_eq!(
        req.into_body().collect().await.unwrap().to_bytes(),
        "abcdef"
    );
    reply.send_response(response(200, None));
    assert_eq!(res.await.unwrap().unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn bodies_over_the_cap_are_forwarded_but_not_retried() {
    let config = RetryConfig {
        non_idempotent: true,
        max_replay_body: 8,
        ..exact()
    };
    let (svc, mut handle, layer) = setup(config);
    let res = tokio::spawn(svc.oneshot(request(Method::PUT, streamed(&[b"0123456", b"789abc"]))));
    let (req, reply) = handle.next_request().await.unwrap();
    assert_eq!(
        req.into_body().collect().await.unwrap().to_bytes(),
        "0123456789abc"
    );
    reply.send_response(response(503, None));
    assert_eq!(res.await.unwrap().unwrap().status(), 503);
    let stats = layer.stats();
    assert_eq!((stats.attempts, stats.body_too_large), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn the_budget_stops_a_retry_storm() {
    // No ratio and a floor of 1 retry per second over 10 s: 10 retries in the window.
    let budget = BudgetConfig {
        ratio: 0.0,
        min_per_second: 1,
        window: Duration::from_secs(10),
    };
    let config = RetryConfig {
        max_retries: 1,
        budget,
        ..exact()
    };
    let (svc, mut handle, layer) = setup(config);
    let mut failures = Vec::new();
    for i in 0..20 {
        let res = tokio::spawn(svc.clone().oneshot(request(Method::GET, empty())));
        let (_, reply) = handle.next_request().await.unwrap();
        reply.send_response(response(503, None));
        if i < 10 {
            answer(&mut handle, &[503]).await; // the retry, while the budget lasts
        }
        failures.push(res.await.unwrap().unwrap().status());
    }
    let stats = layer.stats();
    assert_eq!(stats.retries, 10);
    assert_eq!(stats.budget_exhausted, 10);
    assert!(failures.iter().all(|s| *s == 503));
    // The window moves on: retries are allowed again.
    tokio::time::advance(Duration::from_secs(11)).await;
    let res = spawn_get(svc);
    answer(&mut handle, &[503, 200]).await;
    assert_eq!(res.await.unwrap().unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn attempts_share_a_route_hint() {
    let (svc, mut handle, _) = setup(exact());
    let res = spawn_get(svc);
    let (first, reply) = handle.next_request().await.unwrap();
    let hint = RouteHint::in_extensions(&first).expect("a retryable request carries a hint");
    assert_eq!(hint.last(), None);
    hint.set(7); // what a balancer does
    reply.send_response(response(503, None));
    let (second, reply) = handle.next_request().await.unwrap();
    assert_eq!(
        RouteHint::in_extensions(&second).and_then(|h| h.last()),
        Some(7)
    );
    reply.send_response(response(200, None));
    res.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_request_sent_once_carries_no_hint_and_its_own_body() {
    let (svc, mut handle, _) = setup(exact());
    let res = tokio::spawn(svc.oneshot(request(Method::POST, streamed(&[b"once"]))));
    let (req, reply) = handle.next_request().await.unwrap();
    assert!(
        req.extensions().is_empty(),
        "no extension map for a request that is never retried"
    );
    let body = req
        .into_body()
        .into_passthrough()
        .expect("the original body");
    assert_eq!(body.collect().await.unwrap().to_bytes(), "once");
    reply.send_response(response(503, None));
    assert_eq!(res.await.unwrap().unwrap().status(), 503);
}

#[tokio::test(start_paused = true)]
async fn the_total_is_the_sum_of_the_retries_by_reason() {
    let (svc, mut handle, layer) = setup(RetryConfig {
        max_retries: 5,
        ..exact()
    });
    let res = spawn_get(svc);
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(std::io::Error::other("reset mid-response"));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(ConnectError::new(ConnectErrorKind::Refused, "b:1", None));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(CircuitOpen::new());
    answer(&mut handle, &[503, 200]).await;
    assert_eq!(res.await.unwrap().unwrap().status(), 200);
    let stats = layer.stats();
    let by_reason = stats.retries_status
        + stats.retries_connect
        + stats.retries_circuit_open
        + stats.retries_no_backends
        + stats.retries_pool_timeout
        + stats.retries_upstream;
    assert_eq!(stats.retries_upstream, 1);
    assert_eq!((stats.retries, by_reason), (4, 4));
    assert_eq!(stats.attempts, 5);
}

mod attempt_timeout {
    //! An attempt without a response head by its deadline is abandoned, and retried while
    //! the request's deadline allows.

    use super::*;
    use switchyard_core::{AttemptTimeout, Deadline, WithDeadline};
    use tokio::task::JoinHandle;

    fn timed(attempt: u64) -> RetryConfig {
        RetryConfig {
            attempt_timeout: Some(Duration::from_millis(attempt)),
            ..exact()
        }
    }

    /// The request fails with `AttemptTimeout`, `ms` after `start`.
    async fn fails_at(res: JoinHandle<Result<Response<()>, BoxError>>, start: Instant, ms: u64) {
        let err = res.await.unwrap().unwrap_err();
        assert!(err.is::<AttemptTimeout>(), "{err}");
        assert_eq!(Instant::now() - start, Duration::from_millis(ms));
    }

    fn deadline_of(req: &Request<ReplayBody<Body>>) -> Instant {
        req.deadline()
            .expect("an attempt carries its deadline")
            .instant()
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_attempt_is_abandoned_and_retried_elsewhere() {
        let start = Instant::now();
        let (svc, mut handle, layer) = setup(timed(300));
        let res = spawn_get(svc);
        // The first attempt never answers; its reply is held, not dropped.
        let (first, _held) = handle.next_request().await.unwrap();
        assert_eq!(deadline_of(&first), start + Duration::from_millis(300));
        let first_hint = hint(&first);
        // Abandoned at 300 ms, retried after the 100 ms backoff.
        let (second, reply) = handle.next_request().await.unwrap();
        assert_eq!(Instant::now() - start, Duration::from_millis(400));
        assert_eq!(deadline_of(&second), start + Duration::from_millis(700));
        assert_eq!(
            hint(&second),
            first_hint,
            "the retry is steered by the same hint"
        );
        reply.send_response(response(200, None));
        assert_eq!(res.await.unwrap().unwrap().status(), 200);
        let s = layer.stats();
        assert_eq!(
            (s.attempts, s.attempt_timeouts, s.retries_timeout, s.retries),
            (2, 1, 1, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_non_idempotent_request_is_not_retried_after_a_timeout() {
        let start = Instant::now();
        let (svc, mut handle, layer) = setup(timed(300));
        let res = tokio::spawn(svc.oneshot(request(Method::POST, empty())));
        let (first, _held) = handle.next_request().await.unwrap();
        assert_eq!(deadline_of(&first), start + Duration::from_millis(300));
        fails_at(res, start, 300).await;
        assert_eq!(layer.stats().attempts, 1);
        assert_eq!(layer.stats().attempt_timeouts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_request_deadline_bounds_the_last_attempt() {
        let start = Instant::now();
        let (svc, mut handle, layer) = setup(RetryConfig {
            deadline: Some(Duration::from_millis(500)),
            ..timed(300)
        });
        let res = spawn_get(svc);
        let (_, _held1) = handle.next_request().await.unwrap();
        let (second, _held2) = handle.next_request().await.unwrap();
        // Sent at 400 ms: its own 300 ms would end at 700, the request's at 500.
        assert_eq!(deadline_of(&second), start + Duration::from_millis(500));
        fails_at(res, start, 500).await;
        assert_eq!(layer.stats().attempts, 2);
        assert_eq!(layer.stats().attempt_timeouts, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_the_request_came_with_bounds_its_attempts() {
        let start = Instant::now();
        let (svc, mut handle, _) = setup(timed(1_000));
        let mut req = request(Method::GET, empty());
        req.extensions_mut()
            .insert(Deadline::after(Duration::from_millis(200)));
        let res = tokio::spawn(svc.oneshot(req));
        let (first, _held) = handle.next_request().await.unwrap();
        assert_eq!(deadline_of(&first), start + Duration::from_millis(200));
        fails_at(res, start, 200).await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_in_time_disarms_the_timer() {
        let (svc, mut handle, layer) = setup(timed(300));
        let res = spawn_get(svc);
        let (_, reply) = handle.next_request().await.unwrap();
        tokio::time::advance(Duration::from_millis(299)).await;
        reply.send_response(response(200, None));
        assert_eq!(res.await.unwrap().unwrap().status(), 200);
        assert_eq!(layer.stats().attempt_timeouts, 0);
    }
}

mod hedging {
    //! A slow first attempt gets a second, hedged one beside it; the first response wins.

    use super::*;
    use tokio::time::timeout;

    fn hedged(after: u64) -> RetryConfig {
        RetryConfig {
            hedge_after: Some(Duration::from_millis(after)),
            ..exact()
        }
    }

    /// Whether another attempt arrives within `ms`.
    async fn attempt_within(handle: &mut Handle, ms: u64) -> bool {
        matches!(
            timeout(Duration::from_millis(ms), handle.next_request()).await,
            Ok(Some(_))
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_hedge_is_sent_after_the_delay_and_answers_first() {
        let start = Instant::now();
        let (svc, mut handle, layer) = setup(hedged(50));
        let res = spawn_get(svc);
        let (first, _held) = handle.next_request().await.unwrap();
        let first_hint = hint(&first);
        assert!(
            !attempt_within(&mut handle, 49).await,
            "no hedge before 50 ms"
        );
        let (hedge, reply) = handle.next_request().await.unwrap();
        assert_eq!(Instant::now() - start, Duration::from_millis(50));
        assert_eq!(
            hint(&hedge),
            first_hint,
            "the balancer steers the hedge away from the first attempt's backend"
        );
        reply.send_response(response(200, None));
        assert_eq!(res.await.unwrap().unwrap().status(), 200);
        let s = layer.stats();
        assert_eq!(
            (s.attempts, s.hedges, s.hedge_wins, s.retries),
            (2, 1, 1, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_attempt_still_wins_when_it_answers_first() {
        let (svc, mut handle, layer) = setup(hedged(50));
        let res = spawn_get(svc);
        let (_, first) = handle.next_request().await.unwrap();
        let (_, hedge) = handle.next_request().await.unwrap();
        first.send_response(response(201, None));
        assert_eq!(res.await.unwrap().unwrap().status(), 201);
        // The hedge was dropped: its late answer goes nowhere.
        hedge.send_response(response(200, None));
        let stats = layer.stats();
        assert_eq!((stats.hedges, stats.hedge_wins), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_attempt_that_fails_leaves_the_hedge_to_answer() {
        let (svc, mut handle, layer) = setup(hedged(50));
        let res = spawn_get(svc);
        let (_, first) = handle.next_request().await.unwrap();
        let (_, hedge) = handle.next_request().await.unwrap();
        first.send_error(std::io::Error::other("reset"));
        tokio::time::advance(Duration::from_millis(10)).await;
        hedge.send_response(response(200, None));
        assert_eq!(res.await.unwrap().unwrap().status(), 200);
        let stats = layer.stats();
        assert_eq!((stats.hedge_wins, stats.retries), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_before_the_delay_sends_no_hedge() {
        let (svc, mut handle, layer) = setup(hedged(50));
        let res = spawn_get(svc);
        let (_, reply) = handle.next_request().await.unwrap();
        tokio::time::advance(Duration::from_millis(49)).await;
        reply.send_response(response(200, None));
        assert_eq!(res.await.unwrap().unwrap().status(), 200);
        assert!(!attempt_within(&mut handle, 1_000).await);
        assert_eq!(layer.stats().hedges, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn non_idempotent_requests_and_streamed_bodies_are_not_hedged() {
        let (svc, mut handle, layer) = setup(hedged(50));
        for req in [
            request(Method::POST, empty()),
            request(Method::PUT, streamed(&[b"a", b"b"])),
        ] {
            let res = tokio::spawn(svc.clone().oneshot(req));
            let (_, reply) = handle.next_request().await.unwrap();
            assert!(!attempt_within(&mut handle, 500).await, "not hedged");
            reply.send_response(response(200, None));
            assert_eq!(res.await.unwrap().unwrap().status(), 200);
        }
        assert_eq!(layer.stats().hedges, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_budget_sends_no_hedge() {
        let (svc, mut handle, layer) = setup(RetryConfig {
            budget: BudgetConfig {
                ratio: 0.0,
                min_per_second: 0,
                window: Duration::from_secs(10),
            },
            ..hedged(50)
        });
        let res = spawn_get(svc);
        let (_, reply) = handle.next_request().await.unwrap();
        assert!(!attempt_within(&mut handle, 500).await, "not hedged");
        reply.send_response(response(200, None));
        assert_eq!(res.await.unwrap().unwrap().status(), 200);
        assert_eq!(layer.stats().hedges, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_attempt_past_its_deadline_leaves_the_hedge_awaited() {
        let start = Instant::now();
        let (svc, mut handle, layer) = setup(RetryConfig {
            attempt_timeout: Some(Duration::from_millis(300)),
            ..hedged(50)
        });
        let res = spawn_get(svc);
        let (_, _held) = handle.next_request().await.unwrap();
        let (_, hedge) = handle.next_request().await.unwrap();
        // The first is abandoned at 300 ms; the hedge (due at 350 ms) answers at 320 ms.
        tokio::time::advance(Duration::from_millis(260)).await;
        tokio::time::advance(Duration::from_millis(10)).await;
        hedge.send_response(response(200, None));
        assert_eq!(res.await.unwrap().unwrap().status(), 200);
        assert_eq!(Instant::now() - start, Duration::from_millis(320));
        let stats = layer.stats();
        assert_eq!(
            (stats.attempt_timeouts, stats.hedge_wins, stats.retries),
            (1, 1, 0)
        );
    }
}

fn setup_heads_returned(config: RetryConfig) -> (Retry<Mock>, Handle) {
    let (mock, handle) = mock::pair();
    (RetryLayer::new(config).heads_returned().layer(mock), handle)
}

#[tokio::test(start_paused = true)]
async fn a_retry_sends_the_head_the_attempt_handed_back() {
    let (svc, mut handle) = setup_heads_returned(exact());
    let req = Request::get("/r")
        .header("x-client", "kept")
        .body(empty())
        .unwrap();
    let res = tokio::spawn(svc.oneshot(req));
    let (first, reply) = handle.next_request().await.unwrap();
    assert!(
        first.extensions().get::<Arc<RouteHint>>().is_some(),
        "the attempt carries the hint to hand its head back to"
    );
    // What the bottom of the stack does when it has sent the head.
    let (head, _) = first.into_parts();
    let held = ReturnHead::new(head);
    assert!(held.returns());
    drop(held);
    reply.send_response(response(503, None));
    let (second, reply) = handle.next_request().await.expect("retried");
    assert_eq!(second.uri(), "/r");
    assert_eq!(second.headers()["x-client"], "kept");
    assert!(second.extensions().get::<Arc<RouteHint>>().is_some());
    reply.send_response(response(200, None));
    assert_eq!(res.await.unwrap().unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn a_head_that_is_not_handed_back_is_not_retried() {
    let (svc, mut handle) = setup_heads_returned(exact());
    let res = spawn_get(svc);
    // Dropped without handing the head back: there is nothing to send again.
    let (_first, reply) = handle.next_request().await.unwrap();
    reply.send_response(response(503, None));
    // Answered without a second attempt (which would wait for its own answer).
    assert_eq!(res.await.unwrap().unwrap().status(), 503);
    assert!(handle.next_request().await.is_none(), "no second attempt");
}

#[tokio::test(start_paused = true)]
async fn a_request_dropped_unsent_below_gives_its_head_back() {
    let (svc, mut handle) = setup_heads_returned(exact());
    let res = spawn_get(svc);
    // A balancer with no endpoint for it, or an open circuit, gives it back unsent.
    let (first, reply) = handle.next_request().await.unwrap();
    first.give_back();
    reply.send_error(CircuitOpen::new());
    let (second, reply) = handle.next_request().await.expect("retried");
    assert_eq!(second.uri(), "/r");
    reply.send_response(response(200, None));
    assert_eq!(res.await.unwrap().unwrap().status(), 200);
}
