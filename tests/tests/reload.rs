//! Reloading every setting of a running `switchyard` (SIGHUP, `POST /config/reload`): the
//! `[proxy]` settings apply to new requests at once, under load, without a failed request;
//! breaker states and cached responses stay; a file that does not load changes nothing and
//! the error names the key and the line.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use switchyard_tests::binary::{free_addr, write_config, Switchyard};
use switchyard_tests::dnsmasq::{srv, Dnsmasq, NAME};
use switchyard_tests::{
    load, serve_on_loopback, tls_backend, FaultBackend, Load, LoadReport, TestCa,
};
use tokio::sync::watch;

/// Requests a [`origin`] received, per path.
type Counts = Arc<watch::Sender<HashMap<String, usize>>>;

/// The connections an [`origin`] has open: now, and the most at once since
/// [`Conns::reset_peak`].
#[derive(Debug, Default)]
struct Conns {
    open: AtomicUsize,
    peak: AtomicUsize,
}

impl Conns {
    fn opened(self: &Arc<Self>) -> impl Drop {
        let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        struct Closed(Arc<Conns>);
        impl Drop for Closed {
            fn drop(&mut self) {
                self.0.open.fetch_sub(1, Ordering::SeqCst);
            }
        }
        Closed(self.clone())
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    fn reset_peak(&self) {
        self.peak.store(self.open(), Ordering::SeqCst);
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

/// A backend: `/slow` answers after 600 ms, `/brief` after 20 ms, `/plain` without any
/// caching field (cacheable only by heuristic freshness), `/fresh` fresh for ten minutes,
/// `/fail` with 503; any other path at once. Only `/plain` and `/fresh` may be stored.
async fn origin() -> (SocketAddr, Counts, Arc<Conns>) {
    let counts: Counts = Arc::new(watch::channel(HashMap::new()).0);
    let conns = Arc::new(Conns::default());
    let (seen, open) = (counts.clone(), conns.clone());
    let addr = serve_on_loopback(|listener: tokio::net::TcpListener| async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            let open = open.opened();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let seen = seen.clone();
                async move {
                    let path = req.uri().path().to_owned();
                    seen.send_modify(|c| *c.entry(path.clone()).or_default() += 1);
                    let mut res = Response::builder();
                    match path.as_str() {
                        "/slow" => tokio::time::sleep(Duration::from_millis(600)).await,
                        "/brief" => tokio::time::sleep(Duration::from_millis(20)).await,
                        "/plain" => {}
                        "/fresh" => res = res.header("cache-control", "max-age=600"),
                        "/fail" => res = res.status(503),
                        _ => {}
                    }
                    if path != "/plain" && path != "/fresh" {
                        res = res.header("cache-control", "no-store");
                    }
                    Ok::<_, Infallible>(res.body(Full::new(Bytes::from(path))).unwrap())
                }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::spawn(async move {
                let _ = served.await;
                drop(open);
            });
        }
    })
    .await;
    (addr, counts, conns)
}

/// A steady load of `GET path` on `listen` ([`Load::new`]'s) for `duration`, on a task:
/// what it got.
fn steady_load(
    listen: SocketAddr,
    path: &'static str,
    duration: Duration,
) -> tokio::task::JoinHandle<LoadReport> {
    tokio::spawn(async move {
        let spec = Load {
            duration,
            max_requests: 100_000,
            ..Load::new(listen, path)
        };
        load(&spec).await
    })
}

fn count(counts: &Counts, path: &str) -> usize {
    counts.borrow().get(path).copied().unwrap_or(0)
}

/// `GET path` through the proxy at `addr`: status and `cache-status`.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    let (status, head) = switchyard_tests::raw_exchange(addr, request.as_bytes()).await;
    let cache = head
        .lines()
        .find_map(|l| l.strip_prefix("cache-status: "))
        .unwrap_or_default()
        .to_owned();
    (status, cache)
}

/// Backend `id` as `GET /backends` shows it.
async fn backend(proxy: &Switchyard, id: &str) -> Value {
    let (_, body) = proxy.admin("GET", "/backends").await;
    let list: Value = serde_json::from_str(&body).unwrap();
    let backend = (list.as_array().unwrap().iter())
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("no backend {id} in {body}"));
    backend.clone()
}

/// Sends SIGHUP and waits for the reload's log line, which must say that `what` was
/// applied and that nothing waits for a restart.
async fn hup_applies(proxy: &mut Switchyard, what: &str) {
    proxy.signal("HUP");
    let reloaded = proxy.logged("configuration reloaded").await;
    let reloaded = reloaded.expect("SIGHUP reloaded the file");
    assert!(
        reloaded.contains(what) && !reloaded.contains("restart"),
        "{reloaded}"
    );
}

