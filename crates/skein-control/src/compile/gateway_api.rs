//! Gateway API routes -> the same routes VirtualServices compile to, so that the proxy runs
//! them unchanged and `skein proxy-config ... routes` shows them.
//!
//! - A Gateway of class `istio` is served by the mesh's ingress gateway pod, as Istio serves
//!   a Gateway bound to an existing gateway deployment: its HTTP and HTTPS listeners by the
//!   gateway's HTTP and HTTPS ports (whatever port number the listener names; the number
//!   only picks the listener for a route's `parentRefs[].port`), its TCP listeners (port 1024
//!   and up) by a listener of its own on the gateway pod's address and that port, split over
//!   the TCPRoute's backends by weight per connection.
//! - An HTTPRoute or GRPCRoute whose `parentRefs` name a Service (GAMMA) routes the sidecars'
//!   traffic to that Service, in the place of its VirtualService routes; a TCPRoute bound to
//!   a Service's TCP port sends the sidecars' connections to its backends.
//! - Each match of a rule is one route (Istio does the same), so that routes of every
//!   HTTPRoute of a host are ordered by the spec's precedence: Exact path, then the longest
//!   prefix (regexes between the two, as Istio orders them), then a method match, then the
//!   most header matches, then the most query parameter matches; ties go to the oldest route,
//!   then `namespace/name` alphabetically, then rule and match order.
//! - PathPrefix is segment-wise (`/api` matches `/api` and `/api/x`, not `/apix`): two
//!   routes, `Exact /api` and `Prefix /api/`, each with its own rewrite.
//! - A backendRef to another namespace needs a ReferenceGrant there; without one (or to an
//!   unknown Service or port) the backend is invalid: its share of requests goes to
//!   BlackHoleCluster (502), and a rule with only invalid backends answers 500, as the spec
//!   asks; so does a rule with no backendRefs and no redirect (as Istio answers it).

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use skein_api::Labels;
use skein_api::gateway_api::{
    self as gw, BackendRef, HeaderModifier, HttpRouteFilter, HttpRouteMatch, ParentReference,
};
use skein_api::k8s::Namespace;
use skein_snapshot::names::fqdn;
use skein_snapshot::{
    BLACKHOLE_CLUSTER, HeaderMatch, HeaderMutation, HeaderOps, Listener, ListenerKind, Mirror,
    QueryParamMatch, Redirect, RegexRewrite, Rewrite, Route, RouteAction, RouteMatch, StringMatch,
    TcpDestination, WeightedCluster, outbound_cluster_name,
};

use super::Compiler;
use super::services::Service;
use crate::registry::Pod;

/// What a rule whose backends are all invalid (or all weighted 0) answers: the spec's 500.
const INVALID_BACKENDS_STATUS: u16 = 500;
/// What a rule without backendRefs and without a redirect answers.
const NO_BACKEND_STATUS: u16 = 500;

/// One route kind's rule, reduced to what both HTTPRoute and GRPCRoute have.
struct Rule<'a> {
    name: String,
    matches: Vec<Variant>,
    filters: &'a [HttpRouteFilter],
    backends: &'a [BackendRef],
    timeout_ms: Option<u64>,
}

/// One match of a rule, as routes (a segment prefix is two), with its precedence.
struct Variant {
    key: Precedence,
    paths: Vec<PathVariant>,
    headers: Vec<HeaderMatch>,
    query: Vec<QueryParamMatch>,
    method: Option<StringMatch>,
}

/// A path condition and, for a prefix rewrite, what the matched prefix becomes.
struct PathVariant {
    path: Option<StringMatch>,
    /// `ReplacePrefixMatch` written for this variant (with the trailing `/` of a `P/` prefix).
    prefix_replacement: Option<String>,
}

/// The spec's precedence, smallest first: path kind (exact, regex, prefix), longer prefix,
/// method match, more headers, more query params.
type Precedence = (u8, Reverse<usize>, bool, Reverse<usize>, Reverse<usize>);

/// Who a route is: for the tie rules, and for its routes' names.
struct Owner<'a> {
    kind: &'static str,
    namespace: &'a str,
    name: &'a str,
    created: &'a str,
}

