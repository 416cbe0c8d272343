//! The backends' pool, breaker and health state, and the open upgraded connections, in
//! the Prometheus output, read at scrape time.

use std::fmt;

use switchyard_health::{Health, Registry};
use switchyard_metrics::prometheus_client::collector::Collector;
use switchyard_metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use switchyard_metrics::prometheus_client::metrics::counter::ConstCounter;
use switchyard_metrics::prometheus_client::metrics::gauge::ConstGauge;
use switchyard_metrics::prometheus_client::metrics::MetricType;

use crate::registry::{self, HttpEndpoints};
use crate::upgrade::Tunnels;

pub(crate) struct BackendState {
    pub(crate) registry: Registry<HttpEndpoints>,
}

impl fmt::Debug for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BackendState")
    }
}

/// One gauge family: `name{backend=…, extra…} value` for each backend.
fn family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: &[(Vec<(&str, &str)>, i64)],
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(*value).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for BackendState {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let report = self.registry.status();
        let breakers = &self.registry.endpoints().breakers;
        let mut up = Vec::new();
        let mut circuit = Vec::new();
        let mut weight = Vec::new();
        let mut pool = Vec::new();
        let mut waiting = Vec::new();
        let stats: Vec<_> = report
            .backends
            .iter()
            .map(|b| registry::pool_stats(&self.registry, &b.id))
            .collect();
        for (b, p) in report.backends.iter().zip(&stats) {
            let id = b.id.as_str();
            up.push((
                vec![("backend", id)],
                i64::from(b.health != Health::Unhealthy),
            ));
            let open = breakers.state(id).is_some_and(|s| !s.is_closed());
            circuit.push((vec![("backend", id)], i64::from(open)));
            weight.push((vec![("backend", id)], i64::from(b.weight)));
            for (state, n) in [("idle", p.idle), ("in_use", p.in_use)] {
                pool.push((vec![("backend", id), ("state", state)], n as i64));
            }
            waiting.push((vec![("backend", id)], p.waiting as i64));
        }
        family(
            &mut enc,
            "backend_up",
            "1 unless active health checks found the backend unhealthy.",
            &up,
        )?;
        family(
            &mut enc,
            "backend_circuit_open",
            "1 while the backend's circuit breaker is not closed.",
            &circuit,
        )?;
        family(
            &mut enc,
            "backend_weight",
            "The backend's balancing weight.",
            &weight,
        )?;
        family(
            &mut enc,
            "backend_pool_connections",
            "Open pooled connections to the backend, idle or in use.",
            &pool,
        )?;
        family(
            &mut enc,
            "backend_pool_waiting",
            "Requests waiting for a pooled connection.",
            &waiting,
        )?;
        let panic = [(Vec::new(), i64::from(report.panic))];
        family(
            &mut enc,
            "panic_mode",
            "1 while every backend is unhealthy and all are routed anyway.",
            &panic,
        )?;
        let mut m = enc.encode_descriptor(
            "dns_resolve_failures",
            "Failed resolutions of backend names and dns+srv:// names (the last answer kept).",
            None,
            MetricType::Counter,
        )?;
        let failures = ConstCounter::new(self.registry.resolve_failures());
        failures.encode(m.encode_family(&Vec::<(&str, &str)>::new())?)?;
        Ok(())
    }
}

/// The upgraded connections (WebSocket tunnels) open now, and opened in all.
pub(crate) struct TunnelGauge(pub(crate) Tunnels);

impl fmt::Debug for TunnelGauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TunnelGauge")
    }
}

impl Collector for TunnelGauge {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let stats = self.0.stats();
        let open = [(Vec::new(), i64::try_from(stats.open).unwrap_or(i64::MAX))];
        family(
            &mut enc,
            "upgraded_connections",
            "Upgraded connections (WebSocket tunnels) open now.",
            &open,
        )?;
        let mut m = enc.encode_descriptor(
            "upgraded_connections_opened",
            "Upgraded connections (WebSocket tunnels) opened.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(stats.total).encode(m.encode_family(&Vec::<(&str, &str)>::new())?)?;
        Ok(())
    }
}

/// The response cache's shared tier (Redis): its lookups, failures and latency.
pub(crate) struct SharedTierMetrics(pub(crate) switchyard_cache::CacheHandle);

impl fmt::Debug for SharedTierMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedTierMetrics")
    }
}

impl Collector for SharedTierMetrics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let Some(s) = self.0.stats().shared else {
            return Ok(());
        };
        let none = Vec::<(&str, &str)>::new();
        let counters = [
            (
                "cache_shared_hits",
                "Lookups that found the URL in the shared tier.",
                s.hits,
            ),
            ("cache_shared_misses", "Lookups that did not.", s.misses),
            (
                "cache_shared_errors",
                "Shared tier commands that failed or timed out.",
                s.errors,
            ),
            (
                "cache_shared_skipped",
                "Shared tier commands not sent (breaker open, no connection).",
                s.skipped,
            ),
            (
                "cache_shared_writes",
                "Responses written to the shared tier.",
                s.writes,
            ),
            ("cache_shared_calls", "Shared tier commands sent.", s.calls),
            (
                "cache_shared_invalidations_received",
                "Invalidations received from other instances.",
                s.invalidations_received,
            ),
            (
                "cache_shared_resubscribe_clears",
                "Local store clears after the invalidation subscription dropped.",
                s.resubscribe_clears,
            ),
        ];
        for (name, help, value) in counters {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(m.encode_family(&none)?)?;
        }
        let mut m = enc.encode_descriptor(
            "cache_shared_latency_seconds",
            "Time spent in shared tier commands (divide by cache_shared_calls for the mean).",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(s.latency_micros as f64 / 1e6).encode(m.encode_family(&none)?)?;
        family(
            &mut enc,
            "cache_shared_up",
            "1 while the shared tier's connection is up and its last command succeeded.",
            &[(Vec::new(), i64::from(s.connected))],
        )?;
        family(
            &mut enc,
            "cache_shared_invalidations_pending",
            "Invalidations the shared tier has not taken yet, sent again when it answers.",
            &[(Vec::new(), s.invalidations_pending as i64)],
        )
    }
}
