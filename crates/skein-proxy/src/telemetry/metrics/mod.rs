//! Istio standard metrics with prometheus-client.
//!
//! Label sets are built once per (cluster, reporter) and the counter/histogram handles for the
//! common response codes are cached in `OnceLock` slots, so recording a request is a couple of
//! atomic increments: no string hashing, no lock. Rare codes and flagged responses go through
//! the family lookup.

pub(crate) mod overrides;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

pub(crate) use crate::telemetry::access_log::ResponseFlags;
use crate::telemetry::peer::PeerMetadata;

/// Envoy's default histogram buckets in milliseconds (Istio uses them unchanged).
pub const ENVOY_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// The bucket of a value (milliseconds or bytes): the first boundary it does not exceed,
/// else +Inf.
fn bucket_of(v: f64) -> usize {
    // A plain loop: most values land in the first few buckets.
    let mut i = 0;
    while i < ENVOY_BUCKETS_MS.len() && v > ENVOY_BUCKETS_MS[i] {
        i += 1;
    }
    i
}

#[derive(Debug, Default)]
struct HistInner {
    /// One slot per bucket plus +Inf.
    buckets: [AtomicU64; 20],
    count: AtomicU64,
    /// Sum in the histogram's integer unit (microseconds, or bytes).
    sum: AtomicU64,
}

