//! Argo Rollouts' analysis engine: an AnalysisRun's metrics measured against Prometheus at
//! their `initialDelay` and `interval`, judged by their conditions, counted against their
//! limits, with Argo's phases, messages and status.
//!
//! - `template`: templates and args to resolved metrics (`prepare`).
//! - `engine`: the run as a pure state machine over offsets from its start.
//! - this module: the API the Rollout controller calls (`prepare`, `start`, `AnalysisHandle`),
//!   the task that drives a run on tokio's clock, the Prometheus provider, and the runs a user
//!   writes as AnalysisRun objects (`start_manifest_runs`, status files under
//!   `analysisruns/NS.NAME.json`).
//!
//! Dependencies: this module → `template` → `engine`.

mod engine;
mod template;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::prom::{PromClient, QueryValue};
use engine::{Engine, Measurement, Outcome, ResolvedMetric};

/// Why an analysis could not start. Each message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalysisError {
    #[error("{0}")]
    Template(String),
    #[error("{0}")]
    Args(String),
    #[error("metric {metric:?}: {reason}")]
    Metric { metric: String, reason: String },
    #[error("AnalysisRun {0}: no metrics specified")]
    NoMetrics(String),
}

/// A run's or a metric's phase, Argo's `AnalysisPhase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnalysisPhase {
    Pending,
    Running,
    Successful,
    Failed,
    Error,
    Inconclusive,
}

impl AnalysisPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            AnalysisPhase::Pending => "Pending",
            AnalysisPhase::Running => "Running",
            AnalysisPhase::Successful => "Successful",
            AnalysisPhase::Failed => "Failed",
            AnalysisPhase::Error => "Error",
            AnalysisPhase::Inconclusive => "Inconclusive",
        }
    }

    /// Successful, Failed, Error or Inconclusive.
    pub fn completed(self) -> bool {
        !matches!(self, AnalysisPhase::Pending | AnalysisPhase::Running)
    }

    /// Argo's order: Pending, Running, Successful, Inconclusive, Error, Failed.
    fn rank(self) -> u8 {
        match self {
            AnalysisPhase::Pending => 0,
            AnalysisPhase::Running => 1,
            AnalysisPhase::Successful => 2,
            AnalysisPhase::Inconclusive => 3,
            AnalysisPhase::Error => 4,
            AnalysisPhase::Failed => 5,
        }
    }

    pub(crate) fn worse_than(self, other: AnalysisPhase) -> bool {
        self.rank() > other.rank()
    }
}

impl std::fmt::Display for AnalysisPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the Rollout controller asks for: which templates, with which args, under which name.
pub struct AnalysisRequest<'a> {
    /// To find the templates (and the Secrets of `valueFrom.secretKeyRef` args).
    pub manifests: &'a skein_api::Manifests,
    pub namespace: &'a str,
    /// (templateName, clusterScope).
    pub templates: &'a [(String, bool)],
    /// Resolved args (name, value); they override the templates' own values.
    pub args: &'a [(String, String)],
    /// e.g. "web-6d4f9c-2-1".
    pub run_name: String,
}

/// A run ready to start: templates found, args substituted, every metric parsed.
#[derive(Debug, Clone)]
pub struct PreparedAnalysis {
    name: String,
    namespace: String,
    metrics: Vec<ResolvedMetric>,
    terminate: bool,
}

impl PreparedAnalysis {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The metrics' names, in order.
    pub fn metric_names(&self) -> Vec<&str> {
        self.metrics.iter().map(|m| m.name.as_str()).collect()
    }
}

/// Resolves the templates, merges and checks the args, substitutes them and parses every
/// metric. Nothing is measured yet.
pub fn prepare(req: AnalysisRequest<'_>) -> Result<PreparedAnalysis, AnalysisError> {
    let gathered = template::gather(req.manifests, req.namespace, req.templates)?;
    if gathered.metrics.is_empty() {
        return Err(AnalysisError::NoMetrics(format!(
            "{}/{}",
            req.namespace, req.run_name
        )));
    }
    let args = template::resolve_args(req.manifests, req.namespace, &gathered.args, req.args)?;
    let metrics = resolve_all(
        &gathered.metrics,
        &args,
        &gathered.dry_run,
        &gathered.retention,
    )?;
    Ok(PreparedAnalysis {
        name: req.run_name,
        namespace: req.namespace.to_string(),
        metrics,
        terminate: false,
    })
}

