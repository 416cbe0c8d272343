//! Request and response heads: a strict CRLF scan, httparse for the tokens (or a one-pass
//! reader for plainly formed heads), and the message body framing of RFC 9112 §6.
//!
//! **Line endings.** httparse (and so hyper) accepts a bare LF as a line terminator in
//! heads. This parser does not: every line of a head, of a chunk and of a trailer section
//! ends with CRLF, a LF without a CR before it is [`ParseError`] 400, and so is a CR not
//! followed by LF. RFC 9112 §2.2 lets a recipient accept bare LF; a proxy that did so
//! would read a message differently from a strict server behind it.
//!
//! A head that is whole in the buffer when it is first looked at is parsed in one pass.
//! When every line of it is plainly well formed (`HTTP/1.x DDD reason` or `METHOD target
//! HTTP/1.x` with a method of capital letters and a visible-ASCII target, then `name:
//! value` lines of `tchar` names and visible-ASCII, SP and HTAB values, each with a CRLF),
//! this module reads it itself, values eight bytes at a time; otherwise httparse finds its
//! end, and its line ends are checked where httparse found them. Either way it comes out
//! the same (tests compare them byte by byte). One that comes in parts, or that is
//! refused, is scanned for its end first, as it comes, which also bounds the work a head
//! sent a byte at a time costs; every refusal is httparse's or the scan's.
//!
//! **Empty lines** (CRLF) before a request line are skipped (RFC 9112 §2.2).
//!
//! **Zero copies.** The head is split off the read buffer as one `Bytes`; the request
//! target and every header value are slices of it (`from_maybe_shared`), and standard
//! header names are interned by `http`.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, response, Method, Request, Response, StatusCode, Uri, Version};

use crate::error::{ParseError, ParseKind};

/// The most header fields a head may carry, whatever [`Limits::max_headers`] says.
pub(crate) const MAX_HEADERS: usize = 128;

/// Size limits for heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_request_line: usize,
    max_head: usize,
    pub(crate) max_headers: usize,
}

impl Default for Limits {
    /// 8 KiB request line (nginx's), 64 KiB head, 100 header fields (hyper's).
    fn default() -> Self {
        Self {
            max_request_line: 8 * 1024,
            max_head: 64 * 1024,
            max_headers: 100,
        }
    }
}

impl Limits {
    /// The longest request line (or status line), CRLF included; longer is 414.
    pub fn max_request_line(mut self, bytes: usize) -> Self {
        self.max_request_line = bytes;
        self
    }

    /// The largest head, request line and header section together; larger is 431.
    pub fn max_head(mut self, bytes: usize) -> Self {
        self.max_head = bytes;
        self
    }

    /// The most header fields (at most 128); more is 431.
    pub fn max_headers(mut self, count: usize) -> Self {
        self.max_headers = count.min(MAX_HEADERS);
        self
    }
}

/// How the body of a message is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body at all.
    Empty,
    /// `Content-Length` bytes (never zero: that is `Empty`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the peer closes (responses only).
    CloseDelimited,
}

/// A parsed request head and what the connection needs to know about it.
#[derive(Debug)]
#[non_exhaustive]
pub struct ParsedRequest {
    /// Method, target, version and header fields.
    pub parts: request::Parts,
    /// How the body is delimited.
    pub framing: BodyFraming,
    /// Whether the client allows the connection to carry another request.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub expect_continue: bool,
}

/// A parsed response head and what the connection needs to know about it.
#[derive(Debug)]
#[non_exhaustive]
pub struct ParsedResponse {
    /// Status, version and header fields.
    pub parts: response::Parts,
    /// How the body is delimited.
    pub framing: BodyFraming,
    /// Whether the server allows the connection to carry another request. False when the
    /// body is close-delimited, or when both `Transfer-Encoding` and `Content-Length` were
    /// sent (the transfer coding wins, and the connection is not trusted afterwards).
    pub keep_alive: bool,
}

/// A resumable scan for the end of a head: strict CRLF, and the length of the first line.
#[derive(Debug, Default)]
pub(crate) struct LineScan {
    scanned: usize,
    first_line: Option<usize>,
}

impl LineScan {
    /// The length of the head (up to and including the empty line) once it is complete.
    /// Bytes already scanned are not scanned again; start a new scan for the next head.
    pub(crate) fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ParseKind> {
        let mut from = self.scanned;
        while let Some(i) = next_cr_or_lf(buf, from) {
            // The LF that ends this line: the one right after a CR (a CRLF is one step,
            // not a search for the CR and another for its LF), or a bare one.
            let lf = if buf[i] == b'\r' {
                match buf.get(i + 1) {
                    Some(b'\n') => i + 1,
                    Some(_) => return Err(ParseKind::BareCr),
                    // Look at it again once the next byte is in.
                    None => {
                        self.scanned = i;
                        return Ok(None);
                    }
                }
            } else if i == 0 || buf[i - 1] != b'\r' {
                return Err(ParseKind::BareLf);
            } else {
                i
            };
            if self.first_line.is_none() {
                self.first_line = Some(lf + 1);
            }
            if lf >= 3 && buf[lf - 2] == b'\n' {
                return Ok(Some(lf + 1));
            }
            from = lf + 1;
        }
        self.scanned = buf.len();
        Ok(None)
    }

    fn first_line(&self) -> Option<usize> {
        self.first_line
    }
}

/// The position of the next CR or LF in `buf` from `from`: eight bytes at a time (a
/// byte-by-byte loop was most of a head's parse), the position in the word read off its
/// mask, then byte by byte for the last few.
fn next_cr_or_lf(buf: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    const CRS: u64 = u64::from_le_bytes([b'\r'; 8]);
    const LFS: u64 = u64::from_le_bytes([b'\n'; 8]);
    // The high bit of the bytes of `v` that are zero, and maybe of some bytes after the
    // first such; a borrow runs only upwards, so the lowest bit set is exact.
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let rest = buf.get(from..)?;
    let mut words = rest.chunks_exact(8);
    let mut at = from;
    for word in words.by_ref() {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        let word = u64::from_le_bytes(bytes);
        let found = zero_byte(word ^ CRS) | zero_byte(word ^ LFS);
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .map(|i| at + i)
}

/// The bytes of a field value that need a second look, eight at a time: controls (HTAB
/// among them, and the CR that ends the value), DEL and everything from 0x80. The lowest
/// byte flagged is exact (a borrow runs only upwards).
fn value_stop(word: u64) -> u64 {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    const SPACES: u64 = u64::from_le_bytes([0x20; 8]);
    const DELS: u64 = u64::from_le_bytes([0x7f; 8]);
    let below_space = word.wrapping_sub(SPACES) & !word & HIGHS;
    let del = (word ^ DELS).wrapping_sub(ONES) & !(word ^ DELS) & HIGHS;
    below_space | del | (word & HIGHS)
}

/// The end of the field value that starts at `from` (the CR after it), when every byte of
/// it is a visible ASCII character, SP or HTAB and a CRLF ends it; `None` for anything
/// else (obs-text, a bare CR or LF, a control), which the general parser then reports.
fn value_end(head: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        if let Some(word) = head.get(at..at + 8) {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(word);
            let stop = value_stop(u64::from_le_bytes(bytes));
            if stop == 0 {
                at += 8;
                continue;
            }
            at += (stop.trailing_zeros() / 8) as usize;
        } else {
            at += head
                .get(at..)?
                .iter()
                .position(|&b| !(0x20..0x7f).contains(&b))?;
        }
        match head.get(at..at + 2)? {
            [b'\r', b'\n'] => return Some(at),
            [b'\t', _] => at += 1,
            _ => return None,
        }
    }
}

