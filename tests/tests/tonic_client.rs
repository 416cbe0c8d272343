//! `examples/tonic-client`: a gRPC client balanced over three tonic servers with a
//! breaker per server and retries, over pooled HTTP/2 connections on loopback.

use std::time::Duration;

use example_tonic_client::greeter::GreeterServer;
use example_tonic_client::{retry_config, GrpcStack};
use switchyard::{BreakerConfig, BreakerState, RetryConfig};
use tonic::Code;

const THRESHOLD: u32 = 2;

async fn servers() -> Vec<GreeterServer> {
    let mut started = Vec::new();
    for id in ["a", "b", "c"] {
        started.push(GreeterServer::start(id).await.unwrap());
    }
    started
}

/// Breakers that trip after two failures and stay open for the whole test; retries a
/// few milliseconds apart.
fn stack(servers: &[GreeterServer]) -> GrpcStack {
    let urls: Vec<_> = servers.iter().map(|s| (s.id(), s.url())).collect();
    let breaker = BreakerConfig {
        threshold: THRESHOLD,
        timeout: Duration::from_secs(60),
        ..BreakerConfig::default()
    };
    let retry = RetryConfig {
        delay: Duration::from_millis(5),
        ..retry_config()
    };
    GrpcStack::new(&urls, breaker, retry).unwrap()
}

fn state(stack: &GrpcStack, id: &str) -> BreakerState {
    stack.breakers().state(id).expect("a breaker per server")
}

fn calls(servers: &[GreeterServer]) -> Vec<usize> {
    servers.iter().map(GreeterServer::calls).collect()
}

#[tokio::test]
async fn calls_keep_succeeding_while_a_server_is_down() {
    let mut servers = servers().await;
    let stack = stack(&servers);
    let mut client = stack.client();

    let mut seen = Vec::new();
    for i in 0..6 {
        let reply = client.say_hello(&format!("caller {i}")).await.unwrap();
        assert_eq!(reply.message, format!("hello, caller {i}"));
        seen.push(reply.server);
    }
    assert_eq!(seen, ["a", "b", "c", "a", "b", "c"]);

    // c goes away. Its next attempts are refused, counted by its breaker and retried on
    // a or b, until the breaker opens and the balancer stops choosing c.
    servers[2].stop().await;
    for i in 0..12 {
        let reply = client
            .say_hello(&format!("caller {i}"))
            .await
            .expect("another server answers");
        assert_ne!(reply.server, "c");
    }
    assert!(matches!(state(&stack, "c"), BreakerState::Open { .. }));
    assert!(state(&stack, "a").is_closed() && state(&stack, "b").is_closed());
    let [a, b, c] = calls(&servers)[..] else {
        unreachable!()
    };
    assert_eq!((a + b, c), (4 + 12, 2), "c saw nothing after it stopped");
    assert_eq!(stack.retry_stats().retries_connect, u64::from(THRESHOLD));

    // With every server gone the caller gets UNAVAILABLE, not an opaque error.
    servers[0].stop().await;
    servers[1].stop().await;
    let status = client.say_hello("anyone").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn a_server_answering_unavailable_is_retried_elsewhere_and_cut_off() {
    let servers = servers().await;
    servers[1].set_unavailable(true);
    let stack = stack(&servers);
    let mut client = stack.client();

    for i in 0..12 {
        let reply = client.say_hello(&format!("caller {i}")).await.unwrap();
        assert_ne!(reply.server, "b");
    }
    // UNAVAILABLE counts against b: after two, its breaker is open and b sees no more.
    assert!(matches!(state(&stack, "b"), BreakerState::Open { .. }));
    assert_eq!(servers[1].calls(), THRESHOLD as usize);
    assert_eq!(servers[0].calls() + servers[2].calls(), 12);
    assert_eq!(stack.retry_stats().retries_status, u64::from(THRESHOLD));
}

#[tokio::test]
async fn an_invalid_argument_is_returned_once_and_not_held_against_the_server() {
    let servers = servers().await;
    let stack = stack(&servers);
    let mut client = stack.client();

    let status = client.say_hello("").await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "name must not be empty");
    assert_eq!(calls(&servers), [1, 0, 0], "one call, not retried");

    // More of them: each reaches one server once, and no breaker trips though each
    // server sees more than the threshold.
    for _ in 0..8 {
        let status = client.say_hello("").await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }
    assert_eq!(calls(&servers), [3, 3, 3]);
    for id in ["a", "b", "c"] {
        assert!(state(&stack, id).is_closed(), "{id}");
    }
    assert_eq!(stack.retry_stats().retries, 0);
    assert_eq!(client.say_hello("you").await.unwrap().message, "hello, you");
}
