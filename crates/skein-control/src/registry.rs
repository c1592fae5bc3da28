//! The registry: which pods exist, where, with which labels, and whether they are ready.
//!
//! On a cluster this is the API server's Pods and EndpointSlices. Locally the runtime is the
//! API server: it writes its status file, and the control plane reads the part of it that
//! describes pods. Only the fields read here are part of that contract; anything else in the
//! file is ignored.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Errors reading the registry. Each variant prints its cause (it is logged with `%e`) and
/// does not return it from `source()`, so it is said once.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The file could not be read.
    #[error("cannot read the registry {path}: {error}")]
    Read { path: String, error: std::io::Error },
    /// The file is not the expected JSON.
    #[error("the registry {path} is not valid: {error}")]
    Parse {
        path: String,
        error: serde_json::Error,
    },
}

/// Every pod the control plane knows of.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Registry {
    /// Pods, sidecar-less ones included (they are endpoints too).
    pub pods: Vec<Pod>,
}

/// One pod, as the control plane needs it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pod {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// The owning Deployment or Rollout.
    pub workload: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.serviceAccountName` (`default` when unset).
    pub service_account: String,
    /// The pod IP: where other pods and Services reach it.
    pub ip: String,
    /// Container ports by name (for Service `targetPort` names).
    pub port_names: BTreeMap<String, u16>,
    /// Whether the pod passes its readiness checks (only ready pods are endpoints).
    pub ready: bool,
    /// The pod's proxy, when it has one (a sidecar or a gateway).
    pub proxy: Option<ProxyInfo>,
    /// Lowercase hex SHA-256 of the pod's bootstrap token: the secret the runtime wrote
    /// (mode 0600) into the pod's own directory for its proxy, the local stand-in for a
    /// projected ServiceAccount token. The control plane signs a first certificate for this
    /// pod only for a hello that carries the token. None: no token was issued, so only a
    /// current certificate for the pod's identity authenticates its proxy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_token_sha256: Option<String>,
}

/// Where a pod's proxy listens.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyInfo {
    /// `sidecar` or `gateway`.
    pub mode: String,
    /// The address the sidecar binds its outbound listeners on (per-upstream TCP ports).
    pub outbound_ip: Option<String>,
}

impl Registry {
    /// Reads the registry from the runtime's status file, plus one-off pods (`skein exec`):
    /// one JSON [`Pod`] per file in the `registry.d` directory beside it.
    pub fn read(path: &Path) -> Result<Registry, RegistryError> {
        let text = std::fs::read(path).map_err(|error| RegistryError::Read {
            path: path.display().to_string(),
            error,
        })?;
        let mut reg: Registry =
            serde_json::from_slice(&text).map_err(|error| RegistryError::Parse {
                path: path.display().to_string(),
                error,
            })?;
        for file in extra_files(path) {
            // A file being written or removed right now is picked up on the next change.
            if let Ok(pod) = std::fs::read(&file)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_slice::<Pod>(&t).map_err(|e| e.to_string()))
            {
                reg.pods.push(pod);
            }
        }
        Ok(reg)
    }

    /// Changes whenever the status file or a one-off pod file changes.
    pub fn stamp(path: &Path) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
        std::iter::once(path.to_path_buf())
            .chain(extra_files(path))
            .map(|p| {
                let m = std::fs::metadata(&p).ok();
                let stamp = (
                    m.as_ref().and_then(|m| m.modified().ok()),
                    m.map_or(0, |m| m.len()),
                );
                (p, stamp.0, stamp.1)
            })
            .collect()
    }

    /// The pod called `name` (pod names are unique across namespaces locally).
    pub fn pod(&self, name: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.name == name)
    }
}

/// The one-off pods' directory beside the status file.
pub fn extra_dir(status_file: &Path) -> PathBuf {
    status_file.with_file_name("registry.d")
}

fn extra_files(status_file: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(extra_dir(status_file))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// Lowercase hex SHA-256 of a bootstrap token, as [`Pod::bootstrap_token_sha256`] holds it.
pub fn token_sha256(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Pod {
    /// Whether `token` is this pod's bootstrap token, compared in constant time (on the
    /// hashes, so neither the token's length nor its content shows in the timing).
    pub fn token_matches(&self, token: &str) -> bool {
        let Some(expected) = &self.bootstrap_token_sha256 else {
            return false;
        };
        let given = token_sha256(token);
        let (a, b) = (given.as_bytes(), expected.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The pod IP, parsed.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip.parse().ok()
    }

    /// Whether every `selector` label is on this pod (an empty selector selects nothing).
    pub fn selected_by(&self, selector: &BTreeMap<String, String>) -> bool {
        !selector.is_empty() && self.has_labels(selector)
    }

    /// Whether every label of `labels` is on this pod (an empty set is always true).
    pub fn has_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        labels.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}
