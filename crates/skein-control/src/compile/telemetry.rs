//! Telemetry resources and the mesh config -> one proxy's `telemetry` section, with Istio's
//! rules (pilot `model/telemetry.go`, `telemetry_logging.go`, `networking/core/tracing.go`):
//!
//! - Scope: the root namespace's selector-less Telemetry (mesh), the pod's namespace's
//!   selector-less one, then one that selects the pod (`selector`, or `targetRefs` naming
//!   its Gateway) — applied in that order, the deeper overriding.
//! - Tracing, per mode: providers, `randomSamplingPercentage`, `disableSpanReporting`,
//!   `useRequestIdForTraceSampling` and `customTags` (a non-empty set replaces the
//!   parent's) are each overridden by a deeper level. The provider is looked up by name in
//!   `extensionProviders`, else `defaultProviders.tracing`, else (no Telemetry names one)
//!   the mesh config's `defaultConfig.tracing.zipkin`. Sampling: Telemetry >
//!   `defaultConfig.tracing.sampling` > 1 %.
//! - Access logging, per mode: with no Telemetry `accessLogging` and no
//!   `defaultProviders.accessLogging`, the mesh config's `accessLogFile` decides alone.
//!   Otherwise each entry's providers (else its parent's, else the defaults) get its filter,
//!   or are removed by `disabled`; the providers in scope are those of the deepest entry
//!   that names some. The log is on when an `envoyFileAccessLog` provider remains; the
//!   built-in `envoy` provider without a `logFormat` takes the mesh config's encoding and
//!   format.
//! - Metrics: `overrides` appended mesh -> namespace -> workload, each to the modes its
//!   `match.mode` names; `reportingInterval` from the deepest level that sets it.

use std::collections::BTreeMap;

use skein_api::mesh::{ExtensionProvider, MeshConfig};
use skein_api::telemetry as api;
use skein_snapshot::telemetry as snap;

use super::ROOT_NAMESPACE;
use crate::registry::Pod;

/// The Telemetry resources that apply to a pod, mesh first.
pub(super) fn applicable<'a>(
    telemetries: &[&'a api::Telemetry],
    p: &Pod,
) -> Vec<&'a api::TelemetrySpec> {
    let selectorless = |t: &&&api::Telemetry| {
        t.spec.selector.is_none() && t.spec.target_ref.is_none() && t.spec.target_refs.is_empty()
    };
    fn in_ns<'t, 'a>(
        telemetries: &'t [&'a api::Telemetry],
        ns: &'t str,
    ) -> impl Iterator<Item = &'t &'a api::Telemetry> {
        telemetries
            .iter()
            .filter(move |t| t.metadata.namespace_or_default() == ns)
    }
    let mut out = Vec::new();
    if let Some(t) = in_ns(telemetries, ROOT_NAMESPACE).find(selectorless) {
        out.push(&t.spec);
    }
    if p.namespace != ROOT_NAMESPACE
        && let Some(t) = in_ns(telemetries, &p.namespace).find(selectorless)
    {
        out.push(&t.spec);
    }
    let gateway_name = p
        .labels
        .get("gateway.networking.k8s.io/gateway-name")
        .unwrap_or(&p.workload);
    let selects = |t: &&&api::Telemetry| {
        if let Some(s) = &t.spec.selector {
            return !s.match_labels.is_empty() && p.has_labels(&s.match_labels);
        }
        t.spec
            .target_ref
            .iter()
            .chain(&t.spec.target_refs)
            .any(|r| r.kind == "Gateway" && &r.name == gateway_name)
    };
    if let Some(t) = in_ns(telemetries, &p.namespace).find(selects) {
        out.push(&t.spec);
    }
    out
}

fn mode_applies(m: &Option<api::WorkloadModeSelector>, client: bool) -> bool {
    match m.as_ref().and_then(|m| m.mode) {
        None | Some(api::WorkloadMode::ClientAndServer) => true,
        Some(api::WorkloadMode::Client) => client,
        Some(api::WorkloadMode::Server) => !client,
    }
}

fn names(p: &[api::ProviderRef]) -> Vec<String> {
    p.iter().map(|r| r.name.clone()).collect()
}

