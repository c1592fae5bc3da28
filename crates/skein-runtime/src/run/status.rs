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
    /// Whether the supervisor is running; false once it stopped (or died), when the rest
    /// is the last known state.
    #[serde(default)]
    pub running: bool,
    /// When it stopped (RFC 3339), if it stopped cleanly or `skein down` saw it gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    pub supervisor: SupervisorStatus,
    pub ingress: IngressStatus,
    pub database: DatabaseStatus,
    pub pods: Vec<PodStatus>,
    pub services: Vec<ServiceStatus>,
    /// The mesh's Prometheus (absent without the mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusStatus>,
    /// The mesh's tracing store (absent without the mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingStatus>,
    /// The dashboard (absent without the mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<DashboardStatus>,
    /// Restarts asked for by `skein rollout restart`, the latest per workload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<RestartStatus>,
}

/// One `skein rollout restart` of a workload: kubectl's `restartedAt` annotation and the
/// rollout it starts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RestartStatus {
    /// `Deployment` or `Rollout`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The request that asked for it.
    pub request: String,
    /// RFC 3339, as kubectl's `kubectl.kubernetes.io/restartedAt`.
    pub restarted_at: String,
    /// The pod generation this restart brings every pod of the workload to.
    pub generation: u64,
    /// `Progressing`, `Complete` or `Failed`.
    pub state: String,
    /// What happened, pod by pod (`replaced web-abc (pid 10 -> 42)`).
    #[serde(default)]
    pub events: Vec<String>,
}

/// The dashboard, Kiali's stand-in (Service `kiali` in istio-system, port 20001).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DashboardStatus {
    /// `http://ADDR/`: the page, and its API under `/api`.
    pub url: Option<String>,
}

/// The tracing store, Jaeger's stand-in (Services `jaeger-collector`, `zipkin` and
/// `tracing` in istio-system).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TracingStatus {
    /// `http://ADDR` of Jaeger's query API (`/api/traces`), what Grafana and Kiali use.
    pub url: Option<String>,
    /// Where spans go: the Zipkin v2 receiver (`http://ADDR/api/v2/spans`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<String>,
    /// The OTLP/HTTP receiver (`http://ADDR/v1/traces`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp: Option<String>,
    /// The address proxies are configured with (Istio's mesh config `zipkin.address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PrometheusStatus {
    /// `http://ADDR` of its UI and HTTP API (`/api/v1/query`); None when it does not run.
    pub url: Option<String>,
    /// Its generated config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// Its data directory (in the state directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// How often it scrapes, as Prometheus writes durations (`15s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape_interval: Option<String>,
    /// Why it does not run, and how to get it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SupervisorStatus {
    pub pid: u32,
    /// `starting`, `running` or `stopping`.
    pub state: String,
    pub started_at: String,
    pub log: String,
    /// The supervisor's start time in clock ticks after boot (`/proc/PID/stat`), which tells
    /// it apart from a later process that reuses its pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proc_start: Option<u64>,
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
    /// `Deployment` or `Rollout`.
    #[serde(default)]
    pub workload_kind: String,
    /// How many times `skein rollout restart` replaced this pod's processes.
    #[serde(default)]
    pub generation: u64,
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
    /// `Pending`, `Running`, `Ready`, `CrashLoopBackOff`, `Terminated`, or `Stopped` once skein
    /// is not running.
    pub state: String,
    pub ready: bool,
    pub restarts: u32,
    /// The main container's log file.
    pub logs: String,
    pub containers: Vec<ContainerStatus>,
    /// The pod's proxy: its sidecar, or the gateway itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyStatus>,
    /// SHA-256 (hex) of the pod's bootstrap token (the token itself is only in the pod's own
    /// directory, mode 0600); the control plane reads it from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_token_sha256: Option<String>,
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
    /// ConfigMap and Secret volumes: `mountPath` -> where its files are (in the pod's state
    /// directory); `command`, `args` and `env` are rewritten to these paths.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mounts: BTreeMap<String, String>,
    /// The process's start time in clock ticks after boot, recorded at spawn: `skein down`
    /// signals `pid` only while it is still this process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proc_start: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServiceStatus {
    pub name: String,
    pub namespace: String,
    pub cluster_ip: String,
    pub ports: Vec<u16>,
    pub endpoints: Vec<String>,
}

