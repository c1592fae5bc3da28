//! `blog-was`: the blog's REST API.
//!
//! ```text
//! GET    /api/posts?page=0&size=20   newest first; x-total-count header
//! GET    /api/posts/{id}
//! POST   /api/posts                  {"title","content","author"} -> 201 + Location
//! PUT    /api/posts/{id}             full update -> 200
//! DELETE /api/posts/{id}             -> 204
//! GET    /actuator/health            UP/DOWN (503) with a 1 s `SELECT 1`
//! GET    /actuator/info
//! GET    /actuator/prometheus        requests and the pool in Prometheus's text format
//! ```

pub mod db;
pub mod error;
pub mod model;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

use crate::hosts::Resolver;
use crate::server::{self, ServerHandle};
use crate::trace::{ServerTracing, Telemetry, TraceConfig, TraceError};

pub use db::{Db, DbError};
pub use error::ApiError;
pub use model::{NewPost, Page, Post, PostInput};

/// Response header carrying the pod's `version` label.
pub const VERSION_HEADER: &str = "x-was-version";
/// Response header carrying the pod name.
pub const POD_HEADER: &str = "x-was-pod";
/// Response header carrying the total number of posts on list responses.
pub const TOTAL_COUNT_HEADER: &str = "x-total-count";

/// Command-line flags and environment of `blog-was`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "blog-was",
    about = "The blog's REST API (SQLite or MySQL/MariaDB)."
)]
pub struct Args {
    /// Address to listen on [default: $POD_IP:8080, else 0.0.0.0:8080].
    #[arg(long, env = "LISTEN_ADDR")]
    pub listen_addr: Option<SocketAddr>,
    /// The pod's address; used for the default listen address.
    #[arg(long, env = "POD_IP")]
    pub pod_ip: Option<IpAddr>,
    /// `sqlite://FILE` (created if missing) or `mysql://USER:PASS@HOST:PORT/DB`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://blog.db")]
    pub database_url: String,
    /// Pod name reported in `x-was-pod` [default: $HOSTNAME].
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// The pod's version label, reported in `x-was-version`.
    #[arg(long = "version", env = "VERSION", default_value = "unknown")]
    pub version: String,
    /// Largest accepted request body.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Hosts file consulted before DNS for the database host.
    #[arg(long, env = "SKEIN_HOSTS")]
    pub hosts_file: Option<PathBuf>,
    /// How long to keep retrying the database at start-up, in seconds.
    #[arg(long, env = "DB_CONNECT_TIMEOUT_SECS", default_value_t = 60)]
    pub db_connect_timeout_secs: u64,
}

/// Resolved configuration of `blog-was`.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub database_url: String,
    pub pod_name: String,
    pub version: String,
    pub max_body_bytes: usize,
    pub hosts_file: Option<PathBuf>,
    pub db_connect_timeout: Duration,
    /// Span export (OpenTelemetry's `OTEL_*` environment); `None`: none.
    pub tracing: Option<TraceConfig>,
}

impl Config {
    /// Defaults for everything but the database.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            listen_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            database_url: database_url.into(),
            pod_name: "unknown".into(),
            version: "unknown".into(),
            max_body_bytes: 64 * 1024,
            hosts_file: None,
            db_connect_timeout: Duration::from_secs(60),
            tracing: None,
        }
    }
}

impl TryFrom<Args> for Config {
    type Error = WasError;

    /// The flags, and the tracing settings from the process's environment.
    fn try_from(a: Args) -> Result<Self, WasError> {
        let pod_name = a
            .pod_name
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "unknown".into());
        let tracing = TraceConfig::from_env(|k| std::env::var(k).ok(), "was", "blog-was")?;
        Ok(Self {
            listen_addr: server::listen_addr(a.listen_addr, a.pod_ip, 8080),
            database_url: a.database_url,
            pod_name,
            version: a.version,
            max_body_bytes: a.max_body_bytes,
            hosts_file: a.hosts_file,
            db_connect_timeout: Duration::from_secs(a.db_connect_timeout_secs),
            tracing,
        })
    }
}

/// Errors that stop `blog-was` from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum WasError {
    #[error(transparent)]
    Db(#[from] DbError),
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

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    db: Db,
    metrics: Arc<crate::metrics::HttpMetrics>,
    pod_name: String,
    version: String,
    max_body_bytes: usize,
    telemetry: Telemetry,
}

