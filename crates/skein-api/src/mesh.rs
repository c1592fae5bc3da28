//! Istio's mesh config: the YAML document in key `mesh` of ConfigMap `istio` in
//! `istio-system`, as istiod reads it (`pkg/config/mesh` `ApplyMeshConfig`): every field is
//! optional and takes Istio's default, unknown fields are ignored (istiod's `ApplyYAML`
//! retries with `DiscardUnknown`), a wrong type is an error. Only the fields skein applies
//! are typed; errors name the `file:line` of the offending line inside the block scalar.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::k8s::ConfigMap;
use crate::{Document, Manifests, Source};

/// Where the mesh config lives.
pub const MESH_CONFIG_NAMESPACE: &str = "istio-system";
/// The ConfigMap's name.
pub const MESH_CONFIG_NAME: &str = "istio";
/// The key holding the YAML document.
pub const MESH_CONFIG_KEY: &str = "mesh";

/// `MeshConfig` (istio/api `mesh/v1alpha1/config.proto`), the fields skein applies.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshConfig {
    /// `""` (Istio's default): no access log; `/dev/stdout`; or a file path.
    pub access_log_file: String,
    pub access_log_encoding: AccessLogEncoding,
    /// Envoy command operators; empty = Istio's default format.
    pub access_log_format: String,
    /// Default true.
    pub enable_tracing: bool,
    pub default_config: ProxyConfig,
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// The user's providers; [`MeshConfig::providers`] adds Istio's built-in ones.
    pub extension_providers: Vec<ExtensionProvider>,
    pub default_providers: DefaultProviders,
    pub mesh_id: String,
    /// Default `cluster.local`.
    pub trust_domain: String,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            access_log_file: String::new(),
            access_log_encoding: AccessLogEncoding::Text,
            access_log_format: String::new(),
            enable_tracing: true,
            default_config: ProxyConfig::default(),
            outbound_traffic_policy: None,
            extension_providers: Vec::new(),
            // Istio's DefaultMeshConfig: metrics go to the built-in `prometheus` provider.
            default_providers: DefaultProviders {
                metrics: vec!["prometheus".into()],
                ..Default::default()
            },
            mesh_id: String::new(),
            trust_domain: "cluster.local".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessLogEncoding {
    #[default]
    Text,
    Json,
}

/// `defaultConfig` (ProxyConfig), the part skein applies.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProxyConfig {
    pub tracing: Option<TracingConfig>,
}

/// `defaultConfig.tracing`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TracingConfig {
    pub zipkin: Option<ZipkinAddress>,
    /// Percent, 0..100; Istio's default 1.0 (values over 100 reset to 1).
    pub sampling: Option<f64>,
    /// Default 256.
    pub max_path_tag_length: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ZipkinAddress {
    /// `host:port`, e.g. `jaeger-collector.istio-system.svc:9411`.
    pub address: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OutboundTrafficPolicy {
    pub mode: Option<crate::networking::OutboundMode>,
}

/// `defaultProviders`: provider names used where a Telemetry names none.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DefaultProviders {
    pub tracing: Vec<String>,
    pub metrics: Vec<String>,
    pub access_logging: Vec<String>,
}

/// One `extensionProviders[]` entry: a name and one provider. Kinds skein does not
/// implement (`stackdriver`, `envoyOtelAls`, `envoyExtAuthzHttp`, ...) are accepted and
/// ignored, as istiod ignores what it does not know.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExtensionProvider {
    pub name: String,
    pub zipkin: Option<ZipkinProvider>,
    pub opentelemetry: Option<OpenTelemetryProvider>,
    pub envoy_file_access_log: Option<EnvoyFileAccessLogProvider>,
    pub prometheus: Option<serde_json::Value>,
}

/// `zipkin{service, port, maxTagLength}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ZipkinProvider {
    pub service: String,
    pub port: u32,
    pub max_tag_length: u32,
}

