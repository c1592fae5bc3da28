//! Every field Istio's CRD schemas define loads.
//!
//! Walks every kind and served version of Istio's CustomResourceDefinitions (their
//! `openAPIV3Schema`, as the Kubernetes API server checks Istio objects with), builds from each
//! schema sample objects that set every property it defines (type-correct values; fields that
//! exclude each other through `oneOf` one at a time; every enum value over the samples), and
//! asserts that skein's loader takes each of them with no unknown-field or value error.
//!
//! The CRDs are the project's reference data (`reference/data/istio-crds.yaml` in the shared
//! folder beside the repository); `SKEIN_ISTIO_CRDS` names another copy. The test fails when
//! the file is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{Map, Value, json};

/// Kinds left out of the walk (none: every kind of Istio's CRDs is checked).
const SKIPPED_KINDS: &[&str] = &[];

/// Unknown fields removed and retried per sample before giving up on it.
const MAX_REMOVALS: usize = 500;

fn crds_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SKEIN_ISTIO_CRDS") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.join("../shared/reference/data/istio-crds.yaml")
}

fn load_crds() -> Vec<Value> {
    let path = crds_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: Istio's CRDs are needed for this test (set SKEIN_ISTIO_CRDS to a copy of \
             Istio's manifests/charts/base/files/crd-all.gen.yaml)",
            path.display()
        )
    });
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("CRD file is YAML");
        if v.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition") {
            out.push(v);
        }
    }
    out
}

/// The field sets of `schema` that exclude each other: each `oneOf` (also inside `allOf`)
/// whose branches are `required: [one field]`.
fn exclusive_groups(schema: &Value) -> Vec<Vec<String>> {
    let mut one_ofs: Vec<&Value> = schema.get("oneOf").into_iter().collect();
    for a in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        one_ofs.extend(a.get("oneOf"));
    }
    one_ofs
        .into_iter()
        .filter_map(Value::as_array)
        .map(|branches| {
            branches
                .iter()
                .filter_map(|b| b.get("required").and_then(Value::as_array))
                .flatten()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

fn rules(schema: &Value) -> Vec<&str> {
    schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("rule").and_then(Value::as_str))
        .collect()
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool) == Some(true)
}

/// How many samples it takes to use every branch and enum value at least once.
fn variants_needed(schema: &Value) -> usize {
    let mut n = 1;
    for g in exclusive_groups(schema) {
        n = n.max(g.len());
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        n = n.max(e.len());
    }
    let mut children: Vec<&Value> = Vec::new();
    if let Some(p) = schema.get("properties").and_then(Value::as_object) {
        children.extend(p.values());
    }
    children.extend(schema.get("items"));
    if let Some(a) = schema.get("additionalProperties")
        && a.is_object()
    {
        children.push(a);
    }
    for c in children {
        n = n.max(variants_needed(c));
    }
    n
}

struct Walk {
    variant: usize,
    /// `Kind/version path` of every property set.
    fields: BTreeSet<String>,
    prefix: String,
}

impl Walk {
    fn sample(&mut self, schema: &Value, path: &str) -> Value {
        if flag(schema, "x-kubernetes-int-or-string") {
            return json!(1);
        }
        let ty = schema.get("type").and_then(Value::as_str);
        match ty {
            Some("object") | None
                if schema.get("properties").is_some()
                    || schema.get("additionalProperties").is_some() =>
            {
                self.object(schema, path)
            }
            Some("object") | None => {
                // A google.protobuf.Struct or Any: anything goes.
                json!({"sampleKey": "sample value"})
            }
            Some("array") => {
                let items = schema.get("items").cloned().unwrap_or(json!({}));
                json!([self.sample(&items, &format!("{path}[]"))])
            }
            Some("string") => self.string(schema, path),
            Some("integer") => {
                let min = schema.get("minimum").and_then(Value::as_i64).unwrap_or(1);
                let max = schema
                    .get("maximum")
                    .and_then(Value::as_i64)
                    .unwrap_or(i64::MAX);
                json!(min.max(1).min(max))
            }
            Some("number") => json!(1.5),
            Some("boolean") => json!(true),
            Some(other) => panic!("{}{path}: schema type {other}", self.prefix),
        }
    }

    fn string(&self, schema: &Value, path: &str) -> Value {
        if let Some(e) = schema.get("enum").and_then(Value::as_array)
            && !e.is_empty()
        {
            return e[self.variant % e.len()].clone();
        }
        let rules = rules(schema);
        // A google.protobuf.Duration is a string; most carry a CEL rule, the rest are named so.
        let key = path.rsplit('.').next().unwrap_or(path).to_ascii_lowercase();
        let duration_name = [
            "timeout",
            "interval",
            "duration",
            "delay",
            "ejectiontime",
            "maxage",
            "ttl",
            "period",
        ]
        .iter()
        .any(|s| key.ends_with(s));
        if duration_name || rules.iter().any(|r| r.contains("duration(self)")) {
            return json!("5s");
        }
        if rules.iter().any(|r| r.contains("url(self)")) {
            return json!("https://example.com/x");
        }
        match schema.get("format").and_then(Value::as_str) {
            Some("date-time") => json!("2026-01-01T00:00:00Z"),
            Some("byte") => json!("c2FtcGxl"),
            _ => json!("sample"),
        }
    }

