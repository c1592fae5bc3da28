//! skein-snapshot: the configuration snapshot a skein proxy receives.
//!
//! The control plane compiles Istio resources (VirtualService, DestinationRule, ServiceEntry,
//! Service, ...) into one [`Snapshot`] per proxy; the proxy swaps it in atomically. The types
//! are Envoy-inspired (listeners, route configs with virtual hosts, clusters with endpoints) but
//! much smaller. Each field says which Istio field it comes from.
//!
//! The wire form is serde JSON. Every optional field has a default, so snapshots written by
//! hand (tests, `skein proxy-config`) stay short.
//!
//! Layout: this file holds the snapshot types; `names` every naming rule the two sides and
//! validation share (Service FQDNs, the short-name rule, cluster names); `stream` the control
//! stream's length-prefixed frames; `dump` what a proxy's `/config_dump` serves; `telemetry` the
//! metrics, access-log and tracing settings; `build`
//! helpers that write snapshots for tests and examples.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

pub mod build;
pub mod cel;
pub mod dump;
pub mod log_format;
pub mod names;
pub mod stream;
pub mod telemetry;

pub use names::{inbound_cluster_name, outbound_cluster_name, service_domains};

/// Version of the JSON schema of [`Snapshot`]. Bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// Cluster used when a sidecar forwards to the address the client asked for (Istio ALLOW_ANY).
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// Cluster used when traffic is dropped (Istio REGISTRY_ONLY, unresolved destinations).
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
/// Cluster used for inbound traffic to a port the proxy has no inbound cluster for.
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";

/// Default route config name of a sidecar's outbound HTTP listener (the app's HTTP_PROXY).
pub const SIDECAR_OUTBOUND_ROUTE: &str = "outbound";
/// Default route config name of a gateway's HTTP and HTTPS listeners.
pub const GATEWAY_ROUTE: &str = "gateway";

/// Errors found by [`Snapshot::validate`] and [`Snapshot::from_json`].
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The JSON could not be parsed into a snapshot.
    #[error("snapshot is not valid JSON for schema v{SCHEMA_VERSION}: {0}")]
    Json(serde_json::Error),
    /// A route points at a cluster that the snapshot does not define.
    #[error(
        "route {route:?} in route config {route_config:?} points at cluster {cluster:?}, which the snapshot does not define; add the cluster or fix the destination"
    )]
    UnknownCluster {
        route_config: String,
        route: String,
        cluster: String,
    },
    /// A TCP listener points at a cluster that the snapshot does not define.
    #[error(
        "listener {listener:?} forwards to cluster {cluster:?}, which the snapshot does not define"
    )]
    UnknownListenerCluster { listener: String, cluster: String },
    /// Two clusters share a name.
    #[error("cluster {0:?} is defined twice; cluster names must be unique")]
    DuplicateCluster(String),
    /// Two route configs share a name.
    #[error("route config {0:?} is defined twice; route config names must be unique")]
    DuplicateRouteConfig(String),
    /// All destination weights of a route are zero.
    #[error(
        "route {route:?} in route config {route_config:?}: total destination weight = 0 (give at least one destination a weight > 0)"
    )]
    ZeroWeight { route_config: String, route: String },
}

// By hand rather than `#[from]`: the message already says the cause, so it is not also
// returned as `source()` (an error chain would print it twice).
impl From<serde_json::Error> for SnapshotError {
    fn from(e: serde_json::Error) -> Self {
        SnapshotError::Json(e)
    }
}

/// The whole configuration of one proxy at one point in time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Snapshot {
    /// Opaque version chosen by the control plane (shown in /config_dump, acked back).
    pub version: String,
    /// The workload this proxy serves (from the Pod and its ServiceAccount).
    pub node: Node,
    /// MeshConfig `outboundTrafficPolicy.mode` (or the Sidecar resource's).
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// Extra listeners the proxy binds (per-upstream TCP ports, per-port HTTP listeners).
    pub listeners: Vec<Listener>,
    /// HTTP route tables, referenced by name from listeners and from the proxy's config.
    pub route_configs: Vec<RouteConfig>,
    /// Upstream clusters: one per (service port, subset), plus inbound clusters.
    pub clusters: Vec<Cluster>,
    /// What the sidecar's inbound side enforces: PeerAuthentication and AuthorizationPolicy
    /// as they apply to this workload.
    pub inbound: InboundPolicy,
    /// Metrics, access log and tracing settings (Telemetry resources and the mesh config).
    pub telemetry: telemetry::Telemetry,
}

/// PeerAuthentication `mtls.mode`, resolved (UNSET is resolved by the control plane).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// mTLS and plaintext on the same port (Istio's default).
    #[default]
    Permissive,
    /// mTLS only: plaintext connections are refused.
    Strict,
    /// Plaintext only (TLS is forwarded as opaque bytes).
    Disable,
}

/// The inbound side of a sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct InboundPolicy {
    /// The workload's mode (workload > namespace > mesh PeerAuthentication).
    pub mtls: MtlsMode,
    /// `portLevelMtls`, keyed by the workload (container) port.
    pub port_mtls: BTreeMap<u16, MtlsMode>,
    /// AuthorizationPolicies that apply to this workload (its own, its namespace's
    /// selector-less ones, and the root namespace's), in no particular order: the action
    /// order decides (CUSTOM is reported unsupported and skipped by the control plane).
    pub authz: Vec<AuthzPolicy>,
    /// The `jwtRules` of the RequestAuthentications that apply to this workload (same
    /// selection as AuthorizationPolicy), in policy order. Left out of the JSON when empty,
    /// so a snapshot without any is what it was before the field existed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jwt: Vec<JwtRule>,
}

