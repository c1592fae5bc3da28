//! Runs the planned pods: one process per container, restarted with backoff when it exits,
//! probed for readiness, stopped with SIGTERM then SIGKILL after the pod's grace period.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};

use crate::plan::{Check, ContainerPlan, Plan, PodPlan, Run};
use crate::run::logs::{LogFile, LogRotation};
use crate::run::process;
use crate::run::status::{ContainerStatus, PodStatus, ServiceStatus};

/// Restart backoff: 1 s doubling to 30 s, reset after a minute of running (kubelet-like but
/// quicker to start over, since local runs are interactive).
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// Until a pod is first ready it is probed often, so `skein up` returns quickly.
const STARTUP_PROBE_PERIOD: Duration = Duration::from_millis(250);

/// How long a pod taken away at run time stays out of its Services' endpoints, still
/// running, before it is stopped: the time the control plane needs to push the change, as
/// Kubernetes gives endpoint controllers before a terminating pod's SIGTERM lands.
pub const REMOVAL_DRAIN: Duration = Duration::from_secs(3);

/// The pods (those planned at start and those added since) and, for each, whether it is
/// ready and how its containers are doing.
pub struct Pods {
    /// The plan `skein up` started with. Its `pods` are the pods of the start; the live set
    /// is [`Pods::entries`].
    pub plan: Plan,
    entries: RwLock<Vec<Arc<PodEntry>>>,
    /// Wakes the status writer.
    pub changed: Notify,
    /// Round-robin cursor per service, shared by the ingress and the service forwarders.
    cursors: Vec<AtomicU32>,
    logs: LogRotation,
    /// The run's shutdown, once started.
    shutdown: Mutex<Option<watch::Receiver<bool>>>,
    /// Tasks of pods added at run time (and of removals), awaited at shutdown.
    late_tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The latest restart of each workload (`skein rollout restart`).
    pub(super) restarts: Mutex<Vec<crate::run::status::RestartStatus>>,
    /// One restart of a workload at a time.
    pub(super) restart_lock: tokio::sync::Mutex<()>,
}

/// One live pod.
pub struct PodEntry {
    pub plan: PodPlan,
    pub(super) ready: AtomicBool,
    /// Taken away: out of the endpoints, never ready again.
    pub(super) terminating: AtomicBool,
    /// Stops this pod alone.
    stop: watch::Sender<bool>,
    pub(super) containers: Vec<ContainerState>,
    /// How many times the pod's processes were replaced (`skein rollout restart`); a change
    /// makes every container stop and start again.
    pub(super) generation: watch::Sender<u64>,
    /// While true (a restart is taking the pod down), the readiness probe does not mark the
    /// pod ready.
    pub(super) restarting: AtomicBool,
    /// Held while readiness is set against `restarting`, so that a probe that started before a
    /// restart cannot mark the pod ready after the restart took it out.
    pub(super) gate: Mutex<()>,
    /// A pod that runs to completion (a Job's): true once its app containers are done.
    pub(super) finished: watch::Sender<bool>,
}

pub(super) struct ContainerState {
    pub(super) pid: AtomicU32,
    /// The pod generation the running process was started for.
    pub(super) started_generation: AtomicU64,
    /// A container of a pod that runs to completion: it exited for good.
    pub(super) done: AtomicBool,
    /// The running process's start time (`/proc/PID/stat`), 0 when unknown.
    proc_start: AtomicU64,
    restarts: AtomicU32,
    log: Arc<LogFile>,
    /// Human state and the last exit, read only by the status writer.
    detail: Mutex<(String, Option<String>)>,
}

/// Why a pod could not be added or removed at run time.
#[derive(Debug, thiserror::Error)]
pub enum PodsError {
    #[error("pod {0} exists already")]
    Exists(String),
    #[error("no pod {0}")]
    NoSuchPod(String),
    #[error("the runtime is shutting down")]
    ShuttingDown,
}

