//! The objects `get`, `describe`, `delete` and `diff` work on: loaded from files (`-f`) or
//! from what the running control plane reads (the runtime's addons, the manifests directory,
//! the `skein apply` directory), plus the runtime's pods from its status file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{Value, json};
use skein_api::Source;

use super::kinds::{self, KindInfo};

/// One object as kubectl would show it.
#[derive(Debug, Clone)]
pub struct Object {
    pub kind: &'static KindInfo,
    /// The object as written (`apiVersion`, `kind`, `metadata`, `spec`, ...).
    pub value: Value,
    /// The object as skein reads it (its typed model, with the namespace filled in): what
    /// `skein apply` stores, so what `diff` compares.
    pub typed: Value,
    /// Where it was written (none for pods, which the runtime reports).
    pub source: Option<Source>,
    /// Where its `kind:` line is, for messages.
    pub defined_at: Option<Source>,
    /// When it appeared (the file's time on a running system); unknown for `-f`.
    pub created: Option<SystemTime>,
    /// Whether `skein apply` added it (it lives in the apply directory).
    pub applied: bool,
}

impl Object {
    pub fn name(&self) -> &str {
        self.value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The namespace (`default` when unset; empty for cluster-scoped kinds).
    pub fn namespace(&self) -> &str {
        if !self.kind.namespaced {
            return "";
        }
        self.value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(skein_api::DEFAULT_NAMESPACE)
    }

    pub fn labels(&self) -> std::collections::BTreeMap<String, String> {
        string_map(self.value.pointer("/metadata/labels"))
    }
}

pub fn string_map(v: Option<&Value>) -> std::collections::BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), super::jsonpath::to_text(v)))
                .collect()
        })
        .unwrap_or_default()
}

/// Files that could not be loaded: every error with `file:line`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct LoadFailed(pub skein_api::LoadErrors);

/// Loads a file or a directory as `kubectl get -f` would show it.
pub fn from_path(path: &Path) -> Result<Vec<Object>, LoadFailed> {
    let m = skein_api::load_path(path).map_err(LoadFailed)?;
    Ok(objects(&m, None, false))
}

