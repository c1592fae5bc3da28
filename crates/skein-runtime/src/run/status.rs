//! What `skein status` reads: the supervisor writes one JSON document into the state directory
//! whenever something changes, atomically (write to a temporary file, then rename).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::RuntimeError;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    /// The manifests directory the runtime was started on.
    pub manifests: String,
    pub supervisor: SupervisorStatus,
    pub ingress: IngressStatus,
    pub database: DatabaseStatus,
    pub pods: Vec<PodStatus>,
    pub services: Vec<ServiceStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SupervisorStatus {
    pub pid: u32,
    /// `starting`, `running` or `stopping`.
    pub state: String,
    pub started_at: String,
    pub log: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IngressStatus {
    pub http: String,
    pub https: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DatabaseStatus {
    /// `sqlite` or `mysql`.
    pub mode: String,
    /// The SQLite file or the MySQL service standing for the manifests' database.
    pub location: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PodStatus {
    pub name: String,
    pub namespace: String,
    pub workload: String,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub service_account: String,
    pub ip: String,
    pub ports: Vec<u16>,
    /// Container ports by name (what a Service's named `targetPort` resolves to).
    #[serde(default)]
    pub port_names: BTreeMap<String, u16>,
    /// The pid of the pod's main (first) container, 0 while it is not running.
    pub pid: u32,
    /// `Pending`, `Running`, `Ready`, `CrashLoopBackOff` or `Terminated`.
    pub state: String,
    pub ready: bool,
    pub restarts: u32,
    /// The main container's log file.
    pub logs: String,
    pub containers: Vec<ContainerStatus>,
    /// The pod's proxy: its sidecar, or the gateway itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProxyStatus {
    /// `sidecar` or `gateway`.
    pub mode: String,
    pub pid: u32,
    /// `http://ADDR` of the admin endpoint (/ready, /config_dump, /stats/prometheus).
    pub admin: String,
    /// The sidecar's outbound address (its per-port TCP listeners) and HTTP proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_http: Option<String>,
    /// The app's own address behind the sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_ip: Option<String>,
    /// The config version the proxy acknowledged (from the control plane).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_version: Option<String>,
    /// Whether the proxy is connected to the control plane now.
    #[serde(default)]
    pub connected: bool,
}
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ContainerStatus {
    pub name: String,
    pub pid: u32,
    pub state: String,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub logs: String,
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServiceStatus {
    pub name: String,
    pub namespace: String,
    pub cluster_ip: String,
    pub ports: Vec<u16>,
    pub endpoints: Vec<String>,
}

impl Status {
    pub fn read(path: &Path) -> Result<Status, RuntimeError> {
        let text = std::fs::read_to_string(path).map_err(|e| RuntimeError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| RuntimeError::CorruptState {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    pub fn write(&self, path: &Path) -> Result<(), RuntimeError> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).map_err(|e| RuntimeError::CorruptState {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        std::fs::write(&tmp, text).map_err(|e| RuntimeError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| RuntimeError::io(path, e))
    }

    pub fn all_ready(&self) -> bool {
        !self.pods.is_empty() && self.pods.iter().all(|p| p.ready)
    }
}