/// An AnalysisRun object as written (its own metrics and args; `terminate: true` ends it at
/// once with what it has, which is nothing: Successful).
pub fn prepare_run(
    manifests: &skein_api::Manifests,
    run: &skein_api::analysis::AnalysisRun,
) -> Result<PreparedAnalysis, AnalysisError> {
    let namespace = run.metadata.namespace_or_default().to_string();
    let name = run.metadata.name.clone();
    if run.spec.metrics.is_empty() {
        return Err(AnalysisError::NoMetrics(format!("{namespace}/{name}")));
    }
    let args = template::resolve_args(manifests, &namespace, &run.spec.args, &[])?;
    let metrics = resolve_all(
        &run.spec.metrics,
        &args,
        &run.spec.dry_run,
        &run.spec.measurement_retention,
    )?;
    Ok(PreparedAnalysis {
        name,
        namespace,
        metrics,
        terminate: run.spec.terminate,
    })
}

fn resolve_all(
    metrics: &[skein_api::analysis::Metric],
    args: &[(String, String)],
    dry_run: &[skein_api::analysis::DryRun],
    retention: &[skein_api::analysis::MeasurementRetention],
) -> Result<Vec<ResolvedMetric>, AnalysisError> {
    metrics
        .iter()
        .map(|m| {
            let m = template::substitute_metric(m, args).map_err(|e| AnalysisError::Metric {
                metric: m.name.clone(),
                reason: e.to_string(),
            })?;
            template::resolve_metric(&m, dry_run, retention)
        })
        .collect()
}

/// Turns a Service name of a Prometheus address (`prometheus.istio-system.svc`, with its
/// port) into the address the runtime serves it on. `None`: no such Service.
pub trait Resolve: Send + Sync {
    fn resolve(&self, host: &str, port: u16) -> Option<SocketAddr>;
}

/// A function is a resolver: `Arc::new(|host: &str, port: u16| ...)`.
impl<F> Resolve for F
where
    F: Fn(&str, u16) -> Option<SocketAddr> + Send + Sync,
{
    fn resolve(&self, host: &str, port: u16) -> Option<SocketAddr> {
        self(host, port)
    }
}

/// Resolves nothing but IP addresses (which need no resolver).
pub struct NoNames;

impl Resolve for NoNames {
    fn resolve(&self, _host: &str, _port: u16) -> Option<SocketAddr> {
        None
    }
}

/// The runtime's Services by their cluster names (`NAME`, `NAME.NS`, `NAME.NS.svc`,
/// `NAME.NS.svc.cluster.local`), each port with the address that serves it.
#[derive(Debug, Clone, Default)]
pub struct ServiceNames {
    services: Vec<NamedService>,
}

/// A Service's names, and each of its ports with the address that serves it.
pub type NamedService = (Vec<String>, Vec<(u16, SocketAddr)>);

impl ServiceNames {
    /// `(names, [(service port, address)])` per Service.
    pub fn new(services: Vec<NamedService>) -> ServiceNames {
        ServiceNames { services }
    }
}

impl Resolve for ServiceNames {
    fn resolve(&self, host: &str, port: u16) -> Option<SocketAddr> {
        let host = host.trim_end_matches('.');
        self.services
            .iter()
            .filter(|(names, _)| names.iter().any(|n| n.eq_ignore_ascii_case(host)))
            .find_map(|(_, ports)| ports.iter().find(|(p, _)| *p == port).map(|(_, a)| *a))
    }
}

struct Shared {
    name: String,
    snapshot: Mutex<Snapshot>,
    phase: watch::Sender<AnalysisPhase>,
    terminate: watch::Sender<bool>,
}

#[derive(Clone)]
struct Snapshot {
    message: String,
    status: serde_json::Value,
}

/// A running analysis. Cloning gives another handle on the same run; dropping every handle
/// does not stop it (use [`AnalysisHandle::terminate`]).
#[derive(Clone)]
pub struct AnalysisHandle {
    shared: Arc<Shared>,
}

impl AnalysisHandle {
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn phase(&self) -> AnalysisPhase {
        *self.shared.phase.borrow()
    }

    /// Argo's AnalysisRun `status`: `phase`, `message`, `startedAt`, `completedAt`,
    /// `metricResults[]` (with their `measurements[]`), `runSummary`.
    pub fn status(&self) -> serde_json::Value {
        self.snapshot().status
    }

    /// Why the run ended as it did, e.g. `Metric "success-rate" assessed Failed due to failed
    /// (1) > failureLimit (0); last measured value [0.61]`; empty while it runs or when it
    /// succeeded.
    pub fn message(&self) -> String {
        self.snapshot().message
    }

