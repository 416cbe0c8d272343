//! Prometheus exposition: the atomics are read at scrape time by a collector, never
//! recorded twice.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, text, DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::histogram;
use crate::recorder::Reading;
use crate::registry::Inner;

/// The prefix of every metric name.
const PREFIX: &str = "switchyard";

/// A text format for Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextFormat {
    /// OpenMetrics 1.0 text, ending `# EOF`: what Prometheus asks for first.
    #[default]
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4, for scrapers that know only that.
    Prometheus,
}

impl TextFormat {
    /// The `Content-Type` to serve the text with.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Prometheus => prometheus_text::CONTENT_TYPE,
        }
    }
}

pub(crate) fn encode(inner: &Arc<Inner>, format: TextFormat) -> String {
    let hooks = inner.hooks.load_full();
    let own: Box<dyn Collector> = Box::new(Own(inner.clone()));
    let extra = hooks
        .collectors
        .iter()
        .map(|c| Box::new(Shared(c.clone())) as Box<dyn Collector>);
    let mut out = String::new();
    // One registry per collector, so that one that fails is left out alone.
    for collector in std::iter::once(own).chain(extra) {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(collector);
        let mut part = String::new();
        let written = match format {
            TextFormat::OpenMetrics => text::encode_registry(&mut part, &registry),
            TextFormat::Prometheus => prometheus_text::encode(&mut part, &registry),
        };
        if written.is_ok() {
            out.push_str(&part);
        }
    }
    if format == TextFormat::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

/// A registered collector, shared between scrapes.
#[derive(Debug)]
struct Shared(Arc<dyn Collector>);

impl Collector for Shared {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> fmt::Result {
        self.0.encode(encoder)
    }
}

/// switchyard's own metrics.
struct Own(Arc<Inner>);

impl fmt::Debug for Own {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("switchyard metrics")
    }
}

/// The readings of one family of series: no label for the proxy, `backend` for backends.
struct Series<'a> {
    labels: Vec<(&'static str, &'a str)>,
    reading: Reading,
}

impl Collector for Own {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let proxy = [Series {
            labels: Vec::new(),
            reading: self.0.proxy.read(),
        }];
        encode_requests(&mut enc, "", "", &proxy)?;

        let backends = self.0.backends.load_full();
        let backends: Vec<_> = backends
            .iter()
            .map(|(id, r)| Series {
                labels: vec![("backend", &**id)],
                reading: r.read(),
            })
            .collect();
        encode_requests(&mut enc, "backend_", ", per backend", &backends)?;

        let hooks = self.0.hooks.load_full();
        if let Some(cache) = hooks.cache() {
            counter(
                &mut enc,
                "cache_hits",
                "Responses served from the cache.",
                cache.hits,
            )?;
            counter(
                &mut enc,
                "cache_misses",
                "Cacheable requests the cache could not answer.",
                cache.misses,
            )?;
        }
        if let Some(retries) = hooks.retries() {
            counter(&mut enc, "retries", "Retries made.", retries)?;
        }
        Ok(())
    }
}

/// The request counter, in-flight gauge and latency histogram of `series`, their names
/// starting with `prefix` and their help ending with `scope`.
fn encode_requests(
    enc: &mut DescriptorEncoder<'_>,
    prefix: &str,
    scope: &str,
    series: &[Series<'_>],
) -> fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let name = format!("{prefix}requests");
    let mut m = enc.encode_descriptor(
        &name,
        &format!(
            "Requests finished{scope}: answered below 500 (success), with a 5xx or an \
             error (failure), or dropped before the response head (cancelled)."
        ),
        None,
        MetricType::Counter,
    )?;
    for s in series {
        let r = &s.reading;
        for (outcome, n) in [
            ("success", r.succeeded),
            ("failure", r.failed),
            ("cancelled", r.cancelled),
        ] {
            let mut labels = s.labels.clone();
            labels.push(("outcome", outcome));
            m.encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
    }

    let name = format!("{prefix}requests_in_flight");
    let mut m = enc.encode_descriptor(
        &name,
        &format!("Requests started and not yet answered or dropped{scope}."),
        None,
        MetricType::Gauge,
    )?;
    for s in series {
        m.encode_family(&s.labels)?
            .encode_gauge(&s.reading.in_flight())?;
    }

    let name = format!("{prefix}request_duration");
    let mut m = enc.encode_descriptor(
        &name,
        &format!("Time from call to response head of answered requests{scope}."),
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for s in series {
        let r = &s.reading;
        let buckets = export_buckets(&r.buckets);
        m.encode_family(&s.labels)?.encode_histogram::<NoLabelSet>(
            r.sum().as_secs_f64(),
            r.count,
            &buckets,
            None,
        )?;
    }
    Ok(())
}

/// The fine buckets summed into the exported ones: `(upper bound in seconds, count)`, not
/// cumulative (the encoder accumulates), the last one `+Inf`.
fn export_buckets(fine: &[u64]) -> Vec<(f64, u64)> {
    let mut out = Vec::new();
    let mut from = 0;
    for bound in histogram::export_bounds() {
        let to = histogram::index(bound);
        out.push((bound as f64 / 1e6, fine[from..to].iter().sum()));
        from = to;
    }
    out.push((f64::INFINITY, fine[from..].iter().sum()));
    out
}

fn counter(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}