impl PodEntry {
    fn new(plan: PodPlan, logs: LogRotation) -> PodEntry {
        let containers = plan
            .containers
            .iter()
            .map(|c| ContainerState {
                pid: AtomicU32::new(0),
                started_generation: AtomicU64::new(0),
                done: AtomicBool::new(false),
                proc_start: AtomicU64::new(0),
                restarts: AtomicU32::new(0),
                log: Arc::new(LogFile::new(c.log.clone(), logs)),
                detail: Mutex::new(("Pending".into(), None)),
            })
            .collect();
        PodEntry {
            plan,
            ready: AtomicBool::new(false),
            terminating: AtomicBool::new(false),
            stop: watch::channel(false).0,
            containers,
            generation: watch::Sender::new(0),
            restarting: AtomicBool::new(false),
            gate: Mutex::new(()),
            finished: watch::Sender::new(false),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.terminating.load(Ordering::Acquire)
    }
}

impl Pods {
    pub fn new(plan: Plan, logs: LogRotation) -> Arc<Pods> {
        let entries = plan
            .pods
            .iter()
            .map(|p| Arc::new(PodEntry::new(p.clone(), logs)))
            .collect();
        let cursors = plan.services.iter().map(|_| AtomicU32::new(0)).collect();
        Arc::new(Pods {
            plan,
            entries: RwLock::new(entries),
            changed: Notify::new(),
            cursors,
            logs,
            shutdown: Mutex::new(None),
            late_tasks: Mutex::new(Vec::new()),
            restarts: Mutex::new(Vec::new()),
            restart_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The live pods, in the order they were added.
    pub fn entries(&self) -> Vec<Arc<PodEntry>> {
        self.entries.read().map(|e| e.clone()).unwrap_or_default()
    }

    /// The live pods' plans.
    pub fn pod_plans(&self) -> Vec<PodPlan> {
        self.entries().iter().map(|e| e.plan.clone()).collect()
    }

    /// The ready endpoints of a service port, rotated so callers can try them in order.
    pub fn endpoints(&self, service: usize, port: u16) -> Vec<SocketAddr> {
        let Some(s) = self.plan.services.get(service) else {
            return Vec::new();
        };
        let Some(sp) = s.ports.iter().find(|p| p.port == port) else {
            return Vec::new();
        };
        let mut ready: Vec<SocketAddr> = self
            .entries()
            .iter()
            .filter(|e| e.is_ready())
            .filter_map(|e| s.endpoint(sp, &e.plan))
            .collect();
        if !ready.is_empty() {
            let n = self.cursors[service].fetch_add(1, Ordering::Relaxed) as usize;
            let len = ready.len();
            ready.rotate_left(n % len);
        }
        ready
    }

    pub fn pod_statuses(&self) -> Vec<PodStatus> {
        self.entries().iter().map(|e| pod_status(e)).collect()
    }

    pub fn service_statuses(&self) -> Vec<ServiceStatus> {
        let entries = self.entries();
        self.plan
            .services
            .iter()
            .map(|s| ServiceStatus {
                name: s.name.clone(),
                namespace: s.namespace.clone(),
                cluster_ip: s.cluster_ip.to_string(),
                ports: s.ports.iter().map(|p| p.port).collect(),
                endpoints: s
                    .ports
                    .iter()
                    .flat_map(|sp| {
                        entries
                            .iter()
                            .filter(|e| e.is_ready())
                            .filter_map(move |e| s.endpoint(sp, &e.plan))
                    })
                    .map(|a| a.to_string())
                    .collect(),
            })
            .collect()
    }

    fn set_detail(&self, pod: &PodEntry, c: usize, state: &str, last_exit: Option<String>) {
        if let Ok(mut d) = pod.containers[c].detail.lock() {
            d.0 = state.to_string();
            if last_exit.is_some() {
                d.1 = last_exit;
            }
        }
        self.changed.notify_one();
    }

    pub(super) fn set_ready(&self, pod: &PodEntry, ready: bool) {
        let ready = ready && !pod.terminating.load(Ordering::Acquire);
        if pod.ready.swap(ready, Ordering::AcqRel) != ready {
            tracing::info!(pod = %pod.plan.name, ready, "readiness changed");
            self.changed.notify_one();
        }
    }

    /// A container of a pod that runs to completion exited for good: once every app
    /// container has, the pod is finished (and its sidecar stops).
    fn container_done(&self, pod: &PodEntry, c: usize) {
        pod.containers[c].done.store(true, Ordering::Release);
        let proxy = pod.plan.proxy.as_ref().map(|p| p.container);
        let all = pod
            .containers
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != proxy)
            .all(|(_, c)| c.done.load(Ordering::Acquire));
        if all {
            pod.finished.send_replace(true);
        }
        self.changed.notify_one();
    }

    /// Starts every pod's containers and readiness probe. The tasks end once `shutdown`
    /// turns true, after the processes have been stopped.
    pub fn start(
        self: &Arc<Self>,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        if let Ok(mut s) = self.shutdown.lock() {
            *s = Some(shutdown.clone());
        }
        let mut tasks = Vec::new();
        for entry in self.entries() {
            tasks.extend(self.spawn_pod(entry, shutdown.clone()));
        }
        tasks
    }

    fn spawn_pod(
        self: &Arc<Self>,
        entry: Arc<PodEntry>,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let stop = pod_stop(entry.stop.subscribe(), shutdown);
        let mut tasks = Vec::new();
        for c in 0..entry.containers.len() {
            tasks.push(tokio::spawn(run_container(
                self.clone(),
                entry.clone(),
                c,
                stop.clone(),
            )));
        }
        tasks.push(tokio::spawn(probe_pod(self.clone(), entry, stop)));
        tasks
    }

    /// Adds a pod while the run lasts and starts it. Its name must be new.
    pub fn add(self: &Arc<Self>, plan: PodPlan) -> Result<(), PodsError> {
        let shutdown = self
            .shutdown
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .filter(|s| !*s.borrow())
            .ok_or(PodsError::ShuttingDown)?;
        let entry = Arc::new(PodEntry::new(plan, self.logs));
        {
            let mut entries = self.entries.write().map_err(|_| PodsError::ShuttingDown)?;
            if entries.iter().any(|e| e.plan.name == entry.plan.name) {
                return Err(PodsError::Exists(entry.plan.name.clone()));
            }
            entries.push(entry.clone());
        }
        tracing::info!(pod = %entry.plan.name, "pod added");
        let tasks = self.spawn_pod(entry, shutdown);
        if let Ok(mut late) = self.late_tasks.lock() {
            late.retain(|t| !t.is_finished());
            late.extend(tasks);
        }
        self.changed.notify_one();
        Ok(())
    }

    /// Takes a pod away: out of its Services' endpoints at once, stopped after
    /// [`REMOVAL_DRAIN`] (SIGTERM, then SIGKILL after its grace period), then gone from the
    /// status.
    pub fn remove(self: &Arc<Self>, name: &str) -> Result<(), PodsError> {
        let entry = self
            .entries()
            .into_iter()
            .find(|e| e.plan.name == name && !e.terminating.load(Ordering::Acquire))
            .ok_or_else(|| PodsError::NoSuchPod(name.to_string()))?;
        entry.terminating.store(true, Ordering::Release);
        entry.ready.store(false, Ordering::Release);
        self.changed.notify_one();
        tracing::info!(pod = %name, "pod removed; stopping it after the drain");
        let pods = self.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(REMOVAL_DRAIN).await;
            let _ = entry.stop.send(true);
            // The containers' tasks see the stop, terminate and report Terminated.
            let deadline = Instant::now() + entry.plan.grace + Duration::from_secs(2);
            while entry
                .containers
                .iter()
                .any(|c| c.pid.load(Ordering::Acquire) != 0)
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if let Ok(mut entries) = pods.entries.write() {
                entries.retain(|e| !Arc::ptr_eq(e, &entry));
            }
            pods.changed.notify_one();
        });
        if let Ok(mut late) = self.late_tasks.lock() {
            late.retain(|t| !t.is_finished());
            late.push(task);
        }
        Ok(())
    }

