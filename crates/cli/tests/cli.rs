//! The `switchyard` binary as a user runs it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use switchyard_tests::dnsmasq::{srv, Dnsmasq, NAME};
use switchyard_tests::{client, FaultBackend};
use tokio::time::{sleep, Instant};

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
    let (path, err) = check_refuses(
        "bad.toml",
        "[proxy]\ncircuit_breaker_threshold = 0\nrequest_timeout = \"0s\"\n\n[[backends]]\nid = \"a\"\nurl = \"127.0.0.1:3001\"\n",
    );
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
    let text = "listen = \"127.0.0.1:1\"\n\n[proxy]\nretry_dealy = \"1s\"\n";
    let (_, err) = check_refuses("unknown.toml", text);
    let named = err.contains("line 4") && err.contains("retry_dealy");
    assert!(named, "{err}");
}

/// Writes `text` to the file `name`, asserts that `switchyard check` exits 2 on it, and
/// returns the file's path and what the command printed on stderr.
fn check_refuses(name: &str, text: &str) -> (std::path::PathBuf, String) {
    let path = write_config(name, text);
    let out = switchyard()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    (path, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn serve_refuses_a_bad_backend_flag() {
    assert!(serve_refuses(&["--backend", "ftp://x:1"]).contains("unsupported scheme"));
}

/// Runs `switchyard serve` with `args`, asserts that it exits 2, and returns its stderr.
fn serve_refuses(args: &[&str]) -> String {
    let out = switchyard().arg("serve").args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `switchyard serve --config <config>`, started with these outputs.
fn serve_file(config: &std::path::Path, stdout: Stdio, stderr: Stdio) -> std::process::Child {
    switchyard()
        .args(["serve", "--config"])
        .arg(config)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// A loopback address with a port free a moment ago.
fn free_addr() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
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
    let addr = free_addr();
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
    assert!(serve_refuses(&["--cache-ttl", "soon"]).contains("--cache-ttl"));
    assert!(serve_refuses(&["--no-cache", "--cache-ttl", "1s"]).contains("cannot be used with"));
}

#[test]
fn balancer_flag_is_checked() {
    let err = serve_refuses(&["--balancer", "fastest"]);
    assert!(
        err.contains("--balancer") && err.contains("peak_ewma"),
        "{err}"
    );
}

#[test]
fn attempt_timeout_flag_is_checked() {
    assert!(serve_refuses(&["--attempt-timeout", "soon"]).contains("--attempt-timeout"));
    // Listening nowhere in particular: the check comes before the listener.
    let out = switchyard()
        .args(["serve", "--listen", "127.0.0.1:0", "--no-admin"])
        .args(["--attempt-timeout", "0s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`attempt_timeout`: must be longer than 0s"),
        "{stderr}"
    );
}

/// A CA made for one test, and a certificate it signed for 127.0.0.1: the CA's DER, the
/// certificate's PEM and its key's PEM.
fn test_certificate() -> (Vec<u8>, String, String) {
    let ca = switchyard_tests::TestCa::new();
    (
        ca.ca_der().to_vec(),
        ca.cert_pem.clone(),
        ca.key_pem.clone(),
    )
}

/// Whether a TLS handshake with `addr` succeeds for a client that trusts only `ca`.
fn handshake_trusting(addr: &str, ca: &[u8]) -> bool {
    use std::sync::Arc;
    let Ok(mut tcp) = TcpStream::connect(addr) else {
        return false;
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.to_vec().into()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = "127.0.0.1".try_into().unwrap();
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    while tls.is_handshaking() {
        if tls.complete_io(&mut tcp).is_err() {
            return false;
        }
    }
    true
}

/// Polls `ready` every 20 ms for up to 10 s: the proxy is another process, so this waits
/// on the wall clock.
#[allow(clippy::disallowed_methods)]
fn eventually(mut ready: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if ready() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// SIGHUP makes a running proxy read its certificate files again: new connections get
/// the renewed certificate, and the process goes on serving.
#[cfg(unix)]
#[test]
fn sighup_reloads_the_listener_certificate() {
    let (old_ca, old_cert, old_key) = test_certificate();
    let (new_ca, new_cert, new_key) = test_certificate();
    let addr = free_addr();
    let cert = write_config("sighup.pem", &old_cert);
    let key = write_config("sighup.key", &old_key);
    let config = write_config(
        "sighup.toml",
        &format!(
            "listen = \"{addr}\"\n\n[server]\n\
             tls_cert_file = \"sighup.pem\"\ntls_key_file = \"sighup.key\"\n\
             tls_reload_interval = \"0s\"\n\n\
             [[backends]]\nid = \"a\"\nurl = \"http://127.0.0.1:9\"\n"
        ),
    );
    let mut child = switchyard()
        .args(["serve", "--no-admin", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let served_old = eventually(|| handshake_trusting(&addr, &old_ca));
    std::fs::write(&cert, &new_cert).unwrap();
    std::fs::write(&key, &new_key).unwrap();
    let old_still = handshake_trusting(&addr, &old_ca);
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let served_new = eventually(|| handshake_trusting(&addr, &new_ca));
    let old_after = handshake_trusting(&addr, &old_ca);
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();

    assert!(served_old, "the proxy never served its first certificate");
    assert!(
        old_still,
        "reloaded before SIGHUP with tls_reload_interval = 0s"
    );
    assert!(hup.success());
    assert!(served_new, "SIGHUP did not load the renewed certificate");
    assert!(!old_after, "new connections still get the old certificate");
    assert!(running, "the proxy exited");
}

/// SIGHUP re-reads the configuration file: backends the file added or removed are added
/// or removed. A file that no longer loads changes nothing, and the proxy goes on.
#[cfg(unix)]
#[test]
fn sighup_applies_the_backends_of_the_file() {
    let (addr, admin) = (free_addr(), free_addr());
    let text = |backends: &str| {
        format!("listen = \"{addr}\"\n\n[admin]\nlisten = \"{admin}\"\n\n{backends}")
    };
    let one = "[[backends]]\nid = \"a\"\nurl = \"http://127.0.0.1:9\"\n";
    let config = write_config("reload.toml", &text(one));
    let mut child = serve_file(&config, Stdio::null(), Stdio::piped());
    // The log, line by line, as the proxy writes it.
    let (log_tx, log) = std::sync::mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = log_tx.send(line);
        }
    });
    let logged = |what: &str| {
        // Up to 10 s of silence: the proxy logs a line or two per event.
        while let Ok(line) = log.recv_timeout(std::time::Duration::from_secs(10)) {
            if line.contains(what) {
                return true;
            }
        }
        false
    };
    let hup = || {
        Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    };
    let ids = || {
        let Ok(mut conn) = TcpStream::connect(&admin) else {
            return String::new();
        };
        let _ = write!(
            conn,
            "GET /backends HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n"
        );
        let mut out = String::new();
        let _ = conn.read_to_string(&mut out);
        out
    };
    let started = eventually(|| ids().contains("\"id\":\"a\""));

    std::fs::write(
        &config,
        text("[[backends]]\nid = \"b\"\nurl = \"http://127.0.0.1:10\"\n"),
    )
    .unwrap();
    let hup_one = hup();
    let swapped = eventually(|| {
        let ids = ids();
        ids.contains("\"id\":\"b\"") && !ids.contains("\"id\":\"a\"")
    });

    std::fs::write(&config, "listen = \"not an address\"\n").unwrap();
    let hup_two = hup();
    let refused = logged("configuration not reloaded");
    let after_bad = ids();
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();

    assert!(started, "the proxy never listed backend a");
    assert!(hup_one && hup_two);
    assert!(swapped, "SIGHUP did not apply the file's backends");
    assert!(refused, "a broken file was not reported");
    assert!(after_bad.contains("\"id\":\"b\""), "{after_bad}");
    assert!(running, "the proxy exited");
}

/// `access_log.format = "json"`: one JSON object per request on standard output, with the
/// request's decision trace and the body's bytes as sent.
#[test]
fn the_json_access_log_writes_one_object_per_request() {
    // A backend that answers every request `ok`, and `/streamed` with a chunked body
    // whose length nobody knows until it ends.
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in upstream.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(conn);
            let (mut line, mut streamed) = (String::new(), false);
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line.starts_with("GET ") {
                    streamed = line.starts_with("GET /streamed ");
                }
                if line == "\r\n" {
                    let answer: &[u8] = match streamed {
                        true => {
                            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                            2\r\nok\r\n5\r\n, and\r\n5\r\n more\r\n0\r\n\r\n"
                        }
                        false => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                    };
                    let _ = reader.get_mut().write_all(answer);
                }
                line.clear();
            }
        }
    });
    let addr = free_addr();
    let text = format!(
        "listen = \"{addr}\"\n[admin]\nenabled = false\n[access_log]\nformat = \"json\"\n[proxy]\ntrace_enabled = true\n\
         [[backends]]\nid = \"up\"\nurl = \"http://{upstream_addr}\"\n"
    );
    let config = write_config("json-log.toml", &text);
    let mut child = serve_file(&config, Stdio::piped(), Stdio::null());
    let served = eventually(|| TcpStream::connect(&addr).is_ok());
    // Asserted once the child is stopped.
    let (answer, streamed) = if served {
        (get(&addr, "/logged?x=1"), get(&addr, "/streamed"))
    } else {
        (String::new(), String::new())
    };
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let (mut line, mut second) = (String::new(), String::new());
    stdout.read_line(&mut line).unwrap();
    stdout.read_line(&mut second).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let fields = |key: &str| {
        let needle = format!("\"{key}\":");
        let at = line
            .find(&needle)
            .unwrap_or_else(|| panic!("no {key}: {line}"));
        line[at + needle.len()..]
            .split([',', '}'])
            .next()
            .unwrap()
            .to_owned()
    };
    assert!(
        line.starts_with('{') && line.trim_end().ends_with('}'),
        "{line}"
    );
    assert_eq!(fields("method"), "\"GET\"");
    assert_eq!(fields("path"), "\"/logged?x=1\"");
    assert_eq!(fields("status"), "200");
    assert_eq!(fields("bytes"), "2");
    assert_eq!(fields("backend"), "\"up\"");
    assert!(fields("client").starts_with("\"127.0.0.1:"), "{line}");
    assert_eq!(fields("trace_id").len(), 34, "{line}");
    assert!(fields("time").starts_with("\"20"), "{line}");
    assert!(line.contains("\"attempts\":[{"), "{line}");
    assert!(line.contains("\"why\":\"success\""), "{line}");
    assert_eq!(fields("body_bytes"), "2");
    assert_eq!(fields("body_complete"), "true");

    // A streamed body: its length is not known with the head (`bytes`), only once sent.
    assert!(streamed.starts_with("HTTP/1.1 200"), "{streamed}");
    assert!(streamed.ends_with("0\r\n\r\n"), "{streamed}");
    assert!(second.contains("\"path\":\"/streamed\""), "{second}");
    assert!(second.contains("\"bytes\":null"), "{second}");
    assert!(second.contains("\"body_bytes\":12"), "{second}");
    assert!(second.contains("\"body_complete\":true"), "{second}");
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
    let (_, err) = check_refuses("bad-discovery.toml", text);
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
    match TcpStream::connect(addr) {
        Ok(_) => get(addr, path),
        Err(_) => String::new(),
    }
}

#[test]
fn slow_start_flag_overrides_the_file_and_shows_in_the_config() {
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
    let mut shown = String::new();
    eventually(|| {
        shown = fetch(&admin, "/config");
        !shown.is_empty()
    });
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
            let (status, backend, _) = switchyard_tests::get(&client, &url).await;
            if status.is_success() {
                *seen.entry(backend).or_default() += 1;
            }
        }
        sleep(Duration::from_millis(20)).await;
    }
    assert!(seen["a"] >= 5 && seen["b"] >= 5, "{seen:?}");
}
