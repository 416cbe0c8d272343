//! The response cache through the `switchyard` binary on loopback: range requests, a
//! `304` that updates the stored response, and targeted cache control.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};

/// A backend on loopback answering each request with `answer(head)` (the request head in
/// lower case), and telling `requests` every head it got.
struct Backend {
    addr: SocketAddr,
    requests: Receiver<String>,
}

impl Backend {
    fn start(answer: fn(&str) -> String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, requests) = channel();
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn);
                    let mut head = String::new();
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                        head.push_str(&line.to_ascii_lowercase());
                        if line == "\r\n" {
                            let response = answer(&head);
                            let _ = tx.send(std::mem::take(&mut head));
                            if reader.get_mut().write_all(response.as_bytes()).is_err() {
                                return;
                            }
                        }
                        line.clear();
                    }
                });
            }
        });
        Self { addr, requests }
    }

    /// The request heads received since the last call.
    fn received(&self) -> Vec<String> {
        self.requests.try_iter().collect()
    }
}

/// A response with `status` (code and reason), `headers` lines and `body`.
fn response(status: &str, headers: &[&str], body: &str) -> String {
    let mut out = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n", body.len());
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out
}

/// `switchyard serve` over `backend` with the cache on; killed when dropped.
struct Proxy {
    addr: String,
    child: Child,
}

