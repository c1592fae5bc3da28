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
//!
//! This module holds the [`Compiler`] and its entry points ([`Compiler::sidecar`],
//! [`Compiler::gateway`], [`Compiler::snapshot`]), and the Sidecar resource's outbound
//! policy. The parts: `hosts` (rule hosts, by `skein_snapshot::names`), `services`, `clusters`
//! (DestinationRule lookup and merge, subsets, portLevelSettings, endpoints), `routes`
//! (VirtualService), `inbound` (PeerAuthentication, AuthorizationPolicy), `gateway` (Gateway,
//! Ingress).

mod clusters;
#[cfg(test)]
pub(crate) mod fixtures;
mod gateway;
mod gateway_api;
mod hosts;
mod inbound;
mod routes;
mod services;
mod telemetry;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use skein_api::Manifests;
use skein_api::networking as net;
use skein_snapshot::{
    Cluster, Listener, ListenerKind, Node, Protocol, RouteConfig, Snapshot, outbound_cluster_name,
};

use crate::registry::{Pod, Registry};
use routes::Client;
use services::{Service, services};

pub use inbound::unsupported;

/// Istio's root namespace: mesh-wide config lives here.
const ROOT_NAMESPACE: &str = "istio-system";

/// The resources and pods a snapshot is compiled from.
#[derive(Debug)]
pub struct Compiler<'a> {
    manifests: &'a Manifests,
    registry: &'a Registry,
    index: IndexRef<'a>,
}

/// What every compile of one generation (resources + pods) shares: the Services with the pods
/// each selects, found by host name. Built once per generation rather than once per proxy.
#[derive(Debug)]
pub struct Index {
    services: Vec<Service>,
    by_fqdn: HashMap<String, usize>,
    /// The registry's pods by name (the first of a name, as [`Registry::pod`] finds it).
    pods: HashMap<String, usize>,
    /// Whether some VirtualService route matches on `sourceLabels`: then a sidecar's routes
    /// depend on its pod's labels, not on its namespace alone.
    routes_by_labels: bool,
    /// The mesh config (Istio's defaults when there is none; a bad one is refused by
    /// validation before it gets here).
    mesh: skein_api::mesh::MeshConfig,
}

impl Index {
    /// The index of `manifests` and `registry`.
    pub fn new(manifests: &Manifests, registry: &Registry) -> Index {
        let services = services(manifests, registry);
        let mut by_fqdn = HashMap::with_capacity(services.len());
        for (i, s) in services.iter().enumerate() {
            // The first Service of a name wins, as a linear search found it.
            by_fqdn.entry(s.fqdn.clone()).or_insert(i);
        }
        let routes_by_labels = manifests.virtual_services().any(|v| {
            v.spec
                .http
                .iter()
                .any(|r| r.match_.iter().any(|m| !m.source_labels.is_empty()))
        });
        let mut pods = HashMap::with_capacity(registry.pods.len());
        for (i, p) in registry.pods.iter().enumerate() {
            pods.entry(p.name.clone()).or_insert(i);
        }
        let mesh = skein_api::mesh::mesh_config(manifests)
            .ok()
            .flatten()
            .unwrap_or_default();
        Index {
            services,
            by_fqdn,
            pods,
            routes_by_labels,
            mesh,
        }
    }

    /// Whether sidecars' outbound routes depend only on their namespace (no VirtualService
    /// matches on `sourceLabels`), so that one route config serves a whole namespace.
    pub fn routes_by_namespace(&self) -> bool {
        !self.routes_by_labels
    }

    /// The pod called `name` in `registry` (the one this index was built over).
    pub fn pod<'r>(&self, registry: &'r Registry, name: &str) -> Option<&'r Pod> {
        self.pods.get(name).and_then(|&i| registry.pods.get(i))
    }

    /// The position of the Service `fqdn` in index order.
    pub fn position(&self, fqdn: &str) -> Option<usize> {
        self.by_fqdn.get(fqdn).copied()
    }

    /// How many Services there are (cluster sets are kept per Service, in this order).
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// The Services whose clusters may differ between `prev` (over `prev_registry`) and this
    /// index (over `registry`), for the same resources: those whose selected pods changed.
    /// None when the Services themselves differ (then anything may have changed).
    pub fn changed_services(
        &self,
        registry: &Registry,
        prev: &Index,
        prev_registry: &Registry,
    ) -> Option<Vec<usize>> {
        if self.services.len() != prev.services.len() {
            return None;
        }
        let mut changed = Vec::new();
        for (i, (a, b)) in self.services.iter().zip(&prev.services).enumerate() {
            if a.fqdn != b.fqdn {
                return None;
            }
            let now = a.pods.iter().map(|&p| registry.pods.get(p));
            let before = b.pods.iter().map(|&p| prev_registry.pods.get(p));
            if a.pods.len() != b.pods.len() || !now.eq(before) {
                changed.push(i);
            }
        }
        Some(changed)
    }
}

