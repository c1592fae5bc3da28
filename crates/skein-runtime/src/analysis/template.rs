//! From templates (or a written AnalysisRun) to the metrics a run measures: templates found by
//! name (namespaced or cluster-scoped, with the templates they include), args merged and
//! resolved (`value`, `valueFrom.secretKeyRef`), `{{args.NAME}}` substituted into every string
//! field of every metric, as Argo's `ResolveArgs` does, then each field parsed and each
//! condition compiled.

use std::time::Duration;

use skein_api::analysis::{
    self, AnalysisTemplateSpec, Argument, DryRun, MeasurementRetention, Metric, PrometheusMetric,
    expr::Program,
};
use skein_api::{IntOrString, Manifests};

use super::AnalysisError;
use super::engine::{PrometheusQuery, ResolvedMetric};

/// How deep `templates:` may include other templates.
const MAX_TEMPLATE_DEPTH: usize = 8;
/// The shortest interval between two measurements of a metric.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The most metrics one run measures.
const MAX_METRICS: usize = 64;

/// Everything a run takes from its templates, before arguments are substituted.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    pub metrics: Vec<Metric>,
    pub args: Vec<Argument>,
    pub dry_run: Vec<DryRun>,
    pub retention: Vec<MeasurementRetention>,
}

/// Collects the metrics and args of `templates` (and of what they include).
pub(crate) fn gather(
    manifests: &Manifests,
    namespace: &str,
    templates: &[(String, bool)],
) -> Result<Gathered, AnalysisError> {
    let mut out = Gathered::default();
    for (name, cluster) in templates {
        gather_one(manifests, namespace, name, *cluster, 0, &mut out)?;
    }
    Ok(out)
}

fn gather_one(
    manifests: &Manifests,
    namespace: &str,
    name: &str,
    cluster: bool,
    depth: usize,
    out: &mut Gathered,
) -> Result<(), AnalysisError> {
    if depth > MAX_TEMPLATE_DEPTH {
        return Err(AnalysisError::Template(format!(
            "templates include each other more than {MAX_TEMPLATE_DEPTH} deep (at {name:?}); is there a cycle?"
        )));
    }
    let spec: &AnalysisTemplateSpec = if cluster {
        manifests
            .cluster_analysis_templates()
            .find(|t| t.metadata.name == name)
            .map(|t| &t.spec.0)
            .ok_or_else(|| {
                AnalysisError::Template(format!("ClusterAnalysisTemplate {name:?} not found"))
            })?
    } else {
        manifests
            .get::<analysis::AnalysisTemplate>(namespace, name)
            .map(|t| &t.spec)
            .ok_or_else(|| {
                AnalysisError::Template(format!(
                    "AnalysisTemplate {name:?} not found in namespace {namespace:?}"
                ))
            })?
    };
    for t in &spec.templates {
        gather_one(
            manifests,
            namespace,
            &t.template_name,
            t.cluster_scope,
            depth + 1,
            out,
        )?;
    }
    for m in &spec.metrics {
        if out.metrics.iter().any(|x| x.name == m.name) {
            return Err(AnalysisError::Template(format!(
                "two metrics have the same name '{}'",
                m.name
            )));
        }
        out.metrics.push(m.clone());
    }
    // Argo's MergeArgs: the same arg from two templates must agree on its value.
    for a in &spec.args {
        match out.args.iter_mut().find(|x| x.name == a.name) {
            Some(x) if x.value.is_some() && a.value.is_some() && x.value != a.value => {
                return Err(AnalysisError::Template(format!(
                    "Argument `{}` specified multiple times with different values: '{}', '{}'",
                    a.name,
                    x.value.as_deref().unwrap_or_default(),
                    a.value.as_deref().unwrap_or_default()
                )));
            }
            Some(x) => {
                if x.value.is_none() && x.value_from.is_none() {
                    *x = a.clone();
                }
            }
            None => out.args.push(a.clone()),
        }
    }
    out.dry_run.extend(spec.dry_run.iter().cloned());
    out.retention
        .extend(spec.measurement_retention.iter().cloned());
    if out.metrics.len() > MAX_METRICS {
        return Err(AnalysisError::Template(format!(
            "more than {MAX_METRICS} metrics in one analysis"
        )));
    }
    Ok(())
}

