//! Kubernetes objects: Namespace, ServiceAccount, Service, Deployment, Argo Rollout,
//! Ingress, ConfigMap and Secret, with the upstream field names.
//!
//! Fields the mesh or the local runtime read are typed. Fields they do not interpret
//! (affinity, volumes' sources, security contexts, ...) are [`Opaque`] so that real
//! manifests load, but an unknown key at a modelled level is an error, as with
//! `kubectl apply --validate=strict`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::types::{IntOrString, LabelSelector, Labels, Object, ObjectMeta, Opaque};

/// `v1` Namespace.
pub type Namespace = Object<NamespaceSpec>;
/// `v1` Service.
pub type Service = Object<ServiceSpec>;
/// `apps/v1` Deployment.
pub type Deployment = Object<DeploymentSpec>;
/// `argoproj.io/v1alpha1` Rollout.
pub type Rollout = Object<RolloutSpec>;
/// `networking.k8s.io/v1` Ingress.
pub type Ingress = Object<IngressSpec>;

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NamespaceSpec {
    pub finalizers: Vec<String>,
}

// === ServiceAccount, ConfigMap, Secret ===

/// `v1` ServiceAccount (no `spec`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccount {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub secrets: Vec<Opaque>,
    #[serde(default)]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    pub automount_service_account_token: Option<bool>,
}

/// `v1` ConfigMap.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMap {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    #[serde(default)]
    pub binary_data: BTreeMap<String, String>,
    pub immutable: Option<bool>,
}

/// `v1` Secret. `data` values are base64 as on Kubernetes; `stringData` is plain text.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    #[serde(default)]
    pub string_data: BTreeMap<String, String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub immutable: Option<bool>,
}

impl Secret {
    /// The secret's values as text: `data` decoded from base64, then `stringData` on top
    /// (the API server merges them the same way). Values that are not valid base64 or
    /// UTF-8 are left out.
    pub fn decoded_data(&self) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = self
            .data
            .iter()
            .filter_map(|(k, v)| {
                let bytes = decode_base64(v)?;
                Some((k.clone(), String::from_utf8(bytes).ok()?))
            })
            .collect();
        out.extend(self.string_data.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }
}

