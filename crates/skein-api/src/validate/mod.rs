//! Validation of loaded manifests with the messages Kubernetes and Istio give for the same
//! mistakes (Istio's CRD CEL rules and istiod's webhook, `pkg/config/validation`; Kubernetes'
//! apps/core validation; `istioctl analyze` for references between objects), each at the
//! `file:line` of the offending field.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::k8s::{
    Container, Ingress, IntOrString, PodTemplateSpec, Service, ServiceType, WorkloadSpec,
};
use crate::networking::{
    ClientTlsMode, ConnectionPoolSettings, Destination, DestinationRule, Gateway, H2UpgradePolicy,
    HttpRoute, OutlierDetection, Resolution, RouteDestination, ServiceEntry, StringMatch,
    TrafficPolicy, VirtualService,
};
use crate::security::{Action, AuthorizationPolicy, PeerAuthentication};
use crate::telemetry::Telemetry;
use crate::types::{Duration, Labels, Percent, WorkloadSelector};
use crate::{Document, Manifests, Resource, Source};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// Kubernetes or istiod would reject the object, or it cannot work as written.
    Error,
    /// Accepted, but probably not what was meant.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One finding: `file:line: error: VirtualService blog-system/web-vsvc: spec.http[0]: total
/// destination weight = 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The line of the offending field (or of the document when there is no better one).
    pub source: Source,
    /// `Kind namespace/name`.
    pub object: String,
    /// Field path such as `spec.http[0].route`; empty for the object as a whole.
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}: ", self.source, self.severity, self.object)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Checks every object, and the references between them. Sorted by file and line.
pub fn validate(manifests: &Manifests) -> Vec<Diagnostic> {
    let world = World::new(manifests);
    let mut out = Vec::new();
    for doc in manifests {
        let mut cx = Cx {
            doc,
            object: doc.resource.display_name(),
            out: &mut out,
        };
        let meta = doc.resource.metadata();
        if meta.name.is_empty() && meta.generate_name.is_none() {
            cx.error(
                "metadata.name",
                "Required value: name or generateName is required",
            );
        }
        match &doc.resource {
            Resource::Deployment(d) => workload(&mut cx, d.spec.as_workload(), "deployment"),
            Resource::Rollout(r) => {
                if r.spec.workload_ref.is_none() {
                    workload(&mut cx, r.spec.as_workload(), "rollout");
                }
            }
            Resource::Service(s) => service(&mut cx, s, &world),
            Resource::Ingress(i) => ingress(&mut cx, i, &world),
            Resource::VirtualService(vs) => virtual_service(&mut cx, vs, &world),
            Resource::DestinationRule(dr) => destination_rule(&mut cx, dr, &world),
            Resource::Gateway(g) => gateway(&mut cx, g),
            Resource::ServiceEntry(se) => service_entry(&mut cx, se),
            Resource::AuthorizationPolicy(ap) => authorization_policy(&mut cx, ap, &world),
            Resource::PeerAuthentication(pa) => peer_authentication(&mut cx, pa, &world),
            Resource::Telemetry(t) => telemetry(&mut cx, t),
            Resource::Namespace(_)
            | Resource::ServiceAccount(_)
            | Resource::ConfigMap(_)
            | Resource::Secret(_)
            | Resource::Sidecar(_)
            | Resource::WorkloadEntry(_) => {}
        }
    }
    duplicates(manifests, &mut out);
    out.sort_by(|a, b| a.source.cmp(&b.source));
    out
}

// === Context ===

struct Cx<'a> {
    doc: &'a Document,
    object: String,
    out: &'a mut Vec<Diagnostic>,
}

impl Cx<'_> {
    fn push(&mut self, severity: Severity, path: &str, message: impl Into<String>) {
        self.out.push(Diagnostic {
            severity,
            source: self.doc.source_of(path),
            object: self.object.clone(),
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.push(Severity::Error, path, message);
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.push(Severity::Warning, path, message);
    }

    fn namespace(&self) -> &str {
        self.doc.resource.namespace()
    }
}

/// What the cross-object checks need to know about the whole set.
struct World<'a> {
    /// Pod templates of Deployments and Rollouts: (namespace, workload label, template).
    pods: Vec<(&'a str, String, &'a PodTemplateSpec, bool)>,
    /// Service FQDN -> Service.
    services: HashMap<String, &'a Service>,
    /// Hosts declared by ServiceEntries (may be wildcards).
    entry_hosts: Vec<&'a str>,
    /// (host FQDN, subset name) declared by DestinationRules.
    subsets: HashSet<(String, String)>,
}

