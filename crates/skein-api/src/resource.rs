//! The closed set of kinds skein reads, the apiVersions accepted for each, and typed access
//! to a loaded set of manifests.

use serde::Deserializer;

use crate::analysis::{AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate};
use crate::gateway_api as gwapi;
use crate::gitops::{AppProject, Application};
use crate::k8s::{
    ConfigMap, Deployment, Ingress, Namespace, Rollout, Secret, Service, ServiceAccount,
};
use crate::k8s_workloads::{CronJob, DaemonSet, Job, Pod, StatefulSet};
use crate::kept::{
    CSIDriver, ClusterRole, ClusterRoleBinding, CustomObject, CustomResourceDefinition,
    EndpointSlice, Endpoints, HorizontalPodAutoscaler, IngressClass, IstioOperator, LimitRange,
    MutatingWebhookConfiguration, NetworkPolicy, PersistentVolumeClaim, PodDisruptionBudget,
    ResourceQuota, Role, RoleBinding, ValidatingWebhookConfiguration,
};
use crate::lines::LineIndex;
use crate::networking::{
    DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService, WorkloadEntry,
};
use crate::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use crate::telemetry::Telemetry;
use crate::types::ObjectMeta;
use crate::unapplied::{EnvoyFilter, ProxyConfig, TrafficExtension, WasmPlugin, WorkloadGroup};
use crate::{DEFAULT_NAMESPACE, Source};

const ISTIO_NETWORKING: &[&str] = &[
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];
const ISTIO_SECURITY: &[&str] = &["security.istio.io/v1", "security.istio.io/v1beta1"];
const RBAC: &[&str] = &["rbac.authorization.k8s.io/v1"];
const ADMISSION: &[&str] = &["admissionregistration.k8s.io/v1"];
const ISTIO_EXTENSIONS: &[&str] = &["extensions.istio.io/v1alpha1"];
const ISTIO_TELEMETRY: &[&str] = &["telemetry.istio.io/v1", "telemetry.istio.io/v1alpha1"];
const GATEWAY_API: &[&str] = &[
    "gateway.networking.k8s.io/v1",
    "gateway.networking.k8s.io/v1beta1",
];
const GRPC_ROUTE: &[&str] = &[
    "gateway.networking.k8s.io/v1",
    "gateway.networking.k8s.io/v1alpha2",
];
const TCP_ROUTE: &[&str] = &["gateway.networking.k8s.io/v1alpha2"];
const REFERENCE_GRANT: &[&str] = &[
    "gateway.networking.k8s.io/v1beta1",
    "gateway.networking.k8s.io/v1alpha2",
];
const ARGO: &[&str] = &["argoproj.io/v1alpha1"];

/// A Rust type that is one kind of [`Resource`].
pub trait ResourceKind: Sized + 'static {
    /// The `kind:` string.
    const KIND: &'static str;
    fn from_resource(resource: &Resource) -> Option<&Self>;
    fn metadata(&self) -> &ObjectMeta;
}

/// The `kind:` string of a `resources!` entry: its own (`Gateway(..) as "Gateway"`), else the
/// variant's name.
macro_rules! kind_str {
    ($variant:ident) => {
        stringify!($variant)
    };
    ($variant:ident, $kind:literal) => {
        $kind
    };
}

