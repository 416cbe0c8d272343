//! The balancer's feed: a stream of endpoint insertions and removals.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;
use tower::discover::Change;

use super::EndpointKey;
use crate::tracked::Tracked;
/// What the registry feeds the balancer.
pub type Event<S> = Result<Change<EndpointKey, Tracked<S>>, Infallible>;

/// The balancer's view of the registry: a stream of endpoint insertions and removals
/// (a [`tower::discover::Discover`]).
#[derive(Debug)]
pub struct Discovery<S> {
    pub(super) rx: mpsc::UnboundedReceiver<Event<S>>,
}

impl<S> Stream for Discovery<S> {
    type Item = Event<S>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
