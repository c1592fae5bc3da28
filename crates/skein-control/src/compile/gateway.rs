//! Gateway-bound VirtualServices and Ingress rules -> the gateway's routes.

use std::collections::BTreeSet;

use skein_api::k8s::IngressBackend;
use skein_snapshot::{Route, RouteMatch, StringMatch};

use super::services::Service;
use skein_snapshot::names::fqdn;

use super::Compiler;
use crate::registry::Pod;

impl Compiler<'_> {
    /// Gateways (as `ns/name`) whose selector picks the gateway pod `p`.
    pub(super) fn gateways_for(&self, p: &Pod) -> BTreeSet<String> {
        self.manifests
            .gateways()
            .filter(|g| !g.spec.selector.is_empty() && p.has_labels(&g.spec.selector))
            .map(|g| format!("{}/{}", g.metadata.namespace_or_default(), g.metadata.name))
            .collect()
    }

    pub(super) fn ingress_backend(&self, b: &IngressBackend, ns: &str) -> Option<(&Service, u16)> {
        let s = b.service.as_ref()?;
        let svc = self.service(&fqdn(&s.name, ns))?;
        let port = match (&s.port.number, &s.port.name) {
            (Some(n), _) => u16::try_from(*n).ok()?,
            (None, Some(name)) => {
                svc.ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(name))?
                    .port
            }
            (None, None) => svc.ports.first()?.port,
        };
        Some((svc, port))
    }
}

/// The routes of one Ingress path: each of the backend's mesh routes, restricted to the path.
/// Kubernetes' Prefix matches whole path segments: `/api` matches `/api` and `/api/x`, not
/// `/apix`; two match blocks (ORed) say exactly that. A backend route with its own `uri`
/// match keeps it (it is the more specific of the two).
pub(super) fn ingress_routes(
    ingress: &str,
    path: &str,
    exact: bool,
    backend: Vec<Route>,
) -> Vec<Route> {
    let trimmed = path.trim_end_matches('/');
    let blocks: Vec<StringMatch> = if exact {
        vec![StringMatch::Exact(path.to_string())]
    } else if trimmed.is_empty() {
        Vec::new()
    } else {
        vec![
            StringMatch::Exact(trimmed.to_string()),
            StringMatch::Prefix(format!("{trimmed}/")),
        ]
    };
    backend
        .into_iter()
        .map(|mut r| {
            if r.name.is_empty() || r.name == "default" {
                r.name = format!("{ingress}:{path}");
            }
            if !blocks.is_empty() {
                let own = if r.matches.is_empty() {
                    vec![RouteMatch::default()]
                } else {
                    std::mem::take(&mut r.matches)
                };
                r.matches = own
                    .into_iter()
                    .flat_map(|m| {
                        if m.path.is_some() {
                            return vec![m];
                        }
                        blocks
                            .iter()
                            .map(|b| RouteMatch {
                                path: Some(b.clone()),
                                ..m.clone()
                            })
                            .collect()
                    })
                    .collect();
            }
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::Compiler;
    use crate::compile::fixtures::*;
    use skein_snapshot::{GATEWAY_ROUTE, RouteAction};

    #[test]
    fn gateway_serves_the_ingress_with_segment_prefixes() {
        let (m, r) = (example(), registry());
        let snap = Compiler::new(&m, &r)
            .snapshot("istio-ingressgateway-1", "1")
            .unwrap();
        assert!(snap.listeners.is_empty());
        let rc = snap.route_config(GATEWAY_ROUTE).unwrap();
        assert_eq!(rc.virtual_hosts.len(), 1);
        let vh = &rc.virtual_hosts[0];
        assert_eq!(vh.domains, ["*"]);
        // Each Ingress path carries web-vsvc's routes: the header route, then primary.
        let names: Vec<&str> = vh.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "canary-testing",
                "primary",
                "canary-testing",
                "primary",
                "canary-testing",
                "primary"
            ]
        );
        assert_eq!(
            vh.routes[3].matches,
            [
                RouteMatch {
                    path: Some(StringMatch::Exact("/api".into())),
                    ..Default::default()
                },
                RouteMatch {
                    path: Some(StringMatch::Prefix("/api/".into())),
                    ..Default::default()
                },
            ]
        );
        // The header condition is kept and ANDed with the path.
        assert_eq!(vh.routes[2].matches.len(), 2);
        assert_eq!(vh.routes[2].matches[0].headers[0].name, "x-canary-test");
        assert_eq!(
            vh.routes[2].matches[1].path,
            Some(StringMatch::Prefix("/api/".into()))
        );
        assert!(vh.routes[5].matches.is_empty(), "`/` matches everything");
        assert_eq!(vh.routes[4].matches.len(), 1);
        let RouteAction::Route(d) = &vh.routes[4].action else {
            panic!()
        };
        assert_eq!(
            d[0].cluster,
            "outbound|80|canary|web-service.blog-system.svc.cluster.local"
        );
        assert!(snap.dangling_references().is_empty());
    }
}