/// One RequestAuthentication `jwtRules` entry, as the proxy enforces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct JwtRule {
    /// `namespace/name` of the RequestAuthentication (for logs and errors).
    pub policy: String,
    /// `issuer`: a token is checked against the rule with its `iss`.
    pub issuer: String,
    /// `audiences`: when set, the token's `aud` must name one.
    pub audiences: Vec<String>,
    /// `jwks`: the key set inline (JSON).
    pub jwks: Option<String>,
    /// `jwksUri`: where the proxy fetches the key set.
    pub jwks_uri: Option<String>,
    /// `timeout` of the key set fetch, in milliseconds (0: the default, 5 s).
    pub jwks_timeout_ms: u64,
    /// `fromHeaders`; with no location at all, `Authorization: Bearer` and `access_token`.
    pub from_headers: Vec<JwtHeader>,
    /// `fromParams`.
    pub from_params: Vec<String>,
    /// `fromCookies`.
    pub from_cookies: Vec<String>,
    /// `outputPayloadToHeader`.
    pub output_payload_to_header: Option<String>,
    /// `forwardOriginalToken`.
    pub forward_original_token: bool,
    /// `outputClaimToHeaders`: (header, claim).
    pub output_claim_to_headers: Vec<(String, String)>,
    /// `spaceDelimitedClaims` (besides `scope` and `permission`, which always are).
    pub space_delimited_claims: Vec<String>,
    /// `presence: REQUIRED`: a request without a token gets 401 "Jwt is missing".
    pub presence_required: bool,
}

/// A header a token may be in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct JwtHeader {
    /// Header name.
    pub name: String,
    /// What comes before the token (`Bearer `).
    pub prefix: String,
}

impl InboundPolicy {
    /// The mode on workload port `port`.
    pub fn mtls_for(&self, port: u16) -> MtlsMode {
        self.port_mtls.get(&port).copied().unwrap_or(self.mtls)
    }
}

/// AuthorizationPolicy `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthzAction {
    /// `ALLOW` (the default).
    #[default]
    Allow,
    /// `DENY`.
    Deny,
    /// `AUDIT`: only marks the request in the log.
    Audit,
}

/// One AuthorizationPolicy. No rules: matches nothing (so an ALLOW policy without rules denies
/// everything, Istio's `spec: {}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct AuthzPolicy {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `action`.
    pub action: AuthzAction,
    /// `rules`: the policy matches when any rule matches.
    pub rules: Vec<AuthzRule>,
}

impl AuthzPolicy {
    /// Envoy's RBAC policy id, as Istio names it in `rbac_access_denied_matched_policy[..]`.
    pub fn rule_id(&self, rule: usize) -> String {
        format!("ns[{}]-policy[{}]-rule[{rule}]", self.namespace, self.name)
    }
}

/// A rule: at least one `from` (if any), at least one `to` (if any), and every `when`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct AuthzRule {
    /// `from[].source`.
    pub from: Vec<AuthzSource>,
    /// `to[].operation`.
    pub to: Vec<AuthzOperation>,
    /// `when[]`.
    pub when: Vec<AuthzCondition>,
}

/// `Source`: every field set must match (`serviceAccounts` arrive as principals).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct AuthzSource {
    /// `principals` (`cluster.local/ns/NS/sa/SA`; `*`, prefix and suffix forms).
    pub principals: Vec<String>,
    /// `notPrincipals`.
    pub not_principals: Vec<String>,
    /// `requestPrincipals` (JWT; never present without RequestAuthentication).
    pub request_principals: Vec<String>,
    /// `notRequestPrincipals`.
    pub not_request_principals: Vec<String>,
    /// `namespaces` (of the mTLS peer).
    pub namespaces: Vec<String>,
    /// `notNamespaces`.
    pub not_namespaces: Vec<String>,
    /// `ipBlocks` (the connection's source address; IPs or CIDRs).
    pub ip_blocks: Vec<String>,
    /// `notIpBlocks`.
    pub not_ip_blocks: Vec<String>,
    /// `remoteIpBlocks` (X-Forwarded-For's client, else the source address).
    pub remote_ip_blocks: Vec<String>,
    /// `notRemoteIpBlocks`.
    pub not_remote_ip_blocks: Vec<String>,
}

/// `Operation`: every field set must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct AuthzOperation {
    /// `hosts` (case-insensitive).
    pub hosts: Vec<String>,
    /// `notHosts`.
    pub not_hosts: Vec<String>,
    /// `ports` (the workload port).
    pub ports: Vec<String>,
    /// `notPorts`.
    pub not_ports: Vec<String>,
    /// `methods`.
    pub methods: Vec<String>,
    /// `notMethods`.
    pub not_methods: Vec<String>,
    /// `paths`.
    pub paths: Vec<String>,
    /// `notPaths`.
    pub not_paths: Vec<String>,
}

/// `Condition`: `key` with `values` and/or `notValues`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct AuthzCondition {
    /// e.g. `request.headers[x-token]`, `source.ip`, `destination.port`.
    pub key: String,
    /// `values`.
    pub values: Vec<String>,
    /// `notValues`.
    pub not_values: Vec<String>,
}

/// Identity and placement of the workload the proxy serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Node {
    /// Pod `metadata.name`.
    pub pod: String,
    /// Pod `metadata.namespace`.
    pub namespace: String,
    /// Owning workload name (Deployment/Rollout), the `source_workload` metric label.
    pub workload: String,
    /// Pod `metadata.labels` (app, version, ... feed metric labels and `sourceLabels` matches).
    pub labels: BTreeMap<String, String>,
    /// Pod `spec.serviceAccountName` (the SPIFFE identity's `sa` part).
    pub service_account: String,
    /// Pod `status.podIP`.
    pub ip: Option<std::net::IpAddr>,
    /// The owning workload as Istio names it in peer metadata (`OWNER`), e.g.
    /// `kubernetes://apis/apps/v1/namespaces/<ns>/deployments/<name>`; empty when unknown.
    pub owner: String,
    /// The cluster the pod runs in (`CLUSTER_ID`; Istio's Kubernetes default `Kubernetes`);
    /// empty when unknown.
    pub cluster_id: String,
}

