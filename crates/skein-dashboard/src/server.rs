//! The HTTP server: every endpoint of the dashboard's API (Kiali's paths where Kiali has
//! them), the tracing store's Jaeger API passed through under `/jaeger/api`, and the page.
//! Only GET and HEAD; every answer carries `nosniff` and a same-origin Content Security
//! Policy; every error is `{"error": "..."}`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};
use skein_runtime::StateDir;
use skein_runtime::prom::{PromClient, Sample, escape_label};

use crate::graph::{self, GraphType, Options, ResponseTime};
use crate::health::{self, Kind};
use crate::params::{self, ParamError, Query};
use crate::state::Snapshot;
use crate::{assets, config, inventory, logs};

/// How long one Prometheus query may take.
const PROM_TIMEOUT: Duration = Duration::from_secs(10);
/// How many queries one request runs against Prometheus at once.
const PROM_CONCURRENCY: usize = 6;
/// How long the tracing store may take.
const TRACING_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer passed through from the tracing store.
pub const MAX_TRACING_BODY: usize = 16 * 1024 * 1024;
/// At most this many points per range series.
const MAX_POINTS: u64 = 1100;

pub const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:";

/// What the server is started with.
#[derive(Debug, Clone)]
pub struct Config {
    pub state: PathBuf,
    /// `http://IP:PORT` of Prometheus.
    pub prometheus: Option<String>,
    /// `http://IP:PORT` of the tracing store's query API.
    pub tracing: Option<String>,
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("--prometheus: {0}")]
    Prometheus(#[from] skein_runtime::prom::PromError),
    #[error("--tracing: {0:?} is not http://IP:PORT")]
    Tracing(String),
    #[error("{0}")]
    State(#[from] skein_runtime::RuntimeError),
}

struct App {
    state: StateDir,
    prom: Option<PromClient>,
    prom_url: Option<String>,
    tracing: Option<SocketAddr>,
    tracing_url: Option<String>,
    version: String,
}

pub use crate::reply::error;

/// A handler's failure.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    Param(#[from] ParamError),
    #[error("{0}")]
    Filter(#[from] logs::FilterError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    State(#[from] crate::state::StateError),
    #[error(
        "prometheus is not running (install the `prometheus` program and restart `skein up`), so there are no metrics"
    )]
    NoPrometheus,
    #[error("{0}")]
    Prom(#[from] skein_runtime::prom::PromError),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Param(_) | ApiError::Filter(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::State(_) | ApiError::NoPrometheus | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Prom(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        error(status, self.to_string())
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(v: Json) -> ApiResult {
    Ok(axum::Json(v).into_response())
}

impl App {
    /// Reads the state directory (on a blocking thread).
    async fn snapshot(&self) -> Result<Snapshot, ApiError> {
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || Snapshot::read(&state))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(ApiError::from)
    }

    fn prom(&self) -> Result<&PromClient, ApiError> {
        self.prom.as_ref().ok_or(ApiError::NoPrometheus)
    }

    /// Runs instant queries concurrently at `time`.
    async fn query_all(&self, queries: &[String], time: f64) -> Result<graph::Answers, ApiError> {
        let prom = self.prom()?;
        // A graph of many namespaces is many queries: a few at a time.
        let permits = Arc::new(tokio::sync::Semaphore::new(PROM_CONCURRENCY));
        let mut set = tokio::task::JoinSet::new();
        for q in queries {
            let (p, q, permits) = (prom.clone(), q.clone(), Arc::clone(&permits));
            set.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let r = p.query(&q, time).await;
                (q, r)
            });
        }
        let mut out = BTreeMap::new();
        while let Some(r) = set.join_next().await {
            let (q, r) = r.map_err(|e| ApiError::Internal(e.to_string()))?;
            out.insert(q, r?);
        }
        Ok(out)
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as f64 / 1000.0)
        .unwrap_or(0.0)
}

