//! From manifests to a plan: which pods run, with which programs, environment and addresses;
//! which services and ingress routes exist. Everything that can be wrong with the manifests or
//! the machine (a missing program, an unsupported fieldRef) is found here, before anything
//! starts.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use skein_api::{Manifests, Resource};

pub mod env;
pub mod mesh;

use crate::plan::env::{PodFacts, expand};
use crate::mysql::MariaDbConfig;
use crate::naming::pod_name;
use crate::run::state::{Network, StateDir};
use crate::{RuntimeError, Source};

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
    pub source: Source,
    /// The pod's proxy (a sidecar, or the gateway's own).
    pub proxy: Option<crate::plan::mesh::ProxyPlan>,
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
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePortPlan>,
}

#[derive(Debug, Clone)]
pub struct ServicePortPlan {
    pub name: Option<String>,
    pub port: u16,
    /// Opaque TCP by Istio's port naming (`tcp-*`, `mysql`, ...): reached through a sidecar's
    /// per-port listener rather than its HTTP proxy.
    pub opaque: bool,
    /// Per pod index (into `Plan::pods`): the address this port forwards to.
    pub endpoints: Vec<(usize, SocketAddr)>,
}

impl ServicePlan {
    pub fn port(&self, port: &ServicePortRef) -> Option<&ServicePortPlan> {
        self.ports.iter().find(|p| match port {
            ServicePortRef::Number(n) => p.port == *n,
            ServicePortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServicePortRef {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathType {
    Prefix,
    Exact,
}

#[derive(Debug, Clone)]
pub struct IngressRoute {
    pub ingress: String,
    pub host: Option<String>,
    pub path: String,
    pub path_type: PathType,
    /// Index into `Plan::services`.
    pub service: usize,
    pub port: u16,
}

impl IngressRoute {
    /// Kubernetes' matching: Exact is the whole path; Prefix matches whole `/` segments.
    pub fn matches(&self, host: Option<&str>, path: &str) -> bool {
        if let Some(h) = &self.host {
            let Some(req) = host else { return false };
            let req = req.split(':').next().unwrap_or(req);
            let ok = match h.strip_prefix("*.") {
                Some(suffix) => req
                    .split_once('.')
                    .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(suffix)),
                None => req.eq_ignore_ascii_case(h),
            };
            if !ok {
                return false;
            }
        }
        match self.path_type {
            PathType::Exact => path == self.path,
            PathType::Prefix => {
                let prefix = self.path.trim_end_matches('/');
                prefix.is_empty()
                    || path == prefix
                    || (path.starts_with(prefix)
                        && path.as_bytes().get(prefix.len()) == Some(&b'/'))
            }
        }
    }
}

/// Inputs that are not in the manifests.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub database: Option<DatabaseMode>,
    /// Where programs are looked up first: the directory of the `skein` binary.
    pub program_dirs: Vec<PathBuf>,
    /// Run the mesh: sidecars for injected pods, the control plane and the ingress gateway.
    pub mesh: Option<crate::plan::mesh::MeshPlanOptions>,
}

pub fn build(
    manifests: &Manifests,
    state: &StateDir,
    network: &mut Network,
    opts: &PlanOptions,
) -> Result<Plan, RuntimeError> {
    let mut errors = Vec::new();
    let configs = ConfigData::collect(manifests);
    let workloads = workloads(manifests);

    let db_workloads: Vec<&Workload> = workloads.iter().filter(|w| w.is_database()).collect();
    let mode = opts.database.unwrap_or_else(|| {
        if db_workloads.iter().any(|w| {
            w.annotation("skein.io/local-database")
                .is_some_and(|v| v.eq_ignore_ascii_case("mysql"))
        }) {
            DatabaseMode::Mysql
        } else {
            DatabaseMode::Sqlite
        }
    });

    // Services first: pods need the hosts file, and SQLite mode needs the database's names.
    let services: Vec<ServiceDef> = manifests
        .documents
        .iter()
        .filter_map(|d| match &d.resource {
            Resource::Service(s) => Some(ServiceDef::from_api(s, &d.source)),
            _ => None,
        })
        .collect();
    let mut hosts = Vec::new();
    let mut service_ips = Vec::new();
    for s in &services {
        let ip = network.service_ip(&format!("{}/{}", s.namespace, s.name))?;
        service_ips.push(ip);
        hosts.push((ip, s.dns_names()));
    }
    let db_services: Vec<&ServiceDef> = services
        .iter()
        .filter(|s| {
            db_workloads
                .iter()
                .any(|w| w.namespace == s.namespace && s.selects(&w.pod_labels))
        })
        .collect();

    let mut pods = Vec::new();
    let mut live_names = Vec::new();
    let namespace_labels: BTreeMap<String, BTreeMap<String, String>> = manifests
        .namespaces()
        .map(|n| (n.metadata.name.clone(), n.metadata.labels.clone()))
        .collect();
    // The control plane comes first: every sidecar is told its address.
    let mesh_pods = match &opts.mesh {
        Some(m) => {
            let istiod = pod_name("istiod", b"istiod", 0);
            let gateway = pod_name("istio-ingressgateway", b"istio-ingressgateway", 0);
            let (istiod_ip, gateway_ip) = (network.pod_ip(&istiod)?, network.pod_ip(&gateway)?);
            live_names.extend([istiod.clone(), gateway.clone()]);
            let control = SocketAddr::from((istiod_ip, crate::plan::mesh::CONTROL_PORT));
            Some((
                control,
                m,
                crate::plan::mesh::control_pod(istiod, istiod_ip, state, m, control),
                crate::plan::mesh::gateway_pod(gateway, gateway_ip, state, m, control),
            ))
        }
        None => None,
    };
    for w in &workloads {
        if mode == DatabaseMode::Sqlite && w.is_database() {
            continue;
        }
        for ordinal in 0..w.replicas {
            let name = pod_name(&w.name, &w.template_key, ordinal);
            live_names.push(name.clone());
            let ip = network.pod_ip(&name)?;
            let meshed = mesh_pods.is_some()
                && crate::plan::mesh::injected(
                    namespace_labels.get(&w.namespace),
                    &w.pod_labels,
                    &w.pod_annotations,
                );
            let planned = plan_pod(
                w,
                name,
                ip,
                meshed,
                state,
                opts,
                &configs,
                mode,
                &db_services,
            );
            match (planned, &mesh_pods) {
                (Ok(mut p), Some((control, m, _, _))) if meshed => {
                    crate::plan::mesh::add_sidecar(&mut p, state, *control, &m.skein);
                    pods.push(p);
                }
                (Ok(p), _) => pods.push(p),
                (Err(e), _) => errors.push(e),
            }
        }
    }
    network.retain_pods(&live_names);
    if let Some((_, _, istiod, gateway)) = mesh_pods {
        pods.extend([istiod, gateway]);
    }

    let mut planned_services = Vec::new();
    for (s, ip) in services.iter().zip(service_ips) {
        let ports = s
            .ports
            .iter()
            .map(|sp| ServicePortPlan {
                name: sp.name.clone(),
                port: sp.port,
                opaque: sp.name.as_deref().is_some_and(|n| {
                    matches!(
                        n.split('-').next().unwrap_or(n),
                        "tcp" | "tls" | "https" | "mysql" | "mongo" | "redis"
                    )
                }),
                endpoints: pods
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.namespace == s.namespace && s.selects(&p.labels))
                    .filter_map(|(i, p)| {
                        let target = match &sp.target {
                            None => Some(sp.port),
                            Some(ServicePortRef::Number(n)) => Some(*n),
                            Some(ServicePortRef::Name(n)) => p
                                .ports
                                .iter()
                                .find(|cp| cp.name.as_deref() == Some(n.as_str()))
                                .map(|cp| cp.port),
                        }?;
                        Some((i, SocketAddr::from((p.ip, target))))
                    })
                    .collect(),
            })
            .collect();
        planned_services.push(ServicePlan {
            name: s.name.clone(),
            namespace: s.namespace.clone(),
            cluster_ip: ip,
            selector: s.selector.clone(),
            ports,
        });
    }

    let ingress = ingress_routes(manifests, &planned_services, &mut errors);

    if !errors.is_empty() {
        return Err(RuntimeError::Plan(errors));
    }
    let location = match mode {
        DatabaseMode::Sqlite => state.data().join("*.db").display().to_string(),
        DatabaseMode::Mysql => db_services
            .iter()
            .map(|s| {
                format!(
                    "{}.{}:{}",
                    s.name,
                    s.namespace,
                    s.ports.first().map_or(3306, |p| p.port)
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
    };
    Ok(Plan {
        pods,
        services: planned_services,
        ingress,
        database: DatabasePlan { mode, location },
        hosts,
    })
}

/// A Deployment or Rollout, reduced to what running it needs.
struct Workload<'a> {
    name: String,
    namespace: String,
    replicas: usize,
    annotations: BTreeMap<String, String>,
    pod_labels: BTreeMap<String, String>,
    pod_annotations: BTreeMap<String, String>,
    spec: &'a skein_api::k8s::PodSpec,
    template_key: Vec<u8>,
    source: Source,
}

impl Workload<'_> {
    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .get(key)
            .or_else(|| self.pod_annotations.get(key))
            .map(String::as_str)
    }

    fn is_database(&self) -> bool {
        self.spec
            .containers
            .iter()
            .any(|c| is_mysql_image(c.image.as_deref().unwrap_or("")))
    }
}

/// `mysql:8.0`, `docker.io/library/mariadb:11`, `bitnami/mysql@sha256:..` are all MySQL.
pub fn is_mysql_image(image: &str) -> bool {
    let last = image.rsplit('/').next().unwrap_or(image);
    let repo = last.split(['@', ':']).next().unwrap_or(last);
    matches!(repo, "mysql" | "mariadb" | "mysql-server")
}

fn workloads(manifests: &Manifests) -> Vec<Workload<'_>> {
    let mut out = Vec::new();
    for d in &manifests.documents {
        let (meta, spec) = match &d.resource {
            Resource::Deployment(x) => (&x.metadata, x.spec.as_workload()),
            Resource::Rollout(x) => (&x.metadata, x.spec.as_workload()),
            _ => continue,
        };
        let template_meta = spec.template.metadata.clone();
        let template_key = serde_json::to_vec(&spec.template).unwrap_or_default();
        out.push(Workload {
            name: meta.name.clone(),
            namespace: meta
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_string()),
            replicas: spec.replicas.unwrap_or(1).max(0) as usize,
            annotations: meta.annotations.clone(),
            pod_labels: template_meta.labels.clone(),
            pod_annotations: template_meta.annotations.clone(),
            spec: &spec.template.spec,
            template_key,
            source: Source::from(&d.source),
        });
    }
    out
}

