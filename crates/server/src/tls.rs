//! The listener's certificates: loaded from their PEM files, chosen for each handshake by
//! the name the client asks for (SNI), and loaded again when the files change, so that a
//! renewed certificate is served without a restart and without closing a connection.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::{DnsName, ServerName};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::ProducesTickets;
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use switchyard::config::ConfigProblem;
use switchyard::layers::pool::{ca_roots, crypto_provider};
use switchyard::{CertKey, CertKeyError};
use tokio_rustls::TlsAcceptor;

use crate::server::problem;

// Taken by a reload (once per interval, or on SIGHUP), never by a handshake or a request;
// never held across an await.
#[allow(clippy::disallowed_types)]
type ReloadLock<T> = std::sync::Mutex<T>;

/// A certificate chain and its private key, as two PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    /// PEM certificate chain, the server's own certificate first.
    pub cert_file: PathBuf,
    /// PEM private key of the certificate.
    pub key_file: PathBuf,
}

/// The TLS side of an HTTPS listener. Each handshake gets the first certificate valid for
/// the name the client sent (SNI, wildcards included), else the default one;
/// [`reload`](Self::reload) swaps in new certificates without a lock on the handshake
/// path.
pub struct ListenerTls {
    /// The default certificate's files first, then those chosen by name, each with the
    /// configuration keys that name them.
    files: Vec<(CertFiles, Keys)>,
    current: Arc<Current>,
    /// Swapped when the client CA file changes; the certificates are swapped in `current`.
    acceptor: ArcSwap<TlsAcceptor>,
    settings: Settings,
    /// The contents of the files when they were last read, loaded or not: a change is
    /// tried once, and a broken set is reported once.
    seen: ReloadLock<Contents>,
}

switchyard_core::with_defaults! {
    /// How a listener speaks TLS, besides its certificates.
    #[derive(Debug, Clone)]
    pub struct ListenerOptions {
        /// Offer HTTP/2 in ALPN.
        pub http2: bool = true,
        /// Let returning clients resume with a session ticket: sealed with keys made at
        /// start and rotated every 6 hours, as nginx and Go do by default. Without tickets
        /// only the 256 most recent sessions can be resumed, each once.
        pub session_tickets: bool = true,
        /// Ask every client for a certificate, and refuse the handshake of a client without
        /// one that the certificate authorities in this PEM file signed (mutual TLS). The
        /// file is reloaded with the certificates.
        pub client_ca_file: Option<PathBuf> = None,
    }
}

/// What the acceptor is built with, besides the certificates.
struct Settings {
    /// Offer HTTP/2 in ALPN.
    http2: bool,
    /// Seals session tickets; kept across reloads, so that tickets stay good.
    tickets: Option<Arc<dyn ProducesTickets>>,
    /// The client CA file, when client certificates are verified.
    client_ca: Option<PathBuf>,
}

/// What the files held when read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Contents {
    /// Certificate, key, certificate, key…, in the order of `ListenerTls::files`.
    certificates: Vec<Vec<u8>>,
    client_ca: Option<Vec<u8>>,
}

/// The configuration keys of one certificate's two files.
#[derive(Debug, Clone)]
struct Keys {
    cert: String,
    key: String,
}

/// The certificates handed to handshakes.
#[derive(Debug)]
struct Current(ArcSwap<Certificates>);

struct Certificates {
    default: Arc<CertifiedKey>,
    by_name: Vec<Arc<CertifiedKey>>,
    /// Which of `by_name` each name asked for lately got (`None`: the default). Bounded, so
    /// that clients sending made-up names cost the lookup, not memory.
    picked: quick_cache::sync::Cache<String, Option<usize>>,
}

impl Certificates {
    fn new(default: Arc<CertifiedKey>, by_name: Vec<Arc<CertifiedKey>>) -> Self {
        Self {
            default,
            by_name,
            picked: quick_cache::sync::Cache::new(1024),
        }
    }

