//! Every transition of the breaker, on paused time, with tower-test mocks.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use http::Response;
use switchyard_breaker::{
    Breaker, BreakerConfig, CircuitBreaker, CircuitBreakerLayer, CircuitBreakers, CircuitOpen,
    RateTrip, State,
};
use switchyard_core::{BoxError, ConnectError, ConnectErrorKind};
use tokio::time::{advance, Instant};
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;

type Mock = mock::Mock<(), Response<()>>;
type Handle = mock::Handle<(), Response<()>>;
type Svc = CircuitBreaker<Mock>;

fn exact() -> BreakerConfig {
    BreakerConfig {
        jitter: 0.0,
        ..BreakerConfig::default()
    }
}

fn setup(config: BreakerConfig) -> (Svc, Handle, Arc<Breaker>) {
    let (mock, handle) = mock::pair();
    let layer = CircuitBreakerLayer::new(config);
    let breaker = layer.breaker().clone();
    (layer.layer(mock), handle, breaker)
}

fn response(status: u16, retry_after: Option<&str>) -> Response<()> {
    let mut b = Response::builder().status(status);
    if let Some(v) = retry_after {
        b = b.header("retry-after", v);
    }
    b.body(()).unwrap()
}

/// One request through the breaker, answered by the backend with `status`; the
/// breaker's refusal comes back as `Err` without reaching the backend.
async fn send(
    svc: &mut Svc,
    handle: &mut Handle,
    status: u16,
    retry_after: Option<&str>,
) -> Result<u16, BoxError> {
    let ready = svc.ready().await?;
    let fut = ready.call(());
    let (_, reply) = handle
        .next_request()
        .await
        .expect("request reached the backend");
    reply.send_response(response(status, retry_after));
    fut.await.map(|r| r.status().as_u16())
}

fn is_open(err: &BoxError) -> bool {
    err.is::<CircuitOpen>()
}

/// Readiness alone, without waiting: the breaker must answer at once.
fn ready_now(svc: &mut Svc) -> Result<(), BoxError> {
    svc.ready()
        .now_or_never()
        .expect("the breaker parked the caller")
        .map(|_| ())
}

#[tokio::test(start_paused = true)]
async fn five_consecutive_failures_open_it() {
    let (mut svc, mut handle, breaker) = setup(exact());
    for _ in 0..4 {
        assert_eq!(send(&mut svc, &mut handle, 500, None).await.unwrap(), 500);
        assert_eq!(breaker.state(), State::Closed);
    }
    let tripped_at = Instant::now();
    send(&mut svc, &mut handle, 500, None).await.unwrap();
    assert_eq!(
        breaker.state(),
        State::Open {
            until: tripped_at + Duration::from_secs(30)
        }
    );
    assert_eq!(breaker.trips(), 1);
    let err = ready_now(&mut svc).unwrap_err();
    assert!(is_open(&err), "{err}");
    // A call made anyway fails at once and never reaches the backend.
    let err = svc.call(()).now_or_never().unwrap().unwrap_err();
    assert!(is_open(&err), "{err}");
    assert!(handle.next_request().now_or_never().is_none());
}

