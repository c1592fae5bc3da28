//! The control plane's history, for `skein describe`'s Events: config applied (objects
//! created, configured, deleted), refused (with the reasons), pushed to proxies, acked or
//! refused by a proxy. One JSON object per line in a file beside the status file, appended
//! and bounded: past [`MAX_BYTES`] the older half is dropped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use skein_api::Manifests;

/// The file's bound.
pub const MAX_BYTES: u64 = 256 * 1024;

/// One entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339.
    pub at: String,
    /// `Normal` or `Warning`, as Kubernetes' events.
    #[serde(rename = "type")]
    pub kind: String,
    /// `Applied`, `Refused`, `Pushed`, `Acked`, `Rejected`.
    pub reason: String,
    /// The config version it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The objects it concerns, as [`object_key`]s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<String>,
    pub message: String,
}

/// `Kind/namespace/name` (`Kind//name` for cluster-scoped kinds).
pub fn object_key(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
}

/// The file beside the control plane's status file.
pub fn path_beside(status_file: &Path) -> PathBuf {
    status_file.with_file_name("control-events.jsonl")
}

/// The appending side.
#[derive(Debug)]
pub struct EventLog {
    path: PathBuf,
    lock: Mutex<()>,
}

impl EventLog {
    pub fn new(path: PathBuf) -> EventLog {
        EventLog {
            path,
            lock: Mutex::new(()),
        }
    }

    /// Appends `e`; a failure to write is logged, never fatal (the history is a help).
    pub fn append(&self, e: &Event) {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = self.try_append(e) {
            tracing::debug!(path = %self.path.display(), error = %err, "cannot write an event");
        }
    }

    fn try_append(&self, e: &Event) -> std::io::Result<()> {
        if std::fs::metadata(&self.path).is_ok_and(|m| m.len() > MAX_BYTES) {
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let keep = lines[lines.len() / 2..].join("\n") + "\n";
            let tmp = self.path.with_extension("jsonl.tmp");
            std::fs::write(&tmp, keep)?;
            std::fs::rename(&tmp, &self.path)?;
        }
        let mut line = serde_json::to_string(e).map_err(std::io::Error::other)?;
        line.push('\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(line.as_bytes())
    }
}

/// Every event of the file (lines that do not parse are skipped); none if it is missing.
pub fn read(path: &Path) -> Vec<Event> {
    use std::io::Read;
    // The writer keeps the file near MAX_BYTES; a reader takes at most a few times that.
    let mut bytes = Vec::new();
    let Ok(f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    if f.take(4 * MAX_BYTES).read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The objects `next` creates, changes and removes against `prev`, as [`object_key`]s.
pub fn changes(prev: &Manifests, next: &Manifests) -> [Vec<String>; 3] {
    use std::collections::BTreeMap;
    let index = |m: &Manifests| -> BTreeMap<String, serde_json::Value> {
        m.documents
            .iter()
            .map(|d| {
                let r = &d.resource;
                (object_key(r.kind(), r.namespace(), r.name()), r.to_json())
            })
            .collect()
    };
    let (a, b) = (index(prev), index(next));
    let created = b.keys().filter(|k| !a.contains_key(*k)).cloned().collect();
    let configured = b
        .iter()
        .filter(|(k, v)| a.get(*k).is_some_and(|old| old != *v))
        .map(|(k, _)| k.clone())
        .collect();
    let deleted = a.keys().filter(|k| !b.contains_key(*k)).cloned().collect();
    [created, configured, deleted]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: usize) -> Event {
        Event {
            at: "2026-01-01T00:00:00Z".into(),
            kind: "Normal".into(),
            reason: "Acked".into(),
            version: Some(i.to_string()),
            objects: vec![],
            message: format!("config version {i} acked by pod p-{i} {}", "x".repeat(200)),
        }
    }

    #[test]
    fn the_log_appends_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new(path_beside(&dir.path().join("control.json")));
        for i in 0..3000 {
            log.append(&event(i));
        }
        let size = std::fs::metadata(dir.path().join("control-events.jsonl"))
            .unwrap()
            .len();
        assert!(size <= MAX_BYTES + 1024, "{size}");
        let events = read(&dir.path().join("control-events.jsonl"));
        assert_eq!(events.last(), Some(&event(2999)), "the newest stays");
        assert!(events.len() > 500, "{}", events.len());
    }

    #[test]
    fn changes_name_created_configured_and_deleted_objects() {
        let svc = |name: &str, port: u16| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: ns\nspec:\n  ports: [{{port: {port}}}]\n---\n"
            )
        };
        let a = skein_api::load_str("a", &(svc("keep", 1) + &svc("change", 1) + &svc("gone", 1)))
            .unwrap();
        let b = skein_api::load_str("b", &(svc("keep", 1) + &svc("change", 2) + &svc("new", 1)))
            .unwrap();
        assert_eq!(
            changes(&a, &b),
            [
                vec!["Service/ns/new".to_string()],
                vec!["Service/ns/change".to_string()],
                vec!["Service/ns/gone".to_string()]
            ]
        );
    }
}
