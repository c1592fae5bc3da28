//! VirtualService `http` routes -> the routes of a virtual host.

use std::collections::BTreeMap;

use skein_api::networking::{self as net, HttpMatchRequest, HttpRoute, VirtualService};
use skein_snapshot::{
    BLACKHOLE_CLUSTER, Fault, HeaderMatch, HeaderMutation, HeaderOps, Mirror, Protocol,
    QueryParamMatch, Redirect, RegexRewrite, RetryPolicy, Rewrite, Route, RouteAction, RouteConfig,
    RouteMatch, SIDECAR_OUTBOUND_ROUTE, StringMatch, VirtualHost, WeightedCluster,
    outbound_cluster_name, service_domains,
};

use super::Compiler;
use super::services::Service;

fn string_match(m: &net::StringMatch) -> Option<StringMatch> {
    match m.kind() {
        net::StringMatchKind::Exact(s) => Some(StringMatch::Exact(s.to_string())),
        net::StringMatchKind::Prefix(s) => Some(StringMatch::Prefix(s.to_string())),
        net::StringMatchKind::Regex(s) => Some(StringMatch::Regex(s.to_string())),
        net::StringMatchKind::Present => None,
    }
}

fn header_ops(h: Option<&net::Headers>) -> HeaderOps {
    let conv = |o: Option<&net::HeaderOperations>| {
        o.map(|o| HeaderMutation {
            set: o.set.clone(),
            add: o.add.clone(),
            remove: o.remove.clone(),
        })
        .unwrap_or_default()
    };
    match h {
        Some(h) => HeaderOps {
            request: conv(h.request.as_ref()),
            response: conv(h.response.as_ref()),
        },
        None => HeaderOps::default(),
    }
}

fn millis(d: Option<&skein_api::Duration>) -> Option<u64> {
    d.map(|d| d.get().as_millis() as u64)
}

/// Who a route is being compiled for (match conditions on the source are decided here).
#[derive(Debug, Clone, Copy)]
pub(super) struct Client<'a> {
    pub(super) namespace: &'a str,
    pub(super) labels: &'a BTreeMap<String, String>,
    /// `mesh` for sidecars, the Gateway's `ns/name` for gateways.
    pub(super) gateway: Option<&'a str>,
    /// The Services (by index position) a sidecar's Sidecar resource lets it see; None: all.
    pub(super) visible: Option<&'a [bool]>,
}

fn default_route(fqdn: &str, port: u16) -> Route {
    Route {
        name: "default".to_string(),
        action: RouteAction::Route(vec![WeightedCluster {
            cluster: outbound_cluster_name(port, None, fqdn),
            weight: 100,
            headers: HeaderOps::default(),
        }]),
        ..Default::default()
    }
}