impl<'a> World<'a> {
    fn new(m: &'a Manifests) -> World<'a> {
        let mut pods = Vec::new();
        for d in m {
            let ns = d.resource.namespace();
            match &d.resource {
                Resource::Deployment(x) => pods.push((
                    ns,
                    format!("Deployment {}", x.metadata.name),
                    &x.spec.template,
                    false,
                )),
                Resource::Rollout(x) => pods.push((
                    ns,
                    format!("Rollout {}", x.metadata.name),
                    &x.spec.template,
                    true,
                )),
                _ => {}
            }
        }
        let services = m
            .docs_of::<Service>()
            .map(|(d, s)| {
                (
                    format!(
                        "{}.{}.svc.cluster.local",
                        s.metadata.name,
                        d.resource.namespace()
                    ),
                    s,
                )
            })
            .collect();
        let entry_hosts = m
            .service_entries()
            .flat_map(|se| se.spec.hosts.iter().map(String::as_str))
            .collect();
        let subsets = m
            .docs_of::<DestinationRule>()
            .flat_map(|(d, dr)| {
                let host = fqdn(&dr.spec.host, d.resource.namespace());
                dr.spec
                    .subsets
                    .iter()
                    .map(move |s| (host.clone(), s.name.clone()))
            })
            .collect();
        World {
            pods,
            services,
            entry_hosts,
            subsets,
        }
    }

    /// Pod templates in `ns` whose labels satisfy `matches`.
    fn pods_matching(
        &self,
        ns: &str,
        matches: impl Fn(&Labels) -> bool,
    ) -> Vec<&(&'a str, String, &'a PodTemplateSpec, bool)> {
        self.pods
            .iter()
            .filter(|(pns, _, t, _)| *pns == ns && matches(&t.metadata.labels))
            .collect()
    }

    fn host_known(&self, host: &str) -> bool {
        self.services.contains_key(host)
            || self.entry_hosts.iter().any(|h| {
                *h == host
                    || h.strip_prefix('*')
                        .is_some_and(|suffix| host.ends_with(suffix))
            })
    }
}

/// Istio's short-name rule: a host without dots is `name.<namespace>.svc.cluster.local`.
fn fqdn(host: &str, namespace: &str) -> String {
    if host.contains('.') || host.contains('*') || host.is_empty() {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.cluster.local")
    }
}

fn labels_text(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// istiod's `ValidateDuration`.
fn duration(cx: &mut Cx<'_>, path: &str, d: &Option<Duration>) {
    if let Some(d) = d {
        let v = d.get();
        if v < std::time::Duration::from_millis(1) {
            cx.error(path, "duration must be greater than 1ms");
        } else if v.subsec_nanos() % 1_000_000 != 0 {
            cx.error(path, "only durations to ms precision are supported");
        }
    }
}

/// istiod's `ValidatePort`.
fn istio_port(cx: &mut Cx<'_>, path: &str, port: u32) {
    if !(1..=65535).contains(&port) {
        cx.error(
            path,
            format!("port number {port} must be in the range 1..65535"),
        );
    }
}

/// istiod's `validatePercentage`.
fn percentage(cx: &mut Cx<'_>, path: &str, p: &Option<Percent>) {
    if let Some(p) = p
        && (p.value < 0.0 || p.value > 100.0 || (p.value > 0.0 && p.value < 0.0001))
    {
        cx.error(
            path,
            format!(
                "percentage {} is neither 0.0, nor in range [0.0001, 100.0]",
                p.value
            ),
        );
    }
}

/// istiod's `ValidatePercent`.
fn percent_0_100(cx: &mut Cx<'_>, path: &str, v: Option<i32>) {
    if let Some(v) = v
        && !(0..=100).contains(&v)
    {
        cx.error(path, format!("percentage {v} is not in range 0..100"));
    }
}

fn selector_labels(cx: &mut Cx<'_>, path: &str, selector: &Option<WorkloadSelector>) {
    if let Some(s) = selector {
        for (k, v) in &s.match_labels {
            if k.contains('*') {
                cx.error(
                    &format!("{path}.matchLabels"),
                    "wildcard not allowed in label key match",
                );
            }
            if k.is_empty() {
                cx.error(&format!("{path}.matchLabels"), "key must not be empty");
            }
            if v.contains('*') {
                cx.error(
                    &format!("{path}.matchLabels.{k}"),
                    "wildcard not allowed in label value match",
                );
            }
        }
    }
}

/// IST0127 for policies whose selector matches no pod template in the namespace.
fn selector_matches_workloads(
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
        cx.warn(
            path,
            format!("No matching workloads for this resource with the following labels: {text}"),
        );
    }
}

// === Kubernetes ===

fn workload(cx: &mut Cx<'_>, spec: WorkloadSpec<'_>, what: &str) {
    if let Some(r) = spec.replicas
        && r < 0
    {
        cx.error("spec.replicas", "must be greater than or equal to 0");
    }
    match spec.selector {
        None => cx.error("spec.selector", "Required value"),
        Some(sel) if sel.is_empty() => cx.error(
            "spec.selector",
            format!("empty selector is invalid for {what}"),
        ),
        Some(sel) => {
            if !sel.matches(&spec.template.metadata.labels) {
                cx.error(
                    "spec.template.metadata.labels",
                    "`selector` does not match template `labels`",
                );
            }
        }
    }
    pod_spec(cx, spec.template);
}

const FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

fn pod_spec(cx: &mut Cx<'_>, template: &PodTemplateSpec) {
    let base = "spec.template.spec";
    if template.spec.containers.is_empty() {
        cx.error(&format!("{base}.containers"), "Required value");
    }
    let mut names = HashSet::new();
    for (list, containers) in [
        ("containers", &template.spec.containers),
        ("initContainers", &template.spec.init_containers),
    ] {
        for (i, c) in containers.iter().enumerate() {
            let path = format!("{base}.{list}[{i}]");
            if !names.insert(c.name.as_str()) {
                cx.error(
                    &format!("{path}.name"),
                    format!("Duplicate value: \"{}\"", c.name),
                );
            }
            container(cx, &path, c);
        }
    }
}

fn container(cx: &mut Cx<'_>, path: &str, c: &Container) {
    if c.name.is_empty() {
        cx.error(&format!("{path}.name"), "Required value");
    }
    if c.image.as_deref().is_none_or(str::is_empty) {
        cx.error(&format!("{path}.image"), "Required value");
    }
    let mut port_names = HashSet::new();
    for (j, p) in c.ports.iter().enumerate() {
        let pp = format!("{path}.ports[{j}]");
        if !(1..=65535).contains(&p.container_port) {
            cx.error(
                &format!("{pp}.containerPort"),
                "must be between 1 and 65535, inclusive",
            );
        }
        if let Some(name) = &p.name {
            if let Some(msg) = port_name_problem(name) {
                cx.error(&format!("{pp}.name"), msg);
            }
            if !port_names.insert(name.as_str()) {
                cx.error(
                    &format!("{pp}.name"),
                    format!("Duplicate value: \"{name}\""),
                );
            }
        }
    }
    for (j, e) in c.env.iter().enumerate() {
        let ep = format!("{path}.env[{j}]");
        if e.value.as_deref().is_some_and(|v| !v.is_empty()) && e.value_from.is_some() {
            cx.error(
                &format!("{ep}.valueFrom"),
                "may not be specified when `value` is not empty",
            );
        }
        if let Some(f) = e.value_from.as_ref().and_then(|v| v.field_ref.as_ref()) {
            let fp = f.field_path.as_str();
            let ok = FIELD_PATHS.contains(&fp)
                || ["metadata.labels['", "metadata.annotations['"]
                    .iter()
                    .any(|pre| {
                        fp.starts_with(pre) && fp.ends_with("']") && fp.len() > pre.len() + 2
                    });
            if !ok {
                let supported = FIELD_PATHS
                    .iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(", ");
                cx.error(
                    &format!("{ep}.valueFrom.fieldRef.fieldPath"),
                    format!(
                        "Unsupported value: \"{fp}\": supported values: {supported}, \"metadata.labels['<KEY>']\", \"metadata.annotations['<KEY>']\""
                    ),
                );
            }
        }
    }
    for (probe_name, probe) in [
        ("readinessProbe", &c.readiness_probe),
        ("livenessProbe", &c.liveness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        let Some(probe) = probe else { continue };
        let pp = format!("{path}.{probe_name}");
        let handlers = [
            probe.http_get.is_some(),
            probe.tcp_socket.is_some(),
            probe.exec.is_some(),
            probe.grpc.is_some(),
        ];
        match handlers.iter().filter(|h| **h).count() {
            0 => cx.error(&pp, "must specify a handler type"),
            1 => {}
            _ => cx.error(&pp, "may not specify more than 1 handler type"),
        }
        let port = probe
            .http_get
            .as_ref()
            .map(|h| (&h.port, "httpGet"))
            .or(probe.tcp_socket.as_ref().map(|t| (&t.port, "tcpSocket")));
        if let Some((port, handler)) = port {
            let port_path = format!("{pp}.{handler}.port");
            match port {
                IntOrString::Int(n) if !(1..=65535).contains(n) => {
                    cx.error(&port_path, "must be between 1 and 65535, inclusive")
                }
                IntOrString::String(name)
                    if !c.ports.iter().any(|p| p.name.as_deref() == Some(name)) =>
                {
                    cx.warn(
                        &port_path,
                        format!(
                            "port \"{name}\" is not the name of a containerPort of container {}",
                            c.name
                        ),
                    )
                }
                _ => {}
            }
        }
    }
}

/// Kubernetes' IANA_SVC_NAME rules for named ports.
fn port_name_problem(name: &str) -> Option<&'static str> {
    if name.len() > 15 {
        Some("must be no more than 15 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    } else if name.contains("--") {
        Some("must not contain consecutive hyphens")
    } else if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        Some("must contain at least one letter (a-z)")
    } else if name.starts_with('-') || name.ends_with('-') {
        Some("must not begin or end with a hyphen")
    } else {
        None
    }
}

fn service(cx: &mut Cx<'_>, s: &Service, world: &World<'_>) {
    let spec = &s.spec;
    let external_name = spec.type_ == Some(ServiceType::ExternalName);
    if external_name && spec.external_name.as_deref().is_none_or(str::is_empty) {
        cx.error("spec.externalName", "Required value");
    }
    if spec.ports.is_empty() && !external_name && spec.cluster_ip.as_deref() != Some("None") {
        cx.error("spec.ports", "Required value");
    }
    let mut names = HashSet::new();
    let mut numbers = HashSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        if !(1..=65535).contains(&p.port) {
            cx.error(
                &format!("{pp}.port"),
                "must be between 1 and 65535, inclusive",
            );
        }
        match &p.name {
            None if spec.ports.len() > 1 => cx.error(&format!("{pp}.name"), "Required value"),
            Some(name) => {
                if let Some(msg) = port_name_problem(name) {
                    cx.error(&format!("{pp}.name"), msg);
                }
                if !names.insert(name.as_str()) {
                    cx.error(
                        &format!("{pp}.name"),
                        format!("Duplicate value: \"{name}\""),
                    );
                }
            }
            None => {}
        }
        if !numbers.insert((p.port, p.protocol)) {
            cx.error(&pp, format!("Duplicate value: port {}", p.port));
        }
        match &p.target_port {
            Some(IntOrString::Int(n)) if !(1..=65535).contains(n) => cx.error(
                &format!("{pp}.targetPort"),
                "must be between 1 and 65535, inclusive",
            ),
            Some(IntOrString::String(name)) => {
                if let Some(msg) = port_name_problem(name) {
                    cx.error(&format!("{pp}.targetPort"), msg);
                }
            }
            _ => {}
        }
        if p.node_port.is_some() && matches!(spec.type_, None | Some(ServiceType::ClusterIp)) {
            cx.error(
                &format!("{pp}.nodePort"),
                "may not be used when `type` is 'ClusterIP'",
            );
        }
    }
    // Selector sanity against the workloads in the same manifests.
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

fn ingress(cx: &mut Cx<'_>, ing: &Ingress, world: &World<'_>) {
    let mut backends = Vec::new();
    if let Some(b) = &ing.spec.default_backend {
        backends.push(("spec.defaultBackend".to_string(), b));
    }
    for (i, rule) in ing.spec.rules.iter().enumerate() {
        for (j, p) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
            let pp = format!("spec.rules[{i}].http.paths[{j}]");
            let path = p.path.as_deref().unwrap_or("");
            if p.path_type != crate::k8s::PathType::ImplementationSpecific && !path.starts_with('/')
            {
                cx.error(&format!("{pp}.path"), "must be an absolute path");
            }
            backends.push((format!("{pp}.backend"), &p.backend));
        }
    }
    if ing.spec.default_backend.is_none() && ing.spec.rules.is_empty() {
        cx.error(
            "spec",
            "either `defaultBackend` or `rules` must be specified",
        );
    }
    for (path, b) in backends {
        match (&b.service, &b.resource) {
            (Some(_), Some(_)) => cx.error(&path, "cannot set both service and resource backends"),
            (None, None) => cx.error(&path, "one backend (service or resource) must be specified"),
            _ => {}
        }
        let Some(svc) = &b.service else { continue };
        let port_path = format!("{path}.service.port");
        match (&svc.port.number, &svc.port.name) {
            (Some(_), Some(_)) => cx.error(&port_path, "cannot set both port name & port number"),
            (None, None) => cx.error(&port_path, "port name or number is required"),
            (Some(n), None) if !(1..=65535).contains(n) => cx.error(
                &format!("{port_path}.number"),
                "must be between 1 and 65535, inclusive",
            ),
            _ => {}
        }
        let ns = cx.namespace().to_string();
        match world
            .services
            .get(&format!("{}.{ns}.svc.cluster.local", svc.name))
        {
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
                        &port_path,
                        format!("Service {ns}/{} has no such port", svc.name),
                    );
                }
            }
        }
    }
}