/// The router over a state directory.
pub fn router(cfg: Config) -> Result<Router, ServerError> {
    let prom = cfg
        .prometheus
        .as_deref()
        .map(|u| PromClient::new(u, PROM_TIMEOUT))
        .transpose()?;
    let tracing = cfg
        .tracing
        .as_deref()
        .map(|u| {
            u.trim_start_matches("http://")
                .trim_end_matches('/')
                .parse::<SocketAddr>()
                .map_err(|_| ServerError::Tracing(u.to_string()))
        })
        .transpose()?;
    let app = Arc::new(App {
        state: StateDir::resolve(Some(&cfg.state))?,
        prom,
        prom_url: cfg.prometheus.clone(),
        tracing,
        tracing_url: cfg.tracing.clone(),
        version: cfg.version,
    });
    Ok(Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/status", get(status))
        .route("/api/namespaces", get(namespaces))
        .route("/api/namespaces/graph", get(graph_handler))
        .route("/api/overview", get(overview))
        .route("/api/namespaces/{ns}/health", get(health_handler))
        .route("/api/namespaces/{ns}/workloads", get(workloads))
        .route("/api/namespaces/{ns}/workloads/{w}", get(workload))
        .route("/api/namespaces/{ns}/rollouts", get(rollouts))
        .route(
            "/api/namespaces/{ns}/workloads/{w}/metrics",
            get(workload_metrics),
        )
        .route("/api/namespaces/{ns}/services", get(services))
        .route("/api/namespaces/{ns}/services/{s}", get(service))
        .route(
            "/api/namespaces/{ns}/services/{s}/metrics",
            get(service_metrics),
        )
        .route("/api/namespaces/{ns}/pods/{pod}/logs", get(pod_logs))
        .route("/api/istio/config", get(istio_config))
        .route("/jaeger/api/{*rest}", get(jaeger))
        .route("/api", get(api_not_found))
        .route("/api/{*rest}", get(api_not_found))
        .fallback(page)
        .layer(middleware::from_fn(guard))
        .with_state(app))
}

/// GET and HEAD only, and the security headers on every answer.
async fn guard(req: Request<Body>, next: Next) -> Response {
    let mut resp = if req.method() == Method::GET || req.method() == Method::HEAD {
        next.run(req).await
    } else {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{} is not allowed: this API is read-only (GET, HEAD)",
                req.method()
            ),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    };
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

async fn page(req: Request<Body>) -> Response {
    assets::serve(req.uri().path())
}

async fn api_not_found(req: Request<Body>) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", req.uri().path()),
    )
}

async fn status(State(app): State<Arc<App>>) -> ApiResult {
    ok(json!({
        "prometheus": app.prom_url,
        "tracing": app.tracing_url,
        "version": app.version,
        "page": assets::present(),
    }))
}

async fn namespaces(State(app): State<Arc<App>>) -> ApiResult {
    let snap = app.snapshot().await?;
    ok(inventory::namespaces(&snap))
}

fn known_namespace(snap: &Snapshot, ns: &str) -> Result<(), ApiError> {
    if inventory::has_namespace(snap, ns) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("namespace {ns:?} not found")))
    }
}