    fn snapshot(&self) -> Snapshot {
        match self.shared.snapshot.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Waits for a terminal phase (Successful, Failed, Error, Inconclusive).
    pub async fn finished(&self) -> AnalysisPhase {
        let mut rx = self.shared.phase.subscribe();
        loop {
            let p = *rx.borrow_and_update();
            if p.completed() {
                return p;
            }
            if rx.changed().await.is_err() {
                return *rx.borrow();
            }
        }
    }

    /// Stops measuring: the run ends Successful unless a metric already failed (Argo's
    /// `terminate`).
    pub fn terminate(&self) {
        self.shared.terminate.send_replace(true);
    }
}

/// Starts measuring on the current tokio runtime.
pub fn start(prepared: PreparedAnalysis, resolver: Arc<dyn Resolve>) -> AnalysisHandle {
    start_with(prepared, Arc::new(Prometheus { resolver }), None)
}

/// Like [`start`], keeping the run's status in `STATE/analysisruns/NS.NAME.json` (where
/// `skein get analysisrun` reads it) as it changes.
pub fn start_in(
    prepared: PreparedAnalysis,
    resolver: Arc<dyn Resolve>,
    state_root: &Path,
) -> Result<AnalysisHandle, AnalysisError> {
    for (what, name) in [
        ("namespace", &prepared.namespace),
        ("AnalysisRun", &prepared.name),
    ] {
        crate::naming::path_component(what, name).map_err(AnalysisError::Template)?;
    }
    let file = status_file(state_root, &prepared.namespace, &prepared.name);
    Ok(start_with(
        prepared,
        Arc::new(Prometheus { resolver }),
        Some(file),
    ))
}

/// Starts one AnalysisRun of the config, its status in `STATE/analysisruns/NS.NAME.json`;
/// None (an Error status written) when its spec does not resolve.
fn start_manifest_run(
    manifests: &skein_api::Manifests,
    run: &skein_api::analysis::AnalysisRun,
    state_root: &Path,
    resolver: &Arc<dyn Resolve>,
) -> Option<AnalysisHandle> {
    let ns = run.metadata.namespace_or_default();
    if let Err(e) = crate::naming::path_component("namespace", ns)
        .and_then(|_| crate::naming::path_component("AnalysisRun", &run.metadata.name))
    {
        tracing::warn!("analysis: {e}");
        return None;
    }
    let file = status_file(state_root, ns, &run.metadata.name);
    match prepare_run(manifests, run) {
        Ok(p) => Some(start_with(
            p,
            Arc::new(Prometheus {
                resolver: resolver.clone(),
            }),
            Some(file),
        )),
        Err(e) => {
            let status = serde_json::json!({
                "phase": "Error",
                "message": format!("analysis spec invalid: {e}"),
                "startedAt": now_rfc3339(),
            });
            write_status(&file, &status);
            None
        }
    }
}

/// Removes the statuses of an earlier `skein up`'s runs: they are over.
fn clear_statuses(state_root: &Path) {
    let dir = state_root.join("analysisruns");
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if entry.path().extension().is_some_and(|e| e == "json") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Every AnalysisRun of `manifests`, started now (the runs of an earlier `skein up` are
/// cleared first).
pub fn start_manifest_runs(
    manifests: &skein_api::Manifests,
    state_root: &Path,
    resolver: Arc<dyn Resolve>,
) -> Vec<AnalysisHandle> {
    clear_statuses(state_root);
    manifests
        .analysis_runs()
        .filter_map(|run| start_manifest_run(manifests, run, state_root, &resolver))
        .collect()
}

/// How long an AnalysisRun must be missing from a config that loads before it counts as
/// deleted (a file being rewritten can load without it for a moment).
const RUN_DELETE_AFTER: Duration = Duration::from_secs(2);

/// One AnalysisRun of the config in force, as the watcher runs it.
struct Watched {
    /// The spec it was started from, without `terminate`.
    spec: serde_json::Value,
    handle: Option<AnalysisHandle>,
    terminated: bool,
    missing_since: Option<Instant>,
}

/// Keeps the AnalysisRuns of the config in force running as it changes (the manifests, a
/// `skein apply`, a GitOps sync), as Argo's controller does: a new run starts, `terminate:
/// true` ends one with what it has, a changed spec starts it again, a deleted one stops and
/// its status goes. Looks every second; a config that does not load changes nothing.
pub(crate) async fn watch_manifest_runs(
    source: PathBuf,
    applied: PathBuf,
    state_root: PathBuf,
    resolver: Arc<dyn Resolve>,
    mut shutdown: watch::Receiver<bool>,
) {
    clear_statuses(&state_root);
    let mut runs: std::collections::HashMap<(String, String), Watched> = Default::default();
    let mut gone: Vec<(AnalysisHandle, PathBuf)> = Vec::new();
    loop {
        if let Some(config) = crate::live_config::load(&source, &applied) {
            let mut seen = std::collections::HashSet::new();
            for run in config.analysis_runs() {
                let key = (
                    run.metadata.namespace_or_default().to_string(),
                    run.metadata.name.clone(),
                );
                let mut spec = serde_json::to_value(&run.spec).unwrap_or_default();
                if let Some(o) = spec.as_object_mut() {
                    o.remove("terminate");
                }
                seen.insert(key.clone());
                let restart = runs.get(&key).is_none_or(|w| w.spec != spec);
                if restart {
                    if let Some(h) = runs.get(&key).and_then(|w| w.handle.as_ref()) {
                        h.terminate();
                    }
                    tracing::info!(namespace = %key.0, run = %key.1, "analysis run started");
                    let handle = start_manifest_run(&config, run, &state_root, &resolver);
                    runs.insert(
                        key.clone(),
                        Watched {
                            spec,
                            handle,
                            terminated: false,
                            missing_since: None,
                        },
                    );
                }
                if let Some(w) = runs.get_mut(&key) {
                    w.missing_since = None;
                    if run.spec.terminate && !w.terminated {
                        w.terminated = true;
                        if let Some(h) = &w.handle {
                            h.terminate();
                        }
                    }
                }
            }
            runs.retain(|(ns, name), w| {
                if seen.contains(&(ns.clone(), name.clone())) {
                    return true;
                }
                let since = *w.missing_since.get_or_insert_with(Instant::now);
                if since.elapsed() < RUN_DELETE_AFTER {
                    return true;
                }
                tracing::info!(namespace = %ns, run = %name, "analysis run deleted");
                let file = status_file(&state_root, ns, name);
                match w.handle.take() {
                    // Its task writes a last status as it ends: the file goes after that.
                    Some(h) => {
                        h.terminate();
                        gone.push((h, file));
                    }
                    None => {
                        let _ = std::fs::remove_file(file);
                    }
                }
                false
            });
        }
        gone.retain(|(h, file)| {
            if !h.phase().completed() {
                return true;
            }
            let _ = std::fs::remove_file(file);
            false
        });
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = crate::run::supervisor::stopped(&mut shutdown) => break,
        }
    }
    for w in runs.values() {
        if let Some(h) = &w.handle {
            h.terminate();
        }
    }
}

/// The status file of an AnalysisRun, as `start_manifest_runs` writes it.
pub fn status_file(state_root: &Path, namespace: &str, name: &str) -> PathBuf {
    state_root
        .join("analysisruns")
        .join(format!("{namespace}.{name}.json"))
}

fn write_status(file: &Path, status: &serde_json::Value) {
    let Some(dir) = file.parent() else { return };
    if let Err(e) = crate::fs::private_dir(dir) {
        tracing::warn!("analysis: cannot create {}: {e}", dir.display());
        return;
    }
    let tmp = file.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(status).unwrap_or_default();
    if let Err(e) = crate::fs::write_private(&tmp, &body).and_then(|()| std::fs::rename(&tmp, file))
    {
        tracing::warn!("analysis: cannot write {}: {e}", file.display());
    }
}

/// Takes one measurement of a metric. The engine's task calls it; tests give their own.
pub(crate) trait Measure: Send + Sync + 'static {
    fn measure<'a>(
        &'a self,
        metric: &'a ResolvedMetric,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;
}

/// Argo's Prometheus provider: an instant query now, its scalar or its vector's values.
struct Prometheus {
    resolver: Arc<dyn Resolve>,
}

impl Measure for Prometheus {
    fn measure<'a>(
        &'a self,
        metric: &'a ResolvedMetric,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>> {
        Box::pin(async move {
            let q = &metric.prometheus;
            let client = match self.client(&q.address, q.timeout) {
                Ok(c) => c,
                Err(e) => return Outcome::Error(e),
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            match client.query_value(&q.query, now).await {
                Ok(QueryValue::Scalar(x)) => Outcome::Scalar(x),
                Ok(QueryValue::Vector(rows)) => {
                    Outcome::Values(rows.into_iter().map(|r| r.value).collect())
                }
                Ok(QueryValue::Matrix(series)) => Outcome::Values(
                    series
                        .into_iter()
                        .flat_map(|s| s.points.into_iter().map(|p| p.1))
                        .collect(),
                ),
                Err(e) => Outcome::Error(e.to_string()),
            }
        })
    }
}

impl Prometheus {
    fn client(&self, address: &str, timeout: Duration) -> Result<PromClient, String> {
        let a = skein_api::analysis::parse_address(address)?;
        let addr = match a.host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, a.port),
            Err(_) => match self.resolver.resolve(&a.host, a.port) {
                Some(addr) => addr,
                None => {
                    return Err(format!(
                        "prometheus address {address:?}: no Service {}:{} in this runtime",
                        a.host, a.port
                    ));
                }
            },
        };
        Ok(PromClient::at(addr, &a.prefix, address, timeout))
    }
}

