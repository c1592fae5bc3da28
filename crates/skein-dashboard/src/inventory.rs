//! The mesh's namespaces, workloads, pods (with their proxies) and Services, from the runtime's
//! and the control plane's status files and the manifests.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value as Json, json};
use skein_api::Labels;
use skein_runtime::PodStatus;

use crate::config;
use crate::state::Snapshot;

/// Kiali's cluster name for a single cluster.
pub const CLUSTER: &str = "Kubernetes";
/// The SPIFFE trust domain.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// Namespaces that have pods or objects, sorted.
pub fn namespace_names(snap: &Snapshot) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = snap
        .status
        .pods
        .iter()
        .map(|p| p.namespace.clone())
        .collect();
    for d in snap.manifests.iter() {
        if d.resource.is_namespaced() {
            out.insert(d.resource.namespace().to_string());
        } else if let skein_api::Resource::Namespace(n) = &d.resource {
            out.insert(n.metadata.name.clone());
        }
    }
    out
}

pub fn has_namespace(snap: &Snapshot, ns: &str) -> bool {
    namespace_names(snap).contains(ns)
}

/// `GET /api/namespaces`.
pub fn namespaces(snap: &Snapshot) -> Json {
    let list: Vec<Json> = namespace_names(snap)
        .into_iter()
        .map(|name| {
            let meta = snap
                .manifests
                .namespaces()
                .find(|n| n.metadata.name == name)
                .map(|n| (n.metadata.labels.clone(), n.metadata.annotations.clone()))
                .unwrap_or_default();
            json!({"name": name, "cluster": CLUSTER, "labels": meta.0, "annotations": meta.1})
        })
        .collect();
    Json::Array(list)
}

/// One workload: its pods, by the runtime's status.
#[derive(Debug, Clone)]
pub struct Workload<'a> {
    pub name: String,
    pub namespace: String,
    pub labels: Labels,
    pub kind: &'static str,
    pub pods: Vec<&'a PodStatus>,
    /// Replicas the manifests ask for.
    pub desired: usize,
}

impl Workload<'_> {
    pub fn app(&self) -> Option<&str> {
        self.labels.get("app").map(String::as_str)
    }
    pub fn version(&self) -> Option<&str> {
        self.labels.get("version").map(String::as_str)
    }
}

/// The workloads of `ns` (every workload when `ns` is None), sorted by name.
pub fn workloads<'a>(snap: &'a Snapshot, ns: Option<&str>) -> Vec<Workload<'a>> {
    let mut by: BTreeMap<(String, String), Workload<'a>> = BTreeMap::new();
    for p in &snap.status.pods {
        if ns.is_some_and(|n| n != p.namespace) {
            continue;
        }
        let w = by
            .entry((p.namespace.clone(), p.workload.clone()))
            .or_insert_with(|| Workload {
                name: p.workload.clone(),
                namespace: p.namespace.clone(),
                labels: p.labels.clone(),
                kind: "Deployment",
                pods: Vec::new(),
                desired: 0,
            });
        w.pods.push(p);
    }
    for w in by.values_mut() {
        w.labels.retain(|k, _| k != "pod-template-hash");
        if snap
            .manifests
            .rollouts()
            .any(|r| r.metadata.name == w.name && r.metadata.namespace_or_default() == w.namespace)
        {
            w.kind = "Rollout";
        }
        w.desired = w.pods.len();
    }
    by.into_values().collect()
}

pub fn workload<'a>(snap: &'a Snapshot, ns: &str, name: &str) -> Option<Workload<'a>> {
    workloads(snap, Some(ns))
        .into_iter()
        .find(|w| w.name == name)
}

