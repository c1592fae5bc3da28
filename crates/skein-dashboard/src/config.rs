//! The Istio config as the dashboard shows it: every object the control plane loads with
//! its `file:line`, its text and its checks (the diagnostics of `skein_api::validate`, the
//! function `skein analyze` uses), the objects that apply to a workload or a Service, and the
//! graph's node flags that Kiali derives from VirtualServices and DestinationRules.

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};
use skein_api::networking::{DestinationRule, TrafficPolicy, VirtualService};
use skein_api::{Document, Labels, Resource};
use skein_snapshot::names;

use crate::state::Snapshot;

/// A check as the page shows it.
fn check(snap: &Snapshot, d: &skein_api::Diagnostic) -> Json {
    json!({
        "code": d.code.id(),
        "severity": d.severity.to_string(),
        "message": d.message,
        "path": d.path,
        "source": format!("{}:{}", snap.display_file(&d.source.file), d.source.line),
    })
}

/// The checks of one document: diagnostics about it, from its own file.
fn checks_of(snap: &Snapshot, doc: &Document) -> Vec<Json> {
    let name = doc.resource.display_name();
    snap.diagnostics
        .iter()
        .filter(|d| d.object == name && d.source.file == doc.source.file)
        .map(|d| check(snap, d))
        .collect()
}

fn is_valid(checks: &[Json]) -> bool {
    !checks.iter().any(|c| c["severity"] == "error")
}

/// `ConfigRef`: an object that applies to something, with its checks.
fn config_ref(snap: &Snapshot, doc: &Document) -> Json {
    let checks = checks_of(snap, doc);
    let meta = doc.resource.metadata();
    json!({
        "kind": doc.resource.kind(),
        "apiVersion": doc.resource.api_version(),
        "name": meta.name,
        "namespace": meta.namespace_or_default(),
        "source": format!("{}:{}", snap.display_file(&doc.source.file), doc.source.line),
        "valid": is_valid(&checks),
        "checks": checks,
    })
}

/// `GET /api/istio/config`.
pub fn istio_config(snap: &Snapshot) -> Json {
    let mut objects: Vec<Json> = snap
        .manifests
        .iter()
        .map(|doc| {
            let checks = checks_of(snap, doc);
            let meta = doc.resource.metadata();
            json!({
                "kind": doc.resource.kind(),
                "apiVersion": doc.resource.api_version(),
                "name": meta.name,
                "namespace": if doc.resource.is_namespaced() { meta.namespace_or_default() } else { "" },
                "source": {"file": snap.display_file(&doc.source.file), "line": doc.source.line},
                "yaml": crate::refused::document_text(&doc.source.file, doc.source.line).unwrap_or_default(),
                "valid": is_valid(&checks),
                "checks": checks,
            })
        })
        .collect();
    // Files that do not load at all (the control plane refuses the whole change for them).
    for e in &snap.load_errors {
        objects.push(json!({
            "kind": "File",
            "apiVersion": "",
            "name": "",
            "namespace": "",
            "source": source_of_message(e),
            "yaml": "",
            "valid": false,
            "checks": [{"code": Json::Null, "severity": "error", "message": e, "path": "", "source": e.split(": ").next().unwrap_or("")}],
        }));
    }
    let control = snap.control.as_ref();
    let mut valid = control.is_none_or(|c| c.valid) && snap.load_errors.is_empty();
    let mut last_rejection = control
        .and_then(|c| c.last_rejection.as_ref())
        .map(|r| json!({"message": r.errors.join("\n"), "at": r.at}));
    if let Some(r) = &snap.refused {
        valid = false;
        let newer = last_rejection
            .as_ref()
            .and_then(|l| l["at"].as_str())
            .is_none_or(|at| at <= r.at.as_str());
        if newer {
            last_rejection = Some(json!({"message": r.errors.join("\n"), "at": r.at}));
        }
        for o in &r.objects {
            let label = if o.namespace.is_empty() {
                format!("{} {}", o.kind, o.name)
            } else {
                format!("{} {}/{}", o.kind, o.namespace, o.name)
            };
            let checks: Vec<Json> = r
                .errors
                .iter()
                .filter(|e| r.objects.len() == 1 || e.contains(&label))
                .map(|e| {
                    let parts: Vec<&str> = e.splitn(4, ": ").collect();
                    let (path, message) = match parts.as_slice() {
                        [_, _, _, rest] => match rest.split_once(": ") {
                            Some((p, m)) if p.starts_with("spec") || p.starts_with("metadata") => {
                                (p.to_string(), m.to_string())
                            }
                            _ => (String::new(), rest.to_string()),
                        },
                        _ => (String::new(), e.clone()),
                    };
                    json!({
                        "code": Json::Null,
                        "severity": "error",
                        "message": message,
                        "path": path,
                        "source": short_file(parts.first().copied().unwrap_or("")),
                    })
                })
                .collect();
            objects.push(json!({
                "kind": o.kind,
                "apiVersion": o.api_version,
                "name": o.name,
                "namespace": o.namespace,
                "source": {"file": short_file(&o.file), "line": o.line},
                "yaml": o.yaml,
                "valid": false,
                "refused": true,
                "checks": checks,
            }));
        }
    }
    let application = snap.application.as_ref().map(|a| {
        // Each object's place in the Application: Synced, or OutOfSync and why.
        for o in &mut objects {
            let found = a.resources.iter().find(|r| {
                o["kind"] == r.kind.as_str()
                    && o["name"] == r.name.as_str()
                    && o["namespace"] == r.namespace.as_str()
            });
            if let Some(r) = found {
                o["sync"] = json!({
                    "status": r.status,
                    "message": r.message,
                    "git": r.git,
                    "requiresPruning": r.requires_pruning,
                    "selfHealAt": r.self_heal_at,
                });
            }
        }
        application_json(a)
    });
    json!({
        "control": {
            "version": control.map(|c| c.version.clone()),
            "valid": valid,
            "lastRejection": last_rejection,
        },
        "application": application,
        "objects": objects,
    })
}