/// Standard base64 (RFC 4648, with or without padding, whitespace ignored).
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buf = 0u32;
    let mut bits = 0u32;
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        buf = (buf << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LocalObjectReference {
    pub name: String,
}

// === Service ===

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServiceSpec {
    /// `None` when absent (a Service without selector, endpoints managed elsewhere).
    pub selector: Option<Labels>,
    pub ports: Vec<ServicePort>,
    #[serde(rename = "type")]
    pub type_: Option<ServiceType>,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
    #[serde(rename = "externalIPs")]
    pub external_ips: Vec<String>,
    pub external_name: Option<String>,
    pub session_affinity: Option<SessionAffinity>,
    pub session_affinity_config: Option<Opaque>,
    #[serde(rename = "loadBalancerIP")]
    pub load_balancer_ip: Option<String>,
    pub load_balancer_source_ranges: Vec<String>,
    pub load_balancer_class: Option<String>,
    pub allocate_load_balancer_node_ports: Option<bool>,
    pub external_traffic_policy: Option<String>,
    pub internal_traffic_policy: Option<String>,
    pub health_check_node_port: Option<i32>,
    pub publish_not_ready_addresses: Option<bool>,
    pub ip_families: Vec<String>,
    pub ip_family_policy: Option<String>,
    pub traffic_distribution: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum ServiceType {
    #[serde(rename = "ClusterIP")]
    ClusterIp,
    NodePort,
    LoadBalancer,
    ExternalName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum SessionAffinity {
    None,
    #[serde(rename = "ClientIP")]
    ClientIp,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    pub name: Option<String>,
    pub protocol: Option<Protocol>,
    pub app_protocol: Option<String>,
    pub port: i32,
    /// Defaults to `port` when unset.
    pub target_port: Option<IntOrString>,
    pub node_port: Option<i32>,
}

impl ServicePort {
    /// `targetPort`, or `port` when unset (Kubernetes' default).
    pub fn target(&self) -> IntOrString {
        self.target_port
            .clone()
            .unwrap_or(IntOrString::Int(self.port))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

// === Deployment and Rollout ===

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DeploymentSpec {
    /// Kubernetes defaults it to 1.
    pub replicas: Option<i32>,
    /// Required by `apps/v1`; `None` only so that validation can report it with a path.
    pub selector: Option<LabelSelector>,
    pub template: PodTemplateSpec,
    pub strategy: Option<DeploymentStrategy>,
    pub min_ready_seconds: Option<i32>,
    pub revision_history_limit: Option<i32>,
    pub progress_deadline_seconds: Option<i32>,
    pub paused: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DeploymentStrategy {
    /// `RollingUpdate` or `Recreate`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub rolling_update: Option<RollingUpdate>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RollingUpdate {
    pub max_surge: Option<IntOrString>,
    pub max_unavailable: Option<IntOrString>,
}

/// An Argo Rollout's spec: a Deployment's fields plus `strategy` (canary/blueGreen, kept
/// opaque) and `workloadRef` (a Rollout that borrows a Deployment's template).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RolloutSpec {
    pub replicas: Option<i32>,
    pub selector: Option<LabelSelector>,
    /// Empty when the Rollout uses `workloadRef`.
    pub template: PodTemplateSpec,
    pub workload_ref: Option<Opaque>,
    pub strategy: Option<Opaque>,
    pub analysis: Option<Opaque>,
    pub min_ready_seconds: Option<i32>,
    pub revision_history_limit: Option<i32>,
    pub progress_deadline_seconds: Option<i32>,
    pub progress_deadline_abort: Option<bool>,
    pub paused: Option<bool>,
    pub restart_at: Option<String>,
    pub rollback_window: Option<Opaque>,
}

/// What a Deployment and a Rollout have in common: how many pods of which template.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadSpec<'a> {
    pub replicas: Option<i32>,
    pub selector: Option<&'a LabelSelector>,
    pub template: &'a PodTemplateSpec,
}

impl DeploymentSpec {
    pub fn as_workload(&self) -> WorkloadSpec<'_> {
        WorkloadSpec {
            replicas: self.replicas,
            selector: self.selector.as_ref(),
            template: &self.template,
        }
    }
}

impl RolloutSpec {
    pub fn as_workload(&self) -> WorkloadSpec<'_> {
        WorkloadSpec {
            replicas: self.replicas,
            selector: self.selector.as_ref(),
            template: &self.template,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PodTemplateSpec {
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
}

// === Pod ===

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PodSpec {
    pub containers: Vec<Container>,
    pub init_containers: Vec<Container>,
    pub ephemeral_containers: Vec<Opaque>,
    pub service_account_name: Option<String>,
    /// Deprecated alias of `serviceAccountName`.
    pub service_account: Option<String>,
    pub automount_service_account_token: Option<bool>,
    pub restart_policy: Option<RestartPolicy>,
    pub termination_grace_period_seconds: Option<i64>,
    pub active_deadline_seconds: Option<i64>,
    pub volumes: Vec<Volume>,
    pub node_selector: Labels,
    pub node_name: Option<String>,
    pub affinity: Option<Opaque>,
    pub tolerations: Vec<Opaque>,
    pub topology_spread_constraints: Vec<Opaque>,
    pub security_context: Option<Opaque>,
    pub host_aliases: Vec<HostAlias>,
    pub image_pull_secrets: Vec<LocalObjectReference>,
    pub dns_policy: Option<DnsPolicy>,
    pub dns_config: Option<Opaque>,
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
    pub host_network: Option<bool>,
    #[serde(rename = "hostPID")]
    pub host_pid: Option<bool>,
    #[serde(rename = "hostIPC")]
    pub host_ipc: Option<bool>,
    pub share_process_namespace: Option<bool>,
    pub enable_service_links: Option<bool>,
    pub priority_class_name: Option<String>,
    pub priority: Option<i32>,
    pub preemption_policy: Option<String>,
    pub scheduler_name: Option<String>,
    pub runtime_class_name: Option<String>,
    pub readiness_gates: Vec<Opaque>,
    pub overhead: Option<Opaque>,
    pub os: Option<Opaque>,
    pub set_hostname_as_fqdn: Option<bool>,
    pub host_users: Option<bool>,
    pub scheduling_gates: Vec<Opaque>,
    pub resource_claims: Vec<Opaque>,
    pub resources: Option<Opaque>,
}

impl PodSpec {
    /// `serviceAccountName`, else the deprecated `serviceAccount`, else `default`.
    pub fn service_account(&self) -> &str {
        self.service_account_name
            .as_deref()
            .or(self.service_account.as_deref())
            .unwrap_or("default")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum DnsPolicy {
    ClusterFirst,
    ClusterFirstWithHostNet,
    Default,
    None,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HostAlias {
    pub ip: String,
    pub hostnames: Vec<String>,
}

/// A pod volume: the name is typed, the source (`emptyDir`, `configMap`, `secret`, ...) is
/// kept opaque.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Volume {
    pub name: String,
    pub empty_dir: Option<Opaque>,
    pub config_map: Option<Opaque>,
    pub secret: Option<Opaque>,
    pub persistent_volume_claim: Option<Opaque>,
    pub host_path: Option<Opaque>,
    pub projected: Option<Opaque>,
    #[serde(rename = "downwardAPI")]
    pub downward_api: Option<Opaque>,
    pub ephemeral: Option<Opaque>,
    pub nfs: Option<Opaque>,
    pub csi: Option<Opaque>,
    pub image: Option<Opaque>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    pub name: String,
    pub image: Option<String>,
    pub image_pull_policy: Option<PullPolicy>,
    /// The program and its leading arguments (the image's ENTRYPOINT when empty).
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    pub working_dir: Option<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    #[serde(default)]
    pub env_from: Vec<EnvFromSource>,
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
    pub resources: Option<ResourceRequirements>,
    pub resize_policy: Option<Opaque>,
    pub restart_policy: Option<String>,
    pub readiness_probe: Option<Probe>,
    pub liveness_probe: Option<Probe>,
    pub startup_probe: Option<Probe>,
    #[serde(default)]
    pub volume_mounts: Vec<VolumeMount>,
    #[serde(default)]
    pub volume_devices: Vec<Opaque>,
    pub security_context: Option<Opaque>,
    pub lifecycle: Option<Opaque>,
    pub termination_message_path: Option<String>,
    pub termination_message_policy: Option<String>,
    pub stdin: Option<bool>,
    pub stdin_once: Option<bool>,
    pub tty: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    /// May contain `$(VAR)` references to earlier variables.
    pub value: Option<String>,
    pub value_from: Option<EnvVarSource>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvVarSource {
    pub field_ref: Option<ObjectFieldSelector>,
    pub resource_field_ref: Option<ResourceFieldSelector>,
    pub config_map_key_ref: Option<KeySelector>,
    pub secret_key_ref: Option<KeySelector>,
    pub file_key_ref: Option<Opaque>,
}

/// `fieldRef`: `metadata.name`, `metadata.labels['version']`, `status.podIP`, ...
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectFieldSelector {
    pub field_path: String,
    pub api_version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceFieldSelector {
    pub resource: String,
    pub container_name: Option<String>,
    pub divisor: Option<Opaque>,
}

/// `configMapKeyRef` / `secretKeyRef`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySelector {
    #[serde(default)]
    pub name: String,
    pub key: String,
    pub optional: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvFromSource {
    pub prefix: Option<String>,
    pub config_map_ref: Option<EnvFromRef>,
    pub secret_ref: Option<EnvFromRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvFromRef {
    pub name: String,
    pub optional: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub container_port: i32,
    pub protocol: Option<Protocol>,
    pub host_port: Option<i32>,
    #[serde(rename = "hostIP")]
    pub host_ip: Option<String>,
}

/// `requests` / `limits` / `claims`. Quantities keep their text (`150m`, `400Mi`); a bare
/// number in YAML (`cpu: 1`) becomes its decimal text.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ResourceRequirements {
    pub requests: BTreeMap<String, Quantity>,
    pub limits: BTreeMap<String, Quantity>,
    pub claims: Vec<Opaque>,
}

/// A Kubernetes resource quantity as written (`150m`, `400Mi`, `1`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Quantity(pub String);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a quantity such as \"150m\" or \"400Mi\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    pub sub_path: Option<String>,
    pub sub_path_expr: Option<String>,
    pub read_only: Option<bool>,
    pub recursive_read_only: Option<String>,
    pub mount_propagation: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Probe {
    pub http_get: Option<HttpGetAction>,
    pub tcp_socket: Option<TcpSocketAction>,
    pub exec: Option<ExecAction>,
    pub grpc: Option<GrpcAction>,
    pub initial_delay_seconds: Option<i32>,
    pub period_seconds: Option<i32>,
    pub timeout_seconds: Option<i32>,
    pub success_threshold: Option<i32>,
    pub failure_threshold: Option<i32>,
    pub termination_grace_period_seconds: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGetAction {
    pub path: Option<String>,
    pub port: IntOrString,
    pub host: Option<String>,
    pub scheme: Option<Scheme>,
    #[serde(default)]
    pub http_headers: Vec<HttpHeader>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum Scheme {
    #[serde(rename = "HTTP")]
    Http,
    #[serde(rename = "HTTPS")]
    Https,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSocketAction {
    pub port: IntOrString,
    pub host: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ExecAction {
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcAction {
    pub port: i32,
    pub service: Option<String>,
}

// === Ingress ===

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IngressSpec {
    pub ingress_class_name: Option<String>,
    pub default_backend: Option<IngressBackend>,
    pub tls: Vec<IngressTls>,
    pub rules: Vec<IngressRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IngressTls {
    pub hosts: Vec<String>,
    pub secret_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IngressRule {
    pub host: Option<String>,
    pub http: Option<HttpIngressRuleValue>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpIngressRuleValue {
    pub paths: Vec<HttpIngressPath>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpIngressPath {
    pub path: Option<String>,
    pub path_type: PathType,
    pub backend: IngressBackend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
pub enum PathType {
    Exact,
    Prefix,
    ImplementationSpecific,
}

/// What request paths one Ingress path matches, by Kubernetes' rules. The control plane
/// compiles it into route matches and the local runtime's ingress matches with it, so both
/// read an Ingress the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngressPathMatch {
    /// `Prefix` of `/` (or no path): every request.
    Any,
    /// `Exact`: the whole path, byte for byte.
    Exact(String),
    /// `Prefix` (and `ImplementationSpecific`, read as `Prefix`): whole `/`-separated segments,
    /// so `/api` matches `/api` and `/api/x` but not `/apix`. Holds the path without its
    /// trailing slashes.
    Segments(String),
}

impl IngressPathMatch {
    /// Whether `path` (a request path, without the query) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            IngressPathMatch::Any => true,
            IngressPathMatch::Exact(p) => path == p,
            IngressPathMatch::Segments(p) => {
                path == p
                    || (path.starts_with(p.as_str()) && path.as_bytes().get(p.len()) == Some(&b'/'))
            }
        }
    }

    /// The length that orders overlapping paths: the longest path wins, as Kubernetes says.
    pub fn len(&self) -> usize {
        match self {
            IngressPathMatch::Any => 0,
            IngressPathMatch::Exact(p) | IngressPathMatch::Segments(p) => p.len(),
        }
    }

    /// Whether this is [`IngressPathMatch::Any`].
    pub fn is_empty(&self) -> bool {
        matches!(self, IngressPathMatch::Any)
    }
}

impl HttpIngressPath {
    /// How this path matches requests.
    pub fn path_match(&self) -> IngressPathMatch {
        let path = self.path.as_deref().unwrap_or("/");
        if self.path_type == PathType::Exact {
            return IngressPathMatch::Exact(path.to_string());
        }
        match path.trim_end_matches('/') {
            "" => IngressPathMatch::Any,
            p => IngressPathMatch::Segments(p.to_string()),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IngressBackend {
    pub service: Option<IngressServiceBackend>,
    pub resource: Option<Opaque>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressServiceBackend {
    pub name: String,
    #[serde(default)]
    pub port: ServiceBackendPort,
}

/// `port: {number: 80}` or `port: {name: http}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServiceBackendPort {
    pub number: Option<i32>,
    pub name: Option<String>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn ingress_paths_match_whole_segments() {
        use super::{HttpIngressPath, IngressBackend, IngressPathMatch, PathType};
        let p = |path: &str, path_type| HttpIngressPath {
            path: Some(path.to_string()),
            path_type,
            backend: IngressBackend::default(),
        };
        let api = p("/api/", PathType::Prefix).path_match();
        assert_eq!(api, IngressPathMatch::Segments("/api".into()));
        assert!(api.matches("/api") && api.matches("/api/") && api.matches("/api/posts"));
        assert!(!api.matches("/apix") && !api.matches("/"));
        assert_eq!(p("/", PathType::Prefix).path_match(), IngressPathMatch::Any);
        let board = p("/board", PathType::Exact).path_match();
        assert!(board.matches("/board") && !board.matches("/board/"));
        let imp = p("/x", PathType::ImplementationSpecific).path_match();
        assert!(imp.matches("/x/y"));
        assert!(api.len() > IngressPathMatch::Any.len());
    }

    use super::*;

    #[test]
    fn secret_data_is_decoded_and_string_data_wins() {
        let s: Secret = serde_norway::from_str(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\ndata:\n  user: YmxvZw==\n  pw: c2VjcmV0\nstringData:\n  pw: plain\n",
        )
        .unwrap();
        let d = s.decoded_data();
        assert_eq!(d.get("user").map(String::as_str), Some("blog"));
        assert_eq!(d.get("pw").map(String::as_str), Some("plain"));
    }

    #[test]
    fn base64_without_padding() {
        assert_eq!(decode_base64("YmxvZw").as_deref(), Some(&b"blog"[..]));
        assert_eq!(decode_base64("Ym!"), None);
    }

    #[test]
    fn service_port_target_defaults_to_port() {
        let p: ServicePort = serde_norway::from_str("port: 80").unwrap();
        assert_eq!(p.target(), IntOrString::Int(80));
    }
}
