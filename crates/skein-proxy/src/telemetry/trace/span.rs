//! Spans as Envoy records them for Istio: one per request on each listener (SERVER inbound
//! and at a gateway, CLIENT outbound), a CLIENT span per upstream try at a gateway and for
//! every retry, and one for a mirrored copy; named by Istio's route decorator, with Envoy's
//! and Istio's tags.
//!
//! An unsampled request never gets here: [`Active`] exists only for a sampled request whose
//! spans are reported, so the rest of the proxy pays one `Option` check.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderName;
use http::header::{HeaderMap, HeaderValue};
use skein_snapshot::telemetry::{CustomTag, PerMode, Tracing, TracingProvider};
use skein_snapshot::{Snapshot, names};

use super::context::TraceId;
use crate::telemetry::access_log::LogRecord;

/// Span kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Client,
    Server,
}

/// A finished span, ready to encode.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Span {
    pub(crate) trace_id: TraceId,
    pub(crate) id: u64,
    pub(crate) parent: Option<u64>,
    pub(crate) kind: Kind,
    pub(crate) name: String,
    /// Start, µs since the epoch.
    pub(crate) start_us: u64,
    /// At least 1 µs.
    pub(crate) duration_us: u64,
    pub(crate) debug: bool,
    /// Zipkin `localEndpoint.serviceName` / OTLP `service.name`.
    pub(crate) service: Arc<str>,
    pub(crate) local_ip: Option<IpAddr>,
    /// Tags, sorted by name.
    pub(crate) tags: Vec<(Cow<'static, str>, String)>,
}

/// Where spans go: the backend's kind and the address resolved from the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destination {
    pub(crate) format: Format,
    /// Endpoints of the provider's service (a literal address: just it).
    pub(crate) addrs: Vec<SocketAddr>,
    /// The Host header (the provider's address as configured).
    pub(crate) host: String,
    /// Request path.
    pub(crate) path: String,
    /// Extra request headers (OpenTelemetry `http.headers`).
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

/// Wire format of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Zipkin,
    Otlp,
}

/// A custom tag's value source after compilation.
#[derive(Debug, Clone, PartialEq)]
enum TagSource {
    /// Literal, or an environment variable read when the snapshot was applied.
    Fixed(String),
    /// A request header, with its default.
    Header(HeaderName, String),
}

/// One direction's settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Side {
    /// The random percentage in hundredths (0–10000).
    pub(crate) threshold: u64,
    /// Spans are reported (false: `disableSpanReporting` or no provider).
    pub(crate) report: bool,
    custom: Vec<(String, TagSource)>,
}

/// Tracing for one snapshot, compiled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    /// MeshConfig `enableTracing` with a tracing provider configured: without either the
    /// proxy leaves trace headers alone, as an Envoy without a tracer does (a provider whose
    /// address resolves nowhere still propagates, as a tracer with no collector would).
    pub(crate) enabled: bool,
    pub(crate) client: Side,
    pub(crate) server: Side,
    pub(crate) use_rid: bool,
    pub(crate) dest: Option<Arc<Destination>>,
    pub(crate) service: Arc<str>,
    pub(crate) local_ip: Option<IpAddr>,
    /// `node_id`, `component`, `istio.*`: the same on every span.
    fixed: Vec<(Cow<'static, str>, String)>,
    max_path: usize,
    max_tag: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config::compile(&Snapshot::default(), false)
    }
}

