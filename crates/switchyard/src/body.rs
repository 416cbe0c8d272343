//! The body type of requests and responses inside the stack.

use bytes::{Buf, Bytes};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use switchyard_core::{BoxError, ClientBodyError};

/// A streaming body: whatever the client or the backend sent, boxed once at the edge of
/// the stack so that every layer below is written for one concrete type.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any body into [`Body`]. A body that already is a [`Body`] is returned as it is,
/// and one whose data already is [`Bytes`] is not touched frame by frame.
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body + Send + 'static,
    B::Data: Send + 'static,
    B::Error: Into<BoxError>,
{
    let body = match try_downcast::<Body, B>(body) {
        Ok(body) => return body,
        Err(body) => body,
    };
    body.map_frame(|frame| frame.map_data(into_bytes))
        .map_err(Into::into)
        .boxed_unsync()
}

/// Boxes a client's request body as [`boxed`] does, its errors marked as the client's
/// ([`ClientBodyError`]): a malformed, cut-off or oversized body is answered 400 and never
/// counts against the backend it was being sent to. Servers box the bodies they read
/// with this; [`Proxy`](crate::Proxy) does it for bodies of any other type.
pub fn boxed_request<B>(body: B) -> Body
where
    B: http_body::Body + Send + 'static,
    B::Data: Send + 'static,
    B::Error: Into<BoxError>,
{
    match try_downcast::<Body, B>(body) {
        Ok(body) => body,
        Err(body) => boxed(body.map_err(ClientBodyError::new)),
    }
}

fn into_bytes<D: Buf + 'static>(data: D) -> Bytes {
    match try_downcast::<Bytes, D>(data) {
        Ok(bytes) => bytes,
        Err(mut data) => data.copy_to_bytes(data.remaining()),
    }
}

/// `Ok(value)` when `K` and `T` are the same type: lets a generic function take a
/// shortcut for one type without specialization.
fn try_downcast<T: 'static, K: 'static>(k: K) -> Result<T, K> {
    let mut k = Some(k);
    match (&mut k as &mut dyn std::any::Any).downcast_mut::<Option<T>>() {
        Some(t) => Ok(t.take().expect("just set")),
        None => Err(k.expect("just set")),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn boxing_keeps_the_data() {
        let once = boxed(http_body_util::Full::new(Bytes::from_static(b"abc")));
        let twice = boxed(once);
        assert_eq!(twice.collect().await.unwrap().to_bytes(), "abc");
        let vec_data = boxed(http_body_util::Full::new(std::io::Cursor::new(
            b"xyz".to_vec(),
        )));
        assert_eq!(vec_data.collect().await.unwrap().to_bytes(), "xyz");
    }
}