/// The bytes of a token (a field name, a chunk extension's name): RFC 9110's `tchar`.
pub(crate) static TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

/// What of `buf` a plain head may take: the head size limit, and at most 64 KiB so that
/// every offset fits a [`Span`].
fn plain_window<'a>(buf: &'a [u8], limits: &Limits) -> &'a [u8] {
    &buf[..buf.len().min(limits.max_head).min(usize::from(u16::MAX))]
}

/// The field lines of a whole head from `at` (just after its first line, within the
/// request-line limit) to the empty line that ends it: their spans into `spans`, and the
/// head's length. `None` unless the first line is within its limit, every field line is
/// plainly well formed (`name: value` with a CRLF, nothing httparse would refuse or read
/// differently) and there are at most `limits.max_headers` of them; the general parser
/// takes every other head.
fn plain_fields(
    head: &[u8],
    mut at: usize,
    spans: &mut [Span; SPANS],
    limits: &Limits,
) -> Option<(usize, usize)> {
    if at > limits.max_request_line {
        return None;
    }
    let max = limits.max_headers.min(SPANS);
    let mut count = 0;
    loop {
        if head.get(at..at + 2)? == b"\r\n" {
            return Some((count, at + 2));
        }
        let name_start = at;
        while TCHAR[usize::from(*head.get(at)?)] {
            at += 1;
        }
        if at == name_start || head[at] != b':' || count == max {
            return None;
        }
        let name_end = at;
        at += 1;
        while matches!(head.get(at), Some(b' ' | b'\t')) {
            at += 1;
        }
        let value_start = at;
        let end = value_end(head, at)?;
        let mut value_end = end;
        while value_end > value_start && matches!(head[value_end - 1], b' ' | b'\t') {
            value_end -= 1;
        }
        // Within a `plain_window`: no offset is cut short.
        spans[count] = Span(
            name_start as u16,
            name_end as u16,
            value_start as u16,
            value_end as u16,
        );
        count += 1;
        at = end + 2;
    }
}

/// A response head read by [`plain_response`].
struct PlainResponse {
    code: u16,
    minor: u8,
    /// The head's length, its empty line included.
    len: usize,
    fields: usize,
}

/// A whole response head at the front of `buf` read without httparse, when it is plainly
/// well formed: `HTTP/1.x`, a three-digit code, a reason of visible ASCII, SP and HTAB,
/// and [`plain_fields`]. `None` for anything else, partial heads included.
fn plain_response(buf: &[u8], limits: &Limits, spans: &mut [Span; SPANS]) -> Option<PlainResponse> {
    let head = plain_window(buf, limits);
    let [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor @ (b'0' | b'1'), b' ', d0 @ b'0'..=b'9', d1 @ b'0'..=b'9', d2 @ b'0'..=b'9', b' ', ..] =
        *head
    else {
        return None;
    };
    let code = u16::from(d0 - b'0') * 100 + u16::from(d1 - b'0') * 10 + u16::from(d2 - b'0');
    let reason_end = 13
        + head
            .get(13..)?
            .iter()
            .position(|&b| !(b == b'\t' || (0x20..0x7f).contains(&b)))?;
    if head.get(reason_end..reason_end + 2)? != b"\r\n" {
        return None;
    }
    let (fields, len) = plain_fields(head, reason_end + 2, spans, limits)?;
    Some(PlainResponse {
        code,
        minor: minor - b'0',
        len,
        fields,
    })
}

/// A request head read by [`plain_request`].
struct PlainRequest {
    /// The method's and the target's ends (the method starts the head, the target one
    /// byte after the method's end).
    method_end: usize,
    target_end: usize,
    minor: u8,
    len: usize,
    fields: usize,
}

/// A whole request head at the front of `buf` read without httparse, when it is plainly
/// well formed: a method of capital letters, a target of visible ASCII, `HTTP/1.x`, and
/// [`plain_fields`]. `None` for anything else, partial heads included.
fn plain_request(buf: &[u8], limits: &Limits, spans: &mut [Span; SPANS]) -> Option<PlainRequest> {
    let head = plain_window(buf, limits);
    let method_end = head.iter().position(|b| !b.is_ascii_uppercase())?;
    if method_end == 0 || head[method_end] != b' ' {
        return None;
    }
    let target = method_end + 1;
    let target_end = target
        + head
            .get(target..)?
            .iter()
            .position(|b| !(0x21..0x7f).contains(b))?;
    let version = head.get(target_end..target_end + 11)?;
    let [b' ', b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor @ (b'0' | b'1'), b'\r', b'\n'] =
        *version
    else {
        return None;
    };
    if target_end == target {
        return None;
    }
    let (fields, len) = plain_fields(head, target_end + 11, spans, limits)?;
    Some(PlainRequest {
        method_end,
        target_end,
        minor: minor - b'0',
        len,
        fields,
    })
}

/// Parses request heads (server side) and response heads (client side) out of a read
/// buffer, resuming where the last call stopped.
#[derive(Debug, Default)]
pub struct HeadParser {
    limits: Limits,
    scan: LineScan,
    /// The field names of the last response head, by position, as sent and as parsed: a
    /// backend sends the same fields in the same order and case response after response,
    /// so the name at each position is compared byte for byte with the one before and,
    /// when equal, cloned instead of parsed (a name `http` does not know, such as
    /// `x-backend`, would otherwise be allocated each time).
    names: Names,
}

