//! The soak test's two halves (`benches/soak.sh` runs them):
//!
//! - `switchyard-soak backend ADDR NAME`: a backend with every kind of answer the soak
//!   needs: `/small` (100 B) and `/large` (256 KiB), both `no-store`; `/cache/<n>` (1 KiB,
//!   `max-age=2`: hits, then misses when it goes stale); `POST /upload` (answers the
//!   length of the body it read); `/ws` (a WebSocket echo).
//! - `switchyard-soak load PROXY SECS`: mixed load through the proxy for SECS seconds:
//!   HTTP/1.1 keep-alive, a new connection per request, h2c, uploads, cache hits and
//!   misses, WebSocket sessions opening and closing. Each failure is printed as
//!   `FAIL <unix ms> <kind> <what>`, and at the end one `TOTAL <kind> <ok> <failed>` line
//!   per kind.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const SMALL: usize = 100;
const LARGE: usize = 256 * 1024;
const CACHED: usize = 1024;
/// Distinct cacheable paths: a bounded set, so that the cache's size settles.
const CACHE_PATHS: u64 = 64;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["backend", addr, name] => {
            let addr: SocketAddr = addr.parse().expect("ADDR is an ip:port");
            rt.block_on(backend(addr, name.into()));
        }
        ["load", proxy, secs] => {
            let proxy: SocketAddr = proxy.parse().expect("PROXY is an ip:port");
            let secs: u64 = secs.parse().expect("SECS is a number");
            rt.block_on(load(proxy, Duration::from_secs(secs)));
        }
        _ => {
            eprintln!("usage: switchyard-soak backend ADDR NAME | load PROXY SECS");
            std::process::exit(2);
        }
    }
}

async fn backend(addr: SocketAddr, name: Arc<str>) {
    let listener = TcpListener::bind(addr).await.expect("the port is free");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let name = name.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(name.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

async fn answer(
    name: Arc<str>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let reply = |status: StatusCode, cache: &str, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("x-backend", &*name)
            .header(header::CACHE_CONTROL, cache)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    Ok(match path.as_str() {
        "/small" => reply(StatusCode::OK, "no-store", vec![b's'; SMALL]),
        "/large" => reply(StatusCode::OK, "no-store", vec![b'l'; LARGE]),
        "/upload" => {
            let len = match req.into_body().collect().await {
                Ok(body) => body.to_bytes().len(),
                Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, "no-store", Vec::new())),
            };
            reply(StatusCode::OK, "no-store", len.to_string().into_bytes())
        }
        "/ws" => websocket(req),
        p if p.starts_with("/cache/") => reply(StatusCode::OK, "max-age=2", vec![b'c'; CACHED]),
        _ => reply(StatusCode::NOT_FOUND, "no-store", Vec::new()),
    })
}

/// Accepts a WebSocket upgrade and echoes every message until the client closes.
fn websocket(mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(Full::default())
            .expect("a valid response");
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .body(Full::default())
        .expect("a valid response")
}

/// Requests done and failed, per kind of load.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

