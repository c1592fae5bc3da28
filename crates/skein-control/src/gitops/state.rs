//! What the GitOps controller keeps in the state directory (`STATE/gitops/`): the
//! Application it syncs (`config.json`), each commit's exported manifests
//! (`exports/<n>-<sha>/`, the one in force linked as `current`, which is the control plane's
//! manifests directory), and its status (`status.json`) for `skein status`, `skein get
//! applications` and the dashboard.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use skein_api::gitops::{Application, ResourceIgnoreDifferences};

use super::git::{Git, GitError, RepoUrlError, local_repo};

/// How often the repository is polled by default (Argo CD polls every 3 minutes and reacts to
/// webhooks; locally a commit is in force within about this).
pub const DEFAULT_POLL_MS: u64 = 1_000;
/// Argo CD's default self-heal timeout (`--self-heal-timeout-seconds`).
pub const DEFAULT_SELF_HEAL_TIMEOUT_MS: u64 = 5_000;
/// Exports kept besides the one in force.
const KEEP_EXPORTS: usize = 3;
/// The directory inside an export holding objects a commit dropped and that are not pruned.
pub const REQUIRES_PRUNING_DIR: &str = "zz-requires-pruning";

#[derive(Debug, thiserror::Error)]
pub enum GitopsError {
    #[error(transparent)]
    Repo(#[from] RepoUrlError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("{at}: Application {name}: {message}")]
    Application {
        at: String,
        name: String,
        message: String,
    },
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("commit {commit} does not load or validate; the last synced config stays:\n  {}", errors.join("\n  "))]
    Refused { commit: String, errors: Vec<String> },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> GitopsError + '_ {
    move |error| GitopsError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// The Application the controller syncs, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub name: String,
    pub namespace: String,
    /// The local repository.
    pub repo: PathBuf,
    /// `targetRevision` (HEAD when unset).
    pub revision: String,
    /// `path` inside the repository ("" for its root).
    pub path: String,
    /// `directory.recurse`.
    pub recurse: bool,
    pub destination_namespace: Option<String>,
    pub automated: bool,
    pub prune: bool,
    pub self_heal: bool,
    pub sync_options: Vec<String>,
    pub ignore_differences: Vec<ResourceIgnoreDifferences>,
    /// The Application as written (or as skein made it for a working tree).
    pub application: serde_json::Value,
    /// Where it came from: its `file:line`, or the working tree's path.
    pub origin: String,
    pub poll_ms: u64,
    pub self_heal_timeout_ms: u64,
}

