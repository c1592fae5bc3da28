//! What planning reads from the manifests: workloads (Deployments, Rollouts, StatefulSets,
//! DaemonSets, Jobs and bare Pods), Services,
//! and ConfigMap and Secret data, each reduced to what running it locally needs.

use std::collections::BTreeMap;

use skein_api::{Manifests, Resource, Source};
use skein_snapshot::names;

use super::ServicePortRef;
use crate::mysql::is_mysql_image;

/// The label Argo Rollouts puts on each pod: its ReplicaSet's template hash.
pub const ROLLOUT_HASH_LABEL: &str = "rollouts-pod-template-hash";

/// How a workload's pods are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Naming {
    /// `<workload>-<template-hash>-<suffix>` (Deployment, Rollout, DaemonSet).
    Generated,
    /// `<workload>-0`, `<workload>-1`, ..., each started once the one before is ready
    /// (StatefulSet, `OrderedReady`).
    Ordinal,
    /// The same names, started together (`podManagementPolicy: Parallel`).
    OrdinalParallel,
    /// The object's own name (a bare Pod).
    Own,
}

/// A Deployment, Rollout, StatefulSet, DaemonSet or bare Pod, reduced to what running it
/// needs.
pub(super) struct Workload<'a> {
    /// `Deployment`, `Rollout`, `StatefulSet`, `DaemonSet` or `Pod`.
    pub(super) kind: &'static str,
    pub(super) naming: Naming,
    /// A Job's backoff limit: its pods run to completion.
    pub(super) run_to_completion: Option<u32>,
    pub(super) name: String,
    pub(super) namespace: String,
    pub(super) replicas: usize,
    pub(super) annotations: BTreeMap<String, String>,
    pub(super) pod_labels: BTreeMap<String, String>,
    pub(super) pod_annotations: BTreeMap<String, String>,
    pub(super) spec: &'a skein_api::k8s::PodSpec,
    pub(super) template_key: Vec<u8>,
    pub(super) source: Source,
}

impl Workload<'_> {
    pub(super) fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .get(key)
            .or_else(|| self.pod_annotations.get(key))
            .map(String::as_str)
    }

    pub(super) fn is_database(&self) -> bool {
        self.spec
            .containers
            .iter()
            .any(|c| is_mysql_image(c.image.as_deref().unwrap_or("")))
    }
}

pub(super) fn workloads(manifests: &Manifests) -> Vec<Workload<'_>> {
    let mut out = Vec::new();
    for d in &manifests.documents {
        let (kind, naming, meta, spec) = match &d.resource {
            Resource::Deployment(x) => (
                "Deployment",
                Naming::Generated,
                &x.metadata,
                x.spec.as_workload(),
            ),
            Resource::Rollout(x) => (
                "Rollout",
                Naming::Generated,
                &x.metadata,
                x.spec.as_workload(),
            ),
            Resource::StatefulSet(x) => (
                "StatefulSet",
                if x.spec.pod_management_policy.as_deref() == Some("Parallel") {
                    Naming::OrdinalParallel
                } else {
                    Naming::Ordinal
                },
                &x.metadata,
                x.spec.as_workload(),
            ),
            // One node: one pod.
            Resource::DaemonSet(x) => (
                "DaemonSet",
                Naming::Generated,
                &x.metadata,
                x.spec.as_workload(),
            ),
            Resource::Job(x) => {
                let s = &x.spec;
                out.push(Workload {
                    kind: "Job",
                    naming: Naming::Generated,
                    run_to_completion: Some(s.backoff_limit.unwrap_or(6).max(0) as u32),
                    name: x.metadata.name.clone(),
                    namespace: x.metadata.namespace_or_default().to_string(),
                    replicas: s.parallelism.unwrap_or(1).max(0) as usize,
                    annotations: x.metadata.annotations.clone(),
                    pod_labels: s.template.metadata.labels.clone(),
                    pod_annotations: s.template.metadata.annotations.clone(),
                    spec: &s.template.spec,
                    template_key: serde_json::to_vec(&s.template).unwrap_or_default(),
                    source: d.source.clone(),
                });
                continue;
            }
            Resource::Pod(x) => {
                let once = matches!(
                    x.spec.restart_policy,
                    Some(
                        skein_api::k8s::RestartPolicy::Never
                            | skein_api::k8s::RestartPolicy::OnFailure
                    )
                );
                out.push(Workload {
                    kind: "Pod",
                    naming: Naming::Own,
                    run_to_completion: once.then_some(
                        if x.spec.restart_policy == Some(skein_api::k8s::RestartPolicy::Never) {
                            0
                        } else {
                            u32::MAX
                        },
                    ),
                    name: x.metadata.name.clone(),
                    namespace: x.metadata.namespace_or_default().to_string(),
                    replicas: 1,
                    annotations: x.metadata.annotations.clone(),
                    pod_labels: x.metadata.labels.clone(),
                    pod_annotations: x.metadata.annotations.clone(),
                    spec: &x.spec,
                    template_key: serde_json::to_vec(&x.spec).unwrap_or_default(),
                    source: d.source.clone(),
                });
                continue;
            }
            _ => continue,
        };
        let mut template_meta = spec.template.metadata.clone();
        let template_key = serde_json::to_vec(&spec.template).unwrap_or_default();
        if matches!(d.resource, Resource::Rollout(_)) {
            // Argo labels a Rollout's pods with their template's hash; the DestinationRule
            // subsets it manages select on it.
            template_meta.labels.insert(
                ROLLOUT_HASH_LABEL.to_string(),
                crate::naming::template_hash(&template_key),
            );
        }
        out.push(Workload {
            kind,
            naming,
            run_to_completion: None,
            name: meta.name.clone(),
            namespace: meta
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_string()),
            replicas: spec.replicas.unwrap_or(1).max(0) as usize,
            annotations: meta.annotations.clone(),
            pod_labels: template_meta.labels.clone(),
            pod_annotations: template_meta.annotations.clone(),
            spec: &spec.template.spec,
            template_key,
            source: d.source.clone(),
        });
    }
    out
}

