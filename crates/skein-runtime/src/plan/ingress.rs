//! The Ingress resources, planned: one route per rule path, to a Service port, ordered as
//! Kubernetes says (the longest path wins).

use skein_api::{Manifests, Resource};

use super::{ServicePlan, ServicePortRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathType {
    Prefix,
    Exact,
}

#[derive(Debug, Clone)]
pub struct IngressRoute {
    pub ingress: String,
    pub host: Option<String>,
    pub path: String,
    pub path_type: PathType,
    /// Index into `Plan::services`.
    pub service: usize,
    pub port: u16,
}

impl IngressRoute {
    /// Kubernetes' matching: Exact is the whole path; Prefix matches whole `/` segments.
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
        match self.path_type {
            PathType::Exact => path == self.path,
            PathType::Prefix => {
                let prefix = self.path.trim_end_matches('/');
                prefix.is_empty()
                    || path == prefix
                    || (path.starts_with(prefix)
                        && path.as_bytes().get(prefix.len()) == Some(&b'/'))
            }
        }
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
        let spec = &ing.spec;
        for rule in &spec.rules {
            let Some(http) = &rule.http else { continue };
            for p in &http.paths {
                let Some(svc) = &p.backend.service else {
                    errors.push(format!(
                        "{}: Ingress {ns}/{}: only service backends run locally",
                        d.source, ing.metadata.name
                    ));
                    continue;
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
                    errors.push(format!(
                        "{}: Ingress {ns}/{}: backend service `{}` is not in the manifests",
                        d.source, ing.metadata.name, svc.name
                    ));
                    continue;
                };
                let Some(sp) = s.port(&port_ref) else {
                    errors.push(format!(
                        "{}: Ingress {ns}/{}: service `{}` has no port {:?}",
                        d.source, ing.metadata.name, svc.name, port_ref
                    ));
                    continue;
                };
                routes.push(IngressRoute {
                    ingress: format!("{ns}/{}", ing.metadata.name),
                    host: rule.host.clone(),
                    path: p.path.clone().unwrap_or_else(|| "/".into()),
                    // ImplementationSpecific is treated as Prefix, as ingress-nginx does.
                    path_type: match p.path_type {
                        skein_api::k8s::PathType::Exact => PathType::Exact,
                        _ => PathType::Prefix,
                    },
                    service: index,
                    port: sp.port,
                });
            }
        }
    }
    // The longest path wins; Exact before Prefix on a tie.
    routes.sort_by(|a, b| {
        b.path
            .len()
            .cmp(&a.path.len())
            .then((a.path_type != PathType::Exact).cmp(&(b.path_type != PathType::Exact)))
    });
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str, t: PathType) -> IngressRoute {
        IngressRoute {
            ingress: "x".into(),
            host: None,
            path: path.into(),
            path_type: t,
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
