//! The retry layer's own errors. Everything else an attempt fails with is passed up as it
//! came, as a `BoxError`.

use std::fmt;

/// A retry was decided, but the request body outgrew what could be kept to replay it.
#[derive(Debug)]
pub struct BodyTooLarge(());

impl BodyTooLarge {
    pub(crate) fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body too large to replay")
    }
}

impl std::error::Error for BodyTooLarge {}

/// An older attempt's body was polled after a newer attempt started.
#[derive(Debug)]
pub struct Superseded(());

impl Superseded {
    pub(crate) fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for Superseded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body superseded by a retry")
    }
}

impl std::error::Error for Superseded {}