/// Field names as sent and as parsed, by position in their head.
type Names = Vec<(Box<[u8]>, HeaderName)>;

/// The most response field names [`HeadParser`] remembers.
const REMEMBERED_NAMES: usize = 32;

impl HeadParser {
    /// A parser with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            scan: LineScan::default(),
            names: Vec::new(),
        }
    }

    /// Finds the complete head at the front of `buf`, checking limits while it is partial.
    fn head_len(
        &mut self,
        buf: &[u8],
        line_too_long: ParseKind,
    ) -> Result<Option<usize>, ParseError> {
        let found = self.scan.scan(buf).map_err(ParseError::new)?;
        let line = self.scan.first_line().unwrap_or(buf.len());
        if found.is_some() {
            self.scan = LineScan::default();
        }
        if line > self.limits.max_request_line {
            return Err(ParseError::new(line_too_long));
        }
        match found {
            Some(len) if len <= self.limits.max_head => Ok(Some(len)),
            Some(_) => Err(ParseError::new(ParseKind::HeadTooLarge)),
            None if buf.len() > self.limits.max_head => {
                Err(ParseError::new(ParseKind::HeadTooLarge))
            }
            None => Ok(None),
        }
    }

    /// Parses a request head off the front of `buf`. `Ok(None)`: more bytes are needed.
    /// The head's bytes are removed from `buf`; the body's are left.
    pub fn parse_request(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<ParsedRequest>, ParseError> {
        if self.scan.scanned == 0 {
            while buf.starts_with(b"\r\n") {
                buf.advance(2);
            }
            if buf.first() == Some(&b'\n') {
                return Err(ParseError::new(ParseKind::BareLf));
            }
        }
        if self.scan.scanned == 0 {
            if let Some(parsed) = self.whole_request(buf) {
                return parsed.map(Some);
            }
        }
        let Some(len) = self.head_len(buf, ParseKind::UriTooLong)? else {
            return Ok(None);
        };
        let head = buf.split_to(len).freeze();
        // Left uninitialised: httparse writes the fields it finds (4 KiB not zeroed twice
        // per proxied request).
        let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(&head, &mut raw[..self.limits.max_headers]) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(ParseError::new(ParseKind::HeaderValue)),
            Err(httparse::Error::Token) if req.method.is_none() => {
                return Err(ParseError::new(ParseKind::Method))
            }
            Err(httparse::Error::Token) => return Err(ParseError::new(ParseKind::Uri)),
            Err(e) => return Err(from_httparse(e)),
        }
        let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes());
        let target = head.slice_ref(req.path.unwrap_or_default().as_bytes());
        let fields = req
            .headers
            .iter()
            .map(|h| (h.name.as_bytes(), head.slice_ref(h.value)));
        finish_request(method, target, req.version, fields).map(Some)
    }

    /// A request head that is whole in `buf`, parsed in one pass: httparse finds its end,
    /// and its line ends are checked where httparse found them rather than scanned for
    /// first. `None` when it is not whole or not all fine (over a limit, a bare LF, or
    /// anything httparse refuses): the scan then finds and reports it as before.
    fn whole_request(&mut self, buf: &mut BytesMut) -> Option<Result<ParsedRequest, ParseError>> {
        let mut spans = [Span::default(); SPANS];
        if let Some(plain) = plain_request(buf, &self.limits, &mut spans) {
            let method = Method::from_bytes(&buf[..plain.method_end]);
            let head = buf.split_to(plain.len).freeze();
            let target = head.slice(plain.method_end + 1..plain.target_end);
            let fields = spans[..plain.fields].iter().map(|s| s.field(&head));
            return Some(finish_request(method, target, Some(plain.minor), fields));
        }
        let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let parsed = req.parse_with_uninit_headers(buf, &mut raw[..self.limits.max_headers]);
        let Ok(httparse::Status::Complete(len)) = parsed else {
            return None;
        };
        let count = req.headers.len();
        let first_line = self.whole_head_spans(buf, len, req.headers, &mut spans)?;
        if first_line > self.limits.max_request_line {
            return None;
        }
        // Owned before the head leaves the buffer (a standard method is not allocated).
        let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes());
        let target = Span::of(buf, req.path.unwrap_or_default().as_bytes())?;
        let version = req.version;
        let head = buf.split_to(len).freeze();
        let target = head.slice(target.0..target.1);
        let fields = spans[..count].iter().map(|s| s.field(&head));
        Some(finish_request(method, target, version, fields))
    }

    /// The spans of the fields of the whole head `buf[..len]` that httparse parsed, and
    /// the length of its first line, when every line of it ends with CRLF and it is within
    /// the head size limit. httparse takes a CR only before an LF, and ends a line at any
    /// LF: a line before a field ended with CRLF when the field's name comes after one,
    /// and the last lines when the head ends with two.
    fn whole_head_spans(
        &self,
        buf: &[u8],
        len: usize,
        raw: &[httparse::Header<'_>],
        spans: &mut [Span; SPANS],
    ) -> Option<usize> {
        // (httparse skips empty lines before the first: those are the scan's to check.)
        let starts_with_line = matches!(buf.first(), Some(b'\r' | b'\n') | None);
        let too_large = len > self.limits.max_head || len > usize::from(u16::MAX);
        if starts_with_line || too_large || !buf[..len].ends_with(b"\r\n\r\n") {
            return None;
        }
        let head = &buf[..len];
        for (span, h) in spans.get_mut(..raw.len())?.iter_mut().zip(raw) {
            let name = Span::of(head, h.name.as_bytes())?;
            if name.0 < 2 || head[name.0 - 2..name.0] != *b"\r\n" {
                return None;
            }
            let value = Span::of(head, h.value)?;
            // Within the head, at most 64 KiB: no offset is cut short.
            *span = Span(name.0 as u16, name.1 as u16, value.0 as u16, value.1 as u16);
        }
        Some(if raw.is_empty() {
            len - 2
        } else {
            spans[0].0 as usize
        })
    }

    /// Parses a response head off the front of `buf`, for a request with `method`.
    /// `Ok(None)`: more bytes are needed. A 1xx head is returned like any other (with
    /// [`BodyFraming::Empty`]); the caller reads the next head after it.
    pub fn parse_response(
        &mut self,
        buf: &mut BytesMut,
        method: &Method,
    ) -> Result<Option<ParsedResponse>, ParseError> {
        if self.scan.scanned == 0 {
            if let Some(parsed) = self.whole_response(buf, method) {
                return parsed.map(Some);
            }
        }
        let Some(len) = self.head_len(buf, ParseKind::Status)? else {
            return Ok(None);
        };
        let head = buf.split_to(len).freeze();
        let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut res,
            &head,
            &mut raw[..self.limits.max_headers],
        ) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(ParseError::new(ParseKind::HeaderValue)),
            Err(e) => return Err(from_httparse(e)),
        }
        let fields = res
            .headers
            .iter()
            .map(|h| (h.name.as_bytes(), head.slice_ref(h.value)));
        let line = (res.code, res.version);
        finish_response(line, fields, method, &mut self.names).map(Some)
    }

    /// [`whole_request`](Self::whole_request) for a response head.
    fn whole_response(
        &mut self,
        buf: &mut BytesMut,
        method: &Method,
    ) -> Option<Result<ParsedResponse, ParseError>> {
        let mut spans = [Span::default(); SPANS];
        if let Some(plain) = plain_response(buf, &self.limits, &mut spans) {
            let line = (Some(plain.code), Some(plain.minor));
            let head = buf.split_to(plain.len).freeze();
            let fields = spans[..plain.fields].iter().map(|s| s.field(&head));
            return Some(finish_response(line, fields, method, &mut self.names));
        }
        let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut res,
            buf,
            &mut raw[..self.limits.max_headers],
        );
        let Ok(httparse::Status::Complete(len)) = parsed else {
            return None;
        };
        let count = res.headers.len();
        let first_line = self.whole_head_spans(buf, len, res.headers, &mut spans)?;
        if first_line > self.limits.max_request_line {
            return None;
        }
        let line = (res.code, res.version);
        let head = buf.split_to(len).freeze();
        let fields = spans[..count].iter().map(|s| s.field(&head));
        Some(finish_response(line, fields, method, &mut self.names))
    }
}