    /// The first certificate valid for `name`, else the default. Finding it parses each
    /// candidate certificate (about 0.8 µs each, `cargo bench -p switchyard-benches
    /// --bench sni`), so the answer for each name is remembered.
    fn pick(&self, name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = name.filter(|_| !self.by_name.is_empty()) else {
            return &self.default;
        };
        let index = match self.picked.get(name) {
            Some(index) => index,
            None => {
                let index = self.find(name);
                self.picked.insert(name.to_owned(), index);
                index
            }
        };
        index.map_or(&self.default, |i| &self.by_name[i])
    }

    fn find(&self, name: &str) -> Option<usize> {
        let name = ServerName::DnsName(DnsName::try_from(name).ok()?);
        self.by_name.iter().position(|key| {
            key.end_entity_cert()
                .ok()
                .and_then(|der| ParsedCertificate::try_from(der).ok())
                .is_some_and(|cert| rustls::client::verify_server_name(&cert, &name).is_ok())
        })
    }
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("by_name", &self.by_name.len())
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(self.0.load().pick(hello.server_name())))
    }
}

impl ListenerTls {
    /// Loads `default`, for clients that send no name or one that no other certificate
    /// is valid for, and `by_name`, each chosen for the names it is valid for, with
    /// `options`. Problems name the configuration key (`tls_cert_file`,
    /// `tls_certs[1].key_file`, `tls_client_ca_file`…) and the file.
    pub fn load(
        default: &CertFiles,
        by_name: &[CertFiles],
        options: &ListenerOptions,
    ) -> Result<Self, ConfigProblem> {
        let mut files = vec![(
            default.clone(),
            Keys {
                cert: "tls_cert_file".into(),
                key: "tls_key_file".into(),
            },
        )];
        for (i, f) in by_name.iter().enumerate() {
            let keys = Keys {
                cert: format!("tls_certs[{i}].cert_file"),
                key: format!("tls_certs[{i}].key_file"),
            };
            files.push((f.clone(), keys));
        }
        let tickets = if options.session_tickets {
            match rustls::crypto::ring::Ticketer::new() {
                Ok(ticketer) => Some(ticketer),
                Err(e) => {
                    tracing::warn!(error = %e, "no TLS session tickets");
                    None
                }
            }
        } else {
            None
        };
        let settings = Settings {
            http2: options.http2,
            tickets,
            client_ca: options.client_ca_file.clone(),
        };
        let contents = read_all(&files, settings.client_ca.as_deref())?;
        let certificates = parse_all(&files, &contents.certificates)?;
        let verifier = client_verifier(settings.client_ca.as_deref(), &contents)?;
        let current = Arc::new(Current(ArcSwap::from_pointee(certificates)));
        Ok(Self {
            files,
            acceptor: ArcSwap::from_pointee(acceptor(&current, &settings, verifier)),
            current,
            settings,
            seen: ReloadLock::new(contents),
        })
    }

    /// The acceptor for new connections.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::clone(&self.acceptor.load())
    }

    /// The end-entity certificate, DER, that a handshake asking for `server_name` (none:
    /// no SNI) gets now.
    pub fn certificate(&self, server_name: Option<&str>) -> Vec<u8> {
        self.current.0.load().pick(server_name).cert[0].to_vec()
    }

    /// Reads the files again. When they changed and each holds a certificate and its key,
    /// new handshakes get them: `Ok(true)`. Unchanged files, or files that were found
    /// broken before, are `Ok(false)`. Files that changed but cannot all be loaded (a
    /// renewal half written, a key that does not fit) leave every certificate served as it
    /// was: the error names the key and the file.
    pub fn reload(&self) -> Result<bool, ConfigProblem> {
        let contents = read_all(&self.files, self.settings.client_ca.as_deref())?;
        let ca_changed = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == contents {
                return Ok(false);
            }
            let ca_changed = seen.client_ca != contents.client_ca;
            seen.clone_from(&contents);
            ca_changed
        };
        // All or nothing: the CA file is checked before the certificates are swapped.
        let certificates = parse_all(&self.files, &contents.certificates)?;
        let verifier = if ca_changed {
            client_verifier(self.settings.client_ca.as_deref(), &contents)?
        } else {
            None
        };
        self.current.0.store(Arc::new(certificates));
        if verifier.is_some() {
            let rebuilt = acceptor(&self.current, &self.settings, verifier);
            self.acceptor.store(Arc::new(rebuilt));
        }
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
                    Ok(true) => tracing::info!("server certificates reloaded"),
                    Ok(false) => {}
                    Err(p) => tracing::warn!(
                        "server.{}: {}; still serving the certificates loaded before",
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
        let files: Vec<_> = self.files.iter().map(|(f, _)| f).collect();
        f.debug_struct("ListenerTls")
            .field("files", &files)
            .finish_non_exhaustive()
    }
}

