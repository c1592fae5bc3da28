//! `blog-web`: the blog's static site and its `/api` reverse proxy to the was.
//!
//! ```text
//! GET /health          200 ok
//! GET /                post list          GET /posts/{id}   one post
//! GET /board           write/edit/delete  GET /assets/*     css, js, icon
//! ANY /api/*           proxied to WAS_URL with Host: WAS_HOST
//! ```
//! With `METRICS_ADDR`, a second listener there serves `GET /metrics`: its requests in
//! Prometheus's text format (`http_server_requests_seconds`), off the public port.
//! Every response carries `x-web-version` and `x-web-pod`.

pub mod assets;
pub mod proxy;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get};
use tokio::net::TcpListener;

use crate::hosts::Resolver;
use crate::server::{self, ServerHandle};
use crate::trace::{ServerTracing, Telemetry, TraceConfig, TraceError};

pub use proxy::{NoProxy, Proxy, ProxyError};

/// Response header carrying the pod's `version` label.
pub const VERSION_HEADER: &str = "x-web-version";
/// Response header carrying the pod name.
pub const POD_HEADER: &str = "x-web-pod";
/// Default upstream.
pub const DEFAULT_WAS_URL: &str = "http://was-service.blog-system.svc.cluster.local:8080";
/// Default `Host` header sent upstream.
pub const DEFAULT_WAS_HOST: &str = "was-service";

/// Command-line flags and environment of `blog-web`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "blog-web",
    about = "The blog's static site and /api reverse proxy."
)]
pub struct Args {
    /// Address to listen on [default: $POD_IP:80, else 0.0.0.0:80].
    #[arg(long, env = "LISTEN_ADDR")]
    pub listen_addr: Option<SocketAddr>,
    /// The pod's address; used for the default listen address.
    #[arg(long, env = "POD_IP")]
    pub pod_ip: Option<IpAddr>,
    /// Base URL of the was (`http://` only).
    #[arg(long, env = "WAS_URL", default_value = DEFAULT_WAS_URL)]
    pub was_url: String,
    /// `Host` header sent to the was.
    #[arg(long, env = "WAS_HOST", default_value = DEFAULT_WAS_HOST)]
    pub was_host: String,
    /// Pod name reported in `x-web-pod` [default: $HOSTNAME].
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// The pod's version label, reported in `x-web-version`.
    #[arg(long = "version", env = "VERSION", default_value = "unknown")]
    pub version: String,
    /// Forward proxy for upstream requests (also read from `http_proxy`).
    #[arg(long, env = "HTTP_PROXY")]
    pub http_proxy: Option<String>,
    /// Hosts that bypass the proxy (also read from `no_proxy`).
    #[arg(long, env = "NO_PROXY")]
    pub no_proxy: Option<String>,
    /// Hosts file consulted before DNS.
    #[arg(long, env = "SKEIN_HOSTS")]
    pub hosts_file: Option<PathBuf>,
    /// Upstream timeout: `15s`, `500ms`, `2m` or plain seconds.
    #[arg(long, env = "UPSTREAM_TIMEOUT", default_value = "15s")]
    pub upstream_timeout: String,
    /// Where to serve `/metrics` (Prometheus text) [default: not served].
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// Resolved configuration of `blog-web`.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub was_url: Uri,
    pub was_host: String,
    pub pod_name: String,
    pub version: String,
    /// The forward proxy, when upstream requests should go through one.
    pub http_proxy: Option<Uri>,
    pub no_proxy: NoProxy,
    pub hosts_file: Option<PathBuf>,
    pub upstream_timeout: Duration,
    /// The metrics listener, if any.
    pub metrics_addr: Option<SocketAddr>,
    /// Span export (OpenTelemetry's `OTEL_*` environment); `None`: none, and the trace
    /// headers pass to the was as they came.
    pub tracing: Option<TraceConfig>,
}

