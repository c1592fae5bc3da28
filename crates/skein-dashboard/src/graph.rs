//! Kiali's graph (`GET /api/namespaces/graph`), built the way Kiali builds it
//! (`kiali/kiali:graph/telemetry/istio`): per requested namespace, the requests that reached
//! a workload there (destination-reported), the requests its workloads sent
//! (source-reported), and the failed requests to its services that never reached a
//! workload; the same for TCP bytes (`istio_tcp_sent_bytes_total` and
//! `istio_tcp_received_bytes_total`). Nodes are identified as Kiali does per graph type and
//! the ids are SHA-256 hex of those internal ids. Edges are then decorated: mTLS share and
//! principals (destination-reported), response time (destination first, then source) and
//! throughput; nodes get the Istio config's flags, `isGateway`, `isOutside` and `isRoot`.
//!
//! [`plan`] lists every query, [`build`] turns the answers into the JSON; the server runs the
//! queries in between, and the tests feed answers recorded from a real Prometheus.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::{Map, Value as Json, json};
use skein_runtime::prom::{Sample, escape_label};

use crate::config::ServiceFlags;

/// What a graph is asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub namespaces: Vec<String>,
    pub graph_type: GraphType,
    /// Seconds.
    pub duration: u64,
    pub inject_service_nodes: bool,
    pub response_time: ResponseTime,
    pub idle_edges: bool,
    /// Evaluation time, unix seconds.
    pub time: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphType {
    App,
    VersionedApp,
    Workload,
    Service,
}

