//! The engine of `skein stat`, `skein edges` and `skein top`: what to ask (`promql.rs`), where
//! to ask it (`source.rs`: Prometheus or the proxies), and the rows the answers make
//! (`format.rs` prints them).

pub mod format;
pub mod promql;
pub mod source;

use std::collections::BTreeMap;
use std::time::Duration;

use promql::{
    DURATION_BUCKET, Expr, Matcher, REQUESTS, Selector, TCP_CLOSED, TCP_OPENED, TCP_RECEIVED,
    TCP_SENT, not_5xx,
};
use source::{Backend, Sample};

#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    #[error(
        "unknown resource type {0:?}: use deploy, po, svc, ns or rollout (with an optional /NAME)"
    )]
    BadResource(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("the Prometheus URL {0:?} is not http://IP:PORT")]
    BadPrometheusUrl(String),
    #[error("cannot start an async runtime: {0}")]
    Runtime(String),
    #[error(
        "Prometheus at {url} did not answer {query}: {reason} (is it running? `skein status` shows it)"
    )]
    Prometheus {
        url: String,
        query: String,
        reason: String,
    },
    #[error(
        "none of the {0} proxies answered on its admin port: is skein running (`skein status`)?"
    )]
    NoProxyAnswered(usize),
    #[error("bad regular expression {0:?}: {1}")]
    BadRegex(String, String),
}

/// The resource types, as kubectl and linkerd name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Deploy,
    Pod,
    Svc,
    Ns,
    Rollout,
}

impl Kind {
    pub fn parse(s: &str) -> Result<Kind, TrafficError> {
        Ok(match s {
            "deploy" | "deployment" | "deployments" | "deploy.apps" => Kind::Deploy,
            "po" | "pod" | "pods" => Kind::Pod,
            "svc" | "service" | "services" => Kind::Svc,
            "ns" | "namespace" | "namespaces" => Kind::Ns,
            "ro" | "rollout" | "rollouts" => Kind::Rollout,
            other => return Err(TrafficError::BadResource(other.to_string())),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deploy => "deploy",
            Kind::Pod => "po",
            Kind::Svc => "svc",
            Kind::Ns => "ns",
            Kind::Rollout => "rollout",
        }
    }
}

/// Which end of a request a label set describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

/// The (namespace, name) labels that identify a resource of `kind` on `side`, when
/// `reporter` reported the series. Pods are Prometheus's target labels, so they name the
/// reporting proxy's pod only.
fn labels(
    kind: Kind,
    side: Side,
    reporter: Side,
) -> Result<(&'static str, &'static str), TrafficError> {
    Ok(match (kind, side) {
        (Kind::Deploy | Kind::Rollout, Side::Source) => {
            ("source_workload_namespace", "source_workload")
        }
        (Kind::Deploy | Kind::Rollout, Side::Destination) => {
            ("destination_workload_namespace", "destination_workload")
        }
        (Kind::Ns, Side::Source) => ("source_workload_namespace", "source_workload_namespace"),
        (Kind::Ns, Side::Destination) => (
            "destination_workload_namespace",
            "destination_workload_namespace",
        ),
        (Kind::Svc, Side::Destination) => {
            ("destination_service_namespace", "destination_service_name")
        }
        (Kind::Svc, Side::Source) => {
            return Err(TrafficError::Unsupported(
                "a service is not the source of requests: use deploy or po with --to".into(),
            ));
        }
        (Kind::Pod, side) if side == reporter => ("namespace", "pod"),
        (Kind::Pod, _) => {
            return Err(TrafficError::Unsupported(
                "pods are known only on the reporting side: `po` works as the resource without \
                 --from/--to, as the resource with --to, and as --from"
                    .into(),
            ));
        }
    })
}

/// `TYPE` or `TYPE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub kind: Kind,
    pub name: Option<String>,
}