/// MeshConfig `outboundTrafficPolicy.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficPolicy {
    /// `ALLOW_ANY` (Istio's default): unknown hosts go to `PassthroughCluster`.
    #[default]
    AllowAny,
    /// `REGISTRY_ONLY`: unknown hosts go to `BlackHoleCluster` (HTTP 502).
    RegistryOnly,
}

/// A listener the snapshot asks the proxy to bind (besides the ones in the proxy's own config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listener {
    /// Unique name, e.g. `outbound|3306||mysql.blog-system.svc.cluster.local`.
    pub name: String,
    /// Local address to bind (the runtime's per-upstream port for TCP services).
    pub address: SocketAddr,
    /// What to do with accepted connections.
    pub kind: ListenerKind,
}

/// What a [`Listener`] does with its connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerKind {
    /// Opaque TCP to a cluster (Service port with a TCP protocol, e.g. `tcp-mysql`).
    Tcp {
        /// Cluster name, `outbound|3306||mysql.ns.svc.cluster.local`.
        cluster: String,
    },
    /// HTTP routed by a route config (Service port with an HTTP protocol).
    Http {
        /// Route config name.
        route_config: String,
    },
    /// Opaque TCP split over clusters by weight, one pick per connection (Gateway API
    /// TCPRoute `backendRefs` weights).
    TcpWeighted {
        /// The destinations; a weight of 0 gets no connection.
        clusters: Vec<TcpDestination>,
    },
}

/// One weighted destination of a [`ListenerKind::TcpWeighted`] listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpDestination {
    /// Cluster name.
    pub cluster: String,
    /// Relative weight.
    pub weight: u32,
}

impl TcpDestination {
    /// Picks the cluster of one connection by weight (`draw` in `0..total`); None when
    /// every weight is 0.
    pub fn pick(clusters: &[TcpDestination], draw: impl FnOnce(u32) -> u32) -> Option<&str> {
        let total = clusters
            .iter()
            .fold(0u32, |t, d| t.saturating_add(d.weight));
        if total == 0 {
            return None;
        }
        let mut r = draw(total);
        for d in clusters {
            if r < d.weight {
                return Some(&d.cluster);
            }
            r -= d.weight;
        }
        None
    }
}

/// A named HTTP route table (Envoy RouteConfiguration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RouteConfig {
    /// Route config name (`outbound`, `gateway`, or a port number as Istio names them).
    pub name: String,
    /// Virtual hosts, one per service host (VirtualService `hosts`, Service names).
    pub virtual_hosts: Vec<VirtualHost>,
}

/// A set of domains sharing one list of routes (one VirtualService host, or one Service port).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct VirtualHost {
    /// Name, Istio style `was-service.blog-system.svc.cluster.local:8080`.
    pub name: String,
    /// Every accepted authority (VirtualService `hosts` expanded: short, name.ns, name.ns.svc,
    /// FQDN, each with and without port; `*` and `*.suffix` wildcards allowed). Matching is
    /// case-insensitive. See [`service_domains`].
    pub domains: Vec<String>,
    /// Routes, first match wins (VirtualService `http[]`, then a default route).
    pub routes: Vec<Route>,
}

/// One HTTP route (one VirtualService `http[]` entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Route {
    /// VirtualService `http[].name` (the access log's ROUTE_NAME).
    pub name: String,
    /// The VirtualService's name (empty for a Service's default route): Istio's route
    /// decorator names a route split across several clusters `<name>:<port><path>`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub virtual_service: String,
    /// VirtualService `http[].match[]`: blocks are ORed; empty matches every request.
    pub matches: Vec<RouteMatch>,
    /// `route[]` destinations, `redirect` or `directResponse`.
    pub action: RouteAction,
    /// VirtualService `http[].rewrite`.
    pub rewrite: Option<Rewrite>,
    /// VirtualService `http[].headers` (route-level header manipulation).
    pub headers: HeaderOps,
    /// VirtualService `http[].timeout` in milliseconds (None: disabled, Istio's default).
    pub timeout_ms: Option<u64>,
    /// VirtualService `http[].retries` (None: Istio's default policy, filled by later work).
    pub retries: Option<RetryPolicy>,
    /// VirtualService `http[].mirror`/`mirrors` + `mirrorPercentage`.
    pub mirror: Option<Mirror>,
    /// VirtualService `http[].fault`.
    pub fault: Option<Fault>,
}

/// One match block (VirtualService `HTTPMatchRequest`); all conditions are ANDed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RouteMatch {
    /// `match[].name` (informational).
    pub name: String,
    /// `match[].uri`, against the path without the query string.
    pub path: Option<StringMatch>,
    /// `match[].headers`: header name (lowercase) -> condition (None: header must be present).
    pub headers: Vec<HeaderMatch>,
    /// `match[].queryParams`.
    pub query_params: Vec<QueryParamMatch>,
    /// `match[].method`.
    pub method: Option<StringMatch>,
    /// `match[].authority`.
    pub authority: Option<StringMatch>,
    /// `match[].withoutHeaders`: the request matches only if none of these match.
    pub without_headers: Vec<HeaderMatch>,
    /// `match[].ignoreUriCase`: case-insensitive `uri` matching.
    pub ignore_uri_case: bool,
}