    /// Waits for the tasks of pods added or removed at run time (after shutdown).
    pub async fn join_late(&self) {
        let tasks = self
            .late_tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// A pod's stop signal: its own, or the run's shutdown, whichever comes first.
fn pod_stop(
    mut own: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(*own.borrow() || *shutdown.borrow());
    tokio::spawn(async move {
        tokio::select! {
            _ = stopped(&mut own) => {}
            _ = stopped(&mut shutdown) => {}
            _ = tx.closed() => return,
        }
        let _ = tx.send(true);
    });
    rx
}

/// What `skein status` shows of one pod.
fn pod_status(entry: &PodEntry) -> PodStatus {
    let (plan, st) = (&entry.plan, entry);
    let containers: Vec<ContainerStatus> = plan
        .containers
        .iter()
        .zip(&st.containers)
        .map(|(cp, cs)| {
            let (state, last_exit) = cs.detail.lock().map(|d| d.clone()).unwrap_or_default();
            ContainerStatus {
                name: cp.name.clone(),
                pid: cs.pid.load(Ordering::Acquire),
                proc_start: Some(cs.proc_start.load(Ordering::Acquire)).filter(|t| *t != 0),
                state,
                restarts: cs.restarts.load(Ordering::Acquire),
                last_exit,
                logs: cp.log.display().to_string(),
                command: cp.run.describe(),
                mounts: cp
                    .mounts
                    .iter()
                    .map(|(m, l)| (m.clone(), l.display().to_string()))
                    .collect(),
            }
        })
        .collect();
    let ready = st.is_ready();
    let state = if st.terminating.load(Ordering::Acquire) {
        "Terminating".to_string()
    } else if ready {
        "Ready".to_string()
    } else if containers
        .iter()
        .any(|c| c.state == "CrashLoopBackOff" || c.state.starts_with("Error"))
    {
        "CrashLoopBackOff".to_string()
    } else if containers.iter().all(|c| c.state == "Running") {
        "Running".to_string()
    } else {
        containers
            .first()
            .map(|c| c.state.clone())
            .unwrap_or_default()
    };
    let state = if plan.run_to_completion.is_some() && *st.finished.borrow() {
        if containers.iter().any(|c| c.state == "Failed") {
            "Failed".to_string()
        } else {
            "Succeeded".to_string()
        }
    } else {
        state
    };
    let proxy = plan
        .proxy
        .as_ref()
        .map(|p| crate::run::status::ProxyStatus {
            mode: p.mode.as_str().to_string(),
            pid: containers.get(p.container).map_or(0, |c| c.pid),
            admin: format!("http://{}", p.admin),
            outbound_ip: p.outbound_ip.map(|ip| ip.to_string()),
            outbound_http: p.outbound_http.map(|a| a.to_string()),
            app_ip: p.app_ip.map(|ip| ip.to_string()),
            config_version: None,
            connected: false,
        });
    PodStatus {
        name: plan.name.clone(),
        namespace: plan.namespace.clone(),
        workload: plan.workload.clone(),
        workload_kind: plan.workload_kind.to_string(),
        generation: *st.generation.borrow(),
        labels: plan.labels.clone(),
        service_account: plan.service_account.clone(),
        ip: plan.ip.to_string(),
        ports: plan.ports.iter().map(|p| p.port).collect(),
        port_names: plan
            .ports
            .iter()
            .filter_map(|p| Some((p.name.clone()?, p.port)))
            .collect(),
        proxy,
        bootstrap_token_sha256: plan.bootstrap_token_sha256.clone(),
        pid: containers.first().map_or(0, |c| c.pid),
        state,
        ready,
        restarts: containers.iter().map(|c| c.restarts).sum(),
        logs: containers
            .first()
            .map(|c| c.logs.clone())
            .unwrap_or_default(),
        containers,
    }
}

/// Builds and starts the container's process. Preparing a database can block for seconds, so
/// the command is built off the async workers.
async fn spawn(container: &ContainerPlan) -> Result<tokio::process::Child, String> {
    let built = {
        let container = container.clone();
        tokio::task::spawn_blocking(move || command_for(&container)).await
    };
    built
        .map_err(|e| e.to_string())
        .and_then(|r| r)
        .and_then(|mut cmd| {
            cmd.spawn()
                .map_err(|e| format!("cannot start {}: {e}", container.run.describe().join(" ")))
        })
}

fn command_for(c: &ContainerPlan) -> Result<tokio::process::Command, String> {
    let (program, args) = match &c.run {
        Run::Program { program, args } => (program.clone(), args.clone()),
        Run::MariaDb(cfg) => {
            let bins = crate::mysql::find_server().map_err(|e| e.to_string())?;
            crate::mysql::prepare(cfg, &bins).map_err(|e| e.to_string())?;
            let std_cmd = crate::mysql::server_command(cfg, &bins);
            let program = std::path::PathBuf::from(std_cmd.get_program());
            let args = std_cmd
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            (program, args)
        }
    };
    // Output goes through the supervisor, which writes it to the rotated log.
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&args)
        .env_clear()
        .envs(c.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    Ok(cmd)
}

async fn run_container(
    pods: Arc<Pods>,
    entry: Arc<PodEntry>,
    c: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let pod = &entry.plan;
    let container = &pod.containers[c];
    let state = &entry.containers[c];
    let p = &*entry;
    let mut generation = entry.generation.subscribe();
    let mut finished = entry.finished.subscribe();
    let is_proxy = pod.proxy.as_ref().is_some_and(|px| px.container == c);
    let stops_with_pod = is_proxy && pod.run_to_completion.is_some();
    let mut failures = 0u32;
    let mut backoff = BACKOFF_START;
    // A StatefulSet's pods start in order: this one once the one before is ready (while
    // that pod is part of the run).
    if let Some(prev) = &pod.start_after {
        pods.set_detail(p, c, "Waiting", None);
        loop {
            let before = pods.entries().into_iter().find(|e| &e.plan.name == prev);
            if before.is_none_or(|e| e.is_ready()) {
                break;
            }
            if wait_or_shutdown(Duration::from_millis(100), &mut shutdown).await {
                return;
            }
        }
    }
    loop {
        if *shutdown.borrow() {
            break;
        }
        let started_generation = *generation.borrow_and_update();
        let mut child = match spawn(container).await {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(pod = %pod.name, container = %container.name, "{e}");
                state.log.line(&format!("skein: {e}"));
                pods.set_detail(p, c, "Error", Some(e));
                state.restarts.fetch_add(1, Ordering::AcqRel);
                if wait_or_shutdown(backoff, &mut shutdown).await {
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let pid = child.id().unwrap_or(0);
        let pumps = [
            child.stdout.take().map(|o| pump(o, state.log.clone())),
            child.stderr.take().map(|o| pump(o, state.log.clone())),
        ];
        state
            .proc_start
            .store(process::start_time(pid).unwrap_or(0), Ordering::Release);
        state
            .started_generation
            .store(started_generation, Ordering::Release);
        state.pid.store(pid, Ordering::Release);
        pods.set_detail(p, c, "Running", None);
        tracing::info!(pod = %pod.name, container = %container.name, pid, "started");
        let started = Instant::now();
        let exited = tokio::select! {
            status = child.wait() => Exit::Exited(status),
            _ = stopped(&mut shutdown) => Exit::Shutdown,
            _ = generation.changed() => Exit::Replace,
            _ = finished.wait_for(|f| *f), if stops_with_pod => Exit::Shutdown,
        };
        match exited {
            Exit::Replace => {
                // `skein rollout restart`: a new process, as a new pod would have, without
                // backoff and with its restart count starting over.
                pods.set_detail(p, c, "Terminating", None);
                stop_child(&mut child, pid, pod.grace).await;
                state.pid.store(0, Ordering::Release);
                state.proc_start.store(0, Ordering::Release);
                drain(pumps).await;
                state.restarts.store(0, Ordering::Release);
                backoff = BACKOFF_START;
                tracing::info!(pod = %pod.name, container = %container.name, pid, "replaced by rollout restart");
                state
                    .log
                    .line("skein: rollout restart: starting a new process");
            }
            Exit::Exited(status) => {
                state.pid.store(0, Ordering::Release);
                state.proc_start.store(0, Ordering::Release);
                drain(pumps).await;
                pods.set_ready(p, false);
                let success = matches!(&status, Ok(s) if s.success());
                let exit = match status {
                    Ok(s) => describe_exit(s),
                    Err(e) => format!("wait failed: {e}"),
                };
                if let Some(limit) = pod.run_to_completion
                    && !is_proxy
                {
                    if success || failures >= limit {
                        let word = if success { "Completed" } else { "Failed" };
                        tracing::info!(pod = %pod.name, container = %container.name, %exit, "container {word}; not restarted");
                        state.log.line(&format!(
                            "skein: container exited ({exit}); {word}, not restarted"
                        ));
                        pods.set_detail(p, c, word, Some(exit));
                        pods.container_done(p, c);
                        break;
                    }
                    failures += 1;
                }
                if started.elapsed() >= BACKOFF_RESET_AFTER {
                    backoff = BACKOFF_START;
                }
                tracing::warn!(pod = %pod.name, container = %container.name, %exit, "container exited; restarting in {:?}", backoff);
                state.log.line(&format!(
                    "skein: container exited ({exit}); restarting in {}s",
                    backoff.as_secs()
                ));
                state.restarts.fetch_add(1, Ordering::AcqRel);
                pods.set_detail(p, c, "CrashLoopBackOff", Some(exit));
                if wait_or_shutdown(backoff, &mut shutdown).await {
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Exit::Shutdown => {
                pods.set_detail(p, c, "Terminating", None);
                stop_child(&mut child, pid, pod.grace).await;
                state.pid.store(0, Ordering::Release);
                state.proc_start.store(0, Ordering::Release);
                drain(pumps).await;
                pods.set_detail(p, c, "Terminated", None);
                break;
            }
        }
    }
}

/// Why a container's process is no longer waited for.
enum Exit {
    Exited(std::io::Result<std::process::ExitStatus>),
    Shutdown,
    Replace,
}

/// SIGTERM to the container's process group, SIGKILL after the grace period.
async fn stop_child(child: &mut tokio::process::Child, pid: u32, grace: Duration) {
    if pid != 0 {
        process::signal_group(pid, process::Signal::TERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        if pid != 0 {
            process::signal_group(pid, process::Signal::KILL);
        }
        let _ = child.wait().await;
    } else if pid != 0 {
        // Whatever the container forked and left behind goes with it.
        process::signal_group(pid, process::Signal::KILL);
    }
}

fn describe_exit(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "exited".to_string(),
    }
}

/// Copies a container's stdout or stderr into its log until every writer has closed it.
fn pump<R>(mut from: R, log: Arc<LogFile>) -> tokio::task::JoinHandle<()>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut warned = false;
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    // Keep reading even when the log cannot be written, so the container
                    // never blocks on a full pipe.
                    if let Err(e) = log.write(&buf[..n])
                        && !warned
                    {
                        tracing::warn!("cannot write {}: {e}", log.path().display());
                        warned = true;
                    }
                }
            }
        }
    })
}

/// Lets the pumps write what the exited container left in its pipes (a helper it forked
/// may keep them open: that is not waited for).
async fn drain(pumps: [Option<tokio::task::JoinHandle<()>>; 2]) {
    for p in pumps.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_millis(500), p).await;
    }
}

