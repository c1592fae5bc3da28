//! What a proxy reports and how: Istio's Telemetry resources (workload > namespace > root
//! namespace) and the mesh config (`istio` ConfigMap in istio-system), resolved by the control
//! plane for one workload. Every default is Istio's, so an empty section behaves as a stock
//! Istio install with the mesh config's defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The `telemetry` section of a [`crate::Snapshot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Telemetry {
    pub access_log: AccessLog,
    pub metrics: Metrics,
    pub tracing: Tracing,
}

/// Which side of the proxy a rule applies to (Telemetry `match.mode`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct PerMode<T> {
    /// Outbound traffic (the proxy is the client; `reporter="source"`).
    pub client: T,
    /// Inbound traffic (the proxy is the server; `reporter="destination"`).
    pub server: T,
}

// === Access log ===

/// MeshConfig `accessLogFile`/`accessLogEncoding`/`accessLogFormat` and Telemetry
/// `accessLogging`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct AccessLog {
    /// MeshConfig `accessLogFile`: `""` writes no log (Istio's default), `/dev/stdout` the
    /// proxy's standard output, anything else a file path.
    pub file: String,
    /// MeshConfig `accessLogEncoding`.
    pub encoding: AccessLogEncoding,
    /// MeshConfig `accessLogFormat` (Envoy command operators); empty = Istio's default format.
    pub format: String,
    /// JSON keys -> Envoy command operators (an `envoyFileAccessLog` provider's
    /// `logFormat.labels`); empty with `encoding: JSON` = Istio's default JSON keys.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub json_format: BTreeMap<String, String>,
    /// Telemetry `accessLogging`, per direction. `None` = no Telemetry says anything: the
    /// mesh config alone decides (log everything when `file` is set).
    pub rules: PerMode<Option<AccessLogRule>>,
}

/// MeshConfig `accessLogEncoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessLogEncoding {
    #[default]
    Text,
    Json,
}

/// One direction's Telemetry `accessLogging` entry, after precedence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct AccessLogRule {
    /// `disabled: true`, or no provider that writes the Envoy log.
    pub disabled: bool,
    /// `filter.expression` (CEL), e.g. `response.code >= 400`; empty logs every request.
    pub filter: String,
}

// === Metrics ===

/// Telemetry `metrics`, per direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Metrics {
    /// `overrides` in the order they apply (mesh, then namespace, then workload).
    pub overrides: PerMode<Vec<MetricOverride>>,
    /// `reportingInterval` in milliseconds: how often open TCP connections report their
    /// byte counters (Istio's default 5 s).
    pub reporting_interval_ms: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            overrides: PerMode::default(),
            reporting_interval_ms: 5_000,
        }
    }
}

/// One `overrides[]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct MetricOverride {
    /// Istio metric name without the `istio_` prefix and suffixes (`requests`,
    /// `request_duration_milliseconds`, `request_bytes`, `response_bytes`,
    /// `tcp_connections_opened`, `tcp_connections_closed`, `tcp_sent_bytes`,
    /// `tcp_received_bytes`, `request_messages`, `response_messages`); `None` = every metric.
    pub metric: Option<String>,
    /// `disabled: true`: the metric is not exported.
    pub disabled: bool,
    /// `tagOverrides`, by label name.
    pub tags: BTreeMap<String, TagOverride>,
}

/// One `tagOverrides` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "operation", content = "value")]
pub enum TagOverride {
    /// `REMOVE`: the label is dropped.
    Remove,
    /// `UPSERT` with its CEL `value` (e.g. `request.headers['x']`, `request.host`, `'literal'`).
    Upsert(String),
}

// === Tracing ===