/// `GET /config`.
async fn shown(proxy: &Switchyard) -> Value {
    let (_, shown) = proxy.admin("GET", "/config").await;
    serde_json::from_str(&shown).unwrap()
}

/// The breaker state of backend `id` as `GET /backends` shows it.
async fn breaker(proxy: &Switchyard, id: &str) -> String {
    let backend = backend(proxy, id).await;
    backend["breaker"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The configuration file: the `[proxy]` table has health checks off (unless `proxy`
/// turns them on), a 60 s breaker timeout and what `proxy` says; backends `good` (the origin) and `dead` (port 9 of
/// 127.0.0.2, where nothing listens).
fn file(listen: SocketAddr, admin: SocketAddr, good: SocketAddr, proxy: &str) -> String {
    format!(
        "{}[[backends]]\nid = \"dead\"\nurl = \"http://127.0.0.2:9\"\n",
        good_only(listen, admin, good, proxy)
    )
}

/// [`file`] without the backend `dead`.
fn good_only(listen: SocketAddr, admin: SocketAddr, good: SocketAddr, proxy: &str) -> String {
    let checks = match proxy.contains("health_check_enabled") {
        true => "",
        false => "health_check_enabled = false\n",
    };
    format!(
        "listen = \"{listen}\"\n\n[admin]\nlisten = \"{admin}\"\n\n[proxy]\n\
         {checks}{proxy}circuit_breaker_timeout = \"60s\"\n\n\
         [[backends]]\nid = \"good\"\nurl = \"http://{good}\"\n\n"
    )
}

/// What the `[proxy]` table says before the reload and after it, beside what [`file`]
/// always has.
const BEFORE: &str = "request_timeout = \"5s\"
attempt_timeout = \"2s\"
max_retries = 2
retry_delay = \"10ms\"
circuit_breaker_threshold = 5
cache_ttl = \"0s\"
";

const AFTER: &str = "request_timeout = \"300ms\"
attempt_timeout = \"300ms\"
max_retries = 0
retry_delay = \"10ms\"
circuit_breaker_threshold = 2
cache_ttl = \"10m\"
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_the_proxy_settings_under_load_and_keeps_breakers_and_cache() {
    let (good, counts, _) = origin().await;
    let (listen, admin) = (free_addr(), free_addr());
    let config = write_config("reload-live.toml", &file(listen, admin, good, BEFORE));
    let mut proxy = Switchyard::serve(&config, admin, &[]).await;
    // The breaker of `dead` opens after five refused connections, each retried on `good`.
    for _ in 0..20 {
        if breaker(&proxy, "dead").await == "open" {
            break;
        }
        assert_eq!(get(listen, "/").await.0, 200);
    }
    assert_eq!(breaker(&proxy, "dead").await, "open");

    // Before: a 600 ms answer is awaited, a 503 retried twice, `/plain` not stored
    // (cache_ttl = 0s), `/fresh` stored.
    assert_eq!(get(listen, "/slow").await.0, 200);
    assert_eq!(get(listen, "/fail").await.0, 503);
    assert_eq!(count(&counts, "/fail"), 3, "one request and two retries");
    assert_eq!(get(listen, "/").await.0, 200, "resets good's failure count");
    for _ in 0..2 {
        assert_eq!(get(listen, "/plain").await.0, 200);
    }
    assert_eq!(
        count(&counts, "/plain"),
        2,
        "cache_ttl = 0s stores nothing heuristic"
    );
    assert_eq!(get(listen, "/fresh").await.0, 200);
    assert!(get(listen, "/fresh").await.1.contains("hit"));
    assert_eq!(count(&counts, "/fresh"), 1);

    // Under load, the new file and SIGHUP.
    let steady = steady_load(listen, "/", Duration::from_secs(3));
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::write(&config, file(listen, admin, good, AFTER)).unwrap();
    proxy.signal("HUP");
    let reloaded = proxy.logged("configuration reloaded").await;
    let report = steady.await.unwrap();
    let reloaded = reloaded.expect("SIGHUP reloaded the file");
    assert!(
        reloaded.contains("retry") && reloaded.contains("circuit_breaker"),
        "{reloaded}"
    );
    assert!(report.responses() > 100, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.count(200), report.responses(), "{report:?}");

    // Kept: the open breaker, the stored response.
    assert_eq!(breaker(&proxy, "dead").await, "open");
    assert!(get(listen, "/fresh").await.1.contains("hit"));
    assert_eq!(count(&counts, "/fresh"), 1);
    // Applied: the heuristic freshness, the request timeout, no retries, and a threshold
    // of two (the timeout and the 503 are two failures in a row).
    for _ in 0..2 {
        assert_eq!(get(listen, "/plain").await.0, 200);
    }
    assert_eq!(count(&counts, "/plain"), 3, "cache_ttl = 10m stores it");
    assert_eq!(get(listen, "/slow").await.0, 504);
    assert_eq!(breaker(&proxy, "good").await, "closed");
    assert_eq!(get(listen, "/fail").await.0, 503);
    assert_eq!(count(&counts, "/fail"), 4, "no retry");
    assert_eq!(
        breaker(&proxy, "good").await,
        "open",
        "two failures trip it"
    );

    let (status, shown) = proxy.admin("GET", "/config").await;
    assert_eq!(status, 200);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["proxy"]["request_timeout"], "300ms", "{shown}");
    assert!(shown["loaded_at"].is_string(), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_changes_nothing_and_names_key_and_line() {
    let (good, _, _) = origin().await;
    let (listen, admin) = (free_addr(), free_addr());
    let config = write_config(
        "reload-invalid.toml",
        &good_only(listen, admin, good, BEFORE),
    );
    let mut proxy = Switchyard::serve(&config, admin, &[]).await;
    let (_, before) = proxy.admin("GET", "/config").await;

    // Line 11 of the file: the fifth key of [proxy].
    let broken = BEFORE.replace("retry_delay = \"10ms\"", "retry_delay = \"soon\"");
    std::fs::write(&config, good_only(listen, admin, good, &broken)).unwrap();
    proxy.signal("HUP");
    let refused = proxy.logged("configuration not reloaded").await;
    let refused = refused.expect("the broken file is reported");
    assert!(
        refused.contains("line 11") && refused.contains("proxy.retry_delay"),
        "{refused}"
    );
    let (status, answer) = proxy.admin("POST", "/config/reload").await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer.contains("line 11") && answer.contains("proxy.retry_delay"),
        "{answer}"
    );
    let (_, after) = proxy.admin("GET", "/config").await;
    assert_eq!(before, after, "nothing changed");
    assert_eq!(
        get(listen, "/slow").await.0,
        200,
        "the old timeout still applies"
    );

    // Mended, `POST /config/reload` applies it and says what changed.
    std::fs::write(&config, good_only(listen, admin, good, AFTER)).unwrap();
    let (status, answer) = proxy.admin("POST", "/config/reload").await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert_eq!(get(listen, "/slow").await.0, 504);
}

/// Lower pool limits apply to a running proxy under steady load: the idle connections
/// beyond the new limit close, no more than the new cap are open from then on, and no
/// request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_lower_pool_limits_under_load() {
    let (good, counts, conns) = origin().await;
    let (listen, admin) = (free_addr(), free_addr());
    let limits = |connections: usize, idle: usize| {
        format!("max_connections_per_backend = {connections}\nmax_idle_per_backend = {idle}\n")
    };
    let config = write_config(
        "reload-pool.toml",
        &good_only(listen, admin, good, &limits(16, 16)),
    );
    let mut proxy = Switchyard::serve(&config, admin, &[]).await;

    // Eight clients at once, each request answered after 20 ms: eight backend connections.
    let steady = tokio::spawn(async move {
        let spec = Load {
            connections: 8,
            duration: Duration::from_secs(4),
            max_requests: 100_000,
            ..Load::new(listen, "/brief")
        };
        load(&spec).await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(conns.open() >= 6, "{} connections open", conns.open());

    std::fs::write(&config, good_only(listen, admin, good, &limits(2, 2))).unwrap();
    hup_applies(&mut proxy, "applied connection pool").await;
    // The requests in flight at the reload (20 ms each) finish; their connections beyond
    // the new limits close.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_reload = count(&counts, "/brief");
    conns.reset_peak();
    let pool_after = backend(&proxy, "good").await["pool"].clone();
    let report = steady.await.unwrap();

    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.count(200), report.responses(), "{report:?}");
    assert!(
        count(&counts, "/brief") > at_reload + 50,
        "traffic went on under the new limits: {report:?}"
    );
    assert!(
        conns.peak() <= 2,
        "{} connections open at once",
        conns.peak()
    );
    assert!(pool_after["open"].as_u64().unwrap() <= 2, "{pool_after}");
    assert!(pool_after["idle"].as_u64().unwrap() <= 2, "{pool_after}");
    assert!(
        pool_after["closed"]["evicted"].as_u64().unwrap() >= 4,
        "{pool_after}"
    );
    let shown = shown(&proxy).await;
    assert_eq!(shown["proxy"]["max_connections_per_backend"], 2, "{shown}");
    assert_eq!(shown["proxy"]["max_idle_per_backend"], 2, "{shown}");

    // Idle now: the two connections stay, ready for the next requests.
    assert_eq!(conns.open(), 2);
}

/// The health of backend `id`'s endpoint as `GET /backends` shows it: state, checks made,
/// and the run of failures.
async fn checked(proxy: &Switchyard, id: &str) -> (String, u64, u64) {
    let backend = backend(proxy, id).await;
    let endpoint = &backend["health"]["endpoints"][0];
    (
        endpoint["health"].as_str().unwrap_or_default().to_owned(),
        endpoint["checks"].as_u64().unwrap_or(0),
        endpoint["consecutive_failures"].as_u64().unwrap_or(0),
    )
}

/// New health check settings apply at the checkers' next round: the new path is the one
/// the backend sees, at the new interval, and every endpoint keeps its health and its run
/// of failures. A new slow start applies too (its ramps: `switchyard-balance`'s tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_health_check_settings_and_keeps_states() {
    let (good, counts, _) = origin().await;
    let (listen, admin) = (free_addr(), free_addr());
    let checks = |interval: &str, path: &str, rise: u32| {
        format!(
            "health_check_enabled = true\nhealth_check_interval = \"{interval}\"\n\
             health_check_path = \"{path}\"\nhealth_check_fall = 1\n\
             health_check_rise = {rise}\n"
        )
    };
    let config = write_config(
        "reload-health.toml",
        &file(listen, admin, good, &checks("1s", "/before", 2)),
    );
    let mut proxy = Switchyard::serve(&config, admin, &[]).await;
    for _ in 0..100 {
        if checked(&proxy, "dead").await.0 == "unhealthy" && count(&counts, "/before") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (good_before, dead_before) = (checked(&proxy, "good").await, checked(&proxy, "dead").await);
    assert_eq!(good_before.0, "healthy", "{good_before:?}");
    assert_eq!(dead_before.0, "unhealthy", "{dead_before:?}");

    std::fs::write(
        &config,
        file(
            listen,
            admin,
            good,
            &(checks("100ms", "/after", 5) + "slow_start = \"5s\"\n"),
        ),
    )
    .unwrap();
    hup_applies(&mut proxy, "health_check").await;
    let before = count(&counts, "/before");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Within at most the old interval the checks use the new path, ten times a second.
    let after = count(&counts, "/after");
    assert!(after >= 5, "{after} checks of /after in 1.5 s");
    assert!(
        count(&counts, "/before") <= before + 1,
        "the old path is left"
    );
    let (good_now, dead_now) = (checked(&proxy, "good").await, checked(&proxy, "dead").await);
    assert_eq!(good_now.0, "healthy", "kept: {good_now:?}");
    assert!(
        good_now.1 >= good_before.1 + 5,
        "{good_before:?} {good_now:?}"
    );
    assert_eq!(dead_now.0, "unhealthy", "{dead_now:?}");
    assert!(
        dead_now.2 >= dead_before.2 + 5,
        "the run of failures goes on: {dead_before:?} {dead_now:?}"
    );
    let shown = shown(&proxy).await;
    assert_eq!(shown["proxy"]["health_check_path"], "/after", "{shown}");
    assert_eq!(shown["proxy"]["health_check_interval"], "100ms", "{shown}");
    assert_eq!(shown["proxy"]["slow_start"], "5s", "{shown}");
    assert_eq!(get(listen, "/").await.0, 200, "good still takes requests");
}

/// `GET path` on the kept-alive connection `conn`: the status.
async fn get_on(
    conn: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> u16 {
    let req = Request::get(path)
        .header("host", "test")
        .body(Empty::new())
        .unwrap();
    let answer = async {
        let res = conn
            .send_request(req)
            .await
            .expect("an answer on the kept-alive connection");
        let status = res.status().as_u16();
        res.into_body().collect().await.unwrap();
        status
    };
    tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("within 10 s")
}

/// Whether connections to `addr` are refused within 2 s.
async fn refuses(addr: SocketAddr) -> bool {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A new `listen` address: the proxy listens there at once and no longer on the old
/// one, whose connections are still answered. New `[server]` settings: a new server on the
/// same socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_moves_the_listener_and_keeps_its_connections() {
    let (good, counts, _) = origin().await;
    let (old, new, admin) = (free_addr(), free_addr(), free_addr());
    let config = write_config("reload-listen.toml", &good_only(old, admin, good, ""));
    let mut proxy = Switchyard::serve(&config, admin, &[]).await;
    let stream = tokio::net::TcpStream::connect(old).await.unwrap();
    let (mut kept, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(get_on(&mut kept, "/one").await, 200);

    std::fs::write(&config, good_only(new, admin, good, "")).unwrap();
    hup_applies(&mut proxy, "applied listen").await;
    assert_eq!(get(new, "/two").await.0, 200, "the new address answers");
    assert_eq!(
        get_on(&mut kept, "/three").await,
        200,
        "the old connection is served"
    );
    let refused = refuses(old).await;
    assert!(refused, "the old address still takes connections");
    assert_eq!(get_on(&mut kept, "/four").await, 200, "and after it closed");
    for path in ["/one", "/two", "/three", "/four"] {
        assert_eq!(count(&counts, path), 1, "{path}");
    }
    assert_eq!(shown(&proxy).await["listen"], new.to_string());

    // New [server] settings on the same address: a new server answers new connections
    // under them (a body over 1 KiB gets 413), the kept connection stays with the old one.
    let limited = good_only(new, admin, good, "") + "[server]\nmax_request_body = \"1KiB\"\n";
    std::fs::write(&config, &limited).unwrap();
    hup_applies(&mut proxy, "applied server").await;
    let big = format!(
        "POST /big HTTP/1.1\r\nhost: test\r\ncontent-length: 2000\r\nconnection: close\r\n\r\n{}",
        "a".repeat(2000)
    );
    // The reload is logged once the new settings are handed over; the server loop starts
    // the new server on the socket just after: a connection may reach the old one first.
    let mut status = 0;
    for _ in 0..100 {
        status = switchyard_tests::raw_exchange(new, big.as_bytes()).await.0;
        if status == 413 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 413, "the new server's limit");
    assert_eq!(get(new, "/").await.0, 200);
    assert_eq!(get_on(&mut kept, "/five").await, 200);

    // An address that cannot be bound (the admin API's) changes nothing.
    let taken = good_only(admin, admin, good, "") + "[server]\nmax_request_body = \"1KiB\"\n";
    std::fs::write(&config, taken).unwrap();
    let (status, answer) = proxy.admin("POST", "/config/reload").await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("listen"), "{answer}");
    assert_eq!(get(new, "/").await.0, 200, "still listening where it was");
    assert_eq!(shown(&proxy).await["listen"], new.to_string());
    assert_eq!(get_on(&mut kept, "/").await, 200);
}

/// A new access log format applies to the requests that start after the reload, under
/// steady load and without a failed request: the text log (a `tracing` event, off at
/// `RUST_LOG=info`) prints nothing on standard output, the JSON one a line per request,
/// and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_switches_the_access_log_format_under_load() {
    let (good, _, _) = origin().await;
    let (listen, admin) = (free_addr(), free_addr());
    let format = |format: &str| {
        good_only(listen, admin, good, "") + &format!("[access_log]\nformat = \"{format}\"\n")
    };
    let config = write_config("reload-access-log.toml", &format("text"));
    let mut proxy = Switchyard::serve(&config, admin, &[]).await;
    assert_eq!(get(listen, "/text-first").await.0, 200);

    let steady = steady_load(listen, "/steady", Duration::from_secs(3));
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::write(&config, format("json")).unwrap();
    hup_applies(&mut proxy, "applied access_log").await;
    let report = steady.await.unwrap();
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.count(200), report.responses(), "{report:?}");
    assert_eq!(get(listen, "/json-first").await.0, 200);
    let printed = proxy.printed("/json-first").await;
    assert!(
        printed.last().is_some_and(|l| l.contains("/json-first")),
        "{printed:?}"
    );
    assert!(printed.len() > 10, "the load's requests after the reload");
    for line in &printed {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            entry["status"] == 200 && entry["time"].is_string(),
            "{line}"
        );
        assert!(entry["path"] != "/text-first", "{line}");
    }
    assert_eq!(shown(&proxy).await["access_log"]["format"], "json");

    // Back to text: nothing printed for a request before the next change to JSON.
    std::fs::write(&config, format("text")).unwrap();
    hup_applies(&mut proxy, "applied access_log").await;
    assert_eq!(get(listen, "/text-again").await.0, 200);
    std::fs::write(&config, format("json")).unwrap();
    hup_applies(&mut proxy, "applied access_log").await;
    assert_eq!(get(listen, "/json-again").await.0, 200);
    let printed = proxy.printed("/json-again").await;
    assert_eq!(printed.len(), 1, "{printed:?}");
}

/// `method path` on the admin API at `addr` with `token` as bearer (none: `None`): the
/// status.
async fn admin_status(addr: SocketAddr, path: &str, token: Option<&str>) -> u16 {
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nhost: admin\r\n{auth}connection: close\r\n\r\n");
    switchyard_tests::raw_exchange(addr, request.as_bytes())
        .await
        .0
}

/// A new `admin.listen` is bound at once and the old address refuses connections, while a
/// live tail opened on it goes on; a new token applies at once. An address that cannot be
/// bound leaves the admin API where it is, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_moves_the_admin_api_and_applies_its_token() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    let (good, _, _) = origin().await;
    let (listen, old, new) = (free_addr(), free_addr(), free_addr());
    let traced = "trace_enabled = true\n";
    let config = write_config("reload-admin.toml", &good_only(listen, old, good, traced));
    let mut proxy = Switchyard::serve(&config, old, &[]).await;
    let mut tail = tokio::net::TcpStream::connect(old).await.unwrap();
    let head = "GET /requests/tail?path=/tailed HTTP/1.1\r\nhost: admin\r\n\r\n";
    tail.write_all(head.as_bytes()).await.unwrap();
    let mut tail = tokio::io::BufReader::new(tail).lines();
    let status = tail.next_line().await.unwrap().unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");

    let moved = good_only(listen, new, good, traced).replace(
        &format!("listen = \"{new}\"\n"),
        &format!("listen = \"{new}\"\ntoken = \"s3cret\"\n"),
    );
    std::fs::write(&config, &moved).unwrap();
    hup_applies(&mut proxy, "applied admin").await;
    assert_eq!(admin_status(new, "/healthz", Some("s3cret")).await, 200);
    assert_eq!(
        admin_status(new, "/healthz", None).await,
        401,
        "the new token"
    );
    assert_eq!(admin_status(new, "/healthz", Some("other")).await, 401);
    let refused = refuses(old).await;
    assert!(refused, "the old admin address still takes connections");
    // The tail opened before the move goes on.
    assert_eq!(get(listen, "/tailed/after").await.0, 200);
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let line = tail.next_line().await.unwrap().expect("the tail is open");
            if let Some(data) = line.strip_prefix("data: ") {
                return serde_json::from_str::<Value>(data).unwrap();
            }
        }
    })
    .await
    .expect("an event within 10 s");
    assert_eq!(event["path"], "/tailed/after");

    // An address that cannot be bound (the proxy's own) leaves the admin API where it is.
    let taken = moved.replace(
        &format!("listen = \"{new}\""),
        &format!("listen = \"{listen}\""),
    );
    std::fs::write(&config, taken).unwrap();
    proxy.signal("HUP");
    let reloaded = proxy.logged("configuration reloaded").await.unwrap();
    assert!(
        reloaded.contains("admin.listen") && reloaded.contains("restart"),
        "{reloaded}"
    );
    assert_eq!(admin_status(new, "/healthz", Some("s3cret")).await, 200);
    assert_eq!(admin_status(new, "/config", Some("s3cret")).await, 200);
    assert_eq!(get(listen, "/").await.0, 200, "the proxy still serves");
}