async fn graph_handler(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> ApiResult {
    let q = Query::parse(q.as_deref())?;
    let namespaces = params::namespaces(&q)?;
    let o = Options {
        graph_type: GraphType::parse(q.one_of(
            "graphType",
            "app, versionedApp, workload, service",
            // Kiali's default.
            "workload",
        )?),
        duration: q.duration("duration", params::DEFAULT_DURATION)?,
        inject_service_nodes: q.bool("injectServiceNodes", false)?,
        response_time: ResponseTime::parse(q.one_of("responseTime", "95, 99, 50, avg", "95")?),
        // Kiali's name, and the short one.
        idle_edges: q.bool("includeIdleEdges", false)? || q.bool("idleEdges", false)?,
        time: now(),
        namespaces,
    };
    let snap = app.snapshot().await?;
    for ns in &o.namespaces {
        known_namespace(&snap, ns)?;
    }
    let answers = app.query_all(&graph::plan(&o), o.time).await?;
    ok(graph::build(&o, &answers, &graph::context(&snap)))
}

/// Per object name: inbound and outbound request rates of a namespace.
async fn request_rates(
    app: &App,
    ns: &str,
    kind: Kind,
    rate_interval: u64,
    time: f64,
) -> Result<
    (
        BTreeMap<String, health::Rates>,
        BTreeMap<String, health::Rates>,
    ),
    ApiError,
> {
    let (inq, outq) = health::queries(ns, kind, rate_interval);
    let mut qs = vec![inq.clone()];
    qs.extend(outq.clone());
    let answers = app.query_all(&qs, time).await?;
    let (in_label, out_label) = match kind {
        Kind::App => ("destination_canonical_service", "source_canonical_service"),
        Kind::Workload => ("destination_workload", "source_workload"),
        Kind::Service => ("destination_service_name", ""),
    };
    let inbound = health::rates_by(answers.get(&inq).map_or(&[][..], Vec::as_slice), in_label);
    let outbound = match &outq {
        Some(o) => health::rates_by(answers.get(o).map_or(&[][..], Vec::as_slice), out_label),
        None => BTreeMap::new(),
    };
    Ok((inbound, outbound))
}

/// Kiali's namespace health: per app, workload or service.
async fn namespace_health(
    app: &App,
    snap: &Snapshot,
    ns: &str,
    kind: Kind,
    rate_interval: u64,
) -> Result<serde_json::Map<String, Json>, ApiError> {
    let (inbound, outbound) = match app.prom() {
        Ok(_) => request_rates(app, ns, kind, rate_interval, now()).await?,
        Err(_) => (BTreeMap::new(), BTreeMap::new()),
    };
    let empty = health::Rates::new();
    let workloads = inventory::workloads(snap, Some(ns));
    let mut out = serde_json::Map::new();
    match kind {
        Kind::Workload => {
            for w in &workloads {
                let st = inventory::workload_status(w, snap);
                out.insert(
                    w.name.clone(),
                    health::entry(
                        inbound.get(&w.name).unwrap_or(&empty),
                        outbound.get(&w.name).unwrap_or(&empty),
                        Some(&st),
                    ),
                );
            }
        }
        Kind::App => {
            let mut apps: BTreeMap<String, Vec<health::WorkloadStatus>> = BTreeMap::new();
            for w in &workloads {
                let name = w.app().unwrap_or(&w.name).to_string();
                apps.entry(name)
                    .or_default()
                    .push(inventory::workload_status(w, snap));
            }
            for (name, sts) in apps {
                let mut e = health::entry(
                    inbound.get(&name).unwrap_or(&empty),
                    outbound.get(&name).unwrap_or(&empty),
                    None,
                );
                let pods =
                    health::combine(&sts.iter().map(health::pods_status).collect::<Vec<_>>());
                let reqs = e["status"]["status"].as_str().unwrap_or("").to_string();
                let req_status = match reqs.as_str() {
                    "Failure" => health::Status::Failure,
                    "Degraded" => health::Status::Degraded,
                    "Healthy" => health::Status::Healthy,
                    _ => health::Status::NoHealth,
                };
                e["status"]["status"] = health::combine(&[pods, req_status]).as_str().into();
                e["workloadStatuses"] = json!(sts);
                out.insert(name, e);
            }
        }
        Kind::Service => {
            for s in snap.status.services.iter().filter(|s| s.namespace == ns) {
                out.insert(
                    s.name.clone(),
                    health::entry(inbound.get(&s.name).unwrap_or(&empty), &empty, None),
                );
            }
        }
    }
    Ok(out)
}

async fn health_handler(
    State(app): State<Arc<App>>,
    Path(ns): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let ns = params::namespace("namespace", &ns)?;
    let q = Query::parse(q.as_deref())?;
    let kind = Kind::parse(q.one_of("type", "app, workload, service", "app")?);
    let ri = q.duration("rateInterval", 60)?;
    let snap = app.snapshot().await?;
    known_namespace(&snap, &ns)?;
    ok(Json::Object(
        namespace_health(&app, &snap, &ns, kind, ri).await?,
    ))
}

async fn overview(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> ApiResult {
    let q = Query::parse(q.as_deref())?;
    let d = q.duration("duration", params::DEFAULT_DURATION)?;
    let snap = app.snapshot().await?;
    let time = now();
    let mut list = Vec::new();
    for ns in inventory::namespace_names(&snap) {
        let workloads = inventory::workloads(&snap, Some(&ns));
        let apps: std::collections::BTreeSet<&str> =
            workloads.iter().filter_map(|w| w.app()).collect();
        let h = namespace_health(&app, &snap, &ns, Kind::App, d.min(3600)).await?;
        let statuses: Vec<health::Status> = h
            .values()
            .map(|e| match e["status"]["status"].as_str() {
                Some("Failure") => health::Status::Failure,
                Some("Degraded") => health::Status::Degraded,
                Some("Healthy") => health::Status::Healthy,
                _ => health::Status::NoHealth,
            })
            .collect();
        let (mut rate, mut err, mut mtls) = (None, None, None);
        if app.prom().is_ok() {
            let e = escape_label(&ns);
            let by_code = format!(
                "sum(rate(istio_requests_total{{reporter=\"destination\",destination_workload_namespace=\"{e}\"}}[{d}s])) by (response_code,connection_security_policy)"
            );
            let a = app.query_all(std::slice::from_ref(&by_code), time).await?;
            let rows: &[Sample] = a.get(&by_code).map_or(&[][..], Vec::as_slice);
            // fold from +0: an empty f64 sum is -0, which would print as "-0.0".
            let total: f64 = rows
                .iter()
                .map(|r| r.value)
                .filter(|v| v.is_finite())
                .fold(0.0, |a, b| a + b);
            let failed: f64 = rows
                .iter()
                .filter(|r| matches!(r.get("response_code").as_bytes().first(), Some(b'4' | b'5')))
                .map(|r| r.value)
                .fold(0.0, |a, b| a + b);
            let secure: f64 = rows
                .iter()
                .filter(|r| r.get("connection_security_policy") == "mutual_tls")
                .map(|r| r.value)
                .fold(0.0, |a, b| a + b);
            rate = Some(round2(total));
            if total > 0.0 {
                err = Some(round2(failed / total * 100.0));
                mtls = Some(format!("{:.0}", secure / total * 100.0));
            }
        }
        list.push(json!({
            "name": ns,
            "health": health::combine(&statuses).as_str(),
            "apps": apps.len(),
            "workloads": workloads.len(),
            "requestRate": rate,
            "errorRate": err,
            "mtls": mtls,
            "rollouts": inventory::rollout_summaries(&snap, &ns),
        }));
    }
    ok(json!({
        "namespaces": list,
        "application": snap.application.as_ref().map(config::application_json),
    }))
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

async fn workloads(State(app): State<Arc<App>>, Path(ns): Path<String>) -> ApiResult {
    let ns = params::namespace("namespace", &ns)?;
    let snap = app.snapshot().await?;
    known_namespace(&snap, &ns)?;
    ok(inventory::workloads_json(&snap, &ns))
}

async fn rollouts(State(app): State<Arc<App>>, Path(ns): Path<String>) -> ApiResult {
    let ns = params::namespace("namespace", &ns)?;
    let snap = app.snapshot().await?;
    known_namespace(&snap, &ns)?;
    ok(inventory::rollouts_json(&snap, &ns))
}

async fn workload(State(app): State<Arc<App>>, Path((ns, w)): Path<(String, String)>) -> ApiResult {
    let ns = params::namespace("namespace", &ns)?;
    let w = params::object_name("workload", &w)?;
    let snap = app.snapshot().await?;
    known_namespace(&snap, &ns)?;
    let wl = inventory::workload(&snap, &ns, &w)
        .ok_or_else(|| ApiError::NotFound(format!("workload {ns}/{w} not found")))?;
    // Each proxy's certificate, from its admin endpoint's /control (bounded, in parallel).
    let mut set = tokio::task::JoinSet::new();
    for p in &wl.pods {
        let Some(proxy) = &p.proxy else { continue };
        let Ok(addr) = proxy
            .admin
            .trim_start_matches("http://")
            .parse::<SocketAddr>()
        else {
            continue;
        };
        let name = p.name.clone();
        set.spawn(async move {
            let r = skein_runtime::http_get_bounded(
                addr,
                "/control",
                Duration::from_secs(1),
                256 * 1024,
            )
            .await;
            (name, r)
        });
    }
    let mut certs = BTreeMap::new();
    while let Some(Ok((name, r))) = set.join_next().await {
        if let Ok((StatusCode::OK, _, body)) = r
            && let Ok(v) = serde_json::from_slice::<Json>(&body)
        {
            certs.insert(name, v);
        }
    }
    ok(inventory::workload_json(&snap, &wl, &certs))
}

async fn services(State(app): State<Arc<App>>, Path(ns): Path<String>) -> ApiResult {
    let ns = params::namespace("namespace", &ns)?;
    let snap = app.snapshot().await?;
    known_namespace(&snap, &ns)?;
    ok(Json::Array(inventory::services_json(&snap, &ns, None)))
}

async fn service(State(app): State<Arc<App>>, Path((ns, s)): Path<(String, String)>) -> ApiResult {
    let ns = params::namespace("namespace", &ns)?;
    let s = params::object_name("service", &s)?;
    let snap = app.snapshot().await?;
    known_namespace(&snap, &ns)?;
    inventory::services_json(&snap, &ns, Some(&s))
        .into_iter()
        .next()
        .map(axum::Json)
        .map(IntoResponse::into_response)
        .ok_or_else(|| ApiError::NotFound(format!("service {ns}/{s} not found")))
}

/// Kiali's metrics of one workload or service over a window, from range queries.
async fn metrics(app: &App, selector: String, q: &Query) -> ApiResult {
    let d = q.duration("duration", params::DEFAULT_DURATION)?;
    let step = q.duration("step", 15)?;
    let ri = q.duration("rateInterval", 60)?;
    if d / step > MAX_POINTS {
        return Err(ParamError::Number {
            name: "step",
            value: format!("{step}s"),
            min: d.div_ceil(MAX_POINTS),
            max: d,
        }
        .into());
    }
    let prom = app.prom()?;
    let end = now();
    let start = end - d as f64;
    let mut queries: Vec<(&'static str, Option<&'static str>, String)> = vec![
        (
            "request_count",
            None,
            format!("sum(rate(istio_requests_total{{{selector}}}[{ri}s])) by (reporter)"),
        ),
        (
            "request_error_count",
            None,
            format!(
                "sum(rate(istio_requests_total{{{selector},response_code=~\"[45][0-9][0-9]\"}}[{ri}s])) by (reporter)"
            ),
        ),
        (
            "tcp_sent",
            None,
            format!("sum(rate(istio_tcp_sent_bytes_total{{{selector}}}[{ri}s])) by (reporter)"),
        ),
        (
            "tcp_received",
            None,
            format!("sum(rate(istio_tcp_received_bytes_total{{{selector}}}[{ri}s])) by (reporter)"),
        ),
        (
            "request_duration_millis",
            Some("avg"),
            format!(
                "sum(rate(istio_request_duration_milliseconds_sum{{{selector}}}[{ri}s])) by (reporter) / sum(rate(istio_request_duration_milliseconds_count{{{selector}}}[{ri}s])) by (reporter)"
            ),
        ),
    ];
    for qv in ["0.5", "0.95", "0.99"] {
        queries.push((
            "request_duration_millis",
            Some(qv),
            format!(
                "histogram_quantile({qv}, sum(rate(istio_request_duration_milliseconds_bucket{{{selector}}}[{ri}s])) by (le,reporter))"
            ),
        ));
    }
    let mut set = tokio::task::JoinSet::new();
    for (i, (_, _, query)) in queries.iter().enumerate() {
        let (p, query) = (prom.clone(), query.clone());
        set.spawn(async move { (i, p.query_range(&query, start, end, step as f64).await) });
    }
    let mut results = vec![Vec::new(); queries.len()];
    while let Some(r) = set.join_next().await {
        let (i, r) = r.map_err(|e| ApiError::Internal(e.to_string()))?;
        results[i] = r?;
    }
    let mut out = serde_json::Map::new();
    for name in [
        "request_count",
        "request_error_count",
        "request_duration_millis",
        "tcp_sent",
        "tcp_received",
    ] {
        out.insert(name.into(), Json::Array(Vec::new()));
    }
    for ((name, quantile, _), series) in queries.iter().zip(results) {
        let list = out
            .entry(name.to_string())
            .or_insert_with(|| Json::Array(Vec::new()));
        for s in series {
            let mut labels = s.labels.clone();
            if let Some(qv) = quantile {
                labels.insert("quantile".into(), qv.to_string());
            }
            let points: Vec<Json> = s
                .points
                .iter()
                .filter(|(_, v)| v.is_finite())
                .map(|(t, v)| json!([*t as i64, v.to_string()]))
                .collect();
            if let Some(a) = list.as_array_mut() {
                a.push(json!({"labels": labels, "datapoints": points}));
            }
        }
    }
    ok(Json::Object(out))
}

async fn workload_metrics(
    State(app): State<Arc<App>>,
    Path((ns, w)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let ns = params::namespace("namespace", &ns)?;
    let w = params::object_name("workload", &w)?;
    let q = Query::parse(q.as_deref())?;
    let dir = q.one_of("direction", "inbound, outbound", "inbound")?;
    let (ns_e, w_e) = (escape_label(&ns), escape_label(&w));
    let sel = if dir == "inbound" {
        format!(
            "reporter=\"destination\",destination_workload_namespace=\"{ns_e}\",destination_workload=\"{w_e}\""
        )
    } else {
        format!(
            "reporter=\"source\",source_workload_namespace=\"{ns_e}\",source_workload=\"{w_e}\""
        )
    };
    metrics(&app, sel, &q).await
}

async fn service_metrics(
    State(app): State<Arc<App>>,
    Path((ns, s)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let ns = params::namespace("namespace", &ns)?;
    let s = params::object_name("service", &s)?;
    let q = Query::parse(q.as_deref())?;
    let dir = q.one_of("direction", "inbound, outbound", "inbound")?;
    let (ns_e, s_e) = (escape_label(&ns), escape_label(&s));
    let reporter = if dir == "inbound" {
        "destination"
    } else {
        "source"
    };
    let sel = format!(
        "reporter=\"{reporter}\",destination_service_namespace=\"{ns_e}\",destination_service_name=\"{s_e}\""
    );
    metrics(&app, sel, &q).await
}

async fn pod_logs(
    State(app): State<Arc<App>>,
    Path((ns, pod)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let ns = params::namespace("namespace", &ns)?;
    let pod = params::object_name("pod", &pod)?;
    let q = Query::parse(q.as_deref())?;
    let tail = q.number("tailLines", 200, 1, 5000)? as usize;
    let since = match q.get("sinceTime") {
        None => None,
        Some(_) => Some(q.number("sinceTime", 0, 0, 32_503_680_000)? as i64),
    };
    let filter = logs::Filter::new(q.get("code"), q.get("flags"))?;
    let container = match q.get("container") {
        None => None,
        Some(c) => Some(params::object_name("container", c)?),
    };
    let snap = app.snapshot().await?;
    known_namespace(&snap, &ns)?;
    let p = snap
        .status
        .pods
        .iter()
        .find(|p| p.namespace == ns && p.name == pod)
        .ok_or_else(|| ApiError::NotFound(format!("pod {ns}/{pod} not found")))?;
    let c = match &container {
        Some(name) => p
            .containers
            .iter()
            .find(|c| &c.name == name)
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "pod {ns}/{pod} has no container {name:?} (it has {})",
                    p.containers
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?,
        None => p
            .containers
            .first()
            .ok_or_else(|| ApiError::NotFound(format!("pod {ns}/{pod} has no containers")))?,
    };
    let path = PathBuf::from(&c.logs);
    let lines = tokio::task::spawn_blocking(move || logs::tail(&path, tail))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| {
            ApiError::Unavailable(format!("cannot read the log of {pod}/{}: {e}", c.name))
        })?;
    ok(logs::entries(&lines, since, &filter))
}

async fn istio_config(State(app): State<Arc<App>>) -> ApiResult {
    let snap = app.snapshot().await?;
    ok(config::istio_config(&snap))
}

/// A path under the tracing store's API: the characters of names, ids and operations.
fn safe_tail(rest: &str) -> bool {
    rest.len() <= 512
        && !rest.split('/').any(|s| s == ".." || s == ".")
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~:/%@+".contains(&b))
}

async fn jaeger(
    State(app): State<Arc<App>>,
    Path(rest): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let addr = app.tracing.ok_or_else(|| {
        ApiError::Unavailable(
            "the tracing store is not running (skein up runs it with the mesh)".into(),
        )
    })?;
    // axum decoded the path; put it back as sent, percent-encoding what needs it.
    let encoded: String = rest
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~:/@+".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    if !safe_tail(&encoded) || rest.bytes().any(|b| b < b' ' || b == 0x7f) {
        return Err(ParamError::Name {
            name: "path",
            value: rest.chars().take(80).collect(),
        }
        .into());
    }
    let q = q.unwrap_or_default();
    if q.len() > params::MAX_QUERY || q.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(ParamError::TooLong.into());
    }
    let path = if q.is_empty() {
        format!("/api/{encoded}")
    } else {
        format!("/api/{encoded}?{q}")
    };
    match skein_runtime::http_get_bounded(addr, &path, TRACING_TIMEOUT, MAX_TRACING_BODY).await {
        Ok((status, ct, body)) => {
            let mut r = (status, body).into_response();
            let ct = ct.unwrap_or_else(|| "application/json".into());
            if let Ok(v) = HeaderValue::from_str(&ct) {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            Ok(r)
        }
        Err(e) => Ok(error(
            StatusCode::BAD_GATEWAY,
            format!("the tracing store at http://{addr} did not answer: {e}"),
        )),
    }
}

/// Serves the router on `listen` until `shutdown` resolves.
pub async fn serve(
    listen: SocketAddr,
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), std::io::Error> {
    let router = router(cfg).map_err(std::io::Error::other)?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