impl Config {
    /// The snapshot's `telemetry.tracing` for this proxy (`gateway`: a gateway's node id).
    pub(crate) fn compile(snap: &Snapshot, gateway: bool) -> Self {
        let t: &Tracing = &snap.telemetry.tracing;
        let node = &snap.node;
        let dest = t.provider.as_ref().and_then(|p| destination(p, snap));
        let side =
            |pct: f64, disabled: bool, tags: &std::collections::BTreeMap<String, CustomTag>| Side {
                threshold: super::sampling::per_ten_thousand(pct),
                report: t.enabled && dest.is_some() && !disabled,
                custom: tags
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), tag_source(v)?)))
                    .collect(),
            };
        let PerMode { client, server } = &t.custom_tags;
        let service: Arc<str> = if !t.service_name.is_empty() {
            Arc::from(t.service_name.as_str())
        } else {
            Arc::from(default_service_name(node).as_str())
        };
        let ip = node.ip.map_or_else(String::new, |ip| ip.to_string());
        let ns = &node.namespace;
        let kind = if gateway { "router" } else { "sidecar" };
        let node_id = format!("{kind}~{ip}~{}.{ns}~{ns}.svc.cluster.local", node.pod);
        let mut fixed: Vec<(Cow<'static, str>, String)> = vec![
            ("component".into(), "proxy".into()),
            ("node_id".into(), node_id),
        ];
        if t.istio_tags {
            let canonical = node
                .labels
                .get("service.istio.io/canonical-name")
                .or_else(|| node.labels.get("app.kubernetes.io/name"))
                .or_else(|| node.labels.get("app"))
                .cloned()
                .unwrap_or_else(|| {
                    if node.workload.is_empty() {
                        "unknown".into()
                    } else {
                        node.workload.clone()
                    }
                });
            let revision = node
                .labels
                .get("service.istio.io/canonical-revision")
                .or_else(|| node.labels.get("app.kubernetes.io/version"))
                .or_else(|| node.labels.get("version"))
                .cloned()
                .unwrap_or_else(|| "latest".into());
            let or = |s: &str, d: &str| {
                if s.is_empty() {
                    d.to_string()
                } else {
                    s.to_string()
                }
            };
            fixed.push(("istio.canonical_service".into(), canonical));
            fixed.push(("istio.canonical_revision".into(), revision));
            fixed.push(("istio.cluster_id".into(), or(&node.cluster_id, "unknown")));
            fixed.push(("istio.mesh_id".into(), or(&t.mesh_id, "unknown")));
            fixed.push(("istio.namespace".into(), or(ns, "default")));
        }
        let max_tag = match &t.provider {
            Some(TracingProvider::Zipkin { max_tag_length, .. }) if *max_tag_length > 0 => {
                *max_tag_length as usize
            }
            _ => usize::MAX,
        };
        Config {
            enabled: t.enabled && t.provider.is_some(),
            client: side(t.sampling.client, t.disable_span_reporting.client, client),
            server: side(t.sampling.server, t.disable_span_reporting.server, server),
            use_rid: t.use_request_id_for_sampling,
            dest: dest.map(Arc::new),
            service,
            local_ip: node.ip,
            fixed,
            max_path: t.max_path_tag_length.max(1) as usize,
            max_tag,
        }
    }

    pub(crate) fn side(&self, kind: Kind) -> &Side {
        match kind {
            Kind::Client => &self.client,
            Kind::Server => &self.server,
        }
    }

    /// The format trace headers are written in (OpenTelemetry: W3C; otherwise B3).
    pub(crate) fn w3c(&self) -> bool {
        self.dest.as_ref().is_some_and(|d| d.format == Format::Otlp)
    }
}

/// Istio's default `tracingServiceName` (APP_LABEL_AND_NAMESPACE): `<app>.<namespace>`, the
/// app label falling back to the workload name.
fn default_service_name(node: &skein_snapshot::Node) -> String {
    let app = node
        .labels
        .get("app")
        .cloned()
        .unwrap_or_else(|| node.workload.clone());
    match (app.is_empty(), node.namespace.is_empty()) {
        (true, _) => "istio-proxy".into(),
        (false, true) => app,
        (false, false) => format!("{app}.{}", node.namespace),
    }
}

fn tag_source(t: &CustomTag) -> Option<TagSource> {
    Some(match t {
        CustomTag::Literal { value } => TagSource::Fixed(value.clone()),
        CustomTag::Environment {
            name,
            default_value,
        } => TagSource::Fixed(std::env::var(name).unwrap_or_else(|_| default_value.clone())),
        CustomTag::Header {
            name,
            default_value,
        } => TagSource::Header(
            HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).ok()?,
            default_value.clone(),
        ),
    })
}

