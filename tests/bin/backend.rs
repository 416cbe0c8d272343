//! A tiny HTTP/1.1 backend run as a process of its own, so that a test can kill it with
//! SIGKILL and start it again on the same port: `switchyard-test-backend ADDR NAME`.
//!
//! It answers `/health` with 200 at all times and any other path with 200, its name as the
//! body and in `x-backend`. `/control/fail` makes every other path answer 500 from then
//! on (a backend failing its requests while its health check passes), `/control/ok` undoes
//! that. `/control/delay/MS` makes every other path wait MS milliseconds before answering
//! from then on (a backend turning slow; `/control/delay/0` undoes it).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
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
    let failing = Arc::new(AtomicBool::new(false));
    let delay = Arc::new(AtomicU64::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (name, failing, delay) = (name.clone(), failing.clone(), delay.clone());
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
                let answer = answer(&name, &failing, &req);
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

fn answer(
    name: &str,
    failing: &AtomicBool,
    req: &Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = match req.uri().path() {
        "/health" => StatusCode::OK,
        "/control/fail" => {
            failing.store(true, Ordering::SeqCst);
            StatusCode::OK
        }
        "/control/ok" => {
            failing.store(false, Ordering::SeqCst);
            StatusCode::OK
        }
        path if path.starts_with("/control/delay/") => StatusCode::OK,
        _ if failing.load(Ordering::SeqCst) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::OK,
    };
    Ok(Response::builder()
        .status(status)
        .header("x-backend", name)
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::copy_from_slice(name.as_bytes())))
        .expect("a valid response"))
}
