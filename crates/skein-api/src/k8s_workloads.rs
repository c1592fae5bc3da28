//! Kubernetes workload kinds besides Deployment: Pod, StatefulSet, DaemonSet, Job and
//! CronJob, with the upstream field names. Their pod templates are the same [`PodSpec`] as a
//! Deployment's, so the local runtime runs them the same way.

use serde::{Deserialize, Serialize};

use crate::k8s::{PodSpec, PodTemplateSpec, WorkloadSpec};
use crate::types::{LabelSelector, Object, ObjectMeta, Opaque};

/// `v1` Pod.
pub type Pod = Object<PodSpec>;
/// `apps/v1` StatefulSet.
pub type StatefulSet = Object<StatefulSetSpec>;
/// `apps/v1` DaemonSet.
pub type DaemonSet = Object<DaemonSetSpec>;
/// `batch/v1` Job.
pub type Job = Object<JobSpec>;
/// `batch/v1` CronJob.
pub type CronJob = Object<CronJobSpec>;

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StatefulSetSpec {
    pub replicas: Option<i32>,
    pub selector: Option<LabelSelector>,
    pub template: PodTemplateSpec,
    pub service_name: Option<String>,
    pub volume_claim_templates: Vec<Opaque>,
    /// `OrderedReady` (the default) or `Parallel`.
    pub pod_management_policy: Option<String>,
    pub update_strategy: Option<Opaque>,
    pub revision_history_limit: Option<i32>,
    pub min_ready_seconds: Option<i32>,
    pub persistent_volume_claim_retention_policy: Option<Opaque>,
    pub ordinals: Option<Opaque>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DaemonSetSpec {
    pub selector: Option<LabelSelector>,
    pub template: PodTemplateSpec,
    pub update_strategy: Option<Opaque>,
    pub min_ready_seconds: Option<i32>,
    pub revision_history_limit: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct JobSpec {
    pub parallelism: Option<i32>,
    pub completions: Option<i32>,
    pub active_deadline_seconds: Option<i64>,
    pub backoff_limit: Option<i32>,
    pub backoff_limit_per_index: Option<i32>,
    pub max_failed_indexes: Option<i32>,
    pub selector: Option<LabelSelector>,
    pub manual_selector: Option<bool>,
    pub template: PodTemplateSpec,
    pub ttl_seconds_after_finished: Option<i32>,
    pub completion_mode: Option<String>,
    pub suspend: Option<bool>,
    pub pod_failure_policy: Option<Opaque>,
    pub success_policy: Option<Opaque>,
    pub pod_replacement_policy: Option<String>,
    pub managed_by: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CronJobSpec {
    pub schedule: String,
    pub time_zone: Option<String>,
    pub starting_deadline_seconds: Option<i64>,
    /// `Allow`, `Forbid` or `Replace`.
    pub concurrency_policy: Option<String>,
    pub suspend: Option<bool>,
    pub job_template: JobTemplateSpec,
    pub successful_jobs_history_limit: Option<i32>,
    pub failed_jobs_history_limit: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct JobTemplateSpec {
    pub metadata: ObjectMeta,
    /// Boxed: a CronJob holds a Job's spec inside its own.
    pub spec: Box<JobSpec>,
}

impl StatefulSetSpec {
    pub fn as_workload(&self) -> WorkloadSpec<'_> {
        WorkloadSpec {
            replicas: self.replicas,
            selector: self.selector.as_ref(),
            template: &self.template,
        }
    }
}

impl DaemonSetSpec {
    /// One pod: the local runtime is one node.
    pub fn as_workload(&self) -> WorkloadSpec<'_> {
        WorkloadSpec {
            replicas: Some(1),
            selector: self.selector.as_ref(),
            template: &self.template,
        }
    }
}
