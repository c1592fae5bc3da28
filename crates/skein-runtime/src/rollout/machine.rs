//! One Rollout's canary state machine, as Argo Rollouts' controller runs it with traffic
//! routing: pure (time, pod readiness and analysis results come in), so it is tested
//! without processes.
//!
//! Argo's rules kept here:
//! - a change of `spec.template` starts a new revision at step 0; a change back to the
//!   stable template drops the canary at once (no steps), as Argo skips steps on rollback;
//! - with traffic routing the stable ReplicaSet stays at `replicas` until promotion, and the
//!   canary runs `ceil(replicas * weight / 100)` pods, unless `setCanaryScale` says
//!   otherwise; its override lasts until a later `setCanaryScale` (`matchTrafficWeight`
//!   returns to the weight). At weight 0 that is no pod: a mirror needs `setCanaryScale`;
//! - `setWeight` and `setCanaryScale` wait for the canary's pods to be ready before the next
//!   step; after the last step the canary is scaled to `replicas`, then it becomes stable and
//!   the old stable pods go after `scaleDownDelaySeconds` (30 s);
//! - a failed analysis aborts: weight 0, managed routes removed, the canary's pods go after
//!   `abortScaleDownDelaySeconds` (30 s), phase Degraded with the analysis's message;
//!   `retry` starts the steps again, `promote` skips the current step (`--full`: all).

use std::time::{Duration, Instant};

use serde::Serialize;
use skein_api::k8s::PodTemplateSpec;

use super::spec::{AnalysisArg, Canary, SetCanaryScale, SetHeaderRoute, SetMirrorRoute, Step};

/// What an analysis run reports to the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Running,
    Successful,
    Failed,
    Inconclusive,
}

/// Starts (once per key) and reads analysis runs.
pub trait Runner {
    /// The run `key` of `templates` with `args` (started when new) and its message.
    fn run(
        &mut self,
        key: &str,
        templates: &[(String, bool)],
        args: &[AnalysisArg],
        hashes: (&str, &str),
        revision: u32,
    ) -> (Verdict, String);
    /// Stops every run (a new revision, an abort, a promotion).
    fn terminate_all(&mut self);
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    pub hash: String,
    pub revision: u32,
    #[serde(skip)]
    pub template: PodTemplateSpec,
    pub images: Vec<String>,
}

impl Revision {
    fn new(hash: &str, revision: u32, template: &PodTemplateSpec) -> Revision {
        Revision {
            hash: hash.to_string(),
            revision,
            template: template.clone(),
            images: template
                .spec
                .containers
                .iter()
                .filter_map(|c| c.image.clone())
                .collect(),
        }
    }
}

/// What the machine is told about the Rollout each tick.
pub struct View<'a> {
    pub replicas: usize,
    pub hash: &'a str,
    pub template: &'a PodTemplateSpec,
    pub canary: &'a Canary,
    /// `spec.paused`.
    pub paused: bool,
    /// `spec.revisionHistoryLimit` (Argo's default 10): scaled-down revisions kept.
    pub history_limit: usize,
}

#[derive(Debug, Default)]
pub struct Machine {
    pub stable: Option<Revision>,
    /// The revision being rolled out (None: fully promoted).
    pub canary: Option<Revision>,
    pub step: usize,
    pub weight: i32,
    pub scale: Option<SetCanaryScale>,
    pause_since: Option<Instant>,
    pub user_paused: bool,
    /// Why the update was aborted.
    pub aborted: Option<String>,
    aborted_at: Option<Instant>,
    pub mirrors: Vec<SetMirrorRoute>,
    pub headers: Vec<SetHeaderRoute>,
    /// Old revisions whose pods go at the instant given.
    pub retired: Vec<(Revision, Instant)>,
    /// Scaled-down revisions, newest first, at most `revisionHistoryLimit` (Argo keeps their
    /// ReplicaSets at 0 replicas: shown as ScaledDown, and `undo` goes back to them).
    pub history: Vec<Revision>,
    next_revision: u32,
    /// A step that cannot run (an unreadable pause): shown, and the rollout waits.
    pub blocked: Option<String>,
    /// Inconclusive analysis pauses the rollout until promoted.
    inconclusive: bool,
}

