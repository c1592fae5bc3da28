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
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::telemetry::access_log::ResponseFlags;
use crate::telemetry::peer::PeerMetadata;

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
        // Istio's proxies export `istio_build{component="proxy",tag=VERSION} 1`; dashboards and
        // Kiali read the version from it.
        let build = Family::<Vec<(String, String)>, Gauge>::default();
        build
            .get_or_create(&vec![
                ("component".to_string(), "proxy".to_string()),
                ("tag".to_string(), env!("CARGO_PKG_VERSION").to_string()),
            ])
            .set(1);
        registry.register("istio_build", "Proxy build", build);
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

fn or_unknown(s: &str) -> String {
    if s.is_empty() {
        "unknown".to_string()
    } else {
        s.to_string()
    }
}

/// The workload labels of one side, in Istio's order: `<side>_workload`,
/// `<side>_workload_namespace`, `<side>_app`, `<side>_version`, `<side>_canonical_service`,
/// `<side>_canonical_revision`, `<side>_cluster`.
const SOURCE_KEYS: [&str; 7] = [
    "source_workload",
    "source_workload_namespace",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
];
const DESTINATION_KEYS: [&str; 7] = [
    "destination_workload",
    "destination_workload_namespace",
    "destination_app",
    "destination_version",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
];

/// The label values of a workload (`unknown` for what it does not say; a known workload
/// without a canonical revision is `latest`).
fn side_values(w: Option<&PeerMetadata>) -> [String; 7] {
    let Some(w) = w else {
        return std::array::from_fn(|_| "unknown".to_string());
    };
    let revision = if w.canonical_revision.is_empty() {
        "latest".to_string()
    } else {
        w.canonical_revision.clone()
    };
    [
        or_unknown(&w.workload),
        or_unknown(&w.namespace),
        or_unknown(&w.app),
        or_unknown(&w.version),
        or_unknown(&w.canonical_service),
        revision,
        or_unknown(&w.cluster_id),
    ]
}

fn set(labels: &mut Labels, key: &str, value: String) {
    if let Some((_, v)) = labels.iter_mut().find(|(k, _)| *k == key) {
        *v = value;
    }
}

