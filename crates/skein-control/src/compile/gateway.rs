//! The gateway's routes: VirtualServices bound to a Gateway that selects the gateway pod, and
//! Ingress rules (each path carrying the backend's mesh routes).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use skein_api::k8s::{IngressBackend, IngressPathMatch};
use skein_api::networking::VirtualService;
use skein_snapshot::names::fqdn;
use skein_snapshot::{GATEWAY_ROUTE, Route, RouteConfig, RouteMatch, StringMatch, VirtualHost};

use super::Compiler;
use super::routes::Client;
use super::services::Service;
use crate::registry::Pod;

/// Where an Ingress path's routes go among a host's: longest path first (by
/// [`IngressPathMatch::len`]), Exact before Prefix at the same length, a rule's paths before
/// the default backend. Sorted ascending, hence the `Reverse`.
type IngressOrder = Reverse<(usize, bool, bool)>;

impl Compiler<'_> {
    /// The `gateway` route config of the gateway pod `p`: one virtual host per host name,
    /// Gateway-bound VirtualService routes first, then Ingress paths; `*` last, so that named
    /// hosts win.
    pub(super) fn gateway_routes(&self, p: &Pod) -> RouteConfig {
        let mut by_host = self.bound_virtual_service_routes(p);
        for (host, routes) in self.ingress_routes_by_host(p) {
            by_host.entry(host).or_default().extend(routes);
        }
        let mut vhosts: Vec<VirtualHost> = by_host
            .into_iter()
            .map(|(host, routes)| VirtualHost {
                name: format!("{host}:80"),
                // The proxy matches the authority exactly, then without its port.
                domains: vec![host.clone()],
                routes,
            })
            .collect();
        vhosts.sort_by_key(|v| v.domains.iter().any(|d| d == "*"));
        RouteConfig {
            name: GATEWAY_ROUTE.to_string(),
            virtual_hosts: vhosts,
        }
    }

    /// Gateways (as `ns/name`) whose selector picks the gateway pod `p`.
    fn gateways_for(&self, p: &Pod) -> BTreeSet<String> {
        self.manifests
            .gateways()
            .filter(|g| !g.spec.selector.is_empty() && p.has_labels(&g.spec.selector))
            .map(|g| format!("{}/{}", g.metadata.namespace_or_default(), g.metadata.name))
            .collect()
    }

    /// The routes of VirtualServices bound to a Gateway that selects `p`, by host.
    fn bound_virtual_service_routes(&self, p: &Pod) -> BTreeMap<String, Vec<Route>> {
        let gateways = self.gateways_for(p);
        let mut by_host: BTreeMap<String, Vec<Route>> = BTreeMap::new();
        for vs in self.manifests.virtual_services() {
            let ns = vs.metadata.namespace_or_default();
            let Some(gw) = bound_gateway(vs, &gateways) else {
                continue;
            };
            let client = Client {
                namespace: &p.namespace,
                labels: &p.labels,
                gateway: Some(&gw),
            };
            let routes: Vec<Route> = vs
                .spec
                .http
                .iter()
                .filter_map(|r| self.http_route(r, ns, client, None, 80))
                .collect();
            for h in &vs.spec.hosts {
                by_host
                    .entry(h.to_ascii_lowercase())
                    .or_default()
                    .extend(routes.iter().cloned());
            }
        }
        by_host
    }

    /// The routes of every Ingress, by host. The gateway is a mesh client of the backend, so
    /// the backend's VirtualService (header routes, weights, retries, mirroring) applies behind
    /// each Ingress path, as it would behind an ingress controller with a sidecar.
    fn ingress_routes_by_host(&self, p: &Pod) -> BTreeMap<String, Vec<Route>> {
        let mesh_client = Client {
            namespace: &p.namespace,
            labels: &p.labels,
            gateway: None,
        };
        let mut by_host: BTreeMap<String, Vec<(IngressOrder, Route)>> = BTreeMap::new();
        let mut add = |host: &str,
                       name: String,
                       path: &IngressPathMatch,
                       default: bool,
                       backend: Vec<Route>| {
            let order = Reverse((
                path.len(),
                matches!(path, IngressPathMatch::Exact(_)),
                !default,
            ));
            let routes = ingress_routes(&name, path, backend);
            by_host
                .entry(host.to_string())
                .or_default()
                .extend(routes.into_iter().map(|r| (order, r)));
        };
        for ing in self.manifests.ingresses() {
            let ns = ing.metadata.namespace_or_default();
            for rule in &ing.spec.rules {
                let host = rule.host.as_deref().unwrap_or("*");
                for path in rule.http.iter().flat_map(|h| h.paths.iter()) {
                    let Some((svc, port)) = self.ingress_backend(&path.backend, ns) else {
                        continue;
                    };
                    let name = format!(
                        "{}:{}",
                        ing.metadata.name,
                        path.path.as_deref().unwrap_or("/")
                    );
                    let backend = self.service_routes(svc, port, mesh_client);
                    add(host, name, &path.path_match(), false, backend);
                }
            }
            if let Some(b) = &ing.spec.default_backend
                && let Some((svc, port)) = self.ingress_backend(b, ns)
            {
                let backend = self.service_routes(svc, port, mesh_client);
                let name = format!("{}:/", ing.metadata.name);
                add("*", name, &IngressPathMatch::Any, true, backend);
            }
        }
        by_host
            .into_iter()
            .map(|(host, mut routes)| {
                // Stable: the routes of one path keep their VirtualService order.
                routes.sort_by_key(|(order, _)| *order);
                (host, routes.into_iter().map(|(_, r)| r).collect())
            })
            .collect()
    }

    fn ingress_backend(&self, b: &IngressBackend, ns: &str) -> Option<(&Service, u16)> {
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

/// The first of `vs`'s gateways (as `ns/name`, a bare name being in `vs`'s namespace) that is
/// one of `gateways`.
fn bound_gateway(vs: &VirtualService, gateways: &BTreeSet<String>) -> Option<String> {
    let ns = vs.metadata.namespace_or_default();
    vs.spec
        .gateways
        .iter()
        .map(|g| {
            if g.contains('/') {
                g.clone()
            } else {
                format!("{ns}/{g}")
            }
        })
        .find(|g| gateways.contains(g))
}

/// The routes of one Ingress path (named `name` where the backend's route has no name of its
/// own): each of the backend's mesh routes, restricted to the path as [`IngressPathMatch`]
/// reads it. Whole-segment Prefix `/api` is two match blocks (ORed): exactly `/api`, or
/// starting `/api/`. A backend route with its own `uri` match keeps it (it is the more
/// specific of the two).
fn ingress_routes(name: &str, path: &IngressPathMatch, backend: Vec<Route>) -> Vec<Route> {
    let blocks: Vec<StringMatch> = match path {
        IngressPathMatch::Any => Vec::new(),
        IngressPathMatch::Exact(p) => vec![StringMatch::Exact(p.clone())],
        IngressPathMatch::Segments(p) => vec![
            StringMatch::Exact(p.clone()),
            StringMatch::Prefix(format!("{p}/")),
        ],
    };
    backend
        .into_iter()
        .map(|mut r| {
            if r.name.is_empty() || r.name == "default" {
                r.name = name.to_string();
            }
            if !blocks.is_empty() {
                r.matches = restrict(std::mem::take(&mut r.matches), &blocks);
            }
            r
        })
        .collect()
}

/// A route's match blocks ANDed with the path `blocks` (ORed): each block without a path
/// match becomes one block per path; one with its own path match is kept.
fn restrict(own: Vec<RouteMatch>, blocks: &[StringMatch]) -> Vec<RouteMatch> {
    let own = if own.is_empty() {
        vec![RouteMatch::default()]
    } else {
        own
    };
    own.into_iter()
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
