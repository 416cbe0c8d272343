//! Starts three greeter servers on 127.0.0.1, calls them through the balanced stack,
//! stops one, and shows that calls keep succeeding while its breaker opens.

use std::time::Duration;

use example_tonic_client::greeter::{GreeterClient, GreeterServer};
use example_tonic_client::{retry_config, Channel, GrpcStack};
use switchyard::BreakerConfig;

async fn six_calls(client: &mut GreeterClient<Channel>) -> Result<(), tonic::Status> {
    for i in 0..6 {
        let reply = client.say_hello(&format!("caller {i}")).await?;
        println!("  {} (from {})", reply.message, reply.server);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut servers = Vec::new();
    for id in ["a", "b", "c"] {
        servers.push(GreeterServer::start(id).await?);
    }
    let urls: Vec<_> = servers.iter().map(|s| (s.id(), s.url())).collect();
    let breaker = BreakerConfig {
        threshold: 2,
        timeout: Duration::from_secs(10),
        ..BreakerConfig::default()
    };
    let stack = GrpcStack::new(&urls, breaker, retry_config())?;
    let mut client = stack.client();

    println!("all three up:");
    six_calls(&mut client).await?;
    servers[2].stop().await;
    println!("c stopped:");
    six_calls(&mut client).await?;
    for (id, state) in stack.breakers().states() {
        println!("breaker {id}: {state}");
    }
    println!("retries: {}", stack.retry_stats().retries);

    let status = client
        .say_hello("")
        .await
        .expect_err("an empty name is refused");
    println!("empty name: {:?}, {}", status.code(), status.message());
    Ok(())
}
