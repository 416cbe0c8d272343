//! The store's memory bound, invalidation and purges, and bodies streaming while they
//! are stored.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use http::Uri;
use http_body_util::channel::Channel;
use http_body_util::BodyExt;
use support::*;
use switchyard_cache::CacheConfig;
use tower::ServiceExt;

#[tokio::test(start_paused = true)]
async fn memory_stays_within_max_size_and_evictions_are_counted() {
    let backend = Backend::new(|req, _| {
        let body = format!("{:>4096}", req.uri().path());
        ok(&[("cache-control", "max-age=600")], &body)
    });
    let config = CacheConfig {
        max_size: 64 * 1024,
        max_object_size: 8 * 1024,
        ..CacheConfig::default()
    };
    let svc = cache(config, &backend);
    // Twice max_size of responses.
    for i in 0..32 {
        let res = send(&svc, get(&format!("/item/{i}"))).await;
        assert_eq!(res.cache_status(), "switchyard; fwd=uri-miss; stored");
    }
    let stats = svc.handle().stats();
    assert_eq!(stats.stores, 32);
    assert!(stats.bytes_used <= 64 * 1024, "{stats:?}");
    assert!(
        stats.bytes_used >= 32 * 1024,
        "most of the room is used: {stats:?}"
    );
    assert!(stats.evictions >= 16, "{stats:?}");
    assert_eq!(stats.entries + stats.evictions, 32, "{stats:?}");
    // The most recent response is among those kept.
    let last = send(&svc, get("/item/31")).await;
    assert!(last.cache_status().starts_with("switchyard; hit"));
}

#[tokio::test(start_paused = true)]
async fn a_successful_unsafe_request_invalidates_its_uri_and_locations() {
    let backend = Backend::new(|req, n| match *req.method() {
        http::Method::GET => ok(&[("cache-control", "max-age=600")], &format!("v{n}")),
        _ if req.uri().path() == "/fail" => Ok(response(500, &[], "")),
        _ => Ok(response(
            201,
            &[
                ("location", "/created"),
                ("content-location", "http://example.com/listing?page=1"),
            ],
            "",
        )),
    });
    let svc = cache(CacheConfig::default(), &backend);
    for path in ["/a", "/created", "/listing?page=1", "/fail", "/untouched"] {
        send(&svc, get(path)).await;
    }
    let calls = backend.calls();

    let post = send(&svc, request("POST", "/a", &[])).await;
    assert_eq!(post.cache_status(), "switchyard; fwd=method");
    assert_eq!(svc.handle().stats().invalidations, 3);
    for path in ["/a", "/created", "/listing?page=1"] {
        assert_eq!(
            send(&svc, get(path)).await.cache_status(),
            "switchyard; fwd=uri-miss; stored",
            "{path}"
        );
    }

    // An error does not invalidate; other URLs are left alone.
    send(&svc, request("DELETE", "/fail", &[])).await;
    assert!(send(&svc, get("/fail"))
        .await
        .cache_status()
        .starts_with("switchyard; hit"));
    assert!(send(&svc, get("/untouched"))
        .await
        .cache_status()
        .starts_with("switchyard; hit"));
    assert_eq!(backend.calls(), calls + 1 + 3 + 1);
}

#[tokio::test(start_paused = true)]
async fn locations_on_another_host_are_not_invalidated() {
    let backend = Backend::new(|req, n| match *req.method() {
        http::Method::GET => ok(&[("cache-control", "max-age=600")], &format!("v{n}")),
        _ => Ok(response(303, &[("location", "http://other.com/b")], "")),
    });
    let svc = cache(CacheConfig::default(), &backend);
    let other = || {
        let mut req = get("/b");
        req.headers_mut()
            .insert("host", "other.com".parse().unwrap());
        req
    };
    send(&svc, other()).await;
    send(&svc, request("PUT", "/a", &[])).await;
    assert!(send(&svc, other())
        .await
        .cache_status()
        .starts_with("switchyard; hit"));
}

