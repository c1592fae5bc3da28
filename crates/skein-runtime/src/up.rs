//! Bringing a manifests directory up, and taking it down again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use skein_api::Manifests;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::clock::now_rfc3339;
use crate::kube::{ingress, services};
use crate::plan::{self, MeshPlanOptions, Plan, PlanOptions, PrometheusState};
use crate::run::logs::LogRotation;
use crate::run::process;
use crate::run::state::{Network, StateDir, Supervisor};
use crate::run::status::{
    DashboardStatus, DatabaseStatus, IngressStatus, PrometheusStatus, Status, SupervisorStatus,
    TracingStatus,
};
use crate::run::supervisor::Pods;
use crate::{DatabaseMode, RuntimeError, tls};

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub manifests: PathBuf,
    pub state: StateDir,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub database: Option<DatabaseMode>,
    /// Directories searched for container programs before `PATH`.
    pub program_dirs: Vec<PathBuf>,
    /// The `skein` binary, which runs the sidecars, the gateway and the control plane. `None`
    /// runs without the mesh: the ingress forwards straight to Services, as before a mesh.
    pub skein: Option<PathBuf>,
    /// Lifetime of workload certificates (None: 24 h).
    pub cert_ttl: Option<Duration>,
    /// A plug-in CA directory (Istio's cacerts layout).
    pub plugin_ca: Option<PathBuf>,
    /// When containers' logs are rotated and how many files are kept.
    pub log_rotation: LogRotation,
    /// How often the mesh's Prometheus scrapes (Istio's addon: 15 s).
    pub scrape_interval: Duration,
    /// GitOps: `manifests` is the commit in force; the control plane's GitOps controller
    /// (this directory, this `git`) keeps it in step with the repository.
    pub gitops: Option<(PathBuf, PathBuf)>,
}

/// The manifests, running. Dropping it without `shutdown` leaves processes to `kill_on_drop`.
pub struct Running {
    pods: Arc<Pods>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    writer: JoinHandle<()>,
    state: StateDir,
    base: Status,
}