// === Istio networking ===

fn string_match(
    cx: &mut Cx<'_>,
    path: &str,
    m: &StringMatch,
    where_: &str,
    allow_empty_prefix: bool,
) {
    if m.set_count() > 1 {
        cx.error(path, "only one of exact, prefix or regex may be set");
    }
    if !allow_empty_prefix && m.prefix.as_deref() == Some("") {
        cx.error(
            path,
            format!("\"{where_}\": prefix string match should not be empty"),
        );
    }
    if m.regex.as_deref() == Some("") {
        cx.error(
            path,
            format!("\"{where_}\": regex string match should not be empty"),
        );
    }
}

fn destination(cx: &mut Cx<'_>, path: &str, d: &Destination) {
    if d.host.is_empty() {
        cx.error(&format!("{path}.host"), "Required value");
    } else if d.host == "*" {
        cx.error(&format!("{path}.host"), "invalid destination host *");
    }
    if let Some(subset) = &d.subset {
        if subset.is_empty() {
            cx.error(&format!("{path}.subset"), "subset name cannot be empty");
        } else if !is_dns1123_label(subset) {
            cx.error(
                &format!("{path}.subset"),
                format!("subset name is invalid: {subset}"),
            );
        }
    }
    if let Some(n) = d.port.as_ref().and_then(|p| p.number) {
        istio_port(cx, &format!("{path}.port.number"), n);
    }
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Existence of destination hosts and subsets (istioctl IST0101).
fn destination_refs(cx: &mut Cx<'_>, path: &str, d: &Destination, world: &World<'_>, mirror: bool) {
    if d.host.is_empty() || d.host.contains('*') {
        return;
    }
    let ns = cx.namespace().to_string();
    let host = fqdn(&d.host, &ns);
    if !world.host_known(&host) {
        let what = if mirror { "mirror host" } else { "host" };
        let msg = format!("Referenced {what} not found: \"{}\"", d.host);
        if host.ends_with(".svc.cluster.local") {
            cx.error(&format!("{path}.host"), msg);
        } else {
            cx.warn(&format!("{path}.host"), msg);
        }
    }
    if let Some(subset) = &d.subset
        && !world.subsets.contains(&(host, subset.clone()))
    {
        let what = if mirror {
            "mirror+subset in destinationrule"
        } else {
            "host+subset in destinationrule"
        };
        cx.error(
            &format!("{path}.subset"),
            format!("Referenced {what} not found: \"{}+{subset}\"", d.host),
        );
    }
}

fn weights(cx: &mut Cx<'_>, path: &str, ws: &[(Option<i32>, String)]) {
    let mut total: i64 = 0;
    for (w, wpath) in ws {
        if let Some(w) = w {
            if *w < 0 {
                cx.error(wpath, format!("weight {w} < 0"));
            }
            total += i64::from(*w);
        }
    }
    if ws.len() > 1 && total == 0 {
        cx.error(path, "total destination weight = 0");
    }
}

const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

fn virtual_service(cx: &mut Cx<'_>, vs: &VirtualService, world: &World<'_>) {
    let spec = &vs.spec;
    let delegate = spec.hosts.is_empty();
    if delegate {
        if !spec.gateways.is_empty() {
            cx.error(
                "spec.gateways",
                "delegate virtual service must have no gateways specified",
            );
        }
        if !spec.tls.is_empty() {
            cx.error(
                "spec.tls",
                "delegate virtual service must have no tls route specified",
            );
        }
        if !spec.tcp.is_empty() {
            cx.error(
                "spec.tcp",
                "delegate virtual service must have no tcp route specified",
            );
        }
    }
    let applies_to_mesh = spec.gateways.is_empty() || spec.gateways.iter().any(|g| g == "mesh");
    let mut seen_hosts = HashSet::new();
    for (i, h) in spec.hosts.iter().enumerate() {
        let path = format!("spec.hosts[{i}]");
        if h.is_empty() {
            cx.error(&path, "empty domain name not allowed");
        } else if h == "*" && applies_to_mesh {
            cx.error(
                &path,
                "wildcard host * is not allowed for virtual services bound to the mesh gateway",
            );
        }
        if !seen_hosts.insert(h.as_str()) {
            cx.error(
                &path,
                format!("duplicate hosts in virtual service: {h} & {h}"),
            );
        }
    }
    if spec.http.is_empty() && spec.tcp.is_empty() && spec.tls.is_empty() {
        cx.error(
            "spec",
            "http, tcp or tls must be provided in virtual service",
        );
    }
    for (i, r) in spec.http.iter().enumerate() {
        http_route(cx, &format!("spec.http[{i}]"), r, delegate, world);
    }
    for (kind, routes) in [
        ("tcp", spec.tcp.iter().map(|r| &r.route).collect::<Vec<_>>()),
        ("tls", spec.tls.iter().map(|r| &r.route).collect()),
    ] {
        for (i, route) in routes.iter().enumerate() {
            l4_route(cx, &format!("spec.{kind}[{i}].route"), route, world);
        }
    }
    for (i, m) in spec.tcp.iter().enumerate() {
        for (j, m) in m.match_.iter().enumerate() {
            if let Some(p) = m.port {
                istio_port(cx, &format!("spec.tcp[{i}].match[{j}].port"), p);
            }
        }
    }
    for (i, t) in spec.tls.iter().enumerate() {
        if t.match_.is_empty() {
            cx.error(
                &format!("spec.tls[{i}].match"),
                "TLS route must have at least one match condition",
            );
        }
        for (j, m) in t.match_.iter().enumerate() {
            if m.sni_hosts.is_empty() {
                cx.error(
                    &format!("spec.tls[{i}].match[{j}].sniHosts"),
                    "TLS match must have at least one SNI host",
                );
            }
        }
    }
}

fn l4_route(cx: &mut Cx<'_>, path: &str, route: &[RouteDestination], world: &World<'_>) {
    let ws: Vec<_> = route
        .iter()
        .enumerate()
        .map(|(j, d)| (d.weight, format!("{path}[{j}].weight")))
        .collect();
    weights(cx, path, &ws);
    for (j, d) in route.iter().enumerate() {
        let dp = format!("{path}[{j}].destination");
        destination(cx, &dp, &d.destination);
        destination_refs(cx, &dp, &d.destination, world, false);
    }
}

fn http_route(cx: &mut Cx<'_>, path: &str, r: &HttpRoute, delegate: bool, world: &World<'_>) {
    let p = |f: &str| format!("{path}.{f}");
    // Conflicts (istiod validateHTTPRouteConflict).
    if r.delegate.is_some() && !delegate {
        if r.redirect.is_some() {
            let name = r.name.as_deref().unwrap_or("");
            cx.error(
                &p("redirect"),
                format!("root HTTP route {name} must not specify redirect"),
            );
        }
        if !r.route.is_empty() {
            let name = r.name.as_deref().unwrap_or("");
            cx.error(
                &p("route"),
                format!("root HTTP route {name} must not specify route"),
            );
        }
    } else {
        if delegate && r.delegate.is_some() {
            cx.error(
                &p("delegate"),
                "delegate HTTP route cannot contain delegate",
            );
        }
        if r.redirect.is_some() {
            if !r.route.is_empty() {
                cx.error(
                    &p("redirect"),
                    "HTTP route cannot contain both route and redirect",
                );
            }
            if r.fault.is_some() {
                cx.error(
                    &p("redirect"),
                    "HTTP route cannot contain both fault and redirect",
                );
            }
            if r.rewrite.is_some() {
                cx.error(
                    &p("rewrite"),
                    "HTTP route rule cannot contain both rewrite and redirect",
                );
            }
            if r.direct_response.is_some() {
                cx.error(
                    &p("directResponse"),
                    "HTTP route rule cannot contain both direct_response and redirect",
                );
            }
        }
        if r.direct_response.is_some() {
            if !r.route.is_empty() {
                cx.error(
                    &p("directResponse"),
                    "HTTP route cannot contain both route and direct_response",
                );
            }
            if r.fault.is_some() {
                cx.error(
                    &p("directResponse"),
                    "HTTP route cannot contain both fault and direct_response",
                );
            }
            if r.rewrite.is_some() {
                cx.error(
                    &p("rewrite"),
                    "HTTP route rule cannot contain both rewrite and direct_response",
                );
            }
        }
        if r.redirect.is_none() && r.direct_response.is_none() && r.route.is_empty() {
            cx.error(path, "HTTP route, redirect or direct_response is required");
        }
    }
    if r.mirror.is_some() && !r.mirrors.is_empty() {
        cx.error(
            &p("mirrors"),
            "HTTP route cannot contain both mirror and mirrors",
        );
    }

    // Matches.
    for (j, m) in r.match_.iter().enumerate() {
        let mp = format!("{path}.match[{j}]");
        for (name, field, allow_empty_prefix) in [
            ("uri", &m.uri, true),
            ("scheme", &m.scheme, false),
            ("method", &m.method, false),
            ("authority", &m.authority, false),
        ] {
            if let Some(sm) = field {
                string_match(cx, &format!("{mp}.{name}"), sm, name, allow_empty_prefix);
            }
        }
        for (field, map) in [
            ("headers", &m.headers),
            ("queryParams", &m.query_params),
            ("withoutHeaders", &m.without_headers),
        ] {
            for (k, sm) in map {
                string_match(cx, &format!("{mp}.{field}.{k}"), sm, field, false);
            }
        }
        if let Some(port) = m.port {
            istio_port(cx, &format!("{mp}.port"), port);
        }
        if let Some(ns) = &m.source_namespace
            && !is_dns1123_label(ns)
        {
            cx.error(
                &format!("{mp}.sourceNamespace"),
                format!("sourceNamespace match {ns} is invalid"),
            );
        }
    }

    // Destinations and weights.
    let ws: Vec<_> = r
        .route
        .iter()
        .enumerate()
        .map(|(j, d)| (d.weight, format!("{path}.route[{j}].weight")))
        .collect();
    weights(cx, &p("route"), &ws);
    for (j, d) in r.route.iter().enumerate() {
        let dp = format!("{path}.route[{j}].destination");
        destination(cx, &dp, &d.destination);
        destination_refs(cx, &dp, &d.destination, world, false);
    }

    // Retries (istiod ValidateHTTPRetry).
    if let Some(rt) = &r.retries {
        let rp = p("retries");
        let attempts = rt.attempts.unwrap_or(0);
        if attempts < 0 {
            cx.error(&format!("{rp}.attempts"), "attempts cannot be negative");
        }
        if attempts == 0
            && (rt.per_try_timeout.is_some()
                || rt.retry_on.is_some()
                || rt.retry_remote_localities.is_some())
        {
            cx.error(
                &rp,
                "http retry policy configured when attempts are set to 0 (disabled)",
            );
        }
        duration(cx, &format!("{rp}.perTryTimeout"), &rt.per_try_timeout);
        duration(cx, &format!("{rp}.backoff"), &rt.backoff);
        if let Some(on) = rt.retry_on.as_deref().filter(|s| !s.is_empty()) {
            for policy in on.split(',') {
                let status_code = policy
                    .parse::<u16>()
                    .is_ok_and(|n| (100..=599).contains(&n));
                if !status_code && !RETRY_ON.contains(&policy) {
                    cx.error(
                        &format!("{rp}.retryOn"),
                        format!("\"{policy}\" is not a valid retryOn policy"),
                    );
                }
            }
        }
    }
    duration(cx, &p("timeout"), &r.timeout);

    // Rewrite and redirect.
    if let Some(rw) = &r.rewrite {
        if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
            cx.error(
                &p("rewrite"),
                "rewrite may only contain one of URI or UriRegexRewrite",
            );
        }
        if rw.uri.is_none() && rw.uri_regex_rewrite.is_none() && rw.authority.is_none() {
            cx.error(
                &p("rewrite"),
                "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified",
            );
        }
        if let Some(re) = &rw.uri_regex_rewrite
            && (re.match_.is_empty() || re.rewrite.is_empty())
        {
            cx.error(
                &p("rewrite.uriRegexRewrite"),
                "UriRegexRewrite requires both Rewrite and Match fields to be specified",
            );
        }
    }
    if let Some(rd) = &r.redirect {
        let rdp = p("redirect");
        if rd.uri.is_some() && rd.prefix_rewrite.is_some() {
            cx.error(
                &rdp,
                "redirect may only specify one of uri or prefix_rewrite",
            );
        }
        if rd.uri.is_none()
            && rd.prefix_rewrite.is_none()
            && rd.authority.is_none()
            && rd.port.is_none()
            && rd.derive_port.is_none()
            && rd.scheme.is_none()
        {
            cx.error(
                &rdp,
                "redirect must specify URI, authority, scheme, or port",
            );
        }
        if let Some(code) = rd.redirect_code
            && code != 0
            && !(300..=399).contains(&code)
        {
            cx.error(
                &format!("{rdp}.redirectCode"),
                format!("{code} is not a valid redirect code, must be 3xx"),
            );
        }
        if let Some(s) = &rd.scheme
            && s != "http"
            && s != "https"
        {
            cx.error(
                &format!("{rdp}.scheme"),
                "invalid redirect scheme, must be \"http\" or \"https\"",
            );
        }
        if let Some(port) = rd.port.filter(|p| *p > 0) {
            istio_port(cx, &format!("{rdp}.port"), port);
        }
    }
    if let Some(dr) = &r.direct_response
        && !(200..=599).contains(&dr.status)
    {
        cx.error(
            &p("directResponse.status"),
            format!("HTTP status {} is not in range 200-599", dr.status),
        );
    }

    // Fault injection.
    if let Some(f) = &r.fault {
        let fp = p("fault");
        if f.abort.is_none() && f.delay.is_none() {
            cx.error(
                &fp,
                "HTTP fault injection must have an abort and/or a delay",
            );
        }
        if let Some(a) = &f.abort {
            let ap = format!("{fp}.abort");
            percentage(cx, &format!("{ap}.percentage.value"), &a.percentage);
            if let Some(status) = a.http_status {
                if !(200..=600).contains(&status) {
                    cx.error(
                        &format!("{ap}.httpStatus"),
                        format!("HTTP status {status} is not in range 200-599"),
                    );
                }
            } else if a.http2_error.is_some() {
                cx.error(
                    &format!("{ap}.http2Error"),
                    "HTTP/2 abort fault injection not supported yet",
                );
            } else if a.grpc_status.is_none() {
                cx.warn(&ap, "abort configured, but error type not set");
            }
            if a.percentage.is_none() {
                cx.warn(
                    &ap,
                    "abort has no percentage, so it applies to no requests; set percentage.value",
                );
            }
        }
        if let Some(d) = &f.delay {
            let dp = format!("{fp}.delay");
            percentage(cx, &format!("{dp}.percentage.value"), &d.percentage);
            duration(cx, &format!("{dp}.fixedDelay"), &d.fixed_delay);
            if d.exponential_delay.is_some() {
                cx.error(
                    &format!("{dp}.exponentialDelay"),
                    "exponentialDelay not supported yet",
                );
            }
            if d.percentage.is_none() && d.percent.is_none() {
                cx.warn(
                    &dp,
                    "delay has no percentage, so it applies to no requests; set percentage.value",
                );
            }
        }
    }

    // Mirroring.
    if let Some(v) = r.mirror_percent {
        if v > 100 {
            cx.error(
                &p("mirrorPercent"),
                format!("mirror_percent must have a max value of 100 (it has {v})"),
            );
        }
        cx.warn(
            &p("mirrorPercent"),
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
        );
    }
    if let Some(mp) = &r.mirror_percentage {
        if mp.value > 100.0 {
            cx.error(
                &p("mirrorPercentage.value"),
                format!(
                    "mirror_percentage must have a max value of 100 (it has {:.6})",
                    mp.value
                ),
            );
        }
        if mp.value < 0.0 {
            cx.error(
                &p("mirrorPercentage.value"),
                format!(
                    "mirror_percentage must have a min value of 0 (it has {:.6})",
                    mp.value
                ),
            );
        }
    }
    if let Some(m) = &r.mirror {
        destination(cx, &p("mirror"), m);
        destination_refs(cx, &p("mirror"), m, world, true);
    }
    for (j, m) in r.mirrors.iter().enumerate() {
        let mp = format!("{path}.mirrors[{j}]");
        destination(cx, &format!("{mp}.destination"), &m.destination);
        destination_refs(
            cx,
            &format!("{mp}.destination"),
            &m.destination,
            world,
            true,
        );
        if let Some(pct) = &m.percentage {
            if pct.value > 100.0 {
                cx.error(
                    &format!("{mp}.percentage.value"),
                    format!(
                        "mirror percentage must have a max value of 100 (it has {:.6})",
                        pct.value
                    ),
                );
            }
            if pct.value < 0.0 {
                cx.error(
                    &format!("{mp}.percentage.value"),
                    format!(
                        "mirror percentage must have a min value of 0 (it has {:.6})",
                        pct.value
                    ),
                );
            }
        }
    }
}

