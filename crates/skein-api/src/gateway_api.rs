//! The Kubernetes Gateway API (`gateway.networking.k8s.io`): GatewayClass, Gateway, HTTPRoute,
//! GRPCRoute, TCPRoute and ReferenceGrant, field for field as in kubernetes-sigs/gateway-api
//! `apis/v1` (and `v1alpha2` for TCPRoute). Fields skein does not act on (TLS settings,
//! infrastructure, retry, session persistence, CORS, extension references) are kept as
//! written.

use serde::{Deserialize, Serialize};

use crate::types::{Duration, LabelSelector, Object, Opaque};

/// The API group of every kind here.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// Istio's controller name: a GatewayClass with it (and a Gateway of class `istio`) is served
/// by the mesh.
pub const ISTIO_CONTROLLER: &str = "istio.io/gateway-controller";

/// The `gatewayClassName` Istio serves.
pub const ISTIO_CLASS: &str = "istio";

pub type GatewayClass = Object<GatewayClassSpec>;
/// A Gateway API Gateway (not Istio's `networking.istio.io` Gateway).
pub type Gateway = Object<GatewaySpec>;
pub type HttpRoute = Object<HttpRouteSpec>;
pub type GrpcRoute = Object<GrpcRouteSpec>;
pub type TcpRoute = Object<TcpRouteSpec>;
pub type ReferenceGrant = Object<ReferenceGrantSpec>;

// === GatewayClass ===

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GatewayClassSpec {
    pub controller_name: String,
    pub parameters_ref: Option<Opaque>,
    pub description: Option<String>,
}