/// The `telemetry` section for pod `p`.
pub(super) fn resolve(
    mesh: &MeshConfig,
    specs: &[&api::TelemetrySpec],
    p: &Pod,
) -> snap::Telemetry {
    let providers = mesh.providers();
    let provider = |name: &str| providers.iter().find(|x| x.name == name);
    snap::Telemetry {
        access_log: access_log(mesh, specs, &provider),
        metrics: metrics(specs),
        tracing: tracing(mesh, specs, p, &provider),
    }
}

// === Access log ===

/// One direction's resolved providers: name -> filter.
fn logging_providers(
    mesh: &MeshConfig,
    specs: &[&api::TelemetrySpec],
    client: bool,
) -> Option<BTreeMap<String, String>> {
    let entries: Vec<&api::AccessLogging> = specs
        .iter()
        .flat_map(|s| &s.access_logging)
        .filter(|a| mode_applies(&a.match_, client))
        .collect();
    let defaults = &mesh.default_providers.access_logging;
    if entries.is_empty() && defaults.is_empty() {
        return None;
    }
    let mut out = BTreeMap::new();
    if entries.is_empty() {
        for d in defaults {
            out.insert(d.clone(), String::new());
        }
        return Some(out);
    }
    let in_scope = entries
        .iter()
        .rev()
        .map(|e| names(&e.providers))
        .find(|n| !n.is_empty())
        .unwrap_or_else(|| defaults.clone());
    let mut parent = defaults.clone();
    for e in entries {
        let mut here = names(&e.providers);
        if here.is_empty() {
            here = parent.clone();
        }
        parent = here.clone();
        for name in here.into_iter().filter(|n| in_scope.contains(n)) {
            if e.disabled == Some(true) {
                out.remove(&name);
            } else {
                let filter = e.filter.as_ref().map(|f| f.expression.clone());
                out.insert(name, filter.unwrap_or_default());
            }
        }
    }
    Some(out)
}

fn access_log<'a>(
    mesh: &MeshConfig,
    specs: &[&api::TelemetrySpec],
    provider: &dyn Fn(&str) -> Option<&'a ExtensionProvider>,
) -> snap::AccessLog {
    let mut log = snap::AccessLog {
        file: mesh.access_log_file.clone(),
        encoding: encoding(mesh.access_log_encoding),
        format: mesh.access_log_format.clone(),
        ..Default::default()
    };
    let mut file_set = false;
    let mut rule = |client: bool, log: &mut snap::AccessLog| -> Option<snap::AccessLogRule> {
        let resolved = logging_providers(mesh, specs, client)?;
        // The first provider that writes Envoy's file log.
        let found = resolved.iter().find_map(|(name, filter)| {
            let p = provider(name)?;
            Some((p, p.envoy_file_access_log.as_ref()?, filter))
        });
        let Some((p, file, filter)) = found else {
            return Some(snap::AccessLogRule {
                disabled: true,
                filter: String::new(),
            });
        };
        if !file_set {
            file_set = true;
            log.file = file.path.clone();
            match &file.log_format {
                Some(f) if f.labels.is_some() => {
                    log.encoding = snap::AccessLogEncoding::Json;
                    log.format = String::new();
                    log.json_format = f.labels.clone().unwrap_or_default();
                }
                Some(f) => {
                    log.encoding = snap::AccessLogEncoding::Text;
                    log.format = f.text.clone().unwrap_or_default();
                }
                // The built-in provider without a format takes the mesh config's.
                None if p.name == "envoy"
                    && !mesh.extension_providers.iter().any(|x| x.name == "envoy") => {}
                None => {
                    log.encoding = snap::AccessLogEncoding::Text;
                    log.format = String::new();
                }
            }
        }
        Some(snap::AccessLogRule {
            disabled: false,
            filter: filter.clone(),
        })
    };
    let client = rule(true, &mut log);
    let server = rule(false, &mut log);
    log.rules = snap::PerMode { client, server };
    log
}

fn encoding(e: skein_api::mesh::AccessLogEncoding) -> snap::AccessLogEncoding {
    match e {
        skein_api::mesh::AccessLogEncoding::Text => snap::AccessLogEncoding::Text,
        skein_api::mesh::AccessLogEncoding::Json => snap::AccessLogEncoding::Json,
    }
}

