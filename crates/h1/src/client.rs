//! The client side of a connection: [`Connection`] sends requests on one backend socket.
//!
//! There is no connection task: the request's own task drives the connection. The future
//! of [`Connection::send`] writes the request and reads the response head; the response's
//! [`ResponseBody`] owns the connection from then on, reads the body off the socket as it
//! is polled, and goes on sending whatever is left of the request body. Once both are
//! complete, [`ResponseBody::take_connection`] hands the connection back for the next
//! request (keep-alive); a connection that cannot carry another is dropped with the body.
//!
//! - **Memory.** One read buffer and one write buffer per connection, reused from request
//!   to request; body data is sliced out of the read buffer without copies, and sent from
//!   the body's own buffers with vectored writes.
//! - **Request framing**: no body when the body is empty at the start (a `Content-Length`
//!   given stays as is, `Transfer-Encoding` is removed, as hyper does); a
//!   `Content-Length` (given, or from an exact size hint) is written as is and the body
//!   held to it; otherwise `Transfer-Encoding: chunked`, with trailers. The head goes out
//!   in one write with the body's first chunk when that chunk is ready.
//! - **`Expect: 100-continue`**: the head goes out alone, and the body follows a
//!   `100 Continue`, or [`ClientConfig::expect_continue_timeout`] without an answer. A
//!   final response before that ends the exchange without the body (and the connection
//!   is not reused).
//! - **Response framing** by RFC 9112 §6.3, as strict as the [`parse`](crate::parse)
//!   module: no body for HEAD, 1xx, 204 and 304, then `Transfer-Encoding` (chunked last),
//!   `Content-Length`, or the body runs to the close. Informational responses other than
//!   101 are skipped.
//! - **Upgrades**: a `101 Switching Protocols` (or a 2xx to CONNECT) carries an
//!   [`OnUpgrade`] extension that yields the socket and the bytes read past the head.
//! - **Early responses**: a response that arrives while the request body is still being
//!   sent reaches the caller, even when the backend then resets the connection: a write
//!   that fails because the peer is gone stops the upload, not the exchange.

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::body::Decoder;
use crate::chunked::{encode_chunk_size, encode_last_chunk, ChunkedDecoder, Decoded, CHUNK_END};
use crate::encode::encode_request_head;
use crate::error::Error;
use crate::parse::{has_token, BodyFraming, HeadParser, Limits, ParsedResponse};
use crate::upgrade::{Io, OnUpgrade, Upgraded};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Settings for a client [`Connection`].
#[derive(Debug, Clone, Copy)]
pub struct ClientConfig {
    limits: Limits,
    read_size: usize,
    max_chunk_extensions: usize,
    max_trailers: usize,
    expect_continue_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            read_size: 64 * 1024,
            max_chunk_extensions: 16 * 1024,
            max_trailers: 16 * 1024,
            expect_continue_timeout: Duration::from_secs(1),
        }
    }
}

impl ClientConfig {
    /// Response head size limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How much the read buffer grows by for each read of a response body whose length is
    /// not known or is larger (default 64 KiB: a body is handed on as one frame per read,
    /// and the server side writes each frame). Heads, and bodies of a known smaller
    /// length, are read with no more room than they need (from 8 KiB), and a connection
    /// going back to its pool gives a buffer larger than that back: an idle connection
    /// holds no 64 KiB buffer.
    pub fn read_size(mut self, bytes: usize) -> Self {
        self.read_size = bytes.max(64);
        self
    }

    /// Chunk extension bytes allowed over a whole response body (default 16 KiB).
    pub fn max_chunk_extensions(mut self, bytes: usize) -> Self {
        self.max_chunk_extensions = bytes;
        self
    }

    /// The largest trailer section of a chunked response (default 16 KiB).
    pub fn max_trailers(mut self, bytes: usize) -> Self {
        self.max_trailers = bytes;
        self
    }

    /// How long a request with `Expect: 100-continue` waits for `100 Continue` before it
    /// sends its body anyway (default 1 s).
    pub fn expect_continue_timeout(mut self, timeout: Duration) -> Self {
        self.expect_continue_timeout = timeout;
        self
    }
}

/// Room for each read of a response head: most heads, and a small body after one, fit.
const HEAD_READ: usize = 8 * 1024;

