//! Names and naming rules that the control plane, the proxy, validation and the local runtime
//! share: Kubernetes service host names and Istio's short-name rule, Istio's cluster names
//! and what they say about a cluster's direction, and the labels both sides read.
//!
//! Every rule here exists once; nothing else in the workspace spells `svc.cluster.local` or
//! parses a cluster name.

/// The cluster's DNS domain (Kubernetes' default, and the only one skein serves).
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// The endpoint label that says a pod has a sidecar (Istio's auto mTLS reads it).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// `name.namespace.svc.cluster.local`: a Kubernetes Service's fully qualified name.
pub fn fqdn(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}.svc.{CLUSTER_DOMAIN}")
}

/// Whether `host` has the form of a Kubernetes Service FQDN (`name.ns.svc.cluster.local`).
pub fn is_service_fqdn(host: &str) -> bool {
    host.strip_suffix(CLUSTER_DOMAIN)
        .and_then(|h| h.strip_suffix(".svc."))
        .is_some_and(|h| h.split('.').count() == 2 && !h.contains('*'))
}

/// Istio's short-name rule for a host written in a rule (VirtualService destination,
/// DestinationRule host, ...) of `namespace`: lowercased, a trailing dot dropped; a name
/// without dots is a Service of that namespace (`name.<namespace>.svc.cluster.local`);
/// wildcards and names with dots stay as written.
pub fn expand_short_name(host: &str, namespace: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() || host.contains('*') || host.contains('.') {
        return host;
    }
    fqdn(&host, namespace)
}

/// [`expand_short_name`], and also `name.ns` or `name.ns.svc` completed to the Service FQDN
/// when `is_service` says that FQDN is a known Service, as cluster DNS would resolve them
/// from a pod. Validation, the compiler and the local runtime all resolve hosts with this,
/// so a host that routes is never reported unknown.
pub fn resolve_host(host: &str, namespace: &str, is_service: impl Fn(&str) -> bool) -> String {
    let h = expand_short_name(host, namespace);
    if h.contains('*') || is_service(&h) {
        return h;
    }
    for suffix in [".svc.cluster.local", ".cluster.local"] {
        let long = format!("{h}{suffix}");
        if is_service(&long) {
            return long;
        }
    }
    h
}

/// Whether `pattern` (a host, `*` or `*.suffix`, as in a rule's hosts) covers `host`.
pub fn host_covers(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix),
        None => pattern == host,
    }
}

/// Which way a cluster's traffic goes, as Istio's cluster names say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `inbound|PORT||`: to the workload behind this sidecar.
    Inbound,
    /// `outbound|PORT|SUBSET|FQDN` and the rest: away from this workload.
    Outbound,
}

impl Direction {
    /// The direction a cluster name says.
    pub fn of_cluster(name: &str) -> Self {
        if name.starts_with("inbound|") {
            Direction::Inbound
        } else {
            Direction::Outbound
        }
    }
}

/// Istio's cluster name for an outbound service port: `outbound|PORT|SUBSET|FQDN`.
pub fn outbound_cluster_name(port: u16, subset: Option<&str>, fqdn: &str) -> String {
    format!("outbound|{port}|{}|{fqdn}", subset.unwrap_or(""))
}

/// Istio's cluster name for an inbound port: `inbound|PORT||`.
pub fn inbound_cluster_name(port: u16) -> String {
    format!("inbound|{port}||")
}

