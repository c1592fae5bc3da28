//! Container environment as the kubelet builds it: literal values with `$(VAR)` expansion,
//! `envFrom` and `valueFrom` (ConfigMaps, Secrets and the downward API's `fieldRef`).

use std::collections::BTreeMap;

use super::database::sqlite_stand_in;
use super::manifests::ConfigData;
use super::{DatabaseMode, Inputs};

/// What the downward API can tell a container about its pod.
#[derive(Debug, Clone, Default)]
pub struct PodFacts {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub service_account: String,
    pub node_name: String,
    pub pod_ip: String,
    pub host_ip: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FieldRefError {
    #[error(
        "fieldRef `{0}` is not supported; use metadata.name, metadata.namespace, metadata.uid, metadata.labels['KEY'], metadata.annotations['KEY'], spec.serviceAccountName, spec.nodeName, status.podIP or status.hostIP"
    )]
    Unsupported(String),
}

impl PodFacts {
    /// The value of a `fieldRef.fieldPath`. A missing label or annotation is the empty string,
    /// as on Kubernetes.
    pub fn field(&self, path: &str) -> Result<String, FieldRefError> {
        let keyed = |prefix: &str| -> Option<String> {
            let rest = path.strip_prefix(prefix)?.strip_suffix("']")?;
            Some(rest.to_string())
        };
        Ok(match path {
            "metadata.name" => self.name.clone(),
            "metadata.namespace" => self.namespace.clone(),
            "metadata.uid" => self.uid.clone(),
            "spec.serviceAccountName" => self.service_account.clone(),
            "spec.nodeName" => self.node_name.clone(),
            "status.podIP" | "status.podIPs" => self.pod_ip.clone(),
            "status.hostIP" | "status.hostIPs" => self.host_ip.clone(),
            _ => {
                if let Some(k) = keyed("metadata.labels['") {
                    self.labels.get(&k).cloned().unwrap_or_default()
                } else if let Some(k) = keyed("metadata.annotations['") {
                    self.annotations.get(&k).cloned().unwrap_or_default()
                } else {
                    return Err(FieldRefError::Unsupported(path.to_string()));
                }
            }
        })
    }
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, `$$` is a literal `$`, and
/// a reference to an undefined variable is left as it is.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(end) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + end];
                        match lookup(name) {
                            Some(v) => out.push_str(&v),
                            None => out.push_str(&input[i..i + 3 + end]),
                        }
                        i += 3 + end;
                        continue;
                    }
                }
                _ => {}
            }
        }
        // Copy one UTF-8 character.
        let ch_len = input[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&input[i..i + ch_len]);
        i += ch_len;
    }
    out
}

/// Variables every local container gets before its own: enough of the host's environment to
/// run, and nothing that would change how it behaves (no proxies from the user's shell).
const INHERITED: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "RUST_LOG",
    "RUST_BACKTRACE",
];

type Env = Vec<(String, String)>;

