//! How an in-process scripted backend fails: leaf errors, found with `downcast_ref`.
//!
//! A refusing step fails with switchyard-core's
//! [`ConnectError`](switchyard_core::ConnectError) of kind `Refused` instead, as a pool
//! would report it, so that a retry policy treats it as a connection never made.

switchyard_core::leaf_error! {
    /// A [`Step::reset`](crate::Step::reset) broke the connection before any answer.
    #[derive(Debug)]
    pub struct Reset(pub(crate) fn new) => "connection reset by the scripted backend";

    /// A [`Step::truncated_body`](crate::Step::truncated_body) ended its body before the
    /// length it declared.
    #[derive(Debug)]
    pub struct Truncated(pub(crate) fn new) => "body cut short by the scripted backend";
}
