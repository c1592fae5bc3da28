//! Kubernetes Services, reduced to what compiling needs.

use std::collections::{BTreeMap, HashMap};

use skein_api::Manifests;
use skein_snapshot::Protocol;
use skein_snapshot::names::fqdn;

use super::Compiler;
use crate::registry::{Pod, Registry};

/// A Service port, with its protocol as Istio derives it.
#[derive(Debug, Clone)]
pub(super) struct ServicePort {
    pub(super) name: Option<String>,
    pub(super) port: u16,
    target: Target,
    pub(super) protocol: Protocol,
}

#[derive(Debug, Clone)]
enum Target {
    Number(u16),
    Name(String),
}

impl ServicePort {
    /// The container port this Service port targets on pod `p` (a named target port by the
    /// pod's port names), if the pod has it.
    pub(super) fn target_on(&self, p: &Pod) -> Option<u16> {
        match &self.target {
            Target::Number(n) => Some(*n),
            Target::Name(n) => p.port_names.get(n).copied(),
        }
    }
}

/// A Service, reduced to what compiling needs.
#[derive(Debug, Clone)]
pub(super) struct Service {
    pub(super) namespace: String,
    pub(super) fqdn: String,
    pub(super) selector: BTreeMap<String, String>,
    pub(super) ports: Vec<ServicePort>,
    /// The registry's pods (indices) in the Service's namespace that its selector selects.
    pub(super) pods: Vec<usize>,
}

/// Istio's protocol selection: `appProtocol`, else the port name's prefix before `-`.
pub(super) fn port_protocol(name: Option<&str>, app_protocol: Option<&str>) -> Protocol {
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

/// The Services, each with the pods it selects.
pub(super) fn services(manifests: &Manifests, registry: &Registry) -> Vec<Service> {
    // Pods by (namespace, label, value): a Service's candidates are the pods with its
    // selector's first label, rather than every pod of its namespace.
    let mut by_label: HashMap<(&str, &str, &str), Vec<usize>> = HashMap::new();
    for (i, p) in registry.pods.iter().enumerate() {
        for (k, v) in &p.labels {
            by_label
                .entry((p.namespace.as_str(), k.as_str(), v.as_str()))
                .or_default()
                .push(i);
        }
    }
    let mut out = all_services(manifests);
    for svc in &mut out {
        // An empty selector selects nothing.
        let Some((k, v)) = svc.selector.iter().next() else {
            continue;
        };
        svc.pods = by_label
            .get(&(svc.namespace.as_str(), k.as_str(), v.as_str()))
            .map(|pods| {
                pods.iter()
                    .copied()
                    .filter(|&i| registry.pods[i].selected_by(&svc.selector))
                    .collect()
            })
            .unwrap_or_default();
    }
    out
}

fn all_services(manifests: &Manifests) -> Vec<Service> {
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
                pods: Vec::new(),
            }
        })
        .collect()
}

impl Compiler<'_> {
    pub(super) fn service(&self, fqdn: &str) -> Option<&Service> {
        self.index
            .by_fqdn
            .get(fqdn)
            .and_then(|&i| self.index.services.get(i))
    }

    /// The pods a Service selects.
    pub(super) fn pods_of<'s>(&'s self, svc: &'s Service) -> impl Iterator<Item = &'s Pod> {
        svc.pods.iter().filter_map(|&i| self.registry.pods.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_protocol_follows_istio() {
        assert_eq!(port_protocol(Some("tcp-mysql"), None), Protocol::Tcp);
        assert_eq!(port_protocol(Some("http"), None), Protocol::Http1);
        assert_eq!(port_protocol(Some("web"), Some("http2")), Protocol::Http2);
        assert_eq!(port_protocol(None, None), Protocol::Auto);
    }
}