/// A container's environment: the inherited variables, `HOSTNAME` and `SKEIN_HOSTS`, then
/// `envFrom`, then `env` in order (a later variable replaces an earlier one).
pub(super) fn container_env(
    c: &skein_api::k8s::Container,
    facts: &PodFacts,
    cx: &Inputs<'_>,
) -> Result<Env, String> {
    let mut env: Env = INHERITED
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    env.push(("HOSTNAME".into(), facts.name.clone()));
    env.push((
        "SKEIN_HOSTS".into(),
        cx.state.hosts_file().display().to_string(),
    ));
    let ns = &facts.namespace;
    for from in &c.env_from {
        env_from(from, ns, cx.configs, &mut env)?;
    }
    for var in &c.env {
        let value = var_value(var, &env, facts, cx.configs)?;
        let value = if cx.mode == DatabaseMode::Sqlite {
            sqlite_stand_in(&value, ns, cx.state, cx.db_services).unwrap_or(value)
        } else {
            value
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

/// Sets `k`, replacing an earlier value.
pub(super) fn set(env: &mut Env, k: String, v: String) {
    env.retain(|(n, _)| *n != k);
    env.push((k, v));
}

/// The value of `k` in `env` (the last one set).
pub(super) fn lookup(env: &[(String, String)], k: &str) -> Option<String> {
    env.iter()
        .rev()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.clone())
}

/// One `envFrom` entry: every key of a ConfigMap or Secret, with the entry's prefix.
fn env_from(
    from: &skein_api::k8s::EnvFromSource,
    ns: &str,
    configs: &ConfigData,
    env: &mut Env,
) -> Result<(), String> {
    let (table, name, kind) = if let Some(r) = &from.config_map_ref {
        (&configs.config_maps, &r.name, "ConfigMap")
    } else if let Some(r) = &from.secret_ref {
        (&configs.secrets, &r.name, "Secret")
    } else {
        return Ok(());
    };
    let optional = from
        .config_map_ref
        .as_ref()
        .and_then(|r| r.optional)
        .or(from.secret_ref.as_ref().and_then(|r| r.optional))
        .unwrap_or(false);
    match table.get(&(ns.to_string(), name.clone())) {
        Some(data) => {
            let prefix = from.prefix.clone().unwrap_or_default();
            for (k, v) in data {
                set(env, format!("{prefix}{k}"), v.clone());
            }
            Ok(())
        }
        None if optional => Ok(()),
        None => Err(format!(
            "envFrom: {kind} {ns}/{name} is not in the manifests"
        )),
    }
}

/// One `env` entry's value: a literal (with `$(VAR)` expanded against `env` so far), or
/// `valueFrom` a field, a ConfigMap key or a Secret key.
fn var_value(
    var: &skein_api::k8s::EnvVar,
    env: &[(String, String)],
    facts: &PodFacts,
    configs: &ConfigData,
) -> Result<String, String> {
    let ns = &facts.namespace;
    if let Some(v) = &var.value {
        return Ok(expand(v, |k| lookup(env, k)));
    }
    let Some(from) = &var.value_from else {
        return Ok(String::new());
    };
    if let Some(f) = &from.field_ref {
        facts
            .field(&f.field_path)
            .map_err(|e| format!("env {}: {e}", var.name))
    } else if let Some(r) = &from.config_map_key_ref {
        lookup_key(
            &configs.config_maps,
            "ConfigMap",
            ns,
            &r.name,
            &r.key,
            r.optional,
        )
        .map_err(|e| format!("env {}: {e}", var.name))
    } else if let Some(r) = &from.secret_key_ref {
        lookup_key(&configs.secrets, "Secret", ns, &r.name, &r.key, r.optional)
            .map_err(|e| format!("env {}: {e}", var.name))
    } else {
        Err(format!(
            "env {}: only fieldRef, configMapKeyRef and secretKeyRef run locally",
            var.name
        ))
    }
}

fn lookup_key(
    table: &BTreeMap<(String, String), BTreeMap<String, String>>,
    kind: &str,
    ns: &str,
    name: &str,
    key: &str,
    optional: Option<bool>,
) -> Result<String, String> {
    match table
        .get(&(ns.to_string(), name.to_string()))
        .and_then(|d| d.get(key))
    {
        Some(v) => Ok(v.clone()),
        None if optional.unwrap_or(false) => Ok(String::new()),
        None => Err(format!(
            "{kind} {ns}/{name} has no key `{key}` in the manifests"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> PodFacts {
        PodFacts {
            name: "was-abc-xyz".into(),
            namespace: "blog-system".into(),
            labels: [("version".to_string(), "v1".to_string())].into(),
            pod_ip: "127.20.1.3".into(),
            ..PodFacts::default()
        }
    }

    #[test]
    fn downward_api() {
        let f = facts();
        assert_eq!(f.field("metadata.name").unwrap(), "was-abc-xyz");
        assert_eq!(f.field("metadata.labels['version']").unwrap(), "v1");
        assert_eq!(f.field("metadata.labels['missing']").unwrap(), "");
        assert_eq!(f.field("status.podIP").unwrap(), "127.20.1.3");
        assert!(matches!(
            f.field("spec.containers"),
            Err(FieldRefError::Unsupported(_))
        ));
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let lookup = |k: &str| (k == "POD_IP").then(|| "127.0.0.9".to_string());
        assert_eq!(expand("$(POD_IP):8080", lookup), "127.0.0.9:8080");
        assert_eq!(expand("$$(POD_IP)", lookup), "$(POD_IP)");
        assert_eq!(expand("$(NOPE)-x", lookup), "$(NOPE)-x");
        assert_eq!(expand("a $ b $(", lookup), "a $ b $(");
        assert_eq!(expand("héllo $(POD_IP)", lookup), "héllo 127.0.0.9");
    }
}