impl HistInner {
    fn observe(&self, bucket_value: f64, sum_units: u64) {
        self.buckets[bucket_of(bucket_value)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(sum_units, Ordering::Relaxed);
    }

    fn encode(&self, sum: f64, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut buckets = [(0.0, 0u64); 20];
        for (i, slot) in buckets.iter_mut().enumerate() {
            let bound = ENVOY_BUCKETS_MS.get(i).copied().unwrap_or(f64::MAX);
            *slot = (bound, self.buckets[i].load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

/// A lock-free histogram of durations in milliseconds over [`ENVOY_BUCKETS_MS`].
#[derive(Debug, Clone, Default)]
pub struct AtomicHistogram {
    inner: Arc<HistInner>,
}

impl AtomicHistogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.inner.observe(us as f64 / 1000.0, us);
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let sum = self.inner.sum.load(Ordering::Relaxed) as f64 / 1000.0;
        self.inner.encode(sum, encoder)
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

/// A lock-free histogram of sizes in bytes over the same boundaries (Envoy's defaults apply
/// to every histogram, whatever its unit).
#[derive(Debug, Clone, Default)]
pub struct ByteHistogram {
    inner: Arc<HistInner>,
}

impl ByteHistogram {
    /// Records one size.
    pub fn observe(&self, bytes: u64) {
        self.inner.observe(bytes as f64, bytes);
    }
}

impl TypedMetric for ByteHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ByteHistogram {
    fn encode(&self, encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let sum = self.inner.sum.load(Ordering::Relaxed) as f64;
        self.inner.encode(sum, encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[derive(Debug, Clone, Copy)]
struct ByteHistCtor;
impl MetricConstructor<ByteHistogram> for ByteHistCtor {
    fn new_metric(&self) -> ByteHistogram {
        ByteHistogram::default()
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
    request_bytes: Family<Labels, ByteHistogram, ByteHistCtor>,
    response_bytes: Family<Labels, ByteHistogram, ByteHistCtor>,
    request_messages: Family<Labels, Counter>,
    response_messages: Family<Labels, Counter>,
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
        let request_bytes = Family::new_with_constructor(ByteHistCtor);
        let response_bytes = Family::new_with_constructor(ByteHistCtor);
        let request_messages = Family::<Labels, Counter>::default();
        let response_messages = Family::<Labels, Counter>::default();
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
        // Istio's filter records downstream wire bytes (head and body), not body sizes.
        registry.register(
            "istio_request_bytes",
            "Request size in bytes as received from downstream (head and body)",
            request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response size in bytes as sent downstream (head and body)",
            response_bytes.clone(),
        );
        registry.register(
            "istio_request_messages",
            "gRPC messages received from downstream",
            request_messages.clone(),
        );
        registry.register(
            "istio_response_messages",
            "gRPC messages sent downstream",
            response_messages.clone(),
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
            request_bytes,
            response_bytes,
            request_messages,
            response_messages,
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

    /// Records a TCP connection opened with `labels` ([`tcp_labels`]), and resolves the
    /// handles its byte counts and close are reported with.
    pub fn tcp_open(&self, labels: &Labels) -> TcpReport {
        self.tcp_opened.get_or_create(labels).inc();
        TcpReport {
            sent: self.tcp_sent.get_or_create_owned(labels),
            received: self.tcp_received.get_or_create_owned(labels),
            closed: self.tcp_closed.get_or_create_owned(labels),
            reported: [0, 0],
        }
    }
}

/// The counters of one open TCP connection: byte deltas are added every reporting interval
/// ([`TcpReport::report`]) and at close, as Istio's filter reports them.
#[derive(Debug)]
pub struct TcpReport {
    sent: Counter,
    received: Counter,
    closed: Counter,
    /// What was already added: [received, sent].
    reported: [u64; 2],
}

impl TcpReport {
    /// Adds what was received from and sent to downstream since the last report (the
    /// arguments are the connection's totals so far).
    pub fn report(&mut self, received: u64, sent: u64) {
        let r = received.saturating_sub(self.reported[0]);
        let s = sent.saturating_sub(self.reported[1]);
        if r > 0 {
            self.received.inc_by(r);
        }
        if s > 0 {
            self.sent.inc_by(s);
        }
        self.reported = [self.reported[0].max(received), self.reported[1].max(sent)];
    }

    /// The last report and the close.
    pub fn close(mut self, received: u64, sent: u64) {
        self.report(received, sent);
        self.closed.inc();
    }
}

/// The labels of TCP series: the connection's base labels with `request_protocol="tcp"`
/// (whatever the cluster's protocol) and `response_flags`, as Istio's filter sets them when
/// the connection opens (TCP series have no `response_code` or `grpc_response_status`).
pub fn tcp_labels(base: &Labels, flags: ResponseFlags) -> Labels {
    let mut labels = base.clone();
    set(&mut labels, "request_protocol", "tcp".to_string());
    labels.push(("response_flags", flags.to_string()));
    labels
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

/// The label values of a workload (`unknown` for what it does not say; a missing canonical
/// revision is `latest`, for an unknown peer too, as Istio's filter fills it).
fn side_values(w: Option<&PeerMetadata>) -> [String; 7] {
    let Some(w) = w else {
        let mut v: [String; 7] = std::array::from_fn(|_| "unknown".to_string());
        v[5] = "latest".to_string();
        return v;
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

/// What `destination_service*` say about where a request or connection went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceLabel<'a> {
    /// A service host (`destination_service`); its name is the host up to the first dot.
    Host(&'a str),
    /// One of Istio's special clusters (`PassthroughCluster`, `BlackHoleCluster`,
    /// `InboundPassthroughCluster`): `destination_service_name` is the cluster's name and
    /// `destination_service` the host when known (source side: `unknown`; destination side:
    /// the workload's canonical service).
    Special(&'a str),
}

/// Base labels (everything but code, flags and gRPC status) for one (reporter, destination
/// service); the local side comes from the proxy's own metadata, the peer side is `unknown`
/// until the peer's metadata is known ([`with_source_peer`], [`with_destination_peer`]).
///
/// As Istio's filter: the destination reporter names its own namespace as
/// `destination_service_namespace` and falls back to its canonical service when the cluster
/// names no service (inbound traffic does not use the Host header); the source reporter takes
/// `destination_service_namespace` from the peer (`unknown` until it answers).
/// `request_protocol` is the cluster's; HTTP series set `http`/`grpc`, TCP series `tcp`.
pub fn base_labels(
    reporter: Reporter,
    local: &PeerMetadata,
    service: ServiceLabel<'_>,
    protocol: &'static str,
) -> Labels {
    let fallback = match reporter {
        Reporter::Source => "unknown",
        Reporter::Destination => local.canonical_service.as_str(),
    };
    let (svc, svc_name) = match service {
        ServiceLabel::Host(h) if !h.is_empty() => (h, h.split('.').next().unwrap_or(h)),
        ServiceLabel::Host(_) => (fallback, fallback),
        ServiceLabel::Special(name) => (fallback, name),
    };
    let svc_ns = match reporter {
        Reporter::Source => "",
        Reporter::Destination => local.namespace.as_str(),
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
        ("destination_service", or_unknown(svc)),
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
/// the proxy's own principal (`local`, its certificate's URI SAN), and
/// `connection_security_policy` as the destination reports it: `mutual_tls` when both sides
/// presented a SPIFFE certificate, else `none`.
pub fn with_peer(
    base: &Labels,
    peer: Option<&crate::identity::PeerIdentity>,
    local: Option<&str>,
) -> Labels {
    let mut labels = base.clone();
    let mtls = peer.is_some() && local.is_some();
    for (k, v) in labels.iter_mut() {
        match (*k, peer) {
            ("connection_security_policy", _) if mtls => *v = "mutual_tls".into(),
            ("connection_security_policy", _) => *v = "none".into(),
            ("source_principal", Some(p)) => v.clone_from(&p.spiffe_id),
            ("source_workload_namespace", Some(p)) if !p.namespace.is_empty() => {
                v.clone_from(&p.namespace)
            }
            ("destination_principal", Some(_)) => {
                if let Some(l) = local {
                    *v = l.to_string();
                }
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

/// Source-reported labels with the answering workload's metadata (`destination_*`, and
/// `destination_service_namespace`, which the source side takes from the peer).
pub fn with_destination_peer(labels: &Labels, peer: &PeerMetadata) -> Labels {
    let mut out = labels.clone();
    for (k, v) in DESTINATION_KEYS.iter().zip(side_values(Some(peer))) {
        set(&mut out, k, v);
    }
    set(
        &mut out,
        "destination_service_namespace",
        or_unknown(&peer.namespace),
    );
    out
}

/// Source-reported labels of a request or connection over mesh mTLS: this proxy's principal
/// (`local`, its certificate's URI SAN) as `source_principal`, the upstream's as
/// `destination_principal`, and the namespace in the upstream's SPIFFE id as the peer
/// namespace (Istio reads it from the certificate before the peer's metadata).
pub fn with_upstream_principals(
    labels: &Labels,
    local: Option<&str>,
    peer: Option<&str>,
) -> Labels {
    let mut out = labels.clone();
    if let Some(l) = local {
        set(&mut out, "source_principal", l.to_string());
    }
    if let Some(p) = peer {
        set(&mut out, "destination_principal", p.to_string());
        if let Some(id) = crate::identity::PeerIdentity::from_spiffe(p, String::new())
            && !id.namespace.is_empty()
        {
            set(
                &mut out,
                "destination_workload_namespace",
                id.namespace.clone(),
            );
            set(&mut out, "destination_service_namespace", id.namespace);
        }
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
/// gRPC statuses (0..=16) cached for HTTP 200 without flags.
const CACHED_GRPC: usize = 17;

/// How one HTTP/gRPC request ended, for its metrics.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// The response code (0 when no response was sent).
    pub code: u16,
    /// Envoy's response flags.
    pub flags: ResponseFlags,
    /// Request-complete time.
    pub duration: Duration,
    /// Downstream wire bytes received (request head and body).
    pub request_bytes: u64,
    /// Downstream wire bytes sent (response head and body).
    pub response_bytes: u64,
    /// For a gRPC request: its status and message counts.
    pub grpc: Option<GrpcFinished>,
}

/// The gRPC part of [`Finished`].
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcFinished {
    /// `grpc-status` (None: no response at all, the label is then empty).
    pub status: Option<u32>,
    /// Messages received from downstream.
    pub request_messages: u64,
    /// Messages sent downstream.
    pub response_messages: u64,
}

#[derive(Debug)]
struct Handles {
    requests: Counter,
    duration: AtomicHistogram,
    request_bytes: ByteHistogram,
    response_bytes: ByteHistogram,
    /// gRPC series only: request and response messages.
    messages: Option<(Counter, Counter)>,
}

impl Handles {
    fn record(&self, f: &Finished) {
        self.requests.inc();
        self.duration.observe(f.duration);
        self.request_bytes.observe(f.request_bytes);
        self.response_bytes.observe(f.response_bytes);
        if let (Some((req, resp)), Some(g)) = (&self.messages, &f.grpc) {
            if g.request_messages > 0 {
                req.inc_by(g.request_messages);
            }
            if g.response_messages > 0 {
                resp.inc_by(g.response_messages);
            }
        }
    }
}

/// Per (cluster, reporter) request metrics with cached handles.
#[derive(Debug)]
pub struct RequestMetrics {
    base: Labels,
    slots: [OnceLock<Handles>; CACHED_CODES.len()],
    grpc_slots: [OnceLock<Handles>; CACHED_GRPC],
    /// Handles under the current Telemetry overrides (see `telemetry::overrides`).
    overridden: arc_swap::ArcSwapOption<overrides::Slots>,
}

impl RequestMetrics {
    /// Metrics with these base labels.
    pub fn new(base: Labels) -> Self {
        RequestMetrics {
            base,
            slots: Default::default(),
            grpc_slots: Default::default(),
            overridden: Default::default(),
        }
    }

    /// Records one finished request under Telemetry metric overrides (the hook of
    /// `telemetry::overrides`, which holds the logic).
    pub fn record_with(&self, m: &Metrics, f: &Finished, ov: &overrides::Applied<'_>) {
        let grpc = f.grpc.map(|g| g.status);
        let cached = (f.flags.is_empty() && grpc.is_none() && !ov.per_request())
            .then(|| CACHED_CODES.iter().position(|c| *c == f.code))
            .flatten();
        let make = || {
            let l = ov.labels(&self.labels(f.code, f.flags, grpc));
            let grpc_only = |l: Option<Labels>| l.filter(|_| grpc.is_some());
            overrides::Handles {
                requests: l.requests.map(|l| m.requests.get_or_create_owned(&l)),
                duration: l.duration.map(|l| m.duration.get_or_create_owned(&l)),
                request_bytes: l
                    .request_bytes
                    .map(|l| m.request_bytes.get_or_create_owned(&l)),
                response_bytes: l
                    .response_bytes
                    .map(|l| m.response_bytes.get_or_create_owned(&l)),
                request_messages: grpc_only(l.request_messages)
                    .map(|l| m.request_messages.get_or_create_owned(&l)),
                response_messages: grpc_only(l.response_messages)
                    .map(|l| m.response_messages.get_or_create_owned(&l)),
            }
        };
        let record = |h: &overrides::Handles| {
            if let Some(c) = &h.requests {
                c.inc();
            }
            if let Some(hist) = &h.duration {
                hist.observe(f.duration);
            }
            if let Some(hist) = &h.request_bytes {
                hist.observe(f.request_bytes);
            }
            if let Some(hist) = &h.response_bytes {
                hist.observe(f.response_bytes);
            }
            if let Some(g) = &f.grpc {
                if let Some(c) = &h.request_messages
                    && g.request_messages > 0
                {
                    c.inc_by(g.request_messages);
                }
                if let Some(c) = &h.response_messages
                    && g.response_messages > 0
                {
                    c.inc_by(g.response_messages);
                }
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

    /// The full label set of one HTTP or gRPC series.
    fn labels(&self, code: u16, flags: ResponseFlags, grpc: Option<Option<u32>>) -> Labels {
        let mut labels = self.base.clone();
        let protocol = if grpc.is_some() { "grpc" } else { "http" };
        set(&mut labels, "request_protocol", protocol.to_string());
        labels.push(("response_code", code.to_string()));
        labels.push(("response_flags", flags.to_string()));
        let status = grpc.flatten().map(|s| s.to_string()).unwrap_or_default();
        labels.push(("grpc_response_status", status));
        labels
    }

    fn handles(
        &self,
        m: &Metrics,
        code: u16,
        flags: ResponseFlags,
        grpc: Option<Option<u32>>,
    ) -> Handles {
        let labels = self.labels(code, flags, grpc);
        Handles {
            requests: m.requests.get_or_create_owned(&labels),
            duration: m.duration.get_or_create_owned(&labels),
            request_bytes: m.request_bytes.get_or_create_owned(&labels),
            response_bytes: m.response_bytes.get_or_create_owned(&labels),
            messages: grpc.map(|_| {
                (
                    m.request_messages.get_or_create_owned(&labels),
                    m.response_messages.get_or_create_owned(&labels),
                )
            }),
        }
    }

    /// Records one finished request: the common series through cached handles (atomic
    /// increments only), the rest through the family lookup.
    pub fn record(&self, m: &Metrics, f: &Finished) {
        let grpc = f.grpc.map(|g| g.status);
        let slot = match grpc {
            _ if !f.flags.is_empty() => None,
            None => CACHED_CODES
                .iter()
                .position(|c| *c == f.code)
                .map(|i| &self.slots[i]),
            Some(Some(s)) if f.code == 200 => self.grpc_slots.get(s as usize),
            Some(_) => None,
        };
        match slot {
            Some(slot) => slot
                .get_or_init(|| self.handles(m, f.code, f.flags, grpc))
                .record(f),
            None => self.handles(m, f.code, f.flags, grpc).record(f),
        }
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
    fn values_land_in_the_first_bucket_they_do_not_exceed() {
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(0.5), 0);
        assert_eq!(bucket_of(0.6), 1);
        assert_eq!(bucket_of(100.0), 6);
        assert_eq!(bucket_of(101.0), 7);
        assert_eq!(bucket_of(3_600_000.0), 18);
        assert_eq!(bucket_of(3_600_001.0), 19);
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
        let l = base_labels(
            Reporter::Source,
            &me,
            ServiceLabel::Host("was.blog.svc.cluster.local"),
            "http",
        );
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
        // An unknown peer's revision is `latest`, as Istio's filter fills it.
        assert_eq!(get(&l, "destination_canonical_revision"), "latest");
        assert_eq!(get(&l, "destination_service_name"), "was");
        // The source side takes the service namespace from the peer: unknown until it answers.
        assert_eq!(get(&l, "destination_service_namespace"), "unknown");
    }

    #[test]
    fn the_peer_fills_the_other_side_and_the_certificate_namespace_wins() {
        let me = workload("was", "blog");
        let base = base_labels(
            Reporter::Destination,
            &me,
            ServiceLabel::Host("was.blog.svc.cluster.local"),
            "http",
        );
        let id = crate::identity::PeerIdentity::from_spiffe(
            "spiffe://cluster.local/ns/blog/sa/web",
            String::new(),
        )
        .unwrap();
        let own = "spiffe://cluster.local/ns/blog/sa/was";
        let conn = with_peer(&base, Some(&id), Some(own));
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
        let l = with_source_peer(&with_peer(&base, None, None), &claimed);
        assert_eq!(get(&l, "source_workload_namespace"), "elsewhere");

        let web = workload("web", "blog");
        let out = base_labels(
            Reporter::Source,
            &web,
            ServiceLabel::Host("was.blog.svc.cluster.local"),
            "http",
        );
        let l = with_destination_peer(&out, &me);
        assert_eq!(get(&l, "destination_workload"), "was");
        assert_eq!(get(&l, "destination_workload_namespace"), "blog");
        assert_eq!(get(&l, "destination_version"), "v1");
        assert_eq!(get(&l, "destination_canonical_revision"), "v1");
        assert_eq!(get(&l, "destination_cluster"), "Kubernetes");
        assert_eq!(get(&l, "destination_service_namespace"), "blog");
        assert_eq!(get(&l, "source_workload"), "web");
        assert_eq!(get(&l, "connection_security_policy"), "unknown");
    }

    #[test]
    fn the_destination_reporter_names_its_principal_and_mtls_only_with_both_certificates() {
        let me = workload("was", "blog");
        let base = base_labels(
            Reporter::Destination,
            &me,
            ServiceLabel::Host("was.blog.svc.cluster.local"),
            "http",
        );
        // The destination side's service namespace is its own, whoever calls.
        assert_eq!(get(&base, "destination_service_namespace"), "blog");
        assert_eq!(get(&base, "source_canonical_revision"), "latest");
        let id = crate::identity::PeerIdentity::from_spiffe(
            "spiffe://cluster.local/ns/blog/sa/web",
            String::new(),
        )
        .unwrap();
        let own = "spiffe://cluster.local/ns/blog/sa/was";
        let l = with_peer(&base, Some(&id), Some(own));
        assert_eq!(get(&l, "connection_security_policy"), "mutual_tls");
        assert_eq!(get(&l, "destination_principal"), own);
        assert_eq!(get(&l, "source_principal"), id.spiffe_id);
        let l = with_peer(&base, None, None);
        assert_eq!(get(&l, "connection_security_policy"), "none");
        assert_eq!(get(&l, "destination_principal"), "unknown");
        assert_eq!(get(&l, "source_principal"), "unknown");
        // The source reporter never knows: `unknown`.
        let out = base_labels(Reporter::Source, &me, ServiceLabel::Host("x.y"), "http");
        assert_eq!(get(&out, "connection_security_policy"), "unknown");
    }

    #[test]
    fn the_source_reporter_takes_principals_and_the_peer_namespace_from_the_certificates() {
        let me = workload("web", "blog");
        let base = base_labels(
            Reporter::Source,
            &me,
            ServiceLabel::Host("was.blog"),
            "http",
        );
        let claims = workload("was", "elsewhere");
        let l = with_upstream_principals(
            &with_destination_peer(&base, &claims),
            Some("spiffe://cluster.local/ns/blog/sa/web"),
            Some("spiffe://cluster.local/ns/prod/sa/was"),
        );
        assert_eq!(
            get(&l, "source_principal"),
            "spiffe://cluster.local/ns/blog/sa/web"
        );
        assert_eq!(
            get(&l, "destination_principal"),
            "spiffe://cluster.local/ns/prod/sa/was"
        );
        assert_eq!(get(&l, "destination_workload_namespace"), "prod");
        assert_eq!(get(&l, "destination_service_namespace"), "prod");
        assert_eq!(get(&l, "destination_workload"), "was");
        // Without certificates nothing changes.
        let l = with_upstream_principals(&base, None, None);
        assert_eq!(l, base);
    }

    #[test]
    fn special_clusters_and_unnamed_services_are_labelled_as_istio_does() {
        let me = workload("was", "blog");
        // Inbound to a port no Service targets: InboundPassthroughCluster, the workload's
        // canonical service as the service.
        let l = base_labels(
            Reporter::Destination,
            &me,
            ServiceLabel::Special("InboundPassthroughCluster"),
            "tcp",
        );
        assert_eq!(get(&l, "destination_service"), "was");
        assert_eq!(
            get(&l, "destination_service_name"),
            "InboundPassthroughCluster"
        );
        assert_eq!(get(&l, "destination_service_namespace"), "blog");
        // An inbound cluster that names no service: the canonical service for both.
        let l = base_labels(Reporter::Destination, &me, ServiceLabel::Host(""), "http");
        assert_eq!(get(&l, "destination_service"), "was");
        assert_eq!(get(&l, "destination_service_name"), "was");
        // Outbound passthrough: the host is unknown, the name is the cluster's.
        let l = base_labels(
            Reporter::Source,
            &me,
            ServiceLabel::Special("PassthroughCluster"),
            "http",
        );
        assert_eq!(get(&l, "destination_service"), "unknown");
        assert_eq!(get(&l, "destination_service_name"), "PassthroughCluster");
        let l = base_labels(Reporter::Source, &me, ServiceLabel::Host(""), "http");
        assert_eq!(get(&l, "destination_service"), "unknown");
        assert_eq!(get(&l, "destination_service_name"), "unknown");
    }

    #[test]
    fn tcp_series_say_tcp_and_carry_flags_but_no_code() {
        let me = workload("was", "blog");
        // The cluster is HTTP; its TCP series still say tcp.
        let base = base_labels(
            Reporter::Destination,
            &me,
            ServiceLabel::Special("InboundPassthroughCluster"),
            "http",
        );
        let l = tcp_labels(&base, ResponseFlags::NONE);
        assert_eq!(get(&l, "request_protocol"), "tcp");
        assert_eq!(get(&l, "response_flags"), "-");
        assert!(
            l.iter()
                .all(|(k, _)| *k != "response_code" && *k != "grpc_response_status")
        );
        assert_eq!(l.len(), 23);
        assert_eq!(
            get(&tcp_labels(&base, ResponseFlags::UF), "response_flags"),
            "UF"
        );
    }

    #[test]
    fn tcp_bytes_are_reported_as_deltas_and_the_close_once() {
        let m = Metrics::new();
        let me = workload("web", "blog");
        let base = base_labels(Reporter::Source, &me, ServiceLabel::Host("db.blog"), "tcp");
        let labels = tcp_labels(&base, ResponseFlags::NONE);
        let mut r = m.tcp_open(&labels);
        assert_eq!(m.tcp_opened.get_or_create(&labels).get(), 1);
        r.report(10, 3);
        r.report(10, 3);
        r.report(25, 3);
        assert_eq!(m.tcp_received.get_or_create(&labels).get(), 25);
        assert_eq!(m.tcp_sent.get_or_create(&labels).get(), 3);
        assert_eq!(m.tcp_closed.get_or_create(&labels).get(), 0);
        r.close(30, 7);
        assert_eq!(m.tcp_received.get_or_create(&labels).get(), 30);
        assert_eq!(m.tcp_sent.get_or_create(&labels).get(), 7);
        assert_eq!(m.tcp_closed.get_or_create(&labels).get(), 1);
    }

    fn finished(code: u16, req: u64, resp: u64) -> Finished {
        Finished {
            code,
            flags: ResponseFlags::NONE,
            duration: Duration::from_millis(3),
            request_bytes: req,
            response_bytes: resp,
            grpc: None,
        }
    }

    #[test]
    fn request_and_response_bytes_are_histograms_over_envoys_buckets() {
        let m = Metrics::new();
        let me = workload("web", "blog");
        let rm = RequestMetrics::new(base_labels(
            Reporter::Source,
            &me,
            ServiceLabel::Host("was.blog.svc.cluster.local"),
            "http",
        ));
        rm.record(&m, &finished(200, 120, 4_000));
        rm.record(&m, &finished(200, 80, 6_000));
        let text = m.encode();
        let series = |name: &str, le: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with(&format!("{name}_bucket{{"))
                        && l.contains(&format!("le=\"{le}\""))
                })
                .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
                .unwrap_or_else(|| panic!("no {name} le={le} in {text}"))
        };
        assert_eq!(series("istio_request_bytes", "100.0"), "1");
        assert_eq!(series("istio_request_bytes", "250.0"), "2");
        assert_eq!(series("istio_response_bytes", "5000.0"), "1");
        assert_eq!(series("istio_response_bytes", "10000.0"), "2");
        assert!(
            text.contains("# TYPE istio_request_bytes histogram"),
            "{text}"
        );
        let sum = text
            .lines()
            .find(|l| l.starts_with("istio_response_bytes_sum{"))
            .unwrap();
        assert!(sum.ends_with(" 10000.0"), "{sum}");
        let line = text
            .lines()
            .find(|l| l.starts_with("istio_request_bytes_count{"))
            .unwrap();
        for label in [
            "reporter=\"source\"",
            "request_protocol=\"http\"",
            "response_code=\"200\"",
            "response_flags=\"-\"",
            "grpc_response_status=\"\"",
            "destination_service=\"was.blog.svc.cluster.local\"",
        ] {
            assert!(line.contains(label), "{label} in {line}");
        }
        // All 25 labels.
        assert_eq!(line.matches("=\"").count(), 25, "{line}");
    }

    #[test]
    fn grpc_requests_count_messages_and_carry_their_status() {
        let m = Metrics::new();
        let me = workload("web", "blog");
        let rm = RequestMetrics::new(base_labels(
            Reporter::Destination,
            &me,
            ServiceLabel::Host("was.blog.svc.cluster.local"),
            "http",
        ));
        let mut f = finished(200, 100, 100);
        f.grpc = Some(GrpcFinished {
            status: Some(0),
            request_messages: 3,
            response_messages: 2,
        });
        rm.record(&m, &f);
        rm.record(&m, &f);
        f.grpc = Some(GrpcFinished {
            status: Some(5),
            request_messages: 1,
            response_messages: 0,
        });
        rm.record(&m, &f);
        let text = m.encode();
        let line = |name: &str, status: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with(&format!("{name}{{"))
                        && l.contains(&format!("grpc_response_status=\"{status}\""))
                })
                .unwrap_or_else(|| panic!("no {name} status {status} in {text}"))
                .to_string()
        };
        let req = line("istio_request_messages_total", "0");
        assert!(req.ends_with(" 6"), "{req}");
        assert!(req.contains("request_protocol=\"grpc\""), "{req}");
        assert!(line("istio_response_messages_total", "0").ends_with(" 4"));
        assert!(line("istio_request_messages_total", "5").ends_with(" 1"));
        assert!(line("istio_requests_total", "5").ends_with(" 1"));
        // Plain HTTP requests make no message series.
        let plain = Metrics::new();
        rm.record(&plain, &finished(200, 1, 1));
        assert!(!plain.encode().contains("istio_request_messages_total{"));
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
