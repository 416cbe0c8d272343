//! Errors: [`ParseError`] for a malformed message, [`Error`] for a connection or a body.

use std::fmt;

use http::StatusCode;

/// A message that breaks HTTP/1.1 syntax or framing rules (RFC 9112).
///
/// [`ParseError::status`] is the status the server answers with before it closes the
/// connection.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    kind: ParseKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseKind {
    Method,
    Uri,
    UriTooLong,
    Version,
    Status,
    HeaderName,
    HeaderValue,
    BareLf,
    BareCr,
    HeadTooLarge,
    TooManyHeaders,
    Host,
    TransferEncodingHttp10,
    TransferEncodingInvalid,
    TransferEncodingUnknown,
    ContentLength,
    ContentLengthAndTransferEncoding,
    ChunkSize,
    ChunkExtension,
    ChunkLine,
    Trailers,
}

impl ParseError {
    pub(crate) const fn new(kind: ParseKind) -> Self {
        Self { kind }
    }

    /// The status a server answers this error with: 400, 414 (request target too long),
    /// 431 (header section too large, too many fields) or 501 (a transfer coding the
    /// engine does not implement).
    pub fn status(&self) -> StatusCode {
        match self.kind {
            ParseKind::UriTooLong => StatusCode::URI_TOO_LONG,
            ParseKind::HeadTooLarge | ParseKind::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            ParseKind::TransferEncodingUnknown => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// Whether the error is in chunked body framing (size line, extension, CRLF, trailers),
    /// found after the head was accepted.
    pub fn is_chunked(&self) -> bool {
        matches!(
            self.kind,
            ParseKind::ChunkSize
                | ParseKind::ChunkExtension
                | ParseKind::ChunkLine
                | ParseKind::Trailers
        )
    }

    fn description(&self) -> &'static str {
        match self.kind {
            ParseKind::Method => "invalid method",
            ParseKind::Uri => "invalid request target",
            ParseKind::UriTooLong => "request line too long",
            ParseKind::Version => "invalid or unsupported HTTP version",
            ParseKind::Status => "invalid status line",
            ParseKind::HeaderName => "invalid header name",
            ParseKind::HeaderValue => "invalid header value",
            ParseKind::BareLf => "line ends with LF without CR",
            ParseKind::BareCr => "CR not followed by LF",
            ParseKind::HeadTooLarge => "header section too large",
            ParseKind::TooManyHeaders => "too many header fields",
            ParseKind::Host => "missing, repeated or invalid Host",
            ParseKind::TransferEncodingHttp10 => "Transfer-Encoding in an HTTP/1.0 request",
            ParseKind::TransferEncodingInvalid => "chunked is not the final transfer coding",
            ParseKind::TransferEncodingUnknown => "transfer coding not implemented",
            ParseKind::ContentLength => "invalid or conflicting Content-Length",
            ParseKind::ContentLengthAndTransferEncoding => {
                "both Content-Length and Transfer-Encoding"
            }
            ParseKind::ChunkSize => "invalid chunk size",
            ParseKind::ChunkExtension => "invalid or oversized chunk extension",
            ParseKind::ChunkLine => "chunk not followed by CRLF",
            ParseKind::Trailers => "invalid or oversized trailer section",
        }
    }
}

impl fmt::Debug for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ParseError").field(&self.kind).finish()
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for ParseError {}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a connection or a request body ended early.
///
/// Opaque; ask with the predicates, or walk `source()` to the leaf ([`ParseError`],
/// `std::io::Error`, or the service's or body's own error).
pub struct Error {
    kind: Kind,
    source: Option<BoxError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Parse,
    Io,
    Incomplete,
    HeaderTimeout,
    Service,
    Body,
    BodyLength,
    Informational,
    NoUpgrade,
    RequestBody,
}

impl Error {
    fn new(kind: Kind, source: Option<BoxError>) -> Self {
        Self { kind, source }
    }

    pub(crate) fn parse(err: ParseError) -> Self {
        Self::new(Kind::Parse, Some(Box::new(err)))
    }

    pub(crate) fn io(err: std::io::Error) -> Self {
        Self::new(Kind::Io, Some(Box::new(err)))
    }

    pub(crate) fn incomplete() -> Self {
        Self::new(Kind::Incomplete, None)
    }

    pub(crate) fn header_timeout() -> Self {
        Self::new(Kind::HeaderTimeout, None)
    }

    pub(crate) fn service(err: impl Into<BoxError>) -> Self {
        Self::new(Kind::Service, Some(err.into()))
    }

    pub(crate) fn body(err: impl Into<BoxError>) -> Self {
        Self::new(Kind::Body, Some(err.into()))
    }

    pub(crate) fn request_body(err: impl Into<BoxError>) -> Self {
        Self::new(Kind::RequestBody, Some(err.into()))
    }

    pub(crate) fn body_length() -> Self {
        Self::new(Kind::BodyLength, None)
    }

    pub(crate) fn informational() -> Self {
        Self::new(Kind::Informational, None)
    }

    pub(crate) fn no_upgrade() -> Self {
        Self::new(Kind::NoUpgrade, None)
    }

    /// The connection did not switch protocols (the response did not, or it broke).
    pub fn is_no_upgrade(&self) -> bool {
        self.kind == Kind::NoUpgrade
    }

    /// The peer sent a malformed message; the source is the [`ParseError`].
    pub fn is_parse(&self) -> bool {
        self.kind == Kind::Parse
    }

    /// Reading or writing the connection failed.
    pub fn is_io(&self) -> bool {
        self.kind == Kind::Io
    }

    /// The peer closed the connection in the middle of a message.
    pub fn is_incomplete(&self) -> bool {
        self.kind == Kind::Incomplete
    }

    /// A request head did not arrive within the header read timeout.
    pub fn is_header_timeout(&self) -> bool {
        self.kind == Kind::HeaderTimeout
    }

    /// The service failed (in `poll_ready` or its response future).
    pub fn is_service(&self) -> bool {
        self.kind == Kind::Service
    }

    /// A body being sent failed, or did not match its `Content-Length`.
    pub fn is_body(&self) -> bool {
        matches!(self.kind, Kind::Body | Kind::BodyLength | Kind::RequestBody)
    }

    /// The [`ParseError`] behind this error, if the peer sent a malformed message.
    pub fn parse_error(&self) -> Option<&ParseError> {
        self.source.as_ref()?.downcast_ref()
    }

    fn description(&self) -> &'static str {
        match self.kind {
            Kind::Parse => "malformed HTTP/1.1 message",
            Kind::Io => "connection I/O failed",
            Kind::Incomplete => "connection closed before the message was complete",
            Kind::HeaderTimeout => "request head not received in time",
            Kind::Service => "service failed",
            Kind::Body => "response body failed",
            Kind::BodyLength => "body does not match its Content-Length",
            Kind::Informational => "service answered with a 1xx status as its final response",
            Kind::NoUpgrade => "the connection did not switch protocols",
            Kind::RequestBody => "request body failed",
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| &**e as &(dyn std::error::Error + 'static))
    }
}
