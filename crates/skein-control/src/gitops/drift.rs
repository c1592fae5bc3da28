//! Comparing a live object with git's: both normalised (namespace filled in, server-set
//! metadata and `status` dropped), then the fields `ignoreDifferences` names removed from both.
//!
//! By default the weights of the VirtualService routes a Rollout manages
//! (`strategy.canary.trafficRouting.istio.virtualService(s)`) are left out too: the Rollout
//! controller moves them during a canary, and Argo CD users otherwise add
//! `ignoreDifferences: [{kind: VirtualService, jsonPointers: [/spec/http/0]}]` to stop the fight.

use std::collections::BTreeSet;

use serde_json::Value;
use skein_api::Resource;
use skein_api::gitops::ResourceIgnoreDifferences;

/// What a comparison leaves out.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    rules: Vec<ResourceIgnoreDifferences>,
    /// VirtualServices (namespace, name) whose route weights a Rollout manages.
    managed_weights: BTreeSet<(String, String)>,
}

/// The API group of a kind skein reads.
pub fn group_of(kind: &str) -> &'static str {
    match kind {
        "Deployment" => "apps",
        "Rollout" | "Application" | "AppProject" => "argoproj.io",
        "Ingress" => "networking.k8s.io",
        "VirtualService" | "DestinationRule" | "Gateway" | "ServiceEntry" | "Sidecar"
        | "WorkloadEntry" => "networking.istio.io",
        "AuthorizationPolicy" | "PeerAuthentication" | "RequestAuthentication" => {
            "security.istio.io"
        }
        "Telemetry" => "telemetry.istio.io",
        _ => "",
    }
}

impl Ignore {
    /// The Application's rules, and the Rollouts' VirtualServices of `git`.
    pub fn new(rules: &[ResourceIgnoreDifferences], git: &skein_api::Manifests) -> Ignore {
        let mut managed_weights = BTreeSet::new();
        for r in git.rollouts() {
            let ns = r.metadata.namespace_or_default().to_string();
            let istio = r
                .spec
                .strategy
                .as_ref()
                .and_then(|s| s.pointer("/canary/trafficRouting/istio"));
            let Some(istio) = istio else { continue };
            let mut names = Vec::new();
            if let Some(n) = istio
                .pointer("/virtualService/name")
                .and_then(Value::as_str)
            {
                names.push(n.to_string());
            }
            for vs in istio
                .get("virtualServices")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(n) = vs.get("name").and_then(Value::as_str) {
                    names.push(n.to_string());
                }
            }
            for n in names {
                // `name.namespace` names another namespace, as Argo Rollouts reads it.
                let (name, vns) = match n.split_once('.') {
                    Some((a, b)) => (a.to_string(), b.to_string()),
                    None => (n, ns.clone()),
                };
                managed_weights.insert((vns, name));
            }
        }
        Ignore {
            rules: rules.to_vec(),
            managed_weights,
        }
    }

    /// Whether a Rollout manages the weights of this VirtualService.
    pub fn manages_weights(&self, namespace: &str, name: &str) -> bool {
        self.managed_weights
            .contains(&(namespace.to_string(), name.to_string()))
    }

    /// `r` as compared: normalised, ignored fields removed.
    pub fn comparable(&self, r: &Resource) -> Value {
        let (kind, ns, name) = (r.kind(), r.namespace().to_string(), r.name().to_string());
        let mut v = normalized(r);
        for rule in &self.rules {
            let group = rule.group.as_deref().unwrap_or("");
            if rule.kind != kind
                || group != group_of(kind)
                || rule.name.as_deref().is_some_and(|n| n != name)
                || rule.namespace.as_deref().is_some_and(|n| n != ns)
            {
                continue;
            }
            for p in &rule.json_pointers {
                remove(&mut v, &pointer_segments(p), false);
            }
            for jq in &rule.jq_path_expressions {
                if let Some(segs) = jq_segments(jq) {
                    remove(&mut v, &segs, true);
                }
            }
        }
        if kind == "VirtualService" && self.manages_weights(&ns, &name) {
            let segs: Vec<String> = ["spec", "http", "*", "route", "*", "weight"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            remove(&mut v, &segs, true);
        }
        v
    }

    /// Whether `live` differs from `git` once the ignored fields are left out.
    pub fn differs(&self, git: &Resource, live: &Resource) -> bool {
        self.comparable(git) != self.comparable(live)
    }
}

/// An object as JSON with its namespace written out, without `status` and without what an
/// API server or `kubectl apply` add to metadata.
pub fn normalized(r: &Resource) -> Value {
    let mut v = r.to_json();
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        if r.is_namespaced() {
            m.insert("namespace".into(), r.namespace().into());
        } else {
            m.remove("namespace");
        }
        for k in [
            "resourceVersion",
            "uid",
            "generation",
            "creationTimestamp",
            "managedFields",
            "selfLink",
        ] {
            m.remove(k);
        }
        if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
            if a.is_empty() {
                m.remove("annotations");
            }
        }
    }
    v
}