/// `opentelemetry{service, port, http{path, timeout, headers}}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OpenTelemetryProvider {
    pub service: String,
    pub port: u32,
    pub max_tag_length: u32,
    pub http: Option<HttpService>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpService {
    pub path: String,
    pub timeout: Option<crate::Duration>,
    pub headers: Vec<HttpHeader>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

/// `envoyFileAccessLog{path, logFormat{text | labels}}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvoyFileAccessLogProvider {
    pub path: String,
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LogFormat {
    pub text: Option<String>,
    /// JSON: key -> Envoy command operator.
    pub labels: Option<BTreeMap<String, String>>,
}

impl MeshConfig {
    /// Parses the `mesh` document. `name` and `block_start` place errors: line `n` of `text`
    /// is line `block_start + n - 1` of file `name`.
    pub fn parse(text: &str) -> Result<MeshConfig, (Option<usize>, String)> {
        if text.trim().is_empty() {
            return Ok(MeshConfig::default());
        }
        let de = serde_norway::Deserializer::from_str(text);
        serde_path_to_error::deserialize::<_, Option<MeshConfig>>(de)
            .map(Option::unwrap_or_default)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let line = inner.location().map(|l| l.line());
                let mut msg = inner.to_string();
                if let Some(loc) = inner.location() {
                    let own = format!(" at line {} column {}", loc.line(), loc.column());
                    if let Some(i) = msg.find(&own) {
                        msg.replace_range(i..i + own.len(), "");
                    }
                }
                let msg = msg
                    .strip_prefix(&format!("{path}: "))
                    .map(str::to_string)
                    .unwrap_or(msg)
                    .replace('`', "\"");
                let msg = if path.is_empty() || path == "." {
                    msg
                } else {
                    format!("{path}: {msg}")
                };
                (line, msg)
            })
    }

    /// Every provider by name: the user's `extensionProviders`, and Istio's built-in
    /// `prometheus` and `envoy` (`envoyFileAccessLog` to `/dev/stdout`) unless the user
    /// defines one of the same name.
    pub fn providers(&self) -> Vec<ExtensionProvider> {
        let mut out = self.extension_providers.clone();
        for builtin in [
            ExtensionProvider {
                name: "prometheus".into(),
                prometheus: Some(serde_json::Value::Object(Default::default())),
                ..Default::default()
            },
            ExtensionProvider {
                name: "envoy".into(),
                envoy_file_access_log: Some(EnvoyFileAccessLogProvider {
                    path: "/dev/stdout".into(),
                    log_format: None,
                }),
                ..Default::default()
            },
        ] {
            if !out.iter().any(|p| p.name == builtin.name) {
                out.push(builtin);
            }
        }
        out
    }

    /// `defaultConfig.tracing.sampling`, with Istio's rule that values outside 0..=100
    /// fall back to the default (1 %).
    pub fn default_sampling(&self) -> Option<f64> {
        let s = self.default_config.tracing.as_ref()?.sampling?;
        Some(if (0.0..=100.0).contains(&s) { s } else { 1.0 })
    }
}

/// A mesh config that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: ConfigMap istio-system/istio: data.mesh: {message}")]
pub struct MeshConfigError {
    /// The line inside the block scalar (or of the `mesh:` key when it is not a block).
    pub at: Source,
    pub message: String,
}

/// The mesh config of `manifests`: ConfigMap `istio` in `istio-system`, key `mesh` (the last
/// such ConfigMap wins, as a later apply replaces an earlier one). `Ok(None)` without one:
/// then Istio's defaults apply.
pub fn mesh_config(manifests: &Manifests) -> Result<Option<MeshConfig>, MeshConfigError> {
    let Some((doc, cm)) = mesh_config_map(manifests) else {
        return Ok(None);
    };
    let Some(text) = cm.data.get(MESH_CONFIG_KEY) else {
        return Ok(Some(MeshConfig::default()));
    };
    parse_in(doc, text).map(Some)
}

