//! HTTPS on loopback (feature `tls`): a [`Ca`] made for a test, whose certificate a
//! backend serves with.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// A certificate authority made for one test, and a server certificate it signed for
/// `127.0.0.1` and `localhost`: what a backend bound with
/// [`Builder::tls`](crate::Builder::tls) serves HTTPS with.
///
/// The client or proxy under test trusts it with [`Ca::pem`] or [`Ca::der`] (a proxy's
/// CA file, a `rustls::RootCertStore`), and nothing else: a backend signed by another
/// `Ca` is untrusted, as a backend with a wrong certificate would be. Backends of one
/// fleet can share a `Ca` (clones share it), so that one CA file trusts them all.
///
/// ```
/// use switchyard_test::{Ca, ScriptedBackend, Step};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let ca = Ca::new();
/// let backend = ScriptedBackend::builder("secure", Step::ok()).tls(&ca).bind().await;
/// assert_eq!(backend.url().scheme_str(), Some("https"));
/// assert!(ca.pem().starts_with("-----BEGIN CERTIFICATE-----"));
/// # }
/// ```
#[derive(Clone)]
pub struct Ca {
    inner: Arc<Inner>,
}

struct Inner {
    pem: String,
    der: CertificateDer<'static>,
    acceptor: TlsAcceptor,
}

impl Ca {
    /// A fresh CA and server certificate.
    ///
    /// # Panics
    ///
    /// If the keys cannot be generated (the platform has no randomness).
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};

        let ca_key = KeyPair::generate().expect("a key for the test CA");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params
            .self_signed(&ca_key)
            .expect("the CA's certificate");

        let key = KeyPair::generate().expect("a key for the server certificate");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .expect("the server certificate");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .expect("the server certificate and its key agree");
        // The backend speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            inner: Arc::new(Inner {
                pem: ca.pem(),
                der: ca.der().clone(),
                acceptor: TlsAcceptor::from(Arc::new(config)),
            }),
        }
    }

    /// The CA's certificate, PEM: what a client or proxy must trust (a proxy's
    /// `backend_ca_file`, written to a file).
    pub fn pem(&self) -> &str {
        &self.inner.pem
    }

    /// The CA's certificate, DER (for a `rustls::RootCertStore`).
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.inner.der
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.inner.acceptor
    }
}

impl Default for Ca {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}
