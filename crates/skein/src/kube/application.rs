//! The Application of a GitOps run as kubectl shows Argo CD's: its spec as written, and a
//! `status` in Argo CD's shape (`sync.status`, `sync.revision`, `health.status`, `resources`
//! with `requiresPruning`, `history`, `conditions`) from the controller's status file.

use std::path::Path;

use serde_json::{Value, json};
use skein_control::gitops::{AppStatus, Config, Layout};

use super::kinds;
use super::objects::Object;

/// Argo CD's `status` of the Application.
pub fn argo_status(cfg: &Config, s: Option<&AppStatus>) -> Value {
    let Some(s) = s else {
        return json!({"sync": {"status": "Unknown"}, "health": {"status": "Unknown"}});
    };
    let revision = s
        .revision
        .as_ref()
        .map(|r| r.sha.clone())
        .unwrap_or_default();
    let resources: Vec<Value> = s
        .resources
        .iter()
        .map(|r| {
            let mut v = json!({
                "group": r.group, "kind": r.kind, "namespace": r.namespace,
                "name": r.name, "status": r.status,
            });
            if r.requires_pruning {
                v["requiresPruning"] = true.into();
            }
            if let Some(m) = &r.message {
                v["message"] = m.clone().into();
            }
            if let Some(g) = &r.git {
                v["source"] = g.clone().into();
            }
            if let Some(at) = &r.self_heal_at {
                v["selfHealAt"] = at.clone().into();
            }
            v
        })
        .collect();
    let history: Vec<Value> = s
        .history
        .iter()
        .enumerate()
        .map(|(i, h)| {
            json!({"id": s.history.len() - i, "revision": h.revision, "deployedAt": h.deployed_at, "message": h.message})
        })
        .collect();
    let conditions: Vec<Value> = s
        .conditions
        .iter()
        .map(|c| json!({"type": c.kind, "message": c.message, "lastTransitionTime": c.last_transition_time}))
        .collect();
    let mut v = json!({
        "sync": {
            "status": s.sync,
            "revision": revision,
            "comparedTo": {
                "source": cfg.application.pointer("/spec/source").cloned().unwrap_or_default(),
                "destination": cfg.application.pointer("/spec/destination").cloned().unwrap_or_default(),
            },
        },
        "health": {"status": s.health},
        "resources": resources,
        "history": history,
        "reconciledAt": s.reconciled_at,
        "sourceType": "Directory",
    });
    if let Some(m) = &s.health_message {
        v["health"]["message"] = m.clone().into();
    }
    if !conditions.is_empty() {
        v["conditions"] = conditions.into();
    }
    if let Some(r) = &s.revision {
        v["operationState"] = json!({
            "phase": "Succeeded",
            "message": format!("successfully synced {} ({})", r.sha.chars().take(7).collect::<String>(), r.subject),
            "syncResult": {"revision": r.sha},
        });
    }
    if !s.uncommitted.is_empty() {
        v["uncommitted"] = s.uncommitted.clone().into();
    }
    v
}

/// The Application of the run in `gitops` (none without GitOps).
pub fn objects(gitops: &Path) -> Vec<Object> {
    let layout = Layout::new(gitops.to_path_buf());
    let Some(cfg) = layout.read_config() else {
        return Vec::new();
    };
    let Some(kind) = kinds::by_kind("Application") else {
        return Vec::new();
    };
    let status = layout.read_status();
    let mut value = cfg.application.clone();
    if let Some(o) = value.as_object_mut() {
        o.insert("status".into(), argo_status(&cfg, status.as_ref()));
    }
    let mut typed = value.clone();
    if let Some(m) = typed.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("namespace".into(), cfg.namespace.clone().into());
    }
    let created = std::fs::metadata(layout.config_file())
        .and_then(|m| m.modified())
        .ok();
    vec![Object {
        kind,
        value,
        typed,
        source: None,
        defined_at: None,
        created,
        applied: false,
    }]
}