/// What the running control plane reads, later files replacing same-named objects as the
/// store does, with the pods of the status file. Directories that do not load are skipped
/// document by document (the control plane keeps its last good config meanwhile).
pub fn from_system(
    addons: &Path,
    manifests: &Path,
    applied: &Path,
    status: Option<&skein_runtime::Status>,
) -> Vec<Object> {
    // An object's AGE: since `skein up` loaded it, or since its file was written after.
    let started = status.and_then(|s| parse_time(&s.supervisor.started_at));
    let mut all = Vec::new();
    for (dir, is_applied) in [(addons, false), (manifests, false), (applied, true)] {
        if !dir.exists() {
            continue;
        }
        let (m, errors) = skein_api::load_path_partial(dir);
        let mut objs = objects(&m, Some(()), is_applied);
        objs.extend(unloaded(&m, &errors, is_applied));
        all.extend(objs.into_iter().map(|mut o| {
            o.created = o.created.max(started);
            o
        }));
    }
    let mut index: HashMap<(&'static str, String, String), usize> = HashMap::new();
    let mut out: Vec<Object> = Vec::new();
    for o in all {
        let key = (o.kind.kind, o.namespace().to_string(), o.name().to_string());
        match index.get(&key) {
            Some(&i) => out[i] = o,
            None => {
                index.insert(key, out.len());
                out.push(o);
            }
        }
    }
    if let Some(s) = status {
        // A bare Pod of the manifests is the runtime's pod of the same name: show that one.
        let running = pods(s);
        out.retain(|o| {
            o.kind.kind != "Pod"
                || !running
                    .iter()
                    .any(|r| r.namespace() == o.namespace() && r.name() == o.name())
        });
        out.extend(running);
    }
    out
}

/// AnalysisRuns' `status`, from the files the runtime's analysis engine keeps
/// (`analysisruns/NS.NAME.json`): merged into the AnalysisRuns of the manifests, and the runs
/// a Rollout started (which no file declares) added as objects of their own.
pub fn add_analysis_status(objects: &mut Vec<Object>, state_root: &Path) {
    let Ok(dir) = std::fs::read_dir(state_root.join("analysisruns")) else {
        return;
    };
    let Some(kind) = kinds::by_kind("AnalysisRun") else {
        return;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        // A namespace has no dot, so the first one ends it.
        let Some((ns, name)) = stem.split_once('.') else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        // The engine keeps at most a thousand short measurements per metric; a larger file
        // is not its.
        if meta.len() > 16 << 20 {
            continue;
        }
        let Some(status) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        else {
            continue;
        };
        match objects
            .iter_mut()
            .find(|o| o.kind.kind == "AnalysisRun" && o.namespace() == ns && o.name() == name)
        {
            Some(o) => {
                for v in [&mut o.value, &mut o.typed] {
                    if let Some(m) = v.as_object_mut() {
                        m.insert("status".into(), status.clone());
                    }
                }
            }
            None => {
                let value = json!({
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "AnalysisRun",
                    "metadata": {"name": name, "namespace": ns},
                    "status": status,
                });
                objects.push(Object {
                    kind,
                    typed: value.clone(),
                    value,
                    source: None,
                    defined_at: None,
                    created: meta.created().or_else(|_| meta.modified()).ok(),
                    applied: false,
                });
            }
        }
    }
}

fn objects(m: &skein_api::Manifests, with_time: Option<()>, applied: bool) -> Vec<Object> {
    let mut raw = RawFiles::default();
    m.documents
        .iter()
        .filter_map(|d| {
            let kind = kinds::by_api(d.resource.kind(), d.resource.api_version())?;
            let value = raw
                .document(&d.source)
                .filter(|v| v.get("kind").and_then(Value::as_str) == Some(kind.kind))
                .unwrap_or_else(|| d.resource.to_json());
            let created = with_time.and_then(|_| {
                std::fs::metadata(&d.source.file)
                    .and_then(|m| m.modified())
                    .ok()
            });
            let mut typed = d.resource.to_json();
            if let Some(m) = typed.get_mut("metadata").and_then(Value::as_object_mut) {
                if kind.namespaced {
                    m.insert(
                        "namespace".into(),
                        d.resource.metadata().namespace_or_default().into(),
                    );
                } else {
                    // `skein apply` writes one in; a cluster-scoped object has none.
                    m.remove("namespace");
                }
            }
            Some(Object {
                kind,
                typed,
                value,
                source: Some(d.source.clone()),
                defined_at: Some(Source {
                    file: d.source.file.clone(),
                    line: d.line_of("kind"),
                }),
                created,
                applied,
            })
        })
        .collect()
}

/// The documents of files with load errors that did not load, as written: the control plane
/// refuses them (and keeps its last good config), but `get` and `describe` show what the
/// files say, and describe the refusal.
fn unloaded(
    m: &skein_api::Manifests,
    errors: &[skein_api::LoadError],
    applied: bool,
) -> Vec<Object> {
    let files: std::collections::BTreeSet<&Path> = errors
        .iter()
        .filter_map(|e| e.at())
        .map(|at| at.file.as_path())
        .collect();
    let mut out = Vec::new();
    for file in files {
        let loaded: Vec<usize> = m
            .documents
            .iter()
            .filter(|d| d.source.file == file)
            .map(|d| d.source.line)
            .collect();
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let docs = split(&text);
        for (i, (start, value)) in docs.iter().enumerate() {
            let Some(value) = value.clone() else { continue };
            let end = docs.get(i + 1).map_or(usize::MAX, |(s, _)| *s);
            let line = *start;
            let api_version = value
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            let Some(kind) = value
                .get("kind")
                .and_then(Value::as_str)
                .and_then(|k| kinds::by_api(k, api_version))
            else {
                continue;
            };
            if loaded.iter().any(|l| (*start..end).contains(l))
                || value.pointer("/metadata/name").is_none()
            {
                continue;
            }
            let source = Source {
                file: file.to_path_buf(),
                line,
            };
            out.push(Object {
                kind,
                typed: value.clone(),
                value,
                defined_at: Some(source.clone()),
                source: Some(source),
                created: std::fs::metadata(file).and_then(|m| m.modified()).ok(),
                applied,
            });
        }
    }
    out
}

/// The files' documents as written, parsed without the typed model (so `-o yaml` shows
/// what the user wrote, not skein's reading of it).
#[derive(Default)]
struct RawFiles {
    files: HashMap<PathBuf, Vec<(usize, Option<Value>)>>,
}

impl RawFiles {
    fn document(&mut self, at: &Source) -> Option<Value> {
        let docs = self
            .files
            .entry(at.file.clone())
            .or_insert_with(|| split(&std::fs::read_to_string(&at.file).unwrap_or_default()));
        // A document's source line is its first content line: the document whose span
        // (from its start to the next one's) holds it.
        let i = docs.partition_point(|(start, _)| *start <= at.line);
        docs.get(i.checked_sub(1)?)
            .and_then(|(_, v)| v.as_ref())
            .cloned()
    }
}

/// Splits at `---` lines as the loader does: each document with the line it starts on (its
/// marker's line, or 1).
fn split(text: &str) -> Vec<(usize, Option<Value>)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut first = 1;
    let mut current = String::new();
    let mut flush = |first: usize, doc: &mut String| {
        // Every document keeps its place (spans follow each other), parsed or not.
        let v = serde_norway::from_str::<Value>(doc)
            .ok()
            .filter(Value::is_object);
        out.push((first, v));
        doc.clear();
    };
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let content = line.trim_end_matches(['\n', '\r']);
        if content == "---" || content.starts_with("--- ") || content.starts_with("---\t") {
            flush(first, &mut current);
            first = i + 1;
            current.push_str(&line[3..]);
        } else if content == "..." || content.starts_with('%') {
            current.push('\n');
        } else {
            current.push_str(line);
        }
    }
    flush(first, &mut current);
    out
}

