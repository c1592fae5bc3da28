//! Argo Rollouts' analysis kinds (`argoproj.io/v1alpha1`): AnalysisTemplate,
//! ClusterAnalysisTemplate (cluster-scoped) and AnalysisRun, as in argo-rollouts
//! `pkg/apis/rollouts/v1alpha1/analysis_types.go`, and their checks with Argo's messages
//! (`utils/analysis.ValidateMetric`). Conditions are compiled by [`expr`] when the manifests
//! load, so a condition outside the supported subset is an error at its `file:line`, not a
//! measurement error minutes into a rollout.
//!
//! skein measures with the Prometheus provider only; the other providers parse (so a file
//! written for a cluster loads) and are refused by the checks.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::types::{Duration, IntOrString, Object, Opaque};

pub mod expr;

pub type AnalysisTemplate = Object<AnalysisTemplateSpec>;
/// Cluster-scoped: found by name from any namespace (`clusterScope: true`).
pub type ClusterAnalysisTemplate = Object<ClusterAnalysisTemplateSpec>;
pub type AnalysisRun = Object<AnalysisRunSpec>;

/// The Prometheus a metric without `address` queries: the mesh's Prometheus addon.
pub const DEFAULT_PROMETHEUS_ADDRESS: &str = "http://prometheus.istio-system:9090";
/// Measurements kept per metric when `measurementRetention` says nothing (Argo: 10).
pub const DEFAULT_MEASUREMENT_RETENTION: usize = 10;
/// The most measurements kept per metric, whatever `measurementRetention` asks.
pub const MAX_MEASUREMENT_RETENTION: usize = 1000;
/// Argo's default `consecutiveErrorLimit`.
pub const DEFAULT_CONSECUTIVE_ERROR_LIMIT: i64 = 4;
/// Argo's default Prometheus query timeout, in seconds.
pub const DEFAULT_PROMETHEUS_TIMEOUT_SECONDS: i64 = 30;

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AnalysisTemplateSpec {
    pub metrics: Vec<Metric>,
    pub args: Vec<Argument>,
    pub dry_run: Vec<DryRun>,
    pub measurement_retention: Vec<MeasurementRetention>,
    /// Other templates whose metrics and args this one includes.
    pub templates: Vec<AnalysisTemplateRef>,
}

/// A ClusterAnalysisTemplate's spec: the same fields as an AnalysisTemplate's.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct ClusterAnalysisTemplateSpec(pub AnalysisTemplateSpec);