/// The args' values: `given` (the Rollout's, already resolved) over the templates' own,
/// secrets read from `namespace`'s Secrets. An arg with no value is an error, as in Argo.
pub(crate) fn resolve_args(
    manifests: &Manifests,
    namespace: &str,
    declared: &[Argument],
    given: &[(String, String)],
) -> Result<Vec<(String, String)>, AnalysisError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for a in declared {
        if let Some((_, v)) = given.iter().find(|(n, _)| *n == a.name) {
            out.push((a.name.clone(), v.clone()));
            continue;
        }
        let value = match (&a.value, &a.value_from) {
            (Some(v), None) => v.clone(),
            (Some(_), Some(_)) => {
                return Err(AnalysisError::Args(format!(
                    "arg {} has both Value and ValueFrom fields",
                    a.name
                )));
            }
            (None, Some(from)) => {
                if let Some(s) = &from.secret_key_ref {
                    secret_value(manifests, namespace, &s.name, &s.key)?
                } else {
                    return Err(AnalysisError::Args(format!(
                        "args.{}: valueFrom.fieldRef and podTemplateHashValue are resolved by the Rollout that starts the analysis; pass the value in its args",
                        a.name
                    )));
                }
            }
            (None, None) => {
                return Err(AnalysisError::Args(format!(
                    "args.{} was not resolved",
                    a.name
                )));
            }
        };
        out.push((a.name.clone(), value));
    }
    // Args the caller gives that no template declares still substitute (Argo drops them;
    // keeping them costs nothing and a template that uses them undeclared still works).
    for (n, v) in given {
        if !out.iter().any(|(x, _)| x == n) {
            out.push((n.clone(), v.clone()));
        }
    }
    Ok(out)
}