impl Resource {
    pub fn parse(s: &str) -> Result<Resource, TrafficError> {
        let (kind, name) = match s.split_once('/') {
            Some((k, n)) if !n.is_empty() => (k, Some(n.to_string())),
            Some((k, _)) => (k, None),
            None => (s, None),
        };
        Ok(Resource {
            kind: Kind::parse(kind)?,
            name,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    One(String),
    All,
}

impl Namespaces {
    fn matcher(&self, label: &'static str) -> Option<Matcher> {
        match self {
            Namespaces::One(ns) => Some(Matcher::eq(label, ns.clone())),
            Namespaces::All => None,
        }
    }

    fn contains(&self, ns: &str) -> bool {
        match self {
            Namespaces::One(n) => n == ns,
            Namespaces::All => true,
        }
    }
}

/// The pods of one resource, from `skein status`: how many there are and how many have a
/// proxy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meshed {
    pub meshed: usize,
    pub total: usize,
}

/// What runs, by (namespace, name) for one resource type.
pub type Inventory = BTreeMap<(String, String), Meshed>;

/// `skein stat`'s question.
#[derive(Debug, Clone)]
pub struct StatSpec {
    pub resource: Resource,
    pub namespaces: Namespaces,
    pub from: Option<Resource>,
    pub to: Option<Resource>,
    pub window: Duration,
    /// The wide output's extra columns (TCP bytes).
    pub wide: bool,
}

/// One row of `skein stat`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StatRow {
    pub namespace: String,
    pub kind: &'static str,
    pub name: String,
    /// Pods with a proxy, of all the resource's pods (absent when `skein status` does not
    /// know the resource).
    pub meshed: Option<Meshed>,
    /// Non-5xx requests over all requests, 0..=1.
    pub success: Option<f64>,
    pub rps: Option<f64>,
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p95: Option<f64>,
    pub latency_ms_p99: Option<f64>,
    /// TCP connections open now (opened minus closed).
    pub tcp_open_connections: Option<f64>,
    pub tcp_read_bytes_per_sec: Option<f64>,
    pub tcp_write_bytes_per_sec: Option<f64>,
}

impl serde::Serialize for Meshed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}/{}", self.meshed, self.total))
    }
}

/// Where the numbers came from, for the output's header and JSON.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Origin {
    /// `prometheus` or `proxies`.
    pub source: &'static str,
    /// The Prometheus evaluation time (seconds since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<f64>,
    /// The window in seconds the rates are over.
    pub window_seconds: f64,
    /// Something the reader must know (for example: totals, not rates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One (reporter, filters) selection for a metric.
fn selector(metric: &'static str, reporter: Side, matchers: &[Matcher]) -> Selector {
    let mut m = vec![Matcher::eq(
        "reporter",
        match reporter {
            Side::Source => "source",
            Side::Destination => "destination",
        },
    )];
    m.extend(matchers.iter().cloned());
    Selector::new(metric, m)
}

fn dedup(mut v: Vec<&'static str>) -> Vec<&'static str> {
    let mut seen = Vec::new();
    v.retain(|l| {
        if seen.contains(l) {
            false
        } else {
            seen.push(*l);
            true
        }
    });
    v
}

/// A value per group key, looked up by the key's labels.
type ByKey = BTreeMap<Vec<String>, f64>;

fn keyed(samples: Vec<Sample>, key: &[&str]) -> ByKey {
    samples
        .into_iter()
        .map(|s| (key.iter().map(|k| s.get(k).to_string()).collect(), s.value))
        .collect()
}

fn finite(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite())
}

/// The (namespace, name) labels of a resource.
type ResourceLabels = (&'static str, &'static str);

/// The queries of one `skein stat`: (reporter, the rows' (namespace, name) labels, matchers).
pub fn stat_plan(spec: &StatSpec) -> Result<(Side, ResourceLabels, Vec<Matcher>), TrafficError> {
    if spec.from.is_some() && spec.to.is_some() {
        return Err(TrafficError::Unsupported(
            "--from and --to cannot be used together".into(),
        ));
    }
    let (reporter, row_side) = match (&spec.from, &spec.to) {
        (None, None) => (Side::Destination, Side::Destination),
        (Some(_), _) => (Side::Source, Side::Destination),
        (_, Some(_)) => (Side::Source, Side::Source),
    };
    let row = labels(spec.resource.kind, row_side, reporter)?;
    let mut matchers = Vec::new();
    if let Some(name) = &spec.resource.name {
        matchers.push(Matcher::eq(row.1, name.clone()));
    }
    if spec.resource.kind != Kind::Ns
        && let Some(m) = spec.namespaces.matcher(row.0)
    {
        matchers.push(m);
    }
    let other = spec.from.as_ref().or(spec.to.as_ref());
    if let Some(other) = other {
        let other_side = match row_side {
            Side::Source => Side::Destination,
            Side::Destination => Side::Source,
        };
        let l = labels(other.kind, other_side, reporter)?;
        if let Some(name) = &other.name {
            matchers.push(Matcher::eq(l.1, name.clone()));
        }
        if other.kind != Kind::Ns
            && let Some(m) = spec.namespaces.matcher(l.0)
        {
            matchers.push(m);
        }
    }
    Ok((reporter, row, matchers))
}

