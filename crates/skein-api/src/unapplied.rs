//! Istio kinds skein reads and keeps but does not apply: `EnvoyFilter`, `ProxyConfig` and
//! `WorkloadGroup` (`networking.istio.io`), `WasmPlugin` and `TrafficExtension`
//! (`extensions.istio.io`). They load field for field as Istio's CRDs define them (so a
//! typo is still an error), are shown by `skein get`, and `skein analyze` warns that they
//! have no effect (SKN0301).
//!
//! EnvoyFilter patches, Wasm modules and Lua code extend Envoy itself, which skein's proxy is
//! not; ProxyConfig tunes an Envoy sidecar; WorkloadGroup templates VM workloads that join
//! the mesh through istio-agent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{Labels, Object, Opaque, PolicyTargetReference, WorkloadSelector};

pub type EnvoyFilter = Object<EnvoyFilterSpec>;
pub type ProxyConfig = Object<ProxyConfigSpec>;
pub type WorkloadGroup = Object<WorkloadGroupSpec>;
pub type WasmPlugin = Object<WasmPluginSpec>;
pub type TrafficExtension = Object<TrafficExtensionSpec>;

// === EnvoyFilter ===

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvoyFilterSpec {
    pub workload_selector: Option<EnvoyFilterWorkloadSelector>,
    pub target_refs: Vec<PolicyTargetReference>,
    pub config_patches: Vec<EnvoyConfigObjectPatch>,
    pub priority: Option<i32>,
}