fn destination_rule(cx: &mut Cx<'_>, dr: &DestinationRule, world: &World<'_>) {
    let spec = &dr.spec;
    if spec.host.is_empty() {
        cx.error("spec.host", "Required value");
    }
    if let Some(tp) = &spec.traffic_policy {
        traffic_policy(cx, "spec.trafficPolicy", tp);
    }
    let mut names = HashSet::new();
    let host = fqdn(&spec.host, cx.namespace());
    let service = world.services.get(&host).copied();
    for (i, s) in spec.subsets.iter().enumerate() {
        let sp = format!("spec.subsets[{i}]");
        if s.name.is_empty() {
            cx.error(&format!("{sp}.name"), "subset name cannot be empty");
        } else if !is_dns1123_label(&s.name) {
            cx.error(
                &format!("{sp}.name"),
                format!("subset name is invalid: {}", s.name),
            );
        }
        if !names.insert(s.name.as_str()) {
            cx.error(
                &format!("{sp}.name"),
                format!("duplicate subset names: {}", s.name),
            );
        }
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(cx, &format!("{sp}.trafficPolicy"), tp);
        }
        // IST0173: a subset whose labels select none of the Service's pods.
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
                if from_rollout {
                    cx.warn(&sp, msg)
                } else {
                    cx.error(&sp, msg)
                }
            }
        }
    }
    if let Some(ws) = &spec.workload_selector {
        selector_labels(cx, "spec.workloadSelector", &Some(ws.clone()));
    }
}