/// A compiler's index: its own (built by [`Compiler::new`]) or a generation's.
#[derive(Debug)]
enum IndexRef<'a> {
    Own(Box<Index>),
    Shared(&'a Index),
}

impl std::ops::Deref for IndexRef<'_> {
    type Target = Index;
    fn deref(&self) -> &Index {
        match self {
            IndexRef::Own(i) => i,
            IndexRef::Shared(i) => i,
        }
    }
}

/// Errors compiling a proxy's snapshot.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CompileError {
    /// The proxy's pod is not (or no longer) in the registry.
    #[error("no pod called {0:?} is known to the control plane")]
    UnknownNode(String),
}

impl<'a> Compiler<'a> {
    /// A compiler over the resources and pods.
    pub fn new(manifests: &'a Manifests, registry: &'a Registry) -> Compiler<'a> {
        Compiler {
            manifests,
            registry,
            index: IndexRef::Own(Box::new(Index::new(manifests, registry))),
        }
    }

    /// A compiler over the resources and pods, with their `Index` built already.
    pub fn with_index(
        manifests: &'a Manifests,
        registry: &'a Registry,
        index: &'a Index,
    ) -> Compiler<'a> {
        Compiler {
            manifests,
            registry,
            index: IndexRef::Shared(index),
        }
    }

    /// The outbound clusters of Service number `service` (in `Index` order) for a proxy in
    /// namespace `client_ns`: the same for every sidecar of that namespace.
    pub fn service_clusters_at(&self, service: usize, client_ns: &str) -> Vec<Cluster> {
        self.index
            .services
            .get(service)
            .map(|svc| self.service_clusters(svc, client_ns))
            .unwrap_or_default()
    }

    /// The outbound route config of the sidecars of namespace `ns` that see `visible`
    /// ([`Compiler::sidecar_scope`]), when `Index::routes_by_namespace` (else that of a pod
    /// without labels).
    pub fn namespace_routes(&self, ns: &str, visible: Option<&[bool]>) -> RouteConfig {
        let labels = std::collections::BTreeMap::new();
        self.outbound_routes(Client {
            namespace: ns,
            labels: &labels,
            gateway: None,
            visible,
        })
    }

    /// The parts of the sidecar snapshot of pod `pod` that are its own (everything but the
    /// outbound clusters, which [`Compiler::service_clusters_at`] gives per Service, and, when
    /// `routes` is false, the outbound routes, which [`Compiler::namespace_routes`] gives).
    /// Its `clusters` hold only the inbound ones. `visible`: the pod's
    /// [`Compiler::sidecar_scope`].
    pub fn sidecar_own(
        &self,
        pod: &str,
        version: &str,
        routes: bool,
        visible: Option<&[bool]>,
    ) -> Result<Snapshot, CompileError> {
        let p = self
            .index
            .pod(self.registry, pod)
            .ok_or_else(|| CompileError::UnknownNode(pod.to_string()))?;
        let client = Client {
            namespace: &p.namespace,
            labels: &p.labels,
            gateway: None,
            visible,
        };
        Ok(Snapshot {
            version: version.to_string(),
            node: node(p),
            outbound_traffic_policy: self.outbound_traffic_policy(p),
            listeners: self.tcp_listeners(p, visible),
            route_configs: if routes {
                vec![self.outbound_routes(client)]
            } else {
                Vec::new()
            },
            clusters: self.inbound_clusters(p),
            inbound: self.inbound_policy(p),
            telemetry: self.telemetry(p),
        })
    }

    /// Pod `p`'s `telemetry` section: its Telemetry resources over the mesh config.
    fn telemetry(&self, p: &Pod) -> skein_snapshot::telemetry::Telemetry {
        let all: Vec<&skein_api::telemetry::Telemetry> = self.manifests.telemetries().collect();
        let specs = telemetry::applicable(&all, p);
        telemetry::resolve(&self.index.mesh, &specs, p)
    }

    /// Whether pod `pod`'s proxy is a gateway.
    pub fn is_gateway(&self, pod: &str) -> bool {
        self.index
            .pod(self.registry, pod)
            .is_some_and(|p| p.proxy.as_ref().is_some_and(|x| x.mode == "gateway"))
    }

    /// The snapshot of the sidecar of pod `pod`.
    pub fn sidecar(&self, pod: &str, version: &str) -> Result<Snapshot, CompileError> {
        let p = self
            .index
            .pod(self.registry, pod)
            .ok_or_else(|| CompileError::UnknownNode(pod.to_string()))?;
        let (_, visible) = self.sidecar_scope(p);
        let visible = visible.as_deref();
        let client = Client {
            namespace: &p.namespace,
            labels: &p.labels,
            gateway: None,
            visible,
        };
        let mut clusters: Vec<Cluster> = self
            .index
            .services
            .iter()
            .enumerate()
            .filter(|(i, _)| visible.is_none_or(|v| v.get(*i).copied().unwrap_or(false)))
            .flat_map(|(_, svc)| self.service_clusters(svc, &p.namespace))
            .collect();
        clusters.extend(self.inbound_clusters(p));
        Ok(Snapshot {
            version: version.to_string(),
            node: node(p),
            outbound_traffic_policy: self.outbound_traffic_policy(p),
            listeners: self.tcp_listeners(p, visible),
            route_configs: vec![self.outbound_routes(client)],
            clusters,
            inbound: self.inbound_policy(p),
            telemetry: self.telemetry(p),
        })
    }

    /// One listener per opaque-TCP Service port, on the sidecar's outbound address (none when
    /// the pod has no outbound address).
    fn tcp_listeners(&self, p: &Pod, visible: Option<&[bool]>) -> Vec<Listener> {
        let Some(ip) = p
            .proxy
            .as_ref()
            .and_then(|x| x.outbound_ip.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok())
        else {
            return Vec::new();
        };
        let mut listeners = Vec::new();
        for (i, svc) in self.index.services.iter().enumerate() {
            if visible.is_some_and(|v| !v.get(i).copied().unwrap_or(false)) {
                continue;
            }
            for port in svc.ports.iter().filter(|p| p.protocol == Protocol::Tcp) {
                let cluster = outbound_cluster_name(port.port, None, &svc.fqdn);
                // A TCPRoute bound to the Service sends its connections elsewhere.
                let kind =
                    self.mesh_tcp_route(svc, port.port, visible)
                        .unwrap_or(ListenerKind::Tcp {
                            cluster: cluster.clone(),
                        });
                listeners.push(Listener {
                    name: cluster,
                    address: SocketAddr::new(ip, port.port),
                    kind,
                });
            }
        }
        listeners
    }

    /// The Sidecar resource's `outboundTrafficPolicy` for pod `p`.
    fn outbound_traffic_policy(&self, p: &Pod) -> skein_snapshot::OutboundTrafficPolicy {
        let mode = self
            .sidecar_resource(p)
            .and_then(|s| s.spec.outbound_traffic_policy.as_ref())
            .and_then(|o| o.mode);
        // A Sidecar's policy wins over the mesh config's.
        let mesh = self
            .index
            .mesh
            .outbound_traffic_policy
            .as_ref()
            .and_then(|o| o.mode);
        match mode.or(mesh) {
            Some(net::OutboundMode::RegistryOnly) => {
                skein_snapshot::OutboundTrafficPolicy::RegistryOnly
            }
            _ => skein_snapshot::OutboundTrafficPolicy::AllowAny,
        }
    }

    /// The Sidecar resource of pod `p`: a workload's own Sidecar, else its namespace's
    /// selector-less one, else the root namespace's (Istio's order).
    fn sidecar_resource(&self, p: &Pod) -> Option<&net::Sidecar> {
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
        in_ns(&p.namespace).or_else(|| in_ns(ROOT_NAMESPACE))
    }

    /// Which Services (by index position) pod `p`'s sidecar sees: those its Sidecar
    /// resource's `egress[].hosts` name (`namespace/dnsName`; `*` any namespace, `.` the pod's
    /// own, `~` none; `dnsName` an FQDN, `*` or `*.suffix`), over all its egress listeners
    /// (their ports and binds are not used). None: all of them (no Sidecar resource, or one
    /// without egress), as in Istio. With the key of the scope: pods with the same key see the
    /// same Services and routes.
    pub fn sidecar_scope(&self, p: &Pod) -> (String, Option<Vec<bool>>) {
        let Some(sidecar) = self
            .sidecar_resource(p)
            .filter(|s| !s.spec.egress.is_empty())
        else {
            return (p.namespace.clone(), None);
        };
        let hosts: Vec<(&str, String)> = sidecar
            .spec
            .egress
            .iter()
            .flat_map(|e| &e.hosts)
            .map(|h| {
                let (ns, dns) = h.split_once('/').unwrap_or(("*", h));
                let ns = if ns == "." { p.namespace.as_str() } else { ns };
                (ns, dns.trim_end_matches('.').to_ascii_lowercase())
            })
            .collect();
        let visible = self
            .index
            .services
            .iter()
            .map(|svc| {
                hosts.iter().any(|(ns, dns)| {
                    (*ns == "*" || *ns == svc.namespace)
                        && skein_snapshot::names::host_covers(dns, &svc.fqdn)
                })
            })
            .collect();
        let key = format!(
            "{}|{}/{}",
            p.namespace,
            sidecar.metadata.namespace_or_default(),
            sidecar.metadata.name
        );
        (key, Some(visible))
    }

    /// Whether a sidecar that sees `visible` sees the Service `fqdn`.
    pub(super) fn sees(&self, visible: Option<&[bool]>, fqdn: &str) -> bool {
        match visible {
            None => true,
            Some(v) => self
                .index
                .position(fqdn)
                .is_some_and(|i| v.get(i).copied().unwrap_or(false)),
        }
    }

    /// The snapshot of the ingress gateway pod `pod`: Ingress rules and Gateway-bound
    /// VirtualServices in the `gateway` route config, and the AuthorizationPolicies that
    /// select the gateway pod (as istiod attaches them to a gateway's listeners).
    pub fn gateway(&self, pod: &str, version: &str) -> Result<Snapshot, CompileError> {
        let p = self
            .index
            .pod(self.registry, pod)
            .ok_or_else(|| CompileError::UnknownNode(pod.to_string()))?;
        Ok(Snapshot {
            version: version.to_string(),
            node: node(p),
            listeners: self.gateway_tcp_listeners(p),
            route_configs: vec![self.gateway_routes(p)],
            clusters: self.clusters(&p.namespace),
            inbound: skein_snapshot::InboundPolicy {
                authz: self.authorization_policies(p),
                jwt: self.request_authentications(p),
                ..Default::default()
            },
            telemetry: self.telemetry(p),
            ..Default::default()
        })
    }

    /// The snapshot for proxy `node`, whichever kind it is.
    pub fn snapshot(&self, node: &str, version: &str) -> Result<Snapshot, CompileError> {
        let p = self
            .index
            .pod(self.registry, node)
            .ok_or_else(|| CompileError::UnknownNode(node.to_string()))?;
        match p.proxy.as_ref().map(|x| x.mode.as_str()) {
            Some("gateway") => self.gateway(node, version),
            _ => self.sidecar(node, version),
        }
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
        owner: owner(p),
        cluster_id: CLUSTER_ID.to_string(),
    }
}