impl Compiler<'_> {
    /// The cluster a VirtualService destination names, or BlackHoleCluster when the host is
    /// not a known service (or one the client's Sidecar resource does not let it see: it has
    /// no cluster for it).
    fn destination_cluster(
        &self,
        d: &net::Destination,
        rule_ns: &str,
        default_port: u16,
        visible: Option<&[bool]>,
    ) -> String {
        let host = self.resolve(&d.host, rule_ns);
        let Some(svc) = self.service(&host) else {
            return BLACKHOLE_CLUSTER.to_string();
        };
        if !self.sees(visible, &svc.fqdn) {
            return BLACKHOLE_CLUSTER.to_string();
        }
        let port = d
            .port
            .as_ref()
            .and_then(|p| p.number)
            .and_then(|n| u16::try_from(n).ok())
            .or_else(|| (svc.ports.len() == 1).then(|| svc.ports[0].port))
            .unwrap_or(default_port);
        outbound_cluster_name(port, d.subset.as_deref(), &svc.fqdn)
    }

    /// Keeps the match blocks that can apply to this client on this port; `None` when none
    /// can (the route does not apply at all).
    fn route_matches(
        &self,
        blocks: &[HttpMatchRequest],
        client: Client<'_>,
        port: Option<u16>,
    ) -> Option<Vec<RouteMatch>> {
        if blocks.is_empty() {
            return Some(Vec::new());
        }
        let kept: Vec<RouteMatch> = blocks
            .iter()
            .filter(|m| match (m.port, port) {
                (Some(want), Some(p)) => want == u32::from(p),
                _ => true,
            })
            .filter(|m| {
                m.source_labels
                    .iter()
                    .all(|(k, v)| client.labels.get(k) == Some(v))
            })
            .filter(|m| {
                m.source_namespace
                    .as_deref()
                    .is_none_or(|ns| ns == client.namespace)
            })
            .filter(|m| {
                m.gateways.is_empty()
                    || m.gateways.iter().any(|g| match client.gateway {
                        None => g == "mesh",
                        Some(gw) => g == gw || gw.ends_with(&format!("/{g}")),
                    })
            })
            .map(|m| RouteMatch {
                name: m.name.clone().unwrap_or_default(),
                path: m.uri.as_ref().and_then(string_match),
                headers: m
                    .headers
                    .iter()
                    .map(|(k, v)| HeaderMatch {
                        name: k.to_ascii_lowercase(),
                        value: string_match(v),
                    })
                    .collect(),
                query_params: m
                    .query_params
                    .iter()
                    .map(|(k, v)| QueryParamMatch {
                        name: k.clone(),
                        value: string_match(v),
                    })
                    .collect(),
                method: m.method.as_ref().and_then(string_match),
                authority: m.authority.as_ref().and_then(string_match),
                without_headers: m
                    .without_headers
                    .iter()
                    .map(|(k, v)| HeaderMatch {
                        name: k.to_ascii_lowercase(),
                        value: string_match(v),
                    })
                    .collect(),
                ignore_uri_case: m.ignore_uri_case.unwrap_or(false),
            })
            .collect();
        (!kept.is_empty()).then_some(kept)
    }

    /// One VirtualService `http[]` entry as a route, or `None` when it cannot apply here.
    pub(super) fn http_route(
        &self,
        vs_name: &str,
        r: &HttpRoute,
        rule_ns: &str,
        client: Client<'_>,
        port: Option<u16>,
        default_port: u16,
    ) -> Option<Route> {
        let matches = self.route_matches(&r.match_, client, port)?;
        Some(Route {
            name: r.name.clone().unwrap_or_default(),
            virtual_service: vs_name.to_string(),
            matches,
            action: self.route_action(r, rule_ns, default_port, client.visible),
            rewrite: r.rewrite.as_ref().map(rewrite),
            headers: header_ops(r.headers.as_ref()),
            timeout_ms: millis(r.timeout.as_ref()),
            retries: r.retries.as_ref().map(retry_policy),
            mirror: self.mirror(r, rule_ns, default_port, client.visible),
            fault: r.fault.as_ref().map(fault),
        })
    }

    /// What a route does: a direct response, a redirect, or weighted destinations (a single
    /// destination without weight gets 100).
    fn route_action(
        &self,
        r: &HttpRoute,
        rule_ns: &str,
        default_port: u16,
        visible: Option<&[bool]>,
    ) -> RouteAction {
        if let Some(d) = &r.direct_response {
            RouteAction::DirectResponse {
                status: u16::try_from(d.status).unwrap_or(500),
                body: d.body.as_ref().and_then(|b| b.string.clone()),
            }
        } else if let Some(rd) = &r.redirect {
            RouteAction::Redirect(Redirect {
                uri: rd.uri.clone(),
                authority: rd.authority.clone(),
                scheme: rd.scheme.clone(),
                port: rd.port.and_then(|p| u16::try_from(p).ok()),
                code: rd.redirect_code.and_then(|c| u16::try_from(c).ok()),
                prefix_rewrite: None,
                scheme_port: false,
            })
        } else {
            let single = r.route.len() == 1;
            RouteAction::Route(
                r.route
                    .iter()
                    .map(|d| WeightedCluster {
                        cluster: self.destination_cluster(
                            &d.destination,
                            rule_ns,
                            default_port,
                            visible,
                        ),
                        weight: match d.weight {
                            None if single => 100,
                            w => w.and_then(|w| u32::try_from(w).ok()).unwrap_or(0),
                        },
                        headers: header_ops(d.headers.as_ref()),
                    })
                    .collect(),
            )
        }
    }

    /// `mirror` (or the first of `mirrors`) with its percentage.
    fn mirror(
        &self,
        r: &HttpRoute,
        rule_ns: &str,
        default_port: u16,
        visible: Option<&[bool]>,
    ) -> Option<Mirror> {
        r.mirror
            .as_ref()
            .or_else(|| r.mirrors.first().map(|m| &m.destination))
            .map(|d| Mirror {
                cluster: self.destination_cluster(d, rule_ns, default_port, visible),
                percentage: r
                    .mirror_percentage
                    .as_ref()
                    .map(|p| p.value)
                    .or_else(|| {
                        r.mirrors
                            .first()
                            .and_then(|m| m.percentage.as_ref().map(|p| p.value))
                    })
                    .or(r.deprecated_mirror_percent().map(f64::from)),
            })
    }

    /// VirtualServices that apply to mesh traffic (no `gateways`, or `mesh` among them).
    fn mesh_virtual_services(&self) -> impl Iterator<Item = &VirtualService> {
        self.manifests
            .virtual_services()
            .filter(|v| v.spec.gateways.is_empty() || v.spec.gateways.iter().any(|g| g == "mesh"))
    }

    /// The mesh routes of one Service port for `client`: the HTTPRoutes whose parent is the
    /// Service, else its VirtualServices' `http` routes, or a default route to the whole
    /// service when none names it.
    pub(super) fn service_routes(
        &self,
        svc: &Service,
        port: u16,
        client: Client<'_>,
    ) -> Vec<Route> {
        // HTTPRoutes and GRPCRoutes bound to the Service (GAMMA) take its traffic.
        if let Some(routes) = self.mesh_gateway_api_routes(svc, port) {
            return routes;
        }
        let mut routes = Vec::new();
        let mut covered = false;
        for vs in self.mesh_virtual_services() {
            let ns = vs.metadata.namespace_or_default();
            if !vs.spec.hosts.iter().any(|h| self.covers(h, ns, &svc.fqdn)) {
                continue;
            }
            covered = true;
            routes.extend(vs.spec.http.iter().filter_map(|r| {
                self.http_route(&vs.metadata.name, r, ns, client, Some(port), port)
            }));
        }
        if !covered {
            routes.push(default_route(&svc.fqdn, port));
        }
        routes
    }

    /// The outbound route config of a sidecar in `client`'s namespace.
    pub(super) fn outbound_routes(&self, client: Client<'_>) -> RouteConfig {
        let mut vhosts = Vec::new();
        for (i, svc) in self.index.services.iter().enumerate() {
            if client
                .visible
                .is_some_and(|v| !v.get(i).copied().unwrap_or(false))
            {
                continue;
            }
            for port in svc.ports.iter().filter(|p| p.protocol != Protocol::Tcp) {
                let routes = self.service_routes(svc, port.port, client);
                vhosts.push(VirtualHost {
                    name: format!("{}:{}", svc.fqdn, port.port),
                    domains: service_domains(&svc.fqdn, port.port, client.namespace),
                    routes,
                });
            }
        }
        RouteConfig {
            name: SIDECAR_OUTBOUND_ROUTE.to_string(),
            virtual_hosts: vhosts,
        }
    }
}