impl Config {
    /// The Application of `file`, its relative `repoURL` read from `file`'s directory.
    pub fn from_application(
        app: &Application,
        at: &skein_api::Source,
    ) -> Result<Config, GitopsError> {
        let name = app.metadata.name.clone();
        let fail = |message: String| GitopsError::Application {
            at: at.to_string(),
            name: name.clone(),
            message,
        };
        let Some(source) = &app.spec.source else {
            return Err(fail(if app.spec.sources.is_some() {
                "spec.sources (several sources) is not supported; give one spec.source".into()
            } else {
                "spec.source is required".into()
            }));
        };
        if source.chart.is_some() || source.helm.is_some() || source.kustomize.is_some() {
            return Err(fail(
                "Helm and Kustomize sources are not supported; skein syncs a directory of plain manifests".into(),
            ));
        }
        let base = at
            .file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let repo = local_repo(&source.repo_url, &base)?;
        let recurse = source
            .directory
            .as_ref()
            .and_then(|d| d.get("recurse"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        Ok(Config {
            name: name.clone(),
            namespace: app.metadata.namespace_or_default().to_string(),
            repo,
            revision: source
                .target_revision
                .clone()
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| "HEAD".into()),
            path: source.path.clone().unwrap_or_default(),
            recurse,
            destination_namespace: app.spec.destination.namespace.clone(),
            automated: app.spec.automated(),
            prune: app.spec.prune(),
            self_heal: app.spec.self_heal(),
            sync_options: app
                .spec
                .sync_policy
                .as_ref()
                .map(|p| p.sync_options.clone())
                .unwrap_or_default(),
            ignore_differences: app.spec.ignore_differences.clone(),
            application: skein_api::Resource::Application(app.clone()).to_json(),
            origin: at.to_string(),
            poll_ms: DEFAULT_POLL_MS,
            self_heal_timeout_ms: DEFAULT_SELF_HEAL_TIMEOUT_MS,
        })
    }

    /// A working tree's root: an Application named after the directory, syncing its HEAD
    /// automatically with prune (removing a file removes its objects, as in a plain
    /// directory) and without self-heal (`skein apply` stays until a commit changes the
    /// object).
    pub fn for_work_tree(dir: &Path) -> Result<Config, GitopsError> {
        let repo = std::fs::canonicalize(dir).map_err(io(dir))?;
        // A DNS-1123 label, as an Application's name is.
        let name: String = repo
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
            .split('-')
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("-")
            .chars()
            .take(63)
            .collect();
        let name = if name.is_empty() {
            "local".into()
        } else {
            name.trim_end_matches('-').to_string()
        };
        let application = serde_json::json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": name, "namespace": "argocd"},
            "spec": {
                "project": "default",
                "source": {"repoURL": format!("file://{}", repo.display()), "targetRevision": "HEAD", "path": "."},
                "destination": {"server": "https://kubernetes.default.svc"},
                "syncPolicy": {"automated": {"prune": true, "selfHeal": false}},
            },
        });
        Ok(Config {
            name,
            namespace: "argocd".into(),
            repo: repo.clone(),
            revision: "HEAD".into(),
            path: String::new(),
            recurse: true,
            destination_namespace: None,
            automated: true,
            prune: true,
            self_heal: false,
            sync_options: Vec::new(),
            ignore_differences: Vec::new(),
            application,
            origin: format!("git working tree {}", repo.display()),
            poll_ms: DEFAULT_POLL_MS,
            self_heal_timeout_ms: DEFAULT_SELF_HEAL_TIMEOUT_MS,
        })
    }

    /// `Prune=false`-style sync options.
    pub fn sync_option(&self, name: &str) -> Option<&str> {
        self.sync_options.iter().find_map(|o| {
            o.split_once('=')
                .filter(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim())
        })
    }

    /// The key events and `skein describe` use for the Application.
    pub fn object_key(&self) -> String {
        crate::events::object_key("Application", &self.namespace, &self.name)
    }
}

/// What `skein up` finds at its path: an Application (a file or directory holding exactly
/// one), a git working tree's root (a directory with `.git`), or neither (plain manifests).
pub fn detect(path: &Path) -> Result<Option<Config>, GitopsError> {
    let (m, _) = skein_api::load_path_partial(path);
    let apps: Vec<_> = m
        .documents
        .iter()
        .filter_map(|d| match &d.resource {
            skein_api::Resource::Application(a) => Some((a, d)),
            _ => None,
        })
        .collect();
    match apps.as_slice() {
        [] => {}
        [(app, doc)] => {
            let at = skein_api::Source {
                file: std::path::absolute(&doc.source.file).unwrap_or(doc.source.file.clone()),
                line: doc.line_of("kind"),
            };
            return Config::from_application(app, &at).map(Some);
        }
        [_, (app, doc), ..] => {
            return Err(GitopsError::Application {
                at: doc.source.to_string(),
                name: app.metadata.name.clone(),
                message: format!(
                    "{} holds {} Applications; `skein up` syncs one: give its file",
                    path.display(),
                    apps.len()
                ),
            });
        }
    }
    if path.is_dir() && path.join(".git").exists() {
        return Config::for_work_tree(path).map(Some);
    }
    Ok(None)
}