/// Errors of blog-web's configuration and serving.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("invalid {name} `{value}`: {reason}")]
    InvalidConfig {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("server error: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Trace(#[from] TraceError),
}

fn invalid(name: &'static str, value: &str, reason: impl Into<String>) -> WebError {
    WebError::InvalidConfig {
        name,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// Parses an `http://host[:port][/prefix]` URL.
pub fn parse_http_url(name: &'static str, value: &str) -> Result<Uri, WebError> {
    let uri: Uri = value
        .trim()
        .parse()
        .map_err(|e| invalid(name, value, format!("{e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(invalid(
                name,
                value,
                format!("scheme `{other}` is not supported; use http://"),
            ));
        }
        None => return Err(invalid(name, value, "expected http://HOST[:PORT]")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid(name, value, "missing host"));
    }
    Ok(uri)
}

/// Parses a proxy setting; a bare `host:port` means `http://host:port`.
pub fn parse_proxy(value: &str) -> Result<Uri, WebError> {
    let v = value.trim();
    let with_scheme = if v.contains("://") {
        v.to_owned()
    } else {
        format!("http://{v}")
    };
    parse_http_url("HTTP_PROXY", &with_scheme)
}

/// Parses `15s`, `500ms`, `2m` or plain seconds (`15`, `0.5`).
pub fn parse_duration(value: &str) -> Result<Duration, WebError> {
    let v = value.trim();
    let (num, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60.0)
    } else {
        (v, 1.0)
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| invalid("UPSTREAM_TIMEOUT", value, "expected e.g. 15s, 500ms, 2m"))?;
    let secs = n * scale;
    if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
        return Err(invalid(
            "UPSTREAM_TIMEOUT",
            value,
            "must be positive and at most a day",
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

impl Config {
    /// Defaults for everything but the was URL.
    pub fn new(was_url: &str) -> Result<Self, WebError> {
        Ok(Self {
            listen_addr: SocketAddr::from(([0, 0, 0, 0], 80)),
            was_url: parse_http_url("WAS_URL", was_url)?,
            was_host: DEFAULT_WAS_HOST.into(),
            pod_name: "unknown".into(),
            version: "unknown".into(),
            http_proxy: None,
            no_proxy: NoProxy::default(),
            hosts_file: None,
            upstream_timeout: Duration::from_secs(15),
            metrics_addr: None,
            tracing: None,
        })
    }

    /// The proxy to use for the was, after `NO_PROXY`.
    pub fn effective_proxy(&self) -> Option<&Uri> {
        let host = self.was_url.host().unwrap_or_default();
        self.http_proxy
            .as_ref()
            .filter(|_| !self.no_proxy.matches(host))
    }
}

impl TryFrom<Args> for Config {
    type Error = WebError;

    fn try_from(a: Args) -> Result<Self, WebError> {
        let pod_name = non_empty(a.pod_name)
            .or_else(|| non_empty(std::env::var("HOSTNAME").ok()))
            .unwrap_or_else(|| "unknown".into());
        let http_proxy = non_empty(a.http_proxy)
            .or_else(|| non_empty(std::env::var("http_proxy").ok()))
            .map(|p| parse_proxy(&p))
            .transpose()?;
        let no_proxy = non_empty(a.no_proxy)
            .or_else(|| non_empty(std::env::var("no_proxy").ok()))
            .map(|s| NoProxy::parse(&s))
            .unwrap_or_default();
        if HeaderValue::from_str(&a.was_host).is_err() || a.was_host.trim().is_empty() {
            return Err(invalid("WAS_HOST", &a.was_host, "not a valid Host header"));
        }
        Ok(Self {
            listen_addr: server::listen_addr(a.listen_addr, a.pod_ip, 80),
            was_url: parse_http_url("WAS_URL", &a.was_url)?,
            was_host: a.was_host,
            pod_name,
            version: a.version,
            http_proxy,
            no_proxy,
            hosts_file: a.hosts_file,
            upstream_timeout: parse_duration(&a.upstream_timeout)?,
            metrics_addr: a.metrics_addr,
            tracing: TraceConfig::from_env(|k| std::env::var(k).ok(), "web", "blog-web")?,
        })
    }
}

#[derive(Debug)]
struct Identity {
    version: HeaderValue,
    pod: HeaderValue,
    metrics: Arc<crate::metrics::HttpMetrics>,
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// blog-web's routes. Fails only on an invalid `WAS_HOST`.
pub fn router(config: &Config) -> Result<Router, WebError> {
    router_with_metrics(config, Arc::default(), Telemetry::disabled())
}

/// The metrics listener's one route.
fn metrics_router(metrics: Arc<crate::metrics::HttpMetrics>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
                    metrics.render(None),
                )
            }
        }),
    )
}

