//! The dashboard in a real browser: headless Chromium, driven by playwright-core, loads
//! the page from a running proxy's admin listener and must show its three backends, then
//! show a request in its live requests table as it is made, then show one backend as
//! unhealthy within a few refreshes of it failing; it also shows the cache's tiers, the
//! shared one on a real `redis-server` the test starts, as up. `tests/browser/setup.sh`
//! installs Chromium, Node.js and playwright-core when they are missing. The screenshot is
//! left in `tests/browser/artifacts/dashboard.png`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use switchyard::{CacheConfig, SharedConfig};
use switchyard_admin::AdminConfig;
use switchyard_server::ServerConfig;
use switchyard_tests::redis::RedisServer;
use switchyard_tests::{backend, client, get, TestProxy};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_lists_backends_and_shows_one_failing() {
    let dir = browser_dir();
    let setup = Command::new("bash")
        .arg(dir.join("setup.sh"))
        .status()
        .await
        .expect("bash runs tests/browser/setup.sh");
    assert!(
        setup.success(),
        "tests/browser/setup.sh could not install the browser test's tools"
    );

    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let mut config = switchyard_tests::config();
    config.health.enabled = true;
    config.health.interval = Duration::from_secs(3600);
    config.health.fall = 1;
    config.trace = true;
    // The response cache with its shared tier on a Redis of the test's own.
    let redis = RedisServer::start().await;
    config.cache = Some(CacheConfig {
        shared: Some(SharedConfig::new(redis.url())),
        ..CacheConfig::default()
    });
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&a, &b, &c]).await;
    proxy.proxy.check_now().await;
    let client = client();
    for _ in 0..9 {
        get(&client, &proxy.url("/")).await;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = switchyard_admin::router(proxy.proxy.clone(), &AdminConfig::default(), &());
    tokio::spawn(switchyard_admin::serve(listener, router, async {
        let _ = stopped.await;
    }));

    std::fs::create_dir_all(dir.join("artifacts")).unwrap();
    let shot = dir.join("artifacts/dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let mut node = Command::new("node")
        .arg("dashboard.mjs")
        .arg(&url)
        .arg(&shot)
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let mut stdin = node.stdin.take().unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the browser script answers within 30 s")
            .unwrap()
            .expect("the browser script ended early")
    };

    let rows = loop {
        let line = next_line().await;
        assert!(!line.starts_with("PAGEERROR"), "{line}");
        if let Some(json) = line.strip_prefix("ROWS ") {
            break serde_json::from_str::<Value>(json).unwrap();
        }
    };
    let shown: Vec<(&str, &str, &str)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap(),
                r["health"].as_str().unwrap(),
                r["breaker"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("a", "healthy", "closed"),
            ("b", "healthy", "closed"),
            ("c", "healthy", "closed")
        ]
    );
    assert_eq!(
        next_line().await,
        "TIERS local=on shared=up",
        "the cache tiers and the shared tier's state are shown"
    );
    assert_eq!(next_line().await, "READY");
    // The requests table shows a request as it is made.
    get(&client, &proxy.url("/seen-live")).await;
    let live = next_line().await;
    assert!(
        ["LIVE 200 a", "LIVE 200 b", "LIVE 200 c"].contains(&live.as_str()),
        "{live}"
    );

    b.kill();
    proxy.proxy.check_now().await;
    stdin.write_all(b"b\n").await.unwrap();
    drop(stdin);
    let line = next_line().await;
    let refreshes: u32 = line
        .strip_prefix("UNHEALTHY ")
        .unwrap_or_else(|| panic!("unexpected line from the browser: {line}"))
        .parse()
        .unwrap();
    assert!(
        refreshes <= 3,
        "b showed as unhealthy only after {refreshes} refreshes"
    );
    assert_eq!(next_line().await, "DONE");
    let status = tokio::time::timeout(Duration::from_secs(15), node.wait())
        .await
        .expect("the browser closes")
        .unwrap();
    assert!(status.success());
    let png = std::fs::read(&shot).expect("the screenshot was saved");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}