    fn object(&mut self, schema: &Value, path: &str) -> Value {
        let mut out = Map::new();
        let groups = exclusive_groups(schema);
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (key, sub) in props {
                let excluded = groups
                    .iter()
                    .any(|g| g.contains(key) && g[self.variant % g.len()] != *key);
                if excluded {
                    continue;
                }
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                self.fields.insert(format!("{}{p}", self.prefix));
                out.insert(key.clone(), self.sample(sub, &p));
            }
        } else if let Some(add) = schema.get("additionalProperties") {
            let key = if rules(schema).iter().any(|r| r.contains("int(key)")) {
                "8080"
            } else {
                "sample-key"
            };
            let sub = if add.is_object() {
                add.clone()
            } else {
                json!({"type": "string"})
            };
            out.insert(key.into(), self.sample(&sub, &format!("{path}.*")));
        }
        Value::Object(out)
    }
}

/// Removes the field at a load error's path (`spec.http[0].retries.attemps`).
fn remove_path(doc: &mut Value, path: &str) -> bool {
    let mut segments = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            segments.push(Err(rest[..i].to_string()));
            rest = &rest[i..];
            while let Some(r) = rest.strip_prefix('[') {
                let (n, tail) = r.split_once(']').unwrap_or((r, ""));
                segments.push(Ok(n.parse::<usize>().unwrap_or(0)));
                rest = tail;
            }
        } else {
            segments.push(Err(rest.to_string()));
        }
    }
    let Some(last) = segments.pop() else {
        return false;
    };
    let mut cur = doc;
    for s in segments {
        let next = match s {
            Err(k) => cur.get_mut(k.as_str()),
            Ok(i) => cur.get_mut(i),
        };
        match next {
            Some(n) => cur = n,
            None => return false,
        }
    }
    match (last, cur) {
        (Err(k), Value::Object(m)) => m.remove(&k).is_some(),
        (Ok(i), Value::Array(a)) if i < a.len() => {
            a.remove(i);
            true
        }
        _ => false,
    }
}

#[test]
fn every_field_of_istios_crd_schemas_loads() {
    let crds = load_crds();
    assert!(
        crds.len() >= 15,
        "expected Istio's CRDs, found {}",
        crds.len()
    );
    let mut fields = BTreeSet::new();
    let mut failures: BTreeSet<String> = BTreeSet::new();
    let mut samples = 0;
    let mut kinds_checked = BTreeSet::new();
    for crd in &crds {
        let spec = &crd["spec"];
        let group = spec["group"].as_str().expect("group");
        let kind = spec["names"]["kind"].as_str().expect("kind");
        if SKIPPED_KINDS.contains(&kind) {
            continue;
        }
        for version in spec["versions"].as_array().expect("versions") {
            if version.get("served").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            let v = version["name"].as_str().expect("version name");
            let schema = &version["schema"]["openAPIV3Schema"];
            let n = variants_needed(schema);
            kinds_checked.insert(format!("{kind}/{v}"));
            for variant in 0..n {
                let mut walk = Walk {
                    variant,
                    fields: BTreeSet::new(),
                    prefix: format!("{kind}/{v} "),
                };
                let body = walk.sample(schema, "");
                fields.extend(walk.fields);
                let mut doc = json!({
                    "apiVersion": format!("{group}/{v}"),
                    "kind": kind,
                    "metadata": {"name": "sample", "namespace": "default"},
                });
                for (k, val) in body.as_object().expect("object schema") {
                    if !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                        doc[k] = val.clone();
                    }
                }
                samples += 1;
                check_sample(&mut doc, kind, v, &mut failures);
            }
        }
    }
    eprintln!(
        "{} kind versions, {} samples, {} distinct fields checked",
        kinds_checked.len(),
        samples,
        fields.len()
    );
    assert!(
        fields.len() > 2500,
        "the walk found only {} fields: is the schema file Istio's?",
        fields.len()
    );
    assert!(
        failures.is_empty(),
        "{} problems:\n{}",
        failures.len(),
        failures.into_iter().collect::<Vec<_>>().join("\n")
    );
}

fn check_sample(doc: &mut Value, kind: &str, version: &str, failures: &mut BTreeSet<String>) {
    for _ in 0..MAX_REMOVALS {
        let yaml = serde_norway::to_string(&*doc).expect("serializes");
        let errs = match skein_api::load_str("sample.yaml", &yaml) {
            Ok(m) => {
                assert_eq!(m.len(), 1);
                return;
            }
            Err(e) => e,
        };
        let mut removed = false;
        for e in errs.iter() {
            match e {
                skein_api::LoadError::Field { path, message, .. }
                    if message.starts_with("unknown field") =>
                {
                    failures.insert(format!("{kind}/{version}: {path}: {message}"));
                    removed |= remove_path(doc, path);
                }
                other => {
                    failures.insert(format!("{kind}/{version}: {other}"));
                }
            }
        }
        if !removed {
            return;
        }
    }
}
