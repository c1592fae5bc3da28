//! From manifests to a plan: which pods run, with which programs, environment and addresses;
//! which services and ingress routes exist. Everything that can be wrong with the manifests or
//! the machine (a missing program, an unsupported fieldRef) is found here, before anything
//! starts.
//!
//! This file holds the plan's types; `build` makes a [`Plan`] from what `manifests` reads,
//! planning each pod in `pod` (its environment in `env`), the mesh's pods and sidecars in
//! `mesh`, the database stand-in in `database` and the ingress routes in `ingress`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use skein_snapshot::names;

use crate::mysql::MariaDbConfig;
use crate::run::state::StateDir;

mod build;
pub(crate) mod dashboard;
mod database;
mod env;
mod ingress;
mod manifests;
pub(crate) mod mesh;
mod pod;
pub(crate) mod prometheus;
pub(crate) mod tracing;
mod volumes;

pub use build::{build, extra_pod};
pub use ingress::IngressRoute;
pub use manifests::ROLLOUT_HASH_LABEL;

/// How the manifests' database runs locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseMode {
    /// An SQLite file per database service stands in for MySQL (the default).
    Sqlite,
    /// The MySQL workload runs as a local MariaDB server.
    Mysql,
}

impl std::fmt::Display for DatabaseMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DatabaseMode::Sqlite => "sqlite",
            DatabaseMode::Mysql => "mysql",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub pods: Vec<PodPlan>,
    pub services: Vec<ServicePlan>,
    pub ingress: Vec<IngressRoute>,
    pub database: DatabasePlan,
    pub hosts: Vec<(Ipv4Addr, Vec<String>)>,
    pub prometheus: PrometheusState,
    /// The tracing store (with the mesh).
    pub tracing: Option<tracing::TracingPlan>,
    /// The dashboard (with the mesh).
    pub dashboard: Option<dashboard::DashboardPlan>,
}

/// Whether the run has a Prometheus.
#[derive(Debug, Clone)]
pub enum PrometheusState {
    /// Without the mesh, as without Istio's addon.
    Off,
    /// The mesh runs but no `prometheus` program was found.
    Missing,
    Planned(prometheus::PrometheusPlan),
}

#[derive(Debug, Clone)]
pub struct DatabasePlan {
    pub mode: DatabaseMode,
    /// Where the data lives: the SQLite files, or the MariaDB pods' data directories.
    pub location: String,
}

#[derive(Debug, Clone)]
pub struct PodPlan {
    pub name: String,
    pub namespace: String,
    pub workload: String,
    /// The workload's kind: `Deployment`, `Rollout`, `StatefulSet`, `DaemonSet`, `Job` or
    /// `Pod` (the mesh's own pods are Deployments).
    pub workload_kind: &'static str,
    pub labels: BTreeMap<String, String>,
    /// `spec.serviceAccountName` (`default` when unset).
    pub service_account: String,
    pub ip: Ipv4Addr,
    /// Where readiness probes go: the pod IP, or the app's own address behind a sidecar.
    pub probe_ip: Ipv4Addr,
    pub ports: Vec<NamedPort>,
    pub containers: Vec<ContainerPlan>,
    pub readiness: Option<Readiness>,
    /// How long the pod gets between SIGTERM and SIGKILL.
    pub grace: std::time::Duration,
    /// A Job's pod runs to completion: its app containers are not started again once they
    /// exit 0, and a failing one is restarted at most this many times (`backoffLimit`). Its
    /// sidecar stops when the app containers are done. `None`: restarted always.
    pub run_to_completion: Option<u32>,
    /// A StatefulSet's pod N (`OrderedReady`) starts once pod N-1 (this name, a live pod
    /// of the run) is ready.
    pub start_after: Option<String>,
    /// The pod's proxy (a sidecar, or the gateway's own).
    pub proxy: Option<ProxyPlan>,
    /// SHA-256 (hex) of the bootstrap token written for the pod's proxy, listed in the
    /// registry so the control plane can tell the pod's proxy from any other process.
    pub bootstrap_token_sha256: Option<String>,
    /// Where Prometheus scrapes the pod (its `prometheus.io/*` annotations, as injection
    /// leaves them), on the pod's IP.
    pub scrape: Option<prometheus::ScrapeTarget>,
    /// The app's own metrics, for the sidecar to merge (the annotations before injection).
    pub app_metrics: Option<prometheus::ScrapeTarget>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub name: Option<String>,
    pub port: u16,
}

#[derive(Debug, Clone)]
pub struct ContainerPlan {
    pub name: String,
    pub run: Run,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    /// ConfigMap and Secret volume mounts: the `mountPath` the manifests give, and the file
    /// or directory in the pod's state directory that holds it (see `volumes`).
    pub mounts: Vec<(String, PathBuf)>,
}

#[derive(Debug, Clone)]
pub enum Run {
    Program {
        program: PathBuf,
        args: Vec<String>,
    },
    /// A `mysql:*` / `mariadb:*` container, run as a local MariaDB server.
    MariaDb(MariaDbConfig),
}

impl Run {
    pub fn describe(&self) -> Vec<String> {
        match self {
            Run::Program { program, args } => std::iter::once(program.display().to_string())
                .chain(args.iter().cloned())
                .collect(),
            Run::MariaDb(cfg) => vec![
                "mariadbd".to_string(),
                format!("--datadir={}", cfg.data_dir.display()),
                format!("--bind-address={}", cfg.bind),
                format!("--port={}", cfg.port),
            ],
        }
    }
}