impl Compiler<'_> {
    /// Gateways of class `istio`: the ones the mesh's gateway serves.
    fn served_gateways(&self) -> impl Iterator<Item = &gw::Gateway> {
        self.manifests
            .kube_gateways()
            .filter(|g| g.spec.gateway_class_name == gw::ISTIO_CLASS)
    }

    fn namespace_labels(&self, ns: &str) -> Labels {
        self.manifests
            .get::<Namespace>("", ns)
            .map(|n| n.metadata.labels.clone())
            .unwrap_or_default()
    }

    /// The hosts a route (of `kind` in `route_ns`, with `hostnames`) gets on the served
    /// Gateways through `parents`; empty when it attaches to none.
    fn attached_hosts(
        &self,
        kind: &str,
        route_ns: &str,
        parents: &[ParentReference],
        hostnames: &[String],
    ) -> Vec<String> {
        let labels = self.namespace_labels(route_ns);
        let mut hosts: Vec<String> = Vec::new();
        for p in parents.iter().filter(|p| p.is_gateway()) {
            let pns = p.namespace.as_deref().unwrap_or(route_ns);
            let Some(g) = self
                .served_gateways()
                .find(|g| g.metadata.name == p.name && g.metadata.namespace_or_default() == pns)
            else {
                continue;
            };
            for l in &g.spec.listeners {
                if !matches!(l.protocol.as_str(), "HTTP" | "HTTPS")
                    || !gw::listener_accepts(l, pns, kind, route_ns, &labels)
                    || p.section_name.as_deref().is_some_and(|s| s != l.name)
                    || p.port.is_some_and(|port| port != l.port)
                {
                    continue;
                }
                for h in gw::intersect_hostnames(l.hostname.as_deref(), hostnames) {
                    if !hosts.contains(&h) {
                        hosts.push(h);
                    }
                }
            }
        }
        hosts
    }

    /// The Gateway API routes the gateway pod serves, by host, in precedence order.
    pub(super) fn gateway_api_routes(&self) -> BTreeMap<String, Vec<Route>> {
        let mut by_host: BTreeMap<String, Vec<(SortKey, Route)>> = BTreeMap::new();
        for (owner, hosts, rules) in self.all_rules(|kind, ns, parents, hostnames| {
            self.attached_hosts(kind, ns, parents, hostnames)
        }) {
            let routes = self.rule_routes(&owner, &rules);
            for h in hosts {
                by_host.entry(h).or_default().extend(routes.iter().cloned());
            }
        }
        sorted(by_host)
    }

    /// The routes of HTTPRoutes and GRPCRoutes whose `parentRefs` name the Service `svc`
    /// (port `port`, or any port): mesh routing, for the sidecars. None when no route names it.
    pub(super) fn mesh_gateway_api_routes(&self, svc: &Service, port: u16) -> Option<Vec<Route>> {
        let mut all: BTreeMap<String, Vec<(SortKey, Route)>> = BTreeMap::new();
        let mut any = false;
        for (owner, hosts, rules) in self.all_rules(|_, ns, parents, _| {
            let named = parents.iter().any(|p| {
                p.is_service()
                    && fqdn(&p.name, p.namespace.as_deref().unwrap_or(ns)) == svc.fqdn
                    && p.port.is_none_or(|x| x == u32::from(port))
            });
            if named {
                vec![String::new()]
            } else {
                Vec::new()
            }
        }) {
            if hosts.is_empty() {
                continue;
            }
            any = true;
            let routes = self.rule_routes(&owner, &rules);
            all.entry(String::new()).or_default().extend(routes);
        }
        any.then(|| sorted(all).remove("").unwrap_or_default())
    }

    /// Every HTTPRoute's and GRPCRoute's rules, with the hosts `attach` gives the route.
    #[allow(clippy::type_complexity)]
    fn all_rules<'m>(
        &'m self,
        attach: impl Fn(&str, &str, &[ParentReference], &[String]) -> Vec<String>,
    ) -> Vec<(Owner<'m>, Vec<String>, Vec<Rule<'m>>)> {
        let mut out = Vec::new();
        for r in self.manifests.http_routes() {
            let ns = r.metadata.namespace_or_default();
            let hosts = attach("HTTPRoute", ns, &r.spec.parent_refs, &r.spec.hostnames);
            if hosts.is_empty() {
                continue;
            }
            let rules = r
                .spec
                .rules
                .iter()
                .enumerate()
                .map(|(i, rule)| Rule {
                    name: rule
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("{}.{i}", r.metadata.name)),
                    matches: if rule.matches.is_empty() {
                        vec![http_variant(
                            &HttpRouteMatch::default(),
                            rule.filters.as_slice(),
                        )]
                    } else {
                        rule.matches
                            .iter()
                            .map(|m| http_variant(m, &rule.filters))
                            .collect()
                    },
                    filters: &rule.filters,
                    backends: &rule.backend_refs,
                    timeout_ms: rule.timeouts.as_ref().and_then(|t| {
                        t.request
                            .as_ref()
                            .or(t.backend_request.as_ref())
                            .map(|d| d.get().as_millis() as u64)
                            .filter(|ms| *ms > 0)
                    }),
                })
                .collect();
            out.push((owner("HTTPRoute", r), hosts, rules));
        }
        for r in self.manifests.grpc_routes() {
            let ns = r.metadata.namespace_or_default();
            let hosts = attach("GRPCRoute", ns, &r.spec.parent_refs, &r.spec.hostnames);
            if hosts.is_empty() {
                continue;
            }
            let rules = r
                .spec
                .rules
                .iter()
                .enumerate()
                .map(|(i, rule)| Rule {
                    name: rule
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("{}.{i}", r.metadata.name)),
                    matches: if rule.matches.is_empty() {
                        vec![grpc_variant(&gw::GrpcRouteMatch::default())]
                    } else {
                        rule.matches.iter().map(grpc_variant).collect()
                    },
                    filters: &rule.filters,
                    backends: &rule.backend_refs,
                    timeout_ms: None,
                })
                .collect();
            out.push((owner("GRPCRoute", r), hosts, rules));
        }
        out
    }

    /// The routes of one route object's rules, each with its sort key.
    fn rule_routes(&self, owner: &Owner<'_>, rules: &[Rule<'_>]) -> Vec<(SortKey, Route)> {
        let mut out = Vec::new();
        for (ri, rule) in rules.iter().enumerate() {
            let headers = header_ops(rule.filters);
            let mirror = self.gw_mirror(owner, rule.filters);
            let rewrite_filter = rule
                .filters
                .iter()
                .find_map(|f| f.url_rewrite.as_ref().filter(|_| f.type_ == "URLRewrite"));
            let redirect = rule.filters.iter().find_map(|f| {
                f.request_redirect
                    .as_ref()
                    .filter(|_| f.type_ == "RequestRedirect")
            });
            let backends = (redirect.is_none()).then(|| self.gw_backends(owner, rule.backends));
            for (mi, v) in rule.matches.iter().enumerate() {
                for pv in &v.paths {
                    let matches = vec![RouteMatch {
                        path: pv.path.clone(),
                        headers: v.headers.clone(),
                        query_params: v.query.clone(),
                        method: v.method.clone(),
                        ..Default::default()
                    }];
                    let action = match (redirect, &backends) {
                        (Some(rd), _) => RouteAction::Redirect(redirect_action(rd, pv)),
                        (None, Some(action)) => action.clone(),
                        (None, None) => RouteAction::DirectResponse {
                            status: NO_BACKEND_STATUS,
                            body: None,
                        },
                    };
                    let rewrite = rewrite_filter.map(|rw| Rewrite {
                        authority: rw.hostname.clone(),
                        ..path_rewrite(rw.path.as_ref(), pv)
                    });
                    let route = Route {
                        name: rule.name.clone(),
                        virtual_service: owner.name.to_string(),
                        matches,
                        action,
                        rewrite,
                        headers: headers.clone(),
                        timeout_ms: rule.timeout_ms,
                        retries: None,
                        mirror: mirror.clone(),
                        fault: None,
                    };
                    let key = (
                        v.key,
                        owner.created.to_string(),
                        format!("{}/{}", owner.namespace, owner.name),
                        ri,
                        mi,
                    );
                    out.push((key, route));
                }
            }
        }
        out
    }

    /// The cluster of a backendRef of a route of `owner`, None when it is invalid (not a
    /// Service, unknown Service or port, or another namespace without a ReferenceGrant).
    fn backend_cluster(&self, owner: &Owner<'_>, b: &BackendRef) -> Option<String> {
        if !b.is_service() {
            return None;
        }
        let ns = b.namespace.as_deref().unwrap_or(owner.namespace);
        if !gw::reference_permitted(
            self.manifests.reference_grants(),
            owner.kind,
            owner.namespace,
            ns,
            &b.name,
        ) {
            return None;
        }
        let svc = self.service(&fqdn(&b.name, ns))?;
        let port = match b.port {
            Some(p) => svc.ports.iter().find(|sp| u32::from(sp.port) == p)?.port,
            None if svc.ports.len() == 1 => svc.ports[0].port,
            None => return None,
        };
        Some(outbound_cluster_name(port, None, &svc.fqdn))
    }

    /// A rule's weighted backends: valid ones to their clusters, invalid ones to
    /// BlackHoleCluster; 500 when none is valid or every weight is 0.
    fn gw_backends(&self, owner: &Owner<'_>, refs: &[BackendRef]) -> RouteAction {
        if refs.is_empty() {
            return RouteAction::DirectResponse {
                status: NO_BACKEND_STATUS,
                body: None,
            };
        }
        let mut dests = Vec::new();
        let mut valid = false;
        for b in refs {
            let cluster = self.backend_cluster(owner, b);
            let weight = u32::try_from(b.weight().clamp(0, 1_000_000)).unwrap_or(0);
            valid |= cluster.is_some() && weight > 0;
            dests.push(WeightedCluster {
                cluster: cluster.unwrap_or_else(|| BLACKHOLE_CLUSTER.to_string()),
                weight,
                headers: header_ops(&b.filters),
            });
        }
        if !valid {
            return RouteAction::DirectResponse {
                status: INVALID_BACKENDS_STATUS,
                body: None,
            };
        }
        RouteAction::Route(dests)
    }

    /// The first RequestMirror filter with a valid backend, with its percentage.
    fn gw_mirror(&self, owner: &Owner<'_>, filters: &[HttpRouteFilter]) -> Option<Mirror> {
        filters
            .iter()
            .filter(|f| f.type_ == "RequestMirror")
            .filter_map(|f| f.request_mirror.as_ref())
            .find_map(|m| {
                let cluster = self.backend_cluster(owner, &m.backend_ref)?;
                let percentage = match (&m.percent, &m.fraction) {
                    (Some(p), _) => Some(*p as f64),
                    (None, Some(f)) => {
                        let den = f.denominator.unwrap_or(100).max(1);
                        Some(f.numerator as f64 * 100.0 / den as f64)
                    }
                    (None, None) => None,
                };
                Some(Mirror {
                    cluster,
                    percentage,
                })
            })
    }

    /// The backends of a TCPRoute's rules, valid ones only (invalid ones get no connection:
    /// a TCP listener cannot answer 500), as a listener's kind; None when none is valid.
    fn tcp_route_kind(&self, r: &gw::TcpRoute, visible: Option<&[bool]>) -> Option<ListenerKind> {
        let owner = owner("TCPRoute", r);
        let dests: Vec<TcpDestination> = r
            .spec
            .rules
            .iter()
            .flat_map(|rule| &rule.backend_refs)
            .filter(|b| b.weight() > 0)
            // A sidecar has clusters only for the Services its Sidecar resource lets it see.
            .filter(|b| {
                let ns = b.namespace.as_deref().unwrap_or(owner.namespace);
                self.sees(visible, &fqdn(&b.name, ns))
            })
            .filter_map(|b| {
                Some(TcpDestination {
                    cluster: self.backend_cluster(&owner, b)?,
                    weight: u32::try_from(b.weight().min(1_000_000)).ok()?,
                })
            })
            .collect();
        match dests.as_slice() {
            [] => None,
            [one] => Some(ListenerKind::Tcp {
                cluster: one.cluster.clone(),
            }),
            _ => Some(ListenerKind::TcpWeighted { clusters: dests }),
        }
    }

    /// What a sidecar's TCP listener for port `port` of `svc` does when a TCPRoute names the
    /// Service as its parent (mesh routing): the route's backends, split by weight. The
    /// first such route wins. `visible`: the sidecar's scope.
    pub(super) fn mesh_tcp_route(
        &self,
        svc: &Service,
        port: u16,
        visible: Option<&[bool]>,
    ) -> Option<ListenerKind> {
        self.manifests
            .tcp_routes()
            .filter(|r| {
                let ns = r.metadata.namespace_or_default();
                r.spec.parent_refs.iter().any(|p| {
                    p.is_service()
                        && fqdn(&p.name, p.namespace.as_deref().unwrap_or(ns)) == svc.fqdn
                        && p.port.is_none_or(|x| x == u32::from(port))
                })
            })
            .find_map(|r| self.tcp_route_kind(r, visible))
    }

    /// The gateway's TCP listeners: one per TCP listener (port 1024 and up) of a served
    /// Gateway that a TCPRoute attaches to, on the gateway pod's address, to the route's
    /// backends split by weight per connection.
    pub(super) fn gateway_tcp_listeners(&self, p: &Pod) -> Vec<Listener> {
        let Some(ip) = p.ip() else {
            return Vec::new();
        };
        let mut out: Vec<Listener> = Vec::new();
        for r in self.manifests.tcp_routes() {
            let ns = r.metadata.namespace_or_default();
            let labels = self.namespace_labels(ns);
            let Some(kind) = self.tcp_route_kind(r, None) else {
                continue;
            };
            for parent in r.spec.parent_refs.iter().filter(|p| p.is_gateway()) {
                let pns = parent.namespace.as_deref().unwrap_or(ns);
                let Some(g) = self.served_gateways().find(|g| {
                    g.metadata.name == parent.name && g.metadata.namespace_or_default() == pns
                }) else {
                    continue;
                };
                for l in &g.spec.listeners {
                    let Ok(port) = u16::try_from(l.port) else {
                        continue;
                    };
                    if l.protocol != "TCP"
                        || port < 1024
                        || !gw::listener_accepts(l, pns, "TCPRoute", ns, &labels)
                        || parent.section_name.as_deref().is_some_and(|s| s != l.name)
                        || parent.port.is_some_and(|x| x != l.port)
                    {
                        continue;
                    }
                    let address = SocketAddr::new(ip, port);
                    if out.iter().any(|x| x.address == address) {
                        continue;
                    }
                    out.push(Listener {
                        name: format!("{pns}/{}/{}", g.metadata.name, l.name),
                        address,
                        kind: kind.clone(),
                    });
                }
            }
        }
        out
    }
}

