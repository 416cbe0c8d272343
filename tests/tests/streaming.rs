//! 256 MiB each way through the proxy while the process's heap stays small: bodies are
//! streamed, never buffered whole. Memory is measured by a counting allocator (bytes), not
//! by timing.

// The counting allocator is the only unsafe code in the tree: it wraps `System` and
// forwards every call unchanged.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use switchyard_tests::{backend, client, full, send, streamed, TestProxy};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const SIZE: usize = 256 << 20;
/// Generous for buffers of three HTTP connections, far below the 256 MiB moved.
const HEAP_BOUND: usize = 16 << 20;

/// Resets the peak to the current heap and returns that baseline.
fn baseline() -> usize {
    let now = CURRENT.load(Ordering::SeqCst);
    PEAK.store(now, Ordering::SeqCst);
    now
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_in_bounded_memory() {
    let a = backend("a").await;
    let proxy = TestProxy::with(&[&a]).await;
    let client = client();

    // Download: count the bytes as they arrive, keep none.
    let base = baseline();
    let res = client
        .request(
            Request::get(proxy.url(&format!("/stream/{SIZE}")))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let mut received = 0;
    while let Some(frame) = body.frame().await {
        received += frame.unwrap().data_ref().map_or(0, |d| d.len());
    }
    assert_eq!(received, SIZE);
    let grew = PEAK.load(Ordering::SeqCst) - base;
    eprintln!("download: peak heap growth {} KiB", grew >> 10);
    assert!(
        grew < HEAP_BOUND,
        "download: heap grew by {} MiB",
        grew >> 20
    );

    // Upload: the backend counts what it receives.
    let base = baseline();
    let req = Request::post(proxy.url("/upload"))
        .body(streamed(SIZE))
        .unwrap();
    let (status, _, body) = send(&client, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, SIZE.to_string());
    let grew = PEAK.load(Ordering::SeqCst) - base;
    eprintln!("upload: peak heap growth {} KiB", grew >> 10);
    assert!(grew < HEAP_BOUND, "upload: heap grew by {} MiB", grew >> 20);
}