// === Metrics ===

fn metric_name(m: api::IstioMetric) -> Option<&'static str> {
    use api::IstioMetric::*;
    Some(match m {
        AllMetrics => return None,
        RequestCount => "requests",
        RequestDuration => "request_duration_milliseconds",
        RequestSize => "request_bytes",
        ResponseSize => "response_bytes",
        TcpOpenedConnections => "tcp_connections_opened",
        TcpClosedConnections => "tcp_connections_closed",
        TcpSentBytes => "tcp_sent_bytes",
        TcpReceivedBytes => "tcp_received_bytes",
        GrpcRequestMessages => "request_messages",
        GrpcResponseMessages => "response_messages",
    })
}

fn metrics(specs: &[&api::TelemetrySpec]) -> snap::Metrics {
    let mut out = snap::Metrics::default();
    for spec in specs {
        for m in &spec.metrics {
            // Only the Prometheus provider is implemented; a block for another provider
            // does not change it.
            let ps = names(&m.providers);
            if !ps.is_empty() && !ps.iter().any(|p| p == "prometheus") {
                continue;
            }
            if let Some(d) = &m.reporting_interval {
                out.reporting_interval_ms = d.get().as_millis().try_into().unwrap_or(u64::MAX);
            }
            for o in &m.overrides {
                let sel = o.match_.clone().unwrap_or_default();
                let metric = match (&sel.custom_metric, sel.metric) {
                    (Some(c), _) => Some(c.clone()),
                    (None, Some(m)) => metric_name(m).map(str::to_string),
                    (None, None) => None,
                };
                let tags = o
                    .tag_overrides
                    .iter()
                    .map(|(k, t)| {
                        let op = match t.operation {
                            Some(api::TagOperation::Remove) => snap::TagOverride::Remove,
                            _ => snap::TagOverride::Upsert(t.value.clone().unwrap_or_default()),
                        };
                        (k.clone(), op)
                    })
                    .collect();
                let entry = snap::MetricOverride {
                    metric,
                    disabled: o.disabled.unwrap_or(false),
                    tags,
                };
                let mode = sel.mode.unwrap_or(api::WorkloadMode::ClientAndServer);
                if mode != api::WorkloadMode::Server {
                    out.overrides.client.push(entry.clone());
                }
                if mode != api::WorkloadMode::Client {
                    out.overrides.server.push(entry);
                }
            }
        }
    }
    out
}

// === Tracing ===

fn tracing<'a>(
    mesh: &MeshConfig,
    specs: &[&api::TelemetrySpec],
    p: &Pod,
    provider: &dyn Fn(&str) -> Option<&'a ExtensionProvider>,
) -> snap::Tracing {
    let default_sampling = mesh.default_sampling().unwrap_or(1.0);
    let mut t = snap::Tracing {
        enabled: mesh.enable_tracing,
        sampling: snap::PerMode {
            client: default_sampling,
            server: default_sampling,
        },
        service_name: service_name(p),
        mesh_id: if mesh.mesh_id.is_empty() {
            mesh.trust_domain.clone()
        } else {
            mesh.mesh_id.clone()
        },
        max_path_tag_length: mesh
            .default_config
            .tracing
            .as_ref()
            .and_then(|t| t.max_path_tag_length)
            .unwrap_or(256),
        ..Default::default()
    };
    let mut provider_names: snap::PerMode<Vec<String>> = snap::PerMode {
        client: mesh.default_providers.tracing.clone(),
        server: mesh.default_providers.tracing.clone(),
    };
    let mut any_telemetry = false;
    for spec in specs {
        for tr in &spec.tracing {
            any_telemetry = true;
            for client in [true, false] {
                if !mode_applies(&tr.match_, client) {
                    continue;
                }
                if !tr.providers.is_empty() {
                    *if client {
                        &mut provider_names.client
                    } else {
                        &mut provider_names.server
                    } = names(&tr.providers);
                }
                if let Some(s) = tr.random_sampling_percentage {
                    *if client {
                        &mut t.sampling.client
                    } else {
                        &mut t.sampling.server
                    } = s;
                }
                if let Some(d) = tr.disable_span_reporting {
                    *if client {
                        &mut t.disable_span_reporting.client
                    } else {
                        &mut t.disable_span_reporting.server
                    } = d;
                }
                if !tr.custom_tags.is_empty() {
                    let tags = custom_tags(&tr.custom_tags);
                    *if client {
                        &mut t.custom_tags.client
                    } else {
                        &mut t.custom_tags.server
                    } = tags;
                }
                if let Some(u) = tr.use_request_id_for_trace_sampling {
                    t.use_request_id_for_sampling = u;
                }
                if let Some(e) = tr.enable_istio_tags {
                    t.istio_tags = e;
                }
            }
        }
    }
    // One provider for the proxy: the server side's, else the client side's.
    let named = provider_names
        .server
        .first()
        .or(provider_names.client.first())
        .and_then(|n| provider(n))
        .and_then(tracing_provider);
    t.provider = match named {
        Some(p) => {
            // A Telemetry that names a provider turns tracing on, as in Istio.
            t.enabled = t.enabled || any_telemetry;
            Some(p)
        }
        None => mesh
            .default_config
            .tracing
            .as_ref()
            .and_then(|x| x.zipkin.as_ref())
            .filter(|z| !z.address.is_empty())
            .map(|z| snap::TracingProvider::Zipkin {
                address: z.address.clone(),
                max_tag_length: 0,
            }),
    };
    if !t.enabled {
        t.provider = None;
    }
    t
}

