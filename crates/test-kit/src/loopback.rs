//! Serving a scripted backend on a loopback port: HTTP/1.1, over TLS with the `tls`
//! feature, with upgrades; killed and restarted on the same port.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep_until, Instant};

use crate::backend::{lock, Outcome, Shared};
use crate::journal::Journal;
use crate::script::{Answer, Tunnel, TunnelMode};

/// A backend's loopback server: its port, and the task serving it while it runs. It
/// stops when this is dropped.
pub(crate) struct Live {
    pub(crate) addr: SocketAddr,
    shared: Arc<Shared>,
    handshake: Handshake,
    // Taken and put back by `kill` and `restart`, never held across an `.await`.
    #[allow(clippy::disallowed_types)]
    running: std::sync::Mutex<Option<Running>>,
}

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What a connection starts with before HTTP: nothing, or a TLS handshake.
#[derive(Debug, Clone)]
pub(crate) enum Handshake {
    Plain,
    #[cfg(feature = "tls")]
    Tls(crate::tls::Ca),
}

/// A connection's stream, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Handshake {
    async fn accept(&self, stream: TcpStream) -> io::Result<Box<dyn Io>> {
        match self {
            Self::Plain => Ok(Box::new(stream)),
            #[cfg(feature = "tls")]
            Self::Tls(ca) => Ok(Box::new(ca.acceptor().accept(stream).await?)),
        }
    }

    pub(crate) fn scheme(&self) -> &'static str {
        match self {
            Self::Plain => "http",
            #[cfg(feature = "tls")]
            Self::Tls(_) => "https",
        }
    }

    #[cfg(feature = "tls")]
    pub(crate) fn ca(&self) -> Option<&crate::tls::Ca> {
        match self {
            Self::Plain => None,
            Self::Tls(ca) => Some(ca),
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(running) = lock(&self.running).take() {
            running.stop.send_replace(true);
        }
    }
}

impl Live {
    pub(crate) async fn start(shared: Arc<Shared>, handshake: Handshake) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port on 127.0.0.1 for a scripted backend");
        let addr = listener.local_addr().expect("a bound listener's address");
        let live = Self {
            addr,
            shared,
            handshake,
            running: Default::default(),
        };
        *lock(&live.running) = Some(live.spawn(listener));
        live
    }

    fn spawn(&self, listener: TcpListener) -> Running {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(
            self.shared.clone(),
            self.handshake.clone(),
            listener,
            self.addr,
            stopped,
        ));
        Running { stop, task }
    }

    /// Stops serving: the listener closes and every open connection is reset (tunnels
    /// too). Returns once that is done.
    pub(crate) async fn kill(&self) {
        let running = lock(&self.running).take();
        if let Some(running) = running {
            running.stop.send_replace(true);
            let _ = running.task.await;
        }
    }

    /// Serves again on the same port (killing it first if it runs).
    pub(crate) async fn restart(&self) {
        self.kill().await;
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("the scripted backend's port, again");
        let running = self.spawn(listener);
        *lock(&self.running) = Some(running);
    }

    pub(crate) fn is_running(&self) -> bool {
        lock(&self.running).is_some()
    }

    pub(crate) fn handshake(&self) -> &Handshake {
        &self.handshake
    }
}

