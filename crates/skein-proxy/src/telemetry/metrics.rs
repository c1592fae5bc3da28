//! Istio standard metrics with prometheus-client.
//!
//! Label sets are built once per (cluster, reporter) and the counter/histogram handles for the
//! common response codes are cached in `OnceLock` slots, so recording a request is a couple of
//! atomic increments: no string hashing, no lock. Rare codes and flagged responses go through
//! the family lookup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::telemetry::access_log::ResponseFlags;

/// Envoy's default histogram buckets in milliseconds (Istio uses them unchanged).
pub const ENVOY_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// A lock-free histogram over [`ENVOY_BUCKETS_MS`].
#[derive(Debug, Clone, Default)]
pub struct AtomicHistogram {
    inner: Arc<HistInner>,
}

#[derive(Debug, Default)]
struct HistInner {
    /// One slot per bucket plus +Inf.
    buckets: [AtomicU64; 20],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl AtomicHistogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let ms = us as f64 / 1000.0;
        let idx = ENVOY_BUCKETS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(ENVOY_BUCKETS_MS.len());
        self.inner.buckets[idx].fetch_add(1, Ordering::Relaxed);
        self.inner.count.fetch_add(1, Ordering::Relaxed);
        self.inner.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut buckets = [(0.0, 0u64); 20];
        for (i, slot) in buckets.iter_mut().enumerate() {
            let bound = ENVOY_BUCKETS_MS.get(i).copied().unwrap_or(f64::MAX);
            *slot = (bound, self.inner.buckets[i].load(Ordering::Relaxed));
        }
        let sum = self.inner.sum_us.load(Ordering::Relaxed) as f64 / 1000.0;
        encoder.encode_histogram::<NoLabelSet>(sum, self.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[derive(Debug, Clone, Copy)]
struct HistCtor;
impl MetricConstructor<AtomicHistogram> for HistCtor {
    fn new_metric(&self) -> AtomicHistogram {
        AtomicHistogram::default()
    }
}

/// A label set: static names, owned values.
pub type Labels = Vec<(&'static str, String)>;

/// Which side reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    /// Outbound and gateway traffic (`reporter="source"`).
    Source,
    /// Inbound traffic (`reporter="destination"`).
    Destination,
}

impl Reporter {
    fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }
}

/// The proxy's metric families.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    duration: Family<Labels, AtomicHistogram, HistCtor>,
    tcp_opened: Family<Labels, Counter>,
    tcp_closed: Family<Labels, Counter>,
    tcp_sent: Family<Labels, Counter>,
    tcp_received: Family<Labels, Counter>,
    outlier_ejections: Family<Vec<(String, String)>, Counter>,
    /// `skein_config_policy_errors_total`: AuthorizationPolicies that did not compile (each
    /// replaced by a DENY-all stand-in), counted per snapshot applied.
    pub config_policy_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers the families under the `istio_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        let duration = Family::new_with_constructor(HistCtor);
        let tcp_opened = Family::<Labels, Counter>::default();
        let tcp_closed = Family::<Labels, Counter>::default();
        let tcp_sent = Family::<Labels, Counter>::default();
        let tcp_received = Family::<Labels, Counter>::default();
        // prometheus-client appends `_total` to counters.
        registry.register("istio_requests", "Requests handled", requests.clone());
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds",
            duration.clone(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            tcp_closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to downstream",
            tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from downstream",
            tcp_received.clone(),
        );
        let outlier_ejections = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "skein_outlier_ejections",
            "Endpoints ejected by outlier detection",
            outlier_ejections.clone(),
        );
        let config_policy_errors = Counter::default();
        registry.register(
            "skein_config_policy_errors",
            "AuthorizationPolicies that did not compile and deny the workload's traffic instead",
            config_policy_errors.clone(),
        );
        Metrics {
            registry,
            config_policy_errors,
            outlier_ejections,
            requests,
            duration,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
        }
    }

    /// OpenMetrics text of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// The `skein_outlier_ejections_total{cluster}` counter of a cluster.
    pub fn outlier_ejections(&self, cluster: &str) -> Counter {
        self.outlier_ejections
            .get_or_create(&vec![("cluster".to_string(), cluster.to_string())])
            .clone()
    }

    /// Records TCP connection open.
    pub fn tcp_open(&self, base: &Labels) {
        self.tcp_opened.get_or_create(base).inc();
    }

    /// Records TCP connection close with byte counts.
    pub fn tcp_close(&self, base: &Labels, sent: u64, received: u64) {
        self.tcp_closed.get_or_create(base).inc();
        self.tcp_sent.get_or_create(base).inc_by(sent);
        self.tcp_received.get_or_create(base).inc_by(received);
    }
}

/// Identity of the local workload, for `source_*` or `destination_*` labels.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// Workload name.
    pub workload: String,
    /// Namespace.
    pub namespace: String,
    /// `app` label (canonical service).
    pub app: String,
    /// `version` label.
    pub version: String,
}

fn or_unknown(s: &str) -> String {
    if s.is_empty() {
        "unknown".to_string()
    } else {
        s.to_string()
    }
}

/// Base labels (everything but code and flags) for one (reporter, destination service).
pub fn base_labels(
    reporter: Reporter,
    local: &Peer,
    service: &str,
    protocol: &'static str,
) -> Labels {
    let (svc_name, svc_ns) = match service.split_once('.') {
        Some((n, rest)) => (n, rest.split('.').next().unwrap_or("")),
        None => (service, ""),
    };
    let (src, dst) = match reporter {
        Reporter::Source => (local.clone(), Peer::default()),
        Reporter::Destination => (Peer::default(), local.clone()),
    };
    vec![
        ("reporter", reporter.as_str().to_string()),
        ("source_workload", or_unknown(&src.workload)),
        ("source_workload_namespace", or_unknown(&src.namespace)),
        ("source_canonical_service", or_unknown(&src.app)),
        ("source_canonical_revision", or_unknown(&src.version)),
        ("destination_workload", or_unknown(&dst.workload)),
        ("destination_workload_namespace", or_unknown(&dst.namespace)),
        ("destination_canonical_service", or_unknown(&dst.app)),
        ("destination_canonical_revision", or_unknown(&dst.version)),
        ("source_principal", "unknown".to_string()),
        ("destination_principal", "unknown".to_string()),
        ("destination_service", or_unknown(service)),
        ("destination_service_name", or_unknown(svc_name)),
        ("destination_service_namespace", or_unknown(svc_ns)),
        ("request_protocol", protocol.to_string()),
        ("connection_security_policy", "unknown".to_string()),
    ]
}

/// The inbound labels of one downstream connection: the mTLS peer's principal and namespace,
/// and `connection_security_policy` (`mutual_tls` or `none`) as the destination reports it.
pub fn with_peer(base: &Labels, peer: Option<&crate::identity::PeerIdentity>) -> Labels {
    let mut labels = base.clone();
    for (k, v) in labels.iter_mut() {
        match (*k, peer) {
            ("connection_security_policy", Some(_)) => *v = "mutual_tls".into(),
            ("connection_security_policy", None) => *v = "none".into(),
            ("source_principal", Some(p)) => v.clone_from(&p.spiffe_id),
            ("source_workload_namespace", Some(p)) if !p.namespace.is_empty() => {
                v.clone_from(&p.namespace)
            }
            _ => {}
        }
    }
    labels
}

/// Response codes whose handles are cached without lookup.
const CACHED_CODES: [u16; 16] = [
    200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 429, 500, 502, 503, 504,
];

#[derive(Debug)]
struct Handles {
    requests: Counter,
    duration: AtomicHistogram,
}

/// Per (cluster, reporter) request metrics with cached handles.
#[derive(Debug)]
pub struct RequestMetrics {
    base: Labels,
    slots: [OnceLock<Handles>; CACHED_CODES.len()],
}

impl RequestMetrics {
    /// Metrics with these base labels.
    pub fn new(base: Labels) -> Self {
        RequestMetrics {
            base,
            slots: Default::default(),
        }
    }

    /// The base labels (for TCP metrics).
    pub fn base(&self) -> &Labels {
        &self.base
    }

    fn handles(&self, m: &Metrics, code: u16, flags: ResponseFlags) -> Handles {
        let mut labels = self.base.clone();
        labels.push(("response_code", code.to_string()));
        labels.push(("response_flags", flags.to_string()));
        labels.push(("grpc_response_status", String::new()));
        Handles {
            requests: m.requests.get_or_create_owned(&labels),
            duration: m.duration.get_or_create_owned(&labels),
        }
    }

    /// Records one finished request.
    pub fn record(&self, m: &Metrics, code: u16, flags: ResponseFlags, d: Duration) {
        if flags.is_empty()
            && let Some(i) = CACHED_CODES.iter().position(|c| *c == code)
        {
            let h = self.slots[i].get_or_init(|| self.handles(m, code, flags));
            h.requests.inc();
            h.duration.observe(d);
            return;
        }
        let h = self.handles(m, code, flags);
        h.requests.inc();
        h.duration.observe(d);
    }
}
