//! The config store: the watched manifests directory plus what `skein apply` added.
//!
//! Every change is loaded and validated as a whole. A change with an error is refused with
//! each error's `file:line` and reason, and the last good config stays in force.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use skein_api::{Document, Manifests};

/// Where the config comes from.
#[derive(Debug, Clone)]
pub struct Store {
    /// The manifests directory (or file) `skein up` was started on.
    pub dir: PathBuf,
    /// Files added by `skein apply`; an object here replaces the same kind/namespace/name
    /// from `dir`.
    pub applied: Option<PathBuf>,
    /// The runtime's own objects (the addons' Services), read before `dir`: an object of
    /// the user's with the same kind/namespace/name replaces them.
    pub addons: Option<PathBuf>,
    /// Objects a controller of the runtime manages (the VirtualServices and
    /// DestinationRules an Argo Rollout moves), read last: an object here replaces the same
    /// kind/namespace/name from `dir` and `applied`. Never the user's files.
    pub managed: Option<PathBuf>,
}

/// A refused change: every error, one per line, each starting with `file:line`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", .errors.join("\n"))]
pub struct Rejection {
    /// The errors.
    pub errors: Vec<String>,
}

/// A cheap fingerprint of the files: changes when any file is added, removed or written.
pub type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

fn walk(path: &Path, out: &mut Fingerprint) {
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            walk(&p, out);
        }
    } else if path
        .extension()
        .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
    {
        out.push((path.to_path_buf(), meta.modified().ok(), meta.len()));
    }
}

impl Store {
    /// The current fingerprint of every file the store reads.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut out = Vec::new();
        if let Some(a) = &self.addons {
            walk(a, &mut out);
        }
        walk(&self.dir, &mut out);
        // A link switched to another directory (GitOps' commit in force) is a change even
        // when the files look alike.
        if let Ok(target) = std::fs::read_link(&self.dir) {
            out.push((target, None, 0));
        }
        if let Some(a) = &self.applied {
            walk(a, &mut out);
        }
        if let Some(m) = &self.managed {
            walk(m, &mut out);
        }
        out
    }

    /// Loads and validates everything. Objects from `applied` replace same-named ones.
    pub fn load(&self) -> Result<Manifests, Rejection> {
        let merged = dedupe(self.load_unvalidated()?);
        let errors: Vec<String> = skein_api::validate(&merged)
            .into_iter()
            .filter(|d| d.refuses())
            .map(|d| d.to_string())
            .collect();
        if errors.is_empty() {
            Ok(merged)
        } else {
            Err(Rejection { errors })
        }
    }

    /// The errors `change` would bring if `skein apply` added it to the current config (its
    /// objects replacing same-named ones), each with the change's own `file:line`. Errors the
    /// current config already has elsewhere are not the change's and are left out.
    pub fn check_apply(&self, change: &Manifests) -> Vec<String> {
        let mut merged = self.load_unvalidated().unwrap_or_default();
        merged.extend(change.clone());
        let files: HashSet<&Path> = change.iter().map(|d| d.source.file.as_path()).collect();
        skein_api::validate(&dedupe(merged))
            .into_iter()
            .filter(|d| d.refuses() && files.contains(d.source.file.as_path()))
            .map(|d| d.to_string())
            .collect()
    }

    /// Every object that loads, merged as [`Store::load`] merges them (applied objects replace
    /// same-named ones), without validating, and the load errors of what did not (each with
    /// `file:line`): what a viewer of the config shows, including a change that is refused.
    pub fn load_all(&self) -> (Manifests, Vec<String>) {
        let mut errors = Vec::new();
        let mut merged = Manifests::default();
        let mut dirs: Vec<&PathBuf> = self
            .addons
            .iter()
            .chain(std::iter::once(&self.dir))
            .collect();
        let mut applied_files = Vec::new();
        if let Some(a) = &self.applied {
            walk(a, &mut applied_files);
            if !applied_files.is_empty() {
                dirs.push(a);
            }
        }
        let mut managed_files = Vec::new();
        if let Some(m) = &self.managed {
            walk(m, &mut managed_files);
            if !managed_files.is_empty() {
                dirs.push(m);
            }
        }
        for dir in dirs {
            let (m, e) = skein_api::load_path_partial(dir);
            merged.extend(m);
            errors.extend(e.iter().map(|e| e.to_string()));
        }
        (dedupe(merged), errors)
    }

    /// The directory's objects followed by the applied ones, as loaded (not yet validated).
    fn load_unvalidated(&self) -> Result<Manifests, Rejection> {
        let mut errors = Vec::new();
        let mut merged = Manifests::default();
        for dir in self.addons.iter().chain(std::iter::once(&self.dir)) {
            match skein_api::load_path(dir) {
                Ok(m) => merged.extend(m),
                Err(e) => errors.extend(e.0.iter().map(|e| e.to_string())),
            }
        }
        let mut applied_files = Vec::new();
        if let Some(a) = &self.applied {
            walk(a, &mut applied_files);
        }
        if let Some(a) = self.applied.as_ref().filter(|_| !applied_files.is_empty()) {
            match skein_api::load_path(a) {
                Ok(m) => merged.extend(m),
                Err(e) => errors.extend(e.0.iter().map(|e| e.to_string())),
            }
        }
        let mut managed_files = Vec::new();
        if let Some(m) = &self.managed {
            walk(m, &mut managed_files);
        }
        if let Some(m) = self.managed.as_ref().filter(|_| !managed_files.is_empty()) {
            match skein_api::load_path(m) {
                Ok(m) => merged.extend(m),
                Err(e) => errors.extend(e.0.iter().map(|e| e.to_string())),
            }
        }
        if errors.is_empty() {
            Ok(merged)
        } else {
            Err(Rejection { errors })
        }
    }
}