/// Room for the next read of a body: what is left of a body of known length, within
/// [`HEAD_READ`] and the read size `most`; `most` otherwise.
fn read_size(decoder: &Decode, most: usize) -> usize {
    match decoder {
        Decode::Framed(Decoder::Length(n)) => {
            usize::try_from(*n).map_or(most, |n| n.clamp(HEAD_READ.min(most), most))
        }
        _ => most,
    }
}

/// What is waiting to be written: head or chunk lines, a body chunk, and its CRLF.
#[derive(Debug, Default)]
struct Outgoing {
    buf: BytesMut,
    data: Bytes,
    tail: &'static [u8],
    /// Some byte of the current request was written.
    written: bool,
}

impl Outgoing {
    fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.data.is_empty() && self.tail.is_empty()
    }
}

/// One backend connection, idle between requests. See the [module docs](self).
///
/// A handle to the connection's state on the heap: from the pool into a request, on into
/// its response's body and back, the connection moves as one pointer.
pub struct Connection<T>(Box<Conn<T>>);

/// The state of a [`Connection`].
struct Conn<T> {
    io: T,
    rbuf: BytesMut,
    /// The read buffer was given room for more than a head: see `take_connection`.
    grown: bool,
    /// This response's body needs more than a head's room.
    large_body: bool,
    /// The last response's body needed more than a head's room: the next head is read
    /// with the read size, so that a large body's first part comes with it.
    large: bool,
    out: Outgoing,
    parser: HeadParser,
    config: ClientConfig,
}

impl<T> std::fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("buffered", &self.0.rbuf.len())
            .finish_non_exhaustive()
    }
}

/// A request that could not be sent, with the request itself when none of it was written
/// (nor its body polled): it can go on another connection, whatever its method.
pub struct SendError<B> {
    error: Error,
    head: Option<Parts>,
    body: Option<B>,
}

impl<B> SendError<B> {
    /// Why the exchange failed.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The request, when nothing of it left: safe to send again. For
    /// [`Connection::send_head`], whose caller keeps the head, this is `None`: see
    /// [`take_body`](Self::take_body).
    pub fn take_request(&mut self) -> Option<Request<B>> {
        let head = self.head.take()?;
        let body = self.body.take()?;
        Some(Request::from_parts(head, body))
    }

    /// The request's body, when nothing of the request left: safe to send again.
    pub fn take_body(&mut self) -> Option<B> {
        self.body.take()
    }

    /// The error alone.
    pub fn into_error(self) -> Error {
        self.error
    }
}

impl<B> std::fmt::Debug for SendError<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendError")
            .field("error", &self.error)
            .field("unsent", &self.body.is_some())
            .finish()
    }
}

impl<B> std::fmt::Display for SendError<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.error, f)
    }
}

impl<B> std::error::Error for SendError<B> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// How a request body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    None,
    Length(u64),
    Chunked,
}

/// A request body being sent.
#[derive(Debug)]
struct Sending<B> {
    body: B,
    out: Out,
    trailers: Option<HeaderMap>,
    /// Waiting for `100 Continue` before the body goes.
    held: bool,
    /// The body was polled: it cannot be sent again.
    polled: bool,
    /// The whole body is in the write buffer.
    queued: bool,
    /// Everything is written and flushed.
    complete: bool,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Connection<T> {
    /// A connection on `io`, fresh from the dial (and the TLS handshake, if any).
    pub fn new(io: T, config: ClientConfig) -> Self {
        Self(Box::new(Conn::new(io, config)))
    }

    /// Whether an idle connection is unfit for a request: the backend closed it, reset
    /// it, or sent bytes nobody asked for. Never waits.
    pub fn is_closed(&mut self) -> bool {
        self.0.is_closed()
    }

    /// The underlying I/O.
    pub fn get_ref(&self) -> &T {
        &self.0.io
    }
}

impl<T: Io> Connection<T> {
    /// Sends `req` and reads the response head. The response's body reads the rest; the
    /// connection comes back from [`ResponseBody::take_connection`] when it can carry
    /// another request.
    ///
    /// The request is sent as it is (the target in origin form, its `Host` as given).
    pub async fn send<B>(
        self,
        req: Request<B>,
    ) -> Result<Response<ResponseBody<T, B>>, SendError<B>>
    where
        B: Body + Unpin,
        B::Error: Into<BoxError>,
    {
        let (mut head, body) = req.into_parts();
        self.0.send(&mut head, body).await.map_err(|mut e| {
            if e.body.is_some() {
                e.head = Some(head);
            }
            e
        })
    }

