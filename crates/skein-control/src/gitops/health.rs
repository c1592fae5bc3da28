//! Argo CD's health of an Application from the runtime's pods: each Deployment and Rollout of
//! the commit is Healthy (its pods ready), Progressing (pods starting), Degraded (a pod
//! crash-looping) or Missing (no pods); a Rollout's own phase, when the Rollouts controller
//! has written one (`STATE/rollouts/NS.NAME.json`), counts too (Paused is Argo CD's
//! Suspended). The Application takes the worst, in Argo CD's order (Healthy < Suspended <
//! Progressing < Missing < Degraded).

use serde_json::Value;
use skein_api::Manifests;

pub const HEALTHY: &str = "Healthy";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const MISSING: &str = "Missing";
pub const SUSPENDED: &str = "Suspended";

fn rank(h: &str) -> u8 {
    match h {
        HEALTHY => 0,
        SUSPENDED => 1,
        PROGRESSING => 2,
        MISSING => 3,
        DEGRADED => 4,
        _ => 2,
    }
}

/// The health and, unless Healthy, which workload made it so. `runtime` is the runtime's
/// status file (its `pods`); `rollout` gives a Rollout's status (namespace, name), if any.
pub fn health(
    git: &Manifests,
    runtime: &Value,
    rollout: impl Fn(&str, &str) -> Option<Value>,
) -> (String, Option<String>) {
    let pods = runtime["pods"].as_array().cloned().unwrap_or_default();
    let mut worst = (HEALTHY, None::<String>);
    let workloads = git
        .deployments()
        .map(|d| ("Deployment", &d.metadata, d.spec.replicas))
        .chain(
            git.rollouts()
                .map(|r| ("Rollout", &r.metadata, r.spec.replicas)),
        );
    for (kind, meta, replicas) in workloads {
        let ns = meta.namespace_or_default();
        let mine: Vec<&Value> = pods
            .iter()
            .filter(|p| p["namespace"] == ns && p["workload"] == meta.name.as_str())
            .collect();
        let want = replicas.unwrap_or(1);
        let (h, why) = if want > 0 && mine.is_empty() {
            (MISSING, format!("{kind} {ns}/{} has no pods", meta.name))
        } else if let Some(p) = mine.iter().find(|p| p["state"] == "CrashLoopBackOff") {
            (
                DEGRADED,
                format!(
                    "{kind} {ns}/{}: pod {} is in CrashLoopBackOff",
                    meta.name,
                    p["name"].as_str().unwrap_or("?")
                ),
            )
        } else if mine.iter().any(|p| p["ready"] != true) {
            let ready = mine.iter().filter(|p| p["ready"] == true).count();
            (
                PROGRESSING,
                format!(
                    "{kind} {ns}/{}: {ready} of {} pods ready",
                    meta.name,
                    mine.len()
                ),
            )
        } else {
            (HEALTHY, String::new())
        };
        if rank(h) > rank(worst.0) {
            worst = (h, Some(why));
        }
        if kind == "Rollout"
            && let Some(st) = rollout(ns, &meta.name)
        {
            let phase = st["phase"].as_str().unwrap_or("");
            let h = match phase {
                "Degraded" => DEGRADED,
                "Paused" => SUSPENDED,
                "Progressing" => PROGRESSING,
                _ => HEALTHY,
            };
            if rank(h) > rank(worst.0) {
                let msg = st["message"].as_str().unwrap_or("");
                worst = (
                    h,
                    Some(
                        format!("Rollout {ns}/{}: {phase} {msg}", meta.name)
                            .trim()
                            .to_string(),
                    ),
                );
            }
        }
    }
    (worst.0.to_string(), worst.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_workload_decides() {
        let git = skein_api::load_str(
            "d.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a, namespace: n}\nspec: {}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: b, namespace: n}\nspec: {}\n",
        )
        .unwrap();
        let pod = |w: &str, state: &str, ready: bool| serde_json::json!({"name": format!("{w}-1"), "namespace": "n", "workload": w, "state": state, "ready": ready});
        let h =
            |pods: Vec<Value>| health(&git, &serde_json::json!({ "pods": pods }), |_, _| None).0;
        assert_eq!(
            h(vec![pod("a", "Ready", true), pod("b", "Ready", true)]),
            HEALTHY
        );
        assert_eq!(
            h(vec![pod("a", "Ready", true), pod("b", "Pending", false)]),
            PROGRESSING
        );
        assert_eq!(h(vec![pod("a", "Ready", true)]), MISSING);
        assert_eq!(
            h(vec![pod("a", "CrashLoopBackOff", false)]),
            DEGRADED,
            "Degraded is worse than Missing"
        );
    }

    #[test]
    fn a_rollouts_phase_counts() {
        let git = skein_api::load_str(
            "r.yaml",
            "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: web, namespace: n}\nspec: {}\n",
        )
        .unwrap();
        let pods = serde_json::json!({"pods": [{"name": "web-1", "namespace": "n", "workload": "web", "state": "Ready", "ready": true}]});
        let with = |phase: &'static str| {
            health(&git, &pods, move |ns, name| {
                (ns == "n" && name == "web")
                    .then(|| serde_json::json!({"phase": phase, "message": "analysis failed"}))
            })
        };
        assert_eq!(with("Healthy").0, HEALTHY);
        assert_eq!(with("Paused").0, SUSPENDED);
        let (h, msg) = with("Degraded");
        assert_eq!(h, DEGRADED);
        assert_eq!(
            msg.as_deref(),
            Some("Rollout n/web: Degraded analysis failed")
        );
    }
}
