//! What the attempts of one request share: which backend the previous attempt went to,
//! and the request's head, handed back for the next attempt.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard, PoisonError};

use http::request::Parts;

// One per request, taken twice per attempt at most (put below, taken by the retry), never
// contended and never held across an `.await`.
#[allow(clippy::disallowed_types)]
type Lock<T> = std::sync::Mutex<T>;

/// Shared by the attempts of one request: the retry layer puts an `Arc<RouteHint>` in the
/// request's extensions, the balancer reads it there ([`RouteHint::in_extensions`]),
/// records the endpoint each attempt goes to, and avoids the previous one when another is
/// ready.
///
/// Made with [`returning_heads`](Self::returning_heads), it is also where the layers below
/// the retry leave the request's head once they are done with it: the service at the
/// bottom of the stack hands it back when the attempt ends, however it ends
/// ([`ReturnHead`](crate::ReturnHead)), and so does every layer that drops a request
/// without passing it on ([`GiveBack`](crate::GiveBack)). The retry then sends that head
/// again instead of a copy made before the first attempt, which every request paid for
/// and few used.
#[derive(Debug, Default)]
pub struct RouteHint {
    last: AtomicU64,
    /// `None` when heads are not handed back.
    head: Option<Lock<Option<Parts>>>,
}

impl RouteHint {
    /// A hint with no attempt recorded.
    pub fn new() -> Self {
        Self::default()
    }

    /// A hint with no attempt recorded that heads are handed back to.
    pub fn returning_heads() -> Self {
        Self {
            last: AtomicU64::new(0),
            head: Some(Lock::default()),
        }
    }

    /// The endpoint the last attempt went to (`None` before the first).
    pub fn last(&self) -> Option<u64> {
        match self.last.load(Ordering::Acquire) {
            0 => None,
            id => Some(id),
        }
    }

    /// Records the endpoint an attempt goes to. Endpoint ids start at 1.
    pub fn set(&self, endpoint: u64) {
        self.last.store(endpoint, Ordering::Release);
    }

    /// The hint a request carries in its extensions (as an `Arc<RouteHint>`), if any: the
    /// reader to give `switchyard_balance::Balance::route_hints`.
    pub fn in_extensions<B>(req: &http::Request<B>) -> Option<&RouteHint> {
        req.extensions().get::<Arc<RouteHint>>().map(|hint| &**hint)
    }

    /// Takes the hint out of `parts`' extensions when heads are handed back to it: the
    /// head can then be [put](Self::put_head) there without the hint keeping itself alive.
    pub fn take_returning(parts: &mut Parts) -> Option<Arc<RouteHint>> {
        let returning = parts.extensions.get::<Arc<Self>>()?.head.is_some();
        returning.then(|| parts.extensions.remove::<Arc<Self>>())?
    }

    /// Leaves `parts` here for the retry layer (a hint made without
    /// [`returning_heads`](Self::returning_heads) drops them). They must no longer hold
    /// this hint (see [`take_returning`](Self::take_returning)).
    pub fn put_head(&self, parts: Parts) {
        if let Some(mut head) = self.lock() {
            *head = Some(parts);
        }
    }

    /// The head handed back, if it was.
    pub fn take_head(&self) -> Option<Parts> {
        self.lock()?.take()
    }

    /// Whether a head waits here.
    pub fn has_head(&self) -> bool {
        self.lock().is_some_and(|head| head.is_some())
    }

    fn lock(&self) -> Option<MutexGuard<'_, Option<Parts>>> {
        let head = self.head.as_ref()?;
        Some(head.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
