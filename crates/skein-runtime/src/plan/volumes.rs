//! ConfigMap and Secret volumes. Process mode cannot mount at `/etc/app`, so each such volume
//! is written as files under the pod's state directory (`pods/POD/volumes/VOLUME/KEY`,
//! owner-only), and the container's `command`, `args` and `env` values that name a path under
//! a `mountPath` are rewritten to the local path: `--config /etc/app/app.yaml` reads the
//! ConfigMap's `app.yaml`. `skein status -o json` lists each container's mounts.

use std::path::PathBuf;

use serde_json::Value;

use super::Inputs;
use super::manifests::Workload;

/// At most this many bytes of one volume are written (a ConfigMap holds 1 MiB on Kubernetes).
const MAX_VOLUME_BYTES: usize = 4 * 1024 * 1024;

/// Writes the ConfigMap and Secret volumes container `c` mounts; returns each mount's
/// `mountPath` and local path (longest `mountPath` first, so rewriting prefers it).
pub(super) fn materialise(
    w: &Workload<'_>,
    c: &skein_api::k8s::Container,
    pod: &str,
    cx: &Inputs<'_>,
) -> Result<Vec<(String, PathBuf)>, String> {
    let mut out = Vec::new();
    for m in &c.volume_mounts {
        let Some(v) = w.spec.volumes.iter().find(|v| v.name == m.name) else {
            continue;
        };
        let (source, data, what) = if let Some(cm) = &v.config_map {
            let name = str_field(cm, "name");
            (
                cm,
                cx.configs
                    .config_maps
                    .get(&(w.namespace.clone(), name.clone())),
                format!("configMap {name}"),
            )
        } else if let Some(s) = &v.secret {
            let name = str_field(s, "secretName");
            (
                s,
                cx.configs.secrets.get(&(w.namespace.clone(), name.clone())),
                format!("secret {name}"),
            )
        } else {
            continue;
        };
        crate::naming::path_component("volume", &v.name)?;
        let dir = cx.state.pod_dir(pod).join("volumes").join(&v.name);
        let optional = source.get("optional").and_then(Value::as_bool) == Some(true);
        let Some(data) = data else {
            if optional {
                continue;
            }
            return Err(format!(
                "volume {}: {what} is not in the manifests (mark it `optional: true` if the pod may start without it)",
                v.name
            ));
        };
        write_volume(&dir, source, data).map_err(|e| format!("volume {}: {e}", v.name))?;
        let local = match m.sub_path.as_deref().filter(|p| !p.is_empty()) {
            Some(sub) => {
                crate::naming::path_component("subPath", sub)?;
                dir.join(sub)
            }
            None => dir,
        };
        out.push((m.mount_path.trim_end_matches('/').to_string(), local));
    }
    out.sort_by_key(|m| std::cmp::Reverse(m.0.len()));
    Ok(out)
}

fn str_field(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The volume's files: every key, or only `items` (key -> path) when given.
fn write_volume(
    dir: &std::path::Path,
    source: &Value,
    data: &std::collections::BTreeMap<String, String>,
) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(dir);
    crate::fs::private_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let items: Vec<(String, String)> = match source.get("items").and_then(Value::as_array) {
        Some(items) => items
            .iter()
            .map(|i| (str_field(i, "key"), str_field(i, "path")))
            .collect(),
        None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
    };
    let mut total = 0usize;
    for (key, path) in items {
        let Some(value) = data.get(&key) else {
            return Err(format!("no key {key:?}"));
        };
        total += value.len();
        if total > MAX_VOLUME_BYTES {
            return Err(format!("more than {MAX_VOLUME_BYTES} bytes"));
        }
        // `items[].path` may have directories, never `..` or an absolute path.
        if path.is_empty()
            || path.starts_with('/')
            || path.split('/').any(|p| p == ".." || p.is_empty())
        {
            return Err(format!("item path {path:?} must be relative, without `..`"));
        }
        let file = dir.join(&path);
        if let Some(parent) = file.parent() {
            crate::fs::private_dir(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        crate::fs::write_private(&file, value.as_bytes())
            .map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(())
}

/// `text` with every path under a mount's `mountPath` pointed at its local copy. A mount path
/// matches as a whole path: `/etc/app` in `/etc/app/x` or `--config=/etc/app`, not in
/// `/etc/apple`.
pub(super) fn rewrite(text: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut out = text.to_string();
    for (mount, local) in mounts {
        if mount.is_empty() {
            continue;
        }
        let local = local.display().to_string();
        let mut result = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(i) = rest.find(mount.as_str()) {
            let before_ok = i == 0
                || matches!(
                    rest.as_bytes()[i - 1],
                    b'=' | b' ' | b':' | b',' | b'"' | b'\''
                );
            let after = rest.as_bytes().get(i + mount.len());
            let after_ok =
                after.is_none_or(|b| matches!(b, b'/' | b' ' | b',' | b':' | b'"' | b'\''));
            result.push_str(&rest[..i]);
            if before_ok && after_ok {
                result.push_str(&local);
            } else {
                result.push_str(mount);
            }
            rest = &rest[i + mount.len()..];
        }
        result.push_str(rest);
        out = result;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_a_mount_point_at_the_local_copy() {
        let mounts = vec![
            (
                "/etc/app/tls".to_string(),
                PathBuf::from("/s/pods/p/volumes/tls"),
            ),
            (
                "/etc/app".to_string(),
                PathBuf::from("/s/pods/p/volumes/config"),
            ),
        ];
        assert_eq!(
            rewrite("/etc/app/app.yaml", &mounts),
            "/s/pods/p/volumes/config/app.yaml"
        );
        assert_eq!(
            rewrite("--cert=/etc/app/tls/cert.pem", &mounts),
            "--cert=/s/pods/p/volumes/tls/cert.pem"
        );
        assert_eq!(rewrite("/etc/app", &mounts), "/s/pods/p/volumes/config");
        assert_eq!(rewrite("/etc/apple/x", &mounts), "/etc/apple/x");
        assert_eq!(rewrite("/opt/etc/app/x", &mounts), "/opt/etc/app/x");
        assert_eq!(rewrite("plain", &mounts), "plain");
    }
}
