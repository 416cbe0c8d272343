//! A dnsmasq of a test's own on a free loopback port, serving SRV records (TTL 1 s) for
//! [`NAME`] whose targets' names resolve to 127.0.0.1. Records are changed at run time by
//! restarting dnsmasq on the same port with another configuration (dnsmasq re-reads only
//! its hosts files on SIGHUP, not `srv-host` lines).

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::{sleep, Instant};

use crate::FaultBackend;

/// The SRV name the records are for.
pub const NAME: &str = "_http._tcp.web.service.consul";

/// One SRV record: its target's name (resolving to 127.0.0.1), port, priority, weight.
#[derive(Debug)]
pub struct Srv {
    target: &'static str,
    port: u16,
    priority: u16,
    weight: u16,
}

pub fn srv(target: &'static str, backend: &FaultBackend, priority: u16, weight: u16) -> Srv {
    Srv {
        target,
        port: backend.addr().port(),
        priority,
        weight,
    }
}

/// A dnsmasq of the test's own, killed by its PID when dropped.
#[derive(Debug)]
pub struct Dnsmasq {
    /// Where it answers, UDP and TCP.
    pub addr: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
}

/// The dnsmasq binary, installed (Debian's dnsmasq-base) when missing.
fn dnsmasq_binary() -> PathBuf {
    let find = || {
        let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| {
            std::env::split_paths(&p)
                .map(|dir| dir.join("dnsmasq"))
                .collect::<Vec<_>>()
        });
        on_path
            .chain([PathBuf::from("/usr/sbin/dnsmasq")])
            .find(|p| p.is_file())
    };
    if let Some(found) = find() {
        return found;
    }
    let setup = concat!(env!("CARGO_MANIFEST_DIR"), "/dns/setup.sh");
    let status = Command::new("bash").arg(setup).status().unwrap();
    assert!(status.success(), "{setup} failed");
    find().expect("dnsmasq installed")
}

/// A loopback port free for both UDP and TCP a moment ago.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Dnsmasq {
    /// Starts one serving `records`.
    pub async fn start(records: &[Srv]) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("switchyard-dnsmasq-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut dns = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            child: None,
        };
        dns.spawn(records).await;
        dns
    }

    async fn spawn(&mut self, records: &[Srv]) {
        let mut conf = String::from("local-ttl=1\n");
        for r in records {
            conf += &format!(
                "srv-host={NAME},{}.service.consul,{},{},{}\nhost-record={}.service.consul,127.0.0.1\n",
                r.target, r.port, r.priority, r.weight, r.target
            );
        }
        let file = self.dir.join("dnsmasq.conf");
        std::fs::write(&file, conf).unwrap();
        let child = Command::new(dnsmasq_binary())
            .arg("--no-daemon")
            .arg(format!("--port={}", self.addr.port()))
            .args(["--listen-address=127.0.0.1", "--bind-interfaces"])
            .args(["--no-resolv", "--no-hosts"])
            .arg(format!("--conf-file={}", file.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        // Listening once it accepts on TCP (it answers UDP on the same port).
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(self.addr).is_err() {
            assert!(Instant::now() < deadline, "dnsmasq did not start");
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// Serves `records` from now on (a restart on the same port).
    pub async fn serve(&mut self, records: &[Srv]) {
        self.stop();
        self.spawn(records).await;
    }

    /// Stops it (the proxy then keeps its last answers).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
