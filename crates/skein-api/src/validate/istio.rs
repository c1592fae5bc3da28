//! istioctl's analyzers that apply to what skein models, with Istio's codes, levels and
//! wording (`pkg/config/analysis/analyzers`, messages from `msg/messages.yaml`).

use std::collections::BTreeMap;

use super::{Cx, Diagnostic, World};
use crate::codes::{Code, Severity};
use crate::k8s::{Namespace, Service};
use crate::networking::{ClientTlsMode, ClientTlsSettings, DestinationRule, VirtualService};
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
                        "A DestinationRule and Policy are in conflict with regards to mTLS for host {host}. The DestinationRule {:?} specifies that mTLS must be {dr_mtls} but the Policy object {:?} specifies {pa_mode}.",
                        format!("{ns}/{}", dr.metadata.name),
                        format!("{}/{}", pa_doc.resource.namespace(), pa_doc.resource.name())
                    ),
                );
                break;
            }
        }
    }
}
