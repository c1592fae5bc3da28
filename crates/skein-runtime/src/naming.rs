//! Kubernetes-style names for pods: `<workload>-<template-hash>-<suffix>`, derived
//! deterministically so a pod keeps its name (and so its address and logs) across runs; and
//! the check every name passes before the runtime builds a path from it.

/// FNV-1a: tiny, stable across Rust versions (unlike `DefaultHasher`), good enough for names.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The alphabet Kubernetes uses for generated names: no vowels, no look-alikes.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn encode(mut h: u64, len: usize) -> String {
    let mut out = String::with_capacity(len);
    for _ in 0..len {
        out.push(ALPHABET[(h % ALPHABET.len() as u64) as usize] as char);
        h /= ALPHABET.len() as u64;
    }
    out
}

/// `template` is a canonical serialisation of the pod template: when it changes, the pods get
/// new names, as a Deployment rollout would give them.
pub fn pod_name(workload: &str, template: &[u8], ordinal: usize) -> String {
    pod_name_with_hash(workload, &template_hash(template), ordinal)
}

/// The hash of a pod template (canonical JSON), as pod names and Argo's
/// `rollouts-pod-template-hash` label carry it.
pub fn template_hash(template: &[u8]) -> String {
    encode(fnv1a(template), 9)
}

/// A Rollout's template hash: of its `spec.template` as JSON.
pub fn rollout_template_hash(template: &skein_api::k8s::PodTemplateSpec) -> String {
    template_hash(&serde_json::to_vec(template).unwrap_or_default())
}

/// `<workload>-<hash>-<suffix>`, the suffix 5 characters of the ordinal's hash.
pub fn pod_name_with_hash(workload: &str, hash: &str, ordinal: usize) -> String {
    let suffix = encode(fnv1a(format!("{workload}/{hash}/{ordinal}").as_bytes()), 5);
    format!("{workload}-{hash}-{suffix}")
}

/// Refuses a name the runtime would put into a path (a pod's log directory, a database file)
/// unless it is one plain path component: not empty, not `.`, no `/`, no `..`, no NUL.
/// The API validates names too; this check keeps the state directory safe without it.
pub fn path_component<'a>(what: &str, name: &'a str) -> Result<&'a str, String> {
    if name.is_empty()
        || name == "."
        || name.contains('/')
        || name.contains("..")
        || name.contains('\0')
    {
        return Err(format!(
            "{what} `{}` cannot name a file: it must not be empty or `.`, or contain `/`, `..` or NUL",
            name.escape_debug()
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_components_name_files() {
        assert_eq!(path_component("workload", "blog-was"), Ok("blog-was"));
        assert_eq!(path_component("service", "db.v1"), Ok("db.v1"));
        for bad in ["", ".", "..", "../etc", "a/b", "/abs", "x..y", "nul\0"] {
            let e = path_component("workload", bad).unwrap_err();
            assert!(e.starts_with("workload `"), "{e}");
        }
    }

    #[test]
    fn names_are_stable_and_distinct() {
        let a = pod_name("was", b"{}", 0);
        assert_eq!(a, pod_name("was", b"{}", 0));
        assert_ne!(a, pod_name("was", b"{}", 1));
        assert_ne!(a, pod_name("was", b"{\"x\":1}", 0));
        assert!(a.starts_with("was-"));
        assert_eq!(a.len(), "was-".len() + 9 + 1 + 5);
    }
}
