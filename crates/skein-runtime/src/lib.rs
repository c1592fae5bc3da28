//! The local runtime behind `skein up`: it plays the kubelet (one process per container, with
//! restarts and readiness probes), kube-proxy (a loopback "cluster IP" per Service), cluster
//! DNS (a hosts file) and the ingress controller, all from the same manifests a cluster takes.
//! See docs/local-runtime.md for the contract with workloads.
//!
//! # Layout
//!
//! A run is planned first (nothing starts until the whole plan is sound), then run.
//!
//! - `up`: `up()` and `stop()`: load and validate the manifests, bind the ports, plan, start
//!   everything, write the status; `Running` until shutdown.
//! - `plan/`: manifests to a `Plan` (pure, except for looking up programs). `mod.rs` holds
//!   the plan's types.
//!   - `build`: the whole plan: Services, then pods (the mesh's first), then endpoints and routes.
//!   - `manifests`: the workloads, Services and ConfigMap/Secret data, as planning reads them.
//!   - `pod`: one pod: downward-API facts, containers, program lookup, readiness probe.
//!   - `env`: a container's environment: `env`, `envFrom`, `$(VAR)`, the downward API.
//!   - `mesh`: sidecars, `istiod` and the ingress gateway pod; the mesh's addresses and ports.
//!   - `database`: the database stand-in: SQLite or MariaDB, and SQLite's rewritten URLs.
//!   - `ingress`: `IngressRoute`: the Ingress rules, ordered, and how a request matches one.
//!   - `prometheus`: the Prometheus pod, its generated config, and Istio's scrape
//!     annotations with the sidecar's metrics merging.
//! - `run/`: the kubelet's part.
//!   - `supervisor`: `Pods`: one process per container, restarts, readiness, ready endpoints.
//!   - `process`: signals, liveness and start times of processes (through `rustix`).
//!   - `logs`: containers' logs, rotated by size.
//!   - `state`: the state directory's files and the loopback addresses kept across runs.
//!   - `status`: the status document `skein status` reads.
//! - `kube/`: the cluster's networking, on loopback.
//!   - `services`: kube-proxy: a listener per Service port, round robin to ready endpoints.
//!   - `ingress`: ingress-nginx: the Ingress over HTTP and HTTPS when the mesh is off.
//!   - `dns`: cluster DNS: the hosts files.
//! - `analysis/`: Argo Rollouts' analysis engine: AnalysisRuns measured against Prometheus
//!   (the Rollout controller's `prepare`/`start`, and the AnalysisRun objects of the
//!   manifests).
//! - `mysql`: a local MariaDB for `mysql:*` images, and `TestServer` for tests.
//! - `client`: `http_get`, the one HTTP GET of the runtime and the CLI.
//! - `prom`: the Prometheus HTTP API client of the CLI and the dashboard (on `client`).
//! - `rollout/`: the Argo Rollouts controller: one task per Rollout, adding and removing
//!   its revisions' pods through `run::supervisor` and writing the VirtualServices and
//!   DestinationRule it manages into the control plane's `managed` overlay.
//! - `clock`: the wall clock as RFC 3339.
//! - `tls`: the ingress's self-signed certificate.
//! - `naming`: pods' Kubernetes-style names, the hash behind them, and the check a name
//!   passes before it becomes a path.
//! - `fs`: owner-only files and directories, and the executable check.
//!
//! Dependencies point one way: `up` → `rollout` → `kube` → `run::supervisor` → `plan` → `run::state`;
//! nothing imports `up`, and inside `plan` it is `build` → `pod` → `env` → `database` →
//! `manifests` (`scripts/module-cycles` checks there is no cycle).

#![forbid(unsafe_code)]

pub mod analysis;
mod client;
mod clock;
mod fs;
mod kube;
mod live_config;
pub mod mysql;
mod naming;
mod plan;
pub mod prom;
pub mod rollout;
mod run;
mod tls;
mod up;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use client::{HttpGetError, http_get, http_get_bounded};
pub use naming::rollout_template_hash;
pub use plan::DatabaseMode;
pub use plan::mesh::{ADMIN_PORT, CONTROL_PORT, OUTBOUND_HTTP_PORT};
pub use plan::prometheus::DEFAULT_SCRAPE_INTERVAL;
pub use run::logs::{LOG_FILES_ENV, LOG_MAX_SIZE_ENV, LogRotation, LogRotationError};
pub use run::requests::{Request, refusal as request_refusal, submit as submit_request};
pub use run::restart::RestartError;
pub use run::state::StateDir;
pub use run::status::{
    ContainerStatus, DashboardStatus, DatabaseStatus, IngressStatus, PodStatus, PrometheusStatus,
    ProxyStatus, RestartStatus, ServiceStatus, Status, SupervisorStatus, TracingStatus,
};
pub use up::{NotOurs, Running, Stopped, UpOptions, mesh_synced, stop, up};

/// Why `skein up` (or reading its state) failed. Each message includes the underlying error
/// and no variant returns it again from `source()`, so a chain printer shows it once.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{}", .0.join("\n"))]
    Manifests(Vec<String>),
    #[error("{}", .0.join("\n"))]
    Plan(Vec<String>),
    #[error(
        "{what}: {addr} is already in use ({error}); stop whatever listens there or choose another port"
    )]
    Bind {
        what: String,
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {reason}; remove it to start over", path.display())]
    CorruptState { path: PathBuf, reason: String },
    #[error("skein is already running from {} (pid {pid}); run `skein down` first", state.display())]
    AlreadyRunning { state: PathBuf, pid: u32 },
    #[error("no more loopback addresses in this state directory's subnet (254 pods or services)")]
    AddressesExhausted,
    #[error("ingress TLS: {0}")]
    Tls(String),
}

impl RuntimeError {
    pub fn io(path: &Path, error: std::io::Error) -> RuntimeError {
        RuntimeError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_busy_port_is_said_once() {
        let busy = || std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let e = RuntimeError::Bind {
            what: "ingress (HTTP)".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            error: busy(),
        };
        assert!(e.to_string().contains(&busy().to_string()));
        assert!(e.source().is_none());
        let e = RuntimeError::io(Path::new("/x"), busy());
        assert!(e.source().is_none());
        let e = mysql::MysqlError::Io {
            context: "cannot write /x".into(),
            error: busy(),
        };
        assert!(e.to_string().contains(&busy().to_string()));
        assert!(e.source().is_none());
    }
}