/// The provider's address: a literal `ip:port`, or a Service `host:port` resolved to the
/// endpoints of the snapshot cluster whose service domains (as this workload's namespace
/// reaches them) include it. None when it resolves to nothing (spans are then not reported).
fn destination(p: &TracingProvider, snap: &Snapshot) -> Option<Destination> {
    let (format, address, path, headers) = match p {
        TracingProvider::Zipkin { address, .. } => (
            Format::Zipkin,
            address,
            "/api/v2/spans".to_string(),
            Vec::new(),
        ),
        TracingProvider::OpenTelemetry {
            address,
            path,
            headers,
        } => {
            let h = headers
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).ok()?,
                        HeaderValue::from_str(v).ok()?,
                    ))
                })
                .collect();
            (Format::Otlp, address, path.clone(), h)
        }
    };
    let addrs = resolve(address, snap);
    if addrs.is_empty() {
        tracing::warn!(%address, "tracing provider address resolves to no endpoint; spans are not reported");
        return None;
    }
    Some(Destination {
        format,
        addrs,
        host: address.clone(),
        path,
        headers,
    })
}

fn resolve(address: &str, snap: &Snapshot) -> Vec<SocketAddr> {
    if let Ok(a) = address.parse::<SocketAddr>() {
        return vec![a];
    }
    let want = address.to_ascii_lowercase();
    let Some((_, port)) = want.rsplit_once(':') else {
        return Vec::new();
    };
    let Ok(port) = port.parse::<u16>() else {
        return Vec::new();
    };
    snap.clusters
        .iter()
        .filter(|c| c.port == port && !c.service.is_empty())
        .find(|c| names::service_domains(&c.service, c.port, &snap.node.namespace).contains(&want))
        .map(|c| c.endpoints.iter().map(|e| e.address).collect())
        .unwrap_or_default()
}

/// A try of an upstream request, with its own span.
#[derive(Debug, Clone)]
pub(crate) struct Try {
    pub(crate) id: u64,
    pub(crate) start: SystemTime,
    pub(crate) duration: Duration,
    pub(crate) upstream: Option<SocketAddr>,
    /// The try's response status (0: none).
    pub(crate) code: u16,
}

/// A sampled, reported request's span under construction (boxed in the request's finish
/// record).
#[derive(Debug)]
pub(crate) struct Active {
    pub(crate) cfg: Arc<Config>,
    pub(crate) kind: Kind,
    pub(crate) trace_id: TraceId,
    pub(crate) id: u64,
    pub(crate) parent: Option<u64>,
    pub(crate) debug: bool,
    /// The span name (Istio's route decorator); set when the route is known.
    pub(crate) name: String,
    /// Header custom tags, read when the request came in.
    pub(crate) header_tags: Vec<(String, String)>,
    /// A gateway's upstream span (its id was sent upstream); tries after the first.
    pub(crate) tries: Vec<Try>,
    /// Every try has its own span (gateways).
    pub(crate) span_per_try: bool,
    /// A gateway's first try's span id (already sent upstream).
    pub(crate) first_try: Option<u64>,
    /// `traceparent` is written too.
    pub(crate) w3c: bool,
    /// A mirrored copy's span.
    pub(crate) mirror: Option<MirrorSpan>,
}

/// A mirrored copy's span: sent from its own task, which says when the copy is done.
#[derive(Debug)]
pub(crate) struct MirrorSpan {
    pub(crate) id: u64,
    pub(crate) cluster: Arc<str>,
    pub(crate) start: SystemTime,
    pub(crate) done: Arc<MirrorDone>,
}

/// Written by the mirror's task when its copy is answered (or abandoned).
#[derive(Debug, Default)]
pub(crate) struct MirrorDone {
    /// The copy's duration in µs, plus one (0: still in flight).
    micros: AtomicU64,
    /// Its response status (0: none).
    code: AtomicU32,
}

impl MirrorDone {
    /// The copy ended after `took`, answered `code` (0: no response).
    pub(crate) fn end(&self, took: Duration, code: u16) {
        self.code.store(u32::from(code), Ordering::Relaxed);
        self.micros.store(
            (took.as_micros() as u64).saturating_add(1),
            Ordering::Release,
        );
    }