/// EnvoyFilter's `workloadSelector` has `labels:`, not `matchLabels:`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvoyFilterWorkloadSelector {
    pub labels: Labels,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvoyConfigObjectPatch {
    pub apply_to: Option<ApplyTo>,
    #[serde(rename = "match")]
    pub match_: Option<EnvoyConfigObjectMatch>,
    pub patch: Option<EnvoyPatch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApplyTo {
    Invalid,
    Listener,
    FilterChain,
    NetworkFilter,
    HttpFilter,
    RouteConfiguration,
    VirtualHost,
    HttpRoute,
    Cluster,
    ExtensionConfig,
    Bootstrap,
    ListenerFilter,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvoyConfigObjectMatch {
    pub context: Option<PatchContext>,
    pub proxy: Option<ProxyMatch>,
    pub listener: Option<ListenerMatch>,
    pub route_configuration: Option<RouteConfigurationMatch>,
    pub cluster: Option<ClusterMatch>,
    pub waypoint: Option<WaypointMatch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PatchContext {
    Any,
    SidecarInbound,
    SidecarOutbound,
    Gateway,
    Waypoint,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProxyMatch {
    pub proxy_version: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ListenerMatch {
    pub port_number: Option<u32>,
    pub port_name: Option<String>,
    pub filter_chain: Option<FilterChainMatch>,
    pub listener_filter: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FilterChainMatch {
    pub name: Option<String>,
    pub sni: Option<String>,
    pub transport_protocol: Option<String>,
    pub application_protocols: Option<String>,
    pub filter: Option<FilterMatch>,
    pub destination_port: Option<u32>,
    pub transport_socket: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FilterMatch {
    pub name: Option<String>,
    pub sub_filter: Option<SubFilterMatch>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SubFilterMatch {
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RouteConfigurationMatch {
    pub port_number: Option<u32>,
    pub port_name: Option<String>,
    pub gateway: Option<String>,
    pub vhost: Option<VirtualHostMatch>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct VirtualHostMatch {
    pub name: Option<String>,
    pub domain_name: Option<String>,
    pub route: Option<RouteMatch>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RouteMatch {
    pub name: Option<String>,
    pub action: Option<RouteAction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RouteAction {
    Any,
    Route,
    Redirect,
    DirectResponse,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ClusterMatch {
    pub port_number: Option<u32>,
    pub service: Option<String>,
    pub subset: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WaypointMatch {
    pub filter: Option<FilterMatch>,
    pub route: Option<WaypointRouteMatch>,
    pub port_number: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WaypointRouteMatch {
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvoyPatch {
    pub operation: Option<PatchOperation>,
    /// Envoy configuration in its own schema: kept as written.
    pub value: Option<Opaque>,
    pub filter_class: Option<FilterClass>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PatchOperation {
    Invalid,
    Merge,
    Add,
    Remove,
    InsertBefore,
    InsertAfter,
    InsertFirst,
    Replace,
    MergeAndReplaceList,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FilterClass {
    Unspecified,
    Authn,
    Authz,
    Stats,
}

// === ProxyConfig ===

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProxyConfigSpec {
    pub selector: Option<WorkloadSelector>,
    pub concurrency: Option<i32>,
    pub environment_variables: BTreeMap<String, String>,
    pub image: Option<ProxyImage>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProxyImage {
    /// `default`, `debug` or `distroless`.
    pub image_type: Option<String>,
}

// === WorkloadGroup ===

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadGroupSpec {
    pub metadata: Option<WorkloadGroupObjectMeta>,
    /// Required: the WorkloadEntry every member gets.
    pub template: Option<crate::networking::WorkloadEntrySpec>,
    pub probe: Option<ReadinessProbe>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadGroupObjectMeta {
    pub labels: Labels,
    pub annotations: Labels,
}

/// Istio's `ReadinessProbe` (istio-agent probes a VM workload).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ReadinessProbe {
    pub initial_delay_seconds: Option<i32>,
    pub timeout_seconds: Option<i32>,
    pub period_seconds: Option<i32>,
    pub success_threshold: Option<i32>,
    pub failure_threshold: Option<i32>,
    pub http_get: Option<HttpHealthCheckConfig>,
    pub tcp_socket: Option<TcpHealthCheckConfig>,
    pub exec: Option<ExecHealthCheckConfig>,
    pub grpc: Option<GrpcHealthCheckConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpHealthCheckConfig {
    pub path: Option<String>,
    pub port: u32,
    pub host: Option<String>,
    /// `HTTP` or `HTTPS`.
    pub scheme: Option<String>,
    pub http_headers: Vec<HttpHeaderValue>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpHeaderValue {
    pub name: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TcpHealthCheckConfig {
    pub host: Option<String>,
    pub port: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ExecHealthCheckConfig {
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GrpcHealthCheckConfig {
    pub port: u32,
    pub service: Option<String>,
}

// === WasmPlugin, TrafficExtension ===

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WasmPluginSpec {
    pub selector: Option<WorkloadSelector>,
    pub target_ref: Option<PolicyTargetReference>,
    pub target_refs: Vec<PolicyTargetReference>,
    /// Required: `oci://`, `file://` or `http[s]://`.
    pub url: String,
    pub sha256: Option<String>,
    pub image_pull_policy: Option<PullPolicy>,
    pub image_pull_secret: Option<String>,
    pub verification_key: Option<String>,
    pub plugin_config: Option<Opaque>,
    pub plugin_name: Option<String>,
    pub phase: Option<PluginPhase>,
    pub priority: Option<i32>,
    pub fail_strategy: Option<FailStrategy>,
    pub vm_config: Option<VmConfig>,
    #[serde(rename = "match")]
    pub match_: Vec<TrafficSelector>,
    #[serde(rename = "type")]
    pub type_: Option<PluginType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum PullPolicy {
    #[serde(rename = "UNSPECIFIED_POLICY")]
    Unspecified,
    IfNotPresent,
    Always,
}

/// WasmPlugin's phases (`UNSPECIFIED_PHASE` for the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum PluginPhase {
    #[serde(rename = "UNSPECIFIED_PHASE")]
    Unspecified,
    #[serde(rename = "AUTHN")]
    Authn,
    #[serde(rename = "AUTHZ")]
    Authz,
    #[serde(rename = "STATS")]
    Stats,
}

/// TrafficExtension's phases (`UNSPECIFIED` for the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExtensionPhase {
    Unspecified,
    Authn,
    Authz,
    Stats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailStrategy {
    FailClose,
    FailOpen,
    FailReload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PluginType {
    UnspecifiedPluginType,
    Http,
    Network,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct VmConfig {
    pub env: Vec<EnvVar>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvVar {
    pub name: String,
    pub value_from: Option<EnvValueSource>,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EnvValueSource {
    Inline,
    Host,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TrafficSelector {
    pub mode: Option<WorkloadMode>,
    pub ports: Vec<PortSelector>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    Undefined,
    Client,
    Server,
    ClientAndServer,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PortSelector {
    pub number: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TrafficExtensionSpec {
    pub selector: Option<WorkloadSelector>,
    pub target_refs: Vec<PolicyTargetReference>,
    pub phase: Option<ExtensionPhase>,
    pub priority: Option<i32>,
    #[serde(rename = "match")]
    pub match_: Vec<TrafficSelector>,
    pub wasm: Option<WasmConfig>,
    pub lua: Option<LuaConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WasmConfig {
    pub url: String,
    pub sha256: Option<String>,
    pub image_pull_policy: Option<PullPolicy>,
    pub image_pull_secret: Option<String>,
    pub verification_key: Option<String>,
    pub plugin_config: Option<Opaque>,
    pub plugin_name: Option<String>,
    pub fail_strategy: Option<FailStrategy>,
    pub vm_config: Option<VmConfig>,
    #[serde(rename = "type")]
    pub type_: Option<PluginType>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LuaConfig {
    pub inline_code: String,
}