    /// Sends a request made of `head` and `body`, as [`send`](Self::send) does, leaving
    /// the head with the caller (to send again elsewhere without having copied it). The
    /// framing fields of `head` are set to match `body` (`Content-Length` or
    /// `Transfer-Encoding: chunked`), as they would be on the wire.
    pub async fn send_head<B>(
        self,
        head: &mut Parts,
        body: B,
    ) -> Result<Response<ResponseBody<T, B>>, SendError<B>>
    where
        B: Body + Unpin,
        B::Error: Into<BoxError>,
    {
        self.0.send(head, body).await
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Conn<T> {
    fn new(io: T, config: ClientConfig) -> Self {
        Self {
            io,
            rbuf: BytesMut::new(),
            grown: false,
            large_body: false,
            large: false,
            out: Outgoing::default(),
            parser: HeadParser::new(config.limits),
            config,
        }
    }

    fn is_closed(&mut self) -> bool {
        if !self.rbuf.is_empty() {
            return true;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut buf)
            .is_ready()
    }

    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let out = &mut self.out;
        loop {
            let mut chain = (&mut out.buf).chain(&mut out.data).chain(&mut out.tail);
            if !chain.has_remaining() {
                out.buf.clear();
                return Poll::Ready(Ok(()));
            }
            let written = {
                let mut slices = [IoSlice::new(&[]); 3];
                let n = chain.chunks_vectored(&mut slices);
                ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n]))?
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            out.written = true;
            chain.advance(written);
        }
    }

    /// Reads with room for `want` more bytes.
    fn poll_read_more(&mut self, want: usize, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.grown |= want > HEAD_READ;
        self.rbuf.reserve(want);
        pin!(self.io.read_buf(&mut self.rbuf)).poll(cx)
    }

    /// Queues one frame of the request body; true at its end.
    fn queue<D: Buf, E: Into<BoxError>>(
        &mut self,
        s: &mut Sending<impl Body>,
        frame: Option<Result<Frame<D>, E>>,
    ) -> Result<(), Error> {
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    let data = data.copy_to_bytes(data.remaining());
                    if data.is_empty() {
                        return Ok(());
                    }
                    match &mut s.out {
                        Out::Length(remaining) => {
                            if data.len() as u64 > *remaining {
                                return Err(Error::body_length());
                            }
                            *remaining -= data.len() as u64;
                        }
                        Out::Chunked => {
                            encode_chunk_size(data.len(), &mut self.out.buf);
                            self.out.tail = CHUNK_END;
                        }
                        Out::None => return Ok(()),
                    }
                    self.out.data = data;
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        s.trailers.get_or_insert_with(HeaderMap::new).extend(t);
                    }
                }
            },
            Some(Err(e)) => return Err(Error::request_body(e)),
            None => {
                match s.out {
                    Out::Length(n) if n != 0 => return Err(Error::body_length()),
                    Out::Chunked => encode_last_chunk(s.trailers.as_ref(), &mut self.out.buf),
                    _ => {}
                }
                s.queued = true;
            }
        }
        Ok(())
    }

    /// Sends the request (the head is already in the write buffer) as far as it can go.
    /// Ready once all of it is written and flushed.
    fn poll_send<B>(&mut self, s: &mut Sending<B>, cx: &mut Context<'_>) -> Poll<Result<(), Error>>
    where
        B: Body + Unpin,
        B::Error: Into<BoxError>,
    {
        if s.complete {
            return Poll::Ready(Ok(()));
        }
        loop {
            let room = self.out.data.is_empty() && self.out.tail.is_empty();
            if room && !s.queued && !s.held {
                s.polled = true;
                if let Poll::Ready(frame) = Pin::new(&mut s.body).poll_frame(cx) {
                    self.queue(s, frame)?;
                    continue;
                }
            }
            if !self.out.is_empty() {
                ready!(self.poll_write_out(cx)).map_err(Error::io)?;
                continue;
            }
            ready!(Pin::new(&mut self.io).poll_flush(cx)).map_err(Error::io)?;
            if s.queued {
                s.complete = true;
                return Poll::Ready(Ok(()));
            }
            return Poll::Pending;
        }
    }

    fn poll_head(
        &mut self,
        method: &Method,
        cx: &mut Context<'_>,
    ) -> Poll<Result<ParsedResponse, Error>> {
        loop {
            if !self.rbuf.is_empty() {
                match self.parser.parse_response(&mut self.rbuf, method) {
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(Error::parse(e))),
                }
            }
            let want = if self.large {
                self.config.read_size
            } else {
                HEAD_READ
            };
            match ready!(self.poll_read_more(want, cx)) {
                Ok(0) => return Poll::Ready(Err(Error::incomplete())),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(Error::io(e))),
            }
        }
    }
}