fn traffic_policy(cx: &mut Cx<'_>, path: &str, tp: &TrafficPolicy) {
    if tp.outlier_detection.is_none()
        && tp.connection_pool.is_none()
        && tp.load_balancer.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none()
    {
        cx.error(path, "traffic policy must have at least one field");
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        cx.error(path, "tunnel and proxyProtocol must not be set together");
    }
    policy_parts(
        cx,
        path,
        &tp.outlier_detection,
        &tp.connection_pool,
        &tp.load_balancer,
        &tp.tls,
    );
    if let Some(t) = &tp.tunnel {
        let tp_ = format!("{path}.tunnel");
        if let Some(proto) = &t.protocol
            && proto != "CONNECT"
            && proto != "POST"
        {
            cx.error(
                &format!("{tp_}.protocol"),
                "tunnel protocol must be \"CONNECT\" or \"POST\"",
            );
        }
        if !(1..=65535).contains(&t.target_port) {
            cx.error(
                &format!("{tp_}.targetPort"),
                format!(
                    "tunnel target port is invalid: port number {} must be in the range 1..65535",
                    t.target_port
                ),
            );
        }
    }
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let pp = format!("{path}.portLevelSettings[{i}]");
        match pl.port.as_ref().and_then(|p| p.number) {
            None => cx.error(&pp, "portTrafficPolicy must have valid port"),
            Some(n) => istio_port(cx, &format!("{pp}.port.number"), n),
        }
        if pl.outlier_detection.is_none()
            && pl.connection_pool.is_none()
            && pl.load_balancer.is_none()
            && pl.tls.is_none()
        {
            cx.error(&pp, "port traffic policy must have at least one field");
        } else {
            policy_parts(
                cx,
                &pp,
                &pl.outlier_detection,
                &pl.connection_pool,
                &pl.load_balancer,
                &pl.tls,
            );
        }
    }
}

fn policy_parts(
    cx: &mut Cx<'_>,
    path: &str,
    outlier: &Option<OutlierDetection>,
    pool: &Option<ConnectionPoolSettings>,
    lb: &Option<crate::networking::LoadBalancerSettings>,
    tls: &Option<crate::networking::ClientTlsSettings>,
) {
    if let Some(o) = outlier {
        let op = format!("{path}.outlierDetection");
        duration(cx, &format!("{op}.baseEjectionTime"), &o.base_ejection_time);
        duration(cx, &format!("{op}.interval"), &o.interval);
        if o.consecutive_errors.is_some_and(|n| n != 0) {
            cx.warn(
                &format!("{op}.consecutiveErrors"),
                "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
            );
        }
        if !o.split_external_local_origin_errors.unwrap_or(false)
            && o.consecutive_local_origin_failures.unwrap_or(0) > 0
        {
            cx.error(
                &format!("{op}.consecutiveLocalOriginFailures"),
                "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
            );
        }
        percent_0_100(
            cx,
            &format!("{op}.maxEjectionPercent"),
            o.max_ejection_percent,
        );
        percent_0_100(cx, &format!("{op}.minHealthPercent"), o.min_health_percent);
    }
    if let Some(pool) = pool {
        let pp = format!("{path}.connectionPool");
        if pool.http.is_none() && pool.tcp.is_none() {
            cx.error(&pp, "connection pool must have at least one field");
        }
        if let Some(h) = &pool.http {
            let hp = format!("{pp}.http");
            for (field, v, msg) in [
                (
                    "http1MaxPendingRequests",
                    h.http1_max_pending_requests,
                    "http1 max pending requests must be non-negative",
                ),
                (
                    "http2MaxRequests",
                    h.http2_max_requests,
                    "http2 max requests must be non-negative",
                ),
                (
                    "maxRequestsPerConnection",
                    h.max_requests_per_connection,
                    "max requests per connection must be non-negative",
                ),
                (
                    "maxRetries",
                    h.max_retries,
                    "max retries must be non-negative",
                ),
                (
                    "maxConcurrentStreams",
                    h.max_concurrent_streams,
                    "max concurrent streams must be non-negative",
                ),
            ] {
                if v.is_some_and(|v| v < 0) {
                    cx.error(&format!("{hp}.{field}"), msg);
                }
            }
            duration(cx, &format!("{hp}.idleTimeout"), &h.idle_timeout);
            if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
                && h.use_client_protocol == Some(true)
            {
                cx.error(
                    &format!("{hp}.useClientProtocol"),
                    "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
                );
            }
        }
        if let Some(t) = &pool.tcp {
            let tp = format!("{pp}.tcp");
            if t.max_connections.is_some_and(|v| v < 0) {
                cx.error(
                    &format!("{tp}.maxConnections"),
                    "max connections must be non-negative",
                );
            }
            duration(cx, &format!("{tp}.connectTimeout"), &t.connect_timeout);
            duration(
                cx,
                &format!("{tp}.maxConnectionDuration"),
                &t.max_connection_duration,
            );
            if t.idle_timeout
                .as_ref()
                .is_some_and(|d| d.get().as_millis() != 0)
            {
                duration(cx, &format!("{tp}.idleTimeout"), &t.idle_timeout);
            }
        }
    }
    if let Some(lb) = lb
        && let Some(ch) = &lb.consistent_hash
    {
        let cp = format!("{path}.loadBalancer.consistentHash");
        if ch.http_cookie.as_ref().is_some_and(|c| c.name.is_empty()) {
            cx.error(&format!("{cp}.httpCookie"), "name required for HttpCookie");
        }
        if ch.minimum_ring_size.is_some_and(|n| n != 0) {
            cx.warn(
                &format!("{cp}.minimumRingSize"),
                "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
            );
            if ch.ring_hash.is_some() || ch.maglev.is_some() {
                cx.error(
                    &cp,
                    "only one of MinimumRingSize or Maglev/Ringhash can be specified",
                );
            }
        }
    }
    if let Some(tls) = tls {
        let tp = format!("{path}.tls");
        match tls.mode {
            Some(ClientTlsMode::IstioMutual) => {
                for (field, v) in [
                    ("clientCertificate", &tls.client_certificate),
                    ("privateKey", &tls.private_key),
                    ("caCertificates", &tls.ca_certificates),
                    ("credentialName", &tls.credential_name),
                    ("caCrl", &tls.ca_crl),
                ] {
                    if v.as_deref().is_some_and(|s| !s.is_empty()) {
                        cx.warn(
                            &format!("{tp}.{field}"),
                            format!("{field} should be empty if mode is ISTIO_MUTUAL (Istio uses its own certificates; this value is ignored)"),
                        );
                    }
                }
            }
            Some(ClientTlsMode::Mutual) if tls.credential_name.is_none() => {
                if tls.client_certificate.as_deref().is_none_or(str::is_empty) {
                    cx.error(&tp, "client certificate required for mutual tls");
                }
                if tls.private_key.as_deref().is_none_or(str::is_empty) {
                    cx.error(&tp, "private key required for mutual tls");
                }
            }
            Some(ClientTlsMode::Simple | ClientTlsMode::Mutual)
                if tls.credential_name.is_some()
                    && (tls.client_certificate.is_some()
                        || tls.ca_certificates.is_some()
                        || tls.private_key.is_some()
                        || tls.ca_crl.is_some()) =>
            {
                cx.error(&tp, "cannot specify client certificates or CA certificate or CA CRL If credentialName is set");
            }
            _ => {}
        }
    }
}

