//! `skein rollout restart`: replaces a workload's pods one at a time, as a Deployment's
//! rolling update after kubectl sets `kubectl.kubernetes.io/restartedAt`, so that a workload
//! with two replicas keeps serving: a pod is taken out of its Services' endpoints, the mesh is
//! given time to see it, its processes are stopped (SIGTERM, grace period) and started again,
//! and the next pod goes only once the new one is ready and the mesh routes to it again.
//!
//! In process mode a pod's name is its address, its log directory and its proxy's identity
//! in the registry, so a replaced pod keeps its name; its processes (pids), restart counts and
//! generation are new.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::run::status::RestartStatus;
use crate::run::supervisor::{PodEntry, Pods};

/// How long a pod out of the endpoints waits for the mesh to stop routing to it.
const DRAIN_MAX: Duration = Duration::from_secs(10);
/// Without the mesh the Services' forwarders read the endpoints directly: a short pause lets
/// connections opened just before finish their handshake.
const DRAIN_MIN: Duration = Duration::from_millis(300);
/// How long a replaced pod has to become ready again before the restart is marked Failed
/// (a Deployment's default `progressDeadlineSeconds`).
const PROGRESS_DEADLINE: Duration = Duration::from_secs(600);

/// Whether the control plane and every proxy have caught up with the pods' readiness: called
/// with the number of ready pods the mesh should have seen. Always true without the mesh.
pub type Synced = Arc<dyn Fn(usize) -> bool + Send + Sync>;

/// Why a restart cannot start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestartError {
    #[error(
        "{kind} {namespace}/{name} has no pods in this run: `skein status` lists the workloads that run"
    )]
    NotFound {
        kind: String,
        namespace: String,
        name: String,
    },
}

impl Pods {
    /// The live pods of a workload (those being taken away left out), in the order they
    /// were added.
    fn workload_pods(&self, kind: &str, namespace: &str, name: &str) -> Vec<Arc<PodEntry>> {
        self.entries()
            .into_iter()
            .filter(|e| {
                let p = &e.plan;
                p.workload_kind == kind
                    && p.namespace == namespace
                    && p.workload == name
                    && !e.terminating.load(Ordering::Acquire)
            })
            .collect()
    }

    /// The latest restart of each workload, for the status file.
    pub fn restart_statuses(&self) -> Vec<RestartStatus> {
        self.restarts.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Starts replacing the pods of `kind namespace/name` one at a time (see the module
    /// comment); returns at once, the progress is in [`Pods::restart_statuses`]. Restarts of
    /// several workloads (or the same one twice) run one after the other.
    pub fn restart_workload(
        self: &Arc<Self>,
        kind: &str,
        namespace: &str,
        name: &str,
        request: &str,
        synced: Synced,
    ) -> Result<(), RestartError> {
        let pods = self.workload_pods(kind, namespace, name);
        if pods.is_empty() {
            return Err(RestartError::NotFound {
                kind: kind.to_string(),
                namespace: namespace.to_string(),
                name: name.to_string(),
            });
        }
        let target = pods
            .iter()
            .map(|p| *p.generation.borrow())
            .max()
            .unwrap_or(0)
            + 1;
        let record = RestartStatus {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            request: request.to_string(),
            restarted_at: crate::clock::now_rfc3339(),
            generation: target,
            state: "Progressing".into(),
            events: Vec::new(),
        };
        self.update_record(&record, |_| {});
        let this = self.clone();
        tokio::spawn(async move {
            let _one_at_a_time = this.restart_lock.lock().await;
            let mut failed = false;
            for p in pods {
                if let Err(e) = this.replace_pod(&p, target, &synced).await {
                    this.update_record(&record, |r| r.events.push(e.clone()));
                    failed = true;
                    break;
                }
            }
            this.update_record(&record, |r| {
                r.state = if failed { "Failed" } else { "Complete" }.into();
            });
        });
        Ok(())
    }

    /// Replaces or adds the workload's record, then applies `f` to it.
    fn update_record(&self, record: &RestartStatus, f: impl FnOnce(&mut RestartStatus)) {
        if let Ok(mut all) = self.restarts.lock() {
            let same = |r: &RestartStatus| {
                r.kind == record.kind && r.namespace == record.namespace && r.name == record.name
            };
            match all.iter_mut().find(|r| same(r)) {
                Some(r) if r.request == record.request => f(r),
                Some(r) => {
                    *r = record.clone();
                    f(r);
                }
                None => {
                    let mut r = record.clone();
                    f(&mut r);
                    all.push(r);
                }
            }
        }
        self.changed.notify_one();
    }

    fn ready_count(&self) -> usize {
        self.entries().iter().filter(|e| e.is_ready()).count()
    }

    /// Takes pod `st` out, replaces its processes with ones of generation `target`, and waits
    /// until it is ready and routed to again. A pod taken away meanwhile (a Rollout scaled
    /// down) is skipped: nothing of it is left to replace.
    async fn replace_pod(&self, st: &PodEntry, target: u64, synced: &Synced) -> Result<(), String> {
        let name = &st.plan.name;
        let gone = || st.terminating.load(Ordering::Acquire);
        if *st.generation.borrow() >= target || gone() {
            return Ok(());
        }
        let old: Vec<u32> = st
            .containers
            .iter()
            .map(|c| c.pid.load(Ordering::Acquire))
            .collect();
        {
            let _gate = st.gate.lock();
            st.restarting.store(true, Ordering::Release);
            self.set_ready(st, false);
        }
        // Out of the endpoints: wait for the mesh to see it before the processes go.
        let ready_now = self.ready_count();
        tokio::time::sleep(DRAIN_MIN).await;
        let deadline = tokio::time::Instant::now() + DRAIN_MAX;
        while !synced(ready_now) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        st.generation.send_replace(target);
        // Every container stops (grace period) and starts again for the new generation.
        let grace = st.plan.grace + Duration::from_secs(5);
        let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(30);
        loop {
            let started = st.containers.iter().all(|c| {
                c.started_generation.load(Ordering::Acquire) >= target
                    && c.pid.load(Ordering::Acquire) != 0
            });
            if started || gone() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                st.restarting.store(false, Ordering::Release);
                return Err(format!("pod {name}: its new processes did not start"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        st.restarting.store(false, Ordering::Release);
        if gone() {
            return Ok(());
        }
        let new: Vec<u32> = st
            .containers
            .iter()
            .map(|c| c.pid.load(Ordering::Acquire))
            .collect();
        let deadline = tokio::time::Instant::now() + PROGRESS_DEADLINE;
        while !st.is_ready() {
            if gone() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "pod {name} did not become ready within {}s",
                    PROGRESS_DEADLINE.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The mesh routes to it again before the next pod goes.
        let ready_now = self.ready_count();
        let deadline = tokio::time::Instant::now() + DRAIN_MAX;
        while !synced(ready_now) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let pids = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let event = format!(
            "replaced pod {name} (pids {} -> {})",
            pids(&old),
            pids(&new)
        );
        tracing::info!("rollout restart: {event}");
        if let Ok(mut all) = self.restarts.lock()
            && let Some(r) = all.iter_mut().find(|r| {
                r.generation == target
                    && st.plan.workload == r.name
                    && st.plan.namespace == r.namespace
            })
        {
            r.events.push(event);
        }
        self.changed.notify_one();
        Ok(())
    }
}