struct ServiceDef {
    name: String,
    namespace: String,
    selector: BTreeMap<String, String>,
    ports: Vec<ServicePortDef>,
}

struct ServicePortDef {
    name: Option<String>,
    port: u16,
    target: Option<ServicePortRef>,
}

impl ServiceDef {
    fn from_api(s: &skein_api::k8s::Service, _source: &skein_api::Source) -> ServiceDef {
        let spec = s.spec.clone();
        ServiceDef {
            name: s.metadata.name.clone(),
            namespace: s
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            selector: spec.selector.clone().unwrap_or_default(),
            ports: spec
                .ports
                .iter()
                .map(|p| ServicePortDef {
                    name: p.name.clone(),
                    port: u16::try_from(p.port).unwrap_or(0),
                    target: p.target_port.as_ref().map(port_ref),
                })
                .collect(),
        }
    }

    /// An empty selector selects nothing (its endpoints are managed by hand on Kubernetes).
    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.selector.is_empty() && self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    fn dns_names(&self) -> Vec<String> {
        let (n, ns) = (&self.name, &self.namespace);
        vec![
            n.clone(),
            format!("{n}.{ns}"),
            format!("{n}.{ns}.svc"),
            format!("{n}.{ns}.svc.cluster.local"),
        ]
    }