/// A user's command (`skein rollouts ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Promote { full: bool },
    Abort,
    Retry,
    Pause,
}

impl Machine {
    /// The pods each revision should have now: (revision, count).
    pub fn desired(&self, now: Instant, v: &View<'_>) -> Vec<(Revision, usize)> {
        let mut out = Vec::new();
        if let Some(s) = &self.stable {
            out.push((s.clone(), v.replicas));
        }
        if let Some(c) = &self.canary {
            let n = if self.aborted.is_some() {
                match self.aborted_at {
                    Some(at) if now < at => self.canary_count(v),
                    _ => 0,
                }
            } else {
                self.canary_count(v)
            };
            out.push((c.clone(), n));
        }
        for (r, at) in &self.retired {
            if now < *at {
                // Kept as they are until their delay is over: -1 would be "keep"; the
                // caller keeps the pods a retired revision has.
                out.push((r.clone(), usize::MAX));
            } else {
                out.push((r.clone(), 0));
            }
        }
        out
    }

    fn canary_count(&self, v: &View<'_>) -> usize {
        let ceil = |w: i32| (v.replicas * w.clamp(0, 100) as usize).div_ceil(100);
        if self.step >= v.canary.steps.len() {
            return v.replicas;
        }
        match &self.scale {
            Some(SetCanaryScale {
                replicas: Some(r), ..
            }) => (*r).max(0) as usize,
            Some(SetCanaryScale {
                weight: Some(w), ..
            }) => ceil(*w),
            _ => ceil(self.weight),
        }
    }

    /// The canary's weight as routed now (0 once aborted).
    pub fn routed_weight(&self) -> i32 {
        if self.aborted.is_some() || self.canary.is_none() {
            0
        } else {
            self.weight
        }
    }

    /// Argo's phase and message.
    pub fn phase(&self, ready: &dyn Fn(&str) -> usize, v: &View<'_>) -> (&'static str, String) {
        if let Some(m) = &self.aborted {
            let rev = self.canary.as_ref().map_or(0, |c| c.revision);
            let msg = if m.is_empty() {
                format!("RolloutAborted: Rollout aborted update to revision {rev}")
            } else {
                format!("RolloutAborted: Rollout aborted update to revision {rev}: {m}")
            };
            return ("Degraded", msg);
        }
        if let Some(b) = &self.blocked {
            return ("Degraded", format!("InvalidSpec: {b}"));
        }
        if self.user_paused || v.paused {
            return ("Paused", "manually paused".into());
        }
        if self.pause_since.is_some() || self.inconclusive {
            return ("Paused", "CanaryPauseStep".into());
        }
        if let Some(c) = &self.canary {
            let _ = c;
            return ("Progressing", "more replicas need to be updated".into());
        }
        match &self.stable {
            Some(s) if ready(&s.hash) >= v.replicas => ("Healthy", String::new()),
            _ => (
                "Progressing",
                "updated replicas are still becoming available".into(),
            ),
        }
    }

    pub fn apply(&mut self, cmd: &Command, runner: &mut dyn Runner) -> Result<String, String> {
        match cmd {
            Command::Pause => {
                self.user_paused = true;
                Ok("paused".into())
            }
            Command::Abort => {
                if self.canary.is_none() {
                    return Err("there is no update to abort".into());
                }
                self.abort(String::new(), Instant::now(), Duration::ZERO, runner);
                Ok("aborted".into())
            }
            Command::Retry => {
                if self.aborted.is_none() {
                    return Err("the rollout is not aborted".into());
                }
                self.aborted = None;
                self.aborted_at = None;
                self.restart_steps();
                Ok("retried".into())
            }
            Command::Promote { full } => {
                if self.aborted.is_some() {
                    return Err("the rollout is aborted; use `retry` first".into());
                }
                self.user_paused = false;
                if self.canary.is_none() {
                    return Ok("promoted".into());
                }
                if *full {
                    self.step = usize::MAX;
                    runner.terminate_all();
                } else {
                    // Promote skips the step it waits on (a pause, an analysis).
                    self.pause_since = None;
                    self.inconclusive = false;
                    self.step = self.step.saturating_add(1);
                }
                Ok("promoted".into())
            }
        }
    }

