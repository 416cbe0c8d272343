//! Dialling a backend: resolution and TCP connect under one timeout, errors typed.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use http::uri::Authority;
use switchyard_core::{ConnectError, ConnectErrorKind};
use tokio::net::TcpStream;

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