/// The order of a host's routes: precedence, then oldest, then `ns/name`, then rule and
/// match order.
type SortKey = (Precedence, String, String, usize, usize);

fn sorted(by_host: BTreeMap<String, Vec<(SortKey, Route)>>) -> BTreeMap<String, Vec<Route>> {
    by_host
        .into_iter()
        .map(|(h, mut routes)| {
            // Stable: the variants of one match keep their order.
            routes.sort_by(|a, b| a.0.cmp(&b.0));
            (h, routes.into_iter().map(|(_, r)| r).collect())
        })
        .collect()
}

fn owner<'a, S>(kind: &'static str, r: &'a skein_api::Object<S>) -> Owner<'a> {
    Owner {
        kind,
        namespace: r.metadata.namespace_or_default(),
        name: &r.metadata.name,
        created: r.metadata.creation_timestamp.as_deref().unwrap_or(""),
    }
}

fn value_match(regex: bool, v: &str) -> StringMatch {
    if regex {
        StringMatch::Regex(v.to_string())
    } else {
        StringMatch::Exact(v.to_string())
    }
}

fn headers(ms: &[gw::ValueMatch]) -> Vec<HeaderMatch> {
    ms.iter()
        .map(|m| HeaderMatch {
            name: m.name.to_ascii_lowercase(),
            value: Some(value_match(m.is_regex(), &m.value)),
        })
        .collect()
}

