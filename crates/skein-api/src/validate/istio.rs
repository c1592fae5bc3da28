//! istioctl's analyzers that apply to what skein models, with Istio's codes, levels and
//! wording (`pkg/config/analysis/analyzers`, messages from `msg/messages.yaml`).

use std::collections::BTreeMap;

use super::{Cx, Diagnostic, World};
use crate::codes::{Code, Severity};
use crate::k8s::{Namespace, Service};
use skein_snapshot::names;

use crate::networking::{
    ClientTlsMode, ClientTlsSettings, DestinationRule, Gateway, Sidecar, VirtualService,
};
use crate::security::{MtlsMode, PeerAuthentication};
use crate::{Document, Manifests, ResourceKind};

/// Namespaces istioctl does not expect to be injected.
const SYSTEM_NAMESPACES: &[&str] = &[
    "istio-system",
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// Port name prefixes Istio reads a protocol from (`protocol.Parse`).
const PROTOCOLS: &[&str] = &[
    "grpc",
    "grpc-web",
    "http",
    "http2",
    "https",
    "mongo",
    "mysql",
    "redis",
    "tcp",
    "tls",
    "udp",
    "unsupported",
];

pub(super) fn cx<'a>(doc: &'a Document, out: &'a mut Vec<Diagnostic>) -> Cx<'a> {
    Cx {
        doc,
        object: doc.resource.display_name(),
        out,
    }
}

pub(super) fn run(m: &Manifests, world: &World<'_>, out: &mut Vec<Diagnostic>) {
    namespace_injection(m, out);
    port_names(m, out);
    mesh_host_conflicts(m, world, out);
    certificate_verification(m, out);
    unreachable_rules(m, out);
    mtls_conflicts(m, world, out);
    unknown_annotations(m, out);
    destination_ports(m, world, out);
    gateways(m, out);
    sidecars(m, world, out);
    gateway_service_ports(m, world, out);
}

/// IST0162: a Gateway server port that no Service of the gateway's pods targets. Only when
/// the manifests run pods the selector matches (skein's own gateway is not in them).
fn gateway_service_ports(m: &Manifests, world: &World<'_>, out: &mut Vec<Diagnostic>) {
    for (d, g) in m.docs_of::<Gateway>() {
        let sel = &g.spec.selector;
        if sel.is_empty() {
            continue;
        }
        let pods: Vec<_> = world
            .pods
            .iter()
            .filter(|p| {
                sel.iter()
                    .all(|(k, v)| p.2.metadata.labels.get(k) == Some(v))
            })
            .collect();
        if pods.is_empty() {
            continue;
        }
        let mut targets = Vec::new();
        for (fqdn, svc) in &world.services {
            let Some(ssel) = svc.spec.selector.as_ref().filter(|s| !s.is_empty()) else {
                continue;
            };
            let sns = fqdn.split('.').nth(1).unwrap_or_default();
            for p in pods.iter().filter(|p| {
                p.0 == sns
                    && ssel
                        .iter()
                        .all(|(k, v)| p.2.metadata.labels.get(k) == Some(v))
            }) {
                for sp in &svc.spec.ports {
                    let n = match &sp.target_port {
                        None => Some(sp.port),
                        Some(crate::IntOrString::Int(n)) => Some(*n),
                        Some(crate::IntOrString::String(name)) => {
                            p.2.spec
                                .containers
                                .iter()
                                .flat_map(|c| &c.ports)
                                .find(|cp| cp.name.as_deref() == Some(name))
                                .map(|cp| cp.container_port)
                        }
                    };
                    targets.extend(n);
                }
            }
        }
        for (i, s) in g.spec.servers.iter().enumerate() {
            let port = i64::from(s.port.number);
            if !targets.iter().any(|t| i64::from(*t) == port) {
                cx(d, out).report(
                    Code::Ist0162,
                    Severity::Warning,
                    &format!("spec.servers[{i}].port.number"),
                    format!(
                        "The gateway is listening on a target port (port {port}) that is not defined in the Service associated with its workload instances (Pod selector {}). If you need to access the gateway port through the gateway Service, it will not be available.",
                        super::labels_text(sel)
                    ),
                );
            }
        }
    }
}

/// IST0110 (two Sidecars select one workload) and IST0111 (several Sidecars without a
/// selector in a namespace).
fn sidecars(m: &Manifests, world: &World<'_>, out: &mut Vec<Diagnostic>) {
    let all: Vec<(&Document, &Sidecar)> = m.docs_of::<Sidecar>().collect();
    let mut namespaces: Vec<&str> = all.iter().map(|(d, _)| d.resource.namespace()).collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    for ns in namespaces {
        let here: Vec<_> = all
            .iter()
            .filter(|(d, _)| d.resource.namespace() == ns)
            .collect();
        let unselected: Vec<_> = here
            .iter()
            .filter(|(_, s)| {
                s.spec
                    .workload_selector
                    .as_ref()
                    .is_none_or(|w| w.labels.is_empty())
            })
            .collect();
        if unselected.len() > 1 {
            let names = unselected
                .iter()
                .map(|(_, s)| s.metadata.name.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            for (d, _) in &unselected {
                cx(d, out).report(
                    Code::Ist0111,
                    Severity::Error,
                    "metadata.name",
                    format!(
                        "The Sidecars [{names}] in namespace {ns:?} have no workload selector, which can lead to undefined behavior."
                    ),
                );
            }
        }
        for (_, workload, t, _) in world.pods.iter().filter(|p| p.0 == ns) {
            let selecting: Vec<_> = here
                .iter()
                .filter(|(d, s)| {
                    d.resource.namespace() == ns
                        && s.spec.workload_selector.as_ref().is_some_and(|w| {
                            !w.labels.is_empty()
                                && w.labels
                                    .iter()
                                    .all(|(k, v)| t.metadata.labels.get(k) == Some(v))
                        })
                })
                .collect();
            if selecting.len() > 1 {
                let names = selecting
                    .iter()
                    .map(|(_, s)| s.metadata.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" ");
                let pod = workload
                    .split_once(' ')
                    .map_or(workload.as_str(), |(_, n)| n);
                for (d, _) in &selecting {
                    cx(d, out).report(
                        Code::Ist0110,
                        Severity::Error,
                        "spec.workloadSelector",
                        format!(
                            "The Sidecars [{names}] in namespace {ns:?} select the same workload pod {pod:?}, which can lead to undefined behavior."
                        ),
                    );
                }
            }
        }
    }
}

/// Istio's annotations (`istio/api` `annotation/annotations.yaml`), and the labels-like ones
/// skein itself reads.
const KNOWN_ANNOTATIONS: &[&str] = &[
    "alpha.istio.io/canonical-serviceaccounts",
    "alpha.istio.io/identity",
    "alpha.istio.io/kubernetes-serviceaccounts",
    "ambient.istio.io/bypass-inbound-capture",
    "ambient.istio.io/redirection",
    "galley.istio.io/analyze-suppress",
    "inject.istio.io/templates",
    "install.operator.istio.io/chart-owner",
    "install.operator.istio.io/owner-generation",
    "install.operator.istio.io/version",
    "istio.io/connectedAt",
    "istio.io/disconnectedAt",
    "istio.io/dry-run",
    "istio.io/rev",
    "istio.io/workloadController",
    "istio.io/autoRegistrationGroup",
    "networking.istio.io/exportTo",
    "networking.istio.io/traffic-distribution",
    "prometheus.istio.io/merge-metrics",
    "proxy.istio.io/config",
    "proxy.istio.io/overrides",
    "readiness.status.sidecar.istio.io/applicationPorts",
    "readiness.status.sidecar.istio.io/failureThreshold",
    "readiness.status.sidecar.istio.io/initialDelaySeconds",
    "readiness.status.sidecar.istio.io/periodSeconds",
    "sidecar.istio.io/agentLogLevel",
    "sidecar.istio.io/bootstrapOverride",
    "sidecar.istio.io/componentLogLevel",
    "sidecar.istio.io/controlPlaneAuthPolicy",
    "sidecar.istio.io/discoveryAddress",
    "sidecar.istio.io/enableCoreDump",
    "sidecar.istio.io/extraStatTags",
    "sidecar.istio.io/inject",
    "sidecar.istio.io/interceptionMode",
    "sidecar.istio.io/logLevel",
    "sidecar.istio.io/nativeSidecar",
    "sidecar.istio.io/proxyCPU",
    "sidecar.istio.io/proxyCPULimit",
    "sidecar.istio.io/proxyImage",
    "sidecar.istio.io/proxyImageType",
    "sidecar.istio.io/proxyMemory",
    "sidecar.istio.io/proxyMemoryLimit",
    "sidecar.istio.io/rewriteAppHTTPProbers",
    "sidecar.istio.io/statsHistogramBuckets",
    "sidecar.istio.io/statsInclusionPrefixes",
    "sidecar.istio.io/statsInclusionRegexps",
    "sidecar.istio.io/statsInclusionSuffixes",
    "sidecar.istio.io/status",
    "sidecar.istio.io/userVolume",
    "sidecar.istio.io/userVolumeMount",
    "status.sidecar.istio.io/port",
    "topology.istio.io/controlPlaneClusters",
    "traffic.sidecar.istio.io/excludeInboundPorts",
    "traffic.sidecar.istio.io/excludeInterfaces",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges",
    "traffic.sidecar.istio.io/excludeOutboundPorts",
    "traffic.sidecar.istio.io/includeInboundPorts",
    "traffic.sidecar.istio.io/includeOutboundIPRanges",
    "traffic.sidecar.istio.io/includeOutboundPorts",
    "traffic.sidecar.istio.io/kubevirtInterfaces",
];

/// IST0108: an annotation in an `istio.io` domain that Istio does not define, on the object
/// or on a workload's pod template.
fn unknown_annotations(m: &Manifests, out: &mut Vec<Diagnostic>) {
    for d in m {
        let template = match &d.resource {
            crate::Resource::Deployment(x) => Some(&x.spec.template),
            crate::Resource::Rollout(x) => Some(&x.spec.template),
            _ => None,
        };
        let sets = std::iter::once(("metadata.annotations", d.resource.metadata()))
            .chain(template.map(|t| ("spec.template.metadata.annotations", &t.metadata)));
        for (path, meta) in sets {
            for key in meta.annotations.keys() {
                let domain = key.split_once('/').map_or("", |(d, _)| d);
                let istio = domain == "istio.io" || domain.ends_with(".istio.io");
                if istio && !KNOWN_ANNOTATIONS.contains(&key.as_str()) {
                    cx(d, out).report(
                        Code::Ist0108,
                        Severity::Warning,
                        path,
                        format!("Unknown annotation: {key}"),
                    );
                }
            }
        }
    }
}

/// IST0112: a destination without a port, to a Service with more than one.
fn destination_ports(m: &Manifests, world: &World<'_>, out: &mut Vec<Diagnostic>) {
    for (d, vs) in m.docs_of::<VirtualService>() {
        let ns = d.resource.namespace();
        let dests = vs.spec.http.iter().enumerate().flat_map(|(i, r)| {
            r.route.iter().enumerate().map(move |(j, rd)| {
                (
                    format!("spec.http[{i}].route[{j}].destination"),
                    &rd.destination,
                )
            })
        });
        for (path, dest) in dests {
            if dest.port.as_ref().is_some_and(|p| p.number.is_some()) {
                continue;
            }
            let host = world.resolve(&dest.host, ns);
            if let Some(svc) = world.services.get(&host)
                && svc.spec.ports.len() > 1
            {
                let ports = svc
                    .spec
                    .ports
                    .iter()
                    .map(|p| p.port.to_string())
                    .collect::<Vec<_>>()
                    .join(" ");
                cx(d, out).report(
                    Code::Ist0112,
                    Severity::Error,
                    &path,
                    format!(
                        "This VirtualService routes to a service {host:?} that exposes multiple ports [{ports}]. Specifying a port in the destination is required to disambiguate."
                    ),
                );
            }
        }
    }
}

/// IST0132 (a VirtualService host no server of its gateway has) and IST0145 (two Gateways
/// with the same selector on the same port and overlapping hosts).
fn gateways(m: &Manifests, out: &mut Vec<Diagnostic>) {
    let gws: Vec<(&Document, &Gateway)> = m.docs_of::<Gateway>().collect();
    let hosts_of = |g: &Gateway| -> Vec<String> {
        g.spec
            .servers
            .iter()
            .flat_map(|s| s.hosts.iter())
            .map(|h| h.split_once('/').map_or(h.as_str(), |(_, h)| h).to_string())
            .collect()
    };
    for (d, vs) in m.docs_of::<VirtualService>() {
        let ns = d.resource.namespace();
        for (i, gw) in vs.spec.gateways.iter().enumerate() {
            if gw == "mesh" {
                continue;
            }
            let (gns, gname) = gw.split_once('/').unwrap_or((ns, gw));
            let Some((_, g)) = gws
                .iter()
                .find(|(gd, g)| g.metadata.name == gname && gd.resource.namespace() == gns)
            else {
                continue;
            };
            let served = hosts_of(g);
            let missing: Vec<&str> = vs
                .spec
                .hosts
                .iter()
                .filter(|h| {
                    !served
                        .iter()
                        .any(|s| names::host_covers(s, h) || names::host_covers(h, s))
                })
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                cx(d, out).report(
                    Code::Ist0132,
                    Severity::Warning,
                    &format!("spec.gateways[{i}]"),
                    format!(
                        "one or more host [{}] defined in VirtualService {ns}/{} not found in Gateway {gns}/{gname}.",
                        missing.join(" "),
                        vs.metadata.name
                    ),
                );
            }
        }
    }
    for (a, (da, ga)) in gws.iter().enumerate() {
        for (db, gb) in gws.iter().skip(a + 1) {
            if ga.spec.selector != gb.spec.selector {
                continue;
            }
            for (si, sa) in ga.spec.servers.iter().enumerate() {
                for (sj, sb) in gb.spec.servers.iter().enumerate() {
                    if sa.port.number != sb.port.number {
                        continue;
                    }
                    let strip =
                        |h: &String| h.split_once('/').map_or(h.clone(), |(_, h)| h.to_string());
                    let overlap: Vec<String> = sa
                        .hosts
                        .iter()
                        .map(strip)
                        .filter(|h| {
                            sb.hosts
                                .iter()
                                .map(strip)
                                .any(|o| names::host_covers(&o, h) || names::host_covers(h, &o))
                        })
                        .collect();
                    if overlap.is_empty() {
                        continue;
                    }
                    let selector = super::labels_text(&ga.spec.selector);
                    for (d, other, i) in [(da, db, si), (db, da, sj)] {
                        cx(d, out).report(
                            Code::Ist0145,
                            Severity::Error,
                            &format!("spec.servers[{i}]"),
                            format!(
                                "Conflict with gateways {}/{} (workload selector {selector}, port {}, hosts {}).",
                                other.resource.namespace(),
                                other.resource.name(),
                                sa.port.number,
                                overlap.join(",")
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// IST0102: a namespace without `istio-injection` or `istio.io/rev`.
fn namespace_injection(m: &Manifests, out: &mut Vec<Diagnostic>) {
    for (d, ns) in m.docs_of::<Namespace>() {
        let name = &ns.metadata.name;
        let labels = &ns.metadata.labels;
        if SYSTEM_NAMESPACES.contains(&name.as_str())
            || labels.contains_key("istio-injection")
            || labels.contains_key("istio.io/rev")
        {
            continue;
        }
        cx(d, out).report(
            Code::Ist0102,
            Severity::Info,
            "metadata.name",
            format!(
                "The namespace is not enabled for Istio injection. Run 'kubectl label namespace {name} istio-injection=enabled' to enable it, or 'kubectl label namespace {name} istio-injection=disabled' to explicitly mark it as not needing injection."
            ),
        );
    }
}

/// IST0118: a Service port whose name Istio reads no protocol from (and no `appProtocol`).
fn port_names(m: &Manifests, out: &mut Vec<Diagnostic>) {
    for (d, s) in m.docs_of::<Service>() {
        for (i, p) in s.spec.ports.iter().enumerate() {
            if p.app_protocol.is_some() {
                continue;
            }
            // An unnamed port (a Service's only port) is left to protocol detection.
            let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) else {
                continue;
            };
            let proto = name.split_once('-').map_or(name, |(p, _)| p);
            let ok = PROTOCOLS.contains(&name) || PROTOCOLS.contains(&proto);
            if !ok {
                let target = match &p.target_port {
                    Some(crate::IntOrString::Int(n)) => n.to_string(),
                    Some(crate::IntOrString::String(s)) => s.clone(),
                    None => p.port.to_string(),
                };
                cx(d, out).report(
                    Code::Ist0118,
                    Severity::Info,
                    &format!("spec.ports[{i}].name"),
                    format!(
                        "Port name {name} (port: {}, targetPort: {target}) doesn't follow the naming convention of Istio port.",
                        p.port
                    ),
                );
            }
        }
    }
}

/// Whether a VirtualService applies to sidecars (`gateways` empty or naming `mesh`).
pub(super) fn is_mesh_bound(vs: &VirtualService) -> bool {
    vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh")
}

/// IST0109: VirtualServices for sidecars that define the same host.
fn mesh_host_conflicts(m: &Manifests, world: &World<'_>, out: &mut Vec<Diagnostic>) {
    let mut by_host: BTreeMap<String, Vec<(&Document, String, usize)>> = BTreeMap::new();
    for (d, vs) in m.docs_of::<VirtualService>() {
        if !is_mesh_bound(vs) {
            continue;
        }
        let ns = d.resource.namespace();
        for (i, h) in vs.spec.hosts.iter().enumerate() {
            by_host.entry(world.resolve(h, ns)).or_default().push((
                d,
                format!("{ns}/{}", vs.metadata.name),
                i,
            ));
        }
    }
    for (_, list) in by_host {
        if list.len() < 2 {
            continue;
        }
        let names = list
            .iter()
            .map(|(_, n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(",");
        for (d, _, i) in &list {
            let host = VirtualService::from_resource(&d.resource)
                .and_then(|vs| vs.spec.hosts.get(*i))
                .cloned()
                .unwrap_or_default();
            cx(d, out).report(
                Code::Ist0109,
                Severity::Error,
                &format!("spec.hosts[{i}]"),
                format!(
                    "The VirtualServices {names} associated with mesh gateway define the same host {host} which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource."
                ),
            );
        }
    }
}

fn unverified(tls: &ClientTlsSettings) -> Option<&'static str> {
    let mode = match tls.mode? {
        ClientTlsMode::Simple => "SIMPLE",
        ClientTlsMode::Mutual => "MUTUAL",
        _ => return None,
    };
    let verified = tls
        .ca_certificates
        .as_deref()
        .is_some_and(|c| !c.is_empty())
        || tls
            .credential_name
            .as_deref()
            .is_some_and(|c| !c.is_empty())
        || tls.insecure_skip_verify == Some(true);
    (!verified).then_some(mode)
}

/// IST0128 / IST0129: TLS origination that does not verify the server's certificate.
fn certificate_verification(m: &Manifests, out: &mut Vec<Diagnostic>) {
    for (d, dr) in m.docs_of::<DestinationRule>() {
        let ns = d.resource.namespace();
        let name = &dr.metadata.name;
        let host = &dr.spec.host;
        let Some(tp) = &dr.spec.traffic_policy else {
            continue;
        };
        if let Some(mode) = tp.tls.as_ref().and_then(unverified) {
            cx(d, out).report(
                Code::Ist0128,
                Severity::Warning,
                "spec.trafficPolicy.tls.mode",
                format!(
                    "DestinationRule {name} in namespace {ns} has TLS mode set to {mode} but no caCertificates are set to validate server identity for host: {host}"
                ),
            );
        }
        for (i, p) in tp.port_level_settings.iter().enumerate() {
            if let Some(mode) = p.tls.as_ref().and_then(unverified) {
                let port = p
                    .port
                    .as_ref()
                    .and_then(|p| p.number)
                    .map(|n| n.to_string())
                    .unwrap_or_default();
                cx(d, out).report(
                    Code::Ist0129,
                    Severity::Warning,
                    &format!("spec.trafficPolicy.portLevelSettings[{i}].tls.mode"),
                    format!(
                        "DestinationRule {name} in namespace {ns} has TLS mode set to {mode} but no caCertificates are set to validate server identity for host: {host} at port {port}"
                    ),
                );
            }
        }
    }
}

/// IST0130 / IST0131: HTTP rules after a catch-all, and matches an earlier rule already has.
fn unreachable_rules(m: &Manifests, out: &mut Vec<Diagnostic>) {
    for (d, vs) in m.docs_of::<VirtualService>() {
        let name = |i: usize, n: &Option<String>| match n {
            Some(n) if !n.is_empty() => format!("{n:?}"),
            _ => format!("#{i}"),
        };
        let mut catch_all: Option<usize> = None;
        let mut seen: Vec<(String, String)> = Vec::new();
        for (i, r) in vs.spec.http.iter().enumerate() {
            let rule = name(i, &r.name);
            if catch_all.is_some() {
                cx(d, out).report(
                    Code::Ist0130,
                    Severity::Warning,
                    &format!("spec.http[{i}]"),
                    format!("VirtualService rule {rule} not used (only the last rule can have no matches)."),
                );
                continue;
            }
            if r.match_.is_empty() {
                catch_all = Some(i);
                continue;
            }
            let mut dups = 0;
            for (j, mr) in r.match_.iter().enumerate() {
                let mut key = mr.clone();
                key.name = None;
                let key = format!("{key:?}");
                if let Some((_, prior)) = seen.iter().find(|(k, _)| *k == key) {
                    dups += 1;
                    cx(d, out).report(
                        Code::Ist0131,
                        Severity::Info,
                        &format!("spec.http[{i}].match[{j}]"),
                        format!(
                            "VirtualService rule {rule} match {} is not used (duplicate/overlapping match in rule {prior}).",
                            name(j, &mr.name)
                        ),
                    );
                } else {
                    seen.push((key, rule.clone()));
                }
            }
            if dups == r.match_.len() {
                cx(d, out).report(
                    Code::Ist0130,
                    Severity::Warning,
                    &format!("spec.http[{i}]"),
                    format!(
                        "VirtualService rule {rule} not used (all matches used by prior rules)."
                    ),
                );
            }
        }
    }
}

/// The PeerAuthentication mode that applies to pods with `labels` in `ns`: the workload's
/// own policy, else the namespace's, else the mesh's (in istio-system).
pub(super) fn peer_mode<'a>(
    m: &'a Manifests,
    ns: &str,
    labels: &crate::Labels,
) -> Option<(&'a Document, MtlsMode)> {
    let mode = |pa: &PeerAuthentication| pa.spec.mtls.as_ref().and_then(|t| t.mode);
    let pas: Vec<_> = m.docs_of::<PeerAuthentication>().collect();
    let workload = pas.iter().find(|(d, pa)| {
        d.resource.namespace() == ns
            && pa
                .spec
                .selector
                .as_ref()
                .is_some_and(|s| !s.match_labels.is_empty() && s.matches(labels))
    });
    let namespace = pas
        .iter()
        .find(|(d, pa)| d.resource.namespace() == ns && pa.spec.selector.is_none());
    let mesh = pas
        .iter()
        .find(|(d, pa)| d.resource.namespace() == "istio-system" && pa.spec.selector.is_none());
    [workload, namespace, mesh]
        .into_iter()
        .flatten()
        .find_map(|(d, pa)| mode(pa).filter(|m| *m != MtlsMode::Unset).map(|m| (*d, m)))
}

/// IST0113: a DestinationRule's TLS mode against the PeerAuthentication of the pods it
/// sends to (ISTIO_MUTUAL to pods that DISABLE mTLS, DISABLE to pods that are STRICT).
fn mtls_conflicts(m: &Manifests, world: &World<'_>, out: &mut Vec<Diagnostic>) {
    for (d, dr) in m.docs_of::<DestinationRule>() {
        let ns = d.resource.namespace();
        let Some(mode) = dr
            .spec
            .traffic_policy
            .as_ref()
            .and_then(|t| t.tls.as_ref())
            .and_then(|t| t.mode)
        else {
            continue;
        };
        let host = world.resolve(&dr.spec.host, ns);
        let Some(svc) = world.services.get(&host) else {
            continue;
        };
        let Some(selector) = svc.spec.selector.as_ref().filter(|s| !s.is_empty()) else {
            continue;
        };
        let sns = svc.metadata.namespace.as_deref().unwrap_or(ns);
        let pods = world.pods_matching(sns, |l| selector.iter().all(|(k, v)| l.get(k) == Some(v)));
        for p in pods {
            let Some((pa_doc, pa_mode)) = peer_mode(m, sns, &p.2.metadata.labels) else {
                continue;
            };
            let dr_mtls = match mode {
                ClientTlsMode::IstioMutual => true,
                ClientTlsMode::Disable => false,
                _ => continue,
            };
            let conflict = (dr_mtls && pa_mode == MtlsMode::Disable)
                || (!dr_mtls && pa_mode == MtlsMode::Strict);
            if conflict {
                let pa_mode = if pa_mode == MtlsMode::Strict {
                    "STRICT"
                } else {
                    "DISABLE"
                };
                cx(d, out).report(
                    Code::Ist0113,
                    Severity::Error,
                    "spec.trafficPolicy.tls.mode",
                    format!(
                        "A DestinationRule and Policy are in conflict with regards to mTLS for host {host}. The DestinationRule \"{ns}/{}\" specifies that mTLS must be {dr_mtls} but the Policy object \"{}/{}\" specifies {pa_mode}.",
                        dr.metadata.name,
                        pa_doc.resource.namespace(),
                        pa_doc.resource.name()
                    ),
                );
                break;
            }
        }
    }
}
