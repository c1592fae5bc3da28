//! Clusters: one per Service port and DestinationRule subset, with the rule's traffic policy
//! (looked up as Istio does, merged subset over rule, portLevelSettings per port).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use skein_api::networking::{self as net, DestinationRule, TrafficPolicy};
use skein_snapshot::names::TLS_MODE_LABEL;
use skein_snapshot::{
    Cluster, ConnectionPool, ConsistentHash, Endpoint, EndpointWorkload, HashKey, LbPolicy,
    OriginTls, OutlierDetection, Protocol, RetryBudget, UpstreamTls, outbound_cluster_name,
};

use super::services::{Service, ServicePort};
use super::{CLUSTER_ID, Compiler, ROOT_NAMESPACE};
use crate::registry::Pod;

/// The traffic policy fields that a subset or port may override, resolved.
#[derive(Debug, Clone, Default)]
struct Policy {
    lb: Option<net::LoadBalancerSettings>,
    pool: Option<net::ConnectionPoolSettings>,
    outlier: Option<net::OutlierDetection>,
    tls: Option<net::ClientTlsSettings>,
    /// `trafficPolicy.retryBudget`: a rule's or a subset's, never a port's (Istio has none
    /// per port, and a port-level setting keeps the rule's).
    retry_budget: Option<net::RetryBudget>,
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
                retry_budget: tp.retry_budget.clone(),
            };
        }
        Policy {
            lb: tp.load_balancer.clone(),
            pool: tp.connection_pool.clone(),
            outlier: tp.outlier_detection.clone(),
            tls: tp.tls.clone(),
            retry_budget: tp.retry_budget.clone(),
        }
    }

    /// `self` overridden field by field by `over`.
    fn overridden_by(self, over: Policy) -> Policy {
        Policy {
            lb: over.lb.or(self.lb),
            pool: over.pool.or(self.pool),
            outlier: over.outlier.or(self.outlier),
            tls: over.tls.or(self.tls),
            retry_budget: over.retry_budget.or(self.retry_budget),
        }
    }

    fn apply(&self, c: &mut Cluster, secrets: &Secrets<'_>) {
        // No DestinationRule TLS mode: Istio's auto mTLS (per endpoint, by its sidecar label).
        c.auto_mtls = self.tls.as_ref().and_then(|t| t.mode).is_none();
        c.lb_policy = lb_policy(self.lb.as_ref());
        c.connection_pool = connection_pool(self.pool.as_ref());
        c.connection_pool.retry_budget = self.retry_budget.as_ref().map(retry_budget);
        c.outlier_detection = self.outlier.as_ref().map(outlier_detection);
        c.tls = upstream_tls(self.tls.as_ref(), secrets);
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

/// Envoy's defaults for what the rule leaves out: 20 %, at least 3. (`budgetInterval` has no
/// counterpart in a concurrency budget; it is read and not used.)
fn retry_budget(b: &net::RetryBudget) -> RetryBudget {
    let percent = b.percent.filter(|p| p.is_finite()).unwrap_or(20.0);
    RetryBudget {
        percent_milli: (percent.clamp(0.0, 100.0) * 1000.0).round() as u32,
        min_concurrency: b.min_retry_concurrency.unwrap_or(3),
    }
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

/// The Secrets a proxy's `credentialName` may name: those of the proxy's own namespace (as
/// Istio requires: "the secret must exist in the namespace of the proxy using the
/// certificates").
pub(super) struct Secrets<'a> {
    manifests: &'a skein_api::Manifests,
    namespace: &'a str,
}

impl Secrets<'_> {
    fn get(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.manifests
            .secrets()
            .find(|s| {
                s.metadata.name == name && s.metadata.namespace_or_default() == self.namespace
            })
            .map(|s| s.decoded_data())
    }
}

/// The first of `keys` the Secret holds.
fn secret_value(data: &BTreeMap<String, String>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| data.get(*k).cloned())
}

