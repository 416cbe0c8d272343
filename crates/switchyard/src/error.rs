//! The errors a proxy reports.

use std::fmt;

use http::{StatusCode, Uri};
use switchyard_core::{BoxError, ErrorKind};

/// A failed forward: what kind of failure it was, and the error behind it.
///
/// Built from the [`BoxError`] any layer of the stack returns; [`Error::status`] is the
/// status a proxy answers with (`503` for [`NoBackendsAvailable`](crate::NoBackendsAvailable)
/// and [`CircuitOpen`](crate::CircuitOpen), `504` for
/// [`RequestTimeout`](crate::RequestTimeout), `502` for anything else from upstream).
pub struct Error {
    kind: ErrorKind,
    inner: BoxError,
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The status a proxy answers with for this error.
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The error as the layer that failed returned it.
    pub fn into_inner(self) -> BoxError {
        self.inner
    }
}

impl From<BoxError> for Error {
    fn from(inner: BoxError) -> Self {
        Self {
            kind: ErrorKind::of(&*inner),
            inner,
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("inner", &self.inner)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)?;
        let mut source = self.inner.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.inner)
    }
}

/// A backend could not be added, removed or changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendError {
    /// A backend with this id exists already.
    Duplicate(String),
    /// No backend has this id.
    NotFound(String),
    /// The backend's fields are invalid (no host, unsupported scheme, weight 0…).
    Invalid {
        /// The backend's id.
        id: String,
        /// Why not.
        reason: String,
    },
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Duplicate(id) => write!(f, "a backend with id `{id}` exists already"),
            Self::NotFound(id) => write!(f, "no backend has id `{id}`"),
            Self::Invalid { id, reason } => write!(f, "backend `{id}`: {reason}"),
        }
    }
}

impl std::error::Error for BackendError {}

impl From<switchyard_health::RegistryError> for BackendError {
    fn from(e: switchyard_health::RegistryError) -> Self {
        use switchyard_health::RegistryError as R;
        match e {
            R::Duplicate(id) => Self::Duplicate(id),
            R::NotFound(id) => Self::NotFound(id),
            R::Invalid { id, reason } => Self::Invalid { id, reason },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_includes_the_whole_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = Error::from(BoxError::from(io));
        assert_eq!(err.kind(), ErrorKind::Upstream);
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(err.to_string(), "refused");
    }
}

/// A backend URL that requests cannot be sent to: its scheme is not `http` or `https`, or
/// it has no host.
#[derive(Debug, Clone)]
pub struct InvalidBackendUrl {
    url: Uri,
    problem: UrlProblem,
}

#[derive(Debug, Clone)]
enum UrlProblem {
    UnsupportedScheme,
    NoScheme,
    NoHost,
    Authority(String),
}

impl InvalidBackendUrl {
    fn new(url: &Uri, problem: UrlProblem) -> Self {
        Self {
            url: url.clone(),
            problem,
        }
    }

    pub(crate) fn unsupported_scheme(url: &Uri) -> Self {
        Self::new(url, UrlProblem::UnsupportedScheme)
    }

    pub(crate) fn no_scheme(url: &Uri) -> Self {
        Self::new(url, UrlProblem::NoScheme)
    }

    pub(crate) fn no_host(url: &Uri) -> Self {
        Self::new(url, UrlProblem::NoHost)
    }

    pub(crate) fn authority(url: &Uri, error: impl fmt::Display) -> Self {
        Self::new(url, UrlProblem::Authority(error.to_string()))
    }

    /// The URL.
    pub fn url(&self) -> &Uri {
        &self.url
    }
}

impl fmt::Display for InvalidBackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = &self.url;
        match &self.problem {
            UrlProblem::UnsupportedScheme => write!(
                f,
                "unsupported scheme `{}`; use http or https",
                url.scheme_str().unwrap_or_default()
            ),
            UrlProblem::NoScheme => write!(f, "`{url}` has no scheme; write http://{url}"),
            UrlProblem::NoHost => write!(f, "`{url}` has no host"),
            UrlProblem::Authority(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for InvalidBackendUrl {}