/// The rest of a response head once httparse has read it (its status code and version):
/// the status checked, the header map built (with the names remembered in `names`), the
/// framing decided for a request with `method`.
fn finish_response<'a>(
    (code, version): (Option<u16>, Option<u8>),
    fields: impl ExactSizeIterator<Item = (&'a [u8], Bytes)>,
    method: &Method,
    names: &mut Names,
) -> Result<ParsedResponse, ParseError> {
    let status = code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(ParseError::new(ParseKind::Status))?;
    let version = if version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let room = response_room(fields.len());
    let (headers, fields) = build_headers(fields, true, room, Some(names))?;

    let mut keep_alive = !fields.close && (version == Version::HTTP_11 || fields.keep_alive);
    let no_body = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || (*method == Method::CONNECT && status.is_success());
    let framing = if no_body {
        BodyFraming::Empty
    } else if let Some(te) = fields.te {
        // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length; a message with
        // both may be an attempt at smuggling, so the connection is not reused.
        if fields.content_length.is_some() {
            keep_alive = false;
        }
        if te.chunked_last && !te.invalid {
            BodyFraming::Chunked
        } else {
            keep_alive = false;
            BodyFraming::CloseDelimited
        }
    } else {
        match fields.content_length {
            Some(0) => BodyFraming::Empty,
            Some(n) => BodyFraming::Length(n),
            None => {
                keep_alive = false;
                BodyFraming::CloseDelimited
            }
        }
    };
    let mut parts = Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(ParsedResponse {
        parts,
        framing,
        keep_alive,
    })
}

/// Where a field's name and value are in its head: the name's start and end, the value's
/// (16 bits each: a head parsed in one pass is at most 64 KiB).
#[derive(Debug, Default, Clone, Copy)]
struct Span(u16, u16, u16, u16);

/// The most fields of a head parsed in one pass; a head with more is scanned first.
const SPANS: usize = 32;

impl Span {
    /// The start and end of `part`, a slice of `buf`, in `buf` (`None` if it is not).
    #[inline]
    fn of(buf: &[u8], part: &[u8]) -> Option<(usize, usize)> {
        let start = (part.as_ptr() as usize).checked_sub(buf.as_ptr() as usize)?;
        let end = start.checked_add(part.len())?;
        (end <= buf.len()).then_some((start, end))
    }

    /// The field's name and value, out of its head.
    #[inline]
    fn field(self, head: &Bytes) -> (&[u8], Bytes) {
        let (name, value) = (
            self.0 as usize..self.1 as usize,
            self.2 as usize..self.3 as usize,
        );
        (&head[name], head.slice(value))
    }
}

/// The rest of a request head once httparse has read it: the method, the target and
/// the version checked, the header map built, the framing decided.
fn finish_request<'a>(
    method: Result<Method, http::method::InvalidMethod>,
    target: Bytes,
    version: Option<u8>,
    fields: impl ExactSizeIterator<Item = (&'a [u8], Bytes)>,
) -> Result<ParsedRequest, ParseError> {
    let method = method.map_err(|_| ParseError::new(ParseKind::Method))?;
    let uri = Uri::from_maybe_shared(target).map_err(|_| ParseError::new(ParseKind::Uri))?;
    check_target_form(&method, &uri)?;
    let version = if version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let (headers, fields) = build_headers(fields, false, REQUEST_ROOM, None)?;

    let http11 = version == Version::HTTP_11;
    let framing = match (fields.te, fields.content_length) {
        (Some(_), _) if !http11 => return Err(ParseError::new(ParseKind::TransferEncodingHttp10)),
        (Some(_), Some(_)) => {
            return Err(ParseError::new(ParseKind::ContentLengthAndTransferEncoding))
        }
        (Some(te), None) => {
            // RFC 9112 §6.3: chunked not last is a 400 (a MUST); §6.1: a coding the
            // server does not implement before it is a 501.
            if !te.chunked_last || te.invalid {
                return Err(ParseError::new(ParseKind::TransferEncodingInvalid));
            }
            if te.unknown || te.other {
                return Err(ParseError::new(ParseKind::TransferEncodingUnknown));
            }
            BodyFraming::Chunked
        }
        (None, Some(0)) | (None, None) => BodyFraming::Empty,
        (None, Some(n)) => BodyFraming::Length(n),
    };
    if fields.hosts > 1 || (http11 && fields.hosts == 0) || fields.bad_host {
        return Err(ParseError::new(ParseKind::Host));
    }
    let keep_alive = !fields.close && (http11 || fields.keep_alive);
    let mut parts = Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(ParsedRequest {
        parts,
        framing,
        keep_alive,
        expect_continue: http11 && fields.expect_continue,
    })
}