/// Whether a write failed because the peer went away: the response may still be there.
fn peer_gone(e: &Error) -> bool {
    let Some(io) = std::error::Error::source(e).and_then(|s| s.downcast_ref::<io::Error>()) else {
        return false;
    };
    matches!(
        io.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// Decides how the body goes, fixing the framing fields to match (as hyper's client does).
fn request_framing<B: Body>(headers: &mut HeaderMap, body: &B, version: Version) -> Out {
    if body.is_end_stream() {
        headers.remove(header::TRANSFER_ENCODING);
        return Out::None;
    }
    let chunked = version == Version::HTTP_11
        && headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .any(|v| has_token(v.as_bytes(), "chunked"));
    if chunked {
        headers.remove(header::CONTENT_LENGTH);
        return Out::Chunked;
    }
    headers.remove(header::TRANSFER_ENCODING);
    let given = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = given.or(body.size_hint().exact()) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        return Out::Length(n);
    }
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    Out::Chunked
}

impl<T: Io> Conn<T> {
    async fn send<B>(
        mut self: Box<Self>,
        parts: &mut Parts,
        body: B,
    ) -> Result<Response<ResponseBody<T, B>>, SendError<B>>
    where
        B: Body + Unpin,
        B::Error: Into<BoxError>,
    {
        let out = request_framing(&mut parts.headers, &body, parts.version);
        let expect = out != Out::None
            && parts.version == Version::HTTP_11
            && parts
                .headers
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        self.out.buf.clear();
        self.out.written = false;
        encode_request_head(
            &parts.method,
            &parts.uri,
            parts.version,
            &parts.headers,
            &mut self.out.buf,
        );
        let mut sending = Sending {
            body,
            out,
            trailers: None,
            held: expect,
            polled: false,
            queued: out == Out::None,
            complete: false,
        };
        let mut timer: Option<Pin<Box<Sleep>>> =
            expect.then(|| Box::pin(tokio::time::sleep(self.config.expect_continue_timeout)));
        let mut write_error: Option<Error> = None;
        let method = &parts.method;
        let head = poll_fn(|cx| loop {
            if write_error.is_none() {
                if let Some(t) = timer.as_mut() {
                    if t.as_mut().poll(cx).is_ready() {
                        sending.held = false;
                        timer = None;
                    }
                }
                match self.poll_send(&mut sending, cx) {
                    Poll::Ready(Err(e)) if e.is_io() => write_error = Some(e),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) | Poll::Pending => {}
                }
                if write_error.as_ref().is_some_and(|e| !peer_gone(e)) {
                    return Poll::Ready(Err(write_error.take().unwrap_or_else(Error::incomplete)));
                }
            }
            match ready!(self.poll_head(method, cx)) {
                Ok(head) if head.parts.status == StatusCode::CONTINUE => {
                    sending.held = false;
                    timer = None;
                }
                Ok(head)
                    if head.parts.status.is_informational()
                        && head.parts.status != StatusCode::SWITCHING_PROTOCOLS => {}
                Ok(head) => return Poll::Ready(Ok(head)),
                Err(e) => return Poll::Ready(Err(write_error.take().unwrap_or(e))),
            }
        })
        .await;
        let head = match head {
            Ok(head) => head,
            Err(error) => {
                let unsent = !self.out.written && !sending.polled;
                let body = unsent.then_some(sending.body);
                return Err(SendError {
                    error,
                    head: None,
                    body,
                });
            }
        };
        let ParsedResponse {
            parts: mut res,
            framing,
            keep_alive,
            ..
        } = head;
        let status = res.status;
        let switching = status == StatusCode::SWITCHING_PROTOCOLS
            || (parts.method == Method::CONNECT && status.is_success());
        if switching {
            let (tx, on_upgrade) = OnUpgrade::pair();
            res.extensions.insert(on_upgrade);
            let read_buf = self.rbuf.split().freeze();
            let _ = tx.send(Upgraded::new(Box::new(self.io), read_buf));
            return Ok(Response::from_parts(res, ResponseBody::empty()));
        }
        self.large_body = matches!(framing, BodyFraming::Length(n) if n > HEAD_READ as u64);
        let decoder = match framing {
            BodyFraming::Empty => None,
            BodyFraming::Length(n) => Some(Decode::Framed(Decoder::Length(n))),
            BodyFraming::Chunked => Some(Decode::Framed(Decoder::Chunked(
                ChunkedDecoder::new(self.config.max_chunk_extensions, self.config.max_trailers)
                    .max_trailer_fields(self.config.limits.max_headers),
            ))),
            BodyFraming::CloseDelimited => Some(Decode::Close),
        };
        // A body held for `100 Continue` that a final response overtook is not sent: the
        // backend may or may not wait for it, so the connection is not reused.
        let unsent_body = sending.held && !sending.queued;
        let reusable = keep_alive && write_error.is_none() && !unsent_body;
        let sending = (reusable && !sending.complete).then_some(sending);
        let mut body = ResponseBody {
            conn: Some(self),
            sending,
            decoder,
            reusable,
            finished: false,
        };
        body.finished = body.decoder.is_none();
        Ok(Response::from_parts(res, body))
    }
}

