//! Helpers to build snapshots in tests and in hand-written configs.
//!
//! ```
//! use skein_snapshot::build::SnapshotBuilder;
//! let snap = SnapshotBuilder::new("v1", "blog-system", "web")
//!     .http_service("was-service", 8080, &["127.0.0.1:18080"])
//!     .build();
//! assert_eq!(snap.clusters[0].name, "outbound|8080||was-service.blog-system.svc.cluster.local");
//! ```

use std::net::SocketAddr;

use crate::*;

pub use crate::names::fqdn;

/// Parses endpoint addresses; panics on a malformed literal (test and example helper only).
fn endpoints(addrs: &[&str]) -> Vec<Endpoint> {
    addrs
        .iter()
        .map(|a| Endpoint {
            address: a
                .parse::<SocketAddr>()
                .unwrap_or_else(|e| panic!("endpoint {a:?} is not ip:port: {e}")),
            labels: Default::default(),
            weight: 1,
            workload: None,
        })
        .collect()
}

/// An outbound cluster for `fqdn:port` (optionally a subset) with the given endpoints.
pub fn cluster(fqdn: &str, port: u16, subset: Option<&str>, addrs: &[&str]) -> Cluster {
    Cluster {
        name: outbound_cluster_name(port, subset, fqdn),
        service: fqdn.to_string(),
        port,
        subset: subset.map(str::to_string),
        protocol: Protocol::Http1,
        endpoints: endpoints(addrs),
        ..Default::default()
    }
}

/// A route that sends everything to one cluster.
pub fn route_to(cluster: &str) -> Route {
    weighted_route(&[(cluster, 100)])
}

/// A route that splits traffic by weight.
pub fn weighted_route(dests: &[(&str, u32)]) -> Route {
    Route {
        name: "default".to_string(),
        action: RouteAction::Route(
            dests
                .iter()
                .map(|(c, w)| WeightedCluster {
                    cluster: c.to_string(),
                    weight: *w,
                    headers: HeaderOps::default(),
                })
                .collect(),
        ),
        ..Default::default()
    }
}

/// A virtual host for a Kubernetes service port, reachable from `client_ns` under every form.
pub fn service_vhost(fqdn: &str, port: u16, client_ns: &str, routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: format!("{fqdn}:{port}"),
        domains: service_domains(fqdn, port, client_ns),
        routes,
    }
}

/// Builds a [`Snapshot`] step by step.
#[derive(Debug, Clone)]
pub struct SnapshotBuilder {
    snap: Snapshot,
}

impl SnapshotBuilder {
    /// A snapshot for workload `workload` in `namespace`, with an empty `outbound` route config.
    pub fn new(version: &str, namespace: &str, workload: &str) -> Self {
        SnapshotBuilder {
            snap: Snapshot {
                version: version.to_string(),
                node: Node {
                    pod: format!("{workload}-0"),
                    namespace: namespace.to_string(),
                    workload: workload.to_string(),
                    service_account: "default".to_string(),
                    ..Default::default()
                },
                route_configs: vec![RouteConfig {
                    name: SIDECAR_OUTBOUND_ROUTE.to_string(),
                    virtual_hosts: Vec::new(),
                }],
                ..Default::default()
            },
        }
    }

    /// Adds a service `name.<namespace>` on `port` with one HTTP/1 cluster and a default route.
    pub fn http_service(self, name: &str, port: u16, addrs: &[&str]) -> Self {
        let f = fqdn(name, &self.snap.node.namespace);
        let c = cluster(&f, port, None, addrs);
        let route = route_to(&c.name);
        self.service_routes(name, port, vec![route]).cluster(c)
    }

    /// Adds a virtual host for service `name.<namespace>:port` with these routes.
    pub fn service_routes(mut self, name: &str, port: u16, routes: Vec<Route>) -> Self {
        let ns = self.snap.node.namespace.clone();
        let vh = service_vhost(&fqdn(name, &ns), port, &ns, routes);
        self = self.vhost(SIDECAR_OUTBOUND_ROUTE, vh);
        self
    }

    /// Adds a virtual host to a route config (created if missing).
    pub fn vhost(mut self, route_config: &str, vh: VirtualHost) -> Self {
        match self
            .snap
            .route_configs
            .iter_mut()
            .find(|r| r.name == route_config)
        {
            Some(rc) => rc.virtual_hosts.push(vh),
            None => self.snap.route_configs.push(RouteConfig {
                name: route_config.to_string(),
                virtual_hosts: vec![vh],
            }),
        }
        self
    }

    /// Adds a cluster.
    pub fn cluster(mut self, c: Cluster) -> Self {
        self.snap.clusters.push(c);
        self
    }

    /// Adds a listener.
    pub fn listener(mut self, l: Listener) -> Self {
        self.snap.listeners.push(l);
        self
    }

    /// Adds a TCP listener on `address` forwarding to `cluster`.
    pub fn tcp_listener(self, name: &str, address: SocketAddr, cluster: &str) -> Self {
        self.listener(Listener {
            name: name.to_string(),
            address,
            kind: ListenerKind::Tcp {
                cluster: cluster.to_string(),
            },
        })
    }

    /// Sets REGISTRY_ONLY.
    pub fn registry_only(mut self) -> Self {
        self.snap.outbound_traffic_policy = OutboundTrafficPolicy::RegistryOnly;
        self
    }

    /// Changes the last added cluster.
    pub fn with_last_cluster(mut self, f: impl FnOnce(&mut Cluster)) -> Self {
        if let Some(c) = self.snap.clusters.last_mut() {
            f(c);
        }
        self
    }

    /// The snapshot.
    pub fn build(self) -> Snapshot {
        self.snap
    }
}
