//! Joining the mesh's traces.
//!
//! * [`headers`]: the trace headers an app copies from the request it serves to the requests
//!   it makes (what Istio asks of every application).
//! * With an OTLP endpoint configured, the app also reports spans of its own over OTLP/HTTP
//!   protobuf ([`Telemetry`]): a SERVER span per request whose parent is the caller's span
//!   (W3C `traceparent`, else B3), and a CLIENT span per SQL statement ([`sql_span`]). The
//!   span of the request served is then the parent named in the requests the app makes
//!   ([`propagation::inject`]).
//!
//! Configuration is OpenTelemetry's environment ([`TraceConfig::from_env`]). Without an
//! endpoint nothing is exported and nothing is spent beyond copying headers. Spans leave
//! through the SDK's batch processor: ending a span is a `try_send` into its bounded queue,
//! and a slow or dead collector only drops spans.

pub mod export;
pub mod headers;
pub mod propagation;
pub mod sql;

use std::borrow::Cow;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Uri;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};

pub use headers::{TRACE_HEADERS, TraceHeaders, copy_trace_headers};

/// Why tracing could not be set up from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("{var}={value:?} is not a usable OTLP/HTTP endpoint: {reason}")]
    Endpoint {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "OTEL_TRACES_SAMPLER={0:?} is not supported; use always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
    )]
    Sampler(String),
    #[error("OTEL_TRACES_SAMPLER_ARG={0:?} is not a ratio between 0 and 1")]
    SamplerArg(String),
    #[error("{var}={value:?} is not a number of milliseconds")]
    Millis { var: &'static str, value: String },
    #[error("HTTP_PROXY={0:?} is not a usable proxy: {1}")]
    Proxy(String, String),
    #[error("span export needs a tokio runtime: {0}")]
    Runtime(String),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

/// The sampler, as `OTEL_TRACES_SAMPLER` names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerKind {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio(f64),
}

impl SamplerKind {
    fn sampler(self) -> Sampler {
        match self {
            SamplerKind::AlwaysOn => Sampler::AlwaysOn,
            SamplerKind::AlwaysOff => Sampler::AlwaysOff,
            SamplerKind::Ratio(r) => Sampler::TraceIdRatioBased(r),
            SamplerKind::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            SamplerKind::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            SamplerKind::ParentBasedRatio(r) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
            }
        }
    }
}

/// Where and how spans are exported.
#[derive(Debug, Clone)]
pub struct TraceConfig {
    /// The full OTLP/HTTP traces URL (`.../v1/traces`).
    pub endpoint: Uri,
    /// OTel `service.name`.
    pub service_name: String,
    pub sampler: SamplerKind,
    /// The forward proxy exports go through (the sidecar), if any.
    pub proxy: Option<Uri>,
    /// Hosts file consulted before DNS for the collector's name.
    pub hosts_file: Option<PathBuf>,
    /// How long one export request may take.
    pub export_timeout: Duration,
    /// How often the batch processor exports (`OTEL_BSP_SCHEDULE_DELAY`).
    pub schedule_delay: Duration,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

impl TraceConfig {
    /// A configuration for `endpoint` (a full traces URL) with the defaults.
    pub fn new(endpoint: Uri, service_name: impl Into<String>) -> Self {
        Self {
            endpoint,
            service_name: service_name.into(),
            sampler: SamplerKind::ParentBasedAlwaysOn,
            proxy: None,
            hosts_file: None,
            export_timeout: Duration::from_secs(10),
            schedule_delay: Duration::from_secs(5),
        }
    }