pub(crate) fn start_with(
    prepared: PreparedAnalysis,
    measure: Arc<dyn Measure>,
    file: Option<PathBuf>,
) -> AnalysisHandle {
    let mut engine = Engine::new(prepared.metrics, prepared.terminate, now_rfc3339());
    let (phase, _) = watch::channel(AnalysisPhase::Pending);
    let (terminate, terminated) = watch::channel(false);
    if prepared.terminate {
        engine.terminate();
    } else {
        engine.assess();
    }
    let shared = Arc::new(Shared {
        name: prepared.name,
        snapshot: Mutex::new(Snapshot {
            message: String::new(),
            status: engine.status(),
        }),
        phase,
        terminate,
    });
    let handle = AnalysisHandle {
        shared: shared.clone(),
    };
    publish(&shared, &engine, file.as_deref());
    tokio::spawn(drive(engine, measure, shared, terminated, file));
    handle
}

fn publish(shared: &Shared, engine: &Engine, file: Option<&Path>) {
    let status = engine.status();
    if let Some(f) = file {
        write_status(f, &status);
    }
    if let Ok(mut s) = shared.snapshot.lock() {
        *s = Snapshot {
            message: engine.message().to_string(),
            status,
        };
    }
    shared.phase.send_replace(engine.phase());
}