fn router_with_metrics(
    config: &Config,
    metrics: Arc<crate::metrics::HttpMetrics>,
    telemetry: Telemetry,
) -> Result<Router, WebError> {
    let tracing = ServerTracing {
        telemetry,
        probe_prefixes: &["/health"],
    };
    let host = HeaderValue::from_str(&config.was_host)
        .map_err(|_| invalid("WAS_HOST", &config.was_host, "not a valid Host header"))?;
    let proxy = Arc::new(Proxy::new(
        Resolver::new(config.hosts_file.clone()),
        config.was_url.clone(),
        host,
        config.effective_proxy().cloned(),
        config.upstream_timeout,
    ));
    let identity = Arc::new(Identity {
        version: header_value(&config.version),
        pod: header_value(&config.pod_name),
        metrics,
    });
    let forward = |State(p): State<Arc<Proxy>>, req: Request| async move { p.forward(req).await };
    Ok(Router::new()
        .route(
            "/health",
            get(|| async { ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok") }),
        )
        .route(
            "/",
            get(|h: HeaderMap| async move { assets::INDEX.respond(&h) }),
        )
        .route(
            "/index.html",
            get(|h: HeaderMap| async move { assets::INDEX.respond(&h) }),
        )
        .route(
            "/board",
            get(|h: HeaderMap| async move { assets::BOARD.respond(&h) }),
        )
        .route("/posts/{id}", get(post_page))
        .route("/assets/{name}", get(asset))
        .route(
            "/favicon.ico",
            get(|h: HeaderMap| async move { assets::FAVICON.respond(&h) }),
        )
        .route("/api", any(forward))
        .route("/api/{*rest}", any(forward))
        .fallback(not_found)
        .with_state(proxy)
        .layer(middleware::from_fn_with_state(identity, identity_and_log))
        .layer(middleware::from_fn_with_state(
            tracing,
            crate::trace::server_span,
        )))
}

async fn post_page(Path(id): Path<String>, headers: HeaderMap) -> Response {
    match id.parse::<i64>() {
        Ok(n) if n > 0 => assets::POST.respond(&headers),
        _ => assets::NOT_FOUND.respond_with(StatusCode::NOT_FOUND, &headers),
    }
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match assets::by_name(&name) {
        Some(a) => a.respond(&headers),
        None => assets::NOT_FOUND.respond_with(StatusCode::NOT_FOUND, &headers),
    }
}

async fn not_found(headers: HeaderMap) -> Response {
    assets::NOT_FOUND.respond_with(StatusCode::NOT_FOUND, &headers)
}

async fn identity_and_log(
    State(identity): State<Arc<Identity>>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "UNKNOWN".to_string(), |m| m.as_str().to_string());
    let started = std::time::Instant::now();
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    headers.insert(
        HeaderName::from_static(VERSION_HEADER),
        identity.version.clone(),
    );
    headers.insert(HeaderName::from_static(POD_HEADER), identity.pod.clone());
    let status = res.status().as_u16();
    identity
        .metrics
        .record(method.as_str(), &route, status, started.elapsed());
    let elapsed_ms = started.elapsed().as_millis() as u64;
    if path == "/health" && status < 400 {
        tracing::debug!(%method, %path, status, elapsed_ms, "request");
    } else {
        tracing::info!(%method, %path, status, elapsed_ms, "request");
    }
    res
}

/// Binds `listen_addr` and serves in the background.
pub async fn start(config: Config) -> Result<ServerHandle, WebError> {
    let metrics = Arc::<crate::metrics::HttpMetrics>::default();
    let telemetry = Telemetry::start(config.tracing.as_ref())?;
    let app = router_with_metrics(&config, Arc::clone(&metrics), telemetry.clone())?;
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|error| WebError::Bind { addr, error })
    };
    let listener = bind(config.listen_addr).await?;
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let mut handle = ServerHandle::spawn(listener, app)
        .map_err(WebError::Serve)?
        .with_telemetry(telemetry);
    if let Some(l) = metrics_listener {
        let m = ServerHandle::spawn(l, metrics_router(metrics)).map_err(WebError::Serve)?;
        tracing::info!(addr = %m.local_addr(), "blog-web metrics listening");
        handle = handle.with_companion(m);
    }
    tracing::info!(
        addr = %handle.local_addr(),
        was = %config.was_url,
        was_host = %config.was_host,
        proxy = ?config.effective_proxy().map(ToString::to_string),
        pod = %config.pod_name,
        version = %config.version,
        "blog-web listening"
    );
    Ok(handle)
}

/// [`start`], then serve until SIGTERM/SIGINT and shut down gracefully.
pub async fn run(config: Config) -> Result<(), WebError> {
    start(config)
        .await?
        .run_until(server::shutdown_signal())
        .await
        .map_err(WebError::Serve)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("NaN").is_err());
    }

    #[test]
    fn urls() {
        assert!(parse_http_url("WAS_URL", DEFAULT_WAS_URL).is_ok());
        assert!(parse_http_url("WAS_URL", "https://x").is_err());
        assert!(parse_http_url("WAS_URL", "was-service:8080").is_err());
        assert_eq!(
            parse_proxy("127.0.0.1:15001").unwrap().to_string(),
            "http://127.0.0.1:15001/"
        );
    }

    #[test]
    fn no_proxy_bypasses_the_proxy() {
        let mut c = Config::new(DEFAULT_WAS_URL).unwrap();
        c.http_proxy = Some(parse_proxy("http://127.0.0.1:15001").unwrap());
        assert!(c.effective_proxy().is_some());
        c.no_proxy = NoProxy::parse(".svc.cluster.local");
        assert!(c.effective_proxy().is_none());
    }
}
