//! What the client got: [`send`] a request through a stack, and assert on the [`Got`].

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::backend::BACKEND_HEADER;
use crate::BoxError;

/// A response as the client got it: its head, its body read whole (or up to the error
/// that broke it), and how long that took on the tokio clock.
#[non_exhaustive]
pub struct Got {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, as far as it was read.
    pub body: Bytes,
    /// The error that broke the body off, if one did.
    pub body_error: Option<BoxError>,
    /// From the call to the end of the body, on the tokio clock.
    pub elapsed: Duration,
}

/// Sends `req` through `service` (readying it first) and reads the response whole.
/// Returns the service's error if the call failed; a body that breaks off is a [`Got`]
/// with [`Got::body_error`].
pub async fn send<S, B, RB>(service: S, req: Request<B>) -> Result<Got, S::Error>
where
    S: Service<Request<B>, Response = Response<RB>>,
    RB: Body,
    RB::Error: Into<BoxError>,
{
    let start = Instant::now();
    let res = service.oneshot(req).await?;
    let (parts, body) = res.into_parts();
    let mut body = std::pin::pin!(body);
    let mut data = Vec::new();
    let mut body_error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(chunk) = frame.data_ref() {
                    data.extend_from_slice(bytes::Buf::chunk(chunk));
                }
            }
            Err(e) => {
                body_error = Some(e.into());
                break;
            }
        }
    }
    Ok(Got {
        status: parts.status,
        headers: parts.headers,
        body: data.into(),
        body_error,
        elapsed: start.elapsed(),
    })
}

impl Got {
    /// The name of the scripted backend that answered (its [`BACKEND_HEADER`]).
    pub fn backend(&self) -> Option<&str> {
        self.headers
            .get(BACKEND_HEADER)
            .and_then(|v| v.to_str().ok())
    }

    /// The body as text (lossily).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the body arrived whole.
    pub fn is_complete(&self) -> bool {
        self.body_error.is_none()
    }

    /// Asserts the status.
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert!(
            self.status.as_u16() == status,
            "expected a {status}, got {self:?}"
        );
        self
    }

    /// Asserts which backend answered.
    #[track_caller]
    pub fn assert_backend(&self, name: &str) -> &Self {
        assert!(
            self.backend() == Some(name),
            "expected an answer from backend {name}, got {self:?}"
        );
        self
    }

    /// Asserts that the body broke off.
    #[track_caller]
    pub fn assert_truncated(&self) -> &Self {
        assert!(
            self.body_error.is_some(),
            "expected a body cut short, got {self:?}"
        );
        self
    }

    /// Asserts that the answer took no longer than `bound` on the tokio clock.
    #[track_caller]
    pub fn assert_within(&self, bound: Duration) -> &Self {
        assert!(
            self.elapsed <= bound,
            "expected an answer within {bound:?}, got {self:?}"
        );
        self
    }
}

impl fmt::Debug for Got {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Got")
            .field("status", &self.status)
            .field("backend", &self.backend())
            .field("body_len", &self.body.len())
            .field(
                "body_error",
                &self.body_error.as_ref().map(|e| e.to_string()),
            )
            .field("elapsed", &self.elapsed)
            .finish()
    }
}
