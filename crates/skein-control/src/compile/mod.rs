//! The compiler: Istio resources + the registry -> one [`Snapshot`] per proxy.
//!
//! A sidecar's snapshot holds what that proxy needs to send traffic out: one virtual host per
//! Service port (VirtualService routes where one applies, else a default route), one cluster per
//! Service port and DestinationRule subset with its traffic policy, and a TCP listener per
//! opaque-TCP Service port. A gateway's snapshot holds the `gateway` route config built from
//! Ingress rules and from VirtualServices bound to a Gateway that selects it.
//!
//! The rules follow Istio's (reference: pilot's `cluster_traffic_policy.go` and
//! `route/route.go`): short host names resolve against the rule's namespace, a DestinationRule
//! is looked up in the client's namespace, then the service's, then the root namespace, a
//! subset's policy overrides the rule's field by field, a single destination without weight
//! gets 100.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use skein_api::Manifests;
use skein_api::k8s::{IngressBackend, PathType};
use skein_api::networking::{
    self as net, DestinationRule, HttpMatchRequest, HttpRoute, TrafficPolicy, VirtualService,
};
use skein_snapshot::{
    BLACKHOLE_CLUSTER, Cluster, ConnectionPool, ConsistentHash, Endpoint, Fault, GATEWAY_ROUTE,
    HashKey, HeaderMatch, HeaderMutation, HeaderOps, LbPolicy, Listener, ListenerKind, Mirror,
    Node, OutlierDetection, Protocol, QueryParamMatch, Redirect, RegexRewrite, RetryPolicy,
    Rewrite, Route, RouteAction, RouteConfig, RouteMatch, SIDECAR_OUTBOUND_ROUTE, Snapshot,
    StringMatch, UpstreamTls, VirtualHost, WeightedCluster, outbound_cluster_name, service_domains,
};

use crate::registry::{Pod, Registry};

pub use skein_snapshot::names::TLS_MODE_LABEL;

/// Istio's root namespace: mesh-wide config lives here.
pub const ROOT_NAMESPACE: &str = "istio-system";
/// The labels Istio's default ingress gateway carries (what `Gateway.selector` usually names).
pub const INGRESS_GATEWAY_LABELS: [(&str, &str); 2] =
    [("istio", "ingressgateway"), ("app", "istio-ingressgateway")];

/// `name.namespace.svc.cluster.local`.
pub fn fqdn(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}.svc.cluster.local")
}

/// Resolves a host as written in a rule in `namespace`: a short name gets the namespace and
/// the cluster suffix; anything with a dot stays as written (see [`Compiler::resolve`], which also
/// expands `name.ns` and `name.ns.svc` when they name a known service).
pub fn resolve_host(host: &str, namespace: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.contains('*') || host.contains('.') {
        return host;
    }
    fqdn(&host, namespace)
}

/// Whether `host` (possibly `*` or `*.suffix`) covers `fqdn`.
fn host_covers(host: &str, fqdn: &str) -> bool {
    if host == "*" {
        return true;
    }
    match host.strip_prefix('*') {
        Some(suffix) => fqdn.ends_with(suffix),
        None => host == fqdn,
    }
}

/// A Service port, with its protocol as Istio derives it.
#[derive(Debug, Clone)]
struct ServicePort {
    name: Option<String>,
    port: u16,
    target: Target,
    protocol: Protocol,
}

#[derive(Debug, Clone)]
enum Target {
    Number(u16),
    Name(String),
}

/// A Service, reduced to what compiling needs.
#[derive(Debug, Clone)]
struct Service {
    namespace: String,
    fqdn: String,
    selector: BTreeMap<String, String>,
    ports: Vec<ServicePort>,
}

/// Istio's protocol selection: `appProtocol`, else the port name's prefix before `-`.
fn port_protocol(name: Option<&str>, app_protocol: Option<&str>) -> Protocol {
    let word = app_protocol
        .or_else(|| name.map(|n| n.split('-').next().unwrap_or(n)))
        .unwrap_or("")
        .to_ascii_lowercase();
    match word.as_str() {
        "http" | "http1" | "http-web" => Protocol::Http1,
        "http2" | "grpc" | "grpc-web" | "h2c" | "kubernetes.io/h2c" => Protocol::Http2,
        "tcp" | "tls" | "https" | "mysql" | "mongo" | "redis" => Protocol::Tcp,
        _ => Protocol::Auto,
    }
}

