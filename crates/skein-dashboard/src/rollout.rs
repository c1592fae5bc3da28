//! Argo Rollouts' status as the page shows it: the Rollout controller's status file
//! (`rollouts/NS.NAME.json` in the state directory), read with a size cap, turned into the
//! panel's JSON (phase with Argo's icon, steps with the current one, weights, revisions with
//! their pods, analysis runs with each metric's last measurements). A missing or malformed
//! file is an `error` field, never a failed request.

use serde_json::{Value as Json, json};
use skein_runtime::StateDir;
use skein_runtime::rollout::{RolloutStatus, status_file};

/// The largest status file read (a Rollout's status is a few KiB; its measurement history
/// is bounded by the controller, this bounds what a damaged file can cost).
pub const MAX_STATUS_BYTES: u64 = 1024 * 1024;
/// Measurements shown per metric, newest last.
pub const LAST_MEASUREMENTS: usize = 5;

/// Why a Rollout's status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(
        "no status for Rollout {0} yet: the Rollout controller writes it once `skein up` has started the Rollout"
    )]
    Missing(String),
    #[error("the status of Rollout {name} is larger than {max} bytes; it is not read")]
    TooLarge { name: String, max: u64 },
    #[error("could not read the status of Rollout {name}: {err}")]
    Read { name: String, err: std::io::Error },
    #[error("the status of Rollout {name} is not valid JSON: {err}")]
    Malformed {
        name: String,
        err: serde_json::Error,
    },
}

/// Argo's status icons (as `skein rollouts get` prints them).
pub fn icon(phase: &str) -> &'static str {
    match phase {
        "Healthy" | "Successful" | "Running" | "Ready" => "✔",
        "Progressing" | "Pending" => "◌",
        "Paused" => "॥",
        "Degraded" | "Failed" | "Error" => "✖",
        "Inconclusive" => "⚠",
        _ => "•",
    }
}

/// Reads one Rollout's status file, bounded.
pub fn read(state: &StateDir, ns: &str, name: &str) -> Result<RolloutStatus, RolloutError> {
    use std::io::Read;
    let id = format!("{ns}/{name}");
    let path = status_file(state, ns, name);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RolloutError::Missing(id));
        }
        Err(err) => return Err(RolloutError::Read { name: id, err }),
    };
    let mut buf = Vec::new();
    file.take(MAX_STATUS_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|err| RolloutError::Read {
            name: id.clone(),
            err,
        })?;
    if buf.len() as u64 > MAX_STATUS_BYTES {
        return Err(RolloutError::TooLarge {
            name: id,
            max: MAX_STATUS_BYTES,
        });
    }
    serde_json::from_slice(&buf).map_err(|err| RolloutError::Malformed { name: id, err })
}

/// The panel's JSON of one Rollout, or `{name, namespace, error}`.
pub fn rollout_json(state: &StateDir, ns: &str, name: &str) -> Json {
    match read(state, ns, name) {
        Ok(s) => status_json(&s),
        Err(e) => json!({"name": name, "namespace": ns, "error": e.to_string()}),
    }
}

