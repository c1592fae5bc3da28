//! Kubernetes-style names for pods: `<workload>-<template-hash>-<suffix>`, derived
//! deterministically so a pod keeps its name (and so its address and logs) across runs.

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
    let hash = encode(fnv1a(template), 9);
    let suffix = encode(fnv1a(format!("{workload}/{hash}/{ordinal}").as_bytes()), 5);
    format!("{workload}-{hash}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

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