fn from_httparse(err: httparse::Error) -> ParseError {
    ParseError::new(match err {
        httparse::Error::HeaderName => ParseKind::HeaderName,
        httparse::Error::HeaderValue | httparse::Error::NewLine | httparse::Error::Token => {
            ParseKind::HeaderValue
        }
        httparse::Error::Status => ParseKind::Status,
        httparse::Error::TooManyHeaders => ParseKind::TooManyHeaders,
        httparse::Error::Version => ParseKind::Version,
    })
}

/// RFC 9112 §3.2: origin-form (`/path`), absolute-form, authority-form for CONNECT only,
/// asterisk-form for OPTIONS only.
fn check_target_form(method: &Method, uri: &Uri) -> Result<(), ParseError> {
    let ok = if *method == Method::CONNECT {
        uri.scheme().is_none() && uri.authority().is_some() && uri.path_and_query().is_none()
    } else if uri.scheme().is_some() {
        uri.authority().is_some()
    } else if uri.authority().is_some() {
        false
    } else if uri.path() == "*" {
        *method == Method::OPTIONS
    } else {
        uri.path().starts_with('/')
    };
    if ok {
        Ok(())
    } else {
        Err(ParseError::new(ParseKind::Uri))
    }
}

/// What the framing-relevant fields of a head said.
#[derive(Debug, Default)]
struct Fields {
    te: Option<Codings>,
    content_length: Option<u64>,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
    hosts: usize,
    bad_host: bool,
}

/// The transfer codings named by all `Transfer-Encoding` lines together.
#[derive(Debug, Default, Clone, Copy)]
struct Codings {
    /// `chunked` is the last coding.
    chunked_last: bool,
    /// `chunked` is followed by another coding, or the list has an empty element.
    invalid: bool,
    /// A known coding other than `chunked` (gzip, deflate, compress) that this engine
    /// does not decode.
    other: bool,
    /// A coding nobody registered.
    unknown: bool,
}

impl Codings {
    fn add(&mut self, value: &[u8]) {
        for coding in value.split(|&b| b == b',') {
            let coding = trim_ows(coding);
            if self.chunked_last || coding.is_empty() {
                self.invalid = true;
            }
            self.chunked_last = false;
            if coding.eq_ignore_ascii_case(b"chunked") {
                self.chunked_last = true;
            } else if [
                &b"gzip"[..],
                b"x-gzip",
                b"deflate",
                b"compress",
                b"x-compress",
            ]
            .iter()
            .any(|known| coding.eq_ignore_ascii_case(known))
            {
                self.other = true;
            } else {
                self.unknown = true;
            }
        }
    }
}

pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Decimal digits only: no sign, no whitespace, no overflow.
pub(crate) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

/// Whether a comma-separated header value carries `token` (case-insensitive).
pub(crate) fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| trim_ows(t).eq_ignore_ascii_case(token.as_bytes()))
}

/// Room left in a request's header map for the fields a proxy adds before forwarding it
/// (`X-Forwarded-For`, `-Proto`, `-Host`, `traceparent`, `Via`), so that adding them does
/// not grow (rehash) the map. No more than that: a request of one field (`Host`) then
/// gets the smallest table (8 slots, room for 6 fields), whose entries (under 1 KiB) are
/// a small allocation, where one more slot of room would double it.
const REQUEST_ROOM: usize = 5;
/// Room left in a response's header map for the fields added on the way back (`Via`,
/// `Date`, a trace's or a cache's own).
const RESPONSE_ROOM: usize = 4;
/// The fields the smallest header table holds (8 slots): its entries are a small
/// allocation (under 1 KiB), the next table's (16 slots, 12 fields) a large one.
const SMALL_TABLE: usize = 6;

/// The room a response of `fields` fields gets: the smallest table when that leaves room
/// for the two fields every proxied response may get (`Via`, and `Date` where the
/// backend sent none), else [`RESPONSE_ROOM`].
fn response_room(fields: usize) -> usize {
    match SMALL_TABLE.checked_sub(fields) {
        Some(room) if room >= 2 => room,
        _ => RESPONSE_ROOM,
    }
}

/// Builds the header map from the fields' names and values (slices of their head), and
/// notes the framing fields.
/// `cl_lists`: accept `Content-Length: 5, 5` (responses, as hyper's client does);
/// requests accept only repeated lines with the same value. `room`: capacity beyond the
/// fields parsed. `names`: the names of the last head parsed, by position, reused where
/// they match and updated where they do not.
fn build_headers<'a>(
    raw: impl ExactSizeIterator<Item = (&'a [u8], Bytes)>,
    cl_lists: bool,
    room: usize,
    mut names: Option<&mut Names>,
) -> Result<(HeaderMap, Fields), ParseError> {
    let mut headers = HeaderMap::with_capacity(raw.len() + room);
    let mut fields = Fields::default();
    for (i, (name, value)) in raw.enumerate() {
        let name = field_name(name, i, names.as_deref_mut())?;
        let value = field_value(value);
        let bytes = value.as_bytes();
        match name {
            header::TRANSFER_ENCODING => fields.te.get_or_insert_with(Codings::default).add(bytes),
            header::CONTENT_LENGTH => {
                let mut each = |v: &[u8]| -> Result<(), ParseError> {
                    let n = parse_decimal(v).ok_or(ParseError::new(ParseKind::ContentLength))?;
                    match fields.content_length {
                        Some(prev) if prev != n => Err(ParseError::new(ParseKind::ContentLength)),
                        _ => {
                            fields.content_length = Some(n);
                            Ok(())
                        }
                    }
                };
                if cl_lists {
                    bytes
                        .split(|&b| b == b',')
                        .try_for_each(|v| each(trim_ows(v)))?;
                } else {
                    each(bytes)?;
                }
            }
            header::CONNECTION => {
                fields.close |= has_token(bytes, "close");
                fields.keep_alive |= has_token(bytes, "keep-alive");
            }
            header::EXPECT => fields.expect_continue = bytes.eq_ignore_ascii_case(b"100-continue"),
            header::HOST => {
                fields.hosts += 1;
                fields.bad_host |= !bytes.is_empty()
                    && (bytes.contains(&b'@') || http::uri::Authority::try_from(bytes).is_err());
            }
            _ => {}
        }
        headers.append(name, value);
    }
    Ok((headers, fields))
}

