//! How a request's head comes back to the retry layer (to its [`RouteHint`]), so that a
//! retry need not copy it before the first attempt.

use std::ops::DerefMut;
use std::sync::Arc;

use http::request::Parts;

use crate::RouteHint;

/// A request a layer drops without passing it on (no backend, an open circuit): its head
/// goes back to the retry layer, when the request's [`RouteHint`] takes heads back.
pub trait GiveBack {
    /// Hands the head back, dropping the body.
    fn give_back(self);
}

impl<B> GiveBack for http::Request<B> {
    fn give_back(self) {
        let (mut parts, _) = self.into_parts();
        if let Some(hint) = RouteHint::take_returning(&mut parts) {
            hint.put_head(parts);
        }
    }
}

impl GiveBack for () {
    fn give_back(self) {}
}

/// Holds a request's head while the service at the bottom of a stack sends it, and hands
/// it back to the request's [`RouteHint`] when dropped: after the response head, after a
/// failure, or when the attempt is abandoned half way. What sending changed for this
/// backend alone (the target made origin-form, a `Host` added, the version) is undone
/// first, so the head goes back as it came.
#[derive(Debug)]
pub struct ReturnHead {
    /// The head, for the sender to use (and change) while it sends (through `Deref`);
    /// `None` once handed back.
    parts: Option<Parts>,
    hint: Option<Arc<RouteHint>>,
    original_uri: Option<http::Uri>,
    original_version: http::Version,
    added_host: bool,
}

impl ReturnHead {
    /// Holds `parts`, taking their hint out of their extensions if it takes heads back.
    pub fn new(mut parts: Parts) -> Self {
        let hint = RouteHint::take_returning(&mut parts);
        let original_version = parts.version;
        Self {
            parts: Some(parts),
            hint,
            original_uri: None,
            original_version,
            added_host: false,
        }
    }

    /// Whether the head goes back to a retry layer when this is dropped.
    pub fn returns(&self) -> bool {
        self.hint.is_some()
    }

    /// Replaces the target, keeping the original to hand back.
    pub fn set_uri(&mut self, uri: http::Uri) {
        let original = std::mem::replace(&mut self.deref_mut().uri, uri);
        self.original_uri.get_or_insert(original);
    }

    /// Adds `Host: host` when the head has none, to be removed again when it goes back.
    pub fn add_host(&mut self, host: &http::HeaderValue) {
        if !self.headers.contains_key(http::header::HOST) {
            self.headers.insert(http::header::HOST, host.clone());
            self.added_host = true;
        }
    }
}

impl std::ops::Deref for ReturnHead {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        self.parts.as_ref().expect("held until dropped")
    }
}

impl DerefMut for ReturnHead {
    fn deref_mut(&mut self) -> &mut Parts {
        self.parts.as_mut().expect("held until dropped")
    }
}

impl Drop for ReturnHead {
    fn drop(&mut self) {
        let Some(hint) = self.hint.take() else {
            return;
        };
        let Some(mut parts) = self.parts.take() else {
            return;
        };
        if let Some(uri) = self.original_uri.take() {
            parts.uri = uri;
        }
        if self.added_host {
            parts.headers.remove(http::header::HOST);
        }
        parts.version = self.original_version;
        hint.put_head(parts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_with(hint: &Arc<RouteHint>) -> Parts {
        let mut parts = http::Request::get("http://a.example/x")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        parts.extensions.insert(hint.clone());
        parts
    }

    #[test]
    fn a_dropped_request_gives_its_head_back() {
        let hint = Arc::new(RouteHint::returning_heads());
        http::Request::from_parts(head_with(&hint), "body").give_back();
        let parts = hint.take_head().expect("handed back");
        assert_eq!(parts.uri, "http://a.example/x");
        assert!(
            parts.extensions.get::<Arc<RouteHint>>().is_none(),
            "no cycle"
        );
        assert_eq!(Arc::strong_count(&hint), 1);
    }

    #[test]
    fn a_sent_head_goes_back_as_it_came() {
        let hint = Arc::new(RouteHint::returning_heads());
        let mut held = ReturnHead::new(head_with(&hint));
        assert!(held.returns());
        held.set_uri(http::Uri::from_static("/x"));
        held.add_host(&http::HeaderValue::from_static("backend:80"));
        held.version = http::Version::HTTP_10;
        assert_eq!(held.uri, "/x");
        assert!(!hint.has_head(), "kept while sending");
        drop(held);
        let parts = hint.take_head().expect("handed back on drop");
        assert_eq!(parts.uri, "http://a.example/x");
        assert!(parts.headers.get(http::header::HOST).is_none());
        assert_eq!(parts.version, http::Version::HTTP_11);
    }

    #[test]
    fn a_hint_that_takes_no_heads_stays_with_the_request() {
        let hint = Arc::new(RouteHint::new());
        let held = ReturnHead::new(head_with(&hint));
        assert!(!held.returns());
        assert!(held.extensions.get::<Arc<RouteHint>>().is_some());
        drop(held);
        assert!(!hint.has_head());
        http::Request::new(()).give_back();
    }
}