fn services(manifests: &Manifests) -> Vec<Service> {
    manifests
        .services()
        .map(|s| {
            let namespace = s.metadata.namespace_or_default().to_string();
            Service {
                fqdn: fqdn(&s.metadata.name, &namespace),
                namespace,
                selector: s.spec.selector.clone().unwrap_or_default(),
                ports: s
                    .spec
                    .ports
                    .iter()
                    .filter_map(|p| {
                        let port = u16::try_from(p.port).ok()?;
                        let target = match p.target() {
                            skein_api::IntOrString::Int(n) => {
                                Target::Number(u16::try_from(n).unwrap_or(port))
                            }
                            skein_api::IntOrString::String(s) => match s.parse::<u16>() {
                                Ok(n) => Target::Number(n),
                                Err(_) => Target::Name(s),
                            },
                        };
                        Some(ServicePort {
                            name: p.name.clone(),
                            port,
                            target,
                            protocol: port_protocol(p.name.as_deref(), p.app_protocol.as_deref()),
                        })
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The resources and pods a snapshot is compiled from.
#[derive(Debug)]
pub struct Compiler<'a> {
    manifests: &'a Manifests,
    registry: &'a Registry,
    services: Vec<Service>,
}

/// Errors compiling a proxy's snapshot.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CompileError {
    /// The proxy's pod is not (or no longer) in the registry.
    #[error("no pod called {0:?} is known to the control plane")]
    UnknownNode(String),
}

/// The traffic policy fields that a subset or port may override, resolved.
#[derive(Debug, Clone, Default)]
struct Policy {
    lb: Option<net::LoadBalancerSettings>,
    pool: Option<net::ConnectionPoolSettings>,
    outlier: Option<net::OutlierDetection>,
    tls: Option<net::ClientTlsSettings>,
}

impl Policy {
    fn from_traffic_policy(tp: Option<&TrafficPolicy>, port: u16) -> Policy {
        let Some(tp) = tp else {
            return Policy::default();
        };
        // A port-level setting replaces the whole policy for that port (it does not inherit).
        if let Some(pl) = tp
            .port_level_settings
            .iter()
            .find(|p| p.port.as_ref().and_then(|s| s.number) == Some(u32::from(port)))
        {
            return Policy {
                lb: pl.load_balancer.clone(),
                pool: pl.connection_pool.clone(),
                outlier: pl.outlier_detection.clone(),
                tls: pl.tls.clone(),
            };
        }
        Policy {
            lb: tp.load_balancer.clone(),
            pool: tp.connection_pool.clone(),
            outlier: tp.outlier_detection.clone(),
            tls: tp.tls.clone(),
        }
    }

    /// `self` overridden field by field by `over`.
    fn overridden_by(self, over: Policy) -> Policy {
        Policy {
            lb: over.lb.or(self.lb),
            pool: over.pool.or(self.pool),
            outlier: over.outlier.or(self.outlier),
            tls: over.tls.or(self.tls),
        }
    }

    fn apply(&self, c: &mut Cluster) {
        // No DestinationRule TLS mode: Istio's auto mTLS (per endpoint, by its sidecar label).
        c.auto_mtls = self.tls.as_ref().and_then(|t| t.mode).is_none();
        c.lb_policy = lb_policy(self.lb.as_ref());
        c.connection_pool = connection_pool(self.pool.as_ref());
        c.outlier_detection = self.outlier.as_ref().map(outlier_detection);
        c.tls = upstream_tls(self.tls.as_ref());
        if let Some(p) = self.pool.as_ref().and_then(|p| p.http.as_ref())
            && p.h2_upgrade_policy == Some(net::H2UpgradePolicy::Upgrade)
            && c.protocol != Protocol::Tcp
        {
            c.protocol = Protocol::Http2;
        }
    }
}

fn lb_policy(lb: Option<&net::LoadBalancerSettings>) -> LbPolicy {
    let Some(lb) = lb else {
        return LbPolicy::LeastRequest;
    };
    if let Some(ch) = &lb.consistent_hash {
        let key = if let Some(h) = &ch.http_header_name {
            Some(HashKey::Header(h.to_ascii_lowercase()))
        } else if let Some(c) = &ch.http_cookie {
            Some(HashKey::Cookie {
                name: c.name.clone(),
                path: c.path.clone(),
                ttl_ms: c.ttl.as_ref().map(|t| t.get().as_millis() as u64),
            })
        } else if ch.use_source_ip == Some(true) {
            Some(HashKey::SourceIp)
        } else {
            ch.http_query_parameter_name
                .as_ref()
                .map(|q| HashKey::QueryParam(q.clone()))
        };
        if let Some(key) = key {
            let ring = ch
                .ring_hash
                .as_ref()
                .and_then(|r| r.minimum_ring_size)
                .or(ch.minimum_ring_size)
                .unwrap_or(1024);
            return LbPolicy::ConsistentHash(ConsistentHash {
                key,
                minimum_ring_size: u32::try_from(ring).unwrap_or(1024),
            });
        }
    }
    match lb.simple {
        Some(net::SimpleLb::RoundRobin) => LbPolicy::RoundRobin,
        Some(net::SimpleLb::Random) => LbPolicy::Random,
        _ => LbPolicy::LeastRequest,
    }
}

/// Istio keeps the default for a value <= 0 (pilot: "zero is a valid value if explicitly set"
/// is a FIXME there; we follow what it does).
fn positive(v: Option<i32>) -> Option<u32> {
    v.filter(|n| *n > 0).map(|n| n as u32)
}

fn connection_pool(p: Option<&net::ConnectionPoolSettings>) -> ConnectionPool {
    let mut out = ConnectionPool::default();
    let Some(p) = p else { return out };
    if let Some(tcp) = &p.tcp {
        if let Some(n) = positive(tcp.max_connections) {
            out.max_connections = n;
        }
        if let Some(t) = &tcp.connect_timeout {
            out.connect_timeout_ms = t.get().as_millis() as u64;
        }
        if let Some(t) = &tcp.idle_timeout {
            out.idle_timeout_ms = t.get().as_millis() as u64;
        }
    }
    if let Some(http) = &p.http {
        if let Some(n) = positive(http.http1_max_pending_requests) {
            out.http1_max_pending_requests = n;
        }
        if let Some(n) = positive(http.http2_max_requests) {
            out.http2_max_requests = n;
        }
        if let Some(n) = positive(http.max_requests_per_connection) {
            out.max_requests_per_connection = n;
        }
        if let Some(n) = positive(http.max_retries) {
            out.max_retries = n;
        }
        if let Some(t) = &http.idle_timeout {
            out.idle_timeout_ms = t.get().as_millis() as u64;
        }
    }
    out
}

fn outlier_detection(o: &net::OutlierDetection) -> OutlierDetection {
    let d = OutlierDetection::default();
    OutlierDetection {
        consecutive_5xx_errors: o
            .consecutive_5xx_errors
            .or(o.consecutive_errors.and_then(|n| u32::try_from(n).ok()))
            .unwrap_or(d.consecutive_5xx_errors),
        consecutive_gateway_errors: o.consecutive_gateway_errors,
        interval_ms: o
            .interval
            .as_ref()
            .map_or(d.interval_ms, |t| t.get().as_millis() as u64),
        base_ejection_time_ms: o
            .base_ejection_time
            .as_ref()
            .map_or(d.base_ejection_time_ms, |t| t.get().as_millis() as u64),
        max_ejection_percent: o
            .max_ejection_percent
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(d.max_ejection_percent),
        min_health_percent: o
            .min_health_percent
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(d.min_health_percent),
    }
}

fn upstream_tls(t: Option<&net::ClientTlsSettings>) -> UpstreamTls {
    match t.and_then(|t| t.mode.map(|m| (m, t))) {
        Some((net::ClientTlsMode::IstioMutual, _)) => UpstreamTls::IstioMutual,
        Some((net::ClientTlsMode::Simple, t)) => UpstreamTls::Simple { sni: t.sni.clone() },
        Some((net::ClientTlsMode::Mutual, t)) => UpstreamTls::Mutual {
            sni: t.sni.clone(),
            credential_name: t.credential_name.clone(),
        },
        _ => UpstreamTls::Disable,
    }
}

fn string_match(m: &net::StringMatch) -> Option<StringMatch> {
    match m.kind() {
        net::StringMatchKind::Exact(s) => Some(StringMatch::Exact(s.to_string())),
        net::StringMatchKind::Prefix(s) => Some(StringMatch::Prefix(s.to_string())),
        net::StringMatchKind::Regex(s) => Some(StringMatch::Regex(s.to_string())),
        net::StringMatchKind::Present => None,
    }
}

fn header_ops(h: Option<&net::Headers>) -> HeaderOps {
    let conv = |o: Option<&net::HeaderOperations>| {
        o.map(|o| HeaderMutation {
            set: o.set.clone(),
            add: o.add.clone(),
            remove: o.remove.clone(),
        })
        .unwrap_or_default()
    };
    match h {
        Some(h) => HeaderOps {
            request: conv(h.request.as_ref()),
            response: conv(h.response.as_ref()),
        },
        None => HeaderOps::default(),
    }
}

fn millis(d: Option<&skein_api::Duration>) -> Option<u64> {
    d.map(|d| d.get().as_millis() as u64)
}

/// Who a route is being compiled for (match conditions on the source are decided here).
#[derive(Debug, Clone, Copy)]
struct Client<'a> {
    namespace: &'a str,
    labels: &'a BTreeMap<String, String>,
    /// `mesh` for sidecars, the Gateway's `ns/name` for gateways.
    gateway: Option<&'a str>,
}

impl<'a> Compiler<'a> {
    /// A compiler over the resources and pods.
    pub fn new(manifests: &'a Manifests, registry: &'a Registry) -> Compiler<'a> {
        Compiler {
            manifests,
            registry,
            services: services(manifests),
        }
    }

    fn service(&self, fqdn: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.fqdn == fqdn)
    }

    /// [`resolve_host`], and `name.ns` or `name.ns.svc` expanded when that names a Service.
    pub fn resolve(&self, host: &str, namespace: &str) -> String {
        let h = resolve_host(host, namespace);
        if h.contains('*') || self.service(&h).is_some() {
            return h;
        }
        for suffix in [".svc.cluster.local", ".cluster.local"] {
            let long = format!("{h}{suffix}");
            if self.service(&long).is_some() {
                return long;
            }
        }
        h
    }

    /// The DestinationRule for `fqdn` as seen from `client_ns`: the client's namespace first,
    /// then the service's, then the root namespace; an exact host beats a wildcard.
    fn destination_rule(&self, fqdn: &str, client_ns: &str) -> Option<&DestinationRule> {
        let svc_ns = self.service(fqdn).map(|s| s.namespace.as_str());
        let candidates: Vec<&DestinationRule> = self
            .manifests
            .destination_rules()
            .filter(|d| d.spec.workload_selector.is_none())
            .filter(|d| {
                host_covers(
                    &self.resolve(&d.spec.host, d.metadata.namespace_or_default()),
                    fqdn,
                )
            })
            .collect();
        let in_ns = |ns: &str| {
            let mut in_ns: Vec<&&DestinationRule> = candidates
                .iter()
                .filter(|d| d.metadata.namespace_or_default() == ns)
                .collect();
            // Exact hosts before wildcards.
            in_ns.sort_by_key(|d| d.spec.host.contains('*'));
            in_ns.first().map(|d| **d)
        };
        in_ns(client_ns)
            .or_else(|| svc_ns.and_then(in_ns))
            .or_else(|| in_ns(ROOT_NAMESPACE))
    }

    /// Ready endpoints of a service port, optionally restricted to a subset's labels.
    fn endpoints(
        &self,
        svc: &Service,
        port: &ServicePort,
        subset: Option<&BTreeMap<String, String>>,
    ) -> Vec<Endpoint> {
        self.registry
            .pods
            .iter()
            .filter(|p| p.ready && p.namespace == svc.namespace && p.selected_by(&svc.selector))
            .filter(|p| subset.is_none_or(|l| p.has_labels(l)))
            .filter_map(|p| {
                let ip = p.ip()?;
                let target = match &port.target {
                    Target::Number(n) => *n,
                    Target::Name(n) => *p.port_names.get(n)?,
                };
                let mut labels = p.labels.clone();
                // Istio's marker for an endpoint with a sidecar: auto mTLS uses it.
                if p.proxy.is_some() {
                    labels.insert(TLS_MODE_LABEL.into(), "istio".into());
                }
                Some(Endpoint {
                    address: SocketAddr::new(ip, target),
                    labels,
                    weight: 1,
                })
            })
            .collect()
    }

    /// `inbound|PORT||` for each container port a Service targets: it names the service for
    /// the inbound side's metrics (`destination_service`). The proxy adds the app endpoint.
    fn inbound_clusters(&self, p: &Pod) -> Vec<Cluster> {
        let mut out: Vec<Cluster> = Vec::new();
        for svc in self
            .services
            .iter()
            .filter(|s| s.namespace == p.namespace && p.selected_by(&s.selector))
        {
            for port in &svc.ports {
                let target = match &port.target {
                    Target::Number(n) => Some(*n),
                    Target::Name(n) => p.port_names.get(n).copied(),
                };
                let Some(target) = target else { continue };
                let name = skein_snapshot::inbound_cluster_name(target);
                if out.iter().any(|c| c.name == name) {
                    continue;
                }
                out.push(Cluster {
                    name,
                    service: svc.fqdn.clone(),
                    port: target,
                    protocol: port.protocol,
                    ..Default::default()
                });
            }
        }
        out
    }

    /// The SPIFFE identities of the pods behind a service (its pods' ServiceAccounts).
    fn identities(&self, svc: &Service) -> Vec<String> {
        let ids: BTreeSet<String> = self
            .registry
            .pods
            .iter()
            .filter(|p| p.namespace == svc.namespace && p.selected_by(&svc.selector))
            .map(|p| {
                let sa = if p.service_account.is_empty() {
                    "default"
                } else {
                    &p.service_account
                };
                crate::ca::spiffe_id(&p.namespace, sa)
            })
            .collect();
        ids.into_iter().collect()
    }

    /// Every outbound cluster a proxy in `client_ns` can use: per Service port, plus one per
    /// DestinationRule subset.
    fn clusters(&self, client_ns: &str) -> Vec<Cluster> {
        let mut out = Vec::new();
        for svc in &self.services {
            let dr = self.destination_rule(&svc.fqdn, client_ns);
            for port in &svc.ports {
                let base = Policy::from_traffic_policy(
                    dr.and_then(|d| d.spec.traffic_policy.as_ref()),
                    port.port,
                );
                let identities = self.identities(svc);
                let mut c = Cluster {
                    identities: identities.clone(),
                    name: outbound_cluster_name(port.port, None, &svc.fqdn),
                    service: svc.fqdn.clone(),
                    port: port.port,
                    subset: None,
                    protocol: port.protocol,
                    endpoints: self.endpoints(svc, port, None),
                    ..Default::default()
                };
                base.apply(&mut c);
                out.push(c);
                for subset in dr.map(|d| d.spec.subsets.as_slice()).unwrap_or_default() {
                    let policy = base.clone().overridden_by(Policy::from_traffic_policy(
                        subset.traffic_policy.as_ref(),
                        port.port,
                    ));
                    let mut c = Cluster {
                        identities: identities.clone(),
                        name: outbound_cluster_name(port.port, Some(&subset.name), &svc.fqdn),
                        service: svc.fqdn.clone(),
                        port: port.port,
                        subset: Some(subset.name.clone()),
                        protocol: port.protocol,
                        endpoints: self.endpoints(svc, port, Some(&subset.labels)),
                        ..Default::default()
                    };
                    policy.apply(&mut c);
                    out.push(c);
                }
            }
        }
        out
    }

    /// The cluster a VirtualService destination names, or BlackHoleCluster when the host is
    /// not a known service.
    fn destination_cluster(
        &self,
        d: &net::Destination,
        rule_ns: &str,
        default_port: u16,
    ) -> String {
        let host = self.resolve(&d.host, rule_ns);
        let Some(svc) = self.service(&host) else {
            return BLACKHOLE_CLUSTER.to_string();
        };
        let port = d
            .port
            .as_ref()
            .and_then(|p| p.number)
            .and_then(|n| u16::try_from(n).ok())
            .or_else(|| (svc.ports.len() == 1).then(|| svc.ports[0].port))
            .unwrap_or(default_port);
        outbound_cluster_name(port, d.subset.as_deref(), &svc.fqdn)
    }

    /// Keeps the match blocks that can apply to this client on this port; `None` when none
    /// can (the route does not apply at all).
    fn route_matches(
        &self,
        blocks: &[HttpMatchRequest],
        client: Client<'_>,
        port: Option<u16>,
    ) -> Option<Vec<RouteMatch>> {
        if blocks.is_empty() {
            return Some(Vec::new());
        }
        let kept: Vec<RouteMatch> = blocks
            .iter()
            .filter(|m| match (m.port, port) {
                (Some(want), Some(p)) => want == u32::from(p),
                _ => true,
            })
            .filter(|m| {
                m.source_labels
                    .iter()
                    .all(|(k, v)| client.labels.get(k) == Some(v))
            })
            .filter(|m| {
                m.source_namespace
                    .as_deref()
                    .is_none_or(|ns| ns == client.namespace)
            })
            .filter(|m| {
                m.gateways.is_empty()
                    || m.gateways.iter().any(|g| match client.gateway {
                        None => g == "mesh",
                        Some(gw) => g == gw || gw.ends_with(&format!("/{g}")),
                    })
            })
            .map(|m| RouteMatch {
                name: m.name.clone().unwrap_or_default(),
                path: m.uri.as_ref().and_then(string_match),
                headers: m
                    .headers
                    .iter()
                    .map(|(k, v)| HeaderMatch {
                        name: k.to_ascii_lowercase(),
                        value: string_match(v),
                    })
                    .collect(),
                query_params: m
                    .query_params
                    .iter()
                    .map(|(k, v)| QueryParamMatch {
                        name: k.clone(),
                        value: string_match(v),
                    })
                    .collect(),
                method: m.method.as_ref().and_then(string_match),
                authority: m.authority.as_ref().and_then(string_match),
                without_headers: m
                    .without_headers
                    .iter()
                    .map(|(k, v)| HeaderMatch {
                        name: k.to_ascii_lowercase(),
                        value: string_match(v),
                    })
                    .collect(),
                ignore_uri_case: m.ignore_uri_case.unwrap_or(false),
            })
            .collect();
        (!kept.is_empty()).then_some(kept)
    }

    /// One VirtualService `http[]` entry as a route, or `None` when it cannot apply here.
    fn http_route(
        &self,
        r: &HttpRoute,
        rule_ns: &str,
        client: Client<'_>,
        port: Option<u16>,
        default_port: u16,
    ) -> Option<Route> {
        let matches = self.route_matches(&r.match_, client, port)?;
        let action = if let Some(d) = &r.direct_response {
            RouteAction::DirectResponse {
                status: u16::try_from(d.status).unwrap_or(500),
                body: d.body.as_ref().and_then(|b| b.string.clone()),
            }
        } else if let Some(rd) = &r.redirect {
            RouteAction::Redirect(Redirect {
                uri: rd.uri.clone(),
                authority: rd.authority.clone(),
                scheme: rd.scheme.clone(),
                port: rd.port.and_then(|p| u16::try_from(p).ok()),
                code: rd.redirect_code.and_then(|c| u16::try_from(c).ok()),
            })
        } else {
            let single = r.route.len() == 1;
            RouteAction::Route(
                r.route
                    .iter()
                    .map(|d| WeightedCluster {
                        cluster: self.destination_cluster(&d.destination, rule_ns, default_port),
                        weight: match d.weight {
                            None if single => 100,
                            w => w.and_then(|w| u32::try_from(w).ok()).unwrap_or(0),
                        },
                        headers: header_ops(d.headers.as_ref()),
                    })
                    .collect(),
            )
        };
        let mirror = r
            .mirror
            .as_ref()
            .or_else(|| r.mirrors.first().map(|m| &m.destination))
            .map(|d| Mirror {
                cluster: self.destination_cluster(d, rule_ns, default_port),
                percentage: r
                    .mirror_percentage
                    .as_ref()
                    .map(|p| p.value)
                    .or_else(|| {
                        r.mirrors
                            .first()
                            .and_then(|m| m.percentage.as_ref().map(|p| p.value))
                    })
                    .or(r.mirror_percent.map(f64::from)),
            });
        let fault = r.fault.as_ref().map(|f| Fault {
            delay_ms: f
                .delay
                .as_ref()
                .and_then(|d| millis(d.fixed_delay.as_ref())),
            delay_percentage: f.delay.as_ref().and_then(|d| {
                d.percentage
                    .as_ref()
                    .map(|p| p.value)
                    .or(d.percent.map(f64::from))
            }),
            abort_status: f
                .abort
                .as_ref()
                .and_then(|a| a.http_status)
                .and_then(|s| u16::try_from(s).ok()),
            abort_percentage: f
                .abort
                .as_ref()
                .and_then(|a| a.percentage.as_ref().map(|p| p.value)),
        });
        Some(Route {
            name: r.name.clone().unwrap_or_default(),
            matches,
            action,
            rewrite: r.rewrite.as_ref().map(|rw| Rewrite {
                uri: rw.uri.clone(),
                authority: rw.authority.clone(),
                uri_regex: rw.uri_regex_rewrite.as_ref().map(|x| RegexRewrite {
                    pattern: x.match_.clone(),
                    substitution: x.rewrite.clone(),
                }),
            }),
            headers: header_ops(r.headers.as_ref()),
            timeout_ms: millis(r.timeout.as_ref()),
            retries: r.retries.as_ref().map(|rt| RetryPolicy {
                attempts: rt.attempts.and_then(|a| u32::try_from(a).ok()).unwrap_or(0),
                per_try_timeout_ms: millis(rt.per_try_timeout.as_ref()),
                retry_on: rt
                    .retry_on
                    .as_deref()
                    .unwrap_or("")
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                retry_remote_localities: rt.retry_remote_localities.unwrap_or(false),
            }),
            mirror,
            fault,
        })
    }

    /// VirtualServices that apply to mesh traffic (no `gateways`, or `mesh` among them).
    fn mesh_virtual_services(&self) -> impl Iterator<Item = &VirtualService> {
        self.manifests
            .virtual_services()
            .filter(|v| v.spec.gateways.is_empty() || v.spec.gateways.iter().any(|g| g == "mesh"))
    }

    /// The outbound route config of a sidecar in `client`'s namespace.
    /// The mesh routes of one Service port for `client`: its VirtualServices' `http` routes,
    /// or a default route to the whole service when no VirtualService names it.
    fn service_routes(&self, svc: &Service, port: u16, client: Client<'_>) -> Vec<Route> {
        let mut routes = Vec::new();
        let mut covered = false;
        for vs in self.mesh_virtual_services() {
            let ns = vs.metadata.namespace_or_default();
            if !vs
                .spec
                .hosts
                .iter()
                .any(|h| host_covers(&self.resolve(h, ns), &svc.fqdn))
            {
                continue;
            }
            covered = true;
            routes.extend(
                vs.spec
                    .http
                    .iter()
                    .filter_map(|r| self.http_route(r, ns, client, Some(port), port)),
            );
        }
        if !covered {
            routes.push(default_route(&svc.fqdn, port));
        }
        routes
    }

    fn outbound_routes(&self, client: Client<'_>) -> RouteConfig {
        let mut vhosts = Vec::new();
        for svc in &self.services {
            for port in svc.ports.iter().filter(|p| p.protocol != Protocol::Tcp) {
                let routes = self.service_routes(svc, port.port, client);
                vhosts.push(VirtualHost {
                    name: format!("{}:{}", svc.fqdn, port.port),
                    domains: service_domains(&svc.fqdn, port.port, client.namespace),
                    routes,
                });
            }
        }
        RouteConfig {
            name: SIDECAR_OUTBOUND_ROUTE.to_string(),
            virtual_hosts: vhosts,
        }
    }

    /// The snapshot of the sidecar of pod `pod`.
    pub fn sidecar(&self, pod: &str, version: &str) -> Result<Snapshot, CompileError> {
        let p = self
            .registry
            .pod(pod)
            .ok_or_else(|| CompileError::UnknownNode(pod.to_string()))?;
        let client = Client {
            namespace: &p.namespace,
            labels: &p.labels,
            gateway: None,
        };
        let mut clusters = self.clusters(&p.namespace);
        clusters.extend(self.inbound_clusters(p));
        let outbound_ip: Option<IpAddr> = p
            .proxy
            .as_ref()
            .and_then(|x| x.outbound_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        let mut listeners = Vec::new();
        if let Some(ip) = outbound_ip {
            for svc in &self.services {
                for port in svc.ports.iter().filter(|p| p.protocol == Protocol::Tcp) {
                    let cluster = outbound_cluster_name(port.port, None, &svc.fqdn);
                    listeners.push(Listener {
                        name: cluster.clone(),
                        address: SocketAddr::new(ip, port.port),
                        kind: ListenerKind::Tcp { cluster },
                    });
                }
            }
        }
        Ok(Snapshot {
            version: version.to_string(),
            node: node(p),
            outbound_traffic_policy: self.outbound_traffic_policy(p),
            listeners,
            route_configs: vec![self.outbound_routes(client)],
            clusters,
            inbound: self.inbound_policy(p),
        })
    }

    /// The Sidecar resource's `outboundTrafficPolicy` for pod `p`: a workload's own Sidecar,
    /// else its namespace's selector-less one, else the root namespace's (Istio's order).
    fn outbound_traffic_policy(&self, p: &Pod) -> skein_snapshot::OutboundTrafficPolicy {
        let sidecars: Vec<&net::Sidecar> = self.manifests.sidecars().collect();
        let selected = |s: &&&net::Sidecar| {
            s.spec
                .workload_selector
                .as_ref()
                .is_some_and(|w| !w.labels.is_empty() && p.has_labels(&w.labels))
        };
        let in_ns = |ns: &str| {
            let here = |s: &&&net::Sidecar| s.metadata.namespace_or_default() == ns;
            sidecars
                .iter()
                .filter(here)
                .find(selected)
                .or_else(|| {
                    sidecars
                        .iter()
                        .filter(here)
                        .find(|s| s.spec.workload_selector.is_none())
                })
                .copied()
        };
        let mode = in_ns(&p.namespace)
            .or_else(|| in_ns(ROOT_NAMESPACE))
            .and_then(|s| s.spec.outbound_traffic_policy.as_ref())
            .and_then(|o| o.mode);
        match mode {
            Some(net::OutboundMode::RegistryOnly) => {
                skein_snapshot::OutboundTrafficPolicy::RegistryOnly
            }
            _ => skein_snapshot::OutboundTrafficPolicy::AllowAny,
        }
    }

    /// PeerAuthentication and AuthorizationPolicy as they apply to pod `p`.
    fn inbound_policy(&self, p: &Pod) -> skein_snapshot::InboundPolicy {
        use skein_api::security::MtlsMode as M;
        let selects = |sel: &Option<skein_api::WorkloadSelector>| {
            sel.as_ref()
                .is_some_and(|s| !s.match_labels.is_empty() && p.has_labels(&s.match_labels))
        };
        let pas: Vec<&skein_api::security::PeerAuthentication> =
            self.manifests.peer_authentications().collect();
        let first = |f: &dyn Fn(&&skein_api::security::PeerAuthentication) -> bool| {
            pas.iter().copied().find(|pa| f(pa))
        };
        let mesh = first(&|pa| {
            pa.metadata.namespace_or_default() == ROOT_NAMESPACE && !pa.spec.has_selector()
        });
        let namespace = first(&|pa| {
            pa.metadata.namespace_or_default() == p.namespace && !pa.spec.has_selector()
        });
        let workload = (p.namespace != ROOT_NAMESPACE)
            .then(|| {
                first(&|pa| {
                    pa.metadata.namespace_or_default() == p.namespace && selects(&pa.spec.selector)
                })
            })
            .flatten();
        let mode_of = |pa: Option<&skein_api::security::PeerAuthentication>| {
            pa.and_then(|pa| pa.spec.mtls.as_ref())
                .and_then(|m| m.mode)
                .filter(|m| *m != M::Unset)
        };
        let conv = |m: M| match m {
            M::Strict => skein_snapshot::MtlsMode::Strict,
            M::Disable => skein_snapshot::MtlsMode::Disable,
            M::Permissive | M::Unset => skein_snapshot::MtlsMode::Permissive,
        };
        // UNSET inherits from the level above; nothing at all is PERMISSIVE.
        let mtls = mode_of(workload)
            .or_else(|| mode_of(namespace))
            .or_else(|| mode_of(mesh))
            .map_or(skein_snapshot::MtlsMode::Permissive, conv);
        let port_mtls = workload
            .map(|pa| {
                pa.spec
                    .port_level()
                    .map(|(port, m)| {
                        let mode = m.mode.filter(|m| *m != M::Unset).map_or(mtls, conv);
                        (port, mode)
                    })
                    .collect()
            })
            .unwrap_or_default();

        let authz = self
            .manifests
            .authorization_policies()
            .filter(|ap| {
                let ns = ap.metadata.namespace_or_default();
                let applies = (ns == ROOT_NAMESPACE && ap.spec.selector.is_none())
                    || (ns == p.namespace
                        && (ap.spec.selector.is_none() || selects(&ap.spec.selector)));
                applies && ap.spec.target_ref.is_none() && ap.spec.target_refs.is_empty()
            })
            .filter_map(|ap| {
                use skein_api::security::Action as A;
                let action = match ap.spec.action() {
                    A::Allow => skein_snapshot::AuthzAction::Allow,
                    A::Deny => skein_snapshot::AuthzAction::Deny,
                    A::Audit => skein_snapshot::AuthzAction::Audit,
                    // Reported once per accepted config (see `unsupported`).
                    A::Custom => return None,
                };
                Some(skein_snapshot::AuthzPolicy {
                    name: ap.metadata.name.clone(),
                    namespace: ap.metadata.namespace_or_default().to_string(),
                    action,
                    rules: ap.spec.rules().iter().map(authz_rule).collect(),
                })
            })
            .collect();
        skein_snapshot::InboundPolicy {
            mtls,
            port_mtls,
            authz,
        }
    }

    /// Gateways (as `ns/name`) whose selector picks the gateway pod `p`.
    fn gateways_for(&self, p: &Pod) -> BTreeSet<String> {
        self.manifests
            .gateways()
            .filter(|g| !g.spec.selector.is_empty() && p.has_labels(&g.spec.selector))
            .map(|g| format!("{}/{}", g.metadata.namespace_or_default(), g.metadata.name))
            .collect()
    }

    /// The snapshot of the ingress gateway pod `pod`: Ingress rules and Gateway-bound
    /// VirtualServices in the `gateway` route config.
    pub fn gateway(&self, pod: &str, version: &str) -> Result<Snapshot, CompileError> {
        let p = self
            .registry
            .pod(pod)
            .ok_or_else(|| CompileError::UnknownNode(pod.to_string()))?;
        let mut by_host: BTreeMap<String, Vec<Route>> = BTreeMap::new();

        // Gateway + VirtualService.
        let gateways = self.gateways_for(p);
        for vs in self.manifests.virtual_services() {
            let ns = vs.metadata.namespace_or_default();
            let bound: Vec<String> = vs
                .spec
                .gateways
                .iter()
                .map(|g| {
                    if g.contains('/') {
                        g.clone()
                    } else {
                        format!("{ns}/{g}")
                    }
                })
                .filter(|g| gateways.contains(g))
                .collect();
            let Some(gw) = bound.first() else { continue };
            let client = Client {
                namespace: &p.namespace,
                labels: &p.labels,
                gateway: Some(gw),
            };
            let routes: Vec<Route> = vs
                .spec
                .http
                .iter()
                .filter_map(|r| self.http_route(r, ns, client, None, 80))
                .collect();
            for h in &vs.spec.hosts {
                by_host
                    .entry(h.to_ascii_lowercase())
                    .or_default()
                    .extend(routes.iter().cloned());
            }
        }

        // Ingress: longest path first; Exact before Prefix at the same length. The gateway is a
        // mesh client of the backend, so the backend's VirtualService (header routes, weights,
        // retries, mirroring) applies behind each Ingress path, as it would behind an ingress
        // controller with a sidecar.
        let mesh_client = Client {
            namespace: &p.namespace,
            labels: &p.labels,
            gateway: None,
        };
        let mut ingress: BTreeMap<String, Vec<(usize, bool, Route)>> = BTreeMap::new();
        for ing in self.manifests.ingresses() {
            let ns = ing.metadata.namespace_or_default();
            for rule in &ing.spec.rules {
                let host = rule.host.clone().unwrap_or_else(|| "*".to_string());
                for path in rule.http.iter().flat_map(|h| h.paths.iter()) {
                    let p = path.path.clone().unwrap_or_else(|| "/".to_string());
                    let exact = path.path_type == PathType::Exact;
                    let Some((svc, port)) = self.ingress_backend(&path.backend, ns) else {
                        continue;
                    };
                    let backend = self.service_routes(svc, port, mesh_client);
                    for route in ingress_routes(&ing.metadata.name, &p, exact, backend) {
                        ingress
                            .entry(host.clone())
                            .or_default()
                            .push((p.len(), exact, route));
                    }
                }
            }
            if let Some(b) = &ing.spec.default_backend
                && let Some((svc, port)) = self.ingress_backend(b, ns)
            {
                let backend = self.service_routes(svc, port, mesh_client);
                for route in ingress_routes(&ing.metadata.name, "/", false, backend) {
                    ingress
                        .entry("*".to_string())
                        .or_default()
                        .push((0, false, route));
                }
            }
        }
        for (host, mut routes) in ingress {
            // Stable: the routes of one path keep their VirtualService order.
            routes.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
            by_host
                .entry(host)
                .or_default()
                .extend(routes.into_iter().map(|(_, _, r)| r));
        }

        // `*` last, so that named hosts win.
        let mut vhosts: Vec<VirtualHost> = by_host
            .into_iter()
            .map(|(host, routes)| VirtualHost {
                name: format!("{host}:80"),
                // The proxy matches the authority exactly, then without its port.
                domains: vec![host.clone()],
                routes,
            })
            .collect();
        vhosts.sort_by_key(|v| v.domains.iter().any(|d| d == "*"));
        Ok(Snapshot {
            version: version.to_string(),
            node: node(p),
            route_configs: vec![RouteConfig {
                name: GATEWAY_ROUTE.to_string(),
                virtual_hosts: vhosts,
            }],
            clusters: self.clusters(&p.namespace),
            ..Default::default()
        })
    }

    fn ingress_backend(&self, b: &IngressBackend, ns: &str) -> Option<(&Service, u16)> {
        let s = b.service.as_ref()?;
        let svc = self.service(&fqdn(&s.name, ns))?;
        let port = match (&s.port.number, &s.port.name) {
            (Some(n), _) => u16::try_from(*n).ok()?,
            (None, Some(name)) => {
                svc.ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(name))?
                    .port
            }
            (None, None) => svc.ports.first()?.port,
        };
        Some((svc, port))
    }

    /// The snapshot for proxy `node`, whichever kind it is.
    pub fn snapshot(&self, node: &str, version: &str) -> Result<Snapshot, CompileError> {
        let p = self
            .registry
            .pod(node)
            .ok_or_else(|| CompileError::UnknownNode(node.to_string()))?;
        match p.proxy.as_ref().map(|x| x.mode.as_str()) {
            Some("gateway") => self.gateway(node, version),
            _ => self.sidecar(node, version),
        }
    }
}

/// What the manifests ask for that skein accepts but does not do, one line each.
pub fn unsupported(m: &Manifests) -> Vec<String> {
    m.authorization_policies()
        .filter(|ap| ap.spec.action() == skein_api::security::Action::Custom)
        .map(|ap| {
            format!(
                "AuthorizationPolicy {}/{}: action CUSTOM (an external authorizer) is not supported; the policy is ignored",
                ap.metadata.namespace_or_default(),
                ap.metadata.name
            )
        })
        .collect()
}

fn authz_rule(r: &skein_api::security::Rule) -> skein_snapshot::AuthzRule {
    let list = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
    // `serviceAccounts: [ns/sa]` is the principal `cluster.local/ns/NS/sa/SA`.
    let sa = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter()
            .flatten()
            .filter_map(|s| s.split_once('/'))
            .map(|(ns, sa)| format!("{}/ns/{ns}/sa/{sa}", crate::ca::TRUST_DOMAIN))
            .collect()
    };
    skein_snapshot::AuthzRule {
        from: r
            .from
            .iter()
            .flatten()
            .filter_map(|f| f.source.as_ref())
            .map(|s| {
                let mut principals = list(&s.principals);
                principals.extend(sa(&s.service_accounts));
                if principals.is_empty() {
                    principals.extend(s.trust_domains.iter().flatten().map(|td| format!("{td}/*")));
                }
                let mut not_principals = list(&s.not_principals);
                not_principals.extend(sa(&s.not_service_accounts));
                not_principals.extend(
                    s.not_trust_domains
                        .iter()
                        .flatten()
                        .map(|td| format!("{td}/*")),
                );
                skein_snapshot::AuthzSource {
                    principals,
                    not_principals,
                    request_principals: list(&s.request_principals),
                    not_request_principals: list(&s.not_request_principals),
                    namespaces: list(&s.namespaces),
                    not_namespaces: list(&s.not_namespaces),
                    ip_blocks: list(&s.ip_blocks),
                    not_ip_blocks: list(&s.not_ip_blocks),
                    remote_ip_blocks: list(&s.remote_ip_blocks),
                    not_remote_ip_blocks: list(&s.not_remote_ip_blocks),
                }
            })
            .collect(),
        to: r
            .to
            .iter()
            .flatten()
            .filter_map(|t| t.operation.as_ref())
            .map(|o| skein_snapshot::AuthzOperation {
                hosts: list(&o.hosts),
                not_hosts: list(&o.not_hosts),
                ports: list(&o.ports),
                not_ports: list(&o.not_ports),
                methods: list(&o.methods),
                not_methods: list(&o.not_methods),
                paths: list(&o.paths),
                not_paths: list(&o.not_paths),
            })
            .collect(),
        when: r
            .when
            .iter()
            .map(|c| skein_snapshot::AuthzCondition {
                key: c.key.clone(),
                values: c.values.clone(),
                not_values: c.not_values.clone(),
            })
            .collect(),
    }
}