/// The expressions of one `skein stat`, in the order [`stat`] evaluates them.
pub fn stat_exprs(spec: &StatSpec) -> Result<Vec<Expr>, TrafficError> {
    let (reporter, row, matchers) = stat_plan(spec)?;
    let by = dedup(vec![row.0, row.1]);
    let req = selector(REQUESTS, reporter, &matchers);
    let dur = selector(DURATION_BUCKET, reporter, &matchers);
    let mut exprs = vec![
        Expr::Rate {
            sel: req.clone(),
            by: by.clone(),
        },
        Expr::Rate {
            sel: req.with(not_5xx()),
            by: by.clone(),
        },
    ];
    for q in [0.5, 0.95, 0.99] {
        exprs.push(Expr::Quantile {
            q,
            sel: dur.clone(),
            by: by.clone(),
        });
    }
    for metric in [TCP_OPENED, TCP_CLOSED] {
        exprs.push(Expr::Total {
            sel: selector(metric, reporter, &matchers),
            by: by.clone(),
        });
    }
    if spec.wide {
        for metric in [TCP_RECEIVED, TCP_SENT] {
            exprs.push(Expr::Rate {
                sel: selector(metric, reporter, &matchers),
                by: by.clone(),
            });
        }
    }
    Ok(exprs)
}

/// `skein stat`: one row per resource, with traffic or known to `skein status`.
pub fn stat(
    spec: &StatSpec,
    backend: &mut dyn Backend,
    inventory: &Inventory,
    has_rates: bool,
) -> Result<Vec<StatRow>, TrafficError> {
    let (_, row, _) = stat_plan(spec)?;
    let key = dedup(vec![row.0, row.1]);
    let mut answers = Vec::new();
    for e in stat_exprs(spec)? {
        answers.push(keyed(backend.eval(&e, spec.window)?, &key));
    }
    let get = |i: usize, k: &Vec<String>| answers.get(i).and_then(|a| a.get(k)).copied();
    let mut keys: Vec<Vec<String>> = answers.iter().flat_map(|a| a.keys().cloned()).collect();
    for (ns, name) in inventory.keys() {
        let in_ns = spec.resource.kind == Kind::Ns || spec.namespaces.contains(ns);
        let named = spec.resource.name.as_ref().is_none_or(|n| n == name);
        // Resources without traffic are listed only without --from/--to.
        if in_ns && named && spec.from.is_none() && spec.to.is_none() {
            keys.push(if key.len() == 1 {
                vec![name.clone()]
            } else {
                vec![ns.clone(), name.clone()]
            });
        }
    }
    keys.sort();
    keys.dedup();
    let mut rows = Vec::new();
    for k in keys {
        let (ns, name) = match k.as_slice() {
            [one] => (one.clone(), one.clone()),
            [ns, name, ..] => (ns.clone(), name.clone()),
            [] => continue,
        };
        let total = get(0, &k);
        let ok = get(1, &k);
        let success = match (total, ok) {
            (Some(t), ok) if t > 0.0 => Some(ok.unwrap_or(0.0) / t),
            _ => None,
        };
        let tcp = match (get(5, &k), get(6, &k)) {
            (Some(o), c) => Some((o - c.unwrap_or(0.0)).max(0.0)),
            (None, _) => None,
        };
        let inv_key = if spec.resource.kind == Kind::Ns {
            (name.clone(), name.clone())
        } else {
            (ns.clone(), name.clone())
        };
        rows.push(StatRow {
            namespace: if spec.resource.kind == Kind::Ns {
                String::new()
            } else {
                ns
            },
            kind: spec.resource.kind.as_str(),
            name,
            meshed: inventory.get(&inv_key).cloned(),
            success,
            rps: if has_rates { total } else { None },
            latency_ms_p50: finite(get(2, &k)),
            latency_ms_p95: finite(get(3, &k)),
            latency_ms_p99: finite(get(4, &k)),
            tcp_open_connections: tcp,
            tcp_read_bytes_per_sec: if has_rates { get(7, &k) } else { None },
            tcp_write_bytes_per_sec: if has_rates { get(8, &k) } else { None },
        });
    }
    Ok(rows)
}