impl GraphType {
    pub fn parse(s: &str) -> GraphType {
        match s {
            "app" => GraphType::App,
            "workload" => GraphType::Workload,
            "service" => GraphType::Service,
            _ => GraphType::VersionedApp,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            GraphType::App => "app",
            GraphType::VersionedApp => "versionedApp",
            GraphType::Workload => "workload",
            GraphType::Service => "service",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResponseTime {
    Avg,
    Quantile(f64),
}

impl ResponseTime {
    pub fn parse(s: &str) -> ResponseTime {
        match s {
            "avg" => ResponseTime::Avg,
            "50" => ResponseTime::Quantile(0.5),
            "99" => ResponseTime::Quantile(0.99),
            _ => ResponseTime::Quantile(0.95),
        }
    }
}

/// What the graph needs from the config and the inventory.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Per Service FQDN.
    pub service_flags: BTreeMap<String, ServiceFlags>,
    /// The hosts the ingress gateway serves.
    pub ingress_hostnames: Vec<String>,
    /// `namespace/workload` of workloads whose pods run without a sidecar.
    pub out_of_mesh: BTreeSet<String>,
    /// `namespace/app` for apps whose every workload runs without a sidecar.
    pub out_of_mesh_apps: BTreeSet<String>,
}

const HTTP_GROUP: &str = "source_cluster,source_workload_namespace,source_workload,source_canonical_service,source_canonical_revision,destination_cluster,destination_service_namespace,destination_service,destination_service_name,destination_workload_namespace,destination_workload,destination_canonical_service,destination_canonical_revision,request_protocol,response_code,grpc_response_status,response_flags";
const TCP_GROUP: &str = "source_cluster,source_workload_namespace,source_workload,source_canonical_service,source_canonical_revision,destination_cluster,destination_service_namespace,destination_service,destination_service_name,destination_workload_namespace,destination_workload,destination_canonical_service,destination_canonical_revision,response_flags";
const EDGE_GROUP: &str = "source_cluster,source_workload_namespace,source_workload,source_canonical_service,source_canonical_revision,destination_cluster,destination_service_namespace,destination_service_name,destination_workload_namespace,destination_workload,destination_canonical_service,destination_canonical_revision";
const MTLS_GROUP: &str = "source_cluster,source_workload_namespace,source_workload,source_canonical_service,source_canonical_revision,destination_cluster,destination_service_namespace,destination_service_name,destination_workload_namespace,destination_workload,destination_canonical_service,destination_canonical_revision,connection_security_policy,source_principal,destination_principal";

/// Which reporter a traffic query reads (destination-reported rows win over source-reported
/// rows for the same hop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    Destination,
    Source,
}

/// The traffic queries of one namespace, with the reporter and protocol of each.
pub fn traffic_queries(ns: &str, o: &Options) -> Vec<(String, Reporter, Protocol)> {
    let ns = escape_label(ns);
    let d = o.duration;
    let idle = if o.idle_edges { "" } else { " > 0" };
    let mut out = vec![
        (
            format!(
                "sum(rate(istio_requests_total{{reporter=\"source\",source_workload_namespace!=\"{ns}\",destination_workload_namespace=\"unknown\",destination_workload=\"unknown\",destination_service=~\"^.+\\\\.{ns}\\\\..+$\"}}[{d}s])) by ({HTTP_GROUP}){idle}"
            ),
            Reporter::Source,
            Protocol::Http,
        ),
        (
            format!(
                "sum(rate(istio_requests_total{{reporter=\"destination\",destination_workload_namespace=\"{ns}\"}}[{d}s])) by ({HTTP_GROUP}){idle}"
            ),
            Reporter::Destination,
            Protocol::Http,
        ),
        (
            format!(
                "sum(rate(istio_requests_total{{reporter=\"source\",source_workload_namespace=\"{ns}\"}}[{d}s])) by ({HTTP_GROUP}){idle}"
            ),
            Reporter::Source,
            Protocol::Http,
        ),
    ];
    for metric in [
        "istio_tcp_sent_bytes_total",
        "istio_tcp_received_bytes_total",
    ] {
        out.push((
            format!(
                "sum(rate({metric}{{reporter=\"source\",source_workload_namespace!=\"{ns}\",destination_workload_namespace=\"unknown\",destination_workload=\"unknown\",destination_service=~\"^.+\\\\.{ns}\\\\..+$\"}}[{d}s])) by ({TCP_GROUP}){idle}"
            ),
            Reporter::Source,
            Protocol::Tcp,
        ));
        out.push((
            format!(
                "sum(rate({metric}{{reporter=\"destination\",destination_workload_namespace=\"{ns}\"}}[{d}s])) by ({TCP_GROUP}){idle}"
            ),
            Reporter::Destination,
            Protocol::Tcp,
        ));
        out.push((
            format!(
                "sum(rate({metric}{{reporter=\"source\",source_workload_namespace=\"{ns}\"}}[{d}s])) by ({TCP_GROUP}){idle}"
            ),
            Reporter::Source,
            Protocol::Tcp,
        ));
    }
    out
}

/// The decorations' queries of one namespace.
pub struct Decorations {
    pub mtls: Vec<String>,
    /// Destination-reported first: the first answer per edge wins.
    pub response_time: Vec<String>,
    pub throughput: String,
}

pub fn decoration_queries(ns: &str, o: &Options) -> Decorations {
    let ns = escape_label(ns);
    let d = o.duration;
    let dest = format!("reporter=~\"destination|waypoint\",destination_service_namespace=\"{ns}\"");
    let src = format!("reporter=\"source\",source_workload_namespace=\"{ns}\"");
    let rt = |sel: &str| match o.response_time {
        ResponseTime::Quantile(q) => format!(
            "histogram_quantile({q}, sum(rate(istio_request_duration_milliseconds_bucket{{{sel}}}[{d}s])) by (le,{EDGE_GROUP})) > 0"
        ),
        ResponseTime::Avg => format!(
            "sum(rate(istio_request_duration_milliseconds_sum{{{sel}}}[{d}s])) by ({EDGE_GROUP}) / sum(rate(istio_request_duration_milliseconds_count{{{sel}}}[{d}s])) by ({EDGE_GROUP}) > 0"
        ),
    };
    Decorations {
        mtls: ["istio_requests_total", "istio_tcp_sent_bytes_total"]
            .iter()
            .map(|m| {
                format!(
                    "sum(rate({m}{{reporter=\"destination\",destination_workload_namespace=\"{ns}\"}}[{d}s])) by ({MTLS_GROUP}) > 0"
                )
            })
            .collect(),
        response_time: vec![rt(&dest), rt(&src)],
        throughput: format!(
            "sum(rate(istio_response_bytes_sum{{reporter=\"destination\",destination_workload_namespace=\"{ns}\"}}[{d}s])) by ({EDGE_GROUP}) > 0"
        ),
    }
}

/// Every query of a graph.
pub fn plan(o: &Options) -> Vec<String> {
    let mut out = Vec::new();
    for ns in &o.namespaces {
        out.extend(traffic_queries(ns, o).into_iter().map(|(q, _, _)| q));
        let d = decoration_queries(ns, o);
        out.extend(d.mtls);
        out.extend(d.response_time);
        out.push(d.throughput);
    }
    out.dedup();
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Http,
    Grpc,
    Tcp,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
            Protocol::Tcp => "tcp",
        }
    }
}

/// The node kinds of Kiali's JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeType {
    App,
    Workload,
    Service,
    Unknown,
    Box,
}

impl NodeType {
    fn as_str(self) -> &'static str {
        match self {
            NodeType::App => "app",
            NodeType::Workload => "workload",
            NodeType::Service => "service",
            NodeType::Unknown => "unknown",
            NodeType::Box => "box",
        }
    }
}

#[derive(Debug, Clone)]
struct Node {
    id: String,
    node_type: NodeType,
    cluster: String,
    namespace: String,
    workload: String,
    app: String,
    version: String,
    service: String,
    dest_services: BTreeSet<(String, String, String)>,
    /// Per protocol, rate name -> value.
    rates: BTreeMap<Protocol, BTreeMap<&'static str, f64>>,
    parent: Option<String>,
}

/// Rate by response flags, or by host.
type Shares = BTreeMap<String, f64>;

#[derive(Debug, Clone, Default)]
struct Edge {
    protocol: Option<Protocol>,
    total: f64,
    /// code -> (flags -> rate, host -> rate)
    responses: BTreeMap<String, (Shares, Shares)>,
    mtls_rate: f64,
    mtls_total: f64,
    source_principal: Option<String>,
    dest_principal: Option<String>,
    response_time: Option<f64>,
    throughput: Option<f64>,
}