/// A field value, out of a head that the plain reader or httparse has read: both take a
/// value's bytes only from HTAB, SP to `~` and obs-text (httparse's `HEADER_VALUE_MAP`,
/// `plain_fields`' `value_end`), the bytes `HeaderValue` accepts, so it is not checked a
/// second time (a tenth of a response head's parsing). Debug builds, the tests and the
/// fuzz targets among them, do check it, and panic if a reader ever let another byte by.
#[allow(unsafe_code)]
fn field_value(value: Bytes) -> HeaderValue {
    // SAFETY: `from_maybe_shared_unchecked` asks for valid header value bytes, and both
    // head readers pass on no others (above). Its own check runs in debug builds, and
    // panics on any other.
    unsafe { HeaderValue::from_maybe_shared_unchecked(value) }
}

/// The field name `raw`, at position `i` of its head: the name at `i` in `names` when it
/// was sent as the same bytes, else parsed, and remembered at `i`.
fn field_name(raw: &[u8], i: usize, names: Option<&mut Names>) -> Result<HeaderName, ParseError> {
    let parse =
        |raw| HeaderName::from_bytes(raw).map_err(|_| ParseError::new(ParseKind::HeaderName));
    let Some(names) = names else {
        return parse(raw);
    };
    match names.get(i) {
        Some((sent, name)) if **sent == *raw => return Ok(name.clone()),
        _ => {}
    }
    let name = parse(raw)?;
    let entry = (Box::from(raw), name.clone());
    if i < names.len() {
        names[i] = entry;
    } else if i == names.len() && i < REMEMBERED_NAMES {
        names.push(entry);
    }
    Ok(name)
}