/// Istio `StringMatch`: exact, prefix, or RE2 regex (full match).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StringMatch {
    /// `exact`.
    Exact(String),
    /// `prefix`.
    Prefix(String),
    /// `regex` (must match the whole value, as Envoy's safe_regex does).
    Regex(String),
}

/// A header condition (`headers` / `withoutHeaders` entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeaderMatch {
    /// Header name, lowercase.
    pub name: String,
    /// Condition on the value; `None` is Istio's `{}`: the header is present.
    #[serde(default, rename = "match")]
    pub value: Option<StringMatch>,
}

/// A query parameter condition (`queryParams` entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryParamMatch {
    /// Parameter name.
    pub name: String,
    /// Condition on the value; `None`: the parameter is present.
    #[serde(default, rename = "match")]
    pub value: Option<StringMatch>,
}

/// What a route does with a matched request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    /// `route[]`: weighted destinations (each a cluster; subsets are separate clusters).
    Route(Vec<WeightedCluster>),
    /// `directResponse`.
    DirectResponse {
        /// `directResponse.status`.
        status: u16,
        /// `directResponse.body.string` (or bytes, decoded).
        #[serde(default)]
        body: Option<String>,
    },
    /// `redirect`.
    Redirect(Redirect),
}

impl Default for RouteAction {
    fn default() -> Self {
        RouteAction::Route(Vec::new())
    }
}

/// One destination of a route (`route[]` entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct WeightedCluster {
    /// Cluster name built from `destination.{host,port,subset}` (`outbound|8080|v1|fqdn`).
    pub cluster: String,
    /// `route[].weight` (Istio: a single destination without weight gets 100).
    pub weight: u32,
    /// `route[].headers` (per-destination header manipulation).
    pub headers: HeaderOps,
}

/// VirtualService `HTTPRedirect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Redirect {
    /// `redirect.uri`: replaces the whole path.
    pub uri: Option<String>,
    /// Replaces the matched path prefix (Gateway API `ReplacePrefixMatch`); with `uri`
    /// unset. Needs a prefix or exact path match on the route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
    /// Without `port`, leave the request's port out of the Location, so that the new
    /// scheme's well-known port applies (Gateway API's rule when `scheme` is set).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub scheme_port: bool,
    /// `redirect.authority`.
    pub authority: Option<String>,
    /// `redirect.scheme`.
    pub scheme: Option<String>,
    /// `redirect.port`.
    pub port: Option<u16>,
    /// `redirect.redirectCode` (default 301).
    pub code: Option<u16>,
}

/// VirtualService `HTTPRewrite`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Rewrite {
    /// `rewrite.uri`: replaces the matched prefix (or the whole path for other matches).
    pub uri: Option<String>,
    /// `rewrite.authority`.
    pub authority: Option<String>,
    /// `rewrite.uriRegexRewrite`.
    pub uri_regex: Option<RegexRewrite>,
}

/// VirtualService `RegexRewrite`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegexRewrite {
    /// `uriRegexRewrite.match` (RE2).
    pub pattern: String,
    /// `uriRegexRewrite.rewrite` (`\1` style capture references).
    pub substitution: String,
}

/// VirtualService `Headers`: request and response manipulation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct HeaderOps {
    /// `headers.request`.
    pub request: HeaderMutation,
    /// `headers.response`.
    pub response: HeaderMutation,
}

impl HeaderOps {
    /// True when no operation is configured.
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }
}

/// VirtualService `HeaderOperations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct HeaderMutation {
    /// `set`: overwrite.
    pub set: BTreeMap<String, String>,
    /// `add`: append a value.
    pub add: BTreeMap<String, String>,
    /// `remove`.
    pub remove: Vec<String>,
}

impl HeaderMutation {
    /// True when no operation is configured.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// VirtualService `HTTPRetry` (carried; enforcement comes with the resilience work).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RetryPolicy {
    /// `retries.attempts`.
    pub attempts: u32,
    /// `retries.perTryTimeout` in milliseconds.
    pub per_try_timeout_ms: Option<u64>,
    /// `retries.retryOn`, split on commas.
    pub retry_on: Vec<String>,
    /// `retries.retryRemoteLocalities`.
    pub retry_remote_localities: bool,
}

/// VirtualService `mirror` + `mirrorPercentage` (carried; enforcement comes later).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Mirror {
    /// Cluster built from `mirror.{host,port,subset}`.
    pub cluster: String,
    /// `mirrorPercentage.value` (None: 100).
    pub percentage: Option<f64>,
}

/// VirtualService `HTTPFaultInjection` (carried; enforcement comes later).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Fault {
    /// `fault.delay.fixedDelay` in milliseconds.
    pub delay_ms: Option<u64>,
    /// `fault.delay.percentage.value` (None: 0, as Istio translates it).
    pub delay_percentage: Option<f64>,
    /// `fault.abort.httpStatus`.
    pub abort_status: Option<u16>,
    /// `fault.abort.percentage.value`.
    pub abort_percentage: Option<f64>,
}

