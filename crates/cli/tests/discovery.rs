//! `[[discovery]]` entries and the balancer flags, as the binary reads them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use switchyard_tests::dnsmasq::{srv, Dnsmasq, NAME};
use switchyard_tests::{client, get, FaultBackend};
use tokio::time::{sleep, Instant};

fn switchyard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-discovery-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A loopback address with a port free a moment ago.
fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", listener.local_addr().unwrap().port())
}

/// Kills the proxy when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn check_names_the_key_and_line_of_a_bad_discovery_entry() {
    let text = "[[backends]]\nid = \"a\"\nurl = \"http://127.0.0.1:3001\"\n\n\
        [[discovery]]\nname = \"_http._tcp.web\"\nmin_ttl = \"10s\"\nmax_ttl = \"1s\"\n\n\
        [[discovery]]\ntype = \"dns\"\nname = \"web.internal\"\n\n\
        [[discovery]]\nname = \"_http._tcp.api\"\ndns_server = \"nowhere\"\n";
    let path = write_config("bad-discovery.toml", text);
    let out = switchyard()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 7: `discovery[0].min_ttl`"), "{err}");
    // A missing key is reported at its entry.
    assert!(err.contains("line 10: `discovery[1].port`"), "{err}");
    assert!(err.contains("line 16: `discovery[2].dns_server`"), "{err}");

    let good = "[[discovery]]\nname = \"_http._tcp.web\"\ndns_server = \"127.0.0.1:8600\"\n\
        min_ttl = \"5s\"\nmax_ttl = \"300s\"\n\n\
        [[discovery]]\ntype = \"dns\"\nname = \"web.internal\"\nport = 8080\nweight = 2\n";
    let path = write_config("good-discovery.toml", good);
    let out = switchyard()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
}

/// One HTTP/1.1 GET on a connection of its own; the whole answer, or "" when nothing
/// listens yet.
fn fetch(addr: &str, path: &str) -> String {
    let Ok(mut conn) = TcpStream::connect(addr) else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    let _ = conn.write_all(request.as_bytes());
    let mut out = String::new();
    let _ = conn.read_to_string(&mut out);
    out
}

#[tokio::test]
async fn slow_start_flag_overrides_the_file_and_shows_in_the_config() {
    let err = switchyard()
        .args(["serve", "--slow-start", "soon"])
        .output()
        .unwrap();
    assert_eq!(err.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&err.stderr).contains("--slow-start"));

    let (listen, admin) = (free_addr(), free_addr());
    let config = write_config("slow-start.toml", "[proxy]\nslow_start = \"5s\"\n");
    let _proxy = Running(
        switchyard()
            .args(["serve", "--listen", &listen, "--admin", &admin, "--config"])
            .arg(&config)
            .args(["--slow-start", "30s", "--balancer", "peak_ewma"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let shown = loop {
        let shown = fetch(&admin, "/config");
        if !shown.is_empty() || Instant::now() > deadline {
            break shown;
        }
        sleep(Duration::from_millis(50)).await;
    };
    assert!(shown.contains("\"slow_start\":\"30s\""), "{shown}");
    assert!(shown.contains("\"balancer\":\"peak_ewma\""), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_entry_sends_traffic_to_the_srv_targets() {
    let (a, b) = (
        FaultBackend::start("a").await,
        FaultBackend::start("b").await,
    );
    let dns = Dnsmasq::start(&[srv("a", &a, 1, 1), srv("b", &b, 1, 1)]).await;
    let listen = free_addr();
    // The entry's own name server: the [proxy] table names none.
    let text = format!(
        "listen = \"{listen}\"\n\n[admin]\nenabled = false\n\n[proxy]\nhealth_check_enabled = false\n\n\
         [[discovery]]\nname = \"{NAME}\"\ntype = \"srv\"\ndns_server = \"{}\"\n\
         min_ttl = \"100ms\"\nmax_ttl = \"1s\"\n",
        dns.addr
    );
    let config = write_config("discovery.toml", &text);
    let _proxy = Running(
        switchyard()
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (client, url) = (client(), format!("http://{listen}/"));
    let start = Instant::now();
    let mut seen = std::collections::HashMap::<String, usize>::new();
    while seen.get("a").unwrap_or(&0) + seen.get("b").unwrap_or(&0) < 20 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the targets got no traffic: {seen:?}"
        );
        if TcpStream::connect(&listen).is_ok() {
            let (status, backend, _) = get(&client, &url).await;
            if status.is_success() {
                *seen.entry(backend).or_default() += 1;
            }
        }
        sleep(Duration::from_millis(20)).await;
    }
    assert!(seen["a"] >= 5 && seen["b"] >= 5, "{seen:?}");
}
