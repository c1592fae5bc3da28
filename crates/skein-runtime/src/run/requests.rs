//! Requests from the CLI to the running supervisor (`skein rollout restart`): a JSON file in
//! the state directory's `requests/`, which only its owner can write (the state directory is
//! 0700). The supervisor takes each file, removes it, and answers in the status file (the
//! restart's `request` field) or, when it cannot act on it, with `ID.error` beside it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::RuntimeError;
use crate::run::restart::Synced;
use crate::run::state::StateDir;
use crate::run::supervisor::{Pods, stopped};

/// How often the supervisor looks for requests.
const POLL: Duration = Duration::from_millis(200);
/// A request file larger than this is refused unread.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// One request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase", deny_unknown_fields)]
pub enum Request {
    /// Replace a workload's pods one at a time.
    Restart {
        kind: String,
        namespace: String,
        name: String,
    },
}

fn requests_dir(state: &StateDir) -> PathBuf {
    state.root().join("requests")
}

/// Writes `request` for the supervisor; returns its id. The file appears whole (written
/// beside, then renamed), owner-only.
pub fn submit(state: &StateDir, request: &Request) -> Result<String, RuntimeError> {
    let dir = requests_dir(state);
    crate::fs::private_dir(&dir).map_err(|e| RuntimeError::io(&dir, e))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let id = format!("{nanos}-{}", std::process::id());
    let tmp = dir.join(format!(".{id}.tmp"));
    let path = dir.join(format!("{id}.json"));
    let text = serde_json::to_vec(request).map_err(|e| RuntimeError::CorruptState {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    crate::fs::write_private(&tmp, &text).map_err(|e| RuntimeError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| RuntimeError::io(&path, e))?;
    Ok(id)
}

/// The supervisor's answer when it could not act on request `id`, if it wrote one.
pub fn refusal(state: &StateDir, id: &str) -> Option<String> {
    let path = requests_dir(state).join(format!("{id}.error"));
    let text = std::fs::read_to_string(&path).ok()?;
    let _ = std::fs::remove_file(&path);
    Some(text)
}

/// Takes requests until shutdown.
pub(crate) async fn serve(
    pods: Arc<Pods>,
    state: StateDir,
    synced: Synced,
    mut shutdown: watch::Receiver<bool>,
) {
    let dir = requests_dir(&state);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stopped(&mut shutdown) => return,
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for path in files {
            let Some(id) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            let answer = match read(&path) {
                Ok(Request::Restart {
                    kind,
                    namespace,
                    name,
                }) => pods
                    .restart_workload(&kind, &namespace, &name, &id, synced.clone())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            let _ = std::fs::remove_file(&path);
            if let Err(message) = answer {
                tracing::warn!("request {id}: {message}");
                let out = dir.join(format!("{id}.error"));
                let _ = crate::fs::write_private(&out, message.as_bytes());
            }
        }
    }
}

fn read(path: &Path) -> Result<Request, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_REQUEST_BYTES {
        return Err(format!(
            "request is {} bytes; at most {MAX_REQUEST_BYTES} are read",
            meta.len()
        ));
    }
    let text = std::fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&text).map_err(|e| format!("not a request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_back_and_strangers_are_refused() {
        let r = Request::Restart {
            kind: "Deployment".into(),
            namespace: "ns".into(),
            name: "web".into(),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"action":"restart","kind":"Deployment","namespace":"ns","name":"web"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        assert!(serde_json::from_str::<Request>(r#"{"action":"delete"}"#).is_err());
    }
}
