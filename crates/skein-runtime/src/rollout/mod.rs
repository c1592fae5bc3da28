//! The Argo Rollouts controller (`argoproj.io/v1alpha1` Rollout, canary strategy with Istio
//! traffic routing), run by `skein up`: one task per Rollout.
//!
//! - `spec`: Argo's strategy fields, read from the Rollout's `strategy`.
//! - `machine`: the state machine (steps, pauses, promote/abort/retry, canary scale).
//! - `traffic`: the managed copies of the VirtualServices and the DestinationRule.
//! - `runner`: the Rollout's analysis runs, on the analysis engine (`crate::analysis`).
//! - this file: the task: it reads the config (the manifests and `skein apply`'s objects),
//!   adds and removes the revisions' pods through the supervisor, writes the managed objects
//!   into the control plane's `managed` overlay, serves the requests of `skein rollouts`
//!   (files in the state directory) and writes each Rollout's status beside them.

mod machine;
mod runner;
pub mod spec;
mod traffic;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use skein_api::{Manifests, Resource};
use tokio::sync::watch;

use crate::naming::{pod_name_with_hash, rollout_template_hash};
use crate::plan::{self, PlanOptions, PrometheusState, ROLLOUT_HASH_LABEL};
use crate::run::state::{Network, StateDir};
use crate::run::supervisor::Pods;

pub use machine::Command;
use machine::{Machine, Runner, View};

/// How often each Rollout is looked at.
const TICK: Duration = Duration::from_millis(250);
/// How long a Rollout must be missing from a config that loads before it counts as deleted.
const DELETE_AFTER: Duration = Duration::from_secs(2);