fn known(v: &str) -> bool {
    !v.is_empty() && v != "unknown"
}

/// Kiali's internal node id and type for one side of a series.
#[allow(clippy::too_many_arguments)]
fn node_id(
    gt: GraphType,
    cluster: &str,
    svc_ns: &str,
    svc: &str,
    ns: &str,
    wl: &str,
    app: &str,
    ver: &str,
) -> (String, NodeType) {
    if !known(ns) && !known(wl) && !known(app) && svc.is_empty() {
        return (format!("{cluster}_unknown_source"), NodeType::Unknown);
    }
    if !known(wl) && !known(app) && !known(svc) {
        return (format!("svc_{cluster}_{svc_ns}_unknown"), NodeType::Unknown);
    }
    match gt {
        GraphType::Workload | GraphType::Service => {
            if known(wl) {
                (format!("wl_{cluster}_{ns}_{wl}"), NodeType::Workload)
            } else {
                (format!("svc_{cluster}_{svc_ns}_{svc}"), NodeType::Service)
            }
        }
        GraphType::App | GraphType::VersionedApp => {
            if known(app) {
                if gt == GraphType::VersionedApp && known(ver) {
                    (format!("vapp_{cluster}_{ns}_{app}_{ver}"), NodeType::App)
                } else {
                    (format!("app_{cluster}_{ns}_{app}"), NodeType::App)
                }
            } else if known(wl) {
                (format!("wl_{cluster}_{ns}_{wl}"), NodeType::Workload)
            } else {
                (format!("svc_{cluster}_{svc_ns}_{svc}"), NodeType::Service)
            }
        }
    }
}

/// Kiali's element id: SHA-256 hex of the internal id.
pub fn hash(id: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// One side of a series, as labels.
#[derive(Debug, Clone, Default)]
struct Side {
    cluster: String,
    ns: String,
    wl: String,
    app: String,
    ver: String,
}

struct Row<'a> {
    s: &'a Sample,
    src: Side,
    dst: Side,
    svc_ns: String,
    svc: String,
    svc_name: String,
}

fn row(s: &Sample) -> Row<'_> {
    let src_cluster = match s.get("source_cluster") {
        "" => "unknown".to_string(),
        c => c.to_string(),
    };
    let dst_cluster = match s.get("destination_cluster") {
        // Kiali: an unknown destination cluster is taken as the source's.
        "" | "unknown" => src_cluster.clone(),
        c => c.to_string(),
    };
    Row {
        s,
        src: Side {
            cluster: src_cluster,
            ns: s.get("source_workload_namespace").to_string(),
            wl: s.get("source_workload").to_string(),
            app: s.get("source_canonical_service").to_string(),
            ver: s.get("source_canonical_revision").to_string(),
        },
        dst: Side {
            cluster: dst_cluster,
            ns: s.get("destination_workload_namespace").to_string(),
            wl: s.get("destination_workload").to_string(),
            app: s.get("destination_canonical_service").to_string(),
            ver: s.get("destination_canonical_revision").to_string(),
        },
        svc_ns: s.get("destination_service_namespace").to_string(),
        svc: s.get("destination_service").to_string(),
        svc_name: s.get("destination_service_name").to_string(),
    }
}

fn looks_like_ip(v: &str) -> bool {
    v.parse::<std::net::IpAddr>().is_ok()
        || v.rsplit_once(':')
            .is_some_and(|(h, _)| h.parse::<std::net::IpAddr>().is_ok())
}

/// The graph being built.
struct Graph {
    gt: GraphType,
    inject: bool,
    nodes: BTreeMap<String, Node>,
    /// (source id, dest id, protocol) -> edge.
    edges: BTreeMap<(String, String, Protocol), Edge>,
}

impl Graph {
    fn node(&mut self, side: &Side, svc_ns: &str, svc: &str, as_service: bool) -> String {
        let (id, t) = if as_service {
            (
                format!("svc_{}_{}_{}", side.cluster, svc_ns, svc),
                NodeType::Service,
            )
        } else {
            node_id(
                self.gt,
                &side.cluster,
                svc_ns,
                svc,
                &side.ns,
                &side.wl,
                &side.app,
                &side.ver,
            )
        };
        let gt = self.gt;
        self.nodes.entry(id.clone()).or_insert_with(|| {
            let per_workload = matches!(
                gt,
                GraphType::Workload | GraphType::Service | GraphType::VersionedApp
            );
            let (ns, wl, app, ver, service) = match t {
                NodeType::Service => (
                    svc_ns.to_string(),
                    String::new(),
                    String::new(),
                    String::new(),
                    svc.to_string(),
                ),
                NodeType::Unknown => (
                    "unknown".to_string(),
                    "unknown".into(),
                    "unknown".into(),
                    String::new(),
                    String::new(),
                ),
                _ => (
                    side.ns.clone(),
                    if per_workload || t == NodeType::Workload {
                        side.wl.clone()
                    } else {
                        String::new()
                    },
                    if known(&side.app) {
                        side.app.clone()
                    } else {
                        String::new()
                    },
                    if gt != GraphType::App && known(&side.ver) {
                        side.ver.clone()
                    } else {
                        String::new()
                    },
                    String::new(),
                ),
            };
            Node {
                id: id.clone(),
                node_type: t,
                cluster: side.cluster.clone(),
                namespace: ns,
                workload: wl,
                app,
                version: ver,
                service,
                dest_services: BTreeSet::new(),
                rates: BTreeMap::new(),
                parent: None,
            }
        });
        id
    }