/// `skein edges`' question.
#[derive(Debug, Clone)]
pub struct EdgesSpec {
    pub resource: Resource,
    pub namespaces: Namespaces,
}

/// One edge: who called whom, and whether the connection was mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EdgeRow {
    pub src: String,
    pub src_namespace: String,
    pub dst: String,
    pub dst_namespace: String,
    /// `Some(true)` for mutual TLS as the server's proxy reported it, `Some(false)` for
    /// plain text, None when no proxy serves the destination (only the client reported).
    pub secured: Option<bool>,
    pub client_id: String,
    pub server_id: String,
    /// `destination` when the server's proxy reported the edge, else `source`.
    pub reporter: &'static str,
}

const EDGE_KEYS: [&str; 7] = [
    "source_workload_namespace",
    "source_workload",
    "destination_workload_namespace",
    "destination_workload",
    "source_principal",
    "destination_principal",
    "connection_security_policy",
];

/// The expressions of one `skein edges`: destination-reported HTTP and TCP (security and
/// principals), then source-reported ones for servers without a proxy.
pub fn edges_exprs(spec: &EdgesSpec) -> Result<Vec<Expr>, TrafficError> {
    if !matches!(spec.resource.kind, Kind::Deploy | Kind::Rollout) {
        return Err(TrafficError::Unsupported(
            "edges are between workloads: use `skein edges deploy` (or rollout)".into(),
        ));
    }
    let mut by = EDGE_KEYS.to_vec();
    let mut exprs = Vec::new();
    for metric in [REQUESTS, TCP_OPENED] {
        exprs.push(Expr::Total {
            sel: selector(metric, Side::Destination, &[]),
            by: by.clone(),
        });
    }
    by.truncate(5);
    by.push("destination_service_namespace");
    by.push("destination_service_name");
    by.push("destination_service");
    for metric in [REQUESTS, TCP_OPENED] {
        exprs.push(Expr::Total {
            sel: selector(metric, Side::Source, &[]),
            by: by.clone(),
        });
    }
    Ok(exprs)
}

/// `skein edges`: the edges touching the selected resources, each once.
pub fn edges(spec: &EdgesSpec, backend: &mut dyn Backend) -> Result<Vec<EdgeRow>, TrafficError> {
    let exprs = edges_exprs(spec)?;
    let mut out: BTreeMap<(String, String, String, String), EdgeRow> = BTreeMap::new();
    for (i, e) in exprs.iter().enumerate() {
        let destination = i < 2;
        for s in backend.eval(e, Duration::ZERO)? {
            if s.value <= 0.0 {
                continue;
            }
            let (mut dst, mut dst_ns) = (
                s.get("destination_workload").to_string(),
                s.get("destination_workload_namespace").to_string(),
            );
            if !destination && dst == "unknown" {
                // No workload behind it that the client knows: the service, as Kiali draws it.
                dst = s.get("destination_service_name").to_string();
                dst_ns = service_namespace(
                    s.get("destination_service_namespace"),
                    s.get("destination_service"),
                );
            }
            let row = EdgeRow {
                src: s.get("source_workload").to_string(),
                src_namespace: s.get("source_workload_namespace").to_string(),
                dst,
                dst_namespace: dst_ns,
                secured: destination.then(|| s.get("connection_security_policy") == "mutual_tls"),
                client_id: s.get("source_principal").to_string(),
                server_id: s.get("destination_principal").to_string(),
                reporter: if destination { "destination" } else { "source" },
            };
            let touches = |ns: &str, name: &str| {
                spec.namespaces.contains(ns)
                    && spec.resource.name.as_ref().is_none_or(|n| n == name)
            };
            if !touches(&row.src_namespace, &row.src) && !touches(&row.dst_namespace, &row.dst) {
                continue;
            }
            let key = (
                row.src_namespace.clone(),
                row.src.clone(),
                row.dst_namespace.clone(),
                row.dst.clone(),
            );
            match out.get_mut(&key) {
                None => {
                    out.insert(key, row);
                }
                // Several principals or policies on one edge: the edge is secured only if
                // all of it is.
                Some(have) if destination => {
                    if row.secured == Some(false) {
                        have.secured = Some(false);
                    }
                }
                Some(_) => {}
            }
        }
    }
    Ok(out.into_values().collect())
}

