//! The Ingress resources, planned: one route per rule path, to a Service port, ordered as
//! Kubernetes says (the longest path wins).

use skein_api::k8s::{HttpIngressPath, IngressPathMatch};
use skein_api::{Manifests, Resource};

use super::{ServicePlan, ServicePortRef};

/// One path of an Ingress rule: requests for `host` (any host when None) whose path matches
/// go to a Service port.
#[derive(Debug, Clone)]
pub struct IngressRoute {
    pub host: Option<String>,
    pub path: IngressPathMatch,
    /// Index into `Plan::services`.
    pub service: usize,
    pub port: u16,
}

impl IngressRoute {
    /// Kubernetes' matching: the host (`*.suffix` covers one label), then the path as
    /// [`IngressPathMatch`] reads it.
    pub fn matches(&self, host: Option<&str>, path: &str) -> bool {
        if let Some(h) = &self.host {
            let Some(req) = host else { return false };
            let req = req.split(':').next().unwrap_or(req);
            let ok = match h.strip_prefix("*.") {
                Some(suffix) => req
                    .split_once('.')
                    .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(suffix)),
                None => req.eq_ignore_ascii_case(h),
            };
            if !ok {
                return false;
            }
        }
        self.path.matches(path)
    }
}

pub(super) fn ingress_routes(
    manifests: &Manifests,
    services: &[ServicePlan],
    errors: &mut Vec<String>,
) -> Vec<IngressRoute> {
    let mut routes = Vec::new();
    for d in &manifests.documents {
        let Resource::Ingress(ing) = &d.resource else {
            continue;
        };
        let ns = ing
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = format!("{ns}/{}", ing.metadata.name);
        for rule in &ing.spec.rules {
            let Some(http) = &rule.http else { continue };
            for p in &http.paths {
                match route(&ns, rule.host.as_ref(), p, services) {
                    Ok(r) => routes.push(r),
                    Err(e) => errors.push(format!("{}: Ingress {name}: {e}", d.source)),
                }
            }
        }
    }
    // The longest path wins; Exact before Prefix on a tie.
    routes.sort_by(|a, b| {
        let exact = |r: &IngressRoute| matches!(r.path, IngressPathMatch::Exact(_));
        b.path
            .len()
            .cmp(&a.path.len())
            .then(exact(b).cmp(&exact(a)))
    });
    routes
}

/// The route of one rule path of an Ingress in namespace `ns`, to one of `services`.
fn route(
    ns: &str,
    host: Option<&String>,
    p: &HttpIngressPath,
    services: &[ServicePlan],
) -> Result<IngressRoute, String> {
    let Some(svc) = &p.backend.service else {
        return Err("only service backends run locally".into());
    };
    let port_ref = match (&svc.port.number, &svc.port.name) {
        (Some(n), _) => ServicePortRef::Number(u16::try_from(*n).unwrap_or(0)),
        (None, Some(name)) => ServicePortRef::Name(name.clone()),
        (None, None) => ServicePortRef::Number(80),
    };
    let Some((index, s)) = services
        .iter()
        .enumerate()
        .find(|(_, s)| s.name == svc.name && s.namespace == ns)
    else {
        return Err(format!(
            "backend service `{}` is not in the manifests",
            svc.name
        ));
    };
    let Some(sp) = s.port(&port_ref) else {
        return Err(format!("service `{}` has no port {port_ref:?}", svc.name));
    };
    Ok(IngressRoute {
        host: host.cloned(),
        // ImplementationSpecific is read as Prefix, as ingress-nginx does.
        path: p.path_match(),
        service: index,
        port: sp.port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use skein_api::k8s::{IngressBackend, PathType};

    fn route(path: &str, t: PathType) -> IngressRoute {
        let p = HttpIngressPath {
            path: Some(path.into()),
            path_type: t,
            backend: IngressBackend::default(),
        };
        IngressRoute {
            host: None,
            path: p.path_match(),
            service: 0,
            port: 80,
        }
    }

    #[test]
    fn prefix_matches_whole_segments() {
        let r = route("/api", PathType::Prefix);
        assert!(r.matches(None, "/api"));
        assert!(r.matches(None, "/api/posts"));
        assert!(!r.matches(None, "/apix"));
        assert!(route("/", PathType::Prefix).matches(None, "/anything"));
        let e = route("/board", PathType::Exact);
        assert!(e.matches(None, "/board"));
        assert!(!e.matches(None, "/board/1"));
    }

    #[test]
    fn host_rules() {
        let mut r = route("/", PathType::Prefix);
        r.host = Some("blog.example.com".into());
        assert!(r.matches(Some("blog.example.com:8443"), "/"));
        assert!(!r.matches(Some("other.example.com"), "/"));
        r.host = Some("*.example.com".into());
        assert!(r.matches(Some("blog.example.com"), "/"));
        assert!(!r.matches(Some("example.com"), "/"));
    }
}