fn node(p: &Pod) -> Node {
    Node {
        pod: p.name.clone(),
        namespace: p.namespace.clone(),
        workload: p.workload.clone(),
        labels: p.labels.clone(),
        service_account: if p.service_account.is_empty() {
            "default".to_string()
        } else {
            p.service_account.clone()
        },
        ip: p.ip(),
    }
}

fn default_route(fqdn: &str, port: u16) -> Route {
    Route {
        name: "default".to_string(),
        action: RouteAction::Route(vec![WeightedCluster {
            cluster: outbound_cluster_name(port, None, fqdn),
            weight: 100,
            headers: HeaderOps::default(),
        }]),
        ..Default::default()
    }
}

/// The routes of one Ingress path: each of the backend's mesh routes, restricted to the path.
/// Kubernetes' Prefix matches whole path segments: `/api` matches `/api` and `/api/x`, not
/// `/apix`; two match blocks (ORed) say exactly that. A backend route with its own `uri`
/// match keeps it (it is the more specific of the two).
fn ingress_routes(ingress: &str, path: &str, exact: bool, backend: Vec<Route>) -> Vec<Route> {
    let trimmed = path.trim_end_matches('/');
    let blocks: Vec<StringMatch> = if exact {
        vec![StringMatch::Exact(path.to_string())]
    } else if trimmed.is_empty() {
        Vec::new()
    } else {
        vec![
            StringMatch::Exact(trimmed.to_string()),
            StringMatch::Prefix(format!("{trimmed}/")),
        ]
    };
    backend
        .into_iter()
        .map(|mut r| {
            if r.name.is_empty() || r.name == "default" {
                r.name = format!("{ingress}:{path}");
            }
            if !blocks.is_empty() {
                let own = if r.matches.is_empty() {
                    vec![RouteMatch::default()]
                } else {
                    std::mem::take(&mut r.matches)
                };
                r.matches = own
                    .into_iter()
                    .flat_map(|m| {
                        if m.path.is_some() {
                            return vec![m];
                        }
                        blocks
                            .iter()
                            .map(|b| RouteMatch {
                                path: Some(b.clone()),
                                ..m.clone()
                            })
                            .collect()
                    })
                    .collect();
            }
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ProxyInfo;

    fn example() -> Manifests {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/blog-system");
        skein_api::load_path(&dir).expect("the example loads")
    }

    fn pod(name: &str, labels: &[(&str, &str)], ip: &str, port: (&str, u16), mode: &str) -> Pod {
        Pod {
            name: name.into(),
            namespace: "blog-system".into(),
            workload: name.rsplit_once('-').map_or(name, |x| x.0).into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            service_account: "default".into(),
            ip: ip.into(),
            port_names: [(port.0.to_string(), port.1)].into(),
            ready: true,
            proxy: (!mode.is_empty()).then(|| ProxyInfo {
                mode: mode.into(),
                outbound_ip: Some(ip.replace(".1.", ".4.")),
            }),
        }
    }

    fn registry() -> Registry {
        Registry {
            pods: vec![
                pod(
                    "web-stable-1",
                    &[("app", "web"), ("version", "stable")],
                    "127.9.1.1",
                    ("http", 80),
                    "sidecar",
                ),
                pod(
                    "web-canary-1",
                    &[("app", "web"), ("version", "canary")],
                    "127.9.1.2",
                    ("http", 80),
                    "sidecar",
                ),
                pod(
                    "was-1",
                    &[("app", "was"), ("version", "v1")],
                    "127.9.1.3",
                    ("http", 8080),
                    "sidecar",
                ),
                pod(
                    "was-2",
                    &[("app", "was"), ("version", "v1")],
                    "127.9.1.4",
                    ("http", 8080),
                    "sidecar",
                ),
                pod(
                    "mysql-1",
                    &[("app", "mysql")],
                    "127.9.1.5",
                    ("mysql", 3306),
                    "",
                ),
                Pod {
                    namespace: "istio-system".into(),
                    ..pod(
                        "istio-ingressgateway-1",
                        &[("istio", "ingressgateway"), ("app", "istio-ingressgateway")],
                        "127.0.0.1",
                        ("http", 8080),
                        "gateway",
                    )
                },
            ],
        }
    }

    #[test]
    fn web_sidecar_gets_the_seed_policies_routes_and_endpoints() {
        let (m, r) = (example(), registry());
        let compiler = Compiler::new(&m, &r);
        let snap = compiler.snapshot("web-stable-1", "3").unwrap();
        assert_eq!(snap.version, "3");
        assert_eq!(snap.node.workload, "web-stable");
        snap.validate().unwrap();
        assert!(
            snap.dangling_references().is_empty(),
            "{:?}",
            snap.dangling_references()
        );

        let was = snap
            .cluster("outbound|8080||was-service.blog-system.svc.cluster.local")
            .unwrap();
        assert_eq!(was.lb_policy, LbPolicy::RoundRobin);
        assert_eq!(was.connection_pool.http1_max_pending_requests, 100);
        assert_eq!(was.connection_pool.http2_max_requests, 100);
        assert_eq!(was.connection_pool.max_requests_per_connection, 10);
        assert_eq!(was.tls, UpstreamTls::IstioMutual);
        assert_eq!(was.protocol, Protocol::Http1);
        let addrs: Vec<String> = was
            .endpoints
            .iter()
            .map(|e| e.address.to_string())
            .collect();
        assert_eq!(addrs, ["127.9.1.3:8080", "127.9.1.4:8080"]);

        let canary = snap
            .cluster("outbound|80|canary|web-service.blog-system.svc.cluster.local")
            .unwrap();
        assert_eq!(canary.endpoints.len(), 1);
        assert_eq!(canary.endpoints[0].address.to_string(), "127.9.1.2:80");
        assert_eq!(canary.connection_pool.max_connections, 100);
        let od = canary.outlier_detection.as_ref().unwrap();
        assert_eq!(
            (
                od.consecutive_5xx_errors,
                od.interval_ms,
                od.base_ejection_time_ms
            ),
            (5, 10_000, 30_000)
        );
        assert_eq!((od.max_ejection_percent, od.min_health_percent), (50, 30));

        // web-vsvc: the header route first, then primary with its weights, retries, mirror.
        let rc = snap.route_config(SIDECAR_OUTBOUND_ROUTE).unwrap();
        let web = rc
            .virtual_hosts
            .iter()
            .find(|v| v.name == "web-service.blog-system.svc.cluster.local:80")
            .unwrap();
        assert!(web.domains.iter().any(|d| d == "web-service"));
        assert_eq!(web.routes[0].name, "canary-testing");
        assert_eq!(
            web.routes[0].matches[0].headers[0].value,
            Some(StringMatch::Exact("true".into()))
        );
        assert_eq!(web.routes[0].timeout_ms, Some(15_000));
        let primary = &web.routes[1];
        assert_eq!(primary.name, "primary");
        let RouteAction::Route(dests) = &primary.action else {
            panic!("route")
        };
        assert_eq!(dests.iter().map(|d| d.weight).collect::<Vec<_>>(), [100, 0]);
        assert_eq!(primary.retries.as_ref().unwrap().attempts, 3);
        assert_eq!(
            primary.retries.as_ref().unwrap().retry_on,
            ["5xx", "reset", "connect-failure", "refused-stream"]
        );
        assert_eq!(
            primary.mirror.as_ref().unwrap().cluster,
            "outbound|80|canary|web-service.blog-system.svc.cluster.local"
        );
        assert_eq!(primary.mirror.as_ref().unwrap().percentage, Some(100.0));

        // mysql: opaque TCP through a listener on the pod's outbound address, no TLS.
        let l = &snap.listeners[0];
        assert_eq!(l.address.to_string(), "127.9.4.1:3306");
        assert_eq!(
            l.kind,
            ListenerKind::Tcp {
                cluster: "outbound|3306||mysql.blog-system.svc.cluster.local".into()
            }
        );
        let mysql = snap
            .cluster("outbound|3306||mysql.blog-system.svc.cluster.local")
            .unwrap();
        assert_eq!(mysql.protocol, Protocol::Tcp);
        assert_eq!(mysql.tls, UpstreamTls::Disable);
        assert_eq!(
            mysql
                .outlier_detection
                .as_ref()
                .unwrap()
                .consecutive_5xx_errors,
            3
        );
        assert_eq!(mysql.endpoints[0].address.to_string(), "127.9.1.5:3306");
        // No HTTP virtual host for a TCP port.
        assert!(
            !rc.virtual_hosts
                .iter()
                .any(|v| v.name.starts_with("mysql."))
        );
    }

    #[test]
    fn unready_pods_are_not_endpoints_and_unknown_nodes_are_errors() {
        let m = example();
        let mut r = registry();
        r.pods[2].ready = false;
        let compiler = Compiler::new(&m, &r);
        let snap = compiler.snapshot("web-stable-1", "1").unwrap();
        let was = snap
            .cluster("outbound|8080||was-service.blog-system.svc.cluster.local")
            .unwrap();
        assert_eq!(was.endpoints.len(), 1);
        assert_eq!(
            compiler.snapshot("nope", "1").unwrap_err(),
            CompileError::UnknownNode("nope".into())
        );
    }

    #[test]
    fn gateway_serves_the_ingress_with_segment_prefixes() {
        let (m, r) = (example(), registry());
        let snap = Compiler::new(&m, &r)
            .snapshot("istio-ingressgateway-1", "1")
            .unwrap();
        assert!(snap.listeners.is_empty());
        let rc = snap.route_config(GATEWAY_ROUTE).unwrap();
        assert_eq!(rc.virtual_hosts.len(), 1);
        let vh = &rc.virtual_hosts[0];
        assert_eq!(vh.domains, ["*"]);
        // Each Ingress path carries web-vsvc's routes: the header route, then primary.
        let names: Vec<&str> = vh.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "canary-testing",
                "primary",
                "canary-testing",
                "primary",
                "canary-testing",
                "primary"
            ]
        );
        assert_eq!(
            vh.routes[3].matches,
            [
                RouteMatch {
                    path: Some(StringMatch::Exact("/api".into())),
                    ..Default::default()
                },
                RouteMatch {
                    path: Some(StringMatch::Prefix("/api/".into())),
                    ..Default::default()
                },
            ]
        );
        // The header condition is kept and ANDed with the path.
        assert_eq!(vh.routes[2].matches.len(), 2);
        assert_eq!(vh.routes[2].matches[0].headers[0].name, "x-canary-test");
        assert_eq!(
            vh.routes[2].matches[1].path,
            Some(StringMatch::Prefix("/api/".into()))
        );
        assert!(vh.routes[5].matches.is_empty(), "`/` matches everything");
        assert_eq!(vh.routes[4].matches.len(), 1);
        let RouteAction::Route(d) = &vh.routes[4].action else {
            panic!()
        };
        assert_eq!(
            d[0].cluster,
            "outbound|80|canary|web-service.blog-system.svc.cluster.local"
        );
        assert!(snap.dangling_references().is_empty());
    }

    #[test]
    fn gateway_and_virtual_service_bind_and_match_conditions_on_the_source_are_decided() {
        let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: a, namespace: ns}
spec:
  selector: {app: a}
  ports: [{name: http, port: 8000}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: ns}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["a.example.com"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a, namespace: ns}
spec:
  hosts: ["a.example.com", a]
  gateways: [gw, mesh]
  http:
  - name: from-b
    match: [{sourceLabels: {app: b}}]
    route: [{destination: {host: a}}]
  - name: from-gateway
    match: [{gateways: [gw], uri: {prefix: /x}}]
    rewrite: {uri: /y}
    route: [{destination: {host: a, port: {number: 8000}}}]
  - name: rest
    route: [{destination: {host: nowhere}}]
"#;
        let m = skein_api::load_str("t.yaml", yaml).unwrap();
        let mut r = registry();
        r.pods.push(Pod {
            namespace: "ns".into(),
            ..pod(
                "a-1",
                &[("app", "a")],
                "127.9.1.9",
                ("http", 8000),
                "sidecar",
            )
        });
        let compiler = Compiler::new(&m, &r);
        let gw = compiler.snapshot("istio-ingressgateway-1", "1").unwrap();
        let vh = &gw.route_config(GATEWAY_ROUTE).unwrap().virtual_hosts;
        let a = vh.iter().find(|v| v.domains == ["a.example.com"]).unwrap();
        let names: Vec<&str> = a.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["from-gateway", "rest"],
            "sourceLabels app=b cannot match the gateway"
        );
        assert_eq!(
            a.routes[0].rewrite.as_ref().unwrap().uri.as_deref(),
            Some("/y")
        );
        let RouteAction::Route(d) = &a.routes[1].action else {
            panic!()
        };
        assert_eq!(
            d[0].cluster, BLACKHOLE_CLUSTER,
            "an unknown host is a black hole"
        );

        // A sidecar of app=a sees neither the source-labelled nor the gateway-only route.
        let side = compiler.snapshot("a-1", "1").unwrap();
        let vh = side
            .route_config(SIDECAR_OUTBOUND_ROUTE)
            .unwrap()
            .virtual_hosts
            .iter()
            .find(|v| v.name == "a.ns.svc.cluster.local:8000")
            .unwrap()
            .clone();
        let names: Vec<&str> = vh.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["rest"]);
    }

    #[test]
    fn a_sidecar_resource_sets_registry_only() {
        let mut m = example();
        let extra = skein_api::load_str(
            "s.yaml",
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: istio-system}\nspec:\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: web, namespace: blog-system}\nspec:\n  workloadSelector: {labels: {app: web}}\n  outboundTrafficPolicy: {mode: ALLOW_ANY}\n",
        )
        .unwrap();
        m.extend(extra);
        let r = registry();
        let compiler = Compiler::new(&m, &r);
        let was = compiler.snapshot("was-1", "1").unwrap();
        assert_eq!(
            was.outbound_traffic_policy,
            skein_snapshot::OutboundTrafficPolicy::RegistryOnly
        );
        let web = compiler.snapshot("web-stable-1", "1").unwrap();
        assert_eq!(
            web.outbound_traffic_policy,
            skein_snapshot::OutboundTrafficPolicy::AllowAny
        );
    }

    #[test]
    fn peer_authentication_precedence_and_authorization_policies_per_workload() {
        let (m, r) = (example(), registry());
        let compiler = Compiler::new(&m, &r);
        let was = compiler.snapshot("was-1", "1").unwrap().inbound;
        assert_eq!(was.mtls, skein_snapshot::MtlsMode::Permissive);
        assert_eq!(was.authz.len(), 1);
        let p = &was.authz[0];
        assert_eq!(
            (p.name.as_str(), p.action),
            ("was-authz", skein_snapshot::AuthzAction::Allow)
        );
        assert_eq!(
            p.rules[0].from[0].principals,
            ["cluster.local/ns/blog-system/sa/default"]
        );
        assert_eq!(p.rules[0].from[0].namespaces, ["blog-system"]);
        assert_eq!(p.rules[0].to[0].paths, ["/api/*", "/actuator/*"]);
        let web = compiler.snapshot("web-stable-1", "1").unwrap().inbound;
        assert_eq!(web.authz[0].name, "web-authz");
        // web's pods have sidecars: endpoints carry Istio's tlsMode label; identities are known.
        let snap = compiler.snapshot("web-stable-1", "1").unwrap();
        let inbound = snap.cluster("inbound|80||").expect("web's inbound cluster");
        assert_eq!(inbound.service, "web-service.blog-system.svc.cluster.local");
        let was_c = snap
            .cluster("outbound|8080||was-service.blog-system.svc.cluster.local")
            .unwrap();
        assert_eq!(
            was_c.endpoints[0]
                .labels
                .get(TLS_MODE_LABEL)
                .map(String::as_str),
            Some("istio")
        );
        assert_eq!(
            was_c.identities,
            ["spiffe://cluster.local/ns/blog-system/sa/default"]
        );
        assert!(!was_c.auto_mtls, "was-dest-rule sets ISTIO_MUTUAL");
        let mysql = snap
            .cluster("outbound|3306||mysql.blog-system.svc.cluster.local")
            .unwrap();
        assert!(
            !mysql.endpoints[0].labels.contains_key(TLS_MODE_LABEL),
            "mysql has no sidecar"
        );

        let yaml = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns, namespace: blog-system}