    fn add_rate(&mut self, id: &str, proto: Protocol, key: &'static str, v: f64) {
        if let Some(n) = self.nodes.get_mut(id) {
            *n.rates.entry(proto).or_default().entry(key).or_default() += v;
        }
    }

    /// One row's traffic on the edge `from` -> `to`: `resp` is (code, flags, host).
    fn add_edge(
        &mut self,
        from: &str,
        to: &str,
        proto: Protocol,
        resp: (&str, &str, &str),
        v: f64,
    ) {
        let (code, flags, host) = resp;
        let e = self
            .edges
            .entry((from.to_string(), to.to_string(), proto))
            .or_default();
        e.protocol = Some(proto);
        e.total += v;
        let r = e.responses.entry(code.to_string()).or_default();
        *r.0.entry(flags.to_string()).or_default() += v;
        if !host.is_empty() {
            *r.1.entry(host.to_string()).or_default() += v;
        }
        let (out_key, in_keys): (&'static str, Vec<&'static str>) = match proto {
            Protocol::Tcp => ("tcpOut", vec!["tcpIn"]),
            Protocol::Http | Protocol::Grpc => {
                let class = match code.as_bytes().first() {
                    Some(b'3') => Some("httpIn3xx"),
                    Some(b'4') => Some("httpIn4xx"),
                    Some(b'5') => Some("httpIn5xx"),
                    Some(b'-') => Some("httpInNoResponse"),
                    _ => None,
                };
                let mut k = vec!["httpIn"];
                k.extend(class);
                ("httpOut", k)
            }
        };
        self.add_rate(from, proto, out_key, v);
        for k in in_keys {
            self.add_rate(to, proto, k, v);
        }
    }

    /// One traffic row (Kiali's `addTraffic`).
    fn add_traffic(&mut self, r: &Row<'_>, proto: Protocol) {
        let v = r.s.value;
        if !v.is_finite() || v < 0.0 {
            return;
        }
        let code = match proto {
            Protocol::Tcp => "-".to_string(),
            _ => match r.s.get("response_code") {
                "0" | "" => "-".to_string(),
                c => c.to_string(),
            },
        };
        let proto = match (proto, r.s.get("request_protocol")) {
            (Protocol::Http, "grpc") => Protocol::Grpc,
            (p, _) => p,
        };
        let code = if proto == Protocol::Grpc && !code.starts_with('4') && !code.starts_with('5') {
            match r.s.get("grpc_response_status") {
                "" => code,
                g => g.to_string(),
            }
        } else {
            code
        };
        let flags = match r.s.get("response_flags") {
            "" => "-",
            f => f,
        };
        let host = if known(&r.svc) { r.svc.as_str() } else { "" };
        let source = self.node(&r.src, "", "", false);
        let dest_svc_name = if known(&r.svc_name) {
            r.svc_name.clone()
        } else {
            r.svc.clone()
        };
        let inject = self.inject && known(&dest_svc_name) && known(&r.dst.wl);
        if inject {
            let svc = self.node(&r.dst, &r.svc_ns, &dest_svc_name, true);
            let dest = self.node(&r.dst, &r.svc_ns, &dest_svc_name, false);
            self.add_dest_service(&svc, &r.dst.cluster, &r.svc_ns, &dest_svc_name);
            self.add_dest_service(&dest, &r.dst.cluster, &r.svc_ns, &dest_svc_name);
            self.add_edge(&source, &svc, proto, (&code, flags, host), v);
            self.add_edge(&svc, &dest, proto, (&code, flags, host), v);
        } else {
            let dest = self.node(
                &r.dst,
                &r.svc_ns,
                &dest_svc_name,
                !known(&r.dst.wl) && known(&dest_svc_name),
            );
            if known(&dest_svc_name) {
                self.add_dest_service(&dest, &r.dst.cluster, &r.svc_ns, &dest_svc_name);
            }
            self.add_edge(&source, &dest, proto, (&code, flags, host), v);
        }
    }

    fn add_dest_service(&mut self, id: &str, cluster: &str, ns: &str, name: &str) {
        if let Some(n) = self.nodes.get_mut(id) {
            n.dest_services
                .insert((cluster.to_string(), ns.to_string(), name.to_string()));
        }
    }