/// GitOps: the Application's sync status and health, its commit and its drifted objects.
pub fn application_json(a: &skein_control::gitops::AppStatus) -> Json {
    json!({
        "name": a.name,
        "namespace": a.namespace,
        "repo": a.repo,
        "sync": a.sync,
        "health": a.health,
        "selfHeal": a.self_heal,
        "prune": a.prune,
        "revision": a.revision.as_ref().map(|r| json!({"sha": r.sha, "subject": r.subject})),
        "outOfSync": a.drifted().count(),
        // The drifted objects themselves, so the banner can name them.
        "drifted": a.drifted().map(|r| json!({
            "kind": r.kind,
            "namespace": r.namespace,
            "name": r.name,
            "message": r.message,
            "git": r.git,
            "requiresPruning": r.requires_pruning,
            "selfHealAt": r.self_heal_at,
        })).collect::<Vec<_>>(),
        "conditions": a.conditions.iter().map(|c| json!({"type": c.kind, "message": c.message})).collect::<Vec<_>>(),
    })
}

fn short_file(f: &str) -> String {
    std::path::Path::new(f)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| f.to_string())
}

/// `{file, line}` from a message that starts with `file:line: `.
fn source_of_message(e: &str) -> Json {
    let head = e.split(": ").next().unwrap_or("");
    match head.rsplit_once(':') {
        Some((file, line)) if line.parse::<usize>().is_ok() => {
            json!({"file": short_file(file), "line": line.parse::<usize>().unwrap_or(0)})
        }
        _ => json!({"file": short_file(head), "line": 0}),
    }
}

