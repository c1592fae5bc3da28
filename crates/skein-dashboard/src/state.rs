//! What the dashboard reads from the state directory, once per request: the runtime's status
//! file (pods, proxies, Services), the control plane's status file (config version, acks,
//! the last refused change), the manifests the control plane loads (the manifests directory,
//! the runtime's addons and what `skein apply` added, with `file:line`), their diagnostics
//! from `skein_api::validate` (what `skein analyze` prints), and a change `skein apply`
//! refused.

use std::path::{Path, PathBuf};

use skein_api::{Diagnostic, Manifests};
use skein_runtime::{StateDir, Status};

/// Why the state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("nothing has run from {0} yet (no status file); start the mesh with `skein up DIR`")]
    NotStarted(PathBuf),
    #[error("{0}")]
    Runtime(#[from] skein_runtime::RuntimeError),
}

/// One read of everything.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub status: Status,
    pub control: Option<skein_control::ControlStatus>,
    /// Every object the control plane loads (merged as it merges them).
    pub manifests: Manifests,
    /// Files that did not load (each with `file:line`).
    pub load_errors: Vec<String>,
    /// `skein_api::validate` over `manifests`.
    pub diagnostics: Vec<Diagnostic>,
    /// The last change `skein apply` refused, if it is still the newest word.
    pub refused: Option<crate::refused::Refused>,
    /// Where the manifests came from, to print paths relative to it.
    pub manifests_dir: PathBuf,
    pub applied_dir: PathBuf,
    pub addons_dir: PathBuf,
    /// GitOps: the Application the run syncs (its commit, sync status, drifted objects).
    pub application: Option<skein_control::gitops::AppStatus>,
    /// Each Rollout of the manifests with its controller's status (`crate::rollout`), by
    /// namespace and name.
    pub rollouts: std::collections::BTreeMap<(String, String), serde_json::Value>,
}

impl Snapshot {
    pub fn read(state: &StateDir) -> Result<Snapshot, StateError> {
        let path = state.status_file();
        if !path.exists() {
            return Err(StateError::NotStarted(state.root().to_path_buf()));
        }
        let status = Status::read(&path)?;
        let control = std::fs::read(state.control_status_file())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let store = skein_control::Store {
            managed: Some(state.managed_dir()),
            addons: Some(state.addons_dir()),
            dir: PathBuf::from(&status.manifests),
            applied: Some(state.applied_dir()),
        };
        let (manifests, load_errors) = if status.manifests.is_empty() {
            (Manifests::default(), Vec::new())
        } else {
            store.load_all()
        };
        let diagnostics = skein_api::validate(&manifests);
        let refused = crate::refused::read(state);
        let rollouts = manifests
            .rollouts()
            .map(|r| {
                let ns = r.metadata.namespace_or_default().to_string();
                let name = r.metadata.name.clone();
                let v = crate::rollout::rollout_json(state, &ns, &name);
                ((ns, name), v)
            })
            .collect();
        Ok(Snapshot {
            status,
            control,
            manifests,
            load_errors,
            diagnostics,
            refused,
            manifests_dir: PathBuf::from(&store.dir),
            applied_dir: state.applied_dir(),
            addons_dir: state.addons_dir(),
            application: skein_control::gitops::Layout::new(state.gitops_dir()).read_status(),
            rollouts,
        })
    }

    /// A source file as the page shows it: relative to the directory it was loaded from
    /// (`50-istio-traffic.yaml`, `applied/…`, `addons/…`).
    pub fn display_file(&self, file: &Path) -> String {
        for (dir, prefix) in [
            (&self.manifests_dir, ""),
            (&self.applied_dir, "applied/"),
            (&self.addons_dir, "addons/"),
        ] {
            if let Ok(rest) = file.strip_prefix(dir) {
                let rest = rest.display().to_string();
                if rest.is_empty() {
                    // The manifests "directory" was a single file.
                    break;
                }
                return format!("{prefix}{rest}");
            }
        }
        file.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| file.display().to_string())
    }

    /// The control plane's config version, if it reported one.
    pub fn control_version(&self) -> Option<&str> {
        self.control.as_ref().map(|c| c.version.as_str())
    }
}
