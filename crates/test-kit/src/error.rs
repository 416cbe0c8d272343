//! How an in-process scripted backend fails: leaf errors, found with `downcast_ref`.
//!
//! A refusing step fails with switchyard-core's
//! [`ConnectError`](switchyard_core::ConnectError) of kind `Refused` instead, as a pool
//! would report it, so that a retry policy treats it as a connection never made.

use std::error::Error;
use std::fmt;

/// A [`Step::reset`](crate::Step::reset) broke the connection before any answer.
#[derive(Debug)]
pub struct Reset(());

impl Reset {
    pub(crate) fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for Reset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection reset by the scripted backend")
    }
}

impl Error for Reset {}

/// A [`Step::truncated_body`](crate::Step::truncated_body) ended its body before the
/// length it declared.
#[derive(Debug)]
pub struct Truncated(());

impl Truncated {
    pub(crate) fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("body cut short by the scripted backend")
    }
}

impl Error for Truncated {}
