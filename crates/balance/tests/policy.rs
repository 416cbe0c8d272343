//! The load-aware policies and slow start on paused time: endpoints that answer after a
//! fixed delay, requests arriving at a fixed rate, shares counted per endpoint.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use switchyard_balance::{Balance, BalanceConfig, Policy, Weighted};
use tokio::sync::mpsc;
use tokio::time::{sleep, Instant};
use tower::discover::Change;
use tower::{Service, ServiceExt};

type Endpoint = Weighted<tower::util::BoxCloneSyncService<(), usize, Infallible>>;
type Tx = mpsc::UnboundedSender<Result<Change<usize, Endpoint>, Infallible>>;

/// Requests each endpoint has received.
#[derive(Clone, Default)]
struct Counts(Arc<[AtomicUsize; 8]>);

impl Counts {
    fn get(&self, i: usize) -> usize {
        self.0[i].load(Ordering::Relaxed)
    }
}

/// Endpoint `i`: counts its requests and answers after `delay`.
fn endpoint(i: usize, delay: Duration, counts: &Counts) -> Endpoint {
    let counts = counts.clone();
    let svc = tower::service_fn(move |()| -> BoxFuture<'static, Result<usize, Infallible>> {
        counts.0[i].fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            sleep(delay).await;
            Ok(i)
        })
    });
    Weighted::new(tower::util::BoxCloneSyncService::new(svc), 1)
}

/// A balancer over endpoints answering after `delays`, and the channel that feeds it.
fn balancer(
    config: BalanceConfig,
    delays: &[Duration],
    counts: &Counts,
) -> (Tx, Balance<Endpoint, ()>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    for (i, &delay) in delays.iter().enumerate() {
        tx.send(Ok(Change::Insert(i, endpoint(i, delay, counts))))
            .unwrap();
    }
    let discover = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    (tx, Balance::weighted_with(discover, config))
}

fn policy(policy: Policy) -> BalanceConfig {
    BalanceConfig {
        policy,
        ..BalanceConfig::default()
    }
}

/// Sends `n` requests, one every `gap`, without waiting for their answers.
async fn send(balance: &mut Balance<Endpoint, ()>, n: usize, gap: Duration) {
    for _ in 0..n {
        let fut = balance.ready().await.unwrap().call(());
        tokio::spawn(fut);
        sleep(gap).await;
    }
}

const FAST: Duration = Duration::from_millis(10);
const SLOW: Duration = Duration::from_millis(100);
const GAP: Duration = Duration::from_millis(2);

#[tokio::test(start_paused = true)]
async fn a_ten_times_slower_endpoint_gets_a_small_share() {
    for p in [Policy::LeastRequest, Policy::PeakEwma] {
        let counts = Counts::default();
        let (_tx, mut balance) = balancer(policy(p), &[FAST, FAST, SLOW], &counts);
        send(&mut balance, 3_000, GAP).await;
        let share = counts.get(2) as f64 / 3_000.0;
        tracing::info!(%p, share, "share of the slow endpoint");
        assert!(share < 0.12, "{p}: the slow endpoint got {share:.3}");
    }
    // Round robin, blind to load, gives it its third.
    let counts = Counts::default();
    let (_tx, mut balance) = balancer(policy(Policy::RoundRobin), &[FAST, FAST, SLOW], &counts);
    send(&mut balance, 3_000, GAP).await;
    assert_eq!(counts.get(2), 1_000);
}