/// New backend TLS settings apply to the connections dialled after the reload, under load
/// and without a failed request: a backend whose certificate only the new CA signed is
/// reached, the connections pooled before are not reused (back to the old CA, requests
/// fail), a CA file rewritten in place is read again, and a new HTTP/1.1 engine dials new
/// connections in the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_backend_tls_and_engine_to_new_connections_under_load() {
    let (old_ca, new_ca) = (TestCa::new(), TestCa::new());
    let secure = tls_backend("secure", &new_ca).await;
    let old_pem = write_config("reload-old-ca.pem", &old_ca.ca_pem);
    let new_pem = write_config("reload-new-ca.pem", &new_ca.ca_pem);
    let (listen, admin) = (free_addr(), free_addr());
    let file = |ca: &std::path::Path, engine: &str| {
        format!(
            "listen = \"{listen}\"\n\n[admin]\nlisten = \"{admin}\"\n\n[proxy]\n\
             health_check_enabled = false\nmax_retries = 0\ncircuit_breaker_threshold = 1000\n\
             backend_ca_file = \"{}\"\nbackend_http1 = \"{engine}\"\n\n\
             [[backends]]\nid = \"secure\"\nurl = \"{}\"\n",
            ca.display(),
            secure.url()
        )
    };
    let config = write_config("reload-tls.toml", &file(&old_pem, "native"));
    let mut proxy = Switchyard::serve(&config, admin, &[]).await;
    assert_eq!(get(listen, "/").await.0, 502, "the old CA did not sign it");

    std::fs::write(&config, file(&new_pem, "native")).unwrap();
    hup_applies(&mut proxy, "applied backend TLS").await;
    let steady = |path| steady_load(listen, path, Duration::from_secs(2));
    let report = steady("/").await.unwrap();
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.count(200), report.responses(), "{report:?}");
    let evicted = |b: &Value| b["pool"]["closed"]["evicted"].as_u64().unwrap_or(0);

    // A new engine, under load: new connections, the old ones drained.
    let running = steady("/");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (accepted, before) = (secure.accepted(), evicted(&backend(&proxy, "secure").await));
    std::fs::write(&config, file(&new_pem, "hyper")).unwrap();
    hup_applies(&mut proxy, "applied backend_http1").await;
    let report = running.await.unwrap();
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.count(200), report.responses(), "{report:?}");
    assert!(
        secure.accepted() > accepted,
        "no connection dialled after the reload"
    );
    let pool = backend(&proxy, "secure").await;
    assert!(evicted(&pool) > before, "{pool}");
    assert_eq!(shown(&proxy).await["proxy"]["backend_http1"], "hyper");

    // Back to the old CA: the connections pooled under the new one are not reused.
    std::fs::write(&config, file(&old_pem, "hyper")).unwrap();
    hup_applies(&mut proxy, "applied backend TLS").await;
    assert_eq!(get(listen, "/").await.0, 502);
    // The same file rewritten with the new CA (a renewal in place) is read again.
    std::fs::write(&old_pem, &new_ca.ca_pem).unwrap();
    hup_applies(&mut proxy, "applied backend TLS").await;
    assert_eq!(get(listen, "/").await.0, 200);
}