/// Checks everything that can be checked (manifests, programs, ports), then starts the pods,
/// the service forwarders and the ingress. Nothing is left running when this fails.
pub async fn up(opts: UpOptions) -> Result<Running, RuntimeError> {
    let state = opts.state.clone();
    if let Some(pid) = state.running_supervisor() {
        return Err(RuntimeError::AlreadyRunning {
            state: state.root().to_path_buf(),
            pid,
        });
    }
    state.create()?;
    let manifests = load(&opts.manifests)?;

    // Ports first: a port in use is reported before anything else happens.
    let http = bind("ingress (HTTP)", opts.http).await?;
    let https = bind("ingress (HTTPS)", opts.https).await?;
    let (http_addr, https_addr) = (local(&http)?, local(&https)?);
    let mesh = opts.skein.as_ref().map(|skein| MeshPlanOptions {
        skein: skein.clone(),
        manifests: opts.manifests.clone(),
        http: http_addr,
        https: https_addr,
        cert_ttl: opts.cert_ttl,
        plugin_ca: opts.plugin_ca.clone(),
        scrape_interval: opts.scrape_interval,
        gitops: opts.gitops.clone(),
    });
    let mut network = Network::load_or_new(&state)?;
    let plan_opts = PlanOptions {
        database: opts.database,
        program_dirs: opts.program_dirs.clone(),
        mesh: mesh.clone(),
    };
    let plan = plan::build(&manifests, &state, &mut network, &plan_opts)?;
    network.save(&state)?;
    check_pod_ports(&plan)?;
    match &plan.prometheus {
        PrometheusState::Planned(p) => plan::prometheus::write_config(&plan.pods, p)?,
        PrometheusState::Missing => {
            tracing::warn!("prometheus: {}", plan::prometheus::MISSING)
        }
        PrometheusState::Off => {}
    }
    if plan.tracing.is_some() {
        plan::tracing::write_services(&state)?;
    }
    if plan.dashboard.is_some() {
        plan::dashboard::write_services(&state)?;
    }
    crate::kube::dns::write_hosts(&state, &plan)?;
    let tls = tls::ingress_server_config(&state.certs())?;
    let base = base_status(&opts, &state, &plan, http_addr, https_addr);

    let mut names: Vec<_> = plan
        .services
        .iter()
        .map(|s| {
            let ip = std::net::IpAddr::V4(s.cluster_ip);
            let ports = s
                .ports
                .iter()
                .map(|p| (p.port, SocketAddr::new(ip, p.port)))
                .collect();
            (plan::dns_names(&s.name, &s.namespace), ports)
        })
        .collect();
    if let PrometheusState::Planned(p) = &plan.prometheus
        && let Ok(addr) = p.url.trim_start_matches("http://").parse::<SocketAddr>()
    {
        // Istio's addon Service `istio-system/prometheus:9090`, served by the pod itself.
        names.push((
            plan::dns_names("prometheus", "istio-system"),
            vec![(9090, addr)],
        ));
    }
    let names = crate::analysis::ServiceNames::new(names);
    let pods = Pods::new(plan, opts.log_rotation);
    let service_listeners = services::bind(&pods).await?;
    state.record_supervisor()?;

    let (shutdown, rx) = watch::channel(false);
    let mut tasks = pods.start(rx.clone());
    tasks.extend(services::serve(pods.clone(), service_listeners, rx.clone()));
    if mesh.is_some() {
        // The gateway pod serves the ingress addresses; it binds them as it starts.
        drop((http, https, tls));
    } else {
        tasks.extend(ingress::serve(pods.clone(), http, https, tls, rx.clone()));
    }
    if manifests.rollouts().next().is_some() {
        let ctx = crate::rollout::Ctx {
            pods: pods.clone(),
            state: state.clone(),
            manifests: opts.manifests.clone(),
            opts: plan_opts,
            network: std::sync::Mutex::new(network),
        };
        tasks.push(crate::rollout::spawn(Arc::new(ctx), rx.clone()));
    }
    // Every AnalysisRun of the config in force runs, its status in the state directory; runs
    // added, terminated or deleted later (`skein apply`, an edit, a sync) are followed.
    tasks.push(tokio::spawn(crate::analysis::watch_manifest_runs(
        opts.manifests.clone(),
        state.applied_dir(),
        state.root().to_path_buf(),
        Arc::new(names),
        rx.clone(),
    )));
    let synced: crate::run::restart::Synced = if mesh.is_some() {
        let (pods, state, base) = (pods.clone(), state.clone(), base.clone());
        std::sync::Arc::new(move |ready| control_caught_up(&state, &snapshot(&pods, &base), ready))
    } else {
        std::sync::Arc::new(|_| true)
    };
    tasks.push(tokio::spawn(crate::run::requests::serve(
        pods.clone(),
        state.clone(),
        synced,
        rx.clone(),
    )));
    let writer = tokio::spawn(write_status(pods.clone(), state.clone(), base.clone(), rx));
    Ok(Running {
        pods,
        shutdown,
        tasks,
        writer,
        state,
        base,
    })
}

/// The manifests of `dir`, loaded and validated: any load error or error diagnostic stops
/// the run.
fn load(dir: &Path) -> Result<Manifests, RuntimeError> {
    let manifests = skein_api::load_path(dir)
        .map_err(|errs| RuntimeError::Manifests(errs.iter().map(|e| e.to_string()).collect()))?;
    let problems: Vec<String> = skein_api::validate(&manifests)
        .into_iter()
        .filter(|d| d.refuses())
        .map(|d| d.to_string())
        .collect();
    if !problems.is_empty() {
        return Err(RuntimeError::Manifests(problems));
    }
    Ok(manifests)
}

/// Every pod's ports are free (each is bound and released at once).
fn check_pod_ports(plan: &Plan) -> Result<(), RuntimeError> {
    for pod in &plan.pods {
        for p in &pod.ports {
            let addr = SocketAddr::from((pod.ip, p.port));
            std::net::TcpListener::bind(addr).map_err(|e| RuntimeError::Bind {
                what: format!("pod {}/{}", pod.namespace, pod.name),
                addr,
                error: e,
            })?;
        }
    }
    Ok(())
}