#[tokio::test(start_paused = true)]
async fn equal_endpoints_get_equal_shares() {
    for p in Policy::ALL {
        let counts = Counts::default();
        let (_tx, mut balance) = balancer(policy(p), &[FAST; 4], &counts);
        send(&mut balance, 4_000, GAP).await;
        for i in 0..4 {
            let share = counts.get(i) as f64 / 4_000.0;
            assert!(
                (share - 0.25).abs() < 0.04,
                "{p}: endpoint {i} got {share:.3}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn weights_are_respected_by_the_load_aware_policies() {
    for p in [Policy::LeastRequest, Policy::PeakEwma] {
        let counts = Counts::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        for (i, weight) in [(0, 3), (1, 1)] {
            let svc = endpoint(i, FAST, &counts).into_inner();
            tx.send(Ok::<_, Infallible>(Change::Insert(
                i,
                Weighted::new(svc, weight),
            )))
            .unwrap();
        }
        let discover = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut balance = Balance::weighted_with(discover, policy(p));
        send(&mut balance, 4_000, GAP).await;
        let share = counts.get(0) as f64 / 4_000.0;
        assert!(share > 0.6, "{p}: the weight-3 endpoint got {share:.3}");
    }
}

/// The share endpoint 2 got of the requests sent over `over`, one every 2 ms: 1,000 to a
/// 2 s window, so that the random choices of the two-choice policies move a share by
/// about 0.015 (it was 0.03 at 200, close enough to the 0.1 between the ramp's stages
/// for a run in a hundred to see no rise).
async fn share_over(balance: &mut Balance<Endpoint, ()>, counts: &Counts, over: Duration) -> f64 {
    let before: Vec<usize> = (0..3).map(|i| counts.get(i)).collect();
    let end = Instant::now() + over;
    while Instant::now() < end {
        send(balance, 1, GAP).await;
    }
    let got: Vec<usize> = (0..3).map(|i| counts.get(i) - before[i]).collect();
    got[2] as f64 / got.iter().sum::<usize>() as f64
}

#[tokio::test(start_paused = true)]
async fn a_rejoining_endpoint_ramps_up_over_the_slow_start() {
    let window = Duration::from_secs(10);
    for p in Policy::ALL {
        let counts = Counts::default();
        let config = BalanceConfig {
            policy: p,
            slow_start: window,
        };
        let (tx, mut balance) = balancer(config, &[FAST; 3], &counts);
        // Endpoints there from the start take their full share at once.
        let start = share_over(&mut balance, &counts, Duration::from_secs(1)).await;
        assert!((start - 1.0 / 3.0).abs() < 0.08, "{p}: {start:.3} at start");
        // Endpoint 2 leaves (its checks fail, it is disabled…) and comes back.
        tx.send(Ok(Change::Remove(2))).unwrap();
        share_over(&mut balance, &counts, Duration::from_secs(1)).await;
        tx.send(Ok(Change::Insert(2, endpoint(2, FAST, &counts))))
            .unwrap();
        let first = share_over(&mut balance, &counts, Duration::from_secs(2)).await;
        share_over(&mut balance, &counts, Duration::from_secs(3)).await;
        let middle = share_over(&mut balance, &counts, Duration::from_secs(2)).await;
        share_over(&mut balance, &counts, Duration::from_secs(4)).await;
        let after = share_over(&mut balance, &counts, Duration::from_secs(2)).await;
        tracing::info!(%p, first, middle, after, "shares of the rejoining endpoint");
        // Round robin follows the weights exactly: 0.1–0.28 of a full weight over the
        // first two seconds, 0.55–0.73 over seconds 5–7.
        assert!(first < 0.14, "{p}: {first:.3} over the first 2 s");
        assert!(
            first < middle && middle < after,
            "{p}: {first:.3} {middle:.3} {after:.3}"
        );
        assert!(
            (after - 1.0 / 3.0).abs() < 0.08,
            "{p}: {after:.3} after the window"
        );
    }
}

/// A slow start set on a running balancer eases in the endpoints that join from then on,
/// and one turned off brings an endpoint in its ramp to full weight at once.
#[tokio::test(start_paused = true)]
async fn a_new_slow_start_applies_to_a_running_balancer() {
    let counts = Counts::default();
    let (tx, mut balance) = balancer(policy(Policy::RoundRobin), &[FAST; 3], &counts);
    assert_eq!(balance.slow_start(), Duration::ZERO);
    balance.set_slow_start(Duration::from_secs(60));
    assert_eq!(balance.slow_start(), Duration::from_secs(60));
    tx.send(Ok(Change::Remove(2))).unwrap();
    share_over(&mut balance, &counts, Duration::from_secs(1)).await;
    tx.send(Ok(Change::Insert(2, endpoint(2, FAST, &counts))))
        .unwrap();
    let ramping = share_over(&mut balance, &counts, Duration::from_secs(2)).await;
    assert!(ramping < 0.14, "{ramping:.3} at the start of its ramp");

    balance.set_slow_start(Duration::ZERO);
    share_over(&mut balance, &counts, Duration::from_millis(100)).await;
    let full = share_over(&mut balance, &counts, Duration::from_secs(2)).await;
    assert!(
        (full - 1.0 / 3.0).abs() < 0.08,
        "{full:.3} with slow start off"
    );
}
