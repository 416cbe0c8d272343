//! A real `redis-server` of a test's own on a free loopback port (`tests/redis/setup.sh`
//! installs Debian's package when it is missing), killed by PID when dropped, and a
//! loopback relay in front of it that a test can cut, as a network partition between
//! one proxy and Redis would.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// A `redis-server` of the test's own, killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    /// Starts one on a free port (installing it first when it is missing), without
    /// persistence, once it listens.
    pub async fn start() -> Self {
        install();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::on(port).await
    }

    async fn on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        wait_listening(port).await;
        Self { port, child }
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills the server (SIGKILL, by PID), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A new server on the same port, empty.
    pub async fn restart(&mut self) {
        self.kill();
        *self = Self::on(self.port).await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "redis-server listens on {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Installs redis-server once per test binary when it is missing.
fn install() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("redis/setup.sh");
        let status = Command::new("bash")
            .arg(script)
            .status()
            .expect("bash runs tests/redis/setup.sh");
        assert!(status.success(), "redis-server is installed");
    });
}

/// A TCP relay on a loopback port to `target`: [`cut`](Self::cut) closes every relayed
/// connection and refuses new ones, [`restore`](Self::restore) accepts again on the
/// same port.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    accepting: Option<JoinHandle<()>>,
}

impl Relay {
    /// A relay to `target`, accepting.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut relay = Self {
            addr,
            target,
            accepting: None,
        };
        relay.accept_on(listener);
        relay
    }

    /// `redis://<relay>/0`.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    fn accept_on(&mut self, listener: TcpListener) {
        let target = self.target;
        self.accepting = Some(tokio::spawn(async move {
            // Dropped with the accept loop: every relayed connection ends with it.
            let mut connections = JoinSet::new();
            loop {
                // A failed accept (a client that gave up first) does not end the relay.
                let Ok((mut client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }

    /// Closes every relayed connection and stops listening.
    pub async fn cut(&mut self) {
        if let Some(accepting) = self.accepting.take() {
            accepting.abort();
            let _ = accepting.await;
        }
    }

    /// Listens on the same port again.
    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.accept_on(listener);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(accepting) = self.accepting.take() {
            accepting.abort();
        }
    }
}
