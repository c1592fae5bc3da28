//! Analysis runs of one Rollout, through the analysis engine's API: Argo's run names
//! (`<rollout>-<hash>-<revision>[-<step>]`), arguments resolved (`value`, or
//! `valueFrom.podTemplateHashValue: Stable|Latest`), and Services resolved to their
//! loopback cluster IPs for the engine's providers.

use std::net::SocketAddr;
use std::sync::Arc;

use super::machine::{Runner, Verdict};
use super::spec::AnalysisArg;
use super::{AnalysisRunStatus, Ctx};
use crate::analysis;

/// Runs kept in the status once finished.
const KEEP: usize = 10;

pub struct Runs {
    ctx: Arc<Ctx>,
    ns: String,
    name: String,
    /// The config the runs are prepared against (set each tick).
    pub manifests: Option<skein_api::Manifests>,
    live: Vec<Live>,
    /// Runs told to terminate, shown live until the engine has ended them (termination is
    /// seen by the run's own task, a moment later), newest first.
    ending: Vec<Live>,
    done: Vec<AnalysisRunStatus>,
}

struct Live {
    key: String,
    name: String,
    revision: u32,
    handle: Result<analysis::AnalysisHandle, String>,
}

impl Runs {
    pub fn new(ctx: Arc<Ctx>, ns: String, name: String) -> Runs {
        Runs {
            ctx,
            ns,
            name,
            manifests: None,
            live: Vec::new(),
            ending: Vec::new(),
            done: Vec::new(),
        }
    }

    pub fn statuses(&self) -> Vec<AnalysisRunStatus> {
        self.live
            .iter()
            .chain(&self.ending)
            .map(Live::status)
            .chain(self.done.iter().cloned())
            .collect()
    }

    /// Moves the terminated runs that have ended to the finished ones.
    fn reap(&mut self) {
        let (ended, ending): (Vec<Live>, Vec<Live>) = std::mem::take(&mut self.ending)
            .into_iter()
            .partition(Live::ended);
        self.ending = ending;
        for l in ended.iter().rev() {
            self.done.insert(0, l.status());
        }
        self.done.truncate(KEEP);
        // A run that never ends (a provider hung past its own timeouts) is not kept forever.
        for l in self.ending.drain(KEEP.min(self.ending.len())..) {
            self.done.insert(0, l.status());
        }
    }
}

impl Live {
    fn status(&self) -> AnalysisRunStatus {
        let (phase, message, status) = match &self.handle {
            Ok(h) => (format!("{:?}", h.phase()), h.message(), h.status()),
            Err(e) => ("Error".into(), e.clone(), serde_json::Value::Null),
        };
        AnalysisRunStatus {
            name: self.name.clone(),
            phase,
            message,
            revision: self.revision,
            status,
        }
    }

    fn ended(&self) -> bool {
        self.handle.as_ref().map_or(true, |h| h.phase().completed())
    }
}

struct Services(Arc<Ctx>);

impl analysis::Resolve for Services {
    fn resolve(&self, host: &str, port: u16) -> Option<SocketAddr> {
        let host = host.trim_end_matches('.');
        self.0
            .pods
            .plan
            .services
            .iter()
            .find(|s| {
                crate::plan::dns_names(&s.name, &s.namespace)
                    .iter()
                    .any(|n| n == host)
            })
            .map(|s| SocketAddr::from((s.cluster_ip, port)))
            .or_else(|| {
                // The addons (Prometheus) are pods without a Service of the manifests'.
                self.0.pods.pod_statuses().into_iter().find_map(|p| {
                    (p.name == host || p.workload == host.split('.').next().unwrap_or(host))
                        .then(|| p.ip.parse().ok())
                        .flatten()
                        .map(|ip: std::net::IpAddr| SocketAddr::new(ip, port))
                })
            })
    }
}

impl Runner for Runs {
    fn run(
        &mut self,
        key: &str,
        templates: &[(String, bool)],
        args: &[AnalysisArg],
        (stable, latest): (&str, &str),
        revision: u32,
    ) -> (Verdict, String) {
        self.reap();
        if !self.live.iter().any(|l| l.key == key) {
            let step = key.strip_prefix("step-");
            let run_name = match step {
                Some(s) => format!("{}-{latest}-{revision}-{s}", self.name),
                None => format!("{}-{latest}-{revision}", self.name),
            };
            let resolved: Result<Vec<(String, String)>, String> = args
                .iter()
                .map(|a| {
                    let v = match (&a.value, &a.value_from) {
                        (Some(v), _) => v.clone(),
                        (None, Some(f)) => match f.pod_template_hash_value.as_deref() {
                            Some("Stable") => stable.to_string(),
                            Some("Latest") => latest.to_string(),
                            _ => {
                                return Err(format!(
                                    "analysis argument {}: only value and valueFrom.podTemplateHashValue (Stable, Latest) are supported",
                                    a.name
                                ));
                            }
                        },
                        (None, None) => {
                            return Err(format!("analysis argument {} has no value", a.name));
                        }
                    };
                    Ok((a.name.clone(), v))
                })
                .collect();
            let handle = match (resolved, &self.manifests) {
                (Err(e), _) => Err(e),
                (Ok(_), None) => Err("the config did not load".into()),
                (Ok(args), Some(m)) => analysis::prepare(analysis::AnalysisRequest {
                    manifests: m,
                    namespace: &self.ns,
                    templates,
                    args: &args,
                    run_name: run_name.clone(),
                })
                .map(|p| analysis::start(p, Arc::new(Services(self.ctx.clone()))))
                .map_err(|e| e.to_string()),
            };
            tracing::info!(rollout = %self.name, run = %run_name, "analysis run started");
            self.live.push(Live {
                key: key.to_string(),
                name: run_name,
                revision,
                handle,
            });
        }
        let Some(l) = self.live.iter().find(|l| l.key == key) else {
            return (Verdict::Running, String::new());
        };
        match &l.handle {
            Err(e) => (Verdict::Failed, e.clone()),
            Ok(h) => {
                let v = match h.phase() {
                    analysis::AnalysisPhase::Pending | analysis::AnalysisPhase::Running => {
                        Verdict::Running
                    }
                    analysis::AnalysisPhase::Successful => Verdict::Successful,
                    analysis::AnalysisPhase::Failed | analysis::AnalysisPhase::Error => {
                        Verdict::Failed
                    }
                    analysis::AnalysisPhase::Inconclusive => Verdict::Inconclusive,
                };
                (v, h.message())
            }
        }
    }

    fn terminate_all(&mut self) {
        for l in self.live.drain(..).rev() {
            if let Ok(h) = &l.handle {
                h.terminate();
            }
            self.ending.insert(0, l);
        }
        self.reap();
    }
}
