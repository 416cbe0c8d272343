//! Protocol upgrades through the proxy (WebSocket, and any other `Upgrade` an HTTP/1.1
//! client and backend agree on).
//!
//! A client's HTTP/1.1 request with `Connection: upgrade` and `Upgrade: <protocol>` is sent
//! on with those two headers, and when the backend answers `101 Switching Protocols` the
//! two connections are joined: bytes are copied both ways until either side closes.
//!
//! Joining needs the client connection's upgrade handle, which hyper's server puts in the
//! request's extensions when it serves the connection with upgrades
//! (`serve_connection_with_upgrades`, as the `switchyard` binary and `axum::serve` do).
//! Without one there is nothing to join, so the request goes on as a plain request, its
//! upgrade headers removed like any hop-by-hop header, and the backend answers it as
//! such. Upgrades need an HTTP/1.1 backend: HTTP/2 has no `Upgrade`.

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// A client's upgrade, held while its request is forwarded.
#[derive(Debug)]
pub(crate) struct Upgrade {
    protocol: HeaderValue,
    client: OnUpgrade,
}

impl Upgrade {
    /// Takes the upgrade a request asks for, if it asks for one and its connection can be
    /// handed over.
    pub(crate) fn take<B>(req: &mut Request<B>) -> Option<Self> {
        let protocol = requested(req)?;
        let client = req.extensions_mut().remove::<OnUpgrade>()?;
        Some(Self { protocol, client })
    }

    /// Whether the request's connection can be handed over. Checked first: hyper adds the
    /// handle only to requests that ask for an upgrade, and an empty extension map answers
    /// without hashing anything.
    fn can_upgrade<B>(req: &Request<B>) -> bool {
        req.extensions().get::<OnUpgrade>().is_some()
    }

    /// Puts the upgrade request's headers back after the hop-by-hop ones were removed.
    pub(crate) fn restore_request<B>(&self, req: &mut Request<B>) {
        restore_request(req, self.protocol.clone());
    }

    /// For the backend's response: on `101 Switching Protocols`, joins the two connections
    /// (in a task of their own) and returns the `Upgrade` header to send the client.
    pub(crate) fn answer<B>(self, res: &mut Response<B>) -> Option<HeaderValue> {
        if res.status() != StatusCode::SWITCHING_PROTOCOLS {
            return None;
        }
        let protocol = res.headers().get(header::UPGRADE).cloned()?;
        let backend = res.extensions_mut().remove::<OnUpgrade>()?;
        tokio::spawn(join(self.client, backend));
        Some(protocol)
    }
}

/// The protocol an HTTP/1.1 request asks to switch to: its `Upgrade`, when its
/// `Connection` lists `upgrade` and its connection can be handed over.
pub(crate) fn requested<B>(req: &Request<B>) -> Option<HeaderValue> {
    if !Upgrade::can_upgrade(req) {
        return None;
    }
    let protocol = req.headers().get(header::UPGRADE)?;
    (req.version() == Version::HTTP_11 && wants_upgrade(req.headers())).then(|| protocol.clone())
}

/// Puts an upgrade request's headers back after the hop-by-hop ones were removed.
pub(crate) fn restore_request<B>(req: &mut Request<B>, protocol: HeaderValue) {
    let headers = req.headers_mut();
    headers.insert(header::UPGRADE, protocol);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Puts a switching response's headers back after the hop-by-hop ones were removed.
pub(crate) fn restore_response<B>(res: &mut Response<B>, protocol: HeaderValue) {
    let headers = res.headers_mut();
    headers.insert(header::UPGRADE, protocol);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Whether `Connection` lists the `upgrade` option.
fn wants_upgrade(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|option| option.trim().eq_ignore_ascii_case("upgrade"))
}

/// Copies bytes both ways between the client and the backend until both are done.
async fn join(client: OnUpgrade, backend: OnUpgrade) {
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed before the tunnel opened");
            return;
        }
    };
    let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
    match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
        Ok((up, down)) => tracing::debug!(up, down, "upgraded connection closed"),
        Err(e) => tracing::debug!(error = %e, "upgraded connection broke"),
    }
}
