//! Host names in rules, resolved by the one rule of `skein_snapshot::names`.

use super::Compiler;

/// `name.namespace.svc.cluster.local`.
pub fn fqdn(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}.svc.cluster.local")
}

/// Resolves a host as written in a rule in `namespace`: a short name gets the namespace and
/// the cluster suffix; anything with a dot stays as written (see [`Compiler::resolve`], which also
/// expands `name.ns` and `name.ns.svc` when they name a known service).
pub fn resolve_host(host: &str, namespace: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.contains('*') || host.contains('.') {
        return host;
    }
    fqdn(&host, namespace)
}

/// Whether `host` (possibly `*` or `*.suffix`) covers `fqdn`.
pub(super) fn host_covers(host: &str, fqdn: &str) -> bool {
    if host == "*" {
        return true;
    }
    match host.strip_prefix('*') {
        Some(suffix) => fqdn.ends_with(suffix),
        None => host == fqdn,
    }
}

impl Compiler<'_> {
    /// [`resolve_host`], and `name.ns` or `name.ns.svc` expanded when that names a Service.
    pub fn resolve(&self, host: &str, namespace: &str) -> String {
        let h = resolve_host(host, namespace);
        if h.contains('*') || self.service(&h).is_some() {
            return h;
        }
        for suffix in [".svc.cluster.local", ".cluster.local"] {
            let long = format!("{h}{suffix}");
            if self.service(&long).is_some() {
                return long;
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::fixtures::*;

    #[test]
    fn host_resolution_follows_istio() {
        let (m, r) = (example(), registry());
        let compiler = Compiler::new(&m, &r);
        let was = "was-service.blog-system.svc.cluster.local";
        assert_eq!(resolve_host("was-service", "blog-system"), was);
        assert_eq!(compiler.resolve("was-service.blog-system", "x"), was);
        assert_eq!(compiler.resolve("was-service.blog-system.svc", "x"), was);
        assert_eq!(compiler.resolve("example.com.", "x"), "example.com");
        assert_eq!(compiler.resolve("Was-Service", "blog-system"), was);
        assert!(host_covers("*.svc.cluster.local", "a.b.svc.cluster.local"));
    }
}