/// `skein top`'s question.
#[derive(Debug, Clone)]
pub struct TopSpec {
    /// Only edges from or to this resource (deploy/rollout/ns, optional name).
    pub resource: Option<Resource>,
    pub namespaces: Namespaces,
    pub window: Duration,
}

/// One edge of `skein top`: HTTP as the server reports it, TCP as the client does.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TopRow {
    pub src: String,
    pub src_namespace: String,
    pub dst: String,
    pub dst_namespace: String,
    /// `http`, `grpc` or `tcp`.
    pub protocol: String,
    /// Requests in the window (HTTP/gRPC).
    pub count: Option<f64>,
    pub rps: Option<f64>,
    pub success: Option<f64>,
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p95: Option<f64>,
    pub latency_ms_p99: Option<f64>,
    /// TCP bytes per second from the client to the server (`istio_tcp_received_bytes_total`:
    /// what the client's proxy received from its app).
    pub tcp_request_bytes_per_sec: Option<f64>,
    /// TCP bytes per second from the server to the client (`istio_tcp_sent_bytes_total`:
    /// what the client's proxy sent back to its app).
    pub tcp_response_bytes_per_sec: Option<f64>,
}

const TOP_HTTP_KEYS: [&str; 5] = [
    "source_workload_namespace",
    "source_workload",
    "destination_workload_namespace",
    "destination_workload",
    "request_protocol",
];
const TOP_TCP_KEYS: [&str; 7] = [
    "source_workload_namespace",
    "source_workload",
    "destination_workload_namespace",
    "destination_workload",
    "destination_service_namespace",
    "destination_service_name",
    "destination_service",
];

/// The expressions of one `skein top` refresh.
pub fn top_exprs(spec: &TopSpec) -> Result<Vec<Expr>, TrafficError> {
    if let Some(r) = &spec.resource
        && !matches!(r.kind, Kind::Deploy | Kind::Rollout | Kind::Ns)
    {
        return Err(TrafficError::Unsupported(
            "top shows edges between workloads: use deploy[/NAME], rollout[/NAME] or ns[/NAME]"
                .into(),
        ));
    }
    let by = TOP_HTTP_KEYS.to_vec();
    let req = selector(REQUESTS, Side::Destination, &[]);
    let dur = selector(DURATION_BUCKET, Side::Destination, &[]);
    let mut exprs = vec![
        Expr::Rate {
            sel: req.clone(),
            by: by.clone(),
        },
        Expr::Rate {
            sel: req.with(not_5xx()),
            by: by.clone(),
        },
    ];
    for q in [0.5, 0.95, 0.99] {
        exprs.push(Expr::Quantile {
            q,
            sel: dur.clone(),
            by: by.clone(),
        });
    }
    for metric in [TCP_SENT, TCP_RECEIVED] {
        exprs.push(Expr::Rate {
            sel: selector(metric, Side::Source, &[]),
            by: TOP_TCP_KEYS.to_vec(),
        });
    }
    Ok(exprs)
}

