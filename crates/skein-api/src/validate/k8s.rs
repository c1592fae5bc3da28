//! Kubernetes objects: workloads and their pod templates, Services and Ingresses, with the
//! messages of Kubernetes' apps/core validation.

use std::collections::HashSet;

use super::{Cx, World, cross};
use crate::k8s::{
    Container, Ingress, IntOrString, PathType, PodTemplateSpec, Protocol, Service, ServicePort,
    ServiceSpec, ServiceType, WorkloadSpec,
};

/// Deployments and Rollouts (Kubernetes' `ValidateDeploymentSpec`).
pub(super) fn validate_workload(cx: &mut Cx<'_>, spec: WorkloadSpec<'_>, what: &str) {
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
    validate_pod_spec(cx, spec.template);
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

fn validate_pod_spec(cx: &mut Cx<'_>, template: &PodTemplateSpec) {
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
            validate_container(cx, &path, c);
        }
    }
}

fn validate_container(cx: &mut Cx<'_>, path: &str, c: &Container) {
    if c.name.is_empty() {
        cx.error(&format!("{path}.name"), "Required value");
    }
    if c.image.as_deref().is_none_or(str::is_empty) {
        cx.error(&format!("{path}.image"), "Required value");
    }
    validate_container_ports(cx, path, c);
    validate_env(cx, path, c);
    validate_probes(cx, path, c);
}

fn validate_container_ports(cx: &mut Cx<'_>, path: &str, c: &Container) {
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
}

fn validate_env(cx: &mut Cx<'_>, path: &str, c: &Container) {
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
}

fn validate_probes(cx: &mut Cx<'_>, path: &str, c: &Container) {
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

/// Kubernetes' `ValidateDNS1123Label`, with its messages.
pub(super) fn dns1123_label_problem(name: &str) -> Option<String> {
    if name.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.iter().all(|&b| ok_char(b) || b == b'-')
        && ok_char(bytes[0])
        && ok_char(bytes[bytes.len() - 1]);
    (!valid).then(|| {
        format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        )
    })
}

/// Kubernetes' `ValidateService`.
pub(super) fn validate_service(cx: &mut Cx<'_>, s: &Service, world: &World<'_>) {
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
        validate_service_port(cx, spec, i, p, &mut names, &mut numbers);
    }
    cross::service_selects_pods(cx, s, world);
}

fn validate_service_port<'s>(
    cx: &mut Cx<'_>,
    spec: &'s ServiceSpec,
    i: usize,
    p: &'s ServicePort,
    names: &mut HashSet<&'s str>,
    numbers: &mut HashSet<(i32, Option<Protocol>)>,
) {
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
            // A Service port name is a DNS-1123 label (63 characters); only container port
            // names and a named targetPort are IANA service names (15).
            if let Some(msg) = dns1123_label_problem(name) {
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

/// Kubernetes' `ValidateIngressSpec`, and the backends' Services.
pub(super) fn validate_ingress(cx: &mut Cx<'_>, ing: &Ingress, world: &World<'_>) {
    let mut backends = Vec::new();
    if let Some(b) = &ing.spec.default_backend {
        backends.push(("spec.defaultBackend".to_string(), b));
    }
    for (i, rule) in ing.spec.rules.iter().enumerate() {
        for (j, p) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
            let pp = format!("spec.rules[{i}].http.paths[{j}]");
            let path = p.path.as_deref().unwrap_or("");
            if p.path_type != PathType::ImplementationSpecific && !path.starts_with('/') {
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
        cross::ingress_backend_exists(cx, &path, &port_path, svc, world);
    }
}