    /// From OpenTelemetry's variables, read through `get`:
    ///
    /// * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or `OTEL_EXPORTER_OTLP_ENDPOINT`
    ///   (`/v1/traces` appended); neither set, `OTEL_SDK_DISABLED=true` or an
    ///   `OTEL_TRACES_EXPORTER` without `otlp` means no export (`Ok(None)`);
    /// * `OTEL_SERVICE_NAME`, else `<app>.<namespace>` from `APP` (default `app`) and
    ///   `POD_NAMESPACE` (the downward API), else `program`;
    /// * `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`:
    ///   the app follows the decision its sidecar made);
    /// * `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` / `OTEL_EXPORTER_OTLP_TIMEOUT`,
    ///   `OTEL_BSP_SCHEDULE_DELAY` (milliseconds);
    /// * `HTTP_PROXY` / `http_proxy` unless `NO_PROXY` / `no_proxy` names the collector, and
    ///   `SKEIN_HOSTS`, as for the app's other calls.
    pub fn from_env(
        get: impl Fn(&str) -> Option<String>,
        app: &str,
        program: &str,
    ) -> Result<Option<Self>, TraceError> {
        let get = |k: &str| non_empty(get(k));
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        if let Some(exporters) = get("OTEL_TRACES_EXPORTER")
            && !exporters.split(',').any(|e| e.trim() == "otlp")
        {
            return Ok(None);
        }
        let (var, url) = if let Some(url) = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)
        } else if let Some(base) = get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("{}/v1/traces", base.trim_end_matches('/')),
            )
        } else {
            return Ok(None);
        };
        let bad = |reason: &str| TraceError::Endpoint {
            var,
            value: url.clone(),
            reason: reason.to_owned(),
        };
        let endpoint: Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
        match endpoint.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "https is not supported; in the mesh, send plain http and let the sidecar encrypt",
                ));
            }
            _ => return Err(bad("expected http://HOST:PORT")),
        }
        let host = endpoint.host().unwrap_or_default().to_owned();
        if host.is_empty() {
            return Err(bad("no host"));
        }

        let service_name = get("OTEL_SERVICE_NAME").unwrap_or_else(|| {
            let app = get("APP").unwrap_or_else(|| app.to_owned());
            match get("POD_NAMESPACE") {
                Some(ns) => format!("{app}.{ns}"),
                None => program.to_owned(),
            }
        });

        let ratio = || -> Result<f64, TraceError> {
            match get("OTEL_TRACES_SAMPLER_ARG") {
                None => Ok(1.0),
                Some(a) => a
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or(TraceError::SamplerArg(a)),
            }
        };
        let sampler = match get("OTEL_TRACES_SAMPLER").as_deref() {
            None | Some("parentbased_always_on") => SamplerKind::ParentBasedAlwaysOn,
            Some("always_on") => SamplerKind::AlwaysOn,
            Some("always_off") => SamplerKind::AlwaysOff,
            Some("traceidratio") => SamplerKind::Ratio(ratio()?),
            Some("parentbased_always_off") => SamplerKind::ParentBasedAlwaysOff,
            Some("parentbased_traceidratio") => SamplerKind::ParentBasedRatio(ratio()?),
            Some(other) => return Err(TraceError::Sampler(other.to_owned())),
        };

        let millis = |vars: &[&'static str], default: Duration| -> Result<Duration, TraceError> {
            for var in vars {
                if let Some(v) = get(var) {
                    return v
                        .parse::<u64>()
                        .map(Duration::from_millis)
                        .map_err(|_| TraceError::Millis { var, value: v });
                }
            }
            Ok(default)
        };
        let export_timeout = millis(
            &[
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ],
            Duration::from_secs(10),
        )?;
        let schedule_delay = millis(&["OTEL_BSP_SCHEDULE_DELAY"], Duration::from_secs(5))?;

        let no_proxy = get("NO_PROXY")
            .or_else(|| get("no_proxy"))
            .map(|s| crate::web::NoProxy::parse(&s))
            .unwrap_or_default();
        let proxy = get("HTTP_PROXY")
            .or_else(|| get("http_proxy"))
            .map(|p| crate::web::parse_proxy(&p).map_err(|e| TraceError::Proxy(p, e.to_string())))
            .transpose()?
            .filter(|_| !no_proxy.matches(&host));

        Ok(Some(Self {
            endpoint,
            service_name,
            sampler,
            proxy,
            hosts_file: get("SKEIN_HOSTS").map(PathBuf::from),
            export_timeout,
            schedule_delay,
        }))
    }
}

/// An app's span reporting: off, or a tracer provider exporting over OTLP/HTTP.
#[derive(Debug, Clone, Default)]
pub struct Telemetry(Option<Arc<Active>>);

#[derive(Debug)]
struct Active {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

/// Carried in a request's context while a server span is open: the tracer that its SQL
/// spans are made with.
#[derive(Debug, Clone)]
struct SpanTracer(SdkTracer);

impl Telemetry {
    /// No export.
    pub fn disabled() -> Self {
        Self(None)
    }

