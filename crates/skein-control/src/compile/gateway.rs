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
    /// Gateway-bound VirtualService routes first, then Gateway API routes, then Ingress paths; `*` last, so that named
    /// hosts win.
    pub(super) fn gateway_routes(&self, p: &Pod) -> RouteConfig {
        let mut by_host = self.bound_virtual_service_routes(p);
        for (host, routes) in self.gateway_api_routes() {
            by_host.entry(host).or_default().extend(routes);
        }
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
                visible: None,
            };
            let routes: Vec<Route> = vs
                .spec
                .http
                .iter()
                .filter_map(|r| self.http_route(&vs.metadata.name, r, ns, client, None, 80))
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
            visible: None,
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
/// starting `/api/`. A backend route's own `uri` match is intersected with the path (see
/// [`restrict`]): the Ingress exposes only its path, whatever the VirtualService routes; a
/// route none of whose match blocks can lie within the path is left out.
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
        .filter_map(|mut r| {
            if r.name.is_empty() || r.name == "default" {
                r.name = name.to_string();
            }
            if !blocks.is_empty() {
                r.matches = restrict(std::mem::take(&mut r.matches), &blocks);
                // No block left: the route cannot match within the path (and an empty list
                // would match everything).
                if r.matches.is_empty() {
                    return None;
                }
            }
            Some(r)
        })
        .collect()
}

/// A route's match blocks ANDed with the path `blocks` (ORed): a block without a path match
/// becomes one block per path; one with its own path match is kept once per path block
/// where the intersection of the two is one of them (see [`path_within`]), and dropped where
/// it is not, since a block holds one path condition.
fn restrict(own: Vec<RouteMatch>, blocks: &[StringMatch]) -> Vec<RouteMatch> {
    let own = if own.is_empty() {
        vec![RouteMatch::default()]
    } else {
        own
    };
    own.into_iter()
        .flat_map(|m| {
            blocks
                .iter()
                .filter_map(|b| match &m.path {
                    // The path is the Ingress's, matched as the Ingress matches it.
                    None => Some(RouteMatch {
                        path: Some(b.clone()),
                        ignore_uri_case: false,
                        ..m.clone()
                    }),
                    Some(own) => {
                        intersect_paths(own, m.ignore_uri_case, b).map(|(path, ci)| RouteMatch {
                            path: Some(path),
                            ignore_uri_case: ci,
                            ..m.clone()
                        })
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The paths matching both a route's `own` uri match (case-insensitive when `ci`) and the
/// Ingress path block `b`, when that is one of the two: `own` where it lies within `b`, `b`
/// where `b` lies within `own`. `None` when neither can be shown (disjoint, or a regex).
fn intersect_paths(own: &StringMatch, ci: bool, b: &StringMatch) -> Option<(StringMatch, bool)> {
    if !ci && path_within(own, b, false) {
        return Some((own.clone(), false));
    }
    if path_within(b, own, ci) {
        return Some((b.clone(), false));
    }
    None
}

/// Whether every path `inner` matches is also matched by `outer` (compared
/// case-insensitively when `ci`, for an `outer` with `ignoreUriCase`). Regexes are never
/// shown to contain or to be contained.
fn path_within(inner: &StringMatch, outer: &StringMatch, ci: bool) -> bool {
    let norm = |s: &str| {
        if ci {
            s.to_ascii_lowercase()
        } else {
            s.to_string()
        }
    };
    match (inner, outer) {
        (StringMatch::Exact(i), StringMatch::Exact(o)) => norm(i) == norm(o),
        (StringMatch::Exact(i) | StringMatch::Prefix(i), StringMatch::Prefix(o)) => {
            norm(i).starts_with(&norm(o))
        }
        _ => false,
    }
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

    #[test]
    fn an_ingress_path_does_not_open_the_backends_other_routes() {
        let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: web-service, namespace: blog-system}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-vsvc, namespace: blog-system}
spec:
  hosts: [web-service]
  http:
  - name: admin
    match: [{uri: {prefix: /admin}}]
    route: [{destination: {host: web-service}}]
  - name: docs
    match: [{uri: {prefix: /public/docs}}, {uri: {exact: /admin/public}}]
    route: [{destination: {host: web-service}}]
  - name: everything
    match: [{uri: {prefix: /}}]
    route: [{destination: {host: web-service}}]
  - name: loud
    match: [{uri: {regex: "/public/.*"}}, {uri: {prefix: /PUB}, ignoreUriCase: true}]
    route: [{destination: {host: web-service}}]
  - name: rest
    route: [{destination: {host: web-service}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: blog-system}
spec:
  rules:
  - http:
      paths:
      - path: /public
        pathType: Prefix
        backend: {service: {name: web-service, port: {number: 80}}}
"#;
        let m = skein_api::load_str("i.yaml", yaml).unwrap();
        let r = registry();
        let snap = Compiler::new(&m, &r)
            .snapshot("istio-ingressgateway-1", "1")
            .unwrap();
        let vh = &snap.route_config(GATEWAY_ROUTE).unwrap().virtual_hosts[0];
        let names: Vec<&str> = vh.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["docs", "everything", "loud", "rest"],
            "/admin is not reachable through /public"
        );
        let path = |r: usize| -> Vec<Option<StringMatch>> {
            vh.routes[r]
                .matches
                .iter()
                .map(|m| m.path.clone())
                .collect()
        };
        let (exact, prefix) = (
            Some(StringMatch::Exact("/public".into())),
            Some(StringMatch::Prefix("/public/".into())),
        );
        assert_eq!(path(0), [Some(StringMatch::Prefix("/public/docs".into()))]);
        assert_eq!(path(1), [exact.clone(), prefix.clone()]);
        // The regex cannot be shown to lie within the path; `/PUB` (any case) contains it.
        assert_eq!(path(2), [exact.clone(), prefix.clone()]);
        assert!(vh.routes[2].matches.iter().all(|m| !m.ignore_uri_case));
        assert_eq!(path(3), [exact, prefix]);
    }
}