    /// Whether `host`, as written by a client in namespace `from_ns`, names this service.
    fn is_named_by(&self, host: &str, from_ns: &str) -> bool {
        let host = host.trim_end_matches('.');
        (host == self.name && from_ns == self.namespace)
            || self.dns_names()[1..].iter().any(|n| n == host)
    }
}

fn port_ref(p: &skein_api::k8s::IntOrString) -> ServicePortRef {
    match p {
        skein_api::k8s::IntOrString::Int(n) => {
            ServicePortRef::Number(u16::try_from(*n).unwrap_or(0))
        }
        skein_api::k8s::IntOrString::String(s) => match s.parse::<u16>() {
            Ok(n) => ServicePortRef::Number(n),
            Err(_) => ServicePortRef::Name(s.clone()),
        },
    }
}

/// ConfigMap and Secret data, for `valueFrom` and `envFrom`.
#[derive(Default)]
struct ConfigData {
    config_maps: BTreeMap<(String, String), BTreeMap<String, String>>,
    secrets: BTreeMap<(String, String), BTreeMap<String, String>>,
}

impl ConfigData {
    fn collect(manifests: &Manifests) -> ConfigData {
        let mut out = ConfigData::default();
        for d in &manifests.documents {
            match &d.resource {
                Resource::ConfigMap(c) => {
                    let key = (
                        c.metadata
                            .namespace
                            .clone()
                            .unwrap_or_else(|| "default".into()),
                        c.metadata.name.clone(),
                    );
                    out.config_maps.insert(key, c.data.clone());
                }
                Resource::Secret(s) => {
                    let key = (
                        s.metadata
                            .namespace
                            .clone()
                            .unwrap_or_else(|| "default".into()),
                        s.metadata.name.clone(),
                    );
                    out.secrets.insert(key, s.decoded_data());
                }
                _ => {}
            }
        }
        out
    }
}