/// An upstream cluster: one service port (and subset) with its policy and endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Cluster {
    /// Istio cluster name `direction|port|subset|host`, e.g.
    /// `outbound|8080||was-service.blog-system.svc.cluster.local` or `inbound|8080||`.
    pub name: String,
    /// Service FQDN (Service / ServiceEntry host), the `destination_service` label.
    pub service: String,
    /// Service port number.
    pub port: u16,
    /// DestinationRule `subsets[].name` (None for the whole service).
    pub subset: Option<String>,
    /// Service port protocol (`appProtocol` or port name prefix) or DR `h2UpgradePolicy`.
    pub protocol: Protocol,
    /// DestinationRule `trafficPolicy.loadBalancer`.
    pub lb_policy: LbPolicy,
    /// DestinationRule `trafficPolicy.connectionPool`.
    pub connection_pool: ConnectionPool,
    /// DestinationRule `trafficPolicy.outlierDetection` (None: disabled).
    pub outlier_detection: Option<OutlierDetection>,
    /// DestinationRule `trafficPolicy.tls`.
    pub tls: UpstreamTls,
    /// Endpoints of the service (or of the subset's pods), from EndpointSlices / ServiceEntry.
    pub endpoints: Vec<Endpoint>,
    /// Istio's auto mTLS: no DestinationRule sets `tls`, so endpoints that carry a sidecar
    /// (label `security.istio.io/tlsMode: istio`) get ISTIO_MUTUAL and the others plaintext.
    pub auto_mtls: bool,
    /// The SPIFFE identities the service's pods may have (`spiffe://TD/ns/NS/sa/SA`): an
    /// mTLS upstream must present one of them.
    pub identities: Vec<String>,
}

/// Upstream application protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// `http`, `http1`: HTTP/1.1 upstream.
    Http1,
    /// `http2`, `grpc`, `h2c`, or DR `h2UpgradePolicy: UPGRADE`.
    Http2,
    /// `tcp`, `mysql`, `mongo`, ...: opaque bytes.
    Tcp,
    /// Unnamed port: detect; HTTP requests use the downstream's protocol.
    #[default]
    Auto,
}

/// DestinationRule `loadBalancer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// `simple: ROUND_ROBIN`.
    RoundRobin,
    /// `simple: LEAST_REQUEST` (also `LEAST_CONN`, and `UNSPECIFIED`: Istio's default).
    #[default]
    LeastRequest,
    /// `simple: RANDOM`.
    Random,
    /// `consistentHash` with ring hash.
    ConsistentHash(ConsistentHash),
}

/// DestinationRule `consistentHash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistentHash {
    /// Which request attribute is hashed.
    pub key: HashKey,
    /// `ringHash.minimumRingSize` (default 1024).
    #[serde(default = "default_ring_size")]
    pub minimum_ring_size: u32,
}

fn default_ring_size() -> u32 {
    1024
}

/// The hash key of a consistent hash load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    /// `httpHeaderName`.
    Header(String),
    /// `httpCookie{name, path, ttl}`.
    Cookie {
        /// `httpCookie.name`.
        name: String,
        /// `httpCookie.path`.
        #[serde(default)]
        path: Option<String>,
        /// `httpCookie.ttl` in milliseconds.
        #[serde(default)]
        ttl_ms: Option<u64>,
    },
    /// `useSourceIp`.
    SourceIp,
    /// `httpQueryParameterName`.
    QueryParam(String),
}

/// DestinationRule `connectionPool`. Defaults are Istio's (see `Default`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectionPool {
    /// `tcp.maxConnections`, per upstream host (default 2^32-1).
    pub max_connections: u32,
    /// `tcp.connectTimeout` in milliseconds (default 10 s).
    pub connect_timeout_ms: u64,
    /// `http.http1MaxPendingRequests`, per cluster: requests waiting for a connection.
    pub http1_max_pending_requests: u32,
    /// `http.http2MaxRequests`, per cluster: active requests.
    pub http2_max_requests: u32,
    /// `http.maxRequestsPerConnection` (0: unlimited; 1: no keep-alive).
    pub max_requests_per_connection: u32,
    /// `http.idleTimeout` (or `tcp.idleTimeout`) in milliseconds (default 1 h).
    pub idle_timeout_ms: u64,
    /// `http.maxRetries` (default 2^32-1): retries in flight to the cluster at once.
    pub max_retries: u32,
    /// DestinationRule `trafficPolicy.retryBudget` (None: no budget, Istio's default). Set,
    /// it replaces `max_retries`, as Envoy's `retry_budget` replaces the retry circuit
    /// breaker. Left out of the wire form when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

/// Retries in flight may be at most `percent_milli` thousandths of a percent of the
/// cluster's active requests, and at least `min_concurrency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryBudget {
    /// `percent` in thousandths (default 20 %: 20000).
    pub percent_milli: u32,
    /// `minRetryConcurrency` (default 3).
    pub min_concurrency: u32,
}

impl RetryBudget {
    /// How many retries may be in flight to a cluster with `active` requests.
    pub fn limit(&self, active: u32) -> u32 {
        let share = u64::from(active) * u64::from(self.percent_milli) / 100_000;
        u32::try_from(share)
            .unwrap_or(u32::MAX)
            .max(self.min_concurrency)
    }
}

impl Default for ConnectionPool {
    fn default() -> Self {
        ConnectionPool {
            max_connections: u32::MAX,
            connect_timeout_ms: 10_000,
            http1_max_pending_requests: u32::MAX,
            http2_max_requests: u32::MAX,
            max_requests_per_connection: 0,
            idle_timeout_ms: 3_600_000,
            max_retries: u32::MAX,
            retry_budget: None,
        }
    }
}

/// DestinationRule `outlierDetection` (carried; ejection comes later). Defaults are Istio's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutlierDetection {
    /// `consecutive5xxErrors` (default 5; 0 disables).
    pub consecutive_5xx_errors: u32,
    /// `consecutiveGatewayErrors` (default off).
    pub consecutive_gateway_errors: Option<u32>,
    /// `interval` in milliseconds (default 10 s).
    pub interval_ms: u64,
    /// `baseEjectionTime` in milliseconds (default 30 s).
    pub base_ejection_time_ms: u64,
    /// `maxEjectionPercent` (default 10).
    pub max_ejection_percent: u32,
    /// `minHealthPercent` (Istio's default 0).
    pub min_health_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_5xx_errors: 5,
            consecutive_gateway_errors: None,
            interval_ms: 10_000,
            base_ejection_time_ms: 30_000,
            max_ejection_percent: 10,
            min_health_percent: 0,
        }
    }
}

