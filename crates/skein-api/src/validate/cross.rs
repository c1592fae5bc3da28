//! Checks across objects, as `istioctl analyze` makes them: references to hosts and subsets
//! that nothing declares, selectors that match no workload, objects defined twice.

use std::collections::HashMap;

use skein_snapshot::names;

use super::{Cx, Diagnostic, World, labels_text};
use crate::codes::{Code, Severity};
use crate::k8s::{IngressServiceBackend, IntOrString, Service};
use crate::networking::{Destination, Subset};
use crate::types::WorkloadSelector;
use crate::{Document, Manifests};

/// IST0127 for policies whose selector matches no pod template in the namespace.
pub(super) fn selector_matches_workloads(
    cx: &mut Cx<'_>,
    path: &str,
    selector: &Option<WorkloadSelector>,
    world: &World<'_>,
) {
    if let Some(s) = selector
        && !s.match_labels.is_empty()
        && world
            .pods_matching(cx.namespace(), |l| s.matches(l))
            .is_empty()
    {
        let text = labels_text(&s.match_labels);
        cx.report(
            Code::Ist0127,
            Severity::Warning,
            path,
            format!("No matching workloads for this resource with the following labels: {text}"),
        );
    }
}

pub(super) fn duplicates(m: &Manifests, out: &mut Vec<Diagnostic>) {
    let mut first: HashMap<(&str, &str, &str, &str), &Document> = HashMap::new();
    for d in &m.documents {
        let r = &d.resource;
        if r.name().is_empty() {
            continue;
        }
        // The group too: Istio's and the Gateway API's Gateway are different kinds.
        let key = (r.group(), r.kind(), r.namespace(), r.name());
        match first.get(&key) {
            None => {
                first.insert(key, d);
            }
            Some(f) => {
                out.push(Diagnostic {
                    code: Code::Ist0106,
                    severity: Severity::Error,
                    source: d.source_of("metadata.name"),
                    object: r.display_name(),
                    path: String::new(),
                    message: format!(
                        "duplicate {}: first defined at {}",
                        r.display_name(),
                        f.source_of("metadata.name")
                    ),
                });
            }
        }
    }
}

/// A Service whose selector matches no pod template in the manifests, or whose named
/// `targetPort` no selected container declares.
pub(super) fn service_selects_pods(cx: &mut Cx<'_>, s: &Service, world: &World<'_>) {
    let spec = &s.spec;
    let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
        return;
    };
    let pods = world.pods_matching(cx.namespace(), |l| {
        selector.iter().all(|(k, v)| l.get(k) == Some(v))
    });
    if pods.is_empty() {
        let ns = cx.namespace().to_string();
        cx.warn(
            "spec.selector",
            format!(
                "selector {} matches no pods of any Deployment or Rollout in namespace {ns}",
                labels_text(selector)
            ),
        );
        return;
    }
    for (i, p) in spec.ports.iter().enumerate() {
        if let Some(IntOrString::String(name)) = &p.target_port {
            let found = pods.iter().any(|(_, _, t, _)| {
                t.spec
                    .containers
                    .iter()
                    .flat_map(|c| &c.ports)
                    .any(|cp| cp.name.as_deref() == Some(name))
            });
            if !found {
                let workloads = pods
                    .iter()
                    .map(|(_, w, _, _)| w.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                cx.warn(
                    &format!("spec.ports[{i}].targetPort"),
                    format!("targetPort \"{name}\" is not the name of a containerPort of the selected pods ({workloads})"),
                );
            }
        }
    }
}

/// The Service an Ingress backend names, and its port.
pub(super) fn ingress_backend_exists(
    cx: &mut Cx<'_>,
    path: &str,
    port_path: &str,
    svc: &IngressServiceBackend,
    world: &World<'_>,
) {
    let ns = cx.namespace().to_string();
    match world.services.get(&names::fqdn(&svc.name, &ns)) {
        None => cx.warn(
            &format!("{path}.service.name"),
            format!("Service {ns}/{} is not in the manifests", svc.name),
        ),
        Some(s) => {
            let ok = s
                .spec
                .ports
                .iter()
                .any(|sp| match (&svc.port.number, &svc.port.name) {
                    (Some(n), _) => sp.port == *n,
                    (None, Some(name)) => sp.name.as_deref() == Some(name),
                    _ => true,
                });
            if !ok {
                cx.warn(
                    port_path,
                    format!("Service {ns}/{} has no such port", svc.name),
                );
            }
        }
    }
}

/// Existence of destination hosts and subsets (istioctl IST0101).
pub(super) fn destination_exists(
    cx: &mut Cx<'_>,
    path: &str,
    d: &Destination,
    world: &World<'_>,
    mirror: bool,
) {
    if d.host.is_empty() || d.host.contains('*') {
        return;
    }
    let ns = cx.namespace().to_string();
    let host = world.resolve(&d.host, &ns);
    if !world.host_known(&host) {
        let what = if mirror { "mirror host" } else { "host" };
        let msg = format!("Referenced {what} not found: \"{}\"", d.host);
        // Errors for Kubernetes Service names, warnings for other hosts.
        let service_name = host
            .strip_suffix(names::CLUSTER_DOMAIN)
            .is_some_and(|h| h.ends_with(".svc."));
        let level = if service_name {
            Severity::Error
        } else {
            Severity::Warning
        };
        cx.report(Code::Ist0101, level, &format!("{path}.host"), msg);
    }
    if let Some(subset) = &d.subset
        && !world.subsets.contains(&(host, subset.clone()))
    {
        let what = if mirror {
            "mirror+subset in destinationrule"
        } else {
            "host+subset in destinationrule"
        };
        cx.report(
            Code::Ist0101,
            Severity::Error,
            &format!("{path}.subset"),
            format!("Referenced {what} not found: \"{}+{subset}\"", d.host),
        );
    }
}

/// IST0173: a subset whose labels select none of the Service's pods.
pub(super) fn subset_selects_pods(
    cx: &mut Cx<'_>,
    sp: &str,
    s: &Subset,
    service: Option<&Service>,
    world: &World<'_>,
) {
    if let Some(selector) = service
        .and_then(|s| s.spec.selector.as_ref())
        .filter(|s| !s.is_empty())
    {
        let ns = cx.namespace().to_string();
        let pods = world.pods_matching(&ns, |l| {
            selector
                .iter()
                .chain(s.labels.iter())
                .all(|(k, v)| l.get(k) == Some(v))
        });
        if pods.is_empty() {
            let from_rollout = world
                .pods_matching(&ns, |l| selector.iter().all(|(k, v)| l.get(k) == Some(v)))
                .iter()
                .any(|p| p.3);
            let msg = format!(
                "The Subset {} defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream).",
                s.name
            );
            // Argo Rollouts adds subset labels to pods at run time.
            let level = if from_rollout {
                Severity::Warning
            } else {
                Severity::Error
            };
            cx.report(Code::Ist0173, level, sp, msg)
        }
    }
}