// === Gateway ===

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GatewaySpec {
    pub gateway_class_name: String,
    pub listeners: Vec<Listener>,
    pub addresses: Vec<GatewayAddress>,
    pub infrastructure: Option<Opaque>,
    pub backend_tls: Option<Opaque>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GatewayAddress {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Listener {
    pub name: String,
    pub hostname: Option<String>,
    pub port: u32,
    /// `HTTP`, `HTTPS`, `TLS`, `TCP`, `UDP`.
    pub protocol: String,
    pub tls: Option<Opaque>,
    pub allowed_routes: Option<AllowedRoutes>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AllowedRoutes {
    pub namespaces: Option<RouteNamespaces>,
    pub kinds: Vec<RouteGroupKind>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RouteNamespaces {
    /// `Same` (the default), `All` or `Selector`.
    pub from: Option<String>,
    pub selector: Option<LabelSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RouteGroupKind {
    pub group: Option<String>,
    pub kind: String,
}

// === References ===

/// `parentRefs[]`: a Gateway (the default kind) or, for mesh routing (GAMMA), a Service.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ParentReference {
    /// Default `gateway.networking.k8s.io`; `""` (core) with kind `Service`.
    pub group: Option<String>,
    /// Default `Gateway`.
    pub kind: Option<String>,
    /// Default: the route's namespace.
    pub namespace: Option<String>,
    pub name: String,
    pub section_name: Option<String>,
    pub port: Option<u32>,
}

impl ParentReference {
    /// Whether this names a Service (mesh routing) rather than a Gateway.
    pub fn is_service(&self) -> bool {
        self.kind.as_deref() == Some("Service") && self.group.as_deref().unwrap_or("").is_empty()
    }

    /// Whether this names a Gateway of this API group.
    pub fn is_gateway(&self) -> bool {
        self.kind.as_deref().unwrap_or("Gateway") == "Gateway"
            && self.group.as_deref().unwrap_or(GROUP) == GROUP
    }
}

/// `backendRefs[]` of a route rule (HTTP, gRPC, TCP), and a mirror's `backendRef`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BackendRef {
    /// Default `""` (core).
    pub group: Option<String>,
    /// Default `Service`.
    pub kind: Option<String>,
    pub name: String,
    /// Default: the route's namespace (another one needs a ReferenceGrant there).
    pub namespace: Option<String>,
    pub port: Option<u32>,
    /// Default 1; 0..=1000000.
    pub weight: Option<i64>,
    /// Per-backend filters (HTTPRoute and GRPCRoute).
    pub filters: Vec<HttpRouteFilter>,
}

impl BackendRef {
    /// Whether this names a core Service (the only backend kind skein routes to).
    pub fn is_service(&self) -> bool {
        self.kind.as_deref().unwrap_or("Service") == "Service"
            && self.group.as_deref().unwrap_or("").is_empty()
    }

    /// The weight, 1 when unset.
    pub fn weight(&self) -> i64 {
        self.weight.unwrap_or(1)
    }
}

// === HTTPRoute ===

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRouteSpec {
    pub parent_refs: Vec<ParentReference>,
    pub hostnames: Vec<String>,
    pub rules: Vec<HttpRouteRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRouteRule {
    pub name: Option<String>,
    /// Empty: one match of path prefix `/`.
    pub matches: Vec<HttpRouteMatch>,
    pub filters: Vec<HttpRouteFilter>,
    pub backend_refs: Vec<BackendRef>,
    pub timeouts: Option<HttpRouteTimeouts>,
    pub retry: Option<Opaque>,
    pub session_persistence: Option<Opaque>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRouteMatch {
    /// Default: PathPrefix `/`.
    pub path: Option<HttpPathMatch>,
    pub headers: Vec<ValueMatch>,
    pub query_params: Vec<ValueMatch>,
    pub method: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpPathMatch {
    /// `Exact`, `PathPrefix` (the default) or `RegularExpression`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// Default `/`.
    pub value: Option<String>,
}

impl HttpPathMatch {
    /// The match type, `PathPrefix` when unset.
    pub fn kind(&self) -> &str {
        self.type_.as_deref().unwrap_or("PathPrefix")
    }

    /// The value, `/` when unset.
    pub fn value(&self) -> &str {
        self.value.as_deref().unwrap_or("/")
    }
}

/// A header or query parameter condition.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ValueMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub name: String,
    pub value: String,
}

impl ValueMatch {
    /// Whether the value is a regular expression.
    pub fn is_regex(&self) -> bool {
        self.type_.as_deref() == Some("RegularExpression")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRouteFilter {
    /// `RequestHeaderModifier`, `ResponseHeaderModifier`, `RequestRedirect`, `URLRewrite`,
    /// `RequestMirror`, `CORS`, `ExtensionRef`.
    #[serde(rename = "type")]
    pub type_: String,
    pub request_header_modifier: Option<HeaderModifier>,
    pub response_header_modifier: Option<HeaderModifier>,
    pub request_redirect: Option<RequestRedirect>,
    #[serde(rename = "urlRewrite")]
    pub url_rewrite: Option<UrlRewrite>,
    pub request_mirror: Option<RequestMirror>,
    pub cors: Option<Opaque>,
    pub extension_ref: Option<Opaque>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HeaderModifier {
    pub set: Vec<HttpHeader>,
    pub add: Vec<HttpHeader>,
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RequestRedirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
    pub port: Option<u32>,
    /// Default 302.
    pub status_code: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct UrlRewrite {
    pub hostname: Option<String>,
    pub path: Option<PathModifier>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PathModifier {
    /// `ReplaceFullPath` or `ReplacePrefixMatch`.
    #[serde(rename = "type")]
    pub type_: String,
    pub replace_full_path: Option<String>,
    pub replace_prefix_match: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RequestMirror {
    pub backend_ref: BackendRef,
    /// 0..=100.
    pub percent: Option<i64>,
    pub fraction: Option<Fraction>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Fraction {
    pub numerator: i64,
    /// Default 100.
    pub denominator: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRouteTimeouts {
    pub request: Option<Duration>,
    pub backend_request: Option<Duration>,
}

// === GRPCRoute ===

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GrpcRouteSpec {
    pub parent_refs: Vec<ParentReference>,
    pub hostnames: Vec<String>,
    pub rules: Vec<GrpcRouteRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GrpcRouteRule {
    pub name: Option<String>,
    pub matches: Vec<GrpcRouteMatch>,
    /// `RequestHeaderModifier`, `ResponseHeaderModifier`, `RequestMirror`.
    pub filters: Vec<HttpRouteFilter>,
    pub backend_refs: Vec<BackendRef>,
    pub session_persistence: Option<Opaque>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GrpcRouteMatch {
    pub method: Option<GrpcMethodMatch>,
    pub headers: Vec<ValueMatch>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GrpcMethodMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub service: Option<String>,
    pub method: Option<String>,
}

// === TCPRoute ===

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TcpRouteSpec {
    pub parent_refs: Vec<ParentReference>,
    pub rules: Vec<TcpRouteRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TcpRouteRule {
    pub name: Option<String>,
    pub backend_refs: Vec<BackendRef>,
}

// === ReferenceGrant ===

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ReferenceGrantSpec {
    pub from: Vec<ReferenceGrantFrom>,
    pub to: Vec<ReferenceGrantTo>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ReferenceGrantFrom {
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ReferenceGrantTo {
    pub group: String,
    pub kind: String,
    pub name: Option<String>,
}

/// Whether a ReferenceGrant in `to_ns` lets a `from_kind` (HTTPRoute, GRPCRoute, TCPRoute) of
/// `from_ns` refer to the Service `name` there. A reference within one namespace needs none.
pub fn reference_permitted<'a>(
    grants: impl IntoIterator<Item = &'a ReferenceGrant>,
    from_kind: &str,
    from_ns: &str,
    to_ns: &str,
    name: &str,
) -> bool {
    from_ns == to_ns
        || grants.into_iter().any(|g| {
            g.metadata.namespace_or_default() == to_ns
                && g.spec
                    .from
                    .iter()
                    .any(|f| f.group == GROUP && f.kind == from_kind && f.namespace == from_ns)
                && g.spec.to.iter().any(|t| {
                    t.group.is_empty()
                        && t.kind == "Service"
                        && t.name.as_deref().is_none_or(|n| n == name)
                })
        })
}

/// The route kinds a listener of `protocol` takes when `allowedRoutes.kinds` is empty.
fn default_kinds(protocol: &str) -> &'static [&'static str] {
    match protocol {
        "HTTP" | "HTTPS" => &["HTTPRoute", "GRPCRoute"],
        "TCP" => &["TCPRoute"],
        "TLS" => &["TLSRoute"],
        _ => &[],
    }
}

/// Whether listener `l` of a Gateway in `gateway_ns` takes a route of `route_kind` from
/// `route_ns` (whose labels are `route_ns_labels`): `allowedRoutes.namespaces.from` (`Same` by
/// default, `All`, `Selector`) and `allowedRoutes.kinds` (by default those of its protocol).
pub fn listener_accepts(
    l: &Listener,
    gateway_ns: &str,
    route_kind: &str,
    route_ns: &str,
    route_ns_labels: &crate::Labels,
) -> bool {
    let allowed = l.allowed_routes.as_ref();
    let kinds = allowed.map(|a| a.kinds.as_slice()).unwrap_or_default();
    let kind_ok = if kinds.is_empty() {
        default_kinds(&l.protocol).contains(&route_kind)
    } else {
        kinds
            .iter()
            .any(|k| k.kind == route_kind && k.group.as_deref().unwrap_or(GROUP) == GROUP)
    };
    let ns = allowed.and_then(|a| a.namespaces.as_ref());
    let ns_ok = match ns.and_then(|n| n.from.as_deref()).unwrap_or("Same") {
        "All" => true,
        "Selector" => ns
            .and_then(|n| n.selector.as_ref())
            .is_some_and(|sel| sel.matches(route_ns_labels)),
        _ => route_ns == gateway_ns,
    };
    kind_ok && ns_ok
}

/// The hostnames a route gets on a listener: the intersection of the listener's hostname
/// (none: any) with the route's (none: the listener's). Empty when they do not intersect;
/// `*` for any host.
pub fn intersect_hostnames(listener: Option<&str>, route: &[String]) -> Vec<String> {
    let listener = listener.map(str::to_ascii_lowercase);
    if route.is_empty() {
        return vec![listener.unwrap_or_else(|| "*".to_string())];
    }
    let Some(l) = listener else {
        return route.iter().map(|h| h.to_ascii_lowercase()).collect();
    };
    let covers = |wild: &str, host: &str| {
        wild.strip_prefix('*')
            .is_some_and(|suffix| host.ends_with(suffix) && host.len() > suffix.len())
    };
    let mut out = Vec::new();
    for r in route.iter().map(|h| h.to_ascii_lowercase()) {
        if r == l || covers(&l, &r) {
            out.push(r);
        } else if covers(&r, &l) {
            out.push(l.clone());
        }
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(yaml: &str) -> ReferenceGrant {
        let m = crate::load_str("g.yaml", yaml).unwrap();
        m.reference_grants().next().unwrap().clone()
    }

    #[test]
    fn a_grant_permits_its_kind_namespace_and_name_only() {
        let g = grant(
            "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: b}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: a}]\n  to: [{group: \"\", kind: Service, name: svc}]\n",
        );
        assert!(reference_permitted([&g], "HTTPRoute", "a", "b", "svc"));
        assert!(!reference_permitted([&g], "HTTPRoute", "a", "b", "other"));
        assert!(!reference_permitted([&g], "GRPCRoute", "a", "b", "svc"));
        assert!(!reference_permitted([&g], "HTTPRoute", "c", "b", "svc"));
        assert!(!reference_permitted([&g], "HTTPRoute", "a", "c", "svc"));
        assert!(reference_permitted([], "HTTPRoute", "a", "a", "svc"));
    }

    #[test]
    fn hostnames_intersect_as_the_spec_says() {
        let r = |hs: &[&str]| hs.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        assert_eq!(intersect_hostnames(None, &[]), ["*"]);
        assert_eq!(
            intersect_hostnames(Some("*.example.com"), &[]),
            ["*.example.com"]
        );
        assert_eq!(
            intersect_hostnames(Some("*.example.com"), &r(&["a.example.com", "b.other.org"])),
            ["a.example.com"]
        );
        assert_eq!(
            intersect_hostnames(Some("a.example.com"), &r(&["*.example.com"])),
            ["a.example.com"]
        );
        assert!(intersect_hostnames(Some("a.example.com"), &r(&["b.example.com"])).is_empty());
        assert!(intersect_hostnames(Some("*.example.com"), &r(&["example.com"])).is_empty());
        assert_eq!(
            intersect_hostnames(None, &r(&["A.example.com"])),
            ["a.example.com"]
        );
    }

    #[test]
    fn listeners_take_their_namespaces_and_kinds() {
        let l = |yaml: &str| -> Listener { serde_norway::from_str(yaml).unwrap() };
        let none = crate::Labels::new();
        let same = l("{name: http, port: 80, protocol: HTTP}");
        assert!(listener_accepts(&same, "gw", "HTTPRoute", "gw", &none));
        assert!(!listener_accepts(&same, "gw", "HTTPRoute", "other", &none));
        assert!(!listener_accepts(&same, "gw", "TCPRoute", "gw", &none));
        let all =
            l("{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}");
        assert!(listener_accepts(&all, "gw", "HTTPRoute", "other", &none));
        let sel = l(
            "{name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {shared: \"true\"}}}, kinds: [{kind: HTTPRoute}]}}",
        );
        let labels: crate::Labels = [("shared".to_string(), "true".to_string())].into();
        assert!(listener_accepts(&sel, "gw", "HTTPRoute", "other", &labels));
        assert!(!listener_accepts(&sel, "gw", "HTTPRoute", "other", &none));
        assert!(!listener_accepts(&sel, "gw", "GRPCRoute", "other", &labels));
    }
}
