//! The body type of requests and responses inside the stack.

use bytes::{Buf, Bytes};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use switchyard_core::BoxError;

/// A streaming body: whatever the client or the backend sent, boxed once at the edge of
/// the stack so that every layer below is written for one concrete type.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body into [`Body`] without copying its data when it is already [`Bytes`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    body.map_frame(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))
        .map_err(Into::into)
        .boxed_unsync()
}

/// A complete body of the given bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}