/// DestinationRule `tls.mode` and what originating it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamTls {
    /// `DISABLE` (plaintext).
    #[default]
    Disable,
    /// `ISTIO_MUTUAL`.
    IstioMutual,
    /// `SIMPLE` with `sni`.
    Simple {
        /// `tls.sni`.
        #[serde(default)]
        sni: Option<String>,
        /// What the proxy needs to originate TLS (CA, SANs, ...).
        #[serde(flatten)]
        origin: OriginTls,
    },
    /// `MUTUAL` with file paths or `credentialName`.
    Mutual {
        /// `tls.sni`.
        #[serde(default)]
        sni: Option<String>,
        /// `tls.credentialName`.
        #[serde(default)]
        credential_name: Option<String>,
        /// What the proxy needs to originate TLS (CA, client certificate, SANs, ...).
        #[serde(flatten)]
        origin: OriginTls,
    },
}

impl UpstreamTls {
    /// The origination settings of `SIMPLE` and `MUTUAL` (None for the other modes).
    pub fn origin(&self) -> Option<(Option<&str>, &OriginTls)> {
        match self {
            UpstreamTls::Simple { sni, origin } | UpstreamTls::Mutual { sni, origin, .. } => {
                Some((sni.as_deref(), origin))
            }
            UpstreamTls::Disable | UpstreamTls::IstioMutual => None,
        }
    }
}

/// The text that replaces key material in dumps.
pub const REDACTED: &str = "[redacted]";

/// DestinationRule `SIMPLE` / `MUTUAL` TLS origination, as the proxy needs it: files named by
/// the DestinationRule stay paths (read by the proxy), a `credentialName` Secret arrives as
/// PEM. The proxy never falls back to plaintext: when this cannot be set up, the cluster
/// answers 503 `UF`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct OriginTls {
    /// `tls.caCertificates`: a PEM file of the CAs that verify the upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// CA certificates from the `credentialName` Secret (`ca.crt` / `cacert`), PEM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// `tls.clientCertificate`: the client certificate chain file (MUTUAL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// `tls.privateKey`: the client key file (MUTUAL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// The client certificate chain from the Secret (`tls.crt` / `cert`), PEM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_chain_pem: Option<String>,
    /// The client key from the Secret (`tls.key` / `key`), PEM. Never logged; dumps show
    /// [`REDACTED`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<String>,
    /// `tls.subjectAltNames`: the upstream certificate must carry one of them (DNS name,
    /// IP address or URI). Empty: it must be valid for the SNI.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// `tls.insecureSkipVerify`: neither the CA signature nor the names are checked.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
    /// Why the control plane could not resolve the settings (e.g. a missing Secret); the
    /// proxy answers 503 `UF` for the cluster and logs this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl OriginTls {
    /// Replaces key material with [`REDACTED`] (for dumps).
    pub fn redact(&mut self) {
        if self.key_pem.is_some() {
            self.key_pem = Some(REDACTED.to_string());
        }
    }
}

impl std::fmt::Debug for OriginTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginTls")
            .field("ca_certificates", &self.ca_certificates)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("client_certificate", &self.client_certificate)
            .field("private_key", &self.private_key)
            .field(
                "cert_chain_pem",
                &self.cert_chain_pem.as_ref().map(|_| "<pem>"),
            )
            .field("key_pem", &self.key_pem.as_ref().map(|_| REDACTED))
            .field("subject_alt_names", &self.subject_alt_names)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("error", &self.error)
            .finish()
    }
}

/// One upstream host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Pod IP and target port (EndpointSlice address + port).
    pub address: SocketAddr,
    /// Pod labels (subset selection happened in the control plane; kept for metrics).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Load balancing weight (ServiceEntry `endpoints[].weight`, default 1).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// The workload behind the endpoint (Istio's `istio`/`workload` endpoint metadata): the
    /// client side's destination labels when the peer says nothing (no sidecar, no answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<EndpointWorkload>,
}

fn default_weight() -> u32 {
    1
}

/// What Istio's control plane writes into an endpoint's `istio`/`workload` metadata
/// (`name;namespace;canonical-name;canonical-revision;cluster`), from the endpoint's pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointWorkload {
    /// The owning workload (Deployment, Rollout, ...).
    pub name: String,
    /// The pod's namespace.
    pub namespace: String,
    /// Canonical service ([`canonical_service`]).
    pub canonical_service: String,
    /// Canonical revision ([`canonical_revision`]).
    pub canonical_revision: String,
    /// The cluster's id (`Kubernetes` by default).
    pub cluster: String,
}

/// The `service.istio.io/canonical-name` label.
pub const LABEL_CANONICAL_NAME: &str = "service.istio.io/canonical-name";
/// The `service.istio.io/canonical-revision` label.
pub const LABEL_CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";

fn first_label<'a>(labels: &'a BTreeMap<String, String>, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| labels.get(*k).filter(|v| !v.is_empty()))
        .map(String::as_str)
}

/// A workload's canonical service, as Istio's injector and control plane name it: the
/// `service.istio.io/canonical-name` label, else `app.kubernetes.io/name`, else `app`,
/// else the workload's name.
pub fn canonical_service<'a>(labels: &'a BTreeMap<String, String>, workload: &'a str) -> &'a str {
    first_label(
        labels,
        &[LABEL_CANONICAL_NAME, "app.kubernetes.io/name", "app"],
    )
    .unwrap_or(workload)
}