    /// The duration and status, when the copy has ended.
    fn ended(&self) -> Option<(u64, u16)> {
        let us = self.micros.load(Ordering::Acquire).checked_sub(1)?;
        Some((us, self.code.load(Ordering::Relaxed) as u16))
    }
}

impl Active {
    /// The request span's tags read from the request headers, at its start.
    pub(crate) fn read_headers(&mut self, h: &HeaderMap) {
        for (name, src) in &self.cfg.side(self.kind).custom {
            if let TagSource::Header(hn, default) = src {
                let v = h
                    .get(hn)
                    .and_then(|v| v.to_str().ok())
                    .map_or_else(|| default.clone(), str::to_string);
                self.header_tags.push((name.clone(), v));
            }
        }
    }

    /// The spans of the request, once it ended `elapsed` after it started.
    pub(crate) fn finish(self, rec: &LogRecord, elapsed: Duration) -> Vec<Span> {
        let cfg = &self.cfg;
        let start_us = micros(rec.start);
        let mut tags = self.request_tags(rec);
        let mut spans = Vec::with_capacity(1 + self.tries.len());
        let truncate = |mut v: String| {
            if v.len() > cfg.max_tag {
                let mut n = cfg.max_tag;
                while !v.is_char_boundary(n) {
                    n -= 1;
                }
                v.truncate(n);
            }
            v
        };
        for t in &mut tags {
            t.1 = truncate(std::mem::take(&mut t.1));
        }
        for t in &self.tries {
            let mut tt = tags.clone();
            set(&mut tt, "http.status_code", t.code.to_string());
            set(
                &mut tt,
                "upstream_address",
                t.upstream.map_or_else(|| "-".into(), |a| a.to_string()),
            );
            if t.code >= 500 || t.code == 0 {
                set(&mut tt, "error", "true".into());
            } else {
                tt.retain(|(k, _)| k != "error");
            }
            spans.push(Span {
                trace_id: self.trace_id,
                id: t.id,
                parent: Some(self.id),
                kind: Kind::Client,
                name: self.name.clone(),
                start_us: micros(t.start),
                duration_us: (t.duration.as_micros() as u64).max(1),
                debug: self.debug,
                service: Arc::clone(&cfg.service),
                local_ip: cfg.local_ip,
                tags: tt,
            });
        }
        if let Some(m) = &self.mirror {
            let cluster = &m.cluster;
            let mut mt = tags.clone();
            set(&mut mt, "upstream_cluster", cluster.to_string());
            set(&mut mt, "upstream_cluster.name", cluster.to_string());
            mt.retain(|(k, _)| k != "http.status_code" && k != "error" && k != "upstream_address");
            // A copy still in flight when the primary ends: its time so far.
            let (duration_us, code) = m.done.ended().unwrap_or_else(|| {
                let so_far = m.start.elapsed().unwrap_or_default();
                (so_far.as_micros() as u64, 0)
            });
            if code > 0 {
                set(&mut mt, "http.status_code", code.to_string());
            }
            if code >= 500 {
                set(&mut mt, "error", "true".into());
            }
            let name = cluster_operation(cluster).unwrap_or_else(|| self.name.clone());
            spans.push(Span {
                trace_id: self.trace_id,
                id: m.id,
                parent: Some(self.id),
                kind: Kind::Client,
                name,
                start_us: micros(m.start),
                duration_us: duration_us.max(1),
                debug: self.debug,
                service: Arc::clone(&cfg.service),
                local_ip: cfg.local_ip,
                tags: mt,
            });
        }
        spans.push(Span {
            trace_id: self.trace_id,
            id: self.id,
            parent: self.parent,
            kind: self.kind,
            name: self.name,
            start_us,
            duration_us: (elapsed.as_micros() as u64).max(1),
            debug: self.debug,
            service: Arc::clone(&cfg.service),
            local_ip: cfg.local_ip,
            tags,
        });
        spans
    }

