//! The balancer driven by tower-test mocks: order, weights, readiness and discovery changes.

use std::convert::Infallible;
use std::sync::Arc;

use futures::FutureExt;
use switchyard_balance::{Balance, NoBackendsAvailable, Weighted};
use tokio::sync::mpsc;
use tower::discover::Change;
use tower::{Service, ServiceExt};
use tower_test::mock;

type Mock = mock::Mock<&'static str, &'static str>;
type Handle = mock::Handle<&'static str, &'static str>;
type Tx = mpsc::UnboundedSender<Result<Change<usize, Weighted<Mock>>, Infallible>>;
type Balancer = Balance<Weighted<Mock>, &'static str>;

/// A discovery stream fed by hand, and a balancer over it.
fn balancer() -> (Tx, Balancer) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let discover = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (tx, Balance::weighted(discover))
}

fn insert(tx: &Tx, key: usize, weight: u32) -> Handle {
    let (svc, handle) = mock::pair();
    tx.send(Ok(Change::Insert(key, Weighted::new(svc, weight))))
        .unwrap();
    handle
}

/// Waits until the balancer has applied discovery changes leaving `n` endpoints.
async fn settled(balance: &Balancer, n: usize) {
    balance
        .endpoint_count()
        .wait_for(|&c| c == n)
        .await
        .unwrap();
}

/// Sends one request and answers it from whichever endpoint received it; returns that
/// endpoint's index in `handles`.
async fn route(balance: &mut Balancer, handles: &mut [Handle]) -> usize {
    let fut = balance.ready().await.unwrap().call("req");
    let mut hit = None;
    for (i, h) in handles.iter_mut().enumerate() {
        if let Some(Some((req, send))) = h.next_request().now_or_never() {
            assert_eq!(req, "req");
            assert!(hit.is_none(), "request delivered twice");
            send.send_response("ok");
            hit = Some(i);
        }
    }
    assert_eq!(fut.await.unwrap(), "ok");
    hit.expect("request reached no endpoint")
}

async fn routes(balance: &mut Balancer, handles: &mut [Handle], n: usize) -> Vec<usize> {
    let mut order = Vec::with_capacity(n);
    for _ in 0..n {
        order.push(route(balance, handles).await);
    }
    order
}

fn count(order: &[usize], endpoint: usize) -> usize {
    order.iter().filter(|&&i| i == endpoint).count()
}

#[tokio::test]
async fn exact_round_robin_over_three() {
    let (tx, mut balance) = balancer();
    let mut handles: Vec<_> = (0..3).map(|k| insert(&tx, k, 1)).collect();
    settled(&balance, 3).await;
    assert_eq!(
        routes(&mut balance, &mut handles, 9).await,
        [0, 1, 2, 0, 1, 2, 0, 1, 2]
    );
}

