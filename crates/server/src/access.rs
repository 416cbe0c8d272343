//! The access log: one line per request, once its response is sent.
//!
//! `text` (the default) is a `tracing` event (`switchyard::access` at `DEBUG`, so
//! `RUST_LOG` turns it on). `json` writes one JSON object per line to standard output:
//! the time, method, path, status, bytes, duration, client and trace id, and the
//! request's decision trace (see [`switchyard::trace_json`]), and the response body's
//! bytes as sent (`body_bytes`, and `body_complete`: false when the client left or the
//! backend broke off before its end). A request's line is queued when its body ends (or
//! is dropped). Requests hand their line to a writer task over a bounded channel: a
//! request never waits for the output, and when the writer falls 4096 lines behind, lines
//! are dropped (and counted in a warning).
//!
//! The format can change while the proxy serves ([`AccessLog::set_format`], a reload): each
//! request reads it as it starts.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::SystemTime;

use hyper::body::{Body as _, Frame, SizeHint};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use switchyard::{trace_json, Body, BoxError, Trace};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The access log's settings (the file's `[access_log]` table).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// The lines' format.
    pub format: AccessLogFormat,
}

/// The access log's format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// A `tracing` event at `DEBUG` on the `switchyard::access` target.
    #[default]
    Text,
    /// One JSON object per line on standard output, with the decision trace.
    Json,
}

/// The access log of a process's servers, those a reload starts included: its format is
/// read by each request as it starts, so that [`AccessLog::set_format`] applies to the
/// requests from then on. Cheap to clone; clones share the format and the JSON writer
/// (one for the process, spawned the first time the format is `json`, so that the lines of
/// two writers never interleave).
#[derive(Clone, Default)]
pub struct AccessLog {
    shared: Arc<LogShared>,
}

#[derive(Default)]
struct LogShared {
    json: AtomicBool,
    writer: OnceLock<JsonLog>,
}

impl AccessLog {
    /// An access log in `format`; a `json` one spawns its writer (within a tokio runtime).
    pub fn new(format: AccessLogFormat) -> Self {
        let log = Self::default();
        log.set_format(format);
        log
    }

    /// Writes the lines of the requests that start from now on in `format`; those already
    /// started keep theirs. The first change to `json` spawns the writer (within a tokio
    /// runtime).
    pub fn set_format(&self, format: AccessLogFormat) {
        let json = format == AccessLogFormat::Json;
        if json {
            (self.shared.writer).get_or_init(|| JsonLog::spawn(tokio::io::stdout()));
        }
        self.shared.json.store(json, Ordering::Release);
    }

    /// The format in force.
    pub fn format(&self) -> AccessLogFormat {
        match self.shared.json.load(Ordering::Acquire) {
            true => AccessLogFormat::Json,
            false => AccessLogFormat::Text,
        }
    }

    /// Where a request starting now sends its JSON line, when the format is `json`.
    pub(crate) fn json(&self) -> Option<&JsonLog> {
        match self.shared.json.load(Ordering::Acquire) {
            true => self.shared.writer.get(),
            false => None,
        }
    }
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("format", &self.format())
            .finish()
    }
}

/// How many lines may wait for the writer.
const BACKLOG: usize = 4096;

/// One request's line, before it is written.
pub(crate) enum Entry {
    /// A traced request: everything is in its trace.
    Traced(Trace),
    /// A request the proxy kept no trace of.
    Plain {
        method: http::Method,
        uri: http::Uri,
        client: SocketAddr,
        status: u16,
        elapsed: std::time::Duration,
    },
}

/// The response body as the client was sent it.
#[derive(Debug, Clone, Copy)]
struct Sent {
    bytes: u64,
    complete: bool,
}

/// Where requests send their JSON lines; cheap to clone.
#[derive(Clone)]
pub(crate) struct JsonLog {
    lines: mpsc::Sender<(Entry, Sent)>,
    dropped: Arc<AtomicU64>,
}

impl JsonLog {
    /// A log written to `out` by a task spawned now; it ends when every sender is gone.
    pub(crate) fn spawn(out: impl AsyncWrite + Unpin + Send + 'static) -> Self {
        let (lines, rx) = mpsc::channel(BACKLOG);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(write_lines(rx, out, dropped.clone()));
        Self { lines, dropped }
    }

    /// Queues a line; drops it when the writer is too far behind.
    fn log(&self, entry: Entry, sent: Sent) {
        if self.lines.try_send((entry, sent)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `body`, counted as it is sent; `entry` is queued once it ends or is dropped.
    pub(crate) fn after(&self, entry: Entry, body: Body) -> Body {
        Body::new(SentBody {
            inner: body,
            bytes: 0,
            line: Some((self.clone(), entry)),
        })
    }
}

/// A response body that counts the bytes it yields and queues its request's line when it
/// ends, fails or is dropped.
struct SentBody {
    inner: Body,
    bytes: u64,
    line: Option<(JsonLog, Entry)>,
}

impl SentBody {
    fn done(&mut self, complete: bool) {
        if let Some((log, entry)) = self.line.take() {
            let bytes = self.bytes;
            log.log(entry, Sent { bytes, complete });
        }
    }
}

impl hyper::body::Body for SentBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.done(true);
                }
            }
            Poll::Ready(Some(Err(_))) => self.done(false),
            Poll::Ready(None) => self.done(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for SentBody {
    /// A body dropped unfinished: the client went away, or the server stopped reading it
    /// (an empty body it never polled is complete).
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream();
        self.done(complete);
    }
}

async fn write_lines(
    mut rx: mpsc::Receiver<(Entry, Sent)>,
    out: impl AsyncWrite + Unpin,
    dropped: Arc<AtomicU64>,
) {
    let mut out = tokio::io::BufWriter::new(out);
    let mut line = Vec::with_capacity(512);
    while let Some((entry, sent)) = rx.recv().await {
        line.clear();
        if serde_json::to_writer(&mut line, &entry_json(entry, sent)).is_err() {
            continue;
        }
        line.push(b'\n');
        if out.write_all(&line).await.is_err() {
            return;
        }
        if rx.is_empty() {
            let _ = out.flush().await;
            let lost = dropped.swap(0, Ordering::Relaxed);
            if lost > 0 {
                tracing::warn!(lost, "access log behind: lines dropped");
            }
        }
    }
    let _ = out.flush().await;
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The line of one request.
fn entry_json(entry: Entry, sent: Sent) -> Value {
    let mut value = match entry {
        Entry::Traced(trace) => {
            let mut value = trace_json(&trace);
            if let Value::Object(o) = &mut value {
                o.insert("time".into(), now().into());
            }
            value
        }
        Entry::Plain {
            method,
            uri,
            client,
            status,
            elapsed,
        } => json!({
            "time": now(),
            "method": method.as_str(),
            "path": uri.path_and_query().map_or("/", |p| p.as_str()),
            "client": client.to_string(),
            "status": status,
            "duration_ms": elapsed.as_secs_f64() * 1000.0,
        }),
    };
    if let Value::Object(o) = &mut value {
        o.insert("body_bytes".into(), sent.bytes.into());
        o.insert("body_complete".into(), sent.complete.into());
    }
    value
}
