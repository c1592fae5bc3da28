//! Clusters: one per Service port and DestinationRule subset, with the rule's traffic policy
//! (looked up as Istio does, merged subset over rule, portLevelSettings per port).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use skein_api::networking::{self as net, DestinationRule, TrafficPolicy};
use skein_snapshot::names::TLS_MODE_LABEL;
use skein_snapshot::{
    Cluster, ConnectionPool, ConsistentHash, Endpoint, HashKey, LbPolicy, OutlierDetection,
    Protocol, UpstreamTls, outbound_cluster_name,
};

use super::services::{Service, ServicePort};
use super::{Compiler, ROOT_NAMESPACE};
use crate::registry::Pod;

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

impl Compiler<'_> {
    /// The DestinationRule for `fqdn` as seen from `client_ns`: the client's namespace first,
    /// then the service's, then the root namespace; an exact host beats a wildcard.
    fn destination_rule(&self, fqdn: &str, client_ns: &str) -> Option<&DestinationRule> {
        let svc_ns = self.service(fqdn).map(|s| s.namespace.as_str());
        let candidates: Vec<&DestinationRule> = self
            .manifests
            .destination_rules()
            .filter(|d| d.spec.workload_selector.is_none())
            .filter(|d| self.covers(&d.spec.host, d.metadata.namespace_or_default(), fqdn))
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
                let target = port.target_on(p)?;
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
    pub(super) fn inbound_clusters(&self, p: &Pod) -> Vec<Cluster> {
        let mut out: Vec<Cluster> = Vec::new();
        for svc in self
            .services
            .iter()
            .filter(|s| s.namespace == p.namespace && p.selected_by(&s.selector))
        {
            for port in &svc.ports {
                let Some(target) = port.target_on(p) else {
                    continue;
                };
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
    pub(super) fn clusters(&self, client_ns: &str) -> Vec<Cluster> {
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
}

#[cfg(test)]
mod tests {
    use crate::compile::fixtures::*;
    use crate::compile::{CompileError, Compiler};

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
}
