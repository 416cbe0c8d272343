//! The `switchyard` binary run as a process of its own, as an operator runs it: with a
//! configuration file, signals, its log and its admin API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The `switchyard` binary of this build: next to the test's own directory in the target
/// directory. `cargo test --workspace` builds it (the binary's crate has tests); when it is
/// missing (`cargo test -p switchyard-tests` on a fresh target directory) it is built
/// here. Alone, `cargo test -p switchyard-tests` runs the binary as last built: build it
/// with `cargo build -p switchyard-cli` after changing it.
pub fn switchyard_binary() -> PathBuf {
    let test = std::env::current_exe().expect("the test's own path");
    let profile_dir = test
        .parent()
        .and_then(Path::parent)
        .expect("tests run from <target>/<profile>/deps");
    let binary = profile_dir.join(format!("switchyard{}", std::env::consts::EXE_SUFFIX));
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = std::process::Command::new(cargo)
            .args(["build", "-p", "switchyard-cli", "--bin", "switchyard"])
            .env(
                "CARGO_TARGET_DIR",
                profile_dir.parent().expect("a target dir"),
            )
            .status()
            .expect("cargo runs");
        assert!(built.success(), "cannot build the switchyard binary");
    }
    binary
}

/// A free 127.0.0.1 port (free when this returns: bound, then released).
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Writes `text` to the file `name` in a directory of this test process, and returns its
/// path.
pub fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A running `switchyard serve`, killed when dropped.
#[derive(Debug)]
pub struct Switchyard {
    child: Child,
    log: mpsc::UnboundedReceiver<String>,
    /// Its standard output (the JSON access log), line by line.
    printed: mpsc::UnboundedReceiver<String>,
    /// The admin API's address.
    pub admin: SocketAddr,
}

impl Switchyard {
    /// Starts `switchyard serve --config <config>` with `extra` arguments; `admin` is where
    /// the file puts its admin API. Returns once the admin API answers.
    pub async fn serve(config: &Path, admin: SocketAddr, extra: &[&str]) -> Self {
        let mut child = Command::new(switchyard_binary())
            .args(["serve", "--config"])
            .arg(config)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the switchyard binary starts");
        let log = lines_of(child.stderr.take().unwrap());
        let printed = lines_of(child.stdout.take().unwrap());
        let proxy = Self {
            child,
            log,
            printed,
            admin,
        };
        for _ in 0..500 {
            if admin_call(admin, "GET", "/healthz").await.is_some() {
                return proxy;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the admin API of switchyard never answered");
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// Sends the signal `name` (`HUP`, `TERM`…) with `kill`.
    pub fn signal(&self, name: &str) {
        let sent = std::process::Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name} failed");
    }

    /// Waits up to 10 s for a log line containing `what`; returns it.
    pub async fn logged(&mut self, what: &str) -> Option<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Ok(Some(line)) = tokio::time::timeout_at(deadline, self.log.recv()).await {
            if line.contains(what) {
                return Some(line);
            }
        }
        None
    }

    /// Waits up to 10 s for a line on standard output containing `what`: the lines printed
    /// since the last call, that one last (every one printed within the 10 s if none does).
    pub async fn printed(&mut self, what: &str) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut lines = Vec::new();
        while let Ok(Some(line)) = tokio::time::timeout_at(deadline, self.printed.recv()).await {
            let found = line.contains(what);
            lines.push(line);
            if found {
                break;
            }
        }
        lines
    }

    /// `method path` on the admin API: status and body.
    pub async fn admin(&self, method: &str, path: &str) -> (u16, String) {
        admin_call(self.admin, method, path)
            .await
            .expect("the admin API answers")
    }

    /// Waits up to `within` for the process to exit; its exit code, if it did.
    pub async fn exited(&mut self, within: Duration) -> Option<Option<i32>> {
        let status = tokio::time::timeout(within, self.child.wait()).await.ok()?;
        Some(status.ok()?.code())
    }
}

/// The lines `out` gives, as they come (read as long as it is open, so that the process
/// never waits for a full pipe).
fn lines_of(
    out: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut lines = BufReader::new(out).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send(line);
        }
    });
    rx
}

/// `method path` with an empty body on a fresh connection to the admin API at `addr`:
/// status and body, or `None` when nothing answers.
async fn admin_call(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: admin\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        conn.write_all(request.as_bytes()).await.ok()?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.ok()?;
        let status = answer.split(' ').nth(1)?.parse().ok()?;
        let body = answer.split_once("\r\n\r\n")?.1.to_owned();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
}