fn tracing_provider(p: &ExtensionProvider) -> Option<snap::TracingProvider> {
    if let Some(z) = &p.zipkin {
        return Some(snap::TracingProvider::Zipkin {
            address: format!("{}:{}", z.service, z.port),
            max_tag_length: z.max_tag_length,
        });
    }
    let o = p.opentelemetry.as_ref()?;
    let http = o.http.clone().unwrap_or_default();
    Some(snap::TracingProvider::OpenTelemetry {
        address: format!("{}:{}", o.service, o.port),
        path: if http.path.is_empty() {
            "/v1/traces".into()
        } else if http.path.starts_with('/') {
            http.path
        } else {
            format!("/{}", http.path)
        },
        headers: http
            .headers
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect(),
    })
}

fn custom_tags(tags: &BTreeMap<String, api::CustomTag>) -> BTreeMap<String, snap::CustomTag> {
    tags.iter()
        .filter_map(|(k, v)| {
            let tag = if let Some(l) = &v.literal {
                snap::CustomTag::Literal {
                    value: l.value.clone(),
                }
            } else if let Some(e) = &v.environment {
                snap::CustomTag::Environment {
                    name: e.name.clone(),
                    default_value: e.default_value.clone().unwrap_or_default(),
                }
            } else {
                let h = v.header.as_ref()?;
                snap::CustomTag::Header {
                    name: h.name.clone(),
                    default_value: h.default_value.clone().unwrap_or_default(),
                }
            };
            Some((k.clone(), tag))
        })
        .collect()
}