#[derive(Debug)]
enum Decode {
    Framed(Decoder),
    Close,
}

/// The body of a response, read off the connection as it is polled. See the
/// [module docs](self).
pub struct ResponseBody<T, B> {
    conn: Option<Box<Conn<T>>>,
    sending: Option<Sending<B>>,
    decoder: Option<Decode>,
    reusable: bool,
    finished: bool,
}

impl<T, B> std::fmt::Debug for ResponseBody<T, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("finished", &self.finished)
            .field("reusable", &self.reusable)
            .finish_non_exhaustive()
    }
}

impl<T, B> ResponseBody<T, B> {
    fn empty() -> Self {
        Self {
            conn: None,
            sending: None,
            decoder: None,
            reusable: false,
            finished: true,
        }
    }

    /// Whether the response was read to its end ([`Body::is_end_stream`], without bounds).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The connection, once the response was read to its end and the request sent in
    /// full, when it can carry another request; `None` otherwise (it is closed when this
    /// body is dropped).
    pub fn take_connection(&mut self) -> Option<Connection<T>> {
        let ready = self.finished && self.reusable && self.sending.is_none();
        let conn = self.conn.as_ref()?;
        if ready && conn.rbuf.is_empty() && conn.out.is_empty() {
            let mut conn = self.conn.take()?;
            // Back to the pool: a buffer grown past a head's room is given back (allocated
            // again at the next read), and the next head is read with room for a body as
            // large as this one's.
            conn.large = std::mem::take(&mut conn.large_body);
            if std::mem::take(&mut conn.grown) {
                conn.rbuf = BytesMut::new();
            }
            Some(Connection(conn))
        } else {
            None
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.finished = true;
        self.reusable = false;
        self.conn = None;
        self.sending = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl<T, B> Body for ResponseBody<T, B>
where
    T: AsyncRead + AsyncWrite + Unpin,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(s) = this.sending.as_mut() {
            match conn.poll_send(s, cx) {
                Poll::Ready(Ok(())) => this.sending = None,
                Poll::Ready(Err(_)) => {
                    // The upload broke off; the response may still be read, but the
                    // connection cannot carry another request.
                    this.sending = None;
                    this.reusable = false;
                }
                Poll::Pending => {}
            }
        }
        if this.finished {
            return Poll::Ready(None);
        }
        let Some(decoder) = this.decoder.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            let decoded = match decoder {
                Decode::Framed(d) => match d.decode(&mut conn.rbuf) {
                    Ok(decoded) => decoded,
                    Err(e) => return this.fail(Error::parse(e)),
                },
                Decode::Close if conn.rbuf.is_empty() => Decoded::NeedMore,
                Decode::Close => Decoded::Data(conn.rbuf.split().freeze()),
            };
            match decoded {
                Decoded::Data(data) => {
                    if matches!(decoder, Decode::Framed(Decoder::Length(0))) {
                        this.finished = true;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoded::Trailers(trailers) => {
                    this.finished = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Decoded::Done => {
                    this.finished = true;
                    return Poll::Ready(None);
                }
                Decoded::NeedMore => {
                    let want = read_size(decoder, conn.config.read_size);
                    conn.large_body |= want > HEAD_READ;
                    match ready!(conn.poll_read_more(want, cx)) {
                        Ok(0) if matches!(decoder, Decode::Close) => {
                            this.finished = true;
                            this.reusable = false;
                            return Poll::Ready(None);
                        }
                        Ok(0) => return this.fail(Error::incomplete()),
                        Ok(_) => {}
                        Err(e) => return this.fail(Error::io(e)),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }

    fn size_hint(&self) -> SizeHint {
        match &self.decoder {
            _ if self.finished => SizeHint::with_exact(0),
            Some(Decode::Framed(Decoder::Length(n))) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One GET on `conn`, its body read to the end; the connection back.
    async fn get(
        conn: Connection<tokio::io::DuplexStream>,
    ) -> (usize, Connection<tokio::io::DuplexStream>) {
        let req = Request::get("/")
            .header("host", "x")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let mut body = conn.send(req).await.unwrap().into_body();
        let mut got = 0;
        while let Some(frame) = body.frame().await {
            got += frame.unwrap().into_data().map_or(0, |d| d.len());
        }
        (got, body.take_connection().expect("kept alive"))
    }

    #[tokio::test]
    async fn an_idle_connection_keeps_no_large_read_buffer() {
        let (client, mut server) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            let large = vec![b'x'; 200_000];
            let mut answers = vec![
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nsmall".to_vec(),
                [
                    b"HTTP/1.1 200 OK\r\ncontent-length: 200000\r\n\r\n".as_slice(),
                    &large,
                ]
                .concat(),
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nsmall".to_vec(),
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nsmall".to_vec(),
            ]
            .into_iter();
            let mut buf = [0u8; 1024];
            while let Ok(n) = server.read(&mut buf).await {
                let Some(answer) = answers.next().filter(|_| n > 0) else {
                    return;
                };
                server.write_all(&answer).await.unwrap();
            }
        });
        let conn = Connection::new(client, ClientConfig::default());

        // A small answer is read with a head's room, which stays for the next one.
        let (got, conn) = get(conn).await;
        assert_eq!(got, 5);
        assert!(conn.0.rbuf.capacity() <= HEAD_READ);
        // A large one grows the buffer to the read size while it streams; idle, the
        // connection gives it back.
        let (got, conn) = get(conn).await;
        assert_eq!(got, 200_000);
        assert_eq!(conn.0.rbuf.capacity(), 0);
        // So the next head is read with room for another large body; a small answer
        // sets that back, and gives the room back too.
        assert!(conn.0.large);
        let (got, conn) = get(conn).await;
        assert_eq!(got, 5);
        assert!(!conn.0.large);
        assert_eq!(conn.0.rbuf.capacity(), 0);
        let (got, conn) = get(conn).await;
        assert_eq!(got, 5);
        assert!(conn.0.rbuf.capacity() <= HEAD_READ);
    }

    #[test]
    fn a_body_of_known_length_is_read_with_the_room_it_needs() {
        // The default read size.
        const MOST: usize = 64 * 1024;
        let length = |n| Decode::Framed(Decoder::Length(n));
        assert_eq!(read_size(&length(10), MOST), HEAD_READ);
        assert_eq!(read_size(&length(20_000), MOST), 20_000);
        assert_eq!(read_size(&length(10 << 20), MOST), 64 * 1024);
        assert_eq!(read_size(&Decode::Close, MOST), 64 * 1024);
    }
}