#[tokio::test(start_paused = true)]
async fn operators_purge_one_url_or_everything() {
    let backend = Backend::new(|_, n| ok(&[("cache-control", "max-age=600")], &format!("v{n}")));
    let svc = cache(CacheConfig::default(), &backend);
    let handle = svc.handle();
    send(&svc, get("/a?x=1")).await;
    send(&svc, get("/b")).await;
    assert_eq!(handle.stats().entries, 2);

    assert!(handle.purge(&Uri::from_static("http://example.com/a?x=1")));
    assert!(!handle.purge(&Uri::from_static("http://example.com/a?x=1")));
    assert_eq!(send(&svc, get("/a?x=1")).await.text(), "v2");
    handle.purge_all();
    assert_eq!(handle.stats().entries, 0);
    assert_eq!(handle.stats().bytes_used, 0);
    assert_eq!(send(&svc, get("/b")).await.text(), "v3");
}

/// A backend whose first response to `/s` streams from the returned channel.
fn streaming(cc: &'static str) -> (Backend, http_body_util::channel::Sender<Bytes, BoxError>) {
    let (tx, rx) = Channel::<Bytes, BoxError>::new(1);
    let slot = Arc::new(Mutex::new(Some(rx.boxed_unsync())));
    let backend = Backend::new(move |_, n| match slot.lock().unwrap().take() {
        Some(body) => {
            let mut res = response(200, &[("cache-control", cc)], "");
            *res.body_mut() = body;
            Ok(res)
        }
        None => ok(&[("cache-control", cc)], &format!("fetch {n}")),
    });
    (backend, tx)
}

#[tokio::test(start_paused = true)]
async fn a_stored_body_reaches_the_client_frame_by_frame() {
    let (backend, mut tx) = streaming("max-age=60");
    let svc = cache(CacheConfig::default(), &backend);
    let res = svc.clone().oneshot(get("/s")).await.unwrap();
    assert_eq!(
        res.headers()["cache-status"],
        "switchyard; fwd=uri-miss; stored"
    );
    let mut body = res.into_body();

    tx.send_data(Bytes::from_static(b"one ")).await.unwrap();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(
        first, "one ",
        "the first frame is through before the second is sent"
    );
    assert_eq!(
        svc.handle().stats().stores,
        0,
        "not stored before it has all arrived"
    );

    tx.send_data(Bytes::from_static(b"two")).await.unwrap();
    drop(tx);
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(second, "two");
    assert!(body.frame().await.is_none());

    let hit = send(&svc, get("/s")).await;
    assert_eq!(hit.text(), "one two");
    assert_eq!(hit.cache_status(), "switchyard; hit; ttl=60");
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_body_larger_than_max_object_size_streams_through_uncached() {
    let (backend, mut tx) = streaming("max-age=60");
    let config = CacheConfig {
        max_object_size: 2048,
        ..CacheConfig::default()
    };
    let svc = cache(config.clone(), &backend);
    let res = svc.clone().oneshot(get("/s")).await.unwrap();
    let mut body = res.into_body();
    for _ in 0..3 {
        tx.send_data(Bytes::from(vec![b'x'; 1000])).await.unwrap();
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(frame.len(), 1000);
    }
    drop(tx);
    assert!(body.frame().await.is_none());
    assert_eq!(send(&svc, get("/s")).await.text(), "fetch 1", "not stored");

    // A Content-Length over the limit is not even tried.
    let big = Backend::new(|_, _| {
        ok(
            &[("cache-control", "max-age=60"), ("content-length", "3000")],
            &"y".repeat(3000),
        )
    });
    let svc = cache(config, &big);
    let res = send(&svc, get("/big")).await;
    assert_eq!(
        (res.body.len(), res.cache_status()),
        (3000, "switchyard; fwd=uri-miss")
    );
    send(&svc, get("/big")).await;
    assert_eq!(big.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_body_that_fails_or_is_dropped_is_not_stored() {
    let (backend, mut tx) = streaming("max-age=60");
    let svc = cache(CacheConfig::default(), &backend);
    let res = svc.clone().oneshot(get("/s")).await.unwrap();
    let mut body = res.into_body();
    tx.send_data(Bytes::from_static(b"partial")).await.unwrap();
    body.frame().await.unwrap().unwrap();
    tx.abort("reset".into());
    assert!(body.frame().await.unwrap().is_err());
    assert_eq!(send(&svc, get("/s")).await.text(), "fetch 1");
    assert_eq!(
        svc.handle().stats().stores,
        1,
        "only the second, whole response"
    );
}