/// Every authority form under which a sidecar in `client_namespace` reaches a Kubernetes
/// service `fqdn` (`name.ns.svc.cluster.local`) on `port`: the short name (only from the same
/// namespace, as Kubernetes DNS search paths resolve it), `name.ns`, `name.ns.svc` and the
/// FQDN, each with `:port` and without. Non-Kubernetes hosts (ServiceEntry) get the host with and
/// without port.
pub fn service_domains(fqdn: &str, port: u16, client_namespace: &str) -> Vec<String> {
    let fqdn = fqdn.to_ascii_lowercase();
    let mut hosts = Vec::with_capacity(4);
    let parts: Vec<&str> = fqdn.split('.').collect();
    if parts.len() >= 3 && parts[2] == "svc" {
        let (name, ns) = (parts[0], parts[1]);
        if ns == client_namespace {
            hosts.push(name.to_string());
        }
        hosts.push(format!("{name}.{ns}"));
        hosts.push(format!("{name}.{ns}.svc"));
        if parts.len() > 3 {
            hosts.push(fqdn.clone());
        }
    } else {
        hosts.push(fqdn.clone());
    }
    let mut out = Vec::with_capacity(hosts.len() * 2);
    for h in &hosts {
        out.push(format!("{h}:{port}"));
    }
    out.extend(hosts);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_cover_every_form() {
        let d = service_domains(
            "was-service.blog-system.svc.cluster.local",
            8080,
            "blog-system",
        );
        for want in [
            "was-service",
            "was-service:8080",
            "was-service.blog-system",
            "was-service.blog-system:8080",
            "was-service.blog-system.svc",
            "was-service.blog-system.svc:8080",
            "was-service.blog-system.svc.cluster.local",
            "was-service.blog-system.svc.cluster.local:8080",
        ] {
            assert!(d.iter().any(|x| x == want), "missing {want} in {d:?}");
        }
        let other = service_domains("was-service.blog-system.svc.cluster.local", 8080, "other");
        assert!(!other.iter().any(|x| x == "was-service"));
        assert_eq!(
            service_domains("example.com", 443, "x"),
            ["example.com:443", "example.com"]
        );
    }

    #[test]
    fn short_names_expand_in_the_rule_namespace_only() {
        assert_eq!(
            expand_short_name("Was-Service.", "blog-system"),
            "was-service.blog-system.svc.cluster.local"
        );
        assert_eq!(
            expand_short_name("was-service.blog-system", "x"),
            "was-service.blog-system"
        );
        assert_eq!(expand_short_name("*.example.com", "x"), "*.example.com");
        assert_eq!(expand_short_name("", "x"), "");
    }

    #[test]
    fn partial_names_resolve_only_to_known_services() {
        let known = |h: &str| h == "was-service.blog-system.svc.cluster.local";
        for host in [
            "was-service",
            "was-service.blog-system",
            "was-service.blog-system.svc",
        ] {
            assert_eq!(
                resolve_host(host, "blog-system", known),
                "was-service.blog-system.svc.cluster.local",
                "{host}"
            );
        }
        assert_eq!(
            resolve_host("nope.blog-system", "blog-system", known),
            "nope.blog-system"
        );
        assert_eq!(
            resolve_host("example.com", "blog-system", known),
            "example.com"
        );
    }

    #[test]
    fn fqdn_shape_and_wildcards() {
        assert!(is_service_fqdn("a.b.svc.cluster.local"));
        assert!(!is_service_fqdn("b.svc.cluster.local"));
        assert!(!is_service_fqdn("*.b.svc.cluster.local"));
        assert!(!is_service_fqdn("example.com"));
        assert!(host_covers("*", "anything"));
        assert!(host_covers("*.svc.cluster.local", "a.b.svc.cluster.local"));
        assert!(!host_covers(
            "a.b.svc.cluster.local",
            "c.b.svc.cluster.local"
        ));
    }

    #[test]
    fn cluster_names_say_their_direction() {
        assert_eq!(
            Direction::of_cluster(&inbound_cluster_name(8080)),
            Direction::Inbound
        );
        assert_eq!(
            Direction::of_cluster(&outbound_cluster_name(80, Some("v1"), &fqdn("a", "b"))),
            Direction::Outbound
        );
        assert_eq!(
            Direction::of_cluster("PassthroughCluster"),
            Direction::Outbound
        );
    }
}