/// The control plane's view of one proxy.
fn proxy_json(snap: &Snapshot, pod: &PodStatus, cert: Option<&Json>) -> Json {
    let Some(proxy) = &pod.proxy else {
        return Json::Null;
    };
    let cp = snap.control.as_ref().and_then(|c| c.proxies.get(&pod.name));
    let acked = cp.and_then(|p| p.acked.clone());
    let control_version = snap.control_version().map(str::to_string);
    let synced = acked.is_some() && acked == control_version;
    let sa = if pod.service_account.is_empty() {
        "default"
    } else {
        pod.service_account.as_str()
    };
    let identity = cert
        .and_then(|c| c["identity"]["identity"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("spiffe://{TRUST_DOMAIN}/ns/{}/sa/{sa}", pod.namespace));
    let expiry = cert
        .and_then(|c| c["identity"]["not_after"].as_i64())
        .and_then(rfc3339);
    json!({
        "mode": proxy.mode,
        "configVersion": acked,
        "controlVersion": control_version,
        "synced": synced,
        "connected": cp.is_some_and(|p| p.connected),
        "nack": cp.and_then(|p| p.nack.as_ref()).map(|n| json!({"version": n.version, "error": n.error})),
        "identity": identity,
        "certExpiry": expiry,
        "admin": proxy.admin,
    })
}

pub fn rfc3339(unix: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

fn pod_json(snap: &Snapshot, pod: &PodStatus, cert: Option<&Json>) -> Json {
    json!({
        "name": pod.name,
        "ip": pod.ip,
        "state": pod.state,
        "ready": pod.ready,
        "restarts": pod.restarts,
        "containers": pod.containers.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        "serviceAccount": pod.service_account,
        "proxy": proxy_json(snap, pod, cert),
    })
}

/// A workload's health from its pods alone (Kiali: no pods ready is a failure, fewer than
/// desired or a proxy out of sync is degraded).
pub fn pod_health(w: &Workload<'_>, snap: &Snapshot) -> crate::health::Status {
    crate::health::pods_status(&workload_status(w, snap))
}

/// Kiali's `workloadStatuses` entry.
pub fn workload_status(w: &Workload<'_>, snap: &Snapshot) -> crate::health::WorkloadStatus {
    let control_version = snap.control_version();
    let synced = w
        .pods
        .iter()
        .filter(|p| p.proxy.is_some())
        .filter(|p| {
            let acked = snap
                .control
                .as_ref()
                .and_then(|c| c.proxies.get(&p.name))
                .and_then(|s| s.acked.as_deref());
            acked.is_some() && acked == control_version
        })
        .count();
    crate::health::WorkloadStatus {
        name: w.name.clone(),
        desired_replicas: w.desired,
        current_replicas: w.pods.iter().filter(|p| p.pid != 0).count(),
        available_replicas: w.pods.iter().filter(|p| p.ready).count(),
        synced_proxies: if w.pods.iter().any(|p| p.proxy.is_some()) {
            synced as i64
        } else {
            -1
        },
    }
}

/// `GET /api/namespaces/{ns}/workloads`.
pub fn workloads_json(snap: &Snapshot, ns: &str) -> Json {
    Json::Array(
        workloads(snap, Some(ns))
            .iter()
            .map(|w| {
                json!({
                    "name": w.name,
                    "namespace": w.namespace,
                    "labels": w.labels,
                    "app": w.app(),
                    "version": w.version(),
                    "kind": w.kind,
                    "pods": w.pods.iter().map(|p| pod_json(snap, p, None)).collect::<Vec<_>>(),
                    "health": pod_health(w, snap).as_str(),
                    "rollout": rollout_summary(snap, w),
                })
            })
            .collect(),
    )
}

/// `GET /api/namespaces/{ns}/workloads/{w}`; `certs` are the proxies' `/control` answers by
/// pod name.
pub fn workload_json(snap: &Snapshot, w: &Workload<'_>, certs: &BTreeMap<String, Json>) -> Json {
    json!({
        "name": w.name,
        "namespace": w.namespace,
        "labels": w.labels,
        "app": w.app(),
        "version": w.version(),
        "kind": w.kind,
        "pods": w.pods.iter().map(|p| pod_json(snap, p, certs.get(&p.name))).collect::<Vec<_>>(),
        "services": config::services_selecting(snap, &w.namespace, &w.labels),
        "istioConfig": config::workload_refs(snap, &w.namespace, &w.labels),
        "canary": config::canary(snap, &w.namespace, &w.labels),
        "health": pod_health(w, snap).as_str(),
        "workloadStatus": workload_status(w, snap),
        "rollout": rollout_of(snap, w),
    })
}

/// A Rollout workload's full status (`crate::rollout`), else null.
fn rollout_of<'s>(snap: &'s Snapshot, w: &Workload<'_>) -> Option<&'s Json> {
    snap.rollouts.get(&(w.namespace.clone(), w.name.clone()))
}

/// What the workloads list shows of a Rollout: its phase, step and weight.
fn rollout_summary(snap: &Snapshot, w: &Workload<'_>) -> Json {
    match rollout_of(snap, w) {
        None => Json::Null,
        Some(r) => summary(r),
    }
}

fn summary(r: &Json) -> Json {
    json!({
        "name": r["name"],
        "namespace": r["namespace"],
        "phase": r["phase"],
        "icon": r["icon"],
        "message": r["message"],
        "currentStepIndex": r["currentStepIndex"],
        "stepCount": r["stepCount"],
        "setWeight": r["setWeight"],
        "actualWeight": r["actualWeight"],
        "error": r["error"],
    })
}

/// The overview's line per Rollout of `ns`: its phase, step and weight.
pub fn rollout_summaries(snap: &Snapshot, ns: &str) -> Vec<Json> {
    snap.rollouts
        .iter()
        .filter(|((n, _), _)| n == ns)
        .map(|(_, v)| summary(v))
        .collect()
}

/// `GET /api/namespaces/{ns}/rollouts`: every Rollout of `ns` with its full status.
pub fn rollouts_json(snap: &Snapshot, ns: &str) -> Json {
    Json::Array(
        snap.rollouts
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|(_, v)| v.clone())
            .collect(),
    )
}

/// `GET /api/namespaces/{ns}/services` (and one of them).
pub fn services_json(snap: &Snapshot, ns: &str, only: Option<&str>) -> Vec<Json> {
    let mut out = Vec::new();
    for s in snap.status.services.iter().filter(|s| s.namespace == ns) {
        if only.is_some_and(|o| o != s.name) {
            continue;
        }
        let def = snap
            .manifests
            .services()
            .find(|d| d.metadata.name == s.name && d.metadata.namespace_or_default() == ns);
        let selector = def
            .and_then(|d| d.spec.selector.clone())
            .unwrap_or_default();
        let ports: Vec<Json> = match def {
            Some(d) => d
                .spec
                .ports
                .iter()
                .map(|p| json!({"name": p.name, "port": p.port, "protocol": p.protocol.as_ref().map(|p| format!("{p:?}").to_uppercase()).unwrap_or_else(|| "TCP".into())}))
                .collect(),
            None => s.ports.iter().map(|p| json!({"port": p})).collect(),
        };
        let workloads: Vec<String> = workloads(snap, Some(ns))
            .iter()
            .filter(|w| {
                !selector.is_empty() && selector.iter().all(|(k, v)| w.labels.get(k) == Some(v))
            })
            .map(|w| w.name.clone())
            .collect();
        out.push(json!({
            "name": s.name,
            "namespace": s.namespace,
            "clusterIP": s.cluster_ip,
            "ports": ports,
            "selector": selector,
            "endpoints": s.endpoints,
            "workloads": workloads,
            "istioConfig": config::service_refs(snap, ns, &s.name),
        }));
    }
    out
}