/// Health checks turned on by a reload start at once: the dead backend is found unhealthy
/// and taken out of rotation; turned off, they stop and every backend is routable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_turns_health_checks_on_and_off() {
    let (good, counts, _) = origin().await;
    let (listen, admin) = (free_addr(), free_addr());
    let config = write_config("reload-checks.toml", &file(listen, admin, good, ""));
    let mut proxy = Switchyard::serve(&config, admin, &[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(checked(&proxy, "dead").await, ("unknown".into(), 0, 0));
    assert_eq!(count(&counts, "/checked"), 0, "no checks");

    let on = "health_check_enabled = true\nhealth_check_interval = \"100ms\"\n\
              health_check_path = \"/checked\"\nhealth_check_fall = 1\nhealth_check_rise = 1\n";
    std::fs::write(&config, file(listen, admin, good, on)).unwrap();
    hup_applies(&mut proxy, "applied health_check").await;
    for _ in 0..100 {
        if checked(&proxy, "dead").await.0 == "unhealthy"
            && checked(&proxy, "good").await.0 == "healthy"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(checked(&proxy, "dead").await.0, "unhealthy");
    assert!(!routed(&proxy, "dead").await, "out of rotation");
    assert_eq!(checked(&proxy, "good").await.0, "healthy");
    assert!(count(&counts, "/checked") > 0);
    assert_eq!(shown(&proxy).await["proxy"]["health_check_enabled"], true);

    std::fs::write(&config, file(listen, admin, good, "")).unwrap();
    hup_applies(&mut proxy, "health_check_enabled").await;
    let (dead, good_now) = (checked(&proxy, "dead").await, checked(&proxy, "good").await);
    assert_eq!((dead.0.as_str(), dead.2), ("unknown", 0), "{dead:?}");
    assert_eq!(good_now.0, "unknown", "{good_now:?}");
    let checks = count(&counts, "/checked");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        count(&counts, "/checked") <= checks + 1,
        "the checks stopped"
    );
    assert!(routed(&proxy, "dead").await, "routable again");
}

/// Whether the balancer routes to backend `id`'s endpoint.
async fn routed(proxy: &Switchyard, id: &str) -> bool {
    backend(proxy, id).await["health"]["endpoints"][0]["routed"] == true
}

/// The backend that answers `GET /` through the proxy at `addr` (its `x-backend`), or the
/// status when it fails.
async fn served_by(addr: SocketAddr) -> String {
    let request = "GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n";
    let (status, head) = switchyard_tests::raw_exchange(addr, request.as_bytes()).await;
    let backend = head.lines().find_map(|l| l.strip_prefix("x-backend: "));
    backend.map_or_else(|| status.to_string(), str::to_owned)
}

/// A new `dns_server` resolves every name again at once, not at its next resolution: a
/// `dns+srv://` backend takes the targets the new name server gives, under load and
/// without a failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_asks_a_new_name_server_at_once_under_load() {
    let [a, b] = FaultBackend::start_all(["a", "b"]).await;
    let (dns_a, dns_b) = (
        Dnsmasq::start(&[srv("a", &a, 1, 1)]).await,
        Dnsmasq::start(&[srv("a", &a, 1, 1), srv("b", &b, 1, 1)]).await,
    );
    let (listen, admin) = (free_addr(), free_addr());
    // Answers are kept 30 s: only a new resolution now reaches b within the test.
    let file = |dns: &Dnsmasq| {
        format!(
            "listen = \"{listen}\"\n\n[admin]\nlisten = \"{admin}\"\n\n[proxy]\n\
             health_check_enabled = false\ndns_server = \"{}\"\n\
             dns_min_ttl = \"30s\"\ndns_max_ttl = \"60s\"\n\n\
             [[backends]]\nid = \"web\"\nurl = \"dns+srv://{NAME}\"\n",
            dns.addr
        )
    };
    let config = write_config("reload-dns.toml", &file(&dns_a));
    let mut proxy = Switchyard::serve(&config, admin, &[]).await;
    let mut first = String::new();
    for _ in 0..100 {
        first = served_by(listen).await;
        if first == "a" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(first, "a", "the first name server's target");

    let steady = steady_load(listen, "/", Duration::from_secs(3));
    tokio::time::sleep(Duration::from_secs(1)).await;
    std::fs::write(&config, file(&dns_b)).unwrap();
    hup_applies(&mut proxy, "applied dns_server").await;
    let report = steady.await.unwrap();
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.count(200), report.responses(), "{report:?}");
    assert!(
        b.total_requests() > 0,
        "the new name server's target took requests"
    );
    let answers: Vec<String> = futures::future::join_all((0..4).map(|_| served_by(listen))).await;
    assert!(answers.iter().all(|b| b == "a" || b == "b"), "{answers:?}");
    assert_eq!(
        shown(&proxy).await["proxy"]["dns_server"],
        dns_b.addr.to_string()
    );
}