    fn restart_steps(&mut self) {
        self.step = 0;
        self.weight = 0;
        self.scale = None;
        self.pause_since = None;
        self.inconclusive = false;
        self.mirrors.clear();
        self.headers.clear();
    }

    fn abort(&mut self, msg: String, now: Instant, delay: Duration, runner: &mut dyn Runner) {
        self.aborted = Some(msg);
        self.aborted_at = Some(now + delay);
        self.pause_since = None;
        self.mirrors.clear();
        self.headers.clear();
        runner.terminate_all();
    }

    /// One step of the controller's loop.
    pub fn tick(
        &mut self,
        now: Instant,
        v: &View<'_>,
        ready: &dyn Fn(&str) -> usize,
        runner: &mut dyn Runner,
    ) {
        let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retired)
            .into_iter()
            .partition(|(r, at)| now < *at || ready(&r.hash) > 0 || r.hash.is_empty());
        self.retired = kept;
        for (r, _) in gone {
            self.history.retain(|h| h.hash != r.hash);
            self.history.insert(0, r);
        }
        self.history.sort_by_key(|h| std::cmp::Reverse(h.revision));
        self.history.truncate(v.history_limit);
        let Some(stable) = &self.stable else {
            self.next_revision = 2;
            self.stable = Some(Revision::new(v.hash, 1, v.template));
            self.step = v.canary.steps.len();
            return;
        };
        let current = self.canary.as_ref().unwrap_or(stable).hash.clone();
        if v.hash != current {
            runner.terminate_all();
            if v.hash == stable.hash {
                // Back to stable: the canary goes, without steps.
                if let Some(c) = self.canary.take() {
                    self.retired.push((c, now));
                }
                self.retired.retain(|(r, _)| r.hash != v.hash);
                self.history.retain(|r| r.hash != v.hash);
                self.aborted = None;
                self.aborted_at = None;
                self.restart_steps();
                self.step = v.canary.steps.len();
                return;
            }
            if let Some(c) = self.canary.take() {
                self.retired.push((c, now));
            }
            self.retired.retain(|(r, _)| r.hash != v.hash);
            self.history.retain(|r| r.hash != v.hash);
            let rev = self.next_revision.max(2);
            self.next_revision = rev + 1;
            self.canary = Some(Revision::new(v.hash, rev, v.template));
            self.aborted = None;
            self.aborted_at = None;
            self.blocked = None;
            self.restart_steps();
        }
        let (Some(canary), Some(stable)) = (self.canary.clone(), self.stable.clone()) else {
            return;
        };
        if self.aborted.is_some() || self.user_paused || v.paused {
            return;
        }
        let hashes = (stable.hash.as_str(), canary.hash.as_str());
        let abort_delay =
            Duration::from_secs(v.canary.abort_scale_down_delay_seconds.unwrap_or(30));
        if let Some(bg) = &v.canary.analysis
            && self.step >= bg.starting_step.unwrap_or(0)
            && !bg.templates.is_empty()
        {
            let templates = templates(&bg.templates);
            let (verdict, msg) =
                runner.run("background", &templates, &bg.args, hashes, canary.revision);
            if verdict == Verdict::Failed {
                self.abort(msg, now, abort_delay, runner);
                return;
            }
        }
        let steps = &v.canary.steps;
        // Several steps may complete in one tick (a route, then a weight).
        for _ in 0..=steps.len() {
            if self.step >= steps.len() {
                if ready(&canary.hash) >= v.replicas {
                    let delay =
                        Duration::from_secs(v.canary.scale_down_delay_seconds.unwrap_or(30));
                    runner.terminate_all();
                    self.retired.push((stable.clone(), now + delay));
                    self.stable = self.canary.take();
                    self.restart_steps();
                    self.step = steps.len();
                }
                return;
            }
            let step: &Step = &steps[self.step];
            if let Some(w) = step.set_weight {
                self.weight = w.clamp(0, 100);
                if ready(&canary.hash) < self.canary_count(v) {
                    return;
                }
            } else if let Some(p) = &step.pause {
                let d = match p.duration() {
                    Ok(d) => d,
                    Err(e) => {
                        self.blocked = Some(format!("step {}: {e}", self.step));
                        return;
                    }
                };
                let since = *self.pause_since.get_or_insert(now);
                match d {
                    Some(d) if now.duration_since(since) >= d => self.pause_since = None,
                    _ => return,
                }
            } else if let Some(s) = &step.set_canary_scale {
                self.scale = if s.match_traffic_weight == Some(true) {
                    None
                } else {
                    Some(s.clone())
                };
                if ready(&canary.hash) < self.canary_count(v) {
                    return;
                }
            } else if let Some(m) = &step.set_mirror_route {
                self.mirrors.retain(|r| r.name != m.name);
                if m.match_.is_some() {
                    self.mirrors.push(m.clone());
                }
            } else if let Some(h) = &step.set_header_route {
                self.headers.retain(|r| r.name != h.name);
                if h.match_.is_some() {
                    self.headers.push(h.clone());
                }
            } else if let Some(a) = &step.analysis {
                let key = format!("step-{}", self.step);
                let (verdict, msg) = runner.run(
                    &key,
                    &templates(&a.templates),
                    &a.args,
                    hashes,
                    canary.revision,
                );
                match verdict {
                    Verdict::Running => return,
                    Verdict::Successful => {}
                    Verdict::Inconclusive => {
                        self.inconclusive = true;
                        return;
                    }
                    Verdict::Failed => {
                        self.abort(msg, now, abort_delay, runner);
                        return;
                    }
                }
            }
            self.step += 1;
        }
    }
}