/// A workload's canonical revision: the `service.istio.io/canonical-revision` label, else
/// `app.kubernetes.io/version`, else `version`, else `latest`.
pub fn canonical_revision(labels: &BTreeMap<String, String>) -> &str {
    first_label(
        labels,
        &[
            LABEL_CANONICAL_REVISION,
            "app.kubernetes.io/version",
            "version",
        ],
    )
    .unwrap_or("latest")
}

impl Snapshot {
    /// Parses a snapshot from JSON and validates it.
    pub fn from_json(json: &[u8]) -> Result<Snapshot, SnapshotError> {
        let snap: Snapshot = serde_json::from_slice(json)?;
        snap.validate()?;
        Ok(snap)
    }

    /// Serializes the snapshot as pretty JSON.
    pub fn to_json(&self) -> String {
        // Serializing these plain data types cannot fail (no maps with non-string keys).
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks what would make the snapshot ambiguous: duplicate cluster or route config names,
    /// routes whose weights are all zero. Routes to clusters the snapshot does not define are
    /// allowed, as in Istio (a VirtualService subset without a DestinationRule): the proxy
    /// answers them with 503 and flag NC. [`Snapshot::dangling_references`] lists them.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        let mut clusters = std::collections::HashSet::new();
        for c in &self.clusters {
            if !clusters.insert(c.name.as_str()) {
                return Err(SnapshotError::DuplicateCluster(c.name.clone()));
            }
        }
        let mut rcs = std::collections::HashSet::new();
        for rc in &self.route_configs {
            if !rcs.insert(rc.name.as_str()) {
                return Err(SnapshotError::DuplicateRouteConfig(rc.name.clone()));
            }
            for vh in &rc.virtual_hosts {
                for r in &vh.routes {
                    if let RouteAction::Route(dests) = &r.action
                        && !dests.is_empty()
                        && dests.iter().all(|d| d.weight == 0)
                    {
                        return Err(SnapshotError::ZeroWeight {
                            route_config: rc.name.clone(),
                            route: r.name.clone(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// References to clusters the snapshot does not define, as errors that say where they
    /// are (for warnings and `skein analyze`; the proxy answers such routes with 503 NC).
    pub fn dangling_references(&self) -> Vec<SnapshotError> {
        let clusters: std::collections::HashSet<&str> =
            self.clusters.iter().map(|c| c.name.as_str()).collect();
        let known = |name: &str| {
            clusters.contains(name) || name == PASSTHROUGH_CLUSTER || name == BLACKHOLE_CLUSTER
        };
        let mut out = Vec::new();
        for rc in &self.route_configs {
            for vh in &rc.virtual_hosts {
                for r in &vh.routes {
                    if let RouteAction::Route(dests) = &r.action {
                        for d in dests.iter().filter(|d| !known(&d.cluster)) {
                            out.push(SnapshotError::UnknownCluster {
                                route_config: rc.name.clone(),
                                route: r.name.clone(),
                                cluster: d.cluster.clone(),
                            });
                        }
                    }
                }
            }
        }
        for l in &self.listeners {
            let clusters: Vec<&String> = match &l.kind {
                ListenerKind::Tcp { cluster } => vec![cluster],
                ListenerKind::TcpWeighted { clusters } => {
                    clusters.iter().map(|d| &d.cluster).collect()
                }
                ListenerKind::Http { .. } => Vec::new(),
            };
            for cluster in clusters.into_iter().filter(|c| !known(c)) {
                out.push(SnapshotError::UnknownListenerCluster {
                    listener: l.name.clone(),
                    cluster: cluster.clone(),
                });
            }
        }
        out
    }

    /// The route config with this name.
    pub fn route_config(&self, name: &str) -> Option<&RouteConfig> {
        self.route_configs.iter().find(|r| r.name == name)
    }

    /// The cluster with this name.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_weighted_tcp_listener_picks_by_weight() {
        let d = |c: &str, w| TcpDestination {
            cluster: c.into(),
            weight: w,
        };
        let split = [d("a", 80), d("zero", 0), d("b", 20)];
        assert_eq!(TcpDestination::pick(&split, |_| 0), Some("a"));
        assert_eq!(TcpDestination::pick(&split, |_| 79), Some("a"));
        assert_eq!(TcpDestination::pick(&split, |_| 80), Some("b"));
        assert_eq!(TcpDestination::pick(&split, |t| t - 1), Some("b"));
        assert_eq!(TcpDestination::pick(&[d("zero", 0)], |_| 0), None);
    }

    use super::*;

    #[test]
    fn canonical_names_follow_istio() {
        let l = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(canonical_service(&l(&[]), "wl"), "wl");
        assert_eq!(canonical_service(&l(&[("app", "a")]), "wl"), "a");
        let both = l(&[("app", "a"), ("app.kubernetes.io/name", "n")]);
        assert_eq!(canonical_service(&both, "wl"), "n");
        let all = l(&[("app", "a"), (LABEL_CANONICAL_NAME, "c")]);
        assert_eq!(canonical_service(&all, "wl"), "c");
        // An empty label is no label.
        assert_eq!(canonical_service(&l(&[("app", "")]), "wl"), "wl");
        assert_eq!(canonical_revision(&l(&[])), "latest");
        assert_eq!(canonical_revision(&l(&[("version", "v1")])), "v1");
        let rev = l(&[("version", "v1"), ("app.kubernetes.io/version", "2")]);
        assert_eq!(canonical_revision(&rev), "2");
        let rev = l(&[("version", "v1"), (LABEL_CANONICAL_REVISION, "r")]);
        assert_eq!(canonical_revision(&rev), "r");
    }

    #[test]
    fn an_endpoint_without_a_workload_serialises_as_before() {
        let e = Endpoint {
            address: "10.0.0.1:80".parse().unwrap(),
            labels: BTreeMap::new(),
            weight: 1,
            workload: None,
        };
        let json = serde_json::to_string(&e).unwrap();
        assert!(!json.contains("workload"), "{json}");
        let back: Endpoint = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn cluster_names_follow_istio() {
        assert_eq!(
            outbound_cluster_name(8080, None, "was-service.blog-system.svc.cluster.local"),
            "outbound|8080||was-service.blog-system.svc.cluster.local"
        );
        assert_eq!(
            outbound_cluster_name(80, Some("v1"), "a.b.svc.cluster.local"),
            "outbound|80|v1|a.b.svc.cluster.local"
        );
        assert_eq!(inbound_cluster_name(8080), "inbound|8080||");
    }

    #[test]
    fn json_round_trip_and_defaults() {
        let snap = build::SnapshotBuilder::new("v1", "blog-system", "web")
            .http_service("was-service", 8080, &["127.0.0.1:9000"])
            .build();
        let json = snap.to_json();
        let back = Snapshot::from_json(json.as_bytes()).expect("round trip");
        assert_eq!(snap, back);
        let minimal: Snapshot = serde_json::from_str(r#"{"version":"x"}"#).expect("minimal");
        assert_eq!(
            minimal.outbound_traffic_policy,
            OutboundTrafficPolicy::AllowAny
        );
        let c: Cluster = serde_json::from_str(r#"{"name":"c"}"#).expect("cluster");
        assert_eq!(c.connection_pool.connect_timeout_ms, 10_000);
        assert_eq!(c.lb_policy, LbPolicy::LeastRequest);
        // A node from before `owner` and `cluster_id` existed still parses.
        let old: Node =
            serde_json::from_str(r#"{"pod":"p","namespace":"n","workload":"w"}"#).expect("node");
        assert_eq!((old.owner.as_str(), old.cluster_id.as_str()), ("", ""));
    }

    #[test]
    fn dangling_clusters_are_reported_not_rejected() {
        let mut snap = build::SnapshotBuilder::new("v1", "ns", "w")
            .http_service("a", 80, &["127.0.0.1:1"])
            .build();
        snap.clusters.clear();
        assert!(snap.validate().is_ok());
        let dangling = snap.dangling_references();
        assert_eq!(dangling.len(), 1);
        assert!(
            dangling[0].to_string().contains("does not define"),
            "{}",
            dangling[0]
        );
        snap.clusters.push(build::cluster("x", 1, None, &[]));
        snap.clusters.push(build::cluster("x", 1, None, &[]));
        assert!(matches!(
            snap.validate(),
            Err(SnapshotError::DuplicateCluster(_))
        ));
    }

    #[test]
    fn wire_format_is_stable() {
        let json = r#"{
          "version": "7",
          "node": {"pod": "web-1", "namespace": "blog-system", "workload": "web"},
          "outbound_traffic_policy": "REGISTRY_ONLY",
          "listeners": [{"name": "mysql", "address": "127.0.0.1:3306",
                         "kind": {"tcp": {"cluster": "outbound|3306||mysql.blog-system.svc.cluster.local"}}}],
          "route_configs": [{"name": "outbound", "virtual_hosts": [{
            "name": "web-service.blog-system.svc.cluster.local:80",
            "domains": ["web-service", "web-service:80"],
            "routes": [
              {"name": "canary-testing",
               "matches": [{"headers": [{"name": "x-canary-test", "match": {"exact": "true"}}]}],
               "action": {"route": [{"cluster": "outbound|80|canary|web-service.blog-system.svc.cluster.local", "weight": 100}]},
               "timeout_ms": 15000},
              {"name": "primary",
               "action": {"route": [
                 {"cluster": "outbound|80|stable|web-service.blog-system.svc.cluster.local", "weight": 90},
                 {"cluster": "outbound|80|canary|web-service.blog-system.svc.cluster.local", "weight": 10}]}}
            ]}]}],
          "clusters": [{"name": "outbound|80|stable|web-service.blog-system.svc.cluster.local",
                        "service": "web-service.blog-system.svc.cluster.local", "port": 80,
                        "subset": "stable", "protocol": "http1", "lb_policy": "round_robin",
                        "connection_pool": {"http1_max_pending_requests": 100, "http2_max_requests": 100,
                                            "max_requests_per_connection": 10, "max_connections": 100},
                        "outlier_detection": {"consecutive_5xx_errors": 5, "max_ejection_percent": 50, "min_health_percent": 30},
                        "tls": "istio_mutual",
                        "endpoints": [{"address": "127.0.1.1:80", "labels": {"app": "web"}}]},
                       {"name": "hash", "lb_policy": {"consistent_hash": {"key": {"header": "x-user"}}}}]
        }"#;
        let snap = Snapshot::from_json(json.as_bytes()).expect("parses");
        assert_eq!(
            snap.outbound_traffic_policy,
            OutboundTrafficPolicy::RegistryOnly
        );
        let c = &snap.clusters[0];
        assert_eq!(c.connection_pool.connect_timeout_ms, 10_000);
        assert_eq!(c.connection_pool.max_requests_per_connection, 10);
        assert_eq!(c.endpoints[0].weight, 1);
        assert_eq!(
            c.outlier_detection.as_ref().map(|o| o.interval_ms),
            Some(10_000)
        );
        assert_eq!(
            snap.clusters[1].lb_policy,
            LbPolicy::ConsistentHash(ConsistentHash {
                key: HashKey::Header("x-user".into()),
                minimum_ring_size: 1024
            })
        );
        // The undefined canary subset (twice) and mysql cluster: reported, accepted.
        assert_eq!(snap.dangling_references().len(), 3);
    }
}
