//! Host names in rules, resolved by the one rule of `skein_snapshot::names` (the same rule
//! validation and the local runtime use, so a host that routes is never reported unknown).

use skein_snapshot::names;

use super::Compiler;

impl Compiler<'_> {
    /// A host as written in a rule of `namespace`, resolved: [`names::resolve_host`] with
    /// "is a known Service".
    pub(super) fn resolve(&self, host: &str, namespace: &str) -> String {
        names::resolve_host(host, namespace, |h| self.service(h).is_some())
    }

    /// Whether `host`, written in a rule of `namespace`, covers the service `fqdn`.
    pub(super) fn covers(&self, host: &str, namespace: &str, fqdn: &str) -> bool {
        names::host_covers(&self.resolve(host, namespace), fqdn)
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
        assert_eq!(names::expand_short_name("was-service", "blog-system"), was);
        assert_eq!(compiler.resolve("was-service.blog-system", "x"), was);
        assert_eq!(compiler.resolve("was-service.blog-system.svc", "x"), was);
        assert_eq!(compiler.resolve("example.com.", "x"), "example.com");
        assert_eq!(compiler.resolve("Was-Service", "blog-system"), was);
        assert!(names::host_covers(
            "*.svc.cluster.local",
            "a.b.svc.cluster.local"
        ));
    }
}
