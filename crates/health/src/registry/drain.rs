//! Draining a backend: no new requests, removal once those in flight have finished.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::task::JoinHandle;

use super::{Endpoints, Registry};
use crate::error::RegistryError;
use crate::status::AdminState;
impl<E: Endpoints> Registry<E> {
    /// Drains a backend: no new requests; once the requests in flight have finished it is
    /// removed and its connections closed. The returned future completes then; the drain
    /// goes on whether or not it is awaited. Enabling the backend first cancels it.
    pub fn drain(&self, id: &str) -> Result<Drain, RegistryError> {
        let (inflight, generation) = self.inner.set_admin(id, AdminState::Draining)?;
        let weak = Arc::downgrade(&self.inner);
        let id = id.to_owned();
        let task = tokio::spawn(async move {
            inflight.idle().await;
            if let Some(inner) = weak.upgrade() {
                let _ = inner.remove(&id, Some(generation));
            }
        });
        Ok(Drain { task })
    }
}

/// Completes when a drained backend has been removed (see [`Registry::drain`]).
#[derive(Debug)]
pub struct Drain {
    task: JoinHandle<()>,
}

impl Future for Drain {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.task).poll(cx).map(drop)
    }
}
