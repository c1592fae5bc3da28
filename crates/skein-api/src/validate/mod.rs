//! Validation of loaded manifests with the messages Kubernetes and Istio give for the same
//! mistakes (Istio's CRD CEL rules and istiod's webhook, `pkg/config/validation`; Kubernetes'
//! apps/core validation; `istioctl analyze` for references between objects), each at the
//! `file:line` of the offending field.
//!
//! Each kind is checked in the module of its API group (`k8s`, `networking`, `security`,
//! `telemetry`, as in the model); what needs other objects (hosts, subsets, workloads a
//! selector matches, duplicates) is in `cross`, over the [`World`] of known objects. Hosts are
//! resolved by `skein_snapshot::names`, the rule the control plane routes by.

use std::collections::{HashMap, HashSet};
use std::fmt;

use skein_snapshot::names;

use crate::codes::{Code, Severity};
use crate::k8s::{PodTemplateSpec, Service};
use crate::networking::DestinationRule;
use crate::types::{Duration, Labels, Percent, WorkloadSelector};
use crate::{Document, Manifests, Resource, Source};

mod cross;
mod gateway_api;
mod istio;
mod k8s;
mod networking;
mod pitfalls;
mod security;
mod telemetry;
mod unapplied;

/// One finding: `file:line: error: VirtualService blog-system/web-vsvc: spec.http[0]: total
/// destination weight = 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The analyzer code (`IST0106` for what Istio's validation refuses).
    pub code: Code,
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

    /// An error that refuses the config ([`Code::refuses`]); the other findings are reported
    /// by `skein analyze` and `skein up`, and the config is taken.
    pub fn refuses(&self) -> bool {
        self.is_error() && self.code.refuses()
    }

    /// istioctl's origin: `VirtualService web-vsvc.blog-system 50-istio-traffic.yaml:40`
    /// (`Namespace blog-system` for cluster-scoped objects), with the file as given.
    pub fn origin(&self, file: &str) -> String {
        let (kind, rest) = self.object.split_once(' ').unwrap_or((&self.object, ""));
        let name = match rest.split_once('/') {
            Some((ns, name)) => format!("{name}.{ns}"),
            None => rest.to_string(),
        };
        format!("{kind} {name} {file}:{}", self.source.line)
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
        } else if !meta.name.is_empty() {
            let rule = match &doc.resource {
                // Kubernetes' ValidateNamespaceName and ValidateServiceName.
                Resource::Namespace(_) => NameRule::Dns1123Label,
                Resource::Service(_) => NameRule::Dns1035Label,
                Resource::Role(_)
                | Resource::ClusterRole(_)
                | Resource::RoleBinding(_)
                | Resource::ClusterRoleBinding(_) => NameRule::PathSegment,
                _ => NameRule::Dns1123Subdomain,
            };
            if let Some(msg) = rule.problem(&meta.name) {
                cx.error(
                    "metadata.name",
                    format!("Invalid value: {:?}: {msg}", meta.name),
                );
            }
        }
        if let Some(ns) = meta.namespace.as_deref().filter(|ns| !ns.is_empty())
            && let Some(msg) = NameRule::Dns1123Label.problem(ns)
        {
            cx.error(
                "metadata.namespace",
                format!("Invalid value: {ns:?}: {msg}"),
            );
        }
        match &doc.resource {
            Resource::Deployment(d) => {
                k8s::validate_workload(&mut cx, d.spec.as_workload(), "deployment")
            }
            Resource::Rollout(r) => {
                if r.spec.workload_ref.is_none() {
                    k8s::validate_workload(&mut cx, r.spec.as_workload(), "rollout");
                }
            }
            Resource::Service(s) => k8s::validate_service(&mut cx, s, &world),
            Resource::Ingress(i) => k8s::validate_ingress(&mut cx, i, &world),
            Resource::VirtualService(vs) => {
                networking::validate_virtual_service(&mut cx, vs, &world)
            }
            Resource::DestinationRule(dr) => {
                networking::validate_destination_rule(&mut cx, dr, &world)
            }
            Resource::Gateway(g) => networking::validate_gateway(&mut cx, g),
            Resource::ServiceEntry(se) => networking::validate_service_entry(&mut cx, se),
            Resource::AuthorizationPolicy(ap) => {
                security::validate_authorization_policy(&mut cx, ap, &world)
            }
            Resource::PeerAuthentication(pa) => {
                security::validate_peer_authentication(&mut cx, pa, &world)
            }
            Resource::RequestAuthentication(ra) => {
                security::validate_request_authentication(&mut cx, ra, &world)
            }
            Resource::Telemetry(t) => telemetry::validate_telemetry(&mut cx, t),
            Resource::ConfigMap(c) => telemetry::validate_mesh_config(&mut cx, c),
            Resource::GatewayClass(c) => gateway_api::validate_gateway_class(&mut cx, c),
            Resource::KubeGateway(g) => gateway_api::validate_gateway(&mut cx, g),
            Resource::HttpRoute(r) => gateway_api::validate_http_route(&mut cx, r),
            Resource::GrpcRoute(r) => gateway_api::validate_grpc_route(&mut cx, r),
            Resource::TcpRoute(r) => gateway_api::validate_tcp_route(&mut cx, r),
            Resource::ReferenceGrant(g) => gateway_api::validate_reference_grant(&mut cx, g),
            Resource::AnalysisTemplate(t) => {
                for (path, message) in crate::analysis::check_template(&t.spec) {
                    cx.error(&path, message);
                }
            }
            Resource::ClusterAnalysisTemplate(t) => {
                for (path, message) in crate::analysis::check_template(&t.spec) {
                    cx.error(&path, message);
                }
            }
            Resource::AnalysisRun(r) => {
                for (path, message) in crate::analysis::check_run(&r.spec) {
                    cx.error(&path, message);
                }
            }
            Resource::WorkloadGroup(wg) => {
                unapplied::validate_workload_group(&mut cx, wg);
                unapplied::warn_not_applied(&mut cx);
            }
            Resource::StatefulSet(s) => {
                k8s::validate_workload(&mut cx, s.spec.as_workload(), "statefulset")
            }
            Resource::DaemonSet(d) => {
                k8s::validate_workload(&mut cx, d.spec.as_workload(), "daemonset")
            }
            Resource::EnvoyFilter(_)
            | Resource::ProxyConfig(_)
            | Resource::WasmPlugin(_)
            | Resource::TrafficExtension(_)
            | Resource::CustomObject(_)
            | Resource::CronJob(_)
            | Resource::NetworkPolicy(_)
            | Resource::HorizontalPodAutoscaler(_)
            | Resource::IstioOperator(_) => unapplied::warn_not_applied(&mut cx),
            Resource::Pod(_)
            | Resource::Job(_)
            | Resource::Role(_)
            | Resource::ClusterRole(_)
            | Resource::RoleBinding(_)
            | Resource::ClusterRoleBinding(_)
            | Resource::CustomResourceDefinition(_)
            | Resource::MutatingWebhookConfiguration(_)
            | Resource::ValidatingWebhookConfiguration(_)
            | Resource::PodDisruptionBudget(_)
            | Resource::Endpoints(_)
            | Resource::EndpointSlice(_)
            | Resource::LimitRange(_)
            | Resource::ResourceQuota(_)
            | Resource::PersistentVolumeClaim(_)
            | Resource::IngressClass(_)
            | Resource::CSIDriver(_) => {}
            Resource::Namespace(_)
            | Resource::ServiceAccount(_)
            | Resource::Secret(_)
            | Resource::Sidecar(_)
            | Resource::WorkloadEntry(_)
            | Resource::Application(_)
            | Resource::AppProject(_) => {}
        }
    }
    cross::duplicates(manifests, &mut out);
    istio::run(manifests, &world, &mut out);
    pitfalls::run(manifests, &world, &mut out);
    gateway_api::references(manifests, &world, &mut out);
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
        let code = match severity {
            Severity::Error => Code::Ist0106,
            _ => Code::Ist0133,
        };
        self.report(code, severity, path, message);
    }

    /// A finding of `code` at `path`.
    fn report(&mut self, code: Code, severity: Severity, path: &str, message: impl Into<String>) {
        self.out.push(Diagnostic {
            code,
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
    /// Hosts declared by ServiceEntries (may be wildcards), lowercased and without a trailing
    /// dot, as [`names::resolve_host`] writes the hosts they are compared with.
    entry_hosts: Vec<String>,
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
        let services: HashMap<String, &Service> = m
            .docs_of::<Service>()
            .map(|(d, s)| (names::fqdn(&s.metadata.name, d.resource.namespace()), s))
            .collect();
        let entry_hosts = m
            .service_entries()
            .flat_map(|se| se.spec.hosts.iter())
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        let subsets = m
            .docs_of::<DestinationRule>()
            .flat_map(|(d, dr)| {
                let host = names::resolve_host(&dr.spec.host, d.resource.namespace(), |f| {
                    services.contains_key(f)
                });
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

    /// `host`, written in a rule of `namespace`, as the control plane resolves it: Istio's
    /// short-name rule, and `name.ns` or `name.ns.svc` completed to a Service of these
    /// manifests.
    fn resolve(&self, host: &str, namespace: &str) -> String {
        names::resolve_host(host, namespace, |f| self.services.contains_key(f))
    }

    /// Whether a Service or a ServiceEntry host (which may be a wildcard) declares `host`.
    fn host_known(&self, host: &str) -> bool {
        self.services.contains_key(host)
            || self.entry_hosts.iter().any(|h| names::host_covers(h, host))
    }
}

// === Checks shared by every kind ===

/// Kubernetes' object name rules (apimachinery `validation.IsDNS1123Subdomain`,
/// `IsDNS1123Label`, `IsDNS1035Label`), with its messages. Names end up in DNS names and, for
/// the local runtime, in file paths, so `../x` must not pass.
#[derive(Debug, Clone, Copy)]
enum NameRule {
    /// Kubernetes' `ValidatePathSegmentName` (RBAC objects: `system:controller:x` is fine).
    PathSegment,
    Dns1123Subdomain,
    Dns1123Label,
    Dns1035Label,
}

impl NameRule {
    fn problem(self, s: &str) -> Option<String> {
        let label = |l: &str, first_alpha: bool| {
            let b = l.as_bytes();
            let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
            let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            match (b.first(), b.last()) {
                (Some(f), Some(l)) => {
                    (if first_alpha {
                        f.is_ascii_lowercase()
                    } else {
                        alnum(f)
                    }) && alnum(l)
                        && b.iter().all(inner)
                }
                _ => false,
            }
        };
        let (max, ok, msg) = match self {
            NameRule::PathSegment => {
                if s == "." || s == ".." {
                    return Some(format!("may not be '{s}'"));
                }
                return s
                    .chars()
                    .find(|c| matches!(c, '/' | '%'))
                    .map(|c| format!("may not contain '{c}'"));
            }
            NameRule::Dns1123Subdomain => (
                253,
                s.split('.').all(|l| label(l, false)),
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            ),
            NameRule::Dns1123Label => (
                63,
                label(s, false),
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            ),
            NameRule::Dns1035Label => (
                63,
                label(s, true),
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
            ),
        };
        if s.len() > max {
            Some(format!("must be no more than {max} characters"))
        } else if !ok {
            Some(msg.to_string())
        } else {
            None
        }
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

#[cfg(test)]
mod tests;