/// The run's task: measure what is due, record, publish, sleep until the next due time or a
/// terminate.
async fn drive(
    mut engine: Engine,
    measure: Arc<dyn Measure>,
    shared: Arc<Shared>,
    mut terminated: watch::Receiver<bool>,
    file: Option<PathBuf>,
) {
    let start = Instant::now();
    loop {
        if engine.phase().completed() {
            break;
        }
        if *terminated.borrow() {
            engine.terminate();
            publish(&shared, &engine, file.as_deref());
            break;
        }
        let due = engine.due(start.elapsed());
        if !due.is_empty() {
            let mut tasks = tokio::task::JoinSet::new();
            for i in due {
                let metric = engine.metric(i).clone();
                let measure = measure.clone();
                tasks.spawn(async move {
                    let started_at = now_rfc3339();
                    let outcome = measure.measure(&metric).await;
                    let (phase, message, value) = engine::evaluate(&metric, &outcome);
                    (
                        i,
                        Measurement {
                            phase,
                            message,
                            value,
                            started_at,
                            finished_at: now_rfc3339(),
                        },
                    )
                });
            }
            let mut stopped = false;
            while !stopped {
                tokio::select! {
                    done = tasks.join_next() => match done {
                        Some(Ok((i, m))) => {
                            engine.record(i, start.elapsed(), m);
                            publish(&shared, &engine, file.as_deref());
                        }
                        Some(Err(e)) => tracing::warn!("analysis {}: a measurement task ended: {e}", shared.name),
                        None => break,
                    },
                    changed = terminated.changed() => {
                        if changed.is_err() || *terminated.borrow() {
                            // In-flight queries are dropped, as Argo drops a terminated run's.
                            tasks.abort_all();
                            stopped = true;
                        }
                    }
                }
            }
            continue;
        }
        let Some(next) = engine.next_due() else {
            // Nothing will be due again: assess and wait for a terminate if still running.
            engine.assess();
            publish(&shared, &engine, file.as_deref());
            if engine.phase().completed() {
                break;
            }
            if terminated.changed().await.is_err() {
                break;
            }
            continue;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(start + next) => {}
            changed = terminated.changed() => {
                if changed.is_err() {
                    // Every handle is gone and nobody can terminate: keep measuring.
                    tokio::time::sleep_until(start + next).await;
                }
            }
        }
    }
}

pub(crate) use crate::clock::now_rfc3339;

#[cfg(test)]
mod tests;
