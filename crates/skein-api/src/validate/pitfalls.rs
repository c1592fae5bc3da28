//! skein's own analyzers (`SKN` codes): the pitfalls of the seed's troubleshooting chapter
//! that `istioctl analyze` does not catch, and a few it did not notice. Each message says the
//! fix.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::istio::{cx, is_mesh_bound, peer_mode};
use super::{Diagnostic, World};
use crate::Manifests;
use crate::codes::{Code, Severity};
use crate::k8s::{Ingress, IngressBackend, PodTemplateSpec, Rollout};
use crate::networking::{HttpMatchRequest, HttpRoute, VirtualService};
use crate::security::{Action, AuthorizationPolicy, MtlsMode};

/// Methods that change state: running one twice is not the same as running it once.
const WRITES: &[&str] = &["POST", "PUT", "PATCH", "DELETE"];
/// `retryOn` conditions that retry after the upstream may have acted on the request.
const AFTER_SEND: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "retriable-status-codes",
    "retriable-4xx",
    "unavailable",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
];

pub(super) fn run(m: &Manifests, world: &World<'_>, out: &mut Vec<Diagnostic>) {
    let ingress = ingress_backends(m, world);
    out_of_mesh_callers(m, world, &ingress, out);
    virtual_services(m, world, &ingress, out);
    shared_principals(m, world, out);
    rollout_managed(m, out);
}

