//! TLS to `https` backends, with rustls (ring for its cryptography).

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::error::{CaError, CertKeyError};
use crate::Protocol;

/// How a pool speaks TLS to its backend: which certificate authorities it trusts, on top of
/// rustls's defaults (TLS 1.2 and 1.3, certificate and host name verification).
///
/// The pool sends the backend's host as the server name (SNI) and offers ALPN for its
/// protocol (`http/1.1`, or `h2` for an HTTP/2 backend). Cheap to clone; two values are
/// equal when they share their settings.
#[derive(Clone)]
pub struct TlsConfig {
    client: Arc<ClientConfig>,
}

impl TlsConfig {
    /// Trusts the certificate authorities Mozilla's browsers trust (the `webpki-roots`
    /// bundle built into the binary, so no system store is needed).
    pub fn webpki_roots() -> Self {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Self::with_roots(roots)
    }

    /// Trusts only the certificate authorities in `pem` (one or more PEM certificates):
    /// for backends whose certificates a private CA signed.
    pub fn from_ca_pem(pem: &[u8]) -> Result<Self, CaError> {
        ca_roots(pem).map(Self::with_roots)
    }

    /// [`from_ca_pem`](Self::from_ca_pem) with the contents of the file at `path`. Errors
    /// name the file.
    pub fn from_ca_file(path: &Path) -> Result<Self, CaError> {
        ca_roots_from_file(path).map(Self::with_roots)
    }

    /// This configuration, presenting `key`'s certificate to backends that ask the client
    /// for one (mutual TLS). See [`CertKey::from_files`].
    pub fn with_client_cert(&self, key: CertKey) -> Self {
        let mut client = ClientConfig::clone(&self.client);
        client.client_auth_cert_resolver = Arc::new(SingleCertAndKey::from(key.0));
        Self {
            client: Arc::new(client),
        }
    }

    /// Any rustls client configuration (client certificates, a custom verifier…). Its ALPN
    /// protocols are replaced by the pool's.
    pub fn from_rustls(client: Arc<ClientConfig>) -> Self {
        Self { client }
    }

    fn with_roots(roots: RootCertStore) -> Self {
        let client = ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self {
            client: Arc::new(client),
        }
    }

    /// The rustls configuration.
    pub fn rustls(&self) -> &Arc<ClientConfig> {
        &self.client
    }

    /// The connector of a pool speaking `protocol`: this configuration with that ALPN.
    pub(crate) fn connector(&self, protocol: Protocol) -> tokio_rustls::TlsConnector {
        let mut client = ClientConfig::clone(&self.client);
        client.alpn_protocols = vec![match protocol {
            Protocol::Http1 => b"http/1.1".to_vec(),
            Protocol::Http2 => b"h2".to_vec(),
        }];
        tokio_rustls::TlsConnector::from(Arc::new(client))
    }

    /// Runs the TLS handshake with the backend named `host` over `tcp`, offering ALPN for
    /// `protocol`: for a caller that dials on its own, such as a health checker.
    pub async fn handshake(
        &self,
        host: &str,
        tcp: TcpStream,
        protocol: Protocol,
    ) -> io::Result<TlsStream<TcpStream>> {
        let name = server_name(host)?;
        self.connector(protocol).connect(name, tcp).await
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.client, &other.client)
    }
}

impl Eq for TlsConfig {}

/// The cryptography of every TLS connection switchyard makes or accepts: rustls's ring
/// provider, with AES-128-GCM (and SHA-256) preferred over AES-256-GCM (SHA-384) and
/// ChaCha20-Poly1305, as Go's `crypto/tls` does on hardware with AES instructions. The
/// TLS 1.3 key schedule then hashes with SHA-256, which x86 and ARM CPUs run in hardware:
/// a handshake costs markedly less (see `benches/README.md`, HTTPS termination).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|suite| {
        use rustls::CipherSuite::*;
        match suite.suite() {
            TLS13_AES_128_GCM_SHA256 => 0,
            TLS13_AES_256_GCM_SHA384 => 1,
            TLS13_CHACHA20_POLY1305_SHA256 => 2,
            TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 3,
            _ => 4,
        }
    });
    Arc::new(provider)
}

/// The certificate authorities in `pem` (one or more PEM certificates), as a trust store:
/// for a client verifying servers, or a server verifying client certificates.
pub fn ca_roots(pem: &[u8]) -> Result<RootCertStore, CaError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots
            .add(cert.map_err(CaError::not_pem)?)
            .map_err(CaError::unusable)?;
    }
    if roots.is_empty() {
        return Err(CaError::empty());
    }
    Ok(roots)
}

/// [`ca_roots`] with the contents of the file at `path`. Errors name the file.
pub fn ca_roots_from_file(path: &Path) -> Result<RootCertStore, CaError> {
    let pem = std::fs::read(path).map_err(|e| CaError::read(path, e))?;
    ca_roots(&pem).map_err(|e| e.in_file(path))
}

/// The contents of the file at `path`; the message names it.
fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A certificate chain and its private key, checked to fit each other: what a server
/// presents, or a client that must prove who it is (mutual TLS).
#[derive(Clone)]
pub struct CertKey(Arc<CertifiedKey>);

impl CertKey {
    /// From a PEM certificate chain (the end entity's certificate first) and a PEM
    /// private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(chain: &[u8], key: &[u8]) -> Result<Self, CertKeyError> {
        let chain = CertificateDer::pem_slice_iter(chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertKeyError::Certificate(format!("not a PEM certificate: {e}")))?;
        if chain.is_empty() {
            return Err(CertKeyError::Certificate("holds no PEM certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| CertKeyError::Key(format!("not a PEM private key: {e}")))?;
        CertifiedKey::from_der(chain, key, &crypto_provider())
            .map(|key| Self(Arc::new(key)))
            .map_err(|e| CertKeyError::Key(format!("does not fit the certificate: {e}")))
    }

    /// [`from_pem`](Self::from_pem) with the contents of two files. Errors name the file.
    pub fn from_files(chain: &Path, key: &Path) -> Result<Self, CertKeyError> {
        let chain_pem = read(chain).map_err(CertKeyError::Certificate)?;
        let key_pem = read(key).map_err(CertKeyError::Key)?;
        Self::from_pem(&chain_pem, &key_pem).map_err(|e| match e {
            CertKeyError::Certificate(m) => {
                CertKeyError::Certificate(format!("{}: {m}", chain.display()))
            }
            CertKeyError::Key(m) => CertKeyError::Key(format!("{}: {m}", key.display())),
        })
    }

    /// The rustls form, for a server's or a client's certificate resolver.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.0
    }
}

impl fmt::Debug for CertKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertKey")
            .field("chain_len", &self.0.cert.len())
            .finish_non_exhaustive()
    }
}

/// The name a certificate must be for: a DNS name, or an IP address (`[...]` or bare).
pub(crate) fn server_name(host: &str) -> io::Result<ServerName<'static>> {
    ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// A connection to a backend: plain TCP, or TLS over it. Each is handed to hyper as its
/// own type, so that plain connections do no dispatch on every read and write.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Reads and writes go to the stream's own type: one branch per call.
macro_rules! stream_io {
    ($self:ident, $s:ident => $call:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => {
                let $s = Pin::new($s);
                $call
            }
            Stream::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $call
            }
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        stream_io!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        stream_io!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        stream_io!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        stream_io!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        stream_io!(self, s => s.poll_shutdown(cx))
    }
}