    /// The edges a decoration row belongs to: source to workload (or the service node and the
    /// service to workload edge when services are injected); `last_hop_only` for the numbers
    /// Kiali puts only on the service -> workload edge.
    fn edge_keys(&mut self, r: &Row<'_>, last_hop_only: bool) -> Vec<(String, String)> {
        let dest_svc_name = if known(&r.svc_name) {
            r.svc_name.clone()
        } else {
            r.svc.clone()
        };
        let (src_id, _) = node_id(
            self.gt,
            &r.src.cluster,
            "",
            "",
            &r.src.ns,
            &r.src.wl,
            &r.src.app,
            &r.src.ver,
        );
        let as_service = !known(&r.dst.wl) && known(&dest_svc_name);
        let (dst_id, _) = if as_service {
            (
                format!("svc_{}_{}_{}", r.dst.cluster, r.svc_ns, dest_svc_name),
                NodeType::Service,
            )
        } else {
            node_id(
                self.gt,
                &r.dst.cluster,
                &r.svc_ns,
                &dest_svc_name,
                &r.dst.ns,
                &r.dst.wl,
                &r.dst.app,
                &r.dst.ver,
            )
        };
        let svc_id = format!("svc_{}_{}_{}", r.dst.cluster, r.svc_ns, dest_svc_name);
        if self.inject && known(&dest_svc_name) && known(&r.dst.wl) {
            if last_hop_only {
                vec![(svc_id, dst_id)]
            } else {
                vec![(src_id, svc_id.clone()), (svc_id, dst_id)]
            }
        } else {
            vec![(src_id, dst_id)]
        }
    }

    fn edges_between(&mut self, from: &str, to: &str) -> impl Iterator<Item = &mut Edge> {
        self.edges
            .iter_mut()
            .filter(move |((f, t, _), _)| f == from && t == to)
            .map(|(_, e)| e)
    }
}

/// Kiali's rate formatting: two decimals.
fn rate(v: f64) -> String {
    format!("{v:.2}")
}

fn pct(v: f64) -> String {
    format!("{v:.1}")
}

/// The answers by query text.
pub type Answers = BTreeMap<String, Vec<Sample>>;

/// The graph's JSON from the answers to [`plan`]'s queries (a query without an answer counts
/// as empty).
pub fn build(o: &Options, answers: &Answers, cx: &Context) -> Json {
    let mut g = Graph {
        gt: o.graph_type,
        // The service graph is a workload graph with service nodes, reduced below.
        inject: o.inject_service_nodes || o.graph_type == GraphType::Service,
        nodes: BTreeMap::new(),
        edges: BTreeMap::new(),
    };
    let gt_for_ids = if o.graph_type == GraphType::Service {
        GraphType::Workload
    } else {
        o.graph_type
    };
    g.gt = gt_for_ids;
    let empty = Vec::new();
    let get = |q: &String| answers.get(q).unwrap_or(&empty);

    // Destination-reported rows win: a hop they cover is not counted again from the
    // source-reported rows (the same requests, seen by the client).
    let hop = |r: &Row<'_>, p: Protocol| {
        (
            r.src.ns.clone(),
            r.src.wl.clone(),
            r.dst.ns.clone(),
            r.dst.wl.clone(),
            p == Protocol::Tcp,
        )
    };
    let mut covered: HashSet<(String, String, String, String, bool)> = HashSet::new();
    let mut rows: Vec<(Row<'_>, Reporter, Protocol)> = Vec::new();
    let mut seen_queries: HashSet<&str> = HashSet::new();
    let queries: Vec<(String, Reporter, Protocol)> = o
        .namespaces
        .iter()
        .flat_map(|ns| traffic_queries(ns, o))
        .collect();
    for (q, rep, proto) in &queries {
        if !seen_queries.insert(q.as_str()) {
            continue;
        }
        for s in get(q) {
            let r = row(s);
            // Kiali's cleanup: source telemetry from an unknown workload in a known namespace,
            // and destination telemetry to a bare IP with no workload, are dropped.
            if *rep == Reporter::Source
                && known(&r.src.ns)
                && !known(&r.src.wl)
                && !known(&r.src.app)
            {
                continue;
            }
            if !known(&r.dst.wl) && r.svc == r.svc_name && looks_like_ip(&r.svc) {
                continue;
            }
            if *rep == Reporter::Destination {
                covered.insert(hop(&r, *proto));
            }
            rows.push((r, *rep, *proto));
        }
    }
    for (r, rep, proto) in &rows {
        if *rep == Reporter::Source && known(&r.dst.wl) && covered.contains(&hop(r, *proto)) {
            continue;
        }
        g.add_traffic(r, *proto);
    }

    // Decorations.
    for ns in &o.namespaces {
        let d = decoration_queries(ns, o);
        // Requests decorate the HTTP edges, TCP bytes the TCP edges.
        for (q, tcp) in d.mtls.iter().zip([false, true]) {
            for s in get(q) {
                let r = row(s);
                let mtls = s.get("connection_security_policy") == "mutual_tls";
                for (f, t) in g.edge_keys(&r, false) {
                    for e in g.edges_between(&f, &t) {
                        if (e.protocol == Some(Protocol::Tcp)) != tcp {
                            continue;
                        }
                        e.mtls_total += s.value;
                        if mtls {
                            e.mtls_rate += s.value;
                            if known(s.get("source_principal")) {
                                e.source_principal = Some(s.get("source_principal").to_string());
                            }
                            if known(s.get("destination_principal")) {
                                e.dest_principal = Some(s.get("destination_principal").to_string());
                            }
                        }
                    }
                }
            }
        }
        for q in &d.response_time {
            for s in get(q) {
                if !s.value.is_finite() {
                    continue;
                }
                let r = row(s);
                for (f, t) in g.edge_keys(&r, true) {
                    for e in g.edges_between(&f, &t) {
                        if e.protocol != Some(Protocol::Tcp) && e.response_time.is_none() {
                            e.response_time = Some(s.value);
                        }
                    }
                }
            }
        }
        for s in get(&d.throughput) {
            if !s.value.is_finite() {
                continue;
            }
            let r = row(s);
            for (f, t) in g.edge_keys(&r, true) {
                for e in g.edges_between(&f, &t) {
                    if e.protocol != Some(Protocol::Tcp) {
                        *e.throughput.get_or_insert(0.0) += s.value;
                    }
                }
            }
        }
    }
    // TCP edges' throughput is their byte rate.
    for e in g.edges.values_mut() {
        if e.protocol == Some(Protocol::Tcp) {
            e.throughput = Some(e.total);
        }
    }

    if o.graph_type == GraphType::Service {
        reduce_to_services(&mut g);
    }
    if o.graph_type == GraphType::VersionedApp {
        box_by_app(&mut g);
    }
    render(o, &g, cx)
}