/// The panel's JSON of a status.
pub fn status_json(s: &RolloutStatus) -> Json {
    let current = s.current_step_index;
    let steps: Vec<Json> = s
        .steps
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let state = match current {
                Some(c) if i < c => "done",
                Some(c) if i == c && c < s.steps.len() => "current",
                Some(_) => "pending",
                None => "pending",
            };
            json!({"index": i, "text": text, "state": state})
        })
        .collect();
    let revisions: Vec<Json> = s
        .revisions
        .iter()
        .map(|r| {
            json!({
                "revision": r.revision,
                "hash": r.hash,
                "role": r.role,
                "images": r.images,
                "pods": r.pods.iter().map(|p| json!({
                    "name": p.name, "ready": p.ready, "state": p.state, "restarts": p.restarts, "ip": p.ip,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let analysis: Vec<Json> = s
        .analysis_runs
        .iter()
        .map(|a| {
            let metrics: Vec<Json> = a.status["metricResults"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(metric_json)
                .collect();
            json!({
                "name": a.name,
                "phase": a.phase,
                "icon": icon(&a.phase),
                "message": a.message,
                "revision": a.revision,
                "metrics": metrics,
            })
        })
        .collect();
    let canary = s
        .revisions
        .iter()
        .find(|r| r.role == "canary")
        .map(|r| r.revision);
    let stable = s
        .revisions
        .iter()
        .find(|r| r.role == "stable")
        .map(|r| r.revision);
    json!({
        "name": s.name,
        "namespace": s.namespace,
        "phase": s.phase,
        "icon": icon(&s.phase),
        "message": s.message,
        "strategy": s.strategy,
        "currentStepIndex": current,
        "stepCount": s.steps.len(),
        "steps": steps,
        "setWeight": s.set_weight,
        "actualWeight": s.actual_weight,
        // With no update running the controller reports weight 100 (the stable revision is
        // the current one): all of it goes to stable.
        "stableWeight": if canary.is_some() { 100 - s.actual_weight.clamp(0, 100) } else { 100 },
        "stableRevision": stable,
        "canaryRevision": canary,
        "stableRS": s.stable_rs,
        "currentPodHash": s.current_pod_hash,
        "replicas": {"desired": s.replicas, "current": s.current, "updated": s.updated, "ready": s.ready, "available": s.available},
        "aborted": s.aborted,
        "paused": s.paused,
        "revisions": revisions,
        "analysisRuns": analysis,
        "conditions": s.conditions.iter().map(|c| json!({"type": c.type_, "status": c.status, "reason": c.reason, "message": c.message})).collect::<Vec<_>>(),
        "error": s.error,
        "updatedAt": s.updated_at,
    })
}

/// One metric of an AnalysisRun's `status.metricResults`: its phase, counts and the last
/// few measurements. Fields of the wrong type read as absent.
fn metric_json(m: &Json) -> Json {
    let count = |k: &str| m[k].as_u64().unwrap_or(0);
    let all = m["measurements"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let last: Vec<Json> = all[all.len().saturating_sub(LAST_MEASUREMENTS)..]
        .iter()
        .map(|x| {
            json!({
                "phase": x["phase"].as_str().unwrap_or(""),
                "value": x["value"].as_str(),
                "startedAt": x["startedAt"].as_str(),
                "message": x["message"].as_str(),
            })
        })
        .collect();
    let phase = m["phase"].as_str().unwrap_or("");
    json!({
        "name": m["name"].as_str().unwrap_or(""),
        "phase": phase,
        "icon": icon(phase),
        "count": count("count"),
        "successful": count("successful"),
        "failed": count("failed"),
        "inconclusive": count("inconclusive"),
        "error": count("error"),
        "message": m["message"].as_str(),
        "lastValue": last.last().and_then(|x| x["value"].as_str().map(str::to_string)),
        "measurements": last,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use skein_runtime::rollout::{AnalysisRunStatus, RevisionStatus, RolloutPod};

    fn paused_at_ten() -> RolloutStatus {
        RolloutStatus {
            name: "web".into(),
            namespace: "blog-system".into(),
            phase: "Paused".into(),
            message: "CanaryPauseStep".into(),
            strategy: "Canary".into(),
            current_step_index: Some(4),
            steps: (0..8).map(|i| format!("step {i}")).collect(),
            set_weight: 10,
            actual_weight: 10,
            revisions: vec![
                RevisionStatus {
                    revision: 2,
                    hash: "bbb".into(),
                    role: "canary".into(),
                    pods: vec![RolloutPod {
                        name: "web-bbb-1".into(),
                        ready: true,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                RevisionStatus {
                    revision: 1,
                    hash: "aaa".into(),
                    role: "stable".into(),
                    ..Default::default()
                },
            ],
            analysis_runs: vec![AnalysisRunStatus {
                name: "web-bbb-2".into(),
                phase: "Running".into(),
                revision: 2,
                status: json!({"metricResults": [
                    {"name": "success-rate", "phase": "Successful", "count": 7, "successful": 7, "failed": 0,
                     "measurements": (0..7).map(|i| json!({"phase": "Successful", "value": format!("[0.9{i}]"), "startedAt": "t"})).collect::<Vec<_>>()},
                    {"name": "p99-latency", "phase": "Running", "count": "bad", "measurements": "bad"}
                ]}),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn steps_weights_revisions_and_metrics() {
        let v = status_json(&paused_at_ten());
        assert_eq!(v["icon"], "॥");
        assert_eq!(v["stepCount"], 8);
        let states: Vec<&str> = v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["state"].as_str().unwrap())
            .collect();
        assert_eq!(
            states,
            [
                "done", "done", "done", "done", "current", "pending", "pending", "pending"
            ]
        );
        assert_eq!(v["stableWeight"], 90);
        assert_eq!(v["canaryRevision"], 2);
        assert_eq!(v["stableRevision"], 1);
        let m = &v["analysisRuns"][0]["metrics"];
        assert_eq!(m[0]["name"], "success-rate");
        assert_eq!(m[0]["successful"], 7);
        assert_eq!(
            m[0]["measurements"].as_array().unwrap().len(),
            LAST_MEASUREMENTS
        );
        assert_eq!(m[0]["lastValue"], "[0.96]");
        // Wrong types read as absent, not as a failure.
        assert_eq!(m[1]["count"], 0);
        assert_eq!(m[1]["measurements"], json!([]));
        assert_eq!(m[1]["icon"], "✔"); // Argo draws a Running run with ✔
    }

    #[test]
    fn a_healthy_rollout_has_every_step_done() {
        let mut s = paused_at_ten();
        s.phase = "Healthy".into();
        s.current_step_index = Some(8);
        s.set_weight = 100;
        s.actual_weight = 100;
        s.revisions.retain(|r| r.role == "stable");
        let v = status_json(&s);
        assert_eq!(v["icon"], "✔");
        assert_eq!(v["stableWeight"], 100, "{v}");
        assert_eq!(v["canaryRevision"], Json::Null);
        assert!(
            v["steps"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["state"] == "done")
        );
    }

    #[test]
    fn missing_malformed_and_oversized_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::resolve(Some(dir.path())).unwrap();
        let v = rollout_json(&state, "blog-system", "web");
        assert!(v["error"].as_str().unwrap().contains("no status"), "{v}");
        let path = status_file(&state, "blog-system", "web");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"{\"phase\": ").unwrap();
        let v = rollout_json(&state, "blog-system", "web");
        assert!(
            v["error"].as_str().unwrap().contains("not valid JSON"),
            "{v}"
        );
        std::fs::write(&path, vec![b' '; MAX_STATUS_BYTES as usize + 10]).unwrap();
        let v = rollout_json(&state, "blog-system", "web");
        assert!(v["error"].as_str().unwrap().contains("larger"), "{v}");
        std::fs::write(&path, serde_json::to_vec(&paused_at_ten()).unwrap()).unwrap();
        let v = rollout_json(&state, "blog-system", "web");
        assert_eq!(v["phase"], "Paused");
        assert!(v.get("error").is_none_or(Json::is_null));
    }
}
