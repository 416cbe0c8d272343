//! The registry's errors.

use std::fmt;

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