/// Kiali's service graph: the workload graph's service nodes, each calling the services its
/// workloads call; sources that are not services (a gateway, an unknown client) stay.
fn reduce_to_services(g: &mut Graph) {
    let is_svc = |g: &Graph, id: &str| {
        g.nodes
            .get(id)
            .is_some_and(|n| n.node_type == NodeType::Service)
    };
    // workload -> the services in front of it
    let mut fronts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (f, t, _) in g.edges.keys() {
        if is_svc(g, f) && !is_svc(g, t) {
            fronts.entry(t.clone()).or_default().push(f.clone());
        }
    }
    let mut edges: BTreeMap<(String, String, Protocol), Edge> = BTreeMap::new();
    let mut keep: BTreeSet<String> = BTreeSet::new();
    for ((f, t, p), e) in &g.edges {
        if !is_svc(g, t) {
            continue; // service -> workload edges are folded away
        }
        let sources = match fronts.get(f) {
            Some(svcs) => svcs.clone(),
            None => vec![f.clone()],
        };
        for s in sources {
            keep.insert(s.clone());
            keep.insert(t.clone());
            let ne = edges.entry((s, t.clone(), *p)).or_default();
            ne.protocol = e.protocol;
            ne.total += e.total;
            for (code, (flags, hosts)) in &e.responses {
                let r = ne.responses.entry(code.clone()).or_default();
                for (k, v) in flags {
                    *r.0.entry(k.clone()).or_default() += v;
                }
                for (k, v) in hosts {
                    *r.1.entry(k.clone()).or_default() += v;
                }
            }
            ne.mtls_rate += e.mtls_rate;
            ne.mtls_total += e.mtls_total;
            ne.source_principal = ne.source_principal.take().or(e.source_principal.clone());
            ne.dest_principal = ne.dest_principal.take().or(e.dest_principal.clone());
            ne.response_time = ne.response_time.or(e.response_time);
            ne.throughput = match (ne.throughput, e.throughput) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
        }
    }
    // A service with traffic only to its workloads (no onward calls) still shows.
    for (f, t, _) in g.edges.keys() {
        if is_svc(g, f) && !is_svc(g, t) {
            keep.insert(f.clone());
        }
    }
    g.nodes.retain(|id, _| keep.contains(id));
    // Node rates: recomputed from the reduced edges.
    for n in g.nodes.values_mut() {
        n.rates.clear();
    }
    g.edges = BTreeMap::new();
    for ((f, t, p), e) in edges {
        let rates: Vec<(String, f64)> = e
            .responses
            .iter()
            .map(|(c, (flags, _))| (c.clone(), flags.values().sum()))
            .collect();
        for (code, v) in rates {
            let (out_key, in_keys): (&'static str, Vec<&'static str>) = match p {
                Protocol::Tcp => ("tcpOut", vec!["tcpIn"]),
                _ => {
                    let mut k = vec!["httpIn"];
                    match code.as_bytes().first() {
                        Some(b'3') => k.push("httpIn3xx"),
                        Some(b'4') => k.push("httpIn4xx"),
                        Some(b'5') => k.push("httpIn5xx"),
                        Some(b'-') => k.push("httpInNoResponse"),
                        _ => {}
                    }
                    ("httpOut", k)
                }
            };
            g.add_rate(&f, p, out_key, v);
            for k in in_keys {
                g.add_rate(&t, p, k, v);
            }
        }
        g.edges.insert((f, t, p), e);
    }
}

/// versionedApp: every app node with a version goes into a box for its app.
fn box_by_app(g: &mut Graph) {
    let mut boxes: BTreeMap<String, Node> = BTreeMap::new();
    for n in g.nodes.values_mut() {
        if n.node_type != NodeType::App || n.version.is_empty() {
            continue;
        }
        let box_id = format!("app_{}_{}_{}", n.cluster, n.namespace, n.app);
        n.parent = Some(box_id.clone());
        boxes.entry(box_id.clone()).or_insert_with(|| Node {
            id: box_id,
            node_type: NodeType::Box,
            cluster: n.cluster.clone(),
            namespace: n.namespace.clone(),
            workload: String::new(),
            app: n.app.clone(),
            version: String::new(),
            service: String::new(),
            dest_services: BTreeSet::new(),
            rates: BTreeMap::new(),
            parent: None,
        });
    }
    g.nodes.extend(boxes);
}

