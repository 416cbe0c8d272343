//! Which results count as failures: shared by the circuit breaker and the retry layer, so
//! both read one answer.

use std::time::Duration;

use http::{header, HeaderMap, Response, StatusCode};

use crate::{BoxError, ErrorKind};

/// What a request's result says about the backend that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The backend did its job (a 4xx is the client's fault, not the backend's).
    Success,
    /// The backend failed. `retry_after` is its own word on when to come back (a 503 or
    /// 429 with `Retry-After`).
    Failure {
        /// From `Retry-After`, when the response carried one.
        retry_after: Option<Duration>,
    },
    /// Says nothing about the backend: the proxy refused the request itself (an open
    /// circuit, no free connection) or the caller went away.
    Ignore,
}

impl Outcome {
    /// Whether this is a failure.
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::Failure { .. })
    }
}

/// Classifies a request's result. Implemented for closures too.
pub trait Classify<Res>: Clone {
    /// The outcome of one request.
    fn classify(&self, result: Result<&Res, &BoxError>) -> Outcome;
}

impl<Res, F> Classify<Res> for F
where
    F: Fn(Result<&Res, &BoxError>) -> Outcome + Clone,
{
    fn classify(&self, result: Result<&Res, &BoxError>) -> Outcome {
        self(result)
    }
}

/// Classifies errors: connect errors, timeouts and other upstream errors are failures;
/// the proxy's own refusals (no backend, open circuit, pool wait timeout) are ignored.
pub fn classify_error(err: &BoxError) -> Outcome {
    match ErrorKind::of(&**err) {
        ErrorKind::Connect
        | ErrorKind::RequestTimeout
        | ErrorKind::AttemptTimeout
        | ErrorKind::Upstream => Outcome::Failure { retry_after: None },
        _ => Outcome::Ignore,
    }
}

/// The default HTTP classifier: errors by [`classify_error`]; 5xx responses are failures
/// (and 429 too with [`HttpClassifier::with_429`]); everything else is a success.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpClassifier {
    too_many_requests: bool,
}

impl HttpClassifier {
    /// 5xx responses are failures.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts `429 Too Many Requests` as a failure as well.
    pub fn with_429(mut self) -> Self {
        self.too_many_requests = true;
        self
    }

    /// The outcome of a response status and headers.
    pub fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Outcome {
        if status.is_server_error()
            || (self.too_many_requests && status == StatusCode::TOO_MANY_REQUESTS)
        {
            failure(status, headers)
        } else {
            Outcome::Success
        }
    }
}

/// A failed response: with its `Retry-After` when it is a 503 or a 429, the statuses that
/// header means "come back later" on.
fn failure(status: StatusCode, headers: &HeaderMap) -> Outcome {
    let retry_after = match status {
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => retry_after(headers),
        _ => None,
    };
    Outcome::Failure { retry_after }
}

impl<B> Classify<Response<B>> for HttpClassifier {
    fn classify(&self, result: Result<&Response<B>, &BoxError>) -> Outcome {
        match result {
            Ok(res) => self.classify_response(res.status(), res.headers()),
            Err(err) => classify_error(err),
        }
    }
}

/// gRPC: the status in `grpc-status` decides. UNKNOWN, DEADLINE_EXCEEDED,
/// RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE and DATA_LOSS are failures; OK and the
/// caller's errors (INVALID_ARGUMENT, NOT_FOUND…) are not. Only a status in the response
/// headers is seen (a trailers-only response, which is how servers answer an error before
/// any message); 5xx HTTP statuses and transport errors are failures as for HTTP.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcClassifier;

impl GrpcClassifier {
    /// The outcome of a gRPC status code.
    pub fn classify_code(code: u32) -> Outcome {
        match code {
            2 | 4 | 8 | 13 | 14 | 15 => Outcome::Failure { retry_after: None },
            _ => Outcome::Success,
        }
    }
}

impl<B> Classify<Response<B>> for GrpcClassifier {
    fn classify(&self, result: Result<&Response<B>, &BoxError>) -> Outcome {
        match result {
            Ok(res) => match grpc_status(res.headers()) {
                Some(code) => Self::classify_code(code),
                None => HttpClassifier::new().classify_response(res.status(), res.headers()),
            },
            Err(err) => classify_error(err),
        }
    }
}

/// Only the listed statuses fail: the HTTP statuses in [`StatusClassifier::new`], and the
/// gRPC codes in [`StatusClassifier::grpc_statuses`] when a response carries one in its
/// `grpc-status` header (a trailers-only gRPC error, whose HTTP status is 200). Errors
/// are classified by [`classify_error`]. This is how the retry layer tells which
/// responses to retry (502, 503 and 504 by default); a breaker can count the same ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusClassifier {
    statuses: Vec<StatusCode>,
    grpc_statuses: Vec<u32>,
}

