//! Kubernetes kinds a bundle carries that skein keeps as written but does not model field by
//! field: RBAC, CustomResourceDefinitions, admission webhooks, autoscalers, disruption
//! budgets, network policies, endpoints, quotas and limits, volume claims, ingress classes,
//! and objects of a kind a CustomResourceDefinition of the same bundle defines. They load
//! (`metadata` is checked as for every object), `skein get` shows them, and they have no
//! effect on the local runtime; `skein analyze` says so where it matters (SKN0301).

use std::collections::BTreeMap;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use crate::types::{ObjectMeta, Opaque};

/// An object kept as written: typed `apiVersion`, `kind` and `metadata`, every other
/// top-level field as it is. `K` only tells the kinds apart.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", bound = "")]
pub struct Kept<K> {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `spec`, `rules`, `subjects`, `roleRef`, `webhooks`, `status`, ...
    #[serde(flatten)]
    pub fields: BTreeMap<String, Opaque>,
    #[serde(skip)]
    marker: PhantomData<K>,
}

macro_rules! kept_kinds {
    ($($(#[$doc:meta])* $name:ident;)*) => {
        /// Marker types for [`Kept`].
        pub mod kinds {
            $(
                $(#[$doc])*
                #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
                pub struct $name;
            )*
        }
        $(
            $(#[$doc])*
            pub type $name = Kept<kinds::$name>;
        )*
    };
}

kept_kinds! {
    /// `rbac.authorization.k8s.io/v1` Role.
    Role;
    /// `rbac.authorization.k8s.io/v1` ClusterRole.
    ClusterRole;
    /// `rbac.authorization.k8s.io/v1` RoleBinding.
    RoleBinding;
    /// `rbac.authorization.k8s.io/v1` ClusterRoleBinding.
    ClusterRoleBinding;
    /// `apiextensions.k8s.io/v1` CustomResourceDefinition.
    CustomResourceDefinition;
    /// `admissionregistration.k8s.io/v1` MutatingWebhookConfiguration.
    MutatingWebhookConfiguration;
    /// `admissionregistration.k8s.io/v1` ValidatingWebhookConfiguration.
    ValidatingWebhookConfiguration;
    /// `autoscaling/v2` (or `v1`) HorizontalPodAutoscaler.
    HorizontalPodAutoscaler;
    /// `policy/v1` PodDisruptionBudget.
    PodDisruptionBudget;
    /// `networking.k8s.io/v1` NetworkPolicy.
    NetworkPolicy;
    /// `v1` Endpoints.
    Endpoints;
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice;
    /// `v1` LimitRange.
    LimitRange;
    /// `v1` ResourceQuota.
    ResourceQuota;
    /// `v1` PersistentVolumeClaim.
    PersistentVolumeClaim;
    /// `networking.k8s.io/v1` IngressClass.
    IngressClass;
    /// `storage.k8s.io/v1` CSIDriver.
    CSIDriver;
    /// `install.istio.io/v1alpha1` IstioOperator: how istioctl installs Istio.
    IstioOperator;
    /// An object of a kind a CustomResourceDefinition in the same manifests defines; its
    /// own kind is in `kind`.
    CustomObject;
}

impl CustomResourceDefinition {
    /// `spec.group`, `spec.names.kind` and the versions it serves.
    pub fn defines(&self) -> Option<(String, String, Vec<String>)> {
        let spec = self.fields.get("spec")?;
        let group = spec.get("group")?.as_str()?.to_string();
        let kind = spec.get("names")?.get("kind")?.as_str()?.to_string();
        let versions = spec
            .get("versions")
            .and_then(|v| v.as_array())
            .map(|vs| {
                vs.iter()
                    .filter_map(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Some((group, kind, versions))
    }

    /// Whether the CRD's objects are cluster-scoped.
    pub fn is_cluster_scoped(&self) -> bool {
        self.fields
            .get("spec")
            .and_then(|s| s.get("scope"))
            .and_then(|s| s.as_str())
            == Some("Cluster")
    }
}