/// Paths under `STATE/gitops`.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: PathBuf) -> Layout {
        Layout { root }
    }
    pub fn config_file(&self) -> PathBuf {
        self.root.join("config.json")
    }
    pub fn status_file(&self) -> PathBuf {
        self.root.join("status.json")
    }
    /// The manifests in force: a link to one export.
    pub fn current(&self) -> PathBuf {
        self.root.join("current")
    }
    pub fn exports(&self) -> PathBuf {
        self.root.join("exports")
    }

    pub fn read_config(&self) -> Option<Config> {
        serde_json::from_slice(&std::fs::read(self.config_file()).ok()?).ok()
    }

    pub fn write_config(&self, c: &Config) -> Result<(), GitopsError> {
        write_json(&self.config_file(), c)
    }

    pub fn read_status(&self) -> Option<AppStatus> {
        serde_json::from_slice(&std::fs::read(self.status_file()).ok()?).ok()
    }

    pub fn write_status(&self, s: &AppStatus) -> Result<(), GitopsError> {
        write_json(&self.status_file(), s)
    }

    /// The export in force and its record.
    pub fn current_export(&self) -> Option<ExportMeta> {
        let target = std::fs::read_link(self.current()).ok()?;
        let name = target.file_name()?.to_string_lossy().into_owned();
        serde_json::from_slice(&std::fs::read(self.exports().join(format!("{name}.json"))).ok()?)
            .ok()
    }
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), GitopsError> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(v).map_err(|e| GitopsError::Io {
        path: path.to_path_buf(),
        error: std::io::Error::other(e),
    })?;
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// One commit's exported manifests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportMeta {
    /// The export's directory name under `exports/`.
    pub name: String,
    pub commit: super::git::CommitInfo,
    /// Per exported file (relative), the lines where skein wrote the destination namespace
    /// into an object without one (so the git file's lines are these minus those before).
    pub inserted: BTreeMap<String, Vec<usize>>,
    /// The objects kept from earlier commits that the commit no longer has ("requires
    /// pruning"), as event keys.
    pub requires_pruning: Vec<String>,
}

impl ExportMeta {
    /// `path/file.yaml:LINE` in the repository for an exported file and line.
    pub fn git_location(
        &self,
        cfg: &Config,
        layout: &Layout,
        src: &skein_api::Source,
    ) -> Option<String> {
        let dir = layout.exports().join(&self.name);
        let rel = src
            .file
            .strip_prefix(layout.current())
            .or_else(|_| src.file.strip_prefix(&dir))
            .ok()?
            .to_string_lossy()
            .into_owned();
        if rel.starts_with(REQUIRES_PRUNING_DIR) {
            return None;
        }
        let before = self
            .inserted
            .get(&rel)
            .map_or(0, |l| l.iter().filter(|&&i| i < src.line).count());
        let path = cfg.path.trim_matches('/');
        let file = if path.is_empty() || path == "." {
            rel
        } else {
            format!("{path}/{rel}")
        };
        Some(format!("{file}:{}", src.line - before))
    }
}

/// An object a new commit dropped, kept until pruned: its event key and its JSON.
#[derive(Debug, Clone)]
pub struct Kept {
    pub key: String,
    pub json: serde_json::Value,
}

