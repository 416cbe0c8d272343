//! Serving a scripted backend on a loopback port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

use crate::backend::{Outcome, Shared};
use crate::script::Answer;

/// A backend's loopback server; it stops when this is dropped.
pub(crate) struct Live {
    pub(crate) addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Drop for Live {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl Live {
    pub(crate) async fn start(shared: Arc<Shared>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port on 127.0.0.1 for a scripted backend");
        let addr = listener.local_addr().expect("a bound listener's address");
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve(shared, listener, addr, stopped));
        Self { addr, stop }
    }
}

/// Accepts connections while the script does not refuse them. While it does, the
/// listener is closed (connections are refused) and every open connection closes once
/// its answer in flight has gone.
async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    addr: SocketAddr,
    mut stopped: watch::Receiver<bool>,
) {
    let mut listener = Some(listener);
    // Bumped to close every open connection at once.
    let (crash, _) = watch::channel(0u64);
    let mut conns = JoinSet::new();
    // The connections watch a receiver of their own; this one waits for the stop.
    let for_conns = stopped.clone();
    loop {
        let (step, ends) = shared.peek(Instant::now());
        if matches!(step.answer, Answer::Refuse) {
            if listener.take().is_some() {
                crash.send_modify(|n| *n += 1);
            }
            tokio::select! {
                _ = until(ends) => continue,
                _ = stopped.wait_for(|&s| s) => break,
            }
        }
        let accepting = match &listener {
            Some(l) => l,
            None => listener.insert(
                TcpListener::bind(addr)
                    .await
                    .expect("the scripted backend's port, again"),
            ),
        };
        tokio::select! {
            accepted = accepting.accept() => {
                if let Ok((stream, _)) = accepted {
                    let id = shared.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                    conns.spawn(connection(
                        shared.clone(),
                        stream,
                        id,
                        crash.subscribe(),
                        for_conns.clone(),
                    ));
                }
            }
            _ = shared.changed.notified() => {}
            _ = until(ends) => {}
            _ = stopped.wait_for(|&s| s) => break,
            Some(_) = conns.join_next() => {}
        }
    }
    drop(listener);
    crash.send_modify(|n| *n += 1);
    while conns.join_next().await.is_some() {}
}

/// Resolves at `ends`, or never.
async fn until(ends: Option<Instant>) {
    match ends {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Serves one connection with hyper's HTTP/1.1 server until it ends, a step resets it or
/// the backend stops. When the backend starts refusing, the connection closes once the
/// answer in flight, if any, has gone: a step already chosen is kept.
async fn connection(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    id: u64,
    mut crash: watch::Receiver<u64>,
    mut stopped: watch::Receiver<bool>,
) {
    let reset = Arc::new(Notify::new());
    let service = {
        let (shared, reset) = (shared.clone(), reset.clone());
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let (shared, reset) = (shared.clone(), reset.clone());
            async move {
                match shared.handle(req, Some(id)).await {
                    Outcome::Respond(res) => Ok::<_, Infallible>(res),
                    Outcome::Reset | Outcome::Refuse => {
                        // The connection's task drops the socket: no answer goes.
                        reset.notify_one();
                        std::future::pending().await
                    }
                }
            }
        })
    };
    let broken = {
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(&mut stream), service);
        tokio::pin!(conn);
        let mut closing = false;
        loop {
            tokio::select! {
                _ = conn.as_mut() => break false,
                _ = reset.notified() => break true,
                _ = crash.changed(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = stopped.wait_for(|&s| s) => break true,
            }
        }
    };
    if broken {
        // Closed with a zero linger: the peer sees a reset, as after a crash.
        let _ = stream.set_zero_linger();
    }
    drop(stream);
    shared.closed.fetch_add(1, Ordering::SeqCst);
}