impl Proxy {
    fn start(backend: &Backend) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let dir =
            std::env::temp_dir().join(format!("switchyard-cache-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join(format!("{port}.toml"));
        let text = format!(
            "listen = \"{addr}\"\n[admin]\nenabled = false\n[proxy]\ncache_enabled = true\n\
             [[backends]]\nid = \"up\"\nurl = \"http://{}\"\n",
            backend.addr
        );
        std::fs::write(&config, text).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let proxy = Self { addr, child };
        assert!(proxy.listening(), "the proxy never listened");
        proxy
    }

    /// Waits (on the wall clock: the proxy is another process) up to 10 s for it to listen.
    #[allow(clippy::disallowed_methods)]
    fn listening(&self) -> bool {
        for _ in 0..500 {
            if TcpStream::connect(&self.addr).is_ok() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }

    /// A GET of `path` with the `headers` lines, on a connection of its own.
    fn get(&self, path: &str, headers: &[&str]) -> Answer {
        let mut conn = TcpStream::connect(&self.addr).unwrap();
        let mut req = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n");
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        conn.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).unwrap();
        Answer::parse(&out)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response as the client read it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn parse(raw: &str) -> Self {
        let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
        let mut lines = head.lines();
        let status = lines.next().unwrap()[9..12].parse().unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Self {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.iter().filter(|(n, _)| n == name);
        values.next().map(|(_, v)| v.as_str())
    }
}

const LAST_MODIFIED: &str = "Sun, 06 Nov 1994 08:00:00 GMT";

#[test]
fn range_requests_are_answered_from_a_stored_response() {
    let backend = Backend::start(|head| {
        if head.starts_with("get /partial ") {
            return response(
                "206 Partial Content",
                &["content-range: bytes 0-1/10"],
                "01",
            );
        }
        let last_modified = format!("last-modified: {LAST_MODIFIED}");
        let headers = ["cache-control: max-age=60", "etag: \"v1\"", &last_modified];
        response("200 OK", &headers, "0123456789")
    });
    let proxy = Proxy::start(&backend);

    let full = proxy.get("/file", &[]);
    assert_eq!((full.status, full.body.as_str()), (200, "0123456789"));
    let cases: [(&[&str], u16, &str, Option<&str>); 7] = [
        (&["range: bytes=2-5"], 206, "2345", Some("bytes 2-5/10")),
        (&["range: bytes=7-"], 206, "789", Some("bytes 7-9/10")),
        (&["range: bytes=-3"], 206, "789", Some("bytes 7-9/10")),
        (&["range: bytes=20-"], 416, "", Some("bytes */10")),
        (&["range: bytes=5-1"], 200, "0123456789", None),
        (
            &["range: bytes=0-0", "if-range: \"v1\""],
            206,
            "0",
            Some("bytes 0-0/10"),
        ),
        (
            &["range: bytes=0-0", "if-range: \"v0\""],
            200,
            "0123456789",
            None,
        ),
    ];
    for (headers, status, body, content_range) in cases {
        let got = proxy.get("/file", headers);
        assert_eq!(
            (got.status, got.body.as_str()),
            (status, body),
            "{headers:?}"
        );
        assert_eq!(got.header("content-range"), content_range, "{headers:?}");
        let length = body.len().to_string();
        assert_eq!(got.header("content-length"), Some(length.as_str()));
        assert!(
            got.header("cache-status")
                .unwrap()
                .starts_with("switchyard; hit"),
            "{got:?}"
        );
    }
    let if_range = format!("if-range: {LAST_MODIFIED}");
    let by_date = proxy.get("/file", &["range: bytes=9-", &if_range]);
    assert_eq!((by_date.status, by_date.body.as_str()), (206, "9"));
    assert_eq!(
        backend.received().len(),
        1,
        "one request reached the backend"
    );

    // A range miss goes upstream as it is, and its 206 is not stored.
    for _ in 0..2 {
        let got = proxy.get("/partial", &["range: bytes=0-1"]);
        assert_eq!((got.status, got.body.as_str()), (206, "01"));
        assert_eq!(got.header("cache-status"), Some("switchyard; fwd=uri-miss"));
    }
    let sent = backend.received();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|h| h.contains("\r\nrange: bytes=0-1\r\n")));
}

#[test]
fn a_304_updates_the_stored_response() {
    let backend = Backend::start(|head| {
        if head.contains("\r\nif-none-match: \"v1\"\r\n") {
            let headers = ["etag: \"v2\"", "x-version: 2", "cache-control: max-age=60"];
            return response("304 Not Modified", &headers, "");
        }
        let headers = ["etag: \"v1\"", "x-version: 1", "cache-control: no-cache"];
        response("200 OK", &headers, "body")
    });
    let proxy = Proxy::start(&backend);

    let first = proxy.get("/doc", &[]);
    assert_eq!(first.header("x-version"), Some("1"));
    let validated = proxy.get("/doc", &[]);
    assert_eq!(
        validated.header("cache-status"),
        Some("switchyard; fwd=stale; fwd-status=304; ttl=60")
    );
    let hit = proxy.get("/doc", &[]);
    assert_eq!(hit.header("cache-status"), Some("switchyard; hit; ttl=60"));
    for got in [&validated, &hit] {
        assert_eq!((got.status, got.body.as_str()), (200, "body"));
        assert_eq!(got.header("etag"), Some("\"v2\""));
        assert_eq!(got.header("x-version"), Some("2"));
        assert_eq!(got.header("cache-control"), Some("max-age=60"));
    }
    let sent = backend.received();
    assert_eq!(sent.len(), 2);
    assert!(
        sent[1].contains("\r\nif-none-match: \"v1\"\r\n"),
        "{}",
        sent[1]
    );
}

#[test]
fn targeted_cache_control_overrides_cache_control_and_is_not_forwarded() {
    let backend = Backend::start(|head| {
        let headers: &[&str] = if head.starts_with("get /cdn-store ") {
            &["cache-control: no-store", "cdn-cache-control: max-age=60"]
        } else {
            &["cache-control: max-age=60", "cdn-cache-control: no-store"]
        };
        response("200 OK", headers, "answer")
    });
    let proxy = Proxy::start(&backend);

    // CDN-Cache-Control: max-age over Cache-Control: no-store: stored, then a hit.
    let store = [proxy.get("/cdn-store", &[]), proxy.get("/cdn-store", &[])];
    assert_eq!(
        store[0].header("cache-status"),
        Some("switchyard; fwd=uri-miss; stored")
    );
    assert_eq!(
        store[1].header("cache-status"),
        Some("switchyard; hit; ttl=60")
    );
    assert_eq!(backend.received().len(), 1);

    // And the reverse: CDN-Cache-Control: no-store over a fresh Cache-Control.
    let no_store = [
        proxy.get("/cdn-no-store", &[]),
        proxy.get("/cdn-no-store", &[]),
    ];
    assert_eq!(
        no_store[1].header("cache-status"),
        Some("switchyard; fwd=uri-miss")
    );
    assert_eq!(backend.received().len(), 2);

    // The targeted field is for this cache only; Cache-Control goes on as it was.
    for (answers, cache_control) in [(&store, "no-store"), (&no_store, "max-age=60")] {
        for got in answers {
            assert_eq!((got.status, got.body.as_str()), (200, "answer"));
            assert_eq!(got.header("cdn-cache-control"), None, "{got:?}");
            assert_eq!(got.header("cache-control"), Some(cache_control));
        }
    }
}
