//! The crate's errors: admin operations refused, checks failed.

use std::fmt;
use std::time::Duration;

use http::{StatusCode, Uri};
use tower::BoxError;

/// An admin operation that could not be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryError {
    /// A backend with this id exists.
    Duplicate(String),
    /// No backend has this id.
    NotFound(String),
    /// The backend cannot be used as given.
    Invalid {
        /// The backend's id.
        id: String,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Duplicate(id) => write!(f, "backend `{id}` already exists"),
            RegistryError::NotFound(id) => write!(f, "no backend `{id}`"),
            RegistryError::Invalid { id, reason } => write!(f, "backend `{id}`: {reason}"),
        }
    }
}

impl std::error::Error for RegistryError {}

/// Why a [`Checker`](crate::Checker) got no response from an endpoint: what it was doing,
/// and the error that stopped it.
#[derive(Debug)]
pub struct CheckError {
    context: String,
    source: BoxError,
}

impl CheckError {
    /// `source` stopped the check while it was doing `context` (such as
    /// `"connect 10.0.0.1:80"`).
    pub fn new(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self {
            context: context.into(),
            source: source.into(),
        }
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.source)
    }
}

impl std::error::Error for CheckError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Why an endpoint failed one check; its text is the endpoint's `last_error`.
#[derive(Debug)]
pub(crate) enum CheckFailed {
    /// It answered with a status outside the expected range.
    Status(StatusCode),
    /// It did not answer within the check timeout.
    Timeout(Duration),
    /// The checker got no response.
    Check(CheckError),
}

impl fmt::Display for CheckFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status(status) => write!(f, "unexpected status {status}"),
            Self::Timeout(timeout) => write!(
                f,
                "no response within {}",
                humantime::format_duration(*timeout)
            ),
            Self::Check(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for CheckFailed {}

/// Why a backend's URL cannot be checked or resolved: a scheme other than `http` and
/// `https` (`scheme` holds it), or no host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidUrl {
    pub(crate) url: Uri,
    pub(crate) scheme: Option<String>,
}

impl fmt::Display for InvalidUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(scheme) = &self.scheme {
            return write!(f, "unsupported scheme `{scheme}`");
        }
        write!(f, "`{}` has no host", self.url)
    }
}

impl std::error::Error for InvalidUrl {}