/// The Services of `ns` that select a workload with `labels`.
pub fn services_selecting<'a>(snap: &'a Snapshot, ns: &str, labels: &Labels) -> Vec<&'a str> {
    snap.manifests
        .services()
        .filter(|s| s.metadata.namespace_or_default() == ns)
        .filter(|s| {
            s.spec.selector.as_ref().is_some_and(|sel| {
                !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
        })
        .map(|s| s.metadata.name.as_str())
        .collect()
}

/// Whether a VirtualService's `hosts` (or its destinations) name the Service `fqdn`.
fn vs_covers(vs: &VirtualService, fqdn: &str) -> bool {
    let ns = vs.metadata.namespace_or_default();
    vs.spec
        .hosts
        .iter()
        .any(|h| names::host_covers(&names::expand_short_name(h, ns), fqdn))
}

fn dr_covers(dr: &DestinationRule, fqdn: &str) -> bool {
    let ns = dr.metadata.namespace_or_default();
    names::host_covers(&names::expand_short_name(&dr.spec.host, ns), fqdn)
}

/// The objects that apply to a workload (`labels` in `ns`) through its pods or its
/// Services: AuthorizationPolicies, PeerAuthentications, RequestAuthentications, Sidecars and
/// Telemetries that select it (or its whole namespace, or the mesh), and the VirtualServices
/// and DestinationRules of its Services.
pub fn workload_refs(snap: &Snapshot, ns: &str, labels: &Labels) -> Vec<Json> {
    let fqdns: Vec<String> = services_selecting(snap, ns, labels)
        .iter()
        .map(|s| names::fqdn(s, ns))
        .collect();
    let mut out = Vec::new();
    for doc in snap.manifests.iter() {
        let meta = doc.resource.metadata();
        let doc_ns = meta.namespace_or_default();
        let in_scope = doc_ns == ns || doc_ns == "istio-system";
        let applies = match &doc.resource {
            Resource::AuthorizationPolicy(ap) => {
                in_scope && ap.spec.selector.as_ref().is_none_or(|s| s.matches(labels))
            }
            Resource::PeerAuthentication(pa) => {
                in_scope && pa.spec.selector.as_ref().is_none_or(|s| s.matches(labels))
            }
            Resource::RequestAuthentication(ra) => {
                in_scope && ra.spec.selector.as_ref().is_none_or(|s| s.matches(labels))
            }
            Resource::VirtualService(vs) => fqdns.iter().any(|f| vs_covers(vs, f)),
            Resource::DestinationRule(dr) => fqdns.iter().any(|f| dr_covers(dr, f)),
            _ => false,
        };
        if applies {
            out.push(config_ref(snap, doc));
        }
    }
    out
}

/// The VirtualServices and DestinationRules of the Service `name` in `ns`.
pub fn service_refs(snap: &Snapshot, ns: &str, name: &str) -> Vec<Json> {
    let fqdn = names::fqdn(name, ns);
    snap.manifests
        .iter()
        .filter(|doc| match &doc.resource {
            Resource::VirtualService(vs) => vs_covers(vs, &fqdn),
            Resource::DestinationRule(dr) => dr_covers(dr, &fqdn),
            _ => false,
        })
        .map(|doc| config_ref(snap, doc))
        .collect()
}

/// The weighted routes of the VirtualServices of a workload's Services (the canary's
/// weights).
pub fn canary(snap: &Snapshot, ns: &str, labels: &Labels) -> Vec<Json> {
    let fqdns: Vec<String> = services_selecting(snap, ns, labels)
        .iter()
        .map(|s| names::fqdn(s, ns))
        .collect();
    let mut out = Vec::new();
    for vs in snap.manifests.virtual_services() {
        if !fqdns.iter().any(|f| vs_covers(vs, f)) {
            continue;
        }
        for (i, r) in vs.spec.http.iter().enumerate() {
            if r.route.len() < 2 && r.mirror.is_none() {
                continue;
            }
            out.push(json!({
                "virtualService": vs.metadata.name,
                "route": r.name.clone().unwrap_or_else(|| format!("http[{i}]")),
                "destinations": r.route.iter().map(|d| json!({
                    "host": d.destination.host,
                    "subset": d.destination.subset,
                    "weight": d.weight.unwrap_or(if r.route.len() == 1 { 100 } else { 0 }),
                })).collect::<Vec<_>>(),
                "mirror": r.mirror.as_ref().map(|m| json!({"host": m.host, "subset": m.subset})),
            }));
        }
    }
    out
}

/// Kiali's node flags from the Istio config, for a Service.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ServiceFlags {
    pub vs_hostnames: Vec<String>,
    pub has_cb: bool,
    pub has_mirroring: bool,
    pub has_fault_injection: bool,
    pub has_request_routing: bool,
    pub has_traffic_shifting: bool,
    pub has_request_timeout: bool,
    pub has_retries: bool,
}

fn policy_is_cb(p: &TrafficPolicy) -> bool {
    p.connection_pool.is_some()
        || p.outlier_detection.is_some()
        || p.port_level_settings
            .iter()
            .any(|l| l.connection_pool.is_some() || l.outlier_detection.is_some())
}

/// Flags per Service FQDN, for every Service the config names.
pub fn service_flags(snap: &Snapshot) -> BTreeMap<String, ServiceFlags> {
    let mut out: BTreeMap<String, ServiceFlags> = BTreeMap::new();
    let fqdns: Vec<String> = snap
        .manifests
        .services()
        .map(|s| names::fqdn(&s.metadata.name, s.metadata.namespace_or_default()))
        .collect();
    for fqdn in &fqdns {
        let mut f = ServiceFlags::default();
        for vs in snap.manifests.virtual_services() {
            if !vs.spec.gateways.is_empty() && !vs.spec.gateways.iter().any(|g| g == "mesh") {
                continue;
            }
            if !vs_covers(vs, fqdn) {
                continue;
            }
            f.vs_hostnames.extend(vs.spec.hosts.iter().cloned());
            let http = &vs.spec.http;
            f.has_request_routing |= http.len() > 1
                || http
                    .iter()
                    .any(|r| !r.match_.is_empty() || r.route.len() > 1)
                || !vs.spec.tcp.is_empty()
                || !vs.spec.tls.is_empty();
            for r in http {
                f.has_mirroring |= r.mirror.is_some() || !r.mirrors.is_empty();
                f.has_fault_injection |= r.fault.is_some();
                f.has_traffic_shifting |= r.route.len() > 1;
                f.has_request_timeout |= r.timeout.is_some();
                f.has_retries |= r.retries.is_some();
            }
            f.has_traffic_shifting |= vs.spec.tcp.iter().any(|r| r.route.len() > 1);
        }
        for dr in snap.manifests.destination_rules() {
            if dr_covers(dr, fqdn) {
                f.has_cb |= dr.spec.traffic_policy.as_ref().is_some_and(policy_is_cb)
                    || dr
                        .spec
                        .subsets
                        .iter()
                        .any(|s| s.traffic_policy.as_ref().is_some_and(policy_is_cb));
            }
        }
        f.vs_hostnames.sort();
        f.vs_hostnames.dedup();
        out.insert(fqdn.clone(), f);
    }
    out
}