/// The ConfigMap holding the mesh config, with its document.
pub fn mesh_config_map(manifests: &Manifests) -> Option<(&Document, &ConfigMap)> {
    manifests
        .docs_of::<ConfigMap>()
        .filter(|(_, c)| {
            c.metadata.name == MESH_CONFIG_NAME
                && c.metadata.namespace_or_default() == MESH_CONFIG_NAMESPACE
        })
        .last()
}

fn parse_in(doc: &Document, text: &str) -> Result<MeshConfig, MeshConfigError> {
    let key = format!("data.{MESH_CONFIG_KEY}");
    MeshConfig::parse(text).map_err(|(line, message)| {
        let line = match (doc.lines.block_start(&key), line) {
            (Some(start), Some(n)) => start + n.saturating_sub(1),
            _ => doc.line_of(&key),
        };
        MeshConfigError {
            at: Source {
                file: doc.source.file.clone(),
                line,
            },
            message,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |-
    accessLogFile: /dev/stdout
    enableTracing: true
    defaultConfig:
      discoveryAddress: istiod.istio-system.svc:15012
      tracing:
        zipkin:
          address: jaeger-collector.istio-system.svc:9411
    extensionProviders:
    - name: otel
      opentelemetry:
        service: otel-collector.istio-system.svc.cluster.local
        port: 4318
        http:
          path: /v1/traces
          timeout: 5s
          headers:
          - name: x-tenant
            value: blog
    - name: json-log
      envoyFileAccessLog:
        path: /dev/stdout
        logFormat:
          labels:
            code: '%RESPONSE_CODE%'
    defaultProviders:
      tracing: [otel]
    meshId: blog-mesh
";

    #[test]
    fn reads_the_seed_mesh_config_with_istio_defaults_elsewhere() {
        let m = crate::load_str("mesh.yaml", SEED).unwrap();
        let mc = mesh_config(&m).unwrap().unwrap();
        assert_eq!(mc.access_log_file, "/dev/stdout");
        assert_eq!(mc.access_log_encoding, AccessLogEncoding::Text);
        assert!(mc.enable_tracing);
        let tracing = mc.default_config.tracing.clone().unwrap();
        assert_eq!(
            tracing.zipkin.unwrap().address,
            "jaeger-collector.istio-system.svc:9411"
        );
        assert_eq!(tracing.sampling, None);
        assert_eq!(mc.trust_domain, "cluster.local");
        assert_eq!(mc.mesh_id, "blog-mesh");
        assert_eq!(mc.default_providers.tracing, vec!["otel"]);
        let otel = mc.extension_providers[0].opentelemetry.clone().unwrap();
        assert_eq!(otel.port, 4318);
        let http = otel.http.unwrap();
        assert_eq!(http.path, "/v1/traces");
        assert_eq!(http.headers[0].value, "blog");
        let names: Vec<String> = mc.providers().into_iter().map(|p| p.name).collect();
        assert_eq!(names, vec!["otel", "json-log", "prometheus", "envoy"]);
    }

    #[test]
    fn no_config_map_and_an_empty_document_are_istios_defaults() {
        let m = crate::load_str(
            "x.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
        )
        .unwrap();
        assert_eq!(mesh_config(&m).unwrap(), None);
        let mc = MeshConfig::parse("").unwrap();
        assert_eq!(mc, MeshConfig::default());
        assert!(mc.enable_tracing);
        assert_eq!(mc.access_log_file, "");
        assert_eq!(mc.default_providers.metrics, vec!["prometheus"]);
    }

    #[test]
    fn unknown_fields_are_ignored_as_istiod_does() {
        let mc = MeshConfig::parse(
            "accessLogFile: /dev/stdout\nholdApplicationUntilProxyStarts: true\ndefaultConfig:\n  proxyMetadata: {A: b}\n",
        )
        .unwrap();
        assert_eq!(mc.access_log_file, "/dev/stdout");
    }

    #[test]
    fn a_wrong_type_names_the_line_inside_the_block() {
        let bad = SEED.replace("enableTracing: true", "enableTracing: yes-please");
        let m = crate::load_str("mesh.yaml", &bad).unwrap();
        let err = mesh_config(&m).unwrap_err();
        assert_eq!(err.at.line, 9);
        assert_eq!(
            err.to_string(),
            "mesh.yaml:9: ConfigMap istio-system/istio: data.mesh: enableTracing: invalid type: string \"yes-please\", expected a boolean"
        );
        let bad = SEED.replace("port: 4318", "port: http");
        let m = crate::load_str("mesh.yaml", &bad).unwrap();
        let err = mesh_config(&m).unwrap_err();
        assert_eq!(err.at.line, 19, "{err}");
        assert!(
            err.message
                .starts_with("extensionProviders[0].opentelemetry.port: invalid type"),
            "{err}"
        );
        let bad = SEED.replace("accessLogFile: /dev/stdout", "accessLogEncoding: XML");
        let m = crate::load_str("mesh.yaml", &bad).unwrap();
        let err = mesh_config(&m).unwrap_err();
        assert_eq!(err.at.line, 8, "{err}");
        assert!(err.message.contains("unknown variant \"XML\""), "{err}");
    }

    #[test]
    fn validation_refuses_a_bad_mesh_config_at_its_line() {
        let bad = SEED.replace("enableTracing: true", "enableTracing: [true]");
        let m = crate::load_str("mesh.yaml", &bad).unwrap();
        let errors: Vec<String> = crate::validate(&m)
            .into_iter()
            .filter(|d| d.is_error())
            .map(|d| d.to_string())
            .collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "mesh.yaml:9: error: ConfigMap istio-system/istio: data.mesh: enableTracing: invalid type"
            ),
            "{errors:?}"
        );
        let good = crate::load_str("mesh.yaml", SEED).unwrap();
        assert!(crate::validate(&good).iter().all(|d| !d.is_error()));
    }

    #[test]
    fn an_unknown_access_log_operator_is_refused_at_its_line() {
        let bad = SEED.replace(
            "    enableTracing: true\n",
            "    enableTracing: true\n    accessLogFormat: \"%RESPONSE_CODE% %DYNAMIC_METADATA(x)%\\n\"\n",
        );
        let m = crate::load_str("mesh.yaml", &bad).unwrap();
        let errors: Vec<String> = crate::validate(&m)
            .into_iter()
            .filter(|d| d.is_error())
            .map(|d| d.to_string())
            .collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("mesh.yaml:10: error: ConfigMap istio-system/istio: data.mesh: accessLogFormat: access log format: command operator %DYNAMIC_METADATA(x)% is not supported"),
            "{errors:?}"
        );
        let bad = SEED.replace("code: '%RESPONSE_CODE%'", "code: '%RESPONSE_CODES%'");
        let m = crate::load_str("mesh.yaml", &bad).unwrap();
        let errors: Vec<String> = crate::validate(&m)
            .into_iter()
            .map(|d| d.to_string())
            .collect();
        assert!(
            errors[0].starts_with("mesh.yaml:31: error: ConfigMap istio-system/istio: data.mesh: extensionProviders[1].envoyFileAccessLog.logFormat.labels.code: "),
            "{errors:?}"
        );
    }

    #[test]
    fn a_yaml_syntax_error_inside_the_block_names_its_line() {
        let bad = SEED.replace("    meshId: blog-mesh\n", "    meshId: [blog\n");
        let m = crate::load_str("mesh.yaml", &bad).unwrap();
        let err = mesh_config(&m).unwrap_err();
        assert!(err.at.line >= 34, "{err}");
    }

    #[test]
    fn sampling_over_100_falls_back_to_one_percent() {
        let mc = MeshConfig::parse("defaultConfig: {tracing: {sampling: 250}}").unwrap();
        assert_eq!(mc.default_sampling(), Some(1.0));
        let mc = MeshConfig::parse("defaultConfig: {tracing: {sampling: 12.5}}").unwrap();
        assert_eq!(mc.default_sampling(), Some(12.5));
    }
}