/// The prefix a `ReplacePrefixMatch` in `filters` replaces the matched prefix with.
fn prefix_replacement(filters: &[HttpRouteFilter]) -> Option<&str> {
    filters.iter().find_map(|f| {
        let path = match f.type_.as_str() {
            "URLRewrite" => f.url_rewrite.as_ref()?.path.as_ref()?,
            "RequestRedirect" => f.request_redirect.as_ref()?.path.as_ref()?,
            _ => return None,
        };
        (path.type_ == "ReplacePrefixMatch")
            .then_some(path.replace_prefix_match.as_deref())
            .flatten()
    })
}

fn http_variant(m: &HttpRouteMatch, filters: &[HttpRouteFilter]) -> Variant {
    let replacement = prefix_replacement(filters);
    let default_path = gw::HttpPathMatch::default();
    let p = m.path.as_ref().unwrap_or(&default_path);
    let (rank, len, paths) = match p.kind() {
        "Exact" => (
            0,
            p.value().len(),
            vec![PathVariant {
                path: Some(StringMatch::Exact(p.value().to_string())),
                prefix_replacement: None,
            }],
        ),
        "RegularExpression" => (
            1,
            p.value().len(),
            vec![PathVariant {
                path: Some(StringMatch::Regex(p.value().to_string())),
                prefix_replacement: None,
            }],
        ),
        _ => {
            // Segment-wise; a trailing `/` is ignored.
            let prefix = p.value().trim_end_matches('/');
            let with_slash = |r: &str| format!("{}/", r.trim_end_matches('/'));
            let paths = if prefix.is_empty() {
                vec![PathVariant {
                    path: Some(StringMatch::Prefix("/".into())),
                    prefix_replacement: replacement.map(with_slash),
                }]
            } else {
                vec![
                    PathVariant {
                        path: Some(StringMatch::Exact(prefix.to_string())),
                        prefix_replacement: replacement.map(str::to_string),
                    },
                    PathVariant {
                        path: Some(StringMatch::Prefix(format!("{prefix}/"))),
                        prefix_replacement: replacement.map(with_slash),
                    },
                ]
            };
            (2, prefix.len().max(1), paths)
        }
    };
    Variant {
        key: (
            rank,
            Reverse(len),
            m.method.is_none(),
            Reverse(m.headers.len()),
            Reverse(m.query_params.len()),
        ),
        paths,
        headers: headers(&m.headers),
        query: m
            .query_params
            .iter()
            .map(|q| QueryParamMatch {
                name: q.name.clone(),
                value: Some(value_match(q.is_regex(), &q.value)),
            })
            .collect(),
        method: m.method.as_ref().map(|x| StringMatch::Exact(x.clone())),
    }
}

