//! The requests' decision traces: `GET /requests/recent` (the last ones, newest first)
//! and `GET /requests/tail` (each one as it finishes, as server-sent events), both
//! filtered by `status` (`503`, or a class: `5xx`), `backend` (one of its attempts went
//! there) and `path` (a prefix).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::Uri;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Json;
use futures::Stream;
use serde_json::Value;
use switchyard::trace::Subscription;
use switchyard::{trace_json, Trace};
use tokio::sync::broadcast::error::RecvError;

use crate::Admin;

/// Which traces a client wants.
#[derive(Debug, Default)]
pub(crate) struct Filter {
    status: Option<(u16, u16)>,
    backend: Option<String>,
    path: Option<String>,
    limit: Option<usize>,
}

impl Filter {
    /// The filter in `uri`'s query; unknown parameters are ignored.
    pub(crate) fn of(uri: &Uri) -> Self {
        let mut filter = Self::default();
        let pairs = uri.query().unwrap_or("").split('&');
        for (key, value) in pairs.filter_map(|pair| pair.split_once('=')) {
            let value = decode(value);
            match key {
                "status" => filter.status = status_range(&value),
                "backend" => filter.backend = Some(value),
                "path" => filter.path = Some(value),
                "limit" => filter.limit = value.parse().ok(),
                _ => {}
            }
        }
        filter
    }

    fn matches(&self, trace: &Trace) -> bool {
        let status = trace.done().map_or(0, |d| d.status);
        self.status
            .is_none_or(|(low, high)| (low..=high).contains(&status))
            && self.path.as_deref().is_none_or(|p| {
                let path = trace.uri().path_and_query().map_or("/", |pq| pq.as_str());
                path.starts_with(p)
            })
            && self
                .backend
                .as_deref()
                .is_none_or(|b| trace.attempts().any(|a| a.backend.as_deref() == Some(b)))
    }
}

/// `503` or `5xx`.
fn status_range(value: &str) -> Option<(u16, u16)> {
    match value.as_bytes() {
        [class @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => {
            let low = u16::from(class - b'0') * 100;
            Some((low, low + 99))
        }
        _ => value.parse().ok().map(|s| (s, s)),
    }
}

/// Percent-decoding, `+` as a space.
fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) async fn recent(State(admin): State<Admin>, uri: Uri) -> Json<Vec<Value>> {
    let filter = Filter::of(&uri);
    let traces = admin.proxy.traces().recent();
    let limit = filter.limit.unwrap_or(traces.len());
    let views = (traces.iter().rev())
        .filter(|t| filter.matches(t))
        .take(limit)
        .map(trace_json)
        .collect();
    Json(views)
}

pub(crate) async fn tail(State(admin): State<Admin>, uri: Uri) -> impl IntoResponse {
    let filter = Filter::of(&uri);
    let live = admin.proxy.traces().subscribe();
    Sse::new(events(live, filter)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Each matching trace as an event; a subscriber that fell behind is told how many it
/// missed (a `lagged` event) and goes on with the newest.
fn events(live: Subscription, filter: Filter) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold((live, filter), |(mut live, filter)| async move {
        loop {
            match live.recv().await {
                Ok(trace) if filter.matches(&trace) => {
                    let event = Event::default().data(trace_json(&trace).to_string());
                    return Some((Ok(event), (live, filter)));
                }
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    let event = Event::default().event("lagged").data(missed.to_string());
                    return Some((Ok(event), (live, filter)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_from_the_query() {
        let f = Filter::of(&Uri::from_static(
            "/requests/tail?status=5xx&backend=b%2D1&path=%2Fapi",
        ));
        assert_eq!(f.status, Some((500, 599)));
        assert_eq!(f.backend.as_deref(), Some("b-1"));
        assert_eq!(f.path.as_deref(), Some("/api"));
        let f = Filter::of(&Uri::from_static("/requests/recent?status=404&limit=3"));
        assert_eq!(f.status, Some((404, 404)));
        assert_eq!(f.limit, Some(3));
        assert_eq!(decode("a%2"), "a%2");
        assert_eq!(decode("a+b%41"), "a bA");
    }
}
