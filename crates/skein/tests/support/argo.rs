//! Argo Rollouts as the end-to-end tests read it: `skein rollouts get -o json` and waits
//! on its steps.

use std::time::Duration;

use super::{Skein, eventually};

/// The Rollout `ns/name`'s status (Argo's fields).
pub fn rollout(skein: &Skein, ns: &str, name: &str) -> serde_json::Value {
    let out = skein.run(&["rollouts", "get", "rollout", name, "-n", ns, "-o", "json"]);
    assert!(
        out.status.success(),
        "rollouts get: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("rollout status is JSON")
}

/// Waits (90 s at most) for the Rollout to sit at `step` in `phase`.
pub fn wait_step(skein: &Skein, ns: &str, name: &str, step: u64, phase: &str) -> serde_json::Value {
    eventually(
        Duration::from_secs(90),
        &format!("rollout {ns}/{name} at step {step}, {phase}"),
        || {
            let r = rollout(skein, ns, name);
            (r["currentStepIndex"] == step && r["phase"] == phase).then_some(r)
        },
    )
}

/// `skein rollouts ARGS... NAME -n NS`, which must succeed.
pub fn rollouts(skein: &Skein, ns: &str, name: &str, args: &[&str]) {
    let mut all = vec!["rollouts"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[name, "-n", ns]);
    let out = skein.run(&all);
    assert!(
        out.status.success(),
        "rollouts {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The names of the canary revision's pods.
pub fn canary_pods(r: &serde_json::Value) -> Vec<String> {
    r["revisions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|rev| rev["role"] == "canary")
        .flat_map(|rev| rev["pods"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect()
}

/// `skein rollouts retry rollout NAME`, then waits (30 s) for the update to run its steps
/// again: out of Degraded, at step 1 with canary pods.
pub fn retry(skein: &Skein, ns: &str, name: &str) -> serde_json::Value {
    let out = skein.run(&["rollouts", "retry", "rollout", name, "-n", ns]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(Duration::from_secs(30), "the update started again", || {
        let r = rollout(skein, ns, name);
        (r["phase"] != "Degraded" && r["currentStepIndex"] == 1 && !canary_pods(&r).is_empty())
            .then_some(r)
    })
}

/// `skein rollouts status NAME -n NS --timeout TIMEOUT`, which must exit 0 (Healthy); `what`
/// says what the test waits for.
pub fn wait_healthy(skein: &Skein, ns: &str, name: &str, timeout: &str, what: &str) {
    let out = skein.run(&["rollouts", "status", name, "-n", ns, "--timeout", timeout]);
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
