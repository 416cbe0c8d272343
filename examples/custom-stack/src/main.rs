//! Serves the hand-built stack: `custom-stack 127.0.0.1:8081 http://127.0.0.1:3001 ...`.

use std::convert::Infallible;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8081".into());
    let backends = args.map(|a| a.parse()).collect::<Result<Vec<_>, _>>()?;
    let stack = example_custom_stack::stack(&backends, Duration::from_secs(2))?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!(
        "custom stack on http://{listen} over {} backends",
        backends.len()
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let stack = stack.clone();
        let service =
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let stack = stack.clone();
                async move {
                    let req = req.map(switchyard::body::boxed);
                    Ok::<_, Infallible>(example_custom_stack::forward(stack, req).await)
                }
            });
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