/// The parts of the status that do not change while the run lasts.
fn base_status(
    opts: &UpOptions,
    state: &StateDir,
    plan: &Plan,
    http: SocketAddr,
    https: SocketAddr,
) -> Status {
    Status {
        manifests: opts.manifests.display().to_string(),
        running: true,
        stopped_at: None,
        supervisor: SupervisorStatus {
            pid: std::process::id(),
            state: "running".into(),
            started_at: now_rfc3339(),
            log: state.supervisor_log().display().to_string(),
            proc_start: process::start_time(std::process::id()),
        },
        ingress: IngressStatus {
            http: format!("http://{http}"),
            https: format!("https://{https}"),
        },
        database: DatabaseStatus {
            mode: plan.database.mode.to_string(),
            location: plan.database.location.clone(),
        },
        pods: Vec::new(),
        services: Vec::new(),
        prometheus: match &plan.prometheus {
            PrometheusState::Off => None,
            PrometheusState::Missing => Some(PrometheusStatus {
                note: Some(plan::prometheus::MISSING.to_string()),
                ..PrometheusStatus::default()
            }),
            PrometheusState::Planned(p) => Some(PrometheusStatus {
                url: Some(p.url.clone()),
                config: Some(p.config.display().to_string()),
                data: Some(p.data.display().to_string()),
                scrape_interval: Some(plan::prometheus::duration(p.scrape_interval)),
                note: None,
            }),
        },
        tracing: plan.tracing.as_ref().map(|t| TracingStatus {
            url: Some(t.url.clone()),
            zipkin: Some(format!("http://{}/api/v2/spans", t.zipkin)),
            otlp: Some(format!("http://{}/v1/traces", t.otlp)),
            collector: Some(format!(
                "jaeger-collector.istio-system.svc:{}",
                plan::tracing::ZIPKIN_PORT
            )),
        }),
        dashboard: plan.dashboard.as_ref().map(|d| DashboardStatus {
            url: Some(d.url.clone()),
        }),
        restarts: Vec::new(),
    }
}

impl Running {
    pub fn status(&self) -> Status {
        snapshot(&self.pods, &self.base)
    }

    /// Waits until every pod is ready; false on timeout.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.status();
            if status.all_ready() && mesh_synced(&self.state, &status) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every pod (SIGTERM, then SIGKILL after its grace period) and every listener.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.pods.join_late().await;
        let _ = self.writer.await;
        let mut last = snapshot(&self.pods, &self.base);
        last.mark_stopped(Some(now_rfc3339()));
        let _ = last.write(&self.state.status_file());
        let _ = std::fs::remove_file(self.state.pid_file());
    }
}

/// What [`stop`] did.
#[derive(Debug, Default)]
pub struct Stopped {
    /// The supervisor it stopped, if one was running.
    pub supervisor: Option<u32>,
    /// Containers a supervisor that died had left running, stopped now.
    pub leftovers: Vec<u32>,
    /// Pids the state directory names that belong to other processes now (the pid was
    /// reused): not signalled.
    pub not_ours: Vec<NotOurs>,
}

/// A recorded pid that is no longer skein's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotOurs {
    pub pid: u32,
    /// What skein had started with that pid: "the supervisor", "pod P container C".
    pub was: String,
}