fn fault(f: &net::HttpFaultInjection) -> Fault {
    Fault {
        delay_ms: f
            .delay
            .as_ref()
            .and_then(|d| millis(d.fixed_delay.as_ref())),
        delay_percentage: f.delay.as_ref().and_then(|d| {
            d.percentage
                .as_ref()
                .map(|p| p.value)
                .or(d.percent.map(f64::from))
        }),
        abort_status: f
            .abort
            .as_ref()
            .and_then(|a| a.http_status)
            .and_then(|s| u16::try_from(s).ok()),
        abort_percentage: f
            .abort
            .as_ref()
            .and_then(|a| a.percentage.as_ref().map(|p| p.value)),
    }
}

fn rewrite(rw: &net::HttpRewrite) -> Rewrite {
    Rewrite {
        uri: rw.uri.clone(),
        authority: rw.authority.clone(),
        uri_regex: rw.uri_regex_rewrite.as_ref().map(|x| RegexRewrite {
            pattern: x.match_.clone(),
            substitution: x.rewrite.clone(),
        }),
    }
}

/// `retryOn` is a comma-separated list; blanks are dropped.
fn retry_policy(rt: &net::HttpRetry) -> RetryPolicy {
    RetryPolicy {
        attempts: rt.attempts.and_then(|a| u32::try_from(a).ok()).unwrap_or(0),
        per_try_timeout_ms: millis(rt.per_try_timeout.as_ref()),
        retry_on: rt
            .retry_on
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        retry_remote_localities: rt.retry_remote_localities.unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::fixtures::*;
    use crate::registry::Pod;
    use skein_snapshot::GATEWAY_ROUTE;

    #[test]
    fn gateway_and_virtual_service_bind_and_match_conditions_on_the_source_are_decided() {
        let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: a, namespace: ns}
spec:
  selector: {app: a}
  ports: [{name: http, port: 8000}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: ns}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["a.example.com"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a, namespace: ns}
spec:
  hosts: ["a.example.com", a]
  gateways: [gw, mesh]
  http:
  - name: from-b
    match: [{sourceLabels: {app: b}}]
    route: [{destination: {host: a}}]
  - name: from-gateway
    match: [{gateways: [gw], uri: {prefix: /x}}]
    rewrite: {uri: /y}
    route: [{destination: {host: a, port: {number: 8000}}}]
  - name: rest
    route: [{destination: {host: nowhere}}]
"#;
        let m = skein_api::load_str("t.yaml", yaml).unwrap();
        let mut r = registry();
        r.pods.push(Pod {
            namespace: "ns".into(),
            ..pod(
                "a-1",
                &[("app", "a")],
                "127.9.1.9",
                ("http", 8000),
                "sidecar",
            )
        });
        let compiler = Compiler::new(&m, &r);
        let gw = compiler.snapshot("istio-ingressgateway-1", "1").unwrap();
        let vh = &gw.route_config(GATEWAY_ROUTE).unwrap().virtual_hosts;
        let a = vh.iter().find(|v| v.domains == ["a.example.com"]).unwrap();
        let names: Vec<&str> = a.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["from-gateway", "rest"],
            "sourceLabels app=b cannot match the gateway"
        );
        assert_eq!(
            a.routes[0].rewrite.as_ref().unwrap().uri.as_deref(),
            Some("/y")
        );
        let RouteAction::Route(d) = &a.routes[1].action else {
            panic!()
        };
        assert_eq!(
            d[0].cluster, BLACKHOLE_CLUSTER,
            "an unknown host is a black hole"
        );

        // A sidecar of app=a sees neither the source-labelled nor the gateway-only route.
        let side = compiler.snapshot("a-1", "1").unwrap();
        let vh = side
            .route_config(SIDECAR_OUTBOUND_ROUTE)
            .unwrap()
            .virtual_hosts
            .iter()
            .find(|v| v.name == "a.ns.svc.cluster.local:8000")
            .unwrap()
            .clone();
        let names: Vec<&str> = vh.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["rest"]);
    }
}