pub(super) fn all_running(pod: &PodEntry) -> bool {
    pod.containers
        .iter()
        .all(|c| c.pid.load(Ordering::Acquire) != 0)
}

/// Sleeps, unless shutdown comes first; returns whether it did.
async fn wait_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stopped(shutdown) => {}
    }
    *shutdown.borrow()
}

/// Resolves once shutdown is asked for (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

async fn probe_pod(pods: Arc<Pods>, entry: Arc<PodEntry>, mut shutdown: watch::Receiver<bool>) {
    let pod = &entry.plan;
    let p = &*entry;
    let mut checks: Vec<(std::net::IpAddr, Check)> = match &pod.readiness {
        Some(r) => vec![(pod.probe_ip.into(), r.check.clone())],
        None => pod
            .ports
            .iter()
            .map(|np| (pod.probe_ip.into(), Check::Tcp { port: np.port }))
            .collect(),
    };
    // A pod with a sidecar is ready once its sidecar has its config, as Istio's agent
    // makes the kubelet's probe wait for Envoy.
    if let Some(p) = pod
        .proxy
        .as_ref()
        .filter(|p| p.mode == crate::plan::ProxyMode::Sidecar)
    {
        checks.push((
            p.admin.ip(),
            Check::Http {
                port: p.admin.port(),
                path: "/ready".into(),
            },
        ));
    }
    let (initial_delay, period, timeout, threshold) = match &pod.readiness {
        Some(r) => (r.initial_delay, r.period, r.timeout, r.failure_threshold),
        None => (
            Duration::ZERO,
            Duration::from_secs(10),
            Duration::from_secs(1),
            3,
        ),
    };
    let mut failures = 0u32;
    let mut running_since: Option<Instant> = None;
    loop {
        let ready = entry.ready.load(Ordering::Acquire);
        let wait = if ready { period } else { STARTUP_PROBE_PERIOD };
        if wait_or_shutdown(wait, &mut shutdown).await {
            return;
        }
        if !all_running(&entry) || entry.restarting.load(Ordering::Acquire) {
            running_since = None;
            continue;
        }
        let since = *running_since.get_or_insert_with(Instant::now);
        if since.elapsed() < initial_delay {
            continue;
        }
        let mut ok = true;
        for (ip, check) in &checks {
            if !run_check(*ip, check, timeout).await {
                ok = false;
                break;
            }
        }
        if ok {
            failures = 0;
            let _gate = entry.gate.lock();
            if !entry.restarting.load(Ordering::Acquire) {
                pods.set_ready(p, true);
            }
        } else {
            failures += 1;
            if !ready || failures >= threshold {
                pods.set_ready(p, false);
            }
        }
    }
}