/// The hosts the ingress gateway serves: the Ingresses' rules and the Gateways' servers
/// (`*` for a rule without a host).
pub fn ingress_hostnames(snap: &Snapshot) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in snap.manifests.ingresses() {
        for r in &i.spec.rules {
            out.push(r.host.clone().unwrap_or_else(|| "*".into()));
        }
        if i.spec.rules.is_empty() {
            out.push("*".into());
        }
    }
    for g in snap.manifests.gateways() {
        for s in &g.spec.servers {
            out.extend(s.hosts.iter().cloned());
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blog() -> Snapshot {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/blog-system");
        let manifests = skein_api::load_path(&dir).unwrap();
        Snapshot {
            diagnostics: skein_api::validate(&manifests),
            manifests,
            manifests_dir: dir,
            ..Snapshot::default()
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_objects_that_apply_to_was_and_web() {
        let snap = blog();
        let was = labels(&[("app", "was"), ("version", "v1")]);
        assert_eq!(
            services_selecting(&snap, "blog-system", &was),
            ["was-service"]
        );
        let refs = workload_refs(&snap, "blog-system", &was);
        let names: Vec<(&str, &str)> = refs
            .iter()
            .map(|r| (r["kind"].as_str().unwrap(), r["name"].as_str().unwrap()))
            .collect();
        for want in [
            ("AuthorizationPolicy", "was-authz"),
            ("PeerAuthentication", "default"),
            ("DestinationRule", "was-dest-rule"),
            ("VirtualService", "was-vsvc"),
        ] {
            assert!(names.contains(&want), "{want:?} not in {names:?}");
        }
        assert!(
            !names.contains(&("AuthorizationPolicy", "web-authz")),
            "{names:?}"
        );
        let authz = refs.iter().find(|r| r["name"] == "was-authz").unwrap();
        assert_eq!(authz["valid"], true);
        assert!(
            authz["source"]
                .as_str()
                .unwrap()
                .starts_with("60-istio-security.yaml:"),
            "{authz}"
        );

        // web's canary: the primary route's weights and its mirror.
        let web = labels(&[("app", "web"), ("version", "stable")]);
        let canary = canary(&snap, "blog-system", &web);
        let primary = canary.iter().find(|c| c["route"] == "primary").unwrap();
        assert_eq!(primary["virtualService"], "web-vsvc");
        assert_eq!(primary["destinations"][0]["subset"], "stable");
        assert_eq!(primary["destinations"][0]["weight"], 100);
        assert_eq!(primary["destinations"][1]["weight"], 0);
        assert_eq!(primary["mirror"]["subset"], "canary");
    }

    #[test]
    fn the_config_view_has_every_object_with_its_line_and_checks() {
        let snap = blog();
        let v = istio_config(&snap);
        let objects = v["objects"].as_array().unwrap();
        assert_eq!(objects.len(), snap.manifests.len());
        let vs = objects.iter().find(|o| o["name"] == "web-vsvc").unwrap();
        assert_eq!(vs["source"]["file"], "50-istio-traffic.yaml");
        assert!(
            vs["yaml"]
                .as_str()
                .unwrap()
                .starts_with("apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n")
        );
        // The analyzer's finding on web-vsvc (the mirror of writes), with its code; still
        // valid, as a warning.
        assert_eq!(vs["checks"][0]["code"], "SKN0006", "{}", vs["checks"]);
        assert_eq!(vs["checks"][0]["severity"], "warning");
        assert_eq!(vs["valid"], true);
        let ns = objects.iter().find(|o| o["kind"] == "Namespace").unwrap();
        assert_eq!(ns["namespace"], "");
        assert_eq!(v["control"]["valid"], true);
        // The flags Kiali derives for the graph.
        let flags = service_flags(&snap);
        let web = &flags["web-service.blog-system.svc.cluster.local"];
        assert!(
            web.has_mirroring
                && web.has_traffic_shifting
                && web.has_request_timeout
                && web.has_retries
                && web.has_cb
        );
        assert!(!web.has_fault_injection);
        assert!(flags["mysql.blog-system.svc.cluster.local"].has_cb);
        assert!(
            flags["mysql.blog-system.svc.cluster.local"]
                .vs_hostnames
                .is_empty()
        );
    }
}