    /// Starts exporting per `config` (`None`: no export). Must run inside a tokio runtime,
    /// which the exports then run on.
    pub fn start(config: Option<&TraceConfig>) -> Result<Self, TraceError> {
        let Some(config) = config else {
            return Ok(Self(None));
        };
        let client = export::ExportClient::new(
            crate::hosts::Resolver::new(config.hosts_file.clone()),
            config.proxy.clone(),
            config.export_timeout,
        )
        .map_err(|e| TraceError::Runtime(e.to_string()))?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(config.endpoint.to_string())
            .with_timeout(config.export_timeout)
            .build()
            .map_err(|e| TraceError::Exporter(e.to_string()))?;
        let batch = BatchConfigBuilder::default()
            .with_scheduled_delay(config.schedule_delay)
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(config.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(config.sampler.sampler())
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("blog");
        tracing::info!(
            endpoint = %config.endpoint,
            service = %config.service_name,
            via = config.proxy.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "direct".into()),
            "exporting spans over OTLP/HTTP"
        );
        Ok(Self(Some(Arc::new(Active { provider, tracer }))))
    }

    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Exports what is queued, waiting at most for the export timeout.
    pub async fn flush(&self) {
        if let Some(active) = &self.0 {
            let provider = active.provider.clone();
            let _ = tokio::task::spawn_blocking(move || provider.force_flush()).await;
        }
    }

    /// Exports what is queued and stops the exporter.
    pub async fn shutdown(&self) {
        if let Some(active) = &self.0 {
            let provider = active.provider.clone();
            let res = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(e)) = res {
                tracing::debug!(error = %e, "span exporter shutdown");
            }
        }
    }
}

/// The state of [`server_span`]: the app's telemetry and the paths (prefixes) of its probes,
/// which get a span only when the caller sent a trace context.
#[derive(Debug, Clone)]
pub struct ServerTracing {
    pub telemetry: Telemetry,
    pub probe_prefixes: &'static [&'static str],
}

/// Middleware: a SERVER span for the request, named `METHOD /route` as OTel's HTTP semantic
/// conventions name server spans, with the caller's span as its parent. The request runs with
/// the span as its current context, so SQL spans and outgoing requests name it as parent.
pub async fn server_span(State(st): State<ServerTracing>, req: Request, next: Next) -> Response {
    let Some(active) = st.telemetry.0.as_ref() else {
        return next.run(req).await;
    };
    let parent = propagation::extract(req.headers());
    let path = req.uri().path();
    if !parent.span().span_context().is_valid()
        && st.probe_prefixes.iter().any(|p| path.starts_with(p))
    {
        return next.run(req).await;
    }
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let name: Cow<'static, str> = match &route {
        Some(r) => format!("{method} {r}").into(),
        None => method.clone().into(),
    };
    let mut attributes = vec![
        KeyValue::new("http.request.method", method),
        KeyValue::new("url.path", path.to_owned()),
        KeyValue::new("url.scheme", "http"),
    ];
    if let Some(q) = req.uri().query() {
        attributes.push(KeyValue::new("url.query", q.to_owned()));
    }
    if let Some(r) = route {
        attributes.push(KeyValue::new("http.route", r));
    }
    if let Some(ua) = req
        .headers()
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        attributes.push(KeyValue::new("user_agent.original", ua.to_owned()));
    }
    let tracer = &active.tracer;
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Server)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent);
    let cx = parent
        .with_span(span)
        .with_value(SpanTracer(tracer.clone()));
    let res = next.run(req).with_context(cx.clone()).await;
    let span = cx.span();
    let status = res.status().as_u16();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if status >= 500 {
        span.set_attribute(KeyValue::new("error.type", status.to_string()));
        span.set_status(Status::error(""));
    }
    span.end();
    res
}

/// What a SQL statement gave back, for its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// Rows a query returned (`db.response.returned_rows`).
    Returned(u64),
    /// Rows a statement changed (`db.response.affected_rows`).
    Affected(u64),
}

