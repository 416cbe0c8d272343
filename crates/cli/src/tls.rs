//! The listener's certificate: loaded from its two PEM files, and loaded again when they
//! change, so that a renewed certificate is served without a restart and without closing a
//! connection.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use switchyard::config::ConfigProblem;
use switchyard::{CertKey, CertKeyError};
use tokio_rustls::TlsAcceptor;

use crate::server::problem;

// Taken by a reload (once per interval, or on SIGHUP), never by a handshake or a request;
// never held across an await.
#[allow(clippy::disallowed_types)]
type ReloadLock<T> = std::sync::Mutex<T>;

/// The TLS side of an HTTPS listener. Every handshake takes the certificate loaded last;
/// [`reload`](Self::reload) swaps in a new one without a lock on the handshake path.
pub struct ListenerTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: Arc<Current>,
    acceptor: TlsAcceptor,
    /// The contents of the two files when they were last read, loaded or not: a change is
    /// tried once, and a broken pair is reported once.
    seen: ReloadLock<(Vec<u8>, Vec<u8>)>,
}

/// The certificate handed to each handshake.
#[derive(Debug)]
struct Current(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

impl ListenerTls {
    /// Loads the certificate chain and key; offers HTTP/2 in ALPN when `http2`. Problems
    /// name the configuration key and the file.
    pub fn load(cert_file: &Path, key_file: &Path, http2: bool) -> Result<Self, ConfigProblem> {
        let files = read_pair(cert_file, key_file)?;
        let key = parse(&files, cert_file, key_file)?;
        let current = Arc::new(Current(ArcSwap::from(Arc::clone(key.certified_key()))));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        tls.alpn_protocols = if http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            seen: ReloadLock::new(files),
        })
    }

    /// The acceptor for new connections.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// The end-entity certificate served now, DER.
    pub fn certificate(&self) -> Vec<u8> {
        self.current.0.load().cert[0].to_vec()
    }

    /// Reads the two files again. When they changed and hold a certificate and its key,
    /// new handshakes get it: `Ok(true)`. Unchanged files, or files that were found broken
    /// before, are `Ok(false)`. Files that changed but cannot be loaded (a renewal half
    /// written, a key that does not fit) leave the certificate served as it was: the error
    /// names the key and the file.
    pub fn reload(&self) -> Result<bool, ConfigProblem> {
        let files = read_pair(&self.cert_file, &self.key_file)?;
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == files {
                return Ok(false);
            }
            seen.clone_from(&files);
        }
        let key = parse(&files, &self.cert_file, &self.key_file)?;
        self.current.0.store(Arc::clone(key.certified_key()));
        Ok(true)
    }

    /// Reloads every `interval` (never when it is zero) and, on Unix, at once on SIGHUP;
    /// logs what happened. The SIGHUP handler is in place when this returns; the future
    /// runs until dropped.
    pub fn watch(self: Arc<Self>, interval: Duration) -> impl Future<Output = ()> + Send {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        async move {
            let mut tick = (!interval.is_zero()).then(|| {
                let start = tokio::time::Instant::now() + interval;
                let mut tick = tokio::time::interval_at(start, interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick
            });
            loop {
                let ticked = async {
                    match &mut tick {
                        Some(tick) => drop(tick.tick().await),
                        None => std::future::pending().await,
                    }
                };
                #[cfg(unix)]
                let hungup = async {
                    match &mut hangup {
                        Some(hangup) => drop(hangup.recv().await),
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hungup = std::future::pending::<()>();
                tokio::select! {
                    () = ticked => {}
                    () = hungup => {}
                }
                match self.reload() {
                    Ok(true) => {
                        tracing::info!(file = %self.cert_file.display(), "server certificate reloaded")
                    }
                    Ok(false) => {}
                    Err(p) => tracing::warn!(
                        "server.{}: {}; still serving the certificate loaded before",
                        p.key,
                        p.message
                    ),
                }
            }
        }
    }
}

impl fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerTls")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

fn read_pair(cert_file: &Path, key_file: &Path) -> Result<(Vec<u8>, Vec<u8>), ConfigProblem> {
    let read = |key: &str, path: &Path| {
        std::fs::read(path)
            .map_err(|e| problem(key, format!("cannot read {}: {e}", path.display())))
    };
    Ok((
        read("tls_cert_file", cert_file)?,
        read("tls_key_file", key_file)?,
    ))
}

fn parse(
    (cert, key): &(Vec<u8>, Vec<u8>),
    cert_file: &Path,
    key_file: &Path,
) -> Result<CertKey, ConfigProblem> {
    CertKey::from_pem(cert, key).map_err(|e| match e {
        CertKeyError::Certificate(m) => {
            problem("tls_cert_file", format!("{}: {m}", cert_file.display()))
        }
        CertKeyError::Key(m) => problem("tls_key_file", format!("{}: {m}", key_file.display())),
    })
}
