//! The pool's own errors. Its request errors are `switchyard_core`'s leaf errors
//! ([`ConnectError`](crate::ConnectError), [`PoolTimeout`](crate::PoolTimeout)).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why a [`CertKey`](crate::CertKey) could not be loaded, and which of its two parts is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertKeyError {
    /// The certificate chain: unreadable, or holds no PEM certificate.
    Certificate(String),
    /// The private key: unreadable, not a PEM key, of a kind not supported, or not the
    /// key of the certificate.
    Key(String),
}

impl fmt::Display for CertKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Certificate(m) => write!(f, "certificate: {m}"),
            Self::Key(m) => write!(f, "private key: {m}"),
        }
    }
}

impl std::error::Error for CertKeyError {}

/// Why a set of certificate authorities (a trust store) could not be loaded: the file is
/// unreadable, or does not hold usable PEM certificates. Its message names the file when
/// there is one.
#[derive(Debug)]
pub struct CaError {
    path: Option<PathBuf>,
    kind: CaErrorKind,
}

#[derive(Debug)]
enum CaErrorKind {
    Read(io::Error),
    NotPem(String),
    Unusable(String),
    Empty,
}

impl CaError {
    pub(crate) fn not_pem(e: impl fmt::Display) -> Self {
        Self::new(CaErrorKind::NotPem(e.to_string()))
    }

    pub(crate) fn unusable(e: impl fmt::Display) -> Self {
        Self::new(CaErrorKind::Unusable(e.to_string()))
    }

    pub(crate) fn empty() -> Self {
        Self::new(CaErrorKind::Empty)
    }

    pub(crate) fn read(path: &Path, e: io::Error) -> Self {
        Self::new(CaErrorKind::Read(e)).in_file(path)
    }

    /// This error, naming the file at `path`.
    pub(crate) fn in_file(mut self, path: &Path) -> Self {
        self.path = Some(path.to_owned());
        self
    }

    fn new(kind: CaErrorKind) -> Self {
        Self { path: None, kind }
    }

    /// The file the certificates were read from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

impl fmt::Display for CaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.path, &self.kind) {
            (Some(path), CaErrorKind::Read(e)) => {
                return write!(f, "cannot read {}: {e}", path.display())
            }
            (Some(path), _) => write!(f, "{}: ", path.display())?,
            (None, _) => {}
        }
        match &self.kind {
            CaErrorKind::Read(e) => write!(f, "cannot read: {e}"),
            CaErrorKind::NotPem(e) => write!(f, "not a PEM certificate: {e}"),
            CaErrorKind::Unusable(e) => write!(f, "not a usable CA certificate: {e}"),
            CaErrorKind::Empty => f.write_str("holds no PEM certificate"),
        }
    }
}

impl std::error::Error for CaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            CaErrorKind::Read(e) => Some(e),
            _ => None,
        }
    }
}