/// Keeps the last document of each kind/group/namespace/name, in the position of the first.
fn dedupe(m: Manifests) -> Manifests {
    let key = |d: &Document| {
        let meta = d.resource.metadata();
        (
            d.resource.kind(),
            d.resource.group().to_string(),
            meta.namespace_or_default().to_string(),
            meta.name.clone(),
        )
    };
    let mut last: HashMap<(&'static str, String, String, String), usize> = HashMap::new();
    for (i, d) in m.documents.iter().enumerate() {
        if !d.resource.metadata().name.is_empty() {
            last.insert(key(d), i);
        }
    }
    let mut slots: Vec<Option<Document>> = m.documents.into_iter().map(Some).collect();
    let mut out = Manifests::default();
    for i in 0..slots.len() {
        let Some(d) = slots[i].take() else { continue };
        if d.resource.metadata().name.is_empty() {
            out.documents.push(d);
            continue;
        }
        let k = key(&d);
        let winner = last.get(&k).copied().unwrap_or(i);
        if winner == i {
            out.documents.push(d);
        } else if let Some(w) = slots.get_mut(winner).and_then(Option::take) {
            // The replacement takes the original's place; load order matters for routes.
            // Copies in between (a third file with the same object) are dropped.
            last.insert(k, usize::MAX);
            out.documents.push(w);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  namespace: ns\nspec:\n  ports: [{port: 80}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\n  namespace: ns\nspec:\n  hosts: [a]\n  http:\n  - name: WHICH\n    route:\n    - destination:\n        host: a\n";

    #[test]
    fn istios_gateway_and_the_gateway_apis_of_one_name_are_both_kept() {
        let m = skein_api::load_str(
            "g.yaml",
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: ns}\nspec: {selector: {istio: ingressgateway}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: ns}\nspec: {gatewayClassName: istio, listeners: [{name: http, port: 80, protocol: HTTP}]}\n",
        )
        .unwrap();
        let m = dedupe(m);
        assert_eq!((m.gateways().count(), m.kube_gateways().count()), (1, 1));
    }

    #[test]
    fn load_all_keeps_what_loads_and_names_what_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let applied = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vs.yaml"), VS.replace("WHICH", "original")).unwrap();
        std::fs::write(dir.path().join("bad.yaml"), "kind: [\n").unwrap();
        std::fs::write(
            applied.path().join("x.yaml"),
            VS.replace("WHICH", "applied"),
        )
        .unwrap();
        let store = Store {
            managed: None,
            addons: None,
            dir: dir.path().to_path_buf(),
            applied: Some(applied.path().to_path_buf()),
        };
        assert!(store.load().is_err());
        let (m, errors) = store.load_all();
        assert_eq!(
            m.virtual_services().count(),
            1,
            "applied replaces the original"
        );
        assert_eq!(
            m.virtual_services().next().unwrap().spec.http[0]
                .name
                .as_deref(),
            Some("applied")
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("bad.yaml:"), "{errors:?}");
    }

    #[test]
    fn applied_objects_replace_and_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let applied = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vs.yaml"), VS.replace("WHICH", "original")).unwrap();
        let store = Store {
            managed: None,
            addons: None,
            dir: dir.path().to_path_buf(),
            applied: Some(applied.path().to_path_buf()),
        };
        let m = store.load().unwrap();
        let name = |m: &Manifests| {
            m.virtual_services().next().unwrap().spec.http[0]
                .name
                .clone()
                .unwrap()
        };
        assert_eq!(name(&m), "original");

        let before = store.fingerprint();
        std::fs::write(
            applied.path().join("x.yaml"),
            VS.replace("WHICH", "applied"),
        )
        .unwrap();
        assert_ne!(store.fingerprint(), before);
        let m = store.load().unwrap();
        assert_eq!(m.virtual_services().count(), 1);
        assert_eq!(name(&m), "applied");

        std::fs::write(
            dir.path().join("bad.yaml"),
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: b\nspec:\n  hosts: [a]\n  htp: []\n",
        )
        .unwrap();
        let err = store.load().unwrap_err();
        assert!(err.to_string().contains("bad.yaml:7"), "{err}");
        assert_eq!(err.errors.len(), 1, "{err}");
        assert!(err.to_string().contains("htp"), "{err}");
    }

    /// The same object in the manifests and in two applied files: the last file's copy wins,
    /// in the original's place, and the one in between is dropped (it used to panic).
    #[test]
    fn an_object_applied_twice_after_the_manifests_keeps_the_last_copy() {
        let dir = tempfile::tempdir().unwrap();
        let applied = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vs.yaml"), VS.replace("WHICH", "original")).unwrap();
        let vs_only = |which: &str| {
            let vs = VS.replace("WHICH", which);
            vs.split("---\n").nth(1).unwrap().to_string()
        };
        std::fs::write(applied.path().join("a.yaml"), vs_only("first")).unwrap();
        std::fs::write(applied.path().join("b.yaml"), vs_only("second")).unwrap();
        let store = Store {
            managed: None,
            addons: None,
            dir: dir.path().to_path_buf(),
            applied: Some(applied.path().to_path_buf()),
        };
        let m = store.load().unwrap();
        let names: Vec<_> = m
            .virtual_services()
            .map(|v| v.spec.http[0].name.clone().unwrap())
            .collect();
        assert_eq!(names, ["second"]);
        assert_eq!(m.services().count(), 1);
    }

    #[test]
    fn the_runtimes_addons_load_first_and_the_manifests_replace_them() {
        let dir = tempfile::tempdir().unwrap();
        let addons = tempfile::tempdir().unwrap();
        let svc = |name: &str, port: u16| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: istio-system\nspec:\n  ports: [{{port: {port}}}]\n"
            )
        };
        std::fs::write(
            addons.path().join("tracing.yaml"),
            svc("jaeger-collector", 9411) + "---\n" + &svc("tracing", 80),
        )
        .unwrap();
        std::fs::write(dir.path().join("own.yaml"), svc("tracing", 8080)).unwrap();
        let store = Store {
            managed: None,
            dir: dir.path().to_path_buf(),
            applied: None,
            addons: Some(addons.path().to_path_buf()),
        };
        let m = store.load().unwrap();
        let ports: Vec<(String, i32)> = m
            .services()
            .map(|s| (s.metadata.name.clone(), s.spec.ports[0].port))
            .collect();
        assert_eq!(
            ports,
            [
                ("jaeger-collector".to_string(), 9411),
                ("tracing".into(), 8080)
            ]
        );
        assert_eq!(store.fingerprint().len(), 2, "both directories are watched");
    }

    /// The managed overlay (a Rollout's copies) replaces the manifests' and the applied
    /// objects, and is watched.
    #[test]
    fn the_managed_overlay_is_read_last() {
        let dir = tempfile::tempdir().unwrap();
        let applied = tempfile::tempdir().unwrap();
        let managed = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vs.yaml"), VS.replace("WHICH", "original")).unwrap();
        let store = Store {
            addons: None,
            dir: dir.path().to_path_buf(),
            applied: Some(applied.path().to_path_buf()),
            managed: Some(managed.path().to_path_buf()),
        };
        let name = |m: &Manifests| {
            m.virtual_services().next().unwrap().spec.http[0]
                .name
                .clone()
        };
        assert_eq!(name(&store.load().unwrap()).as_deref(), Some("original"));
        let vs_only = |which: &str| {
            VS.replace("WHICH", which)
                .split("---\n")
                .nth(1)
                .unwrap()
                .to_string()
        };
        std::fs::write(applied.path().join("a.yaml"), vs_only("applied")).unwrap();
        let before = store.fingerprint();
        std::fs::write(managed.path().join("m.yaml"), vs_only("managed")).unwrap();
        assert_ne!(store.fingerprint(), before);
        let m = store.load().unwrap();
        assert_eq!(m.virtual_services().count(), 1);
        assert_eq!(name(&m).as_deref(), Some("managed"));
        assert_eq!(name(&store.load_all().0).as_deref(), Some("managed"));
    }
}
