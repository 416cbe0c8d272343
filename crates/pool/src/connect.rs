//! Dialling a backend: resolution, TCP connect and the TLS handshake (for an `https`
//! backend) under one timeout, errors typed.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use http::uri::Authority;
use rustls::pki_types::ServerName;
use switchyard_core::{ConnectError, ConnectErrorKind};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::tls::Stream;

/// What an `https` pool needs to handshake: its connector (ALPN set) and the backend's name.
pub(crate) struct Tls {
    pub(crate) connector: TlsConnector,
    /// The backend's host as a certificate name, or why it is not one.
    pub(crate) name: Result<ServerName<'static>, String>,
    /// HTTP/2 was asked for: the backend must agree to it in ALPN (RFC 9113 §3.2).
    pub(crate) h2: bool,
}

/// Connects as [`tcp`] does, then runs the TLS handshake when `tls` is given, all within
/// `timeout`.
pub(crate) async fn dial(
    authority: &Authority,
    addr: Option<SocketAddr>,
    timeout: Duration,
    tls: Option<&Tls>,
) -> Result<Stream, ConnectError> {
    let Some(tls) = tls else {
        return tcp(authority, addr, timeout).await.map(Stream::Tcp);
    };
    let backend = authority.as_str();
    let attempt = async {
        let name = tls
            .name
            .clone()
            .map_err(|e| ConnectError::new(ConnectErrorKind::Tls, backend, Some(e.into())))?;
        let stream = tcp(authority, addr, timeout).await?;
        let stream = tls.connector.connect(name, stream).await.map_err(|e| {
            let kind = if e.kind() == io::ErrorKind::InvalidData {
                ConnectErrorKind::Tls
            } else {
                ConnectErrorKind::Other
            };
            ConnectError::new(kind, backend, Some(e.into()))
        })?;
        if tls.h2 && stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            let why = "the backend did not agree to HTTP/2 in ALPN; configure it as HTTP/1.1";
            return Err(ConnectError::new(
                ConnectErrorKind::Tls,
                backend,
                Some(why.into()),
            ));
        }
        Ok(stream)
    };
    let stream = tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ConnectError::new(ConnectErrorKind::Timeout, backend, None))??;
    Ok(Stream::Tls(Box::new(stream)))
}

/// Resolves `authority` (unless `addr` is given) and connects to the first address that
/// accepts, all within `timeout`.
pub(crate) async fn tcp(
    authority: &Authority,
    addr: Option<SocketAddr>,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let backend = authority.as_str();
    let attempt = async {
        let addrs: Vec<SocketAddr> = match addr {
            Some(addr) => vec![addr],
            None => {
                let port = authority.port_u16().unwrap_or(80);
                tokio::net::lookup_host((authority.host().trim_matches(['[', ']']), port))
                    .await
                    .map_err(|e| ConnectError::new(ConnectErrorKind::Dns, backend, Some(e.into())))?
                    .collect()
            }
        };
        let mut last: Option<io::Error> = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            None => ConnectError::new(ConnectErrorKind::Dns, backend, Some("no address".into())),
            Some(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                ConnectError::new(ConnectErrorKind::Refused, backend, Some(e.into()))
            }
            Some(e) => ConnectError::new(ConnectErrorKind::Other, backend, Some(e.into())),
        })
    };
    let stream = tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ConnectError::new(ConnectErrorKind::Timeout, backend, None))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