/// `skein top`: the edges with traffic in the window, busiest first.
pub fn top(
    spec: &TopSpec,
    backend: &mut dyn Backend,
    window_seconds: f64,
) -> Result<Vec<TopRow>, TrafficError> {
    let exprs = top_exprs(spec)?;
    let mut answers = Vec::new();
    for (i, e) in exprs.iter().enumerate() {
        let key: &[&str] = if i < 5 { &TOP_HTTP_KEYS } else { &TOP_TCP_KEYS };
        answers.push(keyed(backend.eval(e, spec.window)?, key));
    }
    let touches = |ns: &str, name: &str| {
        spec.namespaces.contains(ns)
            && spec
                .resource
                .as_ref()
                .is_none_or(|r| match (&r.name, r.kind) {
                    (None, _) => true,
                    (Some(n), Kind::Ns) => n == ns,
                    (Some(n), _) => n == name,
                })
    };
    let mut rows = Vec::new();
    for (k, total) in &answers[0] {
        let [src_ns, src, dst_ns, dst, proto] = k.as_slice() else {
            continue;
        };
        if !(touches(src_ns, src) || touches(dst_ns, dst)) || *total <= 0.0 {
            continue;
        }
        let get = |i: usize| answers.get(i).and_then(|a| a.get(k)).copied();
        rows.push(TopRow {
            src: src.clone(),
            src_namespace: src_ns.clone(),
            dst: dst.clone(),
            dst_namespace: dst_ns.clone(),
            protocol: proto.clone(),
            count: Some(total * window_seconds),
            rps: Some(*total),
            success: Some(get(1).unwrap_or(0.0) / total),
            latency_ms_p50: finite(get(2)),
            latency_ms_p95: finite(get(3)),
            latency_ms_p99: finite(get(4)),
            tcp_request_bytes_per_sec: None,
            tcp_response_bytes_per_sec: None,
        });
    }
    let mut tcp_keys: Vec<&Vec<String>> = answers[5].keys().chain(answers[6].keys()).collect();
    tcp_keys.sort();
    tcp_keys.dedup();
    for k in tcp_keys {
        let [src_ns, src, dst_wl_ns, dst_wl, svc_ns, svc, host] = k.as_slice() else {
            continue;
        };
        let (dst, dst_ns) = if dst_wl == "unknown" || dst_wl.is_empty() {
            (svc.clone(), service_namespace(svc_ns, host))
        } else {
            (dst_wl.clone(), dst_wl_ns.clone())
        };
        let sent = answers[5].get(k).copied();
        let received = answers[6].get(k).copied();
        if !(touches(src_ns, src) || touches(&dst_ns, &dst))
            || sent.unwrap_or(0.0) + received.unwrap_or(0.0) <= 0.0
        {
            continue;
        }
        rows.push(TopRow {
            src: src.clone(),
            src_namespace: src_ns.clone(),
            dst,
            dst_namespace: dst_ns,
            protocol: "tcp".into(),
            count: None,
            rps: None,
            success: None,
            latency_ms_p50: None,
            latency_ms_p95: None,
            latency_ms_p99: None,
            tcp_request_bytes_per_sec: received,
            tcp_response_bytes_per_sec: sent,
        });
    }
    rows.sort_by(|a, b| {
        b.rps
            .unwrap_or(-1.0)
            .total_cmp(&a.rps.unwrap_or(-1.0))
            .then_with(|| {
                (
                    &a.src_namespace,
                    &a.src,
                    &a.dst_namespace,
                    &a.dst,
                    &a.protocol,
                )
                    .cmp(&(
                        &b.src_namespace,
                        &b.src,
                        &b.dst_namespace,
                        &b.dst,
                        &b.protocol,
                    ))
            })
    });
    Ok(rows)
}

/// A service's namespace: the label, or (when the client could not learn it, a server
/// without a proxy) the second part of the service's FQDN (`mysql.blog-system.svc...`).
fn service_namespace(label: &str, host: &str) -> String {
    if !label.is_empty() && label != "unknown" {
        return label.to_string();
    }
    match host.split('.').collect::<Vec<_>>().as_slice() {
        [_, ns, "svc", ..] => ns.to_string(),
        _ => label.to_string(),
    }
}

/// Parses `-t`: `30s`, `1m`, `2h`, `1m30s`, or plain seconds.
pub fn parse_window(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| e.to_string());
    }
    let mut total = 0.0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            0.001
        } else {
            match c {
                's' => 1.0,
                'm' => 60.0,
                'h' => 3600.0,
                _ => return Err(format!("{s:?}: use a duration like 30s, 1m or 1h")),
            }
        };
        let n: f64 = num
            .parse()
            .map_err(|_| format!("{s:?}: use a duration like 30s, 1m or 1h"))?;
        total += n * unit;
        num.clear();
    }
    if !num.is_empty() {
        return Err(format!("{s:?}: a number without a unit (s, m or h)"));
    }
    Duration::try_from_secs_f64(total).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