/// A gRPC method match as a path match: `/service/method` exactly, `/service/` as a prefix,
/// or a regex (for a method without service, or `RegularExpression`).
fn grpc_variant(m: &gw::GrpcRouteMatch) -> Variant {
    let (rank, len, path) = match &m.method {
        None => (2, 1, StringMatch::Prefix("/".into())),
        Some(mm) if mm.type_.as_deref() == Some("RegularExpression") => {
            let s = mm.service.as_deref().unwrap_or("[^/]+");
            let me = mm.method.as_deref().unwrap_or("[^/]+");
            let re = format!("/(?:{s})/(?:{me})");
            (1, re.len(), StringMatch::Regex(re))
        }
        Some(mm) => match (&mm.service, &mm.method) {
            (Some(s), Some(me)) => {
                let p = format!("/{s}/{me}");
                (0, p.len(), StringMatch::Exact(p))
            }
            (Some(s), None) => {
                let p = format!("/{s}/");
                (2, p.len(), StringMatch::Prefix(p))
            }
            (None, Some(me)) => {
                let re = format!("/[^/]+/{}", regex_escape(me));
                (1, re.len(), StringMatch::Regex(re))
            }
            (None, None) => (2, 1, StringMatch::Prefix("/".into())),
        },
    };
    Variant {
        key: (
            rank,
            Reverse(len),
            true,
            Reverse(m.headers.len()),
            Reverse(0),
        ),
        paths: vec![PathVariant {
            path: Some(path),
            prefix_replacement: None,
        }],
        headers: headers(&m.headers),
        query: Vec::new(),
        method: None,
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn mutation(m: Option<&HeaderModifier>) -> HeaderMutation {
    let Some(m) = m else {
        return HeaderMutation::default();
    };
    HeaderMutation {
        set: m
            .set
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
            .collect(),
        add: m
            .add
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
            .collect(),
        remove: m.remove.iter().map(|h| h.to_ascii_lowercase()).collect(),
    }
}

/// RequestHeaderModifier and ResponseHeaderModifier filters as header operations.
fn header_ops(filters: &[HttpRouteFilter]) -> HeaderOps {
    let find = |t: &str| filters.iter().find(|f| f.type_ == t);
    HeaderOps {
        request: mutation(
            find("RequestHeaderModifier").and_then(|f| f.request_header_modifier.as_ref()),
        ),
        response: mutation(
            find("ResponseHeaderModifier").and_then(|f| f.response_header_modifier.as_ref()),
        ),
    }
}

/// A path rewrite for one path variant: ReplaceFullPath replaces the whole path (as a regex
/// over it, as Istio writes it), ReplacePrefixMatch the matched prefix.
fn path_rewrite(p: Option<&gw::PathModifier>, v: &PathVariant) -> Rewrite {
    let Some(p) = p else {
        return Rewrite::default();
    };
    match p.type_.as_str() {
        "ReplaceFullPath" => Rewrite {
            uri_regex: p.replace_full_path.as_ref().map(|full| RegexRewrite {
                pattern: "^.*$".into(),
                substitution: full.replace('$', "$$"),
            }),
            ..Default::default()
        },
        _ => Rewrite {
            uri: v.prefix_replacement.clone(),
            ..Default::default()
        },
    }
}

/// A RequestRedirect for one path variant (302 unless `statusCode` says otherwise).
fn redirect_action(rd: &gw::RequestRedirect, v: &PathVariant) -> Redirect {
    let (uri, prefix) = match rd.path.as_ref() {
        Some(p) if p.type_ == "ReplaceFullPath" => (p.replace_full_path.clone(), None),
        Some(_) => match &v.path {
            // An exact variant is all prefix: the whole path becomes the replacement.
            Some(StringMatch::Exact(_)) => (v.prefix_replacement.clone(), None),
            _ => (None, v.prefix_replacement.clone()),
        },
        None => (None, None),
    };
    // A port that is the scheme's own is left out of the Location, as the spec says; so is
    // the request's port when only the scheme changes.
    let well_known = match rd.scheme.as_deref() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    let port = rd
        .port
        .filter(|p| Some(*p) != well_known)
        .and_then(|p| u16::try_from(p).ok());
    Redirect {
        uri,
        prefix_rewrite: prefix,
        authority: rd.hostname.clone(),
        scheme: rd.scheme.clone(),
        scheme_port: port.is_none() && rd.scheme.is_some(),
        port,
        code: Some(
            rd.status_code
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(302),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::fixtures::*;
    use skein_snapshot::{GATEWAY_ROUTE, SIDECAR_OUTBOUND_ROUTE, Snapshot, VirtualHost};

    const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: echo, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other, labels: {shared: "yes"}}
---
apiVersion: v1
kind: Service
metadata: {name: echo-v1, namespace: echo}
spec: {selector: {app: echo, version: v1}, ports: [{name: http, port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: echo-v2, namespace: echo}
spec: {selector: {app: echo, version: v2}, ports: [{name: http, port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: other}
spec: {selector: {app: db}, ports: [{name: tcp-db, port: 5432}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: "*.example.com", allowedRoutes: {namespaces: {from: All}}}
  - {name: db, port: 15432, protocol: TCP, allowedRoutes: {namespaces: {from: All}}}
"#;

    fn compile(extra: &str) -> (Snapshot, Snapshot) {
        let m = skein_api::load_str("t.yaml", &format!("{BASE}---{extra}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let refused: Vec<String> = skein_api::validate(&m)
            .iter()
            .filter(|d| d.refuses())
            .map(ToString::to_string)
            .collect();
        assert!(refused.is_empty(), "{refused:?}");
        let r = registry();
        let c = Compiler::new(&m, &r);
        let gw = c.snapshot("istio-ingressgateway-1", "1").unwrap();
        gw.validate().unwrap();
        let side = c.snapshot("web-1", "1").unwrap();
        (gw, side)
    }

    fn vhost<'a>(s: &'a Snapshot, rc: &str, domain: &str) -> &'a VirtualHost {
        s.route_config(rc)
            .unwrap()
            .virtual_hosts
            .iter()
            .find(|v| v.domains.iter().any(|d| d == domain) || v.name == domain)
            .unwrap_or_else(|| panic!("no virtual host {domain}"))
    }

    fn clusters(r: &Route) -> Vec<(String, u32)> {
        match &r.action {
            RouteAction::Route(d) => d.iter().map(|d| (d.cluster.clone(), d.weight)).collect(),
            other => panic!("not a route: {other:?}"),
        }
    }

    const V1: &str = "outbound|8080||echo-v1.echo.svc.cluster.local";
    const V2: &str = "outbound|8080||echo-v2.echo.svc.cluster.local";

    #[test]
    fn weights_and_a_header_match_compile_like_the_equivalent_virtual_service() {
        let (gw, _) = compile(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo, namespace: echo}
spec:
  parentRefs: [{name: gw, namespace: istio-system}]
  hostnames: [echo.example.com]
  rules:
  - backendRefs:
    - {name: echo-v1, port: 8080, weight: 80}
    - {name: echo-v2, port: 8080, weight: 20}
  - matches: [{headers: [{name: X-Canary, value: "true"}]}]
    backendRefs: [{name: echo-v2, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["vs.example.com"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: echo}
spec:
  hosts: [vs.example.com]
  gateways: [istio-system/istio-gw]
  http:
  - match: [{headers: {x-canary: {exact: "true"}}}]
    route: [{destination: {host: echo-v2, port: {number: 8080}}}]
  - route:
    - {destination: {host: echo-v1, port: {number: 8080}}, weight: 80}
    - {destination: {host: echo-v2, port: {number: 8080}}, weight: 20}
"#,
        );
        let h = vhost(&gw, GATEWAY_ROUTE, "echo.example.com");
        let v = vhost(&gw, GATEWAY_ROUTE, "vs.example.com");
        // The header match wins over the catch-all though written after it (more headers).
        assert_eq!(h.routes.len(), 2, "{:#?}", h.routes);
        assert_eq!(
            h.routes[0].matches[0].headers,
            v.routes[0].matches[0].headers
        );
        assert_eq!(clusters(&h.routes[0]), [(V2.to_string(), 1)]);
        assert_eq!(clusters(&v.routes[0]), [(V2.to_string(), 100)]);
        assert_eq!(clusters(&h.routes[1]), clusters(&v.routes[1]));
        assert_eq!(
            h.routes[1].matches[0].path,
            Some(StringMatch::Prefix("/".into()))
        );
    }

    #[test]
    fn filters_become_redirects_rewrites_header_operations_and_mirrors() {
        let (gw, _) = compile(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: f, namespace: echo}
spec:
  parentRefs: [{name: gw, namespace: istio-system, sectionName: http}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /old/}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: api.internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Set, value: s}]
        add: [{name: X-Add, value: a}]
        remove: [X-Drop]
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: X-Resp, value: r}]}
    - type: RequestMirror
      requestMirror: {backendRef: {name: echo-v2, port: 8080}, fraction: {numerator: 1, denominator: 4}}
    backendRefs: [{name: echo-v1, port: 8080}]
  - matches: [{path: {type: Exact, value: /full}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /elsewhere}}
    backendRefs: [{name: echo-v1, port: 8080}]
    timeouts: {request: 1500ms}
"#,
        );
        let h = vhost(&gw, GATEWAY_ROUTE, "*.example.com");
        let paths: Vec<Option<StringMatch>> =
            h.routes.iter().map(|r| r.matches[0].path.clone()).collect();
        // Exact first, then the longest prefix, each prefix as exact P and prefix P/.
        assert_eq!(
            paths,
            [
                Some(StringMatch::Exact("/full".into())),
                Some(StringMatch::Exact("/old".into())),
                Some(StringMatch::Prefix("/old/".into())),
                Some(StringMatch::Exact("/api".into())),
                Some(StringMatch::Prefix("/api/".into())),
            ]
        );
        let full = &h.routes[0];
        assert_eq!(full.timeout_ms, Some(1500));
        let rr = full.rewrite.as_ref().unwrap().uri_regex.as_ref().unwrap();
        assert_eq!(
            (rr.pattern.as_str(), rr.substitution.as_str()),
            ("^.*$", "/elsewhere")
        );
        let RouteAction::Redirect(exact) = &h.routes[1].action else {
            panic!("redirect")
        };
        assert_eq!(
            (exact.uri.as_deref(), exact.code),
            (Some("/new"), Some(302))
        );
        let RouteAction::Redirect(prefix) = &h.routes[2].action else {
            panic!("redirect")
        };
        assert_eq!(prefix.prefix_rewrite.as_deref(), Some("/new/"));
        let api = &h.routes[3];
        let rw = api.rewrite.as_ref().unwrap();
        assert_eq!(
            (rw.uri.as_deref(), rw.authority.as_deref()),
            (Some("/"), Some("api.internal"))
        );
        assert_eq!(
            h.routes[4].rewrite.as_ref().unwrap().uri.as_deref(),
            Some("/")
        );
        assert_eq!(api.headers.request.set["x-set"], "s");
        assert_eq!(api.headers.request.add["x-add"], "a");
        assert_eq!(api.headers.request.remove, ["x-drop"]);
        assert_eq!(api.headers.response.set["x-resp"], "r");
        let mirror = api.mirror.as_ref().unwrap();
        assert_eq!(
            (mirror.cluster.as_str(), mirror.percentage),
            (V2, Some(25.0))
        );
    }

    #[test]
    fn a_cross_namespace_backend_needs_a_reference_grant() {
        let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: x, namespace: other}
spec:
  parentRefs: [{name: gw, namespace: istio-system}]
  hostnames: [x.example.com]
  rules:
  - backendRefs: [{name: echo-v1, namespace: echo, port: 8080}]
"#;
        let (gw, _) = compile(route);
        let r = &vhost(&gw, GATEWAY_ROUTE, "x.example.com").routes[0];
        assert_eq!(
            r.action,
            RouteAction::DirectResponse {
                status: 500,
                body: None
            }
        );
        let m = skein_api::load_str("t.yaml", &format!("{BASE}---{route}")).unwrap();
        let found: Vec<String> = skein_api::validate(&m)
            .iter()
            .filter(|d| d.code == skein_api::Code::Skn0030)
            .map(|d| d.message.clone())
            .collect();
        assert_eq!(
            found,
            [
                "RefNotPermitted: no ReferenceGrant in namespace echo lets a HTTPRoute of namespace other refer to the Service echo-v1"
            ]
        );

        let (gw, _) = compile(&format!(
            "{route}---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: from-other, namespace: echo}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: other}}]\n  to: [{{group: \"\", kind: Service}}]\n"
        ));
        let r = &vhost(&gw, GATEWAY_ROUTE, "x.example.com").routes[0];
        assert_eq!(clusters(r), [(V1.to_string(), 1)]);
    }

    #[test]
    fn listeners_decide_which_routes_attach() {
        let (gw, _) = compile(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: same-only, namespace: istio-system}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP, hostname: same.example.org}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: elsewhere, namespace: istio-system}
spec:
  gatewayClassName: other-controller
  listeners: [{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a, namespace: echo}
spec:
  parentRefs: [{name: same-only, namespace: istio-system}, {name: elsewhere, namespace: istio-system}, {name: gw, namespace: istio-system, port: 8080}]
  rules: [{backendRefs: [{name: echo-v1, port: 8080}]}]
"#,
        );
        let rc = gw.route_config(GATEWAY_ROUTE).unwrap();
        assert!(
            rc.virtual_hosts
                .iter()
                .all(|v| v.routes.iter().all(|r| r.virtual_service != "a")),
            "another namespace, another class, a port no listener has: {:#?}",
            rc.virtual_hosts
        );
    }

    #[test]
    fn a_route_bound_to_a_service_routes_the_sidecars() {
        let (_, side) = compile(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mesh, namespace: echo}
spec:
  parentRefs: [{group: "", kind: Service, name: echo-v1, port: 8080}]
  rules:
  - matches: [{headers: [{name: x-v2, value: "yes"}]}]
    backendRefs: [{name: echo-v2, port: 8080}]
  - backendRefs: [{name: echo-v1, port: 8080}]
"#,
        );
        let h = vhost(
            &side,
            SIDECAR_OUTBOUND_ROUTE,
            "echo-v1.echo.svc.cluster.local:8080",
        );
        assert_eq!(h.routes.len(), 2);
        assert_eq!(clusters(&h.routes[0]), [(V2.to_string(), 1)]);
        assert_eq!(clusters(&h.routes[1]), [(V1.to_string(), 1)]);
        // The other Service keeps its default route.
        let v2 = vhost(
            &side,
            SIDECAR_OUTBOUND_ROUTE,
            "echo-v2.echo.svc.cluster.local:8080",
        );
        assert_eq!(v2.routes[0].name, "default");
    }

    #[test]
    fn a_tcp_route_bound_to_a_service_splits_the_sidecars_connections() {
        let (_, side) = compile(
            r#"
apiVersion: v1
kind: Service
metadata: {name: db-canary, namespace: other}
spec: {selector: {app: db, version: canary}, ports: [{name: tcp-db, port: 5432}]}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db, namespace: other}
spec:
  parentRefs: [{group: "", kind: Service, name: db, port: 5432}]
  rules:
  - backendRefs: [{name: db, port: 5432, weight: 90}, {name: db-canary, port: 5432, weight: 10}]
"#,
        );
        let l = side
            .listeners
            .iter()
            .find(|l| l.name == "outbound|5432||db.other.svc.cluster.local")
            .expect("the db listener");
        assert_eq!(
            l.kind,
            ListenerKind::TcpWeighted {
                clusters: vec![
                    TcpDestination {
                        cluster: "outbound|5432||db.other.svc.cluster.local".into(),
                        weight: 90
                    },
                    TcpDestination {
                        cluster: "outbound|5432||db-canary.other.svc.cluster.local".into(),
                        weight: 10
                    },
                ]
            }
        );
        // The canary's own listener is left alone.
        let c = side
            .listeners
            .iter()
            .find(|l| l.name == "outbound|5432||db-canary.other.svc.cluster.local")
            .expect("the canary's listener");
        assert_eq!(
            c.kind,
            ListenerKind::Tcp {
                cluster: "outbound|5432||db-canary.other.svc.cluster.local".into()
            }
        );
    }

    #[test]
    fn grpc_methods_are_paths_and_tcp_routes_get_a_listener() {
        let (gw, _) = compile(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g, namespace: echo}
spec:
  parentRefs: [{name: gw, namespace: istio-system}]
  hostnames: [grpc.example.com]
  rules:
  - matches: [{method: {service: pkg.Echo, method: Say}}]
    backendRefs: [{name: echo-v2, port: 8080}]
  - matches: [{method: {service: pkg.Echo}}]
    backendRefs: [{name: echo-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db, namespace: other}
spec:
  parentRefs: [{name: gw, namespace: istio-system, sectionName: db}]
  rules: [{backendRefs: [{name: db, port: 5432}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tcp, namespace: echo}
spec:
  gatewayClassName: istio
  listeners: [{name: split, port: 16000, protocol: TCP}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: split, namespace: echo}
spec:
  parentRefs: [{name: tcp}]
  rules:
  - backendRefs: [{name: echo-v1, port: 8080, weight: 3}, {name: echo-v2, port: 8080, weight: 1}, {name: nowhere, port: 1}]
"#,
        );
        let h = vhost(&gw, GATEWAY_ROUTE, "grpc.example.com");
        assert_eq!(
            h.routes[0].matches[0].path,
            Some(StringMatch::Exact("/pkg.Echo/Say".into()))
        );
        assert_eq!(
            h.routes[1].matches[0].path,
            Some(StringMatch::Prefix("/pkg.Echo/".into()))
        );
        assert_eq!(gw.listeners.len(), 2);
        assert_eq!(gw.listeners[0].address.port(), 15432);
        assert_eq!(gw.listeners[1].address.port(), 16000);
        assert_eq!(
            gw.listeners[1].kind,
            ListenerKind::TcpWeighted {
                clusters: vec![
                    TcpDestination {
                        cluster: V1.into(),
                        weight: 3
                    },
                    TcpDestination {
                        cluster: V2.into(),
                        weight: 1
                    },
                ]
            }
        );
        assert_eq!(
            gw.listeners[0].kind,
            ListenerKind::Tcp {
                cluster: "outbound|5432||db.other.svc.cluster.local".into()
            }
        );
    }
}