/// One Rollout's status, as `skein rollouts get` and `skein status` read it
/// (`STATE/rollouts/NS.NAME.json`), with the fields of Argo's `status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RolloutStatus {
    pub name: String,
    pub namespace: String,
    /// Healthy, Progressing, Paused or Degraded.
    pub phase: String,
    pub message: String,
    pub strategy: String,
    pub current_step_index: Option<usize>,
    pub steps: Vec<String>,
    /// The weight the current step set.
    pub set_weight: i32,
    /// The weight the managed VirtualService routes to the canary.
    pub actual_weight: i32,
    #[serde(rename = "stableRS")]
    pub stable_rs: String,
    pub current_pod_hash: String,
    pub replicas: usize,
    pub current: usize,
    pub updated: usize,
    pub ready: usize,
    pub available: usize,
    pub aborted: bool,
    pub paused: bool,
    pub revisions: Vec<RevisionStatus>,
    pub analysis_runs: Vec<AnalysisRunStatus>,
    pub conditions: Vec<Condition>,
    /// A problem with the traffic routing (a missing route or subset).
    pub error: Option<String>,
    pub updated_at: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RevisionStatus {
    pub revision: u32,
    pub hash: String,
    /// stable, canary or old.
    pub role: String,
    pub images: Vec<String>,
    pub pods: Vec<RolloutPod>,
    /// The revision's `spec.template` (what `undo` goes back to).
    pub template: serde_json::Value,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RolloutPod {
    pub name: String,
    pub ready: bool,
    pub state: String,
    pub containers: usize,
    pub restarts: u32,
    pub ip: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct AnalysisRunStatus {
    pub name: String,
    pub phase: String,
    pub message: String,
    pub revision: u32,
    pub status: serde_json::Value,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// A request of `skein rollouts` (`STATE/rollouts/requests/ID.json`); the reply goes to
/// `STATE/rollouts/replies/ID.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Request {
    pub id: String,
    pub namespace: String,
    pub name: String,
    /// promote, abort, retry or pause.
    pub action: String,
    pub full: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Reply {
    pub ok: bool,
    pub message: String,
}

/// The requests and replies directories, and each Rollout's status file.
pub fn requests_dir(state: &StateDir) -> PathBuf {
    state.rollouts_dir().join("requests")
}
pub fn replies_dir(state: &StateDir) -> PathBuf {
    state.rollouts_dir().join("replies")
}
pub fn status_file(state: &StateDir, namespace: &str, name: &str) -> PathBuf {
    state
        .rollouts_dir()
        .join(format!("{namespace}.{name}.json"))
}

/// Every Rollout status in the state directory, by namespace and name.
pub fn read_statuses(state: &StateDir) -> Vec<RolloutStatus> {
    let mut out: Vec<RolloutStatus> = std::fs::read_dir(state.rollouts_dir())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter_map(|p| std::fs::read(&p).ok())
        .filter_map(|t| serde_json::from_slice(&t).ok())
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

/// What the controller needs of the run.
pub struct Ctx {
    pub pods: Arc<Pods>,
    pub state: StateDir,
    pub manifests: PathBuf,
    pub opts: PlanOptions,
    pub network: Mutex<Network>,
}

/// Starts the manager: it spawns a task for each Rollout of the config as it appears.
pub fn spawn(ctx: Arc<Ctx>, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut shutdown = shutdown;
        let mut running: HashMap<(String, String), tokio::task::JoinHandle<()>> = HashMap::new();
        for d in [
            ctx.state.managed_dir(),
            requests_dir(&ctx.state),
            replies_dir(&ctx.state),
        ] {
            let _ = crate::fs::private_dir(&d);
        }
        // A previous run's statuses and overlay describe pods that are gone.
        for p in std::fs::read_dir(ctx.state.rollouts_dir())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .chain(
                std::fs::read_dir(ctx.state.managed_dir())
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.ok().map(|e| e.path())),
            )
        {
            if p.is_file() {
                let _ = std::fs::remove_file(p);
            }
        }
        loop {
            // A Rollout deleted (its task ended) and added again gets a new task.
            running.retain(|_, t| !t.is_finished());
            if let Some(m) = crate::live_config::load(&ctx.manifests, &ctx.state.applied_dir()) {
                for r in m.rollouts() {
                    let key = (
                        r.metadata.namespace_or_default().to_string(),
                        r.metadata.name.clone(),
                    );
                    if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(key) {
                        let (ns, name) = slot.key().clone();
                        slot.insert(tokio::spawn(run_rollout(
                            ctx.clone(),
                            ns,
                            name,
                            shutdown.clone(),
                        )));
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = crate::run::supervisor::stopped(&mut shutdown) => break,
            }
        }
        for (_, t) in running {
            let _ = t.await;
        }
    })
}

type PodsByHash = BTreeMap<String, Vec<RolloutPod>>;

/// The live pods of a Rollout, by template hash.
fn pods_by_hash(ctx: &Ctx, ns: &str, name: &str) -> PodsByHash {
    let mut out: PodsByHash = BTreeMap::new();
    for s in ctx.pods.pod_statuses() {
        if s.namespace != ns || s.workload != name || s.state == "Terminating" {
            continue;
        }
        let hash = s
            .labels
            .get(ROLLOUT_HASH_LABEL)
            .cloned()
            .unwrap_or_default();
        out.entry(hash).or_default().push(RolloutPod {
            name: s.name,
            ready: s.ready,
            state: s.state,
            containers: s.containers.len(),
            restarts: s.restarts,
            ip: s.ip,
        });
    }
    out
}

async fn run_rollout(ctx: Arc<Ctx>, ns: String, name: String, mut shutdown: watch::Receiver<bool>) {
    let mut machine = Machine::default();
    let mut runner = runner::Runs::new(ctx.clone(), ns.clone(), name.clone());
    let mut last_overlay = String::new();
    let mut last_status = RolloutStatus::default();
    let mut missing_since: Option<Instant> = None;
    let overlay = ctx
        .state
        .managed_dir()
        .join(format!("rollout.{ns}.{name}.yaml"));
    loop {
        if *shutdown.borrow() {
            return;
        }
        let config = crate::live_config::load(&ctx.manifests, &ctx.state.applied_dir());
        let rollout = config.as_ref().and_then(|m| {
            m.rollouts()
                .find(|r| r.metadata.name == name && r.metadata.namespace_or_default() == ns)
                .cloned()
        });
        // A file being rewritten can load without the Rollout for a moment: it counts as
        // deleted once it has been missing for a while.
        if config.is_some() && rollout.is_none() {
            missing_since.get_or_insert_with(Instant::now);
        } else {
            missing_since = None;
        }
        if missing_since.is_some_and(|t| t.elapsed() >= DELETE_AFTER) {
            // Deleted: its pods, managed objects and status go, as Argo's ReplicaSets do.
            tracing::info!(rollout = %name, "the Rollout was deleted; removing its pods");
            runner.terminate_all();
            for p in pods_by_hash(&ctx, &ns, &name).into_values().flatten() {
                let _ = ctx.pods.remove(&p.name);
            }
            let _ = std::fs::remove_file(&overlay);
            let _ = std::fs::remove_file(status_file(&ctx.state, &ns, &name));
            reload_prometheus(&ctx);
            return;
        }
        if let (Some(config), Some(ro)) = (config, rollout) {
            let canary = match spec::strategy(ro.spec.strategy.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    // Nothing changes until the spec is fixed (Argo's InvalidSpec).
                    let st = RolloutStatus {
                        name: name.clone(),
                        namespace: ns.clone(),
                        phase: "Degraded".into(),
                        message: format!("InvalidSpec: {e}"),
                        strategy: "Canary".into(),
                        error: Some(e),
                        updated_at: crate::clock::now_rfc3339(),
                        ..last_status.clone()
                    };
                    if status_changed(&last_status, &st) {
                        write_status(&ctx.state, &st);
                        last_status = st;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(TICK) => {}
                        _ = crate::run::supervisor::stopped(&mut shutdown) => return,
                    }
                    continue;
                }
            };
            let hash = rollout_template_hash(&ro.spec.template);
            let view = View {
                replicas: ro.spec.replicas.unwrap_or(1).max(0) as usize,
                hash: &hash,
                template: &ro.spec.template,
                canary: &canary,
                paused: ro.spec.paused.unwrap_or(false),
                history_limit: ro
                    .spec
                    .revision_history_limit
                    .map_or(10, |n| usize::try_from(n).unwrap_or(0)),
            };
            let pods = pods_by_hash(&ctx, &ns, &name);
            let ready = |h: &str| {
                pods.get(h)
                    .map_or(0, |p| p.iter().filter(|p| p.ready).count())
            };
            let now = Instant::now();
            runner.manifests = Some(config.clone());
            machine.tick(now, &view, &ready, &mut runner);
            for req in take_requests(&ctx.state, &ns, &name) {
                let reply = match command(&req) {
                    Ok(cmd) => machine.apply(&cmd, &mut runner),
                    Err(e) => Err(e),
                };
                write_reply(&ctx.state, &req.id, reply);
            }
            machine.tick(now, &view, &ready, &mut runner);
            reconcile_pods(&ctx, &config, &ns, &name, &machine, now, &view, &pods);
            release_addresses(&ctx);
            let error = match write_overlay(&config, (&ns, &name), &canary, &machine, &overlay) {
                Ok(text) => {
                    if text != last_overlay {
                        tracing::info!(rollout = %name, weight = machine.routed_weight(), "managed traffic updated");
                        last_overlay = text;
                    }
                    None
                }
                Err(e) => Some(e),
            };
            let pods = pods_by_hash(&ctx, &ns, &name);
            let status = status(&ns, &name, &machine, &view, &pods, &runner, error);
            if status_changed(&last_status, &status) {
                write_status(&ctx.state, &status);
                last_status = status;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = crate::run::supervisor::stopped(&mut shutdown) => return,
        }
    }
}

fn write_status(state: &StateDir, status: &RolloutStatus) {
    let path = status_file(state, &status.namespace, &status.name);
    let text = serde_json::to_vec_pretty(status).unwrap_or_default();
    let tmp = path.with_extension("json.tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
}

fn status_changed(a: &RolloutStatus, b: &RolloutStatus) -> bool {
    let mut a = a.clone();
    a.updated_at = b.updated_at.clone();
    a != *b
}

fn command(req: &Request) -> Result<Command, String> {
    Ok(match req.action.as_str() {
        "promote" => Command::Promote { full: req.full },
        "abort" => Command::Abort,
        "retry" => Command::Retry,
        "pause" => Command::Pause,
        other => return Err(format!("unknown action `{other}`")),
    })
}

/// The pending requests for this Rollout (each taken once: its file is removed).
fn take_requests(state: &StateDir, ns: &str, name: &str) -> Vec<Request> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(requests_dir(state))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        // Requests are small; anything else is not one.
        let Ok(meta) = std::fs::metadata(&f) else {
            continue;
        };
        if meta.len() > 64 * 1024 {
            let _ = std::fs::remove_file(&f);
            continue;
        }
        let Ok(text) = std::fs::read(&f) else {
            continue;
        };
        match serde_json::from_slice::<Request>(&text) {
            Ok(r) if r.name == name && r.namespace == ns => {
                let _ = std::fs::remove_file(&f);
                out.push(r);
            }
            Ok(_) => {}
            Err(_) => {
                let _ = std::fs::remove_file(&f);
            }
        }
    }
    out
}

fn write_reply(state: &StateDir, id: &str, reply: Result<String, String>) {
    if crate::naming::path_component("request id", id).is_err() {
        return;
    }
    let r = match reply {
        Ok(message) => Reply { ok: true, message },
        Err(message) => Reply { ok: false, message },
    };
    let path = replies_dir(state).join(format!("{id}.json"));
    let tmp = path.with_extension("json.tmp");
    if std::fs::write(&tmp, serde_json::to_vec(&r).unwrap_or_default()).is_ok() {
        let _ = std::fs::rename(tmp, path);
    }
}

/// Adds the pods each revision lacks and removes those it has too many of (the highest
/// ordinals first), and every pod of a revision the machine no longer knows.
#[allow(clippy::too_many_arguments)]
fn reconcile_pods(
    ctx: &Ctx,
    config: &Manifests,
    ns: &str,
    name: &str,
    machine: &Machine,
    now: Instant,
    view: &View<'_>,
    pods: &PodsByHash,
) {
    let desired = machine.desired(now, view);
    let mut changed = false;
    for (rev, count) in &desired {
        let have: Vec<&String> = pods
            .get(&rev.hash)
            .map(|p| p.iter().map(|p| &p.name).collect())
            .unwrap_or_default();
        if *count == usize::MAX {
            continue;
        }
        let wanted: Vec<String> = (0..*count)
            .map(|i| pod_name_with_hash(name, &rev.hash, i))
            .collect();
        for w in &wanted {
            if !have.contains(&w) {
                match add_pod(ctx, config, ns, name, rev, w.clone()) {
                    Ok(()) => changed = true,
                    Err(e) => tracing::warn!(rollout = %name, pod = %w, "cannot add pod: {e}"),
                }
            }
        }
        for h in have {
            if !wanted.contains(h) && ctx.pods.remove(h).is_ok() {
                changed = true;
            }
        }
    }
    for (hash, list) in pods {
        if desired.iter().any(|(r, _)| &r.hash == hash) {
            continue;
        }
        for p in list {
            if ctx.pods.remove(&p.name).is_ok() {
                changed = true;
            }
        }
    }
    if changed {
        reload_prometheus(ctx);
    }
}

fn add_pod(
    ctx: &Ctx,
    config: &Manifests,
    ns: &str,
    name: &str,
    rev: &machine::Revision,
    pod: String,
) -> Result<(), String> {
    let mut template = rev.template.clone();
    template
        .metadata
        .labels
        .insert(ROLLOUT_HASH_LABEL.to_string(), rev.hash.clone());
    // The address is taken and the pod added under one lock, so that no other Rollout's
    // release of unused addresses (below) sees the address without its pod.
    let mut network = ctx.network.lock().map_err(|_| "network lock".to_string())?;
    let plan = plan::extra_pod(
        config,
        &ctx.state,
        &mut network,
        &ctx.opts,
        (ns, name),
        &template,
        pod,
    )
    .map_err(|e| e.to_string())?;
    network.save(&ctx.state).map_err(|e| e.to_string())?;
    crate::kube::dns::write_pod_hosts(&ctx.state, &ctx.pods.plan, &plan)
        .map_err(|e| e.to_string())?;
    ctx.pods.add(plan).map_err(|e| e.to_string())
}

/// Frees the addresses of pods that are gone (removed and stopped), so that revision after
/// revision does not use up the state directory's loopback subnet.
fn release_addresses(ctx: &Ctx) {
    let Ok(mut network) = ctx.network.lock() else {
        return;
    };
    let live: Vec<String> = ctx
        .pods
        .entries()
        .iter()
        .map(|e| e.plan.name.clone())
        .collect();
    if network.pods.keys().any(|k| !live.contains(k)) {
        network.retain_pods(&live);
        if let Err(e) = network.save(&ctx.state) {
            tracing::warn!("cannot save the pods' addresses: {e}");
        }
    }
}

/// Prometheus scrapes the pods of its config: rewritten with the live pods, then reloaded
/// (SIGHUP, as `kill -HUP` reloads it).
fn reload_prometheus(ctx: &Ctx) {
    let PrometheusState::Planned(p) = &ctx.pods.plan.prometheus else {
        return;
    };
    if let Err(e) = plan::prometheus::write_config(&ctx.pods.pod_plans(), p) {
        tracing::warn!("cannot rewrite Prometheus's config: {e}");
        return;
    }
    for s in ctx.pods.pod_statuses() {
        if s.namespace == "istio-system" && s.workload == "prometheus" && s.pid != 0 {
            crate::run::process::signal(s.pid, crate::run::process::Signal::HUP);
        }
    }
}

/// Writes the managed VirtualServices and DestinationRule (when they changed); returns the
/// text written.
fn write_overlay(
    config: &Manifests,
    (ns, name): (&str, &str),
    canary: &spec::Canary,
    m: &Machine,
    path: &Path,
) -> Result<String, String> {
    let Some(istio) = canary
        .traffic_routing
        .as_ref()
        .and_then(|t| t.istio.as_ref())
    else {
        return Ok(String::new());
    };
    let Some(stable) = &m.stable else {
        return Ok(String::new());
    };
    let canary_hash = m.canary.as_ref().unwrap_or(stable).hash.clone();
    let vss: Vec<(String, serde_json::Value)> = config
        .documents
        .iter()
        .filter(|d| matches!(d.resource, Resource::VirtualService(_)))
        .filter(|d| d.resource.metadata().namespace_or_default() == ns)
        .map(|d| {
            (
                d.resource.metadata().name.clone(),
                with_ns(as_json(&d.resource), ns),
            )
        })
        .collect();
    let dr = istio.destination_rule.as_ref().and_then(|r| {
        config
            .documents
            .iter()
            .filter(|d| matches!(d.resource, Resource::DestinationRule(_)))
            .find(|d| {
                d.resource.metadata().namespace_or_default() == ns
                    && d.resource.metadata().name == r.name
            })
            .map(|d| with_ns(as_json(&d.resource), ns))
    });
    let t = traffic::Traffic {
        stable_hash: &stable.hash,
        canary_hash: &canary_hash,
        weight: m.routed_weight(),
        mirrors: if m.aborted.is_some() { &[] } else { &m.mirrors },
        headers: if m.aborted.is_some() { &[] } else { &m.headers },
    };
    let docs = traffic::managed(canary, istio, &vss, dr, &t).map_err(|e| e.to_string())?;
    let text = docs
        .iter()
        .map(|d| serde_json::to_string_pretty(d).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n---\n");
    let text = format!(
        "# Written by the Rollout {ns}/{name}'s controller from your objects: edit those.\n{text}\n"
    );
    if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
        let tmp = path.with_extension("yaml.tmp");
        std::fs::write(&tmp, &text).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(text)
}

/// The object as JSON without pruning empty objects (`Resource::to_json` prunes them, and
/// an empty `{}` can mean something, as `corsPolicy: {}` or a match on everything does).
fn as_json(r: &Resource) -> serde_json::Value {
    match r {
        Resource::VirtualService(v) => serde_json::to_value(v),
        Resource::DestinationRule(v) => serde_json::to_value(v),
        _ => Ok(r.to_json()),
    }
    .unwrap_or_default()
}

fn with_ns(mut v: serde_json::Value, ns: &str) -> serde_json::Value {
    if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        m.insert("namespace".into(), ns.into());
    }
    v
}

fn status(
    ns: &str,
    name: &str,
    m: &Machine,
    v: &View<'_>,
    pods: &PodsByHash,
    runner: &runner::Runs,
    error: Option<String>,
) -> RolloutStatus {
    let ready = |h: &str| {
        pods.get(h)
            .map_or(0, |p| p.iter().filter(|p| p.ready).count())
    };
    let (phase, mut message) = m.phase(&ready, v);
    let mut phase = phase.to_string();
    if let Some(e) = &error {
        phase = "Degraded".into();
        message = e.clone();
    }
    let stable = m.stable.clone().unwrap_or_default_rev();
    let current = m.canary.as_ref().unwrap_or(&stable);
    let mut revisions = Vec::new();
    let mut push = |r: &machine::Revision, role: &str| {
        revisions.push(RevisionStatus {
            revision: r.revision,
            hash: r.hash.clone(),
            role: role.to_string(),
            images: r.images.clone(),
            pods: pods.get(&r.hash).cloned().unwrap_or_default(),
            template: serde_json::to_value(&r.template).unwrap_or_default(),
        });
    };
    if let Some(c) = &m.canary {
        push(c, "canary");
    }
    push(&stable, "stable");
    for r in m.retired.iter().map(|(r, _)| r).chain(&m.history) {
        push(r, "old");
    }
    revisions.sort_by_key(|r| std::cmp::Reverse(r.revision));
    let all: usize = pods.values().map(Vec::len).sum();
    let ready_all: usize = pods.values().flatten().filter(|p| p.ready).count();
    let updated = pods.get(&current.hash).map_or(0, Vec::len);
    let steps: Vec<String> = v.canary.steps.iter().map(|s| s.describe()).collect();
    let paused = phase == "Paused";
    let conditions = vec![
        Condition {
            type_: "Available".into(),
            status: if ready(&stable.hash) >= v.replicas {
                "True"
            } else {
                "False"
            }
            .into(),
            reason: "AvailableReason".into(),
            message: "Rollout has minimum availability".into(),
        },
        Condition {
            type_: "Progressing".into(),
            status: if phase == "Degraded" { "False" } else { "True" }.into(),
            reason: match phase.as_str() {
                "Degraded" if m.aborted.is_some() => "RolloutAborted",
                "Degraded" => "InvalidSpec",
                "Paused" => "RolloutPaused",
                "Healthy" => "NewReplicaSetAvailable",
                _ => "ReplicaSetUpdated",
            }
            .into(),
            message: message.clone(),
        },
        Condition {
            type_: "Paused".into(),
            status: if paused { "True" } else { "False" }.into(),
            reason: if paused { "CanaryPauseStep" } else { "" }.into(),
            message: String::new(),
        },
    ];
    RolloutStatus {
        name: name.to_string(),
        namespace: ns.to_string(),
        phase,
        message,
        strategy: "Canary".into(),
        current_step_index: (!v.canary.steps.is_empty())
            .then_some(m.step.min(v.canary.steps.len())),
        steps,
        set_weight: if m.canary.is_some() { m.weight } else { 100 },
        actual_weight: if m.canary.is_some() {
            m.routed_weight()
        } else {
            100
        },
        stable_rs: stable.hash.clone(),
        current_pod_hash: current.hash.clone(),
        replicas: v.replicas,
        current: all,
        updated,
        ready: ready_all,
        available: ready_all,
        aborted: m.aborted.is_some(),
        paused,
        revisions,
        analysis_runs: runner.statuses(),
        conditions,
        error,
        updated_at: crate::clock::now_rfc3339(),
    }
}

trait OrDefaultRev {
    fn unwrap_or_default_rev(self) -> machine::Revision;
}

impl OrDefaultRev for Option<machine::Revision> {
    fn unwrap_or_default_rev(self) -> machine::Revision {
        self.unwrap_or(machine::Revision {
            hash: String::new(),
            revision: 0,
            template: Default::default(),
            images: Vec::new(),
        })
    }
}
