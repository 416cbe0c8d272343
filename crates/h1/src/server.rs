//! The server side of a connection: [`serve_connection`].
//!
//! One task per connection reads heads, calls the service, feeds the request body while
//! the service runs and while the response body is written, and writes responses in
//! order (pipelined requests wait in the read buffer).
//!
//! - **Memory.** One read buffer and one write buffer, reused from request to request.
//!   The connection waits for its next request with a read into the kept buffer; when
//!   none has come for 250 ms, both buffers are released to zero capacity and the wait
//!   goes on with a one-byte read, so an idle keep-alive connection holds no buffer at
//!   all (and a busy one neither frees and allocates them nor reads twice per request).
//!   One timer per connection bounds these waits. A request's state (the service's
//!   future, the response body) is boxed per request and gone while the connection
//!   idles.
//! - **Errors the engine answers itself**: a malformed head gets 400, 414, 431 or 501
//!   ([`ParseError::status`](crate::ParseError::status)) with `Connection: close`. A
//!   header read timeout or EOF in the middle of a head closes without an answer.
//! - **Keep-alive** by RFC 9112 §9.3: HTTP/1.1 unless `Connection: close`, HTTP/1.0 only
//!   with `Connection: keep-alive`. The connection also closes after a response whose
//!   body is close-delimited, after a response with `Connection: close`, and when the
//!   request body was not read to the end and is not all in the buffer already.
//! - **Response framing**: no body for HEAD, 1xx, 204 and 304 (`Content-Length` and
//!   `Transfer-Encoding` are removed for 1xx and 204); a `Content-Length` (given, or from
//!   an exact size hint) is written as is and the body is held to it; otherwise chunked
//!   (with trailers) for HTTP/1.1, and close-delimited for HTTP/1.0.
//! - **Half-closed clients** get their responses: EOF ends the connection only when a
//!   new head is awaited.
//! - **Upgrades**: see [`upgrade`](crate::upgrade); the connection ends here and the I/O
//!   goes to the request's [`OnUpgrade`].
//! - **Request bodies** are read only as fast as the service reads them (one frame
//!   ahead); `100 Continue` goes out when the service first polls the body.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::futures::Notified;
use tokio::sync::{oneshot, Notify};
use tokio::time::{Instant, Sleep};
use tower::Service;

use crate::body::{Decoder, Feeder, RecvBody, Step};
use crate::chunked::{encode_chunk_size, encode_last_chunk, ChunkedDecoder, CHUNK_END};
use crate::encode::encode_response_head;
use crate::error::Error;
use crate::parse::{has_token, BodyFraming, HeadParser, Limits, ParsedRequest};
use crate::upgrade::{Io, OnUpgrade, Upgraded};

/// Body frames smaller than this are copied into the write buffer to leave with the
/// frames ready after them (see `write_frame`).
const COALESCE: usize = 4 * 1024;
/// The most the write buffer gathers before it is written.
const COALESCE_MAX: usize = 16 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Settings for [`serve_connection`].
#[derive(Debug, Clone)]
pub struct Config {
    limits: Limits,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    read_size: usize,
    max_chunk_extensions: usize,
    max_trailers: usize,
    linger: Duration,
    linger_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            read_size: 8 * 1024,
            max_chunk_extensions: 16 * 1024,
            max_trailers: 16 * 1024,
            linger: Duration::ZERO,
            linger_bytes: 0,
        }
    }
}

impl Config {
    /// Head size limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How long a head may take, from its first byte (default 30 s).
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// How long a connection may wait for the first byte of a request (default 60 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How much the read buffer grows by for each read (default 8 KiB).
    pub fn read_size(mut self, bytes: usize) -> Self {
        self.read_size = bytes.max(64);
        self
    }

    /// Chunk extension bytes allowed over a whole request body (default 16 KiB).
    pub fn max_chunk_extensions(mut self, bytes: usize) -> Self {
        self.max_chunk_extensions = bytes;
        self
    }

    /// A request body the service did not read to its end is read and discarded after
    /// the response, for up to `time` and `bytes` more than already buffered, so that a
    /// client still sending it gets the response, and the connection stays open when the
    /// body ends in time (nginx's lingering close). Default: none, only what is buffered.
    pub fn linger(mut self, time: Duration, bytes: u64) -> Self {
        self.linger = time;
        self.linger_bytes = bytes;
        self
    }