impl AppState {
    pub fn new(db: Db, pod_name: &str, version: &str, max_body_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                metrics: Arc::default(),
                pod_name: pod_name.to_owned(),
                version: version.to_owned(),
                max_body_bytes,
                telemetry: Telemetry::disabled(),
            }),
        }
    }

    /// The same state, reporting spans through `telemetry`.
    pub fn with_telemetry(self, telemetry: Telemetry) -> Self {
        let inner = Arc::unwrap_or_clone(self.inner);
        Self {
            inner: Arc::new(Inner { telemetry, ..inner }),
        }
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }
}

/// The was's routes with its error mapping, body limit and identity headers.
pub fn router(state: AppState) -> Router {
    let identity = Arc::new(IdentityHeaders {
        version: header_value(&state.inner.version),
        pod: header_value(&state.inner.pod_name),
        metrics: Arc::clone(&state.inner.metrics),
    });
    let limit = state.inner.max_body_bytes;
    let tracing = ServerTracing {
        telemetry: state.inner.telemetry.clone(),
        probe_prefixes: &["/actuator/"],
    };
    Router::new()
        .route("/api/posts", get(list_posts).post(create_post))
        .route(
            "/api/posts/{id}",
            get(get_post).put(update_post).delete(delete_post),
        )
        .route("/actuator/health", get(health))
        .route("/actuator/health/readiness", get(health))
        .route("/actuator/health/liveness", get(liveness))
        .route("/actuator/info", get(info))
        .route("/actuator/prometheus", get(prometheus))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(identity, identity_and_log))
        .layer(middleware::from_fn_with_state(
            tracing,
            crate::trace::server_span,
        ))
        .with_state(state)
}

/// A running `blog-was`.
#[derive(Debug)]
pub struct WasServer {
    handle: ServerHandle,
    db: Db,
    telemetry: Telemetry,
}

impl WasServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// The server's pool (closing it makes the was report the database DOWN).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Exports the spans queued so far.
    pub async fn flush_spans(&self) {
        self.telemetry.flush().await;
    }

    /// Graceful shutdown, then the pool is closed and the last spans exported.
    pub async fn shutdown(self) -> Result<(), WasError> {
        let res = self.handle.shutdown().await.map_err(WasError::Serve);
        self.db.close().await;
        self.telemetry.shutdown().await;
        res
    }
}

/// Connects to the database (retrying for `db_connect_timeout`), migrates, binds
/// `listen_addr` and serves in the background.
pub async fn start(config: Config) -> Result<WasServer, WasError> {
    let resolver = Resolver::new(config.hosts_file.clone());
    tracing::info!(
        database = %redact_url(&config.database_url),
        pod = %config.pod_name,
        version = %config.version,
        "starting blog-was"
    );
    let telemetry = Telemetry::start(config.tracing.as_ref())?;
    let db =
        Db::connect_with_retry(&config.database_url, &resolver, config.db_connect_timeout).await?;
    let listener = match TcpListener::bind(config.listen_addr).await {
        Ok(l) => l,
        Err(source) => {
            db.close().await;
            return Err(WasError::Bind {
                addr: config.listen_addr,
                error: source,
            });
        }
    };
    let state = AppState::new(
        db.clone(),
        &config.pod_name,
        &config.version,
        config.max_body_bytes,
    )
    .with_telemetry(telemetry.clone());
    let handle = ServerHandle::spawn(listener, router(state)).map_err(WasError::Serve)?;
    tracing::info!(addr = %handle.local_addr(), backend = db.backend(), "blog-was listening");
    Ok(WasServer {
        handle,
        db,
        telemetry,
    })
}

/// [`start`], then serve until SIGTERM/SIGINT and shut down gracefully.
pub async fn run(config: Config) -> Result<(), WasError> {
    let server = start(config).await?;
    let WasServer {
        handle,
        db,
        telemetry,
    } = server;
    let res = handle
        .run_until(server::shutdown_signal())
        .await
        .map_err(WasError::Serve);
    db.close().await;
    telemetry.shutdown().await;
    res
}

/// `scheme://user:***@host...` for logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[derive(Debug)]
struct IdentityHeaders {
    version: HeaderValue,
    pod: HeaderValue,
    metrics: Arc<crate::metrics::HttpMetrics>,
}