/// Writes commit `sha`'s manifests (the Application's path) into a new export, with the
/// destination namespace filled in where objects have none and `kept` objects beside them.
pub fn export(
    cfg: &Config,
    git: &Git,
    layout: &Layout,
    sha: &str,
    kept: &[Kept],
) -> Result<ExportMeta, GitopsError> {
    let commit = git.info(sha)?;
    let files = git.files(sha, &cfg.path, cfg.recurse)?;
    let exports = layout.exports();
    std::fs::create_dir_all(&exports).map_err(io(&exports))?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let short: String = sha.chars().take(12).collect();
    let name = format!("{millis}-{short}");
    let tmp = exports.join(format!("{name}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let mut inserted = BTreeMap::new();
    for f in &files {
        let bytes = git.blob(&f.blob)?;
        let dest = tmp.join(&f.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let bytes = match (&cfg.destination_namespace, String::from_utf8(bytes)) {
            (Some(ns), Ok(text)) if !ns.is_empty() => {
                let (text, lines) = with_namespace(&text, ns);
                if !lines.is_empty() {
                    inserted.insert(f.path.clone(), lines);
                }
                text.into_bytes()
            }
            (_, Ok(text)) => text.into_bytes(),
            (_, Err(e)) => e.into_bytes(),
        };
        std::fs::write(&dest, bytes).map_err(io(&dest))?;
    }
    if !kept.is_empty() {
        let dir = tmp.join(REQUIRES_PRUNING_DIR);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        for k in kept {
            let file = dir.join(format!("{}.yaml", k.key.replace('/', ".")));
            let text = serde_json::to_string_pretty(&k.json).unwrap_or_default();
            std::fs::write(&file, text).map_err(io(&file))?;
        }
    }
    let dir = exports.join(&name);
    std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
    let meta = ExportMeta {
        name: name.clone(),
        commit,
        inserted,
        requires_pruning: kept.iter().map(|k| k.key.clone()).collect(),
    };
    write_json(&exports.join(format!("{name}.json")), &meta)?;
    Ok(meta)
}

/// Loads and validates an export; the errors name the exported files.
pub fn check(layout: &Layout, meta: &ExportMeta) -> Result<skein_api::Manifests, GitopsError> {
    let dir = layout.exports().join(&meta.name);
    let refused = |errors: Vec<String>| GitopsError::Refused {
        commit: meta.commit.sha.chars().take(7).collect(),
        errors,
    };
    let m = skein_api::load_path(&dir)
        .map_err(|e| refused(e.iter().map(|e| e.to_string()).collect()))?;
    let errors: Vec<String> = skein_api::validate(&m)
        .into_iter()
        .filter(|d| d.refuses())
        .map(|d| d.to_string())
        .collect();
    if errors.is_empty() {
        Ok(m)
    } else {
        Err(refused(errors))
    }
}

/// Puts `meta`'s export in force (the `current` link is replaced atomically) and removes
/// older exports but a few.
pub fn switch(layout: &Layout, meta: &ExportMeta) -> Result<(), GitopsError> {
    let link = layout.current();
    let tmp = layout.root.join("current.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(Path::new("exports").join(&meta.name), &tmp).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &link).map_err(io(&link))?;
    let Ok(entries) = std::fs::read_dir(layout.exports()) else {
        return Ok(());
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| *n != meta.name)
        .collect();
    names.sort();
    let old = names.len().saturating_sub(KEEP_EXPORTS);
    for n in &names[..old] {
        let _ = std::fs::remove_dir_all(layout.exports().join(n));
        let _ = std::fs::remove_file(layout.exports().join(format!("{n}.json")));
    }
    Ok(())
}

/// `skein up`'s first sync: resolves the revision, exports it, checks it and puts it in
/// force; returns the manifests directory (the `current` link).
pub fn prepare(cfg: &Config, git: &Git, layout: &Layout) -> Result<PathBuf, GitopsError> {
    std::fs::create_dir_all(&layout.root).map_err(io(&layout.root))?;
    git.check()?;
    let sha = git.resolve(&cfg.revision)?;
    let meta = export(cfg, git, layout, &sha, &[])?;
    if let Err(e) = check(layout, &meta) {
        let _ = std::fs::remove_dir_all(layout.exports().join(&meta.name));
        return Err(e);
    }
    switch(layout, &meta)?;
    layout.write_config(cfg)?;
    let _ = std::fs::remove_file(layout.status_file());
    Ok(layout.current())
}

/// `text` with `namespace: NS` written into each namespaced object's block `metadata:` that
/// has none; returns the lines (1-based, in the new text) that were inserted.
pub fn with_namespace(text: &str, ns: &str) -> (String, Vec<usize>) {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len() + 4);
    let mut inserted = Vec::new();
    let mut start = 0;
    while start < lines.len() {
        let end = (start + 1..lines.len())
            .find(|&i| lines[i].starts_with("---"))
            .unwrap_or(lines.len());
        let doc = &lines[start..end];
        let kind = doc
            .iter()
            .find_map(|l| l.strip_prefix("kind:"))
            .map(|k| k.trim().trim_matches(['"', '\'']));
        let cluster_scoped = matches!(
            kind,
            Some("Namespace" | "ClusterRole" | "ClusterRoleBinding" | "CustomResourceDefinition")
        );
        let meta = doc
            .iter()
            .position(|l| l.trim_end() == "metadata:" || l.starts_with("metadata: #"));
        let mut insert_at = None;
        if let (Some(m), false) = (meta, cluster_scoped || kind.is_none()) {
            let children: Vec<&&str> = doc[m + 1..]
                .iter()
                .take_while(|l| {
                    l.trim().is_empty()
                        || l.starts_with([' ', '\t'])
                        || l.trim_start().starts_with('#')
                })
                .collect();
            let indent = children
                .iter()
                .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .map(|l| l.len() - l.trim_start().len());
            if let Some(indent) = indent {
                let has = children.iter().any(|l| {
                    l.len() - l.trim_start().len() == indent
                        && l.trim_start().starts_with("namespace:")
                });
                if !has {
                    insert_at = Some((m, indent));
                }
            }
        }
        for (i, l) in doc.iter().enumerate() {
            out.push((*l).to_string());
            if let Some((m, indent)) = insert_at
                && i == m
            {
                out.push(format!("{}namespace: {ns}", " ".repeat(indent)));
                inserted.push(out.len());
            }
        }
        start = end;
    }
    let mut text_out = out.join("\n");
    if text.ends_with('\n') {
        text_out.push('\n');
    }
    (text_out, inserted)
}

/// Argo CD's sync status words.
pub const SYNCED: &str = "Synced";
pub const OUT_OF_SYNC: &str = "OutOfSync";

/// The controller's view of the Application, as `status.json` holds it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    pub name: String,
    pub namespace: String,
    pub repo: String,
    pub path: String,
    pub target_revision: String,
    /// The commit in force.
    pub revision: Option<super::git::CommitInfo>,
    /// `Synced` or `OutOfSync` (`Unknown` before the first comparison).
    pub sync: String,
    /// `Healthy`, `Progressing`, `Degraded`, `Missing`.
    pub health: String,
    pub health_message: Option<String>,
    pub automated: bool,
    pub prune: bool,
    pub self_heal: bool,
    /// Every object of the commit and every live object that differs, with its state.
    pub resources: Vec<ResourceStatus>,
    /// Errors: the repository cannot be read, a commit does not validate (`ComparisonError`,
    /// `SyncError`, as Argo CD's conditions).
    pub conditions: Vec<Condition>,
    /// The last syncs, newest first.
    pub history: Vec<SyncRecord>,
    /// `git status --porcelain` lines under the path: edits not in force until committed.
    pub uncommitted: Vec<String>,
    /// When the comparison was last made (RFC 3339).
    pub reconciled_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `Synced` or `OutOfSync`.
    pub status: String,
    /// The commit no longer has it and prune is off (Argo CD's "requires pruning").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requires_pruning: bool,
    /// Why it is OutOfSync: `skein apply` changed it, or it is not in git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Where git has it: `path/file.yaml:LINE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<String>,
    /// When self-heal reverts it (RFC 3339), while it is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_heal_at: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    pub last_transition_time: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRecord {
    pub revision: String,
    pub deployed_at: String,
    /// What the sync did (`2 configured, 1 pruned`), or why it was refused.
    pub message: String,
}

impl AppStatus {
    /// The objects that are OutOfSync.
    pub fn drifted(&self) -> impl Iterator<Item = &ResourceStatus> {
        self.resources.iter().filter(|r| r.status == OUT_OF_SYNC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_destination_namespace_goes_into_objects_without_one() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec: {}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: b\n  namespace: other\n---\nkind: Namespace\napiVersion: v1\nmetadata:\n  name: n\n";
        let (out, lines) = with_namespace(text, "blog");
        assert_eq!(lines, [4]);
        let m = skein_api::load_str("x.yaml", &out).unwrap();
        let ns: Vec<&str> = m.documents.iter().map(|d| d.resource.namespace()).collect();
        assert_eq!(ns, ["blog", "other", ""]);
        assert!(out.ends_with("name: n\n"));
    }
}