/// The cluster id every pod's proxy reports (`source_cluster`, `destination_cluster`):
/// Istio's default for a single Kubernetes cluster.
pub(super) const CLUSTER_ID: &str = "Kubernetes";

/// The label Argo Rollouts puts on the pods of a Rollout's ReplicaSets.
const ROLLOUT_HASH_LABEL: &str = "rollouts-pod-template-hash";

/// The pod's owner in Istio's peer-metadata form. The registry records the owning workload's
/// name, not its kind: a pod with Argo Rollouts' template-hash label belongs to a Rollout,
/// any other to a Deployment (the common case).
fn owner(p: &Pod) -> String {
    if p.workload.is_empty() {
        return String::new();
    }
    if p.labels.contains_key(ROLLOUT_HASH_LABEL) {
        return format!(
            "kubernetes://apis/argoproj.io/v1alpha1/namespaces/{}/rollouts/{}",
            p.namespace, p.workload
        );
    }
    format!(
        "kubernetes://apis/apps/v1/namespaces/{}/deployments/{}",
        p.namespace, p.workload
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::fixtures::*;
    use skein_snapshot::{LbPolicy, RouteAction, SIDECAR_OUTBOUND_ROUTE, StringMatch, UpstreamTls};

    #[test]
    fn a_rollouts_pod_is_owned_by_the_rollout() {
        let r = registry();
        let mut p = r
            .pods
            .iter()
            .find(|p| !p.workload.is_empty() && !p.labels.contains_key(ROLLOUT_HASH_LABEL))
            .expect("a Deployment's pod")
            .clone();
        assert!(owner(&p).starts_with("kubernetes://apis/apps/v1/namespaces/"));
        p.labels
            .insert(ROLLOUT_HASH_LABEL.to_string(), "6f9d8b7c5".to_string());
        assert_eq!(
            owner(&p),
            format!(
                "kubernetes://apis/argoproj.io/v1alpha1/namespaces/{}/rollouts/{}",
                p.namespace, p.workload
            )
        );
    }

    #[test]
    fn web_sidecar_gets_the_seed_policies_routes_and_endpoints() {
        let (m, r) = (example(), registry());
        let compiler = Compiler::new(&m, &r);
        let snap = compiler.snapshot("web-1", "3").unwrap();
        assert_eq!(snap.version, "3");
        assert_eq!(snap.node.workload, "web");
        assert_eq!(
            snap.node.owner,
            "kubernetes://apis/argoproj.io/v1alpha1/namespaces/blog-system/rollouts/web"
        );
        assert_eq!(snap.node.cluster_id, "Kubernetes");
        assert_eq!(
            snap.node
                .labels
                .get("rollouts-pod-template-hash")
                .map(String::as_str),
            Some("5d8f7c9b4")
        );
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
        // The example's subsets have no labels (the Rollout's managed copy adds the
        // revision's hash): without it the canary subset is every web pod.
        let mut canary_addrs: Vec<String> = canary
            .endpoints
            .iter()
            .map(|e| e.address.to_string())
            .collect();
        canary_addrs.sort();
        assert_eq!(canary_addrs, ["127.9.1.1:80", "127.9.1.2:80"]);
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
    fn a_sidecar_resources_egress_hosts_scope_what_the_sidecar_sees() {
        let mut m = example();
        m.extend(
            skein_api::load_str(
                "s.yaml",
                "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: web, namespace: blog-system}\nspec:\n  workloadSelector: {labels: {app: web}}\n  egress:\n  - hosts: [./was-service.blog-system.svc.cluster.local, istio-system/*]\n",
            )
            .unwrap(),
        );
        let r = registry();
        let compiler = Compiler::new(&m, &r);
        let web = compiler.snapshot("web-1", "1").unwrap();
        web.validate().unwrap();
        assert!(
            web.dangling_references().is_empty(),
            "{:?}",
            web.dangling_references()
        );
        let outbound: Vec<&str> = web
            .clusters
            .iter()
            .filter(|c| c.name.starts_with("outbound|"))
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            outbound,
            ["outbound|8080||was-service.blog-system.svc.cluster.local"]
        );
        let rc = web.route_config(SIDECAR_OUTBOUND_ROUTE).unwrap();
        let hosts: Vec<&str> = rc.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(hosts, ["was-service.blog-system.svc.cluster.local:8080"]);
        assert!(web.listeners.is_empty(), "mysql is not in scope");
        // Inbound clusters are the pod's own, whatever the scope.
        assert!(web.cluster("inbound|80||").is_some());

        // Pods the Sidecar does not select see everything.
        let was = compiler.snapshot("was-1", "1").unwrap();
        assert_eq!(
            was,
            Compiler::new(&example(), &r)
                .snapshot("was-1", "1")
                .unwrap()
        );
    }

    /// The outbound traffic policies of was and web with `yaml` added to the example.
    fn outbound_policies(yaml: &str) -> [skein_snapshot::OutboundTrafficPolicy; 2] {
        let mut m = example();
        m.extend(skein_api::load_str("extra.yaml", yaml).unwrap());
        let r = registry();
        let compiler = Compiler::new(&m, &r);
        ["was-1", "web-1"].map(|pod| compiler.snapshot(pod, "1").unwrap().outbound_traffic_policy)
    }

    #[test]
    fn a_sidecar_resource_sets_registry_only() {
        use skein_snapshot::OutboundTrafficPolicy::{AllowAny, RegistryOnly};
        let [was, web] = outbound_policies(
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: istio-system}\nspec:\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: web, namespace: blog-system}\nspec:\n  workloadSelector: {labels: {app: web}}\n  outboundTrafficPolicy: {mode: ALLOW_ANY}\n",
        );
        assert_eq!(was, RegistryOnly);
        assert_eq!(web, AllowAny);
    }

    #[test]
    fn the_mesh_config_sets_the_default_and_a_sidecar_resource_wins() {
        use skein_snapshot::OutboundTrafficPolicy::{AllowAny, RegistryOnly};
        let [was, web] = outbound_policies(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |-\n    outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: web, namespace: blog-system}\nspec:\n  workloadSelector: {labels: {app: web}}\n  outboundTrafficPolicy: {mode: ALLOW_ANY}\n",
        );
        assert_eq!(was, RegistryOnly, "the mesh config's mode");
        assert_eq!(web, AllowAny, "the Sidecar's mode wins");
    }
}