    /// The largest trailer section of a chunked request (default 16 KiB).
    pub fn max_trailers(mut self, bytes: usize) -> Self {
        self.max_trailers = bytes;
        self
    }
}

/// Serves HTTP/1.1 on `io` with `service` until the client closes, a timeout fires or the
/// connection breaks. `Ok(())` for an orderly end (the client closed between requests,
/// the idle timeout, or a response that closes the connection).
pub fn serve_connection<I, S, B>(
    io: I,
    service: S,
    config: Config,
) -> impl Future<Output = Result<(), Error>>
where
    I: Io,
    S: Service<Request<RecvBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    serve_connection_until(io, service, config, Stop::default())
}

/// A graceful stop shared by the connections of a listener: [`Stop::stop`] tells every
/// connection served with [`serve_connection_until`] to read no new request.
///
/// A connection checks an atomic flag between requests, and waits on a [`Notify`] only
/// while it idles (or waits for the rest of a head), so a request costs no registration.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<StopState>);

#[derive(Debug, Default)]
struct StopState {
    stopped: AtomicBool,
    notify: Notify,
}

impl Stop {
    /// A signal that has not been given.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops the connections served with this signal, now and later.
    pub fn stop(&self) {
        self.0.stopped.store(true, Ordering::Release);
        self.0.notify.notify_waiters();
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::Acquire)
    }

    /// Resolves once [`stop`](Self::stop) is called (at once if it was): for a connection
    /// served by another engine that should stop with these.
    pub async fn stopped(&self) {
        let mut notified = pin!(self.0.notify.notified());
        // Registered before the flag is read: a stop given after this wakes it.
        notified.as_mut().enable();
        if !self.is_stopped() {
            notified.await;
        }
    }
}

/// Resolves once the connection's [`Stop`] is given; never without one.
async fn stopped(notified: &mut Option<Pin<&mut Notified<'_>>>) {
    match notified {
        Some(n) => n.as_mut().await,
        None => std::future::pending().await,
    }
}

/// [`serve_connection`] with a graceful stop: once `stop` is given, no new request is
/// read. A kept-alive connection waiting for (or in the middle of) its next request head
/// closes at once; one with a request in flight finishes its response, then closes. A
/// connection's first request is read and answered even after the stop: its client sent
/// it to a listener that was still accepting (nothing tells a client that a fresh
/// connection was closed for a shutdown, while a kept-alive one is retried).
pub fn serve_connection_until<I, S, B>(
    io: I,
    mut service: S,
    config: Config,
    stop: Stop,
) -> impl Future<Output = Result<(), Error>>
where
    I: Io,
    S: Service<Request<RecvBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    let mut conn = Conn {
        io,
        rbuf: BytesMut::new(),
        wbuf: BytesMut::new(),
        body_pending: false,
        parser: HeadParser::new(config.limits),
        config,
        idle_timer: None,
    };
    // Not an `async fn`: its arguments would be kept twice in the future (once as taken,
    // once where the body moved them), and the future is what an idle connection costs.
    async move {
        let Some(tx) = conn.serve_all(&mut service, &stop).await? else {
            return Ok(());
        };
        let read_buf = conn.rbuf.split().freeze();
        let _ = tx.send(Upgraded::new(Box::new(conn.io), read_buf));
        Ok(())
    }
}

struct Conn<I> {
    io: I,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// The write buffer holds body bytes (see `put_frame`), not only a head.
    body_pending: bool,
    parser: HeadParser,
    config: Config,
    /// The one timer of the waits between requests (see `wait_for_bytes`), made at the
    /// first wait and moved only when it fires.
    idle_timer: Option<Pin<Box<Sleep>>>,
}

/// How long a connection waits for its next request before it gives its buffers back.
/// Under load the next request comes sooner, and the buffers are kept: releasing them at
/// every wait cost an allocation and a free of each per request.
const RELEASE_BUFFERS_AFTER: Duration = Duration::from_millis(250);

/// What the connection does after a response.
enum Next {
    KeepAlive,
    Close,
    Upgrade(oneshot::Sender<Upgraded>),
}

/// How a response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    None,
    Length(u64),
    Chunked,
    Close,
}

/// What ended a wait for the next request.
enum Woken {
    /// The client closed.
    Eof,
    /// Bytes were read into the kept read buffer.
    Read,
    /// The first byte, read while the buffers were released.
    Byte(u8),
}

enum Event<T> {
    Done(T),
    Step(Step),
}