fn render(o: &Options, g: &Graph, cx: &Context) -> Json {
    let mut incoming: HashSet<&str> = HashSet::new();
    let mut outgoing: HashSet<&str> = HashSet::new();
    for (f, t, _) in g.edges.keys() {
        outgoing.insert(f);
        incoming.insert(t);
    }
    let mut nodes = Vec::new();
    for n in g.nodes.values() {
        let mut d = Map::new();
        d.insert("id".into(), hash(&n.id).into());
        if let Some(p) = &n.parent {
            d.insert("parent".into(), hash(p).into());
        }
        d.insert("nodeType".into(), n.node_type.as_str().into());
        d.insert("cluster".into(), n.cluster.clone().into());
        d.insert("namespace".into(), n.namespace.clone().into());
        for (k, v) in [
            ("workload", &n.workload),
            ("app", &n.app),
            ("version", &n.version),
            ("service", &n.service),
        ] {
            if !v.is_empty() {
                d.insert(k.into(), v.clone().into());
            }
        }
        if n.node_type == NodeType::Box {
            d.insert("isBox".into(), "app".into());
            nodes.push(json!({"data": d}));
            continue;
        }
        if !n.dest_services.is_empty() {
            d.insert(
                "destServices".into(),
                n.dest_services
                    .iter()
                    .map(|(c, ns, name)| json!({"cluster": c, "namespace": ns, "name": name}))
                    .collect::<Vec<_>>()
                    .into(),
            );
        }
        let traffic: Vec<Json> = n
            .rates
            .iter()
            .map(|(p, rates)| {
                let r: Map<String, Json> = rates
                    .iter()
                    .filter(|(_, v)| **v > 0.0)
                    .map(|(k, v)| (k.to_string(), rate(*v).into()))
                    .collect();
                json!({"protocol": p.as_str(), "rates": r})
            })
            .collect();
        if !traffic.is_empty() {
            d.insert("traffic".into(), traffic.into());
        }
        // Flags from the config: a service node's own, or those of the services a node
        // receives traffic for.
        let fqdns: Vec<String> = if n.node_type == NodeType::Service {
            vec![skein_snapshot::names::fqdn(&n.service, &n.namespace)]
        } else {
            n.dest_services
                .iter()
                .map(|(_, ns, name)| skein_snapshot::names::fqdn(name, ns))
                .collect()
        };
        let mut f = ServiceFlags::default();
        for fq in &fqdns {
            if let Some(sf) = cx.service_flags.get(fq) {
                f.vs_hostnames.extend(sf.vs_hostnames.iter().cloned());
                f.has_cb |= sf.has_cb;
                f.has_mirroring |= sf.has_mirroring;
                f.has_fault_injection |= sf.has_fault_injection;
                f.has_request_routing |= sf.has_request_routing;
                f.has_traffic_shifting |= sf.has_traffic_shifting;
                f.has_request_timeout |= sf.has_request_timeout;
                f.has_retries |= sf.has_retries;
            }
        }
        if !f.vs_hostnames.is_empty() {
            f.vs_hostnames.sort();
            f.vs_hostnames.dedup();
            d.insert("hasVS".into(), json!({"hostnames": f.vs_hostnames}));
        }
        for (k, v) in [
            ("hasCB", f.has_cb),
            ("hasMirroring", f.has_mirroring),
            ("hasFaultInjection", f.has_fault_injection),
            ("hasRequestRouting", f.has_request_routing),
            ("hasTrafficShifting", f.has_traffic_shifting),
            ("hasRequestTimeout", f.has_request_timeout),
            ("hasRetries", f.has_retries),
        ] {
            if v {
                d.insert(k.into(), true.into());
            }
        }
        let is_gateway = n.namespace == "istio-system"
            && (n.workload == "istio-ingressgateway" || n.app == "istio-ingressgateway");
        if is_gateway {
            d.insert(
                "isGateway".into(),
                json!({"ingressInfo": {"hostnames": cx.ingress_hostnames}}),
            );
        }
        if n.node_type != NodeType::Unknown && !o.namespaces.contains(&n.namespace) {
            d.insert("isOutside".into(), true.into());
        }
        if !incoming.contains(n.id.as_str()) && outgoing.contains(n.id.as_str()) {
            d.insert("isRoot".into(), true.into());
        }
        let oom = match n.node_type {
            NodeType::Workload => cx
                .out_of_mesh
                .contains(&format!("{}/{}", n.namespace, n.workload)),
            NodeType::App if !n.workload.is_empty() => cx
                .out_of_mesh
                .contains(&format!("{}/{}", n.namespace, n.workload)),
            NodeType::App => cx
                .out_of_mesh_apps
                .contains(&format!("{}/{}", n.namespace, n.app)),
            _ => false,
        };
        if oom {
            d.insert("isOutOfMesh".into(), true.into());
        }
        nodes.push(json!({"data": d}));
    }
    let mut edges = Vec::new();
    for ((f, t, p), e) in &g.edges {
        let (fh, th) = (hash(f), hash(t));
        let mut d = Map::new();
        d.insert(
            "id".into(),
            hash(&format!("{fh}.{th}.{}", p.as_str())).into(),
        );
        d.insert("source".into(), fh.into());
        d.insert("target".into(), th.into());
        if e.mtls_total > 0.0 && e.mtls_rate > 0.0 {
            let share = e.mtls_rate / e.mtls_total * 100.0;
            d.insert("isMTLS".into(), format_share(share).into());
        }
        if let Some(sp) = &e.source_principal {
            d.insert("sourcePrincipal".into(), sp.clone().into());
        }
        if let Some(dp) = &e.dest_principal {
            d.insert("destPrincipal".into(), dp.clone().into());
        }
        if let Some(rt) = e.response_time {
            d.insert("responseTime".into(), format_ms(rt).into());
        }
        if let Some(tp) = e.throughput {
            d.insert("throughput".into(), format!("{tp:.0}").into());
        }
        let total = e.total;
        let responses: Map<String, Json> = e
            .responses
            .iter()
            .map(|(code, (flags, hosts))| {
                let share = |v: &f64| {
                    if total > 0.0 {
                        pct(v / total * 100.0)
                    } else {
                        pct(0.0)
                    }
                };
                let fl: Map<String, Json> = flags
                    .iter()
                    .map(|(k, v)| (k.clone(), share(v).into()))
                    .collect();
                let ho: Map<String, Json> = hosts
                    .iter()
                    .map(|(k, v)| (k.clone(), share(v).into()))
                    .collect();
                (code.clone(), json!({"flags": fl, "hosts": ho}))
            })
            .collect();
        let mut rates = Map::new();
        match p {
            Protocol::Tcp => {
                rates.insert("tcp".into(), rate(total).into());
            }
            Protocol::Http | Protocol::Grpc => {
                let key = p.as_str();
                rates.insert(key.into(), rate(total).into());
                let mut err = 0.0;
                for (code, (flags, _)) in &e.responses {
                    let v: f64 = flags.values().sum();
                    let class = match code.as_bytes().first() {
                        Some(b'3') => Some("3xx"),
                        Some(b'4') => Some("4xx"),
                        Some(b'5') => Some("5xx"),
                        Some(b'-') => Some("NoResponse"),
                        _ => None,
                    };
                    if let Some(c) = class {
                        let k = format!("{key}{c}");
                        let prev = rates
                            .get(&k)
                            .and_then(|x| x.as_str())
                            .and_then(|s| s.parse::<f64>().ok())
                            .unwrap_or(0.0);
                        rates.insert(k, rate(prev + v).into());
                    }
                    let is_err = if *p == Protocol::Grpc {
                        code != "0"
                    } else {
                        code.starts_with('4') || code.starts_with('5')
                    };
                    if is_err {
                        err += v;
                    }
                }
                if err > 0.0 && total > 0.0 {
                    rates.insert(format!("{key}PercentErr"), pct(err / total * 100.0).into());
                }
            }
        }
        d.insert(
            "traffic".into(),
            json!({"protocol": p.as_str(), "rates": rates, "responses": responses}),
        );
        edges.push(json!({"data": d}));
    }
    json!({
        "timestamp": o.time as i64,
        "duration": o.duration,
        "graphType": o.graph_type.as_str(),
        "elements": {"nodes": nodes, "edges": edges},
    })
}

