//! A native HTTP/1.1 engine designed for proxying.
//!
//! hyper's HTTP/1 connection code is most of the cost left between switchyard and nginx
//! per proxied request, and an idle keep-alive connection holds 32 KiB in hyper against
//! nginx's 0.6 KiB. This crate is HTTP/1.1 on `httparse`, `http` and `bytes` over tokio
//! I/O that still produces and consumes `http::Request` / `http::Response` with
//! `http_body::Body` bodies, so every tower layer stays as it is.
//!
//! - [`parse`]: request and response heads with strict RFC 9112 framing, never looser
//!   than hyper (strict CRLF, no obs-fold, both `Content-Length` and `Transfer-Encoding`
//!   on a request is a 400, so is `chunked` not last, any other coding a 501), sliced out of the read buffer
//!   without copies.
//! - [`chunked`]: a resumable chunked decoder and the encoder's pieces.
//! - [`encode`]: heads written into one reused buffer.
//! - [`server`]: [`serve_connection`] drives one client connection with a
//!   `tower::Service`.
//! - [`client`]: a backend [`Connection`] driven by the request's own task (no
//!   connection task): [`Connection::send`] returns the response, whose [`ResponseBody`]
//!   reads the socket and hands the connection back for reuse when the exchange is done.
//! - [`upgrade`]: `101 Switching Protocols` and CONNECT hand the connection to the
//!   request's [`OnUpgrade`] extension.
//! - [`rewind`]: I/O that gives back bytes read ahead (a peeked preface, what followed
//!   an upgrade request).
//!
//! `switchyard-server` serves HTTP/1.1 with this engine unless `server.http1 = "hyper"`,
//! and `switchyard-pool` speaks it to backends unless `SWITCHYARD_BACKEND_HTTP1=hyper`.
//!
//! Still to do:
//! - sending 1xx informational responses (103 Early Hints) on the service's behalf
//!   (`100 Continue` is sent by the engine itself; a service answering with a 1xx other
//!   than 101 as its final response gets the connection closed);
//! - a read timeout while a request body is being received.

pub mod body;
pub mod chunked;
pub mod client;
pub mod encode;
pub mod error;
pub mod parse;
pub mod rewind;
pub mod server;
pub mod upgrade;

pub use body::RecvBody;
pub use client::{ClientConfig, Connection, ResponseBody, SendError};
pub use error::{Error, ParseError};
pub use rewind::Rewind;
pub use server::{serve_connection, serve_connection_until, Config, Stop};
pub use upgrade::{OnUpgrade, Upgraded};