impl Tally {
    fn record(&self, kind: &str, result: Result<(), String>) {
        match result {
            Ok(()) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(what) => {
                println!("FAIL {} {kind} {what}", now_ms());
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

type Body = Full<Bytes>;

/// The kinds of load, each driven by two workers.
const KINDS: [&str; 6] = [
    "keepalive",
    "newconn",
    "h2c",
    "upload",
    "cache",
    "websocket",
];

async fn load(proxy: SocketAddr, secs: Duration) {
    let keep_alive: Client<_, Body> = Client::builder(TokioExecutor::new()).build_http();
    let h2c: Client<_, Body> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let tallies: Arc<Vec<Tally>> = Arc::new(KINDS.iter().map(|_| Tally::default()).collect());
    let deadline = tokio::time::Instant::now() + secs;
    let url = move |path: &str| format!("http://{proxy}{path}");
    let mut workers = Vec::new();
    for (i, &kind) in KINDS.iter().enumerate() {
        // Two workers of each kind: at most two requests of a kind in flight.
        for w in 0..2u64 {
            let (tallies, keep_alive, h2c) = (tallies.clone(), keep_alive.clone(), h2c.clone());
            workers.push(tokio::spawn(async move {
                let mut n = w;
                while tokio::time::Instant::now() < deadline {
                    n += 2;
                    let result = match kind {
                        "keepalive" => {
                            let (path, len) = sized(n % 10 == 0);
                            get(&keep_alive, &url(path), len).await
                        }
                        "newconn" => new_connection(proxy, n % 10 == 0).await,
                        "h2c" => {
                            let (path, len) = sized(n % 10 == 0);
                            get(&h2c, &url(path), len).await
                        }
                        "upload" => {
                            upload(
                                &keep_alive,
                                &url("/upload"),
                                1024 * (1 + (n as usize % 256)),
                            )
                            .await
                        }
                        "cache" => {
                            get(
                                &keep_alive,
                                &url(&format!("/cache/{}", n % CACHE_PATHS)),
                                CACHED,
                            )
                            .await
                        }
                        _ => websocket_session(proxy, n).await,
                    };
                    tallies[i].record(kind, result);
                    tokio::time::sleep(Duration::from_millis(if kind == "websocket" {
                        50
                    } else {
                        5
                    }))
                    .await;
                }
            }));
        }
    }
    for w in workers {
        let _ = w.await;
    }
    for (kind, t) in KINDS.iter().zip(tallies.iter()) {
        println!(
            "TOTAL {kind} {} {}",
            t.ok.load(Ordering::Relaxed),
            t.failed.load(Ordering::Relaxed)
        );
    }
}

async fn check(res: Response<Incoming>, len: usize) -> Result<Bytes, String> {
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(format!("status {status}"));
    }
    if body.len() != len {
        return Err(format!("{} bytes, not {len}", body.len()));
    }
    Ok(body)
}

async fn get<C>(client: &Client<C, Body>, url: &str, len: usize) -> Result<(), String>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let res = client
        .get(url.parse().expect("a URL"))
        .await
        .map_err(|e| format!("{e:?}"))?;
    check(res, len).await.map(drop)
}

async fn upload<C>(client: &Client<C, Body>, url: &str, len: usize) -> Result<(), String>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let req = Request::post(url)
        .body(Full::new(Bytes::from(vec![b'u'; len])))
        .expect("a request");
    let res = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let echoed = check(res, len.to_string().len()).await?;
    if echoed != len.to_string().as_bytes() {
        return Err(format!("uploaded {len}, backend read {echoed:?}"));
    }
    Ok(())
}

/// The path and body length of a GET for the large or the small body.
fn sized(large: bool) -> (&'static str, usize) {
    if large {
        ("/large", LARGE)
    } else {
        ("/small", SMALL)
    }
}

/// One request on a connection of its own, closed after it.
async fn new_connection(proxy: SocketAddr, large: bool) -> Result<(), String> {
    let tcp = TcpStream::connect(proxy)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let (path, len) = sized(large);
    let req = Request::get(path)
        .header(header::HOST, "soak")
        .header(header::CONNECTION, "close")
        .body(Body::default())
        .expect("a request");
    let res = send.send_request(req).await.map_err(|e| format!("{e:?}"))?;
    check(res, len).await.map(drop)
}

/// Opens a WebSocket through the proxy, exchanges ten messages, closes it.
async fn websocket_session(proxy: SocketAddr, n: u64) -> Result<(), String> {
    let tcp = TcpStream::connect(proxy)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{proxy}/ws"), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    for i in 0..10 {
        let text = format!("message {n}.{i}");
        ws.send(Message::text(text.clone()))
            .await
            .map_err(|e| format!("send: {e}"))?;
        match ws.next().await {
            Some(Ok(Message::Text(echo))) if echo.as_str() == text => {}
            other => return Err(format!("echo: {other:?}")),
        }
    }
    ws.close(None).await.map_err(|e| format!("close: {e}"))?;
    Ok(())
}
