//! The config in force as the runtime's controllers read it (the Rollout controller, the
//! AnalysisRuns): the manifests, then `skein apply`'s objects replacing same-named ones.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use skein_api::Manifests;

/// The config as the control plane reads it, without the managed overlay: the manifests,
/// then `skein apply`'s objects replacing same-named ones. None when it does not load (the
/// control plane keeps its last good config; so does the controller).
pub(crate) fn load(dir: &Path, applied: &Path) -> Option<Manifests> {
    let mut m = skein_api::load_path(dir).ok()?;
    let has_applied = std::fs::read_dir(applied)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if has_applied && let Ok(a) = skein_api::load_path(applied) {
        m.extend(a);
    }
    // The last of each kind/namespace/name wins, in the first's place.
    let key = |d: &skein_api::Document| {
        let meta = d.resource.metadata();
        (
            d.resource.kind(),
            meta.namespace_or_default().to_string(),
            meta.name.clone(),
        )
    };
    let mut last: HashMap<_, usize> = HashMap::new();
    for (i, d) in m.documents.iter().enumerate() {
        last.insert(key(d), i);
    }
    let mut slots: Vec<Option<skein_api::Document>> = m.documents.into_iter().map(Some).collect();
    let mut out = Manifests::default();
    let mut seen = HashSet::new();
    for i in 0..slots.len() {
        let Some(d) = slots[i].as_ref() else { continue };
        let k = key(d);
        if !seen.insert(k.clone()) {
            continue;
        }
        let w = last.get(&k).copied().unwrap_or(i);
        if let Some(d) = slots[w].take() {
            out.documents.push(d);
        }
    }
    Some(out)
}
