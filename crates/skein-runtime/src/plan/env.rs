//! Container environment as the kubelet builds it: literal values with `$(VAR)` expansion and
//! the downward API (`valueFrom.fieldRef`).

use std::collections::BTreeMap;

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
