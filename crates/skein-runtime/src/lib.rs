//! The local runtime behind `skein up`: it plays the kubelet (one process per container, with
//! restarts and readiness probes), kube-proxy (a loopback "cluster IP" per Service), cluster
//! DNS (a hosts file) and the ingress controller, all from the same manifests a cluster takes.
//! See docs/local-runtime.md for the contract with workloads.

#![forbid(unsafe_code)]

mod client;
mod fs;
mod kube;
pub mod mysql;
mod naming;
mod plan;
mod run;
mod tls;
mod up;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use client::{HttpGetError, http_get};
pub use plan::DatabaseMode;
pub use plan::mesh::{ADMIN_PORT, CONTROL_PORT, OUTBOUND_HTTP_PORT};
pub use run::state::StateDir;
pub use run::status::{
    ContainerStatus, DatabaseStatus, IngressStatus, PodStatus, ProxyStatus, ServiceStatus, Status,
    SupervisorStatus,
};
pub use up::{Running, UpOptions, mesh_synced, stop, up};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{}", .0.join("\n"))]
    Manifests(Vec<String>),
    #[error("{}", .0.join("\n"))]
    Plan(Vec<String>),
    #[error(
        "{what}: {addr} is already in use ({source}); stop whatever listens there or choose another port"
    )]
    Bind {
        what: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
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
    pub fn io(path: &Path, source: std::io::Error) -> RuntimeError {
        RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