/// RFC 6901: `/a/b~1c` -> [a, b/c].
fn pointer_segments(p: &str) -> Vec<String> {
    p.split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// The simple jq paths (`.spec.http[0].route[].weight`, `.metadata.labels["a/b"]`) as
/// segments, `[]` as `*`; None for anything else (pipes, selects), which is then not applied.
fn jq_segments(jq: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = jq.trim();
    if !rest.starts_with('.') {
        return None;
    }
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("[]") {
            out.push("*".into());
            rest = r;
        } else if let Some(r) = rest.strip_prefix("[\"") {
            let end = r.find("\"]")?;
            out.push(r[..end].to_string());
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let idx = &r[..end];
            idx.parse::<usize>().ok()?;
            out.push(idx.to_string());
            rest = &r[end + 1..];
        } else if let Some(r) = rest.strip_prefix('.') {
            if r.is_empty() {
                break;
            }
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            {
                return None;
            }
            out.push(key.to_string());
            rest = &r[end..];
        } else {
            return None;
        }
    }
    Some(out)
}

/// Removes what `segs` names from `v`; `*` is every element or key when `wildcards`.
fn remove(v: &mut Value, segs: &[String], wildcards: bool) {
    let Some((first, rest)) = segs.split_first() else {
        return;
    };
    let all = wildcards && first == "*";
    if rest.is_empty() {
        match v {
            Value::Object(m) if all => m.clear(),
            Value::Object(m) => {
                m.remove(first);
            }
            Value::Array(a) if all => a.clear(),
            Value::Array(a) => {
                if let Ok(i) = first.parse::<usize>()
                    && i < a.len()
                {
                    // Argo CD blanks the element rather than shifting the rest.
                    a[i] = Value::Null;
                }
            }
            _ => {}
        }
        return;
    }
    match v {
        Value::Object(m) if all => m.values_mut().for_each(|c| remove(c, rest, wildcards)),
        Value::Object(m) => {
            if let Some(c) = m.get_mut(first) {
                remove(c, rest, wildcards);
            }
        }
        Value::Array(a) if all => a.iter_mut().for_each(|c| remove(c, rest, wildcards)),
        Value::Array(a) => {
            if let Some(c) = first.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                remove(c, rest, wildcards);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs(weights: (u32, u32), timeout: &str) -> skein_api::Manifests {
        skein_api::load_str(
            "vs.yaml",
            &format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: blog}}\nspec:\n  hosts: [web]\n  http:\n  - name: primary\n    timeout: {timeout}\n    route:\n    - destination: {{host: web, subset: stable}}\n      weight: {}\n    - destination: {{host: web, subset: canary}}\n      weight: {}\n",
                weights.0, weights.1
            ),
        )
        .unwrap()
    }

    fn first(m: &skein_api::Manifests) -> &Resource {
        &m.documents[0].resource
    }

    #[test]
    fn a_weight_change_is_drift_unless_ignored() {
        let git = vs((90, 10), "5s");
        let live = vs((50, 50), "5s");
        let none = Ignore::new(&[], &git);
        assert!(none.differs(first(&git), first(&live)));
        assert!(!none.differs(first(&git), first(&vs((90, 10), "5s"))));

        let rule = |p: &str, jq: &str| ResourceIgnoreDifferences {
            group: Some("networking.istio.io".into()),
            kind: "VirtualService".into(),
            json_pointers: if p.is_empty() { vec![] } else { vec![p.into()] },
            jq_path_expressions: if jq.is_empty() {
                vec![]
            } else {
                vec![jq.into()]
            },
            ..Default::default()
        };
        let whole_route = Ignore::new(&[rule("/spec/http/0", "")], &git);
        assert!(!whole_route.differs(first(&git), first(&live)));
        let jq = Ignore::new(&[rule("", ".spec.http[].route[].weight")], &git);
        assert!(!jq.differs(first(&git), first(&live)));
        assert!(
            jq.differs(first(&git), first(&vs((50, 50), "9s"))),
            "other fields still count"
        );
        let other_group = Ignore::new(
            &[ResourceIgnoreDifferences {
                group: Some("apps".into()),
                ..rule("/spec/http/0", "")
            }],
            &git,
        );
        assert!(other_group.differs(first(&git), first(&live)));
    }

    #[test]
    fn weights_a_rollout_manages_are_ignored_by_default() {
        let mut git = vs((90, 10), "5s");
        git.extend(
            skein_api::load_str(
                "ro.yaml",
                "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: web, namespace: blog}\nspec:\n  strategy:\n    canary:\n      trafficRouting:\n        istio:\n          virtualService: {name: web, routes: [primary]}\n",
            )
            .unwrap(),
        );
        let ignore = Ignore::new(&[], &git);
        assert!(ignore.manages_weights("blog", "web"));
        assert!(!ignore.differs(first(&git), first(&vs((50, 50), "5s"))));
        assert!(ignore.differs(first(&git), first(&vs((50, 50), "7s"))));
    }

    #[test]
    fn jq_paths_parse_or_are_left_alone() {
        assert_eq!(
            jq_segments(".spec.http[0].route[].weight").unwrap(),
            ["spec", "http", "0", "route", "*", "weight"]
        );
        assert_eq!(
            jq_segments(".metadata.labels[\"a/b\"]").unwrap(),
            ["metadata", "labels", "a/b"]
        );
        assert!(jq_segments(".spec | select(.x)").is_none());
    }
}
