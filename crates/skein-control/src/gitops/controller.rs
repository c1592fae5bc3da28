//! The GitOps loop, on its own thread of the control plane: every `poll_ms` it resolves the
//! Application's `targetRevision`; a new commit is exported, checked and put in force (the
//! store's manifests directory is the `current` link, so the control plane reloads it like an
//! edited directory). It then compares what `skein apply` added with git's objects: a
//! difference is drift (OutOfSync), reverted after the self-heal timeout when `selfHeal` is on,
//! with a log line and an event naming the object, the file and the commit.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skein_api::{Document, Manifests};

use super::drift::{Ignore, group_of};
use super::git::Git;
use super::health;
use super::state::{
    self, AppStatus, Condition, Config, ExportMeta, Kept, Layout, OUT_OF_SYNC,
    REQUIRES_PRUNING_DIR, ResourceStatus, SYNCED, SyncRecord,
};
use crate::events::{Event, EventLog, object_key};

/// What the loop needs.
pub struct Controller {
    pub layout: Layout,
    /// The `git` program.
    pub git: PathBuf,
    /// `skein apply`'s directory.
    pub applied: PathBuf,
    /// The runtime's status file (pods, for health).
    pub registry: PathBuf,
    pub events: Arc<EventLog>,
}

/// Runs the loop on a thread of its own (git is a blocking subprocess).
pub fn spawn(c: Controller) -> Option<std::thread::JoinHandle<()>> {
    let Some(cfg) = c.layout.read_config() else {
        tracing::error!(
            file = %c.layout.config_file().display(),
            "gitops: no Application to sync; run `skein up` again"
        );
        return None;
    };
    std::thread::Builder::new()
        .name("gitops".into())
        .spawn(move || Loop::new(c, cfg).run())
        .ok()
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn short(sha: &str) -> String {
    sha.chars().take(7).collect()
}

fn key(d: &Document) -> String {
    let r = &d.resource;
    object_key(r.kind(), r.namespace(), r.name())
}

struct Loop {
    c: Controller,
    cfg: Config,
    git: Git,
    current: Option<ExportMeta>,
    /// A commit that was refused: not tried again until the revision moves.
    refused: Option<String>,
    /// Drifted objects, and when each was first seen so.
    first_seen: HashMap<String, Instant>,
    conditions: Vec<Condition>,
    history: Vec<SyncRecord>,
    uncommitted: Vec<String>,
    uncommitted_at: Option<Instant>,
    last_status: Option<AppStatus>,
}

impl Loop {
    fn new(c: Controller, cfg: Config) -> Loop {
        let git = Git {
            program: c.git.clone(),
            repo: cfg.repo.clone(),
        };
        let current = c.layout.current_export();
        let history = current
            .iter()
            .map(|m| SyncRecord {
                revision: m.commit.sha.clone(),
                deployed_at: now(),
                message: "synced at start".into(),
            })
            .collect();
        Loop {
            c,
            cfg,
            git,
            current,
            refused: None,
            first_seen: HashMap::new(),
            conditions: Vec::new(),
            history,
            uncommitted: Vec::new(),
            uncommitted_at: None,
            last_status: None,
        }
    }

    fn run(mut self) {
        tracing::info!(
            application = %self.cfg.name,
            repo = %self.cfg.repo.display(),
            revision = %self.cfg.revision,
            poll_ms = self.cfg.poll_ms,
            "gitops: syncing"
        );
        if let Some(m) = &self.current {
            self.event(
                false,
                "OperationCompleted",
                Vec::new(),
                format!(
                    "Sync operation to {} succeeded ({:?}): synced as skein up started",
                    short(&m.commit.sha),
                    m.commit.subject
                ),
            );
        }
        let every = Duration::from_millis(self.cfg.poll_ms.max(100));
        loop {
            self.step();
            std::thread::sleep(every);
        }
    }

    fn event(&self, warning: bool, reason: &str, mut objects: Vec<String>, message: String) {
        objects.push(self.cfg.object_key());
        self.c.events.append(&Event {
            at: now(),
            kind: if warning { "Warning" } else { "Normal" }.into(),
            reason: reason.into(),
            version: None,
            objects,
            message,
        });
    }

    /// Sets a condition; true when it is new (so it is logged once, not at every poll).
    fn condition(&mut self, kind: &str, message: String) -> bool {
        if self
            .conditions
            .iter()
            .any(|c| c.kind == kind && c.message == message)
        {
            return false;
        }
        self.conditions.retain(|c| c.kind != kind);
        self.conditions.push(Condition {
            kind: kind.into(),
            message,
            last_transition_time: now(),
        });
        true
    }

    fn step(&mut self) {
        match self.git.resolve(&self.cfg.revision) {
            Ok(sha) => {
                self.conditions.retain(|c| c.kind != "ComparisonError");
                let newer = self.current.as_ref().is_none_or(|m| m.commit.sha != sha);
                if newer && self.refused.as_deref() != Some(sha.as_str()) {
                    if self.cfg.automated {
                        self.sync(&sha);
                    } else {
                        let _ = self.condition(
                            "OutOfSyncRevision",
                            format!(
                                "{} is at {} but {} is in force; automated sync is off (restart `skein up` to sync)",
                                self.cfg.revision,
                                short(&sha),
                                self.current
                                    .as_ref()
                                    .map_or("nothing".into(), |m| short(&m.commit.sha))
                            ),
                        );
                    }
                }
            }
            Err(e) => {
                if self.condition("ComparisonError", e.to_string()) {
                    tracing::warn!("gitops: {e}");
                }
            }
        }
        let status = self.compare();
        // Written when something but the time of the comparison changed.
        let same = |a: &AppStatus| AppStatus {
            reconciled_at: String::new(),
            ..a.clone()
        };
        if self
            .last_status
            .as_ref()
            .is_none_or(|s| same(s) != same(&status))
        {
            if let Err(e) = self.c.layout.write_status(&status) {
                tracing::warn!("gitops: cannot write the status: {e}");
            }
            self.last_status = Some(status);
        }
    }

    /// git's objects in force (without the kept ones) and the kept ones.
    fn git_objects(&self) -> (Manifests, Manifests) {
        let (m, _) = skein_api::load_path_partial(&self.c.layout.current());
        let kept_dir = self.c.layout.current().join(REQUIRES_PRUNING_DIR);
        let (kept, git): (Vec<Document>, Vec<Document>) = m
            .documents
            .into_iter()
            .partition(|d| d.source.file.starts_with(&kept_dir));
        (Manifests { documents: git }, Manifests { documents: kept })
    }

    /// `skein apply`'s objects, each with its file.
    fn applied(&self) -> Vec<(PathBuf, Document)> {
        let Ok(entries) = std::fs::read_dir(&self.c.applied) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        let mut out = Vec::new();
        for f in files {
            let (m, _) = skein_api::load_path_partial(&f);
            out.extend(m.documents.into_iter().map(|d| (f.clone(), d)));
        }
        out
    }

    /// Puts commit `sha` in force: objects the commit changed are git's again (a `skein apply`
    /// copy of them goes), objects it dropped are pruned or kept as "requires pruning".
    fn sync(&mut self, sha: &str) {
        let layout = self.c.layout.clone();
        let (prev_git, prev_kept) = self.git_objects();
        let prune = self.cfg.prune && self.cfg.sync_option("Prune") != Some("false");
        let index = |m: &Manifests| -> BTreeMap<String, serde_json::Value> {
            m.documents
                .iter()
                .map(|d| (key(d), super::drift::normalized(&d.resource)))
                .collect()
        };
        let before = index(&prev_git);
        let mut kept_before = index(&prev_kept);
        // Export, see what the commit dropped; without prune, export again with those kept,
        // then check the whole (a commit may depend on what it dropped but did not prune).
        let attempt = state::export(&self.cfg, &self.git, &layout, sha, &[]).and_then(|meta| {
            let (m, _) = skein_api::load_path_partial(&layout.exports().join(&meta.name));
            let after = index(&m);
            let mut dropped: BTreeMap<String, serde_json::Value> = before
                .iter()
                .filter(|(k, _)| !after.contains_key(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            dropped.extend(
                std::mem::take(&mut kept_before)
                    .into_iter()
                    .filter(|(k, _)| !after.contains_key(k)),
            );
            let meta = if !prune && !dropped.is_empty() {
                let _ = std::fs::remove_dir_all(layout.exports().join(&meta.name));
                let kept: Vec<Kept> = dropped
                    .iter()
                    .map(|(k, v)| Kept {
                        key: k.clone(),
                        json: v.clone(),
                    })
                    .collect();
                state::export(&self.cfg, &self.git, &layout, sha, &kept)?
            } else {
                meta
            };
            match state::check(&layout, &meta) {
                Ok(_) => Ok((meta, after, dropped)),
                Err(e) => {
                    let _ = std::fs::remove_dir_all(layout.exports().join(&meta.name));
                    Err(e)
                }
            }
        });
        let (meta, after, dropped) = match attempt {
            Ok(x) => x,
            Err(e) => {
                tracing::error!("gitops: {e}");
                self.event(
                    true,
                    "SyncError",
                    Vec::new(),
                    format!("sync to {} failed: {e}", short(sha)),
                );
                let _ = self.condition("SyncError", e.to_string());
                self.history.insert(
                    0,
                    SyncRecord {
                        revision: sha.to_string(),
                        deployed_at: now(),
                        message: format!("refused: {e}"),
                    },
                );
                self.history.truncate(10);
                self.refused = Some(sha.to_string());
                return;
            }
        };
        self.conditions
            .retain(|c| c.kind != "SyncError" && c.kind != "OutOfSyncRevision");
        let created: Vec<String> = after
            .keys()
            .filter(|k| !before.contains_key(*k))
            .cloned()
            .collect();
        let configured: Vec<String> = after
            .iter()
            .filter(|(k, v)| before.get(*k).is_some_and(|b| b != *v))
            .map(|(k, _)| k.clone())
            .collect();
        // The commit's version of what it changed wins over a `skein apply` copy; pruned
        // objects go from both.
        let mut gone: BTreeSet<&String> = configured.iter().collect();
        if prune {
            gone.extend(dropped.keys());
        }
        let mut reverted = Vec::new();
        for (file, d) in self.applied() {
            let k = key(&d);
            if gone.contains(&k) {
                let _ = std::fs::remove_file(&file);
                reverted.push(k);
            }
        }
        if let Err(e) = state::switch(&layout, &meta) {
            tracing::error!("gitops: {e}");
            let _ = self.condition("SyncError", e.to_string());
            return;
        }
        let mut parts = Vec::new();
        for (n, what) in [
            (created.len(), "created"),
            (configured.len(), "configured"),
            (if prune { dropped.len() } else { 0 }, "pruned"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        if !prune && !dropped.is_empty() {
            parts.push(format!("{} require pruning (prune is off)", dropped.len()));
        }
        if !reverted.is_empty() {
            parts.push(format!(
                "{} `skein apply` copies replaced by git's or pruned",
                reverted.len()
            ));
        }
        // Pods are planned at `skein up`; a Rollout's template is its controller's to act on.
        let workloads: Vec<&String> = created
            .iter()
            .chain(&configured)
            .filter(|k| k.starts_with("Deployment/"))
            .collect();
        if !workloads.is_empty() {
            let names: Vec<&str> = workloads.iter().map(|k| k.as_str()).collect();
            tracing::warn!(
                "gitops: {} changed in commit {}: the runtime keeps the pods it planned at `skein up`; restart it to run the new template",
                names.join(", "),
                short(sha)
            );
            parts.push(format!(
                "pods not restarted for {} (restart `skein up` to run the new template)",
                names.join(", ")
            ));
        }
        let what = if parts.is_empty() {
            "no object changed".to_string()
        } else {
            parts.join(", ")
        };
        let message = format!(
            "Sync operation to {} succeeded ({:?}): {what}",
            short(sha),
            meta.commit.subject
        );
        tracing::info!(application = %self.cfg.name, "gitops: {message}");
        let mut objects: Vec<String> = created.into_iter().chain(configured).collect();
        if prune {
            objects.extend(dropped.keys().cloned());
        }
        self.event(false, "OperationCompleted", objects, message.clone());
        self.history.insert(
            0,
            SyncRecord {
                revision: sha.to_string(),
                deployed_at: now(),
                message,
            },
        );
        self.history.truncate(10);
        self.refused = None;
        self.current = Some(meta);
    }

    /// The comparison of live (applied) objects with git's, self-heal, health.
    fn compare(&mut self) -> AppStatus {
        let (git, kept) = self.git_objects();
        let applied = self.applied();
        let ignore = Ignore::new(&self.cfg.ignore_differences, &git);
        let meta = self.current.clone().unwrap_or_default();
        let location = |d: &Document| meta.git_location(&self.cfg, &self.c.layout, &d.source);
        let live: HashMap<String, &Document> = applied.iter().map(|(_, d)| (key(d), d)).collect();
        let prune = self.cfg.prune && self.cfg.sync_option("Prune") != Some("false");
        let mut resources = Vec::new();
        // Drifted objects self-heal may revert, with what to say.
        let mut healable: Vec<(String, String)> = Vec::new();
        let at = short(&meta.commit.sha);
        for d in &git.documents {
            let k = key(d);
            let r = &d.resource;
            let mut rs = ResourceStatus {
                group: group_of(r.kind()).into(),
                kind: r.kind().into(),
                namespace: r.namespace().into(),
                name: r.name().into(),
                status: SYNCED.into(),
                git: location(d),
                ..Default::default()
            };
            if let Some(l) = live.get(&k)
                && ignore.differs(r, &l.resource)
            {
                rs.status = OUT_OF_SYNC.into();
                rs.message = Some("changed by `skein apply`: differs from git".into());
                healable.push((
                    k.clone(),
                    format!(
                        "self-heal reverted {} {}/{} to git ({} at commit {at}): it differed from git",
                        r.kind(),
                        r.namespace(),
                        r.name(),
                        rs.git.as_deref().unwrap_or("?")
                    ),
                ));
            }
            resources.push(rs);
        }
        let in_git: BTreeSet<String> = git.documents.iter().map(key).collect();
        for d in &kept.documents {
            let r = &d.resource;
            resources.push(ResourceStatus {
                group: group_of(r.kind()).into(),
                kind: r.kind().into(),
                namespace: r.namespace().into(),
                name: r.name().into(),
                status: OUT_OF_SYNC.into(),
                requires_pruning: true,
                message: Some(format!(
                    "not in commit {at}; requires pruning (automated prune is off)"
                )),
                ..Default::default()
            });
        }
        for (_, d) in &applied {
            let k = key(d);
            if in_git.contains(&k) || kept.documents.iter().any(|x| key(x) == k) {
                continue;
            }
            let r = &d.resource;
            resources.push(ResourceStatus {
                group: group_of(r.kind()).into(),
                kind: r.kind().into(),
                namespace: r.namespace().into(),
                name: r.name().into(),
                status: OUT_OF_SYNC.into(),
                message: Some(format!(
                    "not in git at commit {at} (added by `skein apply`)"
                )),
                ..Default::default()
            });
            if prune {
                healable.push((
                    k,
                    format!(
                        "self-heal pruned {} {}/{}: it is not in git at commit {at}",
                        r.kind(),
                        r.namespace(),
                        r.name()
                    ),
                ));
            }
        }
        // Self-heal: revert what stayed drifted for the timeout.
        let timeout = Duration::from_millis(self.cfg.self_heal_timeout_ms);
        let drifted: BTreeSet<&String> = healable.iter().map(|(k, _)| k).collect();
        self.first_seen.retain(|k, _| drifted.contains(k));
        let mut reverted = BTreeSet::new();
        if self.cfg.self_heal {
            for (k, why) in &healable {
                let since = *self
                    .first_seen
                    .entry(k.clone())
                    .or_insert_with(Instant::now);
                if since.elapsed() < timeout {
                    continue;
                }
                let files: Vec<&PathBuf> = applied
                    .iter()
                    .filter(|(_, d)| key(d) == *k)
                    .map(|(f, _)| f)
                    .collect();
                for f in &files {
                    if let Err(e) = std::fs::remove_file(f) {
                        tracing::warn!(file = %f.display(), "gitops: cannot revert: {e}");
                    }
                }
                let message = format!(
                    "{why} for {}s under automated selfHeal of Application {:?}; to keep a change, commit it to git instead of `skein apply`",
                    timeout.as_secs(),
                    self.cfg.name
                );
                tracing::warn!(application = %self.cfg.name, object = %k, "gitops: {message}");
                self.event(true, "SelfHeal", vec![k.clone()], message);
                reverted.insert(k.clone());
            }
            self.first_seen.retain(|k, _| !reverted.contains(k));
        }
        let heal_at = |k: &str| -> Option<String> {
            let since = self.first_seen.get(k)?;
            let left = timeout.saturating_sub(since.elapsed());
            let at = time::OffsetDateTime::now_utc() + left;
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        };
        for r in &mut resources {
            let k = object_key(&r.kind, &r.namespace, &r.name);
            if reverted.contains(&k) {
                r.status = SYNCED.into();
                r.message = Some("reverted to git by self-heal".into());
            } else if self.cfg.self_heal && r.status == OUT_OF_SYNC {
                r.self_heal_at = heal_at(&k);
            }
        }
        resources.sort_by(|a, b| {
            (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name))
        });
        let runtime: serde_json::Value = std::fs::read(&self.c.registry)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        // The Rollouts controller's status files sit beside the runtime's status file.
        let rollouts = self
            .c
            .registry
            .parent()
            .map(|d| d.join("rollouts"))
            .unwrap_or_default();
        let (health, health_message) = health::health(&git, &runtime, |ns, name| {
            let b = std::fs::read(rollouts.join(format!("{ns}.{name}.json"))).ok()?;
            serde_json::from_slice(&b).ok()
        });
        if self
            .uncommitted_at
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
        {
            self.uncommitted = self.git.uncommitted(&self.cfg.path, 20);
            self.uncommitted_at = Some(Instant::now());
        }
        let out_of_sync = resources.iter().any(|r| r.status == OUT_OF_SYNC)
            || self
                .conditions
                .iter()
                .any(|c| c.kind == "OutOfSyncRevision");
        AppStatus {
            name: self.cfg.name.clone(),
            namespace: self.cfg.namespace.clone(),
            repo: self.cfg.repo.display().to_string(),
            path: self.cfg.path.clone(),
            target_revision: self.cfg.revision.clone(),
            revision: self.current.as_ref().map(|m| m.commit.clone()),
            sync: if self.current.is_none() {
                "Unknown".into()
            } else if out_of_sync {
                OUT_OF_SYNC.into()
            } else {
                SYNCED.into()
            },
            health,
            health_message,
            automated: self.cfg.automated,
            prune: self.cfg.prune,
            self_heal: self.cfg.self_heal,
            resources,
            conditions: self.conditions.clone(),
            history: self.history.clone(),
            uncommitted: self.uncommitted.clone(),
            reconciled_at: now(),
        }
    }
}

/// What `skein apply` says before it returns about objects that differ from git: a
/// `Warning:` that self-heal will revert them (naming the file and commit to change instead),
/// or, without self-heal, a `Note:` that they stay as drift. `change` holds the objects being
/// applied.
pub fn apply_warnings(layout: &Layout, change: &Manifests) -> Vec<String> {
    let Some(cfg) = layout.read_config() else {
        return Vec::new();
    };
    let meta = layout.current_export().unwrap_or_default();
    let (m, _) = skein_api::load_path_partial(&layout.current());
    let kept_dir = layout.current().join(REQUIRES_PRUNING_DIR);
    let git = Manifests {
        documents: m
            .documents
            .into_iter()
            .filter(|d| !d.source.file.starts_with(&kept_dir))
            .collect(),
    };
    let ignore = Ignore::new(&cfg.ignore_differences, &git);
    let secs = Duration::from_millis(cfg.self_heal_timeout_ms).as_secs();
    let at = short(&meta.commit.sha);
    let mut out = Vec::new();
    for d in &change.documents {
        let r = &d.resource;
        let k = key(d);
        let found = git.documents.iter().find(|g| key(g) == k);
        if !cfg.self_heal {
            // No revert, but not silent either: it is drift until a commit changes it.
            if let Some(g) = found.filter(|g| ignore.differs(&g.resource, r)) {
                out.push(format!(
                    "Note: Application {:?} syncs git: {} {}/{} differs from git ({} at commit {at}); it stays as drift (OutOfSync) until a commit changes that object.",
                    cfg.name,
                    r.kind(),
                    r.namespace(),
                    r.name(),
                    meta.git_location(&cfg, layout, &g.source)
                        .unwrap_or_else(|| "?".into()),
                ));
            }
            continue;
        }
        match found {
            Some(g) if ignore.differs(&g.resource, r) => out.push(format!(
                "Warning: Application {:?} has automated selfHeal: {} {}/{} differs from git ({} at commit {at}) and will be reverted in {secs}s; change that file and commit instead.",
                cfg.name,
                r.kind(),
                r.namespace(),
                r.name(),
                meta.git_location(&cfg, layout, &g.source)
                    .unwrap_or_else(|| "?".into()),
            )),
            None if cfg.prune => out.push(format!(
                "Warning: Application {:?} has automated selfHeal and prune: {} {}/{} is not in git (commit {at}) and will be removed in {secs}s; add it to {} and commit instead.",
                cfg.name,
                r.kind(),
                r.namespace(),
                r.name(),
                display_path(&cfg),
            )),
            _ => {}
        }
    }
    out
}

fn display_path(cfg: &Config) -> String {
    let p = cfg.path.trim_matches('/');
    if p.is_empty() || p == "." {
        cfg.repo.display().to_string()
    } else {
        Path::new(&cfg.repo).join(p).display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitops::git::tests::git;

    const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  namespace: ns\nspec:\n  ports: [{port: 80}]\n";

    fn vs(weight: u32) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\nspec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {{host: a}}\n      weight: {weight}\n"
        )
    }

    /// Without automated sync, a new commit is not put in force: OutOfSync, with the reason.
    #[test]
    fn without_automated_sync_a_new_commit_waits() {
        let repo = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        std::fs::write(repo.path().join("svc.yaml"), SVC).unwrap();
        git(repo.path(), &["init", "-q"]);
        git(repo.path(), &["add", "."]);
        git(repo.path(), &["commit", "-qm", "first"]);
        let mut cfg = Config::for_work_tree(repo.path()).unwrap();
        cfg.automated = false;
        let layout = Layout::new(state.path().join("gitops"));
        let g = Git {
            program: super::super::git::find_program().expect("git on PATH"),
            repo: cfg.repo.clone(),
        };
        state::prepare(&cfg, &g, &layout).unwrap();
        let mut l = Loop::new(
            Controller {
                layout: layout.clone(),
                git: g.program.clone(),
                applied: state.path().join("applied"),
                registry: state.path().join("status.json"),
                events: Arc::new(EventLog::new(state.path().join("events.jsonl"))),
            },
            cfg,
        );
        l.step();
        assert_eq!(layout.read_status().unwrap().sync, SYNCED);
        std::fs::write(repo.path().join("svc.yaml"), SVC.replace("80", "81")).unwrap();
        git(repo.path(), &["commit", "-qam", "second"]);
        l.step();
        let s = layout.read_status().unwrap();
        assert_eq!(s.sync, OUT_OF_SYNC);
        assert_eq!(s.revision.unwrap().subject, "first");
        assert!(
            s.conditions
                .iter()
                .any(|c| c.kind == "OutOfSyncRevision"
                    && c.message.contains("automated sync is off")),
            "{:?}",
            s.conditions
        );
    }

    /// Sync, drift, self-heal, "requires pruning" and a refused commit, on a real repository,
    /// one step at a time.
    #[test]
    fn a_loop_syncs_heals_keeps_unpruned_objects_and_refuses_a_bad_commit() {
        let repo = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        std::fs::write(repo.path().join("svc.yaml"), SVC).unwrap();
        std::fs::write(repo.path().join("vs.yaml"), vs(100)).unwrap();
        git(repo.path(), &["init", "-q"]);
        git(repo.path(), &["add", "."]);
        git(repo.path(), &["commit", "-qm", "first"]);
        let mut cfg = Config::for_work_tree(repo.path()).unwrap();
        cfg.prune = false;
        cfg.self_heal = true;
        cfg.destination_namespace = Some("ns".into());
        cfg.self_heal_timeout_ms = 200;
        let layout = Layout::new(state.path().join("gitops"));
        let g = Git {
            program: super::super::git::find_program().expect("git on PATH"),
            repo: cfg.repo.clone(),
        };
        state::prepare(&cfg, &g, &layout).unwrap();
        let applied = state.path().join("applied");
        std::fs::create_dir_all(&applied).unwrap();
        let events = state.path().join("events.jsonl");
        let mut l = Loop::new(
            Controller {
                layout: layout.clone(),
                git: g.program.clone(),
                applied: applied.clone(),
                registry: state.path().join("status.json"),
                events: Arc::new(EventLog::new(events.clone())),
            },
            cfg,
        );
        l.step();
        let s = layout.read_status().unwrap();
        assert_eq!(s.sync, SYNCED, "{s:?}");
        let vs_status = s
            .resources
            .iter()
            .find(|r| r.kind == "VirtualService")
            .unwrap();
        assert_eq!(vs_status.namespace, "ns", "the destination namespace");
        assert_eq!(vs_status.git.as_deref(), Some("vs.yaml:1"));

        // Drift, then self-heal after the timeout.
        let live = applied.join("virtualservice.ns.r.yaml");
        std::fs::write(&live, vs(50).replace("name: r", "name: r\n  namespace: ns")).unwrap();
        l.step();
        let s = layout.read_status().unwrap();
        assert_eq!(s.sync, OUT_OF_SYNC);
        assert!(s.drifted().all(|r| r.self_heal_at.is_some()), "{s:?}");
        assert!(live.exists(), "not before the timeout");
        std::thread::sleep(Duration::from_millis(250));
        l.step();
        assert!(!live.exists(), "reverted");
        let log = crate::events::read(&events);
        assert!(
            log.iter().any(|e| e.reason == "SelfHeal"
                && e.message
                    .contains("VirtualService ns/r to git (vs.yaml:1 at commit")),
            "{log:?}"
        );

        // A commit without the Service, prune off: it stays, marked.
        git(repo.path(), &["rm", "-q", "svc.yaml"]);
        git(repo.path(), &["commit", "-qm", "no service"]);
        l.step();
        let s = layout.read_status().unwrap();
        assert_eq!(s.revision.as_ref().unwrap().subject, "no service");
        let svc = s.resources.iter().find(|r| r.kind == "Service").unwrap();
        assert!(svc.requires_pruning && svc.status == OUT_OF_SYNC, "{s:?}");
        let (m, _) = skein_api::load_path_partial(&layout.current());
        assert_eq!(m.services().count(), 1, "kept in force until pruned");

        // A commit that does not validate: refused, the last one stays.
        std::fs::write(
            repo.path().join("vs.yaml"),
            vs(100).replace("hosts", "hostz"),
        )
        .unwrap();
        git(repo.path(), &["commit", "-qam", "broken"]);
        l.step();
        let s = layout.read_status().unwrap();
        assert_eq!(s.revision.as_ref().unwrap().subject, "no service");
        assert!(
            s.conditions
                .iter()
                .any(|c| c.kind == "SyncError" && c.message.contains("hostz")),
            "{s:?}"
        );
    }
}
