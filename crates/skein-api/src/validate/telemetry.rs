//! Istio telemetry: the Telemetry API, with istiod's messages.

use super::{Cx, selector_labels};
use crate::telemetry::{TagOperation, Telemetry};

/// istiod's `ValidateTelemetry`.
pub(super) fn validate_telemetry(cx: &mut Cx<'_>, t: &Telemetry) {
    let spec = &t.spec;
    if spec.selector.is_some() && (spec.target_ref.is_some() || !spec.target_refs.is_empty()) {
        cx.error("spec", "only one of targetRefs or selector can be set");
    }
    selector_labels(cx, "spec.selector", &spec.selector);
    if spec.tracing.len() > 1 {
        cx.warn(
            "spec.tracing",
            "multiple tracing is not currently supported",
        );
    }
    // CEL: compiled as the proxy compiles it; an expression outside the subset is refused
    // here rather than silently matching everything.
    for (i, al) in spec.access_logging.iter().enumerate() {
        if let Some(f) = &al.filter
            && let Err(e) = skein_snapshot::cel::Program::compile_bool(&f.expression)
        {
            cx.error(
                &format!("spec.accessLogging[{i}].filter.expression"),
                e.to_string(),
            );
        }
    }
    for (i, m) in spec.metrics.iter().enumerate() {
        for (j, o) in m.overrides.iter().enumerate() {
            for (tag, t) in &o.tag_overrides {
                let path = format!("spec.metrics[{i}].overrides[{j}].tagOverrides.{tag}");
                let upsert = !matches!(t.operation, Some(TagOperation::Remove));
                match (&t.value, upsert) {
                    (Some(v), true) => {
                        if let Err(e) = skein_snapshot::cel::Program::compile(v) {
                            cx.error(&format!("{path}.value"), e.to_string());
                        }
                    }
                    (None, true) => cx.error(&path, "value must be set when operation is UPSERT"),
                    (Some(_), false) => {
                        cx.error(&path, "value must not be set when operation is REMOVE")
                    }
                    (None, false) => {}
                }
            }
        }
    }
    for (i, tr) in spec.tracing.iter().enumerate() {
        let tp = format!("spec.tracing[{i}]");
        if tr.providers.len() > 1 {
            cx.warn(
                &format!("{tp}.providers"),
                "multiple providers is not currently supported",
            );
        }
        if let Some(p) = tr.random_sampling_percentage
            && !(0.0..=100.0).contains(&p)
        {
            cx.error(
                &format!("{tp}.randomSamplingPercentage"),
                "randomSamplingPercentage must be in range [0.0, 100.0]",
            );
        }
        for (name, tag) in &tr.custom_tags {
            let path = format!("{tp}.customTags.{name}");
            if name.is_empty() {
                cx.error(&path, "tag name may not be empty");
            }
            if tag.literal.is_none()
                && tag.environment.is_none()
                && tag.header.is_none()
                && tag.formatter.is_none()
            {
                cx.error(&path, format!("tag '{name}' may not have a nil value"));
            }
            if tag.literal.as_ref().is_some_and(|l| l.value.is_empty()) {
                cx.error(&path, "literal tag value may not be empty");
            }
            if tag.header.as_ref().is_some_and(|h| h.name.is_empty()) {
                cx.error(&path, "header tag name may not be empty");
            }
            if tag.environment.as_ref().is_some_and(|e| e.name.is_empty()) {
                cx.error(&path, "environment tag name may not be empty");
            }
        }
    }
}

/// The mesh config (ConfigMap `istio` in `istio-system`, key `mesh`): an error at the line
/// inside the block scalar where istiod would fail to read it.
pub(super) fn validate_mesh_config(cx: &mut Cx<'_>, c: &crate::k8s::ConfigMap) {
    use crate::mesh::{MESH_CONFIG_KEY, MESH_CONFIG_NAME, MESH_CONFIG_NAMESPACE};
    if c.metadata.name != MESH_CONFIG_NAME
        || c.metadata.namespace_or_default() != MESH_CONFIG_NAMESPACE
    {
        return;
    }
    let Some(text) = c.data.get(MESH_CONFIG_KEY) else {
        return;
    };
    let key = format!("data.{MESH_CONFIG_KEY}");
    let start = cx.doc.lines.block_start(&key);
    let refuse = |cx: &mut Cx<'_>, line: usize, message: String| {
        cx.out.push(super::Diagnostic {
            code: crate::Code::Ist0106,
            severity: super::Severity::Error,
            source: crate::Source {
                file: cx.doc.source.file.clone(),
                line,
            },
            object: cx.object.clone(),
            path: key.clone(),
            message,
        });
    };
    let mesh = match crate::mesh::MeshConfig::parse(text) {
        Ok(m) => m,
        Err((line, message)) => {
            let line = match (start, line) {
                (Some(start), Some(n)) => start + n.saturating_sub(1),
                _ => cx.doc.line_of(&key),
            };
            refuse(cx, line, message);
            return;
        }
    };
    // Access-log formats: the command operators the proxy can fill, checked now rather
    // than when a proxy refuses the snapshot.
    let inner = crate::LineIndex::build(text, start.unwrap_or(1));
    let line_of = |path: &str| match start {
        Some(_) => inner.line_of(path),
        None => cx.doc.line_of(&key),
    };
    let mut formats: Vec<(String, String)> = Vec::new();
    if !mesh.access_log_format.is_empty() {
        formats.push(("accessLogFormat".into(), mesh.access_log_format.clone()));
    }
    for (i, p) in mesh.extension_providers.iter().enumerate() {
        let Some(f) = p
            .envoy_file_access_log
            .as_ref()
            .and_then(|f| f.log_format.as_ref())
        else {
            continue;
        };
        let base = format!("extensionProviders[{i}].envoyFileAccessLog.logFormat");
        if let Some(t) = &f.text {
            formats.push((format!("{base}.text"), t.clone()));
        }
        for (k, v) in f.labels.iter().flatten() {
            formats.push((format!("{base}.labels.{k}"), v.clone()));
        }
    }
    let bad: Vec<(usize, String)> = formats
        .into_iter()
        .filter_map(|(path, f)| {
            skein_snapshot::log_format::parse(&f)
                .err()
                .map(|e| (line_of(&path), format!("{path}: {e}")))
        })
        .collect();
    for (line, message) in bad {
        refuse(cx, line, message);
    }
}