impl PodStatus {
    /// A pod that ran to completion (a Job's): it is not expected to be ready.
    pub fn finished(&self) -> bool {
        matches!(self.state.as_str(), "Succeeded" | "Failed")
    }
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
        // Owner-only: commands may carry values from Secrets.
        crate::fs::write_private(&tmp, &text).map_err(|e| RuntimeError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| RuntimeError::io(path, e))
    }

    pub fn all_ready(&self) -> bool {
        !self.pods.is_empty() && self.pods.iter().all(|p| p.ready || p.finished())
    }

    /// The status of a system that is not running: nothing ready, no pids, no endpoints.
    /// `at` is when it stopped, if known and not recorded yet.
    pub fn mark_stopped(&mut self, at: Option<String>) {
        self.running = false;
        if self.stopped_at.is_none() {
            self.stopped_at = at;
        }
        self.supervisor.state = "stopped".into();
        for pod in &mut self.pods {
            pod.state = "Stopped".into();
            pod.ready = false;
            pod.pid = 0;
            for c in &mut pod.containers {
                c.pid = 0;
                c.proc_start = None;
                if c.state != "Terminated" {
                    c.state = "Stopped".into();
                }
            }
            if let Some(p) = &mut pod.proxy {
                p.pid = 0;
                p.connected = false;
            }
        }
        for s in &mut self.services {
            s.endpoints.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_status() -> Status {
        Status {
            running: true,
            supervisor: SupervisorStatus {
                pid: 42,
                state: "running".into(),
                ..SupervisorStatus::default()
            },
            pods: vec![PodStatus {
                name: "web-1".into(),
                pid: 7,
                state: "Ready".into(),
                ready: true,
                containers: vec![ContainerStatus {
                    name: "web".into(),
                    pid: 7,
                    state: "Running".into(),
                    proc_start: Some(1),
                    ..ContainerStatus::default()
                }],
                ..PodStatus::default()
            }],
            services: vec![ServiceStatus {
                endpoints: vec!["127.1.1.1:80".into()],
                ..ServiceStatus::default()
            }],
            ..Status::default()
        }
    }

    #[test]
    fn a_stopped_status_says_so_and_nothing_is_ready() {
        let mut s = ready_status();
        s.mark_stopped(Some("2024-01-01T00:00:00Z".into()));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["running"], false);
        assert_eq!(v["stopped_at"], "2024-01-01T00:00:00Z");
        assert_eq!(v["supervisor"]["state"], "stopped");
        assert_eq!(v["pods"][0]["state"], "Stopped");
        assert_eq!(v["pods"][0]["ready"], false);
        assert_eq!(v["pods"][0]["pid"], 0);
        assert_eq!(v["pods"][0]["containers"][0]["pid"], 0);
        assert!(!s.all_ready());
        assert!(s.services[0].endpoints.is_empty());
        s.mark_stopped(Some("later".into()));
        assert_eq!(
            s.stopped_at.as_deref(),
            Some("2024-01-01T00:00:00Z"),
            "kept"
        );
    }

    #[test]
    fn the_status_file_is_owner_only_and_reads_back() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("status.json");
        let s = ready_status();
        s.write(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Status::read(&path).unwrap(), s);
    }

    #[test]
    fn a_status_file_without_the_new_fields_still_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("status.json");
        let mut v = serde_json::to_value(ready_status()).unwrap();
        let obj = v.as_object_mut().unwrap();
        obj.remove("running");
        std::fs::write(&path, v.to_string()).unwrap();
        assert!(!Status::read(&path).unwrap().running);
    }
}
