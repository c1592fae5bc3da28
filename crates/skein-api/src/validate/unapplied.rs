//! Kinds skein keeps but does not apply (`crate::unapplied`): a SKN0301 warning for each,
//! saying what to use instead where skein has an equivalent, and WorkloadGroup's own checks.

use super::Cx;
use crate::Resource;
use crate::codes::{Code, Severity};
use crate::unapplied::WorkloadGroup;

/// Why `resource` has no effect in skein, or `None` for a kind skein applies.
pub(super) fn not_applied_reason(resource: &Resource) -> Option<String> {
    Some(match resource {
        Resource::CustomObject(o) => {
            return Some(format!(
                "skein keeps {} objects (a CustomResourceDefinition in the manifests defines the kind) but does not act on them: no controller for them runs",
                o.kind
            ));
        }
        Resource::CronJob(_) => {
            "skein does not schedule CronJobs: the local runtime runs no jobs on a schedule. Run the job's command once as a pod of the mesh with `skein exec`"
        }
        Resource::NetworkPolicy(_) => {
            "skein does not enforce NetworkPolicy: in process mode every pod can reach every other. Use an AuthorizationPolicy, which the mesh enforces for the pods it injects"
        }
        Resource::IstioOperator(_) => {
            "skein does not install Istio from an IstioOperator: `skein up` runs its own control plane and gateway. Put mesh settings (meshConfig) in the `istio` ConfigMap of istio-system, which skein reads"
        }
        Resource::HorizontalPodAutoscaler(_) => {
            "skein does not autoscale: the workload runs the replicas its spec says"
        }
        Resource::EnvoyFilter(_) => {
            "skein does not apply EnvoyFilter: its patches change Envoy's own configuration, and skein's proxy is not Envoy. Use the Istio API for what it covers: a VirtualService for headers, retries, timeouts, faults and mirroring; a DestinationRule for connection pools, outlier detection and load balancing; Telemetry for access logs, metrics and tracing"
        }
        Resource::WasmPlugin(_) => {
            "skein does not apply WasmPlugin: skein's proxy runs no Wasm modules. Use the Istio API for what it covers: AuthorizationPolicy for access control, a VirtualService's `headers` for header changes, Telemetry for metrics and access logs"
        }
        Resource::TrafficExtension(_) => {
            "skein does not apply TrafficExtension: skein's proxy runs no Wasm modules and no Lua code. Use the Istio API for what it covers: AuthorizationPolicy for access control, a VirtualService's `headers` for header changes, Telemetry for metrics and access logs"
        }
        Resource::ProxyConfig(_) => {
            "skein does not apply ProxyConfig: it tunes an Envoy sidecar (concurrency, environment variables, image), which skein's sidecar does not take; skein's sidecar sizes itself"
        }
        Resource::WorkloadGroup(_) => {
            "skein does not apply WorkloadGroup: VM workloads join the mesh through istio-agent, which skein does not run. Reach a VM by a ServiceEntry with its address in `endpoints`"
        }
        _ => return None,
    }.to_string())
}

pub(super) fn warn_not_applied(cx: &mut Cx<'_>) {
    if let Some(reason) = not_applied_reason(&cx.doc.resource) {
        cx.report(Code::Skn0301, Severity::Warning, "", reason);
    }
}

/// Istio's `ValidateWorkloadGroup`: a template is required, and a probe has one handler.
pub(super) fn validate_workload_group(cx: &mut Cx<'_>, wg: &WorkloadGroup) {
    match &wg.spec.template {
        None => cx.error("spec.template", "template is required"),
        Some(t) => {
            if t.address.as_deref().is_some_and(|a| !a.is_empty()) {
                cx.error(
                    "spec.template.address",
                    "address must not be set in a WorkloadGroup template",
                );
            }
            for (name, port) in &t.ports {
                if !(1..=65535).contains(port) {
                    cx.error(
                        &format!("spec.template.ports.{name}"),
                        format!("port number {port} must be in the range 1..65535"),
                    );
                }
            }
        }
    }
    if let Some(p) = &wg.spec.probe {
        let handlers = [
            p.http_get.is_some(),
            p.tcp_socket.is_some(),
            p.exec.is_some(),
            p.grpc.is_some(),
        ];
        match handlers.iter().filter(|h| **h).count() {
            0 => cx.error("spec.probe", "must define a health check method"),
            1 => {}
            _ => cx.error("spec.probe", "only one health check method may be set"),
        }
    }
}
