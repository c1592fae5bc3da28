//! skein's resource model: the Kubernetes and Istio objects users already have, loaded from
//! YAML unchanged, with `file:line` and the field path in every error, and validated with
//! Istio's and Kubernetes' own messages.
//!
//! Layout: the kinds, one module per API group (`k8s`, `networking`, `security`,
//! `telemetry`), with `resource` holding the `Resource` sum and `types` the shared field types;
//! `load` (with `lines` for positions) turns YAML documents into resources; `validate` checks
//! them, one module per API group plus `cross` for checks across objects.
//!
//! ```
//! let m = skein_api::load_str(
//!     "-",
//!     "apiVersion: v1\nkind: Namespace\nmetadata: {name: blog-system, labels: {istio-injection: enabled}}\n",
//! )
//! .unwrap();
//! assert_eq!(m.namespaces().next().unwrap().metadata.name, "blog-system");
//! assert!(skein_api::validate(&m).is_empty());
//! ```

#![forbid(unsafe_code)]

pub mod analysis;
pub mod codes;
pub mod gateway_api;
pub mod gitops;
pub mod k8s;
pub mod k8s_workloads;
pub mod kept;
mod lines;
mod load;
pub mod mesh;
pub mod networking;
mod resource;
pub mod security;
pub mod telemetry;
mod types;
pub mod unapplied;
mod validate;

pub use codes::{Code, Severity};
pub use lines::LineIndex;
pub use load::{
    LoadError, LoadErrors, Source, load_path, load_path_partial, load_str, load_str_partial,
};
pub use resource::{Document, KINDS, Manifests, Resource, ResourceKind};
pub use types::{
    Duration, DurationError, IntOrString, LabelSelector, LabelSelectorRequirement, Labels, Object,
    ObjectMeta, Opaque, Percent, PolicyTargetReference, WorkloadSelector,
};
pub use validate::{Diagnostic, validate};

/// The namespace of an object without `metadata.namespace`.
pub const DEFAULT_NAMESPACE: &str = "default";