/// Runs one SQL statement; inside a sampled server span, as a CLIENT span of its own with
/// `db.system`, `db.statement` (literals replaced by `?`), `db.operation`, `db.sql.table`
/// and the rows. Outside one, just runs it.
pub async fn sql_span<T, E, F>(
    system: &'static str,
    statement: &str,
    query: F,
    rows: impl FnOnce(&T) -> Rows,
) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let cx = Context::current();
    let Some(SpanTracer(tracer)) = cx.get::<SpanTracer>() else {
        return query.await;
    };
    if !cx.span().span_context().is_sampled() {
        return query.await;
    }
    let operation = sql::operation(statement);
    let table = sql::table(statement);
    let name = match &table {
        Some(t) => format!("{operation} {t}"),
        None => operation.clone(),
    };
    let mut attributes = vec![
        KeyValue::new("db.system", system),
        KeyValue::new("db.statement", sql::strip_literals(statement)),
        KeyValue::new("db.operation", operation),
    ];
    if let Some(t) = table {
        attributes.push(KeyValue::new("db.sql.table", t));
    }
    let mut span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Client)
        .with_attributes(attributes)
        .start_with_context(tracer, &cx);
    let res = query.await;
    match &res {
        Ok(v) => match rows(v) {
            Rows::Returned(n) => span.set_attribute(KeyValue::new(
                "db.response.returned_rows",
                i64::try_from(n).unwrap_or(i64::MAX),
            )),
            Rows::Affected(n) => span.set_attribute(KeyValue::new(
                "db.response.affected_rows",
                i64::try_from(n).unwrap_or(i64::MAX),
            )),
        },
        Err(e) => span.set_status(Status::error(e.to_string())),
    }
    span.end();
    res
}

/// The current request's trace context, written into a request the app makes: the server
/// span as the new parent when spans are exported; nothing otherwise (the copied headers
/// then pass the caller's context on unchanged).
pub fn inject_current(headers: &mut axum::http::HeaderMap) {
    let cx = Context::current();
    if cx.get::<SpanTracer>().is_some() {
        propagation::inject(&cx, headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn no_endpoint_no_export() {
        assert!(
            TraceConfig::from_env(env(&[]), "was", "blog-was")
                .unwrap()
                .is_none()
        );
        assert!(
            TraceConfig::from_env(
                env(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_SDK_DISABLED", "true")
                ]),
                "was",
                "blog-was"
            )
            .unwrap()
            .is_none()
        );
        assert!(
            TraceConfig::from_env(
                env(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_TRACES_EXPORTER", "none")
                ]),
                "was",
                "blog-was"
            )
            .unwrap()
            .is_none()
        );
    }

    #[test]
    fn endpoints_names_and_the_sidecar() {
        let c = TraceConfig::from_env(
            env(&[
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    "http://jaeger-collector.istio-system.svc:4318/",
                ),
                ("POD_NAMESPACE", "blog-system"),
                ("HTTP_PROXY", "http://127.0.4.1:15001"),
                ("NO_PROXY", "localhost,127.0.0.1"),
            ]),
            "was",
            "blog-was",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            c.endpoint.to_string(),
            "http://jaeger-collector.istio-system.svc:4318/v1/traces"
        );
        assert_eq!(c.service_name, "was.blog-system");
        assert_eq!(c.sampler, SamplerKind::ParentBasedAlwaysOn);
        assert_eq!(
            c.proxy.as_ref().map(|p| p.to_string()).as_deref(),
            Some("http://127.0.4.1:15001/")
        );

        let c = TraceConfig::from_env(
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/x"),
                ("OTEL_SERVICE_NAME", "custom"),
                ("APP", "web"),
                ("POD_NAMESPACE", "ns"),
                ("HTTP_PROXY", "http://127.0.4.1:15001"),
                ("NO_PROXY", "localhost,127.0.0.1"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ]),
            "was",
            "blog-was",
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.endpoint.to_string(), "http://127.0.0.1:9/x");
        assert_eq!(c.service_name, "custom");
        assert_eq!(c.sampler, SamplerKind::ParentBasedRatio(0.25));
        assert!(c.proxy.is_none(), "NO_PROXY names the collector");
        assert_eq!(c.schedule_delay, Duration::from_millis(100));

        let c = TraceConfig::from_env(
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("APP", "web"),
            ]),
            "was",
            "blog-was",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            c.service_name, "blog-was",
            "no namespace: the program's name"
        );
    }

    #[test]
    fn bad_settings_are_named() {
        for (pairs, want) in [
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318")][..],
                "https is not supported",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://c:4318")][..],
                "expected http://HOST:PORT",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4318")][..],
                "OTEL_EXPORTER_OTLP_ENDPOINT=\"c:4318/v1/traces\" is not a usable",
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_TRACES_SAMPLER", "sometimes"),
                ][..],
                "OTEL_TRACES_SAMPLER=\"sometimes\"",
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "2"),
                ][..],
                "not a ratio",
            ),
        ] {
            let owned: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let get = |k: &str| owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let err = TraceConfig::from_env(get, "was", "blog-was").unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
    }
}