#[derive(Debug, Clone)]
pub struct Readiness {
    pub check: Check,
    pub initial_delay: std::time::Duration,
    pub period: std::time::Duration,
    pub timeout: std::time::Duration,
    pub failure_threshold: u32,
}

#[derive(Debug, Clone)]
pub enum Check {
    Http { port: u16, path: String },
    Tcp { port: u16 },
}

#[derive(Debug, Clone)]
pub struct ServicePlan {
    pub name: String,
    pub namespace: String,
    pub cluster_ip: Ipv4Addr,
    pub ports: Vec<ServicePortPlan>,
    /// `spec.selector` (empty: selects nothing).
    pub selector: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct ServicePortPlan {
    pub name: Option<String>,
    pub port: u16,
    /// Opaque TCP by Istio's port naming (`tcp-*`, `mysql`, ...): reached through a sidecar's
    /// per-port listener rather than its HTTP proxy.
    pub opaque: bool,
    /// `targetPort` (None: the port itself).
    pub target: Option<ServicePortRef>,
}

impl ServicePlan {
    pub fn port(&self, port: &ServicePortRef) -> Option<&ServicePortPlan> {
        self.ports.iter().find(|p| match port {
            ServicePortRef::Number(n) => p.port == *n,
            ServicePortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
        })
    }

    /// Whether the Service selects `pod`, as Kubernetes' endpoints controller decides.
    pub fn selects(&self, pod: &PodPlan) -> bool {
        pod.namespace == self.namespace
            && !self.selector.is_empty()
            && self
                .selector
                .iter()
                .all(|(k, v)| pod.labels.get(k) == Some(v))
    }

    /// Where port `sp` of this Service reaches `pod`, if it selects the pod and the pod has
    /// the target port.
    pub fn endpoint(&self, sp: &ServicePortPlan, pod: &PodPlan) -> Option<SocketAddr> {
        if !self.selects(pod) {
            return None;
        }
        let target = match &sp.target {
            None => sp.port,
            Some(ServicePortRef::Number(n)) => *n,
            Some(ServicePortRef::Name(n)) => {
                pod.ports
                    .iter()
                    .find(|cp| cp.name.as_deref() == Some(n.as_str()))?
                    .port
            }
        };
        Some(SocketAddr::from((pod.ip, target)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServicePortRef {
    Number(u16),
    Name(String),
}

/// Inputs that are not in the manifests.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub database: Option<DatabaseMode>,
    /// Where programs are looked up first: the directory of the `skein` binary.
    pub program_dirs: Vec<PathBuf>,
    /// Run the mesh: sidecars for injected pods, the control plane and the ingress gateway.
    pub mesh: Option<MeshPlanOptions>,
}

/// What a pod's proxy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// A sidecar in front of the pod's app.
    Sidecar,
    /// The ingress gateway.
    Gateway,
}

impl ProxyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyMode::Sidecar => "sidecar",
            ProxyMode::Gateway => "gateway",
        }
    }
}

/// A pod's proxy, as planned.
#[derive(Debug, Clone)]
pub struct ProxyPlan {
    pub mode: ProxyMode,
    /// Index of the proxy container in the pod.
    pub container: usize,
    /// Admin endpoint (`/ready`, `/config_dump`, `/stats/prometheus`).
    pub admin: SocketAddr,
    /// The app's address (sidecars).
    pub app_ip: Option<Ipv4Addr>,
    /// The outbound address (sidecars).
    pub outbound_ip: Option<Ipv4Addr>,
    /// The app's HTTP_PROXY (sidecars).
    pub outbound_http: Option<SocketAddr>,
}

/// Everything the mesh needs from `skein up`.
#[derive(Debug, Clone)]
pub struct MeshPlanOptions {
    /// The `skein` binary (it runs the proxies and the control plane).
    pub skein: PathBuf,
    /// The manifests directory the control plane watches.
    pub manifests: PathBuf,
    /// The ingress gateway's HTTP and HTTPS addresses.
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// Lifetime of workload certificates (None: Istio's 24 h).
    pub cert_ttl: Option<std::time::Duration>,
    /// A user's own CA in Istio's plug-in layout.
    pub plugin_ca: Option<PathBuf>,
    /// How often Prometheus scrapes (Istio's addon: 15 s).
    pub scrape_interval: std::time::Duration,
    /// GitOps: the controller's directory and the `git` program, handed to the control plane.
    pub gitops: Option<(PathBuf, PathBuf)>,
}

/// The names cluster DNS gives a Service: the short name (from its own namespace), `name.ns`,
/// `name.ns.svc` and the FQDN.
pub fn dns_names(name: &str, namespace: &str) -> Vec<String> {
    let (n, ns) = (name, namespace);
    vec![
        n.to_string(),
        format!("{n}.{ns}"),
        format!("{n}.{ns}.svc"),
        names::fqdn(n, ns),
    ]
}

/// What every pod of a plan is planned against.
struct Inputs<'a> {
    state: &'a StateDir,
    opts: &'a PlanOptions,
    configs: &'a manifests::ConfigData,
    mode: DatabaseMode,
    /// The Services in front of the database workloads (SQLite mode points their URLs at files).
    db_services: &'a [&'a manifests::ServiceDef],
}
