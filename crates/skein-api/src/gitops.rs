//! Argo CD's kinds (`argoproj.io/v1alpha1`): `Application`, the GitOps unit skein syncs from
//! a local git repository, and `AppProject`, which is loaded and kept (skein has one project's
//! worth of policy: none).
//!
//! The fields skein acts on are typed with Argo CD's names; the rest of an Application (Helm,
//! Kustomize, plugins, retry, several sources) is [`Opaque`] so that real manifests load.

use serde::{Deserialize, Serialize};

use crate::types::{Object, Opaque};

/// `argoproj.io/v1alpha1` Application.
pub type Application = Object<ApplicationSpec>;
/// `argoproj.io/v1alpha1` AppProject (loaded, not enforced).
pub type AppProject = Object<Opaque>;

/// An Application's `spec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ApplicationSpec {
    pub project: Option<String>,
    pub source: Option<ApplicationSource>,
    /// Several sources (Argo CD 2.6+): not synced by skein; kept.
    pub sources: Option<Opaque>,
    pub destination: ApplicationDestination,
    pub sync_policy: Option<SyncPolicy>,
    pub ignore_differences: Vec<ResourceIgnoreDifferences>,
    pub info: Option<Opaque>,
    pub revision_history_limit: Option<i64>,
    pub source_hydrator: Option<Opaque>,
}

/// `spec.source`: where the manifests are.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ApplicationSource {
    /// A local repository: a path (relative to the Application's file) or `file://`.
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    /// `HEAD` (the default), a branch, a tag or a commit.
    pub target_revision: Option<String>,
    /// The directory inside the repository (the default: its root).
    pub path: Option<String>,
    pub chart: Option<String>,
    pub helm: Option<Opaque>,
    pub kustomize: Option<Opaque>,
    pub directory: Option<Opaque>,
    pub plugin: Option<Opaque>,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    pub name: Option<String>,
}

/// `spec.destination`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ApplicationDestination {
    pub server: Option<String>,
    pub name: Option<String>,
    /// The namespace of the objects that name none.
    pub namespace: Option<String>,
}

/// `spec.syncPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SyncPolicy {
    /// Automated sync; absent means manual sync (skein then syncs only at `skein up`).
    pub automated: Option<SyncPolicyAutomated>,
    pub sync_options: Vec<String>,
    pub retry: Option<Opaque>,
    pub managed_namespace_metadata: Option<Opaque>,
}

/// `spec.syncPolicy.automated`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SyncPolicyAutomated {
    /// Remove objects the commit no longer has (Argo CD's default: false).
    pub prune: Option<bool>,
    /// Revert live changes that differ from git after the self-heal timeout (default: false).
    pub self_heal: Option<bool>,
    pub allow_empty: Option<bool>,
    /// Argo CD 3.x: `automated.enabled: false` turns automation off while keeping the rest.
    pub enabled: Option<bool>,
}

/// One entry of `spec.ignoreDifferences`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ResourceIgnoreDifferences {
    /// The API group (empty: the core group).
    pub group: Option<String>,
    pub kind: String,
    pub name: Option<String>,
    pub namespace: Option<String>,
    /// RFC 6901 pointers of the fields left out of the comparison.
    pub json_pointers: Vec<String>,
    /// jq paths; skein reads the simple ones (`.spec.a.b`, `.spec.http[0]`).
    pub jq_path_expressions: Vec<String>,
    /// Not applied by skein (there is no field manager); kept.
    pub managed_fields_managers: Vec<String>,
}

impl SyncPolicy {
    fn automation(&self) -> Option<&SyncPolicyAutomated> {
        self.automated.as_ref().filter(|a| a.enabled != Some(false))
    }
}

impl ApplicationSpec {
    /// Automated sync is on.
    pub fn automated(&self) -> bool {
        self.sync_policy
            .as_ref()
            .and_then(SyncPolicy::automation)
            .is_some()
    }

    /// `automated.prune`.
    pub fn prune(&self) -> bool {
        self.sync_policy
            .as_ref()
            .and_then(SyncPolicy::automation)
            .and_then(|a| a.prune)
            .unwrap_or(false)
    }

    /// `automated.selfHeal`.
    pub fn self_heal(&self) -> bool {
        self.sync_policy
            .as_ref()
            .and_then(SyncPolicy::automation)
            .and_then(|a| a.self_heal)
            .unwrap_or(false)
    }

    /// Whether `syncOptions` has `NAME=true` (Argo CD's `Prune=false`-style options).
    pub fn sync_option(&self, name: &str) -> Option<String> {
        self.sync_policy.as_ref().and_then(|p| {
            p.sync_options.iter().find_map(|o| {
                o.split_once('=')
                    .filter(|(k, _)| k.trim() == name)
                    .map(|(_, v)| v.trim().to_string())
            })
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_application_loads_with_argo_cds_field_names() {
        let m = crate::load_str(
            "app.yaml",
            "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: blog-system, namespace: argocd}\nspec:\n  project: default\n  source: {repoURL: file:///srv/git/blog, targetRevision: main, path: k8s}\n  destination: {server: https://kubernetes.default.svc, namespace: blog-system}\n  syncPolicy:\n    automated: {prune: true, selfHeal: true}\n    syncOptions: [CreateNamespace=true]\n  ignoreDifferences:\n  - group: networking.istio.io\n    kind: VirtualService\n    jsonPointers: [/spec/http/0]\n---\napiVersion: argoproj.io/v1alpha1\nkind: AppProject\nmetadata: {name: default, namespace: argocd}\nspec: {sourceRepos: ['*']}\n",
        )
        .unwrap();
        let app = m.applications().next().unwrap();
        assert_eq!(
            app.spec.source.as_ref().unwrap().repo_url,
            "file:///srv/git/blog"
        );
        assert!(app.spec.prune() && app.spec.self_heal() && app.spec.automated());
        assert_eq!(
            app.spec.sync_option("CreateNamespace").as_deref(),
            Some("true")
        );
        assert_eq!(
            app.spec.ignore_differences[0].json_pointers,
            ["/spec/http/0"]
        );
        assert_eq!(m.app_projects().count(), 1);
    }

    #[test]
    fn a_misspelled_field_is_an_error() {
        let err = crate::load_str(
            "app.yaml",
            "apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: a}\nspec:\n  syncPolicy:\n    automated: {selfheal: true}\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("selfheal"), "{err}");
    }
}