/// Base labels (everything but code, flags and gRPC status) for one (reporter, destination
/// service); the local side comes from the proxy's own metadata, the peer side is `unknown`
/// until the peer's metadata is known ([`with_source_peer`], [`with_destination_peer`]).
pub fn base_labels(
    reporter: Reporter,
    local: &PeerMetadata,
    service: &str,
    protocol: &'static str,
) -> Labels {
    let (svc_name, svc_ns) = match service.split_once('.') {
        Some((n, rest)) => (n, rest.split('.').next().unwrap_or("")),
        None => (service, ""),
    };
    let (src, dst) = match reporter {
        Reporter::Source => (side_values(Some(local)), side_values(None)),
        Reporter::Destination => (side_values(None), side_values(Some(local))),
    };
    let [sw, sns, sapp, sver, scs, scr, scl] = src;
    let [dw, dns, dapp, dver, dcs, dcr, dcl] = dst;
    vec![
        ("reporter", reporter.as_str().to_string()),
        ("source_workload", sw),
        ("source_workload_namespace", sns),
        ("source_principal", "unknown".to_string()),
        ("source_app", sapp),
        ("source_version", sver),
        ("source_canonical_service", scs),
        ("source_canonical_revision", scr),
        ("source_cluster", scl),
        ("destination_workload", dw),
        ("destination_workload_namespace", dns),
        ("destination_principal", "unknown".to_string()),
        ("destination_app", dapp),
        ("destination_version", dver),
        ("destination_service", or_unknown(service)),
        ("destination_service_name", or_unknown(svc_name)),
        ("destination_service_namespace", or_unknown(svc_ns)),
        ("destination_canonical_service", dcs),
        ("destination_canonical_revision", dcr),
        ("destination_cluster", dcl),
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

/// Destination-reported labels with the calling workload's metadata (`source_*`). The
/// namespace of the peer's certificate, already in `labels`, wins over the one it claims.
pub fn with_source_peer(labels: &Labels, peer: &PeerMetadata) -> Labels {
    let mut out = labels.clone();
    let from_cert = out
        .iter()
        .find(|(k, _)| *k == "source_workload_namespace")
        .map(|(_, v)| v.clone())
        .filter(|v| v != "unknown");
    for (k, v) in SOURCE_KEYS.iter().zip(side_values(Some(peer))) {
        set(&mut out, k, v);
    }
    if let Some(ns) = from_cert {
        set(&mut out, "source_workload_namespace", ns);
    }
    out
}

/// Source-reported labels with the answering workload's metadata (`destination_*`).
pub fn with_destination_peer(labels: &Labels, peer: &PeerMetadata) -> Labels {
    let mut out = labels.clone();
    for (k, v) in DESTINATION_KEYS.iter().zip(side_values(Some(peer))) {
        set(&mut out, k, v);
    }
    out
}

/// The metrics of requests with one peer, cached by the peer's `x-envoy-peer-metadata`
/// bytes: one slot, lock-free to read (one per upstream endpoint on the client side, one per
/// downstream connection on the server side, so the peer behind it rarely changes). A peer
/// already seen costs a byte comparison, not a base64 and protobuf decode.
#[derive(Debug, Default)]
pub struct PeerMetricsCache {
    slot: arc_swap::ArcSwapOption<CachedPeer>,
}

#[derive(Debug)]
struct CachedPeer {
    key: http::HeaderValue,
    metrics: Arc<RequestMetrics>,
}

impl PeerMetricsCache {
    /// The metrics for the peer whose header is `key`, made by `make` (from the decoded
    /// metadata) when the slot holds another peer or none. `make` gets None when `key` does
    /// not decode, and its answer is cached as well, so garbage is decoded once.
    pub fn get(
        &self,
        key: &http::HeaderValue,
        make: impl FnOnce(Option<&PeerMetadata>) -> Arc<RequestMetrics>,
    ) -> Arc<RequestMetrics> {
        if let Some(c) = self.slot.load().as_ref()
            && c.key == key
        {
            return Arc::clone(&c.metrics);
        }
        let decoded = PeerMetadata::from_header(key.as_bytes());
        if let Err(e) = &decoded {
            tracing::debug!(error = %e, "peer metadata ignored");
        }
        let metrics = make(decoded.as_ref().ok());
        self.slot.store(Some(Arc::new(CachedPeer {
            key: key.clone(),
            metrics: Arc::clone(&metrics),
        })));
        metrics
    }
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
    /// Handles under the current Telemetry overrides (see `telemetry::overrides`).
    overridden: arc_swap::ArcSwapOption<crate::telemetry::overrides::Slots>,
}

impl RequestMetrics {
    /// Metrics with these base labels.
    pub fn new(base: Labels) -> Self {
        RequestMetrics {
            base,
            slots: Default::default(),
            overridden: Default::default(),
        }
    }

    /// Records one finished request under Telemetry metric overrides (the hook of
    /// `telemetry::overrides`, which holds the logic).
    pub fn record_with(
        &self,
        m: &Metrics,
        code: u16,
        flags: ResponseFlags,
        d: Duration,
        ov: &crate::telemetry::overrides::Applied<'_>,
    ) {
        let cached = (flags.is_empty() && !ov.per_request())
            .then(|| CACHED_CODES.iter().position(|c| *c == code))
            .flatten();
        let make = || {
            let mut labels = self.base.clone();
            labels.push(("response_code", code.to_string()));
            labels.push(("response_flags", flags.to_string()));
            labels.push(("grpc_response_status", String::new()));
            let (requests, duration) = ov.labels(&labels);
            crate::telemetry::overrides::Handles {
                requests: requests.map(|l| m.requests.get_or_create_owned(&l)),
                duration: duration.map(|l| m.duration.get_or_create_owned(&l)),
            }
        };
        let record = |h: &crate::telemetry::overrides::Handles| {
            if let Some(c) = &h.requests {
                c.inc();
            }
            if let Some(hist) = &h.duration {
                hist.observe(d);
            }
        };
        match cached {
            Some(i) => ov.cached(&self.overridden, i, make, record),
            None => record(&make()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(l: &'a Labels, k: &str) -> &'a str {
        l.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no label {k}"))
    }

    fn workload(name: &str, ns: &str) -> PeerMetadata {
        PeerMetadata {
            name: format!("{name}-0"),
            namespace: ns.into(),
            workload: name.into(),
            cluster_id: "Kubernetes".into(),
            app: name.into(),
            version: "v1".into(),
            canonical_service: name.into(),
            canonical_revision: "v1".into(),
            ..PeerMetadata::default()
        }
    }

    #[test]
    fn the_build_gauge_names_the_proxy_and_its_version() {
        let text = Metrics::new().encode();
        let want = format!(
            "istio_build{{component=\"proxy\",tag=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&want), "{text}");
        assert!(text.contains("# TYPE istio_build gauge"), "{text}");
    }

    #[test]
    fn base_labels_are_istios_22_in_order_with_unknown_peers() {
        let me = workload("web", "blog");
        let l = base_labels(Reporter::Source, &me, "was.blog.svc.cluster.local", "http");
        let names: Vec<&str> = l.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "reporter",
                "source_workload",
                "source_workload_namespace",
                "source_principal",
                "source_app",
                "source_version",
                "source_canonical_service",
                "source_canonical_revision",
                "source_cluster",
                "destination_workload",
                "destination_workload_namespace",
                "destination_principal",
                "destination_app",
                "destination_version",
                "destination_service",
                "destination_service_name",
                "destination_service_namespace",
                "destination_canonical_service",
                "destination_canonical_revision",
                "destination_cluster",
                "request_protocol",
                "connection_security_policy",
            ]
        );
        assert_eq!(get(&l, "source_app"), "web");
        assert_eq!(get(&l, "source_cluster"), "Kubernetes");
        assert_eq!(get(&l, "destination_workload"), "unknown");
        assert_eq!(get(&l, "destination_canonical_revision"), "unknown");
        assert_eq!(get(&l, "destination_service_name"), "was");
        assert_eq!(get(&l, "destination_service_namespace"), "blog");
    }

    #[test]
    fn the_peer_fills_the_other_side_and_the_certificate_namespace_wins() {
        let me = workload("was", "blog");
        let base = base_labels(
            Reporter::Destination,
            &me,
            "was.blog.svc.cluster.local",
            "http",
        );
        let id = crate::identity::PeerIdentity::from_spiffe(
            "spiffe://cluster.local/ns/blog/sa/web",
            String::new(),
        )
        .unwrap();
        let conn = with_peer(&base, Some(&id));
        // The caller claims another namespace: its certificate says otherwise.
        let mut claimed = workload("web", "elsewhere");
        claimed.canonical_revision.clear();
        let l = with_source_peer(&conn, &claimed);
        assert_eq!(get(&l, "source_workload"), "web");
        assert_eq!(get(&l, "source_workload_namespace"), "blog");
        assert_eq!(get(&l, "source_app"), "web");
        assert_eq!(get(&l, "source_version"), "v1");
        assert_eq!(get(&l, "source_canonical_service"), "web");
        assert_eq!(get(&l, "source_canonical_revision"), "latest");
        assert_eq!(get(&l, "source_cluster"), "Kubernetes");
        assert_eq!(get(&l, "source_principal"), id.spiffe_id);
        assert_eq!(get(&l, "connection_security_policy"), "mutual_tls");
        assert_eq!(get(&l, "destination_workload"), "was");
        // Without a certificate, the claimed namespace is all there is.
        let l = with_source_peer(&with_peer(&base, None), &claimed);
        assert_eq!(get(&l, "source_workload_namespace"), "elsewhere");

        let web = workload("web", "blog");
        let out = base_labels(Reporter::Source, &web, "was.blog.svc.cluster.local", "http");
        let l = with_destination_peer(&out, &me);
        assert_eq!(get(&l, "destination_workload"), "was");
        assert_eq!(get(&l, "destination_workload_namespace"), "blog");
        assert_eq!(get(&l, "destination_version"), "v1");
        assert_eq!(get(&l, "destination_canonical_revision"), "v1");
        assert_eq!(get(&l, "destination_cluster"), "Kubernetes");
        assert_eq!(get(&l, "source_workload"), "web");
        assert_eq!(get(&l, "connection_security_policy"), "unknown");
    }

    #[test]
    fn a_peer_already_seen_is_not_decoded_again() {
        let cache = PeerMetricsCache::default();
        let a = http::HeaderValue::try_from(workload("a", "n").header_value()).unwrap();
        let b = http::HeaderValue::try_from(workload("b", "n").header_value()).unwrap();
        let made = std::cell::Cell::new(0);
        let make = |p: Option<&PeerMetadata>| {
            made.set(made.get() + 1);
            let labels = vec![("w", p.map_or("none", |p| p.workload.as_str()).to_string())];
            Arc::new(RequestMetrics::new(labels))
        };
        let first = cache.get(&a, make);
        assert_eq!(first.base(), &vec![("w", "a".to_string())]);
        assert!(Arc::ptr_eq(&first, &cache.get(&a, make)));
        assert_eq!(made.get(), 1);
        assert_eq!(cache.get(&b, make).base()[0].1, "b");
        let garbage = http::HeaderValue::from_static("!!");
        assert_eq!(cache.get(&garbage, make).base()[0].1, "none");
        let _ = cache.get(&garbage, make);
        assert_eq!(made.get(), 3, "garbage is decoded once");
    }
}