/// SIMPLE / MUTUAL: file paths stay paths (the proxy reads them); a `credentialName` Secret
/// is resolved here into PEM (it replaces the file fields, as Istio allows only one of the
/// two). Istio's keys: a TLS Secret's `tls.crt`, `tls.key`, `ca.crt`, or a generic one's
/// `cert`, `key`, `cacert`; the CA may also come from a Secret named `<name>-cacert`. What
/// cannot be resolved becomes `error`, and the proxy answers 503 UF (never plaintext).
fn origin_tls(t: &net::ClientTlsSettings, mutual: bool, secrets: &Secrets<'_>) -> OriginTls {
    let mut o = OriginTls {
        ca_certificates: t.ca_certificates.clone().filter(|s| !s.is_empty()),
        client_certificate: t.client_certificate.clone().filter(|s| !s.is_empty()),
        private_key: t.private_key.clone().filter(|s| !s.is_empty()),
        subject_alt_names: t.subject_alt_names.clone(),
        insecure_skip_verify: t.insecure_skip_verify == Some(true),
        ..Default::default()
    };
    let Some(name) = t.credential_name.as_deref().filter(|n| !n.is_empty()) else {
        return o;
    };
    o.ca_certificates = None;
    o.client_certificate = None;
    o.private_key = None;
    let ns = secrets.namespace;
    let Some(data) = secrets.get(name) else {
        o.error = Some(format!(
            "DestinationRule tls.credentialName: Secret {ns}/{name} not found (it must be in the proxy's namespace)"
        ));
        return o;
    };
    const CA: &[&str] = &["ca.crt", "cacert"];
    o.ca_pem = secret_value(&data, CA).or_else(|| {
        secrets
            .get(&format!("{name}-cacert"))
            .and_then(|d| secret_value(&d, CA))
    });
    if mutual {
        o.cert_chain_pem = secret_value(&data, &["tls.crt", "cert"]);
        o.key_pem = secret_value(&data, &["tls.key", "key"]);
        if o.cert_chain_pem.is_none() || o.key_pem.is_none() {
            o.error = Some(format!(
                "DestinationRule tls.credentialName: Secret {ns}/{name} has no client certificate and key (tls.crt and tls.key, or cert and key)"
            ));
        }
    }
    if o.ca_pem.is_none() && !o.insecure_skip_verify && o.error.is_none() {
        o.error = Some(format!(
            "DestinationRule tls.credentialName: Secret {ns}/{name} has no CA certificate (ca.crt or cacert, or a Secret {name}-cacert)"
        ));
    }
    o
}

/// Istio's `istio`/`workload` endpoint metadata of a pod: its owner, namespace, canonical
/// service and revision (the rule the proxy applies to its own node), and the cluster.
fn endpoint_workload(p: &Pod) -> EndpointWorkload {
    EndpointWorkload {
        name: p.workload.clone(),
        namespace: p.namespace.clone(),
        canonical_service: skein_snapshot::canonical_service(&p.labels, &p.workload).to_string(),
        canonical_revision: skein_snapshot::canonical_revision(&p.labels).to_string(),
        cluster: CLUSTER_ID.to_string(),
    }
}