/// SKN0009: a VirtualService an Argo Rollout's `trafficRouting.istio` manages, written with
/// a canary weight: the Rollout sets the weights as it steps, and a GitOps sync writes these
/// back, so the two fight (the seed's hand edits under Argo CD).
fn rollout_managed(m: &Manifests, out: &mut Vec<Diagnostic>) {
    for (rd, r) in m.docs_of::<Rollout>() {
        let ns = rd.resource.namespace();
        let Some(istio) = r
            .spec
            .strategy
            .as_ref()
            .map(|s| &s["canary"]["trafficRouting"]["istio"])
            .filter(|i| i.is_object())
        else {
            continue;
        };
        let canary = istio["destinationRule"]["canarySubsetName"].as_str();
        let managed = std::iter::once(&istio["virtualService"])
            .chain(istio["virtualServices"].as_array().into_iter().flatten())
            .filter_map(|v| {
                let name = v["name"].as_str()?;
                let routes: Vec<&str> = v["routes"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|r| r.as_str()).collect())
                    .unwrap_or_default();
                Some((name, routes))
            });
        for (name, routes) in managed {
            let Some((d, vs)) = m
                .docs_of::<VirtualService>()
                .find(|(d, vs)| vs.metadata.name == name && d.resource.namespace() == ns)
            else {
                continue;
            };
            for (i, hr) in vs.spec.http.iter().enumerate() {
                if !routes.is_empty() && !hr.name.as_deref().is_some_and(|n| routes.contains(&n)) {
                    continue;
                }
                for (j, dest) in hr.route.iter().enumerate() {
                    let is_canary = match canary {
                        Some(c) => dest.destination.subset.as_deref() == Some(c),
                        None => j > 0,
                    };
                    if is_canary && dest.weight.unwrap_or(0) > 0 {
                        cx(d, out).report(
                            Code::Skn0009,
                            Severity::Warning,
                            &format!("spec.http[{i}].route[{j}].weight"),
                            format!(
                                "Rollout {} manages the weights of this route (strategy.canary.trafficRouting.istio): it sets them as it steps, and a GitOps sync writes back the {} written here, so the two fight. Keep the manifests at the stable weights (canary 0) and move traffic with the Rollout's steps (setWeight, promote)",
                                r.metadata.name,
                                dest.weight.unwrap_or(0)
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// Services (FQDN) a Kubernetes Ingress sends to: their callers are outside the mesh (the
/// seed's NGINX ingress has no sidecar and no identity).
fn ingress_backends(m: &Manifests, world: &World<'_>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (d, i) in m.docs_of::<Ingress>() {
        let ns = d.resource.namespace();
        let backends = i.spec.default_backend.iter().chain(
            i.spec
                .rules
                .iter()
                .filter_map(|r| r.http.as_ref())
                .flat_map(|h| h.paths.iter().map(|p| &p.backend)),
        );
        for b in backends {
            if let IngressBackend {
                service: Some(s), ..
            } = b
            {
                out.insert(world.resolve(&s.name, ns));
            }
        }
    }
    out
}

/// The pod templates the Services in `hosts` select.
fn pods_of<'w, 'a>(
    world: &'w World<'a>,
    hosts: &BTreeSet<String>,
) -> Vec<(String, &'w str, &'a PodTemplateSpec)> {
    let mut out = Vec::new();
    for h in hosts {
        let Some(svc) = world.services.get(h) else {
            continue;
        };
        let Some(sel) = svc.spec.selector.as_ref().filter(|s| !s.is_empty()) else {
            continue;
        };
        let ns = svc
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(crate::DEFAULT_NAMESPACE);
        for p in world.pods_matching(ns, |l| sel.iter().all(|(k, v)| l.get(k) == Some(v))) {
            out.push((h.clone(), p.1.as_str(), p.2));
        }
    }
    out
}

/// SKN0002 (STRICT mTLS) and SKN0003 (ALLOW rules on identities) for workloads a Kubernetes
/// Ingress calls.
fn out_of_mesh_callers(
    m: &Manifests,
    world: &World<'_>,
    ingress: &BTreeSet<String>,
    out: &mut Vec<Diagnostic>,
) {
    let mut strict_reported = HashSet::new();
    let mut authz_reported = HashSet::new();
    for (host, workload, t) in pods_of(world, ingress) {
        let ns = host
            .split('.')
            .nth(1)
            .unwrap_or(crate::DEFAULT_NAMESPACE)
            .to_string();
        let labels = &t.metadata.labels;
        if let Some((pa, MtlsMode::Strict)) = peer_mode(m, &ns, labels)
            && strict_reported.insert(pa.resource.display_name())
        {
            cx(pa, out).report(
                Code::Skn0002,
                Severity::Error,
                "spec",
                format!(
                    "STRICT mTLS on {workload}, which the Ingress calls from outside the mesh with plain text: its requests fail (502). Set PERMISSIVE for this workload (a PeerAuthentication with a selector, or portLevelMtls on its port), or put the ingress in the mesh"
                ),
            );
        }
        for (d, ap) in m.docs_of::<AuthorizationPolicy>() {
            if d.resource.namespace() != ns
                || !matches!(ap.spec.action, None | Some(Action::Allow))
                || ap
                    .spec
                    .selector
                    .as_ref()
                    .is_some_and(|s| !s.matches(labels))
            {
                continue;
            }
            let Some(rules) = &ap.spec.rules else {
                continue;
            };
            // Some rule must match a caller without identity for the ingress to get in.
            let needs_identity = |r: &crate::security::Rule| {
                r.from.as_ref().is_some_and(|from| {
                    !from.is_empty()
                        && from.iter().all(|f| {
                            f.source.as_ref().is_some_and(|s| {
                                s.principals.is_some()
                                    || s.namespaces.is_some()
                                    || s.service_accounts.is_some()
                                    || s.trust_domains.is_some()
                            })
                        })
                })
            };
            if !rules.is_empty()
                && rules.iter().all(needs_identity)
                && authz_reported.insert(d.resource.display_name())
            {
                cx(d, out).report(
                    Code::Skn0003,
                    Severity::Error,
                    "spec.rules",
                    format!(
                        "every rule matches source principals or namespaces, but {workload} is called by the Ingress from outside the mesh, which has no identity: its requests get 403 \"RBAC: access denied\". Allow the ingress by port or path (a rule with only `to`), or by ipBlocks, or put the ingress in the mesh"
                    ),
                );
            }
        }
    }
}

fn methods_of(m: &HttpMatchRequest) -> Option<Vec<String>> {
    let sm = m.method.as_ref()?;
    if let Some(e) = &sm.exact {
        return Some(vec![e.to_ascii_uppercase()]);
    }
    if let Some(p) = &sm.prefix {
        return Some(
            ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]
                .iter()
                .filter(|m| m.starts_with(&p.to_ascii_uppercase()))
                .map(|m| m.to_string())
                .collect(),
        );
    }
    // A regex: assume it may match anything.
    None
}

/// Whether `route` carries write methods: no match restricts methods to reads.
fn carries_writes(route: &HttpRoute) -> bool {
    if route.match_.is_empty() {
        return true;
    }
    route.match_.iter().any(|m| match methods_of(m) {
        None => true,
        Some(ms) => ms.iter().any(|m| WRITES.contains(&m.as_str())),
    })
}

/// Whether a match names a write method explicitly.
fn names_writes(route: &HttpRoute) -> bool {
    route
        .match_
        .iter()
        .filter_map(methods_of)
        .any(|ms| ms.iter().any(|m| WRITES.contains(&m.as_str())))
}

/// SKN0004 (fault nobody sees), SKN0005 (host to PassthroughCluster), SKN0006 (mirror of
/// writes), SKN0008 (retries on writes).
fn virtual_services(
    m: &Manifests,
    world: &World<'_>,
    ingress: &BTreeSet<String>,
    out: &mut Vec<Diagnostic>,
) {
    // Services some workload of the mesh calls: VirtualServices bound to the mesh apply at
    // the caller's sidecar, so only in-mesh callers go through them.
    for (d, vs) in m.docs_of::<VirtualService>() {
        let ns = d.resource.namespace();
        let mesh = is_mesh_bound(vs);
        let hosts: Vec<String> = vs.spec.hosts.iter().map(|h| world.resolve(h, ns)).collect();
        if mesh && vs.spec.gateways.is_empty() {
            for (i, (h, written)) in hosts.iter().zip(&vs.spec.hosts).enumerate() {
                if !h.contains('*') && !world.host_known(h) {
                    cx(d, out).report(
                        Code::Skn0005,
                        Severity::Warning,
                        &format!("spec.hosts[{i}]"),
                        format!(
                            "host \"{written}\" resolves to {h}, which no Service or ServiceEntry declares: a request with this Host goes to PassthroughCluster and this VirtualService never applies. Use the Service's name (or its FQDN), or declare the host with a ServiceEntry"
                        ),
                    );
                }
            }
        }
        for (i, r) in vs.spec.http.iter().enumerate() {
            let rp = format!("spec.http[{i}]");
            if r.fault.is_some()
                && mesh
                && !hosts.is_empty()
                && hosts.iter().all(|h| ingress.contains(h))
            {
                cx(d, out).report(
                    Code::Skn0004,
                    Severity::Warning,
                    &format!("{rp}.fault"),
                    format!(
                        "the fault is injected by the calling sidecar, but {} is called by the Ingress from outside the mesh, so no client sees it. Put the fault on the VirtualService of the next hop (the service this one calls), or bind this VirtualService to the gateway the traffic enters by",
                        vs.spec.hosts.join(", ")
                    ),
                );
            }
            let mirrors = r
                .mirror
                .iter()
                .map(|m| (m, "mirror"))
                .chain(r.mirrors.iter().map(|m| (&m.destination, "mirrors")));
            for (mirror, field) in mirrors {
                let mhost = world.resolve(&mirror.host, ns);
                let shares = r.route.iter().any(|rd| {
                    world.resolve(&rd.destination.host, ns) == mhost
                        && rd.destination.subset != mirror.subset
                });
                if shares && carries_writes(r) {
                    cx(d, out).report(
                        Code::Skn0006,
                        Severity::Warning,
                        &format!("{rp}.{field}"),
                        format!(
                            "this route mirrors every method to {}{}, which shares the primary's backends: each mirrored POST, PUT or DELETE runs twice. Mirror only reads (a route matching method GET or HEAD with the mirror, and the writes on a route without it), or mirror to a copy with its own database",
                            mirror.host,
                            mirror.subset.as_deref().map(|s| format!(" subset {s}")).unwrap_or_default()
                        ),
                    );
                }
            }
            if let Some(retry) = &r.retries
                && retry.attempts.unwrap_or(2) > 0
                && names_writes(r)
            {
                let on = retry.retry_on.as_deref().unwrap_or(
                    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
                );
                let unsafe_on: Vec<&str> = on
                    .split(',')
                    .map(str::trim)
                    .filter(|c| AFTER_SEND.contains(c))
                    .collect();
                if !unsafe_on.is_empty() {
                    cx(d, out).report(
                        Code::Skn0008,
                        Severity::Warning,
                        &format!("{rp}.retries"),
                        format!(
                            "this route carries non-idempotent methods and retries on {}, after the upstream may have acted: a write can run twice. Retry writes only on connect-failure,refused-stream, or set retries.attempts: 0 on the route for writes",
                            unsafe_on.join(",")
                        ),
                    );
                }
            }
        }
    }
}

/// SKN0007: an ALLOW rule on a principal that pods of several apps run as.
fn shared_principals(m: &Manifests, world: &World<'_>, out: &mut Vec<Diagnostic>) {
    // spiffe principal -> apps (the `app` label, else the workload) running as it.
    let mut by_principal: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (ns, workload, t, _) in &world.pods {
        let sa = t
            .spec
            .service_account_name
            .as_deref()
            .or(t.spec.service_account.as_deref())
            .unwrap_or("default");
        let app = t
            .metadata
            .labels
            .get("app")
            .cloned()
            .unwrap_or_else(|| workload.clone());
        by_principal
            .entry(format!("cluster.local/ns/{ns}/sa/{sa}"))
            .or_default()
            .insert(app);
    }
    for (d, ap) in m.docs_of::<AuthorizationPolicy>() {
        if !matches!(ap.spec.action, None | Some(Action::Allow)) {
            continue;
        }
        for (i, r) in ap.spec.rules.iter().flatten().enumerate() {
            for (j, f) in r.from.iter().flatten().enumerate() {
                let Some(principals) = f.source.as_ref().and_then(|s| s.principals.as_ref()) else {
                    continue;
                };
                for (k, p) in principals.iter().enumerate() {
                    let p = p.strip_prefix("spiffe://").unwrap_or(p);
                    if let Some(apps) = by_principal.get(p)
                        && apps.len() > 1
                    {
                        let apps = apps.iter().cloned().collect::<Vec<_>>().join(", ");
                        cx(d, out).report(
                            Code::Skn0007,
                            Severity::Warning,
                            &format!("spec.rules[{i}].from[{j}].source.principals[{k}]"),
                            format!(
                                "principal {p} is shared by several apps ({apps}): the rule allows all of them, not only the caller it was written for. Give the caller a ServiceAccount of its own (serviceAccountName) and allow that principal"
                            ),
                        );
                    }
                }
            }
        }
    }
}