macro_rules! resources {
    ($( $(#[$doc:meta])* $variant:ident($ty:ty) $(as $kind:literal)?, $apis:expr, $method:ident; )*) => {
        /// One object of a kind skein reads. Each variant holds the typed object with its
        /// `api_version`, `kind`, `metadata` and (for most kinds) `spec`.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Resource {
            $( $(#[$doc])* $variant($ty), )*
        }

        /// Every kind skein reads, with the apiVersions accepted for it.
        pub const KINDS: &[(&str, &[&str])] = &[ $( (kind_str!($variant $(, $kind)?), $apis), )* ];

        impl Resource {
            /// The kind, e.g. `VirtualService`.
            pub fn kind(&self) -> &'static str {
                match self { $( Resource::$variant(_) => kind_str!($variant $(, $kind)?), )* }
            }

            /// The apiVersion as written (e.g. `networking.istio.io/v1beta1`).
            pub fn api_version(&self) -> &str {
                match self { $( Resource::$variant(o) => &o.api_version, )* }
            }

            pub fn metadata(&self) -> &ObjectMeta {
                match self { $( Resource::$variant(o) => &o.metadata, )* }
            }

            /// The object as JSON, without nulls and empty lists/maps: what `kubectl get -o
            /// json` would show of it.
            pub fn to_json(&self) -> serde_json::Value {
                let v = match self { $( Resource::$variant(o) => serde_json::to_value(o), )* };
                v.map(prune).unwrap_or(serde_json::Value::Null)
            }
        }

        /// Deserializes the typed object for `kind` of `api_version`, tracking the field path
        /// for errors. `None` if the pair is not one of [`KINDS`].
        pub(crate) fn deserialize_kind<'de, D: Deserializer<'de>>(
            kind: &str,
            api_version: &str,
            de: D,
        ) -> Option<Result<Resource, serde_path_to_error::Error<D::Error>>> {
            $(
                if kind == kind_str!($variant $(, $kind)?) && ($apis).contains(&api_version) {
                    return Some(serde_path_to_error::deserialize(de).map(Resource::$variant));
                }
            )*
            None
        }

        $(
            impl ResourceKind for $ty {
                const KIND: &'static str = kind_str!($variant $(, $kind)?);
                fn from_resource(resource: &Resource) -> Option<&Self> {
                    match resource { Resource::$variant(x) => Some(x), _ => None }
                }
                fn metadata(&self) -> &ObjectMeta { &self.metadata }
            }
        )*

        impl Manifests {
            $(
                #[doc = concat!("Every `", stringify!($variant), "`, in load order.")]
                pub fn $method(&self) -> impl Iterator<Item = &$ty> { self.of::<$ty>() }
            )*
        }
    };
}

resources! {
    Namespace(Namespace), &["v1"], namespaces;
    ServiceAccount(ServiceAccount), &["v1"], service_accounts;
    Service(Service), &["v1"], services;
    ConfigMap(ConfigMap), &["v1"], config_maps;
    Secret(Secret), &["v1"], secrets;
    Deployment(Deployment), &["apps/v1"], deployments;
    /// An Argo Rollout: a Deployment with a progressive delivery strategy.
    Rollout(Rollout), &["argoproj.io/v1alpha1"], rollouts;
    Ingress(Ingress), &["networking.k8s.io/v1"], ingresses;
    VirtualService(VirtualService), ISTIO_NETWORKING, virtual_services;
    DestinationRule(DestinationRule), ISTIO_NETWORKING, destination_rules;
    Gateway(Gateway), ISTIO_NETWORKING, gateways;
    ServiceEntry(ServiceEntry), ISTIO_NETWORKING, service_entries;
    Sidecar(Sidecar), ISTIO_NETWORKING, sidecars;
    WorkloadEntry(WorkloadEntry), ISTIO_NETWORKING, workload_entries;
    AuthorizationPolicy(AuthorizationPolicy), ISTIO_SECURITY, authorization_policies;
    PeerAuthentication(PeerAuthentication), ISTIO_SECURITY, peer_authentications;
    RequestAuthentication(RequestAuthentication), ISTIO_SECURITY, request_authentications;
    Telemetry(Telemetry), ISTIO_TELEMETRY, telemetries;
    /// An Argo CD Application: the config in force is a commit of its repository.
    Application(Application), &["argoproj.io/v1alpha1"], applications;
    /// An Argo CD AppProject: loaded and kept, not enforced.
    AppProject(AppProject), &["argoproj.io/v1alpha1"], app_projects;
    /// A Gateway API GatewayClass (cluster-scoped).
    GatewayClass(gwapi::GatewayClass), GATEWAY_API, gateway_classes;
    /// A Gateway API Gateway (`gateway.networking.k8s.io`), not Istio's.
    KubeGateway(gwapi::Gateway) as "Gateway", GATEWAY_API, kube_gateways;
    HttpRoute(gwapi::HttpRoute) as "HTTPRoute", GATEWAY_API, http_routes;
    GrpcRoute(gwapi::GrpcRoute) as "GRPCRoute", GRPC_ROUTE, grpc_routes;
    TcpRoute(gwapi::TcpRoute) as "TCPRoute", TCP_ROUTE, tcp_routes;
    ReferenceGrant(gwapi::ReferenceGrant), REFERENCE_GRANT, reference_grants;
    /// Argo Rollouts' analysis: metrics, their provider and the conditions they pass.
    AnalysisTemplate(AnalysisTemplate), ARGO, analysis_templates;
    /// An AnalysisTemplate any namespace can use (cluster-scoped).
    ClusterAnalysisTemplate(ClusterAnalysisTemplate), ARGO, cluster_analysis_templates;
    /// One analysis, running: a Rollout starts them, and a user may write one.
    AnalysisRun(AnalysisRun), ARGO, analysis_runs;
    /// Kept, not applied (see [`crate::unapplied`]).
    EnvoyFilter(EnvoyFilter), &["networking.istio.io/v1alpha3"], envoy_filters;
    /// Kept, not applied.
    ProxyConfig(ProxyConfig), &["networking.istio.io/v1beta1"], proxy_configs;
    /// Kept and validated, not applied.
    WorkloadGroup(WorkloadGroup), ISTIO_NETWORKING, workload_groups;
    /// Kept, not applied.
    WasmPlugin(WasmPlugin), ISTIO_EXTENSIONS, wasm_plugins;
    /// Kept, not applied.
    TrafficExtension(TrafficExtension), ISTIO_EXTENSIONS, traffic_extensions;
    Pod(Pod), &["v1"], pods;
    StatefulSet(StatefulSet), &["apps/v1"], stateful_sets;
    DaemonSet(DaemonSet), &["apps/v1"], daemon_sets;
    Job(Job), &["batch/v1"], jobs;
    CronJob(CronJob), &["batch/v1"], cron_jobs;
    /// Kept as written (see [`crate::kept`]), like the kinds after it.
    Role(Role), RBAC, roles;
    ClusterRole(ClusterRole), RBAC, cluster_roles;
    RoleBinding(RoleBinding), RBAC, role_bindings;
    ClusterRoleBinding(ClusterRoleBinding), RBAC, cluster_role_bindings;
    CustomResourceDefinition(CustomResourceDefinition), &["apiextensions.k8s.io/v1", "apiextensions.k8s.io/v1beta1"], custom_resource_definitions;
    MutatingWebhookConfiguration(MutatingWebhookConfiguration), ADMISSION, mutating_webhook_configurations;
    ValidatingWebhookConfiguration(ValidatingWebhookConfiguration), ADMISSION, validating_webhook_configurations;
    HorizontalPodAutoscaler(HorizontalPodAutoscaler), &["autoscaling/v2", "autoscaling/v1", "autoscaling/v2beta2"], horizontal_pod_autoscalers;
    PodDisruptionBudget(PodDisruptionBudget), &["policy/v1", "policy/v1beta1"], pod_disruption_budgets;
    NetworkPolicy(NetworkPolicy), &["networking.k8s.io/v1"], network_policies;
    Endpoints(Endpoints), &["v1"], endpoints;
    EndpointSlice(EndpointSlice), &["discovery.k8s.io/v1"], endpoint_slices;
    LimitRange(LimitRange), &["v1"], limit_ranges;
    ResourceQuota(ResourceQuota), &["v1"], resource_quotas;
    PersistentVolumeClaim(PersistentVolumeClaim), &["v1"], persistent_volume_claims;
    IngressClass(IngressClass), &["networking.k8s.io/v1"], ingress_classes;
    CSIDriver(CSIDriver), &["storage.k8s.io/v1"], csi_drivers;
    IstioOperator(IstioOperator), &["install.istio.io/v1alpha1"], istio_operators;
    /// An object of a kind a CustomResourceDefinition in the same manifests defines (any
    /// apiVersion that CRD serves); the loader makes these, never a `kind: CustomObject`.
    CustomObject(CustomObject), &[], custom_objects;
}

/// The kinds without a namespace: the one place that says so (the loader and
/// [`Resource::is_namespaced`] ask it). Istio's Gateway and the Gateway API's share the
/// `Gateway` kind string, and both are namespaced.
pub(crate) fn cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace"
            | "GatewayClass"
            | "ClusterAnalysisTemplate"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "CustomResourceDefinition"
            | "MutatingWebhookConfiguration"
            | "ValidatingWebhookConfiguration"
            | "IngressClass"
            | "CSIDriver"
    )
}

