//! The retry layer's own errors. Everything else an attempt fails with is passed up as it
//! came, as a `BoxError`.

switchyard_core::leaf_error! {
    /// A retry was decided, but the request body outgrew what could be kept to replay it.
    #[derive(Debug)]
    pub struct BodyTooLarge(pub(crate) fn new) => "request body too large to replay";

    /// An older attempt's body was polled after a newer attempt started.
    #[derive(Debug)]
    pub struct Superseded(pub(crate) fn new) => "request body superseded by a retry";
}