fn gateway(cx: &mut Cx<'_>, g: &Gateway) {
    if g.spec.servers.is_empty() {
        cx.error("spec.servers", "gateway must have at least one server");
    }
    let mut names = HashSet::new();
    for (i, s) in g.spec.servers.iter().enumerate() {
        let sp = format!("spec.servers[{i}]");
        if s.hosts.is_empty() {
            cx.error(
                &format!("{sp}.hosts"),
                "server config must contain at least one host",
            );
        }
        if s.port.name.is_empty() {
            cx.error(
                &format!("{sp}.port.name"),
                format!(
                    "port name must be set: number:{} protocol:\"{}\"",
                    s.port.number, s.port.protocol
                ),
            );
        } else if !names.insert(s.port.name.as_str()) {
            cx.error(
                &format!("{sp}.port.name"),
                format!(
                    "port names in servers must be unique: duplicate name {}",
                    s.port.name
                ),
            );
        }
        if s.bind.as_deref().is_none_or(|b| !b.starts_with("unix://")) {
            istio_port(cx, &format!("{sp}.port.number"), s.port.number);
        }
        let proto = s.port.protocol.to_ascii_uppercase();
        if ![
            "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "REDIS", "MYSQL", "TCP", "TLS",
            "UDP",
        ]
        .contains(&proto.as_str())
        {
            cx.error(
                &format!("{sp}.port.protocol"),
                format!("invalid protocol \"{}\", supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP", s.port.protocol),
            );
        }
        let is_tls = proto == "HTTPS" || proto == "TLS";
        let redirect_only = s
            .tls
            .as_ref()
            .is_some_and(|t| t.https_redirect == Some(true));
        if is_tls && s.tls.is_none() {
            cx.error(
                &format!("{sp}.tls"),
                "server must have TLS settings for HTTPS/TLS protocols",
            );
        } else if !is_tls && s.tls.is_some() && !redirect_only {
            cx.error(
                &format!("{sp}.tls"),
                "server cannot have TLS settings for non HTTPS/TLS ports",
            );
        }
        if redirect_only && proto != "HTTP" {
            cx.warn(
                &format!("{sp}.tls.httpsRedirect"),
                "tls.httpsRedirect should only be used with http servers",
            );
        }
    }
}

fn service_entry(cx: &mut Cx<'_>, se: &ServiceEntry) {
    let spec = &se.spec;
    if spec.hosts.is_empty() {
        cx.error("spec.hosts", "service entry must have at least one host");
    }
    if spec.workload_selector.is_some() && !spec.endpoints.is_empty() {
        cx.error(
            "spec.workloadSelector",
            "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
        );
    }
    let mut names = HashSet::new();
    let mut numbers = HashSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        istio_port(cx, &format!("{pp}.number"), p.number);
        if !names.insert(p.name.as_str()) {
            cx.error(
                &format!("{pp}.name"),
                format!("service entry port name \"{}\" already defined", p.name),
            );
        }
        if !numbers.insert(p.number) {
            cx.error(
                &format!("{pp}.number"),
                format!("service entry port {} already defined", p.number),
            );
        }
    }
    let resolution = spec.resolution.unwrap_or(Resolution::None);
    if resolution == Resolution::None && !spec.endpoints.is_empty() {
        cx.error(
            "spec.endpoints",
            "no endpoints should be provided for resolution type none",
        );
    }
    if !matches!(resolution, Resolution::None | Resolution::Static)
        && spec.addresses.iter().any(|a| a.contains('/'))
    {
        cx.error(
            "spec.addresses",
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        );
    }
}

// === Istio security and telemetry ===