/// Asks the supervisor using `state` to stop and waits for it, then stops whatever a
/// supervisor that died left running. A pid is signalled only while it is still the process
/// skein started (its start time matches the one recorded at spawn).
pub async fn stop(state: &StateDir, timeout: Duration) -> Result<Stopped, RuntimeError> {
    let mut stopped = Stopped::default();
    match state.supervisor() {
        Supervisor::Running(pid) => {
            process::signal(pid, process::Signal::TERM);
            let deadline = tokio::time::Instant::now() + timeout;
            while process::is_alive(pid) {
                if tokio::time::Instant::now() >= deadline {
                    process::signal(pid, process::Signal::KILL);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            stopped.supervisor = Some(pid);
        }
        Supervisor::Stale(pid) => {
            stopped.not_ours.push(NotOurs {
                pid,
                was: "the supervisor".into(),
            });
            let _ = std::fs::remove_file(state.pid_file());
        }
        Supervisor::NotRunning => {}
    }
    let path = state.status_file();
    let Ok(mut status) = Status::read(&path) else {
        return Ok(stopped);
    };
    let mut ours = Vec::new();
    for pod in &status.pods {
        for c in pod.containers.iter().filter(|c| c.pid != 0) {
            match c.proc_start {
                Some(started) if process::is_same(c.pid, started) => ours.push((c.pid, started)),
                _ if process::is_alive(c.pid) => stopped.not_ours.push(NotOurs {
                    pid: c.pid,
                    was: format!("pod {} container {}", pod.name, c.name),
                }),
                _ => {}
            }
        }
    }
    // Each container leads its own process group: its helpers go with it.
    for (pid, _) in &ours {
        process::signal_group(*pid, process::Signal::TERM);
    }
    let deadline = tokio::time::Instant::now() + timeout.min(Duration::from_secs(30));
    while ours.iter().any(|(pid, t)| process::is_same(*pid, *t))
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (pid, started) in &ours {
        if process::is_same(*pid, *started) {
            process::signal_group(*pid, process::Signal::KILL);
        }
    }
    stopped.leftovers = ours.into_iter().map(|(pid, _)| pid).collect();
    if status.running || status.pods.iter().any(|p| p.pid != 0 || p.ready) {
        // The supervisor died without saying so: the status says it now.
        status.mark_stopped(Some(now_rfc3339()));
        status.write(&path)?;
    }
    Ok(stopped)
}

fn snapshot(pods: &Pods, base: &Status) -> Status {
    Status {
        pods: pods.pod_statuses(),
        services: pods.service_statuses(),
        restarts: pods.restart_statuses(),
        ..base.clone()
    }
}

async fn write_status(
    pods: Arc<Pods>,
    state: StateDir,
    base: Status,
    mut shutdown: watch::Receiver<bool>,
) {
    let path = state.status_file();
    loop {
        if let Err(e) = snapshot(&pods, &base).write(&path) {
            tracing::warn!("cannot write status: {e}");
        }
        tokio::select! {
            _ = pods.changed.notified() => {
                // Coalesce bursts (a pod start touches several fields).
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = crate::run::supervisor::stopped(&mut shutdown) => return,
        }
    }
}

async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, RuntimeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| RuntimeError::Bind {
            what: what.into(),
            addr,
            error: e,
        })
}

fn local(l: &TcpListener) -> Result<SocketAddr, RuntimeError> {
    l.local_addr()
        .map_err(|e| RuntimeError::io(Path::new("ingress socket"), e))
}

/// With the mesh: the control plane has seen every pod ready and every proxy has
/// acknowledged the last snapshot sent to it (istioctl's SYNCED), so that the first
/// request after `up` does not race an endpoint update.
pub fn mesh_synced(state: &StateDir, status: &Status) -> bool {
    let proxies: Vec<&str> = status
        .pods
        .iter()
        .filter(|p| p.proxy.is_some() && !p.finished())
        .map(|p| p.name.as_str())
        .collect();
    let running = status.pods.iter().filter(|p| !p.finished()).count();
    if proxies.is_empty() {
        return true;
    }
    let Ok(text) = std::fs::read(state.control_status_file()) else {
        return false;
    };
    let Ok(c) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return false;
    };
    c["pods_ready"].as_u64() == Some(running as u64)
        && proxies.iter().all(|name| {
            let p = &c["proxies"][*name];
            p["connected"] == true && !p["sent"].is_null() && p["acked"] == p["sent"]
        })
}

/// With the mesh: the control plane has seen `ready` pods ready, and the proxy of every
/// ready pod is connected and has acknowledged the last snapshot sent to it. A rolling
/// restart waits for it before it takes the next pod down.
fn control_caught_up(state: &StateDir, status: &Status, ready: usize) -> bool {
    let Ok(text) = std::fs::read(state.control_status_file()) else {
        return false;
    };
    let Ok(c) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return false;
    };
    c["pods_ready"].as_u64() == Some(ready as u64)
        && status
            .pods
            .iter()
            .filter(|p| p.ready && p.proxy.is_some())
            .all(|p| {
                let p = &c["proxies"][p.name.as_str()];
                p["connected"] == true && !p["sent"].is_null() && p["acked"] == p["sent"]
            })
}
