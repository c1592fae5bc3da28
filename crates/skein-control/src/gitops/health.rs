//! Argo CD's health of an Application from the runtime's pods: each Deployment and Rollout of
//! the commit is Healthy (its pods ready), Progressing (pods starting), Degraded (a pod
//! crash-looping) or Missing (no pods); the Application takes the worst, in Argo CD's order
//! (Healthy < Progressing < Missing < Degraded).

use serde_json::Value;
use skein_api::Manifests;

pub const HEALTHY: &str = "Healthy";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const MISSING: &str = "Missing";

fn rank(h: &str) -> u8 {
    match h {
        HEALTHY => 0,
        PROGRESSING => 2,
        MISSING => 3,
        DEGRADED => 4,
        _ => 1,
    }
}

/// The health and, unless Healthy, which workload made it so. `runtime` is the runtime's
/// status file (its `pods`).
pub fn health(git: &Manifests, runtime: &Value) -> (String, Option<String>) {
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
        let h = |pods: Vec<Value>| health(&git, &serde_json::json!({ "pods": pods })).0;
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
}