#[tokio::test(start_paused = true)]
async fn connect_errors_count_and_4xx_do_not() {
    let (mut svc, mut handle, breaker) = setup(exact());
    for status in [404; 10] {
        assert_eq!(
            send(&mut svc, &mut handle, status, None).await.unwrap(),
            status
        );
    }
    assert_eq!(breaker.state(), State::Closed);
    for i in 0..5 {
        let fut = svc.ready().await.unwrap().call(());
        let (_, reply) = handle.next_request().await.unwrap();
        reply.send_error(ConnectError::new(ConnectErrorKind::Dns, "nowhere:80", None));
        assert!(fut.await.is_err());
        assert_eq!(breaker.state().is_closed(), i < 4);
    }
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_count() {
    let (mut svc, mut handle, breaker) = setup(exact());
    for _ in 0..4 {
        send(&mut svc, &mut handle, 502, None).await.unwrap();
    }
    send(&mut svc, &mut handle, 200, None).await.unwrap();
    for _ in 0..4 {
        send(&mut svc, &mut handle, 502, None).await.unwrap();
    }
    assert_eq!(breaker.state(), State::Closed);
    send(&mut svc, &mut handle, 502, None).await.unwrap();
    assert!(matches!(breaker.state(), State::Open { .. }));
}

async fn trip(svc: &mut Svc, handle: &mut Handle) {
    for _ in 0..5 {
        send(svc, handle, 500, None).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn after_the_timeout_one_probe_is_admitted_and_its_success_closes() {
    let (mut svc, mut handle, breaker) = setup(exact());
    trip(&mut svc, &mut handle).await;
    advance(Duration::from_secs(29)).await;
    assert!(
        is_open(&ready_now(&mut svc).unwrap_err()),
        "probed before the timeout"
    );
    advance(Duration::from_secs(1)).await;
    assert_eq!(breaker.state(), State::HalfOpen);

    let mut probe = svc.clone();
    let mut other = svc.clone();
    ready_now(&mut probe).expect("the probe is admitted");
    assert!(
        is_open(&ready_now(&mut other).unwrap_err()),
        "a second request got through half-open"
    );

    let fut = probe.call(());
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(response(200, None));
    fut.await.unwrap();
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(send(&mut other, &mut handle, 200, None).await.unwrap(), 200);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_with_doubled_time() {
    let (mut svc, mut handle, breaker) = setup(exact());
    trip(&mut svc, &mut handle).await;
    for expected in [60u64, 120, 240] {
        advance(breaker_wait(&breaker)).await;
        let failed_at = Instant::now();
        send(&mut svc, &mut handle, 500, None).await.unwrap(); // the probe fails
        assert_eq!(
            breaker.state(),
            State::Open {
                until: failed_at + Duration::from_secs(expected)
            }
        );
        advance(Duration::from_secs(expected) - Duration::from_millis(1)).await;
        assert!(is_open(&ready_now(&mut svc).unwrap_err()));
        advance(Duration::from_millis(1)).await;
        assert_eq!(breaker.state(), State::HalfOpen);
    }
    assert_eq!(breaker.trips(), 4);
    // Recovery resets the doubling.
    send(&mut svc, &mut handle, 200, None).await.unwrap();
    assert_eq!(breaker.state(), State::Closed);
    trip(&mut svc, &mut handle).await;
    let State::Open { until } = breaker.state() else {
        panic!("not open")
    };
    assert_eq!(until - Instant::now(), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn reset_closes_and_forgets_the_doubling() {
    let (mut svc, mut handle, breaker) = setup(exact());
    let mut events = breaker.subscribe();
    assert!(!breaker.reset(), "a closed breaker has nothing to reset");

    trip(&mut svc, &mut handle).await;
    advance(breaker_wait(&breaker)).await;
    send(&mut svc, &mut handle, 500, None).await.unwrap(); // the probe fails: 60 s
    assert_eq!(breaker_wait(&breaker), Duration::from_secs(60));
    while events.try_recv().is_ok() {}

    // Long before the open time is up, the breaker closes at once.
    advance(Duration::from_secs(1)).await;
    assert!(breaker.reset());
    assert_eq!(breaker.state(), State::Closed);
    let e = events.recv().await.unwrap();
    assert_eq!((e.from.name(), e.to), ("open", State::Closed));
    ready_now(&mut svc).expect("requests flow again");
    assert_eq!(send(&mut svc, &mut handle, 200, None).await.unwrap(), 200);

    // A failed probe after the next trip opens for 60 s again, not 120 s.
    trip(&mut svc, &mut handle).await;
    assert_eq!(breaker_wait(&breaker), Duration::from_secs(30));
    advance(Duration::from_secs(30)).await;
    send(&mut svc, &mut handle, 500, None).await.unwrap();
    assert_eq!(breaker_wait(&breaker), Duration::from_secs(60));

    // Half-open closes too; forced open does not.
    advance(Duration::from_secs(60)).await;
    assert_eq!(breaker.state(), State::HalfOpen);
    assert!(breaker.reset());
    assert_eq!(breaker.state(), State::Closed);
    breaker.force_open();
    assert!(!breaker.reset());
    assert_eq!(breaker.state(), State::ForcedOpen);
    assert_eq!(breaker.trips(), 4);
}

fn breaker_wait(breaker: &Breaker) -> Duration {
    match breaker.state() {
        State::Open { until } => until - Instant::now(),
        _ => Duration::ZERO,
    }
}

#[tokio::test(start_paused = true)]
async fn doubled_times_are_capped_and_jittered_within_bounds() {
    let config = BreakerConfig {
        jitter: 0.1,
        max_timeout: Duration::from_secs(100),
        ..BreakerConfig::default()
    };
    let (mut svc, mut handle, breaker) = setup(config);
    trip(&mut svc, &mut handle).await;
    assert_eq!(
        breaker_wait(&breaker),
        Duration::from_secs(30),
        "the first trip is not jittered"
    );
    for cap in [60.0, 100.0, 100.0] {
        advance(breaker_wait(&breaker)).await;
        send(&mut svc, &mut handle, 500, None).await.unwrap();
        let wait = breaker_wait(&breaker).as_secs_f64();
        assert!(
            wait >= cap * 0.9 - 1e-6 && wait <= cap * 1.1 + 1e-6,
            "open for {wait}s, expected {cap}s ±10%"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_sets_the_open_time() {
    let (mut svc, mut handle, breaker) = setup(exact());
    for _ in 0..4 {
        send(&mut svc, &mut handle, 500, None).await.unwrap();
    }
    let at = Instant::now();
    send(&mut svc, &mut handle, 503, Some("7")).await.unwrap();
    assert_eq!(
        breaker.state(),
        State::Open {
            until: at + Duration::from_secs(7)
        }
    );
    advance(Duration::from_millis(6_999)).await;
    assert!(is_open(&ready_now(&mut svc).unwrap_err()));
    advance(Duration::from_millis(1)).await;
    ready_now(&mut svc).expect("probe after Retry-After");
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_capped() {
    let config = BreakerConfig {
        retry_after_cap: Duration::from_secs(60),
        ..exact()
    };
    let (mut svc, mut handle, breaker) = setup(config);
    for _ in 0..6 {
        send(&mut svc, &mut handle, 429, Some("3600"))
            .await
            .unwrap();
    }
    assert_eq!(
        breaker.state(),
        State::Closed,
        "429 is not a failure by default"
    );
    for _ in 0..4 {
        send(&mut svc, &mut handle, 500, None).await.unwrap();
    }
    send(&mut svc, &mut handle, 503, Some("3600"))
        .await
        .unwrap();
    assert_eq!(breaker_wait(&breaker), Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_frees_its_slot() {
    let (mut svc, mut handle, _breaker) = setup(exact());
    trip(&mut svc, &mut handle).await;
    advance(Duration::from_secs(30)).await;
    let mut probe = svc.clone();
    ready_now(&mut probe).unwrap();
    let fut = probe.call(());
    drop(fut);
    let _ = handle.next_request().await;
    let mut next = svc.clone();
    ready_now(&mut next).expect("slot of the dropped probe not released");
    // A readiness check never followed by a call releases its slot when dropped too.
    drop(next);
    ready_now(&mut svc).expect("slot of an unused readiness check not released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_half_open_let_exactly_the_probes_through() {
    let config = BreakerConfig {
        threshold: 1,
        probes: 3,
        ..exact()
    };
    let (mut svc, mut handle, breaker) = setup(config);
    // Retry-After: 0 opens it for no time at all: the next request is half-open.
    assert_eq!(
        send(&mut svc, &mut handle, 503, Some("0")).await.unwrap(),
        503
    );
    assert_eq!(breaker.state(), State::HalfOpen);

    let barrier = Arc::new(tokio::sync::Barrier::new(1000));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let mut svc = svc.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                match svc.ready().await {
                    Ok(ready) => Some(ready.call(())),
                    Err(e) => {
                        assert!(e.is::<CircuitOpen>(), "{e}");
                        None
                    }
                }
            })
        })
        .collect();
    let mut admitted = Vec::new();
    for t in tasks {
        if let Some(fut) = t.await.unwrap() {
            admitted.push(fut);
        }
    }
    assert_eq!(admitted.len(), 3);
    for _ in 0..3 {
        let (_, reply) = handle.next_request().await.unwrap();
        reply.send_response(response(200, None));
    }
    assert!(
        handle.next_request().now_or_never().is_none(),
        "more than 3 reached the backend"
    );
    for fut in admitted {
        fut.await.unwrap();
    }
    assert_eq!(breaker.state(), State::Closed);
}

/// `n` requests answered 500, 200, 500, … (failures on even turns).
async fn alternate(svc: &mut Svc, handle: &mut Handle, n: usize) {
    for i in 0..n {
        let status = if i % 2 == 0 { 500 } else { 200 };
        send(svc, handle, status, None).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn failure_rate_over_the_window_trips_with_a_minimum_count() {
    let config = BreakerConfig {
        threshold: 1_000,
        rate: Some(RateTrip {
            failure_ratio: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
        }),
        ..exact()
    };
    let (mut svc, mut handle, breaker) = setup(config.clone());
    // 19 requests, 10 of them failures: over half, but under the minimum count.
    alternate(&mut svc, &mut handle, 19).await;
    assert_eq!(breaker.state(), State::Closed);
    send(&mut svc, &mut handle, 500, None).await.unwrap(); // 11 of 20
    assert!(matches!(breaker.state(), State::Open { .. }));

    // Old requests leave the window: 15 failures, then after 11 s the same 19 alternating
    // requests do not trip a fresh breaker.
    let (mut svc, mut handle, breaker) = setup(config);
    for _ in 0..15 {
        send(&mut svc, &mut handle, 500, None).await.unwrap();
    }
    advance(Duration::from_secs(11)).await;
    alternate(&mut svc, &mut handle, 19).await;
    assert_eq!(
        breaker.state(),
        State::Closed,
        "failures older than the window still counted"
    );
}

#[tokio::test(start_paused = true)]
async fn transitions_are_published_and_operators_can_force() {
    let breakers = CircuitBreakers::new(exact());
    let mut events = breakers.subscribe();
    let (mock, mut handle) = mock::pair();
    let mut svc = breakers.layer("b1").layer(mock);
    trip(&mut svc, &mut handle).await;
    let e = events.recv().await.unwrap();
    assert_eq!((&*e.id, e.from, e.to.name()), ("b1", State::Closed, "open"));
    advance(Duration::from_secs(30)).await;
    send(&mut svc, &mut handle, 200, None).await.unwrap();
    let e = events.recv().await.unwrap();
    assert_eq!((e.from.name(), e.to), ("open", State::HalfOpen));
    let e = events.recv().await.unwrap();
    assert_eq!((e.from, e.to), (State::HalfOpen, State::Closed));

    assert!(breakers.force_open("b1"));
    assert_eq!(breakers.state("b1"), Some(State::ForcedOpen));
    advance(Duration::from_secs(3600)).await;
    assert!(
        is_open(&ready_now(&mut svc).unwrap_err()),
        "forced open lets requests through"
    );
    assert!(breakers.force_close("b1"));
    assert_eq!(send(&mut svc, &mut handle, 200, None).await.unwrap(), 200);
    assert_eq!(breakers.trips("b1"), Some(1));
    assert!(!breakers.force_open("nope"));
    assert_eq!(breakers.states().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_disabled_breaker_lets_everything_through() {
    let (mut svc, mut handle, breaker) = setup(BreakerConfig {
        enabled: false,
        ..exact()
    });
    for _ in 0..20 {
        assert_eq!(send(&mut svc, &mut handle, 500, None).await.unwrap(), 500);
    }
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn disabled_at_run_time_it_lets_everything_through_and_enabled_again_it_counts() {
    let (mut svc, mut handle, breaker) = setup(exact());
    breaker.set_config(BreakerConfig {
        enabled: false,
        ..exact()
    });
    for _ in 0..20 {
        assert_eq!(send(&mut svc, &mut handle, 500, None).await.unwrap(), 500);
    }
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.trips(), 0);
    // Failures while it was off do not count: five more trip it, four do not.
    breaker.set_config(exact());
    for _ in 0..4 {
        send(&mut svc, &mut handle, 500, None).await.unwrap();
    }
    assert_eq!(breaker.state(), State::Closed);
    send(&mut svc, &mut handle, 500, None).await.unwrap();
    assert!(matches!(breaker.state(), State::Open { .. }));
    assert!(is_open(&ready_now(&mut svc).unwrap_err()));
}

mod deadlines {
    //! A request dropped before its outcome is known: a timeout of its backend if its
    //! deadline had passed, nothing otherwise.

    use super::*;
    use http::Request;
    use switchyard_core::Deadline;

    type HttpMock = mock::Mock<Request<()>, Response<()>>;
    type HttpHandle = mock::Handle<Request<()>, Response<()>>;

    fn http(config: BreakerConfig) -> (CircuitBreaker<HttpMock>, HttpHandle, Arc<Breaker>) {
        let (mock, handle) = mock::pair();
        let layer = CircuitBreakerLayer::new(config);
        let breaker = layer.breaker().clone();
        (layer.layer(mock), handle, breaker)
    }

    /// Trips after `threshold` failures in a row.
    fn tripping_at(threshold: u32) -> BreakerConfig {
        BreakerConfig {
            threshold,
            ..exact()
        }
    }

    /// Sends a request with a deadline `after` ms from now (`None`: without one), lets
    /// `wait` ms pass and drops it unanswered.
    async fn abandon(
        svc: &mut CircuitBreaker<HttpMock>,
        handle: &mut HttpHandle,
        after: Option<u64>,
        wait: u64,
    ) {
        let mut req = Request::new(());
        if let Some(after) = after {
            let deadline = Deadline::after(Duration::from_millis(after));
            req.extensions_mut().insert(deadline);
        }
        let fut = svc.ready().await.unwrap().call(req);
        let _req = handle.next_request().await.expect("sent");
        advance(Duration::from_millis(wait)).await;
        drop(fut);
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_past_its_deadline_is_a_timeout_failure() {
        let (mut svc, mut handle, breaker) = http(tripping_at(2));
        abandon(&mut svc, &mut handle, Some(300), 300).await;
        assert!(breaker.state().is_closed(), "one failure of two");
        abandon(&mut svc, &mut handle, Some(300), 400).await;
        assert!(
            matches!(breaker.state(), State::Open { .. }),
            "two timeouts trip it: {:?}",
            breaker.state()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_before_its_deadline_counts_for_nothing() {
        let (mut svc, mut handle, breaker) = http(tripping_at(1));
        abandon(&mut svc, &mut handle, Some(300), 299).await;
        assert!(breaker.state().is_closed(), "the caller went away first");
        // Without a deadline, a drop never counts.
        abandon(&mut svc, &mut handle, None, 60_000).await;
        assert!(breaker.state().is_closed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_dropped_past_its_deadline_reopens_and_one_dropped_early_frees_its_slot() {
        let (mut svc, mut handle, breaker) = http(BreakerConfig {
            threshold: 1,
            timeout: Duration::from_secs(1),
            probes: 1,
            ..exact()
        });
        abandon(&mut svc, &mut handle, Some(100), 100).await;
        assert_eq!(breaker.trips(), 1);
        advance(Duration::from_secs(1)).await;
        // A probe the caller gave up on early: the slot is free again.
        abandon(&mut svc, &mut handle, Some(100), 50).await;
        assert_eq!(breaker.state(), State::HalfOpen);
        // A probe that timed out: open again.
        abandon(&mut svc, &mut handle, Some(100), 100).await;
        assert_eq!(breaker.trips(), 2);
        assert!(matches!(breaker.state(), State::Open { .. }));
    }
}

/// A request refused by an open circuit without a readiness check gives its head back to
/// a retry above that sends heads again (see `switchyard_core::GiveBack`).
#[tokio::test(start_paused = true)]
async fn a_refused_request_gives_its_head_back() {
    use http::Request;
    use switchyard_core::RouteHint;
    let layer = CircuitBreakerLayer::new(exact());
    let breaker = layer.breaker().clone();
    let (mock, _handle) = mock::pair::<Request<()>, Response<()>>();
    let mut svc = layer.layer(mock);
    breaker.force_open();
    let hint = Arc::new(RouteHint::returning_heads());
    let mut req = Request::get("/kept").body(()).unwrap();
    req.extensions_mut().insert(hint.clone());
    let err = svc.call(req).await.expect_err("refused");
    assert!(is_open(&err), "{err}");
    let head = hint.take_head().expect("handed back");
    assert_eq!(head.uri, "/kept");
}