fn parse_time(s: &str) -> Option<SystemTime> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(
        SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(u64::try_from(t.unix_timestamp()).ok()?),
    )
}

/// The runtime's pods as Kubernetes Pod objects.
fn pods(status: &skein_runtime::Status) -> Vec<Object> {
    let kind = kinds::by_kind("Pod");
    let Some(kind) = kind else { return Vec::new() };
    let started = parse_time(&status.supervisor.started_at);
    let node = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    status
        .pods
        .iter()
        .map(|p| {
            let containers: Vec<Value> = p
                .containers
                .iter()
                .map(|c| json!({"name": c.name, "command": c.command}))
                .collect();
            let statuses: Vec<Value> = p
                .containers
                .iter()
                .map(|c| {
                    json!({
                        "name": c.name,
                        "ready": p.ready || c.state == "Running" || c.state == "Ready",
                        "restartCount": c.restarts,
                        "state": {c.state.to_ascii_lowercase(): {}},
                    })
                })
                .collect();
            let phase = match p.state.as_str() {
                "Ready" => "Running",
                other => other,
            };
            let value = json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": p.name, "namespace": p.namespace, "labels": p.labels},
                "spec": {"containers": containers, "serviceAccountName": p.service_account, "nodeName": node},
                "status": {"phase": phase, "podIP": p.ip, "containerStatuses": statuses},
            });
            Object {
                kind,
                typed: value.clone(),
                value,
                source: None,
                defined_at: None,
                created: started,
                applied: false,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analysis_run_status_files_become_status_or_objects() {
        let state = tempfile::tempdir().unwrap();
        let runs = state.path().join("analysisruns");
        std::fs::create_dir(&runs).unwrap();
        std::fs::write(runs.join("ns.written.json"), r#"{"phase":"Failed"}"#).unwrap();
        std::fs::write(
            runs.join("ns.web-6d4f9c-2.1.json"),
            r#"{"phase":"Running"}"#,
        )
        .unwrap();
        std::fs::write(runs.join("junk.json"), "not json").unwrap();
        let manifests = tempfile::tempdir().unwrap();
        std::fs::write(
            manifests.path().join("ar.yaml"),
            "apiVersion: argoproj.io/v1alpha1\nkind: AnalysisRun\nmetadata: {name: written, namespace: ns}\nspec:\n  metrics: [{name: m, provider: {prometheus: {query: up}}}]\n",
        )
        .unwrap();
        let mut objs = from_path(manifests.path()).unwrap();
        add_analysis_status(&mut objs, state.path());
        let mut got: Vec<(String, String, Value)> = objs
            .iter()
            .map(|o| {
                (
                    o.namespace().to_string(),
                    o.name().to_string(),
                    o.value["status"]["phase"].clone(),
                )
            })
            .collect();
        got.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            got,
            [
                (
                    "ns".to_string(),
                    "web-6d4f9c-2.1".to_string(),
                    json!("Running")
                ),
                ("ns".to_string(), "written".to_string(), json!("Failed")),
            ]
        );
        assert!(objs[0].value["spec"]["metrics"].is_array());
    }

    /// `-o yaml` shows what the file says (`50`), not skein's typed reading of it (`50.0`),
    /// for documents after a `---` and comment lines too.
    #[test]
    fn objects_keep_the_documents_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let vs = |name: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts: [a]\n  http:\n  - mirror: {{host: a}}\n    mirrorPercentage: {{value: 50}}\n    route:\n    - destination: {{host: a}}\n"
            )
        };
        let text = format!("# first\n{}---\n# a comment\n\n{}", vs("one"), vs("two"));
        std::fs::write(dir.path().join("vs.yaml"), text).unwrap();
        let objs = from_path(dir.path()).unwrap();
        assert_eq!(objs.len(), 2);
        for (o, name) in objs.iter().zip(["one", "two"]) {
            assert_eq!(o.name(), name);
            assert_eq!(
                o.value.pointer("/spec/http/0/mirrorPercentage/value"),
                Some(&json!(50))
            );
            assert_eq!(
                o.typed.pointer("/metadata/namespace"),
                Some(&json!("default"))
            );
        }
    }

    #[test]
    fn documents_split_with_the_loaders_first_lines() {
        let docs = split("a: 1\n---\nb: 2\n--- \nc: [x]\n---\n- not a map\n");
        let lines: Vec<usize> = docs.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [1, 2, 4, 6]);
        assert_eq!(docs[2].1, Some(json!({"c": ["x"]})));
        assert_eq!(docs[3].1, None);
    }
}