impl StatusClassifier {
    /// Responses with one of `statuses` are failures.
    pub fn new(statuses: impl Into<Vec<StatusCode>>) -> Self {
        Self {
            statuses: statuses.into(),
            grpc_statuses: Vec::new(),
        }
    }

    /// Responses whose `grpc-status` header holds one of `codes` are failures too.
    pub fn grpc_statuses(mut self, codes: impl Into<Vec<u32>>) -> Self {
        self.grpc_statuses = codes.into();
        self
    }

    /// The outcome of a response status and headers.
    pub fn classify_response(&self, status: StatusCode, headers: &HeaderMap) -> Outcome {
        let listed = self.statuses.contains(&status)
            || (!self.grpc_statuses.is_empty()
                && grpc_status(headers).is_some_and(|code| self.grpc_statuses.contains(&code)));
        if listed {
            failure(status, headers)
        } else {
            Outcome::Success
        }
    }
}

impl<B> Classify<Response<B>> for StatusClassifier {
    fn classify(&self, result: Result<&Response<B>, &BoxError>) -> Outcome {
        match result {
            Ok(res) => self.classify_response(res.status(), res.headers()),
            Err(err) => classify_error(err),
        }
    }
}

/// The gRPC status code in a response's headers (where a trailers-only response, the way
/// servers answer an error before any message, carries it).
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// `Retry-After` as a duration: delay-seconds, or an HTTP date compared with the
/// system clock (which only this header needs).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CircuitOpen, ConnectError, ConnectErrorKind};

    fn response(status: u16, headers: &[(&str, &str)]) -> Response<()> {
        let mut b = Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn http_statuses() {
        let c = HttpClassifier::new();
        assert_eq!(c.classify(Ok(&response(200, &[]))), Outcome::Success);
        assert_eq!(c.classify(Ok(&response(404, &[]))), Outcome::Success);
        assert_eq!(c.classify(Ok(&response(429, &[]))), Outcome::Success);
        assert_eq!(
            c.classify(Ok(&response(500, &[]))),
            Outcome::Failure { retry_after: None }
        );
        assert_eq!(
            c.classify(Ok(&response(503, &[("retry-after", "7")]))),
            Outcome::Failure {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            c.with_429()
                .classify(Ok(&response(429, &[("retry-after", "3")]))),
            Outcome::Failure {
                retry_after: Some(Duration::from_secs(3))
            }
        );
    }

    #[test]
    fn errors() {
        let refused: BoxError = ConnectError::new(ConnectErrorKind::Refused, "x:1", None).into();
        assert!(classify_error(&refused).is_failure());
        let open: BoxError = CircuitOpen::new().into();
        assert_eq!(classify_error(&open), Outcome::Ignore);
        let elapsed: BoxError = tower::timeout::error::Elapsed::new().into();
        assert!(classify_error(&elapsed).is_failure());
    }

    #[test]
    fn grpc_codes() {
        let c = GrpcClassifier;
        assert!(c
            .classify(Ok(&response(200, &[("grpc-status", "14")])))
            .is_failure());
        assert_eq!(
            c.classify(Ok(&response(200, &[("grpc-status", "3")]))),
            Outcome::Success
        );
        assert_eq!(c.classify(Ok(&response(200, &[]))), Outcome::Success);
    }

    #[test]
    fn listed_statuses() {
        let c = StatusClassifier::new([StatusCode::BAD_GATEWAY, StatusCode::SERVICE_UNAVAILABLE]);
        assert_eq!(c.classify(Ok(&response(500, &[]))), Outcome::Success);
        assert!(c.classify(Ok(&response(502, &[]))).is_failure());
        assert_eq!(
            c.classify(Ok(&response(503, &[("retry-after", "2")]))),
            Outcome::Failure {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        let unavailable = response(200, &[("grpc-status", "14")]);
        assert_eq!(c.classify(Ok(&unavailable)), Outcome::Success);
        assert!(c
            .grpc_statuses([14])
            .classify(Ok(&unavailable))
            .is_failure());
    }

    #[test]
    fn retry_after_as_a_date() {
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::RETRY_AFTER,
            httpdate::fmt_http_date(later).parse().unwrap(),
        );
        let d = retry_after(&headers).unwrap();
        assert!(
            d > Duration::from_secs(110) && d <= Duration::from_secs(120),
            "{d:?}"
        );
    }
}