/// Header fields for trailers: the same zero-copy slicing as heads, minus the fields a
/// trailer section must not carry (RFC 9110 §6.5.1: framing, routing, connection).
pub(crate) fn build_trailers(
    head: &Bytes,
    raw: &[httparse::Header<'_>],
) -> Result<HeaderMap, ParseError> {
    let mut map = HeaderMap::with_capacity(raw.len());
    for h in raw {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| ParseError::new(ParseKind::Trailers))?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(h.value))
            .map_err(|_| ParseError::new(ParseKind::Trailers))?;
        let forbidden = matches!(
            name,
            header::CONTENT_LENGTH
                | header::TRANSFER_ENCODING
                | header::HOST
                | header::CONNECTION
                | header::TE
                | header::TRAILER
                | header::UPGRADE
        ) || name.as_str() == "keep-alive";
        if !forbidden {
            map.append(name, value);
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(bytes: &[u8]) -> Result<Option<ParsedRequest>, ParseError> {
        HeadParser::default().parse_request(&mut BytesMut::from(bytes))
    }

    #[test]
    fn the_word_scan_finds_every_cr_and_lf() {
        // Each of CR and LF at every position of buffers longer and shorter than a word,
        // after bytes one bit away from CR or LF, and before a second CR or LF.
        for len in 0..40 {
            for at in 0..len {
                for byte in [b'\r', b'\n'] {
                    for fill in [b'a', 0x0c, 0x0b, 0x0e, 0x8d] {
                        let mut buf = vec![fill; len];
                        buf[at] = byte;
                        if at + 1 < len {
                            buf[at + 1] = b'\n';
                        }
                        for from in 0..=len {
                            let want = if from <= at {
                                Some(at)
                            } else {
                                (from == at + 1 && at + 1 < len).then_some(at + 1)
                            };
                            assert_eq!(next_cr_or_lf(&buf, from), want, "{len} {at} {from}");
                        }
                    }
                }
            }
        }
        // Bytes that differ from CR or LF by one bit, and 0x80 and above, are not either.
        let near: Vec<u8> = (0..=255u8).filter(|b| *b != b'\r' && *b != b'\n').collect();
        assert_eq!(next_cr_or_lf(&near, 0), None);
    }

    /// The scan one byte at a time, as the rules say it: every LF after a CR, every CR
    /// before an LF, the head ends at the first empty line.
    fn scan_by_bytes(buf: &[u8]) -> Result<Option<usize>, ParseKind> {
        for (i, &b) in buf.iter().enumerate() {
            match b {
                b'\r' => match buf.get(i + 1) {
                    Some(b'\n') | None => {}
                    Some(_) => return Err(ParseKind::BareCr),
                },
                b'\n' if i == 0 || buf[i - 1] != b'\r' => return Err(ParseKind::BareLf),
                b'\n' if i >= 3 && buf[i - 2] == b'\n' => return Ok(Some(i + 1)),
                _ => {}
            }
        }
        Ok(None)
    }

    #[test]
    fn the_word_scan_agrees_with_a_byte_by_byte_scan() {
        // Pseudo-random heads of letters, CRs, LFs and CRLFs, fed whole and in two parts.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 48) as usize;
            let buf: Vec<u8> = (0..len)
                .map(|_| match next() % 16 {
                    0 => b'\r',
                    1 => b'\n',
                    2..=5 => [b'\r', b'\n'][(next() % 2) as usize],
                    _ => b'a',
                })
                .collect();
            let want = scan_by_bytes(&buf);
            assert_eq!(LineScan::default().scan(&buf), want, "{buf:?}");
            let cut = (next() as usize) % (len + 1);
            let mut scan = LineScan::default();
            let first = scan.scan(&buf[..cut]);
            let got = match first {
                Ok(None) => scan.scan(&buf),
                done => done,
            };
            // Whatever the first part decides, the whole would have decided too.
            assert_eq!(got, want, "{buf:?} cut at {cut}");
        }
    }

    /// A head parsed whole (in one pass) and fed in two parts (scanned first): the same
    /// outcome, the same fields, the same bytes left.
    fn same_whole_and_in_parts(bytes: &[u8], response: bool) {
        let show = |parsed: Result<Option<(String, String)>, ParseError>| match parsed {
            Ok(Some(p)) => format!("Ok {p:?}"),
            Ok(None) => "partial".to_owned(),
            Err(e) => format!("{:?} {}", e.status(), e),
        };
        let parse = |parser: &mut HeadParser, buf: &mut BytesMut| {
            if response {
                parser
                    .parse_response(buf, &Method::GET)
                    .map(|r| r.map(|r| (format!("{:?}", r.parts), format!("{:?}", r.framing))))
            } else {
                parser
                    .parse_request(buf)
                    .map(|r| r.map(|r| (format!("{:?}", r.parts), format!("{:?}", r.framing))))
            }
        };
        let mut whole = BytesMut::from(bytes);
        let want = show(parse(&mut HeadParser::default(), &mut whole));
        for cut in 1..bytes.len() {
            let mut parser = HeadParser::default();
            let mut buf = BytesMut::from(&bytes[..cut]);
            let got = match parse(&mut parser, &mut buf) {
                Ok(None) => {
                    buf.extend_from_slice(&bytes[cut..]);
                    parse(&mut parser, &mut buf)
                }
                other => {
                    buf.extend_from_slice(&bytes[cut..]);
                    other
                }
            };
            let got = show(got);
            assert_eq!(
                got,
                want,
                "{:?} cut at {cut}",
                String::from_utf8_lossy(bytes)
            );
            if !got.starts_with("Ok") {
                continue;
            }
            assert_eq!(
                buf,
                whole,
                "{:?} cut at {cut}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    /// A head parsed whole (the plain reader, or httparse when it declines) and
    /// by the general path (one byte first, so that the scan takes it): the same outcome,
    /// the same fields, the same bytes left.
    fn same_plain_and_general(bytes: &[u8], response: bool) {
        let parse = |parser: &mut HeadParser, buf: &mut BytesMut| {
            let parsed = if response {
                parser
                    .parse_response(buf, &Method::GET)
                    .map(|r| r.map(|r| format!("{:?} {:?} {}", r.parts, r.framing, r.keep_alive)))
            } else {
                parser.parse_request(buf).map(|r| {
                    r.map(|r| {
                        let ParsedRequest {
                            parts,
                            framing,
                            keep_alive,
                            expect_continue,
                        } = r;
                        format!("{parts:?} {framing:?} {keep_alive} {expect_continue}")
                    })
                })
            };
            match parsed {
                Ok(Some(r)) => format!("Ok {r}"),
                Ok(None) => "partial".to_owned(),
                Err(e) => format!("{:?} {}", e.status(), e),
            }
        };
        let mut whole = BytesMut::from(bytes);
        let plain = parse(&mut HeadParser::default(), &mut whole);
        let mut parser = HeadParser::default();
        let mut buf = BytesMut::from(&bytes[..1.min(bytes.len())]);
        let mut general = parse(&mut parser, &mut buf);
        if general == "partial" {
            buf.extend_from_slice(&bytes[1.min(bytes.len())..]);
            general = parse(&mut parser, &mut buf);
        }
        let shown = String::from_utf8_lossy(bytes);
        assert_eq!(plain, general, "{shown:?}");
        if plain.starts_with("Ok") {
            assert_eq!(whole, buf, "{shown:?}");
        }
    }

    #[test]
    fn the_plain_response_reader_agrees_with_httparse_byte_by_byte() {
        // Every byte value at every position of a head, in place of the byte there and
        // inserted before it.
        let base = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Y:  a\tb \r\nZ:\r\n\r\nok";
        let mut spans = [Span::default(); SPANS];
        let plain = plain_response(base, &Limits::default(), &mut spans).expect("read plainly");
        assert_eq!((plain.code, plain.minor, plain.fields), (200, 1, 3));
        assert_eq!(&base[spans[1].2 as usize..spans[1].3 as usize], b"a\tb");
        for at in 0..base.len() {
            for byte in 0..=255u8 {
                let mut replaced = base.to_vec();
                replaced[at] = byte;
                same_plain_and_general(&replaced, true);
                let mut inserted = base.to_vec();
                inserted.insert(at, byte);
                same_plain_and_general(&inserted, true);
            }
        }
    }

    #[test]
    fn the_plain_response_reader_agrees_with_httparse_on_random_heads() {
        let seed = std::cell::Cell::new(0x9e37_79b9_7f4a_7c15u64);
        let next = || {
            let mut s = seed.get();
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            seed.set(s);
            s
        };
        // Each part is one of the good ones but one time in eight.
        let part = |good: &[&[u8]], bad: &[&[u8]]| {
            let (n, m) = (next(), next());
            let from = if n % 8 == 0 { bad } else { good };
            from[(m % from.len() as u64) as usize].to_vec()
        };
        let odd: &[&[u8]] = &[
            b" ", b"\t", b"\r", b"\n", b"\r\n", b":", b"\x7f", b"\x80", b"\xff", b"\0", b"\x0b",
        ];
        let crlf: &[&[u8]] = &[b"\r\n"];
        let mut plain = 0;
        for _ in 0..30_000 {
            let mut head = part(
                &[b"HTTP/1.1 ", b"HTTP/1.0 "],
                &[
                    b"HTTP/1.2 ",
                    b"HTTP/2.0 ",
                    b"HTTP/1.1  ",
                    b"http/1.1 ",
                    b"HTTP/1.1",
                ],
            );
            head.extend(part(
                &[b"200", b"204", b"304", b"100", b"404"],
                &[b"099", b"20", b"2000", b"abc"],
            ));
            head.extend(part(
                &[b" OK", b" ", b" Not Found", b" \tx"],
                &[b"", b" \x80", b" \x7f", b" a\rb"],
            ));
            head.extend(part(crlf, &[b"\n", b"\r", b"\r\r\n"]));
            for _ in 0..next() % 6 {
                head.extend(part(
                    &[
                        b"Content-Length",
                        b"content-type",
                        b"X-A",
                        b"Transfer-Encoding",
                        b"Connection",
                    ],
                    &[b"", b"A B", b"\xe9", b" X", b"A\x7f"],
                ));
                head.extend(part(&[b":", b": ", b":\t", b":  "], &[b" :", b"\t:", b""]));
                let mut value = part(
                    &[
                        b"0",
                        b"12",
                        b"chunked",
                        b"close",
                        b"text/plain",
                        b"a b",
                        b"x,y",
                        b"",
                        b"a\tb",
                    ],
                    &[b"1 2", b"chunked, gzip", b"-1", b"keep-alive, close"],
                );
                if next() % 4 == 0 {
                    let at = (next() as usize) % (value.len() + 1);
                    let bad = part(&[b" ", b"\t"], odd);
                    value.splice(at..at, bad);
                }
                head.extend(value);
                head.extend(part(
                    &[b"\r\n", b" \r\n", b"\t\r\n"],
                    &[b"\n", b"\r", b"\r\n "],
                ));
            }
            head.extend(part(crlf, &[b"\n", b"", b" \r\n"]));
            head.extend(part(&[b"", b"body", b"0\r\n\r\n"], &[b"\r\n"]));
            let mut spans = [Span::default(); SPANS];
            plain += usize::from(plain_response(&head, &Limits::default(), &mut spans).is_some());
            same_plain_and_general(&head, true);
        }
        // Enough of them take the plain path for the comparison to mean something.
        assert!(plain > 1_000, "{plain} of 30,000 heads read plainly");
    }

    #[test]
    fn the_plain_request_reader_agrees_with_httparse_byte_by_byte() {
        let base = b"GET /a?b=c HTTP/1.1\r\nHost: x:80\r\nX-Y:  a\tb \r\nZ:\r\n\r\nrest";
        let mut spans = [Span::default(); SPANS];
        let plain = plain_request(base, &Limits::default(), &mut spans).expect("read plainly");
        assert_eq!(
            (plain.method_end, plain.target_end, plain.fields),
            (3, 10, 3)
        );
        for at in 0..base.len() {
            for byte in 0..=255u8 {
                let mut replaced = base.to_vec();
                replaced[at] = byte;
                same_plain_and_general(&replaced, false);
                let mut inserted = base.to_vec();
                inserted.insert(at, byte);
                same_plain_and_general(&inserted, false);
            }
        }
        for head in [
            &b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"[..],
            b"POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\nHost: y\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: y\r\n\r\n",
            b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
            b"GET / HTTP/1.1\r\nExpect: 100-continue\r\nHost: x\r\n\r\n",
            b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert!(plain_request(head, &Limits::default(), &mut spans).is_some());
            same_plain_and_general(head, false);
        }
    }

    #[test]
    fn heads_parse_the_same_whole_and_in_parts() {
        let many: String = (0..40).map(|i| format!("h{i}: v\r\n")).collect();
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
        let requests: Vec<Vec<u8>> = vec![
            b"GET /a?b HTTP/1.1\r\nHost: x\r\nX-Y: z \r\n\r\nrest".to_vec(),
            b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            b"GET / HTTP/1.1\nHost: x\r\n\r\n".to_vec(),
            b"GET / HTTP/1.1\r\nHost: x\n\r\n".to_vec(),
            b"GET / HTTP/1.1\r\nHost: x\r\n\n".to_vec(),
            b"GET / HTTP/1.1\r\nHost: x\r\nA: b\nC: d\r\n\r\n".to_vec(),
            b"GET / HTTP/1.1\r\nHost: x\r\nA: b\rC: d\r\n\r\n".to_vec(),
            b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n \r\n\r\n".to_vec(),
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
            b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n".to_vec(),
            format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").into_bytes(),
            long.into_bytes(),
        ];
        for r in &requests {
            same_whole_and_in_parts(r, false);
        }
        let responses: Vec<Vec<u8>> = vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok".to_vec(),
            b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
            b"\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\n\r\n".to_vec(),
            b"HTTP/1.1 200 O\rK\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            format!("HTTP/1.1 200 OK\r\n{many}Content-Length: 0\r\n\r\n").into_bytes(),
        ];
        for r in &responses {
            same_whole_and_in_parts(r, true);
        }
    }

    #[test]
    fn parses_a_request_without_copying_values() {
        let mut buf = BytesMut::from(&b"GET /a?b HTTP/1.1\r\nHost: x\r\nX-Y: z \r\n\r\nrest"[..]);
        let r = HeadParser::default()
            .parse_request(&mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(r.parts.uri, "/a?b");
        assert_eq!(r.parts.headers["x-y"], "z");
        assert_eq!(r.framing, BodyFraming::Empty);
        assert!(r.keep_alive);
        assert_eq!(&buf[..], b"rest");
    }

    #[test]
    fn partial_heads_resume() {
        let all = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n";
        let mut parser = HeadParser::default();
        let mut buf = BytesMut::new();
        for (i, b) in all.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let r = parser.parse_request(&mut buf).unwrap();
            assert_eq!(r.is_some(), i == all.len() - 1, "byte {i}");
            if let Some(r) = r {
                assert_eq!(r.framing, BodyFraming::Length(3));
            }
        }
    }

    #[test]
    fn statuses_for_limits() {
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(9000));
        assert_eq!(req(long.as_bytes()).unwrap_err().status(), 414);
        let many: String = (0..101).map(|i| format!("h{i}: v\r\n")).collect();
        let r = req(format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes());
        assert_eq!(r.unwrap_err().status(), 431);
        assert_eq!(
            req(b"GET / HTTP/1.1\nHost: x\r\n\r\n")
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            req(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
                .unwrap_err()
                .status(),
            501
        );
    }

    #[test]
    fn responses_frame_by_rfc_9112() {
        let parse = |bytes: &[u8], method: &Method| {
            HeadParser::default()
                .parse_response(&mut BytesMut::from(bytes), method)
                .unwrap()
                .unwrap()
        };
        let r = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
            &Method::GET,
        );
        assert_eq!((r.framing, r.keep_alive), (BodyFraming::Length(5), true));
        let r = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            &Method::HEAD,
        );
        assert_eq!(r.framing, BodyFraming::Empty);
        let r = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            &Method::GET,
        );
        assert_eq!((r.framing, r.keep_alive), (BodyFraming::Chunked, false));
        let r = parse(b"HTTP/1.1 200 OK\r\n\r\n", &Method::GET);
        assert_eq!(
            (r.framing, r.keep_alive),
            (BodyFraming::CloseDelimited, false)
        );
        let r = parse(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
            &Method::GET,
        );
        assert_eq!(r.framing, BodyFraming::Empty);
        let err = HeadParser::default()
            .parse_response(
                &mut BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n"[..]),
                &Method::GET,
            )
            .unwrap_err();
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn remembered_names_are_reused_only_where_they_match() {
        let mut parser = HeadParser::default();
        let mut names = |bytes: &[u8]| {
            let parsed = parser.parse_response(&mut BytesMut::from(bytes), &Method::GET);
            let headers = parsed.map(|r| r.unwrap().parts.headers);
            headers.map(|h| {
                h.iter()
                    .map(|(n, v)| format!("{n}={v:?}"))
                    .collect::<Vec<_>>()
            })
        };
        let first = names(b"HTTP/1.1 200 OK\r\nX-Backend: a\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(first.unwrap(), ["x-backend=\"a\"", "content-length=\"0\""]);
        // The same names in another case, then in another order, then one more.
        let again = names(b"HTTP/1.1 200 OK\r\nx-BACKEND: b\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(again.unwrap(), ["x-backend=\"b\"", "content-length=\"0\""]);
        let swapped =
            names(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Other: c\r\nX-Backend: d\r\n\r\n");
        assert_eq!(
            swapped.unwrap(),
            ["content-length=\"0\"", "x-other=\"c\"", "x-backend=\"d\""]
        );
        // A name that is not a token is refused wherever a valid one was remembered.
        let bad = names(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Oth\x01r: c\r\n\r\n");
        assert!(bad.is_err());
    }
}