fn prune(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, prune(v)))
                .filter(|(_, v)| match v {
                    Value::Null => false,
                    Value::Array(a) => !a.is_empty(),
                    Value::Object(o) => !o.is_empty(),
                    _ => true,
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(prune).collect()),
        other => other,
    }
}

impl Resource {
    /// `metadata.name` (empty when unset).
    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    /// The namespace the object lives in: `metadata.namespace`, or `default` when unset;
    /// empty for cluster-scoped kinds (Namespace, ClusterAnalysisTemplate). The raw value is
    /// `self.metadata().namespace`.
    pub fn namespace(&self) -> &str {
        if !self.is_namespaced() {
            return "";
        }
        self.metadata()
            .namespace
            .as_deref()
            .unwrap_or(DEFAULT_NAMESPACE)
    }

    /// False for cluster-scoped kinds.
    pub fn is_namespaced(&self) -> bool {
        !cluster_scoped(self.kind())
    }

    /// `Kind namespace/name` (`Kind name` for cluster-scoped kinds), as used in messages.
    pub fn display_name(&self) -> String {
        // A custom object is named by its own kind (`Widget ns/w`).
        let kind = match self {
            Resource::CustomObject(o) => o.kind.as_str(),
            _ => self.kind(),
        };
        object_label(
            kind,
            self.is_namespaced().then(|| self.namespace()),
            self.name(),
        )
    }