/// The feeder's next step, or never if there is no body to feed.
async fn step<I: AsyncRead + Unpin>(
    feeder: &mut Option<Feeder>,
    io: &mut I,
    buf: &mut BytesMut,
    read_size: usize,
) -> Step {
    match feeder {
        Some(f) => f.step(io, buf, read_size).await,
        None => std::future::pending().await,
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> Conn<I> {
    /// Serves requests until the connection ends; the upgrade's sender when a request
    /// switched protocols.
    async fn serve_all<S, B>(
        &mut self,
        service: &mut S,
        stop: &Stop,
    ) -> Result<Option<oneshot::Sender<Upgraded>>, Error>
    where
        S: Service<Request<RecvBody>, Response = Response<B>>,
        S::Error: Into<BoxError>,
        B: Body,
        B::Error: Into<BoxError>,
    {
        // Made before the flag is first read: a stop given after this resolves it.
        let notified = pin!(stop.0.notify.notified());
        let mut notified = Some(notified);
        let mut first = true;
        loop {
            let head = if std::mem::take(&mut first) {
                // The first request of a connection accepted before the stop is read and
                // answered (with `Connection: close` once stopping): its client sent it to
                // a listener that was still accepting. The header-read and idle timeouts
                // bound it.
                self.read_head(&mut None).await?
            } else {
                self.read_head(&mut notified).await?
            };
            let Some(req) = head else {
                return Ok(None);
            };
            // A request's state (the service's future, the response body) is boxed, so
            // that an idle connection's future holds none of it.
            match Box::pin(self.serve_one(service, req)).await? {
                Next::KeepAlive if !stop.is_stopped() => {}
                Next::KeepAlive | Next::Close => {
                    let _ = self.io.shutdown().await;
                    return Ok(None);
                }
                Next::Upgrade(tx) => return Ok(Some(tx)),
            }
        }
    }

    /// The next request head; `None` when the client closed or idled out between
    /// requests, or the connection's stop (`stop`, when given) came before a whole head.
    async fn read_head(
        &mut self,
        stop: &mut Option<Pin<&mut Notified<'_>>>,
    ) -> Result<Option<ParsedRequest>, Error> {
        let mut deadline = None;
        loop {
            if self.rbuf.is_empty() && !self.wait_for_bytes(stop).await? {
                return Ok(None);
            }
            match self.parser.parse_request(&mut self.rbuf) {
                Ok(Some(req)) => return Ok(Some(req)),
                Ok(None) if self.rbuf.is_empty() => continue,
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "malformed request head");
                    self.write_error(e.status()).await;
                    return Err(Error::parse(e));
                }
            }
            // The clock is read only for a head that did not arrive whole.
            let deadline =
                *deadline.get_or_insert_with(|| Instant::now() + self.config.header_read_timeout);
            self.rbuf.reserve(self.config.read_size);
            let read = tokio::time::timeout_at(
                deadline,
                tokio::io::AsyncReadExt::read_buf(&mut self.io, &mut self.rbuf),
            );
            let read = tokio::select! {
                biased;
                () = stopped(stop) => return Ok(None),
                read = read => read,
            };
            match read {
                Err(_) => return Err(Error::header_timeout()),
                Ok(Ok(0)) => return Err(Error::incomplete()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(Error::io(e)),
            }
        }
    }

    /// Waits for the first byte of a request. Data already there is read into the kept
    /// buffer; otherwise both buffers are released while the connection idles.
    async fn wait_for_bytes(
        &mut self,
        stop: &mut Option<Pin<&mut Notified<'_>>>,
    ) -> Result<bool, Error> {
        self.rbuf.reserve(self.config.read_size);
        match self.read_now().await {
            Poll::Ready(Ok(0)) => return Ok(false),
            Poll::Ready(Ok(_)) => return Ok(true),
            Poll::Ready(Err(e)) => return Err(Error::io(e)),
            Poll::Pending => {}
        }
        let since = Instant::now();
        let idle_end = since + self.config.idle_timeout;
        let release_at = since + RELEASE_BUFFERS_AFTER.min(self.config.idle_timeout);
        // One timer for every wait of the connection, reset only when it fires before
        // the stage it bounds has ended (or would fire after it): under load, one reset
        // per connection every `RELEASE_BUFFERS_AFTER`, not a timer made and dropped per
        // request.
        let timer = self
            .idle_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(release_at)));
        if timer.deadline() > release_at {
            timer.as_mut().reset(release_at);
        }
        let mut released = false;
        // The read above was just polled, by this task: its wake-up is registered, so the
        // first wait does not poll it again.
        let mut just_polled = true;
        let got = loop {
            // While the buffers are held, the wake-up reads straight into the read
            // buffer: one read per request, as a busy connection needs. Once they are
            // released, a one-byte read waits without holding any.
            let (io, rbuf) = (&mut self.io, &mut self.rbuf);
            let read = poll_fn(|cx| {
                if std::mem::take(&mut just_polled) {
                    Poll::Pending
                } else if released {
                    let mut byte = [0u8; 1];
                    let mut rb = ReadBuf::new(&mut byte);
                    match Pin::new(&mut *io).poll_read(cx, &mut rb) {
                        Poll::Ready(Ok(())) => Poll::Ready(Ok(match rb.filled().first() {
                            Some(&byte) => Woken::Byte(byte),
                            None => Woken::Eof,
                        })),
                        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                        Poll::Pending => Poll::Pending,
                    }
                } else {
                    let read = pin!(tokio::io::AsyncReadExt::read_buf(&mut *io, &mut *rbuf));
                    read.poll(cx)
                        .map_ok(|n| if n == 0 { Woken::Eof } else { Woken::Read })
                }
            });
            tokio::select! {
                biased;
                () = stopped(stop) => return Ok(false),
                got = read => break got,
                () = timer.as_mut() => {}
            }
            let stage_end = if released { idle_end } else { release_at };
            if Instant::now() < stage_end {
                // Set for an earlier wait: moved to this one's end.
                timer.as_mut().reset(stage_end);
            } else if !released && idle_end > release_at {
                self.rbuf = BytesMut::new();
                self.wbuf = BytesMut::new();
                released = true;
                timer.as_mut().reset(idle_end);
            } else {
                return Ok(false);
            }
        };
        match got.map_err(Error::io)? {
            Woken::Eof => Ok(false),
            Woken::Read => Ok(true),
            Woken::Byte(byte) => {
                self.rbuf.reserve(self.config.read_size);
                self.rbuf.put_u8(byte);
                // The rest of the head is most likely there already: take it now, so the
                // first parse sees the whole head and no header-read timer is armed.
                match self.read_now().await {
                    Poll::Ready(Err(e)) => Err(Error::io(e)),
                    Poll::Ready(Ok(_)) | Poll::Pending => Ok(true),
                }
            }
        }
    }

    /// One read into the read buffer's spare room, if bytes are there: `Pending` (its
    /// wake-up registered) if none are.
    async fn read_now(&mut self) -> Poll<std::io::Result<usize>> {
        let mut read = pin!(tokio::io::AsyncReadExt::read_buf(
            &mut self.io,
            &mut self.rbuf
        ));
        poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await
    }

    /// Answers a malformed request and closes; errors writing are moot by then. Like the
    /// proxy's own refusals, the answer is `no-store`: it says nothing about the resource.
    async fn write_error(&mut self, status: StatusCode) {
        self.wbuf.clear();
        let mut headers = http::HeaderMap::new();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        encode_response_head(status, &headers, &mut self.wbuf);
        let _ = self.io.write_all_buf(&mut self.wbuf).await;
        let _ = self.io.shutdown().await;
    }

    async fn write(&mut self, data: Bytes, tail: &'static [u8]) -> Result<(), Error> {
        let mut out = (&mut self.wbuf).chain(data).chain(tail);
        self.io.write_all_buf(&mut out).await.map_err(Error::io)?;
        self.wbuf.clear();
        self.body_pending = false;
        Ok(())
    }

    /// Before a failure: the body frames kept in the write buffer go out, as they would
    /// have unkept (not a head waiting alone: the response is not begun).
    async fn write_pending(&mut self) {
        if self.body_pending {
            let _ = self.write(Bytes::new(), b"").await;
            let _ = self.io.flush().await;
        }
    }

    /// Handles the steps that need the connection: `100 Continue`, and a broken body.
    async fn after_step(&mut self, step: Step, keep_alive: &mut bool) -> Result<(), Error> {
        match step {
            Step::Continue => {
                self.io
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await
                    .map_err(Error::io)?;
                self.io.flush().await.map_err(Error::io)
            }
            Step::Failed => {
                *keep_alive = false;
                Ok(())
            }
            Step::Fed | Step::Finished | Step::Abandoned => Ok(()),
        }
    }

    /// Serves one request; returns whether the connection may carry another.
    ///
    /// Not an `async fn`, which would keep the parsed request beside the parts taken out
    /// of it: the future is boxed per request, and kept small, its captures used in place.
    fn serve_one<'a, S, B>(
        &'a mut self,
        service: &'a mut S,
        req: ParsedRequest,
    ) -> impl Future<Output = Result<Next, Error>> + 'a
    where
        S: Service<Request<RecvBody>, Response = Response<B>>,
        S::Error: Into<BoxError>,
        B: Body + 'a,
        B::Error: Into<BoxError>,
    {
        let ParsedRequest {
            mut parts,
            framing,
            mut keep_alive,
            expect_continue,
        } = req;
        let head_request = parts.method == Method::HEAD;
        let connect = parts.method == Method::CONNECT;
        let version = parts.version;
        let mut upgrade = None;
        if connect || (version == Version::HTTP_11 && parts.headers.contains_key(header::UPGRADE)) {
            let (tx, on_upgrade) = OnUpgrade::pair();
            parts.extensions.insert(on_upgrade);
            upgrade = Some(tx);
        }
        let decoder = match framing {
            BodyFraming::Length(n) => Some(Decoder::Length(n)),
            BodyFraming::Chunked => Some(Decoder::Chunked(
                ChunkedDecoder::new(self.config.max_chunk_extensions, self.config.max_trailers)
                    .max_trailer_fields(self.config.limits.max_headers),
            )),
            BodyFraming::Empty | BodyFraming::CloseDelimited => None,
        };
        let (body, mut feeder) = match decoder {
            Some(d) => {
                let (body, feeder) = Feeder::new(d, expect_continue);
                (body, Some(feeder))
            }
            None => (RecvBody::empty(), None),
        };
        let request = Request::from_parts(parts, body);
        // The request is made outside the future: captured once, not as the parsed
        // request and again as its parts.
        async move {
            poll_fn(|cx| service.poll_ready(cx))
                .await
                .map_err(Error::service)?;
            let read_size = self.config.read_size;
            // Scoped: the service's future is gone before the response is written.
            let response = {
                let mut fut = pin!(service.call(request));
                if feeder.is_none() {
                    // No request body to feed: the service's future alone.
                    fut.await.map_err(Error::service)?
                } else {
                    loop {
                        let event = tokio::select! {
                            biased;
                            r = &mut fut => Event::Done(r),
                            s = step(&mut feeder, &mut self.io, &mut self.rbuf, read_size) => Event::Step(s),
                        };
                        match event {
                            Event::Done(r) => break r.map_err(Error::service)?,
                            Event::Step(s) => self.after_step(s, &mut keep_alive).await?,
                        }
                    }
                }
            };

            let (mut parts, body) = response.into_parts();
            let status = parts.status;
            let switching =
                status == StatusCode::SWITCHING_PROTOCOLS || (connect && status.is_success());
            if let (true, Some(tx)) = (switching, upgrade.take()) {
                parts.headers.remove(header::CONTENT_LENGTH);
                parts.headers.remove(header::TRANSFER_ENCODING);
                self.wbuf.clear();
                encode_response_head(status, &parts.headers, &mut self.wbuf);
                drop(body);
                self.write(Bytes::new(), b"").await?;
                self.io.flush().await.map_err(Error::io)?;
                return Ok(Next::Upgrade(tx));
            }
            if status.is_informational() {
                // Sending 1xx responses for the service is not supported yet (crate docs).
                return Err(Error::informational());
            }
            let headers = &mut parts.headers;
            if headers
                .get_all(header::CONNECTION)
                .iter()
                .any(|v| has_token(v.as_bytes(), "close"))
            {
                keep_alive = false;
            }
            let http11 = version == Version::HTTP_11;
            let out = if status == StatusCode::NO_CONTENT {
                headers.remove(header::CONTENT_LENGTH);
                headers.remove(header::TRANSFER_ENCODING);
                Out::None
            } else if status == StatusCode::NOT_MODIFIED {
                headers.remove(header::TRANSFER_ENCODING);
                Out::None
            } else if headers.contains_key(header::TRANSFER_ENCODING) {
                headers.remove(header::CONTENT_LENGTH);
                if http11 {
                    let te: Vec<u8> = headers
                        .get_all(header::TRANSFER_ENCODING)
                        .iter()
                        .map(|v| v.as_bytes())
                        .collect::<Vec<_>>()
                        .join(&b", "[..]);
                    let last = te.rsplit(|&b| b == b',').next().unwrap_or_default();
                    if !crate::parse::trim_ows(last).eq_ignore_ascii_case(b"chunked") {
                        let mut value = te;
                        value.extend_from_slice(b", chunked");
                        if let Ok(value) = HeaderValue::from_bytes(&value) {
                            headers.insert(header::TRANSFER_ENCODING, value);
                        }
                    }
                    Out::Chunked
                } else {
                    headers.remove(header::TRANSFER_ENCODING);
                    Out::Close
                }
            } else if let Some(n) = content_length(headers) {
                Out::Length(n)
            } else if let Some(n) = body.size_hint().exact() {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
                Out::Length(n)
            } else if http11 {
                headers.insert(
                    header::TRANSFER_ENCODING,
                    HeaderValue::from_static("chunked"),
                );
                Out::Chunked
            } else {
                Out::Close
            };
            let out = if head_request { Out::None } else { out };
            if out == Out::Close {
                keep_alive = false;
            }
            if !keep_alive {
                if http11 {
                    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
                } else {
                    headers.remove(header::CONNECTION);
                }
            } else if !http11 {
                headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
            }
            if !headers.contains_key(header::DATE) {
                headers.insert(header::DATE, date());
            }
            self.wbuf.clear();
            encode_response_head(status, headers, &mut self.wbuf);

            if out == Out::None {
                drop(body);
                self.write(Bytes::new(), b"").await?;
            } else {
                self.write_body(body, out, &mut feeder, &mut keep_alive)
                    .await?;
            }
            self.io.flush().await.map_err(Error::io)?;

            if let Some(mut f) = feeder {
                let (linger, max) = (self.config.linger, self.config.linger_bytes);
                if !f.is_finished() {
                    let drain = f.drain_within(&mut self.io, &mut self.rbuf, read_size, max);
                    if tokio::time::timeout(linger, drain).await != Ok(true) {
                        keep_alive = false;
                    }
                }
            }
            Ok(if keep_alive {
                Next::KeepAlive
            } else {
                Next::Close
            })
        }
    }

    async fn write_body<B>(
        &mut self,
        body: B,
        out: Out,
        feeder: &mut Option<Feeder>,
        keep_alive: &mut bool,
    ) -> Result<(), Error>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let mut body = pin!(body);
        let mut remaining = match out {
            Out::Length(n) => n,
            _ => u64::MAX,
        };
        // Boxed: rare, and the future of every response would otherwise hold a map.
        let mut trailers: Option<Box<http::HeaderMap>> = None;
        let read_size = self.config.read_size;
        loop {
            // The head, and small frames, wait in the write buffer for the next frame,
            // unless the body has nothing ready: then they go out now.
            if !self.wbuf.is_empty() {
                // The frame, if one is ready, is turned into its step at once: the future
                // keeps no frame across the writes.
                let next = match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
                    Poll::Pending => None,
                    Poll::Ready(frame) => {
                        Some(self.frame_step(frame, out, &mut remaining, &mut trailers))
                    }
                };
                match next {
                    None => {
                        self.write(Bytes::new(), b"").await?;
                        self.io.flush().await.map_err(Error::io)?;
                    }
                    Some(next) => {
                        if self.write_frame(next).await? {
                            break;
                        }
                        continue;
                    }
                }
            }
            let event = if feeder.is_none() {
                Event::Done(poll_fn(|cx| body.as_mut().poll_frame(cx)).await)
            } else {
                tokio::select! {
                    biased;
                    f = poll_fn(|cx| body.as_mut().poll_frame(cx)) => Event::Done(f),
                    s = step(feeder, &mut self.io, &mut self.rbuf, read_size) => Event::Step(s),
                }
            };
            match event {
                Event::Done(frame) => {
                    let next = self.frame_step(frame, out, &mut remaining, &mut trailers);
                    if self.write_frame(next).await? {
                        break;
                    }
                }
                Event::Step(s) => self.after_step(s, keep_alive).await?,
            }
        }
        Ok(())
    }

    /// Writes one body frame, or keeps a small one for the next write; true at the end of
    /// the body. On a failure, the frames kept go out first, as they would have unkept.
    // Not an `async fn`, which would keep `step` twice.
    #[allow(clippy::manual_async_fn)]
    fn write_frame(&mut self, step: FrameStep) -> impl Future<Output = Result<bool, Error>> + '_ {
        async move {
            match step {
                FrameStep::Kept => Ok(false),
                FrameStep::Write(data, tail) => {
                    self.write(data, tail).await?;
                    self.io.flush().await.map_err(Error::io)?;
                    Ok(false)
                }
                FrameStep::End => {
                    self.write(Bytes::new(), b"").await?;
                    Ok(true)
                }
                FrameStep::Failed(e) => {
                    self.write_pending().await;
                    Err(e)
                }
            }
        }
    }

    /// What one body frame needs written, the buffering and accounting done: apart from
    /// [`write_frame`](Self::write_frame), whose future (in every response's) then
    /// holds neither the frame nor a second copy of it.
    fn frame_step<D: Buf, E: Into<BoxError>>(
        &mut self,
        frame: Option<Result<http_body::Frame<D>, E>>,
        out: Out,
        remaining: &mut u64,
        trailers: &mut Option<Box<http::HeaderMap>>,
    ) -> FrameStep {
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    let data = data.copy_to_bytes(data.remaining());
                    if data.is_empty() {
                        return FrameStep::Kept;
                    }
                    // The first frame goes out with the head; later small ones may wait.
                    let first = !self.wbuf.is_empty() && !self.body_pending;
                    let tail = match out {
                        Out::Length(_) => {
                            if data.len() as u64 > *remaining {
                                return FrameStep::Failed(Error::body_length());
                            }
                            *remaining -= data.len() as u64;
                            &b""[..]
                        }
                        Out::Chunked => {
                            encode_chunk_size(data.len(), &mut self.wbuf);
                            CHUNK_END
                        }
                        Out::Close | Out::None => b"",
                    };
                    // A small frame waits in the write buffer (copied) for those ready
                    // after it: `write_body` writes them all at once when the body has
                    // nothing more ready, so a backend's small chunks that came together
                    // leave together. A large one is written as it is.
                    if !first
                        && data.len() < COALESCE
                        && self.wbuf.len() + data.len() < COALESCE_MAX
                    {
                        self.wbuf.extend_from_slice(&data);
                        self.wbuf.extend_from_slice(tail);
                        self.body_pending = true;
                        return FrameStep::Kept;
                    }
                    FrameStep::Write(data, tail)
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers.get_or_insert_with(Box::default).extend(t);
                    }
                    FrameStep::Kept
                }
            },
            Some(Err(e)) => FrameStep::Failed(Error::body(e)),
            None => {
                match out {
                    Out::Length(_) if *remaining != 0 => {
                        return FrameStep::Failed(Error::body_length());
                    }
                    Out::Chunked => encode_last_chunk(trailers.as_deref(), &mut self.wbuf),
                    _ => {}
                }
                FrameStep::End
            }
        }
    }
}