spec: {mtls: {mode: UNSET}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: was, namespace: blog-system}
spec:
  selector: {matchLabels: {app: was}}
  portLevelMtls:
    "8080": {mode: PERMISSIVE}
    "9090": {mode: UNSET}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: blog-system}
spec:
  action: CUSTOM
  provider: {name: opa}
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: istio-system}
spec:
  action: DENY
  rules:
  - from: [{source: {serviceAccounts: [other/bot], notNamespaces: [blog-system]}}]
"#;
        let extra = skein_api::load_str("pa.yaml", yaml).unwrap();
        let mut m = Manifests::default();
        m.extend(extra);
        let compiler = Compiler::new(&m, &r);
        let was = compiler.snapshot("was-1", "1").unwrap().inbound;
        assert_eq!(
            was.mtls,
            skein_snapshot::MtlsMode::Strict,
            "UNSET inherits the mesh's STRICT"
        );
        assert_eq!(was.mtls_for(8080), skein_snapshot::MtlsMode::Permissive);
        assert_eq!(was.mtls_for(9090), skein_snapshot::MtlsMode::Strict);
        let names: Vec<&str> = was.authz.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["deny-all"],
            "CUSTOM is skipped; the root namespace's applies"
        );
        assert_eq!(
            was.authz[0].rules[0].from[0].principals,
            ["cluster.local/ns/other/sa/bot"]
        );
        assert_eq!(
            was.authz[0].rules[0].from[0].not_namespaces,
            ["blog-system"]
        );
        let web = compiler.snapshot("web-stable-1", "1").unwrap().inbound;
        assert_eq!(web.mtls, skein_snapshot::MtlsMode::Strict);
        assert!(web.port_mtls.is_empty());
    }

    #[test]
    fn host_resolution_follows_istio() {
        let (m, r) = (example(), registry());
        let compiler = Compiler::new(&m, &r);
        let was = "was-service.blog-system.svc.cluster.local";
        assert_eq!(resolve_host("was-service", "blog-system"), was);
        assert_eq!(compiler.resolve("was-service.blog-system", "x"), was);
        assert_eq!(compiler.resolve("was-service.blog-system.svc", "x"), was);
        assert_eq!(compiler.resolve("example.com.", "x"), "example.com");
        assert_eq!(compiler.resolve("Was-Service", "blog-system"), was);
        assert!(host_covers("*.svc.cluster.local", "a.b.svc.cluster.local"));
        assert_eq!(port_protocol(Some("tcp-mysql"), None), Protocol::Tcp);
        assert_eq!(port_protocol(Some("http"), None), Protocol::Http1);
        assert_eq!(port_protocol(Some("web"), Some("http2")), Protocol::Http2);
        assert_eq!(port_protocol(None, None), Protocol::Auto);
    }
}