    fn request_tags(&self, rec: &LogRecord) -> Vec<(Cow<'static, str>, String)> {
        let cfg = &self.cfg;
        let mut tags = cfg.fixed.clone();
        let s = |v: &Option<HeaderValue>| {
            v.as_ref()
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        let authority = rec
            .authority
            .as_ref()
            .and_then(|a| a.to_str().ok())
            .unwrap_or("");
        let path = rec.path.as_ref().map_or("/", |p| p.as_str());
        let mut url = format!("http://{authority}{path}");
        if url.len() > cfg.max_path {
            let mut n = cfg.max_path;
            while !url.is_char_boundary(n) {
                n -= 1;
            }
            url.truncate(n);
        }
        let cluster = rec.upstream_cluster.as_deref().unwrap_or("-").to_string();
        tags.extend([
            ("downstream_cluster".into(), "-".into()),
            ("guid:x-request-id".into(), s(&rec.request_id)),
            (
                "http.method".into(),
                rec.method.as_ref().map_or("-", |m| m.as_str()).into(),
            ),
            ("http.protocol".into(), rec.protocol.unwrap_or("-").into()),
            ("http.status_code".into(), rec.code.to_string()),
            ("http.url".into(), url),
            (
                "peer.address".into(),
                rec.downstream_remote.ip().to_string(),
            ),
            ("request_size".into(), rec.bytes_received.to_string()),
            ("response_flags".into(), rec.flags.to_string()),
            ("response_size".into(), rec.bytes_sent.to_string()),
            (
                "upstream_address".into(),
                rec.upstream_host
                    .map_or_else(|| "-".into(), |a| a.to_string()),
            ),
            ("upstream_cluster".into(), cluster.clone()),
            ("upstream_cluster.name".into(), cluster),
            ("user_agent".into(), s(&rec.user_agent)),
        ]);
        if rec.code >= 500 || rec.code == 0 {
            tags.push(("error".into(), "true".into()));
        }
        for (name, src) in &cfg.side(self.kind).custom {
            if let TagSource::Fixed(v) = src {
                set(&mut tags, name, v.clone());
            }
        }
        for (name, v) in &self.header_tags {
            set(&mut tags, name, v.clone());
        }
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        tags
    }
}

/// Sets a tag (replacing one of the same name), keeping the list sorted.
fn set(tags: &mut Vec<(Cow<'static, str>, String)>, name: &str, value: String) {
    match tags.binary_search_by(|(k, _)| k.as_ref().cmp(name)) {
        Ok(i) => tags[i].1 = value,
        Err(i) => tags.insert(i, (Cow::Owned(name.to_string()), value)),
    }
}

pub(crate) fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `host:port/*` for an `outbound|port|subset|host` cluster (Istio's decorator for a route
/// to one cluster).
pub(crate) fn cluster_operation(cluster: &str) -> Option<String> {
    let mut parts = cluster.split('|');
    let (dir, port, _subset, host) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (dir == "outbound" && !host.is_empty()).then(|| format!("{host}:{port}/*"))
}

/// Istio's route decorator (`getRouteOperation`): `<host>:<port><path>` for a route to one
/// cluster, the path being `/*` without a path match, `P*` for prefix `P`, `P` for exact
/// `P`, the regex for a regex; for a route split across clusters the virtual host's name
/// (`fallback_host`) stands in for the host.
pub(crate) fn route_operation(
    cluster: &str,
    single: bool,
    path: Option<String>,
    fallback_host: &str,
) -> String {
    let mut parts = cluster.split('|');
    let _dir = parts.next();
    let port = parts.next().unwrap_or("");
    let _subset = parts.next();
    let host = parts.next().unwrap_or("");
    let host = if single && !host.is_empty() {
        host
    } else {
        fallback_host
    };
    let path = path.unwrap_or_else(|| "/*".into());
    format!("{host}:{port}{path}")
}

/// The SERVER span's name on an inbound listener: Istio's `<service host>:<port>/*` for the
/// workload's service on that port (the authority's host when the snapshot names none).
pub(crate) fn inbound_operation(service: &str, port: u16, authority: &str) -> String {
    let host = if service.is_empty() || service.starts_with("inbound|") {
        crate::authority::strip_port(authority)
    } else {
        service
    };
    format!("{}:{port}/*", host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_snapshot::build::{SnapshotBuilder, cluster};

    #[test]
    fn decorator_names_as_istio() {
        let c = "outbound|9080|v1|details.default.svc.cluster.local";
        assert_eq!(
            route_operation(c, true, None, "details"),
            "details.default.svc.cluster.local:9080/*"
        );
        assert_eq!(
            route_operation(c, true, Some("/api*".into()), "x"),
            "details.default.svc.cluster.local:9080/api*"
        );
        assert_eq!(route_operation(c, false, None, "reviews"), "reviews:9080/*");
        assert_eq!(
            cluster_operation(c).unwrap(),
            "details.default.svc.cluster.local:9080/*"
        );
        assert_eq!(cluster_operation("inbound|9080||"), None);
        assert_eq!(
            inbound_operation("details.default.svc.cluster.local", 9080, "details:9080"),
            "details.default.svc.cluster.local:9080/*"
        );
        assert_eq!(
            inbound_operation("inbound|9080||", 9080, "Details:9080"),
            "details:9080/*"
        );
    }

    #[test]
    fn provider_addresses_resolve_through_the_snapshot() {
        let mut snap = SnapshotBuilder::new("v1", "shop", "web")
            .cluster(cluster(
                "jaeger-collector.istio-system.svc.cluster.local",
                9411,
                None,
                &["10.0.0.7:9411"],
            ))
            .build();
        snap.telemetry.tracing.provider = Some(TracingProvider::Zipkin {
            address: "jaeger-collector.istio-system.svc:9411".into(),
            max_tag_length: 0,
        });
        let cfg = Config::compile(&snap, false);
        let d = cfg.dest.as_ref().expect("resolved");
        assert_eq!(d.addrs, vec!["10.0.0.7:9411".parse().unwrap()]);
        assert_eq!(d.path, "/api/v2/spans");
        assert!(cfg.client.report && cfg.server.report);
        // A literal address as is; an unknown service: nothing reported.
        snap.telemetry.tracing.provider = Some(TracingProvider::OpenTelemetry {
            address: "127.0.0.1:4318".into(),
            path: "/v1/traces".into(),
            headers: Default::default(),
        });
        let cfg = Config::compile(&snap, false);
        assert_eq!(cfg.dest.unwrap().format, Format::Otlp);
        snap.telemetry.tracing.provider = Some(TracingProvider::Zipkin {
            address: "zipkin.elsewhere.svc:9411".into(),
            max_tag_length: 0,
        });
        let cfg = Config::compile(&snap, false);
        assert!(cfg.dest.is_none());
        assert!(!cfg.client.report);
    }

    #[test]
    fn service_name_and_istio_tags() {
        let mut snap = SnapshotBuilder::new("v1", "shop", "web").build();
        snap.node.labels.insert("app".into(), "web".into());
        snap.node.pod = "web-1".into();
        snap.node.ip = Some([10, 1, 2, 3].into());
        snap.telemetry.tracing.mesh_id = "mesh1".into();
        let cfg = Config::compile(&snap, false);
        assert_eq!(&*cfg.service, "web.shop");
        let get = |k: &str| {
            cfg.fixed
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get("node_id").unwrap(),
            "sidecar~10.1.2.3~web-1.shop~shop.svc.cluster.local"
        );
        assert_eq!(get("component").unwrap(), "proxy");
        assert_eq!(get("istio.canonical_service").unwrap(), "web");
        assert_eq!(get("istio.canonical_revision").unwrap(), "latest");
        assert_eq!(get("istio.namespace").unwrap(), "shop");
        assert_eq!(get("istio.mesh_id").unwrap(), "mesh1");
        snap.telemetry.tracing.istio_tags = false;
        snap.telemetry.tracing.service_name = "custom".into();
        let cfg = Config::compile(&snap, true);
        assert_eq!(&*cfg.service, "custom");
        assert!(cfg.fixed.iter().all(|(k, _)| !k.starts_with("istio.")));
        assert!(
            cfg.fixed
                .iter()
                .any(|(k, v)| k == "node_id" && v.starts_with("router~"))
        );
    }
}