/// A TLS acceptor handing out the `current` certificates, with `settings`, verifying client
/// certificates with `clients` if given.
fn acceptor(
    current: &Arc<Current>,
    settings: &Settings,
    clients: Option<Arc<dyn ClientCertVerifier>>,
) -> TlsAcceptor {
    let builder = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut tls = builder.with_cert_resolver(current.clone());
    // The provider's order (AES-128-GCM first), not the client's: most clients list
    // AES-256-GCM first, whose SHA-384 key schedule costs a handshake more.
    tls.ignore_client_order = true;
    if let Some(ticketer) = &settings.tickets {
        tls.ticketer = ticketer.clone();
    }
    tls.alpn_protocols = if settings.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    TlsAcceptor::from(Arc::new(tls))
}

/// The contents of every certificate and key file, and of the client CA file if any.
fn read_all(
    files: &[(CertFiles, Keys)],
    client_ca: Option<&Path>,
) -> Result<Contents, ConfigProblem> {
    let mut certificates = Vec::with_capacity(files.len() * 2);
    for (f, keys) in files {
        certificates.push(read(&keys.cert, &f.cert_file)?);
        certificates.push(read(&keys.key, &f.key_file)?);
    }
    let client_ca = client_ca
        .map(|path| read("tls_client_ca_file", path))
        .transpose()?;
    Ok(Contents {
        certificates,
        client_ca,
    })
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, ConfigProblem> {
    std::fs::read(path).map_err(|e| problem(key, format!("cannot read {}: {e}", path.display())))
}

/// The verifier of client certificates signed by the CAs in the client CA file at `path`,
/// as `contents` holds it; `None` when clients are not verified.
fn client_verifier(
    path: Option<&Path>,
    contents: &Contents,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, ConfigProblem> {
    let (Some(path), Some(pem)) = (path, &contents.client_ca) else {
        return Ok(None);
    };
    let named = |m: String| problem("tls_client_ca_file", format!("{}: {m}", path.display()));
    let roots = ca_roots(pem).map_err(|e| named(e.to_string()))?;
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
        .build()
        .map(Some)
        .map_err(|e| named(e.to_string()))
}

fn parse_all(
    files: &[(CertFiles, Keys)],
    contents: &[Vec<u8>],
) -> Result<Certificates, ConfigProblem> {
    let mut keys = files
        .iter()
        .zip(contents.chunks(2))
        .map(|((f, keys), pem)| {
            CertKey::from_pem(&pem[0], &pem[1])
                .map(|k| Arc::clone(k.certified_key()))
                .map_err(|e| match e {
                    CertKeyError::Certificate(m) => {
                        problem(&keys.cert, format!("{}: {m}", f.cert_file.display()))
                    }
                    CertKeyError::Key(m) => {
                        problem(&keys.key, format!("{}: {m}", f.key_file.display()))
                    }
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let default = keys.remove(0);
    Ok(Certificates::new(default, keys))
}