/// MeshConfig `enableTracing`, `defaultConfig.tracing`, `extensionProviders` and Telemetry
/// `tracing`, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tracing {
    /// MeshConfig `enableTracing` (default true) and a provider to report to.
    pub enabled: bool,
    /// Where spans go; `None` = nowhere (propagation still happens).
    pub provider: Option<TracingProvider>,
    /// Percentage of requests without an incoming decision that are sampled, per direction
    /// (Telemetry > `defaultConfig.tracing.sampling` > Istio's 1 %).
    pub sampling: PerMode<f64>,
    /// `disableSpanReporting`, per direction.
    pub disable_span_reporting: PerMode<bool>,
    /// `customTags`, per direction.
    pub custom_tags: PerMode<BTreeMap<String, CustomTag>>,
    /// `useRequestIdForTraceSampling` (default true).
    pub use_request_id_for_sampling: bool,
    /// `enableIstioTags` (default true): the `istio.*` span tags.
    pub istio_tags: bool,
    /// The Zipkin `localEndpoint.serviceName` (Istio's default `<app>.<namespace>`).
    pub service_name: String,
    /// `istio.mesh_id` (MeshConfig `meshId`, or `trustDomain`'s default).
    pub mesh_id: String,
    /// `defaultConfig.tracing.maxPathTagLength` (default 256).
    pub max_path_tag_length: u32,
}

impl Default for Tracing {
    fn default() -> Self {
        Tracing {
            enabled: true,
            provider: None,
            sampling: PerMode {
                client: 1.0,
                server: 1.0,
            },
            disable_span_reporting: PerMode::default(),
            custom_tags: PerMode::default(),
            use_request_id_for_sampling: true,
            istio_tags: true,
            service_name: String::new(),
            mesh_id: String::new(),
            max_path_tag_length: 256,
        }
    }
}

/// A tracing backend (MeshConfig `defaultConfig.tracing.zipkin` or an `extensionProviders`
/// entry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TracingProvider {
    /// Zipkin v2 JSON, `POST http://{address}/api/v2/spans`.
    Zipkin {
        /// `host:port`, e.g. `jaeger-collector.istio-system.svc:9411`.
        address: String,
        /// The provider's `maxTagLength` (0 = Envoy's default).
        #[serde(default)]
        max_tag_length: u32,
    },
    /// OTLP/HTTP protobuf, `POST http://{address}{path}` (path default `/v1/traces`).
    OpenTelemetry {
        address: String,
        #[serde(default = "default_otlp_path")]
        path: String,
        /// Extra request headers (`http.headers`).
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
}

fn default_otlp_path() -> String {
    "/v1/traces".into()
}

/// Telemetry `customTags` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum CustomTag {
    Literal {
        value: String,
    },
    /// From the proxy's environment.
    Environment {
        name: String,
        #[serde(default)]
        default_value: String,
    },
    /// From a request header.
    Header {
        name: String,
        #[serde(default)]
        default_value: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_is_istios_defaults() {
        let t: Telemetry = serde_json::from_str("{}").expect("parse");
        assert_eq!(
            t.access_log.file, "",
            "Istio writes no access log by default"
        );
        assert_eq!(t.metrics.reporting_interval_ms, 5_000);
        assert!(t.tracing.enabled);
        assert_eq!(t.tracing.sampling.client, 1.0);
        assert_eq!(t.tracing.sampling.server, 1.0);
        assert!(t.tracing.provider.is_none());
        assert!(t.tracing.use_request_id_for_sampling);
    }

    #[test]
    fn overrides_and_providers_round_trip() {
        let mut t = Telemetry::default();
        t.metrics.overrides.client.push(MetricOverride {
            metric: Some("requests".into()),
            disabled: false,
            tags: BTreeMap::from([
                (
                    "request_host".into(),
                    TagOverride::Upsert("request.host".into()),
                ),
                ("destination_port".into(), TagOverride::Remove),
            ]),
        });
        t.tracing.provider = Some(TracingProvider::Zipkin {
            address: "jaeger-collector.istio-system.svc:9411".into(),
            max_tag_length: 0,
        });
        let json = serde_json::to_string(&t).expect("serialize");
        let back: Telemetry = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, t);
    }
}
