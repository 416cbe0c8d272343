//! The `switchyard` binary as a user runs it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};

fn switchyard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_accepts_the_example_config() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/switchyard.toml"
    );
    let out = switchyard()
        .args(["check", "--config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(": ok\n"));
}

#[test]
fn check_reports_every_problem_with_key_and_line_and_exits_2() {
    let path = write_config(
        "bad.toml",
        "[proxy]\ncircuit_breaker_threshold = 0\nrequest_timeout = \"0s\"\n\n[[backends]]\nid = \"a\"\nurl = \"127.0.0.1:3001\"\n",
    );
    let out = switchyard()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&path.display().to_string()),
        "names the file: {err}"
    );
    assert!(err.contains("3 problems"), "{err}");
    assert!(
        err.contains("line 2: `proxy.circuit_breaker_threshold`"),
        "{err}"
    );
    assert!(err.contains("line 3: `proxy.request_timeout`"), "{err}");
    assert!(err.contains("line 7: `backends[0].url`"), "{err}");
}

#[test]
fn check_names_an_unknown_key() {
    let path = write_config(
        "unknown.toml",
        "listen = \"127.0.0.1:1\"\n\n[proxy]\nretry_dealy = \"1s\"\n",
    );
    let out = switchyard()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 4") && err.contains("retry_dealy"),
        "{err}"
    );
}

#[test]
fn serve_refuses_a_bad_backend_flag() {
    let out = switchyard()
        .args(["serve", "--backend", "ftp://x:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported scheme"));
}

fn get(addr: &str, path: &str) -> String {
    let mut conn = TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nhost: demo\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn demo_serves_round_robin_over_three_backends() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = switchyard()
        .args(["demo", "--listen", &addr, "--admin", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The banner is printed once everything listens.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.contains("Stop with Ctrl-C") {
        if stdout.read_line(&mut banner).unwrap() == 0 {
            break;
        }
    }
    let answers: Vec<String> = (0..6).map(|_| get(&addr, "/")).collect();
    let statics: Vec<String> = (0..2).map(|_| get(&addr, "/static/app.css")).collect();
    let dashboard = banner
        .lines()
        .find_map(|l| l.strip_prefix("Dashboard: http://"))
        .and_then(|l| l.split('/').next())
        .map(|admin| get(admin, "/"))
        .unwrap_or_default();
    child.kill().unwrap();
    child.wait().unwrap();

    assert!(
        banner.contains(&format!("curl -i http://{addr}/hello")),
        "{banner}"
    );
    assert!(
        dashboard.starts_with("HTTP/1.1 200"),
        "the dashboard: {dashboard}"
    );
    assert!(dashboard.contains("<title>switchyard</title>"));
    assert!(
        statics[0].contains("cache-status: switchyard; fwd=uri-miss; stored"),
        "{}",
        statics[0]
    );
    assert!(
        statics[1].contains("cache-status: switchyard; hit"),
        "{}",
        statics[1]
    );
    let ids: Vec<&str> = answers
        .iter()
        .map(|a| {
            assert!(a.starts_with("HTTP/1.1 200"), "{a}");
            let line = a
                .lines()
                .find(|l| l.starts_with("x-backend: "))
                .expect("x-backend header");
            &line["x-backend: ".len()..]
        })
        .collect();
    assert_eq!(
        ids,
        [
            "backend-1",
            "backend-2",
            "backend-3",
            "backend-1",
            "backend-2",
            "backend-3"
        ]
    );
}

#[test]
fn cache_flags_are_checked() {
    let out = switchyard()
        .args(["serve", "--cache-ttl", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cache-ttl"));
    let out = switchyard()
        .args(["serve", "--no-cache", "--cache-ttl", "1s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}