/// `total_requests` in `GET /stats`, and `good`'s own count there (none: `None`).
async fn counted(proxy: &Switchyard) -> (u64, Option<u64>) {
    let (_, body) = proxy.admin("GET", "/stats").await;
    let stats: Value = serde_json::from_str(&body).unwrap();
    let good = stats["backend_metrics"]["good"]["requests"].as_u64();
    (stats["total_requests"].as_u64().unwrap(), good)
}

/// `metrics_enabled` turned off stops the counting at once and `/stats` shows nothing
/// recorded; turned on, the counters go on from where they stood. Under load, without a
/// failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_turns_metrics_off_and_on_under_load() {
    let (good, _, _) = origin().await;
    let (listen, admin) = (free_addr(), free_addr());
    let config = write_config("reload-metrics.toml", &good_only(listen, admin, good, ""));
    let mut proxy = Switchyard::serve(&config, admin, &[]).await;
    for _ in 0..5 {
        assert_eq!(get(listen, "/counted").await.0, 200);
    }
    let (total, per_backend) = counted(&proxy).await;
    assert_eq!((total, per_backend), (5, Some(5)));

    let steady = steady_load(listen, "/steady", Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(
        &config,
        good_only(listen, admin, good, "metrics_enabled = false\n"),
    )
    .unwrap();
    hup_applies(&mut proxy, "applied metrics_enabled").await;
    let report = steady.await.unwrap();
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.count(200), report.responses(), "{report:?}");
    assert!(report.responses() > 10, "{report:?}");
    // Off: nothing shown, and nothing counted meanwhile.
    assert_eq!(counted(&proxy).await, (0, None));
    assert_eq!(shown(&proxy).await["proxy"]["metrics_enabled"], false);
    for _ in 0..3 {
        assert_eq!(get(listen, "/uncounted").await.0, 200);
    }

    std::fs::write(&config, good_only(listen, admin, good, "")).unwrap();
    hup_applies(&mut proxy, "applied metrics_enabled").await;
    let (on_again, good_on_again) = counted(&proxy).await;
    // The counters stand where they were when turned off: the load's requests before the
    // reload and none after it (those of the three GETs while off included).
    assert!(on_again > 5, "{on_again}");
    assert!(
        on_again < 5 + report.responses() as u64,
        "{on_again} {report:?}"
    );
    assert_eq!(get(listen, "/counted-again").await.0, 200);
    // (The backend's own count can be a request or two short of the proxy's: one the
    // proxy layer counted just before the switch reached the backend layer after it.)
    let (after, good_after) = counted(&proxy).await;
    assert_eq!(after, on_again + 1);
    assert!(good_on_again.is_some_and(|n| n > 5), "{good_on_again:?}");
    assert_eq!(good_after, good_on_again.map(|n| n + 1));
}