/// Accepts connections while the script does not refuse them. While it does, the
/// listener is closed (connections are refused) and every open connection closes once
/// its answer in flight has gone.
async fn serve(
    shared: Arc<Shared>,
    handshake: Handshake,
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
                        handshake.clone(),
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

/// Serves one connection with hyper's HTTP/1.1 server (after a TLS handshake, for an
/// HTTPS backend) until it ends, a step resets it or the backend stops. When the backend
/// starts refusing, the connection closes once the answer in flight, if any, has gone: a
/// step already chosen is kept. A connection a step switched to another protocol runs
/// its tunnel until either side closes it; the backend stopping or refusing resets it.
async fn connection(
    shared: Arc<Shared>,
    handshake: Handshake,
    stream: TcpStream,
    id: u64,
    crash: watch::Receiver<u64>,
    mut stopped: watch::Receiver<bool>,
) {
    // A second handle on the socket, to reset it whoever holds the stream (hyper, a TLS
    // session, a tunnel): with a zero linger, closing the last handle sends a reset.
    let Ok((stream, twin)) = twinned(stream) else {
        shared.closed.fetch_add(1, Ordering::SeqCst);
        return;
    };
    let broken = tokio::select! {
        broken = exchange(&shared, &handshake, stream, id, crash) => broken,
        _ = stopped.wait_for(|&s| s) => true,
    };
    if broken {
        // The peer sees a reset, as after a crash.
        let _ = twin.set_zero_linger();
    }
    drop(twin);
    shared.closed.fetch_add(1, Ordering::SeqCst);
}

/// The connection's HTTP exchanges, then its tunnel if a step switched it. Whether it
/// ended broken (to be reset).
async fn exchange(
    shared: &Arc<Shared>,
    handshake: &Handshake,
    stream: TcpStream,
    id: u64,
    mut crash: watch::Receiver<u64>,
) -> bool {
    let Ok(io) = handshake.accept(stream).await else {
        return false;
    };
    let reset = Arc::new(Notify::new());
    let (switched, mut upgrades) = mpsc::unbounded_channel();
    let service = {
        let (shared, reset) = (shared.clone(), reset.clone());
        hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let (shared, reset, switched) = (shared.clone(), reset.clone(), switched.clone());
            let on_upgrade = hyper::upgrade::on(&mut req);
            async move {
                match shared.handle(req, Some(id)).await {
                    Outcome::Respond(res) => Ok::<_, Infallible>(res),
                    Outcome::Upgrade { res, tunnel, index } => {
                        let _ = switched.send((on_upgrade, tunnel, index));
                        Ok(res)
                    }
                    Outcome::Reset | Outcome::Refuse => {
                        // The connection's task drops the socket: no answer goes.
                        reset.notify_one();
                        std::future::pending().await
                    }
                }
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = reset.notified() => return true,
            _ = crash.changed(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
    let Ok((on_upgrade, tunnel, index)) = upgrades.try_recv() else {
        return false;
    };
    tokio::select! {
        _ = run_tunnel(on_upgrade, &tunnel, &shared.journal, index) => false,
        _ = crash.changed() => true,
    }
}

/// Two handles on one socket.
fn twinned(stream: TcpStream) -> io::Result<(TcpStream, TcpStream)> {
    let stream = stream.into_std()?;
    let twin = stream.try_clone()?;
    Ok((TcpStream::from_std(stream)?, TcpStream::from_std(twin)?))
}

/// Runs `tunnel` on the switched connection, recording its bytes at `index`.
async fn run_tunnel(on_upgrade: OnUpgrade, tunnel: &Tunnel, journal: &Journal, index: usize) {
    // Marks the tunnel closed however it ends, even when the backend stops mid-way.
    let _closed = Closed { journal, index };
    let Ok(upgraded) = on_upgrade.await else {
        return;
    };
    let mut io = TokioIo::new(upgraded);
    let record = |received: &[u8], sent: &[u8]| {
        journal.update(index, |seen| {
            if let Some(t) = &mut seen.tunnel {
                t.received.extend_from_slice(received);
                t.sent.extend_from_slice(sent);
            }
        });
    };
    if !tunnel.first.is_empty() {
        if io.write_all(&tunnel.first).await.is_err() {
            return;
        }
        record(&[], &tunnel.first);
    }
    if tunnel.mode != TunnelMode::Close {
        let mut left = tunnel.close_after.unwrap_or(usize::MAX);
        let mut buf = vec![0u8; 16 * 1024];
        while left > 0 {
            let room = buf.len().min(left);
            let n = match io.read(&mut buf[..room]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            left -= n;
            let echo = tunnel.mode == TunnelMode::Echo;
            if echo && io.write_all(&buf[..n]).await.is_err() {
                record(&buf[..n], &[]);
                return;
            }
            record(&buf[..n], if echo { &buf[..n] } else { &[] });
        }
    }
    let _ = io.shutdown().await;
}

/// Marks a tunnel closed in the journal when dropped.
struct Closed<'a> {
    journal: &'a Journal,
    index: usize,
}

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        self.journal.update(self.index, |seen| {
            if let Some(t) = &mut seen.tunnel {
                t.closed = true;
            }
        });
    }
}