/// A share as Kiali prints `isMTLS`: "100" when whole, else one decimal.
fn format_share(v: f64) -> String {
    if (v - v.round()).abs() < 0.05 {
        format!("{:.0}", v.round())
    } else {
        format!("{v:.1}")
    }
}

/// Milliseconds as Kiali prints response times: whole when large, two decimals when small.
fn format_ms(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The graph's context from the state.
pub fn context(snap: &crate::state::Snapshot) -> Context {
    let mut out_of_mesh = BTreeSet::new();
    let mut apps_in: BTreeSet<String> = BTreeSet::new();
    let mut apps_out: BTreeSet<String> = BTreeSet::new();
    for w in crate::inventory::workloads(snap, None) {
        let meshed = w.pods.iter().any(|p| p.proxy.is_some());
        let key = format!("{}/{}", w.namespace, w.name);
        if let Some(app) = w.app() {
            let a = format!("{}/{app}", w.namespace);
            if meshed {
                apps_in.insert(a);
            } else {
                apps_out.insert(a);
            }
        }
        if !meshed {
            out_of_mesh.insert(key);
        }
    }
    Context {
        service_flags: crate::config::service_flags(snap),
        ingress_hostnames: crate::config::ingress_hostnames(snap),
        out_of_mesh,
        out_of_mesh_apps: apps_out.difference(&apps_in).cloned().collect(),
    }
}

#[cfg(test)]
#[path = "graph_tests.rs"]
mod tests;
