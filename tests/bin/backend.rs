//! A tiny HTTP/1.1 backend run as a process of its own, so that a test can kill it with
//! SIGKILL and start it again on the same port: `switchyard-test-backend ADDR NAME`.
//!
//! It answers every path with 200, its name as the body and in `x-backend`.
//! `/control/delay/MS` makes every other path but `/health` wait MS milliseconds before
//! answering from then on (a backend turning slow; `/control/delay/0` undoes it).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(name)) = (args.next(), args.next()) else {
        eprintln!("usage: switchyard-test-backend ADDR NAME");
        std::process::exit(2);
    };
    let addr: SocketAddr = addr.parse().expect("ADDR is an ip:port");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(serve(addr, name.into()));
}

async fn serve(addr: SocketAddr, name: Arc<str>) {
    let listener = TcpListener::bind(addr).await.expect("the port is free");
    let delay = Arc::new(AtomicU64::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (name, delay) = (name.clone(), delay.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let path = req.uri().path();
                let set = path.strip_prefix("/control/delay/");
                if let Some(ms) = set.and_then(|ms| ms.parse().ok()) {
                    delay.store(ms, Ordering::SeqCst);
                }
                let wait = match path.starts_with("/control/") || path == "/health" {
                    true => 0,
                    false => delay.load(Ordering::SeqCst),
                };
                let answer = answer(&name);
                async move {
                    if wait > 0 {
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                    }
                    answer
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(name: &str) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::builder()
        .header("x-backend", name)
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::copy_from_slice(name.as_bytes())))
        .expect("a valid response"))
}