fn upstream_tls(t: Option<&net::ClientTlsSettings>, secrets: &Secrets<'_>) -> UpstreamTls {
    match t.and_then(|t| t.mode.map(|m| (m, t))) {
        Some((net::ClientTlsMode::IstioMutual, _)) => UpstreamTls::IstioMutual,
        Some((net::ClientTlsMode::Simple, t)) => UpstreamTls::Simple {
            sni: t.sni.clone(),
            origin: origin_tls(t, false, secrets),
        },
        Some((net::ClientTlsMode::Mutual, t)) => UpstreamTls::Mutual {
            sni: t.sni.clone(),
            credential_name: t.credential_name.clone(),
            origin: origin_tls(t, true, secrets),
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
        self.pods_of(svc)
            .filter(|p| p.ready)
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
                    workload: Some(endpoint_workload(p)),
                })
            })
            .collect()
    }

    /// `inbound|PORT||` for each container port a Service targets: it names the service for
    /// the inbound side's metrics (`destination_service`). The proxy adds the app endpoint.
    pub(super) fn inbound_clusters(&self, p: &Pod) -> Vec<Cluster> {
        let mut out: Vec<Cluster> = Vec::new();
        for svc in self
            .index
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
            .pods_of(svc)
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
        self.index
            .services
            .iter()
            .flat_map(|svc| self.service_clusters(svc, client_ns))
            .collect()
    }

    /// The outbound clusters of one Service for a proxy in `client_ns`: per port, plus one per
    /// DestinationRule subset.
    pub(super) fn service_clusters(&self, svc: &Service, client_ns: &str) -> Vec<Cluster> {
        let mut out = Vec::new();
        let secrets = Secrets {
            manifests: self.manifests,
            namespace: client_ns,
        };
        {
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
                base.apply(&mut c, &secrets);
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
                    policy.apply(&mut c, &secrets);
                    out.push(c);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{Policy, net, retry_budget};
    use crate::compile::fixtures::*;
    use crate::compile::{CompileError, Compiler};
    use skein_api::networking::TrafficPolicy;
    use skein_snapshot::{OriginTls, RetryBudget, UpstreamTls};

    const PAYMENTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: payments, namespace: blog-system}
spec:
  selector: {app: payments}
  ports: [{name: https, port: 443}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payments, namespace: blog-system}
spec:
  host: payments
  trafficPolicy:
    tls:
      mode: MUTUAL
      credentialName: payments-client
      sni: pay.example.com
      subjectAltNames: [pay.example.com]
  subsets:
  - name: files
    labels: {version: files}
    trafficPolicy:
      tls:
        mode: SIMPLE
        caCertificates: /etc/pay/ca.pem
  - name: missing
    labels: {version: missing}
    trafficPolicy:
      tls: {mode: MUTUAL, credentialName: nope}
---
apiVersion: v1
kind: Secret
metadata: {name: payments-client, namespace: blog-system}
type: kubernetes.io/tls
stringData:
  tls.crt: CHAIN
  tls.key: KEY
  ca.crt: ROOTS
"#;

    fn payments(subset: &str) -> UpstreamTls {
        let mut m = example();
        m.extend(skein_api::load_str("payments.yaml", PAYMENTS).unwrap());
        let r = registry();
        let snap = Compiler::new(&m, &r).snapshot("web-1", "1").unwrap();
        let fqdn = "payments.blog-system.svc.cluster.local";
        snap.cluster(&skein_snapshot::outbound_cluster_name(
            443,
            (!subset.is_empty()).then_some(subset),
            fqdn,
        ))
        .unwrap()
        .tls
        .clone()
    }

    #[test]
    fn a_credential_name_secret_becomes_pem_in_the_snapshot_and_files_stay_paths() {
        assert_eq!(
            payments(""),
            UpstreamTls::Mutual {
                sni: Some("pay.example.com".into()),
                credential_name: Some("payments-client".into()),
                origin: OriginTls {
                    ca_pem: Some("ROOTS".into()),
                    cert_chain_pem: Some("CHAIN".into()),
                    key_pem: Some("KEY".into()),
                    subject_alt_names: vec!["pay.example.com".into()],
                    ..Default::default()
                },
            }
        );
        assert_eq!(
            payments("files"),
            UpstreamTls::Simple {
                sni: None,
                origin: OriginTls {
                    ca_certificates: Some("/etc/pay/ca.pem".into()),
                    ..Default::default()
                },
            }
        );
        let UpstreamTls::Mutual { origin, .. } = payments("missing") else {
            panic!("MUTUAL expected");
        };
        assert_eq!(
            origin.error.as_deref(),
            Some(
                "DestinationRule tls.credentialName: Secret blog-system/nope not found (it must be in the proxy's namespace)"
            )
        );
        assert!(
            !format!("{origin:?}").contains("KEY"),
            "key material never in Debug output"
        );
    }

    #[test]
    fn unready_pods_are_not_endpoints_and_unknown_nodes_are_errors() {
        let m = example();
        let mut r = registry();
        r.pods[2].ready = false;
        let compiler = Compiler::new(&m, &r);
        let snap = compiler.snapshot("web-1", "1").unwrap();
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
    fn endpoints_carry_their_pods_workload_as_istio_writes_it() {
        let m = example();
        let mut r = registry();
        // The canonical label wins over `app`; no version label: `latest`.
        let was = r.pods.iter_mut().find(|p| p.name == "was-1").unwrap();
        was.labels
            .insert("service.istio.io/canonical-name".into(), "was-api".into());
        was.labels.remove("version");
        let compiler = Compiler::new(&m, &r);
        let snap = compiler.snapshot("web-1", "1").unwrap();
        let was = snap
            .cluster("outbound|8080||was-service.blog-system.svc.cluster.local")
            .unwrap();
        let by_ip = |ip: &str| {
            was.endpoints
                .iter()
                .find(|e| e.address.ip().to_string() == ip)
                .and_then(|e| e.workload.clone())
                .unwrap()
        };
        let w1 = by_ip("127.9.1.3");
        assert_eq!(
            (
                w1.name.as_str(),
                w1.namespace.as_str(),
                w1.canonical_service.as_str(),
                w1.canonical_revision.as_str(),
                w1.cluster.as_str()
            ),
            ("was", "blog-system", "was-api", "latest", "Kubernetes")
        );
        let w2 = was
            .endpoints
            .iter()
            .filter_map(|e| e.workload.as_ref())
            .find(|w| w.canonical_service == "was")
            .unwrap();
        assert_eq!(w2.canonical_revision, "v1");
    }

    #[test]
    fn a_retry_budget_takes_envoys_defaults_and_a_port_keeps_the_rules() {
        let tp = TrafficPolicy {
            retry_budget: Some(net::RetryBudget {
                min_retry_concurrency: Some(5),
                ..Default::default()
            }),
            port_level_settings: vec![net::PortTrafficPolicy {
                port: Some(net::PortSelector { number: Some(8080) }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let rule = Policy::from_traffic_policy(Some(&tp), 80);
        let b = rule.retry_budget.as_ref().map(retry_budget);
        assert_eq!(
            b,
            Some(RetryBudget {
                percent_milli: 20_000,
                min_concurrency: 5
            })
        );
        let port = Policy::from_traffic_policy(Some(&tp), 8080);
        assert_eq!(port.retry_budget.as_ref().map(retry_budget), b);
        let subset = TrafficPolicy {
            retry_budget: Some(net::RetryBudget {
                percent: Some(12.5),
                ..Default::default()
            }),
            ..Default::default()
        };
        let merged = rule.overridden_by(Policy::from_traffic_policy(Some(&subset), 80));
        assert_eq!(
            merged.retry_budget.as_ref().map(retry_budget),
            Some(RetryBudget {
                percent_milli: 12_500,
                min_concurrency: 3
            })
        );
        assert!(Policy::from_traffic_policy(None, 80).retry_budget.is_none());
    }
}