/// A workload made of one template, for a pod planned while the run lasts (a Rollout's).
pub(super) fn workload_of<'a>(
    name: &str,
    namespace: &str,
    template: &'a skein_api::k8s::PodTemplateSpec,
    source: Source,
) -> Workload<'a> {
    Workload {
        kind: "Rollout",
        naming: Naming::Generated,
        run_to_completion: None,
        name: name.to_string(),
        namespace: namespace.to_string(),
        replicas: 1,
        annotations: BTreeMap::new(),
        pod_labels: template.metadata.labels.clone(),
        pod_annotations: template.metadata.annotations.clone(),
        spec: &template.spec,
        template_key: serde_json::to_vec(template).unwrap_or_default(),
        source,
    }
}

pub(super) struct ServiceDef {
    pub(super) name: String,
    pub(super) namespace: String,
    pub(super) selector: BTreeMap<String, String>,
    pub(super) ports: Vec<ServicePortDef>,
}

pub(super) struct ServicePortDef {
    pub(super) name: Option<String>,
    pub(super) port: u16,
    pub(super) target: Option<ServicePortRef>,
}

/// Every Service of the manifests, in their order.
pub(super) fn services(manifests: &Manifests) -> Vec<ServiceDef> {
    manifests
        .documents
        .iter()
        .filter_map(|d| match &d.resource {
            Resource::Service(s) => Some(ServiceDef::from_api(s)),
            _ => None,
        })
        .collect()
}

impl ServiceDef {
    fn from_api(s: &skein_api::k8s::Service) -> ServiceDef {
        let spec = s.spec.clone();
        ServiceDef {
            name: s.metadata.name.clone(),
            namespace: s
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            selector: spec.selector.clone().unwrap_or_default(),
            ports: spec
                .ports
                .iter()
                .map(|p| ServicePortDef {
                    name: p.name.clone(),
                    port: u16::try_from(p.port).unwrap_or(0),
                    target: p.target_port.as_ref().map(port_ref),
                })
                .collect(),
        }
    }

    /// An empty selector selects nothing (its endpoints are managed by hand on Kubernetes).
    pub(super) fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.selector.is_empty() && self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// Whether `host`, as written by a client in namespace `from_ns`, names this service.
    pub(super) fn is_named_by(&self, host: &str, from_ns: &str) -> bool {
        let fqdn = names::fqdn(&self.name, &self.namespace);
        names::resolve_host(host, from_ns, |h| h == fqdn) == fqdn
    }
}

pub(super) fn port_ref(p: &skein_api::k8s::IntOrString) -> ServicePortRef {
    match p {
        skein_api::k8s::IntOrString::Int(n) => {
            ServicePortRef::Number(u16::try_from(*n).unwrap_or(0))
        }
        skein_api::k8s::IntOrString::String(s) => match s.parse::<u16>() {
            Ok(n) => ServicePortRef::Number(n),
            Err(_) => ServicePortRef::Name(s.clone()),
        },
    }
}

/// ConfigMap and Secret data, for `valueFrom` and `envFrom`, by (namespace, name).
#[derive(Default)]
pub(super) struct ConfigData {
    pub(super) config_maps: BTreeMap<(String, String), BTreeMap<String, String>>,
    pub(super) secrets: BTreeMap<(String, String), BTreeMap<String, String>>,
}

impl ConfigData {
    pub(super) fn collect(manifests: &Manifests) -> ConfigData {
        let mut out = ConfigData::default();
        for d in &manifests.documents {
            match &d.resource {
                Resource::ConfigMap(c) => {
                    let key = (
                        c.metadata
                            .namespace
                            .clone()
                            .unwrap_or_else(|| "default".into()),
                        c.metadata.name.clone(),
                    );
                    out.config_maps.insert(key, c.data.clone());
                }
                Resource::Secret(s) => {
                    let key = (
                        s.metadata
                            .namespace
                            .clone()
                            .unwrap_or_else(|| "default".into()),
                        s.metadata.name.clone(),
                    );
                    out.secrets.insert(key, s.decoded_data());
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_is_named_as_cluster_dns_resolves() {
        let s = ServiceDef {
            name: "mysql".into(),
            namespace: "blog-system".into(),
            selector: BTreeMap::new(),
            ports: Vec::new(),
        };
        for host in [
            "mysql.blog-system",
            "mysql.blog-system.svc",
            "mysql.blog-system.svc.cluster.local",
            "mysql.blog-system.svc.cluster.local.",
        ] {
            assert!(s.is_named_by(host, "other"), "{host}");
        }
        assert!(s.is_named_by("mysql", "blog-system"));
        assert!(
            !s.is_named_by("mysql", "other"),
            "a short name is the client's namespace"
        );
        assert!(!s.is_named_by("mysql.other", "blog-system"));
        assert!(!s.is_named_by("mysql.blog-system.svc.cluster", "blog-system"));
    }
}
