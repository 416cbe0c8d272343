//! Why the binary could not start or keep serving, or could not use its configuration:
//! each error names what failed and, where a flag would help or is wrong, which one.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::file::LoadError;
use switchyard::{BackendError, ParseBackendError};
use switchyard_server::upgrade::Sockets;
use tokio::net::TcpListener;

/// What kept the proxy (or the demo) from starting.
#[derive(Debug)]
pub enum StartError {
    /// The tokio runtime could not be built.
    Runtime(io::Error),
    /// A listener could not be bound.
    Listen {
        /// Which listener: the proxy's, the demo's or the admin API's.
        listener: Listener,
        /// The address it was to listen on.
        addr: SocketAddr,
        /// Why binding failed.
        source: io::Error,
    },
    /// The SIGHUP handler could not be installed.
    Signal(io::Error),
    /// A configured backend was refused.
    Backend(BackendError),
    /// A demo backend could not be started.
    DemoBackend(io::Error),
    /// The upgrade socket could not be set up, or the sockets not taken over.
    Upgrade(io::Error),
    /// A setting given by a flag is invalid (a file's are checked as it is read).
    Flag(switchyard::ConfigProblem),
}

/// Which listener a [`StartError::Listen`] is about; each suggests its own way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The proxy's (`listen` in the file, `--listen`).
    Proxy,
    /// The demo's proxy (`--listen` of `switchyard demo`).
    Demo,
    /// The admin API's (`admin.listen`, `--admin`).
    Admin,
}

impl Listener {
    /// Binds `addr` for this listener; the error names it.
    pub async fn bind(self, addr: SocketAddr) -> Result<TcpListener, StartError> {
        (TcpListener::bind(addr).await).map_err(|source| StartError::Listen {
            listener: self,
            addr,
            source,
        })
    }

    /// This listener from `sockets`: inherited in a binary upgrade, else bound on `addr`.
    pub async fn take(
        self,
        sockets: &mut Sockets,
        addr: SocketAddr,
    ) -> Result<TcpListener, StartError> {
        let name = if self == Self::Admin {
            "admin"
        } else {
            "proxy"
        };
        (sockets.listener(name, addr).await).map_err(|source| StartError::Listen {
            listener: self,
            addr,
            source,
        })
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Runtime(e) => write!(f, "cannot start the runtime: {e}"),
            Self::Listen {
                listener,
                addr,
                source,
            } => {
                let (key, hint) = match listener {
                    Listener::Proxy => ("", ""),
                    Listener::Demo => ("", " (pick another with --listen)"),
                    Listener::Admin => (
                        " (admin.listen)",
                        "; pick another with --admin or turn it off with --no-admin",
                    ),
                };
                write!(f, "cannot listen on {addr}{key}: {source}{hint}")
            }
            Self::Signal(e) => write!(f, "SIGHUP handler: {e}"),
            Self::Upgrade(e) => write!(f, "binary upgrade: {e}"),
            Self::Backend(e) => e.fmt(f),
            Self::DemoBackend(e) => write!(f, "cannot start demo backend: {e}"),
            Self::Flag(p) => write!(f, "{p} (given by a flag)"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Runtime(e) | Self::Signal(e) | Self::DemoBackend(e) | Self::Upgrade(e) => Some(e),
            Self::Listen { source, .. } => Some(source),
            Self::Backend(e) => Some(e),
            Self::Flag(_) => None,
        }
    }
}

impl From<BackendError> for StartError {
    fn from(e: BackendError) -> Self {
        Self::Backend(e)
    }
}

/// Why the configuration cannot be used: the file's problems, or a flag's.
#[derive(Debug)]
pub enum ConfigError {
    /// The file does not load (every problem, with its key and line).
    File(LoadError),
    /// `--admin` gives an admin listener that cannot be served: the key and why.
    Admin(&'static str, &'static str),
    /// `--cache-shared` gives a URL that cannot be used: why.
    CacheShared(String),
    /// A `--backend` URL does not parse.
    Backend(ParseBackendError),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(e) => e.fmt(f),
            Self::Admin(key, message) => write!(f, "--admin: `{key}`: {message}"),
            Self::CacheShared(problem) => write!(f, "--cache-shared: {problem}"),
            Self::Backend(e) => write!(f, "--backend: {e}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::File(e) => Some(e),
            Self::Backend(e) => Some(e),
            Self::Admin(..) | Self::CacheShared(_) => None,
        }
    }
}