    /// The API group (`networking.istio.io`; empty for the core group): with the kind, what
    /// tells Istio's Gateway from the Gateway API's.
    pub fn group(&self) -> &str {
        self.api_version().split_once('/').map_or("", |(g, _)| g)
    }

    /// Whether this is an Istio kind (networking/security/telemetry.istio.io).
    pub fn is_istio(&self) -> bool {
        self.api_version().contains(".istio.io/")
    }
}

pub(crate) fn object_label(kind: &str, namespace: Option<&str>, name: &str) -> String {
    let name = if name.is_empty() { "<no name>" } else { name };
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    }
}

/// One object and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The file and the line where the document starts (its `---` or first line).
    pub source: Source,
    pub resource: Resource,
    /// Field path -> line, for messages about a particular field.
    pub lines: LineIndex,
}

impl Document {
    /// The line of the field at `path` (e.g. `spec.http[0].retries`), or of its nearest
    /// ancestor present in the YAML.
    pub fn line_of(&self, path: &str) -> usize {
        self.lines.line_of(path)
    }

    /// `file:line` of the field at `path`.
    pub fn source_of(&self, path: &str) -> Source {
        Source {
            file: self.source.file.clone(),
            line: self.line_of(path),
        }
    }
}

/// Everything loaded from a file, a directory or a string, in load order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifests {
    pub documents: Vec<Document>,
}

impl Manifests {
    pub fn iter(&self) -> std::slice::Iter<'_, Document> {
        self.documents.iter()
    }

    pub fn len(&self) -> usize {
        self.documents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }

    /// Adds `other`'s documents after these.
    pub fn extend(&mut self, other: Manifests) {
        self.documents.extend(other.documents);
    }

    /// Every object of kind `T`: `manifests.of::<skein_api::networking::VirtualService>()`.
    pub fn of<T: ResourceKind>(&self) -> impl Iterator<Item = &T> {
        self.documents
            .iter()
            .filter_map(|d| T::from_resource(&d.resource))
    }

    /// Every object of kind `T` with its document (for `file:line`).
    pub fn docs_of<T: ResourceKind>(&self) -> impl Iterator<Item = (&Document, &T)> {
        self.documents
            .iter()
            .filter_map(|d| T::from_resource(&d.resource).map(|r| (d, r)))
    }

    /// The object of kind `T` called `name` in `namespace` (`default` matches an unset
    /// namespace).
    pub fn get<T: ResourceKind>(&self, namespace: &str, name: &str) -> Option<&T> {
        self.of::<T>().find(|o| {
            let m = o.metadata();
            m.name == name && (cluster_scoped(T::KIND) || m.namespace_or_default() == namespace)
        })
    }
}

impl<'a> IntoIterator for &'a Manifests {
    type Item = &'a Document;
    type IntoIter = std::slice::Iter<'a, Document>;
    fn into_iter(self) -> Self::IntoIter {
        self.documents.iter()
    }
}