/// One probe, as the kubelet does it: HTTP success is a status in 200..400.
pub async fn run_check(ip: std::net::IpAddr, check: &Check, timeout: Duration) -> bool {
    match check {
        Check::Tcp { port } => tokio::time::timeout(timeout, TcpStream::connect((ip, *port)))
            .await
            .is_ok_and(|c| c.is_ok()),
        Check::Http { port, path } => {
            crate::client::probe_get(SocketAddr::from((ip, *port)), path, timeout)
                .await
                .is_ok_and(|status| (200..400).contains(&status.as_u16()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{DatabaseMode, DatabasePlan, NamedPort, PrometheusState};

    fn pod(name: &str, dir: &std::path::Path) -> PodPlan {
        PodPlan {
            name: name.into(),
            namespace: "ns".into(),
            workload: "w".into(),
            workload_kind: "Rollout",
            labels: [("app".to_string(), "w".to_string())].into(),
            service_account: "default".into(),
            ip: std::net::Ipv4Addr::LOCALHOST,
            probe_ip: std::net::Ipv4Addr::LOCALHOST,
            ports: vec![NamedPort {
                name: Some("http".into()),
                port: 9,
            }],
            containers: vec![ContainerPlan {
                name: "c".into(),
                run: Run::Program {
                    program: "/bin/sleep".into(),
                    args: vec!["30".into()],
                },
                env: Vec::new(),
                log: dir.join(format!("{name}.log")),
                mounts: Vec::new(),
            }],
            readiness: None,
            run_to_completion: None,
            start_after: None,
            grace: Duration::from_secs(1),
            proxy: None,
            bootstrap_token_sha256: None,
            scrape: None,
            app_metrics: None,
        }
    }

    fn empty_plan() -> Plan {
        Plan {
            pods: Vec::new(),
            services: Vec::new(),
            ingress: Vec::new(),
            database: DatabasePlan {
                mode: DatabaseMode::Sqlite,
                location: String::new(),
            },
            hosts: Vec::new(),
            prometheus: PrometheusState::Off,
            tracing: None,
            dashboard: None,
        }
    }

    /// A pod added while the run lasts starts; removed, it is Terminating, then stopped and
    /// gone; a name in use and a removal after shutdown are refused.
    #[tokio::test]
    async fn pods_come_and_go_while_the_run_lasts() {
        let dir = tempfile::tempdir().unwrap();
        let pods = Pods::new(empty_plan(), LogRotation::default());
        let (tx, rx) = watch::channel(false);
        let tasks = pods.start(rx);
        assert!(tasks.is_empty());
        pods.add(pod("w-abc-1", dir.path())).unwrap();
        assert!(matches!(
            pods.add(pod("w-abc-1", dir.path())),
            Err(PodsError::Exists(_))
        ));
        let pid = loop {
            let s = pods.pod_statuses();
            if s[0].pid != 0 {
                break s[0].pid;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(process::is_alive(pid));
        pods.remove("w-abc-1").unwrap();
        assert_eq!(pods.pod_statuses()[0].state, "Terminating");
        assert!(matches!(
            pods.remove("w-abc-1"),
            Err(PodsError::NoSuchPod(_))
        ));
        let deadline = Instant::now() + REMOVAL_DRAIN + Duration::from_secs(5);
        while !pods.entries().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(pods.entries().is_empty(), "the removed pod is gone");
        assert!(!process::is_alive(pid), "its process was stopped");
        tx.send(true).unwrap();
        pods.join_late().await;
        assert!(matches!(
            pods.add(pod("w-abc-2", dir.path())),
            Err(PodsError::ShuttingDown)
        ));
    }

    /// A pod added while the run lasts (a Rollout's) is restarted like a planned one: new
    /// processes of the next generation, ready again, and the restart Complete.
    #[tokio::test]
    async fn a_pod_added_at_run_time_is_restarted() {
        let dir = tempfile::tempdir().unwrap();
        let pods = Pods::new(empty_plan(), LogRotation::default());
        let (tx, rx) = watch::channel(false);
        let _tasks = pods.start(rx);
        let mut plan = pod("w-abc-1", dir.path());
        plan.ports.clear();
        pods.add(plan).unwrap();
        let ready_pid = |pods: &Pods| {
            let s = pods.pod_statuses();
            (s[0].ready && s[0].pid != 0).then_some((s[0].pid, s[0].generation))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let before = loop {
            if let Some(p) = ready_pid(&pods) {
                break p;
            }
            assert!(Instant::now() < deadline, "{:?}", pods.pod_statuses());
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(before.1, 0);
        assert!(
            pods.restart_workload("Deployment", "ns", "w", "r0", Arc::new(|_| true))
                .is_err(),
            "another kind's workload of that name has no pods"
        );
        pods.restart_workload("Rollout", "ns", "w", "r1", Arc::new(|_| true))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let done = pods
                .restart_statuses()
                .iter()
                .any(|r| r.request == "r1" && r.state == "Complete");
            if done && let Some(after) = ready_pid(&pods) {
                assert_ne!(after.0, before.0, "a new process");
                assert_eq!(after.1, 1, "the next generation");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{:?} {:?}",
                pods.restart_statuses(),
                pods.pod_statuses()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!process::is_alive(before.0), "the old process was stopped");
        tx.send(true).unwrap();
        pods.join_late().await;
    }
}