#[tokio::test]
async fn smooth_weighted_five_one_one() {
    let (tx, mut balance) = balancer();
    let mut handles = vec![insert(&tx, 0, 5), insert(&tx, 1, 1), insert(&tx, 2, 1)];
    settled(&balance, 3).await;
    let order = routes(&mut balance, &mut handles, 14).await;
    assert_eq!(order, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
}

#[tokio::test]
async fn not_ready_endpoint_is_skipped_and_the_others_keep_serving() {
    let (tx, mut balance) = balancer();
    let mut handles: Vec<_> = (0..3).map(|k| insert(&tx, k, 1)).collect();
    settled(&balance, 3).await;
    handles[1].allow(0);
    let order = routes(&mut balance, &mut handles, 6).await;
    assert_eq!(
        count(&order, 1),
        0,
        "a not-ready endpoint got traffic: {order:?}"
    );
    assert_eq!(count(&order, 0) + count(&order, 2), 6);
    assert!(count(&order, 0) >= 2 && count(&order, 2) >= 2, "{order:?}");

    // Ready again: it is back in rotation.
    handles[1].allow(u64::MAX);
    let order = routes(&mut balance, &mut handles, 3).await;
    assert_eq!(
        count(&order, 1),
        1,
        "a recovered endpoint got no traffic: {order:?}"
    );
}

#[tokio::test]
async fn none_ready_fails_at_once() {
    let (tx, mut balance) = balancer();
    let mut handles: Vec<_> = (0..2).map(|k| insert(&tx, k, 1)).collect();
    settled(&balance, 2).await;
    for h in &mut handles {
        h.allow(0);
    }
    // `ready()` resolves immediately (never parks) and the call fails with a typed error.
    let svc = balance
        .ready()
        .now_or_never()
        .expect("balancer parked the caller")
        .unwrap();
    let err = svc
        .call("req")
        .now_or_never()
        .expect("failure was not immediate")
        .unwrap_err();
    assert!(err.is::<NoBackendsAvailable>(), "{err}");
}

#[tokio::test]
async fn empty_set_fails_at_once() {
    let (_tx, mut balance) = balancer();
    let err = balance
        .ready()
        .await
        .unwrap()
        .call("req")
        .await
        .unwrap_err();
    assert!(err.is::<NoBackendsAvailable>(), "{err}");
}

#[tokio::test]
async fn insert_and_remove_while_requests_flow() {
    let (tx, mut balance) = balancer();
    let mut handles = vec![insert(&tx, 0, 1), insert(&tx, 1, 1)];
    settled(&balance, 2).await;

    // A request in flight on endpoint 1 when it is removed still completes.
    assert_eq!(route(&mut balance, &mut handles).await, 0);
    let in_flight = balance.ready().await.unwrap().call("req");
    let (_, send) = handles[1].next_request().await.unwrap();
    tx.send(Ok(Change::Remove(1))).unwrap();
    settled(&balance, 1).await;
    send.send_response("late");
    assert_eq!(in_flight.await.unwrap(), "late");

    let order = routes(&mut balance, &mut handles, 4).await;
    assert_eq!(order, [0, 0, 0, 0], "removed endpoint still chosen");

    handles.push(insert(&tx, 2, 1));
    settled(&balance, 2).await;
    let order = routes(&mut balance, &mut handles, 4).await;
    assert_eq!(
        count(&order, 2),
        2,
        "new endpoint gets its share: {order:?}"
    );
    assert_eq!(count(&order, 0), 2, "{order:?}");
}

#[tokio::test]
async fn reinserting_a_key_replaces_the_endpoint() {
    let (tx, mut balance) = balancer();
    let old = insert(&tx, 0, 1);
    settled(&balance, 1).await;
    let mut handles = vec![old, insert(&tx, 0, 1)];
    // The count stays 1; wait for the replacement to be applied by routing until it shows.
    let mut order = Vec::new();
    for _ in 0..10 {
        order.push(route(&mut balance, &mut handles).await);
        if order.last() == Some(&1) {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(order.last(), Some(&1), "replacement never used: {order:?}");
    assert_eq!(balance.len(), 1);
    let order = routes(&mut balance, &mut handles, 3).await;
    assert_eq!(order, [1, 1, 1], "the replaced endpoint is gone");
}

#[tokio::test]
async fn clones_share_the_rotation() {
    let (tx, mut balance) = balancer();
    let mut handles: Vec<_> = (0..2).map(|k| insert(&tx, k, 1)).collect();
    settled(&balance, 2).await;
    let mut other = balance.clone();
    let a = route(&mut balance, &mut handles).await;
    let b = route(&mut other, &mut handles).await;
    assert_ne!(a, b, "clones must continue one rotation, not restart it");
}

#[tokio::test]
async fn call_without_poll_ready_still_routes() {
    let (tx, mut balance) = balancer();
    let mut handles = [insert(&tx, 0, 1)];
    settled(&balance, 1).await;
    let fut = balance.call("req");
    let (_, send) = handles[0].next_request().await.unwrap();
    send.send_response("ok");
    assert_eq!(fut.await.unwrap(), "ok");
}

#[tokio::test]
async fn discovery_task_stops_when_the_last_clone_drops() {
    let (tx, balance) = balancer();
    let _h = insert(&tx, 0, 1);
    settled(&balance, 1).await;
    let other = balance.clone();
    drop(balance);
    tokio::task::yield_now().await;
    assert!(!tx.is_closed(), "task stopped while a clone is alive");
    drop(other);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(tx.is_closed(), "discovery task outlived the balancer");
}

/// A request that carries a retry's route hint.
#[derive(Debug)]
struct Hinted(Arc<switchyard_balance::RouteHint>);

#[tokio::test]
async fn a_retry_avoids_the_endpoint_of_the_previous_attempt() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let discover = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut balance: Balance<Weighted<mock::Mock<Hinted, &'static str>>, Hinted> =
        Balance::weighted(discover).route_hints(|req: &Hinted| Some(&*req.0));
    let mut handles = Vec::new();
    for key in 0..2usize {
        let (svc, handle) = mock::pair::<Hinted, &'static str>();
        tx.send(Ok::<_, Infallible>(Change::Insert(
            key,
            Weighted::new(svc, 1),
        )))
        .unwrap();
        handles.push(handle);
    }
    balance
        .endpoint_count()
        .wait_for(|&n| n == 2)
        .await
        .unwrap();

    let hint = Arc::new(switchyard_balance::RouteHint::new());
    // First attempt: endpoint 0 (id 1), recorded in the hint.
    let _first = balance.ready().await.unwrap().call(Hinted(hint.clone()));
    assert!(handles[0].next_request().now_or_never().is_some());
    assert_eq!(hint.last(), Some(1));
    // The rotation now points at endpoint 1; move it back to endpoint 0 so that the
    // retry would land on the same endpoint without the hint.
    let _other = balance.ready().await.unwrap().call(Hinted(Arc::default()));
    assert!(handles[1].next_request().now_or_never().is_some());
    let _retry = balance.ready().await.unwrap().call(Hinted(hint.clone()));
    assert!(
        handles[0].next_request().now_or_never().is_none(),
        "the retry went to the same endpoint"
    );
    assert!(handles[1].next_request().now_or_never().is_some());
    assert_eq!(hint.last(), Some(2));
}

/// A request that records whether it was handed to [`Balance::unsent`].
struct Tracked(Arc<std::sync::atomic::AtomicBool>);

#[tokio::test]
async fn a_request_no_endpoint_takes_goes_to_unsent() {
    type TrackedMock = mock::Mock<Tracked, &'static str>;
    let (tx, mut rx) =
        mpsc::unbounded_channel::<Result<Change<usize, Weighted<TrackedMock>>, Infallible>>();
    let discover = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut balance: Balance<Weighted<TrackedMock>, Tracked> = Balance::weighted(discover)
        .unsent(|req: Tracked| req.0.store(true, std::sync::atomic::Ordering::SeqCst));
    let unsent = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // No endpoint: the request goes to `unsent`, and the caller gets the error.
    let err = balance
        .call(Tracked(unsent.clone()))
        .await
        .expect_err("no endpoint");
    assert!(err.downcast_ref::<NoBackendsAvailable>().is_some(), "{err}");
    assert!(unsent.load(std::sync::atomic::Ordering::SeqCst));

    // An endpoint takes the next one: it is not handed to `unsent`.
    let (svc, mut handle) = mock::pair();
    tx.send(Ok(Change::Insert(0, Weighted::new(svc, 1))))
        .unwrap();
    balance
        .endpoint_count()
        .wait_for(|&n| n == 1)
        .await
        .unwrap();
    let sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fut = balance.ready().await.unwrap().call(Tracked(sent.clone()));
    let (_, reply) = handle.next_request().await.expect("delivered");
    reply.send_response("ok");
    assert_eq!(fut.await.unwrap(), "ok");
    assert!(!sent.load(std::sync::atomic::Ordering::SeqCst));
}