impl std::ops::Deref for ClusterAnalysisTemplateSpec {
    type Target = AnalysisTemplateSpec;
    fn deref(&self) -> &AnalysisTemplateSpec {
        &self.0
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AnalysisTemplateRef {
    pub template_name: String,
    pub cluster_scope: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AnalysisRunSpec {
    pub metrics: Vec<Metric>,
    pub args: Vec<Argument>,
    /// Stops measuring; the run ends Successful unless a metric already failed.
    pub terminate: bool,
    pub dry_run: Vec<DryRun>,
    pub measurement_retention: Vec<MeasurementRetention>,
    pub ttl_strategy: Option<Opaque>,
}

/// One measurement to take, how often, and how to judge it. Every string field may hold
/// `{{args.NAME}}`, substituted when the run starts.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Metric {
    pub name: String,
    /// A Go duration (`30s`, `5m`); none: measure once (`count` defaults to 1).
    pub interval: Option<String>,
    pub initial_delay: Option<String>,
    /// None (or 0) with an interval: measure until the run is terminated.
    pub count: Option<IntOrString>,
    pub success_condition: Option<String>,
    pub failure_condition: Option<String>,
    /// Default 0; -1 disables it (only with `consecutiveSuccessLimit`).
    pub failure_limit: Option<IntOrString>,
    pub inconclusive_limit: Option<IntOrString>,
    /// Default 4.
    pub consecutive_error_limit: Option<IntOrString>,
    pub consecutive_success_limit: Option<IntOrString>,
    pub provider: MetricProvider,
}

/// Exactly one provider. skein measures with `prometheus`; the others are kept so that a file
/// written for a cluster loads, and are refused by the checks.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MetricProvider {
    pub prometheus: Option<PrometheusMetric>,
    pub kayenta: Option<Opaque>,
    pub web: Option<Opaque>,
    pub datadog: Option<Opaque>,
    pub wavefront: Option<Opaque>,
    pub new_relic: Option<Opaque>,
    pub job: Option<Opaque>,
    pub cloud_watch: Option<Opaque>,
    pub graphite: Option<Opaque>,
    pub influxdb: Option<Opaque>,
    pub skywalking: Option<Opaque>,
    pub plugin: Option<Opaque>,
}

impl MetricProvider {
    /// The names of the providers set, in Argo's field order.
    pub fn names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.prometheus.is_some() {
            out.push("prometheus");
        }
        for (name, set) in [
            ("kayenta", self.kayenta.is_some()),
            ("web", self.web.is_some()),
            ("datadog", self.datadog.is_some()),
            ("wavefront", self.wavefront.is_some()),
            ("newRelic", self.new_relic.is_some()),
            ("job", self.job.is_some()),
            ("cloudWatch", self.cloud_watch.is_some()),
            ("graphite", self.graphite.is_some()),
            ("influxdb", self.influxdb.is_some()),
            ("skywalking", self.skywalking.is_some()),
            ("plugin", self.plugin.is_some()),
        ] {
            if set {
                out.push(name);
            }
        }
        out
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PrometheusMetric {
    /// `http://HOST:PORT[/PREFIX]`; a cluster name (`prometheus.istio-system.svc:9090`)
    /// resolves to the runtime's Service. None: [`DEFAULT_PROMETHEUS_ADDRESS`].
    pub address: Option<String>,
    pub query: String,
    pub authentication: Option<Opaque>,
    /// Seconds (Argo: 30).
    pub timeout: Option<i64>,
    pub insecure: Option<bool>,
    pub headers: Vec<Header>,
    pub range_query: Option<Opaque>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Header {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Argument {
    pub name: String,
    pub value: Option<String>,
    pub value_from: Option<ValueFrom>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ValueFrom {
    pub secret_key_ref: Option<SecretKeyRef>,
    /// A field of the Rollout that starts the analysis (`metadata.name`, ...), resolved by it.
    pub field_ref: Option<FieldRef>,
    /// `Stable` or `Latest`: a pod template hash, resolved by the Rollout.
    pub pod_template_hash_value: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FieldRef {
    pub field_path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DryRun {
    /// A regular expression over metric names (`.*` for all).
    pub metric_name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MeasurementRetention {
    /// A regular expression over metric names.
    pub metric_name: String,
    pub limit: i64,
}

// === Checks ===

/// One problem: the field path under `spec` (e.g. `spec.metrics[0].successCondition`) and
/// the message.
pub type Problem = (String, String);

/// Whether `s` holds a `{{...}}` placeholder, which only a run can resolve.
pub fn has_placeholder(s: &str) -> bool {
    s.contains("{{")
}

/// An `IntOrString` field's number; `Ok(None)` when it waits for an argument.
pub fn int_value(v: &IntOrString) -> Result<Option<i64>, String> {
    match v {
        IntOrString::Int(n) => Ok(Some(i64::from(*n))),
        IntOrString::String(s) if has_placeholder(s) => Ok(None),
        IntOrString::String(s) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| format!("Invalid value: {s:?}: must be an integer")),
    }
}

/// A metric's Go duration (`interval`, `initialDelay`); `Ok(None)` when unset or waiting for
/// an argument.
pub fn duration_value(v: Option<&str>) -> Result<Option<std::time::Duration>, String> {
    match v {
        None | Some("") => Ok(None),
        Some(s) if has_placeholder(s) => Ok(None),
        Some(s) => Duration::parse(s)
            .map(|d| Some(d.get()))
            .map_err(|e| e.to_string()),
    }
}

/// The checks of an AnalysisTemplate's or ClusterAnalysisTemplate's spec.
pub fn check_template(spec: &AnalysisTemplateSpec) -> Vec<Problem> {
    let mut out = Vec::new();
    if spec.metrics.is_empty() && spec.templates.is_empty() {
        out.push(("spec.metrics".into(), "no metrics specified".into()));
    }
    check_metrics(&spec.metrics, &mut out);
    check_args(&spec.args, &mut out);
    check_selectors(&spec.dry_run, &spec.measurement_retention, &mut out);
    for (i, t) in spec.templates.iter().enumerate() {
        if t.template_name.is_empty() {
            out.push((
                format!("spec.templates[{i}].templateName"),
                "Required value".into(),
            ));
        }
    }
    out
}

/// The checks of an AnalysisRun's spec (Argo's `ValidateMetrics` when a run starts).
pub fn check_run(spec: &AnalysisRunSpec) -> Vec<Problem> {
    let mut out = Vec::new();
    if spec.metrics.is_empty() {
        out.push(("spec.metrics".into(), "no metrics specified".into()));
    }
    check_metrics(&spec.metrics, &mut out);
    check_args(&spec.args, &mut out);
    check_selectors(&spec.dry_run, &spec.measurement_retention, &mut out);
    out
}

fn check_args(args: &[Argument], out: &mut Vec<Problem>) {
    let mut seen = HashSet::new();
    for (i, a) in args.iter().enumerate() {
        let path = format!("spec.args[{i}]");
        if a.name.is_empty() {
            out.push((format!("{path}.name"), "Required value: arg name".into()));
        } else if !seen.insert(a.name.as_str()) {
            out.push((
                format!("{path}.name"),
                format!("duplicate arg name '{}'", a.name),
            ));
        }
        if let Some(from) = &a.value_from {
            if a.value.is_some() {
                out.push((
                    path.clone(),
                    format!("arg {} has both Value and ValueFrom fields", a.name),
                ));
            }
            let set = [
                from.secret_key_ref.is_some(),
                from.field_ref.is_some(),
                from.pod_template_hash_value.is_some(),
            ];
            if set.iter().filter(|s| **s).count() != 1 {
                out.push((
                    format!("{path}.valueFrom"),
                    "exactly one of secretKeyRef, fieldRef or podTemplateHashValue must be set"
                        .into(),
                ));
            }
            if let Some(s) = &from.secret_key_ref
                && (s.name.is_empty() || s.key.is_empty())
            {
                out.push((
                    format!("{path}.valueFrom.secretKeyRef"),
                    "secretKeyRef needs a name and a key".into(),
                ));
            }
        }
    }
}

fn check_selectors(dry: &[DryRun], keep: &[MeasurementRetention], out: &mut Vec<Problem>) {
    for (i, d) in dry.iter().enumerate() {
        if let Err(e) = name_pattern(&d.metric_name) {
            out.push((format!("spec.dryRun[{i}].metricName"), e));
        }
    }
    for (i, m) in keep.iter().enumerate() {
        if let Err(e) = name_pattern(&m.metric_name) {
            out.push((format!("spec.measurementRetention[{i}].metricName"), e));
        }
        if m.limit <= 0 {
            out.push((
                format!("spec.measurementRetention[{i}].limit"),
                format!("limit must be > 0, got {}", m.limit),
            ));
        }
    }
}

/// A `dryRun` / `measurementRetention` metric name: a regular expression, anchored as
/// Argo's `regexp.MatchString` is not (a match anywhere counts).
pub fn name_pattern(p: &str) -> Result<regex::Regex, String> {
    if p.is_empty() {
        return Err("Required value: metricName".into());
    }
    regex::RegexBuilder::new(p)
        .size_limit(1 << 16)
        .build()
        .map_err(|e| format!("invalid metricName regular expression: {e}"))
}

fn check_metrics(metrics: &[Metric], out: &mut Vec<Problem>) {
    let mut names = HashSet::new();
    for (i, m) in metrics.iter().enumerate() {
        let path = format!("spec.metrics[{i}]");
        if m.name.is_empty() {
            out.push((format!("{path}.name"), "Required value: metric name".into()));
        } else if !names.insert(m.name.as_str()) {
            out.push((
                format!("{path}.name"),
                format!("duplicate name '{}'", m.name),
            ));
        }
        for (field, msg) in check_metric(m) {
            out.push((format!("{path}{field}"), msg));
        }
    }
}

/// Argo's `ValidateMetric`, with skein's provider checks and the conditions compiled. The
/// paths are relative to the metric (`.successCondition`).
pub fn check_metric(m: &Metric) -> Vec<Problem> {
    let mut out: Vec<Problem> = Vec::new();
    let int = |field: &str, v: &Option<IntOrString>, out: &mut Vec<Problem>| match v {
        None => Some(0),
        Some(v) => match int_value(v) {
            Ok(n) => n,
            Err(e) => {
                out.push((format!(".{field}"), e));
                None
            }
        },
    };
    let count = int("count", &m.count, &mut out);
    let failure = int("failureLimit", &m.failure_limit, &mut out);
    let success = int(
        "consecutiveSuccessLimit",
        &m.consecutive_success_limit,
        &mut out,
    );
    let inconclusive = int("inconclusiveLimit", &m.inconclusive_limit, &mut out);
    let errors = int(
        "consecutiveErrorLimit",
        &m.consecutive_error_limit,
        &mut out,
    );
    if success.is_some_and(|s| s < 0) {
        out.push((
            ".consecutiveSuccessLimit".into(),
            "consecutiveSuccessLimit must be >= 0".into(),
        ));
    }
    if failure.is_some_and(|f| f < -1) {
        out.push((
            ".failureLimit".into(),
            "failureLimit must be >= 0, or -1 to be disabled".into(),
        ));
    }
    if success == Some(0) && failure == Some(-1) {
        out.push((
            ".failureLimit".into(),
            "failureLimit and consecutiveSuccessLimit cannot both be disabled".into(),
        ));
    }
    if inconclusive.is_some_and(|n| n < 0) {
        out.push((
            ".inconclusiveLimit".into(),
            "inconclusiveLimit must be >= 0".into(),
        ));
    }
    if errors.is_some_and(|n| n < 0) {
        out.push((
            ".consecutiveErrorLimit".into(),
            "consecutiveErrorLimit must be >= 0".into(),
        ));
    }
    if let (Some(count), Some(failure), Some(success), Some(inconclusive)) =
        (count, failure, success, inconclusive)
        && count > 0
    {
        if success >= 0 && failure >= 0 && count < failure + success {
            out.push((
                ".count".into(),
                format!(
                    "count ({count}) must be >= failureLimit + consecutiveSuccessLimit ({failure} + {success}) if both >= 0"
                ),
            ));
        } else if success >= 0 && failure < 0 && count < success {
            out.push((
                ".count".into(),
                "count must be >= consecutiveSuccessLimit".into(),
            ));
        }
        if count < inconclusive {
            out.push((".count".into(), "count must be >= inconclusiveLimit".into()));
        }
    }
    let no_interval = m.interval.as_deref().is_none_or(str::is_empty);
    if count.is_some_and(|c| c > 1) && no_interval {
        out.push((
            ".interval".into(),
            "interval must be specified when count > 1".into(),
        ));
    }
    if let Err(e) = duration_value(m.interval.as_deref()) {
        out.push((".interval".into(), format!("invalid interval string: {e}")));
    }
    if let Err(e) = duration_value(m.initial_delay.as_deref()) {
        out.push((
            ".initialDelay".into(),
            format!("invalid startDelay string: {e}"),
        ));
    }
    for (field, cond) in [
        ("successCondition", &m.success_condition),
        ("failureCondition", &m.failure_condition),
    ] {
        if let Some(c) = cond
            .as_deref()
            .filter(|c| !c.is_empty() && !has_placeholder(c))
            && let Err(e) = expr::Program::compile(c)
        {
            out.push((format!(".{field}"), format!("{field} {c:?}: {e}")));
        }
    }
    let providers = m.provider.names();
    match providers.as_slice() {
        [] => out.push((".provider".into(), "no provider specified".into())),
        ["prometheus"] => {}
        [one] => out.push((
            format!(".provider.{one}"),
            format!(
                "provider {one} is not supported by skein: use provider.prometheus (address, query)"
            ),
        )),
        _ => out.push((".provider".into(), "multiple providers specified".into())),
    }
    if let Some(p) = &m.provider.prometheus {
        if p.query.trim().is_empty() {
            out.push((
                ".provider.prometheus.query".into(),
                "Required value: a PromQL query".into(),
            ));
        }
        if let Some(a) = p.address.as_deref().filter(|a| !has_placeholder(a))
            && let Err(e) = parse_address(a)
        {
            out.push((".provider.prometheus.address".into(), e));
        }
        if p.timeout.is_some_and(|t| t < 0) {
            out.push((
                ".provider.prometheus.timeout".into(),
                "prometheus timeout should not be negative".into(),
            ));
        }
        if !p.headers.is_empty() {
            out.push((
                ".provider.prometheus.headers".into(),
                "headers are not supported by skein's Prometheus client".into(),
            ));
        }
        if p.range_query.is_some() {
            out.push((
                ".provider.prometheus.rangeQuery".into(),
                "rangeQuery is not supported by skein: use an instant query (the result is the vector's values)".into(),
            ));
        }
        if p.authentication
            .as_ref()
            .is_some_and(|a| a.as_object().is_some_and(|o| !o.is_empty()))
        {
            out.push((
                ".provider.prometheus.authentication".into(),
                "authentication (sigv4, oauth2, basicAuth) is not supported by skein".into(),
            ));
        }
    }
    out
}

/// A Prometheus address: `http://HOST:PORT` with an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub host: String,
    pub port: u16,
    /// Empty or `/prefix` without a trailing slash.
    pub prefix: String,
}

/// Parses `address` as Argo's Prometheus provider takes it (an http URL), with a clear error.
pub fn parse_address(address: &str) -> Result<Address, String> {
    let bad = |why: &str| format!("prometheus address {address:?} is not http://HOST:PORT: {why}");
    let rest = if let Some(r) = address.strip_prefix("http://") {
        r
    } else if address.starts_with("https://") {
        return Err(bad("https is not supported by skein's Prometheus client"));
    } else {
        return Err(bad("prometheus address is not is url format"));
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if hostport.contains('@') {
        return Err(bad("credentials in the URL are not supported"));
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        match v6.split_once("]:") {
            Some((h, p)) => (h, Some(p)),
            None => (v6.trim_end_matches(']'), None),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        None => 80,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| bad("the port is not a number"))?,
    };
    if path.contains(['?', '#']) {
        return Err(bad("a query or fragment is not allowed"));
    }
    Ok(Address {
        host: host.to_ascii_lowercase(),
        port,
        prefix: path.trim_end_matches('/').to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(yaml: &str) -> Metric {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn argo_limits_and_counts_are_checked_with_argos_messages() {
        let m = metric("name: a\ncount: 3\nprovider: {prometheus: {query: up}}\n");
        assert_eq!(
            check_metric(&m),
            [(
                ".interval".to_string(),
                "interval must be specified when count > 1".to_string()
            )]
        );
        let m = metric(
            "name: a\ninterval: 1m\ncount: 2\nfailureLimit: 3\nprovider: {prometheus: {query: up}}\n",
        );
        assert_eq!(
            check_metric(&m)[0].1,
            "count (2) must be >= failureLimit + consecutiveSuccessLimit (3 + 0) if both >= 0"
        );
        let m = metric("name: a\nfailureLimit: -1\nprovider: {prometheus: {query: up}}\n");
        assert_eq!(
            check_metric(&m)[0].1,
            "failureLimit and consecutiveSuccessLimit cannot both be disabled"
        );
        let m = metric("name: a\ninterval: 5x\nprovider: {prometheus: {query: up}}\n");
        assert!(
            check_metric(&m)[0]
                .1
                .starts_with("invalid interval string: ")
        );
        let m = metric(
            "name: a\ncount: '{{args.n}}'\ninterval: '{{args.i}}'\nprovider: {prometheus: {query: up}}\n",
        );
        assert!(check_metric(&m).is_empty());
    }

    #[test]
    fn providers_and_conditions_are_checked() {
        let m = metric("name: a\nprovider: {web: {url: 'http://x'}}\n");
        assert_eq!(check_metric(&m)[0].0, ".provider.web");
        let m = metric("name: a\nprovider: {}\n");
        assert_eq!(check_metric(&m)[0].1, "no provider specified");
        let m = metric(
            "name: a\nsuccessCondition: result[0] >=\nprovider: {prometheus: {query: up}}\n",
        );
        assert_eq!(
            check_metric(&m),
            [(
                ".successCondition".to_string(),
                "successCondition \"result[0] >=\": unexpected end of expression (1:13)"
                    .to_string()
            )]
        );
        let m = metric(
            "name: a\nsuccessCondition: 'result[0] >= {{args.min}}'\nprovider: {prometheus: {query: up}}\n",
        );
        assert!(check_metric(&m).is_empty());
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(
            parse_address("http://prometheus.istio-system.svc:9090"),
            Ok(Address {
                host: "prometheus.istio-system.svc".into(),
                port: 9090,
                prefix: String::new()
            })
        );
        assert_eq!(
            parse_address("http://127.0.0.1:9/prom/").unwrap().prefix,
            "/prom"
        );
        assert_eq!(parse_address("http://[::1]:9").unwrap().host, "::1");
        assert!(parse_address("prometheus:9090").is_err());
        assert!(parse_address("https://p:9090").is_err());
        assert!(parse_address("http://p:99999").is_err());
    }

    #[test]
    fn problems_are_reported_at_their_file_and_line() {
        let text = "apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: success-rate, namespace: blog-system}
spec:
  args: [{name: service-name}]
  metrics:
  - name: success-rate
    interval: 1m
    successCondition: result[0] >= 0.95 &&
    provider:
      prometheus:
        address: http://prometheus.istio-system.svc:9090
        query: sum(irate(istio_requests_total{destination_service=~\"{{args.service-name}}\"}[1m]))
  - provider: {datadog: {query: x}}
---
apiVersion: argoproj.io/v1alpha1
kind: ClusterAnalysisTemplate
metadata: {name: shared}
spec:
  metrics: [{name: up, provider: {prometheus: {query: up}}}]
";
        let m = crate::load_str("t.yaml", text).unwrap();
        let got: Vec<String> = crate::validate(&m).iter().map(|d| d.to_string()).collect();
        assert_eq!(
            got,
            [
                "t.yaml:9: error: AnalysisTemplate blog-system/success-rate: spec.metrics[0].successCondition: successCondition \"result[0] >= 0.95 &&\": unexpected end of expression (1:21)",
                "t.yaml:14: error: AnalysisTemplate blog-system/success-rate: spec.metrics[1].name: Required value: metric name",
                "t.yaml:14: error: AnalysisTemplate blog-system/success-rate: spec.metrics[1].provider.datadog: provider datadog is not supported by skein: use provider.prometheus (address, query)",
            ]
        );
        let cat = m
            .get::<ClusterAnalysisTemplate>("anywhere", "shared")
            .unwrap();
        assert_eq!(cat.spec.metrics[0].name, "up");
        assert_eq!(m.documents[1].resource.namespace(), "");
    }

    #[test]
    fn runs_need_metrics_and_args_one_value() {
        let spec: AnalysisRunSpec = serde_norway::from_str(
            "args: [{name: a, value: x, valueFrom: {secretKeyRef: {name: s, key: k}}}]\n",
        )
        .unwrap();
        let p = check_run(&spec);
        assert_eq!(p[0].1, "no metrics specified");
        assert_eq!(p[1].1, "arg a has both Value and ValueFrom fields");
    }
}
