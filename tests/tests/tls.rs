//! `https` backends: the pool's TLS (trust, reuse, ALPN for HTTP/2, typed handshake
//! errors) and the proxy with its health checks, against TLS backends on loopback whose
//! certificates a CA made for the test signed.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use switchyard::{Health, HealthConfig, ProxyConfig};
use switchyard_pool::{ConnectError, ConnectErrorKind, Pool, PoolConfig, Protocol, TlsConfig};
use switchyard_server::ServerConfig;
use switchyard_tests::{
    client, get, tls_backend, tls_backend_requiring_client_cert, tls_backend_with_alpn,
    TestBackend, TestCa, TestProxy,
};
use tower::ServiceExt;

fn tls_pool(b: &TestBackend, tls: TlsConfig, protocol: Protocol) -> Pool<Empty<Bytes>> {
    Pool::new(
        b.addr.to_string().parse().unwrap(),
        PoolConfig {
            tls: Some(tls),
            protocol,
            ..PoolConfig::default()
        },
    )
}

/// Sends a GET for `path`; returns the status, the response's HTTP version and the body.
async fn fetch(
    pool: &Pool<Empty<Bytes>>,
    path: &str,
) -> Result<(StatusCode, http::Version, Bytes), switchyard::BoxError> {
    let res = pool
        .clone()
        .oneshot(Request::get(path).body(Empty::new()).unwrap())
        .await?;
    let (status, version) = (res.status(), res.version());
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, version, body))
}

#[tokio::test]
async fn pool_speaks_tls_and_reuses_the_connection() {
    let ca = TestCa::new();
    let a = tls_backend("a", &ca).await;
    let pool = tls_pool(&a, ca.trust(), Protocol::Http1);
    for _ in 0..3 {
        let (status, version, body) = fetch(&pool, "/").await.unwrap();
        assert_eq!(
            (status, version, &body[..]),
            (StatusCode::OK, http::Version::HTTP_11, &b"a"[..])
        );
    }
    let stats = pool.stats();
    assert_eq!((a.accepted(), stats.created, stats.reused), (1, 1, 2));
}