/// `GET /actuator/prometheus`: the was's requests and its database pool.
async fn prometheus(State(state): State<AppState>) -> Response {
    let text = state
        .inner
        .metrics
        .render(Some(state.inner.db.pool_stats()));
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

async fn identity_and_log(
    State(identity): State<Arc<IdentityHeaders>>,
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
    if path.starts_with("/actuator/") && status < 400 {
        tracing::debug!(%method, %path, status, elapsed_ms, "request");
    } else {
        tracing::info!(%method, %path, status, elapsed_ms, "request");
    }
    res
}

/// A JSON body whose rejections are [`ApiError`]s.
struct ApiJson<T>(T);

impl<T> FromRequest<AppState> for ApiJson<T>
where
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.inner.max_body_bytes;
        let (parts, body) = req.into_parts();
        let bytes = read_bounded(body, limit).await?;
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(ApiError::from_json_rejection(
                rejection,
                state.inner.max_body_bytes,
            )),
        }
    }
}

/// Reads a request body of at most `limit` bytes. A larger body is read on to its end (within
/// bounds) and discarded before the 413 goes out: closing a socket with unread data resets the
/// connection, and the client would see a reset instead of the 413.
async fn read_bounded(body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    const DRAIN_MAX: usize = 16 * 1024 * 1024;
    const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|_| ApiError::BadRequest("could not read the request body".into()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            let mut seen = buf.len() + data.len();
            let drain = async {
                while let Some(Ok(f)) = body.frame().await {
                    seen += f.data_ref().map_or(0, |d| d.len());
                    if seen > DRAIN_MAX {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
            return Err(ApiError::PayloadTooLarge(limit));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// A post id from the path; anything but a positive integer is a 404.
struct PostId(i64);

impl FromRequestParts<AppState> for PostId {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::post_not_found())?;
        match raw.parse::<i64>() {
            Ok(id) if id > 0 => Ok(PostId(id)),
            _ => Err(ApiError::post_not_found()),
        }
    }
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    page: Option<String>,
    size: Option<String>,
}

async fn list_posts(
    State(state): State<AppState>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(ApiError::from_query_rejection)?;
    let page = Page::parse(q.page.as_deref(), q.size.as_deref())?;
    let (posts, total) = state.db().list(page).await?;
    let mut headers = HeaderMap::new();
    headers.insert(HeaderName::from_static(TOTAL_COUNT_HEADER), total.into());
    Ok((headers, Json(posts)).into_response())
}

async fn get_post(
    State(state): State<AppState>,
    PostId(id): PostId,
) -> Result<Json<Post>, ApiError> {
    state
        .db()
        .get(id)
        .await?
        .map(Json)
        .ok_or_else(ApiError::post_not_found)
}

async fn create_post(
    State(state): State<AppState>,
    ApiJson(input): ApiJson<PostInput>,
) -> Result<Response, ApiError> {
    let post = input.validate()?;
    let created = state.db().create(&post).await?;
    let location = HeaderValue::from_str(&format!("/api/posts/{}", created.id))
        .map_err(|_| ApiError::Internal)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(created),
    )
        .into_response())
}

async fn update_post(
    State(state): State<AppState>,
    PostId(id): PostId,
    ApiJson(input): ApiJson<PostInput>,
) -> Result<Json<Post>, ApiError> {
    let post = input.validate()?;
    state
        .db()
        .update(id, &post)
        .await?
        .map(Json)
        .ok_or_else(ApiError::post_not_found)
}

async fn delete_post(
    State(state): State<AppState>,
    PostId(id): PostId,
) -> Result<StatusCode, ApiError> {
    if state.db().delete(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::post_not_found())
    }
}

/// How long the health check's `SELECT 1` may take.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

async fn health(State(state): State<AppState>) -> Response {
    let up = match tokio::time::timeout(HEALTH_TIMEOUT, state.db().ping()).await {
        Ok(Ok(())) => true,
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "health check: database DOWN");
            false
        }
        Err(_) => {
            tracing::warn!("health check: database did not answer within {HEALTH_TIMEOUT:?}");
            false
        }
    };
    let status = if up { "UP" } else { "DOWN" };
    let code = if up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": status,
        "components": { "db": { "status": status } },
    });
    (code, Json(body)).into_response()
}

async fn liveness() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "UP" }))
}

async fn info(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "app": { "name": "blog-was", "version": env!("CARGO_PKG_VERSION") },
        "pod": state.inner.pod_name,
        "version": state.inner.version,
    }))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such resource".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