#[allow(clippy::too_many_arguments)]
fn plan_pod(
    w: &Workload<'_>,
    name: String,
    ip: Ipv4Addr,
    meshed: bool,
    state: &StateDir,
    opts: &PlanOptions,
    configs: &ConfigData,
    mode: DatabaseMode,
    db_services: &[&ServiceDef],
) -> Result<PodPlan, String> {
    let at = |msg: String| format!("{}: {}/{}: {msg}", w.source, w.namespace, w.name);
    let facts = PodFacts {
        name: name.clone(),
        namespace: w.namespace.clone(),
        uid: format!("{:016x}", crate::naming::fnv1a(name.as_bytes())),
        labels: w.pod_labels.clone(),
        annotations: w.pod_annotations.clone(),
        service_account: w
            .spec
            .service_account_name
            .clone()
            .or_else(|| w.spec.service_account.clone())
            .unwrap_or_else(|| "default".into()),
        node_name: "localhost".into(),
        // Behind a sidecar the app has its own address; the pod IP is the sidecar's.
        pod_ip: if meshed {
            crate::plan::mesh::app_ip(ip).to_string()
        } else {
            ip.to_string()
        },
        host_ip: "127.0.0.1".into(),
    };

    let mut ports = Vec::new();
    let mut containers = Vec::new();
    for c in &w.spec.containers {
        for p in &c.ports {
            let port = u16::try_from(p.container_port).map_err(|_| {
                at(format!(
                    "container {}: port {} is out of range",
                    c.name, p.container_port
                ))
            })?;
            ports.push(NamedPort {
                name: p.name.clone(),
                port,
            });
        }
        let mut env = container_env(c, &facts, state, configs, mode, db_services)
            .map_err(|e| at(format!("container {}: {e}", c.name)))?;
        if meshed {
            for (k, v) in crate::plan::mesh::app_env(state, &name, ip) {
                env.retain(|(n, _)| *n != k);
                env.push((k, v));
            }
        }
        let lookup = |k: &str| {
            env.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        let run = if is_mysql_image(c.image.as_deref().unwrap_or("")) {
            let port = c
                .ports
                .first()
                .and_then(|p| u16::try_from(p.container_port).ok())
                .unwrap_or(3306);
            Run::MariaDb(MariaDbConfig::from_env(
                state.data().join(&w.name),
                ip.into(),
                port,
                &env,
            ))
        } else {
            let annotated = w
                .pod_annotations
                .get(&format!("skein.io/command.{}", c.name))
                .map(|a| serde_json::from_str::<Vec<String>>(a))
                .transpose()
                .map_err(|e| {
                    at(format!(
                        "annotation skein.io/command.{}: not a JSON array of strings: {e}",
                        c.name
                    ))
                })?;
            let mut argv: Vec<String> = annotated.unwrap_or_else(|| c.command.clone());
            argv.extend(c.args.iter().cloned());
            let argv: Vec<String> = argv.iter().map(|a| expand(a, lookup)).collect();
            let Some((program, args)) = argv.split_first() else {
                return Err(at(format!(
                    "container {} has no command; give it `command` or the annotation skein.io/command.{} so it can run locally",
                    c.name, c.name
                )));
            };
            let program = find_program(program, &opts.program_dirs).ok_or_else(|| {
                at(format!(
                    "container {}: program `{program}` not found in {} or on PATH",
                    c.name,
                    opts.program_dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            Run::Program {
                program,
                args: args.to_vec(),
            }
        };
        containers.push(ContainerPlan {
            name: c.name.clone(),
            run,
            env,
            log: state.container_log(&name, &c.name),
        });
    }

    let readiness = w
        .spec
        .containers
        .iter()
        .find_map(|c| c.readiness_probe.as_ref().map(|p| (c, p)))
        .map(|(c, p)| readiness(c, p))
        .transpose()
        .map_err(at)?;

    Ok(PodPlan {
        name,
        namespace: w.namespace.clone(),
        workload: w.name.clone(),
        labels: w.pod_labels.clone(),
        service_account: facts.service_account.clone(),
        ip,
        probe_ip: ip,
        ports,
        containers,
        readiness,
        grace: std::time::Duration::from_secs(
            w.spec
                .termination_grace_period_seconds
                .unwrap_or(30)
                .clamp(1, 30) as u64,
        ),
        source: w.source.clone(),
        proxy: None,
    })
}

fn readiness(
    c: &skein_api::k8s::Container,
    p: &skein_api::k8s::Probe,
) -> Result<Readiness, String> {
    let resolve = |port: &skein_api::k8s::IntOrString| -> Result<u16, String> {
        match port_ref(port) {
            ServicePortRef::Number(n) => Ok(n),
            ServicePortRef::Name(n) => c
                .ports
                .iter()
                .find(|cp| cp.name.as_deref() == Some(n.as_str()))
                .and_then(|cp| u16::try_from(cp.container_port).ok())
                .ok_or_else(|| {
                    format!(
                        "container {}: readinessProbe names port `{n}`, which no containerPort has",
                        c.name
                    )
                }),
        }
    };
    let check = if let Some(h) = &p.http_get {
        Check::Http {
            port: resolve(&h.port)?,
            path: h.path.clone().unwrap_or_else(|| "/".into()),
        }
    } else if let Some(t) = &p.tcp_socket {
        Check::Tcp {
            port: resolve(&t.port)?,
        }
    } else {
        return Err(format!(
            "container {}: only httpGet and tcpSocket readiness probes run locally",
            c.name
        ));
    };
    let secs =
        |v: Option<i32>, d: u64| std::time::Duration::from_secs(v.map_or(d, |v| v.max(0) as u64));
    Ok(Readiness {
        check,
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10),
        timeout: secs(p.timeout_seconds, 1),
        failure_threshold: p.failure_threshold.map_or(3, |v| v.max(1) as u32),
    })
}

/// Variables every local container gets before its own: enough of the host's environment to
/// run, and nothing that would change how it behaves (no proxies from the user's shell).
const INHERITED: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "RUST_LOG",
    "RUST_BACKTRACE",
];

fn container_env(
    c: &skein_api::k8s::Container,
    facts: &PodFacts,
    state: &StateDir,
    configs: &ConfigData,
    mode: DatabaseMode,
    db_services: &[&ServiceDef],
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = INHERITED
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    env.push(("HOSTNAME".into(), facts.name.clone()));
    env.push((
        "SKEIN_HOSTS".into(),
        state.hosts_file().display().to_string(),
    ));
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(n, _)| *n != k);
        env.push((k, v));
    };
    let ns = &facts.namespace;
    for from in &c.env_from {
        let (table, name, kind) = if let Some(r) = &from.config_map_ref {
            (&configs.config_maps, &r.name, "ConfigMap")
        } else if let Some(r) = &from.secret_ref {
            (&configs.secrets, &r.name, "Secret")
        } else {
            continue;
        };
        let optional = from
            .config_map_ref
            .as_ref()
            .and_then(|r| r.optional)
            .or(from.secret_ref.as_ref().and_then(|r| r.optional))
            .unwrap_or(false);
        match table.get(&(ns.clone(), name.clone())) {
            Some(data) => {
                let prefix = from.prefix.clone().unwrap_or_default();
                for (k, v) in data {
                    set(&mut env, format!("{prefix}{k}"), v.clone());
                }
            }
            None if optional => {}
            None => {
                return Err(format!(
                    "envFrom: {kind} {ns}/{name} is not in the manifests"
                ));
            }
        }
    }
    for var in &c.env {
        let value = if let Some(v) = &var.value {
            let snapshot = env.clone();
            expand(v, |k| {
                snapshot
                    .iter()
                    .rev()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
            })
        } else if let Some(from) = &var.value_from {
            if let Some(f) = &from.field_ref {
                facts
                    .field(&f.field_path)
                    .map_err(|e| format!("env {}: {e}", var.name))?
            } else if let Some(r) = &from.config_map_key_ref {
                lookup_key(
                    &configs.config_maps,
                    "ConfigMap",
                    ns,
                    &r.name,
                    &r.key,
                    r.optional,
                )
                .map_err(|e| format!("env {}: {e}", var.name))?
            } else if let Some(r) = &from.secret_key_ref {
                lookup_key(&configs.secrets, "Secret", ns, &r.name, &r.key, r.optional)
                    .map_err(|e| format!("env {}: {e}", var.name))?
            } else {
                return Err(format!(
                    "env {}: only fieldRef, configMapKeyRef and secretKeyRef run locally",
                    var.name
                ));
            }
        } else {
            String::new()
        };
        let value = if mode == DatabaseMode::Sqlite {
            sqlite_stand_in(&value, ns, state, db_services).unwrap_or(value)
        } else {
            value
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

fn lookup_key(
    table: &BTreeMap<(String, String), BTreeMap<String, String>>,
    kind: &str,
    ns: &str,
    name: &str,
    key: &str,
    optional: Option<bool>,
) -> Result<String, String> {
    match table
        .get(&(ns.to_string(), name.to_string()))
        .and_then(|d| d.get(key))
    {
        Some(v) => Ok(v.clone()),
        None if optional.unwrap_or(false) => Ok(String::new()),
        None => Err(format!(
            "{kind} {ns}/{name} has no key `{key}` in the manifests"
        )),
    }
}

/// In SQLite mode a `mysql://user:pw@mysql:3306/blog` pointing at the database's service
/// becomes `sqlite://STATE/data/mysql.db`.
fn sqlite_stand_in(
    value: &str,
    ns: &str,
    state: &StateDir,
    db_services: &[&ServiceDef],
) -> Option<String> {
    let rest = value
        .strip_prefix("mysql://")
        .or_else(|| value.strip_prefix("mariadb://"))?;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = host_port.split(':').next()?;
    let svc = db_services.iter().find(|s| s.is_named_by(host, ns))?;
    Some(format!(
        "sqlite://{}",
        state.data().join(format!("{}.db", svc.name)).display()
    ))
}

/// A program name with a `/` is a path; otherwise it is looked up in `dirs`, then on `PATH`.
pub fn find_program(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    dirs.iter()
        .chain(path_dirs.iter())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn ingress_routes(
    manifests: &Manifests,
    services: &[ServicePlan],
    errors: &mut Vec<String>,
) -> Vec<IngressRoute> {
    let mut routes = Vec::new();
    for d in &manifests.documents {
        let Resource::Ingress(ing) = &d.resource else {
            continue;
        };
        let ns = ing
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let spec = &ing.spec;
        for rule in &spec.rules {
            let Some(http) = &rule.http else { continue };
            for p in &http.paths {
                let Some(svc) = &p.backend.service else {
                    errors.push(format!(
                        "{}: Ingress {ns}/{}: only service backends run locally",
                        d.source, ing.metadata.name
                    ));
                    continue;
                };
                let port_ref = match (&svc.port.number, &svc.port.name) {
                    (Some(n), _) => ServicePortRef::Number(u16::try_from(*n).unwrap_or(0)),
                    (None, Some(name)) => ServicePortRef::Name(name.clone()),
                    (None, None) => ServicePortRef::Number(80),
                };
                let Some((index, s)) = services
                    .iter()
                    .enumerate()
                    .find(|(_, s)| s.name == svc.name && s.namespace == ns)
                else {
                    errors.push(format!(
                        "{}: Ingress {ns}/{}: backend service `{}` is not in the manifests",
                        d.source, ing.metadata.name, svc.name
                    ));
                    continue;
                };
                let Some(sp) = s.port(&port_ref) else {
                    errors.push(format!(
                        "{}: Ingress {ns}/{}: service `{}` has no port {:?}",
                        d.source, ing.metadata.name, svc.name, port_ref
                    ));
                    continue;
                };
                routes.push(IngressRoute {
                    ingress: format!("{ns}/{}", ing.metadata.name),
                    host: rule.host.clone(),
                    path: p.path.clone().unwrap_or_else(|| "/".into()),
                    // ImplementationSpecific is treated as Prefix, as ingress-nginx does.
                    path_type: match p.path_type {
                        skein_api::k8s::PathType::Exact => PathType::Exact,
                        _ => PathType::Prefix,
                    },
                    service: index,
                    port: sp.port,
                });
            }
        }
    }
    // The longest path wins; Exact before Prefix on a tie.
    routes.sort_by(|a, b| {
        b.path
            .len()
            .cmp(&a.path.len())
            .then((a.path_type != PathType::Exact).cmp(&(b.path_type != PathType::Exact)))
    });
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str, t: PathType) -> IngressRoute {
        IngressRoute {
            ingress: "x".into(),
            host: None,
            path: path.into(),
            path_type: t,
            service: 0,
            port: 80,
        }
    }

    #[test]
    fn prefix_matches_whole_segments() {
        let r = route("/api", PathType::Prefix);
        assert!(r.matches(None, "/api"));
        assert!(r.matches(None, "/api/posts"));
        assert!(!r.matches(None, "/apix"));
        assert!(route("/", PathType::Prefix).matches(None, "/anything"));
        let e = route("/board", PathType::Exact);
        assert!(e.matches(None, "/board"));
        assert!(!e.matches(None, "/board/1"));
    }

    #[test]
    fn host_rules() {
        let mut r = route("/", PathType::Prefix);
        r.host = Some("blog.example.com".into());
        assert!(r.matches(Some("blog.example.com:8443"), "/"));
        assert!(!r.matches(Some("other.example.com"), "/"));
        r.host = Some("*.example.com".into());
        assert!(r.matches(Some("blog.example.com"), "/"));
        assert!(!r.matches(Some("example.com"), "/"));
    }

    #[test]
    fn mysql_images() {
        assert!(is_mysql_image("mysql:8.0"));
        assert!(is_mysql_image("docker.io/library/mariadb:11"));
        assert!(is_mysql_image("bitnami/mysql@sha256:abc"));
        assert!(!is_mysql_image("blog-was:0.1.0"));
        assert!(!is_mysql_image("mysql-exporter:1"));
    }
}