/// Istio's `APP_LABEL_AND_NAMESPACE`: `<app label>.<namespace>` (the canonical service
/// name when there is no `app` label).
fn service_name(p: &Pod) -> String {
    let app = p
        .labels
        .get("app")
        .or_else(|| p.labels.get("service.istio.io/canonical-name"))
        .or_else(|| p.labels.get("app.kubernetes.io/name"))
        .unwrap_or(&p.workload);
    format!("{app}.{}", p.namespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::fixtures::pod;

    const MESH: &str = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    accessLogFile: /dev/stdout
    accessLogEncoding: JSON
    enableTracing: true
    defaultConfig:
      tracing:
        sampling: 10
        zipkin:
          address: jaeger-collector.istio-system.svc:9411
    extensionProviders:
    - name: otel
      opentelemetry:
        service: otel.istio-system.svc
        port: 4318
        http: {path: v1/traces, headers: [{name: x-tenant, value: blog}]}
    - name: text-log
      envoyFileAccessLog:
        path: /var/log/a.log
        logFormat: {text: '%RESPONSE_CODE%'}
    meshId: blog-mesh
";

    fn resolve_for(yaml: &str, labels: &[(&str, &str)]) -> snap::Telemetry {
        let m = skein_api::load_str("t.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
        let mesh = skein_api::mesh::mesh_config(&m)
            .unwrap()
            .unwrap_or_default();
        let all: Vec<&api::Telemetry> = m.telemetries().collect();
        let p = pod("was-1", labels, "127.9.1.3", ("http", 8080), "sidecar");
        let specs = applicable(&all, &p);
        resolve(&mesh, &specs, &p)
    }

    fn tel(ns: &str, name: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
        )
    }

    #[test]
    fn mesh_config_alone() {
        let t = resolve_for(MESH, &[("app", "was")]);
        assert_eq!(t.access_log.file, "/dev/stdout");
        assert_eq!(t.access_log.encoding, snap::AccessLogEncoding::Json);
        assert_eq!(
            t.access_log.rules.client, None,
            "no Telemetry: the mesh config decides"
        );
        assert!(t.tracing.enabled);
        assert_eq!(t.tracing.sampling.client, 10.0);
        assert_eq!(
            t.tracing.provider,
            Some(snap::TracingProvider::Zipkin {
                address: "jaeger-collector.istio-system.svc:9411".into(),
                max_tag_length: 0
            })
        );
        assert_eq!(t.tracing.service_name, "was.blog-system");
        assert_eq!(t.tracing.mesh_id, "blog-mesh");
        // No mesh config at all: Istio's defaults.
        let t = resolve_for(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
            &[],
        );
        assert_eq!(t.access_log.file, "");
        assert_eq!(t.tracing.sampling.server, 1.0);
        assert_eq!(t.tracing.provider, None);
        assert_eq!(t.tracing.mesh_id, "cluster.local");
        assert_eq!(t.tracing.service_name, "was.blog-system");
    }

    #[test]
    fn tracing_precedence_workload_over_namespace_over_mesh() {
        let yaml = [
            MESH.to_string(),
            tel(
                "istio-system",
                "mesh-default",
                "  tracing:\n  - randomSamplingPercentage: 100\n    customTags: {env: {literal: {value: prod}}}\n",
            ),
            tel(
                "blog-system",
                "ns",
                "  tracing:\n  - match: {mode: CLIENT}\n    randomSamplingPercentage: 50\n    providers: [{name: otel}]\n",
            ),
            tel(
                "blog-system",
                "was",
                "  selector: {matchLabels: {app: was}}\n  tracing:\n  - match: {mode: SERVER}\n    disableSpanReporting: true\n    customTags: {user: {header: {name: x-user, defaultValue: anon}}}\n",
            ),
            tel(
                "blog-system",
                "other",
                "  selector: {matchLabels: {app: web}}\n  tracing:\n  - randomSamplingPercentage: 0\n",
            ),
        ]
        .concat();
        let t = resolve_for(&yaml, &[("app", "was")]);
        assert_eq!(
            t.tracing.sampling.server, 100.0,
            "mesh Telemetry over the mesh config"
        );
        assert_eq!(
            t.tracing.sampling.client, 50.0,
            "namespace over mesh, CLIENT only"
        );
        assert!(t.tracing.disable_span_reporting.server);
        assert!(!t.tracing.disable_span_reporting.client);
        // customTags replace the parent's, per mode.
        assert_eq!(
            t.tracing.custom_tags.client.keys().collect::<Vec<_>>(),
            vec!["env"]
        );
        assert_eq!(
            t.tracing.custom_tags.server.get("user"),
            Some(&snap::CustomTag::Header {
                name: "x-user".into(),
                default_value: "anon".into()
            })
        );
        assert!(!t.tracing.custom_tags.server.contains_key("env"));
        // The client side names otel; the server side keeps the mesh config's Zipkin, and
        // the snapshot has one provider: the server's when it has one named.
        assert_eq!(
            t.tracing.provider,
            Some(snap::TracingProvider::OpenTelemetry {
                address: "otel.istio-system.svc:4318".into(),
                path: "/v1/traces".into(),
                headers: BTreeMap::from([("x-tenant".into(), "blog".into())]),
            })
        );
        // A pod the workload Telemetry does not select.
        let t = resolve_for(&yaml, &[("app", "other")]);
        assert!(!t.tracing.disable_span_reporting.server);
        assert_eq!(t.tracing.sampling.server, 100.0);
    }

    #[test]
    fn access_logging_filter_disabled_and_providers() {
        let filter = tel(
            "blog-system",
            "errors",
            "  accessLogging:\n  - providers: [{name: envoy}]\n    filter: {expression: 'response.code >= 400'}\n",
        );
        let t = resolve_for(&[MESH.to_string(), filter.clone()].concat(), &[]);
        let rule = t.access_log.rules.server.clone().unwrap();
        assert!(!rule.disabled);
        assert_eq!(rule.filter, "response.code >= 400");
        assert_eq!(t.access_log.rules.client, t.access_log.rules.server);
        // The built-in envoy provider writes to stdout with the mesh config's encoding.
        assert_eq!(t.access_log.file, "/dev/stdout");
        assert_eq!(t.access_log.encoding, snap::AccessLogEncoding::Json);

        // A workload disables its SERVER side.
        let off = tel(
            "blog-system",
            "was-off",
            "  selector: {matchLabels: {app: was}}\n  accessLogging:\n  - match: {mode: SERVER}\n    disabled: true\n",
        );
        let t = resolve_for(
            &[MESH.to_string(), filter.clone(), off].concat(),
            &[("app", "was")],
        );
        assert!(t.access_log.rules.server.unwrap().disabled);
        assert!(!t.access_log.rules.client.unwrap().disabled);

        // A provider with its own format.
        let text = tel(
            "istio-system",
            "mesh",
            "  accessLogging:\n  - providers: [{name: text-log}]\n",
        );
        let t = resolve_for(&[MESH.to_string(), text].concat(), &[]);
        assert_eq!(t.access_log.file, "/var/log/a.log");
        assert_eq!(t.access_log.encoding, snap::AccessLogEncoding::Text);
        assert_eq!(t.access_log.format, "%RESPONSE_CODE%");

        // A Telemetry without providers and no default provider: no log, as in Istio.
        let bare = tel("blog-system", "bare", "  accessLogging:\n  - {}\n");
        let t = resolve_for(&[MESH.to_string(), bare].concat(), &[]);
        assert!(t.access_log.rules.server.unwrap().disabled);
    }

    #[test]
    fn metrics_overrides_append_mesh_namespace_workload() {
        let yaml = [
            MESH.to_string(),
            tel(
                "istio-system",
                "mesh",
                "  metrics:\n  - overrides:\n    - match: {metric: REQUEST_COUNT}\n      tagOverrides: {request_host: {value: request.host}}\n",
            ),
            tel(
                "blog-system",
                "ns",
                "  metrics:\n  - reportingInterval: 10s\n    overrides:\n    - match: {metric: REQUEST_DURATION, mode: CLIENT}\n      disabled: true\n",
            ),
            tel(
                "blog-system",
                "was",
                "  selector: {matchLabels: {app: was}}\n  metrics:\n  - overrides:\n    - tagOverrides: {destination_port: {operation: REMOVE}}\n",
            ),
        ]
        .concat();
        let t = resolve_for(&yaml, &[("app", "was")]);
        let c = &t.metrics.overrides.client;
        let s = &t.metrics.overrides.server;
        assert_eq!(c.len(), 3);
        assert_eq!(
            s.len(),
            2,
            "the CLIENT-only override is not on the server side"
        );
        assert_eq!(c[0].metric.as_deref(), Some("requests"));
        assert_eq!(
            c[0].tags.get("request_host"),
            Some(&snap::TagOverride::Upsert("request.host".into()))
        );
        assert_eq!(
            c[1].metric.as_deref(),
            Some("request_duration_milliseconds")
        );
        assert!(c[1].disabled);
        assert_eq!(c[2].metric, None);
        assert_eq!(
            c[2].tags.get("destination_port"),
            Some(&snap::TagOverride::Remove)
        );
        assert_eq!(t.metrics.reporting_interval_ms, 10_000);
    }
}