fn authorization_policy(cx: &mut Cx<'_>, ap: &AuthorizationPolicy, world: &World<'_>) {
    let spec = &ap.spec;
    let action = spec.action();
    if spec.selector.is_some() && (spec.target_ref.is_some() || !spec.target_refs.is_empty()) {
        cx.error("spec", "only one of targetRefs or selector can be set");
    }
    selector_labels(cx, "spec.selector", &spec.selector);
    selector_matches_workloads(cx, "spec.selector", &spec.selector, world);
    let meaningless = |a: &str| {
        format!(
            "{a} action without `rules` is meaningless as it will never be triggered, add an empty rule `{{}}` if you want it be triggered for every request"
        )
    };
    match action {
        Action::Custom if spec.rules.is_none() => cx.error("spec", meaningless("CUSTOM")),
        Action::Custom if spec.provider.as_ref().is_none_or(|p| p.name.is_empty()) => {
            cx.error("spec.provider", "`provider.name` must not be empty")
        }
        Action::Deny if spec.rules.is_none() => cx.error("spec", meaningless("DENY")),
        // istiod accepts it, but it logs nothing.
        Action::Audit if spec.rules.is_none() => cx.warn("spec", meaningless("AUDIT")),
        _ => {}
    }
    if spec.provider.is_some() && action != Action::Custom {
        let name = format!("{action:?}").to_ascii_uppercase();
        cx.error(
            "spec.provider",
            format!("`provider` must not be with non CUSTOM action, found {name}"),
        );
    }
    for (i, rule) in spec.rules().iter().enumerate() {
        let rp = format!("spec.rules[{i}]");
        if rule.from.as_ref().is_some_and(Vec::is_empty) {
            cx.error(
                &format!("{rp}.from"),
                format!("`from` must not be empty, found at rule {i}"),
            );
        }
        for (j, from) in rule.from.iter().flatten().enumerate() {
            let fp = format!("{rp}.from[{j}]");
            let Some(src) = &from.source else {
                cx.error(
                    &fp,
                    format!("`from.source` must not be nil, found at rule {i}"),
                );
                continue;
            };
            let sp = format!("{fp}.source");
            let lists = [
                ("principals", &src.principals),
                ("notPrincipals", &src.not_principals),
                ("requestPrincipals", &src.request_principals),
                ("notRequestPrincipals", &src.not_request_principals),
                ("namespaces", &src.namespaces),
                ("notNamespaces", &src.not_namespaces),
                ("serviceAccounts", &src.service_accounts),
                ("notServiceAccounts", &src.not_service_accounts),
                ("ipBlocks", &src.ip_blocks),
                ("notIpBlocks", &src.not_ip_blocks),
                ("remoteIpBlocks", &src.remote_ip_blocks),
                ("notRemoteIpBlocks", &src.not_remote_ip_blocks),
                ("trustDomains", &src.trust_domains),
                ("notTrustDomains", &src.not_trust_domains),
            ];
            if lists
                .iter()
                .all(|(_, l)| l.as_ref().is_none_or(Vec::is_empty))
            {
                cx.error(
                    &sp,
                    format!("`from.source` must not be empty, found at rule {i}"),
                );
            }
            let sa = src.service_accounts.is_some() || src.not_service_accounts.is_some();
            let pn = src.principals.is_some()
                || src.not_principals.is_some()
                || src.namespaces.is_some()
                || src.not_namespaces.is_some();
            if sa && pn {
                cx.error(
                    &sp,
                    "Cannot set serviceAccounts with namespaces or principals",
                );
            }
            for (name, list) in lists {
                if list.iter().flatten().any(String::is_empty) {
                    let key = upper_first(name);
                    cx.error(
                        &format!("{sp}.{name}"),
                        format!("empty value not allowed, found in {key}"),
                    );
                }
            }
            if action == Action::Custom {
                for (name, list) in &lists[..8] {
                    if list.as_ref().is_some_and(|l| !l.is_empty()) {
                        cx.error(
                            &format!("{sp}.{name}"),
                            format!(
                                "From.{} is currently not supported with CUSTOM action",
                                upper_first(name)
                            ),
                        );
                    }
                }
            }
        }
        if rule.to.as_ref().is_some_and(Vec::is_empty) {
            cx.error(
                &format!("{rp}.to"),
                format!("`to` must not be empty, found at rule {i}"),
            );
        }
        for (j, to) in rule.to.iter().flatten().enumerate() {
            let tp = format!("{rp}.to[{j}]");
            let Some(op) = &to.operation else {
                cx.error(
                    &tp,
                    format!("`to.operation` must not be nil, found at rule {i}"),
                );
                continue;
            };
            let op_path = format!("{tp}.operation");
            let lists = [
                ("hosts", &op.hosts),
                ("notHosts", &op.not_hosts),
                ("ports", &op.ports),
                ("notPorts", &op.not_ports),
                ("methods", &op.methods),
                ("notMethods", &op.not_methods),
                ("paths", &op.paths),
                ("notPaths", &op.not_paths),
            ];
            if lists
                .iter()
                .all(|(_, l)| l.as_ref().is_none_or(Vec::is_empty))
            {
                cx.error(
                    &op_path,
                    format!("`to.operation` must not be empty, found at rule {i}"),
                );
            }
            for (name, list) in lists {
                for (k, v) in list.iter().flatten().enumerate() {
                    if v.is_empty() {
                        cx.error(
                            &format!("{op_path}.{name}"),
                            format!("empty value not allowed, found in {}", upper_first(name)),
                        );
                    } else if (name == "ports" || name == "notPorts")
                        && v.parse::<u32>().map_or(true, |p| p > 65535)
                    {
                        cx.error(&format!("{op_path}.{name}[{k}]"), format!("bad port ({v})"));
                    }
                }
            }
        }
        for (j, w) in rule.when.iter().enumerate() {
            let wp = format!("{rp}.when[{j}]");
            if w.key.is_empty() {
                cx.error(&format!("{wp}.key"), "`key` must not be empty");
            } else if w.values.is_empty() && w.not_values.is_empty() {
                cx.error(
                    &wp,
                    format!(
                        "at least one of `values` or `notValues` must be set for key {}",
                        w.key
                    ),
                );
            }
        }
    }
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn peer_authentication(cx: &mut Cx<'_>, pa: &PeerAuthentication, world: &World<'_>) {
    let spec = &pa.spec;
    selector_labels(cx, "spec.selector", &spec.selector);
    selector_matches_workloads(cx, "spec.selector", &spec.selector, world);
    let Some(ports) = &spec.port_level_mtls else {
        return;
    };
    if !spec.has_selector() {
        // The CRD's CEL rule, which `kubectl apply` reports (istiod's webhook says "mesh/namespace
        // peer authentication cannot have port level mTLS").
        cx.error("spec.portLevelMtls", "portLevelMtls requires selector");
    }
    if ports.is_empty() {
        cx.error(
            "spec.portLevelMtls",
            "port level mTLS, if defined, must have at least one element",
        );
    }
    for key in ports.keys() {
        if !key
            .trim()
            .parse::<u32>()
            .is_ok_and(|p| (1..=65535).contains(&p))
        {
            cx.error(
                &format!("spec.portLevelMtls.{key}"),
                "port must be between 1-65535",
            );
        }
    }
}

fn telemetry(cx: &mut Cx<'_>, t: &Telemetry) {
    let spec = &t.spec;
    if spec.selector.is_some() && (spec.target_ref.is_some() || !spec.target_refs.is_empty()) {
        cx.error("spec", "only one of targetRefs or selector can be set");
    }
    selector_labels(cx, "spec.selector", &spec.selector);
    if spec.tracing.len() > 1 {
        cx.warn(
            "spec.tracing",
            "multiple tracing is not currently supported",
        );
    }
    for (i, tr) in spec.tracing.iter().enumerate() {
        let tp = format!("spec.tracing[{i}]");
        if tr.providers.len() > 1 {
            cx.warn(
                &format!("{tp}.providers"),
                "multiple providers is not currently supported",
            );
        }
        if let Some(p) = tr.random_sampling_percentage
            && !(0.0..=100.0).contains(&p)
        {
            cx.error(
                &format!("{tp}.randomSamplingPercentage"),
                "randomSamplingPercentage must be in range [0.0, 100.0]",
            );
        }
        for (name, tag) in &tr.custom_tags {
            let path = format!("{tp}.customTags.{name}");
            if name.is_empty() {
                cx.error(&path, "tag name may not be empty");
            }
            if tag.literal.is_none()
                && tag.environment.is_none()
                && tag.header.is_none()
                && tag.formatter.is_none()
            {
                cx.error(&path, format!("tag '{name}' may not have a nil value"));
            }
            if tag.literal.as_ref().is_some_and(|l| l.value.is_empty()) {
                cx.error(&path, "literal tag value may not be empty");
            }
            if tag.header.as_ref().is_some_and(|h| h.name.is_empty()) {
                cx.error(&path, "header tag name may not be empty");
            }
            if tag.environment.as_ref().is_some_and(|e| e.name.is_empty()) {
                cx.error(&path, "environment tag name may not be empty");
            }
        }
    }
}

// === Across objects ===

fn duplicates(m: &Manifests, out: &mut Vec<Diagnostic>) {
    let mut first: HashMap<(&str, &str, &str), &Document> = HashMap::new();
    for d in &m.documents {
        let r = &d.resource;
        if r.name().is_empty() {
            continue;
        }
        match first.get(&(r.kind(), r.namespace(), r.name())) {
            None => {
                first.insert((r.kind(), r.namespace(), r.name()), d);
            }
            Some(f) => {
                out.push(Diagnostic {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn diags(text: &str) -> Vec<String> {
        let m = crate::load_str("v.yaml", text).unwrap_or_else(|e| panic!("{e}"));
        validate(&m).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn port_level_mtls_requires_selector_as_in_the_seed() {
        // The seed's failed attempt (troubleshooting 6).
        let text = "\
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: default
  namespace: blog-system
spec:
  mtls:
    mode: STRICT
  portLevelMtls:
    80:
      mode: PERMISSIVE
";
        assert_eq!(
            diags(text),
            vec![
                "v.yaml:9: error: PeerAuthentication blog-system/default: spec.portLevelMtls: portLevelMtls requires selector"
            ]
        );
    }

    #[test]
    fn port_level_mtls_port_range_and_empty_map() {
        let text = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: ns}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: web}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web, namespace: ns}
spec:
  selector: {matchLabels: {app: web}}
  portLevelMtls:
    \"0\": {mode: DISABLE}
    70000: {mode: DISABLE}
    8080: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: empty, namespace: ns}
spec:
  selector: {matchLabels: {app: web}}
  portLevelMtls: {}
";
        assert_eq!(
            diags(text),
            vec![
                "v.yaml:17: error: PeerAuthentication ns/web: spec.portLevelMtls.0: port must be between 1-65535",
                "v.yaml:18: error: PeerAuthentication ns/web: spec.portLevelMtls.70000: port must be between 1-65535",
                "v.yaml:26: error: PeerAuthentication ns/empty: spec.portLevelMtls: port level mTLS, if defined, must have at least one element",
            ]
        );
    }

    const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web-service, namespace: blog-system}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: blog-system}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, version: stable}}
    spec:
      containers: [{name: web, image: web, ports: [{name: http, containerPort: 80}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: blog-system}
spec:
  host: web-service
  subsets:
  - {name: stable, labels: {version: stable}}
";

    #[test]
    fn virtual_service_weights_retries_and_conflicts() {
        let text = format!(
            "{SERVICES}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web-vsvc, namespace: blog-system}}
spec:
  hosts: [web-service]
  http:
  - name: zero
    route:
    - destination: {{host: web-service, subset: stable}}
      weight: 0
    - destination: {{host: web-service}}
      weight: 0
  - name: negative
    route:
    - destination: {{host: web-service}}
      weight: -5
    - destination:
        subset: stable
      weight: 105
    retries:
      attempts: -1
      retryOn: 5xx,sometimes
  - name: both
    redirect: {{uri: /new}}
    rewrite: {{uri: /old}}
"
        );
        assert_eq!(
            diags(&text),
            vec![
                "v.yaml:33: error: VirtualService blog-system/web-vsvc: spec.http[0].route: total destination weight = 0",
                "v.yaml:41: error: VirtualService blog-system/web-vsvc: spec.http[1].route[0].weight: weight -5 < 0",
                "v.yaml:42: error: VirtualService blog-system/web-vsvc: spec.http[1].route[1].destination.host: Required value",
                "v.yaml:46: error: VirtualService blog-system/web-vsvc: spec.http[1].retries.attempts: attempts cannot be negative",
                "v.yaml:47: error: VirtualService blog-system/web-vsvc: spec.http[1].retries.retryOn: \"sometimes\" is not a valid retryOn policy",
                "v.yaml:50: error: VirtualService blog-system/web-vsvc: spec.http[2].rewrite: HTTP route rule cannot contain both rewrite and redirect",
            ]
        );
    }

    #[test]
    fn virtual_service_references_and_fault_percentage() {
        let text = format!(
            "{SERVICES}---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: v, namespace: blog-system}}
spec:
  hosts: [web-service]
  http:
  - route:
    - destination: {{host: web-service, subset: canary}}
    - destination: {{host: wes-service}}
    - destination: {{host: api.example.com}}
    fault:
      delay: {{fixedDelay: 2s}}
    mirror: {{host: web-service, subset: stable}}
    mirrorPercentage: {{value: 150}}
"
        );
        assert_eq!(
            diags(&text),
            vec![
                "v.yaml:32: error: VirtualService blog-system/v: spec.http[0].route: total destination weight = 0",
                "v.yaml:33: error: VirtualService blog-system/v: spec.http[0].route[0].destination.subset: Referenced host+subset in destinationrule not found: \"web-service+canary\"",
                "v.yaml:34: error: VirtualService blog-system/v: spec.http[0].route[1].destination.host: Referenced host not found: \"wes-service\"",
                "v.yaml:35: warning: VirtualService blog-system/v: spec.http[0].route[2].destination.host: Referenced host not found: \"api.example.com\"",
                "v.yaml:37: warning: VirtualService blog-system/v: spec.http[0].fault.delay: delay has no percentage, so it applies to no requests; set percentage.value",
                "v.yaml:39: error: VirtualService blog-system/v: spec.http[0].mirrorPercentage.value: mirror_percentage must have a max value of 100 (it has 150.000000)",
            ]
        );
    }

    #[test]
    fn destination_rule_subsets_tls_and_outlier_detection() {
        let text = format!(
            "{SERVICES}---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {{name: d, namespace: blog-system}}
spec:
  host: web-service
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
      clientCertificate: /etc/certs/cert.pem
    outlierDetection:
      maxEjectionPercent: 150
      interval: 0s
  subsets:
  - name: stable
    labels: {{version: stable}}
  - name: stable
    labels: {{version: canary}}
"
        );
        assert_eq!(
            diags(&text),
            vec![
                "v.yaml:34: warning: DestinationRule blog-system/d: spec.trafficPolicy.tls.clientCertificate: clientCertificate should be empty if mode is ISTIO_MUTUAL (Istio uses its own certificates; this value is ignored)",
                "v.yaml:36: error: DestinationRule blog-system/d: spec.trafficPolicy.outlierDetection.maxEjectionPercent: percentage 150 is not in range 0..100",
                "v.yaml:37: error: DestinationRule blog-system/d: spec.trafficPolicy.outlierDetection.interval: duration must be greater than 1ms",
                "v.yaml:41: error: DestinationRule blog-system/d: spec.subsets[1].name: duplicate subset names: stable",
                "v.yaml:41: error: DestinationRule blog-system/d: spec.subsets[1]: The Subset stable defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream).",
            ]
        );
    }

    #[test]
    fn authorization_policy_rules() {
        let text = format!(
            "{SERVICES}---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: a, namespace: blog-system}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  rules:
  - from:
    - source:
        serviceAccounts: [blog-system/web]
        principals: [cluster.local/ns/blog-system/sa/web]
    when:
    - key: request.headers[x-user]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {{name: custom, namespace: blog-system}}
spec:
  action: CUSTOM
  rules: [{{}}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {{name: deny, namespace: blog-system}}
spec:
  action: DENY
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {{name: audit, namespace: blog-system}}
spec:
  action: AUDIT
  selector: {{matchLabels: {{app: nothing}}}}
"
        );
        assert_eq!(
            diags(&text),
            vec![
                "v.yaml:33: error: AuthorizationPolicy blog-system/a: spec.rules[0].from[0].source: Cannot set serviceAccounts with namespaces or principals",
                "v.yaml:37: error: AuthorizationPolicy blog-system/a: spec.rules[0].when[0]: at least one of `values` or `notValues` must be set for key request.headers[x-user]",
                "v.yaml:42: error: AuthorizationPolicy blog-system/custom: spec.provider: `provider.name` must not be empty",
                "v.yaml:49: error: AuthorizationPolicy blog-system/deny: spec: DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
                "v.yaml:55: warning: AuthorizationPolicy blog-system/audit: spec: AUDIT action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
                "v.yaml:57: warning: AuthorizationPolicy blog-system/audit: spec.selector: No matching workloads for this resource with the following labels: app=nothing",
            ]
        );
    }

    #[test]
    fn deployment_selector_must_match_template_labels() {
        let text = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: ns}
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: webb}
    spec:
      containers:
      - name: web
        image: web
        ports: [{name: http, containerPort: 70000}]
        env:
        - name: X
          valueFrom: {fieldRef: {fieldPath: status.phase}}
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: r, namespace: ns}
spec:
  template:
    metadata: {labels: {app: r}}
    spec:
      containers: [{name: r, image: r}]
";
        assert_eq!(
            diags(text),
            vec![
                "v.yaml:9: error: Deployment ns/web: spec.template.metadata.labels: `selector` does not match template `labels`",
                "v.yaml:14: error: Deployment ns/web: spec.template.spec.containers[0].ports[0].containerPort: must be between 1 and 65535, inclusive",
                "v.yaml:17: error: Deployment ns/web: spec.template.spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: Unsupported value: \"status.phase\": supported values: \"metadata.name\", \"metadata.namespace\", \"metadata.uid\", \"spec.nodeName\", \"spec.serviceAccountName\", \"status.hostIP\", \"status.hostIPs\", \"status.podIP\", \"status.podIPs\", \"metadata.labels['<KEY>']\", \"metadata.annotations['<KEY>']\"",
                "v.yaml:22: error: Rollout ns/r: spec.selector: Required value",
            ]
        );
    }

    #[test]
    fn service_ports_and_selector_sanity() {
        let text = format!(
            "{SERVICES}---
apiVersion: v1
kind: Service
metadata: {{name: s, namespace: blog-system}}
spec:
  selector: {{app: web}}
  ports:
  - {{port: 80, targetPort: grpc}}
  - {{name: http, port: 0, targetPort: 70000}}
---
apiVersion: v1
kind: Service
metadata: {{name: lonely, namespace: blog-system}}
spec:
  selector: {{app: nobody}}
  ports: [{{port: 80}}]
"
        );
        assert_eq!(
            diags(&text),
            vec![
                "v.yaml:32: error: Service blog-system/s: spec.ports[0].name: Required value",
                "v.yaml:32: warning: Service blog-system/s: spec.ports[0].targetPort: targetPort \"grpc\" is not the name of a containerPort of the selected pods (Deployment web)",
                "v.yaml:33: error: Service blog-system/s: spec.ports[1].port: must be between 1 and 65535, inclusive",
                "v.yaml:33: error: Service blog-system/s: spec.ports[1].targetPort: must be between 1 and 65535, inclusive",
                "v.yaml:39: warning: Service blog-system/lonely: spec.selector: selector app=nobody matches no pods of any Deployment or Rollout in namespace blog-system",
            ]
        );
    }

    #[test]
    fn duplicate_objects_across_files_name_the_first() {
        let a = crate::load_str(
            "a.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: blog-system\n",
        )
        .unwrap();
        let mut m = crate::load_str(
            "b.yaml",
            "# again\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: blog-system}\n",
        )
        .unwrap();
        let mut all = a;
        all.extend(std::mem::take(&mut m));
        let d: Vec<String> = validate(&all).iter().map(ToString::to_string).collect();
        assert_eq!(
            d,
            vec![
                "b.yaml:5: error: Namespace blog-system: duplicate Namespace blog-system: first defined at a.yaml:4"
            ]
        );
        // Same name, different kind or namespace: no duplicate.
        let ok = "apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: a}\nspec: {ports: [{port: 1}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: b}\nspec: {ports: [{port: 1}]}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: a}\n";
        assert_eq!(diags(ok), Vec::<String>::new());
    }

    #[test]
    fn objects_need_a_name() {
        assert_eq!(
            diags("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  namespace: a\n"),
            [
                "v.yaml:3: error: ConfigMap a/<no name>: metadata.name: Required value: name or generateName is required"
            ]
        );
    }
}