fn secret_value(
    manifests: &Manifests,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<String, AnalysisError> {
    let secret = manifests
        .get::<skein_api::k8s::Secret>(namespace, name)
        .ok_or_else(|| {
            AnalysisError::Args(format!(
                "secret {name:?} not found in namespace {namespace:?}"
            ))
        })?;
    if let Some(v) = secret.string_data.get(key) {
        return Ok(v.clone());
    }
    let encoded = secret.data.get(key).ok_or_else(|| {
        AnalysisError::Args(format!("secret {namespace}/{name} has no key {key:?}"))
    })?;
    let bytes = base64_decode(encoded).ok_or_else(|| {
        AnalysisError::Args(format!(
            "secret {namespace}/{name} key {key:?} is not base64"
        ))
    })?;
    String::from_utf8(bytes).map_err(|_| {
        AnalysisError::Args(format!(
            "secret {namespace}/{name} key {key:?} is not UTF-8"
        ))
    })
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Substitutes `{{args.NAME}}` (spaces inside the braces allowed) in `text`. Any other
/// placeholder, or an arg not given, is Argo's error `failed to resolve {{...}}`.
pub(crate) fn substitute(text: &str, args: &[(String, String)]) -> Result<String, AnalysisError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let tag = &after[..end];
        let value = tag
            .trim()
            .strip_prefix("args.")
            .and_then(|name| args.iter().find(|(n, _)| n == name))
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| AnalysisError::Args(format!("failed to resolve {{{{{tag}}}}}")))?;
        out.push_str(value);
        rest = &after[end + 2..];
        if out.len() > 1 << 20 {
            return Err(AnalysisError::Args(
                "a substituted field is over 1 MiB".into(),
            ));
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn subst_opt(
    v: &Option<String>,
    args: &[(String, String)],
) -> Result<Option<String>, AnalysisError> {
    v.as_deref().map(|s| substitute(s, args)).transpose()
}

fn subst_int(
    v: &Option<IntOrString>,
    args: &[(String, String)],
) -> Result<Option<IntOrString>, AnalysisError> {
    Ok(match v {
        Some(IntOrString::String(s)) => Some(IntOrString::String(substitute(s, args)?)),
        other => other.clone(),
    })
}

/// `metric` with every string field substituted (Argo substitutes the metric's whole JSON).
pub(crate) fn substitute_metric(
    m: &Metric,
    args: &[(String, String)],
) -> Result<Metric, AnalysisError> {
    let mut out = m.clone();
    out.name = substitute(&m.name, args)?;
    out.interval = subst_opt(&m.interval, args)?;
    out.initial_delay = subst_opt(&m.initial_delay, args)?;
    out.success_condition = subst_opt(&m.success_condition, args)?;
    out.failure_condition = subst_opt(&m.failure_condition, args)?;
    out.count = subst_int(&m.count, args)?;
    out.failure_limit = subst_int(&m.failure_limit, args)?;
    out.inconclusive_limit = subst_int(&m.inconclusive_limit, args)?;
    out.consecutive_error_limit = subst_int(&m.consecutive_error_limit, args)?;
    out.consecutive_success_limit = subst_int(&m.consecutive_success_limit, args)?;
    if let Some(p) = &m.provider.prometheus {
        let mut headers = p.headers.clone();
        for h in &mut headers {
            h.value = substitute(&h.value, args)?;
        }
        out.provider.prometheus = Some(PrometheusMetric {
            address: subst_opt(&p.address, args)?,
            query: substitute(&p.query, args)?,
            headers,
            ..p.clone()
        });
    }
    Ok(out)
}

/// A substituted metric, checked again (now that every placeholder has a value) and parsed.
pub(crate) fn resolve_metric(
    m: &Metric,
    dry_run: &[DryRun],
    retention: &[MeasurementRetention],
) -> Result<ResolvedMetric, AnalysisError> {
    let problems = analysis::check_metric(m);
    if let Some((field, msg)) = problems.first() {
        return Err(AnalysisError::Metric {
            metric: m.name.clone(),
            reason: format!("{}: {msg}", field.trim_start_matches('.')),
        });
    }
    let bad = |reason: String| AnalysisError::Metric {
        metric: m.name.clone(),
        reason,
    };
    let int = |v: &Option<IntOrString>, default: i64| -> Result<i64, AnalysisError> {
        match v {
            None => Ok(default),
            Some(v) => analysis::int_value(v)
                .map_err(bad)?
                .ok_or_else(|| bad(format!("{v} is not resolved"))),
        }
    };
    // An interval under a second would query Prometheus in a tight loop; a second is the floor.
    let interval = analysis::duration_value(m.interval.as_deref())
        .map_err(bad)?
        .map(|i| i.max(MIN_INTERVAL));
    let initial_delay = analysis::duration_value(m.initial_delay.as_deref())
        .map_err(bad)?
        .unwrap_or_default();
    let count = int(&m.count, 0)?;
    // Argo's EffectiveCount.
    let count = match (count, interval) {
        (0, None) => Some(1),
        (0, Some(_)) => None,
        (n, _) => Some(n),
    };
    let compile = |c: &Option<String>| -> Result<Option<(String, Program)>, AnalysisError> {
        match c.as_deref().filter(|c| !c.trim().is_empty()) {
            None => Ok(None),
            Some(text) => Program::compile(text)
                .map(|p| Some((text.to_string(), p)))
                .map_err(|e| bad(format!("condition {text:?}: {e}"))),
        }
    };
    let Some(p) = &m.provider.prometheus else {
        return Err(bad("no provider specified".into()));
    };
    let mut keep = skein_api::analysis::DEFAULT_MEASUREMENT_RETENTION;
    for r in retention {
        if analysis::name_pattern(&r.metric_name).is_ok_and(|re| re.is_match(&m.name)) {
            keep = usize::try_from(r.limit).unwrap_or(1);
        }
    }
    let dry = dry_run
        .iter()
        .any(|d| analysis::name_pattern(&d.metric_name).is_ok_and(|re| re.is_match(&m.name)));
    let timeout = p
        .timeout
        .unwrap_or(analysis::DEFAULT_PROMETHEUS_TIMEOUT_SECONDS)
        .clamp(1, 600);
    Ok(ResolvedMetric {
        name: m.name.clone(),
        interval,
        initial_delay,
        count,
        success: compile(&m.success_condition)?,
        failure: compile(&m.failure_condition)?,
        failure_limit: int(&m.failure_limit, 0)?,
        inconclusive_limit: int(&m.inconclusive_limit, 0)?,
        consecutive_error_limit: int(
            &m.consecutive_error_limit,
            analysis::DEFAULT_CONSECUTIVE_ERROR_LIMIT,
        )?,
        consecutive_success_limit: int(&m.consecutive_success_limit, 0)?,
        dry_run: dry,
        retention: keep.clamp(1, analysis::MAX_MEASUREMENT_RETENTION),
        prometheus: PrometheusQuery {
            address: p
                .address
                .clone()
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| analysis::DEFAULT_PROMETHEUS_ADDRESS.to_string()),
            query: p.query.clone(),
            timeout: Duration::from_secs(timeout as u64),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn args_substitute_as_argo_resolves_them() {
        let a = args(&[("service-name", "web.blog-system.svc.cluster.local")]);
        assert_eq!(
            substitute(
                "sum(irate(istio_requests_total{destination_service=~\"{{args.service-name}}\"}[1m]))",
                &a
            )
            .unwrap(),
            "sum(irate(istio_requests_total{destination_service=~\"web.blog-system.svc.cluster.local\"}[1m]))"
        );
        assert_eq!(substitute("{{ args.service-name }}", &a).unwrap(), a[0].1);
        assert_eq!(
            substitute("{{args.other}}", &a).unwrap_err().to_string(),
            "failed to resolve {{args.other}}"
        );
        assert_eq!(
            substitute("{{metadata.name}}", &a).unwrap_err().to_string(),
            "failed to resolve {{metadata.name}}"
        );
        assert_eq!(substitute("a {{ b", &a).unwrap(), "a {{ b");
    }

    #[test]
    fn declared_args_need_a_value() {
        let m = skein_api::load_str(
            "s.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata: {name: tok, namespace: ns}\ndata: {k: aGVsbG8=}\n",
        )
        .unwrap();
        let declared: Vec<Argument> = serde_json::from_value(serde_json::json!([
            {"name": "a"},
            {"name": "b", "value": "default"},
            {"name": "c", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "k"}}},
        ]))
        .unwrap();
        let got = resolve_args(&m, "ns", &declared, &args(&[("a", "given")])).unwrap();
        assert_eq!(
            got,
            args(&[("a", "given"), ("b", "default"), ("c", "hello")])
        );
        let e = resolve_args(&m, "ns", &declared, &[]).unwrap_err();
        assert_eq!(e.to_string(), "args.a was not resolved");
        let e = resolve_args(&m, "other", &declared[2..], &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "secret \"tok\" not found in namespace \"other\""
        );
    }
}
