//! A change `skein apply` refused: it never reaches the control plane (the CLI checks it
//! first), so the CLI records it here for the dashboard, and removes the record at the next
//! change it hands over. The documents are kept as written, with their own `file:line`.

use std::path::{Path, PathBuf};

use skein_api::Manifests;
use skein_runtime::StateDir;

/// A refused change.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Refused {
    /// RFC 3339.
    pub at: String,
    /// Every error, each starting with `file:line`.
    pub errors: Vec<String>,
    pub objects: Vec<RefusedObject>,
}

/// One document of a refused change.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RefusedObject {
    pub kind: String,
    pub api_version: String,
    pub name: String,
    pub namespace: String,
    pub file: String,
    pub line: usize,
    pub yaml: String,
}

/// The record's file in the state directory.
pub fn file(state: &StateDir) -> PathBuf {
    state.root().join("apply-refused.json")
}

/// Records a refused change (`at` RFC 3339).
pub fn record(
    state: &StateDir,
    change: &Manifests,
    errors: &[String],
    at: String,
) -> std::io::Result<()> {
    let objects = change
        .iter()
        .map(|d| {
            let meta = d.resource.metadata();
            RefusedObject {
                kind: d.resource.kind().to_string(),
                api_version: d.resource.api_version().to_string(),
                name: meta.name.clone(),
                namespace: meta.namespace_or_default().to_string(),
                file: d.source.file.display().to_string(),
                line: d.source.line,
                yaml: document_text(&d.source.file, d.source.line).unwrap_or_default(),
            }
        })
        .collect();
    let r = Refused {
        at,
        errors: errors.to_vec(),
        objects,
    };
    let path = file(state);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(&r).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)
}

/// Forgets a refused change (a later change was handed over).
pub fn clear(state: &StateDir) {
    let _ = std::fs::remove_file(file(state));
}

pub fn read(state: &StateDir) -> Option<Refused> {
    serde_json::from_slice(&std::fs::read(file(state)).ok()?).ok()
}

/// The largest manifest file read to show a document's text.
const MAX_FILE: u64 = 4 * 1024 * 1024;

/// The text of the YAML document starting at `line` (1-based: its `---` or first line) of
/// `file`, up to the next `---`.
pub fn document_text(file: &Path, line: usize) -> Option<String> {
    if std::fs::metadata(file).ok()?.len() > MAX_FILE {
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    Some(document_at(&text, line))
}

pub fn document_at(text: &str, line: usize) -> String {
    let mut out = String::new();
    for (i, l) in text.lines().enumerate().skip(line.saturating_sub(1)) {
        let sep = l.trim_end() == "---" || l.starts_with("--- ");
        if sep && i + 1 == line {
            continue;
        }
        if sep {
            break;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_cut_at_its_separators() {
        let text = "a: 1\n---\nkind: X\nb: 2\n---\nc: 3\n";
        assert_eq!(document_at(text, 1), "a: 1\n");
        assert_eq!(document_at(text, 2), "kind: X\nb: 2\n");
        assert_eq!(document_at(text, 3), "kind: X\nb: 2\n");
        assert_eq!(document_at(text, 6), "c: 3\n");
    }
}