/// What [`Conn::frame_step`] leaves [`Conn::write_frame`] to do.
enum FrameStep {
    /// Nothing to write yet: the frame is in the write buffer, or was empty or trailers.
    Kept,
    /// This data, then `tail` (a chunk's CRLF), after what the write buffer holds.
    Write(Bytes, &'static [u8]),
    /// The body ended: what the write buffer holds (the last chunk among it) goes out.
    End,
    /// The body broke or overran its length: the frames kept go out, then this error.
    Failed(Error),
}

/// The one `Content-Length` of a response, if its lines agree and parse.
fn content_length(headers: &mut http::HeaderMap) -> Option<u64> {
    let mut value = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        let n = crate::parse::parse_decimal(crate::parse::trim_ows(v.as_bytes()))?;
        if value.is_some_and(|prev| prev != n) {
            value = None;
            break;
        }
        value = Some(n);
    }
    if value.is_none() {
        headers.remove(header::CONTENT_LENGTH);
    }
    value
}

/// The `Date` header, formatted once per second per thread.
fn date() -> HeaderValue {
    thread_local! {
        static CACHE: std::cell::RefCell<(u64, Option<HeaderValue>)> = const { std::cell::RefCell::new((0, None)) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != secs || cache.1.is_none() {
            let value = HeaderValue::from_str(&httpdate::fmt_http_date(now)).ok();
            *cache = (secs, value);
        }
        cache
            .1
            .clone()
            .unwrap_or_else(|| HeaderValue::from_static(""))
    })
}