#[tokio::test]
async fn http2_over_tls_is_negotiated_and_shared() {
    let ca = TestCa::new();
    let a = tls_backend("a", &ca).await;
    let pool = tls_pool(&a, ca.trust(), Protocol::Http2);
    let results = futures::future::join_all((0..20).map(|_| fetch(&pool, "/delay/20"))).await;
    for r in results {
        let (status, version, _) = r.unwrap();
        assert_eq!((status, version), (StatusCode::OK, http::Version::HTTP_2));
    }
    assert_eq!(
        a.accepted(),
        1,
        "20 streams should share one TLS connection"
    );
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_typed_tls_error() {
    let ca = TestCa::new();
    let a = tls_backend("a", &ca).await;
    // Mozilla's roots do not include the test's CA.
    let pool = tls_pool(&a, TlsConfig::webpki_roots(), Protocol::Http1);
    let err = fetch(&pool, "/").await.unwrap_err();
    let connect = err
        .downcast_ref::<ConnectError>()
        .unwrap_or_else(|| panic!("not a connect error: {err}"));
    assert_eq!(connect.kind(), ConnectErrorKind::Tls, "{err}");
    assert_eq!(a.request_count(), 0);
    assert_eq!(pool.stats().connect_errors, 1);
}

/// HTTP/2 over TLS needs the backend's agreement in ALPN (RFC 9113 §3.2). A backend that
/// offers only HTTP/1.1 fails the handshake; one without ALPN completes it but is refused
/// before any HTTP/2 is sent. Both are TLS connect errors.
#[tokio::test]
async fn an_h2_backend_that_does_not_agree_to_h2_in_alpn_is_a_tls_error() {
    let ca = TestCa::new();
    for (alpn, says) in [
        (&[&b"http/1.1"[..]][..], "NoApplicationProtocol"),
        (&[][..], "did not agree to HTTP/2"),
    ] {
        let a = tls_backend_with_alpn("a", &ca, alpn).await;
        let pool = tls_pool(&a, ca.trust(), Protocol::Http2);
        let err = fetch(&pool, "/").await.unwrap_err();
        let connect = err
            .downcast_ref::<ConnectError>()
            .unwrap_or_else(|| panic!("not a connect error: {err}"));
        assert_eq!(connect.kind(), ConnectErrorKind::Tls, "{err}");
        let source = std::error::Error::source(connect).map(ToString::to_string);
        assert!(
            source.as_deref().is_some_and(|s| s.contains(says)),
            "{source:?}"
        );
        assert_eq!(a.request_count(), 0);
    }
}

#[test]
fn a_ca_file_without_certificates_is_refused() {
    let err = TlsConfig::from_ca_pem(b"not a certificate")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no PEM certificate"), "{err}");
}

fn checked(backend_ca_file: Option<std::path::PathBuf>) -> ProxyConfig {
    ProxyConfig {
        backend_ca_file,
        health: HealthConfig {
            // Long enough that only `check_now` runs checks during a test.
            interval: Duration::from_secs(3600),
            path: "/".into(),
            fall: 1,
            rise: 1,
            ..HealthConfig::default()
        },
        ..switchyard_tests::config()
    }
}

/// A proxy over `backend` with a valid `config`, which has checked the backend's health
/// once and found it healthy.
async fn checked_proxy(config: ProxyConfig, backend: &TestBackend) -> TestProxy {
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    let proxy = TestProxy::start(config, ServerConfig::default(), &[backend]).await;
    let report = proxy.proxy.check_now().await;
    let status = report.get(backend.id).unwrap();
    assert_eq!(
        (status.health, status.error.as_deref()),
        (Health::Healthy, None)
    );
    proxy
}

/// The proxy forwards to an `https` backend it trusts through `backend_ca_file`, and its
/// health checks reach the backend over TLS too (a check over plain TCP would fail and
/// take the backend out of rotation).
#[tokio::test]
async fn proxy_forwards_to_an_https_backend_and_checks_its_health() {
    let ca = TestCa::new();
    let a = tls_backend("a", &ca).await;
    let dir = write_files("tls", &[("ca.pem", &ca.ca_pem)]);
    let proxy = checked_proxy(checked(Some(dir.join("ca.pem"))), &a).await;
    assert_eq!(a.request_count(), 1, "the check reached the backend");

    let (status, id, _) = get(&client(), &proxy.url("/")).await;
    assert_eq!((status, id.as_str()), (StatusCode::OK, "a"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A backend whose certificate the proxy does not trust fails its health check with the
/// TLS error, and a request to it gets 502; the proxy keeps serving.
#[tokio::test]
async fn an_untrusted_https_backend_fails_its_check_and_answers_502() {
    let ca = TestCa::new();
    let a = tls_backend("a", &ca).await;
    let mut config = checked(None);
    config.health.enabled = false;
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&a]).await;
    let (status, _, _) = get(&client(), &proxy.url("/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);

    let checking = TestProxy::start(checked(None), ServerConfig::default(), &[&a]).await;
    let report = checking.proxy.check_now().await;
    let status = report.get("a").unwrap();
    assert_eq!(status.health, Health::Unhealthy);
    let error = status.error.as_deref().unwrap_or_default();
    assert!(error.contains("TLS handshake"), "{error}");
    assert_eq!(a.request_count(), 0);
}

#[test]
fn a_missing_ca_file_is_a_config_problem() {
    let problems = checked(Some("/nonexistent/ca.pem".into())).validate();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "backend_ca_file");
    assert!(problems[0].message.contains("cannot read"), "{problems:?}");
}

/// Writes `files` into a directory of their own; returns its path.
fn write_files(tag: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, contents) in files {
        std::fs::write(dir.join(name), contents).unwrap();
    }
    dir
}

/// Mutual TLS: a backend that asks for a client certificate gets the one configured in
/// the files, on requests and on health checks alike; a proxy without one is refused
/// before any request reaches the backend, and its client gets 502.
#[tokio::test]
async fn a_backend_asking_for_a_client_certificate_gets_the_configured_one() {
    let ca = TestCa::new();
    let a = tls_backend_requiring_client_cert("a", &ca).await;
    let dir = write_files(
        "mtls",
        &[
            ("ca.pem", &ca.ca_pem),
            ("client.pem", &ca.client_cert_pem),
            ("client.key", &ca.client_key_pem),
        ],
    );
    let config = ProxyConfig {
        backend_client_cert_file: Some(dir.join("client.pem")),
        backend_client_key_file: Some(dir.join("client.key")),
        ..checked(Some(dir.join("ca.pem")))
    };
    let proxy = checked_proxy(config, &a).await;
    let (status, id, _) = get(&client(), &proxy.url("/")).await;
    assert_eq!((status, id.as_str()), (StatusCode::OK, "a"));
    assert_eq!(a.request_count(), 2, "the check and the request");

    let mut config = checked(Some(dir.join("ca.pem")));
    config.health.enabled = false;
    let anonymous = TestProxy::start(config, ServerConfig::default(), &[&a]).await;
    let (status, _, _) = get(&client(), &anonymous.url("/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(a.request_count(), 2, "no request got past the handshake");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client certificate needs its key, and the key must be the certificate's: each
/// problem names the key at fault.
#[test]
fn a_client_certificate_without_its_own_key_is_a_config_problem() {
    let (ca, other) = (TestCa::new(), TestCa::new());
    let dir = write_files(
        "mtls-bad",
        &[
            ("client.pem", &ca.client_cert_pem),
            ("other.key", &other.client_key_pem),
        ],
    );
    let only_cert = ProxyConfig {
        backend_client_cert_file: Some(dir.join("client.pem")),
        ..ProxyConfig::default()
    };
    let problems = only_cert.validate();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "backend_client_key_file");

    let wrong_key = ProxyConfig {
        backend_client_key_file: Some(dir.join("other.key")),
        ..only_cert
    };
    let problems = wrong_key.validate();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "backend_client_key_file");
    assert!(
        problems[0].message.contains("does not fit the certificate")
            && problems[0].message.contains("other.key"),
        "{problems:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The listener's side: a proxy serving HTTPS from a certificate and key file.
mod listener {
    use super::*;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::sync::Arc;
    use switchyard::CertKey;
    use switchyard_server::{CertFiles, ListenerOptions, ListenerTls};
    use switchyard_tests::h1_get_on;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// A proxy over `backend` whose listener speaks TLS with `ca`'s certificate.
    async fn https_proxy(ca: &TestCa, backend: &TestBackend) -> (TestProxy, std::path::PathBuf) {
        https_proxy_with(ca, backend, ServerConfig::default()).await
    }

    /// [`https_proxy`] with other server settings.
    async fn https_proxy_with(
        ca: &TestCa,
        backend: &TestBackend,
        server: ServerConfig,
    ) -> (TestProxy, std::path::PathBuf) {
        let tag = format!("https-{}", backend.addr.port());
        let dir = write_files(
            &tag,
            &[("proxy.pem", &ca.cert_pem), ("proxy.key", &ca.key_pem)],
        );
        let server = ServerConfig {
            tls_cert_file: Some(dir.join("proxy.pem")),
            tls_key_file: Some(dir.join("proxy.key")),
            ..server
        };
        assert!(server.validate().is_empty(), "{:?}", server.validate());
        let proxy = TestProxy::start(switchyard_tests::config(), server, &[backend]).await;
        (proxy, dir)
    }

    async fn tls_to(
        proxy: &TestProxy,
        ca: &TestCa,
        protocol: Protocol,
    ) -> impl hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static {
        TokioIo::new(try_tls_to(proxy, ca, protocol).await.unwrap())
    }

    /// A TLS connection to the proxy by a client that trusts only `ca`.
    async fn try_tls_to(
        proxy: &TestProxy,
        ca: &TestCa,
        protocol: Protocol,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        connect_with(proxy, &ca.trust(), protocol).await
    }

    /// A TLS connection to the proxy made with `tls`.
    async fn connect_with(
        proxy: &TestProxy,
        tls: &TlsConfig,
        protocol: Protocol,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(proxy.addr).await.unwrap();
        tls.handshake("127.0.0.1", tcp, protocol).await
    }

    /// A GET of `path` with `Host: host`, over HTTP/1.1 on a new TLS connection.
    async fn h1_get(
        proxy: &TestProxy,
        ca: &TestCa,
        path: &str,
        host: &str,
    ) -> http::Response<hyper::body::Incoming> {
        let stream = try_tls_to(proxy, ca, Protocol::Http1).await.unwrap();
        h1_get_on(stream, path, &[("host", host)]).await.unwrap()
    }

    #[tokio::test]
    async fn https_clients_are_served_and_forwarded_as_https() {
        let ca = TestCa::new();
        let a = switchyard_tests::backend("a").await;
        let (proxy, dir) = https_proxy(&ca, &a).await;

        let res = h1_get(&proxy, &ca, "/headers", "example.test").await;
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let headers = String::from_utf8_lossy(&body).to_lowercase();
        assert!(headers.contains("x-forwarded-proto: https"), "{headers}");
        assert!(headers.contains("host: example.test"), "{headers}");

        // HTTP/2, negotiated with ALPN.
        let io = tls_to(&proxy, &ca, Protocol::Http2).await;
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get(format!("https://127.0.0.1:{}/", proxy.addr.port()))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(
            (res.status(), res.version()),
            (StatusCode::OK, http::Version::HTTP_2)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A client that speaks plain HTTP to the TLS port is dropped; the listener goes on
    /// serving TLS clients.
    #[tokio::test]
    async fn a_plaintext_client_is_dropped_and_others_are_served() {
        let ca = TestCa::new();
        let a = switchyard_tests::backend("a").await;
        let (proxy, dir) = https_proxy(&ca, &a).await;

        let mut plain = TcpStream::connect(proxy.addr).await.unwrap();
        plain
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf))
            .await
            .expect("the proxy kept a failed handshake open");
        assert!(
            read.is_err() || !String::from_utf8_lossy(&buf).contains("200"),
            "answered plaintext: {buf:?}"
        );
        assert_eq!(a.request_count(), 0);

        let res = h1_get(&proxy, &ca, "/", "x").await;
        assert_eq!(res.status(), StatusCode::OK);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A renewed certificate written over the files is served to new connections; a
    /// connection opened before goes on being served.
    #[tokio::test]
    async fn a_renewed_certificate_is_served_without_a_restart() {
        let (old, new) = (TestCa::new(), TestCa::new());
        let a = switchyard_tests::backend("a").await;
        let server = ServerConfig {
            tls_reload_interval: Duration::from_millis(20),
            ..ServerConfig::default()
        };
        let (proxy, dir) = https_proxy_with(&old, &a, server).await;
        let (mut before, conn) =
            hyper::client::conn::http1::handshake(tls_to(&proxy, &old, Protocol::Http1).await)
                .await
                .unwrap();
        tokio::spawn(conn);
        assert!(try_tls_to(&proxy, &new, Protocol::Http1).await.is_err());

        std::fs::write(dir.join("proxy.pem"), &new.cert_pem).unwrap();
        std::fs::write(dir.join("proxy.key"), &new.key_pem).unwrap();
        // Real time here, so wait (boundedly) for the next reload rather than for a time.
        let renewed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if try_tls_to(&proxy, &new, Protocol::Http1).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(renewed.is_ok(), "the renewed certificate was never served");
        assert!(
            try_tls_to(&proxy, &old, Protocol::Http1).await.is_err(),
            "new connections still get the old certificate"
        );
        let res = h1_get(&proxy, &new, "/", "x").await;
        assert_eq!(res.status(), StatusCode::OK);

        let req = Request::get("/")
            .header(http::header::HOST, "x")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = before.send_request(req).await.unwrap();
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "the older connection was served"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The files `name.pem` and `name.key` in `dir`.
    fn files(dir: &std::path::Path, name: &str) -> CertFiles {
        CertFiles {
            cert_file: dir.join(format!("{name}.pem")),
            key_file: dir.join(format!("{name}.key")),
        }
    }

    fn der(pem: &str) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    /// The files are read once per interval. A renewal half written (the new certificate
    /// beside the old key) is refused and the old certificate stays; the whole renewal is
    /// loaded at the first interval after it is complete, and not before.
    #[tokio::test(start_paused = true)]
    async fn the_files_are_read_again_once_per_interval() {
        let (old, new) = (TestCa::new(), TestCa::new());
        let dir = write_files(
            "reload-interval",
            &[("proxy.pem", &old.cert_pem), ("proxy.key", &old.key_pem)],
        );
        let tls = ListenerTls::load(&files(&dir, "proxy"), &[], &ListenerOptions::default());
        let tls = Arc::new(tls.unwrap());
        assert_eq!(tls.certificate(None), der(&old.cert_pem));
        let watch = tokio::spawn(tls.clone().watch(Duration::from_secs(60)));

        std::fs::write(dir.join("proxy.pem"), &new.cert_pem).unwrap();
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(tls.certificate(None), der(&old.cert_pem), "half a renewal");

        std::fs::write(dir.join("proxy.key"), &new.key_pem).unwrap();
        tokio::time::sleep(Duration::from_secs(58)).await;
        assert_eq!(
            tls.certificate(None),
            der(&old.cert_pem),
            "read before the interval"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(tls.certificate(None), der(&new.cert_pem));
        watch.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `reload` says whether the certificate changed; a broken renewal is an error naming
    /// the key and file, reported once, and the certificate served stays as it was.
    #[test]
    fn a_broken_renewal_is_reported_once_and_changes_nothing() {
        let (old, new) = (TestCa::new(), TestCa::new());
        let dir = write_files(
            "reload-broken",
            &[("proxy.pem", &old.cert_pem), ("proxy.key", &old.key_pem)],
        );
        let tls =
            ListenerTls::load(&files(&dir, "proxy"), &[], &ListenerOptions::default()).unwrap();
        assert_eq!(tls.reload(), Ok(false), "unchanged files");

        std::fs::write(dir.join("proxy.pem"), "-----BEGIN CERTIFICATE-----\ntrunc").unwrap();
        let err = tls.reload().unwrap_err();
        assert_eq!(err.key, "tls_cert_file");
        assert!(err.message.contains("proxy.pem"), "{err:?}");
        assert_eq!(tls.reload(), Ok(false), "reported once");
        assert_eq!(tls.certificate(None), der(&old.cert_pem));

        std::fs::write(dir.join("proxy.pem"), &new.cert_pem).unwrap();
        std::fs::write(dir.join("proxy.key"), &new.key_pem).unwrap();
        assert_eq!(tls.reload(), Ok(true));
        assert_eq!(tls.certificate(None), der(&new.cert_pem));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Each client gets the certificate for the name it asks for (SNI), wildcards
    /// included; a client that sends no name, or one no certificate is for, gets the
    /// default one.
    #[tokio::test]
    async fn the_certificate_is_chosen_by_the_name_the_client_asks_for() {
        let default = TestCa::new();
        let api = TestCa::for_names(&["api.example.test"]);
        let wild = TestCa::for_names(&["*.apps.example.test"]);
        let dir = write_files(
            "sni",
            &[
                ("proxy.pem", &default.cert_pem),
                ("proxy.key", &default.key_pem),
                ("api.pem", &api.cert_pem),
                ("api.key", &api.key_pem),
                ("wild.pem", &wild.cert_pem),
                ("wild.key", &wild.key_pem),
            ],
        );
        let by_name = vec![files(&dir, "api"), files(&dir, "wild")];
        let tls = ListenerTls::load(&files(&dir, "proxy"), &by_name, &ListenerOptions::default())
            .unwrap();
        assert_eq!(
            tls.certificate(Some("api.example.test")),
            der(&api.cert_pem)
        );
        assert_eq!(
            tls.certificate(Some("API.Example.Test")),
            der(&api.cert_pem)
        );
        assert_eq!(
            tls.certificate(Some("x.apps.example.test")),
            der(&wild.cert_pem)
        );
        let pick = |name| tls.certificate(Some(name));
        assert_eq!(pick("a.b.apps.example.test"), der(&default.cert_pem));
        assert_eq!(pick("other.test"), der(&default.cert_pem));
        assert_eq!(tls.certificate(None), der(&default.cert_pem));

        // Over real handshakes: each client trusts only the CA of the certificate it
        // should get.
        let a = switchyard_tests::backend("a").await;
        let server = ServerConfig {
            tls_cert_file: Some(dir.join("proxy.pem")),
            tls_key_file: Some(dir.join("proxy.key")),
            tls_certs: by_name,
            ..ServerConfig::default()
        };
        assert!(server.validate().is_empty(), "{:?}", server.validate());
        let proxy = TestProxy::start(switchyard_tests::config(), server, &[&a]).await;
        for (name, ca) in [
            ("api.example.test", &api),
            ("x.apps.example.test", &wild),
            ("127.0.0.1", &default),
        ] {
            let tcp = TcpStream::connect(proxy.addr).await.unwrap();
            let handshake = ca.trust().handshake(name, tcp, Protocol::Http1).await;
            assert!(handshake.is_ok(), "{name}: {handshake:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Every certificate's files are checked, and a problem names its entry.
    #[test]
    fn a_broken_named_certificate_is_a_config_problem() {
        let ca = TestCa::new();
        let dir = write_files(
            "sni-bad",
            &[("proxy.pem", &ca.cert_pem), ("proxy.key", &ca.key_pem)],
        );
        let server = ServerConfig {
            tls_cert_file: Some(dir.join("proxy.pem")),
            tls_key_file: Some(dir.join("proxy.key")),
            tls_certs: vec![files(&dir, "proxy"), files(&dir, "missing")],
            ..ServerConfig::default()
        };
        let problems = server.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "tls_certs[1].cert_file");
        assert!(problems[0].message.contains("missing.pem"), "{problems:?}");

        let without_default = ServerConfig {
            tls_certs: vec![files(&dir, "proxy")],
            ..ServerConfig::default()
        };
        let problems = without_default.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "tls_cert_file");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// With `tls_client_ca_file`, a client presenting a certificate that CA signed is
    /// served; one presenting none gets no response, and nothing reaches the backend. A
    /// new CA written over the file is taken at the next reload.
    #[tokio::test]
    async fn clients_must_present_a_certificate_the_client_ca_signed() {
        let (server_ca, client_ca) = (TestCa::new(), TestCa::new());
        let a = switchyard_tests::backend("a").await;
        let dir = write_files("client-ca", &[("clients.pem", &client_ca.ca_pem)]);
        let server = ServerConfig {
            tls_client_ca_file: Some(dir.join("clients.pem")),
            tls_reload_interval: Duration::from_millis(20),
            ..ServerConfig::default()
        };
        let (proxy, proxy_dir) = https_proxy_with(&server_ca, &a, server).await;
        let trust = server_ca.trust();
        let identity = CertKey::from_pem(
            client_ca.client_cert_pem.as_bytes(),
            client_ca.client_key_pem.as_bytes(),
        )
        .unwrap();

        let proxy = &proxy;
        let send = |tls: TlsConfig| async move {
            let stream = connect_with(proxy, &tls, Protocol::Http1).await?;
            h1_get_on(stream, "/", &[("host", "x")])
                .await
                .map(|res| res.status())
                .map_err(std::io::Error::other)
        };
        assert_eq!(
            send(trust.with_client_cert(identity.clone()))
                .await
                .unwrap(),
            StatusCode::OK
        );
        // The backend learns which certificate the client presented (not what the client
        // says in its own X-Forwarded-Client-Cert).
        let tls = trust.with_client_cert(identity.clone());
        let stream = connect_with(proxy, &tls, Protocol::Http1).await.unwrap();
        let forged = [("host", "x"), ("x-forwarded-client-cert", "Hash=forged")];
        let res = h1_get_on(stream, "/headers", &forged).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let headers = String::from_utf8_lossy(&body);
        let der = {
            use rustls::pki_types::pem::PemObject;
            let pem = client_ca.client_cert_pem.as_bytes();
            rustls::pki_types::CertificateDer::from_pem_slice(pem).unwrap()
        };
        let hash = ring::digest::digest(&ring::digest::SHA256, &der);
        let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let expected = format!("x-forwarded-client-cert: Hash={hex}\n");
        assert!(headers.contains(&expected), "{headers}");
        assert!(!headers.contains("forged"), "{headers}");
        assert!(
            send(trust.clone()).await.is_err(),
            "served a client without a certificate"
        );
        assert_eq!(a.request_count(), 2);

        // The clients' CA is replaced: its clients are served from the next reload on
        // (real time here, so waited for boundedly), and the old CA's are refused.
        let next_ca = TestCa::new();
        let next = CertKey::from_pem(
            next_ca.client_cert_pem.as_bytes(),
            next_ca.client_key_pem.as_bytes(),
        )
        .unwrap();
        std::fs::write(dir.join("clients.pem"), &next_ca.ca_pem).unwrap();
        let taken = tokio::time::timeout(Duration::from_secs(10), async {
            while send(trust.with_client_cert(next.clone())).await.is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        assert!(taken.await.is_ok(), "the new client CA was never taken");
        assert!(
            send(trust.with_client_cert(identity)).await.is_err(),
            "served a client of the replaced CA"
        );

        let missing = ServerConfig {
            tls_client_ca_file: Some(dir.join("missing.pem")),
            tls_cert_file: Some(proxy_dir.join("proxy.pem")),
            tls_key_file: Some(proxy_dir.join("proxy.key")),
            ..ServerConfig::default()
        };
        let problems = missing.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "tls_client_ca_file");
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&proxy_dir).unwrap();
    }

    /// A GET of `/` on a new TLS connection by a client with `tls`'s session store; the
    /// response is read, so that the session tickets that came before it are stored.
    /// Returns how the handshake went.
    async fn get_with(proxy: &TestProxy, tls: &TlsConfig) -> rustls::HandshakeKind {
        let stream = connect_with(proxy, tls, Protocol::Http1).await.unwrap();
        let kind = stream.get_ref().1.handshake_kind().unwrap();
        let res = h1_get_on(stream, "/", &[("host", "x")]).await.unwrap();
        res.into_body().collect().await.unwrap();
        kind
    }

    /// With session tickets a returning client resumes, however many other clients came
    /// in between; without them its session has left the listener's 256-session cache
    /// and it makes a full handshake.
    #[tokio::test]
    async fn a_returning_client_resumes_with_its_session_ticket() {
        for tickets in [true, false] {
            let ca = TestCa::new();
            let a = switchyard_tests::backend("a").await;
            let server = ServerConfig {
                tls_session_tickets: tickets,
                ..ServerConfig::default()
            };
            let (proxy, dir) = https_proxy_with(&ca, &a, server).await;
            let returning = ca.trust();
            assert_eq!(
                get_with(&proxy, &returning).await,
                rustls::HandshakeKind::Full
            );
            assert_eq!(
                get_with(&proxy, &returning).await,
                rustls::HandshakeKind::Resumed
            );
            for _ in 0..150 {
                let other = get_with(&proxy, &ca.trust()).await;
                assert_eq!(other, rustls::HandshakeKind::Full);
            }
            let expected = if tickets {
                rustls::HandshakeKind::Resumed
            } else {
                rustls::HandshakeKind::Full
            };
            assert_eq!(
                get_with(&proxy, &returning).await,
                expected,
                "tickets: {tickets}"
            );
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn a_certificate_without_its_key_is_a_config_problem() {
        let server = ServerConfig {
            tls_cert_file: Some("proxy.pem".into()),
            ..ServerConfig::default()
        };
        let problems = server.validate();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "tls_key_file");
    }
}
