//! The pool's own errors. Its request errors are `switchyard_core`'s leaf errors
//! ([`ConnectError`](crate::ConnectError), [`PoolTimeout`](crate::PoolTimeout)).

use std::fmt;

/// Why a [`CertKey`] could not be loaded, and which of its two parts is at fault.
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