fn templates(t: &[super::spec::TemplateRef]) -> Vec<(String, bool)> {
    t.iter()
        .map(|t| (t.template_name.clone(), t.cluster_scope))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fake {
        verdicts: HashMap<String, (Verdict, String)>,
        started: Vec<String>,
        terminated: usize,
    }

    impl Runner for Fake {
        fn run(
            &mut self,
            key: &str,
            _t: &[(String, bool)],
            _a: &[AnalysisArg],
            _h: (&str, &str),
            _r: u32,
        ) -> (Verdict, String) {
            if !self.started.iter().any(|k| k == key) {
                self.started.push(key.to_string());
            }
            self.verdicts
                .get(key)
                .cloned()
                .unwrap_or((Verdict::Successful, String::new()))
        }
        fn terminate_all(&mut self) {
            self.terminated += 1;
        }
    }

    fn fake() -> Fake {
        Fake {
            verdicts: HashMap::new(),
            started: Vec::new(),
            terminated: 0,
        }
    }

    fn canary(steps: serde_json::Value) -> Canary {
        serde_json::from_value(serde_json::json!({"steps": steps})).unwrap()
    }

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(
            serde_json::json!({"spec": {"containers": [{"name": "web", "image": image}]}}),
        )
        .unwrap()
    }

    #[test]
    fn the_seeds_steps_move_weight_and_scale_and_promote() {
        let c = canary(serde_json::json!([
            {"setCanaryScale": {"replicas": 1}},
            {"pause": {"duration": "10s"}},
            {"setCanaryScale": {"matchTrafficWeight": true}},
            {"setWeight": 10}, {"pause": {}},
            {"setWeight": 50}, {"analysis": {"templates": [{"templateName": "success-rate"}]}},
            {"setWeight": 100}
        ]));
        let (t1, t2) = (template("web:1"), template("web:2"));
        let v1 = View {
            replicas: 4,
            hash: "h1",
            template: &t1,
            canary: &c,
            paused: false,
            history_limit: 10,
        };
        let v2 = View {
            hash: "h2",
            template: &t2,
            ..v1
        };
        let mut m = Machine::default();
        let mut r = fake();
        let t0 = Instant::now();
        let all = |_: &str| 4usize;
        m.tick(t0, &v1, &all, &mut r);
        assert_eq!(m.phase(&all, &v1).0, "Healthy");
        assert_eq!(m.desired(t0, &v1)[0].1, 4);

        let none = |h: &str| if h == "h1" { 4 } else { 0 };
        m.tick(t0, &v2, &none, &mut r);
        assert_eq!(m.canary.as_ref().unwrap().revision, 2);
        assert_eq!(m.step, 0, "waits for the canary's one pod");
        let d = m.desired(t0, &v2);
        assert_eq!((d[0].1, d[1].1), (4, 1));
        let one = |h: &str| if h == "h1" { 4 } else { 1 };
        m.tick(t0, &v2, &one, &mut r);
        assert_eq!(m.step, 1);
        assert_eq!(m.phase(&one, &v2), ("Paused", "CanaryPauseStep".into()));
        assert_eq!(m.routed_weight(), 0);
        m.tick(t0 + Duration::from_secs(11), &v2, &one, &mut r);
        // Weight 10 of 4 replicas: ceil(0.4) = 1 pod, ready: on to the indefinite pause.
        assert_eq!(m.step, 4);
        assert_eq!(m.routed_weight(), 10);
        m.tick(t0 + Duration::from_secs(60), &v2, &one, &mut r);
        assert_eq!(m.step, 4, "an indefinite pause waits for promote");
        m.apply(&Command::Promote { full: false }, &mut r).unwrap();
        m.tick(t0 + Duration::from_secs(61), &v2, &one, &mut r);
        assert_eq!(m.step, 5);
        assert_eq!(m.desired(t0, &v2)[1].1, 2, "ceil(4 * 50%)");
        let two = |h: &str| if h == "h1" { 4 } else { 2 };
        m.tick(t0 + Duration::from_secs(62), &v2, &two, &mut r);
        assert_eq!(r.started, ["step-6"]);
        assert_eq!(m.step, 7);
        assert_eq!(m.routed_weight(), 100);
        let all2 = |_: &str| 4usize;
        let t = t0 + Duration::from_secs(63);
        m.tick(t, &v2, &all2, &mut r);
        assert!(m.canary.is_none(), "promoted");
        assert_eq!(m.stable.as_ref().unwrap().hash, "h2");
        assert_eq!(m.routed_weight(), 0);
        let d = m.desired(t, &v2);
        assert_eq!(d[0].0.hash, "h2");
        assert_eq!(
            (d[1].0.hash.as_str(), d[1].1),
            ("h1", usize::MAX),
            "old stable kept for its delay"
        );
        assert_eq!(m.desired(t + Duration::from_secs(31), &v2)[1].1, 0);
        assert_eq!(m.phase(&all2, &v2).0, "Healthy");
        // Once its pods are gone the old stable is history (Argo's ScaledDown ReplicaSet),
        // kept up to revisionHistoryLimit.
        let only_h2 = |h: &str| if h == "h2" { 4 } else { 0 };
        m.tick(t + Duration::from_secs(31), &v2, &only_h2, &mut r);
        assert!(m.retired.is_empty());
        assert_eq!(
            m.history.iter().map(|h| h.revision).collect::<Vec<_>>(),
            [1]
        );
        let t3 = template("web:3");
        let v3 = View {
            hash: "h3",
            template: &t3,
            history_limit: 1,
            ..v2
        };
        let t = t + Duration::from_secs(32);
        m.tick(t, &v3, &only_h2, &mut r);
        m.apply(&Command::Promote { full: true }, &mut r).unwrap();
        let only_h3 = |h: &str| if h == "h3" { 4 } else { 0 };
        m.tick(t, &v3, &only_h3, &mut r);
        assert_eq!(m.stable.as_ref().unwrap().hash, "h3");
        m.tick(t + Duration::from_secs(31), &v3, &only_h3, &mut r);
        assert_eq!(
            m.history.iter().map(|h| h.revision).collect::<Vec<_>>(),
            [2],
            "a limit of 1 keeps the newest"
        );
        // Back to an old template: it leaves the history.
        let v2 = View {
            history_limit: 1,
            ..v2
        };
        m.tick(t + Duration::from_secs(32), &v2, &only_h3, &mut r);
        assert!(m.history.is_empty(), "{:?}", m.history);
    }

    #[test]
    fn a_failed_analysis_aborts_and_retry_starts_over() {
        let c = canary(serde_json::json!([
            {"setWeight": 25}, {"analysis": {"templates": [{"templateName": "t"}]}}, {"setWeight": 100}
        ]));
        let (t1, t2) = (template("web:1"), template("web:2"));
        let v1 = View {
            replicas: 4,
            hash: "h1",
            template: &t1,
            canary: &c,
            paused: false,
            history_limit: 10,
        };
        let v2 = View {
            hash: "h2",
            template: &t2,
            ..v1
        };
        let mut m = Machine::default();
        let mut r = fake();
        r.verdicts.insert(
            "step-1".into(),
            (
                Verdict::Failed,
                "metric \"success-rate\" assessed Failed: 0.72".into(),
            ),
        );
        let t0 = Instant::now();
        let all = |_: &str| 4usize;
        m.tick(t0, &v1, &all, &mut r);
        m.tick(t0, &v2, &all, &mut r);
        assert!(m.aborted.is_some());
        assert_eq!(m.routed_weight(), 0);
        let (phase, msg) = m.phase(&all, &v2);
        assert_eq!(phase, "Degraded");
        assert!(msg.contains("revision 2") && msg.contains("0.72"), "{msg}");
        assert_eq!(
            m.desired(t0, &v2)[1].1,
            1,
            "canary pods stay for the abort delay"
        );
        assert_eq!(m.desired(t0 + Duration::from_secs(31), &v2)[1].1, 0);
        assert!(m.apply(&Command::Promote { full: false }, &mut r).is_err());
        r.verdicts.clear();
        m.apply(&Command::Retry, &mut r).unwrap();
        m.tick(t0, &v2, &all, &mut r);
        assert!(m.canary.is_none(), "retried through to promotion");
        assert_eq!(m.stable.as_ref().unwrap().revision, 2);
    }

    #[test]
    fn going_back_to_the_stable_template_drops_the_canary_without_steps() {
        let c = canary(serde_json::json!([{"setWeight": 20}, {"pause": {}}]));
        let (t1, t2) = (template("web:1"), template("web:2"));
        let v1 = View {
            replicas: 2,
            hash: "h1",
            template: &t1,
            canary: &c,
            paused: false,
            history_limit: 10,
        };
        let v2 = View {
            hash: "h2",
            template: &t2,
            ..v1
        };
        let mut m = Machine::default();
        let mut r = fake();
        let t0 = Instant::now();
        let all = |_: &str| 2usize;
        m.tick(t0, &v1, &all, &mut r);
        m.tick(t0, &v2, &all, &mut r);
        assert_eq!(m.routed_weight(), 20);
        m.tick(t0, &v1, &all, &mut r);
        assert!(m.canary.is_none());
        assert_eq!(m.routed_weight(), 0);
        assert_eq!(
            m.desired(t0, &v1)
                .iter()
                .find(|(r, _)| r.hash == "h2")
                .unwrap()
                .1,
            0
        );
        m.apply(&Command::Pause, &mut r).unwrap();
        assert_eq!(m.phase(&all, &v1).0, "Paused");
    }
}
