use std::fmt;
use std::sync::Arc;

use tower::Layer;

use crate::recorder::Recorder;
use crate::{BackendSnapshot, Metrics, MetricsRegistry};

/// Counts and times every request of the whole proxy: put it above the balancer (and above
/// retries, so that a retried request counts once). From [`MetricsRegistry::layer`].
#[derive(Clone)]
pub struct MetricsLayer {
    recorder: Option<Arc<Recorder>>,
}

impl MetricsLayer {
    /// A layer recording into `registry`'s proxy-wide numbers.
    pub fn new(registry: &MetricsRegistry) -> Self {
        Self {
            recorder: Some(registry.proxy_recorder().clone()),
        }
    }

    /// A layer that records nothing: its services pass requests straight through. For a
    /// stack whose type must not depend on whether metrics are on.
    pub fn off() -> Self {
        Self { recorder: None }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        match &self.recorder {
            Some(recorder) => Metrics::with_recorder(inner, recorder.clone()),
            None => Metrics::off(inner),
        }
    }
}

impl fmt::Debug for MetricsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsLayer").finish_non_exhaustive()
    }
}

/// One backend's numbers, and the layer that records them: put it on that backend's
/// endpoint stack, below the balancer. From [`MetricsRegistry::backend`]; every handle of
/// one id (until it is [removed](MetricsRegistry::remove_backend)) records into the same
/// numbers.
#[derive(Clone)]
pub struct BackendMetrics {
    id: Arc<str>,
    recorder: Arc<Recorder>,
}

impl BackendMetrics {
    pub(crate) fn new(id: Arc<str>, recorder: Arc<Recorder>) -> Self {
        Self { id, recorder }
    }

    /// The backend's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The backend's numbers now.
    pub fn snapshot(&self) -> BackendSnapshot {
        BackendSnapshot::from_reading(&self.recorder.read())
    }
}

impl<S> Layer<S> for BackendMetrics {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics::with_recorder(inner, self.recorder.clone())
    }
}

impl fmt::Debug for BackendMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendMetrics")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
